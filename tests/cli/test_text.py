#!/usr/bin/env python3
"""grok1-run with a tokenizer and the sampler (suite 'cli'), on the tiny
synthetic model and the demo tokenizer (checkpoints/demo-tokenizer).

Text prompts encode as the SentencePiece library does (no BOS); completions
decode as the library does and are valid UTF-8; stop strings cut the
completion; continuation scores are the right slice of the token-id scores;
sampling is repeatable per (seed, request, token) and the same alone and in
a batch; top-p keeps the nucleus; top_logprobs are sorted and include the
greedy choice; --truncate left cuts long prompts, which are refused without it.

usage: test_text.py CASE --run grok1-run --tokenizer demo.model
exit 0 pass, 1 fail, 77 skip."""
import json
import math
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tok"))
import protowire  # noqa: E402

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from g1testlib import Checks, script_cases  # noqa: E402

ARGS = None
check = Checks(quiet=True)


def run(mode, reqs, extra=(), expect=0):
    with tempfile.TemporaryDirectory() as d:
        inp, out = os.path.join(d, "in.jsonl"), os.path.join(d, "out.jsonl")
        with open(inp, "w") as f:
            for r in reqs:
                f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
        cmd = [ARGS.run, "--synthetic", "tiny", "--synthetic-seed", "3", "--tokenizer", ARGS.tokenizer, "--mode", mode,
               "--input", inp, "--output", out, "--progress", "off"] + list(extra)
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if p.returncode != expect:
            print(" ".join(cmd))
            print(p.stderr[-2000:])
            raise SystemExit(f"FAIL: exit {p.returncode}, expected {expect}")
        if expect:
            return p.stderr
        return [json.loads(l) for l in open(out, encoding="utf-8")]


TEXTS = ["The answer to life, the universe and everything is", "Hello, world! 12345",
         "naïve café — 東京 🙂 tabs\tand\nnewlines", "  leading spaces", "x"]


def case_encode_decode():
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=ARGS.tokenizer)
    reqs = [{"id": i, "prompt": t, "max_new_tokens": 24} for i, t in enumerate(TEXTS)]
    res = run("generate", reqs)
    for t, r in zip(TEXTS, res):
        check(r["prompt_tokens"] == len(sp.encode(t)), f"{t!r}: {r['prompt_tokens']} prompt tokens, library "
                                                       f"{len(sp.encode(t))}")
        want = sp.decode(r["completion_ids"])
        check(r["completion"] == want, f"completion {r['completion']!r} != library decode {want!r}")
    # score mode counts the same tokens and scores them like prompt_ids
    ids = sp.encode(TEXTS[0])
    a = run("score", [{"id": 0, "prompt": TEXTS[0]}])[0]
    b = run("score", [{"id": 0, "prompt_ids": ids}])[0]
    check(a["logprobs"] == b["logprobs"], "text and token-id prompts score differently")
    print(f"{len(TEXTS)} texts: prompt tokens and completions as the library encodes and decodes them")


