//! The other draft sources behind the same verify loop: a classic draft model (the 0.5B drafting
//! for the 1.5B: same tokenizer) and n-gram lookup. Both are lossless with `--verify exact`
//! (output == plain batch-invariant decoding token for token, greedy, 10 prompts x 128 tokens),
//! and their drafts are really verified and accepted.

mod common;

use common::ids;

use blockspec::decode::draft::model::{check_vocab, DraftModel};
use blockspec::decode::draft::ngram::NgramDrafter;
use blockspec::format::gguf::Gguf;
use blockspec::model::Model;
use blockspec::runtime::engine::{Engine, EngineConfig};
use blockspec::text::tokenizer::Tokenizer;
use std::sync::Arc;

struct Target {
    engine: Engine,
    tok: Tokenizer,
    gguf: Gguf,
    backend: Arc<ggml::Backend>,
}

fn target(file: &str) -> Option<Target> {
    let path = common::model(file)?;
    ggml::set_log_verbosity(false);
    let gguf = Gguf::open(&path).expect("open");
    let tok = Tokenizer::from_gguf(&gguf).expect("tokenizer");
    let backend = Arc::new(ggml::Backend::cpu(2));
    // Speculation runs the target with batch-invariant kernels (see Model::load_with).
    let model = Arc::new(Model::load_with(&gguf, &backend, false, false).expect("load"));
    let engine = Engine::new(model, backend.clone(), config(1024)).expect("engine");
    Some(Target {
        engine,
        tok,
        gguf,
        backend,
    })
}

fn config(n_ctx: usize) -> EngineConfig {
    EngineConfig {
        n_ctx,
        n_ubatch: 512,
        type_k: ggml::Type::F16,
        type_v: ggml::Type::F16,
        capture_layers: vec![],
    }
}

#[test]
fn draft_model_is_lossless_and_accepted() {
    let Some(mut t) = target(common::MODEL_15B) else {
        return;
    };
    let Some(dpath) = common::model(common::MODEL_05B) else {
        return;
    };
    let dg = Gguf::open(&dpath).expect("open draft");
    check_vocab(&t.gguf, &dg).expect("the two Qwen2.5-Coder models share a tokenizer");
    let dm = Arc::new(Model::load_with(&dg, &t.backend, false, true).expect("load draft"));
    let de = Engine::new(dm, t.backend.clone(), config(1024)).expect("draft engine");
    let mut drafter = DraftModel::new(de, 8, 0.0).expect("draft model");
    let fx = common::read_json("llama/generate-qwen2.5-coder-1.5b-instruct-q4_k_m.json");
    let (mut drafted, mut accepted) = (0, 0);
    for case in fx["cases"].as_array().expect("cases").iter().take(10) {
        let prompt = ids(&case["prompt_tokens"]);
        let name = case["name"].as_str().unwrap_or("?").to_string();
        for s in common::assert_lossless(&mut t.engine, &t.tok, &mut drafter, &name, &prompt, 128)
            .iter()
            .take(1)
        {
            drafted += s.drafted;
            accepted += s.accepted;
        }
    }
    // The 0.5B and the 1.5B coder agree on most greedy tokens.
    assert!(drafted > 0, "the draft model never drafted");
    assert!(
        accepted * 3 > drafted,
        "accepted {accepted} of {drafted} drafts: acceptance is broken"
    );
}

fn ngram_check(file: &str) {
    let Some(mut t) = target(file) else { return };
    let mut drafter = NgramDrafter::new(3, 8).expect("ngram");
    // Copying code: the continuation repeats the prompt, so lookup finds it.
    let text = "<|im_start|>user\nRepeat this code exactly:\n\ndef add(a, b):\n    return a + b\n\ndef mul(a, b):\n    return a * b\n<|im_end|>\n<|im_start|>assistant\n";
    let prompt = t.tok.encode(text, true, true).expect("tokenize");
    let stats = common::assert_lossless(&mut t.engine, &t.tok, &mut drafter, "copy", &prompt, 40);
    assert!(stats[0].drafted > 0, "n-gram lookup never proposed");
    assert!(
        stats[0].accepted > 0,
        "no n-gram draft was accepted on a copy task"
    );
    // On ordinary prompts (few or no matches) it stays lossless.
    let fx = common::read_json(&format!(
        "llama/generate-{}.json",
        file.trim_end_matches(".gguf")
    ));
    for case in fx["cases"].as_array().expect("cases").iter().take(10) {
        let prompt = ids(&case["prompt_tokens"]);
        let name = case["name"].as_str().unwrap_or("?").to_string();
        common::assert_lossless(&mut t.engine, &t.tok, &mut drafter, &name, &prompt, 128);
    }
}

#[test]
fn ngram_lookup_is_lossless_and_accepted_15b() {
    ngram_check(common::MODEL_15B);
}

#[test]
fn ngram_lookup_is_lossless_and_accepted_05b() {
    ngram_check(common::MODEL_05B);
}

#[test]
fn a_draft_model_with_another_tokenizer_is_refused() {
    let Some(t) = target(common::MODEL_15B) else {
        return;
    };
    let tiny = Gguf::open(&common::fixture("tiny/qwen3/model-f32.gguf")).expect("open");
    let e = check_vocab(&t.gguf, &tiny).expect_err("a different vocabulary must be refused");
    let msg = format!("{e:#}");
    assert!(
        msg.contains("vocabulary") || msg.contains("tokenizer"),
        "unclear error: {msg}"
    );
}
