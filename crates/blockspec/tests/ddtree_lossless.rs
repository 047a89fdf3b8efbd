//! DDTree verification is lossless at temperature 0: with trees of 4, 8 and 16 nodes, the output
//! equals plain greedy decoding token for token, every step costs one target forward, and the
//! target's state after a step (KV cache, captured hidden states) is that of the accepted path.
//! Drafters: the trained tiny DFlash drafter (real acceptance, memorised prompts), a random one
//! (almost nothing accepted), and an oracle that ranks the true continuation at chosen places
//! (accepted paths of every depth, rejections at every depth, accepted paths through non-top-1
//! branches).

mod common;

use blockspec::decode::draft::dflash::{DFlashDrafter, DrafterOptions};
use blockspec::decode::draft::Drafter;
use blockspec::decode::generate::{generate, Generation};
use blockspec::decode::sampling::{Sampler, SamplingParams};
use blockspec::decode::spec::{
    generate_speculative, AcceptRule, SpecOptions, SpecParts, SpecStats,
};
use blockspec::dev::synth::{write_random_dflash, DraftSpec};
use blockspec::format::gguf::Gguf;
use blockspec::model::Model;
use blockspec::runtime::engine::{Engine, EngineConfig, Outputs};
use blockspec::text::tokenizer::Tokenizer;
use std::collections::BTreeSet;
use std::sync::Arc;

const TAPS: [usize; 2] = [0, 2];

struct Target {
    tok: Tokenizer,
    model: Arc<Model>,
    backend: Arc<ggml::Backend>,
    engine: Engine,
}

fn target(capture: &[usize]) -> Target {
    let g = Gguf::open(&common::fixture("tiny/qwen3/model-f32.gguf")).expect("target");
    let tok = Tokenizer::from_gguf(&g).expect("tokenizer");
    let backend = Arc::new(ggml::Backend::cpu(2));
    let model = Arc::new(Model::load_with(&g, &backend, false, false).expect("load"));
    let cfg = EngineConfig {
        n_ctx: 256,
        n_ubatch: 64,
        type_k: ggml::Type::F16,
        type_v: ggml::Type::F16,
        capture_layers: capture.to_vec(),
    };
    let engine = Engine::new(model.clone(), backend.clone(), cfg).expect("engine");
    Target {
        tok,
        model,
        backend,
        engine,
    }
}

fn plain(t: &mut Target, prompt: &[u32], n: usize) -> Generation {
    generate(
        &mut t.engine,
        &t.tok,
        &mut Sampler::new(SamplingParams::greedy()),
        prompt,
        &common::greedy_opts(n),
        |_| {},
    )
    .expect("plain")
}

/// Greedy speculative decoding with trees of `budget` nodes. The tiny f32 model's matmuls
/// change kernel from 2 rows on, so no batch is bit-exact there: inexact batches are allowed
/// (rounding differences ~1e-6, far below this model's logit margins), as in dflash_sampling.
fn tree(
    t: &mut Target,
    drafter: &mut dyn Drafter,
    prompt: &[u32],
    n: usize,
    budget: usize,
) -> (Generation, SpecStats) {
    tree_with(t, drafter, prompt, n, budget, false)
}

/// [`tree`], optionally with the drafter's top-1 chain seeded into every tree.
fn tree_with(
    t: &mut Target,
    drafter: &mut dyn Drafter,
    prompt: &[u32],
    n: usize,
    budget: usize,
    chain_seed: bool,
) -> (Generation, SpecStats) {
    generate_speculative(
        SpecParts {
            engine: &mut t.engine,
            drafter,
            tok: &t.tok,
            sampler: &mut Sampler::new(SamplingParams::greedy()),
        },
        prompt,
        &common::greedy_opts(n),
        &mut SpecOptions {
            allow_inexact_batches: true,
            tree_budget: budget,
            tree_chain_seed: chain_seed,
            ..Default::default()
        },
        |_| {},
    )
    .expect("tree")
}

/// The tiny DFlash drafter trained on the tiny target (fixtures/dflash/).
fn trained_drafter(t: &Target) -> DFlashDrafter {
    common::tiny_trained_drafter(t.model.clone(), t.backend.clone())
}

