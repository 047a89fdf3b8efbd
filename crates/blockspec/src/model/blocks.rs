//! The dense decoder forward graph shared by qwen2, qwen3 and llama (they differ in Q/K/V bias,
//! Q/K norm and RoPE style: see [`super::Variant`]). Node for node it follows llama.cpp's graph,
//! so that on the same backend both compute the same numbers. Its layer, [`decoder_layer`], is
//! also the DFlash drafter's (attention over a KV cache + SwiGLU MLP, with that drafter's Q/K
//! norms and non-causal mask).
//!
//! Everything that changes from one step to the next is an INPUT tensor (token ids, positions,
//! KV write rows, the attention mask, output row ids), so a graph built for a shape is reused for
//! every step of that shape.

use super::tree_levels::TreeLevels;
use super::{Ffn, Hparams, LayerWeights, Weights};
use crate::runtime::capture::CaptureBuffer;
use crate::runtime::kv_cache::KvCache;
use ggml::{Context, Graph, RopeParams, Tensor, Type};

/// What a graph computes: `n_tokens` new tokens attending over `n_kv` cache cells, producing
/// logits for `n_outputs` of them (the last ones, or all), optionally capturing hidden states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GraphShape {
    pub n_tokens: usize,
    pub n_kv: usize,
    pub n_outputs: usize,
    pub capture: bool,
    /// Recurrent layers keep their state after every token (a verify whose prefix is committed
    /// later) instead of writing the state after the last one. Always false for dense models.
    pub keep_states: bool,
    /// A draft tree on a hybrid target: the recurrent layers step level by level (see
    /// [`TreeLevels`]). `None` for chains, and for trees on dense targets (whose graph is
    /// that of a chain with another mask).
    pub tree: Option<TreeLevels>,
}

/// A built graph and its input/output tensors.
pub struct ForwardGraph {
    pub ctx: Context,
    pub graph: Graph,
    pub shape: GraphShape,
    /// I32 [n_tokens]
    pub tokens: Tensor,
    /// I32 [n_tokens * pos_sections]
    pub pos: Tensor,
    /// Position entries per token: 1, or 4 for multi-section RoPE (section-major: the
    /// positions, twice more, then zeros; see [`positions`]).
    pub pos_sections: usize,
    /// I64 [n_tokens]: KV cache cell each token's K/V row is written to.
    pub kv_rows: Tensor,
    /// F16 [n_kv, n_tokens]: 0 where a token may attend to a cell, -inf where not.
    pub mask: Tensor,
    /// I32 [n_outputs] when only some rows produce logits.
    pub out_ids: Option<Tensor>,
    /// F32 [n_vocab, n_outputs]
    pub logits: Tensor,
    /// F32 [n_embd, n_outputs]: the output rows' hidden states after the final norm (what the
    /// lm_head multiplies; embeddings are read from here).
    pub hidden: Tensor,
    /// I32 [n_outputs]: each output row's most likely token, so a greedy step on a GPU reads
    /// back a few ids instead of every logit.
    pub argmax: Tensor,
    /// Per recurrent layer of a `keep_states` graph: the per-token states to commit from.
    pub kept: Vec<crate::runtime::recurrent_state::KeptStates>,
    /// I32 [`TreeLevels::index_len`] for a `tree` graph: the tree's layout
    /// ([`TreeLevels::index`]).
    pub tree_index: Option<Tensor>,
    /// Per recurrent layer of a `tree` graph: every node's state to commit from.
    pub kept_tree: Vec<crate::runtime::recurrent_state::KeptTreeStates>,
}

impl ForwardGraph {
    /// A built graph from its context, inputs, output head (logits, argmax) and, for a
    /// `keep_states` graph, the recurrent layers' kept states.
    pub(crate) fn from_parts(
        ctx: Context,
        graph: Graph,
        shape: GraphShape,
        inp: Inputs,
        head: Head,
        (kept, kept_tree): (
            Vec<crate::runtime::recurrent_state::KeptStates>,
            Vec<crate::runtime::recurrent_state::KeptTreeStates>,
        ),
    ) -> ForwardGraph {
        ForwardGraph {
            ctx,
            graph,
            shape,
            tokens: inp.tokens,
            pos: inp.pos,
            pos_sections: inp.pos_sections,
            kv_rows: inp.kv_rows,
            mask: inp.mask,
            out_ids: inp.out_ids,
            logits: head.logits,
            argmax: head.argmax,
            hidden: head.hidden,
            kept,
            tree_index: inp.tree_index,
            kept_tree,
        }
    }
}

