/* Each CUDA op against the CPU op (src/cpu.h) on random shapes: the int8
 * matmul on both paths (GEMV; dequantised panels + cuBLAS, plain bf16 and
 * hi+lo), columns not a multiple of 16, blocked scales; RMSNorm, RoPE, GELU,
 * router, combine; attention over caches whose lengths are not multiples of
 * any tile; the un-embedding; the MoE with uneven and empty expert groups;
 * the score of logits rows (log-softmax, argmax, NaN and -inf rows).
 * Exits 77 when no GPU is visible. */
#include <string.h>

#include "bf16.h"
#include "cpu.h"
#include "engine.h"
#include "sampler.h"
#include "synth.h"
#include "cudatest.h"
#include "cuda/cuda_internal.h"

static cudaStream_t S;

/* the tensor-core attention against the CPU, relative to the largest |out| */
#define ATTN_MMA_REL 5e-3

static float *rnd(size_t n, float a)
{
    float *p = malloc((n ? n : 1) * sizeof *p);
    for (size_t i = 0; i < n; i++)
        p[i] = a * tu_sym();
    return p;
}

/* a host g1_qmat with bf16-exact scales, and its device copy */
static void mk_qmat(int rows, int cols, int blocks, g1_qmat *h, g1_dqmat *d)
{
    h->rows = rows, h->cols = cols, h->blocks = blocks, h->scale_split = NULL;
    h->w = malloc((size_t)rows * cols);
    h->scale = malloc((size_t)blocks * cols * sizeof(float));
    for (size_t i = 0; i < (size_t)rows * cols; i++)
        h->w[i] = (int8_t)(tu_int(255) - 127);
    for (size_t i = 0; i < (size_t)blocks * cols; i++)
        h->scale[i] = g1_round_bf16((0.5f + (float)tu_unif()) / (73.3f * sqrtf((float)rows)));
    *d = (g1_dqmat){.w = ct_up(h->w, (size_t)rows * cols), .scale = ct_up(h->scale, (size_t)blocks * cols * 4),
                    .rows = rows, .cols = cols, .blocks = blocks};
}

static void mm_init(g1_cuda_mm *mm, cublasHandle_t blas, int T, int rows, int cols, int split)
{
    memset(mm, 0, sizeof *mm);
    mm->stream = S;
    mm->blas = blas;
    ct_cu(cudaDeviceGetAttribute(&mm->sms, cudaDevAttrMultiProcessorCount, 0), "attr");
    mm->gemv_max = 64;
    mm->split = split;
    g1_cuda_mm_sizes(mm, T, rows, cols, &mm->partial_n, &mm->wbf_n, &mm->xbf_n);
    mm->wbf_n = mm->wbf_n > (size_t)cols * 100 ? (size_t)cols * 100 : mm->wbf_n; /* several panels */
    mm->partial = ct_up(NULL, mm->partial_n * 4);
    mm->wbf = ct_up(NULL, mm->wbf_n * 2);
    mm->xbf = ct_up(NULL, mm->xbf_n * 2);
}

static void mm_free(g1_cuda_mm *mm)
{
    cudaFree(mm->partial);
    cudaFree(mm->wbf);
    cudaFree(mm->xbf);
}

static void test_matmul(cublasHandle_t blas, int rows, int cols, int blocks, int T, int path)
{
    g1_qmat h;
    g1_dqmat d;
    mk_qmat(rows, cols, blocks, &h, &d);
    float *x = rnd((size_t)T * rows, 1), *ref = malloc((size_t)T * cols * 4), *got = malloc((size_t)T * cols * 4);
    g1_cpu_matmul_q8(x, T, &h, ref);
    g1_cuda_mm mm;
    mm_init(&mm, blas, T, rows, cols, path == 2);
    float *dx = ct_up(x, (size_t)T * rows * 4), *dy = ct_up(NULL, (size_t)T * cols * 4);
    ct_ok(path == 0 ? g1_cuda_gemv_q8(&mm, dx, T, &d, dy) : g1_cuda_gemm_q8(&mm, dx, T, &d, dy), "matmul");
    ct_down(got, dy, (size_t)T * cols * 4);
    char name[128];
    snprintf(name, sizeof name, "matmul %s %dx%d b%d T=%d", path == 0 ? "gemv" : path == 1 ? "gemm" : "gemm-split",
             rows, cols, blocks, T);
    /* GEMV: float32 x, same products, another summation order; GEMM: x in
     * bf16 (2^-9 relative per element); split: x to about 2^-17 */
    ct_close(name, got, ref, (size_t)T * cols, path == 1 ? 2e-2 : 2e-5 * sqrt(rows));
    if (path == 0) /* the GEMV's rows in flight per warp change its loads, never its sums */
        for (int u = 1; u <= 2; u++) {
            float *alt = malloc((size_t)T * cols * 4);
            mm.gemv_unroll = u;
            ct_ok(g1_cuda_gemv_q8(&mm, dx, T, &d, dy), "matmul");
            ct_down(alt, dy, (size_t)T * cols * 4);
            snprintf(name, sizeof name, "matmul gemv %dx%d b%d T=%d: unroll %d == unroll 4, bitwise", rows, cols,
                     blocks, T, u);
            tu_check(!memcmp(alt, got, (size_t)T * cols * 4), name);
            free(alt);
        }
    if (path >= 1) {
        /* the next panel dequantised on a second stream into a second buffer
         * (g1_cuda_mm_overlap_init), two calls in a row: the same bits as one
         * stream. On the emulation under G1EMU_STREAMS=latest, where work no
         * event orders runs before earlier work, so a panel overwritten
         * before its GEMM read it (this call's or the last call's) shows. */
        float *x2 = rnd((size_t)T * rows, 7), *one2 = malloc((size_t)T * cols * 4), *got2 = malloc((size_t)T * cols * 4);
        float *dx2 = ct_up(x2, (size_t)T * rows * 4), *dy2 = ct_up(NULL, (size_t)T * cols * 4);
        ct_ok(g1_cuda_gemm_q8(&mm, dx2, T, &d, dy2), "matmul");
        ct_down(one2, dy2, (size_t)T * cols * 4);
        mm.wbf2 = ct_up(NULL, mm.wbf_n * 2);
        ct_ok(g1_cuda_mm_overlap_init(&mm), "overlap");
        setenv("G1EMU_STREAMS", "latest", 1);
        ct_cu(cudaMemset(dy, 0, (size_t)T * cols * 4), "memset");
        ct_ok(g1_cuda_gemm_q8(&mm, dx, T, &d, dy), "matmul");
        ct_ok(g1_cuda_gemm_q8(&mm, dx2, T, &d, dy2), "matmul");
        float *a = malloc((size_t)T * cols * 4);
        ct_down(a, dy, (size_t)T * cols * 4);
        ct_down(got2, dy2, (size_t)T * cols * 4);
        unsetenv("G1EMU_STREAMS");
        int by_cols = cols >= 2 * rows && (size_t)rows * cols > mm.wbf_n;
        size_t panels = by_cols ? 0 : ((size_t)rows * cols + mm.wbf_n - 1) / mm.wbf_n;
        snprintf(name, sizeof name, "matmul %s %dx%d T=%d, %s panels on two streams == one stream, bitwise",
                 path == 1 ? "gemm" : "gemm-split", rows, cols, T, by_cols ? "column" : panels > 1 ? "row" : "whole");
        tu_check(!memcmp(a, got, (size_t)T * cols * 4) && !memcmp(got2, one2, (size_t)T * cols * 4), name);
        g1_cuda_mm_overlap_free(&mm);
        cudaFree(mm.wbf2), cudaFree(dx2), cudaFree(dy2);
        free(x2), free(one2), free(got2), free(a);
    }
    mm_free(&mm);
    cudaFree(dx), cudaFree(dy), cudaFree((void *)d.w), cudaFree((void *)d.scale);
    free(h.w), free(h.scale), free(x), free(ref), free(got);
}

/* The int8 tensor-core matmul (compute capability 8.0 and later) against
 * the CPU's matmul with x rounded to bf16 as the kernel takes it, summed in
 * double: only the float32 summation order differs, so a weight not
 * rounded to bf16, a wrong scale block or a misread fragment fails by far
 * more than the bound. Then against cuBLAS on the same inputs, and one
 * more call through g1_cuda_matmul_q8 (which must take this path). */
static void test_mma_matmul(cublasHandle_t blas, int rows, int cols, int blocks, int T)
{
    g1_qmat h;
    g1_dqmat d;
    mk_qmat(rows, cols, blocks, &h, &d);
    size_t ny = (size_t)T * cols;
    float *x = rnd((size_t)T * rows, 1), *ref = malloc(ny * 4), *got = malloc(ny * 4), *cub = malloc(ny * 4);
    int rpb = rows / blocks;
    for (int t = 0; t < T; t++)
        for (int c = 0; c < cols; c++) {
            double a = 0;
            for (int r = 0; r < rows; r++)
                a += (double)g1_round_bf16(x[(size_t)t * rows + r]) *
                     (double)g1_round_bf16((float)h.w[(size_t)r * cols + c] * h.scale[(size_t)(r / rpb) * cols + c]);
            ref[(size_t)t * cols + c] = (float)a;
        }
    g1_cuda_mm mm;
    mm_init(&mm, blas, T, rows, cols, 0);
    mm.gemv_max = 16, mm.mma_max = 256; /* and partial sums for this kernel */
    size_t pn;
    g1_cuda_mm_sizes(&mm, T, rows, cols, &pn, &(size_t){0}, &(size_t){0});
    cudaFree(mm.partial);
    mm.partial_n = pn;
    mm.partial = ct_up(NULL, pn * 4);
    float *dx = ct_up(x, (size_t)T * rows * 4), *dy = ct_up(NULL, ny * 4);
    ct_ok(g1_cuda_mma_q8(&mm, dx, T, &d, dy), "matmul");
    ct_down(got, dy, ny * 4);
    char name[160];
    snprintf(name, sizeof name, "matmul tensor cores %dx%d b%d T=%d (%zu partial sums) == bf16(x) . bf16(w) in double",
             rows, cols, blocks, T, pn);
    ct_close(name, got, ref, ny, 2e-6 * sqrt(rows));
    ct_ok(g1_cuda_gemm_q8(&mm, dx, T, &d, dy), "matmul");
    ct_down(cub, dy, ny * 4);
    snprintf(name, sizeof name, "matmul tensor cores %dx%d T=%d == cuBLAS on the same bf16 inputs", rows, cols, T);
    ct_close(name, got, cub, ny, 2e-6 * sqrt(rows));
    ct_cu(cudaMemset(dy, 0, ny * 4), "memset");
    ct_ok(g1_cuda_matmul_q8(&mm, dx, T, &d, dy), "matmul");
    float *again = malloc(ny * 4);
    ct_down(again, dy, ny * 4);
    snprintf(name, sizeof name, "matmul %dx%d T=%d: g1_cuda_matmul_q8 takes the tensor cores (the same bits)", rows,
             cols, T);
    tu_check(!memcmp(again, got, ny * 4), name);
    /* blocks of 128 columns: each output's products in the same order, so the same bits */
    mm.mma_bn = 128;
    ct_cu(cudaMemset(dy, 0, ny * 4), "memset");
    ct_ok(g1_cuda_mma_q8(&mm, dx, T, &d, dy), "matmul");
    ct_down(again, dy, ny * 4);
    snprintf(name, sizeof name, "matmul tensor cores %dx%d T=%d: blocks of 128 columns == 64, bitwise", rows, cols, T);
    tu_check(!memcmp(again, got, ny * 4), name);
    mm_free(&mm);
    cudaFree(dx), cudaFree(dy), cudaFree((void *)d.w), cudaFree((void *)d.scale);
    free(h.w), free(h.scale), free(x), free(ref), free(got), free(cub), free(again);
}

