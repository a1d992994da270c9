// g1emu runtime: the fiber scheduler that runs a kernel's blocks, and the
// part of the CUDA runtime API the project calls, on host memory with every
// device allocation tracked (see g1emu.h for what is and is not checked).
#include "g1emu.h"
#include "emu_internal.h"

#include <atomic>
#include <chrono>
#include <iterator>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <signal.h>
#include <ucontext.h>
#include <unistd.h>
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

#if defined(G1EMU_FMA)
// Built with -mfma (the cuda_*_emu_fma tests): a CPU without FMA
// instructions skips them rather than dying of SIGILL.
__attribute__((constructor)) static void g1emu_need_fma()
{
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("fma")) {
        fprintf(stderr, "g1emu: this build fuses multiply-adds (-mfma), and this CPU has no FMA: skipped\n");
        _Exit(77);
    }
}
#endif

namespace g1emu {

Cur cur;

// The race and bounds check (G1EMU_RACE builds, at the end of this file):
// told when a launch, a block and a stretch between two __syncthreads begin.
#if defined(G1EMU_RACE)
static void race_launch();
static void race_block(unsigned long long b);
static void race_barrier();
static void race_free(const Region &r);
static void race_alloc(const Region &r);
#else
static inline void race_alloc(const Region &) {}
static inline void race_launch() {}
static inline void race_block(unsigned long long) {}
static inline void race_barrier() {}
static inline void race_free(const Region &) {}
#endif

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
    unsigned char all[2][32][32];  // warp_gather's, the same way
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
    int dev = 0;             // the device the running kernel was launched on
} S;

// per host thread, as CUDA's: a failure on one thread is not another's
// cudaGetLastError (the engine's weight upload runs on a thread of its own)
thread_local cudaError_t last_error = cudaSuccess;

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
        race_barrier();
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
        if (st == AT_BAR)
            race_barrier();
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

void warp_gather(const void *mine, size_t size, void *out)
{
    if (!S.in_kernel || !S.running)
        fail("warp-wide operation (mma) outside a kernel");
    if (size > sizeof S.warps[0].all[0][0])
        fail("warp gather of %zu bytes a lane", size);
    Fiber *f = S.running;
    Warp &w = S.warps[f->lin >> 5];
    int lane = f->lin & 31;
    if (w.members != 32)
        fail("a warp-wide operation (mma) in a warp of %d thread(s): it needs all 32", w.members);
    if (w.live != w.members)
        fail("a warp-wide operation (mma) in a warp where %d lane(s) have exited", w.members - w.live);
    int half = (int)(w.gen & 1);
    memcpy(w.all[half][lane], mine, size);
    warp_barrier(w);
    for (int i = 0; i < 32; i++)
        memcpy((unsigned char *)out + i * size, w.all[half][i], size);
}

// G1EMU_LAUNCH_LOG=FILE: each kernel and block size launched, once per
// process ("name threads" lines, appended), for tests/cuda/check_resources.py
// to hold against the registers nvcc gives that kernel.
static void log_launch(const char *name, unsigned long long threads)
{
    const char *path = getenv("G1EMU_LAUNCH_LOG");
    if (!path || !*path)
        return;
    static std::set<std::pair<std::string, unsigned long long>> seen;
    if (!seen.insert({name, threads}).second)
        return;
    FILE *f = fopen(path, "a");
    if (!f)
        fail("G1EMU_LAUNCH_LOG=%s: cannot open it", path);
    fprintf(f, "%s %llu\n", name, threads);
    fclose(f);
}

// A kernel's blocks, now (from the stream queue: see "streams" below).
static void exec_kernel(const char *name, dim3 grid, dim3 block, int order, int dev,
                        const std::function<void()> &body)
{
    if (S.in_kernel)
        fail("launch of %s from inside a kernel", name);
    S.order = order;
    S.dev = dev;
    S.in_kernel = true;
    S.kname = name;
    race_launch();
    S.body = &body;
    S.n = (int)((unsigned long long)block.x * block.y * block.z);
    cur.bdim = block;
    cur.gdim = grid;
    bool rev = S.order == ORDER_WARPS_REVERSE; // blocks last to first too
    unsigned long long nb = (unsigned long long)grid.x * grid.y * grid.z;
    for (unsigned long long k = 0; k < nb; k++) {
        unsigned long long b = rev ? nb - 1 - k : k;
        cur.bid = make_uint3((unsigned)(b % grid.x), (unsigned)(b / grid.x % grid.y),
                             (unsigned)(b / ((unsigned long long)grid.x * grid.y)));
        race_block(b);
        run_block();
    }
    S.in_kernel = false;
    S.kname = "";
}

static bool launch_refused_in_capture(const char *name, cudaStream_t s);
static void launch_failed_in_capture(cudaStream_t s);
static void launch_failed_unread(const char *name);
static bool launch_on_other_device(const char *name, cudaStream_t s);

