#!/usr/bin/env bash
# Build the small-batch quantized kernels (bs-mmsq.cuh) HERE, on a machine without a GPU, with nvcc
# from the PyPI wheels (nvidia-cuda-nvcc, CUDA 13), into target/mmsq/:
#   test-mmsq        standalone check against ggml's CPU (de)quantizer and timing; static CUDA
#                    runtime; run it on the GPU machine: `target/mmsq/test-mmsq [reps]`
#   libbs-mmsq.so    the kernels for ggml-cuda patched by patch-ggml-cuda.py (loaded when
#                    BLOCKSPEC_MMSQ_LIB names it); shared CUDA runtime, the one ggml-cuda uses
# ggml-quants.c (the reference quantizer) comes from the ggml source vendored by llama-cpp-sys-2.
# The GPU machine can build the same files with its own nvcc (device-bench.sh does, if the
# library was not carried).
set -euo pipefail
cd "$(dirname "$0")/../../.."
venv=${NVCC_VENV:-$HOME/.cache/blockspec/nvcc-venv}
if [[ ! -x "$venv/bin/python" ]]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q nvidia-cuda-nvcc nvidia-cuda-runtime nvidia-cuda-cccl
fi
cuda=$("$venv/bin/python" -c 'import nvidia, os; print(os.path.join(nvidia.__path__[0], "cu13"))')
src=$(cargo metadata --format-version 1 --locked |
  python3 -c 'import json,sys; m=json.load(sys.stdin); print([p["manifest_path"] for p in m["packages"] if p["name"]=="llama-cpp-sys-2"][0])')
ggml="$(dirname "$src")/llama.cpp/ggml"
out=target/mmsq
mkdir -p "$out"
export PATH="$cuda/bin:$PATH"
gcc -O2 -std=c11 -I"$ggml/include" -I"$ggml/src" -c "$ggml/src/ggml-quants.c" -o "$out/ggml-quants.o"
nvcc -O3 -std=c++17 -arch=sm_90 -I"$cuda/include" -I"$ggml/include" -I"$ggml/src" \
  -L"$cuda/lib" scripts/gpu/mmsq/test-mmsq.cu "$out/ggml-quants.o" -o "$out/test-mmsq" -lm
# The wheel has libcudart.so.13 but no libcudart.so for the linker.
mkdir -p "$out/cudart" && ln -sf "$cuda/lib/libcudart.so.13" "$out/cudart/libcudart.so"
nvcc -O3 -std=c++17 -arch=sm_90 -shared -Xcompiler -fPIC -cudart shared -I"$cuda/include" \
  -L"$out/cudart" scripts/gpu/mmsq/bs-mmsq-lib.cu -o "$out/libbs-mmsq.so"
ls -la "$out/test-mmsq" "$out/libbs-mmsq.so"