/* The grouped matmul of the MoE (g1_cuda_matmul_grouped_q8: every
 * expert's group in one launch on the GEMV, one on the tensor cores, and
 * one sum of the split-K slices) against each group alone through
 * g1_cuda_matmul_q8: the same bits. Groups of sizes[e] rows (0: none),
 * made on the device by g1_cuda_moe_group from ids in mixed order, some
 * on each side of gemv_max, one past 64 rows (two row tiles); maxm above
 * the largest group, as the engine passes T. */
static void test_matmul_grouped(cublasHandle_t blas, int rows, int cols, int blocks, int E, const int *sizes, int maxm)
{
    g1_qmat h[8];
    g1_dqmat d[8];
    int n = 0, off[8];
    for (int e = 0; e < E; e++) {
        mk_qmat(rows, cols, blocks, &h[e], &d[e]);
        off[e] = n;
        n += sizes[e];
    }
    int *ids = malloc((size_t)n * sizeof *ids), *rows_h = malloc(2 * (size_t)n * sizeof(int));
    for (int i = 0, left[8]; i < n; i++) { /* round robin over the experts with rows left */
        if (!i)
            memcpy(left, sizes, (size_t)E * sizeof(int));
        int e = i % E;
        while (!left[e])
            e = (e + 1) % E;
        left[e]--;
        ids[i] = 2 + e; /* the held experts are 2 .. 2 + E - 1 */
    }
    size_t nx = (size_t)n * rows, ny = (size_t)n * cols;
    float *x = rnd(nx, 1), *ref = malloc(ny * 4), *got = malloc(ny * 4);
    g1_cuda_mm mm;
    mm_init(&mm, blas, 1, rows, cols, 0);
    mm.gemv_max = 16, mm.mma_max = 128;
    size_t pn = g1_cuda_grouped_partial_n(&mm, n, maxm, rows, cols), p1;
    g1_cuda_mm_sizes(&mm, maxm, rows, cols, &p1, &(size_t){0}, &(size_t){0});
    cudaFree(mm.partial), cudaFree(mm.xbf);
    mm.partial_n = pn > p1 ? pn : p1;
    mm.partial = ct_up(NULL, mm.partial_n * 4);
    mm.xbf_n = nx;
    mm.xbf = ct_up(NULL, nx * 2);
    int *dids = ct_up(ids, (size_t)n * sizeof(int)), *drows = ct_up(NULL, 2 * (size_t)n * sizeof(int));
    int *grp = ct_up(NULL, (3 * (size_t)E + 1) * sizeof(int));
    g1_dqmat *mats = ct_up(d, (size_t)E * sizeof(g1_dqmat));
    float *dx = ct_up(x, nx * 4), *dxg = ct_up(NULL, nx * 4), *dy = ct_up(NULL, ny * 4);
    ct_cu(g1_cuda_moe_group(S, dids, n, 2, E, drows, grp), "group");
    ct_cu(g1_cuda_gather(S, dx, rows, drows, 1, n, dxg), "gather");
    ct_down(rows_h, drows, 2 * (size_t)n * sizeof(int));
    int ordered = 1; /* stable expert order: group e's rows are its ids' rows in order */
    for (int e = 0, p = 0; e < E; e++)
        for (int i = 0; i < n; i++)
            if (ids[i] == 2 + e)
                ordered &= rows_h[p++] == i;
    tu_check(ordered, "grouped matmul: the device's groups in stable expert order");
    for (int e = 0; e < E; e++)
        ct_ok(g1_cuda_matmul_q8(&mm, dxg + (size_t)off[e] * rows, sizes[e], &d[e], dy + (size_t)off[e] * cols),
              "matmul");
    ct_down(ref, dy, ny * 4);
    char desc[96] = "", name[256];
    for (int e = 0, len = 0; e < E && len < (int)sizeof desc - 8; e++)
        len += snprintf(desc + len, sizeof desc - (size_t)len, "%s%d", e ? "," : "", sizes[e]);
    for (int bn = 64; bn <= 128; bn += 64) {
        mm.mma_bn = bn;
        long before = mm.n_mma;
        /* NaN: a row left unwritten, or a partial sum read that this call did not write, shows */
        ct_cu(cudaMemset(dy, 0xff, ny * 4), "memset");
        ct_cu(cudaMemset(mm.partial, 0xff, mm.partial_n * 4), "memset");
        ct_ok(g1_cuda_matmul_grouped_q8(&mm, dxg, n, maxm, mats, &d[0], grp, E, dy), "grouped matmul");
        ct_down(got, dy, ny * 4);
        snprintf(name, sizeof name, "grouped matmul %dx%d, groups {%s}, blocks of %d columns == each group alone, "
                 "bitwise", rows, cols, desc, bn);
        tu_check(!memcmp(got, ref, ny * 4) && mm.n_mma == before + (maxm > 16), name);
    }
    /* against the CPU too, with x rounded to bf16 for the tensor cores'
     * groups as they take it: only the float32 summation order differs */
    float *cpu = malloc(ny * 4), *xh = malloc(nx * 4);
    ct_down(xh, dxg, nx * 4);
    for (int e = 0; e < E; e++) {
        float *xe = xh + (size_t)off[e] * rows;
        for (size_t i = 0; sizes[e] > mm.gemv_max && i < (size_t)sizes[e] * rows; i++)
            xe[i] = g1_round_bf16(xe[i]);
        g1_cpu_matmul_q8(xe, sizes[e], &h[e], cpu + (size_t)off[e] * cols);
    }
    snprintf(name, sizeof name, "grouped matmul %dx%d, groups {%s} == the CPU (bf16 x past 16 rows)", rows, cols,
             desc);
    ct_close(name, got, cpu, ny, 2e-5 * sqrt(rows));
    { /* groups past what the matmul takes are refused, with nothing launched */
        g1_status st = g1_cuda_matmul_grouped_q8(&mm, dxg, n, mm.mma_max + 1, mats, &d[0], grp, E, dy);
        tu_check(st != G1_OK && strstr(g1_last_error(), "grouped matmul"), "grouped matmul: groups past mma_max refused");
    }
    mm_free(&mm);
    for (int e = 0; e < E; e++)
        cudaFree((void *)d[e].w), cudaFree((void *)d[e].scale), free(h[e].w), free(h[e].scale);
    cudaFree(dids), cudaFree(drows), cudaFree(grp), cudaFree(mats), cudaFree(dx), cudaFree(dxg), cudaFree(dy);
    free(ids), free(rows_h), free(x), free(ref), free(got), free(cpu), free(xh);
}

/* The panel dequantiser, both kernels (16 columns a thread when cols, c0
 * and nc are multiples of 16, one element otherwise): rows [r0, r0 + nr),
 * columns [c0, c0 + nc) of W, bitwise bf16(int8 * scale) as the host
 * rounds it, scale blocks crossed. */
static void test_dequant(int rows, int cols, int blocks, int r0, int nr, int c0, int nc)
{
    g1_qmat h;
    g1_dqmat d;
    mk_qmat(rows, cols, blocks, &h, &d);
    uint16_t *got = malloc((size_t)nr * nc * 2), *dout = ct_up(NULL, (size_t)nr * nc * 2);
    ct_cu(g1_cuda_dequant(S, &d, r0, nr, c0, nc, dout), "dequant");
    ct_down(got, dout, (size_t)nr * nc * 2);
    int rpb = rows / blocks, bad = 0;
    for (int r = 0; r < nr; r++)
        for (int c = 0; c < nc; c++) {
            float sc = h.scale[(size_t)((r0 + r) / rpb) * cols + c0 + c];
            bad += got[(size_t)r * nc + c] != g1_f32_to_bf16((float)h.w[(size_t)(r0 + r) * cols + c0 + c] * sc);
        }
    char name[112];
    snprintf(name, sizeof name, "dequant %dx%d b%d rows %d..%d cols %d..%d: bitwise bf16(int8 * scale) (%d differ)",
             rows, cols, blocks, r0, r0 + nr - 1, c0, c0 + nc - 1, bad);
    tu_check(!bad, name);
    cudaFree(dout), cudaFree((void *)d.w), cudaFree((void *)d.scale);
    free(h.w), free(h.scale), free(got);
}