def case_continuation():
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=ARGS.tokenizer)
    prompt, cont = "The capital of France is ", "Paris, of course"
    r = run("score", [{"id": "c", "prompt": prompt, "continuation": cont}])[0]
    whole = sp.encode(prompt.rstrip() + " " + cont)
    ctx = sp.encode(prompt.rstrip())
    full = run("score", [{"id": "w", "prompt_ids": whole}])[0]
    check(r["prompt_tokens"] == len(ctx) and r["continuation_tokens"] == len(whole) - len(ctx),
          f"token counts {r['prompt_tokens']} + {r['continuation_tokens']}, expected {len(ctx)} + "
          f"{len(whole) - len(ctx)}")
    check(r["logprobs"] == full["logprobs"][len(ctx) - 1:], "continuation log-probs are not the slice of the "
                                                            "whole sequence's")
    check(abs(r["sum_logprob"] - sum(r["logprobs"])) < 1e-9, "sum_logprob is not the sum")
    check(isinstance(r["is_greedy"], bool), "is_greedy missing")
    print(f"continuation: {r['continuation_tokens']} tokens, sum {r['sum_logprob']:.4f}")
    # an empty (or all-space) prompt: the continuation conditioned on BOS
    # (id 1) alone, as lm-evaluation-harness does with an empty context
    for p in ("", "  "):
        e = run("score", [{"id": "e", "prompt": p, "continuation": cont}])[0]
        ids = sp.encode(p + cont)
        want = run("score", [{"id": "e", "prompt_ids": [1], "continuation_ids": ids}])[0]
        check(e["prompt_tokens"] == 1 and e["continuation_tokens"] == len(ids) and e["logprobs"] == want["logprobs"],
              f"prompt {p!r}: {e} is not the continuation after BOS {want}")
    err = run("score", [{"id": "e", "prompt": "x", "continuation": ""}], expect=1)
    check("continuation is empty" in err, f"an empty continuation: {err.strip()[-200:]}")
    # the split moves to the continuation all the whitespace Python's
    # rstrip() takes (lm-eval's _encode_pair): CR, no-break and ideographic
    # spaces, vertical tab, not only space, tab and newline
    for tail in ("\r\n", "\u00a0", "\u3000", "\x0b", " \u2009\r"):
        p = "Question?" + tail
        r = run("score", [{"id": "s", "prompt": p, "continuation": "Answer"}])[0]
        n_sp = len(p) - len(p.rstrip())
        ctx_, cont_ = p[:-n_sp], p[-n_sp:] + "Answer"
        whole, ctx = sp.encode(ctx_ + cont_), sp.encode(ctx_)
        check((r["prompt_tokens"], r["continuation_tokens"]) == (len(ctx), len(whole) - len(ctx)),
              f"prompt ending {tail!r}: {r['prompt_tokens']} + {r['continuation_tokens']} tokens, lm-eval's split "
              f"{len(ctx)} + {len(whole) - len(ctx)}")
    print("the prompt's trailing whitespace goes to the continuation as lm-eval moves it")
    # a prompt whose own tokens are not the start of the whole text's (a word
    # cut inside): lm-eval conditions on the prompt's own tokens and scores
    # the whole text's tokens past as many; grok1-run fed the whole text's
    for p, c in (("I saw the ca", "t today"), ("I saw the t", "he today")):
        ctx, whole = sp.encode(p), sp.encode(p + c)
        check(whole[:len(ctx)] != ctx, f"{p!r} + {c!r}: the demo tokenizer no longer splits inside the word")
        r = run("score", [{"id": "w", "prompt": p, "continuation": c}])[0]
        want = run("score", [{"id": "w", "prompt_ids": ctx, "continuation_ids": whole[len(ctx):]}])[0]
        check(r["logprobs"] == want["logprobs"] and r["prompt_tokens"] == len(ctx),
              f"{p!r} + {c!r}: not scored after the prompt's own tokens as lm-eval does ({r['logprobs']} != "
              f"{want['logprobs']})")
    print("a word cut between prompt and continuation: the context is the prompt's own tokens, as lm-eval's")


