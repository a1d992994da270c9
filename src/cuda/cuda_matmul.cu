// Kernels of the int8 weight-only matmuls and the bf16 un-embedding: the
// GEMV that streams each weight byte once (16-byte coalesced loads,
// dequantised in registers, float32 accumulation), the panel dequantiser
// for cuBLAS, and the few-token un-embedding. cuda_matmul.c drives them.
// The dequantised weight is exactly bf16(int8 * scale), round to nearest even.
#include <cuda_bf16.h>

#include "cuda_ops.h"

namespace {

const int GV_THREADS = 256;          // 8 warps
const int GV_COLS = 32 * 16;         // columns per block: 16 per lane
const int UE_WARPS = 8;              // un-embedding: warps per block
const int UE_MAX_T = G1_CUDA_UNEMBED_MAX_T;
const int UE_ROWS = 2;               // un-embedding: vocabulary rows per warp

__device__ __forceinline__ float deq(int q, float s) { return __bfloat162float(__float2bfloat16_rn((float)q * s)); }

__device__ __forceinline__ void unpack16(int4 v, int q[16])
{
    int w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int i = 0; i < 16; i++)
        q[i] = (int)(signed char)((w[i / 4] >> (8 * (i % 4))) & 0xff);
}

// the 16 columns of row r at p (byte loads when the row is not 16-byte aligned)
__device__ __forceinline__ void load16(const int8_t *p, bool vec, int ncol, int q[16])
{
    if (vec) {
        unpack16(__ldg(reinterpret_cast<const int4 *>(p)), q);
    } else {
#pragma unroll
        for (int i = 0; i < 16; i++)
            q[i] = i < ncol ? (int)p[i] : 0;
    }
}

// x[t0 + t, r] for the NT tokens of the group (0 past T)
template <int NT>
__device__ __forceinline__ void load_x(const float *x, int T, int t0, int rows, int r, float xv[NT])
{
#pragma unroll
    for (int t = 0; t < NT; t++)
        xv[t] = t0 + t < T ? __ldg(x + (size_t)(t0 + t) * rows + r) : 0.0f;
}

// The scales of a lane's 16 columns for row r's block; bend is where that
// block ends (rows only grow, so a row at or past it needs new scales).
__device__ __forceinline__ void load_scales(const g1_dqmat &W, int r, int rpb, int c, int ncol, bool vec, float sc[16],
                                            int &bend)
{
    int b = r / rpb;
    bend = (b + 1) * rpb;
    const float *s = W.scale + (size_t)b * W.cols + c;
    if (vec) {
#pragma unroll
        for (int i = 0; i < 16; i += 4) {
            float4 f = __ldg(reinterpret_cast<const float4 *>(s + i));
            sc[i] = f.x, sc[i + 1] = f.y, sc[i + 2] = f.z, sc[i + 3] = f.w;
        }
    } else {
#pragma unroll
        for (int i = 0; i < 16; i++)
            sc[i] = i < ncol ? __ldg(s + i) : 0.0f;
    }
}

// One row of a lane's 16 columns: dequantise q with the scales sc and add
// x * w to each token's sums. Rows are added in order, so the sums do not
// depend on how the rows were loaded.
template <int NT>
__device__ __forceinline__ void gemv_row(const int q[16], const float sc[16], const float xv[NT], float acc[NT][16])
{
    float w[16];
#pragma unroll
    for (int i = 0; i < 16; i++)
        w[i] = deq(q[i], sc[i]);
#pragma unroll
    for (int t = 0; t < NT; t++)
#pragma unroll
        for (int i = 0; i < 16; i++)
            acc[t][i] = fmaf(xv[t], w[i], acc[t][i]);
}