fn prompts() -> Vec<Vec<u32>> {
    let fx = common::read_json("dflash/reference.json");
    let mut out = Vec::new();
    for key in ["cases_seen", "cases"] {
        for c in fx[key].as_array().expect("cases").iter().take(3) {
            out.push(common::ids(&c["prompt"]));
        }
    }
    out
}

fn check_stats(name: &str, s: &SpecStats, budget: usize) {
    assert_eq!(s.target_forwards, s.steps as u64, "{name}: forwards");
    assert!(s.spec_steps > 0, "{name}: no tree step");
    assert_eq!(s.drafted, s.spec_steps * budget, "{name}: nodes offered");
}

#[test]
fn trained_drafter_trees_equal_plain_decoding() {
    let mut t = target(&TAPS);
    let mut drafter = trained_drafter(&t);
    let mut lengths = BTreeSet::new();
    for (i, prompt) in prompts().iter().enumerate() {
        let want = plain(&mut t, prompt, 40);
        for budget in [4, 8, 16] {
            let name = format!("prompt {i}, budget {budget}");
            let (g, s) = tree(&mut t, &mut drafter, prompt, 40, budget);
            assert_eq!(g.tokens, want.tokens, "{name}: output differs from plain");
            check_stats(&name, &s, budget);
            lengths.extend(s.accept_lengths.iter().copied());
            let (g, s) = tree_with(&mut t, &mut drafter, prompt, 40, budget, true);
            assert_eq!(g.tokens, want.tokens, "{name}, chain seed: output differs");
            check_stats(&name, &s, budget);
        }
    }
    // Steps committed 1 (a rejection at the root) up to long paths.
    assert!(lengths.len() >= 5, "accepted lengths {lengths:?}");
}

/// `--spec-tree auto` switches between plain steps, chains and trees of several budgets by
/// measured speed: whatever it picks, the output is the plain greedy output, one target forward
/// per step; the policies carry over from prompt to prompt as in a server slot, and chains and
/// trees of several budgets were in fact used. (Greedy only: at T > 0 this f32 model's inexact
/// batches round logits ~1e-6 off a one-token step's, enough to reorder two near-equal tokens
/// of its flat distributions and change a draw, chain and tree alike; each verifier's
/// exactness at T > 0 is tested by ddtree_sampling.rs.)
#[test]
fn auto_choice_equals_plain_decoding() {
    let mut t = target(&TAPS);
    let mut drafter = trained_drafter(&t);
    // A fixed chain length keeps every step speculative whatever this machine's timings say
    // (the length policy alone may settle on plain steps for this tiny model), so the tree
    // policy's tries of every budget happen; which of chain and tree it then keeps depends on
    // the timings, and the output must not.
    let mut spec = SpecOptions {
        allow_inexact_batches: true,
        tree_auto: true,
        fixed_len: Some(8),
        ..Default::default()
    };
    let mut budgets = BTreeSet::new();
    let mut chain_steps = 0;
    for (i, prompt) in prompts().iter().enumerate() {
        let want = plain(&mut t, prompt, 40);
        let (g, s) = generate_speculative(
            SpecParts {
                engine: &mut t.engine,
                drafter: &mut drafter,
                tok: &t.tok,
                sampler: &mut Sampler::new(SamplingParams::greedy()),
            },
            prompt,
            &common::greedy_opts(40),
            &mut spec,
            |_| {},
        )
        .expect("auto");
        assert_eq!(g.tokens, want.tokens, "prompt {i}: output differs");
        assert_eq!(s.target_forwards, s.steps as u64, "prompt {i}: forwards");
        let tree_steps: usize = s.trees.iter().map(|&(_, c)| c).sum();
        chain_steps += s.spec_steps - tree_steps;
        budgets.extend(s.trees.iter().map(|&(b, _)| b));
    }
    assert!(chain_steps > 0, "no chain step");
    // The budgets tried are listed ones up to 32 (no exact-batch cap: inexact allowed).
    assert!(budgets.len() >= 2, "tree budgets tried: {budgets:?}");
    assert!(
        budgets.iter().all(|b| [4, 8, 15, 22, 32].contains(b)),
        "{budgets:?}"
    );
}

