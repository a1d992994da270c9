/* GPU benchmark: one Grok-1 decoder layer at the real shapes (weights made
 * on the device, no file) at 1, 8, 64, 512 and 4096 tokens, against a
 * device-to-device copy and a cuBLAS bf16 GEMM measured in the same run;
 * prints time per layer, bandwidth, FLOP/s, the goals (at 1 to 8
 * tokens against reading the experts the tokens picked, and a row "8 same
 * 2" whose tokens all pick two) and the
 * tokens/s this predicts for 8 GPUs as 8 pipeline stages. Exits 77 without
 * a GPU. Usage: bench_cuda_layer [--preset grok-1|small|tiny] [--tokens 1,8,...]
 * [--cuda-gemm bf16|bf16x2|f32] [--no-parts] [--smoke]: the goals are checked
 * for the default bf16 GEMM (at 1 to 8 tokens every mode is the same GEMV).
 * Then (unless --no-parts) the parts of a decode step alone: the layer's
 * phases (the experts with their rows grouped on the device, and on the
 * host as before), the bare host round trip, the GEMV (4 rows in flight
 * per warp, and 1 as the loads were before), the GEMV, the int8
 * tensor-core kernel and cuBLAS at 16 to 256 rows, and the un-embedding on one
 * matrix, decode attention over full-length caches, each against the copy.
 * --smoke shrinks the reference copy and GEMM (and the caches) so the whole
 * program can run on the CPU emulation (tests/cuda/emu); its figures mean
 * nothing. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cuda/cuda_internal.h"
#include "cuda/cuda_tune.h"
#include "bench_suggest.h"

#define CK(x)                                                                            \
    do {                                                                                 \
        if ((x) != G1_OK) {                                                              \
            fprintf(stderr, "bench_cuda_layer: %s (%s)\n", g1_last_error(), g1_last_error_where()); \
            return 1;                                                                    \
        }                                                                                \
    } while (0)

static g1_status cu(cudaError_t e, const char *what)
{
    if (e != cudaSuccess)
        return G1_FAIL(G1_ERR_CUDA, "%s: %s", what, cudaGetErrorString(e));
    return G1_OK;
}

/* device-to-device copy bandwidth (bytes read + written per second) */
static g1_status copy_bw(double *gbs, int smoke)
{
    size_t n = (size_t)1 << (smoke ? 20 : 30);
    void *a, *b;
    cudaEvent_t e0, e1;
    G1_TRY(cu(cudaMalloc(&a, n), "malloc"));
    G1_TRY(cu(cudaMalloc(&b, n), "malloc"));
    G1_TRY(cu(cudaMemset(a, 1, n), "memset"));
    cudaEventCreate(&e0), cudaEventCreate(&e1);
    G1_TRY(cu(cudaMemcpy(b, a, n, cudaMemcpyDeviceToDevice), "copy"));
    cudaEventRecord(e0, 0);
    for (int i = 0; i < 10; i++)
        cudaMemcpyAsync(b, a, n, cudaMemcpyDeviceToDevice, 0);
    cudaEventRecord(e1, 0);
    G1_TRY(cu(cudaEventSynchronize(e1), "copy"));
    float ms;
    cudaEventElapsedTime(&ms, e0, e1);
    *gbs = 10.0 * 2.0 * (double)n / (ms * 1e-3) / 1e9;
    cudaFree(a), cudaFree(b), cudaEventDestroy(e0), cudaEventDestroy(e1);
    return G1_OK;
}

/* cuBLAS bf16 GEMM, 8192^3, float32 accumulate and output, on random
 * operands in [-1, 1] (zeros would let the tensor cores draw less power
 * and clock higher than they do on the layer's data) */