def case_nul():
    """U+0000 in text: a prompt holds it (SentencePiece encodes it); a
    completion that decodes to it is written as \\u0000 and read back by
    --resume; a stop string cannot hold it (refused with a message). An
    empty generate prompt generates after BOS."""
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=ARGS.tokenizer)
    r = run("generate", [{"id": 0, "prompt": "a\u0000b", "max_new_tokens": 2}])[0]
    check(r["prompt_tokens"] == len(sp.encode("a\u0000b")), f"a prompt with U+0000: {r['prompt_tokens']} tokens, "
                                                           f"library {len(sp.encode('a' + chr(0) + 'b'))}")
    err = run("generate", [{"id": 0, "prompt": "x", "stop": ["a\u0000"]}], expect=1)
    check("contains U+0000" in err, f"a stop string with U+0000: {err.strip()[-200:]}")
    e = run("generate", [{"id": 0, "prompt": "", "max_new_tokens": 4, "ignore_eos": True}])[0]
    b = run("generate", [{"id": 0, "prompt_ids": [1], "max_new_tokens": 4, "ignore_eos": True}])[0]
    check(e["prompt_tokens"] == 1 and e["completion_ids"] == b["completion_ids"],
          f"an empty generate prompt: {e}, after BOS: {b}")
    err = run("score", [{"id": 0, "prompt": ""}], expect=1)
    check("score mode has no token to score" in err, f"an empty score prompt: {err.strip()[-200:]}")
    # a kept result whose completion holds U+0000 (a byte token <0x00>)
    with tempfile.TemporaryDirectory() as d:
        inp, out = os.path.join(d, "in.jsonl"), os.path.join(d, "out.jsonl")
        with open(inp, "w") as f:
            for i in range(3):
                f.write(json.dumps({"id": i, "prompt": f"Hello {i}", "max_new_tokens": 3}) + "\n")
        cmd = [ARGS.run, "--synthetic", "tiny", "--synthetic-seed", "3", "--tokenizer", ARGS.tokenizer, "--mode",
               "generate", "--input", inp, "--output", out, "--progress", "off"]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)
        lines = open(out, encoding="utf-8").read().splitlines(keepends=True)
        first = json.loads(lines[0])
        first["completion"] = "\u0000" + first["completion"]
        os.rename(out, out + ".partial")
        with open(out + ".partial", "w", encoding="utf-8") as f:
            f.write(json.dumps(first, separators=(",", ":")) + "\n")
        p = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=120)
        got = open(out, encoding="utf-8").read().splitlines(keepends=True) if os.path.exists(out) else []
        check(p.returncode == 0 and len(got) == 3 and json.loads(got[0]) == first and got[1:] == lines[1:],
              f"--resume after a result holding U+0000: exit {p.returncode}, {p.stderr.strip()[-300:]}")
        # and grok1-merge joins a shard holding it
        shards = []
        for k in range(2):
            o = os.path.join(d, f"sh{k}.jsonl")
            subprocess.run(cmd[:-4] + ["--output", o, "--progress", "off", "--shard", f"{k}/2"], check=True,
                           capture_output=True, timeout=120)
            shards.append(o)
        r0 = [json.loads(x) for x in open(shards[0], encoding="utf-8")]
        r0[0]["completion"] = "\u0000" + r0[0]["completion"]
        with open(shards[0], "w", encoding="utf-8") as f:
            f.writelines(json.dumps(x, separators=(",", ":")) + "\n" for x in r0)
        merged = os.path.join(d, "merged.jsonl")
        p = subprocess.run([ARGS.merge, "--input", inp, "--output", merged] + shards, capture_output=True, text=True,
                           timeout=120)
        got = [json.loads(x) for x in open(merged, encoding="utf-8")] if os.path.exists(merged) else []
        check(p.returncode == 0 and len(got) == 3 and got[0] == r0[0],
              f"grok1-merge of a shard holding U+0000: exit {p.returncode}, {p.stderr.strip()[-300:]}")
    print("U+0000: prompts, kept completions and stop strings as above")


def case_stop():
    base = run("generate", [{"id": 0, "prompt": "Hello there", "max_new_tokens": 40, "ignore_eos": True}])[0]
    text = base["completion"]
    pick = next((text[i:i + 2] for i in range(3, len(text) - 2) if text[i:i + 2].strip()
                 and "\ufffd" not in text[i:i + 2] and text.find(text[i:i + 2]) == i), None)
    if not pick:
        print("the completion has no usable substring for a stop string: checking the no-match path only")
        pick = "\u2603never"
    r = run("generate", [{"id": 0, "prompt": "Hello there", "max_new_tokens": 40, "ignore_eos": True,
                          "stop": [pick, "\u2603never"]}])[0]
    at = text.find(pick)
    if at >= 0:
        check(r["finish_reason"] == "stop", f"finish_reason {r['finish_reason']} with stop {pick!r}")
        check(r["completion"] == text[:at], f"completion {r['completion']!r} is not the text before {pick!r}")
    else:
        check(r == base or r["completion"] == text, "a stop string that never occurs changed the result")
    print(f"stop {pick!r}: {r['finish_reason']}, {len(r['completion'])} characters kept of {len(text)}")
    # List order, as lm-eval's `until` splits: a later string that starts
    # earlier but ends where the first one ends does not cut once the first
    # has cut. Both complete at the same step, so the earliest start (the
    # rule before) keeps one character less.
    prompts = ["Hello there", "Paris is the capital of", "Grok is", "1 2 3 4 5", "Once upon a time"]
    outs = run("generate", [{"id": j, "prompt": p, "max_new_tokens": 40, "ignore_eos": True}
                            for j, p in enumerate(prompts)])
    pick = next(((j, o["completion"], e) for j, o in enumerate(outs) for e in range(2, len(o["completion"]))
                 if o["completion"].find(o["completion"][e - 1]) == e - 1
                 and o["completion"].find(o["completion"][e - 2:e]) == e - 2
                 and "\ufffd" not in o["completion"][e - 2:e]), None)
    check(pick is not None, "no completion has a character first seen after another: list order not checked")
    j, text, e = pick
    pair = [text[e - 1], text[e - 2:e]]
    r = run("generate", [{"id": 0, "prompt": prompts[j], "max_new_tokens": 40, "ignore_eos": True, "stop": pair}])[0]
    check(r["finish_reason"] == "stop" and r["completion"] == text[:e - 1],
          f"stop {pair!r}: completion {r['completion']!r}, expected {text[:e - 1]!r} (list order)")
    r = run("generate", [{"id": 0, "prompt": prompts[j], "max_new_tokens": 40, "ignore_eos": True,
                          "stop": pair[::-1]}])[0]
    check(r["finish_reason"] == "stop" and r["completion"] == text[:e - 2],
          f"stop {pair[::-1]!r}: completion {r['completion']!r}, expected {text[:e - 2]!r} (list order)")
    print(f"stop {pair!r} and its reverse, in list order: {e - 1} and {e - 2} characters kept")


