/* Small per-token CPU kernels: RMSNorm, RoPE, GELU x linear, router top-k. */
#include <math.h>

#include "cpu.h"

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#endif

float g1_cpu_dot(const float *a, const float *b, int n)
{
#if defined(__AVX512F__)
    __m512 acc = _mm512_setzero_ps();
    int i = 0;
    for (; i + 16 <= n; i += 16)
        acc = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc);
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), acc);
    }
    return _mm512_reduce_add_ps(acc);
#elif defined(__AVX2__) && defined(__FMA__)
    /* the same 16 lanes as two vectors, the same reduction tree as GCC's
     * _mm512_reduce_add_ps: (i + i+8), (i + i+4), (i + i+2), (0 + 1) */
    __m256 lo = _mm256_setzero_ps(), hi = _mm256_setzero_ps();
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        lo = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), lo);
        hi = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), hi);
    }
    if (i < n) {
        int r = n - i;
        __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        __m256i m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32(r), lane);
        __m256i m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32(r - 8), lane);
        lo = _mm256_fmadd_ps(_mm256_maskload_ps(a + i, m0), _mm256_maskload_ps(b + i, m0), lo);
        if (r > 8)
            hi = _mm256_fmadd_ps(_mm256_maskload_ps(a + i + 8, m1), _mm256_maskload_ps(b + i + 8, m1), hi);
        else /* AVX-512's masked step adds 0 * 0 to these lanes too (a -0 becomes +0) */
            hi = _mm256_fmadd_ps(_mm256_setzero_ps(), _mm256_setzero_ps(), hi);
    }
    __m256 t3 = _mm256_add_ps(hi, lo);
    __m128 t6 = _mm_add_ps(_mm256_extractf128_ps(t3, 1), _mm256_castps256_ps128(t3));
    __m128 t8 = _mm_add_ps(t6, _mm_shuffle_ps(t6, t6, _MM_SHUFFLE(1, 0, 3, 2)));
    return _mm_cvtss_f32(t8) + _mm_cvtss_f32(_mm_shuffle_ps(t8, t8, 1));
#else
    float s = 0;
    for (int i = 0; i < n; i++)
        s = fmaf(a[i], b[i], s);
    return s;
#endif
}

void g1_cpu_rmsnorm(const float *x, int T, int D, const float *scale, float eps, float *out)
{
#pragma omp parallel for schedule(static) if (T > 8)
    for (int t = 0; t < T; t++) {
        const float *xr = x + (size_t)t * D;
        float *o = out + (size_t)t * D;
        double ss = 0;
        for (int d = 0; d < D; d++)
            ss += (double)xr[d] * xr[d];
        float inv = (float)(1.0 / sqrt(ss / D + (double)eps));
        for (int d = 0; d < D; d++)
            o[d] = scale[d] * (xr[d] * inv);
    }
}

void g1_cpu_rope(float *v, int T, int heads, int K, const int *pos, double base)
{
    int half = K / 2;
#pragma omp parallel for schedule(static) if (T > 8)
    for (int t = 0; t < T; t++) {
        float cs[1024], sn[1024]; /* K/2 <= 1024 checked by the engine */
        for (int i = 0; i < half; i++) {
            double inv_freq = 1.0 / pow(base, (2.0 * i) / K);
            double th = (double)pos[t] * inv_freq;
            cs[i] = (float)cos(th);
            sn[i] = (float)sin(th);
        }
        for (int h = 0; h < heads; h++) {
            float *p = v + ((size_t)t * heads + h) * K;
            for (int i = 0; i < half; i++) {
                float a = p[i], b = p[i + half];
                /* out[j] = in[j] cos + r[j] sin, r = concat(-in[half:], in[:half]) */
                p[i] = a * cs[i] - b * sn[i];
                p[i + half] = b * cs[i] + a * sn[i];
            }
        }
    }
}

void g1_cpu_gelu_mul(const float *a, const float *b, size_t n, float *out)
{
    const float k0 = 0.7978845608028654f; /* sqrt(2 / pi) */
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) {
        float x = a[i];
        /* 0.5 x (1 + tanh(u)) == x / (1 + exp(-2u)): same function, no
         * cancellation for negative x */
        float g = x / (1.0f + expf(-2.0f * k0 * (x + 0.044715f * x * x * x)));
        out[i] = g * b[i];
    }
}

void g1_cpu_router(const float *x, int T, int D, const float *Wr, int E, int k, int *idx, float *gate)
{
    for (int t = 0; t < T; t++) {
        double logit[256], p[256], mx = -INFINITY, sum = 0;
        const float *xr = x + (size_t)t * D;
        for (int e = 0; e < E; e++)
            logit[e] = 0;
        for (int d = 0; d < D; d++)
            for (int e = 0; e < E; e++)
                logit[e] += (double)xr[d] * Wr[(size_t)d * E + e];
        for (int e = 0; e < E; e++)
            mx = logit[e] > mx ? logit[e] : mx;
        for (int e = 0; e < E; e++)
            sum += (p[e] = exp(logit[e] - mx));
        /* top-k by probability, ties to the lower index; the gates are the
         * full-softmax probabilities, NOT renormalised over the k chosen */
        unsigned char taken[256] = {0};
        for (int j = 0; j < k; j++) {
            int best = -1;
            for (int e = 0; e < E; e++)
                if (!taken[e] && (best < 0 || p[e] > p[best]))
                    best = e;
            if (best < 0) /* k > E, which g1_config_validate refuses (said for analysers) */
                break;
            taken[best] = 1;
            idx[(size_t)t * k + j] = best;
            gate[(size_t)t * k + j] = (float)(p[best] / sum);
        }
    }
}
