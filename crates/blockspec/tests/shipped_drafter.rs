//! The DFlash drafter we ship (training/drafters/, trained by training/ on the H100 for
//! Qwen2.5-Coder-1.5B-Instruct): it is the file the training record describes, it is lossless
//! with `--verify exact`, and it has learned the target: on held-out code prompts its drafts are
//! accepted far more often than a random drafter's (tau ~1.0).

mod common;

use blockspec::decode::draft::dflash::{DFlashDrafter, DrafterOptions};
use blockspec::decode::generate::GenerateOptions;
use blockspec::format::gguf::Gguf;
use blockspec::model::Model;
use blockspec::runtime::engine::{Engine, EngineConfig};
use blockspec::text::tokenizer::Tokenizer;
use std::sync::Arc;

const NAME: &str = "qwen2.5-coder-1.5b-instruct-dflash-q8_0";

fn record() -> serde_json::Value {
    let p = common::repo_file(&format!("training/runs/{NAME}/summary.json"));
    serde_json::from_str(&std::fs::read_to_string(&p).expect("training record")).expect("json")
}

#[test]
fn shipped_drafter_matches_its_training_record() {
    let path = common::repo_file(&format!("training/drafters/{NAME}.gguf"));
    let bytes = std::fs::metadata(&path).expect("the shipped drafter").len();
    let rec = record();
    assert_eq!(
        bytes,
        rec["draft_gguf"]["bytes"].as_u64().expect("bytes"),
        "{} is not the file the training record describes",
        path.display()
    );
    // The limit for a committed drafter.
    assert!(bytes <= 64_000_000, "{bytes} bytes");
    let g = Gguf::open(&path).expect("open");
    let cfg = &rec["drafter_config"];
    let layers = cfg["dflash_config"]["target_layer_ids"]
        .as_array()
        .expect("target_layer_ids");
    assert_eq!(layers.len(), 5, "5 tapped target layers");
    assert!(!g.tensors.is_empty());
}

#[test]
fn shipped_drafter_is_lossless_and_learned_the_target() {
    let Some(tpath) = common::model(common::MODEL_15B) else {
        return;
    };
    ggml::set_log_verbosity(false);
    let g = Gguf::open(&tpath).expect("open");
    let tok = Tokenizer::from_gguf(&g).expect("tokenizer");
    let backend = Arc::new(ggml::Backend::cpu(2));
    // Speculation runs the target with batch-invariant kernels (see Model::load_with).
    let model = Arc::new(Model::load_with(&g, &backend, false, false).expect("load"));
    let dpath = common::repo_file(&format!("training/drafters/{NAME}.gguf"));
    let mut drafter = DFlashDrafter::load(
        &dpath,
        model.clone(),
        backend.clone(),
        &DrafterOptions::new(2048),
    )
    .expect("drafter");
    let cfg = EngineConfig {
        n_ctx: 2048,
        n_ubatch: 512,
        type_k: ggml::Type::F16,
        type_v: ggml::Type::F16,
        capture_layers: drafter.target_layers().to_vec(),
    };
    let mut engine = Engine::new(model, backend, cfg).expect("engine");
    let template = blockspec::text::chat::ChatTemplate::from_gguf(&g, None).expect("template");
    // Held-out prompts (training/eval_prompts.json: never seen in training), chat template.
    let eval: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(common::repo_file("training/eval_prompts.json"))
            .expect("eval prompts"),
    )
    .expect("json");
    let code: Vec<&str> = eval["prompts"]
        .as_array()
        .expect("prompts")
        .iter()
        .filter(|p| p["kind"] == "code")
        .filter_map(|p| p["text"].as_str())
        .take(3)
        .collect();
    assert_eq!(code.len(), 3);
    let (mut accepted, mut steps) = (0usize, 0usize);
    for (i, text) in code.iter().enumerate() {
        let msgs = serde_json::json!([{"role": "user", "content": text}]);
        let prompt = template
            .render(&msgs, true, None, None)
            .and_then(|s| tok.encode(&s, true, true))
            .expect("prompt");
        common::assert_lossless(
            &mut engine,
            &tok,
            &mut drafter,
            &format!("code {i}"),
            &prompt,
            48,
        );
        let (_, stats) = common::fixed_block_greedy(
            &mut engine,
            &mut drafter,
            &tok,
            &prompt,
            &GenerateOptions {
                max_tokens: Some(96),
                ..Default::default()
            },
            16,
        );
        accepted += stats.accepted;
        steps += stats.steps;
    }
    // tau = tokens per verify step (accepted drafts + the target's own token). The training
    // record measured 3.3 on the 20 held-out code prompts (this short run: 2.49); a random
    // drafter gives ~1.0, the first, smaller drafter 2.04 here.
    let tau = 1.0 + accepted as f64 / steps as f64;
    eprintln!("shipped drafter: tau {tau:.2} over {steps} steps at block 16");
    assert!(
        tau >= 2.0,
        "tau {tau:.2}: the shipped drafter predicts no better than chance"
    );
}
