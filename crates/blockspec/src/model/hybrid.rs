//! The hybrid decoder of Qwen3.5 / Qwen3.6 (dense and MoE) and Qwen3-Next, after llama.cpp's
//! `qwen35.cpp`, `qwen35moe.cpp` and `qwen3next.cpp`: most layers are Gated DeltaNet
//! ([`super::delta_net`]), every `full_attention_interval`-th is gated attention (one
//! projection gives each head's query and an output gate; per-head Q/K norms; partial RoPE).
//! Each layer is `h + mixer(norm(h))`, then `+ ffn(post_norm(.))`, the FFN dense or MoE.

use super::blocks::{
    attend, capture_layer, graph_size, norm, output_head, AttnSpec, ForwardGraph, GraphShape,
    Inputs, StepInputs,
};
use super::delta_net::{self, DeltaNetSpec, DeltaNetWeights, Kept, KeySharing, StateIo};
use super::weights::{declare_ffn, declare_head, Loader};
use super::{Arch, Ffn, Hparams, Layers, Weights};
use crate::format::gguf::{Gguf, GgufError};
use crate::runtime::capture::CaptureBuffer;
use crate::runtime::kv_cache::KvCache;
use crate::runtime::recurrent_state::RecurrentState;
use anyhow::{bail, Result};
use ggml::{Backend, Context, Graph, Tensor, WeightUse};

/// One layer of a hybrid model.
pub struct HybridLayer<T = Tensor> {
    pub attn_norm: T,
    /// The norm before the feed-forward block (`post_attention_norm`).
    pub post_norm: T,
    pub mixer: Mixer<T>,
    pub ffn: Ffn<T>,
}

/// What mixes tokens in a layer.
pub enum Mixer<T = Tensor> {
    Attention(GatedAttention<T>),
    DeltaNet(DeltaNetWeights<T>),
}

/// Gated full attention's tensors.
pub struct GatedAttention<T = Tensor> {
    /// `[n_embd, 2 * head_dim * n_head]`: per head, the query then the output gate.
    pub wq: T,
    pub wk: T,
    pub wv: T,
    pub wo: T,
    pub q_norm: T,
    pub k_norm: T,
}

impl<T> HybridLayer<T> {
    fn map<U>(self, mut f: impl FnMut(T) -> U) -> HybridLayer<U> {
        HybridLayer {
            attn_norm: f(self.attn_norm),
            post_norm: f(self.post_norm),
            mixer: match self.mixer {
                Mixer::Attention(a) => Mixer::Attention(GatedAttention {
                    wq: f(a.wq),
                    wk: f(a.wk),
                    wv: f(a.wv),
                    wo: f(a.wo),
                    q_norm: f(a.q_norm),
                    k_norm: f(a.k_norm),
                }),
                Mixer::DeltaNet(d) => Mixer::DeltaNet(d.map(&mut f)),
            },
            ffn: self.ffn.map(f),
        }
    }
}

/// The per-architecture choices of the hybrid stack.
fn key_sharing(arch: Arch) -> KeySharing {
    match arch {
        Arch::Qwen3Next => KeySharing::Grouped,
        _ => KeySharing::Tiled,
    }
}

