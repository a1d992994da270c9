/* The int8 matmuls and the un-embedding, host side: the GEMV kernel for few
 * rows (split-K sized from the matrix alone, so a row's result does not
 * depend on how many rows share the call), dequantised bf16 panels and
 * cuBLAS (bf16 in, float32 accumulate) for many. */
#include "cuda/cuda_check.h"

enum { MIN_ROWS_PER_SPLIT = 192 };

/* Split-K slices: as many as fill 2 blocks a multiprocessor without going
 * over (every GEMV kernel fits 2, so a token group's blocks are one whole
 * wave, never a wave and a few stragglers), each slice at least
 * MIN_ROWS_PER_SPLIT rows, a multiple of 8 (one row per warp per step).
 * From the matrix's shape alone, so a row's sums do not depend on T. */
static int gemv_splits(const g1_cuda_mm *mm, int rows, int cols, int *rows_per_split)
{
    int gc = g1_cuda_gemv_cols(), tiles = (cols + gc - 1) / gc;
    int want = 2 * (mm->sms > 0 ? mm->sms : 132) / tiles;
    return g1_split_rows(rows, want, MIN_ROWS_PER_SPLIT, 8, rows_per_split);
}

/* Rows a row panel takes: as even as the panels can be, a multiple of 64
 * where at least 64 fit (0: not even one row fits). */
static size_t panel_rows(const g1_cuda_mm *mm, int rows, int cols)
{
    size_t kr = mm->wbf_n / (size_t)cols;
    if (kr >= (size_t)rows || kr < 64)
        return kr >= (size_t)rows ? (size_t)rows : kr;
    size_t np = ((size_t)rows + kr - 1) / kr, even = ((size_t)rows + np - 1) / np;
    even = (even + 63) / 64 * 64;
    return even <= kr ? even : kr / 64 * 64;
}

/* How g1_cuda_gemm_q8 cuts W into panels of at most wbf_n elements: the
 * whole matrix when it fits; wide matrices (cols >= 2 rows: the experts'
 * W1 and Wv) into column panels (*by_cols), each multiplied over all of K
 * in one cuBLAS call that writes its columns of y once; the rest into row
 * panels (K split) whose products are added into y (beta 1), y read and
 * written again for every panel after the first. Returns the panel count
 * (0: not even one row or 64 columns fit) and the rows or columns each
 * panel takes (the last one the rest). */
static int gemm_panels(const g1_cuda_mm *mm, int rows, int cols, int *by_cols, int *step)
{
    *by_cols = 0;
    size_t most = mm->wbf_n / (size_t)rows;
    if ((size_t)rows * cols > mm->wbf_n && cols >= 2 * rows && most >= 64) {
        int np = (int)(((size_t)cols + most - 1) / most), nc = (cols + np - 1) / np;
        nc = (nc + 15) / 16 * 16; /* the dequantiser's 16 columns a thread */
        if ((size_t)nc > most)
            nc = (int)(most / 16 * 16);
        *by_cols = 1;
        *step = nc;
        return (cols + nc - 1) / nc;
    }
    size_t kr = panel_rows(mm, rows, cols);
    *step = (int)kr;
    return kr ? (int)(((size_t)rows + kr - 1) / kr) : 0;
}

static int mma_bn(const g1_cuda_mm *mm) { return mm->mma_bn == 128 ? 128 : 64; }

/* Split-K slices of the tensor-core kernel (g1_mma_splits). */
static int mma_splits(const g1_cuda_mm *mm, int T, int rows, int cols, int *rows_per_split)
{
    return g1_mma_splits(mm->sms, T, rows, cols, rows_per_split);
}

size_t g1_cuda_mma_partial_n(const g1_cuda_mm *mm, int n, int rows, int cols)
{
    int rps, splits = mma_splits(mm, n, rows, cols, &rps);
    return splits > 1 ? (size_t)splits * (size_t)n * (size_t)cols : 0;
}

size_t g1_cuda_gemv_partial_n(const g1_cuda_mm *mm, int n, int rows, int cols)
{
    int rps, splits = gemv_splits(mm, rows, cols, &rps);
    return splits > 1 ? (size_t)splits * (size_t)n * (size_t)cols : 0;
}

