//! Token sampling: logit biases, penalties, the grammar's mask (a [`Constraint`]), then greedy
//! (temperature <= 0) or top-k -> top-p -> min-p -> temperature -> a seeded random draw, in
//! llama.cpp's default order.

use crate::decode::constrain::Constraint;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;

#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    /// <= 0: greedy.
    pub temperature: f32,
    /// <= 0: off.
    pub top_k: i32,
    /// >= 1: off.
    pub top_p: f32,
    /// <= 0: off.
    pub min_p: f32,
    pub seed: u64,
    /// 1.0: off. Divides positive logits / multiplies negative ones of recent tokens.
    pub repeat_penalty: f32,
    /// How many recent tokens the penalties look at (0: none, -1: all).
    pub repeat_last_n: i32,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    /// Added to the logits of these tokens before anything else (OpenAI / llama.cpp
    /// `logit_bias`); `-inf` bans a token. Ids must be in the vocabulary and values finite or
    /// `-inf` ([`validate`](Self::validate), [`check_vocab`](Self::check_vocab)). A token listed
    /// twice gets both.
    pub logit_bias: Vec<(u32, f32)>,
}

impl Default for SamplingParams {
    /// llama.cpp's defaults.
    fn default() -> Self {
        SamplingParams {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            seed: 0xFFFF_FFFF,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            logit_bias: Vec::new(),
        }
    }
}

impl SamplingParams {
    pub fn greedy() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_k: 1,
            ..Default::default()
        }
    }
    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0 || self.top_k == 1
    }
    fn has_penalties(&self) -> bool {
        self.repeat_last_n != 0
            && (self.repeat_penalty != 1.0
                || self.presence_penalty != 0.0
                || self.frequency_penalty != 0.0)
    }
    /// Check ranges; the message names the parameter.
    pub fn validate(&self) -> Result<(), String> {
        if !self.temperature.is_finite() {
            return Err(format!(
                "temperature must be a finite number, got {}",
                self.temperature
            ));
        }
        if !(0.0..=1.0).contains(&self.top_p) && self.top_p.is_finite() {
            if self.top_p > 1.0 {
                return Ok(());
            }
            return Err(format!("top_p must be in [0, 1], got {}", self.top_p));
        }
        if !(self.min_p.is_finite() && self.min_p <= 1.0) {
            return Err(format!("min_p must be at most 1, got {}", self.min_p));
        }
        if !(self.repeat_penalty.is_finite() && self.repeat_penalty > 0.0) {
            return Err(format!(
                "repeat_penalty must be positive, got {}",
                self.repeat_penalty
            ));
        }
        if self.repeat_last_n < -1 {
            return Err(format!(
                "repeat_last_n must be >= -1, got {}",
                self.repeat_last_n
            ));
        }
        for &(t, b) in &self.logit_bias {
            if !(b.is_finite() || b == f32::NEG_INFINITY) {
                return Err(format!(
                    "logit_bias for token {t} must be a finite number or -inf, got {b}"
                ));
            }
        }
        Ok(())
    }

    /// Check the token ids of `logit_bias` against a vocabulary of `n_vocab` tokens.
    pub fn check_vocab(&self, n_vocab: usize) -> Result<(), String> {
        match self.logit_bias.iter().find(|b| b.0 as usize >= n_vocab) {
            Some(&(t, _)) => Err(format!(
                "logit_bias: token id {t} is out of range (the vocabulary has {n_vocab} tokens)"
            )),
            None => Ok(()),
        }
    }
}

/// A sampler with its random state and the token history its penalties use.
pub struct Sampler {
    pub params: SamplingParams,
    rng: ChaCha8Rng,
    history: Vec<u32>,
    /// The grammar the output follows, advanced over every accepted token.
    constraint: Option<Constraint>,
}

/// The candidates left after truncation and their probabilities (sum 1), for sampling and for
/// speculative acceptance tests that need the target distribution itself.
#[derive(Clone, Debug, Default)]
pub struct Distribution {
    pub tokens: Vec<u32>,
    pub probs: Vec<f32>,
}