// One block of the GEMV: token group [t0, t0 + NT) of the T rows of x,
// column tile `tile`, the split of rows [r0, r1); row t of the result goes
// to out[t * cols]. Each lane owns 16 columns, each warp every 8th row of
// the split; warps are summed in a fixed order, splits by reduce_k. With
// 16-byte rows a warp issues the loads of U rows (r, r+8, ...) before it
// uses the first, so that enough bytes are in flight to cover the memory
// latency (one 512-byte row per warp is not: docs/CUDA.md); the sums are
// the same for every U.
template <int NT, int U>
__device__ __forceinline__ void gemv_block(const float *x, int T, const g1_dqmat &W, int r0, int r1, int tile, int t0,
                                           bool vec, float *out)
{
    __shared__ float red[8][GV_COLS + 1];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int cols = W.cols, rows = W.rows, rpb = rows / W.blocks;
    int c = tile * GV_COLS + lane * 16, ncol = min(16, cols - c);
    float acc[NT][16];
#pragma unroll
    for (int t = 0; t < NT; t++)
#pragma unroll
        for (int i = 0; i < 16; i++)
            acc[t][i] = 0;
    if (ncol > 0) {
        float sc[16];
        int bend = -1, r = r0 + warp;
        if (vec)
            for (; r + 8 * (U - 1) < r1; r += 8 * U) {
                int4 v[U];
                float xv[U][NT];
#pragma unroll
                for (int u = 0; u < U; u++)
                    v[u] = __ldg(reinterpret_cast<const int4 *>(W.w + (size_t)(r + 8 * u) * cols + c));
#pragma unroll
                for (int u = 0; u < U; u++)
                    load_x<NT>(x, T, t0, rows, r + 8 * u, xv[u]);
                if (r + 8 * (U - 1) < bend) { // the usual case: all U rows in the current scale block
#pragma unroll
                    for (int u = 0; u < U; u++) {
                        int q[16];
                        unpack16(v[u], q);
                        gemv_row<NT>(q, sc, xv[u], acc);
                    }
                } else {
#pragma unroll
                    for (int u = 0; u < U; u++) {
                        int q[16];
                        unpack16(v[u], q);
                        if (r + 8 * u >= bend)
                            load_scales(W, r + 8 * u, rpb, c, ncol, vec, sc, bend);
                        gemv_row<NT>(q, sc, xv[u], acc);
                    }
                }
            }
        for (; r < r1; r += 8) { // the rows left over, one at a time
            int q[16];
            float xv[NT];
            load16(W.w + (size_t)r * cols + c, vec, ncol, q);
            load_x<NT>(x, T, t0, rows, r, xv);
            if (r >= bend)
                load_scales(W, r, rpb, c, ncol, vec, sc, bend);
            gemv_row<NT>(q, sc, xv, acc);
        }
    }
    for (int t = 0; t < NT; t++) {
#pragma unroll
        for (int i = 0; i < 16; i++)
            red[warp][lane * 16 + i] = acc[t][i];
        __syncthreads();
        if (t0 + t < T)
            for (int cc = threadIdx.x; cc < GV_COLS; cc += GV_THREADS) {
                int col = tile * GV_COLS + cc;
                if (col < cols) {
                    float s = 0;
                    for (int wi = 0; wi < 8; wi++)
                        s += red[wi][cc];
                    out[(size_t)(t0 + t) * cols + col] = s;
                }
            }
        __syncthreads();
    }
}

// grid (col tiles * token groups, splits); token group g covers tokens
// [g*NT, g*NT+NT). dst is (splits, T, cols): y itself with one split.
template <int NT, int U>
__global__ void __launch_bounds__(GV_THREADS, NT == 1 ? 0 : 2) gemv_k(const float *x, int T, g1_dqmat W,
                                                                       int rows_per_split, int groups, bool vec,
                                                                       float *dst)
{
    int tile = blockIdx.x / groups, g = blockIdx.x % groups, split = blockIdx.y;
    int r0 = split * rows_per_split, r1 = min(W.rows, r0 + rows_per_split);
    gemv_block<NT, U>(x, T, W, r0, r1, tile, g * NT, vec, dst + (size_t)split * T * W.cols);
}

// The GEMV of the MoE for every held expert in one launch: grid (col tiles,
// splits, slots). Slot j < grp[3E] takes the j-th expert that has rows, e
// = grp[2E + j]: its rows [off, off + m) of x (n, rows) and of dst (splits,
// n, cols), m = grp[e], off = grp[E + e], NT tokens at a time, when m <=
// hi. The other slots do nothing.
template <int NT, int U>
__global__ void __launch_bounds__(GV_THREADS, NT == 1 ? 0 : 2) gemv_grouped_k(const float *x, int n,
                                                                               const g1_dqmat *mats, const int *grp,
                                                                               int E, int hi, int rows_per_split,
                                                                               bool vec, float *dst)
{
    int j = blockIdx.z;
    if (j >= grp[3 * E]) // the whole block: no thread reaches a barrier
        return;
    int e = grp[2 * E + j], m = grp[e], off = grp[E + e];
    if (m > hi) // a group for the tensor cores (mma_grouped_k)
        return;
    g1_dqmat W = mats[e];
    int tile = blockIdx.x, split = blockIdx.y;
    int r0 = split * rows_per_split, r1 = min(W.rows, r0 + rows_per_split);
    for (int t0 = 0; t0 < m; t0 += NT)
        gemv_block<NT, U>(x + (size_t)off * W.rows, m, W, r0, r1, tile, t0, vec,
                          dst + ((size_t)split * n + off) * W.cols);
}

