//! DDTree draft trees (Ringel & Romano, arXiv 2604.12989): from the per-depth top-K of one
//! block drafter forward, the nodes a tree verify checks and the walk of the target's choices
//! through them.
//!
//! A node is a rank prefix `(r1, .., rd)`: at depth d it holds the drafter's rank-`rd`
//! candidate for position d, below the node `(r1, .., r(d-1))`. Its score is the sum of the
//! log-probabilities of its ranks. The tree is built best first: a max-heap starts with `(0)`;
//! each pop adds the node, then pushes its next sibling `(.., rd + 1)` and its first child
//! `(.., rd, 0)`, until `budget` nodes (the root, the last committed token, not counted). Every
//! node is popped after its parent, so the tree is prefix-closed and parents come first.
//!
//! Deterministic for equal inputs. Tie rule (the reference's, whose heap holds
//! `(-score, ranks, ..)` tuples): of equal scores the lexicographically smaller rank sequence
//! pops first, a prefix before its extensions. Scores are accumulated in f64 exactly as the
//! reference does (a sibling's score is its node's minus the node's log-probability plus the
//! sibling's), so the same inputs give the same trees bit for bit. Non-finite log-probabilities
//! count as [`MIN_LOGPROB`].

pub use crate::decode::draft::DraftTopK;
use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// What a log-probability that is not finite (an underflow, a NaN) counts as.
pub const MIN_LOGPROB: f64 = -1e30;

/// The rank-`r` log-probability at depth `d` (1-based), as the builder scores it.
fn lp(c: &DraftTopK, d: usize, r: usize) -> f64 {
    let x = c.logprobs[(d - 1) * c.k + r] as f64;
    if x.is_finite() {
        x
    } else {
        MIN_LOGPROB
    }
}

/// A draft tree: entry 0 is the root (the last committed token, which the verify evaluates
/// first), entries 1.. the nodes in the order they were added (every parent before its
/// children).
#[derive(Clone, Debug, PartialEq)]
pub struct DraftTree {
    /// Token of each entry.
    pub tokens: Vec<u32>,
    /// Parent entry of each entry (the root's is 0).
    pub parents: Vec<usize>,
    /// Depth of each entry (the root's is 0): its position is the root's plus this.
    pub depths: Vec<usize>,
    /// Rank of each entry among its depth's candidates (the root's is 0).
    pub ranks: Vec<usize>,
    /// Each entry's children, as (token, entry).
    children: Vec<Vec<(u32, usize)>>,
}

/// A heap candidate: a rank prefix not in the tree yet.
struct Candidate {
    score: f64,
    ranks: Vec<u32>,
    parent: usize,
    depth: usize,
    rank: usize,
}

impl PartialEq for Candidate {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Candidate {}
impl PartialOrd for Candidate {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Candidate {
    /// Greater pops first: the higher score, then the smaller rank sequence.
    fn cmp(&self, o: &Self) -> Ordering {
        self.score
            .total_cmp(&o.score)
            .then_with(|| o.ranks.cmp(&self.ranks))
    }
}

impl DraftTree {
    /// A tree of the root alone.
    pub fn root(token: u32) -> DraftTree {
        DraftTree {
            tokens: vec![token],
            parents: vec![0],
            depths: vec![0],
            ranks: vec![0],
            children: vec![Vec::new()],
        }
    }

