#!/usr/bin/env python3
"""Command-line tests of grok1-plan (suite 'cli'): the table, --out JSON,
exit codes (0 planned, 1 refused, 2 usage) and messages.
usage: test_plan_cli.py CASE --plan PATH --hdf5 0|1 [--mkckpt PATH]"""
import argparse
import json
import os
import subprocess
import sys
import tempfile


# GROK1.md's hyper-parameter table
GROK1 = dict(vocab_size=131072, emb_size=6144, num_layers=64, num_q_heads=48, num_kv_heads=8, key_size=128,
             ffn_size=32768, num_experts=8, num_selected_experts=2, max_seq_len=8192,
             embedding_multiplier=78.38367176906169, output_multiplier=0.5773502691896257,
             attn_output_multiplier=0.08838834764831845, attn_logit_cap=30.0, rope_base=10000.0, rms_eps=1e-5,
             pad_id=0, bos_id=1, eos_id=2)


def run(args, **kw):
    p = subprocess.run([A.plan] + args, capture_output=True, text=True, timeout=60, **kw)
    return p.returncode, p.stdout, p.stderr


def expect(cond, what):
    if not cond:
        print("FAIL:", what)
        sys.exit(1)
    print("ok:", what)


def case_help():
    rc, out, err = run(["--help"])
    expect(rc == 0 and "--stages" in out and "--layers-per-stage" in out, "--help prints usage, exit 0")


def case_table():
    rc, out, err = run(["--config", "tiny", "--stages", "2", "--ep", "2"])
    expect(rc == 0, f"tiny 2x2 plans (rc {rc}, {err.strip()})")
    lines = out.splitlines()
    head = [i for i, l in enumerate(lines) if l.split()[:3] == ["rank", "stage", "slot"]]
    expect(len(head) == 1, "table header printed")
    rows = [l.split() for l in lines[head[0] + 1:head[0] + 5]]
    expect([r[0] for r in rows] == ["0", "1", "2", "3"], "one row per rank")
    expect([(r[1], r[2]) for r in rows] == [("0", "0"), ("0", "1"), ("1", "0"), ("1", "1")], "stage and slot")
    expect(rows[0][4] == "0-3" and rows[1][4] == "4-7", "experts of the slots")
    expect(any(l.strip().startswith("stage 0:") for l in lines) and "stage costs" in out, "stage costs printed")
    rc, out, err = run(["--config", "grok-1", "--stages", "8", "--ep", "8", "--mem-per-rank", "80G"])
    expect(rc == 0 and "GiB" in out and len([l for l in out.splitlines() if l.strip().startswith("stage ") and ":" in l.split()[1]]) == 8,
           "grok-1 8x8 on 80G")


def case_out_json():
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "plan.json")
        rc, out, err = run(["--config", "grok-1", "--stages", "4", "--ep", "2", "--slots", "6", "--context", "4096",
                            "--max-batch-tokens", "128", "--mem-per-rank", "200G", "--out", path])
        expect(rc == 0, f"plan written (rc {rc}, {err.strip()})")
        expect(not os.path.exists(path + ".partial"), "no .partial left")
        with open(path) as f:
            j = json.load(f)
        expect(j["format"] == "grok1-plan" and j["format_version"] == 1, "format and version")
        expect(j["model"]["num_layers"] == 64 and j["model"]["rope_base"] == 10000.0 and len(j["model"]) >= 19,
               "model hyper-parameters")
        # every constant of GROK1.md's table, exactly: the reference tests read them from the checkpoint
        # grok1-mkckpt writes from these presets, so a wrong preset value is invisible there
        bad = {k: (j["model"].get(k), v) for k, v in GROK1.items() if j["model"].get(k) != v}
        expect(not bad, f"grok-1 preset equals GROK1.md's hyper-parameters (differ, got vs want: {bad})")
        expect(j["stages"] == 4 and j["ep"] == 2 and len(j["ranks"]) == 8, "stages, ep, ranks")
        c = j["cuts"]
        expect(c[0] == 0 and c[-1] == 64 and all(a < b for a, b in zip(c, c[1:])), "cuts contiguous, covering")
        expect(j["layers_per_stage"] == [b - a for a, b in zip(c, c[1:])], "layers_per_stage")
        expect(j["slots"] == 6 and j["context"] == 4096 and j["max_batch_tokens"] == 128
               and j["mem_per_rank"] == 200 << 30, "request echoed")
        for r in j["ranks"]:
            s = r["stage"]
            expect(r["layers"] == [c[s], c[s + 1]] and r["experts"] == [r["slot"] * 4, 4]
                   and r["total_bytes"] == r["weights_bytes"] + r["kv_cache_bytes"] + r["buffer_bytes"]
                   and r["total_bytes"] <= 200 << 30, f"rank {r['rank']} entry")
        expect(j["ranks"][0]["weights_bytes"] > j["ranks"][1]["weights_bytes"], "rank 0 holds the embedding")
        rc, out, err = run(["--config", "tiny", "--stages", "2", "--ep", "1", "--out", "-"])
        expect(rc == 0 and json.loads(out)["stages"] == 2 and "rank" in err, "--out - : JSON on stdout, table on stderr")
        # tiny keeps Grok-1's constants but its own shapes, and 1/sqrt(key_size) as the attention scale
        tiny = dict(GROK1, vocab_size=512, emb_size=64, num_layers=4, num_q_heads=4, num_kv_heads=2, key_size=16,
                    ffn_size=96, max_seq_len=256, attn_output_multiplier=0.25)
        m = json.loads(out)["model"]
        bad = {k: (m.get(k), v) for k, v in tiny.items() if m.get(k) != v}
        expect(not bad, f"tiny preset: Grok-1's constants, 1/sqrt(16) attention scale (differ: {bad})")


