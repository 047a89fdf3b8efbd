//! The tokenizer against llama.cpp: the reference fixtures in `tests/fixtures/llama/`
//! (`tokenizer-<model>.json`: ids from llama.cpp's /tokenize with and without parse_special,
//! and its /detokenize; `generate-<model>.json`: prompt tokens and generated tokens), plus unit
//! tests on tiny synthetic GGUF vocabularies.
//!
//! Tests that need a real model (model dir: `$BLOCKSPEC_MODELS` or
//! `~/.cache/blockspec/models`) fail when it is missing and `BLOCKSPEC_REQUIRE_MODELS` is set, as
//! scripts/test.sh and CI set it; without that variable they print a note and check nothing.

mod common;

use blockspec::format::gguf::Gguf;
use blockspec::text::tokenizer::{StreamDecoder, Tokenizer};
use serde_json::Value as Json;
use std::path::{Path, PathBuf};
use std::time::Instant;

const MODELS: &[&str] = &[
    "qwen2.5-coder-0.5b-instruct-q4_k_m",
    "qwen2.5-coder-1.5b-instruct-q4_k_m",
];

/// The model's tokenizer and its committed fixture, or None when the model is missing and not
/// required (see `common::model`). A missing fixture always fails.
fn load(model: &str, fixture_kind: &str) -> Option<(Tokenizer, Json)> {
    let gguf = common::model(&format!("{model}.gguf"))?;
    let json = common::read_json(&format!("llama/{fixture_kind}-{model}.json"));
    let g = Gguf::open(&gguf).expect("open gguf");
    let t0 = Instant::now();
    let tok = Tokenizer::from_gguf(&g).expect("build tokenizer");
    let dt = t0.elapsed();
    println!(
        "{model}: tokenizer built in {:.1} ms ({} tokens)",
        dt.as_secs_f64() * 1e3,
        tok.n_vocab()
    );
    assert!(
        dt.as_secs_f64() < 10.0,
        "tokenizer construction took {dt:?}"
    );
    Some((tok, json))
}

fn ids(v: &Json) -> Vec<u32> {
    v.as_array()
        .expect("id array")
        .iter()
        .map(|x| u32::try_from(x.as_u64().expect("id")).expect("id fits u32"))
        .collect()
}

#[test]
fn tokenizer_matches_llama_cpp_fixtures() {
    for model in MODELS {
        let Some((tok, fx)) = load(model, "tokenizer") else {
            continue;
        };
        let cases = fx["cases"].as_array().expect("cases");
        let mut failures = Vec::new();
        let (mut n_ids, mut n_ok) = (0, 0);
        for c in cases {
            let text = c["text"].as_str().expect("text");
            let src = c["source"].as_str().unwrap_or("?");
            let mut ok = true;
            for (field, parse_special) in [("ids", true), ("ids_no_parse_special", false)] {
                let Some(want) = c.get(field) else { continue };
                let want = ids(want);
                let got = tok.encode(text, true, parse_special).expect("encode");
                n_ids += 1;
                if got != want {
                    ok = false;
                    failures.push(format!(
                        "{src} {text:?} (parse_special={parse_special}):\n    llama.cpp {want:?}\n    ours      {got:?}"
                    ));
                }
                let detok_field = if parse_special {
                    "detokenized"
                } else {
                    "detokenized_no_parse_special"
                };
                if let Some(want_text) = c.get(detok_field).and_then(Json::as_str) {
                    let got_text = tok.decode(&want, false);
                    if got_text != want_text {
                        ok = false;
                        failures.push(format!(
                            "{src} decode {want:?}:\n    llama.cpp {want_text:?}\n    ours      {got_text:?}"
                        ));
                    }
                }
            }
            // Round trip: the text comes back (all fixture texts are valid UTF-8).
            let round = tok.decode(&tok.encode(text, true, true).expect("encode"), false);
            if round != text {
                ok = false;
                failures.push(format!("{src} round trip: {text:?} -> {round:?}"));
            }
            if ok {
                n_ok += 1;
            }
        }
        println!(
            "{model}: {} fixture lines, {n_ok} fully matched ({n_ids} id lists compared, {} failures)",
            cases.len(),
            failures.len()
        );
        assert!(
            failures.is_empty(),
            "{model}: {} mismatches:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }
}

#[test]
fn generate_fixture_prompts_and_outputs_match() {
    for model in MODELS {
        let Some((tok, fx)) = load(model, "generate") else {
            continue;
        };
        let cases = fx["cases"].as_array().expect("cases");
        let mut failures = Vec::new();
        for c in cases {
            let name = c["name"].as_str().unwrap_or("?");
            let prompt = c
                .get("rendered")
                .or_else(|| c.get("prompt"))
                .and_then(Json::as_str)
                .expect("prompt");
            let want = ids(&c["prompt_tokens"]);
            let got = tok.encode(prompt, true, true).expect("encode");
            if got != want {
                failures.push(format!(
                    "{name} prompt:\n    llama.cpp {want:?}\n    ours      {got:?}"
                ));
            }
            // Generated tokens -> text (the EOG token's text is not part of llama.cpp's text).
            let mut gen = ids(&c["tokens"]);
            if c["stop_type"].as_str() == Some("eos") {
                let last = gen.pop().expect("eos token");
                if !tok.is_eog(last) {
                    failures.push(format!("{name}: stop token {last} is not EOG for us"));
                }
            }
            assert!(
                gen.iter().all(|&t| !tok.is_eog(t)),
                "{name}: EOG inside the generated text"
            );
            let want_text = c["text"].as_str().expect("text");
            let got_text = tok.decode(&gen, false);
            if got_text != want_text {
                failures.push(format!(
                    "{name} text:\n    llama.cpp {want_text:?}\n    ours      {got_text:?}"
                ));
            }
            // Streaming gives the same text.
            let mut sd = StreamDecoder::new();
            let mut streamed: String = gen.iter().map(|&t| sd.push(&tok, t)).collect();
            streamed.push_str(&sd.flush());
            if streamed != got_text {
                failures.push(format!(
                    "{name} streamed text differs:\n    {streamed:?}\n    {got_text:?}"
                ));
            }
        }
        println!(
            "{model}: {} generate cases, {} failures",
            cases.len(),
            failures.len()
        );
        assert!(failures.is_empty(), "{model}:\n{}", failures.join("\n"));
    }
}

#[test]
fn qwen_special_ids() {
    let model = MODELS[0];
    let Some(gguf) = common::model(&format!("{model}.gguf")) else {
        return;
    };
    let tok = Tokenizer::from_gguf(&Gguf::open(&gguf).expect("open")).expect("tokenizer");
    let im_end = tok.token_to_id("<|im_end|>").expect("<|im_end|>");
    let eot = tok.token_to_id("<|endoftext|>").expect("<|endoftext|>");
    assert_eq!(tok.eos(), Some(im_end));
    assert_eq!(tok.bos(), Some(eot));
    assert!(!tok.add_bos());
    // llama.cpp's EOG set for Qwen2.5: <|endoftext|>, <|im_end|>, <|fim_pad|>, <|repo_name|>,
    // <|file_sep|> and the normal-typed "</s>" (promoted by its text).
    let mut want: Vec<u32> = [
        "<|endoftext|>",
        "<|im_end|>",
        "<|fim_pad|>",
        "<|repo_name|>",
        "<|file_sep|>",
        "</s>",
    ]
    .iter()
    .map(|t| tok.token_to_id(t).expect("token"))
    .collect();
    want.sort_unstable();
    assert_eq!(tok.eog_ids().collect::<Vec<_>>(), want);
    assert!(!tok.is_eog(tok.token_to_id("<|im_start|>").expect("im_start")));
    assert_eq!(tok.token_bytes(im_end), b"<|im_end|>");
    assert_eq!(
        tok.token_bytes(tok.token_to_id("Ġworld").expect("Ġworld")),
        b" world"
    );
    assert_eq!(tok.decode(&[im_end], true), "");
    // A multi-byte char split over byte tokens streams out only when complete.
    let ids = tok.encode("𐍈", false, false).expect("encode");
    assert!(ids.len() > 1, "hwair is several byte tokens: {ids:?}");
    let mut sd = StreamDecoder::new();
    let parts: Vec<String> = ids.iter().map(|&t| sd.push(&tok, t)).collect();
    assert!(
        parts[..parts.len() - 1].iter().all(String::is_empty),
        "{parts:?}"
    );
    assert_eq!(parts.last().map(String::as_str), Some("𐍈"));
}

// ---- tiny synthetic GGUF vocabularies ----

enum Kv<'a> {
    Str(&'a str),
    StrArr(Vec<String>),
    I32Arr(Vec<i32>),
    U32(u32),
    Bool(bool),
}

fn write_gguf(path: &Path, kvs: &[(&str, Kv)]) {
    fn s(out: &mut Vec<u8>, v: &str) {
        out.extend_from_slice(&(v.len() as u64).to_le_bytes());
        out.extend_from_slice(v.as_bytes());
    }
    let mut out = Vec::new();
    out.extend_from_slice(b"GGUF");
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes());
    out.extend_from_slice(&(kvs.len() as u64).to_le_bytes());
    for (k, v) in kvs {
        s(&mut out, k);
        match v {
            Kv::Str(x) => {
                out.extend_from_slice(&8u32.to_le_bytes());
                s(&mut out, x);
            }
            Kv::StrArr(xs) => {
                out.extend_from_slice(&9u32.to_le_bytes());
                out.extend_from_slice(&8u32.to_le_bytes());
                out.extend_from_slice(&(xs.len() as u64).to_le_bytes());
                for x in xs {
                    s(&mut out, x);
                }
            }
            Kv::I32Arr(xs) => {
                out.extend_from_slice(&9u32.to_le_bytes());
                out.extend_from_slice(&5u32.to_le_bytes());
                out.extend_from_slice(&(xs.len() as u64).to_le_bytes());
                for x in xs {
                    out.extend_from_slice(&x.to_le_bytes());
                }
            }
            Kv::U32(x) => {
                out.extend_from_slice(&4u32.to_le_bytes());
                out.extend_from_slice(&x.to_le_bytes());
            }
            Kv::Bool(x) => {
                out.extend_from_slice(&7u32.to_le_bytes());
                out.push(u8::from(*x));
            }
        }
    }
    std::fs::write(path, out).expect("write gguf");
}

/// GPT-2 byte-level char of a byte.
fn byte_char(b: u8) -> char {
    let b = b as u32;
    let printable =
        (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b);
    if printable {
        return char::from_u32(b).expect("char");
    }
    let n = (0..b)
        .filter(|&x| {
            !((0x21..=0x7e).contains(&x)
                || (0xa1..=0xac).contains(&x)
                || (0xae..=0xff).contains(&x))
        })
        .count() as u32;
    char::from_u32(256 + n).expect("char")
}

/// A tiny byte-level vocabulary: 256 byte tokens, merges for "Ġhi" and "hi", and three special
/// tokens: <|im_start|>, <|im_end|> (control) and <tool_call> (user-defined).
fn tiny_vocab(dir: &Path, model: &str, pre: &str, extra: Vec<(&str, Kv)>) -> PathBuf {
    let mut tokens: Vec<String> = (0..=255u8).map(|b| byte_char(b).to_string()).collect();
    let mut types = vec![1i32; 256];
    for (t, ty) in [
        ("hi", 1),
        ("Ġh", 1),
        ("Ġhi", 1),
        ("<|im_start|>", 3),
        ("<|im_end|>", 3),
        ("<tool_call>", 4),
    ] {
        tokens.push(t.to_string());
        types.push(ty);
    }
    let merges = vec!["Ġ h".to_string(), "Ġh i".to_string(), "h i".to_string()];
    let path = dir.join(format!("tiny-{model}-{pre}.gguf"));
    let mut kvs = vec![
        ("general.architecture", Kv::Str("qwen2")),
        ("tokenizer.ggml.model", Kv::Str(model)),
        ("tokenizer.ggml.pre", Kv::Str(pre)),
        ("tokenizer.ggml.tokens", Kv::StrArr(tokens)),
        ("tokenizer.ggml.token_type", Kv::I32Arr(types)),
        ("tokenizer.ggml.merges", Kv::StrArr(merges)),
        ("tokenizer.ggml.eos_token_id", Kv::U32(257 + 3)),
    ];
    kvs.extend(extra);
    write_gguf(&path, &kvs);
    path
}

#[test]
fn unknown_tokenizer_model_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (model, needle) in [
        ("llama", "not supported yet"),
        ("bert", "not supported yet"),
        ("nonsense", "unknown"),
    ] {
        let p = tiny_vocab(dir.path(), model, "qwen2", vec![]);
        let err = Tokenizer::from_gguf(&Gguf::open(&p).expect("open")).expect_err("must fail");
        let msg = format!("{err:#}");
        assert!(
            msg.contains(needle) && msg.contains(model),
            "{model}: {msg}"
        );
    }
    let p = tiny_vocab(dir.path(), "gpt2", "no-such-pre", vec![]);
    let msg = format!(
        "{:#}",
        Tokenizer::from_gguf(&Gguf::open(&p).expect("open")).expect_err("must fail")
    );
    assert!(
        msg.contains("no-such-pre") && msg.contains("not supported"),
        "{msg}"
    );
}

