//! Speculative decoding: each step drafts tokens after the newest committed one, verifies them
//! in one target batch, accepts the longest prefix the target agrees with and commits it.
//!
//! Lossless at any temperature. Greedy: a draft is kept when it is the target's argmax there.
//! At T > 0 ([`AcceptRule`]): by default (`Match`, and always with drafters that give no
//! probabilities) the target's token is drawn at every verified position and a draft kept only
//! if it equals that draw, which reproduces plain sampling seed for seed; or (`Rejection`)
//! speculative rejection sampling with the drafter's probabilities (drafts drawn from them; see
//! [`rejection`]), exact in distribution.

pub mod policy;
pub mod rejection;
pub mod replay;
pub mod stats;
pub mod tree;
pub mod tree_policy;
pub mod verify;

pub use rejection::AcceptRule;
pub use replay::ReplayAcceptance;
pub use stats::SpecStats;

use crate::decode::draft::{Drafter, Features};
use crate::decode::generate::{
    check_constraint, prefill, prepare_sampler, GenerateOptions, Generation, Output, StopReason,
    Timings,
};
use crate::decode::sampling::Sampler;
use crate::runtime::engine::{Engine, Logits};
use crate::runtime::profile;
use crate::text::tokenizer::Tokenizer;
use anyhow::{bail, Result};
use policy::LengthPolicy;
use stats::{ms_since, StepRecorder};
use std::time::Instant;
use tree_policy::TreePolicy;
use verify::{Accepted, ChainVerifier, TreeVerifier, Verdict, Verifier};

/// How a speculative generation chooses its verify lengths, and what it carries between
/// generations.
#[derive(Clone, Debug, Default)]
pub struct SpecOptions {
    /// Verify this many tokens per step (1..=the drafter's longest verify) instead of adapting.
    pub fixed_len: Option<usize>,
    /// Allow verify batches larger than the backend computes exactly like one-token steps
    /// (reproduces the reference algorithm, e.g. z-lab's full blocks, but the output may then
    /// differ from plain decoding at near-ties). Off by default: lossless first.
    pub allow_inexact_batches: bool,
    /// Benchmarking only: replay this acceptance instead of checking the drafts (see
    /// [`ReplayAcceptance`]). The output is then not the target's; timing is what it measures.
    pub replay: Option<ReplayAcceptance>,
    /// What the length policy learned (costs on this machine, acceptance), carried from one
    /// generation to the next when the same options are passed again. Start with `None`.
    pub policy: Option<LengthPolicy>,
    /// What the tree policy learned (`tree_auto`), carried like `policy`.
    pub tree_policy: Option<TreePolicy>,
    /// DDTree (`--spec-tree`): verify a tree of this many drafted nodes each step, built from
    /// the drafter's per-position candidates (DFlash); 0 verifies chains. With `tree_auto`, the
    /// largest budget tried (0: the largest that fits).
    pub tree_budget: usize,
    /// `--spec-tree auto`: choose each step between plain decoding, the chain and trees of
    /// several budgets by measured tokens per second ([`tree_policy`]).
    pub tree_auto: bool,
    /// Put the drafter's top-1 chain into each tree first (see `tree::DraftTree::build`).
    pub tree_chain_seed: bool,
    /// Which drafts a step keeps at temperature > 0.
    pub accept_rule: AcceptRule,
}

/// Candidates per position a rejection-sampled chain asks the drafter for: its proposal is
/// the drafter's distribution over them.
const CHAIN_PROPOSAL_K: usize = 16;

/// What a speculative generation drives: the target engine, the drafter proposing its tokens,
/// the tokenizer and the sampler. The engine must capture the drafter's target layers
/// (EngineConfig::capture_layers == drafter.target_layers()).
pub struct SpecParts<'a> {
    /// The target: its tokens are the output.
    pub engine: &'a mut Engine,
    /// Proposes the tokens each step verifies.
    pub drafter: &'a mut dyn Drafter,
    /// Turns the output into text (and knows the end-of-generation tokens).
    pub tok: &'a Tokenizer,
    /// Draws the target's tokens.
    pub sampler: &'a mut Sampler,
}

