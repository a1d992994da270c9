/* Causal attention with the Grok-1 soft cap over per-slot KV caches:
 * s = cap * tanh(q.k * mult / cap), softmax in float32, weighted sum of v.
 * One (token, head) pair per work item; fixed order within it. */
#include <math.h>
#include <stdlib.h>

#ifdef _OPENMP
#include <omp.h>
static int g1_thread_id(void) { return omp_get_thread_num(); }
#else
static int g1_thread_id(void) { return 0; }
#endif

#include "cpu.h"

void g1_cpu_attention(const g1_attn_args *a)
{
    int group = a->Hq / a->Hkv, K = a->K, kvw = a->Hkv * a->K;
    long items = (long)a->T * a->Hq;
#pragma omp parallel for schedule(dynamic, 4)
    for (long it = 0; it < items; it++) {
        int t = (int)(it / a->Hq), h = (int)(it % a->Hq), g = h / group;
        int n = a->pos[t] + 1;
        float *s = a->scores + (size_t)g1_thread_id() * a->scores_stride;
        float *o = a->out + ((size_t)t * a->Hq + h) * K;
            const float *q = a->q + ((size_t)t * a->Hq + h) * K;
            const float *kc = a->kc[t] + (size_t)g * K, *vc = a->vc[t] + (size_t)g * K;
            float mx = -INFINITY;
            for (int j = 0; j < n; j++) {
                float x = g1_cpu_dot(q, kc + (size_t)j * kvw, K) * a->mult;
                x = a->cap * tanhf(x / a->cap);
                s[j] = x;
                mx = x > mx ? x : mx;
            }
            float sum = 0;
            for (int j = 0; j < n; j++)
                sum += (s[j] = expf(s[j] - mx));
            float inv = 1.0f / sum;
            for (int d = 0; d < K; d++)
                o[d] = 0;
            for (int j = 0; j < n; j++) {
                float p = s[j] * inv;
                const float *v = vc + (size_t)j * kvw;
                for (int d = 0; d < K; d++)
                    o[d] += p * v[d];
            }
        }
}

int g1_cpu_threads(void)
{
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}