static g1_status gemm_rate(double *tflops, int smoke)
{
    int n = smoke ? 64 : 8192;
    void *A, *B, *C;
    cublasHandle_t h;
    cudaEvent_t e0, e1;
    G1_TRY(cu(cudaMalloc(&A, (size_t)n * n * 2), "malloc"));
    G1_TRY(cu(cudaMalloc(&B, (size_t)n * n * 2), "malloc"));
    G1_TRY(cu(cudaMalloc(&C, (size_t)n * n * 4), "malloc"));
    /* C holds the float32 values on their way to A and B */
    G1_TRY(cu(g1_cuda_fill_f32(0, C, (size_t)n * n, 31, -1, 1), "fill"));
    G1_TRY(cu(g1_cuda_to_bf16(0, C, (size_t)n * n, A, NULL), "to bf16"));
    G1_TRY(cu(g1_cuda_fill_f32(0, C, (size_t)n * n, 32, -1, 1), "fill"));
    G1_TRY(cu(g1_cuda_to_bf16(0, C, (size_t)n * n, B, NULL), "to bf16"));
    G1_CUBLAS(cublasCreate(&h));
    const float one = 1, zero = 0;
    cudaEventCreate(&e0), cudaEventCreate(&e1);
    for (int i = 0; i < 6; i++) {
        if (i == 1)
            cudaEventRecord(e0, 0);
        G1_CUBLAS(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &one, A, CUDA_R_16BF, n, B, CUDA_R_16BF, n,
                               &zero, C, CUDA_R_32F, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    }
    cudaEventRecord(e1, 0);
    G1_TRY(cu(cudaEventSynchronize(e1), "gemm"));
    float ms;
    cudaEventElapsedTime(&ms, e0, e1);
    *tflops = 5.0 * 2.0 * (double)n * n * n / (ms * 1e-3) / 1e12;
    cublasDestroy(h), cudaFree(A), cudaFree(B), cudaFree(C), cudaEventDestroy(e0), cudaEventDestroy(e1);
    return G1_OK;
}

static double qmat_bytes(const g1_config *c, g1_qmat_id id, int blocks)
{
    int rows, cols;
    g1_qmat_shape(c, id, &rows, &cols);
    return (double)rows * cols + 4.0 * blocks * cols;
}

static double secs(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Weights go up from host memory as the checkpoint is read (the engine
 * copies each part from pageable memory on a thread of its own): host to
 * device copies of n bytes from pageable memory, then from the same memory
 * pinned in place (cudaHostRegister), and what pinning and unpinning it
 * took. Best of 3 copies each, on a non-blocking stream as the engine's. */
static g1_status upload_rates(int smoke, size_t *bytes, double *pageable, double *pinned, double *pin_ms,
                              double *unpin_ms)
{
    size_t n = (size_t)1 << (smoke ? 20 : 30);
    char *h = malloc(n);
    void *d = NULL;
    cudaStream_t s = NULL;
    g1_status st = h ? G1_OK : G1_FAIL(G1_ERR_NOMEM, "out of memory for %zu host bytes", n);
    if (st == G1_OK)
        memset(h, 1, n); /* the pages exist, as after reading the checkpoint into them */
    if (st == G1_OK)
        st = cu(cudaMalloc(&d, n), "upload buffer");
    if (st == G1_OK)
        st = cu(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "stream");
    double best[2] = {1e30, 1e30};
    int registered = 0;
    for (int pin = 0; st == G1_OK && pin < 2; pin++) {
        if (pin) {
            double t = secs();
            st = cu(cudaHostRegister(h, n, cudaHostRegisterDefault), "cudaHostRegister");
            *pin_ms = 1e3 * (secs() - t);
            registered = st == G1_OK;
        }
        for (int i = 0; st == G1_OK && i < 3; i++) {
            double t = secs();
            st = cu(cudaMemcpyAsync(d, h, n, cudaMemcpyHostToDevice, s), "host-to-device copy");
            if (st == G1_OK)
                st = cu(cudaStreamSynchronize(s), "host-to-device copy");
            t = secs() - t;
            best[pin] = t < best[pin] ? t : best[pin];
        }
        if (pin && st == G1_OK) {
            double t = secs();
            st = cu(cudaHostUnregister(h), "cudaHostUnregister");
            *unpin_ms = 1e3 * (secs() - t);
            registered = 0;
        }
    }
    if (registered) /* a copy failed: unpinned before it is freed */
        cudaHostUnregister(h);
    *bytes = n;
    *pageable = (double)n / best[0] / 1e9;
    *pinned = (double)n / best[1] / 1e9;
    if (s)
        cudaStreamDestroy(s);
    cudaFree(d);
    free(h);
    return st;
}

/* The loading line: what a rank of 8 layers with every expert (the most one
 * stage holds, docs/PLAN.md) copies at load, and whether pinning the
 * engine's two part buffers (one layer each) would pay for itself. A
 * failure is printed, not fatal: the tables after it still run. */
static void upload_line(const g1_config *c, double attn_b, double exp_b, int smoke)
{
    size_t ub = 0;
    double up_page = 0, up_pin = 0, pin_ms = 0, unpin_ms = 0;
    if (upload_rates(smoke, &ub, &up_page, &up_pin, &pin_ms, &unpin_ms) != G1_OK) {
        printf("weights to the GPU: not measured: %s\n", g1_last_error());
        (void)cudaGetLastError();
        return;
    }
    double layer_b = attn_b + c->num_experts * exp_b, rank_b = 8 * layer_b;
    double pageable_s = rank_b / (up_page * 1e9), pinned_s = rank_b / (up_pin * 1e9);
    double pin_two_s = 2 * layer_b / (double)ub * pin_ms / 1e3;
    printf("weights to the GPU, %.0f MB from host memory: pageable %.1f GB/s, pinned %.1f GB/s; pinning it %.1f ms, "
           "unpinning %.1f ms. A rank of 8 layers (%.1f GB): %.2f s of copies from pageable memory, %.2f s pinned "
           "+ %.2f s to pin two part buffers (pinning would %s); both overlap the checkpoint's reads\n",
           (double)ub / 1e6, up_page, up_pin, pin_ms, unpin_ms, rank_b / 1e9, pageable_s, pinned_s, pin_two_s,
           pinned_s + pin_two_s < pageable_s ? "pay" : "not pay");
}

/* ---- parts: where a layer's time goes, for tuning without a profiler ---- */

static float elapsed_ms(cudaEvent_t a, cudaEvent_t b)
{
    float ms = 0;
    cudaEventElapsedTime(&ms, a, b);
    return ms;
}

/* the layer in phases (cuda_internal.h's prof events): T decode rows at
 * position 0, averaged over iters */
static g1_status phases(g1_cuda_engine *e, int T, int iters, double ms[4])
{
    cudaEvent_t ev[G1_CUDA_PROF_EVENTS];
    for (int i = 0; i < G1_CUDA_PROF_EVENTS; i++)
        G1_TRY(cu(cudaEventCreate(&ev[i]), "event"));
    int *slot = malloc((size_t)T * sizeof(int)), *pos = calloc((size_t)T, sizeof(int));
    if (!slot || !pos) {
        free(slot), free(pos);
        return G1_FAIL(G1_ERR_NOMEM, "out of memory");
    }
    for (int t = 0; t < T; t++)
        slot[t] = t;
    g1_batch b = {.T = T, .slot = slot, .pos = pos};
    g1_status st = G1_OK;
    for (int j = 0; j < 4; j++)
        ms[j] = 0;
    e->prof = ev;
    for (int it = -1; it < iters && st == G1_OK; it++) {
        for (int t = 0; t < T; t++)
            g1_cuda_engine_reset_slot(e, t);
        st = g1_cuda_engine_forward_device(e, &b);
        if (st == G1_OK)
            st = cu(cudaEventSynchronize(ev[G1_CUDA_PROF_EVENTS - 1]), "forward");
        for (int j = 0; j < 4 && st == G1_OK && it >= 0; j++)
            ms[j] += elapsed_ms(ev[j], ev[j + 1]) / iters;
    }
    e->prof = NULL;
    for (int i = 0; i < G1_CUDA_PROF_EVENTS; i++)
        cudaEventDestroy(ev[i]);
    free(slot), free(pos);
    return st;
}

/* the GEMV (or, mma, the int8 tensor-core kernel) alone on one matrix: ms per call */
static g1_status mm_time(g1_cuda_engine *e, const g1_dqmat *W, int T, int mma, int iters, double *ms)
{
    cudaEvent_t a, b;
    G1_TRY(cu(cudaEventCreate(&a), "event"));
    G1_TRY(cu(cudaEventCreate(&b), "event"));
    g1_status (*f)(g1_cuda_mm *, const float *, int, const g1_dqmat *, float *) = mma ? g1_cuda_mma_q8
                                                                                      : g1_cuda_gemv_q8;
    g1_status st = cu(g1_cuda_fill_f32(e->stream, e->xn, (size_t)T * W->rows, 3, -1, 1), "fill");
    if (st == G1_OK)
        st = f(&e->mm, e->xn, T, W, e->h1); /* warm up */
    cudaEventRecord(a, e->stream);
    for (int i = 0; i < iters && st == G1_OK; i++)
        st = f(&e->mm, e->xn, T, W, e->h1);
    cudaEventRecord(b, e->stream);
    if (st == G1_OK)
        st = cu(cudaEventSynchronize(b), mma ? "tensor-core matmul" : "gemv");
    *ms = elapsed_ms(a, b) / iters;
    cudaEventDestroy(a), cudaEventDestroy(b);
    return st;
}

/* The prompt path on one matrix at T rows (g1_cuda_gemm_q8: x to bf16,
 * dequantised panels, cuBLAS), and its dequantiser alone over the same
 * panels: ms per call each. */
static g1_status gemm_time(g1_cuda_engine *e, const g1_dqmat *W, int T, int iters, double *ms_all, double *ms_deq)
{
    int wide = W->rows < W->cols; /* W1 / Wv: x (T, D) in xg, y (T, F) in h1; W2 the other way */
    float *x = wide ? e->xg : e->h1, *y = wide ? e->h1 : e->yg;
    cudaEvent_t a, b;
    G1_TRY(cu(cudaEventCreate(&a), "event"));
    G1_TRY(cu(cudaEventCreate(&b), "event"));
    g1_status st = cu(g1_cuda_fill_f32(e->stream, x, (size_t)T * W->rows, 5, -1, 1), "fill");
    for (int pass = 0; pass < 2 && st == G1_OK; pass++) {
        for (int i = -1; i < iters && st == G1_OK; i++) { /* the first a warm-up */
            if (i == 0)
                cudaEventRecord(a, e->stream);
            st = pass ? g1_cuda_gemm_q8_dequant(&e->mm, T, W) : g1_cuda_gemm_q8(&e->mm, x, T, W, y);
        }
        cudaEventRecord(b, e->stream);
        if (st == G1_OK)
            st = cu(cudaEventSynchronize(b), "gemm");
        *(pass ? ms_deq : ms_all) = elapsed_ms(a, b) / iters;
    }
    cudaEventDestroy(a), cudaEventDestroy(b);
    return st;
}

/* Marks bytes [p, p + n) persisting in the L2 for e's stream (set: 1 when
 * the device has a set-aside to give), or with p NULL drops the window and
 * the set-aside again. */
static g1_status l2_persist(g1_cuda_engine *e, void *p, size_t n, int *set)
{
    cudaStreamAttrValue v;
    memset(&v, 0, sizeof v);
    if (p) {
        int most = 0, window = 0;
        *set = 0;
        G1_TRY(cu(cudaDeviceGetAttribute(&most, cudaDevAttrMaxPersistingL2CacheSize, e->opts.device), "attribute"));
        G1_TRY(cu(cudaDeviceGetAttribute(&window, cudaDevAttrMaxAccessPolicyWindowSize, e->opts.device),
                  "attribute"));
        if (most <= 0 || window <= 0)
            return G1_OK;
        n = n < (size_t)most ? n : (size_t)most;
        n = n < (size_t)window ? n : (size_t)window;
        v.accessPolicyWindow.base_ptr = p;
        v.accessPolicyWindow.num_bytes = n;
        v.accessPolicyWindow.hitRatio = 1.0f;
        v.accessPolicyWindow.hitProp = cudaAccessPropertyPersisting;
        v.accessPolicyWindow.missProp = cudaAccessPropertyStreaming;
        /* a device or partition (MIG) that refuses: no figure, not a failed run */
        cudaError_t err = cudaDeviceSetLimit(cudaLimitPersistingL2CacheSize, n);
        if (err == cudaSuccess)
            err = cudaStreamSetAttribute(e->stream, cudaStreamAttributeAccessPolicyWindow, &v);
        if (err != cudaSuccess) {
            fprintf(stderr, "bench_cuda_layer: persisting L2 refused: %s\n", cudaGetErrorString(err));
            (void)cudaGetLastError();
            return G1_OK;
        }
        *set = 1;
        return G1_OK;
    }
    G1_TRY(cu(cudaStreamSynchronize(e->stream), "access window"));
    cudaError_t err = cudaStreamSetAttribute(e->stream, cudaStreamAttributeAccessPolicyWindow, &v);
    if (err == cudaSuccess)
        err = cudaCtxResetPersistingL2Cache();
    if (err == cudaSuccess)
        err = cudaDeviceSetLimit(cudaLimitPersistingL2CacheSize, 0);
    if (err != cudaSuccess) {
        fprintf(stderr, "bench_cuda_layer: persisting L2 reset: %s\n", cudaGetErrorString(err));
        (void)cudaGetLastError();
    }
    return G1_OK;
}

/* The few-token un-embedding over a (V, D) bf16 table (random bits: the
 * values do not matter to the time): ms per call for T tokens. */
static g1_status unembed_time(cudaStream_t s, const g1_config *c, int T, int iters, double *ms)
{
    size_t V = (size_t)c->vocab_size, D = (size_t)c->emb_size;
    uint16_t *E = NULL;
    float *x = NULL, *y = NULL;
    cudaEvent_t a = NULL, b = NULL;
    g1_status st = cu(cudaMalloc((void **)&E, V * D * 2), "malloc (embedding)");
    if (st == G1_OK)
        st = cu(cudaMalloc((void **)&x, (size_t)T * D * 4), "malloc");
    if (st == G1_OK)
        st = cu(cudaMalloc((void **)&y, (size_t)T * V * 4), "malloc");
    if (st == G1_OK)
        st = cu(g1_cuda_fill_q8(s, (int8_t *)E, V * D * 2, 11), "fill");
    if (st == G1_OK)
        st = cu(g1_cuda_fill_f32(s, x, (size_t)T * D, 12, -1, 1), "fill");
    if (st == G1_OK)
        st = cu(cudaEventCreate(&a), "event");
    if (st == G1_OK)
        st = cu(cudaEventCreate(&b), "event");
    if (st == G1_OK)
        st = cu(g1_cuda_unembed_few(s, x, T, (int)D, E, (int)V, 1.0f, y), "un-embedding");
    if (st == G1_OK) {
        cudaEventRecord(a, s);
        for (int i = 0; i < iters; i++)
            g1_cuda_unembed_few(s, x, T, (int)D, E, (int)V, 1.0f, y);
        cudaEventRecord(b, s);
        st = cu(cudaEventSynchronize(b), "un-embedding");
        *ms = elapsed_ms(a, b) / iters;
    }
    if (a)
        cudaEventDestroy(a);
    if (b)
        cudaEventDestroy(b);
    cudaFree(E), cudaFree(x), cudaFree(y);
    return st;
}

/* Score mode's rows: R rows of logits (V) reduced on the GPU (log-softmax
 * at a target, argmax: g1_cuda_score_rows) against copying them to pinned
 * host memory, which the host's reduction needs first: ms for each. */
static g1_status score_time(cudaStream_t s, const g1_config *c, int R, int iters, double *ms_dev, double *ms_copy)
{
    size_t V = (size_t)c->vocab_size;
    float *l = NULL, *h = NULL;
    int *t = NULL;
    g1_row_score *o = NULL;
    cudaEvent_t a = NULL, b = NULL;
    g1_status st = cu(cudaMalloc((void **)&l, (size_t)R * V * 4), "malloc (logits)");
    if (st == G1_OK)
        st = cu(cudaMalloc((void **)&t, (size_t)R * sizeof *t), "malloc");
    if (st == G1_OK)
        st = cu(cudaMalloc((void **)&o, (size_t)R * sizeof *o), "malloc");
    if (st == G1_OK)
        st = cu(cudaMallocHost((void **)&h, (size_t)R * V * 4), "pinned host memory");
    if (st == G1_OK)
        st = cu(g1_cuda_fill_f32(s, l, (size_t)R * V, 13, -20, 20), "fill");
    if (st == G1_OK)
        st = cu(cudaMemsetAsync(t, 0, (size_t)R * sizeof *t, s), "memset");
    if (st == G1_OK)
        st = cu(cudaEventCreate(&a), "event");
    if (st == G1_OK)
        st = cu(cudaEventCreate(&b), "event");
    if (st == G1_OK)
        st = cu(g1_cuda_score_rows(s, l, R, (int)V, t, o), "score rows");
    if (st == G1_OK) {
        cudaEventRecord(a, s);
        for (int i = 0; i < iters; i++)
            g1_cuda_score_rows(s, l, R, (int)V, t, o);
        cudaEventRecord(b, s);
        st = cu(cudaEventSynchronize(b), "score rows");
        *ms_dev = elapsed_ms(a, b) / iters;
    }
    if (st == G1_OK) {
        cudaEventRecord(a, s);
        for (int i = 0; i < iters && st == G1_OK; i++)
            st = cu(cudaMemcpyAsync(h, l, (size_t)R * V * 4, cudaMemcpyDeviceToHost, s), "copy");
        cudaEventRecord(b, s);
        if (st == G1_OK)
            st = cu(cudaEventSynchronize(b), "copy");
        *ms_copy = elapsed_ms(a, b) / iters;
    }
    if (a)
        cudaEventDestroy(a);
    if (b)
        cudaEventDestroy(b);
    cudaFree(l), cudaFree(t), cudaFree(o), cudaFreeHost(h);
    return st;
}

/* Attention of S sequences each over C cached positions (one layer's
 * caches), P query tokens each at positions C-P .. C-1 (1: a decode step;
 * C: a prompt from position 0), tiled as the engine tiles them; mma: the
 * tensor cores take the tiles they would in a prompt-sized batch.
 * splits and ranges as grok1-run's engine makes them (from the context;
 * ranges of what 256 MB of partial sums hold); float32 or bf16 caches
 * (--kv-cache bf16): ms per call. */
static g1_status attention_time(cudaStream_t s, const g1_config *c, int S, int C, int P, int bf16, int mma,
                                int iters, double *ms)
{
    int K = c->key_size, Hq = c->num_q_heads, Hkv = c->num_kv_heads, kvw = Hkv * K, T = S * P;
    g1_cuda_attn_layout lay = g1_cuda_attn_layout_for(c->max_seq_len > C ? c->max_seq_len : C, T, Hq, K, 0, 0);
    g1_cuda_attn_range *ranges = malloc(((size_t)T / lay.range_tokens + 1) * sizeof *ranges);
    int n_ranges = 0;
    size_t cache = (size_t)S * C * kvw, tab_bytes = (size_t)T * 36;
    float *kc = NULL, *vc = NULL, *q = NULL, *part = NULL, *out = NULL;
    void *tab = NULL;
    void *tab_h = malloc(tab_bytes);
    int *slot = malloc((size_t)T * sizeof *slot);
    cudaEvent_t a = NULL, b = NULL;
    g1_status st = tab_h && slot && ranges ? G1_OK : G1_FAIL(G1_ERR_NOMEM, "out of memory");
    if (st == G1_OK)
        st = cu(cudaMalloc((void **)&kc, cache * 4), "malloc (K cache)");
    if (st == G1_OK)
        st = cu(cudaMalloc((void **)&vc, cache * 4), "malloc (V cache)");
    if (st == G1_OK)
        st = cu(cudaMalloc((void **)&q, (size_t)T * Hq * K * 4), "malloc");
    if (st == G1_OK)
        st = cu(cudaMalloc((void **)&out, (size_t)T * Hq * K * 4), "malloc");
    if (st == G1_OK)
        st = cu(cudaMalloc((void **)&part, (size_t)lay.range_tokens * Hq * lay.max_splits * (K + 2) * 4), "malloc");
    if (st == G1_OK)
        st = cu(cudaMalloc(&tab, tab_bytes), "malloc");
    /* bf16: both caches in vc's bytes (K then V), made from float32 values
     * in kc */
    uint16_t *kb = (uint16_t *)vc, *vb = kb + cache;
    if (st == G1_OK) {
        /* the engine's token table: k0 (T), v0 (T), lstride (T), pos (T), tiles (T pairs) */
        void **k0 = tab_h, **v0 = k0 + T;
        long long *ls = (long long *)(v0 + T);
        int *pos = (int *)(ls + T), *tiles = pos + T;
        for (int t = 0; t < T; t++) {
            int i = t / P;
            k0[t] = bf16 ? (void *)(kb + (size_t)i * C * kvw) : (void *)(kc + (size_t)i * C * kvw);
            v0[t] = bf16 ? (void *)(vb + (size_t)i * C * kvw) : (void *)(vc + (size_t)i * C * kvw);
            ls[t] = (long long)C * kvw;
            pos[t] = C - P + t % P;
            slot[t] = i;
        }
        n_ranges = g1_cuda_attn_plan(slot, T, Hq, Hkv, K, mma, lay.range_tokens, tiles, ranges);
        /* on the engine's stream (non-blocking: it does not wait for the
         * legacy stream a plain cudaMemcpy from pageable memory uses) */
        st = cu(cudaMemcpyAsync(tab, tab_h, tab_bytes, cudaMemcpyHostToDevice, s), "copy");
        if (st == G1_OK)
            st = cu(cudaStreamSynchronize(s), "copy");
    }
    if (st == G1_OK && bf16) {
        st = cu(g1_cuda_fill_f32(s, kc, cache, 21, -1, 1), "fill");
        if (st == G1_OK)
            st = cu(g1_cuda_to_bf16(s, kc, cache, kb, NULL), "to bf16");
        if (st == G1_OK)
            st = cu(g1_cuda_fill_f32(s, kc, cache, 22, -1, 1), "fill");
        if (st == G1_OK)
            st = cu(g1_cuda_to_bf16(s, kc, cache, vb, NULL), "to bf16");
    } else if (st == G1_OK) {
        st = cu(g1_cuda_fill_f32(s, kc, cache, 21, -1, 1), "fill");
        if (st == G1_OK)
            st = cu(g1_cuda_fill_f32(s, vc, cache, 22, -1, 1), "fill");
    }
    if (st == G1_OK)
        st = cu(g1_cuda_fill_f32(s, q, (size_t)T * Hq * K, 23, -1, 1), "fill");
    if (st == G1_OK)
        st = cu(cudaEventCreate(&a), "event");
    if (st == G1_OK)
        st = cu(cudaEventCreate(&b), "event");
    if (st == G1_OK) {
        void *const *k0 = tab, *const *v0 = (void *const *)tab + T;
        const long long *ls = (const long long *)(v0 + T);
        const int *pos = (const int *)(ls + T);
        g1_cuda_kv kv = {.k0 = k0, .v0 = v0, .lstride = ls, .pos = pos, .layer = 0, .bf16 = bf16};
        g1_cuda_attn_args aa = {.T = T, .Hq = Hq, .Hkv = Hkv, .K = K, .max_splits = lay.max_splits,
                                .chunk = lay.chunk, .tiles = pos + T, .q = q, .kv = kv,
                                .mult = (float)c->attn_output_multiplier, .cap = (float)c->attn_logit_cap,
                                .part = part, .out = out};
        st = cu(g1_cuda_attention_ranges(s, &aa, ranges, n_ranges), "attention");
        cudaEventRecord(a, s);
        for (int i = 0; i < iters && st == G1_OK; i++)
            st = cu(g1_cuda_attention_ranges(s, &aa, ranges, n_ranges), "attention");
        cudaEventRecord(b, s);
        if (st == G1_OK)
            st = cu(cudaEventSynchronize(b), "attention");
        *ms = elapsed_ms(a, b) / iters;
    }
    if (a)
        cudaEventDestroy(a);
    if (b)
        cudaEventDestroy(b);
    cudaFree(kc), cudaFree(vc), cudaFree(q), cudaFree(part), cudaFree(out), cudaFree(tab);
    free(tab_h), free(slot), free(ranges);
    return st;
}

/* The suggested --cuda-tune from the 16-to-256-row table's two matrices,
 * their times summed (both kinds are in every layer; bench_suggest.h reads
 * them). Printed as a line scripts/gpu-check.sh times the layer with; the
 * table itself is the evidence. Nothing when the table is missing. */
static void suggest_tune(double gv[2][5], double mc[2][5], double mc2[2][5], double gm[2][5])
{
    double g[5] = {0}, a[5] = {0}, b[5] = {0}, c[5] = {0};
    int tc = mc[0][0] > 0 && mc[1][0] > 0;
    for (int i = 0; i < 5 && gm[0][i] > 0 && gm[1][i] > 0; i++) {
        g[i] = gv[0][i] > 0 && gv[1][i] > 0 ? gv[0][i] + gv[1][i] : 0;
        a[i] = tc ? mc[0][i] + mc[1][i] : 0;
        b[i] = tc ? mc2[0][i] + mc2[1][i] : 0;
        c[i] = gm[0][i] + gm[1][i];
    }
    int gemv, mma, wide, lost, upto = g1_bench_suggest(g, a, b, c, tc, &gemv, &mma, &wide, &lost);
    if (!upto) {
        printf("  no suggested --cuda-tune: the 16-to-256-row table was not measured\n");
        return;
    }
    printf("suggested --cuda-tune: gemv-max-tokens=%d,mma-max-tokens=%d%s\n", gemv, mma,
           !mma ? "" : wide ? ",mma-tile-cols=128" : ",mma-tile-cols=64");
    printf("  (from the table above, its two matrices together, measured up to %d rows%s%s)\n", upto,
           lost ? "; the GEMV already loses at 16 rows, fewer were not compared" : "",
           tc ? "" : "; the tensor-core kernel was not timed");
}

/* Prints the parts table; bw is the copy's bytes read + written per second
 * (GB/s), which a kernel that only reads can approach. */
static g1_status parts(g1_cuda_engine *e, const g1_config *c, double bw, int smoke)
{
    int iters = smoke ? 2 : 20;
    printf("\nparts (what a decode step spends; %% of the copy's GB/s):\n");
    static const int Tp[] = {1, 8, 64};
    for (int i = 0; i < 3; i++) {
        int T = Tp[i];
        if (T > e->opts.max_batch || T > e->opts.n_slots)
            break;
        double ms[4] = {0}, host[4] = {0};
        G1_TRY(phases(e, T, iters, ms));
        /* as before 2026-12-01: grouped on the host, one launch chain per expert */
        e->moe_host_groups = 1;
        g1_status st = phases(e, T, iters, host);
        e->moe_host_groups = 0;
        G1_TRY(st);
        printf("  layer at %d token%s: attention block %.3f ms, router %.3f ms, experts %.3f ms (grouped on the "
               "host: %.3f ms), final norm %.3f ms\n",
               T, T > 1 ? "s" : "", ms[0], ms[1], ms[2], host[2], ms[3]);
    }
    /* a round trip: what grouping the MoE's rows on the host costs at least, each layer */
    double t0 = secs();
    int n_rt = smoke ? 4 : 200;
    for (int i = 0; i < n_rt; i++) {
        G1_TRY(cu(cudaMemcpyAsync(e->idx_h, e->idx, sizeof(int), cudaMemcpyDeviceToHost, e->stream), "copy"));
        G1_TRY(cu(cudaStreamSynchronize(e->stream), "sync"));
    }
    printf("  host round trip (4 bytes back, synchronise): %.1f us\n", (secs() - t0) / n_rt * 1e6);
    const g1_dqmat *mats[2] = {&e->layers[0].moe[0][0], &e->layers[0].attn[0]};
    const char *names[2] = {"expert gate", "attention q"};
    for (int m = 0; m < 2; m++) {
        const g1_dqmat *W = mats[m];
        double bytes = (double)W->rows * W->cols + 4.0 * W->blocks * W->cols;
        int l2 = 0;
        cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, e->opts.device);
        printf("  GEMV %s (%d x %d, %.0f MB%s):", names[m], W->rows, W->cols, bytes / 1e6,
               bytes < l2 ? ", fits in L2: repeated calls may read it from there" : "");
        for (int T = 1; T <= 16; T *= 2) {
            if (T > e->mm.gemv_max || T > e->opts.max_batch) /* the scratch holds max_batch rows */
                break;
            double ms = 0, ms1 = 0;
            G1_TRY(mm_time(e, W, T, 0, iters, &ms));
            e->mm.gemv_unroll = 1; /* one row in flight per warp: the loads as before 2026-12-01 */
            g1_status st = mm_time(e, W, T, 0, iters, &ms1);
            e->mm.gemv_unroll = 0;
            G1_TRY(st);
            printf(" T=%d %.3f ms %.0f GB/s (%.0f%%, unroll 1: %.0f%%);", T, ms, bytes / (ms * 1e-3) / 1e9,
                   100 * bytes / (ms * 1e-3) / 1e9 / bw, 100 * bytes / (ms1 * 1e-3) / 1e9 / bw);
        }
        printf("\n");
    }
    /* where the GEMV should hand over (gemv_max_tokens, 16 by default) and
     * where the int8 tensor-core kernel should (mma_max_tokens, 128): the
     * GEMV at 16 to 64 rows, the tensor cores and cuBLAS at 16 to 256; the
     * split-K sums in a buffer of their own (the engine's holds what its
     * own limits need); the times (ms, 0: not measured) by matrix and
     * row count 16 << i, for the suggested --cuda-tune */
    double tgv[2][5] = {{0}}, tmc[2][5] = {{0}}, tmc2[2][5] = {{0}}, tgm[2][5] = {{0}};
    for (int m = 0; m < 2; m++) {
        const g1_dqmat *W = mats[m];
        int tc = e->mm.mma_max > 0 && g1_cuda_mma_q8_fits(W);
        size_t pn = g1_cuda_gemv_partial_n(&e->mm, 64, W->rows, W->cols);
        for (int T = 16; tc && T <= 256; T++) {
            size_t p = g1_cuda_mma_partial_n(&e->mm, T, W->rows, W->cols);
            pn = p > pn ? p : pn;
        }
        float *part = NULL, *keep = e->mm.partial;
        size_t keep_n = e->mm.partial_n;
        if (e->mm.gemv_only || (pn && cudaMalloc((void **)&part, pn * sizeof(float)) != cudaSuccess)) {
            (void)cudaGetLastError();
            continue;
        }
        if (pn)
            e->mm.partial = part, e->mm.partial_n = pn;
        double bytes = (double)W->rows * W->cols;
        printf("  %s at 16 to 256 rows, GEMV%s against cuBLAS (dequantised panels), ms (int8 weights read at GB/s):",
               names[m], tc ? " and tensor cores" : "");
        g1_status st = G1_OK;
        for (int T = 16; T <= 256 && st == G1_OK; T *= 2) {
            if (T > e->opts.max_batch)
                break;
            double gv = 0, mc = 0, mc2 = 0, gm = 0, deq = 0;
            int bn = e->mm.mma_bn;
            if (T <= 64)
                st = mm_time(e, W, T, 0, iters, &gv);
            if (st == G1_OK && tc)
                st = mm_time(e, W, T, 1, iters, &mc);
            e->mm.mma_bn = 128; /* blocks twice as wide: x re-read half as often */
            if (st == G1_OK && tc)
                st = mm_time(e, W, T, 1, iters, &mc2);
            e->mm.mma_bn = bn;
            if (st == G1_OK)
                st = gemm_time(e, W, T, iters, &gm, &deq);
            if (st != G1_OK)
                break;
            int ti = T == 16 ? 0 : T == 32 ? 1 : T == 64 ? 2 : T == 128 ? 3 : 4;
            tgv[m][ti] = gv, tmc[m][ti] = mc, tmc2[m][ti] = mc2, tgm[m][ti] = gm;
            printf(" T=%d", T);
            if (T <= 64)
                printf(" GEMV %.3f (%.0f)", gv, bytes / (gv * 1e-3) / 1e9);
            if (tc)
                printf(" tensor cores %.3f (%.0f), 128 columns a block %.3f (%.0f)", mc, bytes / (mc * 1e-3) / 1e9, mc2,
                       bytes / (mc2 * 1e-3) / 1e9);
            printf(" cuBLAS %.3f;", gm);
        }
        printf("\n");
        e->mm.partial = keep, e->mm.partial_n = keep_n;
        cudaFree(part);
        G1_TRY(st);
    }
    suggest_tune(tgv, tmc, tmc2, tgm);
    if (c->emb_size % 8 == 0) {
        double ebytes = 2.0 * c->vocab_size * c->emb_size;
        printf("  un-embedding (%d x %d bf16, %.0f MB):", c->vocab_size, c->emb_size, ebytes / 1e6);
        for (int T = 1; T <= 8; T += 7) {
            double ms = 0;
            G1_TRY(unembed_time(e->stream, c, T, iters, &ms));
            printf(" T=%d %.3f ms %.0f GB/s (%.0f%%);", T, ms, ebytes / (ms * 1e-3) / 1e9,
                   100 * ebytes / (ms * 1e-3) / 1e9 / bw);
        }
        printf("\n");
    }
    {
        int R = smoke ? 4 : 256;
        double md = 0, mc = 0, bytes = (double)R * c->vocab_size * 4;
        G1_TRY(score_time(e->stream, c, R, iters, &md, &mc));
        printf("  score of %d logits rows (%d each, %.0f MB), for grok1-run --mode score: reduced on the GPU %.3f ms "
               "(%.0f rows/s, %.0f GB/s); copied to pinned host memory for the host's reduction %.3f ms "
               "(%.0f rows/s, %.1f GB/s)\n",
               R, c->vocab_size, bytes / 1e6, md, R / (md * 1e-3), bytes / (md * 1e-3) / 1e9, mc, R / (mc * 1e-3),
               bytes / (mc * 1e-3) / 1e9);
    }
    int S = 8, C = smoke ? 40 : c->max_seq_len;
    for (int bf16 = 0; bf16 < 2; bf16++) {
        double ms = 0, kv = 2.0 * S * C * c->num_kv_heads * c->key_size * (bf16 ? 2 : 4);
        G1_TRY(attention_time(e->stream, c, S, C, 1, bf16, 0, iters, &ms));
        printf("  decode attention, %d sequences x %d cached positions, %s caches (%.0f MB of K and V): %.3f ms, "
               "%.0f GB/s (%.0f%%)\n",
               S, C, bf16 ? "bf16" : "float32", kv / 1e6, ms, kv / (ms * 1e-3) / 1e9,
               100 * kv / (ms * 1e-3) / 1e9 / bw);
    }
    { /* a prompt's expert matmuls: the dequantiser's share, and panels small enough to stay in L2 */
        int k = c->num_selected_experts, E = c->num_experts, Ps[2] = {512, 4096}, l2 = 0;
        G1_TRY(cu(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, e->opts.device), "attribute"));
        const g1_dqmat *mats[2] = {&e->layers[0].moe[0][0], &e->layers[0].moe[2][0]};
        const char *names[2] = {"W1", "W2"};
        /* the second panel buffer and stream, if the engine made none (its
         * matrices fit one panel: the smoke run), for the smaller panels */
        int own = !e->mm.side && !e->mm.gemv_only;
        if (own) {
            G1_TRY(cu(cudaMalloc((void **)&e->mm.wbf2, e->mm.wbf_n * 2), "malloc (second panel)"));
            G1_TRY(g1_cuda_mm_overlap_init(&e->mm));
        }
        for (int i = 0; i < 2; i++) {
            int P = smoke ? e->opts.max_batch : Ps[i], R = P * k / E; /* an expert's rows at even routing */
            if (P > e->opts.max_batch || R <= e->mm.gemv_max || (smoke && i))
                continue;
            for (int m = 0; m < 2; m++) {
                const g1_dqmat *W = mats[m];
                double all = 0, deq = 0, n = (double)W->rows * W->cols, flop = 2.0 * R * n;
                G1_TRY(gemm_time(e, W, R, smoke ? 2 : 10, &all, &deq));
                printf("  prompt matmul, expert %s (%d x %d) at %d rows (a %d-token prompt, even routing): %.3f ms "
                       "(%.1f TFLOP/s), of which dequantising %.3f ms (%.0f GB/s: int8 in, bf16 out)",
                       names[m], W->rows, W->cols, R, P, all, flop / (all * 1e-3) / 1e12, deq,
                       3 * n / (deq * 1e-3) / 1e9);
                if (e->mm.side && n > (double)e->mm.wbf_n) { /* panels overlapped: again on one stream */
                    cudaStream_t side = e->mm.side;
                    double one = 0, d1 = 0;
                    e->mm.side = NULL;
                    g1_status st = gemm_time(e, W, R, smoke ? 2 : 10, &one, &d1);
                    e->mm.side = side;
                    G1_TRY(st);
                    printf("; every panel on one stream %.3f ms (the figure before: the next panel dequantised on a "
                           "second stream during each GEMM)", one);
                }
                /* bf16 panels of half and a quarter of the L2 (a third and a sixth of the matrix in the
                 * smoke run): written by the dequantiser and read by cuBLAS while still in L2, if the
                 * L2 keeps them */
                for (int div = 4; div <= 8; div *= 2) {
                    size_t full = e->mm.wbf_n, small = smoke ? (size_t)n / (div - 1) / 2 * 2 : (size_t)l2 / div;
                    if (small >= full || small < (size_t)W->cols)
                        continue;
                    double ms2 = 0, deq2 = 0;
                    e->mm.wbf_n = small;
                    g1_status st = gemm_time(e, W, R, smoke ? 2 : 10, &ms2, &deq2);
                    e->mm.wbf_n = full;
                    G1_TRY(st);
                    printf("; in panels of %.0f MB: %.3f ms (dequantising alone %.3f ms)", 2.0 * small / 1e6, ms2,
                           deq2);
                    if (div != 8)
                        continue;
                    /* the same with the panel's bytes marked persisting in the L2 (an access policy window
                     * on the stream, cuBLAS's too), so the int8 weights streaming through cannot evict it */
                    int set = 0;
                    e->mm.wbf_n = small;
                    st = l2_persist(e, e->mm.wbf, 2 * small, &set);
                    if (st == G1_OK && set)
                        st = gemm_time(e, W, R, smoke ? 2 : 10, &ms2, &deq2);
                    g1_status st2 = l2_persist(e, NULL, 0, NULL);
                    e->mm.wbf_n = full;
                    G1_TRY(st);
                    G1_TRY(st2);
                    if (set)
                        printf(", persisting in L2: %.3f ms (dequantising alone %.3f ms)", ms2, deq2);
                    else
                        printf(", persisting in L2: n/a (no L2 set-aside on this device)");
                }
                printf("\n");
            }
        }
        if (own) {
            g1_cuda_mm_overlap_free(&e->mm);
            cudaFree(e->mm.wbf2);
            e->mm.wbf2 = NULL;
        }
    }
    { /* a prompt: what the tensor cores are worth there */
        int P = smoke ? 40 : e->opts.max_batch, cc = 0;
        double flop = 4.0 * c->key_size * c->num_q_heads * ((double)P * (P + 1) / 2), mm = 0, f32 = 0;
        G1_TRY(cu(cudaDeviceGetAttribute(&cc, cudaDevAttrComputeCapabilityMajor, e->opts.device), "attribute"));
        if (cc >= 8 && g1_cuda_attn_mma_tile_tokens(c->num_q_heads, c->num_kv_heads, c->key_size))
            G1_TRY(attention_time(e->stream, c, 1, P, P, 0, 1, iters, &mm));
        G1_TRY(attention_time(e->stream, c, 1, P, P, 0, 0, iters, &f32));
        printf("  prompt attention, %d tokens from position 0, float32 caches (%.0f GFLOP causal): tensor cores ", P,
               flop / 1e9);
        if (mm > 0)
            printf("%.3f ms (%.1f TFLOP/s)", mm, flop / (mm * 1e-3) / 1e12);
        else
            printf("n/a (compute capability %d, or the head dimension)", cc);
        printf(", float32 kernel %.3f ms (%.1f TFLOP/s)\n", f32, flop / (f32 * 1e-3) / 1e12);
    }
    return G1_OK;
}

