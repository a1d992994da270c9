/* GPU benchmark: one Grok-1 decoder layer at the real shapes (weights made
 * on the device, no file) at 1, 8, 64, 512 and 4096 tokens, against a
 * device-to-device copy and a cuBLAS bf16 GEMM measured in the same run;
 * prints time per layer, bandwidth, FLOP/s, the goals and the
 * tokens/s this predicts for 8 GPUs as 8 pipeline stages. Exits 77 without
 * a GPU. Usage: bench_cuda_layer [--preset grok-1|small|tiny] [--tokens 1,8,...]
 * [--cuda-gemm bf16|bf16x2|f32] [--smoke]: the goals are checked for the
 * default bf16 GEMM (at 1 to 8 tokens every mode is the same GEMV); --smoke shrinks the reference copy and GEMM so the whole program
 * can run on the CPU emulation (tests/cuda/emu); its figures mean nothing. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/cuda_internal.h"

#define CK(x)                                                                            \
    do {                                                                                 \
        if ((x) != G1_OK) {                                                              \
            fprintf(stderr, "bench_cuda_layer: %s (%s)\n", g1_last_error(), g1_last_error_where()); \
            return 1;                                                                    \
        }                                                                                \
    } while (0)

static g1_status cu(cudaError_t e, const char *what)
{
    if (e != cudaSuccess)
        return G1_FAIL(G1_ERR_CUDA, "%s: %s", what, cudaGetErrorString(e));
    return G1_OK;
}

/* device-to-device copy bandwidth (bytes read + written per second) */
static g1_status copy_bw(double *gbs, int smoke)
{
    size_t n = (size_t)1 << (smoke ? 20 : 30);
    void *a, *b;
    cudaEvent_t e0, e1;
    G1_TRY(cu(cudaMalloc(&a, n), "malloc"));
    G1_TRY(cu(cudaMalloc(&b, n), "malloc"));
    G1_TRY(cu(cudaMemset(a, 1, n), "memset"));
    cudaEventCreate(&e0), cudaEventCreate(&e1);
    G1_TRY(cu(cudaMemcpy(b, a, n, cudaMemcpyDeviceToDevice), "copy"));
    cudaEventRecord(e0, 0);
    for (int i = 0; i < 10; i++)
        cudaMemcpyAsync(b, a, n, cudaMemcpyDeviceToDevice, 0);
    cudaEventRecord(e1, 0);
    G1_TRY(cu(cudaEventSynchronize(e1), "copy"));
    float ms;
    cudaEventElapsedTime(&ms, e0, e1);
    *gbs = 10.0 * 2.0 * (double)n / (ms * 1e-3) / 1e9;
    cudaFree(a), cudaFree(b), cudaEventDestroy(e0), cudaEventDestroy(e1);
    return G1_OK;
}

