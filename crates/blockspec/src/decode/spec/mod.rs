//! Speculative decoding with chain verification: draft a block, verify it in one target batch,
//! accept the longest prefix the target agrees with, commit, repeat.
//!
//! Lossless at any temperature: at every verified position the TARGET's token is drawn from the
//! target distribution (greedy: its argmax) given everything before it, and a draft token is kept
//! only if it equals that draw. Each committed token costs exactly one draw, as in plain decoding.

pub mod policy;

use crate::decode::draft::{Drafter, Features};
use crate::decode::generate::{
    prefill, GenerateOptions, Generation, Output, StopReason, Timings, TokenLogprob,
};
use crate::decode::sampling::Sampler;
use crate::runtime::engine::{Engine, Logits, Outputs};
use crate::runtime::profile;
use crate::text::tokenizer::Tokenizer;
use anyhow::Result;
use policy::LengthPolicy;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::Instant;

/// Statistics of a speculative generation (llama.cpp and z-lab names where they exist).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SpecStats {
    /// Mean tokens committed per target verify step, bonus included.
    pub tau: f64,
    /// Target steps (speculative verifies + plain steps).
    pub steps: usize,
    /// Speculative steps (a drafter ran and its drafts were verified).
    pub spec_steps: usize,
    /// Draft tokens verified.
    pub drafted: usize,
    /// Draft tokens accepted.
    pub accepted: usize,
    /// Acceptance rate per draft position 1..: accepted / offered there.
    pub accept_per_pos: Vec<f64>,
    pub draft_ms: f64,
    pub verify_ms: f64,
    pub sample_ms: f64,
    pub other_ms: f64,
    /// Verify lengths chosen, as (length, count).
    pub lengths: Vec<(usize, usize)>,
    /// Tokens committed by each target step (accepted drafts + the target's own token).
    pub accept_lengths: Vec<usize>,
}

#[derive(Clone, Debug, Default)]
pub struct SpecOptions {
    /// Verify this many tokens per step (1..=block size) instead of adapting.
    pub fixed_len: Option<usize>,
    /// Allow verify batches larger than the backend computes exactly like one-token steps
    /// (reproduces the reference algorithm, e.g. z-lab's full blocks, but the output may then
    /// differ from plain decoding at near-ties). Off by default: lossless first.
    pub allow_inexact_batches: bool,
    /// Benchmarking only: replay this acceptance instead of checking the drafts (see
    /// [`ReplayAcceptance`]). The output is then not the target's; timing is what it measures.
    pub replay: Option<ReplayAcceptance>,
    /// What the length policy learned (costs on this machine, acceptance), carried from one
    /// generation to the next when the same options are passed again. Start with `None`.
    pub policy: Option<LengthPolicy>,
}

/// Acceptance replay, for timing at a given acceptance on any weights (random ones included):
/// every step still runs the drafter and verifies its block for real, but the number of drafts
/// kept is drawn from a profile (each position accepted with chance `rate`, the first miss ends
/// the run) instead of compared with the target's choices. With this, `generate_speculative`
/// produces tokens/s at that acceptance, not the target's text.
#[derive(Clone, Debug)]
pub struct ReplayAcceptance {
    /// Chance that a draft position is accepted, given all before it were.
    pub rate: f64,
    rng: ChaCha8Rng,
}