/// Generate from `prompt` with speculative decoding.
pub fn generate_speculative(
    parts: SpecParts,
    prompt: &[u32],
    opts: &GenerateOptions,
    spec: &mut SpecOptions,
    on_text: impl FnMut(&str),
) -> Result<(Generation, SpecStats)> {
    let SpecParts {
        engine,
        drafter,
        tok,
        sampler,
    } = parts;
    let max_len = max_verify_len(engine, drafter, spec)?;
    let tree_rows = tree_rows(engine, spec)?;
    prepare_sampler(engine, sampler, opts)?;
    let mut timings = Timings::default();
    let (logits, prompt_logprobs) = prefill(engine, sampler, prompt, opts, &mut timings)?;
    let cached_prompt_n = prompt.len() - timings.prompt_n;
    // Log-probabilities need the logits; otherwise a GPU reads back only argmax ids.
    let device_argmax =
        sampler.is_plain_argmax() && engine.prefers_device_argmax() && opts.logprobs.is_none();
    // The drafter's own prompt processing counts as prompt time.
    let tb = Instant::now();
    drafter.begin_from(prompt, cached_prompt_n, engine.captured())?;
    timings.prompt_ms += ms_since(tb);
    if opts.max_tokens == Some(0) {
        let g = Generation::nothing(timings, cached_prompt_n, prompt_logprobs);
        return Ok((g, SpecStats::default()));
    }

    let t1 = Instant::now();
    let fixed = spec.fixed_len.map(|f| f.min(max_len));
    let policy = match spec.policy.take() {
        Some(p) if p.max_len() == max_len && p.fixed() == fixed => p,
        _ => LengthPolicy::new(max_len, fixed, drafter.cost()),
    };
    let forwards_before = engine.forwards();
    let tree = tree_rows.map(|rows| {
        let mut t = TreeVerifier::new(rows - 1, device_argmax, opts.logprobs);
        t.chain_seed = spec.tree_chain_seed;
        t.rule = spec.accept_rule;
        t
    });
    // The tree policy carries over between generations like the length policy.
    let tree_policy = match (spec.tree_auto, tree_rows) {
        (true, Some(rows)) => match spec.tree_policy.take() {
            Some(p) if p.max_budget() == rows - 1 => Some(p),
            _ => Some(TreePolicy::new(rows - 1)),
        },
        _ => None,
    };
    let mut run = SpecRun {
        engine,
        drafter,
        sampler,
        verifier: ChainVerifier {
            device_argmax,
            logprobs: opts.logprobs,
            rule: spec.accept_rule,
            proposals: Vec::new(),
        },
        tree,
        tree_step: false,
        tree_policy,
        tree_top1: Vec::new(),
        step_draft_ms: 0.0,
        policy,
        replay: spec.replay.as_mut(),
        out: Output::new(tok, opts, on_text),
        rec: StepRecorder::new(max_len.max(tree_rows.unwrap_or(0))),
        max_tokens: opts.max_tokens,
        warned_foreign_id: false,
    };
    let stop = run.run(&logits)?;
    let SpecRun {
        engine,
        drafter,
        policy,
        tree_policy,
        mut out,
        rec,
        ..
    } = run;
    let target_forwards = engine.forwards() - forwards_before;
    spec.policy = Some(policy);
    if tree_policy.is_some() {
        spec.tree_policy = tree_policy;
    }
    // The next generation starts with a prompt evaluation: keep what the drafter still needs.
    drafter.release_capture()?;
    let mut logprobs = std::mem::take(&mut out.logprobs);
    let (tokens, text) = out.finish(stop);
    logprobs.truncate(tokens.len());
    timings.predicted_n = tokens.len();
    timings.predicted_ms = ms_since(t1);
    timings.finish();
    let mut stats = rec.finish(tokens.len(), timings.predicted_ms);
    stats.target_forwards = target_forwards;
    Ok((
        Generation {
            tokens,
            text,
            stop,
            timings,
            logprobs,
            cached_prompt_n,
            prompt_logprobs,
        },
        stats,
    ))
}

/// The longest verify a step may make: the drafter's longest, capped (unless inexact batches
/// are allowed) at the largest batch the backend computes exactly like one-token steps.
fn max_verify_len(engine: &mut Engine, drafter: &dyn Drafter, spec: &SpecOptions) -> Result<usize> {
    // A hybrid target can commit any prefix only of a verify whose per-token states it kept.
    let wanted = drafter.max_verify_len().min(engine.max_rollback_len());
    let len = if spec.allow_inexact_batches {
        wanted
    } else {
        engine.largest_exact_batch(wanted)?
    };
    if let Some(f) = spec.fixed_len {
        if f > len {
            tracing::warn!(
                "verify length {f} capped at {len}: larger batches do not reproduce one-token decoding exactly on this backend"
            );
        }
    }
    Ok(len)
}

