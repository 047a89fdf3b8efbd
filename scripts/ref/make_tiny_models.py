#!/usr/bin/env python3
"""Build tiny random-weight qwen3 / llama models, convert them to GGUF with llama.cpp's converter and
record HF transformers reference outputs for blockspec's model-graph tests.

Run with the venv made by scripts/ref/setup-venv.sh:

    ${BLOCKSPEC_VENV:-$HOME/.cache/blockspec/venv}/bin/python scripts/ref/make_tiny_models.py

Outputs (see tests/fixtures/tiny/README.md):
    tests/fixtures/tiny/<arch>/model-f32.gguf   (+ model-f16.gguf for qwen3)
    tests/fixtures/tiny/<arch>/reference.json
    tests/fixtures/tiny/<arch>/tokenizer.json, tokenizer_config.json, config.json
    tests/fixtures/tiny/README.md               (regenerated, includes the GGUF listings)

Everything is deterministic (fixed seeds, single-threaded torch); rerunning reproduces the files
(GGUFs bit-identical, JSON identical up to torch/transformers version changes).
"""
from __future__ import annotations

import argparse
import codecs
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO / "tests" / "fixtures" / "tiny"


def converter_dir() -> Path:
    d = os.environ.get("BLOCKSPEC_LLAMA_CPP")
    if d:
        return Path(d)
    # setup-venv.sh extracts the converter into $VENV/llama.cpp
    return Path(sys.prefix) / "llama.cpp"


def use_converter_paths() -> Path:
    d = converter_dir()
    if not (d / "convert_hf_to_gguf.py").is_file() or not (d / "conversion").is_dir():
        sys.exit(f"llama.cpp converter not found in {d} (run scripts/ref/setup-venv.sh "
                 f"or set BLOCKSPEC_LLAMA_CPP)")
    # llama.cpp's own gguf-py, not PyPI's gguf
    for p in (str(d / "gguf-py"), str(d)):
        if p not in sys.path:
            sys.path.insert(0, p)
    return d


# ----------------------------------------------------------------------------------------------------
# model specs

QWEN2_PAT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
             r"|\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_PAT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
              r"|\s*[\r\n]+|\s+(?!\S)|\s+")

CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    " + message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

SPECS = {
    "qwen3": dict(
        hf_arch="Qwen3ForCausalLM",
        seed=1234,
        pre="qwen2",           # llama.cpp pre-tokenizer name written to tokenizer.ggml.pre
        pattern=QWEN2_PAT,
        nfc=True,              # Qwen2/3 tokenizer.json has an NFC normalizer
        specials=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        n_pad=13,              # config vocab_size > tokenizer size, like real Qwen checkpoints
        bos=None, eos="<|im_end|>", pad="<|endoftext|>", add_bos=False,
        config_bos="<|endoftext|>",
        chat_template=CHATML_TEMPLATE,
        config=dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=16, rope_theta=1e6,
                    rms_norm_eps=1e-6, max_position_embeddings=512, tie_word_embeddings=False,
                    attention_bias=False, use_sliding_window=False, hidden_act="silu"),
        outtypes=["f32", "f16"],
    ),
    "llama": dict(
        hf_arch="LlamaForCausalLM",
        seed=4321,
        pre="llama-bpe",
        pattern=LLAMA3_PAT,
        nfc=False,
        specials=["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                  "<|eot_id|>"],
        n_pad=0,               # Llama 3: tokenizer fills the embedding table exactly
        bos="<|begin_of_text|>", eos="<|eot_id|>", pad=None, add_bos=True,
        config_bos="<|begin_of_text|>",
        chat_template=LLAMA3_TEMPLATE,
        config=dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=16, rope_theta=500000.0,
                    rms_norm_eps=1e-5, max_position_embeddings=512, tie_word_embeddings=False,
                    attention_bias=False, mlp_bias=False, rope_scaling=None, hidden_act="silu",
                    pretraining_tp=1),
        outtypes=["f32"],
    ),
    # Llama 3.2 style: tied embeddings + "llama3" rope scaling (converter emits rope_freqs.weight).
    # original_max_position_embeddings is tiny so that the scaled frequencies matter within 40 tokens.
    "llama32": dict(
        hf_arch="LlamaForCausalLM",
        seed=3232,
        pre="llama-bpe",
        pattern=LLAMA3_PAT,
        nfc=False,
        specials=["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                  "<|eot_id|>"],
        n_pad=0,
        bos="<|begin_of_text|>", eos="<|eot_id|>", pad=None, add_bos=True,
        config_bos="<|begin_of_text|>",
        chat_template=LLAMA3_TEMPLATE,
        config=dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=16, rope_theta=500000.0,
                    rms_norm_eps=1e-5, max_position_embeddings=512, tie_word_embeddings=True,
                    attention_bias=False, mlp_bias=False, hidden_act="silu", pretraining_tp=1,
                    rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                                      high_freq_factor=4.0, original_max_position_embeddings=64)),
        outtypes=["f32"],
    ),
}

# std of the re-randomised weights
STD_EMBED = 1.0
STD_PROJ = 0.25
STD_LM_HEAD = 1.0
NORM_MEAN, NORM_STD = 1.0, 0.2
GEN_TOKENS = 16
MIN_MARGIN = 0.2   # required top1-top2 logit margin at every prompt position and greedy step
MAX_TRIES = 5000
SIG_DIGITS = 7


