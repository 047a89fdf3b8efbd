//! `blockspec convert-draft`: a z-lab drafter converted to a `dflash` GGUF drafts exactly what the
//! z-lab directory drafts (same tokens, same acceptance length at every step), its metadata and
//! tensors are those llama.cpp's own converter writes, and bad inputs give one clear error.

mod common;

use common::ids;

use blockspec::decode::draft::dflash::{DFlashDrafter, DrafterOptions};
use blockspec::format::gguf::Gguf;
use blockspec::model::Model;
use blockspec::runtime::engine::{Engine, EngineConfig};
use blockspec::text::tokenizer::Tokenizer;
use std::path::Path;
use std::sync::Arc;

const TARGET: &str = "tiny/qwen3/model-f32.gguf";
const DRAFT_DIR: &str = "dflash/tiny-qwen3-drafter";

/// Every case of the DFlash reference fixture, generated greedily with full blocks: per case the
/// tokens and the acceptance length of every step.
fn run_cases(drafter_path: &Path, weight_type: Option<ggml::Type>) -> Vec<(Vec<u32>, Vec<usize>)> {
    let fx = common::read_json("dflash/reference.json");
    let g = Gguf::open(&common::fixture(TARGET)).expect("target");
    let tok = Tokenizer::from_gguf(&g).expect("tokenizer");
    let backend = Arc::new(ggml::Backend::cpu(1));
    let model = Arc::new(Model::load_with(&g, &backend, false, false).expect("load"));
    let cfg = EngineConfig {
        n_ctx: 256,
        n_ubatch: 64,
        type_k: ggml::Type::F16,
        type_v: ggml::Type::F16,
        capture_layers: vec![0, 2],
    };
    let mut engine = Engine::new(model.clone(), backend.clone(), cfg).expect("engine");
    let mut drafter = DFlashDrafter::load(
        drafter_path,
        model,
        backend,
        &DrafterOptions {
            weight_type,
            ..DrafterOptions::new(256)
        },
    )
    .expect("drafter");
    let block = fx["block_size"].as_u64().expect("block") as usize;
    let max_new = fx["generation"]["max_new_tokens"]
        .as_u64()
        .expect("max_new") as usize;
    let mut out = Vec::new();
    for key in ["cases", "cases_seen"] {
        for c in fx[key].as_array().expect("cases") {
            let opts = common::greedy_opts(max_new);
            let (gen, stats) = common::fixed_block_greedy(
                &mut engine,
                &mut drafter,
                &tok,
                &ids(&c["prompt"]),
                &opts,
                block,
            );
            out.push((gen.tokens, stats.accept_lengths));
        }
    }
    out
}

fn convert(args: &[&str]) -> (i32, String) {
    let (code, _out, err) = common::blockspec(&[&["convert-draft"], args].concat());
    (code, err)
}

#[test]
fn converted_gguf_drafts_what_the_zlab_dir_drafts() {
    let dir = tempfile::tempdir().expect("tmp");
    let target = common::fixture(TARGET);
    let src = common::fixture(DRAFT_DIR);
    let (t, s) = (target.to_str().unwrap(), src.to_str().unwrap());
    let f32_path = dir.path().join("f32.gguf");
    let q8_path = dir.path().join("q8.gguf");
    for (ty, p) in [("f32", &f32_path), ("q8_0", &q8_path)] {
        let (code, err) = convert(&[s, "-o", p.to_str().unwrap(), "--type", ty, "--target", t]);
        assert_eq!(code, 0, "{err}");
    }
    let from_dir = run_cases(&src, None);
    let accepted: usize = from_dir.iter().flat_map(|c| &c.1).map(|l| l - 1).sum();
    assert!(
        accepted >= 20,
        "the fixture should accept drafts ({accepted})"
    );
    // f32 GGUF: the same weights, so the same drafts: identical tokens and acceptance lengths.
    assert_eq!(
        run_cases(&f32_path, None),
        from_dir,
        "f32 GGUF drafts differ"
    );
    // q8_0 GGUF: the same bytes as quantizing the directory at load (--draft-type q8_0).
    assert_eq!(
        run_cases(&q8_path, None),
        run_cases(&src, Some(ggml::Type::Q8_0)),
        "q8_0 GGUF drafts differ from the directory quantized at load"
    );
}

/// The llama spelling carries what llama.cpp's converter (convert_hf_to_gguf.py, DFlashModel)
/// writes for the same checkpoint: every dflash.* and tokenizer.* key with the same value, and the
/// same tensors (names, shapes; f32 when converted with --type f32).
#[test]
fn llama_spelling_matches_llama_cpp_converter() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("d.gguf");
    let target = common::fixture(TARGET);
    let src = common::fixture(DRAFT_DIR);
    let (code, err) = convert(&[
        src.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--type",
        "f32",
        "--target",
        target.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let ours = Gguf::open(&out).expect("ours");
    let theirs = Gguf::open(&common::fixture("dflash/tiny-qwen3-drafter.gguf")).expect("theirs");
    for k in theirs.keys() {
        if k.starts_with("dflash.") || k.starts_with("tokenizer.") || k == "general.architecture" {
            assert_eq!(
                format!("{:?}", ours.get(k)),
                format!("{:?}", theirs.get(k)),
                "key {k}"
            );
        }
    }
    let list = |g: &Gguf| {
        let mut v: Vec<String> = g
            .tensors
            .iter()
            .map(|t| format!("{} {} {:?}", t.name, t.ty, &t.ne[..t.n_dims]))
            .collect();
        v.sort();
        v
    };
    assert_eq!(list(&ours), list(&theirs));
}

#[test]
fn bad_inputs_give_one_clear_error() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("x.gguf");
    let o = out.to_str().unwrap();
    let target = common::fixture(TARGET);
    let t = target.to_str().unwrap();
    let src = common::fixture(DRAFT_DIR);

    let (code, err) = convert(&["/no/such/drafter", "-o", o, "--target", t]);
    assert_eq!(code, 2);
    assert!(err.contains("drafter not found: /no/such/drafter"), "{err}");

    // a target model is not a drafter
    let (code, err) = convert(&[t, "-o", o]);
    assert_eq!(code, 2);
    assert!(err.contains("is not a DFlash drafter"), "{err}");

    // llama.cpp needs the target's tokenizer
    let (code, err) = convert(&[src.to_str().unwrap(), "-o", o]);
    assert_eq!(code, 2);
    assert!(err.contains("--target"), "{err}");

    let (code, err) = convert(&[src.to_str().unwrap(), "-o", o, "--type", "q5_k"]);
    assert_eq!(code, 2);
    assert!(err.contains("--type \"q5_k\""), "{err}");

    // a directory without safetensors
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    std::fs::copy(src.join("config.json"), empty.join("config.json")).unwrap();
    let (code, err) = convert(&[empty.to_str().unwrap(), "-o", o, "--spelling", "blockspec"]);
    assert_eq!(code, 2);
    assert!(err.contains("no *.safetensors files"), "{err}");
    assert!(!out.exists(), "no output on failure");
    assert_eq!(err.lines().count(), 1, "{err}");
}
