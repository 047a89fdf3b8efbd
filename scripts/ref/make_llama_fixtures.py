#!/usr/bin/env python3
"""Produce llama.cpp reference fixtures for blockspec's correctness tests.

For each model it starts the reference server on 127.0.0.1 (a free port) with
`-t 2 -c 4096 --jinja`, waits for /health, queries it, and stops it, one model
at a time. Only loopback traffic; Python 3.11 stdlib only.

Outputs (in tests/fixtures/llama/):
  tokenizer-<model>.json  POST /tokenize (parse_special true and false) and
                          POST /detokenize of every line of
                          tests/fixtures/tokenizer_corpus.txt plus the
                          multi-line cases defined below.
  generate-<model>.json   greedy generations (n_predict 64) for raw prompts and
                          for chat prompts rendered with POST /apply-template.
  generate-<model>-norepack.json
                          with --no-repack: the same generations with the
                          server started with `--no-repack` (CPU weight
                          repacking off); generate fixtures only.
  cpu/<vendor>-<isa>/generate-*.json
                          with --per-cpu: generate fixtures for this machine's
                          CPU kind (/proc/cpuinfo vendor_id, lowercased, and
                          the widest SIMD level: avx512, avx2, avx or sse). The
                          CPU kernels round differently per instruction set,
                          which flips near-ties: the top-level files were made
                          on an AMD EPYC (AVX-512), and tests/generate_llama.rs
                          uses cpu/<vendor>-<isa>/, else cpu/<vendor>/ (older
                          fixtures: cpu/genuineintel/ is an AVX-512 Xeon),
                          where one exists.

The server binary is $LLAMA_SERVER if set, else the first of
  $BLOCKSPEC_LLAMA_REF/build-tools/bin/llama-server   (full llama.cpp tree)
  $BLOCKSPEC_LLAMA_REF/build/bin/llama-ref-server      (crate-vendored tree)
as built by scripts/ref/build-llama.sh. Models come from
$BLOCKSPEC_MODELS (scripts/fetch-models.sh).

Usage: scripts/ref/make_llama_fixtures.py [--models qwen05,qwen15] [--only tokenizer|generate] [--no-repack] [--per-cpu]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from llama_server import Server as _Server, http  # noqa: E402 (same folder)

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "llama"
CORPUS = REPO / "tests" / "fixtures" / "tokenizer_corpus.txt"
HOME = Path.home()
MODELS_DIR = Path(os.environ.get("BLOCKSPEC_MODELS", HOME / ".cache/blockspec/models"))
LLAMA_REF = Path(os.environ.get("BLOCKSPEC_LLAMA_REF", HOME / ".cache/blockspec/llama-ref"))

# key -> (file name, sha256) -- keep in sync with scripts/fetch-models.sh
MODELS = {
    "qwen05": ("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
               "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"),
    "qwen15": ("qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
               "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"),
}

SERVER_ARGS = ["-t", "2", "-c", "4096", "--jinja"]

# Request bodies (the per-case text goes into "content" / "prompt").
TOKENIZE_REQ = {"add_special": True, "parse_special": True}
TOKENIZE_REQ_NO_SPECIAL = {"add_special": True, "parse_special": False}
COMPLETION_REQ = {"n_predict": 64, "temperature": 0, "top_k": 1, "cache_prompt": False,
                  "return_tokens": True, "seed": 1}

# Multi-line tokenizer cases (corpus lines cannot hold newlines).
MULTILINE_CASES = [
    ("empty", ""),
    ("newline", "\n"),
    ("newlines3", "\n\n\n"),
    ("crlf", "\r\n"),
    ("cr_only", "line one\rline two"),
    ("chatml_newline", "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"),
    ("chatml_full", "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                    "<|im_start|>user\nWrite hello world in C.<|im_end|>\n<|im_start|>assistant\n"
                    "```c\n#include <stdio.h>\nint main(void) {\n    puts(\"hello\");\n}\n```<|im_end|>\n"),
    ("python_block", "def f(x):\n    if x:\n        return 1\n\treturn 0\n"),
    ("windows_text", "first line\r\nsecond line\r\n\r\nfourth line\r\n"),
    ("tabs_newlines", "\tcol1\tcol2\n\tval1\tval2\n"),
    ("space_newline_mix", " \n  \n\t\n \r\n"),
    ("trailing_newline", "The end.\n"),
    ("markdown_doc", "# Title\n\n- item one\n- item two\n\n> quote\n\n| a | b |\n|---|---|\n| 1 | 2 |\n"),
    ("fim", "<|fim_prefix|>def add(a, b):\n    <|fim_suffix|>\n    return c\n<|fim_middle|>"),
    ("tool_call_block", "<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>"),
    ("cjk_lines", "第一行\n第二行\r\n三行目\n세 번째 줄"),
]

RAW_PROMPTS = [
    ("fibonacci", "def fibonacci(n):"),
    ("python_moving_average",
     "import numpy as np\n\n\ndef moving_average(x, window):\n    \"\"\"Return the simple moving average of x.\"\"\"\n"),
    ("rust_main", "fn main() {\n    let numbers: Vec<i32> = (1..=10).collect();\n"),
    ("js_quicksort", "// Quick sort implementation in JavaScript\nfunction quickSort(arr) {\n"),
    ("c_linked_list", "#include <stdio.h>\n#include <stdlib.h>\n\nstruct node {\n    int value;\n    struct node *next;\n};\n\n"),
    ("question_sky", "Question: Why is the sky blue? Explain the physics in detail.\nAnswer:"),
    ("list_cities", "Here is a list of the ten largest cities in Europe by population:\n\n1."),
    ("chinese_quicksort", "快速排序是一种常用的排序算法，它的基本思想是"),
    ("french_history", "La Révolution française a commencé en 1789 lorsque"),
    ("story", "Once upon a time, in a small village by the sea, there lived an old fisherman who"),
]

CHAT_PROMPTS = [
    ("chat_prime_no_system", [
        {"role": "user", "content": "Write a Python function that checks whether a number is prime, with a docstring."},
    ]),
    ("chat_hashmap_system", [
        {"role": "system", "content": "You are a helpful assistant. Answer in detail."},
        {"role": "user", "content": "Explain how a hash map works and what happens on collisions."},
    ]),
    ("chat_multi_turn", [
        {"role": "system", "content": "You are a knowledgeable geography tutor."},
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "The capital of France is Paris."},
        {"role": "user", "content": "Tell me about its history and its most famous landmarks."},
    ]),
    ("chat_rust_chinese", [
        {"role": "system", "content": "You are a senior Rust engineer."},
        {"role": "user", "content": "用 Rust 写一个程序，读取一个文本文件并统计其中的行数和单词数。"},
    ]),
]


# ----------------------------------------------------------------------------- server

def Server(binary: Path, model: Path, extra_args: list[str] | None = None):
    return _Server(binary, model, SERVER_ARGS + list(extra_args or []), "llama-ref-server-")


# ----------------------------------------------------------------------------- helpers

def find_server() -> Path:
    if os.environ.get("LLAMA_SERVER"):
        return Path(os.environ["LLAMA_SERVER"])
    for p in (LLAMA_REF / "build-tools/bin/llama-server", LLAMA_REF / "build/bin/llama-ref-server"):
        if p.is_file() and os.access(p, os.X_OK):
            return p
    sys.exit(f"no server binary under {LLAMA_REF}; run scripts/ref/build-llama.sh (or set LLAMA_SERVER)")


def server_version(binary: Path) -> str:
    r = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=60)
    return (r.stdout + r.stderr).strip()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def read_corpus() -> list[str]:
    text = CORPUS.read_text(encoding="utf-8")
    lines = text.split("\n")  # not splitlines(): keep \r, \u2028, \x85 ... inside lines
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def write_fixture(path: Path, meta: dict, cases: list[dict]) -> None:
    """Pretty metadata, one case per line (compact, diff-friendly)."""
    out = ["{"]
    for k, v in meta.items():
        out.append(f"  {json.dumps(k)}: {json.dumps(v, ensure_ascii=False, indent=2).replace(chr(10), chr(10) + '  ')},")
    out.append('  "cases": [')
    for i, c in enumerate(cases):
        out.append("    " + json.dumps(c, ensure_ascii=False) + ("," if i + 1 < len(cases) else ""))
    out.append("  ]")
    out.append("}")
    text = "\n".join(out) + "\n"
    json.loads(text)  # sanity
    path.write_text(text, encoding="utf-8")
    print(f"  wrote {path.relative_to(REPO)} ({len(text.encode()) / 1024:.1f} KiB, {len(cases)} cases)", file=sys.stderr)


def common_meta(kind: str, key: str, model: Path, binary: Path, version: str, srv: Server, props: dict) -> dict:
    keep = ("build_info", "llama_version", "source", "server", "model_desc", "model_name", "n_ctx", "n_ctx_train",
            "n_batch", "n_ubatch", "n_seq_max", "n_threads", "n_threads_batch", "flash_attn_type", "cache_type_k",
            "cache_type_v", "kv_unified", "model_n_params",
            "n_vocab", "add_bos", "add_eos", "bos_token", "eos_token", "eog_tokens", "suppress_tokens",
            "default_sampling", "system_info")
    return {
        "format": f"blockspec-llama-ref/{kind}/v1",
        "generated_by": "scripts/ref/make_llama_fixtures.py",
        "model": {"key": key, "file": model.name, "sha256": MODELS[key][1], "size": model.stat().st_size},
        "llama_cpp": {
            "version": version,
            "server_binary": str(binary),
            # exact argv, except the free port picked at run time (kept out so re-runs are byte-identical)
            "server_cmd": shlex.join(srv.cmd).replace(f"--port {srv.port}", "--port <free-port>"),
            "version_cmd": shlex.join([str(binary), "--version"]),
            "props": {k: props[k] for k in keep if k in props},
        },
    }


def cpu_info() -> dict:
    """vendor_id, model name and SIMD level (isa) of the first processor in /proc/cpuinfo."""
    info = {}
    flags = []
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        k, _, v = line.partition(":")
        k = k.strip()
        if k in ("vendor_id", "model name") and k not in info:
            info[k] = v.strip()
        if k == "flags" and not flags:
            flags = v.split()
    info["isa"] = next((isa for flag, isa in (("avx512f", "avx512"), ("avx2", "avx2"), ("avx", "avx"))
                        if flag in flags), "sse")
    return info


# ----------------------------------------------------------------------------- fixtures

def tokenizer_fixture(srv: Server, meta: dict) -> tuple[dict, list[dict]]:
    cases = [(f"corpus:{i + 1}", s) for i, s in enumerate(read_corpus())]
    cases += [(f"multiline:{name}", s) for name, s in MULTILINE_CASES]
    out = []
    for source, text in cases:
        ids = http(srv.base, "/tokenize", {"content": text, **TOKENIZE_REQ})["tokens"]
        ids_ns = http(srv.base, "/tokenize", {"content": text, **TOKENIZE_REQ_NO_SPECIAL})["tokens"]
        detok = http(srv.base, "/detokenize", {"tokens": ids})["content"]
        detok_ns = http(srv.base, "/detokenize", {"tokens": ids_ns})["content"]
        out.append({
            "source": source,
            "text": text,
            "ids": ids,
            "detokenized": detok,
            "ids_no_parse_special": ids_ns,
            "detokenized_no_parse_special": detok_ns,
        })
    meta = dict(meta)
    meta["requests"] = {
        "tokenize": {"endpoint": "POST /tokenize", "body": {"content": "<text>", **TOKENIZE_REQ}, "field": "ids"},
        "tokenize_no_parse_special": {"endpoint": "POST /tokenize", "body": {"content": "<text>", **TOKENIZE_REQ_NO_SPECIAL},
                                      "field": "ids_no_parse_special"},
        "detokenize": {"endpoint": "POST /detokenize", "body": {"tokens": "<ids>"},
                       "field": "detokenized / detokenized_no_parse_special"},
    }
    meta["corpus"] = {"path": str(CORPUS.relative_to(REPO)), "sha256": sha256_file(CORPUS),
                      "note": "each corpus line (split on \\n only) is one case; multiline cases come from the script"}
    return meta, out


def generate_one(srv: Server, prompt: str) -> dict:
    prompt_tokens = http(srv.base, "/tokenize", {"content": prompt, **TOKENIZE_REQ})["tokens"]
    r = http(srv.base, "/completion", {"prompt": prompt, **COMPLETION_REQ})
    tokens = r.get("tokens") or []
    if "prompt_tokens" in r and r["prompt_tokens"] != prompt_tokens:
        raise RuntimeError("server tokenized the prompt differently from /tokenize")
    if not tokens:
        raise RuntimeError(f"no tokens returned (response keys: {sorted(r)})")
    stop_type = r.get("stop_type")
    return {
        "prompt_tokens": prompt_tokens,
        "tokens": tokens,
        "text": r.get("content", ""),
        "stop_type": stop_type,
        "eos": stop_type == "eos",
        "n_tokens": len(tokens),
    }


def generate_fixture(srv: Server, meta: dict) -> tuple[dict, list[dict]]:
    out = []
    for name, prompt in RAW_PROMPTS:
        out.append({"name": name, "kind": "raw", "prompt": prompt, **generate_one(srv, prompt)})
        print(f"    {name}: {out[-1]['n_tokens']} tokens, stop={out[-1]['stop_type']}", file=sys.stderr)
    for name, messages in CHAT_PROMPTS:
        rendered = http(srv.base, "/apply-template", {"messages": messages})["prompt"]
        out.append({"name": name, "kind": "chat", "messages": messages, "rendered": rendered,
                    **generate_one(srv, rendered)})
        print(f"    {name}: {out[-1]['n_tokens']} tokens, stop={out[-1]['stop_type']}", file=sys.stderr)
    meta = dict(meta)
    meta["requests"] = {
        "prompt_tokens": {"endpoint": "POST /tokenize", "body": {"content": "<prompt or rendered>", **TOKENIZE_REQ}},
        "apply_template": {"endpoint": "POST /apply-template", "body": {"messages": "<messages>"},
                           "note": "chat cases only; response field 'prompt' is stored as 'rendered'"},
        "completion": {"endpoint": "POST /completion", "body": {"prompt": "<prompt or rendered>", **COMPLETION_REQ}},
    }
    meta["semantics"] = ("greedy decoding; 'tokens' are the generated ids in order; when stop_type == 'eos' the last "
                         "id is the end-of-generation token, whose text is not part of 'text'; otherwise "
                         "stop_type == 'limit' and len(tokens) == n_predict")
    return meta, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated model keys")
    ap.add_argument("--only", choices=["tokenizer", "generate"], help="produce only one kind of fixture")
    ap.add_argument("--no-repack", action="store_true",
                    help="start the server with --no-repack (CPU weight repacking off) and write "
                         "generate-<model>-norepack.json (generate fixtures only)")
    ap.add_argument("--per-cpu", action="store_true",
                    help="write generate fixtures to cpu/<vendor_id>-<isa>/ (this machine's CPU kind) and "
                         "record the CPU in them (generate fixtures only)")
    args = ap.parse_args()
    out_dir = FIXTURES
    cpu = cpu_info()
    if args.per_cpu:
        if args.only == "tokenizer":
            ap.error("--per-cpu only produces generate fixtures")
        args.only = "generate"
        out_dir = FIXTURES / "cpu" / f'{cpu["vendor_id"].lower()}-{cpu["isa"]}'
    if args.no_repack:
        if args.only == "tokenizer":
            ap.error("--no-repack only produces generate fixtures")
        args.only = "generate"
    extra_args = ["--no-repack"] if args.no_repack else []
    suffix = "-norepack" if args.no_repack else ""

    binary = find_server()
    version = server_version(binary)
    print(f"server: {binary}\n{version}", file=sys.stderr)
    out_dir.mkdir(parents=True, exist_ok=True)

    for key in args.models.split(","):
        fname, sha = MODELS[key]
        model = MODELS_DIR / fname
        if not model.is_file():
            sys.exit(f"missing {model}; run scripts/fetch-models.sh")
        if sha256_file(model) != sha:
            sys.exit(f"{model}: sha256 mismatch; re-run scripts/fetch-models.sh")
        stem = model.name.removesuffix(".gguf")
        print(f"[{key}] {model}", file=sys.stderr)
        with Server(binary, model, extra_args) as srv:
            props = http(srv.base, "/props")
            if args.only in (None, "tokenizer"):
                meta, cases = tokenizer_fixture(srv, common_meta("tokenizer", key, model, binary, version, srv, props))
                write_fixture(FIXTURES / f"tokenizer-{stem}.json", meta, cases)
            if args.only in (None, "generate"):
                meta = common_meta("generate", key, model, binary, version, srv, props)
                if args.per_cpu:
                    meta["cpu"] = cpu
                meta, cases = generate_fixture(srv, meta)
                write_fixture(out_dir / f"generate-{stem}{suffix}.json", meta, cases)
    return 0


if __name__ == "__main__":
    sys.exit(main())
