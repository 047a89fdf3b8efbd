//! Constrained decoding (JSON Schema, JSON object, GBNF) and logit_bias on the real models:
//! the output follows the grammar (and does not without it), biases change the choice, bad
//! grammars are clear errors, and speculative constrained output is plain constrained output
//! (DFlash chains and trees, n-gram lookup) with the drafter still paying.

mod common;

use common::json_schema::validates;

use blockspec::decode::constrain::Grammar;
use blockspec::decode::generate::{GenerateOptions, Generation, StopReason};
use blockspec::decode::sampling::{Sampler, SamplingParams};
use blockspec::decode::spec::SpecStats;
use blockspec::session::load::{load, DraftConfig, LoadConfig, VerifyMode};
use blockspec::session::{DraftSource, LoadedModel};
use serde_json::{json, Value};

fn load_model(name: &str, draft: DraftConfig) -> Option<LoadedModel> {
    let path = common::model(name)?;
    ggml::set_log_verbosity(false);
    let cfg = LoadConfig {
        verify: VerifyMode::Exact,
        // Plain decoding on the same kernels as the verify: token for token comparable.
        batch_invariant: true,
        ..common::cpu_load_config(path, draft)
    };
    Some(load(&cfg).expect("load"))
}

/// A Qwen chat prompt with one user message.
fn chat(m: &LoadedModel, user: &str) -> Vec<u32> {
    let text = format!(
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
    );
    m.tokenizer.encode(&text, true, true).expect("encode")
}

fn run(
    m: &LoadedModel,
    prompt: &[u32],
    params: SamplingParams,
    grammar: Option<&Grammar>,
    n: usize,
) -> (Generation, Option<SpecStats>) {
    let constraint = grammar.map(|g| m.grammars().expect("compiler").compile(g).expect("compile"));
    let opts = GenerateOptions {
        max_tokens: Some(n),
        constraint,
        ..Default::default()
    };
    let mut session = m.new_session().expect("session");
    let mut sampler = Sampler::new(params);
    session
        .generate(&m.tokenizer, &mut sampler, prompt, &opts, false, |_| {})
        .expect("generate")
}

fn person_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": { "type": "string", "minLength": 1, "maxLength": 24 },
            "age": { "type": "integer", "minimum": 0, "maximum": 120 },
            "address": {
                "type": "object",
                "properties": {
                    "city": { "type": "string", "maxLength": 24 },
                    "country": { "enum": ["US", "UK", "FR", "DE", "other"] }
                },
                "required": ["city", "country"],
                "additionalProperties": false
            }
        },
        "required": ["name", "age", "address"],
        "additionalProperties": false
    })
}

fn schemas() -> Vec<(&'static str, Value)> {
    vec![
        ("Tell me about a fictional person.", person_schema()),
        (
            "What is your favourite colour, and why?",
            json!({
                "type": "object",
                "properties": {
                    "colour": { "enum": ["red", "green", "blue"] },
                    "sure": { "type": "boolean" }
                },
                "required": ["colour", "sure"],
                "additionalProperties": false
            }),
        ),
        (
            "Which programming languages should I learn?",
            json!({
                "type": "object",
                "properties": {
                    "languages": {
                        "type": "array",
                        "items": { "type": "string", "maxLength": 12 },
                        "minItems": 2,
                        "maxItems": 4
                    }
                },
                "required": ["languages"],
                "additionalProperties": false
            }),
        ),
    ]
}

