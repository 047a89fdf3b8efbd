//! The drafter's step graph: context injection of newly committed positions (fc ->
//! hidden_norm -> each layer's K/V into the draft cache) and the block forward (the target
//! models' decoder layer, then the target's lm_head on the drafted slots), with fixed padded
//! shapes so that a graph is built once per shape and reused.

use super::top_k::{top_k_nodes, TopOutputs};
use super::DFlashDrafter;
use crate::model::blocks::{decoder_layer, kv_heads, write_kv, AttnSpec, LayerCache, StepInputs};
use crate::runtime::graph_cache::BuiltGraph;
use ggml::{Context, Graph, RopeParams, Tensor, Type};

/// Node budget of a drafter graph (and of its scheduler, which copies graphs into buffers of
/// this size): ~50 nodes per layer plus inputs, with ample slack.
pub(super) fn draft_graph_nodes(n_layer: usize) -> usize {
    (n_layer * 128 + 256).max(2048)
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
/// What a step graph computes (graphs are cached by shape).
pub(super) struct Shape {
    /// Context rows injected (padded); the block is present iff `block`.
    pub(super) ctx_rows: usize,
    pub(super) block: bool,
    pub(super) n_kv: usize,
    /// Block slots whose drafts are read out (the lm_head runs on these rows only).
    pub(super) n_out: usize,
    /// The context features are gathered from the target's capture buffer on the device
    /// (`Features::Device`) instead of uploaded from the host.
    pub(super) device_feats: bool,
    /// Also output each drafted slot's `top_k` candidates (for a tree verify); 0: the argmax
    /// only.
    pub(super) top_k: usize,
}

/// A built step graph and its input/output tensors.
pub(super) struct StepGraph {
    pub(super) ctx: Context,
    pub(super) graph: Graph,
    /// Host mode: the context feature rows, uploaded.
    pub(super) feats: Option<Tensor>,
    /// Device mode: which rows of the target's capture buffer are the context.
    pub(super) feat_rows: Option<Tensor>,
    pub(super) ctx_pos: Tensor,
    pub(super) ctx_rows: Tensor,
    pub(super) blk_tokens: Option<Tensor>,
    pub(super) blk_pos: Option<Tensor>,
    pub(super) blk_rows: Option<Tensor>,
    pub(super) mask: Option<Tensor>,
    pub(super) argmax: Option<Tensor>,
    /// With `Shape::top_k`: per drafted slot the candidates' ids (I32, unordered), their logits
    /// and their probabilities.
    pub(super) top: Option<TopOutputs>,
}

impl BuiltGraph for StepGraph {
    fn graph(&self) -> Graph {
        self.graph.clone()
    }
    fn host_bytes(&self) -> usize {
        self.ctx.mem_size()
    }
}

impl DFlashDrafter {
    /// The layers' attention constants: the target's RoPE style (NeoX) at the drafter's theta.
    fn attn_spec(&self) -> AttnSpec {
        let c = &self.cfg;
        AttnSpec {
            head_dim: c.head_dim,
            n_head: c.n_head,
            n_head_kv: c.n_head_kv,
            rms_eps: c.rms_eps,
            rope: RopeParams {
                n_dims: c.head_dim as i32,
                mode: 2, // NeoX
                n_ctx_orig: self.target.hp.n_ctx_train as i32,
                freq_base: c.rope_theta,
                freq_scale: 1.0,
                ext_factor: 0.0,
                attn_factor: 1.0,
                beta_fast: 32.0,
                beta_slow: 1.0,
            },
            rope_freqs: None,
            sections: None,
        }
    }

    /// Layer `il`'s draft KV cache.
    fn layer_cache(&self, il: usize) -> LayerCache<'_> {
        LayerCache {
            k: &self.k[il],
            v: &self.v[il],
            n_cells: self.n_cells,
        }
    }

    pub(super) fn build(&self, s: Shape) -> StepGraph {
        let c = &self.cfg;
        let nodes = draft_graph_nodes(c.n_layer);
        let mut g = Context::new(nodes * 2, nodes);
        g.keep(self.w.t.store.clone());
        g.keep(self.target.weights.owner());
        g.keep(self.cache_owner.clone());
        let gf = g.new_graph(nodes);
        let attn = self.attn_spec();
        let nc = s.ctx_rows as i64;
        let (feats, host_feats, feat_rows) = if s.device_feats {
            let src = self
                .capture_src
                .as_ref()
                .expect("device-mode graphs are built after use_capture_source");
            g.keep(src.owner.clone());
            let ix = g.input(Type::I32, &[nc], "draft_feat_rows");
            (g.get_rows(&src.tensor, &ix), None, Some(ix))
        } else {
            let f = g.input(Type::F32, &[self.n_feat() as i64, nc], "draft_feats");
            (f.clone(), Some(f), None)
        };
        let ctx_pos = g.input(Type::I32, &[nc], "draft_ctx_pos");
        let ctx_rows = g.input(Type::I64, &[nc], "draft_ctx_rows");
        // Context injection: fc -> hidden_norm -> per layer k_proj/k_norm/RoPE and v_proj.
        let fused = g.mul_mat(&self.w.t.fc, &feats);
        let fused = g.rms_norm(&fused, c.rms_eps);
        let fused = g.mul(&fused, &self.w.t.hidden_norm);
        for (il, l) in self.w.t.layers.iter().enumerate() {
            let (k, v) = kv_heads(&mut g, &attn, l, &fused, &ctx_pos);
            write_kv(&mut g, &gf, self.layer_cache(il), &k, &v, &ctx_rows);
        }
        let mut sg = StepGraph {
            ctx: Context::new(1, 0),
            graph: gf.clone(),
            feats: host_feats,
            feat_rows,
            ctx_pos,
            ctx_rows,
            blk_tokens: None,
            blk_pos: None,
            blk_rows: None,
            mask: None,
            argmax: None,
            top: None,
        };
        if s.block {
            self.build_block(&mut g, gf, &attn, s, &mut sg);
        }
        sg.ctx = g;
        sg
    }

    /// The block forward `[last, MASK x (B-1)]`: the decoder layers over the cached context and
    /// the block itself (non-causal mask), then the target's lm_head on the slots read out.
    fn build_block(
        &self,
        g: &mut Context,
        gf: Graph,
        attn: &AttnSpec,
        s: Shape,
        sg: &mut StepGraph,
    ) {
        let c = &self.cfg;
        let b = c.block_size as i64;
        let toks = g.input(Type::I32, &[b], "draft_blk_tokens");
        let pos = g.input(Type::I32, &[b], "draft_blk_pos");
        let rows = g.input(Type::I64, &[b], "draft_blk_rows");
        let mask = g.input(Type::F16, &[s.n_kv as i64, b, 1, 1], "draft_mask");
        // The block's own K/V go to the cells after the context; they are overwritten by the
        // real context of those positions later, and masked until then.
        let step = StepInputs {
            pos: &pos,
            kv_rows: &rows,
            mask: &mask,
            n_kv: s.n_kv,
            out_rows: None,
        };
        let mut h = g.get_rows(&self.target.weights.tok_embd, &toks);
        for (il, l) in self.w.t.layers.iter().enumerate() {
            h = decoder_layer(g, &gf, attn, l, self.layer_cache(il), &step, &h);
        }
        // Slots 1..B predict positions start+1..start+B.
        let n_out = s.n_out as i64;
        let tail = g.view(&h, &[c.n_embd as i64, n_out], &[h.nb()[1]], h.nb()[1]);
        let x = g.rms_norm(&tail, c.rms_eps);
        let x = g.mul(&x, &self.w.t.output_norm);
        let out = &self.target.weights.output;
        let head = if self.head_rows < self.target.hp.n_vocab {
            // Rows 0..head_rows: a contiguous prefix of a plain (not repacked) matrix.
            g.view(
                out,
                &[out.ne()[0], self.head_rows as i64],
                &[out.nb()[1]],
                0,
            )
        } else {
            out.clone()
        };
        let logits = g.mul_mat(&head, &x);
        let am = g.argmax(&logits);
        g.set_output(&am);
        g.build_forward_expand(&gf, &am);
        if s.top_k > 0 {
            // The candidates, their logits, and their probabilities: the log-normalizer is
            // computed on the host from the most likely one's (never underflowing) probability.
            sg.top = Some(top_k_nodes(
                g,
                &gf,
                &logits,
                self.head_rows,
                s.n_out,
                s.top_k,
            ));
        }
        sg.blk_tokens = Some(toks);
        sg.blk_pos = Some(pos);
        sg.blk_rows = Some(rows);
        sg.mask = Some(mask);
        sg.argmax = Some(am);
    }
}

