#!/usr/bin/env python3
"""Client of scripts/gpu/device-compare.sh (standard library only: it runs on the GPU machine).

  compare-client.py --port P --name CFG --prompts training/eval_prompts.json --out CFG.json
      waits for the server's /health, sends one warm-up request, then every prompt as a chat
      completion (temperature 0, --max-tokens new tokens), one at a time; records the reply, the
      client-side wall time and the server's `timings` (llama-server's fields, which blockspec
      serve reports too: predicted_n/ms, prompt_n/ms, draft_n, draft_n_accepted; blockspec also
      target_steps, spec_steps, tree_steps, tree_nodes), and the server's /props and /metrics
      when it answers them.
  compare-client.py --summarize DIR
      one table over DIR/*.json, for all prompts, the code and the chat prompts: decode tok/s
      (sum predicted_n / sum predicted_ms), end-to-end tok/s (completion tokens / client wall
      time), e2e against llama.cpp's plain run and against the engine's own plain run, drafts
      accepted / drafted, tau (tokens per target step, where the server reports its steps), the
      DDTree steps, and how many replies equal the engine's own plain run and llama.cpp's; then
      the issue's goals on the code prompts. Also written to DIR/summary.json.txt.
"""
import argparse
import json
import sys
import time
import urllib.request
from pathlib import Path


def post(base, body, timeout=120):
    # 256 tokens take seconds on any config measured so far; a hung server must not use up the
    # device call (device-compare.sh runs every config in one call of at most 10 minutes).
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
    # The server's own view (its speculative settings, blockspec's spec_decode_* counters), where
    # it answers; llama-server answers /metrics only with --metrics.
    for path, key in (("/props", "props"), ("/metrics", "metrics")):
        try:
            with urllib.request.urlopen(base + path, timeout=10) as r:
                body = r.read().decode()
            res[key] = json.loads(body) if key == "props" else body
        except Exception:
            pass
    json.dump(res, open(a.out, "w"), indent=1)
    s = summary_of(res)
    print(json.dumps({"name": a.name, **s}))


def summary_of(res, kind=None):
    rows = [r for r in res["rows"] if kind is None or r["kind"] == kind]
    n = sum(r["usage"]["completion_tokens"] for r in rows)
    wall = sum(r["wall_s"] for r in rows)
    tm = [r["timings"] or {} for r in rows]

    def total(key):
        return sum(t.get(key, 0) or 0 for t in tm)
    pn = total("predicted_n")
    pms = sum(t.get("predicted_ms", 0.0) or 0.0 for t in tm)
    dn, da = total("draft_n"), total("draft_n_accepted")
    # blockspec's step counters (absent from llama-server's timings and from plain runs).
    has_steps = any("target_steps" in t for t in tm)
    steps = total("target_steps")
    return {"prompts": len(rows), "tokens": n, "e2e_tok_s": round(n / wall, 1) if wall else None,
            "decode_tok_s": round(pn / (pms / 1000), 1) if pms else None,
            "draft_n": dn, "draft_accepted": da, "accept_rate": round(da / dn, 3) if dn else None,
            "target_steps": steps if has_steps else None,
            "spec_steps": total("spec_steps") if has_steps else None,
            "tree_steps": total("tree_steps") if has_steps else None,
            "tree_nodes": total("tree_nodes") if has_steps else None,
            "tau": round(pn / steps, 3) if has_steps and steps else None}


# The configs of device-compare.sh in the order the table lists them; others follow by name.
ORDER = ["llama-plain", "llama-dflash", "llama-simple", "bs-plain", "bs-dflash", "bs-tree-auto",
         "bs-tree4", "bs-tree8", "bs-tree16", "bs-tree22", "bs-tree32", "bs-draft05"]


def ratio(a, b):
    return round(a / b, 2) if a and b else None