def case_out_special():
    """--out PATH that is not a regular file is written as grok1-run writes
    such an output: a FIFO or a device directly (it replaced them with a
    regular file from PATH.partial), a symbolic link through to its file
    (which the link keeps naming); --out - is still stdout."""
    import threading
    with tempfile.TemporaryDirectory() as d:
        g1 = ["--config", "tiny", "--stages", "1", "--ep", "1", "--out"]
        target, link = os.path.join(d, "target.json"), os.path.join(d, "link.json")
        with open(target, "w") as f:
            f.write("old\n")
        os.symlink("target.json", link)
        rc, out, err = run(g1 + [link])
        expect(rc == 0 and os.path.islink(link) and os.readlink(link) == "target.json", f"a symlink stays one ({err})")
        with open(target) as f:
            expect(json.load(f)["stages"] == 1, "the plan written to the link's file")
        expect(sorted(os.listdir(d)) == ["link.json", "target.json"], f"nothing else left: {os.listdir(d)}")
        # a dangling link: the file it would make (as grok1-run's outputs;
        # it was refused), unless its directory does not exist
        os.symlink("new.json", os.path.join(d, "dangling.json"))
        rc, out, err = run(g1 + [os.path.join(d, "dangling.json")])
        expect(rc == 0 and os.path.islink(os.path.join(d, "dangling.json")) and
               json.load(open(os.path.join(d, "new.json")))["stages"] == 1, f"a dangling link written through ({err})")
        os.symlink("gone/x.json", os.path.join(d, "nowhere.json"))
        rc, out, err = run(g1 + [os.path.join(d, "nowhere.json")])
        expect(rc == 1 and "symbolic link to" in err and "does not exist" in err and not os.path.exists(
            os.path.join(d, "gone")), f"a link into a missing directory: exit {rc} ({err})")
        for n in ("dangling.json", "new.json", "nowhere.json"):
            os.remove(os.path.join(d, n))
        fifo = os.path.join(d, "fifo")
        os.mkfifo(fifo)
        got = []
        reader = threading.Thread(target=lambda: got.append(open(fifo).read()), daemon=True)
        reader.start()
        rc, out, err = run(g1 + [fifo])
        reader.join(30)
        expect(rc == 0 and got and json.loads(got[0])["stages"] == 1, f"a FIFO's reader gets the plan ({err})")
        expect(os.path.exists(fifo) and not os.path.isfile(fifo) and not os.path.exists(fifo + ".partial"),
               "the FIFO is still a FIFO")
        dev = os.path.join(d, "null")
        try:
            os.mknod(dev, 0o666 | __import__("stat").S_IFCHR, os.makedev(1, 3))
        except OSError:
            dev = None  # not root: no device node of our own
        if dev:
            rc, out, err = run(g1 + [dev])
            expect(rc == 0 and not os.path.isfile(dev) and not os.path.exists(dev + ".partial"),
                   f"a device (a /dev/null node) is written, not replaced ({err})")
        # a link planted at the temporary name PLAN.json.partial is replaced,
        # not written through: the file it names is left as it was
        victim, planted = os.path.join(d, "victim.txt"), os.path.join(d, "p.json")
        with open(victim, "w") as f:
            f.write("not yours\n")
        os.symlink(victim, planted + ".partial")
        rc, out, err = run(g1 + [planted])
        expect(rc == 0 and open(victim).read() == "not yours\n" and json.load(open(planted))["stages"] == 1 and
               not os.path.lexists(planted + ".partial"), f"a link at PLAN.json.partial written through ({err})")
        rc, out, err = run(g1 + ["-"])
        expect(rc == 0 and json.loads(out)["stages"] == 1, "--out - is stdout")
        # a name of stdout is stdout too: the table goes to stderr, not into the JSON
        rc, out, err = run(g1 + ["/dev/stdout"])
        expect(rc == 0 and json.loads(out)["stages"] == 1 and "stage costs" in err,
               f"--out /dev/stdout: the JSON alone on stdout, the table on stderr ({out[:200]!r})")


