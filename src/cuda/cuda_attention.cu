// Causal attention with the Grok-1 soft cap over the device KV caches:
// s = cap * tanh(q.k * mult / cap), softmax in float32, weighted sum of v.
// One block per (token, kv head, key split) for up to 8 of the kv head's q
// heads; a second kernel merges the splits (flash-decoding). Prefill and decode take the same path; the split count
// depends only on the token's position, never on the batch.
#include <cuda_bf16.h>
#include <math.h>

#include "cuda_ops.h"

namespace {

const int NTHR = 128;          // threads per block: one output dimension each (K <= 256: two)
const int NWARP = NTHR / 32;
const int SUB = 32;            // keys per tile (shared memory)
const int HG = 2 * NWARP;      // q heads per block, all of one kv head (two per warp in the softmax)
const int KMAX = 256;
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

// Shared-memory row stride of a tile for K values: an odd number of 16-byte
// units, so the 16-byte loads of 8 lanes reading 8 different rows (one
// phase of a warp's 16-byte load) fall in 8 different bank groups.
__device__ __forceinline__ int tile_stride(int K)
{
    int w = (K + 3) / 4;
    return 4 * (w % 2 ? w : w + 1);
}

// grid (T, Hkv * hgroups, max_splits): the q heads [h0, h0 + nh) (at most
// HG) of kv head g, over the keys of split j. Each tile of SUB keys is read
// from the cache once into shared memory and scored against every head of
// the block, then its values are read once and added to every head's sums
// (a kv head's keys and values are read once for its G q heads, not G
// times). Scores: lane i of warp w takes key i for heads w and w + NWARP,
// 16 bytes of the key and of each q at a time, and keeps both scores in
// registers for the online softmax (a warp per head, a lane per key). Sums:
// a thread per output dimension (two for K > 128) for every head, the
// exponentials read 4 keys at a time. Writes (o[K] unnormalised, max, sum)
// per head and split.
template <typename E>
__global__ void __launch_bounds__(NTHR) attn_split_k(g1_cuda_attn_args a)
{
    __shared__ __align__(16) float tile[SUB * (KMAX + 4)]; // keys, then values, rows tile_stride(K) apart
    __shared__ __align__(16) float q[HG][KMAX];
    __shared__ __align__(16) float s[HG][SUB];             // each key's exponential for each head
    __shared__ float rs[HG];                               // each head's rescale of its sums so far
    int G = a.Hq / a.Hkv, hgroups = (G + HG - 1) / HG;
    int t = blockIdx.x, g = blockIdx.y / hgroups, h0 = g * G + (blockIdx.y % hgroups) * HG;
    int nh = min(HG, g * G + G - h0), j = blockIdx.z, K = a.K, KP = tile_stride(K), kvw = a.Hkv * K;
    int n = a.kv.pos[t] + 1, nsp = n_splits(n, a.max_splits);
    if (j >= nsp) // the whole block: no thread reaches a barrier
        return;
    int chunk = (n + nsp - 1) / nsp, k0 = j * chunk, k1 = min(n, k0 + chunk);
    size_t base = (size_t)a.kv.layer * a.kv.lstride[t] + (size_t)g * K;
    const E *kc = static_cast<const E *>(a.kv.k0[t]) + base, *vc = static_cast<const E *>(a.kv.v0[t]) + base;
    for (int i = threadIdx.x; i < nh * K; i += NTHR)
        q[i / K][i % K] = a.q[((size_t)t * a.Hq + h0) * K + i];
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, d0 = threadIdx.x, d1 = threadIdx.x + NTHR;
    int K4 = K / 4 * 4;
    float mh[2] = {-INFINITY, -INFINITY}, lh[2] = {0, 0}; // heads warp and warp + NWARP (the warp's lanes agree)
    float acc[HG][2];
#pragma unroll
    for (int h = 0; h < HG; h++)
        acc[h][0] = acc[h][1] = 0;
    for (int kb = k0; kb < k1; kb += SUB) {
        int nb = min(SUB, k1 - kb);
        for (int r = warp; r < nb; r += NWARP) // a warp per key row, lanes along it
            for (int d = lane; d < K; d += 32)
                tile[r * KP + d] = ld(kc + (size_t)(kb + r) * kvw, d);
        __syncthreads(); // the keys (and, the first time, q) are in place
        float sc[2] = {0, 0};
        if (lane < nb && warp < nh) { // the warp's second head, if it has one, in the same pass
            const float *kr = tile + lane * KP, *qa = q[warp], *qb = q[warp + NWARP < nh ? warp + NWARP : warp];
            int d = 0;
            for (; d < K4; d += 4) {
                float4 kv = *reinterpret_cast<const float4 *>(kr + d);
                float4 x = *reinterpret_cast<const float4 *>(qa + d), y = *reinterpret_cast<const float4 *>(qb + d);
                sc[0] += x.x * kv.x;
                sc[0] += x.y * kv.y;
                sc[0] += x.z * kv.z;
                sc[0] += x.w * kv.w;
                sc[1] += y.x * kv.x;
                sc[1] += y.y * kv.y;
                sc[1] += y.z * kv.z;
                sc[1] += y.w * kv.w;
            }
            for (; d < K; d++) {
                sc[0] += qa[d] * kr[d];
                sc[1] += qb[d] * kr[d];
            }
        }
#pragma unroll
        for (int hh = 0; hh < 2; hh++) { // online softmax: a warp per head
            int h = warp + hh * NWARP;
            if (h < nh) { // the same for every lane of the warp
                float x = lane < nb ? a.cap * tanhf(sc[hh] * a.mult / a.cap) : -INFINITY, mx = x;
                for (int o = 16; o > 0; o >>= 1)
                    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
                float mb = fmaxf(mh[hh], mx), r = expf(mh[hh] - mb); // r is 0 on the first tile
                float p = lane < nb ? expf(x - mb) : 0.0f, sum = p;
                for (int o = 16; o > 0; o >>= 1)
                    sum += __shfl_xor_sync(0xffffffffu, sum, o);
                s[h][lane] = p;
                if (lane == 0)
                    rs[h] = r;
                lh[hh] = lh[hh] * r + sum;
                mh[hh] = mb;
            }
        }
        __syncthreads(); // the exponentials and the rescales are in place; the keys are no longer read
        for (int r = warp; r < nb; r += NWARP)
            for (int d = lane; d < K; d += 32)
                tile[r * KP + d] = ld(vc + (size_t)(kb + r) * kvw, d);
        __syncthreads(); // the values are in place
#pragma unroll
        for (int h = 0; h < HG; h++)
            if (h < nh) {
                acc[h][0] *= rs[h];
                acc[h][1] *= rs[h];
            }
        for (int i = 0; i < nb; i += 4) { // s is 0 past nb (a whole tile's row of 32 is written)
            float v0[4], v1[4];
#pragma unroll
            for (int u = 0; u < 4; u++) {
                v0[u] = d0 < K && i + u < nb ? tile[(i + u) * KP + d0] : 0.0f;
                v1[u] = d1 < K && i + u < nb ? tile[(i + u) * KP + d1] : 0.0f;
            }
#pragma unroll
            for (int h = 0; h < HG; h++)
                if (h < nh) {
                    float4 p = *reinterpret_cast<const float4 *>(&s[h][i]);
                    acc[h][0] += p.x * v0[0];
                    acc[h][0] += p.y * v0[1];
                    acc[h][0] += p.z * v0[2];
                    acc[h][0] += p.w * v0[3];
                    acc[h][1] += p.x * v1[0];
                    acc[h][1] += p.y * v1[1];
                    acc[h][1] += p.z * v1[2];
                    acc[h][1] += p.w * v1[3];
                }
        }
        __syncthreads(); // the tile, s and rs are rewritten by the next pass
    }
#pragma unroll
    for (int h = 0; h < HG; h++)
        if (h < nh) {
            float *out = a.part + (((size_t)t * a.Hq + h0 + h) * a.max_splits + j) * (K + 2);
            if (d0 < K)
                out[d0] = acc[h][0];
            if (d1 < K)
                out[d1] = acc[h][1];
        }
#pragma unroll
    for (int hh = 0; hh < 2; hh++) {
        int h = warp + hh * NWARP;
        if (h < nh && lane == 0) {
            float *out = a.part + (((size_t)t * a.Hq + h0 + h) * a.max_splits + j) * (K + 2);
            out[K] = mh[hh];
            out[K + 1] = lh[hh];
        }
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
    if (a->K > 2 * NTHR || a->K > KMAX || a->Hq % a->Hkv)
        return cudaErrorInvalidValue;
    if (a->T <= 0)
        return cudaSuccess;
    int G = a->Hq / a->Hkv, hgroups = (G + HG - 1) / HG;
    dim3 grid((unsigned)a->T, (unsigned)(a->Hkv * hgroups), (unsigned)a->max_splits);
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