/// The position input for `n` tokens from `start`: `sections` = 1 gives the positions; 4 gives
/// multi-section RoPE's text positions, section-major `[p.., p.., p.., 0..]` (as llama.cpp).
pub fn positions(start: usize, n: usize, sections: usize) -> Vec<i32> {
    let p = (start..start + n).map(|p| p as i32);
    match sections {
        1 => p.collect(),
        _ => {
            let mut v: Vec<i32> = Vec::with_capacity(n * sections);
            for s in 0..sections {
                if s < 3 {
                    v.extend(p.clone());
                } else {
                    v.extend(std::iter::repeat_n(0, n));
                }
            }
            v
        }
    }
}

/// Graph node budget for a graph whose recurrent layers step through `tree_levels` levels of
/// a draft tree (0 for a chain).
pub(crate) fn graph_size(hp: &Hparams, tree_levels: usize) -> usize {
    // Nodes and leaves per layer: ~40 for attention + SwiGLU; routed experts add a view and
    // an add per used expert and ~30 more; a Gated DeltaNet layer ~60, and ~24 per tree level.
    let moe = hp.moe.map_or(0, |m| 2 * m.n_expert_used + 30);
    let ssm = if hp.ssm.is_some() {
        60 + 24 * tree_levels
    } else {
        0
    };
    (hp.n_layer * (40 + moe + ssm) + 256).max(2048)
}

/// The RoPE scalars of `hp` (NeoX or normal mode; see [`AttnSpec::sections`] for M-RoPE).
pub(crate) fn rope_params(hp: &Hparams) -> RopeParams {
    RopeParams {
        n_dims: hp.rope.n_rot as i32,
        mode: match (hp.rope.sections, hp.variant.rope_neox) {
            (Some(_), _) => IMROPE,
            (None, true) => 2,
            (None, false) => 0,
        },
        n_ctx_orig: hp.rope.n_ctx_orig as i32,
        freq_base: hp.rope.freq_base,
        freq_scale: hp.rope.freq_scale,
        ext_factor: hp.rope.ext_factor,
        attn_factor: hp.rope.attn_factor,
        beta_fast: hp.rope.beta_fast,
        beta_slow: hp.rope.beta_slow,
    }
}

/// ggml's interleaved multi-section RoPE mode (Qwen3.5/3.6).
const IMROPE: i32 = 40;

/// The graph inputs every target graph has.
pub(crate) struct Inputs {
    pub tokens: Tensor,
    pub pos: Tensor,
    pub pos_sections: usize,
    pub kv_rows: Tensor,
    pub mask: Tensor,
    pub out_ids: Option<Tensor>,
    pub tree_index: Option<Tensor>,
}

impl Inputs {
    pub fn new(c: &mut Context, hp: &Hparams, shape: GraphShape) -> Inputs {
        let nt = shape.n_tokens as i64;
        let pos_sections = if hp.rope.sections.is_some() { 4 } else { 1 };
        Inputs {
            tokens: c.input(Type::I32, &[nt], "inp_tokens"),
            pos: c.input(Type::I32, &[nt * pos_sections as i64], "inp_pos"),
            pos_sections,
            kv_rows: c.input(Type::I64, &[nt], "inp_kv_rows"),
            mask: c.input(Type::F16, &[shape.n_kv as i64, nt, 1, 1], "inp_kq_mask"),
            out_ids: (shape.n_outputs < shape.n_tokens)
                .then(|| c.input(Type::I32, &[shape.n_outputs as i64], "inp_out_ids")),
            tree_index: shape.tree.zip(hp.ssm).map(|(t, s)| {
                c.input(Type::I32, &[t.index_len(s.d_conv) as i64], "inp_tree_index")
            }),
        }
    }
}

