//! Architectures without a real model here (qwen3, llama, llama 3.2 with rope scaling and tied
//! embeddings): tiny random-weight models made with HF transformers, converted to GGUF with
//! llama.cpp's converter (scripts/ref/make_tiny_models.py). Our logits and captured hidden
//! states are compared with transformers' float32 eager forward.

mod common;

use common::ids;

use blockspec::decode::sampling::argmax;
use blockspec::format::gguf::Gguf;
use blockspec::model::Model;
use blockspec::runtime::engine::{Engine, EngineConfig, Outputs};
use std::sync::Arc;

fn f32s(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect()
}
fn rows(v: &serde_json::Value) -> Vec<Vec<f32>> {
    v.as_array().expect("array").iter().map(f32s).collect()
}

/// max |a-b| over max |b|: the error relative to the reference's scale.
fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-6);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

fn engine_for(dir: &str, file: &str, capture_all: bool) -> Engine {
    let path = common::fixture(&format!("tiny/{dir}/{file}"));
    let g = Gguf::open(&path).expect("open tiny gguf");
    let backend = Arc::new(ggml::Backend::cpu(2));
    let model = Arc::new(Model::load(&g, &backend, false).expect("load tiny model"));
    let n_layer = model.hp.n_layer;
    let cfg = EngineConfig {
        n_ctx: 128,
        n_ubatch: 64,
        type_k: ggml::Type::F32,
        type_v: ggml::Type::F32,
        capture_layers: if capture_all {
            (0..n_layer).collect()
        } else {
            vec![]
        },
    };
    Engine::new(model, backend, cfg).expect("engine")
}

/// Logits of every position and hidden states of every layer against transformers.
fn check_forward(
    dir: &str,
    file: &str,
    seq_key: Option<&str>,
    max_logit_err: f32,
    max_hidden_err: f32,
) {
    let fx = common::read_json(&format!("tiny/{dir}/reference.json"));
    let mut e = engine_for(dir, file, true);
    let n_layer = e.model.hp.n_layer;
    let n_embd = e.model.hp.n_embd;
    let seqs = match seq_key {
        Some(k) => fx[k]["sequences"].clone(),
        None => fx["sequences"].clone(),
    };
    let full = fx["sequences"].as_array().expect("sequences").clone();
    for (si, s) in seqs.as_array().expect("sequences").iter().enumerate() {
        let toks = ids(&s["ids"]);
        e.reset();
        let logits = e.decode(&toks, Outputs::All).expect("decode");
        let want = rows(&s["logits"]);
        let mut worst = 0f32;
        for (p, w) in want.iter().enumerate() {
            worst = worst.max(rel_err(logits.row(p), w));
            assert_eq!(
                argmax(logits.row(p)),
                argmax(w),
                "{dir}/{file} seq {si} pos {p}: argmax differs"
            );
        }
        eprintln!("{dir}/{file} seq {si}: logits max rel err {worst:.2e}");
        assert!(
            worst <= max_logit_err,
            "{dir}/{file} seq {si}: logits rel err {worst} > {max_logit_err}"
        );
        if seq_key.is_some() {
            continue; // hidden states are recorded for the f32 HF model only
        }
        // Prefill-style evaluation (logits of the last token only) captures the same states.
        let all_rows = e.captured().to_vec();
        e.reset();
        let last = e.decode(&toks, Outputs::Last).expect("decode");
        assert_eq!(last.n_rows(), 1);
        assert_eq!(
            last.row(0),
            logits.row(toks.len() - 1),
            "{dir}: last-row logits differ"
        );
        assert_eq!(
            e.captured(),
            &all_rows[..],
            "{dir}: capture differs when only the last row is output"
        );
        let hs = full[si]["hidden_states"].as_array().expect("hidden_states");
        let cap = e.captured();
        assert_eq!(cap.len(), toks.len() * n_layer * n_embd);
        for il in 0..n_layer {
            // HF hidden_states[il+1] is layer il's output; the last one has the final norm applied,
            // so the last layer compares with last_layer_output_prenorm.
            let want = if il + 1 == n_layer {
                rows(&full[si]["last_layer_output_prenorm"])
            } else {
                rows(&hs[il + 1])
            };
            for (p, w) in want.iter().enumerate() {
                let base = (p * n_layer + il) * n_embd;
                let err = rel_err(&cap[base..base + n_embd], w);
                if p == 0 && il + 1 == n_layer {
                    eprintln!("{dir} seq {si} last layer hidden rel err {err:.2e}");
                }
                assert!(
                    err <= max_hidden_err,
                    "{dir} seq {si} layer {il} pos {p}: hidden rel err {err} > {max_hidden_err}"
                );
            }
        }
    }
}

