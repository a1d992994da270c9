/* The model engine of one process: decoder layers over a ragged batch of
 * tokens with a KV cache per sequence slot, the MoE behind a dispatch
 * callback (local here; an all-to-all under mpi/), embedding and the tied
 * un-embedding. No MPI, no HDF5, no CUDA in here. */
#ifndef G1_ENGINE_H
#define G1_ENGINE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "config.h"
#include "status.h"
#include "weights.h"

/* The expert computation of one MoE layer. Given the pre-MoE-normalised
 * activations of T tokens and, per token, its selected experts and their
 * gate weights (K = num_selected_experts, in selection order), write
 * out[t] = sum_k gate[t,k] * expert_{idx[t,k]}(x[t]), summed in k order.
 * The local implementation computes every expert of the weights it holds. */
typedef struct g1_moe_dispatch {
    g1_status (*run)(void *ctx, int layer, int T, const float *x /* (T, D) */,
                     const int *idx /* (T, K) */, const float *gate /* (T, K) */,
                     float *out /* (T, D) */);
    /* Optional, for an MPI library that reads device memory (CUDA-aware):
     * the expert rows over engine memory (g1_engine_mem_alloc), without the
     * combine. x (T, D) and yk (T*K, D) are engine memory, idx (T, K) host;
     * write yk[t*K + j] = expert_{idx[t,j]}(x[t]). The engine then combines
     * with the gates in choice order. Used instead of run when set. */
    g1_status (*run_rows_mem)(void *ctx, int layer, int T, const float *x, const int *idx, float *yk);
    void *ctx;
} g1_moe_dispatch;

typedef struct g1_engine g1_engine;

/* Where the layers run. The CPU engine is always built and is the
 * reference; CUDA (src/cuda) only in builds with nvcc and cuBLAS. */
typedef enum g1_backend { G1_BACKEND_CPU = 0, G1_BACKEND_CUDA } g1_backend;

/* How the CUDA backend multiplies many tokens by the int8 weights (up to 16
 * rows per matmul every choice uses the GEMV kernel, float32 activations). */
typedef enum g1_cuda_gemm {
    G1_CUDA_GEMM_BF16 = 0, /* activations rounded to bf16, one cuBLAS GEMM: the
                            * reference's own precision */
    G1_CUDA_GEMM_BF16X2,   /* activations as bf16 hi + lo, two GEMMs: near float32,
                            * twice the cost */
    G1_CUDA_GEMM_F32       /* no GEMM: the GEMV kernel 16 rows at a time, float32
                            * activations; a token's result does not depend on its
                            * batch (every layout gives the same bits); the weights
                            * are read again for every 16 rows, slow for long prompts */
} g1_cuda_gemm;

/* Elements of the KV caches. bf16 halves their memory and the bytes long-
 * context attention reads; k and v are rounded to bf16 as they are stored
 * (the reference keeps activations in bf16), results move within bf16
 * rounding (docs/CUDA.md). */
typedef enum g1_kv_cache { G1_KV_F32 = 0, G1_KV_BF16 } g1_kv_cache;

/* The CUDA backend's tuning and test switches (grok1-run --cuda-tune,
 * g1_cuda_tune_parse); zeros give the defaults. Which kernel takes a matmul
 * of how many rows, where the MoE groups its rows, whether prompts'
 * attention uses the tensor cores: the results stay within the CUDA GEMM's
 * rounding (with G1_CUDA_GEMM_F32, which uses none of the tensor-core paths,
 * the same bits), only the speed changes. */
