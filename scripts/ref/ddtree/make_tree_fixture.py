#!/usr/bin/env python3
"""DDTree conformance fixture: the reference tree builder and walk on fixed drafter logits.

Runs `build_ddtree_tree` and `follow_verified_tree` from the DDTree authors' own code
(github.com/liranringel/ddtree, `ddtree.py`) on the CPU, on deterministic logit arrays, and writes
what they produce to tests/fixtures/ddtree/trees.json for `tests/ddtree_tree.rs`:

  - the per-depth top-K log-probabilities and token ids the reference derives from the logits
    (our tree builder takes exactly these as input),
  - the tree: node token ids, depths and parents in pop order, and each row's visible rows,
  - walks: for given target tokens per tree row, the accepted rows and the next (bonus) token.

The reference code is not part of this repository. Check it out and pass its directory:

    git clone https://github.com/liranringel/ddtree /tmp/ddtree-ref    # commit c96427a
    ~/.cache/blockspec/venv-hybrid/bin/python scripts/ref/ddtree/make_tree_fixture.py /tmp/ddtree-ref

Needs numpy and torch (CPU). `ddtree.py` imports loguru and, through its model package, the
`datasets` package at module level; neither is used by the two functions called here, so they are
stubbed when missing, and its CUDA stage timer is replaced by a CPU clock. A re-run gives a byte-identical file.
"""

import argparse
import json
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch


def import_reference(path: Path):
    for name, attrs in (("loguru", ("logger",)), ("datasets", ("load_dataset", "Features", "Sequence", "Value"))):
        try:
            __import__(name)
        except ImportError:
            stub = types.ModuleType(name)
            for a in attrs:
                setattr(stub, a, types.SimpleNamespace(info=lambda *a, **k: None, warning=lambda *a, **k: None))
            sys.modules[name] = stub
    sys.path.insert(0, str(path))
    import ddtree  # noqa: E402  (the reference, from the given checkout)

    # Its stage timer synchronizes CUDA; time on the CPU instead (timings are not used).
    ddtree.cuda_time = time.perf_counter
    return ddtree


def logits_case(rng, depth, vocab, kind):
    if kind == "random":
        return rng.normal(0.0, 3.0, size=(depth, vocab))
    if kind == "peaked":
        x = rng.normal(0.0, 1.0, size=(depth, vocab))
        x[np.arange(depth), rng.integers(0, vocab, size=depth)] += 9.0
        return x
    if kind == "ties":
        # Few distinct values: equal log-probabilities within a depth and equal path scores
        # across depths exercise the tie rule.
        return rng.integers(0, 3, size=(depth, vocab)).astype(np.float64)
    if kind == "flat":
        return np.zeros((depth, vocab))
    raise ValueError(kind)


def walks_for(rng, n_rows, child_maps, vocab, n_walks):
    out = []
    for w in range(n_walks):
        # Per row: a child of the row (followed) with some probability, else another token.
        p_child = [0.5, 0.8, 1.0][w % 3]
        posterior = []
        for row in range(n_rows):
            kids = sorted(child_maps[row].keys())
            if kids and rng.random() < p_child:
                posterior.append(int(kids[rng.integers(0, len(kids))]))
            else:
                posterior.append(int(rng.integers(0, vocab)))
        out.append(posterior)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("reference", type=Path, help="checkout of github.com/liranringel/ddtree")
    ap.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parents[3] / "tests/fixtures/ddtree/trees.json",
    )
    args = ap.parse_args()
    ref = import_reference(args.reference)
    rng = np.random.default_rng(20260412)
    cases = []
    specs = []
    for kind in ("random", "peaked", "ties", "flat"):
        for depth, vocab in ((3, 5), (7, 40), (15, 64)):
            for budget in (1, 4, 8, 16, 22, 32):
                specs.append((kind, depth, vocab, budget))
    specs.append(("random", 2, 3, 16))  # fewer possible nodes than the budget: the heap runs dry
    specs.append(("random", 1, 50, 8))  # one depth: siblings only
    for kind, depth, vocab, budget in specs:
        logits = logits_case(rng, depth, vocab, kind).astype(np.float32)
        draft_logits = torch.from_numpy(logits)
        node_ids, node_depths, parents, child_maps, visibility, _ = ref.build_ddtree_tree(draft_logits, budget)
        # The top-K the builder read (recomputed exactly as build_ddtree_tree does).
        topk = min(budget, vocab)
        top_logits, top_ids = torch.topk(draft_logits.float(), k=topk, dim=-1)
        log_z = torch.logsumexp(draft_logits.float(), dim=-1, keepdim=True)
        top_lp = (top_logits - log_z).to(dtype=torch.float32)
        n_rows = 1 + int(node_ids.numel())
        walks = []
        for posterior in walks_for(rng, n_rows, child_maps, vocab, 6):
            accepted, next_token = ref.follow_verified_tree(child_maps, torch.tensor([posterior]))
            walks.append({"posterior": posterior, "accepted": [int(i) for i in accepted], "next_token": int(next_token)})
        vis = visibility.numpy()
        cases.append(
            {
                "name": f"{kind}-L{depth}-V{vocab}-b{budget}",
                "budget": budget,
                "top_log_probs": [[float(v) for v in row] for row in top_lp.numpy()],
                "top_token_ids": [[int(v) for v in row] for row in top_ids.numpy()],
                "node_token_ids": [int(t) for t in node_ids.tolist()],
                "node_depths": [int(d) for d in node_depths.tolist()],
                "parents": [int(p) for p in parents],
                "visible": [[int(j) for j in np.nonzero(vis[i])[0]] for i in range(n_rows)],
                "walks": walks,
            }
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "source": "liranringel/ddtree ddtree.py (build_ddtree_tree, follow_verified_tree), commit c96427a",
        "generator": "scripts/ref/ddtree/make_tree_fixture.py",
        "cases": cases,
    }
    # One case per line: compact, and diffs stay readable.
    head = json.dumps({k: v for k, v in doc.items() if k != "cases"}, indent=1)[:-2]
    body = ",\n".join(json.dumps(c, separators=(",", ":")) for c in cases)
    args.out.write_text(f'{head},\n "cases": [\n{body}\n]}}\n')
    print(f"{len(cases)} cases -> {args.out}")


if __name__ == "__main__":
    main()
