//! Checking drafts against the target: a [`Verifier`] evaluates a step's batch in one target
//! call and walks the target's answer into the accepted path and the target's own next token.
//! [`ChainVerifier`] checks a chain of drafts; [`TreeVerifier`] a DDTree of them.

use crate::decode::generate::TokenLogprob;
use crate::decode::sampling::Sampler;
use crate::decode::spec::replay::ReplayAcceptance;
use crate::decode::spec::tree::DraftTree;
use crate::runtime::engine::tree::TreeBatch;
use crate::runtime::engine::{Engine, Logits, Outputs};
use anyhow::Result;

/// The target's answer for a verified batch: logits to sample each row from, or (greedy on a
/// GPU) each row's argmax, computed on the device.
pub enum Verdict {
    /// Every row's logits.
    Logits(Logits),
    /// Every row's most likely token.
    Ids(Vec<u32>),
}

impl Verdict {
    /// The target's token after row `k`.
    fn pick(&self, k: usize, sampler: &mut Sampler) -> u32 {
        match self {
            Verdict::Logits(l) => sampler.sample(l.row(k)),
            Verdict::Ids(ids) => ids[k],
        }
    }
}

/// What one step accepted.
pub struct Accepted {
    /// The batch tokens whose target state is kept, in order: the step's first token (committed
    /// by the step before, evaluated by this one) and the drafts accepted after it.
    pub path: Vec<u32>,
    /// The target's own token after the path: committed now, evaluated by the next step.
    pub bonus: u32,
    /// Log-probabilities of the accepted drafts and the bonus, in order (empty when not asked
    /// for, or when the acceptance was replayed).
    pub logprobs: Vec<TokenLogprob>,
    /// The batch rows of `path` when they are not its first `path.len()` rows (a tree: the
    /// target's state is then compacted to the path).
    pub rows: Option<Vec<usize>>,
}

impl Accepted {
    /// Drafts accepted.
    pub fn n_drafts(&self) -> usize {
        self.path.len() - 1
    }
}

/// How a step's drafts are checked against the target.
pub trait Verifier {
    /// Evaluate `batch` (the step's first token, then its drafts) on the target at its next
    /// position, keeping what the walk needs of every row.
    fn evaluate(&mut self, engine: &mut Engine, batch: &[u32]) -> Result<Verdict>;
    /// Walk the target's verdict on `batch` into the accepted path and the target's own next
    /// token, drawing each target token once with `sampler`. With `replay`, a drawn number of
    /// drafts is kept instead of those the target agrees with (timing only).
    fn walk(
        &self,
        verdict: &Verdict,
        batch: &[u32],
        sampler: &mut Sampler,
        replay: Option<&mut ReplayAcceptance>,
    ) -> Accepted;
}

/// Verifies a chain of drafts: one batch of the step's first token and its drafts, accepted up
/// to the first draft that differs from the target's draw at that position.
pub struct ChainVerifier {
    /// Read back only each row's argmax, computed on the device (greedy, no log-probabilities).
    pub device_argmax: bool,
    /// Record each committed token's log-probability with this many top candidates.
    pub logprobs: Option<usize>,
}

impl Verifier for ChainVerifier {
    fn evaluate(&mut self, engine: &mut Engine, batch: &[u32]) -> Result<Verdict> {
        Ok(if self.device_argmax {
            Verdict::Ids(engine.decode_argmax(batch, Outputs::All)?)
        } else {
            Verdict::Logits(engine.decode(batch, Outputs::All)?)
        })
    }

    fn walk(
        &self,
        verdict: &Verdict,
        batch: &[u32],
        sampler: &mut Sampler,
        replay: Option<&mut ReplayAcceptance>,
    ) -> Accepted {
        // The target's draw at row k is the token at the batch's position k+1.
        let mut k = 0; // drafts accepted
        let mut logprobs = Vec::new();
        let bonus = if let Some(r) = replay {
            // Replay: keep a drawn number of drafts whatever the target says, then take the
            // target's token after them (same verify and commit work as a real step).
            k = r.draw(batch.len() - 1);
            let t = verdict.pick(k, sampler);
            sampler.accept(t);
            t
        } else {
            loop {
                let t = verdict.pick(k, sampler);
                sampler.accept(t);
                if let (Some(n_top), Verdict::Logits(l)) = (self.logprobs, verdict) {
                    logprobs.push(TokenLogprob::new(l.row(k), t, n_top));
                }
                if k + 1 < batch.len() && batch[k + 1] == t {
                    k += 1;
                    continue;
                }
                break t;
            }
        };
        Accepted {
            path: batch[..=k].to_vec(),
            bonus,
            logprobs,
            rows: None,
        }
    }
}

