// g1emu runtime: the fiber scheduler that runs a kernel's blocks, and the
// part of the CUDA runtime API the project calls, on host memory with every
// device allocation tracked (see g1emu.h for what is and is not checked).
#include "g1emu.h"
#include "emu_internal.h"

#include <chrono>
#include <map>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <vector>

// AddressSanitizer must be told about stack switches, and a fiber stack's
// leftover poison cleared before it is reused.
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define ASAN_START(save, bottom, size) __sanitizer_start_switch_fiber((save), (bottom), (size))
#define ASAN_FINISH(save, bottom, size) __sanitizer_finish_switch_fiber((save), (bottom), (size))
#define ASAN_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define ASAN_START(save, bottom, size) ((void)(save), (void)(bottom), (void)(size))
#define ASAN_FINISH(save, bottom, size) ((void)(save), (void)(bottom), (void)(size))
#define ASAN_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

// A fiber switch: x86-64 gets a few instructions that save the callee-saved
// registers and swap stacks (glibc's swapcontext makes a system call per
// switch, and a shuffle is a switch per lane); elsewhere, ucontext.
#if defined(__x86_64__)
extern "C" void g1emu_switch(void **save_sp, void *to_sp);
asm(".text\n"
    ".globl g1emu_switch\n"
    ".type g1emu_switch,@function\n"
    "g1emu_switch:\n"
    "  pushq %rbp\n  pushq %rbx\n  pushq %r12\n  pushq %r13\n  pushq %r14\n  pushq %r15\n"
    "  subq $8, %rsp\n  stmxcsr (%rsp)\n  fnstcw 4(%rsp)\n"
    "  movq %rsp, (%rdi)\n  movq %rsi, %rsp\n"
    "  ldmxcsr (%rsp)\n  fldcw 4(%rsp)\n  addq $8, %rsp\n"
    "  popq %r15\n  popq %r14\n  popq %r13\n  popq %r12\n  popq %rbx\n  popq %rbp\n"
    "  ret\n"
    ".size g1emu_switch, .-g1emu_switch\n");
#define G1EMU_ASM_SWITCH 1
#endif