/// The rows of a tree verify (`1 + tree_budget`), or `None` for chains. Trees fit one batch
/// (on a hybrid target, one whose states are kept), and (unless inexact batches are allowed) a batch the backend computes
/// exactly like one-token steps: a larger budget is capped to it, with a warning.
fn tree_rows(engine: &mut Engine, spec: &SpecOptions) -> Result<Option<usize>> {
    let budget = match (spec.tree_auto, spec.tree_budget) {
        (true, 0) => tree_policy::MAX_BUDGET,
        (_, b) => b,
    };
    if budget == 0 {
        return Ok(None);
    }
    let mut rows = 1 + budget;
    // `auto` names no budget: its largest is capped silently.
    let warn = |why: String| match spec.tree_auto {
        true => tracing::debug!("--spec-tree auto: {why}"),
        false => tracing::warn!("--spec-tree {budget} {why}"),
    };
    // A hybrid target keeps every row's recurrent state: as many as a chain verify may have.
    let keepable = engine.max_rollback_len();
    if rows > keepable {
        warn(format!(
            "capped at {}: a hybrid target keeps the states of at most {keepable} rows",
            keepable - 1
        ));
        rows = keepable;
    }
    if !spec.allow_inexact_batches {
        let exact = engine.largest_exact_batch(rows)?;
        if exact < rows {
            warn(format!(
                "capped at {}: larger batches do not reproduce one-token decoding exactly on this backend",
                exact - 1
            ));
            rows = exact;
        }
    }
    Ok((rows > 1).then_some(rows))
}

/// One speculative generation in progress, after the prompt: the parts it drives and what it
/// has committed, learned and measured so far.
struct SpecRun<'a, F: FnMut(&str)> {
    engine: &'a mut Engine,
    drafter: &'a mut dyn Drafter,
    sampler: &'a mut Sampler,
    verifier: ChainVerifier,
    /// Verifies trees instead of chains (`--spec-tree`).
    tree: Option<TreeVerifier>,
    /// Whether the current step verifies a tree.
    tree_step: bool,
    /// `--spec-tree auto`: chooses each step's tree budget, or the chain.
    tree_policy: Option<TreePolicy>,
    /// The drafter's top-1 token per depth in the current tree step (what a chain would have
    /// drafted).
    tree_top1: Vec<u32>,
    /// Drafting time of the current step.
    step_draft_ms: f64,
    policy: LengthPolicy,
    replay: Option<&'a mut ReplayAcceptance>,
    out: Output<'a, F>,
    rec: StepRecorder,
    max_tokens: Option<usize>,
    /// Whether a draft outside the target's vocabulary was reported already.
    warned_foreign_id: bool,
}