def case_sampling():
    reqs = [{"id": i, "prompt": t, "max_new_tokens": 20, "temperature": 1.0, "top_p": 0.9, "seed": 11}
            for i, t in enumerate(TEXTS)]
    a = run("generate", reqs)
    b = run("generate", reqs, ["--batch-size", "1"])
    c = run("generate", reqs[::-1])  # other positions: other request index, other stream
    check(a == b, "sampled tokens differ between batch sizes")
    same_seed = run("generate", reqs)
    check(a == same_seed, "two runs with the same seed differ")
    other = run("generate", [dict(r, seed=12) for r in reqs])
    check(any(x["completion_ids"] != y["completion_ids"] for x, y in zip(a, other)), "the seed changes nothing")
    greedy = run("generate", [dict(r, temperature=0) for r in reqs])
    check(any(x["completion_ids"] != y["completion_ids"] for x, y in zip(a, greedy)),
          "temperature 1 gives the greedy tokens")
    # defaults from the command line apply to requests that do not set them
    plain = [{"id": i, "prompt": t, "max_new_tokens": 20} for i, t in enumerate(TEXTS)]
    d = run("generate", plain, ["--temperature", "1", "--top-p", "0.9", "--seed", "11"])
    check([x["completion_ids"] for x in d] == [x["completion_ids"] for x in a], "command-line sampling defaults are "
                                                                                "not those of the requests")
    print(f"sampling: repeatable, batch-independent; reversed order differs: "
          f"{any(x['completion_ids'] != y['completion_ids'] for x, y in zip(a, c[::-1]))}")


def case_top_logprobs():
    r = run("generate", [{"id": 0, "prompt": "Hello", "max_new_tokens": 8, "top_logprobs": 5, "temperature": 0}])[0]
    tl = r["top_logprobs"]
    check(len(tl) == len(r["completion_ids"]), "one top_logprobs entry per completion token")
    for step, (tok, top) in enumerate(zip(r["completion_ids"], tl)):
        lps = [e["logprob"] for e in top]
        check(len(top) == 5 and lps == sorted(lps, reverse=True), f"step {step}: not 5 sorted entries")
        check(top[0]["id"] == tok, f"step {step}: greedy token {tok} is not the top entry {top[0]['id']}")
        check(all(l <= 0 for l in lps) and sum(math.exp(l) for l in lps) <= 1 + 1e-9, "log-probs out of range")
    print(f"top_logprobs: {len(tl)} steps of 5, greedy choice first")


