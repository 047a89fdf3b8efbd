#!/usr/bin/env bash
# On the GPU machine, after stage.sh has put the target at /tmp/bs/target.gguf: one call's worth of the
# pipeline, resuming where the last call stopped (state in /tmp/bs, kept while calls follow each other):
#   0. optionally (SELF_INSTRUCT_SECONDS > 0) let the target write more prompts (training/self_instruct.py);
#   1. generate target responses for training/data/prompts.jsonl.gz until GEN_SECONDS of generation in total
#      (or all prompts) are done;
#   2. train the drafter (training/train.py --train-seconds TRAIN_SECONDS, checkpoint + resume);
#   3. export every call: q8_0 `dflash` GGUF without the tokenizer (gguf-py; blockspec spelling), split into <= 15 MiB parts, loss.csv,
#      loss.png, summary.json, the log -> $OUT (8 files, < 64 MiB: what comes back);
#   4. once training is done: tau of the exported q8_0 weights in the z-lab reference dflash_generate on the
#      held-out prompts (training/eval_prompts.json), GPU bf16 -> summary.json.
# Carry `.whl` (training/device/fetch-wheels.sh: gguf + dflash wheels).
#
#   bash training/device/train.sh     # env: BUDGET GEN_SECONDS TRAIN_SECONDS EVAL_SECONDS FORCE_EVAL TRAIN_ARGS
#                                     #      SELF_INSTRUCT_SECONDS (default 0: off) GEN_FROM ...
set -uo pipefail
cd "$(dirname "$0")/../.."
start=$(date +%s)
BUDGET=${BUDGET:-550}                 # seconds this call may take (device calls stop at 600)
GEN_SECONDS=${GEN_SECONDS:-330}       # generation time over all calls (includes the first model load)
TRAIN_SECONDS=${TRAIN_SECONDS:-400}   # training-loop time over all calls
EVAL_SECONDS=${EVAL_SECONDS:-150}     # reference tau evaluation (started prompts finish)
EXPORT_SECONDS=${EXPORT_SECONDS:-60}
BS="${BLOCKSPEC_STAGE:-/tmp/bs}"
OUT="${OUT:-$BS/out}"
T="${TARGET:-$BS/target.gguf}"
PROMPTS="${PROMPTS:-training/data/prompts.jsonl.gz}"
PY="${PYTHON:-python3}"
mkdir -p "$OUT" "$BS"
LOG="$OUT/train.log"
exec > >(tee -a "$LOG") 2>&1
left() { echo $(( BUDGET - ($(date +%s) - start) )); }
echo "== train.sh $(date -u +%FT%TZ), budget ${BUDGET}s"
export PYTHONUNBUFFERED=1 BLOCKSPEC_TORCH_CACHE="$BS/cache" TOKENIZERS_PARALLELISM=false

if ! "$PY" -c 'import gguf, dflash.model' 2>/dev/null; then
  if [[ -d .whl ]]; then
    [[ -d /tmp/site/dflash ]] || "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  fi
  "$PY" -c 'import gguf, dflash.model' || { echo "gguf / dflash missing: carry .whl (fetch-wheels.sh)"; exit 1; }
fi
"$PY" -c 'import torch, transformers; print("torch", torch.__version__, "cuda", torch.cuda.is_available(), "transformers", transformers.__version__)'
[[ -f "$T" ]] || { echo "no target at $T: run stage.sh first (all chunks)"; exit 1; }

# 0. optional: prompts the target writes itself, appended before generation starts (SELF_INSTRUCT_SECONDS > 0)
SELF_INSTRUCT_SECONDS=${SELF_INSTRUCT_SECONDS:-0}
if (( SELF_INSTRUCT_SECONDS > 0 )) && [[ ! -f "$BS/prompts-all.jsonl" && ! -d "$BS/gen" ]]; then
  echo "== self_instruct (budget ${SELF_INSTRUCT_SECONDS}s)"
  "$PY" -m training.self_instruct --target "$T" --prompts "$PROMPTS" --out "$BS/prompts-all.jsonl.tmp" \
    --time-budget "$SELF_INSTRUCT_SECONDS" ${SELF_INSTRUCT_ARGS:-} && mv "$BS/prompts-all.jsonl.tmp" "$BS/prompts-all.jsonl"
fi
[[ -f "$BS/prompts-all.jsonl" ]] && PROMPTS="$BS/prompts-all.jsonl"

# 0b. responses generated in an earlier lease (training/device/generate.sh) and committed as
#     training/data/gen/*.tar.xz: GEN_FROM="training/data/gen/a.tar.xz ..." unpacks them into $BS/gen
#     (shards renamed shard-<archive>-NNNNN.jsonl) and generation is skipped.
if [[ -n "${GEN_FROM:-}" && ! -f "$BS/gen/status.json" ]]; then
  mkdir -p "$BS/gen"
  for a in $GEN_FROM; do
    tmp=$(mktemp -d) && tar -C "$tmp" -xJf "$a" || exit 1
    k=$(basename "$a" .tar.xz)
    for f in "$tmp"/*/shard-*.jsonl; do mv "$f" "$BS/gen/shard-$k-${f##*/shard-}"; done
    rm -rf "$tmp"
  done
  echo '{"complete": true, "from": "'"$GEN_FROM"'"}' > "$BS/gen/status.json"
  echo "== responses from $GEN_FROM: $(ls "$BS"/gen/shard-*.jsonl | wc -l) shards"
fi