namespace g1emu {

Cur cur;

namespace {

enum State { READY, AT_BAR, AT_WARP, DONE };

struct Fiber {
#ifdef G1EMU_ASM_SWITCH
    void *sp;
#else
    ucontext_t ctx;
#endif
    char *stack;
    State st;
    unsigned gen;
    int lin;
    uint3 tid;
    void *fake; // AddressSanitizer's fake stack while switched out
};

struct Warp {
    int members, live, arrived;
    unsigned gen;
    unsigned long long val[2][32]; // by barrier parity: one barrier per shuffle
};

const size_t STACK = 256 << 10;

// How a block's fibers take turns (G1EMU_ORDER). sweep: every thread that
// can run, in order, one stretch each, round and round. warps: one warp up
// to its next __syncthreads before the next warp starts; warps-reverse: the
// same from the last warp and lane, blocks from the last. A kernel that
// lacks a __syncthreads between a write to shared memory and another
// warp's read of it gives other results under some of these.
enum Order { ORDER_SWEEP, ORDER_WARPS, ORDER_WARPS_REVERSE };

struct Sched {
#ifdef G1EMU_ASM_SWITCH
    void *main_sp;
#else
    ucontext_t main;
#endif
    std::vector<Fiber> f;
    int n = 0, live = 0, bar_arrived = 0;
    unsigned bar_gen = 0;
    Warp warps[32];
    Fiber *running = nullptr;
    const void *main_bottom = nullptr; // the scheduler's stack (AddressSanitizer)
    size_t main_size = 0;
    const std::function<void()> *body = nullptr;
    const char *kname = "";
    bool in_kernel = false;
    int order = ORDER_SWEEP; // Order, from G1EMU_ORDER at each launch
} S;

cudaError_t last_error = cudaSuccess;

void fail(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "g1emu: ");
    if (S.in_kernel && S.running)
        fprintf(stderr, "kernel %s, block (%u,%u,%u), thread (%u,%u,%u): ", S.kname, cur.bid.x, cur.bid.y, cur.bid.z,
                S.running->tid.x, S.running->tid.y, S.running->tid.z);
    else if (S.in_kernel)
        fprintf(stderr, "kernel %s, block (%u,%u,%u): ", S.kname, cur.bid.x, cur.bid.y, cur.bid.z);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    fflush(stderr);
    _Exit(1);
}

void yield_to_scheduler()
{
    Fiber *f = S.running;
    ASAN_START(&f->fake, S.main_bottom, S.main_size);
#ifdef G1EMU_ASM_SWITCH
    g1emu_switch(&f->sp, S.main_sp);
#else
    swapcontext(&f->ctx, &S.main);
#endif
    ASAN_FINISH(f->fake, &S.main_bottom, &S.main_size);
}

void resume(Fiber &f)
{
    void *fake = nullptr;
    ASAN_START(&fake, f.stack + 4096, STACK);
#ifdef G1EMU_ASM_SWITCH
    g1emu_switch(&S.main_sp, f.sp);
#else
    swapcontext(&S.main, &f.ctx);
#endif
    ASAN_FINISH(fake, nullptr, nullptr);
}

void trampoline()
{
    ASAN_FINISH(nullptr, &S.main_bottom, &S.main_size);
    (*S.body)();
    Fiber *f = S.running;
    f->st = DONE;
    S.live--;
    Warp &w = S.warps[f->lin >> 5];
    w.live--;
    if (w.arrived > 0)
        fail("thread exited while %d lane(s) of its warp wait in a shuffle", w.arrived);
    if (S.bar_arrived > 0 && S.bar_arrived == S.live) { // exited threads do not hold __syncthreads
        S.bar_arrived = 0;
        S.bar_gen++;
    }
    ASAN_START(nullptr, S.main_bottom, S.main_size); // this stack is done
#ifdef G1EMU_ASM_SWITCH
    void *dead;
    g1emu_switch(&dead, S.main_sp); // never resumed
#else
    setcontext(&S.main);
#endif
}

void run_block()
{
    int n = S.n;
    if ((int)S.f.size() < n) {
        size_t old = S.f.size();
        S.f.resize((size_t)n);
        for (size_t i = old; i < (size_t)n; i++) {
            void *p = mmap(nullptr, STACK + 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (p == MAP_FAILED)
                fail("no memory for a fiber stack");
            mprotect(p, 4096, PROT_NONE); // guard page: a stack overflow faults
            S.f[i].stack = (char *)p;
        }
    }
    for (int i = 0; i < n; i++) {
        Fiber &f = S.f[(size_t)i];
        f.lin = i;
        f.tid = make_uint3((unsigned)i % cur.bdim.x, (unsigned)i / cur.bdim.x % cur.bdim.y,
                           (unsigned)i / (cur.bdim.x * cur.bdim.y));
        f.st = READY;
        f.gen = 0;
        f.fake = nullptr;
        ASAN_UNPOISON(f.stack + 4096, STACK);
#ifdef G1EMU_ASM_SWITCH
        // a frame g1emu_switch pops: FP control words, six registers, and
        // trampoline as the return address, 16-byte aligned as after a call
        uintptr_t top = ((uintptr_t)f.stack + 4096 + STACK - 64) & ~(uintptr_t)15;
        void **sp = (void **)top;
        *--sp = nullptr;                     // trampoline's own return slot (never used)
        *--sp = (void *)trampoline;          // ret target; rsp = top - 8 there
        for (int r = 0; r < 6; r++)
            *--sp = nullptr;                 // rbp rbx r12 r13 r14 r15
        --sp;
        unsigned mxcsr;
        unsigned short fcw;
        asm volatile("stmxcsr %0" : "=m"(mxcsr));
        asm volatile("fnstcw %0" : "=m"(fcw));
        memcpy((char *)sp, &mxcsr, 4);
        memcpy((char *)sp + 4, &fcw, 2);
        f.sp = sp;
#else
        getcontext(&f.ctx);
        f.ctx.uc_stack.ss_sp = f.stack + 4096;
        f.ctx.uc_stack.ss_size = STACK;
        f.ctx.uc_link = nullptr;
        makecontext(&f.ctx, trampoline, 0);
#endif
    }
    S.live = n;
    S.bar_arrived = 0;
    S.bar_gen = 0;
    for (int w = 0; w * 32 < n; w++) {
        Warp &wp = S.warps[w];
        wp.members = wp.live = n - w * 32 < 32 ? n - w * 32 : 32;
        wp.arrived = 0;
        wp.gen = 0;
    }
    // thread i, if it can run: until its next barrier, shuffle or exit
    auto step = [&](int i) {
        Fiber &f = S.f[(size_t)i];
        if (f.st == DONE || (f.st == AT_BAR && f.gen == S.bar_gen) ||
            (f.st == AT_WARP && f.gen == S.warps[i >> 5].gen))
            return false;
        f.st = READY;
        S.running = &f;
        cur.tid = f.tid;
        resume(f);
        S.running = nullptr;
        return true;
    };
    int nw = (n + 31) / 32;
    while (S.live > 0) {
        bool progress = false;
        if (S.order == ORDER_SWEEP) {
            for (int i = 0; i < n; i++)
                progress |= step(i);
        } else {
            // one warp as far as it goes (to a __syncthreads or its end)
            // before the next: a warp that runs ahead of the others without
            // a barrier in between overwrites what they still read
            for (int k = 0; k < nw; k++) {
                int w = S.order == ORDER_WARPS_REVERSE ? nw - 1 - k : k, lo = w * 32, hi = lo + 32 < n ? lo + 32 : n;
                for (bool moved = true; moved;) {
                    moved = false;
                    for (int j = lo; j < hi; j++)
                        moved |= step(S.order == ORDER_WARPS_REVERSE ? lo + hi - 1 - j : j);
                    progress |= moved;
                }
            }
        }
        if (!progress) {
            int at_bar = 0, at_warp = 0;
            for (int i = 0; i < n; i++)
                at_bar += S.f[(size_t)i].st == AT_BAR, at_warp += S.f[(size_t)i].st == AT_WARP;
            fail("deadlock: %d thread(s) wait in __syncthreads, %d in a warp shuffle, %d exited "
                 "(a barrier or shuffle that not every thread reaches)",
                 at_bar, at_warp, n - S.live);
        }
    }
}

std::map<uintptr_t, Region> regions; // device allocations and pinned host memory

} // namespace

// Arrive at a barrier of `live` threads; the last one releases the others
// (the scheduler resumes a fiber once the barrier's generation moved on).
static void arrive(State st, int &arrived, unsigned &gen, int live)
{
    Fiber *f = S.running;
    f->gen = gen;
    f->st = st;
    if (++arrived == live) {
        arrived = 0;
        gen++;
        f->st = READY;
        return;
    }
    yield_to_scheduler();
    cur.tid = f->tid;
}

void sync_block()
{
    if (!S.in_kernel || !S.running)
        fail("__syncthreads outside a kernel");
    arrive(AT_BAR, S.bar_arrived, S.bar_gen, S.live);
}

static void warp_barrier(Warp &w) { arrive(AT_WARP, w.arrived, w.gen, w.live); }

void warp_exchange(unsigned mask, const void *mine, size_t size, int from_lane, void *out)
{
    if (!S.in_kernel || !S.running)
        fail("warp shuffle outside a kernel");
    Fiber *f = S.running;
    Warp &w = S.warps[f->lin >> 5];
    int lane = f->lin & 31;
    unsigned want = w.members == 32 ? 0xffffffffu : (1u << w.members) - 1;
    if (mask != want)
        fail("shuffle with mask %08x in a warp of %d thread(s) (%08x): partial masks are not emulated", mask,
             w.members, want);
    if (w.live != w.members)
        fail("shuffle in a warp where %d lane(s) have exited", w.members - w.live);
    if (from_lane < 0 || from_lane >= w.members)
        fail("shuffle reads lane %d of a warp of %d", from_lane, w.members);
    // A lane that reads and runs ahead writes its next shuffle into the other
    // half, and cannot pass that shuffle's barrier before every lane has
    // read this one: one barrier per shuffle is enough.
    int half = (int)(w.gen & 1);
    memcpy(&w.val[half][lane], mine, size);
    warp_barrier(w);
    memcpy(out, &w.val[half][from_lane], size);
}

void run_kernel(const char *name, dim3 grid, dim3 block, cudaStream_t stream, const std::function<void()> &body)
{
    (void)stream;
    unsigned long long nt = (unsigned long long)block.x * block.y * block.z;
    if (!grid.x || !grid.y || !grid.z || !nt || nt > 1024 || block.z > 64 || grid.y > 65535 || grid.z > 65535 ||
        grid.x > 2147483647u) {
        fprintf(stderr, "g1emu: launch of %s with grid (%u,%u,%u), block (%u,%u,%u): invalid configuration\n", name,
                grid.x, grid.y, grid.z, block.x, block.y, block.z);
        last_error = cudaErrorInvalidConfiguration;
        return;
    }
    {
        const char *o = getenv("G1EMU_ORDER"); // read at every launch: tests switch it
        S.order = !o || !*o || !strcmp(o, "sweep") ? ORDER_SWEEP
                  : !strcmp(o, "warps")            ? ORDER_WARPS
                  : !strcmp(o, "warps-reverse")    ? ORDER_WARPS_REVERSE
                                                   : -1;
        if (S.order < 0)
            fail("G1EMU_ORDER=%s: expected sweep, warps or warps-reverse", o);
    }
    if (S.in_kernel)
        fail("launch of %s from inside a kernel", name);
    S.in_kernel = true;
    S.kname = name;
    S.body = &body;
    S.n = (int)nt;
    cur.bdim = block;
    cur.gdim = grid;
    bool rev = S.order == ORDER_WARPS_REVERSE; // blocks last to first too
    unsigned long long nb = (unsigned long long)grid.x * grid.y * grid.z;
    for (unsigned long long k = 0; k < nb; k++) {
        unsigned long long b = rev ? nb - 1 - k : k;
        cur.bid = make_uint3((unsigned)(b % grid.x), (unsigned)(b / grid.x % grid.y),
                             (unsigned)(b / ((unsigned long long)grid.x * grid.y)));
        run_block();
    }
    S.in_kernel = false;
    S.kname = "";
}

// ---- memory ------------------------------------------------------------

const Region *find_region(const void *p)
{
    uintptr_t a = (uintptr_t)p;
    auto it = regions.upper_bound(a);
    if (it == regions.begin())
        return nullptr;
    --it;
    return a < it->first + it->second.size || (a == it->first) ? &it->second : nullptr;
}

bool device_range(const void *p, size_t bytes)
{
    const Region *r = find_region(p);
    return r && r->device && (uintptr_t)p + bytes <= (uintptr_t)r->base + r->size;
}

void note(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "g1emu: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
}

cudaError_t set_error(cudaError_t e)
{
    if (e != cudaSuccess)
        last_error = e;
    return e;
}

} // namespace g1emu