/* What making a decode step's graph costs: the first step of T tokens on
 * an empty graph table (capture, instantiation, launch and the run), then
 * the same step replayed, host time to the end of each; the difference is
 * what a graph dropped (g1_cuda_opts.max_graphs) costs when its shape
 * comes back. *dev_bytes: the device memory the graph took (cudaMemGetInfo
 * before and after; 0 where the driver takes none, or on the emulation).
 * The engine's own graphs are put back after. */
static g1_status graph_make_ms(g1_cuda_engine *e, int T, int *slot, int *pos, double *make_ms, double *replay_ms,
                               long long *dev_bytes)
{
    size_t n = (size_t)(e->graph_max + 1) * (e->graph_max + 1);
    cudaGraphExec_t *own = e->graphs, *fresh = calloc(n, sizeof *fresh);
    unsigned long long *own_used = e->graph_used, *fresh_used = calloc(n, sizeof *fresh_used);
    int live = e->graphs_live, made = e->n_graphs;
    if (!fresh || !fresh_used) {
        free(fresh), free(fresh_used);
        return G1_FAIL(G1_ERR_NOMEM, "graph table");
    }
    for (int t = 0; t < T; t++)
        slot[t] = t, pos[t] = 0;
    g1_batch b = {.T = T, .slot = slot, .pos = pos};
    e->graphs = fresh, e->graph_used = fresh_used, e->graphs_live = 0;
    size_t free0 = 0, free1 = 0, total = 0;
    g1_status st = cu(cudaMemGetInfo(&free0, &total), "memory info");
    for (int k = 0; k < 2 && st == G1_OK; k++) {
        for (int s = 0; s < T; s++)
            g1_cuda_engine_reset_slot(e, s);
        double t0 = secs();
        st = g1_cuda_engine_forward_device(e, &b);
        if (st == G1_OK)
            st = cu(cudaStreamSynchronize(e->stream), "graph step");
        *(k ? replay_ms : make_ms) = 1e3 * (secs() - t0);
    }
    if (st == G1_OK)
        st = cu(cudaMemGetInfo(&free1, &total), "memory info");
    *dev_bytes = (long long)free0 - (long long)free1;
    int none = !e->graphs; /* the driver refused the graph: the engine dropped the table */
    for (size_t i = 0; e->graphs && i < n; i++)
        if (e->graphs[i])
            cudaGraphExecDestroy(e->graphs[i]);
    free(e->graphs), free(e->graph_used);
    e->graphs = own, e->graph_used = own_used, e->graphs_live = live, e->n_graphs = made;
    if (st == G1_OK && none)
        st = G1_FAIL(G1_ERR_CUDA, "no graph was made for a %d-token decode step", T);
    return st;
}

