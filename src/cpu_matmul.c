/* int8 weight-only matmul (dequantise on the fly to bf16 values, multiply in
 * float32) and the bf16 un-embedding. Hot path of decode and prefill.
 * AVX-512 when the compiler targets it, else AVX2 + FMA, else portable C.
 * Each matmul output element is one chain acc = fma(x[t,r], w[r,c], acc)
 * over r = 0..rows-1, whatever the path, so results do not depend on T or
 * tiling, and the three paths give the same bits. The un-embedding's dot
 * products are split into partial sums: AVX-512 its own way, AVX2 and
 * portable the same way as each other (16 lanes, then summed in order). */
#include <math.h>
#include <string.h>

#include "bf16.h"
#include "cpu.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#define G1_AVX512 1
#include <immintrin.h>
#elif defined(__AVX2__) && defined(__FMA__)
#define G1_AVX2 1
#include <immintrin.h>
#endif

#define NC 64    /* columns per tile */
#define TT 6     /* tokens per register tile */
#define KB 256   /* rows per dequantised panel */
#define TG 48    /* tokens per work item */
#define CW 1024  /* most columns per work item (multiple of NC) */
#define RB 8     /* rows per block in the few-token path */

static inline int imin(int a, int b) { return a < b ? a : b; }

/* tt (1..TT) as a compile-time constant for call(k): the SIMD paths inline
 * their tiles with it, so the accumulators stay in registers */
#define DISPATCH_TT(tt, call)  \
    switch (tt) {              \
    case 1: call(1); break;    \
    case 2: call(2); break;    \
    case 3: call(3); break;    \
    case 4: call(4); break;    \
    case 5: call(5); break;    \
    default: call(6); break;   \
    }


#ifdef G1_AVX512
static inline __m512 round_bf16_16(__m512 p)
{
    __m512i u = _mm512_castps_si512(p);
    __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    u = _mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff)));
    return _mm512_castsi512_ps(_mm512_and_si512(u, _mm512_set1_epi32((int)0xffff0000u)));
}

/* 16 weights: bf16(int8 * scale) as float32; masked and full versions */
static inline __m512 deq16(const int8_t *p, __mmask16 m, __m512 s)
{
    __m128i b = _mm_maskz_loadu_epi8(m, p);
    return round_bf16_16(_mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b)), s));
}

/* bf16(q * s) by Veltkamp's split: c = q * (s * 65537), hi = c - (c - q*s).
 * Exact for bf16 scales (see g1_qmat.scale_split); 4 float ops instead of a
 * multiply and 5 integer ops. */
static inline __m512 deq16_split(const int8_t *p, __m512 s, __m512 ss)
{
    __m128i b = _mm_loadu_si128((const __m128i *)(const void *)p);
    __m512 q = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b));
    __m512 c = _mm512_mul_ps(q, ss);
    return _mm512_sub_ps(c, _mm512_sub_ps(c, _mm512_mul_ps(q, s)));
}

static inline __m512 deq16_full(const int8_t *p, __m512 s)
{
    __m128i b = _mm_loadu_si128((const __m128i *)(const void *)p);
    return round_bf16_16(_mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b)), s));
}

/* Few tokens: stream the rows of a column range [c0, c1) once, in blocks
 * of RB rows; within a block, 64 columns (one cache line per row) at a time,
 * so every row block is RB sequential streams the prefetchers follow. Each
 * weight is dequantised once for all tt tokens. acc (tt, CW) carries the
 * chains between row blocks. tt is a compile-time constant after inlining. */
