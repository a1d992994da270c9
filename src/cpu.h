/* CPU kernels of the engine (float32 activations, OpenMP inside each call).
 * Every output element is computed by one thread in a fixed order that does
 * not depend on T, so a token's result never depends on its batch. */
#ifndef G1_CPU_H
#define G1_CPU_H

#include <stddef.h>
#include <stdint.h>

#include "weights.h"

/* y (T, W->cols) = x (T, W->rows) @ deq(W); deq = bf16(int8 * scale). */
void g1_cpu_matmul_q8(const float *x, int T, const g1_qmat *W, float *y);
/* y (T, N) = (x (T, D) . E^T) * mult, with E (N, D) bf16: the un-embedding. */
void g1_cpu_matmul_bf16_nt(const float *x, int T, int D, const uint16_t *E, int N, float mult, float *y);
/* out (T, D) = scale * x / sqrt(mean(x^2) + eps), row by row (out may be x). */
void g1_cpu_rmsnorm(const float *x, int T, int D, const float *scale, float eps, float *out);
/* Rotate-half RoPE in place on v (T, heads, K) at positions pos (T). */
void g1_cpu_rope(float *v, int T, int heads, int K, const int *pos, double base);
/* out (n) = gelu_tanh(a) * b (out may alias a). */
void g1_cpu_gelu_mul(const float *a, const float *b, size_t n, float *out);
/* Router: softmax(x (T, D) @ Wr (D, E)) and the top-k experts per token
 * (ties: lower index first); gate = their full-softmax probabilities. */
void g1_cpu_router(const float *x, int T, int D, const float *Wr, int E, int k, int *idx, float *gate);
/* The kernels this build has: "avx512", "avx2" or "portable" (-Dnative). */
const char *g1_cpu_kernels(void);
/* Dot product in a fixed order (exposed for tests). */
float g1_cpu_dot(const float *a, const float *b, int n);

/* Attention of T query tokens against their slots' caches (rows 0..pos).
 * q (T, Hq, K) roped; kc[t] / vc[t] point at the cache (len, Hkv, K) of
 * token t's slot; out (T, Hq, K). */
typedef struct g1_attn_args {
    int T, Hq, Hkv, K;
    const float *q;
    const float *const *kc;
    const float *const *vc;
    const int *pos;
    float mult, cap;
    float *scores;     /* (threads, scores_stride) scratch, stride >= max pos + 1 */
    size_t scores_stride;
    float *out;
} g1_attn_args;
void g1_cpu_attention(const g1_attn_args *a);
/* Threads the kernels may use (size of per-thread scratch). */
int g1_cpu_threads(void);

#endif
