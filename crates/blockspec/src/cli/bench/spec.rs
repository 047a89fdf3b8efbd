//! The plain-vs-speculative comparison of `blockspec bench` on fixed prompts, and `--plot`'s
//! sweep over verify lengths and replayed acceptance.

use super::{BenchArgs, JsonMap, Loaded};
use crate::decode::draft::Drafter;
use crate::decode::generate::{generate, GenerateOptions};
use crate::decode::sampling::{Sampler, SamplingParams};
use crate::decode::spec::{generate_speculative, SpecOptions, SpecParts};
use crate::runtime::profile;
use anyhow::{bail, Context as _, Result};
use std::path::Path;

/// Prompts for the plain-vs-speculative comparison (code and chat, as users run them); the
/// same file drives scripts/ref/llama-spec-peer.py, so llama.cpp is measured on the same text.
const BENCH_PROMPTS_JSON: &str = include_str!("bench_prompts.json");

/// The comparison's prompts.
fn bench_prompts() -> Result<Vec<String>> {
    serde_json::from_str(BENCH_PROMPTS_JSON).context("bench_prompts.json")
}

/// Plain greedy generation of one prompt; its tokens and time are added to `total`.
fn plain_run(
    l: &mut Loaded,
    prompt: &[u32],
    opts: &GenerateOptions,
    total: &mut (usize, f64),
) -> Result<crate::decode::generate::Generation> {
    let g = generate(
        &mut l.engine,
        &l.model.tokenizer,
        &mut Sampler::new(SamplingParams::greedy()),
        prompt,
        opts,
        |_| {},
    )?;
    total.0 += g.tokens.len();
    total.1 += g.timings.predicted_ms;
    Ok(g)
}