// Rows of the MoE grouped by expert on the device (one block), as
// group_rows in cuda_moe.c does on the host: for ids (n) in [e0, e0 + E),
// rows[0..n) the rows in stable expert order, rows[n + i] the place of row
// i in it; grp (3E + 1): the rows of each expert, where they start, the
// experts that have rows in order, and how many those are.
__global__ void moe_group_k(const int *ids, int n, int e0, int E, int *rows, int *grp)
{
    __shared__ int cnt[256], off[256];
    for (int e = threadIdx.x; e < E; e += blockDim.x) {
        int c = 0;
        for (int i = 0; i < n; i++)
            c += ids[i] - e0 == e;
        cnt[e] = c;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        int o = 0, a = 0;
        for (int e = 0; e < E; e++) {
            off[e] = o;
            o += cnt[e];
            if (cnt[e])
                grp[2 * E + a++] = e;
        }
        for (int j = a; j < E; j++)
            grp[2 * E + j] = -1;
        grp[3 * E] = a;
    }
    __syncthreads();
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        int id = ids[i], e = id - e0;
        if (e < 0 || e >= E) // not held: the router never gives such an id
            continue;
        int p = off[e];
        for (int j = 0; j < i; j++)
            p += ids[j] == id;
        rows[p] = i;
        rows[n + i] = p;
    }
    for (int e = threadIdx.x; e < E; e += blockDim.x) {
        grp[e] = cnt[e];
        grp[E + e] = off[e];
    }
}

__global__ void reduce_k(const float *part, int splits, size_t n, float *y)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float s = 0;
        for (int j = 0; j < splits; j++)
            s += part[(size_t)j * n + i];
        y[i] = s;
    }
}

// rows [r0, r0 + nr), columns [c0, c0 + nc) of W to bf16, out (nr, nc)
__global__ void dequant_k(g1_dqmat W, int r0, int nr, int c0, int nc, __nv_bfloat16 *out)
{
    int cols = W.cols, rpb = W.rows / W.blocks;
    size_t n = (size_t)nr * nc;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        int r = r0 + (int)(i / nc), c = c0 + (int)(i % nc);
        float s = W.scale[(size_t)(r / rpb) * cols + c];
        out[i] = __float2bfloat16_rn((float)W.w[(size_t)r * cols + c] * s);
    }
}

// The same 16 columns at a time (cols, c0 and nc multiples of 16): one
// 16-byte load of weights, four of scales and two 16-byte stores a thread,
// the row and column worked out once for the 16 (the element kernel's
// divisions made it instruction-bound: 82 instructions an element in its
// disassembly, about 3 times its memory time; this one takes 133 per 16).
__global__ void dequant16_k(g1_dqmat W, int r0, int nr, int c0, int nc, __nv_bfloat16 *out)
{
    int cols = W.cols, c16 = nc / 16, rpb = W.rows / W.blocks, n = nr * c16;
    for (int u = blockIdx.x * blockDim.x + threadIdx.x; u < n; u += gridDim.x * blockDim.x) {
        int r = u / c16, c = (u - r * c16) * 16;
        int q[16];
        unpack16(__ldg(reinterpret_cast<const int4 *>(W.w + (size_t)(r0 + r) * cols + c0 + c)), q);
        const float *sp = W.scale + (size_t)((r0 + r) / rpb) * cols + c0 + c;
        unsigned h[8];
#pragma unroll
        for (int i = 0; i < 16; i += 4) {
            float4 f = __ldg(reinterpret_cast<const float4 *>(sp + i));
            unsigned a = __bfloat16_as_ushort(__float2bfloat16_rn((float)q[i] * f.x));
            unsigned b = __bfloat16_as_ushort(__float2bfloat16_rn((float)q[i + 1] * f.y));
            unsigned c2 = __bfloat16_as_ushort(__float2bfloat16_rn((float)q[i + 2] * f.z));
            unsigned d = __bfloat16_as_ushort(__float2bfloat16_rn((float)q[i + 3] * f.w));
            h[i / 2] = a | b << 16;
            h[i / 2 + 1] = c2 | d << 16;
        }
        int4 *o = reinterpret_cast<int4 *>(out + (size_t)r * nc + c);
        o[0] = make_int4((int)h[0], (int)h[1], (int)h[2], (int)h[3]);
        o[1] = make_int4((int)h[4], (int)h[5], (int)h[6], (int)h[7]);
    }
}

// 8 bf16 of a 16-byte load to float32 (exact: the 16 bits become the high half)
__device__ __forceinline__ void unpack_bf16x8(int4 raw, float ef[8])
{
    int w[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int i = 0; i < 8; i++)
        ef[i] = __int_as_float(i % 2 ? (int)((unsigned)w[i / 2] & 0xffff0000u) : (int)((unsigned)w[i / 2] << 16));
}

