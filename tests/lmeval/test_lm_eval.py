#!/usr/bin/env python3
"""lm-evaluation-harness on grok1-run (scripts/lm-eval/grok1_lm_eval.py),
with the real lm_eval package (scripts/lm-eval/setup.sh puts it in a
virtual environment) and tasks of our own on local data, offline: a
multiple-choice task (loglikelihood), a generation task (generate_until)
and a perplexity task (loglikelihood_rolling) on the tiny model with the
demo tokenizer. Every response lm_eval logged must equal what grok1-run
gives for the same request run directly; the accuracy is recomputed from
them; the rolling windows are lm_eval's own; through mpirun the results are
the same; a kept --workdir is read back without running grok1-run again;
--use-cache answers the requests of an earlier run from lm_eval's cache,
but not for another model; errors end the program with grok1-run's message.
grok1-run's context is --max-length (a --max-context that differs is
refused); its stderr reaches the adapter's as it comes; a misspelled model
argument is refused, lm_eval's own ones taken.

usage: test_lm_eval.py --python VENV_PYTHON --adapter grok1_lm_eval.py --run grok1-run
       --tokenize grok1-tokenize --mkckpt grok1-mkckpt --tokenizer demo.model --tmp DIR
exit 0 pass, 1 fail, 77 skip (lm_eval not installed)."""
import argparse
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from g1testlib import Checks, mpi_env  # noqa: E402

