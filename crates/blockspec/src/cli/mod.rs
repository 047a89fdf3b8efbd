//! The `blockspec` command line: `run`, `tokenize`, `bench`, `info`, `synth`, `convert-draft`,
//! `serve`. Each subcommand's file turns its flags into the library's configs and calls it.
//!
//! Every failure prints one line `error: ...` naming the problem and exits with status 2.

mod args;
mod bench;
mod convert;
mod inspect;
mod run;
mod serve;
mod synth;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use std::io::Write;
use std::path::Path;

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
    Run(run::RunArgs),
    /// Print the token ids of a text.
    Tokenize(inspect::TokenizeArgs),
    /// Measure prompt processing and decoding speed.
    Bench(bench::BenchArgs),
    /// Print a model's metadata, tensors and memory use.
    Info(inspect::InfoArgs),
    /// Write synthetic random-weight models (for tests and timing only).
    Synth(synth::SynthArgs),
    /// Convert a DFlash drafter (z-lab directory or GGUF) to a `dflash` GGUF (llama.cpp's spelling).
    ConvertDraft(convert::ConvertDraftArgs),
    /// Serve an OpenAI- and llama-server-compatible HTTP API.
    Serve(serve::ServeArgs),
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
    ("-to", "--timeout"),
];

/// Rewrite llama.cpp's flags of [`LLAMA_FLAGS`] to ours.
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
        Command::Run(a) => run::cmd_run(a),
        Command::Tokenize(a) => inspect::cmd_tokenize(a),
        Command::Bench(a) => bench::cmd_bench(a),
        Command::Info(a) => inspect::cmd_info(a),
        Command::Synth(a) => synth::cmd_synth(a),
        Command::ConvertDraft(a) => convert::cmd_convert_draft(a),
        Command::Serve(a) => serve::cmd_serve(a),
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

/// An error and its causes on one line.
fn one_line(e: &anyhow::Error) -> String {
    format!("{e:#}").replace('\n', " ")
}

/// Log to stderr: warnings, or everything with `-v` (`BLOCKSPEC_LOG` overrides).
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

/// A text file's contents, the error naming the flag that gave it.
fn read_text(path: &Path, what: &str) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("{what}: cannot read {}", path.display()))
}
