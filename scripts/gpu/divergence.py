#!/usr/bin/env python3
"""Where a speculative run's greedy reply first differs from the plain run's, and how close the
target's top two candidates were there (plain run, logprobs from a running server).
  divergence.py --port P --plain bs-plain.json --other bs-dflash.json --prompts eval_prompts.json
"""
import argparse, json, urllib.request
ap = argparse.ArgumentParser()
ap.add_argument("--port", type=int); ap.add_argument("--plain"); ap.add_argument("--other"); ap.add_argument("--prompts")
a = ap.parse_args()
plain = {r["i"]: r["content"] for r in json.load(open(a.plain))["rows"]}
other = {r["i"]: r["content"] for r in json.load(open(a.other))["rows"]}
prompts = json.load(open(a.prompts))["prompts"]
out = []
for i, p in enumerate(prompts):
    if plain.get(i) == other.get(i):
        continue
    x, y = plain[i], other[i]
    c = next((k for k in range(min(len(x), len(y))) if x[k] != y[k]), min(len(x), len(y)))
    body = {"messages": [{"role": "user", "content": p["text"]}], "max_tokens": 256, "temperature": 0,
            "logprobs": True, "top_logprobs": 2}
    req = urllib.request.Request(f"http://127.0.0.1:{a.port}/v1/chat/completions", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    r = json.load(urllib.request.urlopen(req, timeout=600))
    toks = r["choices"][0]["logprobs"]["content"]
    pos, k = 0, 0
    for k, t in enumerate(toks):
        if pos + len(t["token"]) > c:
            break
        pos += len(t["token"])
    t = toks[k]
    tops = t.get("top_logprobs") or []
    margin = tops[0]["logprob"] - tops[1]["logprob"] if len(tops) > 1 else None
    row = {"i": i, "kind": p["kind"], "char": c, "token_index": k, "plain_token": t["token"],
           "top2": [(u["token"], round(u["logprob"], 4)) for u in tops], "margin": margin,
           "other_next": y[c:c + 12]}
    out.append(row)
    print(json.dumps(row))
ms = [r["margin"] for r in out if r["margin"] is not None]
print(json.dumps({"diverging": len(out), "max_margin": max(ms) if ms else None,
                  "median_margin": sorted(ms)[len(ms) // 2] if ms else None}))