impl ReplayAcceptance {
    /// The profile with mean tokens per full block `tau` (accepted drafts + the target's token)
    /// for blocks of `block` tokens: solves 1 + a + a^2 + ... + a^(block-1) = tau for a.
    pub fn for_tau(tau: f64, block: usize, seed: u64) -> Result<ReplayAcceptance> {
        if !(1.0..=block as f64).contains(&tau) {
            anyhow::bail!("replay tau {tau}: must be between 1 and the block size {block}");
        }
        let e = |a: f64| (0..block).map(|i| a.powi(i as i32)).sum::<f64>();
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

/// The target's answer for a verified block: logits to sample each row from, or (greedy on a
/// GPU) each row's argmax, computed on the device.
enum Verdict {
    Logits(Logits),
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

/// Generate from `prompt` with speculative decoding. `engine` must capture the drafter's target
/// layers (EngineConfig::capture_layers == drafter.target_layers()).
#[allow(clippy::too_many_arguments)]
pub fn generate_speculative(
    engine: &mut Engine,
    drafter: &mut dyn Drafter,
    tok: &Tokenizer,
    sampler: &mut Sampler,
    prompt: &[u32],
    opts: &GenerateOptions,
    spec: &mut SpecOptions,
    on_text: impl FnMut(&str),
) -> Result<(Generation, SpecStats)> {
    // Verify no more tokens at once than the backend computes exactly like one-token steps.
    let exact = if spec.allow_inexact_batches {
        drafter.max_block()
    } else {
        engine.largest_exact_batch(drafter.max_block())?
    };
    if let Some(f) = spec.fixed_len {
        if f > exact {
            tracing::warn!(
                "verify length {f} capped at {exact}: larger batches do not reproduce one-token decoding exactly on this backend"
            );
        }
    }
    let b = exact;
    let mut timings = Timings::default();
    let logits = prefill(engine, sampler, prompt, opts.reuse_kv, &mut timings)?;
    let cached_prompt_n = prompt.len() - timings.prompt_n;
    // Log-probabilities need the logits; otherwise a GPU reads back only argmax ids.
    let device_argmax =
        sampler.is_plain_argmax() && engine.prefers_device_argmax() && opts.logprobs.is_none();
    // The drafter's own prompt processing counts as prompt time.
    let tb = Instant::now();
    drafter.begin_from(prompt, cached_prompt_n, engine.captured())?;
    timings.prompt_ms += tb.elapsed().as_secs_f64() * 1000.0;
    let n_vocab = engine.n_vocab();
    let mut warned_bad_draft = false;

    let t1 = Instant::now();
    let mut stats = SpecStats::default();
    let mut offered_at = vec![0usize; b];
    let mut accepted_at = vec![0usize; b];
    let mut length_counts = vec![0usize; b + 1];
    let fixed = spec.fixed_len.map(|f| f.min(b));
    let mut policy = match spec.policy.take() {
        Some(p) if p.max_len() == b && p.fixed() == fixed => p,
        _ => LengthPolicy::new(b, fixed, drafter.cost()),
    };
    let mut out = Output::new(tok, opts, on_text);
    let mut draft_ms_total = 0.0;
    let mut verify_ms_total = 0.0;
    let mut sample_ms_total = 0.0;

    // The first token comes from the prompt's logits.
    let ts = Instant::now();
    let mut last = sampler.sample(logits.last());
    sampler.accept(last);
    out.note_logprobs(logits.last(), last);
    sample_ms_total += ts.elapsed().as_secs_f64() * 1000.0;
    let stop = 'gen: {
        if let Some(s) = out.push(last) {
            break 'gen s;
        }
        loop {
            // `last` is committed but not yet seen by the target; it sits at position n_past.
            let start = engine.n_past();
            let room = engine.n_ctx() - start;
            if room == 0 {
                break 'gen StopReason::Context;
            }
            let mut n = policy.choose().min(room);
            if let Some(m) = opts.max_tokens {
                // No point verifying past the token limit.
                n = n.min(m.saturating_sub(out.tokens.len()) + 1).max(1);
            }
            let mut block = vec![last];
            let mut step_ms = 0.0;
            if n == 1 {
                // The target overwrites its captured features now, before any draft reads them.
                drafter.release_capture()?;
            } else {
                let tsync = Instant::now();
                let _p = profile::scope("spec.sync");
                drafter.sync()?;
                drop(_p);
                step_ms += tsync.elapsed().as_secs_f64() * 1000.0;
                let td = Instant::now();
                let mut drafts = drafter.draft(last, n)?;
                let ms = td.elapsed().as_secs_f64() * 1000.0;
                policy.record_draft(ms, drafts.len(), drafter.last_draft_was_cold());
                draft_ms_total += ms;
                step_ms += ms;
                // A drafter may propose fewer (or ids the target does not have: a draft
                // model's padded vocabulary); verify what is usable.
                drafts.truncate(n - 1);
                if let Some(i) = drafts.iter().position(|&t| t as usize >= n_vocab) {
                    if !warned_bad_draft {
                        warned_bad_draft = true;
                        tracing::warn!(
                            "{} drafter proposed token id {} outside the target's vocabulary of {n_vocab} (non-finite drafter logits?); such drafts are dropped",
                            drafter.name(),
                            drafts[i] as i32
                        );
                    }
                    drafts.truncate(i);
                }
                block.extend_from_slice(&drafts);
                n = block.len();
            }
            let tv = Instant::now();
            let verdict = if device_argmax {
                Verdict::Ids(engine.decode_argmax(&block, Outputs::All)?)
            } else {
                Verdict::Logits(engine.decode(&block, Outputs::All)?)
            };
            let ms = tv.elapsed().as_secs_f64() * 1000.0;
            // Timings of freshly built graphs (first uses, CUDA graph capture) would make a
            // length look slower than it is; the policy learns from steady steps only.
            policy.record_verify(n, ms, engine.last_decode_was_cold());
            verify_ms_total += ms;
            step_ms += ms;
            length_counts[n] += 1;
            stats.steps += 1;

            // Walk the block: the target's draw at row k is the token at position start+k+1.
            let ts = Instant::now();
            let _p = profile::scope("spec.walk");
            let mut committed = 0; // drafts accepted
                                   // Log-probabilities of the tokens this step commits (row k gives token k+1).
            let mut step_logprobs = Vec::new();
            let bonus = if let Some(r) = spec.replay.as_mut() {
                // Replay: keep a drawn number of drafts whatever the target says, then take
                // the target's token after them (same verify and commit work as a real step).
                committed = r.draw(n - 1);
                let t = verdict.pick(committed, sampler);
                sampler.accept(t);
                t
            } else {
                loop {
                    let t = verdict.pick(committed, sampler);
                    sampler.accept(t);
                    if let (Some(n_top), Verdict::Logits(l)) = (opts.logprobs, &verdict) {
                        step_logprobs.push(TokenLogprob::new(l.row(committed), t, n_top));
                    }
                    if committed + 1 < n && block[committed + 1] == t {
                        committed += 1;
                        continue;
                    }
                    break t;
                }
            };
            drop(_p);
            sample_ms_total += ts.elapsed().as_secs_f64() * 1000.0;
            if n > 1 {
                stats.spec_steps += 1;
                stats.drafted += n - 1;
                stats.accepted += committed;
                policy.record_accept(n - 1, committed);
                // A probe's cost includes building its graphs: that is what probing costs.
                if let Some(plain) = policy.plain_ms() {
                    policy.record_overhead(step_ms - (committed + 1) as f64 * plain);
                }
                tracing::debug!(
                    "step: {n} tokens verified in {ms:.1} ms ({step_ms:.1} ms with drafting), {committed} accepted"
                );
                for k in 0..(n - 1).min(committed + 1) {
                    offered_at[k] += 1;
                    if k < committed {
                        accepted_at[k] += 1;
                    }
                }
            }
            // Keep the target's KV and the features of block[0..=committed] only.
            engine.truncate(start + committed + 1);
            let _p = profile::scope("spec.commit");
            // A drafter that reads features on the device gets them where the verify left them;
            // otherwise (or when they are not all there) they are read back.
            let on_device = if drafter.reads_device_features() {
                engine.captured_on_device(committed + 1)
            } else {
                None
            };
            match on_device {
                Some(rows) => drafter.commit(&block[..=committed], Features::Device(rows))?,
                None => {
                    let nf = drafter.target_layers().len() * engine.model.hp.n_embd;
                    let features = engine.captured_rows(committed + 1);
                    debug_assert_eq!(features.len(), (committed + 1) * nf);
                    drafter.commit(&block[..=committed], Features::Host(features))?;
                }
            }
            drop(_p);
            // Tokens this step commits (cut short by a stop or the token limit).
            let _p = profile::scope("spec.output");
            let before = out.tokens.len();
            let mut step_logprobs = step_logprobs.into_iter();
            for &t in block[1..=committed].iter().chain(std::iter::once(&bonus)) {
                if let Some(lp) = step_logprobs.next() {
                    out.push_logprob(lp);
                }
                if let Some(s) = out.push(t) {
                    stats.accept_lengths.push(out.tokens.len() - before);
                    break 'gen s;
                }
            }
            stats.accept_lengths.push(committed + 1);
            last = bonus;
        }
    };
    spec.policy = Some(policy);
    // The next generation starts with a prompt evaluation: keep what the drafter still needs.
    drafter.release_capture()?;
    let mut logprobs = std::mem::take(&mut out.logprobs);
    let (tokens, text) = out.finish(stop);
    logprobs.truncate(tokens.len());
    timings.predicted_n = tokens.len();
    timings.predicted_ms = t1.elapsed().as_secs_f64() * 1000.0;
    timings.finish();
    stats.tau = if stats.steps > 0 {
        tokens.len() as f64 / stats.steps as f64
    } else {
        0.0
    };
    stats.accept_per_pos = offered_at
        .iter()
        .zip(&accepted_at)
        .take_while(|(o, _)| **o > 0)
        .map(|(&o, &a)| a as f64 / o as f64)
        .collect();
    stats.draft_ms = draft_ms_total;
    stats.verify_ms = verify_ms_total;
    stats.sample_ms = sample_ms_total;
    stats.other_ms =
        (timings.predicted_ms - draft_ms_total - verify_ms_total - sample_ms_total).max(0.0);
    stats.lengths = length_counts
        .iter()
        .enumerate()
        .filter(|(_, &c)| c > 0)
        .map(|(n, &c)| (n, c))
        .collect();
    Ok((
        Generation {
            tokens,
            text,
            stop,
            timings,
            logprobs,
            cached_prompt_n,
        },
        stats,
    ))
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
        // Shorter blocks cap the run.
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