void run_kernel(const char *name, dim3 grid, dim3 block, cudaStream_t stream, const std::function<void()> &body)
{
    unsigned long long nt = (unsigned long long)block.x * block.y * block.z;
    if (!grid.x || !grid.y || !grid.z || !nt || nt > 1024 || block.z > 64 || grid.y > 65535 || grid.z > 65535 ||
        grid.x > 2147483647u) {
        fprintf(stderr, "g1emu: launch of %s with grid (%u,%u,%u), block (%u,%u,%u): invalid configuration\n", name,
                grid.x, grid.y, grid.z, block.x, block.y, block.z);
        last_error = cudaErrorInvalidConfiguration;
        return;
    }
    const char *o = getenv("G1EMU_ORDER"); // read at every launch: tests switch it
    int order = !o || !*o || !strcmp(o, "sweep") ? ORDER_SWEEP
                : !strcmp(o, "warps")            ? ORDER_WARPS
                : !strcmp(o, "warps-reverse")    ? ORDER_WARPS_REVERSE
                                                 : -1;
    if (order < 0)
        fail("G1EMU_ORDER=%s: expected sweep, warps or warps-reverse", o);
    if (S.in_kernel)
        fail("launch of %s from inside a kernel", name);
    if (launch_refused_in_capture(name, stream))
        return;
    // G1EMU_FAIL_CALL: a launch that asks too much of the device, told as
    // CUDA tells it, at cudaGetLastError
    if (fail_call(name, "cudaErrorLaunchOutOfResources")) {
        launch_failed_in_capture(stream); // a capture it was made into fails at its end
        launch_failed_unread(name);
        last_error = cudaErrorLaunchOutOfResources;
        return;
    }
    if (launch_on_other_device(name, stream))
        return;
    log_launch(name, nt);
    std::function<void()> b = body; // the arguments as they are now, as a launch copies them
    int dev = current_device();
    enqueue(stream, name, [=] { exec_kernel(name, grid, block, order, dev, b); });
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

// the calling thread's current device, as CUDA's (per host thread)
thread_local int cur_device = 0;
int current_device() { return cur_device; }

cudaError_t set_error(cudaError_t e)
{
    if (e != cudaSuccess)
        last_error = e;
    return e;
}

// Device memory is out of the host's reach, as on a GPU: each allocation is
// a mapping of its own with no access, opened only while queued work
// (kernels, copies, cuBLAS) runs, so a host read or write of it faults and
// is reported (G1EMU_HOST_ACCESS=1 leaves it open: an MPI with CUDA support,
// --gpu-direct, reads and writes device buffers; so does AddressSanitizer's
// build, whose exact-sized heap allocations catch one-past-the-end).
static bool guarded()
{
#if defined(__SANITIZE_ADDRESS__)
    return false;
#else
    const char *h = getenv("G1EMU_HOST_ACCESS");
    return !(h && !strcmp(h, "1"));
#endif
}

static void host_fault(int sig, siginfo_t *si, void *uc)
{
    (void)uc;
    const Region *r = find_region(si->si_addr);
    if (r && r->device && r->mapped) {
        char msg[256];
        int n = snprintf(msg, sizeof msg,
                         "g1emu: the host touched device memory at %p (in an allocation of %zu bytes at %p): on a "
                         "GPU this faults; copy it to host memory first\n",
                         si->si_addr, r->size, r->base);
        if (n > 0 && write(2, msg, (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1) < 0)
            _Exit(1);
        _Exit(1);
    }
    signal(sig, SIG_DFL); // another fault: the usual crash, when the access is retried
}

static void open_device_memory(bool open)
{
    for (auto &it : regions)
        if (it.second.mapped && mprotect(it.second.base, it.second.mapped, open ? PROT_READ | PROT_WRITE : PROT_NONE))
            fail("mprotect of device memory failed");
}

// ---- streams -------------------------------------------------------------
//
// Work given to a stream (kernels, async copies and memsets, cuBLAS, event
// records) is queued, not run: it runs when the host waits for it, and no
// sooner (G1EMU_STREAMS=defer, the default; sync runs everything at once,
// as before). That is the latest a GPU may run it, so the host's mistakes
// about ordering show: a result read before the stream was synchronised is
// stale (pinned destinations of device-to-host copies read as NaN bytes
// until the copy runs), pinned host memory changed while a copy from it was
// queued, or written while a copy into it was queued, is reported, and
// work on one stream does not wait for another's unless CUDA's rules say
// it does. Those rules, as the runtime API
// documents them: a stream's work runs in its order; the legacy default
// stream (0) waits for all earlier work of the blocking streams, and they
// for its (cudaStreamNonBlocking streams wait for neither);
// cudaStreamWaitEvent orders a stream after an event's record. The host
// waits in cudaStreamSynchronize, cudaEventSynchronize,
// cudaDeviceSynchronize, cudaMemcpy (a copy on the legacy stream), a
// device-to-host cudaMemcpyAsync into pageable memory (it returns once the
// copy is done), cudaFree and cudaFreeHost (which wait for the device), and
// cudaStreamDestroy / cudaEventDestroy (the work still runs). A
// host-to-device copy from pageable memory takes its bytes when it is
// queued, as the driver's staging copy does.

namespace {

struct Stream {
    bool nonblocking;
    unsigned long long last; // sequence number of its latest work (0: none)
    int dev;                 // the device current when it was made (kernels go to it only then)
};

struct Work {
    unsigned long long seq;
    std::vector<unsigned long long> after; // what it waits for (finished ones included)
    std::function<void()> run;
};

Stream legacy_stream = {false, 0, -1}; // each device's own: whatever device is current

// Stream capture (CUDA graphs): the work given to the capturing stream is
// kept, not queued; a launch of the graph gives it to a stream again, in
// the order captured (one stream's capture, no events inside).
struct Node {
    const char *what;
    std::function<void()> run;
};
long graphs_live; // graphs and executable graphs not yet destroyed (g1emu_live)
struct Graph {
    std::vector<Node> nodes;
    Graph() { graphs_live++; }
    Graph(const Graph &o) : nodes(o.nodes) { graphs_live++; }
    Graph &operator=(const Graph &) = delete;
    ~Graph() { graphs_live--; }
};
Stream *capturing = nullptr;
Graph *capture_graph = nullptr;
bool capture_broken = false; // a host wait during the capture: it fails at its end
std::set<Stream *> live_streams; // cudaStreamCreate*'s, not yet destroyed
std::vector<Work> queued;        // in the order given
unsigned long long next_seq = 1;
bool draining = false;

bool deferring()
{
    const char *m = getenv("G1EMU_STREAMS"); // read each time: tests switch it
    if (!m || !*m || !strcmp(m, "defer") || !strcmp(m, "latest"))
        return true;
    if (!strcmp(m, "sync"))
        return false;
    fail("G1EMU_STREAMS=%s: expected defer, latest or sync", m);
}

// G1EMU_STREAMS=latest: deferred as defer, and of the work ready to run
// (what it waits for has run) the latest given runs first, so work on one
// stream that another stream's earlier work does not wait for overtakes
// it: a buffer rewritten before the work reading it has run shows.
bool latest_first()
{
    const char *m = getenv("G1EMU_STREAMS");
    return m && !strcmp(m, "latest");
}

} // namespace

// G1EMU_GRAPH_FAIL: a driver that will not make graphs of the work, to
// test the caller's fallback: "begin" refuses cudaStreamBeginCapture,
// "launch" refuses a kernel launch into a capturing stream (and so
// invalidates the capture, as CUDA does), "instantiate" (or 1) refuses
// cudaGraphInstantiate. Read at each call: tests switch it.
static bool graph_fail(const char *where)
{
    const char *f = getenv("G1EMU_GRAPH_FAIL");
    if (!f || !*f || !strcmp(f, "0"))
        return false;
    if (strcmp(f, "1") && strcmp(f, "begin") && strcmp(f, "launch") && strcmp(f, "instantiate"))
        fail("G1EMU_GRAPH_FAIL=%s: expected begin, launch, instantiate (or 1) or 0", f);
    return !strcmp(f, where) || (!strcmp(where, "instantiate") && !strcmp(f, "1"));
}

// G1EMU_GRAPH_FAIL=launch: a kernel launch into the capturing stream fails
// and invalidates the capture.
static bool launch_refused_in_capture(const char *name, cudaStream_t s)
{
    if (!capturing || (uintptr_t)s <= 2 || (Stream *)s != capturing || !graph_fail("launch"))
        return false;
    note("launch of %s into a stream being captured: refused (G1EMU_GRAPH_FAIL=launch)", name);
    capture_broken = true;
    last_error = cudaErrorStreamCaptureUnsupported;
    return true;
}

// A failed launch (G1EMU_FAIL_CALL) whose error no cudaGetLastError /
// cudaPeekAtLastError has read yet: its kernel's name (or "").
thread_local char launch_unread[128];
static void launch_failed_unread(const char *name) { snprintf(launch_unread, sizeof launch_unread, "%s", name); }

// A failed launch (G1EMU_FAIL_CALL) into the capturing stream invalidates the capture.
static void launch_failed_in_capture(cudaStream_t s)
{
    if (capturing && (uintptr_t)s > 2 && (Stream *)s == capturing)
        capture_broken = true;
}

// The Stream behind a handle; null (with the error set) for a dead one.
static Stream *stream_of(cudaStream_t s, const char *what)
{
    // 0, cudaStreamLegacy, cudaStreamPerThread: the legacy default stream
    if ((uintptr_t)s <= 2)
        return &legacy_stream;
    if (!live_streams.count((Stream *)s)) {
        note("%s on stream %p, which is not a live stream (destroyed, or never created)", what, (void *)s);
        set_error(cudaErrorInvalidResourceHandle);
        return nullptr;
    }
    return (Stream *)s;
}

// As CUDA's: a kernel launch fails on a stream of another device than the
// calling thread's current one (a thread that never called cudaSetDevice
// works on device 0); the error set, nothing queued.
static bool launch_on_other_device(const char *name, cudaStream_t s)
{
    Stream *st = stream_of(s, name);
    if (!st || st->dev < 0 || st->dev == current_device())
        return false;
    note("launch of %s into a stream of device %d while device %d is current on this thread", name, st->dev,
         current_device());
    set_error(cudaErrorInvalidResourceHandle);
    return true;
}

// Run the queued work with sequence numbers in `want`, and what it waits
// for, in the order given; the rest stays queued.
static void drain(std::vector<unsigned long long> want)
{
    if (draining)
        fail("a stream synchronisation inside queued work");
    if (queued.empty())
        return;
    std::set<unsigned long long> need(want.begin(), want.end());
    for (size_t i = queued.size(); i-- > 0;)
        if (need.count(queued[i].seq))
            need.insert(queued[i].after.begin(), queued[i].after.end());
    std::vector<Work> all;
    all.swap(queued);
    draining = true;
    open_device_memory(true);
    if (latest_first()) {
        std::set<unsigned long long> left; // needed, not run yet
        for (const Work &w : all)
            if (need.count(w.seq))
                left.insert(w.seq);
        for (;;) {
            size_t pick = all.size();
            for (size_t i = all.size(); i-- > 0 && pick == all.size();) {
                if (!left.count(all[i].seq))
                    continue;
                bool ready = true;
                for (unsigned long long a : all[i].after)
                    ready = ready && !left.count(a);
                if (ready)
                    pick = i;
            }
            if (pick == all.size())
                break;
            left.erase(all[pick].seq);
            all[pick].run();
        }
        for (Work &w : all)
            if (!need.count(w.seq))
                queued.push_back(std::move(w));
    } else {
        for (Work &w : all) {
            if (need.count(w.seq))
                w.run();
            else
                queued.push_back(std::move(w));
        }
    }
    open_device_memory(false);
    draining = false;
}

static void drain_all()
{
    std::vector<unsigned long long> all;
    for (const Work &w : queued)
        all.push_back(w.seq);
    drain(all);
}

unsigned long long enqueue(cudaStream_t s, const char *what, std::function<void()> run)
{
    Stream *st = stream_of(s, what);
    if (!st)
        return 0;
    if (draining)
        fail("%s given to a stream from inside queued work", what);
    if (st == capturing) {
        capture_graph->nodes.push_back(Node{what, std::move(run)});
        return next_seq++; // nothing waits for it
    }
    Work w{next_seq++, {}, std::move(run)};
    if (st->last)
        w.after.push_back(st->last);
    if (st == &legacy_stream) {
        for (Stream *o : live_streams)
            if (!o->nonblocking && o->last)
                w.after.push_back(o->last);
    } else if (!st->nonblocking && legacy_stream.last) {
        w.after.push_back(legacy_stream.last);
    }
    st->last = w.seq;
    unsigned long long seq = w.seq;
    queued.push_back(std::move(w));
    if (!deferring())
        drain({seq});
    return seq;
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
    size_t mapped = 0;
    if (device && guarded()) {
        static bool handler;
        if (!handler) {
            struct sigaction sa;
            memset(&sa, 0, sizeof sa);
            sa.sa_sigaction = host_fault;
            sa.sa_flags = SA_SIGINFO;
            sigemptyset(&sa.sa_mask);
            sigaction(SIGSEGV, &sa, nullptr);
            handler = true;
        }
        mapped = ((bytes ? bytes : 1) + 4095) & ~(size_t)4095;
        p = mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            return nullptr;
    } else if (posix_memalign(&p, 256, bytes ? bytes : 1)) {
        return nullptr;
    }
    memset(p, 0xff, bytes); // NaN floats, -1 ints: unwritten memory is loud
    if (mapped && !draining && mprotect(p, mapped, PROT_NONE))
        fail("mprotect of device memory failed");
    regions[(uintptr_t)p] = Region{p, bytes, device, mapped};
    regions[(uintptr_t)p].dev = current_device();
    race_alloc(regions[(uintptr_t)p]);
    if (device)
        device_live += bytes;
    return p;
}

static cudaError_t region_free(void *p, bool device, const char *what)
{
    if (!p)
        return cudaSuccess;
    auto it = regions.find((uintptr_t)p);
    if (it == regions.end() || it->second.device != device || it->second.registered) {
        note("%s(%p): not the start of a live %s allocation%s", what, p, device ? "device" : "pinned host",
             it != regions.end() && it->second.registered ? " (it was pinned by cudaHostRegister)" : "");
        return set_error(cudaErrorInvalidValue);
    }
    if (device)
        device_live -= it->second.size;
    size_t mapped = it->second.mapped;
    race_free(it->second);
    regions.erase(it);
    if (mapped)
        munmap(p, mapped);
    else
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

// ---- failing calls ----------------------------------------------------------
// G1EMU_FAIL_CALL=K: the K-th call (from 1) the process makes of the
// runtime and cuBLAS API below fails, as a real one can, with an error that
// call is documented to return and that leaves the context usable (not
// sticky: the next calls succeed): cudaMalloc, cudaMallocHost and
// cudaHostAlloc cudaErrorMemoryAllocation (the pointer NULL); a kernel
// launch cudaErrorLaunchOutOfResources, told by the next
// cudaGetLastError / cudaPeekAtLastError as CUDA tells it, nothing queued;
// copies and memsets cudaErrorInvalidValue, nothing queued; stream, event
// and graph calls cudaErrorInvalidResourceHandle, cudaErrorInvalidValue or
// cudaErrorMemoryAllocation as each is documented (see fail_code), a
// failed synchronisation leaving the work queued (it runs at the next
// one); cudaSetDevice cudaErrorDevicesUnavailable; device queries
// cudaErrorInvalidValue (cudaGetDeviceCount cudaErrorNoDevice);
// cublasCreate CUBLAS_STATUS_ALLOC_FAILED, cublasSetStream
// CUBLAS_STATUS_NOT_INITIALIZED, cublasGemmEx CUBLAS_STATUS_EXECUTION_FAILED.
// Calls that only release (cudaFree, cudaFreeHost, the destroys,
// cudaHostUnregister) and those that only read the error state
// (cudaGetLastError, cudaPeekAtLastError, the error names and strings) are
// not counted: a program cannot do anything about their failure but say
// it, and on a real GPU they fail only after a sticky error.
// A failed launch's error must be read (cudaGetLastError) before the next
// call, or it is told as another's, or lost: g1emu says so on stderr
// ("was not read ... before the next call").
// G1EMU_FAIL_COUNT=FILE: the calls counted, a line added to FILE at exit
// (how many K a sweep tries). G1EMU_FAIL_SHOW=1: the failed call named on
// stderr. A test program over g1emu may also call g1emu_fail_calls,
// g1emu_failed, g1emu_unread and g1emu_live below (tests/cuda/emu/test_cuda_fail_sweep.c).
long g1emu::events_live;
static std::atomic<long> calls_counted;
static std::atomic<long> fail_at{-1}; // -1: not read from the environment yet; 0: none

static void write_fail_count()
{
    const char *path = getenv("G1EMU_FAIL_COUNT");
    FILE *f = path && *path ? fopen(path, "a") : nullptr;
    if (!f)
        return;
    fprintf(f, "%ld\n", calls_counted.load());
    fclose(f);
}

static char failed[160]; // the call made to fail and its error, or ""
// The first call made while a failed launch's error was unread (or ""): the
// launch's error then goes to whatever checks next, another launch's site,
// or nowhere.
static char unread_by[320];

bool g1emu::fail_call(const char *what, const char *err)
{
    if (launch_unread[0] && what[0]) {
        if (!unread_by[0]) {
            snprintf(unread_by, sizeof unread_by, "the error of the failed launch of %s was not read "
                     "(cudaGetLastError) before the next call, %s", launch_unread, what);
            note("%s", unread_by);
        }
        launch_unread[0] = 0;
    }
    long k = fail_at.load();
    if (k < 0) {
        const char *e = getenv("G1EMU_FAIL_CALL");
        char *end = nullptr;
        long v = e && *e ? strtol(e, &end, 10) : 0;
        if (e && *e && (*end || v < 0))
            fail("G1EMU_FAIL_CALL=%s: expected a call number (1 the first, 0 none)", e);
        long want = -1;
        fail_at.compare_exchange_strong(want, v);
        k = fail_at.load();
        const char *c = getenv("G1EMU_FAIL_COUNT");
        if (c && *c)
            atexit(write_fail_count);
    }
    long n = ++calls_counted;
    if (!k || n != k)
        return false;
    snprintf(failed, sizeof failed, "%s %s", what, err);
    const char *show = getenv("G1EMU_FAIL_SHOW");
    if (show && *show && strcmp(show, "0"))
        note("call %ld, %s: made to fail with %s (G1EMU_FAIL_CALL)", n, what, err);
    return true;
}

// A failed call: its error remembered as the last (as CUDA's runtime does).
#define G1EMU_FAIL(what, err)                                                                                  \
    do {                                                                                                       \
        if (fail_call(what, cudaGetErrorName(err)))                                                            \
            return set_error(err);                                                                             \
    } while (0)

extern "C" {

// The call K from now fails (0: none); returns the calls counted since the
// last g1emu_fail_calls (or the start).
long g1emu_fail_calls(long k)
{
    if (fail_at.load() < 0)
        (void)fail_call("", ""), calls_counted = 0; // the environment read first, then replaced
    long n = calls_counted.exchange(0);
    fail_at = k;
    failed[0] = unread_by[0] = launch_unread[0] = 0;
    return n;
}

// What a failed launch's error met when nothing read it before the next
// call ("" when it was read at once, or no launch failed).
const char *g1emu_unread(void) { return unread_by; }

// "CALL ERROR" of the call made to fail, "" while none has.
const char *g1emu_failed(void) { return failed; }

// What is live of what the program made (0: nothing), described in buf.

long g1emu_live(char *buf, size_t n)
{
    long dev = 0, host = 0;
    for (const auto &kv : regions)
        if (!kv.second.registered)
            (kv.second.device ? dev : host)++;
    long streams = (long)live_streams.size(), events = events_live, graphs = graphs_live,
         blas = blas_handles_live;
    if (buf && n)
        snprintf(buf, n, "%ld device allocations, %ld pinned host allocations, %ld streams, %ld events, "
                 "%ld graphs, %ld cuBLAS handles", dev, host, streams, events, graphs, blas);
    return dev + host + streams + events + graphs + blas;
}

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

// G1EMU_DRIVER=V (e.g. 12040): a driver that supports CUDA V only, as an
// old driver on a GPU node: below the runtime's version the runtime finds
// no device, as CUDA does, with cudaErrorInsufficientDriver.
static int emu_driver_version(void)
{
    const char *e = getenv("G1EMU_DRIVER");
    return e ? atoi(e) : CUDART_VERSION;
}

cudaError_t cudaRuntimeGetVersion(int *v)
{
    G1EMU_FAIL("cudaRuntimeGetVersion", cudaErrorInvalidValue);
    *v = CUDART_VERSION;
    return cudaSuccess;
}

cudaError_t cudaDriverGetVersion(int *v)
{
    G1EMU_FAIL("cudaDriverGetVersion", cudaErrorInvalidValue);
    *v = emu_driver_version();
    return cudaSuccess;
}

static cudaError_t device_count(int *count)
{
    int phys[64];
    *count = 0;
    if (emu_driver_version() < CUDART_VERSION)
        return set_error(cudaErrorInsufficientDriver);
    *count = visible_devices(phys, 64);
    return *count ? cudaSuccess : set_error(cudaErrorNoDevice); // as CUDA
}

cudaError_t cudaGetDeviceCount(int *count)
{
    if (fail_call("cudaGetDeviceCount", "cudaErrorNoDevice")) {
        *count = 0;
        return set_error(cudaErrorNoDevice);
    }
    return device_count(count);
}

cudaError_t cudaSetDevice(int device)
{
    G1EMU_FAIL("cudaSetDevice", cudaErrorDevicesUnavailable);
    int n;
    cudaError_t e = device_count(&n);
    if (e != cudaSuccess)
        return e;
    if (device < 0 || device >= n)
        return set_error(cudaErrorInvalidDevice);
    cur_device = device;
    return cudaSuccess;
}

cudaError_t cudaGetDevice(int *device)
{
    *device = cur_device;
    return cudaSuccess;
}

static int emu_sms()
{
    const char *e = getenv("G1EMU_SMS");
    return e ? atoi(e) : 132;
}

cudaError_t cudaDeviceGetAttribute(int *value, enum cudaDeviceAttr attr, int device)
{
    G1EMU_FAIL("cudaDeviceGetAttribute", cudaErrorInvalidValue);
    (void)device;
    switch (attr) {
    case cudaDevAttrMultiProcessorCount:
        *value = emu_sms();
        return cudaSuccess;
    case cudaDevAttrComputeCapabilityMajor: // an H100's (9.0)
        *value = 9;
        return cudaSuccess;
    case cudaDevAttrComputeCapabilityMinor:
        *value = 0;
        return cudaSuccess;
    case cudaDevAttrL2CacheSize: // an H100's
        *value = 50 << 20;
        return cudaSuccess;
    case cudaDevAttrMaxPersistingL2CacheSize: // three quarters of the L2, as an A100 sets aside
        *value = 75 << 19;
        return cudaSuccess;
    case cudaDevAttrMaxAccessPolicyWindowSize:
        *value = 134213632;
        return cudaSuccess;
    default:
        note("cudaDeviceGetAttribute(%d) is not emulated", (int)attr);
        return set_error(cudaErrorInvalidValue);
    }
}

cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp *prop, int device)
{
    G1EMU_FAIL("cudaGetDeviceProperties", cudaErrorInvalidValue);
    int phys[64], n = visible_devices(phys, 64);
    if (device < 0 || device >= n)
        return set_error(cudaErrorInvalidDevice);
    memset(prop, 0, sizeof *prop);
    // the same physical (node) device has the same UUID in every process
    snprintf(prop->uuid.bytes, sizeof prop->uuid.bytes, "g1emu-gpu-%d", phys[device]);
    snprintf(prop->name, sizeof prop->name, "g1emu (CPU emulation)");
    prop->multiProcessorCount = emu_sms();
    prop->l2CacheSize = 50 << 20;
    prop->totalGlobalMem = device_memory();
    prop->major = 9;
    prop->minor = 0;
    return cudaSuccess;
}

// G1EMU_NO_KERNEL_IMAGE=1: a binary built for other GPUs than this one
cudaError_t cudaFuncGetAttributes(struct cudaFuncAttributes *attr, const void *func)
{
    if (!attr || !func)
        return last_error = cudaErrorInvalidValue;
    memset(attr, 0, sizeof *attr);
    G1EMU_FAIL("cudaFuncGetAttributes", cudaErrorInvalidValue);
    const char *v = getenv("G1EMU_NO_KERNEL_IMAGE");
    if (v && *v && strcmp(v, "0"))
        return last_error = cudaErrorNoKernelImageForDevice;
    attr->maxThreadsPerBlock = 1024;
    attr->ptxVersion = attr->binaryVersion = 90;
    return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t *free_b, size_t *total)
{
    G1EMU_FAIL("cudaMemGetInfo", cudaErrorInvalidValue);
    *total = device_memory();
    *free_b = device_live < *total ? *total - device_live : 0;
    return cudaSuccess;
}

cudaError_t cudaGetLastError(void)
{
    launch_unread[0] = 0;
    cudaError_t e = last_error;
    last_error = cudaSuccess;
    return e;
}

cudaError_t cudaPeekAtLastError(void)
{
    launch_unread[0] = 0;
    return last_error;
}

const char *cudaGetErrorName(cudaError_t e)
{
    switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorNotReady: return "cudaErrorNotReady";
    case cudaErrorNotSupported: return "cudaErrorNotSupported";
    case cudaErrorUnsupportedLimit: return "cudaErrorUnsupportedLimit";
    case cudaErrorIllegalState: return "cudaErrorIllegalState";
    case cudaErrorStreamCaptureUnsupported: return "cudaErrorStreamCaptureUnsupported";
    case cudaErrorStreamCaptureInvalidated: return "cudaErrorStreamCaptureInvalidated";
    case cudaErrorNoKernelImageForDevice: return "cudaErrorNoKernelImageForDevice";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorInsufficientDriver: return "cudaErrorInsufficientDriver";
    case cudaErrorLaunchOutOfResources: return "cudaErrorLaunchOutOfResources";
    case cudaErrorDevicesUnavailable: return "cudaErrorDevicesUnavailable";
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
    case cudaErrorNotReady: return "device not ready (g1emu)";
    case cudaErrorNotSupported: return "operation not supported (g1emu)";
    case cudaErrorUnsupportedLimit: return "unsupported limit (g1emu)";
    case cudaErrorIllegalState: return "illegal state (g1emu)";
    case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing (g1emu)";
    case cudaErrorStreamCaptureInvalidated: return "operation failed due to a previous error during capture (g1emu)";
    case cudaErrorNoKernelImageForDevice: return "no kernel image is available for execution on the device (g1emu)";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected (g1emu)";
    case cudaErrorInsufficientDriver: return "CUDA driver version is insufficient for CUDA runtime version (g1emu)";
    case cudaErrorLaunchOutOfResources: return "too many resources requested for launch (g1emu)";
    case cudaErrorDevicesUnavailable: return "CUDA-capable device(s) is/are busy or unavailable (g1emu)";
    default: return "unknown error (g1emu)";
    }
}

cudaError_t cudaMalloc(void **p, size_t bytes)
{
    if (fail_call("cudaMalloc", "cudaErrorMemoryAllocation")) {
        *p = nullptr;
        return set_error(cudaErrorMemoryAllocation);
    }
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

cudaError_t cudaFree(void *p)
{
    drain_all(); // cudaFree waits for the device
    return region_free(p, true, "cudaFree");
}

static cudaError_t malloc_host(const char *what, void **p, size_t bytes)
{
    if (fail_call(what, "cudaErrorMemoryAllocation")) {
        *p = nullptr;
        return set_error(cudaErrorMemoryAllocation);
    }
    *p = region_alloc(bytes, false);
    return *p ? cudaSuccess : set_error(cudaErrorMemoryAllocation);
}

cudaError_t cudaMallocHost(void **p, size_t bytes) { return malloc_host("cudaMallocHost", p, bytes); }

cudaError_t cudaHostAlloc(void **p, size_t bytes, unsigned int flags)
{
    (void)flags; // portable, mapped, write-combined: all plain host memory here
    return malloc_host("cudaHostAlloc", p, bytes);
}

cudaError_t cudaFreeHost(void *p)
{
    drain_all();
    return region_free(p, false, "cudaFreeHost");
}

// The caller's host memory pinned in place: a region of its own (copies from
// it are then queued like those from cudaMallocHost memory, and checked the
// same way), left to the caller to free after cudaHostUnregister.
cudaError_t cudaHostRegister(void *p, size_t bytes, unsigned int flags)
{
    G1EMU_FAIL("cudaHostRegister", cudaErrorMemoryAllocation);
    (void)flags; // portable, mapped, I/O memory, read-only: all plain host memory here
    if (!p || !bytes)
        return set_error(cudaErrorInvalidValue);
    uintptr_t a = (uintptr_t)p, end = a + bytes;
    for (const auto &kv : regions) {
        const Region &r = kv.second;
        if ((uintptr_t)r.base < end && a < (uintptr_t)r.base + r.size) {
            if (r.device) {
                note("cudaHostRegister(%p, %zu): device memory", p, bytes);
                return set_error(cudaErrorInvalidValue);
            }
            return set_error(cudaErrorHostMemoryAlreadyRegistered);
        }
    }
    Region &r = regions[a] = Region{p, bytes, false, 0};
    r.registered = true;
    race_alloc(r);
    return cudaSuccess;
}

cudaError_t cudaHostUnregister(void *p)
{
    auto it = regions.find((uintptr_t)p);
    if (it == regions.end() || !it->second.registered)
        return set_error(cudaErrorHostMemoryNotRegistered);
    drain_all(); // copies queued from it run while it is still pinned
    race_free(it->second);
    regions.erase(it);
    return cudaSuccess;
}

// Host memory of [p, p + n) is page-locked (cudaMallocHost, cudaHostAlloc, cudaHostRegister).
static bool pinned(const void *p, size_t n)
{
    const Region *r = find_region(p);
    return r && !r->device && (uintptr_t)p + n <= (uintptr_t)r->base + r->size;
}

// Queued copies into pinned memory, by destination: the bytes they span
// and whether the copy checks them (see copy()).
static std::map<void *, std::pair<size_t, std::shared_ptr<bool>>> poisoned_copies;
// Queued copies from pinned memory: the bytes each will read when it runs.
// A copy into those bytes queued after them (an in-place round trip: up,
// work, down, one synchronise) is not poisoned: the earlier copy must still
// read what the host left there.
static std::map<unsigned long long, std::pair<const char *, size_t>> pinned_reads;
static unsigned long long pinned_read_ids;

// A copy of height rows of width bytes, queued on s (see "streams").
// sync: the host waits for it (cudaMemcpy).
static cudaError_t copy(const char *what, void *dst, size_t dpitch, const void *src, size_t spitch, size_t width,
                        size_t height, cudaMemcpyKind kind, cudaStream_t s, bool sync)
{
    G1EMU_FAIL(what, cudaErrorInvalidValue);
    cudaError_t e = check_copy(what, dst, src, dpitch, spitch, width, height, kind);
    if (e != cudaSuccess || !width || !height)
        return e;
    bool dd = find_region(dst) && find_region(dst)->device, sd = find_region(src) && find_region(src)->device;
    size_t dn = dpitch * (height - 1) + width, sn = spitch * (height - 1) + width;
    if (capturing && (!dd || !sd) && stream_of(s, what) == capturing)
        fail("%s to or from host memory into a stream capture (g1emu's graphs take device work only)", what);
    // a host source: its bytes now. Pageable memory is staged by the driver
    // (the copy uses these); pinned memory is read by the copy engine when
    // the copy runs, so it must not change before then
    std::shared_ptr<std::vector<char>> now;
    if (!sd)
        now = std::make_shared<std::vector<char>>((const char *)src, (const char *)src + sn);
    bool src_pinned = !sd && pinned(src, sn), dst_host = !dd, dst_pinned = dst_host && pinned(dst, dn);
    // set when the destination is poisoned below: the copy then checks that
    // the host left it alone until the copy ran
    auto poisoned = std::make_shared<bool>(false);
    unsigned long long rid = 0;
    if (src_pinned)
        pinned_reads[rid = ++pinned_read_ids] = {(const char *)src, sn};
    unsigned long long seq = enqueue(s, what, [=] {
        if (rid)
            pinned_reads.erase(rid);
        auto mine = poisoned_copies.find(dst);
        if (mine != poisoned_copies.end() && mine->second.second == poisoned)
            poisoned_copies.erase(mine);
        for (size_t r = 0; *poisoned && r < height; r++)
            for (size_t i = 0; i < width; i++)
                if (((const unsigned char *)dst)[r * dpitch + i] != 0xff)
                    fail("%s of %zu bytes into pinned host memory at %p: the host wrote to that memory before the "
                         "copy ran (the copy overwrites it when the stream gets to it: synchronise the stream, or "
                         "wait for an event, before using the buffer)",
                         what, width * height, dst);
        const char *from = (const char *)src;
        if (now && !src_pinned)
            from = now->data();
        else if (now && memcmp(src, now->data(), sn))
            fail("%s of %zu bytes from pinned host memory at %p: the host changed that memory before the copy "
                 "ran (a copy from pinned memory reads it when the stream gets to it: synchronise the stream, "
                 "or wait for an event, before reusing the buffer)",
                 what, width * height, src);
        for (size_t r = 0; r < height; r++)
            memmove((char *)dst + r * dpitch, from + r * spitch, width);
    });
    if (!seq) {
        pinned_reads.erase(rid);
        return cudaErrorInvalidResourceHandle;
    }
    // into host memory: what the host reads before the copy ran is garbage
    // (NaN bytes) in pinned memory; into pageable memory the call returns
    // once the copy is done
    if (sync || (dst_host && !dst_pinned))
        drain({seq});
    else if (dst_pinned && !queued.empty() && queued.back().seq == seq) { // still queued
        // copies queued into overlapping bytes write each other's: neither
        // checks (only a host write between a copy and its sync is sought)
        bool alone = true;
        for (auto it = poisoned_copies.begin(); it != poisoned_copies.end();) {
            bool overlap = (char *)it->first < (char *)dst + dn && (char *)dst < (char *)it->first + it->second.first;
            if (overlap)
                *it->second.second = false, alone = false;
            it = overlap ? poisoned_copies.erase(it) : std::next(it);
        }
        bool read_first = false; // a queued copy still reads these bytes
        for (const auto &rd : pinned_reads)
            if (rd.second.first < (char *)dst + dn && (char *)dst < rd.second.first + rd.second.second)
                read_first = true;
        if (!read_first)
            for (size_t r = 0; r < height; r++)
                memset((char *)dst + r * dpitch, 0xff, width);
        if (alone && !read_first) {
            *poisoned = true;
            poisoned_copies[dst] = {dn, poisoned};
        }
    }
    return cudaSuccess;
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, enum cudaMemcpyKind kind)
{
    return copy("cudaMemcpy", dst, n, src, n, n, 1, kind, 0, true);
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, enum cudaMemcpyKind kind, cudaStream_t s)
{
    return copy("cudaMemcpyAsync", dst, n, src, n, n, 1, kind, s, false);
}

cudaError_t cudaMemcpy2DAsync(void *dst, size_t dpitch, const void *src, size_t spitch, size_t width, size_t height,
                              enum cudaMemcpyKind kind, cudaStream_t s)
{
    if (width > dpitch || width > spitch) { // (counted in copy)
        note("cudaMemcpy2DAsync: width %zu exceeds a pitch (%zu, %zu)", width, dpitch, spitch);
        return set_error(cudaErrorInvalidValue);
    }
    return copy("cudaMemcpy2DAsync", dst, dpitch, src, spitch, width, height, kind, s, false);
}

// cudaMemset is asynchronous too (for device memory), on the legacy stream
static cudaError_t memset_on(const char *what, void *p, int v, size_t n, cudaStream_t s)
{
    G1EMU_FAIL(what, cudaErrorInvalidValue);
    if (n && !device_range(p, n)) {
        note("%s of %zu bytes outside a device allocation", what, n);
        return set_error(cudaErrorInvalidValue);
    }
    if (!n)
        return cudaSuccess;
    return enqueue(s, what, [=] { memset(p, v, n); }) ? cudaSuccess : cudaErrorInvalidResourceHandle;
}

cudaError_t cudaMemset(void *p, int v, size_t n) { return memset_on("cudaMemset", p, v, n, 0); }

cudaError_t cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t s) { return memset_on("cudaMemsetAsync", p, v, n, s); }

static cudaError_t stream_create(const char *what, cudaStream_t *s, unsigned flags);

cudaError_t cudaStreamCreate(cudaStream_t *s) { return stream_create("cudaStreamCreate", s, cudaStreamDefault); }

// The L2's persisting set-aside and a stream's access policy window (the
// benchmark's panel experiment): checked as the runtime documents them,
// then without effect (the emulation has no cache).
cudaError_t cudaDeviceSetLimit(enum cudaLimit limit, size_t value)
{
    G1EMU_FAIL("cudaDeviceSetLimit", cudaErrorInvalidValue);
    if (limit != cudaLimitPersistingL2CacheSize) {
        note("cudaDeviceSetLimit(%d) is not emulated", (int)limit);
        return set_error(cudaErrorUnsupportedLimit);
    }
    if (value > (size_t)(75 << 19)) {
        note("cudaDeviceSetLimit: %zu bytes of persisting L2, more than the %d the device sets aside", value, 75 << 19);
        return set_error(cudaErrorInvalidValue);
    }
    return cudaSuccess;
}

cudaError_t cudaCtxResetPersistingL2Cache(void) { return cudaSuccess; }

cudaError_t cudaStreamSetAttribute(cudaStream_t s, cudaStreamAttrID attr, const cudaStreamAttrValue *v)
{
    G1EMU_FAIL("cudaStreamSetAttribute", cudaErrorInvalidValue);
    if (!stream_of(s, "cudaStreamSetAttribute"))
        return cudaErrorInvalidResourceHandle;
    if (attr != cudaStreamAttributeAccessPolicyWindow || !v) {
        note("cudaStreamSetAttribute(%d) is not emulated", (int)attr);
        return set_error(cudaErrorInvalidValue);
    }
    const cudaAccessPolicyWindow &w = v->accessPolicyWindow;
    if (w.num_bytes > 134213632 || !(w.hitRatio >= 0 && w.hitRatio <= 1)) {
        note("cudaStreamSetAttribute: access policy window of %zu bytes, hit ratio %g", w.num_bytes, w.hitRatio);
        return set_error(cudaErrorInvalidValue);
    }
    return cudaSuccess;
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags)
{
    return stream_create("cudaStreamCreateWithFlags", s, flags);
}

static cudaError_t stream_create(const char *what, cudaStream_t *s, unsigned flags)
{
    G1EMU_FAIL(what, cudaErrorInvalidValue);
    Stream *st = new Stream{(flags & cudaStreamNonBlocking) != 0, 0, current_device()};
    live_streams.insert(st);
    *s = (cudaStream_t)st;
    return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t s)
{
    Stream *st = stream_of(s, "cudaStreamDestroy");
    if (!st || st == &legacy_stream)
        return set_error(cudaErrorInvalidResourceHandle);
    if (st->last)
        drain({st->last}); // its work still runs
    live_streams.erase(st);
    delete st;
    return cudaSuccess;
}

// A host wait while a stream is being captured: refused, and the capture
// fails at its end (as CUDA invalidates it).
static bool waits_during_capture(const char *what)
{
    if (!capturing)
        return false;
    note("%s while a stream is being captured", what);
    capture_broken = true;
    set_error(cudaErrorStreamCaptureUnsupported);
    return true;
}

cudaError_t cudaStreamSynchronize(cudaStream_t s)
{
    G1EMU_FAIL("cudaStreamSynchronize", cudaErrorInvalidResourceHandle);
    Stream *st = stream_of(s, "cudaStreamSynchronize");
    if (!st)
        return cudaErrorInvalidResourceHandle;
    if (st == capturing && waits_during_capture("cudaStreamSynchronize"))
        return cudaErrorStreamCaptureUnsupported;
    if (st->last)
        drain({st->last});
    return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize(void)
{
    G1EMU_FAIL("cudaDeviceSynchronize", cudaErrorInvalidValue);
    if (waits_during_capture("cudaDeviceSynchronize"))
        return cudaErrorStreamCaptureUnsupported;
    drain_all();
    return cudaSuccess;
}

cudaError_t cudaStreamBeginCapture(cudaStream_t s, enum cudaStreamCaptureMode mode)
{
    (void)mode;
    G1EMU_FAIL("cudaStreamBeginCapture", cudaErrorInvalidValue);
    Stream *st = stream_of(s, "cudaStreamBeginCapture");
    if (!st)
        return cudaErrorInvalidResourceHandle;
    if (st == &legacy_stream) {
        note("cudaStreamBeginCapture on the legacy default stream");
        return set_error(cudaErrorStreamCaptureUnsupported);
    }
    if (capturing) {
        note("cudaStreamBeginCapture while another capture is open (g1emu captures one stream at a time)");
        return set_error(cudaErrorIllegalState);
    }
    if (graph_fail("begin"))
        return set_error(cudaErrorNotSupported);
    capturing = st;
    capture_graph = new Graph;
    capture_broken = false;
    return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t *g)
{
    Stream *st = stream_of(s, "cudaStreamEndCapture");
    if (!st)
        return cudaErrorInvalidResourceHandle;
    if (st != capturing) {
        note("cudaStreamEndCapture on a stream not being captured");
        return set_error(cudaErrorIllegalState);
    }
    capturing = nullptr;
    if (fail_call("cudaStreamEndCapture", "cudaErrorStreamCaptureInvalidated")) // the capture ends, its graph lost
        capture_broken = true;
    if (capture_broken) {
        delete capture_graph;
        capture_graph = nullptr;
        *g = nullptr;
        return set_error(cudaErrorStreamCaptureInvalidated);
    }
    *g = (cudaGraph_t)capture_graph;
    capture_graph = nullptr;
    return cudaSuccess;
}

cudaError_t cudaStreamIsCapturing(cudaStream_t s, enum cudaStreamCaptureStatus *status)
{
    Stream *st = stream_of(s, "cudaStreamIsCapturing");
    if (!st)
        return cudaErrorInvalidResourceHandle;
    *status = st == capturing ? cudaStreamCaptureStatusActive : cudaStreamCaptureStatusNone;
    return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t *exec, cudaGraph_t g, unsigned long long flags)
{
    (void)flags;
    G1EMU_FAIL("cudaGraphInstantiate", cudaErrorInvalidValue);
    if (!g)
        return set_error(cudaErrorInvalidValue);
    if (graph_fail("instantiate"))
        return set_error(cudaErrorNotSupported);
    *exec = (cudaGraphExec_t) new Graph(*(Graph *)g);
    return cudaSuccess;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t s)
{
    G1EMU_FAIL("cudaGraphLaunch", cudaErrorInvalidValue);
    if (!exec)
        return set_error(cudaErrorInvalidValue);
    if (!stream_of(s, "cudaGraphLaunch"))
        return cudaErrorInvalidResourceHandle;
    if (stream_of(s, "cudaGraphLaunch") == capturing) {
        note("cudaGraphLaunch into a stream being captured (not emulated)");
        return set_error(cudaErrorNotSupported);
    }
    for (const Node &n : ((Graph *)exec)->nodes)
        if (!enqueue(s, n.what, n.run))
            return cudaErrorInvalidResourceHandle;
    return cudaSuccess;
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec)
{
    delete (Graph *)exec;
    return cudaSuccess;
}

cudaError_t cudaGraphDestroy(cudaGraph_t g)
{
    delete (Graph *)g;
    return cudaSuccess;
}

struct emu_event {
    std::chrono::steady_clock::time_point t;
    unsigned long long seq; // its latest record (0: never recorded)
    bool done;              // that record ran
};

static cudaError_t event_create(const char *what, cudaEvent_t *ev)
{
    G1EMU_FAIL(what, cudaErrorMemoryAllocation);
    *ev = (cudaEvent_t) new emu_event{std::chrono::steady_clock::time_point(), 0, false};
    events_live++;
    return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t *ev) { return event_create("cudaEventCreate", ev); }

cudaError_t cudaEventCreateWithFlags(cudaEvent_t *ev, unsigned int flags)
{
    if (flags & ~(unsigned)(cudaEventDisableTiming | cudaEventBlockingSync)) {
        note("cudaEventCreateWithFlags(%#x) is not emulated", flags);
        return set_error(cudaErrorInvalidValue);
    }
    return event_create("cudaEventCreateWithFlags", ev);
}

cudaError_t cudaEventDestroy(cudaEvent_t ev)
{
    emu_event *e = (emu_event *)ev;
    if (e->seq && !e->done)
        drain({e->seq});
    delete e;
    events_live--;
    return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t ev, cudaStream_t s)
{
    G1EMU_FAIL("cudaEventRecord", cudaErrorInvalidResourceHandle);
    if (capturing && stream_of(s, "cudaEventRecord") == capturing)
        fail("cudaEventRecord into a stream capture (not emulated)");
    emu_event *e = (emu_event *)ev;
    emu_event was = *e;
    unsigned long long seq = next_seq; // the number enqueue gives this record
    e->seq = seq;
    e->done = false;
    bool ok = enqueue(s, "cudaEventRecord", [e, seq] {
        if (e->seq == seq) { // not recorded again since
            e->t = std::chrono::steady_clock::now();
            e->done = true;
        }
    });
    if (!ok) {
        *e = was;
        return cudaErrorInvalidResourceHandle;
    }
    return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t ev)
{
    G1EMU_FAIL("cudaEventSynchronize", cudaErrorInvalidResourceHandle);
    emu_event *e = (emu_event *)ev;
    if (e->seq && !e->done)
        drain({e->seq});
    return cudaSuccess;
}

cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t ev, unsigned int flags)
{
    G1EMU_FAIL("cudaStreamWaitEvent", cudaErrorInvalidResourceHandle);
    if (capturing && stream_of(s, "cudaStreamWaitEvent") == capturing)
        fail("cudaStreamWaitEvent into a stream capture (not emulated)");
    (void)flags;
    emu_event *e = (emu_event *)ev;
    unsigned long long seq = next_seq;
    if (!enqueue(s, "cudaStreamWaitEvent", [] {}))
        return cudaErrorInvalidResourceHandle;
    if (e->seq && !e->done) // the no-op waits for the record, and the stream's later work for the no-op
        for (Work &w : queued)
            if (w.seq == seq)
                w.after.push_back(e->seq);
    return cudaSuccess;
}

cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b)
{
    emu_event *x = (emu_event *)a, *y = (emu_event *)b;
    if (!x->seq || !y->seq)
        return set_error(cudaErrorInvalidResourceHandle);
    if (!x->done || !y->done)
        return cudaErrorNotReady; // a record the host did not wait for
    *ms = std::chrono::duration<float, std::milli>(y->t - x->t).count();
    return cudaSuccess;
}

} // extern "C"

