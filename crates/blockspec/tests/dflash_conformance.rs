//! Conformance with the z-lab reference `dflash_generate` (dflash 0.1.0, torch CPU, f32) on a
//! tiny random Qwen3 target and a tiny trained DFlash drafter, both made by
//! scripts/ref/dflash/make_dflash_fixture.py: the same generated tokens and the same acceptance
//! length at every step, for the z-lab checkpoint and for its llama.cpp `dflash` GGUF.

mod common;

use common::ids;

use blockspec::decode::draft::dflash::{DFlashDrafter, DrafterOptions};
use blockspec::decode::draft::{DraftCost, Drafter, Features};
use blockspec::decode::generate::GenerateOptions;
use blockspec::format::gguf::Gguf;
use blockspec::model::Model;
use blockspec::runtime::engine::{Engine, EngineConfig};
use blockspec::text::tokenizer::Tokenizer;
use std::path::Path;
use std::sync::Arc;

fn lens(v: &serde_json::Value) -> Vec<usize> {
    v.as_array()
        .expect("lens")
        .iter()
        .map(|x| x.as_u64().expect("len") as usize)
        .collect()
}

fn check(drafter_path: &Path) {
    let accepted = run(drafter_path, None, 0);
    // The fixture exercises real acceptance (memorised prompts accept whole blocks).
    assert!(accepted >= 20, "only {accepted} drafts accepted");
}

/// Generate every reference case; returns the number of drafts accepted. Tokens must equal the
/// reference always (the target decides); acceptance lengths too when the drafter's weights
/// are as stored (`weight_type` None).
fn run(drafter_path: &Path, weight_type: Option<ggml::Type>, window: usize) -> usize {
    run_with(drafter_path, weight_type, window, None)
}

/// Like [`run`]; `vocab`: `--draft-vocab`, and then every draft must be below it.
fn run_with(
    drafter_path: &Path,
    weight_type: Option<ggml::Type>,
    window: usize,
    vocab: Option<usize>,
) -> usize {
    let fx = common::read_json("dflash/reference.json");
    let g = Gguf::open(&common::fixture("tiny/qwen3/model-f32.gguf")).expect("target");
    let tok = Tokenizer::from_gguf(&g).expect("tokenizer");
    let backend = Arc::new(ggml::Backend::cpu(2));
    let model = Arc::new(Model::load_with(&g, &backend, false, false).expect("load"));
    let taps: Vec<usize> = fx["target_layer_ids"]
        .as_array()
        .expect("taps")
        .iter()
        .map(|x| x.as_u64().expect("id") as usize)
        .collect();
    let cfg = EngineConfig {
        n_ctx: 256,
        n_ubatch: 64,
        type_k: ggml::Type::F16,
        type_v: ggml::Type::F16,
        capture_layers: taps.clone(),
    };
    let mut engine = Engine::new(model.clone(), backend.clone(), cfg).expect("engine");
    let mut drafter = DFlashDrafter::load(
        drafter_path,
        model,
        backend,
        &DrafterOptions {
            window,
            weight_type,
            ..DrafterOptions::new(256)
        },
    )
    .expect("drafter");
    if let Some(t) = weight_type {
        assert!(
            drafter.matrix_types().iter().all(|&m| m == t),
            "not requantized: {:?}",
            drafter.matrix_types()
        );
    }
    assert_eq!(drafter.target_layers(), &taps[..]);
    if let Some(n) = vocab {
        drafter.set_draft_vocab(n).expect("draft vocab");
    }
    let mut drafter = BelowVocab {
        inner: drafter,
        below: vocab.unwrap_or(usize::MAX),
    };
    let block = fx["block_size"].as_u64().expect("block") as usize;
    let max_new = fx["generation"]["max_new_tokens"]
        .as_u64()
        .expect("max_new") as usize;

    let mut cases: Vec<(String, serde_json::Value)> = Vec::new();
    for key in ["cases", "cases_seen"] {
        for (i, c) in fx[key].as_array().expect("cases").iter().enumerate() {
            cases.push((format!("{key}[{i}]"), c.clone()));
        }
    }
    cases.push(("stop_case".into(), fx["stop_case"].clone()));
    let mut accepted = 0;
    for (name, c) in cases {
        let opts = GenerateOptions {
            max_tokens: Some(max_new),
            ignore_eos: true,
            stop: vec![],
            stop_tokens: c.get("stop_token_ids").map(ids).unwrap_or_default(),
            ..Default::default()
        };
        let (gen, stats) = common::fixed_block_greedy(
            &mut engine,
            &mut drafter,
            &tok,
            &ids(&c["prompt"]),
            &opts,
            block,
        );
        assert_eq!(
            gen.tokens,
            ids(&c["generated"]),
            "{name}: tokens differ from dflash_generate"
        );
        if weight_type.is_none() && window == 0 && vocab.is_none() {
            assert_eq!(
                stats.accept_lengths,
                lens(&c["accept_lengths"]),
                "{name}: acceptance lengths differ"
            );
        }
        accepted += stats.accepted;
    }
    accepted
}

