/* The CUDA engine: what g1_engine runs when opts.backend is G1_BACKEND_CUDA.
 * Same semantics as the CPU engine (engine.h), with the int8 weights, their
 * scales and the KV caches in device memory. Plain C with no CUDA types, so
 * the engine core can include it; built without CUDA (cuda_none.c) every
 * entry point fails with a message saying so. */
#ifndef G1_CUDA_ENGINE_H
#define G1_CUDA_ENGINE_H

#include "engine.h"

typedef struct g1_cuda_engine g1_cuda_engine;

/* g1_cuda_opts (tuning and test switches) is defined in engine.h. */

/* Graphs an engine keeps by default (g1_cuda_opts.max_graphs): each holds
 * the rank's layers (about 35 kernel nodes a layer), and the shapes that
 * make them (tokens x attention tiles) are many in a long evaluation. */
#define G1_CUDA_GRAPHS_KEPT 64

/* Device bytes of logits rank 0 computes at once (g1_cuda_opts.logits_rows
 * rows: this over 4V, at least 1, at most max_batch; longer calls run in
 * chunks): 256 MiB, 512 rows of Grok-1's vocabulary. A chunk of n rows
 * reads the bf16 table (2VD bytes) for 2VDn flops, n flops a byte: 512 is
 * above the ~300 an H100 (~200 an H200) needs for the bf16 GEMM to be
 * bound by arithmetic, not by re-reading the table, where a whole step's
 * rows (4096 x V x 4 bytes: 2 GiB) would take memory from the KV caches. */
#define G1_CUDA_LOGITS_BYTES ((size_t)1 << 28)

/* GPUs visible to this process (0 when none, or built without CUDA). */
int g1_cuda_device_count(void);
/* Why the last g1_cuda_device_count found none, for messages: the CUDA
 * runtime's error (a driver older than the toolkit needs, no device files
 * in a container, ...), "no CUDA device" or "built without CUDA"; "" when
 * it found some. Not thread-safe (start-up). */
const char *g1_cuda_no_device_why(void);
/* 1 when this binary has the CUDA backend. */
int g1_cuda_built(void);
/* The 16-byte UUID of visible device `device` (the same physical GPU gives
 * the same bytes in every process, whatever CUDA_VISIBLE_DEVICES numbers it
 * there); G1_OK or an error. */
g1_status g1_cuda_device_uuid(int device, unsigned char uuid[16]);

/* Whether this binary's kernels run on visible device `device`: G1_OK, or
 * G1_ERR_CUDA naming the GPU's compute capability, the build's target
 * (meson -Dnvcc_gencode) and the option that would fit it. */
g1_status g1_cuda_device_check(int device);

/* Upload `w` (borrowed only during the call) to device opts->device. With
 * dispatch NULL the MoE runs on the device (needs every expert); otherwise
 * the dispatch is called with host buffers (pinned) each layer. */
g1_status g1_cuda_engine_init(g1_cuda_engine **out, const g1_weights *w, const g1_engine_opts *opts,
                              const g1_moe_dispatch *dispatch, const g1_cuda_opts *co);
/* The same in three steps, so the weights can arrive a part at a time and
 * leave host memory as they go (g1_engine_init_source): begin makes an
 * engine of layers [l0, l1), experts [e0, e1) with no weights; upload copies
 * a part (`w` may hold any of those layers, with those experts, and the
 * embedding and final norm) and keeps nothing of it; ready checks every
 * layer came and makes the scratch. On an error the caller frees the engine. */
g1_status g1_cuda_engine_begin(g1_cuda_engine **out, const g1_config *cfg, int l0, int l1, int e0, int e1,
                               const g1_engine_opts *opts, const g1_moe_dispatch *dispatch, const g1_cuda_opts *co);
g1_status g1_cuda_engine_upload(g1_cuda_engine *e, const g1_weights *w);
g1_status g1_cuda_engine_ready(g1_cuda_engine *e);
/* Before the first upload: whether the whole share (every layer shaped as
 * the first layer of `w`, the embedding and final norm when
 * with_embedding) and the scratch ready will make fit in the GPU's free
 * memory; G1_ERR_CUDA naming the sizes and what to change when they do
 * not. The bytes are exactly what the engine will ask cudaMalloc for (the
 * KV caches, allocated as sequences grow, aside), so a refusal is certain
 * to be right and a load it lets through can still meet allocator rounding
 * or another process's use of the GPU. */