using namespace g1emu;

static size_t device_live; // bytes in live device allocations

// the device's memory: G1EMU_MEMORY bytes (default 16 GiB)
static size_t device_memory()
{
    const char *m = getenv("G1EMU_MEMORY");
    return m ? (size_t)strtoull(m, nullptr, 10) : (size_t)16 << 30;
}

static void *region_alloc(size_t bytes, bool device)
{
    // exactly `bytes` (AddressSanitizer then sees an access one past the end), 256-byte aligned as cudaMalloc
    void *p = nullptr;
    if (posix_memalign(&p, 256, bytes ? bytes : 1))
        return nullptr;
    memset(p, 0xff, bytes); // NaN floats, -1 ints: unwritten memory is loud
    regions[(uintptr_t)p] = Region{p, bytes, device};
    if (device)
        device_live += bytes;
    return p;
}

static cudaError_t region_free(void *p, bool device, const char *what)
{
    if (!p)
        return cudaSuccess;
    auto it = regions.find((uintptr_t)p);
    if (it == regions.end() || it->second.device != device) {
        note("%s(%p): not the start of a live %s allocation", what, p, device ? "device" : "pinned host");
        return set_error(cudaErrorInvalidValue);
    }
    if (device)
        device_live -= it->second.size;
    regions.erase(it);
    free(p);
    return cudaSuccess;
}