typedef struct g1_cuda_opts {
    int gemv_max_tokens; /* most rows per matmul for the int8 GEMV kernel, more
                          * go to dequantised tiles + cuBLAS (0: 16; -1: always cuBLAS) */
    int moe_host_groups; /* 1: the MoE's rows are grouped on the host at every batch size
                          * (default: on the device up to the rows of the GEMV or, where it
                          * takes the experts' shapes, the tensor-core kernel) */
    int attn_no_mma;     /* 1: attention always on the float32 kernel (default: prompt
                          * tiles of batches over the GEMV's rows go to the tensor cores,
                          * with the bf16 GEMM) */
    int attn_range_tokens; /* > 0: attention launches of at most this many tokens (tests;
                            * default: as many as 256 MB of split partial sums hold) */
    int panel_elems;       /* > 0: dequantised panels of at most this many bf16 elements
                            * (tests: several panels on small models; default 64 MB) */
    int no_graphs;         /* 1: decode steps launch their kernels one by one (default:
                            * each batch shape's layers captured once as a CUDA graph,
                            * then replayed) */
    int max_graphs;        /* most graphs kept; making one more destroys the least
                            * recently replayed (0: G1_CUDA_GRAPHS_KEPT) */
    int mma_max_tokens;    /* most rows per matmul for the int8 tensor-core kernel, above
                            * gemv_max_tokens (0: 128; -1: never, cuBLAS instead); only on
                            * compute capability 8.0 and later, default precision */
    int mma_tile_cols;     /* that kernel's blocks: 64 rows by 64 or 128 columns (0: 64) */
    int gemm_no_overlap;   /* 1: a matrix's panels dequantised and multiplied on one
                            * stream (default: the next panel dequantised on a second
                            * stream, into a second buffer, while cuBLAS multiplies) */
    int logits_rows;       /* > 0: logits rows un-embedded at once on the device (tests:
                            * several chunks on small models; default: as many as
                            * G1_CUDA_LOGITS_BYTES hold, cuda_engine.h), at most max_batch */
} g1_cuda_opts;

typedef struct g1_engine_opts {
    int n_slots;        /* sequence slots (KV caches) */
    int max_batch;      /* most tokens in one g1_engine_forward call */
    int max_context;    /* most positions per slot (<= max_seq_len; 0: max_seq_len) */
    g1_backend backend; /* G1_BACKEND_CPU unless set */
    int device;         /* CUDA device ordinal (G1_BACKEND_CUDA) */
    g1_cuda_gemm cuda_gemm; /* CUDA, matmuls over 16 tokens (G1_CUDA_GEMM_BF16 unless set) */
    int cuda_graphs_off;    /* CUDA: decode steps launch their kernels one by one instead of
                             * replaying a CUDA graph (the same results) */
    int cuda_graphs_max;    /* CUDA: most graphs kept, the least recently replayed dropped
                             * (0: 64, G1_CUDA_GRAPHS_KEPT) */
    g1_cuda_opts cuda_tune; /* CUDA: tuning (zeros: the defaults); cuda_graphs_off and
                             * cuda_graphs_max above override its graph fields */
    g1_kv_cache kv_cache;   /* the KV caches' elements (G1_KV_F32 unless set); the CPU
                             * backend stores bf16-rounded values as float32 (the same
                             * results, no memory saved: the reference for the GPU's) */
    size_t mem_after_load;  /* CUDA: bytes the caller takes with g1_engine_mem_alloc once the
                             * engine runs (the MPI buffers of --gpu-direct): counted in the
                             * room check before the load and left out of the KV caches' room */
} g1_engine_opts;

/* The engine borrows `w` (which must outlive it). With dispatch NULL the
 * MoE runs locally, which needs all experts in `w`. With G1_BACKEND_CUDA the
 * weights are copied to the GPU and every call below runs there (host
 * pointers in and out as here); a build without CUDA refuses it. */
g1_status g1_engine_init(g1_engine **out, const g1_weights *w, const g1_engine_opts *opts,
                         const g1_moe_dispatch *dispatch);

/* Where an engine's weights come from, a part at a time (a checkpoint, the
 * synthetic generator). load fills `w` (g1_weights_alloc'd by the callee,
 * prepared; g1_weights_free'd by the engine) with layers [l0, l1) of the
 * source's range and experts [expert0, expert1), plus the embedding and the
 * final norm when with_embedding (then l0 == l1 is asked too). */
typedef struct g1_weights_source {
    g1_config cfg;
    int layer0, layer1;   /* the layers the engine holds */
    int expert0, expert1; /* of each layer */
    int with_embedding;   /* the embedding and final norm too */
    /* w is zeroed, or holds the part this load gave before: reuse its
     * memory (g1_weights_realloc, g1_ckpt_load_reuse) or free it. On
     * failure leave w freed. */
    g1_status (*load)(const struct g1_weights_source *src, int l0, int l1, int with_embedding, g1_weights *w);
    void *ctx;
} g1_weights_source;

/* What loading the weights took: bytes of weights held by the engine in
 * all, and the most held in host memory at once (the same for the CPU
 * backend; two parts in a row for CUDA). */
typedef struct g1_weights_held {
    size_t bytes;
    size_t host_peak;
} g1_weights_held;