/// Verifies a DDTree of drafts (see [`tree`](crate::decode::spec::tree)) in one target
/// forward: the step's first token and the tree's nodes, padded to `1 + budget` rows. The walk
/// follows the target's draw from the root while it is a child; the path and the target's
/// token after it are committed, so the output is the target's at any temperature.
pub struct TreeVerifier {
    /// Nodes per tree (the root not counted).
    pub budget: usize,
    /// Put the drafter's top-1 chain in first (see [`DraftTree::build`]).
    pub chain_seed: bool,
    /// Read back only each row's argmax, computed on the device (greedy, no log-probabilities).
    pub device_argmax: bool,
    /// Record each committed token's log-probability with this many top candidates.
    pub logprobs: Option<usize>,
    /// The tree of the current step.
    tree: DraftTree,
}

impl TreeVerifier {
    /// A verifier of trees of `budget` nodes.
    pub fn new(budget: usize, device_argmax: bool, logprobs: Option<usize>) -> TreeVerifier {
        TreeVerifier {
            budget,
            chain_seed: false,
            device_argmax,
            logprobs,
            tree: DraftTree::root(0),
        }
    }

    /// Rows of every tree verify: the root and `budget` nodes (a smaller tree is padded).
    pub fn batch_rows(&self) -> usize {
        1 + self.budget
    }

    /// Build the step's tree below `last` from the drafter's candidates; returns its tokens
    /// (the batch to evaluate).
    pub fn plan(&mut self, last: u32, cand: &crate::decode::draft::DraftTopK) -> Vec<u32> {
        self.tree = DraftTree::build(last, cand, self.budget, self.chain_seed);
        self.tree.tokens.clone()
    }

    /// The current step's tree.
    pub fn tree(&self) -> &DraftTree {
        &self.tree
    }
}

impl Verifier for TreeVerifier {
    fn evaluate(&mut self, engine: &mut Engine, batch: &[u32]) -> Result<Verdict> {
        let t = &self.tree;
        if batch != &t.tokens[..] {
            anyhow::bail!("tree verify: the batch is not the planned tree's");
        }
        let tb = TreeBatch {
            tokens: &t.tokens,
            parents: &t.parents,
            depths: &t.depths,
        };
        let rows = self.batch_rows();
        Ok(if self.device_argmax {
            Verdict::Ids(engine.decode_tree_argmax(tb, rows)?)
        } else {
            Verdict::Logits(engine.decode_tree(tb, rows)?)
        })
    }

    fn walk(
        &self,
        verdict: &Verdict,
        batch: &[u32],
        sampler: &mut Sampler,
        replay: Option<&mut ReplayAcceptance>,
    ) -> Accepted {
        let t = &self.tree;
        let mut logprobs = Vec::new();
        let (rows, bonus) = if let Some(r) = replay {
            // Replay: go a drawn number of levels down the first children (the drafter's most
            // likely continuations), then take the target's token there.
            let k = r.draw(t.max_depth());
            let mut rows = vec![0];
            for _ in 0..k {
                let i = *rows.last().expect("the root");
                let Some(c) = (1..t.n_entries()).find(|&c| t.parents[c] == i) else {
                    break;
                };
                rows.push(c);
            }
            let last = *rows.last().expect("the root");
            let b = verdict.pick(last, sampler);
            sampler.accept(b);
            (rows, b)
        } else {
            t.walk(|i| {
                let tok = verdict.pick(i, sampler);
                sampler.accept(tok);
                if let (Some(n_top), Verdict::Logits(l)) = (self.logprobs, verdict) {
                    logprobs.push(TokenLogprob::new(l.row(i), tok, n_top));
                }
                tok
            })
        };
        Accepted {
            path: rows.iter().map(|&i| batch[i]).collect(),
            bonus,
            logprobs,
            rows: Some(rows),
        }
    }
}
