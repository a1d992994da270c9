// The emulator itself (g1emu.h): if it got shuffles, barriers, launch
// checks, memory checks or the cuBLAS definition wrong, the cuda-emu suite
// would pass or fail for the wrong reasons. Each mistake it must catch is
// provoked here (in a child process where the emulator ends the program).
#include "g1emu.h"

#include <cublas_v2.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string>
#include <string.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

static int failures;

static void check(bool ok, const char *what)
{
    printf("%-64s %s\n", what, ok ? "ok" : "FAIL");
    failures += !ok;
}

template <class T> static T *dev(size_t n)
{
    void *p = nullptr;
    if (cudaMalloc(&p, n * sizeof(T)) != cudaSuccess) {
        fprintf(stderr, "cudaMalloc failed\n");
        exit(1);
    }
    return (T *)p;
}

template <class T> static void down(T *h, const T *d, size_t n)
{
    if (cudaMemcpy(h, d, n * sizeof(T), cudaMemcpyDeviceToHost) != cudaSuccess) {
        fprintf(stderr, "download failed\n");
        exit(1);
    }
}

// ---- kernels -------------------------------------------------------------

__global__ void shuffles_k(float *xr, double *dn, int *ids)
{
    int t = threadIdx.x, lane = t & 31;
    float v = (float)(t * 3 + 1);
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    xr[blockIdx.x * blockDim.x + t] = v;
    double d = 0.5 * t;
    dn[blockIdx.x * blockDim.x + t] = __shfl_down_sync(0xffffffffu, d, 5);
    ids[blockIdx.x * blockDim.x + t] = __shfl_xor_sync(0xffffffffu, lane, 1);
}

// D (16 x 8) = A (16 x 8) . B (8 x 8) through the emulated tf32 mma, each
// lane loading and storing its fragments by PTX's table for m16n8k8 (row
// g / g + 8, column t / t + 4 for A; row t / t + 4, column g for B), A and
// B row-major
__global__ void mma_k(const float *A, const float *B, float *D)
{
    int lane = threadIdx.x, g = lane >> 2, t = lane & 3;
    uint32_t a[4], b[2];
    for (int i = 0; i < 4; i++)
        a[i] = g1emu::tf32_rna(A[(g + (i & 1) * 8) * 8 + t + (i >> 1) * 4]);
    for (int i = 0; i < 2; i++)
        b[i] = g1emu::tf32_rna(B[(t + i * 4) * 8 + g]);
    float c[4] = {1, 1, 1, 1};
    g1emu::mma_m16n8k8_tf32(c, a, b);
    for (int i = 0; i < 4; i++)
        D[(g + (i >> 1) * 8) * 8 + 2 * t + (i & 1)] = c[i];
}

__global__ void reverse_k(const int *in, int *out)
{
    __shared__ int s[256];
    int t = threadIdx.x, n = blockDim.x;
    s[t] = in[blockIdx.x * n + t];
    __syncthreads();
    out[blockIdx.x * n + t] = s[n - 1 - t];
}

__global__ void early_exit_k(int *out)
{
    __shared__ int s[128];
    int t = threadIdx.x;
    if (t >= 100)
        return; // exited threads do not hold the barrier
    s[t] = t;
    __syncthreads();
    out[t] = s[99 - t];
}

// Two passes through shared memory, each warp's lane 0 writing its slot
// after a shuffle, every thread summing all slots; racy leaves out the
// barrier that keeps pass 2's writes from pass 1's reads (the shape of the
// attention kernel's key passes).
__global__ void passes_k(const int *in, int *out, int racy)
{
    __shared__ int s[8];
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, acc = 0;
    for (int pass = 0; pass < 2; pass++) {
        int v = __shfl_xor_sync(0xffffffffu, in[pass * 8 + warp], 1);
        if (lane == 0)
            s[warp] = v;
        __syncthreads();
        for (int w = 0; w < 8; w++)
            acc = acc * 3 + s[w];
        if (!racy)
            __syncthreads();
    }
    out[threadIdx.x] = acc;
}

__global__ void divergent_k(float *out)
{
    float v = 1;
    if ((threadIdx.x & 31) < 16)
        __syncthreads();
    else
        v = __shfl_xor_sync(0xffffffffu, v, 1);
    out[threadIdx.x] = v;
}

__global__ void shuffle_after_exit_k(float *out)
{
    if (threadIdx.x == 3)
        return;
    out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.0f, 1);
}

__global__ void partial_warp_k(float *out) { out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.0f, 1); }

__global__ void nop_k(int *p) { p[0] = 1; }

#if defined(G1EMU_RACE)
// What the race check (G1EMU_RACE) must report, one mistake each.
__global__ void all_blocks_write_k(int *p) { p[0] = (int)blockIdx.x; } // one slot, every block

__global__ void read_other_block_k(int *p, int *out)
{
    if (blockIdx.x == 0)
        p[threadIdx.x] = 1;
    else
        out[threadIdx.x] = p[threadIdx.x]; // block 0's write: blocks are not ordered
}

__global__ void lane_reads_lane_k(int *out)
{
    __shared__ int s[32];
    s[threadIdx.x] = (int)threadIdx.x;
    out[threadIdx.x] = s[threadIdx.x ? threadIdx.x - 1 : 0]; // the lane before's slot, no barrier
}

__global__ void shuffle_no_fence_k(int *out)
{
    __shared__ int s[32];
    s[threadIdx.x] = (int)threadIdx.x;
    int v = __shfl_xor_sync(0xffffffffu, (int)threadIdx.x, 1); // a shuffle is no memory fence
    out[threadIdx.x] = v + s[threadIdx.x ^ 1];
}

__global__ void stale_shared_k(int *out)
{
    __shared__ int s[64];
    if (blockIdx.x == 0)
        s[threadIdx.x] = 7;
    __syncthreads();
    out[blockIdx.x * blockDim.x + threadIdx.x] = s[threadIdx.x]; // block 1 never wrote it
}

__global__ void one_past_k(float *p, int n) { p[n] = 1.0f; }