static inline __attribute__((always_inline)) void
range_direct(const float *x, int rows, int tt, const g1_qmat *W, int c0, int c1, float *acc, float *y, int ldy)
{
    int cols = W->cols, rpb = rows / W->blocks;
    for (int r0 = 0; r0 < rows; r0 += RB) {
        int nr = imin(RB, rows - r0), last = r0 + nr >= rows;
        for (int c = c0; c < c1; c += NC) {
            __mmask16 m[4];
            for (int v = 0; v < 4; v++) {
                int n = c1 - c - 16 * v;
                m[v] = n >= 16 ? (__mmask16)0xffff : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1);
            }
            __m512 a[TT][4];
            for (int t = 0; t < tt; t++)
                for (int v = 0; v < 4; v++)
                    a[t][v] = r0 ? _mm512_load_ps(acc + (size_t)t * CW + (c - c0) + 16 * v) : _mm512_setzero_ps();
            if (c + NC <= c1 && W->scale_split) {
                for (int r = r0; r < r0 + nr; r++) {
                    const int8_t *wr = W->w + (size_t)r * cols + c;
                    size_t so = (size_t)(r / rpb) * cols + c;
                    _mm_prefetch((const char *)(wr + (size_t)RB * cols), _MM_HINT_T0);
                    __m512 w[4];
                    for (int v = 0; v < 4; v++)
                        w[v] = deq16_split(wr + 16 * v, _mm512_loadu_ps(W->scale + so + 16 * v),
                                           _mm512_loadu_ps(W->scale_split + so + 16 * v));
                    for (int t = 0; t < tt; t++) {
                        __m512 xb = _mm512_set1_ps(x[(size_t)t * rows + r]);
                        for (int v = 0; v < 4; v++)
                            a[t][v] = _mm512_fmadd_ps(xb, w[v], a[t][v]);
                    }
                }
            } else if (c + NC <= c1) {
                for (int r = r0; r < r0 + nr; r++) {
                    const int8_t *wr = W->w + (size_t)r * cols + c;
                    const float *sr = W->scale + (size_t)(r / rpb) * cols + c;
                    _mm_prefetch((const char *)(wr + (size_t)RB * cols), _MM_HINT_T0);
                    __m512 w[4];
                    for (int v = 0; v < 4; v++)
                        w[v] = deq16_full(wr + 16 * v, _mm512_loadu_ps(sr + 16 * v));
                    for (int t = 0; t < tt; t++) {
                        __m512 xb = _mm512_set1_ps(x[(size_t)t * rows + r]);
                        for (int v = 0; v < 4; v++)
                            a[t][v] = _mm512_fmadd_ps(xb, w[v], a[t][v]);
                    }
                }
            } else {
                for (int r = r0; r < r0 + nr; r++) {
                    const int8_t *wr = W->w + (size_t)r * cols + c;
                    const float *sr = W->scale + (size_t)(r / rpb) * cols + c;
                    __m512 w[4];
                    for (int v = 0; v < 4; v++)
                        w[v] = deq16(wr + 16 * v, m[v], _mm512_maskz_loadu_ps(m[v], sr + 16 * v));
                    for (int t = 0; t < tt; t++) {
                        __m512 xb = _mm512_set1_ps(x[(size_t)t * rows + r]);
                        for (int v = 0; v < 4; v++)
                            a[t][v] = _mm512_fmadd_ps(xb, w[v], a[t][v]);
                    }
                }
            }
            for (int t = 0; t < tt; t++)
                for (int v = 0; v < 4; v++) {
                    if (!last)
                        _mm512_store_ps(acc + (size_t)t * CW + (c - c0) + 16 * v, a[t][v]);
                    else
                        _mm512_mask_storeu_ps(y + (size_t)t * ldy + c + 16 * v, m[v], a[t][v]);
                }
        }
    }
}

/* Many tokens: rows [r0, r0+nr) of a dequantised panel (nr, NC), tt tokens,
 * accumulators continued from y (first: start from zero). */
static inline __attribute__((always_inline)) void
tile_panel(const float *x, int rows, int tt, const float *panel, int r0, int nr, int first, const __mmask16 m[4],
           float *y, int ldy, int c0)
{
    __m512 acc[TT][4];
    for (int t = 0; t < tt; t++)
        for (int v = 0; v < 4; v++)
            acc[t][v] = first ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(m[v], y + (size_t)t * ldy + c0 + 16 * v);
    for (int r = 0; r < nr; r++) {
        __m512 w[4];
        for (int v = 0; v < 4; v++)
            w[v] = _mm512_load_ps(panel + (size_t)r * NC + 16 * v);
        for (int t = 0; t < tt; t++) {
            __m512 xb = _mm512_set1_ps(x[(size_t)t * rows + r0 + r]);
            for (int v = 0; v < 4; v++)
                acc[t][v] = _mm512_fmadd_ps(xb, w[v], acc[t][v]);
        }
    }
    for (int t = 0; t < tt; t++)
        for (int v = 0; v < 4; v++)
            _mm512_mask_storeu_ps(y + (size_t)t * ldy + c0 + 16 * v, m[v], acc[t][v]);
}