    /// Build the tree below `root` from `cand` with at most `budget` nodes (fewer only when
    /// `cand` has fewer rank prefixes). With `chain_seed`, the drafter's top-1 chain (down to
    /// depth `min(depth, budget)`) goes in first and the best-first expansion fills the rest,
    /// starting from the chain's rank-1 siblings (as Luce's DFlash server does; it helped a
    /// quantized target).
    pub fn build(root: u32, cand: &DraftTopK, budget: usize, chain_seed: bool) -> DraftTree {
        let mut t = DraftTree::root(root);
        let depth_limit = cand.depth();
        let k = cand.k.min(budget);
        if budget == 0 || depth_limit == 0 || k == 0 {
            return t;
        }
        let mut heap = BinaryHeap::new();
        if chain_seed {
            let (mut parent, mut score, mut ranks) = (0, 0.0f64, Vec::new());
            for d in 1..=depth_limit.min(budget) {
                if k > 1 {
                    let mut r = ranks.clone();
                    r.push(1);
                    heap.push(Candidate {
                        score: score + lp(cand, d, 1),
                        ranks: r,
                        parent,
                        depth: d,
                        rank: 1,
                    });
                }
                score += lp(cand, d, 0);
                ranks.push(0);
                parent = t.add(parent, d, 0, cand.id(d, 0));
            }
        } else {
            heap.push(Candidate {
                score: lp(cand, 1, 0),
                ranks: vec![0],
                parent: 0,
                depth: 1,
                rank: 0,
            });
        }
        while t.n_nodes() < budget {
            let Some(c) = heap.pop() else { break };
            let node = t.add(c.parent, c.depth, c.rank, cand.id(c.depth, c.rank));
            if c.rank + 1 < k {
                let mut r = c.ranks.clone();
                *r.last_mut().expect("a rank") += 1;
                heap.push(Candidate {
                    score: c.score - lp(cand, c.depth, c.rank) + lp(cand, c.depth, c.rank + 1),
                    ranks: r,
                    parent: c.parent,
                    depth: c.depth,
                    rank: c.rank + 1,
                });
            }
            if c.depth < depth_limit {
                let mut r = c.ranks;
                r.push(0);
                heap.push(Candidate {
                    score: c.score + lp(cand, c.depth + 1, 0),
                    ranks: r,
                    parent: node,
                    depth: c.depth + 1,
                    rank: 0,
                });
            }
        }
        t
    }

    fn add(&mut self, parent: usize, depth: usize, rank: usize, token: u32) -> usize {
        let i = self.tokens.len();
        self.tokens.push(token);
        self.parents.push(parent);
        self.depths.push(depth);
        self.ranks.push(rank);
        self.children.push(Vec::new());
        self.children[parent].push((token, i));
        i
    }

    /// Entries: the root and the nodes (the verify's rows before padding).
    pub fn n_entries(&self) -> usize {
        self.tokens.len()
    }

    /// Nodes (the root not counted).
    pub fn n_nodes(&self) -> usize {
        self.tokens.len() - 1
    }

    /// The deepest node's depth.
    pub fn max_depth(&self) -> usize {
        self.depths.iter().copied().max().unwrap_or(0)
    }

    /// The same shape with other tokens: the node of rank `r` at depth `d` gets
    /// `tokens_at[d - 1][r]`. Nodes whose rank has no token there are left out, with their
    /// descendants. (Rejection sampling puts tokens drawn without replacement from the drafter's
    /// proposal in the rank slots; the shape, built from the ranked candidates, does not depend
    /// on the draws.)
    pub fn relabel(&self, tokens_at: &[Vec<u32>]) -> DraftTree {
        let mut t = DraftTree::root(self.tokens[0]);
        // Entry of each old entry in the new tree.
        let mut map = vec![None; self.n_entries()];
        map[0] = Some(0);
        for i in 1..self.n_entries() {
            let (d, r) = (self.depths[i], self.ranks[i]);
            let Some(parent) = map[self.parents[i]] else {
                continue;
            };
            if let Some(&tok) = tokens_at.get(d - 1).and_then(|row| row.get(r)) {
                map[i] = Some(t.add(parent, d, r, tok));
            }
        }
        t
    }

    /// The children of entry `i` as (token, entry), in the order they were added: increasing
    /// rank.
    pub fn children_of(&self, i: usize) -> &[(u32, usize)] {
        &self.children[i]
    }

    /// The child of entry `i` holding `token`, if any.
    pub fn child(&self, i: usize, token: u32) -> Option<usize> {
        self.children[i]
            .iter()
            .find(|&&(t, _)| t == token)
            .map(|&(_, c)| c)
    }

    /// The entries entry `i` attends to in the verify: the root, its ancestors and itself, in
    /// increasing order.
    pub fn visible(&self, i: usize) -> Vec<usize> {
        let mut v = vec![i];
        let mut j = i;
        while j != 0 {
            j = self.parents[j];
            v.push(j);
        }
        v.reverse();
        v
    }

