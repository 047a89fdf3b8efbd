//! Lossless at temperature > 0: the target's token at every verified position is drawn from the
//! target distribution with the sampler's own random stream, exactly one draw per committed token
//! as in plain decoding, and a draft is kept only if it equals that draw. So with the same seed
//! speculative sampling reproduces plain sampling token for token (a stronger property than equal
//! distributions), here over hundreds of seeds at temperatures 0.7 and 1.0 with top-p, while the
//! drafter's tokens are really being accepted.

mod common;

use blockspec::decode::draft::dflash::{DFlashDrafter, DrafterOptions};
use blockspec::decode::generate::{generate, GenerateOptions};
use blockspec::decode::sampling::{Sampler, SamplingParams};
use blockspec::decode::spec::{generate_speculative, SpecOptions, SpecParts};
use blockspec::format::gguf::Gguf;
use blockspec::model::Model;
use blockspec::runtime::engine::{Engine, EngineConfig};
use blockspec::text::tokenizer::Tokenizer;
use std::collections::HashMap;
use std::sync::Arc;

#[test]
fn speculative_sampling_reproduces_plain_sampling() {
    let fx = common::read_json("dflash/reference.json");
    let g = Gguf::open(&common::fixture("tiny/qwen3/model-f32.gguf")).expect("target");
    let tok = Tokenizer::from_gguf(&g).expect("tokenizer");
    let backend = Arc::new(ggml::Backend::cpu(2));
    let model = Arc::new(Model::load_with(&g, &backend, false, false).expect("load"));
    let taps = vec![0, 2];
    let cfg = EngineConfig {
        n_ctx: 128,
        n_ubatch: 64,
        type_k: ggml::Type::F16,
        type_v: ggml::Type::F16,
        capture_layers: taps,
    };
    let mut engine = Engine::new(model.clone(), backend.clone(), cfg).expect("engine");
    let mut drafter = DFlashDrafter::load(
        &common::fixture("dflash/tiny-qwen3-drafter"),
        model,
        backend,
        &DrafterOptions::new(128),
    )
    .expect("drafter");
    // A prompt the drafter predicts well (memorised in training), so drafts get accepted.
    let prompt: Vec<u32> = fx["cases_seen"][0]["prompt"]
        .as_array()
        .expect("prompt")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect();
    let opts = GenerateOptions {
        max_tokens: Some(12),
        ignore_eos: true,
        stop: vec![],
        stop_tokens: vec![],
        ..Default::default()
    };
    let mut accepted = 0;
    for temp in [0.7f32, 1.0] {
        let mut first3: HashMap<Vec<u32>, usize> = HashMap::new();
        for seed in 0..150u64 {
            let p = SamplingParams {
                temperature: temp,
                top_k: 0,
                top_p: 0.9,
                min_p: 0.0,
                seed,
                ..Default::default()
            };
            let plain = generate(
                &mut engine,
                &tok,
                &mut Sampler::new(p.clone()),
                &prompt,
                &opts,
                |_| {},
            )
            .expect("plain");
            let (spec, stats) = generate_speculative(
                SpecParts {
                    engine: &mut engine,
                    drafter: &mut drafter,
                    tok: &tok,
                    sampler: &mut Sampler::new(p),
                },
                &prompt,
                &opts,
                // The tiny f32 model's matmuls change kernel from 2 rows on (no exact batch > 1), so full
                // blocks are allowed here to exercise the acceptance walk; its rounding differences
                // (~1e-6) are far below this model's sampling margins.
                &mut SpecOptions {
                    fixed_len: Some(8),
                    allow_inexact_batches: true,
                    policy: None,
                    replay: None,
                    tree_budget: 0,
                    tree_chain_seed: false,
                    accept_rule: blockspec::decode::spec::AcceptRule::Match,
                    ..Default::default()
                },
                |_| {},
            )
            .expect("spec");
            assert_eq!(spec.tokens, plain.tokens, "temperature {temp}, seed {seed}");
            accepted += stats.accepted;
            *first3.entry(plain.tokens[..3].to_vec()).or_default() += 1;
        }
        // Sampling really is random here (not a disguised greedy run).
        assert!(
            first3.len() >= 3,
            "temperature {temp}: only {} distinct continuations",
            first3.len()
        );
    }
    assert!(
        accepted > 100,
        "drafts were hardly accepted ({accepted}): speculation was not exercised"
    );
}
