//! The `blockspec` command line: `run`, `tokenize`, `bench`, `info`, `synth`, `convert-draft`.
//!
//! Every failure prints one line `error: ...` naming the problem and exits with status 2.

use crate::decode::draft::dflash::DFlashWeights;
use crate::decode::draft::Drafter;
use crate::decode::generate::{generate, GenerateOptions};
use crate::decode::sampling::{Sampler, SamplingParams};
use crate::decode::spec::{generate_speculative, SpecOptions, SpecParts};
use crate::format::gguf::Gguf;
use crate::model::Model;
use crate::runtime::engine::{Engine, Outputs};
use crate::runtime::profile;
use crate::session::{DraftSource, LoadedModel};
use crate::text::tokenizer::Tokenizer;
use anyhow::{bail, Context as _, Result};
use clap::{Args, Parser, Subcommand};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

#[derive(Parser, Debug)]
#[command(
    name = "blockspec",
    version,
    about = "LLM inference on ggml with DFlash speculative decoding"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Generate text from a prompt (or a chat) and stream it to stdout.
    Run(RunArgs),
    /// Print the token ids of a text.
    Tokenize(TokenizeArgs),
    /// Measure prompt processing and decoding speed.
    Bench(BenchArgs),
    /// Print a model's metadata, tensors and memory use.
    Info(InfoArgs),
    /// Write synthetic random-weight models (for tests and timing only).
    Synth(SynthArgs),
    /// Convert a DFlash drafter (z-lab directory or GGUF) to a `dflash` GGUF (llama.cpp's spelling).
    ConvertDraft(ConvertDraftArgs),
    /// Serve an OpenAI- and llama-server-compatible HTTP API.
    Serve(ServeArgs),
}

#[derive(Args, Debug)]
struct ConvertDraftArgs {
    /// The drafter: a z-lab directory (config.json + safetensors) or a DFlash GGUF (llama.cpp,
    /// Luce or BeeLlama spelling).
    input: PathBuf,
    /// Output GGUF file.
    #[arg(short = 'o', long = "output")]
    output: PathBuf,
    /// `llama`: llama.cpp's `dflash` GGUF, with the target's tokenizer copied in (llama.cpp loads
    /// a drafter only with it; give --target unless the input GGUF has it). `blockspec`: the same
    /// tensors and keys, tokenizer optional (blockspec takes it from the target).
    #[arg(long, default_value = "llama")]
    spelling: String,
    /// Matrix type: f16, bf16, f32, q8_0, q4_0, or `keep` (as stored). Norms are always f32.
    #[arg(long = "type", default_value = "f16")]
    ty: String,
    /// The target GGUF: its tokenizer.* keys are copied in, and its layer count gives the default
    /// taps of a z-lab config that lists none.
    #[arg(long)]
    target: Option<PathBuf>,
    /// general.name of the output.
    #[arg(long, default_value = "DFlash drafter")]
    name: String,
}

#[derive(Args, Debug)]
struct ServeArgs {
    #[command(flatten)]
    model: ModelArgs,
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
    /// Accepted for llama-server command lines: chat templates are always Jinja here.
    #[arg(long = "jinja")]
    jinja: bool,
    /// Accepted for llama-server command lines (also -fa): attention is always flash attention.
    #[arg(long = "flash-attn", num_args = 0..=1, default_missing_value = "on")]
    flash_attn: Option<String>,
}

#[derive(Args, Debug)]
struct SynthArgs {
    /// Write a random DFlash drafter (llama.cpp `dflash` GGUF) matching this target GGUF.
    #[arg(
        long = "dflash-for",
        required_unless_present = "like",
        conflicts_with = "like"
    )]
    dflash_for: Option<PathBuf>,
    /// Write a random-weight target with the shapes of: qwen3-8b, qwen3-4b, llama-3.1-8b,
    /// qwen2.5-1.5b.
    #[arg(long = "like")]
    like: Option<String>,
    /// Weight types of a --like target: q4_k_m (llama.cpp's mix), q8_0, f16.
    #[arg(long = "type", default_value = "q4_k_m")]
    ty: String,
    /// Layers of a --like target (default: the real model's).
    #[arg(long = "layers")]
    layers: Option<usize>,
    /// Copy the tokenizer of this GGUF (same vocabulary size) into a --like target; default a
    /// synthetic byte-level vocabulary.
    #[arg(long = "tokenizer-from")]
    tokenizer_from: Option<PathBuf>,
    /// Output file.
    #[arg(short = 'o', long = "output")]
    output: PathBuf,
    #[arg(long = "draft-layers", default_value_t = 5)]
    draft_layers: usize,
    #[arg(long = "block-size", default_value_t = 16)]
    block_size: usize,
    /// Target layers to tap (comma-separated, 0-based; default: the reference rule for 5 taps).
    #[arg(long = "target-layers", value_delimiter = ',')]
    target_layers: Vec<usize>,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[derive(Args, Debug, Clone)]