    /// Follow the target from the root: `pick(i)` is the target's token after entry `i` (each
    /// called once, in path order); step into the child holding it while there is one. Returns
    /// the accepted entries (the root first) and the target's token after the last of them.
    pub fn walk(&self, mut pick: impl FnMut(usize) -> u32) -> (Vec<usize>, u32) {
        let mut path = vec![0];
        let mut i = 0;
        loop {
            let t = pick(i);
            match self.child(i, t) {
                Some(c) => {
                    path.push(c);
                    i = c;
                }
                None => return (path, t),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(depth: usize, k: usize, seed: u64) -> DraftTopK {
        let mut s = seed;
        let mut ids = Vec::new();
        let mut lps = Vec::new();
        for _ in 0..depth {
            let mut row: Vec<f32> = (0..k)
                .map(|_| {
                    s = s
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    -((s >> 40) as f32 / (1u64 << 24) as f32) * 4.0
                })
                .collect();
            row.sort_by(|a, b| b.total_cmp(a));
            lps.extend(row);
            ids.extend((0..k as u32).map(|r| 100 + r));
        }
        DraftTopK {
            k,
            ids,
            logprobs: lps,
        }
    }

    fn prefix_closed(t: &DraftTree) {
        for i in 1..t.n_entries() {
            let p = t.parents[i];
            assert!(p < i, "parent after child");
            assert_eq!(t.depths[i], t.depths[p] + 1);
        }
    }

    #[test]
    fn best_first_is_prefix_closed_and_within_budget() {
        for budget in [1, 4, 8, 16, 22, 32] {
            let t = DraftTree::build(7, &cand(15, budget, budget as u64), budget, false);
            assert_eq!(t.n_nodes(), budget);
            prefix_closed(&t);
        }
    }

    #[test]
    fn chain_seed_puts_the_top1_chain_first() {
        let c = cand(6, 8, 3);
        let t = DraftTree::build(7, &c, 10, true);
        assert_eq!(t.n_nodes(), 10);
        prefix_closed(&t);
        for d in 1..=6 {
            assert_eq!(t.parents[d], d - 1);
            assert_eq!(t.tokens[d], c.ids[(d - 1) * 8]);
        }
        // A budget below the depth: the chain alone.
        let t = DraftTree::build(7, &c, 3, true);
        assert_eq!(t.tokens, vec![7, c.ids[0], c.ids[8], c.ids[16]]);
    }

    #[test]
    fn relabel_fills_rank_slots_and_drops_ranks_without_a_token() {
        let c = cand(4, 3, 9);
        let t = DraftTree::build(7, &c, 10, false);
        // Every rank slot filled: the same shape, tokens 1000 * depth + rank.
        let all: Vec<Vec<u32>> = (1..=4)
            .map(|d| (0..3).map(|r| 1000 * d + r).collect())
            .collect();
        let r = t.relabel(&all);
        assert_eq!(
            (&r.parents, &r.depths, &r.ranks),
            (&t.parents, &t.depths, &t.ranks)
        );
        for i in 1..r.n_entries() {
            assert_eq!(r.tokens[i], 1000 * r.depths[i] as u32 + r.ranks[i] as u32);
        }
        // One token per depth: the rank-0 chain only.
        let one: Vec<Vec<u32>> = all.iter().map(|row| row[..1].to_vec()).collect();
        let r = t.relabel(&one);
        prefix_closed(&r);
        assert!(r.ranks.iter().all(|&k| k == 0));
        // The rank-0 chain of the best-first tree (its first node is rank 0 at depth 1).
        let chain = (1..t.n_entries())
            .filter(|&i| t.visible(i).iter().all(|&a| t.ranks[a] == 0))
            .count();
        assert!(chain >= 1);
        assert_eq!(r.n_nodes(), chain);
        for i in 1..r.n_entries() {
            assert_eq!(r.parents[i], i - 1);
        }
    }

    #[test]
    fn walk_follows_children_and_returns_the_bonus() {
        let c = cand(3, 2, 1);
        let t = DraftTree::build(7, &c, 6, false);
        // The target agrees with the first child at each step, then says 5.
        let (path, bonus) = t.walk(|i| t.children[i].first().map_or(5, |&(tok, _)| tok));
        assert_eq!(bonus, 5);
        assert_eq!(path[0], 0);
        for w in path.windows(2) {
            assert_eq!(t.parents[w[1]], w[0]);
        }
        assert!(t.children[*path.last().unwrap_or(&0)].is_empty());
    }
}
