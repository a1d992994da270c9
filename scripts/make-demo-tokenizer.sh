#!/usr/bin/env bash
# Train the demo tokenizer (vocab 512, fits the tiny model) with spm_train
# (Debian package `sentencepiece`) under Grok-1's trainer settings: BPE, byte
# fallback, identity normaliser, digits split, the same 65 user-defined
# pieces and specials [PAD]=0 [BOS]=1 [EOS]=2 [UNK]=3. The corpus is the
# committed checkpoints/demo-tokenizer/corpus.txt (the project's own docs), so
# the output is reproducible: tests/tok/test_demo_tokenizer.py retrains it and
# compares bytes.
# usage: scripts/make-demo-tokenizer.sh [OUT_PREFIX]   (default checkpoints/demo-tokenizer/demo -> demo.model, demo.vocab)
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=${1:-checkpoints/demo-tokenizer/demo}
command -v spm_train >/dev/null || { echo "make-demo-tokenizer: spm_train not found: apt-get install sentencepiece" >&2; exit 1; }

# Grok-1's user-defined pieces (ids 4..68 of its tokenizer.model), in order,
# comma-separated (none contains a comma): 1-10 newlines, digits, 1-8 tabs,
# 2-16 spaces, <|separator|>, <|mask|>, <|control1|>..<|control20|>.
nl=$'\n' tab=$'\t' syms=() s=""
for i in $(seq 1 10); do s+=$nl; syms+=("$s"); done
for d in 0 1 2 3 4 5 6 7 8 9; do syms+=("$d"); done
s=""; for i in $(seq 1 8); do s+=$tab; syms+=("$s"); done
s=" "; for i in $(seq 2 16); do s+=" "; syms+=("$s"); done
syms+=("<|separator|>" "<|mask|>")
for i in $(seq 1 20); do syms+=("<|control$i|>"); done
user=$(IFS=,; echo "${syms[*]}")

spm_train --input=checkpoints/demo-tokenizer/corpus.txt --model_prefix="$prefix" \
  --model_type=bpe --vocab_size=512 --byte_fallback=true \
  --normalization_rule_name=identity --add_dummy_prefix=true --remove_extra_whitespaces=false \
  --split_digits=true --allow_whitespace_only_pieces=true --max_sentencepiece_length=16 \
  --character_coverage=0.9995 --num_threads=1 --minloglevel=2 \
  --pad_id=0 --bos_id=1 --eos_id=2 --unk_id=3 \
  --pad_piece='[PAD]' --bos_piece='[BOS]' --eos_piece='[EOS]' --unk_piece='[UNK]' --unk_surface='[UNK]' \
  --user_defined_symbols="$user" >/dev/null 2>&1 || {
    echo "make-demo-tokenizer: spm_train failed; rerun without --minloglevel for its log" >&2; exit 1; }
echo "make-demo-tokenizer: wrote $prefix.model"