static void test_small_ops(void)
{
    int T = 7, D = 200, H = 3, K = 16, E = 8, k = 2;
    float *x = rnd((size_t)T * D, 3), *sc = rnd(D, 1), *ref = malloc((size_t)T * D * 4), *got = malloc((size_t)T * D * 4);
    float *dx = ct_up(x, (size_t)T * D * 4), *dsc = ct_up(sc, D * 4), *dout = ct_up(NULL, (size_t)T * D * 4);
    g1_cpu_rmsnorm(x, T, D, sc, 1e-5f, ref);
    ct_cu(g1_cuda_rmsnorm(S, dx, T, D, dsc, 1e-5f, dout), "rmsnorm");
    ct_down(got, dout, (size_t)T * D * 4);
    ct_close("rmsnorm", got, ref, (size_t)T * D, 1e-6);

    /* x += RMSNorm(y) (the post-norms before each residual add) */
    float *res = rnd((size_t)T * D, 2), *dres = ct_up(res, (size_t)T * D * 4);
    ct_cu(g1_cuda_add_rmsnorm(S, dres, dx, T, D, dsc, 1e-5f), "add_rmsnorm");
    ct_down(got, dres, (size_t)T * D * 4);
    for (size_t i = 0; i < (size_t)T * D; i++)
        res[i] += ref[i];
    ct_close("add_rmsnorm", got, res, (size_t)T * D, 1e-6);

    /* embedding rows times the multiplier: one rounding, the same bits */
    int V = 50, tok[7] = {0, 49, 3, 3, 17, 1, 48};
    uint16_t *emb = malloc((size_t)V * D * 2);
    for (size_t i = 0; i < (size_t)V * D; i++)
        emb[i] = g1_f32_to_bf16(x[i % ((size_t)T * D)] * 3.0f);
    uint16_t *demb = ct_up(emb, (size_t)V * D * 2);
    int *dtok = ct_up(tok, sizeof tok);
    ct_cu(g1_cuda_embed(S, demb, D, dtok, T, 78.38367176906169f, dout), "embed");
    ct_down(got, dout, (size_t)T * D * 4);
    int ebad = 0;
    for (int t = 0; t < T; t++)
        for (int d = 0; d < D; d++)
            ebad += got[(size_t)t * D + d] != g1_bf16_to_f32(emb[(size_t)tok[t] * D + d]) * 78.38367176906169f;
    tu_check(!ebad, "embed: bf16 rows times the multiplier, bitwise == CPU");
    cudaFree(dres), cudaFree(demb), cudaFree(dtok);
    free(res), free(emb);

    /* rope at scattered positions */
    int pos[7] = {0, 1, 5, 63, 64, 1000, 8191};
    float *v = rnd((size_t)T * H * K, 1);
    int *dpos = ct_up(pos, sizeof pos);
    float *dv = ct_up(v, (size_t)T * H * K * 4);
    g1_cpu_rope(v, T, H, K, pos, 10000.0);
    ct_cu(g1_cuda_rope(S, dv, T, H, K, dpos, 10000.0), "rope");
    ct_down(got, dv, (size_t)T * H * K * 4);
    ct_close("rope", got, v, (size_t)T * H * K, 1e-6);

    /* gelu x linear */
    float *a = rnd(5000, 6), *b = rnd(5000, 2), *gr = malloc(5000 * 4), *gg = malloc(5000 * 4);
    float *da = ct_up(a, 5000 * 4), *db = ct_up(b, 5000 * 4);
    g1_cpu_gelu_mul(a, b, 5000, gr);
    ct_cu(g1_cuda_gelu_mul(S, da, db, 5000, da), "gelu");
    ct_down(gg, da, 5000 * 4);
    ct_close("gelu_mul", gg, gr, 5000, 1e-6);

    /* router: same experts, same gates (not renormalised) */
    float *wr = rnd((size_t)D * E, 0.2f), rg[14], gg2[14];
    int ri[14], gi[14];
    float *dwr = ct_up(wr, (size_t)D * E * 4), *dgate = ct_up(NULL, sizeof rg);
    int *didx = ct_up(NULL, sizeof ri);
    g1_cpu_router(x, T, D, wr, E, k, ri, rg);
    ct_cu(g1_cuda_router(S, dx, T, D, dwr, E, k, didx, dgate), "router");
    ct_down(gi, didx, sizeof gi);
    ct_down(gg2, dgate, sizeof gg2);
    tu_check(!memcmp(gi, ri, sizeof ri), "router top-k ids == CPU");
    ct_close("router gates", gg2, rg, 14, 1e-6);
    {
        /* ties: experts e and e + 4 have the same weights, so every row's
         * best two are one pair of equal logits (the same sums in the same
         * order on each side: equal bits), which the CPU orders lower index
         * first; then weights 1000 times larger, logits past 709, where
         * exp without the maximum subtracted overflows even in double */
        float *wt = malloc((size_t)D * E * 4), tg[14];
        for (int d = 0; d < D; d++)
            for (int e = 0; e < E; e++)
                wt[(size_t)d * E + e] = wr[(size_t)d * E + e % 4];
        for (int big = 0; big < 2; big++) {
            if (big)
                for (size_t i = 0; i < (size_t)D * E; i++)
                    wt[i] = wr[i] * 1000.0f;
            ct_cu(cudaMemcpy(dwr, wt, (size_t)D * E * 4, cudaMemcpyHostToDevice), "router weights");
            g1_cpu_router(x, T, D, wt, E, k, ri, rg);
            ct_cu(g1_cuda_router(S, dx, T, D, dwr, E, k, didx, dgate), "router");
            ct_down(gi, didx, sizeof gi);
            ct_down(tg, dgate, sizeof tg);
            tu_check(!memcmp(gi, ri, sizeof ri), big ? "router, logits past 709: top-k ids == CPU"
                                                     : "router, the top two tied: ids lower first, == CPU");
            ct_close(big ? "router, logits past 709: gates" : "router, the top two tied: gates", tg, rg, 14, 1e-6);
        }
        /* the weights and gates of the untied router again, for the combine below */
        ct_cu(cudaMemcpy(dwr, wr, (size_t)D * E * 4, cudaMemcpyHostToDevice), "router weights");
        g1_cpu_router(x, T, D, wr, E, k, ri, rg);
        free(wt);
    }

    /* combine: choice order, through a row map */
    float *y = rnd((size_t)T * k * D, 1), *yp = malloc((size_t)T * k * D * 4);
    int map[14];
    for (int i = 0; i < T * k; i++)
        map[i] = (i * 5 + 3) % (T * k); /* a permutation of 14 */
    for (int i = 0; i < T * k; i++)
        memcpy(yp + (size_t)map[i] * D, y + (size_t)i * D, (size_t)D * 4);
    g1_moe_combine(T, D, k, rg, y, ref);
    float *dy = ct_up(yp, (size_t)T * k * D * 4), *dg = ct_up(rg, sizeof rg);
    int *dmap = ct_up(map, sizeof map);
    ct_cu(g1_cuda_combine(S, T, D, k, dg, dy, dmap, dout), "combine");
    ct_down(got, dout, (size_t)T * D * 4);
    ct_close("combine (mapped rows)", got, ref, (size_t)T * D, 1e-6);
    /* unfused on both sides: the same bits (what keeps grok1-run --gpu-direct,
     * whose combine is on the device, equal to the staged host combine) */
    tu_check(!memcmp(got, ref, (size_t)T * D * 4), "combine (mapped rows) bitwise == CPU");
    ct_cu(g1_cuda_combine(S, T, D, k, dg, dy, NULL, dout), "combine");
    ct_down(got, dout, (size_t)T * D * 4);
    g1_moe_combine(T, D, k, rg, yp, ref); /* dy holds yp: row t*k + j read as is */
    tu_check(!memcmp(got, ref, (size_t)T * D * 4), "combine (rows in choice order) bitwise == CPU");
    cudaFree(dx), cudaFree(dsc), cudaFree(dout), cudaFree(dpos), cudaFree(dv), cudaFree(da), cudaFree(db);
    cudaFree(dwr), cudaFree(dgate), cudaFree(didx), cudaFree(dy), cudaFree(dg), cudaFree(dmap);
    free(x), free(sc), free(ref), free(got), free(v), free(a), free(b), free(gr), free(gg), free(wr), free(y), free(yp);
}

/* Caches of up to 3 slots of random values and the per-token pointers
 * into them, host (the CPU reference) and device. */
enum { TC_SLOTS = 3, TC_TOKENS = 64 };
typedef struct test_caches {
    float *hk[TC_SLOTS], *hv[TC_SLOTS]; /* float32 (bf16-rounded values with bf16) */
    void *dk[TC_SLOTS], *dv[TC_SLOTS];  /* float32, or bf16 */
    const float *kc[TC_TOKENS], *vc[TC_TOKENS];
    void *k0[TC_TOKENS], *v0[TC_TOKENS];
    long long ls[TC_TOKENS];
} test_caches;

/* ns slots of cap[s] rows of kvw values; T tokens in slots slot[t] */
static void mk_caches(test_caches *c, int ns, const int *cap, int kvw, int bf16, int T, const int *slot)
{
    for (int s = 0; s < ns; s++) {
        size_t n = (size_t)cap[s] * kvw;
        c->hk[s] = rnd(n, 2);
        c->hv[s] = rnd(n, 1);
        if (bf16) {
            uint16_t *bk = malloc(n * 2), *bv = malloc(n * 2);
            for (size_t i = 0; i < n; i++) {
                c->hk[s][i] = g1_round_bf16(c->hk[s][i]), bk[i] = g1_f32_to_bf16(c->hk[s][i]);
                c->hv[s][i] = g1_round_bf16(c->hv[s][i]), bv[i] = g1_f32_to_bf16(c->hv[s][i]);
            }
            c->dk[s] = ct_up(bk, n * 2);
            c->dv[s] = ct_up(bv, n * 2);
            free(bk), free(bv);
        } else {
            c->dk[s] = ct_up(c->hk[s], n * 4);
            c->dv[s] = ct_up(c->hv[s], n * 4);
        }
    }
    for (int t = 0; t < T; t++) {
        c->kc[t] = c->hk[slot[t]], c->vc[t] = c->hv[slot[t]];
        c->k0[t] = c->dk[slot[t]], c->v0[t] = c->dv[slot[t]];
        c->ls[t] = (long long)cap[slot[t]] * kvw;
    }
}

static void free_caches(test_caches *c, int ns)
{
    for (int s = 0; s < ns; s++)
        cudaFree(c->dk[s]), cudaFree(c->dv[s]), free(c->hk[s]), free(c->hv[s]);
}

/* tokens of 3 slots with caches of odd lengths, some long enough to split;
 * bf16: the caches hold bf16 (the CPU reference reads the same values) */
