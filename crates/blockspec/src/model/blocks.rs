//! The dense decoder forward graph shared by qwen2, qwen3 and llama (they differ in Q/K/V bias,
//! Q/K norm and RoPE style: see [`super::Variant`]). Node for node it follows llama.cpp's graph,
//! so that on the same backend both compute the same numbers.
//!
//! Everything that changes from one step to the next is an INPUT tensor (token ids, positions,
//! KV write rows, the attention mask, output row ids), so a graph built for a shape is reused for
//! every step of that shape.

use super::{Hparams, Weights};
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
}

/// A built graph and its input/output tensors.
pub struct ForwardGraph {
    pub ctx: Context,
    pub graph: Graph,
    pub shape: GraphShape,
    /// I32 [n_tokens]
    pub tokens: Tensor,
    /// I32 [n_tokens]
    pub pos: Tensor,
    /// I64 [n_tokens]: KV cache cell each token's K/V row is written to.
    pub kv_rows: Tensor,
    /// F16 [n_kv, n_tokens]: 0 where a token may attend to a cell, -inf where not.
    pub mask: Tensor,
    /// I32 [n_outputs] when only some rows produce logits.
    pub out_ids: Option<Tensor>,
    /// F32 [n_vocab, n_outputs]
    pub logits: Tensor,
    /// I32 [n_outputs]: each output row's most likely token, so a greedy step on a GPU reads
    /// back a few ids instead of every logit.
    pub argmax: Tensor,
}

/// Graph node budget: ~30 nodes per layer plus slack.
fn graph_size(hp: &Hparams) -> usize {
    (hp.n_layer * 40 + 64).max(2048)
}

