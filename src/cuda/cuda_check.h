/* The C side of the CUDA backend: error checks that turn CUDA and cuBLAS
 * failures into g1_status (file, line, call, the library's text), and the
 * int8 matmuls (GEMV kernel or dequantised panels + cuBLAS). C only. */
#ifndef G1_CUDA_CHECK_H
#define G1_CUDA_CHECK_H

#include <cublas_v2.h>

#include "cuda/cuda_ops.h"
#include "status.h"

/* Every CUDA and cuBLAS call goes through these: a failure becomes
 * G1_ERR_CUDA with the file, line, call and the library's error text. */
#define G1_CU(call)                                                                                    \
    do {                                                                                               \
        cudaError_t g1_cu_e_ = (call);                                                                 \
        if (g1_cu_e_ != cudaSuccess)                                                                   \
            return G1_FAIL(G1_ERR_CUDA, "%s:%d: %s failed: %s (%s)", __FILE__, __LINE__, #call,         \
                           cudaGetErrorString(g1_cu_e_), cudaGetErrorName(g1_cu_e_));                  \
    } while (0)
#define G1_CUBLAS(call)                                                                                \
    do {                                                                                               \
        cublasStatus_t g1_cb_e_ = (call);                                                              \
        if (g1_cb_e_ != CUBLAS_STATUS_SUCCESS)                                                         \
            return G1_FAIL(G1_ERR_CUDA, "%s:%d: %s failed: %s (%s)", __FILE__, __LINE__, #call,         \
                           cublasGetStatusString(g1_cb_e_), cublasGetStatusName(g1_cb_e_));            \
    } while (0)

/* What the matmuls need besides their operands: the stream, cuBLAS, and
 * scratch sized by the engine (g1_cuda_mm_sizes). */
typedef struct g1_cuda_mm {
    cudaStream_t stream;
    cublasHandle_t blas;
    int sms;              /* multiprocessors: sizes the GEMV grid */
    int gemv_max;         /* most rows for the GEMV kernel (0: never) */
    int gemv_unroll;      /* rows of weights each warp of the GEMV loads before it uses the
                           * first: 1, 2 or 4 (0: 4; at most 2 for 3 or more tokens) */
    int split;            /* GEMM inputs as bf16 hi + lo (two GEMMs) */
    int gemv_only;        /* every matmul on the GEMV kernel, gemv_max rows at a time
                           * (G1_CUDA_GEMM_F32: batch-invariant) */
    int mma_max;          /* most rows for the int8 tensor-core kernel, above gemv_max
                           * (0: never; compute capability 8.0 and later, bf16 inputs) */
    int mma_bn;           /* its blocks' columns: 64 or 128 (0: 64) */
    long n_mma;           /* calls that took the tensor-core kernel (tests) */
    float *partial;       /* (partial_n) GEMV split-K sums */
    size_t partial_n;
    uint16_t *wbf;        /* (wbf_n) a dequantised panel, bf16 */
    size_t wbf_n;
    uint16_t *xbf;        /* (xbf_n) GEMM inputs in bf16: hi, then lo */
    size_t xbf_n;
    /* Overlap (g1_cuda_mm_overlap_init; side NULL: none): a matrix of two or
     * more panels has panel p + 1 dequantised on `side` into the other
     * buffer while cuBLAS multiplies panel p on `stream` */
    cudaStream_t side;
    uint16_t *wbf2;       /* (wbf_n) the second panel buffer, the caller's */
    cudaEvent_t ev_start, ev_ready[2], ev_free[2];
} g1_cuda_mm;

/* The side stream and events of the overlap; mm->wbf2 is set by the caller
 * (wbf_n bf16 elements). On an error nothing is left to free. */
g1_status g1_cuda_mm_overlap_init(g1_cuda_mm *mm);
/* Waits for the side stream and destroys it and the events (mm->wbf2 is
 * the caller's); safe on an mm without overlap. */
void g1_cuda_mm_overlap_free(g1_cuda_mm *mm);

/* Scratch a matmul of up to T rows needs: GEMV partial sums (floats), the
 * dequantised panel (bf16 elements, at most the matrix), and the bf16
 * inputs (elements, both halves). */
void g1_cuda_mm_sizes(const g1_cuda_mm *mm, int T, int rows, int cols, size_t *partial_n, size_t *wbf_n,
                      size_t *xbf_n);

/* GEMV partial sums (floats) for n rows of a rows x cols matrix. */
size_t g1_cuda_gemv_partial_n(const g1_cuda_mm *mm, int n, int rows, int cols);

/* y (T, cols) = x (T, rows) @ deq(W): the GEMV kernel for T <= gemv_max,
 * the int8 tensor-core kernel up to mma_max rows (matrices it fits),
 * dequantised panels and cuBLAS otherwise (gemv_only: the GEMV kernel over
 * chunks of gemv_max rows). T == 0 does nothing. */
g1_status g1_cuda_matmul_q8(g1_cuda_mm *mm, const float *x, int T, const g1_dqmat *W, float *y);
/* The three paths on their own (tests). */
g1_status g1_cuda_gemv_q8(g1_cuda_mm *mm, const float *x, int T, const g1_dqmat *W, float *y);
g1_status g1_cuda_gemm_q8(g1_cuda_mm *mm, const float *x, int T, const g1_dqmat *W, float *y);
/* The int8 tensor-core kernel: x to bf16 in xbf, split-K sized from T and
 * the matrix (so a row's sums may depend on T, as cuBLAS's do). */
g1_status g1_cuda_mma_q8(g1_cuda_mm *mm, const float *x, int T, const g1_dqmat *W, float *y);
/* Partial sums (floats) g1_cuda_mma_q8 needs for n rows of a rows x cols matrix. */
size_t g1_cuda_mma_partial_n(const g1_cuda_mm *mm, int n, int rows, int cols);
/* The dequantiser's share of g1_cuda_gemm_q8 on its own: the same panels,
 * no input conversion and no GEMMs (the benchmark). */
g1_status g1_cuda_gemm_q8_dequant(g1_cuda_mm *mm, int T, const g1_dqmat *W);
/* Every held expert's matmul over its rows of x (n, rows), groups and
 * matrices in device memory (g1_cuda_moe_group's grp; mats a device array,
 * shape any of them): y (n, cols), each group of m rows the bits
 * g1_cuda_matmul_q8 gives it alone: the GEMV for m <= gemv_max, the int8
 * tensor-core kernel above (every group up to maxm rows, at most
 * g1_cuda_grouped_max_rows). Launches do not depend on how the rows
 * fall into groups (no host round trip: CUDA graphs can hold them). */
g1_status g1_cuda_matmul_grouped_q8(g1_cuda_mm *mm, const float *x, int n, int maxm, const g1_dqmat *mats,
                                    const g1_dqmat *shape, const int *grp, int E, float *y);
/* The largest group g1_cuda_matmul_grouped_q8 takes for a rows x cols
 * matrix: mma_max when the tensor-core kernel takes the shape, else gemv_max. */
int g1_cuda_grouped_max_rows(const g1_cuda_mm *mm, int rows, int cols);
/* Partial sums (floats) it needs for n rows in groups of up to maxm. */
size_t g1_cuda_grouped_partial_n(const g1_cuda_mm *mm, int n, int maxm, int rows, int cols);
/* y (T, V) = (x (T, D) . E^T) * mult, E (V, D) bf16: the un-embedding. */
g1_status g1_cuda_unembed(g1_cuda_mm *mm, const float *x, int T, int D, const uint16_t *E, int V, float mult,
                          float *y);

#endif