impl Distribution {
    pub fn prob_of(&self, tok: u32) -> f32 {
        self.tokens
            .iter()
            .position(|&t| t == tok)
            .map_or(0.0, |i| self.probs[i])
    }

    /// This distribution without `tok`, renormalized; `None` when nothing is left.
    pub fn without(&self, tok: u32) -> Option<Distribution> {
        let keep: Vec<usize> = (0..self.tokens.len())
            .filter(|&i| self.tokens[i] != tok && self.probs[i] > 0.0)
            .collect();
        let sum: f64 = keep.iter().map(|&i| self.probs[i] as f64).sum();
        (sum > 0.0).then(|| Distribution {
            tokens: keep.iter().map(|&i| self.tokens[i]).collect(),
            probs: keep
                .iter()
                .map(|&i| (self.probs[i] as f64 / sum) as f32)
                .collect(),
        })
    }

    /// The residual of rejection sampling against the proposal `q`: `max(0, self - q)`,
    /// renormalized; `None` when nothing is left (`self` <= `q` everywhere, i.e. equal).
    pub fn residual(&self, q: &Distribution) -> Option<Distribution> {
        let (mut tokens, mut mass) = (Vec::new(), Vec::new());
        for (&t, &p) in self.tokens.iter().zip(&self.probs) {
            let r = p as f64 - q.prob_of(t) as f64;
            if r > 0.0 {
                tokens.push(t);
                mass.push(r);
            }
        }
        let sum: f64 = mass.iter().sum();
        (sum > 0.0).then(|| Distribution {
            tokens,
            probs: mass.iter().map(|&r| (r / sum) as f32).collect(),
        })
    }
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Sampler {
        let rng = ChaCha8Rng::seed_from_u64(params.seed);
        Sampler {
            params,
            rng,
            history: Vec::new(),
            constraint: None,
        }
    }

    /// Constrain every choice from now on to `c`'s grammar (`None`: unconstrained). The
    /// generation functions install `GenerateOptions::constraint` here.
    pub fn set_constraint(&mut self, c: Option<Constraint>) {
        self.constraint = c;
    }

    /// The grammar state, when constrained.
    pub fn constraint(&self) -> Option<&Constraint> {
        self.constraint.as_ref()
    }

    /// What went wrong in the grammar engine, if anything did: the generation must stop.
    pub fn constraint_error(&self) -> Option<&str> {
        self.constraint.as_ref().and_then(|c| c.error())
    }

    /// How many of `drafts` the grammar allows in order after the accepted tokens (all of them
    /// when unconstrained); the state does not change.
    pub fn valid_draft_prefix(&mut self, drafts: &[u32]) -> usize {
        match &mut self.constraint {
            Some(c) => c.valid_prefix(drafts),
            None => drafts.len(),
        }
    }

    /// Whether every choice is the plain argmax of the raw logits (greedy, no penalties, no
    /// biases, no grammar), so an argmax computed on the backend can stand in for
    /// [`sample`](Self::sample).
    pub fn is_plain_argmax(&self) -> bool {
        self.params.is_greedy()
            && !self.params.has_penalties()
            && self.params.logit_bias.is_empty()
            && self.constraint.is_none()
    }

    /// Record a generated token: the penalties see it, the grammar advances over it.
    pub fn accept(&mut self, tok: u32) {
        self.history.push(tok);
        if let Some(c) = &mut self.constraint {
            c.commit(tok);
        }
    }
    /// Record prompt tokens the penalties should see (the grammar covers the output only).
    pub fn accept_all(&mut self, toks: &[u32]) {
        self.history.extend_from_slice(toks);
    }
    /// Forget the last `n` accepted tokens (rejected speculation).
    pub fn forget(&mut self, n: usize) {
        let keep = self.history.len().saturating_sub(n);
        self.history.truncate(keep);
        if let Some(c) = &mut self.constraint {
            c.rollback(n);
        }
    }

    fn apply_logit_bias(&self, logits: &mut [f32]) {
        for &(t, b) in &self.params.logit_bias {
            if let Some(l) = logits.get_mut(t as usize) {
                *l += b;
            }
        }
    }

