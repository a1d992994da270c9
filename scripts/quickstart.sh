#!/usr/bin/env bash
# Quick start: install what is missing (Debian 12), build, make the tiny
# model, and run the main job on it: greedy generation for a few prompts.
# (Single process for now; the distributed runtime makes this a 4-rank job.)
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
[ -f build/build.ninja ] || meson setup build
ninja -C build

mkdir -p checkpoints/tiny
model=checkpoints/tiny/tiny.h5
[ -f "$model" ] || ./build/checkpoints/grok1-mkckpt --config tiny --seed 1 --out "$model"

# Three prompts as token ids (text prompts come with the tokenizer).
reqs=checkpoints/tiny/demo-requests.jsonl
cat > "$reqs" <<'JSON'
{"id": "a", "prompt_ids": [422, 33, 356, 118, 333, 90, 360, 217], "max_new_tokens": 16}
{"id": "b", "prompt_ids": [5, 6, 7, 8, 9], "max_new_tokens": 12}
{"id": "c", "prompt_ids": [100, 200, 300, 400, 500, 42, 7], "max_new_tokens": 20}
JSON
out=checkpoints/tiny/demo-completions.jsonl
./build/mpi/grok1-run --checkpoint "$model" --mode generate --input "$reqs" --output "$out"
cat "$out"
