/* The CUDA backend's kernels (the .cu files), each behind a launcher with C
 * linkage that returns the launch's cudaError_t; the C side (cuda_check.h)
 * turns errors into g1_status with file and line. Pointers are device
 * memory. Internal to src/cuda and its tests. */
#ifndef G1_CUDA_OPS_H
#define G1_CUDA_OPS_H

#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime_api.h>

/* Every kernel launch goes through G1_LAUNCH(kernel, grid, block, stream)
 * (args), so that the tests' CPU emulation (tests/cuda/emu/g1emu.h, which
 * defines it otherwise) runs the same kernel code. */
#if defined(__CUDACC__) && !defined(G1_LAUNCH)
#define G1_LAUNCH(kernel, grid, block, stream) kernel<<<(grid), (block), 0, (stream)>>>
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* For the few functions both the host and the kernels compute. */
#ifdef __CUDACC__
#define G1_HD __host__ __device__
#else
#define G1_HD
#endif

/* `rows` cut into `want` slices (at most one per min_rows, at least one),
 * each a multiple of `align` rows, the last the rest: the slice count. */
G1_HD static inline int g1_split_rows(int rows, int want, int min_rows, int align, int *rows_per_split)
{
    int most = rows / min_rows, s = want < most ? want : most;
    if (s < 1)
        s = 1;
    int rps = (rows + s - 1) / s;
    rps = (rps + align - 1) / align * align;
    *rows_per_split = rps;
    return (rows + rps - 1) / rps;
}

/* Split-K slices of the int8 tensor-core kernel for T rows of x on a
 * device of `sms` multiprocessors: none when the tiles (64 rows by 64
 * columns) give 3 blocks a multiprocessor or more (the experts' W1 and Wv:
 * 512), else enough for about 4 (W2 and attention q: 6), each slice at
 * least 256 rows of W, a multiple of 32 (tiles of 64 columns whatever the
 * blocks' width: a block of 128 is two tiles' warps and loads, so the same
 * splits). Each 64-column tile keeps about 6 KB of loads in flight a
 * stage, and 4 a multiprocessor make the ~25 KB that HBM's latency at full
 * bandwidth needs; the partial sums cost 2 x splits x T x cols floats of
 * traffic, which the experts' W1 (the widest) would feel most. The host
 * sizes a matmul with it, the grouped kernel each expert's group. */
G1_HD static inline int g1_mma_splits(int sms, int T, int rows, int cols, int *rows_per_split)
{
    int tiles = ((T + 63) / 64) * ((cols + 63) / 64);
    if (sms <= 0)
        sms = 132;
    int want = tiles >= 3 * sms ? 1 : (4 * sms + tiles - 1) / tiles;
    return g1_split_rows(rows, want, 256, 32, rows_per_split);
}

/* An int8 matrix in device memory, as g1_qmat: element [r, c] is
 * bf16(w[r, c] * scale[r / (rows / blocks), c]). */
typedef struct g1_dqmat {
    const int8_t *w;     /* (rows, cols) */
    const float *scale;  /* (blocks, cols) */
    int rows, cols, blocks;
} g1_dqmat;

/* GEMV: y (T, cols) = x (T, rows) @ deq(W), split-K over `splits` slices of
 * rows_per_split rows: dst is (splits, T, cols), y itself when splits == 1
 * (then reduce with g1_cuda_gemv_reduce). Each lane streams 16 columns with
 * 16-byte loads (byte loads when cols % 16 != 0), each warp `unroll` rows
 * (1, 2 or 4; other values: 4) before it uses the first, at most 2 for more
 * than 2 tokens. The result is the same bits for every unroll. */
cudaError_t g1_cuda_gemv_launch(cudaStream_t s, const float *x, int T, const g1_dqmat *W, int rows_per_split,
                                int splits, int unroll, float *dst);
/* The GEMVs of the MoE's held experts in one launch, the groups read on the
 * device (g1_cuda_moe_group's grp): for each expert e < E with rows, rows
 * [off, off + m) of x (n, rows) times mats[e] (device array) go to rows
 * [off, off + m) of dst (splits, n, cols) (y itself with one split), m =
 * grp[e], off = grp[E + e], nt (1, 2, 4) tokens at a time, for the groups
 * of at most hi rows (the others are left alone); `shape` is any of the
 * matrices (all share rows, cols and blocks); splits as
 * g1_cuda_gemv_launch's for that shape; its default unroll. Each row's
 * result is the same bits as g1_cuda_gemv_launch gives it. */