/* Many tokens (nt > TT): dequantised panels reused by every token tile. */
static void matmul_many(const float *x, const g1_qmat *W, float *y, int c0, int c1, int t0, int nt)
{
    int rows = W->rows, cols = W->cols;
    float panel[KB * NC] __attribute__((aligned(64)));
    int rpb = rows / W->blocks;
    for (int ct = c0; ct < c1; ct += NC) {
        int nc = imin(NC, c1 - ct);
        __mmask16 m[4];
        for (int v = 0; v < 4; v++) {
            int n = nc - 16 * v;
            m[v] = n >= 16 ? (__mmask16)0xffff : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1);
        }
        for (int r0 = 0; r0 < rows; r0 += KB) {
            int nr = imin(KB, rows - r0);
            for (int r = 0; r < nr; r++) {
                int b = (r0 + r) / rpb;
                const int8_t *wr = W->w + (size_t)(r0 + r) * cols + ct;
                const float *sr = W->scale + (size_t)b * cols + ct;
                for (int v = 0; v < 4; v++)
                    _mm512_store_ps(panel + (size_t)r * NC + 16 * v,
                                    deq16(wr + 16 * v, m[v], _mm512_maskz_loadu_ps(m[v], sr + 16 * v)));
            }
            for (int t = t0; t < t0 + nt; t += TT) {
                int tt = imin(TT, t0 + nt - t);
#define CALL_P(k) tile_panel(x + (size_t)t * rows, rows, k, panel, r0, nr, r0 == 0, m, y + (size_t)t * cols, cols, ct)
                DISPATCH_TT(tt, CALL_P);
#undef CALL_P
            }
        }
    }
}
#elif defined(G1_AVX2)
/* 8 weights: bf16(int8 * scale) as float32, by integer rounding (any scale)
 * or by Veltkamp's split (bf16 scales: ss = scale * 65537). */
static inline __m256 deq8(const int8_t *p, const float *s, const float *ss)
{
    __m256 q = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)p)));
    __m256 sc = _mm256_loadu_ps(s);
    if (ss) {
        __m256 c = _mm256_mul_ps(q, _mm256_loadu_ps(ss));
        return _mm256_sub_ps(c, _mm256_sub_ps(c, _mm256_mul_ps(q, sc)));
    }
    __m256i u = _mm256_castps_si256(_mm256_mul_ps(q, sc));
    __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    u = _mm256_add_epi32(u, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff)));
    return _mm256_castsi256_ps(_mm256_and_si256(u, _mm256_set1_epi32((int)0xffff0000u)));
}

/* The same chain for one element, scalar (columns past the last 8). */
static inline float deq1(const g1_qmat *W, int r, int c)
{
    return g1_dequant(W->w[(size_t)r * W->cols + c], W->scale[(size_t)(r / (W->rows / W->blocks)) * W->cols + c]);
}

/* Rows [r0, r0+nr) of columns [c, c + 8 nv) for tt tokens, accumulators
 * in registers (tt and nv constants after inlining), continued from acc
 * (carried between row blocks) unless r0 == 0; stored to acc, or to y after
 * the last row block. */