A = None
ENV = mpi_env(HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
check = Checks()


WORDS = ("the cat dog sat on a mat red blue green house tree river stone light water fire "
         "one two three four five six seven eight nine ten").split()


def data(d):
    rnd = random.Random(4)
    sent = lambda n: " ".join(rnd.choice(WORDS) for _ in range(n))  # noqa: E731
    mc = [{"question": sent(rnd.randint(3, 9)) + "?", "choices": [sent(rnd.randint(1, 3)) for _ in range(4)],
           "answer": rnd.randrange(4)} for _ in range(6)]
    gen = [{"prompt": sent(rnd.randint(2, 6)), "target": sent(2)} for _ in range(4)]
    ppl = [{"text": sent(5)}, {"text": sent(30) + ". " + sent(25)}, {"text": "seven"}]
    tasks = os.path.join(d, "tasks")
    os.makedirs(tasks, exist_ok=True)
    for name, rows, body in (
            ("mc", mc, 'output_type: multiple_choice\ndoc_to_text: "{{question}}"\ndoc_to_choice: "{{choices}}"\n'
                       'doc_to_target: "{{answer}}"\nmetric_list:\n  - metric: acc\n'),
            ("gen", gen, 'output_type: generate_until\ndoc_to_text: "{{prompt}}"\ndoc_to_target: "{{target}}"\n'
                         'generation_kwargs:\n  until: [".", "\\n"]\n  max_gen_toks: 8\n  do_sample: false\n'
                         'metric_list:\n  - metric: exact_match\n'),
            ("ppl", ppl, 'output_type: loglikelihood_rolling\ndoc_to_text: ""\ndoc_to_target: "{{text}}"\n'
                         'metric_list:\n  - metric: word_perplexity\n  - metric: byte_perplexity\n'
                         '  - metric: bits_per_byte\n')):
        path = os.path.join(d, name + ".jsonl")
        with open(path, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
        with open(os.path.join(tasks, f"grok1_toy_{name}.yaml"), "w") as f:
            f.write(f"task: grok1_toy_{name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
                    f"    test: {path}\ntest_split: test\n" + body)
    return tasks, mc


def evaluate(d, tag, tasks, extra=(), expect=0, names="grok1_toy_mc,grok1_toy_gen,grok1_toy_ppl"):
    out = os.path.join(d, tag + ".json")
    cmd = [A.python, A.adapter, "--checkpoint", A.ckpt, "--tokenizer", A.tokenizer, "--tasks",
           names, "--include-path", tasks, "--run", A.run,
           "--tokenize", A.tokenize, "--max-length", "256", "--output", out, "--log-samples", "--verbose"] + list(extra)
    print("run  " + " ".join(cmd), flush=True)
    p = subprocess.run(cmd, capture_output=True, text=True, env=dict(ENV, HF_HOME=os.path.join(d, "hf")),
                       cwd=d, timeout=600)
    if p.returncode != expect:
        print(p.stdout[-3000:], p.stderr[-5000:])
        check(False, f"{tag}: exit {p.returncode}, expected {expect}")
        return None, p
    return (json.load(open(out)) if expect == 0 else None), p


def grok1(mode, rows, extra=()):
    d = os.path.join(A.tmp, "direct")
    os.makedirs(d, exist_ok=True)
    inp, out = os.path.join(d, "in.jsonl"), os.path.join(d, "out.jsonl")
    with open(inp, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(dict(r, id=i), ensure_ascii=False) + "\n" for i, r in enumerate(rows))
    if os.path.exists(out):
        os.remove(out)
    subprocess.run([A.run, "--checkpoint", A.ckpt, "--tokenizer", A.tokenizer, "--mode", mode, "--input", inp,
                    "--output", out, "--truncate", "left"] + list(extra), check=True, capture_output=True, env=ENV)
    return [json.loads(l) for l in open(out, encoding="utf-8")]


def args_of(sample):
    """The request arguments lm_eval logged for one sample: a list of tuples."""
    got = []
    for a in sample["arguments"]:
        if isinstance(a, dict):
            a = [a[k] for k in sorted(a, key=lambda k: int(k.split("_")[-1]))]
        got.append(tuple(a))
    return got


def flat(resps):
    return [r[0] if isinstance(r, list) and len(r) == 1 else r for r in resps]


def check_results(tag, res, mc):
    s = res["samples"]
    # multiple choice: (sum_logprob, is_greedy) per choice, as grok1-run scores them
    pairs, got = [], []
    for smp in s["grok1_toy_mc"]:
        pairs += [{"prompt": c, "continuation": x} for c, x in args_of(smp)]
        got += flat(smp["resps"])
    direct = grok1("score", pairs)
    want = [[r["sum_logprob"], r["is_greedy"]] for r in direct]
    check(len(got) == len(want) == sum(len(q["choices"]) for q in mc) and
          all(list(g) == w for g, w in zip(got, want)),
          f"{tag}: mc: lm_eval's {len(got)} loglikelihoods are grok1-run's, bitwise")
    correct = []
    for smp in s["grok1_toy_mc"]:
        ll = [x[0] for x in flat(smp["resps"])]
        correct.append(float(max(range(len(ll)), key=lambda i: ll[i]) == int(smp["target"])))
    acc = res["results"]["grok1_toy_mc"]["acc,none"]
    check(abs(acc - sum(correct) / len(correct)) < 1e-12, f"{tag}: mc acc {acc} is the argmax's")

    # generation: the completion, cut by the stop strings in list order
    rows, got = [], []
    for smp in s["grok1_toy_gen"]:
        (ctx, kw), = args_of(smp)
        rows.append({"prompt": ctx, "stop": kw["until"], "max_new_tokens": kw["max_gen_toks"], "temperature": 0})
        got += flat(smp["resps"])
    want = [r["completion"] for r in grok1("generate", rows)]
    check(got == want and any(want), f"{tag}: gen: lm_eval's completions are grok1-run's: {want[:2]}")
    check(all("." not in g and "\n" not in g for g in got), f"{tag}: gen: completions end before the stop strings")

    # perplexity: the sum over the windows, BOS first
    texts = [args_of(smp)[0][0] for smp in s["grok1_toy_ppl"]]
    got = [flat(smp["resps"])[0] for smp in s["grok1_toy_ppl"]]
    return texts, got


def windows_check():
    """The adapter's rolling windows are lm_eval's (get_rolling_token_windows,
    make_disjoint_window) for many lengths and contexts, in the venv."""
    code = ("import sys, random; sys.path.insert(0, %r)\n"
            "import grok1_lm_eval as g\n"
            "from lm_eval.utils import get_rolling_token_windows as R, make_disjoint_window as D\n"
            "bad = 0\n"
            "for L in (2, 3, 5, 8, 17, 256):\n"
            "    r = g.Grok1Runner.__new__(g.Grok1Runner); r.max_length, r.bos_id = L, 1\n"
            "    for n in range(70):\n"
            "        ids = [random.randrange(3, 99) for _ in range(n)]\n"
            "        want = [tuple(map(list, D(w))) for w in R(ids, prefix_token=1, max_seq_len=L, context_len=1)]\n"
            "        got = [tuple(map(list, w)) for w in r.rolling_windows(ids)]\n"
            "        bad += want != got or any(len(a) + len(b) > L + 1 for a, b in got)\n"
            "print(bad)\n") % os.path.dirname(os.path.abspath(A.adapter))
    p = subprocess.run([A.python, "-c", code], capture_output=True, text=True, env=ENV, timeout=120)
    check(p.returncode == 0 and p.stdout.strip() == "0",
          f"rolling windows equal lm_eval's for 420 lengths ({p.stdout.strip()} differ) {p.stderr[-500:]}")


def encode(texts):
    p = subprocess.run([A.tokenize, "--tokenizer", A.tokenizer, "encode"], capture_output=True, text=True,
                       input="".join(json.dumps({"text": t}) + "\n" for t in texts), check=True)
    return [json.loads(l)["ids"] for l in p.stdout.splitlines()]


def runner_checks():
    """Grok1Runner on its own (no lm_eval needed): what generate_until's
    keyword arguments become, the context cut to leave room for the
    generation, and the job files keyed by the tokenizer too."""
    sys.path.insert(0, os.path.dirname(A.adapter))
    import grok1_lm_eval as g
    work = os.path.join(A.tmp, "runner")

    class Capture(g.Grok1Runner):
        def _job(self, mode, rows, extra=()):
            self.rows = rows
            self.res = super()._job(mode, rows, extra)
            return self.res
    r = Capture(A.ckpt, A.tokenizer, run=A.run, tokenize=A.tokenize, workdir=work, max_length=64)
    long_text = " ".join(WORDS * 6)
    n_ids = len(encode([long_text])[0])
    got = r.generate([("one two", {"do_sample": True, "max_gen_toks": 4}),
                      ("one two", {"do_sample": True, "temperature": 0.5, "top_k": 5.0, "top_p": "0.9", "seed": 3.0,
                                   "max_gen_toks": 4}),
                      ("one two", {"temperature": 0.7, "do_sample": False, "until": "\n", "max_gen_toks": 4}),
                      (long_text, {"max_gen_toks": 20})])
    rows = r.rows
    check(rows[0]["temperature"] == 1.0, f"do_sample without a temperature samples at 1.0: {rows[0]}")
    check(rows[1]["top_k"] == 5 and isinstance(rows[1]["top_k"], int) and rows[1]["top_p"] == 0.9 and
          rows[1]["seed"] == 3, f"top_k, top_p, seed as numbers grok1-run takes: {rows[1]}")
    check(rows[2]["temperature"] == 0 and rows[2]["stop"] == ["\n"], f"do_sample false is greedy: {rows[2]}")
    check(n_ids > 64 and rows[3].get("prompt_ids") == encode([long_text])[0][-44:] and "prompt" not in rows[3],
          f"a {n_ids}-token context is cut to its last 64 - 20 = 44 tokens")
    check(len(r.res[3]["completion_ids"]) == 20 and len(got) == 4, "the cut context leaves room for 20 tokens")
    jobs = sorted(os.listdir(work))
    other_tok = os.path.join(A.tmp, "copy.model")
    shutil.copy(A.tokenizer, other_tok)
    r2 = Capture(A.ckpt, other_tok, run=A.run, tokenize=A.tokenize, workdir=work, max_length=64)
    r2.loglikelihood([("one", " two")])
    r.loglikelihood([("one", " two")])
    new = sorted({f.split(".")[0] for f in set(os.listdir(work)) - set(jobs)})
    check(len(new) == 2 and all(n.startswith("score-") for n in new),
          f"another tokenizer: another job for the same requests in the same folder: {new}")
    context_checks(g, Capture, work, long_text)
    stream_checks(g)


def context_checks(g, Capture, work, long_text):
    """grok1-run's context is max_length (--max-context max_length): a long
    loglikelihood request keeps max_length + 1 tokens, as lm_eval's HF model
    does, on a model whose max_seq_len (256) is larger; a --max-context in
    grok1_args must equal max_length; a max_length above the model's
    max_seq_len ends with grok1-run's message."""
    r = Capture(A.ckpt, A.tokenizer, run=A.run, tokenize=A.tokenize, workdir=work, max_length=64)
    r.loglikelihood([(long_text, " two three")])
    n = r.res[0]["prompt_tokens"] + r.res[0]["continuation_tokens"]
    check(n == 65 and r.res[0].get("truncated", 0) > 0,
          f"max_length 64 on a 256-token model: a long loglikelihood request keeps 65 tokens: {n}")
    for form in ("--max-context 8", "--max-context=8"):
        try:
            g.Grok1Runner(A.ckpt, A.tokenizer, run=A.run, tokenize=A.tokenize, workdir=work, max_length=64,
                          grok1_args="--batch-size 2 " + form)
            check(False, f"grok1_args {form!r} with max_length 64: refused")
        except g.Grok1Error as e:
            check("max_length=8" in str(e), f"grok1_args {form!r} with max_length 64: refused: {e}")
    same = g.Grok1Runner(A.ckpt, A.tokenizer, run=A.run, tokenize=A.tokenize, workdir=work, max_length=64,
                         grok1_args="--max-context=64")
    check(same.args == [] and same.identity() == r.identity(),
          "grok1_args --max-context=64 with max_length 64: taken, the same jobs as without it")
    big = g.Grok1Runner(A.ckpt, A.tokenizer, run=A.run, tokenize=A.tokenize, workdir=work, max_length=300)
    try:
        big.loglikelihood([("one", " two")])
        check(False, "max_length 300 on a 256-token model: refused")
    except g.Grok1Error as e:
        check("--max-context 300: above the model's max_seq_len (256)" in str(e) and "max_length 300" in str(e),
              f"max_length 300 on a 256-token model: grok1-run's message: {str(e)[-300:]}")


def stream_checks(g):
    """grok1-run's stderr reaches ours while it runs (a stand-in waits for
    its first line to come out before it ends), and the error keeps its
    last lines."""
    d = os.path.join(A.tmp, "stream")
    os.makedirs(d, exist_ok=True)
    flag, fake = os.path.join(d, "seen"), os.path.join(d, "fake-run")
    with open(fake, "w") as f:
        f.write("#!/bin/sh\necho 'fake: started' >&2\n"
                "for i in $(seq 100); do echo \"fake: line $i ............................................\" >&2; "
                "done\ni=0\nwhile [ ! -e %s ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done\n"
                "[ -e %s ] && echo 'fake: seen' >&2 && exit 3\nexit 4\n" % (flag, flag))
    os.chmod(fake, 0o755)

    class Recorder:
        text = ""

        def write(self, s):
            self.text += s
            if "fake: started" in s:
                open(flag, "w").close()

        def flush(self):
            pass
    rec, keep = Recorder(), sys.stderr
    r = g.Grok1Runner(A.ckpt, A.tokenizer, run=fake, tokenize=A.tokenize, workdir=os.path.join(d, "work"))
    sys.stderr = rec
    try:
        r.loglikelihood([("one", " two")])
        err = ""
    except g.Grok1Error as e:
        err = str(e)
    finally:
        sys.stderr = keep
    check("exited 3" in err and "fake: seen" in rec.text and rec.text.count("fake: line") == 100,
          f"grok1-run's stderr is copied as it comes, while it runs: {err[:60]!r}")
    check("fake: seen" in err and "line 100 " in err and "line 1 " not in err and len(err) < 2400,
          "the error keeps the last 2000 characters of grok1-run's stderr")


def model_args_check():
    """Grok1LM through lm_eval's registry as lm_eval builds it: with the
    batch_size, max_batch_size and device simple_evaluate adds (and
    trust_remote_code), taken; a misspelled argument refused by name."""
    code = ("import sys; sys.path.insert(0, %r)\n"
            "import grok1_lm_eval, lm_eval.api.registry as reg\n"
            "M = reg.get_model('grok1'); base = %r\n"
            "extra = {'batch_size': 1, 'max_batch_size': None, 'device': 'cpu'}\n"
            "lm = M.create_from_arg_string(base + ',max_length=64,verbose=true', extra)\n"
            "lm2 = M.create_from_arg_obj({'checkpoint': %r, 'tokenizer': %r, 'run': %r, 'trust_remote_code': True},\n"
            "                           extra)\n"
            "print('made', lm.runner.max_length, lm.runner.verbose, lm2.runner.max_length)\n"
            "try:\n"
            "    M.create_from_arg_string(base + ',max_lenght=2048', extra); print('accepted')\n"
            "except grok1_lm_eval.Grok1Error as e:\n"
            "    print('refused:', e)\n") % (
        os.path.dirname(os.path.abspath(A.adapter)), f"checkpoint={A.ckpt},tokenizer={A.tokenizer},run={A.run}",
        A.ckpt, A.tokenizer, A.run)
    p = subprocess.run([A.python, "-c", code], capture_output=True, text=True, env=ENV, timeout=120)
    out = p.stdout.strip()
    check(p.returncode == 0 and out.startswith("made 64 True 8192\nrefused: unknown model argument max_lenght:") and
          "max_length" in out.split("max_lenght")[1], f"model arguments: lm_eval's taken, a misspelled one refused: "
          f"{out[-300:]} {p.stderr[-300:]}")


def job_rows(work):
    """The requests of each grok1-run job the adapter wrote in work: {mode: [rows]}."""
    got = {}
    for f in sorted(os.listdir(work)):
        if f.endswith(".jsonl") and not f.endswith(".out.jsonl"):
            got.setdefault(f.split("-")[0], []).extend(json.loads(l) for l in open(os.path.join(work, f)))
    return got


def cache_checks(tasks, full):
    """--use-cache: lm_eval's per-request cache, named by the model."""
    cache = os.path.join(A.tmp, "cache", "lm")
    w1, w2, w3 = (os.path.join(A.tmp, f"cache-work{k}") for k in (1, 2, 3))
    one, _ = evaluate(A.tmp, "cache1", tasks, ["--use-cache", cache, "--workdir", w1], names="grok1_toy_mc")
    if not one:
        return
    dbs = os.listdir(os.path.dirname(cache))
    check(len(dbs) == 1 and dbs[0].startswith("lm-") and dbs[0].endswith("_rank0.db"),
          f"--use-cache PREFIX: one SQLite file PREFIX-<model>_rank0.db: {dbs}")
    check(one["results"]["grok1_toy_mc"] == full["results"]["grok1_toy_mc"], "--use-cache: mc alone, the same results")
    # the three tasks with the cache: mc's requests are not sent again
    three, _ = evaluate(A.tmp, "cache2", tasks, ["--use-cache", cache, "--workdir", w2])
    if three:
        rows = job_rows(w2)
        check(three["results"] == full["results"] and
              all([x["resps"] for x in three["samples"][t]] == [x["resps"] for x in full["samples"][t]]
                  for t in full["samples"]), "--use-cache: mc from the cache, the other tasks run: the same responses")
        score = rows.get("score", [])
        check(score and all("prompt_ids" in r and "prompt" not in r for r in score) and "generate" in rows,
              f"--use-cache: no mc (loglikelihood) request reached grok1-run again; jobs: "
              f"{ {k: len(v) for k, v in rows.items()} }")
    # another model: not answered from the first model's cache
    other = os.path.join(A.tmp, "tiny-other.h5")
    subprocess.run([A.mkckpt, "--config", "tiny", "--seed", "6", "--out", other], check=True, capture_output=True)
    keep, A.ckpt = A.ckpt, other
    try:
        o, _ = evaluate(A.tmp, "cache3", tasks, ["--use-cache", cache, "--workdir", w3], names="grok1_toy_mc")
    finally:
        A.ckpt = keep
    if o:
        n = sum(len(args_of(x)) for x in one["samples"]["grok1_toy_mc"])
        got = len(job_rows(w3).get("score", []))
        check(got == n and len(os.listdir(os.path.dirname(cache))) == 2,
              f"--use-cache with another checkpoint: a cache of its own, every request run ({got} of {n})")
        check([x["resps"] for x in o["samples"]["grok1_toy_mc"]] !=
              [x["resps"] for x in one["samples"]["grok1_toy_mc"]], "another checkpoint: other answers")


def main():
    global A
    ap = argparse.ArgumentParser()
    for k in ("python", "adapter", "run", "tokenize", "mkckpt", "tokenizer", "tmp"):
        ap.add_argument("--" + k, required=True)
    A = ap.parse_args()
    for k in ("adapter", "run", "tokenize", "mkckpt", "tokenizer"):  # the runs start in the test's folder
        setattr(A, k, os.path.abspath(getattr(A, k)))
    A.python = os.path.abspath(A.python) if os.sep in A.python else A.python
    if not os.path.exists(A.python):
        print(f"SKIP: no {A.python}: lm_eval is not installed (bash scripts/lm-eval/setup.sh installs it; it needs "
              "PyPI)")
        return 77
    p = subprocess.run([A.python, "-c", "import lm_eval.api.model"], capture_output=True, text=True)
    if p.returncode != 0:
        print(f"SKIP: {A.python} cannot import lm_eval: {p.stderr.strip()[-300:]}")
        return 77
    A.tmp = os.path.join(os.path.abspath(A.tmp), "lm-eval")
    shutil.rmtree(A.tmp, ignore_errors=True)
    os.makedirs(A.tmp)
    A.ckpt = os.path.join(A.tmp, "tiny.h5")
    subprocess.run([A.mkckpt, "--config", "tiny", "--seed", "5", "--out", A.ckpt], check=True, capture_output=True)
    tasks, mc = data(A.tmp)
    windows_check()
    model_args_check()
    runner_checks()

    work = os.path.join(A.tmp, "work")
    res, p = evaluate(A.tmp, "one", tasks, ["--workdir", work])
    if res is None:
        return 1
    print(p.stdout[-1500:])
    check(re.search(r"^grok1-run: \d+ requests?, ", p.stderr, re.M),
          "grok1-run's own lines (its summary) are in the adapter's stderr")
    texts, ppl = check_results("one rank", res, mc)
    # one window each (max_length 256): the text scored after BOS
    ids = encode(texts)
    want = [r["sum_logprob"] for r in grok1("score", [{"prompt_ids": [1], "continuation_ids": x} for x in ids])]
    check(ppl == want, f"ppl: lm_eval's loglikelihoods are grok1-run's of BOS + the text: {ppl}")
    for k in ("word_perplexity,none", "byte_perplexity,none", "bits_per_byte,none"):
        v = res["results"]["grok1_toy_ppl"][k]
        check(math.isfinite(v) and v > 0, f"ppl: {k} = {v}")

    # short windows (max_length 8, grok1-run's context 8 too): the sum over
    # lm_eval's windows, 8 tokens of input and a 9th only predicted
    res8, _ = evaluate(A.tmp, "short", tasks, ["--max-length", "8", "--grok1-args=--max-context 8"],
                       names="grok1_toy_ppl")
    if res8:
        got8 = [flat(smp["resps"])[0] for smp in res8["samples"]["grok1_toy_ppl"]]
        sys.path.insert(0, os.path.dirname(os.path.abspath(A.adapter)))
        import grok1_lm_eval as g
        r = g.Grok1Runner.__new__(g.Grok1Runner)
        r.max_length, r.bos_id = 8, 1
        rows, owner = [], []
        for k, x in enumerate(ids):
            for c, t in r.rolling_windows(x):
                rows.append({"prompt_ids": c, "continuation_ids": t})
                owner.append(k)
        sums = [0.0] * len(ids)
        for k, row in zip(owner, grok1("score", rows)):
            sums[k] += row["sum_logprob"]
        full = max(len(row["prompt_ids"]) + len(row["continuation_ids"]) for row in rows)
        check(got8 == sums and got8 != ppl and len(rows) > len(ids) and full == 9,
              f"ppl in {len(rows)} windows of 8 tokens of input (the longest {full} tokens): the sum of "
              "grok1-run's window scores")

    # the kept workdir: read back, grok1-run not run again
    again, p = evaluate(A.tmp, "again", tasks, ["--workdir", work])
    if again:
        check("grok1-lm-eval: " not in p.stderr, "a kept --workdir: no grok1-run job started again")
        check(again["results"] == res["results"], "a kept --workdir: the same results")

    cache_checks(tasks, res)

    # through mpirun: 2 stages, the same responses
    if shutil.which("mpirun"):
        res2, p = evaluate(A.tmp, "mpi", tasks, ["--launcher", "mpirun -n 2", "--grok1-args", "--stages 2"])
        if res2:
            check("mpirun -n 2" in p.stderr, "mpirun was the launcher")
            check(res2["results"] == res["results"] and
                  all([x["resps"] for x in res2["samples"][t]] == [x["resps"] for x in res["samples"][t]]
                      for t in res["samples"]), "mpirun -n 2 --stages 2: the same responses and results")
    else:
        print("skip mpirun: not on PATH")

    # errors: grok1-run's message, a non-zero exit
    _, p = evaluate(A.tmp, "bad", tasks, ["--grok1-args=--bogus-option"], expect=1)
    check("grok1-run exited 2" in p.stderr and "--bogus-option" in p.stderr,
          f"a bad grok1-run option: its message: {p.stderr.strip()[-300:]}")
    _, p = evaluate(A.tmp, "bad-context", tasks, ["--grok1-args=--max-context 128"], expect=1)
    check("--max-context 128 but max_length is 256" in p.stderr and "max_length=128" in p.stderr,
          f"--max-context other than --max-length: refused: {p.stderr.strip()[-300:]}")
    _, p = evaluate(A.tmp, "bad2", tasks, ["--grok1-args", "--input x"], expect=1)
    check("must not contain --input" in p.stderr, f"a forbidden option: {p.stderr.strip()[-200:]}")
    A.ckpt = os.path.join(A.tmp, "missing.h5")
    _, p = evaluate(A.tmp, "bad3", tasks, expect=1)
    check("missing.h5" in p.stderr and "no such file" in p.stderr, f"a missing checkpoint: {p.stderr.strip()[-200:]}")
    return check.result()


if __name__ == "__main__":
    sys.exit(main())
