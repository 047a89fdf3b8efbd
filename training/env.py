"""Environment shims shared by the pipeline's entry points.

* transformers >= 5 is needed (the z-lab `dflash` package's DFlashDraftModel and dflash_generate use its
  cache API). In the repo's reference venv (scripts/ref/setup-venv.sh + scripts/ref/dflash/setup-dflash.sh)
  the venv's own transformers is 4.57.6 and 5.15.0 sits in `$VENV/dflash-overlay`: `setup()` re-executes the
  process with that overlay on PYTHONPATH. On the GPU machine the image's transformers (5.x) is used as is.
* gguf-py: imported from PYTHONPATH / site-packages, else from `$VENV/llama.cpp/gguf-py` (reference venv).
* CPU-only torch with the CUDA stand-in libraries of scripts/ref/cuda_stubs.py segfaults in
  torch.cuda.is_current_stream_capturing() (called by transformers 5 on every forward): patched to False when
  no CUDA device is present.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _add_gguf_path() -> None:
    try:
        import gguf  # noqa: F401
        return
    except ImportError:
        pass
    cand = Path(sys.prefix) / "llama.cpp" / "gguf-py"
    if cand.is_dir():
        sys.path.insert(0, str(cand))
    import gguf  # noqa: F401


def setup() -> None:
    import transformers
    major = int(transformers.__version__.split(".")[0])
    if major < 5:
        overlay = Path(sys.prefix) / "dflash-overlay"
        if os.environ.get("_BLOCKSPEC_TRAIN_REEXEC") or not (overlay / "transformers").is_dir():
            sys.exit(f"needs transformers >= 5 (found {transformers.__version__}); "
                     "run scripts/ref/dflash/setup-dflash.sh (CPU) or use the GPU image's python3")
        pp = [str(overlay)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(pp), _BLOCKSPEC_TRAIN_REEXEC="1")
        os.execve(sys.executable, [sys.executable] + sys.orig_argv[1:], env)
    _add_gguf_path()
    import torch
    if not torch.cuda.is_available():
        torch.cuda.is_current_stream_capturing = lambda: False


def device(name: str | None = None):
    import torch
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
