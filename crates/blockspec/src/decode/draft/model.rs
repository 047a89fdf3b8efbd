//! A classic draft model: a small model with the target's tokenizer, run autoregressively with
//! its own engine and KV cache. It drafts greedily, one token per forward, and stops early when
//! it is unsure (its top probability below `p_min`), as llama.cpp's draft-simple does.
//!
//! Its KV cache only ever holds committed tokens plus the current step's drafts; after a verify
//! it is cut back to the accepted prefix, and committed tokens it has not seen yet are evaluated
//! in one batch at the start of the next draft (no per-token catch-up calls). After a long run of
//! plain steps (drafts did not pay) only the last [`MAX_CATCH_UP`] of them are evaluated, right
//! after what the cache holds: the context it drafts from then skips the middle of that run, and
//! a probe costs the same whatever the run's length.

use super::{DraftCost, Drafter, Features};
use crate::decode::sampling::argmax;
use crate::format::gguf::Gguf;
use crate::runtime::engine::{Engine, Outputs};
use anyhow::{bail, Result};

/// Committed tokens at most that a draft catches up on after plain steps (the newest ones). With
/// the 0.5B draft model on a 2-core CPU a catch-up of 32 cost a probe 135-170 ms, up to 3% of a
/// bench where drafts never paid; 8 cost about 40 ms (docs/BENCHMARKS.md).
pub const MAX_CATCH_UP: usize = 8;

/// Vocabularies may differ in size by padding, not more (llama.cpp's limit).
const MAX_VOCAB_SIZE_DIFFERENCE: usize = 128;

/// Check that a draft model speaks the target's tokens: same tokenizer model, and the same text
/// for every token id both have.
pub fn check_vocab(target: &Gguf, draft: &Gguf) -> Result<()> {
    let model = |g: &Gguf| -> Result<String> { Ok(g.str("tokenizer.ggml.model")?.to_string()) };
    let (tm, dm) = (model(target)?, model(draft)?);
    if tm != dm {
        bail!(
            "draft model {}: tokenizer {dm:?} differs from the target's {tm:?}",
            draft.path().display()
        );
    }
    let tokens = |g: &Gguf| -> Result<Vec<String>> {
        let Some(v) = g.str_array("tokenizer.ggml.tokens")? else {
            bail!("{}: no tokenizer.ggml.tokens", g.path().display())
        };
        Ok(v.into_iter().map(str::to_string).collect())
    };
    let (tt, dt) = (tokens(target)?, tokens(draft)?);
    if tt.len().abs_diff(dt.len()) > MAX_VOCAB_SIZE_DIFFERENCE {
        bail!(
            "draft model {}: vocabulary of {} tokens, the target has {}",
            draft.path().display(),
            dt.len(),
            tt.len()
        );
    }
    if let Some(i) = (0..tt.len().min(dt.len())).find(|&i| tt[i] != dt[i]) {
        bail!(
            "draft model {}: token {i} is {:?}, the target's is {:?} (a different tokenizer)",
            draft.path().display(),
            dt[i],
            tt[i]
        );
    }
    Ok(())
}

pub struct DraftModel {
    engine: Engine,
    /// The longest verify it fills: drafts + 1.
    max_verify_len: usize,
    /// Stop drafting when the draft model's top probability falls below this (0: never).
    p_min: f32,
    /// Committed tokens the draft model has not evaluated yet.
    pending: Vec<u32>,
    /// Cache position of the current step's `last` token, between `draft` and `commit`.
    step_base: Option<usize>,
    /// The tokens at cache positions 0..n_past, so a new prompt sharing a prefix with the last
    /// generation (a server's follow-up turn) reuses their KV.
    cached: Vec<u32>,
}

impl DraftModel {
    /// `engine`: the draft model's engine (context at least the target's); `max_verify_len`: the
    /// longest verify (drafts + 1). Check the vocabulary with [`check_vocab`] first.
    pub fn new(engine: Engine, max_verify_len: usize, p_min: f32) -> Result<DraftModel> {
        if max_verify_len < 2 {
            bail!("a draft model needs a block of at least 2 (one draft + the target's token)");
        }
        if !(0.0..=1.0).contains(&p_min) {
            bail!("--draft-p-min {p_min}: expected a probability in 0..1");
        }
        Ok(DraftModel {
            engine,
            max_verify_len,
            p_min,
            pending: Vec::new(),
            step_base: None,
            cached: Vec::new(),
        })
    }
}

