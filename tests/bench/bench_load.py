#!/usr/bin/env python3
"""How fast grok1-run loads a checkpoint (CPU backend, one process),
against what a one-thread loader must do, measured in the same run: read
the file (through one reused buffer: the page cache's copy alone) and
write every page of the memory it holds once (the first touch of fresh
memory, which the kernel fills with a page fault per 4 KiB page; grok1-run
touches its pages with all its threads before reading). Also shown: reading the
file into fresh memory of its size. The page cache is warm (the file is
read once first), so the figures are the loader's own cost; on a cluster a
cold parallel file system usually sets the pace instead, and grok1-plan's
bytes per rank say how much each rank reads.

usage: bench_load.py --run grok1-run --mkckpt grok1-mkckpt --tmp DIR [--config small] [--reps 3]
"""
import argparse
import ctypes
import json
import os
import re
import subprocess
import sys
import time


def read_file(path, fresh):
    """Seconds to read the whole file 4 MiB at a time: into one new buffer
    of its size (fresh), else through one reused 4 MiB buffer."""
    n = os.path.getsize(path)
    t0 = time.perf_counter()
    buf = bytearray(n if fresh else 4 << 20)  # calloc: pages first touched by the read
    view, off = memoryview(buf), 0
    with open(path, "rb", buffering=0) as f:
        while off < n:
            got = f.readinto(view[off:off + (4 << 20)] if fresh else view[:min(4 << 20, n - off)])
            if not got:
                sys.exit(f"bench_load: short read of {path}")
            off += got
    t = time.perf_counter() - t0
    del view, buf
    return t


THREADS = 1


def touch_fresh(n):
    """Seconds to allocate n bytes and write every page once (memset)."""
    t0 = time.perf_counter()
    buf = bytearray(n)  # calloc: no page touched yet
    ctypes.memset((ctypes.c_char * n).from_buffer(buf), 1, n)
    t = time.perf_counter() - t0
    del buf
    return t


def load(run, ckpt, tmp):
    """grok1-run's own load figures (--verbose): bytes read, MB held, seconds."""
    inp, out = os.path.join(tmp, "load-req.jsonl"), os.path.join(tmp, "load-out.jsonl")
    with open(inp, "w") as f:
        f.write(json.dumps({"id": 0, "prompt_ids": [1, 2, 3]}) + "\n")
    if os.path.exists(out):
        os.remove(out)
    p = subprocess.run([run, "--mode", "score", "--checkpoint", ckpt, "--input", inp, "--output", out, "--verbose",
                        "--threads", str(THREADS)], capture_output=True, text=True)
    m = re.search(r"(\d+) bytes read, ([\d.]+) MB of weights held.*, ([\d.]+) s$", p.stderr, re.M)
    if p.returncode != 0 or not m:
        sys.exit(f"bench_load: grok1-run failed (exit {p.returncode}):\n{p.stderr[-2000:]}")
    return int(m.group(1)), float(m.group(2)), float(m.group(3))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True)
    ap.add_argument("--mkckpt", required=True)
    ap.add_argument("--tmp", required=True)
    ap.add_argument("--config", default="small")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                    help="grok1-run --threads (default: every core): it faults its pages in with them")
    a = ap.parse_args()
    global THREADS
    THREADS = a.threads
    os.makedirs(a.tmp, exist_ok=True)
    ckpt = os.path.join(a.tmp, f"load-{a.config}.h5")
    if os.path.exists(ckpt):
        os.remove(ckpt)  # made afresh: grok1-mkckpt may have changed
    subprocess.run([a.mkckpt, "--config", a.config, "--seed", "1", "--out", ckpt], check=True, capture_output=True)
    try:
        return measure(a, ckpt)
    finally:
        os.remove(ckpt)


def measure(a, ckpt):
    size = os.path.getsize(ckpt)
    read_file(ckpt, False)  # warm the page cache
    held = load(a.run, ckpt, a.tmp)[1] * 1e6
    runs = {"buffered read": [], "touch": [], "fresh read": [], "load": []}
    for _ in range(a.reps):  # interleaved: the VM's speed drifts
        runs["buffered read"].append(read_file(ckpt, False))
        runs["touch"].append(touch_fresh(int(held)))
        runs["fresh read"].append(read_file(ckpt, True))
        nbytes, _, t = load(a.run, ckpt, a.tmp)
        runs["load"].append(t)
    b = {k: min(v) for k, v in runs.items()}
    floor = b["buffered read"] + b["touch"]
    print(f"bench_load: {a.config} checkpoint, {size / 1e6:.1f} MB on disk, page cache warm, best of {a.reps}; "
          f"grok1-run with {THREADS} thread(s)")
    print(f"{'':46s}{'seconds':>9s}{'GB/s':>9s}")
    for label, t, n in (("read the file through one 4 MiB buffer", b["buffered read"], size),
                        (f"write {held / 1e6:.1f} MB of fresh memory once", b["touch"], held),
                        ("  the two, one thread", floor, nbytes),
                        ("read the file into fresh memory of its size", b["fresh read"], size),
                        ("grok1-run load (--verbose)", b["load"], nbytes)):
        print(f"{label:46s}{t:9.2f}{n / t / 1e9:9.2f}")
    print(f"grok1-run read {nbytes / 1e6:.1f} MB and holds {held / 1e6:.1f} MB; "
          f"ratio load / (buffered read + touch, one thread): {b['load'] / floor:.2f}x")
    print("all runs (s): " + "; ".join(f"{k} " + ", ".join(f"{t:.2f}" for t in v) for k, v in runs.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
