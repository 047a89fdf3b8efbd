//! Greedy generation equals llama.cpp's, token for token, on the real Qwen2.5-Coder GGUFs, both
//! with llama.cpp's default (repacked) kernels and with the batch-invariant ones (--no-repack).
//! Reference: tests/fixtures/llama/generate-*.json, made by scripts/ref/make_llama_fixtures.py
//! with llama.cpp built from the same vendored ggml source (same kernels on the CPU).
//!
//! ggml's CPU kernels round differently per instruction set, so at near-ties the greedy tokens
//! depend on the CPU kind as much as on the engine: the top-level fixtures were made on an AMD
//! EPYC with AVX-512, and `llama/cpu/<kind>/` holds those made on other kinds (`--per-cpu`):
//! the test uses `<vendor_id>-<isa>/` (e.g. `authenticamd-avx2` for an AMD CPU with AVX2 but no AVX-512),
//! else `<vendor_id>/`, else the top-level files.

mod common;

use common::ids;

use blockspec::decode::sampling::argmax;
use blockspec::format::gguf::Gguf;
use blockspec::model::Model;
use blockspec::runtime::engine::{Engine, EngineConfig, Outputs};
use std::sync::Arc;

fn check_model(file: &str, repack: bool) {
    let Some(path) = common::model(file) else {
        return;
    };
    // Without repacking, compare with llama.cpp run the same way (--no-repack).
    let suffix = if repack { "" } else { "-norepack" };
    let name = format!("generate-{}{suffix}.json", file.trim_end_matches(".gguf"));
    let rel = cpu_kinds()
        .into_iter()
        .map(|kind| format!("llama/cpu/{kind}/{name}"))
        .find(|rel| common::fixture(rel).exists())
        .unwrap_or_else(|| format!("llama/{name}"));
    let fx = common::read_json(&rel);
    let g = Gguf::open(&path).expect("open gguf");
    let backend = Arc::new(ggml::Backend::cpu(2));
    let model = Arc::new(Model::load_with(&g, &backend, false, repack).expect("load"));
    let cfg = EngineConfig {
        n_ctx: 4096,
        n_ubatch: 512,
        type_k: ggml::Type::F16,
        type_v: ggml::Type::F16,
        capture_layers: vec![],
    };
    let mut engine = Engine::new(model, backend, cfg).expect("engine");
    let cases = fx["cases"].as_array().expect("cases");
    assert!(cases.len() >= 14, "fixture has {} cases", cases.len());
    let mut failures = Vec::new();
    for case in cases {
        let name = case["name"].as_str().unwrap_or("?");
        let prompt = ids(&case["prompt_tokens"]);
        let want = ids(&case["tokens"]);
        engine.reset();
        let mut logits = engine.decode(&prompt, Outputs::Last).expect("prefill");
        let mut got = Vec::new();
        for i in 0..want.len() {
            let t = argmax(logits.last());
            got.push(t);
            if t != want[i] || i + 1 == want.len() {
                break;
            }
            logits = engine.decode(&[t], Outputs::Last).expect("decode");
        }
        if got != want {
            let at = got
                .iter()
                .zip(&want)
                .position(|(a, b)| a != b)
                .unwrap_or(got.len());
            failures.push(format!(
                "{name}: first difference at token {at}: got {:?}, llama.cpp {:?}",
                got.get(at),
                want.get(at)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{file}: {} of {} cases differ from {rel} (CPU kinds {:?}; a CPU kind without its own \
         fixtures is compared with those of an AMD EPYC with AVX-512: see scripts/ref/README.md):\n{}",
        failures.len(),
        cases.len(),
        cpu_kinds(),
        failures.join("\n")
    );
}

/// This CPU's fixture folders, most specific first: `<vendor_id>-<isa>` and `<vendor_id>`, where
/// isa is the widest SIMD level ggml's CPU kernels use here (avx512, avx2, avx or sse).
fn cpu_kinds() -> Vec<String> {
    let Ok(info) = std::fs::read_to_string("/proc/cpuinfo") else {
        return Vec::new();
    };
    let field = |name: &str| {
        info.lines()
            .find(|l| l.split(':').next().is_some_and(|k| k.trim() == name))
            .and_then(|l| l.split(':').nth(1))
            .map(|v| v.trim().to_lowercase())
    };
    let Some(vendor) = field("vendor_id") else {
        return Vec::new();
    };
    let flags = field("flags").unwrap_or_default();
    let has = |f: &str| flags.split_whitespace().any(|x| x == f);
    let isa = if has("avx512f") {
        "avx512"
    } else if has("avx2") {
        "avx2"
    } else if has("avx") {
        "avx"
    } else {
        "sse"
    };
    vec![format!("{vendor}-{isa}"), vendor]
}

#[test]
fn greedy_matches_llama_cpp_05b() {
    check_model(common::MODEL_05B, true);
}

#[test]
fn greedy_matches_llama_cpp_15b() {
    check_model(common::MODEL_15B, true);
}

/// With a drafter the target runs batch-invariant kernels (no weight repacking: ggml's repacked
/// Q4_K kernels round a 1-row batch differently from a 4-row one, by ~1.5% of the logit scale
/// here, which flips near-ties). That configuration equals llama.cpp run with --no-repack.
#[test]
fn greedy_batch_invariant_matches_llama_cpp_05b() {
    check_model(common::MODEL_05B, false);
}

#[test]
fn greedy_batch_invariant_matches_llama_cpp_15b() {
    check_model(common::MODEL_15B, false);
}
