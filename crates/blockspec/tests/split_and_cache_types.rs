//! A model split over several GGUF files (`-0000i-of-0000N.gguf`) loads and computes exactly like
//! the single file; quantized KV caches (q8_0, q4_0) run and stay close to the f16 cache.

mod common;

use blockspec::decode::sampling::argmax;
use blockspec::format::gguf::{Gguf, Value};
use blockspec::format::gguf_write::{read_all, write_gguf};
use blockspec::model::Model;
use blockspec::runtime::engine::{Engine, EngineConfig, Outputs};
use std::path::Path;
use std::sync::Arc;

fn engine(path: &Path, kv: ggml::Type) -> Engine {
    let g = Gguf::open(path).expect("open");
    let backend = Arc::new(ggml::Backend::cpu(2));
    let model = Arc::new(Model::load(&g, &backend, false).expect("load"));
    let cfg = EngineConfig {
        n_ctx: 128,
        n_ubatch: 64,
        type_k: kv,
        type_v: kv,
        capture_layers: vec![],
    };
    Engine::new(model, backend, cfg).expect("engine")
}

/// Token ids valid in every model here (the tiny ones have 512).
fn prompt() -> Vec<u32> {
    (0..40u32).map(|i| (i * 37 + 11) % 512).collect()
}

#[test]
fn split_gguf_equals_single_file() {
    let single = common::fixture("tiny/qwen3/model-f32.gguf");
    let g = Gguf::open(&single).expect("open");
    let (kv, tensors) = read_all(&g);
    let dir = tempfile::tempdir().expect("tmp");
    let half = tensors.len() / 2;
    let n = tensors.len() as u64;
    let split_keys = |no: u16| {
        vec![
            ("split.no".to_string(), Value::U16(no)),
            ("split.count".to_string(), Value::U16(2)),
            ("split.tensors.count".to_string(), Value::I32(n as i32)),
        ]
    };
    let mut kv1 = kv.clone();
    kv1.extend(split_keys(0));
    let p1 = dir.path().join("tiny-00001-of-00002.gguf");
    write_gguf(
        &mut std::fs::File::create(&p1).expect("create"),
        &kv1,
        &tensors[..half],
    )
    .expect("write 1");
    let p2 = dir.path().join("tiny-00002-of-00002.gguf");
    write_gguf(
        &mut std::fs::File::create(&p2).expect("create"),
        &split_keys(1),
        &tensors[half..],
    )
    .expect("write 2");

    let gs = Gguf::open(&p1).expect("open split");
    assert_eq!(gs.files.len(), 2);
    assert_eq!(gs.tensors.len(), tensors.len());

    let mut a = engine(&single, ggml::Type::F32);
    let mut b = engine(&p1, ggml::Type::F32);
    let la = a.decode(&prompt(), Outputs::All).expect("decode");
    let lb = b.decode(&prompt(), Outputs::All).expect("decode");
    assert_eq!(la.data, lb.data, "split model computes different logits");

    // A missing part is a clear error.
    std::fs::remove_file(&p2).expect("rm");
    let e = Gguf::open(&p1).err().expect("must fail").to_string();
    assert!(e.contains("tiny-00002-of-00002.gguf"), "{e}");
}

#[test]
fn quantized_kv_cache_needs_whole_blocks_per_head() {
    // The tiny model's heads are 16 wide; q8_0 blocks are 32.
    let path = common::fixture("tiny/qwen3/model-f32.gguf");
    let g = Gguf::open(&path).expect("open");
    let backend = Arc::new(ggml::Backend::cpu(1));
    let model = Arc::new(Model::load(&g, &backend, false).expect("load"));
    let cfg = EngineConfig {
        n_ctx: 64,
        n_ubatch: 8,
        type_k: ggml::Type::Q8_0,
        type_v: ggml::Type::F16,
        capture_layers: vec![],
    };
    let e = Engine::new(model, backend, cfg)
        .err()
        .expect("must fail")
        .to_string();
    assert!(
        e.contains("--cache-type-k q8_0") && e.contains("head size 16"),
        "{e}"
    );
}

#[test]
fn quantized_kv_caches_stay_close_to_f16() {
    let Some(path) = common::model(common::MODEL_05B) else {
        return;
    };
    let reference = engine(&path, ggml::Type::F16)
        .decode(&prompt(), Outputs::All)
        .expect("f16");
    // On this (deliberately random, hence chaotic) prompt even an f32 instead of f16 cache moves the
    // logits by 3e-2 of their scale; Qwen2's K has outliers (from its K bias), so a q8_0 K costs
    // more: measured q8_0 2e-1 with argmax agreeing at 35/40 positions. The bounds catch a broken
    // cache (garbage attention gives errors of order 1 and no agreement).
    // A q4_0 K is much worse here (measured 8e-1, 16/40 agreement): llama.cpp rotates Q and K by a
    // Hadamard transform when K is quantized to spread those outliers, which we do not do yet; so
    // q4_0 is checked on V, and q8_0 on both.
    let f16 = ggml::Type::F16;
    for (tk, tv, max_err, min_agree) in [
        (ggml::Type::Q8_0, ggml::Type::Q8_0, 0.35f32, 0.75f32),
        (f16, ggml::Type::Q4_0, 0.35, 0.75),
    ] {
        let ty = format!("K {tk} V {tv}");
        let g = Gguf::open(&path).expect("open");
        let backend = Arc::new(ggml::Backend::cpu(2));
        let model = Arc::new(Model::load(&g, &backend, false).expect("load"));
        let cfg = EngineConfig {
            n_ctx: 128,
            n_ubatch: 64,
            type_k: tk,
            type_v: tv,
            capture_layers: vec![],
        };
        let l = Engine::new(model, backend, cfg)
            .expect("engine")
            .decode(&prompt(), Outputs::All)
            .expect("decode");
        let scale = reference.data.iter().fold(0f32, |m, x| m.max(x.abs()));
        let err = l
            .data
            .iter()
            .zip(&reference.data)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()))
            / scale;
        let n = reference.n_rows();
        let agree = (0..n)
            .filter(|&i| argmax(l.row(i)) == argmax(reference.row(i)))
            .count() as f32
            / n as f32;
        eprintln!("{ty}: rel err {err:.3e}, argmax agreement {agree:.2}");
        assert!(err < max_err, "{ty}: rel err {err}");
        assert!(agree >= min_agree, "{ty}: argmax agreement {agree}");
    }
}
