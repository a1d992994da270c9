#!/usr/bin/env python3
"""lm-evaluation-harness on grok1-run: every request of a task set in one
grok1-run job per request type (the whole batch at once, prefixes shared).

As a program (needs the lm_eval package: scripts/lm-eval/setup.sh):

  grok1_lm_eval.py --checkpoint grok-1.h5 --tokenizer tokenizer.model --tasks hellaswag,arc_easy \\
      [--launcher "mpirun -n 8"] [--grok1-args "--stages 8"] [--num-fewshot K] [--limit N] \\
      [--include-path DIR] [--output results.json] [--log-samples] [--workdir DIR] [--use-cache PREFIX]

As a module: `Grok1LM(checkpoint=..., tokenizer=...)` is an lm_eval LM
(registered as "grok1"), for lm_eval.simple_evaluate(model=Grok1LM(...)).

- loglikelihood: {"prompt": context, "continuation": continuation} in score
  mode; grok1-run splits the tokens as lm-eval does (docs/RUN.md) and an
  empty context conditions on BOS. Returns (sum_logprob, is_greedy).
- loglikelihood_rolling: the text's token ids (grok1-tokenize) in lm-eval's
  disjoint rolling windows (max_length tokens of model input each, as for an
  HF model), BOS before the first; returns the sum over the windows.
- generate_until: {"prompt": context, "stop": until, "max_new_tokens":
  max_gen_toks, "temperature": 0 unless do_sample}; returns the completion,
  cut by the stop strings in list order as lm-eval's HF model cuts it.
The context is max_length (default 8192): every job runs grok1-run with
--max-context max_length (a --max-context in grok1_args must equal it;
grok1-run refuses one above the model's max_seq_len). Prompts too long for
it are cut from the left (--truncate left), as lm-eval does. grok1-run's
stderr (its progress) is copied to ours as it comes. The requests and
results of each job stay in --workdir (default: a temporary folder); given
again, an interrupted job resumes (grok1-run --resume) and a finished one
is read back without running.
"""
import argparse
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

try:
    from lm_eval.api.model import LM
    from lm_eval.api.registry import register_model
    HAVE_LM_EVAL = True
except ImportError:  # the runner below still works (and is tested) without it
    LM = object
    HAVE_LM_EVAL = False

    def register_model(*_names):
        return lambda cls: cls


class Grok1Error(RuntimeError):
    pass


def find_program(given, name, rel):
    """`given`, else the build tree's copy (ROOT/build/rel), else PATH."""
    for p in (given, os.path.join(ROOT, "build", rel), shutil.which(name)):
        if p and os.path.isfile(p) and os.access(p, os.X_OK):
            return os.path.abspath(p)
    raise Grok1Error(f"{name} not found: build the project (meson setup build && ninja -C build) or give its path")


def run_streaming(cmd, keep=2000):
    """Runs cmd with its stderr copied to ours line by line as it comes
    (grok1-run's progress); returns (exit status, the last `keep`
    characters of that stderr)."""
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, errors="replace")
    tail, size = [], 0

    def pump():
        nonlocal size
        for line in p.stderr:
            try:
                sys.stderr.write(line)
                sys.stderr.flush()
            except (OSError, ValueError):  # our stderr gone: keep reading, or grok1-run would block
                pass
            tail.append(line)
            size += len(line)
            while len(tail) > 1 and size - len(tail[0]) >= keep:
                size -= len(tail.pop(0))
    t = threading.Thread(target=pump, daemon=True)
    t.start()
    try:
        rc = p.wait()
    except BaseException:  # as subprocess.run: a moment to end on the same SIGINT, then killed
        try:
            p.wait(timeout=0.25)
        except BaseException:
            p.kill()
        raise
    t.join()
    p.stderr.close()
    return rc, "".join(tail)[-keep:]