struct ModelArgs {
    /// Model GGUF file.
    #[arg(short = 'm', long = "model")]
    model: PathBuf,
    /// CPU threads (default: all available cores).
    #[arg(short = 't', long = "threads")]
    threads: Option<usize>,
    /// Where to run: cpu, cuda[:N] (also gpu[:N]: the N-th GPU ggml sees), or auto (the first
    /// GPU if this build has a GPU backend and one is visible, else the CPU).
    #[arg(long = "device", default_value = "auto")]
    device: String,
    /// Layers on the GPU (also -ngl): 0 runs everything on the CPU; any number >= the model's
    /// layer count (default) puts the whole model on the GPU. Partial offload is not supported yet.
    #[arg(long = "n-gpu-layers", default_value_t = 999)]
    n_gpu_layers: usize,
    /// Context size in tokens (default: the model's training context, capped at 8192).
    #[arg(short = 'c', long = "ctx-size")]
    ctx_size: Option<usize>,
    /// Largest batch evaluated in one graph (also -ub).
    #[arg(long = "ubatch-size", default_value_t = 512)]
    ubatch: usize,
    /// KV cache type for K: f16, q8_0, q4_0, f32 (also -ctk).
    #[arg(long = "cache-type-k", default_value = "f16")]
    cache_type_k: String,
    /// KV cache type for V (also -ctv).
    #[arg(long = "cache-type-v", default_value = "f16")]
    cache_type_v: String,
    /// Show ggml's log and debug messages.
    #[arg(short = 'v', long)]
    verbose: bool,
    /// Drafter for speculative decoding: a z-lab DFlash directory or a DFlash GGUF (also -md).
    #[arg(long = "draft", visible_alias = "model-draft")]
    draft: Option<PathBuf>,
    /// Draft source: dflash, draft (a classic draft model), ngram, none. Also accepts llama.cpp's
    /// --spec-type spellings (draft-dflash, draft-simple, ngram-simple, none).
    #[arg(long = "spec", visible_alias = "spec-type")]
    spec: Option<String>,
    /// Verify exactly this many tokens per step (1..=block size) instead of choosing the length
    /// that pays on this machine.
    #[arg(long = "block-size")]
    block_size: Option<usize>,
    /// At most this many drafts per step for a draft model or n-gram lookup (the length is
    /// still chosen adaptively below it). DFlash drafts its own block size.
    #[arg(long = "spec-draft-n-max", default_value_t = 15)]
    draft_n_max: usize,
    /// A draft model stops drafting when its top probability falls below this (0: never).
    #[arg(
        long = "spec-draft-p-min",
        visible_alias = "draft-p-min",
        default_value_t = 0.0
    )]
    draft_p_min: f32,
    /// N-gram lookup: the n-gram size looked up in the token history (shorter ones down to 2
    /// are tried when it is not found).
    #[arg(
        long = "spec-ngram-size-n",
        visible_alias = "spec-ngram-simple-size-n",
        default_value_t = 3
    )]
    ngram_n: usize,
    /// Quantize a DFlash drafter's float weights at load: q8_0 or q4_0 (default: as stored).
    #[arg(long = "draft-type")]
    draft_type: Option<String>,
    /// Attend to at most this many past positions in the drafter (0: all; the target is unaffected).
    #[arg(long = "draft-ctx", default_value_t = 0)]
    draft_ctx: usize,
    /// A DFlash drafter drafts from the first N token ids only: its head reads N rows of the
    /// target's output matrix instead of all (BPE ids are in merge order, common tokens first).
    /// The output does not change; rarer tokens are just never drafted. Default: all.
    #[arg(long = "draft-vocab")]
    draft_vocab: Option<usize>,
    /// How speculative verification evaluates the target. `fast` (default): the fastest kernels
    /// and full blocks; every token is the target's own choice, computed in a batch, so where
    /// two tokens tie within rounding it may take the other one than one-token decoding would
    /// (as llama.cpp does). `exact`: kernels whose rows do not depend on the batch size, and no
    /// more tokens per step than that holds for: the output is token for token that of plain
    /// decoding with `--batch-invariant` (slower on CPUs).
    #[arg(long = "verify", default_value = "fast")]
    verify: String,
    /// Use batch-size-independent kernels (no weight repacking) also without a drafter, so plain
    /// decoding reproduces speculative output token for token. Speculation always uses them.
    #[arg(long = "batch-invariant")]
    batch_invariant: bool,
}

/// The speculative decoding mode a command line asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SpecKind {
    None,
    DFlash,
    /// A classic draft model (`-md` with an ordinary GGUF).
    DraftModel,
    Ngram,
}

impl ModelArgs {
    /// Whether `--verify fast` was asked for.
    fn fast_verify(&self) -> Result<bool> {
        match self.verify.as_str() {
            "exact" => Ok(false),
            "fast" => Ok(true),
            other => bail!("--verify {other:?}: expected exact or fast"),
        }
    }

    /// The mode from --spec, or from what --draft points at (a DFlash drafter or a model).
    fn spec_kind(&self) -> Result<SpecKind> {
        let is_dflash = |p: &Path| {
            crate::decode::draft::dflash::is_dflash(p)
                .with_context(|| format!("--draft {}", p.display()))
        };
        let kind = match (self.spec.as_deref(), &self.draft) {
            (None, None) | (Some("none"), _) => SpecKind::None,
            (None, Some(p)) => {
                if is_dflash(p)? {
                    SpecKind::DFlash
                } else {
                    SpecKind::DraftModel
                }
            }
            (Some("dflash" | "draft-dflash"), Some(p)) => {
                if !is_dflash(p)? {
                    bail!(
                        "--spec dflash: {} is not a DFlash drafter (use --spec draft for a classic draft model)",
                        p.display()
                    );
                }
                SpecKind::DFlash
            }
            (Some("draft" | "draft-simple"), Some(p)) => {
                if is_dflash(p)? {
                    bail!(
                        "--spec draft: {} is a DFlash drafter (use --spec dflash)",
                        p.display()
                    );
                }
                SpecKind::DraftModel
            }
            (Some(k @ ("dflash" | "draft-dflash" | "draft" | "draft-simple")), None) => {
                bail!("--spec {k} needs a drafter: --draft PATH (also -md)")
            }
            (Some("ngram" | "ngram-simple"), None) => SpecKind::Ngram,
            (Some(k @ ("ngram" | "ngram-simple")), Some(_)) => {
                bail!("--spec {k} uses no draft model: drop --draft")
            }
            (Some(other), _) => {
                bail!("--spec {other:?}: expected dflash, draft, ngram or none (or llama.cpp's draft-dflash, draft-simple, ngram-simple)")
            }
        };
        self.fast_verify()?;
        if kind != SpecKind::None && self.draft_n_max == 0 {
            bail!("--spec-draft-n-max must be at least 1");
        }
        Ok(kind)
    }
}