/* As g1_engine_init, the weights from `src`, owned by the engine. The CPU
 * backend loads them at once. CUDA loads and uploads one layer at a time,
 * then the embedding: a thread of its own copies each part to the GPU
 * while the caller reads the next, into the host memory of the part before
 * (when the shapes match), which is on the GPU by then: the host never
 * holds more than two parts (two layers' weights, or the last layer's and
 * the embedding), so a node's ranks do not need the model twice over (once
 * on the GPUs, once in host memory), and the copies hide behind the reads.
 * Every layer must have the scale blocks of the first (as a whole-range
 * load requires). Once the first part is read, CUDA checks that the whole
 * share and the engine's scratch fit the GPU's free memory
 * (g1_cuda_engine_check_room) and refuses at once when they do not.
 * `held` may be NULL. */
g1_status g1_engine_init_source(g1_engine **out, const g1_weights_source *src, const g1_engine_opts *opts,
                                const g1_moe_dispatch *dispatch, g1_weights_held *held);
void g1_engine_free(g1_engine *e);
const g1_config *g1_engine_config(const g1_engine *e);

/* A fork: slot dst's caches become a copy of slot src's first n positions
 * (dst's length n), for every layer the engine holds. */
typedef struct g1_fork {
    int src, dst, n;
} g1_fork;

/* A micro-batch: T tokens of any slots. Tokens of one slot appear in
 * increasing, consecutive positions; the first of them is at a position
 * <= the slot's current length (position 0 starts the slot afresh, any
 * smaller position rewinds it). The forks, if any, are applied first, in
 * order (so a slot's tokens may continue a prefix forked into it), each
 * needing src != dst and 1 <= n <= src's length. */
typedef struct g1_batch {
    int T;
    const int *slot; /* (T) */
    const int *pos;  /* (T) */
    int n_fork;
    const g1_fork *fork; /* (n_fork) */
} g1_batch;

/* Run the layers this engine holds over x (T, D) in place. */
g1_status g1_engine_forward(g1_engine *e, const g1_batch *b, float *x);

/* Test hook (GROK1_ROUTE_LOG, read by grok1-run): with f not NULL every
 * forward call (g1_engine_forward, g1_engine_forward_mem) writes to f, for
 * each layer and row, the experts its router chose: a line "F N LAYER SLOT
 * POS E1 E2..." (N: this engine's count of forward calls, from 0, every
 * call counted, an empty one too; LAYER: the model's layer index; SLOT: the
 * engine's slot; the top-k in choice order), see g1_route_log_layer. CUDA
 * copies the chosen indices to the host for it after each router (a stream
 * sync, and no CUDA graphs while it is set); no kernel changes and nothing
 * computed moves. NULL (the default) costs nothing. Write errors show in
 * ferror(f): the caller checks when it closes f. */
void g1_engine_set_route_log(g1_engine *e, FILE *f);
/* One layer's lines of that log: T rows at (slot, pos), k choices each in
 * idx (T, k), for forward call n. */
void g1_route_log_layer(FILE *f, long long n, int layer, int T, const int *slot, const int *pos, int k,
                        const int *idx);

/* x (T, D) = bf16(embedding[tokens]) * embedding_multiplier. Needs the embedding. */
g1_status g1_engine_embed(g1_engine *e, int T, const int *tokens, float *x);
/* logits (T, V) = (final_norm(x) . bf16(embedding)^T) * output_multiplier. */
g1_status g1_engine_logits(g1_engine *e, int T, const float *x, float *logits);

/* The score of rows (score mode): for each row t of x (T, D), hidden states
 * after the last layer, the log-softmax of its logits at target[t] in
 * double (lp[t]; 0 when target[t] < 0) and the first index of its largest
 * logit (argmax[t]); a NaN or +inf logit, or a row of -inf, fails as
 * sampling does (g1_row_logprob). With CUDA the logits and their reduction
 * stay on the GPU and only these come back: no (T, V) logits cross to the
 * host, and no host thread walks them. The log-probs differ from the host's
 * only in the order of the sum of exponentials (double). */
g1_status g1_engine_score_rows(g1_engine *e, int T, const float *x, const int *target, double *lp, int *argmax);
/* Whether g1_engine_score_rows reduces on the device (CUDA): the driver then
 * prefers it to g1_engine_logits when it needs no logits rows. */
int g1_engine_scores_on_device(const g1_engine *e);

/* Current length (cached positions) of a slot; 0 after g1_engine_reset_slot. */
int g1_engine_slot_len(const g1_engine *e, int slot);
void g1_engine_reset_slot(g1_engine *e, int slot);
/* KV caches grow as sequences do. Whether every slot at full context (plus
 * the copy while the last one grows) fits in the device memory still
 * free: 1 and *need / *free_b in bytes when it may not (CUDA), else 0 (the
 * CPU backend, or a device that does not say). */
