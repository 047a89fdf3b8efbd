#!/usr/bin/env bash
# Build the llama.cpp reference CPU tools from the SAME llama.cpp sources that
# blockspec's Rust crates build on: the tree vendored in the crates.io crate
# llama-cpp-sys-2 (version pinned below), out of tree, in
#   ${BLOCKSPEC_LLAMA_REF:-$HOME/.cache/blockspec/llama-ref}
#
# The crate ships only llama.cpp's libraries (include/ src/ common/ ggml/
# vendor/ + tools/mtmd); tools/server, tools/tokenize, tools/llama-bench,
# tools/cli, tools/completion are NOT in it (only their README.md). So:
#   * wanted targets whose sources exist in the tree are built with llama.cpp's
#     own CMake (this is what happens for a full llama.cpp checkout passed in
#     LLAMA_CPP_SRC);
#   * if llama-server is missing (the crate case), scripts/ref/llama-ref-server
#     is built instead: libllama + libllama-common from the vendored tree and a
#     small HTTP server exposing the llama-server endpoints the fixture scripts
#     use (/health /props /tokenize /detokenize /apply-template /completion, and
#     /parse for llama.cpp's parse of a chat reply), implemented with the same
#     common/ helpers llama-server uses.
#
# Env: LLAMA_CPP_SRC (source tree; default: the vendored crate tree),
#      LLAMA_SYS_VERSION (crate version, default 0.1.161), BLOCKSPEC_LLAMA_REF,
#      JOBS (default 2), CARGO_HOME.
# Prints the paths of the built binaries at the end.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LLAMA_SYS_VERSION="${LLAMA_SYS_VERSION:-0.1.161}"
OUT="${BLOCKSPEC_LLAMA_REF:-$HOME/.cache/blockspec/llama-ref}"
JOBS="${JOBS:-2}"

log() { printf '[build-llama] %s\n' "$*" >&2; }

if [[ -n "${LLAMA_CPP_SRC:-}" ]]; then
  SRC="$LLAMA_CPP_SRC"
  SRC_DESC="llama.cpp tree at $SRC"