cudaError_t g1_cuda_gemv_grouped(cudaStream_t s, const float *x, int n, int nt, const g1_dqmat *mats,
                                 const g1_dqmat *shape, const int *grp, int E, int hi, int rows_per_split,
                                 int splits, float *dst);
/* The same on the tensor cores for the groups of more than lo rows (up to
 * maxm), x bf16 (n, rows): each group split-K as g1_mma_splits gives its
 * m rows on `sms` multiprocessors, so each row is the bits
 * g1_cuda_mma_q8_launch gives its group alone. A group of one split
 * writes y; the others write part (max_splits, n, cols) at their rows
 * (max_splits: the most any group up to maxm rows takes), which
 * g1_cuda_reduce_grouped adds. Blocks of bn columns (64 or 128). */
cudaError_t g1_cuda_mma_grouped_launch(cudaStream_t s, const uint16_t *x, int n, int maxm, const g1_dqmat *mats,
                                       const g1_dqmat *shape, const int *grp, int E, int lo, int sms, int bn,
                                       int max_splits, float *part, float *y);
/* y's rows (n, cols) of the groups split-K in part ((S, n, cols)): gsplits
 * slices for groups of at most lo rows (the GEMV's), g1_mma_splits for the
 * rest; each the sum of its slices in order (g1_cuda_gemv_reduce's bits).
 * Rows of one split are left alone. */
cudaError_t g1_cuda_reduce_grouped(cudaStream_t s, const float *part, int n, int rows, int cols, const int *grp,
                                   int E, int lo, int gsplits, int sms, float *y);
/* Group the n rows with expert ids in [e0, e0 + E) (E <= 256) on the device:
 * rows[0..n) the rows in stable expert order, rows[n + i] the place of row
 * i; grp (3E + 1 ints): the rows of each expert, where they start, the
 * experts that have rows (in order, then -1), and how many those are. */
cudaError_t g1_cuda_moe_group(cudaStream_t s, const int *ids, int n, int e0, int E, int *rows, int *grp);
/* y (n) = sum over j < splits of part[j * n + i], in j order. */
cudaError_t g1_cuda_gemv_reduce(cudaStream_t s, const float *part, int splits, size_t n, float *y);
/* Columns one GEMV block covers (grid sizing). */
int g1_cuda_gemv_cols(void);
/* out (nr, nc) = bf16(deq(W rows [r0, r0 + nr), columns [c0, c0 + nc))):
 * a panel for cuBLAS. */
cudaError_t g1_cuda_dequant(cudaStream_t s, const g1_dqmat *W, int r0, int nr, int c0, int nc, uint16_t *out);
/* y (T, cols) = x (T, rows) @ deq(W) on the tensor cores (compute
 * capability 8.0 and later), x bf16 (T, rows), blocks of 64 rows by bn
 * columns (64 or 128): split-K over `splits`
 * slices of rows_per_split rows (a multiple of 32), dst (splits, T, cols),
 * y itself with one split (then reduce with g1_cuda_gemv_reduce). Only
 * for matrices g1_cuda_mma_q8_fits takes (rows a multiple of 32, cols of
 * 16). Products bf16 x bf16 added in float32 by the tensor cores. */
int g1_cuda_mma_q8_fits(const g1_dqmat *W);
cudaError_t g1_cuda_mma_q8_launch(cudaStream_t s, const uint16_t *x, int T, const g1_dqmat *W, int bn,
                                  int rows_per_split, int splits, float *dst);
/* y (T, V) = (x (T, D) . E^T) * mult for T <= 16, D % 8 == 0, float32 x. */
cudaError_t g1_cuda_unembed_few(cudaStream_t s, const float *x, int T, int D, const uint16_t *E, int V, float mult,
                                float *y);
#define G1_CUDA_UNEMBED_MAX_T 16

/* The score of a logits row (g1_cuda_score_rows). */
typedef struct g1_row_score {
    double lp;       /* log-softmax at the row's target (0 with none, or a bad row) */
    float max;       /* the largest logit (NaN and +inf left out) */
    int argmax;      /* the first index holding it (-1: every logit NaN, +inf or -inf) */
    int bad;         /* the first NaN or +inf logit, -1 when none */
    float bad_value; /* its value */
} g1_row_score;
/* For each of T rows of logits (T, V): out[t] as above, with target[t] < 0
 * for no log-prob. The sum of exp(l - max) is in double, as on the CPU
 * (g1_row_logprob), over 1024 threads in a fixed order. */
