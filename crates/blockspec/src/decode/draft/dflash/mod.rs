//! DFlash block-diffusion drafter (z-lab DFlash 1).
//!
//! A small Qwen3-style decoder without embeddings or head of its own: it reads the TARGET's token
//! embeddings and lm_head. Context: the target's hidden states at `target_layer_ids` for every
//! committed token, concatenated -> `fc` -> `hidden_norm`; in every draft layer that fused context
//! goes through the layer's k_proj / k_norm / RoPE and v_proj and is kept in a draft KV cache (one
//! cell per position, written once per committed token). A step drafts a whole block
//! `[last token, MASK x (B-1)]` at positions `start..start+B` in one forward: the block attends
//! without a causal mask to the cached context and to itself; slot k >= 1 predicts position
//! start+k.
//!
//! One graph per step does both the context injection of the newly committed tokens and the
//! block, with fixed shapes (padded), so it is built once per KV bucket and reused.
//!
//! This module is the drafter's runtime (context bookkeeping, drafting). The rest:
//! `config` (every checkpoint spelling -> one [`DFlashConfig`]), `safetensors` (a z-lab
//! directory's tensors), [`gguf`] (the DFlash GGUF spellings: metadata reader and writer),
//! `weights` (loading), `graph` (the step graph) and `convert` (`blockspec convert-draft`).

mod config;
mod convert;
pub mod gguf;
mod graph;
mod safetensors;
mod top_k;
mod weights;

pub use config::{
    default_target_layers, is_dflash, read_config, validate, DFlashConfig, DraftFormat,
};
pub use convert::{convert_draft, ConvertOptions, ConvertReport};
pub use weights::DFlashWeights;

use super::{DraftTopK, Drafter, Features};
use crate::model::Ffn;
use crate::model::Model;
use crate::runtime::capture::CapturedRows;
use crate::runtime::engine::KV_PAD;
use crate::runtime::graph_cache::GraphCache;
use crate::runtime::profile;
use anyhow::{bail, Context as _, Result};
use ggml::{Backend, Buffer, Context, Sched, Tensor, Type};
use graph::{draft_graph_nodes, fill_ctx, Shape, StepGraph};
use std::path::Path;
use std::sync::Arc;

/// Rows of newly committed context appended per graph when catching up (after a prompt).
const APPEND_ROWS: usize = 64;

/// Owns the draft KV cache's tensors and memory (graphs keep it alive).
struct DraftCacheStore {
    _ctx: Context,
    _buffer: Buffer,
}

/// How [`DFlashDrafter::load`] sets a drafter up.
#[derive(Clone, Copy, Debug)]
pub struct DrafterOptions {
    /// Positions the draft cache holds (the target's context).
    pub n_ctx: usize,
    /// Attend to at most this many context cells before the block (0: all).
    pub window: usize,
    /// The draft KV cache's element type (f16 normally; f32 for reference checks).
    pub cache_type: Type,
    /// Quantize the drafter's float matrices (f32, f16, bf16) to this type at load
    /// (`--draft-type q8_0` / `q4_0`); None keeps them as stored.
    pub weight_type: Option<Type>,
}

impl DrafterOptions {
    /// A draft cache of `n_ctx` positions in f16, no window, weights as stored.
    pub fn new(n_ctx: usize) -> DrafterOptions {
        DrafterOptions {
            n_ctx,
            window: 0,
            cache_type: Type::F16,
            weight_type: None,
        }
    }
}

