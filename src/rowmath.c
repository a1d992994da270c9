/* Passes over a logits row (see rowmath.h). The exponential is our own so
 * that the vector paths and the portable one give the same bits: Cody-Waite
 * reduction x = n ln2 + r with |r| <= ln2 / 2 (n rounded by adding 1.5 *
 * 2^52), exp(r) by its Taylor series to r^13 (the first term left out is
 * below 5e-18 relative) as 1 + r * S(r), S evaluated in Estrin's scheme (a
 * dependency chain of 10 operations instead of Horner's 26, which kept the
 * vector paths waiting on latency; the 1 added last keeps the error near
 * 1 ulp), then 2^n applied as two factors 2^k1 * 2^(n - k1)
 * so that results down in the subnormal range are rounded once. Plain
 * multiplies and adds only (the build keeps the compiler from fusing them:
 * -ffp-contract=off), in the same order on every path. */
#include "rowmath.h"

#include <math.h>
#include <string.h>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

#define EXP_MIN (-750.0) /* exp(-750) < 2^-1075: rounds to 0 */

static const double SHIFT = 0x1.8p52; /* x + SHIFT rounds x to an integer held in the low bits */
static const double LOG2E = 0x1.71547652b82fep0;
static const double LN2_HI = 0x1.62e42fee00000p-1; /* 33 bits: n * LN2_HI is exact for |n| < 2^20 */
static const double LN2_LO = 0x1.a39ef35793c76p-33;
/* 1 / k! for k = 0..13 */
static const double C[14] = {1.0,
                             1.0,
                             1.0 / 2,
                             1.0 / 6,
                             1.0 / 24,
                             1.0 / 120,
                             1.0 / 720,
                             1.0 / 5040,
                             1.0 / 40320,
                             1.0 / 362880,
                             1.0 / 3628800,
                             1.0 / 39916800,
                             1.0 / 479001600,
                             1.0 / 6227020800};