def case_out_inputs():
    """--out that names the model's file (--config PATH.json, or
    --checkpoint with --mkckpt), itself or through a link, or a directory:
    refused before any work, exit 2, the file or directory as it was (the
    plan was renamed over the config or the checkpoint, exit 0; over a
    directory it failed after the planning, exit 1)."""
    with tempfile.TemporaryDirectory() as d:
        cfg, link = os.path.join(d, "model.json"), os.path.join(d, "model-link.json")
        with open(cfg, "w") as f:
            json.dump({"num_layers": 2, "vocab_size": 512, "emb_size": 64, "num_q_heads": 4, "num_kv_heads": 2,
                       "key_size": 16, "ffn_size": 96, "num_experts": 8, "max_seq_len": 256}, f)
        text = open(cfg).read()
        os.symlink("model.json", link)
        for out in (cfg, link):
            rc, so, err = run(["--config", cfg, "--stages", "1", "--ep", "1", "--out", out])
            expect(rc == 2 and "is the --config file" in err and so == "" and open(cfg).read() == text
                   and os.path.islink(link), f"--out {os.path.basename(out)} = --config: exit {rc} ({err.strip()})")
        os.mkdir(os.path.join(d, "dir.json"))
        rc, so, err = run(["--config", "tiny", "--stages", "1", "--ep", "1", "--out", os.path.join(d, "dir.json")])
        expect(rc == 2 and "is a directory" in err and so == "" and os.path.isdir(os.path.join(d, "dir.json")),
               f"--out a directory: exit {rc} before any work ({err.strip()})")
        if A.mkckpt:
            ck = os.path.join(d, "ck.h5")
            p = subprocess.run([A.mkckpt, "--config", "tiny", "--seed", "0", "--out", ck], capture_output=True,
                               text=True, timeout=60)
            expect(p.returncode == 0, f"grok1-mkckpt tiny ({p.stderr.strip()})")
            size = os.path.getsize(ck)
            rc, so, err = run(["--checkpoint", ck, "--stages", "1", "--ep", "1", "--out", ck])
            expect(rc == 2 and "is the --checkpoint file" in err and os.path.getsize(ck) == size,
                   f"--out = --checkpoint: exit {rc}, the checkpoint kept ({err.strip()})")


def case_override():
    rc, out, err = run(["--config", "tiny", "--stages", "2", "--ep", "1", "--layers-per-stage", "1,3", "--out", "-"])
    expect(rc == 0 and json.loads(out)["cuts"] == [0, 1, 4], "--layers-per-stage 1,3")
    for args, needle in [(["--layers-per-stage", "1,2"], "sum to 3"),
                         (["--layers-per-stage", "0,4"], "at least one"),
                         (["--layers-per-stage", "1,1,2"], "3 counts for --stages 2")]:
        rc, out, err = run(["--config", "tiny", "--stages", "2", "--ep", "1"] + args)
        expect(rc == 1 and err.startswith("grok1-plan: error:") and needle in err, f"{args}: refused ({err.strip()})")


def case_refusals():
    for args, needle in [(["--stages", "8", "--ep", "3"], "1, 2, 4, 8"),
                         (["--stages", "65", "--ep", "1"], "1..64"),
                         (["--stages", "2", "--ep", "1", "--mem-per-rank", "80G"], "would fit"),
                         (["--stages", "2", "--ep", "1", "--context", "9000"], "8192")]:
        rc, out, err = run(["--config", "grok-1"] + args)
        expect(rc == 1 and err.startswith("grok1-plan: error:") and needle in err, f"{args} refused: {err.strip()}")
    with tempfile.TemporaryDirectory() as d:
        bad = os.path.join(d, "bad.json")
        with open(bad, "w") as f:
            json.dump({"num_q_heads": 5}, f)
        rc, out, err = run(["--config", bad, "--stages", "1", "--ep", "1"])
        expect(rc == 1 and "num_q_heads" in err and "bad.json" in err, f"inconsistent JSON config refused: {err.strip()}")
        good = os.path.join(d, "cfg.json")
        with open(good, "w") as f:
            json.dump({"num_layers": 10, "vocab_size": 1000}, f)
        rc, out, err = run(["--config", good, "--stages", "3", "--ep", "4", "--out", "-"])
        expect(rc == 0 and json.loads(out)["model"]["num_layers"] == 10, "JSON config file")


