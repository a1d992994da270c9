// Small per-token kernels of the CUDA engine: RMSNorm, RoPE, GELU x linear,
// router top-k, gather, combine, embedding, bf16 conversion, device-side
// random fill. Numerics follow the CPU kernels (src/cpu_ops.c) op for op.
#include <cuda_bf16.h>
#include <limits.h>
#include <math.h>

#include "cuda_ops.h"

namespace {

const int NTHR = 256;

__device__ double block_sum(double v, double *sh /* (32) */)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_down_sync(0xffffffffu, v, o);
    int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    __syncthreads(); // sh may be in use by a previous call
    if (lane == 0)
        sh[w] = v;
    __syncthreads();
    double s = 0;
    for (int i = 0; i < (int)(blockDim.x >> 5); i++)
        s += sh[i];
    return s;
}

__device__ float inv_rms(const float *x, int D, float eps, double *sh)
{
    double ss = 0;
    for (int d = threadIdx.x; d < D; d += blockDim.x)
        ss += (double)x[d] * x[d];
    ss = block_sum(ss, sh);
    return (float)(1.0 / sqrt(ss / D + (double)eps));
}

__global__ void rmsnorm_k(const float *x, int D, const float *scale, float eps, float *out)
{
    __shared__ double sh[32];
    const float *xr = x + (size_t)blockIdx.x * D;
    float *o = out + (size_t)blockIdx.x * D;
    float inv = inv_rms(xr, D, eps, sh);
    for (int d = threadIdx.x; d < D; d += blockDim.x)
        o[d] = scale[d] * (xr[d] * inv);
}

__global__ void add_rmsnorm_k(float *x, const float *y, int D, const float *scale, float eps)
{
    __shared__ double sh[32];
    const float *yr = y + (size_t)blockIdx.x * D;
    float *xr = x + (size_t)blockIdx.x * D;
    float inv = inv_rms(yr, D, eps, sh);
    for (int d = threadIdx.x; d < D; d += blockDim.x)
        xr[d] += scale[d] * (yr[d] * inv);
}

// angles and their sine / cosine in double, as the CPU does
__global__ void rope_k(float *v, int heads, int K, const int *pos, double base)
{
    int t = blockIdx.x, half = K / 2;
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        double th = (double)pos[t] * (1.0 / pow(base, (2.0 * i) / K));
        float cs = (float)cos(th), sn = (float)sin(th);
        for (int h = 0; h < heads; h++) {
            float *p = v + ((size_t)t * heads + h) * K;
            float a = p[i], b = p[i + half];
            p[i] = a * cs - b * sn;
            p[i + half] = b * cs + a * sn;
        }
    }
}

__global__ void gelu_mul_k(const float *a, const float *b, size_t n, float *out)
{
    const float k0 = 0.7978845608028654f; // sqrt(2 / pi)
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float x = a[i];
        // 0.5 x (1 + tanh(u)) == x / (1 + exp(-2u)), without the cancellation
        float g = x / (1.0f + expf(-2.0f * k0 * (x + 0.044715f * x * x * x)));
        out[i] = g * b[i];
    }
}

__global__ void router_k(const float *x, int D, const float *Wr, int E, int k, int *idx, float *gate)
{
    __shared__ double sh[32];
    __shared__ double logit[256];
    const float *xr = x + (size_t)blockIdx.x * D;
    for (int e = 0; e < E; e++) {
        double s = 0;
        for (int d = threadIdx.x; d < D; d += blockDim.x)
            s += (double)xr[d] * Wr[(size_t)d * E + e];
        s = block_sum(s, sh);
        if (threadIdx.x == 0)
            logit[e] = s;
    }
    if (threadIdx.x)
        return;
    double mx = -INFINITY, sum = 0;
    for (int e = 0; e < E; e++)
        mx = logit[e] > mx ? logit[e] : mx;
    for (int e = 0; e < E; e++)
        sum += (logit[e] = exp(logit[e] - mx)); // now the unnormalised probability
    // top-k, ties to the lower index; gates are NOT renormalised over the k
    unsigned char taken[256];
    for (int e = 0; e < E; e++)
        taken[e] = 0;
    for (int j = 0; j < k; j++) {
        int best = -1;
        for (int e = 0; e < E; e++)
            if (!taken[e] && (best < 0 || logit[e] > logit[best]))
                best = e;
        taken[best] = 1;
        idx[(size_t)blockIdx.x * k + j] = best;
        gate[(size_t)blockIdx.x * k + j] = (float)(logit[best] / sum);
    }
}

__global__ void gather_k(const float *x, int D, const int *rows, int div, float *out)
{
    const float *src = x + (size_t)(rows[blockIdx.x] / div) * D;
    float *dst = out + (size_t)blockIdx.x * D;
    for (int d = threadIdx.x; d < D; d += blockDim.x)
        dst[d] = src[d];
}

