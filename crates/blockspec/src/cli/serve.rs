//! `blockspec serve`: the HTTP server's flags.

use super::args::{ModelArgs, SamplingArgs};
use super::read_text;
use anyhow::{bail, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub(super) struct ServeArgs {
    #[command(flatten)]
    pub(super) model: ModelArgs,
    #[arg(long = "host", default_value = "127.0.0.1")]
    host: String,
    /// Port (0: any free port; the chosen one is printed).
    #[arg(long = "port", default_value_t = 8080)]
    port: u16,
    /// Slots: requests generated at the same time, each with its own KV cache and drafter
    /// (also -np). As in llama-server, -c is the total context, split evenly between slots.
    #[arg(long = "parallel", default_value_t = 1)]
    parallel: usize,
    /// Requests that may wait for a free slot; more are answered 503.
    #[arg(long = "queue-size", default_value_t = 64)]
    queue_size: usize,
    /// Require `Authorization: Bearer KEY` on every endpoint but /health and /v1/models.
    #[arg(long = "api-key")]
    api_key: Option<String>,
    /// Use this Jinja chat template file instead of the model's.
    #[arg(long = "chat-template-file")]
    chat_template_file: Option<PathBuf>,
    /// The model name /v1/models lists (default: the file name).
    #[arg(long = "alias")]
    alias: Option<String>,
    /// Seconds a client may take to send a request's headers, and then its body (also -to);
    /// slower requests are cut off (the body with a 408), and idle keep-alive connections are
    /// closed after it.
    #[arg(long = "timeout", default_value_t = 60)]
    timeout: u64,
    /// Connections open at once; one more is answered 503 (with Retry-After) and closed.
    #[arg(long = "max-connections", default_value_t = 256)]
    max_connections: usize,
    /// Largest request body, in MiB (413 above).
    #[arg(long = "max-body-mib", default_value_t = 16)]
    max_body_mib: usize,
    /// Tokens to generate when a request does not say (-1: until end of generation or a full
    /// context).
    #[arg(short = 'n', long = "n-predict", default_value_t = -1, allow_negative_numbers = true)]
    n_predict: i64,
    /// Sampling defaults for fields a request leaves out.
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Serve GET /slots (the default; llama-server's flag).
    #[arg(long = "slots", overrides_with = "no_slots")]
    slots: bool,
    /// Answer GET /slots with 501.
    #[arg(long = "no-slots", overrides_with = "slots")]
    no_slots: bool,
    /// Serve /v1/embeddings and /embeddings: the target's normed last hidden states, pooled
    /// (without it they answer 501, as llama-server's). Completions keep working.
    #[arg(long = "embeddings", alias = "embedding")]
    embeddings: bool,
    /// How embeddings pool the token vectors (default: the model's pooling type; none for a
    /// model without one, which only the native /embeddings serves).
    #[arg(long = "pooling", value_enum)]
    pooling: Option<crate::server::embeddings::Pooling>,
    /// Accepted for llama-server command lines: chat templates are always Jinja here.
    #[arg(long = "jinja")]
    jinja: bool,
    /// Accepted for llama-server command lines (also -fa): attention is always flash attention.
    #[arg(long = "flash-attn", num_args = 0..=1, default_missing_value = "on")]
    flash_attn: Option<String>,
}

/// `blockspec serve`: flags to a server config and a load config, then serve.
pub(super) fn cmd_serve(a: ServeArgs) -> Result<()> {
    if a.parallel == 0 {
        bail!("--parallel (-np) must be at least 1");
    }
    if a.timeout == 0 {
        bail!("--timeout must be at least 1 second");
    }
    if a.max_connections == 0 {
        bail!("--max-connections must be at least 1");
    }
    let _ = (a.jinja, a.slots);
    if let Some(fa) = a.flash_attn.as_deref() {
        if !["on", "auto", "1", "true"].contains(&fa) {
            bail!("--flash-attn {fa:?}: blockspec always uses flash attention (on or auto)");
        }
    }
    let defaults = a.sampling.params()?;
    let template = match &a.chat_template_file {
        Some(p) => Some(read_text(p, "--chat-template-file")?),
        None => None,
    };
    // Check the model flags now, before the listener starts.
    let load = a.model.load_config(false)?;
    let alias = a.alias.clone().unwrap_or_else(|| {
        a.model
            .model
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".to_string())
    });
    let cfg = crate::server::ServerConfig {
        host: a.host.clone(),
        port: a.port,
        n_slots: a.parallel,
        max_queued: a.queue_size,
        api_key: a.api_key.clone(),
        chat_template: template,
        body_limit: a.max_body_mib.saturating_mul(1 << 20),
        model_alias: alias,
        model_path: a.model.model.display().to_string(),
        defaults,
        default_max_tokens: (a.n_predict >= 0).then_some(a.n_predict as usize),
        read_timeout: std::time::Duration::from_secs(a.timeout),
        max_connections: a.max_connections,
        slots_endpoint: !a.no_slots,
        embeddings: a.embeddings,
        pooling: a.pooling,
    };
    crate::server::serve(cfg, load)
}