def case_bound():
    """--bandwidth: the decode bound printed, against the same model computed
    here from the plan's JSON (stage costs and KV caches in bytes)."""
    import re
    with tempfile.TemporaryDirectory() as d:
        for cfg, P, E, extra, M in (("grok-1", 8, 8, [], 8), ("grok-1", 8, 8, ["--micro-batches", "1"], 1),
                                    ("grok-1", 4, 2, ["--slots", "64", "--micro-batches", "16", "--kv-cache", "bf16",
                                                      "--context", "4096"], 16),
                                    ("tiny", 2, 2, ["--slots", "3"], 2)):
            path = os.path.join(d, "p.json")
            rc, out, err = run(["--config", cfg, "--stages", str(P), "--ep", str(E), "--bandwidth", "3350",
                                "--out", path] + extra)
            expect(rc == 0, f"{cfg} {P}x{E} {extra}: planned ({err.strip()})")
            j = json.load(open(path))
            bw = 3350e9
            got = re.findall(r"slowest step ([0-9.]+) ms \(stage (\d+)\): at most ([0-9.]+) tokens/s", out)
            expect(len(got) == 2 and f"{M} micro-batches of the {j['slots']} slots" in out, "two bound lines")
            for fill, (ms, st, rate) in zip((0, 1), got):
                kv = [max(r["kv_cache_bytes"] for r in j["ranks"] if r["stage"] == s) for s in range(P)]
                t = [(j["stage_cost"][s] + fill * kv[s] / M) / bw for s in range(P)]
                want = j["slots"] / max(M * max(t), sum(t))
                expect(abs(float(rate) - want) <= 0.05 + 1e-4 * want and abs(float(ms) - 1e3 * max(t)) < 6e-4 and
                       t[int(st)] == max(t), f"{cfg} {P}x{E} M={M} fill {fill}: {rate} tokens/s, want {want:.1f}")
        rc, out, err = run(["--config", "tiny", "--stages", "1", "--ep", "1"])
        expect(rc == 0 and "decode bound" not in out and "prompt bound" not in out, "no bound without --bandwidth")
        # --balance prompt: cuts for scoring; stage 0 lighter, scoring at the prefill bound
        path = os.path.join(d, "bp.json")
        rc, out, err = run(["--config", "grok-1", "--stages", "8", "--ep", "8", "--balance", "prompt", "--tflops", "600",
                            "--out", path])
        lps = json.load(open(path))["layers_per_stage"]
        rates = re.findall(r"at most (\d+) tokens/s", out)
        expect(rc == 0 and lps[0] == 4 and max(lps) == 9 and len(rates) == 2 and rates[0] == rates[1] == "205747"
               and "--balance prompt" in out, f"--balance prompt: cuts {lps}, scoring and prefill bounds {rates}")
        # --tflops: the prompt bound from the model's shapes and the cuts
        for P, E, lps in ((8, 8, None), (8, 1, None), (8, 8, "4,9,9,9,9,8,8,8"), (2, 2, None)):
            cfg = "tiny" if P == 2 else "grok-1"
            path = os.path.join(d, "p.json")
            rc, out, err = run(["--config", cfg, "--stages", str(P), "--ep", str(E), "--tflops", "600", "--out", path]
                               + (["--layers-per-stage", lps] if lps else []))
            expect(rc == 0, f"{cfg} {P}x{E} --tflops planned ({err.strip()})")
            j = json.load(open(path))
            m = j["model"]
            D, q, kv = m["emb_size"], m["num_q_heads"] * m["key_size"], m["num_kv_heads"] * m["key_size"]
            layer = (2 * (D * q + 2 * D * kv + q * D) + 2 * D * m["num_experts"]
                     + 2 * m["num_selected_experts"] * 3 * D * m["ffn_size"])
            got = re.findall(r"at most (\d+) tokens/s \(stage (\d+)", out)
            for logits, (rate, st) in zip((1, 0), got):
                t = [n * layer / E / 600e12 for n in j["layers_per_stage"]]
                t[0] += logits * 2 * m["vocab_size"] * D / 600e12
                expect(len(got) == 2 and abs(int(rate) - 1 / max(t)) <= 1 and t[int(st)] == max(t),
                       f"{cfg} {P}x{E} {lps or ''} logits {logits}: {rate} tokens/s (stage {st}), want {1 / max(t):.0f}")