/* cuBLAS bf16 GEMM, 8192^3, float32 accumulate and output */
static g1_status gemm_rate(double *tflops, int smoke)
{
    int n = smoke ? 64 : 8192;
    void *A, *B, *C;
    cublasHandle_t h;
    cudaEvent_t e0, e1;
    G1_TRY(cu(cudaMalloc(&A, (size_t)n * n * 2), "malloc"));
    G1_TRY(cu(cudaMalloc(&B, (size_t)n * n * 2), "malloc"));
    G1_TRY(cu(cudaMalloc(&C, (size_t)n * n * 4), "malloc"));
    cudaMemset(A, 0, (size_t)n * n * 2), cudaMemset(B, 0, (size_t)n * n * 2);
    G1_CUBLAS(cublasCreate(&h));
    const float one = 1, zero = 0;
    cudaEventCreate(&e0), cudaEventCreate(&e1);
    for (int i = 0; i < 6; i++) {
        if (i == 1)
            cudaEventRecord(e0, 0);
        G1_CUBLAS(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &one, A, CUDA_R_16BF, n, B, CUDA_R_16BF, n,
                               &zero, C, CUDA_R_32F, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    }
    cudaEventRecord(e1, 0);
    G1_TRY(cu(cudaEventSynchronize(e1), "gemm"));
    float ms;
    cudaEventElapsedTime(&ms, e0, e1);
    *tflops = 5.0 * 2.0 * (double)n * n * n / (ms * 1e-3) / 1e12;
    cublasDestroy(h), cudaFree(A), cudaFree(B), cudaFree(C), cudaEventDestroy(e0), cudaEventDestroy(e1);
    return G1_OK;
}

static double qmat_bytes(const g1_config *c, g1_qmat_id id, int blocks)
{
    int rows, cols;
    g1_qmat_shape(c, id, &rows, &cols);
    return (double)rows * cols + 4.0 * blocks * cols;
}

int main(int argc, char **argv)
{
    const char *preset = "grok-1", *tokens = "1,8,64,512,4096", *gemm = "bf16";
    int smoke = 0;
    g1_cuda_gemm mode = G1_CUDA_GEMM_BF16;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--smoke"))
            smoke = 1;
        else if (i + 1 < argc && !strcmp(argv[i], "--preset"))
            preset = argv[++i];
        else if (i + 1 < argc && !strcmp(argv[i], "--tokens"))
            tokens = argv[++i];
        else if (i + 1 < argc && !strcmp(argv[i], "--cuda-gemm") &&
                 (!strcmp(argv[i + 1], "bf16") || !strcmp(argv[i + 1], "bf16x2") || !strcmp(argv[i + 1], "f32"))) {
            gemm = argv[++i];
            mode = !strcmp(gemm, "f32") ? G1_CUDA_GEMM_F32 : !strcmp(gemm, "bf16x2") ? G1_CUDA_GEMM_BF16X2
                                                                                       : G1_CUDA_GEMM_BF16;
        } else {
            fprintf(stderr, "usage: bench_cuda_layer [--preset grok-1|small|tiny] [--tokens 1,8,...] "
                            "[--cuda-gemm bf16|bf16x2|f32] [--smoke]\n");
            return 2;
        }
    }
    if (g1_cuda_device_count() < 1) {
        printf("bench_cuda_layer: no GPU visible: skipped\n");
        return 77;
    }
    int Ts[16], nT = 0, Tmax = 1;
    for (const char *p = tokens; *p && nT < 16;) {
        Ts[nT] = atoi(p);
        if (Ts[nT] < 1)
            break;
        Tmax = Ts[nT] > Tmax ? Ts[nT] : Tmax;
        nT++;
        p = strchr(p, ',');
        if (!p)
            break;
        p++;
    }
    g1_config c;
    CK(g1_config_preset(preset, &c));
    struct cudaDeviceProp prop;
    cudaGetDeviceProperties(&prop, 0);
    double bw = 0, peak = 0;
    CK(copy_bw(&bw, smoke));
    CK(gemm_rate(&peak, smoke));
    g1_engine_opts o = {.n_slots = 64, .max_batch = Tmax, .max_context = Tmax < c.max_seq_len ? Tmax : c.max_seq_len,
                        .backend = G1_BACKEND_CUDA, .cuda_gemm = mode};
    g1_cuda_engine *e;
    CK(g1_cuda_engine_init_random(&e, &c, 1, &o, NULL, 42));
    int D = c.emb_size, F = c.ffn_size, k = c.num_selected_experts;
    double attn_b = qmat_bytes(&c, G1_ATTN_Q, 1) + qmat_bytes(&c, G1_ATTN_K, 1) + qmat_bytes(&c, G1_ATTN_V, 1) +
                    qmat_bytes(&c, G1_ATTN_O, 8);
    double exp_b = 2 * qmat_bytes(&c, G1_MOE_GATE, 1) + qmat_bytes(&c, G1_MOE_DOWN, 8);
    double attn_params = (double)D * (c.num_q_heads + 2 * c.num_kv_heads) * c.key_size + (double)c.num_q_heads * c.key_size * D;
    printf("device: %s, %d SMs; copy %.0f GB/s; cuBLAS bf16 GEMM %.0f TFLOP/s; model %s (D %d, F %d); "
           "--cuda-gemm %s\n", prop.name, prop.multiProcessorCount, bw, peak, preset, D, F, gemm);
    printf("%-7s %9s %8s %9s %9s %8s %10s %s\n", "tokens", "ms/layer", "experts", "GB/s", "TFLOP/s", "goal", "8-GPU tok/s",
           "goal check");
    int *slot = malloc((size_t)Tmax * sizeof(int)), *pos = malloc((size_t)Tmax * sizeof(int));
    int all_ok = 1;
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0), cudaEventCreate(&e1);
    for (int i = 0; i < nT; i++) {
        int T = Ts[i], iters = T <= 64 ? 20 : T <= 512 ? 8 : 3;
        int decode = T <= 64; /* T sequences at position 0, else one prompt of T */
        for (int t = 0; t < T; t++)
            slot[t] = decode ? t : 0, pos[t] = decode ? 0 : t;
        g1_batch b = {.T = T, .slot = slot, .pos = pos};
        float total = 0;
        for (int it = -1; it < iters; it++) {
            for (int s = 0; s < o.n_slots; s++)
                g1_cuda_engine_reset_slot(e, s);
            CK(cu(g1_cuda_fill_f32(e->stream, e->x, (size_t)T * D, 7 + (uint64_t)it, -1, 1), "fill"));
            cudaEventRecord(e0, e->stream);
            CK(g1_cuda_engine_forward_device(e, &b));
            cudaEventRecord(e1, e->stream);
            CK(cu(cudaEventSynchronize(e1), "forward"));
            float ms;
            cudaEventElapsedTime(&ms, e0, e1);
            if (it >= 0)
                total += ms;
        }
        double ms = total / iters;
        unsigned char hit[256] = {0};
        int touched = 0;
        for (int r = 0; r < T * k; r++)
            if (!hit[e->idx_h[r]]++)
                touched++;
        double ctx = decode ? 1 : (T + 1) / 2.0;
        double bytes = attn_b + touched * exp_b;
        double flops = 2.0 * T * (attn_params + (double)k * 3 * D * F) + 4.0 * T * ctx * c.num_q_heads * c.key_size;
        double gbs = bytes / (ms * 1e-3) / 1e9, tf = flops / (ms * 1e-3) / 1e12;
        double ideal_ms = (attn_b + 2 * exp_b) / (bw * 1e9) * 1e3; /* bw: bytes read + written per second */
        char goal[64] = "-";
        if (T <= 8) {
            int ok = ms <= 1.5 * ideal_ms;
            all_ok &= ok;
            snprintf(goal, sizeof goal, "%.2fx of read-once (<= 1.5x): %s", ms / ideal_ms, ok ? "met" : "MISSED");
        } else if (T >= 4096 && mode == G1_CUDA_GEMM_BF16) { /* the goal is for the default GEMM */
            int ok = tf >= 0.6 * peak;
            all_ok &= ok;
            snprintf(goal, sizeof goal, "%.0f%% of cuBLAS (>= 60%%): %s", 100 * tf / peak, ok ? "met" : "MISSED");
        }
        printf("%-7d %9.3f %8d %9.0f %9.1f %8s %10.0f %s\n", T, ms, touched, gbs, tf, T <= 8 ? "bw" : T >= 4096 ? "flops" : "",
               T / (8.0 * ms * 1e-3), goal);
    }
    printf("goals: %s (tok/s: 64 layers as 8 stages of 8, enough micro-batches to fill the pipeline)\n",
           all_ok ? "met" : "not all met");
    g1_cuda_engine_free(e);
    free(slot), free(pos);
    return 0;
}