__global__ void combine_k(int D, int k, const float *gate, const float *y, const int *map, float *out)
{
    int t = blockIdx.x;
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float o = 0;
        for (int j = 0; j < k; j++) {
            int r = map ? map[t * k + j] : t * k + j;
            /* unfused, as the host's g1_moe_combine: the same bits whichever
             * side combines (grok1-run --gpu-direct or not) */
            o = __fadd_rn(o, __fmul_rn(gate[t * k + j], y[(size_t)r * D + d]));
        }
        out[(size_t)t * D + d] = o;
    }
}

__global__ void embed_k(const __nv_bfloat16 *E, int D, const int *tokens, float mult, float *x)
{
    const __nv_bfloat16 *row = E + (size_t)tokens[blockIdx.x] * D;
    for (int d = threadIdx.x; d < D; d += blockDim.x)
        x[(size_t)blockIdx.x * D + d] = __bfloat162float(row[d]) * mult;
}

__global__ void to_bf16_k(const float *x, size_t n, __nv_bfloat16 *hi, __nv_bfloat16 *lo)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        __nv_bfloat16 h = __float2bfloat16_rn(x[i]);
        hi[i] = h;
        if (lo)
            lo[i] = __float2bfloat16_rn(x[i] - __bfloat162float(h));
    }
}

__device__ uint64_t mix(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

__global__ void fill_q8_k(int8_t *w, size_t n, uint64_t seed)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        w[i] = (int8_t)((int)(mix(seed * 0x9e3779b97f4a7c15ull + i) % 255u) - 127);
}

__global__ void fill_f32_k(float *x, size_t n, uint64_t seed, float lo, float hi)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float u = (float)(mix(seed * 0x9e3779b97f4a7c15ull + i) >> 40) * (1.0f / 16777216.0f);
        x[i] = __bfloat162float(__float2bfloat16_rn(lo + (hi - lo) * u));
    }
}

// One logits row per block: the largest logit and the first index holding
// it, the first NaN or +inf, then sum exp(l - max) in double and the
// target's log-softmax, the CPU's g1_row_logprob (sampler.c) up to the
// order of the sum.
__global__ void score_rows_k(const float *logits, int V, const int *target, g1_row_score *out)
{
    __shared__ float smx[32];
    __shared__ int sarg[32], sbad[32];
    __shared__ double sh[32];
    const float *l = logits + (size_t)blockIdx.x * V;
    float mx = -INFINITY;
    int arg = INT_MAX, bad = INT_MAX;
    for (int i = threadIdx.x; i < V; i += blockDim.x) {
        float v = l[i];
        if (v != v || v == INFINITY)
            bad = bad < i ? bad : i;
        else if (v > mx) // this thread's indices rise: the first of its largest
            mx = v, arg = i;
    }
    for (int o = 16; o > 0; o >>= 1) {
        float m2 = __shfl_down_sync(0xffffffffu, mx, o);
        int a2 = __shfl_down_sync(0xffffffffu, arg, o), b2 = __shfl_down_sync(0xffffffffu, bad, o);
        if (m2 > mx || (m2 == mx && a2 < arg))
            mx = m2, arg = a2;
        bad = b2 < bad ? b2 : bad;
    }
    int w = threadIdx.x >> 5, lane = threadIdx.x & 31, nw = (int)(blockDim.x >> 5);
    if (lane == 0)
        smx[w] = mx, sarg[w] = arg, sbad[w] = bad;
    __syncthreads();
    mx = smx[0], arg = sarg[0], bad = sbad[0];
    for (int i = 1; i < nw; i++) {
        if (smx[i] > mx || (smx[i] == mx && sarg[i] < arg))
            mx = smx[i], arg = sarg[i];
        bad = sbad[i] < bad ? sbad[i] : bad;
    }
    // every thread holds the row's verdict: a bad row or an all -inf row
    // stops here, together
    g1_row_score r;
    r.max = mx;
    r.argmax = arg == INT_MAX ? -1 : arg;
    r.bad = bad == INT_MAX ? -1 : bad;
    r.bad_value = bad == INT_MAX ? 0.0f : l[bad];
    r.lp = 0;
    if (bad == INT_MAX && mx != -INFINITY) {
        double sum = 0, m = (double)mx;
        for (int i = threadIdx.x; i < V; i += blockDim.x)
            sum += exp((double)l[i] - m);
        sum = block_sum(sum, sh);
        int t = target[blockIdx.x];
        if (t >= 0)
            r.lp = (double)l[t] - m - log(sum);
    }
    if (threadIdx.x == 0)
        out[blockIdx.x] = r;
}