// 16 bytes through a float4 from an address 4 bytes past one
__global__ void misaligned_k(const float *p, float *out)
{
    float4 v = *(const float4 *)(p + 1);
    out[0] = v.x + v.y + v.z + v.w;
}

// Every thread writes its slot, a barrier, every thread reads a neighbour's;
// the next launch reads what this one wrote: no race.
__global__ void global_exchange_k(int *tmp, int *out)
{
    int t = threadIdx.x, n = blockDim.x, b = blockIdx.x * n;
    tmp[b + t] = t * 5;
    __syncthreads();
    out[b + t] = tmp[b + (t + 1) % n];
}
#endif

__global__ void fill_k(float *p, float v) { p[threadIdx.x] = v + (float)threadIdx.x; }

__global__ void scale_add_k(const float *src, float m, float *dst) { dst[threadIdx.x] += m * src[threadIdx.x]; }

// ---- helpers -------------------------------------------------------------

// Run fn in a child; its exit status and what it wrote to stderr.
template <class F> static int in_child(F fn, std::string *err)
{
    int pfd[2];
    if (pipe(pfd))
        return -1;
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(pfd[1], 2);
        close(pfd[0]);
        fn();
        _Exit(0);
    }
    close(pfd[1]);
    char buf[4096];
    ssize_t n;
    err->clear();
    while ((n = read(pfd[0], buf, sizeof buf)) > 0)
        err->append(buf, (size_t)n);
    close(pfd[0]);
    int st = 0;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static bool contains(const std::string &s, const char *what) { return s.find(what) != std::string::npos; }

// ---- tests ---------------------------------------------------------------

static void test_shuffles()
{
    const int B = 2, N = 96;
    float *x = dev<float>(B * N);
    double *d = dev<double>(B * N);
    int *id = dev<int>(B * N);
    G1_LAUNCH(shuffles_k, B, N, 0)(x, d, id);
    check(cudaGetLastError() == cudaSuccess, "launch of 2 blocks of 96 threads");
    float hx[B * N];
    double hd[B * N];
    int hid[B * N];
    down(hx, x, B * N), down(hd, d, B * N), down(hid, id, B * N);
    bool xor_ok = true, down_ok = true, id_ok = true;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < N; t++) {
            int w0 = t / 32 * 32, lane = t % 32;
            float want = 0;
            for (int l = 0; l < 32; l++)
                want += (float)((w0 + l) * 3 + 1);
            xor_ok &= hx[b * N + t] == want;
            double dw = lane + 5 < 32 ? 0.5 * (t + 5) : 0.5 * t;
            down_ok &= hd[b * N + t] == dw;
            id_ok &= hid[b * N + t] == (lane ^ 1);
        }
    check(xor_ok, "__shfl_xor_sync butterfly sums each warp");
    check(down_ok, "__shfl_down_sync (double) shifts, top lanes keep their own");
    check(id_ok, "__shfl_xor_sync (int) swaps neighbours");
    cudaFree(x), cudaFree(d), cudaFree(id);
}

static void test_barriers()
{
    const int B = 3, N = 256;
    int h[B * N], got[B * N];
    for (int i = 0; i < B * N; i++)
        h[i] = i * 7 + 1;
    int *in = dev<int>(B * N), *out = dev<int>(B * N);
    cudaMemcpy(in, h, sizeof h, cudaMemcpyHostToDevice);
    G1_LAUNCH(reverse_k, B, N, 0)(in, out);
    down(got, out, B * N);
    bool ok = true;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < N; t++)
            ok &= got[b * N + t] == h[b * N + N - 1 - t];
    check(ok, "__shared__ + __syncthreads: each block reverses its own row");
    int *e = dev<int>(100), he[100];
    G1_LAUNCH(early_exit_k, 1, 128, 0)(e);
    down(he, e, 100);
    ok = true;
    for (int t = 0; t < 100; t++)
        ok &= he[t] == 99 - t;
    check(ok, "threads that return early do not hold __syncthreads");
    cudaFree(in), cudaFree(out), cudaFree(e);
}

// A missing __syncthreads: the default schedule happens to hide it, a
// schedule where one warp runs ahead (G1EMU_ORDER=warps) does not; with the
// barrier every schedule agrees.
static void test_schedules()
{
    int hin[16], ref[256], got[256];
    for (int i = 0; i < 16; i++)
        hin[i] = i + 1;
    int *in = dev<int>(16), *out = dev<int>(256);
    cudaMemcpy(in, hin, sizeof hin, cudaMemcpyHostToDevice);
    const char *orders[] = {"sweep", "warps", "warps-reverse"};
    bool same[2][3];
#if defined(G1EMU_RACE)
    const int variants = 1; // the racy one is reported at once (test_races)
#else
    const int variants = 2;
#endif
    for (int racy = 0; racy < variants; racy++)
        for (int o = 0; o < 3; o++) {
            setenv("G1EMU_ORDER", orders[o], 1);
            G1_LAUNCH(passes_k, 1, 256, 0)(in, out, racy);
            down(got, out, 256);
            if (!racy && !o)
                memcpy(ref, got, sizeof ref);
            same[racy][o] = !memcmp(got, ref, sizeof ref);
        }
    unsetenv("G1EMU_ORDER");
    check(same[0][1] && same[0][2], "with its barriers a kernel gives one result under every schedule");
#if !defined(G1EMU_RACE)
    check(same[1][0] && !same[1][1] && !same[1][2],
          "a missing __syncthreads: hidden by the default schedule, caught by G1EMU_ORDER=warps(-reverse)");
#endif
    cudaFree(in), cudaFree(out);
}

