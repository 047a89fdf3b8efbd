//! The Gated DeltaNet layer of Qwen3.5 / Qwen3.6 / Qwen3-Next (llama.cpp's
//! `build_layer_attn_linear`): q, k, v through a causal depthwise convolution, then the gated
//! delta rule per value head, a gated RMSNorm and the output projection.
//!
//! The convolution's state is kept as the last `d_conv - 1` INPUT columns `[channels, d_conv-1]`
//! and the batch's inputs are appended to it column-wise, so the state after any token of the
//! batch is one contiguous run of that tensor: committing a verify's prefix is one copy.

use super::tree_levels::TreeLevels;
use super::weights::Loader;
use super::SsmParams;
use crate::runtime::recurrent_state::{KeptStates, KeptTreeStates};
use anyhow::Result;
use ggml::{Context, Graph, Tensor, WeightUse};

/// How value heads share key heads when there are fewer key heads (r = n_v / n_k).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeySharing {
    /// Value head j reads key head j mod n_k (Qwen3.5/3.6 GGUFs, which reorder V heads so).
    Tiled,
    /// Value head j reads key head j / r (Qwen3-Next GGUFs keep the checkpoint's order).
    Grouped,
}

/// How the beta and alpha projections are stored.
#[derive(Clone, Debug)]
pub enum BetaAlpha<T = Tensor> {
    /// `ssm_beta` and `ssm_alpha`, `[n_embd, n_v_heads]` each.
    Split { beta: T, alpha: T },
    /// Qwen3-Next's `ssm_ba` `[n_embd, 2 n_v_heads]`: per key head, r betas then r alphas.
    Fused(T),
}

/// One Gated DeltaNet layer's tensors.
#[derive(Clone, Debug)]
pub struct DeltaNetWeights<T = Tensor> {
    /// `[n_embd, conv_channels]`: q, k, v before the convolution.
    pub qkv: T,
    /// `[n_embd, d_inner]`: the output gate z (`attn_gate`).
    pub z: T,
    pub beta_alpha: BetaAlpha<T>,
    /// `[d_conv, conv_channels]`.
    pub conv: T,
    /// `[n_v_heads]` each: the time-step bias and -exp(A_log).
    pub dt_bias: T,
    pub a: T,
    /// `[head_dim]`: the gated norm's weight (plain, not 1 + w).
    pub norm: T,
    /// `[d_inner, n_embd]`.
    pub out: T,
}

impl<T> DeltaNetWeights<T> {
    pub(crate) fn map<U>(self, mut f: impl FnMut(T) -> U) -> DeltaNetWeights<U> {
        DeltaNetWeights {
            qkv: f(self.qkv),
            z: f(self.z),
            beta_alpha: match self.beta_alpha {
                BetaAlpha::Split { beta, alpha } => BetaAlpha::Split {
                    beta: f(beta),
                    alpha: f(alpha),
                },
                BetaAlpha::Fused(t) => BetaAlpha::Fused(f(t)),
            },
            conv: f(self.conv),
            dt_bias: f(self.dt_bias),
            a: f(self.a),
            norm: f(self.norm),
            out: f(self.out),
        }
    }
}

/// Declare layer `il`'s Gated DeltaNet tensors (llama.cpp names); `fused_ba` for Qwen3-Next.
pub fn declare(
    l: &mut Loader,
    n_embd: usize,
    s: &SsmParams,
    il: usize,
    fused_ba: bool,
) -> Result<DeltaNetWeights<usize>> {
    let n = |x: &str| format!("blk.{il}.{x}");
    let (e, nv, di, ch) = (n_embd, s.n_v_heads, s.d_inner(), s.conv_channels());
    let mm = WeightUse::MulMat;
    let beta_alpha = if fused_ba {
        BetaAlpha::Fused(l.require(&n("ssm_ba.weight"), &[e, 2 * nv], mm)?)
    } else {
        BetaAlpha::Split {
            beta: l.require(&n("ssm_beta.weight"), &[e, nv], mm)?,
            alpha: l.require(&n("ssm_alpha.weight"), &[e, nv], mm)?,
        }
    };
    Ok(DeltaNetWeights {
        qkv: l.require(&n("attn_qkv.weight"), &[e, ch], mm)?,
        z: l.require(&n("attn_gate.weight"), &[e, di], mm)?,
        beta_alpha,
        conv: l.require(&n("ssm_conv1d.weight"), &[s.d_conv, ch], WeightUse::Other)?,
        dt_bias: l.require(&n("ssm_dt.bias"), &[nv], WeightUse::Other)?,
        a: l.require(&n("ssm_a"), &[nv], WeightUse::Other)?,
        norm: l.require(&n("ssm_norm.weight"), &[s.head_dim], WeightUse::Other)?,
        out: l.require(&n("ssm_out.weight"), &[di, e], mm)?,
    })
}