def summarize(d):
    d = Path(d)
    res = {p.stem: json.load(open(p)) for p in sorted(d.glob("*.json"))}
    names = [n for n in ORDER if n in res] + sorted(n for n in res if n not in ORDER)
    out = {}

    def cell(v):
        return "-" if v is None else str(v)
    cols = [("config", 14, "name"), ("kind", 5, "kind"), ("tokens", 6, "tokens"),
            ("decode t/s", 10, "decode_tok_s"), ("e2e t/s", 8, "e2e_tok_s"),
            ("x llama plain", 13, "x_llama_plain_e2e"), ("x own plain", 11, "x_own_plain_e2e"),
            ("accepted/drafted", 16, "accepted"), ("tau", 5, "tau"), ("trees/steps", 11, "trees"),
            ("=own plain", 10, "same_as_own_plain"), ("=llama plain", 12, "same_as_llama_plain")]
    print(" ".join(f"{h:<{w}}" if i < 2 else f"{h:>{w}}" for i, (h, w, _) in enumerate(cols)))
    for name in names:
        r = res[name]
        for kind in (None, "code", "chat"):
            s = summary_of(r, kind)
            plain = "bs-plain" if name.startswith("bs-") else "llama-plain"
            own = summary_of(res[plain], kind) if plain in res else None
            lp = summary_of(res["llama-plain"], kind) if "llama-plain" in res else None

            def same(other):
                if other not in res:
                    return None
                a = [x for x in r["rows"] if kind is None or x["kind"] == kind]
                b = {x["i"]: x["content"] for x in res[other]["rows"]}
                return f"{sum(1 for x in a if b.get(x['i']) == x['content'])}/{len(a)}"
            s.update({
                "x_own_plain_e2e": ratio(s["e2e_tok_s"], own and own["e2e_tok_s"]),
                "x_own_plain_decode": ratio(s["decode_tok_s"], own and own["decode_tok_s"]),
                "x_llama_plain_e2e": ratio(s["e2e_tok_s"], lp and lp["e2e_tok_s"]),
                "x_llama_plain_decode": ratio(s["decode_tok_s"], lp and lp["decode_tok_s"]),
                "same_as_own_plain": same(plain), "same_as_llama_plain": same("llama-plain")})
            out[f"{name}/{kind or 'all'}"] = s
            row = dict(s, name=name, kind=kind or "all",
                       accepted=f"{s['draft_accepted']}/{s['draft_n']}" if s["draft_n"] else None,
                       trees=f"{s['tree_steps']}/{s['target_steps']}" if s["tree_steps"] else None)
            print(" ".join(f"{cell(row[k]):<{w}}" if i < 2 else f"{cell(row[k]):>{w}}"
                           for i, (_, w, k) in enumerate(cols)))
    goals = check_goals(out)
    if goals:
        print("\ngoals on the 20 code prompts (e2e tok/s ratio; decode tok/s ratio in brackets):")
        for g in goals:
            print(f"  {g['what']:<46} {cell(g['e2e']):>5} ({cell(g['decode'])})  goal >= {g['goal']}: "
                  f"{'met' if g['met'] else 'NOT met' if g['met'] is False else '-'}")
    json.dump({"configs": out, "goals": goals}, open(d / "summary.json.txt", "w"), indent=1)


def check_goals(out):
    """The issue's goals on the code prompts: DDTree >= 1.15x the chain (bs-dflash), blockspec
    DFlash (chain or tree) >= 1.5x its own plain and >= 1.8x llama-server plain."""
    goals = []

    def add(what, a, b, goal):
        sa, sb = out.get(f"{a}/code"), out.get(f"{b}/code")
        if not sa or not sb:
            return
        e2e, dec = ratio(sa["e2e_tok_s"], sb["e2e_tok_s"]), ratio(sa["decode_tok_s"], sb["decode_tok_s"])
        goals.append({"what": what, "a": a, "b": b, "goal": goal, "e2e": e2e, "decode": dec,
                      "met": None if e2e is None else e2e >= goal})
    trees = [n for n in ORDER if n.startswith("bs-tree")]
    trees += sorted({k.split("/")[0] for k in out if k.startswith("bs-tree")} - set(trees))
    for tree in trees:
        add(f"{tree} / bs-dflash (tree vs chain)", tree, "bs-dflash", 1.15)
    for cfg in ["bs-dflash"] + trees:
        add(f"{cfg} / bs-plain", cfg, "bs-plain", 1.5)
    for cfg in ["bs-dflash"] + trees:
        add(f"{cfg} / llama-plain", cfg, "llama-plain", 1.8)
    return goals


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int)
    ap.add_argument("--name")
    ap.add_argument("--prompts")
    ap.add_argument("--out")
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--wait", type=float, default=120, help="seconds to wait for /health")
    ap.add_argument("--limit", type=int, default=0, help="only the first N prompts (a quick check)")
    ap.add_argument("--summarize")
    a = ap.parse_args()
    if a.summarize:
        summarize(a.summarize)
    else:
        run(a)


if __name__ == "__main__":
    main()
