// Causal attention with the Grok-1 soft cap over the device KV caches:
// s = cap * tanh(q.k * mult / cap), softmax in float32, weighted sum of v.
// One block per (token, head, key split); a second kernel merges the splits
// (flash-decoding). Prefill and decode take the same path; the split count
// depends only on the token's position, never on the batch.
#include <cuda_bf16.h>
#include <math.h>

#include "cuda_ops.h"

namespace {

const int NTHR = 128; // threads per block: one output dimension each (K <= 256: two)
const int SUB = 128;  // keys scored per pass (shared memory)
const int KEYS_PER_SPLIT = 64;

__device__ int n_splits(int n, int max_splits)
{
    int s = (n + KEYS_PER_SPLIT - 1) / KEYS_PER_SPLIT;
    return s < max_splits ? s : max_splits;
}

// A cache element: float32, or bf16 (to float32 exactly; from it rounded
// to nearest even).
__device__ __forceinline__ float ld(const float *p, size_t i) { return p[i]; }
__device__ __forceinline__ float ld(const __nv_bfloat16 *p, size_t i) { return __bfloat162float(p[i]); }
__device__ __forceinline__ void st(float *p, size_t i, float x) { p[i] = x; }
__device__ __forceinline__ void st(__nv_bfloat16 *p, size_t i, float x) { p[i] = __float2bfloat16_rn(x); }

template <typename E>
__global__ void kv_store_k(g1_cuda_kv kv, int kvw, const float *k, const float *v)
{
    int t = blockIdx.x;
    size_t off = (size_t)kv.layer * kv.lstride[t] + (size_t)kv.pos[t] * kvw;
    E *kd = static_cast<E *>(kv.k0[t]) + off, *vd = static_cast<E *>(kv.v0[t]) + off;
    for (int i = threadIdx.x; i < kvw; i += blockDim.x) {
        st(kd, i, k[(size_t)t * kvw + i]);
        st(vd, i, v[(size_t)t * kvw + i]);
    }
}

// grid (T, Hq, max_splits); writes (o[K] unnormalised, max, sum) per split
template <typename E>
__global__ void attn_split_k(g1_cuda_attn_args a)
{
    __shared__ float q[256];
    __shared__ float s[SUB];
    int t = blockIdx.x, h = blockIdx.y, j = blockIdx.z, K = a.K, kvw = a.Hkv * a.K;
    int n = a.kv.pos[t] + 1, nsp = n_splits(n, a.max_splits);
    if (j >= nsp)
        return;
    int chunk = (n + nsp - 1) / nsp, k0 = j * chunk, k1 = min(n, k0 + chunk);
    int g = h / (a.Hq / a.Hkv);
    size_t base = (size_t)a.kv.layer * a.kv.lstride[t] + (size_t)g * K;
    const E *kc = static_cast<const E *>(a.kv.k0[t]) + base, *vc = static_cast<const E *>(a.kv.v0[t]) + base;
    for (int d = threadIdx.x; d < K; d += NTHR)
        q[d] = a.q[((size_t)t * a.Hq + h) * K + d];
    __syncthreads();
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    float m = -INFINITY, l = 0, acc0 = 0, acc1 = 0;
    int d0 = threadIdx.x, d1 = threadIdx.x + NTHR;
    for (int kb = k0; kb < k1; kb += SUB) {
        int nb = min(SUB, k1 - kb);
        for (int i = warp; i < nb; i += NTHR / 32) {
            const E *kr = kc + (size_t)(kb + i) * kvw;
            float p = 0;
            for (int d = lane; d < K; d += 32)
                p += q[d] * ld(kr, d);
            for (int o = 16; o > 0; o >>= 1)
                p += __shfl_xor_sync(0xffffffffu, p, o);
            if (lane == 0) {
                float x = p * a.mult;
                s[i] = a.cap * tanhf(x / a.cap);
            }
        }
        __syncthreads();
        float mb = m;
        for (int i = 0; i < nb; i++)
            mb = fmaxf(mb, s[i]);
        float r = expf(m - mb); // 0 on the first pass (m = -inf)
        l *= r;
        acc0 *= r;
        acc1 *= r;
        for (int i = 0; i < nb; i++) {
            float p = expf(s[i] - mb);
            l += p;
            const E *vr = vc + (size_t)(kb + i) * kvw;
            if (d0 < K)
                acc0 += p * ld(vr, d0);
            if (d1 < K)
                acc1 += p * ld(vr, d1);
        }
        m = mb;
        __syncthreads(); // s is rewritten by the next pass
    }
    float *out = a.part + (((size_t)t * a.Hq + h) * a.max_splits + j) * (K + 2);
    if (d0 < K)
        out[d0] = acc0;
    if (d1 < K)
        out[d1] = acc1;
    if (threadIdx.x == 0) {
        out[K] = m;
        out[K + 1] = l;
    }
}

// grid (T, Hq): out = sum_j e^(m_j - M) o_j / sum_j e^(m_j - M) l_j
__global__ void attn_merge_k(g1_cuda_attn_args a)
{
    int t = blockIdx.x, h = blockIdx.y, K = a.K;
    int nsp = n_splits(a.kv.pos[t] + 1, a.max_splits);
    const float *p = a.part + ((size_t)t * a.Hq + h) * a.max_splits * (K + 2);
    float M = -INFINITY, L = 0;
    for (int j = 0; j < nsp; j++)
        M = fmaxf(M, p[j * (K + 2) + K]);
    for (int j = 0; j < nsp; j++)
        L += expf(p[j * (K + 2) + K] - M) * p[j * (K + 2) + K + 1];
    float inv = 1.0f / L;
    for (int d = threadIdx.x; d < K; d += blockDim.x) {
        float o = 0;
        for (int j = 0; j < nsp; j++)
            o += expf(p[j * (K + 2) + K] - M) * p[j * (K + 2) + d];
        a.out[((size_t)t * a.Hq + h) * K + d] = o * inv;
    }
}

} // namespace

extern "C" {

cudaError_t g1_cuda_kv_store(cudaStream_t s, const g1_cuda_kv *kv, int T, int kvw, const float *k, const float *v)
{
    if (T <= 0)
        return cudaSuccess;
    if (kv->bf16)
        G1_LAUNCH(kv_store_k<__nv_bfloat16>, T, 256, s)(*kv, kvw, k, v);
    else
        G1_LAUNCH(kv_store_k<float>, T, 256, s)(*kv, kvw, k, v);
    return cudaGetLastError();
}

cudaError_t g1_cuda_attention(cudaStream_t s, const g1_cuda_attn_args *a)
{
    if (a->K > 2 * NTHR || a->K > 256 || a->Hq % a->Hkv)
        return cudaErrorInvalidValue;
    if (a->T <= 0)
        return cudaSuccess;
    dim3 grid((unsigned)a->T, (unsigned)a->Hq, (unsigned)a->max_splits);
    if (a->kv.bf16)
        G1_LAUNCH(attn_split_k<__nv_bfloat16>, grid, NTHR, s)(*a);
    else
        G1_LAUNCH(attn_split_k<float>, grid, NTHR, s)(*a);
    cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess)
        return err;
    G1_LAUNCH(attn_merge_k, dim3((unsigned)a->T, (unsigned)a->Hq), NTHR, s)(*a);
    return cudaGetLastError();
}

} // extern "C"
