#!/usr/bin/env python3
"""Cross-check the llama.cpp reference fixtures against the real llama-server.

The fixtures in tests/fixtures/llama/ were produced by llama-ref-server (libllama
from the llama.cpp vendored in llama-cpp-sys-2, see scripts/ref/README.md).
This script replays them against an upstream llama-server, by default the one
built by scripts/ref/build-llama-peer.sh (llama.cpp b11434), started on
127.0.0.1 with the same arguments (`-t 2 -c 4096 --jinja`), one model at a
time, and stopped afterwards. Per model it compares:

* generate-<model>.json, every case: POST /completion with the body recorded in
  the fixture's `requests.completion.body` (prompt = `prompt` for raw cases,
  `rendered` for chat cases) -> returned `tokens` vs the fixture's `tokens`
  (exact match, or the first differing index and both ids); also `stop_type`,
  and the prompt tokenization (POST /tokenize) vs `prompt_tokens`;
* chat cases: POST /apply-template {"messages": ...} -> `prompt` vs `rendered`;
* tokenizer-<model>.json, every case: POST /tokenize (add_special, parse_special)
  -> `tokens` vs `ids`; additionally parse_special=false vs
  `ids_no_parse_special` and POST /detokenize vs `detokenized`.

stdlib only. Exit status: 0 when everything matches, 1 when something differs,
2 on errors. `--json PATH` writes the full comparison.

Usage: scripts/ref/crosscheck_peer.py [--models qwen05,qwen15] [--server PATH]
Env: LLAMA_SERVER (server binary), BLOCKSPEC_LLAMA_PEER, BLOCKSPEC_MODELS.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from llama_server import Server as _Server, http  # noqa: E402 (same folder)

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests/fixtures/llama"
PEER = Path(os.environ.get("BLOCKSPEC_LLAMA_PEER", Path.home() / ".cache/blockspec/llama-peer"))
MODELS_DIR = Path(os.environ.get("BLOCKSPEC_MODELS", Path.home() / ".cache/blockspec/models"))
MODELS = {
    "qwen05": "qwen2.5-coder-0.5b-instruct-q4_k_m",
    "qwen15": "qwen2.5-coder-1.5b-instruct-q4_k_m",
}
SERVER_ARGS = ["-t", "2", "-c", "4096", "--jinja"]


def Server(binary: Path, model: Path):
    return _Server(binary, model, SERVER_ARGS, "llama-peer-server-")

def first_diff(a: list, b: list):
    """(index, a_id, b_id) of the first difference, None when equal; a missing id is None."""
    for i in range(max(len(a), len(b))):
        x = a[i] if i < len(a) else None
        y = b[i] if i < len(b) else None
        if x != y:
            return i, x, y
    return None


def fill(body: dict, **values) -> dict:
    """The recorded request body with its "<...>" placeholders replaced."""
    out = {}
    for k, v in body.items():
        out[k] = values[k] if isinstance(v, str) and v.startswith("<") and v.endswith(">") else v
    return out


def check_generate(srv: Server, fx: dict) -> list[dict]:
    req = fx["requests"]
    comp_body = req["completion"]["body"]
    tok_body = req["prompt_tokens"]["body"]
    results = []
    for c in fx["cases"]:
        r: dict = {"name": c["name"], "kind": c["kind"]}
        if c["kind"] == "chat":
            rendered = http(srv.base, "/apply-template", fill(req["apply_template"]["body"], messages=c["messages"]))["prompt"]
            r["template_match"] = rendered == c["rendered"]
            if not r["template_match"]:
                r["template_peer"] = rendered
            prompt = c["rendered"]  # same prompt text as the fixture, whatever the template gives
        else:
            prompt = c["prompt"]
        ptoks = http(srv.base, "/tokenize", fill(tok_body, content=prompt))["tokens"]
        r["prompt_tokens_match"] = ptoks == c["prompt_tokens"]
        if not r["prompt_tokens_match"]:
            r["prompt_tokens_diff"] = first_diff(c["prompt_tokens"], ptoks)
        resp = http(srv.base, "/completion", fill(comp_body, prompt=prompt))
        toks = resp.get("tokens")
        if not toks:
            raise RuntimeError(f"{c['name']}: no 'tokens' in /completion response (keys {sorted(resp)})")
        r["tokens"] = toks
        r["stop_type"] = resp.get("stop_type")
        r["stop_type_match"] = r["stop_type"] == c["stop_type"]
        r["text_match"] = resp.get("content", "") == c["text"]
        d = first_diff(c["tokens"], toks)
        r["match"] = d is None
        if d is not None:
            r["first_diff"] = {"index": d[0], "fixture": d[1], "peer": d[2],
                               "fixture_len": len(c["tokens"]), "peer_len": len(toks)}
        results.append(r)
        status = "MATCH" if r["match"] else \
            f"DIFF at {d[0]}: fixture {d[1]} vs peer {d[2]} (len {len(c['tokens'])} vs {len(toks)})"
        extra = "" if r["stop_type_match"] else f"  stop_type fixture {c['stop_type']} vs peer {r['stop_type']}"
        if c["kind"] == "chat" and not r["template_match"]:
            extra += "  TEMPLATE DIFFERS"
        if not r["prompt_tokens_match"]:
            extra += f"  PROMPT TOKENS DIFFER at {r['prompt_tokens_diff'][0]}"
        print(f"    {c['name']:<24} {status}{extra}", file=sys.stderr)
    return results


def check_tokenizer(srv: Server, fx: dict) -> dict:
    req = fx["requests"]
    out = {"n": len(fx["cases"]), "ids_match": 0, "ids_no_parse_special_match": 0, "detokenized_match": 0,
           "mismatches": []}
    for c in fx["cases"]:
        ids = http(srv.base, "/tokenize", fill(req["tokenize"]["body"], content=c["text"]))["tokens"]
        ids_ns = http(srv.base, "/tokenize", fill(req["tokenize_no_parse_special"]["body"], content=c["text"]))["tokens"]
        detok = http(srv.base, "/detokenize", {"tokens": c["ids"]})["content"]
        ok = ids == c["ids"]
        out["ids_match"] += ok
        out["ids_no_parse_special_match"] += ids_ns == c["ids_no_parse_special"]
        out["detokenized_match"] += detok == c["detokenized"]
        if not ok or ids_ns != c["ids_no_parse_special"] or detok != c["detokenized"]:
            m = {"source": c["source"], "text": c["text"]}
            if not ok:
                m["ids_diff"] = first_diff(c["ids"], ids)
            if ids_ns != c["ids_no_parse_special"]:
                m["ids_no_parse_special_diff"] = first_diff(c["ids_no_parse_special"], ids_ns)
            if detok != c["detokenized"]:
                m["detokenized_peer"] = detok
            out["mismatches"].append(m)
    return out


def find_server(arg: str | None) -> Path:
    p = Path(arg or os.environ.get("LLAMA_SERVER") or PEER / "build/bin/llama-server")
    if not (p.is_file() and os.access(p, os.X_OK)):
        sys.exit(f"no server binary at {p}; run scripts/ref/build-llama-peer.sh (or pass --server / LLAMA_SERVER)")
    return p


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated model keys (qwen05, qwen15)")
    ap.add_argument("--server", help="llama-server binary (default: $BLOCKSPEC_LLAMA_PEER/build/bin/llama-server)")
    ap.add_argument("--json", type=Path, help="write the full comparison here")
    args = ap.parse_args()

    binary = find_server(args.server)
    ver = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=60)
    version = (ver.stdout + ver.stderr).strip()
    print(f"server: {binary}\n{version}", file=sys.stderr)
    report = {"server": str(binary), "version": version, "server_args": SERVER_ARGS, "models": {}}
    all_ok = True
    for key in args.models.split(","):
        stem = MODELS[key]
        gen = json.loads((FIXTURES / f"generate-{stem}.json").read_text())
        tokf = FIXTURES / f"tokenizer-{stem}.json"
        tok = json.loads(tokf.read_text()) if tokf.exists() else None
        model = MODELS_DIR / gen["model"]["file"]
        if not model.is_file():
            sys.exit(f"model missing: {model} (run scripts/fetch-models.sh)")
        print(f"== {key}: {model.name}", file=sys.stderr)
        with Server(binary, model) as srv:
            props = http(srv.base, "/props")
            gres = check_generate(srv, gen)
            tres = check_tokenizer(srv, tok) if tok else None
        n_match = sum(r["match"] for r in gres)
        chat = [r for r in gres if r["kind"] == "chat"]
        summary = {
            "generate_cases": len(gres),
            "generate_exact_match": n_match,
            "stop_type_match": sum(r["stop_type_match"] for r in gres),
            "text_match": sum(r["text_match"] for r in gres),
            "prompt_tokens_match": sum(r["prompt_tokens_match"] for r in gres),
            "chat_cases": len(chat),
            "apply_template_match": sum(r["template_match"] for r in chat),
            "mismatches": [{"name": r["name"], **r["first_diff"]} for r in gres if not r["match"]],
        }
        if tres:
            summary["tokenizer"] = {k: v for k, v in tres.items() if k != "mismatches"}
            summary["tokenizer"]["mismatches"] = tres["mismatches"]
        ok = (n_match == len(gres) and summary["apply_template_match"] == len(chat)
              and summary["prompt_tokens_match"] == len(gres)
              and (not tres or tres["ids_match"] == tres["n"]))
        all_ok &= ok
        report["models"][key] = {"file": model.name, "summary": summary, "cases": gres,
                                 "props": {k: props.get(k) for k in ("build_info", "model_path", "total_slots")
                                           if k in props}}
        # ---- human summary on stdout
        print(f"{key} ({model.name}):")
        print(f"  generate: {n_match}/{len(gres)} cases match exactly "
              f"(stop_type {summary['stop_type_match']}/{len(gres)}, text {summary['text_match']}/{len(gres)}, "
              f"prompt tokens {summary['prompt_tokens_match']}/{len(gres)})")
        for m in summary["mismatches"]:
            print(f"    {m['name']}: first diff at index {m['index']}: fixture {m['fixture']} vs peer {m['peer']}"
                  f" (lengths {m['fixture_len']} vs {m['peer_len']})")
        print(f"  apply-template: {summary['apply_template_match']}/{len(chat)} chat cases match `rendered`")
        if tres:
            print(f"  tokenize: ids {tres['ids_match']}/{tres['n']}, ids_no_parse_special "
                  f"{tres['ids_no_parse_special_match']}/{tres['n']}, detokenize {tres['detokenized_match']}/{tres['n']}")
            for m in tres["mismatches"]:
                print(f"    {m['source']}: {json.dumps({k: v for k, v in m.items() if k not in ('source',)}, ensure_ascii=False)}")
    if args.json:
        args.json.write_text(json.dumps(report, ensure_ascii=False, indent=1) + "\n")
    return 0 if all_ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (RuntimeError, TimeoutError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
