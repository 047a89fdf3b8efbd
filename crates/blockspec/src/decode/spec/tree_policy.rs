//! `--spec-tree auto`: whether a step verifies a DDTree instead of the chain the length policy
//! chose, and of which budget, by measured tokens per millisecond.
//!
//! The chain's rate comes from the length policy's model (measured verify costs, per-position
//! acceptance). A tree's acceptance has no such model, so each candidate budget is an arm whose
//! rate is measured: committed tokens over drafting + verify time of the tree steps made with
//! it. Every arm is tried a few times once speculation pays (an arm far slower than the chain
//! after one steady try is not tried again soon), then the fastest of chain and arms is used, and
//! every [`REPROBE_EVERY`] steps the arm measured longest ago runs once so its figure follows the
//! text. Tree steps also feed the chain's acceptance (what the drafter's top-1 chain would have
//! kept, see `SpecRun::chain_equivalent`), so the comparison stays current while trees run.

use super::policy::Ema;

/// Budgets (drafted nodes per tree) tried, up to the largest the target and backend allow.
/// 22 is the budget that won on an RTX 3090 and a Strix Halo in the DFlash/DDTree ports, 8 on
/// a 7900 XTX. 15, not 16: a tree of 15 is a batch of 16 rows, the most our CUDA small-batch
/// kernels take (a 17-row verify of the real 1.5B took 4.49 ms on the H100 against 3.42 ms for
/// 16 rows, 2026-12-07, docs/BENCHMARKS.md).
const BUDGETS: [usize; 5] = [4, 8, 15, 22, 32];
/// The largest budget `auto` tries unless told a smaller one.
pub const MAX_BUDGET: usize = 32;
/// Tries per arm before its rate is trusted.
const TRIES: u32 = 3;
/// Speculative steps between exploration tries (the chain runs in between).
const EXPLORE_EVERY: usize = 4;
/// Steps at least between two re-measurements of an arm.
const REPROBE_EVERY: usize = 32;
/// Re-measuring the arms may cost at most this fraction of the time: an arm slower than the
/// chain is re-measured the less often the slower it is.
const PROBE_SHARE: f64 = 0.02;
/// An arm slower than this fraction of the chain after one steady try counts as explored.
const HOPELESS: f64 = 0.6;

#[derive(Clone, Debug, Default)]
struct Arm {
    budget: usize,
    /// Committed tokens per tree step.
    tokens: Ema,
    /// Drafting + verify milliseconds per tree step.
    ms: Ema,
    tries: u32,
    /// The step count when it last ran.
    last_run: usize,
    /// The step count from which it is due to be measured again.
    next_probe: usize,
}

impl Arm {
    /// Tokens per millisecond: from steady steps, or from cold ones (a freshly built graph,
    /// frequent on hybrid targets whose tree graphs follow the tree's shape) until one is.
    fn rate(&self) -> Option<f64> {
        Some(self.tokens.get()? / self.ms.get()?.max(1e-6))
    }
    /// The rate from steady steps only.
    fn steady_rate(&self) -> Option<f64> {
        Some(self.tokens.get()? / self.ms.steady()?.max(1e-6))
    }
}

/// Chooses between the chain and trees of several budgets.
#[derive(Clone, Debug)]
pub struct TreePolicy {
    max_budget: usize,
    arms: Vec<Arm>,
    steps: usize,
    since_explore: usize,
}

impl TreePolicy {
    /// Arms for the budgets up to `max_budget` (the largest tree the target and backend verify
    /// exactly), which is itself an arm when no listed budget fits.
    pub fn new(max_budget: usize) -> TreePolicy {
        let mut budgets: Vec<usize> = BUDGETS.into_iter().filter(|&b| b <= max_budget).collect();
        if max_budget >= 2 && budgets.last().is_none_or(|&b| b < max_budget) && budgets.len() < 2 {
            budgets.push(max_budget);
        }
        TreePolicy {
            max_budget,
            arms: budgets
                .into_iter()
                .map(|budget| Arm {
                    budget,
                    ..Default::default()
                })
                .collect(),
            steps: 0,
            since_explore: 0,
        }
    }

    /// The largest tree it was made for.
    pub fn max_budget(&self) -> usize {
        self.max_budget
    }

    /// The budgets this policy may choose.
    pub fn budgets(&self) -> Vec<usize> {
        self.arms.iter().map(|a| a.budget).collect()
    }

