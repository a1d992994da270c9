/* The request scheduler of grok1-run: continuous batching of JSONL requests
 * over the engine's sequence slots, greedy generation or scoring, results
 * written in input order. One process for now; no MPI and no HDF5 in here
 * (the logits dump comes in through a callback). */
#ifndef G1_DRIVER_H
#define G1_DRIVER_H

#include <stdint.h>
#include <stdio.h>

#include "engine.h"
#include "requests.h"
#include "status.h"

/* Receives rows [row0, row0+nrows) of the (n_rows_total, V) logits of
 * request k (0-based request index); rows of one request arrive in order. */
typedef struct g1_logits_sink {
    g1_status (*write)(void *ctx, int64_t k, int n_rows_total, int row0, int nrows, const float *logits);
    void *ctx;
} g1_logits_sink;

typedef struct g1_driver_opts {
    g1_run_mode mode;
    int max_new_tokens;        /* default when a request does not set it */
    int n_slots;               /* sequence slots; the engine must have as many */
    int max_batch_tokens;      /* most tokens per engine step; <= the engine's max_batch */
    const g1_logits_sink *dump; /* score mode only; NULL: no dump */
} g1_driver_opts;

typedef struct g1_driver_stats {
    int64_t requests;
    int64_t prompt_tokens;
    int64_t generated_tokens;
    int64_t steps; /* engine forward calls */
} g1_driver_stats;

/* Read every request from `in`, run them, write one result line per request
 * to `out` (flushed per line, in input order). Stops at the first bad
 * request or failure; results already written stay valid. */
g1_status g1_driver_run(g1_engine *e, const g1_driver_opts *opts, FILE *in, FILE *out, g1_driver_stats *stats);

#endif
