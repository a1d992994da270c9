#!/usr/bin/env bash
# One command for a machine with a GPU, nvcc, meson and ninja (MPI and HDF5
# not needed): build with the CUDA backend, run the cuda test suite, run the
# one-layer GPU benchmark, print a short table last. A failed engine test is
# run again with kernels ruled out (--cuda-tune); the layer is timed again
# under the benchmark's suggested --cuda-tune. Logs go to build-gpu/logs;
# when $OUT is set, the summary, the benchmarks' and the full-shape check's
# logs are copied there with every log in one logs.tar.gz (a lent machine
# returns at most 8 files). Bounded by timeouts to finish within 8 minutes
# on one H100. Run from the repository root: bash scripts/gpu-check.sh
# GENCODE overrides the nvcc target (default: from the GPU, sm_90a on H100/H200).
# SANITIZE=1 also runs cuda_ops under compute-sanitizer (memcheck, racecheck)
# with whatever time is left. Without jansson (pkg-config) the build is the
# engine core and the cuda tests only (-Djson=disabled).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
start=$(date +%s)
build=${BUILD_DIR:-build-gpu}
logs=$build/logs
rm -rf "$logs"
mkdir -p "$logs"
# whatever way the script ends: the logs that matter, and all of them packed
out_logs() {
  [ -n "${OUT:-}" ] || return 0
  mkdir -p "$OUT"
  for f in summary.txt bench.log full-shapes.log bench-tuned.log; do [ -f "$logs/$f" ] && cp "$logs/$f" "$OUT/"; done
  tar czf "$OUT/logs.tar.gz" -C "$build" logs 2>/dev/null
}
trap out_logs EXIT
summary=()
# Every step's timeout is its own cap or what is left of 470 s, whichever is
# less, so that a hang (a kernel that never ends on a real GPU) cannot take
# the run past the 8 minutes. limit CAP: that, or 0 when nothing is left.
limit() {
  local left=$(( 470 - ($(date +%s) - start) ))
  if [ "$left" -lt 10 ]; then echo 0; elif [ "$left" -lt "$1" ]; then echo "$left"; else echo "$1"; fi
}
# each step's line; the summary so far and the logs reach $OUT after every
# step, so a run killed outright (SIGKILL: no EXIT trap) still returns them
note() {
  summary+=("$(printf '%-22s %s' "$1" "$2")")
  printf '%s\n' "${summary[@]}" >"$logs/summary.txt"
  out_logs
}

if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >"$logs/gpu.txt" 2>&1; then
  echo "gpu-check: no GPU visible (nvidia-smi): nothing to check" | tee "$logs/summary.txt"; exit 77
fi
cat "$logs/gpu.txt"
# the driver and toolkit, for a summary that has to explain a failure alone
gpu_line=$(nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total --format=csv,noheader 2>/dev/null |
  head -1)
nvcc_line=$(nvcc --version 2>/dev/null | sed -n 's/^Cuda compilation tools, //p' | head -1)
if [ -z "${GENCODE:-}" ]; then
  cc=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')
  case "$cc" in
    90|"") GENCODE="-gencode=arch=compute_90a,code=sm_90a" ;;
    *) GENCODE="-gencode=arch=compute_${cc},code=sm_${cc}" ;;
  esac
fi
echo "gpu-check: nvcc target $GENCODE"
note gpu "${gpu_line:-?} (nvidia-smi: name, driver, compute capability, memory)"
note nvcc "${nvcc_line:-?}; $GENCODE"

opts=(-Dcuda=enabled -Dmpi=disabled -Dhdf5=disabled "-Dnvcc_gencode=$GENCODE")
if ! pkg-config --exists jansson 2>/dev/null; then
  echo "gpu-check: jansson not found: building the engine core and the cuda tests only"
  opts+=(-Djson=disabled)
fi
if [ -f "$build/build.ninja" ]; then
  meson configure "$build" "${opts[@]}" >"$logs/setup.log" 2>&1
else
  meson setup "$build" "${opts[@]}" >"$logs/setup.log" 2>&1
fi || { cat "$logs/setup.log"; echo "gpu-check: meson setup failed"; exit 1; }
targets=(tests/cuda/test_cuda_backend tests/cuda/test_cuda_ops tests/cuda/test_cuda_engine tests/cuda/bench_cuda_layer
         tests/bench/bench_sampler)
if timeout "$(limit 300)" ninja -C "$build" "${targets[@]}" >"$logs/build.log" 2>&1; then
  note build "ok ($(( $(date +%s) - start )) s)"
else
  tail -40 "$logs/build.log"; echo "gpu-check: build failed (log: $logs/build.log)"; exit 1
fi