static uint64_t bits_of(double x)
{
    uint64_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

static double of_bits(uint64_t u)
{
    double x;
    memcpy(&x, &u, sizeof x);
    return x;
}

double g1_expd(double x)
{
    x = x < EXP_MIN ? EXP_MIN : x;
    double t = x * LOG2E + SHIFT;
    double n = t - SHIFT;
    double r = x - n * LN2_HI;
    r = r - n * LN2_LO;
    double r2 = r * r, r4 = r2 * r2, r8 = r4 * r4;
    double a0 = C[1] + C[2] * r, a1 = C[3] + C[4] * r, a2 = C[5] + C[6] * r, a3 = C[7] + C[8] * r;
    double a4 = C[9] + C[10] * r, a5 = C[11] + C[12] * r;
    double b0 = a0 + a1 * r2, b1 = a2 + a3 * r2, b2 = a4 + a5 * r2;
    double q = 1.0 + r * ((b0 + b1 * r4) + (b2 + C[13] * r4) * r8);
    double h = n * 0.5 + SHIFT; /* k1 = n / 2 rounded to even: both factors stay normal */
    uint64_t s1 = (bits_of(h) + (1023 - bits_of(SHIFT))) << 52;
    uint64_t s2 = (bits_of(t) - bits_of(h) + 1023) << 52;
    return q * of_bits(s1) * of_bits(s2);
}

#if defined(__AVX2__) && !defined(__AVX512F__) /* used only without AVX-512 */
static inline __m256d expd4(__m256d x)
{
    const __m256d shift = _mm256_set1_pd(SHIFT);
    x = _mm256_max_pd(x, _mm256_set1_pd(EXP_MIN));
    __m256d t = _mm256_add_pd(_mm256_mul_pd(x, _mm256_set1_pd(LOG2E)), shift);
    __m256d n = _mm256_sub_pd(t, shift);
    __m256d r = _mm256_sub_pd(x, _mm256_mul_pd(n, _mm256_set1_pd(LN2_HI)));
    r = _mm256_sub_pd(r, _mm256_mul_pd(n, _mm256_set1_pd(LN2_LO)));
    __m256d r2 = _mm256_mul_pd(r, r), r4 = _mm256_mul_pd(r2, r2), r8 = _mm256_mul_pd(r4, r4);
#define G1_PAIR(c0, c1, y) _mm256_add_pd(_mm256_set1_pd(c0), _mm256_mul_pd(_mm256_set1_pd(c1), y))
#define G1_MADD(a, b, y) _mm256_add_pd(a, _mm256_mul_pd(b, y))
    __m256d a0 = G1_PAIR(C[1], C[2], r), a1 = G1_PAIR(C[3], C[4], r), a2 = G1_PAIR(C[5], C[6], r);
    __m256d a3 = G1_PAIR(C[7], C[8], r), a4 = G1_PAIR(C[9], C[10], r), a5 = G1_PAIR(C[11], C[12], r);
    __m256d b0 = G1_MADD(a0, a1, r2), b1 = G1_MADD(a2, a3, r2), b2 = G1_MADD(a4, a5, r2);
    __m256d u = G1_MADD(G1_MADD(b0, b1, r4), G1_MADD(b2, _mm256_set1_pd(C[13]), r4), r8);
    __m256d q = G1_MADD(_mm256_set1_pd(1.0), r, u);
#undef G1_PAIR
#undef G1_MADD
    __m256d h = _mm256_add_pd(_mm256_mul_pd(n, _mm256_set1_pd(0.5)), shift);
    __m256i hb = _mm256_castpd_si256(h), tb = _mm256_castpd_si256(t);
    __m256i s1 = _mm256_slli_epi64(_mm256_add_epi64(hb, _mm256_set1_epi64x((long long)(1023 - bits_of(SHIFT)))), 52);
    __m256i s2 = _mm256_slli_epi64(_mm256_add_epi64(_mm256_sub_epi64(tb, hb), _mm256_set1_epi64x(1023)), 52);
    return _mm256_mul_pd(_mm256_mul_pd(q, _mm256_castsi256_pd(s1)), _mm256_castsi256_pd(s2));
}
#endif

#if defined(__AVX512F__)
static inline __m512d expd8(__m512d x)
{
    const __m512d shift = _mm512_set1_pd(SHIFT);
    x = _mm512_max_pd(x, _mm512_set1_pd(EXP_MIN));
    __m512d t = _mm512_add_pd(_mm512_mul_pd(x, _mm512_set1_pd(LOG2E)), shift);
    __m512d n = _mm512_sub_pd(t, shift);
    __m512d r = _mm512_sub_pd(x, _mm512_mul_pd(n, _mm512_set1_pd(LN2_HI)));
    r = _mm512_sub_pd(r, _mm512_mul_pd(n, _mm512_set1_pd(LN2_LO)));
    __m512d r2 = _mm512_mul_pd(r, r), r4 = _mm512_mul_pd(r2, r2), r8 = _mm512_mul_pd(r4, r4);
#define G1_PAIR(c0, c1, y) _mm512_add_pd(_mm512_set1_pd(c0), _mm512_mul_pd(_mm512_set1_pd(c1), y))
#define G1_MADD(a, b, y) _mm512_add_pd(a, _mm512_mul_pd(b, y))
    __m512d a0 = G1_PAIR(C[1], C[2], r), a1 = G1_PAIR(C[3], C[4], r), a2 = G1_PAIR(C[5], C[6], r);
    __m512d a3 = G1_PAIR(C[7], C[8], r), a4 = G1_PAIR(C[9], C[10], r), a5 = G1_PAIR(C[11], C[12], r);
    __m512d b0 = G1_MADD(a0, a1, r2), b1 = G1_MADD(a2, a3, r2), b2 = G1_MADD(a4, a5, r2);
    __m512d u = G1_MADD(G1_MADD(b0, b1, r4), G1_MADD(b2, _mm512_set1_pd(C[13]), r4), r8);
    __m512d q = G1_MADD(_mm512_set1_pd(1.0), r, u);
#undef G1_PAIR
#undef G1_MADD
    __m512d h = _mm512_add_pd(_mm512_mul_pd(n, _mm512_set1_pd(0.5)), shift);
    __m512i hb = _mm512_castpd_si512(h), tb = _mm512_castpd_si512(t);
    __m512i s1 = _mm512_slli_epi64(_mm512_add_epi64(hb, _mm512_set1_epi64((long long)(1023 - bits_of(SHIFT)))), 52);
    __m512i s2 = _mm512_slli_epi64(_mm512_add_epi64(_mm512_sub_epi64(tb, hb), _mm512_set1_epi64(1023)), 52);
    return _mm512_mul_pd(_mm512_mul_pd(q, _mm512_castsi512_pd(s1)), _mm512_castsi512_pd(s2));
}
#endif

int32_t g1_row_max(const float *l, int32_t V, float *max)
{
    int32_t i = 0;
    float mx = -INFINITY;
    int bad = 0;
#if defined(__AVX512F__)
    __m512 m0 = _mm512_set1_ps(-INFINITY), m1 = m0;
    const __m512 inf = _mm512_set1_ps(INFINITY);
    __mmask16 b = 0;
    for (; i + 32 <= V; i += 32) {
        __m512 v0 = _mm512_loadu_ps(l + i), v1 = _mm512_loadu_ps(l + i + 16);
        m0 = _mm512_max_ps(m0, v0);
        m1 = _mm512_max_ps(m1, v1);
        b |= _mm512_cmp_ps_mask(v0, inf, _CMP_NLT_UQ) | _mm512_cmp_ps_mask(v1, inf, _CMP_NLT_UQ);
    }
    mx = _mm512_reduce_max_ps(_mm512_max_ps(m0, m1));
    bad = b != 0;
#elif defined(__AVX2__)
    __m256 m0 = _mm256_set1_ps(-INFINITY), m1 = m0, b = _mm256_setzero_ps();
    const __m256 inf = _mm256_set1_ps(INFINITY);
    for (; i + 16 <= V; i += 16) {
        __m256 v0 = _mm256_loadu_ps(l + i), v1 = _mm256_loadu_ps(l + i + 8);
        m0 = _mm256_max_ps(m0, v0);
        m1 = _mm256_max_ps(m1, v1);
        b = _mm256_or_ps(b, _mm256_or_ps(_mm256_cmp_ps(v0, inf, _CMP_NLT_UQ), _mm256_cmp_ps(v1, inf, _CMP_NLT_UQ)));
    }
    float lanes[8];
    _mm256_storeu_ps(lanes, _mm256_max_ps(m0, m1));
    for (int j = 0; j < 8; j++)
        mx = lanes[j] > mx ? lanes[j] : mx;
    bad = _mm256_movemask_ps(b) != 0;
#endif
    for (; i < V; i++) {
        bad |= !(l[i] < INFINITY);
        mx = l[i] > mx ? l[i] : mx;
    }
    if (bad)
        for (i = 0; i < V; i++)
            if (!(l[i] < INFINITY))
                return i;
    *max = mx;
    return -1;
}

int32_t g1_row_first(const float *l, int32_t V, float v)
{
    int32_t i = 0;
#if defined(__AVX512F__)
    const __m512 w = _mm512_set1_ps(v);
    for (; i + 16 <= V; i += 16) {
        __mmask16 m = _mm512_cmp_ps_mask(_mm512_loadu_ps(l + i), w, _CMP_EQ_OQ);
        if (m)
            return i + __builtin_ctz(m);
    }
#elif defined(__AVX2__)
    const __m256 w = _mm256_set1_ps(v);
    for (; i + 8 <= V; i += 8) {
        int m = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(l + i), w, _CMP_EQ_OQ));
        if (m)
            return i + __builtin_ctz((unsigned)m);
    }
