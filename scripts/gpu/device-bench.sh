#!/usr/bin/env bash
# Runs ON the GPU machine (no Rust there), from the directory scripts/gpu/build-binary.sh staged:
# builds ggml's shared libraries with CUDA from the carried source (the same ggml our binary was
# built on), writes the synthetic Qwen3-8B-shaped Q4_K_M target and a matching random DFlash
# drafter, and runs `blockspec bench` on the GPU. Results (JSON, logs) go to $OUT.
#   CUDA_ARCH (default 90: H100)   STEPS (default "plain verify spec"; "none": libraries only)
#   DRAFT_VOCAB (default 32768): --draft-vocab of the profile-vocab and replay-vocab steps
#   LIKE (default qwen3-8b): the synthetic target's shape (`blockspec synth --like`), written as
#        model-$LIKE.gguf with drafter-$LIKE.gguf beside it
#   BG_LLAMA=1: also start building llama.cpp b11434 with CUDA in the background (from
#        llama-src.tar.xz, staged with LLAMA_PEER=1), for a later device-llama.sh call
set -euo pipefail
dist=$(cd "$(dirname "$0")" && pwd)
# build-binary.sh with XZ_BINARY=1 stages the binary compressed (3 MB instead of 10.5 MB of the
# 64 MiB a call may carry).
if [[ -f "$dist/blockspec.xz" && ! -f "$dist/blockspec" ]]; then
  xz -dk "$dist/blockspec.xz" && chmod +x "$dist/blockspec"
fi
OUT=${OUT:-$dist/out}
mkdir -p "$OUT"
# Logs and results go to one folder, packed into one file at the end ($OUT returns 8 files).
logs=/tmp/blockspec-results
rm -rf "$logs" && mkdir -p "$logs"
trap 'tar -C "$logs" -czf "$OUT/results.tar.gz" . 2>/dev/null || true' EXIT
work=${WORK:-/tmp/blockspec-gpu}
mkdir -p "$work"
cd "$work"
t0=$(date +%s)
# Built libraries are cached by the caller: the first call packs them into $OUT, the caller keeps
# them in target/gpu-cache/ and carries that folder next time, which skips the ~4 minute build.
# The key covers the source and the build settings, so a stale cache is never used.
key=$( (sha256sum <"$dist/ggml-src.tar.xz"; echo "${CUDA_ARCH:-90} graphs-on release") | sha256sum | cut -c1-16)
cache_dir=$(cd "$dist/.." && pwd)/gpu-cache
if [[ -z "$(find ggml-build -name 'libggml-cuda.so*' 2>/dev/null)" ]]; then
  rm -rf ggml ggml-build
  if compgen -G "$cache_dir/ggml-cuda-$key.tar.xz.*" >/dev/null; then
    cat "$cache_dir/ggml-cuda-$key.tar.xz".* | tar xJ
    echo "ggml CUDA libraries from the carried cache ($key)"
  else
    tar xJf "$dist/ggml-src.tar.xz"
    # The vendored copy lacks ggml's pkg-config template; an empty one satisfies configure_file.
    # GGML_CUDA_GRAPHS is off by default in a standalone ggml build (llama.cpp's CMake turns it
    # on); without it every decode step launches its kernels one by one.
    touch ggml/ggml.pc.in
    cmake -S ggml -B ggml-build -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON \
      -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCH:-90}" -DGGML_NATIVE=ON \
      -DGGML_OPENMP=ON -DGGML_BUILD_TESTS=OFF -DGGML_BUILD_EXAMPLES=OFF -DGGML_CUDA_GRAPHS=ON \
      >"$logs/cmake.log" 2>&1 || { tail -30 "$logs/cmake.log"; exit 1; }
    cmake --build ggml-build -j"$(nproc)" >>"$logs/cmake.log" 2>&1 || { tail -50 "$logs/cmake.log"; exit 1; }
    # Pack the libraries (symlinks included) for the caller's cache, in parts under 16 MiB.
    find ggml-build -name 'libggml*.so*' | tar -cf - -T - | xz -T0 -6 |
      split -b 15M -d - "$OUT/ggml-cuda-$key.tar.xz."
    ls -la "$OUT"/ggml-cuda-*
  fi