#[test]
fn random_drafter_trees_equal_plain_decoding() {
    let mut t = target(&TAPS);
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("random-dflash.gguf");
    let spec = DraftSpec {
        n_layer: 1,
        block_size: 8,
        target_layers: TAPS.to_vec(),
        mask_token_id: 500,
        seed: 11,
        scale: 0.02,
    };
    write_random_dflash(&path, &t.model.hp, &spec).expect("write drafter");
    let mut drafter = DFlashDrafter::load(
        &path,
        t.model.clone(),
        t.backend.clone(),
        &DrafterOptions::new(256),
    )
    .expect("drafter");
    for (i, prompt) in prompts().iter().enumerate().take(3) {
        let want = plain(&mut t, prompt, 32);
        for budget in [4, 8, 16] {
            let name = format!("prompt {i}, budget {budget}");
            let (g, s) = tree(&mut t, &mut drafter, prompt, 32, budget);
            assert_eq!(g.tokens, want.tokens, "{name}: output differs from plain");
            check_stats(&name, &s, budget);
        }
    }
}

#[test]
fn oracle_trees_accept_and_reject_at_every_depth_and_compact_the_state() {
    let mut t = target(&TAPS);
    let n_vocab = t.model.hp.n_vocab as u32;
    let nf = TAPS.len() * t.model.hp.n_embd;
    let mut lengths = BTreeSet::new();
    for (i, prompt) in prompts().iter().enumerate() {
        let want = plain(&mut t, prompt, 48);
        let mut truth = prompt.clone();
        truth.extend_from_slice(&want.tokens);
        for budget in [4, 8, 16] {
            let name = format!("prompt {i}, budget {budget}");
            let mut oracle = common::oracle::Oracle {
                truth: truth.clone(),
                known: 0,
                depth: 7,
                n_vocab,
                rng: (i * 100 + budget) as u64,
                layers: TAPS.to_vec(),
                feats: Vec::new(),
            };
            let (g, s) = tree(&mut t, &mut oracle, prompt, 48, budget);
            assert_eq!(g.tokens, want.tokens, "{name}: output differs from plain");
            check_stats(&name, &s, budget);
            lengths.extend(s.accept_lengths.iter().copied());
            // The features the drafter got (prompt, then each step's compacted path) are those
            // of the committed tokens at their positions: a prefill of them says the same. (The
            // last step may commit past the token limit, beyond the known truth.)
            assert_eq!(
                oracle.feats.len(),
                oracle.known * nf,
                "{name}: feature rows"
            );
            let m = oracle.known.min(truth.len());
            t.engine.reset();
            t.engine
                .decode(&truth[..m], Outputs::Last)
                .expect("prefill");
            let want_f = t.engine.captured().to_vec();
            for (row, (a, b)) in oracle.feats.chunks(nf).zip(want_f.chunks(nf)).enumerate() {
                let scale = b.iter().fold(1e-6f32, |m, x| m.max(x.abs()));
                let err = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
                assert!(
                    err / scale < 1e-3,
                    "{name}: features of position {row} differ ({err} of {scale})"
                );
            }
            t.engine.reset();
        }
    }
    // Paths of many depths accepted (1: rejected at the root, 8: the whole depth + bonus).
    assert!(lengths.len() >= 6, "accepted lengths {lengths:?}");
}

