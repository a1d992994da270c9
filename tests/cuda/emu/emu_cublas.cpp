// g1emu: the cuBLAS calls the project makes, written from the BLAS
// definition rather than from our callers: C (m x n) = alpha op(A) op(B) +
// beta C, column-major, op(A) m x k stored lda x (k or m), op(B) k x n, with
// the documented argument checks. Every operand must lie inside one device
// allocation over the whole extent its leading dimension implies, so a
// wrong layout shows up as a message rather than as plausible numbers.
// beta == 0 never reads C (it may hold NaN), as the documentation allows.
#include <cublas_v2.h>
#include <cuda_bf16.h>

#include "emu_internal.h"

#include <stdio.h>
#include <vector>

using namespace g1emu;

struct cublasContext {
    cudaStream_t stream;
    int dev; // the device current at cublasCreate: the handle works there only
};

static size_t type_size(cudaDataType t)
{
    switch (t) {
    case CUDA_R_32F: return 4;
    case CUDA_R_16BF: return 2;
    default: return 0;
    }
}

static double load(const void *p, cudaDataType t, size_t i)
{
    if (t == CUDA_R_32F)
        return ((const float *)p)[i];
    return (double)__bfloat162float(((const __nv_bfloat16 *)p)[i]);
}

// Bytes a column-major operand of `rows` x `cols` with leading dimension ld spans.
static size_t extent(int rows, int cols, int ld, size_t es)
{
    if (!rows || !cols)
        return 0;
    return ((size_t)(cols - 1) * (size_t)ld + (size_t)rows) * es;
}

long g1emu::blas_handles_live;

extern "C" {

// Failing calls (G1EMU_FAIL_CALL, emu_runtime.cpp) fail with the status each
// is documented to return.
cublasStatus_t cublasCreate(cublasHandle_t *h)
{
    if (fail_call("cublasCreate", "CUBLAS_STATUS_ALLOC_FAILED")) {
        *h = nullptr;
        return CUBLAS_STATUS_ALLOC_FAILED;
    }
    *h = new cublasContext{nullptr, current_device()};
    blas_handles_live++;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy(cublasHandle_t h)
{
    if (h)
        blas_handles_live--;
    delete h;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t s)
{
    if (fail_call("cublasSetStream", "CUBLAS_STATUS_NOT_INITIALIZED"))
        return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!h)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    h->stream = s;
    return CUBLAS_STATUS_SUCCESS;
}

const char *cublasGetStatusName(cublasStatus_t s)
{
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    default: return "CUBLAS_STATUS_UNKNOWN";
    }
}

const char *cublasGetStatusString(cublasStatus_t s)
{
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "success";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "the library was not initialized (g1emu)";
    case CUBLAS_STATUS_ALLOC_FAILED: return "resource allocation failed (g1emu)";
    case CUBLAS_STATUS_INVALID_VALUE: return "an invalid numeric value was used as an argument (g1emu)";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "the functionality requested is not supported (g1emu)";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "the GPU program failed to execute (g1emu)";
    default: return "unknown error (g1emu)";
    }
}

cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t transa, cublasOperation_t transb, int m, int n,
                            int k, const void *alpha, const void *A, cudaDataType Atype, int lda, const void *B,
                            cudaDataType Btype, int ldb, const void *beta, void *C, cudaDataType Ctype, int ldc,
                            cublasComputeType_t computeType, cublasGemmAlgo_t algo)
{
    (void)algo;
    if (fail_call("cublasGemmEx", "CUBLAS_STATUS_EXECUTION_FAILED"))
        return CUBLAS_STATUS_EXECUTION_FAILED;
    if (!h)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    bool ta = transa != CUBLAS_OP_N, tb = transb != CUBLAS_OP_N;
    int a_rows = ta ? k : m, b_rows = tb ? n : k;
    if (m < 0 || n < 0 || k < 0 || lda < (a_rows > 1 ? a_rows : 1) || ldb < (b_rows > 1 ? b_rows : 1) ||
        ldc < (m > 1 ? m : 1)) {
        note("cublasGemmEx(m=%d, n=%d, k=%d, lda=%d, ldb=%d, ldc=%d, %s%s): invalid value", m, n, k, lda, ldb, ldc,
             ta ? "T" : "N", tb ? "T" : "N");
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    size_t ea = type_size(Atype), eb = type_size(Btype);
    if (!ea || !eb || Ctype != CUDA_R_32F || computeType != CUBLAS_COMPUTE_32F ||
        (Atype == CUDA_R_32F) != (Btype == CUDA_R_32F)) {
        note("cublasGemmEx: types A %d, B %d, C %d, compute %d are not emulated", (int)Atype, (int)Btype,
             (int)Ctype, (int)computeType);
        return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    if (!m || !n)
        return CUBLAS_STATUS_SUCCESS;
    if (current_device() != h->dev) {
        note("cublasGemmEx with a handle of device %d while device %d is current on this thread", h->dev,
             current_device());
        return CUBLAS_STATUS_EXECUTION_FAILED;
    }
    for (const void *p : {A, B, (const void *)C}) {
        const Region *r = find_region(p);
        if (r && r->device && r->dev != h->dev) {
            note("cublasGemmEx on device %d with an operand in device %d's memory", h->dev, r->dev);
            return CUBLAS_STATUS_INVALID_VALUE;
        }
    }
    float al = *(const float *)alpha, be = *(const float *)beta;
    if (k && al != 0.0f) {
        if (!device_range(A, extent(a_rows, ta ? m : k, lda, ea))) {
            note("cublasGemmEx: A (%d x %d, lda %d) is not inside one device allocation", a_rows, ta ? m : k, lda);
            return CUBLAS_STATUS_INVALID_VALUE;
        }
        if (!device_range(B, extent(b_rows, tb ? k : n, ldb, eb))) {
            note("cublasGemmEx: B (%d x %d, ldb %d) is not inside one device allocation", b_rows, tb ? k : n, ldb);
            return CUBLAS_STATUS_INVALID_VALUE;
        }
    }
    if (!device_range(C, extent(m, n, ldc, 4))) {
        note("cublasGemmEx: C (%d x %d, ldc %d) is not inside one device allocation", m, n, ldc);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    // on the handle's stream, when the host waits for it (emu_runtime.cpp,
    // "streams"); alpha and beta are read now (host pointer mode)
    float *c = (float *)C;
    bool queued = enqueue(h->stream, "cublasGemmEx", [=] {
        std::vector<double> arow((size_t)k);
        for (int i = 0; i < m; i++) {
            for (int l = 0; l < k; l++)
                arow[(size_t)l] = load(A, Atype, ta ? (size_t)i * lda + l : (size_t)l * lda + i);
            for (int j = 0; j < n; j++) {
                double s = 0;
                if (al != 0.0f)
                    for (int l = 0; l < k; l++)
                        s += arow[(size_t)l] * load(B, Btype, tb ? (size_t)l * ldb + j : (size_t)j * ldb + l);
                float *cij = c + (size_t)j * ldc + i;
                *cij = (float)(al * s + (be != 0.0f ? (double)be * *cij : 0.0));
            }
        }
    });
    if (!queued)
        return CUBLAS_STATUS_EXECUTION_FAILED;
    return CUBLAS_STATUS_SUCCESS;
}

} // extern "C"