#[derive(Args, Debug)]
struct RunArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Prompt text (special tokens written inline are parsed).
    #[arg(short = 'p', long = "prompt", conflicts_with_all = ["chat_file", "file"])]
    prompt: Option<String>,
    /// Read the prompt text from a file.
    #[arg(short = 'f', long = "file", conflicts_with = "chat_file")]
    file: Option<PathBuf>,
    /// An OpenAI-style JSON messages array; the model's chat template is applied.
    #[arg(long = "chat-file")]
    chat_file: Option<PathBuf>,
    /// Use this Jinja chat template file instead of the model's.
    #[arg(long = "chat-template-file")]
    chat_template_file: Option<PathBuf>,
    /// Tokens to generate (-1: until end of generation or a full context).
    #[arg(short = 'n', long = "n-predict", default_value_t = -1, allow_negative_numbers = true)]
    n_predict: i64,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Stop when this text appears (repeatable).
    #[arg(long = "stop")]
    stop: Vec<String>,
    /// Do not stop at end-of-generation tokens.
    #[arg(long = "ignore-eos")]
    ignore_eos: bool,
    /// Print one JSON object (prompt_tokens, tokens, text, timings) instead of streaming text.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug, Clone)]
struct SamplingArgs {
    /// Temperature (0: greedy).
    #[arg(long = "temp", default_value_t = 0.8)]
    temp: f32,
    /// Top-k (0: off).
    #[arg(long = "top-k", default_value_t = 40)]
    top_k: i32,
    /// Top-p (1: off).
    #[arg(long = "top-p", default_value_t = 0.95)]
    top_p: f32,
    /// Min-p (0: off).
    #[arg(long = "min-p", default_value_t = 0.05)]
    min_p: f32,
    /// Random seed (default: random).
    #[arg(short = 's', long = "seed")]
    seed: Option<u64>,
    /// Repetition penalty (1: off).
    #[arg(long = "repeat-penalty", default_value_t = 1.0)]
    repeat_penalty: f32,
    /// Tokens the penalties look back over (-1: all).
    #[arg(
        long = "repeat-last-n",
        default_value_t = 64,
        allow_negative_numbers = true
    )]
    repeat_last_n: i32,
    #[arg(long = "presence-penalty", default_value_t = 0.0)]
    presence_penalty: f32,
    #[arg(long = "frequency-penalty", default_value_t = 0.0)]
    frequency_penalty: f32,
}

impl SamplingArgs {
    fn params(&self) -> Result<SamplingParams> {
        let seed = self.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0)
        });
        let p = SamplingParams {
            temperature: self.temp,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            seed,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n: self.repeat_last_n,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
        };
        p.validate().map_err(anyhow::Error::msg)?;
        Ok(p)
    }
}

#[derive(Args, Debug)]
struct TokenizeArgs {
    #[arg(short = 'm', long = "model")]
    model: PathBuf,
    /// The text to tokenize.
    #[arg(long = "text", short = 'p')]
    text: String,
    /// Treat special tokens written in the text as plain text.
    #[arg(long = "no-parse-special")]
    no_parse_special: bool,
    /// Print a JSON array of ids.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct BenchArgs {
    #[command(flatten)]
    model: ModelArgs,
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
    /// Timing only: replay this mean acceptance (tokens per full block, e.g. 6.55) instead of
    /// checking drafts; the drafter and the verify still run for real (see docs/BENCHMARKS.md).
    #[arg(long = "replay-tau")]
    replay_tau: Option<f64>,
}

#[derive(Args, Debug)]
struct InfoArgs {
    #[arg(short = 'm', long = "model")]
    model: PathBuf,
    /// Also list every tensor.
    #[arg(long)]
    tensors: bool,
}

/// llama.cpp's multi-letter single-dash flags, mapped to our long names (clap's short flags are
/// one letter), so scripts written for llama-cli / llama-bench work unchanged.
const LLAMA_FLAGS: &[(&str, &str)] = &[
    ("-md", "--draft"),
    ("--spec-draft-model", "--draft"),
    ("-ub", "--ubatch-size"),
    ("-ngl", "--n-gpu-layers"),
    ("--gpu-layers", "--n-gpu-layers"),
    ("-dev", "--device"),
    ("-ctk", "--cache-type-k"),
    ("-ctv", "--cache-type-v"),
    ("-np", "--parallel"),
    ("-fa", "--flash-attn"),
];

fn normalize_args(args: impl Iterator<Item = std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    args.map(|a| {
        match a
            .to_str()
            .and_then(|s| LLAMA_FLAGS.iter().find(|(f, _)| *f == s))
        {
            Some((_, long)) => (*long).into(),
            None => a,
        }
    })
    .collect()
}

/// Entry point: returns the process exit status.
pub fn main() -> i32 {
    let cli = match Cli::try_parse_from(normalize_args(std::env::args_os())) {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    let verbose = match &cli.cmd {
        Command::Run(a) => a.model.verbose,
        Command::Bench(a) => a.model.verbose,
        Command::Serve(a) => a.model.verbose,
        _ => false,
    };
    init_logging(verbose);
    let r = match cli.cmd {
        Command::Run(a) => cmd_run(a),
        Command::Tokenize(a) => cmd_tokenize(a),
        Command::Bench(a) => cmd_bench(a),
        Command::Info(a) => cmd_info(a),
        Command::Synth(a) => cmd_synth(a),
        Command::ConvertDraft(a) => cmd_convert_draft(a),
        Command::Serve(a) => cmd_serve(a),
    };
    match r {
        Ok(()) => 0,
        Err(e) => {
            let _ = std::io::stdout().flush();
            eprintln!("error: {}", one_line(&e));
            2
        }
    }
}

fn one_line(e: &anyhow::Error) -> String {
    format!("{e:#}").replace('\n', " ")
}

fn init_logging(verbose: bool) {
    ggml::set_log_verbosity(verbose);
    let filter = if verbose { "debug" } else { "warn" };
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BLOCKSPEC_LOG")
                .unwrap_or_else(|_| filter.into()),
        )
        .try_init();
}

