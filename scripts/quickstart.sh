#!/usr/bin/env bash
# Quick start: install what is missing (Debian 12), build, make the tiny
# model, and run the main job on it: a 4-rank MPI job (2 pipeline stages x
# 2 expert slots) generating completions for a few prompts.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
[ -f build/build.ninja ] || meson setup build
ninja -C build

mkdir -p checkpoints/tiny
model=checkpoints/tiny/tiny.h5
[ -f "$model" ] || ./build/checkpoints/grok1-mkckpt --config tiny --seed 1 --out "$model"

# Text prompts, through the demo tokenizer (checkpoints/demo-tokenizer: a
# SentencePiece model trained with Grok-1's settings, sized for the tiny
# model). The tiny model's weights are random, so the completions are noise:
# this shows the machinery, not a language model.
reqs=checkpoints/tiny/demo-requests.jsonl
cat > "$reqs" <<'JSON'
{"id": "a", "prompt": "The answer to life, the universe and everything is", "max_new_tokens": 16}
{"id": "b", "prompt": "Pipeline stages pass micro-batches along", "max_new_tokens": 12, "temperature": 0.8, "top_p": 0.9, "seed": 1}
{"id": "c", "prompt": "Rank 0 tokenizes and samples;", "max_new_tokens": 20, "stop": ["\n"]}
JSON
out=checkpoints/tiny/demo-completions.jsonl
# mpirun refuses root unless told; more ranks than cores need oversubscribe
mpi_env=(OMP_NUM_THREADS=1 OMPI_MCA_rmaps_base_oversubscribe=1)
if [ "$(id -u)" -eq 0 ]; then mpi_env+=(OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1); fi
env "${mpi_env[@]}" mpirun -n 4 ./build/mpi/grok1-run --stages 2 --ep 2 \
  --checkpoint "$model" --tokenizer checkpoints/demo-tokenizer/demo.model \
  --mode generate --input "$reqs" --output "$out" --progress off
cat "$out"
