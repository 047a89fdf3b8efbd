//! `blockspec bench`: prefill and decode speed like llama-bench, and with a drafter the
//! plain-vs-speculative comparison ([`spec`]).

mod spec;

use super::args::ModelArgs;
use crate::decode::draft::Drafter;
use crate::runtime::engine::{Engine, Outputs};
use crate::session::load::{load, DraftConfig};
use crate::session::{LoadedModel, Session};
use anyhow::{bail, Result};
use clap::Args;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args, Debug)]
pub(super) struct BenchArgs {
    #[command(flatten)]
    pub(super) model: ModelArgs,
    /// Prompt tokens per prefill test (comma-separated list, like llama-bench -p).
    #[arg(
        short = 'p',
        long = "n-prompt",
        default_value = "64",
        value_delimiter = ','
    )]
    n_prompt: Vec<usize>,
    /// Tokens per decode test (like llama-bench -n).
    #[arg(
        short = 'n',
        long = "n-gen",
        default_value = "32",
        value_delimiter = ','
    )]
    n_gen: Vec<usize>,
    /// Context depth before each decode test: that many tokens are prefilled first (like
    /// llama-bench -d; comma-separated list).
    #[arg(
        short = 'd',
        long = "n-depth",
        default_value = "0",
        value_delimiter = ','
    )]
    n_depth: Vec<usize>,
    /// Repetitions per test; the median is reported.
    #[arg(short = 'r', long = "repetitions", default_value_t = 5)]
    reps: usize,
    /// Print JSON instead of a markdown table.
    #[arg(long)]
    json: bool,
    /// Tokens per prompt in the plain-vs-speculative comparison (with --draft).
    #[arg(long = "spec-tokens", default_value_t = 128)]
    spec_tokens: usize,
    /// With a drafter: also sweep the verify length (fixed blocks) and the replayed acceptance
    /// (tau), and draw tokens/s against both into this PNG (results also in the JSON).
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Timing only: replay this mean acceptance (tokens per step at the drafter's longest verify, e.g. 6.55) instead of
    /// checking drafts; the drafter and the verify still run for real (see docs/BENCHMARKS.md).
    #[arg(long = "replay-tau")]
    replay_tau: Option<f64>,
}

/// What the benchmarks run on: the loaded target and its one session's engine and drafter.
struct Loaded {
    model: LoadedModel,
    engine: Engine,
    drafter: Option<Box<dyn Drafter>>,
    /// The memory plan plus the reserved compute buffers.
    planned_bytes: usize,
}

impl Loaded {
    /// Device memory taken since before loading (GPU backends only).
    fn device_used_bytes(&self) -> Option<usize> {
        self.model.device_used_bytes(&self.engine)
    }
}

/// A result table's rows: (test name, median tokens/s).
type Rows = Vec<(String, f64)>;

/// A JSON object of results.
type JsonMap = serde_json::Map<String, serde_json::Value>;

/// `blockspec bench`: load (with a context just large enough, unless -c says), run the tests,
/// print a markdown table or JSON.
pub(super) fn cmd_bench(a: BenchArgs) -> Result<()> {
    if a.reps == 0 {
        bail!("--repetitions must be at least 1");
    }
    let mut cfg = a.model.load_config(!a.json)?;
    // Like llama-bench: unless -c is given, the context is just large enough for the largest test.
    if cfg.n_ctx.is_none() && matches!(cfg.draft, DraftConfig::None) {
        let need = a.n_prompt.iter().max().copied().unwrap_or(0).max(
            a.n_depth.iter().max().copied().unwrap_or(0)
                + a.n_gen.iter().max().copied().unwrap_or(0),
        );
        cfg.n_ctx = Some(need + 1);
    }
    let model = load(&cfg)?;
    let (session, planned_bytes) = model.first_session()?;
    let Session {
        engine, drafter, ..
    } = session;
    let mut l = Loaded {
        model,
        engine,
        drafter,
        planned_bytes,
    };
    let mut rows = Vec::new();
    let mut result = JsonMap::new();
    prefill_tests(&mut l, &a, &mut rows, &mut result)?;
    decode_tests(&mut l, &a, &mut rows, &mut result)?;
    let mut device_used = l.device_used_bytes();
    let spec_rows = match l.drafter.take() {
        Some(mut d) => {
            let rows = spec::bench_spec(
                &mut l,
                d.as_mut(),
                a.model.fixed_verify_len,
                a.spec_tokens,
                a.replay_tau,
                None,
                &mut result,
            )?;
            if let Some(path) = &a.plot {
                spec::bench_sweep(&mut l, d.as_mut(), &a, path, &mut result)?;
            }
            // Measured while the drafter still holds its memory.
            device_used = device_used.max(l.device_used_bytes());
            rows
        }
        None => Vec::new(),
    };
    let name = a
        .model
        .model
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let threads = l.model.backend_choice.threads;
    if a.json {
        result.insert("model".into(), name.into());
        result.insert("threads".into(), threads.into());
        result.insert("device".into(), l.engine.backend_name().into());
        result.insert(
            "kv_mib".into(),
            (l.engine.kv_bytes() as f64 / 1048576.0).into(),
        );
        result.insert(
            "compute_mib".into(),
            (l.engine.compute_bytes() as f64 / 1048576.0).into(),
        );
        result.insert("repetitions".into(), a.reps.into());
        result.insert(
            "mem_plan_mib".into(),
            (l.planned_bytes as f64 / 1048576.0).into(),
        );
        if let Some(used) = device_used {
            result.insert(
                "mem_device_used_mib".into(),
                (used as f64 / 1048576.0).into(),
            );
        }
        println!("{}", serde_json::Value::Object(result));
    } else {
        let device = l.engine.backend_name();
        if !rows.is_empty() {
            println!(
                "| model | backend | threads | test | t/s (median of {}) |",
                a.reps
            );
            println!("| --- | --- | ---: | ---: | ---: |");
        }
        for (test, m) in &rows {
            println!("| {name} | {device} | {threads} | {test} | {m:.2} |");
        }
        if !spec_rows.is_empty() {
            if !rows.is_empty() {
                println!();
            }
            println!("| mode | tokens | tok/s | speedup | tau | drafts accepted |");
            println!("| --- | ---: | ---: | ---: | ---: | ---: |");
            for r in spec_rows {
                println!("{r}");
            }
        }
    }
    Ok(())
}

