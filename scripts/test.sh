#!/usr/bin/env bash
# The whole test suite: installs what is missing, builds two configurations
# (everything found, warnings as errors; and MPI/HDF5/CUDA all disabled, which
# must still build the engine and pass its tests), runs every meson test, and
# ends with one line "N passed, N failed, N skipped".
set -uo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh || exit 1

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
run_config build-test-minimal -Dmpi=disabled -Dhdf5=disabled -Dcuda=disabled || status=1

# Count results of both configurations from meson's JSON test logs.
/usr/bin/python3 - "$status" <<'PY'
import json, os, sys
counts = {"passed": 0, "failed": 0, "skipped": 0}
for d in ("build-test", "build-test-minimal"):
    path = os.path.join(d, "meson-logs", "testlog.json")
    if not os.path.exists(path):
        counts["failed"] += 1  # the configuration did not build
        print(f"{d}: no test log (build failed)")
        continue
    for line in open(path):
        r = json.loads(line)["result"]
        if r in ("OK", "EXPECTEDFAIL"):
            counts["passed"] += 1
        elif r == "SKIP":
            counts["skipped"] += 1
        else:
            counts["failed"] += 1
if sys.argv[1] != "0" and counts["failed"] == 0:
    counts["failed"] += 1
print(f'{counts["passed"]} passed, {counts["failed"]} failed, {counts["skipped"]} skipped')
sys.exit(1 if counts["failed"] else 0)
PY
