//! The evaluation engine of one sequence: KV cache, graph reuse, batched evaluation.

use crate::model::tree_levels::LevelSlot;
use crate::model::{ForwardGraph, GraphShape, Model};
use crate::runtime::capture::{read_f32_staged, CaptureBuffer, CapturedRows};
use crate::runtime::graph_cache::{BuiltGraph, GraphCache};
use crate::runtime::kv_cache::KvCache;
use crate::runtime::profile;
use crate::runtime::recurrent_state::{KeptStates, KeptTreeStates, RecurrentState};
use anyhow::{bail, Result};
use ggml::{Backend, Sched, Type};
use std::sync::Arc;

pub mod tree;

/// KV cells are attended in multiples of this (as llama.cpp pads n_kv), so a graph serves 256
/// positions before the next shape is needed.
pub const KV_PAD: usize = 256;
/// At most this many built graphs are kept (prompt lengths vary; decode shapes repeat).
const MAX_CACHED_GRAPHS: usize = 24;
/// A hybrid model keeps its recurrent state after every token of verify batches up to this
/// long (all rows output), so any prefix of them commits without another forward. Longer
/// batches write only their final state.
pub const MAX_KEPT_TOKENS: usize = 32;
/// Recurrent-state checkpoints kept per engine, in host memory (see
/// [`Engine::save_checkpoint`]; llama-server keeps 8 too).
const MAX_CHECKPOINTS: usize = 8;

#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Context length (KV cells).
    pub n_ctx: usize,
    /// Largest batch evaluated in one graph; longer inputs are split.
    pub n_ubatch: usize,
    pub type_k: Type,
    pub type_v: Type,
    /// Target layers whose outputs are captured for every token (empty: none).
    pub capture_layers: Vec<usize>,
}

/// Which rows of a batch produce logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outputs {
    /// Only the last token (prompt processing, plain decoding).
    Last,
    /// Every token (verifying a draft).
    All,
}

/// Logits of some rows: `n_rows x n_vocab`, row-major.
#[derive(Clone, Debug)]
pub struct Logits {
    pub data: Vec<f32>,
    pub n_vocab: usize,
}

impl Logits {
    pub fn n_rows(&self) -> usize {
        self.data.len() / self.n_vocab
    }
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.n_vocab..(i + 1) * self.n_vocab]
    }
    pub fn last(&self) -> &[f32] {
        self.row(self.n_rows() - 1)
    }
}

pub struct Engine {
    pub model: Arc<Model>,
    backend: Arc<Backend>,
    graphs: GraphCache<GraphShape, ForwardGraph>,
    kv: KvCache,
    capture: Option<CaptureBuffer>,
    /// Whether the last `decode` ran a graph among its first evaluations (`COLD_RUNS` on a GPU).
    last_cold: bool,
    n_past: usize,
    cfg: EngineConfig,
    /// Captured hidden states of the last `decode` call read back so far, token-major (see
    /// CaptureBuffer). The last chunk's rows stay on the device until asked for: a verify step
    /// only commits the rows of its accepted tokens.
    captured: Vec<f32>,
    /// Page-locked host memory that logits and features are read through (GPU backends).
    staging: Option<ggml::PinnedHost>,
    /// Rows of the last chunk in the capture buffer, and how many of them are in `captured`.
    chunk_rows: usize,
    chunk_read: usize,
    /// Largest batch measured to compute every row exactly as a one-token step (see
    /// `largest_exact_batch`), and the bound it was measured up to.
    exact_batch: Option<(usize, usize)>,
    /// A hybrid model's recurrent state (its attention layers use `kv`).
    state: Option<RecurrentState>,
    /// The last decode kept its per-token recurrent states: its start position and length,
    /// and where the states are. Settled (a prefix committed) before anything else runs.
    pending: Option<PendingStates>,
    pending_tree: Option<PendingTree>,
    /// Target graph evaluations so far.
    forwards: u64,
    /// Saved recurrent states, by position (oldest first), to go back to without recomputing.
    checkpoints: Vec<Checkpoint>,
    /// Prompts are evaluated in chunks that start at multiples of this (see
    /// [`align_prompts`](Self::align_prompts)); `None`: in chunks of `n_ubatch` from anywhere.
    prompt_align: Option<usize>,
    /// Positions `0..aligned_prefix` were evaluated by [`prefill`](Self::prefill) in whole
    /// aligned chunks only: what a fresh evaluation of any prompt beginning with these tokens
    /// computes bit for bit.
    aligned_prefix: usize,
}