else
  shopt -s nullglob
  cands=("${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/llama-cpp-sys-2-"$LLAMA_SYS_VERSION"/llama.cpp)
  shopt -u nullglob
  if ((${#cands[@]} == 0)); then
    log "llama-cpp-sys-2-$LLAMA_SYS_VERSION not found under ${CARGO_HOME:-$HOME/.cargo}/registry/src;"
    log "run 'cargo fetch' in the workspace first (or set LLAMA_CPP_SRC)"
    exit 1
  fi
  SRC="${cands[0]}"
  SRC_DESC="llama.cpp vendored in llama-cpp-sys-2 $LLAMA_SYS_VERSION"
fi
SRC="$(cd "$SRC" && pwd)"
[[ -f "$SRC/CMakeLists.txt" && -f "$SRC/include/llama.h" ]] || { log "$SRC is not a llama.cpp tree"; exit 1; }

case "$OUT" in
  "$(cd "$HERE/../.." && pwd)"/*) log "refusing to build inside the repo: $OUT"; exit 1 ;;
esac
mkdir -p "$OUT"

# Content hash of the source tree (identifies the sources when there is no git).
TREE_SHA="$(cd "$SRC" && find . -type f ! -path './.git/*' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)"
log "source: $SRC_DESC"
log "        $SRC (tree sha256 $TREE_SHA)"

CMAKE_FLAGS=(
  -DCMAKE_BUILD_TYPE=Release
  -DLLAMA_CURL=OFF
  -DLLAMA_OPENSSL=OFF
  -DLLAMA_BUILD_TESTS=OFF
)
# On CPUs with AMX (Intel Sapphire Rapids and later) GGML_NATIVE compiles ggml's AMX weight
# buffer type in, and its matmul segfaults on the first evaluation (llama.cpp issue 20824).
# blockspec leaves that buffer type out at run time (crates/ggml, extra_buffer_types), so the
# reference is built without it: repacked weights then take the same AVX-512 path in both.
if grep -qw amx_int8 /proc/cpuinfo 2>/dev/null; then
  CMAKE_FLAGS+=(-DCMAKE_C_FLAGS="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
    -DCMAKE_CXX_FLAGS="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16")
fi
# Without git metadata llama.cpp's build info says "commit unknown": name the crate instead.
if ! git -C "$SRC" rev-parse --show-toplevel >/dev/null 2>&1 || [[ -z "${LLAMA_CPP_SRC:-}" ]]; then
  CMAKE_FLAGS+=(-DLLAMA_BUILD_COMMIT="llama-cpp-sys-2-$LLAMA_SYS_VERSION")
fi

# target -> source directory inside the tree
declare -A TARGET_DIR=(
  [llama-server]=tools/server
  [llama-tokenize]=tools/tokenize
  [llama-bench]=tools/llama-bench
  [llama-cli]=tools/cli
  [llama-completion]=tools/completion
)
WANTED=(llama-server llama-tokenize llama-bench llama-cli llama-completion)
AVAILABLE=()
for t in "${WANTED[@]}"; do
  d="$SRC/${TARGET_DIR[$t]}"
  if [[ -f "$d/CMakeLists.txt" ]] && compgen -G "$d/*.cpp" >/dev/null; then
    AVAILABLE+=("$t")
  else
    log "dropping $t: no sources in ${TARGET_DIR[$t]}/ of this tree"
  fi
done

BUILT=()
if ((${#AVAILABLE[@]})); then
  BUILD_DIR="$OUT/build-tools"
  log "configuring llama.cpp tools in $BUILD_DIR"
  cmake -S "$SRC" -B "$BUILD_DIR" "${CMAKE_FLAGS[@]}" >"$OUT/cmake-tools.log"
  log "building ${AVAILABLE[*]} (-j$JOBS)"
  cmake --build "$BUILD_DIR" --config Release -j "$JOBS" --target "${AVAILABLE[@]}"
  for t in "${AVAILABLE[@]}"; do BUILT+=("$BUILD_DIR/bin/$t"); done
fi

if [[ " ${AVAILABLE[*]} " != *" llama-server "* ]]; then
  BUILD_DIR="$OUT/build"
  log "llama-server sources missing: building llama-ref-server (libllama + common from $SRC) in $BUILD_DIR"
  cmake -S "$HERE/llama-ref-server" -B "$BUILD_DIR" -DLLAMA_SRC="$SRC" \
    -DBLOCKSPEC_SRC_DESC="$SRC_DESC, tree sha256 $TREE_SHA" "${CMAKE_FLAGS[@]}" >"$OUT/cmake-ref.log"
  grep -E "llama.cpp version|GGML_NATIVE|Including CPU backend|Adding CPU backend variant" "$OUT/cmake-ref.log" >&2 || true
  log "building llama-ref-server (-j$JOBS)"
  cmake --build "$BUILD_DIR" --config Release -j "$JOBS" --target llama-ref-server
  BUILT+=("$BUILD_DIR/bin/llama-ref-server")
fi

{
  echo "source: $SRC_DESC"
  echo "path: $SRC"
  echo "tree_sha256: $TREE_SHA"
  echo "cmake_flags: ${CMAKE_FLAGS[*]}"
  echo "built: ${BUILT[*]}"
  echo "missing: $(for t in "${WANTED[@]}"; do [[ " ${AVAILABLE[*]} " == *" $t "* ]] || printf '%s ' "$t"; done)"
} >"$OUT/build-info.txt"

for b in "${BUILT[@]}"; do
  [[ -x "$b" ]] || { log "expected binary missing: $b"; exit 1; }
  echo "$b"
done
if [[ " ${AVAILABLE[*]} " != *" llama-bench "* ]]; then
  log "NOTE: llama-bench could not be built (its sources are not in $SRC_DESC)"
fi