static void test_caught()
{
    std::string err;
    int st = in_child(
        [] {
            float *o = dev<float>(64);
            G1_LAUNCH(divergent_k, 1, 64, 0)(o);
            cudaDeviceSynchronize(); // queued work runs when waited for
        },
        &err);
    check(st == 1 && contains(err, "deadlock"), "divergent __syncthreads / shuffle reported as a deadlock");
    st = in_child(
        [] {
            float *o = dev<float>(32);
            G1_LAUNCH(shuffle_after_exit_k, 1, 32, 0)(o);
            cudaDeviceSynchronize(); // queued work runs when waited for
        },
        &err);
    check(st == 1 && contains(err, "exited"), "a shuffle whose warp lost a lane is reported");
    st = in_child(
        [] {
            float *o = dev<float>(48);
            G1_LAUNCH(partial_warp_k, 1, 48, 0)(o);
            cudaDeviceSynchronize(); // queued work runs when waited for
        },
        &err);
    check(st == 1 && contains(err, "mask"), "a full-mask shuffle in a partial warp is reported");
    int *p = dev<int>(1);
    (void)cudaGetLastError();
    G1_LAUNCH(nop_k, 1, 2048, 0)(p);
    check(cudaGetLastError() == cudaErrorInvalidConfiguration, "block of 2048 threads: invalid configuration");
    G1_LAUNCH(nop_k, 0, 32, 0)(p);
    check(cudaGetLastError() == cudaErrorInvalidConfiguration, "grid of 0 blocks: invalid configuration");
    check(cudaGetLastError() == cudaSuccess, "cudaGetLastError clears the error");
    cudaFree(p);
}

#if defined(G1EMU_RACE)
static void test_races()
{
    int *tmp = dev<int>(3 * 64), *out = dev<int>(3 * 64), got[3 * 64];
    G1_LAUNCH(global_exchange_k, 3, 64, 0)(tmp, out);
    G1_LAUNCH(global_exchange_k, 3, 64, 0)(out, tmp); // reads what the last launch wrote
    down(got, tmp, 3 * 64);
    check(got[0] == 5 && got[63] == 0 && got[64 + 62] == 63 * 5,
          "race check: writes, a barrier, reads of other threads' writes pass");
    cudaFree(tmp), cudaFree(out);
    struct Case {
        const char *what, *expect;
        void (*run)();
    } cases[] = {
        {"a missing __syncthreads between reads and the next writes of shared memory", "race on shared memory",
         [] {
             int *in = dev<int>(16), *o = dev<int>(256);
             cudaMemset(in, 0, 64);
             G1_LAUNCH(passes_k, 1, 256, 0)(in, o, 1);
         }},
        {"two blocks writing one word of device memory", "in an earlier block of this launch",
         [] { G1_LAUNCH(all_blocks_write_k, 2, 1, 0)(dev<int>(1)); }},
        {"a block reading what another block of the launch wrote", "wrote it in an earlier block",
         [] { G1_LAUNCH(read_other_block_k, 2, 32, 0)(dev<int>(32), dev<int>(32)); }},
        {"a lane reading another lane's shared memory with no barrier", "a lane of the same warp",
         [] { G1_LAUNCH(lane_reads_lane_k, 1, 32, 0)(dev<int>(32)); }},
        {"a shuffle taken for a memory fence", "with no __syncthreads between",
         [] { G1_LAUNCH(shuffle_no_fence_k, 1, 32, 0)(dev<int>(32)); }},
        {"a read of shared memory this block never wrote", "that no thread of this block has written",
         [] { G1_LAUNCH(stale_shared_k, 2, 64, 0)(dev<int>(128)); }},
        {"a kernel's write one past the end of its allocation", "past its end",
         [] { G1_LAUNCH(one_past_k, 1, 1, 0)(dev<float>(10), 10); }},
        {"a float4 read from an address that is not a multiple of 16", "misaligned address",
         [] {
             float *p = dev<float>(8);
             cudaMemset(p, 0, 32);
             G1_LAUNCH(misaligned_k, 1, 1, 0)(p, dev<float>(1));
         }},
    };
    for (const Case &c : cases) {
        std::string err;
        int st = in_child(
            [&c] {
                c.run();
                cudaDeviceSynchronize();
            },
            &err);
        std::string what = std::string("race check: ") + c.what + " is reported";
        check(st == 1 && contains(err, c.expect), what.c_str());
        if (!(st == 1 && contains(err, c.expect)))
            fprintf(stderr, "  exit %d, stderr: %s\n", st, err.c_str());
    }
}
#endif

