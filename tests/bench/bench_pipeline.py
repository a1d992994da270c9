#!/usr/bin/env python3
"""Pipeline benchmark (CPU): grok1-run as P = 1, 2, 4 stages (E = 1) on the
tiny and small synthetic models, generate mode, tokens/s and the busy
fraction of each stage from grok1-run's summary line, against the ideal
pipeline fill M / (M + P - 1). A benchmark (meson benchmark()), never a test.

usage: bench_pipeline.py --run build/mpi/grok1-run [--requests N] [--models tiny,small]"""
import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from g1testlib import mpi_env  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True)
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--models", default="tiny,small")
    ap.add_argument("--stages", default="1,2,4")
    a = ap.parse_args()
    mpirun = shutil.which("mpirun")
    cores = os.cpu_count() or 1
    env = mpi_env(threads=None)  # set for each layout below
    tmp = tempfile.mkdtemp()
    print(f"machine: {cores} cores; ranks beyond that are oversubscribed (timings then show contention)")
    print(f"{'model':6} {'P':>2} {'M':>2} {'B':>2} {'tokens/s':>10} {'ideal fill':>10}  stage busy")
    for model in a.models.split(","):
        vocab = 512 if model == "tiny" else 131072
        rnd = random.Random(1)
        inp = os.path.join(tmp, f"{model}.jsonl")
        with open(inp, "w") as f:
            for i in range(a.requests):
                f.write(json.dumps({"id": i, "prompt_ids": [rnd.randrange(1, vocab) for _ in range(rnd.randint(8, 32))],
                                    "max_new_tokens": 16}) + "\n")
        for P in [int(x) for x in a.stages.split(",")]:
            M, B = 2 * P, 4
            env["OMP_NUM_THREADS"] = str(max(1, cores // P))
            cmd = ([mpirun, "-n", str(P)] if P > 1 else []) + [
                a.run, "--synthetic", model, "--synthetic-seed", "1", "--mode", "generate", "--input", inp, "--output",
                os.path.join(tmp, "out.jsonl"), "--stages", str(P), "--micro-batches", str(M), "--batch-size", str(B)]
            p = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if p.returncode:
                print(p.stderr[-2000:])
                return 1
            line = [l for l in p.stderr.splitlines() if "tokens/s" in l][-1]
            tps = float(re.search(r"([0-9.]+) tokens/s", line).group(1))
            busy = re.search(r"stage busy (.*)$", line)
            print(f"{model:6} {P:>2} {M:>2} {B:>2} {tps:>10.1f} {M / (M + P - 1):>10.2f}  "
                  f"{busy.group(1) if busy else '(one process)'}")
    shutil.rmtree(tmp)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