fn open_gguf(path: &Path) -> Result<Gguf> {
    if !path.exists() {
        bail!("model file not found: {}", path.display());
    }
    Ok(Gguf::open(path)?)
}

fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(4)
}

/// The backend `--device` / `-ngl` ask for.
fn open_backend(args: &ModelArgs, threads: usize) -> Result<ggml::Backend> {
    let dev = args.device.to_ascii_lowercase();
    let gpu_index = match dev.as_str() {
        "cpu" => None,
        "auto" => (!ggml::Backend::gpus().is_empty()).then_some(0),
        "cuda" | "gpu" => Some(0),
        d => match d
            .strip_prefix("cuda:")
            .or_else(|| d.strip_prefix("gpu:"))
            .map(str::parse::<usize>)
        {
            Some(Ok(i)) => Some(i),
            _ => bail!(
                "--device {:?}: expected cpu, cuda, cuda:N or auto",
                args.device
            ),
        },
    };
    match gpu_index {
        Some(i) if args.n_gpu_layers > 0 => {
            let b = ggml::Backend::gpu(i, threads)
                .map_err(|e| anyhow::anyhow!("--device {}: {e}", args.device))?;
            tracing::info!("running on {}", b.name());
            Ok(b)
        }
        _ => Ok(ggml::Backend::cpu(threads)),
    }
}

/// A loaded model ready to generate.
struct Loaded {
    tokenizer: Tokenizer,
    engine: Engine,
    gguf: Gguf,
    drafter: Option<Box<dyn Drafter>>,
    /// `--verify fast`: full verify blocks on the fastest kernels.
    fast_verify: bool,
    /// The memory plan plus the reserved compute buffers.
    planned_bytes: usize,
    /// Free device memory before loading (GPU backends only).
    device_free_at_start: Option<usize>,
}

fn load(args: &ModelArgs, show_progress: bool) -> Result<Loaded> {
    let m = load_model(args, show_progress)?;
    let session = m.new_session()?;
    let compute =
        session.engine.compute_bytes() + session.drafter.as_ref().map_or(0, |d| d.compute_bytes());
    let mib = |b: usize| b as f64 / 1048576.0;
    tracing::info!(
        "memory: planned {:.1} MiB before loading, + compute buffers {:.1} MiB = {:.1} MiB",
        mib(m.planned_bytes),
        mib(compute),
        mib(m.planned_bytes + compute)
    );
    Ok(Loaded {
        tokenizer: m.tokenizer,
        engine: session.engine,
        gguf: m.gguf,
        drafter: session.drafter,
        fast_verify: m.fast_verify,
        planned_bytes: m.planned_bytes + compute,
        device_free_at_start: m.device_free_at_start,
    })
}

/// Load the target (and a draft model's weights) once; sessions are made from the result.
fn load_model(args: &ModelArgs, show_progress: bool) -> Result<LoadedModel> {
    let gguf = open_gguf(&args.model)?;
    let tokenizer = Tokenizer::from_gguf(&gguf)?;
    let threads = args.threads.unwrap_or_else(default_threads);
    if threads == 0 {
        bail!("--threads must be at least 1");
    }
    let spec = args.spec_kind()?;
    if let Some(b) = args.block_size {
        if b == 0 {
            bail!("--block-size must be at least 1");
        }
    }
    if args.ubatch == 0 {
        bail!("--ubatch-size must be at least 1");
    }
    let backend = Arc::new(open_backend(args, threads)?);
    let t0 = Instant::now();
    // `--verify exact`: batch-invariant target kernels, so a verify batch computes every row
    // exactly as a one-token step would and the output is the same token for token.
    let fast_verify = args.fast_verify()?;
    let repack = match spec {
        SpecKind::None => !args.batch_invariant,
        _ => fast_verify,
    };
    let type_k = ggml::Type::parse(&args.cache_type_k)
        .with_context(|| format!("--cache-type-k: unknown type {:?}", args.cache_type_k))?;
    let type_v = ggml::Type::parse(&args.cache_type_v)
        .with_context(|| format!("--cache-type-v: unknown type {:?}", args.cache_type_v))?;
    let hp = crate::model::hparams_for(&gguf)?;
    // Memory plan, before anything is allocated: weights + KV cache (+ the drafter's file) must
    // fit the device; compute buffers are reserved (and reported) after.
    let n_ctx = match args.ctx_size {
        Some(0) | None => hp.n_ctx_train.min(8192),
        Some(c) => c,
    };
    let plan = MemoryPlan::new(args, &gguf, &hp, n_ctx, type_k, type_v, spec)?;
    let mib = |b: usize| b as f64 / 1048576.0;
    tracing::info!("memory plan on {}: {}", backend.name(), plan.describe());
    let device_free_at_start = if backend.is_cpu() {
        None
    } else {
        let (free, total) = backend.memory();
        if plan.total() > free {
            bail!(
                "the model does not fit {}: it needs {} (for -c {n_ctx}); {:.0} of {:.0} MiB are free; lower -c or use a smaller model",
                backend.name(),
                plan.describe(),
                mib(free),
                mib(total)
            );
        }
        Some(free)
    };
    if !backend.is_cpu() && args.n_gpu_layers < hp.n_layer {
        bail!(
            "-ngl {}: partial offload is not supported yet; use -ngl 0 (CPU) or at least the model's layer count",
            args.n_gpu_layers
        );
    }
    let model = Arc::new(Model::load_with(&gguf, &backend, show_progress, repack)?);
    let draft_block = args.draft_n_max + 1;
    let draft_type = match &args.draft_type {
        None => None,
        Some(name) => match ggml::Type::parse(name) {
            Some(t) if [ggml::Type::Q8_0, ggml::Type::Q4_0].contains(&t) => Some(t),
            _ => bail!("--draft-type {name:?}: expected q8_0 or q4_0"),
        },
    };
    if draft_type.is_some() && spec != SpecKind::DFlash {
        bail!("--draft-type applies to DFlash drafters only");
    }
    if args.draft_vocab.is_some() && spec != SpecKind::DFlash {
        bail!("--draft-vocab applies to DFlash drafters only");
    }
    let draft = match (spec, &args.draft) {
        (SpecKind::DFlash, Some(p)) => DraftSource::DFlash {
            weights: DFlashWeights::load(p, &model, &backend, draft_type)?,
            window: args.draft_ctx,
            vocab: args.draft_vocab,
        },
        (SpecKind::DraftModel, Some(p)) => {
            let dg = open_gguf(p).context("--draft")?;
            crate::decode::draft::model::check_vocab(&gguf, &dg)?;
            // The draft model's rounding does not matter (the target decides): fast kernels.
            let dm = Arc::new(Model::load_with(&dg, &backend, show_progress, true)?);
            DraftSource::DraftModel {
                model: dm,
                p_min: args.draft_p_min,
            }
        }
        (SpecKind::Ngram, _) => DraftSource::Ngram { n: args.ngram_n },
        _ => DraftSource::None,
    };
    tracing::info!(
        "loaded {} ({:?}, {} layers) in {:.2}s",
        args.model.display(),
        model.hp.arch,
        model.hp.n_layer,
        t0.elapsed().as_secs_f64(),
    );
    Ok(LoadedModel {
        gguf,
        tokenizer,
        model,
        backend,
        n_ctx,
        n_ubatch: args.ubatch,
        type_k,
        type_v,
        draft,
        draft_block,
        fast_verify,
        block_size: args.block_size,
        open_backend: {
            let args = args.clone();
            Arc::new(move || open_backend(&args, threads))
        },
        planned_bytes: plan.total(),
        device_free_at_start,
    })
}