/// The recurrent state after the first `pos` positions of the current sequence.
struct Checkpoint {
    pos: usize,
    state: RecurrentState,
    /// Saved at the end of a whole aligned chunk within `aligned_prefix`: a state a fresh
    /// prompt evaluation computes too (see [`Engine::keep_prompt_prefix`]).
    aligned: bool,
}

/// A verify batch whose recurrent state is not committed yet.
struct PendingStates {
    start: usize,
    n: usize,
    kept: Vec<KeptStates>,
}

/// The states a tree verify of a hybrid model kept, until
/// [`commit_tree_path`](Engine::commit_tree_path) takes one node's (or anything else drops
/// them: the state is then still the one before the tree).
struct PendingTree {
    start: usize,
    /// Each row's place among the tree's depth levels.
    slots: Vec<LevelSlot>,
    kept: Vec<KeptTreeStates>,
}

impl Engine {
    pub fn new(model: Arc<Model>, backend: Arc<Backend>, cfg: EngineConfig) -> Result<Engine> {
        let hp = &model.hp;
        if cfg.n_ctx == 0 || cfg.n_ubatch == 0 {
            bail!("context size and batch size must be positive");
        }
        for &l in &cfg.capture_layers {
            if l >= hp.n_layer {
                bail!(
                    "capture layer {l} out of range: the model has {} layers",
                    hp.n_layer
                );
            }
        }
        let kv = KvCache::new(
            &backend,
            &hp.attention_layers(),
            hp.head_dim,
            hp.n_head_kv,
            // Whole multiples of KV_PAD cells, so every attended span is one too: ggml-cuda's
            // fast flash-attention kernels need the KV length to be a multiple of 256 and fall
            // back to a much slower one otherwise (5x slower decode at 32K context).
            cfg.n_ctx.div_ceil(KV_PAD) * KV_PAD,
            cfg.type_k,
            cfg.type_v,
        )?;
        let capture = if cfg.capture_layers.is_empty() {
            None
        } else {
            Some(CaptureBuffer::new(
                &backend,
                cfg.capture_layers.clone(),
                hp.n_embd,
                cfg.n_ubatch.min(cfg.n_ctx),
            )?)
        };
        let state = match hp.ssm {
            Some(ssm) if model.is_hybrid() => Some(RecurrentState::new(
                &backend,
                ssm,
                hp.n_layer,
                &hp.recurrent_layers(),
            )?),
            _ => None,
        };
        // Room for a 16-token verify's logits (the largest read in a speculative step).
        let staging = backend.pinned_host_memory(16 * hp.n_vocab * 4);
        // The scheduler's hash set must hold every node and leaf of the largest graph.
        // The largest graph: a tree of the most levels on a hybrid model.
        let graph_nodes =
            2 * crate::model::blocks::graph_size(hp, crate::model::tree_levels::MAX_TREE_LEVELS);
        let sched = Sched::new(backend.sched_backends(), graph_nodes);
        let graphs = GraphCache::new(sched, !backend.is_cpu(), MAX_CACHED_GRAPHS, "engine");
        let mut e = Engine {
            model,
            backend,
            graphs,
            kv,
            capture,
            last_cold: false,
            n_past: 0,
            cfg,
            captured: Vec::new(),
            staging,
            chunk_rows: 0,
            chunk_read: 0,
            exact_batch: None,
            state,
            pending: None,
            pending_tree: None,
            forwards: 0,
            checkpoints: Vec::new(),
            prompt_align: None,
            aligned_prefix: 0,
        };
        // Reserve compute memory once for the largest shapes, so no step allocates later: the
        // largest batch, and for a hybrid model the largest verify keeping every state.
        let n = e.cfg.n_ubatch.min(e.cfg.n_ctx);
        let mut worst = vec![(n, false)];
        if e.state.is_some() {
            worst.push((n.min(MAX_KEPT_TOKENS), true));
        }
        for (n, keep_states) in worst {
            let shape = GraphShape {
                n_tokens: n,
                n_kv: e.kv.n_ctx,
                n_outputs: n,
                capture: e.capture.is_some(),
                keep_states,
                tree: None,
            };
            let g = e
                .model
                .build_graph(&e.kv, e.state.as_ref(), e.capture.as_ref(), shape);
            if !e.graphs.reserve(g.graph) {
                bail!(
                    "could not reserve compute memory for a batch of {n} over {} cells",
                    e.cfg.n_ctx
                );
            }
        }
        Ok(e)
    }

