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
const int UE_WARPS = 8;              // un-embedding: one vocabulary row per warp
const int UE_MAX_T = G1_CUDA_UNEMBED_MAX_T;

__device__ __forceinline__ float deq(int q, float s) { return __bfloat162float(__float2bfloat16_rn((float)q * s)); }

__device__ __forceinline__ void load16(const int8_t *p, bool vec, int ncol, int q[16])
{
    if (vec) {
        int4 v = __ldg(reinterpret_cast<const int4 *>(p));
        int w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int i = 0; i < 16; i++)
            q[i] = (int)(signed char)((w[i / 4] >> (8 * (i % 4))) & 0xff);
    } else {
#pragma unroll
        for (int i = 0; i < 16; i++)
            q[i] = i < ncol ? (int)p[i] : 0;
    }
}

// grid (col tiles * token groups, splits); token group g covers tokens
// [g*NT, g*NT+NT). Each lane owns 16 columns, each warp every 8th row of the
// split; warps are summed in a fixed order, splits by reduce_k. dst is
// (splits, T, cols): y itself when there is one split.
template <int NT>
__global__ void __launch_bounds__(GV_THREADS) gemv_k(const float *x, int T, g1_dqmat W, int rows_per_split,
                                                       int groups, bool vec, float *dst)
{
    __shared__ float red[8][GV_COLS + 1];
    int tile = blockIdx.x / groups, g = blockIdx.x % groups, split = blockIdx.y;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int cols = W.cols, rows = W.rows, rpb = rows / W.blocks;
    int c = tile * GV_COLS + lane * 16, ncol = min(16, cols - c);
    int r0 = split * rows_per_split, r1 = min(rows, r0 + rows_per_split);
    int t0 = g * NT;
    float acc[NT][16];
#pragma unroll
    for (int t = 0; t < NT; t++)
#pragma unroll
        for (int i = 0; i < 16; i++)
            acc[t][i] = 0;
    if (ncol > 0) {
        float sc[16];
        int cur_b = -1;
        for (int r = r0 + warp; r < r1; r += 8) {
            int b = r / rpb;
            if (b != cur_b) {
                cur_b = b;
#pragma unroll
                for (int i = 0; i < 16; i++)
                    sc[i] = i < ncol ? __ldg(W.scale + (size_t)b * cols + c + i) : 0.0f;
            }
            int q[16];
            load16(W.w + (size_t)r * cols + c, vec, ncol, q);
            float w[16];
#pragma unroll
            for (int i = 0; i < 16; i++)
                w[i] = deq(q[i], sc[i]);
#pragma unroll
            for (int t = 0; t < NT; t++) {
                float xv = t0 + t < T ? __ldg(x + (size_t)(t0 + t) * rows + r) : 0.0f;
#pragma unroll
                for (int i = 0; i < 16; i++)
                    acc[t][i] = fmaf(xv, w[i], acc[t][i]);
            }
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
                    dst[((size_t)split * T + t0 + t) * cols + col] = s;
                }
            }
        __syncthreads();
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

// rows [r0, r0 + nr) of W to bf16
__global__ void dequant_k(g1_dqmat W, int r0, int nr, __nv_bfloat16 *out)
{
    int cols = W.cols, rpb = W.rows / W.blocks;
    size_t n = (size_t)nr * cols;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        int r = r0 + (int)(i / cols), c = (int)(i % cols);
        float s = W.scale[(size_t)(r / rpb) * cols + c];
        out[i] = __float2bfloat16_rn((float)W.w[(size_t)r0 * cols + i] * s);
    }
}