def case_truncate():
    long = " ".join(["word"] * 400)
    err = run("generate", [{"id": 0, "prompt": long, "max_new_tokens": 2}], expect=1)
    check("--truncate left" in err, f"refusal does not suggest --truncate left: {err[-300:]}")
    r = run("generate", [{"id": 0, "prompt": long, "max_new_tokens": 2}], ["--truncate", "left"])[0]
    check(r["prompt_tokens"] == 255 and r.get("truncated", 0) > 0, f"truncated prompt: {r}")
    s = run("score", [{"id": 0, "prompt": long}], ["--truncate", "left"])[0]
    check(s["prompt_tokens"] == 257 and len(s["logprobs"]) == 256, "score truncation")
    print(f"truncate: generate keeps {r['prompt_tokens']} tokens (cut {r['truncated']}), score keeps 257")


def case_check_input():
    """--check-input with text prompts: the tokens it counts are the ones
    the run reports (the same tokenizer, the same cut), and a tokenizer that
    cannot be read or is not the model's is refused before any request is
    read."""
    reqs = [{"id": i, "prompt": t, "max_new_tokens": 4} for i, t in enumerate(TEXTS)]
    reqs.append({"id": 9, "prompt": " ".join(["word"] * 400), "max_new_tokens": 2})
    res = run("generate", reqs, ["--truncate", "left"])
    with tempfile.TemporaryDirectory() as d:
        inp = os.path.join(d, "in.jsonl")
        with open(inp, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in reqs)
        cmd = [ARGS.run, "--synthetic", "tiny", "--synthetic-seed", "3", "--tokenizer", ARGS.tokenizer, "--mode",
               "generate", "--input", inp, "--truncate", "left", "--check-input"]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        total = sum(r["prompt_tokens"] for r in res)
        cut = sum(r.get("truncated", 0) for r in res)
        print(p.stdout.strip())
        check(p.returncode == 0, f"--check-input: exit {p.returncode}: {p.stderr.strip()}")
        check(f"{total} prompt tokens" in p.stdout and f"{len(reqs)} text prompt(s)" in p.stdout,
              f"--check-input counts other prompt tokens than the run's {total}: {p.stdout!r}")
        check(f"cut from the left (--truncate left): 1 request(s), {cut} tokens" in p.stdout,
              f"--check-input's cut is not the run's {cut} tokens: {p.stdout!r}")
        check("layout: 1 stage x 1 expert slot (1 process), layers per stage 4" in p.stdout,
              f"--check-input does not give the layout: {p.stdout!r}")
        # the layout and the plan are checked as a run checks them (exit 2)
        p = subprocess.run(cmd + ["--stages", "2", "--ep", "3"], capture_output=True, text=True, timeout=60)
        check(p.returncode == 2 and "grok1-run: error: --" in p.stderr and "request" not in p.stdout,
              f"--check-input of --ep 3 (8 experts): exit {p.returncode}: {p.stderr.strip()[-200:]}")
        p = subprocess.run(cmd + ["--plan", os.path.join(d, "none.json")], capture_output=True, text=True, timeout=60)
        check(p.returncode == 2 and "cannot open" in p.stderr, f"--check-input of a missing --plan: exit "
                                                               f"{p.returncode}: {p.stderr.strip()[-200:]}")
        p = subprocess.run(cmd + ["--stages", "2", "--ep", "2"], capture_output=True, text=True, timeout=60)
        if "needs MPI" in p.stderr:  # a build without MPI refuses any other layout
            check(p.returncode == 2, f"--check-input --stages 2 without MPI: exit {p.returncode}")
        else:
            check(p.returncode == 0 and "layout: 2 stages x 2 expert slots (4 processes)" in p.stdout,
                  f"--check-input --stages 2 --ep 2: exit {p.returncode}: {p.stdout!r} {p.stderr.strip()[-200:]}")
            p = subprocess.run(cmd + ["--stages", "2", "--ep", "2", "--mem-per-rank", "1K"], capture_output=True,
                               text=True, timeout=60)
            check(p.returncode == 2 and "--mem-per-rank" in p.stderr,
                  f"--check-input --mem-per-rank 1K: exit {p.returncode}: {p.stderr.strip()[-200:]}")
        # the model's vocabulary is 512; a tokenizer of another size is refused
        other = os.path.join(d, "other.model")
        with open(other, "wb") as f:
            f.write(b"not a model")
        p = subprocess.run(cmd[:6] + [other] + cmd[7:], capture_output=True, text=True, timeout=60)
        check(p.returncode == 1 and "grok1-run: error:" in p.stderr and "request" not in p.stdout,
              f"a bad tokenizer: exit {p.returncode}: {p.stderr.strip()[-200:]}")
        # and one of another vocabulary (the demo's 512 pieces against the small preset's 131072)
        p = subprocess.run([ARGS.run, "--synthetic", "small"] + cmd[3:], capture_output=True, text=True, timeout=60)
        check(p.returncode == 1 and "has 512 pieces but the model's vocabulary has 131072" in p.stderr,
              f"a tokenizer of another vocabulary: exit {p.returncode}: {p.stderr.strip()[-200:]}")


