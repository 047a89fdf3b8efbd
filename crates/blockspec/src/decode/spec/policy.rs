//! How many tokens to verify per step: the length that maximizes expected tokens per second,
//! from measured verify costs on this machine and the running acceptance per draft position.
//!
//! Verifying n tokens commits on average E(n) = 1 + a1 + a1*a2 + ... (n terms) tokens, where ak is
//! the chance draft position k is accepted given the ones before were. It costs the drafter's time
//! plus the target's time for an n-token batch, c(n). Length 1 is plain decoding (no drafter run):
//! rate 1 / c(1). When plain decoding wins, a speculative probe is still made now and then so
//! that the acceptance estimate can recover: within a time budget (a probe's measured extra time
//! at most [`PROBE_BUDGET`] of the plain decoding time since the one before), and at least
//! [`MIN_PROBE`] plain steps apart, a gap that doubles with every probe in a row that did not pay
//! (up to [`MAX_PROBE_GAP`] steps) and goes back to the shortest once one pays. When drafting
//! cannot pay at the measured costs even with every draft accepted, probes only re-measure the
//! costs, [`HOPELESS_PROBE_GAP`] plain steps apart.

use crate::decode::draft::DraftCost;

/// Exponential moving average: the mean of the first `WINDOW` samples, then each new sample
/// weighs 1/`WINDOW`.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Ema<const WINDOW: u32 = 4> {
    value: f64,
    n: u32,
    /// Holds only a cold sample (a freshly built graph, see Engine::last_decode_was_cold):
    /// better than nothing until a steady one arrives and replaces it.
    provisional: bool,
}

impl<const WINDOW: u32> Ema<WINDOW> {
    /// Add a sample; a `cold` one only stands in while nothing else is known.
    pub(super) fn record(&mut self, x: f64, cold: bool) {
        if cold {
            if self.n == 0 {
                self.add(x);
                self.provisional = true;
            }
            return;
        }
        if self.provisional {
            *self = Self::default();
        }
        self.add(x);
    }
    /// A steady (not provisional) value.
    pub(super) fn steady(&self) -> Option<f64> {
        (self.n > 0 && !self.provisional).then_some(self.value)
    }
    pub(super) fn add(&mut self, x: f64) {
        self.n += 1;
        let w = 1.0 / self.n.min(WINDOW) as f64;
        self.value += w * (x - self.value);
    }
    pub(super) fn get(&self) -> Option<f64> {
        (self.n > 0).then_some(self.value)
    }
}

#[derive(Clone, Debug)]
pub struct LengthPolicy {
    max_len: usize,
    /// Fixed length requested by the user (no adaptation).
    fixed: Option<usize>,
    /// Verify time (ms) per batch length 1..=max_len (index n).
    verify_ms: Vec<Ema<COST_WINDOW>>,
    /// Drafting time: per step, or per drafted token (`per_token`).
    draft_ms: Ema<COST_WINDOW>,
    per_token: bool,
    /// Per draft position k (index k-1): decayed accepted / offered counts.
    hits: Vec<f64>,
    trials: Vec<f64>,
    plain_steps_since_probe: usize,
    plain_ms_since_probe: f64,
    /// Extra time of speculative steps over plain decoding of what they committed.
    overhead_ms: Ema,
    /// Probes in a row that cost more than plain decoding of what they committed.
    failed_probes: u32,
    /// The last speculative step chosen was a probe (plain decoding looked faster).
    probing: bool,
    /// The last step chosen was speculative because speculation looked faster (not a probe).
    speculating: bool,
}

const DECAY: f64 = 0.98;
/// Samples the step costs are averaged over. On a shared CPU single steps vary by a third (a
/// plain step of 32 ms took up to 49): over 4 samples, as before, one slow step moved the plain
/// cost by 13%, enough to make a drafter at break-even look worth a probe.
const COST_WINDOW: u32 = 16;
/// Length of the first speculative step.
const FIRST_PROBE_LEN: usize = 4;
/// Plain steps at least between two probes.
const MIN_PROBE: usize = 16;
/// The longest gap (plain steps) that failed probes in a row back off to.
const MAX_PROBE_GAP: usize = 256;
/// Probes may cost at most this fraction of the plain decoding time between them.
const PROBE_BUDGET: f64 = 0.02;
/// Speculation must be expected to beat plain decoding by this fraction before the policy turns
/// to it from plain steps. A switch costs what the rates leave out (a draft model first catches
/// up on the tokens committed since it last ran), and near break-even it gains nothing: without
/// the margin, a draft model about as fast as it would need to be switched back and forth.
const SWITCH_MARGIN: f64 = 0.03;
/// Plain steps between probes once drafting is hopeless ([`LengthPolicy::hopeless`]): only a
/// change in the measured costs could make it pay, and those are re-measured this often.
const HOPELESS_PROBE_GAP: usize = 1024;