    fn apply_penalties(&self, logits: &mut [f32]) {
        let p = &self.params;
        if !p.has_penalties() {
            return;
        }
        let n = if p.repeat_last_n < 0 {
            self.history.len()
        } else {
            (p.repeat_last_n as usize).min(self.history.len())
        };
        let mut counts: HashMap<u32, u32> = HashMap::new();
        for &t in &self.history[self.history.len() - n..] {
            *counts.entry(t).or_default() += 1;
        }
        for (&t, &c) in &counts {
            let Some(l) = logits.get_mut(t as usize) else {
                continue;
            };
            if *l <= 0.0 {
                *l *= p.repeat_penalty;
            } else {
                *l /= p.repeat_penalty;
            }
            *l -= c as f32 * p.frequency_penalty + p.presence_penalty;
        }
    }

    /// The distribution the next token is drawn from (after biases, penalties, the grammar's
    /// mask and truncation). Greedy gives the argmax with probability 1.
    pub fn distribution(&self, logits: &[f32]) -> Distribution {
        let mut l = logits.to_vec();
        self.apply_logit_bias(&mut l);
        self.apply_penalties(&mut l);
        if let Some(c) = &self.constraint {
            c.apply(&mut l);
        }
        let p = &self.params;
        if p.is_greedy() {
            return Distribution {
                tokens: vec![argmax(&l)],
                probs: vec![1.0],
            };
        }
        let cand: Vec<(u32, f32)> = l.iter().enumerate().map(|(i, &v)| (i as u32, v)).collect();
        self.truncate_and_soften(cand)
    }

    /// Top-k -> top-p -> min-p -> temperature over `cand` (token, logit), as
    /// [`distribution`](Self::distribution) applies them after the penalties. Not greedy.
    fn truncate_and_soften(&self, mut cand: Vec<(u32, f32)>) -> Distribution {
        let p = &self.params;
        // Banned tokens (a -inf bias, the grammar's mask) are never drawn.
        if cand.iter().any(|c| c.1 > f32::NEG_INFINITY) {
            cand.retain(|c| c.1 > f32::NEG_INFINITY);
        }
        // top-k (sorted descending; stable so equal logits keep id order)
        cand.sort_by(|a, b| b.1.total_cmp(&a.1));
        if p.top_k > 0 {
            cand.truncate(p.top_k as usize);
        }
        // top-p on the softmax of the raw logits
        if p.top_p < 1.0 {
            let probs = softmax(cand.iter().map(|c| c.1));
            let mut cum = 0.0;
            let mut keep = cand.len();
            for (i, &pr) in probs.iter().enumerate() {
                cum += pr;
                if cum >= p.top_p {
                    keep = i + 1;
                    break;
                }
            }
            cand.truncate(keep.max(1));
        }
        // min-p relative to the best candidate
        if p.min_p > 0.0 && !cand.is_empty() {
            let max = cand[0].1;
            let thresh = max + p.min_p.ln();
            let keep = cand.iter().take_while(|c| c.1 >= thresh).count();
            cand.truncate(keep.max(1));
        }
        let t = p.temperature;
        let probs = softmax(cand.iter().map(|c| c.1 / t));
        Distribution {
            tokens: cand.iter().map(|c| c.0).collect(),
            probs,
        }
    }

    /// A proposal distribution for speculative rejection sampling from a drafter's candidates
    /// (`ids` with their log-probabilities): this sampler's truncation and temperature applied
    /// to them (no penalties), so it resembles the target's processed distribution. Any
    /// proposal keeps rejection sampling exact; a closer one accepts more. Non-finite
    /// log-probabilities are dropped; `None` when nothing is left or the sampler is greedy.
    pub fn proposal(&self, ids: &[u32], logprobs: &[f32]) -> Option<Distribution> {
        if self.params.is_greedy() {
            return None;
        }
        let cand: Vec<(u32, f32)> = ids
            .iter()
            .zip(logprobs)
            .filter(|(_, l)| l.is_finite())
            .map(|(&t, &l)| (t, l))
            .collect();
        if cand.is_empty() {
            return None;
        }
        Some(self.truncate_and_soften(cand))
    }