    /// The tree budget for this step, or `None` for the chain. `chain_rate`: the length
    /// policy's expected tokens per millisecond of its chosen chain; `speculating`: whether
    /// the length policy chose a speculative step at all (trees are tried only then); `room`:
    /// positions left in the context.
    pub fn choose(&mut self, chain_rate: f64, speculating: bool, room: usize) -> Option<usize> {
        self.steps += 1;
        if !speculating {
            return None;
        }
        self.since_explore += 1;
        let fits = |a: &&Arm| a.budget < room;
        // Explore: arms not yet tried enough, one try every few speculative steps.
        if self.since_explore >= EXPLORE_EVERY {
            if let Some(a) = self.arms.iter().filter(fits).find(|a| a.tries < TRIES) {
                self.since_explore = 0;
                return Some(a.budget);
            }
        }
        // Re-measure the most overdue arm, so its figure follows the text.
        let steps = self.steps;
        if let Some(a) = self
            .arms
            .iter()
            .filter(fits)
            .filter(|a| a.tries >= TRIES && a.next_probe <= steps)
            .min_by_key(|a| a.next_probe)
        {
            return Some(a.budget);
        }
        let best = self
            .arms
            .iter()
            .filter(fits)
            .filter(|a| a.tries >= TRIES)
            .filter_map(|a| Some((a.budget, a.rate()?)))
            .max_by(|x, y| x.1.total_cmp(&y.1))?;
        (best.1 > chain_rate).then_some(best.0)
    }

