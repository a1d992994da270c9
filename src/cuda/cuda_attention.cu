// Causal attention with the Grok-1 soft cap over the device KV caches:
// s = cap * tanh(q.k * mult / cap), softmax in float32, weighted sum of v.
// One block per (tile of a sequence's tokens, kv head, key split) for the
// kv head's q heads; a second kernel merges the splits (flash-decoding).
// The splits depend only on the token's position, never on the batch.
// Tiles of prompts in batches that take cuBLAS go to a tensor-core kernel
// (TF32), the rest to the float32 one; a token's result depends on which
// kernel its tile went to, never on what else shares the tile.
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

// What a block of grid (tiles, Hkv * hgroups, max_splits) takes: the tile
// of tokens t0 .. t0 + nq - 1 (a.tiles; NULL: token blockIdx.x alone), q
// heads h0 .. h0 + nh - 1 of kv head g (up to `rows` rows of token x q
// head a block), R = nq * nh rows, split j's keys [k0, k1) up to the
// tile's last position (k1 <= k0: nothing), and where the kv head's
// caches start for this layer (the tile's tokens share a sequence).
struct BlockTile {
    int t0, nq, g, h0, nh, R, j, k0, k1;
    size_t base;
};

__device__ __forceinline__ BlockTile block_tile(const g1_cuda_attn_args &a, int rows)
{
    BlockTile b;
    int G = a.Hq / a.Hkv, hpb = min(G, rows), hgroups = (G + hpb - 1) / hpb;
    b.t0 = a.tiles ? a.tiles[2 * blockIdx.x] : (int)blockIdx.x;
    b.nq = a.tiles ? a.tiles[2 * blockIdx.x + 1] : 1;
    b.g = blockIdx.y / hgroups;
    b.h0 = b.g * G + (blockIdx.y % hgroups) * hpb;
    b.nh = min(hpb, b.g * G + G - b.h0);
    b.R = b.nq * b.nh;
    b.j = blockIdx.z;
    int nmax = 0;
    for (int qi = 0; qi < b.nq; qi++)
        nmax = max(nmax, a.kv.pos[b.t0 + qi] + 1);
    b.k0 = b.j * a.chunk;
    b.k1 = min(nmax, b.k0 + a.chunk);
    b.base = (size_t)a.kv.layer * a.kv.lstride[b.t0] + (size_t)b.g * a.K;
    return b;
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
    const BlockTile bt = block_tile(a, MR);
    const int t0 = bt.t0, h0 = bt.h0, nh = bt.nh, R = bt.R, j = bt.j, k0 = bt.k0, k1 = bt.k1;
    if (k0 >= k1) // the whole block: no thread reaches a barrier
        return;
    int K = a.K, KP = tile_stride(K), kvw = a.Hkv * K;
    const E *kc = static_cast<const E *>(a.kv.k0[t0]) + bt.base, *vc = static_cast<const E *>(a.kv.v0[t0]) + bt.base;
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

// ---- tensor cores (prompts) ----------------------------------------------
//
// The same splits and partial sums as attn_split_k, on mma.sync m16n8k8
// TF32: q, k, the exponentials and v go in rounded to TF32 (10 bits of
// mantissa, float32's range: cvt.rna), the products are summed in float32;
// the soft cap, the masks and the online softmax stay float32 (the
// exponentials by __expf: its few ulp vanish in their rounding to TF32,
// 2^-11, and it takes about 200 fewer instructions a 32-key pass than
// expf in the K = 128 kernel's disassembly). For prompt-sized batches
// only (the engine: when the matmuls take bf16 inputs).

const int MMA_WARPS = 4;
const int MMA_THR = 32 * MMA_WARPS;
const int MMA_ROWS = 16 * MMA_WARPS; // rows (token, q head) of a block: 16 a warp
const int MMA_KT = 32;               // keys of a shared tile
const int MMA_KMAX = 128;            // head dimensions it takes (a multiple of 4)

// x rounded to TF32 (nearest, ties away from zero), as a float32 bit pattern.
__device__ __forceinline__ uint32_t tf32(float x)
{
#if defined(G1EMU_H)
    return ::g1emu::tf32_rna(x);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    uint32_t r;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
    return r;
#else
    return __float_as_uint(x);
#endif
}

// mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32, c += a . b, in the
// PTX fragment layout (g = lane / 4, t = lane % 4): a0 A[g][t], a1
// A[g+8][t], a2 A[g][t+4], a3 A[g+8][t+4]; b0 B[t][g], b1 B[t+4][g]; c0, c1
// C[g][2t, 2t+1], c2, c3 C[g+8][2t, 2t+1]. The callers map k index t to
// their element 2t and t + 4 to 2t + 1 (the order of a dot product's
// terms is free), so a lane's two A or B elements are neighbours in memory
// and a row of scores in C is a row of A for the next product as it is.
__device__ __forceinline__ void mma_tf32(float c[4], const uint32_t a[4], const uint32_t b[2])
{
#if defined(G1EMU_H)
    ::g1emu::mma_m16n8k8_tf32(c, a, b);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#elif defined(__CUDA_ARCH__)
    __trap(); // the host launches this kernel on compute capability 8.0 and later only
#endif
}

// 4 consecutive cache elements (K % 4 == 0: 16- or 8-byte aligned).
__device__ __forceinline__ float4 ld4(const float *p) { return *reinterpret_cast<const float4 *>(p); }
__device__ __forceinline__ float4 ld4(const __nv_bfloat16 *p)
{
    uint2 w = *reinterpret_cast<const uint2 *>(p);
    return make_float4(__uint_as_float(w.x << 16), __uint_as_float(w.x & 0xffff0000u), __uint_as_float(w.y << 16),
                       __uint_as_float(w.y & 0xffff0000u));
}

__device__ __forceinline__ uint4 tf32x4(float4 x) { return make_uint4(tf32(x.x), tf32(x.y), tf32(x.z), tf32(x.w)); }

// grid (tiles, Hkv * hgroups, max_splits), MMA_THR threads: as
// attn_split_k, for head dimensions K <= KD (K % 4 == 0; q, k and v
// padded with zeros to KD). Warp w takes rows 16w .. 16w + 15 of the tile
// (token-major, q head minor). Per tile of MMA_KT keys: the keys and the
// values (TF32, key-major) go to shared memory; each warp computes its
// 16 x MMA_KT scores on the tensor cores, soft-caps and masks them (a key
// past a row's position scores -inf), updates the row maxima and sums (a
// row's four lanes hold its partial sums, added at the end), rounds the
// exponentials to TF32 and adds exponentials x values on the tensor cores
// into its 16 x KD sums. Shared rows are padded so that the fragment
// loads have no bank conflicts (keys: 8 words mod 32, 8-byte loads;
// values: 4 words mod 32). A row's arithmetic does not depend on what
// else shares its block: the tensor core sums each row of A on its own,
// the key tiles start at the split's first key whatever the tile holds,
// and a key tile past a row's position leaves its sums as they were.
template <typename E, int KD>
__global__ void __launch_bounds__(MMA_THR, 2) attn_mma_k(g1_cuda_attn_args a)
{
    const int KS = KD + 8, VS = KD + 4; // words a key row, a value row
    const int NQ = KD / 8, NS = MMA_KT / 8, NO = KD / 8;
    __shared__ __align__(16) uint32_t ks[MMA_KT * KS];
    __shared__ __align__(16) uint32_t vs[MMA_KT * VS];
    const BlockTile bt = block_tile(a, MMA_ROWS);
    const int t0 = bt.t0, h0 = bt.h0, nh = bt.nh, R = bt.R, j = bt.j, k0 = bt.k0, k1 = bt.k1;
    if (k0 >= k1) // the whole block: no thread reaches a barrier
        return;
    int K = a.K, kvw = a.Hkv * K;
    const E *kc = static_cast<const E *>(a.kv.k0[t0]) + bt.base, *vc = static_cast<const E *>(a.kv.v0[t0]) + bt.base;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gq = lane >> 2, tq = lane & 3;
    // this lane's two rows: gq and gq + 8 of the warp's 16
    int rr[2], nr[2];
    const float *qrow[2];
    for (int u = 0; u < 2; u++) {
        int r = 16 * warp + gq + 8 * u, qi = r / nh, hi = r - qi * nh;
        rr[u] = r;
        nr[u] = r < R ? min(a.kv.pos[t0 + qi] + 1, k0 + a.chunk) : 0;
        qrow[u] = r < R ? a.q + ((size_t)(t0 + qi) * a.Hq + h0 + hi) * K : NULL;
    }
    int wn = max(nr[0], nr[1]); // keys any row of the warp takes
    for (int o = 16; o > 0; o >>= 1)
        wn = max(wn, __shfl_xor_sync(0xffffffffu, wn, o));
    // q: k step kq takes dimensions 8kq + 2t (A's column t) and 8kq + 2t + 1 (t + 4)
    uint32_t qa[NQ][4];
#pragma unroll
    for (int kq = 0; kq < NQ; kq++)
#pragma unroll
        for (int u = 0; u < 2; u++) {
            int dd = 8 * kq + 2 * tq;
            float2 x = qrow[u] && dd < K ? *reinterpret_cast<const float2 *>(qrow[u] + dd) : make_float2(0, 0);
            qa[kq][u] = tf32(x.x);
            qa[kq][u + 2] = tf32(x.y);
        }
    float acc[NO][4], m[2] = {-INFINITY, -INFINITY}, l[2] = {0, 0};
#pragma unroll
    for (int n = 0; n < NO; n++)
        acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0;
    for (int kb = k0; kb < k1; kb += MMA_KT) {
        int nb = min(MMA_KT, k1 - kb);
        // keys and values: row kk, dimensions 4c .. 4c + 3 a thread, consecutive threads along a row
        for (int i = threadIdx.x; i < MMA_KT * (KD / 4); i += MMA_THR) {
            int kk = i / (KD / 4), c = i - kk * (KD / 4);
            bool in = kk < nb && 4 * c < K;
            size_t off = (size_t)(kb + kk) * kvw + 4 * c;
            float4 zero = make_float4(0, 0, 0, 0);
            *reinterpret_cast<uint4 *>(&ks[kk * KS + 4 * c]) = tf32x4(in ? ld4(kc + off) : zero);
            *reinterpret_cast<uint4 *>(&vs[kk * VS + 4 * c]) = tf32x4(in ? ld4(vc + off) : zero);
        }
        __syncthreads(); // the tile is in place
        if (kb < wn) { // the same for the whole warp
            float sc[NS][4];
#pragma unroll
            for (int n = 0; n < NS; n++) {
                sc[n][0] = sc[n][1] = sc[n][2] = sc[n][3] = 0;
                const uint32_t *kr = ks + (8 * n + gq) * KS + 2 * tq;
#pragma unroll
                for (int kq = 0; kq < NQ; kq++) {
                    uint2 w = *reinterpret_cast<const uint2 *>(kr + 8 * kq);
                    uint32_t b[2] = {w.x, w.y};
                    mma_tf32(sc[n], qa[kq], b);
                }
            }
            // soft cap, mask, online softmax; element i of sc[n]: row u = i / 2, key kb + 8n + 2t + i % 2
            float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
            for (int n = 0; n < NS; n++)
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    int u = i >> 1, key = kb + 8 * n + 2 * tq + (i & 1);
                    float x = key < nr[u] ? a.cap * tanhf(sc[n][i] * a.mult / a.cap) : -INFINITY;
                    sc[n][i] = x;
                    mx[u] = fmaxf(mx[u], x);
                }
            float rs[2];
#pragma unroll
            for (int u = 0; u < 2; u++) {
                mx[u] = fmaxf(mx[u], __shfl_xor_sync(0xffffffffu, mx[u], 1));
                mx[u] = fmaxf(mx[u], __shfl_xor_sync(0xffffffffu, mx[u], 2));
                float mb = fmaxf(m[u], mx[u]);
                rs[u] = mb == -INFINITY ? 1.0f : __expf(m[u] - mb); // 0 on the row's first keys
                m[u] = mb;
                l[u] *= rs[u];
            }
#pragma unroll
            for (int n = 0; n < NO; n++) {
                acc[n][0] *= rs[0], acc[n][1] *= rs[0];
                acc[n][2] *= rs[1], acc[n][3] *= rs[1];
            }
            // exponentials x values: k step n takes keys kb + 8n + 2t (A's column t) and + 1 (t + 4),
            // which are this lane's own scores of key tile n
#pragma unroll
            for (int n = 0; n < NS; n++) {
                uint32_t pa[4];
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    int u = i >> 1;
                    uint32_t p = tf32(sc[n][i] == -INFINITY ? 0.0f : __expf(sc[n][i] - m[u]));
                    l[u] += __uint_as_float(p);
                    pa[(i & 1) * 2 + u] = p; // a0 (g, 2t), a1 (g+8, 2t), a2 (g, 2t+1), a3 (g+8, 2t+1)
                }
                const uint32_t *vr = vs + (8 * n + 2 * tq) * VS + gq;
#pragma unroll
                for (int o = 0; o < NO; o++) {
                    uint32_t b[2] = {vr[8 * o], vr[VS + 8 * o]};
                    mma_tf32(acc[o], pa, b);
                }
            }
        }
        __syncthreads(); // the tile is rewritten by the next pass
    }
