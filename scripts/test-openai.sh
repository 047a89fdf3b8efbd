#!/usr/bin/env bash
# The server through the official `openai` Python client (pinned), in its own venv.
# Needs a release build (target/release/blockspec) and the real models (scripts/fetch-models.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${BLOCKSPEC_OPENAI_VENV:-$HOME/.cache/blockspec/openai-venv}"
OPENAI_VERSION=2.8.1
if ! "$VENV/bin/python" -c "import openai, sys; sys.exit(openai.__version__ != '$OPENAI_VERSION')" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet "openai==$OPENAI_VERSION"
fi
"$VENV/bin/python" scripts/test-openai.py target/release/blockspec \
  "${BLOCKSPEC_MODELS:-$HOME/.cache/blockspec/models}" tests/fixtures/templates
