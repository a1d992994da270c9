#!/usr/bin/env python3
"""Command-line tests of grok1-run (meson suite 'cli').

usage: test_cli.py CASE --run PATH/grok1-run [--mkckpt PATH/grok1-mkckpt] [--hdf5 0|1]

Each CASE runs grok1-run on the tiny synthetic model (vocab 512, 4 layers,
max_seq_len 256, eos 2) in a temporary directory and exits non-zero on the
first failed check; 77 means skipped.
"""
import json
import math
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from g1testlib import script_cases, mpi_env, params_crc  # noqa: E402

V, MAX_SEQ, EOS = 512, 256, 2
SKIP = 77

ARGS = None


class Fail(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Fail(what)


def run(args, stdin=None, timeout=60, env=None):
    """Run grok1-run; returns (rc, stdout, stderr) as text (env: added to the environment)."""
    p = subprocess.run([ARGS.run] + args, input=stdin, capture_output=True, text=True, timeout=timeout,
                       env=dict(os.environ, **env) if env else None)
    return p.returncode, p.stdout, p.stderr


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(r if isinstance(r, str) else json.dumps(r))
            f.write("\n")


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def tiny(mode, inp, out, *extra, seed=5):
    return ["--synthetic", "tiny", "--synthetic-seed", str(seed), "--mode", mode, "--input", inp, "--output", out] + list(extra)


def score_in(where, *args):
    """grok1-run in score mode started in folder `where` (relative names are
    resolved there); returns (rc, stderr)."""
    p = subprocess.run([ARGS.run] + tiny("score", *args), capture_output=True, text=True, timeout=60, cwd=where)
    return p.returncode, p.stderr


def expect_ok(args, stdin=None):
    rc, so, se = run(args, stdin)
    check(rc == 0, f"expected success, got exit {rc}: {se.strip()}")
    check("request" in se and "tokens/s" in se, f"no summary line on stderr: {se!r}")
    return so, se


def expect_fail(args, code, words, out=None, stdin=None):
    """Non-zero exit `code`, every word in the message, no final OUT file."""
    rc, so, se = run(args, stdin)
    check(rc == code, f"{args}: expected exit {code}, got {rc}; stderr: {se.strip()}")
    check("grok1-run: error:" in se, f"error not prefixed 'grok1-run: error:': {se!r}")
    for w in words:
        check(w.lower() in se.lower(), f"message lacks {w!r}: {se.strip()}")
    if out:
        check(not os.path.exists(out), f"{out} was created by a failing run")
    return se


# ---------------------------------------------------------------- cases

def case_help(d):
    rc, so, se = run(["--help"])
    check(rc == 0, f"--help exit {rc}")
    for w in ["--checkpoint", "--mode", "--input", "--output", "--dump-logits", "--max-new-tokens",
              "--batch-size", "--max-batch-tokens", "--threads", "--synthetic", "--synthetic-seed", "--temperature", "--top-p", "--top-k", "--seed", "--tokenizer", "--backend", "--cuda-gemm", "--cuda-tune", "--gpu-direct", "--prefix-cache", "--kv-cache", "--max-context", "input order"]:
        check(w.lower() in so.lower(), f"--help does not mention {w}")


def case_usage_errors(d):
    inp, out = os.path.join(d, "in.jsonl"), os.path.join(d, "out.jsonl")
    write_jsonl(inp, [{"id": 1, "prompt_ids": [1, 2]}])
    base = tiny("score", inp, out)
    expect_fail(base + ["--frobnicate"], 2, ["unknown option", "--frobnicate"], out)
    expect_fail(base + ["--batch-size", "0"], 2, ["--batch-size"], out)
    expect_fail(base + ["--max-batch-tokens", "x"], 2, ["--max-batch-tokens"], out)
    expect_fail(base + ["--max-new-tokens", "-1"], 2, ["--max-new-tokens"], out)
    expect_fail(base + ["--synthetic-seed", "-3"], 2, ["--synthetic-seed"], out)
    expect_fail(base + ["--seed", "9223372036854775808"], 2, ["--seed 9223372036854775808", "2^63 - 1"], out)
    expect_fail(base + ["--batch-size"], 2, ["needs a value"], out)
    expect_fail(base + ["--backend", "gpu"], 2, ["--backend gpu", "cpu or cuda"], out)
    expect_fail(base + ["--cuda-gemm", "fp8"], 2, ["--cuda-gemm fp8", "bf16, bf16x2 or f32"], out)
    expect_fail(base + ["--gpu-direct", "yes"], 2, ["--gpu-direct yes", "auto, on or off"], out)
    # --cuda-tune is checked in every build (with or without CUDA)
    expect_fail(base + ["--cuda-tune", "gemv-max-tokens=99"], 2, ["--cuda-tune gemv-max-tokens=99", "from 0 to 64"],
                out)
    expect_fail(base + ["--cuda-tune", "mma-max-tokens=0,turbo=on"], 2, ["unknown setting 'turbo'",
                                                                       "gemv-max-tokens"], out)
    expect_fail(base + ["--cuda-tune", "moe-grouping=gpu"], 2, ["moe-grouping=device or host"], out)
    expect_fail(base + ["--cuda-tune", "panel-mib=8,"], 2, ["ends with a comma"], out)
    expect_fail(base + ["--cuda-tune", ""], 2, ["--cuda-tune: empty"], out)
    # bounds: threads, and sequence slots (micro-batches x batch size, which once overflowed)
    expect_fail(base + ["--threads", "65536"], 2, ["--threads 65536", "at most 4096"], out)
    expect_fail(base + ["--micro-batches", "536870912", "--batch-size", "8"], 2,
                ["536870912 micro-batches x --batch-size 8 = 4294967296 sequence slots", "at most 65536"], out)
    expect_fail(base + ["--batch-size", "70000"], 2, ["--batch-size 70000", "at most 65536"], out)
    expect_fail(base + ["--micro-batches", "1000", "--batch-size", "1000000"], 2, ["sequence slots"], out)
    # empty file names
    for opt in ("--output", "--input", "--trace", "--tokenizer"):
        args = tiny("score", inp, out)
        if opt in args:
            args[args.index(opt) + 1] = ""
        else:
            args += [opt, ""]
        expect_fail(args, 2, [opt, "file name is empty"], out)
    # an option with a value given twice: which job was meant is not clear
    expect_fail(base + ["--output", out + ".2"], 2, ["--output is given twice", out, out + ".2", "give it once"], out)
    expect_fail(base + ["--seed", "1", "--seed=2"], 2, ["--seed is given twice (1, then 2)"], out)
    expect_fail(base + ["--shard", "0/3", "--shard", "1/3"], 2, ["--shard is given twice (0/3, then 1/3)"], out)
    # options are named in full: a prefix would pass a script's check of
    # option names (grok1-job.sh refuses --output in GROK1_ARGS)
    expect_fail([a if a != "--output" else "--outp" for a in base], 2,
                ["--outp: write the option in full, --output"], out)
    expect_fail(base + ["--resu"], 2, ["--resu: write the option in full, --resume"], out)
    expect_fail(["--synthetic", "tiny", "--mode", "score", "--input", inp], 2, ["--output"], out)
    expect_fail(["--synthetic", "tiny", "--input", inp, "--output", out], 2, ["--mode"], out)
    expect_fail(tiny("rank", inp, out), 2, ["mode", "rank"], out)
    expect_fail(["--mode", "score", "--input", inp, "--output", out], 2, ["--checkpoint", "--synthetic"], out)
    expect_fail(base + ["--checkpoint", "x.h5"], 2, ["exactly one"], out)
    expect_fail(tiny("generate", inp, out, "--dump-logits", os.path.join(d, "l.h5")), 2,
                ["--dump-logits", "score"], out)
    if not ARGS.hdf5:
        expect_fail(["--checkpoint", "x.h5", "--mode", "score", "--input", inp, "--output", out], 2,
                    ["without HDF5"], out)
        expect_fail(base + ["--dump-logits", os.path.join(d, "l.h5")], 2, ["without HDF5"], out)
    # a bad preset and a missing input file are not command-line syntax: exit 1
    expect_fail(["--synthetic", "huge", "--mode", "score", "--input", inp, "--output", out], 1, ["huge"], out)
    expect_fail(tiny("score", os.path.join(d, "nope.jsonl"), out), 1, ["nope.jsonl"], out)


BAD = [  # (mode, line 3 of the input, words the message must contain)
    ("score", '{"id": 1, "prompt_ids": [1, 2', ["line 3", "JSON"]),
    ("score", '\ufeff{"id": 1, "prompt_ids": [1, 2]}', ["line 3", "byte-order mark", "EF BB BF"]),
    ("score", '[1, 2, 3]', ["line 3", "object"]),
    ("score", '"hello"', ["line 3", "object"]),
    ("score", '{"prompt_ids": [1, 2]}', ["line 3", "missing", '"id"']),
    ("score", '{"id": null, "prompt_ids": [1, 2]}', ["line 3", '"id"', "string or a number"]),
    ("score", '{"id": [1], "prompt_ids": [1, 2]}', ["line 3", '"id"', "string or a number"]),
    ("score", '{"id": true, "prompt_ids": [1, 2]}', ["line 3", '"id"']),
    ("score", '{"id": 12345678901234567890, "prompt_ids": [1, 2]}', ["line 3", "column 27", "2^63", "as a string"]),
    ("score", '{"id": 3}', ["line 3", "missing", "prompt_ids"]),
    ("score", '{"id": 3, "prompt_ids": []}', ["line 3", "prompt_ids", "empty"]),
    ("score", '{"id": 3, "prompt_ids": 5}', ["line 3", "prompt_ids", "list"]),
    ("score", '{"id": 3, "prompt_ids": [1, 2.5]}', ["line 3", "prompt_ids[1]", "integer"]),
    ("score", '{"id": 3, "prompt_ids": [1, "7"]}', ["line 3", "prompt_ids[1]", "integer"]),
    ("score", '{"id": 3, "prompt_ids": [1, 512]}', ["line 3", "prompt_ids[1]", "512", "out of range", "512 tokens"]),
    ("score", '{"id": 3, "prompt_ids": [-1]}', ["line 3", "prompt_ids[0]", "-1", "out of range"]),
    ("score", json.dumps({"id": 3, "prompt_ids": [1] * (MAX_SEQ + 2)}),
     ["line 3", "258 tokens", "is 257", "max_seq_len 256", "only predicted"]),
    ("generate", json.dumps({"id": 3, "prompt_ids": [1] * MAX_SEQ}), ["line 3", "256 tokens", "max_seq_len 256"]),
    ("generate", '{"id": 3, "prompt_ids": [1], "max_new_tokens": -2}', ["line 3", "max_new_tokens", "negative"]),
    ("generate", '{"id": 3, "prompt_ids": [1], "max_new_tokens": 1.5}', ["line 3", "max_new_tokens", "integer"]),
    ("generate", '{"id": 3, "prompt_ids": [1], "frequency_penalty": 0}', ["line 3", "unknown field", "frequency_penalty"]),
    ("score", '{"id": 3, "prompt_ids": [1, 2], "temperature": 0}', ["line 3", "unknown field", "temperature"]),
    ("generate", '{"id": 3, "prompt_ids": [1], "temperature": -1}', ["line 3", "temperature"]),
    ("generate", '{"id": 3, "prompt_ids": [1], "top_p": 0}', ["line 3", "top_p"]),
    ("generate", '{"id": 3, "prompt_ids": [1], "top_k": -1}', ["line 3", "top_k"]),
    ("generate", '{"id": 3, "prompt_ids": [1], "seed": -1}', ["line 3", "seed"]),
    ("generate", '{"id": 3, "prompt_ids": [1], "ignore_eos": "yes"}', ["line 3", "ignore_eos"]),
    ("generate", '{"id": 3, "prompt_ids": [1], "top_logprobs": 1000}', ["line 3", "top_logprobs"]),
    ("generate", '{"id": 3, "prompt_ids": [1], "stop": [""]}', ["line 3", "stop"]),
    ("generate", '{"id": 3, "prompt_ids": [1], "stop": ["x"]}', ["line 3", "stop", "--tokenizer"]),
    ("generate", '{"id": 3, "prompt": "hello"}', ["line 3", "prompt", "--tokenizer"]),
    ("generate", '{"id": 3, "prompt": "hello", "continuation": " x"}', ["line 3", "unknown field", "continuation"]),
    ("score", '{"id": 3, "prompt_ids": [1], "max_new_tokens": 4}', ["line 3", "unknown field", "max_new_tokens"]),
    ("score", '{"id": 3, "id": 4, "prompt_ids": [1]}', ["line 3", "JSON"]),
    ("score", '{"id": 3, "prompt_ids": [1], "continuation_ids": []}', ["line 3", "continuation_ids", "empty"]),
    ("score", '{"id": 3, "prompt_ids": [1], "continuation_ids": [512]}',
     ["line 3", "continuation_ids[0]", "512", "out of range"]),
    ("score", '{"id": 3, "prompt_ids": [1], "continuation_ids": 7}', ["line 3", "continuation_ids", "list"]),
    ("score", '{"id": 3, "continuation_ids": [7]}', ["line 3", "missing", "prompt_ids"]),
    ("score", '{"id": 3, "prompt": "hi", "continuation_ids": [7]}', ["line 3", "continuation_ids", "prompt_ids"]),
    ("score", '{"id": 3, "prompt_ids": [1], "continuation": " x"}', ["line 3", "continuation_ids"]),
    ("generate", '{"id": 3, "prompt_ids": [1], "continuation_ids": [7]}', ["line 3", "unknown field", "continuation_ids"]),
    # the pad id (0): the release masks it out of attention, the engine does not (docs/ENGINE.md)
    ("score", '{"id": 3, "prompt_ids": [5, 6, 7, 8, 9, 0]}',
     ["input line 3: prompt_ids[5] = 0 is the pad id: the released model masks pad tokens out of attention and "
      "this runner does not, so it refuses them (remove the padding)"]),
    ("generate", '{"id": 3, "prompt_ids": [0, 0, 5]}', ["input line 3: prompt_ids[0] = 0 is the pad id"]),
    ("score", '{"id": 3, "prompt_ids": [1], "continuation_ids": [4, 0]}',
     ["input line 3: continuation_ids[1] = 0 is the pad id", "remove the padding"]),
]


def case_bad_requests(d):
    out = os.path.join(d, "out.jsonl")
    for i, (mode, line, words) in enumerate(BAD):
        inp = os.path.join(d, f"in{i}.jsonl")
        write_jsonl(inp, ['{"id": "ok", "prompt_ids": [5, 6, 7]}', "   ", line, '{"id": "after", "prompt_ids": [1]}'])
        expect_fail(tiny(mode, inp, out), 1, words, out)
        # every kind of refusal keeps the result of the request before it (read ahead with it)
        kept = read_jsonl(out + ".partial") if os.path.exists(out + ".partial") else []
        check([r["id"] for r in kept] == ["ok"], f"{line[:60]!r}: kept {[r['id'] for r in kept]}, expected ['ok']")
        for f in (out + ".partial", out + ".meta.json"):
            os.remove(f)


def case_no_clobber(d):
    """A run refused before it starts leaves a pre-existing OUT and its meta
    file alone; one that starts replaces them (OUT and OUT.meta.json always
    describe one run: a merge of an old OUT under a new meta file gave old
    results for edited requests), and a failure keeps OUT.partial."""
    inp, out = os.path.join(d, "in.jsonl"), os.path.join(d, "out.jsonl")
    with open(out, "w") as f:
        f.write("precious\n")
    with open(out + ".meta.json", "w") as f:
        f.write("{}\n")
    write_jsonl(inp, [{"id": i, "prompt_ids": [1, 2]} for i in range(4)])
    rc, _, se = run(tiny("score", inp, out, "--batch-size", "0"))
    check(rc == 2 and open(out).read() == "precious\n" and open(out + ".meta.json").read() == "{}\n",
          f"a refused command line touched OUT or its meta file: exit {rc}: {se.strip()}")
    rc, _, se = run(tiny("score", inp, out, "--batch-size", "1"), env={"GROK1_FAULT": "0:3"})
    check(rc == 1, f"expected exit 1, got {rc}: {se}")
    check(not os.path.exists(out) and f"removed {out}, an earlier run's output" in se,
          f"a run that started left the earlier OUT beside its own meta file: {se.strip()}")
    meta = json.load(open(out + ".meta.json"))
    check(meta.get("format") == "grok1-run-meta" and "fnv1a64" in meta.get("input", {}),
          f"the meta file is not this run's: {meta}")
    check(os.path.exists(out + ".partial"), "OUT.partial not left for inspection")
    # and a good run replaces it
    write_jsonl(inp, [{"id": 1, "prompt_ids": [1, 2]}])
    expect_ok(tiny("score", inp, out))
    check(len(read_jsonl(out)) == 1, "good run did not replace the output")
    check(not os.path.exists(out + ".partial"), "OUT.partial remains after success")


def case_take_back(d):
    """A fresh run that stops before its first result leaves no file behind;
    one with results, a resume, or an OUT already there keeps OUT.partial."""
    inp, out, lg = os.path.join(d, "in.jsonl"), os.path.join(d, "out.jsonl"), os.path.join(d, "l.h5")
    made = (out, out + ".partial", out + ".meta.json", out + ".lock", lg, lg + ".partial")

    def left():
        return [os.path.basename(p) for p in made if os.path.exists(p)]

    write_jsonl(inp, [{"id": i, "prompt_ids": [(5 * i + j) % (V - 1) + 1 for j in range(3 + i % 4)]}
                      for i in range(12)])
    first_step = {"GROK1_FAULT": "0:1"}  # rank 0 fails at its first step: no result yet
    dump = ["--dump-logits", lg] if ARGS.hdf5 else []
    for extra in ([], dump) if dump else ([],):
        rc, _, se = run(tiny("score", inp, out, "--batch-size", "2", *extra), env=first_step)
        check(rc == 1 and "grok1-run: error:" in se, f"a fault at the first step: exit {rc}: {se.strip()}")
        check(not left(), f"a fresh run that failed before its first result left {left()}")
    bad_first = os.path.join(d, "bad.jsonl")
    write_jsonl(bad_first, ['{"id": 0, "prompt_ids": [1, 99999]}', {"id": 1, "prompt_ids": [1, 2]}])
    expect_fail(tiny("score", bad_first, out), 1, ["99999"], out)
    check(not left(), f"a fresh run refusing its first request left {left()}")
    # results written, then a failure: OUT.partial keeps them, and its meta file
    rc, _, se = run(tiny("score", inp, out, "--batch-size", "1"), env={"GROK1_FAULT": "0:6"})
    kept = read_jsonl(out + ".partial") if os.path.exists(out + ".partial") else []
    check(rc == 1 and kept and os.path.exists(out + ".meta.json") and not os.path.exists(out),
          f"a failure after results: exit {rc}, {len(kept)} kept, files {left()}")
    # a resume that fails before a new result keeps what it resumed
    rc, _, se = run(tiny("score", inp, out, "--batch-size", "1", "--resume"), env=first_step)
    check(rc == 1 and read_jsonl(out + ".partial") == kept and os.path.exists(out + ".meta.json"),
          f"a failed resume: exit {rc}, files {left()}")
    expect_ok(tiny("score", inp, out, "--batch-size", "1", "--resume"))
    want = read_jsonl(out)
    check(len(want) == 12 and left() == ["out.jsonl", "out.jsonl.meta.json"], f"the resume finished with {left()}")
    # with a finished OUT there, a fresh run replaces it from its start, so
    # one that fails before its first result leaves nothing: a resume
    # starts afresh
    with open(out, "w") as f:
        f.write("precious\n")
    rc, _, se = run(tiny("score", inp, out, "--batch-size", "1"), env=first_step)
    check(rc == 1 and not left(), f"a failure beside an earlier OUT: exit {rc}, files {left()}")
    expect_ok(tiny("score", inp, out, "--batch-size", "1", "--resume"))
    check(read_jsonl(out) == want and not os.path.exists(out + ".partial"),
          "the resume after a failed run that replaced an OUT did not run every request")
    # a run killed (SIGKILL: nothing taken back) after making OUT.partial and
    # before its meta file was written leaves an empty OUT.partial alone: the
    # resume starts afresh (it refused for the missing meta file, and a
    # requeued job failed there; ops_dump_sigkill hit that moment once)
    for f in (out, out + ".meta.json"):
        os.remove(f)
    open(out + ".partial", "w").close()
    expect_ok(tiny("score", inp, out, "--batch-size", "1", "--resume"))
    check(read_jsonl(out) == want and left() == ["out.jsonl", "out.jsonl.meta.json"],
          f"the resume of an empty OUT.partial without its meta file: files {left()}")


def dump_stale_files(d):
    """in.jsonl, bad.jsonl (line 7 refused), other.jsonl (the same ids, other
    prompts) of 10 requests, and the uninterrupted run of in.jsonl (ref.jsonl,
    ref.h5)."""
    inp, bad, other = (os.path.join(d, n) for n in ("in.jsonl", "bad.jsonl", "other.jsonl"))
    rows = [{"id": f"q{i}", "prompt_ids": [(7 * i + 3 * j + 1) % V for j in range(2 + i % 5)]} for i in range(10)]
    write_jsonl(inp, rows)
    write_jsonl(bad, rows[:6] + ['{"id": "q6", "prompt_ids": [99999]}'] + rows[7:])
    write_jsonl(other, [dict(r, prompt_ids=[(t + 11) % V for t in r["prompt_ids"]]) for r in rows])
    ref, ref_lg = os.path.join(d, "ref.jsonl"), os.path.join(d, "ref.h5")
    expect_ok(tiny("score", inp, ref, "--dump-logits", ref_lg))
    return inp, bad, other, ref, ref_lg


def same_dump(a, b):
    import h5py
    import numpy as np
    with h5py.File(a, "r") as f, h5py.File(b, "r") as g:
        return sorted(f["logits"]) == sorted(g["logits"]) and \
            all(np.array_equal(f["logits"][k][...], g["logits"][k][...]) for k in g["logits"])


def case_dump_replaced(d):
    """A fresh run removes a finished logits dump of an earlier run at its
    start, as it does an earlier OUT: it stayed, looking finished, beside
    the new meta file naming it (and beside DUMP.partial) when the new run
    failed or was stopped."""
    if not ARGS.hdf5:
        return SKIP
    inp, bad, other, ref, ref_lg = dump_stale_files(d)
    out, lg = os.path.join(d, "out.jsonl"), os.path.join(d, "l.h5")
    expect_ok(tiny("score", other, out, "--dump-logits", lg))
    rc, _, se = run(tiny("score", bad, out, "--dump-logits", lg))
    check(rc == 1 and len(read_jsonl(out + ".partial")) == 6, f"the run did not stop at line 7: exit {rc}: {se}")
    check(not os.path.exists(lg) and f"removed {lg}, an earlier run's logits dump" in se,
          f"a fresh run left the earlier finished dump beside its own meta file and {lg}.partial: {se.strip()}")
    check(os.path.exists(lg + ".partial"), "the failed run did not keep its dump")
    # so does a --resume with nothing to resume (no OUT, no OUT.partial), as batch scripts run it
    expect_ok(tiny("score", other, out, "--dump-logits", lg))
    os.remove(out)
    os.remove(out + ".meta.json")
    rc, _, se = run(tiny("score", bad, out, "--dump-logits", lg, "--resume"))
    check(rc == 1 and not os.path.exists(lg) and f"removed {lg}, an earlier run's logits dump" in se,
          f"a --resume that started afresh left the earlier finished dump: exit {rc}: {se.strip()}")
    # stopped before its first result: nothing of either run stays
    expect_ok(tiny("score", other, out, "--dump-logits", lg))
    rc, _, se = run(tiny("score", inp, out, "--dump-logits", lg, "--batch-size", "2"), env={"GROK1_FAULT": "0:1"})
    left = [p for p in (out, out + ".partial", lg, lg + ".partial") if os.path.exists(p)]
    check(rc == 1 and not left, f"a fresh run that failed before its first result left {left}: exit {rc}: {se}")
    # a refused command line leaves the dump alone
    expect_ok(tiny("score", other, out, "--dump-logits", lg))
    rc, _, se = run(tiny("score", inp, out, "--dump-logits", lg, "--batch-size", "0"))
    check(rc == 2 and os.path.exists(lg), f"a refused command line removed the dump: exit {rc}: {se}")
    expect_ok(tiny("score", inp, out, "--dump-logits", lg))
    check(open(out).read() == open(ref).read() and same_dump(lg, ref_lg), "the run did not replace the dump")


def case_dump_foreign(d):
    """A resume refuses a finished logits dump that does not hold the kept
    results' logits, and leaves it as it is: a relative --dump-logits
    resumed from another folder took that folder's dump of the same name
    (another output's), set it aside as damaged and wrote this run's logits
    under its name; a finished file that is no dump was set aside too."""
    if not ARGS.hdf5:
        return SKIP
    inp, bad, other, ref, ref_lg = dump_stale_files(d)
    a_dir, b_dir = os.path.join(d, "a"), os.path.join(d, "b")
    os.mkdir(a_dir)
    os.mkdir(b_dir)
    out, lg, b_lg = os.path.join(a_dir, "out.jsonl"), os.path.join(a_dir, "l.h5"), os.path.join(b_dir, "l.h5")

    # b: a finished run's l.h5 of other requests (the same model and settings)
    rc, se = score_in(b_dir, other, os.path.join(b_dir, "o.jsonl"), "--dump-logits", "l.h5")
    check(rc == 0, f"the run in b failed: {se}")
    before = open(b_lg, "rb").read()
    rc, se = score_in(a_dir, bad, out, "--dump-logits", "l.h5")
    check(rc == 1 and len(read_jsonl(out + ".partial")) == 6, f"the run in a did not stop at line 7: exit {rc}: {se}")
    # (refused since for being another file than the one the meta file
    # records: cli_dump_resume_elsewhere)
    rc, se = score_in(b_dir, inp, out, "--dump-logits", "l.h5", "--resume")
    check(rc == 1 and "resume from the folder the run started in" in se,
          f"a resume from another folder took that folder's dump: exit {rc}: {se.strip()}")
    check(sorted(os.listdir(b_dir)) == ["l.h5", "o.jsonl", "o.jsonl.meta.json"] and open(b_lg, "rb").read() == before,
          f"the refused resume changed b's files: {sorted(os.listdir(b_dir))}")
    check(len(read_jsonl(out + ".partial")) == 6 and os.path.exists(lg + ".partial"),
          "the refused resume changed the output or its dump")
    # another output's finished dump where this one's should be: refused by its contents
    os.rename(lg + ".partial", lg + ".saved")
    shutil.copy(b_lg, lg)
    rc, se = score_in(a_dir, inp, out, "--dump-logits", "l.h5", "--resume")
    check(rc == 1 and "is a finished logits dump that is not the one of the results kept" in se and
          open(lg, "rb").read() == before and not os.path.exists(lg + ".partial.damaged"),
          f"a resume took another output's finished dump in its place: exit {rc}: {se.strip()}")
    os.remove(lg)
    os.rename(lg + ".saved", lg + ".partial")
    # a finished file that is no dump at all, where the dump's .partial is gone
    os.rename(lg + ".partial", lg + ".saved")
    with open(lg, "w") as f:
        f.write("not hdf5\n")
    rc, se = score_in(a_dir, inp, out, "--dump-logits", "l.h5", "--resume")
    check(rc == 1 and "is a finished file" in se and open(lg).read() == "not hdf5\n" and
          not os.path.exists(lg + ".partial.damaged"), f"a finished non-dump was set aside: exit {rc}: {se.strip()}")
    os.remove(lg)
    os.rename(lg + ".saved", lg + ".partial")
    # from its own folder it continues, to the uninterrupted run's results
    rc, se = score_in(a_dir, inp, out, "--dump-logits", "l.h5", "--resume")
    check(rc == 0 and "warning" not in se, f"the resume from a failed: exit {rc}: {se}")
    check(open(out).read() == open(ref).read() and same_dump(lg, ref_lg),
          "the resume differs from the uninterrupted run")


def case_dump_resume_elsewhere(d):
    """OUT.meta.json records the dump's canonical name and its place
    relative to the output; a resume whose --dump-logits is another file is
    refused, naming both, unless it sits where the recorded one sat
    relative to the output (the folder copied or moved whole). A relative
    --dump-logits resumed from another folder holding a finished dump of
    the same requests took that one over (renamed it to .partial, continued
    it, renamed it back) and orphaned the output's own DUMP.partial, exit 0."""
    if not ARGS.hdf5:
        return SKIP
    inp, bad, other, ref, ref_lg = dump_stale_files(d)
    a_dir, b_dir, c_dir = (os.path.join(d, x) for x in "abc")
    os.mkdir(a_dir)
    os.mkdir(b_dir)
    out, lg, b_lg = os.path.join(a_dir, "out.jsonl"), os.path.join(a_dir, "l.h5"), os.path.join(b_dir, "l.h5")

    def settings(meta):
        with open(meta) as f:
            return json.load(f)["settings"]

    # b: a finished run of the same requests, its l.h5 beside it
    rc, se = score_in(b_dir, inp, os.path.join(b_dir, "o.jsonl"), "--dump-logits", "l.h5")
    check(rc == 0, f"the run in b failed: {se}")
    b_before = {x: open(os.path.join(b_dir, x), "rb").read() for x in os.listdir(b_dir)}
    rc, se = score_in(a_dir, bad, out, "--dump-logits", "l.h5")
    check(rc == 1 and len(read_jsonl(out + ".partial")) == 6, f"the run in a did not stop at line 7: exit {rc}: {se}")
    a_before = {x: open(os.path.join(a_dir, x), "rb").read() for x in os.listdir(a_dir)}
    rc, se = score_in(b_dir, inp, out, "--dump-logits", "l.h5", "--resume")
    check(rc == 1 and os.path.realpath(b_lg) in se and os.path.realpath(lg) in se and
          "resume from the folder the run started in" in se,
          f"a resume from another folder took that folder's dump of the same requests: exit {rc}: {se.strip()}")
    s = settings(out + ".meta.json")
    check(s.get("dump_logits") == "l.h5" and s.get("dump_logits_path") == os.path.realpath(lg) and
          s.get("dump_logits_from_output") == "l.h5", f"the meta file does not record where the dump is: {s}")
    check({x: open(os.path.join(b_dir, x), "rb").read() for x in os.listdir(b_dir)} == b_before,
          f"the refused resume changed b's files: {sorted(os.listdir(b_dir))}")
    check({x: open(os.path.join(a_dir, x), "rb").read() for x in os.listdir(a_dir)} == a_before,
          f"the refused resume changed a's files: {sorted(os.listdir(a_dir))}")
    # the whole folder copied: resumed there with the same relative names,
    # the copy continues its own dump (a's stays as it was)
    shutil.copytree(a_dir, c_dir)
    c_out = os.path.join(c_dir, "out.jsonl")
    rc, se = score_in(c_dir, inp, "out.jsonl", "--dump-logits", "l.h5", "--resume")
    check(rc == 0 and "warning" not in se, f"the resume of a copied folder failed: exit {rc}: {se}")
    check(open(c_out).read() == open(ref).read() and same_dump(os.path.join(c_dir, "l.h5"), ref_lg),
          "the resume of the copied folder differs from the uninterrupted run")
    check(settings(c_out + ".meta.json").get("dump_logits_path") == os.path.realpath(os.path.join(c_dir, "l.h5")),
          "the resumed copy's meta file does not record its own dump")
    check({x: open(os.path.join(a_dir, x), "rb").read() for x in os.listdir(a_dir)} == a_before,
          "the resume of the copy changed the original folder")
    # from b, given the dump's path: the file counts, not the name as given
    rc, se = score_in(b_dir, inp, out, "--dump-logits", lg, "--resume")
    check(rc == 0 and "warning" not in se, f"the resume given the dump's path failed: exit {rc}: {se}")
    check(open(out).read() == open(ref).read() and same_dump(lg, ref_lg) and not os.path.exists(lg + ".partial"),
          "the resume given the dump's path differs from the uninterrupted run")
    check({x: open(os.path.join(b_dir, x), "rb").read() for x in os.listdir(b_dir)} == b_before,
          "the resume given the dump's path changed b's files")
    # pointed at another output's dump by its path: refused, naming both
    rc, se = score_in(a_dir, inp, out, "--dump-logits", b_lg, "--resume")
    check(rc == 1 and os.path.realpath(b_lg) in se and os.path.realpath(lg) in se,
          f"a resume pointed at another output's dump: exit {rc}: {se.strip()}")
    # a meta file from before the record resumes as before (by the name as given)
    shutil.rmtree(c_dir)
    shutil.copytree(a_dir, c_dir)
    os.rename(c_out, c_out + ".partial")
    os.rename(os.path.join(c_dir, "l.h5"), os.path.join(c_dir, "l.h5.partial"))
    with open(c_out + ".meta.json") as f:
        meta = json.load(f)
    for k in ("dump_logits_path", "dump_logits_from_output"):
        meta["settings"].pop(k)
    meta["settings"]["dump_logits"] = "l.h5"  # (as the first run gave it: the last resume gave the path)
    with open(c_out + ".meta.json", "w") as f:
        json.dump(meta, f)
    rc, se = score_in(c_dir, inp, "out.jsonl", "--dump-logits", "l.h5", "--resume")
    check(rc == 0 and "nothing left to run" in se and open(c_out).read() == open(ref).read(),
          f"a meta file without dump_logits_path: exit {rc}: {se}")


def merge_dump_elsewhere(d):
    """grok1-merge finds each shard's dump by the canonical name its meta
    file records, and checks each dataset's tokens against its request (the
    count the shard's result gives; the ids an input of prompt_ids gives).
    A merge run from another folder read that folder's dumps of the same
    relative names and, comparing only ids, joined another input's logits
    with this input's results, exit 0."""
    import h5py
    rows = [{"id": f"q{i}", "prompt_ids": [(5 * i + 7 * j + 3) % V for j in range(1 + i % 4)]} for i in range(7)]
    edited = [dict(r, prompt_ids=[(t + 1) % V for t in r["prompt_ids"]]) for r in rows]
    edited[3]["prompt_ids"] = edited[3]["prompt_ids"] + [9]
    a_dir, b_dir = os.path.join(d, "ma"), os.path.join(d, "mb")
    os.mkdir(a_dir)
    os.mkdir(b_dir)
    inp, einp = os.path.join(a_dir, "in.jsonl"), os.path.join(b_dir, "in.jsonl")
    write_jsonl(inp, rows)
    write_jsonl(einp, edited)

    def in_dir(where, *args):
        p = subprocess.run([ARGS.run] + tiny("score", *args), capture_output=True, text=True, timeout=60, cwd=where)
        check(p.returncode == 0, f"grok1-run in {where}: {p.stderr}")

    for k in range(2):  # the shards in a; b's dumps of the same names from the edited requests
        in_dir(a_dir, "in.jsonl", f"s{k}.jsonl", "--shard", f"{k}/2", "--dump-logits", f"d{k}.h5")
        in_dir(b_dir, "in.jsonl", f"s{k}.jsonl", "--shard", f"{k}/2", "--dump-logits", f"d{k}.h5")
    in_dir(a_dir, "in.jsonl", "ref.jsonl", "--dump-logits", os.path.join(d, "ref.h5"))
    shards = [os.path.join(a_dir, f"s{k}.jsonl") for k in range(2)]
    out, D = os.path.join(d, "m.jsonl"), os.path.join(d, "m.h5")

    def merge(*extra, cwd=b_dir):
        p = subprocess.run([ARGS.merge, "--input", inp, "--output", out, "--dump-logits", D] + shards + list(extra),
                           capture_output=True, text=True, timeout=60, cwd=cwd)
        return p.returncode, p.stderr

    # from b: a's dumps all the same (their recorded paths)
    rc, se = merge()
    check(rc == 0, f"a merge from another folder failed: {rc} {se}")
    check(open(out).read() == open(os.path.join(a_dir, "ref.jsonl")).read() and
          dump_differs(D, os.path.join(d, "ref.h5")) is None,
          "a merge from another folder joined that folder's dumps, another input's logits")
    with open(out + ".meta.json") as f:
        s = json.load(f)["settings"]
    check(s.get("dump_logits_path") == os.path.realpath(D) and s.get("dump_logits_from_output") == "m.h5",
          f"the merged meta does not record the dump as a run does: {s}")
    for p in (out, out + ".meta.json", D):
        os.remove(p)
    # a shard's dump replaced by one of the edited requests (same ids and
    # run record): refused by its tokens, naming the shard, request and dump
    d1 = os.path.join(a_dir, "d1.h5")
    os.rename(d1, d1 + ".keep")
    shutil.copy(os.path.join(b_dir, "d1.h5"), d1)
    rc, se = merge()
    check(rc == 1 and d1 in se and "shard 1/2" in se and "logits/1 " in se and 'id "q1"' in se and
          "other tokens" in se, f"a dump of edited requests was joined: {rc} {se}")
    check(not os.path.exists(out) and not os.path.exists(D), "a refused merge left its output")
    # another count of tokens than the shard's result says (a text prompt's
    # check, which has no ids to compare): the request of 4 + 1 tokens
    os.remove(d1)
    shutil.copy(d1 + ".keep", d1)
    with h5py.File(d1, "r+") as f, h5py.File(os.path.join(b_dir, "d1.h5"), "r") as g:
        del f["logits"]["3"]
        g.copy(g["logits"]["3"], f["logits"], "3")
    rc, se = merge()
    check(rc == 1 and "logits/3 " in se and "prompt_tokens" in se and "shard 1/2" in se,
          f"a dataset of another token count was joined: {rc} {se}")
    os.remove(d1)
    os.rename(d1 + ".keep", d1)
    # the shards' folder moved whole: each dump found at its place from its shard
    moved = a_dir + "-moved"
    os.rename(a_dir, moved)
    p = subprocess.run([ARGS.merge, "--input", os.path.join(moved, "in.jsonl"), "--output", out, "--dump-logits", D] +
                       [os.path.join(moved, f"s{k}.jsonl") for k in range(2)], capture_output=True, text=True,
                       timeout=60, cwd=b_dir)
    check(p.returncode == 0 and dump_differs(D, os.path.join(d, "ref.h5")) is None,
          f"a merge of shards moved with their dumps: {p.returncode} {p.stderr}")
    os.rename(moved, a_dir)
    for p in (out, out + ".meta.json", D):
        os.remove(p)
    # a meta file from before the record: the name as given, from the current folder
    for k in range(2):
        with open(shards[k] + ".meta.json") as f:
            meta = json.load(f)
        for x in ("dump_logits_path", "dump_logits_from_output"):
            meta["settings"].pop(x)
        with open(shards[k] + ".meta.json", "w") as f:
            json.dump(meta, f)
    rc, se = merge(cwd=a_dir)
    check(rc == 0 and dump_differs(D, os.path.join(d, "ref.h5")) is None, f"older meta files: {rc} {se}")


def case_merge_dump_elsewhere(d):
    if not ARGS.hdf5 or not ARGS.merge:
        return SKIP
    merge_dump_elsewhere(d)


def case_file_clash(d):
    """An output that names an input (or another output, or a directory) is
    refused with exit 2 before anything is written; the input is untouched."""
    inp, out = os.path.join(d, "in.jsonl"), os.path.join(d, "out.jsonl")
    write_jsonl(inp, [{"id": 1, "prompt_ids": [1, 2]}])
    with open(inp) as f:
        before = f.read()
    same = os.path.join(d, ".", "in.jsonl")  # another spelling of the input
    expect_fail(tiny("score", inp, same), 2, ["--output", "is the --input file"])
    expect_fail(tiny("generate", inp, inp, "--resume"), 2, ["--output", "--input file"])
    # OUT.partial / OUT.meta.json are outputs too
    expect_fail(tiny("score", inp + ".partial", inp), 2, ["would write", ".partial", "--input"])
    expect_fail(tiny("score", inp, out, "--trace", out + ".meta.json"), 2, ["both write", ".meta.json", "--trace"], out)
    expect_fail(tiny("score", inp, out, "--trace", out), 2, ["--output", "--trace", "same file"], out)
    expect_fail(tiny("score", inp, out, "--trace", inp), 2, ["--trace", "is the --input file"], out)
    # the files written first and renamed: OUT.meta.json.tmp; the trace's
    # is TRACE.tmp.PID.RANDOM, a name of its own (TRACE.tmp was refused
    # here as an input's name; now nothing written can be an input)
    tmp_in = os.path.join(d, "q.tmp")
    write_jsonl(tmp_in, [{"id": 1, "prompt_ids": [1, 2]}])
    expect_ok(tiny("score", tmp_in, out, "--trace", os.path.join(d, "q")))
    check(open(tmp_in).read() == before and json.load(open(os.path.join(d, "q")))["traceEvents"],
          "--trace q beside an input q.tmp: the input was changed, or no trace")
    os.remove(out)
    meta_in = os.path.join(d, "o2.jsonl.meta.json.tmp")
    write_jsonl(meta_in, [{"id": 1, "prompt_ids": [1, 2]}])
    expect_fail(tiny("score", meta_in, os.path.join(d, "o2.jsonl")), 2,
                ["would write", "meta.json.tmp", "--input file"])
    check(os.path.exists(tmp_in) and os.path.exists(meta_in), "a refused run removed its input")
    if ARGS.hdf5:
        ck = os.path.join(d, "ck.h5")
        with open(ck, "wb") as f:
            f.write(b"placeholder")
        expect_fail(["--checkpoint", ck, "--mode", "score", "--input", inp, "--output", out, "--dump-logits", ck], 2,
                    ["--dump-logits", "--checkpoint file"], out)
        # the dump's partial file is an output too
        expect_fail(["--checkpoint", ck, "--mode", "score", "--input", inp, "--output", out, "--dump-logits",
                     os.path.join(d, "l.h5"), "--trace", os.path.join(d, "l.h5.partial")], 2, ["both write", "l.h5.partial"], out)
        with open(ck, "rb") as f:
            check(f.read() == b"placeholder", "the checkpoint named by --dump-logits was changed")
    expect_fail(tiny("score", inp, d), 2, ["is a directory"])
    with open(inp) as f:
        check(f.read() == before, "the input file was changed by a refused run")
    check(not os.path.exists(inp + ".meta.json"), "a refused run wrote OUT.meta.json")
    # a run from stdin to stdout has no names to clash
    expect_ok(tiny("score", "-", "-"), stdin=before)
    # the layout refused in one process: exit 2, as with mpirun
    if ARGS.mpi:
        expect_fail(tiny("score", inp, out, "--ep", "3"), 2, ["--ep 3", "1, 2, 4, 8"], out)
        expect_fail(tiny("score", inp, out, "--stages", "2"), 2, ["1 process,", "mpirun -n 2"], out)
    else:
        expect_fail(tiny("score", inp, out, "--stages", "2"), 2, ["needs MPI"], out)


def case_output_stream(d):
    """An output that is not a regular file (a FIFO here; /dev/null alike) is
    written directly, as stdout is: no OUT.partial, meta or lock file, and
    the FIFO stays a FIFO (it was once renamed over: /dev/null became a
    regular file). --resume and --dump-logits on such a file are refused."""
    import threading
    inp, ref = os.path.join(d, "in.jsonl"), os.path.join(d, "ref.jsonl")
    write_jsonl(inp, [{"id": i, "prompt_ids": [1 + i, 2, 3]} for i in range(5)])
    expect_ok(tiny("score", inp, ref))
    fifo = os.path.join(d, "fifo")
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(open(fifo).read()))
    reader.start()
    expect_ok(tiny("score", inp, fifo))
    reader.join(30)
    check(got == [open(ref).read()], f"the FIFO carried {got!r:.200}")
    # a link to a descriptor (/dev/stdout is one) redirected to a regular
    # file: written through, the link kept
    link, dest = os.path.join(d, "so"), os.path.join(d, "dest.txt")
    os.symlink("/proc/self/fd/1", link)
    with open(dest, "w") as f:
        rc = subprocess.run([ARGS.run] + tiny("score", inp, link), stdout=f, stderr=subprocess.PIPE).returncode
    check(rc == 0 and os.path.islink(link) and open(dest).read() == open(ref).read() and
          not [f for f in os.listdir(d) if f.startswith("so.")],
          f"--output through a link to /proc/self/fd/1: exit {rc}, link kept {os.path.islink(link)}")
    import stat
    check(stat.S_ISFIFO(os.stat(fifo).st_mode), "the FIFO was replaced by a regular file")
    left = sorted(f for f in os.listdir(d) if f.startswith("fifo."))
    check(not left, f"files written beside the FIFO: {left}")
    expect_fail(tiny("score", inp, fifo, "--resume"), 2, ["--resume", "not a regular file"])
    if ARGS.hdf5:
        expect_fail(tiny("score", inp, os.path.join(d, "o.jsonl"), "--dump-logits", fifo), 2,
                    ["--dump-logits", "not a regular file"], os.path.join(d, "o.jsonl"))
    check(stat.S_ISFIFO(os.stat(fifo).st_mode) and not [f for f in os.listdir(d) if f.startswith("fifo.")],
          "a refused run touched the FIFO")