static inline __attribute__((always_inline)) void
direct_chunk(const float *x, int rows, int tt, int nv, const g1_qmat *W, int r0, int nr, int last, int c, int c0,
             float *acc, float *y, int ldy)
{
    int cols = W->cols, rpb = rows / W->blocks;
    __m256 a[TT][8];
    for (int t = 0; t < tt; t++)
        for (int v = 0; v < nv; v++)
            a[t][v] = r0 ? _mm256_load_ps(acc + (size_t)t * CW + (c - c0) + 8 * v) : _mm256_setzero_ps();
    for (int r = r0; r < r0 + nr; r++) {
        const int8_t *wr = W->w + (size_t)r * cols + c;
        size_t so = (size_t)(r / rpb) * cols + c;
        _mm_prefetch((const char *)(wr + (size_t)RB * cols), _MM_HINT_T0);
        __m256 w[8];
        for (int v = 0; v < nv; v++)
            w[v] = deq8(wr + 8 * v, W->scale + so + 8 * v, W->scale_split ? W->scale_split + so + 8 * v : NULL);
        for (int t = 0; t < tt; t++) {
            __m256 xb = _mm256_broadcast_ss(x + (size_t)t * rows + r);
            for (int v = 0; v < nv; v++)
                a[t][v] = _mm256_fmadd_ps(xb, w[v], a[t][v]);
        }
    }
    for (int t = 0; t < tt; t++)
        for (int v = 0; v < nv; v++) {
            if (!last)
                _mm256_store_ps(acc + (size_t)t * CW + (c - c0) + 8 * v, a[t][v]);
            else
                _mm256_storeu_ps(y + (size_t)t * ldy + c + 8 * v, a[t][v]);
        }
}

/* Few tokens (tt <= TT): rows of [c0, c1) streamed once in blocks of RB
 * rows; within a block, NV * 8 columns at a time (NV = 8 / tt rounded down
 * to a power of two, so tt x NV accumulators fit AVX2's 16 registers); acc
 * (tt, CW) carries the chains between row blocks. */
static inline __attribute__((always_inline)) void
range_direct(const float *x, int rows, int tt, const g1_qmat *W, int c0, int c1, float *acc, float *y, int ldy)
{
    const int NV = tt == 1 ? 8 : tt == 2 ? 4 : tt <= 4 ? 2 : 1;
    int full = c0 + (c1 - c0) / 8 * 8;
    for (int r0 = 0; r0 < rows; r0 += RB) {
        int nr = imin(RB, rows - r0), last = r0 + nr >= rows, c = c0;
        for (; c + 8 * NV <= full; c += 8 * NV)
            direct_chunk(x, rows, tt, NV, W, r0, nr, last, c, c0, acc, y, ldy);
        for (; c < full; c += 8)
            direct_chunk(x, rows, tt, 1, W, r0, nr, last, c, c0, acc, y, ldy);
        for (c = full; c < c1; c++) /* the last few columns */
            for (int t = 0; t < tt; t++) {
                float s = r0 ? acc[(size_t)t * CW + (c - c0)] : 0.0f;
                for (int r = r0; r < r0 + nr; r++)
                    s = fmaf(x[(size_t)t * rows + r], deq1(W, r, c), s);
                if (!last)
                    acc[(size_t)t * CW + (c - c0)] = s;
                else
                    y[(size_t)t * ldy + c] = s;
            }
    }
}

/* Many tokens: rows [r0, r0+nr) of a dequantised panel (nr, NC), tt <= TT
 * tokens, columns [cc, cc + 8 nv) of it (tt and nv constants after
 * inlining: the accumulators stay in registers); accumulators continued
 * from y (first: from zero). */
static inline __attribute__((always_inline)) void
panel_cols(const float *x, int rows, int tt, int nv, const float *panel, int r0, int nr, int first, int cc, float *y,
           int ldy, int c0)
{
    __m256 acc[TT][2];
    for (int t = 0; t < tt; t++)
        for (int v = 0; v < nv; v++)
            acc[t][v] = first ? _mm256_setzero_ps() : _mm256_loadu_ps(y + (size_t)t * ldy + c0 + cc + 8 * v);
    for (int r = 0; r < nr; r++) {
        __m256 w[2];
        for (int v = 0; v < nv; v++)
            w[v] = _mm256_load_ps(panel + (size_t)r * NC + cc + 8 * v);
        for (int t = 0; t < tt; t++) {
            __m256 xb = _mm256_broadcast_ss(x + (size_t)t * rows + r0 + r);
            for (int v = 0; v < nv; v++)
                acc[t][v] = _mm256_fmadd_ps(xb, w[v], acc[t][v]);
        }
    }
    for (int t = 0; t < tt; t++)
        for (int v = 0; v < nv; v++)
            _mm256_storeu_ps(y + (size_t)t * ldy + c0 + cc + 8 * v, acc[t][v]);
}

