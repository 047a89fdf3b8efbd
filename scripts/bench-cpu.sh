#!/usr/bin/env bash
# Side-by-side CPU benchmark: `blockspec bench` and llama.cpp's `llama-bench` on the same GGUF,
# same thread count, prompt (pp) and decode (tg) tests, medians of 5 repetitions.
# Needs the models (scripts/fetch-models.sh) and llama-bench (scripts/ref/build-llama-peer.sh).
# Run it on an otherwise idle machine: ggml's threads wait on each other at every op, so another
# busy process distorts both numbers.
set -euo pipefail
cd "$(dirname "$0")/.."
MODELS="${BLOCKSPEC_MODELS:-$HOME/.cache/blockspec/models}"
LLAMA_BENCH="${LLAMA_BENCH:-${BLOCKSPEC_LLAMA_PEER:-$HOME/.cache/blockspec/llama-peer}/build/bin/llama-bench}"
THREADS="${THREADS:-2}"
REPS="${REPS:-5}"
PP="${PP:-16,64}"
TG="${TG:-32}"
cargo build --release --locked -q
for m in qwen2.5-coder-1.5b-instruct-q4_k_m.gguf qwen2.5-coder-0.5b-instruct-q4_k_m.gguf; do
  echo "### $m ($THREADS threads, median of $REPS)"
  echo
  echo "blockspec:"
  ./target/release/blockspec bench -m "$MODELS/$m" -t "$THREADS" -p "$PP" -n "$TG" -r "$REPS"
  echo
  if [[ -x "$LLAMA_BENCH" ]]; then
    echo "llama.cpp (llama-bench, flash attention on as in blockspec):"
    "$LLAMA_BENCH" -m "$MODELS/$m" -t "$THREADS" -p "$PP" -n "$TG" -r "$REPS" -fa 1 -o md
  else
    echo "(llama-bench not found at $LLAMA_BENCH: skipped)"
  fi
  echo
done
