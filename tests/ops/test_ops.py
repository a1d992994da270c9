#!/usr/bin/env python3
"""Operations tests (suite 'ops'): a job never loses finished work and never
hangs. A killed worker ends the job within 30 s; SIGTERM / SIGUSR1 stop it
cleanly (exit 3 for grok1-run); every line already written is a correct
result; --resume completes the file to exactly the uninterrupted run's
content; a torn last line is redone; other settings are refused on resume;
an injected error names the rank and host; the trace is valid JSON with
spans from every rank.

usage: test_ops.py CASE --run grok1-run --mkckpt grok1-mkckpt --tmp DIR
exit 0 pass, 1 fail, 77 skip."""
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from g1testlib import Checks, script_cases, mpi_env, mpirun  # noqa: E402

ARGS = None
# requests in the generate input: enough that a job signalled after its first
# ~15 results (or its worker killed at step 300) is far from done, few enough
# that the reference and each resume stay short under the sanitizers
N_REQ = 600
REF_DONE = []
ENV = mpi_env()
check = Checks(quiet=True)


def setup():
    ckpt = os.path.join(ARGS.tmp, "ops5.h5")
    # made again when older than grok1-mkckpt: the folder outlives builds
    if not os.path.exists(ckpt) or os.path.getmtime(ckpt) < os.path.getmtime(ARGS.mkckpt):
        subprocess.run([ARGS.mkckpt, "--config", "tiny", "--set", "num_layers=5", "--seed", "11", "--out", ckpt],
                       check=True, capture_output=True)
    inp = os.path.join(ARGS.tmp, "ops.jsonl")
    rnd = random.Random(3)
    with open(inp, "w") as f:
        for i in range(N_REQ):
            f.write(json.dumps({"id": i, "prompt_ids": [rnd.randrange(1, 512) for _ in range(rnd.randint(3, 60))],
                                "max_new_tokens": rnd.randint(5, 60)}) + "\n")
    return ckpt, inp


def base_args(ckpt, inp, out):
    return ["--checkpoint", ckpt, "--mode", "generate", "--input", inp, "--output", out, "--batch-size", "2",
            "--progress", "off"]


def reference(ckpt, inp):
    """The uninterrupted run's output (one process)."""
    out = os.path.join(ARGS.tmp, "full.jsonl")
    if not REF_DONE:  # once per test process: a stale file could carry an old sidecar
        REF_DONE.append(1)
        subprocess.run([ARGS.run] + base_args(ckpt, inp, out), check=True, capture_output=True, env=ENV)
    return open(out).read()


def job(ckpt, inp, out, extra=(), env=None):
    cmd = [mpirun(), "-n", "4", ARGS.run] + base_args(ckpt, inp, out) + ["--stages", "2", "--ep", "2"] + list(extra)
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env or ENV)


def prefix_ok(partial, full):
    lines = open(partial).read().splitlines(keepends=True)
    want = full.splitlines(keepends=True)
    good = lines == want[:len(lines)]
    return good, len(lines)


def resume_to_end(ckpt, inp, out, full):
    p = job(ckpt, inp, out, ["--resume"])
    _, err = p.communicate(timeout=300)
    check(p.returncode == 0, f"--resume exited {p.returncode}: {err[-800:]}")
    check(os.path.exists(out) and open(out).read() == full, "--resume did not complete the file to the "
                                                               "uninterrupted run's content")
    check(not os.path.exists(out + ".partial"), "the .partial file is left after a complete resume")


def interrupt(sig, want_rc, name):
    ckpt, inp = setup()
    full = reference(ckpt, inp)
    out = os.path.join(ARGS.tmp, f"{name}.jsonl")
    for p in (out, out + ".partial", out + ".meta.json"):
        if os.path.exists(p):
            os.remove(p)
    p = job(ckpt, inp, out)
    # wait until some results are written, then signal mpirun
    t_end = time.time() + 60
    while time.time() < t_end and (not os.path.exists(out + ".partial") or os.path.getsize(out + ".partial") < 2000):
        time.sleep(0.05)
    t0 = time.time()
    p.send_signal(sig)
    try:
        _, err = p.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()
        check(False, f"{name}: the job did not end within 30 s of the signal")
        return
    dt = time.time() - t0
    print(f"{name}: mpirun exit {p.returncode} {dt:.1f} s after the signal")
    check(want_rc is None and p.returncode != 0 or p.returncode == want_rc,
          f"{name}: exit status {p.returncode}, expected {want_rc if want_rc is not None else 'non-zero'}")
    check(not os.path.exists(out), f"{name}: the final output exists after an interrupted run")
    good, n = prefix_ok(out + ".partial", full)
    print(f"{name}: {n} results written before the stop, all correct: {good}")
    check(good, f"{name}: a written line differs from the uninterrupted run")
    check(n < N_REQ, f"{name}: the run finished before the signal (make the input longer)")
    if sig in (signal.SIGUSR1, signal.SIGTERM):
        check("interrupted by signal" in err, f"{name}: no 'interrupted' message: {err[-500:]}")
    resume_to_end(ckpt, inp, out, full)


def case_kill_worker():
    """kill -9 of a worker rank (GROK1_FAULT=3:N:kill) mid-run."""
    ckpt, inp = setup()
    full = reference(ckpt, inp)
    out = os.path.join(ARGS.tmp, "killed.jsonl")
    for p in (out, out + ".partial", out + ".meta.json"):
        if os.path.exists(p):
            os.remove(p)
    t0 = time.time()
    p = job(ckpt, inp, out, env=dict(ENV, GROK1_FAULT="3:300:kill"))
    try:
        _, err = p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        p.kill()
        check(False, "the job hung after a rank was killed")
        return
    print(f"killed rank 3: mpirun exit {p.returncode} after {time.time() - t0:.1f} s")
    check(p.returncode != 0, "the job exited 0 after a rank was killed")
    good, n = prefix_ok(out + ".partial", full)
    print(f"{n} results written before the kill, all correct: {good}")
    check(good and n < N_REQ, "written lines are not a correct prefix")
    resume_to_end(ckpt, inp, out, full)


def case_sigterm():
    interrupt(signal.SIGTERM, None, "sigterm")


def case_sigusr1():
    interrupt(signal.SIGUSR1, 3, "sigusr1")