/// Plain and speculative greedy generation on the same prompts and the same loaded target.
pub(super) fn bench_spec(
    l: &mut Loaded,
    d: &mut dyn Drafter,
    fixed_len: Option<usize>,
    n_tokens: usize,
    replay_tau: Option<f64>,
    known_plain_rate: Option<f64>,
    result: &mut JsonMap,
) -> Result<Vec<String>> {
    let replay = match replay_tau {
        Some(t) => Some(
            crate::decode::spec::ReplayAcceptance::for_tau(t, d.max_verify_len(), 7)
                .context("--replay-tau")?,
        ),
        None => None,
    };
    let opts = GenerateOptions {
        max_tokens: Some(n_tokens),
        ignore_eos: true,
        stop: vec![],
        stop_tokens: vec![],
        ..Default::default()
    };
    let mut plain = (0usize, 0.0f64);
    let mut spec = (0usize, 0.0f64);
    let (mut steps, mut spec_steps, mut drafted, mut accepted) = (0usize, 0usize, 0usize, 0usize);
    let mut target_forwards = 0u64;
    let (mut draft_ms, mut verify_ms, mut host_ms) = (0.0f64, 0.0f64, 0.0f64);
    let mut n_identical = 0usize;
    let mut phases: Vec<(&'static str, f64, u64)> = Vec::new();
    // One policy across the prompts, as a server slot keeps it across requests.
    let mut so = SpecOptions {
        fixed_len,
        allow_inexact_batches: l.model.fast_verify,
        policy: None,
        replay: replay.clone(),
        tree_budget: l.model.spec_tree,
        tree_auto: l.model.spec_tree_auto,
        tree_policy: None,
        tree_chain_seed: false,
        accept_rule: l.model.accept_rule,
    };
    let prompts = bench_prompts()?;
    for (i, p) in prompts.iter().enumerate() {
        let prompt = l.model.tokenizer.encode(p, true, true)?;
        // Plain first on even prompts, speculation first on odd ones: whatever the order
        // favours (a machine drifting faster or slower, caches) falls on both sides alike.
        let spec_first = i % 2 == 1;
        let mut g = None;
        if known_plain_rate.is_none() && !spec_first {
            g = Some(plain_run(l, &prompt, &opts, &mut plain)?);
        }
        profile::reset();
        let (gs, st) = generate_speculative(
            SpecParts {
                engine: &mut l.engine,
                drafter: d,
                tok: &l.model.tokenizer,
                sampler: &mut Sampler::new(SamplingParams::greedy()),
            },
            &prompt,
            &opts,
            &mut so,
            |_| {},
        )?;
        let phase_totals = profile::totals();
        if known_plain_rate.is_none() && spec_first {
            g = Some(plain_run(l, &prompt, &opts, &mut plain)?);
        }
        n_identical += usize::from(g.is_some_and(|g| gs.tokens == g.tokens));
        spec.0 += gs.tokens.len();
        spec.1 += gs.timings.predicted_ms;
        steps += st.steps;
        spec_steps += st.spec_steps;
        target_forwards += st.target_forwards;
        drafted += st.drafted;
        accepted += st.accepted;
        draft_ms += st.draft_ms;
        verify_ms += st.verify_ms;
        host_ms += st.sample_ms + st.other_ms;
        for (name, ms, n) in phase_totals {
            match phases.iter_mut().find(|p| p.0 == name) {
                Some(p) => {
                    p.1 += ms;
                    p.2 += n;
                }
                None => phases.push((name, ms, n)),
            }
        }
    }
    if !phases.is_empty() {
        // BLOCKSPEC_PROFILE=1: per speculative run, each phase's ms per target step and calls
        // per step.
        let per_step: serde_json::Map<String, serde_json::Value> = phases
            .iter()
            .map(|(name, ms, n)| {
                let s = steps.max(1) as f64;
                (
                    name.to_string(),
                    serde_json::json!({"ms_per_step": ms / s, "calls_per_step": *n as f64 / s}),
                )
            })
            .collect();
        result.insert("spec_profile".into(), per_step.into());
    }
    let plain_rate =
        known_plain_rate.unwrap_or_else(|| 1000.0 * plain.0 as f64 / plain.1.max(1e-9));
    let spec_rate = 1000.0 * spec.0 as f64 / spec.1.max(1e-9);
    let tau = spec.0 as f64 / steps.max(1) as f64;
    result.insert("plain_tok_s".into(), plain_rate.into());
    result.insert("spec_tok_s".into(), spec_rate.into());
    result.insert("spec_speedup".into(), (spec_rate / plain_rate).into());
    result.insert("spec_tau".into(), tau.into());
    result.insert("spec_drafted".into(), drafted.into());
    result.insert("spec_accepted".into(), accepted.into());
    result.insert("spec_steps".into(), steps.into());
    result.insert("spec_speculative_steps".into(), spec_steps.into());
    result.insert("spec_target_forwards".into(), target_forwards.into());
    // Per target step: drafting (over speculative steps), verify, and host time (sampling,
    // bookkeeping) outside both.
    result.insert(
        "spec_draft_ms_per_draft".into(),
        (draft_ms / spec_steps.max(1) as f64).into(),
    );
    result.insert(
        "spec_verify_ms_per_step".into(),
        (verify_ms / steps.max(1) as f64).into(),
    );
    result.insert(
        "spec_host_ms_per_step".into(),
        (host_ms / steps.max(1) as f64).into(),
    );
    // Prompts whose speculative output equals the plain one (all of them with --verify exact).
    result.insert("spec_identical_prompts".into(), n_identical.into());
    result.insert("spec_prompts".into(), prompts.len().into());
    if let Some(r) = &replay {
        result.insert("spec_replay_tau".into(), replay_tau.into());
        result.insert("spec_replay_rate".into(), r.rate.into());
    }
    if n_identical < prompts.len()
        && !l.model.fast_verify
        && replay.is_none()
        && known_plain_rate.is_none()
    {
        bail!(
            "speculative output differed from plain output with --verify {}: this is a bug, please report it",
            l.model.verify.name()
        );
    }
    Ok(vec![
        format!(
            "| plain{} | {} | {plain_rate:.2} | 1.00 | - | - |",
            if l.model.verify == crate::session::load::VerifyMode::Exact {
                " (batch-invariant)"
            } else {
                ""
            },
            plain.0
        ),
        format!(
            "| {}{} | {} | {spec_rate:.2} | {:.2} | {tau:.2} | {accepted}/{drafted} |",
            d.name(),
            if replay.is_some() {
                " (replayed acceptance, timing only)"
            } else {
                ""
            },
            spec.0,
            spec_rate / plain_rate
        ),
    ])
}

/// `bench --plot`: speculative tokens/s per fixed verify length (at the replayed tau, or the
/// drafter's real acceptance without one), and speedup over plain per replayed tau (adaptive
/// length and the full block); one PNG with both charts.
pub(super) fn bench_sweep(
    l: &mut Loaded,
    d: &mut dyn Drafter,
    a: &BenchArgs,
    path: &Path,
    result: &mut JsonMap,
) -> Result<()> {
    let plain_rate = result
        .get("plain_tok_s")
        .and_then(|v| v.as_f64())
        .context("plain rate missing")?;
    let max = d.max_verify_len();
    let run = |l: &mut Loaded, d: &mut dyn Drafter, len: Option<usize>, tau: Option<f64>| {
        let mut r = serde_json::Map::new();
        bench_spec(l, d, len, a.spec_tokens, tau, Some(plain_rate), &mut r)?;
        r.get("spec_tok_s")
            .and_then(|v| v.as_f64())
            .context("spec rate missing")
    };
    let mut by_len = Vec::new();
    let lens: Vec<usize> = (1..=max / 2).map(|i| 2 * i).chain([max]).collect();
    let mut lens_seen = Vec::new();
    for len in lens {
        if lens_seen.contains(&len) {
            continue;
        }
        lens_seen.push(len);
        let rate = run(l, d, Some(len), a.replay_tau)?;
        by_len.push((len as f64, rate));
    }
    let mut by_tau_adaptive = Vec::new();
    let mut by_tau_full = Vec::new();
    for tau in [1.5, 2.0, 3.0, 4.0, 5.0, 6.55, 8.0] {
        if tau >= max as f64 {
            continue;
        }
        let adaptive = run(l, d, None, Some(tau))?;
        let full = run(l, d, Some(max), Some(tau))?;
        by_tau_adaptive.push((tau, adaptive / plain_rate));
        by_tau_full.push((tau, full / plain_rate));
    }
    let acceptance = match a.replay_tau {
        Some(t) => format!("replayed tau {t}"),
        None => format!("{} acceptance", d.name()),
    };
    let charts = [
        crate::dev::plot::Chart {
            title: format!("tokens/s vs verify length ({acceptance})"),
            x_label: "verify length (tokens)".into(),
            y_label: "tokens/s".into(),
            series: vec![
                crate::dev::plot::Series {
                    label: "speculative, fixed length".into(),
                    points: by_len.clone(),
                },
                crate::dev::plot::Series {
                    label: "plain decoding".into(),
                    points: vec![(2.0, plain_rate), (max as f64, plain_rate)],
                },
            ],
        },
        crate::dev::plot::Chart {
            title: "speedup over plain vs replayed tau".into(),
            x_label: "tau (tokens per verify step)".into(),
            y_label: "speedup".into(),
            series: vec![
                crate::dev::plot::Series {
                    label: "adaptive length".into(),
                    points: by_tau_adaptive.clone(),
                },
                crate::dev::plot::Series {
                    label: format!("fixed length {max}"),
                    points: by_tau_full.clone(),
                },
            ],
        },
    ];
    crate::dev::plot::write_png(path, &charts, 1400, 560)?;
    let pairs = |v: &[(f64, f64)], k: &str, y: &str| -> serde_json::Value {
        v.iter()
            .map(|&(x, r)| serde_json::json!({k: x, y: r}))
            .collect()
    };
    result.insert("sweep_len_tok_s".into(), pairs(&by_len, "len", "tok_s"));
    result.insert(
        "sweep_tau_adaptive_speedup".into(),
        pairs(&by_tau_adaptive, "tau", "speedup"),
    );
    result.insert(
        "sweep_tau_full_block_speedup".into(),
        pairs(&by_tau_full, "tau", "speedup"),
    );
    tracing::info!("wrote {}", path.display());
    Ok(())
}
