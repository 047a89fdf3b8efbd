//! Acceptance replay: timing at a chosen acceptance, on any weights.

use anyhow::Result;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Acceptance replay, for timing at a given acceptance on any weights (random ones included):
/// every step still runs the drafter and verifies its drafts for real, but the number of drafts
/// kept is drawn from a profile (each position accepted with chance `rate`, the first miss ends
/// the run) instead of compared with the target's choices. With this,
/// [`generate_speculative`](super::generate_speculative) produces tokens/s at that acceptance,
/// not the target's text.
#[derive(Clone, Debug)]
pub struct ReplayAcceptance {
    /// Chance that a draft position is accepted, given all before it were.
    pub rate: f64,
    rng: ChaCha8Rng,
}

impl ReplayAcceptance {
    /// The profile with mean tokens per full-length verify `tau` (accepted drafts + the
    /// target's token) for verifies of `verify_len` tokens: solves
    /// 1 + a + a^2 + ... + a^(verify_len-1) = tau for a.
    pub fn for_tau(tau: f64, verify_len: usize, seed: u64) -> Result<ReplayAcceptance> {
        if !(1.0..=verify_len as f64).contains(&tau) {
            anyhow::bail!("replay tau {tau}: must be between 1 and the block size {verify_len}");
        }
        let e = |a: f64| (0..verify_len).map(|i| a.powi(i as i32)).sum::<f64>();
        let (mut lo, mut hi) = (0.0f64, 1.0f64);
        for _ in 0..60 {
            let mid = (lo + hi) / 2.0;
            if e(mid) < tau {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Ok(ReplayAcceptance {
            rate: (lo + hi) / 2.0,
            rng: ChaCha8Rng::seed_from_u64(seed),
        })
    }

    /// Drafts accepted out of `offered`.
    pub fn draw(&mut self, offered: usize) -> usize {
        let mut k = 0;
        while k < offered && self.rng.random::<f64>() < self.rate {
            k += 1;
        }
        k
    }
}

#[cfg(test)]
mod tests {
    use super::ReplayAcceptance;

    #[test]
    fn replay_profile_reproduces_its_tau() {
        let mut r = ReplayAcceptance::for_tau(6.55, 16, 3).unwrap();
        let n = 20000;
        let total: usize = (0..n).map(|_| r.draw(15) + 1).sum();
        let tau = total as f64 / n as f64;
        assert!((tau - 6.55).abs() < 0.1, "replayed tau {tau}");
        // Shorter verifies cap the run.
        assert!((0..1000).all(|_| r.draw(3) <= 3));
    }

    #[test]
    fn replay_tau_out_of_range_is_an_error() {
        assert!(ReplayAcceptance::for_tau(0.5, 16, 1).is_err());
        assert!(ReplayAcceptance::for_tau(17.0, 16, 1).is_err());
        let all = ReplayAcceptance::for_tau(16.0, 16, 1).unwrap();
        assert!(all.rate > 0.999);
    }
}