/// What every Gated DeltaNet layer of a model shares.
#[derive(Clone, Copy, Debug)]
pub struct DeltaNetSpec {
    pub ssm: SsmParams,
    pub sharing: KeySharing,
    /// The RMS norms' epsilon (also the L2 norms').
    pub eps: f32,
}

/// The layer's state tensors and what the graph does with them.
pub struct StateIo<'a> {
    pub layer: usize,
    pub conv: &'a Tensor,
    pub delta: &'a Tensor,
    /// Keep the state after every token (a verify) instead of writing the final one.
    pub keep: bool,
    /// The rows are a draft tree (level widths and the graph's index input): every row steps
    /// from its parent's state, and every row's state is kept; nothing is written.
    pub tree: Option<(TreeLevels, &'a Tensor)>,
}

/// What a layer's graph leaves to commit from.
pub enum Kept {
    /// The state after the last token was written.
    Nothing,
    Chain(KeptStates),
    Tree(KeptTreeStates),
}

/// L2-normalise each row of `x` as llama.cpp does (RMS norm, then 1/sqrt(n)).
fn l2_norm(c: &mut Context, x: &Tensor, eps: f32) -> Tensor {
    let n = x.ne()[0] as f32;
    let y = c.rms_norm(x, eps / n);
    c.scale(&y, 1.0 / n.sqrt())
}

