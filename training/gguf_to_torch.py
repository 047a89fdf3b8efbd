"""Load a llama.cpp GGUF (Qwen2 / Qwen3 / Llama architectures) into a transformers causal LM by dequantizing
every tensor with gguf-py (`GGUFReader` + `gguf.quants.dequantize`), and build a `tokenizers` BPE tokenizer
(with the GGUF's chat template) from its `tokenizer.ggml.*` metadata. No HF checkpoint is needed: training sees
exactly the weights (embeddings, lm_head, taps) that blockspec and llama.cpp run.

    python -m training.gguf_to_torch MODEL.gguf [--prompt TEXT] [-n 16]     # greedy check, prints JSON
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from . import env

GGUF_TO_HF = {
    "attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm", "ffn_norm": "post_attention_layernorm", "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
}

# Qwen2's pre-tokenizer split (llama.cpp LLAMA_VOCAB_PRE_TYPE_QWEN2, HF tokenizer.json of Qwen2.5)
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def _field(r, key, default=None):
    f = r.fields.get(key)
    if f is None:
        return default
    return f.contents()


def read_meta(path: str | Path) -> dict:
    from gguf import GGUFReader
    r = GGUFReader(str(path))
    return {k: _field(r, k) for k in r.fields if not k.startswith("GGUF.")}


def hf_config(meta: dict, n_vocab: int, tied: bool):
    """transformers config for the GGUF's architecture."""
    arch = meta["general.architecture"]
    k = lambda s, d=None: meta.get(f"{arch}.{s}", d)  # noqa: E731
    n_head = int(k("attention.head_count"))
    n_embd = int(k("embedding_length"))
    common = dict(
        vocab_size=n_vocab, hidden_size=n_embd, intermediate_size=int(k("feed_forward_length")),
        num_hidden_layers=int(k("block_count")), num_attention_heads=n_head,
        num_key_value_heads=int(k("attention.head_count_kv", n_head)),
        max_position_embeddings=int(k("context_length", 32768)),
        rms_norm_eps=float(k("attention.layer_norm_rms_epsilon", 1e-6)),
        rope_theta=float(k("rope.freq_base", 1e6)), tie_word_embeddings=tied,
        bos_token_id=meta.get("tokenizer.ggml.bos_token_id"), eos_token_id=meta.get("tokenizer.ggml.eos_token_id"),
    )
    if arch == "qwen2":
        from transformers import Qwen2Config
        c = Qwen2Config(**common)
    elif arch == "qwen3":
        from transformers import Qwen3Config
        c = Qwen3Config(head_dim=int(k("attention.key_length", n_embd // n_head)), **common)
    elif arch == "llama":
        from transformers import LlamaConfig
        c = LlamaConfig(head_dim=int(k("attention.key_length", n_embd // n_head)), **common)
    else:
        raise SystemExit(f"unsupported target architecture {arch!r} (qwen2, qwen3, llama)")
    # transformers 5 keeps rope_theta in rope_parameters; make sure both spellings carry it
    rp = getattr(c, "rope_parameters", None)
    if isinstance(rp, dict):
        rp["rope_theta"] = float(k("rope.freq_base", 1e6))
    return c


def _unpermute(w, n_head):
    """Undo llama.cpp's Q/K row permutation of the `llama` architecture (HF rotate_half layout)."""
    out, inp = w.shape
    return w.reshape(n_head, out // n_head // 2, 2, inp).swapaxes(1, 2).reshape(out, inp)


def load_state_dict(path: str | Path, meta: dict | None = None):
    """All tensors of the GGUF dequantized to float32 numpy arrays under HF names."""
    import numpy as np
    from gguf import GGUFReader
    from gguf.quants import dequantize
    r = GGUFReader(str(path))
    meta = meta or {k: _field(r, k) for k in r.fields if not k.startswith("GGUF.")}
    arch = meta["general.architecture"]
    n_head = int(meta[f"{arch}.attention.head_count"])
    n_head_kv = int(meta.get(f"{arch}.attention.head_count_kv", n_head))
    sd = {}
    for t in r.tensors:
        a = dequantize(t.data, t.tensor_type)
        a = np.asarray(a, dtype=np.float32).reshape([int(d) for d in reversed(t.shape.tolist())])
        name = t.name
        if name == "token_embd.weight":
            n = "model.embed_tokens.weight"
        elif name == "output.weight":
            n = "lm_head.weight"
        elif name == "output_norm.weight":
            n = "model.norm.weight"
        elif name.startswith("blk."):
            _, il, kind, suf = name.split(".", 3)
            if kind not in GGUF_TO_HF:
                continue
            n = f"model.layers.{il}.{GGUF_TO_HF[kind]}.{suf}"
            if arch == "llama" and kind in ("attn_q", "attn_k") and suf == "weight":
                a = _unpermute(a, n_head if kind == "attn_q" else n_head_kv)
        else:
            continue
        sd[n] = a
    return sd, meta


def load_model(path: str | Path, device=None, dtype=None):
    """(model, meta): a transformers causal LM holding the GGUF's dequantized weights, eval mode, frozen."""
    import torch
    from transformers import AutoModelForCausalLM
    device = env.device(device) if not isinstance(device, torch.device) else device
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    t0 = time.time()
    import os
    cache_dir = os.environ.get("BLOCKSPEC_TORCH_CACHE")
    cache = None
    if cache_dir:   # dequantized weights kept as safetensors (GPU box: saves the dequantization per call)
        st = Path(path).stat()
        cache = Path(cache_dir) / f"{Path(path).stem}-{st.st_size}-{str(dtype).split('.')[-1]}.safetensors"
    if cache is not None and cache.exists():
        from safetensors.torch import load_file
        tsd = load_file(str(cache))
        meta = read_meta(path)
    else:
        sd, meta = load_state_dict(path)
        tsd = {k: torch.from_numpy(v if v.flags.writeable else v.copy()).to(dtype) for k, v in sd.items()}
        del sd
        if cache is not None:
            from safetensors.torch import save_file
            cache.parent.mkdir(parents=True, exist_ok=True)
            save_file(tsd, str(cache.with_suffix(".tmp")))
            cache.with_suffix(".tmp").rename(cache)
    tied = "lm_head.weight" not in tsd
    cfg = hf_config(meta, tsd["model.embed_tokens.weight"].shape[0], tied)
    cfg._attn_implementation = "sdpa"
    with torch.device(device):
        prev = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            model = AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa")
        finally:
            torch.set_default_dtype(prev)
    missing, unexpected = model.load_state_dict(tsd, strict=False)
    missing = [m for m in missing if not (tied and m == "lm_head.weight")]
    if missing or unexpected:
        raise SystemExit(f"{path}: tensors missing {missing[:5]} / unexpected {unexpected[:5]}")
    if tied:
        model.tie_weights()
    model.to(device=device, dtype=dtype).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    model.generation_config.eos_token_id = None
    print(f"[gguf_to_torch] {Path(path).name}: {meta['general.architecture']} {cfg.num_hidden_layers} layers, "
          f"hidden {cfg.hidden_size}, {'tied' if tied else 'untied'} head, {dtype} on {device}, "
          f"{time.time() - t0:.1f} s", file=sys.stderr, flush=True)
    return model, meta


def load_tokenizer(path: str | Path, meta: dict | None = None):
    """A transformers PreTrainedTokenizerFast built from the GGUF's gpt2-style BPE vocabulary (Qwen2 split)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    meta = meta or read_meta(path)
    if meta.get("tokenizer.ggml.model") != "gpt2":
        raise SystemExit(f"{path}: tokenizer {meta.get('tokenizer.ggml.model')!r}: only gpt2-style BPE is supported")
    tokens = list(meta["tokenizer.ggml.tokens"])
    types = list(meta.get("tokenizer.ggml.token_type") or [1] * len(tokens))
    merges = [tuple(m.split(" ", 1)) for m in meta.get("tokenizer.ggml.merges") or []]
    vocab = {t: i for i, t in enumerate(tokens)}
    tk = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=False, fuse_unk=False, byte_fallback=False))
    tk.normalizer = normalizers.NFC()
    tk.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tk.decoder = decoders.ByteLevel()
    special = [AddedToken(t, special=True, normalized=False) for t, ty in zip(tokens, types) if ty in (3, 4)]
    tk.add_special_tokens(special)
    eos = meta.get("tokenizer.ggml.eos_token_id")
    pad = meta.get("tokenizer.ggml.padding_token_id")
    tok = PreTrainedTokenizerFast(tokenizer_object=tk,
                                  eos_token=tokens[eos] if eos is not None else None,
                                  pad_token=tokens[pad] if pad is not None else None)
    tmpl = meta.get("tokenizer.chat_template")
    if tmpl:
        tok.chat_template = tmpl
    return tok


def stop_ids(meta: dict, tok) -> list[int]:
    """End-of-turn ids: the GGUF's eos/eot plus <|im_end|> / <|endoftext|> where present."""
    ids = set()
    for k in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id"):
        if meta.get(k) is not None:
            ids.add(int(meta[k]))
    for t in ("<|im_end|>", "<|endoftext|>", "<|eot_id|>"):
        i = tok.convert_tokens_to_ids(t)
        if isinstance(i, int) and i >= 0 and i != tok.unk_token_id:
            ids.add(i)
    return sorted(ids)


def chat_ids(tok, user: str) -> list[int]:
    """Prompt ids: the GGUF's chat template applied to one user message, generation prompt added."""
    text = tok.apply_chat_template([{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True)
    return tok(text, add_special_tokens=False)["input_ids"]


def check_fixture(model, tok, path: str, max_cases: int) -> None:
    """For each case: our tokenizer must give llama.cpp's prompt tokens, and one teacher-forced forward over
    prompt + llama.cpp's greedy tokens must pick the same argmax at every position (a flip is only excusable
    where llama.cpp's own choice was a near tie)."""
    import torch
    fx = json.loads(Path(path).read_text())
    dev = next(model.parameters()).device
    res = []
    for c in fx["cases"][:max_cases]:
        if c.get("kind") != "raw":
            continue
        ours = tok(c["prompt"], add_special_tokens=False)["input_ids"]
        p, g = c["prompt_tokens"], c["tokens"]
        with torch.no_grad():
            lg = model(input_ids=torch.tensor([p + g[:-1]], device=dev), use_cache=False).logits[0].float()
        pred = lg[len(p) - 1:].argmax(-1).tolist()
        top = torch.topk(lg[len(p) - 1:], 2).values
        margin = (top[:, 0] - top[:, 1]).tolist()
        flips = [(i, round(margin[i], 3)) for i in range(len(g)) if pred[i] != g[i]]
        res.append(dict(name=c["name"], tokenizer_match=ours == p, n=len(g),
                        agree=sum(x == y for x, y in zip(pred, g)), flips=flips[:5]))
        print(json.dumps(res[-1]), flush=True)
    ok = all(r["tokenizer_match"] for r in res) and sum(r["agree"] for r in res) >= 0.97 * sum(r["n"] for r in res)
    print(json.dumps({"ok": ok, "agree": sum(r["agree"] for r in res), "n": sum(r["n"] for r in res)}))
    if not ok:
        sys.exit(1)


def main() -> None:
    env.setup()
    import torch
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--prompt", default="Write a Python function that returns the n-th Fibonacci number.")
    ap.add_argument("-n", type=int, default=16)
    ap.add_argument("--raw", action="store_true", help="no chat template")
    ap.add_argument("--device")
    ap.add_argument("--check-fixture", metavar="JSON",
                    help="llama.cpp greedy fixture (tests/fixtures/llama/generate-*.json): teacher-forced "
                         "argmax agreement of the dequantized model with llama.cpp's tokens")
    ap.add_argument("--max-cases", type=int, default=4)
    a = ap.parse_args()
    model, meta = load_model(a.model, a.device)
    tok = load_tokenizer(a.model, meta)
    if a.check_fixture:
        check_fixture(model, tok, a.check_fixture, a.max_cases)
        return
    ids = tok(a.prompt, add_special_tokens=False)["input_ids"] if a.raw else chat_ids(tok, a.prompt)
    dev = next(model.parameters()).device
    cur = torch.tensor([ids], device=dev)
    out, margins = [], []
    with torch.no_grad():
        for _ in range(a.n):
            lg = model(input_ids=cur, use_cache=False).logits[0, -1].float()
            top = torch.topk(lg, 2)
            margins.append(round(float(top.values[0] - top.values[1]), 3))
            nxt = int(top.indices[0])
            out.append(nxt)
            cur = torch.cat([cur, torch.tensor([[nxt]], device=dev)], 1)
    print(json.dumps({"prompt_ids": ids, "tokens": out, "text": tok.decode(out), "margins": margins}))


if __name__ == "__main__":
    main()