g1_status g1_cuda_engine_check_room(g1_cuda_engine *e, const g1_weights *w, int with_embedding);
/* Its figures: device bytes of the weights and of the scratch, and the free
 * bytes it saw; 0 when it never ran. */
int g1_cuda_engine_memory(const g1_cuda_engine *e, size_t *weights, size_t *buffers, size_t *free_before);
/* The scratch's device bytes, as the room check counts them, for a share
 * of nL layers and `experts` experts (with the embedding, rank 0's, when
 * with_embedding), opts (max_batch, max_context, cuda_gemm, cuda_tune), on a
 * GPU of `sms` multiprocessors and compute capability `cc` (major): no GPU
 * is needed (the planner, on a login node). G1_ERR_ARG for a model or
 * share the engine does not take; G1_ERR_CUDA in a build without CUDA. */
g1_status g1_cuda_engine_buffer_bytes(const g1_config *c, int nL, int experts, const g1_engine_opts *opts, int sms,
                                      int cc, int with_embedding, size_t *bytes);
void g1_cuda_engine_free(g1_cuda_engine *e);
/* As g1_engine_set_route_log (the test hook GROK1_ROUTE_LOG): the chosen
 * experts copied to the host after each router and written to f; no graphs
 * while f is set. */
void g1_cuda_engine_set_route_log(g1_cuda_engine *e, FILE *f);
/* As g1_engine_forward / _embed / _logits; x and logits are host memory. */
g1_status g1_cuda_engine_forward(g1_cuda_engine *e, const g1_batch *b, float *x);
g1_status g1_cuda_engine_embed(g1_cuda_engine *e, int T, const int *tokens, float *x);
g1_status g1_cuda_engine_logits(g1_cuda_engine *e, int T, const float *x, float *logits);
/* As g1_engine_score_rows: the logits and their reduction on the GPU, only
 * the log-probs and argmaxes come back. */
g1_status g1_cuda_engine_score_rows(g1_cuda_engine *e, int T, const float *x, const int *target, double *lp,
                                    int *argmax);
int g1_cuda_engine_slot_len(const g1_cuda_engine *e, int slot);
/* As g1_engine_kv_short. */
int g1_cuda_engine_kv_short(const g1_cuda_engine *e, size_t *need, size_t *free_b);
/* As g1_engine_graph_counts. */
int g1_cuda_engine_graph_counts(const g1_cuda_engine *e, int *made, int *dropped, int *kept);
/* The kernels and paths this engine takes (g1_engine_cuda_paths): 1, the text in buf. */
int g1_cuda_engine_paths(const g1_cuda_engine *e, char *buf, size_t n);
void g1_cuda_engine_reset_slot(g1_cuda_engine *e, int slot);
/* As g1_moe_local / g1_moe_expert_rows, host pointers in and out (what a
 * remote rank's rows need under mpi/). */
g1_status g1_cuda_moe_local(g1_cuda_engine *e, int layer, int T, const float *x, const int *idx,
                            const float *gate, float *out);
g1_status g1_cuda_moe_expert_rows(g1_cuda_engine *e, int layer, int n, const float *x, const int *expert,
                                  float *y);

/* Engine memory and the calls over it (engine.h's _mem entry points): x, y,
 * in, out, src and dst are device memory of this engine's GPU; each call
 * returns with its work done. */
g1_status g1_cuda_engine_mem_alloc(g1_cuda_engine *e, size_t bytes, void **p);
g1_status g1_cuda_engine_forward_mem(g1_cuda_engine *e, const g1_batch *b, const float *in, float *out);
g1_status g1_cuda_engine_copy_mem(g1_cuda_engine *e, void *dst, const void *src, size_t bytes);
g1_status g1_cuda_engine_gather_mem(g1_cuda_engine *e, int n, const float *src, const int *map, float *dst);
g1_status g1_cuda_moe_expert_rows_mem(g1_cuda_engine *e, int layer, int n, const float *x, const int *expert,
                                      float *y);
/* Page-locked host memory usable from every device (NULL on failure), made
 * with `device` current; g1_cuda_host_free releases it. */
void *g1_cuda_host_alloc(int device, size_t bytes);
void g1_cuda_host_free(void *p);

#endif