#[test]
fn json_schemas_gbnf_and_logit_bias_on_05b() {
    let Some(m) = load_model(common::MODEL_05B, DraftConfig::None) else {
        return;
    };
    let greedy = SamplingParams::greedy();
    for (question, schema) in schemas() {
        let prompt = chat(&m, question);
        let g = Grammar::JsonSchema(schema.clone());
        let (out, _) = run(&m, &prompt, greedy.clone(), Some(&g), 120);
        eprintln!(
            "{question} -> {:?} ({:?}, {:.1} tok/s)",
            out.text, out.stop, out.timings.predicted_per_second
        );
        assert_eq!(
            out.stop,
            StopReason::Eos,
            "the grammar completes: {:?}",
            out.text
        );
        validates(&schema, &out.text).unwrap_or_else(|e| panic!("{question}: {e}"));
        // Without the constraint the model answers in prose: the check above can fail.
        let (free, _) = run(&m, &prompt, greedy.clone(), None, 40);
        eprintln!(
            "  unconstrained: {:.1} tok/s",
            free.timings.predicted_per_second
        );
        assert!(
            validates(&schema, &free.text).is_err(),
            "unconstrained output validates too: {:?}",
            free.text
        );
    }

    // Any JSON object.
    let prompt = chat(&m, "Say hello.");
    let (out, _) = run(&m, &prompt, greedy.clone(), Some(&Grammar::JsonObject), 80);
    let v: Value = serde_json::from_str(&out.text).expect("json_object output parses");
    assert!(v.is_object(), "{v}");

    // A GBNF grammar.
    let gbnf = r#"
root   ::= "Answer: " answer "\n" "Reasons:" reason{2,3}
answer ::= "yes" | "no"
reason ::= " " [a-z]{1,10} ","   # a short lowercase word
"#;
    let prompt = chat(&m, "Is Rust a good language?");
    let (out, _) = run(
        &m,
        &prompt,
        greedy.clone(),
        Some(&Grammar::Gbnf(gbnf.into())),
        60,
    );
    eprintln!("GBNF -> {:?}", out.text);
    assert_eq!(out.stop, StopReason::Eos);
    let rest = out.text.strip_prefix("Answer: ").expect("prefix");
    let (answer, reasons) = rest.split_once("\nReasons:").expect("reasons");
    assert!(answer == "yes" || answer == "no", "{answer:?}");
    let words: Vec<&str> = reasons.strip_suffix(',').expect(",").split(',').collect();
    assert!((2..=3).contains(&words.len()), "{words:?}");
    for w in words {
        let w = w.strip_prefix(' ').expect("space");
        assert!((1..=10).contains(&w.len()) && w.bytes().all(|c| c.is_ascii_lowercase()));
    }
    let (free, _) = run(&m, &prompt, greedy.clone(), None, 12);
    assert!(!free.text.starts_with("Answer: "), "{:?}", free.text);

    // A regex.
    let re = Grammar::Regex("[0-9]{3}-[0-9]{4}".into());
    let (out, _) = run(
        &m,
        &chat(&m, "Give me a phone number."),
        greedy.clone(),
        Some(&re),
        20,
    );
    let b = out.text.as_bytes();
    assert!(
        b.len() == 8
            && b[3] == b'-'
            && b.iter()
                .enumerate()
                .all(|(i, c)| i == 3 || c.is_ascii_digit()),
        "{:?}",
        out.text
    );

    // logit_bias: -100 (or -inf) on the first token's id removes it; +100 forces one.
    let prompt = chat(&m, "Write a haiku about the sea.");
    let (base, _) = run(&m, &prompt, greedy.clone(), None, 4);
    let first = base.tokens[0];
    for bias in [-100.0, f32::NEG_INFINITY] {
        let p = SamplingParams {
            logit_bias: vec![(first, bias)],
            ..SamplingParams::greedy()
        };
        let (out, _) = run(&m, &prompt, p, None, 4);
        assert_ne!(out.tokens[0], first, "bias {bias}");
        assert!(
            !out.tokens.contains(&first),
            "bias {bias}: {:?}",
            out.tokens
        );
    }
    let forced = m.tokenizer.encode("Banana", false, false).expect("encode")[0];
    let p = SamplingParams {
        logit_bias: vec![(forced, 100.0)],
        ..SamplingParams::greedy()
    };
    let (out, _) = run(&m, &prompt, p, None, 2);
    assert_eq!(out.tokens[0], forced);
    // At T > 0 a banned token is never drawn.
    let p = SamplingParams {
        temperature: 1.5,
        top_k: 0,
        top_p: 1.0,
        min_p: 0.0,
        seed: 3,
        logit_bias: vec![(first, f32::NEG_INFINITY)],
        ..Default::default()
    };
    let (out, _) = run(&m, &prompt, p, None, 8);
    assert!(!out.tokens.contains(&first));

    // Bad biases: clear errors, no panic.
    let bad = SamplingParams {
        logit_bias: vec![(first, f32::NAN)],
        ..SamplingParams::greedy()
    };
    assert!(bad.validate().unwrap_err().contains("logit_bias"));
    let bad = SamplingParams {
        logit_bias: vec![(first, f32::INFINITY)],
        ..SamplingParams::greedy()
    };
    assert!(bad.validate().is_err());
    let out_of_range = SamplingParams {
        logit_bias: vec![(10_000_000, 1.0)],
        ..SamplingParams::greedy()
    };
    let mut session = m.new_session().expect("session");
    let e = session
        .generate(
            &m.tokenizer,
            &mut Sampler::new(out_of_range),
            &prompt,
            &GenerateOptions::default(),
            false,
            |_| {},
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("token id 10000000 is out of range"), "{e}");
}