/// `--draft-type q8_0 / q4_0`: the drafter's float matrices are quantized at load. The output
/// stays the reference's (the target decides) and most of the acceptance survives.
#[test]
fn requantized_drafter_keeps_its_acceptance() {
    let path = common::fixture("dflash/tiny-qwen3-drafter");
    let full = run(&path, None, 0);
    let q8 = run(&path, Some(ggml::Type::Q8_0), 0);
    let q4 = run(&path, Some(ggml::Type::Q4_0), 0);
    assert!(q8 * 10 >= full * 9, "q8_0 accepted {q8} of f32's {full}");
    assert!(q4 * 2 >= full, "q4_0 accepted {q4} of f32's {full}");
}

#[test]
fn zlab_checkpoint_matches_reference() {
    check(&common::fixture("dflash/tiny-qwen3-drafter"));
}

#[test]
fn llama_cpp_gguf_matches_reference() {
    check(&common::fixture("dflash/tiny-qwen3-drafter.gguf"));
}

/// `--draft-ctx N`: the drafter attends to the last N positions only. The output stays the
/// reference's (the target decides), and a window longer than every context changes nothing.
#[test]
fn draft_window_keeps_output_and_a_long_window_changes_nothing() {
    let path = common::fixture("dflash/tiny-qwen3-drafter");
    let full = run(&path, None, 0);
    let long = run(&path, None, 10_000);
    assert_eq!(
        long, full,
        "a window longer than the context changed acceptance"
    );
    // A 2-position window starves the drafter of context: still lossless (run() checks the
    // tokens), and the drafter still runs.
    let short = run(&path, None, 2);
    assert!(
        short <= full,
        "window 2 accepted {short}, full context {full}"
    );
}

/// Forwards to a DFlash drafter and checks that no draft is at or above `below`.
struct BelowVocab {
    inner: DFlashDrafter,
    below: usize,
}

impl Drafter for BelowVocab {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn max_verify_len(&self) -> usize {
        self.inner.max_verify_len()
    }
    fn target_layers(&self) -> &[usize] {
        Drafter::target_layers(&self.inner)
    }
    fn cost(&self) -> DraftCost {
        self.inner.cost()
    }
    fn begin(&mut self, prompt: &[u32], features: &[f32]) -> anyhow::Result<()> {
        self.inner.begin(prompt, features)
    }
    fn sync(&mut self) -> anyhow::Result<()> {
        self.inner.sync()
    }
    fn draft(&mut self, last: u32, len: usize) -> anyhow::Result<Vec<u32>> {
        let d = Drafter::draft(&mut self.inner, last, len)?;
        assert!(
            d.iter().all(|&t| (t as usize) < self.below),
            "draft {d:?} outside the draft vocabulary of {}",
            self.below
        );
        Ok(d)
    }
    fn reads_device_features(&self) -> bool {
        self.inner.reads_device_features()
    }
    fn release_capture(&mut self) -> anyhow::Result<()> {
        self.inner.release_capture()
    }
    fn commit(&mut self, tokens: &[u32], features: Features) -> anyhow::Result<()> {
        self.inner.commit(tokens, features)
    }
}

/// `--draft-vocab N`: the drafter's head scores token ids below N only. Output stays the
/// reference's (the target decides); the whole vocabulary changes nothing; a vocabulary that
/// leaves out many of the generated tokens (ids up to 510 here) accepts fewer drafts.
#[test]
fn draft_vocab_keeps_output_and_narrows_drafts() {
    let path = common::fixture("dflash/tiny-qwen3-drafter");
    let full = run(&path, None, 0);
    let n_vocab = Gguf::open(&common::fixture("tiny/qwen3/model-f32.gguf"))
        .expect("target")
        .str_array("tokenizer.ggml.tokens")
        .expect("tokens")
        .expect("a vocabulary")
        .len();
    assert_eq!(run_with(&path, None, 0, Some(n_vocab)), full);
    let narrow = run_with(&path, None, 0, Some(256));
    assert!(
        narrow < full,
        "vocabulary 256 accepted {narrow}, the full one {full}"
    );
    assert!(narrow > 0, "ids below 256 are still drafted and accepted");
}