impl LengthPolicy {
    /// `max_len`: the longest verify (lengths 1..=max_len). `fixed`: always use this.
    /// `cost`: how the drafter's time grows with the draft length.
    pub fn new(max_len: usize, fixed: Option<usize>, cost: DraftCost) -> LengthPolicy {
        LengthPolicy {
            max_len,
            fixed: fixed.map(|f| f.clamp(1, max_len)),
            verify_ms: vec![Ema::default(); max_len + 1],
            draft_ms: Ema::default(),
            per_token: cost == DraftCost::PerToken,
            hits: vec![0.0; max_len],
            trials: vec![0.0; max_len],
            plain_steps_since_probe: 0,
            plain_ms_since_probe: 0.0,
            overhead_ms: Ema::default(),
            failed_probes: 0,
            probing: false,
            speculating: false,
        }
    }

    pub fn max_len(&self) -> usize {
        self.max_len
    }
    pub fn fixed(&self) -> Option<usize> {
        self.fixed
    }
    /// Measured time of a plain (one-token) step.
    pub fn plain_ms(&self) -> Option<f64> {
        self.verify_ms[1].get()
    }

    /// Acceptance chance of draft position k (1-based): the counts seen there, with a prior
    /// (worth two trials) centred on position k-1's estimate, and on 1/2 for the first. A
    /// position never offered yet is expected to do as well as the one before it: acceptance
    /// changes slowly along the drafts, and the uniform prior made every unexplored position look
    /// like a coin flip, so a drafter accepted 86% of the time was never tried past length 4.
    pub fn accept_prob(&self, k: usize) -> f64 {
        let mut p = 0.5;
        for i in 0..k {
            p = (self.hits[i] + 2.0 * p) / (self.trials[i] + 2.0);
        }
        p
    }

    /// Expected tokens committed by a verify of length n (drafts n-1, plus the bonus).
    pub fn expected_tokens(&self, n: usize) -> f64 {
        let mut e = 1.0;
        let mut p = 1.0;
        for k in 1..n {
            p *= self.accept_prob(k);
            e += p;
        }
        e
    }

    /// Verify cost of n tokens: measured, or interpolated between the nearest measured lengths,
    /// or extrapolated (see below). A length measured cold only (its graph was new) counts at
    /// most what the steady measurements around it suggest, so it gets tried again and measured.
    fn verify_cost(&self, n: usize) -> Option<f64> {
        if let Some(v) = self.verify_ms[n].steady() {
            return Some(v);
        }
        let from_steady = self.cost_between(n);
        match (self.verify_ms[n].get(), from_steady) {
            (Some(cold), Some(est)) => Some(cold.min(est)),
            (Some(cold), None) => Some(cold),
            (None, est) => est.or_else(|| {
                // Nothing steady around: the cold measurements, as for steady ones.
                (1..=self.max_len)
                    .rev()
                    .find_map(|m| self.verify_ms[m].get().map(|v| v * n as f64 / m as f64))
            }),
        }
    }

    /// Cost of length n from the steady measurements of other lengths.
    fn cost_between(&self, n: usize) -> Option<f64> {
        let below = (1..n)
            .rev()
            .find_map(|m| self.verify_ms[m].steady().map(|v| (m, v)));
        let above = (n + 1..=self.max_len).find_map(|m| self.verify_ms[m].steady().map(|v| (m, v)));
        match (below, above) {
            (Some((a, va)), Some((b, vb))) => {
                Some(va + (vb - va) * (n - a) as f64 / (b - a) as f64)
            }
            (Some((_, va)), None) => {
                // Past the longest measured length: as costly as that one. This is optimistic
                // on purpose, so a longer length gets tried once and measured (with a useless
                // drafter no length wins, whatever it costs): batch costs are not smooth (on
                // the H100, ggml verifies 16 tokens faster than 8, a matrix-vector kernel
                // giving way to a matrix-matrix one).
                Some(va)
            }
            (None, Some((_, vb))) => Some(vb),
            (None, None) => None,
        }
    }

    /// Tokens per millisecond expected at length n.
    pub fn rate(&self, n: usize) -> Option<f64> {
        let c = self.verify_cost(n)?;
        if n == 1 {
            return Some(1.0 / c.max(1e-6));
        }
        // Drafting measured cold only (on a freshly built graph) is priced as free once drafts
        // have been accepted, until a steady run says what it costs: a cold run's time is
        // mostly building the graph (on a GPU also capturing it), and pricing that kept a
        // drafter that paid from being taken up for thousands of steps (the probe that would
        // measure it again waits for the budget). With nothing accepted it stands in as
        // measured, so a useless drafter is not tried at every length.
        let draft = match self.draft_ms.steady() {
            Some(d) => d,
            None => {
                let cold = self.draft_ms.get()?;
                if self.hits[0] > 0.0 {
                    0.0
                } else {
                    cold
                }
            }
        };
        let d = self.draft_cost(draft, n);
        Some(self.expected_tokens(n) / (c + d).max(1e-6))
    }