def training_corpus() -> list[str]:
    import contextlib
    import io
    with contextlib.redirect_stdout(io.StringIO()):
        import this  # noqa: F401  (prints the Zen of Python on import)
    zen = codecs.decode(sys.modules["this"].s, "rot13")
    extra = [
        "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs.",
        "blockspec is an inference engine written in Rust on top of ggml; it reads GGUF files.",
        "Attention is computed per head; grouped-query attention shares key and value heads.",
        "Rotary position embeddings rotate pairs of dimensions by an angle that grows with position.",
        "RMS normalisation divides by the root mean square and multiplies by a learned weight.",
        "Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 100 256 512 1024 2048 4096 3.14159 2.71828 1e-6 500000.",
        "def main():\n    print('hello, world')\n    return 0\n\nif __name__ == '__main__':\n    main()\n",
        "fn main() {\n    let x: Vec<u32> = (0..10).collect();\n    println!(\"{:?}\", x);\n}\n",
        "Il était une fois un petit modèle. Ein kleines Modell. Маленькая модель. 小さなモデル。 🦙🚀",
        "I'm sure you'll like it; we've seen they're here. She'd said it's done, hasn't she?",
        "<html><body><p>Tiny models make fast tests.</p></body></html>",
    ]
    return [zen] * 3 + extra * 3


def build_tokenizer(spec: dict, hf_dir: Path) -> None:
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    vocab_size = spec["config"]["vocab_size"]
    n_special = len(spec["specials"])
    n_bpe = vocab_size - spec["n_pad"] - n_special

    tok = Tokenizer(models.BPE(byte_fallback=False, ignore_merges=False))
    if spec["nfc"]:
        tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(spec["pattern"]), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    trainer = trainers.BpeTrainer(vocab_size=n_bpe, min_frequency=1, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
    tok.train_from_iterator(training_corpus(), trainer=trainer)
    if tok.get_vocab_size() != n_bpe:
        raise SystemExit(f"BPE trained to {tok.get_vocab_size()} tokens, wanted {n_bpe}: enlarge the corpus")
    tok.add_special_tokens(spec["specials"])
    assert tok.get_vocab_size() == n_bpe + n_special

    bytelevel_pp = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    if spec["add_bos"]:
        bos = spec["bos"]
        tok.post_processor = processors.Sequence([
            bytelevel_pp,
            processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                          special_tokens=[(bos, tok.token_to_id(bos))]),
        ])
    else:
        tok.post_processor = bytelevel_pp

    kwargs = {}
    for k in ("bos", "eos", "pad"):
        if spec[k] is not None:
            kwargs[f"{k}_token"] = spec[k]
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, clean_up_tokenization_spaces=False,
                                   model_max_length=spec["config"]["max_position_embeddings"], **kwargs)
    fast.chat_template = spec["chat_template"]
    fast.save_pretrained(hf_dir)
    # make add_bos explicit in tokenizer_config.json (matches the post-processor)
    tc_path = hf_dir / "tokenizer_config.json"
    tc = json.loads(tc_path.read_text())
    tc["add_bos_token"] = spec["add_bos"]
    tc["add_eos_token"] = False
    tc_path.write_text(json.dumps(tc, indent=2, ensure_ascii=False) + "\n")


def randomise(model, seed: int) -> None:
    import torch
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            if name.endswith("norm.weight"):
                v = torch.randn(p.shape, generator=g) * NORM_STD + NORM_MEAN
            elif "embed_tokens" in name:
                v = torch.randn(p.shape, generator=g) * STD_EMBED
            elif name.startswith("lm_head"):
                v = torch.randn(p.shape, generator=g) * STD_LM_HEAD
            elif p.ndim == 2:
                v = torch.randn(p.shape, generator=g) * STD_PROJ
            else:
                raise SystemExit(f"unexpected parameter {name} {tuple(p.shape)}")
            p.copy_(v.to(p.dtype))


def build_model(arch: str, spec: dict, hf_dir: Path, seed: int):
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM

    build_tokenizer(spec, hf_dir)
    tok = AutoTokenizer.from_pretrained(hf_dir)
    cfg_kwargs = dict(spec["config"])
    cfg_kwargs["bos_token_id"] = tok.convert_tokens_to_ids(spec["config_bos"])
    cfg_kwargs["eos_token_id"] = tok.convert_tokens_to_ids(spec["eos"])
    if spec["pad"] is not None:
        cfg_kwargs["pad_token_id"] = tok.convert_tokens_to_ids(spec["pad"])
    if arch == "qwen3":
        config = Qwen3Config(**cfg_kwargs)
        cls = Qwen3ForCausalLM
    else:
        config = LlamaConfig(**cfg_kwargs)
        cls = LlamaForCausalLM
    config.dtype = torch.float32
    torch.manual_seed(seed)
    model = cls(config).to(torch.float32)
    randomise(model, seed)
    if config.tie_word_embeddings:
        model.tie_weights()
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    model.save_pretrained(hf_dir, safe_serialization=True)
    model.generation_config.save_pretrained(hf_dir)
    return model, tok


# ----------------------------------------------------------------------------------------------------
# conversion (runs in a child process: `make_tiny_models.py _convert ...`)

def convert_child(hf_dir: str, outtype: str, outfile: str, pre: str) -> None:
    d = use_converter_paths()
    sys.argv = [str(d / "convert_hf_to_gguf.py"), hf_dir, "--outtype", outtype, "--outfile", outfile]
    import convert_hf_to_gguf  # llama.cpp's front end (identical to llama-cpp-sys-2 0.1.161's copy)
    import conversion
    import conversion.base

    # Our tokenizers are trained here, so their token ids for llama.cpp's check text are not in the
    # converter's table of known pre-tokenizer hashes. Keep the check, but when the hash is unknown
    # return the pre-tokenizer whose regex we used (the converter stays llama.cpp's).
    orig = conversion.base.TextModel.get_vocab_base_pre

    def get_vocab_base_pre(self, tokenizer) -> str:
        try:
            res = orig(self, tokenizer)
            print(f"[make_tiny_models] pre-tokenizer hash recognised by the converter: {res!r}", file=sys.stderr)
            return res
        except NotImplementedError:
            print(f"[make_tiny_models] pre-tokenizer hash unknown (expected): using {pre!r}", file=sys.stderr)
            return pre

    conversion.base.TextModel.get_vocab_base_pre = get_vocab_base_pre
    convert_hf_to_gguf.main()


def convert(hf_dir: Path, outtype: str, outfile: Path, pre: str) -> None:
    cmd = [sys.executable, str(Path(__file__).resolve()), "_convert", str(hf_dir), outtype, str(outfile), pre]
    subprocess.run(cmd, check=True)