static cudaError_t check_copy(const char *what, void *dst, const void *src, size_t dpitch, size_t spitch,
                              size_t width, size_t height, cudaMemcpyKind kind)
{
    if (!height || !width)
        return cudaSuccess;
    size_t dn = dpitch * (height - 1) + width, sn = spitch * (height - 1) + width;
    bool dd = find_region(dst) && find_region(dst)->device, sd = find_region(src) && find_region(src)->device;
    bool want_dd = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
    bool want_sd = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
    if (kind == cudaMemcpyDefault)
        want_dd = dd, want_sd = sd;
    if (dd != want_dd || sd != want_sd) {
        note("%s of %zu bytes, kind %d: destination is %s memory, source is %s memory", what, width * height,
             (int)kind, dd ? "device" : "host", sd ? "device" : "host");
        return set_error(cudaErrorInvalidValue);
    }
    if ((dd && !device_range(dst, dn)) || (sd && !device_range(src, sn))) {
        note("%s of %zu bytes runs past the end of a device allocation", what, width * height);
        return set_error(cudaErrorInvalidValue);
    }
    return cudaSuccess;
}

extern "C" {

// The node's GPUs (G1EMU_DEVICES, default 1) as CUDA_VISIBLE_DEVICES shows
// them to this process: phys[i] is visible device i's index on the node.
// As the driver does, the list ends at the first entry that is not a
// device of the node (or repeats one).
static int visible_devices(int *phys, int most)
{
    const char *e = getenv("G1EMU_DEVICES");
    int node = e ? atoi(e) : 1, n = 0;
    const char *v = getenv("CUDA_VISIBLE_DEVICES");
    if (!v) {
        for (int i = 0; i < node && n < most; i++)
            phys[n++] = i;
        return n;
    }
    while (*v && n < most) {
        char *end;
        long d = strtol(v, &end, 10);
        bool seen = false;
        for (int i = 0; i < n; i++)
            seen |= phys[i] == d;
        if (end == v || d < 0 || d >= node || seen)
            break;
        phys[n++] = (int)d;
        v = *end == ',' ? end + 1 : end;
        if (*end != ',')
            break;
    }
    return n;
}

cudaError_t cudaGetDeviceCount(int *count)
{
    int phys[64];
    *count = visible_devices(phys, 64);
    return cudaSuccess;
}

cudaError_t cudaSetDevice(int device)
{
    int n;
    cudaGetDeviceCount(&n);
    return device >= 0 && device < n ? cudaSuccess : set_error(cudaErrorInvalidDevice);
}

cudaError_t cudaGetDevice(int *device)
{
    *device = 0;
    return cudaSuccess;
}

static int emu_sms()
{
    const char *e = getenv("G1EMU_SMS");
    return e ? atoi(e) : 132;
}

cudaError_t cudaDeviceGetAttribute(int *value, enum cudaDeviceAttr attr, int device)
{
    (void)device;
    switch (attr) {
    case cudaDevAttrMultiProcessorCount:
        *value = emu_sms();
        return cudaSuccess;
    default:
        note("cudaDeviceGetAttribute(%d) is not emulated", (int)attr);
        return set_error(cudaErrorInvalidValue);
    }
}

cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp *prop, int device)
{
    int phys[64], n = visible_devices(phys, 64);
    if (device < 0 || device >= n)
        return set_error(cudaErrorInvalidDevice);
    memset(prop, 0, sizeof *prop);
    // the same physical (node) device has the same UUID in every process
    snprintf(prop->uuid.bytes, sizeof prop->uuid.bytes, "g1emu-gpu-%d", phys[device]);
    snprintf(prop->name, sizeof prop->name, "g1emu (CPU emulation)");
    prop->multiProcessorCount = emu_sms();
    prop->totalGlobalMem = device_memory();
    prop->major = 9;
    prop->minor = 0;
    return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t *free_b, size_t *total)
{
    *total = device_memory();
    *free_b = device_live < *total ? *total - device_live : 0;
    return cudaSuccess;
}