void g1_cuda_mm_sizes(const g1_cuda_mm *mm, int T, int rows, int cols, size_t *partial_n, size_t *wbf_n,
                      size_t *xbf_n)
{
    *partial_n = g1_cuda_gemv_partial_n(mm, T < mm->gemv_max ? T : mm->gemv_max, rows, cols);
    for (int n = mm->gemv_max + 1; n <= T && n <= mm->mma_max; n++) { /* not monotonic in n */
        size_t p = g1_cuda_mma_partial_n(mm, n, rows, cols);
        *partial_n = p > *partial_n ? p : *partial_n;
    }
    size_t whole = (size_t)rows * cols, cap = (size_t)32 << 20; /* panels of at most 64 MB */
    *wbf_n = whole < cap ? whole : cap;
    *xbf_n = (size_t)T * rows * (mm->split ? 2 : 1);
    if (mm->gemv_only) /* no panels, no bf16 inputs */
        *wbf_n = *xbf_n = 0;
}

g1_status g1_cuda_gemv_q8(g1_cuda_mm *mm, const float *x, int T, const g1_dqmat *W, float *y)
{
    if (T <= 0)
        return G1_OK;
    int rps, splits = gemv_splits(mm, W->rows, W->cols, &rps);
    size_t n = (size_t)T * W->cols;
    if (splits > 1 && (size_t)splits * n > mm->partial_n)
        return G1_FAIL(G1_ERR_INTERNAL, "CUDA GEMV of %d rows x %d columns needs %zu partial sums, has %zu", T,
                       W->cols, (size_t)splits * n, mm->partial_n);
    G1_CU(g1_cuda_gemv_launch(mm->stream, x, T, W, rps, splits, mm->gemv_unroll, splits > 1 ? mm->partial : y));
    if (splits > 1)
        G1_CU(g1_cuda_gemv_reduce(mm->stream, mm->partial, splits, n, y));
    return G1_OK;
}

/* The most split-K slices a group of a grouped matmul with groups of up
 * to maxm rows takes; *gsplits those of its GEMV groups (1 without a
 * GEMV), *msplits the most of its tensor-core groups (1 with none). */
static int grouped_splits(const g1_cuda_mm *mm, int maxm, int rows, int cols, int *gsplits, int *msplits)
{
    int rps;
    *gsplits = mm->gemv_max > 0 ? gemv_splits(mm, rows, cols, &rps) : 1;
    *msplits = 1;
    for (int m = mm->gemv_max + 1; m <= maxm; m++) { /* not monotonic in m */
        int s = mma_splits(mm, m, rows, cols, &rps);
        *msplits = s > *msplits ? s : *msplits;
    }
    return *gsplits > *msplits ? *gsplits : *msplits;
}

size_t g1_cuda_grouped_partial_n(const g1_cuda_mm *mm, int n, int maxm, int rows, int cols)
{
    int gs, ms, s = grouped_splits(mm, maxm, rows, cols, &gs, &ms);
    return s > 1 ? (size_t)s * (size_t)n * (size_t)cols : 0;
}

int g1_cuda_grouped_max_rows(const g1_cuda_mm *mm, int rows, int cols)
{
    g1_dqmat shape = {.rows = rows, .cols = cols, .blocks = 1};
    return mm->mma_max > mm->gemv_max && g1_cuda_mma_q8_fits(&shape) ? mm->mma_max : mm->gemv_max;
}