/* One layer's forward over T tokens, the mean of a few timed runs after a
 * warm-up: T sequences at position 0 (decode) up to 64 tokens, else one
 * prompt of T. touched: the experts the batch's tokens picked. */
static g1_status time_layer(g1_cuda_engine *e, int T, int *slot, int *pos, double *ms_out, int *touched)
{
    int D = e->cfg.emb_size, k = e->cfg.num_selected_experts;
    int iters = T <= 64 ? 20 : T <= 512 ? 8 : 3, decode = T <= 64;
    for (int t = 0; t < T; t++)
        slot[t] = decode ? t : 0, pos[t] = decode ? 0 : t;
    g1_batch b = {.T = T, .slot = slot, .pos = pos};
    cudaEvent_t e0, e1;
    g1_status st = cu(cudaEventCreate(&e0), "event");
    if (st == G1_OK && (st = cu(cudaEventCreate(&e1), "event")) != G1_OK)
        cudaEventDestroy(e0);
    if (st != G1_OK)
        return st;
    float total = 0;
    for (int it = -1; st == G1_OK && it < iters; it++) {
        for (int s = 0; s < e->opts.n_slots; s++)
            g1_cuda_engine_reset_slot(e, s);
        st = cu(g1_cuda_fill_f32(e->stream, e->x, (size_t)T * D, 7 + (uint64_t)it, -1, 1), "fill");
        if (st != G1_OK)
            break;
        cudaEventRecord(e0, e->stream);
        st = g1_cuda_engine_forward_device(e, &b);
        cudaEventRecord(e1, e->stream);
        if (st == G1_OK)
            st = cu(cudaEventSynchronize(e1), "forward");
        float ms;
        cudaEventElapsedTime(&ms, e0, e1);
        if (it >= 0)
            total += ms;
    }
    cudaEventDestroy(e0), cudaEventDestroy(e1);
    if (st != G1_OK)
        return st;
    *ms_out = total / iters;
    /* the last run's choices (decode batches keep them on the device) */
    int *idx = malloc((size_t)T * k * sizeof(int));
    if (!idx)
        return G1_FAIL(G1_ERR_NOMEM, "%d rows of expert choices", T * k);
    st = cu(cudaMemcpy(idx, e->idx, (size_t)T * k * sizeof(int), cudaMemcpyDeviceToHost), "expert choices");
    unsigned char hit[256] = {0};
    *touched = 0;
    for (int r = 0; st == G1_OK && r < T * k; r++)
        if (!hit[idx[r]]++)
            (*touched)++;
    free(idx);
    return st;
}

