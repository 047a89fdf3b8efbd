"""Acceptance length (tau) of a DFlash drafter on the held-out prompts (training/eval_prompts.json), temperature 0.

Reference (default): the z-lab `dflash.model.dflash_generate` with the target dequantized from its GGUF
(bf16 on CUDA, f32 on CPU) and the drafter from a z-lab HF dir (use `export unpack` to evaluate the exact
weights of a quantized GGUF drafter). Per prompt: tau = mean(acceptance_lengths) (z-lab's definition: each
step's accepted drafts + the bonus token); summary: mean over prompts (as z-lab's benchmark) and pooled
(sum of lengths / steps), overall and per kind (code / chat).

--blockspec BIN runs the same prompts through `BIN run --draft ... --temp 0 --block-size B --json` instead
(blockspec's `spec.accept_lengths`, same definitions), so the two figures can be compared.

    python -m training.eval_tau --target T.gguf --draft DRAFT_DIR [--max-new 256] [--out tau.json]
    python -m training.eval_tau --target T.gguf --draft D.gguf --blockspec target/release/blockspec
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import env


def summarize(rows: list[dict]) -> dict:
    out = {}
    for kind in ("all", "code", "chat"):
        rs = [r for r in rows if kind == "all" or r["kind"] == kind]
        if not rs:
            continue
        lens = [x for r in rs for x in r["acceptance_lengths"]]
        out[kind] = {"prompts": len(rs), "tau_mean": round(sum(r["tau"] for r in rs) / len(rs), 4),
                     "tau_pooled": round(sum(lens) / max(1, len(lens)), 4),
                     "tokens": sum(r["n_tokens"] for r in rs)}
    return out


def run_reference(a, prompts) -> list[dict]:
    import torch
    import dflash.model as dm
    from safetensors.torch import load_file
    from . import gguf_to_torch as g2t
    from .train import make_drafter
    dev = env.device(a.device)
    if dev.type != "cuda":
        dm._cuda_time = time.perf_counter
    target, meta = g2t.load_model(a.target, dev)
    tok = g2t.load_tokenizer(a.target, meta)
    stops = g2t.stop_ids(meta, tok)
    d = Path(a.draft)
    cfg = json.loads((d / "config.json").read_text())
    drafter = make_drafter(cfg)
    sd = {}
    for f in sorted(d.glob("*.safetensors")):
        sd.update(load_file(str(f)))
    missing, unexpected = drafter.load_state_dict(sd, strict=False)
    if [m for m in missing if not m.startswith("rotary_emb")] or unexpected:
        sys.exit(f"{d}: missing {missing} unexpected {unexpected}")
    drafter.to(dev, dtype=next(target.parameters()).dtype).eval()
    rows = []
    t0 = time.time()
    for i, p in enumerate(prompts):
        if a.time_budget and time.time() - t0 > a.time_budget:
            print(f"[eval_tau] time budget reached after {i} prompts", file=sys.stderr, flush=True)
            break
        ids = torch.tensor([g2t.chat_ids(tok, p["text"])], device=dev)
        st = dm.dflash_generate(drafter, target, ids, a.max_new, stops, temperature=0.0,
                                block_size=a.block_size or None, return_stats=True)
        acc = [int(x) for x in st.acceptance_lengths]
        rows.append({"i": i, "kind": p["kind"], "n_tokens": int(st.num_output_tokens), "steps": len(acc),
                     "tau": round(sum(acc) / max(1, len(acc)), 4), "acceptance_lengths": acc,
                     "tokens_per_s": round(1.0 / st.time_per_output_token, 1)})
        print(f"[eval_tau] {i + 1}/{len(prompts)} {p['kind']}: tau {rows[-1]['tau']} ({len(acc)} steps, "
              f"{rows[-1]['n_tokens']} tokens)", file=sys.stderr, flush=True)
    return rows


def run_blockspec(a, prompts) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as td:
        for i, p in enumerate(prompts):
            f = Path(td) / f"chat{i}.json"
            f.write_text(json.dumps([{"role": "user", "content": p["text"]}]))
            cmd = [a.blockspec, "run", "-m", a.target, "--draft", a.draft, "--chat-file", str(f), "--temp", "0",
                   "-n", str(a.max_new), "--json"]
            if a.block_size:
                cmd += ["--block-size", str(a.block_size)]
            if a.threads:
                cmd += ["-t", str(a.threads)]
            for extra in a.blockspec_arg:
                cmd += extra.split()
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                sys.exit(f"{' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
            j = json.loads(r.stdout.strip().splitlines()[-1])
            acc = [int(x) for x in j["spec"]["accept_lengths"]]
            rows.append({"i": i, "kind": p["kind"], "n_tokens": len(j["tokens"]), "steps": len(acc),
                         "tau": round(sum(acc) / max(1, len(acc)), 4), "acceptance_lengths": acc,
                         "blockspec_tau": j["spec"]["tau"],
                         "tokens_per_s": round(j["timings"]["predicted_per_second"], 1)})
            print(f"[eval_tau] {i + 1}/{len(prompts)} {p['kind']}: tau {rows[-1]['tau']} ({len(acc)} steps)",
                  file=sys.stderr, flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", required=True)
    ap.add_argument("--draft", required=True, help="z-lab HF dir (reference) or anything blockspec loads")
    ap.add_argument("--prompts", default=str(Path(__file__).resolve().parent / "eval_prompts.json"))
    ap.add_argument("--max-new", type=int, default=256)
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--block-size", type=int, default=0,
                    help="blockspec: verify exactly this many tokens (use the drafter's block size, e.g. 16, to "
                         "compare with the reference); reference: override the drafter's block size")
    ap.add_argument("--blockspec", help="path of the blockspec binary: measure with blockspec instead")
    ap.add_argument("--blockspec-arg", action="append", default=[],
                    help="blockspec: more arguments for `run` (repeatable; split on spaces), "
                         "e.g. '--draft-vocab 32768'")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device")
    ap.add_argument("--time-budget", type=float, default=0, help="reference: stop starting prompts after this")
    ap.add_argument("--out", help="write the per-prompt results + summary JSON here")
    a = ap.parse_args()
    prompts = json.loads(Path(a.prompts).read_text())["prompts"]
    if a.limit:
        prompts = prompts[:a.limit]
    if a.blockspec:
        rows = run_blockspec(a, prompts)
    else:
        env.setup()
        rows = run_reference(a, prompts)
    res = {"engine": "blockspec" if a.blockspec else "dflash_generate (z-lab 0.1.0)", "target": Path(a.target).name,
           "draft": str(a.draft), "max_new": a.max_new, "summary": summarize(rows), "prompts": rows}
    print(json.dumps(res["summary"]))
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