/// Write the context-injection inputs: `rows` feature rows for positions n_done.. (the first of
/// `pending`, or in device mode the first of the capture buffer), padded to `cap` rows that
/// write to the trash cell.
pub(super) fn fill_ctx(
    g: &StepGraph,
    pending: &[f32],
    nf: usize,
    rows: usize,
    cap: usize,
    n_done: usize,
    n_cells: usize,
) {
    if let Some(t) = &g.feats {
        let mut feats = vec![0f32; nf * cap];
        feats[..rows * nf].copy_from_slice(&pending[..rows * nf]);
        t.write_f32(&feats);
    }
    if let Some(t) = &g.feat_rows {
        // Padded rows gather row 0; they only ever reach the trash cell.
        let ix: Vec<i32> = (0..cap)
            .map(|i| if i < rows { i as i32 } else { 0 })
            .collect();
        t.write_i32(&ix);
    }
    let pos: Vec<i32> = (0..cap)
        .map(|i| (n_done + i.min(rows.saturating_sub(1))) as i32)
        .collect();
    g.ctx_pos.write_i32(&pos);
    let trash = (n_cells - 1) as i64;
    let r: Vec<i64> = (0..cap)
        .map(|i| if i < rows { (n_done + i) as i64 } else { trash })
        .collect();
    g.ctx_rows.write_i64(&r);
}
