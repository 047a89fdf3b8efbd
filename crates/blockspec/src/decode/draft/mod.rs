//! Drafters: where speculative tokens come from.
//!
//! Every source (the DFlash block drafter, a classic small draft model, n-gram lookup in the
//! token history) sits behind [`Drafter`], so the verify loop in `spec` is the same for all of
//! them. A drafter only proposes; the target decides, so a drafter can never change the output.

pub mod dflash;
pub mod model;
pub mod ngram;

use crate::runtime::capture::CapturedRows;
use anyhow::Result;

/// Target features of committed positions: token-major rows of the captured layers' outputs.
pub enum Features<'a> {
    /// Rows in host memory.
    Host(&'a [f32]),
    /// The first rows of the target's capture buffer, where its graph wrote them (on its
    /// device), valid until the target evaluates again. Only for drafters that
    /// [`read_device_features`](Drafter::reads_device_features).
    Device(CapturedRows),
}

/// The drafter's candidates from one forward: for each drafted position (depth 1..), its `k`
/// most likely tokens, most likely first, and their log-probabilities.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DraftTopK {
    /// Candidates per depth.
    pub k: usize,
    /// Token ids, depth-major (`depth * k`).
    pub ids: Vec<u32>,
    /// Log-probabilities, laid out as `ids`.
    pub logprobs: Vec<f32>,
}

impl DraftTopK {
    /// Drafted positions.
    pub fn depth(&self) -> usize {
        self.ids.len().checked_div(self.k).unwrap_or(0)
    }

    /// The rank-`r` token at depth `d` (1-based).
    pub fn id(&self, d: usize, r: usize) -> u32 {
        self.ids[(d - 1) * self.k + r]
    }

    /// Keep the first `depth` positions only.
    pub fn truncate_depth(&mut self, depth: usize) {
        self.ids.truncate(depth * self.k);
        self.logprobs.truncate(depth * self.k);
    }
}

/// How a drafter's time grows with the number of tokens it drafts (the verify-length policy
/// weighs it against the verify cost).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DraftCost {
    /// One forward per step whatever the length (DFlash drafts a whole block at once).
    PerStep,
    /// One forward per drafted token (an autoregressive draft model).
    PerToken,
}

/// A source of draft tokens for speculative decoding.
///
/// The protocol, per generation: [`begin`](Drafter::begin) with the prompt; then per step
/// [`draft`](Drafter::draft) (optional: a plain step skips it) and [`commit`](Drafter::commit)
/// with the tokens the target accepted.
pub trait Drafter {
    /// Short name for logs and statistics (`dflash`, `draft`, `ngram`).
    fn name(&self) -> &'static str;
    /// The longest verify this drafter fills: its drafts + 1 (the step's newest committed
    /// token, which the target evaluates with them). For DFlash that is its trained block size.
    fn max_verify_len(&self) -> usize;
    /// Target layers whose hidden states the drafter reads; the target engine captures them in
    /// its own graphs and they arrive through `begin` and `commit`.
    fn target_layers(&self) -> &[usize] {
        &[]
    }
    fn cost(&self) -> DraftCost;
    /// Whether the last `draft` ran a freshly built graph (its time is then not a steady cost;
    /// see Engine::last_decode_was_cold).
    fn last_draft_was_cold(&self) -> bool {
        false
    }
    /// Compute-buffer bytes the drafter reserved on its device (for the memory report).
    fn compute_bytes(&self) -> usize {
        0
    }
    /// A new generation. `features`: the captured target features of the prompt's positions,
    /// token-major (empty when `target_layers` is).
    fn begin(&mut self, prompt: &[u32], features: &[f32]) -> Result<()>;
    /// Whether [`begin_from`](Drafter::begin_from) can start from a cached prompt prefix.
    /// Drafters that read no target features can (they get none anyway); one that does needs
    /// to keep the prefix's state itself.
    fn resumes_prefix(&self) -> bool {
        self.target_layers().is_empty()
    }
    /// A new generation whose first `reuse` prompt positions are still in the target's cache
    /// from the previous one (a prompt cache hit): `features` cover `prompt[reuse..]` only.
    /// Only called with `reuse > 0` when [`resumes_prefix`](Drafter::resumes_prefix).
    fn begin_from(&mut self, prompt: &[u32], reuse: usize, features: &[f32]) -> Result<()> {
        if reuse > 0 && !self.resumes_prefix() {
            anyhow::bail!(
                "the {} drafter cannot start from a cached prompt prefix",
                self.name()
            );
        }
        self.begin(prompt, features)
    }
    /// Catch up on committed tokens the drafter has not processed yet, outside the timed draft
    /// (after a run of plain steps), so the measured drafting cost is that of a draft alone.
    fn sync(&mut self) -> Result<()> {
        Ok(())
    }
    /// Whether [`commit`](Drafter::commit) takes [`Features::Device`]: the drafter reads the
    /// target's features in its own graph, where the target left them, instead of from host
    /// copies. It then keeps a reference until [`draft`](Drafter::draft) or
    /// [`release_capture`](Drafter::release_capture), one of which the caller must call before
    /// the target evaluates again.
    fn reads_device_features(&self) -> bool {
        false
    }
    /// The target is about to evaluate again (overwriting its capture buffer) with no draft
    /// first (a plain step, or the generation ended): copy any committed features still held
    /// there by reference.
    fn release_capture(&mut self) -> Result<()> {
        Ok(())
    }
    /// The per-depth top-`k` candidates (`k` at most the vocabulary) of a draft after `last`
    /// over every position the drafter fills, for a tree verify; `None` when the drafter has
    /// no such distribution (only DFlash has: one forward drafts every position).
    fn draft_top_k(&mut self, _last: u32, _k: usize) -> Result<Option<DraftTopK>> {
        Ok(None)
    }
    /// Propose up to `len - 1` tokens to follow `last`: the newest committed token, which the
    /// target has not evaluated yet. May return fewer, or none.
    fn draft(&mut self, last: u32, len: usize) -> Result<Vec<u32>>;
    /// The step committed `tokens`: the `last` token of the step followed by the accepted drafts
    /// (the target's own next token becomes the next step's `last`). `features` are the target
    /// features of these positions.
    fn commit(&mut self, tokens: &[u32], features: Features) -> Result<()>;
}