/// Device memory taken since before loading, as the device reports it (GPU backends only).
fn device_used_bytes(l: &Loaded) -> Option<usize> {
    let free0 = l.device_free_at_start?;
    Some(free0.saturating_sub(l.engine.device_memory().0))
}

/// Device memory needed before anything is allocated: weights, KV cache, captured features,
/// the drafter's weights and cache. Compute buffers are only known once reserved (logged after).
struct MemoryPlan {
    weights: usize,
    kv: usize,
    features: usize,
    draft_weights: usize,
    draft_kv: usize,
}

impl MemoryPlan {
    fn new(
        args: &ModelArgs,
        gguf: &Gguf,
        hp: &crate::model::Hparams,
        n_ctx: usize,
        type_k: ggml::Type,
        type_v: ggml::Type,
        spec: SpecKind,
    ) -> Result<MemoryPlan> {
        let kv_row = |t: ggml::Type, n: usize| t.row_bytes(n as u64).unwrap_or(0) as usize;
        // Caches hold whole KV_PAD spans of cells (see Engine::new).
        let pad =
            |n: usize| n.div_ceil(crate::runtime::engine::KV_PAD) * crate::runtime::engine::KV_PAD;
        let kv = hp.n_layer
            * pad(n_ctx)
            * (kv_row(type_k, hp.n_embd_kv()) + kv_row(type_v, hp.n_embd_kv()));
        let file_bytes = |p: &Path| std::fs::metadata(p).map(|m| m.len() as usize).unwrap_or(0);
        let (mut features, mut draft_weights, mut draft_kv) = (0, 0, 0);
        match (spec, &args.draft) {
            (SpecKind::DFlash, Some(p)) => {
                let c = crate::decode::draft::dflash::read_config(p, hp.n_layer)?;
                let rows = args.ubatch.min(n_ctx);
                features = c.target_layer_ids.len() * hp.n_embd * rows * 4;
                let cells = pad(n_ctx + c.block_size + 1);
                let row = kv_row(ggml::Type::F16, c.head_dim * c.n_head_kv);
                draft_kv = c.n_layer * 2 * cells * row;
                draft_weights = if p.is_dir() {
                    std::fs::read_dir(p)
                        .map(|d| d.flatten().map(|e| file_bytes(&e.path())).sum())
                        .unwrap_or(0)
                } else {
                    file_bytes(p)
                };
                // Requantized 16-bit matrices shrink to the new type's bytes per weight.
                if let Some(t) = args.draft_type.as_deref().and_then(ggml::Type::parse) {
                    let per_32 = t.row_bytes(32).unwrap_or(64) as f64;
                    draft_weights = (draft_weights as f64 * per_32 / 64.0) as usize;
                }
            }
            (SpecKind::DraftModel, Some(p)) => {
                let dg = open_gguf(p).context("--draft")?;
                let dhp = crate::model::hparams_for(&dg)?;
                draft_weights = dg.tensor_data_bytes() as usize;
                draft_kv = dhp.n_layer * pad(n_ctx) * 2 * kv_row(ggml::Type::F16, dhp.n_embd_kv());
            }
            _ => {}
        }
        Ok(MemoryPlan {
            weights: gguf.tensor_data_bytes() as usize,
            kv,
            features,
            draft_weights,
            draft_kv,
        })
    }

    fn total(&self) -> usize {
        self.weights + self.kv + self.features + self.draft_weights + self.draft_kv
    }

    fn describe(&self) -> String {
        let mib = |b: usize| b as f64 / 1048576.0;
        format!(
            "weights {:.1} MiB + KV cache {:.1} + features {:.1} + drafter {:.1} + draft cache {:.1} = {:.1} MiB",
            mib(self.weights),
            mib(self.kv),
            mib(self.features),
            mib(self.draft_weights),
            mib(self.draft_kv),
            mib(self.total())
        )
    }
}

fn read_text(path: &Path, what: &str) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("{what}: cannot read {}", path.display()))
}