    /// Whether the model keeps a recurrent state (which cannot be cut back like KV cells).
    pub fn is_hybrid(&self) -> bool {
        self.state.is_some()
    }

    /// Target graph evaluations since the engine was made (a speculative step costs one).
    pub fn forwards(&self) -> u64 {
        self.forwards
    }

    /// Bytes of the recurrent state (0 for a model without recurrent layers).
    pub fn recurrent_bytes(&self) -> usize {
        self.state.as_ref().map_or(0, |s| s.bytes())
    }

    /// The backend this engine runs on (`CPU`, `CUDA0`, ...).
    pub fn backend_name(&self) -> String {
        self.backend.name()
    }
    /// (free, total) bytes of the engine's device, as the device reports them (0s on the CPU).
    pub fn device_memory(&self) -> (usize, usize) {
        self.backend.memory()
    }
    pub fn n_past(&self) -> usize {
        self.n_past
    }
    pub fn n_ctx(&self) -> usize {
        self.cfg.n_ctx
    }
    pub fn n_vocab(&self) -> usize {
        self.model.hp.n_vocab
    }
    pub fn kv_bytes(&self) -> usize {
        self.kv.bytes()
    }
    pub fn compute_bytes(&self) -> usize {
        self.graphs.buffer_bytes_on(&self.backend)
    }

    /// Forget everything after the first `n` positions (rejected draft tokens, a new prompt
    /// sharing a prefix) and return how many positions are kept. KV cells past them are masked
    /// from then on and overwritten later. A recurrent state cannot be cut back: it can go to
    /// any position of the last verify batch (whose per-token states were kept), otherwise it
    /// is kept whole if `n` covers it, else cleared (0 is returned: recompute from the start).
    pub fn truncate(&mut self, n: usize) -> usize {
        let kept = self.truncate_state(n);
        self.aligned_prefix = self.aligned_prefix.min(kept);
        kept
    }

    fn truncate_state(&mut self, n: usize) -> usize {
        let Some(state) = &self.state else {
            self.n_past = self.n_past.min(n);
            return self.n_past;
        };
        if let Some(t) = self.pending_tree.take() {
            // A tree left without a commit: the state is still the one before it.
            self.n_past = t.start;
        }
        if let Some(p) = self.pending.take() {
            let end = p.start + p.n;
            if n >= p.start {
                let accepted = n.min(end) - p.start;
                if accepted > 0 {
                    let _p = profile::scope("engine.commit_state");
                    for k in &p.kept {
                        k.commit(&self.backend, state, accepted, p.n);
                    }
                    self.backend.synchronize();
                }
                self.n_past = p.start + accepted;
                return self.n_past;
            }
            // The state is still the one before the batch.
            self.n_past = p.start;
        }
        if n >= self.n_past {
            return self.n_past;
        }
        // Checkpoints past `n` belong to a sequence that is being replaced.
        self.checkpoints.retain(|c| c.pos <= n);
        match self.checkpoints.last() {
            Some(c) => {
                state.copy_from(&c.state);
                self.n_past = c.pos;
            }
            None => self.reset(),
        }
        self.n_past
    }

    /// Save the recurrent state at the current position, so that a later [`truncate`] to
    /// here or beyond needs no recomputation of what comes before (a server's prompt cache, a
    /// draft model's rollback). Keeps the last few; nothing to do for a model without
    /// recurrent layers.
    ///
    /// [`truncate`]: Self::truncate
    pub fn save_checkpoint(&mut self) -> Result<()> {
        if self.pending.is_some() || self.pending_tree.is_some() {
            self.truncate(self.n_past);
        }
        let Some(state) = &self.state else {
            return Ok(());
        };
        let pos = self.n_past;
        if self.checkpoints.iter().any(|c| c.pos == pos) {
            return Ok(());
        }
        let mut reuse = None;
        if self.checkpoints.len() >= MAX_CHECKPOINTS {
            reuse = Some(self.checkpoints.remove(0).state);
        }
        let saved = match reuse {
            Some(s) => s,
            None => {
                let hp = &self.model.hp;
                // In host memory: device memory is for weights and caches.
                RecurrentState::new_in(
                    ggml::BufferType::cpu(),
                    state.ssm,
                    hp.n_layer,
                    &hp.recurrent_layers(),
                )?
            }
        };
        saved.copy_from(state);
        let aligned = self
            .prompt_align
            .is_some_and(|a| pos.is_multiple_of(a) && pos <= self.aligned_prefix);
        self.checkpoints.push(Checkpoint {
            pos,
            state: saved,
            aligned,
        });
        self.checkpoints.sort_by_key(|c| c.pos);
        Ok(())
    }