/// The real 1.5B target (`--verify exact`: exact batches only, so a budget past the largest
/// exact batch is capped to it: 6 nodes with this CPU's kernels, which switch at 8 rows) with
/// the shipped DFlash drafter: trees give plain decoding's tokens over 20 prompts (the 14
/// llama.cpp reference prompts and 6 held-out chat prompts) and budgets 4 to 32. Skipped when
/// the model has not been fetched.
#[test]
fn real_target_with_the_shipped_drafter_trees_equal_plain_decoding() {
    let Some(path) = common::model(common::MODEL_15B) else {
        return;
    };
    let fx = common::read_json("llama/generate-qwen2.5-coder-1.5b-instruct-q4_k_m.json");
    let g = Gguf::open(&path).expect("open");
    let tok = Tokenizer::from_gguf(&g).expect("tokenizer");
    let backend = Arc::new(ggml::Backend::cpu(2));
    let model = Arc::new(Model::load_with(&g, &backend, false, false).expect("load"));
    let draft_path =
        common::repo_file("training/drafters/qwen2.5-coder-1.5b-instruct-dflash-q8_0.gguf");
    let drafter_opts = DrafterOptions::new(512);
    let mut drafter =
        DFlashDrafter::load(&draft_path, model.clone(), backend.clone(), &drafter_opts)
            .expect("drafter");
    let cfg = EngineConfig {
        n_ctx: 512,
        n_ubatch: 512,
        type_k: ggml::Type::F16,
        type_v: ggml::Type::F16,
        capture_layers: drafter.target_layers().to_vec(),
    };
    let engine = Engine::new(model.clone(), backend.clone(), cfg).expect("engine");
    let mut t = Target {
        tok,
        model,
        backend,
        engine,
    };
    let mut prompts: Vec<Vec<u32>> = fx["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .map(|c| common::ids(&c["prompt_tokens"]))
        .collect();
    let held_out: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(common::repo_file("training/eval_prompts.json"))
            .expect("held-out prompts"),
    )
    .expect("json");
    for p in held_out["prompts"]
        .as_array()
        .expect("prompts")
        .iter()
        .take(6)
    {
        let text = p["text"].as_str().expect("text");
        prompts.push(t.tok.encode(text, false, false).expect("encode"));
    }
    assert_eq!(prompts.len(), 20);
    let mut accepted = 0;
    let budgets = [4, 8, 16, 22, 32];
    for (i, prompt) in prompts.iter().enumerate() {
        let want = plain(&mut t, prompt, 12);
        // Every budget on two prompts; 4 or 8 on the others (the larger ones cap alike).
        let these = if i < 2 {
            &budgets[..]
        } else {
            &budgets[i % 2..i % 2 + 1]
        };
        for &budget in these {
            let (g, s) = generate_speculative(
                SpecParts {
                    engine: &mut t.engine,
                    drafter: &mut drafter,
                    tok: &t.tok,
                    sampler: &mut Sampler::new(SamplingParams::greedy()),
                },
                prompt,
                &common::greedy_opts(12),
                &mut SpecOptions {
                    tree_budget: budget,
                    ..Default::default()
                },
                |_| {},
            )
            .expect("tree");
            assert_eq!(
                g.tokens, want.tokens,
                "prompt {i}, budget {budget}: output differs"
            );
            assert_eq!(s.target_forwards, s.steps as u64);
            accepted += s.accepted;
        }
    }
    assert!(
        accepted > 0,
        "the shipped drafter's trees were never accepted"
    );
}

/// At temperature > 0 under the `Match` rule the walk draws the target's token at each node on
/// the path (one draw per committed token, as plain sampling makes) and steps into the child
/// holding it: with the same seed, tree decoding reproduces plain sampling token for token (a
/// stronger property than equal distributions). The default rule (rejection sampling) is
/// checked in distribution by tests/ddtree_sampling.rs.
#[test]
fn sampled_trees_reproduce_plain_sampling() {
    let mut t = target(&TAPS);
    let mut drafter = trained_drafter(&t);
    let prompt = &prompts()[0];
    let mut accepted = 0;
    for temp in [0.7f32, 1.0] {
        for seed in 0..40u64 {
            let p = SamplingParams {
                temperature: temp,
                top_p: 0.9,
                seed,
                ..Default::default()
            };
            let opts = common::greedy_opts(12);
            let want = generate(
                &mut t.engine,
                &t.tok,
                &mut Sampler::new(p.clone()),
                prompt,
                &opts,
                |_| {},
            )
            .expect("plain");
            let (g, s) = generate_speculative(
                SpecParts {
                    engine: &mut t.engine,
                    drafter: &mut drafter,
                    tok: &t.tok,
                    sampler: &mut Sampler::new(p),
                },
                prompt,
                &opts,
                &mut SpecOptions {
                    allow_inexact_batches: true,
                    tree_budget: 8,
                    accept_rule: AcceptRule::Match,
                    ..Default::default()
                },
                |_| {},
            )
            .expect("tree");
            assert_eq!(g.tokens, want.tokens, "temperature {temp}, seed {seed}");
            accepted += s.accepted;
        }
    }
    assert!(accepted > 0, "no draft accepted");
}