    /// Drafting time for a verify of n tokens, from the recorded `draft_ms` (per step, or per
    /// drafted token).
    fn draft_cost(&self, draft_ms: f64, n: usize) -> f64 {
        if self.per_token {
            draft_ms * (n - 1) as f64
        } else {
            draft_ms
        }
    }

    /// The speculative length with the best expected rate.
    pub fn best_len(&self) -> usize {
        self.best_speculative()
    }

    fn best_speculative(&self) -> usize {
        (2..=self.max_len)
            .max_by(|&a, &b| {
                self.rate(a)
                    .unwrap_or(0.0)
                    .total_cmp(&self.rate(b).unwrap_or(0.0))
            })
            .unwrap_or(self.max_len)
    }

    /// The verify length for the next step (1 = plain decoding).
    pub fn choose(&mut self) -> usize {
        if let Some(f) = self.fixed {
            return f;
        }
        // Measure a plain step first, then a short speculative one (cheap if the drafter is
        // useless); longer lengths are tried when the acceptance seen makes them look worth it.
        if self.verify_ms[1].get().is_none() {
            return 1;
        }
        if self.draft_ms.get().is_none() {
            return self.max_len.min(FIRST_PROBE_LEN);
        }
        let spec = self.best_speculative();
        let spec_rate = self.rate(spec).unwrap_or(0.0);
        let plain_rate = self.rate(1).unwrap_or(0.0);
        // Switching from plain steps to speculation asks for a clear gain, staying does not.
        let margin = if self.speculating {
            1.0
        } else {
            1.0 + SWITCH_MARGIN
        };
        self.speculating = spec_rate >= plain_rate * margin;
        if self.speculating {
            self.plain_steps_since_probe = 0;
            self.plain_ms_since_probe = 0.0;
            self.failed_probes = 0;
            self.probing = false;
            return spec;
        }
        self.plain_steps_since_probe += 1;
        // Probe now and then, so the acceptance estimate can recover when the text turns
        // predictable; but within a budget: a probe's measured extra time must stay under
        // PROBE_BUDGET of the time decoded plainly since the last one, and probes that keep
        // losing come ever further apart.
        let overhead = self.overhead_ms.get().unwrap_or(0.0).max(0.0);
        if self.plain_steps_since_probe >= self.probe_gap()
            && self.plain_ms_since_probe * PROBE_BUDGET >= overhead
        {
            self.plain_steps_since_probe = 0;
            self.plain_ms_since_probe = 0.0;
            self.probing = true;
            return spec;
        }
        1
    }

    /// Drafting cannot pay at the measured costs even if every draft were accepted: at every
    /// speculative length, n tokens take longer than n plain steps, or nearly as long (within
    /// [`SWITCH_MARGIN`], which a switch to speculation asks for): a classic draft model on a
    /// CPU whose verify batches are capped at a few exact rows. Acceptance then does not
    /// matter, so probing for it is wasted. Only steady measurements count (a freshly built
    /// graph's first run is slow), and lengths not measured yet are priced as optimistically as
    /// [`verify_cost`](Self::verify_cost) does, so that they do not make drafting look hopeless.
    pub fn hopeless(&self) -> bool {
        let (Some(plain), Some(draft)) = (self.verify_ms[1].steady(), self.draft_ms.steady())
        else {
            return false;
        };
        let measured = (2..=self.max_len).any(|n| self.verify_ms[n].steady().is_some());
        measured
            && (2..=self.max_len).all(|n| {
                let Some(verify) = self.verify_ms[n].steady().or_else(|| self.cost_between(n))
                else {
                    return false;
                };
                (verify + self.draft_cost(draft, n)) * (1.0 + SWITCH_MARGIN) >= n as f64 * plain
            })
    }

    /// Plain steps at least before the next probe: [`MIN_PROBE`], doubled for each probe in a
    /// row that did not pay, at most [`MAX_PROBE_GAP`]; [`HOPELESS_PROBE_GAP`] when drafting
    /// cannot pay whatever is accepted.
    fn probe_gap(&self) -> usize {
        if self.hopeless() {
            return HOPELESS_PROBE_GAP;
        }
        let shift = self.failed_probes.min(MAX_PROBE_GAP.ilog2());
        (MIN_PROBE << shift).min(MAX_PROBE_GAP)
    }

    /// A verify of n tokens took `ms`; `cold`: it ran a freshly built graph (not a steady cost).
    pub fn record_verify(&mut self, n: usize, ms: f64, cold: bool) {
        self.verify_ms[n].record(ms, cold);
        if n == 1 {
            self.plain_ms_since_probe += ms;
        }
    }

