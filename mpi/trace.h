/* Timeline of one rank: spans (compute of a layer range, sends, receives,
 * all-to-alls, rank 0's embedding and sampling) tagged with the micro-batch,
 * written at the end as Chrome trace-event JSON (Perfetto, chrome://tracing)
 * by rank 0 for every rank (g1_dist_trace_write gathers them). No MPI here. */
#ifndef G1_TRACE_H
#define G1_TRACE_H

#include <stdio.h>

#include "status.h"

typedef struct g1_trace_event {
    double t0, t1;  /* seconds, this rank's clock (g1_trace_now) */
    int mb;         /* micro-batch, -1 for none */
    int arg;        /* layer or token count, -1 for none */
    char name[40];
    char cat[12];
} g1_trace_event;

typedef struct g1_trace {
    g1_trace_event *ev;
    int n, cap;
    long long dropped; /* events past the cap: left out, counted */
} g1_trace;

/* A trace that keeps up to `cap` events (NULL trace pointers record nothing). */
g1_status g1_trace_init(g1_trace *t, int cap);
void g1_trace_free(g1_trace *t);
double g1_trace_now(void);
void g1_trace_span(g1_trace *t, const char *cat, const char *name, double t0, double t1, int mb, int arg);

/* The events a rank's trace keeps: GROK1_TRACE_SPANS (1 to 2^24), or 2^19
 * (40 MiB a rank); another value is an error. */
g1_status g1_trace_cap(int *cap);

/* Write events of ranks [0, nranks) as trace-event JSON: ev[r] has n[r]
 * events of rank r, dropped[r] more were left out (an instant event marks
 * the cut; dropped may be NULL), offset[r] seconds added to align clocks,
 * label[r] names the rank's track. */
g1_status g1_trace_write_json(const char *path, int nranks, g1_trace_event *const *ev, const int *n,
                              const long long *dropped, const double *offset, char *const *label);

#endif