// UE_ROWS vocabulary rows per warp, T <= UE_MAX_T tokens, x float32;
// D % 8 == 0. A lane takes 8 of every 256 columns of each row: each step
// loads 16 bytes of every row at once (one 512-byte load per warp in
// flight is too few bytes to cover the memory latency) and reads x once
// for all of them. Each row's sums are added in column order, as with one
// row a warp.
__global__ void __launch_bounds__(32 * UE_WARPS, 3) unembed_k(const float *x, int T, int D, const __nv_bfloat16 *E, int V,
                                                          float mult, float *y)
{
    int v0 = (blockIdx.x * UE_WARPS + (threadIdx.x >> 5)) * UE_ROWS, lane = threadIdx.x & 31;
    if (v0 >= V)
        return;
    float acc[UE_ROWS][UE_MAX_T];
#pragma unroll
    for (int r = 0; r < UE_ROWS; r++)
#pragma unroll
        for (int t = 0; t < UE_MAX_T; t++)
            acc[r][t] = 0;
    const __nv_bfloat16 *e[UE_ROWS];
#pragma unroll
    for (int r = 0; r < UE_ROWS; r++) // a row past V repeats the last (its sums are not written)
        e[r] = E + (size_t)min(v0 + r, V - 1) * D;
    for (int d = lane * 8; d < D; d += 256) {
        float ef[UE_ROWS][8];
#pragma unroll
        for (int r = 0; r < UE_ROWS; r++)
            unpack_bf16x8(__ldg(reinterpret_cast<const int4 *>(e[r] + d)), ef[r]);
#pragma unroll
        for (int t = 0; t < UE_MAX_T; t++) {
            if (t < T) {
                const float4 *xp = reinterpret_cast<const float4 *>(x + (size_t)t * D + d);
                float4 a = __ldg(xp), b = __ldg(xp + 1);
#pragma unroll
                for (int r = 0; r < UE_ROWS; r++) {
                    float s = acc[r][t];
                    s = fmaf(a.x, ef[r][0], s); s = fmaf(a.y, ef[r][1], s); s = fmaf(a.z, ef[r][2], s);
                    s = fmaf(a.w, ef[r][3], s); s = fmaf(b.x, ef[r][4], s); s = fmaf(b.y, ef[r][5], s);
                    s = fmaf(b.z, ef[r][6], s); s = fmaf(b.w, ef[r][7], s);
                    acc[r][t] = s;
                }
            }
        }
    }
#pragma unroll
    for (int r = 0; r < UE_ROWS; r++)
#pragma unroll
        for (int t = 0; t < UE_MAX_T; t++) {
            if (t < T) {
                float s = acc[r][t];
                for (int o = 16; o > 0; o >>= 1)
                    s += __shfl_xor_sync(0xffffffffu, s, o);
                if (lane == 0 && v0 + r < V)
                    y[(size_t)t * V + v0 + r] = s * mult;
            }
        }
}

// ---- int8 weights on the tensor cores (17 to about 128 rows) -------------
//
// y (T, cols) = x (T, rows) @ deq(W) with x already bf16: each block takes
// MQ_BM rows of x by BN columns (64 or 128: 4 or 8 warps) over one split's
// slice of K, in stages of MQ_BK rows of W. A stage's weights come in once as int8 (one 16-byte
// load a thread), are dequantised to bf16(int8 * scale) on their way into
// shared memory, and go through mma.sync m16n8k16 (bf16 in, float32
// accumulate) against every row of x the block holds. The next stage's
// loads are issued before this stage's products, into registers. So a
// weight byte is read once per MQ_BM rows of x, where the cuBLAS path
// writes and reads it again as bf16 (1 byte against 5). Needs rows a
// multiple of 32 (a stage never straddles a split) and cols of 16. A
// wider tile reads each row of x from the L2 half as often per weight byte
// (every column tile's blocks read x again), with half the blocks.
const int MQ_BM = 64, MQ_BK = 32;
const int MQ_XLD = MQ_BK + 8; // bf16 a row of xs: 80 bytes, conflict-free fragment loads

// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32, c += a . b, in the
// PTX fragment layout (g = lane / 4, t = lane % 4; each register two bf16,
// the lower index in the low half): a0 A[g][2t, 2t+1], a1 A[g+8][2t, 2t+1],
// a2 A[g][2t+8, 2t+9], a3 A[g+8][2t+8, 2t+9]; b0 B[2t, 2t+1][g], b1
// B[2t+8, 2t+9][g]; c0, c1 C[g][2t, 2t+1], c2, c3 C[g+8][2t, 2t+1].
__device__ __forceinline__ void mma_bf16(float c[4], const uint32_t a[4], const uint32_t b[2])
{
#if defined(G1EMU_H)
    ::g1emu::mma_m16n8k16_bf16(c, a, b);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#elif defined(__CUDA_ARCH__)
    __trap(); // the host launches this kernel on compute capability 8.0 and later only
#endif
}