// one vocabulary row per warp, T <= UE_MAX_T tokens, x float32; D % 8 == 0
__global__ void unembed_k(const float *x, int T, int D, const __nv_bfloat16 *E, int V, float mult, float *y)
{
    int v = blockIdx.x * UE_WARPS + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (v >= V)
        return;
    float acc[UE_MAX_T];
#pragma unroll
    for (int t = 0; t < UE_MAX_T; t++)
        acc[t] = 0;
    const __nv_bfloat16 *e = E + (size_t)v * D;
    for (int d = lane * 8; d < D; d += 256) {
        int4 raw = __ldg(reinterpret_cast<const int4 *>(e + d));
        int w[4] = {raw.x, raw.y, raw.z, raw.w};
        float ef[8]; // bf16 to float32 is exact: the 16 bits become the high half
#pragma unroll
        for (int i = 0; i < 8; i++)
            ef[i] = __int_as_float(i % 2 ? (int)((unsigned)w[i / 2] & 0xffff0000u) : (int)((unsigned)w[i / 2] << 16));
#pragma unroll
        for (int t = 0; t < UE_MAX_T; t++) {
            if (t < T) {
                const float4 *xp = reinterpret_cast<const float4 *>(x + (size_t)t * D + d);
                float4 a = __ldg(xp), b = __ldg(xp + 1);
                float s = acc[t];
                s = fmaf(a.x, ef[0], s); s = fmaf(a.y, ef[1], s); s = fmaf(a.z, ef[2], s); s = fmaf(a.w, ef[3], s);
                s = fmaf(b.x, ef[4], s); s = fmaf(b.y, ef[5], s); s = fmaf(b.z, ef[6], s); s = fmaf(b.w, ef[7], s);
                acc[t] = s;
            }
        }
    }
#pragma unroll
    for (int t = 0; t < UE_MAX_T; t++) {
        if (t < T) {
            float s = acc[t];
            for (int o = 16; o > 0; o >>= 1)
                s += __shfl_xor_sync(0xffffffffu, s, o);
            if (lane == 0)
                y[(size_t)t * V + v] = s * mult;
        }
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
                                int splits, float *dst)
{
    if (T <= 0)
        return cudaSuccess;
    bool vec = W->cols % 16 == 0;
    int NT = T == 1 ? 1 : T == 2 ? 2 : 4, groups = (T + NT - 1) / NT;
    int tiles = (W->cols + GV_COLS - 1) / GV_COLS;
    dim3 grid((unsigned)(tiles * groups), (unsigned)splits);
    if (NT == 1)
        G1_LAUNCH(gemv_k<1>, grid, GV_THREADS, s)(x, T, *W, rows_per_split, groups, vec, dst);
    else if (NT == 2)
        G1_LAUNCH(gemv_k<2>, grid, GV_THREADS, s)(x, T, *W, rows_per_split, groups, vec, dst);
    else
        G1_LAUNCH(gemv_k<4>, grid, GV_THREADS, s)(x, T, *W, rows_per_split, groups, vec, dst);
    return cudaGetLastError();
}

cudaError_t g1_cuda_gemv_reduce(cudaStream_t s, const float *part, int splits, size_t n, float *y)
{
    if (!n)
        return cudaSuccess;
    G1_LAUNCH(reduce_k, grid_for(n), 256, s)(part, splits, n, y);
    return cudaGetLastError();
}

cudaError_t g1_cuda_dequant(cudaStream_t s, const g1_dqmat *W, int r0, int nr, uint16_t *out)
{
    if (nr <= 0)
        return cudaSuccess;
    G1_LAUNCH(dequant_k, grid_for((size_t)nr * W->cols), 256, s)(*W, r0, nr, reinterpret_cast<__nv_bfloat16 *>(out));
    return cudaGetLastError();
}

cudaError_t g1_cuda_unembed_few(cudaStream_t s, const float *x, int T, int D, const uint16_t *E, int V, float mult,
                                float *y)
{
    if (T > UE_MAX_T || D % 8)
        return cudaErrorInvalidValue;
    if (T <= 0)
        return cudaSuccess;
    G1_LAUNCH(unembed_k, (unsigned)((V + UE_WARPS - 1) / UE_WARPS), 32 * UE_WARPS, s)(
        x, T, D, reinterpret_cast<const __nv_bfloat16 *>(E), V, mult, y);
    return cudaGetLastError();
}

} // extern "C"