class Grok1Runner:
    """Runs grok1-run (and grok1-tokenize) over lists of requests."""

    def __init__(self, checkpoint, tokenizer, run=None, tokenize=None, launcher="", grok1_args="", workdir=None,
                 max_length=8192, bos_id=1, verbose=False):
        for what, path in (("checkpoint", checkpoint), ("tokenizer", tokenizer)):
            if not path or not os.path.isfile(path):
                raise Grok1Error(f"{what} {path!r}: no such file")
        self.checkpoint, self.tokenizer = os.path.abspath(checkpoint), os.path.abspath(tokenizer)
        self.run = find_program(run, "grok1-run", os.path.join("mpi", "grok1-run"))
        self.tokenize_prog = tokenize
        self.launcher = shlex.split(launcher or "")
        self.args = shlex.split(grok1_args or "")
        for forbidden in ("--mode", "--input", "--output", "--checkpoint", "--tokenizer", "--resume", "--truncate"):
            if forbidden in self.args:
                raise Grok1Error(f"grok1_args must not contain {forbidden}: the adapter sets it")
        self.max_length, self.bos_id = int(max_length), int(bos_id)
        if self.max_length < 2:
            raise Grok1Error(f"max_length {max_length}: at least 2")
        self.args = self._without_max_context(self.args)
        self.verbose = verbose
        self._tmp = None
        if workdir:
            os.makedirs(workdir, exist_ok=True)
            self.workdir = os.path.abspath(workdir)
        else:
            self._tmp = tempfile.TemporaryDirectory(prefix="grok1-lm-eval-")
            self.workdir = self._tmp.name

    def _without_max_context(self, args):
        """grok1-run's context is max_length: every job gets --max-context
        max_length. The args without the user's --max-context M (either
        form), which must equal max_length."""
        kept, i = [], 0
        while i < len(args):
            a = args[i]
            if a == "--max-context" or a.startswith("--max-context="):
                if a == "--max-context":
                    if i + 1 >= len(args):
                        raise Grok1Error("grok1_args: --max-context needs a value")
                    val, i = args[i + 1], i + 2
                else:
                    val, i = a.split("=", 1)[1], i + 1
                try:
                    m = int(val)
                except ValueError:
                    raise Grok1Error(f"grok1_args: --max-context {val!r}: not a number") from None
                if m != self.max_length:
                    raise Grok1Error(f"grok1_args has --max-context {m} but max_length is {self.max_length}: the "
                                     f"adapter runs grok1-run with --max-context max_length, so set max_length={m} "
                                     f"(--max-length {m}), or drop one of the two")
                continue
            kept.append(a)
            i += 1
        return kept

    def identity(self):
        """What every answer depends on besides its request: the checkpoint,
        the tokenizer and grok1-run (files by path, size and time), grok1-run's
        options, the window length and BOS id (a hex digest)."""
        ident = [" ".join(self.args), f"max_length {self.max_length} bos {self.bos_id}"]
        for path in (self.checkpoint, self.tokenizer, self.run):
            st = os.stat(path)
            ident.append(f"{path} {st.st_size} {st.st_mtime_ns}")
        return hashlib.sha256("\0".join(ident).encode()).hexdigest()[:16]

    def _job(self, mode, rows, extra=()):
        """One grok1-run job over rows (dicts without "id"); results in order."""
        if not rows:
            return []
        text = "".join(json.dumps(dict(r, id=i), ensure_ascii=False) + "\n" for i, r in enumerate(rows))
        cmd_tail = (["--mode", mode, "--truncate", "left", "--max-context", str(self.max_length)] + list(extra) +
                    self.args)
        # what the results depend on: the requests, the options and the model
        key = hashlib.sha256("\0".join([text, " ".join(cmd_tail), self.identity()]).encode()).hexdigest()[:16]
        inp = os.path.join(self.workdir, f"{mode}-{key}.jsonl")
        out = os.path.join(self.workdir, f"{mode}-{key}.out.jsonl")
        if not os.path.exists(inp):
            with open(inp + ".tmp", "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(inp + ".tmp", inp)
        if not os.path.exists(out):
            cmd = self.launcher + [self.run, "--checkpoint", self.checkpoint, "--tokenizer", self.tokenizer,
                                   "--input", inp, "--output", out, "--resume"] + cmd_tail
            if self.verbose:
                print("grok1-lm-eval: " + " ".join(shlex.quote(c) for c in cmd), file=sys.stderr, flush=True)
            rc, tail = run_streaming(cmd)
            if rc != 0 or not os.path.exists(out):
                hint = ""
                if "--max-context" in tail and "max_seq_len" in tail:
                    hint = (f"\n(max_length {self.max_length} is grok1-run's --max-context: give a max_length "
                            "(--max-length) no larger than the model's max_seq_len)")
                raise Grok1Error(f"grok1-run exited {rc} ({' '.join(cmd[:len(self.launcher) + 1])} ...; "
                                 f"requests in {inp}):\n{tail.strip()}{hint}")
        by_id = {}
        with open(out, encoding="utf-8") as f:
            for line in f:
                r = json.loads(line)
                by_id[r["id"]] = r
        missing = [i for i in range(len(rows)) if i not in by_id]
        if missing:
            raise Grok1Error(f"{out}: no result for {len(missing)} of {len(rows)} requests (first: {missing[0]})")
        return [by_id[i] for i in range(len(rows))]

    def encode(self, texts):
        """Token ids of each text (no BOS), with grok1-tokenize."""
        if not texts:
            return []
        prog = find_program(self.tokenize_prog, "grok1-tokenize", os.path.join("src", "tools", "grok1-tokenize"))
        data = "".join(json.dumps({"id": i, "text": t}, ensure_ascii=False) + "\n" for i, t in enumerate(texts))
        p = subprocess.run([prog, "--tokenizer", self.tokenizer, "encode"], input=data, capture_output=True,
                           text=True, encoding="utf-8")
        if p.returncode != 0:
            raise Grok1Error(f"grok1-tokenize exited {p.returncode}: {p.stderr.strip()[-1000:]}")
        got = {}
        for line in p.stdout.splitlines():
            r = json.loads(line)
            got[r["id"]] = r["ids"]
        return [got[i] for i in range(len(texts))]

    # ---- the three request types ----
    def loglikelihood(self, pairs):
        res = self._job("score", [{"prompt": c, "continuation": x} for c, x in pairs])
        return [(float(r["sum_logprob"]), bool(r["is_greedy"])) for r in res]

    def rolling_windows(self, ids):
        """lm-eval's rolling windows (get_rolling_token_windows with
        context_len 1, made disjoint): BOS then the first n tokens, then n
        tokens at a time, each conditioned on the n before it, with n =
        max_length, as lm_eval gives an HF model: a window's model input is
        max_length tokens, and its last scored token is only predicted,
        which grok1-run's score mode allows (one token more than the
        context's positions)."""
        n, out = self.max_length, []
        if not ids:
            return out
        first = min(n, len(ids))
        out.append(([self.bos_id], ids[:first]))
        done = first
        while done < len(ids):
            take = min(len(ids) - done, n)
            end = done + take
            ctx = ids[end - n - 1:end - 1]
            out.append((ctx[:len(ctx) - (take - 1)], ids[done:end]))
            done = end
        return out

    def loglikelihood_rolling(self, texts):
        rows, owner = [], []
        for k, ids in enumerate(self.encode(texts)):
            for ctx, cont in self.rolling_windows(ids):
                rows.append({"prompt_ids": ctx, "continuation_ids": cont})
                owner.append(k)
        total = [0.0] * len(texts)
        for k, r in zip(owner, self._job("score", rows)):
            total[k] += float(r["sum_logprob"])
        return total

    def generate(self, items):
        """items: (context, {"until", "max_gen_toks", "do_sample", "temperature", "top_p", "top_k", "seed"}).
        A context is cut from the left to max_length - max_gen_toks tokens
        (at least one), as lm-eval does, so that the generation has room."""
        rows = []
        for ctx, kw in items:
            kw = dict(kw or {})
            until = kw.get("until") or []
            if isinstance(until, str):
                until = [until]
            row = {"prompt": ctx, "max_new_tokens": int(kw.get("max_gen_toks", kw.get("max_new_tokens", 256)))}
            if until:
                row["stop"] = [u for u in until if u]
            # sampling as lm-eval's HF back end: do_sample with no temperature is 1.0
            sample = kw.get("do_sample")
            temp = kw.get("temperature")
            temp = float(temp) if temp is not None else (1.0 if sample else 0.0)
            row["temperature"] = temp if (sample if sample is not None else temp > 0) else 0.0
            if row["temperature"] > 0:
                for k, conv in (("top_p", float), ("top_k", int), ("seed", int)):
                    if kw.get(k) is not None:
                        row[k] = conv(kw[k])
            rows.append(row)
        room = [max(1, self.max_length - r["max_new_tokens"]) for r in rows]
        for r, ids, keep in zip(rows, self.encode([r["prompt"] for r in rows]), room):
            if len(ids) > keep:
                del r["prompt"]
                r["prompt_ids"] = ids[-keep:]
        return [r.get("completion", "") for r in self._job("generate", rows)]


@register_model("grok1")
class Grok1LM(LM):
    """lm_eval's LM on grok1-run. Arguments (also as lm_eval model_args
    strings): checkpoint, tokenizer (required); run, tokenize (programs);
    launcher ("mpirun -n 8", "srun --mpi=pmix"); grok1_args (layout and
    batching options of grok1-run); workdir; max_length (8192, Grok-1's
    context: grok1-run runs with --max-context max_length); bos_id (1);
    verbose. lm_eval's own batch_size, max_batch_size, device and
    trust_remote_code are taken and ignored (grok1-run batches as
    grok1_args say); any other argument is refused."""

    LM_EVAL_ARGS = ("batch_size", "max_batch_size", "device", "trust_remote_code")

    def __init__(self, checkpoint=None, tokenizer=None, run=None, tokenize=None, launcher="", grok1_args="",
                 workdir=None, max_length=8192, bos_id=1, verbose=False, **others):
        unknown = sorted(k for k in others if k not in self.LM_EVAL_ARGS)
        if unknown:
            own = ("checkpoint", "tokenizer", "run", "tokenize", "launcher", "grok1_args", "workdir", "max_length",
                   "bos_id", "verbose")
            raise Grok1Error(f"unknown model argument{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}: "
                             f"grok1 takes {', '.join(own)} (and lm_eval's {', '.join(self.LM_EVAL_ARGS)}, "
                             "which it ignores)")
        if HAVE_LM_EVAL:
            super().__init__()
        self.runner = Grok1Runner(checkpoint, tokenizer, run=run, tokenize=tokenize, launcher=launcher,
                                  grok1_args=grok1_args, workdir=workdir, max_length=max_length, bos_id=bos_id,
                                  verbose=verbose in (True, "true", "True", "1"))

    def loglikelihood(self, requests, disable_tqdm=False):
        return self.runner.loglikelihood([r.args for r in requests])

    def loglikelihood_rolling(self, requests, disable_tqdm=False):
        return self.runner.loglikelihood_rolling([r.args[0] for r in requests])

    def generate_until(self, requests, disable_tqdm=False):
        return self.runner.generate([(r.args[0], r.args[1] if len(r.args) > 1 else {}) for r in requests])

    @property
    def tokenizer_name(self):
        return "grok1:" + os.path.basename(self.runner.tokenizer)


def main(argv=None):
    ap = argparse.ArgumentParser(description="lm-evaluation-harness tasks on grok1-run (docs: scripts/lm-eval/README.md)")
    ap.add_argument("--checkpoint", required=True, help="grok1-hdf5 checkpoint (grok1-run --checkpoint)")
    ap.add_argument("--tokenizer", required=True, help="SentencePiece model (Grok-1's tokenizer.model)")
    ap.add_argument("--tasks", required=True, help="comma-separated lm-eval task names")
    ap.add_argument("--launcher", default="", help='command before grok1-run, e.g. "mpirun -n 8" or "srun --mpi=pmix"')
    ap.add_argument("--grok1-args", default="", help='other grok1-run options, e.g. "--stages 8 --batch-size 16"')
    ap.add_argument("--run", default=None, help="grok1-run (default: build/mpi/grok1-run, else PATH)")
    ap.add_argument("--tokenize", default=None, help="grok1-tokenize (default: build/src/tools/, else PATH)")
    ap.add_argument("--max-length", type=int, default=8192,
                    help="context in tokens: grok1-run's --max-context, the rolling windows, the room for "
                         "generation (8192, Grok-1's; at most the model's max_seq_len)")
    ap.add_argument("--num-fewshot", type=int, default=None)
    ap.add_argument("--limit", type=float, default=None, help="documents per task (a fraction when below 1)")
    ap.add_argument("--include-path", default=None, help="folder of task YAML files of your own")
    ap.add_argument("--seed", type=int, default=0, help="lm-eval's seed (few-shot sampling, shuffling)")
    ap.add_argument("--output", default=None, help="write the results (JSON) here")
    ap.add_argument("--log-samples", action="store_true", help="with --output: every request and response too")
    ap.add_argument("--workdir", default=None, help="keep grok1-run's requests and results here (resumable)")
    ap.add_argument("--use-cache", default=None, metavar="PREFIX",
                    help="lm_eval's per-request cache (SQLite) in PREFIX-<model>_rank0.db: requests answered "
                         "before, by the same checkpoint, tokenizer, grok1-run and options, are not run again, "
                         "whatever other tasks come with them")
    ap.add_argument("--verbose", action="store_true", help="print each grok1-run command")
    a = ap.parse_args(argv)
    if not HAVE_LM_EVAL:
        print("grok1_lm_eval: the lm_eval package is not installed: run scripts/lm-eval/setup.sh and use "
              "its Python (.venv-lm-eval/bin/python)", file=sys.stderr)
        return 2
    import lm_eval
    from lm_eval.tasks import TaskManager
    try:
        lm = Grok1LM(checkpoint=a.checkpoint, tokenizer=a.tokenizer, run=a.run, tokenize=a.tokenize,
                     launcher=a.launcher, grok1_args=a.grok1_args, workdir=a.workdir, max_length=a.max_length,
                     verbose=a.verbose)
        tm = TaskManager(include_path=a.include_path) if a.include_path else TaskManager()
        tasks = [t for t in a.tasks.split(",") if t]
        res = lm_eval.simple_evaluate(model=lm, tasks=tasks, num_fewshot=a.num_fewshot, limit=a.limit,
                                      task_manager=tm, log_samples=a.log_samples, random_seed=a.seed,
                                      numpy_random_seed=a.seed, torch_random_seed=a.seed,
                                      fewshot_random_seed=a.seed,
                                      use_cache=f"{a.use_cache}-{lm.runner.identity()}" if a.use_cache else None)
    except Grok1Error as e:
        print(f"grok1_lm_eval: {e}", file=sys.stderr)
        return 1
    if res is None:
        return 1
    from lm_eval.utils import make_table
    print(make_table(res))
    if a.output:
        from lm_eval.utils import handle_non_serializable
        with open(a.output + ".tmp", "w", encoding="utf-8") as f:
            json.dump(res, f, indent=1, default=handle_non_serializable, ensure_ascii=False)
        os.replace(a.output + ".tmp", a.output)
        print(f"grok1_lm_eval: results in {a.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
