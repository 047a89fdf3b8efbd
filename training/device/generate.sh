#!/usr/bin/env bash
# On the GPU machine, after stage.sh: generation only. The target answers the training prompts
# (training/generate.py: chat template, batched, resumable), and the shards come back packed, so
# the data can be kept here and staged again for a later training job (train.sh resumes from
# /tmp/bs/gen when that folder holds them).
#
#   bash training/device/generate.sh     # env: BUDGET (520 s), PROMPTS, GEN_ARGS; carry .whl
# Writes $OUT/gen.tar.xz.NN (<= 15 MiB parts) and $OUT/gen-status.json.
set -uo pipefail
cd "$(dirname "$0")/../.."
BUDGET=${BUDGET:-520}
BS="${BLOCKSPEC_STAGE:-/tmp/bs}"
OUT="${OUT:-$BS/out}"
PROMPTS="${PROMPTS:-training/data/prompts.jsonl.gz}"
mkdir -p "$OUT"
if ! python3 -c 'import gguf' 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1 BLOCKSPEC_TORCH_CACHE="$BS/cache" TOKENIZERS_PARALLELISM=false
[[ -f "$BS/target.gguf" ]] || { echo "no $BS/target.gguf: run stage.sh first"; exit 1; }
t0=$(date +%s)
python3 -m training.generate --target "$BS/target.gguf" --prompts "$PROMPTS" --out "$BS/${GEN_DIR:-gen}" \
  --time-budget $(( BUDGET - 40 )) ${GEN_ARGS:-}
echo "generation: $(( $(date +%s) - t0 )) s"
cp "$BS/${GEN_DIR:-gen}/status.json" "$OUT/${GEN_DIR:-gen}-status.json"
tar -C "$BS" -cf - "${GEN_DIR:-gen}" | xz -T0 -6 | split -b 15M -d - "$OUT/${GEN_DIR:-gen}.tar.xz."
ls -la "$OUT"