    /// A verify batch evaluated at position `start` is accepted up to its first `rows` tokens:
    /// keep the target's state after them only (forget the KV cells of the rejected rows; a
    /// recurrent state takes the one kept after the last accepted token, without a forward).
    /// Speculative decoding commits target state through this alone.
    /// Returns the positions kept: `start + rows` unless the batch kept no per-token states
    /// (longer than [`max_rollback_len`](Self::max_rollback_len)).
    pub fn commit_accepted(&mut self, start: usize, rows: usize) -> usize {
        self.truncate(start + rows)
    }

    /// The longest batch any prefix of which can be committed without another forward:
    /// unbounded for attention-only models; for a hybrid model, the longest batch that keeps
    /// its per-token recurrent states (one graph, at most [`MAX_KEPT_TOKENS`]).
    pub fn max_rollback_len(&self) -> usize {
        match self.state {
            Some(_) => MAX_KEPT_TOKENS.min(self.cfg.n_ubatch),
            None => usize::MAX,
        }
    }

    /// Build the graph for `shape` unless it is cached (then `self.graphs.prepare(shape)`).
    fn build_graph_once(&mut self, shape: GraphShape) {
        if !self.graphs.contains(&shape) {
            let g =
                self.model
                    .build_graph(&self.kv, self.state.as_ref(), self.capture.as_ref(), shape);
            self.graphs.insert(shape, g);
        }
    }

    pub fn reset(&mut self) {
        self.n_past = 0;
        self.aligned_prefix = 0;
        self.pending = None;
        self.pending_tree = None;
        self.checkpoints.clear();
        if let Some(s) = &self.state {
            s.clear();
        }
    }

    /// Drop the graphs built for prompt chunks (many tokens, one output row). Their lengths
    /// rarely repeat, unlike decode and verify shapes, and each holds ~1.5 MiB of host
    /// metadata: a server slot calls this between requests so its memory returns to baseline.
    pub fn drop_prompt_graphs(&mut self) {
        self.graphs
            .retain(|s| s.n_tokens == 1 || s.n_outputs == s.n_tokens);
    }

    /// Built graphs kept for reuse, and the host memory their metadata holds.
    pub fn cached_graphs(&self) -> (usize, usize) {
        (self.graphs.len(), self.graphs.host_bytes())
    }

    /// The largest batch size n <= `max_verify_len` (the longest verify wanted) for which a batch
    /// computes every row bit for bit as one-token decoding does, measured once on this model,
    /// machine and ggml build. ggml picks different kernels by batch size (e.g. the CPU's
    /// quantized matmuls change path at 8 rows here), and speculative verification is only
    /// exactly lossless within this bound. The cache is reset afterwards.
    pub fn largest_exact_batch(&mut self, max_verify_len: usize) -> Result<usize> {
        if let Some((n, bound)) = self.exact_batch {
            if bound >= max_verify_len {
                return Ok(n.min(max_verify_len));
            }
        }
        let n_vocab = self.model.hp.n_vocab as u64;
        // Deterministic token ids spread over the vocabulary.
        let toks: Vec<u32> = (0..4 + max_verify_len as u64)
            .map(|i| ((i * 2654435761 + 12345) % n_vocab) as u32)
            .collect();
        let (prefix, probe) = toks.split_at(4);
        let saved = self.n_past;
        self.reset();
        self.decode(prefix, Outputs::Last)?;
        let mut single = Vec::with_capacity(max_verify_len);
        for &t in probe {
            single.push(self.decode(&[t], Outputs::All)?.data);
        }
        let mut exact = 1;
        for n in 2..=max_verify_len {
            self.reset();
            self.decode(prefix, Outputs::Last)?;
            let b = self.decode(&probe[..n], Outputs::All)?;
            if (0..n).any(|i| b.row(i) != &single[i][..]) {
                break;
            }
            exact = n;
        }
        self.n_past = saved.min(self.n_past);
        self.reset();
        self.exact_batch = Some((exact, max_verify_len));
        Ok(exact)
    }

