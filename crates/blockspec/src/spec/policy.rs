//! How many tokens to verify per step: the length that maximizes expected tokens per second,
//! from measured verify costs on this machine and the running acceptance per draft position.
//!
//! Verifying n tokens commits on average E(n) = 1 + a1 + a1*a2 + ... (n terms) tokens, where ak is
//! the chance draft position k is accepted given the ones before were. It costs the drafter's time
//! plus the target's time for an n-token batch, c(n). Length 1 is plain decoding (no drafter run):
//! rate 1 / c(1). When plain decoding wins, a speculative probe is still made now and then (with a
//! growing interval while probes keep losing) so that the acceptance estimate can recover.

/// Exponential moving average.
#[derive(Clone, Copy, Debug, Default)]
struct Ema {
    value: f64,
    n: u32,
}

impl Ema {
    fn add(&mut self, x: f64) {
        self.n += 1;
        let w = if self.n < 4 {
            1.0 / self.n as f64
        } else {
            0.25
        };
        self.value += w * (x - self.value);
    }
    fn get(&self) -> Option<f64> {
        (self.n > 0).then_some(self.value)
    }
}

#[derive(Clone, Debug)]
pub struct LengthPolicy {
    max_len: usize,
    /// Fixed length requested by the user (no adaptation).
    fixed: Option<usize>,
    /// Verify time (ms) per batch length 1..=max_len (index n).
    verify_ms: Vec<Ema>,
    draft_ms: Ema,
    /// Per draft position k (index k-1): decayed accepted / offered counts.
    hits: Vec<f64>,
    trials: Vec<f64>,
    plain_steps_since_probe: usize,
    probe_interval: usize,
}

const DECAY: f64 = 0.98;
const MIN_PROBE: usize = 16;
const MAX_PROBE: usize = 256;

impl LengthPolicy {
    /// `max_len`: the drafter's block size (verify lengths 1..=max_len). `fixed`: always use this.
    pub fn new(max_len: usize, fixed: Option<usize>) -> LengthPolicy {
        LengthPolicy {
            max_len,
            fixed: fixed.map(|f| f.clamp(1, max_len)),
            verify_ms: vec![Ema::default(); max_len + 1],
            draft_ms: Ema::default(),
            hits: vec![0.0; max_len],
            trials: vec![0.0; max_len],
            plain_steps_since_probe: 0,
            probe_interval: MIN_PROBE,
        }
    }

    /// Acceptance chance of draft position k (1-based), with a uniform prior.
    pub fn accept_prob(&self, k: usize) -> f64 {
        (self.hits[k - 1] + 1.0) / (self.trials[k - 1] + 2.0)
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
    /// or extrapolated linearly from length 1.
    fn verify_cost(&self, n: usize) -> Option<f64> {
        if let Some(v) = self.verify_ms[n].get() {
            return Some(v);
        }
        let below = (1..n)
            .rev()
            .find_map(|m| self.verify_ms[m].get().map(|v| (m, v)));
        let above = (n + 1..=self.max_len).find_map(|m| self.verify_ms[m].get().map(|v| (m, v)));
        match (below, above) {
            (Some((a, va)), Some((b, vb))) => {
                Some(va + (vb - va) * (n - a) as f64 / (b - a) as f64)
            }
            (Some((a, va)), None) => Some(va * n as f64 / a as f64),
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
        let d = self.draft_ms.get()?;
        Some(self.expected_tokens(n) / (c + d).max(1e-6))
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
        // Measure both ends first: one plain step, then one full block.
        if self.verify_ms[1].get().is_none() {
            return 1;
        }
        if self.draft_ms.get().is_none() {
            return self.max_len;
        }
        let spec = self.best_speculative();
        let spec_rate = self.rate(spec).unwrap_or(0.0);
        let plain_rate = self.rate(1).unwrap_or(0.0);
        if spec_rate >= plain_rate {
            self.probe_interval = MIN_PROBE;
            self.plain_steps_since_probe = 0;
            return spec;
        }
        self.plain_steps_since_probe += 1;
        if self.plain_steps_since_probe >= self.probe_interval {
            self.plain_steps_since_probe = 0;
            self.probe_interval = (self.probe_interval * 2).min(MAX_PROBE);
            return spec;
        }
        1
    }

    pub fn record_verify(&mut self, n: usize, ms: f64) {
        self.verify_ms[n].add(ms);
    }
    pub fn record_draft(&mut self, ms: f64) {
        self.draft_ms.add(ms);
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

    fn trained(accept_rate: f64, cost: impl Fn(usize) -> f64, draft: f64) -> LengthPolicy {
        let mut p = LengthPolicy::new(16, None);
        for n in 1..=16 {
            p.record_verify(n, cost(n));
        }
        p.record_draft(draft);
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
    fn high_acceptance_on_flat_costs_uses_long_blocks() {
        // GPU-like: verify cost almost flat in n.
        // (The uniform prior keeps rarely reached deep positions near 1/2, so not always 16.)
        let mut p = trained(0.9, |n| 5.0 + 0.05 * n as f64, 1.0);
        let n = p.choose();
        assert!(n >= 8, "chose {n}");
    }

    #[test]
    fn expected_tokens_matches_geometric_series() {
        let mut p = LengthPolicy::new(4, None);
        for _ in 0..2000 {
            p.record_accept(3, 3);
        }
        // All accepted: decayed counts saturate at 1/(1-DECAY) = 50, so each a = 51/52 with the prior.
        let a: f64 = 51.0 / 52.0;
        let want = 1.0 + a + a * a + a * a * a;
        assert!(
            (p.expected_tokens(4) - want).abs() < 1e-3,
            "{}",
            p.expected_tokens(4)
        );
        assert!((p.expected_tokens(1) - 1.0).abs() < 1e-9);
    }

    #[test]
    fn plain_mode_still_probes_with_backoff() {
        let mut p = trained(0.0, |n| 40.0 * n as f64, 8.0);
        let picks: Vec<usize> = (0..100).map(|_| p.choose()).collect();
        let probes = picks.iter().filter(|&&n| n > 1).count();
        assert!((1..=5).contains(&probes), "probes {probes}");
    }
}