/// Read the hybrid keys into `hp` (read by [`Hparams::from_gguf`] first): the Gated DeltaNet
/// geometry, which layers are recurrent, RoPE sections (`sections`: Qwen3.5's M-RoPE), and the
/// MTP layers that `block_count` includes but the main model does not run.
pub(crate) fn read_hparams(g: &Gguf, hp: &mut Hparams, sections: bool) -> Result<(), GgufError> {
    let a = hp.arch.gguf_name();
    let k = |s: &str| format!("{a}.{s}");
    let invalid = |what: String| GgufError::Invalid {
        path: g.path().to_path_buf(),
        what,
    };
    let n_all = hp.n_layer;
    let n_mtp = g.int_or(&k("nextn_predict_layers"), 0)? as usize;
    if n_mtp >= n_all {
        return Err(invalid(format!(
            "{n_mtp} MTP layers of {n_all} blocks leave no main layers"
        )));
    }
    hp.n_layer = n_all - n_mtp;
    let ssm = super::SsmParams {
        d_conv: g.size(&k("ssm.conv_kernel"))?,
        head_dim: g.size(&k("ssm.state_size"))?,
        n_k_heads: g.size(&k("ssm.group_count"))?,
        n_v_heads: g.size(&k("ssm.time_step_rank"))?,
    };
    let inner = g.size(&k("ssm.inner_size"))?;
    if ssm.d_conv < 2
        || ssm.n_k_heads == 0
        || !ssm.n_v_heads.is_multiple_of(ssm.n_k_heads)
        || inner != ssm.d_inner()
    {
        return Err(invalid(format!(
            "Gated DeltaNet geometry: conv {} , {} key heads, {} value heads of {}, inner size {inner}",
            ssm.d_conv, ssm.n_k_heads, ssm.n_v_heads, ssm.head_dim
        )));
    }
    hp.ssm = Some(ssm);
    hp.recurrent = match g.get(&k("attention.recurrent_layers")) {
        Some(v) => {
            let arr = v.as_array().unwrap_or(&[]);
            let flags: Option<Vec<bool>> = arr.iter().map(|x| x.as_bool()).collect();
            match flags {
                Some(f) if f.len() >= hp.n_layer => f[..hp.n_layer].to_vec(),
                _ => {
                    return Err(invalid(format!(
                        "{}: expected {} booleans",
                        k("attention.recurrent_layers"),
                        n_all
                    )))
                }
            }
        }
        None => {
            let every = g.int_or(&k("full_attention_interval"), 4)?.max(1) as usize;
            (0..hp.n_layer).map(|i| (i + 1) % every != 0).collect()
        }
    };
    if hp.recurrent.iter().all(|&r| r) || hp.recurrent.iter().all(|&r| !r) {
        return Err(invalid(
            "a hybrid model needs both recurrent and attention layers".into(),
        ));
    }
    if sections {
        let s = g
            .int_array(&k("rope.dimension_sections"))?
            .unwrap_or_default();
        let mut sec = [0i32; 4];
        for (d, v) in sec.iter_mut().zip(&s) {
            *d = *v as i32;
        }
        hp.rope.sections = Some(sec);
    }
    Ok(())
}

/// Load a hybrid model's weights onto `backend`.
pub fn load(
    g: &Gguf,
    backend: &Backend,
    hp: &Hparams,
    progress: bool,
    repack: bool,
) -> Result<Weights> {
    let Some(ssm) = hp.ssm else {
        bail!("{}: not a hybrid model", g.path().display())
    };
    let mut l = Loader::new(g, backend, repack);
    let head = declare_head(&mut l, hp)?;
    let (e, hd) = (hp.n_embd, hp.head_dim);
    let fused_ba = hp.arch == Arch::Qwen3Next;
    let mut layers = Vec::with_capacity(hp.n_layer);
    for il in 0..hp.n_layer {
        let n = |s: &str| format!("blk.{il}.{s}");
        let mixer = if hp.is_recurrent(il) {
            Mixer::DeltaNet(delta_net::declare(&mut l, e, &ssm, il, fused_ba)?)
        } else {
            let (q2, kv) = (2 * hd * hp.n_head, hp.n_embd_kv());
            let mm = WeightUse::MulMat;
            Mixer::Attention(GatedAttention {
                wq: l.require(&n("attn_q.weight"), &[e, q2], mm)?,
                wk: l.require(&n("attn_k.weight"), &[e, kv], mm)?,
                wv: l.require(&n("attn_v.weight"), &[e, kv], mm)?,
                wo: l.require(&n("attn_output.weight"), &[hd * hp.n_head, e], mm)?,
                q_norm: l.require(&n("attn_q_norm.weight"), &[hd], WeightUse::Other)?,
                k_norm: l.require(&n("attn_k_norm.weight"), &[hd], WeightUse::Other)?,
            })
        };
        layers.push(HybridLayer {
            attn_norm: l.require(&n("attn_norm.weight"), &[e], WeightUse::Other)?,
            post_norm: l.require(&n("post_attention_norm.weight"), &[e], WeightUse::Other)?,
            mixer,
            ffn: declare_ffn(&mut l, hp, il)?,
        });
    }
    let (tensors, store) = l.load(progress)?;
    let layers = layers
        .into_iter()
        .map(|x| x.map(|i| tensors[i].clone()))
        .collect();
    Ok(head.resolve(&tensors, Layers::Hybrid(layers), store))
}