def case_usage_errors():
    for args in [[], ["--config", "tiny"], ["--config", "tiny", "--stages", "2"],
                 ["--config", "tiny", "--stages", "x", "--ep", "1"], ["--config", "tiny", "--stages", "2", "--ep", "0"],
                 ["--bogus"], ["--config"], ["--config", "tiny", "--checkpoint", "a.h5", "--stages", "1", "--ep", "1"],
                 ["--config", "tiny", "--stages", "1", "--ep", "1", "--mem-per-rank", "lots"],
                 ["--config", "tiny", "--stages", "1", "--ep", "1", "--layers-per-stage", "a,b"],
                 ["--config", "tiny", "--stages", "1", "--ep", "1", "extra"],
                 ["--config", "tiny", "--stages", "1", "--ep", "1", "--bandwidth", "0"],
                 ["--config", "tiny", "--stages", "1", "--ep", "1", "--bandwidth", "fast"],
                 ["--config", "tiny", "--stages", "1", "--ep", "1", "--bandwidth", "-3"],
                 ["--config", "tiny", "--stages", "1", "--ep", "1", "--micro-batches", "0"],
                 ["--config", "tiny", "--stages", "1", "--ep", "1", "--tflops", "0"],
                 ["--config", "tiny", "--stages", "1", "--ep", "1", "--tflops", "lots"],
                 ["--config", "tiny", "--stages", "1", "--ep", "1", "--balance", "speed"],
                 ["--config", "tiny", "--stages", "1", "--ep", "1", "--batch-size", "0"],
                 ["--config", "tiny", "--stages", "1", "--ep", "1", "--slots", "4", "--batch-size", "2"]]:
        rc, out, err = run(args)
        expect(rc == 2 and err.startswith("grok1-plan: error:"), f"usage error {args}: exit 2 ({err.splitlines()[0] if err else ''})")
    rc, out, err = run(["--config", "nosuch", "--stages", "1", "--ep", "1"])
    expect(rc == 1 and "not a preset" in err, "unknown preset")
    # options in full, once each (as grok1-run takes them)
    rc, out, err = run(["--config", "tiny", "--stag", "1", "--ep", "1"])
    expect(rc == 2 and "--stag: write the option in full, --stages" in err, f"an abbreviated option: {err.strip()}")
    rc, out, err = run(["--config", "tiny", "--stages", "2", "--ep", "1", "--stages=1"])
    expect(rc == 2 and "--stages is given twice (2, then 1)" in err, f"an option given twice: {err.strip()}")
    # two names of one option, as given twice (the last won, exit 0)
    for pair, words in ((["--context", "10", "--max-context", "20"], "--context 10 and --max-context 20"),
                        (["--max-context", "20", "--context", "10"], "--max-context 20 and --context 10")):
        rc, out, err = run(["--config", "tiny", "--stages", "1", "--ep", "1"] + pair)
        expect(rc == 2 and words in err and "give one" in err, f"{pair}: usage error ({err.strip()})")
    # sizes past 2^60 bytes: a usage error naming the value and the largest (1e308T was exit 1 for
    # --mem-per-rank, "must be a non-negative size", and exit 0 for --dump-buffer, "inf GiB" in the table)
    g1 = ["--config", "tiny", "--stages", "1", "--ep", "1"]
    for opt, v in (("--mem-per-rank", "1e308T"), ("--mem-per-rank", "1048577T"), ("--mem-per-rank", "1e400"),
                   ("--dump-buffer", "1e308T")):
        rc, out, err = run(g1 + [opt, v])
        expect(rc == 2 and f"{opt} {v}: too large" in err and "1048576T" in err and "inf" not in out,
               f"{opt} {v}: usage error naming the largest ({err.strip()})")
    rc, out, err = run(g1 + ["--dump-buffer", "1025T"])
    expect(rc == 2 and "1 byte to 1024T" in err, f"--dump-buffer past grok1-run's 1024T: usage error ({err.strip()})")
    for opt, v in (("--mem-per-rank", "1048576T"), ("--dump-buffer", "1024T")):
        rc, out, err = run(g1 + [opt, v])
        expect(rc == 0, f"{opt} {v}: the largest is taken ({err.strip()})")
    # --balance chooses the cuts --layers-per-stage gives: refused, as grok1-run does (it was ignored, exit 0)
    for pair in (["--balance", "prompt", "--layers-per-stage", "1,3"],
                 ["--layers-per-stage", "1,3", "--balance", "decode"]):
        rc, out, err = run(["--config", "tiny", "--stages", "2", "--ep", "1"] + pair)
        expect(rc == 2 and "does not go with --layers-per-stage" in err and not out,
               f"{pair}: usage error ({err.strip()})")
    # a context past the bound; a plan whose bytes pass 2^63 (llround wrote them negative, exit 0)
    with tempfile.TemporaryDirectory() as d:
        cfg, plan = os.path.join(d, "c.json"), os.path.join(d, "p.json")
        with open(cfg, "w") as f:
            json.dump({"max_seq_len": 2**31 - 1}, f)
        rc, out, err = run(["--config", cfg, "--stages", "1", "--ep", "1"])
        expect(rc == 1 and "max_seq_len must be in 1..1048576" in err, f"max_seq_len 2^31-1: {err.strip()}")
        with open(cfg, "w") as f:
            json.dump({"max_seq_len": 1 << 20}, f)
        rc, out, err = run(["--config", cfg, "--stages", "1", "--ep", "1", "--slots", str(2**31 - 1), "--out", plan])
        expect(rc == 1 and "pass 2^63 bytes" in err and not os.path.exists(plan),
               f"a plan past 2^63 bytes: exit {rc}, {err.strip()[-200:]}")


def plan_json(args):
    rc, out, err = run(args + ["--out", "-"])
    expect(rc == 0, f"{' '.join(args)} plans ({err.strip()[-300:]})")
    return json.loads(out)


