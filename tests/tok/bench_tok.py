#!/usr/bin/env python3
"""Encoding speed, C tokenizer vs the reference library (python3-sentencepiece,
C++), same model, same text, one thread each. The text: the project's docs and
sources plus the multilingual test corpus, one line per encode call. The
library is timed with its batch call (one Python call for all lines, no
per-line interpreter cost) and per line."""
import os, subprocess, sys, tempfile, time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tokcorpus  # noqa: E402
import sentencepiece as spm

tool, src = sys.argv[1], sys.argv[2]
models = [os.environ.get("G1_TOKENIZER_MODEL") or os.path.join(src, "..", "shared", "grok-1", "tokenizer.model"),
          os.path.join(src, "checkpoints", "demo-tokenizer", "demo.model")]
lines = []
for root, _, files in os.walk(src):
    if "/." in root or "build" in root:
        continue
    for fn in sorted(files):
        if fn.endswith((".md", ".c", ".h", ".py")):
            lines += open(os.path.join(root, fn), encoding="utf-8", errors="replace").read().splitlines()
lines += [t.replace("\n", " ") for t in tokcorpus.texts(5000)]
lines = [l for l in lines if l]
REP = 5
with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
    f.write("\n".join(lines) + "\n")
    path = f.name
nbytes = sum(len(l.encode()) for l in lines)
for m in models:
    if not os.path.isfile(m):
        print("skipped (absent):", m)
        continue
    sp = spm.SentencePieceProcessor(model_file=m)
    out = subprocess.run([tool, m], input=f"t {REP} {path}\n".encode(), capture_output=True).stdout.decode().split()
    b, toks, secs = int(out[0]), int(out[1]), float(out[2])
    t0 = time.perf_counter()
    for _ in range(REP):
        ref = sp.encode(lines, num_threads=1)
    t_batch = time.perf_counter() - t0
    t0 = time.perf_counter()
    for l in lines:
        sp.encode(l)
    t_line = (time.perf_counter() - t0) * REP
    ref_toks = sum(map(len, ref)) * REP
    print(f"model {os.path.basename(m)} ({sp.get_piece_size()} pieces): {len(lines)} lines, {nbytes} bytes, x{REP}")
    print(f"  C g1_tok_encode           {b / secs / 1e6:7.2f} MB/s  {toks / secs / 1e6:6.2f} Mtok/s")
    print(f"  sentencepiece batch call  {b / t_batch / 1e6:7.2f} MB/s  {ref_toks / t_batch / 1e6:6.2f} Mtok/s")
    print(f"  sentencepiece per line    {b / t_line / 1e6:7.2f} MB/s")
    print(f"  C / library (batch)       {t_batch / secs:7.2f}x   tokens equal in count: {toks == ref_toks}")
os.unlink(path)