// One block's 64 rows from m0 by BN columns from n0 over W's rows [k0, k1)
// (k1 - k0 a multiple of MQ_BK): out (T, cols) gets its products.
template <int BN>
__device__ __forceinline__ void mma_tile(const __nv_bfloat16 *x, int T, const g1_dqmat &W, int m0, int n0, int k0,
                                         int k1, float *out)
{
    const int THR = 2 * BN, WLD = BN + 8; // a row of ws: 144 or 272 bytes
    const int XV = MQ_BM * MQ_BK / 8 / THR; // 16-byte pieces of x's stage a thread: 2 or 1
    const int XT = MQ_BK / (8 * XV);        // threads a row of x's stage
    // bf16 bits (a type without a constructor: the emulation's shared memory is static)
    __shared__ __align__(16) unsigned short xs[MQ_BM * MQ_XLD];
    __shared__ __align__(16) unsigned short ws[MQ_BK * WLD];
    int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3;
    int K = W.rows, N = W.cols, rpb = W.rows / W.blocks;
    // what this thread loads: a 16-byte row piece of W's stage, XV of x's
    int wr = tid / (BN / 16), wc = tid % (BN / 16) * 16, xr = tid / XT, xc = tid % XT * 8 * XV;
    bool wok = n0 + wc < N, xok = m0 + xr < T;
    const int8_t *wp = W.w + (size_t)(k0 + wr) * N + n0 + wc;
    const __nv_bfloat16 *xp = x + (size_t)(m0 + xr) * K + k0 + xc;
    // the warp's 32 x 32 of the block's 64 x BN: 2 row tiles of 16, 4 column tiles of 8
    int wm = warp / (BN / 32) * 32, wn = warp % (BN / 32) * 32;
    float acc[2][4][4];
#pragma unroll
    for (int i = 0; i < 2; i++)
#pragma unroll
        for (int j = 0; j < 4; j++)
            acc[i][j][0] = acc[i][j][1] = acc[i][j][2] = acc[i][j][3] = 0.0f;
    float sc[16];
    int bend = -1; // the scales in sc are for rows below bend
    int4 wq = make_int4(0, 0, 0, 0), xv[XV];
#pragma unroll
    for (int i = 0; i < XV; i++)
        xv[i] = wq;
    // a stage's global loads into registers (rows past T and columns past N stay 0)
    auto load = [&] {
        if (wok)
            wq = __ldg(reinterpret_cast<const int4 *>(wp));
        if (xok)
#pragma unroll
            for (int i = 0; i < XV; i++)
                xv[i] = __ldg(reinterpret_cast<const int4 *>(xp + 8 * i));
    };
    load();
    for (int k = k0; k < k1; k += MQ_BK) {
        // this stage into shared memory: W dequantised, x as it is
        int r = k + wr;
        if (wok && r >= bend) {
            int b = r / rpb;
            bend = (b + 1) * rpb;
            const float *sp = W.scale + (size_t)b * N + n0 + wc;
#pragma unroll
            for (int i = 0; i < 16; i += 4) {
                float4 f = __ldg(reinterpret_cast<const float4 *>(sp + i));
                sc[i] = f.x, sc[i + 1] = f.y, sc[i + 2] = f.z, sc[i + 3] = f.w;
            }
        }
        int q[16];
        unpack16(wq, q);
        unsigned h[8];
#pragma unroll
        for (int i = 0; i < 16; i += 2) {
            unsigned lo = wok ? __bfloat16_as_ushort(__float2bfloat16_rn((float)q[i] * sc[i])) : 0u;
            unsigned hi = wok ? __bfloat16_as_ushort(__float2bfloat16_rn((float)q[i + 1] * sc[i + 1])) : 0u;
            h[i / 2] = lo | hi << 16;
        }
        int4 *wd = reinterpret_cast<int4 *>(ws + wr * WLD + wc);
        wd[0] = make_int4((int)h[0], (int)h[1], (int)h[2], (int)h[3]);
        wd[1] = make_int4((int)h[4], (int)h[5], (int)h[6], (int)h[7]);
        int4 *xd = reinterpret_cast<int4 *>(xs + xr * MQ_XLD + xc);
#pragma unroll
        for (int i = 0; i < XV; i++)
            xd[i] = xv[i];
        __syncthreads();
        // the next stage's loads, in flight while this one multiplies
        if (k + MQ_BK < k1) {
            wp += (size_t)MQ_BK * N;
            xp += MQ_BK;
            load();
        }
#pragma unroll
        for (int ks = 0; ks < MQ_BK; ks += 16) {
            uint32_t a[2][4], b[4][2];
#pragma unroll
            for (int i = 0; i < 2; i++) {
                const unsigned short *xr0 = xs + (wm + i * 16 + g) * MQ_XLD + ks + 2 * t;
                a[i][0] = *reinterpret_cast<const uint32_t *>(xr0);
                a[i][1] = *reinterpret_cast<const uint32_t *>(xr0 + 8 * MQ_XLD);
                a[i][2] = *reinterpret_cast<const uint32_t *>(xr0 + 8);
                a[i][3] = *reinterpret_cast<const uint32_t *>(xr0 + 8 * MQ_XLD + 8);
            }
#pragma unroll
            for (int j = 0; j < 4; j++) {
                const unsigned short *wc0 = ws + (ks + 2 * t) * WLD + wn + j * 8 + g;
                b[j][0] = (uint32_t)wc0[0] | (uint32_t)wc0[WLD] << 16;
                b[j][1] = (uint32_t)wc0[8 * WLD] | (uint32_t)wc0[9 * WLD] << 16;
            }
#pragma unroll
            for (int i = 0; i < 2; i++)
#pragma unroll
                for (int j = 0; j < 4; j++)
                    mma_bf16(acc[i][j], a[i], b[j]);
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 2; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) {
            int c = n0 + wn + j * 8 + 2 * t;
#pragma unroll
            for (int h2 = 0; h2 < 2; h2++) {
                int row = m0 + wm + i * 16 + g + h2 * 8;
                if (row < T && c < N)
                    *reinterpret_cast<float2 *>(out + (size_t)row * N + c) =
                        make_float2(acc[i][j][2 * h2], acc[i][j][2 * h2 + 1]);
            }
        }
}

// grid (row tiles, column tiles, splits); dst (splits, T, cols)
template <int BN>
__global__ void __launch_bounds__(2 * BN) mma_q8_k(const __nv_bfloat16 *x, int T, g1_dqmat W, int k_per_split,
                                                   float *dst)
{
    int k0 = blockIdx.z * k_per_split;
    mma_tile<BN>(x, T, W, blockIdx.x * MQ_BM, blockIdx.y * BN, k0, min(W.rows, k0 + k_per_split),
                 dst + (size_t)blockIdx.z * T * W.cols);
}

// The tensor-core matmul of the MoE for every held expert in one launch:
// grid (row tiles of the largest group, column tiles, slots x max_splits).
// Slot j < grp[3E] takes the j-th expert that has rows (as gemv_grouped_k)
// when its group has more than lo rows (the GEMV takes the others): rows
// [off, off + m) of x (n, rows), split-K as g1_mma_splits gives m rows,
// so each row is what mma_q8_k gives its group alone. Its sums go to y's
// rows with one split, else to part (max_splits, n, cols) at the same rows
// (reduce_grouped_k adds them). Blocks past the group's rows or splits
// do nothing.
template <int BN>
__global__ void __launch_bounds__(2 * BN) mma_grouped_k(const __nv_bfloat16 *x, int n, const g1_dqmat *mats,
                                                        const int *grp, int E, int lo, int sms, int max_splits,
                                                        float *part, float *y)
{
    int j = blockIdx.z / max_splits, split = blockIdx.z % max_splits;
    if (j >= grp[3 * E]) // the whole block: no thread reaches a barrier
        return;
    int e = grp[2 * E + j], m = grp[e], off = grp[E + e];
    if (m <= lo || (int)blockIdx.x * MQ_BM >= m)
        return;
    g1_dqmat W = mats[e];
    int rps, splits = g1_mma_splits(sms, m, W.rows, W.cols, &rps);
    if (split >= splits)
        return;
    int k0 = split * rps;
    float *out = splits > 1 ? part + ((size_t)split * n + off) * W.cols : y + (size_t)off * W.cols;
    mma_tile<BN>(x + (size_t)off * W.rows, m, W, blockIdx.x * MQ_BM, blockIdx.y * BN, k0, min(W.rows, k0 + rps),
                 out);
}

// The split-K sums of the grouped matmuls, a block a row of y (n, cols):
// the row's group has m rows; the GEMV split it in gsplits (m <= lo), the
// tensor-core kernel as g1_mma_splits gives m rows. Rows of one split were
// written to y already. The same additions in the same order as reduce_k
// over the group alone.
__global__ void reduce_grouped_k(const float *part, int n, int rows, int cols, const int *grp, int E, int lo,
                                 int gsplits, int sms, float *y)
{
    int r = blockIdx.x, a = grp[3 * E], m = 0;
    for (int j = 0; j < a && !m; j++) {
        int e = grp[2 * E + j], off = grp[E + e];
        if (r >= off && r < off + grp[e])
            m = grp[e];
    }
    if (!m)
        return;
    int rps, splits = m <= lo ? gsplits : g1_mma_splits(sms, m, rows, cols, &rps);
    if (splits <= 1)
        return;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        float s = 0;
        for (int k = 0; k < splits; k++)
            s += part[((size_t)k * n + r) * cols + c];
        y[(size_t)r * cols + c] = s;
    }
}