/// Copy layer `il`'s output rows into the capture buffer, if that layer is captured.
pub(crate) fn capture_layer(
    c: &mut Context,
    gf: &Graph,
    cap: &CaptureBuffer,
    il: usize,
    out: &Tensor,
) {
    let Some(slot) = cap.slot_of(il) else {
        return;
    };
    // The last layer only has the output rows when out_ids selected some.
    let (n_embd, rows) = (out.ne()[0], out.ne()[1]);
    let row_bytes = cap.tensor.nb()[1];
    let dst = c.view(
        &cap.tensor,
        &[n_embd, rows],
        &[row_bytes],
        slot * n_embd as usize * 4,
    );
    let cp = c.cpy(out, &dst);
    c.build_forward_expand(gf, &cp);
}

/// The outputs of a target graph's head.
pub(crate) struct Head {
    pub logits: Tensor,
    pub argmax: Tensor,
    /// The normed hidden state the logits are computed from.
    pub hidden: Tensor,
}

/// The final norm, the lm_head and the argmax on the last hidden state. The normed hidden
/// state is an output too (as llama.cpp's `t_embd`), for embeddings.
pub(crate) fn output_head(
    c: &mut Context,
    gf: &Graph,
    hp: &Hparams,
    w: &Weights,
    h: &Tensor,
) -> Head {
    let cur = c.rms_norm(h, hp.rms_eps);
    let cur = c.mul(&cur, &w.output_norm);
    c.set_name(&cur, "result_norm");
    c.set_output(&cur);
    let logits = c.mul_mat(&w.output, &cur);
    c.set_name(&logits, "result_output");
    c.set_output(&logits);
    c.build_forward_expand(gf, &logits);
    let argmax = c.argmax(&logits);
    c.set_output(&argmax);
    c.build_forward_expand(gf, &argmax);
    Head {
        logits,
        argmax,
        hidden: cur,
    }
}

/// The forward graph of a dense model (`layers`: all attention).
pub fn build(
    hp: &Hparams,
    w: &Weights,
    layers: &[LayerWeights],
    kv: &KvCache,
    capture: Option<&CaptureBuffer>,
    shape: GraphShape,
) -> ForwardGraph {
    let nodes = graph_size(hp, 0);
    let mut c = Context::new(nodes * 2, nodes);
    c.keep(w.owner());
    c.keep(kv.owner());
    let capture = capture.filter(|_| shape.capture);
    if let Some(cap) = capture {
        c.keep(cap.owner());
    }
    let gf = c.new_graph(nodes);
    let inp = Inputs::new(&mut c, hp, shape);
    let attn = AttnSpec::of(hp, w);
    let step = StepInputs {
        pos: &inp.pos,
        kv_rows: &inp.kv_rows,
        mask: &inp.mask,
        n_kv: shape.n_kv,
        out_rows: None,
    };

    let mut inp_l = c.get_rows(&w.tok_embd, &inp.tokens);
    for (il, l) in layers.iter().enumerate() {
        // Only the output rows go on past the last layer's attention.
        let step = StepInputs {
            out_rows: inp.out_ids.as_ref().filter(|_| il + 1 == hp.n_layer),
            ..step
        };
        let out = decoder_layer(&mut c, &gf, &attn, l, kv.layer(il), &step, &inp_l);
        if let Some(cap) = capture {
            capture_layer(&mut c, &gf, cap, il, &out);
        }
        inp_l = out;
    }
    let head = output_head(&mut c, &gf, hp, w, &inp_l);
    ForwardGraph::from_parts(c, gf, shape, inp, head, (Vec::new(), Vec::new()))
}

/// The attention geometry and constants shared by every layer of one decoder stack.
pub struct AttnSpec {
    pub head_dim: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    /// Epsilon of every RMS norm in the layer (input, Q/K and feed-forward norms).
    pub rms_eps: f32,
    pub rope: RopeParams,
    /// Per-dimension RoPE frequency factors (llama 3's `rope_freqs`), if the model has them.
    pub rope_freqs: Option<Tensor>,
    /// Multi-section RoPE's sections (then `pos` holds 4 entries per token).
    pub sections: Option<[i32; 4]>,
}

impl AttnSpec {
    /// A target's attention constants.
    pub fn of(hp: &Hparams, w: &Weights) -> AttnSpec {
        AttnSpec {
            head_dim: hp.head_dim,
            n_head: hp.n_head,
            n_head_kv: hp.n_head_kv,
            rms_eps: hp.rms_eps,
            rope: rope_params(hp),
            rope_freqs: w.rope_freqs.clone(),
            sections: hp.rope.sections,
        }
    }