impl DraftModel {
    /// Evaluate the pending committed tokens in one batch. One pending token rides along with
    /// the next draft's first batch for free; more than that is a backlog (a prompt, or plain
    /// steps) evaluated here.
    fn catch_up(&mut self) -> Result<()> {
        if self.pending.len() > 1 {
            let room = self.engine.n_ctx() - self.engine.n_past();
            if self.pending.len() <= room {
                self.engine.decode(&self.pending, Outputs::Last)?;
                self.cached.append(&mut self.pending);
            }
        }
        Ok(())
    }
}

/// Probability of the top token under softmax(logits).
fn top_prob(logits: &[f32], top: usize) -> f32 {
    let m = logits[top];
    let z: f32 = logits.iter().map(|&x| (x - m).exp()).sum();
    1.0 / z
}

impl Drafter for DraftModel {
    fn name(&self) -> &'static str {
        "draft"
    }
    fn max_verify_len(&self) -> usize {
        self.max_verify_len
    }
    fn cost(&self) -> DraftCost {
        DraftCost::PerToken
    }
    fn compute_bytes(&self) -> usize {
        self.engine.compute_bytes()
    }
    fn last_draft_was_cold(&self) -> bool {
        self.engine.last_decode_was_cold()
    }
    fn begin(&mut self, prompt: &[u32], _features: &[f32]) -> Result<()> {
        // Keep the KV of the prefix this prompt shares with what the cache holds (drafts only
        // change speed, never the output, so reuse is always safe).
        let reuse = self
            .cached
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count()
            .min(self.engine.n_past());
        // A hybrid draft model's state may only go back to a checkpoint.
        let reuse = self.engine.truncate(reuse);
        self.cached.truncate(reuse);
        self.pending.clear();
        self.pending.extend_from_slice(&prompt[reuse..]);
        self.step_base = None;
        // The draft model's own prompt processing, done now (with the target's) rather than
        // inside the first draft.
        self.catch_up()
    }

    fn sync(&mut self) -> Result<()> {
        // Committed tokens of plain steps: the newest MAX_CATCH_UP are what the next drafts
        // depend on most; evaluating every one of a long run would cost a prefill of the run at
        // each probe, a tax on every plainly decoded token.
        if self.pending.len() > MAX_CATCH_UP {
            let skip = self.pending.len() - MAX_CATCH_UP;
            self.pending.drain(..skip);
        }
        self.catch_up()
    }

    fn draft(&mut self, last: u32, len: usize) -> Result<Vec<u32>> {
        let want = len.saturating_sub(1);
        let mut input = std::mem::take(&mut self.pending);
        input.push(last);
        let base = self.engine.n_past() + input.len() - 1;
        // Room for the catch-up, `last`, and want - 1 drafts evaluated (the final one is not).
        let room = self.engine.n_ctx() - self.engine.n_past();
        if input.len() + want.saturating_sub(1) > room {
            // Out of draft context: the target is at its end too; plain steps from here.
            input.pop();
            self.pending = input;
            return Ok(Vec::new());
        }
        let mut logits = self.engine.decode(&input, Outputs::Last)?;
        self.cached.extend_from_slice(&input);
        // A hybrid draft model's state comes back here if drafts are rejected.
        self.engine.save_checkpoint()?;
        self.step_base = Some(base);
        let mut out = Vec::with_capacity(want);
        while out.len() < want {
            let row = logits.last();
            let t = argmax(row);
            if self.p_min > 0.0 && top_prob(row, t as usize) < self.p_min {
                break;
            }
            out.push(t);
            if out.len() == want {
                break;
            }
            logits = self.engine.decode(&[t], Outputs::Last)?;
            self.cached.push(t);
        }
        Ok(out)
    }

    fn commit(&mut self, tokens: &[u32], _features: Features) -> Result<()> {
        match self.step_base.take() {
            // A plain step: nothing was drafted, the tokens wait for the next draft.
            None => self.pending.extend_from_slice(tokens),
            Some(base) => {
                // The cache holds `last` and the drafts evaluated this step from `base` on; keep
                // the ones that were committed, evaluate the rest next time.
                let evaluated = self.engine.n_past() - base;
                let keep = tokens.len().min(evaluated);
                // A hybrid draft model goes back to its checkpoint at `base` at worst: the
                // committed tokens it lost are evaluated again with the next draft.
                let kept = self.engine.truncate(base + keep);
                let lost = self.cached
                    [kept.min(self.cached.len())..(base + keep).min(self.cached.len())]
                    .to_vec();
                self.cached.truncate(kept);
                self.pending.extend_from_slice(&lost);
                self.pending.extend_from_slice(&tokens[keep..]);
            }
        }
        Ok(())
    }
}