# ----------------------------------------------------------------------------------------------------
# reference outputs

def rnd(x) -> list:
    """numpy array -> nested lists of floats rounded to SIG_DIGITS significant digits."""
    import numpy as np
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 1:
        return [float(f"{v:.{SIG_DIGITS}g}") for v in a.tolist()]
    return [rnd(r) for r in a]


def margins(logits) -> "np.ndarray":
    import numpy as np
    s = np.sort(np.asarray(logits, dtype=np.float64), axis=-1)
    return s[:, -1] - s[:, -2]


def greedy(model, ids: list[int], n: int) -> tuple[list[int], "np.ndarray"]:
    """Greedy continuation with full (uncached) forward passes. Returns (generated ids, logits of the
    whole sequence prompt + generated[:-1]), i.e. logits[len(ids)-1+k] produced generated[k]."""
    import torch
    cur = list(ids)
    with torch.no_grad():
        for _ in range(n):
            nl = model(input_ids=torch.tensor([cur]), use_cache=False).logits[0, -1]
            cur.append(int(nl.argmax()))
        lg = model(input_ids=torch.tensor([cur[:-1]]), use_cache=False).logits[0].numpy()
    return cur[len(ids):], lg


class Rejected(Exception):
    pass


def choose_sequences(spec: dict, tok, model, model16, seed: int) -> tuple[list[list[int]], list[int]]:
    """Three prompts of lengths 1, 7 and 40 whose argmax is unambiguous: for every prompt position and
    every one of the GEN_TOKENS greedy steps the top1-top2 logit margin is >= MIN_MARGIN, and (qwen3)
    the model with f16-rounded weights makes the same greedy choices. Candidates are drawn from a
    seeded RNG in a fixed order, so the choice is deterministic. Returns (sequences, tries)."""
    import numpy as np
    n_regular = spec["config"]["vocab_size"] - spec["n_pad"] - len(spec["specials"])
    rng = np.random.default_rng(seed)
    prefix = [tok.convert_tokens_to_ids(spec["bos"])] if spec["add_bos"] else []
    ctrl = tok.convert_tokens_to_ids(spec["specials"][-1 if spec["add_bos"] else 1])

    def ok(ids: list[int]) -> bool:
        gen, lg = greedy(model, ids, GEN_TOKENS)
        if margins(lg).min() < MIN_MARGIN:
            return False
        if model16 is not None:
            gen16, lg16 = greedy(model16, ids, GEN_TOKENS)
            if gen16 != gen or not np.array_equal(lg16.argmax(-1), lg.argmax(-1)):
                return False
        return True

    def candidates(length: int):
        texts = [
            "The quick brown fox jumps over the lazy dog",
            "Pack my box with five dozen liquor jugs",
            "Attention is computed per head",
            "RMS normalisation divides by the root mean square",
            "Rotary position embeddings rotate pairs",
            "blockspec reads GGUF files",
        ]
        if length == 7:
            for t in texts:
                ids = (prefix + tok(t, add_special_tokens=False)["input_ids"])[:7]
                if len(ids) == 7:
                    yield ids
        if length == 1 and prefix:
            yield list(prefix)  # with add_bos the 1-token prompt can only be BOS
            raise Rejected("BOS-only prompt has too small a margin")
        while True:
            body = [int(v) for v in rng.integers(0, n_regular, size=length - len(prefix))]
            if length == 40:
                body[len(body) // 2] = ctrl  # one chat-control token in the middle
            yield prefix + body

    seqs, tries = [], []
    for length in (1, 7, 40):
        for i, ids in enumerate(candidates(length)):
            if ok(ids):
                seqs.append(ids)
                tries.append(i + 1)
                break
            if i >= MAX_TRIES:
                raise Rejected(f"no {length}-token prompt with margins >= {MIN_MARGIN} in {MAX_TRIES} tries")
    return seqs, tries


def run_reference(model, seqs: list[list[int]]) -> tuple[list[dict], dict]:
    import numpy as np
    import torch
    from transformers import GenerationConfig

    model.eval()
    # generate() must not stop at EOS: clear the model-level defaults too (only in memory)
    model.generation_config.eos_token_id = None
    model.generation_config.bos_token_id = None
    L = model.config.num_hidden_layers
    out_seqs = []
    checks = {"hidden_states_last_is_final_norm": True, "generate_matches_full_forward_greedy": True}
    for ids in seqs:
        x = torch.tensor([ids], dtype=torch.long)
        captured = {}
        h = model.model.layers[-1].register_forward_hook(
            lambda mod, inp, out: captured.__setitem__("last", out[0] if isinstance(out, tuple) else out))
        with torch.no_grad():
            out = model(input_ids=x, output_hidden_states=True, use_cache=False)
        h.remove()
        hs = out.hidden_states
        assert len(hs) == L + 1
        prenorm = captured["last"][0]
        if not torch.allclose(model.model.norm(prenorm), hs[L][0], atol=1e-6, rtol=0):
            checks["hidden_states_last_is_final_norm"] = False
        logits = out.logits[0].float().numpy()

        gen_cfg = GenerationConfig(do_sample=False, max_new_tokens=GEN_TOKENS, min_new_tokens=0,
                                   eos_token_id=None, pad_token_id=0, bos_token_id=None, num_beams=1)
        with torch.no_grad():
            gen = model.generate(x, attention_mask=torch.ones_like(x), generation_config=gen_cfg)
        generated = gen[0, len(ids):].tolist()
        assert len(generated) == GEN_TOKENS
        # independent check: greedy with full (uncached) forward passes
        gen_full, lg_full = greedy(model, ids, GEN_TOKENS)
        if gen_full != generated:
            checks["generate_matches_full_forward_greedy"] = False
        gm = margins(lg_full)[len(ids) - 1:]

        m = margins(logits)
        out_seqs.append(dict(
            ids=ids,
            logits=rnd(logits),
            hidden_states=[rnd(hs[i][0].numpy()) for i in range(L + 1)],
            last_layer_output_prenorm=rnd(prenorm.numpy()),
            argmax=[int(v) for v in logits.argmax(-1)],
            top1_margin=[float(f"{v:.4g}") for v in m],
            min_top1_margin=float(f"{m.min():.4g}"),
            generated=generated,
            generated_top1_margin=[float(f"{v:.4g}") for v in gm],
        ))
    return out_seqs, checks


def f16_rounded(model):
    import copy
    import torch
    m16 = copy.deepcopy(model)
    with torch.no_grad():
        for _, p in m16.named_parameters():
            if p.ndim >= 2:
                p.copy_(p.half().float())
    return m16


def f16_weight_reference(m16, seqs) -> list[dict]:
    """Logits of the same model with every >=2-D weight rounded to f16 (what model-f16.gguf stores;
    the converter keeps 1-D norm weights in f32), computed in f32."""
    import torch
    res = []
    for ids in seqs:
        with torch.no_grad():
            lg = m16(input_ids=torch.tensor([ids]), use_cache=False).logits[0].numpy()
        gen, _ = greedy(m16, ids, GEN_TOKENS)
        res.append(dict(ids=ids, logits=rnd(lg), argmax=[int(v) for v in lg.argmax(-1)],
                        min_top1_margin=float(f"{margins(lg).min():.4g}"), generated=gen))
    return res


def tokenizer_cases(tok, spec) -> list[dict]:
    texts = [
        "Hello world",
        "The quick brown fox jumps over the lazy dog.",
        "  leading spaces and\ttabs\nnew lines\n\n",
        "numbers 1234567 and 3.14159",
        "I'm sure you'll like it; we've seen they're here.",
        "Ünïcödé: 小さなモデル 🦙",
        "<|im_start|>user\nhi<|im_end|>" if "<|im_start|>" in spec["specials"] else
        "<|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>",
    ]
    return [dict(text=t,
                 ids=tok(t, add_special_tokens=False)["input_ids"],
                 ids_with_special=tok(t, add_special_tokens=True)["input_ids"]) for t in texts]


# ----------------------------------------------------------------------------------------------------
# GGUF read-back

def gguf_listing(path: Path) -> tuple[str, dict]:
    import gguf
    import numpy as np
    r = gguf.GGUFReader(str(path))
    lines = [f"# {path.name}  ({path.stat().st_size} bytes, sha256 {sha256(path)[:16]}...)", "metadata:"]
    meta = {}
    for name, field in r.fields.items():
        if name.startswith("GGUF."):
            continue
        types = [t.name for t in field.types]
        try:
            val = field.contents()
        except Exception:  # noqa: BLE001
            val = "?"
        meta[name] = val
        if isinstance(val, list):
            shown = json.dumps(val[:6], ensure_ascii=False)
            desc = f"{'/'.join(types)}[{len(val)}] {shown[:-1]}{', ...]' if len(val) > 6 else ']'}"
        elif isinstance(val, str):
            s = val if len(val) <= 60 else val[:57] + "..."
            desc = f"{types[0]} {json.dumps(s, ensure_ascii=False)}"
        else:
            desc = f"{types[0]} {val}"
        lines.append(f"  {name:<42} {desc}")
    lines.append(f"tensors ({len(r.tensors)}, in file order; shape in GGML order ne[0], ne[1], ...):")
    n_blk = 1 + max((int(t.name.split(".")[1]) for t in r.tensors if t.name.startswith("blk.")), default=-1)
    for t in r.tensors:
        shape = [int(v) for v in t.shape]
        if t.name.startswith("blk.") and t.name.split(".")[1] != "0":
            continue  # identical for every block: listed once for blk.0
        lines.append(f"  {t.name:<28} {t.tensor_type.name:<4} {shape}")
        if t.name.startswith("blk.0.") and n_blk > 1 and not any(
                u.name.startswith("blk.0.") for u in r.tensors[r.tensors.index(t) + 1:]):
            lines.append(f"  (blk.1 ... blk.{n_blk - 1}: the same names, types and shapes)")
    return "\n".join(lines), meta


def gguf_tensors(path: Path) -> dict:
    import gguf
    import numpy as np
    r = gguf.GGUFReader(str(path))
    out = {}
    for t in r.tensors:
        shape = [int(v) for v in t.shape][::-1]  # numpy (row-major) order
        out[t.name] = np.array(t.data, copy=True).reshape(shape)
    return out


def check_gguf_weights(arch: str, model, path: Path, f16: bool) -> str:
    """Compare every GGUF tensor with the HF parameter it came from (exact equality)."""
    import numpy as np
    import torch
    cfg = model.config
    t = gguf_tensors(path)
    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}

    def q(a):
        return a.astype(np.float16).astype(np.float32) if (f16 and a.ndim >= 2) else a

    def permute(w, n_head):  # llama.cpp LlamaModel.permute (undo HF's rotate_half layout)
        return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
                .swapaxes(1, 2).reshape(w.shape))

    names = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight"}
    if not cfg.tie_word_embeddings:
        names["output.weight"] = "lm_head.weight"
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        names.update({
            f"blk.{i}.attn_norm.weight": p + "input_layernorm.weight",
            f"blk.{i}.attn_q.weight": p + "self_attn.q_proj.weight",
            f"blk.{i}.attn_k.weight": p + "self_attn.k_proj.weight",
            f"blk.{i}.attn_v.weight": p + "self_attn.v_proj.weight",
            f"blk.{i}.attn_output.weight": p + "self_attn.o_proj.weight",
            f"blk.{i}.ffn_norm.weight": p + "post_attention_layernorm.weight",
            f"blk.{i}.ffn_gate.weight": p + "mlp.gate_proj.weight",
            f"blk.{i}.ffn_up.weight": p + "mlp.up_proj.weight",
            f"blk.{i}.ffn_down.weight": p + "mlp.down_proj.weight",
        })
        if arch == "qwen3":
            names[f"blk.{i}.attn_q_norm.weight"] = p + "self_attn.q_norm.weight"
            names[f"blk.{i}.attn_k_norm.weight"] = p + "self_attn.k_norm.weight"
    extra = sorted(set(t) - set(names))
    missing = sorted(set(names) - set(t))
    assert not missing, f"missing tensors in {path.name}: {missing}"
    for g, h in names.items():
        ref = sd[h]
        if arch != "qwen3" and g.endswith(("attn_q.weight", "attn_k.weight")):
            n = cfg.num_attention_heads if "attn_q" in g else cfg.num_key_value_heads
            ref = permute(ref, n)
        got = t[g].astype(np.float32)
        assert got.shape == ref.shape, (g, got.shape, ref.shape)
        assert np.array_equal(got, q(ref)), f"{path.name}: {g} differs from {h}"
    notes = f"all {len(names)} mapped tensors equal the HF weights"
    if extra:
        notes += f"; extra tensors: {extra}"
        if "rope_freqs.weight" in t:
            notes += f" (rope_freqs = {t['rope_freqs.weight'].tolist()})"
    return notes


