#!/usr/bin/env python3
"""An independent float64 numpy forward pass that reads ONLY a GGUF (tensors + metadata) of arch qwen3,
qwen3moe, qwen35, qwen35moe or qwen3next, following the llama.cpp GGUF conventions documented in
tests/fixtures/hybrid/README.md. make_hybrid_models.py runs it on every fixture and records how close it is
to transformers (checks.numpy_gguf_forward_vs_hf_max_abs_dlogit), and how far a forward with the other
V-head order lands (which shows the fixtures tell the two apart). It is an executable statement of the
conventions, written for clarity, not speed.

    python gguf_numpy_forward.py model.gguf 1 2 3     # prints the argmax of each position

Needs numpy and llama.cpp's gguf-py on sys.path.
"""
from __future__ import annotations

import sys

import numpy as np


def read_gguf(path) -> tuple[dict, dict]:
    import gguf
    r = gguf.GGUFReader(str(path))
    meta = {}
    for name, field in r.fields.items():
        if not name.startswith("GGUF."):
            meta[name] = field.contents()
    tensors = {}
    for t in r.tensors:
        shape = [int(v) for v in t.shape][::-1]  # GGML ne[0] is the fastest dim: numpy order reversed
        tensors[t.name] = np.array(t.data, copy=True).reshape(shape).astype(np.float64)
    return meta, tensors


def rms_norm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def silu(x):
    return x / (1.0 + np.exp(-x))


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def softplus(x):
    return np.where(x > 20, x, np.log1p(np.exp(np.minimum(x, 20))))


def rope_neox(x, n_rot, base):
    """x [T, H, D]: rotate the first n_rot dims, pairs (i, i + n_rot/2), theta_i = pos * base^(-2i/n_rot)."""
    T = x.shape[0]
    half = n_rot // 2
    inv = base ** (-np.arange(half, dtype=np.float64) * 2.0 / n_rot)
    ang = np.arange(T, dtype=np.float64)[:, None] * inv[None, :]  # [T, half]
    c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    y = x.copy()
    x1, x2 = x[..., :half], x[..., half:n_rot]
    y[..., :half] = x1 * c - x2 * s
    y[..., half:n_rot] = x2 * c + x1 * s
    return y


def attention(h, t, p, hp, gated):
    T = h.shape[0]
    H, Hkv, hd = hp["n_head"], hp["n_head_kv"], hp["head_dim"]
    q = h @ t[p + "attn_q.weight"].T
    if gated:  # per head [q_h | gate_h]
        q = q.reshape(T, H, 2 * hd)
        q, gate = q[..., :hd], q[..., hd:].reshape(T, H * hd)
    else:
        q = q.reshape(T, H, hd)
    k = (h @ t[p + "attn_k.weight"].T).reshape(T, Hkv, hd)
    v = (h @ t[p + "attn_v.weight"].T).reshape(T, Hkv, hd)
    q = rms_norm(q, t[p + "attn_q_norm.weight"], hp["eps"])
    k = rms_norm(k, t[p + "attn_k_norm.weight"], hp["eps"])
    q = rope_neox(q, hp["n_rot"], hp["rope_base"])
    k = rope_neox(k, hp["n_rot"], hp["rope_base"])
    out = np.zeros((T, H, hd))
    mask = np.triu(np.full((T, T), -np.inf), 1)
    for i in range(H):
        j = i // (H // Hkv)
        s = q[:, i] @ k[:, j].T / np.sqrt(hd) + mask
        s = np.exp(s - s.max(-1, keepdims=True))
        out[:, i] = (s / s.sum(-1, keepdims=True)) @ v[:, j]
    out = out.reshape(T, H * hd)
    if gated:
        out = out * sigmoid(gate)
    return out @ t[p + "attn_output.weight"].T


def delta_net(h, t, p, hp, v_order):
    T = h.shape[0]
    Hk, Hv, dk = hp["ssm_hk"], hp["ssm_hv"], hp["ssm_dk"]
    dv = hp["ssm_inner"] // Hv
    r = Hv // Hk
    qkv = h @ t[p + "attn_qkv.weight"].T          # [T, 2 Hk dk + Hv dv]
    z = (h @ t[p + "attn_gate.weight"].T).reshape(T, Hv, dv)
    if p + "ssm_ba.weight" in t:                   # qwen3next: per k-head group [r beta | r alpha]
        ba = (h @ t[p + "ssm_ba.weight"].T).reshape(T, Hk, 2 * r)
        b, a = ba[..., :r].reshape(T, Hv), ba[..., r:].reshape(T, Hv)
    else:
        b = h @ t[p + "ssm_beta.weight"].T
        a = h @ t[p + "ssm_alpha.weight"].T
    w = t[p + "ssm_conv1d.weight"]                 # [channels, kernel]
    K = w.shape[1]
    pad = np.concatenate([np.zeros((K - 1, qkv.shape[1])), qkv])
    c = silu(sum(pad[j:j + T] * w[:, j] for j in range(K)))
    q = c[:, :Hk * dk].reshape(T, Hk, dk)
    k = c[:, Hk * dk:2 * Hk * dk].reshape(T, Hk, dk)
    v = c[:, 2 * Hk * dk:].reshape(T, Hv, dv)
    q = q / np.sqrt((q * q).sum(-1, keepdims=True) + 1e-6) / np.sqrt(dk)
    k = k / np.sqrt((k * k).sum(-1, keepdims=True) + 1e-6)
    beta = sigmoid(b)
    g = t[p + "ssm_a"] * softplus(a + t[p + "ssm_dt.bias"])   # ssm_a = -exp(A_log)
    o = np.zeros((T, Hv, dv))
    for j in range(Hv):
        kh = j % Hk if v_order == "tiled" else j // r
        S = np.zeros((dk, dv))
        for s in range(T):
            S = np.exp(g[s, j]) * S
            delta = beta[s, j] * (v[s, j] - S.T @ k[s, kh])
            S = S + np.outer(k[s, kh], delta)
            o[s, j] = S.T @ q[s, kh]
    y = rms_norm(o, t[p + "ssm_norm.weight"], hp["eps"]) * silu(z)
    return y.reshape(T, Hv * dv) @ t[p + "ssm_out.weight"].T


