#!/usr/bin/env bash
# Runs ON the GPU machine: the side-by-side of issue 5 on the real Qwen2.5-Coder-1.5B-Instruct
# Q4_K_M target, in one run, same prompts (training/eval_prompts.json: 20 code + 10 chat, chat
# template, temperature 0, 256 new tokens), every engine behind its own HTTP server:
#   bs-plain       blockspec serve, no drafter
#   bs-dflash      blockspec serve --draft <our trained DFlash drafter> (chains)
#   bs-tree-auto   the same drafter, --spec-tree auto (DDTree: each step plain, chain or a tree,
#                  whichever is measured fastest)
#   bs-tree22      the same drafter, --spec-tree 22 (a tree of 22 drafted nodes every step; any
#                  bs-treeN likewise)
#   llama-plain    llama-server (llama.cpp b11434)
#   llama-dflash   llama-server -md <the same drafter> --spec-type draft-dflash
#   bs-draft05     blockspec serve --draft <Qwen2.5-Coder-0.5B-Instruct> (classic draft model)
#   llama-simple   llama-server -md <the 0.5B> --spec-type draft-simple
# CONFIGS picks them (default: bs-plain bs-dflash bs-tree-auto bs-tree22 llama-plain
# llama-dflash; the two 0.5B configs only when named, so the 0.5B need not be staged).
# The files are too large for one call, so the phases are separate calls issued back to back
# (the machine keeps /tmp only while calls follow each other closely):
#   setup     (LLAMA_PATCH_QWEN2=1: patch llama.cpp so draft-dflash runs on Qwen2 targets)
#             carry target/gpu-dist (built by LLAMA_PEER=1 scripts/gpu/build-binary.sh) and,
#             in the call before or the same one, target/gpu-cache (`cache` phase): unpacks our
#             CUDA ggml and starts the llama.cpp CUDA build in the background (setsid: it
#             outlives the call)
#   cache [DIR]  carry target/gpu-cache (or DIR with some of its parts): keeps it in /tmp/cmp for `setup`
#   drafter   carry .stage-drafter (the drafter in llama.cpp's spelling, which blockspec reads too);
#             a drafter too large to travel beside the repository is staged instead like the
#             target (STAGE_DIR=.stage-dl training/device/split.sh FILE N, then stage.sh with
#             BLOCKSPEC_STAGE=/tmp/bsdraft) and `run` is told DRAFTER=/tmp/bsdraft/target.gguf
#   (the target and the 0.5B: training/device/stage.sh with BLOCKSPEC_STAGE=/tmp/bs and /tmp/bs05)
#   status    what is staged and how far the llama.cpp build is (prints, changes nothing)
#   run       waits for the llama.cpp build (BUILD_WAIT s, default 420: also when CONFIGS has no
#             llama config, so that the build does not share the CPU with a measurement), runs
#             the servers of CONFIGS one after another, writes $OUT/compare.tar.gz (per-config
#             JSON with every reply, timings, logs; rewritten after each config) and prints the
#             summary. A config is started only while RUN_BUDGET s (default 540) since the start
#             of the phase leave room for it (CONFIG_EST s, default 60); the ones left are
#             printed as the CONFIGS of a second call with KEEP=1, which adds to these results.
#             DEVICE (default cuda), BLOCKSPEC_BIN, LLAMA_SERVER and CLIENT_ARGS (extra
#             compare-client.py flags) allow a dry run of the phase elsewhere, e.g. on a CPU:
#             CMP=/tmp/cmp-dry DEVICE=cpu BLOCKSPEC_BIN=target/release/blockspec TARGET=T.gguf
#             DRAFTER=D.gguf CONFIGS="bs-plain bs-tree22" CLIENT_ARGS="--limit 2 --max-tokens 16"
set -euo pipefail
root=$(pwd)
CMP=${CMP:-/tmp/cmp}
mkdir -p "$CMP"
phase=${1:?usage: device-compare.sh cache|setup|drafter|status|run}
case $phase in
cache)
  # Additive, so the cache's parts can also come one per call (cache .stage-cache/NN) when the
  # repository leaves too little of a call's 64 MiB for all of them.
  mkdir -p "$CMP/gpu-cache" && cp "${2:-target/gpu-cache}"/ggml-cuda-* "$CMP/gpu-cache/" && ls -la "$CMP/gpu-cache"
  ;;
