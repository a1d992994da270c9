#!/usr/bin/env python3
"""What nvcc gives each kernel, held against how the kernels are launched.

A kernel whose registers times its block size exceed the register file
fails at launch on a GPU ("too many resources requested for launch"), and
one that spills to local memory is slow; neither shows on the emulation.
This compiles src/cuda/*.cu again with the build's own nvcc command (from
compile_commands.json) plus -Xptxas=-v, reads the registers, shared memory
and spills ptxas reports for every kernel and target, and runs emulated
test programs with G1EMU_LAUNCH_LOG to learn the block sizes each kernel is
launched with. It fails when a kernel spills, when its registers or shared
memory do not fit its largest block, or when no test launches it.
Limits are those of compute capability 7.0 to 9.0 (65536 registers per
block and per multiprocessor, 255 per thread, 48 KiB of static shared
memory). No GPU needed.
"""
import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile

REGS_PER_BLOCK = 65536
REG_ALLOC_UNIT = 256  # registers are given to a warp in units of 256
MAX_REGS_PER_THREAD = 255
STATIC_SMEM = 48 * 1024


def compile_reports(build):
    """{(kernel, arch): {"regs", "smem", "spill_st", "spill_ld"}} from ptxas -v."""
    with open(os.path.join(build, "compile_commands.json")) as f:
        cmds = [c for c in json.load(f) if re.search(r"src/cuda/[^/]+\.cu$", c["file"])]
    if not cmds:
        raise SystemExit("no src/cuda/*.cu in compile_commands.json: is this a build with -Dcuda=enabled?")
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for c in cmds:
            argv = shlex.split(c["command"])
            i = argv.index("-o")
            argv[i + 1] = os.path.join(tmp, "k.o")
            argv.append("-Xptxas=-v")
            p = subprocess.run(argv, cwd=c["directory"], capture_output=True, text=True)
            if p.returncode:
                raise SystemExit(f"nvcc failed on {c['file']}:\n{p.stderr[-3000:]}")
            cur = None
            for line in p.stderr.splitlines():
                m = re.search(r"Compiling entry function '(\S+)' for '(\w+)'", line)
                if m:
                    cur = (m.group(1), m.group(2))
                    out[cur] = {"regs": 0, "smem": 0, "spill_st": 0, "spill_ld": 0}
                    continue
                m = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", line)
                if m and cur:
                    out[cur]["spill_st"], out[cur]["spill_ld"] = int(m.group(1)), int(m.group(2))
                m = re.search(r"Used (\d+) registers", line)
                if m and cur:
                    out[cur]["regs"] = int(m.group(1))
                    s = re.search(r"(\d+) bytes smem", line)
                    out[cur]["smem"] = int(s.group(1)) if s else 0
    names = sorted({k for k, _ in out})
    p = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True, check=True)
    plain = {}
    for mangled, demangled in zip(names, p.stdout.splitlines()):
        d = demangled.strip().replace("(anonymous namespace)::", "")
        d = d[len("void "):] if d.startswith("void ") else d
        plain[mangled] = d.split("(")[0]
    return {(plain[k], a): v for (k, a), v in out.items()}


def launches(programs):
    """{kernel: largest block size} launched by the emulated programs."""
    with tempfile.TemporaryDirectory() as tmp:
        log = os.path.join(tmp, "launches")
        env = dict(os.environ, G1EMU_LAUNCH_LOG=log, G1EMU_SMS="4")
        for prog in programs:
            argv = shlex.split(prog)
            p = subprocess.run(argv, env=env, capture_output=True, text=True)
            if p.returncode:
                raise SystemExit(f"{prog} failed (exit {p.returncode}):\n{p.stderr[-2000:]}")
        most = {}
        for line in open(log):
            name, threads = line.rsplit(" ", 1)
            if name.startswith("(") and name.endswith(")"):  # G1_LAUNCH((kernel<a, b>), ...)
                name = name[1:-1]
            most[name] = max(most.get(name, 0), int(threads))
        return most


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", required=True, help="the meson build directory")
    ap.add_argument("--emulated", action="append", required=True,
                    help="an emulated program (with its arguments) that launches kernels; repeatable")
    args = ap.parse_args()
    res = compile_reports(args.build)
    most = launches(args.emulated)
    bad = []
    print(f"{'kernel':32} {'arch':8} {'block':>5} {'regs':>4} {'smem':>6} {'spills':>7} {'blocks/SM by regs':>17}")
    for (name, arch), r in sorted(res.items()):
        threads = most.get(name)
        per_warp = -(-r["regs"] * 32 // REG_ALLOC_UNIT) * REG_ALLOC_UNIT
        fit = "-"
        if threads:
            need = -(-threads // 32) * per_warp
            fit = str(REGS_PER_BLOCK // need) if need else "any"
            if need > REGS_PER_BLOCK:
                bad.append(f"{name} ({arch}): {r['regs']} registers x {threads} threads need {need} of "
                           f"{REGS_PER_BLOCK}: the launch fails on a GPU")
        else:
            bad.append(f"{name} ({arch}): no emulated test launches it, so its block size is unchecked")
        if r["regs"] > MAX_REGS_PER_THREAD:
            bad.append(f"{name} ({arch}): {r['regs']} registers per thread")
        if r["spill_st"] or r["spill_ld"]:
            bad.append(f"{name} ({arch}): spills {r['spill_st']} bytes to local memory (loads {r['spill_ld']})")
        if r["smem"] > STATIC_SMEM:
            bad.append(f"{name} ({arch}): {r['smem']} bytes of static shared memory")
        spills = f"{r['spill_st']}/{r['spill_ld']}"
        print(f"{name:32} {arch:8} {threads or '-':>5} {r['regs']:>4} {r['smem']:>6} {spills:>7} {fit:>17}")
    unknown = sorted(set(most) - {n for n, _ in res})
    for n in unknown:
        bad.append(f"{n}: launched, but ptxas reported no kernel of that name")
    for b in bad:
        print("FAIL:", b)
    print(f"{len(res)} kernel builds checked: {'all fit' if not bad else f'{len(bad)} problem(s)'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
