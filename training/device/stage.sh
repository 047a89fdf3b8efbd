#!/usr/bin/env bash
# On the GPU machine: take one carried chunk folder (made by split.sh) into /tmp/bs/chunks; once every chunk of
# the manifest is there, reassemble /tmp/bs/target.gguf and check its SHA-256 (the chunks are then removed).
# Idempotent: a repeated call re-checks and overwrites its chunk. /tmp survives only while calls follow each
# other closely (the machine goes back when idle), so issue the staging calls back to back.
#
#   bash training/device/stage.sh .stage/NN
set -euo pipefail
DIR="${1:?usage: stage.sh .stage/NN}"
BS="${BLOCKSPEC_STAGE:-/tmp/bs}"
mkdir -p "$BS/chunks"
M="$DIR/MANIFEST"
[[ -f "$M" ]] || { echo "no $M (was the folder carried?)" >&2; exit 1; }
name=$(awk '$1=="name"{print $2}' "$M"); sha=$(awk '$1=="sha256"{print $2}' "$M")
n=$(awk '$1=="chunks"{print $2}' "$M")
if [[ -f "$BS/target.gguf" && -f "$BS/target.ok" && "$(cat "$BS/target.ok")" == "$sha" ]]; then
  echo "target already staged: $BS/target.gguf ($name, sha256 $sha)"; exit 0
fi
for f in "$DIR"/part*; do
  c=$(basename "$f")
  want=$(awk -v c="$c" '$1=="chunk" && $2==c {print $4}' "$M")
  got=$(sha256sum "$f" | cut -d' ' -f1)
  [[ "$got" == "$want" ]] || { echo "$f: sha256 $got, manifest says $want" >&2; exit 1; }
  cp "$f" "$BS/chunks/$c.tmp" && mv "$BS/chunks/$c.tmp" "$BS/chunks/$c"
  echo "chunk $c ok"
done
have=$(ls "$BS/chunks" | grep -vc '\.tmp$' || true)
missing=$(awk '$1=="chunk"{print $2}' "$M" | while read -r c; do [[ -f "$BS/chunks/$c" ]] || echo "$c"; done | tr '\n' ' ')
if [[ -n "$missing" ]]; then
  echo "STAGED $have/$n chunks; missing: $missing"; df -h /tmp | tail -1; exit 0
fi
echo "all $n chunks here: reassembling"
awk '$1=="chunk"{print $2}' "$M" | while read -r c; do cat "$BS/chunks/$c"; done > "$BS/target.gguf.tmp"
got=$(sha256sum "$BS/target.gguf.tmp" | cut -d' ' -f1)
if [[ "$got" != "$sha" ]]; then
  echo "REASSEMBLY FAILED: sha256 $got, expected $sha" >&2; rm -f "$BS/target.gguf.tmp"; exit 1
fi
mv "$BS/target.gguf.tmp" "$BS/target.gguf"
echo "$sha" > "$BS/target.ok"
echo "$name" > "$BS/target.name"
rm -rf "$BS/chunks"
echo "TARGET READY: $BS/target.gguf ($name, $(stat -c %s "$BS/target.gguf") bytes, sha256 $sha OK)"
