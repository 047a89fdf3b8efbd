#!/usr/bin/env python3
"""Client of scripts/gpu/device-compare.sh (standard library only: it runs on the GPU machine).

  compare-client.py --port P --name CFG --prompts training/eval_prompts.json --out CFG.json
      waits for the server's /health, sends one warm-up request, then every prompt as a chat
      completion (temperature 0, --max-tokens new tokens), one at a time; records the reply, the
      client-side wall time and the server's `timings` (llama-server's fields, which blockspec
      serve reports too: predicted_n/ms, prompt_n/ms, draft_n, draft_n_accepted).
  compare-client.py --summarize DIR
      one table over DIR/*.json: decode tok/s (sum predicted_n / sum predicted_ms), end-to-end
      tok/s (completion tokens / client wall time), acceptance, and how many replies equal the
      plain run of the same engine and llama.cpp's plain run.
"""
import argparse
import json
import sys
import time
import urllib.request
from pathlib import Path


def post(base, body, timeout=600):
    req = urllib.request.Request(base + "/v1/chat/completions", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.load(r)


def run(a):
    base = f"http://127.0.0.1:{a.port}"
    t0 = time.time()
    while True:
        try:
            if urllib.request.urlopen(base + "/health", timeout=2).status == 200:
                break
        except Exception:
            pass
        if time.time() - t0 > a.wait:
            sys.exit(f"{a.name}: server not healthy after {a.wait} s")
        time.sleep(0.5)
    load_s = time.time() - t0
    prompts = json.load(open(a.prompts))["prompts"]
    if a.limit:
        prompts = prompts[:a.limit]
    post(base, {"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 16, "temperature": 0})
    rows = []
    for i, p in enumerate(prompts):
        body = {"messages": [{"role": "user", "content": p["text"]}], "max_tokens": a.max_tokens,
                "temperature": 0}
        t = time.time()
        r = post(base, body)
        wall = time.time() - t
        rows.append({"i": i, "kind": p["kind"], "wall_s": wall, "usage": r.get("usage"),
                     "timings": r.get("timings"), "content": r["choices"][0]["message"].get("content") or "",
                     "finish_reason": r["choices"][0].get("finish_reason")})
    res = {"name": a.name, "server_ready_s": round(load_s, 1), "max_tokens": a.max_tokens, "rows": rows}
    json.dump(res, open(a.out, "w"), indent=1)
    s = summary_of(res)
    print(json.dumps({"name": a.name, **s}))


def summary_of(res, kind=None):
    rows = [r for r in res["rows"] if kind is None or r["kind"] == kind]
    n = sum(r["usage"]["completion_tokens"] for r in rows)
    wall = sum(r["wall_s"] for r in rows)
    tm = [r["timings"] or {} for r in rows]
    pn = sum(t.get("predicted_n", 0) for t in tm)
    pms = sum(t.get("predicted_ms", 0.0) for t in tm)
    dn = sum(t.get("draft_n", 0) or 0 for t in tm)
    da = sum(t.get("draft_n_accepted", 0) or 0 for t in tm)
    return {"prompts": len(rows), "tokens": n, "e2e_tok_s": round(n / wall, 1) if wall else None,
            "decode_tok_s": round(pn / (pms / 1000), 1) if pms else None,
            "draft_n": dn, "draft_accepted": da, "accept_rate": round(da / dn, 3) if dn else None}


def summarize(d):
    d = Path(d)
    res = {p.stem: json.load(open(p)) for p in sorted(d.glob("*.json"))}
    out = {}
    print(f"{'config':<14} {'kind':<5} {'tokens':>6} {'decode t/s':>10} {'e2e t/s':>8} {'accept':>7} "
          f"{'x plain(e2e)':>12} {'=own plain':>10} {'=llama plain':>12}")
    for name, r in res.items():
        for kind in (None, "code", "chat"):
            s = summary_of(r, kind)
            plain = "bs-plain" if name.startswith("bs-") else "llama-plain"
            ps = summary_of(res[plain], kind) if plain in res else None
            speed = round(s["e2e_tok_s"] / ps["e2e_tok_s"], 2) if ps and ps["e2e_tok_s"] else None

            def same(other):
                if other not in res:
                    return None
                a = [x for x in r["rows"] if kind is None or x["kind"] == kind]
                b = {x["i"]: x["content"] for x in res[other]["rows"]}
                return f"{sum(1 for x in a if b.get(x['i']) == x['content'])}/{len(a)}"
            s.update({"x_plain_e2e": speed, "same_as_own_plain": same(plain), "same_as_llama_plain": same("llama-plain")})
            out[f"{name}/{kind or 'all'}"] = s
            print(f"{name:<14} {kind or 'all':<5} {s['tokens']:>6} {s['decode_tok_s'] or '-':>10} {s['e2e_tok_s'] or '-':>8} "
                  f"{s['accept_rate'] if s['accept_rate'] is not None else '-':>7} {speed or '-':>12} "
                  f"{s['same_as_own_plain'] or '-':>10} {s['same_as_llama_plain'] or '-':>12}")
    json.dump(out, open(d / "summary.json.txt", "w"), indent=1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int)
    ap.add_argument("--name")
    ap.add_argument("--prompts")
    ap.add_argument("--out")
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--wait", type=float, default=180)
    ap.add_argument("--limit", type=int, default=0, help="only the first N prompts (a quick check)")
    ap.add_argument("--summarize")
    a = ap.parse_args()
    if a.summarize:
        summarize(a.summarize)
    else:
        run(a)


if __name__ == "__main__":
    main()