    /// Put `rows` (captured rows of an earlier evaluation, token-major) before the rows of the
    /// last one, so that [`captured`](Self::captured) returns both: a prompt evaluated in two
    /// calls (a hybrid model keeps the state a token before its end) hands a drafter every
    /// prompt row.
    pub fn prepend_captured(&mut self, mut rows: Vec<f32>) {
        if self.capture.is_none() || rows.is_empty() {
            return;
        }
        rows.append(&mut self.captured);
        self.captured = rows;
    }

    /// Hidden states captured by the last `decode` (all its tokens), token-major.
    pub fn captured(&mut self) -> &[f32] {
        self.captured_rows(usize::MAX)
    }

    /// Hidden states of the first `n` tokens of the last `decode` (fewer if it had fewer),
    /// token-major. Reads only those rows back from the device.
    pub fn captured_rows(&mut self, n: usize) -> &[f32] {
        let Some(cap) = &self.capture else {
            return &[];
        };
        let nf = cap.layers.len() * cap.n_embd;
        let have = self.captured.len() / nf;
        if n > have && self.chunk_read < self.chunk_rows {
            let k = (n - have).min(self.chunk_rows - self.chunk_read);
            let _p = profile::scope("engine.read_capture");
            cap.read_rows(
                self.chunk_read,
                k,
                self.staging.as_mut(),
                &mut self.captured,
            );
            self.chunk_read += k;
        }
        let rows = n.min(self.captured.len() / nf);
        &self.captured[..rows * nf]
    }

    /// The first `n` captured rows of the last `decode`, left on the device for a drafter's graph
    /// to read (no read-back, no upload). `None` when they are not all there: no capture, fewer
    /// rows, or the decode ran in several chunks (then use [`captured_rows`](Self::captured_rows)).
    /// The engine reads none of the last chunk's rows back afterwards: the caller has them.
    pub fn captured_on_device(&mut self, n: usize) -> Option<CapturedRows> {
        let cap = self.capture.as_ref()?;
        if !self.captured.is_empty() || self.chunk_read != 0 || n > self.chunk_rows {
            return None;
        }
        self.chunk_read = self.chunk_rows;
        Some(cap.rows_on_device(n))
    }

    /// Evaluate `tokens` at positions `n_past..`, append them to the cache, and return logits for
    /// the rows `outputs` asks for.
    pub fn decode(&mut self, tokens: &[u32], outputs: Outputs) -> Result<Logits> {
        let mut data = Vec::new();
        self.evaluate(tokens, outputs, None, &mut ReadBack::Logits(&mut data))?;
        Ok(Logits {
            data,
            n_vocab: self.model.hp.n_vocab,
        })
    }

    /// Evaluate prompt tokens at positions `n_past..` like [`decode`](Self::decode) with
    /// [`Outputs::Last`], in chunks that start at multiples of the
    /// [`align_prompts`](Self::align_prompts) size when one is set.
    pub fn prefill(&mut self, tokens: &[u32]) -> Result<Logits> {
        let mut data = Vec::new();
        let align = self.prompt_align;
        self.evaluate(
            tokens,
            Outputs::Last,
            align,
            &mut ReadBack::Logits(&mut data),
        )?;
        Ok(Logits {
            data,
            n_vocab: self.model.hp.n_vocab,
        })
    }

    /// Evaluate prompt tokens like [`prefill`](Self::prefill), but compute every position's
    /// logits and hand them to `each`, a chunk at a time (`rows x n_vocab`, row-major, in
    /// order): a prompt's own log-probabilities (OpenAI's `echo` with `logprobs`).
    pub fn prefill_scored(&mut self, tokens: &[u32], each: &mut dyn FnMut(&[f32])) -> Result<()> {
        // Chunks of at most SCORED_CHUNK rows: every row's logits take graph memory (152K
        // floats a row for Qwen vocabularies), and the prompt graphs were sized for one row.
        let align = self.prompt_align.unwrap_or(SCORED_CHUNK).min(SCORED_CHUNK);
        self.evaluate(tokens, Outputs::All, Some(align), &mut ReadBack::Each(each))?;
        // A short last chunk may have kept its rows' recurrent states: all of it stays.
        if self.pending.is_some() {
            self.truncate(self.n_past);
        }
        Ok(())
    }