#[test]
fn special_tokens_parsed_or_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = tiny_vocab(dir.path(), "gpt2", "qwen2", vec![]);
    let tok = Tokenizer::from_gguf(&Gguf::open(&p).expect("open")).expect("tokenizer");
    let (start, end, call) = (256 + 3, 256 + 4, 256 + 5);
    let hi = 256;
    let sp_hi = 258;
    assert_eq!(tok.token_to_id("<|im_start|>"), Some(start));
    // parse_special: control and user-defined tokens are matched
    assert_eq!(
        tok.encode("<|im_start|>hi hi<tool_call><|im_end|>", false, true)
            .unwrap(),
        [start, hi, sp_hi, call, end]
    );
    // without: control tokens are text, user-defined ones still match (as in llama.cpp)
    let plain = tok
        .encode("<|im_start|>hi<tool_call>", false, false)
        .unwrap();
    let want: Vec<u32> = "<|im_start|>"
        .bytes()
        .map(|b| b as u32)
        .chain([hi, call])
        .collect();
    assert_eq!(plain, want);
    assert_eq!(tok.decode(&plain, false), "<|im_start|>hi<tool_call>");
    // control tokens render as their text unless skipped
    assert_eq!(
        tok.decode(&[start, hi, end], false),
        "<|im_start|>hi<|im_end|>"
    );
    assert_eq!(tok.decode(&[start, hi, end], true), "hi");
    // EOG: eos and <|im_end|>; no BOS added for qwen2
    assert!(tok.is_eog(end));
    assert!(!tok.is_eog(start));
    assert_eq!(tok.encode("hi", true, true).unwrap(), [hi]);
}

#[test]
fn add_bos_follows_metadata_and_pre_defaults() {
    let dir = tempfile::tempdir().expect("tempdir");
    // llama3-family pre-tokenizers add BOS by default ...
    let p = tiny_vocab(
        dir.path(),
        "gpt2",
        "llama-bpe",
        vec![("tokenizer.ggml.bos_token_id", Kv::U32(259))],
    );
    let tok = Tokenizer::from_gguf(&Gguf::open(&p).expect("open")).expect("tokenizer");
    assert_eq!(tok.encode("hi", true, true).unwrap(), [259, 256]);
    assert_eq!(tok.encode("hi", false, true).unwrap(), [256]);
    // ... unless the metadata says otherwise
    let p = tiny_vocab(
        dir.path(),
        "gpt2",
        "qwen2",
        vec![
            ("tokenizer.ggml.bos_token_id", Kv::U32(259)),
            ("tokenizer.ggml.add_bos_token", Kv::Bool(true)),
        ],
    );
    let tok = Tokenizer::from_gguf(&Gguf::open(&p).expect("open")).expect("tokenizer");
    assert_eq!(tok.encode("hi", true, true).unwrap(), [259, 256]);
    assert_eq!(tok.decode(&[259, 256], true), "hi");
}

/// `cargo test --release --test tokenizer_llama -- --ignored build_time --nocapture`
#[test]
#[ignore]
fn build_time() {
    let Some(gguf) = common::model(&format!("{}.gguf", MODELS[0])) else {
        return;
    };
    let g = Gguf::open(&gguf).expect("open");
    let mut times = Vec::new();
    for _ in 0..7 {
        let t0 = Instant::now();
        let tok = Tokenizer::from_gguf(&g).expect("tokenizer");
        times.push(t0.elapsed().as_secs_f64() * 1e3);
        drop(tok);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "tokenizer build: min {:.1} ms, median {:.1} ms",
        times[0],
        times[times.len() / 2]
    );
    let tok = Tokenizer::from_gguf(&g).expect("tokenizer");
    let j = common::read_json(&format!("llama/tokenizer-{}.json", MODELS[0]));
    let mut text = String::new();
    for c in j["cases"].as_array().expect("cases") {
        text.push_str(c["text"].as_str().unwrap_or(""));
        text.push('\n');
    }
    let text = text.repeat((1 << 20) / text.len().max(1) + 1);
    let t0 = Instant::now();
    let n = tok.encode(&text, false, true).expect("encode").len();
    let dt = t0.elapsed().as_secs_f64();
    println!(
        "encode: {:.2} MB in {:.3} s ({:.1} MB/s, {n} tokens)",
        text.len() as f64 / 1e6,
        dt,
        text.len() as f64 / 1e6 / dt
    );
    let t0 = Instant::now();
    let ct = blockspec::text::tokenizer::ChatTokens::from_gguf(&g).expect("chat tokens");
    println!(
        "chat tokens: {:.1} ms {ct:?}",
        t0.elapsed().as_secs_f64() * 1e3
    );
}