#[test]
fn seeded_sampling_stays_valid() {
    let Some(m) = load_model(common::MODEL_05B, DraftConfig::None) else {
        return;
    };
    let (question, schema) = schemas().swap_remove(0);
    let prompt = chat(&m, question);
    let g = Grammar::JsonSchema(schema.clone());
    let mut texts = Vec::new();
    for seed in [1, 2, 3] {
        let p = SamplingParams {
            temperature: 0.9,
            seed,
            ..Default::default()
        };
        let (out, _) = run(&m, &prompt, p, Some(&g), 120);
        eprintln!("seed {seed} -> {:?}", out.text);
        assert_eq!(out.stop, StopReason::Eos, "{:?}", out.text);
        validates(&schema, &out.text).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        texts.push(out.text);
    }
    assert!(
        texts[0] != texts[1] || texts[1] != texts[2],
        "seeds changed nothing"
    );
}

#[test]
fn bad_grammars_are_clear_errors_and_tool_calls_check() {
    let Some(m) = load_model(common::MODEL_05B, DraftConfig::None) else {
        return;
    };
    let c = m.grammars().expect("compiler");
    let cases = [
        (Grammar::Gbnf("root ::= foo\n".into()), "undefined rule"),
        (Grammar::Gbnf("item ::= \"a\"\n".into()), "no `root` rule"),
        (Grammar::JsonSchema(json!([1, 2])), "expected an object"),
        (
            Grammar::JsonSchema(json!({"type": "strin"})),
            "invalid JSON schema",
        ),
        (Grammar::Regex("(ab".into()), "invalid regex"),
        (Grammar::Lark("start: foo".into()), "invalid Lark grammar"),
    ];
    for (g, want) in cases {
        let e = format!("{:#}", c.compile(&g).expect_err("must fail"));
        assert!(e.contains(want), "{g:?}: {e}");
    }

    // A tool call constrained to its tools' schemas (tool_choice "required"), checked token by
    // token against texts (the grammar state does not move).
    let tools = vec![
        (
            "get_weather".to_string(),
            Some(json!({
                "type": "object",
                "properties": { "city": { "type": "string" } },
                "required": ["city"]
            })),
        ),
        ("get_time".to_string(), None),
    ];
    let g = Grammar::tool_call(&tools, "<tool_call>\n", "\n</tool_call>");
    let mut k = c.compile(&g).expect("tool call grammar");
    let eos = m.tokenizer.token_to_id("<|im_end|>").expect("im_end");
    let toks = |s: &str| {
        let mut t = m.tokenizer.encode(s, false, true).expect("encode");
        t.push(eos);
        t
    };
    for ok in [
        "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>",
        "<tool_call>\n{\"name\":\"get_time\",\"arguments\":{}}\n</tool_call>",
    ] {
        let t = toks(ok);
        assert_eq!(k.valid_prefix(&t), t.len(), "{ok}");
    }
    // What the grammar costs per token (a commit computes the next mask).
    let t = toks("<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>");
    let t0 = std::time::Instant::now();
    let mut walk = k.clone();
    for &x in &t[..t.len() - 1] {
        assert!(walk.allows(x));
        walk.commit(x);
    }
    assert!(walk.allows(eos) && walk.error().is_none());
    eprintln!(
        "grammar: {:.0} us per committed token (mask included), {} tokens",
        t0.elapsed().as_secs_f64() * 1e6 / (t.len() - 1) as f64,
        t.len() - 1
    );
    for bad in [
        "<tool_call>\n{\"name\": \"get_news\", \"arguments\": {}}\n</tool_call>",
        "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {}}\n</tool_call>",
        "{\"name\": \"get_time\", \"arguments\": {}}",
    ] {
        let t = toks(bad);
        assert!(k.valid_prefix(&t) < t.len(), "{bad}");
    }
}