// ---- races and bounds (G1EMU_RACE) ------------------------------------------
//
// The kernels of this build are compiled with -fsanitize=thread for its
// instrumentation alone: every load and store of theirs calls
// __tsan_readN / __tsan_writeN with its address. No ThreadSanitizer runtime
// is linked; the hooks below are ours. Each byte of device memory (and of
// the program's data, where the kernels' __shared__ statics live) keeps the
// thread and "stretch" of its last write and of its last read, where a
// stretch is one block's run between two __syncthreads (numbered across the
// program, so an earlier block's stretches are smaller than this block's
// first). Two accesses to a byte, one of them a write, by two threads,
// race unless a __syncthreads separates them in one block: the same
// stretch, lanes of one warp included (nothing here takes a shuffle for a
// memory fence), or, in device memory, two blocks of one launch (blocks
// are not ordered; the kernels use no atomics). Shared memory lives for a
// block: a read of shared memory no thread of this block wrote is
// reported (a GPU gives whatever the last block left there). A kernel's
// access past the end of its allocation is reported to the byte (the
// guard pages of device memory catch only what leaves the page). Launches
// are taken as ordered: the engine works on one stream.
#if defined(G1EMU_RACE)

extern "C" char __data_start[], _end[]; // the program's .data and .bss (glibc, GNU ld)

