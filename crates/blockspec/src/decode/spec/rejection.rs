//! Acceptance at temperature > 0: which drafts a step keeps.
//!
//! [`AcceptRule::Match`] keeps a draft (the drafter's most likely token) when it equals the
//! target's own draw at its position. Exact, and seed for seed the output of plain sampling, but
//! a draft is kept only with the target's probability of that one token.
//!
//! [`AcceptRule::Rejection`] is speculative rejection sampling with the drafter's probabilities
//! (Leviathan et al. 2023; for trees the recursive rejection sampling over siblings drawn
//! without replacement of Jeon et al. 2024, "Recursive Speculative Decoding", and Yang et al.
//! 2024, "Multi-Candidate Speculative Decoding"). At a node where the target's distribution is
//! `p`, the children's tokens `x1, x2, ..` were drawn one after the other from the proposal `q`
//! without replacement (a chain: one child). Child `xi` is kept with probability
//! `min(1, p(xi) / q(xi))`; after a rejection `p` becomes the residual `norm(max(0, p - q))` and
//! `q` loses `xi` (renormalized). When every child is rejected the node's token is drawn from
//! what `p` has become. Each step's output is distributed exactly as `p` (by induction over the
//! children), so the path is distributed as plain sampling; it keeps a draft with probability
//! `1 - TV(p, q)` at a single child, more with several.
//!
//! What keeps it exact: each child's token is drawn from the proposal given the earlier ones
//! only, the number of children a node has is fixed before the draws (the tree's shape comes
//! from the drafter's ranked candidates, the draws only fill its rank slots), and every
//! acceptance test uses a fresh uniform number.

use crate::decode::sampling::{Distribution, Sampler};

/// How a step at temperature > 0 decides which drafts to keep (greedy decoding always keeps
/// a draft exactly when it is the target's argmax).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AcceptRule {
    /// Drafts are the drafter's most likely tokens, kept when equal to the target's own draw:
    /// the same tokens as plain sampling with the same seed. The default: with DFlash drafters
    /// (the tiny trained one, and the shipped one on the real 1.5B target) it keeps more drafts
    /// than [`Rejection`](AcceptRule::Rejection) (docs/BENCHMARKS.md, "Acceptance at T > 0").
    #[default]
    Match,
    /// Speculative rejection sampling with the drafter's probabilities (drafts drawn from
    /// them, without replacement among a tree node's children). Exact in distribution, not seed
    /// for seed; accepts more than matching when the drafter's distribution is close to the
    /// target's, less when it is flatter than the target's. Needs a drafter with per-position
    /// candidates (DFlash); with other drafters steps use [`Match`](AcceptRule::Match).
    Rejection,
    /// Deliberately biased, for the statistical test's power check only: the `min(1, p/q)`
    /// test of [`Rejection`](AcceptRule::Rejection), but a rejected node's token is drawn from
    /// `p` itself instead of the residual (so drafted tokens come out too often).
    #[doc(hidden)]
    BiasedNoResidual,
}

impl AcceptRule {
    /// Whether steps draw their drafts from the drafter's proposal.
    pub fn samples_drafts(self) -> bool {
        self != AcceptRule::Match
    }
}

/// One node of a rejection-sampling walk. `p`: the target's distribution at the node; `q`: the
/// proposal its children's tokens `children` were drawn from, without replacement, in this
/// order. Returns `Ok(j)` when child `j` is kept, else `Err(token)`: the node's token, drawn
/// from the residual.
pub fn step(
    rule: AcceptRule,
    sampler: &mut Sampler,
    p: Distribution,
    q: &Distribution,
    children: &[u32],
) -> Result<usize, u32> {
    let mut p_cur = p;
    let mut q_cur = q.clone();
    for (j, &x) in children.iter().enumerate() {
        let qx = q_cur.prob_of(x) as f64;
        let px = p_cur.prob_of(x) as f64;
        let u = sampler.uniform() as f64;
        // Keep with probability min(1, px / qx); a token the proposal cannot draw (qx = 0) is
        // never kept.
        if qx > 0.0 && u * qx < px {
            return Ok(j);
        }
        if rule != AcceptRule::BiasedNoResidual {
            // Equal distributions leave no residual (no rejection is then possible but for
            // rounding): keep p.
            if let Some(r) = p_cur.residual(&q_cur) {
                p_cur = r;
            }
        }
        match q_cur.without(x) {
            Some(q) => q_cur = q,
            None => break,
        }
    }
    Err(sampler.draw(&p_cur))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::sampling::SamplingParams;

    fn dist(probs: &[f32]) -> Distribution {
        Distribution {
            tokens: (0..probs.len() as u32).collect(),
            probs: probs.to_vec(),
        }
    }

    /// Monte Carlo over the whole scheme at one node: children drawn without replacement from
    /// `q`, then `step`; the output frequencies against `p`. Returns (max abs error, acceptance).
    fn run(rule: AcceptRule, p: &[f32], q: &[f32], m: usize, n: usize) -> (f64, f64) {
        let mut s = Sampler::new(SamplingParams {
            temperature: 1.0,
            seed: 5,
            ..Default::default()
        });
        let (pd, qd) = (dist(p), dist(q));
        let mut counts = vec![0usize; p.len()];
        let mut kept = 0;
        for _ in 0..n {
            let ch = s.draw_without_replacement(&qd, m);
            let t = match step(rule, &mut s, pd.clone(), &qd, &ch) {
                Ok(j) => {
                    kept += 1;
                    ch[j]
                }
                Err(t) => t,
            };
            counts[t as usize] += 1;
        }
        let err = counts
            .iter()
            .zip(p)
            .map(|(&c, &pp)| (c as f64 / n as f64 - pp as f64).abs())
            .fold(0.0, f64::max);
        (err, kept as f64 / n as f64)
    }

    #[test]
    fn recursive_rejection_keeps_the_target_distribution() {
        let p = [0.5, 0.2, 0.15, 0.1, 0.05];
        let q = [0.1, 0.4, 0.3, 0.1, 0.1];
        let n = 200_000;
        // 5 sigma of a proportion near 0.5 over 200k draws is ~0.0056.
        for m in [1, 2, 3, 5] {
            let (err, acc) = run(AcceptRule::Rejection, &p, &q, m, n);
            assert!(err < 0.0056, "{m} children: max error {err}");
            // One child: 1 - TV(p, q) = sum min(p, q) = 0.6.
            if m == 1 {
                assert!((acc - 0.6).abs() < 0.01, "acceptance {acc}");
            }
        }
        // The biased rule is detectably off.
        let (err, _) = run(AcceptRule::BiasedNoResidual, &p, &q, 2, n);
        assert!(err > 0.02, "biased rule: max error only {err}");
    }

    #[test]
    fn equal_distributions_always_keep_the_first_child() {
        let p = [0.4, 0.3, 0.2, 0.1];
        let (err, acc) = run(AcceptRule::Rejection, &p, &p, 2, 20_000);
        assert_eq!(acc, 1.0);
        assert!(err < 0.02);
    }
}