/// Compare with a file of llama.cpp tokenizations (`[{text, add_special, parse_special, ids,
/// detok}]`, as produced with llama.cpp's common_tokenize / common_detokenize) named by
/// `$BLOCKSPEC_TOKENIZER_REF` (model: `$BLOCKSPEC_TOKENIZER_REF_MODEL`, default the 0.5B). No such
/// file is committed (the committed fixtures above are checked by the other tests), so it runs
/// only when asked for:
/// `BLOCKSPEC_TOKENIZER_REF=refs.json cargo test --release --test tokenizer_llama -- --ignored reference_tokenizations_from_env`
#[test]
#[ignore = "needs a reference file named by $BLOCKSPEC_TOKENIZER_REF; run with --ignored"]
fn reference_tokenizations_from_env() {
    let p = std::env::var_os("BLOCKSPEC_TOKENIZER_REF")
        .expect("set BLOCKSPEC_TOKENIZER_REF to a file of llama.cpp tokenizations");
    let model =
        std::env::var("BLOCKSPEC_TOKENIZER_REF_MODEL").unwrap_or_else(|_| MODELS[0].to_string());
    let gguf = common::models_dir().join(format!("{model}.gguf"));
    let tok = Tokenizer::from_gguf(&Gguf::open(&gguf).expect("open")).expect("tokenizer");
    let cases: Json =
        serde_json::from_str(&std::fs::read_to_string(p).expect("read")).expect("json");
    let mut failures = Vec::new();
    let cases = cases.as_array().expect("cases");
    for c in cases {
        let text = c["text"].as_str().expect("text");
        let add = c["add_special"].as_bool().unwrap_or(true);
        let parse = c["parse_special"].as_bool().unwrap_or(true);
        let want = ids(&c["ids"]);
        let got = tok.encode(text, add, parse).expect("encode");
        if got != want {
            failures.push(format!(
                "{text:?} parse_special={parse}:\n    llama.cpp {want:?}\n    ours      {got:?}"
            ));
            continue;
        }
        if let Some(d) = c["detok"].as_str() {
            let ours = tok.decode(&want, false);
            // llama.cpp's output went through JSON with invalid UTF-8 replaced
            if ours != d && !d.contains('\u{fffd}') {
                failures.push(format!(
                    "decode {want:?}:\n    llama.cpp {d:?}\n    ours      {ours:?}"
                ));
            }
        }
    }
    println!(
        "{} reference tokenizations, {} failures",
        cases.len(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{}",
        failures
            .iter()
            .take(30)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Other pre-tokenizers against llama.cpp: the Qwen2.5 vocabulary relabelled with each
/// `tokenizer.ggml.pre` (a metadata-only GGUF), tokenized by llama.cpp's `common_tokenize`
/// (vendored llama.cpp, vocab-only load) with parse_special true and false, and detokenized by
/// `common_detokenize(special = true)` (which applies the clean-up passes where llama.cpp does).
/// Texts: random mixes of scripts, whitespace, contractions and special tokens, and code points
/// that Unicode 16 assigned but llama.cpp's 15.1 tables do not know.
const PRE_REFERENCE: &str = r####"{"texts":["\u0000\u0017\u0007  |\u2009e\u0301\u0e14\f\u2049\u2055\u2033\u2003\u201c","\ud800\udc40\ud800\udc62\ud800\udc72\f\u0976\u0977\u0977\r\u2460\u1131\u1128\u1120\u114e\u11d2\u031e\u0367\u034c\u035a","<think><|im_start|>[\ufff5\ufff6\ufff7\ufff8]\u03ad\u0383\u03dc\u03d0\u03a9\u03ba'T","\u2028\u0090\u008a\u008c\u0094\u008b\u0081<think>\u0309\u032e\u0341\u0320\u1104\u11b7\u11d3\u1182<|im_start|>\u01c5\n\n\u2024\u202f\ud882\udd92\ud883\udf8e","\u2693\udb80\udc59\udb80\udc7f\udb80\udcb8\udb80\udc26\udb80\udc35're;Fa=?    \udb40\udc47\udb40\udc02\udb40\udc6c<|repo_name|>world<|endoftext|>","\u017f\u0226\u020c\ud800\udc37\ud800\udc3a\ud800\udc02\ud800\udc31\ud800\udc62","123\ufe08\ufe03\ufe01\ufe05<|endoftext|>\t","<|repo_name|>'TI;'x","\u5798\u9eaa\u5dfc\u5b94\u86e4're","\u00a0\r</s>","<tool_call>4567 \udb80\udc78\udb80\udc9d\udb80\udc9a\udb80\udc5b\u2009\u224e\u23dc\u23b7\u2378\u22f2\u30f3\u306d\u30fd\u000b\u0663\u000b\u06ff\u06d7\u063e\u063f\u06e2\u0634","\ufe0e\ufe03\ufe06\ufe08\ufe07\r\u200b","\ud835\udd3e\ud835\udc45\u2619\u2673\u2515\u25ef <|im_end|><|repo_name|>\u2112\u2116\u2009\u2028\u2009\uffc2\uff5d\uff45\uff62\uff8e\u3002\u3028\u3004","\n\r\n\uff03\uffa2\uff9a\uff2f\u022f}","Hello , world ! It ' s fine , isn 't it ? I 'm sure they 're ok .","a\u1b4eb \u1b4e\u1b4e1\u1b4e'\u1b4e x\u1b7f\t\u1b4f\n","Garay \ud803\udd40\ud803\udd41 digits, Todhri \ud801\uddc0x, 12345678 3.14159","    def f(x):\n\treturn x**2  # comment\r\n\n\n  \u00a0end  "],"pre":{"llama-bpe":{"ids":[[188,211,195,220,760,378,231,68,53839,37033,200,145298,147832,21580,378,225,2073],[123934,223,222,123934,223,95,123934,223,110,200,12619,114,12619,115,12619,115,201,48312,254,124068,109,124068,101,124068,254,124052,236,150479,240,136,252,137,100,137,234,137,248],[13708,766,29,151644,58,5564,113,5564,114,5564,115,5564,116,60,79431,138,225,148901,149492,144572,67337,17323],[378,101,126,238,126,232,126,234,126,242,126,233,126,223,27,26865,29,136,231,136,106,137,223,136,254,148579,147831,150479,241,124137,224,151644,131,227,271,144043,378,107,172,108,99,240,172,108,122,236],[146401,175,108,223,247,175,108,223,123,175,108,224,116,175,108,222,99,175,108,222,113,6,265,26,47234,19884,262,220,175,15675,229,175,63219,224,175,15675,105,151663,14615,151643],[144815,132,99,132,234,123934,222,115,123934,222,118,123934,222,224,123934,222,109,123934,223,95],[16,17,18,29237,230,29237,225,29237,223,29237,227,151643,197],[151663,17323,40,35994,87],[99189,246,99203,103,17156,120,8508,242,119055,2299],[4102,201,128247],[151657,19,20,21,22,220,175,108,223,116,175,108,224,251,175,108,224,248,175,108,223,249,378,231,58994,236,147654,158,25452,124372,116,150663,15698,124381,144611,199,149,96,199,151,123,151,245,150385,149512,151,95,32790],[29237,236,29237,225,29237,228,29237,230,29237,229,201,15692],[124026,122,146439,149433,16825,111,146021,144427,220,151645,151663,149242,144287,378,231,378,101,378,231,151245,145409,144115,140818,144627,1773,1277,101,1277,226],[198,319,144220,68405,95,144546,136540,148950,92],[9707,1154,1879,753,1084,364,274,6915,1154,4436,364,83,432,937,358,364,76,2704,807,364,265,5394,659],[64,128230,236,65,86089,255,236,128230,236,16,128230,236,6,128230,236,856,128230,123,197,128230,237,198],[43930,352,220,123934,113,222,123934,113,223,18509,11,58583,71,461,220,123934,245,222,87,11,220,16,17,18,19,20,21,22,23,220,18,13,16,19,16,20,24],[262,707,282,2075,982,853,856,334,17,220,671,3980,201,1406,256,4102,408,256]],"ids_no_parse_special":[[188,211,195,220,760,378,231,68,53839,37033,200,145298,147832,21580,378,225,2073],[123934,223,222,123934,223,95,123934,223,110,200,12619,114,12619,115,12619,115,201,48312,254,124068,109,124068,101,124068,254,124052,236,150479,240,136,252,137,100,137,234,137,248],[13708,766,1784,91,318,4906,91,30768,5564,113,5564,114,5564,115,5564,116,60,79431,138,225,148901,149492,144572,67337,17323],[378,101,126,238,126,232,126,234,126,242,126,233,126,223,27,26865,29,136,231,136,106,137,223,136,254,148579,147831,150479,241,124137,224,27,91,318,4906,91,29,131,227,271,144043,378,107,172,108,99,240,172,108,122,236],[146401,175,108,223,247,175,108,223,123,175,108,224,116,175,108,222,99,175,108,222,113,6,265,26,47234,19884,262,220,175,15675,229,175,63219,224,175,15675,105,27,91,23476,1269,91,29,14615,27,91,8691,723,427,91,29],[144815,132,99,132,234,123934,222,115,123934,222,118,123934,222,224,123934,222,109,123934,223,95],[16,17,18,29237,230,29237,225,29237,223,29237,227,27,91,8691,723,427,91,29,197],[27,91,23476,1269,91,5592,26614,35994,87],[99189,246,99203,103,17156,120,8508,242,119055,2299],[4102,201,522,82,29],[151657,19,20,21,22,220,175,108,223,116,175,108,224,251,175,108,224,248,175,108,223,249,378,231,58994,236,147654,158,25452,124372,116,150663,15698,124381,144611,199,149,96,199,151,123,151,245,150385,149512,151,95,32790],[29237,236,29237,225,29237,228,29237,230,29237,229,201,15692],[124026,122,146439,149433,16825,111,146021,144427,82639,318,6213,91,1784,91,23476,1269,91,29,149242,144287,378,231,378,101,378,231,151245,145409,144115,140818,144627,1773,1277,101,1277,226],[198,319,144220,68405,95,144546,136540,148950,92],[9707,1154,1879,753,1084,364,274,6915,1154,4436,364,83,432,937,358,364,76,2704,807,364,265,5394,659],[64,128230,236,65,86089,255,236,128230,236,16,128230,236,6,128230,236,856,128230,123,197,128230,237,198],[43930,352,220,123934,113,222,123934,113,223,18509,11,58583,71,461,220,123934,245,222,87,11,220,16,17,18,19,20,21,22,23,220,18,13,16,19,16,20,24],[262,707,282,2075,982,853,856,334,17,220,671,3980,201,1406,256,4102,408,256]],"detok":["\u0000\u0017\u0007  |\u2009e\u0301\u0e14\f\u2049\u2055\u2033\u2003\u201c","\ud800\udc40\ud800\udc62\ud800\udc72\f\u0976\u0977\u0977\r\u2460\u1131\u1128\u1120\u114e\u11d2\u031e\u0367\u034c\u035a","<think><|im_start|>[\ufff5\ufff6\ufff7\ufff8]\u03ad\u0383\u03dc\u03d0\u03a9\u03ba'T","\u2028\u0090\u008a\u008c\u0094\u008b\u0081<think>\u0309\u032e\u0341\u0320\u1104\u11b7\u11d3\u1182<|im_start|>\u01c5\n\n\u2024\u202f\ud882\udd92\ud883\udf8e","\u2693\udb80\udc59\udb80\udc7f\udb80\udcb8\udb80\udc26\udb80\udc35're;Fa=?    \udb40\udc47\udb40\udc02\udb40\udc6c<|repo_name|>world<|endoftext|>","\u017f\u0226\u020c\ud800\udc37\ud800\udc3a\ud800\udc02\ud800\udc31\ud800\udc62","123\ufe08\ufe03\ufe01\ufe05<|endoftext|>\t","<|repo_name|>'TI;'x","\u5798\u9eaa\u5dfc\u5b94\u86e4're","\u00a0\r</s>","<tool_call>4567 \udb80\udc78\udb80\udc9d\udb80\udc9a\udb80\udc5b\u2009\u224e\u23dc\u23b7\u2378\u22f2\u30f3\u306d\u30fd\u000b\u0663\u000b\u06ff\u06d7\u063e\u063f\u06e2\u0634","\ufe0e\ufe03\ufe06\ufe08\ufe07\r\u200b","\ud835\udd3e\ud835\udc45\u2619\u2673\u2515\u25ef <|im_end|><|repo_name|>\u2112\u2116\u2009\u2028\u2009\uffc2\uff5d\uff45\uff62\uff8e\u3002\u3028\u3004","\n\r\n\uff03\uffa2\uff9a\uff2f\u022f}","Hello, world! It's fine, isn 't it? I'm sure they're ok.","a\u1b4eb \u1b4e\u1b4e1\u1b4e'\u1b4e x\u1b7f\t\u1b4f\n","Garay \ud803\udd40\ud803\udd41 digits, Todhri \ud801\uddc0x, 12345678 3.14159","    def f(x):\n\treturn x**2  # comment\r\n\n\n  \u00a0end  "]},"gpt-2":{"ids":[[188,211,195,220,760,378,231,68,53839,37033,200,145298,147832,21580,378,225,2073],[123934,223,222,123934,223,95,123934,223,110,200,12619,114,12619,115,12619,115,201,48312,254,124068,109,124068,101,124068,254,124052,236,150479,240,136,252,137,100,137,234,137,248],[27,26865,29,151644,58,5564,113,5564,114,5564,115,5564,116,60,79431,138,225,148901,149492,144572,67337,6,51],[378,101,126,238,126,232,126,234,126,242,126,233,126,223,27,26865,29,136,231,136,106,137,223,136,254,148579,147831,150479,241,124137,224,151644,131,227,198,198,144043,378,107,172,108,99,240,172,108,122,236],[146401,175,108,223,247,175,108,223,123,175,108,224,116,175,108,222,99,175,108,222,113,6,265,26,47234,19884,262,220,175,15675,229,175,63219,224,175,15675,105,151663,14615,151643],[144815,132,99,132,234,123934,222,115,123934,222,118,123934,222,224,123934,222,109,123934,223,95],[16,17,18,29237,230,29237,225,29237,223,29237,227,151643,197],[151663,6,26614,35994,87],[99189,246,99203,103,17156,120,8508,242,119055,2299],[4102,201,128247],[151657,19,20,21,22,220,175,108,223,116,175,108,224,251,175,108,224,248,175,108,223,249,378,231,58994,236,147654,158,25452,124372,116,150663,15698,124381,144611,199,149,96,199,151,123,151,245,150385,149512,151,95,32790],[29237,236,29237,225,29237,228,29237,230,29237,229,201,15692],[124026,122,146439,149433,16825,111,146021,144427,220,151645,151663,149242,144287,378,231,378,101,378,231,151245,145409,144115,140818,144627,1773,1277,101,1277,226],[198,201,198,144220,68405,95,144546,136540,148950,92],[9707,1154,1879,753,1084,364,274,6915,1154,4436,364,83,432,937,358,364,76,2704,807,364,265,5394,659],[64,128230,236,65,86089,255,236,128230,236,16,128230,236,6,128230,236,856,128230,123,197,128230,237,198],[43930,352,220,123934,113,222,123934,113,223,18509,11,58583,71,461,220,123934,245,222,87,11,220,16,17,18,19,20,21,22,23,220,18,13,16,19,16,20,24],[262,707,282,7,87,1648,198,197,689,856,334,17,220,671,3980,201,1406,256,4102,408,256]],"ids_no_parse_special":[[188,211,195,220,760,378,231,68,53839,37033,200,145298,147832,21580,378,225,2073],[123934,223,222,123934,223,95,123934,223,110,200,12619,114,12619,115,12619,115,201,48312,254,124068,109,124068,101,124068,254,124052,236,150479,240,136,252,137,100,137,234,137,248],[27,26865,1784,91,318,62,2468,91,30768,5564,113,5564,114,5564,115,5564,116,60,79431,138,225,148901,149492,144572,67337,6,51],[378,101,126,238,126,232,126,234,126,242,126,233,126,223,27,26865,29,136,231,136,106,137,223,136,254,148579,147831,150479,241,124137,224,27,91,318,62,2468,91,29,131,227,198,198,144043,378,107,172,108,99,240,172,108,122,236],[146401,175,108,223,247,175,108,223,123,175,108,224,116,175,108,222,99,175,108,222,113,6,265,26,47234,19884,262,220,175,15675,229,175,63219,224,175,15675,105,27,91,23476,62,606,91,29,14615,27,91,8691,723,427,91,29],[144815,132,99,132,234,123934,222,115,123934,222,118,123934,222,224,123934,222,109,123934,223,95],[16,17,18,29237,230,29237,225,29237,223,29237,227,27,91,8691,723,427,91,29,197],[27,91,23476,62,606,91,5592,26614,35994,87],[99189,246,99203,103,17156,120,8508,242,119055,2299],[4102,201,522,82,29],[151657,19,20,21,22,220,175,108,223,116,175,108,224,251,175,108,224,248,175,108,223,249,378,231,58994,236,147654,158,25452,124372,116,150663,15698,124381,144611,199,149,96,199,151,123,151,245,150385,149512,151,95,32790],[29237,236,29237,225,29237,228,29237,230,29237,229,201,15692],[124026,122,146439,149433,16825,111,146021,144427,82639,318,62,408,91,1784,91,23476,62,606,91,29,149242,144287,378,231,378,101,378,231,151245,145409,144115,140818,144627,1773,1277,101,1277,226],[198,201,198,144220,68405,95,144546,136540,148950,92],[9707,1154,1879,753,1084,364,274,6915,1154,4436,364,83,432,937,358,364,76,2704,807,364,265,5394,659],[64,128230,236,65,86089,255,236,128230,236,16,128230,236,6,128230,236,856,128230,123,197,128230,237,198],[43930,352,220,123934,113,222,123934,113,223,18509,11,58583,71,461,220,123934,245,222,87,11,220,16,17,18,19,20,21,22,23,220,18,13,16,19,16,20,24],[262,707,282,7,87,1648,198,197,689,856,334,17,220,671,3980,201,1406,256,4102,408,256]],"detok":["\u0000\u0017\u0007  |\u2009e\u0301\u0e14\f\u2049\u2055\u2033\u2003\u201c","\ud800\udc40\ud800\udc62\ud800\udc72\f\u0976\u0977\u0977\r\u2460\u1131\u1128\u1120\u114e\u11d2\u031e\u0367\u034c\u035a","<think><|im_start|>[\ufff5\ufff6\ufff7\ufff8]\u03ad\u0383\u03dc\u03d0\u03a9\u03ba'T","\u2028\u0090\u008a\u008c\u0094\u008b\u0081<think>\u0309\u032e\u0341\u0320\u1104\u11b7\u11d3\u1182<|im_start|>\u01c5\n\n\u2024\u202f\ud882\udd92\ud883\udf8e","\u2693\udb80\udc59\udb80\udc7f\udb80\udcb8\udb80\udc26\udb80\udc35're;Fa=?    \udb40\udc47\udb40\udc02\udb40\udc6c<|repo_name|>world<|endoftext|>","\u017f\u0226\u020c\ud800\udc37\ud800\udc3a\ud800\udc02\ud800\udc31\ud800\udc62","123\ufe08\ufe03\ufe01\ufe05<|endoftext|>\t","<|repo_name|>'TI;'x","\u5798\u9eaa\u5dfc\u5b94\u86e4're","\u00a0\r</s>","<tool_call>4567 \udb80\udc78\udb80\udc9d\udb80\udc9a\udb80\udc5b\u2009\u224e\u23dc\u23b7\u2378\u22f2\u30f3\u306d\u30fd\u000b\u0663\u000b\u06ff\u06d7\u063e\u063f\u06e2\u0634","\ufe0e\ufe03\ufe06\ufe08\ufe07\r\u200b","\ud835\udd3e\ud835\udc45\u2619\u2673\u2515\u25ef <|im_end|><|repo_name|>\u2112\u2116\u2009\u2028\u2009\uffc2\uff5d\uff45\uff62\uff8e\u3002\u3028\u3004","\n\r\n\uff03\uffa2\uff9a\uff2f\u022f}","Hello, world! It's fine, isn 't it? I'm sure they're ok.","a\u1b4eb \u1b4e\u1b4e1\u1b4e'\u1b4e x\u1b7f\t\u1b4f\n","Garay \ud803\udd40\ud803\udd41 digits, Todhri \ud801\uddc0x, 12345678 3.14159","    def f(x):\n\treturn x**2  # comment\r\n\n\n  \u00a0end  "]},"default":{"ids":[[188,211,195,256,91,378,231,68,53839,37033,200,145298,147832,21580,378,225,2073],[123934,223,222,123934,223,95,123934,223,110,200,12619,114,12619,115,12619,115,201,48312,254,124068,109,124068,101,124068,254,124052,236,150479,240,136,252,137,100,137,234,137,248],[27,26865,29,151644,58,5564,113,5564,114,5564,115,5564,116,60,79431,138,225,148901,149492,144572,67337,6,51],[378,101,126,238,126,232,126,234,126,242,126,233,126,223,27,26865,29,136,231,136,106,137,223,136,254,148579,147831,150479,241,124137,224,151644,131,227,271,144043,378,107,172,108,99,240,172,108,122,236],[146401,175,108,223,247,175,108,223,123,175,108,224,116,175,108,222,99,175,108,222,113,6,265,26,47234,19884,262,220,175,15675,229,175,63219,224,175,15675,105,151663,14615,151643],[144815,132,99,132,234,123934,222,115,123934,222,118,123934,222,224,123934,222,109,123934,223,95],[16,17,18,29237,230,29237,225,29237,223,29237,227,151643,197],[151663,6,26614,35994,87],[99189,246,99203,103,17156,120,8508,242,119055,6,265],[4102,201,128247],[151657,19,20,21,22,220,175,108,223,116,175,108,224,251,175,108,224,248,175,108,223,249,378,231,58994,236,147654,158,25452,124372,116,150663,15698,124381,144611,199,149,96,199,151,123,151,245,150385,149512,151,95,32790],[29237,236,29237,225,29237,228,29237,230,29237,229,201,15692],[124026,122,146439,149433,16825,111,146021,144427,220,151645,151663,149242,144287,378,231,378,101,378,231,151245,145409,144115,140818,144627,1773,1277,101,1277,226],[198,319,144220,68405,95,144546,136540,148950,92],[9707,220,11,1879,220,0,1084,220,6,274,6915,220,11,4436,220,6,83,432,220,30,358,220,6,76,2704,807,220,6,265,5394,220,13],[64,128230,236,65,86089,255,236,128230,236,16,128230,236,6,128230,236,856,128230,123,197,128230,237,198],[43930,352,220,123934,113,222,123934,113,223,18509,11,58583,71,461,220,123934,245,222,87,11,220,16,17,18,19,20,21,22,23,220,18,13,16,19,16,20,24],[262,707,282,7,87,1648,198,197,689,856,334,17,256,2,3980,201,1406,256,4102,408,256]],"ids_no_parse_special":[[188,211,195,256,91,378,231,68,53839,37033,200,145298,147832,21580,378,225,2073],[123934,223,222,123934,223,95,123934,223,110,200,12619,114,12619,115,12619,115,201,48312,254,124068,109,124068,101,124068,254,124052,236,150479,240,136,252,137,100,137,234,137,248],[27,26865,1784,91,318,62,2468,91,30768,5564,113,5564,114,5564,115,5564,116,60,79431,138,225,148901,149492,144572,67337,6,51],[378,101,126,238,126,232,126,234,126,242,126,233,126,223,27,26865,29,136,231,136,106,137,223,136,254,148579,147831,150479,241,124137,224,27,91,318,62,2468,91,29,131,227,271,144043,378,107,172,108,99,240,172,108,122,236],[146401,175,108,223,247,175,108,223,123,175,108,224,116,175,108,222,99,175,108,222,113,6,265,26,47234,19884,262,220,175,15675,229,175,63219,224,175,15675,105,27,91,23476,62,606,91,29,14615,27,91,8691,723,427,91,29],[144815,132,99,132,234,123934,222,115,123934,222,118,123934,222,224,123934,222,109,123934,223,95],[16,17,18,29237,230,29237,225,29237,223,29237,227,27,91,8691,723,427,91,29,197],[27,91,23476,62,606,91,5592,26614,35994,87],[99189,246,99203,103,17156,120,8508,242,119055,6,265],[4102,201,522,82,29],[151657,19,20,21,22,220,175,108,223,116,175,108,224,251,175,108,224,248,175,108,223,249,378,231,58994,236,147654,158,25452,124372,116,150663,15698,124381,144611,199,149,96,199,151,123,151,245,150385,149512,151,95,32790],[29237,236,29237,225,29237,228,29237,230,29237,229,201,15692],[124026,122,146439,149433,16825,111,146021,144427,220,27,91,318,62,408,91,1784,91,23476,62,606,91,29,149242,144287,378,231,378,101,378,231,151245,145409,144115,140818,144627,1773,1277,101,1277,226],[198,319,144220,68405,95,144546,136540,148950,92],[9707,220,11,1879,220,0,1084,220,6,274,6915,220,11,4436,220,6,83,432,220,30,358,220,6,76,2704,807,220,6,265,5394,220,13],[64,128230,236,65,86089,255,236,128230,236,16,128230,236,6,128230,236,856,128230,123,197,128230,237,198],[43930,352,220,123934,113,222,123934,113,223,18509,11,58583,71,461,220,123934,245,222,87,11,220,16,17,18,19,20,21,22,23,220,18,13,16,19,16,20,24],[262,707,282,7,87,1648,198,197,689,856,334,17,256,2,3980,201,1406,256,4102,408,256]],"detok":["\u0000\u0017\u0007  |\u2009e\u0301\u0e14\f\u2049\u2055\u2033\u2003\u201c","\ud800\udc40\ud800\udc62\ud800\udc72\f\u0976\u0977\u0977\r\u2460\u1131\u1128\u1120\u114e\u11d2\u031e\u0367\u034c\u035a","<think><|im_start|>[\ufff5\ufff6\ufff7\ufff8]\u03ad\u0383\u03dc\u03d0\u03a9\u03ba'T","\u2028\u0090\u008a\u008c\u0094\u008b\u0081<think>\u0309\u032e\u0341\u0320\u1104\u11b7\u11d3\u1182<|im_start|>\u01c5\n\n\u2024\u202f\ud882\udd92\ud883\udf8e","\u2693\udb80\udc59\udb80\udc7f\udb80\udcb8\udb80\udc26\udb80\udc35're;Fa=?    \udb40\udc47\udb40\udc02\udb40\udc6c<|repo_name|>world<|endoftext|>","\u017f\u0226\u020c\ud800\udc37\ud800\udc3a\ud800\udc02\ud800\udc31\ud800\udc62","123\ufe08\ufe03\ufe01\ufe05<|endoftext|>\t","<|repo_name|>'TI;'x","\u5798\u9eaa\u5dfc\u5b94\u86e4're","\u00a0\r</s>","<tool_call>4567 \udb80\udc78\udb80\udc9d\udb80\udc9a\udb80\udc5b\u2009\u224e\u23dc\u23b7\u2378\u22f2\u30f3\u306d\u30fd\u000b\u0663\u000b\u06ff\u06d7\u063e\u063f\u06e2\u0634","\ufe0e\ufe03\ufe06\ufe08\ufe07\r\u200b","\ud835\udd3e\ud835\udc45\u2619\u2673\u2515\u25ef <|im_end|><|repo_name|>\u2112\u2116\u2009\u2028\u2009\uffc2\uff5d\uff45\uff62\uff8e\u3002\u3028\u3004","\n\r\n\uff03\uffa2\uff9a\uff2f\u022f}","Hello, world! It's fine, isn 't it? I'm sure they're ok.","a\u1b4eb \u1b4e\u1b4e1\u1b4e'\u1b4e x\u1b7f\t\u1b4f\n","Garay \ud803\udd40\ud803\udd41 digits, Todhri \ud801\uddc0x, 12345678 3.14159","    def f(x):\n\treturn x**2  # comment\r\n\n\n  \u00a0end  "]},"starcoder":{"ids":[[188,211,195,220,760,378,231,68,53839,37033,200,145298,147832,21580,378,225,2073],[123934,223,222,123934,223,95,123934,223,110,200,12619,114,12619,115,12619,115,201,48312,254,124068,109,124068,101,124068,254,124052,236,150479,240,136,252,137,100,137,234,137,248],[27,26865,29,151644,58,5564,113,5564,114,5564,115,5564,116,60,79431,138,225,148901,149492,144572,67337,6,51],[378,101,126,238,126,232,126,234,126,242,126,233,126,223,27,26865,29,136,231,136,106,137,223,136,254,148579,147831,150479,241,124137,224,151644,131,227,198,198,144043,378,107,172,108,99,240,172,108,122,236],[146401,175,108,223,247,175,108,223,123,175,108,224,116,175,108,222,99,175,108,222,113,6,265,26,47234,19884,262,220,175,15675,229,175,63219,224,175,15675,105,151663,14615,151643],[144815,132,99,132,234,123934,222,115,123934,222,118,123934,222,224,123934,222,109,123934,223,95],[16,17,18,29237,230,29237,225,29237,223,29237,227,151643,197],[151663,6,26614,35994,87],[99189,246,99203,103,17156,120,8508,242,119055,2299],[4102,201,128247],[151657,19,20,21,22,220,175,108,223,116,175,108,224,251,175,108,224,248,175,108,223,249,378,231,58994,236,147654,158,25452,124372,116,150663,15698,124381,144611,199,149,96,199,151,123,151,245,150385,149512,151,95,32790],[29237,236,29237,225,29237,228,29237,230,29237,229,201,15692],[124026,122,146439,149433,16825,111,146021,144427,220,151645,151663,149242,144287,378,231,378,101,378,231,151245,145409,144115,140818,144627,1773,1277,101,1277,226],[198,201,198,144220,68405,95,144546,136540,148950,92],[9707,1154,1879,753,1084,364,274,6915,1154,4436,364,83,432,937,358,364,76,2704,807,364,265,5394,659],[64,128230,236,65,86089,255,236,128230,236,16,128230,236,6,128230,236,856,128230,123,197,128230,237,198],[43930,352,220,123934,113,222,123934,113,223,18509,11,58583,71,461,220,123934,245,222,87,11,220,16,17,18,19,20,21,22,23,220,18,13,16,19,16,20,24],[262,707,282,7,87,1648,198,197,689,856,334,17,220,671,3980,201,1406,256,4102,408,256]],"ids_no_parse_special":[[188,211,195,220,760,378,231,68,53839,37033,200,145298,147832,21580,378,225,2073],[123934,223,222,123934,223,95,123934,223,110,200,12619,114,12619,115,12619,115,201,48312,254,124068,109,124068,101,124068,254,124052,236,150479,240,136,252,137,100,137,234,137,248],[27,26865,1784,91,318,62,2468,91,30768,5564,113,5564,114,5564,115,5564,116,60,79431,138,225,148901,149492,144572,67337,6,51],[378,101,126,238,126,232,126,234,126,242,126,233,126,223,27,26865,29,136,231,136,106,137,223,136,254,148579,147831,150479,241,124137,224,27,91,318,62,2468,91,29,131,227,198,198,144043,378,107,172,108,99,240,172,108,122,236],[146401,175,108,223,247,175,108,223,123,175,108,224,116,175,108,222,99,175,108,222,113,6,265,26,47234,19884,262,220,175,15675,229,175,63219,224,175,15675,105,27,91,23476,62,606,91,29,14615,27,91,8691,723,427,91,29],[144815,132,99,132,234,123934,222,115,123934,222,118,123934,222,224,123934,222,109,123934,223,95],[16,17,18,29237,230,29237,225,29237,223,29237,227,27,91,8691,723,427,91,29,197],[27,91,23476,62,606,91,5592,26614,35994,87],[99189,246,99203,103,17156,120,8508,242,119055,2299],[4102,201,522,82,29],[151657,19,20,21,22,220,175,108,223,116,175,108,224,251,175,108,224,248,175,108,223,249,378,231,58994,236,147654,158,25452,124372,116,150663,15698,124381,144611,199,149,96,199,151,123,151,245,150385,149512,151,95,32790],[29237,236,29237,225,29237,228,29237,230,29237,229,201,15692],[124026,122,146439,149433,16825,111,146021,144427,82639,318,62,408,91,1784,91,23476,62,606,91,29,149242,144287,378,231,378,101,378,231,151245,145409,144115,140818,144627,1773,1277,101,1277,226],[198,201,198,144220,68405,95,144546,136540,148950,92],[9707,1154,1879,753,1084,364,274,6915,1154,4436,364,83,432,937,358,364,76,2704,807,364,265,5394,659],[64,128230,236,65,86089,255,236,128230,236,16,128230,236,6,128230,236,856,128230,123,197,128230,237,198],[43930,352,220,123934,113,222,123934,113,223,18509,11,58583,71,461,220,123934,245,222,87,11,220,16,17,18,19,20,21,22,23,220,18,13,16,19,16,20,24],[262,707,282,7,87,1648,198,197,689,856,334,17,220,671,3980,201,1406,256,4102,408,256]],"detok":["\u0000\u0017\u0007  |\u2009e\u0301\u0e14\f\u2049\u2055\u2033\u2003\u201c","\ud800\udc40\ud800\udc62\ud800\udc72\f\u0976\u0977\u0977\r\u2460\u1131\u1128\u1120\u114e\u11d2\u031e\u0367\u034c\u035a","<think><|im_start|>[\ufff5\ufff6\ufff7\ufff8]\u03ad\u0383\u03dc\u03d0\u03a9\u03ba'T","\u2028\u0090\u008a\u008c\u0094\u008b\u0081<think>\u0309\u032e\u0341\u0320\u1104\u11b7\u11d3\u1182<|im_start|>\u01c5\n\n\u2024\u202f\ud882\udd92\ud883\udf8e","\u2693\udb80\udc59\udb80\udc7f\udb80\udcb8\udb80\udc26\udb80\udc35're;Fa=?    \udb40\udc47\udb40\udc02\udb40\udc6c<|repo_name|>world<|endoftext|>","\u017f\u0226\u020c\ud800\udc37\ud800\udc3a\ud800\udc02\ud800\udc31\ud800\udc62","123\ufe08\ufe03\ufe01\ufe05<|endoftext|>\t","<|repo_name|>'TI;'x","\u5798\u9eaa\u5dfc\u5b94\u86e4're","\u00a0\r</s>","<tool_call>4567 \udb80\udc78\udb80\udc9d\udb80\udc9a\udb80\udc5b\u2009\u224e\u23dc\u23b7\u2378\u22f2\u30f3\u306d\u30fd\u000b\u0663\u000b\u06ff\u06d7\u063e\u063f\u06e2\u0634","\ufe0e\ufe03\ufe06\ufe08\ufe07\r\u200b","\ud835\udd3e\ud835\udc45\u2619\u2673\u2515\u25ef <|im_end|><|repo_name|>\u2112\u2116\u2009\u2028\u2009\uffc2\uff5d\uff45\uff62\uff8e\u3002\u3028\u3004","\n\r\n\uff03\uffa2\uff9a\uff2f\u022f}","Hello, world! It's fine, isn 't it? I'm sure they're ok.","a\u1b4eb \u1b4e\u1b4e1\u1b4e'\u1b4e x\u1b7f\t\u1b4f\n","Garay \ud803\udd40\ud803\udd41 digits, Todhri \ud801\uddc0x, 12345678 3.14159","    def f(x):\n\treturn x**2  # comment\r\n\n\n  \u00a0end  "]},"falcon":{"ids":[[188,211,195,256,91,378,231,68,53839,37033,200,145298,147832,21580,378,225,2073],[123934,223,222,123934,223,95,123934,223,110,200,12619,114,12619,115,12619,115,201,48312,254,124068,109,124068,101,124068,254,124052,236,150479,240,136,252,137,100,137,234,137,248],[27,26865,29,151644,58,5564,113,5564,114,5564,115,5564,116,60,79431,138,225,148901,149492,144572,67337,6,51],[378,101,126,238,126,232,126,234,126,242,126,233,126,223,27,26865,29,136,231,136,106,137,223,136,254,148579,147831,150479,241,124137,224,151644,131,227,271,144043,378,107,172,108,99,240,172,108,122,236],[146401,175,108,223,247,175,108,223,123,175,108,224,116,175,108,222,99,175,108,222,113,6,265,26,47234,19884,262,220,175,15675,229,175,63219,224,175,15675,105,151663,14615,151643],[144815,132,99,132,234,123934,222,115,123934,222,118,123934,222,224,123934,222,109,123934,223,95],[16,17,18,29237,230,29237,225,29237,223,29237,227,151643,197],[151663,6,26614,35994,87],[99189,246,99203,103,17156,120,8508,242,119055,6,265],[4102,201,128247],[151657,19,20,21,22,220,175,108,223,116,175,108,224,251,175,108,224,248,175,108,223,249,378,231,58994,236,147654,158,25452,124372,116,150663,15698,124381,144611,199,149,96,199,151,123,151,245,150385,149512,151,95,32790],[29237,236,29237,225,29237,228,29237,230,29237,229,201,15692],[124026,122,146439,149433,16825,111,146021,144427,220,151645,151663,149242,144287,378,231,378,101,378,231,151245,145409,144115,140818,144627,1773,1277,101,1277,226],[198,319,144220,68405,95,144546,136540,148950,92],[9707,220,11,1879,220,0,1084,220,6,274,6915,220,11,4436,220,6,83,432,220,30,358,220,6,76,2704,807,220,6,265,5394,220,13],[64,128230,236,65,86089,255,236,128230,236,16,128230,236,6,128230,236,856,128230,123,197,128230,237,198],[43930,352,220,123934,113,222,123934,113,223,18509,11,58583,71,461,220,123934,245,222,87,11,220,16,17,18,19,20,21,22,23,220,18,13,16,19,16,20,24],[262,707,282,7,87,1648,198,197,689,856,334,17,256,2,3980,201,1406,256,4102,408,256]],"ids_no_parse_special":[[188,211,195,256,91,378,231,68,53839,37033,200,145298,147832,21580,378,225,2073],[123934,223,222,123934,223,95,123934,223,110,200,12619,114,12619,115,12619,115,201,48312,254,124068,109,124068,101,124068,254,124052,236,150479,240,136,252,137,100,137,234,137,248],[27,26865,1784,91,318,62,2468,91,30768,5564,113,5564,114,5564,115,5564,116,60,79431,138,225,148901,149492,144572,67337,6,51],[378,101,126,238,126,232,126,234,126,242,126,233,126,223,27,26865,29,136,231,136,106,137,223,136,254,148579,147831,150479,241,124137,224,27,91,318,62,2468,91,29,131,227,271,144043,378,107,172,108,99,240,172,108,122,236],[146401,175,108,223,247,175,108,223,123,175,108,224,116,175,108,222,99,175,108,222,113,6,265,26,47234,19884,262,220,175,15675,229,175,63219,224,175,15675,105,27,91,23476,62,606,91,29,14615,27,91,8691,723,427,91,29],[144815,132,99,132,234,123934,222,115,123934,222,118,123934,222,224,123934,222,109,123934,223,95],[16,17,18,29237,230,29237,225,29237,223,29237,227,27,91,8691,723,427,91,29,197],[27,91,23476,62,606,91,5592,26614,35994,87],[99189,246,99203,103,17156,120,8508,242,119055,6,265],[4102,201,522,82,29],[151657,19,20,21,22,220,175,108,223,116,175,108,224,251,175,108,224,248,175,108,223,249,378,231,58994,236,147654,158,25452,124372,116,150663,15698,124381,144611,199,149,96,199,151,123,151,245,150385,149512,151,95,32790],[29237,236,29237,225,29237,228,29237,230,29237,229,201,15692],[124026,122,146439,149433,16825,111,146021,144427,220,27,91,318,62,408,91,1784,91,23476,62,606,91,29,149242,144287,378,231,378,101,378,231,151245,145409,144115,140818,144627,1773,1277,101,1277,226],[198,319,144220,68405,95,144546,136540,148950,92],[9707,220,11,1879,220,0,1084,220,6,274,6915,220,11,4436,220,6,83,432,220,30,358,220,6,76,2704,807,220,6,265,5394,220,13],[64,128230,236,65,86089,255,236,128230,236,16,128230,236,6,128230,236,856,128230,123,197,128230,237,198],[43930,352,220,123934,113,222,123934,113,223,18509,11,58583,71,461,220,123934,245,222,87,11,220,16,17,18,19,20,21,22,23,220,18,13,16,19,16,20,24],[262,707,282,7,87,1648,198,197,689,856,334,17,256,2,3980,201,1406,256,4102,408,256]],"detok":["\u0000\u0017\u0007  |\u2009e\u0301\u0e14\f\u2049\u2055\u2033\u2003\u201c","\ud800\udc40\ud800\udc62\ud800\udc72\f\u0976\u0977\u0977\r\u2460\u1131\u1128\u1120\u114e\u11d2\u031e\u0367\u034c\u035a","<think><|im_start|>[\ufff5\ufff6\ufff7\ufff8]\u03ad\u0383\u03dc\u03d0\u03a9\u03ba'T","\u2028\u0090\u008a\u008c\u0094\u008b\u0081<think>\u0309\u032e\u0341\u0320\u1104\u11b7\u11d3\u1182<|im_start|>\u01c5\n\n\u2024\u202f\ud882\udd92\ud883\udf8e","\u2693\udb80\udc59\udb80\udc7f\udb80\udcb8\udb80\udc26\udb80\udc35're;Fa=?    \udb40\udc47\udb40\udc02\udb40\udc6c<|repo_name|>world<|endoftext|>","\u017f\u0226\u020c\ud800\udc37\ud800\udc3a\ud800\udc02\ud800\udc31\ud800\udc62","123\ufe08\ufe03\ufe01\ufe05<|endoftext|>\t","<|repo_name|>'TI;'x","\u5798\u9eaa\u5dfc\u5b94\u86e4're","\u00a0\r</s>","<tool_call>4567 \udb80\udc78\udb80\udc9d\udb80\udc9a\udb80\udc5b\u2009\u224e\u23dc\u23b7\u2378\u22f2\u30f3\u306d\u30fd\u000b\u0663\u000b\u06ff\u06d7\u063e\u063f\u06e2\u0634","\ufe0e\ufe03\ufe06\ufe08\ufe07\r\u200b","\ud835\udd3e\ud835\udc45\u2619\u2673\u2515\u25ef <|im_end|><|repo_name|>\u2112\u2116\u2009\u2028\u2009\uffc2\uff5d\uff45\uff62\uff8e\u3002\u3028\u3004","\n\r\n\uff03\uffa2\uff9a\uff2f\u022f}","Hello, world! It's fine, isn 't it? I'm sure they're ok.","a\u1b4eb \u1b4e\u1b4e1\u1b4e'\u1b4e x\u1b7f\t\u1b4f\n","Garay \ud803\udd40\ud803\udd41 digits, Todhri \ud801\uddc0x, 12345678 3.14159","    def f(x):\n\treturn x**2  # comment\r\n\n\n  \u00a0end  "]},"qwen35":{"ids":[[188,211,195,220,760,378,231,68,53839,37033,200,145298,147832,21580,378,225,2073],[123934,223,222,123934,223,95,123934,223,110,200,12619,114,12619,115,12619,115,201,48312,254,124068,109,124068,101,124068,254,124052,236,150479,240,136,252,137,100,137,234,137,248],[13708,766,29,151644,58,5564,113,5564,114,5564,115,5564,116,60,79431,138,225,148901,149492,144572,67337,17323],[378,101,126,238,126,232,126,234,126,242,126,233,126,223,27,26865,29,136,231,136,106,137,223,136,254,148579,147831,150479,241,124137,224,151644,131,227,271,144043,378,107,172,108,99,240,172,108,122,236],[146401,175,108,223,247,175,108,223,123,175,108,224,116,175,108,222,99,175,108,222,113,6,265,26,47234,19884,262,220,175,15675,229,175,63219,224,175,15675,105,151663,14615,151643],[144815,132,99,132,234,123934,222,115,123934,222,118,123934,222,224,123934,222,109,123934,223,95],[16,17,18,29237,230,29237,225,29237,223,29237,227,151643,197],[151663,17323,40,35994,87],[99189,246,99203,103,17156,120,8508,242,119055,2299],[4102,201,128247],[151657,19,20,21,22,220,175,108,223,116,175,108,224,251,175,108,224,248,175,108,223,249,378,231,58994,236,147654,158,25452,124372,116,150663,15698,124381,144611,199,149,96,199,151,123,151,245,150385,149512,151,95,32790],[29237,236,29237,225,29237,228,29237,230,29237,229,201,15692],[124026,122,146439,149433,16825,111,146021,144427,220,151645,151663,149242,144287,378,231,378,101,378,231,151245,145409,144115,140818,144627,1773,1277,101,1277,226],[198,319,144220,68405,95,144546,136540,148950,92],[9707,1154,1879,753,1084,364,274,6915,1154,4436,364,83,432,937,358,364,76,2704,807,364,265,5394,659],[64,128230,236,65,86089,255,236,128230,236,16,128230,236,6,128230,236,856,128230,123,197,128230,237,198],[43930,352,220,123934,113,222,123934,113,223,18509,11,58583,71,461,220,123934,245,222,87,11,220,16,17,18,19,20,21,22,23,220,18,13,16,19,16,20,24],[262,707,282,2075,982,853,856,334,17,220,671,3980,201,1406,256,4102,408,256]],"ids_no_parse_special":[[188,211,195,220,760,378,231,68,53839,37033,200,145298,147832,21580,378,225,2073],[123934,223,222,123934,223,95,123934,223,110,200,12619,114,12619,115,12619,115,201,48312,254,124068,109,124068,101,124068,254,124052,236,150479,240,136,252,137,100,137,234,137,248],[13708,766,1784,91,318,4906,91,30768,5564,113,5564,114,5564,115,5564,116,60,79431,138,225,148901,149492,144572,67337,17323],[378,101,126,238,126,232,126,234,126,242,126,233,126,223,27,26865,29,136,231,136,106,137,223,136,254,148579,147831,150479,241,124137,224,27,91,318,4906,91,29,131,227,271,144043,378,107,172,108,99,240,172,108,122,236],[146401,175,108,223,247,175,108,223,123,175,108,224,116,175,108,222,99,175,108,222,113,6,265,26,47234,19884,262,220,175,15675,229,175,63219,224,175,15675,105,27,91,23476,1269,91,29,14615,27,91,8691,723,427,91,29],[144815,132,99,132,234,123934,222,115,123934,222,118,123934,222,224,123934,222,109,123934,223,95],[16,17,18,29237,230,29237,225,29237,223,29237,227,27,91,8691,723,427,91,29,197],[27,91,23476,1269,91,5592,26614,35994,87],[99189,246,99203,103,17156,120,8508,242,119055,2299],[4102,201,522,82,29],[151657,19,20,21,22,220,175,108,223,116,175,108,224,251,175,108,224,248,175,108,223,249,378,231,58994,236,147654,158,25452,124372,116,150663,15698,124381,144611,199,149,96,199,151,123,151,245,150385,149512,151,95,32790],[29237,236,29237,225,29237,228,29237,230,29237,229,201,15692],[124026,122,146439,149433,16825,111,146021,144427,82639,318,6213,91,1784,91,23476,1269,91,29,149242,144287,378,231,378,101,378,231,151245,145409,144115,140818,144627,1773,1277,101,1277,226],[198,319,144220,68405,95,144546,136540,148950,92],[9707,1154,1879,753,1084,364,274,6915,1154,4436,364,83,432,937,358,364,76,2704,807,364,265,5394,659],[64,128230,236,65,86089,255,236,128230,236,16,128230,236,6,128230,236,856,128230,123,197,128230,237,198],[43930,352,220,123934,113,222,123934,113,223,18509,11,58583,71,461,220,123934,245,222,87,11,220,16,17,18,19,20,21,22,23,220,18,13,16,19,16,20,24],[262,707,282,2075,982,853,856,334,17,220,671,3980,201,1406,256,4102,408,256]],"detok":["\u0000\u0017\u0007  |\u2009e\u0301\u0e14\f\u2049\u2055\u2033\u2003\u201c","\ud800\udc40\ud800\udc62\ud800\udc72\f\u0976\u0977\u0977\r\u2460\u1131\u1128\u1120\u114e\u11d2\u031e\u0367\u034c\u035a","<think><|im_start|>[\ufff5\ufff6\ufff7\ufff8]\u03ad\u0383\u03dc\u03d0\u03a9\u03ba'T","\u2028\u0090\u008a\u008c\u0094\u008b\u0081<think>\u0309\u032e\u0341\u0320\u1104\u11b7\u11d3\u1182<|im_start|>\u01c5\n\n\u2024\u202f\ud882\udd92\ud883\udf8e","\u2693\udb80\udc59\udb80\udc7f\udb80\udcb8\udb80\udc26\udb80\udc35're;Fa=?    \udb40\udc47\udb40\udc02\udb40\udc6c<|repo_name|>world<|endoftext|>","\u017f\u0226\u020c\ud800\udc37\ud800\udc3a\ud800\udc02\ud800\udc31\ud800\udc62","123\ufe08\ufe03\ufe01\ufe05<|endoftext|>\t","<|repo_name|>'TI;'x","\u5798\u9eaa\u5dfc\u5b94\u86e4're","\u00a0\r</s>","<tool_call>4567 \udb80\udc78\udb80\udc9d\udb80\udc9a\udb80\udc5b\u2009\u224e\u23dc\u23b7\u2378\u22f2\u30f3\u306d\u30fd\u000b\u0663\u000b\u06ff\u06d7\u063e\u063f\u06e2\u0634","\ufe0e\ufe03\ufe06\ufe08\ufe07\r\u200b","\ud835\udd3e\ud835\udc45\u2619\u2673\u2515\u25ef <|im_end|><|repo_name|>\u2112\u2116\u2009\u2028\u2009\uffc2\uff5d\uff45\uff62\uff8e\u3002\u3028\u3004","\n\r\n\uff03\uffa2\uff9a\uff2f\u022f}","Hello , world ! It ' s fine , isn 't it ? I 'm sure they 're ok .","a\u1b4eb \u1b4e\u1b4e1\u1b4e'\u1b4e x\u1b7f\t\u1b4f\n","Garay \ud803\udd40\ud803\udd41 digits, Todhri \ud801\uddc0x, 12345678 3.14159","    def f(x):\n\treturn x**2  # comment\r\n\n\n  \u00a0end  "]},"seed-coder":{"ids":[[188,211,195,220,760,378,231,68,53839,37033,200,145298,147832,21580,378,225,2073],[123934,223,222,123934,223,95,123934,223,110,200,12619,114,12619,115,12619,115,201,48312,254,124068,109,124068,101,124068,254,124052,236,150479,240,136,252,137,100,137,234,137,248],[13708,766,29,151644,58,5564,113,5564,114,5564,115,5564,116,60,79431,138,225,148901,149492,144572,67337,17323],[378,101,126,238,126,232,126,234,126,242,126,233,126,223,27,26865,29,136,231,136,106,137,223,136,254,148579,147831,150479,241,124137,224,151644,131,227,271,144043,378,107,172,108,99,240,172,108,122,236],[146401,175,108,223,247,175,108,223,123,175,108,224,116,175,108,222,99,175,108,222,113,6,265,26,47234,19884,262,220,175,15675,229,175,63219,224,175,15675,105,151663,14615,151643],[144815,132,99,132,234,123934,222,115,123934,222,118,123934,222,224,123934,222,109,123934,223,95],[16,17,18,29237,230,29237,225,29237,223,29237,227,151643,197],[151663,17323,40,35994,87],[99189,246,99203,103,17156,120,8508,242,119055,2299],[4102,201,128247],[151657,19,20,21,22,220,175,108,223,116,175,108,224,251,175,108,224,248,175,108,223,249,378,231,58994,236,147654,158,25452,124372,116,150663,15698,124381,144611,199,149,96,199,151,123,151,245,150385,149512,151,95,32790],[29237,236,29237,225,29237,228,29237,230,29237,229,201,15692],[124026,122,146439,149433,16825,111,146021,144427,220,151645,151663,149242,144287,378,231,378,101,378,231,151245,145409,144115,140818,144627,1773,1277,101,1277,226],[198,319,144220,68405,95,144546,136540,148950,92],[9707,1154,1879,753,1084,364,274,6915,1154,4436,364,83,432,937,358,364,76,2704,807,364,265,5394,659],[64,128230,236,65,86089,255,236,128230,236,16,128230,236,6,128230,236,856,128230,123,197,128230,237,198],[43930,352,220,123934,113,222,123934,113,223,18509,11,58583,71,461,220,123934,245,222,87,11,220,16,17,18,19,20,21,22,23,220,18,13,16,19,16,20,24],[262,707,282,2075,1648,198,853,856,334,17,220,671,3980,201,1406,256,4102,408,256]],"ids_no_parse_special":[[188,211,195,220,760,378,231,68,53839,37033,200,145298,147832,21580,378,225,2073],[123934,223,222,123934,223,95,123934,223,110,200,12619,114,12619,115,12619,115,201,48312,254,124068,109,124068,101,124068,254,124052,236,150479,240,136,252,137,100,137,234,137,248],[13708,766,1784,91,318,4906,91,30768,5564,113,5564,114,5564,115,5564,116,60,79431,138,225,148901,149492,144572,67337,17323],[378,101,126,238,126,232,126,234,126,242,126,233,126,223,27,26865,29,136,231,136,106,137,223,136,254,148579,147831,150479,241,124137,224,27,91,318,4906,91,29,131,227,271,144043,378,107,172,108,99,240,172,108,122,236],[146401,175,108,223,247,175,108,223,123,175,108,224,116,175,108,222,99,175,108,222,113,6,265,26,47234,19884,262,220,175,15675,229,175,63219,224,175,15675,105,27,91,23476,1269,91,29,14615,27,91,8691,723,427,91,29],[144815,132,99,132,234,123934,222,115,123934,222,118,123934,222,224,123934,222,109,123934,223,95],[16,17,18,29237,230,29237,225,29237,223,29237,227,27,91,8691,723,427,91,29,197],[27,91,23476,1269,91,5592,26614,35994,87],[99189,246,99203,103,17156,120,8508,242,119055,2299],[4102,201,522,82,29],[151657,19,20,21,22,220,175,108,223,116,175,108,224,251,175,108,224,248,175,108,223,249,378,231,58994,236,147654,158,25452,124372,116,150663,15698,124381,144611,199,149,96,199,151,123,151,245,150385,149512,151,95,32790],[29237,236,29237,225,29237,228,29237,230,29237,229,201,15692],[124026,122,146439,149433,16825,111,146021,144427,82639,318,6213,91,1784,91,23476,1269,91,29,149242,144287,378,231,378,101,378,231,151245,145409,144115,140818,144627,1773,1277,101,1277,226],[198,319,144220,68405,95,144546,136540,148950,92],[9707,1154,1879,753,1084,364,274,6915,1154,4436,364,83,432,937,358,364,76,2704,807,364,265,5394,659],[64,128230,236,65,86089,255,236,128230,236,16,128230,236,6,128230,236,856,128230,123,197,128230,237,198],[43930,352,220,123934,113,222,123934,113,223,18509,11,58583,71,461,220,123934,245,222,87,11,220,16,17,18,19,20,21,22,23,220,18,13,16,19,16,20,24],[262,707,282,2075,1648,198,853,856,334,17,220,671,3980,201,1406,256,4102,408,256]],"detok":["\u0000\u0017\u0007  |\u2009e\u0301\u0e14\f\u2049\u2055\u2033\u2003\u201c","\ud800\udc40\ud800\udc62\ud800\udc72\f\u0976\u0977\u0977\r\u2460\u1131\u1128\u1120\u114e\u11d2\u031e\u0367\u034c\u035a","<think><|im_start|>[\ufff5\ufff6\ufff7\ufff8]\u03ad\u0383\u03dc\u03d0\u03a9\u03ba'T","\u2028\u0090\u008a\u008c\u0094\u008b\u0081<think>\u0309\u032e\u0341\u0320\u1104\u11b7\u11d3\u1182<|im_start|>\u01c5\n\n\u2024\u202f\ud882\udd92\ud883\udf8e","\u2693\udb80\udc59\udb80\udc7f\udb80\udcb8\udb80\udc26\udb80\udc35're;Fa=?    \udb40\udc47\udb40\udc02\udb40\udc6c<|repo_name|>world<|endoftext|>","\u017f\u0226\u020c\ud800\udc37\ud800\udc3a\ud800\udc02\ud800\udc31\ud800\udc62","123\ufe08\ufe03\ufe01\ufe05<|endoftext|>\t","<|repo_name|>'TI;'x","\u5798\u9eaa\u5dfc\u5b94\u86e4're","\u00a0\r</s>","<tool_call>4567 \udb80\udc78\udb80\udc9d\udb80\udc9a\udb80\udc5b\u2009\u224e\u23dc\u23b7\u2378\u22f2\u30f3\u306d\u30fd\u000b\u0663\u000b\u06ff\u06d7\u063e\u063f\u06e2\u0634","\ufe0e\ufe03\ufe06\ufe08\ufe07\r\u200b","\ud835\udd3e\ud835\udc45\u2619\u2673\u2515\u25ef <|im_end|><|repo_name|>\u2112\u2116\u2009\u2028\u2009\uffc2\uff5d\uff45\uff62\uff8e\u3002\u3028\u3004","\n\r\n\uff03\uffa2\uff9a\uff2f\u022f}","Hello , world ! It ' s fine , isn 't it ? I 'm sure they 're ok .","a\u1b4eb \u1b4e\u1b4e1\u1b4e'\u1b4e x\u1b7f\t\u1b4f\n","Garay \ud803\udd40\ud803\udd41 digits, Todhri \ud801\uddc0x, 12345678 3.14159","    def f(x):\n\treturn x**2  # comment\r\n\n\n  \u00a0end  "]},"command-r":{"ids":[[188,211,195,220,760,378,231,68,53839,37033,200,145298,147832,21580,378,225,2073],[123934,223,222,123934,223,95,123934,223,110,200,12619,114,12619,115,12619,115,201,48312,254,124068,109,124068,101,124068,254,124052,236,150479,240,136,252,137,100,137,234,137,248],[27,26865,29,151644,58,5564,113,5564,114,5564,115,5564,116,60,79431,138,225,148901,149492,144572,67337,6,51],[378,101,126,238,126,232,126,234,126,242,126,233,126,223,27,26865,29,136,231,136,106,137,223,136,254,148579,147831,150479,241,124137,224,151644,131,227,198,198,144043,378,107,172,108,99,240,172,108,122,236],[146401,175,108,223,247,175,108,223,123,175,108,224,116,175,108,222,99,175,108,222,113,6,265,26,47234,19884,262,220,175,15675,229,175,63219,224,175,15675,105,151663,14615,151643],[144815,132,99,132,234,123934,222,115,123934,222,118,123934,222,224,123934,222,109,123934,223,95],[16,17,18,29237,230,29237,225,29237,223,29237,227,151643,197],[151663,6,26614,35994,87],[99189,246,99203,103,17156,120,8508,242,119055,2299],[4102,201,128247],[151657,19,20,21,22,220,175,108,223,116,175,108,224,251,175,108,224,248,175,108,223,249,378,231,58994,236,147654,158,25452,124372,116,150663,15698,124381,144611,199,149,96,199,151,123,151,245,150385,149512,151,95,32790],[29237,236,29237,225,29237,228,29237,230,29237,229,201,15692],[124026,122,146439,149433,16825,111,146021,144427,220,151645,151663,149242,144287,378,231,378,101,378,231,151245,145409,144115,140818,144627,1773,1277,101,1277,226],[198,201,198,144220,68405,95,144546,136540,148950,92],[9707,1154,1879,753,1084,364,274,6915,1154,4436,364,83,432,937,358,364,76,2704,807,364,265,5394,659],[64,128230,236,65,86089,255,236,128230,236,16,128230,236,6,128230,236,856,128230,123,197,128230,237,198],[43930,352,220,123934,113,222,123934,113,223,18509,11,58583,71,461,220,123934,245,222,87,11,220,16,17,18,19,20,21,22,23,220,18,13,16,19,16,20,24],[262,707,282,7,87,1648,198,197,689,856,334,17,220,671,3980,201,1406,256,4102,408,256]],"ids_no_parse_special":[[188,211,195,220,760,378,231,68,53839,37033,200,145298,147832,21580,378,225,2073],[123934,223,222,123934,223,95,123934,223,110,200,12619,114,12619,115,12619,115,201,48312,254,124068,109,124068,101,124068,254,124052,236,150479,240,136,252,137,100,137,234,137,248],[27,26865,1784,91,318,62,2468,91,30768,5564,113,5564,114,5564,115,5564,116,60,79431,138,225,148901,149492,144572,67337,6,51],[378,101,126,238,126,232,126,234,126,242,126,233,126,223,27,26865,29,136,231,136,106,137,223,136,254,148579,147831,150479,241,124137,224,27,91,318,62,2468,91,29,131,227,198,198,144043,378,107,172,108,99,240,172,108,122,236],[146401,175,108,223,247,175,108,223,123,175,108,224,116,175,108,222,99,175,108,222,113,6,265,26,47234,19884,262,220,175,15675,229,175,63219,224,175,15675,105,27,91,23476,62,606,91,29,14615,27,91,8691,723,427,91,29],[144815,132,99,132,234,123934,222,115,123934,222,118,123934,222,224,123934,222,109,123934,223,95],[16,17,18,29237,230,29237,225,29237,223,29237,227,27,91,8691,723,427,91,29,197],[27,91,23476,62,606,91,5592,26614,35994,87],[99189,246,99203,103,17156,120,8508,242,119055,2299],[4102,201,522,82,29],[151657,19,20,21,22,220,175,108,223,116,175,108,224,251,175,108,224,248,175,108,223,249,378,231,58994,236,147654,158,25452,124372,116,150663,15698,124381,144611,199,149,96,199,151,123,151,245,150385,149512,151,95,32790],[29237,236,29237,225,29237,228,29237,230,29237,229,201,15692],[124026,122,146439,149433,16825,111,146021,144427,82639,318,62,408,91,1784,91,23476,62,606,91,29,149242,144287,378,231,378,101,378,231,151245,145409,144115,140818,144627,1773,1277,101,1277,226],[198,201,198,144220,68405,95,144546,136540,148950,92],[9707,1154,1879,753,1084,364,274,6915,1154,4436,364,83,432,937,358,364,76,2704,807,364,265,5394,659],[64,128230,236,65,86089,255,236,128230,236,16,128230,236,6,128230,236,856,128230,123,197,128230,237,198],[43930,352,220,123934,113,222,123934,113,223,18509,11,58583,71,461,220,123934,245,222,87,11,220,16,17,18,19,20,21,22,23,220,18,13,16,19,16,20,24],[262,707,282,7,87,1648,198,197,689,856,334,17,220,671,3980,201,1406,256,4102,408,256]],"detok":["\u0000\u0017\u0007  |\u2009e\u0301\u0e14\f\u2049\u2055\u2033\u2003\u201c","\ud800\udc40\ud800\udc62\ud800\udc72\f\u0976\u0977\u0977\r\u2460\u1131\u1128\u1120\u114e\u11d2\u031e\u0367\u034c\u035a","<think><|im_start|>[\ufff5\ufff6\ufff7\ufff8]\u03ad\u0383\u03dc\u03d0\u03a9\u03ba'T","\u2028\u0090\u008a\u008c\u0094\u008b\u0081<think>\u0309\u032e\u0341\u0320\u1104\u11b7\u11d3\u1182<|im_start|>\u01c5\n\n\u2024\u202f\ud882\udd92\ud883\udf8e","\u2693\udb80\udc59\udb80\udc7f\udb80\udcb8\udb80\udc26\udb80\udc35're;Fa=?    \udb40\udc47\udb40\udc02\udb40\udc6c<|repo_name|>world<|endoftext|>","\u017f\u0226\u020c\ud800\udc37\ud800\udc3a\ud800\udc02\ud800\udc31\ud800\udc62","123\ufe08\ufe03\ufe01\ufe05<|endoftext|>\t","<|repo_name|>'TI;'x","\u5798\u9eaa\u5dfc\u5b94\u86e4're","\u00a0\r</s>","<tool_call>4567 \udb80\udc78\udb80\udc9d\udb80\udc9a\udb80\udc5b\u2009\u224e\u23dc\u23b7\u2378\u22f2\u30f3\u306d\u30fd\u000b\u0663\u000b\u06ff\u06d7\u063e\u063f\u06e2\u0634","\ufe0e\ufe03\ufe06\ufe08\ufe07\r\u200b","\ud835\udd3e\ud835\udc45\u2619\u2673\u2515\u25ef <|im_end|><|repo_name|>\u2112\u2116\u2009\u2028\u2009\uffc2\uff5d\uff45\uff62\uff8e\u3002\u3028\u3004","\n\r\n\uff03\uffa2\uff9a\uff2f\u022f}","Hello , world ! It ' s fine , isn 't it ? I 'm sure they 're ok .","a\u1b4eb \u1b4e\u1b4e1\u1b4e'\u1b4e x\u1b7f\t\u1b4f\n","Garay \ud803\udd40\ud803\udd41 digits, Todhri \ud801\uddc0x, 12345678 3.14159","    def f(x):\n\treturn x**2  # comment\r\n\n\n  \u00a0end  "]}}}"####;

fn write_value(out: &mut Vec<u8>, v: &blockspec::format::gguf::Value) {
    use blockspec::format::gguf::Value as V;
    match v {
        V::U8(x) => out.push(*x),
        V::I8(x) => out.extend_from_slice(&x.to_le_bytes()),
        V::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        V::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        V::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        V::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        V::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        V::Bool(x) => out.push(u8::from(*x)),
        V::Str(x) => {
            out.extend_from_slice(&(x.len() as u64).to_le_bytes());
            out.extend_from_slice(x.as_bytes());
        }
        V::Array(xs) => {
            out.extend_from_slice(&xs.first().map_or(4, value_type).to_le_bytes());
            out.extend_from_slice(&(xs.len() as u64).to_le_bytes());
            for x in xs {
                write_value(out, x);
            }
        }
        V::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        V::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        V::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
    }
}

fn value_type(v: &blockspec::format::gguf::Value) -> u32 {
    use blockspec::format::gguf::Value as V;
    match v {
        V::U8(_) => 0,
        V::I8(_) => 1,
        V::U16(_) => 2,
        V::I16(_) => 3,
        V::U32(_) => 4,
        V::I32(_) => 5,
        V::F32(_) => 6,
        V::Bool(_) => 7,
        V::Str(_) => 8,
        V::Array(_) => 9,
        V::U64(_) => 10,
        V::I64(_) => 11,
        V::F64(_) => 12,
    }
}

/// The metadata of `g` (no tensors) with `tokenizer.ggml.pre` set to `pre`.
fn relabel_pre(g: &Gguf, pre: &str, path: &Path) {
    let mut out = Vec::new();
    out.extend_from_slice(b"GGUF");
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes());
    out.extend_from_slice(&(g.keys().len() as u64).to_le_bytes());
    for k in g.keys() {
        let v = match k.as_str() {
            "tokenizer.ggml.pre" => blockspec::format::gguf::Value::Str(pre.to_string()),
            _ => g.get(k).expect("listed key").clone(),
        };
        out.extend_from_slice(&(k.len() as u64).to_le_bytes());
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(&value_type(&v).to_le_bytes());
        write_value(&mut out, &v);
    }
    std::fs::write(path, out).expect("write gguf");
}

#[test]
fn other_pre_tokenizers_match_llama_cpp() {
    let Some(gguf) = common::model(&format!("{}.gguf", MODELS[0])) else {
        return;
    };
    let g = Gguf::open(&gguf).expect("open");
    let reference: Json = serde_json::from_str(PRE_REFERENCE).expect("reference json");
    let texts: Vec<&str> = reference["texts"]
        .as_array()
        .expect("texts")
        .iter()
        .map(|t| t.as_str().expect("text"))
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut failures = Vec::new();
    let mut n = 0;
    for (pre, r) in reference["pre"].as_object().expect("pre") {
        let path = dir.path().join(format!("pre-{pre}.gguf"));
        relabel_pre(&g, pre, &path);
        let tok =
            Tokenizer::from_gguf(&Gguf::open(&path).expect("open relabelled")).expect("tokenizer");
        for (i, text) in texts.iter().enumerate() {
            for (field, parse_special) in [("ids", true), ("ids_no_parse_special", false)] {
                let want = ids(&r[field][i]);
                let got = tok.encode(text, true, parse_special).expect("encode");
                n += 1;
                if got != want {
                    failures.push(format!("{pre} {text:?} parse_special={parse_special}:\n    llama.cpp {want:?}\n    ours      {got:?}"));
                }
            }
            let want = r["detok"][i].as_str().expect("detok");
            let got = tok.decode(&ids(&r["ids"][i]), false);
            // (llama.cpp's text went through JSON with invalid UTF-8 replaced)
            if got != want && !want.contains('\u{fffd}') {
                failures.push(format!(
                    "{pre} decode {text:?}:\n    llama.cpp {want:?}\n    ours      {got:?}"
                ));
            }
        }
    }
    println!(
        "{n} tokenizations with 8 other pre-tokenizers compared, {} failures",
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