setup)
  rm -rf "$CMP/gpu-dist" && cp -r target/gpu-dist "$CMP/gpu-dist"
  # Our CUDA ggml: device-bench.sh unpacks it from the cache (or builds it) and stops there.
  WORK="$CMP/work" STEPS=none bash "$CMP/gpu-dist/device-bench.sh"
  # NO_LLAMA=1: blockspec configs only (no llama.cpp build to wait for).
  [[ -n "${NO_LLAMA:-}" ]] && { echo "no llama.cpp build (NO_LLAMA)"; exit 0; }
  [[ -f "$CMP/gpu-dist/llama-src.tar.xz" ]] || { echo "gpu-dist has no llama-src.tar.xz: build it with LLAMA_PEER=1" >&2; exit 1; }
  # llama.cpp with CUDA, in the background; `run` waits for $CMP/llama.done.
  rm -f "$CMP/llama.done"
  setsid bash -c '
    set -o pipefail
    cd "$1" && rm -rf llama && mkdir llama && cd llama && tar xJf ../gpu-dist/llama-src.tar.xz &&
    mkdir -p llama.cpp/scripts && cp ../gpu-dist/ui-assets.cmake llama.cpp/scripts/ &&
    if [[ -n "${LLAMA_PATCH_QWEN2:-}" ]]; then
      # b11434 publishes no layer inputs for qwen2, so draft-dflash aborts on Qwen2 targets
      # (GGML_ASSERT t_layer_inp). This adds the one line its llama graph has.
      sed -i "s/^\(\s*\)ggml_tensor \* inpSA = inpL;/\1res->t_layer_inp[il] = inpL;\n\n\1ggml_tensor * inpSA = inpL;/" \
        llama.cpp/src/models/qwen2.cpp && grep -q "t_layer_inp" llama.cpp/src/models/qwen2.cpp
    fi &&
    cmake -S llama.cpp -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON \
      -DCMAKE_CUDA_ARCHITECTURES=${CUDA_ARCH:-90} -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
      -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
      -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_APP=OFF &&
    cmake --build build -j"$(nproc)" --target llama-server
    echo $? > "$1/llama.done"' _ "$CMP" >"$CMP/llama-build.log" 2>&1 < /dev/null &
  echo "llama.cpp build started in the background (log: $CMP/llama-build.log)"
  ;;
