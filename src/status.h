/* Status codes and error propagation for the whole project.
 * Library code returns a g1_status and never exits; the message of the most
 * recent failure (with file and line) is kept per thread for main() to print. */
#ifndef G1_STATUS_H
#define G1_STATUS_H

#include <stddef.h>

typedef enum g1_status {
    G1_OK = 0,
    G1_ERR_NOMEM,   /* allocation failed */
    G1_ERR_IO,      /* file missing, unreadable, short read or write */
    G1_ERR_FORMAT,  /* file or input does not have the expected content */
    G1_ERR_ARG,     /* bad argument, option or request */
    G1_ERR_RANGE,   /* value out of range (token id, sequence length) */
    G1_ERR_CUDA,
    G1_ERR_MPI,
    G1_ERR_INTERNAL
} g1_status;

/* Record a message for the failure and return `st`. Use through G1_FAIL. */
g1_status g1_fail_at(g1_status st, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* The value of G1_FAIL is `st` itself (evaluated twice: no side effects in
 * it), not the call's result: a static analyser then knows that a failure
 * is not G1_OK, where an opaque call's result would let it follow G1_TRY
 * through a failure as if it had passed (docs/HACKING.md, "Static
 * analysis"). A statement that only records a message casts it to void. */
#define G1_FAIL(st, ...) ((void)g1_fail_at((st), __FILE__, __LINE__, __VA_ARGS__), (g1_status)(st))

/* Record on this thread a failure another thread recorded (its message and
 * where, as g1_last_error and g1_last_error_where gave them there). */
g1_status g1_fail_copy(g1_status st, const char *msg, const char *where);
/* The message of the last failure on this thread ("" if none). */
const char *g1_last_error(void);
/* Where the last failure was recorded ("file:line"). */
const char *g1_last_error_where(void);
void g1_clear_error(void);
const char *g1_status_name(g1_status st);
/* A size for people: "12.34 GiB" from 1 GiB up, "5.6 MiB" from 1 MiB up,
 * "7.8 KiB" from 1 KiB up, else "100 bytes"; returns buf. */
const char *g1_bytes_text(char *buf, size_t n, double bytes);

/* Pass a failure up unchanged (its message was already recorded). */
#define G1_TRY(expr)                         \
    do {                                     \
        g1_status g1_try_st_ = (expr);       \
        if (g1_try_st_ != G1_OK)             \
            return g1_try_st_;               \
    } while (0)

#endif