static void test_attention(int Hq, int Hkv, int K, int max_splits, int bf16)
{
    enum { NS = 3, T = 9 };
    int cap[NS] = {70, 1000, 2500}, slot[T] = {0, 0, 1, 2, 2, 1, 2, 2, 2};
    int pos[T] = {0, 69, 999, 1, 2499, 512, 2000, 2001, 700};
    int kvw = Hkv * K;
    test_caches c;
    mk_caches(&c, NS, cap, kvw, bf16, T, slot);
    float *q = rnd((size_t)T * Hq * K, 1), *ref = malloc((size_t)T * Hq * K * 4), *got = malloc((size_t)T * Hq * K * 4);
    float *scores = malloc((size_t)g1_cpu_threads() * 2500 * 4);
    g1_attn_args aa = {.T = T, .Hq = Hq, .Hkv = Hkv, .K = K, .q = q, .kc = c.kc, .vc = c.vc, .pos = pos,
                       .mult = 1.0f / sqrtf((float)K), .cap = 30, .scores = scores, .scores_stride = 2500, .out = ref};
    g1_cpu_attention(&aa);
    g1_cuda_attn_args ga = {.T = T, .Hq = Hq, .Hkv = Hkv, .K = K, .max_splits = max_splits,
                            .chunk = g1_cuda_attn_chunk(2500, max_splits), .q = ct_up(q, (size_t)T * Hq * K * 4),
                            .kv = {.k0 = ct_up(c.k0, T * sizeof c.k0[0]), .v0 = ct_up(c.v0, T * sizeof c.v0[0]),
                                   .lstride = ct_up(c.ls, T * sizeof c.ls[0]),
                                   .pos = ct_up(pos, sizeof pos), .layer = 0, .bf16 = bf16},
                            .mult = aa.mult, .cap = 30,
                            .part = ct_up(NULL, (size_t)T * Hq * max_splits * (K + 2) * 4),
                            .out = ct_up(NULL, (size_t)T * Hq * K * 4)};
    ct_cu(g1_cuda_attention(S, &ga), "attention");
    ct_down(got, ga.out, (size_t)T * Hq * K * 4);
    { /* runs of one slot's tokens in tiles that share each key and value: the same bits as a token a tile */
        int most = g1_cuda_attn_tile_tokens(Hq, Hkv, K), tiles[2 * T], nt = 0;
        for (int t = 0; t < T; t++) {
            if (nt && slot[tiles[2 * nt - 2]] == slot[t] && tiles[2 * nt - 1] < most)
                tiles[2 * nt - 1]++;
            else
                tiles[2 * nt] = t, tiles[2 * nt + 1] = 1, nt++;
        }
        g1_cuda_attn_args gt = ga;
        gt.tiles = ct_up(tiles, sizeof tiles);
        gt.n_tiles = nt;
        gt.out = ct_up(NULL, (size_t)T * Hq * K * 4);
        float *tiled = malloc((size_t)T * Hq * K * 4);
        ct_cu(g1_cuda_attention(S, &gt), "attention (tiles)");
        ct_down(tiled, gt.out, (size_t)T * Hq * K * 4);
        char tn[96];
        snprintf(tn, sizeof tn, "attention Hq=%d Hkv=%d K=%d: %d tiles of up to %d tokens == a token a tile, bitwise",
                 Hq, Hkv, K, nt, most);
        tu_check(!memcmp(tiled, got, (size_t)T * Hq * K * 4), tn);
        cudaFree((void *)gt.tiles), cudaFree(gt.out), free(tiled);
    }
    if (bf16) { /* the store kernel rounds as the host does */
        float *kv = rnd((size_t)T * kvw, 3);
        float *dkn = ct_up(kv, (size_t)T * kvw * 4), *dvn = ct_up(kv, (size_t)T * kvw * 4);
        ct_cu(g1_cuda_kv_store(S, &ga.kv, T, kvw, dkn, dvn), "kv store");
        int bad = 0;
        for (int t = 0; t < T; t++) {
            uint16_t row[256 * 8];
            ct_down(row, (uint16_t *)c.dk[slot[t]] + (size_t)pos[t] * kvw, (size_t)kvw * 2);
            for (int i = 0; i < kvw; i++)
                bad += row[i] != g1_f32_to_bf16(kv[(size_t)t * kvw + i]);
        }
        tu_check(!bad, "kv store into bf16 caches: round to nearest even, at each token's position");
        free(kv), cudaFree(dkn), cudaFree(dvn);
    }
    char name[96];
    snprintf(name, sizeof name, "attention Hq=%d Hkv=%d K=%d splits<=%d%s", Hq, Hkv, K, max_splits,
             bf16 ? ", bf16 caches" : "");
    ct_close(name, got, ref, (size_t)T * Hq * K, 1e-5);
    free_caches(&c, NS);
    cudaFree((void *)ga.q), cudaFree((void *)ga.kv.k0), cudaFree((void *)ga.kv.v0), cudaFree((void *)ga.kv.lstride);
    cudaFree((void *)ga.kv.pos), cudaFree(ga.part), cudaFree(ga.out);
    free(q), free(ref), free(got), free(scores);
}

/* A prompt-shaped batch: runs of one slot's consecutive tokens (a chunk in
 * the middle of a cache, a prompt from position 0) and lone tokens, tiled
 * by g1_cuda_attn_tiles for the tensor cores. Against the CPU within the
 * TF32 rounding of q, k, the exponentials and v; tiles == a token a tile
 * on the tensor-core kernel, bitwise. qs scales q (8: scores up to the soft
 * cap's bend). */
static void test_attention_prompt(int Hq, int Hkv, int K, int max_splits, int bf16, float qs)
{
    enum { NS = 3, T = 64 };
    int cap[NS] = {300, 40, 500}, slot[T], pos[T], kvw = Hkv * K;
    for (int t = 0; t < T; t++) { /* slot 0: 20 tokens, slot 2: 1, slot 0: 17 more, slot 1: 23 from 0, slot 2: 3 */
        slot[t] = t < 20 ? 0 : t < 21 ? 2 : t < 38 ? 0 : t < 61 ? 1 : 2;
        pos[t] = t < 20 ? 170 + t : t < 21 ? 300 : t < 38 ? 169 + t : t < 61 ? t - 38 : 436 + t;
    }
    test_caches c;
    mk_caches(&c, NS, cap, kvw, bf16, T, slot);
    size_t no = (size_t)T * Hq * K;
    float *q = rnd(no, qs), *ref = malloc(no * 4), *got = malloc(no * 4), *one = malloc(no * 4);
    float *scores = malloc((size_t)g1_cpu_threads() * 500 * 4);
    g1_attn_args aa = {.T = T, .Hq = Hq, .Hkv = Hkv, .K = K, .q = q, .kc = c.kc, .vc = c.vc, .pos = pos,
                       .mult = 1.0f / sqrtf((float)K), .cap = 30, .scores = scores, .scores_stride = 500, .out = ref};
    g1_cpu_attention(&aa);
    int tiles[2 * T], n_mma, nt = g1_cuda_attn_tiles(slot, T, Hq, Hkv, K, 1, tiles, &n_mma);
    { /* the tiles: runs of one slot, each token once, the first n_mma of at least 16 rows */
        int seen[T] = {0}, bad = 0, most = g1_cuda_attn_mma_tile_tokens(Hq, Hkv, K);
        for (int i = 0; i < nt; i++) {
            int t0 = tiles[2 * i], c = tiles[2 * i + 1];
            int mma = c * (Hq / Hkv) >= 16 || c > g1_cuda_attn_tile_tokens(Hq, Hkv, K);
            bad += c < 1 || c > most || (i < n_mma) != mma;
            for (int t = t0; t < t0 + c && t < T; t++)
                bad += seen[t]++ || slot[t] != slot[t0] || (t > t0 && pos[t] != pos[t - 1] + 1);
        }
        for (int t = 0; t < T; t++)
            bad += !seen[t];
        char tn[96];
        snprintf(tn, sizeof tn, "attention tiles Hq=%d Hkv=%d K=%d: %d tiles, %d to the tensor cores", Hq, Hkv, K, nt,
                 n_mma);
        tu_check(!bad && n_mma > 0, tn);
    }
    g1_cuda_attn_args ga = {.T = T, .Hq = Hq, .Hkv = Hkv, .K = K, .max_splits = max_splits,
                            .chunk = g1_cuda_attn_chunk(500, max_splits), .tiles = ct_up(tiles, sizeof tiles),
                            .n_tiles = nt, .n_mma = n_mma, .q = ct_up(q, no * 4),
                            .kv = {.k0 = ct_up(c.k0, T * sizeof c.k0[0]), .v0 = ct_up(c.v0, T * sizeof c.v0[0]),
                                   .lstride = ct_up(c.ls, T * sizeof c.ls[0]),
                                   .pos = ct_up(pos, sizeof pos), .layer = 0, .bf16 = bf16},
                            .mult = aa.mult, .cap = 30,
                            .part = ct_up(NULL, (size_t)T * Hq * max_splits * (K + 2) * 4), .out = ct_up(NULL, no * 4)};
    ct_cu(g1_cuda_attention(S, &ga), "attention (tensor cores)");
    ct_down(got, ga.out, no * 4);
    { /* every token a tile of its own, all on the tensor cores */
        int single[2 * T];
        for (int t = 0; t < T; t++)
            single[2 * t] = t, single[2 * t + 1] = 1;
        g1_cuda_attn_args g1 = ga;
        g1.tiles = ct_up(single, sizeof single);
        g1.n_tiles = g1.n_mma = T;
        ct_cu(g1_cuda_attention(S, &g1), "attention (tensor cores, a token a tile)");
        ct_down(one, g1.out, no * 4);
        cudaFree((void *)g1.tiles);
        int diff = 0;
        for (int t = 0; t < T; t++)
            for (int i = 0; i < nt; i++) /* only tokens the tensor cores took in both */
                if (i < n_mma && t >= tiles[2 * i] && t < tiles[2 * i] + tiles[2 * i + 1])
                    diff += memcmp(got + (size_t)t * Hq * K, one + (size_t)t * Hq * K, (size_t)Hq * K * 4) != 0;
        char tn[112];
        snprintf(tn, sizeof tn, "attention (tensor cores) Hq=%d Hkv=%d K=%d: tiles == a token a tile, bitwise", Hq,
                 Hkv, K);
        tu_check(!diff, tn);
    }
    double worst = 0, mx = 0;
    for (size_t i = 0; i < no; i++)
        mx = fabs(ref[i]) > mx ? fabs(ref[i]) : mx;
    for (size_t i = 0; i < no; i++)
        worst = fabs(got[i] - ref[i]) > worst ? fabs(got[i] - ref[i]) : worst;
    printf("  attention (tensor cores) Hq=%d Hkv=%d K=%d q x%g%s: largest difference %.2e of max |out| %.2e\n", Hq,
           Hkv, K, qs, bf16 ? " bf16 caches" : "", worst, mx);
    char name[112];
    snprintf(name, sizeof name, "attention (tensor cores) Hq=%d Hkv=%d K=%d splits<=%d q x%g%s", Hq, Hkv, K,
             max_splits, qs, bf16 ? ", bf16 caches" : "");
    ct_close(name, got, ref, no, ATTN_MMA_REL);
    free_caches(&c, NS);
    cudaFree((void *)ga.q), cudaFree((void *)ga.kv.k0), cudaFree((void *)ga.kv.v0), cudaFree((void *)ga.kv.lstride);
    cudaFree((void *)ga.kv.pos), cudaFree((void *)ga.tiles), cudaFree(ga.part), cudaFree(ga.out);
    free(q), free(ref), free(got), free(one), free(scores);
}