cudaError_t g1_cuda_score_rows(cudaStream_t s, const float *logits, int T, int V, const int *target,
                               g1_row_score *out);
/* cudaSuccess when this binary holds kernels the current device can run;
 * cudaErrorNoKernelImageForDevice (or another error) when it was built for
 * other GPUs (meson -Dnvcc_gencode). Launches nothing. */
cudaError_t g1_cuda_kernel_image(void);
/* out (T, D) = scale * x / sqrt(mean(x^2) + eps) (sum of squares in double). */
cudaError_t g1_cuda_rmsnorm(cudaStream_t s, const float *x, int T, int D, const float *scale, float eps, float *out);
/* x (T, D) += RMSNorm(y) */
cudaError_t g1_cuda_add_rmsnorm(cudaStream_t s, float *x, const float *y, int T, int D, const float *scale,
                              float eps);
/* Rotate-half RoPE in place on v (T, heads, K) at positions pos (T). */
cudaError_t g1_cuda_rope(cudaStream_t s, float *v, int T, int heads, int K, const int *pos, double base);
/* out (n) = gelu_tanh(a) * b (out may alias a). */
cudaError_t g1_cuda_gelu_mul(cudaStream_t s, const float *a, const float *b, size_t n, float *out);
/* Router: softmax(x (T, D) @ Wr (D, E)) in double, top-k (ties to the lower
 * index), gates the full-softmax probabilities. E <= 256. */
cudaError_t g1_cuda_router(cudaStream_t s, const float *x, int T, int D, const float *Wr, int E, int k, int *idx,
                         float *gate);
/* out (n, D): out[i] = x[rows[i] / div] (gather; div 1 for a plain gather). */
cudaError_t g1_cuda_gather(cudaStream_t s, const float *x, int D, const int *rows, int div, int n, float *out);
/* out[t] = sum_j gate[t*k+j] * y[map[t*k+j]] in j order (map NULL: t*k+j), each
 * product rounded before its add: bitwise the host's g1_moe_combine. */
cudaError_t g1_cuda_combine(cudaStream_t s, int T, int D, int k, const float *gate, const float *y, const int *map,
                          float *out);
/* x (T, D) = bf16 E[tokens] * mult (tokens already checked). */
cudaError_t g1_cuda_embed(cudaStream_t s, const uint16_t *E, int D, const int *tokens, int T, float mult, float *x);
/* hi = bf16(x), lo = bf16(x - hi) for n values (lo may be NULL). */
cudaError_t g1_cuda_to_bf16(cudaStream_t s, const float *x, size_t n, uint16_t *hi, uint16_t *lo);
/* Deterministic pseudo-random weights on the device (benchmarks): int8 in
 * [-127, 127]; floats bf16-exact, lo + (hi - lo) * u. */
cudaError_t g1_cuda_fill_q8(cudaStream_t s, int8_t *w, size_t n, uint64_t seed);
cudaError_t g1_cuda_fill_f32(cudaStream_t s, float *x, size_t n, uint64_t seed, float lo, float hi);

/* Where token t's keys and values live: the slot's cache for layer l is
 * k0[t] + l * lstride[t] elements, rows (cap, Hkv, K); elements float32,
 * or bf16 (uint16_t) when bf16 is set. */
typedef struct g1_cuda_kv {
    void *const *k0, *const *v0;  /* (T) */
    const long long *lstride;     /* (T) elements per layer */
    const int *pos;               /* (T) */
    int layer;
    int bf16;                     /* the caches hold bf16 (rounded to nearest even) */
} g1_cuda_kv;
/* Write k, v (T, Hkv*K) to the caches at each token's position (rounded to
 * bf16 when the caches are bf16). */
cudaError_t g1_cuda_kv_store(cudaStream_t s, const g1_cuda_kv *kv, int T, int kvw, const float *k, const float *v);
/* Causal soft-capped attention of q (T, Hq, K) against the caches, rows
 * 0..pos[t]; out (T, Hq, K). A token's keys are split into chunks of
 * `chunk` keys from key 0, one block each (flash-decoding), so the splits
 * depend only on the token's position; chunk from g1_cuda_attn_chunk, so
 * no token has more than max_splits. tiles (2 ints each: first token,
 * count; NULL: a token a tile) group consecutive tokens of one sequence
 * (one slot), at most g1_cuda_attn_tile_tokens of them, whose blocks then
 * read each key and value once for all of them. The first n_mma tiles
 * (0 without tiles; g1_cuda_attn_tiles) go to the tensor-core kernel
 * instead: TF32 products, float32 sums. Either kernel computes a token
 * the same way whatever shares its tile, so a result depends on the batch
 * only through which kernel its tile went to. part: (T, Hq, max_splits,
 * K + 2) scratch. K <= 256 (128 and a multiple of 4 with n_mma). */
