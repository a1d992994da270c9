// g1emu: runs the CUDA backend's kernels on the CPU, for tests on machines
// without a GPU. The .cu files are compiled as C++ by the host compiler with
// this header in front (see emu_*.cpp); every CUDA thread of a block is a
// fiber, __syncthreads and the warp shuffles are barriers between fibers,
// blocks run one after another. Device memory is host memory that the
// runtime (emu_runtime.cpp) tracks, so copies, memsets, frees and cuBLAS
// operands are checked against the allocations, and fresh allocations are
// filled with NaN bytes so reads of unwritten memory show up.
//
// What it catches: index and reduction mistakes, barrier divergence (a
// thread missing a __syncthreads or a shuffle its warp waits in: reported as
// a deadlock), shuffles over partial warps, bad launch configurations, reads
// of memory never written, copies in the wrong direction or past an
// allocation, cuBLAS leading dimensions that leave the operand.
// Races: fibers switch only at barriers, so a race shows only as a
// different result under another schedule. G1EMU_ORDER=warps runs each warp
// up to its next __syncthreads before the next warp (warps-reverse: last
// warp, lane and block first); the cuda-emu suite runs cuda_ops under both,
// which catches some missing __syncthreads. The race check (G1EMU_RACE
// builds, the *_emu_race tests; emu_runtime.cpp, "races and bounds") sees
// every load and store of the kernels and reports each race where it
// happens, in shared or device memory, between warps, lanes of one warp or
// blocks of one launch; also reads of shared memory the block never wrote
// and a kernel's accesses past the end of an allocation.
// Stream ordering: work given to a stream runs only when the host waits
// for it (emu_runtime.cpp, "streams"), so a result read before its stream
// was synchronised is stale or NaN, pinned memory changed under a queued
// copy is reported, and streams are ordered only as CUDA orders them.
// Device memory is out of the host's reach outside queued work: a host
// read or write of it is reported (G1EMU_HOST_ACCESS=1 allows it).
// What it cannot: device numerics (host libm), performance, true
// concurrency between streams (the engine queues its work on one). Passing
// here is not passing on a GPU.
#ifndef G1EMU_H
#define G1EMU_H

#include <cuda_runtime_api.h>
#include <cuda_bf16.h>
#include <vector_functions.h>

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <functional>

namespace g1emu {



// The running thread's coordinates (valid inside a kernel).
struct Cur {
    uint3 tid;
    uint3 bid;
    dim3 bdim;
    dim3 gdim;
};
extern Cur cur;

void sync_block();                            // __syncthreads
void warp_exchange(unsigned mask, const void *mine, size_t size, int from_lane, void *out);

// Launch `body` (which calls the kernel with its arguments) over grid x block.
void run_kernel(const char *name, dim3 grid, dim3 block, cudaStream_t stream, const std::function<void()> &body);

struct Launcher {
    const char *name;
    dim3 grid, block;
    cudaStream_t stream;
    template <class K> auto bind(K k) const
    {
        Launcher self = *this;
        return [self, k](auto... args) {
            run_kernel(self.name, self.grid, self.block, self.stream, [=] { k(args...); });
        };
    }
};

template <class T> T shfl_xor(unsigned mask, T v, int o)
{
    static_assert(sizeof(T) <= 8, "shuffle of more than 8 bytes");
    T r;
    int lane = (int)(cur.tid.x + cur.tid.y * cur.bdim.x + cur.tid.z * cur.bdim.x * cur.bdim.y) & 31;
    warp_exchange(mask, &v, sizeof v, lane ^ o, &r);
    return r;
}

template <class T> T shfl_down(unsigned mask, T v, unsigned d)
{
    static_assert(sizeof(T) <= 8, "shuffle of more than 8 bytes");
    T r;
    int lane = (int)(cur.tid.x + cur.tid.y * cur.bdim.x + cur.tid.z * cur.bdim.x * cur.bdim.y) & 31;
    int from = lane + (int)d < 32 ? lane + (int)d : lane;
    warp_exchange(mask, &v, sizeof v, from, &r);
    return r;
}

} // namespace g1emu

#define threadIdx (::g1emu::cur.tid)
#define blockIdx (::g1emu::cur.bid)
#define blockDim (::g1emu::cur.bdim)
#define gridDim (::g1emu::cur.gdim)

// A block's fibers share a kernel's statics, and blocks run one at a time:
// exactly the lifetime and sharing of __shared__ memory.
#undef __shared__
#define __shared__ static
#ifndef __launch_bounds__
#define __launch_bounds__(...)
#endif

#define G1_LAUNCH(kernel, grid, block, stream)                                                                 \
    (::g1emu::Launcher{#kernel, dim3(grid), dim3(block), (stream)}.bind(kernel))

static inline void __syncthreads(void) { ::g1emu::sync_block(); }
template <class T> static inline T __shfl_xor_sync(unsigned mask, T v, int o) { return ::g1emu::shfl_xor(mask, v, o); }
template <class T> static inline T __shfl_down_sync(unsigned mask, T v, unsigned d)
{
    return ::g1emu::shfl_down(mask, v, d);
}
template <class T> static inline T __ldg(const T *p) { return *p; }
static inline float __int_as_float(int i)
{
    float f;
    memcpy(&f, &i, sizeof f);
    return f;
}

// rounded on their own, never fused into a multiply-add, as nvcc keeps
// them: the empty asm makes the rounded result a value g++ cannot fuse
// across, even in the build that lets it contract the rest (-ffp-contract=fast,
// the cuda_*_emu_fma tests)
static inline float g1emu_rounded(float r)
{
#if defined(__x86_64__)
    __asm__("" : "+x"(r));
#else
    volatile float v = r;
    r = v;
#endif
    return r;
}
static inline float __fmul_rn(float a, float b) { return g1emu_rounded(a * b); }
static inline float __fadd_rn(float a, float b) { return g1emu_rounded(a + b); }

static inline int min(int a, int b) { return a < b ? a : b; }
static inline int max(int a, int b) { return a > b ? a : b; }
static inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
static inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
static inline long long min(long long a, long long b) { return a < b ? a : b; }
static inline long long max(long long a, long long b) { return a > b ? a : b; }
static inline size_t min(size_t a, size_t b) { return a < b ? a : b; }
static inline size_t max(size_t a, size_t b) { return a > b ? a : b; }

#endif