def swapped_tokenizer(path):
    """A copy of the tokenizer at `path` as bytes, two of its last pieces of
    one length swapped: the same size, another tokenizer (it loads: the
    pieces are all still there, under each other's ids). The protobuf read
    by hand: ModelProto field 1 is a piece, whose field 1 is its text."""
    data = bytearray(open(path, "rb").read())

    def fields(i, end):  # the length-delimited fields of data[i:end]: (number, offset, length)
        return ((num, p, stop - p) for num, wire, _, p, stop in protowire.fields(data, i, end) if wire == 2)
    texts = [(i, n) for num, j, m in fields(0, len(data)) if num == 1
             for sub, i, n in fields(j, j + m) if sub == 1]
    by_len = {}
    for i, n in reversed(texts[-100:]):
        if n in by_len and data[i:i + n] != data[by_len[n]:by_len[n] + n]:
            a = by_len[n]
            data[i:i + n], data[a:a + n] = data[a:a + n], data[i:i + n]
            return bytes(data)
        by_len[n] = i
    raise SystemExit("no two pieces of one length to swap")


def pad_user_tokenizer(path):
    """A copy of the tokenizer at `path` as bytes, its piece 0 ([PAD], the
    pad id) made USER_DEFINED (type 4) instead of CONTROL (3): text "[PAD]"
    then encodes to id 0. The protobuf read by hand: ModelProto field 1 is a
    piece, whose field 3 is its type."""
    data = bytearray(open(path, "rb").read())
    for num, _, _, p, stop in protowire.fields(data):
        if num == 1:
            for sub, wire, _, q, _ in protowire.fields(data, p, stop):
                if sub == 3 and wire == 0 and data[q] == 3:
                    data[q] = 4
                    return bytes(data)
            break
    raise SystemExit("piece 0 of the tokenizer is not a control piece")


