#!/usr/bin/env python3
"""Prefix reuse benchmark (CPU): grok1-run with --prefix-cache on and off on
evaluation-shaped inputs, one process, synthetic model. A benchmark (meson
benchmark()), never a test: it prints the run's seconds (grok1-run's
summary line: the requests, not the loading), the prompt positions
computed and the speed-up; the results themselves are compared too (they
must be equal, or the benchmark fails).

Workloads (token ids drawn at random; what matters is their sharing):
  mc-0shot   Q questions x 4 continuations (lm-eval multiple choice): a
             context of 60 to 120 tokens, continuations of 1 to 8
  mc-5shot   the same behind one preamble of 400 tokens (5 worked examples)
  plain-5shot  mc-5shot's requests scored whole (context and continuation
             as one prompt_ids, no continuation_ids): plain scoring, every
             position's log-prob, as for candidates scored as texts
  gen-8shot  4 x Q generate requests behind one preamble of 400 tokens, a
             question of 20 to 60 tokens, 16 new tokens each (greedy); the
             first requests, one per slot, start in empty slots
  samples-5shot  Q such prompts x 4 samples each (pass@k: temperature 1,
             a seed per sample), 16 new tokens; the samples of a prompt run
             side by side in different slots

usage: bench_prefix.py --run build/mpi/grok1-run [--model small] [--questions Q] [--batch-size B]"""
import argparse
import json
import os
import random
import re
import shutil
import subprocess
import tempfile


def workload(name, q, vocab, rnd):
    tok = lambda n: [rnd.randrange(3, vocab) for _ in range(n)]
    if name.startswith("mc") or name == "plain-5shot":
        pre = tok(400) if name != "mc-0shot" else []
        for i in range(q):
            ctx = pre + tok(rnd.randint(60, 120))
            for c in range(4):
                cont = tok(rnd.randint(1, 8))
                if name == "plain-5shot":
                    yield {"id": f"{i}.{c}", "prompt_ids": ctx + cont}
                else:
                    yield {"id": f"{i}.{c}", "prompt_ids": ctx, "continuation_ids": cont}
    elif name == "samples-5shot":
        pre = tok(400)
        for i in range(q):
            prompt = pre + tok(rnd.randint(20, 60))
            for k in range(4):
                yield {"id": f"{i}.{k}", "prompt_ids": prompt, "max_new_tokens": 16, "temperature": 1.0,
                       "seed": 10 * i + k}
    else:
        pre = tok(400)
        for i in range(4 * q):
            yield {"id": i, "prompt_ids": pre + tok(rnd.randint(20, 60)), "max_new_tokens": 16}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True)
    ap.add_argument("--model", default="small")
    ap.add_argument("--questions", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--workloads", default="mc-0shot,mc-5shot,plain-5shot,gen-8shot,samples-5shot")
    a = ap.parse_args()
    vocab = 512 if a.model == "tiny" else 131072
    tmp = tempfile.mkdtemp()
    print(f"model {a.model}, one process, {os.cpu_count()} cores, --batch-size {a.batch_size}, "
          f"{a.questions} questions per workload")
    print(f"{'workload':10} {'requests':>8} {'prompt':>7} {'computed on':>11} {'computed off':>12} "
          f"{'s on':>8} {'s off':>8} {'speed-up':>8}")
    status = 0
    for w in a.workloads.split(","):
        reqs = list(workload(w, a.questions, vocab, random.Random(7)))
        inp = os.path.join(tmp, f"{w}.jsonl")
        with open(inp, "w") as f:
            for r in reqs:
                f.write(json.dumps(r) + "\n")
        mode = "generate" if w.startswith(("gen", "samples")) else "score"
        res = {}
        for pc in ("on", "off"):
            out = os.path.join(tmp, f"{w}.{pc}.jsonl")
            p = subprocess.run([a.run, "--synthetic", a.model, "--synthetic-seed", "1", "--mode", mode, "--input",
                                inp, "--output", out, "--batch-size", str(a.batch_size), "--prefix-cache", pc,
                                "--progress", "off"], capture_output=True, text=True)
            if p.returncode:
                print(p.stderr[-2000:])
                return 1
            line = [l for l in p.stderr.splitlines() if "tokens/s" in l][-1]
            prompt = int(re.search(r"(\d+) prompt tokens", line).group(1))
            dt = float(re.search(r"tokens, ([0-9.]+) s,", line).group(1))  # the run, not the loading
            m = re.search(r"\((\d+) of them held", line)
            res[pc] = (prompt, prompt - (int(m.group(1)) if m else 0), dt, open(out).read())
        (prompt, c_on, t_on, o_on), (_, c_off, t_off, o_off) = res["on"], res["off"]
        same = o_on == o_off
        status |= not same
        print(f"{w:10} {len(reqs):>8} {prompt:>7} {c_on:>11} {c_off:>12} {t_on:>8.2f} {t_off:>8.2f} "
              f"{t_off / t_on:>7.2f}x{'' if same else '  RESULTS DIFFER'}")
    shutil.rmtree(tmp)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