cudaError_t cudaGetLastError(void)
{
    cudaError_t e = last_error;
    last_error = cudaSuccess;
    return e;
}

cudaError_t cudaPeekAtLastError(void) { return last_error; }

const char *cudaGetErrorName(cudaError_t e)
{
    switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    default: return "cudaErrorUnknown";
    }
}

const char *cudaGetErrorString(cudaError_t e)
{
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument (g1emu)";
    case cudaErrorMemoryAllocation: return "out of memory (g1emu)";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument (g1emu)";
    case cudaErrorInvalidDevice: return "invalid device ordinal (g1emu)";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle (g1emu)";
    default: return "unknown error (g1emu)";
    }
}

cudaError_t cudaMalloc(void **p, size_t bytes)
{
    const char *lim = getenv("G1EMU_MALLOC_LIMIT"); // failure-path tests: refuse allocations above this
    if (lim && bytes > (size_t)strtoull(lim, nullptr, 10)) {
        *p = nullptr;
        return set_error(cudaErrorMemoryAllocation);
    }
    if (device_live + bytes > device_memory()) { // the device is full
        *p = nullptr;
        return set_error(cudaErrorMemoryAllocation);
    }
    *p = region_alloc(bytes, true);
    return *p ? cudaSuccess : set_error(cudaErrorMemoryAllocation);
}

