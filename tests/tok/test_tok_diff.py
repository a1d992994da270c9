#!/usr/bin/env python3
"""Differential test of the C tokenizer against the reference library
(python3-sentencepiece): encodings id for id, decodings byte for byte.
  grok:    ../shared/grok-1/tokenizer.model (or $G1_TOKENIZER_MODEL); skips when absent
  trained: small models trained here with the Grok-1 trainer settings (and variants)
  cli:     grok1-tokenize's JSONL round trip on the Grok-1 model
Exit 0 pass, 1 fail, 77 skip."""
import argparse, json, os, subprocess, sys, tempfile

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tokcorpus  # noqa: E402

SKIP = 77


def skip(msg):
    print("SKIP:", msg)
    sys.exit(SKIP)


try:
    import sentencepiece as spm
except ImportError:
    skip("python3-sentencepiece is not installed (apt-get install python3-sentencepiece)")


def grok_model(src):
    p = os.environ.get("G1_TOKENIZER_MODEL") or os.path.join(src, "..", "shared", "grok-1", "tokenizer.model")
    if not os.path.isfile(p):
        skip(f"{p} not found (set G1_TOKENIZER_MODEL to Grok-1's tokenizer.model)")
    return p


def grok_user_symbols():
    return (["\n" * i for i in range(1, 11)] + [str(d) for d in range(10)] + ["\t" * i for i in range(1, 9)]
            + [" " * i for i in range(2, 17)] + ["<|separator|>", "<|mask|>"]
            + [f"<|control{i}|>" for i in range(1, 21)])


def run_hex(tool, model, lines):
    out = subprocess.run([tool, model], input="".join(l + "\n" for l in lines).encode(),
                         stdout=subprocess.PIPE, check=True).stdout.decode().split("\n")
    if out and out[0].startswith("LOADERR"):
        raise SystemExit(f"FAIL: the C reader refused {model}: {out[0]}")
    return out


def check_model(tool, model, n_text, n_bytes, n_ids, label):
    sp = spm.SentencePieceProcessor(model_file=model)
    texts = [t.encode() for t in tokcorpus.texts(n_text)] + tokcorpus.raw_bytes(n_bytes)
    seqs = tokcorpus.id_seqs(sp, n_ids)
    got = run_hex(tool, model, ["e " + t.hex() for t in texts] + ["d " + " ".join(map(str, s)) for s in seqs])
    bad = 0
    n_tok = 0
    for i, t in enumerate(texts):
        want = sp.encode(t)
        n_tok += len(want)
        have = got[i]
        if have != " ".join(map(str, want)):
            bad += 1
            if bad <= 5:
                print(f"  {label}: encode mismatch for {t!r}:\n    library {want}\n    C       {have}")
    for j, s in enumerate(seqs):
        want = sp.decode(s).encode().hex()
        have = got[len(texts) + j]
        if have != want:
            bad += 1
            if bad <= 10:
                print(f"  {label}: decode mismatch for {s} {[sp.id_to_piece(i) for i in s]}:\n"
                      f"    library {bytes.fromhex(want)!r}\n    C       {have}")
    print(f"{label}: {len(texts)} texts ({sum(map(len, texts))} bytes, {n_tok} tokens) encoded, "
          f"{len(seqs)} id sequences decoded, {bad} mismatches")
    return bad