def case_cuda():
    """--backend cuda counts a rank's GPU memory: the weights as uploaded
    (one scale array a matrix, fewer bytes than the host's two) and the CUDA
    engine's buffers (more than the CPU engine's at Grok-1's shapes), which
    grow with the tokens a step and the multiprocessors; a limit between
    the two totals fits the cpu backend and refuses the cuda one."""
    g1 = ["--config", "grok-1", "--stages", "8", "--ep", "1", "--context", "8192"]
    # --kv-cache bf16 halves the caches on the GPU only: the CPU engine keeps
    # bf16-rounded values as float32, and grok1-run counts them so
    f32_kv = plan_json(g1)["ranks"][1]["kv_cache_bytes"]
    cpu_bf16 = plan_json(g1 + ["--kv-cache", "bf16"])
    expect(cpu_bf16["ranks"][1]["kv_cache_bytes"] == f32_kv and cpu_bf16["kv_bytes"] == 4,
           f"--kv-cache bf16 on the cpu backend: {cpu_bf16['ranks'][1]['kv_cache_bytes']} bytes of caches, "
           f"kv_bytes {cpu_bf16['kv_bytes']}; the CPU engine holds {f32_kv} (float32)")
    if A.cuda:
        gpu_bf16 = plan_json(g1 + ["--backend", "cuda", "--kv-cache", "bf16"])
        expect(2 * gpu_bf16["ranks"][1]["kv_cache_bytes"] == f32_kv and gpu_bf16["kv_bytes"] == 2,
               f"--kv-cache bf16 on the cuda backend: {gpu_bf16['ranks'][1]['kv_cache_bytes']} bytes, not half of "
               f"{f32_kv}")
    if not A.cuda:
        rc, out, err = run(g1 + ["--backend", "cuda"])
        expect(rc == 1 and "no CUDA backend" in err, f"--backend cuda without CUDA refused: {err.strip()}")
        return
    rc, out, err = run(g1 + ["--backend", "cuda"])
    expect(rc == 0 and "cuda backend (GPU memory, GPUs of 132 multiprocessors)" in out, "the table names the backend")
    cpu, cuda = plan_json(g1), plan_json(g1 + ["--backend", "cuda"])
    expect(cpu["backend"] == "cpu" and "gpu_sms" not in cpu and cuda["backend"] == "cuda" and cuda["gpu_sms"] == 132,
           "the JSON says what memory it counted")
    c0, g0 = cpu["ranks"][0], cuda["ranks"][0]
    print(f"grok-1 rank 0: cpu weights {c0['weights_bytes']} buffers {c0['buffer_bytes']}; "
          f"cuda weights {g0['weights_bytes']} buffers {g0['buffer_bytes']}")
    expect(g0["weights_bytes"] < c0["weights_bytes"] and g0["buffer_bytes"] > c0["buffer_bytes"]
           and g0["kv_cache_bytes"] == c0["kv_cache_bytes"], "cuda: fewer weight bytes, more buffer bytes, same caches")
    def buffers(*extra):
        return plan_json(g1 + ["--backend", "cuda"] + list(extra))["ranks"][1]["buffer_bytes"]
    b = buffers()
    expect(buffers("--max-batch-tokens", "4096") > b + (1 << 30), "4096 tokens a step: over 1 GiB more buffers")
    expect(buffers("--gpu-sms", "148") > b > buffers("--gpu-sms", "108"), "more multiprocessors, more partial sums")
    expect(buffers("--cuda-gemm", "f32") < b, "--cuda-gemm f32: no dequantised panels")
    expect(buffers("--cuda-tune", "panel-mib=8") < b, "--cuda-tune panel-mib=8: smaller panels")
    # rank 0's logits on the GPU: at most 256 MiB of rows (G1_CUDA_LOGITS_BYTES, 512 of Grok-1's), however
    # many tokens a step; what rank 0 holds beyond rank 1 (same stage, same layers) besides the messages
    def logits_extra(tokens):
        r = plan_json(["--config", "grok-1", "--stages", "8", "--ep", "8", "--backend", "cuda",
                       "--max-batch-tokens", str(tokens)])["ranks"]
        return (r[0]["buffer_bytes"] - r[0]["message_bytes"]) - (r[1]["buffer_bytes"] - r[1]["message_bytes"])
    x256, x1024, x4096 = logits_extra(256), logits_extra(1024), logits_extra(4096)
    print(f"rank 0's logits and scores on the GPU: {x256} bytes at 256 tokens a step, {x1024} at 1024, {x4096} at 4096")
    expect(x1024 == x4096 and (1 << 28) <= x4096 < (1 << 28) + (1 << 20) and (1 << 27) <= x256 < (1 << 27) + (1 << 20),
           "rank 0's logits: 256 tokens' rows at 256 tokens a step, 512 rows (256 MiB) at 1024 and 4096")
    # a limit between the two totals
    lim = (c0["total_bytes"] + g0["total_bytes"]) / 2
    rc, out, err = run(g1 + ["--mem-per-rank", str(int(lim))])
    expect(rc == 0, "the limit fits the cpu backend's count")
    rc, out, err = run(g1 + ["--mem-per-rank", str(int(lim)), "--backend", "cuda"])
    expect(rc == 1 and "--mem-per-rank" in err, f"and refuses the cuda backend's: {err.strip()[:200]}")
    # a model the CUDA engine does not take
    with tempfile.TemporaryDirectory() as d:
        cfg = os.path.join(d, "wide.json")
        with open(cfg, "w") as f:
            json.dump({"key_size": 512, "num_q_heads": 12, "num_kv_heads": 4}, f)
        rc, out, err = run(["--config", cfg, "--stages", "1", "--ep", "1"])
        expect(rc == 0, f"a key_size of 512 plans for the cpu backend: {err.strip()[:200]}")
        rc, out, err = run(["--config", cfg, "--stages", "1", "--ep", "1", "--backend", "cuda"])
        expect(rc == 1 and "the CUDA backend needs an even key_size <= 256" in err,
               f"and is refused for the cuda backend: {err.strip()[:200]}")
    for args in (["--gpu-sms", "100"], ["--cuda-gemm", "f32"], ["--cuda-tune", "panel-mib=8"],
                 ["--backend", "gpu"], ["--backend", "cuda", "--gpu-sms", "0"], ["--backend", "cuda", "--cuda-gemm", "f16"],
                 ["--backend", "cuda", "--cuda-tune", "nosuch=1"]):
        rc, out, err = run(g1 + args)
        expect(rc == 2 and err.startswith("grok1-plan: error:"), f"usage error {args}: {err.splitlines()[0]}")


