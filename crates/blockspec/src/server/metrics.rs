//! Prometheus metrics with llama-server's names (prefix `llamacpp:`), text format 0.0.4.

use crate::decode::generate::Generation;
use crate::decode::spec::SpecStats;
use std::fmt::Write as _;
use std::sync::Mutex;

#[derive(Default)]
struct Counters {
    prompt_tokens_total: u64,
    prompt_seconds_total: f64,
    tokens_predicted_total: u64,
    tokens_predicted_seconds_total: f64,
    /// Target evaluations (prompt batches + decode / verify steps).
    n_decode_total: u64,
    requests_processing: u64,
    requests_deferred: u64,
    /// Throughput of the most recent request (llama-server reports the last period's).
    prompt_tokens_seconds: f64,
    predicted_tokens_seconds: f64,
    spec_draft_tokens_total: u64,
    spec_accepted_tokens_total: u64,
    spec_drafts_total: u64,
    /// Accepted drafts per draft position (0-based).
    spec_accepted_per_pos: Vec<u64>,
    requests_total: u64,
    requests_cancelled_total: u64,
}

#[derive(Default)]
pub struct Metrics {
    c: Mutex<Counters>,
}

impl Metrics {
    fn with<R>(&self, f: impl FnOnce(&mut Counters) -> R) -> R {
        // A panic elsewhere while holding the lock must not take metrics down with it.
        let mut g = self.c.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    pub fn set_queue(&self, processing: usize, deferred: usize) {
        self.with(|c| {
            c.requests_processing = processing as u64;
            c.requests_deferred = deferred as u64;
        })
    }

    pub fn record(&self, g: &Generation, spec: Option<&SpecStats>, cancelled: bool) {
        self.with(|c| {
            c.requests_total += 1;
            c.requests_cancelled_total += u64::from(cancelled);
            let t = &g.timings;
            c.prompt_tokens_total += t.prompt_n as u64;
            c.prompt_seconds_total += t.prompt_ms / 1000.0;
            c.tokens_predicted_total += t.predicted_n as u64;
            c.tokens_predicted_seconds_total += t.predicted_ms / 1000.0;
            c.prompt_tokens_seconds = t.prompt_per_second;
            c.predicted_tokens_seconds = t.predicted_per_second;
            c.n_decode_total += 1;
            match spec {
                Some(s) => {
                    c.n_decode_total += s.steps as u64;
                    c.spec_draft_tokens_total += s.drafted as u64;
                    c.spec_accepted_tokens_total += s.accepted as u64;
                    c.spec_drafts_total += s.spec_steps as u64;
                    for &len in &s.accept_lengths {
                        for pos in 0..len.saturating_sub(1) {
                            if c.spec_accepted_per_pos.len() <= pos {
                                c.spec_accepted_per_pos.resize(pos + 1, 0);
                            }
                            c.spec_accepted_per_pos[pos] += 1;
                        }
                    }
                }
                None => c.n_decode_total += t.predicted_n.saturating_sub(1) as u64,
            }
        })
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        self.with(|c| {
            let mut s = String::new();
            let mut metric = |name: &str, kind: &str, help: &str, value: String| {
                let _ = writeln!(s, "# HELP llamacpp:{name} {help}");
                let _ = writeln!(s, "# TYPE llamacpp:{name} {kind}");
                let _ = writeln!(s, "llamacpp:{name} {value}");
            };
            metric(
                "prompt_tokens_total",
                "counter",
                "Number of prompt tokens processed.",
                c.prompt_tokens_total.to_string(),
            );
            metric(
                "prompt_seconds_total",
                "counter",
                "Prompt process time",
                c.prompt_seconds_total.to_string(),
            );
            metric(
                "tokens_predicted_total",
                "counter",
                "Number of generation tokens processed.",
                c.tokens_predicted_total.to_string(),
            );
            metric(
                "tokens_predicted_seconds_total",
                "counter",
                "Predict process time",
                c.tokens_predicted_seconds_total.to_string(),
            );
            metric(
                "n_decode_total",
                "counter",
                "Total number of target evaluations (prompt batches, decode and verify steps).",
                c.n_decode_total.to_string(),
            );
            metric(
                "prompt_tokens_seconds",
                "gauge",
                "Average prompt throughput in tokens/s.",
                c.prompt_tokens_seconds.to_string(),
            );
            metric(
                "predicted_tokens_seconds",
                "gauge",
                "Average generation throughput in tokens/s.",
                c.predicted_tokens_seconds.to_string(),
            );
            metric(
                "requests_processing",
                "gauge",
                "Number of requests processing.",
                c.requests_processing.to_string(),
            );
            metric(
                "requests_deferred",
                "gauge",
                "Number of requests deferred.",
                c.requests_deferred.to_string(),
            );
            metric(
                "spec_decode_num_draft_tokens_total",
                "counter",
                "Draft tokens verified by the target.",
                c.spec_draft_tokens_total.to_string(),
            );
            metric(
                "spec_decode_num_accepted_tokens_total",
                "counter",
                "Draft tokens accepted.",
                c.spec_accepted_tokens_total.to_string(),
            );
            metric(
                "spec_decode_num_drafts_total",
                "counter",
                "Speculative steps (drafts verified).",
                c.spec_drafts_total.to_string(),
            );
            let _ = writeln!(
                s,
                "# HELP llamacpp:spec_decode_num_accepted_tokens_per_pos_total Draft tokens accepted at each draft position."
            );
            let _ = writeln!(
                s,
                "# TYPE llamacpp:spec_decode_num_accepted_tokens_per_pos_total counter"
            );
            for (pos, n) in c.spec_accepted_per_pos.iter().enumerate() {
                let _ = writeln!(
                    s,
                    "llamacpp:spec_decode_num_accepted_tokens_per_pos_total{{position=\"{pos}\"}} {n}"
                );
            }
            s
        })
    }
}