/// Greedy generation with the KV cache equals transformers' generate.
fn check_greedy(dir: &str, file: &str, seq_key: Option<&str>) {
    let fx = common::read_json(&format!("tiny/{dir}/reference.json"));
    let seqs = match seq_key {
        Some(k) => fx[k]["sequences"].clone(),
        None => fx["sequences"].clone(),
    };
    let mut e = engine_for(dir, file, false);
    for s in seqs.as_array().expect("sequences") {
        let want = ids(&s["generated"]);
        e.reset();
        let mut logits = e.decode(&ids(&s["ids"]), Outputs::Last).expect("prefill");
        let mut got = Vec::new();
        for _ in 0..want.len() {
            let t = argmax(logits.last());
            got.push(t);
            logits = e.decode(&[t], Outputs::Last).expect("decode");
        }
        assert_eq!(
            got, want,
            "{dir}/{file}: greedy continuation differs from transformers"
        );
    }
}

// Measured max relative errors (max |ours - HF| / max |HF|) on an AVX-512 CPU: f32 weights with an
// f32 KV cache 4e-7..6e-6 for logits, 3e-7..1.5e-6 for hidden states; f16 weights 8e-4..1.8e-3
// (ggml also rounds the activations to f16 in f16 matmuls). The bounds leave room for other
// CPUs' kernels without hiding a wrong graph: swapping the RoPE style gives errors of order 1.
#[test]
fn qwen3_f32_matches_transformers() {
    check_forward("qwen3", "model-f32.gguf", None, 1e-4, 1e-4);
    check_greedy("qwen3", "model-f32.gguf", None);
}

#[test]
fn qwen3_f16_matches_f16_rounded_transformers() {
    // f16 weights; the reference is transformers with the same f16-rounded weights.
    check_forward(
        "qwen3",
        "model-f16.gguf",
        Some("f16_weight_reference"),
        5e-3,
        1.0,
    );
    check_greedy("qwen3", "model-f16.gguf", Some("f16_weight_reference"));
}

#[test]
fn llama_f32_matches_transformers() {
    check_forward("llama", "model-f32.gguf", None, 1e-4, 1e-4);
    check_greedy("llama", "model-f32.gguf", None);
}

#[test]
fn llama32_rope_scaling_tied_embeddings_matches_transformers() {
    check_forward("llama32", "model-f32.gguf", None, 1e-4, 1e-4);
    check_greedy("llama32", "model-f32.gguf", None);
}

/// A server slot drops the graphs of a request's prompt length between requests: the memory
/// they hold is freed, decode and verify graphs stay, and decoding goes on unchanged.
#[test]
fn dropping_prompt_graphs_keeps_decode_graphs_and_results() {
    let run = |drop_between: bool| {
        let mut e = engine_for("qwen3", "model-f32.gguf", false);
        let mut out = Vec::new();
        let mut next = argmax(
            e.decode(&[1, 2, 3, 4, 5], Outputs::Last)
                .expect("prompt")
                .last(),
        );
        for _ in 0..4 {
            out.push(next);
            next = argmax(e.decode(&[next], Outputs::Last).expect("decode").last());
        }
        // A verify-shaped batch (every row an output), as speculation evaluates.
        let v = e.decode(&[next, 7, 8], Outputs::All).expect("verify");
        out.push(argmax(v.row(2)));
        let (n_before, bytes_before) = e.cached_graphs();
        if drop_between {
            e.drop_prompt_graphs();
            let (n, bytes) = e.cached_graphs();
            // The 5-token prompt graph went; the 1-token and the 3-token verify graphs stay.
            assert_eq!((n_before, n), (3, 2));
            assert!(
                bytes < bytes_before && bytes > 0,
                "{bytes_before} -> {bytes}"
            );
        }
        // The next request's prompt (a new length) and decoding after it.
        let mut next = argmax(
            e.decode(&[9, 10, 11, 12], Outputs::Last)
                .expect("prompt 2")
                .last(),
        );
        for _ in 0..4 {
            out.push(next);
            next = argmax(e.decode(&[next], Outputs::Last).expect("decode").last());
        }
        out
    };
    assert_eq!(run(true), run(false));
}
