/* Rank 0's progress report: requests done of total, prompt and generated
 * tokens/s, ETA. A live line on a terminal, a plain line every `interval`
 * seconds otherwise. No MPI here. */
#ifndef G1_PROGRESS_H
#define G1_PROGRESS_H

#include <stdint.h>
#include <stdio.h>

#include "driver.h"

typedef enum { G1_PROGRESS_OFF, G1_PROGRESS_AUTO, G1_PROGRESS_ON } g1_progress_mode;

typedef struct g1_progress {
    FILE *f;
    int live;          /* rewrite one line (\r) rather than print lines */
    int enabled;
    double interval;   /* seconds between plain lines */
    int64_t total;     /* requests in the input, -1 unknown */
    double t0, last;
    int printed_live;
} g1_progress;

/* auto: live on a terminal, plain lines otherwise; on: plain lines always. */
void g1_progress_init(g1_progress *p, g1_progress_mode mode, FILE *f, double interval, int64_t total);
/* The driver's callback (ctx = g1_progress *). */
void g1_progress_update(void *ctx, const g1_driver_stats *s);
/* End the live line. */
void g1_progress_done(g1_progress *p);
/* 1 when the input at `path` can be read more than once: a regular file.
 * "-" (stdin), a pipe, a FIFO or a device is read once, by the run itself:
 * nothing may read it ahead (to count requests or record its bytes). */
int g1_input_rereadable(const char *path);
/* Non-blank lines of a regular file (-1 for stdin, a pipe or if it cannot be read). */
int64_t g1_count_requests(const char *path);
/* The 0-based line number of the n-th request (n >= 1; blank lines are not
 * requests) of a regular file; -1 for stdin, an unreadable file or fewer. */
int64_t g1_request_line(const char *path, int64_t n);
/* The bytes of a regular file up to and including the line of its n-th
 * request (n >= 1; its newline counted); 0 for n == 0; -1 for stdin, an
 * unreadable file or fewer requests. */
int64_t g1_request_end(const char *path, int64_t n);

#endif
