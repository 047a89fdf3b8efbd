"""Training and held-out evaluation prompts.

Code prompts come from Python sources on this machine: public functions with a docstring in the stdlib and
site-packages (`ast`, no import), turned into instructions (implement from signature + docstring, complete a
stub, explain / test / add type hints to a short function). General chat prompts are combinations of task
templates and topics. Deduplicated (normalised text). The held-out evaluation set is disjoint by
construction: its code prompts come only from source files in a hash partition that training never reads,
and no function name used in evaluation appears in training; its chat prompts are hand-written, use topics
absent from the training topic lists, and are checked against the training set.

    python -m training.prompts --out training/data/prompts.jsonl.gz [--n-code 6000 --n-chat 3000]
    python -m training.prompts --eval-out training/eval_prompts.json     # regenerate the committed eval set

The committed training/eval_prompts.json is the evaluation set; the training file is written with the
names of the eval functions excluded (read from that JSON, so a rebuilt training set stays disjoint).
"""
from __future__ import annotations

import argparse
import ast
import gzip
import hashlib
import json
import random
import re
import site
import sys
import sysconfig
from pathlib import Path

HERE = Path(__file__).resolve().parent
EVAL_FILE = HERE / "eval_prompts.json"
EVAL_PARTITION = 16          # files whose path hash % 16 == 0 feed evaluation only
SKIP_DIRS = ("test", "tests", "testing", "idlelib", "lib2to3", "tkinter", "turtledemo", "_vendor", "vendored")


def _h(s: str) -> int:
    return int(hashlib.sha1(s.encode()).hexdigest()[:8], 16)


def norm(s: str) -> str:
    return re.sub(r"\s+", " ", s.strip().lower())


def source_roots() -> list[Path]:
    roots = [Path(sysconfig.get_paths()["stdlib"])]
    for p in site.getsitepackages() + [site.getusersitepackages()]:
        if Path(p).is_dir():
            roots.append(Path(p))
    return roots


def iter_functions(roots: list[Path], max_files: int = 20000):
    """(relative file key, name, signature, docstring, source) of public documented functions."""
    seen_files = 0
    for root in roots:
        for f in sorted(root.rglob("*.py")):
            rel = f.relative_to(root).as_posix()
            parts = rel.split("/")
            if any(p in SKIP_DIRS or p.startswith("test_") for p in parts) or "site-packages" in rel:
                continue
            if root.name != "site-packages" and "site-packages" in parts:
                continue
            seen_files += 1
            if seen_files > max_files:
                return
            try:
                text = f.read_text(encoding="utf-8")
                tree = ast.parse(text)
            except (SyntaxError, UnicodeDecodeError, ValueError, OSError, RecursionError):
                continue
            lines = text.splitlines()
            for node in ast.walk(tree):
                if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                if node.name.startswith("_"):
                    continue
                doc = ast.get_docstring(node)
                if not doc or len(doc) < 25:
                    continue
                try:
                    args = ast.unparse(node.args)
                except Exception:  # noqa: BLE001
                    continue
                ret = f" -> {ast.unparse(node.returns)}" if node.returns is not None else ""
                sig = f"{'async ' if isinstance(node, ast.AsyncFunctionDef) else ''}def {node.name}({args}){ret}"
                src = "\n".join(lines[node.lineno - 1:node.end_lineno]) if node.end_lineno else ""
                yield rel, node.name, sig, doc, src


def first_para(doc: str, limit: int = 600) -> str:
    p = doc.strip().split("\n\n")[0]
    p = re.sub(r"\s+", " ", p).strip()
    return p[:limit]


CODE_TEMPLATES = [
    "Write a Python function `{sig_short}` that does the following: {para}",
    "Implement the following Python function.\n\n```python\n{sig}:\n    \"\"\"{doc}\"\"\"\n```",
    "Complete this Python function:\n\n```python\n{sig}:\n    \"\"\"{doc}\"\"\"\n```",
    "In Python, write `{name}`. Specification: {para}",
    "Write a self-contained Python implementation of `{sig_short}`.\n\nDocstring:\n{doc}",
]
SRC_TEMPLATES = [
    "Explain what this Python function does, step by step:\n\n```python\n{src}\n```",
    "Write pytest unit tests for this function:\n\n```python\n{src}\n```",
    "Add type hints and improve the docstring of this function:\n\n```python\n{src}\n```",
    "Rewrite this Python function to be more readable, keeping its behaviour:\n\n```python\n{src}\n```",
    "Find possible bugs or edge cases in this function:\n\n```python\n{src}\n```",
]