g1_status g1_cuda_matmul_grouped_q8(g1_cuda_mm *mm, const float *x, int n, int maxm, const g1_dqmat *mats,
                                    const g1_dqmat *shape, const int *grp, int E, float *y)
{
    if (n <= 0)
        return G1_OK;
    int rows = shape->rows, cols = shape->cols, lo = mm->gemv_max, mma = maxm > lo;
    if (maxm > g1_cuda_grouped_max_rows(mm, rows, cols))
        return G1_FAIL(G1_ERR_INTERNAL, "CUDA grouped matmul with groups of up to %d rows of a %d x %d matrix "
                       "(the GEMV takes %d, the tensor cores %d)", maxm, rows, cols, lo, mm->mma_max);
    int gs, ms, S = grouped_splits(mm, maxm, rows, cols, &gs, &ms), rps;
    size_t cnt = (size_t)n * cols, nx = (size_t)n * rows;
    if (S > 1 && (size_t)S * cnt > mm->partial_n)
        return G1_FAIL(G1_ERR_INTERNAL, "CUDA grouped matmul of %d rows x %d columns needs %zu partial sums, has %zu",
                       n, cols, (size_t)S * cnt, mm->partial_n);
    if (mma && nx > mm->xbf_n)
        return G1_FAIL(G1_ERR_INTERNAL, "CUDA grouped matmul input of %d x %d exceeds the scratch", n, rows);
    if (lo > 0) {
        /* tokens a block takes at a time: about a group's rows if they were even */
        int slots = E < n ? E : n, avg = (n + slots - 1) / slots, nt = avg <= 1 ? 1 : avg == 2 ? 2 : 4;
        gemv_splits(mm, rows, cols, &rps);
        G1_CU(g1_cuda_gemv_grouped(mm->stream, x, n, nt, mats, shape, grp, E, lo, rps, gs, gs > 1 ? mm->partial : y));
    }
    if (!mma) {
        if (gs > 1)
            G1_CU(g1_cuda_gemv_reduce(mm->stream, mm->partial, gs, cnt, y));
        return G1_OK;
    }
    mm->n_mma++;
    G1_CU(g1_cuda_to_bf16(mm->stream, x, nx, mm->xbf, NULL));
    G1_CU(g1_cuda_mma_grouped_launch(mm->stream, mm->xbf, n, maxm, mats, shape, grp, E, lo, mm->sms, mma_bn(mm), ms,
                                     mm->partial, y));
    if (S > 1)
        G1_CU(g1_cuda_reduce_grouped(mm->stream, mm->partial, n, rows, cols, grp, E, lo, gs, mm->sms, y));
    return G1_OK;
}

g1_status g1_cuda_mm_overlap_init(g1_cuda_mm *mm)
{
    cudaEvent_t *ev[5] = {&mm->ev_start, &mm->ev_ready[0], &mm->ev_ready[1], &mm->ev_free[0], &mm->ev_free[1]};
    cudaStream_t side = NULL;
    cudaError_t err = cudaStreamCreateWithFlags(&side, cudaStreamNonBlocking);
    int made = 0; /* events created */
    while (err == cudaSuccess && made < 5) {
        err = cudaEventCreateWithFlags(ev[made], cudaEventDisableTiming);
        made += err == cudaSuccess;
    }
    if (err == cudaSuccess) {
        mm->side = side;
        return G1_OK;
    }
    for (int i = 0; i < made; i++)
        cudaEventDestroy(*ev[i]);
    if (side)
        cudaStreamDestroy(side);
    mm->side = NULL;
    return G1_FAIL(G1_ERR_CUDA, "%s:%d: the matmuls' second stream and events: %s", __FILE__, __LINE__,
                   cudaGetErrorString(err));
}

void g1_cuda_mm_overlap_free(g1_cuda_mm *mm)
{
    if (!mm->side)
        return;
    cudaStreamSynchronize(mm->side);
    cudaEvent_t ev[5] = {mm->ev_start, mm->ev_ready[0], mm->ev_ready[1], mm->ev_free[0], mm->ev_free[1]};
    for (int i = 0; i < 5; i++)
        cudaEventDestroy(ev[i]);
    cudaStreamDestroy(mm->side);
    mm->side = NULL;
}