/// One session's DFlash drafter: its draft KV cache, cached step graphs and the context it has
/// not injected yet, over weights shared with other sessions.
pub struct DFlashDrafter {
    pub cfg: DFlashConfig,
    w: Arc<DFlashWeights>,
    target: Arc<Model>,
    k: Vec<Tensor>,
    v: Vec<Tensor>,
    cache_owner: Arc<DraftCacheStore>,
    /// Cells: one per position up to the target context, the block's tail, and a trash row
    /// (the last) that padded rows write to.
    n_cells: usize,
    /// Attend to at most this many context cells before the block (0: all).
    window: usize,
    graphs: GraphCache<Shape, StepGraph>,
    /// Whether the last draft ran a cold graph (see Engine::last_decode_was_cold).
    last_cold: bool,
    /// Positions whose context K/V are in the cache.
    n_done: usize,
    /// Features of positions n_done.. not yet injected, `n_feat` floats each.
    pending: Vec<f32>,
    /// Features of the positions after `pending`, still in the target's capture buffer: the
    /// last step's commit. The next draft reads them there in its own graph; anything else that
    /// happens first copies them to `pending` (see `materialize`).
    device: Option<CapturedRows>,
    /// The capture buffer that device-mode graphs were built to read.
    capture_src: Option<CapturedRows>,
    /// The head scores token ids 0..head_rows only (see `set_draft_vocab`).
    head_rows: usize,
    backend: Arc<Backend>,
}

impl DFlashDrafter {
    /// Load a drafter (directory or GGUF) for `target`, set up as `opts` says (context, window,
    /// draft cache type, optional weight quantization).
    pub fn load(
        path: &Path,
        target: Arc<Model>,
        backend: Arc<Backend>,
        opts: &DrafterOptions,
    ) -> Result<DFlashDrafter> {
        let weights = DFlashWeights::load(path, &target, &backend, opts.weight_type)?;
        DFlashDrafter::new(
            weights,
            target,
            backend,
            opts.n_ctx,
            opts.window,
            opts.cache_type,
        )
    }

    /// A drafter (its own draft cache and graphs) over weights loaded once: concurrent
    /// sessions of one server share them.
    pub fn new(
        weights: Arc<DFlashWeights>,
        target: Arc<Model>,
        backend: Arc<Backend>,
        n_ctx: usize,
        window: usize,
        cache_type: Type,
    ) -> Result<DFlashDrafter> {
        let cfg = weights.cfg.clone();
        if cache_type.row_bytes(cfg.head_dim as u64).is_none() {
            bail!(
                "draft cache type {cache_type}: head size {} is not a multiple of its block size",
                cfg.head_dim
            );
        }
        // Context, one block, the trash cell; rounded up to whole KV_PAD spans (see the target
        // engine: ggml-cuda's fast attention kernels need multiples of 256).
        let n_cells = (n_ctx + cfg.block_size + 1).div_ceil(KV_PAD) * KV_PAD;
        let ekv = (cfg.head_dim * cfg.n_head_kv) as i64;
        let mut ctx = Context::new(2 * cfg.n_layer, 0);
        let mut k = Vec::new();
        let mut v = Vec::new();
        for il in 0..cfg.n_layer {
            let kt = ctx.new_tensor(cache_type, &[ekv, n_cells as i64]);
            ctx.set_name(&kt, &format!("draft_k_l{il}"));
            let vt = ctx.new_tensor(cache_type, &[ekv, n_cells as i64]);
            ctx.set_name(&vt, &format!("draft_v_l{il}"));
            k.push(kt);
            v.push(vt);
        }
        let buffer = Buffer::alloc_ctx_tensors(&ctx, backend.default_buffer_type()).context(
            "out of memory allocating the draft KV cache (try a smaller -c or --draft-ctx)",
        )?;
        buffer.clear(0);
        let nodes = draft_graph_nodes(cfg.n_layer);
        let sched = Sched::new(backend.sched_backends(), nodes);
        // Append and block shapes, a few context-row counts, KV spans: a handful at a time.
        let graphs = GraphCache::new(sched, !backend.is_cpu(), 16, "drafter");
        let mut d = DFlashDrafter {
            cfg,
            w: weights,
            target,
            k,
            v,
            cache_owner: Arc::new(DraftCacheStore {
                _ctx: ctx,
                _buffer: buffer,
            }),
            n_cells,
            window,
            graphs,
            last_cold: false,
            n_done: 0,
            pending: Vec::new(),
            device: None,
            capture_src: None,
            head_rows: 0,
            backend,
        };
        d.head_rows = d.target.hp.n_vocab;
        // Reserve compute memory for the largest graphs once, so it is never reallocated later.
        let b = d.cfg.block_size;
        for s in [
            Shape {
                ctx_rows: APPEND_ROWS,
                block: false,
                n_kv: 0,
                n_out: 0,
                device_feats: false,
                top_k: 0,
            },
            Shape {
                ctx_rows: b,
                block: true,
                n_kv: d.n_cells,
                n_out: b - 1,
                device_feats: false,
                top_k: 0,
            },
        ] {
            let g = d.build(s);
            if !d.graphs.reserve(g.graph) {
                bail!("drafter: could not reserve compute memory");
            }
        }
        Ok(d)
    }