/// Gated attention on the normed rows `x`: `[n_embd, n]` before the residual.
fn gated_attention(
    c: &mut Context,
    gf: &Graph,
    a: &AttnSpec,
    w: &GatedAttention,
    cache: super::blocks::LayerCache,
    step: &StepInputs,
    x: &Tensor,
) -> Tensor {
    let n = x.ne()[1];
    let (hd, nh, nkv) = (a.head_dim as i64, a.n_head as i64, a.n_head_kv as i64);
    let qg = c.mul_mat(&w.wq, x);
    let k = c.mul_mat(&w.wk, x);
    let v = c.mul_mat(&w.wv, x);
    let f = 4usize;
    let strides = [2 * hd as usize * f, 2 * (hd * nh) as usize * f];
    let q = c.view(&qg, &[hd, nh, n], &strides, 0);
    let q = norm(c, &q, &w.q_norm, a.rms_eps);
    let k = c.reshape(&k, &[hd, nkv, n]);
    let k = norm(c, &k, &w.k_norm, a.rms_eps);
    let gate = c.view(&qg, &[hd, nh, n], &strides, hd as usize * f);
    let gate = c.cont(&gate);
    let gate = c.reshape(&gate, &[hd * nh, n]);
    let v = c.reshape(&v, &[hd, nkv, n]);
    let q = a.rope(c, &q, step.pos);
    let k = a.rope(c, &k, step.pos);
    let att = attend(c, gf, a, cache, step, [&q, &k, &v]);
    let gate = c.sigmoid(&gate);
    let att = c.mul(&att, &gate);
    c.mul_mat(&w.wo, &att)
}

/// The forward graph of a hybrid model.
pub fn build(
    hp: &Hparams,
    w: &Weights,
    layers: &[HybridLayer],
    kv: &KvCache,
    state: &RecurrentState,
    capture: Option<&CaptureBuffer>,
    shape: GraphShape,
) -> ForwardGraph {
    let nodes = graph_size(hp, shape.tree.map_or(0, |t| t.n_levels()));
    let mut c = Context::new(nodes * 2, nodes);
    c.keep(w.owner());
    c.keep(kv.owner());
    c.keep(state.owner());
    let capture = capture.filter(|_| shape.capture);
    if let Some(cap) = capture {
        c.keep(cap.owner());
    }
    let gf = c.new_graph(nodes);
    let inp = Inputs::new(&mut c, hp, shape);
    let attn = AttnSpec::of(hp, w);
    let dn = DeltaNetSpec {
        ssm: state.ssm,
        sharing: key_sharing(hp.arch),
        eps: hp.rms_eps,
    };
    let step = StepInputs {
        pos: &inp.pos,
        kv_rows: &inp.kv_rows,
        mask: &inp.mask,
        n_kv: shape.n_kv,
        out_rows: None,
    };
    let mut kept = Vec::new();
    let mut kept_tree = Vec::new();
    let mut h = c.get_rows(&w.tok_embd, &inp.tokens);
    for (il, l) in layers.iter().enumerate() {
        let x = norm(&mut c, &h, &l.attn_norm, hp.rms_eps);
        c.build_forward_expand(&gf, &x);
        let mut cur = match &l.mixer {
            Mixer::Attention(a) => gated_attention(&mut c, &gf, &attn, a, kv.layer(il), &step, &x),
            Mixer::DeltaNet(d) => {
                let (conv, delta) = state.layer(il);
                let io = StateIo {
                    layer: il,
                    conv,
                    delta,
                    keep: shape.keep_states,
                    tree: shape.tree.zip(inp.tree_index.as_ref()),
                };
                let (out, k) = delta_net::build(&mut c, &gf, &dn, d, io, &x);
                match k {
                    Kept::Nothing => {}
                    Kept::Chain(k) => kept.push(k),
                    Kept::Tree(k) => kept_tree.push(k),
                }
                out
            }
        };
        let mut residual = h.clone();
        if let (Some(ids), true) = (&inp.out_ids, il + 1 == hp.n_layer) {
            cur = c.get_rows(&cur, ids);
            residual = c.get_rows(&residual, ids);
        }
        let cur = c.add(&cur, &residual);
        let y = norm(&mut c, &cur, &l.post_norm, hp.rms_eps);
        let y = super::blocks::ffn(&mut c, &gf, &l.ffn, &y);
        let out = c.add(&y, &cur);
        if let Some(cap) = capture {
            capture_layer(&mut c, &gf, cap, il, &out);
        }
        h = out;
    }
    let head = output_head(&mut c, &gf, hp, w, &h);
    ForwardGraph::from_parts(c, gf, shape, inp, head, (kept, kept_tree))
}