# 1. generation
used=$(cat "$BS/gen_seconds" 2>/dev/null || echo 0)
complete=$("$PY" -c "import json;print(json.load(open('$BS/gen/status.json'))['complete'])" 2>/dev/null || echo False)
if [[ "$complete" != True ]] && (( used < GEN_SECONDS )); then
  b=$(( GEN_SECONDS - used )); l=$(( $(left) - EXPORT_SECONDS - 30 )); (( b > l )) && b=$l
  if (( b > 60 )); then
    echo "== generate (budget ${b}s; ${used}s used before)"
    g0=$(date +%s)
    "$PY" -m training.generate --target "$T" --prompts "$PROMPTS" --out "$BS/gen" --time-budget "$b" ${GEN_ARGS:-}
    echo $(( used + $(date +%s) - g0 )) > "$BS/gen_seconds"
  fi
fi

# 2. training
done_flag() { "$PY" -c "import json;print(json.load(open('$BS/run/train.json'))['runs'][-1]['done'])" 2>/dev/null || echo False; }
trained() { "$PY" -c "import json;print(int(json.load(open('$BS/run/train.json'))['runs'][-1]['trained_s']))" 2>/dev/null || echo 0; }
if [[ "$(done_flag)" != True ]] && ls "$BS"/gen/shard-*.jsonl >/dev/null 2>&1; then
  rem=$(( TRAIN_SECONDS - $(trained) ))
  b=$(( $(left) - EXPORT_SECONDS ))   # train.py also stops by itself once TRAIN_SECONDS are trained
  if (( b > 90 )); then
    echo "== train (budget ${b}s, ${rem}s of training left)"
    "$PY" -m training.train --target "$T" --data "$BS/gen" --out "$BS/run" --train-seconds "$TRAIN_SECONDS" \
      --time-budget "$b" --ckpt-every 100 --log-every 10 ${TRAIN_ARGS:-}
  fi
fi

# 3. export (every call, so a lost machine loses at most one call)
if [[ -f "$BS/run/ckpt.pt" ]]; then
  echo "== export"
  rm -rf "$BS/draft-bf16" "$BS/draft-q8_0"
  "$PY" -m training.export hf --run "$BS/run" --out "$BS/draft-bf16" --dtype bfloat16 &&
  "$PY" -m training.export gguf --hf "$BS/draft-bf16" --target "$T" --out "$BS/draft-q8_0.gguf" --type q8_0 --no-tokenizer \
    --name "blockspec DFlash drafter for $(cat "$BS/target.name" 2>/dev/null || basename "$T")" &&
  "$PY" -m training.export unpack --gguf "$BS/draft-q8_0.gguf" --out "$BS/draft-q8_0" --dtype bfloat16 \
    --config "$BS/run/config.json" &&
  rm -f "$OUT"/draft-q8_0.gguf.part* &&
  split -b 15M -d -a 1 "$BS/draft-q8_0.gguf" "$OUT/draft-q8_0.gguf.part" &&
  cp "$BS/run/loss.csv" "$OUT/loss.csv"
  "$PY" training/plot_loss.py "$BS/run/loss.csv" "$OUT/loss.png" || true
fi

# 4. reference tau once training is done (FORCE_EVAL=1: again, e.g. with a larger EVAL_SECONDS)
[[ -n "${FORCE_EVAL:-}" ]] && rm -f "$BS/tau-zlab.json"
if [[ "$(done_flag)" == True && ! -f "$BS/tau-zlab.json" && -d "$BS/draft-q8_0" ]]; then
  b=$(( $(left) - 40 ))
  if (( b > 60 )); then
    (( b > EVAL_SECONDS )) && b=$EVAL_SECONDS
    echo "== eval_tau (z-lab dflash_generate, q8_0 weights, budget ${b}s)"
    "$PY" -m training.eval_tau --target "$T" --draft "$BS/draft-q8_0" --max-new 256 --time-budget "$b" \
      --out "$BS/tau-zlab.json.tmp" ${EVAL_ARGS:-} && mv "$BS/tau-zlab.json.tmp" "$BS/tau-zlab.json"
  fi
fi

# summary
"$PY" - "$BS" "$OUT" <<'PYEOF'
import hashlib, json, os, sys
bs, out = sys.argv[1], sys.argv[2]
def j(p):
    try:
        return json.load(open(os.path.join(bs, p)))
    except Exception:
        return None
g = os.path.join(bs, "draft-q8_0.gguf")
gen = j("gen/status.json") or {}
ntok = nseq = 0
d = os.path.join(bs, "gen")
for f in sorted(os.listdir(d)) if os.path.isdir(d) else []:
    if f.startswith("shard-"):
        for line in open(os.path.join(d, f)):
            r = json.loads(line); nseq += 1; ntok += len(r["response_ids"])
s = {"generation": dict(gen, sequences=nseq, response_tokens=ntok,
                        seconds=int(open(os.path.join(bs, "gen_seconds")).read()) if os.path.exists(os.path.join(bs, "gen_seconds")) else None),
     "train_args": j("run/args.json"), "drafter_config": j("run/config.json"), "train_runs": (j("run/train.json") or {}).get("runs"),
     "draft_gguf": {"bytes": os.path.getsize(g), "sha256": hashlib.sha256(open(g, "rb").read()).hexdigest()} if os.path.exists(g) else None,
     "tau_zlab": j("tau-zlab.json")}
json.dump(s, open(os.path.join(out, "summary.json"), "w"), indent=1)
print("summary:", json.dumps({k: s[k] for k in ("generation", "draft_gguf")}), "tau:", (s["tau_zlab"] or {}).get("summary"))
PYEOF
echo "== train.sh done in $(( $(date +%s) - start ))s; \$OUT: $(ls "$OUT" | tr '\n' ' ')"