fn cmd_run(a: RunArgs) -> Result<()> {
    let params = a.sampling.params()?;
    let max_tokens = match a.n_predict {
        n if n < 0 => None,
        n => Some(n as usize),
    };
    // Check inputs before the (slow) model load.
    let chat_messages = match &a.chat_file {
        Some(p) => {
            let s = read_text(p, "--chat-file")?;
            let v: serde_json::Value = serde_json::from_str(&s)
                .with_context(|| format!("--chat-file {}: invalid JSON", p.display()))?;
            Some(v)
        }
        None => None,
    };
    let template_override = match &a.chat_template_file {
        Some(p) => Some(read_text(p, "--chat-template-file")?),
        None => None,
    };
    let raw_prompt = match (&a.prompt, &a.file) {
        (Some(p), _) => Some(p.clone()),
        (None, Some(f)) => Some(read_text(f, "--file")?),
        (None, None) => None,
    };
    if raw_prompt.is_none() && chat_messages.is_none() {
        bail!("no prompt: give -p PROMPT, -f FILE or --chat-file MESSAGES.json");
    }

    let mut l = load(&a.model, !a.json)?;
    let prompt_text = match chat_messages {
        Some(msgs) => {
            let tmpl = crate::text::chat::ChatTemplate::from_gguf(&l.gguf, template_override)?;
            tmpl.render(&msgs, true, None, None)?
        }
        None => raw_prompt.unwrap_or_default(),
    };
    let prompt = l.tokenizer.encode(&prompt_text, true, true)?;
    let mut sampler = Sampler::new(params);
    let opts = GenerateOptions {
        max_tokens,
        ignore_eos: a.ignore_eos,
        stop: a.stop.clone(),
        stop_tokens: vec![],
        ..Default::default()
    };
    let mut stdout = std::io::stdout().lock();
    let json = a.json;
    let on_text = |piece: &str| {
        if !json {
            let _ = stdout.write_all(piece.as_bytes());
            let _ = stdout.flush();
        }
    };
    let (g, spec) = match l.drafter.as_mut() {
        Some(d) => {
            let mut so = SpecOptions {
                fixed_len: a.model.block_size,
                allow_inexact_batches: l.fast_verify,
                policy: None,
                replay: None,
            };
            let (g, s) = generate_speculative(
                SpecParts {
                    engine: &mut l.engine,
                    drafter: d.as_mut(),
                    tok: &l.tokenizer,
                    sampler: &mut sampler,
                },
                &prompt,
                &opts,
                &mut so,
                on_text,
            )?;
            (g, Some(s))
        }
        None => (
            generate(
                &mut l.engine,
                &l.tokenizer,
                &mut sampler,
                &prompt,
                &opts,
                on_text,
            )?,
            None,
        ),
    };
    if json {
        let mut timings = serde_json::to_value(&g.timings)?;
        if let Some(s) = &spec {
            timings["draft_n"] = s.drafted.into();
            timings["draft_n_accepted"] = s.accepted.into();
        }
        let mut out = serde_json::json!({
            "prompt": prompt_text,
            "prompt_tokens": prompt,
            "tokens": g.tokens,
            "text": g.text,
            "stop_type": g.stop,
            "timings": timings,
        });
        if let Some(s) = &spec {
            out["spec"] = serde_json::to_value(s)?;
        }
        writeln!(stdout, "{}", serde_json::to_string(&out)?)?;
    } else {
        writeln!(stdout)?;
        let t = &g.timings;
        eprintln!(
            "\nprompt: {} tokens in {:.1} ms ({:.1} tok/s) | generated: {} tokens in {:.1} ms ({:.1} tok/s)",
            t.prompt_n, t.prompt_ms, t.prompt_per_second, t.predicted_n, t.predicted_ms, t.predicted_per_second
        );
        if let Some(s) = &spec {
            eprintln!(
                "speculative: tau {:.2} over {} steps ({} speculative), {} of {} drafts accepted",
                s.tau, s.steps, s.spec_steps, s.accepted, s.drafted
            );
        }
    }
    Ok(())
}

fn cmd_serve(a: ServeArgs) -> Result<()> {
    if a.parallel == 0 {
        bail!("--parallel (-np) must be at least 1");
    }
    let _ = a.jinja;
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
    let mut margs = a.model.clone();
    // Check the drafter flags now, before the listener starts.
    margs.spec_kind()?;
    if let Some(c) = margs.ctx_size.filter(|&c| c > 0) {
        let per_slot = c / a.parallel;
        if per_slot == 0 {
            bail!("-c {c} split between {} slots leaves none", a.parallel);
        }
        margs.ctx_size = Some(per_slot);
    }
    if margs.threads.is_none() && a.parallel > 1 {
        // Slots generate at the same time: share the cores instead of oversubscribing them.
        margs.threads = Some((default_threads() / a.parallel).max(1));
    }
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
    };
    crate::server::serve(cfg, move || load_model(&margs, false))
}

fn cmd_tokenize(a: TokenizeArgs) -> Result<()> {
    let g = open_gguf(&a.model)?;
    let tok = Tokenizer::from_gguf(&g)?;
    let ids = tok.encode(&a.text, true, !a.no_parse_special)?;
    if a.json {
        println!("{}", serde_json::to_string(&ids)?);
    } else {
        let s: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
        println!("{}", s.join(" "));
    }
    Ok(())
}

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