    /// Make the prompt cache exact: [`prefill`](Self::prefill) evaluates prompts in chunks that
    /// start at multiples of `size` (at most `n_ubatch`), and
    /// [`keep_prompt_prefix`](Self::keep_prompt_prefix) keeps only positions evaluated in whole
    /// such chunks. ggml's kernels may compute a row differently depending on the batch it is in
    /// (the CPU's repacked quantized products do), so a prompt evaluated partly from the cache
    /// and partly in batches cut elsewhere could differ, in the last bits, from the same prompt
    /// evaluated afresh, and so could the tokens that follow. With whole aligned chunks, every
    /// position is computed in the same batch either way.
    pub fn align_prompts(&mut self, size: usize) {
        self.prompt_align = Some(size.clamp(1, self.cfg.n_ubatch));
        self.aligned_prefix = 0;
    }

    /// Keep at most the first `n` positions for a new prompt that begins with them (a prompt
    /// cache hit); returns how many are kept. Like [`truncate`](Self::truncate), but with
    /// [`align_prompts`](Self::align_prompts) only positions the new prompt's own evaluation
    /// would compute identically: whole aligned chunks of earlier prompts (a hybrid model's
    /// recurrent state from a checkpoint at such a chunk's end), never generated tokens.
    pub fn keep_prompt_prefix(&mut self, n: usize) -> usize {
        let Some(a) = self.prompt_align else {
            return self.truncate(n);
        };
        let mut n = n.min(self.aligned_prefix) / a * a;
        if self.state.is_some() && n < self.n_past {
            n = self
                .checkpoints
                .iter()
                .filter(|c| c.aligned && c.pos <= n)
                .map(|c| c.pos)
                .max()
                .unwrap_or(0);
        }
        self.truncate(n)
    }