cudaError_t cudaFree(void *p) { return region_free(p, true, "cudaFree"); }

cudaError_t cudaMallocHost(void **p, size_t bytes)
{
    *p = region_alloc(bytes, false);
    return *p ? cudaSuccess : set_error(cudaErrorMemoryAllocation);
}

cudaError_t cudaHostAlloc(void **p, size_t bytes, unsigned int flags)
{
    (void)flags; // portable, mapped, write-combined: all plain host memory here
    return cudaMallocHost(p, bytes);
}

cudaError_t cudaFreeHost(void *p) { return region_free(p, false, "cudaFreeHost"); }

cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, enum cudaMemcpyKind kind)
{
    cudaError_t e = check_copy("cudaMemcpy", dst, src, n, n, n, 1, kind);
    if (e == cudaSuccess && n)
        memmove(dst, src, n);
    return e;
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, enum cudaMemcpyKind kind, cudaStream_t s)
{
    (void)s;
    cudaError_t e = check_copy("cudaMemcpyAsync", dst, src, n, n, n, 1, kind);
    if (e == cudaSuccess && n)
        memmove(dst, src, n);
    return e;
}

cudaError_t cudaMemcpy2DAsync(void *dst, size_t dpitch, const void *src, size_t spitch, size_t width, size_t height,
                              enum cudaMemcpyKind kind, cudaStream_t s)
{
    (void)s;
    if (width > dpitch || width > spitch) {
        note("cudaMemcpy2DAsync: width %zu exceeds a pitch (%zu, %zu)", width, dpitch, spitch);
        return set_error(cudaErrorInvalidValue);
    }
    cudaError_t e = check_copy("cudaMemcpy2DAsync", dst, src, dpitch, spitch, width, height, kind);
    if (e != cudaSuccess)
        return e;
    for (size_t r = 0; r < height; r++)
        memmove((char *)dst + r * dpitch, (const char *)src + r * spitch, width);
    return cudaSuccess;
}

cudaError_t cudaMemset(void *p, int v, size_t n)
{
    if (n && !device_range(p, n)) {
        note("cudaMemset of %zu bytes outside a device allocation", n);
        return set_error(cudaErrorInvalidValue);
    }
    memset(p, v, n);
    return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t s)
{
    (void)s;
    return cudaMemset(p, v, n);
}

cudaError_t cudaStreamCreate(cudaStream_t *s)
{
    *s = (cudaStream_t) new int(1);
    return cudaSuccess;
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags)
{
    (void)flags;
    return cudaStreamCreate(s);
}

cudaError_t cudaStreamDestroy(cudaStream_t s)
{
    delete (int *)s;
    return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t s)
{
    (void)s;
    return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize(void) { return cudaSuccess; }

struct emu_event {
    std::chrono::steady_clock::time_point t;
};

cudaError_t cudaEventCreate(cudaEvent_t *ev)
{
    *ev = (cudaEvent_t) new emu_event();
    return cudaSuccess;
}

cudaError_t cudaEventDestroy(cudaEvent_t ev)
{
    delete (emu_event *)ev;
    return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t ev, cudaStream_t s)
{
    (void)s;
    ((emu_event *)ev)->t = std::chrono::steady_clock::now();
    return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t ev)
{
    (void)ev;
    return cudaSuccess;
}

cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b)
{
    *ms = std::chrono::duration<float, std::milli>(((emu_event *)b)->t - ((emu_event *)a)->t).count();
    return cudaSuccess;
}

} // extern "C"
