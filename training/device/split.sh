#!/usr/bin/env bash
# Split the target GGUF into chunks that travel to the GPU machine one per device call.
#
#   training/device/split.sh [TARGET.gguf] [CHUNK_MIB]
#   STAGE_DIR=.stage05 training/device/split.sh OTHER.gguf     # a second file (e.g. a draft model) beside it
#
# A call carries at most 64 MiB: the repository that travels (tracked + untracked-not-ignored files) plus
# the carried folders. CHUNK_MIB defaults to 64 - (what travels, measured now, + .whl) - 2 MiB of margin, so
# run this in the checkout that will make the calls, after committing what will travel. Writes
# .stage/NN/ (git-ignored), one folder per call, each with one chunk and MANIFEST (chunk count, sizes and
# SHA-256 of every chunk and of the whole file); prints the carry folder of each call.
set -euo pipefail
cd "$(dirname "$0")/../.."
SRC="${1:-$HOME/.cache/blockspec/models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf}"
STAGE="${STAGE_DIR:-.stage}"
[[ "$STAGE" == .stage* && "$STAGE" != */* ]] || { echo "STAGE_DIR must be a .stage* folder of the repo root (git-ignored)" >&2; exit 1; }
EXPECT_1_5B=cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046
travel=$( { git ls-files -z; git ls-files -z --others --exclude-standard; } | xargs -0 -r stat -c %s -- 2>/dev/null \
          | awk '{s+=$1} END {print s+0}')
whl=$(du -sb .whl 2>/dev/null | cut -f1 || echo 0)
MiB=1048576
CHUNK_MIB="${2:-$(( 64 - (travel + ${whl:-0} + MiB - 1) / MiB - 2 ))}"
(( CHUNK_MIB >= 8 )) || { echo "only $CHUNK_MIB MiB left per call: the travelling tree is too large" >&2; exit 1; }
echo "travelling tree $((travel / 1024)) KiB, .whl $(( ${whl:-0} / 1024 )) KiB -> chunks of $CHUNK_MIB MiB"
sha=$(sha256sum "$SRC" | cut -d' ' -f1)
size=$(stat -c %s "$SRC")
name=$(basename "$SRC")
if [[ "$name" == qwen2.5-coder-1.5b-instruct-q4_k_m.gguf && "$sha" != "$EXPECT_1_5B" ]]; then
  echo "$SRC: SHA-256 $sha, expected $EXPECT_1_5B" >&2; exit 1
fi
rm -rf "$STAGE"
mkdir -p "$STAGE/tmp"
split -b "${CHUNK_MIB}M" -d -a 2 "$SRC" "$STAGE/tmp/part"
n=$(ls "$STAGE/tmp" | wc -l)
{
  echo "name $name"; echo "size $size"; echo "sha256 $sha"; echo "chunks $n"
  for f in "$STAGE"/tmp/part*; do echo "chunk $(basename "$f") $(stat -c %s "$f") $(sha256sum "$f" | cut -d' ' -f1)"; done
} > "$STAGE/MANIFEST"
for f in "$STAGE"/tmp/part*; do
  k=${f##*part}
  mkdir -p "$STAGE/$k"
  mv "$f" "$STAGE/$k/"
  cp "$STAGE/MANIFEST" "$STAGE/$k/MANIFEST"
done
rmdir "$STAGE/tmp"
echo "$n chunks of <= $CHUNK_MIB MiB for $name ($size bytes, sha256 $sha):"
for d in "$STAGE"/[0-9]*; do echo "  carry [\"$d\"]: bash training/device/stage.sh $d"; done
