//! Bad input gives one clear error naming the problem: corrupt, truncated or inconsistent GGUF
//! files, unknown architectures, and CLI misuse (exit status 2, no panic).

mod common;

use blockspec::format::gguf::{Gguf, Value};
use blockspec::format::gguf_write::{read_all, write_gguf, TensorData};
use blockspec::model::Model;
use common::blockspec;
use std::path::{Path, PathBuf};

fn tiny() -> PathBuf {
    common::fixture("tiny/qwen3/model-f32.gguf")
}

fn write_tmp(dir: &Path, name: &str, kv: &[(String, Value)], tensors: &[TensorData]) -> PathBuf {
    let p = dir.join(name);
    let mut f = std::fs::File::create(&p).expect("create");
    write_gguf(&mut f, kv, tensors).expect("write");
    p
}

fn load_err(p: &Path) -> String {
    let g = match Gguf::open(p) {
        Ok(g) => g,
        Err(e) => return e.to_string(),
    };
    let backend = ggml::Backend::cpu(1);
    match Model::load(&g, &backend, false) {
        Ok(_) => panic!("{} loaded but should not", p.display()),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn writer_round_trips() {
    let g = Gguf::open(&tiny()).expect("open");
    let (kv, tensors) = read_all(&g);
    let dir = tempfile::tempdir().expect("tmp");
    let p = write_tmp(dir.path(), "copy.gguf", &kv, &tensors);
    let h = Gguf::open(&p).expect("reopen");
    assert_eq!(h.keys(), g.keys());
    for k in g.keys() {
        assert_eq!(h.get(k), g.get(k), "{k}");
    }
    for t in &g.tensors {
        let u = h.tensor(&t.name).expect("tensor");
        assert_eq!((u.ne, u.ty), (t.ne, t.ty));
        assert_eq!(h.tensor_bytes(u), g.tensor_bytes(t));
    }
}

#[test]
fn truncated_file_names_the_tensor_and_offset() {
    let bytes = std::fs::read(tiny()).expect("read");
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("cut.gguf");
    std::fs::write(&p, &bytes[..bytes.len() - 1000]).expect("write");
    let e = load_err(&p);
    assert!(
        e.contains("truncated") && e.contains("cut.gguf") && e.contains("tensor"),
        "{e}"
    );
    // cut inside the metadata
    std::fs::write(&p, &bytes[..300]).expect("write");
    let e = load_err(&p);
    assert!(e.contains("truncated") && e.contains("at byte"), "{e}");
}

#[test]
fn not_a_gguf() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("x.gguf");
    std::fs::write(&p, b"PK\x03\x04 this is a zip file, not a model").expect("write");
    let e = load_err(&p);
    assert!(e.contains("not a GGUF file"), "{e}");
    let e = load_err(&dir.path().join("missing.gguf"));
    assert!(
        e.contains("cannot open") && e.contains("missing.gguf"),
        "{e}"
    );
}

#[test]
fn unknown_architecture() {
    let g = Gguf::open(&tiny()).expect("open");
    let (mut kv, tensors) = read_all(&g);
    for (k, v) in kv.iter_mut() {
        if k == "general.architecture" {
            *v = Value::Str("mamba9".into());
        }
    }
    let dir = tempfile::tempdir().expect("tmp");
    let e = load_err(&write_tmp(dir.path(), "a.gguf", &kv, &tensors));
    assert!(e.contains("unsupported architecture \"mamba9\""), "{e}");
}

#[test]
fn wrong_tensor_shape_and_missing_tensor() {
    let g = Gguf::open(&tiny()).expect("open");
    let (kv, mut tensors) = read_all(&g);
    let k = tensors
        .iter_mut()
        .find(|t| t.name == "blk.0.attn_k.weight")
        .expect("attn_k");
    k.ne.reverse(); // same bytes, transposed shape
    let dir = tempfile::tempdir().expect("tmp");
    let e = load_err(&write_tmp(dir.path(), "s.gguf", &kv, &tensors));
    assert!(
        e.contains("blk.0.attn_k.weight has shape [32, 64], expected [64, 32]"),
        "{e}"
    );

    let (kv, mut tensors) = read_all(&g);
    tensors.retain(|t| t.name != "blk.1.ffn_up.weight");
    let e = load_err(&write_tmp(dir.path(), "m.gguf", &kv, &tensors));
    assert!(e.contains("missing tensor blk.1.ffn_up.weight"), "{e}");
}

#[test]
fn unknown_tensor_type() {
    let g = Gguf::open(&tiny()).expect("open");
    let (kv, tensors) = read_all(&g);
    let mut bytes = Vec::new();
    write_gguf(&mut bytes, &kv, &tensors).expect("write");
    // The first tensor info: name, n_dims, dims, then the type id; overwrite it with 99.
    let name = tensors[0].name.as_bytes();
    let at = bytes
        .windows(name.len())
        .position(|w| w == name)
        .expect("name in header");
    let ty_at = at + name.len() + 4 + 8 * tensors[0].ne.len();
    bytes[ty_at..ty_at + 4].copy_from_slice(&99u32.to_le_bytes());
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("t.gguf");
    std::fs::write(&p, &bytes).expect("write");
    let e = load_err(&p);
    assert!(
        e.contains("unknown tensor type 99") && e.contains(&tensors[0].name),
        "{e}"
    );
}

#[test]
fn cli_errors_exit_2_with_one_line() {
    let m = tiny();
    let m = m.to_str().expect("utf8 path");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["run", "-m", "/nonexistent/model.gguf", "-p", "hi"],
            "model file not found",
        ),
        (
            vec![
                "run",
                "-m",
                m,
                "-p",
                "hello there, a prompt that is longer than eight tokens for sure",
                "-c",
                "8",
            ],
            "does not fit the context",
        ),
        (vec!["run", "-m", m, "-p", "hi", "--temp", "warm"], "--temp"),
        (
            vec!["run", "-m", m, "-p", "hi", "--spec-accept", "maybe"],
            "--spec-accept",
        ),
        (vec!["run", "-m", m], "no prompt"),
        (
            vec!["run", "-m", m, "-p", "hi", "--cache-type-k", "q9_9"],
            "--cache-type-k",
        ),
        (
            vec!["run", "-m", m, "--chat-file", "/nonexistent/chat.json"],
            "--chat-file",
        ),
        (
            vec!["tokenize", "-m", "/nonexistent/model.gguf", "--text", "x"],
            "model file not found",
        ),
        (vec!["bench", "-m", m, "-p", "4096", "-c", "128"], "-p 4096"),
        (
            vec!["run", "-m", m, "-p", "hi", "--spec", "ngram", "-md", m],
            "uses no draft model",
        ),
        (
            vec!["run", "-m", m, "-p", "hi", "--spec", "draft-simple"],
            "needs a drafter",
        ),
        (
            vec!["run", "-m", m, "-p", "hi", "--spec", "dflash", "-md", m],
            "is not a DFlash drafter",
        ),
        (
            vec![
                "run", "-m", m, "-p", "hi", "--spec", "ngram", "--verify", "sloppy",
            ],
            "expected auto, exact or fast",
        ),
        (
            vec!["run", "-m", m, "-p", "hi", "--device", "cuda"],
            "no GPU found",
        ),
        (
            vec!["run", "-m", m, "-p", "hi", "--device", "tpu"],
            "expected cpu, cuda",
        ),
        (
            vec!["synth", "--like", "gpt-9", "-o", "/nonexistent/x.gguf"],
            "--like \"gpt-9\": expected one of",
        ),
        (
            vec!["run", "-m", m, "-p", "hi", "--spec", "warp"],
            "expected dflash, draft, ngram or none",
        ),
        (
            vec!["run", "-m", m, "-p", "hi", "-md", "/nonexistent/d.gguf"],
            "drafter not found",
        ),
        (
            vec![
                "run",
                "-m",
                m,
                "-p",
                "hi",
                "--spec",
                "ngram",
                "--spec-draft-n-max",
                "0",
            ],
            "--spec-draft-n-max",
        ),
        (
            vec!["run", "-m", m, "-p", "hi", "-md", m, "--draft-p-min", "1.5"],
            "--draft-p-min",
        ),
    ];
    for (args, want) in cases {
        let (code, _out, err) = blockspec(&args);
        assert_eq!(code, 2, "{args:?}: exit {code}, stderr {err}");
        assert!(
            err.contains(want),
            "{args:?}: stderr {err:?} lacks {want:?}"
        );
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn cli_run_json_on_tiny_model() {
    let m = tiny();
    let (code, out, err) = blockspec(&[
        "run",
        "-m",
        m.to_str().expect("utf8"),
        "-p",
        "hello",
        "-n",
        "5",
        "--temp",
        "0",
        "--json",
        "--ignore-eos",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
    assert_eq!(v["tokens"].as_array().map(|a| a.len()), Some(5));
    assert!(v["prompt_tokens"].as_array().is_some_and(|a| !a.is_empty()));
    for k in ["prompt_n", "prompt_ms", "predicted_n", "predicted_ms"] {
        assert!(v["timings"][k].is_number(), "timings.{k} missing: {v}");
    }
    assert_eq!(v["timings"]["predicted_n"], 5);
}

/// `-md` with an ordinary model (a classic draft model) and `--spec ngram` through the CLI give
/// the same tokens as plain greedy decoding with the same (batch-invariant) kernels.
#[test]
fn cli_draft_model_and_ngram_match_plain() {
    let m = tiny();
    let m = m.to_str().expect("utf8");
    let run = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec![
            "run",
            "-m",
            m,
            "-p",
            "one two one two one two",
            "-n",
            "12",
            "--temp",
            "0",
            "--json",
            "--ignore-eos",
        ];
        args.extend_from_slice(extra);
        let (code, out, err) = blockspec(&args);
        assert_eq!(code, 0, "{extra:?}: {err}");
        serde_json::from_str(out.trim()).expect("one JSON object")
    };
    let plain = run(&["--batch-invariant"]);
    for extra in [
        vec!["-md", m, "--block-size", "3", "--verify", "exact"],
        vec![
            "--spec",
            "draft-simple",
            "--spec-draft-model",
            m,
            "--verify",
            "exact",
        ],
        vec!["--spec", "ngram", "--block-size", "4", "--verify", "exact"],
    ] {
        let v = run(&extra);
        assert_eq!(v["tokens"], plain["tokens"], "{extra:?}");
        assert!(v["timings"]["draft_n"].is_number(), "{extra:?}: {v}");
    }
    // `--verify fast` verifies full blocks; the model drafting for itself is right nearly always
    // (a batch may round a near-tie differently from the draft's one-token step). (The default,
    // `auto`, verifies no batch here: this f32 model's batches of 2 rows already round
    // differently from one-token steps on the CPU.)
    let v = run(&["-md", m, "--block-size", "3", "--verify", "fast"]);
    let drafted = v["timings"]["draft_n"].as_u64().unwrap_or(0);
    let accepted = v["timings"]["draft_n_accepted"].as_u64().unwrap_or(0);
    assert!(drafted > 0, "{v}");
    assert!(accepted * 4 >= drafted * 3, "{v}");
}

/// Issue 19's command-line edges: a directory as the model is named as such, once; a context
/// far beyond the machine's memory is one clean error line (no ggml log lines before it); a
/// prompt that begins with a dash is a prompt; -n 0 generates nothing.
#[test]
fn cli_loose_edges() {
    let m = tiny();
    let m = m.to_str().expect("utf8 path");
    let dir = std::env::temp_dir();
    let dir = dir.to_str().expect("utf8 path");
    let one_error_line = |args: &[&str], want: &str| {
        let (code, _out, err) = blockspec(args);
        assert_eq!(code, 2, "{args:?}: exit {code}, stderr {err}");
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: stderr {err:?}");
        assert!(lines[0].starts_with("error: "), "{args:?}: {err:?}");
        assert_eq!(
            err.matches(want).count(),
            1,
            "{args:?}: {err:?} lacks {want:?}"
        );
    };
    one_error_line(&["run", "-m", dir, "-p", "hi"], "is a directory");
    one_error_line(&["info", "-m", dir], "is a directory");
    // 4e9 tokens of KV cache (about 2 TB for this model) fit no machine.
    one_error_line(
        &["run", "-m", m, "-p", "hi", "-c", "4000000000"],
        "lower -c",
    );

    for prompt in ["-- Table orders(id, total)", "- item one", "-5"] {
        let (code, out, err) = blockspec(&[
            "run", "-m", m, "-p", prompt, "-n", "2", "--temp", "0", "--json",
        ]);
        assert_eq!(code, 0, "{prompt:?}: {err}");
        let v: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
        assert_eq!(v["prompt"], prompt);
    }
    let (code, out, err) = blockspec(&["tokenize", "-m", m, "--text", "-x", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains('['), "{out}");

    let (code, out, err) = blockspec(&["run", "-m", m, "-p", "hello", "-n", "0", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
    assert_eq!(v["tokens"], serde_json::json!([]));
    assert_eq!(v["text"], "");
}