fn cmd_bench(a: BenchArgs) -> Result<()> {
    if a.reps == 0 {
        bail!("--repetitions must be at least 1");
    }
    // Like llama-bench: unless -c is given, the context is just large enough for the largest test.
    let mut margs = a.model.clone();
    if margs.ctx_size.is_none() && margs.spec_kind()? == SpecKind::None {
        let need = a.n_prompt.iter().max().copied().unwrap_or(0).max(
            a.n_depth.iter().max().copied().unwrap_or(0)
                + a.n_gen.iter().max().copied().unwrap_or(0),
        );
        margs.ctx_size = Some(need + 1);
    }
    let mut l = load(&margs, !a.json)?;
    let n_vocab = l.engine.n_vocab();
    let threads = a.model.threads.unwrap_or_else(default_threads);
    let mut rows = Vec::new();
    let mut result = serde_json::Map::new();
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
    let mut device_used = device_used_bytes(&l);
    let spec_rows = match l.drafter.take() {
        Some(mut d) => {
            let rows = bench_spec(
                &mut l,
                d.as_mut(),
                a.model.block_size,
                a.spec_tokens,
                a.replay_tau,
                None,
                &mut result,
            )?;
            if let Some(path) = &a.plot {
                bench_sweep(&mut l, d.as_mut(), &a, path, &mut result)?;
            }
            // Measured while the drafter still holds its memory.
            device_used = device_used.max(device_used_bytes(&l));
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

/// Prompts for the plain-vs-speculative comparison (code and chat, as users run them); the
/// same file drives scripts/ref/llama-spec-peer.py, so llama.cpp is measured on the same text.
const BENCH_PROMPTS_JSON: &str = include_str!("bench_prompts.json");

fn bench_prompts() -> Result<Vec<String>> {
    serde_json::from_str(BENCH_PROMPTS_JSON).context("bench_prompts.json")
}

/// Plain and speculative greedy generation on the same prompts and the same loaded target.
fn bench_spec(
    l: &mut Loaded,
    d: &mut dyn Drafter,
    fixed_len: Option<usize>,
    n_tokens: usize,
    replay_tau: Option<f64>,
    known_plain_rate: Option<f64>,
    result: &mut serde_json::Map<String, serde_json::Value>,
) -> Result<Vec<String>> {
    let replay = match replay_tau {
        Some(t) => Some(
            crate::decode::spec::ReplayAcceptance::for_tau(t, d.max_block(), 7)
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
    let (mut draft_ms, mut verify_ms, mut host_ms) = (0.0f64, 0.0f64, 0.0f64);
    let mut n_identical = 0usize;
    let mut phases: Vec<(&'static str, f64, u64)> = Vec::new();
    // One policy across the prompts, as a server slot keeps it across requests.
    let mut so = SpecOptions {
        fixed_len,
        allow_inexact_batches: l.fast_verify,
        policy: None,
        replay: replay.clone(),
    };
    let prompts = bench_prompts()?;
    for p in &prompts {
        let prompt = l.tokenizer.encode(p, true, true)?;
        let g = if known_plain_rate.is_none() {
            let g = generate(
                &mut l.engine,
                &l.tokenizer,
                &mut Sampler::new(SamplingParams::greedy()),
                &prompt,
                &opts,
                |_| {},
            )?;
            plain.0 += g.tokens.len();
            plain.1 += g.timings.predicted_ms;
            Some(g)
        } else {
            None
        };
        profile::reset();
        let (gs, st) = generate_speculative(
            SpecParts {
                engine: &mut l.engine,
                drafter: d,
                tok: &l.tokenizer,
                sampler: &mut Sampler::new(SamplingParams::greedy()),
            },
            &prompt,
            &opts,
            &mut so,
            |_| {},
        )?;
        n_identical += usize::from(g.is_some_and(|g| gs.tokens == g.tokens));
        spec.0 += gs.tokens.len();
        spec.1 += gs.timings.predicted_ms;
        steps += st.steps;
        spec_steps += st.spec_steps;
        drafted += st.drafted;
        accepted += st.accepted;
        draft_ms += st.draft_ms;
        verify_ms += st.verify_ms;
        host_ms += st.sample_ms + st.other_ms;
        for (name, ms, n) in profile::totals() {
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
        && !l.fast_verify
        && replay.is_none()
        && known_plain_rate.is_none()
    {
        bail!("speculative output differed from plain output with --verify exact: this is a bug, please report it");
    }
    Ok(vec![
        format!(
            "| plain{} | {} | {plain_rate:.2} | 1.00 | - | - |",
            if l.fast_verify {
                ""
            } else {
                " (batch-invariant)"
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
fn bench_sweep(
    l: &mut Loaded,
    d: &mut dyn Drafter,
    a: &BenchArgs,
    path: &Path,
    result: &mut serde_json::Map<String, serde_json::Value>,
) -> Result<()> {
    let plain_rate = result
        .get("plain_tok_s")
        .and_then(|v| v.as_f64())
        .context("plain rate missing")?;
    let max = d.max_block();
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

fn cmd_synth(a: SynthArgs) -> Result<()> {
    if let Some(like) = &a.like {
        let names: Vec<&str> = crate::dev::synth::TARGET_SHAPES
            .iter()
            .map(|s| s.name)
            .collect();
        let Some(shape) = crate::dev::synth::TARGET_SHAPES
            .iter()
            .find(|s| s.name == like)
        else {
            bail!("--like {like:?}: expected one of {}", names.join(", "));
        };
        let Some(ty) = crate::dev::synth::SynthType::parse(&a.ty) else {
            bail!("--type {:?}: expected q4_k_m, q8_0 or f16", a.ty);
        };
        if a.layers == Some(0) {
            bail!("--layers must be at least 1");
        }
        let tok = match &a.tokenizer_from {
            Some(p) => Some(open_gguf(p).context("--tokenizer-from")?),
            None => None,
        };
        crate::dev::synth::write_synthetic_target(
            &a.output,
            shape,
            ty,
            a.layers,
            tok.as_ref(),
            a.seed,
        )
        .with_context(|| format!("cannot write {}", a.output.display()))?;
        eprintln!(
            "wrote synthetic {like} ({}) to {} (random weights, for timing only)",
            a.ty,
            a.output.display()
        );
        return Ok(());
    }
    let Some(target) = &a.dflash_for else {
        bail!("synth: give --like NAME (a target) or --dflash-for TARGET (a drafter)");
    };
    let g = open_gguf(target)?;
    let hp = crate::model::hparams_for(&g)?;
    if a.block_size < 2 {
        bail!("--block-size must be at least 2");
    }
    let taps = if a.target_layers.is_empty() {
        crate::decode::draft::dflash::default_target_layers(hp.n_layer, 5.min(hp.n_layer))
    } else {
        a.target_layers.clone()
    };
    if let Some(&bad) = taps.iter().find(|&&l| l >= hp.n_layer) {
        bail!(
            "--target-layers: layer {bad} out of range (the target has {} layers)",
            hp.n_layer
        );
    }
    // A token id that exists in the target's vocabulary (its last), as the mask token.
    let mask = (hp.n_vocab - 1) as u32;
    let spec = crate::dev::synth::DraftSpec {
        n_layer: a.draft_layers,
        block_size: a.block_size,
        target_layers: taps,
        mask_token_id: mask,
        seed: a.seed,
        scale: 0.02,
    };
    let tokenizer_kv = g
        .keys()
        .iter()
        .filter(|k| k.starts_with("tokenizer."))
        .map(|k| (k.clone(), g.get(k).expect("listed key").clone()))
        .collect();
    crate::dev::synth::write_random_dflash_with(&a.output, &hp, &spec, tokenizer_kv)
        .with_context(|| format!("cannot write {}", a.output.display()))?;
    eprintln!(
        "wrote random DFlash drafter {} (synthetic, for timing and tests only)",
        a.output.display()
    );
    Ok(())
}

fn cmd_convert_draft(a: ConvertDraftArgs) -> Result<()> {
    use crate::decode::draft::dflash::{convert_draft, ConvertOptions};
    let llama = match a.spelling.as_str() {
        "llama" | "llama.cpp" => true,
        "blockspec" => false,
        other => bail!("--spelling {other:?}: expected llama or blockspec"),
    };
    let ty = match a.ty.to_ascii_lowercase().as_str() {
        "keep" => None,
        name => match ggml::Type::parse(name) {
            Some(t)
                if [
                    ggml::Type::F32,
                    ggml::Type::F16,
                    ggml::Type::BF16,
                    ggml::Type::Q8_0,
                    ggml::Type::Q4_0,
                ]
                .contains(&t) =>
            {
                Some(t)
            }
            _ => bail!(
                "--type {:?}: expected f16, bf16, f32, q8_0, q4_0 or keep",
                a.ty
            ),
        },
    };
    if !a.input.exists() {
        bail!("drafter not found: {}", a.input.display());
    }
    let tok_kv = |g: &Gguf| -> Vec<(String, crate::format::gguf::Value)> {
        g.keys()
            .iter()
            .filter(|k| k.starts_with("tokenizer."))
            .map(|k| (k.clone(), g.get(k).expect("listed key").clone()))
            .collect()
    };
    let (extra, target_n_layer) = match &a.target {
        Some(t) => {
            let g = open_gguf(t).context("--target")?;
            let hp = crate::model::hparams_for(&g)?;
            (tok_kv(&g), Some(hp.n_layer))
        }
        None if a.input.is_file() => (tok_kv(&open_gguf(&a.input)?), None),
        None => (Vec::new(), None),
    };
    if llama && !extra.iter().any(|(k, _)| k == "tokenizer.ggml.tokens") {
        bail!(
            "--spelling llama: llama.cpp loads a dflash drafter only with its target's tokenizer; give --target TARGET.gguf (or --spelling blockspec)"
        );
    }
    let r = convert_draft(
        &a.input,
        &a.output,
        &ConvertOptions {
            ty,
            extra,
            name: a.name.clone(),
            target_n_layer,
        },
    )?;
    if let Some(t) = &a.target {
        let g = open_gguf(t)?;
        let target = crate::model::hparams_for(&g)?;
        if r.cfg.n_embd != target.n_embd {
            eprintln!(
                "warning: drafter hidden size {} differs from the target's {}",
                r.cfg.n_embd, target.n_embd
            );
        }
    }
    eprintln!(
        "wrote {} ({} tensors, {:.1} MiB, {}): {} layers, hidden {}, block {}, target layers {:?}, mask token {}",
        a.output.display(),
        r.n_tensors,
        r.bytes as f64 / 1048576.0,
        a.ty,
        r.cfg.n_layer,
        r.cfg.n_embd,
        r.cfg.block_size,
        r.cfg.target_layer_ids,
        r.cfg.mask_token_id
    );
    Ok(())
}

fn cmd_info(a: InfoArgs) -> Result<()> {
    let g = open_gguf(&a.model)?;
    println!(
        "file: {} (GGUF v{}, {} file(s))",
        a.model.display(),
        g.version,
        g.files.len()
    );
    for k in g.keys() {
        let v = g.get(k).expect("listed key");
        let shown = match v {
            crate::format::gguf::Value::Array(items) => format!("[array of {}]", items.len()),
            crate::format::gguf::Value::Str(s) if s.len() > 80 => {
                format!("{:?}...", &s[..s.floor_char_boundary(80)])
            }
            other => format!("{other:?}"),
        };
        println!("  {k} = {shown}");
    }
    let mut by_type: std::collections::BTreeMap<String, (usize, u64)> = Default::default();
    for t in &g.tensors {
        let e = by_type.entry(t.ty.name().to_string()).or_default();
        e.0 += 1;
        e.1 += t.nbytes;
    }
    println!(
        "tensors: {} ({:.1} MiB)",
        g.tensors.len(),
        g.tensor_data_bytes() as f64 / 1048576.0
    );
    for (ty, (n, b)) in by_type {
        println!("  {ty}: {n} tensors, {:.1} MiB", b as f64 / 1048576.0);
    }
    if a.tensors {
        for t in &g.tensors {
            println!("  {} {} {:?}", t.name, t.ty, &t.ne[..t.n_dims]);
        }
    }
    Ok(())
}