int g1_engine_kv_short(const g1_engine *e, size_t *need, size_t *free_b);
/* CUDA: the device bytes the weights and the engine's scratch took, and the
 * GPU's free bytes before they were allocated (the check that refuses a
 * share too large before reading it): 1, or 0 and zeros on the CPU. */
int g1_engine_gpu_memory(const g1_engine *e, size_t *weights, size_t *buffers, size_t *free_before);
/* The CPU engine's scratch (every buffer g1_engine_init sizes by the batch,
 * the threads or the context; not the KV caches, not the weights, not
 * g1_engine_mem_alloc's blocks): the bytes asked for, summed where they are
 * allocated (the planner counts them: tests/plan test_plan_mem). 0 with CUDA
 * (g1_engine_gpu_memory). */
size_t g1_engine_scratch_bytes(const g1_engine *e);
/* CUDA decode graphs so far (g1_engine_opts.cuda_graphs_off,
 * cuda_graphs_max): 1 and *made, *dropped (to keep at most *kept) when the
 * engine replays graphs; 0 and zeros on the CPU, with graphs off, or after
 * the driver refused one (the engine then launches one by one). */
int g1_engine_graph_counts(const g1_engine *e, int *made, int *dropped, int *kept);
/* CUDA: which kernels take the matmuls of how many rows, where the MoE
 * groups its rows, prompts' attention (g1_engine_opts.cuda_tune and the
 * device's compute capability decide; --verbose prints it): 1 and one line
 * of text in buf (cut to n), or 0 and "" on the CPU. */
int g1_engine_cuda_paths(const g1_engine *e, char *buf, size_t n);

/* ---- memory for messages (what mpi/ sends and receives) ---- */

/* Host memory for buffers the backend copies to and from: page-locked with
 * CUDA on `device` (copies to the GPU run at full speed, and an MPI library
 * can register it once), plain 64-byte aligned memory with CPU. NULL when
 * out of memory. Free with g1_host_free and the same backend. */
void *g1_host_alloc(g1_backend backend, int device, size_t bytes);
void g1_host_free(g1_backend backend, void *p);

/* Engine memory: where this engine keeps its activations (the GPU's memory
 * with CUDA, host memory with CPU). A CUDA-aware MPI can send and receive it
 * directly. Zeroed; freed with the engine, not before. */
g1_status g1_engine_mem_alloc(g1_engine *e, size_t bytes, void **p);
/* The calls below take engine memory and return when their output is
 * written (no work left queued on the device). */
/* As g1_engine_forward: in (T, D) through the layers into out (T, D);
 * in == out is allowed. */
g1_status g1_engine_forward_mem(g1_engine *e, const g1_batch *b, const float *in, float *out);
/* Copy bytes between any two of host and engine memory. */
g1_status g1_engine_copy_mem(g1_engine *e, void *dst, const void *src, size_t bytes);
/* dst[i] = src[map[i]] for n rows of emb_size floats; map is host memory. */
g1_status g1_engine_gather_mem(g1_engine *e, int n, const float *src, const int *map, float *dst);
/* As g1_moe_expert_rows, x and y engine memory, expert ids host memory. */
g1_status g1_moe_expert_rows_mem(g1_engine *e, int layer, int n, const float *x, const int *expert, float *y);

/* The local dispatch over the experts `engine` holds (what the engine uses
 * when dispatch is NULL; exposed so mpi/ can run the experts a remote rank asks for).
 * `idx` holds global expert ids; tokens whose experts are not held locally
 * are an error. */
g1_status g1_moe_local(void *engine, int layer, int T, const float *x, const int *idx,
                       const float *gate, float *out);
/* The experts of n rows: y[i] = expert_{expert[i]}(x[i]) for experts this
 * engine holds (at most max_batch * num_selected_experts rows). What a rank
 * computes for the rows its peers send it. */
g1_status g1_moe_expert_rows(void *engine, int layer, int n, const float *x /* (n, D) */,
                             const int *expert /* (n) */, float *y /* (n, D) */);
/* out[t] = sum_j gate[t,j] * yk[t*k + j] in j order (the fixed combine). */
void g1_moe_combine(int T, int D, int k, const float *gate, const float *yk /* (T*k, D) */,
                    float *out /* (T, D) */);

#endif
