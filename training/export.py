"""Drafter export.

    # training run -> z-lab HF dir (config.json + model.safetensors), what blockspec and dflash_generate load
    python -m training.export hf --run RUN_DIR --out DRAFT_DIR [--dtype bfloat16|float32]
    # z-lab HF dir -> llama.cpp `dflash` GGUF (target tokenizer copied in, as llama.cpp requires; --no-tokenizer), with
    # gguf-py: for machines without the blockspec binary (the GPU box). Here, `blockspec convert-draft` does it.
    python -m training.export gguf --hf DRAFT_DIR --target T.gguf --out D.gguf [--type q8_0|f16|f32]
    # dflash GGUF -> z-lab HF dir (dequantized): the exact weights of a quantized drafter, for dflash_generate
    python -m training.export unpack --gguf D.gguf --out DRAFT_DIR [--dtype float32]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import env

HF_TO_GGUF_LAYER = {
    "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm", "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
    "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm", "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
}
HF_TO_GGUF_FIXED = {"fc.weight": "fc.weight", "hidden_norm.weight": "enc.output_norm.weight",
                    "norm.weight": "output_norm.weight"}


def hf_to_gguf_name(n: str) -> str | None:
    n = n.removeprefix("model.")
    if n in HF_TO_GGUF_FIXED:
        return HF_TO_GGUF_FIXED[n]
    if not n.startswith("layers."):
        return None
    _, il, rest = n.split(".", 2)
    base, suf = rest.rsplit(".", 1)
    if base not in HF_TO_GGUF_LAYER:
        return None
    return f"blk.{il}.{HF_TO_GGUF_LAYER[base]}.{suf}"


def gguf_to_hf_name(n: str) -> str | None:
    inv = {v: k for k, v in HF_TO_GGUF_FIXED.items()}
    if n in inv:
        return inv[n]
    if not n.startswith("blk."):
        return None
    _, il, kind, suf = n.split(".", 3)
    inv_l = {v: k for k, v in HF_TO_GGUF_LAYER.items()}
    return f"layers.{il}.{inv_l[kind]}.{suf}" if kind in inv_l else None


def save_hf(state: dict, cfg: dict, out: Path, dtype: str) -> None:
    import torch
    from safetensors.torch import save_file
    out.mkdir(parents=True, exist_ok=True)
    td = getattr(torch, dtype)
    sd = {k: v.detach().to(td).contiguous().cpu() for k, v in state.items() if not k.startswith("rotary_emb")}
    save_file(dict(sorted(sd.items())), str(out / "model.safetensors"), metadata={"format": "pt"})
    cfg = dict(cfg, dtype=dtype)
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")


def cmd_hf(a) -> None:
    import torch
    run = Path(a.run)
    cfg = json.loads((run / "config.json").read_text())
    st = torch.load(run / "ckpt.pt", map_location="cpu", weights_only=False)
    save_hf(st["model"], cfg, Path(a.out), a.dtype)
    print(f"[export] {run}/ckpt.pt (step {st['step']}) -> {a.out}", file=sys.stderr)


def cmd_gguf(a) -> None:
    import numpy as np
    import gguf
    from gguf import GGMLQuantizationType as Q
    from safetensors.numpy import load_file
    from .gguf_to_torch import read_meta
    hf = Path(a.hf)
    cfg = json.loads((hf / "config.json").read_text())
    sd = {}
    for f in sorted(hf.glob("*.safetensors")):
        try:
            sd.update(load_file(str(f)))
        except TypeError:   # bf16 is not a numpy dtype: go through torch
            import torch
            from safetensors.torch import load_file as lt
            sd.update({k: v.float().numpy() for k, v in lt(str(f)).items()})
    tmeta = read_meta(a.target)
    dc = cfg.get("dflash_config", {})
    block = int(cfg.get("block_size", dc.get("block_size", 16)))
    mask = int(dc.get("mask_token_id", cfg.get("mask_token_id")))
    ids = dc.get("target_layer_ids", cfg.get("target_layer_ids"))
    n_head = cfg["num_attention_heads"]
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // n_head
    w = gguf.GGUFWriter(a.out, "dflash")
    w.add_string("general.type", "model")
    w.add_string("general.name", a.name)
    w.add_uint32("dflash.block_count", cfg["num_hidden_layers"])
    w.add_uint32("dflash.context_length", cfg.get("max_position_embeddings", 32768))
    w.add_uint32("dflash.embedding_length", cfg["hidden_size"])
    w.add_uint32("dflash.feed_forward_length", cfg["intermediate_size"])
    w.add_uint32("dflash.attention.head_count", n_head)
    w.add_uint32("dflash.attention.head_count_kv", cfg.get("num_key_value_heads", n_head))
    w.add_float32("dflash.rope.freq_base", float(cfg.get("rope_theta", 1e6)))
    w.add_float32("dflash.attention.layer_norm_rms_epsilon", float(cfg.get("rms_norm_eps", 1e-6)))
    w.add_uint32("dflash.attention.key_length", head_dim)
    w.add_uint32("dflash.attention.value_length", head_dim)
    qt = {"f32": Q.F32, "f16": Q.F16, "q8_0": Q.Q8_0}[a.type]
    w.add_uint32("general.file_type", {"f32": 0, "f16": 1, "q8_0": 7}[a.type])
    w.add_uint32("dflash.block_size", block)
    w.add_array("dflash.target_layers", [int(i) + 1 for i in ids])
    w.add_uint32("general.quantization_version", 2)
    for k, v in tmeta.items():
        if not k.startswith("tokenizer.") or a.no_tokenizer:
            continue
        if isinstance(v, bool):
            w.add_bool(k, v)
        elif isinstance(v, int):
            w.add_uint32(k, v)
        elif isinstance(v, float):
            w.add_float32(k, v)
        elif isinstance(v, str):
            w.add_string(k, v)
        elif isinstance(v, list):
            if k == "tokenizer.ggml.token_type":
                w.add_key_value(k, v, gguf.GGUFValueType.ARRAY, sub_type=gguf.GGUFValueType.INT32)
            else:
                w.add_array(k, v)
    w.add_uint32("tokenizer.ggml.mask_token_id", mask)
    for name in sorted(sd, key=lambda n: (hf_to_gguf_name(n) or "").replace("output_norm", "zz")):
        g = hf_to_gguf_name(name)
        if g is None:
            continue
        x = np.ascontiguousarray(sd[name], dtype=np.float32)
        if x.ndim == 2 and qt != Q.F32 and x.shape[1] % 32 == 0:
            q = gguf.quants.quantize(x, qt)
            w.add_tensor(g, q, raw_shape=q.shape, raw_dtype=qt)
        else:
            w.add_tensor(g, x)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"[export] {hf} -> {a.out} ({a.type}, {Path(a.out).stat().st_size} bytes)", file=sys.stderr)


def cmd_unpack(a) -> None:
    import numpy as np
    import torch
    from gguf import GGUFReader
    from gguf.quants import dequantize
    from .gguf_to_torch import _field
    r = GGUFReader(a.gguf)
    m = {k: _field(r, k) for k in r.fields if not k.startswith("GGUF.")}
    if m["general.architecture"] != "dflash":
        sys.exit(f"{a.gguf}: architecture {m['general.architecture']!r}, expected dflash")
    k = lambda s, d=None: m.get(f"dflash.{s}", d)  # noqa: E731
    sd = {}
    for t in r.tensors:
        n = gguf_to_hf_name(t.name)
        if n is None:
            continue
        x = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32)
        sd[n] = torch.from_numpy(x.reshape([int(d) for d in reversed(t.shape.tolist())]).copy())
    n_layer, n_head = int(k("block_count")), int(k("attention.head_count"))
    block = int(k("block_size", 16))
    ids = [int(i) - 1 for i in k("target_layers")]
    cfg = {
        "architectures": ["DFlashDraftModel"], "attention_bias": False, "attention_dropout": 0.0,
        "block_size": block,
        "dflash_config": {"block_size": block, "mask_token_id": int(m["tokenizer.ggml.mask_token_id"]),
                          "target_layer_ids": ids},
        "head_dim": int(k("attention.key_length")), "hidden_act": "silu", "hidden_size": int(k("embedding_length")),
        "initializer_range": 0.02, "intermediate_size": int(k("feed_forward_length")),
        "layer_types": ["full_attention"] * n_layer, "max_position_embeddings": int(k("context_length", 32768)),
        "max_window_layers": n_layer, "model_type": "qwen3", "num_attention_heads": n_head,
        "num_hidden_layers": n_layer, "num_key_value_heads": int(k("attention.head_count_kv", n_head)),
        "num_target_layers": a.num_target_layers or (max(ids) + 4),
        "rms_norm_eps": float(k("attention.layer_norm_rms_epsilon", 1e-6)), "rope_scaling": None,
        "rope_theta": float(k("rope.freq_base", 1e6)), "sliding_window": None, "tie_word_embeddings": False,
        "use_cache": True, "use_sliding_window": False,
        "vocab_size": len(m.get("tokenizer.ggml.tokens") or []) or 151936,
    }
    if a.config:   # the training run's own config.json (exact qwen3 fields, vocab size)
        given = json.loads(Path(a.config).read_text())
        for key in ("hidden_size", "num_hidden_layers", "intermediate_size", "block_size"):
            if given.get(key) != cfg[key]:
                sys.exit(f"--config {a.config}: {key} {given.get(key)} but the GGUF has {cfg[key]}")
        cfg = given
    save_hf(sd, cfg, Path(a.out), a.dtype)
    print(f"[export] {a.gguf} -> {a.out} (dequantized, {a.dtype})", file=sys.stderr)


def main() -> None:
    env.setup()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("hf")
    p.add_argument("--run", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p = sub.add_parser("gguf")
    p.add_argument("--hf", required=True)
    p.add_argument("--target", required=True, help="the target GGUF (its tokenizer.* keys are copied)")
    p.add_argument("--out", required=True)
    p.add_argument("--type", default="q8_0", choices=["f32", "f16", "q8_0"])
    p.add_argument("--name", default="blockspec DFlash drafter")
    p.add_argument("--no-tokenizer", action="store_true",
                   help="leave the target's tokenizer out (blockspec spelling, ~6 MB smaller for a Qwen vocabulary; "
                        "`blockspec convert-draft D.gguf -o L.gguf --type keep --target T.gguf` adds it for llama.cpp)")
    p = sub.add_parser("unpack")
    p.add_argument("--gguf", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--dtype", default="float32", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--num-target-layers", type=int, default=0)
    p.add_argument("--config", help="use this config.json (the training run's) instead of rebuilding one")
    a = ap.parse_args()
    {"hf": cmd_hf, "gguf": cmd_gguf, "unpack": cmd_unpack}[a.cmd](a)


if __name__ == "__main__":
    main()
