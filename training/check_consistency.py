"""Training forward == inference forward: the masked all-anchors-at-once drafter forward of train.py gives, for
every anchor a, the same block outputs as the reference inference call (dflash_generate's: context features of
positions 0..a-1, block [x_a, MASK...] at positions a..a+B-1, no mask). Tiny target, random drafter, f32 CPU.

    python -m training.check_consistency [--target tests/fixtures/tiny/qwen3/model-f32.gguf]
"""
from __future__ import annotations

import argparse
import random
import sys

from . import env


def main() -> None:
    env.setup()
    import torch
    import torch.nn.functional as F
    from . import gguf_to_torch as g2t
    from .train import block_mask, drafter_config, make_batch, make_drafter
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--target", default="tests/fixtures/tiny/qwen3/model-f32.gguf")
    a = ap.parse_args()
    torch.manual_seed(0)
    target, meta = g2t.load_model(a.target, torch.device("cpu"), torch.float32)
    B, taps, mask_id = 8, [0, 2], 499
    cfg = drafter_config(target.config, layers=2, intermediate=128, block=B, mask_id=mask_id, taps=taps,
                         dtype="float32")
    drafter = make_drafter(cfg).float().eval()
    g = torch.Generator().manual_seed(1)
    seqs = [(torch.randint(0, 490, (n,), generator=g).tolist(), p) for n, p in ((40, 10), (29, 5), (35, 20))]
    rng = random.Random(0)
    ids, anc, blk_pos, blk_ids, lab = make_batch(seqs, [0, 1, 2], 6, B, mask_id, rng, torch.device("cpu"))
    b, T = ids.shape
    nA = anc.shape[1]
    emb = target.get_input_embeddings().weight
    with torch.no_grad():
        hs = target(input_ids=ids, output_hidden_states=True, use_cache=False).hidden_states
        feats = torch.cat([hs[i + 1] for i in taps], -1)
        pos = torch.cat([torch.arange(T).expand(b, T), blk_pos.view(b, -1)], 1)
        h = drafter(target_hidden=feats, noise_embedding=F.embedding(blk_ids.view(b, -1), emb), position_ids=pos,
                    attention_mask=block_mask(anc, T, B)).view(b, nA, B, -1)
        worst, n = 0.0, 0
        for r in range(b):
            L = len(seqs[r][0])
            for i in range(nA):
                a_ = int(anc[r, i])
                if a_ < 0:
                    continue
                blk = torch.full((1, B), mask_id)
                blk[0, 0] = ids[r, a_]
                # features of a sequence alone, as the target computes them at inference (no padding)
                hs1 = target(input_ids=ids[r:r + 1, :L], output_hidden_states=True, use_cache=False).hidden_states
                f1 = torch.cat([hs1[j + 1] for j in taps], -1)[:, :a_]
                h1 = drafter(target_hidden=f1, noise_embedding=F.embedding(blk, emb),
                             position_ids=torch.arange(a_ + B)[None])
                worst = max(worst, float((h1[0] - h[r, i]).abs().max()))
                n += 1
        # labels: slot k of anchor a predicts x_{a+k}
        ok_lab = all(int(lab[r, i, k - 1]) in (-100, seqs[r][0][int(anc[r, i]) + k] if int(anc[r, i]) + k < len(
            seqs[r][0]) else -100) for r in range(b) for i in range(nA) if int(anc[r, i]) >= 0 for k in range(1, B))
    print(f"[check_consistency] {n} anchors: max |training - inference| = {worst:.2e}; labels ok: {ok_lab}")
    if worst > 1e-4 or not ok_lab or n == 0:
        sys.exit(1)


if __name__ == "__main__":
    main()
