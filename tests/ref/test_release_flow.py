#!/usr/bin/python3
"""The release's runner flow (release_flow.py) run, and what it does with pads.

(a) prompts without the pad id: the transcription of runners.py's prefill and
    decode (bucket 16, memory of 48) gives the greedy tokens and per-step
    logits of grok1_ref.greedy_generate / grok1_ref.forward, and of
    `grok1-run --mode generate` (float32: --backend cpu --kv-cache f32,
    temperature 0, top_logprobs over the whole 100-token vocabulary): the
    release's positions at decode (the memory's step, from `length` on) and
    its choice of the prompt's row `length` - 1 are the engine's;
(b) a prompt with the pad id inside: the prefill masks the pad keys (its
    first logits are those of masking them everywhere, and not those of
    attending to them), a decode step does not (its logits are not those of
    masking them everywhere; its attention weights on the pad positions are
    not 0);
(c) a generated pad (a sampler's draw, fed back): at the step whose input it
    is, every layer's attention row is fully masked, so the softmax is
    uniform over all `sequence_len` memory slots (zeros and stale prefill
    slots included);
(d) a prompt longer than the bucket: its first token is that of the last 16
    tokens, its decode then runs from the untruncated length (measured);
and prints how far each pad behaviour lands from attending to the pad
everywhere (the engine) and masking it everywhere. Exit 0 pass, 1 fail,
77 skip.

usage: test_release_flow.py --mkckpt grok1-mkckpt --run grok1-run --tmp DIR
"""
import os
import shutil
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from g1test import (LOGPROB_TOL, Checks, TestFailure, compare, describe, parse_args,  # noqa: E402
                    read_results, run, write_requests)
import numpy as np  # noqa: E402
import grok1_ref as ref  # noqa: E402
import make_ckpt  # noqa: E402
import release_flow as rf  # noqa: E402

SEED = 7
VOCAB = 100          # top_logprobs (at most 100) then covers every token
BUCKET = (16,)       # run.py: (1024,)
SEQ_LEN = 48         # run.py: 8192
MAX_LEN = 8          # tokens per request (the release's max_len: the prefill's one included)
NEAR_TIE = 1e-4      # a top-2 logit gap below which greedy choices may differ
SAME = 1e-6          # of max|logit|: "the same function" in float32 (measured: 0 or ~1e-7)


