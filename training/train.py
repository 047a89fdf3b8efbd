"""Train a DFlash drafter (z-lab DFlash 1, `dflash.model.DFlashDraftModel`) for a GGUF target with the published
recipe (shared/reference/DFLASH.md): frozen target supplies the tapped features (residual outputs of 5 layers),
the frozen token embeddings (block input) and the frozen lm_head (logits); per sequence, anchors a are sampled
among response positions, block = [x_a, MASK x (B-1)] at positions a..a+B-1 attends to the context features of
positions < a and to its own whole block; slot k predicts x_{a+k}; loss = CE weighted by exp(-(k-1)/gamma)
(gamma 7 for B=16). AdamW (lr 6e-4, betas 0.9/0.95), 4% warmup then cosine, grad clip 1, bf16 autocast on CUDA.

Checkpoints (`OUT/ckpt.pt`: drafter, optimizer, schedule, step, RNG) every --ckpt-every steps and when
--time-budget runs out; a new run with the same OUT resumes. Logs every --log-every steps to OUT/loss.csv.

    python -m training.train --target T.gguf --data /tmp/gen --out /tmp/run --steps 2000 [--time-budget 500]
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import random
import sys
import time
from pathlib import Path

from . import env


def build_target_layer_ids(n_target_layers: int, n: int) -> list[int]:
    """z-lab's rule (dflash.model.build_target_layer_ids)."""
    if n == 1:
        return [n_target_layers // 2]
    start, end = 1, n_target_layers - 3
    return [round(start + (i * (end - start)) / (n - 1)) for i in range(n)]


def default_mask_id(tok_meta: dict) -> int:
    """An id the target never emits: the first padding entry of the vocabulary ([PAD...]) after the last
    special token, else the last id."""
    toks = list(tok_meta["tokenizer.ggml.tokens"])
    for i, t in enumerate(toks):
        if t.startswith("[PAD"):
            return i
    return len(toks) - 1


def drafter_config(target_cfg, *, layers: int, intermediate: int, block: int, mask_id: int,
                   taps: list[int], dtype: str = "bfloat16") -> dict:
    """z-lab config.json (qwen3 fields + DFlash fields); attention layout = the target's."""
    n_head = target_cfg.num_attention_heads
    head_dim = getattr(target_cfg, "head_dim", None) or target_cfg.hidden_size // n_head
    rope = getattr(target_cfg, "rope_theta", None)
    if rope is None:
        rope = (getattr(target_cfg, "rope_parameters", None) or {}).get("rope_theta", 1e6)
    return {
        "architectures": ["DFlashDraftModel"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "block_size": block,
        "bos_token_id": target_cfg.bos_token_id,
        "dflash_config": {"block_size": block, "mask_token_id": mask_id, "target_layer_ids": taps},
        "dtype": dtype,
        "eos_token_id": target_cfg.eos_token_id,
        "head_dim": head_dim,
        "hidden_act": "silu",
        "hidden_size": target_cfg.hidden_size,
        "initializer_range": 0.02,
        "intermediate_size": intermediate,
        "layer_types": ["full_attention"] * layers,
        "max_position_embeddings": target_cfg.max_position_embeddings,
        "max_window_layers": layers,
        "model_type": "qwen3",
        "num_attention_heads": n_head,
        "num_hidden_layers": layers,
        "num_key_value_heads": target_cfg.num_key_value_heads,
        "num_target_layers": target_cfg.num_hidden_layers,
        "rms_norm_eps": target_cfg.rms_norm_eps,
        "rope_scaling": None,
        "rope_theta": float(rope),
        "sliding_window": None,
        "tie_word_embeddings": False,
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": target_cfg.vocab_size,
    }


def _same_dtype_attention() -> None:
    """Under bf16 autocast the drafter's q/k come out of its f32-weight RMSNorms (q_norm/k_norm) as f32 while v
    (a Linear) is bf16; whether sdpa is on autocast's cast list differs by device, so hand it one dtype.
    Patches only the name dflash.model looks its attention up under (pure-dtype runs are unaffected)."""
    import dflash.model as dm
    if getattr(dm.ALL_ATTENTION_FUNCTIONS, "_blockspec_same_dtype", False):
        return
    registry = dm.ALL_ATTENTION_FUNCTIONS

    class SameDtype(dict):
        _blockspec_same_dtype = True

        def __getitem__(self, name):
            fn = registry[name]

            def call(module, q, k, v, *args, **kw):
                if q.dtype != v.dtype or k.dtype != v.dtype:
                    q, k = q.to(v.dtype), k.to(v.dtype)
                return fn(module, q, k, v, *args, **kw)
            return call

    dm.ALL_ATTENTION_FUNCTIONS = SameDtype()


def make_drafter(cfg: dict):
    from dflash.model import DFlashDraftModel
    _same_dtype_attention()
    from transformers import Qwen3Config
    c = Qwen3Config(**{k: v for k, v in cfg.items() if k not in ("architectures", "dtype")})
    c.dflash_config = cfg["dflash_config"]
    c.num_target_layers = cfg["num_target_layers"]
    c.block_size = cfg["block_size"]
    c._attn_implementation = "sdpa"
    return DFlashDraftModel(c)


def load_data(data_dir: Path, max_len: int) -> list[tuple[list[int], int]]:
    """(ids = prompt + response truncated to max_len, prompt length) for every generated sequence."""
    seqs = []
    for f in sorted(data_dir.glob("shard-*.jsonl")):
        for line in f.read_text().splitlines():
            r = json.loads(line)
            p, resp = r["prompt_ids"], r["response_ids"]
            if len(resp) < 2 or len(p) + 2 > max_len:
                continue
            seqs.append(((p + resp)[:max_len], len(p)))
    return seqs


def make_batch(seqs, idx, n_anchors: int, block: int, mask_id: int, rng: random.Random, device):
    """Token ids [b, T] (right padded), anchors [b, nA] (-1: unused), labels [b, nA, B-1] (-100: none)."""
    import torch
    rows = [seqs[i] for i in idx]
    T = max(len(s) for s, _ in rows)
    ids = torch.zeros(len(rows), T, dtype=torch.long)
    anc = torch.full((len(rows), n_anchors), -1, dtype=torch.long)
    for r, (s, P) in enumerate(rows):
        ids[r, :len(s)] = torch.tensor(s)
        cand = list(range(P, len(s) - 1))          # anchor = a committed token with >= 1 token after it
        pick = sorted(rng.sample(cand, min(n_anchors, len(cand))))
        anc[r, :len(pick)] = torch.tensor(pick, dtype=torch.long)
    lens = torch.tensor([len(s) for s, _ in rows])
    blk_pos = anc.clamp(min=0)[:, :, None] + torch.arange(block)             # [b, nA, B]
    valid = (anc[:, :, None] >= 0) & (blk_pos < lens[:, None, None])
    lab = ids.gather(1, blk_pos.clamp(max=T - 1).view(len(rows), -1)).view(blk_pos.shape)
    lab = torch.where(valid, lab, torch.full_like(lab, -100))[:, :, 1:]
    blk_ids = torch.full_like(blk_pos, mask_id)
    blk_ids[:, :, 0] = ids.gather(1, anc.clamp(min=0))
    return ids.to(device), anc.to(device), blk_pos.to(device), blk_ids.to(device), lab.to(device)


def block_mask(anc, T: int, block: int):
    """[b, 1, nA*B, T + nA*B] bool: block i's slots see context positions < a_i and block i's own slots."""
    import torch
    b, nA = anc.shape
    dev = anc.device
    ctx = torch.arange(T, device=dev)[None, None, :] < anc[:, :, None]          # [b, nA, T]
    ctx = ctx[:, :, None, :].expand(b, nA, block, T).reshape(b, nA * block, T)
    own = torch.eye(nA, dtype=torch.bool, device=dev)[:, None, :, None].expand(nA, block, nA, block)
    own = own.reshape(nA * block, nA * block)
    return torch.cat([ctx, own.expand(b, -1, -1)], 2)[:, None]


def lr_at(frac: float, base: float, warmup_frac: float, min_frac: float = 0.0) -> float:
    """Linear warmup over the first warmup_frac of training, then cosine to 0 (frac = progress 0..1)."""
    if frac < warmup_frac:
        return base * max(frac / warmup_frac, 0.01)
    p = min(1.0, (frac - warmup_frac) / max(1e-9, 1 - warmup_frac))
    return base * (min_frac + (1 - min_frac) * 0.5 * (1 + math.cos(math.pi * p)))


def main() -> None:
    env.setup()
    import torch
    import torch.nn.functional as F
    from . import gguf_to_torch as g2t
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", required=True)
    ap.add_argument("--data", required=True, help="generate.py output folder (shard-*.jsonl)")
    ap.add_argument("--out", required=True, help="run folder: ckpt.pt, loss.csv, config.json, train.json")
    ap.add_argument("--steps", type=int, default=2000, help="total optimizer steps (the LR schedule's length)")
    ap.add_argument("--train-seconds", type=float, default=0,
                    help="instead of --steps: train for this many seconds of training-loop time in total (over "
                         "all resumed calls); warmup and cosine follow the elapsed fraction")
    ap.add_argument("--batch", type=int, default=0, help="sequences per step (default 16 CUDA, 2 CPU)")
    ap.add_argument("--anchors", type=int, default=64, help="anchors (blocks) per sequence")
    ap.add_argument("--max-len", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--intermediate", type=int, default=2048)
    ap.add_argument("--block", type=int, default=16)
    ap.add_argument("--taps", type=int, default=5, help="number of tapped target layers (z-lab rule)")
    ap.add_argument("--target-layer-ids", help="comma-separated 0-based ids (overrides --taps)")
    ap.add_argument("--mask-token-id", type=int)
    ap.add_argument("--gamma", type=float, default=0, help="loss decay (default 7 for B=16, 4 for B=8)")
    ap.add_argument("--lr", type=float, default=6e-4)
    ap.add_argument("--warmup", type=float, default=0.04)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ckpt-every", type=int, default=200)
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--time-budget", type=float, default=0, help="seconds; checkpoint and stop when exceeded")
    ap.add_argument("--device")
    ap.add_argument("--amp", choices=["auto", "on", "off"], default="auto",
                    help="bf16 autocast for the drafter (auto: on CUDA only)")
    a = ap.parse_args()
    out = Path(a.out)
    saved = out / "args.json"
    if saved.exists():     # resume: the run's hyperparameters (and schedule length) are those of its first call
        keep = {"time_budget", "device", "ckpt_every", "log_every", "out", "data", "target", "amp"}
        for k, v in json.loads(saved.read_text()).items():
            if k not in keep:
                setattr(a, k, v)
    else:
        out.mkdir(parents=True, exist_ok=True)
        saved.write_text(json.dumps(vars(a), indent=1) + "\n")
    t_start = time.time()
    dev = env.device(a.device)
    cuda = dev.type == "cuda"
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
    batch = a.batch or (16 if cuda else 2)
    amp = a.amp == "on" or (a.amp == "auto" and cuda)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)

    target, meta = g2t.load_model(a.target, dev)
    tcfg = target.config
    cfg_file = out / "config.json"
    if cfg_file.exists():
        cfg = json.loads(cfg_file.read_text())
    else:
        taps = ([int(x) for x in a.target_layer_ids.split(",")] if a.target_layer_ids
                else build_target_layer_ids(tcfg.num_hidden_layers, a.taps))
        mask_id = a.mask_token_id if a.mask_token_id is not None else default_mask_id(meta)
        cfg = drafter_config(tcfg, layers=a.layers, intermediate=a.intermediate, block=a.block, mask_id=mask_id,
                             taps=taps)
        cfg_file.write_text(json.dumps(cfg, indent=2) + "\n")
    B = cfg["block_size"]
    gamma = a.gamma or (7.0 if B >= 16 else 4.0)
    taps = cfg["dflash_config"]["target_layer_ids"]
    mask_id = cfg["dflash_config"]["mask_token_id"]
    torch.manual_seed(a.seed)
    drafter = make_drafter(cfg).to(dev, dtype=torch.float32)
    n_params = sum(p.numel() for p in drafter.parameters())
    opt = torch.optim.AdamW(drafter.parameters(), lr=a.lr, betas=(0.9, 0.95), weight_decay=0.0)
    step = 0
    trained_s = 0.0
    rng = random.Random(a.seed)
    ck = out / "ckpt.pt"
    if ck.exists():
        st = torch.load(ck, map_location=dev, weights_only=False)
        drafter.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        step = st["step"]
        trained_s = st.get("trained_s", 0.0)
        rng.setstate(st["rng"])
        torch.set_rng_state(st["torch_rng"].cpu())  # map_location moved it to the device
        print(f"[train] resumed at step {step}", file=sys.stderr, flush=True)

    def save():
        tmp = ck.with_suffix(".tmp")
        torch.save({"model": drafter.state_dict(), "opt": opt.state_dict(), "step": step, "trained_s": trained_s,
                    "rng": rng.getstate(), "torch_rng": torch.get_rng_state()}, tmp)
        tmp.rename(ck)

    seqs = load_data(Path(a.data), a.max_len)
    if not seqs:
        sys.exit(f"no training sequences in {a.data}")
    n_resp = sum(len(s) - P for s, P in seqs)
    print(f"[train] {len(seqs)} sequences, {n_resp} response tokens; drafter {n_params / 1e6:.1f} M params, "
          f"{cfg['num_hidden_layers']} layers, block {B}, taps {taps}, mask {mask_id}, gamma {gamma}; "
          f"batch {batch} x {a.anchors} anchors; " +
          (f"{trained_s:.0f}/{a.train_seconds:.0f} s trained" if a.train_seconds else f"steps {step}..{a.steps}"),
          file=sys.stderr, flush=True)

    def progress() -> float:
        return trained_s / a.train_seconds if a.train_seconds else step / a.steps
    emb = target.get_input_embeddings().weight
    head = target.lm_head if getattr(target, "lm_head", None) is not None else target.get_output_embeddings()
    w = torch.exp(-(torch.arange(1, B, dtype=torch.float32, device=dev) - 1) / gamma)
    log_f = out / "loss.csv"
    new_log = not log_f.exists()
    log_file = open(log_f, "a", newline="")
    logw = csv.writer(log_file)
    if new_log:
        logw.writerow(["step", "train_s", "loss", "lr", "tau_teacher_forced", "acc_slot1", "acc_slot4", "acc_slot8",
                       "acc_slot15", "elapsed_s"])
    order: list[int] = []
    drafter.train()
    t0 = time.time()
    stats = []
    while progress() < 1.0:
        t_step = time.time()
        if a.time_budget and time.time() - t_start > a.time_budget:
            print(f"[train] time budget reached at step {step}", file=sys.stderr, flush=True)
            break
        if len(order) < batch:
            order += rng.sample(range(len(seqs)), len(seqs))
        idx, order = order[:batch], order[batch:]
        ids, anc, blk_pos, blk_ids, lab = make_batch(seqs, idx, a.anchors, B, mask_id, rng, dev)
        b, T = ids.shape
        nA = anc.shape[1]
        with torch.no_grad():
            hs = target(input_ids=ids, output_hidden_states=True, use_cache=False, logits_to_keep=1).hidden_states
            feats = torch.cat([hs[i + 1] for i in taps], -1)
            del hs
            noise = F.embedding(blk_ids.view(b, -1), emb)
        pos = torch.cat([torch.arange(T, device=dev).expand(b, T), blk_pos.view(b, -1)], 1)
        mask = block_mask(anc, T, B)
        lr = lr_at(progress(), a.lr, a.warmup)
        for g in opt.param_groups:
            g["lr"] = lr
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=amp):
            h = drafter(target_hidden=feats.to(torch.bfloat16 if amp else torch.float32),
                        noise_embedding=noise.to(torch.bfloat16 if amp else torch.float32),
                        position_ids=pos, attention_mask=mask)
            h = h.view(b, nA, B, -1)[:, :, 1:]
            keep = lab != -100
            hk = h[keep]                                              # [n, H] valid slots only
            lg = head(hk.to(head.weight.dtype)).float()
        tgt = lab[keep]
        ce = F.cross_entropy(lg, tgt, reduction="none")
        wk = w.expand(b, nA, B - 1)[keep]
        loss = (ce * wk).sum() / wk.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(drafter.parameters(), 1.0)
        opt.step()
        step += 1
        if cuda:
            torch.cuda.synchronize()
        trained_s += time.time() - t_step
        if step % a.log_every == 0 or progress() >= 1.0 or step == 1:
            with torch.no_grad():
                hit = torch.zeros(b, nA, B - 1, device=dev)
                hit[keep] = (lg.argmax(-1) == tgt).float()
                full = keep.all(-1)                                  # blocks with all 15 labels
                acc = hit[full]
                tau = float(acc.cumprod(-1).sum(-1).mean() + 1) if acc.numel() else float("nan")
                sa = acc.mean(0).tolist() if acc.numel() else [float("nan")] * (B - 1)
            row = [step, round(trained_s, 1), round(loss.item(), 5), f"{lr:.3e}", round(tau, 4)] + \
                  [round(sa[min(k, B - 2)], 4) for k in (0, 3, 7, 14)] + [round(time.time() - t0, 1)]
            logw.writerow(row)
            log_file.flush()
            stats.append(row)
            print(f"[train] step {step} ({100 * progress():.1f}%) loss {row[2]} lr {row[3]} tau_tf {row[4]} "
                  f"acc1 {row[5]} ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
        if step % a.ckpt_every == 0:
            save()
    save()
    log_file.close()
    info = {"step": step, "steps": a.steps, "trained_s": round(trained_s, 1), "train_seconds": a.train_seconds, "sequences": len(seqs), "response_tokens": n_resp,
            "params": n_params, "batch": batch, "anchors": a.anchors, "gamma": gamma, "lr": a.lr,
            "seconds_this_run": round(time.time() - t_start, 1), "done": progress() >= 1.0}
    runs = json.loads((out / "train.json").read_text())["runs"] if (out / "train.json").exists() else []
    runs.append(info)
    (out / "train.json").write_text(json.dumps({"runs": runs}, indent=1) + "\n")
    print(f"[train] {json.dumps(info)}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