    pub fn block_size(&self) -> usize {
        self.cfg.block_size
    }

    /// Draft from the first `n` token ids only (`--draft-vocab`): the head multiplies by rows
    /// 0..n of the target's output matrix instead of all of them. BPE vocabularies number their
    /// tokens in merge order, so the low ids are the common ones; a rarer token is then never
    /// drafted (the target still decides every token: the output does not change), and the
    /// head, the largest matrix the drafter reads, costs n / n_vocab of what it did.
    pub fn set_draft_vocab(&mut self, n: usize) -> Result<()> {
        let nv = self.target.hp.n_vocab;
        if n == 0 || n > nv {
            bail!("--draft-vocab {n}: must be between 1 and the target's vocabulary size {nv}");
        }
        let out = &self.target.weights.output;
        if n < nv
            && out
                .buffer_type()
                .is_some_and(|b| self.backend.is_repacked_buffer_type(b))
        {
            bail!(
                "--draft-vocab {n}: the target's output matrix is stored repacked for the CPU's \
                 fast kernels, and its rows cannot be taken apart (use --verify exact, which \
                 loads the target without repacking)"
            );
        }
        if n != self.head_rows {
            self.head_rows = n;
            self.graphs.retain(|s| !s.block);
        }
        Ok(())
    }

    /// Element types of the drafter's matrices (fc, then each layer's projections), as loaded.
    pub fn matrix_types(&self) -> Vec<Type> {
        let mut out = vec![self.w.t.fc.ty()];
        for l in &self.w.t.layers {
            for t in [&l.wq, &l.wk, &l.wv, &l.wo] {
                out.push(t.ty());
            }
            if let Ffn::Dense { gate, up, down } = &l.ffn {
                out.extend([gate.ty(), up.ty(), down.ty()]);
            }
        }
        out
    }
    pub fn target_layers(&self) -> &[usize] {
        &self.cfg.target_layer_ids
    }
    fn n_feat(&self) -> usize {
        self.cfg.target_layer_ids.len() * self.cfg.n_embd
    }

    pub fn reset(&mut self) {
        self.n_done = 0;
        self.pending.clear();
        self.device = None;
    }

    /// Positions the drafter knows the context of (injected + pending).
    pub fn n_known(&self) -> usize {
        self.n_done
            + self.pending.len() / self.n_feat()
            + self.device.as_ref().map_or(0, |d| d.rows)
    }

    /// Give the target features of the next committed positions (token-major rows, host).
    pub fn push_features(&mut self, feats: &[f32]) -> Result<()> {
        debug_assert_eq!(feats.len() % self.n_feat(), 0);
        self.materialize()?;
        self.pending.extend_from_slice(feats);
        Ok(())
    }

