//! The `qwen35` pre-tokenizer (Qwen3.5 / Qwen3.6 GGUFs) against llama.cpp.
//!
//! The fixture `tests/fixtures/llama/tokenizer-qwen35-<model>.json` holds llama.cpp's ids for the
//! Qwen2.5-Coder-0.5B vocabulary with `tokenizer.ggml.pre` set to "qwen35"
//! (scripts/ref/make_qwen35_tokenizer_fixture.py): here the same vocabulary, rewritten the same
//! way into a metadata-only GGUF, must tokenize every case identically. Cases marked
//! `differs_from_qwen2` are the ones where llama.cpp's qwen2 pre-tokenizer gives other ids: the
//! unmodified model must give other ids there too, which shows the test reaches the difference
//! (letter runs that take combining marks, `[\p{L}\p{M}]+`).
//!
//! Needs the real model (see `common::model`).

mod common;

use blockspec::format::gguf::{Gguf, Value};
use blockspec::format::gguf_write::write_gguf;
use blockspec::text::tokenizer::Tokenizer;
use serde_json::Value as Json;

const MODEL: &str = "qwen2.5-coder-0.5b-instruct-q4_k_m";

/// The model's metadata (no tensors) with `tokenizer.ggml.pre` replaced, as a GGUF in `dir`.
fn with_pre(g: &Gguf, pre: &str, dir: &std::path::Path) -> std::path::PathBuf {
    let kv: Vec<(String, Value)> = g
        .keys()
        .iter()
        .map(|k| {
            let v = match k.as_str() {
                "tokenizer.ggml.pre" => Value::Str(pre.to_string()),
                _ => g.get(k).expect("listed key").clone(),
            };
            (k.clone(), v)
        })
        .collect();
    let path = dir.join(format!("vocab-{pre}.gguf"));
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).expect("create"));
    write_gguf(&mut f, &kv, &[]).expect("write gguf");
    drop(f);
    path
}

#[test]
fn qwen35_pre_tokenizer_matches_llama_cpp() {
    let Some(gguf) = common::model(&format!("{MODEL}.gguf")) else {
        return;
    };
    let fx = common::read_json(&format!("llama/tokenizer-qwen35-{MODEL}.json"));
    assert_eq!(fx["pre_tokenizer"], "qwen35");
    let g = Gguf::open(&gguf).expect("open gguf");
    assert_eq!(g.str("tokenizer.ggml.pre").expect("pre"), "qwen2");
    let dir = tempfile::tempdir().expect("tmp");
    let vocab = Gguf::open(&with_pre(&g, "qwen35", dir.path())).expect("open vocab");
    let tok = Tokenizer::from_gguf(&vocab).expect("qwen35 tokenizer");
    assert_eq!(tok.pre_tokenizer(), "qwen35");
    let qwen2 = Tokenizer::from_gguf(&g).expect("qwen2 tokenizer");

    let cases = fx["cases"].as_array().expect("cases");
    let (mut failures, mut n_differs) = (Vec::new(), 0);
    for c in cases {
        let text = c["text"].as_str().expect("text");
        let src = c["source"].as_str().unwrap_or("?");
        for (field, parse_special) in [("ids", true), ("ids_no_parse_special", false)] {
            let want = common::ids(&c[field]);
            let got = tok.encode(text, true, parse_special).expect("encode");
            if got != want {
                failures.push(format!(
                    "{src} {text:?} (parse_special={parse_special}):\n    llama.cpp {want:?}\n    ours      {got:?}"
                ));
            }
        }
        let want_text = c["detokenized"].as_str().expect("detokenized");
        let got_text = tok.decode(&common::ids(&c["ids"]), false);
        if got_text != want_text {
            failures.push(format!(
                "{src} decode:\n    llama.cpp {want_text:?}\n    ours      {got_text:?}"
            ));
        }
        let with_qwen2 = qwen2.encode(text, true, true).expect("encode");
        let differs = with_qwen2 != common::ids(&c["ids"]);
        if c["differs_from_qwen2"].as_bool() != Some(differs) {
            failures.push(format!(
                "{src} {text:?}: llama.cpp's qwen2 ids differ from its qwen35 ids: {}; ours: {differs}",
                c["differs_from_qwen2"]
            ));
        }
        n_differs += usize::from(differs);
    }
    println!(
        "{} cases, {n_differs} where qwen35 and qwen2 give different ids, {} failures",
        cases.len(),
        failures.len()
    );
    assert!(n_differs >= 5, "the fixture should exercise the difference");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn qwen35_fixture_lists_its_cases_like_the_qwen2_one() {
    // The qwen35 fixture covers the whole qwen2 tokenizer fixture (corpus and multi-line cases),
    // plus the mark-heavy cases.
    let q35 = common::read_json(&format!("llama/tokenizer-qwen35-{MODEL}.json"));
    let q2 = common::read_json(&format!("llama/tokenizer-{MODEL}.json"));
    let texts = |fx: &Json| -> Vec<String> {
        fx["cases"]
            .as_array()
            .expect("cases")
            .iter()
            .map(|c| c["text"].as_str().expect("text").to_string())
            .collect()
    };
    let (a, b) = (texts(&q35), texts(&q2));
    assert!(b.iter().all(|t| a.contains(t)));
    assert!(a.len() > b.len());
}