def case_pad_from_tokenizer():
    """A text prompt whose tokens hold the pad id is refused as prompt_ids
    holding it are (the release masks it out of attention, this runner does
    not). The demo tokenizer never gives it (its [PAD] is a control piece:
    the text "[PAD]" is ordinary characters); one where [PAD] is a
    user-defined piece does, and is refused, naming the line."""
    reqs = [{"id": 1, "prompt": "a [PAD] b", "max_new_tokens": 2}, {"id": 2, "prompt": "[PAD]", "max_new_tokens": 2}]
    res = run("generate", reqs)
    check([r["id"] for r in res] == [1, 2], f"the demo tokenizer's [PAD] text was refused: {res}")
    with tempfile.TemporaryDirectory() as d:
        other = os.path.join(d, "pad.model")
        with open(other, "wb") as f:
            f.write(pad_user_tokenizer(ARGS.tokenizer))
        inp, out = os.path.join(d, "in.jsonl"), os.path.join(d, "out.jsonl")
        with open(inp, "w") as f:
            f.write(json.dumps({"id": 0, "prompt": "no padding here", "max_new_tokens": 2}) + "\n")
            for r in reqs:
                f.write(json.dumps(r) + "\n")
        base = [ARGS.run, "--synthetic", "tiny", "--synthetic-seed", "3", "--tokenizer", other, "--mode", "generate",
                "--input", inp, "--progress", "off"]
        p = subprocess.run(base + ["--output", out], capture_output=True, text=True, timeout=120)
        want = ("grok1-run: error: input line 2: the tokenizer gave id 0, the model's pad id, which this runner "
                "refuses (the released model masks pad tokens out of attention and this runner does not): is it the "
                "model's tokenizer?")
        check(p.returncode == 1 and want in p.stderr, f"exit {p.returncode}: {p.stderr.strip()[-400:]}")
        kept = [json.loads(l)["id"] for l in open(out + ".partial")] if os.path.exists(out + ".partial") else None
        check(kept == [0], f"the request before it was not kept: {kept}")
        p = subprocess.run(base + ["--check-input"], capture_output=True, text=True, timeout=120)
        check(p.returncode == 1 and "3 request(s), 2 refused" in p.stdout
              and "grok1-run: refused: input line 3: the tokenizer gave id 0" in p.stderr,
              f"--check-input: exit {p.returncode}: {p.stdout!r} {p.stderr.strip()[-300:]}")
        # the model's pad id, not 0 as such: with pad_id 330 (the demo tokenizer's piece for "a"), "a b" is
        # refused and the [PAD] user piece (id 0) is not
        if not ARGS.mkckpt:
            print("no grok1-mkckpt (a build without HDF5): a model whose pad id is not 0 not tried")
            return
        ck = os.path.join(d, "pad330.h5")
        p = subprocess.run([ARGS.mkckpt, "--config", "tiny", "--set", "pad_id=330", "--seed", "3", "--out", ck],
                           capture_output=True, text=True, timeout=120)
        check(p.returncode == 0, f"grok1-mkckpt --set pad_id=330: exit {p.returncode}: {p.stderr.strip()}")
        with open(inp, "w") as f:
            for r in ({"id": 1, "prompt": "a b", "max_new_tokens": 2}, {"id": 2, "prompt": "[PAD]", "max_new_tokens": 2}):
                f.write(json.dumps(r) + "\n")
        p = subprocess.run([ARGS.run, "--checkpoint", ck, "--tokenizer", other, "--mode", "generate", "--input", inp,
                            "--progress", "off", "--check-input"], capture_output=True, text=True, timeout=120)
        check(p.returncode == 1 and "2 request(s), 1 refused" in p.stdout
              and "grok1-run: refused: input line 1: the tokenizer gave id 330, the model's pad id" in p.stderr,
              f"pad_id 330: exit {p.returncode}: {p.stdout!r} {p.stderr.strip()[-300:]}")