/* The panel's nc columns (a multiple of 8), 16 at a time. */
static inline __attribute__((always_inline)) void
tile_panel(const float *x, int rows, int tt, const float *panel, int r0, int nr, int first, int nc, float *y,
           int ldy, int c0)
{
    int cc = 0;
    for (; cc + 16 <= nc; cc += 16)
        panel_cols(x, rows, tt, 2, panel, r0, nr, first, cc, y, ldy, c0);
    if (cc < nc)
        panel_cols(x, rows, tt, 1, panel, r0, nr, first, cc, y, ldy, c0);
}

/* Many tokens (nt > TT): dequantised panels reused by every token tile. */
static void matmul_many(const float *x, const g1_qmat *W, float *y, int c0, int c1, int t0, int nt)
{
    int rows = W->rows, cols = W->cols;
    float panel[KB * NC] __attribute__((aligned(64)));
    int rpb = rows / W->blocks;
    for (int ct = c0; ct < c1; ct += NC) {
        int nc = imin(NC, c1 - ct), nc8 = nc / 8 * 8;
        for (int r0 = 0; r0 < rows; r0 += KB) {
            int nr = imin(KB, rows - r0);
            for (int r = 0; r < nr; r++) {
                size_t so = (size_t)((r0 + r) / rpb) * cols + ct;
                const int8_t *wr = W->w + (size_t)(r0 + r) * cols + ct;
                for (int v = 0; v < nc8 / 8; v++)
                    _mm256_store_ps(panel + (size_t)r * NC + 8 * v,
                                    deq8(wr + 8 * v, W->scale + so + 8 * v,
                                         W->scale_split ? W->scale_split + so + 8 * v : NULL));
            }
            for (int t = t0; t < t0 + nt; t += TT) {
                int tt = imin(TT, t0 + nt - t);
#define CALL_P(k) tile_panel(x + (size_t)t * rows, rows, k, panel, r0, nr, r0 == 0, nc8, y + (size_t)t * cols, cols, ct)
                DISPATCH_TT(tt, CALL_P);
#undef CALL_P
            }
        }
        for (int c = ct + nc8; c < ct + nc; c++) /* the last few columns */
            for (int t = t0; t < t0 + nt; t++) {
                float s = 0.0f;
                for (int r = 0; r < rows; r++)
                    s = fmaf(x[(size_t)t * rows + r], deq1(W, r, c), s);
                y[(size_t)t * cols + c] = s;
            }
    }
}
#else
/* Portable path: the same chains in plain C. */
static void matmul_item(const float *x, int T, const g1_qmat *W, float *y, int c0, int c1, int t0, int nt)
{
    (void)T;
    int rows = W->rows, cols = W->cols, nc = c1 - c0, rpb = rows / W->blocks;
    float wd[CW];
    for (int t = t0; t < t0 + nt; t++)
        for (int c = 0; c < nc; c++)
            y[(size_t)t * cols + c0 + c] = 0.0f;
    for (int r = 0; r < rows; r++) {
        const int8_t *wr = W->w + (size_t)r * cols + c0;
        const float *sr = W->scale + (size_t)(r / rpb) * cols + c0;
        for (int c = 0; c < nc; c++)
            wd[c] = g1_dequant(wr[c], sr[c]);
        for (int t = t0; t < t0 + nt; t++) {
            float xv = x[(size_t)t * rows + r];
            float *yr = y + (size_t)t * cols + c0;
            for (int c = 0; c < nc; c++)
                yr[c] = fmaf(xv, wd[c], yr[c]);
        }
    }
}
#endif

#if defined(G1_AVX512) || defined(G1_AVX2)
/* Few tokens (nt <= TT): the path's range_direct, tt a constant. */
static void matmul_few(const float *x, const g1_qmat *W, float *y, int c0, int c1, int t0, int nt)
{
    int rows = W->rows, cols = W->cols;
    float acc[TT * CW] __attribute__((aligned(64)));
#define CALL_D(k) range_direct(x + (size_t)t0 * rows, rows, k, W, c0, c1, acc, y + (size_t)t0 * cols, cols)
    DISPATCH_TT(nt, CALL_D);
#undef CALL_D
}

