"""Prompts the target writes itself (self-instruct): the TARGET is asked, with its chat template, for lists of
requests a user might send about a topic (coding and general); the lines are cleaned, deduplicated, and kept
disjoint from the held-out set (no normalised-text match, no evaluation function name), then appended to a
training prompt file. Sampled (temperature 0.8, top-p 0.95) for diversity; batched; --time-budget.

    python -m training.self_instruct --target T.gguf --prompts training/data/prompts.jsonl.gz \
        --out /tmp/bs/prompts-all.jsonl [--rounds 400 --time-budget 120]
"""
from __future__ import annotations

import argparse
import gzip
import json
import random
import re
import sys
import time
from pathlib import Path

from . import env
from .prompts import CHAT_TOPICS, EVAL_FILE, HOWTO, LANGS, load, norm

ASKS = [
    "Write {n} different, specific requests that a programmer might send to a coding assistant about {t}. "
    "One request per line. No numbering, no answers.",
    "List {n} varied tasks someone could ask an AI assistant to do involving {t}. Each on its own line, as the "
    "user would type it. Do not answer them.",
]
EXTRA_TOPICS = ["Python data structures", "string processing", "file handling", "SQL queries", "web APIs",
                "unit tests", "algorithms", "debugging", "shell scripting", "data analysis with pandas",
                "object-oriented design", "concurrency", "command-line tools", "JSON and CSV data"]


def clean(line: str) -> str | None:
    s = re.sub(r"^\s*(?:[-*•]|\d+[.)]|\(\d+\))\s*", "", line).strip().strip('"').strip()
    if not 20 <= len(s) <= 400 or s.endswith(":") or s.lower().startswith(("sure", "here are", "certainly")):
        return None
    return s


def main() -> None:
    env.setup()
    import torch
    from . import gguf_to_torch as g2t
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", required=True)
    ap.add_argument("--prompts", required=True, help="the training prompt file to extend")
    ap.add_argument("--out", required=True, help="training prompts + self-written ones (JSON lines)")
    ap.add_argument("--rounds", type=int, default=400, help="requests to the target (each yields ~8 prompts)")
    ap.add_argument("--batch", type=int, default=0)
    ap.add_argument("--max-new", type=int, default=320)
    ap.add_argument("--time-budget", type=float, default=0)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--device")
    a = ap.parse_args()
    t0 = time.time()
    dev = env.device(a.device)
    batch = a.batch or (128 if dev.type == "cuda" else 4)
    rng = random.Random(a.seed)
    base = load(a.prompts)
    ev = json.loads(EVAL_FILE.read_text())["prompts"]
    ev_norm = {norm(p["text"]) for p in ev}
    ev_names = {p["name"] for p in ev if p["name"]}
    seen = {norm(p["text"]) for p in base} | ev_norm
    topics = CHAT_TOPICS + EXTRA_TOPICS + [f"how to {h} in {lang}" for h in HOWTO for lang in LANGS]
    asks = [rng.choice(ASKS).format(n=8, t=rng.choice(topics)) for _ in range(a.rounds)]
    model, meta = g2t.load_model(a.target, dev)
    tok = g2t.load_tokenizer(a.target, meta)
    stops = g2t.stop_ids(meta, tok)
    new = []
    torch.manual_seed(a.seed)
    for i in range(0, len(asks), batch):
        if a.time_budget and time.time() - t0 > a.time_budget:
            print(f"[self_instruct] time budget reached after {i} requests", file=sys.stderr, flush=True)
            break
        rows = [g2t.chat_ids(tok, q) for q in asks[i:i + batch]]
        L = max(len(r) for r in rows)
        x = torch.tensor([[stops[0]] * (L - len(r)) + r for r in rows], device=dev)
        am = torch.tensor([[0] * (L - len(r)) + [1] * len(r) for r in rows], device=dev)
        with torch.no_grad():
            y = model.generate(input_ids=x, attention_mask=am, max_new_tokens=a.max_new, do_sample=True,
                               temperature=0.8, top_p=0.95, eos_token_id=stops, pad_token_id=stops[0])
        for r in y[:, L:].tolist():
            text = tok.decode([t for t in r if t not in stops], skip_special_tokens=True)
            for line in text.splitlines():
                s = clean(line)
                if s is None or norm(s) in seen or any(re.search(rf"\b{re.escape(n)}\b", s) for n in ev_names):
                    continue
                seen.add(norm(s))
                new.append(s)
        print(f"[self_instruct] {min(i + batch, len(asks))}/{len(asks)} requests: {len(new)} new prompts "
              f"({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
    nxt = max(p["id"] for p in base) + 1
    added = [{"kind": "self", "name": "", "text": s, "id": nxt + k} for k, s in enumerate(new)]
    allp = base + added
    random.Random(a.seed).shuffle(allp)   # spread them over generation's batch groups
    op = gzip.open if a.out.endswith(".gz") else open
    with op(a.out, "wt", encoding="utf-8") as f:
        for p in allp:
            f.write(json.dumps(p) + "\n")
    print(f"[self_instruct] {len(base)} + {len(added)} prompts -> {a.out}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
