//! What a speculative generation measured: [`SpecStats`], filled step by step by a
//! [`StepRecorder`].

use std::time::Instant;

/// Statistics of a speculative generation (llama.cpp and z-lab names where they exist).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SpecStats {
    /// Mean tokens committed per target verify step, bonus included.
    pub tau: f64,
    /// Target steps (speculative verifies + plain steps).
    pub steps: usize,
    /// Speculative steps (a drafter ran and its drafts were verified).
    pub spec_steps: usize,
    /// Target graph evaluations after the prompt. Equal to `steps` when a rejection costs no
    /// extra forward (no replay, also on hybrid targets); more if a step had to be split.
    pub target_forwards: u64,
    /// Draft tokens verified.
    pub drafted: usize,
    /// Draft tokens accepted.
    pub accepted: usize,
    /// Acceptance rate per draft position 1..: accepted / offered there.
    pub accept_per_pos: Vec<f64>,
    pub draft_ms: f64,
    pub verify_ms: f64,
    pub sample_ms: f64,
    pub other_ms: f64,
    /// Verify lengths chosen, as (length, count).
    pub lengths: Vec<(usize, usize)>,
    /// DDTree steps by tree budget (drafted nodes), as (budget, count).
    pub trees: Vec<(usize, usize)>,
    /// Tokens committed by each target step (accepted drafts + the target's own token).
    pub accept_lengths: Vec<usize>,
}

/// Milliseconds since `t`.
pub fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

/// Records each step's counts and times; [`finish`](StepRecorder::finish) turns them into
/// [`SpecStats`].
pub struct StepRecorder {
    stats: SpecStats,
    /// Per draft position (index k-1): times it was offered and accepted.
    offered_at: Vec<usize>,
    accepted_at: Vec<usize>,
    /// Steps per verify length (index n).
    length_counts: Vec<usize>,
    /// Tree steps per budget.
    tree_counts: std::collections::BTreeMap<usize, usize>,
    draft_ms: f64,
    verify_ms: f64,
    sample_ms: f64,
    /// The current step's time so far: drafter catch-up, drafting and verifying.
    step_ms: f64,
    /// The current step's verify time.
    step_verify_ms: f64,
}

impl StepRecorder {
    /// A recorder for verify lengths up to `max_verify_len`.
    pub fn new(max_verify_len: usize) -> StepRecorder {
        StepRecorder {
            stats: SpecStats::default(),
            offered_at: vec![0; max_verify_len],
            accepted_at: vec![0; max_verify_len],
            length_counts: vec![0; max_verify_len + 1],
            tree_counts: Default::default(),
            draft_ms: 0.0,
            verify_ms: 0.0,
            sample_ms: 0.0,
            step_ms: 0.0,
            step_verify_ms: 0.0,
        }
    }

    /// A new target step starts.
    pub fn begin_step(&mut self) {
        self.step_ms = 0.0;
        self.step_verify_ms = 0.0;
    }

    /// The drafter caught up on committed tokens in `ms` (part of the step, not of drafting).
    pub fn synced(&mut self, ms: f64) {
        self.step_ms += ms;
    }

    /// The drafter drafted in `ms`.
    pub fn drafted(&mut self, ms: f64) {
        self.draft_ms += ms;
        self.step_ms += ms;
    }

    /// The target verified `n` tokens in `ms`.
    pub fn verified(&mut self, n: usize, ms: f64) {
        self.verify_ms += ms;
        self.step_ms += ms;
        self.step_verify_ms = ms;
        self.length_counts[n] += 1;
        self.stats.steps += 1;
    }

    /// Sampling (the target's draws and the walk over them) took `ms`.
    pub fn sampled(&mut self, ms: f64) {
        self.sample_ms += ms;
    }

    /// A speculative step offered `offered` drafts and the first `accepted` were kept.
    pub fn accepted(&mut self, offered: usize, accepted: usize) {
        self.stats.spec_steps += 1;
        self.stats.drafted += offered;
        self.stats.accepted += accepted;
        for k in 0..offered.min(accepted + 1) {
            self.offered_at[k] += 1;
            if k < accepted {
                self.accepted_at[k] += 1;
            }
        }
    }

    /// The step verified a tree of `budget` nodes.
    pub fn tree(&mut self, budget: usize) {
        *self.tree_counts.entry(budget).or_default() += 1;
    }

    /// The step committed `n` tokens to the output.
    pub fn committed(&mut self, n: usize) {
        self.stats.accept_lengths.push(n);
    }

    /// The current step's time so far (drafter catch-up, drafting, verifying).
    pub fn step_ms(&self) -> f64 {
        self.step_ms
    }

    /// The current step's verify time.
    pub fn step_verify_ms(&self) -> f64 {
        self.step_verify_ms
    }

    /// The statistics of a generation of `n_tokens` that took `predicted_ms` after its prompt.
    pub fn finish(self, n_tokens: usize, predicted_ms: f64) -> SpecStats {
        let mut stats = self.stats;
        stats.tau = if stats.steps > 0 {
            n_tokens as f64 / stats.steps as f64
        } else {
            0.0
        };
        stats.accept_per_pos = self
            .offered_at
            .iter()
            .zip(&self.accepted_at)
            .take_while(|(o, _)| **o > 0)
            .map(|(&o, &a)| a as f64 / o as f64)
            .collect();
        stats.draft_ms = self.draft_ms;
        stats.verify_ms = self.verify_ms;
        stats.sample_ms = self.sample_ms;
        stats.other_ms = (predicted_ms - self.draft_ms - self.verify_ms - self.sample_ms).max(0.0);
        stats.lengths = self
            .length_counts
            .iter()
            .enumerate()
            .filter(|(_, &c)| c > 0)
            .map(|(n, &c)| (n, c))
            .collect();
        stats.trees = self.tree_counts.into_iter().collect();
        stats
    }
}