#pragma unroll
    for (int u = 0; u < 2; u++) {
        l[u] += __shfl_xor_sync(0xffffffffu, l[u], 1);
        l[u] += __shfl_xor_sync(0xffffffffu, l[u], 2);
    }
#pragma unroll
    for (int u = 0; u < 2; u++) {
        int r = rr[u];
        if (r >= R || k0 >= nr[u])
            continue;
        int qi = r / nh, hi = r - qi * nh;
        float *out = a.part + (((size_t)(t0 + qi) * a.Hq + h0 + hi) * a.max_splits + j) * (K + 2);
#pragma unroll
        for (int n = 0; n < NO; n++) {
            int dd = 8 * n + 2 * tq;
            if (dd < K) {
                out[dd] = acc[n][2 * u];
                out[dd + 1] = acc[n][2 * u + 1];
            }
        }
        if (tq == 0) {
            out[K] = m[u];
            out[K + 1] = l[u];
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

int g1_cuda_attn_mma_tile_tokens(int Hq, int Hkv, int K)
{
    if (K < 1 || K > MMA_KMAX || K % 4 || Hkv < 1 || Hq % Hkv)
        return 0;
    int G = Hq / Hkv;
    return G >= MMA_ROWS ? 1 : MMA_ROWS / G;
}

int g1_cuda_attn_tiles(const int *slot, int T, int Hq, int Hkv, int K, int mma, int *tiles, int *n_mma)
{
    int small = g1_cuda_attn_tile_tokens(Hq, Hkv, K), big = mma ? g1_cuda_attn_mma_tile_tokens(Hq, Hkv, K) : 0;
    int most = big > small ? big : small, n = 0;
    for (int t = 0; t < T; t++) {
        if (n && slot[tiles[2 * n - 2]] == slot[t] && tiles[2 * n - 1] < most)
            tiles[2 * n - 1]++;
        else
            tiles[2 * n] = t, tiles[2 * n + 1] = 1, n++;
    }
    *n_mma = 0;
    if (!big)
        return n;
    /* the tensor-core kernel's first: those that fill a warp's 16 rows, and
     * any the other kernel cannot take (the order of tiles is free) */
    int G = Hq / Hkv, lo = 0, hi = n - 1;
    while (lo <= hi) {
        int c = tiles[2 * lo + 1];
        if (c * G >= 16 || c > small)
            lo++;
        else {
            int t = tiles[2 * lo], u = tiles[2 * lo + 1];
            tiles[2 * lo] = tiles[2 * hi], tiles[2 * lo + 1] = tiles[2 * hi + 1];
            tiles[2 * hi] = t, tiles[2 * hi + 1] = u;
            hi--;
        }
    }
    *n_mma = lo;
    return n;
}

g1_cuda_attn_layout g1_cuda_attn_layout_for(int max_context, int max_batch, int Hq, int K, size_t part_floats,
                                            int range_limit)
{
    g1_cuda_attn_layout L;
    int ctx = max_context < 1 ? 1 : max_context;
    L.chunk = g1_cuda_attn_chunk(ctx, G1_CUDA_ATTN_SPLITS);
    L.max_splits = (ctx + L.chunk - 1) / L.chunk; /* what a token at max_context - 1 takes */
    size_t per = (size_t)(Hq < 1 ? 1 : Hq) * (size_t)(K + 2) * (size_t)L.max_splits;
    size_t budget = part_floats ? part_floats : (size_t)64 << 20, n = budget / per;
    int mb = max_batch < 1 ? 1 : max_batch;
    L.range_tokens = n < 1 ? 1 : n > (size_t)mb ? mb : (int)n;
    if (range_limit > 0 && range_limit < L.range_tokens)
        L.range_tokens = range_limit;
    return L;
}

int g1_cuda_attn_plan(const int *slot, int T, int Hq, int Hkv, int K, int mma, int range_tokens, int *tiles,
                      g1_cuda_attn_range *ranges)
{
    int R = range_tokens < 1 ? 1 : range_tokens, n = 0, tile0 = 0;
    for (int t0 = 0; t0 < T; t0 += R, n++) {
        g1_cuda_attn_range *r = &ranges[n];
        r->t0 = t0;
        r->n = T - t0 < R ? T - t0 : R;
        r->tile0 = tile0;
        r->n_tiles = g1_cuda_attn_tiles(slot + t0, r->n, Hq, Hkv, K, mma, tiles + 2 * tile0, &r->n_mma);
        tile0 += r->n_tiles;
    }
    return n;
}

cudaError_t g1_cuda_attention_ranges(cudaStream_t s, const g1_cuda_attn_args *a, const g1_cuda_attn_range *r,
                                     int n_ranges)
{
    if (!a->tiles && n_ranges > 0)
        return cudaErrorInvalidValue;
    size_t qw = (size_t)a->Hq * a->K;
    for (int i = 0; i < n_ranges; i++) {
        if (r[i].t0 < 0 || r[i].n < 0 || r[i].t0 + r[i].n > a->T)
            return cudaErrorInvalidValue;
        g1_cuda_attn_args b = *a;
        b.T = r[i].n;
        b.q = a->q + (size_t)r[i].t0 * qw;
        b.out = a->out + (size_t)r[i].t0 * qw;
        b.kv.k0 = a->kv.k0 + r[i].t0;
        b.kv.v0 = a->kv.v0 + r[i].t0;
        b.kv.lstride = a->kv.lstride + r[i].t0;
        b.kv.pos = a->kv.pos + r[i].t0;
        b.tiles = a->tiles + 2 * (size_t)r[i].tile0;
        b.n_tiles = r[i].n_tiles;
        b.n_mma = r[i].n_mma;
        cudaError_t err = g1_cuda_attention(s, &b);
        if (err != cudaSuccess)
            return err;
    }
    return cudaSuccess;
}

cudaError_t g1_cuda_attention(cudaStream_t s, const g1_cuda_attn_args *a)
{
    if (a->K > KMAX || a->K < 1 || a->Hkv < 1 || a->Hq % a->Hkv || a->chunk < 1)
        return cudaErrorInvalidValue;
    if (a->n_mma < 0 || (a->n_mma && (!a->tiles || a->n_mma > a->n_tiles || a->K > MMA_KMAX || a->K % 4)))
        return cudaErrorInvalidValue;
    if (a->T <= 0)
        return cudaSuccess;
    int G = a->Hq / a->Hkv;
// kernel `k` for the caches' element type and head dimensions padded to kd
#define G1_ATTN(k, kd, thr, args)                                                                                \
    do {                                                                                                       \
        if (a->kv.bf16)                                                                                        \
            G1_LAUNCH((k<__nv_bfloat16, kd>), grid, thr, s)(args);                                             \
        else                                                                                                   \
            G1_LAUNCH((k<float, kd>), grid, thr, s)(args);                                                     \
    } while (0)
    if (a->n_mma) {
        int KD = a->K <= 32 ? 32 : a->K <= 64 ? 64 : 128, hpb = G < MMA_ROWS ? G : MMA_ROWS;
        dim3 grid((unsigned)a->n_mma, (unsigned)(a->Hkv * ((G + hpb - 1) / hpb)), (unsigned)a->max_splits);
        if (KD == 32)
            G1_ATTN(attn_mma_k, 32, MMA_THR, *a);
        else if (KD == 64)
            G1_ATTN(attn_mma_k, 64, MMA_THR, *a);
        else
            G1_ATTN(attn_mma_k, 128, MMA_THR, *a);
        cudaError_t err = cudaGetLastError();
        if (err != cudaSuccess)
            return err;
    }
    int tiles = a->tiles ? a->n_tiles - a->n_mma : a->T;
    if (tiles > 0) {
        g1_cuda_attn_args b = *a; /* the rest of the tiles */
        if (b.tiles)
            b.tiles += 2 * a->n_mma;
        int KD = key_pad(a->K), hpb = G < max_rows(KD) ? G : max_rows(KD);
        dim3 grid((unsigned)tiles, (unsigned)(a->Hkv * ((G + hpb - 1) / hpb)), (unsigned)a->max_splits);
        if (KD == 32)
            G1_ATTN(attn_split_k, 32, NTHR, b);
        else if (KD == 64)
            G1_ATTN(attn_split_k, 64, NTHR, b);
        else if (KD == 128)
            G1_ATTN(attn_split_k, 128, NTHR, b);
        else
            G1_ATTN(attn_split_k, 256, NTHR, b);
        cudaError_t err = cudaGetLastError();
        if (err != cudaSuccess)
            return err;
    }
#undef G1_ATTN
    G1_LAUNCH(attn_merge_k, dim3((unsigned)a->T, (unsigned)a->Hq), 128, s)(*a);
    return cudaGetLastError();
}

} // extern "C"