typedef struct g1_cuda_attn_args {
    int T, Hq, Hkv, K, max_splits, chunk;
    const int *tiles;   /* (n_tiles, 2) device, or NULL */
    int n_tiles;
    int n_mma;          /* the first n_mma tiles go to the tensor cores (g1_cuda_attn_tiles) */
    const float *q;
    g1_cuda_kv kv;
    float mult, cap;
    float *part;
    float *out;
} g1_cuda_attn_args;
/* Keys a split takes when no token has more than max_context keys and
 * max_splits splits (at least 64, a multiple of 32). */
int g1_cuda_attn_chunk(int max_context, int max_splits);
/* Most tokens a tile of g1_cuda_attn_args.tiles may hold. */
int g1_cuda_attn_tile_tokens(int Hq, int Hkv, int K);
/* The same for a tile of the tensor-core kernel; 0 when it does not take
 * this shape (K > 128 or not a multiple of 4). */
int g1_cuda_attn_mma_tile_tokens(int Hq, int Hkv, int K);
/* The tiles of a batch (host): runs of consecutive tokens of one slot
 * (slot: (T)) into tiles (2 ints each: first token, count; room for T).
 * With mma (only on a device of compute capability 8.0 or later), tiles
 * are up to g1_cuda_attn_mma_tile_tokens long and those of at least 16
 * rows (token x q head), or of more tokens than a float32 tile takes,
 * come first, *n_mma of them: the tensor-core kernel
 * takes those (q, k, exponentials and v rounded to TF32, float32 sums),
 * the float32 kernel the rest. Returns the number of tiles. */
int g1_cuda_attn_tiles(const int *slot, int T, int Hq, int Hkv, int K, int mma, int *tiles, int *n_mma);
cudaError_t g1_cuda_attention(cudaStream_t s, const g1_cuda_attn_args *a);

/* How an engine splits and runs attention, from its context alone:
 * max_splits and chunk give a token's splits from its position only (up to
 * G1_CUDA_ATTN_SPLITS at max_context), whatever the batch size, so a
 * decode step over a long cache has splits enough to fill the GPU even when
 * the engine takes big batches; a batch whose tokens' split partial sums
 * would need more than part_floats runs in ranges of range_tokens tokens
 * (g1_cuda_attn_plan), so the scratch does not grow with the batch.
 * part_floats 0: 64 Mi floats (256 MB). range_limit > 0 caps range_tokens
 * (tests). */
#define G1_CUDA_ATTN_SPLITS 32
typedef struct g1_cuda_attn_layout {
    int max_splits, chunk;
    int range_tokens;   /* most tokens of one g1_cuda_attention call */
} g1_cuda_attn_layout;
g1_cuda_attn_layout g1_cuda_attn_layout_for(int max_context, int max_batch, int Hq, int K, size_t part_floats,
                                            int range_limit);
/* One range of a batch's attention: tokens [t0, t0 + n), its tiles at
 * tiles + 2 * tile0 (first tokens counted from t0), the first n_mma of
 * them for the tensor cores. */
typedef struct g1_cuda_attn_range {
    int t0, n, tile0, n_tiles, n_mma;
} g1_cuda_attn_range;
/* The tiles of a batch (as g1_cuda_attn_tiles) range by range, ranges of
 * range_tokens tokens; tiles: room for T pairs, ranges: for
 * ceil(T / range_tokens). Returns the number of ranges. */
int g1_cuda_attn_plan(const int *slot, int T, int Hq, int Hkv, int K, int mma, int range_tokens, int *tiles,
                      g1_cuda_attn_range *ranges);
/* a's attention for the whole batch (a->T tokens; a->tiles: the device
 * copy of g1_cuda_attn_plan's tiles; n_tiles and n_mma unused) range by
 * range, each on a's part scratch ((range_tokens, Hq, max_splits, K + 2)). */
cudaError_t g1_cuda_attention_ranges(cudaStream_t s, const g1_cuda_attn_args *a, const g1_cuda_attn_range *r,
                                     int n_ranges);

#ifdef __cplusplus
}
#endif

#endif