    /// A tree step of `budget` committed `tokens` in `ms` of drafting and verifying (`cold`: on
    /// a freshly built graph). `chain_rate`: the chain's expected rate at the time.
    pub fn record(&mut self, budget: usize, tokens: usize, ms: f64, cold: bool, chain_rate: f64) {
        let (steps, n_arms) = (self.steps, self.arms.len() as f64);
        let Some(a) = self.arms.iter_mut().find(|a| a.budget == budget) else {
            return;
        };
        a.tries += 1;
        a.last_run = steps;
        a.ms.record(ms, cold);
        a.tokens.add(tokens as f64);
        // One re-measurement costs (chain / arm - 1) chain steps; spread so that all arms'
        // together stay within PROBE_SHARE. Until an arm has a steady time it is re-measured
        // soon: on a GPU a budget's first three steps are cold (its graph built, then captured),
        // and spacing by a cold rate put a tree that paid off for thousands of steps.
        let mut every = REPROBE_EVERY;
        if let Some(r) = a.steady_rate() {
            let extra = chain_rate / r.max(1e-9) - 1.0;
            every = every.max((n_arms * extra / PROBE_SHARE).ceil().min(1e6) as usize);
        }
        a.next_probe = steps + every;
        if let Some(r) = a.steady_rate() {
            if r < HOPELESS * chain_rate {
                a.tries = a.tries.max(TRIES);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::graph_cache::COLD_RUNS;

    /// Simulate `steps` speculative steps: the chain commits at `chain_rate` tokens/ms, a tree
    /// of budget b at `tree_rate(b)`. Returns how many steps each budget ran (index by budget)
    /// and the tokens per ms achieved overall.
    fn simulate(
        chain_rate: f64,
        tree_rate: impl Fn(usize) -> f64,
        steps: usize,
    ) -> (Vec<usize>, f64) {
        simulate_cold(chain_rate, tree_rate, 0.0, steps)
    }

    /// [`simulate`], with each budget's first [`COLD_RUNS`] tree steps (a new graph, on a GPU
    /// also captured as a CUDA graph) taking `cold_ms` longer.
    fn simulate_cold(
        chain_rate: f64,
        tree_rate: impl Fn(usize) -> f64,
        cold_ms: f64,
        steps: usize,
    ) -> (Vec<usize>, f64) {
        let mut p = TreePolicy::new(32);
        let mut runs = vec![0usize; 33];
        let (mut tokens, mut ms) = (0.0, 0.0);
        for _ in 0..steps {
            match p.choose(chain_rate, true, 1000) {
                Some(b) => {
                    runs[b] += 1;
                    // Four tokens per step at the arm's rate.
                    let cold = cold_ms > 0.0 && runs[b] <= COLD_RUNS as usize;
                    let step_ms = 4.0 / tree_rate(b) + if cold { cold_ms } else { 0.0 };
                    p.record(b, 4, step_ms, cold, chain_rate);
                    tokens += 4.0;
                    ms += step_ms;
                }
                None => {
                    runs[0] += 1;
                    tokens += 4.0;
                    ms += 4.0 / chain_rate;
                }
            }
        }
        (runs, tokens / ms)
    }

    #[test]
    fn budgets_are_capped_by_the_largest_tree_that_fits() {
        assert_eq!(TreePolicy::new(32).budgets(), vec![4, 8, 15, 22, 32]);
        assert_eq!(TreePolicy::new(20).budgets(), vec![4, 8, 15]);
        // The CPU's exact batches hold a root and 6 nodes.
        assert_eq!(TreePolicy::new(6).budgets(), vec![4, 6]);
        assert_eq!(TreePolicy::new(3).budgets(), vec![3]);
        assert!(TreePolicy::new(1).budgets().is_empty());
    }

    #[test]
    fn the_best_tree_wins_when_trees_pay() {
        // Budget 15 is 1.3x the chain, the others less.
        let rate = |b: usize| if b == 15 { 1.3 } else { 1.05 };
        let (runs, achieved) = simulate(1.0, rate, 400);
        assert!(runs[15] > 300, "{runs:?}");
        assert!(achieved > 1.2, "{achieved}");
    }

    #[test]
    fn graphs_built_by_the_first_tries_do_not_hide_the_best_tree() {
        // On the H100 every tree try of `auto` ran a cold graph (a shape's first three runs
        // are): a tree of 8 nodes, 1.07x the chain there, looked slow, and its next try was
        // put off by hundreds of steps. Here the chain commits 4 tokens in 4 ms, the tree of 8
        // 1.1x as fast, the others slower, and a cold step takes 20 ms more. (Before: after
        // each budget's three cold tries no tree ran in the next 1000 steps; the tree of 8 ran
        // 1538 of 3000.)
        let rate = |b: usize| if b == 8 { 1.1 } else { 0.95 };
        let (runs, achieved) = simulate_cold(1.0, rate, 20.0, 3000);
        assert!(runs[8] > 2400, "{runs:?}");
        assert!(achieved > 1.04, "{achieved}");
    }

    #[test]
    fn the_chain_stays_when_trees_do_not_pay() {
        // Trees at 0.9x (small budgets) down to 0.3x (large) the chain: after the tries, the
        // chain runs, and re-measurements cost little.
        let rate = |b: usize| 0.9 - 0.02 * b as f64;
        let (runs, achieved) = simulate(1.0, rate, 1000);
        assert!(runs[0] > 900, "{runs:?}");
        assert!(achieved > 0.97, "{achieved}");
        // Hopeless arms (below 0.6x after a try) are tried once only at first, and re-measured
        // rarely.
        assert!(runs[32] <= 2, "{runs:?}");
        // With cold first steps (20 ms more each, as on a GPU), every arm runs until it has a
        // steady time, and the chain still keeps nearly all the time (0.952 of its rate; 0.975
        // when cold rates put off the re-measurements, which hid a tree that paid).
        let (runs, achieved) = simulate_cold(1.0, rate, 20.0, 3000);
        assert!(runs[0] > 2800, "{runs:?}");
        assert!(achieved > 0.94, "{achieved}");
    }

    #[test]
    fn no_tree_while_plain_decoding_wins_or_none_fits() {
        let mut p = TreePolicy::new(32);
        for _ in 0..100 {
            assert_eq!(p.choose(1.0, false, 1000), None);
        }
        // Only budgets below the room left are chosen.
        for _ in 0..100 {
            if let Some(b) = p.choose(1.0, true, 9) {
                assert!(b < 9, "budget {b} with 9 positions left");
                p.record(b, 3, 1.0, false, 1.0);
            }
        }
    }

    #[test]
    fn cold_steps_stand_in_until_a_steady_one_replaces_them() {
        let mut p = TreePolicy::new(4);
        p.record(4, 5, 100.0, true, 1.0);
        // A cold 100 ms step stands in, but is no steady measurement: nothing hopeless.
        assert_eq!(p.arms[0].rate(), Some(0.05));
        assert_eq!(p.arms[0].steady_rate(), None);
        assert_eq!(p.arms[0].tries, 1);
        p.record(4, 5, 2.0, false, 1.0);
        assert_eq!(p.arms[0].rate(), Some(2.5));
    }
}