/// The layer on the normed rows `x` (`[n_embd, n]`): returns its output `[n_embd, n]` and, when
/// `io.keep` or `io.tree`, the per-token states to commit from.
pub fn build(
    c: &mut Context,
    gf: &Graph,
    spec: &DeltaNetSpec,
    w: &DeltaNetWeights,
    io: StateIo,
    x: &Tensor,
) -> (Tensor, Kept) {
    let (s, eps) = (&spec.ssm, spec.eps);
    let n = x.ne()[1];
    let (hd, nk, nv) = (s.head_dim as i64, s.n_k_heads as i64, s.n_v_heads as i64);
    let ch = s.conv_channels() as i64;
    let f = 4usize; // f32 bytes

    let qkv = c.mul_mat(&w.qkv, x);
    let z = c.mul_mat(&w.z, x);
    let (beta, alpha) = match &w.beta_alpha {
        BetaAlpha::Split { beta, alpha } => {
            let b = c.mul_mat(beta, x);
            let b = c.reshape(&b, &[1, nv, n, 1]);
            let b = c.sigmoid(&b);
            let a = c.mul_mat(alpha, x);
            (b, c.reshape(&a, &[nv, n, 1]))
        }
        BetaAlpha::Fused(ba) => {
            let r = nv / nk;
            let m = c.mul_mat(ba, x);
            let m = c.reshape(&m, &[2 * r, nk, n, 1]);
            let nb = m.nb();
            let b = c.view(&m, &[r, nk, n, 1], &[nb[1], nb[2], nb[3]], 0);
            let a = c.view(&m, &[r, nk, n, 1], &[nb[1], nb[2], nb[3]], r as usize * f);
            let b = c.cont(&b);
            let b = c.sigmoid(&b);
            let a = c.cont(&a);
            (c.reshape(&b, &[1, nv, n, 1]), c.reshape(&a, &[nv, n, 1]))
        }
    };
    let a = c.add(&alpha, &w.dt_bias);
    let a = c.softplus(&a);
    let gate = c.mul(&a, &w.a);
    let gate = c.reshape(&gate, &[1, nv, n, 1]);

    // The convolution over [state columns | new columns], then SiLU. A tree gathers each
    // row's window (its ancestors' columns) and convolves the rows as one-token sequences.
    let rows = c.concat(io.conv, &qkv, 1);
    let dc = s.d_conv as i64;
    let mut windows = None;
    let conv = match &io.tree {
        None => {
            let sx = c.transpose(&rows);
            let sx = c.cont(&sx);
            let sx = c.reshape(&sx, &[dc - 1 + n, ch, 1]);
            c.ssm_conv(&sx, &w.conv)
        }
        Some((_, index)) => {
            let cols = c.view(index, &[dc * n], &[], 0);
            let win = c.get_rows(&rows, &cols);
            let sx = c.reshape(&win, &[ch, dc, n]);
            let sx = c.permute(&sx, [1, 0, 2, 3]);
            let sx = c.cont(&sx);
            windows = Some(win);
            let conv = c.ssm_conv(&sx, &w.conv);
            c.reshape(&conv, &[ch, n])
        }
    };
    let conv = c.silu(&conv);

    let row = ch as usize * f;
    let head = hd as usize * f;
    let q = c.view(&conv, &[hd, nk, n, 1], &[head, row, row * n as usize], 0);
    let k = c.view(
        &conv,
        &[hd, nk, n, 1],
        &[head, row, row * n as usize],
        (hd * nk) as usize * f,
    );
    let v = c.view(
        &conv,
        &[hd, nv, n, 1],
        &[head, row, row * n as usize],
        2 * (hd * nk) as usize * f,
    );
    let mut q = l2_norm(c, &q, eps);
    let mut k = l2_norm(c, &k, eps);
    if spec.sharing == KeySharing::Grouped && nk != nv {
        // Repeat each key head r times in place: [h0, h0, h1, h1, ...].
        let r = nv / nk;
        for t in [&mut q, &mut k] {
            let x = c.reshape(t, &[hd, 1, nk, n]);
            let x = c.repeat_4d(&x, [hd, r, nk, n]);
            *t = c.reshape(&x, &[hd, nv, n, 1]);
        }
    }

    let state = c.reshape(io.delta, &[hd, hd, nv, 1]);
    if let (Some((levels, index)), Some(windows)) = (&io.tree, windows) {
        let (out, levels) = tree_levels(c, s, levels, index, [&q, &k, &v], &gate, &beta, &state);
        c.set_output(&windows);
        c.build_forward_expand(gf, &windows);
        for r in &levels {
            c.set_output(r);
            c.build_forward_expand(gf, r);
        }
        let kept = Kept::Tree(KeptTreeStates {
            layer: io.layer,
            windows,
            levels,
        });
        return (gated_out(c, w, spec, &z, &out), kept);
    }
    let snapshots = if io.keep { n as usize } else { 1 };
    let result = c.gated_delta_net([&q, &k, &v], &gate, &beta, &state, snapshots);
    let out_bytes = (hd * nv * n) as usize * f;
    let out = c.view(
        &result,
        &[hd, nv, n, 1],
        &[head, (hd * nv) as usize * f, out_bytes],
        0,
    );

    let kept = if io.keep {
        c.set_output(&result);
        c.set_output(&rows);
        c.build_forward_expand(gf, &result);
        c.build_forward_expand(gf, &rows);
        Kept::Chain(KeptStates {
            layer: io.layer,
            conv_rows: rows.clone(),
            delta_out: result.clone(),
        })
    } else {
        // Write the state after the last token: the last d_conv - 1 columns, the final matrix.
        let conv_len = s.conv_state_len() as i64;
        let last = c.view(&rows, &[conv_len], &[], n as usize * row);
        let dst = flat(c, io.conv);
        let st = c.cpy(&last, &dst);
        c.build_forward_expand(gf, &st);
        let d = s.delta_state_len() as i64;
        let fin = c.view(&result, &[d], &[], out_bytes);
        let dst = flat(c, io.delta);
        let st = c.cpy(&fin, &dst);
        c.build_forward_expand(gf, &st);
        Kept::Nothing
    };
    (gated_out(c, w, spec, &z, &out), kept)
}