namespace g1emu {

namespace {

struct Rec {
    uint32_t w_lin, w_phase, r_lin, r_phase; // thread in its block, stretch (0: none)
};
const uint32_t MANY = 0xffffffffu; // r_lin: more than one thread read it
const size_t REC = sizeof(Rec);

struct Race {
    uint32_t phase = 0, launch_first = 1, block_first = 1;
    unsigned long long block = 0;
    std::vector<unsigned long long> phase_block; // the block of each stretch of this launch
    uintptr_t dev_lo = UINTPTR_MAX, dev_hi = 0;  // spans every device allocation made
    const Region *last = nullptr;                // the allocation the last access fell in
    Rec *data = nullptr;                         // records of [__data_start, _end)
} R;

void *shadow_map(size_t bytes)
{
    void *p = mmap(nullptr, bytes * REC, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
        fail("race check: no memory for the records of %zu bytes", bytes);
    return p;
}

void forget_all() // stretch numbers wrapped: every record is from before this launch
{
    for (auto &it : regions)
        if (it.second.shadow)
            madvise(it.second.shadow, it.second.size * REC, MADV_DONTNEED);
    if (R.data)
        madvise(R.data, (size_t)(_end - __data_start) * REC, MADV_DONTNEED);
    R.phase = 0;
}

} // namespace

static void race_launch()
{
    if (R.phase > 0xf0000000u)
        forget_all();
    R.launch_first = R.phase + 1;
    R.phase_block.clear();
}

static void race_block(unsigned long long b)
{
    R.block = b;
    R.block_first = ++R.phase;
    R.phase_block.push_back(b);
}

static void race_barrier()
{
    ++R.phase;
    R.phase_block.push_back(R.block);
}

static void race_alloc(const Region &r)
{
    uintptr_t a = (uintptr_t)r.base, end = a + (r.mapped ? r.mapped : r.size);
    if (r.device) {
        R.dev_lo = a < R.dev_lo ? a : R.dev_lo;
        R.dev_hi = end > R.dev_hi ? end : R.dev_hi;
    }
}

static void race_free(const Region &r)
{
    if (r.shadow)
        munmap(r.shadow, r.size * REC);
    r.shadow = nullptr;
    R.last = nullptr;
}

static std::string thread_name(uint32_t lin, uint32_t ph)
{
    char s[160];
    if (lin == MANY)
        return "more than one thread";
    unsigned x = lin % cur.bdim.x, y = lin / cur.bdim.x % cur.bdim.y, z = lin / (cur.bdim.x * cur.bdim.y);
    if (ph >= R.block_first) {
        snprintf(s, sizeof s, "thread (%u,%u,%u)%s", x, y, z,
                 lin >> 5 == (uint32_t)S.running->lin >> 5 ? ", a lane of the same warp," : "");
    } else {
        unsigned long long b = R.phase_block[ph - R.launch_first];
        snprintf(s, sizeof s, "thread (%u,%u,%u) of block (%llu,%llu,%llu)", x, y, z, b % cur.gdim.x,
                 b / cur.gdim.x % cur.gdim.y, b / ((unsigned long long)cur.gdim.x * cur.gdim.y));
    }
    return s;
}

static void race_access(const void *p, size_t n, bool write, bool natural = false)
{
    if (!S.in_kernel || !S.running)
        return; // host code of the kernels' files
    uintptr_t a = (uintptr_t)p;
    // An access the compiler took as naturally aligned (its type says so:
    // float4, int4, a float, ...) must be: a GPU faults ("misaligned
    // address") where the CPU does not care.
    if (natural && (a & (n - 1)))
        fail("%s %zu byte(s) at %p, which is not a multiple of %zu: the type promises that alignment, and a GPU "
             "faults on the access (misaligned address)",
             write ? "writes" : "reads", n, p, n);
    if (a - (uintptr_t)S.running->stack < STACK + 4096)
        return; // its own stack: locals
    Rec *rec;
    bool global;
    // the device allocation holding a, its alignment padding included
    auto holds = [a](const Region *q) {
        return q && q->device && a >= (uintptr_t)q->base && a < (uintptr_t)q->base + (q->mapped ? q->mapped : q->size);
    };
    const Region *r = nullptr;
    if (a >= R.dev_lo && a < R.dev_hi) {
        if (holds(R.last)) {
            r = R.last;
        } else {
            auto it = regions.upper_bound(a);
            if (it != regions.begin() && holds(&std::prev(it)->second))
                r = R.last = &std::prev(it)->second;
        }
    }
    if (r) {
        size_t off = a - (uintptr_t)r->base;
        if (r->dev != S.dev) // no peer access is enabled: a GPU faults
            fail("%s %zu byte(s) at %p, in an allocation of device %d, from kernel %s on device %d",
                 write ? "writes" : "reads", n, p, r->dev, S.kname, S.dev);
        if (off + n > r->size)
            fail("%s %zu byte(s) at %p, byte %zu of an allocation of %zu bytes at %p: past its end",
                 write ? "writes" : "reads", n, p, off, r->size, r->base);
        if (!r->shadow)
            r->shadow = shadow_map(r->size);
        rec = (Rec *)r->shadow + off;
        global = true;
    } else if (a >= (uintptr_t)__data_start && a < (uintptr_t)_end) {
        if (a - (uintptr_t)&cur < sizeof cur)
            return; // threadIdx and friends
        if (!R.data)
            R.data = (Rec *)shadow_map((size_t)(_end - __data_start));
        rec = R.data + (a - (uintptr_t)__data_start);
        global = false;
    } else {
        return; // the launch's arguments (host memory of the emulator), pinned memory
    }
    auto where = [&](size_t i) { // for messages only
        char s[200];
        if (global)
            snprintf(s, sizeof s, "device memory at %p (byte %zu of an allocation of %zu bytes at %p)",
                     (void *)(a + i), a + i - (uintptr_t)r->base, r->size, r->base);
        else
            snprintf(s, sizeof s, "shared memory at %p", (void *)(a + i));
        return std::string(s);
    };
    uint32_t lin = (uint32_t)S.running->lin, ph = R.phase;
    // 0: no conflict (never, an earlier launch, an earlier stretch of this
    // block, or shared memory of an earlier block); 1: this stretch; 2: an
    // earlier block of this launch (device memory)
    auto live = [&](uint32_t q) {
        if (q < R.launch_first)
            return 0;
        if (q < R.block_first)
            return global ? 2 : 0;
        return q == ph ? 1 : 0;
    };
    auto race = [&](size_t i, const char *mine, uint32_t other, uint32_t q, const char *theirs) {
        int k = live(q);
        fail("race on %s: this thread %s it, and %s %s it %s", where(i).c_str(), mine, thread_name(other, q).c_str(),
             theirs,
             k == 2 ? "in an earlier block of this launch (blocks are not ordered)"
                    : "with no __syncthreads between");
    };
    for (size_t i = 0; i < n; i++) {
        Rec &x = rec[i];
        int kw = live(x.w_phase), kr = live(x.r_phase);
        if (write) {
            if (kw == 2 || (kw == 1 && x.w_lin != lin))
                race(i, "writes", x.w_lin, x.w_phase, "wrote");
            if (kr == 2 || (kr == 1 && x.r_lin != lin))
                race(i, "writes", x.r_lin, x.r_phase, "read");
            x.w_lin = lin;
            x.w_phase = ph;
        } else {
            if (kw == 2 || (kw == 1 && x.w_lin != lin))
                race(i, "reads", x.w_lin, x.w_phase, "wrote");
            if (!global && x.w_phase < R.block_first)
                fail("reads %s that no thread of this block has written yet (on a GPU: whatever an earlier block "
                     "left there)",
                     where(i).c_str());
            if (kr == 0) {
                x.r_lin = lin;
                x.r_phase = ph;
            } else if (kr == 2 || x.r_lin != lin) {
                x.r_lin = MANY; // keeps the earlier stretch: a later write races with it
            }
        }
    }
}

} // namespace g1emu

// The calls -fsanitize=thread puts in the kernels (GCC's names).
extern "C" {
#define G1EMU_TSAN(n)                                                                                                \
    void __tsan_read##n(void *p) { g1emu::race_access(p, n, false, true); }                                        \
    void __tsan_write##n(void *p) { g1emu::race_access(p, n, true, true); }                                        \
    void __tsan_unaligned_read##n(void *p) { g1emu::race_access(p, n, false); }                                    \
    void __tsan_unaligned_write##n(void *p) { g1emu::race_access(p, n, true); }
G1EMU_TSAN(1)
G1EMU_TSAN(2)
G1EMU_TSAN(4)
G1EMU_TSAN(8)
G1EMU_TSAN(16)
#undef G1EMU_TSAN
void __tsan_read_range(void *p, unsigned long n) { g1emu::race_access(p, n, false); }
void __tsan_write_range(void *p, unsigned long n) { g1emu::race_access(p, n, true); }
void __tsan_init(void) {}
void __tsan_func_entry(void *pc) { (void)pc; }
void __tsan_func_exit(void) {}
// virtual calls in host code (std::thread in test_emu), never in a kernel
void __tsan_vptr_update(void **p, void *v) { (void)p, (void)v; }
void __tsan_vptr_read(void **p) { (void)p; }
}
#endif // G1EMU_RACE