def gguf_numpy_forward(path: Path, ids: list[int]) -> "np.ndarray":
    """Independent float64 numpy forward pass that reads ONLY the GGUF (tensors + metadata) and follows
    llama.cpp's conventions (arch llama: normal/interleaved RoPE on the converter-permuted q/k;
    arch qwen3: NeoX RoPE + q/k RMSNorm; rope_freqs divides the frequencies; tied output falls back to
    token_embd). Returns logits [n_pos, vocab]. Used to prove the GGUF reproduces the HF reference."""
    import gguf
    import numpy as np
    r = gguf.GGUFReader(str(path))
    meta = {k: f.contents() for k, f in r.fields.items() if not k.startswith("GGUF.")}
    arch = meta["general.architecture"]
    t = {k: v.astype(np.float64) for k, v in gguf_tensors(path).items()}
    n_layer = meta[f"{arch}.block_count"]
    n_head = meta[f"{arch}.attention.head_count"]
    n_kv = meta[f"{arch}.attention.head_count_kv"]
    hd = meta.get(f"{arch}.attention.key_length", meta[f"{arch}.embedding_length"] // n_head)
    n_rot = meta.get(f"{arch}.rope.dimension_count", hd)
    base = meta[f"{arch}.rope.freq_base"]
    eps = meta[f"{arch}.attention.layer_norm_rms_epsilon"]
    neox = arch == "qwen3"
    ff = t.get("rope_freqs.weight", np.ones(n_rot // 2))

    def rms(x, w):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w

    n = len(ids)
    pos = np.arange(n)[:, None]
    theta = pos * base ** (-np.arange(0, n_rot, 2) / n_rot) / ff  # [n, n_rot/2]
    cos, sin = np.cos(theta)[:, None, :], np.sin(theta)[:, None, :]

    def rope(x):  # x [n, heads, hd]
        x = x.copy()
        if neox:
            a, b = x[..., : n_rot // 2].copy(), x[..., n_rot // 2: n_rot].copy()
            x[..., : n_rot // 2], x[..., n_rot // 2: n_rot] = a * cos - b * sin, a * sin + b * cos
        else:
            a, b = x[..., 0:n_rot:2].copy(), x[..., 1:n_rot:2].copy()
            x[..., 0:n_rot:2], x[..., 1:n_rot:2] = a * cos - b * sin, a * sin + b * cos
        return x

    h = t["token_embd.weight"][ids]
    mask = np.triu(np.full((n, n), -np.inf), 1)
    for i in range(n_layer):
        b = f"blk.{i}."
        x = rms(h, t[b + "attn_norm.weight"])
        q = (x @ t[b + "attn_q.weight"].T).reshape(n, n_head, hd)
        k = (x @ t[b + "attn_k.weight"].T).reshape(n, n_kv, hd)
        v = (x @ t[b + "attn_v.weight"].T).reshape(n, n_kv, hd)
        if b + "attn_q_norm.weight" in t:
            q, k = rms(q, t[b + "attn_q_norm.weight"]), rms(k, t[b + "attn_k_norm.weight"])
        q, k = rope(q), rope(k)
        g = n_head // n_kv
        k, v = np.repeat(k, g, axis=1), np.repeat(v, g, axis=1)
        att = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(hd) + mask
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        o = np.einsum("hqk,khd->qhd", att, v).reshape(n, n_head * hd)
        h = h + o @ t[b + "attn_output.weight"].T
        x = rms(h, t[b + "ffn_norm.weight"])
        gt = x @ t[b + "ffn_gate.weight"].T
        h = h + ((gt / (1 + np.exp(-gt))) * (x @ t[b + "ffn_up.weight"].T)) @ t[b + "ffn_down.weight"].T
    h = rms(h, t["output_norm.weight"])
    return h @ t.get("output.weight", t["token_embd.weight"]).T


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ----------------------------------------------------------------------------------------------------

def make(arch: str, out_root: Path, work: Path) -> dict:
    import numpy as np
    import tokenizers
    import torch
    import transformers

    spec = SPECS[arch]
    hf_dir = work / f"tiny-{arch}"
    if hf_dir.exists():
        shutil.rmtree(hf_dir)
    hf_dir.mkdir(parents=True)
    out = out_root / arch
    out.mkdir(parents=True, exist_ok=True)

    from transformers import AutoModelForCausalLM
    for attempt in range(20):
        seed = spec["seed"] + attempt
        build_model(arch, spec, hf_dir, seed)
        # reload from disk, as a user of the checkpoint would
        from transformers import AutoTokenizer
        tok = AutoTokenizer.from_pretrained(hf_dir)
        model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32, attn_implementation="eager")
        model.eval()
        assert model.config._attn_implementation == "eager"
        model16 = f16_rounded(model) if "f16" in spec["outtypes"] else None
        try:
            seqs, tries = choose_sequences(spec, tok, model, model16, seed)
            break
        except Rejected as e:
            print(f"[{arch}] weight seed {seed} rejected: {e}", file=sys.stderr)
    else:
        raise SystemExit(f"{arch}: no weight seed gave robust margins")

    ggufs = {}
    for ot in spec["outtypes"]:
        path = out / f"model-{ot}.gguf"
        convert(hf_dir, ot, path, spec["pre"])
        ggufs[ot] = path

    ref_seqs, checks = run_reference(model, seqs)

    listing = {}
    weight_checks = {}
    for ot, path in ggufs.items():
        listing[ot], meta = gguf_listing(path)
        weight_checks[ot] = check_gguf_weights(arch, model, path, f16=(ot == "f16"))
        assert bool(meta.get("tokenizer.ggml.add_bos_token", False)) == spec["add_bos"], meta.get(
            "tokenizer.ggml.add_bos_token")
    cfg = json.loads(model.config.to_json_string(use_diff=False))
    cfg.pop("_name_or_path", None)  # temp dir path: would make the file non-reproducible
    for ot, path in ggufs.items():
        d = 0.0
        for sq in ref_seqs:
            d = max(d, float(np.abs(gguf_numpy_forward(path, sq["ids"]) - np.array(sq["logits"])).max()))
        checks.setdefault("numpy_gguf_forward_vs_hf_max_abs_dlogit", {})[ot] = float(f"{d:.3g}")
        if ot == "f16" and model16 is not None:
            d = 0.0
            for sq in ref_seqs:
                with torch.no_grad():
                    l16 = model16(input_ids=torch.tensor([sq["ids"]]), use_cache=False).logits[0].numpy()
                d = max(d, float(np.abs(gguf_numpy_forward(path, sq["ids"]) - l16).max()))
            checks["numpy_gguf_forward_f16_vs_f16_weight_reference_max_abs_dlogit"] = float(f"{d:.3g}")
    if model.config.rope_scaling:
        # how much the rope scaling matters for these prompts (so the fixture really tests it)
        import copy
        from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding
        c2 = copy.deepcopy(model.config)
        c2.rope_scaling = None
        m2 = copy.deepcopy(model)
        m2.model.rotary_emb = LlamaRotaryEmbedding(c2)
        d = 0.0
        for sq in seqs:
            with torch.no_grad():
                a = model(input_ids=torch.tensor([sq]), use_cache=False).logits
                b = m2(input_ids=torch.tensor([sq]), use_cache=False).logits
            d = max(d, float((a - b).abs().max()))
        checks["rope_scaling_effect_max_abs_dlogit"] = float(f"{d:.4g}")
    ref = dict(
        arch=arch,
        weight_seed=seed,
        prompt_search=dict(min_top1_margin=MIN_MARGIN, candidates_tried=tries,
                           note="prompts chosen (deterministically) so that every prompt position and every "
                                "greedy step has a top1-top2 margin >= min_top1_margin"
                                + (" and the f16-weight model makes the same greedy choices" if "f16" in spec["outtypes"] else "")),
        gguf_arch=meta["general.architecture"],
        hf_architecture=spec["hf_arch"],
        config=cfg,
        gguf_files={ot: dict(file=p.name, sha256=sha256(p)) for ot, p in ggufs.items()},
        add_bos=spec["add_bos"],
        bos_token_id=cfg.get("bos_token_id"),
        eos_token_id=cfg.get("eos_token_id"),
        transformers_version=transformers.__version__,
        torch_version=torch.__version__,
        tokenizers_version=tokenizers.__version__,
        numpy_version=np.__version__,
        attn_implementation="eager",
        dtype="float32",
        float_significant_digits=SIG_DIGITS,
        generated_tokens=GEN_TOKENS,
        notes=[
            "logits[pos][vocab]: full logits for every position of the sequence (f32 HF eager forward).",
            "hidden_states has num_hidden_layers+1 entries [layer][pos][dim]: entry 0 is the token "
            "embedding output (input to layer 0); entry i (1 <= i < L) is the residual stream after "
            "decoder layer i-1; entry L is the output of the LAST layer WITH THE FINAL RMSNorm "
            "(model.norm) APPLIED (HF convention). The un-normalised output of the last layer is in "
            "last_layer_output_prenorm[pos][dim].",
            "generated: 16 greedy tokens from model.generate(do_sample=False, eos_token_id=None), i.e. "
            "generation does not stop at EOS; checked against a greedy loop of full uncached forwards.",
            "ids include the BOS token at position 0 iff add_bos is true (GGUF tokenizer.ggml.add_bos_token).",
            "Weights: random (seeded); norms ~ N(1, 0.2); projections ~ N(0, %g); embeddings ~ N(0, %g); "
            "lm_head ~ N(0, %g)." % (STD_PROJ, STD_EMBED, STD_LM_HEAD),
        ] + ([
            "GGUF arch llama: attn_q/attn_k weights are stored PERMUTED by the converter "
            "(LlamaModel.permute, HF rotate_half layout -> interleaved pairs), so llama.cpp applies "
            "normal (non-NeoX) RoPE to them. qwen3 keeps HF layout and uses NeoX RoPE."
        ] if arch != "qwen3" else [
            "GGUF arch qwen3: weights in HF layout, RoPE type NeoX (rotate halves); per-head RMSNorm "
            "on q and k (attn_q_norm/attn_k_norm, dim head_dim) before RoPE."
        ]),
        checks=dict(checks, gguf_weights=weight_checks),
        sequences=ref_seqs,
        tokenizer_tests=tokenizer_cases(tok, spec),
    )
    if "f16" in ggufs:
        ref["f16_weight_reference"] = dict(
            note="logits of the same model after rounding every 2-D weight to f16 (exactly the values "
                 "stored in model-f16.gguf; 1-D norm weights stay f32), computed in f32. Compare "
                 "model-f16.gguf against these for tighter tolerances; activations are still f32 here.",
            sequences=f16_weight_reference(model16, seqs))
    (out / "reference.json").write_text(json.dumps(ref, separators=(",", ":"), ensure_ascii=False) + "\n")
    for f in ("tokenizer.json", "tokenizer_config.json", "config.json"):
        shutil.copy(hf_dir / f, out / f)

    # statistics
    print(f"\n=== {arch}: {hf_dir}")
    for s in ref_seqs:
        lg = np.array(s["logits"])
        m = margins(lg)
        print(f"  seq len {len(s['ids']):2d}: max|logit| {np.abs(lg).max():7.3f}  logit std {lg.std():6.3f}  "
              f"top1-top2 margin min {m.min():.4f} median {np.median(m):.4f} mean {m.mean():.4f}  "
              f"generated {s['generated']}")
    print(f"  checks: {json.dumps(ref['checks'], indent=None)[:400]}")
    if "f16_weight_reference" in ref:
        for a, b in zip(ref_seqs, ref["f16_weight_reference"]["sequences"]):
            d = np.abs(np.array(a["logits"]) - np.array(b["logits"])).max()
            print(f"  f16-rounded weights: seq len {len(a['ids'])}: max |dlogit| {d:.4g}, "
                  f"argmax equal: {a['argmax'] == b['argmax']}")
    for ot in ggufs:
        print(listing[ot])
    return dict(listing=listing, ref=ref)


README_HEAD = """# Tiny reference models (`tests/fixtures/tiny/`)

Random-weight miniature models for proving blockspec's model graphs against HF transformers without any
real checkpoint. Generated by `scripts/ref/make_tiny_models.py`; do not edit by hand.

| dir | GGUF arch | HF class | what it covers |
| --- | --- | --- | --- |
| `qwen3/` | `qwen3` | `Qwen3ForCausalLM` | untied `output.weight`, per-head q/k RMSNorm, NeoX RoPE (theta 1e6), no BOS, 13 padding vocab entries; `model-f32.gguf` and `model-f16.gguf` |
| `llama/` | `llama` | `LlamaForCausalLM` | Llama 3 style: GQA, RoPE theta 5e5 without scaling, untied, BOS added |
| `llama32/` | `llama` | `LlamaForCausalLM` | Llama 3.2 style: **tied** embeddings (no `output.weight`: use `token_embd.weight`), `llama3` rope scaling -> `rope_freqs.weight` (factor 8, original_max_position_embeddings 64 so it matters within 40 tokens) |

Common sizes: vocab 512, hidden 64, intermediate 128, 4 layers, 4 query heads, 2 KV heads, head_dim 16.
All weights are float32 and re-randomised with a fixed seed: norm weights ~ N(1, 0.2), projections ~ N(0, 0.25),
embeddings ~ N(0, 1), lm_head ~ N(0, 1), so logits are far from uniform (std ~8, |max| ~25-40).

Each directory holds:

* `model-f32.gguf` (and `model-f16.gguf` for qwen3), converted by llama.cpp's own `convert_hf_to_gguf.py`.
* `reference.json`: HF transformers outputs (float32, eval, `attn_implementation="eager"`), schema below.
* `tokenizer.json`, `tokenizer_config.json`, `config.json`: the HF tokenizer and config the GGUF was made
  from (the safetensors checkpoint itself is not committed; the script rebuilds it deterministically).

`.gitignore` here re-includes `*.gguf` (ignored repo-wide) for these small files.

## Conventions the engine must follow (all verified by the script, see `checks` in reference.json)

* arch `llama`: the converter stores `attn_q`/`attn_k` **permuted** (HF rotate-half layout -> adjacent
  pairs), so RoPE is the normal/interleaved mode (rotate `(x[2i], x[2i+1])`); arch `qwen3` keeps HF layout
  and uses NeoX RoPE (rotate `(x[i], x[i + n_rot/2])`), with `attn_q_norm`/`attn_k_norm` (RMSNorm over
  head_dim, same eps) applied per head **before** RoPE.
* `theta_i = pos * freq_base^(-2i/n_rot) / rope_freqs[i]` (rope_freqs only in `llama32`). The qwen3 GGUF has
  no `qwen3.rope.dimension_count`: n_rot defaults to `attention.key_length` (16). Neither qwen3 GGUF has
  `qwen3.vocab_size`: use the token list length / `token_embd` ne[1].
* Tensor shapes are in GGML order: `attn_q.weight` [64, 64] = ne[0] in, ne[1] out; `token_embd` [64, 512].
* `checks.numpy_gguf_forward_vs_hf_max_abs_dlogit`: an independent float64 numpy forward pass that reads only
  the GGUF with exactly these conventions reproduces the HF logits to ~1e-4 (f32 files); for the f16 file,
  compare with `f16_weight_reference` (same model with f16-rounded weights) instead of the f32 logits.

## How they were made

1. `scripts/ref/setup-venv.sh` builds a venv (default `~/.cache/blockspec/venv`, override with
   `BLOCKSPEC_VENV`) from PyPI only: torch 2.11.0 installed `--no-deps`, plus tiny stand-in CUDA libraries
   generated by `scripts/ref/cuda_stubs.py` so PyPI's CUDA wheel imports and runs on CPU without the multi-GB
   nvidia-* wheels; transformers 4.57.6, tokenizers 0.22.2, safetensors 0.8.0, numpy 2.2.6,
   sentencepiece 0.2.3, protobuf 4.25.9 and their dependencies, all pinned. llama.cpp's converter is
   extracted into `$VENV/llama.cpp/` from the llama-cpp-python 0.3.36 sdist (sha256-checked): its
   `convert_hf_to_gguf.py` is byte-identical to the one vendored in llama-cpp-sys-2 0.1.161 (the script
   checks), and it has the `conversion/` package and `gguf-py/` (gguf 0.19.0) that the crate does not ship.
   gguf-py is used from there (PYTHONPATH), not PyPI's `gguf`.
2. `make_tiny_models.py` trains a byte-level BPE tokenizer with the `tokenizers` library on a small built-in
   corpus (Qwen2 pre-tokenizer regex + NFC for qwen3; Llama 3 regex + `<|begin_of_text|>` template for
   llama), builds the model with transformers, re-randomises all weights, saves a safetensors checkpoint,
   runs `convert_hf_to_gguf.py --outtype f32|f16` and computes the references.
3. Tokenizer hash: the converter identifies the pre-tokenizer by hashing the ids that the tokenizer gives
   for a check string; a freshly trained vocabulary never matches a known hash, and the converter stops
   (`NotImplementedError: BPE pre-tokenizer was not recognized`). The script imports `convert_hf_to_gguf`
   as a module and wraps `conversion.base.TextModel.get_vocab_base_pre`: it still calls the original and,
   only when that raises, returns the name of the pre-tokenizer whose regex the tokenizer really uses
   (`qwen2` for qwen3, `llama-bpe` for llama). Nothing else in the converter is changed.
4. Prompts: lengths 1, 7 and 40 (BOS first iff the GGUF has `add_bos_token`; a 1-token llama prompt is just
   BOS). Candidates come from a seeded RNG; the first one whose top1-top2 logit margin is >= 0.2 at every
   prompt position and every one of the 16 greedy steps is kept (for qwen3 the f16-weight model must also
   make the same greedy choices), so argmax and greedy-generation comparisons are robust.
5. The script reads every GGUF back with gguf-py, checks every tensor equals the HF weight it came from
   (exactly; after llama.cpp's q/k permutation for arch `llama`; after f16 rounding for the f16 file),
   and runs the numpy forward pass above. The outputs are deterministic (rerunning gives identical files).

Regenerate:

```sh
scripts/ref/setup-venv.sh
~/.cache/blockspec/venv/bin/python scripts/ref/make_tiny_models.py               # all fixtures + this README
~/.cache/blockspec/venv/bin/python scripts/ref/make_tiny_models.py --arch qwen3  # one fixture
```

## reference.json

```
{
  "arch": "qwen3" | "llama" | "llama32",       // fixture name
  "weight_seed": int,
  "prompt_search": {"min_top1_margin": 0.2, "candidates_tried": [int, int, int], "note": str},
  "gguf_arch": "qwen3" | "llama",              // general.architecture of the GGUF
  "hf_architecture": "Qwen3ForCausalLM" | "LlamaForCausalLM",
  "config": {...},                             // full HF config dict
  "gguf_files": {"f32": {"file": str, "sha256": str}, "f16": {...}},
  "add_bos": bool, "bos_token_id": int, "eos_token_id": int,
  "transformers_version", "torch_version", "tokenizers_version", "numpy_version": str,
  "attn_implementation": "eager", "dtype": "float32", "float_significant_digits": 7,
  "generated_tokens": 16,
  "notes": [str, ...],
  "checks": {"hidden_states_last_is_final_norm": true,
             "generate_matches_full_forward_greedy": true,
             "numpy_gguf_forward_vs_hf_max_abs_dlogit": {"f32": float, "f16": float},
             "numpy_gguf_forward_f16_vs_f16_weight_reference_max_abs_dlogit": float,   // qwen3
             "rope_scaling_effect_max_abs_dlogit": float,                              // llama32
             "gguf_weights": {"f32": str, ...}},
  "sequences": [                               // 3 prompts: lengths 1, 7, 40
    {"ids": [int],                             // input ids (BOS first iff add_bos)
     "logits": [[float; vocab]; n_pos],        // every position
     "hidden_states": [[[float; hidden]; n_pos]; num_hidden_layers + 1],
                                               // [0] = token embeddings, [i] = residual after layer i-1,
                                               // [L] = last layer output WITH the final norm (HF convention)
     "last_layer_output_prenorm": [[float; hidden]; n_pos],   // last layer output before the final norm
     "argmax": [int; n_pos], "top1_margin": [float; n_pos], "min_top1_margin": float,
     "generated": [int; 16],                   // greedy continuation (model.generate, no EOS stop)
     "generated_top1_margin": [float; 16]}     // margin of each greedy step
  ],
  "tokenizer_tests": [{"text": str, "ids": [int], "ids_with_special": [int]}],  // HF tokenizer encodings
  "f16_weight_reference": {                    // qwen3 only: same model, 2-D weights rounded to f16
    "note": str,
    "sequences": [{"ids", "logits", "argmax", "min_top1_margin", "generated"}]}
}
```
"""


def write_readme(out_root: Path, results: dict) -> None:
    parts = [README_HEAD, "\n## GGUF contents (read back with gguf-py)\n"]
    for arch, r in results.items():
        ref = r["ref"]
        parts.append(f"\n### {arch}\n")
        stats = []
        for s in ref["sequences"]:
            stats.append(f"len {len(s['ids'])}: min top1-top2 margin {s['min_top1_margin']}")
        parts.append("Reference: " + "; ".join(stats) + "\n")
        for ot, text in r["listing"].items():
            parts.append("\n```\n" + text + "\n```\n")
    (out_root / "README.md").write_text("".join(parts))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_convert":
        convert_child(*sys.argv[2:6])
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--arch", nargs="+", choices=list(SPECS), default=list(SPECS))
    ap.add_argument("--work", type=Path, default=None, help="where to keep the HF checkpoints (default: temp dir)")
    args = ap.parse_args()

    use_converter_paths()
    import torch
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    work_ctx = tempfile.TemporaryDirectory() if args.work is None else None
    work = Path(work_ctx.name) if work_ctx else args.work
    results = {}
    for arch in args.arch:
        results[arch] = make(arch, args.out, work)
    if set(args.arch) == set(SPECS):
        write_readme(args.out, results)
    else:
        print("(README.md only rewritten when all archs are built)")
    total = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"\nfixtures in {args.out}: {total / 1e6:.2f} MB total")
    for p in sorted(args.out.rglob("*")):
        if p.is_file():
            print(f"  {p.relative_to(args.out)}: {p.stat().st_size / 1e6:.3f} MB")
    if work_ctx:
        work_ctx.cleanup()


if __name__ == "__main__":
    main()
