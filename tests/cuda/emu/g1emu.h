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
// blocks of one launch; also reads of shared memory the block never wrote,
// a kernel's accesses past the end of an allocation, and accesses whose
// type promises an alignment the address lacks (a GPU faults on them).
// Stream ordering: work given to a stream runs only when the host waits
// for it (emu_runtime.cpp, "streams"), so a result read before its stream
// was synchronised is stale or NaN, pinned memory changed under a queued
// copy is reported, and streams are ordered only as CUDA orders them
// (G1EMU_STREAMS=latest: of the ready work the latest given runs first, so
// work no event orders overtakes earlier work on other streams).
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

// Every lane's `size` bytes (at most 32) to every lane, lane i's at
// out + i * size: one barrier of the whole warp (all 32 lanes live).
void warp_gather(const void *mine, size_t size, void *out);

inline float bits_float(uint32_t w)
{
    float f;
    memcpy(&f, &w, sizeof f);
    return f;
}

// cvt.rna.tf32.f32: x to 10 bits of mantissa, nearest, ties away from zero
// (a float32 bit pattern, the low 13 bits 0); infinities and NaN kept.
inline uint32_t tf32_rna(float x)
{
    uint32_t w;
    memcpy(&w, &x, sizeof w);
    if ((w & 0x7f800000u) == 0x7f800000u)
        return (w & 0x7fffffu) ? 0x7fffffffu : w;
    return (w + 0x1000u) & 0xffffe000u;
}

// mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 with c as C and D:
// the warp's A (16 x 8) and B (8 x 8) in PTX's fragment layout (g = lane / 4,
// t = lane % 4; a0 A[g][t], a1 A[g+8][t], a2 A[g][t+4], a3 A[g+8][t+4]; b0
// B[t][g], b1 B[t+4][g]; c0, c1 D[g][2t, 2t+1], c2, c3 D[g+8][2t, 2t+1]).
// The tensor core reads an operand's upper 19 bits (TF32); their products
// are exact in float, added in k order onto c, each sum rounded to float (a
// tensor core adds them in its own order and rounding: tests hold
// tolerances, not bits, against it).
// One mma's A and B registers of every lane of the warp (a barrier of the
// whole warp), and this lane's g = lane / 4 and t = lane % 4.
struct MmaFrag {
    uint32_t a[4], b[2];
};
inline void mma_gather(const uint32_t a[4], const uint32_t b[2], MmaFrag all[32], int &g, int &t)
{
    MmaFrag mine = {{a[0], a[1], a[2], a[3]}, {b[0], b[1]}};
    warp_gather(&mine, sizeof mine, all);
    int lane = (int)(cur.tid.x + cur.tid.y * cur.bdim.x + cur.tid.z * cur.bdim.x * cur.bdim.y) & 31;
    g = lane >> 2, t = lane & 3;
}

inline void mma_m16n8k8_tf32(float c[4], const uint32_t a[4], const uint32_t b[2])
{
    MmaFrag all[32];
    int g, t;
    mma_gather(a, b, all, g, t);
    for (int i = 0; i < 4; i++) {
        int row = g + (i >= 2 ? 8 : 0), col = 2 * t + (i & 1);
        float acc = c[i];
        for (int k = 0; k < 8; k++) {
            float x = bits_float(all[row % 8 * 4 + k % 4].a[(row >= 8 ? 1 : 0) + (k >= 4 ? 2 : 0)] & 0xffffe000u);
            float y = bits_float(all[col * 4 + k % 4].b[k >= 4 ? 1 : 0] & 0xffffe000u);
            acc += x * y; // exact product: fused or not, one rounding
        }
        c[i] = acc;
    }
}

// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 with c as C and D:
// each register two bf16, the lower index in the low half (g = lane / 4,
// t = lane % 4; a0 A[g][2t, 2t+1], a1 A[g+8][2t, 2t+1], a2 A[g][2t+8, 2t+9],
// a3 A[g+8][2t+8, 2t+9]; b0 B[2t, 2t+1][g], b1 B[2t+8, 2t+9][g]; c as
// m16n8k8's). Products of bf16 are exact in float, added in k order onto c,
// each sum rounded to float (tests hold tolerances against a tensor core).
inline void mma_m16n8k16_bf16(float c[4], const uint32_t a[4], const uint32_t b[2])
{
    MmaFrag all[32];
    int g, t;
    mma_gather(a, b, all, g, t);
    auto half = [](uint32_t w, int hi) { return bits_float((hi ? w >> 16 : w & 0xffffu) << 16); };
    for (int i = 0; i < 4; i++) {
        int row = g + (i >= 2 ? 8 : 0), col = 2 * t + (i & 1);
        float acc = c[i];
        for (int k = 0; k < 16; k++) {
            // A[row][k]: lane (row % 8) * 4 + (k % 8) / 2, register by row >= 8 and k >= 8
            float x = half(all[row % 8 * 4 + k % 8 / 2].a[(row >= 8 ? 1 : 0) + (k >= 8 ? 2 : 0)], k & 1);
            // B[k][col]: lane col * 4 + (k % 8) / 2, register by k >= 8
            float y = half(all[col * 4 + k % 8 / 2].b[k >= 8 ? 1 : 0], k & 1);
            acc += x * y; // exact product: fused or not, one rounding
        }
        c[i] = acc;
    }
}

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
static inline float __uint_as_float(unsigned i) { return ::g1emu::bits_float(i); }
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
// the device's fast exponential (ex2.approx of x * log2 e, about 2 ulp):
// the host's expf here, so its error is not emulated
inline float __expf(float x) __THROW { return expf(x); }
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