/// The delta rule's output `[hd, nv, n]` through the gated norm and the output projection.
fn gated_out(
    c: &mut Context,
    w: &DeltaNetWeights,
    spec: &DeltaNetSpec,
    z: &Tensor,
    out: &Tensor,
) -> Tensor {
    let s = &spec.ssm;
    let (hd, nv) = (s.head_dim as i64, s.n_v_heads as i64);
    let n = out.ne()[2];
    let z = c.reshape(z, &[hd, nv, n, 1]);
    let y = c.rms_norm(out, spec.eps);
    let y = c.mul(&y, &w.norm);
    let zs = c.silu(&z);
    let y = c.mul(&y, &zs);
    let y = c.reshape(&y, &[hd * nv, n]);
    c.mul_mat(&w.out, &y)
}

/// The delta rule over a tree, one level at a time: level `l`'s rows are one-token sequences
/// started from their parents' states in level `l - 1`'s result (the root's from `state`).
/// Returns the output rows `[hd, nv, n]` in batch order and each level's result (outputs,
/// then one state per row).
#[allow(clippy::too_many_arguments)]
fn tree_levels(
    c: &mut Context,
    s: &SsmParams,
    levels: &TreeLevels,
    index: &Tensor,
    [q, k, v]: [&Tensor; 3],
    gate: &Tensor,
    beta: &Tensor,
    state: &Tensor,
) -> (Tensor, Vec<Tensor>) {
    let f = 4usize;
    let dc = s.d_conv;
    let (hd, nv) = (s.head_dim as i64, s.n_v_heads as i64);
    let n = levels.n_rows() as i64;
    let nq = q.ne()[1];
    // Rows of one token each, to gather level by level.
    let q2 = c.reshape(q, &[hd * nq, n]);
    let k2 = c.reshape(k, &[hd * nq, n]);
    let v2 = c.cont(v);
    let v2 = c.reshape(&v2, &[hd * nv, n]);
    let g2 = c.reshape(gate, &[nv, n]);
    let b2 = c.reshape(beta, &[nv, n]);
    let state_len = hd * hd * nv;
    let mut results: Vec<Tensor> = Vec::with_capacity(levels.n_levels());
    let mut outs: Option<Tensor> = None;
    for (l, w) in levels.widths().enumerate() {
        let wi = w as i64;
        let ids = c.view(index, &[wi], &[], levels.rows_at(l, dc) * f);
        let ql = c.get_rows(&q2, &ids);
        let ql = c.reshape(&ql, &[hd, nq, 1, wi]);
        let kl = c.get_rows(&k2, &ids);
        let kl = c.reshape(&kl, &[hd, nq, 1, wi]);
        let vl = c.get_rows(&v2, &ids);
        let vl = c.reshape(&vl, &[hd, nv, 1, wi]);
        let gl = c.get_rows(&g2, &ids);
        let gl = c.reshape(&gl, &[1, nv, 1, wi]);
        let bl = c.get_rows(&b2, &ids);
        let bl = c.reshape(&bl, &[1, nv, 1, wi]);
        let start = match results.last() {
            None => state.clone(),
            Some(prev) => {
                let pw = prev.ne()[1] / (1 + hd);
                let states = c.view(
                    prev,
                    &[state_len, pw],
                    &[state_len as usize * f],
                    (hd * nv * pw) as usize * f,
                );
                let pid = c.view(index, &[wi], &[], levels.parents_at(l, dc) * f);
                let st = c.get_rows(&states, &pid);
                c.reshape(&st, &[hd, hd, nv, wi])
            }
        };
        let r = c.gated_delta_net([&ql, &kl, &vl], &gl, &bl, &start, 1);
        let o = c.view(&r, &[hd * nv, wi], &[(hd * nv) as usize * f], 0);
        outs = Some(match outs {
            None => c.cont(&o),
            Some(a) => c.concat(&a, &o, 1),
        });
        results.push(r);
    }
    let outs = outs.expect("a tree has a root");
    let back = c.view(index, &[n], &[], levels.unpermute_at(dc) * f);
    let out = c.get_rows(&outs, &back);
    (c.reshape(&out, &[hd, nv, n, 1]), results)
}

/// A state tensor as one flat row (a view), the destination of a state write.
fn flat(c: &mut Context, t: &Tensor) -> Tensor {
    c.view(t, &[t.nelements()], &[], 0)
}
