//! Helpers shared by the integration tests: where the real models and fixtures are.
#![allow(dead_code)]

pub mod hybrid;
pub mod json_schema;
pub mod oracle;
pub mod server;
pub mod stats;

use std::path::PathBuf;

pub const MODEL_05B: &str = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf";
pub const MODEL_15B: &str = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf";

pub fn models_dir() -> PathBuf {
    match std::env::var_os("BLOCKSPEC_MODELS") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
            .join(".cache/blockspec/models"),
    }
}

/// The path of a real model, or None (with a note) when it has not been fetched. CI fetches
/// them (scripts/fetch-models.sh), and sets BLOCKSPEC_REQUIRE_MODELS=1 so a missing model fails.
pub fn model(name: &str) -> Option<PathBuf> {
    let p = models_dir().join(name);
    if p.exists() {
        Some(p)
    } else if std::env::var_os("BLOCKSPEC_REQUIRE_MODELS").is_some() {
        panic!(
            "model {} missing and BLOCKSPEC_REQUIRE_MODELS is set",
            p.display()
        );
    } else {
        eprintln!(
            "skipping: model {} not found (run scripts/fetch-models.sh)",
            p.display()
        );
        None
    }
}

/// A path relative to the repository root.
pub fn repo_file(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel)
}

pub fn fixture(rel: &str) -> PathBuf {
    repo_file("tests/fixtures").join(rel)
}

pub fn read_json(rel: &str) -> serde_json::Value {
    let p = fixture(rel);
    let s = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&s).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A JSON array of token ids.
pub fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .expect("id array")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

/// Run the `blockspec` binary with `args`: (exit code, stdout, stderr).
pub fn blockspec(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_blockspec"))
        .args(args)
        .output()
        .expect("run blockspec");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Greedy generation options: `n` tokens, EOS ignored.
pub fn greedy_opts(n: usize) -> blockspec::decode::generate::GenerateOptions {
    blockspec::decode::generate::GenerateOptions {
        max_tokens: Some(n),
        ignore_eos: true,
        stop: vec![],
        stop_tokens: vec![],
        ..Default::default()
    }
}

/// Greedy speculative generation at a fixed verify length of `block` on the fastest kernels,
/// as the z-lab reference fixtures were made (each call starts a fresh length policy).
pub fn fixed_block_greedy(
    engine: &mut blockspec::runtime::engine::Engine,
    drafter: &mut dyn blockspec::decode::draft::Drafter,
    tok: &blockspec::text::tokenizer::Tokenizer,
    prompt: &[u32],
    opts: &blockspec::decode::generate::GenerateOptions,
    block: usize,
) -> (
    blockspec::decode::generate::Generation,
    blockspec::decode::spec::SpecStats,
) {
    use blockspec::decode::sampling::{Sampler, SamplingParams};
    blockspec::decode::spec::generate_speculative(
        blockspec::decode::spec::SpecParts {
            engine,
            drafter,
            tok,
            sampler: &mut Sampler::new(SamplingParams::greedy()),
        },
        prompt,
        opts,
        &mut blockspec::decode::spec::SpecOptions {
            fixed_len: Some(block),
            allow_inexact_batches: true,
            policy: None,
            replay: None,
            tree_budget: 0,
            tree_chain_seed: false,
            accept_rule: blockspec::decode::spec::AcceptRule::default(),
            ..Default::default()
        },
        |_| {},
    )
    .expect("generate")
}

/// Plain greedy decoding and speculative decoding with `drafter` (`--verify exact`, at a fixed
/// verify length of 4 and at the adaptive length) give the same tokens; returns the
/// speculative stats, fixed length first.
pub fn assert_lossless(
    engine: &mut blockspec::runtime::engine::Engine,
    tok: &blockspec::text::tokenizer::Tokenizer,
    drafter: &mut dyn blockspec::decode::draft::Drafter,
    name: &str,
    prompt: &[u32],
    n: usize,
) -> Vec<blockspec::decode::spec::SpecStats> {
    use blockspec::decode::sampling::{Sampler, SamplingParams};
    let plain = blockspec::decode::generate::generate(
        engine,
        tok,
        &mut Sampler::new(SamplingParams::greedy()),
        prompt,
        &greedy_opts(n),
        |_| {},
    )
    .expect("plain");
    let mut all = Vec::new();
    for fixed in [Some(4), None] {
        let (g, stats) = blockspec::decode::spec::generate_speculative(
            blockspec::decode::spec::SpecParts {
                engine,
                drafter,
                tok,
                sampler: &mut Sampler::new(SamplingParams::greedy()),
            },
            prompt,
            &greedy_opts(n),
            &mut blockspec::decode::spec::SpecOptions {
                fixed_len: fixed,
                ..Default::default()
            },
            |_| {},
        )
        .expect("spec");
        assert_eq!(
            g.tokens,
            plain.tokens,
            "{name}: {} output differs from plain decoding (length {fixed:?})",
            drafter.name()
        );
        all.push(stats);
    }
    all
}

/// What `blockspec run` gives a real model on the CPU with 2 threads and `-c 1024` (the default
/// `--verify auto`, repacked kernels), with `draft` as its drafter.
pub fn cpu_load_config(
    model: PathBuf,
    draft: blockspec::session::load::DraftConfig,
) -> blockspec::session::load::LoadConfig {
    use blockspec::session::load::{Device, LoadConfig, VerifyMode};
    LoadConfig {
        model,
        device: Device::Cpu,
        n_gpu_layers: 0,
        threads: Some(2),
        n_ctx: Some(1024),
        n_ubatch: 512,
        type_k: ggml::Type::F16,
        type_v: ggml::Type::F16,
        draft,
        fixed_verify_len: None,
        spec_tree: 0,
        spec_tree_auto: false,
        accept_rule: Default::default(),
        verify: VerifyMode::Auto,
        batch_invariant: false,
        show_progress: false,
    }
}

/// The tiny DFlash drafter trained on the tiny Qwen3 target (fixtures/dflash/), for `model`.
pub fn tiny_trained_drafter(
    model: std::sync::Arc<blockspec::model::Model>,
    backend: std::sync::Arc<ggml::Backend>,
) -> blockspec::decode::draft::dflash::DFlashDrafter {
    use blockspec::decode::draft::dflash::{DFlashDrafter, DrafterOptions};
    DFlashDrafter::load(
        &fixture("dflash/tiny-qwen3-drafter"),
        model,
        backend,
        &DrafterOptions::new(256),
    )
    .expect("drafter")
}