status=0
# The tests launch synchronously: a fault inside a kernel is then reported by
# the launch that caused it (file and line), not by a later synchronise.
# LAUNCH_BLOCKING=0 runs them asynchronously, as the benchmark always does.
# A test that sees no GPU where nvidia-smi lists one is a failure here: its
# log line says why (the CUDA runtime's error: a driver older than the
# toolkit needs, a container without the device files, ...).
why_no_gpu() {
  grep -h -m1 "no GPU visible" "$@" 2>/dev/null | sed 's/.*no GPU visible: //; s/: skipped$//' | cut -c1-240
}
for t in cuda_backend cuda_ops cuda_engine; do
  cap=$(limit 200)
  if [ "$cap" = 0 ]; then note "$t" "not run (no time left)"; status=1; continue; fi
  CUDA_LAUNCH_BLOCKING=${LAUNCH_BLOCKING:-1} \
    timeout "$cap" meson test -C "$build" --suite cuda "$t" --print-errorlogs --no-rebuild >"$logs/test-$t.log" 2>&1
  rc=$?
  cp "$build/meson-logs/testlog.txt" "$logs/testlog-$t.txt" 2>/dev/null
  if [ $rc -eq 0 ] && grep -q " OK " "$logs/test-$t.log"; then note "$t" "ok"
  elif [ $rc -eq 124 ]; then note "$t" "TIMED OUT after $cap s (log: $logs/testlog-$t.txt)"; status=1
  elif grep -q "SKIP" "$logs/test-$t.log"; then
    note "$t" "FAILED: no GPU seen by the test though nvidia-smi lists one: $(why_no_gpu "$logs/testlog-$t.txt")"
    status=1
  else note "$t" "FAILED (log: $logs/testlog-$t.txt)"; status=1; fi
done
# A failed engine suite: again with kernels ruled out (--cuda-tune), so that
# one run says which kernels are at fault: first without the int8 tensor
# cores and the tensor-core attention, then also without the GEMV (cuBLAS
# and the elementwise kernels only). (A cuda_ops failure names its op.)
if grep -q "^cuda_engine .*FAILED (log" "$logs/summary.txt"; then
  i=0
  for tune in mma-max-tokens=0,attn-mma=off mma-max-tokens=0,attn-mma=off,gemv-max-tokens=0; do
    i=$((i + 1))
    cap=$(limit 150)
    if [ "$cap" = 0 ]; then note "engine $tune" "not run (no time left)"; break; fi
    CUDA_LAUNCH_BLOCKING=${LAUNCH_BLOCKING:-1} timeout "$cap" "$build/tests/cuda/test_cuda_engine" --no-small \
      --cuda-tune "$tune" >"$logs/triage-$i.log" 2>&1
    rc=$?
    case $rc in
      0) note "engine $tune" "ok: the kernels ruled out are at fault" ;;
      124) note "engine $tune" "TIMED OUT (log: $logs/triage-$i.log)" ;;
      *) note "engine $tune" "FAILED too, exit $rc (log: $logs/triage-$i.log)" ;;
    esac
    [ $rc -eq 0 ] && break
  done
fi
# CUDA graphs once more with asynchronous launches: under
# CUDA_LAUNCH_BLOCKING=1 a driver may refuse launches into a capture (the
# engine then launches one by one and cuda_ops does not count the graphs)
if [ "${LAUNCH_BLOCKING:-1}" != 0 ] && [ "$(limit 60)" != 0 ]; then
  CUDA_LAUNCH_BLOCKING=0 G1_TEST_ONLY=graphs timeout "$(limit 60)" "$build/tests/cuda/test_cuda_ops" \
    >"$logs/test-graphs-async.log" 2>&1
  rc=$?
  if [ $rc -eq 0 ]; then note "cuda graphs (async)" "ok"
  elif [ $rc -eq 77 ]; then
    note "cuda graphs (async)" "FAILED: no GPU seen: $(why_no_gpu "$logs/test-graphs-async.log")"; status=1
  else note "cuda graphs (async)" "FAILED, exit $rc (log: $logs/test-graphs-async.log)"; status=1; fi
fi
# the failing checks, if any, from the test output
grep -h "FAIL\|mismatch" "$logs"/testlog-*.txt "$logs"/test-graphs-async.log 2>/dev/null | head -20

left=$(( 450 - ($(date +%s) - start) ))
if [ $left -gt 30 ]; then
  timeout $left "$build/tests/cuda/bench_cuda_layer" >"$logs/bench.log" 2>&1
  rc=$?
  if [ $rc -eq 0 ]; then note benchmark "ok"; else note benchmark "exit $rc (log: $logs/bench.log)"; status=1; fi
else
  note benchmark "not run (no time left)"