    /// Give the target features of the next committed positions, left in the target's capture
    /// buffer (rows 0..). They must be drafted from, or [`materialize`](Self::materialize)d,
    /// before the target evaluates again.
    pub fn push_device_features(&mut self, rows: CapturedRows) -> Result<()> {
        self.materialize()?;
        if rows.tensor.ne()[0] as usize != self.n_feat() {
            bail!(
                "drafter: captured feature rows of {} values, expected {}",
                rows.tensor.ne()[0],
                self.n_feat()
            );
        }
        if rows.rows > 0 {
            self.device = Some(rows);
        }
        Ok(())
    }

    /// Copy the features still in the target's capture buffer to the host queue. Errors if the
    /// target has overwritten them (the caller broke the protocol: drafts would be wrong).
    pub fn materialize(&mut self) -> Result<()> {
        if let Some(d) = self.device.take() {
            if !d.is_current() {
                bail!(
                    "drafter: the target evaluated again before the drafter read the features of its last {} committed positions",
                    d.rows
                );
            }
            let _p = profile::scope("draft.read_capture");
            d.read_into(&mut self.pending);
        }
        Ok(())
    }

    /// Forget every position from `n` on (a new prompt sharing a prefix).
    pub fn truncate(&mut self, n: usize) {
        let host = self.pending.len() / self.n_feat();
        if n < self.n_done {
            self.n_done = n;
            self.pending.clear();
            self.device = None;
        } else if n - self.n_done <= host {
            let keep = (n - self.n_done) * self.n_feat();
            self.pending.truncate(keep);
            self.device = None;
        } else if let Some(d) = &mut self.device {
            d.rows = d.rows.min(n - self.n_done - host);
        }
    }

    /// Make the pending context injectable by one block graph: at most a block's worth of rows,
    /// all on the host or all in the target's capture buffer.
    fn prepare_context(&mut self) -> Result<()> {
        if let Some(d) = &self.device {
            if self.pending.is_empty() && d.rows <= self.cfg.block_size && d.is_current() {
                return Ok(());
            }
            // Mixed with host rows, too many, or stale (materialize reports that).
            self.materialize()?;
        }
        self.catch_up()
    }

    /// Device-mode graphs read `rows.tensor`: forget those built for another capture buffer.
    fn use_capture_source(&mut self, rows: &CapturedRows) {
        if self.capture_src.as_ref().map(|c| &c.tensor) != Some(&rows.tensor) {
            self.graphs.retain(|s| !s.device_feats);
            self.capture_src = Some(rows.clone());
        }
    }

    fn run(&mut self, s: Shape, fill: impl FnOnce(&StepGraph)) -> Result<()> {
        if !self.graphs.contains(&s) {
            let g = self.build(s);
            self.graphs.insert(s, g);
        }
        let g = self.graphs.prepare(s)?;
        {
            let _p = profile::scope("draft.inputs");
            fill(g);
        }
        let _p = profile::scope("draft.compute");
        self.last_cold = self.graphs.compute(s)?;
        Ok(())
    }

    /// `rows` pending host rows were injected.
    fn consume(&mut self, rows: usize) {
        let nf = self.n_feat();
        self.pending.drain(..rows * nf);
        self.n_done += rows;
    }

    /// Draft the B-1 tokens that follow `last`, the committed token at position `n_known()` that
    /// the target has not seen yet. Returns greedy drafts for positions n_known()+1...
    pub fn draft(&mut self, last: u32) -> Result<Vec<u32>> {
        self.draft_block(last, self.cfg.block_size)
    }

    /// Like [`draft`](Self::draft) with a block of `len` (2..=B) slots: `[last, MASK x (len-1)]`.
    /// The block's attention is not causal, so a shorter block drafts differently (the reference
    /// shortens the block near the token budget); the graph stays the same, the mask hides the
    /// slots past `len`. Returns `len - 1` drafts.
    pub fn draft_block(&mut self, last: u32, len: usize) -> Result<Vec<u32>> {
        let len = len.clamp(2, self.cfg.block_size);
        let s = self.run_block(last, len, 0)?;
        let _p = profile::scope("draft.read");
        let am = self
            .graphs
            .get(&s)
            .and_then(|g| g.argmax.clone())
            .context("drafter: block graph missing after its run")?;
        let mut out = vec![0i32; len - 1];
        am.read_i32_into(&mut out, 0);
        Ok(out.into_iter().map(|t| t as u32).collect())
    }

