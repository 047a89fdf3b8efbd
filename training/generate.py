"""Target responses for the training prompts: the TARGET (a GGUF, dequantized into transformers) answers every
prompt with its chat template applied (no system prompt beyond the template's default; Qwen2.5 has no thinking
mode), greedily by default, batched (left padding), and writes one JSON-lines shard per batch:
{"id", "prompt_ids", "response_ids"} (response ends with the stop token when the model stopped).

Resumable: batches are a fixed function of the prompt file and --batch, and a batch whose shard exists is
skipped. --time-budget makes a run stop cleanly before the device call's limit; run again to continue.

    python -m training.generate --target T.gguf --prompts training/data/prompts.jsonl.gz --out /tmp/gen \
        [--batch 256 --max-new 384 --time-budget 500]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from . import env


def plan_batches(lengths: list[int], batch: int, group: int = 8) -> list[list[int]]:
    """Indices in prompt-file order, in groups of group*batch sorted by length (less padding) and split into
    batches; the groups keep a partial run an unbiased sample of the prompt file."""
    out = []
    n = len(lengths)
    for g0 in range(0, n, batch * group):
        idx = sorted(range(g0, min(n, g0 + batch * group)), key=lambda i: lengths[i])
        out += [idx[i:i + batch] for i in range(0, len(idx), batch)]
    return out


def main() -> None:
    env.setup()
    import torch
    from . import gguf_to_torch as g2t
    from .prompts import load
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", required=True)
    ap.add_argument("--prompts", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--batch", type=int, default=0, help="sequences per batch (default 256 on CUDA, 8 on CPU)")
    ap.add_argument("--max-new", type=int, default=384)
    ap.add_argument("--max-prompt", type=int, default=640, help="skip prompts longer than this (tokens)")
    ap.add_argument("--limit", type=int, default=0, help="use only the first N prompts")
    ap.add_argument("--temperature", type=float, default=0.0, help="0: greedy (default)")
    ap.add_argument("--time-budget", type=float, default=0, help="seconds; stop (cleanly) when exceeded")
    ap.add_argument("--device")
    a = ap.parse_args()
    t_start = time.time()
    dev = env.device(a.device)
    batch = a.batch or (256 if dev.type == "cuda" else 8)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    prompts = load(a.prompts)
    if a.limit:
        prompts = prompts[:a.limit]
    model, meta = g2t.load_model(a.target, dev)
    tok = g2t.load_tokenizer(a.target, meta)
    stops = g2t.stop_ids(meta, tok)
    pad = stops[0]
    ids = [g2t.chat_ids(tok, p["text"]) for p in prompts]
    keep = [i for i in range(len(ids)) if len(ids[i]) <= a.max_prompt]
    batches = plan_batches([len(ids[i]) for i in keep], batch)
    print(f"[generate] {len(prompts)} prompts ({len(prompts) - len(keep)} too long), {len(batches)} batches of "
          f"{batch}, stop ids {stops}", file=sys.stderr, flush=True)
    n_done = n_tok = 0
    t0 = time.time()
    for bi, b in enumerate(batches):
        shard = out / f"shard-{bi:05d}.jsonl"
        if shard.exists():
            continue
        if a.time_budget and time.time() - t_start > a.time_budget:
            print(f"[generate] time budget reached; {bi}/{len(batches)} batches; run again to continue",
                  file=sys.stderr, flush=True)
            break
        rows = [ids[keep[i]] for i in b]
        L = max(len(r) for r in rows)
        x = torch.tensor([[pad] * (L - len(r)) + r for r in rows], device=dev)
        am = torch.tensor([[0] * (L - len(r)) + [1] * len(r) for r in rows], device=dev)
        kw = dict(do_sample=False) if a.temperature <= 0 else dict(do_sample=True, temperature=a.temperature,
                                                                    top_p=1.0, top_k=0)
        with torch.no_grad():
            y = model.generate(input_ids=x, attention_mask=am, max_new_tokens=a.max_new, eos_token_id=stops,
                               pad_token_id=pad, use_cache=True, **kw)
        y = y[:, L:].tolist()
        tmp = shard.with_suffix(".tmp")
        with open(tmp, "w") as f:
            for i, r in zip(b, y):
                resp = []
                for t in r:
                    resp.append(t)
                    if t in stops:
                        break
                n_tok += len(resp)
                p = prompts[keep[i]]
                f.write(json.dumps({"id": p["id"], "kind": p["kind"], "prompt_ids": ids[keep[i]],
                                    "response_ids": resp}) + "\n")
        tmp.rename(shard)
        n_done += len(b)
        dt = time.time() - t0
        print(f"[generate] batch {bi + 1}/{len(batches)}: {n_done} seqs, {n_tok} response tokens, "
              f"{n_tok / dt:.0f} tok/s, {dt:.0f} s", file=sys.stderr, flush=True)
    done = len(list(out.glob("shard-*.jsonl")))
    (out / "status.json").write_text(json.dumps({"batches": len(batches), "done": done,
                                                 "complete": done == len(batches)}) + "\n")


if __name__ == "__main__":
    main()
