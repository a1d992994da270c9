/* Helpers of the CUDA tests: skip (exit 77) without a GPU, device copies
 * that end the test on failure, and a check against the CPU reference with
 * a tolerance relative to the largest reference value. */
#ifndef G1_CUDATEST_H
#define G1_CUDATEST_H

#include <stdio.h>
#include <stdlib.h>

#include "cuda/cuda_check.h"
#include "cuda/cuda_engine.h"
#include "../unit/testutil.h"

static inline void ct_need_gpu(const char *what)
{
    if (g1_cuda_device_count() < 1) {
        printf("%s: no GPU visible: %s: skipped\n", what, g1_cuda_no_device_why());
        exit(77);
    }
}

static inline void ct_ok(g1_status st, const char *what)
{
    if (st != G1_OK) {
        fprintf(stderr, "%s: %s (%s)\n", what, g1_last_error(), g1_last_error_where());
        exit(1);
    }
}

static inline void ct_cu(cudaError_t e, const char *what)
{
    if (e != cudaSuccess) {
        fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(e));
        exit(1);
    }
}

static inline void *ct_up(const void *h, size_t bytes)
{
    void *d = NULL;
    ct_cu(cudaMalloc(&d, bytes ? bytes : 1), "cudaMalloc");
    if (h && bytes)
        ct_cu(cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice), "upload");
    else
        ct_cu(cudaMemset(d, 0, bytes ? bytes : 1), "memset");
    return d;
}

static inline void ct_down(void *h, const void *d, size_t bytes)
{
    ct_cu(cudaDeviceSynchronize(), "kernel");
    ct_cu(cudaMemcpy(h, d, bytes, cudaMemcpyDeviceToHost), "download");
}

/* |got - ref| <= rel * max|ref| + 1e-30, elementwise; prints the worst. */
static inline int ct_close(const char *what, const float *got, const float *ref, size_t n, double rel)
{
    double mx = 0;
    for (size_t i = 0; i < n; i++)
        mx = fabs(ref[i]) > mx ? fabs(ref[i]) : mx;
    double *r = malloc((n ? n : 1) * sizeof *r);
    for (size_t i = 0; i < n; i++)
        r[i] = ref[i];
    int ok = tu_close(what, got, r, n, rel * mx + 1e-30, 0);
    free(r);
    return ok;
}

#endif
