//! `blockspec serve` driven over HTTP, as clients use it: every endpoint, the SSE chunk format,
//! error statuses, speculative output == plain output through the API, parallel slots ==
//! serial, cancellation and the bounded queue, reasoning and tool calls.

mod common;

use common::server::{answer, Server};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// A system prompt long enough (over 64 tokens) that a request using it fills a whole chunk of
/// the exact prompt cache (`session::PROMPT_ALIGN`), which only reuses whole chunks.
const SYSTEM: &str = "You are a careful senior software engineer. You answer questions about \
    programming precisely, with short code examples where they help, and you say so when you are \
    unsure. Prefer the standard library, explain trade-offs in one or two sentences, and keep \
    answers short unless asked for more.";

/// A chat request with [`SYSTEM`] and one user message.
fn chat_sys(content: &str, max_tokens: usize) -> Value {
    json!({
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0,
    })
}

fn chat(content: &str, max_tokens: usize) -> Value {
    json!({
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0,
    })
}

/// Concatenated `delta.<field>` of streamed chat chunks.
fn stream_field(events: &[Value], field: &str) -> String {
    events
        .iter()
        .filter_map(|e| e["choices"][0]["delta"][field].as_str())
        .collect()
}

fn error_message(v: &Value) -> String {
    v["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn endpoints_formats_and_errors() {
    let Some(m) = common::model(common::MODEL_05B) else {
        return;
    };
    let s = Server::start(
        &m,
        &[
            "-c",
            "1024",
            "--spec",
            "ngram",
            "--api-key",
            "sekret",
            "--max-body-mib",
            "1",
        ],
    );

    // Models, props, tokenize / detokenize.
    let (st, models) = s.get("/v1/models");
    assert_eq!(st, 200);
    let models: Value = serde_json::from_str(&models).unwrap();
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["object"], "model");
    assert_eq!(models["data"][0]["meta"]["n_ctx"], 1024);
    let (st, props) = s.get("/props");
    assert_eq!(st, 200);
    let props: Value = serde_json::from_str(&props).unwrap();
    assert_eq!(props["total_slots"], 1);
    assert_eq!(props["speculative"]["type"], "ngram-simple");
    assert!(props["chat_template"]
        .as_str()
        .unwrap()
        .contains("im_start"));
    let toks = s.ok("/tokenize", &json!({"content": "def fibonacci(n):"}));
    let ids = toks["tokens"].clone();
    assert!(ids.as_array().unwrap().len() >= 4);
    let text = s.ok("/detokenize", &json!({ "tokens": ids }));
    assert_eq!(text["content"], "def fibonacci(n):");
    let pieces = s.ok(
        "/tokenize",
        &json!({"content": "def f", "with_pieces": true}),
    );
    assert_eq!(pieces["tokens"][0]["piece"], "def");

    // Chat, non-streamed: message, usage, timings with the drafter's counters.
    let req = chat_sys("Write a Python function that adds two numbers.", 24);
    let r = s.ok("/v1/chat/completions", &req);
    assert_eq!(r["object"], "chat.completion");
    let content = r["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!content.is_empty());
    assert_eq!(r["choices"][0]["message"]["role"], "assistant");
    assert_eq!(r["choices"][0]["finish_reason"], "length");
    assert_eq!(r["usage"]["completion_tokens"], 24);
    let prompt_tokens = r["usage"]["prompt_tokens"].as_u64().unwrap();
    assert_eq!(
        r["usage"]["total_tokens"].as_u64().unwrap(),
        prompt_tokens + 24
    );
    for f in [
        "prompt_n",
        "prompt_ms",
        "prompt_per_token_ms",
        "prompt_per_second",
        "predicted_n",
        "predicted_ms",
        "predicted_per_token_ms",
        "predicted_per_second",
        "draft_n",
        "draft_n_accepted",
        "target_steps",
        "spec_steps",
        "tree_steps",
        "tree_nodes",
    ] {
        assert!(r["timings"][f].is_number(), "timings.{f}: {}", r["timings"]);
    }

    // Streamed: role first, content deltas, a final chunk with finish_reason and timings, then
    // usage (asked for), then [DONE]; the same text as non-streamed.
    let mut sreq = req.clone();
    sreq["stream"] = json!(true);
    sreq["stream_options"] = json!({"include_usage": true});
    let ev = s.stream("/v1/chat/completions", &sreq);
    assert_eq!(ev.last().unwrap(), "[DONE]");
    assert_eq!(ev[0]["object"], "chat.completion.chunk");
    assert_eq!(ev[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(stream_field(&ev, "content"), content);
    let fin = &ev[ev.len() - 3];
    assert_eq!(fin["choices"][0]["finish_reason"], "length");
    assert!(fin["timings"]["draft_n"].is_number());
    let usage = &ev[ev.len() - 2];
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 24);
    // The follow-up reused the cached prompt, and it is the same text as without the cache.
    assert!(fin["timings"]["cache_n"].as_u64().unwrap() > 0, "{fin}");
    let mut nocache = req.clone();
    nocache["cache_prompt"] = json!(false);
    let r2 = s.ok("/v1/chat/completions", &nocache);
    assert_eq!(r2["choices"][0]["message"]["content"], content.as_str());
    assert_eq!(r2["timings"]["cache_n"], 0);

    // A second conversation turn: prefix reuse.
    let turn2 = json!({
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": "Write a Python function that adds two numbers."},
            {"role": "assistant", "content": content},
            {"role": "user", "content": "Now make it subtract."},
        ],
        "max_tokens": 16, "temperature": 0,
    });
    let t2 = s.ok("/v1/chat/completions", &turn2);
    assert!(
        t2["usage"]["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap()
            > 10
    );
    let mut t2_fresh = turn2.clone();
    t2_fresh["cache_prompt"] = json!(false);
    let t2f = s.ok("/v1/chat/completions", &t2_fresh);
    assert_eq!(
        t2["choices"][0]["message"]["content"],
        t2f["choices"][0]["message"]["content"]
    );

    // Stop strings and logprobs.
    let mut stop_req = chat("Count from 1 to 20, separated by commas.", 40);
    stop_req["stop"] = json!(["5"]);
    let r = s.ok("/v1/chat/completions", &stop_req);
    let c = r["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(!c.contains('5'), "{c}");
    assert_eq!(r["choices"][0]["finish_reason"], "stop");
    let mut lp_req = chat("Say hello.", 4);
    lp_req["logprobs"] = json!(true);
    lp_req["top_logprobs"] = json!(3);
    let r = s.ok("/v1/chat/completions", &lp_req);
    let lps = r["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert_eq!(lps.len(), 4);
    for l in lps {
        let top = l["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        // Greedy: the chosen token is the most likely one.
        assert_eq!(l["token"], top[0]["token"]);
        assert!(l["logprob"].as_f64().unwrap() <= 0.0);
    }

    // Streamed, the same log-probabilities arrive with the chunks.
    let mut lp_stream = lp_req.clone();
    lp_stream["stream"] = json!(true);
    let ev = s.stream("/v1/chat/completions", &lp_stream);
    let streamed_lps: Vec<&Value> = ev
        .iter()
        .filter_map(|e| e["choices"][0]["logprobs"]["content"].as_array())
        .flatten()
        .collect();
    assert_eq!(streamed_lps.len(), lps.len(), "{ev:?}");
    for (a, b) in streamed_lps.iter().zip(lps) {
        assert_eq!(a["token"], b["token"]);
        assert_eq!(a["top_logprobs"].as_array().unwrap().len(), 3);
    }

    // /v1/completions, non-streamed and streamed.
    let creq = json!({"prompt": "def fibonacci(n):", "max_tokens": 12, "temperature": 0});
    let r = s.ok("/v1/completions", &creq);
    assert_eq!(r["object"], "text_completion");
    let ctext = r["choices"][0]["text"].as_str().unwrap().to_string();
    assert_eq!(r["usage"]["completion_tokens"], 12);
    let mut cs = creq.clone();
    cs["stream"] = json!(true);
    cs["logprobs"] = json!(1);
    let ev = s.stream("/v1/completions", &cs);
    assert_eq!(ev.last().unwrap(), "[DONE]");
    let n_lp: usize = ev
        .iter()
        .filter_map(|e| e["choices"][0]["logprobs"]["tokens"].as_array())
        .map(|a| a.len())
        .sum();
    assert_eq!(n_lp, 12);
    let streamed: String = ev
        .iter()
        .filter_map(|e| e["choices"][0]["text"].as_str())
        .collect();
    assert_eq!(streamed, ctext);
    assert_eq!(ev[ev.len() - 2]["choices"][0]["finish_reason"], "length");
    let mut clp = creq.clone();
    clp["logprobs"] = json!(2);
    let r = s.ok("/v1/completions", &clp);
    assert_eq!(
        r["choices"][0]["logprobs"]["tokens"]
            .as_array()
            .unwrap()
            .len(),
        12
    );

    // llama.cpp's /completion: same text, native fields; streamed without [DONE].
    let nreq =
        json!({"prompt": "def fibonacci(n):", "n_predict": 12, "temperature": 0, "n_probs": 2});
    let r = s.ok("/completion", &nreq);
    assert_eq!(r["content"], ctext.as_str());
    assert_eq!(r["stop"], true);
    assert_eq!(r["stop_type"], "limit");
    assert_eq!(r["tokens_predicted"], 12);
    assert_eq!(r["completion_probabilities"].as_array().unwrap().len(), 12);
    let mut ns = nreq.clone();
    ns["stream"] = json!(true);
    let ev = s.stream("/completion", &ns);
    let streamed: String = ev.iter().filter_map(|e| e["content"].as_str()).collect();
    assert_eq!(streamed, ctext);
    assert_eq!(ev.last().unwrap()["stop"], true);
    assert!(ev.last().unwrap()["timings"]["predicted_n"].is_number());
    // Token-id prompts work too.
    let ids = s.ok("/tokenize", &json!({"content": "def fibonacci(n):"}))["tokens"].clone();
    let r = s.ok(
        "/completion",
        &json!({"prompt": ids, "n_predict": 12, "temperature": 0}),
    );
    assert_eq!(r["content"], ctext.as_str());

    // Metrics: llama.cpp's names, counting what was served.
    let m = s.metrics();
    for name in [
        "llamacpp:prompt_tokens_total",
        "llamacpp:tokens_predicted_total",
        "llamacpp:prompt_seconds_total",
        "llamacpp:tokens_predicted_seconds_total",
        "llamacpp:n_decode_total",
        "llamacpp:prompt_tokens_seconds",
        "llamacpp:predicted_tokens_seconds",
        "llamacpp:requests_processing",
        "llamacpp:requests_deferred",
        "llamacpp:spec_decode_num_draft_tokens_total",
        "llamacpp:spec_decode_num_accepted_tokens_total",
        "llamacpp:spec_decode_num_drafts_total",
        "# TYPE llamacpp:spec_decode_num_accepted_tokens_per_pos_total counter",
    ] {
        assert!(m.contains(name), "{name} missing from /metrics:\n{m}");
    }
    let predicted: f64 = m
        .lines()
        .find_map(|l| l.strip_prefix("llamacpp:tokens_predicted_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(predicted >= 24.0 * 3.0, "{m}");

    // Errors: OpenAI-style JSON with the right status, naming the field.
    let expect_error = |status: u16, path: &str, body: &str, needle: &str| {
        let (st, text) = s.post_raw(path, body);
        assert_eq!(st, status, "{path} {body}: {text}");
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{text}"));
        assert_eq!(v["error"]["code"], status);
        assert!(
            error_message(&v).contains(needle),
            "{path} {body}: {text} (expected {needle:?})"
        );
    };
    expect_error(400, "/v1/chat/completions", "{not json", "not valid JSON");
    expect_error(400, "/v1/chat/completions", "[1, 2]", "JSON object");
    expect_error(400, "/v1/chat/completions", "{}", "'messages'");
    expect_error(
        400,
        "/v1/chat/completions",
        r#"{"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}"#,
        "'temperature'",
    );
    expect_error(
        400,
        "/v1/chat/completions",
        r#"{"messages": [{"role": "user", "content": "hi"}], "max_tokens": "many"}"#,
        "'max_tokens'",
    );
    expect_error(
        400,
        "/v1/chat/completions",
        r#"{"messages": [{"role": "user", "content": "hi"}], "n": 0}"#,
        "'n'",
    );
    expect_error(
        400,
        "/v1/chat/completions",
        r#"{"messages": "hi"}"#,
        "'messages'",
    );
    expect_error(
        400,
        "/v1/chat/completions",
        r#"{"messages": [{"role": "user", "content": "hi"}], "top_p": 7}"#,
        "'top_p'",
    );
    let long = "hello ".repeat(1200);
    expect_error(
        400,
        "/v1/completions",
        &json!({ "prompt": long }).to_string(),
        "does not fit the context",
    );
    expect_error(400, "/v1/completions", r#"{"prompt": 5}"#, "'prompt'");
    expect_error(
        400,
        "/detokenize",
        r#"{"tokens": [99999999]}"#,
        "not a token id",
    );
    expect_error(404, "/v1/nope", "{}", "no such endpoint");
    let huge = format!("{{\"prompt\": \"{}\"}}", "a".repeat(2 << 20));
    expect_error(413, "/v1/completions", &huge, "larger than");
    // API key: required everywhere but /health and /v1/models.
    let (st, text) = answer(ureq::get(&format!("{}/props", s.base)).call());
    assert_eq!(st, 401, "{text}");
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["error"]["type"],
        "authentication_error"
    );
    let (st, _) = answer(
        ureq::post(&format!("{}/v1/completions", s.base))
            .set("Authorization", "Bearer wrong")
            .send_string("{}"),
    );
    assert_eq!(st, 401);
    let (st, _) = answer(ureq::get(&format!("{}/health", s.base)).call());
    assert_eq!(st, 200);
    let (st, _) = answer(ureq::get(&format!("{}/v1/models", s.base)).call());
    assert_eq!(st, 200);
    // Still serving after all that.
    let r = s.ok("/v1/completions", &creq);
    assert_eq!(r["choices"][0]["text"], ctext.as_str());
}

/// llama.cpp's test_speculative expectation through the API: the output with a drafter equals
/// the output without, for two draft lengths (the CLI tests cover more), greedy and seeded sampling. `--verify exact`
/// against `--batch-invariant` plain decoding (docs: both compute every row as one-token steps).
#[test]
fn speculative_output_equals_plain_output() {
    let (Some(target), Some(draft)) = (
        common::model(common::MODEL_15B),
        common::model(common::MODEL_05B),
    ) else {
        return;
    };
    let requests: Vec<Value> = vec![
        chat_sys(
            "Write a Python function that checks whether a number is prime.",
            32,
        ),
        json!({"prompt": "def quicksort(arr):", "max_tokens": 32, "temperature": 0}),
        json!({"prompt": "The three primary colors are", "max_tokens": 24,
               "temperature": 0.8, "seed": 42}),
        // A follow-up sharing the first prompt's prefix: the target's and the draft model's
        // prompt caches are reused, and the output stays the same.
        json!({"messages": [{"role": "system", "content": SYSTEM},
                            {"role": "user", "content": "Write a Python function that checks whether a number is prime."},
                            {"role": "assistant", "content": "def is_prime(n):"},
                            {"role": "user", "content": "Add a docstring."}],
               "max_tokens": 12, "temperature": 0}),
    ];
    let run = |s: &Server| -> Vec<String> {
        requests
            .iter()
            .map(|req| {
                if req.get("messages").is_some() {
                    let r = s.ok("/v1/chat/completions", req);
                    r["choices"][0]["message"]["content"]
                        .as_str()
                        .unwrap()
                        .to_string()
                } else {
                    let r = s.ok("/v1/completions", req);
                    r["choices"][0]["text"].as_str().unwrap().to_string()
                }
            })
            .collect()
    };
    let plain = {
        let s = Server::start(&target, &["-c", "512", "--batch-invariant"]);
        run(&s)
    };
    let draft = draft.to_string_lossy().into_owned();
    for n_max in ["2", "7"] {
        let s = Server::start(
            &target,
            &[
                "-c",
                "512",
                "-md",
                &draft,
                "--verify",
                "exact",
                "--spec-draft-n-max",
                n_max,
            ],
        );
        assert_eq!(run(&s), plain, "draft model, --spec-draft-n-max {n_max}");
        // Speculation really ran (and on the sampled request too).
        let m = s.metrics();
        let drafted: f64 = m
            .lines()
            .find_map(|l| l.strip_prefix("llamacpp:spec_decode_num_draft_tokens_total "))
            .unwrap()
            .parse()
            .unwrap();
        assert!(drafted > 0.0, "{m}");
    }
    let s = Server::start(
        &target,
        &["-c", "512", "--spec", "ngram", "--verify", "exact"],
    );
    assert_eq!(run(&s), plain, "n-gram drafter");
    drop(s);
    // A (random-weight) DFlash drafter: zero acceptance, but the whole speculative path runs,
    // in two slots at once.
    let dir = tempfile::tempdir().unwrap();
    let dflash = dir.path().join("dflash.gguf");
    let (code, _, err) = common::blockspec(&[
        "synth",
        "--dflash-for",
        target.to_str().unwrap(),
        "-o",
        dflash.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let s = Server::start(
        &target,
        &[
            "-c",
            "1024",
            "-np",
            "2",
            "--draft",
            dflash.to_str().unwrap(),
            "--verify",
            "exact",
        ],
    );
    let outs: Vec<String> = std::thread::scope(|sc| {
        let a = sc.spawn(|| run(&s));
        let b = sc.spawn(|| run(&s));
        let (a, b) = (a.join().unwrap(), b.join().unwrap());
        assert_eq!(a, b);
        a
    });
    assert_eq!(outs, plain, "DFlash drafter");
    // The follow-up turn right after its first turn: the target's KV and the drafter's
    // context are reused, and the output is still the plain one.
    s.ok("/v1/chat/completions", &requests[0]);
    let r = s.ok("/v1/chat/completions", &requests[3]);
    assert!(
        r["timings"]["cache_n"].as_u64().unwrap() > 0,
        "no prompt reuse with DFlash: {r}"
    );
    assert_eq!(r["choices"][0]["message"]["content"], plain[3].as_str());
    let (_, props) = s.get("/props");
    assert!(props.contains("draft-dflash"), "{props}");
}

/// -np 2 with requests in flight at the same time gives what one-at-a-time requests give.
#[test]
fn parallel_slots_equal_serial() {
    let Some(m) = common::model(common::MODEL_05B) else {
        return;
    };
    let s = Server::start(&m, &["-c", "1024", "-np", "2", "--spec", "ngram"]);
    let (_, props) = s.get("/props");
    assert_eq!(
        serde_json::from_str::<Value>(&props).unwrap()["total_slots"],
        2
    );
    let prompts = [
        "def is_even(n):",
        "class Stack:",
        "import numpy as np\n",
        "# Sort a list of words by length\n",
    ];
    let req =
        |p: &str| json!({"prompt": p, "max_tokens": 16, "temperature": 0, "cache_prompt": false});
    let serial: Vec<String> = prompts
        .iter()
        .map(|p| {
            s.ok("/v1/completions", &req(p))["choices"][0]["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let parallel: Vec<(String, u64)> = std::thread::scope(|sc| {
        let handles: Vec<_> = prompts
            .iter()
            .map(|p| {
                let s = &s;
                let body = req(p);
                sc.spawn(move || {
                    let r = s.ok("/v1/completions", &body);
                    (
                        r["choices"][0]["text"].as_str().unwrap().to_string(),
                        r["id_slot"].as_u64().unwrap(),
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let texts: Vec<String> = parallel.iter().map(|(t, _)| t.clone()).collect();
    assert_eq!(texts, serial);
    // Both slots served.
    assert!(parallel.iter().any(|(_, slot)| *slot == 0));
    assert!(parallel.iter().any(|(_, slot)| *slot == 1));

    // Two conversations, one request at a time: each follow-up goes back to the slot that
    // holds its conversation and reuses the cached prefix.
    let first = |q: &str| chat_sys(q, 8);
    let follow_up = |q: &str, a: &Value| {
        json!({"messages": [{"role": "system", "content": SYSTEM},
                            {"role": "user", "content": q},
                            {"role": "assistant", "content": a["choices"][0]["message"]["content"]},
                            {"role": "user", "content": "And in Rust?"}],
               "max_tokens": 8, "temperature": 0})
    };
    let (qa, qb) = (
        "How do I reverse a list in Python?",
        "How do I read a file in Python?",
    );
    let a1 = s.ok("/v1/chat/completions", &first(qa));
    let b1 = s.ok("/v1/chat/completions", &first(qb));
    assert_ne!(
        a1["id_slot"], b1["id_slot"],
        "two conversations on one slot"
    );
    let a2 = s.ok("/v1/chat/completions", &follow_up(qa, &a1));
    let b2 = s.ok("/v1/chat/completions", &follow_up(qb, &b1));
    for (turn1, turn2) in [(&a1, &a2), (&b1, &b2)] {
        assert_eq!(turn2["id_slot"], turn1["id_slot"]);
        let cached = turn2["usage"]["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap();
        // The exact cache reuses the first turn's prompt in whole 64-token chunks.
        let whole = turn1["usage"]["prompt_tokens"].as_u64().unwrap() / 64 * 64;
        assert!(whole > 0 && cached >= whole, "{turn2}");
    }
}

/// A client that disconnects mid-stream frees its slot; requests beyond the slot and the queue
/// get 503; the server keeps serving.
#[test]
fn cancel_frees_the_slot_and_full_queue_is_503() {
    let Some(m) = common::model(common::MODEL_05B) else {
        return;
    };
    let s = Server::start(&m, &["-c", "4096", "--queue-size", "1"]);
    let long = json!({"prompt": "Once upon a time", "max_tokens": 3000, "temperature": 0,
                      "ignore_eos": true, "stream": true});
    // Hold the slot: read the first chunk of a long stream.
    let resp = s
        .request("POST", "/v1/completions")
        .send_string(&long.to_string())
        .unwrap();
    let mut reader = BufReader::new(resp.into_reader());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("data: "), "{line}");
    // One request waits in the queue (from another thread)...
    let queued = std::thread::scope(|sc| {
        let waiting = sc.spawn(|| {
            s.ok(
                "/v1/completions",
                &json!({"prompt": "def add(a, b):", "max_tokens": 8, "temperature": 0}),
            )
        });
        // ...until it is counted as deferred; then the next one is refused.
        let t0 = Instant::now();
        while !s.metrics().contains("llamacpp:requests_deferred 1") {
            assert!(t0.elapsed() < Duration::from_secs(30), "{}", s.metrics());
            std::thread::sleep(Duration::from_millis(20));
        }
        let refused = s
            .request("POST", "/v1/completions")
            .send_string(&json!({"prompt": "x", "max_tokens": 2}).to_string());
        let Err(ureq::Error::Status(503, resp)) = refused else {
            panic!("a request beyond the queue was not refused: {refused:?}");
        };
        // Every 503 says when to come back.
        assert_eq!(resp.header("retry-after"), Some("1"));
        let v: Value = resp.into_json().expect("JSON error");
        assert_eq!(v["error"]["type"], "unavailable_error");
        // Disconnect the long stream: its generation stops and the queued request runs.
        let t_cancel = Instant::now();
        drop(reader);
        let r = waiting.join().unwrap();
        assert!(
            t_cancel.elapsed() < Duration::from_secs(30),
            "the cancelled generation kept the slot"
        );
        r
    });
    assert_eq!(queued["usage"]["completion_tokens"], 8);
    // Nothing left running.
    let t0 = Instant::now();
    while !s.metrics().contains("llamacpp:requests_processing 0") {
        assert!(t0.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(20));
    }
    let m = s.metrics();
    let predicted: f64 = m
        .lines()
        .find_map(|l| l.strip_prefix("llamacpp:tokens_predicted_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        predicted < 3000.0,
        "the cancelled stream ran to its end: {m}"
    );

    // A non-streamed request whose client gives up is cancelled too.
    let impatient = ureq::AgentBuilder::new()
        .timeout(Duration::from_millis(1500))
        .build();
    let body = json!({"prompt": "Once upon a time", "max_tokens": 3000, "temperature": 0,
                      "ignore_eos": true});
    let r = impatient
        .post(&format!("{}/v1/completions", s.base))
        .send_string(&body.to_string());
    assert!(r.is_err(), "a 3000-token request finished within 1.5 s?");
    let t0 = Instant::now();
    while !s.metrics().contains("llamacpp:requests_processing 0") {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the abandoned request kept its slot"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let r = s.ok(
        "/v1/completions",
        &json!({"prompt": "def add(a, b):", "max_tokens": 4, "temperature": 0}),
    );
    assert_eq!(r["usage"]["completion_tokens"], 4);
}

/// reasoning_content from a template that opens <think>, chat_template_kwargs turning it off,
/// and Qwen-style tool calls (a tool round trip) in streamed and non-streamed replies.
#[test]
fn reasoning_and_tool_calls() {
    let Some(m) = common::model(common::MODEL_15B) else {
        return;
    };
    let template = common::fixture("templates/think.jinja");
    let s = Server::start(
        &m,
        &[
            "-c",
            "1024",
            "--spec",
            "ngram",
            "--chat-template-file",
            template.to_str().unwrap(),
        ],
    );
    let mut req = chat("What is 2 + 3?", 16);
    let r = s.ok("/v1/chat/completions", &req);
    let msg = &r["choices"][0]["message"];
    let reasoning = msg["reasoning_content"].as_str().unwrap().to_string();
    assert!(!reasoning.is_empty(), "{r}");
    assert!(!reasoning.contains("<think>"));
    req["stream"] = json!(true);
    let ev = s.stream("/v1/chat/completions", &req);
    assert_eq!(stream_field(&ev, "reasoning_content").trim_end(), reasoning);
    // enable_thinking=false: the template closes <think> at once; no reasoning.
    let mut off = chat("What is 2 + 3?", 16);
    off["chat_template_kwargs"] = json!({"enable_thinking": false});
    let r = s.ok("/v1/chat/completions", &off);
    let msg = &r["choices"][0]["message"];
    assert!(msg.get("reasoning_content").is_none(), "{r}");
    assert!(!msg["content"].as_str().unwrap().is_empty());
    drop(s);

    // Tool calls with the model's own template.
    let s = Server::start(&m, &["-c", "1024", "--spec", "ngram"]);
    let tools = json!([{"type": "function", "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]}}}]);
    let ask = json!({"role": "user", "content": "What is the weather in Paris?"});
    let req = json!({"messages": [ask], "tools": tools, "max_tokens": 64, "temperature": 0});
    let r = s.ok("/v1/chat/completions", &req);
    let choice = &r["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{r}");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args["city"], "Paris");
    // Streamed: the same call as a tool_calls delta.
    let mut sreq = req.clone();
    sreq["stream"] = json!(true);
    let ev = s.stream("/v1/chat/completions", &sreq);
    let calls: Vec<&Value> = ev
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["tool_calls"].as_array())
        .flatten()
        .collect();
    assert_eq!(calls.len(), 1, "{ev:?}");
    assert_eq!(calls[0]["function"], call["function"]);
    assert_eq!(calls[0]["index"], 0);
    assert_eq!(
        ev[ev.len() - 2]["choices"][0]["finish_reason"],
        "tool_calls"
    );
    // tool_choice "none": no tools offered, plain content.
    let mut none = req.clone();
    none["tool_choice"] = json!("none");
    let r = s.ok("/v1/chat/completions", &none);
    assert!(
        r["choices"][0]["message"].get("tool_calls").is_none(),
        "{r}"
    );
    // Round trip: the call and its result go back; the model answers in text.
    let follow = json!({
        "messages": [
            ask,
            {"role": "assistant", "content": null, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call["id"], "content": "{\"temperature_c\": 18, \"sky\": \"sunny\"}"},
        ],
        "tools": tools, "max_tokens": 32, "temperature": 0,
    });
    // (What a 1.5B coder model says next is not checked; that the conversation with the call
    // and its result renders and is answered is.)
    let r = s.ok("/v1/chat/completions", &follow);
    let first_prompt = s.ok("/v1/chat/completions", &req)["usage"]["prompt_tokens"].clone();
    assert!(
        r["usage"]["prompt_tokens"].as_u64() > first_prompt.as_u64(),
        "{r}"
    );
    assert_eq!(r["choices"][0]["message"]["role"], "assistant");
}

/// A hybrid target (the tiny random Qwen3.5 fixture) behind the server. Its recurrent state
/// cannot be cut back like KV cells, so a prompt-cache hit may only resume from a state
/// checkpoint at exactly the reused length (with the exact cache of the default `--verify auto`:
/// one after the last whole 64-token chunk of each prompt), otherwise the prompt is recomputed;
/// either way the reply equals an uncached request's.
#[test]
fn hybrid_prompt_cache_resumes_only_from_checkpoints() {
    let model = common::fixture("hybrid/qwen35/model-f32.gguf");
    let mut s = Server::start(&model, &["-c", "512", "-np", "1", "-t", "2"]);
    let req = |p: &str, cache: bool| json!({"prompt": p, "n_predict": 12, "temperature": 0, "cache_prompt": cache});
    let tokens = |s: &Server, p: &str| -> Vec<u64> {
        s.ok("/tokenize", &json!({"content": p}))["tokens"]
            .as_array()
            .expect("tokens")
            .iter()
            .map(|t| t.as_u64().expect("id"))
            .collect()
    };
    let p1 = "The quick brown fox jumps over the lazy dog.\n".repeat(8);
    let p1 = p1.as_str();
    let p2 = format!("{p1}It was not amused at all, and it said so.");
    let p3 = "The quick brown cat sat down and slept.";
    let (t1, t2) = (tokens(&s, p1), tokens(&s, &p2));
    assert!(t2.starts_with(&t1), "precondition: p2's tokens extend p1's");

    let first = s.ok("/completion", &req(p1, true));
    assert_eq!(first["timings"]["cache_n"], 0, "{first}");
    // p2 extends p1: resumed from the checkpoint after p1's last whole chunk (p1's last token
    // is evaluated on its own, after the chunks).
    let second = s.ok("/completion", &req(&p2, true));
    let whole = (t1.len() as u64 - 1) / 64 * 64;
    assert!(
        whole > 0,
        "precondition: p1 ({} tokens) fills a chunk",
        t1.len()
    );
    assert_eq!(
        second["timings"]["cache_n"].as_u64(),
        Some(whole),
        "{second}"
    );
    let fresh2 = s.ok("/completion", &req(&p2, false));
    assert_eq!(fresh2["timings"]["cache_n"], 0);
    assert_eq!(second["content"], fresh2["content"]);
    // p3 shares only "The quick brown" with what the slot holds, and no checkpoint is there:
    // the whole prompt is recomputed, never resumed beside a state from another position.
    let third = s.ok("/completion", &req(p3, true));
    assert_eq!(third["timings"]["cache_n"], 0, "{third}");
    let fresh3 = s.ok("/completion", &req(p3, false));
    assert_eq!(third["content"], fresh3["content"]);
    s.check_alive();
}

/// DDTree behind the server (`--spec-tree`, the real 1.5B and the shipped DFlash drafter,
/// `--verify exact`): replies equal the plain server's, a tool call comes out whole (streamed
/// and not), and the speculation counters count the trees' nodes.
#[test]
fn tree_verification_keeps_replies_and_tool_calls() {
    let Some(m) = common::model(common::MODEL_15B) else {
        return;
    };
    let drafter =
        common::repo_file("training/drafters/qwen2.5-coder-1.5b-instruct-dflash-q8_0.gguf");
    let tools = json!([{"type": "function", "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]}}}]);
    let ask = json!({"role": "user", "content": "What is the weather in Paris?"});
    let tool_req = json!({"messages": [ask], "tools": tools, "max_tokens": 32, "temperature": 0});
    let code_req = chat("Write a Python function that reverses a string.", 24);
    let run = |s: &Server| -> (Value, Value) {
        let t = s.ok("/v1/chat/completions", &tool_req);
        let c = s.ok("/v1/chat/completions", &code_req);
        (t, c)
    };
    let (plain_tool, plain_code) = {
        let s = Server::start(&m, &["-c", "1024", "--batch-invariant"]);
        run(&s)
    };
    let budget = 6;
    let s = Server::start(
        &m,
        &[
            "-c",
            "1024",
            "--draft",
            drafter.to_str().unwrap(),
            "--verify",
            "exact",
            "--spec-tree",
            &budget.to_string(),
        ],
    );
    let (tool, code) = run(&s);
    // (Call ids are fresh per reply.)
    let (msg, want) = (
        &tool["choices"][0]["message"],
        &plain_tool["choices"][0]["message"],
    );
    assert_eq!(
        msg["content"], want["content"],
        "tool-call reply with trees"
    );
    assert_eq!(
        msg["tool_calls"][0]["function"], want["tool_calls"][0]["function"],
        "tool call with trees"
    );
    assert_eq!(tool["choices"][0]["finish_reason"], "tool_calls", "{tool}");
    let call = &tool["choices"][0]["message"]["tool_calls"][0];
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args["city"], "Paris");
    assert_eq!(
        code["choices"][0]["message"]["content"], plain_code["choices"][0]["message"]["content"],
        "code reply with trees"
    );
    // Every tree step offers `budget` nodes; accepted ones are among them.
    let t = &code["timings"];
    let (drafted, accepted) = (
        t["draft_n"].as_u64().unwrap(),
        t["draft_n_accepted"].as_u64().unwrap(),
    );
    assert!(drafted > 0 && drafted % budget == 0, "{t}");
    assert!(accepted > 0 && accepted <= drafted, "{t}");
    // Every speculative step was a tree of `budget` nodes; tau is predicted_n / target_steps.
    let tree_steps = t["tree_steps"].as_u64().unwrap();
    assert_eq!(t["tree_nodes"].as_u64(), Some(drafted), "{t}");
    assert_eq!(tree_steps * budget, drafted, "{t}");
    assert_eq!(t["spec_steps"].as_u64(), Some(tree_steps), "{t}");
    assert!(t["target_steps"].as_u64().unwrap() >= tree_steps, "{t}");
    // Streamed: the same call as one tool_calls delta.
    let mut sreq = tool_req.clone();
    sreq["stream"] = json!(true);
    let ev = s.stream("/v1/chat/completions", &sreq);
    let calls: Vec<&Value> = ev
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["tool_calls"].as_array())
        .flatten()
        .collect();
    assert_eq!(calls.len(), 1, "{ev:?}");
    assert_eq!(calls[0]["function"], call["function"]);
}

fn tiny_model() -> std::path::PathBuf {
    common::fixture("tiny/qwen3/model-f32.gguf")
}

/// Write `bytes` one at a time, `gap` apart, reading what comes back; returns what came back
/// and when the server closed the connection (None: it never did, all bytes sent).
fn trickle(stream: &mut TcpStream, bytes: &[u8], gap: Duration) -> (Vec<u8>, Option<Duration>) {
    stream.set_read_timeout(Some(gap)).unwrap();
    let t0 = Instant::now();
    let mut got = Vec::new();
    for &b in bytes {
        if stream.write_all(&[b]).is_err() {
            return (got, Some(t0.elapsed()));
        }
        let mut buf = [0u8; 4096];
        match stream.read(&mut buf) {
            Ok(0) => return (got, Some(t0.elapsed())),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return (got, Some(t0.elapsed())),
        }
    }
    (got, None)
}

/// Slow clients (issue 19): a request whose headers, or whose body, arrive a byte at a time is
/// cut off after --timeout (the body with a 408), and an idle connection is closed too.
#[test]
fn slow_clients_are_cut_off() {
    let s = Server::start(&tiny_model(), &["-c", "128", "--timeout", "1"]);
    let addr = s.base.trim_start_matches("http://").to_string();
    let gap = Duration::from_millis(200);
    // 60 bytes at 5 per second would take 12 s; the server must close it after about 1 s.
    let head = b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n\r\n";
    let mut c = TcpStream::connect(&addr).unwrap();
    let (_, closed) = trickle(&mut c, head, gap);
    let t = closed.expect("slow headers were never cut off");
    assert!(t < Duration::from_secs(6), "cut off only after {t:?}");
    // Headers at once, then the body a byte every 200 ms: 408 naming --timeout.
    let mut c = TcpStream::connect(&addr).unwrap();
    c.write_all(head).unwrap();
    let (got, closed) = trickle(&mut c, &[b' '; 40], gap);
    let t = closed.expect("a slow body was never cut off");
    assert!(t < Duration::from_secs(6), "cut off only after {t:?}");
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert!(got.contains("--timeout"), "{got}");
    // A connection that sends nothing is closed as well.
    let mut c = TcpStream::connect(&addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let t0 = Instant::now();
    let n = c.read(&mut [0u8; 16]).unwrap_or(0);
    assert_eq!(n, 0);
    assert!(t0.elapsed() < Duration::from_secs(6), "{:?}", t0.elapsed());
    // The server still answers.
    let (st, _) = s.get("/health");
    assert_eq!(st, 200);
}

/// One raw keep-alive `GET /health`: the response's head and body.
fn raw_health(addr: &str) -> (TcpStream, String) {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    // Until the whole (small) response is in: head, blank line, and a JSON body.
    while !String::from_utf8_lossy(&got).trim_end().ends_with('}') {
        match c.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    (c, String::from_utf8_lossy(&got).into_owned())
}

/// The connection cap: connections beyond --max-connections are answered 503 with Retry-After
/// and closed; once one closes, a new one is served again.
#[test]
fn connections_beyond_the_cap_get_503() {
    let s = Server::start(&tiny_model(), &["-c", "128", "--max-connections", "3"]);
    let addr = s.base.trim_start_matches("http://").to_string();
    // The helper's HTTP client may keep one connection of its own open.
    let mut held = Vec::new();
    let refused = loop {
        let (c, resp) = raw_health(&addr);
        if resp.starts_with("HTTP/1.1 200") {
            held.push(c);
            assert!(held.len() <= 3, "more than 3 connections served at once");
            continue;
        }
        break resp;
    };
    assert!(
        held.len() >= 2,
        "refused with {} open: {refused}",
        held.len()
    );
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("retry-after: 1"), "{refused}");
    assert!(refused.contains("--max-connections"), "{refused}");
    drop(held.pop());
    let t0 = Instant::now();
    loop {
        let (_c, resp) = raw_health(&addr);
        if resp.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "{resp}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Requests users send by mistake or by habit (issue 19): unknown roles and tool_choice without
/// tools are 400s naming the field; a token limit beyond the context is capped at it (as
/// llama-server); 0 generates nothing; an out-of-range limit names the field and the range.
#[test]
fn loose_request_edges() {
    let s = Server::start(&tiny_model(), &["-c", "128"]);
    let user = json!([{"role": "user", "content": "hi"}]);
    let expect_400 = |path: &str, body: Value, needles: &[&str]| {
        let (st, v) = s.post(path, &body);
        assert_eq!(st, 400, "{body}: {v}");
        for n in needles {
            assert!(error_message(&v).contains(n), "{body}: {v} lacks {n:?}");
        }
    };
    let chat = "/v1/chat/completions";
    expect_400(
        chat,
        json!({"messages": [{"role": "wizard", "content": "hi"}]}),
        &["'messages[0].role'", "\"wizard\"", "user"],
    );
    expect_400(
        chat,
        json!({"messages": [{"role": "user", "content": "a"}, {"content": "b"}]}),
        &["'messages[1]' has no 'role'"],
    );
    expect_400(
        chat,
        json!({"messages": user, "tool_choice": "required"}),
        &["'tool_choice'", "no 'tools'"],
    );
    expect_400(
        chat,
        json!({"messages": user, "tool_choice": "required", "tools": []}),
        &["'tool_choice'", "no 'tools'"],
    );
    expect_400(
        chat,
        json!({"messages": user,
               "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}),
        &["'tool_choice'", "get_weather", "no 'tools'"],
    );
    let big = 9223372036854775808u64; // 2**63
    expect_400(
        chat,
        json!({"messages": user, "max_tokens": big}),
        &["'max_tokens' must be between -1 and 2147483647"],
    );
    expect_400(
        "/completion",
        json!({"prompt": "hi", "n_predict": big}),
        &["'n_predict' must be between"],
    );
    // Accepted: tool_choice auto without tools, the developer role; 0 tokens: nothing.
    let r = s.ok(
        chat,
        &json!({"messages": [{"role": "developer", "content": "Be brief."},
                             {"role": "user", "content": "hi"}],
                "tool_choice": "auto", "max_tokens": 0}),
    );
    assert_eq!(r["choices"][0]["message"]["content"], "");
    assert_eq!(r["choices"][0]["finish_reason"], "length");
    assert_eq!(r["usage"]["completion_tokens"], 0);
    let r = s.ok("/completion", &json!({"prompt": "hi", "n_predict": 0}));
    assert_eq!(r["content"], "");
    assert_eq!(r["tokens_predicted"], 0);
    assert_eq!(r["stop_type"], "limit");
    let ev = s.stream(
        "/v1/completions",
        &json!({"prompt": "hi", "max_tokens": 0, "stream": true}),
    );
    assert_eq!(ev.len(), 2, "{ev:?}");
    assert_eq!(ev[0]["choices"][0]["text"], "");
    assert_eq!(ev[0]["choices"][0]["finish_reason"], "length");
    assert_eq!(ev[1], "[DONE]");
    // More than the context (128): capped, generation ends where the context is full.
    let r = s.ok(
        "/v1/completions",
        &json!({"prompt": "hi", "max_tokens": 100000, "ignore_eos": true, "temperature": 0}),
    );
    assert_eq!(r["choices"][0]["finish_reason"], "length");
    let prompt = r["usage"]["prompt_tokens"].as_u64().unwrap();
    let done = r["usage"]["completion_tokens"].as_u64().unwrap();
    // The context holds the prompt and all but the last token (sampled, never evaluated).
    assert_eq!(prompt + done - 1, 128, "{r}");
}
