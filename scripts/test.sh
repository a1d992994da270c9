#!/usr/bin/env bash
# The whole test suite: installs what is missing, builds two configurations
# (everything found, warnings as errors, CPU kernels for this machine: AVX-512
# or AVX2 where it has them; and MPI/HDF5/CUDA all disabled with the portable
# C kernels, -Dnative=false, which must still build the engine and pass its
# tests), runs every meson test, fuzzes each libFuzzer target briefly, builds
# the first configuration once more with clang (unit suite only), with
# AddressSanitizer and UndefinedBehaviorSanitizer (most suites; once more
# without MPI, with leak checks) and with ThreadSanitizer (the threaded
# parts), runs cppcheck, and ends with one line "N passed, N failed, N
# skipped".
set -uo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh || exit 1
# lm-evaluation-harness from PyPI for tests/lmeval (skipped when this fails)
bash scripts/lm-eval/setup.sh || echo "lm-eval: not installed; the lm_eval test will be skipped"

run_config() { # name, meson options...
  local dir=$1; shift
  rm -f "$dir/meson-logs/testlog.json"
  if [ ! -f "$dir/build.ninja" ]; then
    meson setup "$dir" -Dwerror=true "$@" >"$dir.setup.log" 2>&1 || { cat "$dir.setup.log"; return 1; }
  else
    meson configure "$dir" -Dwerror=true "$@" >/dev/null || return 1
  fi
  ninja -C "$dir" || return 1
  meson test -C "$dir" --print-errorlogs --num-processes 2 || true
}

status=0
run_config build-test || status=1
run_config build-test-minimal -Dmpi=disabled -Dhdf5=disabled -Dcuda=disabled -Dnative=false || status=1

# cppcheck over both configurations' sources (tests/ left out): one result
# each, failed by any report. The suppressions are the false positives
# docs/HACKING.md ("Static analysis") explains, and the system's headers
# (the CUDA ones); -D__GNUC__ lets the CUDA headers that src/cuda's host
# files include know their compiler. tests/ is left out by both spellings
# (absolute, and relative as compile_commands.json names it in a build
# folder inside the tree).
extra_results=build-extra-results.txt
: >"$extra_results"
for dir in build-test build-test-minimal; do
  if ! command -v cppcheck >/dev/null; then
    echo "cppcheck: not found, skipped"; echo "cppcheck-$dir SKIP" >>"$extra_results"
  elif [ ! -f "$dir/compile_commands.json" ]; then
    echo "cppcheck $dir: no compile_commands.json (setup failed)"; echo "cppcheck-$dir FAIL" >>"$extra_results"
  elif cppcheck --enable=warning,portability --inconclusive -q -D__GNUC__=12 --error-exitcode=1 \
         --suppress=invalidPointerCast --suppress='identicalInnerCondition:*run_files.c' --suppress='*:/usr/*' \
         --project="$dir/compile_commands.json" -i"$PWD/tests" -itests >"$dir.cppcheck.log" 2>&1 &&
       [ ! -s "$dir.cppcheck.log" ]; then
    echo "cppcheck $dir: no report"; echo "cppcheck-$dir PASS" >>"$extra_results"
  else
    echo "cppcheck $dir: reports (a new one is a bug or a false positive to suppress, docs/HACKING.md):"
    cat "$dir.cppcheck.log"; echo "cppcheck-$dir FAIL" >>"$extra_results"
  fi
done