impl<F: FnMut(&str)> SpecRun<'_, F> {
    /// The first token from the prompt's logits, then steps of draft -> verify -> accept ->
    /// commit until a stop.
    fn run(&mut self, prompt_logits: &Logits) -> Result<StopReason> {
        let mut last = self.first_token(prompt_logits)?;
        if let Some(stop) = self.out.push(last) {
            return Ok(stop);
        }
        loop {
            // `last` is committed but not yet seen by the target; it sits at position n_past.
            let start = self.engine.n_past();
            let Some(n) = self.choose_len() else {
                return Ok(StopReason::Context);
            };
            self.rec.begin_step();
            let batch = self.draft(last, n)?;
            let verdict = self.verify(&batch)?;
            let accepted = self.accept(&verdict, &batch);
            check_constraint(self.sampler)?;
            self.commit(start, &accepted)?;
            last = accepted.bonus;
            if let Some(stop) = self.emit(accepted) {
                return Ok(stop);
            }
        }
    }

    /// Draw the first token from the prompt's logits.
    fn first_token(&mut self, logits: &Logits) -> Result<u32> {
        let ts = Instant::now();
        let t = self.sampler.sample(logits.last());
        self.sampler.accept(t);
        check_constraint(self.sampler)?;
        self.out.note_logprobs(logits.last(), t);
        self.rec.sampled(ms_since(ts));
        Ok(t)
    }

    /// How many tokens to verify this step (1: a plain step); `None` when the context is full.
    fn choose_len(&mut self) -> Option<usize> {
        let room = self.engine.n_ctx() - self.engine.n_past();
        if room == 0 {
            return None;
        }
        self.tree_step = false;
        if let (Some(t), None) = (&self.tree, &self.tree_policy) {
            // A tree every step; a plain step where none fits (the end of the context).
            let rows = t.batch_rows();
            self.tree_step = room >= rows;
            return Some(if self.tree_step { rows } else { 1 });
        }
        let mut n = self.policy.choose().min(room);
        if let Some(m) = self.max_tokens {
            // No point verifying past the token limit.
            n = n.min(m.saturating_sub(self.out.tokens.len()) + 1).max(1);
        }
        if let (Some(t), Some(tp)) = (&mut self.tree, &mut self.tree_policy) {
            let chain_rate = self.policy.rate(n).unwrap_or(0.0);
            if let Some(b) = tp.choose(chain_rate, n > 1, room) {
                t.budget = b;
                self.tree_step = true;
                return Some(t.batch_rows());
            }
        }
        Some(n)
    }

    /// The batch to verify: `last`, then up to `n - 1` usable drafts (none when `n` is 1).
    fn draft(&mut self, last: u32, n: usize) -> Result<Vec<u32>> {
        let mut batch = vec![last];
        if n == 1 {
            // The target overwrites its captured features now, before any draft reads them.
            self.drafter.release_capture()?;
            return Ok(batch);
        }
        self.step_draft_ms = 0.0;
        let tsync = Instant::now();
        let _p = profile::scope("spec.sync");
        self.drafter.sync()?;
        drop(_p);
        self.rec.synced(ms_since(tsync));
        if self.tree_step {
            match self.draft_tree(last)? {
                Some(batch) => return Ok(batch),
                // `auto` with a drafter without per-position candidates: chains only.
                None => {
                    self.tree_policy = None;
                    self.tree = None;
                    self.tree_step = false;
                }
            }
        }
        let td = Instant::now();
        let mut drafts = match self.sampled_drafts(last, n)? {
            Some(d) => d,
            None => self.drafter.draft(last, n)?,
        };
        let ms = ms_since(td);
        let cold = self.drafter.last_draft_was_cold();
        self.policy.record_draft(ms, drafts.len(), cold);
        self.rec.drafted(ms);
        // A drafter may propose fewer (or ids the target does not have: a draft model's padded
        // vocabulary); verify what is usable.
        drafts.truncate(n - 1);
        self.cut_at_foreign_id(&mut drafts);
        self.cut_at_grammar(&mut drafts);
        self.verifier.proposals.truncate(drafts.len());
        batch.extend_from_slice(&drafts);
        Ok(batch)
    }

    /// Up to `n - 1` drafts drawn from the drafter's proposal, for rejection sampling (their
    /// proposals go to the chain verifier); `None` when the step matches drafts instead
    /// (greedy, the `Match` rule, or a drafter without per-position candidates).
    fn sampled_drafts(&mut self, last: u32, n: usize) -> Result<Option<Vec<u32>>> {
        self.verifier.proposals.clear();
        if !self.verifier.rule.samples_drafts() || self.sampler.params.is_greedy() {
            return Ok(None);
        }
        let k = CHAIN_PROPOSAL_K.min(self.engine.n_vocab());
        let Some(mut cand) = self.drafter.draft_top_k(last, k)? else {
            return Ok(None);
        };
        cand.truncate_depth(n - 1);
        let mut drafts = Vec::with_capacity(cand.depth());
        for d in 0..cand.depth() {
            let row = d * cand.k..(d + 1) * cand.k;
            let Some(q) = self
                .sampler
                .proposal(&cand.ids[row.clone()], &cand.logprobs[row])
            else {
                break;
            };
            drafts.push(self.sampler.draw(&q));
            self.verifier.proposals.push(q);
        }
        Ok(Some(drafts))
    }

    /// The batch of a tree step: the tree built from the drafter's per-position candidates;
    /// `None` under `--spec-tree auto` when the drafter gives none (an error for a fixed
    /// budget).
    fn draft_tree(&mut self, last: u32) -> Result<Option<Vec<u32>>> {
        let t = self.tree.as_mut().expect("a tree step has a tree verifier");
        let k = t.budget.min(self.engine.n_vocab());
        let td = Instant::now();
        let Some(cand) = self.drafter.draft_top_k(last, k)? else {
            if self.tree_policy.is_some() {
                tracing::info!(
                    "--spec-tree auto: the {} drafter gives no per-position candidates; verifying chains",
                    self.drafter.name()
                );
                return Ok(None);
            }
            bail!(
                "--spec-tree needs a drafter that gives per-position candidates (DFlash); the {} drafter does not",
                self.drafter.name()
            );
        };
        let ms = ms_since(td);
        self.step_draft_ms = ms;
        self.rec.drafted(ms);
        self.tree_top1 = (1..=cand.depth()).map(|d| cand.id(d, 0)).collect();
        Ok(Some(t.plan(last, &cand, Some(&mut *self.sampler))))
    }

    /// What the drafter's top-1 chain would have had accepted in this tree step, as (offered,
    /// accepted) drafts: its tokens against the target's along the accepted path (known down
    /// to the bonus token's depth; beyond it, unknown, so all it reached counts as offered and
    /// accepted). `None` where the tree's tokens were drawn (rejection sampling): a chain would
    /// have drawn others.
    fn chain_equivalent(&self, accepted: &Accepted) -> Option<(usize, usize)> {
        let t = self.tree.as_ref()?;
        if t.rule.samples_drafts() && !self.sampler.params.is_greedy() {
            return None;
        }
        let known: Vec<u32> = accepted.path[1..]
            .iter()
            .copied()
            .chain(std::iter::once(accepted.bonus))
            .collect();
        let cap = self.policy.max_len().saturating_sub(1);
        let reach = known.len().min(self.tree_top1.len()).min(cap);
        let agree = (0..reach)
            .take_while(|&j| self.tree_top1[j] == known[j])
            .count();
        let offered = if agree < reach { agree + 1 } else { agree };
        (offered > 0).then_some((offered, agree))
    }

    /// Cut `drafts` at the first id outside the target's vocabulary (reported once).
    fn cut_at_foreign_id(&mut self, drafts: &mut Vec<u32>) {
        let n_vocab = self.engine.n_vocab();
        if let Some(i) = drafts.iter().position(|&t| t as usize >= n_vocab) {
            if !self.warned_foreign_id {
                self.warned_foreign_id = true;
                tracing::warn!(
                    "{} drafter proposed token id {} outside the target's vocabulary of {n_vocab} (non-finite drafter logits?); such drafts are dropped",
                    self.drafter.name(),
                    drafts[i] as i32
                );
            }
            drafts.truncate(i);
        }
    }

    /// Cut matched drafts at the first one the grammar forbids after the committed tokens and
    /// the drafts before it: the target's masked choice could never equal it. (Drafts drawn
    /// for rejection sampling are kept: the acceptance test rejects them, and cutting on what
    /// was drawn would bias the output. Tree nodes are not pruned either: the walk masks the
    /// target's choice at every node with the grammar state of its path.)
    fn cut_at_grammar(&mut self, drafts: &mut Vec<u32>) {
        if self.sampler.constraint().is_none() || !self.verifier.proposals.is_empty() {
            return;
        }
        let ok = self.sampler.valid_draft_prefix(drafts);
        if ok < drafts.len() {
            tracing::trace!("grammar: {} of {} drafts allowed", ok, drafts.len());
            drafts.truncate(ok);
        }
    }

    /// Evaluate the batch on the target; its cost goes to the statistics and the length policy.
    fn verify(&mut self, batch: &[u32]) -> Result<Verdict> {
        let tv = Instant::now();
        let engine = &mut *self.engine;
        let verifier: &mut dyn Verifier = match &mut self.tree {
            Some(t) if self.tree_step => t,
            _ => &mut self.verifier,
        };
        let verdict = verifier.evaluate(engine, batch)?;
        let ms = ms_since(tv);
        // Timings of freshly built graphs (first uses, CUDA graph capture) would make a length
        // look slower than it is; the policy learns from steady steps only. (Tree steps do not
        // use it.)
        let cold = self.engine.last_decode_was_cold();
        if !self.tree_step {
            self.policy.record_verify(batch.len(), ms, cold);
        }
        self.rec.verified(batch.len(), ms);
        Ok(verdict)
    }

    /// Walk the verdict into the accepted path and the target's next token; a speculative
    /// step's acceptance and cost go to the statistics and the length policy.
    fn accept(&mut self, verdict: &Verdict, batch: &[u32]) -> Accepted {
        let ts = Instant::now();
        let _p = profile::scope("spec.walk");
        let replay = self.replay.as_deref_mut();
        let verifier: &dyn Verifier = match &self.tree {
            Some(t) if self.tree_step => t,
            _ => &self.verifier,
        };
        let accepted = verifier.walk(verdict, batch, self.sampler, replay);
        drop(_p);
        self.rec.sampled(ms_since(ts));
        let (n, k) = (batch.len(), accepted.n_drafts());
        if self.tree_step {
            self.rec.accepted(n - 1, k);
            self.rec.tree(n - 1);
            if self.tree_policy.is_some() {
                if let Some((offered, kept)) = self.chain_equivalent(&accepted) {
                    self.policy.record_accept(offered, kept);
                }
                let chain_rate = self.policy.rate(self.policy.best_len()).unwrap_or(0.0);
                let ms = self.step_draft_ms + self.rec.step_verify_ms();
                let cold = self.engine.last_decode_was_cold();
                if let Some(tp) = &mut self.tree_policy {
                    tp.record(n - 1, k + 1, ms, cold, chain_rate);
                }
            }
            tracing::debug!(
                "step: tree of {} nodes verified in {:.1} ms, {k} accepted",
                n - 1,
                self.rec.step_verify_ms()
            );
        } else if n > 1 {
            self.rec.accepted(n - 1, k);
            self.policy.record_accept(n - 1, k);
            // A probe's cost includes building its graphs: that is what probing costs.
            let step_ms = self.rec.step_ms();
            if let Some(plain) = self.policy.plain_ms() {
                self.policy
                    .record_overhead(step_ms - (k + 1) as f64 * plain);
            }
            tracing::debug!(
                "step: {n} tokens verified in {:.1} ms ({step_ms:.1} ms with drafting), {k} accepted",
                self.rec.step_verify_ms()
            );
        }
        accepted
    }

    /// Keep the target's state after the accepted path only (the batch was evaluated at
    /// `start`), and give the drafter the path's tokens and their target features.
    fn commit(&mut self, start: usize, accepted: &Accepted) -> Result<()> {
        let rows = accepted.path.len();
        match &accepted.rows {
            Some(tree_rows) => self.engine.commit_tree_path(start, tree_rows)?,
            None => {
                let kept = self.engine.commit_accepted(start, rows);
                if kept != start + rows {
                    bail!(
                        "the target could keep only {kept} of {} positions after a verify (a recurrent state cannot go back there)",
                        start + rows
                    );
                }
            }
        }
        let _p = profile::scope("spec.commit");
        // A drafter that reads features on the device gets them where the verify left them;
        // otherwise (or when they are not all there) they are read back.
        let on_device = if self.drafter.reads_device_features() {
            self.engine.captured_on_device(rows)
        } else {
            None
        };
        match on_device {
            Some(rows) => self.drafter.commit(&accepted.path, Features::Device(rows)),
            None => {
                let nf = self.drafter.target_layers().len() * self.engine.model.hp.n_embd;
                let features = self.engine.captured_rows(rows);
                debug_assert_eq!(features.len(), rows * nf);
                self.drafter
                    .commit(&accepted.path, Features::Host(features))
            }
        }
    }

    /// Output the step's tokens (accepted drafts, then the target's) with their
    /// log-probabilities; `Some` when generation stops (possibly before the last of them).
    fn emit(&mut self, accepted: Accepted) -> Option<StopReason> {
        let _p = profile::scope("spec.output");
        let before = self.out.tokens.len();
        let mut logprobs = accepted.logprobs.into_iter();
        let tokens = accepted.path[1..]
            .iter()
            .chain(std::iter::once(&accepted.bonus));
        let mut stop = None;
        for &t in tokens {
            if let Some(lp) = logprobs.next() {
                self.out.push_logprob(lp);
            }
            stop = self.out.push(t);
            if stop.is_some() {
                break;
            }
        }
        self.rec.committed(self.out.tokens.len() - before);
        stop
    }
}
