#!/usr/bin/env python3
"""DFlash conformance fixtures for blockspec, produced with the z-lab reference package (dflash 0.1.0).

    scripts/ref/setup-venv.sh                 # once: torch 2.11 CPU + transformers 4.57.6 + llama.cpp converter
    scripts/ref/dflash/setup-dflash.sh        # once: dflash 0.1.0 + transformers 5.15.0 overlay (see there why)
    ~/.cache/blockspec/venv/bin/python scripts/ref/dflash/make_dflash_fixture.py

What it does (details: scripts/ref/dflash/README.md, tests/fixtures/dflash/README.md):
  1. rebuilds the HF Qwen3ForCausalLM of tests/fixtures/tiny/qwen3 from its model-f32.gguf and checks its
     logits against that fixture's reference.json (eager attention, |d| <= 1e-5);
  2. makes a tiny DFlash drafter (z-lab DFlashDraftModel, 2 layers, hidden 64, block 8, mask id 511,
     target_layer_ids [0, 2]), random init, trains it briefly on CPU with the published DFlash loss on
     sequences that the target generated greedily from 18 random training prompts, and saves it in z-lab
     format (config.json + model.safetensors, f32) and as a llama.cpp `dflash` GGUF (llama.cpp's own
     convert_hf_to_gguf.py, which supports DFlashDraftModel, run with --target-model-dir);
  3. runs the reference dflash.model.dflash_generate (torch CPU, f32, temperature 0) on 6 held-out prompts
     and on 6 of the training prompts, records prompt / generated ids / per-step acceptance lengths / tau and
     every step's block, posterior and context bookkeeping (captured with forward hooks; the installed
     package is not modified), checks losslessness against plain greedy decoding, and writes
     tests/fixtures/dflash/reference.json.

The script runs under transformers 5.15.0 (it re-executes itself with PYTHONPATH=$VENV/dflash-overlay);
the GGUF conversion runs in a child process under the venv's own transformers 4.57.6, like
scripts/ref/make_tiny_models.py. Deterministic: fixed seeds, one torch thread.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
TINY = REPO / "tests" / "fixtures" / "tiny" / "qwen3"
OUT = REPO / "tests" / "fixtures" / "dflash"
DRAFT_NAME = "tiny-qwen3-drafter"
sys.path.insert(0, str(REPO / "scripts" / "ref"))

TRANSFORMERS_FOR_DFLASH = "5.15.0"

# drafter / generation settings
BLOCK = 8
MASK_ID = 511                 # an unused padding id of the tiny qwen3 vocab (499..511), inside the vocab
TARGET_LAYER_IDS = [0, 2]     # 0-based HF ids -> taps hidden_states[1], hidden_states[3]; GGUF: [1, 3]
DRAFT_LAYERS = 2
MAX_NEW = 48
PROMPT_LENS = [5, 10, 15, 20, 25, 30]
N_VOCAB_PROMPT = 496          # prompt tokens from the regular BPE ids 0..495
TRAIN_SEED, HELD_OUT_SEED, INIT_SEED = 1001, 2002, 3003
N_TRAIN_PER_LEN = 4           # training prompts per prompt length
TARGET_MIN_MARGIN = 0.1       # target top1-top2 logit margin at every greedy step used
DRAFT_MIN_MARGIN = 0.01       # drafter top1-top2 margin at every decision-relevant slot of a recorded case
# training
GAMMA = 4.0                   # loss weight exp(-(k-1)/gamma), the published value for block size 8
LR = 3e-3
WARMUP = 20
MAX_STEPS = 400
TAU_STOP = 4.5                # stop once the teacher-forced tau estimate on the training set reaches this
SIG = 7


def sha256(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def rnd(x):
    import numpy as np
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 1:
        return [float(f"{v:.{SIG}g}") for v in a.tolist()]
    return [rnd(r) for r in a]


# ----------------------------------------------------------------------------------------------------
# environment

def ensure_transformers_5() -> None:
    try:
        import transformers
        ver = transformers.__version__
    except ImportError:
        ver = None
    if ver == TRANSFORMERS_FOR_DFLASH:
        return
    overlay = Path(sys.prefix) / "dflash-overlay"
    if os.environ.get("_DFLASH_FIXTURE_REEXEC") or not (overlay / "transformers").is_dir():
        sys.exit(f"needs transformers {TRANSFORMERS_FOR_DFLASH} (found {ver}); run scripts/ref/dflash/setup-dflash.sh")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(overlay)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]),
               _DFLASH_FIXTURE_REEXEC="1")
    os.execve(sys.executable, [sys.executable, str(Path(__file__).resolve())] + sys.argv[1:], env)


def patch_torch_cuda() -> None:
    """transformers 5.x calls torch.cuda.is_current_stream_capturing() in every forward (is_tracing); with the
    CUDA stand-in libraries of scripts/ref/cuda_stubs.py that C call segfaults. There is no CUDA device here,
    so the honest answer is False."""
    import torch
    assert not torch.cuda.is_available()
    torch.cuda.is_current_stream_capturing = lambda: False


# ----------------------------------------------------------------------------------------------------
# target

GGUF_TO_HF = {"attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
              "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "attn_q_norm": "self_attn.q_norm",
              "attn_k_norm": "self_attn.k_norm", "ffn_norm": "post_attention_layernorm", "ffn_gate": "mlp.gate_proj",
              "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}


def load_target(impl: str):
    """Qwen3ForCausalLM of tests/fixtures/tiny/qwen3 with the weights of its model-f32.gguf (arch qwen3 keeps
    the HF layout, so every tensor maps 1:1)."""
    import make_tiny_models as mtm
    import numpy as np
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM
    cfg = json.loads((TINY / "config.json").read_text())
    config = Qwen3Config(**{k: v for k, v in cfg.items() if k not in ("architectures", "transformers_version", "dtype")})
    config._attn_implementation = impl
    model = Qwen3ForCausalLM(config).float().eval()
    sd = {}
    for k, v in mtm.gguf_tensors(TINY / "model-f32.gguf").items():
        p = k.split(".")
        if k == "token_embd.weight":
            n = "model.embed_tokens.weight"
        elif k == "output.weight":
            n = "lm_head.weight"
        elif k == "output_norm.weight":
            n = "model.norm.weight"
        else:
            n = f"model.layers.{p[1]}.{GGUF_TO_HF[p[2]]}.weight"
        sd[n] = torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32))
    model.load_state_dict(sd, strict=True)
    for prm in model.parameters():
        prm.requires_grad_(False)
    model.generation_config.eos_token_id = None
    return model


def check_target(models: dict) -> dict:
    import numpy as np
    import torch
    ref = json.loads((TINY / "reference.json").read_text())
    res = {}
    for impl, model in models.items():
        d = 0.0
        for s in ref["sequences"]:
            with torch.no_grad():
                lg = model(input_ids=torch.tensor([s["ids"]]), use_cache=False).logits[0].numpy()
            d = max(d, float(np.abs(lg - np.array(s["logits"])).max()))
        res[impl] = float(f"{d:.3g}")
    if res["eager"] > 1e-5:
        sys.exit(f"rebuilt target does not match {TINY}/reference.json: max |dlogit| {res['eager']}")
    return res


def greedy(model, prompt: list[int], n: int) -> tuple[list[int], list[float]]:
    """Plain greedy decoding of the target: n tokens with full (uncached) forward passes. Returns the
    tokens and the top1-top2 logit margin of every step."""
    import torch
    cur = list(prompt)
    margins = []
    with torch.no_grad():
        for _ in range(n):
            lg = model(input_ids=torch.tensor([cur]), use_cache=False).logits[0, -1]
            top = torch.topk(lg, 2).values
            margins.append(float(top[0] - top[1]))
            cur.append(int(lg.argmax()))
    return cur[len(prompt):], margins


def greedy_cached(model, prompts: list[list[int]], n: int) -> list[list[int]]:
    """Greedy continuation with a KV cache, batched over prompts of equal length (training data)."""
    import torch
    from transformers import DynamicCache
    out = []
    with torch.no_grad():
        x = torch.tensor(prompts)
        cache = DynamicCache(config=model.config)
        o = model(input_ids=x, past_key_values=cache, use_cache=True)
        cur = x
        for i in range(n):
            nxt = o.logits[:, -1].argmax(-1, keepdim=True)
            cur = torch.cat([cur, nxt], 1)
            if i + 1 < n:
                o = model(input_ids=nxt, past_key_values=cache, use_cache=True)
        out = cur.tolist()
    return out


def seq_margins(model, seq: list[int], start: int) -> list[float]:
    """top1-top2 margins of the full-forward logits that predict seq[start:], and check they are argmax."""
    import torch
    with torch.no_grad():
        lg = model(input_ids=torch.tensor([seq[:-1]]), use_cache=False).logits[0]
    top = torch.topk(lg, 2)
    if top.indices[start - 1:, 0].tolist() != seq[start:]:
        return [-1.0]
    return (top.values[start - 1:, 0] - top.values[start - 1:, 1]).tolist()


# ----------------------------------------------------------------------------------------------------
# drafter

def drafter_config_dict(target_cfg: dict) -> dict:
    """z-lab style config.json (qwen3 fields + DFlash fields)."""
    return {
        "architectures": ["DFlashDraftModel"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "block_size": BLOCK,
        "bos_token_id": target_cfg["bos_token_id"],
        "dflash_config": {"block_size": BLOCK, "mask_token_id": MASK_ID, "target_layer_ids": TARGET_LAYER_IDS},
        "dtype": "float32",
        "eos_token_id": target_cfg["eos_token_id"],
        "head_dim": 16,
        "hidden_act": "silu",
        "hidden_size": target_cfg["hidden_size"],
        "initializer_range": 0.02,
        "intermediate_size": 128,
        "layer_types": ["full_attention"] * DRAFT_LAYERS,
        "max_position_embeddings": target_cfg["max_position_embeddings"],
        "max_window_layers": DRAFT_LAYERS,
        "model_type": "qwen3",
        "num_attention_heads": 4,
        "num_hidden_layers": DRAFT_LAYERS,
        "num_key_value_heads": 2,
        "num_target_layers": target_cfg["num_hidden_layers"],
        "rms_norm_eps": target_cfg["rms_norm_eps"],
        "rope_scaling": None,
        "rope_theta": target_cfg["rope_theta"],
        "sliding_window": None,
        "tie_word_embeddings": False,
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": target_cfg["vocab_size"],
    }


def build_training_data(target, prompts: list[list[int]]):
    """Greedy continuations (MAX_NEW + BLOCK tokens) of the training prompts, padded to a common length,
    and the tapped target features of every position."""
    import torch
    n_cont = MAX_NEW + BLOCK
    seqs = [None] * len(prompts)
    for L in sorted({len(p) for p in prompts}):
        idx = [i for i, p in enumerate(prompts) if len(p) == L]
        for i, s in zip(idx, greedy_cached(target, [prompts[i] for i in idx], n_cont)):
            seqs[i] = s
    tmax = max(len(s) for s in seqs)
    ids = torch.tensor([s + [0] * (tmax - len(s)) for s in seqs])  # end padding: causal, never visible
    with torch.no_grad():
        hs = target(input_ids=ids, output_hidden_states=True, use_cache=False).hidden_states
        feats = torch.cat([hs[i + 1] for i in TARGET_LAYER_IDS], -1)
    return seqs, ids, feats


def train_drafter(target, drafter, prompts, ids, feats) -> dict:
    """The published DFlash objective, full batch: for every training sequence and every anchor a in
    [P, P + MAX_NEW) (the positions generation visits), block = [x_a, MASK x (B-1)] at positions a..a+B-1;
    the block attends to the context features of positions < a and to its whole own block (nothing else);
    slot k (1..B-1) predicts x_{a+k} through the target's lm_head; CE weighted by exp(-(k-1)/gamma).
    Uses the reference DFlashDraftModel.forward with an explicit boolean attention mask."""
    import torch
    import torch.nn.functional as F
    b, T = ids.shape
    nA, B = MAX_NEW, BLOCK
    P = torch.tensor([len(p) for p in prompts])
    anc = P[:, None] + torch.arange(nA)                                       # [b, nA]
    blk_pos = anc[:, :, None] + torch.arange(B)                               # [b, nA, B]
    blk_ids = torch.full((b, nA, B), MASK_ID)
    blk_ids[:, :, 0] = ids.gather(1, anc)
    labels = ids.gather(1, blk_pos.view(b, -1)).view(b, nA, B)[:, :, 1:]
    pos = torch.cat([torch.arange(T).expand(b, T), blk_pos.view(b, -1)], 1)
    ctx_vis = (torch.arange(T)[None, None, :] < anc[:, :, None])[:, :, None, :].expand(b, nA, B, T).reshape(b, nA * B, T)
    own = torch.eye(nA, dtype=torch.bool)[:, None, :, None].expand(nA, B, nA, B).reshape(nA * B, nA * B)
    mask = torch.cat([ctx_vis, own.expand(b, -1, -1)], 2)[:, None]           # [b, 1, nA*B, T + nA*B]
    noise = F.embedding(blk_ids.view(b, -1), target.get_input_embeddings().weight)
    w = torch.exp(-(torch.arange(1, B, dtype=torch.float32) - 1) / GAMMA)
    head = target.lm_head

    drafter.train()
    opt = torch.optim.AdamW(drafter.parameters(), lr=LR, betas=(0.9, 0.95), weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / WARMUP))
    log = []
    t0 = time.time()
    step = 0
    while True:
        h = drafter(target_hidden=feats, noise_embedding=noise, position_ids=pos, attention_mask=mask)
        lg = head(h.view(b, nA, B, -1)[:, :, 1:])
        ce = F.cross_entropy(lg.reshape(-1, lg.shape[-1]), labels.reshape(-1), reduction="none").view(labels.shape)
        loss = (ce * w).sum(-1).mean() / w.sum()
        with torch.no_grad():
            acc = (lg.argmax(-1) == labels).float()
            tau_tf = float(acc.cumprod(-1).sum(-1).mean() + 1)
        if step % 10 == 0 or tau_tf >= TAU_STOP or step == MAX_STEPS:
            entry = dict(step=step, loss=round(loss.item(), 4), tau_teacher_forced=round(tau_tf, 3),
                         slot_acc=[round(v, 3) for v in acc.mean((0, 1)).tolist()])
            log.append(entry)
            print(f"  [train] {entry} {time.time() - t0:.1f} s", flush=True)
        if tau_tf >= TAU_STOP or step == MAX_STEPS:
            break   # keep the weights that were just evaluated
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(drafter.parameters(), 1.0)
        opt.step()
        sched.step()
        step += 1
    drafter.eval()
    print(f"  [train] {step} steps, {time.time() - t0:.1f} s", flush=True)
    return dict(steps=step, final=log[-1], log=log)


def save_drafter_hf(drafter, cfg: dict, out_dir: Path) -> None:
    import torch
    from safetensors.torch import save_file
    out_dir.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().to(torch.float32).contiguous() for k, v in drafter.state_dict().items()
          if not k.startswith("rotary_emb")}
    save_file(dict(sorted(sd.items())), str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    (out_dir / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")


# ----------------------------------------------------------------------------------------------------
# reference run with instrumentation

class Recorder:
    """Captures, for one dflash_generate call, every target forward (input ids, positions, logits) and every
    drafter forward (context features fed, positions) and draft logits, via forward hooks and an instance-level
    wrapper of compute_logits. Nothing in the dflash package is changed."""

    def __init__(self, target, drafter):
        self.t, self.d, self.dl = [], [], []
        self.drafter = drafter
        self.hooks = [target.register_forward_hook(self._target, with_kwargs=True),
                      drafter.register_forward_hook(self._draft, with_kwargs=True)]
        orig = type(drafter).compute_logits.__get__(drafter)

        def compute_logits(hidden, head):
            lg = orig(hidden, head)
            self.dl.append(lg[0].detach().float().clone())
            return lg
        drafter.compute_logits = compute_logits

    def _target(self, mod, args, kwargs, out):
        ids = args[0] if args else kwargs["input_ids"]
        self.t.append(dict(ids=ids[0].tolist(), pos=kwargs["position_ids"][0].tolist(),
                           logits=out.logits[0].detach().float().clone()))

    def _draft(self, mod, args, kwargs, out):
        self.d.append(dict(feats=kwargs["target_hidden"][0].detach().clone(), pos=kwargs["position_ids"][0].tolist()))

    def close(self):
        for h in self.hooks:
            h.remove()
        del self.drafter.compute_logits


def run_reference(drafter, target, prompt: list[int], stop=None, keep_logits=False) -> dict:
    import torch
    import dflash.model as dm
    rec = Recorder(target, drafter)
    try:
        res = dm.dflash_generate(drafter, target, torch.tensor([prompt]), max_new_tokens=MAX_NEW,
                                 stop_token_ids=stop, temperature=0.0, return_stats=True)
    finally:
        rec.close()
    out = res.output_ids[0].tolist()
    N = len(prompt)
    assert out[:N] == prompt
    acc = list(res.acceptance_lengths)
    # reconstruct the steps from the captured calls
    assert len(rec.t) == len(acc) + 1 and len(rec.d) == len(acc) == len(rec.dl), (len(rec.t), len(rec.d), len(acc))
    steps = []
    start = N
    min_dm = float("inf")
    ctx_total = 0
    for i, L in enumerate(acc):
        tc, dc, dl = rec.t[i + 1], rec.d[i], rec.dl[i]
        block = tc["ids"]
        vs = len(block)
        assert tc["pos"] == list(range(start, start + vs))
        assert block[0] == out[start]
        drafts = dl.argmax(-1).tolist()
        assert drafts == block[1:]
        ctx = dc["feats"].shape[0]
        assert dc["pos"] == list(range(start - ctx, start + vs)), "drafter positions"
        ctx_total += ctx
        assert ctx_total == start, "context features fed so far == committed positions before the block"
        post = tc["logits"].argmax(-1).tolist()
        a = 0
        while a < vs - 1 and block[1 + a] == post[a]:
            a += 1
        produced_full = a + 1
        assert L <= produced_full
        new = out[start + 1:start + 1 + L]
        assert new == (block[1:a + 1] + [post[a]])[:L]
        # decision-relevant draft margins: slots 1..min(a+1, vs-1)
        top = torch.topk(dl, 2).values
        marg = (top[:, 0] - top[:, 1]).tolist()
        rel = marg[:min(a + 1, vs - 1)]
        min_dm = min(min_dm, min(rel))
        st = dict(start=start, verify_size=vs, context_fed=ctx, block=block, posterior=post,
                  accepted_drafts=a, accept_length=L, bonus=post[a] if L == a + 1 else None)
        if keep_logits:
            st["_draft_logits"] = dl
            st["_feats_all"] = torch.cat([d["feats"] for d in rec.d[:i + 1]], 0)
        steps.append(st)
        start += L
    gen = out[N:]
    return dict(prompt=prompt, generated=gen, accept_lengths=acc,
                tau=round(sum(acc) / len(acc), 4) if acc else None, steps=steps,
                min_draft_margin=round(min_dm, 4) if acc else None, prefill_token=gen[0] if gen else None)


# ----------------------------------------------------------------------------------------------------
# numpy re-implementation of one drafter call from the GGUF (checks the GGUF and the documented semantics)

def numpy_draft_logits(g: dict, tgt: dict, feats, block: list[int], start: int, eps: float, theta: float,
                       n_head: int, n_kv: int, hd: int, n_layer: int):
    import numpy as np
    f64 = lambda a: np.asarray(a, dtype=np.float64)  # noqa: E731

    def rms(x, w):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w

    def rope(x, pos):  # x [n, h, hd], NeoX / rotate_half
        inv = theta ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)
        ang = np.asarray(pos, dtype=np.float64)[:, None] * inv[None, :]
        cos = np.concatenate([np.cos(ang)] * 2, -1)[:, None, :]
        sin = np.concatenate([np.sin(ang)] * 2, -1)[:, None, :]
        rot = np.concatenate([-x[..., hd // 2:], x[..., :hd // 2]], -1)
        return x * cos + rot * sin

    n_ctx = feats.shape[0]
    ctx = rms(f64(feats) @ f64(g["fc.weight"]).T, f64(g["enc.output_norm.weight"]))
    x = f64(tgt["token_embd.weight"])[block]
    nb = len(block)
    pos_c, pos_b = list(range(n_ctx)), list(range(start, start + nb))
    assert start == n_ctx
    for il in range(n_layer):
        p = lambda n: f64(g[f"blk.{il}.{n}.weight"])  # noqa: E731
        h = rms(x, p("attn_norm"))
        q = rope(rms((h @ p("attn_q").T).reshape(nb, n_head, hd), p("attn_q_norm")), pos_b)
        kc = rope(rms((ctx @ p("attn_k").T).reshape(n_ctx, n_kv, hd), p("attn_k_norm")), pos_c)
        kb = rope(rms((h @ p("attn_k").T).reshape(nb, n_kv, hd), p("attn_k_norm")), pos_b)
        vc = (ctx @ p("attn_v").T).reshape(n_ctx, n_kv, hd)
        vb = (h @ p("attn_v").T).reshape(nb, n_kv, hd)
        k = np.concatenate([kc, kb], 0)
        v = np.concatenate([vc, vb], 0)
        o = np.zeros((nb, n_head, hd))
        for hh in range(n_head):
            kv = hh // (n_head // n_kv)
            s = q[:, hh] @ k[:, kv].T / math.sqrt(hd)       # no mask: every block slot sees all keys
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            o[:, hh] = s @ v[:, kv]
        x = x + o.reshape(nb, -1) @ p("attn_output").T
        h = rms(x, p("ffn_norm"))
        gte = h @ p("ffn_gate").T
        x = x + ((gte / (1 + np.exp(-gte))) * (h @ p("ffn_up").T)) @ p("ffn_down").T
    out = rms(x, f64(g["output_norm.weight"]))
    return (out @ f64(tgt["output.weight"]).T)[1:]


# ----------------------------------------------------------------------------------------------------
# GGUF conversion (child process under the venv's transformers 4.57.6)

def convert_child(hf_dir: str, outfile: str, target_dir: str, info_file: str) -> None:
    import make_tiny_models as mtm
    d = mtm.use_converter_paths()
    import transformers
    from transformers import DynamicCache
    Path(info_file).write_text(json.dumps(dict(
        transformers_version=transformers.__version__,
        dynamic_cache_has_activate_past_recording=hasattr(DynamicCache, "activate_past_recording"))))
    sys.argv = [str(d / "convert_hf_to_gguf.py"), hf_dir, "--outtype", "f32", "--outfile", outfile,
                "--target-model-dir", target_dir]
    import convert_hf_to_gguf  # llama.cpp's front end (identical to llama-cpp-sys-2 0.1.161's copy)
    import conversion.base
    orig = conversion.base.TextModel.get_vocab_base_pre

    def get_vocab_base_pre(self, tokenizer) -> str:
        # the tiny tokenizer was trained by make_tiny_models.py: its hash is unknown to the converter
        try:
            return orig(self, tokenizer)
        except NotImplementedError:
            return "qwen2"
    conversion.base.TextModel.get_vocab_base_pre = get_vocab_base_pre
    convert_hf_to_gguf.main()


def convert(hf_dir: Path, outfile: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "_DFLASH_FIXTURE_REEXEC")}
    with tempfile.TemporaryDirectory() as td:
        info = Path(td) / "info.json"
        subprocess.run([sys.executable, str(Path(__file__).resolve()), "_convert", str(hf_dir), str(outfile),
                        str(TINY), str(info)], check=True, env=env, stdout=subprocess.DEVNULL)
        return json.loads(info.read_text())


HF_TO_GGUF = {"fc.weight": "fc.weight", "hidden_norm.weight": "enc.output_norm.weight", "norm.weight": "output_norm.weight"}
for _g, _h in GGUF_TO_HF.items():
    HF_TO_GGUF[f"layers.{{}}.{_h}.weight"] = f"blk.{{}}.{_g}.weight"


def check_gguf(gguf_path: Path, hf_dir: Path) -> str:
    import make_tiny_models as mtm
    import numpy as np
    from safetensors.numpy import load_file
    g = mtm.gguf_tensors(gguf_path)
    hf = load_file(str(hf_dir / "model.safetensors"))
    seen = set()
    for k, v in hf.items():
        if k.startswith("layers."):
            il = k.split(".")[1]
            name = HF_TO_GGUF["layers.{}." + k.split(".", 2)[2]].format(il)
        else:
            name = HF_TO_GGUF[k]
        if name not in g or g[name].shape != v.shape or not np.array_equal(g[name], v):
            sys.exit(f"GGUF tensor {name} does not equal HF {k}")
        seen.add(name)
    extra = set(g) - seen
    if extra:
        sys.exit(f"unexpected GGUF tensors {sorted(extra)}")
    return f"all {len(seen)} GGUF tensors equal the HF drafter weights (exactly)"


# ----------------------------------------------------------------------------------------------------

def pick_prompts(target, rng, lens, n_cont, taken) -> list[list[int]]:
    out = []
    for L in lens:
        while True:
            p = [int(v) for v in rng.integers(0, N_VOCAB_PROMPT, size=L)]
            if tuple(p) in taken:
                continue
            seq = greedy_cached(target, [p], n_cont)[0]
            if min(seq_margins(target, seq, L)) >= TARGET_MIN_MARGIN:
                out.append(p)
                taken.add(tuple(p))
                break
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_convert":
        convert_child(*sys.argv[2:6])
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    ensure_transformers_5()
    patch_torch_cuda()

    import numpy as np
    import safetensors
    import torch
    import transformers
    import importlib.metadata as md
    import make_tiny_models as mtm
    mtm.use_converter_paths()  # gguf-py on sys.path (for reading GGUFs)
    import dflash.model as dm
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    # return_stats=True (needed for acceptance_lengths) times itself with torch.cuda.synchronize(); CPU here
    dm._cuda_time = time.perf_counter

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()

    print("== target")
    targets = {impl: load_target(impl) for impl in ("eager", "sdpa")}
    target = targets["eager"]
    tcheck = check_target(targets)
    print(f"  logits vs {TINY.relative_to(REPO)}/reference.json: max |d| {tcheck}")
    tcfg = json.loads((TINY / "config.json").read_text())

    print("== prompts")
    taken: set = set()
    train_prompts = pick_prompts(target, np.random.default_rng(TRAIN_SEED), PROMPT_LENS * N_TRAIN_PER_LEN, MAX_NEW + BLOCK, taken)
    held_rng = np.random.default_rng(HELD_OUT_SEED)

    print("== training data")
    seqs, ids, feats = build_training_data(target, train_prompts)

    print("== drafter")
    from transformers import Qwen3Config
    dcfg_dict = drafter_config_dict(tcfg)
    torch.manual_seed(INIT_SEED)
    drafter = dm.DFlashDraftModel(Qwen3Config(**dcfg_dict)).float()
    n_params = sum(p.numel() for p in drafter.parameters())
    train_info = train_drafter(target, drafter, train_prompts, ids, feats)
    hf_dir = out / DRAFT_NAME
    save_drafter_hf(drafter, dcfg_dict, hf_dir)
    # reload through the reference class, exactly like the package's own loader does
    loaded = dm.DFlashDraftModel.from_pretrained(str(hf_dir), dtype=torch.float32, attn_implementation="sdpa").eval()
    for k, v in drafter.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    assert loaded.block_size == BLOCK and loaded.mask_token_id == MASK_ID and loaded.target_layer_ids == TARGET_LAYER_IDS
    inv = 1.0 / (tcfg["rope_theta"] ** (torch.arange(0, 16, 2, dtype=torch.float32) / 16))
    assert torch.allclose(loaded.rotary_emb.inv_freq, inv), "drafter rope_theta"
    drafter = loaded

    print("== reference runs")

    def run_set(prompts_iter, keep=False):
        cases = []
        for L, cands in prompts_iter:
            for p in cands:
                c = run_reference(drafter, target, p, keep_logits=keep)
                print(f"  prompt len {L}: tau {c['tau']}, min draft margin {c['min_draft_margin']}", flush=True)
                if len(c["generated"]) == MAX_NEW and c["min_draft_margin"] >= DRAFT_MIN_MARGIN:
                    cases.append(c)
                    break
            else:
                sys.exit(f"no prompt of length {L} with draft margins >= {DRAFT_MIN_MARGIN}")
        return cases

    def held_out_candidates(L):
        while True:
            yield pick_prompts(target, held_rng, [L], MAX_NEW, taken)[0]

    held = run_set(((L, held_out_candidates(L)) for L in PROMPT_LENS), keep=True)
    seen = run_set(((L, [p for p in train_prompts if len(p) == L]) for L in PROMPT_LENS), keep=True)
    assert not {tuple(c["prompt"]) for c in held} & {tuple(p) for p in train_prompts}

    print("== checks")
    checks = dict(target_logits_vs_tiny_reference_max_abs=tcheck)
    lossless, bs1, sdpa_same = True, True, True
    for c in held + seen:
        g, m = greedy(target, c["prompt"], MAX_NEW)
        c["target_min_margin"] = round(min(m), 4)
        lossless &= g == c["generated"]
        r1 = dm.dflash_generate(drafter, target, torch.tensor([c["prompt"]]), MAX_NEW, None, block_size=1,
                                return_stats=True)
        bs1 &= r1.output_ids[0, len(c["prompt"]):].tolist() == c["generated"] and set(r1.acceptance_lengths) == {1}
        r2 = run_reference(drafter, targets["sdpa"], c["prompt"])
        sdpa_same &= r2["generated"] == c["generated"] and r2["accept_lengths"] == c["accept_lengths"]
    checks["dflash_greedy_equals_plain_greedy"] = lossless
    checks["dflash_block_size_1_equals_plain_greedy"] = bs1
    checks["same_result_with_sdpa_target"] = sdpa_same
    if not (lossless and bs1):
        sys.exit("dflash_generate is not lossless?!")

    # a stop-token case: stop token emitted in the middle of a multi-token step of a seen case
    stop_case = None
    for c in seen:
        for st in c["steps"]:
            new = c["generated"][st["start"] - len(c["prompt"]) + 1:st["start"] - len(c["prompt"]) + 1 + st["accept_length"]]
            if len(new) >= 3 and new[1] not in c["generated"][:st["start"] - len(c["prompt"]) + 2]:
                stop_tok = new[1]
                r = run_reference(drafter, target, c["prompt"], stop=[stop_tok])
                stop_case = dict(prompt=c["prompt"], stop_token_ids=[stop_tok], generated=r["generated"],
                                 accept_lengths=r["accept_lengths"], steps=r["steps"],
                                 note="same prompt as a cases_seen entry, with stop_token_ids=[t] where t is the 2nd "
                                      "token committed by a multi-token step: the step's accept_length is cut so the "
                                      "stop token is the last generated token")
                break
        if stop_case:
            break

    print("== GGUF")
    gguf_path = out / f"{DRAFT_NAME}.gguf"
    conv_info = convert(hf_dir, gguf_path)
    gguf_check = check_gguf(gguf_path, hf_dir)
    listing, meta = mtm.gguf_listing(gguf_path)
    assert meta["general.architecture"] == "dflash"
    assert list(meta["dflash.target_layers"]) == [i + 1 for i in TARGET_LAYER_IDS]
    assert meta["dflash.block_size"] == BLOCK and meta["tokenizer.ggml.mask_token_id"] == MASK_ID
    checks["gguf_weights"] = gguf_check
    checks["transformers_4_57_6_has_activate_past_recording"] = conv_info["dynamic_cache_has_activate_past_recording"]

    # numpy forward from the GGUFs reproduces the reference draft logits
    g = mtm.gguf_tensors(gguf_path)
    tg = mtm.gguf_tensors(TINY / "model-f32.gguf")
    worst = 0.0
    draft_refs = []
    for name, cs in (("cases", held), ("cases_seen", seen)):
        for ci, c in enumerate(cs):
            for si, st in enumerate(c["steps"]):
                blk_in = st["block"][:1] + [MASK_ID] * (st["verify_size"] - 1)   # what the drafter embeds
                lg = numpy_draft_logits(g, tg, st["_feats_all"].numpy(), blk_in, st["start"], tcfg["rms_norm_eps"],
                                        tcfg["rope_theta"], 4, 2, 16, DRAFT_LAYERS)
                worst = max(worst, float(np.abs(lg - st["_draft_logits"].numpy()).max()))
                if (name, ci, si) in (("cases", 0, 0), ("cases_seen", 0, 0), ("cases_seen", 0, 1)):
                    draft_refs.append(dict(case_set=name, case=ci, step=si, start=st["start"], block_input=blk_in,
                                           context_positions=st["start"],
                                           draft_logits=rnd(st["_draft_logits"].numpy())))
    checks["numpy_gguf_draft_logits_vs_reference_max_abs"] = float(f"{worst:.3g}")
    if worst > 1e-3:
        sys.exit(f"numpy GGUF drafter disagrees with the reference: {worst}")
    for c in held + seen:
        for st in c["steps"]:
            st.pop("_draft_logits", None)
            st.pop("_feats_all", None)

    tau_h = sum(c["tau"] for c in held) / len(held)
    tau_s = sum(c["tau"] for c in seen) / len(seen)
    print(f"  tau held-out {tau_h:.3f}  seen {tau_s:.3f}  checks {checks}")

    ref = dict(
        generator="scripts/ref/dflash/make_dflash_fixture.py",
        versions=dict(dflash=md.version("dflash"), torch=torch.__version__, transformers=transformers.__version__,
                      transformers_for_gguf_conversion=conv_info["transformers_version"],
                      safetensors=safetensors.__version__, numpy=np.__version__,
                      gguf_py="llama.cpp tree of llama-cpp-python 0.3.36 (gguf 0.19.0)"),
        target=dict(fixture="tests/fixtures/tiny/qwen3", gguf="model-f32.gguf", gguf_sha256=sha256(TINY / "model-f32.gguf"),
                    hf_class="Qwen3ForCausalLM", attn_implementation="eager", dtype="float32",
                    num_hidden_layers=tcfg["num_hidden_layers"]),
        drafter=dict(hf_dir=f"{DRAFT_NAME}/", gguf=f"{DRAFT_NAME}.gguf", hf_class="dflash.model.DFlashDraftModel",
                     n_params=n_params, config=dcfg_dict,
                     files={f"{DRAFT_NAME}/model.safetensors": sha256(hf_dir / "model.safetensors"),
                            f"{DRAFT_NAME}/config.json": sha256(hf_dir / "config.json"),
                            f"{DRAFT_NAME}.gguf": sha256(gguf_path)}),
        target_layer_ids=TARGET_LAYER_IDS,
        gguf_target_layers=[i + 1 for i in TARGET_LAYER_IDS],
        block_size=BLOCK,
        mask_token_id=MASK_ID,
        generation=dict(function="dflash.model.dflash_generate", max_new_tokens=MAX_NEW, temperature=0.0,
                        stop_token_ids=None, block_size=BLOCK, dtype="float32", device="cpu"),
        training=dict(prompts=len(train_prompts), prompt_lengths=PROMPT_LENS, seed=TRAIN_SEED, init_seed=INIT_SEED,
                      loss=f"CE on slots 1..{BLOCK - 1} weighted exp(-(k-1)/{GAMMA}), anchors P..P+{MAX_NEW - 1} of every "
                           f"training sequence (prompt + {MAX_NEW + BLOCK} greedy target tokens), full batch",
                      optimizer=f"AdamW lr {LR} betas (0.9, 0.95) wd 0, linear warmup {WARMUP} steps, grad clip 1",
                      stop=f"first step whose teacher-forced tau estimate on the training set >= {TAU_STOP}",
                      **train_info),
        selection=dict(target_min_margin=TARGET_MIN_MARGIN, draft_min_margin=DRAFT_MIN_MARGIN,
                       note="prompts drawn from seeded RNGs (held-out seed %d, training seed %d), uniform over ids "
                            "0..%d; kept only if the target's top1-top2 logit margin is >= %g at every greedy step, "
                            "and (recorded cases) the drafter's top1-top2 margin is >= %g at every slot that decides "
                            "the step (slots 1..min(a+1, B-1)), so small numeric differences cannot change the result"
                            % (HELD_OUT_SEED, TRAIN_SEED, N_VOCAB_PROMPT - 1, TARGET_MIN_MARGIN, DRAFT_MIN_MARGIN)),
        tau=dict(cases=round(tau_h, 4), cases_seen=round(tau_s, 4),
                 definition="tau of a case = mean of its accept_lengths (what dflash's benchmark reports per request; "
                            "the summary value is the mean over cases)"),
        semantics=SEMANTICS,
        fields=FIELDS,
        checks=checks,
        cases=held,
        cases_seen=seen,
        stop_case=stop_case,
        draft_logits_reference=dict(
            note="reference draft logits (drafter output slots 1..B-1 -> target lm_head) for single steps; the context "
                 "is the tapped target features of positions 0..start-1 (no draft KV reuse needed: context K/V "
                 "depend only on the features and positions); block_input is what the drafter embeds (the anchor "
                 "then B-1 mask ids; the recorded step's `block` holds the anchor then the resulting drafts)",
            steps=draft_refs),
    )
    (out / "reference.json").write_text(json.dumps(ref, indent=1, ensure_ascii=False) + "\n")
    (out / "gguf-listing.txt").write_text(listing + "\n")
    print(listing)
    total = 0
    for p in sorted(out.rglob("*")):
        if p.is_file():
            total += p.stat().st_size
            print(f"  {p.relative_to(out)}: {p.stat().st_size / 1e6:.3f} MB")
    print(f"total {total / 1e6:.2f} MB; {time.time() - t_start:.0f} s")


FIELDS = {
    "prompt": "input ids (no BOS: the tiny qwen3 has add_bos_token false)",
    "generated": "the ids after the prompt (output_ids[N:]): exactly max_new_tokens of them (stop_case: up to and "
                 "including the stop token); generated[0] is the prefill's token",
    "accept_lengths": "dflash_generate(..., return_stats=True).acceptance_lengths, one entry per step: tokens committed "
                      "by the step = accepted drafts + bonus, clipped (see semantics); sum = len(generated) - 1",
    "tau": "mean(accept_lengths)",
    "steps[i].start": "absolute position of the block's slot 0 = index of the anchor (last committed token) in "
                      "prompt + generated",
    "steps[i].verify_size": "block length used for both the drafter and the verify forward: min(B, N + max_new_tokens - start)",
    "steps[i].context_fed": "rows of new context features given to the drafter this step (positions start-context_fed..start-1)",
    "steps[i].block": "the verify input: [anchor, d_1 .. d_{verify_size-1}] (the drafter itself embeds [anchor, MASK ...])",
    "steps[i].posterior": "argmax of the target logits at every block position (posterior[k] predicts position start+k+1)",
    "steps[i].accepted_drafts": "a = number of leading drafts equal to the posterior (d_k == posterior[k-1])",
    "steps[i].accept_length": "= accept_lengths[i] = min(a + 1, N + max_new_tokens - start - 1) (or cut at a stop token)",
    "steps[i].bonus": "posterior[a] if it was committed (accept_length == a + 1), else null",
    "min_draft_margin": "smallest drafter top1-top2 logit margin over the slots that decided a step (slots 1..min(a+1, vs-1))",
    "target_min_margin": "smallest target top1-top2 logit margin over the greedy steps of the generation",
    "prefill_token": "generated[0]",
}

SEMANTICS = [
    "Positions: prompt tokens 0..N-1. Prefill = one target forward over the prompt; its last logits give the first "
    "generated token t_N = generated[0] (argmax). That token is NOT counted in accept_lengths.",
    "One step (one entry of accept_lengths / steps): start = index of the last committed token (the anchor, not yet "
    "run through the target). verify_size = min(B, N + max_new_tokens - start). Draft: the drafter gets the NEW "
    "context features (tapped target hidden states of the positions not yet fed, i.e. those committed in the previous "
    "step, or the whole prompt in step 0: `context_fed`) at their absolute positions start-context_fed..start-1, plus "
    "the block [anchor, MASK x (verify_size-1)] embedded with the target's embeddings at positions "
    "start..start+verify_size-1. Context K/V are cached in the draft cache (cropped back to `start` after the call, so "
    "the block's own K/V are dropped). Drafts d_1..d_{vs-1} = argmax of the target lm_head over drafter outputs of "
    "slots 1..vs-1 (slot 0's output is unused). NOTE: in the final step verify_size can be < B, and then the drafter "
    "runs on the SHORTER block (fewer mask slots), which changes its outputs (block attention is not masked).",
    "Verify: one target forward over block = [anchor, d_1..d_{vs-1}] at positions start..start+vs-1 (with the target KV "
    "cache of positions < start). posterior[k] = argmax target logits at block position k.",
    "Accept: a = number of leading k (1..vs-1) with d_k == posterior[k-1] (accepted_drafts). Committed tokens after "
    "the anchor: d_1..d_a and then the bonus token posterior[a]. accept_length = a + 1 (drafts + bonus), clipped to "
    "the remaining budget: accept_length = min(a + 1, N + max_new_tokens - start - 1); with stop_token_ids it is also "
    "cut right after the first stop token among the committed tokens. start += accept_length; the target KV cache is "
    "cropped to `start` (it keeps the K/V of block positions 0..accept_length-1, i.e. the anchor and the accepted "
    "drafts; the new anchor = last committed token has no K/V yet).",
    "Features fed to the drafter in the next step = the verify forward's tapped hidden states of block positions "
    "0..accept_length-1 (the anchor and the accepted drafts; NOT the bonus token, which becomes the next anchor). "
    "So after every step, context features cover exactly positions 0..start-1 (`context_fed` sums to start).",
    "Taps: for each id i in target_layer_ids, HF hidden_states[i+1] = the residual-stream output of decoder layer i "
    "(0-based; no final norm since i < num_hidden_layers-1 here), concatenated in target_layer_ids order -> fc -> "
    "hidden_norm. llama.cpp's GGUF stores target_layers = ids + 1 (it taps the INPUT of layer i+1, the same tensor).",
    "Termination: the loop runs while start + 1 < N + max_new_tokens; output = prompt + exactly max_new_tokens "
    "tokens (no stop tokens), so sum(accept_lengths) = max_new_tokens - 1.",
    "Greedy (temperature 0) output is identical to plain greedy decoding of the target (checked).",
]


if __name__ == "__main__":
    main()