def case_output_symlink(d):
    """--output, --dump-logits and --trace named by a symbolic link are
    written to the file the link names (its .partial, .meta.json and .lock
    beside that file), and the links stay links: a run wrote OUT.partial
    (TRACE.tmp) beside the link and renamed it over the link. A dangling link
    names the file it would create, so a resume given the link finds what
    the interrupted run left beside its file; a link whose directory does
    not exist, or a loop, is refused (exit 2) before anything is made."""
    inp, ref = os.path.join(d, "in.jsonl"), os.path.join(d, "ref.jsonl")
    rows = [{"id": i, "prompt_ids": [1 + i, 2, 3]} for i in range(6)]
    write_jsonl(inp, rows)
    expect_ok(tiny("score", inp, ref))
    os.mkdir(os.path.join(d, "real"))
    links = {"out.jsonl": "real/out.jsonl", "t.json": "real/t.json"}
    if ARGS.hdf5:
        links["d.h5"] = "real/d.h5"
    for name, to in links.items():  # relative, and dangling: the files are not made yet
        os.symlink(to, os.path.join(d, name))
    out, tr, dump = (os.path.join(d, n) for n in ("out.jsonl", "t.json", "d.h5"))
    extra = ["--trace", tr] + (["--dump-logits", dump] if ARGS.hdf5 else [])
    beside = sorted(os.listdir(d))

    def links_kept(what):
        for name, to in links.items():
            p = os.path.join(d, name)
            check(os.path.islink(p) and os.readlink(p) == to, f"{what}: {name} is no longer a link to {to}")
        check(sorted(os.listdir(d)) == beside, f"{what}: files made beside the links: "
              f"{sorted(set(os.listdir(d)) - set(beside))}")

    expect_ok(tiny("score", inp, out, *extra))
    links_kept("a fresh run")
    made = sorted(os.listdir(os.path.join(d, "real")))
    want = sorted(["out.jsonl", "out.jsonl.meta.json", "t.json"] + (["d.h5"] if ARGS.hdf5 else []))
    check(made == want, f"the links' directory holds {made}, expected {want}")
    check(open(out).read() == open(ref).read(), "the output through the link differs from a plain file's")
    with open(tr) as f:
        check(json.load(f)["traceEvents"], "the trace through the link is empty")
    # a second run replaces the file the link names (an earlier run's
    # output), not the link
    _, se = expect_ok(tiny("score", inp, out, *extra))
    links_kept("a run over an earlier output")
    check(f"removed {os.path.realpath(out)}, an earlier run's output" in se, f"no word of the removed output: {se}")
    # a run stopped by a bad request leaves OUT.partial beside the file
    # (which it removed: the link dangles); the resume given the link
    # continues it
    write_jsonl(inp, rows[:3] + [dict(rows[3], prompt_ids=[1, V + 5])] + rows[4:])
    expect_fail(tiny("score", inp, out, *extra), 1, ["input line 4"])
    links_kept("a failed run")
    check(os.path.exists(os.path.join(d, "real", "out.jsonl.partial")) and not os.path.exists(out),
          "the failed run's results are not in real/out.jsonl.partial")
    write_jsonl(inp, rows)
    rc, so, se = run(tiny("score", inp, out, "--resume", *extra))
    check(rc == 0 and "resumed after 3 results" in se, f"the resume through the link: exit {rc}: {se.strip()}")
    links_kept("the resume")
    check(open(out).read() == open(ref).read(), "the resumed output differs from an uninterrupted run's")
    made = sorted(os.listdir(os.path.join(d, "real")))
    check(made == want, f"after the resume the links' directory holds {made}, expected {want}")
    # a link through another link: the file at the end of the chain
    os.symlink("out.jsonl", os.path.join(d, "chain.jsonl"))
    expect_ok(tiny("score", inp, os.path.join(d, "chain.jsonl")))
    check(os.path.islink(os.path.join(d, "chain.jsonl")) and os.path.islink(out) and
          open(out).read() == open(ref).read(), "a chain of links was not written through")
    os.remove(os.path.join(d, "chain.jsonl"))
    # a link planted at the meta file's temporary name (OUT.meta.json.tmp) is
    # replaced, not written through: the file it names is left as it was
    pd = os.path.join(d, "plant")
    os.mkdir(pd)
    victim, planted = os.path.join(pd, "victim.txt"), os.path.join(pd, "o.jsonl")
    with open(victim, "w") as f:
        f.write("not yours\n")
    os.symlink(victim, planted + ".meta.json.tmp")
    expect_ok(tiny("score", inp, planted))
    check(open(victim).read() == "not yours\n" and json.load(open(planted + ".meta.json"))["settings"] and
          sorted(os.listdir(pd)) == ["o.jsonl", "o.jsonl.meta.json", "victim.txt"],
          f"a link at OUT.meta.json.tmp was written through: {sorted(os.listdir(pd))}, "
          f"victim {open(victim, 'rb').read()[:20]!r}")
    os.symlink("gone/x", os.path.join(d, "nowhere"))
    # the shards' outputs and a merge's output named by links: grok1-merge
    # finds each shard's meta file beside its file, and writes through
    if ARGS.merge:
        for k in range(2):
            os.symlink(f"real/s{k}.jsonl", os.path.join(d, f"s{k}.jsonl"))
            expect_ok(tiny("score", inp, os.path.join(d, f"s{k}.jsonl"), "--shard", f"{k}/2"))
        os.symlink("real/merged.jsonl", os.path.join(d, "merged.jsonl"))
        p = subprocess.run([ARGS.merge, "--input", inp, "--output", os.path.join(d, "merged.jsonl")] +
                           [os.path.join(d, f"s{k}.jsonl") for k in range(2)], capture_output=True, text=True,
                           timeout=60)
        merged = os.path.join(d, "merged.jsonl")
        check(p.returncode == 0 and os.path.islink(merged) and open(merged).read() == open(ref).read() and
              os.path.exists(os.path.join(d, "real", "merged.jsonl.meta.json")),
              f"grok1-merge through links: exit {p.returncode}: {p.stderr.strip()}")
        p = subprocess.run([ARGS.merge, "--input", inp, "--output", os.path.join(d, "nowhere")] +
                           [os.path.join(d, f"s{k}.jsonl") for k in range(2)], capture_output=True, text=True,
                           timeout=60)
        check(p.returncode == 2 and "--output: " in p.stderr and "does not exist" in p.stderr,
              f"grok1-merge --output of a link into no directory: exit {p.returncode}: {p.stderr.strip()}")
    # refused, exit 2, nothing made: a link into a directory that does not
    # exist (for each of the three), a loop
    os.symlink("loop2", os.path.join(d, "loop1"))
    os.symlink("loop1", os.path.join(d, "loop2"))
    before = sorted(os.listdir(d)), sorted(os.listdir(os.path.join(d, "real")))
    other = os.path.join(d, "other.jsonl")
    for opt in ["--output", "--trace"] + (["--dump-logits"] if ARGS.hdf5 else []):
        for bad, words in (("nowhere", ["gone", "does not exist"]), ("loop1", ["cannot be followed"])):
            args = tiny("score", inp, other, opt, os.path.join(d, bad))
            if opt == "--output":
                args = tiny("score", inp, os.path.join(d, bad))
            expect_fail(args, 2, [f"{opt}: {os.path.join(d, bad)} is a symbolic link"] + words)
            after = sorted(os.listdir(d)), sorted(os.listdir(os.path.join(d, "real")))
            check(after == before, f"{opt} {bad}: a refused run made files: {after}")


def case_planted_links(d):
    """A symbolic link found at a name the tools make for themselves is never
    written through: OUT.partial and DUMP.partial of a fresh run are made
    anew (a link there is replaced), a resume whose OUT.partial or
    DUMP.partial is a link is refused naming it (it would cut and append to
    the file the link names), so is a run whose OUT.lock or DUMP.lock is a
    link, and grok1-merge makes OUT.merge.tmp and DUMP.merge.tmp anew. Each
    link's file is left as it was (a dangling one's not made)."""
    inp, ref = os.path.join(d, "in.jsonl"), os.path.join(d, "ref.jsonl")
    rows = [{"id": i, "prompt_ids": [1 + i, 2, 3]} for i in range(6)]
    write_jsonl(inp, rows)
    expect_ok(tiny("score", inp, ref))
    victims = {}

    def plant(at, name):
        v = os.path.join(d, name)
        with open(v, "w") as f:
            f.write(f"not yours: {name}\n{{\"id\": 9")  # a torn last line, as a resume would cut
        victims[v] = open(v, "rb").read()
        os.symlink(v, at)

    def untouched(what):
        for v, data in victims.items():
            check(open(v, "rb").read() == data, f"{what}: the file a planted link names was written: "
                  f"{os.path.basename(v)} now {open(v, 'rb').read()[:40]!r}")

    out, dump = os.path.join(d, "out.jsonl"), os.path.join(d, "d.h5")
    dump_args = ["--dump-logits", dump] if ARGS.hdf5 else []
    # a fresh run
    plant(out + ".partial", "v1")
    if ARGS.hdf5:
        plant(dump + ".partial", "v2")
    expect_ok(tiny("score", inp, out, *dump_args))
    untouched("a fresh run")
    check(not os.path.islink(out) and open(out).read() == open(ref).read(),
          f"a fresh run with a link at OUT.partial: OUT is {'a link' if os.path.islink(out) else 'other results'}")
    if ARGS.hdf5:
        check(os.path.isfile(dump) and not os.path.islink(dump), "a fresh run with a link at DUMP.partial: "
              "DUMP is not a file of its own")
    # a resume: the run stopped by a bad request left OUT.partial (and DUMP.partial)
    write_jsonl(inp, rows[:3] + [dict(rows[3], prompt_ids=[1, V + 5])] + rows[4:])
    expect_fail(tiny("score", inp, out, *dump_args), 1, ["input line 4"])
    write_jsonl(inp, rows)
    partial = out + ".partial"
    kept = open(partial, "rb").read()
    os.rename(partial, partial + ".kept")
    plant(partial, "v3")
    expect_fail(tiny("score", inp, out, "--resume", *dump_args), 1, [partial, "symbolic link"])
    untouched("a resume with a link at OUT.partial")
    os.remove(partial)
    os.rename(partial + ".kept", partial)
    check(open(partial, "rb").read() == kept, "the refused resume changed the results kept")
    if ARGS.hdf5:
        dp = dump + ".partial"
        os.rename(dp, dp + ".kept")
        plant(dp, "v4")
        expect_fail(tiny("score", inp, out, "--resume", *dump_args), 1, [dp, "symbolic link"])
        untouched("a resume with a link at DUMP.partial")
        os.remove(dp)
        os.rename(dp + ".kept", dp)
    # a link at OUT.lock (DUMP.lock): refused, and a dangling one's file not made
    for lock in [out + ".lock"] + ([dump + ".lock"] if ARGS.hdf5 else []):
        nowhere = os.path.join(d, "made-by-lock")
        os.symlink(nowhere, lock)
        expect_fail(tiny("score", inp, out, "--resume", *dump_args), 1, [lock, "symbolic link"])
        check(not os.path.exists(nowhere), f"a dangling link at {os.path.basename(lock)}: its file was made")
        os.remove(lock)
    rc, so, se = run(tiny("score", inp, out, "--resume", *dump_args))
    check(rc == 0 and "resumed after 3 results" in se and open(out).read() == open(ref).read(),
          f"the resume once the links are gone: exit {rc}: {se.strip()}")
    # grok1-merge's temporary files
    if ARGS.merge:
        shards = []
        for k in range(2):
            s = os.path.join(d, f"s{k}.jsonl")
            expect_ok(tiny("score", inp, s, "--shard", f"{k}/2",
                           *(["--dump-logits", os.path.join(d, f"d{k}.h5")] if ARGS.hdf5 else [])))
            shards.append(s)
        merged, mdump = os.path.join(d, "merged.jsonl"), os.path.join(d, "merged.h5")
        plant(merged + ".merge.tmp", "v5")
        if ARGS.hdf5:
            plant(mdump + ".merge.tmp", "v6")
        p = subprocess.run([ARGS.merge, "--input", inp, "--output", merged] +
                           (["--dump-logits", mdump] if ARGS.hdf5 else []) + shards,
                           capture_output=True, text=True, timeout=60)
        check(p.returncode == 0, f"grok1-merge with links at its temporary names: exit {p.returncode}: "
              f"{p.stderr.strip()}")
        untouched("grok1-merge")
        check(os.path.isfile(merged) and not os.path.islink(merged) and open(merged).read() == open(ref).read(),
              "grok1-merge with a link at OUT.merge.tmp: the merged output is not its own file")
        if ARGS.hdf5:
            check(os.path.isfile(mdump) and not os.path.islink(mdump), "grok1-merge with a link at "
                  "DUMP.merge.tmp: the merged dump is not its own file")
    return 0