unsigned grid_for(size_t n)
{
    size_t g = (n + NTHR - 1) / NTHR;
    return (unsigned)(g < 1 ? 1 : g > 65536 ? 65536 : g);
}

} // namespace

extern "C" {

cudaError_t g1_cuda_score_rows(cudaStream_t s, const float *logits, int T, int V, const int *target,
                               g1_row_score *out)
{
    if (T <= 0)
        return cudaSuccess;
    G1_LAUNCH(score_rows_k, T, 1024, s)(logits, V, target, out);
    return cudaGetLastError();
}

cudaError_t g1_cuda_kernel_image(void)
{
    struct cudaFuncAttributes a;
    return cudaFuncGetAttributes(&a, (const void *)rmsnorm_k);
}

cudaError_t g1_cuda_rmsnorm(cudaStream_t s, const float *x, int T, int D, const float *scale, float eps, float *out)
{
    if (T <= 0)
        return cudaSuccess;
    G1_LAUNCH(rmsnorm_k, T, NTHR, s)(x, D, scale, eps, out);
    return cudaGetLastError();
}

cudaError_t g1_cuda_add_rmsnorm(cudaStream_t s, float *x, const float *y, int T, int D, const float *scale, float eps)
{
    if (T <= 0)
        return cudaSuccess;
    G1_LAUNCH(add_rmsnorm_k, T, NTHR, s)(x, y, D, scale, eps);
    return cudaGetLastError();
}

cudaError_t g1_cuda_rope(cudaStream_t s, float *v, int T, int heads, int K, const int *pos, double base)
{
    if (T <= 0)
        return cudaSuccess;
    G1_LAUNCH(rope_k, T, 128, s)(v, heads, K, pos, base);
    return cudaGetLastError();
}

cudaError_t g1_cuda_gelu_mul(cudaStream_t s, const float *a, const float *b, size_t n, float *out)
{
    if (!n)
        return cudaSuccess;
    G1_LAUNCH(gelu_mul_k, grid_for(n), NTHR, s)(a, b, n, out);
    return cudaGetLastError();
}

cudaError_t g1_cuda_router(cudaStream_t s, const float *x, int T, int D, const float *Wr, int E, int k, int *idx,
                         float *gate)
{
    if (E > 256 || k > E)
        return cudaErrorInvalidValue;
    if (T <= 0)
        return cudaSuccess;
    G1_LAUNCH(router_k, T, NTHR, s)(x, D, Wr, E, k, idx, gate);
    return cudaGetLastError();
}

cudaError_t g1_cuda_gather(cudaStream_t s, const float *x, int D, const int *rows, int div, int n, float *out)
{
    if (n <= 0)
        return cudaSuccess;
    G1_LAUNCH(gather_k, n, NTHR, s)(x, D, rows, div, out);
    return cudaGetLastError();
}

cudaError_t g1_cuda_combine(cudaStream_t s, int T, int D, int k, const float *gate, const float *y, const int *map,
                          float *out)
{
    if (T <= 0)
        return cudaSuccess;
    G1_LAUNCH(combine_k, T, NTHR, s)(D, k, gate, y, map, out);
    return cudaGetLastError();
}

cudaError_t g1_cuda_embed(cudaStream_t s, const uint16_t *E, int D, const int *tokens, int T, float mult, float *x)
{
    if (T <= 0)
        return cudaSuccess;
    G1_LAUNCH(embed_k, T, NTHR, s)(reinterpret_cast<const __nv_bfloat16 *>(E), D, tokens, mult, x);
    return cudaGetLastError();
}

cudaError_t g1_cuda_to_bf16(cudaStream_t s, const float *x, size_t n, uint16_t *hi, uint16_t *lo)
{
    if (!n)
        return cudaSuccess;
    G1_LAUNCH(to_bf16_k, grid_for(n), NTHR, s)(x, n, reinterpret_cast<__nv_bfloat16 *>(hi),
                                          reinterpret_cast<__nv_bfloat16 *>(lo));
    return cudaGetLastError();
}

cudaError_t g1_cuda_fill_q8(cudaStream_t s, int8_t *w, size_t n, uint64_t seed)
{
    if (!n)
        return cudaSuccess;
    G1_LAUNCH(fill_q8_k, grid_for(n), NTHR, s)(w, n, seed);
    return cudaGetLastError();
}

cudaError_t g1_cuda_fill_f32(cudaStream_t s, float *x, size_t n, uint64_t seed, float lo, float hi)
{
    if (!n)
        return cudaSuccess;
    G1_LAUNCH(fill_f32_k, grid_for(n), NTHR, s)(x, n, seed, lo, hi);
    return cudaGetLastError();
}

} // extern "C"