def rel(a, b):
    """max |a - b| / max |b| over the rows given (lists of (V,) rows)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def flow(model, mask):
    return rf.Release(model, BUCKET, SEQ_LEN, pad_mask=mask)


def pick_prompts(model, rng, pad):
    """Prompts of 5, 11, 16 (the bucket) and 9 tokens without the pad id,
    whose greedy continuation has no pad and no near tie."""
    out = []
    for n in (5, 11, 16, 9):
        for _ in range(50):
            p = rng.integers(1, VOCAB, size=n).tolist()
            c, _, gaps = ref.greedy_generate(model, p, MAX_LEN, stop_at_eos=False)
            if pad not in c and min(gaps) > NEAR_TIE:
                out.append(p)
                break
    return out


def part_a(check, model, args, tmp, prompts):
    print("\n(a) prompts without the pad id: the flow against grok1_ref and grok1-run")
    rel_flow = flow(model, "release")
    reqs = [{"id": "a%d" % i, "prompt_ids": p, "max_new_tokens": MAX_LEN, "ignore_eos": True,
             "top_logprobs": VOCAB} for i, p in enumerate(prompts)]
    inp, out = os.path.join(tmp, "a_in.jsonl"), os.path.join(tmp, "a_out.jsonl")
    write_requests(inp, reqs)
    run([args.run, "--checkpoint", os.path.join(tmp, "flow.h5"), "--mode", "generate", "--input", inp,
         "--output", out, "--backend", "cpu", "--kv-cache", "f32", "--temperature", "0"], "grok1-run generate")
    res = read_results(out, reqs)
    for rq, r, p in zip(reqs, res, prompts):
        toks, steps, _ = rel_flow.generate(p, MAX_LEN)
        want, _, _ = ref.greedy_generate(model, p, MAX_LEN, stop_at_eos=False)
        check(toks == want, "%s (%d tokens): the flow's greedy tokens %s are grok1_ref.greedy_generate's %s"
              % (rq["id"], len(p), toks, want))
        full = ref.forward(model, p + toks)[len(p) - 1:len(p) - 1 + MAX_LEN]
        cm = compare(np.array(steps), full)
        check(cm["nfail"] == 0, "%s: the flow's %d steps' logits against grok1_ref.forward: %s"
              % (rq["id"], MAX_LEN, describe(cm)))
        check(r.get("completion_ids") == toks, "%s: grok1-run's completion %s is the flow's"
              % (rq["id"], r.get("completion_ids")))
        tl = r.get("top_logprobs") or []
        if not check(len(tl) == MAX_LEN and all(len(s) == VOCAB for s in tl),
                     "%s: grok1-run gives %d log-probs at each of %d steps" % (rq["id"], VOCAB, MAX_LEN)):
            continue
        worst = 0.0
        for s, lg in zip(tl, steps):
            lp = ref.log_softmax(lg.astype(np.float64))
            worst = max(worst, max(abs(e["logprob"] - lp[e["id"]]) for e in s))
        check(worst <= LOGPROB_TOL, "%s: grok1-run's log-probs at every step within %g of the flow's "
              "(max %.3g)" % (rq["id"], LOGPROB_TOL, worst))


def part_b(check, model, prompt, pad):
    print("\n(b) a prompt with the pad id inside: prefill masks it, decode does not")
    p = list(prompt)
    p[3] = p[7] = pad
    toks, rsteps, probe = flow(model, "release").generate(p, MAX_LEN, probe_step=1)
    force = dict(enumerate(toks))     # the others fed the release's tokens: the same positions
    _, ksteps, kprobe = flow(model, "keys").generate(p, MAX_LEN, force=force, probe_step=1)
    _, nsteps, _ = flow(model, "none").generate(p, MAX_LEN, force=force)
    first = {m: int(np.argmax(s[0])) for m, s in (("release", rsteps), ("keys", ksteps), ("none", nsteps))}
    print("  prompt %s: first token release %d, pads masked everywhere %d, attended everywhere %d"
          % (p, first["release"], first["keys"], first["none"]))
    print("  release's tokens %s; greedy with the pads masked everywhere %s, attended everywhere %s"
          % (toks, flow(model, "keys").generate(p, MAX_LEN)[0], flow(model, "none").generate(p, MAX_LEN)[0]))
    print("  logits, max|diff| / max|logit|:   step 0 (prefill)   steps 1..%d (decode)" % (MAX_LEN - 1))
    print("    release - masked everywhere    %.3g              %.3g"
          % (rel(rsteps[0], ksteps[0]), rel(rsteps[1:], ksteps[1:])))
    print("    release - attended everywhere  %.3g              %.3g"
          % (rel(rsteps[0], nsteps[0]), rel(rsteps[1:], nsteps[1:])))
    # "none" is the engine's function: causal attention over every token
    cm = compare(np.array(nsteps), ref.forward(model, p + toks)[len(p) - 1:len(p) - 1 + MAX_LEN])
    check(cm["nfail"] == 0, "the flow without a pad mask is grok1_ref.forward on the same tokens: %s"
          % describe(cm))
    check(rel(rsteps[0], ksteps[0]) <= SAME,
          "prefill: the release's first logits are those of masking the pad keys (%.3g of max)"
          % rel(rsteps[0], ksteps[0]))
    cm = compare(rsteps[0][None], nsteps[0][None])
    check(cm["nfail"] > 0, "prefill: the release's first logits are not those of attending to the pads: %s"
          % describe(cm))
    cm = compare(np.array(rsteps[1:]), np.array(ksteps[1:]))
    check(cm["nfail"] > 0, "decode: the release's logits are not those of masking the pad keys: %s"
          % describe(cm))
    on_pads = min(float(np.min(a[:, 0, [3, 7]])) for a in probe)
    check(on_pads > 0, "decode: the release's first decode step puts weight on pad positions 3 and 7 in "
          "every layer and head (least %.3g)" % on_pads)
    k_on_pads = max(float(np.max(a[:, 0, [3, 7]])) for a in kprobe)
    check(k_on_pads == 0, "decode: masking the pad keys puts none there (%.3g)" % k_on_pads)


def part_c(check, model, prompt, pad):
    print("\n(c) a generated pad: the step it is fed to attends uniformly to every memory slot")
    j = 3                              # the pad is drawn at step 2 and fed at step 3
    toks, rsteps, probe = flow(model, "release").generate(prompt, MAX_LEN, force={j - 1: pad}, probe_step=j)
    force = dict(enumerate(toks))
    _, nsteps, nprobe = flow(model, "none").generate(prompt, MAX_LEN, force=force, probe_step=j)
    _, ksteps, _ = flow(model, "keys").generate(prompt, MAX_LEN, force=force)
    step = len(prompt) + j - 1          # the pad's position, the memory's step when it is fed
    dev = max(float(np.max(np.abs(a - 1.0 / SEQ_LEN))) for a in probe)
    check(dev <= 1e-7, "the pad's step (position %d): every layer's attention weights are 1/%d over all %d "
          "slots (max deviation %.3g): %d written, %d stale prefill slots of the bucket's padding, %d zeros"
          % (step, SEQ_LEN, SEQ_LEN, dev, step + 1, max(0, BUCKET[0] - step - 1), SEQ_LEN - max(BUCKET[0], step + 1)))
    check(max(float(np.max(a[:, 0, step + 1:])) for a in nprobe) == 0,
          "attending to the pad (the engine), that step's weights past it are 0")
    cm = compare(np.array(nsteps), ref.forward(model, prompt + toks)[len(prompt) - 1:len(prompt) - 1 + MAX_LEN])
    check(cm["nfail"] == 0, "the flow without a pad mask is grok1_ref.forward on the same tokens: %s"
          % describe(cm))
    check(rel(rsteps[:j], nsteps[:j]) <= SAME, "before the pad is fed the release and the engine agree "
          "(%.3g of max)" % rel(rsteps[:j], nsteps[:j]))
    cm = compare(rsteps[j][None], nsteps[j][None])
    check(cm["nfail"] > 0, "the pad's step: the release's logits are not the engine's: %s" % describe(cm))
    print("  tokens %s (pad forced at step %d); logits, max|diff| / max|logit|:" % (toks, j - 1))
    print("    release - attended (engine): pad's step %.3g, after it %.3g"
          % (rel(rsteps[j], nsteps[j]), rel(rsteps[j + 1:], nsteps[j + 1:])))
    print("    release - masked keys:       pad's step %.3g, after it %.3g"
          % (rel(rsteps[j], ksteps[j]), rel(rsteps[j + 1:], ksteps[j + 1:])))
    print("    greedy after the pad: release %s, engine %s"
          % (int(np.argmax(rsteps[j])), int(np.argmax(nsteps[j]))))


def part_d(check, model, rng):
    print("\n(d) a prompt longer than the bucket")
    n = BUCKET[0] + 8
    p = rng.integers(1, VOCAB, size=n).tolist()
    toks, steps, _ = flow(model, "release").generate(p, MAX_LEN)
    kept = p[-BUCKET[0]:]
    want = ref.forward(model, kept + toks)[BUCKET[0] - 1:BUCKET[0] - 1 + MAX_LEN]
    check(rel(steps[0], want[0]) <= 1e-5, "its first logits are those of its last %d tokens (row %d, clamped "
          "into the bucket; %.3g of max)" % (BUCKET[0], n - 1, rel(steps[0], want[0])))
    cm = compare(np.array(steps[1:]), want[1:])
    check(cm["nfail"] > 0, "its decode (positions from %d, %d zero slots attended) is not that of the kept "
          "tokens: %s" % (n, n - BUCKET[0], describe(cm)))


def main():
    args = parse_args(__doc__)
    check = Checks()
    tmp = os.path.join(args.tmp, "release_flow")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        make_ckpt.write_ckpt(os.path.join(tmp, "flow.h5"), dict(make_ckpt.TINY_CONFIG, vocab_size=VOCAB),
                             seed=SEED)
        model = ref.load(os.path.join(tmp, "flow.h5"))
        pad = model.cfg["pad_id"]
        rng = np.random.default_rng(SEED)
        prompts = pick_prompts(model, rng, pad)
        if not check(len(prompts) == 4, "4 prompts without pads or near ties in their continuations"):
            return check.result()
        part_a(check, model, args, tmp, prompts)
        part_b(check, model, prompts[1], pad)
        part_c(check, model, prompts[0], pad)
        part_d(check, model, rng)
    except TestFailure as e:
        check(False, str(e))
    shutil.rmtree(tmp, ignore_errors=True)
    return check.result()


if __name__ == "__main__":
    sys.exit(main())