static void test_unembed(cublasHandle_t blas, int T, int D, int V, int split)
{
    uint16_t *E = malloc((size_t)V * D * 2);
    for (size_t i = 0; i < (size_t)V * D; i++)
        E[i] = g1_f32_to_bf16(tu_sym() * 0.1f);
    float *x = rnd((size_t)T * D, 1), *ref = malloc((size_t)T * V * 4), *got = malloc((size_t)T * V * 4);
    g1_cpu_matmul_bf16_nt(x, T, D, E, V, 0.5f, ref);
    g1_cuda_mm mm;
    mm_init(&mm, blas, T, D, V, split);
    mm.gemv_max = 16;
    mm.xbf_n = (size_t)T * D * 2;
    cudaFree(mm.xbf);
    mm.xbf = ct_up(NULL, mm.xbf_n * 2);
    float *dx = ct_up(x, (size_t)T * D * 4), *dy = ct_up(NULL, (size_t)T * V * 4);
    uint16_t *dE = ct_up(E, (size_t)V * D * 2);
    ct_ok(g1_cuda_unembed(&mm, dx, T, D, dE, V, 0.5f, dy), "unembed");
    ct_down(got, dy, (size_t)T * V * 4);
    char name[96];
    snprintf(name, sizeof name, "unembed T=%d D=%d V=%d%s", T, D, V, split ? " split" : "");
    ct_close(name, got, ref, (size_t)T * V, T <= 16 || split ? 1e-5 : 2e-2);
    mm_free(&mm);
    cudaFree(dx), cudaFree(dy), cudaFree(dE), free(E), free(x), free(ref), free(got);
}

/* The tiny model's weights, made in memory from `seed`. */
static void tiny_weights(g1_weights *W, uint64_t seed)
{
    g1_config C;
    g1_config_preset("tiny", &C);
    int blocks[G1_NUM_QMAT];
    g1_synth_blocks(&C, blocks);
    g1_synth s = {.cfg = C, .seed = seed, .qk_gain = 1};
    ct_ok(g1_weights_alloc(W, &C, 0, C.num_layers, 0, C.num_experts, blocks, 1), "alloc");
    ct_ok(g1_synth_weights(&s, W), "synth");
}

/* The MoE rows of the tiny model: uneven groups, empty experts, groups on
 * both matmul paths; the CUDA engine against the CPU engine. */
static void test_moe_rows(void)
{
    g1_weights W;
    tiny_weights(&W, 5);
    g1_config C = W.cfg;
    g1_engine *cpu;
    g1_cuda_engine *gpu;
    g1_engine_opts o = {.n_slots = 2, .max_batch = 32, .max_context = 0};
    ct_ok(g1_engine_init(&cpu, &W, &o, NULL), "cpu engine");
    ct_ok(g1_cuda_engine_init(&gpu, &W, &o, NULL, NULL), "cuda engine");
    int D = C.emb_size, n_cases[3] = {1, 9, 50};
    for (int c = 0; c < 3; c++) {
        int n = n_cases[c], ids[64];
        for (int i = 0; i < n; i++) /* most rows to expert 3 (GEMM above 16), a few to 6, none to the rest */
            ids[i] = i % 7 == 6 ? 6 : 3;
        if (n == 9)
            for (int i = 0; i < n; i++)
                ids[i] = i % 5; /* uneven small groups, experts 5..7 empty */
        float *x = rnd((size_t)n * D, 2), *ref = malloc((size_t)n * D * 4), *got = malloc((size_t)n * D * 4);
        ct_ok(g1_moe_expert_rows(cpu, 2, n, x, ids, ref), "cpu moe");
        ct_ok(g1_cuda_moe_expert_rows(gpu, 2, n, x, ids, got), "cuda moe");
        char name[64];
        snprintf(name, sizeof name, "moe expert rows n=%d", n);
        ct_close(name, got, ref, (size_t)n * D, n > 16 ? 2e-2 : 1e-4);
        free(x), free(ref), free(got);
    }
    {
        /* the ends of the held range: the first and the last expert's
         * groups; then an id one past the range, which the host grouping
         * must refuse (a dispatch hands ids in from other processes) */
        int E = C.num_experts, n = 6, ids[6] = {E - 1, 0, E - 1, 2, 0, E - 1};
        float *x = rnd((size_t)n * D, 2), *ref = malloc((size_t)n * D * 4), *got = malloc((size_t)n * D * 4);
        ct_ok(g1_moe_expert_rows(cpu, 2, n, x, ids, ref), "cpu moe");
        ct_ok(g1_cuda_moe_expert_rows(gpu, 2, n, x, ids, got), "cuda moe");
        ct_close("moe expert rows, experts 0 and E - 1", got, ref, (size_t)n * D, 1e-4);
        ids[3] = E;
        tu_check(g1_cuda_moe_expert_rows(gpu, 2, n, x, ids, got) == G1_ERR_INTERNAL,
                 "moe expert rows: an expert one past the held range refused");
        free(x), free(ref), free(got);
    }
    g1_engine_free(cpu);
    g1_cuda_engine_free(gpu);
    g1_weights_free(&W);
}

/* The MoE of a batch with its rows grouped on the device (each matrix of
 * every expert in one launch, two past gemv_max tokens: the GEMV's groups
 * and the tensor cores') against the same batch grouped on the host (one
 * chain per expert): the same bits; and against the CPU. Even and uneven
 * groups, on both sides of 16 rows, experts with no rows, one expert in
 * every token's choice (a group of T rows: two row tiles from 65). */
static void test_moe_grouped(void)
{
    g1_weights W;
    tiny_weights(&W, 9);
    g1_config C = W.cfg;
    g1_engine *cpu;
    g1_cuda_engine *dev, *host;
    g1_engine_opts o = {.n_slots = 1, .max_batch = 130, .max_context = 0};
    g1_cuda_opts on_host = {.moe_host_groups = 1};
    ct_ok(g1_engine_init(&cpu, &W, &o, NULL), "cpu engine");
    ct_ok(g1_cuda_engine_init(&dev, &W, &o, NULL, NULL), "cuda engine");
    ct_ok(g1_cuda_engine_init(&host, &W, &o, NULL, &on_host), "cuda engine, host groups");
    int D = C.emb_size, k = C.num_selected_experts, E = C.num_experts, cc = 0;
    ct_cu(cudaDeviceGetAttribute(&cc, cudaDevAttrComputeCapabilityMajor, 0), "attribute");
    char name[128];
    snprintf(name, sizeof name, "moe grouped on the device up to %d tokens (compute capability %d)",
             dev->moe_device_max, cc);
    tu_check(dev->moe_device_max == (cc >= 8 ? 128 : 16), name);
    int Ts[] = {1, 2, 3, 5, 8, 16, 17, 24, 40, 70, 128, 130};
    for (int c = 0; c < (int)(sizeof Ts / sizeof Ts[0]); c++)
        for (int pattern = 0; pattern < 3; pattern++) {
            int T = Ts[c], idx[130 * 8];
            float gate[130 * 8];
            for (int t = 0; t < T; t++)
                for (int j = 0; j < k; j++) {
                    /* 0: spread; 1: expert 3 in every token (a group of T), the
                     * other choice among 5..7 (0..2 and 4 empty); 2: pairs
                     * walking the experts unevenly */
                    int id = pattern == 0 ? (t * k + j) % E : pattern == 1 ? (j ? 5 + t % 3 : 3)
                                                                            : (t / 3 + j * (1 + t % 2)) % E;
                    idx[t * k + j] = id;
                    gate[t * k + j] = 0.25f + 0.5f * (float)tu_unif();
                }
            float *x = rnd((size_t)T * D, 4), *ref = malloc((size_t)T * D * 4), *got = malloc((size_t)T * D * 4),
                  *alt = malloc((size_t)T * D * 4);
            ct_ok(g1_moe_local(cpu, 1, T, x, idx, gate, ref), "cpu moe");
            ct_ok(g1_cuda_moe_local(dev, 1, T, x, idx, gate, got), "cuda moe");
            ct_ok(g1_cuda_moe_local(host, 1, T, x, idx, gate, alt), "cuda moe, host groups");
            snprintf(name, sizeof name, "moe grouped on the %s T=%d pattern %d",
                     T <= dev->moe_device_max ? "device" : "host (past moe_device_max)", T, pattern);
            /* groups past 16 rows take x in bf16 (the tensor cores or cuBLAS) */
            ct_close(name, got, ref, (size_t)T * D, T > 16 ? 1e-2 : 1e-4);
            snprintf(name, sizeof name, "moe T=%d pattern %d: device groups == host groups, bitwise", T, pattern);
            tu_check(!memcmp(got, alt, (size_t)T * D * 4), name);
            free(x), free(ref), free(got), free(alt);
        }
    { /* an expert id outside the held ones is refused before any work */
        int bad[2] = {0, E};
        float g2[2] = {0.5f, 0.5f}, *x = rnd((size_t)D, 4), *y = malloc((size_t)D * 4);
        g1_status st = g1_cuda_moe_local(dev, 1, 1, x, bad, g2, y);
        tu_check(st != G1_OK && strstr(g1_last_error(), "is not held"), "moe: an expert id not held is refused");
        free(x), free(y);
    }
    g1_engine_free(cpu);
    g1_cuda_engine_free(dev);
    g1_cuda_engine_free(host);
    g1_weights_free(&W);
}

/* The tiny model's logits for three batches (fresh slots): 60 prompt
 * tokens in slot 0; then its next 20 (positions 60..79: a second key split
 * from 64 on) and 7 of slot 1 in one batch; then a decode step of both.
 * The rows of the last two, 29 of them. */
static void ranges_logits(g1_cuda_engine *e, const g1_weights *W, float *logits)
{
    enum { T = 27 };
    int slot[60], pos[60], tok[60], V = W->cfg.vocab_size;
    float *x = malloc((size_t)60 * W->cfg.emb_size * 4);
    for (int s = 0; s < 2; s++)
        g1_cuda_engine_reset_slot(e, s);
    for (int t = 0; t < 60; t++)
        slot[t] = 0, pos[t] = t, tok[t] = (t * 31 + 7) % V;
    g1_batch b = {.T = 60, .slot = slot, .pos = pos};
    ct_ok(g1_cuda_engine_embed(e, 60, tok, x), "embed");
    ct_ok(g1_cuda_engine_forward(e, &b, x), "forward");
    for (int t = 0; t < T; t++)
        slot[t] = t < 20 ? 0 : 1, pos[t] = t < 20 ? 60 + t : t - 20, tok[t] = (t * 7919 + 13) % V;
    b.T = T;
    ct_ok(g1_cuda_engine_embed(e, T, tok, x), "embed");
    ct_ok(g1_cuda_engine_forward(e, &b, x), "forward");
    ct_ok(g1_cuda_engine_logits(e, T, x, logits), "logits");
    int s2[2] = {0, 1}, p2[2] = {80, 7}, t2[2] = {5, 6};
    g1_batch d = {.T = 2, .slot = s2, .pos = p2};
    ct_ok(g1_cuda_engine_embed(e, 2, t2, x), "embed");
    ct_ok(g1_cuda_engine_forward(e, &d, x), "forward");
    ct_ok(g1_cuda_engine_logits(e, 2, x, logits + (size_t)T * V), "logits");
    free(x);
}