pub fn build(
    hp: &Hparams,
    w: &Weights,
    kv: &KvCache,
    capture: Option<&CaptureBuffer>,
    shape: GraphShape,
) -> ForwardGraph {
    let nodes = graph_size(hp);
    let mut c = Context::new(nodes * 2, nodes);
    c.keep(w.owner());
    c.keep(kv.owner());
    if let (Some(cap), true) = (capture, shape.capture) {
        c.keep(cap.owner());
    }
    let gf = c.new_graph(nodes);
    let nt = shape.n_tokens as i64;
    let (hd, nh, nhkv) = (hp.head_dim as i64, hp.n_head as i64, hp.n_head_kv as i64);
    let n_embd_kv = hp.n_embd_kv() as i64;

    let tokens = c.input(Type::I32, &[nt], "inp_tokens");
    let pos = c.input(Type::I32, &[nt], "inp_pos");
    let kv_rows = c.input(Type::I64, &[nt], "inp_kv_rows");
    let mask = c.input(Type::F16, &[shape.n_kv as i64, nt, 1, 1], "inp_kq_mask");
    let out_ids = (shape.n_outputs < shape.n_tokens)
        .then(|| c.input(Type::I32, &[shape.n_outputs as i64], "inp_out_ids"));

    let rope = RopeParams {
        n_dims: hp.rope.n_rot as i32,
        mode: if hp.variant.rope_neox { 2 } else { 0 },
        n_ctx_orig: hp.rope.n_ctx_orig as i32,
        freq_base: hp.rope.freq_base,
        freq_scale: hp.rope.freq_scale,
        ext_factor: hp.rope.ext_factor,
        attn_factor: hp.rope.attn_factor,
        beta_fast: hp.rope.beta_fast,
        beta_slow: hp.rope.beta_slow,
    };
    let kq_scale = 1.0 / (hp.head_dim as f32).sqrt();

    let mut inp_l = c.get_rows(w.tok_embd, tokens);
    for (il, l) in w.layers.iter().enumerate() {
        let mut inp_sa = inp_l;
        let cur = c.rms_norm(inp_l, hp.rms_eps);
        let cur = c.mul(cur, l.attn_norm);

        let mut q = c.mul_mat(l.wq, cur);
        if let Some(b) = l.bq {
            q = c.add(q, b);
        }
        let mut k = c.mul_mat(l.wk, cur);
        if let Some(b) = l.bk {
            k = c.add(k, b);
        }
        let mut v = c.mul_mat(l.wv, cur);
        if let Some(b) = l.bv {
            v = c.add(v, b);
        }
        let mut q = c.reshape(q, &[hd, nh, nt]);
        let mut k = c.reshape(k, &[hd, nhkv, nt]);
        let v = c.reshape(v, &[hd, nhkv, nt]);
        if let Some(n) = l.q_norm {
            q = c.rms_norm(q, hp.rms_eps);
            q = c.mul(q, n);
        }
        q = c.rope_ext(q, pos, w.rope_freqs, &rope);
        if let Some(n) = l.k_norm {
            k = c.rms_norm(k, hp.rms_eps);
            k = c.mul(k, n);
        }
        k = c.rope_ext(k, pos, w.rope_freqs, &rope);

        // Same node order as llama.cpp: q, v, k, then the cache writes.
        c.build_forward_expand(gf, q);
        c.build_forward_expand(gf, v);
        c.build_forward_expand(gf, k);
        let k2 = c.view(k, &[n_embd_kv, nt], &[k.nb()[2]], 0);
        let st = c.set_rows(kv.k[il], k2, kv_rows);
        c.build_forward_expand(gf, st);
        let v2 = c.view(v, &[n_embd_kv, nt], &[v.nb()[2]], 0);
        let st = c.set_rows(kv.v[il], v2, kv_rows);
        c.build_forward_expand(gf, st);

        // The first n_kv cells of one layer's K or V cache, as [head_dim, n_kv, n_head_kv].
        let cache_heads = |c: &mut Context, cache: Tensor, ty: Type| {
            let row = cache.nb()[1];
            let head = ty
                .row_bytes(hp.head_dim as u64)
                .expect("checked at cache creation") as usize;
            let heads = c.view(
                cache,
                &[hd, nhkv, shape.n_kv as i64, 1],
                &[head, row, row * kv.n_ctx],
                0,
            );
            c.permute(heads, [0, 2, 1, 3])
        };
        let kp = cache_heads(&mut c, kv.k[il], kv.type_k);
        let vp = cache_heads(&mut c, kv.v[il], kv.type_v);
        let q4 = c.view(
            q,
            &[hd, nh, nt, 1],
            &[q.nb()[1], q.nb()[2], q.nb()[2] * nt as usize],
            0,
        );
        let qp = c.permute(q4, [0, 2, 1, 3]);
        let att = c.flash_attn_ext(qp, kp, vp, mask, kq_scale);
        let ne = att.ne();
        let att = c.reshape(att, &[ne[0] * ne[1], ne[2] * ne[3]]);
        let mut cur = c.mul_mat(l.wo, att);

        let last = il + 1 == hp.n_layer;
        if let (true, Some(ids)) = (last, out_ids) {
            cur = c.get_rows(cur, ids);
            inp_sa = c.get_rows(inp_sa, ids);
        }
        let ffn_inp = c.add(cur, inp_sa);
        let cur = c.rms_norm(ffn_inp, hp.rms_eps);
        let cur = c.mul(cur, l.ffn_norm);
        let up = c.mul_mat(l.ffn_up, cur);
        let gate = c.mul_mat(l.ffn_gate, cur);
        let act = c.swiglu_split(gate, up);
        let down = c.mul_mat(l.ffn_down, act);
        let out = c.add(down, ffn_inp);

        if let (Some(cap), true) = (capture, shape.capture) {
            if let Some(slot) = cap.slot_of(il) {
                // The last layer only has the output rows when out_ids selected some.
                let rows = out.ne()[1];
                let row_bytes = cap.tensor.nb()[1];
                let dst = c.view(
                    cap.tensor,
                    &[hp.n_embd as i64, rows],
                    &[row_bytes],
                    slot * hp.n_embd * 4,
                );
                let cp = c.cpy(out, dst);
                c.build_forward_expand(gf, cp);
            }
        }
        inp_l = out;
    }
    let cur = c.rms_norm(inp_l, hp.rms_eps);
    let cur = c.mul(cur, w.output_norm);
    let logits = c.mul_mat(w.output, cur);
    c.set_name(logits, "result_output");
    c.set_output(logits);
    c.build_forward_expand(gf, logits);
    let argmax = c.argmax(logits);
    c.set_output(argmax);
    c.build_forward_expand(gf, argmax);

    ForwardGraph {
        ctx: c,
        graph: gf,
        shape,
        tokens,
        pos,
        kv_rows,
        mask,
        out_ids,
        logits,
        argmax,
    }
}
