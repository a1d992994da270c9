// Causal attention with the Grok-1 soft cap over the device KV caches:
// s = cap * tanh(q.k * mult / cap), softmax in float32, weighted sum of v.
// One block per (tile of a sequence's tokens, kv head, key split) for the
// kv head's q heads; a second kernel merges the splits (flash-decoding).
// Prefill and decode take the same path; the splits depend only on the
// token's position, never on the batch.
#include <cuda_bf16.h>
#include <math.h>

#include "cuda_ops.h"

namespace {

const int NTHR = 256;       // threads per block
const int NWARP = NTHR / 32;
const int SUB = 32;         // keys per tile (shared memory)
const int KMAX = 256;
const int MIN_CHUNK = 64;   // keys of a split at the least

// Rows (token, q head) a block takes for keys padded to KD: q and the
// tile must fit 48 KB of shared memory.
__host__ __device__ constexpr int max_rows(int KD) { return KD == 256 ? 8 : 32; }

// Splits of a token at n keys: chunks of `chunk` keys from key 0.
__device__ int n_splits(int n, int chunk) { return (n + chunk - 1) / chunk; }

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

// grid (tiles, Hkv * hgroups, max_splits). A block takes the rows (token,
// q head) of a tile of tokens of one sequence (a.tiles: first token and
// count; NULL: a token a tile) and up to nh q heads of kv head g, over
// split j's keys [j * chunk, (j + 1) * chunk), each row up to its own
// token's position. Each tile of SUB keys is read from the cache once into
// shared memory for every row of the block (the q heads of a kv head, the
// queries of a prompt), then its values likewise. Scores: lane i of warp w
// takes key i for rows w, w + 8, ...; the online softmax stays in
// registers, a warp per row. Sums: a thread per output dimension and a
// share of the rows, the exponentials read 4 keys at a time. A row's
// arithmetic is the same whatever else shares its block, so a token's
// result does not depend on its batch. Writes (o[K] unnormalised, max,
// sum) per row and split.
template <typename E, int KD>
__global__ void __launch_bounds__(NTHR, 2) attn_split_k(g1_cuda_attn_args a)
{
    const int MR = max_rows(KD), RPW = MR / NWARP, GR = NTHR / KD, APT = MR / GR;
    __shared__ __align__(16) float tile[SUB * (KD + 4)]; // keys, then values, rows tile_stride(K) apart
    __shared__ __align__(16) float q[MR][KD];
    __shared__ __align__(16) float s[MR][SUB];           // each key's exponential for each row
    __shared__ float rs[MR];                             // each row's rescale of its sums so far
    __shared__ int nrow[MR];                             // each row's keys (its token's position + 1)
    int G = a.Hq / a.Hkv, hpb = min(G, MR), hgroups = (G + hpb - 1) / hpb;
    int t0 = a.tiles ? a.tiles[2 * blockIdx.x] : (int)blockIdx.x, nq = a.tiles ? a.tiles[2 * blockIdx.x + 1] : 1;
    int g = blockIdx.y / hgroups, h0 = g * G + (blockIdx.y % hgroups) * hpb, nh = min(hpb, g * G + G - h0);
    int R = nq * nh, j = blockIdx.z, K = a.K, KP = tile_stride(K), kvw = a.Hkv * K;
    int nmax = 0;
    for (int qi = 0; qi < nq; qi++)
        nmax = max(nmax, a.kv.pos[t0 + qi] + 1);
    int k0 = j * a.chunk, k1 = min(nmax, k0 + a.chunk);
    if (k0 >= k1) // the whole block: no thread reaches a barrier
        return;
    size_t base = (size_t)a.kv.layer * a.kv.lstride[t0] + (size_t)g * K; // the tile's tokens share a cache
    const E *kc = static_cast<const E *>(a.kv.k0[t0]) + base, *vc = static_cast<const E *>(a.kv.v0[t0]) + base;
    for (int i = threadIdx.x; i < R * K; i += NTHR) { // row r = token qi's head hi
        int r = i / K, d = i - r * K, qi = r / nh, hi = r - qi * nh;
        q[r][d] = a.q[((size_t)(t0 + qi) * a.Hq + h0 + hi) * K + d];
    }
    for (int r = threadIdx.x; r < R; r += NTHR)
        nrow[r] = min(a.kv.pos[t0 + r / nh] + 1, k0 + a.chunk);
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, d = threadIdx.x % KD, gr = threadIdx.x / KD;
    int K4 = K / 4 * 4;
    float mh[RPW], lh[RPW], acc[APT];
#pragma unroll
    for (int u = 0; u < RPW; u++)
        mh[u] = -INFINITY, lh[u] = 0;
#pragma unroll
    for (int u = 0; u < APT; u++)
        acc[u] = 0;
    for (int kb = k0; kb < k1; kb += SUB) {
        int nb = min(SUB, k1 - kb);
        for (int r = warp; r < nb; r += NWARP) // a warp per key row, lanes along it
            for (int dd = lane; dd < K; dd += 32)
                tile[r * KP + dd] = ld(kc + (size_t)(kb + r) * kvw, dd);
        __syncthreads(); // the keys (and, the first time, q and nrow) are in place
        const float *kr = tile + lane * KP;
#pragma unroll
        for (int u = 0; u < RPW; u++) { // a warp per row: scores, then the online softmax
            int r = warp + u * NWARP;
            if (r < R && kb < nrow[r]) { // the same for every lane of the warp
                int nbr = min(nb, nrow[r] - kb);
                float sc = 0;
                if (lane < nbr) {
                    const float *qr = q[r];
                    int dd = 0;
                    for (; dd < K4; dd += 4) {
                        float4 kv = *reinterpret_cast<const float4 *>(kr + dd);
                        float4 x = *reinterpret_cast<const float4 *>(qr + dd);
                        sc += x.x * kv.x;
                        sc += x.y * kv.y;
                        sc += x.z * kv.z;
                        sc += x.w * kv.w;
                    }
                    for (; dd < K; dd++)
                        sc += qr[dd] * kr[dd];
                }
                float x = lane < nbr ? a.cap * tanhf(sc * a.mult / a.cap) : -INFINITY, mx = x;
                for (int o = 16; o > 0; o >>= 1)
                    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
                float mb = fmaxf(mh[u], mx), rsc = expf(mh[u] - mb); // 0 on the row's first tile
                float p = lane < nbr ? expf(x - mb) : 0.0f, sum = p;
                for (int o = 16; o > 0; o >>= 1)
                    sum += __shfl_xor_sync(0xffffffffu, sum, o);
                s[r][lane] = p;
                if (lane == 0)
                    rs[r] = rsc;
                lh[u] = lh[u] * rsc + sum;
                mh[u] = mb;
            }
        }
        __syncthreads(); // the exponentials and the rescales are in place; the keys are no longer read
        for (int r = warp; r < nb; r += NWARP)
            for (int dd = lane; dd < K; dd += 32)
                tile[r * KP + dd] = ld(vc + (size_t)(kb + r) * kvw, dd);
        __syncthreads(); // the values are in place
        if (d < K) {
#pragma unroll
            for (int u = 0; u < APT; u++) {
                int r = gr + u * GR;
                if (r < R && kb < nrow[r]) {
                    int nbr = min(nb, nrow[r] - kb);
                    float o = acc[u] * rs[r];
                    for (int i = 0; i < nbr; i += 4) {
                        float4 p = *reinterpret_cast<const float4 *>(&s[r][i]);
                        o += p.x * tile[i * KP + d];
                        if (i + 1 < nbr)
                            o += p.y * tile[(i + 1) * KP + d];
                        if (i + 2 < nbr)
                            o += p.z * tile[(i + 2) * KP + d];
                        if (i + 3 < nbr)
                            o += p.w * tile[(i + 3) * KP + d];
                    }
                    acc[u] = o;
                }
            }
        }
        __syncthreads(); // the tile, s and rs are rewritten by the next pass
    }
#pragma unroll
    for (int u = 0; u < APT; u++) {
        int r = gr + u * GR;
        if (r < R && d < K && k0 < nrow[r]) {
            int qi = r / nh, hi = r - qi * nh;
            float *out = a.part + (((size_t)(t0 + qi) * a.Hq + h0 + hi) * a.max_splits + j) * (K + 2);
            out[d] = acc[u];
        }
    }
#pragma unroll
    for (int u = 0; u < RPW; u++) {
        int r = warp + u * NWARP;
        if (r < R && lane == 0 && k0 < nrow[r]) {
            int qi = r / nh, hi = r - qi * nh;
            float *out = a.part + (((size_t)(t0 + qi) * a.Hq + h0 + hi) * a.max_splits + j) * (K + 2);
            out[K] = mh[u];
            out[K + 1] = lh[u];
        }
    }
}

// grid (T, Hq): out = sum_j e^(m_j - M) o_j / sum_j e^(m_j - M) l_j
__global__ void attn_merge_k(g1_cuda_attn_args a)
{
    int t = blockIdx.x, h = blockIdx.y, K = a.K;
    int nsp = min(n_splits(a.kv.pos[t] + 1, a.chunk), a.max_splits); // the chunk keeps it within (engine.c bounds pos)
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

static int key_pad(int K) { return K <= 32 ? 32 : K <= 64 ? 64 : K <= 128 ? 128 : 256; }

int g1_cuda_attn_chunk(int max_context, int max_splits)
{
    int ms = max_splits < 1 ? 1 : max_splits, c = (max_context + ms - 1) / ms;
    c = (c + SUB - 1) / SUB * SUB;
    return c < MIN_CHUNK ? MIN_CHUNK : c;
}

int g1_cuda_attn_tile_tokens(int Hq, int Hkv, int K)
{
    int G = Hkv > 0 ? Hq / Hkv : 1, MR = max_rows(key_pad(K));
    return G >= MR ? 1 : MR / G;
}

cudaError_t g1_cuda_attention(cudaStream_t s, const g1_cuda_attn_args *a)
{
    if (a->K > KMAX || a->K < 1 || a->Hq % a->Hkv || a->chunk < 1)
        return cudaErrorInvalidValue;
    if (a->T <= 0)
        return cudaSuccess;
    int KD = key_pad(a->K), G = a->Hq / a->Hkv, hpb = G < max_rows(KD) ? G : max_rows(KD);
    int hgroups = (G + hpb - 1) / hpb, tiles = a->tiles ? a->n_tiles : a->T;
    dim3 grid((unsigned)tiles, (unsigned)(a->Hkv * hgroups), (unsigned)a->max_splits);
#define G1_ATTN(kd)                                                                                              \
    do {                                                                                                       \
        if (a->kv.bf16)                                                                                        \
            G1_LAUNCH((attn_split_k<__nv_bfloat16, kd>), grid, NTHR, s)(*a);                                   \
        else                                                                                                   \
            G1_LAUNCH((attn_split_k<float, kd>), grid, NTHR, s)(*a);                                           \
    } while (0)
    if (KD == 32)
        G1_ATTN(32);
    else if (KD == 64)
        G1_ATTN(64);
    else if (KD == 128)
        G1_ATTN(128);
    else
        G1_ATTN(256);
#undef G1_ATTN
    cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess)
        return err;
    G1_LAUNCH(attn_merge_k, dim3((unsigned)a->T, (unsigned)a->Hq), 128, s)(*a);
    return cudaGetLastError();
}

} // extern "C"