def ffn(h, t, p, hp):
    if p + "ffn_gate_inp.weight" not in t:
        return (silu(h @ t[p + "ffn_gate.weight"].T) * (h @ t[p + "ffn_up.weight"].T)) @ t[p + "ffn_down.weight"].T
    logits = h @ t[p + "ffn_gate_inp.weight"].T    # [T, E]
    pr = np.exp(logits - logits.max(-1, keepdims=True))
    pr /= pr.sum(-1, keepdims=True)
    out = np.zeros_like(h)
    gate, up, down = t[p + "ffn_gate_exps.weight"], t[p + "ffn_up_exps.weight"], t[p + "ffn_down_exps.weight"]
    for s in range(h.shape[0]):
        top = np.argsort(-pr[s], kind="stable")[:hp["n_expert_used"]]
        wts = pr[s, top] / pr[s, top].sum()       # renormalised top-k (norm_topk_prob in all fixtures)
        for e, wt in zip(top, wts):
            out[s] += wt * (down[e] @ (silu(gate[e] @ h[s]) * (up[e] @ h[s])))
    if p + "ffn_gate_inp_shexp.weight" in t:
        sh = (silu(h @ t[p + "ffn_gate_shexp.weight"].T) * (h @ t[p + "ffn_up_shexp.weight"].T)) \
            @ t[p + "ffn_down_shexp.weight"].T
        out += sigmoid(h @ t[p + "ffn_gate_inp_shexp.weight"].T) * sh
    return out


def hparams(meta: dict) -> dict:
    arch = meta["general.architecture"]
    g = lambda k, d=None: meta.get(f"{arch}.{k}", d)  # noqa: E731
    hd = g("attention.key_length") or g("embedding_length") // g("attention.head_count")  # qwen3moe: no key_length
    n_layer = g("block_count")
    return dict(arch=arch, n_layer=n_layer, n_head=g("attention.head_count"), n_head_kv=g("attention.head_count_kv"),
                head_dim=hd, eps=g("attention.layer_norm_rms_epsilon"), rope_base=g("rope.freq_base"),
                n_rot=g("rope.dimension_count", hd), n_expert_used=g("expert_used_count"),
                recurrent=list(g("attention.recurrent_layers", [False] * n_layer)),
                ssm_hk=g("ssm.group_count"), ssm_hv=g("ssm.time_step_rank"), ssm_dk=g("ssm.state_size"),
                ssm_inner=g("ssm.inner_size"))


def forward(meta: dict, t: dict, ids: list[int], v_order: str | None = None) -> np.ndarray:
    """Logits [T, vocab]. v_order: 'tiled' (value head j uses key head j % Hk: qwen35, qwen35moe) or
    'grouped' (j // (Hv/Hk): qwen3next); default by arch."""
    hp = hparams(meta)
    if v_order is None:
        v_order = "grouped" if hp["arch"] == "qwen3next" else "tiled"
    gated = hp["arch"] in ("qwen35", "qwen35moe", "qwen3next")
    x = t["token_embd.weight"][ids]
    for il in range(hp["n_layer"]):
        p = f"blk.{il}."
        h = rms_norm(x, t[p + "attn_norm.weight"], hp["eps"])
        x = x + (delta_net(h, t, p, hp, v_order) if hp["recurrent"][il] else attention(h, t, p, hp, gated))
        pn = t.get(p + "post_attention_norm.weight", t.get(p + "ffn_norm.weight"))
        x = x + ffn(rms_norm(x, pn, hp["eps"]), t, p, hp)
    x = rms_norm(x, t["output_norm.weight"], hp["eps"])
    return x @ t.get("output.weight", t["token_embd.weight"]).T


if __name__ == "__main__":
    m, ts = read_gguf(sys.argv[1])
    print(forward(m, ts, [int(v) for v in sys.argv[2:]]).argmax(-1).tolist())
