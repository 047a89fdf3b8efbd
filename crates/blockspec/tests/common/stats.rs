//! Statistics for the sampling tests: the exact joint distribution of a target's first tokens,
//! and Pearson's chi-square of observed outcomes against it.

use blockspec::decode::sampling::{Sampler, SamplingParams};
use blockspec::runtime::engine::{Engine, Outputs};
use std::collections::HashMap;

/// The exact probability of each first-`depth`-tokens outcome under the sampler's distribution
/// (top-k, temperature) of the target's logits, each prefix evaluated by a fresh prefill.
pub fn exact_joint(
    e: &mut Engine,
    prompt: &[u32],
    depth: usize,
    p: &SamplingParams,
) -> HashMap<Vec<u32>, f64> {
    let sampler = Sampler::new(p.clone());
    let mut out = HashMap::new();
    let mut frontier = vec![(Vec::<u32>::new(), 1f64)];
    for level in 0..depth {
        let mut next = Vec::new();
        for (prefix, pr) in frontier {
            let seq: Vec<u32> = prompt.iter().chain(&prefix).copied().collect();
            e.reset();
            let logits = e.decode(&seq, Outputs::Last).expect("prefill");
            let d = sampler.distribution(logits.last());
            for (&tok, &q) in d.tokens.iter().zip(&d.probs) {
                let mut k = prefix.clone();
                k.push(tok);
                if level + 1 == depth {
                    out.insert(k, pr * q as f64);
                } else {
                    next.push((k, pr * q as f64));
                }
            }
        }
        frontier = next;
    }
    e.reset();
    out
}

/// Pearson's chi-square of `counts` against the probabilities `exact`, outcomes with an expected
/// count below 5 pooled into one bin: (statistic, degrees of freedom). An outcome the exact
/// distribution calls impossible gives infinity.
pub fn chi_square(
    counts: &HashMap<Vec<u32>, usize>,
    exact: &HashMap<Vec<u32>, f64>,
) -> (f64, usize) {
    let n: usize = counts.values().sum();
    let (mut stat, mut bins) = (0.0, 0);
    let (mut pooled_e, mut pooled_o) = (0.0, 0usize);
    let mut keys: Vec<&Vec<u32>> = exact.keys().chain(counts.keys()).collect();
    keys.sort();
    keys.dedup();
    for k in keys {
        let e = exact.get(k).copied().unwrap_or(0.0) * n as f64;
        let o = counts.get(k).copied().unwrap_or(0);
        if e == 0.0 && o > 0 {
            return (f64::INFINITY, bins.max(1));
        }
        if e >= 5.0 {
            stat += (o as f64 - e).powi(2) / e;
            bins += 1;
        } else {
            pooled_e += e;
            pooled_o += o;
        }
    }
    if pooled_e > 0.0 {
        stat += (pooled_o as f64 - pooled_e).powi(2) / pooled_e;
        bins += 1;
    }
    (stat, bins.max(2) - 1)
}

/// The chi-square value exceeded with probability 1e-3 (Wilson-Hilferty approximation).
pub fn chi_square_critical(df: usize) -> f64 {
    let z = 3.09; // the standard normal's 1 - 1e-3 quantile
    let k = df as f64;
    let a = 2.0 / (9.0 * k);
    k * (1.0 - a + z * a.sqrt()).powi(3)
}

/// Total-variation distance between the empirical frequencies and `exact`.
pub fn total_variation(counts: &HashMap<Vec<u32>, usize>, exact: &HashMap<Vec<u32>, f64>) -> f64 {
    let n: usize = counts.values().sum();
    let mut keys: Vec<&Vec<u32>> = exact.keys().chain(counts.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.iter()
        .map(|k| {
            let o = counts.get(*k).copied().unwrap_or(0) as f64 / n as f64;
            (o - exact.get(*k).copied().unwrap_or(0.0)).abs()
        })
        .sum::<f64>()
        / 2.0
}
