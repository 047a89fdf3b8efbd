#!/usr/bin/env bash
# Install what a fresh Debian machine lacks to build blockspec: CMake (ggml is built from the
# source vendored by the llama-cpp-sys-2 crate) and libclang (bindgen). Idempotent.
set -euo pipefail
need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
# bindgen needs libclang.so (libclang-N.so); Debian ships it in libclang-dev. libclang-cpp.so,
# which some images carry without it, is a different library.
if ! ls /usr/lib/llvm-*/lib/libclang.so* /usr/lib/llvm-*/lib/libclang-[0-9]*.so* >/dev/null 2>&1 &&
  ! ldconfig -p 2>/dev/null | grep -Eq 'libclang(-[0-9.]+)?\.so'; then
  need+=(libclang-dev)
fi
command -v cc >/dev/null 2>&1 || need+=(build-essential)
if ((${#need[@]})); then
  echo "installing: ${need[*]}" >&2
  SUDO=""
  [[ $(id -u) -eq 0 ]] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
command -v cargo >/dev/null 2>&1 || { echo "error: cargo (Rust) is required: https://rustup.rs" >&2; exit 1; }
