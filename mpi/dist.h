/* The distributed runtime as grok1-run sees it (no MPI types here): the rank
 * grid (N = P stages x E expert slots; rank r is stage r / E, slot r % E),
 * the expert all-to-all that plugs into the engine's MoE dispatch, the
 * pipeline that rank 0's driver submits micro-batches to, and the loop the
 * other ranks run. grid.c, a2a.c and pipe_mpi.c implement it over MPI
 * (dist_internal.h); dist_none.c (builds without MPI) accepts only a 1 x 1
 * layout. */
#ifndef G1_DIST_H
#define G1_DIST_H

#include "config.h"
#include "engine.h"
#include "pipeline.h"
#include "status.h"
#include "trace.h"

typedef struct g1_dist g1_dist;

/* Check the layout against the world and the model before anything is
 * loaded (every rank reaches the same verdict), then build the grid.
 * Refusals say what would work. */
g1_status g1_dist_check_layout(int world_size, int stages, int ep, const g1_config *cfg);
/* The same for the tokens a step (--max-batch-tokens): a pipeline message
 * of that many tokens must fit MPI's int count of bytes (with D = 6144 at
 * most 87310 tokens). One process: always G1_OK. */
g1_status g1_dist_check_step(int world_size, int max_tokens, const g1_config *cfg);
/* Where the messages live. With CUDA the host buffers are page-locked on
 * `device`. direct: activations go to MPI straight from engine memory (the
 * GPU's, with CUDA: needs an MPI built with CUDA support; with CPU engine
 * memory is host memory and only the code path changes). Every rank must
 * pass the same `direct`. NULL: CPU, staged. */
typedef struct g1_dist_mem {
    g1_backend backend;
    int device;
    int direct;
} g1_dist_mem;
g1_status g1_dist_init(g1_dist **out, int stages, int ep, const g1_dist_mem *mem);
/* Whether the MPI library says it can read and write CUDA device memory:
 * 1 yes, 0 no (or built without MPI), -1 it cannot say (no query in its
 * extensions). */
int g1_dist_mpi_cuda_support(void);
void g1_dist_free(g1_dist *d);
int g1_dist_rank(const g1_dist *d);
int g1_dist_stage(const g1_dist *d);
int g1_dist_slot(const g1_dist *d);

/* The MoE dispatch of this rank's engine: an all-to-all inside the stage
 * (E > 1). `engine_ptr` is filled in later (the engine is created with the
 * dispatch); sized for micro-batches of max_tokens tokens. */
g1_status g1_dist_dispatch(g1_dist *d, const g1_config *cfg, int max_tokens, g1_engine **engine_ptr,
                           g1_moe_dispatch *out);

/* Rank 0: the pipeline over every rank; `e` is rank 0's own engine (stage 0,
 * slot 0). At most max_inflight micro-batches of max_tokens tokens. */
g1_status g1_dist_pipe(g1_dist *d, g1_engine *e, int max_inflight, int max_tokens, g1_pipe_ops *out);
/* Rank 0, after the last result: tell every rank to stop. */
g1_status g1_dist_stop(g1_dist *d);
/* Every other rank: run micro-batches through `e` until told to stop
 * (max_inflight and max_tokens as given to rank 0's g1_dist_pipe). */
g1_status g1_dist_worker(g1_dist *d, g1_engine *e, int max_inflight, int max_tokens);

/* Record this rank's spans in `t` (NULL: none); l0..l1 names its layers. */
void g1_dist_set_trace(g1_dist *d, g1_trace *t, int l0, int l1);
/* Collective: estimate every rank's clock offset to rank 0 (ping-pong with
 * the smallest round trip of several). Call before the work starts. */
g1_status g1_dist_trace_sync(g1_dist *d);
/* Collective at the end: rank 0 gathers every rank's events and writes the
 * trace-event JSON to path; on rank 0, *dropped is the spans all ranks left
 * out (their buffers full) and *ranks_cut how many ranks did. */
g1_status g1_dist_trace_write(g1_dist *d, const char *path, long long *dropped, int *ranks_cut);

/* Count `seconds` of other work (rank 0's embedding, un-embedding and
 * sampling) as this rank's busy time. */
void g1_dist_add_busy(g1_dist *d, double seconds);
/* Collective at the end: per stage, the fraction of wall time its ranks spent
 * computing (mean over the stage's ranks), on rank 0 (busy has P entries). */
g1_status g1_dist_busy(g1_dist *d, double *busy);
/* Bytes of the pipeline's message buffers, rank 0's activation buffers and
 * the all-to-all's row buffers this rank made in host memory (not those in
 * engine memory with --gpu-direct): what the planner counts as its
 * messages (g1_plan_mem.messages). */
size_t g1_dist_buffer_bytes(const g1_dist *d);
/* Bytes of message and row buffers this rank will make in engine (GPU)
 * memory with M micro-batches in flight and T tokens a step: with
 * --gpu-direct a worker's pipeline buffers and every rank's all-to-all
 * rows; 0 otherwise. Known before the load, for the engine's room check
 * (g1_engine_opts.mem_after_load). */
size_t g1_dist_engine_bytes_planned(const g1_dist *d, const g1_config *cfg, int M, int T);
/* The bytes of them made so far (all of them once the first step ran). */
size_t g1_dist_engine_bytes(const g1_dist *d);

#endif
