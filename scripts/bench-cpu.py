#!/usr/bin/env python3
"""Side-by-side CPU benchmark: `blockspec bench` against llama.cpp's `llama-bench`.

Same GGUF, same threads, same tests (ppN = prefill N tokens, tgN = decode N tokens). The two
tools alternate for ROUNDS rounds so that both see the same machine load; each round each tool
does REPS repetitions. The table gives, per test, the median over rounds of each tool's median
tokens/s, and the median of the per-round ratios (blockspec / llama.cpp).

Environment: MODELS (dir), LLAMA_BENCH (path), THREADS (2), REPS (5), ROUNDS (5), PP (16,64),
TG (32). Needs the models (scripts/fetch-models.sh) and llama-bench
(scripts/ref/build-llama-peer.sh). Run it on an otherwise idle machine.
"""
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOME = Path.home()
MODELS = Path(os.environ.get("MODELS", HOME / ".cache/blockspec/models"))
PEER = Path(os.environ.get("BLOCKSPEC_LLAMA_PEER", HOME / ".cache/blockspec/llama-peer"))
LLAMA_BENCH = Path(os.environ.get("LLAMA_BENCH", PEER / "build/bin/llama-bench"))
THREADS = os.environ.get("THREADS", "2")
REPS = os.environ.get("REPS", "5")
ROUNDS = int(os.environ.get("ROUNDS", "5"))
PP = os.environ.get("PP", "16,64")
TG = os.environ.get("TG", "32")
NAMES = sys.argv[1:] or [
    "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
]
BLOCKSPEC = ROOT / "target/release/blockspec"


def tests():
    out = [f"pp{n}" for n in PP.split(",") if n.strip() and int(n) > 0]
    return out + [f"tg{n}" for n in TG.split(",") if n.strip() and int(n) > 0]


def run_blockspec(model):
    cmd = [str(BLOCKSPEC), "bench", "-m", str(model), "-t", THREADS, "-p", PP, "-n", TG,
           "-r", REPS, "--json"]
    res = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    return {t: res[f"{t}_tok_s"] for t in tests()}


def run_llama(model):
    cmd = [str(LLAMA_BENCH), "-m", str(model), "-t", THREADS, "-p", PP, "-n", TG, "-r", REPS,
           "-fa", "1", "-o", "json"]
    env = dict(os.environ, LD_LIBRARY_PATH=str(LLAMA_BENCH.parent))
    rows = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True,
                                     env=env).stdout)
    out = {}
    for r in rows:
        name = f"pp{r['n_prompt']}" if r["n_gen"] == 0 else f"tg{r['n_gen']}"
        # llama-bench reports the mean; take the median of its samples like blockspec does.
        out[name] = statistics.median(r["samples_ts"])
    return out


def main():
    subprocess.run(["cargo", "build", "--release", "--locked", "-q"], cwd=ROOT, check=True)
    if not LLAMA_BENCH.exists():
        sys.exit(f"llama-bench not found at {LLAMA_BENCH} (scripts/ref/build-llama-peer.sh)")
    print(f"threads {THREADS}, {ROUNDS} alternating rounds of {REPS} repetitions each\n")
    print("| model | test | blockspec tok/s | llama.cpp tok/s | ratio (median of rounds) "
          "| ratio min..max |")
    print("| --- | --- | ---: | ---: | ---: | --- |")
    for name in NAMES:
        model = MODELS / name
        ours, theirs = [], []
        for _ in range(ROUNDS):
            ours.append(run_blockspec(model))
            theirs.append(run_llama(model))
        for t in tests():
            a = [r[t] for r in ours]
            b = [r[t] for r in theirs]
            ratios = [x / y for x, y in zip(a, b)]
            print(f"| {name} | {t} | {statistics.median(a):.2f} | {statistics.median(b):.2f} "
                  f"| {statistics.median(ratios):.3f} | {min(ratios):.2f}..{max(ratios):.2f} |")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