fi
echo "ggml CUDA build: $(( $(date +%s) - t0 )) s" | tee "$logs/times.txt"
libdirs=$(find "$work/ggml-build" -name 'libggml*.so*' -printf '%h\n' | sort -u | paste -sd:)
find "$work/ggml-build" -name 'libggml*.so*' -type f -exec ls -la {} + >"$logs/libs.txt"
export LD_LIBRARY_PATH="$libdirs:${LD_LIBRARY_PATH:-}"
# Our small-batch quantized kernels (scripts/gpu/mmsq), loaded by the hook in our ggml-cuda when
# BLOCKSPEC_MMSQ_LIB names them: a carried target/mmsq/libbs-mmsq.so, else built here (seconds).
# MMSQ=0 leaves every product to ggml's own kernels.
if [[ "${MMSQ:-1}" != 0 ]]; then
  mmsq_lib=$(cd "$dist/.." && pwd)/mmsq/libbs-mmsq.so
  if [[ ! -f "$mmsq_lib" ]]; then
    mmsq_lib=$work/libbs-mmsq.so
    nvcc -O3 -std=c++17 -arch=sm_"${CUDA_ARCH:-90}" -shared -Xcompiler -fPIC -cudart shared \
      "$dist/mmsq/bs-mmsq-lib.cu" -o "$mmsq_lib" >"$logs/mmsq-build.log" 2>&1 ||
      { tail -20 "$logs/mmsq-build.log"; exit 1; }
  fi
  export BLOCKSPEC_MMSQ_LIB=$mmsq_lib
  echo "mmsq kernels: $mmsq_lib" | tee -a "$logs/times.txt"
fi
ldd "$dist/blockspec" | grep -E "ggml|not found" >"$logs/ldd.txt" || true
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$logs/gpu.txt" 2>&1 || true
# STEPS=none: only make the CUDA libraries ready (device-compare.sh's setup phase).
if [[ "${STEPS:-}" == none ]]; then echo "CUDA libraries ready in $work/ggml-build"; exit 0; fi
bs="$dist/blockspec"
t1=$(date +%s)
if [[ "${BG_LLAMA:-0}" == 1 && -f "$dist/llama-src.tar.xz" ]]; then
  # Outlives this call (setsid); device-llama.sh waits for it.
  WORK=/tmp/llama-gpu setsid nohup bash "$dist/device-llama.sh" build-only \
    >/tmp/llama-bg-build.log 2>&1 < /dev/null &
fi
LIKE=${LIKE:-qwen3-8b}
model=model-$LIKE.gguf
drafter=drafter-$LIKE.gguf
[[ -f $model ]] || "$bs" synth --like "$LIKE" --type q4_k_m -o "$model"
[[ -f $drafter ]] || "$bs" synth --dflash-for "$model" -o "$drafter"
echo "synth: $(( $(date +%s) - t1 )) s" | tee -a "$logs/times.txt"
if [[ -n "${DEBUG_RUN:-}" ]]; then
  BLOCKSPEC_DEBUG_SCHED=1 BLOCKSPEC_LOG=debug "$bs" run -m "$model" --device cuda \
    --draft "$drafter" -p "hello" -n 8 --temp 0 >"$logs/debug-run.log" 2>&1 || true
  grep -E "sched:|allocating|error|GGML_ASSERT" "$logs/debug-run.log" | head -40