def case_output_lock(d):
    """One run per output: while a run writes OUT (here it waits for more
    requests on a FIFO), a second run on OUT, with or without --resume, is
    refused at once naming the first; the first finishes as if alone, and
    OUT.lock is gone after it. The same for a logits dump (DUMP.lock)."""
    import time
    inp, ref, out = os.path.join(d, "in.jsonl"), os.path.join(d, "ref.jsonl"), os.path.join(d, "out.jsonl")
    rows = [{"id": i, "prompt_ids": [1 + i, 2, 3], "max_new_tokens": 4} for i in range(4)]
    write_jsonl(inp, rows)
    expect_ok(tiny("generate", inp, ref))
    fifo = os.path.join(d, "requests.fifo")
    os.mkfifo(fifo)
    def holding(args, fifo, row, lock):
        """A run reading its requests from fifo, given the first (row): it
        holds `lock` while it waits for more; the run and the fifo's writer."""
        run_ = subprocess.Popen([ARGS.run] + args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        w_ = open(fifo, "w")  # the run opened its input: it holds the lock once the file exists
        w_.write(json.dumps(row) + "\n")
        w_.flush()
        for _ in range(300):
            if os.path.exists(lock):
                break
            time.sleep(0.05)
        check(os.path.exists(lock), f"no {os.path.basename(lock)} while the run writes")
        return run_, w_

    first, w = holding(tiny("generate", fifo, out), fifo, rows[0], out + ".lock")
    for extra in ([], ["--resume"]):
        expect_fail(tiny("generate", inp, out, *extra), 1,
                    [out, "being written by another grok1-run", f"process {first.pid}", ".lock"])
    w.writelines(json.dumps(r) + "\n" for r in rows[1:])
    w.close()
    _, err = first.communicate(timeout=60)
    check(first.returncode == 0, f"the first run failed: {err}")
    check(open(out).read() == open(ref).read(), "the first run's output differs from a run alone")
    check(not os.path.exists(out + ".lock"), "OUT.lock left after the run")
    expect_ok(tiny("generate", inp, out, "--resume"))  # nothing holds it now
    if not ARGS.hdf5:
        return
    # one run per logits dump too: a second run writing another output to
    # the same dump (two shards given one --dump-logits) is refused
    dump, out2, out3 = os.path.join(d, "d.h5"), os.path.join(d, "s2.jsonl"), os.path.join(d, "s3.jsonl")
    fifo2 = os.path.join(d, "score.fifo")
    os.mkfifo(fifo2)
    srows = [{"id": r["id"], "prompt_ids": r["prompt_ids"]} for r in rows]
    write_jsonl(inp, srows)
    first, w = holding(tiny("score", fifo2, out2, "--dump-logits", dump), fifo2, srows[0], dump + ".lock")
    expect_fail(tiny("score", inp, out3, "--dump-logits", dump), 1,
                [dump, "being written by another grok1-run", f"process {first.pid}"], out3)
    w.close()
    _, err = first.communicate(timeout=60)
    check(first.returncode == 0 and os.path.exists(dump) and not os.path.exists(dump + ".lock"),
          f"the first run with the dump: rc {first.returncode} {err}")


def case_resume_fixed_request(d):
    """A run that stops at a bad request narrows its meta file's record of
    the input to the requests its kept results answer: fixing the bad line
    and resuming goes on (the final output is that of a clean run of the
    fixed input), while an edit among the kept results' requests is still
    refused. Likewise for a shard (its kept results answer every N-th
    request, and its record covers only its own requests: another shard's
    request may be edited at any time)."""
    inp, out, ref = (os.path.join(d, n) for n in ("in.jsonl", "out.jsonl", "ref.jsonl"))
    rows = [{"id": i, "prompt_ids": [1 + i % 50, 2, 3, 4]} for i in range(60)]
    bad = dict(rows[40], prompt_ids=[1, V + 88])
    write_jsonl(inp, rows[:40] + [bad] + rows[41:])
    for shard in ([], ["--shard", "1/3"]):
        for f in (out, out + ".partial", out + ".meta.json"):
            if os.path.exists(f):
                os.remove(f)
        expect_fail(tiny("score", inp, out, "--batch-size", "2", *shard), 1, ["input line 41"])
        kept = len(open(out + ".partial").read().splitlines())
        meta = json.load(open(out + ".meta.json"))
        last = (kept - 1) * 3 + 1 if shard else kept - 1  # index of the last kept result's request
        if shard:  # a shard's record: the first last + 1 requests, its own among them hashed
            check(0 < kept and meta["input"].get("requests") == last + 1 and "bytes" not in meta["input"],
                  f"{shard}: {kept} results kept; the record is {meta['input']}, expected {last + 1} requests")
        else:
            want = sum(len(l) for l in open(inp).read().splitlines(keepends=True)[:last + 1])
            check(0 < kept and meta["input"]["bytes"] == want,
                  f"{shard}: {kept} results kept; the record covers {meta['input']['bytes']} bytes, expected {want}")
        # an edit among the kept results' requests (request 1: shard 1/3's): refused
        write_jsonl(inp, rows[:1] + [dict(rows[1], prompt_ids=[9, 9])] + rows[2:40] + [bad] + rows[41:])
        expect_fail(tiny("score", inp, out, "--resume", *shard), 1, ["cannot resume", "not the one the output was made"]
                    + (["requests of shard 1/3 among its first"] if shard else []))
        # the bad request fixed: the resume finishes as a clean run would;
        # for the shard, another shard's request (0) is edited too
        fixed = [dict(rows[0], prompt_ids=[9, 9])] + rows[1:] if shard else rows
        write_jsonl(inp, fixed)
        expect_ok(tiny("score", inp, out, "--resume", *shard))
        expect_ok(tiny("score", inp, ref, *shard))
        check(open(out).read() == open(ref).read(), f"{shard}: the resumed output differs from a clean run's")
        os.remove(ref)
        os.remove(ref + ".meta.json")
        rec = json.load(open(out + ".meta.json"))["input"]
        check(rec.get("requests") == len(rows) if shard else rec["bytes"] == os.path.getsize(inp),
              f"the finished output's record is not of the whole input: {rec}")
        write_jsonl(inp, rows[:40] + [bad] + rows[41:])
    # a request before the kept results' end edited while the run goes, then
    # SIGTERM: the record is not narrowed to the edited bytes (it stays that
    # of the input the run started from), so the resume is refused
    import signal
    import time
    long_rows = [{"id": f"r{i}", "prompt_ids": [3 + (i * 7 + j * 13) % 500 for j in range(200)]} for i in range(300)]
    write_jsonl(inp, long_rows)
    for f in (out, out + ".partial", out + ".meta.json"):
        if os.path.exists(f):
            os.remove(f)
    p = subprocess.Popen([ARGS.run] + tiny("score", inp, out, "--batch-size", "1", "--prefix-cache", "off"),
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for _ in range(600):
        if os.path.exists(out + ".partial") and len(open(out + ".partial").read().splitlines()) >= 5:
            break
        time.sleep(0.05)
    # replaced whole (as most editors save), so the run reads on in the old
    # file: an edit in place could hand it a half-written line
    write_jsonl(inp + ".new", [dict(long_rows[0], prompt_ids=long_rows[0]["prompt_ids"][::-1])] + long_rows[1:])
    os.replace(inp + ".new", inp)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    check(p.returncode == 3, f"SIGTERM: exit {p.returncode}, expected 3: {err[-300:]}")
    expect_fail(tiny("score", inp, out, "--resume"), 1, ["cannot resume", "not the one the output was made"])


def case_input_appended(d):
    """Requests appended to the input while a run goes are not read: the
    output's record of the input (taken at the start) could not vouch for
    them, so an edit of them would pass a resume or a merge. The run says
    so and ends; --resume answers them. Whole input and a shard. The run
    holds itself at its 4th step (GROK1_FAULT ...:stop) while the test
    appends, far before its reader's end (it reads ahead 20 requests at
    --batch-size 1), whatever the build's speed."""
    inp, out = os.path.join(d, "in.jsonl"), os.path.join(d, "out.jsonl")
    rows = [{"id": f"r{i}", "prompt_ids": [3 + (i * 7 + j * 13) % 500 for j in range(12)]} for i in range(60)]
    extra = {"id": "late", "prompt_ids": [5, 6, 7]}
    for shard in ([], ["--shard", "0/2"]):
        write_jsonl(inp, rows)
        for f in (out, out + ".partial", out + ".meta.json"):
            if os.path.exists(f):
                os.remove(f)
        args = tiny("score", inp, out, "--batch-size", "1", "--prefix-cache", "off", *shard)
        p = subprocess.Popen([ARGS.run] + args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             env=dict(os.environ, GROK1_FAULT="0:4:stop"))
        state = ""
        for _ in range(3000):
            with open(f"/proc/{p.pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
            if state in "TtZ":
                break
            time.sleep(0.02)
        check(state in "Tt", f"{shard}: the run did not hold itself at its 4th step (state {state!r})")
        with open(inp, "a") as f:
            f.write(json.dumps(extra) + "\n")
        p.send_signal(signal.SIGCONT)
        _, err = p.communicate(timeout=120)
        mine = len(rows) // 2 if shard else len(rows)
        got = read_jsonl(out) if p.returncode == 0 else []
        check(p.returncode == 0 and len(got) == mine and "late" not in {r["id"] for r in got},
              f"{shard}: a request appended during the run: exit {p.returncode}, {len(got)} results of {mine}: "
              f"{err[-300:]}")
        check("appended to" in err and "--resume" in err, f"{shard}: the run did not say so: {err[-300:]}")
        rec = json.load(open(out + ".meta.json"))["input"]
        check(rec.get("requests") == len(rows) if shard else rec.get("bytes") == os.path.getsize(inp) - len(
              json.dumps(extra)) - 1, f"{shard}: the record is not of the input the run started from: {rec}")
        expect_ok(args + ["--resume"])
        ref = out + ".ref"
        expect_ok(tiny("score", inp, ref, "--batch-size", "1", *shard))
        check(open(out).read() == open(ref).read(), f"{shard}: the resume's output differs from a fresh run's")
        os.remove(ref)
        os.remove(ref + ".meta.json")


def case_bad_request_keeps_before(d):
    """A run that meets a refused request (line 41 here) while reading ahead
    of the requests it runs stops only once every request before it has
    finished: OUT.partial holds all 40 results (those of a clean run), with
    one slot or many (8, 64: all 40 running when line 41 is read), in score
    and generate mode, with prefix reuse (score requests waiting in the
    read-ahead for a running context), for a shard, and under mpirun (2
    stages, 2 expert slots); the error and exit status are those of the
    refusal. Fixing the line and resuming gives the bytes of a clean run.
    Other kinds of refusal (a prompt too long, malformed JSON) alike."""
    inp, out, ref = (os.path.join(d, n) for n in ("in.jsonl", "out.jsonl", "ref.jsonl"))
    # groups of 4 requests share a 24-token context (lm-eval continuations):
    # with prefix reuse in score mode they wait in the read-ahead for its slot
    ctx = [[3 + (g * 31 + j * 7) % 500 for j in range(24)] for g in range(15)]
    rows = [{"id": i, "prompt_ids": ctx[i // 4] + [5 + i, 9, 13 + i % 7][: 1 + i % 3]} for i in range(56)]
    gen_rows = [dict(r, max_new_tokens=3 + i % 5) for i, r in enumerate(rows)]

    def clean(*files):
        for f in files:
            for x in ("", ".partial", ".meta.json"):
                if os.path.exists(f + x):
                    os.remove(f + x)

    mpiexec = shutil.which("mpiexec") or shutil.which("mpirun")
    env = mpi_env()

    def go(args, ranks):
        cmd = ([mpiexec, "-n", str(ranks)] if ranks > 1 else []) + [ARGS.run] + args
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
        return p.returncode, p.stderr

    bad_lines = {"range": lambda r: dict(r, prompt_ids=[1, 9999]),
                 "long": lambda r: dict(r, prompt_ids=[1] * (MAX_SEQ + 2)),
                 "json": lambda r: '{"id": 40, "prompt_ids": [1, 2'}
    runs = [(mode, b, [], 1, "range") for mode in ("score", "generate") for b in (1, 8, 64)]
    runs += [("score", 64, ["--prefix-cache", "off"], 1, "long"), ("generate", 8, [], 1, "json"),
             ("score", 64, ["--shard", "1/3"], 1, "range"), ("generate", 64, ["--shard", "1/3"], 1, "range")]
    if ARGS.mpi and mpiexec:
        runs += [("score", 8, ["--stages", "2", "--micro-batches", "3"], 2, "range"),
                 ("generate", 8, ["--ep", "2"], 2, "range")]
    refs = {}
    for mode, b, extra, ranks, kind in runs:
        good = rows if mode == "score" else gen_rows
        sharded = "--shard" in extra
        key = (mode, sharded)
        if key not in refs:  # a clean run of the whole (fixed) input
            clean(ref)
            write_jsonl(inp, good)
            rc, se = go(tiny(mode, inp, ref, "--max-new-tokens", "4", *(extra[:2] if sharded else ())), 1)
            check(rc == 0, f"the clean {mode} run failed: {se}")
            refs[key] = open(ref).read()
        want = refs[key].splitlines(keepends=True)
        what = f"{mode} --batch-size {b} {' '.join(extra)} ({ranks} rank(s), {kind})"
        clean(out)
        write_jsonl(inp, good[:40] + [bad_lines[kind](good[40])] + good[41:])
        args = tiny(mode, inp, out, "--batch-size", str(b), "--max-new-tokens", "4", *extra)
        rc, se = go(args, ranks)
        check(rc == 1 and "input line 41" in se and "grok1-run: error:" in se,
              f"{what}: exit {rc}, expected 1 naming input line 41: {se[-400:]}")
        kept = open(out + ".partial").read().splitlines(keepends=True) if os.path.exists(out + ".partial") else []
        n = 13 if sharded else 40  # shard 1/3: requests 1, 4, ..., 37 (40 is its own)
        check(len(kept) == n and kept == want[:n],
              f"{what}: {len(kept)} results kept before the bad line, expected the clean run's first {n}")
        write_jsonl(inp, good)
        rc, se = go(args + ["--resume"], ranks)
        check(rc == 0 and f"resumed after {n} results" in se, f"{what}: the resume: exit {rc}: {se[-400:]}")
        check(open(out).read() == refs[key], f"{what}: the resumed output differs from a clean run's")


def case_resume_nothing_left(d):
    """A resume with nothing left to run (a finished OUT, or an OUT.partial
    holding every result) checks the kept results against the input, gives
    OUT its name and ends without loading the weights (--verbose prints no load
    line), on every rank of an mpirun; a bad request after the kept ones,
    or kept results that do not answer the input, fail as the run would,
    before the load and before anything is renamed; --trace runs the pipeline
    (its trace needs it). A shard with no request at all runs nothing either."""
    inp, out = os.path.join(d, "in.jsonl"), os.path.join(d, "out.jsonl")
    rows = [{"id": i, "prompt_ids": [3 + i, 4, 5], "max_new_tokens": 3} for i in range(7)]
    write_jsonl(inp, rows)
    expect_ok(tiny("generate", inp, out))
    want, meta = open(out).read(), open(out + ".meta.json").read()

    def nothing_left(*extra, cmd=None):
        rc, _, se = run(tiny("generate", inp, out, "--resume", "--verbose", *extra)) if cmd is None else cmd()
        check(rc == 0, f"resume of a finished output: exit {rc}: {se}")
        check("resumed after 7 results already written: nothing left to run" in se, f"no 'nothing left': {se}")
        check("bytes read" not in se, f"the weights were loaded for nothing: {se}")
        check(open(out).read() == want and open(out + ".meta.json").read() == meta and
              not os.path.exists(out + ".partial"), "the output or its meta changed")

    nothing_left()
    # results that do not answer the input (a mixed-up file): refused
    # before anything is renamed or rewritten
    with open(out, "w") as f:
        f.writelines(want.splitlines(keepends=True)[::-1])
    expect_fail(tiny("generate", inp, out, "--resume"), 1, ["does not belong to the request on input line 1"])
    check(open(out).read() == "".join(want.splitlines(keepends=True)[::-1]) and
          open(out + ".meta.json").read() == meta and not os.path.exists(out + ".partial"),
          "a refused resume renamed or rewrote the output or its meta file")
    with open(out, "w") as f:
        f.write(want)
    os.rename(out, out + ".partial")  # every result written, killed before the rename
    nothing_left()
    # --trace: the run goes through the pipeline and writes its trace
    trace = os.path.join(d, "t.json")
    _, se = expect_ok(tiny("generate", inp, out, "--resume", "--trace", trace))
    check("nothing left" not in se and os.path.exists(trace) and open(out).read() == want, f"--trace: {se}")
    # a bad request after the kept ones: refused before the load
    with open(inp, "a") as f:
        f.write('{"id": 7, "prompt_ids": [1, oops]}\n')
    se = expect_fail(tiny("generate", inp, out, "--resume", "--verbose"), 1, ["input line 8"])
    check("bytes read" not in se, f"the weights were loaded before the bad line was found: {se}")
    check(open(out).read() == want and not os.path.exists(out + ".partial") and
          open(out + ".meta.json").read() == meta, "the refused resume renamed or rewrote the finished output")
    write_jsonl(inp, rows)
    # a shard with no request (N above the requests), first run and resume
    empty = os.path.join(d, "empty.jsonl")
    for extra in ([], ["--resume"]):
        _, se = expect_ok(tiny("generate", inp, empty, "--shard", "9/10", "--verbose", *extra))
        check("nothing to run" in se and "bytes read" not in se and open(empty).read() == "",
              f"an empty shard {extra}: {se}")
    mpiexec = shutil.which("mpiexec") or shutil.which("mpirun")
    if not ARGS.mpi or not mpiexec:
        return
    env = mpi_env()

    def mpi():
        p = subprocess.run([mpiexec, "-n", "2", ARGS.run] + tiny("generate", inp, out, "--resume", "--verbose", "--stages",
                                                                  "2"), capture_output=True, text=True, env=env,
                           timeout=60)
        return p.returncode, p.stdout, p.stderr

    nothing_left(cmd=mpi)


def case_bad_checkpoint(d):
    inp, out = os.path.join(d, "in.jsonl"), os.path.join(d, "out.jsonl")
    write_jsonl(inp, [{"id": 1, "prompt_ids": [1, 2]}])
    if not ARGS.hdf5:
        expect_fail(["--checkpoint", "x.h5", "--mode", "score", "--input", inp, "--output", out], 2,
                    ["without HDF5"], out)
        return
    missing = os.path.join(d, "missing.h5")
    expect_fail(["--checkpoint", missing, "--mode", "score", "--input", inp, "--output", out], 1,
                ["missing.h5"], out)
    junk = os.path.join(d, "junk.h5")
    with open(junk, "w") as f:
        f.write("this is not an HDF5 file\n" * 100)
    expect_fail(["--checkpoint", junk, "--mode", "score", "--input", inp, "--output", out], 1, ["junk.h5"], out)


def mkckpt(d, seed=5, name="tiny.h5"):
    path = os.path.join(d, name)
    p = subprocess.run([ARGS.mkckpt, "--config", "tiny", "--seed", str(seed), "--out", path],
                       capture_output=True, text=True)
    check(p.returncode == 0, f"grok1-mkckpt failed: {p.stderr}")
    return path


def case_truncated_checkpoint(d):
    ck = mkckpt(d)
    with open(ck, "rb") as f:
        data = f.read()
    cut = os.path.join(d, "cut.h5")
    with open(cut, "wb") as f:
        f.write(data[: len(data) // 2])
    inp, out = os.path.join(d, "in.jsonl"), os.path.join(d, "out.jsonl")
    write_jsonl(inp, [{"id": 1, "prompt_ids": [1, 2]}])
    expect_fail(["--checkpoint", cut, "--mode", "score", "--input", inp, "--output", out], 1, ["cut.h5"], out)
    expect_ok(["--checkpoint", ck, "--mode", "score", "--input", inp, "--output", out])


def case_damaged_header(d):
    """Bytes of one dataset's object header changed in turn: the run
    loads or refuses with a message, never dies by a signal. HDF5 1.10.8
    crashed in its shutdown (inside MPI_Finalize) after a failed open with an
    access list carrying a file access list for external links: 8 of 100
    such bytes made grok1-run segfault after its message."""
    try:
        import h5py
    except ImportError:
        print("h5py not available: skipped")
        return SKIP
    ck = mkckpt(d)
    with h5py.File(ck, "r") as f:
        addr = h5py.h5o.get_info(f["layers/00/moe_up"].id).addr
    data = open(ck, "rb").read()
    inp, out = os.path.join(d, "in.jsonl"), os.path.join(d, "out.jsonl")
    write_jsonl(inp, [{"id": 1, "prompt_ids": [1, 2]}])
    bad, refused, died = os.path.join(d, "bad.h5"), 0, []
    offsets = sorted(set(range(0, 128, 4)) | {117, 121})  # 24, 84, 108, 117, 120 and 121 crashed
    for off in offsets:
        b = bytearray(data)
        b[addr + off] ^= 0x5A
        with open(bad, "wb") as f:
            f.write(b)
        if os.path.exists(out):
            os.remove(out)
        rc, _, se = run(["--checkpoint", bad, "--mode", "score", "--input", inp, "--output", out])
        if rc not in (0, 1):
            died.append(f"+{off}: exit {rc}: {se.strip()[-300:]}")
        elif rc == 1:
            refused += 1
            check("grok1-run: error:" in se and not os.path.exists(out),
                  f"+{off}: refused without a message, or with an output: {se.strip()}")
    print(f"{len(offsets)} bytes of the header of layers/00/moe_up changed one at a time: {refused} refused, "
          f"{len(offsets) - refused - len(died)} loaded (bytes HDF5 does not read), {len(died)} died")
    check(not died, "a damaged object header killed grok1-run:\n  " + "\n  ".join(died))
    check(refused > 0, "no changed byte was refused (the header was not found?)")
    # an expert matrix with a 9th expert: its shape is refused before its
    # checksums are read (a count of them taken from a wrong shape gave a
    # message about the checksums, or a huge allocation)
    import numpy as np
    nine = os.path.join(d, "nine.h5")
    shutil.copy(ck, nine)
    with h5py.File(nine, "r+") as f:
        old = f["layers/00/moe_up"]
        w, attrs = old[()], dict(old.attrs)
        del f["layers/00/moe_up"]
        new = f["layers/00"].create_dataset("moe_up", data=np.concatenate([w, w[:1]]))
        for k, v in attrs.items():
            new.attrs[k] = v
    expect_fail(["--checkpoint", nine, "--mode", "score", "--input", inp, "--output", out], 1,
                ["layers/00/moe_up has shape (9", "expected (8"], out)


def case_nan_logits(d):
    """A NaN or an infinity in a float tensor (final norm, router, a scale,
    the embedding) is refused at the load, naming the tensor (it showed only
    as NaN logits, naming nothing). Scales so large that the sums overflow
    make every logit NaN: scoring and generating both stop with a message
    naming it, and no output file looks complete."""
    try:
        import h5py
        import numpy as np
    except ImportError:
        print("h5py not available: skipped")
        return SKIP
    base = mkckpt(d)
    inp = os.path.join(d, "in.jsonl")
    write_jsonl(inp, [{"id": 1, "prompt_ids": [1, 2, 3, 4]}])

    def edited(name, ds, idx, value):
        path = os.path.join(d, name + ".h5")
        shutil.copy(base, path)
        with h5py.File(path, "r+") as f:
            a = f[ds][()]
            a[idx] = value
            f[ds][...] = a
            del f[ds].attrs["crc32"]  # edited by hand: no checksum, so only the value check can tell
        return path
    for name, ds, idx, value, words in (
            ("fn", "final_norm", 3, np.nan, ["final_norm holds a NaN (element 3)"]),
            ("router", "layers/00/router", (1, 1), np.inf, ["layers/00/router holds an infinity"]),
            ("scale", "layers/01/moe_down_scale", (2, 0, 5), -np.inf, ["layers/01/moe_down_scale expert 2 holds"]),
            ("attn", "layers/00/attn_q_scale", (0, 1), np.nan, ["layers/00/attn_q_scale holds a NaN"]),
            ("emb", "embedding", (100, 7), np.nan, ["embedding holds a NaN"])):
        out = os.path.join(d, name + ".jsonl")
        expect_fail(["--checkpoint", edited(name, ds, idx, value), "--mode", "score", "--input", inp,
                     "--output", out], 1, words, out)
    ck = edited("huge", "layers/00/attn_o_scale", slice(None), 3e38)
    for mode in ("score", "generate"):
        out = os.path.join(d, mode + ".jsonl")
        expect_fail(["--checkpoint", ck, "--mode", mode, "--input", inp, "--output", out], 1,
                    ["logit 0 is", "nan", "NaN or infinity"], out)


def case_synthetic_matches_mkckpt(d):
    """--synthetic tiny --synthetic-seed 5 is the same model as grok1-mkckpt --config tiny --seed 5."""
    ck = mkckpt(d, seed=5)
    inp = os.path.join(d, "in.jsonl")
    write_jsonl(inp, [{"id": i, "prompt_ids": [(37 * i + 11 * j) % (V - 1) + 1 for j in range(3 + 5 * i)]}
                      for i in range(4)])
    a, b, c = (os.path.join(d, n) for n in ("a.jsonl", "b.jsonl", "c.jsonl"))
    la, lb = os.path.join(d, "a.h5"), os.path.join(d, "b.h5")
    expect_ok(["--checkpoint", ck, "--mode", "score", "--input", inp, "--output", a, "--dump-logits", la])
    expect_ok(tiny("score", inp, b, "--dump-logits", lb, seed=5))
    expect_ok(tiny("score", inp, c, seed=6))
    with open(a) as fa, open(b) as fb, open(c) as fc:
        ta, tb, tc = fa.read(), fb.read(), fc.read()
    check(ta == tb, "checkpoint and --synthetic of the same seed give different scores")
    check(ta != tc, "seed 5 and seed 6 give the same scores")
    try:
        import h5py
        import numpy as np
    except ImportError:
        return
    with h5py.File(la, "r") as fa, h5py.File(lb, "r") as fb:
        for k in range(4):
            x, y = fa[f"logits/{k}"][...], fb[f"logits/{k}"][...]
            check(x.shape == y.shape and np.array_equal(x, y), f"logits of request {k} differ")


def case_dump_logits(d):
    if not ARGS.hdf5:
        return SKIP
    try:
        import h5py
        import numpy as np
    except ImportError:
        return SKIP
    inp, out, lg = os.path.join(d, "in.jsonl"), os.path.join(d, "out.jsonl"), os.path.join(d, "l.h5")
    lens = [1, 7, 40, 3, 19]
    rid = [i if i % 2 else f"r{i} \u00e9\"" for i in range(len(lens))]  # numbers, and strings to escape
    write_jsonl(inp, [{"id": rid[i], "prompt_ids": [(13 * i + 29 * j + 3) % V for j in range(n)]}
                      for i, n in enumerate(lens)])
    # the planner counts the rows rank 0's dump writer may hold (1 GiB)
    mem, mem_lg = os.path.join(d, "mem.jsonl"), os.path.join(d, "mem.h5")
    expect_ok(tiny("score", inp, mem, "--mem-per-rank", "100M"))
    os.remove(mem)
    expect_fail(tiny("score", inp, mem, "--mem-per-rank", "100M", "--dump-logits", mem_lg), 2,
                ["--mem-per-rank is 100.0 MiB", "1.00 GiB of them for the logits dump's writer"], out=mem)
    check(not os.path.exists(mem_lg) and not os.path.exists(mem_lg + ".partial"), "a refused run made a dump")
    expect_fail(tiny("score", inp, mem, "--dump-logits", mem_lg, "--mem-per-rank", "100M"), 2,
                ["or a smaller --dump-buffer (now 1.00 GiB)"], out=mem)
    expect_fail(tiny("score", inp, mem, "--dump-buffer", "8K"), 2, ["--dump-buffer", "--dump-logits FILE.h5"],
                out=mem)
    for bad in ("0", "-1M", "lots"):
        expect_fail(tiny("score", inp, mem, "--dump-logits", mem_lg, "--dump-buffer", bad), 2,
                    [f"--dump-buffer {bad}"], out=mem)
    # a smaller writer's buffer fits the limit; 8K holds 4 rows of the tiny
    # vocabulary, less than a step (6 rows): the ring takes a step's rows at
    # a time and wraps at every step; the dump below must be the same bytes
    small_lg = os.path.join(d, "small.h5")
    _, se = expect_ok(tiny("score", inp, mem, "--mem-per-rank", "100M", "--dump-logits", small_lg, "--dump-buffer",
                           "8K", "--batch-size", "2", "--max-batch-tokens", "6", "--verbose"))
    held = re.search(r"the logits dump's writer held (\d+) bytes", se)
    check(held and 0 < int(held.group(1)) <= 6 * V * 4, f"--dump-buffer 8K: the writer held {held and held.group(1)} "
          f"bytes, more than one step's rows ({6 * V * 4})")
    os.remove(mem)
    _, se = expect_ok(tiny("score", inp, mem, "--dump-logits", os.path.join(d, "big.h5"), "--verbose"))
    held = re.search(r"the logits dump's writer held (\d+) bytes", se)
    check(held and int(held.group(1)) > 6 * V * 4, f"by default the writer holds more: {held and held.group(1)}")
    # small chunks so a request's logits arrive in several row pieces
    expect_ok(tiny("score", inp, out, "--dump-logits", lg, "--batch-size", "2", "--max-batch-tokens", "6"))
    res = read_jsonl(out)
    with h5py.File(lg, "r") as f:
        check(sorted(f["logits"].keys(), key=int) == [str(k) for k in range(len(lens))], "wrong dataset names")
        for k, n in enumerate(lens):
            x = f[f"logits/{k}"][...].astype(np.float64)
            check(x.shape == (n, V) and f[f"logits/{k}"].dtype == np.float32, f"logits/{k} shape {x.shape}")
            ids = [(13 * k + 29 * j + 3) % V for j in range(n)]
            lse = x.max(1) + np.log(np.exp(x - x.max(1, keepdims=True)).sum(1))
            ref = [x[i, ids[i + 1]] - lse[i] for i in range(n - 1)]
            err = max([abs(a - b) for a, b in zip(ref, res[k]["logprobs"])], default=0.0)
            check(err < 1e-6, f"request {k}: logprobs differ from log_softmax(dumped logits) by {err}")
            greedy = all(int(np.argmax(x[i])) == ids[i + 1] for i in range(n - 1))
            check(res[k]["greedy"] == greedy, f"request {k}: greedy flag {res[k]['greedy']} != {greedy}")
            # the checksum of the rows, which came in pieces
            import zlib
            crc = list(f[f"logits/{k}"].attrs.get("crc32", []))
            want = zlib.crc32(f[f"logits/{k}"][...].astype("<f4").tobytes())
            check(crc == [want], f"logits/{k}: crc32 attribute {crc}, the data's is {want}")
            # the request it belongs to: its tokens (int32, one a row) and its id
            t = f[f"logits/{k}"].attrs.get("tokens")
            check(t is not None and t.dtype == np.int32 and list(t) == ids, f"logits/{k}: tokens attribute {t}")
            i = f[f"logits/{k}"].attrs.get("id")
            check(isinstance(i, str) and json.loads(i) == rid[k] == res[k]["id"], f"logits/{k}: id attribute {i!r}")
    with h5py.File(lg, "r") as f, h5py.File(small_lg, "r") as g:
        for k in range(len(lens)):
            check(np.array_equal(f[f"logits/{k}"][...], g[f"logits/{k}"][...]) and
                  list(f[f"logits/{k}"].attrs["crc32"]) == list(g[f"logits/{k}"].attrs["crc32"]),
                  f"logits/{k} differs when the writer's buffer is 8K")


def case_score_last_token(d):
    """A score request's last token is only predicted: without --dump-logits
    it is not fed, so a request may have max_seq_len + 1 tokens (as an HF
    model scores max_length + 1 tokens for lm-eval). Its log-probs are
    log_softmax of the dumped logits of its first max_seq_len tokens; a
    one-token request computes nothing. With --dump-logits (every
    position's logits) max_seq_len is the most, and more is refused naming
    the option, or cut to it with --truncate left."""
    a = [(17 * j + 11) % V for j in range(MAX_SEQ + 1)]
    reqs = [{"id": "full", "prompt_ids": a}, {"id": "one", "prompt_ids": [a[0]]}, {"id": "again", "prompt_ids": a}]
    inp, out = os.path.join(d, "in.jsonl"), os.path.join(d, "out.jsonl")
    write_jsonl(inp, reqs)
    _, se = expect_ok(tiny("score", inp, out, "--batch-size", "1"))
    res = read_jsonl(out)
    check(res[0]["prompt_tokens"] == MAX_SEQ + 1 and len(res[0]["logprobs"]) == MAX_SEQ,
          f"{MAX_SEQ + 1} tokens: {res[0]['prompt_tokens']} tokens, {len(res[0]['logprobs'])} log-probs")
    check(res[1] == {"id": "one", "prompt_tokens": 1, "logprobs": [], "sum_logprob": 0, "greedy": True},
          f"one token: {res[1]}")
    check(res[2] == dict(res[0], id="again"), "the same request again gives another result")
    want = held_one_slot(reqs, "score")
    check(reused(se) == want, f"one slot: {reused(se)} positions reused, expected {want}")
    # the first MAX_SEQ tokens give the same first log-probs
    short = os.path.join(d, "short.jsonl")
    write_jsonl(short, [{"id": "full", "prompt_ids": a[:MAX_SEQ]}])
    expect_ok(tiny("score", short, os.path.join(d, "s.jsonl")))
    s = read_jsonl(os.path.join(d, "s.jsonl"))[0]
    check(s["logprobs"] == res[0]["logprobs"][:-1], "the first log-probs differ from those of one token fewer")
    if not ARGS.hdf5:
        return
    lg = os.path.join(d, "l.h5")
    expect_fail(tiny("score", inp, os.path.join(d, "refused.jsonl"), "--dump-logits", lg), 1,
                ["input line 1", f"{MAX_SEQ + 1} tokens", f"is {MAX_SEQ}", "--dump-logits", "--truncate left"],
                out=os.path.join(d, "refused.jsonl"))
    expect_ok(tiny("score", inp, os.path.join(d, "cut.jsonl"), "--dump-logits", lg, "--truncate", "left"))
    cut = read_jsonl(os.path.join(d, "cut.jsonl"))
    check(cut[0]["prompt_tokens"] == MAX_SEQ and cut[0]["truncated"] == 1, f"cut with the dump: {cut[0]}")
    try:
        import h5py
        import numpy as np
    except ImportError:
        return
    with h5py.File(lg, "r") as f:  # the tokens the rows follow: those kept
        t = f["logits/0"].attrs.get("tokens")
        check(t is not None and list(t) == a[1:], "cut with the dump: the tokens attribute is not the tokens kept")
    expect_ok(tiny("score", short, os.path.join(d, "s2.jsonl"), "--dump-logits", lg))
    with h5py.File(lg, "r") as f:
        x = f["logits/0"][...].astype(np.float64)
    lse = x.max(1) + np.log(np.exp(x - x.max(1, keepdims=True)).sum(1))
    ref = [x[i, a[i + 1]] - lse[i] for i in range(MAX_SEQ)]
    err = max(abs(p - q) for p, q in zip(ref, res[0]["logprobs"]))
    check(err < 1e-6, f"log-probs differ from log_softmax of the dumped logits by {err}")
    greedy = all(int(np.argmax(x[i])) == a[i + 1] for i in range(MAX_SEQ))
    check(res[0]["greedy"] == greedy, f"greedy {res[0]['greedy']}, the dumped logits say {greedy}")


def case_score_shape(d):
    inp, out = os.path.join(d, "in.jsonl"), os.path.join(d, "out.jsonl")
    lens = [1, 2, 17, MAX_SEQ]
    write_jsonl(inp, [{"id": i, "prompt_ids": [(7 * i + 5 * j) % (V - 1) + 1 for j in range(n)]}
                      for i, n in enumerate(lens)])
    expect_ok(tiny("score", inp, out, "--max-batch-tokens", "100"))
    res = read_jsonl(out)
    check(len(res) == len(lens), f"{len(res)} results for {len(lens)} requests")
    for r, n in zip(res, lens):
        check(list(r.keys()) == ["id", "prompt_tokens", "logprobs", "sum_logprob", "greedy"], f"keys {list(r)}")
        check(r["prompt_tokens"] == n, "prompt_tokens")
        check(len(r["logprobs"]) == n - 1, f"{len(r['logprobs'])} logprobs for {n} tokens")
        check(all(isinstance(x, float) and x <= 0 for x in r["logprobs"]), "logprobs must be floats <= 0")
        check(abs(sum(r["logprobs"]) - r["sum_logprob"]) <= 1e-9 * max(1, abs(r["sum_logprob"])), "sum_logprob")
        check(isinstance(r["greedy"], bool), "greedy must be a bool")
    check(res[0]["greedy"] is True and res[0]["sum_logprob"] == 0, "a one-token prompt is trivially greedy")


def philox4x32(ctr, key):
    """Philox 4x32-10 (as g1_philox4x32), in Python for an independent check."""
    m = 0xFFFFFFFF
    c0, c1, c2, c3 = ctr
    k0, k1 = key
    for r in range(10):
        if r:
            k0, k1 = (k0 + 0x9E3779B9) & m, (k1 + 0xBB67AE85) & m
        a, b = 0xD2511F53 * c0, 0xCD9E8D57 * c2
        c0, c1, c2, c3 = ((b >> 32) ^ c1 ^ k0) & m, b & m, ((a >> 32) ^ c3 ^ k1) & m, a & m
    return c0, c1, c2, c3


def sample_uniform(seed, request, step):
    """The uniform in [0, 1) for (seed, request index, token index), as sampler.h documents it."""
    m = 0xFFFFFFFF
    o = philox4x32((step & m, step >> 32, request & m, request >> 32), (seed & m, seed >> 32))
    return ((o[0] << 21) ^ (o[1] >> 11)) / 2.0 ** 53


def case_sampling_stream(d):
    """Each sampled token is the draw of Philox keyed by (seed, the request's
    0-based index in the input, the token's index in the completion), the
    stream sampler.h and --help promise, recomputed here: top_k 5 with
    top_logprobs 5 gives the kept tokens' probabilities, ordered by id, and
    the token is the first whose running sum passes u * their total. A
    request without "seed" uses 42. Prompts longer than one token make the
    token index differ from the position."""
    check(philox4x32((0, 0, 0, 0), (0, 0)) == (0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8),
          "Python Philox known answer")
    inp, out = os.path.join(d, "in.jsonl"), os.path.join(d, "out.jsonl")
    reqs = [{"id": i, "prompt_ids": [(29 * i + 11 * j + 3) % V for j in range(n)], "max_new_tokens": 10,
             "temperature": 1.0, "top_k": 5, "top_logprobs": 5, "ignore_eos": True}
            for i, n in enumerate((7, 2, 12, 5))]
    for r, sd in zip(reqs, (11, 2 ** 40 + 3, None, 0)):
        if sd is not None:
            r["seed"] = sd
    write_jsonl(inp, reqs)
    expect_ok(tiny("generate", inp, out, "--batch-size", "2"))
    steps = 0
    for k, (rq, res) in enumerate(zip(reqs, read_jsonl(out))):
        check(res["id"] == rq["id"], f"result {k} is request {res['id']}, expected {rq['id']}")
        seed = rq.get("seed", 42)
        for step, (tok, top) in enumerate(zip(res["completion_ids"], res["top_logprobs"])):
            kept = sorted((e["id"], math.exp(e["logprob"])) for e in top)
            u = sample_uniform(seed, k, step) * sum(p for _, p in kept)
            acc, want, margin = 0.0, kept[-1][0], math.inf
            for i, p in kept:
                acc += p
                margin = min(margin, abs(acc - u))
                if u < acc:
                    want = i
                    break
            if margin < 1e-9:
                continue  # u on a boundary: rounding may decide either way
            check(tok == want, f"request {k} (seed {seed}) token {step}: {tok}, the stream's draw is {want} "
                               f"(u {u:.6f} over {kept})")
            steps += 1
    check(steps >= 30, f"only {steps} steps checked")
    print(f"sampling stream: {steps} tokens are Philox(seed, request index, token index)'s draws")


def case_generate_fields(d):
    inp, out = os.path.join(d, "in.jsonl"), os.path.join(d, "out.jsonl")
    write_jsonl(inp, [
        {"id": "a", "prompt_ids": [1, 2, 3]},                          # --max-new-tokens 6
        {"id": "b", "prompt_ids": [4], "max_new_tokens": 0},
        {"id": "c", "prompt_ids": [5, 6], "max_new_tokens": 3},
        {"id": "d", "prompt_ids": [7] * (MAX_SEQ - 2), "max_new_tokens": 50},  # room for 2
    ])
    expect_ok(tiny("generate", inp, out, "--max-new-tokens", "6"))
    res = read_jsonl(out)
    check([r["id"] for r in res] == ["a", "b", "c", "d"], "ids")
    for r, limit in zip(res, [6, 0, 3, 2]):
        check(list(r.keys()) == ["id", "prompt_tokens", "completion_ids", "finish_reason"], f"keys {list(r)}")
        ids = r["completion_ids"]
        check(all(isinstance(t, int) and 0 <= t < V and t != EOS for t in ids), f"bad completion {ids}")
        check(r["finish_reason"] in ("eos", "length"), "finish_reason")
        if r["finish_reason"] == "length":
            check(len(ids) == limit, f"{r['id']}: 'length' with {len(ids)} tokens, limit {limit}")
        else:
            check(len(ids) < limit, f"{r['id']}: 'eos' after the limit")
    check(res[1]["completion_ids"] == [] and res[1]["finish_reason"] == "length", "max_new_tokens 0")
    check(res[3]["prompt_tokens"] == MAX_SEQ - 2, "prompt_tokens")
    # a top_k past 2^31 is no limit, as 0 is (it was refused as "not >= 0")
    res = []
    for k in (0, 2 ** 32 + 1, 2 ** 63 - 1, 20):  # each request 0 of its input: the same random numbers
        write_jsonl(inp, [{"id": 0, "prompt_ids": [5, 6], "temperature": 1.0, "seed": 3, "max_new_tokens": 8,
                           "top_k": k}])
        expect_ok(tiny("generate", inp, out))
        res.append(read_jsonl(out)[0]["completion_ids"])
    check(res[0] == res[1] == res[2] and res[3] != res[0], f"huge top_k: {res}")


def case_generate_is_greedy(d):
    """Generating with the KV cache equals re-scoring the whole sequence:
    score(prompt + completion) must call every token from the 2nd on greedy."""
    inp, out = os.path.join(d, "in.jsonl"), os.path.join(d, "out.jsonl")
    prompts = [[(17 * i + 1) % V] for i in range(5)]
    write_jsonl(inp, [{"id": i, "prompt_ids": p, "max_new_tokens": 12} for i, p in enumerate(prompts)])
    expect_ok(tiny("generate", inp, out, "--batch-size", "2", "--max-batch-tokens", "3"))
    gen = read_jsonl(out)
    inp2, out2 = os.path.join(d, "in2.jsonl"), os.path.join(d, "out2.jsonl")
    write_jsonl(inp2, [{"id": g["id"], "prompt_ids": p + g["completion_ids"]} for g, p in zip(gen, prompts)])
    expect_ok(tiny("score", inp2, out2))
    for s in read_jsonl(out2):
        check(s["greedy"] is True, f"request {s['id']}: completion is not the argmax of the full forward")


def case_ids_echoed(d):
    inp, out = os.path.join(d, "in.jsonl"), os.path.join(d, "out.jsonl")
    ids = ["plain", "quote \" and \\ and \u00fc\u4e2d", "", 0, -7, 123456789012345, 2.5, "42"]
    write_jsonl(inp, [{"id": x, "prompt_ids": [1, 2, 3]} for x in ids])
    for mode in ("score", "generate"):
        expect_ok(tiny(mode, inp, out, "--max-new-tokens", "2"))
        got = [r["id"] for r in read_jsonl(out)]
        check(got == ids and [type(x) for x in got] == [type(x) for x in ids], f"{mode}: ids {got} != {ids}")


def order_requests():
    # different prompt lengths and completion limits so they finish out of order
    lens = [60, 3, 25, 1, 90, 8, 14]
    news = [2, 30, 5, 17, 1, 9, 0]
    return [{"id": f"r{i}", "prompt_ids": [(31 * i + 7 * j + 1) % V for j in range(n)], "max_new_tokens": m}
            for i, (n, m) in enumerate(zip(lens, news))]


def case_input_order(d):
    inp = os.path.join(d, "in.jsonl")
    reqs = order_requests()
    write_jsonl(inp, reqs)
    outs = {}
    for mode in ("generate", "score"):
        if mode == "score":
            write_jsonl(inp, [{"id": r["id"], "prompt_ids": r["prompt_ids"]} for r in reqs])
        for cfg in (["--batch-size", "3"], ["--batch-size", "1"], ["--batch-size", "3", "--max-batch-tokens", "4"],
                    ["--batch-size", "8", "--max-batch-tokens", "2"]):
            out = os.path.join(d, f"out-{mode}-{len(outs)}.jsonl")
            expect_ok(tiny(mode, inp, out, *cfg))
            res = read_jsonl(out)
            check([r["id"] for r in res] == [r["id"] for r in reqs], f"{mode} {cfg}: results not in input order")
            outs[(mode, tuple(cfg))] = res
        base = outs[(mode, ("--batch-size", "3"))]
        for k, v in outs.items():
            if k[0] != mode:
                continue
            if mode == "generate":
                check(v == base, f"generate {k[1]} differs from --batch-size 3")
            else:
                for a, b in zip(v, base):
                    err = max([abs(x - y) for x, y in zip(a["logprobs"], b["logprobs"])], default=0.0)
                    check(err < 1e-4, f"score {k[1]}: request {a['id']} logprobs differ by {err}")


def case_stdin_stdout(d):
    inp, out = os.path.join(d, "in.jsonl"), os.path.join(d, "out.jsonl")
    reqs = order_requests()[:4]
    write_jsonl(inp, reqs)
    expect_ok(tiny("generate", inp, out, "--batch-size", "2"))
    with open(inp) as f:
        text = f.read()
    so, se = expect_ok(tiny("generate", "-", "-", "--batch-size", "2"), stdin=text)
    with open(out) as f:
        check(so == f.read(), "stdin/stdout run differs from the file run")
    check("requests" not in so, "summary went to stdout")
    # errors on stdin name the line too
    expect_fail(tiny("generate", "-", "-"), 1, ["line 2", "JSON"], stdin='{"id": 1, "prompt_ids": [1]}\n{oops\n')
    # an input named by a path that can be read once (a FIFO, a shell's
    # <(...)): nothing reads it ahead of the run (progress count, the
    # output's input record), so every request is answered
    fifo, out2 = os.path.join(d, "in.fifo"), os.path.join(d, "out2.jsonl")
    os.mkfifo(fifo)
    writer = subprocess.Popen(["sh", "-c", 'cat "$1" > "$2"', "sh", inp, fifo])
    try:
        rc, so, se = run(tiny("generate", fifo, out2, "--batch-size", "2", "--progress", "on"), timeout=20)
    except subprocess.TimeoutExpired:
        rc, se = None, "hung (the input was read to its end before the run opened it?)"
    writer.kill()
    writer.wait()
    if check(rc == 0, f"a FIFO input: exit {rc}: {se.strip()[-300:]}"):
        with open(out) as f, open(out2) as g:
            check(g.read() == f.read(), "a FIFO input: the output differs from the file run")
        with open(out2 + ".meta.json") as f:
            check("input" not in json.load(f), "a FIFO input: its bytes recorded (it was read twice)")
    # --resume from stdin (read once, not checkable): the record of the file
    # the output was made from stays, so a later resume from another file is
    # still refused
    with open(out + ".meta.json") as f:
        rec = json.load(f)["input"]
    rc, so, se = run(tiny("generate", "-", out, "--batch-size", "2", "--resume"), stdin=text)
    check(rc == 0 and "cannot be checked" in se, f"--resume from stdin: exit {rc}, warns: {se.strip()[-200:]}")
    with open(out + ".meta.json") as f:
        check(json.load(f).get("input") == rec, "--resume from stdin: the input record was dropped")
    other = os.path.join(d, "other.jsonl")
    write_jsonl(other, [dict(r, prompt_ids=[7, 7, 7]) for r in reqs])
    expect_fail(tiny("generate", other, out, "--batch-size", "2", "--resume"), 1,
                ["cannot resume", "is the output that of another input?"])
    # stderr closed under the run (grok1-run ... 2>&1 | head): the summary
    # cannot be written, the output is completed all the same
    out4 = os.path.join(d, "closed_stderr.jsonl")
    r, w = os.pipe()
    os.close(r)
    p = subprocess.run([ARGS.run] + tiny("generate", inp, out4, "--progress", "on"), stderr=w,
                       stdout=subprocess.DEVNULL)
    os.close(w)
    check(p.returncode == 0 and os.path.exists(out4) and not os.path.exists(out4 + ".partial"),
          f"a run whose stderr is a closed pipe: exit {p.returncode}, OUT made: {os.path.exists(out4)}")
    # an output made from stdin (no record of its input) resumed from stdin:
    # warned all the same
    out3 = os.path.join(d, "stdin_made.jsonl")
    rc, so, se = run(tiny("generate", "-", out3, "--batch-size", "2"), stdin=text)
    check(rc == 0, f"a run from stdin: exit {rc}")
    rc, so, se = run(tiny("generate", "-", out3, "--batch-size", "2", "--resume"), stdin=text)
    check(rc == 0 and "cannot be checked" in se and "only their ids are matched" in se,
          f"--resume from stdin of an output made from stdin: exit {rc}, warns: {se.strip()[-200:]}")


def case_max_context(d):
    """--max-context N: a sequence holds at most N positions. Longer prompts
    are refused (naming the option) or cut from the left; generation ends at
    N with "length"; requests within it get exactly the results of a run
    without it; the bound is recorded, so a resume with another is refused;
    N above max_seq_len or below 1 is a usage error, and so is 1 in generate
    mode (no room for a prompt token and a new one)."""
    N = 16
    a = [(7 * i + 3) % V for i in range(20)]
    b = [5, 6, 7]
    inp = os.path.join(d, "in.jsonl")
    write_jsonl(inp, [{"id": "a", "prompt_ids": a}, {"id": "b", "prompt_ids": b}])
    out = os.path.join(d, "out.jsonl")
    expect_fail(tiny("score", inp, out, "--max-context", str(N)), 1,
                ["input line 1", "20 tokens", f"is {N + 1}", f"--max-context {N}", f"max_seq_len is {MAX_SEQ}",
                 "--truncate left"], out=out)
    for bad in ("0", "-3", "x"):
        expect_fail(tiny("score", inp, out, "--max-context", bad), 2, ["--max-context"], out=out)
    expect_fail(tiny("score", inp, out, "--max-context", str(MAX_SEQ + 1)), 2,
                [f"--max-context {MAX_SEQ + 1}", f"max_seq_len ({MAX_SEQ})"], out=out)
    # generate with one position: no room for a prompt token and a new one
    # (a prompt cut to nothing once generated from an empty sequence)
    expect_fail(tiny("generate", inp, out, "--max-context", "1", "--truncate", "left"), 2,
                ["generate needs a context of at least 2 positions", "--max-context is 1"], out=out)
    one = os.path.join(d, "one.jsonl")
    expect_ok(tiny("score", inp, one, "--max-context", "1", "--truncate", "left"))
    got = read_jsonl(one)
    check([g["prompt_tokens"] for g in got] == [2, 2] and got[0]["truncated"] == len(a) - 2,
          f"score with --max-context 1 --truncate left: {got}; expected 2 tokens each (one fed, one predicted)")
    # score: a cut to its last N + 1 tokens (N positions fed, the last token
    # only predicted) scores as those tokens alone; b as without the bound
    cut = os.path.join(d, "cut.jsonl")
    write_jsonl(cut, [{"id": "a", "prompt_ids": a[-(N + 1):]}, {"id": "b", "prompt_ids": b}])
    expect_ok(tiny("score", inp, out, "--max-context", str(N), "--truncate", "left"))
    expect_ok(tiny("score", cut, os.path.join(d, "ref.jsonl")))
    got, ref = read_jsonl(out), read_jsonl(os.path.join(d, "ref.jsonl"))
    check(got[0]["prompt_tokens"] == N + 1 and got[0]["truncated"] == len(a) - N - 1,
          f"score a: {got[0]['prompt_tokens']} tokens, {got[0].get('truncated')} cut; expected {N + 1}, "
          f"{len(a) - N - 1}")
    check(got[0]["logprobs"] == ref[0]["logprobs"] and got[1] == ref[1],
          "score within --max-context differs from the same tokens scored without it")
    meta = json.load(open(out + ".meta.json"))
    check(meta["settings"].get("max_context") == N, f"meta.json does not record max_context: {meta['settings']}")
    # generate: room for N - len(prompt) tokens; a keeps its last N - 1
    gout, gref = os.path.join(d, "gen.jsonl"), os.path.join(d, "gen_ref.jsonl")
    expect_ok(tiny("generate", inp, gout, "--max-context", str(N), "--truncate", "left", "--max-new-tokens", "40",
                   "--seed", "3", "--temperature", "1"))
    write_jsonl(cut, [{"id": "a", "prompt_ids": a[-(N - 1):]}, {"id": "b", "prompt_ids": b}])
    expect_ok(tiny("generate", cut, gref, "--max-new-tokens", "40", "--seed", "3", "--temperature", "1"))
    got, ref = read_jsonl(gout), read_jsonl(gref)
    check(got[0]["prompt_tokens"] == N - 1 and got[0]["truncated"] == len(a) - N + 1, f"generate a: {got[0]}")
    for g, r in zip(got, ref):
        room = N - g["prompt_tokens"]
        if r["finish_reason"] == "eos" and len(r["completion_ids"]) < room:
            check(g == r, f"{g['id']}: ended by eos within the bound, yet differs: {g} vs {r}")
        else:
            check(g["finish_reason"] == "length" and g["completion_ids"] == r["completion_ids"][:room],
                  f"{g['id']}: expected the first {room} tokens of the unbounded completion, then 'length': "
                  f"{g} vs {r}")
    # the planner's memory check counts N positions per slot (tiny, 8 slots:
    # 4.6 MiB at 256 positions, 2.8 MiB at 16)
    mem = os.path.join(d, "mem.jsonl")
    expect_fail(tiny("score", cut, mem, "--mem-per-rank", "3500K"), 2, ["--mem-per-rank is 3.4 MiB", "--max-context, now 256"],
                out=mem)
    expect_ok(tiny("score", cut, mem, "--mem-per-rank", "3500K", "--max-context", str(N)))
    # resume: the bound is a setting of the output
    whole = open(out).read()
    with open(out + ".partial", "w") as f:
        f.write(whole.splitlines(keepends=True)[0])
    os.remove(out)
    expect_fail(tiny("score", inp, out, "--max-context", "32", "--truncate", "left", "--resume"), 1,
                ["max_context", "32", str(N)])
    expect_fail(tiny("score", inp, out, "--truncate", "left", "--resume"), 1, ["max_context"])
    expect_ok(tiny("score", inp, out, "--max-context", str(N), "--truncate", "left", "--resume"))
    check(open(out).read() == whole, "resumed with the same --max-context: not the uninterrupted output")


def case_continuation_ids(d):
    """"continuation_ids" (with "prompt_ids", score mode): lm-eval style
    scoring of token ids. The log-probs are those of the same tokens scored
    whole, bitwise; --truncate left cuts only the prompt part."""
    inp, whole = os.path.join(d, "in.jsonl"), os.path.join(d, "whole.jsonl")
    P, C = [(11 * i + 4) % V for i in range(30)], [(5 * i + 9) % V for i in range(6)]
    write_jsonl(inp, [{"id": "c", "prompt_ids": P, "continuation_ids": C},
                      {"id": "one", "prompt_ids": [3], "continuation_ids": [4]}])
    write_jsonl(whole, [{"id": "c", "prompt_ids": P + C}, {"id": "one", "prompt_ids": [3, 4]}])
    out, ref = os.path.join(d, "out.jsonl"), os.path.join(d, "ref.jsonl")
    expect_ok(tiny("score", inp, out))
    expect_ok(tiny("score", whole, ref))
    for g, r, n in zip(read_jsonl(out), read_jsonl(ref), (len(P), 1)):
        check(list(g) == ["id", "prompt_tokens", "continuation_tokens", "logprobs", "sum_logprob", "is_greedy"],
              f"keys {list(g)}")
        m = r["prompt_tokens"] - n
        check(g["prompt_tokens"] == n and g["continuation_tokens"] == m, f"{g['id']}: token counts {g}")
        check(g["logprobs"] == r["logprobs"][n - 1:], f"{g['id']}: log-probs differ from the whole sequence's")
        check(abs(g["sum_logprob"] - sum(r["logprobs"][n - 1:])) < 1e-9, f"{g['id']}: sum_logprob")
    # too long for the context: refused, or its prompt part cut from the left
    long_p = [(3 * i + 1) % V for i in range(MAX_SEQ - 2)]
    write_jsonl(inp, [{"id": "long", "prompt_ids": long_p, "continuation_ids": C}])
    refused = os.path.join(d, "refused.jsonl")
    expect_fail(tiny("score", inp, refused), 1, ["input line 1", f"{MAX_SEQ + 4} tokens", "--truncate left"],
                out=refused)
    expect_ok(tiny("score", inp, out, "--truncate", "left"))
    g = read_jsonl(out)[0]
    check(g["truncated"] == 3 and g["prompt_tokens"] == MAX_SEQ - 5 and g["continuation_tokens"] == len(C),
          f"truncated continuation request: {g}")
    write_jsonl(inp, [{"id": "cont", "prompt_ids": [1], "continuation_ids": [2] * (MAX_SEQ + 1)}])
    expect_fail(tiny("score", inp, refused, "--truncate", "left"), 1, ["input line 1"], out=refused)


def reused(stderr):
    """Prompt positions the summary line says were held from earlier requests."""
    m = re.search(r"\((\d+) of them held from earlier requests", stderr)
    return int(m.group(1)) if m else 0


def held_one_slot(reqs, mode, dump=False):
    """The positions a run with one slot reuses: each request shares with the
    previous one's prompt (what the slot's caches hold) up to the first
    position whose logits it needs; a plain score request up to the first
    position whose log-prob the slot does not keep (those of the last plain
    score request, as far as later requests left its tokens in place). A
    score request's last token is not fed without the dump: it is only
    predicted; one with nothing left to feed leaves the caches as they are."""
    total, held, nlp = 0, [], 0
    for r in reqs:
        toks = r["prompt_ids"] + r.get("continuation_ids", [])
        plain = mode == "score" and not dump and "continuation_ids" not in r
        if mode == "generate":
            first = len(toks) - 1
            if r.get("max_new_tokens") == 0:
                continue  # done before it is fed: the slot keeps what it holds
        else:
            first = len(toks) if plain else 0 if dump else len(r["prompt_ids"]) - 1
        fed = len(toks) - 1 if mode == "score" and not dump else len(toks)
        n = 0
        while n < min(first, len(held)) and held[n] == toks[n]:
            n += 1
        if plain:
            n = max(0, min(n - 1, nlp))
        total += n
        if fed > n:  # positions n.. go in: the caches hold the fed tokens
            held = toks[:fed]
            nlp = min(nlp, max(n - 1, 0))
        if plain and len(toks) > 1:
            nlp = len(toks) - 1
    return total


def case_prefix_cache(d):
    """--prefix-cache (on by default): a request starts after the prefix it
    shares with what its slot's caches hold. The results are bitwise those
    of --prefix-cache off in every batching; with one slot the positions
    reused are exactly the shared prefixes; with several, the continuations
    of one context are scored one after the other in its slot; plain scoring
    reuses the log-probs kept from earlier plain requests; nothing is reused
    with --dump-logits. A request that is not a plain score also starts from
    a prefix another slot holds or is computing, copied into its slot (a
    fork): samples of one prompt beside each other compute it once, as the
    most reuse possible (the longest prefix shared with any earlier request)
    says."""
    import random
    rnd = random.Random(4)
    shots = [rnd.randrange(3, V) for _ in range(60)]
    mc = []
    for q in range(10):
        ctx = shots + [rnd.randrange(3, V) for _ in range(rnd.randint(10, 40))]
        for c in range(4):
            mc.append({"id": f"q{q}.{c}", "prompt_ids": ctx,
                       "continuation_ids": [rnd.randrange(3, V) for _ in range(rnd.randint(1, 5))]})
        if q % 3 == 1:  # plain scoring among them: needs every position's log-prob
            mc.append({"id": f"plain{q}", "prompt_ids": ctx[:50]})
    gen = [{"id": i, "prompt_ids": shots + [rnd.randrange(3, V) for _ in range(rnd.randint(2, 30))],
            "max_new_tokens": rnd.randint(0, 12), "temperature": 0.8, "seed": i} for i in range(16)]
    gen.insert(5, dict(gen[4], id="again"))  # a prompt twice
    # perplexity-style plain scoring: documents behind one header, one twice,
    # one cut short and one extended, a one-token request, and continuations
    # of the header among them (which keep only part of the log-probs)
    head = [rnd.randrange(3, V) for _ in range(40)]
    docs = [head + [rnd.randrange(3, V) for _ in range(rnd.randint(3, 30))] for _ in range(8)]
    plain = [{"id": f"doc{i}", "prompt_ids": t} for i, t in enumerate(docs)]
    plain.insert(3, {"id": "again", "prompt_ids": docs[2]})
    plain.insert(5, {"id": "cut", "prompt_ids": docs[3][:45]})
    plain.insert(6, {"id": "longer", "prompt_ids": docs[3] + [rnd.randrange(3, V) for _ in range(9)]})
    plain.insert(8, {"id": "one", "prompt_ids": [head[0]]})
    plain.insert(9, {"id": "cont", "prompt_ids": head[:30], "continuation_ids": head[30:35]})
    plain.insert(10, {"id": "after", "prompt_ids": head + [7, 8, 9]})
    # pass@k style: 4 samples of each few-shot prompt, side by side
    samples = []
    for q in range(6):
        prompt = shots + [rnd.randrange(3, V) for _ in range(rnd.randint(3, 20))]
        samples += [{"id": f"s{q}.{k}", "prompt_ids": prompt, "max_new_tokens": rnd.randint(1, 8),
                     "temperature": 1.0, "seed": 10 * q + k} for k in range(4)]
    sin, gin, pin, kin = (os.path.join(d, f"{n}.jsonl") for n in ("mc", "gen", "plain", "samples"))
    write_jsonl(sin, mc)
    write_jsonl(gin, gen)
    write_jsonl(pin, plain)
    write_jsonl(kin, samples)

    def most(reqs):  # each prompt after the longest prefix it shares with any earlier one
        got, seen = 0, []
        for r in reqs:
            p, best = r["prompt_ids"], 0
            for q in seen:
                n = 0
                while n < len(p) - 1 and n < len(q) and p[n] == q[n]:
                    n += 1
                best = max(best, n)
            got += best
            seen.append(p)
        return got

    for tag, mode, inp, reqs in (("mc", "score", sin, mc), ("generate", "generate", gin, gen),
                                 ("plain", "score", pin, plain), ("samples", "generate", kin, samples)):
        off = os.path.join(d, f"{tag}_off.jsonl")
        _, se = expect_ok(tiny(mode, inp, off, "--prefix-cache", "off"))
        check(reused(se) == 0 and "held from earlier" not in se, f"{tag}: --prefix-cache off reused: {se.strip()}")
        want = held_one_slot(reqs, mode)
        ideal = sum(len(r["prompt_ids"]) - 1 for r in reqs if "continuation_ids" in r) if tag == "mc" else 0
        for extra in (["--batch-size", "1"], ["--batch-size", "4", "--max-batch-tokens", "7"],
                      ["--batch-size", "3", "--micro-batches", "2"], []):
            out = os.path.join(d, f"{tag}_on.jsonl")
            _, se = expect_ok(tiny(mode, inp, out, *extra))
            check(open(out).read() == open(off).read(), f"{tag} {extra}: results differ from --prefix-cache off")
            got = reused(se)
            print(f"{tag} {' '.join(extra) or '(defaults)'}: {got} prompt positions reused "
                  f"(one slot: {want}{f', the most possible {ideal}' if ideal else ''})")
            m = re.search(r"(\d+) copied from another slot", se)
            forked = int(m.group(1)) if m else 0
            if forked:
                print(f"  {forked} of them copied from another slot")
            if extra == ["--batch-size", "1"]:
                check(got == want, f"{tag}, one slot: {got} positions reused, expected {want}")
            elif tag == "samples":
                check(forked > 0, f"samples {extra}: no prefix copied between slots")
                if extra == ["--batch-size", "4", "--max-batch-tokens", "7"]:
                    check(got == most(samples), f"samples {extra}: {got} positions reused, the most possible is "
                                                f"{most(samples)}")
            elif tag == "mc":
                # the 4 continuations of a context run in one slot, one after the other
                check(got >= 0.9 * want, f"{tag} {extra}: only {got} positions reused, one slot reuses {want}")
            else:
                check(got > 0, f"{tag} {extra}: nothing reused")
    if ARGS.hdf5:
        lg_on, lg_off = os.path.join(d, "on.h5"), os.path.join(d, "off.h5")
        on, off = os.path.join(d, "d_on.jsonl"), os.path.join(d, "d_off.jsonl")
        _, se = expect_ok(tiny("score", sin, on, "--dump-logits", lg_on, "--batch-size", "2"))
        check(reused(se) == 0, f"--dump-logits: {reused(se)} positions reused; every position's logits are needed")
        expect_ok(tiny("score", sin, off, "--dump-logits", lg_off, "--batch-size", "2", "--prefix-cache", "off"))
        check(open(on).read() == open(off).read(), "--dump-logits: results differ with --prefix-cache on")
    expect_fail(tiny("score", sin, os.path.join(d, "x.jsonl"), "--prefix-cache", "yes"), 2,
                ["--prefix-cache yes", "on or off"])


def case_prefix_cache_slots(d):
    """lm-eval multiple-choice shape (a context, then many short
    continuations of it, one after another): every batching computes each
    context once, as one slot does, and reuses it for all its continuations
    (by the slot's own caches or by forks). Two ways more slots computed
    contexts again (docs/PERFORMANCE.md, 2026-12-04: 97% of prompt
    positions reused with 8 slots, 78% with 256): a request took a fork into
    a free slot holding another context, still wanted, where a free slot
    holding its own context was as good (here from 8 slots on); and a
    request was started in the free slot that forks not yet planned were to
    copy a context from, which they then computed again (here with 64
    slots). The results are those of --prefix-cache off."""
    import random
    rnd = random.Random(5)
    C, L, N = 12, 32, 40  # contexts, their length, continuations of each
    reqs = []
    for q in range(C):
        ctx = [rnd.randrange(3, V) for _ in range(L)]
        reqs += [{"id": f"q{q}.{c}", "prompt_ids": ctx, "continuation_ids": [rnd.randrange(3, V) for _ in range(3)]}
                 for c in range(N)]
    inp = os.path.join(d, "mc.jsonl")
    write_jsonl(inp, reqs)
    off = os.path.join(d, "off.jsonl")
    expect_ok(tiny("score", inp, off, "--prefix-cache", "off"))
    # a continuation needs the logits of the context's last position: each
    # request but a context's first skips the other L - 1 (no two contexts
    # here share a first token)
    most = C * (N - 1) * (L - 1)
    for extra in (["--batch-size", "1"], ["--batch-size", "8", "--max-batch-tokens", "64"],
                  ["--batch-size", "16", "--max-batch-tokens", "256"],
                  ["--batch-size", "64", "--max-batch-tokens", "256"],
                  ["--batch-size", "8", "--micro-batches", "2", "--max-batch-tokens", "64"], ["--batch-size", "256"]):
        out = os.path.join(d, "on.jsonl")
        _, se = expect_ok(tiny("score", inp, out, *extra))
        check(open(out).read() == open(off).read(), f"{extra}: results differ from --prefix-cache off")
        print(f"{' '.join(extra)}: {reused(se)} prompt positions reused (each context computed once: {most})")
        check(reused(se) == most, f"{extra}: {reused(se)} prompt positions reused, not {most}: a context was "
                                  f"computed more than once")


def case_prefix_cache_stale(d):
    """A busy slot is offered as a fork source for all its caches hold,
    also the positions past where its request started, which its next batch
    writes over (fork_share, mpi/driver.c). A fork copies what the driver's
    record of the source says when the fork is planned into a batch, and
    that is what the source's caches hold when it runs: micro-batches run
    in the order submitted, a batch's forks before its tokens. So a fork
    planned before the source's next batch (or in the same one) copies
    those positions, and one planned after gets fewer. Short prompts whose
    first three tokens come from three values make such forks common (each
    batching here: a few dozen forks copied positions their busy source had
    rewound past, and others were offered them and got fewer; counted by a
    print while the test was made, not kept). The results are those of
    --prefix-cache off in every batching."""
    import random
    rnd = random.Random(6)

    def prompt():
        return [rnd.choice((3, 4, 5)) for _ in range(3)] + [rnd.randrange(3, V) for _ in range(rnd.randint(1, 6))]
    cont = [{"id": i, "prompt_ids": prompt(), "continuation_ids": [rnd.randrange(3, V) for _ in range(2)]}
            for i in range(300)]
    gen = [{"id": i, "prompt_ids": prompt(), "max_new_tokens": rnd.randint(1, 4)} for i in range(200)]
    for tag, mode, reqs in (("cont", "score", cont), ("generate", "generate", gen)):
        inp, off = os.path.join(d, f"{tag}.jsonl"), os.path.join(d, f"{tag}_off.jsonl")
        write_jsonl(inp, reqs)
        expect_ok(tiny(mode, inp, off, "--prefix-cache", "off"))
        for extra in (["--batch-size", "8"], ["--batch-size", "4", "--micro-batches", "2"],
                      ["--batch-size", "3", "--micro-batches", "2", "--max-batch-tokens", "7"], ["--batch-size", "64"]):
            out = os.path.join(d, f"{tag}_on.jsonl")
            _, se = expect_ok(tiny(mode, inp, out, *extra))
            m = re.search(r"(\d+) copied from another slot", se)
            forked = int(m.group(1)) if m else 0
            print(f"{tag} {' '.join(extra)}: {reused(se)} prompt positions reused, {forked} copied from another slot")
            check(forked > 0, f"{tag} {extra}: no prefix copied between slots")
            check(open(out).read() == open(off).read(), f"{tag} {extra}: results differ from --prefix-cache off")
    # By hand, 2 slots in one micro-batch: requests 0 and 1 take both and
    # finish in the first step. Request 2 shares its first token with
    # request 0 and starts in slot 0 (its own caches give it that token:
    # reused 1), which rewinds slot 0 to 1 position, but its record keeps
    # request 0's 8-token prompt (and continuation) until slot 0's next
    # batch is built. Request 3 wants that prompt: slot 0 offers it, and
    # request 3 forks all 8 positions into slot 1 (planned first in that
    # batch, before request 2's tokens are written over them): reused 9,
    # copied 8. Offering only what request 2's own prompt gives (mutant
    # D21 of scripts/mutants-2026-12-05.txt, the stale offer dropped)
    # copies 1.
    ctx = list(range(3, 11))
    reqs = [{"id": 0, "prompt_ids": ctx, "continuation_ids": [11, 12]},
            {"id": 1, "prompt_ids": [20, 21, 22], "continuation_ids": [23]},
            {"id": 2, "prompt_ids": [3, 30, 31, 32], "continuation_ids": [33]},
            {"id": 3, "prompt_ids": ctx + [40], "continuation_ids": [41]}]
    inp, off, out = (os.path.join(d, f"hand{x}.jsonl") for x in ("", "_off", "_on"))
    write_jsonl(inp, reqs)
    expect_ok(tiny("score", inp, off, "--prefix-cache", "off"))
    _, se = expect_ok(tiny("score", inp, out, "--batch-size", "2"))
    m = re.search(r"(\d+) copied from another slot", se)
    forked = int(m.group(1)) if m else 0
    print(f"by hand: {reused(se)} prompt positions reused, {forked} copied from another slot (want 9 and 8)")
    check((reused(se), forked) == (9, 8), f"by hand: {reused(se)} reused, {forked} copied, not 9 and 8: request 3 "
                                          f"did not fork request 0's prompt from slot 0's stale positions")
    check(open(out).read() == open(off).read(), "by hand: results differ from --prefix-cache off")


def case_prefix_cache_guard(d):
    """A free slot that forks not yet planned will copy from is kept for
    them (best_free, mpi/driver.c): a request goes to another free slot,
    or waits when there is none, unless it keeps what they want of that
    slot or loses them fewer than WAIT_GAIN (16) positions. Two inputs made
    by hand, generate mode, one micro-batch, 8 tokens a step; slot 0 runs
    request q (8 tokens, then 12 new ones, one a step), slot 1 request p
    (a 16- or 24-token prompt, 7 tokens a step after q's), and request x,
    the prompt of p and one token more, forks p's prompt into slot 2 once
    p has submitted it. p finishes before x's fork is planned (the fork
    waited at the start of the step that submitted p's last tokens), so
    p's slot is free and wanted by that fork. The reuse and fork counts of each are
    worked out below; the scheduler mutants of
    scripts/mutants-2026-12-05.txt that change the keeping (D01, D03, D07,
    D15, D22) fail one or both. The results are those of --prefix-cache
    off."""
    P16, P24, Q = list(range(100, 116)), list(range(100, 124)), list(range(200, 208))

    def counts(tag, reqs, slots):
        inp, off, out = (os.path.join(d, f"{tag}{x}.jsonl") for x in ("", "_off", "_on"))
        write_jsonl(inp, reqs)
        expect_ok(tiny("generate", inp, off, "--prefix-cache", "off"))
        _, se = expect_ok(tiny("generate", inp, out, "--batch-size", str(slots), "--max-batch-tokens", "8"))
        check(open(out).read() == open(off).read(), f"{tag}: results differ from --prefix-cache off")
        m = re.search(r"(\d+) copied from another slot", se)
        return reused(se), int(m.group(1)) if m else 0

    # (a) 3 slots, p's prompt 16 tokens. When p finishes, request y (q's
    # prompt and one token) finds only slot 1 free: its own caches give y
    # nothing there, and x's fork wants 16 positions of it, 0 + 16 at
    # least: y waits a step. x forks 16, then y forks q's 8 from slot 0:
    # 24 reused, all copied. Started in slot 1 at once (its fork from slot
    # 0 planned first, slot 1 before 2), y would overwrite p's prompt and x
    # would compute it: 8 and 8 (D03: > for >=, D15: never waits, D22: the
    # next slot's fork_need read).
    got = counts("a", [{"id": "q", "prompt_ids": Q, "max_new_tokens": 12},
                       {"id": "p", "prompt_ids": P16, "max_new_tokens": 1},
                       {"id": "x", "prompt_ids": P16 + [300], "max_new_tokens": 1},
                       {"id": "y", "prompt_ids": Q + [301], "max_new_tokens": 1}], 3)
    print(f"(a): {got[0]} prompt positions reused, {got[1]} copied from another slot (want 24 and 24)")
    check(got == (24, 24), f"(a): {got[0]} reused, {got[1]} copied, not 24 and 24: y did not wait for x's fork "
                           f"from the slot it is kept for")
    # (b) 4 slots, p's prompt 24 tokens, and request z (2 tokens) in slot
    # 3, which finishes with p: slots 1 and 3 free, x's fork wanting 24 of
    # slot 1. Request y, p's first 8 tokens and one more: slot 1's own
    # caches give it 8, but it is kept (24 >= 8 + 16), so y goes to slot 3
    # at once, forking those 8 from slot 1. Request y2 (q's prompt and one
    # more) finds only slot 1 free, kept (24 >= 0 + 16): it waits. Then x
    # forks 24 and y 8, and y2 forks q's 8 from slot 0 into slot 1: 40
    # reused, all copied. Taking y's fork as the need of slot 1 (D01: 8),
    # y2 starts there at once and its fork overwrites p's prompt first: 8
    # and 8 (D15 too); slot 1 not kept from y (D03, D22) or chosen for its
    # own 8 over slot 3's fork of as many, y then waiting for it (D07): y
    # reuses its 8 there, 40 and 32.
    got = counts("b", [{"id": "q", "prompt_ids": Q, "max_new_tokens": 12},
                       {"id": "p", "prompt_ids": P24, "max_new_tokens": 1},
                       {"id": "x", "prompt_ids": P24 + [300], "max_new_tokens": 1},
                       {"id": "z", "prompt_ids": [400, 401], "max_new_tokens": 1},
                       {"id": "y", "prompt_ids": P24[:8] + [301], "max_new_tokens": 1},
                       {"id": "y2", "prompt_ids": Q + [302], "max_new_tokens": 1}], 4)
    print(f"(b): {got[0]} prompt positions reused, {got[1]} copied from another slot (want 40 and 40)")
    check(got == (40, 40), f"(b): {got[0]} reused, {got[1]} copied, not 40 and 40: a slot kept for x's fork was "
                           f"taken, or y waited for it when another was free")


def merge_run(args):
    p = subprocess.run([ARGS.merge] + args, capture_output=True, text=True, timeout=60)
    return p.returncode, p.stderr


def dump_differs(a, b):
    """None when the HDF5 files a and b hold the same logits dump: the same
    root attributes (values and HDF5 types), the same groups and datasets,
    each of the same shape, type, bits and checksum; else the first
    difference."""
    import h5py
    import numpy as np
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        for x, y, where in ((fa, fb, "/"), (fa["logits"], fb["logits"], "/logits")):
            if sorted(x.attrs) != sorted(y.attrs):
                return f"{where}: attributes {sorted(x.attrs)} vs {sorted(y.attrs)}"
            for k in x.attrs:
                if not (x.attrs[k] == y.attrs[k] and x.attrs.get_id(k).get_type().equal(y.attrs.get_id(k).get_type())):
                    return f"{where}: attribute {k} is {x.attrs[k]!r} vs {y.attrs[k]!r}"
            if sorted(x) != sorted(y):
                return f"{where} holds {sorted(x)} vs {sorted(y)}"
        for k in fb["logits"]:
            x, y = fa["logits"][k], fb["logits"][k]
            if not isinstance(x, h5py.Dataset) or x.shape != y.shape or x.dtype != y.dtype:
                return f"logits/{k}: {x} vs {y}"
            if not np.array_equal(x[()].view(np.uint32), y[()].view(np.uint32)):
                return f"logits/{k}: the values differ"
            if sorted(x.attrs) != ["crc32", "id", "tokens"] or sorted(y.attrs) != sorted(x.attrs) or any(
                    not np.array_equal(x.attrs[a], y.attrs[a]) for a in x.attrs):
                return f"logits/{k}: attributes {dict(x.attrs)} vs {dict(y.attrs)}"
    return None


def case_shard(d):
    """--shard K/N: N runs share one input, run K taking requests K, K + N,
    ... (blank lines are not requests). Each shard's results are those of the
    unsharded run (sampling is keyed by the input position); grok1-merge
    joins the N outputs, given in any order, into the unsharded output's
    bytes and meta file. A shard resumes like any output (a dump too), and a
    resume with another shard is refused. grok1-merge refuses, writing
    nothing, shards that are missing, doubled, of another split, unfinished,
    made with other settings, cut short or torn; bad --shard values are
    usage errors. With --dump-logits D it also joins the shards' logits
    dumps into the unsharded run's dump (merge_dumps); a build without HDF5
    refuses that (exit 2)."""
    if not ARGS.merge:
        print("grok1-merge not built: skipped")
        return SKIP
    import random
    rnd = random.Random(12)
    rows = [{"id": f"r{i}", "prompt_ids": [rnd.randrange(3, V) for _ in range(rnd.randint(1, 25))],
             "max_new_tokens": rnd.randint(1, 9)} for i in range(13)]
    inp, sinp = os.path.join(d, "in.jsonl"), os.path.join(d, "score.jsonl")
    for path, keep in ((inp, ("id", "prompt_ids", "max_new_tokens")), (sinp, ("id", "prompt_ids"))):
        with open(path, "w") as f:
            for i, r in enumerate(rows):
                f.write(json.dumps({k: r[k] for k in keep}) + "\n")
                if i % 5 == 2:
                    f.write("\n   \n")
    samp = ["--temperature", "0.9", "--top-p", "0.95", "--seed", "11"]
    outs = {}
    for mode in ("generate", "score"):
        ref = os.path.join(d, f"{mode}.ref.jsonl")
        inp_m = inp if mode == "generate" else sinp
        expect_ok(tiny(mode, inp_m, ref, *samp))
        for n in (3, 20):  # 20 > 13 requests: some shards get none
            outs[mode, n] = []
            for k in range(n):
                o = os.path.join(d, f"{mode}.{k}-of-{n}.jsonl")
                _, se = expect_ok(tiny(mode, inp_m, o, "--shard", f"{k}/{n}", *samp))
                check(re.search(rf"requests? \(shard {k}/{n}\)", se), f"summary line does not name the shard: {se!r}")
                ids = [r["id"] for r in read_jsonl(o)]
                check(ids == [r["id"] for r in rows[k::n]], f"{mode} shard {k}/{n} answered {ids}")
                outs[mode, n].append(o)
            m = os.path.join(d, f"{mode}.merged{n}.jsonl")
            rc, se = merge_run(["--input", inp_m, "--output", m] + outs[mode, n][::-1])
            check(rc == 0, f"grok1-merge failed: {se}")
            check(open(m).read() == open(ref).read(), f"{mode}: {n} shards merged differ from the unsharded output")
            with open(m + ".meta.json") as a, open(ref + ".meta.json") as b:
                check(json.load(a) == json.load(b), f"{mode}: merged meta differs from the unsharded run's")
    # resume a shard: keep its first result, run the rest
    o = outs["generate", 3][1]
    whole = open(o).read()
    os.remove(o)
    with open(o + ".partial", "w") as f:
        f.write(whole.splitlines(keepends=True)[0])
    expect_fail(tiny("generate", inp, o, "--shard", "2/3", "--resume", *samp), 1, ["settings.shard", '"2/3"', '"1/3"'])
    _, se = expect_ok(tiny("generate", inp, o, "--shard", "1/3", "--resume", *samp))
    check("resumed after 1 results" in se and open(o).read() == whole, f"resumed shard differs: {se}")
    # grok1-merge's refusals: exit 1, nothing written
    g3 = outs["generate", 3]
    dst = os.path.join(d, "m.jsonl")

    def refused(files, words, code=1, inp_m=inp):
        rc, se = merge_run(["--input", inp_m, "--output", dst] + files)
        check(rc == code, f"grok1-merge {files}: exit {rc}, expected {code}: {se}")
        check("grok1-merge: error:" in se, f"not an error message: {se!r}")
        for w in words:
            check(w.lower() in se.lower(), f"grok1-merge message lacks {w!r}: {se.strip()}")
        check(not os.path.exists(dst) and not os.path.exists(dst + ".meta.json") and
              not os.path.exists(dst + ".merge.tmp"), "a refused merge left files behind")

    refused(g3[:2], ["1 of the 3 shards is missing: 2/3"])
    refused(g3, ["--input", "is a directory"], inp_m=d)
    refused(g3, ["--input -", "standard input"], code=2, inp_m="-")
    fifo = os.path.join(d, "in.fifo")
    os.mkfifo(fifo)
    refused(g3, ["is a pipe", "give the file the shards read"], inp_m=fifo)
    refused(g3 + g3[:1], ["shard 0/3 is given twice"])
    refused(g3[:2] + outs["generate", 20][2:3], ["different splits"])
    refused([g3[0], os.path.join(d, "generate.ref.jsonl")], ["without --shard"])
    os.rename(g3[2], g3[2] + ".partial")
    refused(g3, ["shard 2/3 is not finished", "--resume"])
    os.rename(g3[2] + ".partial", g3[2])
    other = os.path.join(d, "seed12.jsonl")
    expect_ok(tiny("generate", inp, other, "--shard", "2/3", "--temperature", "0.9", "--top-p", "0.95", "--seed", "12"))
    refused(g3[:2] + [other], ["not made alike", "settings.seed", "12", "11"])
    # shard 0 (requests 0, 3, 6, 9, 12) without its last result: 12 results
    # that fit the round robin, but the input has 13; shard 1 without its
    # last: they do not fit; a torn last line
    for k, cut, words in ((0, "line", ["hold 12 results", "13 requests", "cut short"]),
                          (1, "line", ["do not fit together", "shard 1/3", "ends after 3"]), (0, "torn", ["incomplete line"])):
        bad = os.path.join(d, f"{cut}{k}.jsonl")
        text = open(g3[k]).read()
        with open(bad, "w") as f:
            f.write(text[: text.rstrip("\n").rfind("\n") + 1] if cut == "line" else text[:-1])
        shutil.copy(g3[k] + ".meta.json", bad + ".meta.json")
        refused(g3[:k] + [bad] + g3[k + 1:], words)
    refused(g3, ["some of the shards answer", "shard 0/3", "its requests (0, 3, 6, ...)", "edited", "shard 1/3",
                 "shard 2/3 (", "without --resume"], inp_m=sinp)
    # a result whose id is not its request's (an edited or mixed-up shard)
    bad = os.path.join(d, "edited1.jsonl")
    lines = open(g3[1]).read().splitlines(keepends=True)
    r = json.loads(lines[2])
    lines[2] = json.dumps(dict(r, id="not-a-request")) + "\n"
    with open(bad, "w") as f:
        f.writelines(lines)
    shutil.copy(g3[1] + ".meta.json", bad + ".meta.json")
    refused([g3[0], bad, g3[2]], ["edited1.jsonl line 3", '"not-a-request"', "request 8 of the input",
                                  json.dumps(r["id"]), "does not answer this input"])
    with open(dst, "w") as f:
        f.write("keep me\n")
    rc, se = merge_run(["--input", inp, "--output", dst] + g3)
    check(rc == 1 and "exists" in se and open(dst).read() == "keep me\n", f"merge over an existing file: {rc} {se}")
    os.remove(dst)
    refused(g3[:0], ["no shard outputs"], code=2)
    rc, se = merge_run(["--input", inp] + g3)
    check(rc == 2 and "--output is required" in se, f"merge without --output: {rc} {se}")
    rc, se = merge_run(["--output", dst] + g3)
    check(rc == 2 and "--input is required" in se and not os.path.exists(dst), f"merge without --input: {rc} {se}")
    rc, se = merge_run(["--input", inp, "--output", ""] + g3)
    check(rc == 2 and "--output: the file name is empty" in se, f"merge to an empty name: {rc} {se}")
    rc, so = merge_run(["--input", inp, "--output", "-"] + g3)
    check(rc == 0 and not os.path.exists("-"), f"merge to stdout: {rc}")
    # a device or a FIFO is written directly, as stdout: nothing beside it,
    # no rename over it (/dev/null was refused as "exists: remove it")
    want = subprocess.run([ARGS.merge, "--input", inp, "--output", "-"] + g3, capture_output=True, timeout=60).stdout
    rc, se = merge_run(["--input", inp, "--output", "/dev/null"] + g3)
    check(rc == 0 and stat.S_ISCHR(os.stat("/dev/null").st_mode) and not os.path.exists("/dev/null.meta.json"),
          f"merge to /dev/null: {rc} {se}")
    # a directory: a usage error naming it (it was exit 1, "exists: remove it")
    adir = os.path.join(d, "merged.dir")
    os.mkdir(adir)
    rc, se = merge_run(["--input", inp, "--output", adir] + g3)
    check(rc == 2 and "is a directory" in se and os.listdir(adir) == [], f"merge to a directory: {rc} {se}")
    fifo = os.path.join(d, "merged.fifo")
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(open(fifo, "rb").read()))
    reader.start()
    rc, se = merge_run(["--input", inp, "--output", fifo] + g3)
    reader.join(60)
    check(rc == 0 and got == [want] and len(want) > 0, f"merge to a FIFO: {rc} {se}: {len(got[0]) if got else None} "
          f"bytes read, want {len(want)}")
    check(sorted(n for n in os.listdir(d) if n.startswith("merged.fifo")) == ["merged.fifo"],
          "merge to a FIFO left files beside it")
    rc, so = merge_run(["--help"])
    check(rc == 0, "grok1-merge --help failed")
    # a bad request line stops only the shard it belongs to
    badin = os.path.join(d, "bad.jsonl")
    with open(badin, "w") as f:
        f.write('{"id": 0, "prompt_ids": [5]}\n\n{"id": 1, "prompt_ids": [5, oops]}\n{"id": 2, "prompt_ids": [6]}\n')
    expect_ok(tiny("generate", badin, os.path.join(d, "b0.jsonl"), "--shard", "0/2"))
    b0, b1, bref = (os.path.join(d, n) for n in ("b0.jsonl", "b1.jsonl", "bref.jsonl"))
    expect_fail(tiny("generate", badin, b1, "--shard", "1/2"), 1, ["input line 3"], out=b1)
    # ... and is repaired alone: each shard's meta file records only its own
    # requests, so fixing the line and resuming that shard leaves the
    # finished one valid, and the merge is the unsharded run of the fixed input
    fixed_lines = ['{"id": 0, "prompt_ids": [5]}\n', "\n", '{"id": 1, "prompt_ids": [5, 7]}\n',
                   '{"id": 2, "prompt_ids": [6]}\n']

    def write_lines(path, lines):
        with open(path, "w") as f:
            f.writelines(lines)

    write_lines(badin, fixed_lines)
    expect_ok(tiny("generate", badin, b1, "--shard", "1/2", "--resume"))
    expect_ok(tiny("generate", badin, bref))

    def merged_is_ref(what):
        rc, se = merge_run(["--input", badin, "--output", dst, b1, b0])
        check(rc == 0, f"{what}: grok1-merge failed: {se}")
        check(open(dst).read() == open(bref).read(), f"{what}: merged output differs from the unsharded run's")
        with open(dst + ".meta.json") as a, open(bref + ".meta.json") as b:
            check(json.load(a) == json.load(b), f"{what}: merged meta differs from the unsharded run's")
        os.remove(dst)
        os.remove(dst + ".meta.json")

    merged_is_ref("a shard repaired after a bad line")
    # a request of shard 0 edited after it ran: the merge and shard 0's
    # resume are refused, shard 1's resume is not
    write_lines(badin, ['{"id": 0, "prompt_ids": [4]}\n'] + fixed_lines[1:])
    refused([b0, b1], ["one of the shards answers", "shard 0/2", "its requests (0, 2, 4, ...)", "b0.jsonl.meta.json",
                       "edited"], inp_m=badin)
    expect_fail(tiny("generate", badin, b0, "--shard", "0/2", "--resume"), 1,
                ["cannot resume", "requests of shard 0/2 among its first 3"])
    expect_ok(tiny("generate", badin, b1, "--shard", "1/2", "--resume"))
    # requests appended: refused until each shard has resumed over them
    write_lines(badin, fixed_lines + ['{"id": 3, "prompt_ids": [8, 9]}\n', '{"id": 4, "prompt_ids": [2]}\n'])
    refused([b0, b1], ["some of the shards answer", "shard 0/2", "among the first 3", "appended", "--resume",
                       "shard 1/2"], inp_m=badin)
    for k, o in enumerate((b0, b1)):
        expect_ok(tiny("generate", badin, o, "--shard", f"{k}/2", "--resume"))
    for f in (bref, bref + ".meta.json"):
        os.remove(f)
    expect_ok(tiny("generate", badin, bref))
    merged_is_ref("shards resumed over appended requests")
    # a request inserted before others renumbers them: an edit (run again), not an append (resume)
    five = open(badin).read().splitlines(keepends=True)
    write_lines(badin, five[:1] + ['{"id": 9, "prompt_ids": [4, 4]}\n'] + five[1:])
    rc, se = merge_run(["--input", badin, "--output", dst, b0, b1])
    check(rc == 1 and "shard 0/2" in se and "without --resume" in se and "appended" not in se,
          f"a request inserted: exit {rc}: {se}")
    # a shard stopped by its bad last line, the line deleted: the finished
    # shard, whose record covers that line, stays valid
    c0, c1, cref = (os.path.join(d, n) for n in ("c0.jsonl", "c1.jsonl", "cref.jsonl"))
    write_lines(badin, five[:-1] + ['{"id": 4, "prompt_ids": oops}\n'])
    expect_ok(tiny("generate", badin, c1, "--shard", "1/2"))
    expect_fail(tiny("generate", badin, c0, "--shard", "0/2"), 1, ["input line 6"], out=c0)
    write_lines(badin, five[:-1])
    expect_ok(tiny("generate", badin, c0, "--shard", "0/2", "--resume"))
    _, se = expect_ok(tiny("generate", badin, c1, "--shard", "1/2", "--resume"))
    check("nothing left to run" in se, f"the finished shard was not accepted as it is: {se}")
    expect_ok(tiny("generate", badin, cref))
    rc, se = merge_run(["--input", badin, "--output", dst, c0, c1])
    check(rc == 0 and open(dst).read() == open(cref).read(), f"a bad last line deleted: merge exit {rc}: {se}")
    os.remove(dst)
    os.remove(dst + ".meta.json")
    write_lines(badin, five)
    # a shard that read stdin records no input: not mixed with one that did
    bs = os.path.join(d, "bstdin.jsonl")
    with open(badin) as f:
        expect_ok(tiny("generate", "-", bs, "--shard", "0/2"), stdin=f.read())
    refused([bs, b1], ["not made alike", "bstdin.jsonl.meta.json does not", "records the input"], inp_m=badin)
    # both from stdin: merged on their ids alone, with a warning saying so,
    # and a meta file that does not claim the input
    bs1 = os.path.join(d, "bstdin1.jsonl")
    with open(badin) as f:
        expect_ok(tiny("generate", "-", bs1, "--shard", "1/2"), stdin=f.read())
    rc, se = merge_run(["--input", badin, "--output", dst, bs, bs1])
    check(rc == 0 and "only the ids are checked" in se and "input" not in json.load(open(dst + ".meta.json")),
          f"shards from stdin: merge exit {rc}: {se}")
    os.remove(dst)
    os.remove(dst + ".meta.json")
    # shards recorded by an older grok1-run: the record of the whole input
    def fnv1a64(data):
        h = 0xcbf29ce484222325
        for byte in data:
            h = ((h ^ byte) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
        return f"{h:016x}"

    data = open(badin, "rb").read()
    for o in (b0, b1):
        with open(o + ".meta.json") as f:
            m = json.load(f)
        m["input"] = {"bytes": len(data), "fnv1a64": fnv1a64(data)}
        with open(o + ".meta.json", "w") as f:
            json.dump(m, f)
    merged_is_ref("shards with whole-input records")
    write_lines(badin, fixed_lines + ['{"id": 3, "prompt_ids": [8, 9]}\n', '{"id": 4, "prompt_ids": [3]}\n'])
    refused([b0, b1], ["is not the input the shards answer", "input.fnv1a64"], inp_m=badin)
    for bad in ("3/3", "1", "a/2", "0/0", "-1/2", "1/2x", "1/", "/2"):
        expect_fail(tiny("generate", inp, os.path.join(d, "x.jsonl"), "--shard", bad), 2, [f"--shard {bad}", "K/N"])
    if ARGS.hdf5:
        # the dumps: each shard's holds its requests' logits under their input
        # line numbers; a resumed shard continues its dump
        import h5py
        lines = [i for i, l in enumerate(open(sinp)) if l.strip()]
        for k in range(3):
            o, dump = os.path.join(d, f"d{k}.jsonl"), os.path.join(d, f"d{k}.h5")
            expect_ok(tiny("score", sinp, o, "--shard", f"{k}/3", "--dump-logits", dump))
            with h5py.File(dump, "r") as f:
                names = sorted(int(x) for x in f["logits"])
                first = {x: f["logits"][x][()] for x in f["logits"]}
            check(names == lines[k::3], f"shard {k}/3 dump holds lines {names}, expected {lines[k::3]}")
        whole = open(o).read()
        os.remove(o)
        with open(o + ".partial", "w") as f:
            f.write(whole.splitlines(keepends=True)[0])
        os.rename(dump, dump + ".partial")
        expect_ok(tiny("score", sinp, o, "--shard", "2/3", "--dump-logits", dump, "--resume"))
        with h5py.File(dump, "r") as f:
            again = {x: f["logits"][x][()] for x in f["logits"]}
        check(open(o).read() == whole and sorted(again) == sorted(first) and
              all((again[x] == first[x]).all() for x in first), "resumed shard's dump differs")
        merge_dumps(d, sinp, lines)
        # a dump names logits by input line: a blank line added before a
        # finished shard's requests is refused before anything is touched
        binp, e0, e0d = (os.path.join(d, n) for n in ("blank.jsonl", "e0.jsonl", "e0.h5"))
        shutil.copy(sinp, binp)
        expect_ok(tiny("score", binp, e0, "--shard", "0/2", "--dump-logits", e0d))
        meta = open(e0 + ".meta.json").read()
        text = open(binp).read()
        with open(binp, "w") as f:
            f.write("\n" + text)
        expect_fail(tiny("score", binp, e0, "--shard", "0/2", "--dump-logits", e0d, "--resume"), 1,
                    ["cannot resume", "blank line"])
        check(os.path.exists(e0) and os.path.exists(e0d) and open(e0 + ".meta.json").read() == meta,
              "a refused resume touched the finished shard")
        # requests appended but the dump gone: refused, and the meta file
        # still describes what the finished shard answers
        with open(binp, "w") as f:
            f.write(text + '{"id": "x", "prompt_ids": [5, 6]}\n')
        os.rename(e0d, e0d + ".away")
        expect_fail(tiny("score", binp, e0, "--shard", "0/2", "--dump-logits", e0d, "--resume"), 1,
                    ["no logits dump to continue"])
        check(os.path.exists(e0) and open(e0 + ".meta.json").read() == meta,
              "a resume refused for its missing dump rewrote the meta file")
    else:
        # no HDF5 in this build: --dump-logits is refused as a usage error
        D = os.path.join(d, "D.h5")
        rc, se = merge_run(["--input", inp, "--output", dst, "--dump-logits", D] + g3)
        check(rc == 2 and "without HDF5" in se and "grok1-merge: error:" in se, f"--dump-logits without HDF5: {rc} {se}")
        check(not any(os.path.exists(p) for p in (dst, dst + ".meta.json", dst + ".merge.tmp", D, D + ".merge.tmp")),
              "a refused merge left files behind")


def merge_dumps(d, sinp, lines):
    """grok1-merge --dump-logits D (part of case_shard; d0.h5 .. d2.h5 are
    the dumps of score shards d0.jsonl .. d2.jsonl of sinp): D is the
    unsharded run's dump, OUT.meta.json records D as that run's does; every
    refusal leaves nothing at OUT or D, nor a temporary file."""
    import h5py
    import numpy as np
    shards = [os.path.join(d, f"d{k}.jsonl") for k in range(3)]
    dumps = [os.path.join(d, f"d{k}.h5") for k in range(3)]
    D = os.path.join(d, "D.h5")
    ref = os.path.join(d, "sdump.ref.jsonl")
    expect_ok(tiny("score", sinp, ref, "--dump-logits", D))
    os.rename(D, D + ".ref")
    out = os.path.join(d, "sdump.merged.jsonl")
    rc, se = merge_run(["--input", sinp, "--output", out, "--dump-logits", D] + shards[::-1])
    check(rc == 0 and f"their logits to {D} (every dataset matched its checksum)" in se,
          f"grok1-merge --dump-logits failed: {rc} {se}")
    check(open(out, "rb").read() == open(ref, "rb").read(), "merged results with a dump differ from the unsharded run's")
    check(open(out + ".meta.json", "rb").read() == open(ref + ".meta.json", "rb").read(),
          "merged meta with a dump differs from the unsharded run's (settings.dump_logits?)")
    diff = dump_differs(D, D + ".ref")
    check(diff is None, f"merged dump differs from the unsharded run's: {diff}")
    check(not os.path.exists(D + ".merge.tmp") and not os.path.exists(out + ".merge.tmp"), "temporary files left")
    # to stdout: the dump is written, the results go to stdout
    D2 = os.path.join(d, "D2.h5")
    p = subprocess.run([ARGS.merge, "--input", sinp, "--output", "-", "--dump-logits", D2] + shards,
                       capture_output=True, timeout=60)
    check(p.returncode == 0 and p.stdout == open(ref, "rb").read(), f"merge to stdout with a dump: {p.returncode} {p.stderr}")
    diff = dump_differs(D2, D + ".ref")
    check(diff is None, f"dump of a merge to stdout differs: {diff}")

    dst, E = os.path.join(d, "md.jsonl"), os.path.join(d, "E.h5")

    def nothing_left():
        for p in (dst, dst + ".meta.json", dst + ".merge.tmp", E, E + ".merge.tmp"):
            check(not os.path.exists(p), f"a refused merge left {p} behind")

    def refused_dump(files, words, dump=E, output=dst, code=1):
        rc, se = merge_run(["--input", sinp, "--output", output, "--dump-logits", dump] + files)
        check(rc == code, f"grok1-merge --dump-logits {dump} {files}: exit {rc}, expected {code}: {se}")
        check(se.startswith("grok1-merge: error:") and se.count("\n") == 1, f"not one error line: {se!r}")
        for w in words:
            check(w.lower() in se.lower(), f"grok1-merge message lacks {w!r}: {se.strip()}")
        nothing_left()

    def swapped(k, make, words):
        """shard k's dump replaced by make(path) for one refused merge"""
        os.rename(dumps[k], dumps[k] + ".keep")
        try:
            make(dumps[k])
            refused_dump(shards, words)
        finally:
            if os.path.isdir(dumps[k]):
                os.rmdir(dumps[k])
            elif os.path.exists(dumps[k]):
                os.remove(dumps[k])
            os.rename(dumps[k] + ".keep", dumps[k])

    def edited(edit):
        def make(path):
            shutil.copy(path + ".keep", path)
            with h5py.File(path, "r+") as f:
                edit(f)
        return make

    def write_dump(v, names):
        def make(path):
            with h5py.File(path, "w") as f:
                f.attrs["format"] = "grok1-logits"
                f.attrs["vocab_size"] = np.int32(v)
                for x in names:
                    f.create_dataset(f"logits/{x}", data=np.zeros((1, v), np.float32))
        return make

    # a shard without a dump
    nd = os.path.join(d, "nd1.jsonl")
    expect_ok(tiny("score", sinp, nd, "--shard", "1/3"))
    refused_dump([shards[0], nd, shards[2]], ["shard 1/3", "without --dump-logits"])
    # a dump missing, or only .partial (unfinished)
    swapped(1, lambda p: None, ["d1.h5", "does not exist"])
    swapped(1, lambda p: shutil.copy(p + ".keep", p + ".partial"), ["not finished", "d1.h5.partial", "--resume"])
    os.remove(dumps[1] + ".partial")
    # not a dump: not HDF5, HDF5 of another format
    swapped(2, lambda p: open(p, "w").write("not hdf5\n"), ["d2.h5", "cannot be opened"])
    swapped(2, edited(lambda f: f.attrs.modify("format", "grok1-checkpoint")), ["d2.h5", "not a logits dump"])
    # a format longer than any read (4096 bytes) is not a dump's either: not "out of memory" (it was read whole
    # for its length, and only the copy is not made)
    swapped(2, edited(lambda f: f.attrs.modify("format", "grok1-logits" * 400)), ["d2.h5", "not a logits dump"])
    # another vocabulary: a consistent dump with the right names
    swapped(1, write_dump(600, lines[1::3]), ["d1.h5", "vocab_size 600", "512"])
    swapped(0, write_dump(600, lines[0::3]), ["d0.h5", "vocab_size 600", "model of the shards has 512"])
    # datasets: one missing, one of another shard's result, one on a blank
    # line, one that no request writes
    lost = lines[1::3][1]
    swapped(1, edited(lambda f: f["logits"].pop(str(lost))), ["d1.h5", f"lacks logits/{lost}", f"input line {lost + 1}"])
    other = lines[0::3][0]
    swapped(1, edited(lambda f: f["logits"].create_dataset(str(other), data=np.zeros((1, V), np.float32))),
            [f"holds logits/{other}", "not one of its results", "shard 0/3"])
    blank = next(i for i in range(len(lines) + 1) if i not in lines)
    swapped(1, edited(lambda f: f["logits"].create_dataset(str(blank), data=np.zeros((1, V), np.float32))),
            [f"holds logits/{blank}", "blank"])
    swapped(1, edited(lambda f: f["logits"].create_dataset("x", data=np.zeros((1, V), np.float32))),
            ["logits/x", "no request writes"])
    swapped(1, edited(lambda f: f["logits"].move(str(lost), "0" + str(lost))), [f"logits/0{lost}", "no request writes"])
    # a dump of another run (other weights) under shard 1's dump name, as
    # a merge run from the wrong folder finds: refused by its record
    def other_run(path):
        expect_ok(tiny("score", sinp, os.path.join(d, "other1.jsonl"), "--shard", "1/3", "--dump-logits", path,
                       seed=6))
    swapped(1, other_run, ["d1.h5", "written by another run", "source.seed is 6", "the shard's meta file"])
    # a directory where the dump should be
    swapped(1, os.mkdir, ["d1.h5", "is a directory"])
    # two shards that named one dump: the later wrote over the earlier's
    same = os.path.join(d, "same.h5")
    two = [os.path.join(d, f"two{k}.jsonl") for k in range(2)]
    for k in range(2):
        expect_ok(tiny("score", sinp, two[k], "--shard", f"{k}/2", "--dump-logits", same))
    rc, se = merge_run(["--input", sinp, "--output", dst, "--dump-logits", E] + two)
    check(rc == 1 and "shards 0/2 and 1/2 both name the logits dump" in se and "of its own" in se,
          f"two shards with one dump name: {rc} {se}")
    nothing_left()
    # a value changed after grok1-run wrote it (its checksum kept): named
    def change(f):
        f["logits"][str(lost)][0, 3] += 1.0
    swapped(1, edited(change), ["d1.h5", f"logits/{lost} does not match its checksum", "damaged",
                                "run that shard again"])
    # a shape forged to declare more rows than the file holds (2^31 - 1
    # rows, 4 TiB of fill values to read): refused at once, naming it
    def forged_rows(f):
        x = f["logits"][str(lost)]
        attrs = dict(x.attrs)
        del f["logits"][str(lost)]
        y = f["logits"].create_dataset(str(lost), shape=(2**31 - 1, V), dtype=np.float32)
        for a, v in attrs.items():
            if a != "tokens":  # one token id a row: its length is checked before
                y.attrs[a] = v
    from time import monotonic  # (this function imports time further on: a local name)
    t0 = monotonic()
    swapped(1, edited(forged_rows), ["d1.h5", f"logits/{lost} cannot be read", "the file holds 0 bytes",
                                     "forged or damaged", "run that shard again"])
    check(monotonic() - t0 < 30, f"a forged row count took {monotonic() - t0:.0f} s to refuse")
    # a bad checksum attribute
    def two_crcs(f):
        del f["logits"][str(lost)].attrs["crc32"]
        f["logits"][str(lost)].attrs["crc32"] = np.array([1, 2], np.uint32)
    swapped(1, edited(two_crcs), ["d1.h5", f"logits/{lost}", "crc32 attribute"])
    # the logits of another request (their id attribute says so): named
    swapped(1, edited(lambda f: f["logits"][str(lost)].attrs.modify("id", json.dumps("someone else"))),
            ["d1.h5", f"logits/{lost}", 'id "someone else"', f"input line {lost + 1}", "dump of this input"])
    # a tokens attribute that is not one token id a row
    def long_tokens(f):
        x = f["logits"][str(lost)]
        del x.attrs["tokens"]
        x.attrs["tokens"] = np.zeros(x.shape[0] + 1, np.int32)
    swapped(1, edited(long_tokens), ["d1.h5", f"logits/{lost}", "tokens attribute", "token ids"])
    # a shard dump without checksums (grok1-run before they existed): joined,
    # said so, and the joined dump has them
    F = os.path.join(d, "F.h5")
    os.rename(dumps[2], dumps[2] + ".keep")
    shutil.copy(dumps[2] + ".keep", dumps[2])
    with h5py.File(dumps[2], "r+") as f:
        for k in f["logits"]:
            del f["logits"][k].attrs["crc32"]
        n_old = len(f["logits"])
    rc, se = merge_run(["--input", sinp, "--output", dst, "--dump-logits", F] + shards)
    os.remove(dumps[2])
    os.rename(dumps[2] + ".keep", dumps[2])
    check(rc == 0 and f"({n_old} datasets had no checksum: not checked)" in se,
          f"merge of a dump without checksums: {rc} {se}")
    diff = dump_differs(F, D + ".ref")
    check(diff is None, f"a dump merged from one without checksums differs from the unsharded run's: {diff}")
    for p in (dst, dst + ".meta.json", F):
        os.remove(p)
    # D exists: kept as it was
    with open(E, "w") as f:
        f.write("keep me\n")
    rc, se = merge_run(["--input", sinp, "--output", dst, "--dump-logits", E] + shards)
    check(rc == 1 and "exists" in se and open(E).read() == "keep me\n", f"merge over an existing dump: {rc} {se}")
    check(not os.path.exists(dst) and not os.path.exists(dst + ".merge.tmp"), "merge over an existing dump wrote OUT")
    os.remove(E)
    # D left by an earlier merge of these shards, killed between naming D
    # and naming OUT: written again (its record and every id match); the
    # dump of one shard at D is not that, and is kept
    shutil.copy(D + ".ref", E)
    rc, se = merge_run(["--input", sinp, "--output", dst, "--dump-logits", E] + shards)
    check(rc == 0 and "dump of an earlier merge of these shards" in se and os.path.exists(dst),
          f"a merge after one killed between its renames: {rc} {se}")
    diff = dump_differs(E, D + ".ref")
    check(diff is None, f"the dump written again differs from the unsharded run's: {diff}")
    for p in (dst, dst + ".meta.json", E):
        os.remove(p)
    shutil.copy(dumps[0], E)
    rc, se = merge_run(["--input", sinp, "--output", dst, "--dump-logits", E] + shards)
    check(rc == 1 and "not the dump of an earlier merge" in se and not os.path.exists(dst) and
          dump_differs(E, dumps[0]) is None, f"a shard's dump at D: {rc} {se}")
    os.remove(E)
    # D names a file the merge reads or writes
    refused_dump(shards, ["is the --input file"], dump=sinp)
    refused_dump(shards, ["is the --output file"], dump=dst)
    refused_dump(shards, ["is the output of shard 2/3"], dump=shards[2])
    refused_dump(shards, ["is the logits dump of shard 0/3"], dump=os.path.join(d, ".", "d0.h5"))
    refused_dump(shards, ["is the meta file of shard 1/3"], dump=shards[1] + ".meta.json")
    refused_dump(shards, ["would be written as", "--output file"], dump=E, output=E + ".merge.tmp")
    check(not os.path.exists(E + ".merge.tmp"), "refused merge left its output")
    refused_dump(shards, ["needs a file name"], dump="-", code=2)
    rc, se = merge_run(["--input", sinp, "--output", dst, "--dump-logits", E, "--dump-logits", E + "2"] + shards)
    check(rc == 2 and "--dump-logits is given twice" in se, f"--dump-logits twice: {rc} {se}")
    rc, se = merge_run(["--inp", sinp, "--output", dst] + shards)
    check(rc == 2 and "--inp: write the option in full, --input" in se, f"--inp: {rc} {se}")
    nothing_left()
    # D cannot be created: the merged results are removed too
    refused_dump(shards, ["cannot create", "nodir"], dump=os.path.join(d, "nodir", "E.h5"))
    for k in range(3):
        check(os.path.exists(dumps[k]) and not os.path.exists(dumps[k] + ".partial"), "a shard's dump was moved")
    # one writer per output: OUT.lock (or D.lock) held by another process
    import fcntl
    for held in (dst, E):
        with open(held + ".lock", "w") as lk:
            fcntl.lockf(lk, fcntl.LOCK_EX | fcntl.LOCK_NB)
            rc, se = merge_run(["--input", sinp, "--output", dst, "--dump-logits", E] + shards)
            check(rc == 1 and f"{held} is being written by another grok1-run or grok1-merge (process {os.getpid()})"
                  in se and "merge again" in se, f"merge onto a locked {os.path.basename(held)}: {rc} {se}")
            nothing_left()
        os.remove(held + ".lock")
    # a merge stopped by SIGTERM at any moment leaves no temporary file, no
    # lock, and no D without its OUT
    import random
    import signal
    import time
    t0 = time.time()
    rc, se = merge_run(["--input", sinp, "--output", dst, "--dump-logits", E] + shards)
    took = time.time() - t0
    check(rc == 0, f"merge: {se}")
    rnd = random.Random(4)
    outcomes = set()
    for i in range(12):
        for p in (dst, dst + ".meta.json", E):
            if os.path.exists(p):
                os.remove(p)
        q = subprocess.Popen([ARGS.merge, "--input", sinp, "--output", dst, "--dump-logits", E] + shards,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rnd.uniform(0, took))
        q.send_signal(signal.SIGTERM)
        q.wait()
        left = sorted(x for x in os.listdir(d) if x.endswith((".merge.tmp", ".lock")))
        check(not left, f"a merge stopped by SIGTERM left {left}")
        check(not os.path.exists(E) or os.path.exists(dst), "a merge stopped by SIGTERM left D without OUT")
        outcomes.add("finished" if q.returncode == 0 else "stopped")
    print(f"12 merges stopped by SIGTERM within {took:.2f} s: {sorted(outcomes)}, nothing left behind")


def case_threads(d):
    """Rank 0 works on a step's logits rows in parallel (--threads): sampled
    generations with top log-probs and scores are the same bytes on 1 and 3
    threads, and with 1 or 5 slots."""
    import random
    rnd = random.Random(9)
    gin, sin = os.path.join(d, "g.jsonl"), os.path.join(d, "s.jsonl")
    write_jsonl(gin, [{"id": i, "prompt_ids": [rnd.randrange(1, V) for _ in range(rnd.randint(1, 30))],
                       "max_new_tokens": rnd.randint(1, 12), "temperature": 1.0, "top_p": 0.9, "top_k": rnd.choice([0, 20]),
                       "top_logprobs": rnd.choice([0, 3]), "seed": i} for i in range(12)])
    write_jsonl(sin, [{"id": i, "prompt_ids": [rnd.randrange(1, V) for _ in range(rnd.randint(1, 40))]}
                      for i in range(8)])
    for mode, inp in (("generate", gin), ("score", sin)):
        outs = []
        for extra in (["--threads", "1"], ["--threads", "3"], ["--threads", "3", "--batch-size", "1"],
                      ["--threads", "2", "--batch-size", "5", "--max-batch-tokens", "9"]):
            out = os.path.join(d, f"{mode}_{len(outs)}.jsonl")
            expect_ok(tiny(mode, inp, out, *extra))
            outs.append(open(out).read())
        check(all(o == outs[0] for o in outs), f"{mode}: results depend on --threads or batching")


def case_kv_cache(d):
    """--kv-cache bf16: keys and values rounded to bf16 as they are stored.
    On the cpu backend (float32 storage of the rounded values) the scores
    move a little from f32's; the setting is recorded, so a resume with
    another is refused; a bad value is a usage error."""
    inp = os.path.join(d, "in.jsonl")
    write_jsonl(inp, [{"id": i, "prompt_ids": [(13 * i + 7 * j) % (V - 1) + 1 for j in range(30)]} for i in range(3)])
    f32, bf16 = os.path.join(d, "f32.jsonl"), os.path.join(d, "bf16.jsonl")
    expect_fail(tiny("score", inp, bf16, "--kv-cache", "f16"), 2, ["--kv-cache", "bf16"], out=bf16)
    expect_ok(tiny("score", inp, f32, "--backend", "cpu"))
    expect_ok(tiny("score", inp, bf16, "--backend", "cpu", "--kv-cache", "bf16"))
    a, b = read_jsonl(f32), read_jsonl(bf16)
    diff = max(abs(x - y) for p, q in zip(a, b) for x, y in zip(p["logprobs"], q["logprobs"]))
    print(f"bf16 vs f32 KV cache (cpu): max logprob difference {diff:.3g}")
    check(0 < diff < 0.5, f"bf16 caches: logprobs differ by {diff} from f32's (expected a small, nonzero change)")
    meta = json.load(open(bf16 + ".meta.json"))
    check(meta["settings"].get("kv_cache") == "bf16", f"meta.json does not record the bf16 cache: {meta['settings']}")
    check("kv_cache" not in json.load(open(f32 + ".meta.json"))["settings"], "f32 caches recorded (they are the default)")
    os.rename(bf16, bf16 + ".partial")
    expect_fail(tiny("score", inp, bf16, "--backend", "cpu", "--resume"), 1, ["kv_cache"])


def case_layout_refused(d):
    mpiexec = shutil.which("mpiexec") or shutil.which("mpirun")
    if not ARGS.mpi or not mpiexec:
        return SKIP
    inp, out = os.path.join(d, "in.jsonl"), os.path.join(d, "out.jsonl")
    write_jsonl(inp, [{"id": 1, "prompt_ids": [1, 2]}])
    env = mpi_env(threads=None)
    p = subprocess.run([mpiexec, "-n", "2", ARGS.run] + tiny("score", inp, out), capture_output=True, text=True,
                       env=env, timeout=60)
    if p.returncode != 0 and "grok1-run" not in p.stderr:
        print(f"launcher could not start 2 processes here: {p.stderr.strip()[:500]}")
        return SKIP
    # 2 processes for the default 1 x 1 layout: refused before loading, by
    # rank 0 only, saying what would work
    check(p.returncode == 2, f"a 2-process run of a 1 x 1 layout exited {p.returncode}, expected 2")
    check("2 processes" in p.stderr and "--stages 2" in p.stderr, f"message: {p.stderr.strip()}")
    check(p.stderr.count("error:") == 1, f"more than one rank reported: {p.stderr.strip()}")
    check(not os.path.exists(out), "refused run created the output")


def case_check_input(d):
    """--check-input reads every request as the run would: it refuses the
    lines the run refuses (all of them, not only the first), counts the
    prompt and new tokens the run then processes, writes nothing and needs
    no --output."""
    inp, out = os.path.join(d, "in.jsonl"), os.path.join(d, "out.jsonl")
    rows = [{"id": i, "prompt_ids": [(7 * i + j) % (V - 1) + 1 for j in range(1 + (i * 37) % 60)],
             "max_new_tokens": (i * 13) % 40, "ignore_eos": True} for i in range(30)]
    # capped by the context as the run caps it: 256 - 250 = 6 new tokens
    rows.append({"id": 30, "prompt_ids": list(range(1, 251)), "max_new_tokens": 50, "ignore_eos": True})
    write_jsonl(inp, rows[:10] + [""] + rows[10:])  # a blank line is no request
    total = sum(len(r["prompt_ids"]) for r in rows)
    new = sum(min(r["max_new_tokens"], MAX_SEQ - len(r["prompt_ids"])) for r in rows)
    rc, so, se = run(tiny("generate", inp, out, "--check-input"))
    check(rc == 0 and not se.strip(), f"a good input: exit {rc}, stderr {se.strip()!r}")
    for w in (f"({len(rows) + 1} lines): {len(rows)} request(s)", "0 refused", f"{total} prompt tokens",
              "the longest 250 (input line 32) of the 255 a generate request may have (the context's 256 positions",
              f"at most {new} new tokens"):
        check(w in so, f"summary lacks {w!r}: {so!r}")
    check(not any(os.path.exists(out + x) for x in ("", ".partial", ".meta.json", ".lock")),
          "--check-input wrote an output file")
    # the run agrees: the same prompt tokens, and (greedy past eos) exactly those new tokens
    expect_ok(tiny("generate", inp, out))
    res = read_jsonl(out)
    check(sum(r["prompt_tokens"] for r in res) == total and sum(len(r["completion_ids"]) for r in res) == new,
          "the run processed other token counts than --check-input said")
    # refused lines: every one named, in order, with the run's own message
    # for the first; the run stops there
    bad = os.path.join(d, "bad.jsonl")
    lines = [rows[0], rows[1], {"id": 2, "prompt_ids": [1, V]}, rows[3], "not json", rows[5], {"id": 6},
             {"id": 7, "prompt_ids": [1], "temperature": -1}, rows[8]]
    write_jsonl(bad, lines)
    out2 = os.path.join(d, "out2.jsonl")
    rc, so, se = run(tiny("generate", bad, out2, "--check-input"))
    refused = [l for l in se.splitlines() if l.startswith("grok1-run: refused: ")]
    check(rc == 1 and "9 request(s), 4 refused" in so, f"bad input: exit {rc}, summary {so!r}")
    check([re.search(r"input line (\d+)", l).group(1) for l in refused] == ["3", "5", "7", "8"],
          f"refusals named {refused}, expected input lines 3, 5, 7, 8")
    se_run = expect_fail(tiny("generate", bad, out2), 1, ["input line 3"])
    first = se_run.split("grok1-run: error: ", 1)[1].strip()
    check(refused[0] == "grok1-run: refused: " + first, f"the check says {refused[0]!r}, the run {first!r}")
    # more than 20 refused: 20 named, the rest counted
    write_jsonl(bad, [{"id": i} for i in range(25)] + [{"id": 25, "prompt_ids": [1, 2]}])
    rc, so, se = run(tiny("score", bad, out2, "--check-input"))
    named = [l for l in se.splitlines() if l.startswith("grok1-run: refused: input line")]
    check(rc == 1 and len(named) == 20 and "... and 5 more request(s)" in se and "26 request(s), 25 refused" in so,
          f"25 refused: exit {rc}, {len(named)} named, stderr tail {se.strip()[-120:]!r}")
    # cuts (--truncate left under --max-context), shards, and the run's settings
    sin = os.path.join(d, "score.jsonl")
    write_jsonl(sin, [{"id": r["id"], "prompt_ids": r["prompt_ids"]} for r in rows])
    rc, so, se = run(tiny("score", sin, out2, "--check-input", "--max-context", "32", "--truncate", "left"))
    long_rows = [r for r in rows if len(r["prompt_ids"]) > 33]  # score: one more than the context's positions
    cut = sum(len(r["prompt_ids"]) - 33 for r in long_rows)
    check(rc == 0 and f"cut from the left (--truncate left): {len(long_rows)} request(s), {cut} tokens" in so,
          f"--truncate left: exit {rc}, {so!r}")
    rc, so, se = run(tiny("score", sin, out2, "--check-input", "--max-context", "32"))
    check(rc == 1 and f"{len(long_rows)} refused" in so, f"prompts over --max-context not refused: {so!r}")
    rc, so, se = run(tiny("generate", inp, out2, "--check-input", "--shard", "1/3"))
    mine = rows[1::3]
    check(rc == 0 and f"{len(mine)} request(s) of shard 1/3 ({len(rows) - len(mine)} of the other shards' not read)"
          in so and f"{sum(len(r['prompt_ids']) for r in mine)} prompt tokens" in so, f"--shard 1/3: {so!r}")
    # files: a missing input fails; --input is still required, --output is not
    expect_fail(tiny("score", os.path.join(d, "none.jsonl"), out2, "--check-input"), 1, ["cannot open input"])
    rc, so, se = run(["--synthetic", "tiny", "--mode", "score", "--input", sin, "--check-input"])
    check(rc == 0, f"--check-input without --output: exit {rc}: {se.strip()}")
    rc, so, se = run(["--synthetic", "tiny", "--mode", "score", "--check-input"])
    check(rc == 2 and "--input" in se, f"--check-input without --input: exit {rc}: {se.strip()}")
    check(not os.path.exists(out2), "a check wrote the output")


def case_pad_id(d):
    """The pad id in prompt_ids or continuation_ids is refused as any bad
    request is (the release masks it out of attention, this runner does not):
    the run stops after the requests before it, --check-input names every such
    line with the run's message, a shard that does not own the line runs, and
    the fixed line resumes. Zero elsewhere in a request is fine; the id
    refused is the model's pad_id, not 0 as such. A model whose bos_id is its
    pad_id is refused at load (bos_is_pad)."""
    inp, out = os.path.join(d, "in.jsonl"), os.path.join(d, "out.jsonl")
    good = [{"id": 0, "prompt_ids": [5, 6, 7], "max_new_tokens": 0, "seed": 0, "top_k": 0, "top_logprobs": 0},
            {"id": "a", "prompt_ids": [9, 2, 1, 3]}]
    write_jsonl(inp, good)
    expect_ok(tiny("generate", inp, out))
    check([r["id"] for r in read_jsonl(out)] == [0, "a"], "zeros outside the ids were refused")
    os.remove(out)
    msg = ("is the pad id: the released model masks pad tokens out of attention and this runner does not, "
           "so it refuses them (remove the padding)")
    rows = [{"id": i, "prompt_ids": [3 + i, 4 + i], "continuation_ids": [5 + i]} for i in range(6)]
    rows[2] = {"id": 2, "prompt_ids": [8, 0, 0], "continuation_ids": [7]}
    rows[4] = {"id": 4, "prompt_ids": [8, 9], "continuation_ids": [7, 6, 0]}
    write_jsonl(inp, rows)
    rc, so, se = run(tiny("score", inp, out, "--check-input"))
    refused = [l for l in se.splitlines() if l.startswith("grok1-run: refused: ")]
    check(rc == 1 and "6 request(s), 2 refused" in so, f"--check-input: exit {rc}, summary {so!r}")
    check(refused == ["grok1-run: refused: input line 3: prompt_ids[1] = 0 " + msg,
                      "grok1-run: refused: input line 5: continuation_ids[2] = 0 " + msg],
          f"--check-input named {refused}")
    se_run = expect_fail(tiny("score", inp, out), 1, ["input line 3: prompt_ids[1] = 0 " + msg], out)
    check(se_run.split("grok1-run: error: ", 1)[1].strip() == refused[0][len("grok1-run: refused: "):],
          f"the run and the check word the refusal differently: {se_run.strip()[-300:]}")
    check([r["id"] for r in read_jsonl(out + ".partial")] == [0, 1], "the requests before the pad line were not kept")
    # fixed, the line resumes: the rest runs, as one run of the fixed input gives
    rows[2]["prompt_ids"], rows[4]["continuation_ids"] = [8, 1, 1], [7, 6, 1]
    write_jsonl(inp + ".fixed", rows)
    full = os.path.join(d, "full.jsonl")
    expect_ok(tiny("score", inp + ".fixed", full))
    os.replace(inp + ".fixed", inp)
    expect_ok(tiny("score", inp, out, "--resume"))
    check(open(out).read() == open(full).read(), "the resumed output differs from a run of the fixed input")
    # a shard that does not own the pad line runs; the one that does is refused
    rows[4]["continuation_ids"] = [7, 6, 0]
    write_jsonl(inp, rows)
    for f in (out, out + ".meta.json"):
        os.remove(f)
    expect_ok(tiny("score", inp, out, "--shard", "1/2"))
    check([r["id"] for r in read_jsonl(out)] == [1, 3, 5], "shard 1/2 did not run its requests")
    os.remove(out)
    expect_fail(tiny("score", inp, out, "--shard", "0/2"), 1, ["input line 5: continuation_ids[2] = 0 " + msg], out)
    # the model's pad_id, not 0 as such
    if ARGS.mkckpt:
        ck = os.path.join(d, "pad7.h5")
        p = subprocess.run([ARGS.mkckpt, "--config", "tiny", "--set", "pad_id=7", "--seed", "5", "--out", ck],
                           capture_output=True, text=True, timeout=120)
        check(p.returncode == 0, f"grok1-mkckpt --set pad_id=7: {p.stderr.strip()}")
        write_jsonl(inp, [{"id": 1, "prompt_ids": [0, 5, 0]}])
        out7 = os.path.join(d, "out7.jsonl")
        expect_ok(["--checkpoint", ck, "--mode", "score", "--input", inp, "--output", out7])
        write_jsonl(inp, [{"id": 1, "prompt_ids": [0, 5, 7]}])
        expect_fail(["--checkpoint", ck, "--mode", "score", "--input", inp, "--output", os.path.join(d, "o8.jsonl")],
                    1, ["input line 1: prompt_ids[2] = 7 is the pad id"])
    bos_is_pad(d)


def bos_is_pad(d):
    """A model whose bos_id is its pad_id is refused wherever a config is
    loaded: an empty text prompt is given BOS alone, which would feed the
    pad id that the runner refuses in input and the release masks out of
    attention. grok1-mkckpt does not make one (--set bos_id=0 over pad_id
    0: exit 2, as any --set that makes an invalid model); a checkpoint
    changed to one (its params_crc32 made to match) is refused by grok1-run
    (exit 1) and grok1-plan (exit 1), and so is a JSON file of
    hyper-parameters given to grok1-plan. Every preset still loads."""
    words = ["bos_id (0) is the pad_id (0)"]
    if ARGS.grok1_plan:
        cfg = os.path.join(d, "bos0.json")
        with open(cfg, "w") as f:
            json.dump({"bos_id": 0, "pad_id": 0}, f)
        p = subprocess.run([ARGS.grok1_plan, "--config", cfg, "--stages", "1", "--ep", "1"], capture_output=True,
                           text=True, timeout=60)
        check(p.returncode == 1 and p.stderr.startswith("grok1-plan: error: ") and all(w in p.stderr for w in words),
              f"grok1-plan --config {cfg}: exit {p.returncode}: {p.stderr.strip()}")
        # the pad id as the model gives it, not 0 as such: bos_id 7 over pad_id 7 refused, bos_id 0 over it not
        for ids, code in (((7, 7), 1), ((0, 7), 0)):
            with open(cfg, "w") as f:
                json.dump({"bos_id": ids[0], "pad_id": ids[1]}, f)
            p = subprocess.run([ARGS.grok1_plan, "--config", cfg, "--stages", "1", "--ep", "1"], capture_output=True,
                               text=True, timeout=60)
            check(p.returncode == code and (code == 0 or "bos_id (7) is the pad_id (7)" in p.stderr),
                  f"grok1-plan --config with bos_id {ids[0]}, pad_id {ids[1]}: exit {p.returncode} (not {code}): "
                  f"{p.stderr.strip()}")
        for preset in ("tiny", "small", "grok-1"):
            p = subprocess.run([ARGS.grok1_plan, "--config", preset, "--stages", "1", "--ep", "1"],
                               capture_output=True, text=True, timeout=60)
            check(p.returncode == 0, f"grok1-plan --config {preset}: exit {p.returncode}: {p.stderr.strip()}")
    if not ARGS.mkckpt:
        print("no grok1-mkckpt (a build without HDF5): bos_id = pad_id in a checkpoint not tried")
        return
    bad = os.path.join(d, "bos0.h5")
    p = subprocess.run([ARGS.mkckpt, "--config", "tiny", "--set", "bos_id=0", "--seed", "5", "--out", bad],
                       capture_output=True, text=True, timeout=120)
    check(p.returncode == 2 and all(w in p.stderr for w in words) and not os.path.exists(bad),
          f"grok1-mkckpt --set bos_id=0 (pad_id 0): exit {p.returncode} (2: its --set): {p.stderr.strip()}")
    try:
        import h5py
        import numpy as np
    except ImportError:
        print("h5py or numpy not available: a checkpoint with bos_id = pad_id not made, skipped")
        return
    # from a good one: bos_id set to pad_id, and the hyper-parameters'
    # checksum made to match them (docs/CHECKPOINT.md's formula), so that
    # what is refused is the ids, not a changed file
    p = subprocess.run([ARGS.mkckpt, "--config", "tiny", "--seed", "5", "--out", bad], capture_output=True, text=True,
                       timeout=120)
    check(p.returncode == 0, f"grok1-mkckpt: {p.stderr.strip()}")
    with h5py.File(bad, "r+") as f:
        f.attrs["bos_id"] = np.int32(f.attrs["pad_id"])
        f.attrs["params_crc32"] = np.uint32(params_crc(f.attrs))
    inp, out = os.path.join(d, "bos.jsonl"), os.path.join(d, "bos_out.jsonl")
    write_jsonl(inp, [{"id": 1, "prompt_ids": [5, 6]}])
    se = expect_fail(["--checkpoint", bad, "--mode", "generate", "--input", inp, "--output", out], 1,
                     [f"checkpoint {bad}: "] + words, out)
    check("checksum" not in se, f"the refusal blames the checksum: {se.strip()}")
    if ARGS.grok1_plan:
        p = subprocess.run([ARGS.grok1_plan, "--checkpoint", bad, "--stages", "1", "--ep", "1"], capture_output=True,
                           text=True, timeout=60)
        check(p.returncode == 1 and p.stderr.startswith("grok1-plan: error: ") and all(w in p.stderr for w in words),
              f"grok1-plan --checkpoint {bad}: exit {p.returncode}: {p.stderr.strip()}")


def case_plan_limit(d):
    """The memory limit of a plan file (grok1-plan --out, read by --plan) is
    named as the plan's, not as --mem-per-rank, and a small one is in bytes
    (it said '--mem-per-rank is 0.0 KiB' for "mem_per_rank": 1). The hint of
    a refused plan is a grok1-plan command that plans for this run: on the
    cuda backend with its --cuda-gemm and --cuda-tune (with a CUDA build)."""
    if not ARGS.grok1_plan:
        return SKIP
    inp, out, plan = (os.path.join(d, n) for n in ("in.jsonl", "out.jsonl", "plan.json"))
    write_jsonl(inp, [{"id": 1, "prompt_ids": [1, 2]}, {"id": 2, "prompt_ids": [3]}])
    p = subprocess.run([ARGS.grok1_plan, "--config", "tiny", "--stages", "1", "--ep", "1", "--out", plan],
                       capture_output=True, text=True, timeout=60)
    check(p.returncode == 0, f"grok1-plan: {p.stderr.strip()}")
    expect_ok(tiny("score", inp, out, "--plan", plan))
    os.remove(out)
    with open(plan) as f:
        j = json.load(f)
    for limit, shown in ((1, "1 byte"), (1000, "1000 bytes"), (3500 << 10, "3.4 MiB")):
        j["mem_per_rank"] = limit
        with open(plan, "w") as f:
            json.dump(j, f)
        expect_fail(tiny("score", inp, out, "--plan", plan), 2,
                    [f"{plan}: this run's", f"but mem_per_rank in {plan} is {shown};"], out=out)
    # --mem-per-rank given replaces the plan's, and is named so
    expect_fail(tiny("score", inp, out, "--plan", plan, "--mem-per-rank", "1000"), 2,
                ["but --mem-per-rank is 1000 bytes;"], out=out)
    # a limit that more stages would meet: a plan's layout is fixed (--plan
    # takes no --stages), so the hint is a new plan's grok1-plan command, and
    # that command plans a layout that fits (run under mpirun when there is one)
    p = subprocess.run([ARGS.grok1_plan, "--config", "tiny", "--stages", "1", "--ep", "1", "--out", plan],
                       capture_output=True, text=True, timeout=60)
    check(p.returncode == 0, f"grok1-plan: {p.stderr.strip()}")
    se = expect_fail(tiny("score", inp, out, "--plan", plan, "--mem-per-rank", "3M", "--threads", "1"), 2,
                     ["a plan's layout is fixed", "make a new plan", "grok1-plan --stages", "--plan NEW.json"], out=out)
    check(not re.search(r"--(stages|ep) \d+ would fit", se), f"--plan: the hint names grok1-run's --stages: {se}")
    m = re.search(r"grok1-plan (--stages .*?) --out NEW\.json and run (\d+) ranks with --plan NEW\.json([^,]*),", se)
    check(m, f"no grok1-plan command in the hint: {se}")
    new = os.path.join(d, "new.json")
    p = subprocess.run([ARGS.grok1_plan, "--config", "tiny"] + m.group(1).split() + ["--out", new],
                       capture_output=True, text=True, timeout=60)
    check(p.returncode == 0, f"the hint's grok1-plan command refused: {m.group(1)}: {p.stderr.strip()}")
    mpiexec = shutil.which("mpiexec") or shutil.which("mpirun")
    if ARGS.mpi and mpiexec:
        env = mpi_env()
        p = subprocess.run([mpiexec, "-n", m.group(2), ARGS.run] + tiny("score", inp, out, "--plan", new) +
                           ["--mem-per-rank", "3M", "--threads", "1"] + m.group(3).split(),
                           capture_output=True, text=True, env=env, timeout=120)
        check(p.returncode == 0, f"{m.group(2)} ranks with the hint's plan: exit {p.returncode}: {p.stderr[-400:]}")
    # on the cuda backend the command counts the GPU's memory as the run
    # does: --backend cuda --gpu-sms, and the run's --cuda-gemm and
    # --cuda-tune when they are not the defaults (they were left out, and
    # the new plan counted the default GEMM's buffers: bf16x2's are larger).
    # Only a build with CUDA counts a GPU's memory (--check-input needs no GPU)
    if "cuda yes" not in subprocess.run([ARGS.run, "--version"], capture_output=True, text=True).stdout:
        print("grok1-run built without CUDA: the hint on the cuda backend is not checked")
        return
    tune = "gemv-max-tokens=32,attn-mma=off,panel-mib=8"
    for given, want in (([], []), (["--cuda-gemm", "bf16"], []), (["--cuda-gemm", "bf16x2"], ["--cuda-gemm bf16x2"]),
                        (["--cuda-gemm", "f32", "--cuda-tune", tune], ["--cuda-gemm f32", f"--cuda-tune {tune}"]),
                        (["--cuda-tune", "mma-max-tokens=0,moe-grouping=host"],
                         ["--cuda-tune mma-max-tokens=0,moe-grouping=host"])):
        cuda = ["--backend", "cuda", "--threads", "1", "--mem-per-rank", "3M"] + given
        se = expect_fail(tiny("score", inp, out, "--check-input", "--plan", plan, *cuda), 2, ["make a new plan"])
        m = re.search(r"grok1-plan (--stages .*?) --out NEW\.json and run (\d+) ranks with --plan NEW\.json([^,]*),",
                      se)
        check(m and "--backend cuda --gpu-sms 132" in m.group(1), f"{given}: no grok1-plan command for cuda: {se}")
        for w in want:
            check(f"{w} " in m.group(1) + " ", f"{given}: the hint's command lacks {w}: {m.group(1)}")
        if not want:
            check("--cuda-gemm" not in m.group(1) and "--cuda-tune" not in m.group(1),
                  f"{given}: the defaults are not left out: {m.group(1)}")
        p = subprocess.run([ARGS.grok1_plan, "--config", "tiny"] + m.group(1).split() + ["--out", new],
                           capture_output=True, text=True, timeout=60)
        check(p.returncode == 0, f"{given}: the hint's grok1-plan command refused: {m.group(1)}: {p.stderr.strip()}")
        if ARGS.mpi:  # a build without MPI refuses every layout of more than one rank
            rc, so, se = run(tiny("score", inp, out, "--check-input", "--plan", new, *cuda) + m.group(3).split())
            check(rc == 0, f"{given}: the hint's plan refused by the run it was made for: exit {rc}: {se.strip()}")


def case_plan_defaults(d):
    """grok1-plan's defaults are grok1-run's: M micro-batches (default one a
    stage) of --batch-size 8 slots (grok1-plan counted 8 slots in all, so a
    limit it planned was refused by a default grok1-run of 2 stages, 16
    slots). Its worst rank is the figure grok1-run --check-input counts for
    the same options, to the byte, and a default plan at its own figure runs
    under mpirun with grok1-run's defaults."""
    if not ARGS.grok1_plan:
        return SKIP
    if not ARGS.mpi:  # a build without MPI refuses every layout of more than one rank
        print("grok1-run built without MPI: skipped")
        return SKIP
    inp, out, plan = (os.path.join(d, n) for n in ("in.jsonl", "out.jsonl", "plan.json"))
    write_jsonl(inp, [{"id": 1, "prompt_ids": [1, 2], "max_new_tokens": 2}])

    def worst(*args):
        p = subprocess.run([ARGS.grok1_plan] + list(args) + ["--out", "-"], capture_output=True, text=True, timeout=60)
        check(p.returncode == 0, f"grok1-plan {args}: {p.stderr.strip()}")
        j = json.loads(p.stdout)
        return j, max(r["total_bytes"] for r in j["ranks"])

    for cfg, P, E, threads in (("tiny", 2, 2, 1), ("tiny", 3, 1, 2), ("grok-1", 8, 8, 64)):
        j, w = worst("--config", cfg, "--stages", str(P), "--ep", str(E), "--threads", str(threads))
        check(j["slots"] == 8 * P and j["micro_batches"] == P, f"{cfg} {P}x{E}: slots {j['slots']} in "
              f"{j['micro_batches']} micro-batches, want {8 * P} in {P} (grok1-run's defaults)")
        base = ["--synthetic", cfg, "--mode", "generate", "--check-input", "--input", inp, "--stages", str(P),
                "--ep", str(E), "--threads", str(threads)]
        rc, so, se = run(base + ["--mem-per-rank", str(w)])
        check(rc == 0, f"{cfg} {P}x{E}: grok1-run --check-input refused grok1-plan's figure {w}: {se.strip()[-400:]}")
        rc, so, se = run(base + ["--mem-per-rank", str(w - 1)])
        check(rc == 2 and "--mem-per-rank" in se, f"{cfg} {P}x{E}: one byte below grok1-plan's figure {w} is not "
              f"refused by grok1-run --check-input: exit {rc}, {se.strip()[-300:]}")
    # a default plan at its own figure, run with grok1-run's defaults
    _, w = worst("--config", "tiny", "--stages", "2", "--ep", "2", "--threads", "1")
    p = subprocess.run([ARGS.grok1_plan, "--config", "tiny", "--stages", "2", "--ep", "2", "--threads", "1",
                        "--mem-per-rank", str(w), "--out", plan], capture_output=True, text=True, timeout=60)
    check(p.returncode == 0, f"grok1-plan at its own figure: {p.stderr.strip()}")
    mpiexec = shutil.which("mpiexec") or shutil.which("mpirun")
    if ARGS.mpi and mpiexec:
        p = subprocess.run([mpiexec, "-n", "4", ARGS.run] + tiny("generate", inp, out, "--plan", plan,
                                                                  "--threads", "1"),
                           capture_output=True, text=True, env=mpi_env(), timeout=120)
        check(p.returncode == 0 and os.path.exists(out),
              f"a default grok1-plan plan refused by a default grok1-run --plan: exit {p.returncode}: "
              f"{p.stderr[-600:]}")


def case_fit_hint(d):
    """A memory refusal's "--stages S would fit at --ep E" (no plan file)
    counts what that command runs: its micro-batches follow --stages unless
    given, and the slots with them (tiny at 2 x 2 and 3.6 MiB said --stages 3,
    which was refused again for its 24 slots). Each hint, run as it says
    (with --check-input, and the tiny one under mpirun), is accepted."""
    if not ARGS.mpi:  # a build without MPI refuses every layout of more than one rank
        print("grok1-run built without MPI: skipped")
        return SKIP
    inp, out = os.path.join(d, "in.jsonl"), os.path.join(d, "out.jsonl")
    write_jsonl(inp, [{"id": 1, "prompt_ids": [1, 2], "max_new_tokens": 2}])
    hint = re.compile(r"--(stages|ep) (\d+) would fit at --(ep|stages) (\d+) \((\d+) ranks\)")
    mpiexec = shutil.which("mpiexec") or shutil.which("mpirun")
    for cfg, layout, limit, threads in (("tiny", ["--stages", "2", "--ep", "2"], "3735328", "1"),
                                        ("tiny", ["--stages", "1", "--ep", "1", "--micro-batches", "1"], "3M", "1"),
                                        ("tiny", ["--stages", "2", "--ep", "1", "--batch-size", "4"], "3M", "1"),
                                        ("grok-1", ["--stages", "8", "--ep", "8"], "10G", "64")):
        base = ["--synthetic", cfg, "--mode", "generate", "--input", inp, "--threads", threads,
                "--mem-per-rank", limit]
        rest = [a for i, a in enumerate(layout) if a not in ("--stages", "--ep")
                and (i == 0 or layout[i - 1] not in ("--stages", "--ep"))]
        rc, so, se = run(base + ["--check-input"] + layout)
        check(rc == 2 and "--mem-per-rank" in se, f"{cfg} {layout} at {limit}: not refused: exit {rc}, {se.strip()}")
        m = hint.search(se)
        if not m:
            check("more stages or a larger --ep alone do not fit" in se, f"{cfg} {layout}: no hint: {se.strip()}")
            continue
        new = {m.group(1): m.group(2), m.group(3): m.group(4)}
        args = ["--stages", new["stages"], "--ep", new["ep"]] + rest
        rc, so, se = run(base + ["--check-input"] + args)
        check(rc == 0, f"{cfg} {layout} at {limit}: the hint's {args} refused: exit {rc}, {se.strip()[-500:]}")
        if cfg == "tiny" and ARGS.mpi and mpiexec:
            p = subprocess.run([mpiexec, "-n", m.group(5), ARGS.run] + base + ["--output", out] + args,
                               capture_output=True, text=True, env=mpi_env(), timeout=120)
            check(p.returncode == 0 and os.path.exists(out),
                  f"{cfg} {layout}: the hint's {args} on {m.group(5)} ranks: exit {p.returncode}: {p.stderr[-500:]}")
            for f in (out, out + ".meta.json"):
                if os.path.exists(f):
                    os.remove(f)


def case_plan_not_regular(d):
    """--plan of a FIFO (or a directory) is refused, exit 2, saying it is not
    a regular file; a FIFO hung in the JSON reader waiting for a writer."""
    inp, out, fifo = (os.path.join(d, n) for n in ("in.jsonl", "out.jsonl", "plan.fifo"))
    write_jsonl(inp, [{"id": 1, "prompt_ids": [1, 2], "max_new_tokens": 2}])
    os.mkfifo(fifo)
    mpiexec = shutil.which("mpiexec") or shutil.which("mpirun")
    launches = [[]] + ([[mpiexec, "-n", "2"]] if ARGS.mpi and mpiexec else [])
    for plan, what in ((fifo, "a FIFO"), (d, "a directory")):
        for pre in launches:
            cmd = pre + [ARGS.run] + tiny("generate", inp, out, "--plan", plan)
            p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env=mpi_env(), start_new_session=True)
            try:
                _, se = p.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.communicate()
                check(False, f"--plan {what}: still running after 30 s: {' '.join(cmd)}")
            check(p.returncode == 2 and f"{plan}: not a regular file ({what})" in se and not os.path.exists(out),
                  f"--plan {what} ({' '.join(pre) or 'one process'}): exit {p.returncode}, {se.strip()[-400:]}")


def case_trace(d):
    """--trace in one process: the spans TRACE.md lists for it (all layers,
    embed, logits and tokens), valid JSON; GROK1_TRACE_SPANS caps the spans
    kept, the cut is marked and counted, the run warns; a bad value is
    refused before anything is made."""
    inp, out, tr = os.path.join(d, "in.jsonl"), os.path.join(d, "out.jsonl"), os.path.join(d, "t.json")
    write_jsonl(inp, [{"id": i, "prompt_ids": [3 + i, 4, 5], "max_new_tokens": 4} for i in range(5)])
    _, se = expect_ok(tiny("generate", inp, out, "--batch-size", "2", "--trace", tr))
    with open(tr) as f:
        spans = [e for e in json.load(f)["traceEvents"] if e["ph"] == "X"]
    names = {e["name"] for e in spans}
    check({"all layers", "embed", "logits and tokens"} <= names, f"spans: {sorted(names)}")
    check(all(e["dur"] >= 0 and e["ts"] >= 0 and e["pid"] == 0 for e in spans), "bad times or ranks")
    steps = sum(e["name"] == "all layers" for e in spans)
    check(steps == sum(e["name"] == "logits and tokens" for e in spans) == sum(e["name"] == "embed" for e in spans),
          "not one embed and one 'logits and tokens' span for each step")
    check("warning" not in se, f"a warning without a cut: {se}")
    os.remove(out)
    rc, _, se = run(tiny("generate", inp, out, "--batch-size", "2", "--trace", tr), env={"GROK1_TRACE_SPANS": "2"})
    check(rc == 0, f"GROK1_TRACE_SPANS=2: exit {rc}: {se}")
    with open(tr) as f:
        ev = json.load(f)["traceEvents"]
    kept = [e for e in ev if e["ph"] == "X"]
    cut = [e for e in ev if e["ph"] == "i"]
    check(len(kept) == 2 and len(cut) == 1 and cut[0]["args"]["dropped_spans"] == 3 * steps - 2,
          f"GROK1_TRACE_SPANS=2: {len(kept)} spans kept, cut {cut} (of {3 * steps})")
    check(f"holds the first 2 spans of each rank: {3 * steps - 2} later spans of 1 rank were left out" in se,
          f"no warning of the cut: {se}")
    os.remove(out)
    for bad in ("0", "x", "", "99999999999"):
        rc, _, se = run(tiny("generate", inp, out, "--trace", tr), env={"GROK1_TRACE_SPANS": bad})
        check(rc == 2 and f"GROK1_TRACE_SPANS={bad}:" in se and "integer from 1" in se,
              f"GROK1_TRACE_SPANS={bad!r}: exit {rc}: {se}")
        check(not os.path.exists(out) and not os.path.exists(out + ".partial"), "a refused run made files")


def case_trace_stream(d):
    """--trace to a FIFO or a device (a /dev/null node, as root), or a link
    to one, is written directly, as --output is: the FIFO's reader gets the
    trace and the FIFO, device and link stay what they were, with nothing
    beside them (the trace was written to TRACE.tmp.PID.RANDOM and renamed
    over them: the device became a regular file)."""
    import stat
    inp = os.path.join(d, "in.jsonl")
    write_jsonl(inp, [{"id": i, "prompt_ids": [3 + i, 4, 5]} for i in range(3)])
    fifo = os.path.join(d, "fifo")
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(open(fifo).read()), daemon=True)
    reader.start()
    expect_ok(tiny("score", inp, os.path.join(d, "o1.jsonl"), "--trace", fifo))
    reader.join(30)
    check(got and any(e["name"] == "all layers" for e in json.loads(got[0])["traceEvents"]),
          f"the FIFO's reader got no trace: {got!r:.200}")
    check(stat.S_ISFIFO(os.lstat(fifo).st_mode), "the FIFO was replaced by a regular file")
    names = [("fifo", stat.S_ISFIFO)]
    if os.geteuid() == 0:
        dev, link = os.path.join(d, "null"), os.path.join(d, "null-link")
        os.mknod(dev, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        os.symlink("null", link)
        for k, name in enumerate((dev, link)):
            expect_ok(tiny("score", inp, os.path.join(d, "o%d.jsonl" % (k + 2)), "--trace", name))
        check(stat.S_ISCHR(os.lstat(dev).st_mode), "the device was replaced by a regular file")
        check(os.path.islink(link) and os.readlink(link) == "null", "the link to the device was replaced")
        names += [("null", stat.S_ISCHR), ("null-link", stat.S_ISLNK)]
    else:
        print("the device cases need root (mknod): skipped")
    left = sorted(f for f in os.listdir(d) if any(f.startswith(n + ".") for n, _ in names))
    check(not left, f"files written beside the trace: {left}")


def case_merge_many_shards(d):
    """grok1-merge reads every shard side by side: with more shards than
    the soft limit on open files allows (ulimit -n: 1024 on many
    clusters, against job arrays of thousands of tasks) it raises that
    limit up to the hard one and merges; with a hard limit below what it
    needs it refuses at once, naming the limit, writing nothing. Until
    2026-12-04 it failed part way ("cannot open SHARD: Too many open
    files", exit 1)."""
    if not ARGS.merge:
        print("grok1-merge not built: skipped")
        return SKIP
    import resource
    n = 8
    inp, ref = os.path.join(d, "in.jsonl"), os.path.join(d, "ref.jsonl")
    write_jsonl(inp, [{"id": i, "prompt_ids": [3 + i, 7, 11 + i]} for i in range(2 * n + 3)])
    expect_ok(tiny("score", inp, ref))
    shards = []
    for k in range(n):
        o = os.path.join(d, f"o.jsonl.shard-{k}-of-{n}")
        expect_ok(tiny("score", inp, o, "--shard", f"{k}/{n}"))
        shards.append(o)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = n + 32
    if hard != resource.RLIM_INFINITY and hard < need:
        print(f"hard limit on open files {hard} < {need}: skipped")
        return SKIP

    def merge_limited(out, lim_soft, lim_hard):
        def limit():
            resource.setrlimit(resource.RLIMIT_NOFILE, (lim_soft, lim_hard))
        p = subprocess.run([ARGS.merge, "--input", inp, "--output", out] + shards, capture_output=True, text=True,
                           timeout=60, preexec_fn=limit)
        return p.returncode, p.stderr

    out = os.path.join(d, "m.jsonl")
    rc, se = merge_limited(out, n, hard)  # below the shards alone
    check(rc == 0, f"merge of {n} shards with a soft limit of {n} open files failed (exit {rc}): {se.strip()}")
    check(open(out).read() == open(ref).read(), "the merged output differs from the unsharded run's")
    out2 = os.path.join(d, "m2.jsonl")
    rc, se = merge_limited(out2, n, n)
    check(rc == 1 and "grok1-merge: error:" in se and "ulimit -Hn" in se and f"{need} open files" in se,
          f"a hard limit below the shards: exit {rc}, {se.strip()!r}")
    left = [f for f in os.listdir(d) if f.startswith("m2.")]
    check(not left, f"a refused merge left {left}")


def case_merge_dump_special(d):
    """grok1-merge --dump-logits D where D is a FIFO, a device (a /dev/null
    node, as root), a link to one or a directory: refused before any work,
    exit 2, saying what D is; nothing written (an HDF5 dump cannot be a
    stream: a FIFO hung the merge, which had made its lock files; a device
    was refused as 'exists', exit 1)."""
    import stat
    if not ARGS.hdf5:
        return SKIP
    inp = os.path.join(d, "in.jsonl")
    write_jsonl(inp, [{"id": i, "prompt_ids": [3 + i, 4, 5]} for i in range(4)])
    shards = []
    for k in range(2):
        sh = os.path.join(d, "s%d.jsonl" % k)
        expect_ok(tiny("score", inp, sh, "--shard", "%d/2" % k, "--dump-logits", os.path.join(d, "d%d.h5" % k)))
        shards.append(sh)
    cases = [("a FIFO", os.mkfifo), ("a directory", os.mkdir)]
    if os.geteuid() == 0:
        cases.append(("a character device", lambda p: os.mknod(p, stat.S_IFCHR | 0o666, os.makedev(1, 3))))
    else:
        print("the device case needs root (mknod): skipped")
    for what, make in cases:
        sub = os.path.join(d, what.split()[-1])
        os.mkdir(sub)
        dump, link = os.path.join(sub, "m.h5"), os.path.join(sub, "link.h5")
        make(dump)
        os.symlink("m.h5", link)
        for name in (dump, link):
            rc, se = merge_run(["--input", inp, "--output", os.path.join(sub, "m.jsonl"), "--dump-logits", name]
                               + shards)
            check(rc == 2 and what in se and "HDF5" in se, f"--dump-logits {what} ({name}): exit {rc}: {se.strip()}")
            check(sorted(os.listdir(sub)) == ["link.h5", "m.h5"], f"files left: {sorted(os.listdir(sub))}")


def case_trace_race(d):
    """Two runs given one --trace at the same time: each writes its trace
    under a temporary name of its own (TRACE.tmp.PID.RANDOM) and renames it
    into place, so both exit 0, TRACE is one of the two traces, whole, and
    no temporary file is left. The fsync before each rename is slowed (the
    test's LD_PRELOAD shim) so that the two writes overlap: with one fixed
    TRACE.tmp the second run truncated the first's file, and then found it
    renamed away (exit 1, "cannot rename")."""
    if not ARGS.eio_shim:
        print("the fsync shim was not built: skipped")
        return SKIP
    env = dict(os.environ, LD_PRELOAD=ARGS.eio_shim, G1_TEST_SLOW="t.json.tmp", G1_TEST_SLOW_MS="2000")
    if "ASAN_OPTIONS" in os.environ:  # the shim comes before the ASan runtime
        env["ASAN_OPTIONS"] = os.environ["ASAN_OPTIONS"] + ":verify_asan_link_order=0"
    inp, tr = os.path.join(d, "in.jsonl"), os.path.join(d, "t.json")
    write_jsonl(inp, [{"id": i, "prompt_ids": [3 + i, 4, 5], "max_new_tokens": 3} for i in range(4)])
    runs = [subprocess.Popen([ARGS.run] + tiny("generate", inp, os.path.join(d, f"out{k}.jsonl"), "--trace", tr),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
            for k in range(2)]
    errs = [p.communicate(timeout=60)[1] for p in runs]
    for k, p in enumerate(runs):
        check(p.returncode == 0, f"run {k} of two given one --trace: exit {p.returncode}: {errs[k].strip()}")
        check(os.path.exists(os.path.join(d, f"out{k}.jsonl")), f"run {k}: no output")
    with open(tr) as f:
        spans = [e for e in json.load(f)["traceEvents"] if e["ph"] == "X"]
    check({"all layers", "embed", "logits and tokens"} <= {e["name"] for e in spans}, "the trace left is not whole")
    left = sorted(n for n in os.listdir(d) if n.startswith("t.json."))
    check(not left, f"temporary files left beside the trace: {left}")
    # a trace that cannot be written (its temporary file fails to reach the
    # disk) leaves no temporary file either
    env["G1_TEST_EIO"] = "t.json.tmp"
    env["G1_TEST_SLOW_MS"] = "1"
    p = subprocess.run([ARGS.run] + tiny("generate", inp, os.path.join(d, "out2.jsonl"), "--trace", tr),
                       capture_output=True, text=True, env=env, timeout=60)
    check(p.returncode == 1 and "the trace was not written" in p.stderr, f"EIO: exit {p.returncode}: {p.stderr}")
    left = sorted(n for n in os.listdir(d) if n.startswith("t.json."))
    check(not left, f"temporary files left beside the trace after a failed write: {left}")


def case_fsync_eio(d):
    """A disk that fails the fsync before a file gets its final name (EIO, by
    the test's LD_PRELOAD shim): each tool names the file it could not
    write, exits non-zero and gives no final name to anything whose bytes
    may be lost; what it leaves (OUT.partial, the dump's .partial) resumes,
    with the disk well again, to the clean run's results."""
    if not ARGS.eio_shim:
        print("the fsync shim was not built: skipped")
        return SKIP
    env = {"LD_PRELOAD": ARGS.eio_shim}
    if "ASAN_OPTIONS" in os.environ:  # the shim comes before the ASan runtime
        env["ASAN_OPTIONS"] = os.environ["ASAN_OPTIONS"] + ":verify_asan_link_order=0"

    def failing(match, args, tool=None, extra=None):
        p = subprocess.run([tool or ARGS.run] + args, capture_output=True, text=True, timeout=60,
                           env=dict(os.environ, G1_TEST_EIO=match, **env, **(extra or {})))
        check(p.returncode == 1, f"fsync of {match} failing: exit {p.returncode}, expected 1: {p.stderr.strip()}")
        for w in ("to the disk (fsync)", "Input/output error"):
            check(w in p.stderr, f"fsync of {match} failing: the message lacks {w!r}: {p.stderr.strip()}")
        return p.stderr

    def left(prefix):
        return sorted(n for n in os.listdir(d) if n.startswith(prefix))

    inp, ref = os.path.join(d, "in.jsonl"), os.path.join(d, "ref.jsonl")
    write_jsonl(inp, [{"id": i, "prompt_ids": [(7 * i + 3 * j + 5) % V for j in range(2 + i)]} for i in range(6)])
    expect_ok(tiny("score", inp, ref))
    with open(ref, "rb") as f:
        want = f.read()

    def same(path, what):
        with open(path, "rb") as f:
            check(f.read() == want, f"{what}: the results differ from a clean run's")

    # the meta file, written first: nothing is left
    out = os.path.join(d, "meta.jsonl")
    se = failing("meta.jsonl.meta.json", tiny("score", inp, out))
    check("meta.jsonl.meta.json" in se, f"the message does not name the meta file: {se.strip()}")
    check(left("meta.jsonl") == [], f"a run that could not write its meta file left {left('meta.jsonl')}")
    # OUT.partial, before its rename: no OUT; the partial resumes to the same bytes
    out = os.path.join(d, "out.jsonl")
    se = failing("out.jsonl.partial", tiny("score", inp, out, "--batch-size", "2"))
    check(f"cannot write {out}.partial to the disk" in se, f"the message does not name OUT.partial: {se.strip()}")
    check(not os.path.exists(out) and os.path.exists(out + ".partial"),
          f"after the failed fsync of OUT.partial: {left('out.jsonl')}")
    expect_ok(tiny("score", inp, out, "--batch-size", "2", "--resume"))
    same(out, "OUT.partial resumed")
    # the trace is written after OUT: the results stand, the run says so and fails
    out, tr = os.path.join(d, "tr.jsonl"), os.path.join(d, "trace.json")
    se = failing("trace.json", tiny("score", inp, out, "--trace", tr))
    check("the trace was not written" in se and "the results are complete" in se, f"trace: {se.strip()}")
    same(out, "a run whose trace failed")
    check(left("trace.json") == [], f"a failed trace left {left('trace.json')}")
    if ARGS.hdf5:
        # the logits dump: at its end, and at every periodic sync (GROK1_DUMP_SYNC_S=0)
        for sync in ("30", "0"):
            out, lg = os.path.join(d, f"dump{sync}.jsonl"), os.path.join(d, f"dump{sync}.h5")
            se = failing(f"dump{sync}.h5", tiny("score", inp, out, "--dump-logits", lg, "--batch-size", "1"),
                         extra={"GROK1_DUMP_SYNC_S": sync})
            check(f"cannot write {lg}.partial to the disk" in se, f"the message does not name the dump: {se.strip()}")
            check(not os.path.exists(out) and not os.path.exists(lg),
                  f"GROK1_DUMP_SYNC_S={sync}: a final name after the dump's fsync failed: {left('dump' + sync)}")
            expect_ok(tiny("score", inp, out, "--dump-logits", lg, "--batch-size", "1", "--resume"))
            same(out, f"GROK1_DUMP_SYNC_S={sync}: the dump resumed")
            check(os.path.exists(lg), f"GROK1_DUMP_SYNC_S={sync}: the resume made no {lg}")
    if ARGS.merge:
        shards = [os.path.join(d, f"shard{k}.jsonl") for k in range(2)]
        for k, sh in enumerate(shards):
            expect_ok(tiny("score", inp, sh, "--shard", f"{k}/2"))
        merged = os.path.join(d, "merged.jsonl")
        args = ["--input", inp, "--output", merged] + shards
        failing("merged.jsonl", args, tool=ARGS.merge)
        check(left("merged") == [], f"a merge that could not write left {left('merged')}")
        p = subprocess.run([ARGS.merge] + args, capture_output=True, text=True, timeout=60)
        check(p.returncode == 0, f"the merge, the disk well again: exit {p.returncode}: {p.stderr.strip()}")
        same(merged, "the merge")
    if ARGS.mkckpt:
        ck = os.path.join(d, "ck.h5")
        failing("ck.h5", ["--config", "tiny", "--seed", "3", "--out", ck], tool=ARGS.mkckpt)
        check(left("ck.h5") == [], f"grok1-mkckpt left {left('ck.h5')} after its fsync failed")
    if ARGS.grok1_plan:
        plan = os.path.join(d, "plan.json")
        failing("plan.json", ["--config", "tiny", "--stages", "2", "--ep", "1", "--out", plan], tool=ARGS.grok1_plan)
        check(left("plan.json") == [], f"grok1-plan left {left('plan.json')} after its fsync failed")


def case_first_signal(d):
    """SIGINT, then SIGTERM once SIGINT is taken: the closing message names the first
    (signal 2), not the last. The run reads its input from a pipe that stays
    open, so it waits there, taking each signal, until the test closes it."""
    out = os.path.join(d, "out.jsonl")
    p = subprocess.Popen([ARGS.run] + tiny("score", "-", out, "--batch-size", "1"), stdin=subprocess.PIPE,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        p.stdin.write("".join(json.dumps({"id": i, "prompt_ids": [5, 6, 7 + i]}) + "\n" for i in range(3)))
        p.stdin.flush()
        # OUT.partial is made after the handlers are in place
        for _ in range(3000):
            if os.path.exists(out + ".partial") or p.poll() is not None:
                break
            time.sleep(0.01)
        check(os.path.exists(out + ".partial"), f"the run made no {out}.partial (exit {p.poll()})")
        time.sleep(0.2)
        p.send_signal(signal.SIGINT)
        # SIGTERM only once SIGINT is taken (no longer pending): both pending
        # at once, the kernel would run SIGTERM's handler first (nested)
        sigint = 1 << (signal.SIGINT - 1)
        for _ in range(1000):
            with open(f"/proc/{p.pid}/status") as f:
                pend = [int(l.split()[1], 16) for l in f if l.startswith(("SigPnd:", "ShdPnd:"))]
            if not any(m & sigint for m in pend):
                break
            time.sleep(0.01)
        time.sleep(0.1)
        p.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        p.stdin.close()
        err = p.stderr.read()
        p.wait(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    check(p.returncode == 3 and "interrupted by signal 2:" in err,
          f"SIGINT then SIGTERM: exit {p.returncode} (want 3), want 'interrupted by signal 2': {err[-400:]}")


def case_init_signal(d):
    """A stop signal while MPI starts (the test's LD_PRELOAD shim holds
    MPI_Init 2 s): the run ends as interrupted (exit 3, the signal named),
    with nothing written, on one rank and on two under mpirun (SIGUSR1,
    which mpirun passes on); it was killed by the signal."""
    if not ARGS.mpi or not ARGS.init_shim:
        print("needs MPI and the MPI_Init shim: skipped")
        return SKIP
    inp, out = os.path.join(d, "in.jsonl"), os.path.join(d, "out.jsonl")
    write_jsonl(inp, [{"id": 0, "prompt_ids": [1, 2, 3]}])
    mark = os.path.join(d, "mpi_init")
    mpiexec = shutil.which("mpiexec") or shutil.which("mpirun")
    env = mpi_env(LD_PRELOAD=ARGS.init_shim, G1_TEST_INIT_MARK=mark)
    if "ASAN_OPTIONS" in os.environ:  # the shim comes before the ASan runtime
        env["ASAN_OPTIONS"] = os.environ["ASAN_OPTIONS"] + ":verify_asan_link_order=0"
    cmds = [(1, [ARGS.run] + tiny("score", inp, out), signal.SIGTERM),
            (2, [mpiexec, "-n", "2", "-x", "LD_PRELOAD", "-x", "G1_TEST_INIT_MARK", ARGS.run] + tiny("score", inp, out),
             signal.SIGUSR1)]
    def marks():  # one file per rank in MPI_Init (the shim names it by its pid)
        return [x for x in os.listdir(d) if x.startswith("mpi_init.")]
    for n, cmd, sig in cmds:
        for x in marks():
            os.remove(os.path.join(d, x))
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        t0 = time.time()
        while len(marks()) < n and p.poll() is None and time.time() - t0 < 30:
            time.sleep(0.02)
        check(len(marks()) == n, f"{n} rank(s): MPI_Init was not reached by every rank ({marks()})")
        p.send_signal(sig)
        _, err = p.communicate(timeout=60)
        print(f"{n} rank(s), signal {int(sig)} while MPI starts: exit {p.returncode}: {err.strip()[:300]}")
        check(p.returncode == 3, f"{n} rank(s): exit {p.returncode}, expected 3 (interrupted): {err.strip()}")
        check(f"interrupted by signal {int(sig)} while MPI started" in err, f"{n} rank(s): {err.strip()}")
        check(err.count("interrupted by signal") == 1, f"{n} rank(s): said more than once: {err.strip()}")
        left = [x for x in os.listdir(d) if x.startswith("out.jsonl")]
        check(left == [], f"{n} rank(s): a run stopped while MPI started left {left}")
    return 0


def nomem(d, kind):
    """Memory exhausted: each place in the tools that allocates (malloc,
    calloc, realloc called from the program itself) fails in turn, the first
    time it is reached, by the test's LD_PRELOAD shim (nomem_shim.c). Every
    such run either exits non-zero with the tool's message, which says out of
    memory (not a damaged file, a missing dump, an unreadable dataset), and
    no final output other than the clean run's, or (an allocation with a
    fallback) exits 0 with the clean run's results: never a crash, and never
    a success that did less. One kind of run a case (one meson test each,
    cli_nomem_KIND): grok1-run score, generate of text, score with a logits
    dump, a resume with a dump, score of a checkpoint file (its load);
    grok1-merge with dumps; grok1-checksum of a checkpoint and of one in
    parts, and grok1-link joining the parts; grok1-plan of a preset, a JSON
    file of hyper-parameters and a checkpoint, which must exit 1 (a failed
    run), not 2 (a bad command line). Skipped in sanitizer builds, whose
    runtime owns malloc, and where the kind's program is not built."""
    if not ARGS.nomem_shim:
        print("the allocation shim was not built: skipped")
        return SKIP
    if os.environ.get("G1_SANITIZED"):
        print("a sanitizer build (G1_SANITIZED): its runtime owns malloc: skipped")
        return SKIP
    needs = {"generate": ARGS.tokenizer, "dump": ARGS.hdf5, "resume": ARGS.hdf5, "resume_look": ARGS.hdf5,
             "merge": ARGS.merge,
             "checksum": ARGS.hdf5 and ARGS.checksum and ARGS.mkckpt, "checkpoint": ARGS.hdf5 and ARGS.mkckpt,
             "plan": ARGS.grok1_plan}
    if not needs.get(kind, True):
        print(f"{kind}: its program or HDF5 is not in this build: skipped")
        return SKIP
    bad = []
    runs = [0]

    def said_memory(err):
        """the message of a run whose allocation failed says so"""
        return "memory" in err

    blame = re.compile(r"damaged|unsigned integer|cannot be read|could not be read|cannot be listed|no logits|"
                       r"another run|not an HDF5|not a logits dump|unknown HDF5 error|link the parts again|"
                       r"not the one linked", re.I)

    def blames(err):
        """the lines that blame a file (damaged, unreadable, another run's)
        and do not say memory: no allocation failure may be told so, even
        in a warning of a run that went on (a resume that set its dump
        aside as damaged, and computed every request again)"""
        return [x for x in err.splitlines() if blame.search(x) and "memory" not in x]

    def sweep(what, cmd, reset, final, same, prog, again=False, code=None, calls=False, reach=None, made=None):
        """cmd with the shim, every allocation site failed once; reset()
        before each run; final: the output a failed run must not leave;
        same(): whether a run's results are the clean run's; again: after
        each failed run, cmd once more without the shim must give them (a
        resume left able to resume); code: the exit status a failed run
        must have (None: any of 1 to 3); calls: every allocation call failed
        in turn, not only the first of each site (a site reached by several
        paths: the first call is always the same path's); reach: words the
        message of at least one failed run must hold (the sweep reached the
        path it is there for); made(): what is wrong with the other files a
        run that exits 0 wrote (None: nothing)"""
        sites = {} if calls else {"G1_TEST_NOMEM_SITES": "1"}
        unit = "call" if calls else "site"
        cnt = os.path.join(d, "sites")
        reset()
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=d,
                           env=dict(os.environ, LD_PRELOAD=ARGS.nomem_shim, G1_TEST_NOMEM_COUNT=cnt, **sites))
        if p.returncode != 0 or not same():
            bad.append(f"{what}: the run under the shim, nothing failed: exit {p.returncode}: {p.stderr[-500:]}")
            return
        with open(cnt) as f:
            n = max(int(x) for x in f.read().split())  # the tool's line, not its MPI helper's
        os.remove(cnt)
        fails = 0
        reached = reach is None
        for k in range(1, n + 1):
            reset()
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=d,
                               env=dict(os.environ, LD_PRELOAD=ARGS.nomem_shim, G1_TEST_NOMEM=str(k), **sites))
            runs[0] += 1
            err = p.stderr.strip()
            reached = reached or (p.returncode != 0 and reach in err)
            if blames(err):
                bad.append(f"{what}: allocation {unit} {k} failed: exit {p.returncode}, and a message blames the "
                           f"files: {blames(err)[0][-400:]}")
            aside = [n for n in os.listdir(d) if ".damaged" in n]
            if aside:  # (a resume that took the failure for damage, even in words that say memory)
                bad.append(f"{what}: allocation {unit} {k} failed: exit {p.returncode}, and {aside[0]} was set aside "
                           f"as damaged: {err[-300:]}")
            if p.returncode == 0:
                if not same():
                    bad.append(f"{what}: allocation {unit} {k} failed: exit 0 with other results: {err[-300:]}")
                elif made and made():
                    bad.append(f"{what}: allocation {unit} {k} failed: exit 0, but {made()}: {err[-300:]}")
                continue
            fails += 1
            if p.returncode < 0 or p.returncode > 3:
                bad.append(f"{what}: allocation {unit} {k} failed: exit {p.returncode} (a crash?): {err[-600:]}")
            elif code is not None and p.returncode != code:
                bad.append(f"{what}: allocation {unit} {k} failed: exit {p.returncode}, not {code}: {err[-300:]}")
            elif not err.startswith(prog) and f"\n{prog}" not in err:
                bad.append(f"{what}: allocation {unit} {k} failed: exit {p.returncode} without {prog}'s message: {err[-300:]}")
            elif not said_memory(err):
                bad.append(f"{what}: allocation {unit} {k} failed: exit {p.returncode}, and the message does not say "
                           f"out of memory: {err[-400:]}")
            elif final and os.path.exists(os.path.join(d, final)) and not same():
                # (grok1-merge renames OUT before it writes OUT.meta.json: a
                # failure there leaves OUT whole, which is all it may leave)
                bad.append(f"{what}: allocation {unit} {k} failed: exit {p.returncode}, and {final} was left other "
                           f"than the clean run's")
            elif again:
                p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=d)
                if p.returncode != 0 or not same():
                    bad.append(f"{what}: allocation {unit} {k} failed, and the same command after it gave exit "
                               f"{p.returncode}, not the clean run's results: {p.stderr.strip()[-300:]}")
        print(f"{what}: {n} allocation {'calls' if calls else 'sites'}, {fails} of them failed the run, the rest had "
              f"a fallback")
        if not reached:
            bad.append(f"{what}: no failed run said '{reach}': the sweep did not reach what it is there for")

    def rm(*names):
        for n in os.listdir(d):
            if any(n == x or n.startswith(x + ".") for x in names):
                os.remove(os.path.join(d, n))

    def same_as(out, ref):
        def f():
            try:
                with open(os.path.join(d, out), "rb") as a, open(os.path.join(d, ref), "rb") as b:
                    return a.read() == b.read()
            except OSError:
                return False
        return f

    # (24 requests to resume: enough steps that a fault finds a result kept)
    rows = [{"id": i, "prompt_ids": [(7 * i + 3 * j + 1) % V for j in range(2 + i % 4)]}
            for i in range(24 if kind.startswith("resume") else 6)]
    write_jsonl(os.path.join(d, "in.jsonl"), rows)
    score = [ARGS.run] + tiny("score", "in.jsonl", "o.jsonl", "--batch-size", "2")
    if kind in ("score", "dump", "resume"):
        expect_ok(tiny("score", os.path.join(d, "in.jsonl"), os.path.join(d, "ref.jsonl"), "--batch-size", "2"))
    if kind == "score":
        sweep("grok1-run score", score, lambda: rm("o.jsonl"), "o.jsonl", same_as("o.jsonl", "ref.jsonl"),
              "grok1-run")
    if kind == "generate":
        write_jsonl(os.path.join(d, "text.jsonl"), [{"id": 1, "prompt": "The cat sat", "max_new_tokens": 4,
                                                     "temperature": 0.8, "seed": 3, "top_logprobs": 2},
                                                    {"id": 2, "prompt": "Hello world", "stop": ["o"]}])
        gen = tiny("generate", "text.jsonl", "g.jsonl", "--tokenizer", ARGS.tokenizer)
        p = subprocess.run([ARGS.run] + tiny("generate", "text.jsonl", "gref.jsonl", "--tokenizer", ARGS.tokenizer),
                           cwd=d, capture_output=True, text=True, timeout=60)
        check(p.returncode == 0, f"generate: {p.stderr}")
        sweep("grok1-run generate (text)", [ARGS.run] + gen, lambda: rm("g.jsonl"), "g.jsonl",
              same_as("g.jsonl", "gref.jsonl"), "grok1-run")
    dump = score + ["--dump-logits", "lg.h5"]
    if kind == "dump":
        sweep("grok1-run score --dump-logits", dump, lambda: rm("o.jsonl", "lg.h5"), "o.jsonl",
              same_as("o.jsonl", "ref.jsonl"), "grok1-run")
    def stop_run(least):
        """a run stopped by a fault with at least `least` results kept (the
        step at which results are kept depends on when the dump's writer
        flushed: on a busy machine a whole round of steps can pass with the
        writer behind, so up to 5 rounds); returns how many were kept"""
        kept = 0
        for step in [s for _ in range(5) for s in range(3, 40)]:
            rm("o.jsonl", "lg.h5")
            p = subprocess.run(dump, capture_output=True, text=True, timeout=60, cwd=d,
                               env=dict(os.environ, GROK1_FAULT=f"0:{step}"))
            part = os.path.join(d, "o.jsonl.partial")
            kept = len(read_jsonl(part)) if p.returncode == 1 and os.path.exists(part) else 0
            if kept >= least:
                break
        check(kept >= least, f"no faulted run kept {least} results: {p.stderr}")
        return kept

    if kind == "resume":
        # a run stopped by a fault, its files kept aside once and put back
        # before each resume
        saved = os.path.join(d, "stopped")
        stop_run(1)
        os.mkdir(saved)
        kept = [n for n in os.listdir(d) if n.startswith(("o.jsonl.", "lg.h5."))]
        for n in kept:
            shutil.copy(os.path.join(d, n), saved)

        def stopped():
            rm("o.jsonl", "lg.h5")
            for n in kept:
                shutil.copy(os.path.join(saved, n), d)
        # (the look at the kept results' datasets before anything changes
        # is reached: a failure there must fail the run, not leave the
        # result it was looking at for the prune, which checks less)
        sweep("grok1-run --resume with a dump", dump + ["--resume"], stopped, "o.jsonl",
              same_as("o.jsonl", "ref.jsonl"), "grok1-run", again=True,
              reach="could not be checked: out of memory for the tokens of logits/")
    if kind == "resume_look":
        # The look at the dump before anything changes (kept_has, run_files.c)
        # checks each kept result's dataset: its rows, tokens, id and values.
        # An allocation of it that fails must fail the run (out of memory,
        # exit 1, every file as it was): the prune after it checks only the
        # shape and the values, so a result the look could not check was
        # kept with the logits of other tokens (mutants F04 and F11 of
        # scripts/mutants-2026-12-05.txt: exit 0, the dump taken over).
        # Here the last kept result's dataset records other tokens, and the
        # dump is finished (DUMP, not DUMP.partial: a kill between the two
        # renames): the clean resume refuses it right after the look, so a
        # sweep of every allocation call of that run is every call up to
        # and through the look, the second result's too (a sweep by site
        # fails only the first result's). No run may exit 0.
        try:
            import h5py
        except ImportError:
            print("h5py not available (python3-h5py): skipped")
            return SKIP
        n_kept = stop_run(2)
        os.rename(os.path.join(d, "lg.h5.partial"), os.path.join(d, "lg.h5"))
        last = n_kept - 1  # the input lines of the kept results: 0 to n_kept - 1
        with h5py.File(os.path.join(d, "lg.h5"), "r+") as f:
            x = f[f"logits/{last}"]
            x.attrs.modify("tokens", (x.attrs["tokens"] + 1) % V)
        names = ["o.jsonl.partial", "o.jsonl.meta.json", "lg.h5"]
        before = {}
        for n in names:
            with open(os.path.join(d, n), "rb") as f:
                before[n] = f.read()
        look = dump + ["--resume"]
        refusal = "is a finished logits dump that is not the one of the results kept"
        p = subprocess.run(look, capture_output=True, text=True, timeout=60, cwd=d)
        clean = p.stderr.strip()
        check(p.returncode == 1 and refusal in clean and f"other tokens than its request's in logits/{last}" in clean,
              f"the resume of a finished dump with a result of other tokens: exit {p.returncode}: {clean[-400:]}")
        cnt = os.path.join(d, "sites")
        subprocess.run(look, capture_output=True, timeout=60, cwd=d,
                       env=dict(os.environ, LD_PRELOAD=ARGS.nomem_shim, G1_TEST_NOMEM_COUNT=cnt))
        with open(cnt) as f:
            n = max(int(x) for x in f.read().split())
        os.remove(cnt)
        said = set()
        for k in range(1, n + 1):
            p = subprocess.run(look, capture_output=True, text=True, timeout=60, cwd=d,
                               env=dict(os.environ, LD_PRELOAD=ARGS.nomem_shim, G1_TEST_NOMEM=str(k)))
            runs[0] += 1
            err = p.stderr.strip()
            m = re.search(r"could not be checked: out of memory (?:for the tokens of|for the id of|reading) "
                          r"logits/(\d+)", err)
            if m:
                said.add(int(m.group(1)))
            changed = []
            for x in names:
                try:
                    with open(os.path.join(d, x), "rb") as f:
                        if f.read() != before[x]:
                            changed.append(x)
                except OSError:
                    changed.append(x + " (gone)")
            made = [x for x in os.listdir(d) if x == "o.jsonl" or ".damaged" in x]
            if p.returncode == 0:
                bad.append(f"resume of a dump the look refuses: allocation call {k} failed: exit 0, a kept result's "
                           f"logits of other tokens taken over unchecked: {err[-300:]}")
            elif p.returncode < 1 or p.returncode > 3 or "grok1-run: error:" not in err:
                bad.append(f"resume of a dump the look refuses: allocation call {k} failed: exit {p.returncode}: "
                           f"{err[-400:]}")
            elif "memory" not in err and err != clean:  # (an allocation with a fallback: the clean refusal)
                bad.append(f"resume of a dump the look refuses: allocation call {k} failed: the message is neither "
                           f"the clean run's refusal nor says out of memory: {err[-400:]}")
            elif err != clean and blames(err):
                bad.append(f"resume of a dump the look refuses: allocation call {k} failed: a message blames the "
                           f"files: {blames(err)[0][-400:]}")
            if changed or made:
                bad.append(f"resume of a dump the look refuses: allocation call {k} failed: exit {p.returncode}, "
                           f"and {', '.join(changed + made)} not as before: {err[-300:]}")
        print(f"resume of a dump the look refuses: {n} allocation calls, each failed in turn; the look's own "
              f"failures said so for logits/{sorted(said)}")
        for x in range(n_kept):
            if x not in said:
                bad.append(f"resume of a dump the look refuses: no failed run said that the look could not check "
                           f"logits/{x} for want of memory: the sweep did not reach that result's look")
    if kind == "merge":
        shards = []
        for k in range(3):
            o = f"s.jsonl.shard-{k}-of-3"
            sd = ["--dump-logits", os.path.join(d, f"sd.h5.shard-{k}-of-3")] if ARGS.hdf5 else []
            expect_ok(tiny("score", os.path.join(d, "in.jsonl"), os.path.join(d, o), "--shard", f"{k}/3", *sd))
            shards.append(o)
        merge = [ARGS.merge, "--input", "in.jsonl", "--output", "m.jsonl"] + \
            (["--dump-logits", "md.h5"] if ARGS.hdf5 else []) + shards
        subprocess.run([ARGS.merge, "--input", "in.jsonl", "--output", "mref.jsonl"] + shards, cwd=d,
                       capture_output=True, timeout=60)
        # a merge that exits 0 writes the clean merge's meta file: with the
        # dump, where it is (settings.dump_logits_path and
        # dump_logits_from_output, which a resume of OUT goes by); an
        # allocation failed while finding those left them out, exit 0
        rm("m.jsonl", "md.h5")
        p = subprocess.run(merge, cwd=d, capture_output=True, text=True, timeout=60)
        check(p.returncode == 0, f"grok1-merge: {p.stderr}")
        with open(os.path.join(d, "m.jsonl.meta.json")) as f:
            meta_ref = f.read()
        check(not ARGS.hdf5 or '"dump_logits_path"' in meta_ref, f"the merge's meta file: {meta_ref}")

        def meta_made():
            try:
                with open(os.path.join(d, "m.jsonl.meta.json")) as f:
                    got = f.read()
            except OSError:
                return "no m.jsonl.meta.json"
            if got == meta_ref:
                return None
            want, have = json.loads(meta_ref)["settings"], json.loads(got).get("settings", {})
            return (f"m.jsonl.meta.json is not the clean merge's (settings without "
                    f"{sorted(set(want) - set(have))}, other: {sorted(x for x in want if x in have and want[x] != have[x])})")
        sweep("grok1-merge", merge, lambda: rm("m.jsonl", "md.h5"), "m.jsonl", same_as("m.jsonl", "mref.jsonl"),
              "grok1-merge", made=meta_made)
        if ARGS.hdf5:
            # every call, not every site: the string attributes of a dump
            # (its format, its run, each request's id) are read at one
            # allocation site, which each dump's format reaches first; only
            # a later call fails the read of an id (get_id, logits_file.c),
            # which must be told as memory, not as an id that is not a string
            sweep("grok1-merge, every allocation call", merge, lambda: rm("m.jsonl", "md.h5"), "m.jsonl",
                  same_as("m.jsonl", "mref.jsonl"), "grok1-merge", calls=True,
                  reach="out of memory reading the id attribute", made=meta_made)
            def refused_sweep(what, refusal):
                """the merge refused (exit 1, `refusal` said), and so with
                every allocation call failed in turn: exit 1, no m.jsonl,
                the refusal or a message of memory; never a merge"""
                cnt = os.path.join(d, "sites")
                rm("m.jsonl", "md.h5")
                p = subprocess.run(merge, capture_output=True, text=True, timeout=60, cwd=d,
                                   env=dict(os.environ, LD_PRELOAD=ARGS.nomem_shim, G1_TEST_NOMEM_COUNT=cnt))
                check(p.returncode == 1 and refusal in p.stderr,
                      f"grok1-merge of {what}: exit {p.returncode}: {p.stderr.strip()[-300:]}")
                with open(cnt) as f:
                    n = max(int(x) for x in f.read().split())
                os.remove(cnt)
                for k in range(1, n + 1):
                    rm("m.jsonl", "md.h5")
                    p = subprocess.run(merge, capture_output=True, text=True, timeout=60, cwd=d,
                                       env=dict(os.environ, LD_PRELOAD=ARGS.nomem_shim, G1_TEST_NOMEM=str(k)))
                    runs[0] += 1
                    err = p.stderr.strip()
                    made = os.path.exists(os.path.join(d, "m.jsonl"))
                    if p.returncode != 1 or made:
                        bad.append(f"grok1-merge of {what}: allocation call {k} failed: exit {p.returncode}"
                                   f"{', m.jsonl written' if made else ''}, not the refusal: {err[-300:]}")
                    elif "memory" not in err and refusal not in err:
                        bad.append(f"grok1-merge of {what}: allocation call {k} failed: {err[-300:]}")
                print(f"grok1-merge of {what}: {n} allocation calls, each failed in turn")

            # a dump another run wrote (another seed: the same ids and
            # tokens, only its record of the run differs) is refused; a
            # failed allocation may make that refusal one of memory, never
            # a merge (the record is read at the same site as the ids: a
            # failure there was taken for a dump without a record, and the
            # dump merged)
            expect_ok(tiny("score", os.path.join(d, "in.jsonl"), os.path.join(d, "other.jsonl"), "--shard", "1/3",
                           "--dump-logits", os.path.join(d, "other.h5"), seed=6))
            saved = os.path.join(d, "sd1.saved")
            shutil.copy(os.path.join(d, "sd.h5.shard-1-of-3"), saved)
            shutil.copy(os.path.join(d, "other.h5"), os.path.join(d, "sd.h5.shard-1-of-3"))
            refused_sweep("another run's dump", "written by another run")
            # a dump of other tokens under the same ids, without a record
            # of its run (as grok1-run wrote before it kept one): refused by
            # its tokens attribute; a failed allocation for the tokens was
            # taken for a dataset without the attribute, and merged
            try:
                import h5py
            except ImportError:
                h5py = None
                print("h5py not available: the dump of other tokens not tried")
            if h5py:
                # (request 1 alone: the other of shard 1, request 4, matches;
                # so one request's tokens decide the refusal)
                write_jsonl(os.path.join(d, "in2.jsonl"),
                            [dict(r, prompt_ids=[(x + 1) % V for x in r["prompt_ids"]]) if r["id"] == 1 else r
                             for r in rows])
                expect_ok(tiny("score", os.path.join(d, "in2.jsonl"), os.path.join(d, "other2.jsonl"), "--shard",
                               "1/3", "--dump-logits", os.path.join(d, "other2.h5")))
                with h5py.File(os.path.join(d, "other2.h5"), "r+") as f:
                    del f.attrs["run"]
                shutil.copy(os.path.join(d, "other2.h5"), os.path.join(d, "sd.h5.shard-1-of-3"))
                refused_sweep("the dump of other tokens", "is the dump of other requests")
            shutil.copy(saved, os.path.join(d, "sd.h5.shard-1-of-3"))
            # shards whose folder was moved whole after they ran: each
            # shard's dump is found beside it by its place relative to its
            # output (dump_logits_from_output), its recorded name being gone;
            # an allocation failed while finding it fell back to that name
            # and told the dump as missing, not memory
            os.mkdir(os.path.join(d, "ran"))
            moved = []
            for k in range(3):
                o = os.path.join("ran", f"s.jsonl.shard-{k}-of-3")
                expect_ok(tiny("score", os.path.join(d, "in.jsonl"), os.path.join(d, o), "--shard", f"{k}/3",
                               "--dump-logits", os.path.join(d, "ran", f"sd.h5.shard-{k}-of-3")))
                moved.append(o.replace("ran", "moved", 1))
            os.rename(os.path.join(d, "ran"), os.path.join(d, "moved"))
            sweep("grok1-merge of shards moved with their dumps", [ARGS.merge, "--input", "in.jsonl", "--output",
                                                                    "m.jsonl", "--dump-logits", "md.h5"] + moved,
                  lambda: rm("m.jsonl", "md.h5"), "m.jsonl", same_as("m.jsonl", "mref.jsonl"), "grok1-merge")
    if kind in ("checksum", "checkpoint"):
        p = subprocess.run([ARGS.mkckpt, "--config", "tiny", "--seed", "1", "--out", os.path.join(d, "t.h5")],
                           capture_output=True, text=True, timeout=60)
        check(p.returncode == 0, p.stderr)
    if kind == "checkpoint":
        # the checkpoint's load (its attributes, datasets, checksums) in grok1-run
        ck = [ARGS.run, "--checkpoint", "t.h5", "--mode", "score", "--input", "in.jsonl", "--batch-size", "2",
              "--output"]
        p = subprocess.run(ck + ["cref.jsonl"], cwd=d, capture_output=True, text=True, timeout=60)
        check(p.returncode == 0, f"grok1-run --checkpoint: {p.stderr}")
        sweep("grok1-run --checkpoint", ck + ["o.jsonl"], lambda: rm("o.jsonl"), "o.jsonl",
              same_as("o.jsonl", "cref.jsonl"), "grok1-run")
    if kind == "plan":
        # grok1-plan: out of memory is a failed run (exit 1), as every other
        # failure of it; 2 is a bad command line (it was for its
        # --layers-per-stage list). A preset with every option that
        # allocates or prints (--layers-per-stage, the bounds, --out), a JSON
        # file of hyper-parameters with --out through a dangling symbolic
        # link (the name it makes), and a checkpoint.
        with open(os.path.join(d, "cfg.json"), "w") as f:
            json.dump({"vocab_size": 512, "emb_size": 64, "num_layers": 4, "num_q_heads": 4, "num_kv_heads": 2,
                       "key_size": 16, "ffn_size": 96, "max_seq_len": 256}, f)
        plans = [("a preset", ["--config", "tiny", "--stages", "2", "--ep", "1", "--layers-per-stage", "1,3",
                               "--bandwidth", "100", "--tflops", "10"]),
                 ("a JSON file", ["--config", "cfg.json", "--stages", "2", "--ep", "2", "--balance", "prompt",
                                  "--dump-logits"])]
        if ARGS.hdf5 and ARGS.mkckpt:
            p = subprocess.run([ARGS.mkckpt, "--config", "tiny", "--seed", "1", "--out", os.path.join(d, "t.h5")],
                               capture_output=True, text=True, timeout=60)
            check(p.returncode == 0, p.stderr)
            plans.append(("a checkpoint", ["--checkpoint", "t.h5", "--stages", "1", "--ep", "1"]))
        os.symlink("p.json", os.path.join(d, "link.json"))
        for what, args in plans:
            p = subprocess.run([ARGS.grok1_plan] + args + ["--out", "pref.json"], cwd=d, capture_output=True,
                               text=True, timeout=60)
            check(p.returncode == 0, f"grok1-plan of {what}: {p.stderr.strip()}")
            out = "link.json" if "cfg.json" in args else "p.json"
            sweep(f"grok1-plan of {what}", [ARGS.grok1_plan] + args + ["--out", out], lambda: rm("p.json"),
                  "p.json", same_as("p.json", "pref.json"), "grok1-plan", code=1)
    files = ["t.h5"]
    if kind == "checksum" and ARGS.link:
        # and a checkpoint in parts, joined by grok1-link (its fingerprints, external links)
        for name, rng, extra in (("p1.h5", "0-1", []), ("p2.h5", "2-3", ["--no-embedding"])):
            p = subprocess.run([ARGS.mkckpt, "--config", "tiny", "--seed", "1", "--part", rng, *extra, "--out",
                                os.path.join(d, name)], capture_output=True, text=True, timeout=60)
            check(p.returncode == 0, p.stderr)
        p = subprocess.run([ARGS.link, "j.h5", "p1.h5", "p2.h5"], cwd=d, capture_output=True, text=True, timeout=60)
        check(p.returncode == 0, p.stderr)
        files.append("j.h5")

        # grok1-link itself: OUT whole (all 78 datasets reached and matched) or not there
        def linked():
            p = subprocess.run([ARGS.checksum, "l.h5"], cwd=d, capture_output=True, text=True, timeout=60)
            return p.returncode == 0 and "78 matched" in p.stdout
        sweep("grok1-link", [ARGS.link, "l.h5", "p1.h5", "p2.h5"], lambda: rm("l.h5"), "l.h5", linked, "grok1-link")
    for ck in files if kind == "checksum" else []:
        # grok1-checksum writes nothing: a run that exits 0 must report what
        # the clean run reports (on stdout), every dataset checked
        want = subprocess.run([ARGS.checksum, ck], cwd=d, capture_output=True, text=True, timeout=60).stdout
        check("78 datasets" in want, f"grok1-checksum's report: {want!r}")
        cmd = [ARGS.checksum, ck]
        # each site once; and for the joined checkpoint every call too: the
        # check of its parts opens it once more after every dataset was read,
        # through allocation sites that reading them reached first
        for unit in ("site", "call") if ck == "j.h5" else ("site",):
            sites = {"G1_TEST_NOMEM_SITES": "1"} if unit == "site" else {}
            cnt = os.path.join(d, "sites")
            subprocess.run(cmd, cwd=d, capture_output=True, timeout=60,
                           env=dict(os.environ, LD_PRELOAD=ARGS.nomem_shim, G1_TEST_NOMEM_COUNT=cnt, **sites))
            with open(cnt) as f:
                n = max(int(x) for x in f.read().split())
            os.remove(cnt)
            for k in range(1, n + 1):
                p = subprocess.run(cmd, cwd=d, capture_output=True, text=True, timeout=60,
                                   env=dict(os.environ, LD_PRELOAD=ARGS.nomem_shim, G1_TEST_NOMEM=str(k), **sites))
                runs[0] += 1
                timing = re.compile(r"read in [0-9.]+ s \([0-9.]+ GB/s\)")
                if p.returncode == 0 and timing.sub("", p.stdout) != timing.sub("", want):
                    bad.append(f"grok1-checksum {ck}: allocation {unit} {k} failed: exit 0, but it said "
                               f"{p.stdout.strip()!r}, not {want.strip()!r}")
                elif p.returncode < 0 or p.returncode > 3 or (p.returncode and "grok1-checksum" not in p.stderr):
                    bad.append(f"grok1-checksum {ck}: allocation {unit} {k} failed: exit {p.returncode}: "
                               f"{p.stderr[-400:]}")
                elif blames(p.stderr):
                    bad.append(f"grok1-checksum {ck}: allocation {unit} {k} failed: exit {p.returncode}, and a message "
                               f"blames the file: {blames(p.stderr)[0][-400:]}")
                elif p.returncode and not said_memory(p.stderr):
                    bad.append(f"grok1-checksum {ck}: allocation {unit} {k} failed: exit {p.returncode}, and the "
                               f"message does not say out of memory: {p.stderr[-400:]}")
                elif p.returncode and re.search(r"unreadable|DAMAGED|not the one linked", p.stdout):
                    bad.append(f"grok1-checksum {ck}: allocation {unit} {k} failed: its summary blames the file: "
                               f"{p.stdout.strip()[-300:]}")
            print(f"grok1-checksum {ck}: {n} allocation {unit}s")
    if kind == "checksum":
        # HDF5's own allocations (G1_TEST_NOMEM_LIB): HDF5 1.10 crashes or
        # stops at many of them itself, which no caller can mend, so only
        # the messages of the runs that return are checked: one that fails
        # may not blame the file without saying memory ("not an HDF5 file",
        # "unknown HDF5 error (truncated or damaged file?)" were said)
        cmd = [ARGS.checksum, "t.h5"]
        cnt = os.path.join(d, "sites")
        hdf5 = dict(os.environ, LD_PRELOAD=ARGS.nomem_shim, G1_TEST_NOMEM_SITES="1", G1_TEST_NOMEM_LIB="libhdf5")
        subprocess.run(cmd, cwd=d, capture_output=True, timeout=60, env=dict(hdf5, G1_TEST_NOMEM_COUNT=cnt))
        with open(cnt) as f:
            n = max(int(x) for x in f.read().split())
        os.remove(cnt)
        told = 0
        for k in range(1, n + 1):
            p = subprocess.run(cmd, cwd=d, capture_output=True, text=True, timeout=60,
                               env=dict(hdf5, G1_TEST_NOMEM=str(k)))
            runs[0] += 1
            if p.returncode == 1:
                told += 1
                if blames(p.stderr):
                    bad.append(f"grok1-checksum t.h5: HDF5's allocation site {k} failed: exit 1, and a message "
                               f"blames the file: {blames(p.stderr)[0][-400:]}")
        print(f"grok1-checksum t.h5: {n} allocation sites in HDF5, {told} of them told (exit 1), the others "
              f"passed or stopped in HDF5")
    print(f"{runs[0]} runs with an allocation failed")
    for b in bad:
        print("FAIL", b)
    check(not bad, f"{len(bad)} runs with an allocation failed went wrong (listed above)")
    return 0


def case_nomem_score(d):
    return nomem(d, "score")


def case_nomem_generate(d):
    return nomem(d, "generate")


def case_nomem_dump(d):
    return nomem(d, "dump")


def case_nomem_resume(d):
    return nomem(d, "resume")


def case_nomem_resume_look(d):
    return nomem(d, "resume_look")


def case_nomem_merge(d):
    return nomem(d, "merge")


def case_nomem_checksum(d):
    return nomem(d, "checksum")


def case_nomem_checkpoint(d):
    return nomem(d, "checkpoint")


def case_nomem_plan(d):
    return nomem(d, "plan")


def case_no_leaks(d):
    """Leak checks where Open MPI is not in the way. scripts/test.sh runs
    this suite under AddressSanitizer without them (Open MPI keeps
    allocations to the end of a process that started it); the runs here
    start no MPI, so they are checked (detect_leaks=1 whatever the suite's
    ASAN_OPTIONS say): grok1-run --check-input with --dump-logits (whose
    canonical names grok1-run's command line once kept to the end: every
    leak-checked grok1-run with --dump-logits failed), grok1-merge of shards
    with their dumps, and in a build without MPI grok1-run's own runs: a
    dump stopped by a fault and resumed, and generate. Skipped outside a
    sanitizer build (G1_SANITIZED, which scripts/test.sh sets)."""
    if not os.environ.get("G1_SANITIZED"):
        print("not a sanitizer build (G1_SANITIZED unset): skipped")
        return SKIP
    leak = {"ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "") + ":detect_leaks=1"}

    def checked(what, rc, se, code=0):
        check("LeakSanitizer" not in se, f"{what}: leaks: {se[-3000:]}")
        check(rc == code, f"{what}: exit {rc}, expected {code}: {se[-2000:]}")

    rows = [{"id": i, "prompt_ids": [(7 * i + 3 * j + 1) % V for j in range(2 + i % 5)]} for i in range(12)]
    inp, out, lg = os.path.join(d, "in.jsonl"), os.path.join(d, "out.jsonl"), os.path.join(d, "lg.h5")
    write_jsonl(inp, rows)
    dump = ["--dump-logits", lg] if ARGS.hdf5 else []
    rc, _, se = run(tiny("score", inp, out, "--check-input", *dump), env=leak)
    checked("grok1-run --check-input", rc, se)
    if not ARGS.mpi:
        rc, _, se = run(tiny("score", inp, out, "--batch-size", "2", *dump), env=dict(leak, GROK1_FAULT="0:3"))
        checked("a run failed at step 3", rc, se, 1)
        rc, _, se = run(tiny("score", inp, out, "--batch-size", "2", "--resume", *dump), env=leak)
        checked("its resume", rc, se)
        gen = os.path.join(d, "gen.jsonl")
        rc, _, se = run(tiny("generate", inp, gen, "--max-new-tokens", "3", "--top-logprobs", "2"), env=leak)
        checked("generate", rc, se)
    if not ARGS.merge:
        return 0
    shards = []
    for k in range(3):
        o = os.path.join(d, f"s.jsonl.shard-{k}-of-3")
        sd = ["--dump-logits", f"{lg}.shard-{k}-of-3"] if ARGS.hdf5 else []
        expect_ok(tiny("score", inp, o, "--shard", f"{k}/3", *sd))
        shards.append(o)
    p = subprocess.run([ARGS.merge, "--input", inp, "--output", os.path.join(d, "m.jsonl")] +
                       (["--dump-logits", os.path.join(d, "m.h5")] if ARGS.hdf5 else []) + shards,
                       capture_output=True, text=True, timeout=60, env=dict(os.environ, **leak))
    checked("grok1-merge", p.returncode, p.stderr)
    p = subprocess.run([ARGS.merge, "--input", inp, "--output", os.path.join(d, "m2.jsonl")] + shards[:2],
                       capture_output=True, text=True, timeout=60, env=dict(os.environ, **leak))
    checked("grok1-merge with a shard missing", p.returncode, p.stderr, 1)
    return 0


def main():
    global ARGS
    cases, ap = script_cases(globals())
    ap.add_argument("--run", required=True)
    ap.add_argument("--mkckpt")
    ap.add_argument("--hdf5", type=int, default=0)
    ap.add_argument("--mpi", type=int, default=0)
    ap.add_argument("--merge")
    ap.add_argument("--grok1-plan")
    ap.add_argument("--eio-shim")
    ap.add_argument("--init-shim")
    ap.add_argument("--nomem-shim")
    ap.add_argument("--checksum")
    ap.add_argument("--link", help="grok1-link (nomem_checksum: a checkpoint in parts)")
    ap.add_argument("--tokenizer")
    ARGS = ap.parse_args()
    ARGS.run = os.path.abspath(ARGS.run)
    if ARGS.mkckpt:
        ARGS.mkckpt = os.path.abspath(ARGS.mkckpt)
    if ARGS.merge:
        ARGS.merge = os.path.abspath(ARGS.merge)
    if ARGS.grok1_plan:
        ARGS.grok1_plan = os.path.abspath(ARGS.grok1_plan)
    for a in ("eio_shim", "nomem_shim", "checksum", "tokenizer", "merge", "mkckpt", "link"):
        if getattr(ARGS, a):
            setattr(ARGS, a, os.path.abspath(getattr(ARGS, a)))
    if ARGS.init_shim:
        ARGS.init_shim = os.path.abspath(ARGS.init_shim)
    with tempfile.TemporaryDirectory(prefix="g1cli-") as d:
        try:
            rc = cases[ARGS.case](d)
        except Fail as e:
            print(f"FAIL {ARGS.case}: {e}", file=sys.stderr)
            return 1
        except subprocess.TimeoutExpired as e:
            print(f"FAIL {ARGS.case}: timed out: {e}", file=sys.stderr)
            return 1
    if rc == SKIP:
        print(f"SKIP {ARGS.case}")
        return SKIP
    print(f"ok {ARGS.case}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