def code_prompt(rng: random.Random, name, sig, doc, src) -> dict | None:
    doc_c = "\n    ".join(doc.strip().splitlines()[:12])
    para = first_para(doc)
    if len(para) < 20:
        return None
    n_src = src.count("\n") + 1
    sig_short = sig if len(sig) < 120 else f"def {name}(...)"
    if src and 4 <= n_src <= 30 and len(src) < 1500 and rng.random() < 0.35:
        t = rng.choice(SRC_TEMPLATES)
        kind = "code-src"
        text = t.format(src=src.strip("\n") if not src.startswith(" ") else _dedent(src))
    else:
        t = rng.choice(CODE_TEMPLATES)
        kind = "code"
        text = t.format(sig=sig, sig_short=sig_short, name=name, para=para, doc=doc_c)
    return {"kind": kind, "name": name, "text": text}


def _dedent(src: str) -> str:
    import textwrap
    return textwrap.dedent(src).strip("\n")


# ------------------------------------------------------------------------------------------------ chat

CHAT_TASKS = [
    "Explain {t} to a beginner.",
    "What are the main advantages and disadvantages of {t}?",
    "Give me three practical tips about {t}.",
    "Write a short paragraph summarizing {t}.",
    "What are common misconceptions about {t}?",
    "Compare {t} with a closely related alternative.",
    "Write a short blog post introduction about {t}.",
    "List five interesting facts about {t}.",
    "How would you teach {t} to a ten-year-old?",
    "Write a haiku about {t}.",
    "Create a short quiz (3 questions with answers) about {t}.",
    "What should someone know before getting started with {t}?",
]
CHAT_TOPICS = [
    "photosynthesis", "compound interest", "the water cycle", "version control with git", "healthy sleep habits",
    "public speaking", "the French Revolution", "black holes", "time management", "machine learning",
    "climate change", "the immune system", "budget travel", "learning a new language", "electric cars",
    "container gardening", "the stock market", "renewable energy", "the Roman Empire", "meditation",
    "writing a resume", "job interviews", "the history of the internet", "recycling", "volcanoes",
    "the theory of evolution", "vaccines", "cooking pasta", "running a marathon", "remote work",
    "cloud computing", "password security", "the solar system", "supply and demand", "coffee brewing",
    "chess openings", "bird migration", "the printing press", "inflation", "ocean tides",
    "test-driven development", "functional programming", "REST APIs", "database indexing", "unit testing",
    "code review", "continuous integration", "memory management", "regular expressions", "recursion",
    "open source licenses", "linear algebra", "probability", "the Pythagorean theorem", "prime numbers",
]
HOWTO = [
    "reverse a string", "read a CSV file", "sort a list of dictionaries by a key", "make an HTTP GET request",
    "parse JSON", "remove duplicates from a list", "count word frequencies in a text", "merge two sorted lists",
    "check whether a string is a palindrome", "compute the factorial of a number", "find the maximum in an array",
    "flatten a nested list", "read a file line by line", "convert a date string to a timestamp",
    "implement binary search", "implement a stack", "write a simple class with a constructor",
    "handle exceptions", "generate random numbers", "split a string by whitespace", "compute a moving average",
    "validate an email address with a regular expression", "walk a directory tree", "implement a linked list",
    "memoize a function", "run tasks concurrently", "format a number with thousands separators",
]
LANGS = ["Python", "JavaScript", "Rust", "Go", "C", "C++", "Java", "TypeScript", "Bash", "SQL"]


def chat_prompts(rng: random.Random, n: int) -> list[dict]:
    out = []
    combos = [(t, x) for t in CHAT_TASKS for x in CHAT_TOPICS]
    combos += [("How do I {t}?", f"{h} in {lang}") for h in HOWTO for lang in LANGS]
    combos += [("Write a {t}.", f"{lang} program that shows how to {h}") for h in HOWTO for lang in LANGS]
    rng.shuffle(combos)
    for t, x in combos[:n]:
        out.append({"kind": "chat" if not any(lang in x for lang in LANGS) else "code-howto",
                    "name": "", "text": t.format(t=x)})
    return out