fi
for step in ${STEPS:-plain verify spec}; do
  t1=$(date +%s)
  case $step in
    plain) "$bs" bench -m "$model" --device cuda -t 8 -p 512 -n 128 -r 3 --json ;;
    verify) "$bs" bench -m "$model" --device cuda -t 8 -p 1,2,4,8,16,32 -n 0 -r 5 --json ;;
    spec) "$bs" bench -m "$model" --device cuda -t 8 --draft "$drafter" -p 0 -n 0 \
            --spec-tokens 128 --json ;;
    spec-q8) "$bs" bench -m "$model" --device cuda -t 8 --draft "$drafter" -p 0 -n 0 \
            --spec-tokens 128 --draft-type q8_0 --json ;;
    replay) "$bs" bench -m "$model" --device cuda -t 8 --draft "$drafter" -p 0 -n 0 \
            --spec-tokens 256 --draft-type q8_0 --replay-tau 6.55 --json ;;
    # --verify exact on CUDA: verifies capped at the largest batch measured to compute every row
    # bit for bit like a one-token step (its log says where), at the replayed acceptance.
    replay-exact) "$bs" bench -m "$model" --device cuda -t 8 --draft "$drafter" -p 0 -n 0 \
            --spec-tokens 256 --draft-type q8_0 --replay-tau 6.55 --verify exact --json ;;
    replay-16) "$bs" bench -m "$model" --device cuda -t 8 --draft "$drafter" -p 0 -n 0 \
            --spec-tokens 256 --draft-type q8_0 --replay-tau 6.55 --block-size 16 --json ;;
    spec-fixed) "$bs" bench -m "$model" --device cuda -t 8 --draft "$drafter" -p 0 -n 0 \
            --spec-tokens 128 --draft-type q8_0 --block-size 16 --json ;;
    profile) BLOCKSPEC_PROFILE=1 "$bs" bench -m "$model" --device cuda -t 8 --draft "$drafter" \
            -p 0 -n 0 --spec-tokens 128 --draft-type q8_0 --block-size 16 --json ;;
    replay-profile) BLOCKSPEC_PROFILE=1 "$bs" bench -m "$model" --device cuda -t 8 \
            --draft "$drafter" -p 0 -n 0 --spec-tokens 256 --draft-type q8_0 --replay-tau 6.55 \
            --block-size 16 --json ;;
    profile-q4) BLOCKSPEC_PROFILE=1 "$bs" bench -m "$model" --device cuda -t 8 --draft "$drafter" \
            -p 0 -n 0 --spec-tokens 128 --draft-type q4_0 --block-size 16 --json ;;
    replay-q4) "$bs" bench -m "$model" --device cuda -t 8 --draft "$drafter" -p 0 -n 0 \
            --spec-tokens 256 --draft-type q4_0 --replay-tau 6.55 --json ;;
    profile-f16) BLOCKSPEC_PROFILE=1 "$bs" bench -m "$model" --device cuda -t 8 \
            --draft "$drafter" -p 0 -n 0 --spec-tokens 128 --block-size 16 --json ;;
    replay-f16) "$bs" bench -m "$model" --device cuda -t 8 --draft "$drafter" -p 0 -n 0 \
            --spec-tokens 256 --replay-tau 6.55 --json ;;
    # The drafter's head over the first DRAFT_VOCAB token ids only (--draft-vocab): its
    # step cost, and the replayed speedup (replay keeps the acceptance fixed: timing only).
    profile-vocab) BLOCKSPEC_PROFILE=1 "$bs" bench -m "$model" --device cuda -t 8 \
            --draft "$drafter" -p 0 -n 0 --spec-tokens 128 --draft-type q8_0 --block-size 16 \
            --draft-vocab "${DRAFT_VOCAB:-32768}" --json ;;
    replay-vocab) "$bs" bench -m "$model" --device cuda -t 8 --draft "$drafter" -p 0 -n 0 \
            --spec-tokens 256 --draft-type q8_0 --replay-tau 6.55 \
            --draft-vocab "${DRAFT_VOCAB:-32768}" --json ;;
    plot) "$bs" bench -m "$model" --device cuda -t 8 --draft "$drafter" -p 0 -n 0 \
            --spec-tokens 128 --draft-type q8_0 --replay-tau 6.55 --plot "$logs/plot.png" --json ;;
    # DDTree: a tree of N drafted tokens verified per step (random drafter: the verify's cost).
    tree-*) "$bs" bench -m "$model" --device cuda -t 8 --draft "$drafter" -p 0 -n 0 \
            --spec-tokens 64 --draft-type q8_0 --spec-tree "${step#tree-}" --json ;;
    serve) bash "$dist/device-serve.sh" "$bs" ;;
    depth) "$bs" bench -m "$model" --device cuda -t 8 -p 0 -n 128 -d 0,1024,32768 -r 3 --json ;;
  esac >"$logs/bench-$step.json" 2>"$logs/bench-$step.log" || { tail -20 "$logs/bench-$step.log"; exit 1; }
  echo "$step: $(( $(date +%s) - t1 )) s" | tee -a "$logs/times.txt"
  cat "$logs/bench-$step.json"
done