static void matmul_item(const float *x, int T, const g1_qmat *W, float *y, int c0, int c1, int t0, int nt)
{
    (void)T;
    if (nt <= TT)
        matmul_few(x, W, y, c0, c1, t0, nt);
    else
        matmul_many(x, W, y, c0, c1, t0, nt);
}
#endif

const char *g1_cpu_kernels(void)
{
#if defined(G1_AVX512)
    return "avx512";
#elif defined(G1_AVX2)
    return "avx2";
#else
    return "portable";
#endif
}

void g1_cpu_matmul_q8(const float *x, int T, const g1_qmat *W, float *y)
{
    if (T <= 0)
        return;
    /* column ranges: one per thread when that is narrow enough (few large
     * items stream best), at most CW wide, multiples of 64 */
    int nth = g1_cpu_threads(), cols = W->cols;
    int cw = (cols + nth - 1) / nth;
    cw = (cw + NC - 1) / NC * NC;
    if (cw > CW)
        cw = CW;
    int nrange = (cols + cw - 1) / cw;
    int tg = T <= TT ? TT : TG;
    int ngroup = (T + tg - 1) / tg;
    long items = (long)nrange * ngroup;
#pragma omp parallel for schedule(static) if (items > 1 && (long)W->rows * cols * T > 32768)
    for (long i = 0; i < items; i++) {
        int rg = (int)(i % nrange), g = (int)(i / nrange);
        int t0 = g * tg, c0 = rg * cw;
        matmul_item(x, T, W, y, c0, imin(cols, c0 + cw), t0, imin(tg, T - t0));
    }
}

/* ---- un-embedding: y[t, n] = dot(x[t], E[n]) * mult ---- */

#ifdef G1_AVX512
static inline __m512 bf16x16(const uint16_t *p, __mmask16 m)
{
    __m256i h = _mm256_maskz_loadu_epi16(m, p);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* One vocabulary row at a time (a single sequential stream), tt tokens
 * (<= 4, a constant after inlining). The chain of (t, n): 16-column chunk i
 * of the row goes to partial sum i % 4; then (p0 + p1) + (p2 + p3), reduced
 * across lanes in a fixed order. The same for every T. */
static inline __attribute__((always_inline)) void
unembed_rows(const float *x, int tt, int D, const uint16_t *E, int n0, int nn, float mult, float *y, int N)
{
    for (int n = n0; n < n0 + nn; n++) {
        const uint16_t *row = E + (size_t)n * D;
        __m512 acc[4][4];
        for (int t = 0; t < tt; t++)
            for (int k = 0; k < 4; k++)
                acc[t][k] = _mm512_setzero_ps();
        int d = 0;
        for (; d + 64 <= D; d += 64) {
            _mm_prefetch((const char *)(row + d + 2 * D), _MM_HINT_T0);
            for (int k = 0; k < 4; k++) {
                __m256i h = _mm256_loadu_si256((const __m256i *)(const void *)(row + d + 16 * k));
                __m512 e = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
                for (int t = 0; t < tt; t++)
                    acc[t][k] = _mm512_fmadd_ps(_mm512_loadu_ps(x + (size_t)t * D + d + 16 * k), e, acc[t][k]);
            }
        }
        for (; d < D; d += 16) {
            int k = (d / 16) % 4;
            __mmask16 m = D - d >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (D - d)) - 1);
            __m512 e = bf16x16(row + d, m);
            for (int t = 0; t < tt; t++)
                acc[t][k] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, x + (size_t)t * D + d), e, acc[t][k]);
        }
        for (int t = 0; t < tt; t++) {
            __m512 s = _mm512_add_ps(_mm512_add_ps(acc[t][0], acc[t][1]), _mm512_add_ps(acc[t][2], acc[t][3]));
            y[(size_t)t * N + n] = _mm512_reduce_add_ps(s) * mult;
        }
    }
}