// The current device is per host thread, as CUDA's (0 until a thread sets
// it); a kernel launch into a stream of another device fails, as does a
// cuBLAS call with a handle made on another device.
static void test_devices()
{
    setenv("G1EMU_DEVICES", "2", 1);
    int cur = -1;
    check(cudaSetDevice(1) == cudaSuccess && cudaGetDevice(&cur) == cudaSuccess && cur == 1,
          "cudaSetDevice(1) with 2 devices: current");
    cudaStream_t s1;
    check(cudaStreamCreate(&s1) == cudaSuccess, "a stream of device 1");
    int *p = dev<int>(64);
    fprintf(stderr, "(the g1emu messages below are expected)\n");
    cudaSetDevice(0);
    G1_LAUNCH(nop_k, 1, 1, s1)(p);
    check(cudaGetLastError() == cudaErrorInvalidResourceHandle, "a launch into device 1's stream on device 0 fails");
    cudaSetDevice(1);
    G1_LAUNCH(nop_k, 1, 1, s1)(p);
    check(cudaGetLastError() == cudaSuccess && cudaStreamSynchronize(s1) == cudaSuccess,
          "the same launch on device 1 runs");
    int seen = -1;
    cudaError_t before = cudaSuccess, after = cudaSuccess;
    std::thread other([&] {
        cudaGetDevice(&seen);
        G1_LAUNCH(nop_k, 1, 1, s1)(p);
        before = cudaGetLastError();
        cudaSetDevice(1);
        G1_LAUNCH(nop_k, 1, 1, s1)(p);
        after = cudaGetLastError();
    });
    other.join();
    check(seen == 0 && before == cudaErrorInvalidResourceHandle && after == cudaSuccess,
          "another thread starts on device 0: it sets the device to launch");
    cudaGetDevice(&cur);
    check(cur == 1, "... which leaves this thread's device as it was");
    cublasHandle_t h;
    cublasCreate(&h);
    float *a = dev<float>(1), one = 1.0f, zero = 0.0f;
    cudaMemset(a, 0, sizeof(float));
    auto gemm = [&] {
        return cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 1, 1, 1, &one, a, CUDA_R_32F, 1, a, CUDA_R_32F, 1, &zero, a,
                            CUDA_R_32F, 1, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    };
    cudaSetDevice(0);
    cublasStatus_t wrong = gemm();
    float *a0 = dev<float>(1);
    cudaSetDevice(1);
    cublasStatus_t right = gemm();
    cublasStatus_t mixed = cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 1, 1, 1, &one, a0, CUDA_R_32F, 1, a, CUDA_R_32F,
                                        1, &zero, a, CUDA_R_32F, 1, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    check(wrong == CUBLAS_STATUS_EXECUTION_FAILED && right == CUBLAS_STATUS_SUCCESS &&
              mixed == CUBLAS_STATUS_INVALID_VALUE,
          "cuBLAS: a handle of device 1 refused on device 0, and memory of device 0");
    cudaDeviceSynchronize();
    cublasDestroy(h);
    cudaFree(a), cudaFree(a0);
    cudaStreamSynchronize(s1);
#if defined(G1EMU_RACE)
    // a kernel reading another device's memory (no peer access): a GPU
    // faults; the race build checks every access's device
    std::string err;
    int st = in_child(
        [] {
            cudaSetDevice(0);
            int *p0 = dev<int>(1);
            cudaSetDevice(1);
            G1_LAUNCH(nop_k, 1, 1, 0)(p0);
            cudaDeviceSynchronize();
        },
        &err);
    check(st == 1 && contains(err, "in an allocation of device 0, from kernel nop_k on device 1"),
          "a kernel on device 1 writing device 0's memory is reported");
#endif
    cudaStreamDestroy(s1);
    cudaFree(p);
    cudaSetDevice(0);
    unsetenv("G1EMU_DEVICES");
}

static void test_memory()
{
    float *d = dev<float>(10), h[10] = {0}, back[10];
    down(back, d, 10);
    check(isnan(back[0]) && isnan(back[9]), "fresh device memory reads as NaN");
    fprintf(stderr, "(the g1emu messages below are expected)\n");
    check(cudaMemcpy(h, d, 40, cudaMemcpyHostToDevice) == cudaErrorInvalidValue,
          "host-to-device copy into host memory refused");
    check(cudaMemcpy(d, h, 44, cudaMemcpyHostToDevice) == cudaErrorInvalidValue,
          "copy past the end of an allocation refused");
    check(cudaMemcpy(h, d + 1, 36, cudaMemcpyDeviceToHost) == cudaSuccess, "copy from inside an allocation");
    check(cudaFree(d + 1) == cudaErrorInvalidValue, "cudaFree of an interior pointer refused");
    check(cudaMemset(h, 0, 4) == cudaErrorInvalidValue, "cudaMemset of host memory refused");
    (void)cudaGetLastError();
    check(cudaFree(d) == cudaSuccess, "cudaFree");
    // the last error is per host thread, as CUDA's
    setenv("G1EMU_MALLOC_LIMIT", "16", 1);
    cudaError_t there = cudaSuccess;
    std::thread other([&there] {
        void *p = nullptr;
        (void)cudaMalloc(&p, 64);
        there = cudaGetLastError();
    });
    other.join();
    unsetenv("G1EMU_MALLOC_LIMIT");
    check(there == cudaErrorMemoryAllocation && cudaGetLastError() == cudaSuccess,
          "a failure on another thread is its last error, not this one's");

#if defined(__SANITIZE_ADDRESS__)
    printf("%-64s %s\n", "host access to device memory: not checked under AddressSanitizer", "skipped");
#else
    std::string err;
    for (int write = 0; write < 2; write++) {
        int st = in_child(
            [write] {
                volatile float *p = dev<float>(8);
                if (write)
                    p[7] = 1.0f;
                else
                    printf("%g\n", (double)p[0]);
            },
            &err);
        check(st == 1 && contains(err, "the host touched device memory"),
              write ? "a host write to device memory is reported" : "a host read of device memory is reported");
    }
    setenv("G1EMU_HOST_ACCESS", "1", 1); // an MPI with CUDA support reads device buffers
    float *open = dev<float>(4);
    check(isnan(open[0]), "G1EMU_HOST_ACCESS=1: device memory readable by the host");
    cudaFree(open);
    unsetenv("G1EMU_HOST_ACCESS");
#endif
}