def train(tmp, name, corpus, **kw):
    args = dict(input=corpus, model_prefix=os.path.join(tmp, name), model_type="bpe", vocab_size=1000,
                byte_fallback=True, normalization_rule_name="identity", add_dummy_prefix=True,
                remove_extra_whitespaces=False, split_digits=True, allow_whitespace_only_pieces=True,
                pad_id=0, bos_id=1, eos_id=2, unk_id=3, pad_piece="[PAD]", bos_piece="[BOS]",
                eos_piece="[EOS]", unk_piece="[UNK]", unk_surface="[UNK]",
                user_defined_symbols=grok_user_symbols(), num_threads=1, minloglevel=2)
    args.update(kw)
    spm.SentencePieceTrainer.train(**args)
    return os.path.join(tmp, name + ".model")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["grok", "trained", "cli"])
    ap.add_argument("--hex", required=True)
    ap.add_argument("--cli")
    ap.add_argument("--src", required=True)
    a = ap.parse_args()
    bad = 0
    if a.what == "grok":
        m = grok_model(a.src)
        sp = spm.SentencePieceProcessor(model_file=m)
        ex = {"The answer to life the universe and everything is of course": [422, 3033, 356, 1180, 333, 9072, 360, 2175, 391, 359, 1805],
              "hello  world": [21560, 325, 8455], "12345": [130089, 15, 16, 17, 18, 19]}
        got = run_hex(a.hex, m, ["e " + t.encode().hex() for t in ex])
        for (t, ids), g in zip(ex.items(), got):
            if g != " ".join(map(str, ids)) or sp.encode(t) != ids:
                print(f"FAIL: GROK1.md example {t!r}: C {g}, library {sp.encode(t)}, documented {ids}")
                bad += 1
        bad += check_model(a.hex, m, 4000, 1000, 4000, "grok-1")
    elif a.what == "trained":
        with tempfile.TemporaryDirectory() as tmp:
            corpus = os.path.join(tmp, "corpus.txt")
            with open(corpus, "w") as f:
                for t in tokcorpus.training_lines(3000, seed=5):
                    f.write(t + "\n")
                for d in ("README.md", "docs", "src"):
                    p = os.path.join(a.src, d)
                    for fn in sorted(os.listdir(p)) if os.path.isdir(p) else [p]:
                        fp = os.path.join(p, fn) if os.path.isdir(p) else p
                        if os.path.isfile(fp) and fp.endswith((".md", ".c", ".h")):
                            f.write(open(fp, encoding="utf-8", errors="replace").read())
            models = [("grok_settings_1000", {}),
                      ("grok_settings_3000", dict(vocab_size=3000)),
                      ("extra_ws_no_prefix", dict(remove_extra_whitespaces=True, add_dummy_prefix=False)),
                      ("no_byte_fallback", dict(byte_fallback=False, vocab_size=800)),
                      ("few_user_symbols", dict(user_defined_symbols=["ab", "abc", "<x>", "\u2581\u2581q"]))]
            for name, kw in models:
                m = train(tmp, name, corpus, **kw)
                bad += check_model(a.hex, m, 1500, 500, 1500, name)
    else:  # cli: JSONL round trip through grok1-tokenize
        m = grok_model(a.src)
        sp = spm.SentencePieceProcessor(model_file=m)
        texts = tokcorpus.texts(500, seed=3)
        inp = "".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts))
        r = subprocess.run([a.cli, "--tokenizer", m, "encode"], input=inp.encode(), stdout=subprocess.PIPE)
        lines = r.stdout.decode().splitlines()
        if r.returncode != 0 or len(lines) != len(texts):
            print(f"FAIL: encode exit {r.returncode}, {len(lines)} lines for {len(texts)}")
            return 1
        ids = []
        for i, (t, l) in enumerate(zip(texts, lines)):
            o = json.loads(l)
            ids.append(o["ids"])
            if o["id"] != i or o["ids"] != sp.encode(t):
                bad += 1
                print(f"  cli encode mismatch line {i + 1}: {t!r}")
        inp = "".join(json.dumps({"ids": x}) + "\n" for x in ids)
        r = subprocess.run([a.cli, "--tokenizer", m, "decode"], input=inp.encode(), stdout=subprocess.PIPE)
        for i, (x, l) in enumerate(zip(ids, r.stdout.decode().splitlines())):
            if json.loads(l)["text"] != sp.decode(x):
                bad += 1
                print(f"  cli decode mismatch line {i + 1}")
        print(f"cli: {len(texts)} lines encoded and decoded through grok1-tokenize, {bad} mismatches")
    print("OK" if bad == 0 else f"FAIL: {bad} mismatches")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
