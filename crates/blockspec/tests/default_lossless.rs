//! With default flags (`--verify auto`: on a CPU, plain decoding's own kernels and verify
//! batches capped where they compute every row exactly like a one-token step), speculative
//! output equals plain output token for token, as users read "lossless": the real 1.5B with the
//! 0.5B as draft model, n-gram lookup and the shipped DFlash drafter, greedy, through the CLI a
//! user runs. `--block-size 16` asks for long verifies so that every step speculates (the cap
//! brings them down to what stays exact); the drafts must really be accepted.

mod common;

use std::process::Command;

fn run(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_blockspec"))
        .args(["run", "-t", "2", "--temp", "0", "--json"])
        .args(args)
        .output()
        .expect("run blockspec");
    assert!(
        out.status.success(),
        "blockspec run {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json output")
}

#[test]
fn speculation_with_default_flags_equals_plain_decoding() {
    let target = common::model("qwen2.5-coder-1.5b-instruct-q4_k_m.gguf").expect("the 1.5B");
    let small = common::model("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf").expect("the 0.5B");
    let drafter =
        common::repo_file("training/drafters/qwen2.5-coder-1.5b-instruct-dflash-q8_0.gguf");
    let (target, small, drafter) = (
        target.to_str().expect("path"),
        small.to_str().expect("path"),
        drafter.to_str().expect("path"),
    );
    let prompts = [
        "Write a Python function that checks whether a number is prime.",
        "def fibonacci(n):",
        "Explain what a hash map is in two sentences.",
    ];
    let drafters: [(&str, Vec<&str>); 3] = [
        ("draft model", vec!["-md", small]),
        ("n-gram", vec!["--spec", "ngram"]),
        ("DFlash", vec!["--draft", drafter]),
    ];
    let mut accepted = [0u64; 3];
    for p in prompts {
        let base = ["-m", target, "-n", "40", "-p", p];
        let plain = run(&base);
        let want = &plain["tokens"];
        assert!(want.as_array().is_some_and(|t| !t.is_empty()), "{plain}");
        for (i, (name, extra)) in drafters.iter().enumerate() {
            let mut args = base.to_vec();
            args.extend_from_slice(extra);
            args.extend_from_slice(&["--block-size", "16"]);
            let spec = run(&args);
            assert_eq!(
                &spec["tokens"], want,
                "{name}, prompt {p:?}: speculative output differs from plain"
            );
            let steps = spec["spec"]["spec_steps"].as_u64().expect("spec_steps");
            assert!(steps > 0, "{name}: no speculative step");
            accepted[i] += spec["spec"]["accepted"].as_u64().expect("accepted");
        }
    }
    for (i, (name, _)) in drafters.iter().enumerate() {
        assert!(accepted[i] > 0, "{name}: no draft accepted");
    }
}
