// g1emu: what the runtime shares with the cuBLAS emulation.
#ifndef G1EMU_INTERNAL_H
#define G1EMU_INTERNAL_H

#include <cuda_runtime_api.h>
#include <stddef.h>

#include <functional>

namespace g1emu {

struct Region {
    void *base;
    size_t size;
    bool device;
    size_t mapped; // bytes of its own mapping, which the host may not touch (0: heap memory)
    mutable void *shadow = nullptr; // G1EMU_RACE builds: each byte's last kernel accesses (emu_runtime.cpp)
    int dev = 0;                    // device allocations: the device current when made
    bool registered = false;        // host memory of the caller's, pinned by cudaHostRegister (not ours to free)
};

// The allocation (device or pinned host) holding p, or null.
const Region *find_region(const void *p);
// [p, p + bytes) lies inside one device allocation.
bool device_range(const void *p, size_t bytes);
// A message on stderr, prefixed "g1emu: ".
void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
// Remember e as the last error (unless cudaSuccess) and return it.
cudaError_t set_error(cudaError_t e);
// The calling thread's current device (cudaSetDevice; 0 until set), as
// CUDA's: per host thread.
int current_device();

// Stream work (emu_runtime.cpp, "streams"): `run` is queued on stream s and
// runs, in the stream's order, only when the host waits for it (a stream,
// event or device synchronisation, a synchronous copy, a free). Returns its
// sequence number, or 0 (and sets cudaErrorInvalidResourceHandle) for a
// stream that is not live. `what` names it in messages.
unsigned long long enqueue(cudaStream_t s, const char *what, std::function<void()> run);

// G1EMU_FAIL_CALL=K (emu_runtime.cpp, "failing calls"): true when this call
// of the runtime or cuBLAS API (named `what`) is the one to fail, with the
// error named `err`. Counts it.
bool fail_call(const char *what, const char *err);
// Live events and cuBLAS handles (g1emu_live).
extern long events_live, blas_handles_live;

} // namespace g1emu

#endif