    /// RoPE `t` (`[head_dim, heads, n]`) at `pos`.
    pub fn rope(&self, c: &mut Context, t: &Tensor, pos: &Tensor) -> Tensor {
        match self.sections {
            Some(s) => c.rope_multi(t, pos, s, &self.rope),
            None => c.rope_ext(t, pos, self.rope_freqs.as_ref(), &self.rope),
        }
    }
}

/// One layer's K and V cache tensors (`[n_embd_kv, n_cells]` each).
#[derive(Clone, Copy)]
pub struct LayerCache<'a> {
    pub k: &'a Tensor,
    pub v: &'a Tensor,
    pub n_cells: usize,
}

/// The per-step inputs every layer of a graph reads.
#[derive(Clone, Copy)]
pub struct StepInputs<'a> {
    /// I32 `[n]`: each row's position (RoPE).
    pub pos: &'a Tensor,
    /// I64 `[n]`: the cache cell each row's K/V are written to.
    pub kv_rows: &'a Tensor,
    /// F16 `[n_kv, n]`: 0 where a row may attend to a cell, -inf where not (causal for a
    /// target, the DFlash block's non-causal pattern for the drafter: only the mask differs).
    pub mask: &'a Tensor,
    /// Cache cells attended over (the first `n_kv`).
    pub n_kv: usize,
    /// I32 `[n_out]`: the rows that go on past this layer's attention (a target's last layer
    /// when only some rows produce logits); `None`: all.
    pub out_rows: Option<&'a Tensor>,
}

/// `rms_norm(x) * w`.
pub(crate) fn norm(c: &mut Context, x: &Tensor, w: &Tensor, eps: f32) -> Tensor {
    let x = c.rms_norm(x, eps);
    c.mul(&x, w)
}

/// Project `x` (`[n_embd, n]`) with `w` (+ `bias`) to `[head_dim, n_heads, n]`, RMS-normalize
/// each head with `head_norm` if the model has one, and RoPE it at `pos`: the Q and the K path.
fn rope_heads(
    c: &mut Context,
    a: &AttnSpec,
    w: &Tensor,
    bias: Option<&Tensor>,
    head_norm: Option<&Tensor>,
    x: &Tensor,
    pos: &Tensor,
) -> Tensor {
    let mut t = c.mul_mat(w, x);
    if let Some(b) = bias {
        t = c.add(&t, b);
    }
    let hd = a.head_dim as i64;
    let ne = t.ne();
    let mut t = c.reshape(&t, &[hd, ne[0] / hd, ne[1]]);
    if let Some(hn) = head_norm {
        t = norm(c, &t, hn, a.rms_eps);
    }
    a.rope(c, &t, pos)
}

/// A layer's K (normed, RoPEd) and V heads for the rows of `x` (the normed layer input), each
/// `[head_dim, n_head_kv, n]`. The DFlash drafter also runs this alone on its context features,
/// so the cached context K/V and a block's own K/V are computed alike.
pub fn kv_heads(
    c: &mut Context,
    a: &AttnSpec,
    l: &LayerWeights,
    x: &Tensor,
    pos: &Tensor,
) -> (Tensor, Tensor) {
    let k = rope_heads(c, a, &l.wk, l.bk.as_ref(), l.k_norm.as_ref(), x, pos);
    let mut v = c.mul_mat(&l.wv, x);
    if let Some(b) = &l.bv {
        v = c.add(&v, b);
    }
    let v = c.reshape(&v, &[a.head_dim as i64, a.n_head_kv as i64, x.ne()[1]]);
    (k, v)
}

/// Write K and V heads (`[head_dim, n_head_kv, n]`) into `cache` at cells `rows`.
pub fn write_kv(
    c: &mut Context,
    gf: &Graph,
    cache: LayerCache,
    k: &Tensor,
    v: &Tensor,
    rows: &Tensor,
) {
    for (dst, src) in [(cache.k, k), (cache.v, v)] {
        let ne = src.ne();
        let flat = c.view(src, &[ne[0] * ne[1], ne[2]], &[src.nb()[2]], 0);
        let st = c.set_rows(dst, &flat, rows);
        c.build_forward_expand(gf, &st);
    }
}