drafter)
  cp .stage-drafter/*.gguf "$CMP/drafter.gguf" && ls -la "$CMP/drafter.gguf"
  ;;
status)
  for f in /tmp/bs/target.gguf /tmp/bsdraft/target.gguf /tmp/bs05/target.gguf "$CMP/drafter.gguf"; do
    [[ -f "$f" ]] && echo "staged: $f ($(stat -c %s "$f") bytes)"
  done
  for d in /tmp/bs /tmp/bsdraft /tmp/bs05; do
    [[ -d "$d/chunks" ]] && echo "$d: $(ls "$d/chunks" | grep -vc '\.tmp$' || true) chunks so far"
  done
  if [[ -f "$CMP/llama.done" ]]; then echo "llama.cpp build done (rc $(cat "$CMP/llama.done"))"
  elif [[ -f "$CMP/llama-build.log" ]]; then echo "llama.cpp build: $(tail -1 "$CMP/llama-build.log" | cut -c1-120)"
  else echo "llama.cpp build not started"; fi
  df -h /tmp | tail -1
  ;;
run)
  OUT=${OUT:-$CMP/out}
  logs="$CMP/results"
  [[ -n "${KEEP:-}" ]] || rm -rf "$logs"   # KEEP=1: add to an earlier run's results
  mkdir -p "$logs" "$OUT"
  pack() { tar -C "$logs" -czf "$OUT/compare.tar.gz" . 2>/dev/null || true; }
  trap pack EXIT
  t_run=$(date +%s)
  configs=(${CONFIGS:-bs-plain bs-dflash bs-tree-auto bs-tree22 llama-plain llama-dflash})
  T=${TARGET:-/tmp/bs/target.gguf}
  D05=${DRAFT_MODEL:-/tmp/bs05/target.gguf}
  DF=${DRAFTER:-$CMP/drafter.gguf}
  # Only the files the chosen configs read must be there.
  need=("$T") llama=
  for cfg in "${configs[@]}"; do
    case $cfg in
      bs-plain | bs-dflash | bs-tree-auto | bs-tree[0-9]* | bs-draft05) ;;
      llama-plain | llama-dflash | llama-simple) llama=1 ;;
      *) echo "unknown config $cfg" >&2; exit 1 ;;
    esac
    case $cfg in
      bs-dflash | bs-tree* | llama-dflash) need+=("$DF") ;;
      bs-draft05 | llama-simple) need+=("$D05") ;;
    esac
  done
  need=($(printf '%s\n' "${need[@]}" | sort -u))
  for f in "${need[@]}"; do [[ -f "$f" ]] || { echo "missing $f (staged?)" >&2; exit 1; }; done
  # Wait for the llama.cpp build when a config needs it, and also when it is under way: it
  # would take the CPU from the servers being measured.
  if [[ -n "$llama" || ( -f "$CMP/llama-build.log" && ! -f "$CMP/llama.done" ) ]]; then
    t0=$(date +%s)
    until [[ -f "$CMP/llama.done" ]]; do
      (( $(date +%s) - t0 < ${BUILD_WAIT:-420} )) || { tail -20 "$CMP/llama-build.log"; echo "llama.cpp build not done" >&2; exit 1; }
      sleep 5
    done
    [[ "$(cat "$CMP/llama.done")" == 0 ]] || { tail -40 "$CMP/llama-build.log"; exit 1; }
    echo "waited $(( $(date +%s) - t0 )) s for the llama.cpp build" | tee -a "$logs/times.txt"
    cp "$CMP/llama-build.log" "$logs/"
  fi
  libdirs=$(find "$CMP/work/ggml-build" -name 'libggml*.so*' -printf '%h\n' 2>/dev/null | sort -u | paste -sd: || true)
  # Our small-batch kernels, built by device-bench.sh in the setup phase (MMSQ=0: ggml's only).
  # llama.cpp's own ggml has no hook, so the variable changes nothing there.
  if [[ "${MMSQ:-1}" != 0 && -f "$CMP/work/libbs-mmsq.so" ]]; then
    export BLOCKSPEC_MMSQ_LIB="$CMP/work/libbs-mmsq.so"
    echo "mmsq kernels: $BLOCKSPEC_MMSQ_LIB" | tee -a "$logs/times.txt"
  fi
  bs=${BLOCKSPEC_BIN:-$CMP/gpu-dist/blockspec}
  ls=${LLAMA_SERVER:-$CMP/llama/build/bin/llama-server}
  dev=${DEVICE:-cuda}
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$logs/gpu.txt" 2>&1 || true
  sha256sum "${need[@]}" >>"$logs/models.sha256"
  port=8095
  for i in "${!configs[@]}"; do
    cfg=${configs[$i]}
    if (( $(date +%s) - t_run + ${CONFIG_EST:-60} > ${RUN_BUDGET:-540} )); then
      echo "out of time for this call; run the rest in the next one:" \
        "CONFIGS=\"${configs[*]:$i}\" KEEP=1 TARGET=$T DRAFTER=$DF bash scripts/gpu/device-compare.sh run" |
        tee -a "$logs/times.txt"
      break
    fi
    case $cfg in
      bs-plain) cmd=("$bs" serve -m "$T" --device "$dev" -c 4096 --port $port) ;;
      bs-dflash) cmd=("$bs" serve -m "$T" --device "$dev" -c 4096 --port $port --draft "$DF") ;;
      bs-tree-auto) cmd=("$bs" serve -m "$T" --device "$dev" -c 4096 --port $port --draft "$DF"
                         --spec-tree auto) ;;
      bs-tree[0-9]*) cmd=("$bs" serve -m "$T" --device "$dev" -c 4096 --port $port --draft "$DF"
                          --spec-tree "${cfg#bs-tree}") ;;
      bs-draft05) cmd=("$bs" serve -m "$T" --device "$dev" -c 4096 --port $port --draft "$D05") ;;
      llama-plain) cmd=("$ls" -m "$T" -ngl 99 -fa on -c 4096 --port $port) ;;
      llama-dflash) cmd=("$ls" -m "$T" -ngl 99 -fa on -c 4096 --port $port -md "$DF" -ngld 99
                         --spec-type draft-dflash --spec-draft-n-max 15) ;;
      llama-simple) cmd=("$ls" -m "$T" -ngl 99 -fa on -c 4096 --port $port -md "$D05" -ngld 99
                         --spec-type draft-simple) ;;
      *) echo "unknown config $cfg" >&2; exit 1 ;;
    esac
    echo "$cfg: ${cmd[*]}" >>"$logs/commands.txt"
    LD_LIBRARY_PATH="$libdirs:${LD_LIBRARY_PATH:-}" "${cmd[@]}" >"$logs/server-$cfg.log" 2>&1 &
    pid=$!
    t1=$(date +%s)
    python3 "$root/scripts/gpu/compare-client.py" --port $port --name "$cfg" \
      --prompts "$root/training/eval_prompts.json" --out "$logs/$cfg.json" ${CLIENT_ARGS:-} \
      || { tail -30 "$logs/server-$cfg.log"; }
    kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true
    echo "$cfg: $(( $(date +%s) - t1 )) s" | tee -a "$logs/times.txt"
    pack
  done
  python3 "$root/scripts/gpu/compare-client.py" --summarize "$logs" | tee "$logs/summary.txt"
  ;;
*) echo "unknown phase $phase" >&2; exit 1 ;;
esac