def case_tokenizer_record():
    """OUT.meta.json records the tokenizer's contents (settings.
    tokenizer_fnv1a64), not only its size: --resume and grok1-merge refuse
    another tokenizer of the same size; an output recorded with the size
    only (settings.tokenizer_bytes, before the fingerprint) resumes by the
    size as it did, and keeps its record."""
    with tempfile.TemporaryDirectory() as d:
        other = os.path.join(d, "other.model")
        with open(other, "wb") as f:
            f.write(swapped_tokenizer(ARGS.tokenizer))
        size = os.path.getsize(ARGS.tokenizer)
        check(os.path.getsize(other) == size and open(other, "rb").read() != open(ARGS.tokenizer, "rb").read(),
              "the swapped tokenizer is not another file of the same size")
        inp, out = os.path.join(d, "in.jsonl"), os.path.join(d, "out.jsonl")
        with open(inp, "w") as f:
            for i, t in enumerate(TEXTS):
                f.write(json.dumps({"id": i, "prompt": t, "max_new_tokens": 3}) + "\n")

        def cmd(tok, o, *extra):
            return [ARGS.run, "--synthetic", "tiny", "--synthetic-seed", "3", "--tokenizer", tok, "--mode",
                    "generate", "--input", inp, "--output", o, "--progress", "off"] + list(extra)
        subprocess.run(cmd(ARGS.tokenizer, out), check=True, capture_output=True, timeout=120)
        full = open(out, encoding="utf-8").read()
        meta = json.load(open(out + ".meta.json"))
        fp = meta["settings"].get("tokenizer_fnv1a64")
        check(isinstance(fp, str) and len(fp) == 16 and "tokenizer_bytes" not in meta["settings"],
              f"the meta file records the tokenizer as {meta['settings']}")
        p = subprocess.run(cmd(other, os.path.join(d, "o2.jsonl")), capture_output=True, text=True, timeout=120)
        check(p.returncode == 0, f"the swapped tokenizer does not load: {p.stderr.strip()[-300:]}")
        lines = full.splitlines(keepends=True)

        def resume(tok, rec):
            if os.path.exists(out):
                os.remove(out)
            with open(out + ".partial", "w", encoding="utf-8") as f:
                f.write("".join(lines[:2]))
            with open(out + ".meta.json", "w") as f:
                json.dump(rec, f)
            return subprocess.run(cmd(tok, out, "--resume"), capture_output=True, text=True, timeout=120)
        p = resume(other, meta)
        print(f"resume with another tokenizer of the same size: exit {p.returncode}: {p.stderr.strip()[-300:]}")
        check(p.returncode != 0 and "cannot resume" in p.stderr and "tokenizer_fnv1a64" in p.stderr,
              "resuming with another tokenizer of the same size was not refused (naming tokenizer_fnv1a64)")
        check(not os.path.exists(out) and open(out + ".partial", encoding="utf-8").read() == "".join(lines[:2]),
              "a refused resume changed the output")
        p = resume(ARGS.tokenizer, meta)
        check(p.returncode == 0 and open(out, encoding="utf-8").read() == full,
              f"resuming with the same tokenizer: exit {p.returncode}: {p.stderr.strip()[-300:]}")
        # a record of the size only (an output made before the fingerprint)
        legacy = json.loads(json.dumps(meta))
        legacy["settings"].pop("tokenizer_fnv1a64", None)
        legacy["settings"]["tokenizer_bytes"] = size
        p = resume(ARGS.tokenizer, legacy)
        kept = json.load(open(out + ".meta.json"))["settings"] if p.returncode == 0 else {}
        check(p.returncode == 0 and open(out, encoding="utf-8").read() == full and
              kept.get("tokenizer_bytes") == size and "tokenizer_fnv1a64" not in kept,
              f"an output recorded with the tokenizer's size resumes, and keeps its record: exit {p.returncode}: "
              f"{p.stderr.strip()[-300:]}, {kept}")
        legacy["settings"]["tokenizer_bytes"] = size + 1
        p = resume(ARGS.tokenizer, legacy)
        check(p.returncode != 0 and "tokenizer_bytes" in p.stderr,
              f"a size record of another tokenizer did not refuse: exit {p.returncode}: {p.stderr.strip()[-300:]}")
        # grok1-merge: shards made with tokenizers of the same size
        shards = []
        for k, tok in ((0, ARGS.tokenizer), (1, other), (1, ARGS.tokenizer)):
            shards.append(os.path.join(d, f"sh{len(shards)}.jsonl"))
            subprocess.run(cmd(tok, shards[-1], "--shard", f"{k}/2"), check=True, capture_output=True, timeout=120)
        merged = os.path.join(d, "merged.jsonl")
        p = subprocess.run([ARGS.merge, "--input", inp, "--output", merged] + shards[:2], capture_output=True,
                           text=True, timeout=120)
        print(f"merge of shards with other tokenizers: exit {p.returncode}: {p.stderr.strip()[-300:]}")
        check(p.returncode != 0 and "tokenizer_fnv1a64" in p.stderr and not os.path.exists(merged),
              "grok1-merge joined shards made with another tokenizer of the same size")
        merged = os.path.join(d, "merged2.jsonl")
        p = subprocess.run([ARGS.merge, "--input", inp, "--output", merged, shards[0], shards[2]],
                           capture_output=True, text=True, timeout=120)
        check(p.returncode == 0 and open(merged, encoding="utf-8").read() == full,
              f"grok1-merge of shards made with one tokenizer: exit {p.returncode}: {p.stderr.strip()[-300:]}")
    print("the tokenizer is recorded by its contents: another of the same size is refused")


def main():
    global ARGS
    cases, ap = script_cases(globals())
    ap.add_argument("--merge", help="grok1-merge (cases nul, tokenizer_record)")
    ap.add_argument("--mkckpt", help="grok1-mkckpt (case pad_from_tokenizer: a model whose pad id is not 0)")
    ap.add_argument("--run", required=True)
    ap.add_argument("--tokenizer", required=True)
    ARGS = ap.parse_args()
    try:
        import sentencepiece  # noqa: F401
    except ImportError:
        print("SKIP: python3-sentencepiece is not installed (scripts/setup.sh installs it)")
        return 77
    cases[ARGS.case]()
    return check.result()


if __name__ == "__main__":
    sys.exit(main())