/* The engine's attention layout from its context alone: the last position
 * of every context (a token at max_context - 1 has ceil(max_context /
 * chunk) splits) must fit max_splits, else the merge drops its last keys;
 * chunks of at least 64 keys, a multiple of the 32-key tiles, and at most
 * G1_CUDA_ATTN_SPLITS splits. Host arithmetic, the same on any device. */
static void test_attn_layout(void)
{
    int bad = 0, first = 0;
    for (int ctx = 1; ctx <= 20000; ctx += ctx < 300 ? 1 : 37) {
        g1_cuda_attn_layout L = g1_cuda_attn_layout_for(ctx, 64, 48, 128, 0, 0);
        int need = (ctx + L.chunk - 1) / L.chunk;
        if (L.chunk < 64 || L.chunk % 32 || L.max_splits < need || L.max_splits > G1_CUDA_ATTN_SPLITS ||
            L.range_tokens < 1) {
            if (!bad++)
                first = ctx;
        }
    }
    if (bad)
        fprintf(stderr, "attention layout: %d contexts wrong, the first %d\n", bad, first);
    tu_check(!bad, "attention layout: every context's last position within max_splits chunks of 64+ keys");
}

/* Attention in ranges of tokens (g1_cuda_attn_plan; a batch whose split
 * partial sums exceed the scratch runs in several launches): a token's
 * splits come from its position alone, so ranges of 3 and 10 tokens and an
 * engine of another max_batch (one range) give the logits of one range,
 * bitwise, with the float32 matmuls. At the default precision too for 10
 * and the other max_batch, whose tiles go to the same kernels (the tiny
 * model's 2 q heads a kv head: tiles of 8 tokens or more to the tensor
 * cores, slot 1's 7 tokens to the float32 kernel); ranges of 3 would send
 * every tile to the float32 kernel. */
static void test_attention_ranges(void)
{
    g1_weights W;
    tiny_weights(&W, 11);
    ct_ok(g1_weights_prepare(&W), "prepare");
    int V = W.cfg.vocab_size;
    size_t n = (size_t)29 * V;
    float *ref = malloc(n * 4), *got = malloc(n * 4);
    for (int mode = 0; mode < 2; mode++) {
        g1_engine_opts o = {.n_slots = 2, .max_batch = 64, .max_context = 0,
                            .cuda_gemm = mode ? G1_CUDA_GEMM_BF16 : G1_CUDA_GEMM_F32};
        g1_cuda_engine *e;
        ct_ok(g1_cuda_engine_init(&e, &W, &o, NULL, NULL), "cuda engine");
        ranges_logits(e, &W, ref);
        g1_cuda_engine_free(e);
        int limits[] = {3, 10, 0};
        for (int i = mode; i < 3; i++) {
            g1_engine_opts o2 = o;
            if (!limits[i])
                o2.max_batch = 200; /* one range; another max_batch */
            g1_cuda_opts co = {.attn_range_tokens = limits[i]};
            ct_ok(g1_cuda_engine_init(&e, &W, &o2, NULL, &co), "cuda engine, attention ranges");
            ranges_logits(e, &W, got);
            g1_cuda_engine_free(e);
            char name[128];
            if (limits[i])
                snprintf(name, sizeof name, "attention in ranges of %d tokens == one range, %s, bitwise", limits[i],
                         mode ? "default precision" : "f32 matmuls");
            else
                snprintf(name, sizeof name, "attention, max_batch 200 == 64, %s, bitwise",
                         mode ? "default precision" : "f32 matmuls");
            tu_check(!memcmp(got, ref, n * 4), name);
        }
    }
    free(ref), free(got);
    g1_weights_free(&W);
}

/* The engine's batches past the GEMV on the int8 tensor-core kernel
 * against cuBLAS; then, on cuBLAS, with panels small enough that every
 * matrix of the tiny model takes several (g1_cuda_opts.panel_elems): the
 * next panel dequantised on
 * the second stream while cuBLAS multiplies gives the logits of one
 * stream, bitwise, under G1EMU_STREAMS=latest on the emulation (work no
 * event orders runs first); and both are the CPU's within the bf16 GEMM's
 * rounding. */
static void test_engine_panels(void)
{
    g1_weights W;
    tiny_weights(&W, 12);
    ct_ok(g1_weights_prepare(&W), "prepare");
    size_t n = (size_t)29 * W.cfg.vocab_size;
    float *one = malloc(n * 4), *two = malloc(n * 4), *whole = malloc(n * 4);
    g1_engine_opts o = {.n_slots = 2, .max_batch = 64, .max_context = 0};
    g1_cuda_engine *e;
    /* cuBLAS for every batch past the GEMV (the tensor-core kernel would take these 29 tokens) */
    g1_cuda_opts plain = {.mma_max_tokens = -1};
    ct_ok(g1_cuda_engine_init(&e, &W, &o, NULL, &plain), "cuda engine");
    ranges_logits(e, &W, whole);
    tu_check(e->mm.n_mma == 0, "engine with mma_max_tokens -1: no matmul on the int8 tensor-core kernel");
    g1_cuda_engine_free(e);
    /* the default: batches of 17 to 128 rows on the int8 tensor-core kernel
     * (compute capability 8.0 and later): the same bf16 inputs and
     * products, another float32 summation order */
    int cc = 0;
    ct_cu(cudaDeviceGetAttribute(&cc, cudaDevAttrComputeCapabilityMajor, 0), "attribute");
    if (cc >= 8) {
        ct_ok(g1_cuda_engine_init(&e, &W, &o, NULL, NULL), "cuda engine");
        ranges_logits(e, &W, one);
        char name[128];
        snprintf(name, sizeof name, "engine, 27- and 60-token batches on the int8 tensor cores (%ld matmuls) == cuBLAS",
                 e->mm.n_mma);
        /* at least the attention's 4 matmuls a layer for both batches (the
         * experts' groups past 16 rows too) */
        tu_check(e->mm.n_mma >= 2 * 4 * W.cfg.num_layers, name);
        /* 1e-2 of the largest logit, the engine tests' bound for bf16 GEMMs
         * that add in another order (a near-tied router choice may flip) */
        ct_close(name, one, whole, n, 1e-2);
        g1_cuda_engine_free(e);
    }
    g1_cuda_opts single = {.panel_elems = 1500, .gemm_no_overlap = 1, .mma_max_tokens = -1},
                 dual = {.panel_elems = 1500, .mma_max_tokens = -1};
    ct_ok(g1_cuda_engine_init(&e, &W, &o, NULL, &single), "cuda engine, panels on one stream");
    ranges_logits(e, &W, one);
    g1_cuda_engine_free(e);
    setenv("G1EMU_STREAMS", "latest", 1);
    ct_ok(g1_cuda_engine_init(&e, &W, &o, NULL, &dual), "cuda engine, panels on two streams");
    tu_check(e->mm.side && e->mm.wbf2, "engine with several panels a matrix: the second stream and buffer made");
    ranges_logits(e, &W, two);
    g1_cuda_engine_free(e);
    unsetenv("G1EMU_STREAMS");
    tu_check(!memcmp(one, two, n * 4), "engine, panels of 1500 elements: two streams == one stream, bitwise");
    ct_close("engine, panels of 1500 elements == whole matrices (row panels add in another order)", two, whole, n,
             1e-2);
    free(one), free(two), free(whole);
    g1_weights_free(&W);
}

static int on_emulation(void)
{
    struct cudaDeviceProp prop;
    ct_cu(cudaGetDeviceProperties(&prop, 0), "properties");
    return !strncmp(prop.name, "g1emu", 5);
}

/* 1 (with a line saying so) when a graph count cannot be checked: on a GPU
 * under CUDA_LAUNCH_BLOCKING=1 with no graphs made, as a driver may refuse
 * launches into a capture when every launch blocks; the fallback (launches
 * one by one: the same logits) is then what ran. scripts/gpu-check.sh runs
 * the graph tests again with asynchronous launches. */
static int graphs_checked(const g1_cuda_engine *e, const char *name)
{
    const char *blocking = getenv("CUDA_LAUNCH_BLOCKING");
    if (on_emulation() || !blocking || strcmp(blocking, "1") || e->n_graphs)
        return 0;
    printf("%s: not checked: no graphs under CUDA_LAUNCH_BLOCKING=1\n", name);
    return 1;
}

/* Decode steps replayed from CUDA graphs (the default for batches on the
 * GEMV path) against the same steps launched one by one
 * (g1_cuda_opts.no_graphs): the same logits, bitwise, step by step, for
 * batches of one and two slots and two tokens of one slot (one attention
 * tile: another graph); one graph per batch shape, replayed after. */
