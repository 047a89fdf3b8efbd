//! A drafter that does not fit its target, or a broken drafter checkpoint, gives one clear error.

mod common;

use blockspec::decode::draft::dflash::{DFlashDrafter, DrafterOptions};
use blockspec::dev::synth::{write_random_dflash, DraftSpec};
use blockspec::format::gguf::Gguf;
use blockspec::model::{hparams_for, Model};
use std::path::Path;
use std::sync::Arc;

fn tiny_target() -> (Arc<Model>, Arc<ggml::Backend>) {
    let g = Gguf::open(&common::fixture("tiny/qwen3/model-f32.gguf")).expect("open");
    let backend = Arc::new(ggml::Backend::cpu(1));
    (
        Arc::new(Model::load(&g, &backend, false).expect("load")),
        backend,
    )
}

fn load_err(path: &Path) -> String {
    let (m, b) = tiny_target();
    match DFlashDrafter::load(path, m, b, &DrafterOptions::new(64)) {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(e) => format!("{e:#}"),
    }
}

fn spec(taps: Vec<usize>, mask: u32) -> DraftSpec {
    DraftSpec {
        n_layer: 1,
        block_size: 8,
        target_layers: taps,
        mask_token_id: mask,
        seed: 1,
        scale: 0.1,
    }
}

#[test]
fn drafter_for_another_target() {
    let g = Gguf::open(&common::fixture("tiny/qwen3/model-f32.gguf")).expect("open");
    let mut hp = hparams_for(&g).expect("hp");
    let dir = tempfile::tempdir().expect("tmp");
    // hidden size of another model
    hp.n_embd = 128;
    let p = dir.path().join("wide.gguf");
    write_random_dflash(&p, &hp, &spec(vec![1, 2], 500)).expect("write");
    let e = load_err(&p);
    assert!(
        e.contains("hidden size 128 does not match the target's 64"),
        "{e}"
    );

    let hp = hparams_for(&g).expect("hp");
    let p = dir.path().join("layers.gguf");
    write_random_dflash(&p, &hp, &spec(vec![1, 9], 500)).expect("write");
    let e = load_err(&p);
    assert!(
        e.contains("target layer 9 out of range") && e.contains("4 layers"),
        "{e}"
    );

    let p = dir.path().join("mask.gguf");
    write_random_dflash(&p, &hp, &spec(vec![1, 2], 9999)).expect("write");
    let e = load_err(&p);
    assert!(
        e.contains("mask token id 9999 outside the target's vocabulary of 512"),
        "{e}"
    );

    let (m, b) = tiny_target();
    let p = dir.path().join("ok.gguf");
    write_random_dflash(&p, &hp, &spec(vec![1, 2], 500)).expect("write");
    assert!(DFlashDrafter::load(&p, m, b, &DrafterOptions::new(64)).is_ok());
}

#[test]
fn broken_zlab_checkpoints() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    std::fs::write(d.join("config.json"), "{ not json").expect("write");
    let e = load_err(d);
    assert!(e.contains("config.json: invalid JSON"), "{e}");

    std::fs::write(
        d.join("config.json"),
        r#"{"architectures":["DFlashDraftModel"],"hidden_size":64,"num_attention_heads":4,
            "num_hidden_layers":1,"intermediate_size":128,"dflash_config":{"mask_token_id":500}}"#,
    )
    .expect("write");
    let e = load_err(d);
    assert!(e.contains("missing block_size"), "{e}");

    std::fs::write(
        d.join("config.json"),
        r#"{"architectures":["DFlashDraftModel"],"hidden_size":64,"num_attention_heads":4,"block_size":8,
            "num_hidden_layers":1,"intermediate_size":128,"dflash_config":{"mask_token_id":500,"target_layer_ids":[1,2]}}"#,
    )
    .expect("write");
    let e = load_err(d);
    assert!(e.contains("no *.safetensors files"), "{e}");

    std::fs::write(
        d.join("model.safetensors"),
        b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage",
    )
    .expect("write");
    let e = load_err(d);
    assert!(e.contains("corrupt safetensors file"), "{e}");

    std::fs::write(
        d.join("config.json"),
        r#"{"architectures":["DFlash2DraftModel"],"hidden_size":64}"#,
    )
    .expect("write");
    let e = load_err(d);
    assert!(
        e.contains("DFlash 2") && e.contains("not supported yet"),
        "{e}"
    );
}

#[test]
fn cli_spec_errors() {
    let m = common::fixture("tiny/qwen3/model-f32.gguf");
    let m = m.to_str().expect("utf8");
    let d = common::fixture("dflash/tiny-qwen3-drafter");
    let d = d.to_str().expect("utf8");
    for (args, want) in [
        (
            vec![
                "run",
                "-m",
                m,
                "-p",
                "hi",
                "--draft",
                d,
                "--draft-type",
                "f32",
            ],
            "--draft-type \"f32\": expected q8_0 or q4_0",
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
                "--draft-type",
                "q8_0",
            ],
            "DFlash drafters only",
        ),
        (
            vec!["run", "-m", m, "-p", "hi", "--spec", "dflash"],
            "needs a drafter",
        ),
        (
            vec!["run", "-m", m, "-p", "hi", "--spec", "medusa"],
            "expected dflash",
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
                "--draft",
                d,
                "--draft-vocab",
                "100000",
            ],
            "--draft-vocab 100000: must be between 1 and the target's vocabulary size",
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
                "--draft-vocab",
                "64",
            ],
            "--draft-vocab applies to DFlash drafters only",
        ),
    ] {
        let (code, _out, err) = common::blockspec(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
}