def case_torn_line():
    """A torn last line (cut mid-write) is dropped and redone on resume."""
    ckpt, inp = setup()
    full = reference(ckpt, inp)
    out = os.path.join(ARGS.tmp, "torn.jsonl")
    lines = full.splitlines(keepends=True)
    with open(out + ".partial", "w") as f:
        f.write("".join(lines[:100]) + lines[100][: len(lines[100]) // 2])
    shutil.copy(os.path.join(ARGS.tmp, "full.jsonl.meta.json"), out + ".meta.json")
    resume_to_end(ckpt, inp, out, full)


def case_resume_refusals():
    ckpt, inp = setup()
    full = reference(ckpt, inp)
    out = os.path.join(ARGS.tmp, "refuse.jsonl")
    lines = full.splitlines(keepends=True)
    meta = os.path.join(ARGS.tmp, "full.jsonl.meta.json")
    for extra, words in [(["--max-new-tokens", "7"], "max_new_tokens"),
                         (["--synthetic", "tiny"], None)]:
        with open(out + ".partial", "w") as f:
            f.write("".join(lines[:10]))
        shutil.copy(meta, out + ".meta.json")
        args = base_args(ckpt, inp, out) + ["--resume"] + extra
        if extra[0] == "--synthetic":
            args = [a for a in args]
            i = args.index("--checkpoint")
            del args[i:i + 2]
        p = subprocess.run([ARGS.run] + args, capture_output=True, text=True, env=ENV)
        print(f"resume with {extra}: exit {p.returncode}: {p.stderr.strip().splitlines()[-1] if p.stderr else ''}")
        check(p.returncode != 0 and "cannot resume" in p.stderr, f"resume with {extra} was not refused")
        if words:
            check(words in p.stderr, f"the refusal does not name {words}")
        check(open(out + ".partial").read() == "".join(lines[:10]), "a refused resume changed the partial file")
    # another model of the same shape (same file size: the record of the
    # checkpoint is its contents' fingerprint); its parts joined by
    # grok1-link are the same model; an output recorded with the size only
    # (before the fingerprint) resumes as it did
    seed12 = os.path.join(ARGS.tmp, "ops5_seed12.h5")
    subprocess.run([ARGS.mkckpt, "--config", "tiny", "--set", "num_layers=5", "--seed", "12", "--out", seed12],
                   check=True, capture_output=True)
    check(os.path.getsize(seed12) == os.path.getsize(ckpt), "the two seeds' files differ in size")

    def resume_partial(ck, meta_src=meta):
        with open(out + ".partial", "w") as f:
            f.write("".join(lines[:10]))
        shutil.copy(meta_src, out + ".meta.json")
        return subprocess.run([ARGS.run] + base_args(ck, inp, out) + ["--resume"], capture_output=True, text=True,
                              env=ENV)
    p = resume_partial(seed12)
    print(f"resume with another model of the same size: exit {p.returncode}: {p.stderr.strip()[-200:]}")
    check(p.returncode != 0 and "checkpoint_fnv1a64" in p.stderr,
          "resuming with another model of the same shape and size was not refused")
    if ARGS.link:
        parts = [os.path.join(ARGS.tmp, f"ops5_p{i}.h5") for i in range(2)]
        for part, rng in zip(parts, ("0-2", "3-4")):
            subprocess.run([ARGS.mkckpt, "--config", "tiny", "--set", "num_layers=5", "--seed", "11", "--part", rng,
                            "--out", part], check=True, capture_output=True)
        linked = os.path.join(ARGS.tmp, "ops5_linked.h5")
        subprocess.run([ARGS.link, "--force", linked] + parts, check=True, capture_output=True)
        p = resume_partial(linked)
        check(p.returncode == 0 and open(out).read() == full,
              f"resuming on the same model's parts (grok1-link): {p.stderr.strip()[-300:]}")
        os.remove(out)
    legacy = os.path.join(ARGS.tmp, "legacy.meta.json")
    rec = json.load(open(meta))
    rec["source"] = {"checkpoint_bytes": os.path.getsize(ckpt)}
    with open(legacy, "w") as f:
        json.dump(rec, f)
    p = resume_partial(ckpt, legacy)
    check(p.returncode == 0 and open(out).read() == full and
          json.load(open(out + ".meta.json"))["source"] == rec["source"],
          f"an output recorded with the checkpoint's size resumes, and keeps its record: {p.stderr.strip()[-300:]}")
    os.remove(out)
    rec["source"] = {"checkpoint_bytes": os.path.getsize(ckpt) + 1}
    with open(legacy, "w") as f:
        json.dump(rec, f)
    p = resume_partial(ckpt, legacy)
    check(p.returncode != 0 and "checkpoint_bytes" in p.stderr, "a size record of another file did not refuse")
    with open(out + ".partial", "w") as f:  # as the cases below expect
        f.write("".join(lines[:10]))
    shutil.copy(meta, out + ".meta.json")
    # the output of another input
    other = os.path.join(ARGS.tmp, "other.jsonl")
    with open(other, "w") as f:
        f.write("\n".join(json.dumps({"id": f"x{i}", "prompt_ids": [1, 2, 3]}) for i in range(20)) + "\n")
    p = subprocess.run([ARGS.run] + base_args(ckpt, other, out) + ["--resume"], capture_output=True, text=True,
                       env=ENV)
    check(p.returncode != 0 and "another input" in p.stderr, f"resuming another input's output: {p.stderr[-300:]}")
    # the same ids, one prompt changed: the ids alone cannot tell, the input's
    # record in the sidecar does
    rows = [json.loads(l) for l in open(inp)]
    edited = os.path.join(ARGS.tmp, "edited.jsonl")
    rows_e = [dict(r) for r in rows]
    rows_e[3]["prompt_ids"] = list(reversed(rows_e[3]["prompt_ids"])) + [7]
    with open(edited, "w") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows_e))
    with open(out + ".partial", "w") as f:
        f.write("".join(lines[:10]))
    shutil.copy(meta, out + ".meta.json")
    p = subprocess.run([ARGS.run] + base_args(ckpt, edited, out) + ["--resume"], capture_output=True, text=True,
                       env=ENV)
    print(f"resume with request 3 edited (same ids): exit {p.returncode}: "
          f"{p.stderr.strip().splitlines()[-1] if p.stderr else ''}")
    check(p.returncode != 0 and "first" in p.stderr and "another input" in p.stderr,
          "resuming with an edited request (same ids) was not refused")
    check(open(out + ".partial").read() == "".join(lines[:10]), "a refused resume changed the partial file")
    # requests appended to a finished output's input: resumed, only the new
    # ones run, and they come out as they do on their own (results never
    # depend on the batch on the cpu backend)
    longer, alone = os.path.join(ARGS.tmp, "longer.jsonl"), os.path.join(ARGS.tmp, "appended.jsonl")
    extra_rows = "".join(json.dumps({"id": f"more{i}", "prompt_ids": [5 + i, 6, 7], "max_new_tokens": 3}) + "\n"
                         for i in range(4))
    with open(longer, "w") as f:
        f.write(open(inp).read() + extra_rows)
    with open(alone, "w") as f:
        f.write(extra_rows)
    fresh = os.path.join(ARGS.tmp, "appended_out.jsonl")
    subprocess.run([ARGS.run] + base_args(ckpt, alone, fresh), capture_output=True, text=True, env=ENV, check=True)
    os.remove(out + ".partial")
    with open(out, "w") as f:
        f.write(full)
    shutil.copy(meta, out + ".meta.json")
    p = subprocess.run([ARGS.run] + base_args(ckpt, longer, out) + ["--resume"], capture_output=True, text=True,
                       env=ENV)
    check(p.returncode == 0, f"resume after appending requests failed: {p.stderr[-300:]}")
    check(os.path.exists(out) and open(out).read() == full + open(fresh).read(),
          "resume after appending requests is not the old output followed by the new requests' results")
    # and the sidecar now records the longer input: resuming the finished
    # output with the original (shorter) input is refused
    p = subprocess.run([ARGS.run] + base_args(ckpt, inp, out) + ["--resume"], capture_output=True, text=True,
                       env=ENV)
    check(p.returncode != 0 and "fewer than" in p.stderr, f"resume with a shorter input: {p.stderr[-300:]}")