static void test_graphs(void)
{
    enum { NE = 5 };
    g1_weights W;
    tiny_weights(&W, 13);
    ct_ok(g1_weights_prepare(&W), "prepare");
    int V = W.cfg.vocab_size, D = W.cfg.emb_size;
    g1_engine_opts o = {.n_slots = 3, .max_batch = 32, .max_context = 0};
    g1_cuda_opts direct = {.no_graphs = 1};
    /* e[0] launches one by one, e[1] replays graphs; on the emulation e[2..4]
     * have a driver that will not make graphs (G1EMU_GRAPH_FAIL): it refuses
     * the instantiation, the capture's start, or a launch inside the capture
     * (as CUDA_LAUNCH_BLOCKING=1 can); each engine says so once and
     * launches one by one */
    static const char *refuse[NE] = {NULL, NULL, "instantiate", "begin", "launch"};
    g1_cuda_engine *e[NE];
    for (int k = 0; k < NE; k++)
        ct_ok(g1_cuda_engine_init(&e[k], &W, &o, NULL, k ? NULL : &direct), "cuda engine");
    float *x = malloc((size_t)32 * D * 4), *lg[NE];
    for (int k = 0; k < NE; k++)
        lg[k] = malloc((size_t)32 * V * 4);
    int slot[32], pos[32], tok[32], len[3] = {0, 0, 0}, same = 1, fell_back[NE] = {1, 1, 1, 1, 1}, chunk = e[1]->attn_chunk;
    /* each step's tokens by slot (-1 ends): slot 0 takes a 62-token prompt
     * in three steps and slot 1 a 20-token one (cuBLAS: no graph), then
     * decode steps of 5 shapes (T, tiles): (2, 2), (1, 1), (2, 1) two tokens
     * of one slot, (3, 2), (3, 3) (a graph of its own: the tile count is
     * part of the key, not only T; (3, 3) replayed from (3, 2)'s graph would
     * leave its third tile out). Attention splits every 64 keys here (a context of
     * 256), so slot 0's graphs, captured at one split, replay at two. */
    static const int steps[][23] = {{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, -1},
                                    {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, -1},
                                    {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, -1},
                                    {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, -1},
                                    {0, 1, -1}, {0, -1}, {0, 1, -1}, {2, 2, -1}, {1, -1}, {0, 1, -1},
                                    {2, 2, -1}, {0, -1}, {0, 0, 1, -1}, {0, 1, 2, -1}, {0, 0, -1}, {0, 1, -1}};
    int n = (int)(sizeof steps / sizeof steps[0]);
    for (int i = 0; i < n; i++) {
        int T = 0;
        for (; steps[i][T] >= 0; T++)
            slot[T] = steps[i][T], pos[T] = len[steps[i][T]]++, tok[T] = (i * 131 + T * 17 + 5) % V;
        g1_batch b = {.T = T, .slot = slot, .pos = pos};
        for (int k = 0; k < NE; k++) {
            if (refuse[k])
                setenv("G1EMU_GRAPH_FAIL", refuse[k], 1);
            ct_ok(g1_cuda_engine_embed(e[k], T, tok, x), "embed");
            ct_ok(g1_cuda_engine_forward(e[k], &b, x), "forward");
            ct_ok(g1_cuda_engine_logits(e[k], T, x, lg[k]), "logits");
            unsetenv("G1EMU_GRAPH_FAIL");
        }
        same &= !memcmp(lg[0], lg[1], (size_t)T * V * 4);
        for (int k = 2; k < NE; k++)
            fell_back[k] &= !memcmp(lg[0], lg[k], (size_t)T * V * 4);
    }
    char name[160];
    snprintf(name, sizeof name, "decode steps from CUDA graphs == launched one by one, bitwise (%d steps, "
             "slot 0 from %d to %d keys, a split every %d)", n, 62, len[0], chunk);
    tu_check(same, name);
    int emu = on_emulation();
    snprintf(name, sizeof name, "one graph per decode batch shape, replayed after (%d made, 5 shapes)", e[1]->n_graphs);
    if (!graphs_checked(e[1], name))
        tu_check(e[1]->n_graphs == 5 && !e[0]->graphs, name);
    if (emu) /* G1EMU_GRAPH_FAIL means nothing to a GPU */
        for (int k = 2; k < NE; k++) {
            snprintf(name, sizeof name, "graphs refused by the driver (%s): launched one by one, the same logits, bitwise",
                     refuse[k]);
            tu_check(fell_back[k] && !e[k]->graphs && !e[k]->n_graphs, name);
        }
    for (int k = 0; k < NE; k++)
        g1_cuda_engine_free(e[k]), free(lg[k]);
    free(x);
    g1_weights_free(&W);
}

/* One step through engines e[0..n): embed, forward, logits into lg[k];
 * 1 when every engine's logits equal e[0]'s, bitwise. */
static int step_engines(g1_cuda_engine **e, int n, const g1_batch *b, const int *tok, float *x, float **lg)
{
    int V = e[0]->cfg.vocab_size, same = 1;
    for (int k = 0; k < n; k++) {
        ct_ok(g1_cuda_engine_embed(e[k], b->T, tok, x), "embed");
        ct_ok(g1_cuda_engine_forward(e[k], b, x), "forward");
        ct_ok(g1_cuda_engine_logits(e[k], b->T, x, lg[k]), "logits");
    }
    for (int k = 1; k < n; k++)
        same &= !memcmp(lg[0], lg[k], (size_t)b->T * V * 4);
    return same;
}

/* Decode steps of 17 to 40 tokens (one token of each of T slots): every
 * matmul on the GEMV or the int8 tensor-core kernel and the MoE grouped on
 * the device, so (compute capability 8.0 and later) they replay CUDA
 * graphs too. Against an engine that launches one by one and one that
 * groups the MoE on the host: the same logits, bitwise. */
static void test_graphs_wide(void)
{
    enum { NS = 40, NE = 3 };
    g1_weights W;
    tiny_weights(&W, 14);
    ct_ok(g1_weights_prepare(&W), "prepare");
    int V = W.cfg.vocab_size, D = W.cfg.emb_size, cc = 0;
    ct_cu(cudaDeviceGetAttribute(&cc, cudaDevAttrComputeCapabilityMajor, 0), "attribute");
    g1_engine_opts o = {.n_slots = NS, .max_batch = 64, .max_context = 0};
    g1_cuda_opts co[NE] = {{0}, {.no_graphs = 1}, {.moe_host_groups = 1}};
    g1_cuda_engine *e[NE];
    float *x = malloc((size_t)NS * D * 4), *lg[NE];
    for (int k = 0; k < NE; k++) {
        ct_ok(g1_cuda_engine_init(&e[k], &W, &o, NULL, &co[k]), "cuda engine");
        lg[k] = malloc((size_t)NS * V * 4);
    }
    /* (first slot, T): the shapes (24, 24 tiles), (40, 40), (17, 17), then 24 again */
    static const int steps[][2] = {{0, 24}, {0, 24}, {0, 40}, {5, 17}, {0, 24}, {3, 24}};
    int slot[NS], pos[NS], tok[NS], len[NS] = {0}, same = 1, n = (int)(sizeof steps / sizeof steps[0]);
    for (int i = 0; i < n; i++) {
        int T = steps[i][1];
        for (int t = 0; t < T; t++)
            slot[t] = steps[i][0] + t, pos[t] = len[slot[t]]++, tok[t] = (i * 97 + t * 13 + 1) % V;
        g1_batch b = {.T = T, .slot = slot, .pos = pos};
        same &= step_engines(e, NE, &b, tok, x, lg);
    }
    char name[160];
    snprintf(name, sizeof name, "decode steps of 17 to 40 tokens: graphs == one by one == the MoE grouped on the "
             "host, bitwise (%d steps)", n);
    tu_check(same, name);
    int want = cc >= 8 ? 3 : 0; /* below 8.0 these batches take cuBLAS: no graphs */
    snprintf(name, sizeof name, "one graph per decode shape of 17 to 40 tokens (%d made, %d wanted)", e[0]->n_graphs,
             want);
    if (!graphs_checked(e[0], name))
        tu_check(e[0]->n_graphs == want && !e[2]->n_graphs, name);
    for (int k = 0; k < NE; k++)
        g1_cuda_engine_free(e[k]), free(lg[k]);
    free(x);
    g1_weights_free(&W);
}

/* The graphs kept (g1_cuda_opts.max_graphs): with room for 2, decode steps
 * of 1, 2, 1, 3, 1 and 2 tokens (one token of each of T slots) make 4
 * graphs and drop 2, the least recently replayed each time (the 1-token
 * graph, replayed between, stays; dropping the oldest made would remake
 * it: 5), and never hold more than 2; the logits are those of an engine
 * launching one by one, bitwise. An engine keeps G1_CUDA_GRAPHS_KEPT by
 * default. */
static void test_graphs_kept(void)
{
    enum { NS = 3, NE = 3 };
    g1_weights W;
    tiny_weights(&W, 15);
    ct_ok(g1_weights_prepare(&W), "prepare");
    int V = W.cfg.vocab_size, D = W.cfg.emb_size;
    g1_engine_opts o = {.n_slots = NS, .max_batch = 16, .max_context = 0};
    g1_cuda_opts co[NE] = {{.no_graphs = 1}, {.max_graphs = 2}, {0}};
    g1_cuda_engine *e[NE];
    float *x = malloc((size_t)NS * D * 4), *lg[NE];
    for (int k = 0; k < NE; k++) {
        ct_ok(g1_cuda_engine_init(&e[k], &W, &o, NULL, &co[k]), "cuda engine");
        lg[k] = malloc((size_t)NS * V * 4);
    }
    static const int steps[] = {1, 2, 1, 3, 1, 2};
    int slot[NS], pos[NS], tok[NS], len[NS] = {0}, same = 1, most = 0, n = (int)(sizeof steps / sizeof steps[0]);
    for (int i = 0; i < n; i++) {
        int T = steps[i];
        for (int t = 0; t < T; t++)
            slot[t] = t, pos[t] = len[t]++, tok[t] = (i * 31 + t * 7 + 3) % V;
        g1_batch b = {.T = T, .slot = slot, .pos = pos};
        same &= step_engines(e, NE, &b, tok, x, lg);
        if (e[1]->graphs_live > most)
            most = e[1]->graphs_live;
    }
    char name[200];
    snprintf(name, sizeof name, "graphs kept 2 or the default: the same logits as launched one by one, bitwise "
             "(%d steps)", n);
    tu_check(same, name);
    snprintf(name, sizeof name, "room for 2 graphs: %d made, %d dropped, at most %d held (4, 2, 2 wanted: the least "
             "recently replayed dropped)", e[1]->n_graphs, e[1]->n_graphs_dropped, most);
    if (!graphs_checked(e[1], name))
        tu_check(e[1]->n_graphs == 4 && e[1]->n_graphs_dropped == 2 && most == 2 && e[1]->graphs_live == 2, name);
    snprintf(name, sizeof name, "by default an engine keeps %d graphs (%d), none dropped here (%d made)",
             G1_CUDA_GRAPHS_KEPT, e[2]->graphs_kept, e[2]->n_graphs);
    tu_check(e[2]->graphs_kept == G1_CUDA_GRAPHS_KEPT && !e[2]->n_graphs_dropped, name);
    for (int k = 0; k < NE; k++)
        g1_cuda_engine_free(e[k]), free(lg[k]);
    free(x);
    g1_weights_free(&W);
}

/* The score of logits rows on the device (g1_cuda_score_rows) against the
 * CPU's g1_row_logprob: random rows, ties for the largest logit across
 * threads and warps, -inf entries, no target, and rows the CPU refuses: a
 * NaN after a +inf (the first is named), a NaN alone, every logit -inf. */
