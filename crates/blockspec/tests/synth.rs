//! `blockspec synth --like`: a synthetic target has the real model's tensors, shapes and byte
//! size (checked against the real Qwen2.5-Coder-1.5B Q4_K_M), and it loads and runs.

mod common;

use blockspec::dev::synth::{write_synthetic_target, SynthType, TARGET_SHAPES};
use blockspec::format::gguf::Gguf;
use std::collections::BTreeMap;

/// `blockspec run --json` on `path`, greedy, a small context; must succeed.
fn run_json(path: &std::path::Path, prompt: &str, n: &str) -> serde_json::Value {
    let p = path.to_str().expect("utf8");
    let (code, out, err) = common::blockspec(&[
        "run", "-m", p, "-p", prompt, "-n", n, "--temp", "0", "--json", "-c", "64",
    ]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(out.trim()).expect("one JSON object")
}

#[test]
fn synthetic_qwen25_15b_matches_the_real_file() {
    let Some(real) = common::model(common::MODEL_15B) else {
        return;
    };
    let real = Gguf::open(&real).expect("open real");
    let shape = TARGET_SHAPES
        .iter()
        .find(|s| s.name == "qwen2.5-1.5b")
        .expect("shape");
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("synth.gguf");
    write_synthetic_target(&path, shape, SynthType::Q4KM, None, Some(&real), 1).expect("write");
    let syn = Gguf::open(&path).expect("open synthetic");
    let shapes = |g: &Gguf| -> BTreeMap<String, Vec<i64>> {
        g.tensors
            .iter()
            .map(|t| (t.name.clone(), t.ne[..t.n_dims].to_vec()))
            .collect()
    };
    assert_eq!(shapes(&syn), shapes(&real), "tensor names or shapes differ");
    let (a, b) = (
        syn.tensor_data_bytes() as f64,
        real.tensor_data_bytes() as f64,
    );
    assert!(
        (a / b - 1.0).abs() < 0.01,
        "synthetic {a} bytes vs real {b} bytes"
    );
    assert!(syn
        .str("general.description")
        .expect("description")
        .contains("timing only"));
    // It runs (random weights: the text is meaningless, the shapes are what matters).
    run_json(&path, "hi", "2");
}

#[test]
fn synthetic_vocabulary_without_a_tokenizer_source() {
    let shape = TARGET_SHAPES
        .iter()
        .find(|s| s.name == "llama-3.1-8b")
        .expect("shape");
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("tiny.gguf");
    // One layer, 8-bit: small enough for a test; every tensor still has the real shape.
    write_synthetic_target(&path, shape, SynthType::Q8_0, Some(1), None, 3).expect("write");
    let g = Gguf::open(&path).expect("open");
    let toks = g
        .str_array("tokenizer.ggml.tokens")
        .expect("tokens")
        .expect("present");
    assert_eq!(toks.len(), 128256);
    let emb = g.tensor("token_embd.weight").expect("token_embd");
    assert_eq!(emb.ne[..2], [4096, 128256]);
    let out = run_json(&path, "hello", "3");
    assert_eq!(out["tokens"].as_array().map(|a| a.len()), Some(3));
}