    /// The top-`k` candidates (`k` clamped to 1..=the drafted vocabulary) of every drafted
    /// slot of a full block after `last`, most likely first (equal logits: the smaller id
    /// first), with their log-probabilities: the input of a DDTree.
    pub fn draft_top_k(&mut self, last: u32, k: usize) -> Result<DraftTopK> {
        let b = self.cfg.block_size;
        let k = k.clamp(1, self.head_rows);
        let s = self.run_block(last, b, k)?;
        let _p = profile::scope("draft.read");
        let top = self.graphs.get(&s).and_then(|g| g.top.as_ref());
        let top = top.context("drafter: block graph missing after its run")?;
        let (ids, vals, probs) = top.read(b - 1);
        let n = ids.len();
        let mut out = DraftTopK {
            k,
            ids: Vec::with_capacity(n),
            logprobs: Vec::with_capacity(n),
        };
        for d in 0..b - 1 {
            let mut row: Vec<usize> = (d * k..(d + 1) * k).collect();
            row.sort_by(|&x, &y| vals[y].total_cmp(&vals[x]).then(ids[x].cmp(&ids[y])));
            // log p = logit - log Z, and log Z = the top logit - log of its probability.
            let top1 = row[0];
            let log_z = vals[top1] as f64 - (probs[top1] as f64).ln();
            for i in row {
                out.ids.push(ids[i] as u32);
                out.logprobs.push((vals[i] as f64 - log_z) as f32);
            }
        }
        Ok(out)
    }

    /// Run the block graph for `[last, MASK x (len-1)]` (with `top_k` candidates per slot when
    /// nonzero) and inject the pending context; returns the graph's shape to read it.
    fn run_block(&mut self, last: u32, len: usize, top_k: usize) -> Result<Shape> {
        let b = self.cfg.block_size;
        let nf = self.n_feat();
        self.prepare_context()?;
        // The context comes from the host queue or, after a verify step, straight from the
        // target's capture buffer (prepare_context left one of the two).
        let device = self.device.take();
        if let Some(d) = &device {
            self.use_capture_source(d);
        }
        let rows = match &device {
            Some(d) => d.rows,
            None => self.pending.len() / nf,
        };
        let start = self.n_done + rows;
        if start + b > self.n_cells - 1 {
            bail!("drafter: context full ({start} positions)");
        }
        let n_kv = ((start + b).div_ceil(KV_PAD) * KV_PAD).min(self.n_cells);
        // Context rows to inject with this block: one per token the last step committed. Graphs
        // come in power-of-two row counts, so a step that accepted little injects (and uploads)
        // little instead of a full block's worth of padding.
        let ctx_rows = rows.max(1).next_power_of_two().min(b);
        let s = Shape {
            ctx_rows,
            block: true,
            n_kv,
            n_out: len - 1,
            device_feats: device.is_some(),
            top_k,
        };
        let lo = if self.window > 0 {
            start.saturating_sub(self.window)
        } else {
            0
        };
        let mut block = vec![self.cfg.mask_token_id as i32; b];
        block[0] = last as i32;
        let bpos: Vec<i32> = (start..start + b).map(|p| p as i32).collect();
        let brows: Vec<i64> = (start..start + b).map(|p| p as i64).collect();
        let mut mask = vec![0xFC00u16; n_kv * b];
        for r in 0..b {
            for cell in mask[r * n_kv + lo..r * n_kv + start + len].iter_mut() {
                *cell = 0;
            }
        }
        {
            // The closure fills the graph's inputs while `run` holds `self` mutably.
            let pending = std::mem::take(&mut self.pending);
            let (n_done, n_cells) = (self.n_done, self.n_cells);
            let res = self.run(s, |g| {
                fill_ctx(g, &pending, nf, rows, ctx_rows, n_done, n_cells);
                g.blk_tokens.as_ref().expect("block").write_i32(&block);
                g.blk_pos.as_ref().expect("block").write_i32(&bpos);
                g.blk_rows.as_ref().expect("block").write_i64(&brows);
                g.mask.as_ref().expect("block").write_f16_bits(&mask);
            });
            self.pending = pending;
            res?;
        }
        if device.is_some() {
            self.n_done += rows;
        } else {
            self.consume(rows);
        }
        Ok(s)
    }