static void test_cublas()
{
    // A = [1 2 3; 4 5 6] (2 x 3), B = [1 0; 0 1; 2 -1] (3 x 2): A B = [7 -1; 16 -1]
    cublasHandle_t h;
    cublasCreate(&h);
    const float one = 1, zero = 0, two = 2;
    // A column-major with lda 4, and A^T (3 x 2) column-major with lda 3
    float Acm[8] = {1, 4, 0, 0, 2, 5, 0, 0}, Acm3[4] = {3, 6, 0, 0};
    float Ah[12], At[6] = {1, 2, 3, 4, 5, 6};
    for (int i = 0; i < 8; i++)
        Ah[i] = Acm[i];
    for (int i = 0; i < 4; i++)
        Ah[8 + i] = Acm3[i];
    float Bh[6] = {1, 0, 2, 0, 1, -1}, Bt[6] = {1, 0, 0, 1, 2, -1};
    float *A = dev<float>(12), *AT = dev<float>(6), *B = dev<float>(6), *BT = dev<float>(6), *C = dev<float>(4);
    cudaMemcpy(A, Ah, sizeof Ah, cudaMemcpyHostToDevice);
    cudaMemcpy(AT, At, sizeof At, cudaMemcpyHostToDevice);
    cudaMemcpy(B, Bh, sizeof Bh, cudaMemcpyHostToDevice);
    cudaMemcpy(BT, Bt, sizeof Bt, cudaMemcpyHostToDevice);
    const float want[4] = {7, 16, -1, -1};
    struct {
        cublasOperation_t ta, tb;
        const float *a, *b;
        int lda, ldb;
        const char *what;
    } cases[] = {{CUBLAS_OP_N, CUBLAS_OP_N, A, B, 4, 3, "GemmEx NN (lda 4 > m)"},
                 {CUBLAS_OP_T, CUBLAS_OP_N, AT, B, 3, 3, "GemmEx TN"},
                 {CUBLAS_OP_N, CUBLAS_OP_T, A, BT, 4, 2, "GemmEx NT"},
                 {CUBLAS_OP_T, CUBLAS_OP_T, AT, BT, 3, 2, "GemmEx TT"}};
    for (auto &c : cases) {
        cudaMemset(C, 0xff, 16); // NaN: beta = 0 must not read C
        cublasStatus_t st = cublasGemmEx(h, c.ta, c.tb, 2, 2, 3, &one, c.a, CUDA_R_32F, c.lda, c.b, CUDA_R_32F,
                                         c.ldb, &zero, C, CUDA_R_32F, 2, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
        float got[4];
        down(got, C, 4);
        bool ok = st == CUBLAS_STATUS_SUCCESS;
        for (int i = 0; i < 4; i++)
            ok &= got[i] == want[i];
        check(ok, c.what);
    }
    cublasStatus_t st = cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 3, &one, A, CUDA_R_32F, 4, B, CUDA_R_32F, 3,
                                     &two, C, CUDA_R_32F, 2, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    float got[4];
    down(got, C, 4);
    check(st == CUBLAS_STATUS_SUCCESS && got[0] == 21 && got[1] == 48 && got[3] == -3, "GemmEx beta = 2 adds 2 C");
    // bf16 operands: 1 + 2^-8 is not a bf16 value; the caller rounds, the GEMM multiplies what it is given
    uint16_t a16[1] = {0x3f81}, b16[1] = {0x4000}; // 1.0078125, 2
    uint16_t *A16 = dev<uint16_t>(1), *B16 = dev<uint16_t>(1);
    cudaMemcpy(A16, a16, 2, cudaMemcpyHostToDevice);
    cudaMemcpy(B16, b16, 2, cudaMemcpyHostToDevice);
    st = cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 1, 1, 1, &one, A16, CUDA_R_16BF, 1, B16, CUDA_R_16BF, 1, &zero, C,
                      CUDA_R_32F, 1, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    down(got, C, 1);
    check(st == CUBLAS_STATUS_SUCCESS && got[0] == 2.015625f, "GemmEx bf16 in, float32 out");
    fprintf(stderr, "(the g1emu messages below are expected)\n");
    st = cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 3, &one, A, CUDA_R_32F, 1, B, CUDA_R_32F, 3, &zero, C,
                      CUDA_R_32F, 2, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    check(st == CUBLAS_STATUS_INVALID_VALUE, "GemmEx lda < m refused");
    st = cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 3, &one, A, CUDA_R_32F, 6, B, CUDA_R_32F, 3, &zero, C,
                      CUDA_R_32F, 2, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    check(st == CUBLAS_STATUS_INVALID_VALUE, "GemmEx operand past its allocation refused");
    st = cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 3, &one, Ah, CUDA_R_32F, 4, B, CUDA_R_32F, 3, &zero, C,
                      CUDA_R_32F, 2, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    check(st == CUBLAS_STATUS_INVALID_VALUE, "GemmEx with a host operand refused");
    cudaFree(A), cudaFree(AT), cudaFree(B), cudaFree(BT), cudaFree(C), cudaFree(A16), cudaFree(B16);
    cublasDestroy(h);
}

// Stream work runs when the host waits for it (emu_runtime.cpp, "streams"):
// each ordering mistake of the host must show.
static void test_streams()
{
    setenv("G1EMU_STREAMS", "defer", 1);
    cudaStream_t s, b;
    cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
    cudaStreamCreate(&b); // blocking: ordered with the legacy stream
    float *d = dev<float>(32), *d2 = dev<float>(32), *h = nullptr, page[32];
    cudaMallocHost((void **)&h, 32 * sizeof(float));
    G1_LAUNCH(fill_k, 1, 32, s)(d, 10.0f);
    cudaMemcpyAsync(h, d, 32 * sizeof(float), cudaMemcpyDeviceToHost, s);
    check(isnan(h[0]) && isnan(h[31]), "pinned copy destination read before the sync: NaN");
    cudaStreamSynchronize(s);
    check(h[0] == 10.0f && h[31] == 41.0f, "... and the values after cudaStreamSynchronize");

    G1_LAUNCH(fill_k, 1, 32, s)(d2, 1.0f);
    down(page, d2, 32);
    check(isnan(page[5]), "cudaMemcpy does not wait for a non-blocking stream");
    cudaStreamSynchronize(s);
    G1_LAUNCH(fill_k, 1, 32, b)(d2, 2.0f);
    down(page, d2, 32);
    check(page[5] == 7.0f, "cudaMemcpy waits for a blocking stream");

    G1_LAUNCH(fill_k, 1, 32, s)(d, 3.0f);
    cudaMemcpyAsync(page, d, 32 * sizeof(float), cudaMemcpyDeviceToHost, s);
    check(page[1] == 4.0f, "a copy into pageable memory returns when done");

    for (int i = 0; i < 32; i++)
        page[i] = 100.0f + (float)i;
    cudaMemcpyAsync(d, page, 32 * sizeof(float), cudaMemcpyHostToDevice, s);
    page[0] = -1.0f; // allowed: pageable memory is staged when the copy is queued
    cudaStreamSynchronize(s);
    down(page, d, 32);
    check(page[0] == 100.0f, "a copy from pageable memory takes its bytes when queued");

    cudaEvent_t e0, e1;
    cudaEventCreate(&e0), cudaEventCreate(&e1);
    cudaEventRecord(e0, s);
    G1_LAUNCH(fill_k, 1, 32, s)(d, 0.0f);
    cudaEventRecord(e1, s);
    float ms = -1;
    check(cudaEventElapsedTime(&ms, e0, e1) == cudaErrorNotReady, "elapsed time of records not waited for: not ready");
    cudaEventSynchronize(e1);
    check(cudaEventElapsedTime(&ms, e0, e1) == cudaSuccess && ms >= 0, "... and ready after cudaEventSynchronize");

    // stream t copies what s writes: only cudaStreamWaitEvent orders them
    cudaStream_t t;
    cudaStreamCreateWithFlags(&t, cudaStreamNonBlocking);
    for (int wait = 0; wait < 2; wait++) {
        float *x = dev<float>(32), *y = dev<float>(32);
        G1_LAUNCH(fill_k, 1, 32, s)(x, 5.0f);
        cudaEventRecord(e0, s);
        if (wait)
            cudaStreamWaitEvent(t, e0, 0);
        cudaMemcpyAsync(y, x, 32 * sizeof(float), cudaMemcpyDeviceToDevice, t);
        cudaStreamSynchronize(t);
        cudaMemcpyAsync(page, y, 32 * sizeof(float), cudaMemcpyDeviceToHost, t);
        check(wait ? page[2] == 7.0f : isnan(page[2]),
              wait ? "cudaStreamWaitEvent orders one stream after another's record"
                   : "without it, another stream's work has not run");
        cudaFree(x), cudaFree(y); // waits for the device
    }

    cublasHandle_t hb;
    cublasCreate(&hb);
    cublasSetStream(hb, s);
    const float one = 1, zero = 0, a[4] = {1, 2, 3, 4};
    float *A = dev<float>(4), *C = dev<float>(4);
    cudaMemcpy(A, a, sizeof a, cudaMemcpyHostToDevice);
    cublasGemmEx(hb, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, &one, A, CUDA_R_32F, 2, A, CUDA_R_32F, 2, &zero, C,
                 CUDA_R_32F, 2, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    down(page, C, 4);
    check(isnan(page[0]), "a GEMM runs on its handle's stream, when waited for");
    cudaStreamSynchronize(s);
    down(page, C, 4);
    check(page[0] == 7.0f && page[3] == 22.0f, "... and gives its product then");
    cublasDestroy(hb);

    // the host touches pinned memory that a queued copy reads (up) or
    // overwrites (down) before synchronising
    std::string err;
    for (int up = 1; up >= 0; up--) {
        int st = in_child(
            [&] {
                if (up)
                    cudaMemcpyAsync(d, h, 32 * sizeof(float), cudaMemcpyHostToDevice, s);
                else
                    cudaMemcpyAsync(h, d, 32 * sizeof(float), cudaMemcpyDeviceToHost, s);
                h[3] = 1e9f; // the copy has not run yet
                cudaStreamSynchronize(s);
            },
            &err);
        check(st == 1 && contains(err, up ? "changed that memory before the copy ran"
                                          : "wrote to that memory before the copy ran"),
              up ? "pinned host memory changed while a copy from it is queued: reported"
                 : "pinned host memory written while a copy into it is queued: reported");
    }
    cudaMemcpyAsync(h, d, 32 * sizeof(float), cudaMemcpyDeviceToHost, s);
    cudaMemcpyAsync(h + 8, d, 8 * sizeof(float), cudaMemcpyDeviceToHost, s);
    check(cudaStreamSynchronize(s) == cudaSuccess && h[8] == h[0],
          "two queued copies into the same pinned bytes: no false report");
    for (int i = 0; i < 32; i++)
        h[i] = (float)i;
    cudaMemcpyAsync(d, h, 32 * sizeof(float), cudaMemcpyHostToDevice, s); // in place: up, work, down
    G1_LAUNCH(fill_k, 1, 4, s)(d, 5.0f);
    cudaMemcpyAsync(h, d, 32 * sizeof(float), cudaMemcpyDeviceToHost, s);
    check(cudaStreamSynchronize(s) == cudaSuccess && h[0] == 5.0f && h[31] == 31.0f,
          "a copy up from pinned memory, then one down into it, one synchronise: no false report");

    // the caller's memory pinned in place (cudaHostRegister) is pinned
    // memory: a copy from it is queued, and the host may not change it until
    // the copy ran; unpinned, it is pageable again
    float *reg = (float *)malloc(32 * sizeof(float));
    check(reg && cudaHostRegister(reg, 32 * sizeof(float), cudaHostRegisterDefault) == cudaSuccess,
          "cudaHostRegister");
    check(cudaHostRegister(reg + 4, 4 * sizeof(float), 0) == cudaErrorHostMemoryAlreadyRegistered,
          "registering pinned memory again: refused");
    (void)cudaGetLastError();
    int rst = in_child(
        [&] {
            cudaMemcpyAsync(d, reg, 32 * sizeof(float), cudaMemcpyHostToDevice, s);
            reg[3] = 1e9f; // the copy has not run yet
            cudaStreamSynchronize(s);
        },
        &err);
    check(rst == 1 && contains(err, "changed that memory before the copy ran"),
          "registered memory changed while a copy from it is queued: reported");
    fprintf(stderr, "(the g1emu message below is expected)\n");
    check(cudaFreeHost(reg) == cudaErrorInvalidValue, "cudaFreeHost of registered memory: refused");
    (void)cudaGetLastError();
    check(cudaHostUnregister(reg) == cudaSuccess, "cudaHostUnregister");
    check(cudaHostUnregister(reg) == cudaErrorHostMemoryNotRegistered, "cudaHostUnregister twice: refused");
    (void)cudaGetLastError();
    for (int i = 0; i < 32; i++)
        reg[i] = (float)i;
    cudaMemcpyAsync(d, reg, 32 * sizeof(float), cudaMemcpyHostToDevice, s);
    reg[0] = -1.0f; // allowed again: pageable memory is staged when the copy is queued
    cudaStreamSynchronize(s);
    down(page, d, 32);
    check(page[0] == 0.0f && page[31] == 31.0f, "unregistered memory is pageable again");
    free(reg);

    cudaStream_t gone;
    cudaStreamCreate(&gone);
    cudaStreamDestroy(gone);
    fprintf(stderr, "(the g1emu message below is expected)\n");
    check(cudaMemsetAsync(d, 0, 4, gone) == cudaErrorInvalidResourceHandle, "work on a destroyed stream refused");
    (void)cudaGetLastError();

    // latest: of two streams' independent work the later given runs first;
    // an event wait keeps the order
    setenv("G1EMU_STREAMS", "latest", 1);
    cudaEvent_t ev;
    check(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming) == cudaSuccess, "cudaEventCreateWithFlags");
    G1_LAUNCH(fill_k, 1, 32, s)(d2, 20.0f);
    G1_LAUNCH(fill_k, 1, 32, t)(d2, 30.0f);
    cudaDeviceSynchronize();
    down(page, d2, 32);
    check(page[0] == 20.0f, "G1EMU_STREAMS=latest: another stream's later work, not waited for, runs first");
    G1_LAUNCH(fill_k, 1, 32, s)(d2, 20.0f);
    cudaEventRecord(ev, s);
    cudaStreamWaitEvent(t, ev, 0);
    G1_LAUNCH(fill_k, 1, 32, t)(d2, 30.0f);
    cudaDeviceSynchronize();
    down(page, d2, 32);
    check(page[0] == 30.0f, "G1EMU_STREAMS=latest: ... and after the event it waits for");
    G1_LAUNCH(fill_k, 1, 32, s)(d2, 20.0f);
    G1_LAUNCH(fill_k, 1, 32, s)(d2, 40.0f);
    cudaStreamSynchronize(s);
    down(page, d2, 32);
    check(page[0] == 40.0f, "G1EMU_STREAMS=latest: one stream's work in its order");
    cudaEventDestroy(ev);

    setenv("G1EMU_STREAMS", "sync", 1);
    G1_LAUNCH(fill_k, 1, 32, s)(d2, 8.0f);
    down(page, d2, 32);
    check(page[0] == 8.0f, "G1EMU_STREAMS=sync: everything runs when given");
    unsetenv("G1EMU_STREAMS");

    cudaEventDestroy(e0), cudaEventDestroy(e1);
    cudaFreeHost(h), cudaFree(d), cudaFree(d2), cudaFree(A), cudaFree(C);
    cudaStreamDestroy(s), cudaStreamDestroy(b), cudaStreamDestroy(t);
}

// Stream capture and graph launches: the captured work does not run when
// given; each launch runs it again on the values device memory holds then;
// a host wait inside a capture is refused and fails the capture.
static void test_graphs()
{
    cudaStream_t s;
    cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
    float *src = dev<float>(32), *dst = dev<float>(32), h[32], got[32];
    cudaGraph_t g;
    cudaGraphExec_t x;
    check(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed) == cudaSuccess, "cudaStreamBeginCapture");
    cudaStreamCaptureStatus cs;
    cudaStreamIsCapturing(s, &cs);
    check(cs == cudaStreamCaptureStatusActive, "cudaStreamIsCapturing: active");
    G1_LAUNCH(fill_k, 1, 32, s)(dst, 1.0f);
    G1_LAUNCH(scale_add_k, 1, 32, s)(src, 2.0f, dst);
    check(cudaStreamEndCapture(s, &g) == cudaSuccess && g, "cudaStreamEndCapture");
    check(cudaGraphInstantiate(&x, g, 0) == cudaSuccess, "cudaGraphInstantiate");
    cudaDeviceSynchronize();
    down(got, dst, 32);
    check(isnan(got[0]), "captured work does not run when given");
    bool ok = true;
    for (int round = 1; round <= 2; round++) {
        for (int i = 0; i < 32; i++)
            h[i] = (float)(round * 10);
        cudaMemcpy(src, h, sizeof h, cudaMemcpyHostToDevice);
        cudaGraphLaunch(x, s);
        cudaStreamSynchronize(s);
        down(got, dst, 32);
        for (int i = 0; i < 32; i++)
            ok &= got[i] == 1.0f + (float)i + 2.0f * (float)(round * 10);
    }
    check(ok, "each graph launch runs the work again, on device memory as it is then");
    cudaGraphExecDestroy(x);
    cudaGraphDestroy(g);
    fprintf(stderr, "(the g1emu message below is expected)\n");
    cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed);
    G1_LAUNCH(fill_k, 1, 32, s)(dst, 1.0f);
    check(cudaStreamSynchronize(s) == cudaErrorStreamCaptureUnsupported, "a host wait inside a capture refused");
    check(cudaStreamEndCapture(s, &g) == cudaErrorStreamCaptureInvalidated && !g, "... and the capture fails");
    (void)cudaGetLastError();
    cudaStreamIsCapturing(s, &cs);
    check(cs == cudaStreamCaptureStatusNone, "cudaStreamIsCapturing: none after the end");
    // G1EMU_GRAPH_FAIL: a driver that refuses graphs at one of three places
    fprintf(stderr, "(the g1emu message below is expected)\n");
    setenv("G1EMU_GRAPH_FAIL", "launch", 1);
    check(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed) == cudaSuccess, "GRAPH_FAIL=launch: capture begins");
    G1_LAUNCH(fill_k, 1, 32, s)(dst, 1.0f);
    check(cudaGetLastError() == cudaErrorStreamCaptureUnsupported, "... a launch into it is refused");
    check(cudaStreamEndCapture(s, &g) == cudaErrorStreamCaptureInvalidated && !g, "... and the capture fails");
    (void)cudaGetLastError();
    G1_LAUNCH(fill_k, 1, 32, s)(dst, 3.0f);
    cudaStreamSynchronize(s);
    down(got, dst, 32);
    check(cudaGetLastError() == cudaSuccess && got[5] == 3.0f + 5, "... launches outside a capture run");
    setenv("G1EMU_GRAPH_FAIL", "begin", 1);
    check(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed) == cudaErrorNotSupported,
          "GRAPH_FAIL=begin: the capture is refused");
    (void)cudaGetLastError();
    cudaStreamIsCapturing(s, &cs);
    check(cs == cudaStreamCaptureStatusNone, "... and the stream is not capturing");
    setenv("G1EMU_GRAPH_FAIL", "instantiate", 1);
    cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed);
    G1_LAUNCH(fill_k, 1, 32, s)(dst, 1.0f);
    check(cudaStreamEndCapture(s, &g) == cudaSuccess && g, "GRAPH_FAIL=instantiate: the capture ends");
    check(cudaGraphInstantiate(&x, g, 0) == cudaErrorNotSupported, "... its instantiation is refused");
    (void)cudaGetLastError();
    cudaGraphDestroy(g);
    unsetenv("G1EMU_GRAPH_FAIL");
    cudaFree(src), cudaFree(dst);
    cudaStreamDestroy(s);
}