def case_dump_resume():
    """A score run with --dump-logits that fails part-way leaves OUT.partial
    and DUMP.partial; --resume completes both to what one uninterrupted run
    writes (results and every logits array, bitwise)."""
    import h5py
    import numpy as np
    ckpt, _ = setup()
    inp = os.path.join(ARGS.tmp, "dump_in.jsonl")
    rnd = random.Random(5)
    with open(inp, "w") as f:
        for i in range(300):
            if i % 37 == 5:  # blank lines: not requests, but they count in the dump's line numbers
                f.write("\n" if i % 2 else " \t\n")
            f.write(json.dumps({"id": f"s{i}",
                                "prompt_ids": [rnd.randrange(1, 512) for _ in range(rnd.randint(2, 60))]})
                    + "\n")

    def args(out, dump, *extra):
        return ["--checkpoint", ckpt, "--mode", "score", "--input", inp, "--output", out, "--progress", "off",
                "--max-batch-tokens", "64"] + (["--dump-logits", dump] if dump else []) + list(extra)

    ref, ref_dump = os.path.join(ARGS.tmp, "dump_ref.jsonl"), os.path.join(ARGS.tmp, "dump_ref.h5")
    subprocess.run([ARGS.run] + args(ref, ref_dump), check=True, capture_output=True, env=ENV)
    out, dump = os.path.join(ARGS.tmp, "dump_out.jsonl"), os.path.join(ARGS.tmp, "dump_out.h5")
    for p in (out, out + ".partial", out + ".meta.json", dump, dump + ".partial"):
        if os.path.exists(p):
            os.remove(p)
    lay = ["--stages", "2", "--ep", "2"]
    p = subprocess.run([mpirun(), "-n", "4", ARGS.run] + args(out, dump, *lay), capture_output=True, text=True,
                       env=dict(ENV, GROK1_FAULT="0:60"), timeout=120)
    kept = len(open(out + ".partial").readlines()) if os.path.exists(out + ".partial") else 0
    print(f"failed at step 60: exit {p.returncode}, {kept} results kept, "
          f"{dump}.partial {'left' if os.path.exists(dump + '.partial') else 'MISSING'}")
    check(p.returncode != 0 and 0 < kept < 300, f"the injected failure did not stop the run part-way ({kept} kept)")
    check(not os.path.exists(dump) and os.path.exists(dump + ".partial"),
          "a failed run must leave DUMP.partial and no DUMP")
    p = subprocess.run([mpirun(), "-n", "4", ARGS.run] + args(out, dump, "--resume", *lay), capture_output=True,
                       text=True, env=ENV, timeout=120)
    check(p.returncode == 0, f"--resume with --dump-logits failed: {p.stderr[-500:]}")
    check("warning" not in p.stderr, f"the dump of a failed run was not continued in place: {p.stderr[-500:]}")
    check(open(out).read() == open(ref).read(), "resumed results differ from the uninterrupted run")
    check(not os.path.exists(dump + ".partial"), "DUMP.partial left after a complete resume")
    with h5py.File(ref_dump, "r") as a, h5py.File(dump, "r") as b:
        same = set(a["logits"]) == set(b["logits"]) and all(
            np.array_equal(a["logits"][k][...], b["logits"][k][...]) and
            list(a["logits"][k].attrs["crc32"]) == list(b["logits"][k].attrs["crc32"]) for k in a["logits"])
    print(f"resumed dump: {'bitwise equal' if same else 'DIFFERENT'} to the uninterrupted one")
    check(same, "the resumed logits dump differs from the uninterrupted run's")
    # a finished output whose dump was removed: refused, and the finished
    # output keeps its name
    os.remove(dump)
    p = subprocess.run([ARGS.run] + args(out, dump, "--resume"), capture_output=True, text=True, env=ENV)
    check(p.returncode != 0 and "no logits dump to continue" in p.stderr, f"dump removed: {p.stderr[-300:]}")
    check(os.path.exists(out) and not os.path.exists(out + ".partial") and open(out).read() == open(ref).read(),
          "a refused resume moved or changed the finished output")
    # a resume that adds --dump-logits to a run that had none is refused
    for p_ in (out, out + ".meta.json"):
        os.remove(p_)
    subprocess.run([ARGS.run] + args(out, None), capture_output=True, env=dict(ENV, GROK1_FAULT="0:60"))
    p = subprocess.run([ARGS.run] + args(out, dump, "--resume"), capture_output=True, text=True, env=ENV)
    check(p.returncode != 0 and "cannot resume" in p.stderr and "dump_logits" in p.stderr,
          f"adding --dump-logits on resume: {p.stderr[-300:]}")
    # a damaged DUMP.partial (what a kill inside an HDF5 flush can leave):
    # set aside as .damaged with a warning, and the run starts over to the
    # uninterrupted output and dump; with the input on stdin (it cannot be
    # read twice) refused instead, nothing changed
    def same_dump():
        with h5py.File(ref_dump, "r") as a, h5py.File(dump, "r") as b:
            return set(a["logits"]) == set(b["logits"]) and all(
                np.array_equal(a["logits"][k][...], b["logits"][k][...]) for k in a["logits"])
    for p_ in (dump, dump + ".partial.damaged"):
        if os.path.exists(p_):
            os.remove(p_)
    subprocess.run([ARGS.run] + args(out, dump), capture_output=True, env=dict(ENV, GROK1_FAULT="0:60"))
    with open(dump + ".partial", "r+b") as f:
        f.write(b"\0" * 512)
    before = open(out + ".partial").read()
    stdin_args = args(out, dump, "--resume")
    stdin_args[stdin_args.index(inp)] = "-"
    p = subprocess.run([ARGS.run] + stdin_args, stdin=open(inp), capture_output=True, text=True, env=ENV)
    check(p.returncode != 0 and "not a readable HDF5" in p.stderr and "stdin" in p.stderr,
          f"damaged dump, input on stdin: {p.stderr[-300:]}")
    check(open(out + ".partial").read() == before, "a refused resume changed OUT.partial")
    p = subprocess.run([ARGS.run] + args(out, dump, "--resume"), capture_output=True, text=True, env=ENV)
    print("damaged dump:", [l for l in p.stderr.splitlines() if "warning" in l])
    check(p.returncode == 0 and "warning:" in p.stderr and "not a readable HDF5" in p.stderr
          and os.path.exists(dump + ".partial.damaged"), f"damaged dump on resume: {p.stderr[-300:]}")
    check(open(out).read() == open(ref).read() and same_dump(),
          "after starting over from a damaged dump: output or dump differ from the uninterrupted run")
    # a dump missing a kept result's logits (its link lost): the same
    os.remove(out)
    os.remove(dump)
    subprocess.run([ARGS.run] + args(out, dump), capture_output=True, env=dict(ENV, GROK1_FAULT="0:60"))
    first = json.loads(open(out + ".partial").readline())["id"]
    line0 = next(i for i, l in enumerate(open(inp)) if l.strip() and json.loads(l)["id"] == first)
    with h5py.File(dump + ".partial", "r+") as f:
        del f["logits"][str(line0)]
    p = subprocess.run([ARGS.run] + args(out, dump, "--resume"), capture_output=True, text=True, env=ENV)
    print("dump missing a kept result:", [l for l in p.stderr.splitlines() if "warning" in l])
    check(p.returncode == 0 and "warning:" in p.stderr and "1 of the results kept have no logits there" in p.stderr,
          f"dump missing a kept result: {p.stderr[-300:]}")
    check(open(out).read() == open(ref).read() and same_dump(),
          "after starting over (a kept result's logits missing): output or dump differ from the uninterrupted run")
    # a kept result's dataset whose tokens attribute is not its request's
    # (logits of other tokens, of the same length): the same
    os.remove(out)
    os.remove(dump)
    subprocess.run([ARGS.run] + args(out, dump), capture_output=True, env=dict(ENV, GROK1_FAULT="0:60"))
    with h5py.File(dump + ".partial", "r+") as f:
        t = f["logits"][str(line0)].attrs["tokens"]
        f["logits"][str(line0)].attrs.modify("tokens", (t + 1) % 512)
    p = subprocess.run([ARGS.run] + args(out, dump, "--resume"), capture_output=True, text=True, env=ENV)
    print("dump with a kept result of other tokens:", [l for l in p.stderr.splitlines() if "warning" in l])
    check(p.returncode == 0 and "1 of the results kept have no logits there" in p.stderr and
          f"other tokens than its request's in logits/{line0}" in p.stderr,
          f"dump with a kept result of other tokens: {p.stderr[-300:]}")
    check(open(out).read() == open(ref).read() and same_dump(),
          "after starting over (a kept result's logits of other tokens): output or dump differ from the "
          "uninterrupted run")
    # fsynced as it goes (GROK1_DUMP_SYNC_S=0: after every result): a
    # resume reads back only the datasets past the mark synced_through; a
    # value changed past it is found (set aside, started over), one before
    # it is not (grok1-checksum finds it); a mark past the kept results
    # (OUT.partial lost lines the dump kept) is lowered to them
    def failed_synced():
        for p_ in (out, out + ".partial", dump, dump + ".partial"):
            if os.path.exists(p_):
                os.remove(p_)
        subprocess.run([ARGS.run] + args(out, dump), capture_output=True,
                       env=dict(ENV, GROK1_FAULT="0:60", GROK1_DUMP_SYNC_S="0"))
        # the input lines of the results kept (how many depends on how far
        # the writer thread got before the failure)
        line_of = {json.loads(l)["id"]: i for i, l in enumerate(open(inp)) if l.strip()}
        kept = [line_of[json.loads(r)["id"]] for r in open(out + ".partial")]
        with h5py.File(dump + ".partial", "r") as f:
            return int(f["synced_through"][()]), sorted(int(k) for k in f["logits"]), kept
    mark, have, kept_lines = failed_synced()
    print(f"synced: mark {mark}, {len(kept_lines)} results kept (last on line {kept_lines[-1]}), "
          f"{len(have)} datasets")
    check(0 <= mark <= kept_lines[-1], f"the mark {mark} is not within the kept results (last {kept_lines[-1]})")
    p = subprocess.run([ARGS.run] + args(out, dump, "--resume", "--verbose"), capture_output=True, text=True, env=ENV)
    said = [l for l in p.stderr.splitlines() if "read back against their checksums" in l]
    print("resume:", said)
    n_after = sum(1 for k in kept_lines if k > mark)
    check(p.returncode == 0 and said and f"{n_after} read back against their checksums" in said[0] and
          "on disk (synced)" in said[0], f"resume of a synced dump: {p.stderr[-400:]}")
    check(open(out).read() == open(ref).read() and same_dump(), "after a resume of a synced dump: output or dump "
                                                                 "differ from the uninterrupted run")
    with h5py.File(dump, "r") as f:
        check("synced_through" not in f, "a finished dump keeps the mark synced_through")
    def change(k, mark=None):
        with h5py.File(dump + ".partial", "r+") as f:
            f["logits"][str(k)][0, 0] += 1.0
            if mark is not None:  # an fsync that lagged behind: the mark at the middle of the kept results
                f["synced_through"][()] = mark
    _, _, kept_lines = failed_synced()
    middle = kept_lines[len(kept_lines) // 2]
    change(kept_lines[-1], middle)
    p = subprocess.run([ARGS.run] + args(out, dump, "--resume", "--verbose"), capture_output=True, text=True, env=ENV)
    check(p.returncode == 0 and "warning:" in p.stderr and
          f"logits/{kept_lines[-1]} does not match its checksum" in p.stderr,
          f"a value changed past the mark: {p.stderr[-400:]}")
    check(open(out).read() == open(ref).read() and same_dump(),
          "after starting over (a value changed past the mark): output or dump differ")
    # two values changed past the mark: the warning names the first of them
    # in input order (the look stops reading values back at it)
    _, _, kept_lines = failed_synced()
    if len(kept_lines) >= 3:
        change(kept_lines[-2], kept_lines[0])
        change(kept_lines[-1])
        p = subprocess.run([ARGS.run] + args(out, dump, "--resume", "--verbose"), capture_output=True, text=True,
                           env=ENV)
        check(p.returncode == 0 and f"logits/{kept_lines[-2]} does not match its checksum" in p.stderr and
              f"logits/{kept_lines[-1]} does not match" not in p.stderr,
              f"two values changed past the mark: not the first named: {p.stderr[-400:]}")
        check(open(out).read() == open(ref).read() and same_dump(),
              "after starting over (two values changed past the mark): output or dump differ")
    else:
        print(f"only {len(kept_lines)} results kept: two changed values not tried")
    _, _, kept_lines = failed_synced()
    middle = kept_lines[len(kept_lines) // 2]
    n_after = sum(1 for k in kept_lines if k > middle)
    change(kept_lines[1], middle)
    p = subprocess.run([ARGS.run] + args(out, dump, "--resume", "--verbose"), capture_output=True, text=True, env=ENV)
    check(p.returncode == 0 and f"{n_after} read back against their checksums" in p.stderr,
          f"a mark at the middle: not {n_after} datasets read back: {p.stderr[-400:]}")
    _, _, kept_lines = failed_synced()
    change(kept_lines[0])
    rc = subprocess.run([os.path.join(os.path.dirname(ARGS.run), "..", "checkpoints", "grok1-checksum"),
                         dump + ".partial"], capture_output=True, text=True)
    check(rc.returncode == 1 and f"logits/{kept_lines[0]} does not match" in rc.stderr,
          f"grok1-checksum on a synced dump with a change before the mark: {rc.returncode} {rc.stderr[-300:]}")
    p = subprocess.run([ARGS.run] + args(out, dump, "--resume"), capture_output=True, text=True, env=ENV)
    check(p.returncode == 0 and "warning:" not in p.stderr, f"a change before the mark is not read: {p.stderr[-300:]}")
    # the mark past the kept results: OUT.partial cut to its first 3 lines;
    # the resume lowers it to them (the datasets after are made again, not
    # synced), as a second interruption (no sync in it) shows
    mark, _, kept_lines = failed_synced()
    lines = open(out + ".partial").readlines()
    with open(out + ".partial", "w") as f:
        f.writelines(lines[:3])
    check(mark > kept_lines[2], f"the mark {mark} is not past the third result (line {kept_lines[2]})")
    p = subprocess.run([ARGS.run] + args(out, dump, "--resume", "--verbose"), capture_output=True, text=True,
                       env=dict(ENV, GROK1_FAULT="0:20", GROK1_DUMP_SYNC_S="-1"))
    said = [l for l in p.stderr.splitlines() if "read back against their checksums" in l]
    with h5py.File(dump + ".partial", "r") as f:
        lowered = int(f["synced_through"][()])
    check(p.returncode != 0 and said and "the 3 results kept" in said[0] and lowered == kept_lines[2],
          f"a mark past the kept results: {said}, mark {lowered} (want {kept_lines[2]}): {p.stderr[-300:]}")
    p = subprocess.run([ARGS.run] + args(out, dump, "--resume"), capture_output=True, text=True, env=ENV)
    check(p.returncode == 0 and open(out).read() == open(ref).read() and same_dump(),
          f"after a mark past the kept results: output or dump differ: {p.stderr[-300:]}")
    # killed before its first result: OUT.partial empty, DUMP.partial cut
    # short before HDF5's first flush: nothing to keep, so a resume starts
    # the dump afresh and finishes
    open(out + ".partial", "w").close()
    with open(dump + ".partial", "wb") as f:
        f.write(b"\x89HDF\r\n\x1a\n" + b"\0" * 88)
    p = subprocess.run([ARGS.run] + args(out, dump, "--resume"), capture_output=True, text=True, env=ENV)
    check(p.returncode == 0 and open(out).read() == open(ref).read(),
          f"resume after a kill before the first result: exit {p.returncode}: {p.stderr[-300:]}")
    with h5py.File(ref_dump, "r") as a, h5py.File(dump, "r") as b:
        check(set(a["logits"]) == set(b["logits"]) and all(
            np.array_equal(a["logits"][k][...], b["logits"][k][...]) for k in a["logits"]),
            "the dump made afresh on resume differs from the uninterrupted run's")

    # SIGTERM (a time limit) while the dump's writer thread may be behind:
    # the run stops cleanly once the results it holds for the dump are out,
    # every result written has its logits in the dump with their checksum,
    # and --resume finishes both (a longer input, small steps: a run that
    # lasts some seconds)
    inp2, ref2, ref2_dump = (os.path.join(ARGS.tmp, n) for n in ("term_in.jsonl", "term_ref.jsonl", "term_ref.h5"))
    rnd = random.Random(6)
    with open(inp2, "w") as f:
        for i in range(2000):
            f.write(json.dumps({"id": f"t{i}",
                                "prompt_ids": [rnd.randrange(1, 512) for _ in range(rnd.randint(2, 30))]})
                    + "\n")
    def on_inp2(o, d_):
        a = args(o, d_)
        a[a.index(inp)] = inp2
        return a
    term = [on_inp2(ref2, ref2_dump), on_inp2(out, dump)]
    for p_ in (ref2, ref2 + ".meta.json", ref2_dump, out, out + ".partial", dump, dump + ".partial"):
        if os.path.exists(p_):
            os.remove(p_)
    subprocess.run([ARGS.run] + term[0], check=True, capture_output=True, env=ENV)
    slow = term[1] + lay
    slow[slow.index("--max-batch-tokens") + 1] = "4"
    p = subprocess.Popen([mpirun(), "-n", "4", ARGS.run] + slow, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         text=True, env=ENV)
    t_end = time.time() + 60
    while time.time() < t_end and (not os.path.exists(out + ".partial") or
                                   len(open(out + ".partial").readlines()) < 10):
        time.sleep(0.02)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    kept = [json.loads(l)["id"] for l in open(out + ".partial")] if os.path.exists(out + ".partial") else []
    lines_of = {json.loads(l)["id"]: i for i, l in enumerate(open(inp2)) if l.strip()}
    with h5py.File(dump + ".partial", "r") as f:
        missing = [i for i in kept if str(lines_of[i]) not in f["logits"] or
                   "crc32" not in f["logits"][str(lines_of[i])].attrs]
    print(f"SIGTERM with a dump: exit {p.returncode}, {len(kept)} results kept, {len(missing)} without their logits")
    check(p.returncode != 0 and "interrupted by signal" in err and 10 <= len(kept) < 2000 and not missing,
          f"SIGTERM with a dump: exit {p.returncode}, {len(kept)} kept, missing logits {missing[:5]}: {err[-300:]}")
    p = subprocess.run([mpirun(), "-n", "4", ARGS.run] + term[1] + ["--resume"] + lay, capture_output=True,
                       text=True, env=ENV, timeout=120)
    with h5py.File(ref2_dump, "r") as a, h5py.File(dump, "r") as b:
        same = set(a["logits"]) == set(b["logits"]) and all(
            np.array_equal(a["logits"][k][...], b["logits"][k][...]) for k in a["logits"])
    check(p.returncode == 0 and "warning" not in p.stderr and open(out).read() == open(ref2).read() and same,
          f"resume after SIGTERM with a dump: {p.returncode} {p.stderr[-300:]}")
    for p_ in (out, out + ".meta.json", dump):  # the output of the other input goes
        if os.path.exists(p_):
            os.remove(p_)

def case_dump_sigkill():
    """SIGKILL (no warning: a lost node, the OOM killer) at moments spread
    over a score run with --dump-logits, each followed by --resume: every
    resume finishes with the uninterrupted run's output and logits, bitwise
    (the dump is flushed at creation and after each request's last rows,
    before its result line; a dump with no kept result is made afresh);
    every other run fsyncs its dump after each result and marks it
    (synced_through), so kills also land while the mark is written.
    G1_SIGKILL_SOAK=N: N kills at random moments instead (G1_SIGKILL_SEED)."""
    import h5py
    import numpy as np
    ckpt, _ = setup()
    inp = os.path.join(ARGS.tmp, "sigkill_in.jsonl")
    rnd = random.Random(8)
    with open(inp, "w") as f:
        for i in range(300):
            f.write(json.dumps({"id": i,
                                "prompt_ids": [rnd.randrange(1, 512) for _ in range(rnd.randint(5, 60))]}) + "\n")

    def args(out, dump, *extra):
        return [ARGS.run, "--checkpoint", ckpt, "--mode", "score", "--input", inp, "--output", out, "--dump-logits",
                dump, "--progress", "off", "--threads", "1", "--batch-size", "4"] + list(extra)

    def clean(*paths):
        for p in paths:
            for x in (p, p + ".partial", p + ".meta.json"):
                if os.path.exists(x):
                    os.remove(x)

    ref, ref_dump = os.path.join(ARGS.tmp, "sk_ref.jsonl"), os.path.join(ARGS.tmp, "sk_ref.h5")
    clean(ref, ref_dump)
    t0 = time.time()
    subprocess.run(args(ref, ref_dump), check=True, capture_output=True, env=ENV)
    dur = time.time() - t0
    with h5py.File(ref_dump, "r") as f:
        want = {k: f["logits"][k][...] for k in f["logits"]}
        want_crc = {k: list(f["logits"][k].attrs["crc32"]) for k in f["logits"]}
    out, dump = os.path.join(ARGS.tmp, "sk_out.jsonl"), os.path.join(ARGS.tmp, "sk_out.h5")
    fracs = [0.1, 0.25, 0.4, 0.55, 0.7, 0.85, 0.95]
    if os.environ.get("G1_SIGKILL_SOAK"):  # a longer soak: that many kills at random moments
        r = random.Random(int(os.environ.get("G1_SIGKILL_SEED", "1")))
        fracs = [r.uniform(0.05, 1.0) for _ in range(int(os.environ["G1_SIGKILL_SOAK"]))]
    for i, frac in enumerate(fracs):
        clean(out, dump)
        # every other run fsyncs its dump after every result (and marks it synced_through), so kills
        # land while the mark is written too
        synced = i % 2 == 1
        env = dict(ENV, GROK1_DUMP_SYNC_S="0") if synced else ENV
        p = subprocess.Popen(args(out, dump), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        time.sleep(frac * dur)
        p.send_signal(signal.SIGKILL)
        p.wait()
        kept = len(open(out + ".partial").readlines()) if os.path.exists(out + ".partial") else -1
        keep = os.path.join(ARGS.tmp, "sk_killed")
        for x in (out + ".partial", dump + ".partial"):  # the state the kill left, for a failure's post-mortem
            if os.path.exists(x):
                shutil.copy(x, keep + os.path.basename(x)[len("sk_out"):])
        q = subprocess.run(args(out, dump, "--resume"), capture_output=True, text=True, env=ENV)
        why = f"exit {q.returncode}: {q.stderr[-300:]}" if q.returncode else ""
        if not why and (not os.path.exists(out) or open(out).read() != open(ref).read()):
            got = open(out).read().splitlines() if os.path.exists(out) else []
            exp = open(ref).read().splitlines()
            diff = [i for i in range(max(len(got), len(exp))) if i >= len(got) or i >= len(exp) or got[i] != exp[i]]
            why = f"output: {len(got)} lines, {len(exp)} expected, first differing line {diff[0] + 1}"
        if not why:
            with h5py.File(dump, "r") as f:
                keys = set(f["logits"])
                differ = sorted((k for k in want if k in keys and not (
                    np.array_equal(f["logits"][k][...], want[k]) and
                    list(f["logits"][k].attrs.get("crc32", [])) == want_crc[k])), key=int)
            if keys != set(want) or differ:
                why = (f"dump: {len(keys ^ set(want))} datasets missing or extra, {len(differ)} differ "
                       f"(first {differ[:5]})")
        ok = not why
        how = "started over (dump damaged)" if "warning:" in q.stderr else "continued"
        print(f"SIGKILL at {frac:.0%} of a {dur:.2f} s run{' (synced)' if synced else ''}: {kept} results kept; "
              f"resume {how}: "
              f"{'output and dump equal to the uninterrupted run' if ok else 'FAILED: ' + why}")
        check(ok, f"SIGKILL at {frac:.0%} ({kept} results kept): the resume did not finish to the uninterrupted run")


def case_fault_message():
    ckpt, inp = setup()
    out = os.path.join(ARGS.tmp, "fault.jsonl")
    p = job(ckpt, inp, out, env=dict(ENV, GROK1_FAULT="2:50"))
    _, err = p.communicate(timeout=60)
    line = [l for l in err.splitlines() if "error:" in l]
    print(line[0] if line else err[-500:])
    check(p.returncode != 0, "an injected error did not fail the job")
    check(line and "rank 2 of 4" in line[0] and "host " in line[0] and "injected fault" in line[0],
          "the message does not name the rank, its host and the reason")


def case_trace():
    ckpt, inp = setup()
    small = os.path.join(ARGS.tmp, "trace_in.jsonl")
    with open(small, "w") as f:
        f.write("".join(open(inp).readlines()[:20]))
    out, tr = os.path.join(ARGS.tmp, "trace_out.jsonl"), os.path.join(ARGS.tmp, "trace.json")
    p = job(ckpt, small, out, ["--trace", tr])
    _, err = p.communicate(timeout=120)
    check(p.returncode == 0, f"traced run failed: {err[-500:]}")
    shutil.copyfile(out, out + ".ok")
    t = json.load(open(tr))
    spans = [e for e in t["traceEvents"] if e["ph"] == "X"]
    ranks = {e["pid"] for e in spans}
    cats = {e["cat"] for e in spans}
    print(f"{len(spans)} spans from ranks {sorted(ranks)}, categories {sorted(cats)}")
    check(ranks == {0, 1, 2, 3}, "spans are missing from some rank")
    check({"compute", "a2a", "driver"} <= cats, "compute, all-to-all or driver spans are missing")
    check(all(e["dur"] >= 0 and e["ts"] >= 0 for e in spans), "negative times in the trace")
    mbs = {e["args"].get("micro_batch") for e in spans if e["cat"] == "compute"}
    check(None not in mbs, "compute spans without a micro-batch")
    # every span TRACE.md lists for this layout, on the ranks it says
    names = {(e["pid"] == 0, e["name"]) for e in spans}
    for want in [(True, "embed"), (True, "logits and tokens"), (True, "results"), (False, "recv"),
                 (True, "all-to-all out"), (False, "experts")]:
        check(want in names, f"no {want[1]!r} span on {'rank 0' if want[0] else 'the other ranks'}")
    # a micro-batch's results come from a last-stage rank (2 or 3 of 2 x 2)
    frm = {e["args"].get("from_rank") for e in spans if e["name"] == "results"}
    check(frm <= {2, 3} and frm, f"'results' spans name the ranks {frm}, not the last stage's")
    # the spans a rank keeps are capped (GROK1_TRACE_SPANS): the rest are
    # counted, each rank's cut marked, and the run says so
    os.remove(out)
    p = job(ckpt, small, out, ["--trace", tr], env=dict(ENV, GROK1_TRACE_SPANS="7"))
    _, err = p.communicate(timeout=120)
    check(p.returncode == 0, f"a run with a capped trace failed: {err[-500:]}")
    t = json.load(open(tr))
    per = {}
    for e in t["traceEvents"]:
        if e["ph"] == "X":
            per[e["pid"]] = per.get(e["pid"], 0) + 1
    cuts = {e["pid"]: e["args"]["dropped_spans"] for e in t["traceEvents"] if e["ph"] == "i"}
    check(per == {0: 7, 1: 7, 2: 7, 3: 7}, f"GROK1_TRACE_SPANS=7 kept {per} spans")
    check(set(cuts) == {0, 1, 2, 3} and min(cuts.values()) > 0, f"the cuts marked: {cuts}")
    m = re.search(r"holds the first 7 spans of each rank: (\d+) later spans of 4 ranks were left out", err)
    check(m and int(m.group(1)) == sum(cuts.values()), f"no warning, or the wrong count ({sum(cuts.values())}): "
          f"{err[-500:]}")
    os.remove(out)
    p = job(ckpt, small, out, ["--trace", tr], env=dict(ENV, GROK1_TRACE_SPANS="lots"))
    _, err = p.communicate(timeout=120)
    check(p.returncode == 2 and "GROK1_TRACE_SPANS=lots" in err and not os.path.exists(out + ".partial"),
          f"GROK1_TRACE_SPANS=lots: exit {p.returncode}, {err[-500:]}")
    # a trace whose directory does not exist is refused before the load
    if os.path.exists(out):
        os.remove(out)
    p = job(ckpt, small, out, ["--trace", os.path.join(ARGS.tmp, "no_such_dir", "t.json")])
    _, err = p.communicate(timeout=120)
    check(p.returncode == 2 and "no_such_dir does not exist" in err and not os.path.exists(out + ".partial"),
          f"a trace into a missing directory: exit {p.returncode}, {err[-500:]}")
    # a trace that cannot be written at the end (a full disk) keeps the
    # results: the output is complete, the exit status says the trace failed
    mnt = os.path.join(ARGS.tmp, "trace_mnt")
    if not tmpfs(mnt, "64k"):
        print("no tmpfs here (not root): the full-disk trace case is not run")
        return
    try:
        with open(os.path.join(mnt, "fill"), "wb") as f:
            try:
                f.write(b"\0" * (1 << 20))
            except OSError:
                pass
        full = open(out + ".ok").read()
        p = job(ckpt, small, out, ["--trace", os.path.join(mnt, "t.json")])
        _, err = p.communicate(timeout=120)
        print("trace on a full disk:", [l for l in err.splitlines() if "trace" in l])
        check(p.returncode == 1 and "the trace was not written" in err and "the results are complete" in err,
              f"a trace on a full disk: exit {p.returncode}, {err[-800:]}")
        check(os.path.exists(out) and not os.path.exists(out + ".partial"),
              "a failed trace left the results in OUT.partial")
        check(os.path.exists(out) and open(out).read() == full, "the results differ from the traced run's")
        check(not os.path.exists(os.path.join(mnt, "t.json")) and
              not [f for f in os.listdir(mnt) if f.startswith("t.json.tmp")], "a torn trace was left behind")
    finally:
        subprocess.run(["umount", mnt], capture_output=True)


def tmpfs(path, size):
    """A tmpfs of `size` mounted at path (or resized there); False when this
    machine does not allow it (not root, no CAP_SYS_ADMIN)."""
    os.makedirs(path, exist_ok=True)
    opts = f"remount,size={size}" if os.path.ismount(path) else f"size={size}"
    return subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", path], capture_output=True).returncode == 0


def case_disk_full():
    """A file system that fills up (a tmpfs of a few MiB, mounted for the
    test: it needs root, else it is skipped). --check-input says the dump
    does not fit (exit 1); grok1-run warns as it starts and stops cleanly
    (exit 1, no crash: HDF5 1.10 cannot close a file after a write failed
    for space, so the space is reserved before each write) at the first
    request whose logits have no room, with OUT.partial and DUMP.partial
    whole; once there is room --resume continues both in place (no result
    computed again) to the uninterrupted run's output and dump, through a
    2 x 2 job. Results alone fill a disk and resume the same way.
    grok1-mkckpt and grok1-merge refuse a disk too small before writing,
    leaving nothing behind."""
    import h5py
    import numpy as np
    ckpt, _ = setup()
    inp = os.path.join(ARGS.tmp, "df_in.jsonl")
    rnd = random.Random(8)
    with open(inp, "w") as f:
        for i in range(400):
            f.write(json.dumps({"id": f"d{i}",
                                "prompt_ids": [rnd.randrange(1, 512) for _ in range(rnd.randint(2, 12))]})
                    + "\n")

    def args(out, dump, *extra):
        return ["--checkpoint", ckpt, "--mode", "score", "--input", inp, "--output", out, "--progress", "off"] + (
            ["--dump-logits", dump] if dump else []) + list(extra)
    ref, ref_dump = os.path.join(ARGS.tmp, "df_ref.jsonl"), os.path.join(ARGS.tmp, "df_ref.h5")
    for p_ in (ref, ref_dump):
        if os.path.exists(p_):
            os.remove(p_)
    subprocess.run([ARGS.run] + args(ref, ref_dump), check=True, capture_output=True, env=ENV)
    mnt = os.path.join(ARGS.tmp, "df_mnt")
    if not tmpfs(mnt, "3m"):
        print("SKIP: cannot mount a tmpfs here (the test needs root)")
        return 77
    try:
        out, dump = os.path.join(mnt, "out.jsonl"), os.path.join(mnt, "d.h5")
        cmd = [ARGS.run, "--checkpoint", ckpt, "--mode", "score", "--input", inp, "--check-input",
               "--dump-logits", dump]
        p = subprocess.run(cmd, capture_output=True, text=True, env=ENV)
        print("check-input:", [l for l in p.stdout.splitlines() if "logits dump" in l])
        check(p.returncode == 1 and "does NOT fit" in p.stdout, f"--check-input of a dump too large: {p.returncode} "
                                                                 f"{p.stdout} {p.stderr}")
        lay = ["--stages", "2", "--ep", "2"]
        p = subprocess.run([mpirun(), "-n", "4", ARGS.run] + args(out, dump, *lay), capture_output=True, text=True,
                           env=ENV, timeout=120)
        print("full disk:", [l for l in p.stderr.splitlines() if l.startswith("grok1-run")])
        check(p.returncode == 1 and "warning: the logits dump" in p.stderr and "no room for logits/" in p.stderr,
              f"a run onto a full disk: exit {p.returncode}: {p.stderr[-600:]}")
        check("Segmentation" not in p.stderr and "signal" not in p.stderr, f"a crash: {p.stderr[-600:]}")
        kept = open(out + ".partial").read() if os.path.exists(out + ".partial") else ""
        check(0 < len(kept) and open(ref).read().startswith(kept), "the results kept are not the reference's first")
        check(os.path.exists(dump + ".partial") and not os.path.exists(dump) and not os.path.exists(out),
              "a run stopped by a full disk must leave OUT.partial and DUMP.partial only")
        # --check-input --resume counts only the rest of the dump: with room
        # for the rest (3.8 MiB here) but not for the whole (5.8 MiB) it
        # passes, where it used to refuse the job
        check(tmpfs(mnt, "7500k"), "cannot grow the tmpfs")
        p = subprocess.run(cmd + ["--output", out, "--resume"], capture_output=True, text=True, env=ENV)
        print("check-input --resume:", [l for l in p.stdout.splitlines() if "logits dump" in l])
        check(p.returncode == 0 and "continued by --resume" in p.stdout and "NOT fit" not in p.stdout,
              f"--check-input --resume with the room for the rest: {p.returncode} {p.stdout} {p.stderr}")
        p = subprocess.run(cmd, capture_output=True, text=True, env=ENV)
        check(p.returncode == 1 and "does NOT fit" in p.stdout, f"and not room for the whole: {p.stdout}")
        check(tmpfs(mnt, "32m"), "cannot grow the tmpfs")
        p = subprocess.run([mpirun(), "-n", "4", ARGS.run] + args(out, dump, "--resume", *lay), capture_output=True,
                           text=True, env=ENV, timeout=120)
        check(p.returncode == 0 and "warning" not in p.stderr and "resumed after" in p.stderr,
              f"--resume once there is room: exit {p.returncode}: {p.stderr[-600:]}")
        check(os.path.exists(out) and open(out).read() == open(ref).read(), "resumed results differ from the reference")
        with h5py.File(ref_dump, "r") as a, h5py.File(dump, "r") as b:
            same = set(a["logits"]) == set(b["logits"]) and all(
                np.array_equal(a["logits"][k][...], b["logits"][k][...]) and sorted(a["logits"][k].attrs) ==
                sorted(b["logits"][k].attrs) and all(np.array_equal(a["logits"][k].attrs[t], b["logits"][k].attrs[t])
                                                     for t in a["logits"][k].attrs) for k in a["logits"])
        check(same, "the dump continued after a full disk differs from the uninterrupted run's")
        st = os.stat(dump)
        check(st.st_blocks * 512 <= st.st_size + (64 << 10),
              f"space reserved past the dump's end was not given back: {st.st_blocks * 512} bytes on disk for "
              f"{st.st_size}")
        # the results alone
        for p_ in os.listdir(mnt):
            os.remove(os.path.join(mnt, p_))
        check(tmpfs(mnt, "16k"), "cannot shrink the tmpfs")
        p = subprocess.run([ARGS.run] + args(out, None), capture_output=True, text=True, env=ENV)
        check(p.returncode == 1 and "writing results failed" in p.stderr and "No space left" in p.stderr,
              f"results onto a full disk: exit {p.returncode}: {p.stderr[-300:]}")
        check(tmpfs(mnt, "4m"), "cannot grow the tmpfs")
        p = subprocess.run([ARGS.run] + args(out, None, "--resume"), capture_output=True, text=True, env=ENV)
        check(p.returncode == 0 and open(out).read() == open(ref).read(),
              f"results resumed after a full disk: exit {p.returncode}: {p.stderr[-300:]}")
        # a checkpoint, a merge: refused before writing, nothing left
        for p_ in os.listdir(mnt):
            os.remove(os.path.join(mnt, p_))
        check(tmpfs(mnt, "256k"), "cannot shrink the tmpfs")
        p = subprocess.run([ARGS.mkckpt, "--config", "tiny", "--seed", "1", "--out", os.path.join(mnt, "t.h5")],
                           capture_output=True, text=True)
        check(p.returncode == 1 and "no room for" in p.stderr and not os.listdir(mnt),
              f"grok1-mkckpt onto a small disk: exit {p.returncode} {p.stderr.strip()}; left {os.listdir(mnt)}")
        shards = []
        for k in range(2):
            o = os.path.join(ARGS.tmp, f"df_s{k}.jsonl")
            for p_ in (o, o + ".meta.json", o[:-6] + ".h5"):
                if os.path.exists(p_):
                    os.remove(p_)
            subprocess.run([ARGS.run] + args(o, o[:-6] + ".h5", "--shard", f"{k}/2"), check=True,
                           capture_output=True, env=ENV)
            shards.append(o)
        check(tmpfs(mnt, "2m"), "cannot resize the tmpfs")
        p = subprocess.run([ARGS.merge, "--input", inp, "--output", out, "--dump-logits", dump] + shards,
                           capture_output=True, text=True)
        check(p.returncode == 1 and "no room for the joined dump" in p.stderr and not os.listdir(mnt),
              f"grok1-merge onto a small disk: exit {p.returncode} {p.stderr.strip()}; left {os.listdir(mnt)}")
    finally:
        subprocess.run(["umount", mnt], capture_output=True)
        if not os.path.ismount(mnt):
            shutil.rmtree(mnt, ignore_errors=True)


def case_durable():
    """The final names come last and stay: OUT, DUMP and OUT.meta.json are
    fsynced before the rename that names them and their folder after it
    (strace; skipped without it), so a node lost soon after the end cannot
    leave a final name over a short file. A dump that cannot take its name
    at the end (DUMP made a directory under the run) is kept as
    DUMP.partial, not removed: once the name is free, --resume finishes to
    the uninterrupted run's output and dump."""
    import h5py
    import numpy as np
    ckpt, _ = setup()
    inp = os.path.join(ARGS.tmp, "du_in.jsonl")
    rnd = random.Random(9)
    with open(inp, "w") as f:
        for i in range(300):
            f.write(json.dumps({"id": i, "prompt_ids": [rnd.randrange(1, 512) for _ in range(rnd.randint(2, 60))]})
                    + "\n")

    def args(out, dump, *extra):
        return ["--checkpoint", ckpt, "--mode", "score", "--input", inp, "--output", out, "--progress", "off",
                "--dump-logits", dump] + list(extra)

    def clean(*names):
        for n in names:
            for x in (n, n + ".partial", n + ".meta.json"):
                if os.path.isdir(x):
                    os.rmdir(x)
                elif os.path.exists(x):
                    os.remove(x)
    ref, ref_dump = os.path.join(ARGS.tmp, "du_ref.jsonl"), os.path.join(ARGS.tmp, "du_ref.h5")
    clean(ref, ref_dump)
    subprocess.run([ARGS.run] + args(ref, ref_dump), check=True, capture_output=True, env=ENV)
    out, dump = os.path.join(ARGS.tmp, "du_out.jsonl"), os.path.join(ARGS.tmp, "du_out.h5")
    clean(out, dump)
    p = subprocess.Popen([ARGS.run] + args(out, dump), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         env=ENV)
    t0 = time.time()
    while not os.path.exists(dump + ".partial") and p.poll() is None and time.time() - t0 < 60:
        time.sleep(0.002)
    os.mkdir(dump)  # the name the dump would take at the end
    _, err = p.communicate(timeout=120)
    print("DUMP a directory at the end:", err.strip().splitlines()[-1][:300] if err.strip() else "")
    check(p.returncode == 1 and "cannot rename" in err and os.path.exists(dump + ".partial") and
          os.path.exists(out + ".partial") and not os.path.exists(out),
          f"a dump that cannot take its name: exit {p.returncode}, DUMP.partial kept: "
          f"{os.path.exists(dump + '.partial')}")
    os.rmdir(dump)
    p = subprocess.run([ARGS.run] + args(out, dump, "--resume"), capture_output=True, text=True, env=ENV)
    check(p.returncode == 0 and os.path.exists(out) and open(out).read() == open(ref).read(),
          f"--resume once the name is free: exit {p.returncode}, {p.stderr[-300:]}")
    if os.path.exists(dump):
        with h5py.File(ref_dump, "r") as a, h5py.File(dump, "r") as b:
            same = set(a["logits"]) == set(b["logits"]) and all(
                np.array_equal(a["logits"][k][...], b["logits"][k][...]) for k in a["logits"])
        check(same, "the resumed dump differs from the uninterrupted run's")
    # the input edited in place under the run: the results may answer a
    # mix of both versions, so neither OUT nor DUMP is named (both .partial
    # files stay)
    edited = os.path.join(ARGS.tmp, "du_edit.jsonl")
    rnd = random.Random(12)
    text = "".join(json.dumps({"id": i, "prompt_ids": [rnd.randrange(10, 100) for _ in range(rnd.randint(20, 60))]})
                   + "\n" for i in range(2000))
    with open(edited, "w") as f:
        f.write(text)
    eout, edump = os.path.join(ARGS.tmp, "du_edit_out.jsonl"), os.path.join(ARGS.tmp, "du_edit.h5")
    clean(eout, edump)
    p = subprocess.Popen([ARGS.run, "--checkpoint", ckpt, "--mode", "score", "--input", edited, "--output", eout,
                          "--dump-logits", edump, "--progress", "off"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True, env=ENV)
    t0 = time.time()
    while p.poll() is None and time.time() - t0 < 60 and not (
            os.path.exists(eout + ".partial") and open(eout + ".partial").read().count("\n") >= 1):
        time.sleep(0.002)
    # in place, every byte where it was (a line read half before, half after
    # is still a request): other ids, of as many digits
    with open(edited, "r+") as f:
        f.write(text.translate(str.maketrans("123456789", "234567891")))
    _, err = p.communicate(timeout=300)
    print("input edited during the run:", err.strip().splitlines()[-1][:300] if err.strip() else "")
    check(p.returncode == 1 and "changed while the run read it" in err and not os.path.exists(eout) and
          not os.path.exists(edump) and os.path.exists(eout + ".partial") and os.path.exists(edump + ".partial"),
          f"an input edited during the run: exit {p.returncode}, OUT named: {os.path.exists(eout)}, DUMP named: "
          f"{os.path.exists(edump)}")
    strace = shutil.which("strace")
    if not strace:
        print("no strace here: the fsync order is not checked")
        return
    clean(out, dump)
    log = os.path.join(ARGS.tmp, "du_strace.txt")
    subprocess.run([strace, "-f", "-qq", "-e", "trace=openat,fsync,rename", "-o", log, ARGS.run] + args(out, dump),
                   check=True, capture_output=True, env=ENV)
    calls = open(log).read().splitlines()

    def synced_before_rename(src, dst):
        """src opened, its descriptor fsynced, then renamed to dst, then the
        folder opened as a directory and fsynced"""
        at = next((i for i, c in enumerate(calls) if f'rename("{src}", "{dst}")' in c and c.rstrip().endswith("= 0")),
                  None)
        if at is None:
            return False
        fds = {c.rsplit("= ", 1)[1].strip() for c in calls[:at] if f'openat(AT_FDCWD, "{src}", O_RDONLY' in c}
        before = any(f"fsync({fd})" in c for c in calls[:at] for fd in fds)
        dirs = {c.rsplit("= ", 1)[1].strip() for c in calls[at:] if "O_DIRECTORY" in c}
        after = any(f"fsync({fd})" in c for c in calls[at:] for fd in dirs)
        return before and after
    for src, dst in ((out + ".partial", out), (dump + ".partial", dump),
                     (out + ".meta.json.tmp", out + ".meta.json")):
        check(synced_before_rename(src, dst), f"{os.path.basename(src)} is not fsynced before it is renamed to "
                                              f"{os.path.basename(dst)}, with its folder after")
    print("fsync before each rename, and of the folder after: checked with strace")


def main():
    global ARGS
    cases, ap = script_cases(globals())
    ap.add_argument("--run", required=True)
    ap.add_argument("--mkckpt", required=True)
    ap.add_argument("--link", default="", help="grok1-link (case resume_refusals)")
    ap.add_argument("--merge", default="", help="grok1-merge (case disk_full; default: beside grok1-run)")
    ap.add_argument("--tmp", required=True)
    ARGS = ap.parse_args()
    ARGS.merge = ARGS.merge or os.path.join(os.path.dirname(os.path.abspath(ARGS.run)), "grok1-merge")
    if not mpirun():
        print("SKIP: no mpirun (apt-get install openmpi-bin)")
        return 77
    ARGS.tmp = os.path.abspath(ARGS.tmp)
    os.makedirs(ARGS.tmp, exist_ok=True)
    if cases[ARGS.case]() == 77:
        return 77
    return check.result()


if __name__ == "__main__":
    sys.exit(main())