    /// Inject a long backlog of committed context (a prompt, or many plain steps) with
    /// context-only passes, leaving at most one block's worth for the next draft step.
    fn catch_up(&mut self) -> Result<()> {
        let (b, nf) = (self.cfg.block_size, self.n_feat());
        while self.pending.len() / nf > b {
            let rows = (self.pending.len() / nf - b).min(APPEND_ROWS);
            let s = Shape {
                ctx_rows: APPEND_ROWS,
                block: false,
                n_kv: 0,
                n_out: 0,
                device_feats: false,
                top_k: 0,
            };
            self.run_inject(s, rows, APPEND_ROWS)?;
            self.consume(rows);
        }
        Ok(())
    }

    fn run_inject(&mut self, s: Shape, rows: usize, cap: usize) -> Result<()> {
        let pending = std::mem::take(&mut self.pending);
        let (nf, n_done, n_cells) = (self.n_feat(), self.n_done, self.n_cells);
        let r = self.run(s, |g| fill_ctx(g, &pending, nf, rows, cap, n_done, n_cells));
        self.pending = pending;
        r
    }
}

impl Drafter for DFlashDrafter {
    fn name(&self) -> &'static str {
        "dflash"
    }
    fn max_verify_len(&self) -> usize {
        self.cfg.block_size
    }
    fn target_layers(&self) -> &[usize] {
        &self.cfg.target_layer_ids
    }
    fn cost(&self) -> super::DraftCost {
        super::DraftCost::PerStep
    }
    fn compute_bytes(&self) -> usize {
        self.graphs.buffer_bytes()
    }
    fn last_draft_was_cold(&self) -> bool {
        self.last_cold
    }
    fn begin(&mut self, _prompt: &[u32], features: &[f32]) -> Result<()> {
        self.reset();
        self.push_features(features)
    }
    fn resumes_prefix(&self) -> bool {
        true
    }
    fn begin_from(&mut self, prompt: &[u32], reuse: usize, features: &[f32]) -> Result<()> {
        // The positions it knows are the previous generation's (its prompt and every commit),
        // the same ones the target's cache holds: keep the shared prefix's draft KV.
        if reuse > self.n_known() {
            bail!(
                "cached prompt prefix of {reuse} positions, but the drafter knows {}",
                self.n_known()
            );
        }
        if reuse == 0 {
            return self.begin(prompt, features);
        }
        self.truncate(reuse);
        self.push_features(features)
    }
    fn sync(&mut self) -> Result<()> {
        self.prepare_context()
    }
    fn draft(&mut self, last: u32, len: usize) -> Result<Vec<u32>> {
        if len < 2 {
            return Ok(Vec::new());
        }
        self.draft_block(last, len)
    }
    fn draft_top_k(&mut self, last: u32, k: usize) -> Result<Option<DraftTopK>> {
        DFlashDrafter::draft_top_k(self, last, k).map(Some)
    }
    fn reads_device_features(&self) -> bool {
        true
    }
    fn release_capture(&mut self) -> Result<()> {
        self.materialize()
    }
    fn commit(&mut self, _tokens: &[u32], features: Features) -> Result<()> {
        match features {
            Features::Host(f) => self.push_features(f),
            Features::Device(rows) => self.push_device_features(rows),
        }
    }
}