    /// A speculative step took `ms` more than plain decoding of the tokens it committed
    /// (negative when it paid off): the cost of a probe.
    pub fn record_overhead(&mut self, ms: f64) {
        self.overhead_ms.add(ms);
        if std::mem::take(&mut self.probing) {
            self.failed_probes = if ms > 0.0 {
                self.failed_probes.saturating_add(1)
            } else {
                0
            };
        }
    }
    /// A draft of `n_drafts` tokens took `ms` (`cold`: on a freshly built graph).
    pub fn record_draft(&mut self, ms: f64, n_drafts: usize, cold: bool) {
        let ms = if self.per_token {
            ms / n_drafts.max(1) as f64
        } else {
            ms
        };
        self.draft_ms.record(ms, cold);
    }
    /// A verify offered `offered` drafts and accepted the first `accepted` of them.
    pub fn record_accept(&mut self, offered: usize, accepted: usize) {
        for k in 0..self.max_len {
            self.hits[k] *= DECAY;
            self.trials[k] *= DECAY;
        }
        for k in 0..offered.min(accepted + 1) {
            self.trials[k] += 1.0;
            if k < accepted {
                self.hits[k] += 1.0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::draft::model::MAX_CATCH_UP;
    use crate::runtime::graph_cache::COLD_RUNS;

    fn trained(accept_rate: f64, cost: impl Fn(usize) -> f64, draft: f64) -> LengthPolicy {
        let mut p = LengthPolicy::new(16, None, DraftCost::PerStep);
        for n in 1..=16 {
            p.record_verify(n, cost(n), false);
        }
        p.record_draft(draft, 15, false);
        // Feed acceptance: each position accepted with `accept_rate`.
        for i in 0..400 {
            let mut a = 0;
            while a < 15 && ((i * 7919 + a * 104729) % 1000) as f64 / 1000.0 < accept_rate {
                a += 1;
            }
            p.record_accept(15, a);
        }
        p
    }

    #[test]
    fn no_acceptance_means_plain_decoding() {
        // CPU-like costs: verify n costs ~0.45 n plain steps.
        let mut p = trained(0.0, |n| 40.0 * (1.0 + 0.45 * (n as f64 - 1.0)), 8.0);
        let plain = (0..15).filter(|_| p.choose() == 1).count();
        assert_eq!(plain, 15, "random drafter must fall back to plain decoding");
    }

    #[test]
    fn high_acceptance_on_flat_costs_uses_long_verifies() {
        // GPU-like: verify cost almost flat in n.
        let mut p = trained(0.9, |n| 5.0 + 0.05 * n as f64, 1.0);
        let n = p.choose();
        assert!(n >= 8, "chose {n}");
    }

    #[test]
    fn good_short_verifies_lead_to_trying_the_longest() {
        // Only plain steps and 4-token verifies measured so far, 86% of drafts accepted (the
        // replayed tau = 6.55 profile), and a GPU whose 16-token verify is cheaper than an
        // 8-token one: positions never offered borrow the acceptance seen before them, and an
        // unmeasured longer length is assumed as cheap as the longest measured, so the policy
        // goes to the full length and measures it instead of staying short.
        let mut p = LengthPolicy::new(16, None, DraftCost::PerStep);
        p.record_verify(1, 4.3, false);
        p.record_verify(4, 5.9, false);
        p.record_draft(1.9, 3, false);
        for i in 0..200 {
            let mut a = 0;
            while a < 3 && ((i * 7919 + a * 104729) % 1000) < 860 {
                a += 1;
            }
            p.record_accept(3, a);
        }
        assert_eq!(p.choose(), 16);
        // Once measured as expensive, it backs off.
        p.record_verify(16, 60.0, false);
        let n = p.choose();
        assert!(n < 16, "chose {n} after a 60 ms 16-token verify");
    }

    #[test]
    fn cold_timings_stand_in_until_steady_ones_replace_them() {
        let mut p = LengthPolicy::new(16, None, DraftCost::PerStep);
        // A freshly built graph's first run: known, but only until a steady one arrives.
        p.record_verify(1, 40.0, true);
        assert_eq!(p.plain_ms(), Some(40.0));
        p.record_verify(1, 4.0, true); // still cold: ignored, a value exists
        assert_eq!(p.plain_ms(), Some(40.0));
        p.record_verify(1, 4.2, false);
        assert_eq!(p.plain_ms(), Some(4.2));
        // A length measured only cold counts at most what steady neighbours suggest.
        p.record_verify(8, 8.0, false);
        p.record_verify(16, 30.0, true);
        assert_eq!(p.verify_cost(16), Some(8.0));
        p.record_verify(16, 7.5, false);
        assert_eq!(p.verify_cost(16), Some(7.5));
    }

    #[test]
    fn expected_tokens_matches_geometric_series() {
        let mut p = LengthPolicy::new(4, None, DraftCost::PerStep);
        for _ in 0..2000 {
            p.record_accept(3, 3);
        }
        // All accepted: decayed counts saturate at 1/(1-DECAY) = 50; each position's prior (two
        // trials' worth) is centred on the estimate of the position before (1/2 for the first).
        let a1 = (50.0 + 2.0 * 0.5) / 52.0;
        let a2 = (50.0 + 2.0 * a1) / 52.0;
        let a3 = (50.0 + 2.0 * a2) / 52.0;
        let want = 1.0 + a1 + a1 * a2 + a1 * a2 * a3;
        assert!(
            (p.expected_tokens(4) - want).abs() < 1e-3,
            "{}",
            p.expected_tokens(4)
        );
        assert!((p.expected_tokens(1) - 1.0).abs() < 1e-9);
    }

    #[test]
    fn per_token_drafting_cost_shortens_the_verify() {
        // An autoregressive draft model at 0.4 of a target step per token, 80% acceptance, on
        // a CPU-like verify curve: long verifies cost more drafting than they return.
        let cost = |n: usize| 40.0 * (1.0 + 0.3 * (n as f64 - 1.0));
        let mut p = LengthPolicy::new(16, None, DraftCost::PerToken);
        for n in 1..=16 {
            p.record_verify(n, cost(n), false);
        }
        p.record_draft(16.0 * 15.0, 15, false);
        for i in 0..400 {
            let mut a = 0;
            while a < 15 && ((i * 7919 + a * 104729) % 1000) < 800 {
                a += 1;
            }
            p.record_accept(15, a);
        }
        let n = p.choose();
        assert!((2..=6).contains(&n), "chose {n}");
        // The same acceptance with a drafter whose cost does not grow drafts longer.
        let mut q = LengthPolicy::new(16, None, DraftCost::PerStep);
        for n in 1..=16 {
            q.record_verify(n, cost(n), false);
        }
        q.record_draft(16.0, 15, false);
        q.hits.clone_from(&p.hits);
        q.trials.clone_from(&p.trials);
        assert!(q.choose() > n);
    }

    /// Run the policy against a simulated machine: verify cost `cost(n)`, draft cost `draft`
    /// per step, each draft position accepted with chance `a`. Returns the lengths chosen.
    fn simulate(cost: impl Fn(usize) -> f64, draft: f64, a: f64, steps: usize) -> Vec<usize> {
        simulate_with(&mut new_policy(), cost, draft, |_| a, steps)
    }

    fn new_policy() -> LengthPolicy {
        LengthPolicy::new(16, None, DraftCost::PerStep)
    }

    /// Drafts accepted of `offered`, each with chance `a` given the ones before, drawn from
    /// the LCG state `x`.
    fn accepted_drafts(x: &mut u64, a: f64, offered: usize) -> usize {
        let mut acc = 0;
        while acc < offered {
            *x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            if ((*x >> 33) as f64 / (1u64 << 31) as f64) >= a {
                break;
            }
            acc += 1;
        }
        acc
    }

    /// [`simulate`] on a given policy, with acceptance `a(step)` changing over the steps.
    fn simulate_with(
        p: &mut LengthPolicy,
        cost: impl Fn(usize) -> f64,
        draft: f64,
        a: impl Fn(usize) -> f64,
        steps: usize,
    ) -> Vec<usize> {
        let mut x = 12345u64;
        let mut picks = Vec::new();
        for step in 0..steps {
            let n = p.choose();
            picks.push(n);
            p.record_verify(n, cost(n), false);
            if n > 1 {
                p.record_draft(draft, n - 1, false);
                let acc = accepted_drafts(&mut x, a(step), n - 1);
                p.record_accept(n - 1, acc);
                p.record_overhead(draft + cost(n) - (acc + 1) as f64 * cost(1));
            }
        }
        picks
    }

    #[test]
    fn starts_short_and_grows_to_long_verifies_when_they_pay() {
        let picks = simulate(|n| 5.0 + 0.05 * n as f64, 1.0, 0.9, 200);
        assert_eq!(picks[..2], [1, FIRST_PROBE_LEN]);
        let late = &picks[150..];
        let long = late.iter().filter(|&&n| n >= 8).count();
        assert!(long * 2 > late.len(), "late picks {late:?}");
    }

    #[test]
    fn a_useless_drafter_costs_a_few_probes_only() {
        // CPU-like costs, nothing accepted: nearly every step is plain.
        let picks = simulate(|n| 28.0 + 11.0 * (n as f64 - 1.0), 30.0, 0.0, 300);
        let spec = picks.iter().filter(|&&n| n > 1).count();
        assert!(spec <= 8, "{spec} speculative steps of 300");
        assert!(picks.iter().all(|&n| n <= FIRST_PROBE_LEN));
    }

    #[test]
    fn probes_stay_within_their_time_budget() {
        // Nothing accepted; a probe costs 30 ms of drafting + the longer verify.
        let cost = |n: usize| 28.0 + 11.0 * (n as f64 - 1.0);
        let picks = simulate(cost, 30.0, 0.0, 3000);
        let plain_ms: f64 = picks.iter().filter(|&&n| n == 1).map(|_| cost(1)).sum();
        let extra_ms: f64 = picks
            .iter()
            .filter(|&&n| n > 1)
            .map(|&n| 30.0 + cost(n) - cost(1))
            .sum();
        let probes = picks.iter().filter(|&&n| n > 1).count();
        assert!(probes >= 3, "it must keep probing ({probes} probes)");
        // The budget, plus the first speculative step (made before any plain step) and one
        // probe beyond it.
        let one = 30.0 + cost(FIRST_PROBE_LEN) - cost(1);
        assert!(
            extra_ms <= PROBE_BUDGET * plain_ms + 2.0 * one,
            "probes cost {extra_ms} ms over {plain_ms} ms of plain decoding"
        );
    }

    #[test]
    fn probes_that_cost_more_after_long_plain_runs_stay_within_the_budget() {
        // A classic draft model on a CPU: before drafting it catches up on the tokens committed
        // since its last step (up to 32, 8 ms each), so a probe after a long plain run costs
        // far more than the early ones that set the estimate. Nothing is accepted.
        let cost = |n: usize| 55.0 + 20.0 * (n as f64 - 1.0);
        let r = simulate_draft_model(&mut new_policy(), cost, 25.0, 8.0, false, 0, 4000);
        assert!(
            r.extra_ms <= PROBE_BUDGET * r.plain_ms + 2.0 * r.worst,
            "probes cost {:.0} ms over {:.0} ms of plain decoding (worst {:.0})",
            r.extra_ms,
            r.plain_ms,
            r.worst
        );
    }

    #[test]
    fn drafting_that_cannot_pay_is_hopeless_whatever_is_accepted() {
        // A CPU with verifies capped at 3 rows: 2 rows cost 1.43 plain steps, 3 rows 1.6.
        let cost = |n: usize| [0.0, 51.0, 73.0, 82.0][n];
        let costs = |draft_per_token: f64| {
            let mut p = LengthPolicy::new(3, None, DraftCost::PerToken);
            for n in 1..=3 {
                p.record_verify(n, cost(n), false);
            }
            p.record_draft(2.0 * draft_per_token, 2, false);
            p
        };
        // A classic draft model at 40 ms a token: 3 tokens take 162 ms against 153 plainly.
        assert!(costs(40.0).hopeless());
        // At 30 ms a token 3 tokens take 142 ms: it pays if enough is accepted.
        assert!(!costs(30.0).hopeless());
        // Lengths not measured yet are priced optimistically: a 3-row verify priced as a 2-row
        // one (73 + 2 * 35 < 3 * 51, where 2 rows lose: 73 + 35 > 2 * 51).
        let mut p = LengthPolicy::new(3, None, DraftCost::PerToken);
        p.record_verify(1, 51.0, false);
        p.record_verify(2, 73.0, false);
        p.record_draft(35.0, 1, false);
        assert!(!p.hopeless());
        // Cold measurements only: not yet.
        let mut p = LengthPolicy::new(3, None, DraftCost::PerToken);
        p.record_verify(1, 51.0, false);
        p.record_verify(3, 82.0, true);
        p.record_draft(80.0, 2, true);
        assert!(!p.hopeless());
    }

    #[test]
    fn a_hopeless_drafter_is_probed_rarely() {
        // The draft model above, every draft accepted, over 4000 steps: after the probes that
        // measure the costs, one per HOPELESS_PROBE_GAP plain steps.
        let cost = |n: usize| [0.0, 51.0, 73.0, 82.0][n];
        let mut p = LengthPolicy::new(3, None, DraftCost::PerToken);
        let r = simulate_draft_model(&mut p, cost, 40.0, 0.0, true, 0, 4000);
        assert!(p.hopeless());
        assert!(r.spec_steps <= 8, "{} probes", r.spec_steps);
        assert!(
            r.extra_ms <= 0.002 * r.plain_ms,
            "probes cost {:.0} ms over {:.0} ms of plain decoding",
            r.extra_ms,
            r.plain_ms
        );
    }

    #[test]
    fn a_drafter_at_break_even_is_not_switched_to_and_fro() {
        // Measured with the 0.5B draft model for the 1.5B on a 2-core CPU (verifies capped at
        // 3 rows): every draft accepted, 2 tokens in 80.5 ms against 81.4 ms plainly. Each run
        // of speculative steps begins with the draft model's catch-up on the tokens committed
        // meanwhile (up to MAX_CATCH_UP, 5.3 ms each), which the rates do not hold.
        let cost = |n: usize| [0.0, 40.7, 56.9, 75.7][n];
        let mut p = LengthPolicy::new(3, None, DraftCost::PerToken);
        let r = simulate_draft_model(&mut p, cost, 23.6, 5.3, true, 0, 4000);
        // With every draft accepted, `extra_ms` is the time lost against decoding every token
        // plainly.
        assert!(
            r.extra_ms <= 0.01 * r.plain_ms,
            "speculation lost {:.0} ms over {:.0} ms of plain decoding ({} speculative steps)",
            r.extra_ms,
            r.plain_ms,
            r.spec_steps
        );
    }

    /// Totals of a [`simulate_gpu`] run.
    struct GpuRun {
        /// The first step chosen because speculation looked faster (not a probe).
        first_speculating: Option<usize>,
        /// Plain steps after that one.
        plain_after: usize,
        plain_ms: f64,
        /// Speculative steps' time beyond plain decoding of what they committed.
        extra_ms: f64,
    }

    /// Run a policy on GPU-like costs: verify cost `cost(n)` (the plain step's graph warm from
    /// the start, as after a server's warm-up), `draft` ms per drafting step, each draft
    /// position accepted with chance `a`. A graph's first [`COLD_RUNS`] runs cost `cold_ms`
    /// more (built, then captured as a CUDA graph), and every graph is new again each 256
    /// positions (the attended KV span grows).
    fn simulate_gpu(
        cost: impl Fn(usize) -> f64,
        draft: f64,
        a: f64,
        cold_ms: f64,
        steps: usize,
    ) -> GpuRun {
        let mut p = new_policy();
        let mut runs = [0u32; 17];
        runs[1] = COLD_RUNS;
        let mut draft_runs = 0u32;
        let mut x = 12345u64;
        let mut pos = 0usize;
        let mut r = GpuRun {
            first_speculating: None,
            plain_after: 0,
            plain_ms: 0.0,
            extra_ms: 0.0,
        };
        for step in 0..steps {
            let n = p.choose();
            if pos / 256 != (pos + n) / 256 {
                runs = [0; 17];
                draft_runs = 0;
            }
            runs[n] += 1;
            let cold = runs[n] <= COLD_RUNS;
            let verify = cost(n) + if cold { cold_ms } else { 0.0 };
            p.record_verify(n, verify, cold);
            if n == 1 {
                pos += 1;
                r.plain_ms += verify;
                if r.first_speculating.is_some() {
                    r.plain_after += 1;
                }
                continue;
            }
            draft_runs += 1;
            let draft_cold = draft_runs <= COLD_RUNS;
            let drafting = draft + if draft_cold { cold_ms } else { 0.0 };
            p.record_draft(drafting, n - 1, draft_cold);
            let acc = accepted_drafts(&mut x, a, n - 1);
            p.record_accept(n - 1, acc);
            pos += acc + 1;
            let extra = drafting + verify - (acc + 1) as f64 * cost(1);
            r.extra_ms += extra;
            let plain = p.plain_ms().unwrap_or(cost(1));
            p.record_overhead(drafting + verify - (acc + 1) as f64 * plain);
            if p.speculating && r.first_speculating.is_none() {
                r.first_speculating = Some(step);
            }
        }
        r
    }

    #[test]
    fn graphs_built_by_the_first_probes_do_not_hold_speculation_back() {
        // The real 1.5B with its DFlash drafter on the H100: plain step 1.86 ms, verifies
        // 3.2-3.4 ms, drafting 0.55 ms per step; code prompts accept about 3 of 4 drafts.
        // Priced at its cold time, the drafting made speculation look slower than plain steps,
        // and the next probe waited for the budget: it never speculated in 3000 steps.
        let cost = |n: usize| if n == 1 { 1.86 } else { 3.2 + 0.015 * n as f64 };
        let r = simulate_gpu(cost, 0.55, 0.75, 7.0, 3000);
        let first = r.first_speculating.expect("never speculated");
        assert!(first < 200, "speculation began at step {first}");
        assert!(
            r.plain_after < 30,
            "{} plain steps after that",
            r.plain_after
        );
    }

    #[test]
    fn cold_probes_of_a_useless_drafter_stay_cheap() {
        // A random drafter for the Qwen3-8B shape on the H100: plain step 4.24 ms, verifies
        // 5.8-6.5 ms, drafting 1.6 ms; nothing accepted. Probes, cold ones included, cost at
        // most 2.5% of the plain decoding time (2.0% here; keeping cold probes out of the
        // probe budget, tried first, cost 3.0% here and 5% on the H100).
        let cost = |n: usize| if n == 1 { 4.24 } else { 5.6 + 0.05 * n as f64 };
        let r = simulate_gpu(cost, 1.6, 0.0, 7.0, 1016);
        assert!(
            r.extra_ms <= 0.025 * r.plain_ms,
            "probes cost {:.0} ms over {:.0} ms of plain decoding",
            r.extra_ms,
            r.plain_ms
        );
    }

    #[test]
    fn slow_plain_steps_do_not_make_a_hopeless_drafter_worth_probing() {
        // The 0.5B draft model for the 1.5B on a 2-core CPU, as measured in a bench: plain
        // steps 32.5 ms, verifies of 2 and 3 tokens 56.8 and 74.4 ms, 19.7 ms per drafted
        // token: hopeless, all the more since every draft is rejected here. Every 50 plain
        // steps, three in a row take 1.4 times as long (single steps took up to 49 ms in that
        // bench). Averaged over 4 steps, as before, they made plain decoding look 23% slower
        // and drafting worth a probe again.
        let cost = |n: usize| [0.0, 32.5, 56.8, 74.4][n];
        let mut p = LengthPolicy::new(3, None, DraftCost::PerToken);
        let r = simulate_draft_model(&mut p, cost, 19.7, 5.3, false, 50, 4000);
        assert!(p.hopeless());
        assert!(r.spec_steps <= 8, "{} probes", r.spec_steps);
    }

    /// Totals of a [`simulate_draft_model`] run.
    struct DraftModelRun {
        plain_ms: f64,
        spec_steps: usize,
        /// Speculative steps' time beyond plain decoding of what they committed.
        extra_ms: f64,
        /// The most one speculative step cost beyond that.
        worst: f64,
    }

    /// Run `p` against a simulated classic draft model: verify cost `cost(n)`, `draft` ms per
    /// drafted token, and before drafting a catch-up of `catch_up` ms per token committed by
    /// plain steps since its last draft (at most MAX_CATCH_UP of them); every draft accepted or
    /// none. As in the engine, the catch-up is part of the step's overhead, not of the drafting
    /// time. `slow_every` > 0: every so many plain steps three in a row take 1.4 times as long
    /// (a shared CPU's hiccups).
    #[allow(clippy::too_many_arguments)]
    fn simulate_draft_model(
        p: &mut LengthPolicy,
        cost: impl Fn(usize) -> f64,
        draft: f64,
        catch_up: f64,
        accept_all: bool,
        slow_every: usize,
        steps: usize,
    ) -> DraftModelRun {
        let mut r = DraftModelRun {
            plain_ms: 0.0,
            spec_steps: 0,
            extra_ms: 0.0,
            worst: 0.0,
        };
        let mut since = 0usize;
        let mut plain_steps = 0usize;
        for _ in 0..steps {
            let n = p.choose();
            if n == 1 {
                plain_steps += 1;
                let slow = slow_every > 0 && plain_steps % slow_every < 3;
                let ms = cost(1) * if slow { 1.4 } else { 1.0 };
                p.record_verify(1, ms, false);
                r.plain_ms += ms;
                since += 1;
                continue;
            }
            p.record_verify(n, cost(n), false);
            let drafting = draft * (n - 1) as f64;
            let step = drafting + cost(n) + catch_up * since.min(MAX_CATCH_UP) as f64;
            since = 0;
            let accepted = if accept_all { n - 1 } else { 0 };
            p.record_draft(drafting, n - 1, false);
            p.record_accept(n - 1, accepted);
            let extra = step - (accepted + 1) as f64 * cost(1);
            p.record_overhead(extra);
            r.spec_steps += 1;
            r.extra_ms += extra;
            r.worst = r.worst.max(extra);
        }
        r
    }

    /// Indices of the speculative steps.
    fn spec_steps(picks: &[usize]) -> Vec<usize> {
        (0..picks.len()).filter(|&i| picks[i] > 1).collect()
    }

    #[test]
    fn probes_that_keep_losing_come_ever_further_apart() {
        // A cheap drafter on flat (GPU-like) costs, nothing accepted: each probe costs little,
        // so the time budget alone would allow one every MIN_PROBE steps. (It speculates for a
        // while first: on flat costs a small acceptance still looks worth it until the estimate
        // has come down.)
        let picks = simulate(|n| 5.0 + 0.05 * n as f64, 0.1, 0.0, 4000);
        let spec = spec_steps(&picks);
        let gaps: Vec<usize> = spec.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.windows(2).all(|g| g[1] >= g[0]), "gaps {gaps:?}");
        assert!(gaps.last() == Some(&MAX_PROBE_GAP), "gaps {gaps:?}");
        let late = spec.iter().filter(|&&i| i >= 1000).count();
        assert!(late <= 12, "{late} probes in the last 3000 steps");
    }

    #[test]
    fn speculation_is_found_again_when_the_text_turns_predictable() {
        // Nothing accepted for 3000 steps (probes backed off to their longest gap), then 90%:
        // on flat costs speculation pays, and the policy is back at long verifies within about
        // one longest gap.
        let mut p = new_policy();
        let switch = 3000;
        let a = |step: usize| if step < switch { 0.0 } else { 0.9 };
        let picks = simulate_with(&mut p, |n| 5.0 + 0.05 * n as f64, 0.1, a, switch + 600);
        let found = (switch..picks.len())
            .find(|&i| picks[i..i + 20].iter().all(|&n| n >= 8))
            .expect("speculation found again");
        assert!(
            found - switch <= MAX_PROBE_GAP + 64,
            "found {} steps after the switch",
            found - switch
        );
    }

    #[test]
    fn a_probe_that_pays_resets_the_back_off() {
        let mut p = new_policy();
        p.failed_probes = 4;
        assert_eq!(p.probe_gap(), MAX_PROBE_GAP);
        p.probing = true;
        p.record_overhead(-3.0);
        assert_eq!(p.probe_gap(), MIN_PROBE);
        p.probing = true;
        p.record_overhead(2.0);
        p.probing = true;
        p.record_overhead(2.0);
        assert_eq!(p.probe_gap(), 4 * MIN_PROBE);
        // Speculative steps chosen because they pay are no probes.
        p.record_overhead(2.0);
        assert_eq!(p.probe_gap(), 4 * MIN_PROBE);
    }
}