#endif
    for (; i < V; i++)
        if (l[i] == v)
            return i;
    return V;
}

double g1_row_exp(const float *l, int32_t V, double mx, double t, double *p, int32_t *nnz)
{
    double s[8] = {0};
    int32_t i = 0, count = 0;
    int div = t != 1.0;
#if defined(__AVX512F__)
    const __m512d vmx = _mm512_set1_pd(mx), vt = _mm512_set1_pd(t), zero = _mm512_setzero_pd();
    __m512d acc = zero;
    for (; i + 8 <= V; i += 8) {
        __m512d x = _mm512_sub_pd(_mm512_cvtps_pd(_mm256_loadu_ps(l + i)), vmx);
        if (div)
            x = _mm512_div_pd(x, vt);
        __m512d e = expd8(x);
        if (p)
            _mm512_storeu_pd(p + i, e);
        acc = _mm512_add_pd(acc, e);
        count += __builtin_popcount(_mm512_cmp_pd_mask(e, zero, _CMP_GT_OQ));
    }
    _mm512_storeu_pd(s, acc);
#elif defined(__AVX2__)
    const __m256d vmx = _mm256_set1_pd(mx), vt = _mm256_set1_pd(t), zero = _mm256_setzero_pd();
    __m256d a0 = zero, a1 = zero;
    for (; i + 8 <= V; i += 8) {
        __m256 v = _mm256_loadu_ps(l + i);
        __m256d x0 = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(v)), vmx);
        __m256d x1 = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)), vmx);
        if (div) {
            x0 = _mm256_div_pd(x0, vt);
            x1 = _mm256_div_pd(x1, vt);
        }
        __m256d e0 = expd4(x0), e1 = expd4(x1);
        if (p) {
            _mm256_storeu_pd(p + i, e0);
            _mm256_storeu_pd(p + i + 4, e1);
        }
        a0 = _mm256_add_pd(a0, e0);
        a1 = _mm256_add_pd(a1, e1);
        count += __builtin_popcount((unsigned)(_mm256_movemask_pd(_mm256_cmp_pd(e0, zero, _CMP_GT_OQ)) |
                                               _mm256_movemask_pd(_mm256_cmp_pd(e1, zero, _CMP_GT_OQ)) << 4));
    }
    _mm256_storeu_pd(s, a0);
    _mm256_storeu_pd(s + 4, a1);
#endif
    for (; i < V; i++) { /* the portable path, and the vector paths' tail */
        double x = (double)l[i] - mx;
        double e = g1_expd(div ? x / t : x);
        if (p)
            p[i] = e;
        s[i & 7] += e;
        count += e > 0;
    }
    if (nnz)
        *nnz = count;
    return ((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s[7]));
}