def case_dump():
    """--dump-logits: rank 0's buffers grow by the rows grok1-run's dump
    writer holds at most, 1 GiB or one write when more (the logits rows
    the scheduler computes at once: 64 MiB of Grok-1's); no other
    rank's; none on the cuda backend (host memory, not the GPU's); the JSON
    says so; a limit that fits without the dump refuses with it, naming it."""
    g1 = ["--config", "grok-1", "--stages", "8", "--ep", "1", "--context", "8192"]
    V = 131072
    for T, want in ((256, 1 << 30), (4096, 1 << 30)):
        base = plan_json(g1 + ["--max-batch-tokens", str(T)])
        dump = plan_json(g1 + ["--max-batch-tokens", str(T), "--dump-logits"])
        expect(dump["ranks"][0]["buffer_bytes"] - base["ranks"][0]["buffer_bytes"] == want,
               f"{T} tokens a step: rank 0 holds {want} bytes more")
        expect(all(a == b for a, b in zip(base["ranks"][1:], dump["ranks"][1:])), "the other ranks do not change")
        expect(dump.get("dump_logits") is True and "dump_logits" not in base, "the JSON records it")
    # --dump-buffer SIZE: that instead of 1 GiB, still one write's logits rows at least (128 of Grok-1's, or the
    # step's tokens when fewer)
    for T, size, want in ((256, "256M", 256 << 20), (256, "64k", 128 * V * 4), (100, "64k", 100 * V * 4),
                          (4096, "2.5G", 5 << 29), (4096, "1M", 128 * V * 4)):
        base = plan_json(g1 + ["--max-batch-tokens", str(T)])
        dump = plan_json(g1 + ["--max-batch-tokens", str(T), "--dump-buffer", size])
        got = dump["ranks"][0]["buffer_bytes"] - base["ranks"][0]["buffer_bytes"]
        expect(got == want, f"--dump-buffer {size} at {T} tokens a step: rank 0 holds {got} bytes more, not {want}")
        expect(dump.get("dump_logits") is True, "--dump-buffer implies --dump-logits")
    expect(plan_json(g1 + ["--dump-buffer", "256M"]).get("dump_buffer") == 256 << 20
           and plan_json(g1 + ["--dump-logits"]).get("dump_buffer") == 1 << 30, "the JSON records the buffer")
    for bad in ("0", "-5", "big"):
        rc, out, err = run(g1 + ["--dump-buffer", bad])
        expect(rc == 2 and "--dump-buffer " + bad in err, f"--dump-buffer {bad} refused: {err.strip()[:200]}")
    rc, out, err = run(g1 + ["--dump-logits"])
    expect(rc == 0 and "(+ embedding, logits, dump writer)" in out, "the table says what rank 0 adds")
    if A.cuda:
        a, b = plan_json(g1 + ["--backend", "cuda"]), plan_json(g1 + ["--backend", "cuda", "--dump-logits"])
        expect(a["ranks"] == b["ranks"] and "dump_logits" not in b, "cuda: the GPU's memory does not change")
    # a limit that fits rank 0 without the dump's writer and not with it
    tiny = ["--config", "tiny", "--stages", "1", "--ep", "1", "--mem-per-rank", "100M"]
    rc, out, err = run(tiny)
    expect(rc == 0, "tiny fits 100M")
    rc, out, err = run(tiny + ["--dump-logits"])
    expect(rc == 1 and "1.00 GiB of them for the logits dump's writer" in err,
           f"and not with the dump's writer: {err.strip()[:300]}")
    expect("or a smaller --dump-buffer (now 1.00 GiB)" in err, f"the refusal names --dump-buffer: {err.strip()}")
    rc, out, err = run(tiny + ["--dump-buffer", "16M"])
    expect(rc == 0 and "dump writer" in out, f"a 16M writer's buffer fits 100M: {err.strip()[:300]}")


