#!/usr/bin/env python3
"""llama.cpp's speculative decoding on the prompts `blockspec bench --draft` uses.

Runs `llama-speculative-simple` (draft-simple: a classic draft model) and `llama-completion`
(plain) from the peer build (scripts/ref/build-llama-peer.sh) on each prompt of
crates/blockspec/src/cli/bench/bench_prompts.json, greedy, N tokens, and prints decode tokens/s summed
over the prompts (tokens / seconds), like `blockspec bench` does.

Usage: python3 scripts/ref/llama-spec-peer.py TARGET.gguf DRAFT.gguf [N_TOKENS] [THREADS] [SPEC_TYPE]

SPEC_TYPE: draft-simple (default) or draft-dflash (DRAFT: a `dflash` GGUF in llama.cpp's spelling,
`blockspec convert-draft D.gguf -o L.gguf --type keep --target TARGET.gguf`; 15 drafts per step,
the block of 16 that blockspec verifies with --block-size 16). b11434 aborts on Qwen2 targets
unless src/models/qwen2.cpp publishes its layer inputs (see scripts/gpu/device-compare.sh,
LLAMA_PATCH_QWEN2).
"""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PEER = Path(os.environ.get("BLOCKSPEC_LLAMA_PEER", Path.home() / ".cache/blockspec/llama-peer"))
BIN = PEER / "build/bin"


def run(cmd):
    env = dict(os.environ, LD_LIBRARY_PATH=str(BIN))
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        sys.exit(f"{cmd[0]} failed:\n{p.stderr[-2000:]}")
    return p.stdout + p.stderr


def main():
    target, draft = sys.argv[1], sys.argv[2]
    n = sys.argv[3] if len(sys.argv) > 3 else "128"
    threads = sys.argv[4] if len(sys.argv) > 4 else "2"
    spec_type = sys.argv[5] if len(sys.argv) > 5 else "draft-simple"
    spec_args = ["--spec-type", spec_type]
    if spec_type == "draft-dflash":
        spec_args += ["--spec-draft-n-max", "15"]
    prompts = json.loads((ROOT / "crates/blockspec/src/cli/bench/bench_prompts.json").read_text())
    common = ["-n", n, "-t", threads, "--temp", "0", "--top-k", "1", "-fa", "on",
              "--ignore-eos", "-c", "2048"]
    spec_tok = spec_s = 0.0
    plain_tok = plain_s = 0.0
    drafted = accepted = 0
    steps = 0
    for p in prompts:
        out = run([str(BIN / "llama-speculative-simple"), "-m", target, "-md", draft,
                   *spec_args, "-p", p,
                   *common])
        m = re.search(r"decoded\s+(\d+)\s+tokens in\s+([\d.]+)\s+seconds", out)
        if not m:
            sys.exit(f"no timing in llama-speculative-simple output:\n{out[-2000:]}")
        spec_tok += int(m.group(1))
        spec_s += float(m.group(2))
        d = re.search(r"n_drafted\s*=\s*(\d+)", out)
        a = re.search(r"n_accept\s*=\s*(\d+)", out)
        drafted += int(d.group(1)) if d else 0
        accepted += int(a.group(1)) if a else 0
        steps += int(d.group(1)) // 15 if d and spec_type == "draft-dflash" else 0
        out = run([str(BIN / "llama-completion"), "-m", target, "-p", p, "-no-cnv", *common])
        m = re.search(r"eval time =\s+([\d.]+) ms /\s+(\d+) runs", out)
        if not m:
            sys.exit(f"no eval time in llama-completion output:\n{out[-2000:]}")
        plain_s += float(m.group(1)) / 1000.0
        plain_tok += int(m.group(2))
    print(json.dumps({
        "prompts": len(prompts),
        "plain_tok_s": plain_tok / plain_s,
        "spec_type": spec_type,
        "spec_tok_s": spec_tok / spec_s,
        "ratio": (spec_tok / spec_s) / (plain_tok / plain_s),
        "drafted": drafted,
        "accepted": accepted,
        # draft-dflash drafts 15 per step: tokens per verify step, as blockspec reports tau
        "tau": (accepted + steps) / steps if steps else None,
    }))


if __name__ == "__main__":
    main()
