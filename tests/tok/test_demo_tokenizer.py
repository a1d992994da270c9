#!/usr/bin/env python3
"""The committed demo tokenizer (checkpoints/demo-tokenizer/demo.model) is
what scripts/make-demo-tokenizer.sh makes from the committed corpus (spm_train
is deterministic; only the recorded output path differs), it has 512 pieces,
and its specials and user-defined pieces are Grok-1's (when the real model is
beside the checkout). Exit 0 pass, 1 fail, 77 skip."""
import os, shutil, subprocess, sys, tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import protowire  # noqa: E402

src = sys.argv[1]
model = os.path.join(src, "checkpoints", "demo-tokenizer", "demo.model")
if not shutil.which("spm_train"):
    print("SKIP: spm_train not installed (apt-get install sentencepiece)")
    sys.exit(77)


def fields(b):
    """each field of the message in b: its number, its bytes, its value's bytes if length-delimited"""
    for num, wire, start, payload, stop in protowire.fields(b):
        yield num, b[start:stop], b[payload:stop] if wire == 2 else None


def canonical(path):
    """the model without trainer_spec's input and model_prefix (paths)"""
    out = []
    for f, raw, payload in fields(open(path, "rb").read()):
        if f == 2:
            out.append(b"".join(r for g, r, _ in fields(payload) if g not in (1, 2)))
        else:
            out.append(raw)
    return out


with tempfile.TemporaryDirectory() as tmp:
    r = subprocess.run(["bash", os.path.join(src, "scripts", "make-demo-tokenizer.sh"), os.path.join(tmp, "demo")],
                       capture_output=True, text=True)
    if r.returncode != 0:
        print("FAIL: make-demo-tokenizer.sh:", r.stderr)
        sys.exit(1)
    if canonical(os.path.join(tmp, "demo.model")) != canonical(model):
        print("FAIL: retraining does not reproduce", model, "(corpus or settings changed? rerun scripts/make-demo-tokenizer.sh)")
        sys.exit(1)
print("demo.model reproduced by scripts/make-demo-tokenizer.sh")
try:
    import sentencepiece as spm
except ImportError:
    print("OK (piece checks skipped: no python3-sentencepiece)")
    sys.exit(0)
d = spm.SentencePieceProcessor(model_file=model)
if d.get_piece_size() != 512:
    print("FAIL: demo vocabulary is", d.get_piece_size())
    sys.exit(1)
real = os.environ.get("G1_TOKENIZER_MODEL") or os.path.join(src, "..", "shared", "grok-1", "tokenizer.model")
if os.path.isfile(real):
    g = spm.SentencePieceProcessor(model_file=real)
    for i in range(69):
        if (d.id_to_piece(i), d.is_control(i), d.is_unknown(i)) != (g.id_to_piece(i), g.is_control(i), g.is_unknown(i)):
            print(f"FAIL: piece {i}: demo {d.id_to_piece(i)!r}, Grok-1 {g.id_to_piece(i)!r}")
            sys.exit(1)
    print("specials and user-defined pieces 0..68 equal Grok-1's")
print("OK")
