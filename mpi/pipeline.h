/* What the driver sees of the layers: micro-batches go in (embedded hidden
 * states), come out after the last layer, oldest first. Implemented locally
 * (one process: the engine runs at submit) and over MPI (pipe_mpi.c: stages
 * and expert slots on many ranks). No MPI types here. */
#ifndef G1_PIPELINE_H
#define G1_PIPELINE_H

#include "engine.h"
#include "status.h"
#include "trace.h"

typedef struct g1_pipe_ops {
    /* Start micro-batch mb: T tokens at (slot, pos) with hidden states
     * x (T, D). Slots are global slot ids. Returns when the pipeline has
     * taken the batch (x may be reused). */
    g1_status (*submit)(void *ctx, int mb, const g1_batch *b, const float *x);
    /* Wait for the oldest submitted micro-batch: its id and its hidden
     * states after the last layer, x (T, D), in the submitted token order. */
    g1_status (*wait)(void *ctx, int *mb, float *x);
    void *ctx;
} g1_pipe_ops;

/* One process: the engine holds every layer and expert. `max_inflight`
 * micro-batches of at most `max_tokens` tokens may be outstanding. */
typedef struct g1_pipe_local g1_pipe_local;
g1_status g1_pipe_local_init(g1_pipe_local **out, g1_engine *e, int max_inflight, int max_tokens, g1_trace *trace);
void g1_pipe_local_free(g1_pipe_local *p);
g1_pipe_ops g1_pipe_local_ops(g1_pipe_local *p);
/* Its buffers: the hidden states of the micro-batches in flight (what the
 * planner counts for one process; tests/plan test_plan_mem). */
size_t g1_pipe_local_bytes(const g1_pipe_local *p);

#endif
