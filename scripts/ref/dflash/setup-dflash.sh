#!/usr/bin/env bash
# Adds the z-lab DFlash reference package to the venv made by scripts/ref/setup-venv.sh.
#
#   scripts/ref/dflash/setup-dflash.sh     # venv: ${BLOCKSPEC_VENV:-$HOME/.cache/blockspec/venv}
#
# * dflash==0.1.0 (PyPI, pure Python) is installed into the venv with --no-deps. Its declared deps are
#   tqdm/requests (present) and datasets (only for `dflash benchmark`, not needed here); the `local`
#   extra pins torch==2.13.0 + transformers==5.15.0.
# * dflash 0.1.0's dflash_generate() does NOT run with the venv's transformers 4.57.6 (pinned there for
#   llama.cpp's converter and the tiny fixtures): it calls DynamicCache.activate_past_recording(), which
#   4.57.6 lacks, and it calls cache.crop(0) to mean "remove 0 tokens", which in 4.57.6 means "crop to
#   length 0" (wipes the cache). So transformers==5.15.0 (the version dflash pins) and its extra
#   runtime deps go into a separate overlay directory $VENV/dflash-overlay, used only through
#   PYTHONPATH by scripts/ref/dflash/make_dflash_fixture.py. The venv's own transformers stays 4.57.6
#   and torch stays 2.11.0 (works with transformers 5.15.0 on CPU).
set -euo pipefail

VENV="${BLOCKSPEC_VENV:-$HOME/.cache/blockspec/venv}"
OVERLAY="$VENV/dflash-overlay"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

if [[ ! -x "$VENV/bin/python" ]]; then
  echo "no venv at $VENV: run scripts/ref/setup-venv.sh first" >&2
  exit 1
fi

echo "== dflash 0.1.0 into $VENV (--no-deps)"
"${PIP[@]}" install --no-deps dflash==0.1.0

echo "== transformers 5.15.0 overlay in $OVERLAY"
"${PIP[@]}" install --no-deps --upgrade --target "$OVERLAY" \
  transformers==5.15.0 \
  huggingface-hub==1.33.0 \
  httpx==0.28.1 httpcore==1.0.9 h11==0.16.0 anyio==4.16.0 click==8.5.1

echo "== checking"
PYTHONPATH="$OVERLAY" "$VENV/bin/python" - <<'EOF'
import torch, transformers, dflash.model
from transformers import DynamicCache
assert transformers.__version__ == "5.15.0", transformers.__version__
assert hasattr(DynamicCache, "activate_past_recording")
print(f"ok: dflash from {dflash.model.__file__}, transformers {transformers.__version__} "
      f"from {transformers.__file__}, torch {torch.__version__}")
EOF
"$VENV/bin/python" -c 'import transformers; print("venv transformers (unchanged):", transformers.__version__)'