def cpu_buffers(m, T, M, P, E, rank, threads, context, slots):
    """A rank's buffers on the cpu backend less its messages, from the
    model's hyper-parameters: the engine's scratch (src/engine.c), rank 0's
    scheduler (mpi/driver.c: 2^24 // V logits rows, 1 to T; each
    micro-batch's activations, 4 ints and a 3-int fork a token; a token a
    token and a status a logits row; the prefix cache's int, double and
    flag a slot position) and one process's local pipeline, and per thread
    an attention score row of the context (every rank) and a sampler of V
    doubles, V {double, int32} candidates and V int32 ids (rank 0)."""
    D, F, V, k = m["emb_size"], m["ffn_size"], m["vocab_size"], m["num_selected_experts"]
    QK, KV = m["num_q_heads"] * m["key_size"], m["num_kv_heads"] * m["key_size"]
    b = 4 * T * (2 * D + 2 * QK + 2 * KV)            # xn o, q att, k v
    b += 4 * T * k * 3 + 8 * T * 2                   # idx gate tok, kc vc
    b += 4 * T * k * max(D, F) + 2 * 4 * T * k * F   # xg, h1 h2
    b += 4 * T * k * D                               # yk
    b += 4 * T * k * D                               # xk
    b += threads * context * 4                       # attention scores
    if rank == 0:
        rows = min(max(2 ** 24 // V, 1), T)
        b += 4 * rows * V + 4 * M * T * D * (2 if P * E == 1 else 1)
        b += M * T * (4 * 4 + 12) + 4 * T + 4 * rows + slots * context * 13
        b += threads * V * (8 + 16 + 4)              # samplers
    return b


def case_buffers():
    """The cpu backend's buffers of every rank against cpu_buffers (the
    engine's xk and the per-thread buffers included), for --threads N and
    the default (64, recorded in the JSON); a limit that fits the buffers
    less xk and the per-thread ones (the count before 2026-12-04) is now
    refused; bad --threads are usage errors."""
    for cfg, P, E, extra in (("tiny", 1, 1, []), ("tiny", 2, 2, ["--threads", "3"]),
                             ("grok-1", 8, 8, []), ("grok-1", 8, 8, ["--threads", "1"]),
                             ("grok-1", 2, 4, ["--threads", "96", "--max-batch-tokens", "1024", "--context", "2048",
                                               "--micro-batches", "3"])):
        j = plan_json(["--config", cfg, "--stages", str(P), "--ep", str(E)] + extra)
        threads = int(extra[extra.index("--threads") + 1]) if "--threads" in extra else 64
        expect(j.get("threads") == threads, f"{cfg} {P}x{E} {extra}: the JSON records {threads} threads")
        m, T, M = j["model"], j["max_batch_tokens"], j.get("micro_batches", P)
        for r in j["ranks"]:
            want = cpu_buffers(m, T, M, P, E, r["rank"], threads, j["context"], j["slots"])
            got = r["buffer_bytes"] - r["message_bytes"]
            expect(got == want, f"{cfg} {P}x{E} {extra} rank {r['rank']}: buffers less messages {got}, formula {want}")
    g1 = ["--config", "grok-1", "--stages", "8", "--ep", "8"]
    j = plan_json(g1)
    m, T = j["model"], j["max_batch_tokens"]
    worst = max(j["ranks"], key=lambda r: r["total_bytes"])
    old = worst["total_bytes"] - 4 * T * m["num_selected_experts"] * m["emb_size"] - 64 * j["context"] * 4 \
        - (64 * 28 * m["vocab_size"] if worst["rank"] == 0 else 0)
    rc, out, err = run(g1 + ["--mem-per-rank", str(old)])
    expect(rc == 1 and f"rank {worst['rank']} " in err, f"the old count's exact limit ({old} bytes) is refused: "
           f"{err.strip()[:160]}")
    rc, out, err = run(g1 + ["--mem-per-rank", str(worst["total_bytes"])])
    expect(rc == 0, "the new count's exact limit fits")
    for bad in ("0", "4097", "x", "-2"):
        rc, out, err = run(g1 + ["--threads", bad])
        expect(rc == 2 and "--threads" in err, f"--threads {bad}: usage error")


def case_checkpoint():
    if not A.hdf5:
        rc, out, err = run(["--checkpoint", "x.h5", "--stages", "1", "--ep", "1"])
        expect(rc == 2 and "without HDF5" in err, "--checkpoint without HDF5")
        return
    with tempfile.TemporaryDirectory() as d:
        ck = os.path.join(d, "tiny.h5")
        p = subprocess.run([A.mkckpt, "--config", "tiny", "--seed", "0", "--out", ck], capture_output=True, text=True,
                           timeout=60)
        expect(p.returncode == 0, f"grok1-mkckpt tiny ({p.stderr.strip()})")
        rc, out, err = run(["--checkpoint", ck, "--stages", "2", "--ep", "2", "--out", "-"])
        expect(rc == 0 and json.loads(out)["model"]["emb_size"] == 64, "plan from a checkpoint's attributes")
        rc, out, err = run(["--checkpoint", os.path.join(d, "none.h5"), "--stages", "1", "--ep", "1"])
        expect(rc == 1 and err.startswith("grok1-plan: error:"), "missing checkpoint refused")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("case")
    ap.add_argument("--plan", required=True)
    ap.add_argument("--hdf5", type=int, default=0)
    ap.add_argument("--cuda", type=int, default=0)
    ap.add_argument("--mkckpt")
    A = ap.parse_args()
    globals()["case_" + A.case]()