unsigned grid_for(size_t n)
{
    size_t g = (n + 255) / 256;
    return (unsigned)(g < 1 ? 1 : g > 65536 ? 65536 : g);
}

} // namespace

extern "C" {

int g1_cuda_gemv_cols(void) { return GV_COLS; }

cudaError_t g1_cuda_gemv_launch(cudaStream_t s, const float *x, int T, const g1_dqmat *W, int rows_per_split,
                                int splits, int unroll, float *dst)
{
    if (T <= 0)
        return cudaSuccess;
    bool vec = W->cols % 16 == 0;
    int NT = T == 1 ? 1 : T == 2 ? 2 : 4, groups = (T + NT - 1) / NT;
    int tiles = (W->cols + GV_COLS - 1) / GV_COLS;
    dim3 grid((unsigned)(tiles * groups), (unsigned)splits);
#define G1_GEMV(nt, u) G1_LAUNCH((gemv_k<nt, u>), grid, GV_THREADS, s)(x, T, *W, rows_per_split, groups, vec, dst)
    if (unroll == 1)
        NT == 1 ? G1_GEMV(1, 1) : NT == 2 ? G1_GEMV(2, 1) : G1_GEMV(4, 1);
    else if (unroll == 2 || NT == 4) // 4 x 4 would take 177 registers: one block a multiprocessor
        NT == 1 ? G1_GEMV(1, 2) : NT == 2 ? G1_GEMV(2, 2) : G1_GEMV(4, 2);
    else
        NT == 1 ? G1_GEMV(1, 4) : G1_GEMV(2, 4);
#undef G1_GEMV
    return cudaGetLastError();
}

cudaError_t g1_cuda_gemv_grouped(cudaStream_t s, const float *x, int n, int nt, const g1_dqmat *mats,
                                 const g1_dqmat *shape, const int *grp, int E, int hi, int rows_per_split,
                                 int splits, float *dst)
{
    if (n <= 0)
        return cudaSuccess;
    bool vec = shape->cols % 16 == 0;
    int NT = nt <= 1 ? 1 : nt == 2 ? 2 : 4, slots = E < n ? E : n;
    if (slots > 65535)
        return cudaErrorInvalidValue;
    dim3 grid((unsigned)((shape->cols + GV_COLS - 1) / GV_COLS), (unsigned)splits, (unsigned)slots);
#define G1_GEMV(nt, u) \
    G1_LAUNCH((gemv_grouped_k<nt, u>), grid, GV_THREADS, s)(x, n, mats, grp, E, hi, rows_per_split, vec, dst)
    NT == 1 ? G1_GEMV(1, 4) : NT == 2 ? G1_GEMV(2, 4) : G1_GEMV(4, 2); // the GEMV's default unroll
#undef G1_GEMV
    return cudaGetLastError();
}

cudaError_t g1_cuda_moe_group(cudaStream_t s, const int *ids, int n, int e0, int E, int *rows, int *grp)
{
    if (E > 256)
        return cudaErrorInvalidValue;
    G1_LAUNCH(moe_group_k, 1, 256, s)(ids, n, e0, E, rows, grp);
    return cudaGetLastError();
}

cudaError_t g1_cuda_gemv_reduce(cudaStream_t s, const float *part, int splits, size_t n, float *y)
{
    if (!n)
        return cudaSuccess;
    G1_LAUNCH(reduce_k, grid_for(n), 256, s)(part, splits, n, y);
    return cudaGetLastError();
}

int g1_cuda_mma_q8_fits(const g1_dqmat *W) { return W->rows % MQ_BK == 0 && W->cols % 16 == 0 && W->blocks > 0; }

cudaError_t g1_cuda_mma_q8_launch(cudaStream_t s, const uint16_t *x, int T, const g1_dqmat *W, int bn,
                                  int rows_per_split, int splits, float *dst)
{
    if (T <= 0)
        return cudaSuccess;
    if (!g1_cuda_mma_q8_fits(W) || (bn != 64 && bn != 128) || rows_per_split % MQ_BK || splits < 1 ||
        (size_t)rows_per_split * (splits - 1) >= (size_t)W->rows)
        return cudaErrorInvalidValue;
    unsigned mt = (unsigned)((T + MQ_BM - 1) / MQ_BM), nt = (unsigned)((W->cols + bn - 1) / bn);
    if (nt > 65535u || splits > 65535)
        return cudaErrorInvalidValue;
    // the row tiles fastest: blocks that read the same weights run together (the L2 keeps them)
    dim3 grid(mt, nt, (unsigned)splits);
    const __nv_bfloat16 *xb = reinterpret_cast<const __nv_bfloat16 *>(x);
    if (bn == 64)
        G1_LAUNCH(mma_q8_k<64>, grid, 128, s)(xb, T, *W, rows_per_split, dst);
    else
        G1_LAUNCH(mma_q8_k<128>, grid, 256, s)(xb, T, *W, rows_per_split, dst);
    return cudaGetLastError();
}

cudaError_t g1_cuda_mma_grouped_launch(cudaStream_t s, const uint16_t *x, int n, int maxm, const g1_dqmat *mats,
                                       const g1_dqmat *shape, const int *grp, int E, int lo, int sms, int bn,
                                       int max_splits, float *part, float *y)
{
    if (n <= 0 || maxm <= lo)
        return cudaSuccess;
    if (!g1_cuda_mma_q8_fits(shape) || (bn != 64 && bn != 128) || max_splits < 1 || E < 1)
        return cudaErrorInvalidValue;
    int slots = E < n ? E : n;
    unsigned mt = (unsigned)((maxm + MQ_BM - 1) / MQ_BM), nt = (unsigned)((shape->cols + bn - 1) / bn);
    if (nt > 65535u || (size_t)slots * max_splits > 65535u)
        return cudaErrorInvalidValue;
    dim3 grid(mt, nt, (unsigned)(slots * max_splits));
    const __nv_bfloat16 *xb = reinterpret_cast<const __nv_bfloat16 *>(x);
    if (bn == 64)
        G1_LAUNCH(mma_grouped_k<64>, grid, 128, s)(xb, n, mats, grp, E, lo, sms, max_splits, part, y);
    else
        G1_LAUNCH(mma_grouped_k<128>, grid, 256, s)(xb, n, mats, grp, E, lo, sms, max_splits, part, y);
    return cudaGetLastError();
}

cudaError_t g1_cuda_reduce_grouped(cudaStream_t s, const float *part, int n, int rows, int cols, const int *grp,
                                   int E, int lo, int gsplits, int sms, float *y)
{
    if (n <= 0)
        return cudaSuccess;
    G1_LAUNCH(reduce_grouped_k, (unsigned)n, 256, s)(part, n, rows, cols, grp, E, lo, gsplits, sms, y);
    return cudaGetLastError();
}

cudaError_t g1_cuda_dequant(cudaStream_t s, const g1_dqmat *W, int r0, int nr, int c0, int nc, uint16_t *out)
{
    if (nr <= 0 || nc <= 0)
        return cudaSuccess;
    if (r0 < 0 || c0 < 0 || r0 + nr > W->rows || c0 + nc > W->cols)
        return cudaErrorInvalidValue;
    __nv_bfloat16 *o = reinterpret_cast<__nv_bfloat16 *>(out);
    size_t n = (size_t)nr * nc;
    if (W->cols % 16 == 0 && c0 % 16 == 0 && nc % 16 == 0 && n < ((size_t)1 << 31)) // panels: at most 32M elements
        G1_LAUNCH(dequant16_k, grid_for(n / 16), 256, s)(*W, r0, nr, c0, nc, o);
    else
        G1_LAUNCH(dequant_k, grid_for(n), 256, s)(*W, r0, nr, c0, nc, o);
    return cudaGetLastError();
}

cudaError_t g1_cuda_unembed_few(cudaStream_t s, const float *x, int T, int D, const uint16_t *E, int V, float mult,
                                float *y)
{
    if (T > UE_MAX_T || D % 8)
        return cudaErrorInvalidValue;
    if (T <= 0)
        return cudaSuccess;
    int per_block = UE_WARPS * UE_ROWS;
    G1_LAUNCH(unembed_k, (unsigned)((V + per_block - 1) / per_block), 32 * UE_WARPS, s)(
        x, T, D, reinterpret_cast<const __nv_bfloat16 *>(E), V, mult, y);
    return cudaGetLastError();
}

} // extern "C"