// The tensor-core emulation: a product against the host's, and TF32's rounding.
static void test_mma()
{
    float hA[128], hB[64], hD[128];
    for (int i = 0; i < 128; i++)
        hA[i] = (float)((i * 37) % 17 - 8) / 4; // exact in TF32
    for (int i = 0; i < 64; i++)
        hB[i] = (float)((i * 11) % 13 - 6) / 8;
    float *A = dev<float>(128), *B = dev<float>(64), *D = dev<float>(128);
    cudaMemcpy(A, hA, sizeof hA, cudaMemcpyHostToDevice);
    cudaMemcpy(B, hB, sizeof hB, cudaMemcpyHostToDevice);
    G1_LAUNCH(mma_k, 1, 32, 0)(A, B, D);
    cudaDeviceSynchronize();
    down(hD, D, 128);
    bool ok = true;
    for (int r = 0; r < 16; r++)
        for (int c = 0; c < 8; c++) {
            float want = 1;
            for (int k = 0; k < 8; k++)
                want += hA[r * 8 + k] * hB[k * 8 + c];
            ok = ok && hD[r * 8 + c] == want;
        }
    check(ok, "mma m16n8k8 tf32: 16 x 8 x 8 product + C by the PTX layout");
    float one_ulp = 1.0f + 1.0f / 1024, half_ulp = 1.0f + 1.0f / 2048, below = 1.0f + 1.0f / 4096;
    float r_half = g1emu::bits_float(g1emu::tf32_rna(half_ulp)), r_below = g1emu::bits_float(g1emu::tf32_rna(below));
    float r_one = g1emu::bits_float(g1emu::tf32_rna(one_ulp)), r_neg = g1emu::bits_float(g1emu::tf32_rna(-half_ulp));
    check(r_half == one_ulp && r_below == 1.0f && r_one == one_ulp && r_neg == -one_ulp,
          "tf32 rounding: nearest, ties away from zero");
    cudaFree(A), cudaFree(B), cudaFree(D);
}