fi
# --cuda-gemm f32 (batch-invariant, no cuBLAS): what prompts cost without GEMMs
left=$(( 450 - ($(date +%s) - start) ))
if [ $left -gt 40 ]; then
  timeout $left "$build/tests/cuda/bench_cuda_layer" --cuda-gemm f32 --tokens 1,64,512,4096 --no-parts \
    >"$logs/bench-f32.log" 2>&1
  rc=$?
  if [ $rc -eq 0 ]; then note "benchmark f32" "ok"; else note "benchmark f32" "exit $rc (log: $logs/bench-f32.log)"; fi
else
  note "benchmark f32" "not run (no time left)"
fi
# rank 0's per-row logits work on this host's cores (a GPU node's CPU): what
# bounds a job's scored positions or sampled tokens per second
left=$(( 450 - ($(date +%s) - start) ))
if [ $left -gt 20 ]; then
  timeout 20 "$build/tests/bench/bench_sampler" --rows 256 >"$logs/bench-sampler.log" 2>&1 \
    && note "benchmark sampler" "ok" || note "benchmark sampler" "exit $? (log: $logs/bench-sampler.log)"
else
  note "benchmark sampler" "not run (no time left)"
fi

# the CUDA engine against the CPU engine at Grok-1's real shapes (one layer,
# 6.5 GB in host and GPU memory; 24 tokens: the GEMV and cuBLAS paths), with
# what time is left
left=$(( 450 - ($(date +%s) - start) - (${SANITIZE:-0} == 1 ? 60 : 0) ))
if [ $left -gt 100 ]; then
  CUDA_LAUNCH_BLOCKING=${LAUNCH_BLOCKING:-1} timeout $left "$build/tests/cuda/test_cuda_engine" --full 24 \
    >"$logs/full-shapes.log" 2>&1
  rc=$?
  case $rc in
    0) note "full shapes" "ok" ;;
    124) note "full shapes" "TIMED OUT after $left s, no verdict (log: $logs/full-shapes.log)"; status=1 ;;
    77) note "full shapes" "FAILED: no GPU seen: $(why_no_gpu "$logs/full-shapes.log")"; status=1 ;;
    *) note "full shapes" "FAILED, exit $rc (log: $logs/full-shapes.log)"; status=1 ;;
  esac
else
  note "full shapes" "not run (no time left)"
fi

# the layer again under the switches the parts table suggests (bench.log's
# "suggested --cuda-tune" line) when they are not the defaults: its rows
# against the first run's say whether to change the defaults
tune=$(sed -n 's/^suggested --cuda-tune: //p' "$logs/bench.log" 2>/dev/null | head -1)
left=$(( 450 - ($(date +%s) - start) ))
if [ -n "$tune" ] && [ "$tune" != "gemv-max-tokens=16,mma-max-tokens=128,mma-tile-cols=64" ]; then
  if [ $left -gt 45 ]; then
    timeout $left "$build/tests/cuda/bench_cuda_layer" --cuda-tune "$tune" --no-parts >"$logs/bench-tuned.log" 2>&1
    rc=$?
    if [ $rc -eq 0 ]; then note "benchmark tuned" "ok ($tune)"
    else note "benchmark tuned" "exit $rc ($tune; log: $logs/bench-tuned.log)"; fi
  else
    note "benchmark tuned" "not run (no time left; $tune)"
  fi
fi

if [ "${SANITIZE:-0}" = 1 ] && command -v compute-sanitizer >/dev/null; then
  for tool in memcheck racecheck; do
    left=$(( 470 - ($(date +%s) - start) ))
    if [ $left -lt 30 ]; then note "sanitize $tool" "not run (no time left)"; continue; fi
    timeout $left compute-sanitizer --tool $tool --error-exitcode 99 "$build/tests/cuda/test_cuda_ops" \
      >"$logs/sanitize-$tool.log" 2>&1
    rc=$?
    case $rc in
      0) note "sanitize $tool" "ok" ;;
      124) note "sanitize $tool" "timed out after $left s (log: $logs/sanitize-$tool.log)" ;;
      *) note "sanitize $tool" "exit $rc (log: $logs/sanitize-$tool.log)"; status=1
         grep -m5 "=========" "$logs/sanitize-$tool.log" ;;
    esac
  done
fi

echo
echo "== gpu-check summary ($(( $(date +%s) - start )) s) =="
[ -f "$logs/bench.log" ] && cat "$logs/bench.log"
[ -f "$logs/bench-f32.log" ] && tail -6 "$logs/bench-f32.log"
[ -f "$logs/bench-tuned.log" ] && sed -n '/^cuda paths/p; /^tokens/,/^goals/p' "$logs/bench-tuned.log"
[ -f "$logs/bench-sampler.log" ] && cat "$logs/bench-sampler.log"
[ -f "$logs/full-shapes.log" ] && grep "^grok-1:" "$logs/full-shapes.log"
printf '%s\n' "${summary[@]}" | tee "$logs/summary.txt"
exit $status