/// Constrained speculative output is constrained plain output, on the 1.5B with the shipped
/// DFlash drafter (chains and a DDTree) and with n-gram lookup, and drafts are still accepted.
#[test]
fn constrained_speculation_is_lossless_15b() {
    let dflash =
        common::repo_file("training/drafters/qwen2.5-coder-1.5b-instruct-dflash-q8_0.gguf");
    let Some(mut m) = load_model(
        common::MODEL_15B,
        DraftConfig::DFlash {
            path: dflash,
            weight_type: None,
            window: 0,
            vocab: None,
        },
    ) else {
        return;
    };
    let schema = json!({
        "type": "object",
        "properties": {
            "function": { "type": "string", "maxLength": 40 },
            "args": { "type": "array", "items": { "type": "string", "maxLength": 16 }, "maxItems": 4 },
            "code": { "type": "string", "maxLength": 160 }
        },
        "required": ["function", "args", "code"],
        "additionalProperties": false
    });
    let g = Grammar::JsonSchema(schema.clone());
    let prompt = chat(
        &m,
        "Write a Python function that returns the sum of a list of numbers, as JSON with its name, arguments and code.",
    );
    let n = 64;
    let dflash_source = std::mem::replace(&mut m.draft, DraftSource::None);
    let (plain, _) = run(&m, &prompt, SamplingParams::greedy(), Some(&g), n);
    eprintln!("plain -> {:?}", plain.text);
    // The output is the schema's JSON.
    assert!(plain.text.starts_with('{'), "{:?}", plain.text);
    if plain.stop == StopReason::Eos {
        validates(&schema, &plain.text).expect("the output validates");
    }

    m.draft = dflash_source;
    let (chain, s) = run(&m, &prompt, SamplingParams::greedy(), Some(&g), n);
    let s = s.expect("spec stats");
    eprintln!(
        "dflash chain: {} of {} drafts accepted, tau {:.2}",
        s.accepted, s.drafted, s.tau
    );
    assert_eq!(chain.tokens, plain.tokens, "DFlash chain");
    assert!(s.accepted > 0, "the drafter pays nothing");

    m.spec_tree = 4;
    let (tree, s) = run(&m, &prompt, SamplingParams::greedy(), Some(&g), n);
    let s = s.expect("spec stats");
    eprintln!(
        "dflash tree 4: {} of {} drafts accepted, tau {:.2}",
        s.accepted, s.drafted, s.tau
    );
    assert_eq!(tree.tokens, plain.tokens, "DDTree");
    assert!(s.accepted > 0);
    m.spec_tree = 0;

    // T > 0, matching rule: seed for seed the plain constrained draws.
    let hot = SamplingParams {
        temperature: 0.7,
        seed: 11,
        ..Default::default()
    };
    let (spec_hot, _) = run(&m, &prompt, hot.clone(), Some(&g), n);
    let dflash_source = std::mem::replace(&mut m.draft, DraftSource::Ngram { n: 3 });
    m.draft_verify_len = 8;
    let (ngram, s) = run(&m, &prompt, SamplingParams::greedy(), Some(&g), n);
    let s = s.expect("spec stats");
    eprintln!("ngram: {} of {} drafts accepted", s.accepted, s.drafted);
    assert_eq!(ngram.tokens, plain.tokens, "n-gram");
    m.draft = DraftSource::None;
    let (plain_hot, _) = run(&m, &prompt, hot, Some(&g), n);
    assert_eq!(spec_hot.tokens, plain_hot.tokens, "T > 0");
    if plain_hot.stop == StopReason::Eos {
        validates(&schema, &plain_hot.text).expect("T > 0 output validates");
    }
    drop(dflash_source);
}

/// `blockspec run` with `--json-schema`, `--grammar` and `--logit-bias`: the output follows
/// them, and bad values are one clear line naming the flag.
#[test]
fn run_flags() {
    let Some(model) = common::model(common::MODEL_05B) else {
        return;
    };
    let model = model.to_string_lossy().into_owned();
    let schema = person_schema().to_string();
    let base = [
        "run", "-m", &model, "-t", "2", "-c", "512", "--temp", "0", "-n", "120", "--json",
    ];
    let args = |extra: &[&str]| -> Vec<String> {
        base.iter().chain(extra).map(|s| s.to_string()).collect()
    };
    let call = |extra: &[&str]| {
        let a = args(extra);
        common::blockspec(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let (code, out, err) = call(&["-p", "A fictional person:", "-j", &schema]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).expect("--json output");
    let text = v["text"].as_str().expect("text");
    validates(&person_schema(), text).unwrap_or_else(|e| panic!("{e}"));

    let (code, out, err) = call(&[
        "-p",
        "Is the sky blue?",
        "--grammar",
        r#"root ::= "yes" | "no""#,
    ]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).expect("--json output");
    let text = v["text"].as_str().expect("text");
    assert!(text == "yes" || text == "no", "{text:?}");
    let first = v["tokens"][0].as_u64().expect("token") as u32;
    let ban = format!("{first}-inf");
    let (code, out, err) = call(&[
        "-p",
        "Is the sky blue?",
        "--grammar",
        r#"root ::= "yes" | "no""#,
        "--logit-bias",
        &ban,
    ]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).expect("--json output");
    assert_ne!(v["tokens"][0].as_u64(), Some(first as u64), "{v}");

    for (extra, want) in [
        (vec!["--grammar", "root ::= nothing"], "--grammar"),
        (vec!["-j", "{not json"], "--json-schema"),
        (vec!["-j", r#"{"type": "strin"}"#], "--json-schema"),
        (vec!["--logit-bias", "15043"], "--logit-bias"),
        (vec!["--logit-bias", "99999999+1"], "--logit-bias"),
    ] {
        let mut e = extra.clone();
        e.extend(["-p", "x"]);
        let (code, _, err) = call(&e);
        assert_eq!(code, 2, "{extra:?}: {err}");
        assert!(
            err.contains(want) && !err.contains("panicked"),
            "{extra:?}: {err}"
        );
    }
}