#elif defined(G1_AVX2)
/* One vocabulary row at a time, tt (<= 4) tokens; 16 lanes per token (two
 * vectors), lane l summing the elements d = l mod 16 in order, then the 16
 * lanes summed in order: the portable path's chains, vectorised. */
static inline __attribute__((always_inline)) void
unembed_rows(const float *x, int tt, int D, const uint16_t *E, int n0, int nn, float mult, float *y, int N)
{
    int full = D / 16 * 16;
    for (int n = n0; n < n0 + nn; n++) {
        const uint16_t *row = E + (size_t)n * D;
        __m256 acc[4][2];
        for (int t = 0; t < tt; t++)
            acc[t][0] = acc[t][1] = _mm256_setzero_ps();
        for (int d = 0; d < full; d += 16) {
            _mm_prefetch((const char *)(row + d + 2 * D), _MM_HINT_T0);
            __m256i h = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(const void *)(row + d)));
            __m256i g = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(const void *)(row + d + 8)));
            __m256 e0 = _mm256_castsi256_ps(_mm256_slli_epi32(h, 16));
            __m256 e1 = _mm256_castsi256_ps(_mm256_slli_epi32(g, 16));
            for (int t = 0; t < tt; t++) {
                acc[t][0] = _mm256_fmadd_ps(_mm256_loadu_ps(x + (size_t)t * D + d), e0, acc[t][0]);
                acc[t][1] = _mm256_fmadd_ps(_mm256_loadu_ps(x + (size_t)t * D + d + 8), e1, acc[t][1]);
            }
        }
        for (int t = 0; t < tt; t++) {
            float lanes[16];
            _mm256_storeu_ps(lanes, acc[t][0]);
            _mm256_storeu_ps(lanes + 8, acc[t][1]);
            for (int d = full; d < D; d++)
                lanes[d % 16] = fmaf(x[(size_t)t * D + d], g1_bf16_to_f32(row[d]), lanes[d % 16]);
            float s = 0;
            for (int l = 0; l < 16; l++)
                s += lanes[l];
            y[(size_t)t * N + n] = s * mult;
        }
    }
}

#endif

#if defined(G1_AVX512) || defined(G1_AVX2)
static void unembed_block(const float *x, int tt, int D, const uint16_t *E, int n0, int nn, float mult, float *y,
                          int N)
{
    switch (tt) {
    case 1: unembed_rows(x, 1, D, E, n0, nn, mult, y, N); break;
    case 2: unembed_rows(x, 2, D, E, n0, nn, mult, y, N); break;
    case 3: unembed_rows(x, 3, D, E, n0, nn, mult, y, N); break;
    default: unembed_rows(x, 4, D, E, n0, nn, mult, y, N); break;
    }
}
#define UN 8
#else
#define UN 4
static void unembed_block(const float *x, int tt, int D, const uint16_t *E, int n0, int nn, float mult, float *y,
                          int N)
{
    for (int t = 0; t < tt; t++)
        for (int j = 0; j < nn; j++) {
            const uint16_t *e = E + (size_t)(n0 + j) * D;
            float lanes[16] = {0};
            for (int d = 0; d < D; d++)
                lanes[d % 16] = fmaf(x[(size_t)t * D + d], g1_bf16_to_f32(e[d]), lanes[d % 16]);
            float s = 0;
            for (int l = 0; l < 16; l++)
                s += lanes[l];
            y[(size_t)t * N + n0 + j] = s * mult;
        }
}
#endif

void g1_cpu_matmul_bf16_nt(const float *x, int T, int D, const uint16_t *E, int N, float mult, float *y)
{
    /* vocabulary in chunks of 256 rows per work item; tokens 4 at a time */
    int nchunk = (N + 255) / 256;
#pragma omp parallel for schedule(static)
    for (int c = 0; c < nchunk; c++) {
        int nend = imin(N, (c + 1) * 256);
        for (int t0 = 0; t0 < T; t0 += 4)
            for (int n0 = c * 256; n0 < nend; n0 += UN)
                unembed_block(x + (size_t)t0 * D, imin(4, T - t0), D, E, n0, imin(UN, nend - n0), mult,
                              y + (size_t)t0 * N, N);
    }
}
