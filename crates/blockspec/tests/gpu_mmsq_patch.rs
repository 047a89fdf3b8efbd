//! The GPU benchmark route patches the ggml source we build on (scripts/gpu/mmsq/patch-ggml-cuda.py
//! adds the hook that hands small-batch quantized products to libbs-mmsq.so). The GPU machine is
//! not in CI, so check here that the patch still applies to the ggml vendored by the pinned
//! llama-cpp-sys-2: the hook lands once, right before ggml's own mmvq choice, a second run leaves
//! the file alone, and a source without the anchors is refused instead of silently unpatched.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

/// ggml-cuda.cu of the ggml source vendored by the llama-cpp-sys-2 this workspace builds on.
fn vendored_ggml_cuda() -> PathBuf {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(common::repo_file(""))
        .output()
        .expect("cargo metadata runs");
    assert!(out.status.success(), "cargo metadata failed: {out:?}");
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("cargo metadata JSON");
    let manifest = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .find(|p| p["name"] == "llama-cpp-sys-2")
        .and_then(|p| p["manifest_path"].as_str())
        .expect("llama-cpp-sys-2 among the packages");
    Path::new(manifest)
        .parent()
        .expect("manifest folder")
        .join("llama.cpp/ggml/src/ggml-cuda/ggml-cuda.cu")
}

fn run_patch(ggml_dir: &Path) -> std::process::Output {
    Command::new("python3")
        .arg(common::repo_file("scripts/gpu/mmsq/patch-ggml-cuda.py"))
        .arg(ggml_dir)
        .output()
        .expect("python3 runs")
}

#[test]
fn mmsq_hook_applies_to_the_vendored_ggml_cuda() {
    let original = std::fs::read_to_string(vendored_ggml_cuda()).expect("vendored ggml-cuda.cu");
    let dir = tempfile::tempdir().unwrap();
    let cuda_dir = dir.path().join("src/ggml-cuda");
    std::fs::create_dir_all(&cuda_dir).unwrap();
    let file = cuda_dir.join("ggml-cuda.cu");
    std::fs::write(&file, &original).unwrap();

    let out = run_patch(dir.path());
    assert!(out.status.success(), "patch failed: {out:?}");
    let patched = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        patched
            .matches("if (bs_mmsq_try(ctx, src0, src1, dst))")
            .count(),
        1
    );
    assert_eq!(patched.matches("static bool bs_mmsq_try(").count(), 1);
    // The call sits immediately before ggml's mmvq choice in ggml_cuda_mul_mat.
    let call = patched
        .find("if (bs_mmsq_try(ctx, src0, src1, dst))")
        .unwrap();
    let mmvq = patched[call..]
        .find("if (ggml_cuda_should_use_mmvq(src0->type, cc, ne11))")
        .expect("mmvq choice after the hook");
    assert!(mmvq < 200, "hook is {mmvq} bytes before the mmvq choice");
    // Nothing of the original is lost.
    for line in original
        .lines()
        .filter(|l| l.contains("ggml_cuda_mul_mat_vec_q("))
    {
        assert!(patched.contains(line), "line lost: {line}");
    }

    // Idempotent.
    let again = run_patch(dir.path());
    assert!(again.status.success());
    assert_eq!(std::fs::read_to_string(&file).unwrap(), patched);
}

#[test]
fn mmsq_patch_refuses_a_source_without_its_anchors() {
    let dir = tempfile::tempdir().unwrap();
    let cuda_dir = dir.path().join("src/ggml-cuda");
    std::fs::create_dir_all(&cuda_dir).unwrap();
    std::fs::write(cuda_dir.join("ggml-cuda.cu"), "// not ggml-cuda\n").unwrap();
    let out = run_patch(dir.path());
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("anchors"));
    assert_eq!(
        std::fs::read_to_string(cuda_dir.join("ggml-cuda.cu")).unwrap(),
        "// not ggml-cuda\n"
    );
    // A folder without the file is an error too, not a crash.
    let empty = tempfile::tempdir().unwrap();
    let out = run_patch(empty.path());
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
}
