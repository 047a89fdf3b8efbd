//! Mixture-of-experts feed-forward (Qwen3 MoE, Qwen3.5/3.6 MoE, Qwen3-Next), node for node as
//! llama.cpp's `build_moe_ffn`: softmax router, top-k experts, their weights renormalised to sum
//! to one, SwiGLU experts through `mul_mat_id`, plus an optional shared expert scaled by a
//! sigmoid gate.

use super::weights::Loader;
use super::MoeParams;
use anyhow::Result;
use ggml::{Context, Graph, Tensor, WeightUse};

/// One layer's experts (`T` is a tensor, or a declaration index while loading).
#[derive(Clone, Debug)]
pub struct MoeWeights<T = Tensor> {
    /// `[n_embd, n_expert]`: the router.
    pub router: T,
    /// `[n_embd, n_ff_exp, n_expert]` each.
    pub gate_exps: T,
    pub up_exps: T,
    /// `[n_ff_exp, n_embd, n_expert]`.
    pub down_exps: T,
    pub n_expert_used: usize,
    pub norm_topk: bool,
    pub shared: Option<SharedExpert<T>>,
}

/// The always-on expert beside the routed ones, and its gate.
#[derive(Clone, Debug)]
pub struct SharedExpert<T = Tensor> {
    /// `[n_embd]`: one logit per token, through a sigmoid.
    pub gate_inp: T,
    pub gate: T,
    pub up: T,
    pub down: T,
}

impl<T> MoeWeights<T> {
    pub(crate) fn map<U>(self, mut f: impl FnMut(T) -> U) -> MoeWeights<U> {
        MoeWeights {
            router: f(self.router),
            gate_exps: f(self.gate_exps),
            up_exps: f(self.up_exps),
            down_exps: f(self.down_exps),
            n_expert_used: self.n_expert_used,
            norm_topk: self.norm_topk,
            shared: self.shared.map(|s| SharedExpert {
                gate_inp: f(s.gate_inp),
                gate: f(s.gate),
                up: f(s.up),
                down: f(s.down),
            }),
        }
    }
}

/// Declare layer `il`'s expert tensors (llama.cpp names); the shared expert when the model
/// has one (`n_ff_shexp > 0`, or its tensors present).
pub fn declare(
    l: &mut Loader,
    n_embd: usize,
    p: &MoeParams,
    il: usize,
) -> Result<MoeWeights<usize>> {
    let n = |s: &str| format!("blk.{il}.{s}");
    let (e, ff, ne) = (n_embd, p.n_ff_exp, p.n_expert);
    let shared = match l.optional(&n("ffn_gate_inp_shexp.weight"), &[e], WeightUse::Other)? {
        None => None,
        Some(gate_inp) => {
            let sf = p.n_ff_shexp;
            Some(SharedExpert {
                gate_inp,
                gate: l.require(&n("ffn_gate_shexp.weight"), &[e, sf], WeightUse::MulMat)?,
                up: l.require(&n("ffn_up_shexp.weight"), &[e, sf], WeightUse::MulMat)?,
                down: l.require(&n("ffn_down_shexp.weight"), &[sf, e], WeightUse::MulMat)?,
            })
        }
    };
    Ok(MoeWeights {
        router: l.require(&n("ffn_gate_inp.weight"), &[e, ne], WeightUse::MulMat)?,
        gate_exps: l.require(
            &n("ffn_gate_exps.weight"),
            &[e, ff, ne],
            WeightUse::MulMatId,
        )?,
        up_exps: l.require(&n("ffn_up_exps.weight"), &[e, ff, ne], WeightUse::MulMatId)?,
        down_exps: l.require(
            &n("ffn_down_exps.weight"),
            &[ff, e, ne],
            WeightUse::MulMatId,
        )?,
        n_expert_used: p.n_expert_used,
        norm_topk: p.norm_topk,
        shared,
    })
}

/// The experts' output for the normed rows `x` (`[n_embd, n]`).
pub fn build(c: &mut Context, gf: &Graph, m: &MoeWeights, x: &Tensor) -> Tensor {
    let (n_embd, n) = (x.ne()[0], x.ne()[1]);
    let k = m.n_expert_used as i64;
    let logits = c.mul_mat(&m.router, x);
    let n_expert = logits.ne()[0];
    let probs = c.soft_max(&logits);
    let selected = c.argsort_top_k(&probs, m.n_expert_used);
    let probs = c.reshape(&probs, &[1, n_expert, n]);
    let mut weights = c.get_rows(&probs, &selected);
    if m.norm_topk {
        let w = c.reshape(&weights, &[k, n]);
        let sum = c.sum_rows(&w);
        // As llama.cpp: no division by zero (the smallest normal f16).
        let sum = c.clamp(&sum, 6.103_515_6e-5, f32::INFINITY);
        let w = c.div(&w, &sum);
        weights = c.reshape(&w, &[1, k, n]);
    }
    c.build_forward_expand(gf, &weights);

    let cur = c.reshape(x, &[n_embd, 1, n]);
    let up = c.mul_mat_id(&m.up_exps, &cur, &selected);
    let gate = c.mul_mat_id(&m.gate_exps, &cur, &selected);
    let act = c.swiglu_split(&gate, &up);
    let experts = c.mul_mat_id(&m.down_exps, &act, &selected);
    let experts = c.mul(&experts, &weights);
    c.build_forward_expand(gf, &experts);

    let nb = experts.nb();
    let views: Vec<Tensor> = (0..k as usize)
        .map(|i| {
            let v = c.view(&experts, &[n_embd, n], &[nb[2]], i * nb[1]);
            c.build_forward_expand(gf, &v);
            v
        })
        .collect();
    let mut out = views[0].clone();
    for v in &views[1..] {
        out = c.add(&out, v);
        c.build_forward_expand(gf, &out);
    }
    if k == 1 {
        out = c.cont(&out);
    }
    let Some(s) = &m.shared else {
        return out;
    };
    let up = c.mul_mat(&s.up, x);
    let gate = c.mul_mat(&s.gate, x);
    let act = c.swiglu_split(&gate, &up);
    let sh = c.mul_mat(&s.down, &act);
    let g = c.mul_mat(&s.gate_inp, x);
    let g = c.sigmoid(&g);
    let sh = c.mul(&sh, &g);
    c.add(&out, &sh)
}