    /// `m` distinct tokens drawn one after the other from `q`, each from what is left of it
    /// renormalized (sampling without replacement); fewer when `q` has fewer tokens.
    pub fn draw_without_replacement(&mut self, q: &Distribution, m: usize) -> Vec<u32> {
        let mut left = q.clone();
        let mut out = Vec::with_capacity(m.min(q.tokens.len()));
        while out.len() < m {
            let t = self.draw(&left);
            out.push(t);
            match left.without(t) {
                Some(l) => left = l,
                None => break,
            }
        }
        out
    }

    /// Draw from a distribution with this sampler's random state.
    pub fn draw(&mut self, d: &Distribution) -> u32 {
        if d.tokens.len() == 1 {
            return d.tokens[0];
        }
        let u: f32 = self.rng.random();
        let mut cum = 0.0;
        for (i, &pr) in d.probs.iter().enumerate() {
            cum += pr;
            if u < cum {
                return d.tokens[i];
            }
        }
        *d.tokens.last().expect("non-empty distribution")
    }

    /// Sample the next token from `logits` (does not record it: call `accept`).
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        let d = self.distribution(logits);
        self.draw(&d)
    }

    /// A uniform draw in [0, 1) from this sampler's stream (for rejection sampling).
    pub fn uniform(&mut self) -> f32 {
        self.rng.random()
    }
}

/// Index of the largest value; the first one on ties (as llama.cpp's greedy sampler).
pub fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

fn softmax(v: impl Iterator<Item = f32> + Clone) -> Vec<f32> {
    let max = v.clone().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = v.map(|x| (x - max).exp()).collect();
    let s: f32 = e.iter().sum();
    e.into_iter().map(|x| x / s).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_picks_first_max() {
        assert_eq!(argmax(&[0.0, 3.0, 3.0, 1.0]), 1);
        let mut s = Sampler::new(SamplingParams::greedy());
        assert_eq!(s.sample(&[0.5, -1.0, 2.0]), 2);
    }

    #[test]
    fn top_k_one_is_greedy_even_with_temperature() {
        let mut s = Sampler::new(SamplingParams {
            temperature: 1.5,
            top_k: 1,
            ..Default::default()
        });
        for _ in 0..20 {
            assert_eq!(s.sample(&[0.1, 0.2, 5.0, 0.3]), 2);
        }
    }

    #[test]
    fn top_p_keeps_smallest_prefix_reaching_p() {
        let s = Sampler::new(SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 0.5,
            min_p: 0.0,
            ..Default::default()
        });
        // probs ~ [0.64, 0.24, 0.09, 0.03]
        let d = s.distribution(&[3.0, 2.0, 1.0, 0.0]);
        assert_eq!(d.tokens, vec![0]);
    }

    #[test]
    fn sampling_follows_the_distribution() {
        let mut s = Sampler::new(SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed: 7,
            ..Default::default()
        });
        let logits = [0.0f32, (3.0f32).ln()]; // probs 0.25 / 0.75
        let n = 20000;
        let ones = (0..n).filter(|_| s.sample(&logits) == 1).count();
        let frac = ones as f64 / n as f64;
        // 5 sigma of a binomial(20000, 0.75) proportion is ~0.015
        assert!((frac - 0.75).abs() < 0.015, "frac {frac}");
    }

    #[test]
    fn repeat_penalty_lowers_seen_tokens() {
        let mut s = Sampler::new(SamplingParams {
            temperature: 0.0,
            repeat_penalty: 2.0,
            ..Default::default()
        });
        s.accept(0);
        // 2.0/2 = 1.0 < 1.5
        assert_eq!(s.sample(&[2.0, 1.5]), 1);
    }

    #[test]
    fn same_seed_same_tokens() {
        let p = SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed: 42,
            ..Default::default()
        };
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let mut a = Sampler::new(p.clone());
        let mut b = Sampler::new(p);
        for _ in 0..100 {
            assert_eq!(a.sample(&logits), b.sample(&logits));
        }
    }
}