    /// Like [`decode`](Self::decode), but returns each output row's most likely token, computed
    /// on the backend (ggml_argmax), instead of its logits. For greedy decoding on a GPU, where
    /// reading back `rows x n_vocab` floats costs more than the argmax.
    pub fn decode_argmax(&mut self, tokens: &[u32], outputs: Outputs) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        self.evaluate(tokens, outputs, None, &mut ReadBack::Argmax(&mut ids))?;
        Ok(ids)
    }

    /// Evaluate `tokens` at positions `n_past..` (appending them to the cache) and return every
    /// token's hidden state after the final norm (the vector the lm_head multiplies, llama.cpp's
    /// embeddings before pooling): `tokens.len() x n_embd`, token-major.
    pub fn hidden_states(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        let mut rows = Vec::with_capacity(tokens.len() * self.model.hp.n_embd);
        self.evaluate(tokens, Outputs::All, None, &mut ReadBack::Hidden(&mut rows))?;
        Ok(rows)
    }

    /// Whether the last `decode` ran a freshly built graph: its time then includes building and
    /// allocating it and, on a GPU, running it uncaptured before ggml-cuda records a CUDA graph,
    /// so it says little about the steady cost of that batch size (the length policy skips it).
    pub fn last_decode_was_cold(&self) -> bool {
        self.last_cold
    }

    /// Whether greedy steps should use [`decode_argmax`](Self::decode_argmax): off the CPU only.
    /// On the CPU the logits are already in host memory, and the host argmax keeps llama.cpp's
    /// tie rule (the first maximum; ggml's CPU argmax takes the last).
    pub fn prefers_device_argmax(&self) -> bool {
        !self.backend.is_cpu()
    }

    /// `align`: cut the batches at multiples of this position (see
    /// [`align_prompts`](Self::align_prompts)), else every `n_ubatch` tokens.
    fn evaluate(
        &mut self,
        tokens: &[u32],
        outputs: Outputs,
        align: Option<usize>,
        read: &mut ReadBack,
    ) -> Result<()> {
        if tokens.is_empty() {
            bail!("decode: no tokens");
        }
        if self.n_past + tokens.len() > self.cfg.n_ctx {
            bail!(
                "context full: {} cached + {} new tokens exceed the context size {} (-c)",
                self.n_past,
                tokens.len(),
                self.cfg.n_ctx
            );
        }
        let n_vocab = self.model.hp.n_vocab;
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= n_vocab) {
            bail!("token id {bad} out of range (vocabulary size {n_vocab})");
        }
        self.captured.clear();
        (self.chunk_rows, self.chunk_read) = (0, 0);
        self.last_cold = false;
        let chunks: Vec<&[u32]> = match align {
            None => tokens.chunks(self.cfg.n_ubatch).collect(),
            Some(a) => {
                let mut chunks = Vec::new();
                let mut rest = tokens;
                let mut pos = self.n_past;
                while !rest.is_empty() {
                    let len = (a - pos % a).min(rest.len());
                    let (chunk, tail) = rest.split_at(len);
                    chunks.push(chunk);
                    (rest, pos) = (tail, pos + len);
                }
                chunks
            }
        };
        // With aligned chunks, a hybrid model saves the state after the last whole one (a follow-up
        // prompt extends this one) and after whole chunks ending at a power-of-two multiple of
        // the chunk size (a prompt sharing a shorter prefix, such as the system prompt): a later
        // prompt resumes from the longest of them it shares (see `keep_prompt_prefix`).
        let last_whole = align.and_then(|a| chunks.iter().rposition(|c| c.len() == a));
        for (ci, chunk) in chunks.iter().enumerate() {
            let last_chunk = ci + 1 == chunks.len();
            let n_outputs = match (outputs, last_chunk) {
                (Outputs::All, _) => chunk.len(),
                (Outputs::Last, true) => 1,
                (Outputs::Last, false) => 0,
            };
            let start = self.n_past;
            self.eval_chunk(chunk, n_outputs, read)?;
            if let Some(a) = align {
                if chunk.len() == a && start == self.aligned_prefix {
                    self.aligned_prefix = start + a;
                    let checkpoint = Some(ci) == last_whole || (start / a + 1).is_power_of_two();
                    if checkpoint && self.state.is_some() {
                        self.save_checkpoint()?;
                    }
                }
            }
        }
        Ok(())
    }

    fn eval_chunk(&mut self, chunk: &[u32], n_outputs: usize, read: &mut ReadBack) -> Result<()> {
        // Anything that runs after a verify (or an earlier chunk that kept its states, which
        // the next chunk reads) accepts all of it.
        if self.pending.is_some() || self.pending_tree.is_some() {
            self.truncate(self.n_past);
        }
        // This chunk overwrites the capture buffer: keep the rows of the one before.
        if self.chunk_read < self.chunk_rows {
            self.captured_rows(usize::MAX);
        }
        if let Some(cap) = &self.capture {
            cap.begin_write();
        }
        let nt = chunk.len();
        let n_kv = (self.n_past + nt).div_ceil(KV_PAD) * KV_PAD;
        let n_kv = n_kv.min(self.kv.n_ctx);
        let capture = self.capture.is_some();
        // Selecting output rows early skips the last layer's FFN for the other rows, so when the
        // last layer is captured every row must be computed.
        let last_captured = self
            .capture
            .as_ref()
            .is_some_and(|c| c.slot_of(self.model.hp.n_layer - 1).is_some());
        // A chunk without outputs still computes the last row's logits (cheap, one row) so that
        // the graph shape stays among the common ones.
        let n_rows = if last_captured { nt } else { n_outputs.max(1) };
        // A verify-sized batch of a hybrid model keeps every token's recurrent state.
        // (One token needs none: it is accepted whole or not evaluated.)
        let keep_states =
            self.state.is_some() && n_outputs == nt && (2..=MAX_KEPT_TOKENS).contains(&nt);
        let shape = GraphShape {
            n_tokens: nt,
            n_kv,
            n_outputs: n_rows,
            capture,
            keep_states,
            tree: None,
        };
        self.build_graph_once(shape);
        let g = self.graphs.prepare(shape)?;
        let inputs = profile::scope("engine.inputs");
        let start = self.n_past;
        let toks: Vec<i32> = chunk.iter().map(|&t| t as i32).collect();
        g.tokens.write_i32(&toks);
        g.pos
            .write_i32(&crate::model::blocks::positions(start, nt, g.pos_sections));
        let rows: Vec<i64> = (start..start + nt).map(|p| p as i64).collect();
        g.kv_rows.write_i64(&rows);
        g.mask.write_f16_bits(&causal_mask(start, nt, n_kv));
        if let Some(ids) = &g.out_ids {
            let n_out = shape.n_outputs;
            let ids_v: Vec<i32> = ((nt - n_out)..nt).map(|i| i as i32).collect();
            ids.write_i32(&ids_v);
        }

        let (logits_t, argmax_t, hidden_t) = (g.logits.clone(), g.argmax.clone(), g.hidden.clone());
        let kept = g.kept.clone();
        drop(inputs);
        {
            let _p = profile::scope("engine.compute");
            self.last_cold |= self.graphs.compute(shape)?;
        }
        self.forwards += 1;
        if keep_states {
            self.pending = Some(PendingStates { start, n: nt, kept });
        }
        self.n_past += nt;

        let _p = profile::scope("engine.read");
        if n_outputs > 0 {
            let first_row = shape.n_outputs - n_outputs;
            match read {
                ReadBack::Logits(out) => {
                    let n_vocab = self.model.hp.n_vocab;
                    read_f32_staged(
                        &logits_t,
                        first_row * n_vocab,
                        n_outputs * n_vocab,
                        self.staging.as_mut(),
                        out,
                    );
                }
                ReadBack::Each(each) => {
                    let n_vocab = self.model.hp.n_vocab;
                    let mut rows = Vec::new();
                    read_f32_staged(
                        &logits_t,
                        first_row * n_vocab,
                        n_outputs * n_vocab,
                        self.staging.as_mut(),
                        &mut rows,
                    );
                    each(&rows);
                }
                ReadBack::Argmax(out) => {
                    let mut ids = vec![0i32; n_outputs];
                    argmax_t.read_i32_into(&mut ids, first_row);
                    out.extend(ids.iter().map(|&t| t as u32));
                }
                ReadBack::Hidden(out) => {
                    let n_embd = self.model.hp.n_embd;
                    read_f32_staged(
                        &hidden_t,
                        first_row * n_embd,
                        n_outputs * n_embd,
                        self.staging.as_mut(),
                        out,
                    );
                }
            }
        }
        if self.capture.is_some() {
            (self.chunk_rows, self.chunk_read) = (nt, 0);
        }
        Ok(())
    }
}

