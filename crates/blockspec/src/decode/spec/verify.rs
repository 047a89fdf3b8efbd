//! Checking drafts against the target: a [`Verifier`] evaluates a step's batch in one target
//! call and walks the target's answer into the accepted path and the target's own next token.
//! [`ChainVerifier`] checks a chain of drafts; [`TreeVerifier`] a DDTree of them.

use crate::decode::draft::DraftTopK;
use crate::decode::generate::TokenLogprob;
use crate::decode::sampling::{Distribution, Sampler};
use crate::decode::spec::rejection::{self, AcceptRule};
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
    /// The rule of rejection-sampled steps (see [`rejection`]).
    pub rule: AcceptRule,
    /// The current step's proposal per draft (the distribution each draft was drawn from)
    /// when its drafts were sampled for rejection sampling; empty: drafts are matched.
    pub proposals: Vec<Distribution>,
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
        } else if let (false, Verdict::Logits(l)) = (self.proposals.is_empty(), verdict) {
            // Rejection sampling: draft k+1 was drawn from proposals[k].
            loop {
                let p = sampler.distribution(l.row(k));
                let next = batch.get(k + 1).filter(|_| k < self.proposals.len());
                let (q, children) = match next {
                    Some(x) => (&self.proposals[k], std::slice::from_ref(x)),
                    None => (&EMPTY, &[][..]),
                };
                let (t, kept) = match rejection::step(self.rule, sampler, p, q, children) {
                    Ok(_) => (batch[k + 1], true),
                    Err(t) => (t, false),
                };
                sampler.accept(t);
                if let Some(n_top) = self.logprobs {
                    logprobs.push(TokenLogprob::new(l.row(k), t, n_top));
                }
                if kept {
                    k += 1;
                    continue;
                }
                break t;
            }
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

/// The proposal of a node without children (never read).
static EMPTY: Distribution = Distribution {
    tokens: Vec::new(),
    probs: Vec::new(),
};

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
    /// The rule of rejection-sampled steps (see [`rejection`]).
    pub rule: AcceptRule,
    /// The tree of the current step.
    tree: DraftTree,
    /// The current step's proposal per depth (index depth - 1) when its nodes' tokens were
    /// drawn from it for rejection sampling; empty: the drafter's ranked candidates, matched.
    proposals: Vec<Distribution>,
}

impl TreeVerifier {
    /// A verifier of trees of `budget` nodes.
    pub fn new(budget: usize, device_argmax: bool, logprobs: Option<usize>) -> TreeVerifier {
        TreeVerifier {
            budget,
            chain_seed: false,
            device_argmax,
            logprobs,
            rule: AcceptRule::default(),
            tree: DraftTree::root(0),
            proposals: Vec::new(),
        }
    }

    /// Rows of every tree verify: the root and `budget` nodes (a smaller tree is padded).
    pub fn batch_rows(&self) -> usize {
        1 + self.budget
    }

    /// Build the step's tree below `last` from the drafter's candidates; returns its tokens
    /// (the batch to evaluate). With `sampler` (sampling at T > 0 under a rule that samples
    /// drafts), the shape comes from the ranked candidates and each depth's rank slots are
    /// filled with tokens drawn without replacement from the drafter's proposal there (see
    /// [`rejection`]); without, the candidates themselves (matched against the target's draws).
    pub fn plan(&mut self, last: u32, cand: &DraftTopK, sampler: Option<&mut Sampler>) -> Vec<u32> {
        let shape = DraftTree::build(last, cand, self.budget, self.chain_seed);
        self.proposals.clear();
        self.tree = match sampler {
            Some(s) if self.rule.samples_drafts() && !s.params.is_greedy() => {
                let depth = shape.max_depth();
                // Rank slots used per depth.
                let mut slots = vec![0usize; depth];
                for i in 1..shape.n_entries() {
                    let d = shape.depths[i] - 1;
                    slots[d] = slots[d].max(shape.ranks[i] + 1);
                }
                let mut tokens_at = Vec::with_capacity(depth);
                for (d, &m) in slots.iter().enumerate() {
                    let row = d * cand.k..(d + 1) * cand.k;
                    let Some(q) = s.proposal(&cand.ids[row.clone()], &cand.logprobs[row]) else {
                        break;
                    };
                    tokens_at.push(s.draw_without_replacement(&q, m));
                    self.proposals.push(q);
                }
                shape.relabel(&tokens_at)
            }
            _ => shape,
        };
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
        } else if let (false, Verdict::Logits(l)) = (self.proposals.is_empty(), verdict) {
            // Rejection sampling down the tree: at each node its children, drawn without
            // replacement from the proposal of their depth.
            let (mut path, mut i) = (vec![0], 0);
            loop {
                let p = sampler.distribution(l.row(i));
                let children = t.children_of(i);
                let q = self.proposals.get(t.depths[i]).unwrap_or(&EMPTY);
                let toks: Vec<u32> = children.iter().map(|&(tok, _)| tok).collect();
                let step = rejection::step(self.rule, sampler, p, q, &toks);
                let tok = match step {
                    Ok(j) => toks[j],
                    Err(tok) => tok,
                };
                sampler.accept(tok);
                if let Some(n_top) = self.logprobs {
                    logprobs.push(TokenLogprob::new(l.row(i), tok, n_top));
                }
                match step {
                    Ok(j) => {
                        i = children[j].1;
                        path.push(i);
                    }
                    Err(_) => break (path, tok),
                }
            }
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
