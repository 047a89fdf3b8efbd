#!/usr/bin/env bash
# Creates the Python environment used to (re)generate the reference fixtures in tests/fixtures/tiny/.
#
#   scripts/ref/setup-venv.sh            # -> ${BLOCKSPEC_VENV:-$HOME/.cache/blockspec/venv}
#
# Contents (all from PyPI, versions pinned below):
#   * torch (CPU use only), transformers, safetensors, tokenizers, numpy, sentencepiece, protobuf + deps
#   * llama.cpp's HF->GGUF converter in $VENV/llama.cpp/ (convert_hf_to_gguf.py + conversion/ + gguf-py/)
#
# CPU torch: PyPI only has the CUDA build of torch for Linux x86_64, and its libraries link the CUDA
# libraries directly (DT_NEEDED), so `import torch` fails without the ~3 GB nvidia-*/cuda-toolkit
# wheels. We install the torch wheel with --no-deps and let scripts/ref/cuda_stubs.py put tiny
# stand-in libraries (every CUDA call fails -> no device) into torch/lib. CPU kernels are untouched.
#
# Converter: the llama-cpp-sys-2 0.1.161 crate ships llama.cpp/convert_hf_to_gguf.py, but that file is
# only a front end: it imports the `conversion` package and `gguf-py`, which the crate does not ship.
# The llama-cpp-python 0.3.36 sdist on PyPI vendors a llama.cpp tree whose convert_hf_to_gguf.py is
# byte-identical to the crate's and which has conversion/ and gguf-py/ (gguf 0.19.0); we extract those.
# gguf-py is used from that tree via PYTHONPATH (PyPI's `gguf` is NOT installed).
#
# Needs: python3 (3.11 tested) with venv, a C compiler (cc) and readelf (binutils).
set -euo pipefail

VENV="${BLOCKSPEC_VENV:-$HOME/.cache/blockspec/venv}"
PYTHON="${PYTHON:-python3}"

TORCH_VERSION=2.11.0               # llama.cpp's requirements-convert_hf_to_gguf.txt pins torch==2.11.0
LLAMA_CPP_PYTHON_VERSION=0.3.36    # sdist carries llama.cpp's converter package (see above)
LLAMA_CPP_PYTHON_SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e

# Everything else, pinned exactly (installed with --no-deps, so this list is the complete set).
PINNED=(
  transformers==4.57.6   # llama.cpp pins this; Qwen3 needs >= 4.51
  tokenizers==0.22.2
  safetensors==0.8.0
  huggingface_hub==0.36.2
  hf-xet==1.8.0
  numpy==2.2.6           # llama.cpp: numpy~=2.2.6
  sentencepiece==0.2.3
  protobuf==4.25.9       # llama.cpp: protobuf>=4.21,<5
  regex==2026.11.15
  packaging==26.3
  PyYAML==6.0.3
  tqdm==4.70.1
  requests==2.34.2
  urllib3==2.8.0
  idna==3.20
  certifi==2026.10.18
  charset-normalizer==3.5.2
  # torch's own pure-python deps
  filelock==4.2.11
  typing_extensions==4.16.0
  sympy==1.14.0
  mpmath==1.3.0
  networkx==3.6.1
  Jinja2==3.1.6
  MarkupSafe==3.0.4
  fsspec==2026.9.0
  "setuptools<82"
)

if [[ ! -x "$VENV/bin/python" ]]; then
  echo "== creating venv $VENV"
  mkdir -p "$(dirname "$VENV")"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

echo "== installing torch $TORCH_VERSION (no CUDA deps) + pinned packages"
"${PIP[@]}" install --no-deps "torch==$TORCH_VERSION"
"${PIP[@]}" install --no-deps "${PINNED[@]}"

echo "== CUDA stand-in libraries for torch"
TORCH_LIB="$("$VENV/bin/python" -c 'import importlib.util, os; print(os.path.join(os.path.dirname(importlib.util.find_spec("torch").origin), "lib"))')"
"$VENV/bin/python" "$(dirname "$0")/cuda_stubs.py" "$TORCH_LIB"

echo "== llama.cpp converter"
CONV="$VENV/llama.cpp"
if [[ ! -f "$CONV/.complete-$LLAMA_CPP_PYTHON_VERSION" ]]; then
  TMP="$(mktemp -d)"
  trap 'rm -rf "$TMP"' EXIT
  "${PIP[@]}" download --no-deps --no-binary :all: "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" -d "$TMP"
  TARBALL="$TMP/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION.tar.gz"
  echo "$LLAMA_CPP_PYTHON_SHA256  $TARBALL" | sha256sum -c -
  P="llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION/vendor/llama.cpp"
  tar -xzf "$TARBALL" -C "$TMP" "$P/convert_hf_to_gguf.py" "$P/conversion" "$P/gguf-py" "$P/LICENSE" \
      "$P/requirements/requirements-convert_hf_to_gguf.txt" "$P/requirements/requirements-convert_legacy_llama.txt"
  rm -rf "$CONV"
  mv "$TMP/$P" "$CONV"
  touch "$CONV/.complete-$LLAMA_CPP_PYTHON_VERSION"
fi

# The crate's copy of the converter front end must match the one we use.
CRATE_CONV="$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/llama-cpp-sys-2-0.1.161/llama.cpp/convert_hf_to_gguf.py 2>/dev/null | head -n1 || true)"
if [[ -n "$CRATE_CONV" ]]; then
  if cmp -s "$CRATE_CONV" "$CONV/convert_hf_to_gguf.py"; then
    echo "converter front end identical to llama-cpp-sys-2 0.1.161's ($CRATE_CONV)"
  else
    echo "WARNING: $CONV/convert_hf_to_gguf.py differs from $CRATE_CONV" >&2
  fi
fi

echo "== checking"
PYTHONPATH="$CONV:$CONV/gguf-py" "$VENV/bin/python" - <<'EOF'
import torch, transformers, tokenizers, safetensors, numpy, sentencepiece, gguf
a = torch.randn(64, 64, dtype=torch.float64)
assert abs((a @ a).numpy() - a.numpy() @ a.numpy()).max() < 1e-10
assert not torch.cuda.is_available()
from transformers import Qwen3ForCausalLM, LlamaForCausalLM  # noqa: F401
import conversion  # noqa: F401  (llama.cpp converter package)
assert gguf.__file__.startswith(__import__("os").environ["PYTHONPATH"].split(":")[0]), gguf.__file__
print(f"ok: torch {torch.__version__} (cuda available: {torch.cuda.is_available()}), "
      f"transformers {transformers.__version__}, tokenizers {tokenizers.__version__}, "
      f"numpy {numpy.__version__}, gguf-py from {gguf.__file__}")
EOF
echo "venv ready: $VENV"