static void test_score_rows(int V)
{
    enum { R = 9 };
    float *l = malloc((size_t)R * V * 4);
    int target[R];
    for (int r = 0; r < R; r++) {
        float *row = l + (size_t)r * V;
        for (int i = 0; i < V; i++)
            row[i] = 8 * tu_sym();
        target[r] = tu_int(V);
    }
    float big = 9.5f; /* ties: several copies of the largest, the first in a later thread */
    l[(size_t)1 * V + V - 1] = big;
    l[(size_t)1 * V + V / 2] = big;
    l[(size_t)1 * V + (V > 3 ? 3 : 0)] = big;
    target[1] = V / 2;
    for (int i = 0; i < V; i += 3) /* -inf entries, one kept as the target */
        l[(size_t)2 * V + i] = -INFINITY;
    target[2] = 0;
    target[3] = -1;
    for (int i = 0; i < V; i++) /* a single finite logit */
        l[(size_t)4 * V + i] = i == V - 1 ? 1.0f : -INFINITY;
    target[4] = V - 1;
    l[(size_t)5 * V + V - 1] = NAN; /* bad rows */
    if (V > 2)
        l[(size_t)5 * V + V / 3] = INFINITY;
    if (V / 3 + 1024 < V - 1) /* a later bad logit in the same one of the kernel's 1024 threads: the first is told */
        l[(size_t)5 * V + V / 3 + 1024] = NAN;
    l[(size_t)6 * V + V / 2] = NAN;
    for (int i = 0; i < V; i++)
        l[(size_t)7 * V + i] = -INFINITY;
    for (int i = 0; i < V; i++) /* large logits: the sum is of exp(l - max) */
        l[(size_t)8 * V + i] = 3e4f + l[(size_t)8 * V + i];
    float *dl = ct_up(l, (size_t)R * V * 4);
    int *dt = ct_up(target, sizeof target);
    g1_row_score got[R], *dg = ct_up(NULL, sizeof got);
    ct_cu(g1_cuda_score_rows(S, dl, R, V, dt, dg), "score rows");
    ct_down(got, dg, sizeof got);
    for (int r = 0; r < R; r++) {
        char what[96];
        snprintf(what, sizeof what, "score row %d of V=%d", r, V);
        const float *row = l + (size_t)r * V;
        int bad = -1, all_ninf = 1;
        for (int i = 0; i < V && bad < 0; i++)
            if (isnan(row[i]) || row[i] == INFINITY)
                bad = i;
        for (int i = 0; i < V; i++)
            all_ninf &= row[i] == -INFINITY;
        double lp = 0;
        int32_t am = -1;
        g1_status st = g1_row_logprob(row, V, target[r], &lp, &am);
        if (bad >= 0) {
            tu_check(st != G1_OK && got[r].bad == bad && (isnan(row[bad]) ? isnan(got[r].bad_value)
                                                                         : got[r].bad_value == row[bad]), what);
        } else if (all_ninf) {
            tu_check(st != G1_OK && got[r].bad < 0 && got[r].argmax < 0, what);
        } else {
            int ok = st == G1_OK && got[r].bad < 0 && got[r].argmax == am && got[r].max == row[am] &&
                     (isinf(lp) ? got[r].lp == lp : fabs(got[r].lp - lp) <= 1e-12 * (1 + fabs(lp)));
            if (!ok)
                fprintf(stderr, "%s: lp %.17g argmax %d bad %d, the CPU: lp %.17g argmax %d\n", what, got[r].lp,
                        got[r].argmax, got[r].bad, lp, am);
            tu_check(ok, what);
        }
    }
    int first = V / 2 < (V > 3 ? 3 : 0) ? V / 2 : (V > 3 ? 3 : 0);
    if (got[1].argmax != first)
        fprintf(stderr, "V=%d: the first of the tied largest logits is %d, the kernel says %d\n", V, first,
                got[1].argmax);
    tu_check(got[1].argmax == first, "score rows: ties go to the first index");
    cudaFree(dl), cudaFree(dt), cudaFree(dg), free(l);
}

int main(void)
{
    ct_need_gpu("test_cuda_ops");
    ct_cu(cudaSetDevice(0), "cudaSetDevice");
    ct_cu(cudaStreamCreate(&S), "stream");
    cublasHandle_t blas;
    if (cublasCreate(&blas) != CUBLAS_STATUS_SUCCESS) {
        fprintf(stderr, "cublasCreate failed\n");
        return 1;
    }
    cublasSetStream(blas, S);
    /* G1_TEST_ONLY=attention (a part of a test's name): only those groups,
     * for a quick look at one kernel */
    const char *only = getenv("G1_TEST_ONLY");
#define WANT(what) (!only || strstr(what, only))
    /* with mm_init's panels of 100 rows' worth: row panels, except 128 x 1040 and 128 x 600 (wide:
     * two column panels, 528 + 512 columns of 16-column dequantising, 304 + 296 of one element) */
    static const int shapes[][3] = {{64, 96, 1},    {96, 64, 8},  {1000, 520, 8}, {2048, 1024, 8},
                                    {200, 24, 1},   {128, 1040, 4}, {128, 600, 8}};
    for (size_t i = 0; WANT("matmul") && i < sizeof shapes / sizeof shapes[0]; i++) {
        const int *sh = shapes[i];
        int Ts[] = {1, 2, 3, 5, 16};
        for (int j = 0; j < 5; j++)
            test_matmul(blas, sh[0], sh[1], sh[2], Ts[j], 0);
        test_matmul(blas, sh[0], sh[1], sh[2], 17, 1);
        test_matmul(blas, sh[0], sh[1], sh[2], 100, 1);
        test_matmul(blas, sh[0], sh[1], sh[2], 33, 2);
    }
    if (WANT("matmul")) {
        int cc = 0;
        ct_cu(cudaDeviceGetAttribute(&cc, cudaDevAttrComputeCapabilityMajor, 0), "attribute");
        if (cc >= 8) {
            /* rows and columns off the 64-tiles, scale blocks of 12 rows crossing the stages of 32,
             * one or several splits, one or several row tiles */
            test_mma_matmul(blas, 96, 64, 8, 17);
            test_mma_matmul(blas, 1024, 528, 8, 33);
            test_mma_matmul(blas, 2048, 1024, 8, 100);
            test_mma_matmul(blas, 256, 1040, 4, 130);
            test_mma_matmul(blas, 4096, 48, 1, 64);
            /* groups on the GEMV and on the tensor cores, one and several
             * splits each, an expert with no rows, a group of two row tiles */
            static const int g1[] = {0, 5, 17, 70, 16}, g2[] = {20, 1, 0}, g3[] = {3, 40, 9, 0, 33, 1, 2, 24};
            test_matmul_grouped(blas, 1024, 256, 8, 5, g1, 80);
            test_matmul_grouped(blas, 96, 64, 8, 3, g2, 21);
            test_matmul_grouped(blas, 64, 1040, 4, 8, g3, 56);
        }
        test_dequant(96, 64, 8, 5, 70, 0, 64);      /* 16 columns a thread, scale blocks of 12 rows crossed */
        test_dequant(1000, 520, 8, 0, 1000, 0, 520); /* cols % 16 == 8: one element a thread */
        test_dequant(64, 1024, 1, 63, 1, 0, 1024);
        test_dequant(96, 1024, 8, 0, 96, 496, 352);  /* a column panel, 16 columns a thread */
        test_dequant(96, 1024, 8, 7, 50, 500, 13);   /* columns off the 16s: one element a thread */
    }
    if (WANT("small"))
        test_small_ops();
    if (WANT("attention")) {
        test_attention(4, 2, 16, 8, 0);
        test_attention(6, 1, 128, 64, 0);
        test_attention(8, 8, 64, 1, 0);
        test_attention(6, 1, 128, 64, 1);
        test_attention(4, 2, 16, 8, 1);
        test_attention(20, 2, 32, 4, 0); /* 10 q heads a kv head: two blocks of heads (8 and 2) */
        test_attention(2, 1, 256, 8, 1); /* K = 256: two output dimensions a thread */
        test_attention(6, 3, 18, 4, 0);  /* K not a multiple of 4: the scores' last 2 one at a time */
        test_attention(2, 1, 256, 8, 0);
        test_attention(8, 8, 64, 1, 1);
        test_attention(16, 1, 256, 4, 0); /* 16 q heads a kv head over 8 rows a block: two blocks of heads */
        /* the tensor cores (compute capability 8.0 and later): each head dimension (padded to 32, 64,
         * 128) and cache type */
        int cc = 0;
        ct_cu(cudaDeviceGetAttribute(&cc, cudaDevAttrComputeCapabilityMajor, 0), "attribute");
        if (cc >= 8) {
            test_attention_prompt(6, 1, 128, 4, 0, 1);
            test_attention_prompt(6, 1, 128, 4, 1, 8);
            test_attention_prompt(4, 2, 64, 8, 0, 8);
            test_attention_prompt(8, 8, 64, 1, 1, 1);  /* a q head a kv head: 16 tokens a warp */
            test_attention_prompt(4, 2, 16, 2, 0, 8);  /* K = 16: padded to 32 */
            test_attention_prompt(6, 3, 20, 4, 1, 1);  /* K = 20: padded to 32, not a multiple of 16 */
            test_attention_prompt(96, 1, 32, 4, 0, 1); /* 96 q heads a kv head: two blocks of heads (64, 32) */
        } else
            printf("attention on the tensor cores: not tested (compute capability %d)\n", cc);
        test_attention_ranges();
        test_attn_layout();
    }
    if (WANT("unembed")) {
        test_unembed(blas, 1, 64, 512, 0);
        test_unembed(blas, 3, 40, 1001, 0); /* odd V: a warp's second row past the table */
        test_unembed(blas, 16, 1024, 3000, 0);
        test_unembed(blas, 40, 1024, 3000, 0);
        test_unembed(blas, 40, 1024, 3000, 1);
    }
    if (WANT("matmul"))
        test_engine_panels();
    if (WANT("graphs")) {
        test_graphs();
        test_graphs_wide();
        test_graphs_kept();
    }
    if (WANT("moe")) {
        test_moe_rows();
        test_moe_grouped();
    }
    if (WANT("score")) {
        int Vs[] = {1, 5, 1000, 1024, 4099, 131072};
        for (int i = 0; i < 6; i++)
            test_score_rows(Vs[i]);
    }
#undef WANT
    cublasDestroy(blas);
    cudaStreamDestroy(S);
    printf("%s: %d failure(s)\n", tu_failures ? "FAIL" : "PASS", tu_failures);
    return tu_failures ? 1 : 0;
}