# ------------------------------------------------------------------------------------------------ eval

EVAL_CHAT = [
    "What causes the seasons on Earth?",
    "Write a friendly email asking a colleague to review my pull request by Friday.",
    "Give me a three-day itinerary for a first visit to Kyoto.",
    "Explain the difference between weather and climate in two paragraphs.",
    "What is the difference between a virus and a bacterium?",
    "Suggest five names for a bakery that specializes in sourdough bread.",
    "How does a refrigerator keep food cold?",
    "Summarize the plot of Romeo and Juliet in a few sentences.",
    "What are good strategies for paying off credit card debt?",
    "Explain what a hash table is and why lookups are fast.",
]


def build_eval(funcs: list[tuple], rng: random.Random, n_code: int = 20) -> list[dict]:
    cands = [f for f in funcs if _h(f[0]) % EVAL_PARTITION == 0]
    rng.shuffle(cands)
    out, names = [], set()
    for rel, name, sig, doc, src in cands:
        if (name in names or len(first_para(doc)) < 40 or len(sig) > 100 or "(self" in sig or "(cls" in sig
                or ">>>" in doc or not name.islower()):
            continue
        p = {"kind": "code", "name": name, "source": rel,
             "text": CODE_TEMPLATES[len(out) % 2].format(sig=sig, sig_short=sig, name=name, para=first_para(doc),
                                                          doc="\n    ".join(doc.strip().splitlines()[:12]))}
        out.append(p)
        names.add(name)
        if len(out) == n_code:
            break
    out += [{"kind": "chat", "name": "", "text": t} for t in EVAL_CHAT]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", help="training prompts, JSON lines (gzip if the name ends in .gz)")
    ap.add_argument("--eval-out", help="write a new evaluation set here (normally: the committed one is used)")
    ap.add_argument("--n-code", type=int, default=6000)
    ap.add_argument("--n-chat", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--max-files", type=int, default=20000)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    funcs = list(iter_functions(source_roots(), a.max_files))
    print(f"[prompts] {len(funcs)} documented public functions", file=sys.stderr)
    if a.eval_out:
        ev = build_eval(funcs, random.Random(a.seed + 1))
        Path(a.eval_out).write_text(json.dumps({"prompts": ev}, indent=1) + "\n")
        print(f"[prompts] eval: {len(ev)} prompts -> {a.eval_out}", file=sys.stderr)
    if not a.out:
        return
    ev = json.loads(EVAL_FILE.read_text())["prompts"] if not a.eval_out else ev
    eval_names = {p["name"] for p in ev if p["name"]}
    eval_norm = {norm(p["text"]) for p in ev}
    train, seen = [], set(eval_norm)
    pool = [f for f in funcs if _h(f[0]) % EVAL_PARTITION != 0 and f[1] not in eval_names]
    rng.shuffle(pool)
    used_names: dict[str, int] = {}
    for rel, name, sig, doc, src in pool:
        if len([p for p in train if p["kind"].startswith("code")]) >= a.n_code:
            break
        if used_names.get(name, 0) >= 2:      # many modules share names (get, run, ...): cap repeats
            continue
        p = code_prompt(rng, name, sig, doc, src)
        if p is None or norm(p["text"]) in seen:
            continue
        seen.add(norm(p["text"]))
        used_names[name] = used_names.get(name, 0) + 1
        train.append(p)
    for p in chat_prompts(rng, a.n_chat):
        if norm(p["text"]) not in seen:
            seen.add(norm(p["text"]))
            train.append(p)
    rng.shuffle(train)
    for i, p in enumerate(train):
        p["id"] = i
    assert not ({norm(p["text"]) for p in train} & eval_norm)
    assert not ({p["name"] for p in train if p["name"]} & eval_names)
    op = gzip.open if a.out.endswith(".gz") else open
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    with op(a.out, "wt", encoding="utf-8") as f:
        for p in train:
            f.write(json.dumps(p) + "\n")
    kinds = {}
    for p in train:
        kinds[p["kind"]] = kinds.get(p["kind"], 0) + 1
    print(f"[prompts] train: {len(train)} prompts {kinds} -> {a.out} ({Path(a.out).stat().st_size} bytes)",
          file=sys.stderr)


def load(path: str | Path) -> list[dict]:
    op = gzip.open if str(path).endswith(".gz") else open
    with op(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


if __name__ == "__main__":
    main()