/* g1_cuda_gemm_q8, or (x NULL) its dequantiser alone. */
static g1_status gemm_q8(g1_cuda_mm *mm, const float *x, int T, const g1_dqmat *W, float *y)
{
    if (T <= 0)
        return G1_OK;
    int rows = W->rows, cols = W->cols, by_cols, step, np = gemm_panels(mm, rows, cols, &by_cols, &step);
    size_t nx = (size_t)T * rows;
    if (nx * (mm->split ? 2 : 1) > mm->xbf_n)
        return G1_FAIL(G1_ERR_INTERNAL, "CUDA GEMM input of %d x %d exceeds the scratch", T, rows);
    if (!np)
        return G1_FAIL(G1_ERR_INTERNAL, "CUDA GEMM: no room to dequantise a panel of %d x %d", rows, cols);
    uint16_t *hi = mm->xbf, *lo = mm->split ? mm->xbf + nx : NULL;
    if (x)
        G1_CU(g1_cuda_to_bf16(mm->stream, x, nx, hi, lo));
    G1_CUBLAS(cublasSetStream(mm->blas, mm->stream));
    /* two or more panels, and a second buffer: each panel dequantised on the
     * side stream into buffer p % 2 (once the GEMM of panel p - 2 has read
     * it), each GEMM on the stream after its panel's dequantiser. The same
     * panels and GEMMs as on one stream: the same bits. */
    int two = x && np > 1 && mm->side && mm->wbf2;
    const float one = 1, zero = 0;
    if (two) {
        G1_CU(cudaEventRecord(mm->ev_start, mm->stream)); /* earlier readers of both buffers */
        G1_CU(cudaStreamWaitEvent(mm->side, mm->ev_start, 0));
    }
    for (int p = 0; p < np; p++) {
        /* column-major views: Y (cols, T), X (rows, T), a panel (nc, nr) */
        int r0 = by_cols ? 0 : p * step, nr = by_cols ? rows : (rows - r0 < step ? rows - r0 : step);
        int c0 = by_cols ? p * step : 0, nc = by_cols ? (cols - c0 < step ? cols - c0 : step) : cols;
        int b = p & 1;
        uint16_t *buf = two && b ? mm->wbf2 : mm->wbf;
        if (two) {
            if (p >= 2)
                G1_CU(cudaStreamWaitEvent(mm->side, mm->ev_free[b], 0));
            G1_CU(g1_cuda_dequant(mm->side, W, r0, nr, c0, nc, buf));
            G1_CU(cudaEventRecord(mm->ev_ready[b], mm->side));
            G1_CU(cudaStreamWaitEvent(mm->stream, mm->ev_ready[b], 0));
        } else {
            G1_CU(g1_cuda_dequant(mm->stream, W, r0, nr, c0, nc, buf));
        }
        for (int half = 0; x && half < (lo ? 2 : 1); half++) {
            /* Y[c0:c0+nc, :] (+)= Wpanel (nc, nr) . X[r0:r0+nr, :] */
            const uint16_t *xp = (half ? lo : hi) + r0;
            G1_CUBLAS(cublasGemmEx(mm->blas, CUBLAS_OP_N, CUBLAS_OP_N, nc, T, nr, &one, buf, CUDA_R_16BF, nc,
                                   xp, CUDA_R_16BF, rows, (r0 || half) ? &one : &zero, y + c0, CUDA_R_32F, cols,
                                   CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        }
        if (two)
            G1_CU(cudaEventRecord(mm->ev_free[b], mm->stream));
    }
    return G1_OK;
}

g1_status g1_cuda_gemm_q8(g1_cuda_mm *mm, const float *x, int T, const g1_dqmat *W, float *y)
{
    return x ? gemm_q8(mm, x, T, W, y) : G1_FAIL(G1_ERR_ARG, "CUDA GEMM without an input");
}

g1_status g1_cuda_mma_q8(g1_cuda_mm *mm, const float *x, int T, const g1_dqmat *W, float *y)
{
    if (T <= 0)
        return G1_OK;
    if (!g1_cuda_mma_q8_fits(W))
        return G1_FAIL(G1_ERR_INTERNAL, "CUDA tensor-core matmul of a %d x %d matrix (rows must be a multiple "
                       "of 32, columns of 16)", W->rows, W->cols);
    int rps, splits = mma_splits(mm, T, W->rows, W->cols, &rps);
    size_t nx = (size_t)T * W->rows, n = (size_t)T * W->cols;
    if (nx > mm->xbf_n)
        return G1_FAIL(G1_ERR_INTERNAL, "CUDA tensor-core matmul input of %d x %d exceeds the scratch", T, W->rows);
    if (splits > 1 && (size_t)splits * n > mm->partial_n)
        return G1_FAIL(G1_ERR_INTERNAL, "CUDA tensor-core matmul of %d rows x %d columns needs %zu partial sums, "
                       "has %zu", T, W->cols, (size_t)splits * n, mm->partial_n);
    mm->n_mma++;
    G1_CU(g1_cuda_to_bf16(mm->stream, x, nx, mm->xbf, NULL));
    G1_CU(g1_cuda_mma_q8_launch(mm->stream, mm->xbf, T, W, mma_bn(mm), rps, splits, splits > 1 ? mm->partial : y));
    if (splits > 1)
        G1_CU(g1_cuda_gemv_reduce(mm->stream, mm->partial, splits, n, y));
    return G1_OK;
}

g1_status g1_cuda_gemm_q8_dequant(g1_cuda_mm *mm, int T, const g1_dqmat *W)
{
    return gemm_q8(mm, NULL, T, W, NULL);
}

g1_status g1_cuda_matmul_q8(g1_cuda_mm *mm, const float *x, int T, const g1_dqmat *W, float *y)
{
    if (mm->gemv_only) {
        /* a row's result is the GEMV's whatever the chunk holds */
        for (int t0 = 0; t0 < T; t0 += mm->gemv_max) {
            int n = T - t0 < mm->gemv_max ? T - t0 : mm->gemv_max;
            G1_TRY(g1_cuda_gemv_q8(mm, x + (size_t)t0 * W->rows, n, W, y + (size_t)t0 * W->cols));
        }
        return G1_OK;
    }
    if (T <= mm->gemv_max)
        return g1_cuda_gemv_q8(mm, x, T, W, y);
    if (T <= mm->mma_max && !mm->split && g1_cuda_mma_q8_fits(W))
        return g1_cuda_mma_q8(mm, x, T, W, y);
    return g1_cuda_gemm_q8(mm, x, T, W, y);
}

g1_status g1_cuda_unembed(g1_cuda_mm *mm, const float *x, int T, int D, const uint16_t *E, int V, float mult,
                          float *y)
{
    if (T <= 0)
        return G1_OK;
    if (mm->gemv_only) {
        int most = mm->gemv_max < G1_CUDA_UNEMBED_MAX_T ? mm->gemv_max : G1_CUDA_UNEMBED_MAX_T;
        for (int t0 = 0; t0 < T; t0 += most) {
            int n = T - t0 < most ? T - t0 : most;
            G1_CU(g1_cuda_unembed_few(mm->stream, x + (size_t)t0 * D, n, D, E, V, mult, y + (size_t)t0 * V));
        }
        return G1_OK;
    }
    if (T <= G1_CUDA_UNEMBED_MAX_T && T <= mm->gemv_max && D % 8 == 0) {
        G1_CU(g1_cuda_unembed_few(mm->stream, x, T, D, E, V, mult, y));
        return G1_OK;
    }
    size_t nx = (size_t)T * D;
    if (nx * (mm->split ? 2 : 1) > mm->xbf_n)
        return G1_FAIL(G1_ERR_INTERNAL, "CUDA un-embedding input of %d x %d exceeds the scratch", T, D);
    uint16_t *hi = mm->xbf, *lo = mm->split ? mm->xbf + nx : NULL;
    G1_CU(g1_cuda_to_bf16(mm->stream, x, nx, hi, lo));
    G1_CUBLAS(cublasSetStream(mm->blas, mm->stream));
    const float zero = 0, one = 1;
    /* column-major: Y (V, T) = E^T (V, D) . X (D, T), E stored (D, V) column-major */
    for (int half = 0; half < (lo ? 2 : 1); half++)
        G1_CUBLAS(cublasGemmEx(mm->blas, CUBLAS_OP_T, CUBLAS_OP_N, V, T, D, &mult, E, CUDA_R_16BF, D,
                               half ? lo : hi, CUDA_R_16BF, D, half ? &one : &zero, y, CUDA_R_32F, V,
                               CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    return G1_OK;
}