/// The first `n_kv` cells of one layer's K or V cache, as `[head_dim, n_kv, n_head_kv]`.
fn cache_heads(
    c: &mut Context,
    a: &AttnSpec,
    cache: &Tensor,
    n_cells: usize,
    n_kv: usize,
) -> Tensor {
    let row = cache.nb()[1];
    let head = cache
        .ty()
        .row_bytes(a.head_dim as u64)
        .expect("checked at cache creation") as usize;
    let heads = c.view(
        cache,
        &[a.head_dim as i64, a.n_head_kv as i64, n_kv as i64, 1],
        &[head, row, row * n_cells],
        0,
    );
    c.permute(&heads, [0, 2, 1, 3])
}

/// One pre-norm decoder layer on `h` (`[n_embd, n]`): attention of the rows' Q over the first
/// `step.n_kv` cells of `cache` (the rows' own K/V written there first) under `step.mask`, then
/// the SwiGLU feed-forward, each with its residual. The target models and the DFlash drafter's
/// block both run it; they differ only in weights (biases, Q/K norms), RoPE and mask.
pub fn decoder_layer(
    c: &mut Context,
    gf: &Graph,
    a: &AttnSpec,
    l: &LayerWeights,
    cache: LayerCache,
    step: &StepInputs,
    h: &Tensor,
) -> Tensor {
    let x = norm(c, h, &l.attn_norm, a.rms_eps);
    let q = rope_heads(c, a, &l.wq, l.bq.as_ref(), l.q_norm.as_ref(), &x, step.pos);
    let (k, v) = kv_heads(c, a, l, &x, step.pos);
    let att = attend(c, gf, a, cache, step, [&q, &k, &v]);
    let mut cur = c.mul_mat(&l.wo, &att);
    let mut residual = h.clone();
    if let Some(ids) = step.out_rows {
        cur = c.get_rows(&cur, ids);
        residual = c.get_rows(&residual, ids);
    }
    let ffn_inp = c.add(&cur, &residual);
    let x = norm(c, &ffn_inp, &l.ffn_norm, a.rms_eps);
    let out = ffn(c, gf, &l.ffn, &x);
    c.add(&out, &ffn_inp)
}

/// Attention of the rows' `q` (`[head_dim, n_head, n]`) over the first `step.n_kv` cells of
/// `cache`, after writing the rows' `k`, `v` there: `[head_dim * n_head, n]`.
pub fn attend(
    c: &mut Context,
    gf: &Graph,
    a: &AttnSpec,
    cache: LayerCache,
    step: &StepInputs,
    [q, k, v]: [&Tensor; 3],
) -> Tensor {
    let n = q.ne()[2];
    let (hd, nh) = (a.head_dim as i64, a.n_head as i64);
    // Same node order as llama.cpp: q, v, k, then the cache writes.
    c.build_forward_expand(gf, q);
    c.build_forward_expand(gf, v);
    c.build_forward_expand(gf, k);
    write_kv(c, gf, cache, k, v, step.kv_rows);

    let kp = cache_heads(c, a, cache.k, cache.n_cells, step.n_kv);
    let vp = cache_heads(c, a, cache.v, cache.n_cells, step.n_kv);
    let q4 = c.view(
        q,
        &[hd, nh, n, 1],
        &[q.nb()[1], q.nb()[2], q.nb()[2] * n as usize],
        0,
    );
    let qp = c.permute(&q4, [0, 2, 1, 3]);
    let kq_scale = 1.0 / (a.head_dim as f32).sqrt();
    let att = c.flash_attn_ext(&qp, &kp, &vp, step.mask, kq_scale);
    let ne = att.ne();
    c.reshape(&att, &[ne[0] * ne[1], ne[2] * ne[3]])
}

/// The feed-forward block on the normed `x`: SwiGLU, or the routed experts.
pub fn ffn(c: &mut Context, gf: &Graph, f: &Ffn, x: &Tensor) -> Tensor {
    match f {
        Ffn::Dense { gate, up, down } => {
            let u = c.mul_mat(up, x);
            let g = c.mul_mat(gate, x);
            let act = c.swiglu_split(&g, &u);
            c.mul_mat(down, &act)
        }
        Ffn::Moe(m) => super::moe::build(c, gf, m, x),
    }
}