extern "C" long g1emu_fail_calls(long k);
extern "C" const char *g1emu_unread(void);

// G1EMU_FAIL_CALL (g1emu_fail_calls in-process): the K-th call fails as a
// real one can, once, and a launch's failure shows at cudaGetLastError.
static void test_fail_calls()
{
    fprintf(stderr, "(the g1emu messages below are expected)\n");
    g1emu_fail_calls(0);
    void *p = nullptr;
    float *d = dev<float>(32), got[32];
    cudaStream_t s;
    cudaStreamCreate(&s);
    check(g1emu_fail_calls(0) == 2, "calls counted (cudaMalloc, cudaStreamCreate)");
    g1emu_fail_calls(2);
    check(cudaMalloc(&p, 64) == cudaSuccess && p, "G1EMU_FAIL_CALL=2: the first call succeeds");
    cudaFree(p);
    check(cudaMalloc(&p, 64) == cudaErrorMemoryAllocation && !p, "the second fails: no memory, a NULL pointer");
    check(cudaGetLastError() == cudaErrorMemoryAllocation && cudaGetLastError() == cudaSuccess,
          "... its error the last error, once (not sticky)");
    check(cudaMalloc(&p, 64) == cudaSuccess && p, "the third succeeds");
    cudaFree(p);
    g1emu_fail_calls(1);
    G1_LAUNCH(fill_k, 1, 32, s)(d, 1.0f);
    check(cudaPeekAtLastError() == cudaErrorLaunchOutOfResources &&
              cudaGetLastError() == cudaErrorLaunchOutOfResources && cudaGetLastError() == cudaSuccess,
          "a failed launch: told by cudaPeekAtLastError, then cudaGetLastError, once");
    cudaStreamSynchronize(s);
    down(got, d, 32);
    check(isnan(got[0]) && !g1emu_unread()[0], "... nothing ran, and its error was read in time");
    g1emu_fail_calls(1);
    G1_LAUNCH(fill_k, 1, 32, s)(d, 1.0f);
    cudaMemsetAsync(d, 0, 4, s);
    check(strstr(g1emu_unread(), "fill_k") && strstr(g1emu_unread(), "cudaMemsetAsync"),
          "a failed launch's error not read before the next call: reported");
    (void)cudaGetLastError();
    g1emu_fail_calls(1);
    check(cudaMemcpyAsync(d, got, 4, cudaMemcpyHostToDevice, s) == cudaErrorInvalidValue,
          "a failed copy: cudaErrorInvalidValue");
    (void)cudaGetLastError();
    cublasHandle_t h;
    g1emu_fail_calls(1);
    check(cublasCreate(&h) == CUBLAS_STATUS_ALLOC_FAILED, "a failed cublasCreate: CUBLAS_STATUS_ALLOC_FAILED");
    g1emu_fail_calls(0);
    cudaStreamDestroy(s);
    cudaFree(d);
}

int main()
{
    test_shuffles();
    test_mma();
    test_barriers();
    test_schedules();
    test_caught();
#if defined(G1EMU_RACE)
    test_races();
#endif
    test_memory();
    test_devices();
    test_cublas();
    test_streams();
    test_graphs();
    test_fail_calls();
    printf("%s: %d failure(s)\n", failures ? "FAIL" : "PASS", failures);
    return failures ? 1 : 0;
}
