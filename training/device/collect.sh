#!/usr/bin/env bash
# Here, after a train.sh call: reassemble the drafter from the files that came back from $OUT, check its
# SHA-256 against summary.json, and put the run's record in training/runs/NAME/.
#
#   training/device/collect.sh FILES_AT_DIR [NAME]
#
# Writes training/runs/NAME/{summary.json,config.json,loss.csv,loss.png,train.log} and
# training/drafters/NAME.gguf (the q8_0 `dflash` GGUF without tokenizer, blockspec spelling; *.gguf is git-ignored:
# `git add -f` it; `blockspec convert-draft NAME.gguf -o L.gguf --type keep --target T.gguf` makes llama.cpp's), and
# unpacks it into a z-lab HF dir under /tmp for the reference (export unpack).
set -euo pipefail
cd "$(dirname "$0")/../.."
SRC="${1:?usage: collect.sh FILES_AT_DIR [NAME]}"
NAME="${2:-qwen2.5-coder-1.5b-instruct-dflash-q8_0}"
d=$(dirname "$(find "$SRC" -name summary.json | head -n1)")
[[ -f "$d/summary.json" ]] || { echo "no summary.json under $SRC" >&2; exit 1; }
mkdir -p "training/runs/$NAME" training/drafters
for f in summary.json loss.csv loss.png train.log; do [[ -f "$d/$f" ]] && cp "$d/$f" "training/runs/$NAME/"; done
if [[ ! -f "training/runs/$NAME/loss.png" && -f "$d/loss.csv" ]]; then
  python3 training/plot_loss.py "$d/loss.csv" "training/runs/$NAME/loss.png" || echo "(no matplotlib here: plot on a machine that has it)"
fi
out="training/drafters/$NAME.gguf"
cat $(ls "$d"/draft-q8_0.gguf.part* | sort) > "$out.tmp"
want=$(python3 -c "import json;print(json.load(open('$d/summary.json'))['draft_gguf']['sha256'])")
got=$(sha256sum "$out.tmp" | cut -d' ' -f1)
[[ "$got" == "$want" ]] || { echo "drafter sha256 $got, summary says $want" >&2; rm -f "$out.tmp"; exit 1; }
mv "$out.tmp" "$out"
echo "drafter: $out ($(stat -c %s "$out") bytes, sha256 $got OK)"
VENV="${BLOCKSPEC_VENV:-$HOME/.cache/blockspec/venv}"
python3 -c "import json;json.dump(json.load(open('$d/summary.json'))['drafter_config'],open('training/runs/$NAME/config.json','w'),indent=2)"
"$VENV/bin/python" -m training.export unpack --gguf "$out" --out "/tmp/$NAME-hf" --dtype float32 \
  --config "training/runs/$NAME/config.json"
echo "z-lab HF dir (dequantized q8_0 weights): /tmp/$NAME-hf"
echo "llama.cpp spelling (adds the target's tokenizer): target/release/blockspec convert-draft $out -o /tmp/$NAME-llama.gguf --type keep --target TARGET.gguf"
python3 -c "import json;s=json.load(open('$d/summary.json'));print(json.dumps({k:s[k] for k in ('generation','train_runs')},indent=1)[:3000]);print('tau (z-lab, GPU):', (s.get('tau_zlab') or {}).get('summary'))"