impl BuiltGraph for ForwardGraph {
    fn graph(&self) -> ggml::Graph {
        self.graph.clone()
    }
    fn host_bytes(&self) -> usize {
        self.ctx.mem_size()
    }
}

/// Where a decode's outputs go: full logit rows, only each row's argmax, or the normed hidden
/// state rows.
enum ReadBack<'a> {
    Logits(&'a mut Vec<f32>),
    /// Each chunk's logit rows, handed over and not kept.
    Each(&'a mut dyn FnMut(&[f32])),
    Argmax(&'a mut Vec<u32>),
    Hidden(&'a mut Vec<f32>),
}

/// Most rows of a chunk whose every row's logits are read ([`Engine::prefill_scored`]).
const SCORED_CHUNK: usize = 64;

/// F16 bits of 0 and -inf.
const F16_ZERO: u16 = 0x0000;
const F16_NEG_INF: u16 = 0xFC00;

/// Causal mask for `nt` tokens at positions `start..start+nt` over `n_kv` cells (cell i holds
/// position i): a token sees every cell up to and including its own position.
pub fn causal_mask(start: usize, nt: usize, n_kv: usize) -> Vec<u16> {
    let mut m = vec![F16_NEG_INF; nt * n_kv];
    for t in 0..nt {
        let p = start + t;
        let row = &mut m[t * n_kv..(t + 1) * n_kv];
        for cell in row.iter_mut().take((p + 1).min(n_kv)) {
            *cell = F16_ZERO;
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_is_causal() {
        let m = causal_mask(2, 2, 4);
        assert_eq!(&m[0..4], &[F16_ZERO, F16_ZERO, F16_ZERO, F16_NEG_INF]);
        assert_eq!(&m[4..8], &[F16_ZERO; 4]);
    }
}