/* The table's row for T tokens; returns 0 when a goal the row checks is
 * missed. At 1 to 8 tokens the limit is reading the attention weights and
 * the experts the tokens picked once at the copy rate (the "two
 * experts" is that at 1 token, and at any T whose tokens pick the same two:
 * the row marked "same 2"); at 4096 tokens, 60% of the cuBLAS rate. */
static int layer_row(const g1_config *c, int T, const char *what, double ms, int touched, double attn_b, double exp_b,
                     double attn_params, double bw, double peak, g1_cuda_gemm mode)
{
    int decode = T <= 64, ok = 1;
    double ctx = decode ? 1 : (T + 1) / 2.0;
    double bytes = attn_b + touched * exp_b;
    double flops = 2.0 * T * (attn_params + (double)c->num_selected_experts * 3 * c->emb_size * c->ffn_size) +
                   4.0 * T * ctx * c->num_q_heads * c->key_size;
    double gbs = bytes / (ms * 1e-3) / 1e9, tf = flops / (ms * 1e-3) / 1e12;
    double ideal_ms = bytes / (bw * 1e9) * 1e3; /* bw: bytes read + written per second */
    char goal[96] = "-", label[32];
    if (T <= 8) {
        ok = ms <= 1.5 * ideal_ms;
        snprintf(goal, sizeof goal, "%.2fx of read-once, %d experts (<= 1.5x): %s", ms / ideal_ms, touched,
                 ok ? "met" : "MISSED");
    } else if (T >= 4096 && mode == G1_CUDA_GEMM_BF16) { /* the goal is for the default GEMM */
        ok = tf >= 0.6 * peak;
        snprintf(goal, sizeof goal, "%.0f%% of cuBLAS (>= 60%%): %s", 100 * tf / peak, ok ? "met" : "MISSED");
    }
    snprintf(label, sizeof label, "%d%s", T, what);
    printf("%-10s %9.3f %8d %9.0f %9.1f %8s %10.0f %s\n", label, ms, touched, gbs, tf,
           T <= 8 ? "bw" : T >= 4096 ? "flops" : "", T / (8.0 * ms * 1e-3), goal);
    return ok;
}