/// `-p`: prefill `np` random tokens into an empty cache, median of `--repetitions`.
fn prefill_tests(
    l: &mut Loaded,
    a: &BenchArgs,
    rows: &mut Rows,
    result: &mut JsonMap,
) -> Result<()> {
    let n_vocab = l.engine.n_vocab();
    for &np in &a.n_prompt {
        if np == 0 {
            continue;
        }
        if np > l.engine.n_ctx() {
            bail!(
                "-p {np}: more than the context size {} (-c)",
                l.engine.n_ctx()
            );
        }
        let toks = bench_tokens(np, n_vocab, np as u64);
        // warm-up
        l.engine.reset();
        l.engine.decode(&toks, Outputs::Last)?;
        let mut rates = Vec::new();
        for _ in 0..a.reps {
            l.engine.reset();
            let t = Instant::now();
            l.engine.decode(&toks, Outputs::Last)?;
            rates.push(np as f64 / t.elapsed().as_secs_f64());
        }
        let m = median(&mut rates);
        rows.push((format!("pp{np}"), m));
        result.insert("prefill_tok_s".into(), m.into());
        result.insert(format!("pp{np}_tok_s"), m.into());
    }
    Ok(())
}

/// `-n` at each `-d`: decode one token at a time after a prefilled context, median of
/// `--repetitions`.
fn decode_tests(
    l: &mut Loaded,
    a: &BenchArgs,
    rows: &mut Rows,
    result: &mut JsonMap,
) -> Result<()> {
    let n_vocab = l.engine.n_vocab();
    for &depth in &a.n_depth {
        for &ng in &a.n_gen {
            if ng == 0 {
                continue;
            }
            if depth + ng + 1 > l.engine.n_ctx() {
                bail!(
                    "-d {depth} -n {ng}: more than the context size {} (-c)",
                    l.engine.n_ctx()
                );
            }
            let toks = bench_tokens(ng, n_vocab, 7 + ng as u64);
            let context = bench_tokens(depth, n_vocab, 11 + depth as u64);
            // Reset, then prefill the context depth (untimed).
            let start = |e: &mut Engine| -> Result<()> {
                e.reset();
                if depth > 0 {
                    e.decode(&context, Outputs::Last)?;
                }
                Ok(())
            };
            start(&mut l.engine)?;
            l.engine.decode(&toks[..1], Outputs::Last)?;
            let suffix = if depth > 0 {
                format!(" @ d{depth}")
            } else {
                String::new()
            };
            // Median tok/s of `reps` decodes of `toks` one token at a time, reading back logits
            // (as llama-bench does) or each step's argmax id (what greedy generation does on a
            // GPU).
            let measure = |e: &mut Engine, argmax: bool| -> Result<f64> {
                let mut rates = Vec::new();
                for _ in 0..a.reps {
                    start(e)?;
                    let t = Instant::now();
                    for &tk in &toks {
                        if argmax {
                            e.decode_argmax(&[tk], Outputs::Last)?;
                        } else {
                            e.decode(&[tk], Outputs::Last)?;
                        }
                    }
                    rates.push(ng as f64 / t.elapsed().as_secs_f64());
                }
                Ok(median(&mut rates))
            };
            let m = measure(&mut l.engine, false)?;
            rows.push((format!("tg{ng}{suffix}"), m));
            let key = if depth > 0 {
                format!("tg{ng}_d{depth}_tok_s")
            } else {
                result.insert("decode_tok_s".into(), m.into());
                format!("tg{ng}_tok_s")
            };
            result.insert(key, m.into());
            if l.engine.prefers_device_argmax() {
                let m = measure(&mut l.engine, true)?;
                rows.push((format!("tg{ng}{suffix} (greedy ids)"), m));
                result.insert(
                    format!("tg{ng}{}_argmax_tok_s", suffix.replace(" @ ", "_")),
                    m.into(),
                );
            }
        }
    }
    Ok(())
}

/// The median (sorts `v`).
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Deterministic pseudo-random token ids (like llama-bench's random prompt tokens).
fn bench_tokens(n: usize, n_vocab: usize, salt: u64) -> Vec<u32> {
    let mut x = 0x9E3779B97F4A7C15u64 ^ salt;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n_vocab as u64) as u32
        })
        .collect()
}