# Fuzzing, bounded: each libFuzzer target (tests/fuzz) for FUZZ_SECONDS
# (default 20) from a scratch copy of its seed corpus; one test per target.
# Without clang every target counts as skipped. A crash leaves its input in
# build-fuzz/crash-*: copy it to tests/fuzz/regress/<target>/ to replay it in
# every build.
fuzz_results=build-fuzz-results.txt
: >"$fuzz_results"
fuzz_targets=(fuzz_model fuzz_jsonl fuzz_requests fuzz_files)
[ -f tests/fuzz/fuzz_pickle.c ] && fuzz_targets+=(fuzz_pickle)
if command -v clang >/dev/null; then
  if [ ! -f build-fuzz/build.ninja ]; then
    CC=clang meson setup build-fuzz -Dfuzz=true -Dmpi=disabled -Dhdf5=disabled -Dcuda=disabled -Dnative=false \
      >build-fuzz.setup.log 2>&1 || cat build-fuzz.setup.log
  fi
  for t in "${fuzz_targets[@]}"; do
    if ! ninja -C build-fuzz "tests/fuzz/$t" >/dev/null 2>build-fuzz.$t.log; then
      echo "fuzz $t: build failed (build-fuzz.$t.log)"; echo "$t FAIL" >>"$fuzz_results"; continue
    fi
    seeds=tests/fuzz/corpus/${t#fuzz_}; work=build-fuzz/corpus-${t#fuzz_}
    mkdir -p "$work"
    if "build-fuzz/tests/fuzz/$t" -max_total_time="${FUZZ_SECONDS:-20}" -rss_limit_mb=2048 \
         -artifact_prefix="build-fuzz/crash-$t-" "$work" $( [ -d "$seeds" ] && echo "$seeds" ) \
         >"build-fuzz.$t.log" 2>&1; then
      echo "fuzz $t: OK ($(grep -o 'Done [0-9]* runs' "build-fuzz.$t.log"))"; echo "$t PASS" >>"$fuzz_results"
    else
      echo "fuzz $t: FAILED, see build-fuzz.$t.log and build-fuzz/crash-$t-*"; echo "$t FAIL" >>"$fuzz_results"
    fi
  done
else
  echo "fuzz: clang not found, fuzz targets skipped"
  for t in "${fuzz_targets[@]}"; do echo "$t SKIP" >>"$fuzz_results"; done
fi

# Clang: everything the first configuration builds (nvcc gets clang++ as
# its host compiler, meson.build), warnings as errors, and the unit suite.
# The gcc builds above do not see what only clang refuses: a clang build of
# the tree was broken twice before this ran (tests/unit/simde, src/rowmath.c).
clang_build=0
if command -v clang >/dev/null && command -v clang++ >/dev/null; then
  clang_build=1
  rm -f build-clang/meson-logs/testlog.json
  if { [ -f build-clang/build.ninja ] ||
       CC=clang meson setup build-clang -Dwerror=true >build-clang.setup.log 2>&1; } &&
     ninja -C build-clang >build-clang.log 2>&1; then
    meson test -C build-clang --suite unit --print-errorlogs --num-processes 2 || true
  else
    echo "clang build failed:"; tail -30 build-clang.setup.log build-clang.log 2>/dev/null
  fi
else
  echo "clang: not found, the clang build is skipped"
fi

# AddressSanitizer and UndefinedBehaviorSanitizer: the first configuration
# without CUDA (nvcc's objects are not instrumented), built with
# -Db_sanitize=address,undefined. A finding aborts the process, so its test
# fails. The unit suite runs with leak checks; the cli, convert, tok, mpi
# and ops suites without (Open MPI and its plugins keep allocations to the
# end). The ref and slurm suites, mostly arithmetic and a batch system, and
# lm_eval (suite lmeval: 2.5 minutes of Python around grok1-run's text
# requests, which the text_* tests run here) are left to the builds above. G1_ASAN=0 skips this part.
asan_logs=()
if [ "${G1_ASAN:-1}" != 0 ]; then
  rm -f build-asan/meson-logs/testlog*.json
  if { [ -f build-asan/build.ninja ] ||
       meson setup build-asan -Dwerror=true -Dcuda=disabled -Db_sanitize=address,undefined \
         >build-asan.setup.log 2>&1; } &&
     ninja -C build-asan >build-asan.log 2>&1; then
    asan_env=(G1_SANITIZED=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1)
    env "${asan_env[@]}" ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:abort_on_error=1 \
      meson test -C build-asan --suite unit --print-errorlogs --num-processes 2 -t 4 || true
    mv build-asan/meson-logs/testlog.json build-asan/meson-logs/testlog-unit.json 2>/dev/null
    env "${asan_env[@]}" ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:abort_on_error=1 \
      meson test -C build-asan --suite cli --suite convert --suite tok --suite mpi --suite ops --no-suite lmeval \
        --print-errorlogs --num-processes 2 -t 4 || true
  else
    echo "sanitizer build failed:"; tail -30 build-asan.setup.log build-asan.log 2>/dev/null
  fi
  asan_logs=(build-asan/meson-logs/testlog-unit.json build-asan/meson-logs/testlog.json)
  # The same without MPI (HDF5 on), where nothing keeps allocations to the
  # end: the cli, convert and tok suites with leak checks, so a tool's error
  # paths and every grok1-run that starts no MPI are leak-checked. About 1.5
  # minutes here.
  rm -f build-asan-nompi/meson-logs/testlog.json
  if { [ -f build-asan-nompi/build.ninja ] ||
       meson setup build-asan-nompi -Dwerror=true -Dmpi=disabled -Dcuda=disabled \
         -Db_sanitize=address,undefined >build-asan-nompi.setup.log 2>&1; } &&
     ninja -C build-asan-nompi >build-asan-nompi.log 2>&1; then
    env "${asan_env[@]}" ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:abort_on_error=1 \
      meson test -C build-asan-nompi --suite cli --suite convert --suite tok --no-suite lmeval \
        --print-errorlogs --num-processes 2 -t 4 || true
  else
    echo "sanitizer build without MPI failed:"; tail -30 build-asan-nompi.setup.log build-asan-nompi.log 2>/dev/null
  fi
  asan_logs+=(build-asan-nompi/meson-logs/testlog.json)
fi

# ThreadSanitizer (clang, no CUDA): the unit, convert and tok suites, and
# the tests that run the logits dump's writer thread, the checksum threads
# and --threads. OpenMP regions are seen through libomp's archer tool
# (libomp-dev); without it libomp's own locks give false reports, so the
# part is skipped. A report fails its test (exit 66). About 2.5 minutes
# here. G1_TSAN=0 skips it.
if [ "${G1_TSAN:-1}" != 0 ] && command -v clang >/dev/null; then
  archer=/usr/lib/llvm-$(clang -dumpversion | cut -d. -f1)/lib/libarcher.so
  rm -f build-tsan/meson-logs/testlog*.json
  if [ ! -f "$archer" ]; then
    echo "tsan: $archer not found (libomp-dev), the ThreadSanitizer build is skipped"
  elif { [ -f build-tsan/build.ninja ] ||
         CC=clang meson setup build-tsan -Dwerror=true -Dcuda=disabled -Db_sanitize=thread -Db_lundef=false \
           >build-tsan.setup.log 2>&1; } &&
       ninja -C build-tsan >build-tsan.log 2>&1; then
    tsan_env=(G1_SANITIZED=1 OMP_TOOL_LIBRARIES="$archer"
              TSAN_OPTIONS="ignore_noninstrumented_modules=1 halt_on_error=1 exitcode=66")
    env "${tsan_env[@]}" meson test -C build-tsan --suite unit --suite convert --suite tok \
      --print-errorlogs --num-processes 2 -t 4 || true
    mv build-tsan/meson-logs/testlog.json build-tsan/meson-logs/testlog-unit.json 2>/dev/null
    env "${tsan_env[@]}" meson test -C build-tsan ckpt_files ckpt_checksum ckpt_outputs cli_dump_logits \
      cli_dump_replaced cli_dump_foreign cli_dump_resume_elsewhere cli_merge_dump_elsewhere cli_threads \
      ops_dump_resume ops_dump_sigkill ops_disk_full --print-errorlogs --num-processes 2 -t 4 || true
    asan_logs+=(build-tsan/meson-logs/testlog-unit.json build-tsan/meson-logs/testlog.json)
  else
    echo "tsan build failed:"; tail -30 build-tsan.setup.log build-tsan.log 2>/dev/null
    asan_logs+=(build-tsan/meson-logs/testlog.json)  # counted as a failed configuration
  fi
fi

# Count results of the configurations from meson's JSON test logs, plus
# the fuzz runs and cppcheck.
G1_CLANG_BUILD=$clang_build G1_ASAN_LOGS="${asan_logs[*]}" /usr/bin/python3 - "$status" <<'PY'
import json, os, sys
counts = {"passed": 0, "failed": 0, "skipped": 0}
logs = [os.path.join(d, "meson-logs", "testlog.json") for d in
        ("build-test", "build-test-minimal") + (("build-clang",) if os.environ.get("G1_CLANG_BUILD") == "1" else ())]
logs += os.environ.get("G1_ASAN_LOGS", "").split()
for path in logs:
    if not os.path.exists(path):
        counts["failed"] += 1  # the configuration did not build
        print(f"{path}: no test log (build failed)")
        continue
    for line in open(path):
        r = json.loads(line)["result"]
        if r in ("OK", "EXPECTEDFAIL"):
            counts["passed"] += 1
        elif r == "SKIP":
            counts["skipped"] += 1
        else:
            counts["failed"] += 1
for line in [l for f in ("build-fuzz-results.txt", "build-extra-results.txt") if os.path.exists(f) for l in open(f)]:
    r = line.split()[-1]
    counts["passed" if r == "PASS" else "skipped" if r == "SKIP" else "failed"] += 1
if sys.argv[1] != "0" and counts["failed"] == 0:
    counts["failed"] += 1
print(f'{counts["passed"]} passed, {counts["failed"]} failed, {counts["skipped"]} skipped')
sys.exit(1 if counts["failed"] else 0)
PY
