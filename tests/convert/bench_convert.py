#!/usr/bin/python3
"""Benchmark: grok1-convert throughput against reading the same files with
`cat > /dev/null`, side by side (a meson benchmark, never a test).

Makes a release-like fixture of about --size-mb (expert matrices of 1 MB, as
the memory test), warms the page cache with one cat, then times cat and the
conversion (best of --repeat each) and prints both with the ratio. The goal
(issue 5) is a conversion within 1.5x of the read alone.

usage: bench_convert.py --convert grok1-convert --tmp DIR [--size-mb N] [--repeat R]
"""
import argparse
import glob
import json
import os
import platform
import subprocess
import sys
import time

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_release as mr  # noqa: E402
from test_convert import BIG  # noqa: E402


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def timed(cmd, **kw):
    t = time.perf_counter()
    subprocess.run(cmd, check=True, **kw)
    return time.perf_counter() - t


def timed_copy(files, out):
    """cat FILES > OUT, then fsync OUT: the floor for anything that writes."""
    t = time.perf_counter()
    with open(out, "wb") as o:
        subprocess.run(["cat"] + files, stdout=o, check=True)
        os.fsync(o.fileno())
    t = time.perf_counter() - t
    os.remove(out)
    return t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--convert", required=True)
    ap.add_argument("--tmp", required=True)
    ap.add_argument("--size-mb", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", action="store_true", help="keep the fixture for the next run")
    a = ap.parse_args()
    per_layer_mb = 3 * BIG["num_experts"] * BIG["emb_size"] * BIG["ffn_size"] / 1e6
    ov = dict(BIG, num_layers=max(11, int(a.size_mb / per_layer_mb)))
    d = os.path.join(os.path.abspath(a.tmp), "bench_fixture_%d" % ov["num_layers"])
    cfg = d + ".json"
    with open(cfg, "w") as f:
        json.dump(ov, f)
    if not os.path.exists(os.path.join(d, "done")):
        subprocess.run([sys.executable, os.path.join(HERE, "make_release.py"), "--config", cfg, "--seed", "7",
                        "--out", d], check=True)
        open(os.path.join(d, "done"), "w").close()
    files = sorted(glob.glob(os.path.join(d, "tensor*_000")))
    total = sum(os.path.getsize(f) for f in files)
    out = os.path.join(os.path.abspath(a.tmp), "bench_out.h5")
    cat = ["cat"] + files
    with open(os.devnull, "wb") as null:
        timed(cat, stdout=null)  # warm the cache: both runs read from memory
        t_cat, t_copy, t_conv = [], [], []
        for _ in range(a.repeat):  # interleaved: the disk's speed drifts
            t_cat.append(timed(cat, stdout=null))
            t_copy.append(timed_copy(files, out + ".copy"))
            t_conv.append(timed([a.convert, "--config", cfg, d, out], stdout=null, stderr=null))
            os.remove(out)
        t_cat, t_copy = min(t_cat), min(t_copy)
        t_ver = timed([a.convert, "--config", cfg, "--verify", d, out], stdout=null, stderr=null)
        os.remove(out)
    t_conv = min(t_conv)
    mb = total / 1e6
    print("grok1-convert benchmark, %s" % time.strftime("%Y-%m-%d"))
    print("machine: %s, %d cores, %s" % (cpu_model(), os.cpu_count(), platform.platform()))
    print("fixture: %d files, %.0f MB (%d layers, experts of %.1f MB), page cache warm; best of %d"
          % (len(files), mb, ov["num_layers"], BIG["emb_size"] * BIG["ffn_size"] / 1e6, a.repeat))
    print("  %-34s %8s %10s" % ("", "seconds", "MB/s"))
    print("  %-34s %8.2f %10.0f" % ("cat FILES > /dev/null", t_cat, mb / t_cat))
    print("  %-34s %8.2f %10.0f" % ("cat FILES > OUT; fsync OUT", t_copy, mb / t_copy))
    print("  %-34s %8.2f %10.0f" % ("grok1-convert (write + fsync)", t_conv, mb / t_conv))
    print("  %-34s %8.2f %10.0f" % ("grok1-convert --verify", t_ver, mb / t_ver))
    print("ratio convert / cat to /dev/null: %.2fx (goal: within 1.5x)" % (t_conv / t_cat))
    print("ratio convert / copy with fsync:  %.2fx" % (t_conv / t_copy))
    if not a.keep:
        for f in glob.glob(os.path.join(d, "*")):
            os.remove(f)
        os.rmdir(d)
    return 0


if __name__ == "__main__":
    sys.exit(main())
