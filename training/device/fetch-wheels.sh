#!/usr/bin/env bash
# Wheels the GPU image lacks (its package list: .library/device/KINDS.md): gguf (llama.cpp's gguf-py: GGUF
# reading, dequantization, q8_0 export) and dflash 0.1.0 (z-lab's DFlashDraftModel + dflash_generate).
# Both are pure Python; their other needs (numpy, pyyaml, tqdm, requests, torch, transformers 5.x) are on the
# image. Run here (where pip can reach the index), in the repo root; carry `.whl` in the device calls.
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx '/.whl/' .gitignore .git/info/exclude 2>/dev/null || echo '/.whl/' >> "$(git rev-parse --git-common-dir)/info/exclude"
mkdir -p .whl
for w in gguf==0.19.0 dflash==0.1.0; do
  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d .whl "$w"
done
ls -la .whl
