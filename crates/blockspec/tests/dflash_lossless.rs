//! DFlash speculative decoding is lossless: with any drafter (here a random-weight one, whose
//! drafts are almost never accepted) the output equals plain decoding token for token, greedy;
//! and the drafter runs for real (its drafts are verified), at a fixed and at the adaptive length.

mod common;

use common::ids;

use blockspec::decode::draft::dflash::{DFlashDrafter, DrafterOptions};
use blockspec::dev::synth::{write_random_dflash, DraftSpec};
use blockspec::format::gguf::Gguf;
use blockspec::model::Model;
use blockspec::runtime::engine::{Engine, EngineConfig};
use blockspec::text::tokenizer::Tokenizer;
use std::sync::Arc;

fn check(file: &str, n_prompts: usize, n_tokens: usize) {
    let Some(path) = common::model(file) else {
        return;
    };
    let fx = common::read_json(&format!(
        "llama/generate-{}.json",
        file.trim_end_matches(".gguf")
    ));
    let g = Gguf::open(&path).expect("open");
    let tok = Tokenizer::from_gguf(&g).expect("tokenizer");
    let backend = Arc::new(ggml::Backend::cpu(2));
    // Speculation runs the target with batch-invariant kernels (see Model::load_with).
    let model = Arc::new(Model::load_with(&g, &backend, false, false).expect("load"));
    let hp = model.hp.clone();
    let dir = tempfile::tempdir().expect("tmp");
    let draft_path = dir.path().join("random-dflash.gguf");
    let taps = vec![1, hp.n_layer / 2, hp.n_layer - 2];
    let spec = DraftSpec {
        n_layer: 1,
        block_size: 8,
        target_layers: taps.clone(),
        mask_token_id: 151643,
        seed: 7,
        scale: 0.02,
    };
    write_random_dflash(&draft_path, &hp, &spec).expect("write drafter");
    let cfg = EngineConfig {
        n_ctx: 1024,
        n_ubatch: 512,
        type_k: ggml::Type::F16,
        type_v: ggml::Type::F16,
        capture_layers: taps,
    };
    let mut engine = Engine::new(model.clone(), backend.clone(), cfg).expect("engine");
    let mut drafter = DFlashDrafter::load(&draft_path, model, backend, &DrafterOptions::new(1024))
        .expect("drafter");
    for case in fx["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .take(n_prompts)
    {
        let prompt = ids(&case["prompt_tokens"]);
        let name = case["name"].as_str().unwrap_or("?").to_string();
        let stats =
            common::assert_lossless(&mut engine, &tok, &mut drafter, &name, &prompt, n_tokens);
        assert!(stats[0].drafted > 0, "the drafter never ran");
    }
}

#[test]
fn random_dflash_drafter_is_lossless_05b() {
    check(common::MODEL_05B, 4, 64);
}

#[test]
fn random_dflash_drafter_is_lossless_15b() {
    check(common::MODEL_15B, 10, 128);
}