int main(int argc, char **argv)
{
    const char *preset = "grok-1", *tokens = "1,8,64,512,4096", *gemm = "bf16";
    int smoke = 0, want_parts = 1;
    g1_cuda_gemm mode = G1_CUDA_GEMM_BF16;
    g1_cuda_opts tune = {0}; /* --cuda-tune: the engine's switches (the parts table's own variants aside) */
    int tuned = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--smoke"))
            smoke = 1;
        else if (!strcmp(argv[i], "--no-parts"))
            want_parts = 0;
        else if (i + 1 < argc && !strcmp(argv[i], "--preset"))
            preset = argv[++i];
        else if (i + 1 < argc && !strcmp(argv[i], "--tokens"))
            tokens = argv[++i];
        else if (i + 1 < argc && !strcmp(argv[i], "--cuda-gemm") &&
                 (!strcmp(argv[i + 1], "bf16") || !strcmp(argv[i + 1], "bf16x2") || !strcmp(argv[i + 1], "f32"))) {
            gemm = argv[++i];
            mode = !strcmp(gemm, "f32") ? G1_CUDA_GEMM_F32 : !strcmp(gemm, "bf16x2") ? G1_CUDA_GEMM_BF16X2
                                                                                       : G1_CUDA_GEMM_BF16;
        } else if (i + 1 < argc && !strcmp(argv[i], "--cuda-tune")) {
            if (g1_cuda_tune_parse(argv[++i], &tune) != G1_OK) {
                fprintf(stderr, "bench_cuda_layer: %s\n", g1_last_error());
                return 2;
            }
            tuned = 1;
        } else {
            fprintf(stderr, "usage: bench_cuda_layer [--preset grok-1|small|tiny] [--tokens 1,8,...] "
                            "[--cuda-gemm bf16|bf16x2|f32] [--cuda-tune KEY=VALUE,...] [--no-parts] [--smoke]\n");
            return 2;
        }
    }
    if (g1_cuda_device_count() < 1) {
        printf("bench_cuda_layer: no GPU visible: %s: skipped\n", g1_cuda_no_device_why());
        return 77;
    }
    int Ts[16], nT = 0, Tmax = 1;
    for (const char *p = tokens; *p && nT < 16;) {
        Ts[nT] = atoi(p);
        if (Ts[nT] < 1)
            break;
        Tmax = Ts[nT] > Tmax ? Ts[nT] : Tmax;
        nT++;
        p = strchr(p, ',');
        if (!p)
            break;
        p++;
    }
    g1_config c;
    CK(g1_config_preset(preset, &c));
    struct cudaDeviceProp prop;
    cudaGetDeviceProperties(&prop, 0);
    double bw = 0, peak = 0;
    CK(copy_bw(&bw, smoke));
    CK(gemm_rate(&peak, smoke));
    g1_engine_opts o = {.n_slots = 64, .max_batch = Tmax, .max_context = Tmax < c.max_seq_len ? Tmax : c.max_seq_len,
                        .backend = G1_BACKEND_CUDA, .cuda_gemm = mode};
    g1_cuda_engine *e;
    CK(g1_cuda_engine_init_random(&e, &c, 1, &o, &tune, 42));
    char paths[512];
    g1_cuda_engine_paths(e, paths, sizeof paths);
    printf("cuda paths%s: %s\n", tuned ? " (--cuda-tune)" : "", paths);
    int D = c.emb_size, F = c.ffn_size;
    double attn_b = qmat_bytes(&c, G1_ATTN_Q, 1) + qmat_bytes(&c, G1_ATTN_K, 1) + qmat_bytes(&c, G1_ATTN_V, 1) +
                    qmat_bytes(&c, G1_ATTN_O, 8);
    double exp_b = 2 * qmat_bytes(&c, G1_MOE_GATE, 1) + qmat_bytes(&c, G1_MOE_DOWN, 8);
    double attn_params = (double)D * (c.num_q_heads + 2 * c.num_kv_heads) * c.key_size + (double)c.num_q_heads * c.key_size * D;
    printf("device: %s, %d SMs; copy %.0f GB/s; cuBLAS bf16 GEMM %.0f TFLOP/s; model %s (D %d, F %d); "
           "--cuda-gemm %s\n", prop.name, prop.multiProcessorCount, bw, peak, preset, D, F, gemm);
    printf("%-10s %9s %8s %9s %9s %8s %10s %s\n", "tokens", "ms/layer", "experts", "GB/s", "TFLOP/s", "goal", "8-GPU tok/s",
           "goal check");
    int *slot = malloc((size_t)Tmax * sizeof(int)), *pos = malloc((size_t)Tmax * sizeof(int));
    int all_ok = 1, same_T = 0;
    for (int i = 0; i < nT; i++) {
        int T = Ts[i];
        double ms;
        int touched;
        CK(time_layer(e, T, slot, pos, &ms, &touched));
        all_ok &= layer_row(&c, T, "", ms, touched, attn_b, exp_b, attn_params, bw, peak, mode);
        if (T > 2 && T <= 8)
            same_T = T;
    }
    /* The goal names the attention and two experts: at 2 to 8 tokens that
     * is the batch whose tokens all pick the same two experts. A zero
     * router gives every token the same scores, so top-2's ties to the
     * lower index pick experts 0 and 1 for all. */
    if (same_T) {
        size_t rb = (size_t)D * c.num_experts * sizeof(float);
        float *saved;
        CK(cu(cudaMalloc((void **)&saved, rb), "router copy"));
        /* on the engine's stream, which may not wait for the legacy one */
        CK(cu(cudaMemcpyAsync(saved, e->layers[0].router, rb, cudaMemcpyDeviceToDevice, e->stream), "router copy"));
        CK(cu(cudaMemsetAsync(e->layers[0].router, 0, rb, e->stream), "router zero"));
        double ms;
        int touched;
        CK(time_layer(e, same_T, slot, pos, &ms, &touched));
        CK(cu(cudaMemcpyAsync(e->layers[0].router, saved, rb, cudaMemcpyDeviceToDevice, e->stream), "router restore"));
        CK(cu(cudaStreamSynchronize(e->stream), "router restore"));
        cudaFree(saved);
        all_ok &= layer_row(&c, same_T, " same 2", ms, touched, attn_b, exp_b, attn_params, bw, peak, mode);
    }
    printf("goals: %s (tok/s: 64 layers as 8 stages of 8, enough micro-batches to fill the pipeline)\n",
           all_ok ? "met" : "not all met");
    /* decode steps replay a CUDA graph of the layer (the rows above): what
     * launching its kernels one by one costs instead */
    if (e->graphs) {
        printf("decode steps without the CUDA graph (kernels launched one by one):");
        for (int i = 0; i < nT; i++) {
            if (Ts[i] > e->graph_max || Ts[i] > 64) /* the rows above: decode steps up to 64 tokens */
                continue;
            double with = 0, without = 0;
            int touched;
            CK(time_layer(e, Ts[i], slot, pos, &with, &touched));
            cudaGraphExec_t *g = e->graphs;
            e->graphs = NULL;
            g1_status st = time_layer(e, Ts[i], slot, pos, &without, &touched);
            e->graphs = g;
            CK(st);
            double make = 0, replay = 0;
            long long bytes = 0;
            CK(graph_make_ms(e, Ts[i], slot, pos, &make, &replay, &bytes));
            printf(" %d tokens %.3f ms (graph %.3f ms; making it %.2f ms, host time with its first run, then "
                   "%.2f ms replayed; %.2f MB of device memory);", Ts[i], without, with, make, replay,
                   (double)bytes / 1e6);
        }
        printf("\n");
    }
    upload_line(&c, attn_b, exp_b, smoke);
    if (want_parts && o.max_batch >= 8 && o.n_slots >= 8)
        CK(parts(e, &c, bw, smoke));
    g1_cuda_engine_free(e);
    free(slot), free(pos);
    return 0;
}
