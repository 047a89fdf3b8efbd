//! The rest of llama-server's and OpenAI's surface: `n` choices, `echo` and lists of prompts on
//! the completions endpoints, `GET /v1/models/{id}`, `GET /slots`, `POST /infill` (its prompt
//! layout against llama.cpp's `format_prompt_infill`), `POST /apply-template`, and embeddings
//! (the normed hidden state the logits are computed from).

mod common;

use blockspec::format::gguf::Gguf;
use blockspec::model::Model;
use blockspec::runtime::engine::{Engine, EngineConfig, Outputs};
use blockspec::server::infill::{infill_tokens, ExtraChunk, FimTokens};
use blockspec::text::tokenizer::Tokenizer;
use common::server::Server;
use serde_json::{json, Value};
use std::sync::Arc;

fn texts(r: &Value, field: &str) -> Vec<String> {
    r["choices"]
        .as_array()
        .expect("choices")
        .iter()
        .map(|c| {
            c.pointer(field)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        })
        .collect()
}

fn indices(r: &Value) -> Vec<u64> {
    r["choices"]
        .as_array()
        .expect("choices")
        .iter()
        .map(|c| c["index"].as_u64().expect("index"))
        .collect()
}

/// Streamed chunks' text per choice index (`field`: the pointer inside a choice).
fn streamed_by_index(events: &[Value], field: &str, n: usize) -> Vec<String> {
    let mut out = vec![String::new(); n];
    for e in events {
        for c in e["choices"].as_array().into_iter().flatten() {
            let i = c["index"].as_u64().expect("index") as usize;
            if let Some(t) = c.pointer(field).and_then(Value::as_str) {
                out[i].push_str(t);
            }
        }
    }
    out
}

fn error_message(v: &Value) -> String {
    v["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn bad(s: &Server, path: &str, mut body: Value, needle: &str) {
    // Should it be accepted after all, it ends soon.
    if body.get("max_tokens").is_none() {
        body["max_tokens"] = json!(2);
    }
    let (status, v) = s.post(path, &body);
    assert_eq!(status, 400, "{path} {body}: {v}");
    assert!(error_message(&v).contains(needle), "{path} {body}: {v}");
}

/// The embedding vector of an OpenAI embeddings reply item.
fn vector(item: &Value) -> Vec<f32> {
    item["embedding"]
        .as_array()
        .expect("embedding")
        .iter()
        .map(|x| x.as_f64().expect("float") as f32)
        .collect()
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

// The hidden state an embedding is read from is the one the lm_head multiplies: on tiny f32
// models, W (read from the GGUF file) times each row reproduces the engine's logits.
#[test]
fn hidden_states_reproduce_the_logits() {
    for (dir, head) in [("qwen3", "output.weight"), ("llama32", "token_embd.weight")] {
        let path = common::fixture(&format!("tiny/{dir}/model-f32.gguf"));
        let g = Gguf::open(&path).expect("open");
        let backend = Arc::new(ggml::Backend::cpu(2));
        let model = Arc::new(Model::load(&g, &backend, false).expect("load"));
        let (n_embd, n_vocab) = (model.hp.n_embd, model.hp.n_vocab);
        let cfg = EngineConfig {
            n_ctx: 128,
            n_ubatch: 8,
            type_k: ggml::Type::F32,
            type_v: ggml::Type::F32,
            capture_layers: vec![],
        };
        let mut e = Engine::new(model, backend, cfg).expect("engine");
        // 11 tokens: two chunks of the 8-token batch.
        let toks: Vec<u32> = (0..11).map(|i| (i * 37 + 5) % n_vocab as u32).collect();
        let rows = e.hidden_states(&toks).expect("hidden");
        assert_eq!(rows.len(), toks.len() * n_embd);
        e.reset();
        assert_eq!(
            e.hidden_states(&toks).unwrap(),
            rows,
            "{dir}: not deterministic"
        );
        e.reset();
        let logits = e.decode(&toks, Outputs::All).expect("decode");

        let t = g.tensor(head).expect("lm_head tensor");
        assert_eq!(t.ty, ggml::Type::F32, "{dir}");
        assert_eq!((t.ne[0] as usize, t.ne[1] as usize), (n_embd, n_vocab));
        let w: Vec<f32> = g
            .tensor_bytes(t)
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let mut worst = 0f32;
        for (ti, h) in rows.chunks(n_embd).enumerate() {
            let want = logits.row(ti);
            let scale = want.iter().fold(1f32, |m, x| m.max(x.abs()));
            for v in 0..n_vocab {
                let got = dot(&w[v * n_embd..(v + 1) * n_embd], h);
                worst = worst.max((got - want[v]).abs() / scale);
            }
        }
        assert!(
            worst < 1e-4,
            "{dir}: W.h differs from the logits by {worst} (relative)"
        );
        // Not trivially zero or constant.
        let norm: f32 = dot(&rows[..n_embd], &rows[..n_embd]).sqrt();
        assert!(norm > 1.0, "{dir}: |h| = {norm}");
        assert_ne!(rows[..n_embd], rows[n_embd..2 * n_embd]);
    }
}

/// Qwen2.5-Coder's FIM tokens (its tokenizer_config.json's added tokens).
const FIM_PREFIX: u32 = 151659;
const FIM_MIDDLE: u32 = 151660;
const FIM_SUFFIX: u32 = 151661;
const REPO_NAME: u32 = 151663;
const FILE_SEP: u32 = 151664;

/// llama.cpp's repo-level FIM prompt, written out from its `format_prompt_infill`:
/// `[REPO]myproject\n [SEP]{file}\n{text}... [SEP]filename\n [PRE]{prefix}{prompt} [SUF]{suffix} [MID]`
/// (plain text tokenized without special tokens; `prompt` with special-token text parsed).
fn expected_infill(
    tok: &Tokenizer,
    prefix: &str,
    suffix: &str,
    extra: &[(&str, &str)],
    prompt: &str,
) -> Vec<u32> {
    let enc = |s: &str| tok.encode(s, false, false).unwrap();
    let mut v = vec![REPO_NAME];
    v.extend(enc("myproject\n"));
    for (file, text) in extra {
        v.push(FILE_SEP);
        v.extend(enc(&format!("{file}\n")));
        v.extend(enc(text));
    }
    v.push(FILE_SEP);
    v.extend(enc("filename\n"));
    v.push(FIM_PREFIX);
    v.extend(enc(prefix));
    v.extend(tok.encode(prompt, false, true).unwrap());
    v.push(FIM_SUFFIX);
    v.extend(enc(suffix));
    v.push(FIM_MIDDLE);
    v
}

#[test]
fn infill_prompt_follows_llama_server() {
    let Some(path) = common::model(common::MODEL_05B) else {
        return;
    };
    let g = Gguf::open(&path).expect("open");
    let tok = Tokenizer::from_gguf(&g).expect("tokenizer");
    for (id, text) in [
        (FIM_PREFIX, "<|fim_prefix|>"),
        (FIM_MIDDLE, "<|fim_middle|>"),
        (FIM_SUFFIX, "<|fim_suffix|>"),
        (REPO_NAME, "<|repo_name|>"),
        (FILE_SEP, "<|file_sep|>"),
    ] {
        assert_eq!(tok.token_text(id), Some(text));
    }
    let fim = FimTokens::of(&tok);
    assert_eq!(
        (fim.pre, fim.suf, fim.mid, fim.rep, fim.sep),
        (
            Some(FIM_PREFIX),
            Some(FIM_SUFFIX),
            Some(FIM_MIDDLE),
            Some(REPO_NAME),
            Some(FILE_SEP)
        )
    );
    let chunk = |f: &str, t: &str| ExtraChunk {
        filename: f.into(),
        text: t.into(),
    };
    // Special-token text in the prefix stays text; in `prompt` it is the token.
    let prefix = "def add(a, b):\n    # <|fim_suffix|>\n";
    let got = infill_tokens(
        &tok,
        &fim,
        prefix,
        "\n\nprint(add(1, 2))\n",
        &[chunk("util.py", "X = 1\n"), chunk("b.py", "import util\n")],
        "    return<|endoftext|>",
        8192,
        -1,
    )
    .unwrap();
    let want = expected_infill(
        &tok,
        prefix,
        "\n\nprint(add(1, 2))\n",
        &[("util.py", "X = 1\n"), ("b.py", "import util\n")],
        "    return<|endoftext|>",
    );
    assert_eq!(got, want);
    assert_eq!(got.iter().filter(|&&t| t == FIM_SUFFIX).count(), 1);

    // Limits: the prefix keeps its last 1536 tokens (3/4 of llama-server's 2048 batch), the
    // suffix its first 512 - 2 - prompt; the extra context needs n_ctx - 2048 - 2 n_predict.
    let long: String = (0..2000).map(|i| format!("x{i} ")).collect();
    let got = infill_tokens(&tok, &fim, &long, &long, &[chunk("a", "y")], "", 2048, -1).unwrap();
    let p = tok.encode(&long, false, false).unwrap();
    assert!(p.len() > 1536);
    // Room for the extra context: 2048 - 2048 + 2 = 2 tokens, its last two.
    let extra_all = {
        let mut v = vec![REPO_NAME];
        v.extend(tok.encode("myproject\n", false, false).unwrap());
        v.push(FILE_SEP);
        v.extend(tok.encode("a\n", false, false).unwrap());
        v.extend(tok.encode("y", false, false).unwrap());
        v.push(FILE_SEP);
        v.extend(tok.encode("filename\n", false, false).unwrap());
        v
    };
    let mut want = extra_all[extra_all.len() - 2..].to_vec();
    want.push(FIM_PREFIX);
    want.extend_from_slice(&p[p.len() - 1536..]);
    want.push(FIM_SUFFIX);
    want.extend_from_slice(&p[..510]);
    want.push(FIM_MIDDLE);
    assert_eq!(got, want);
}

fn chat(content: &str, max_tokens: usize) -> Value {
    json!({
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0,
    })
}

#[test]
fn choices_echo_prompt_lists_slots_infill_templates_and_embeddings() {
    let Some(model) = common::model(common::MODEL_05B) else {
        return;
    };
    let s = Server::start(
        &model,
        &[
            "-c",
            "4096",
            "--alias",
            "org/coder-0.5b",
            "--embeddings",
            "--pooling",
            "last",
        ],
    );

    // --- n choices (chat) ---
    let mut req = chat("Name a color.", 6);
    req["n"] = json!(2);
    let r = s.ok("/v1/chat/completions", &req);
    assert_eq!(indices(&r), vec![0, 1]);
    let greedy = texts(&r, "/message/content");
    assert_eq!(greedy[0], greedy[1], "T=0: the choices are equal");
    assert!(!greedy[0].is_empty());
    let one = s.ok("/v1/chat/completions", &chat("Name a color.", 6));
    assert_eq!(
        r["usage"]["completion_tokens"].as_u64().unwrap(),
        2 * one["usage"]["completion_tokens"].as_u64().unwrap()
    );
    assert_eq!(r["usage"]["prompt_tokens"], one["usage"]["prompt_tokens"]);
    // Sampled with a seed: choice 0 is the seed's own sample, the others differ, and the whole
    // reply is reproducible.
    let mut sampled = chat("Write a random word.", 12);
    sampled["temperature"] = json!(1.5);
    sampled["seed"] = json!(7);
    let single = s.ok("/v1/chat/completions", &sampled);
    sampled["n"] = json!(4);
    let a = s.ok("/v1/chat/completions", &sampled);
    let b = s.ok("/v1/chat/completions", &sampled);
    let ta = texts(&a, "/message/content");
    assert_eq!(ta, texts(&b, "/message/content"), "same seed, same choices");
    assert_eq!(ta[0], texts(&single, "/message/content")[0]);
    assert!(
        ta.iter().any(|t| t != &ta[0]),
        "choices with derived seeds: {ta:?}"
    );
    // Streamed: every chunk names its choice; the same texts as the whole reply.
    sampled["stream"] = json!(true);
    sampled["stream_options"] = json!({"include_usage": true});
    let ev = s.stream("/v1/chat/completions", &sampled);
    assert_eq!(ev.last(), Some(&json!("[DONE]")));
    assert_eq!(streamed_by_index(&ev, "/delta/content", 4), ta);
    let finishes = ev
        .iter()
        .filter(|e| e["choices"][0]["finish_reason"].is_string())
        .count();
    assert_eq!(finishes, 4);
    let usage = &ev[ev.len() - 2]["usage"];
    assert_eq!(usage["completion_tokens"], a["usage"]["completion_tokens"]);
    for n in [json!(0), json!(17), json!("2"), json!(1.5)] {
        let mut req = chat("x", 2);
        req["n"] = n;
        bad(&s, "/v1/chat/completions", req, "'n'");
    }

    // --- /v1/completions: n, echo, lists of prompts ---
    let prompt = "def fibonacci(n):";
    let base = s.ok(
        "/v1/completions",
        &json!({"prompt": prompt, "max_tokens": 8, "temperature": 0}),
    );
    let plain = texts(&base, "/text")[0].clone();
    let echoed = s.ok(
        "/v1/completions",
        &json!({"prompt": prompt, "max_tokens": 8, "temperature": 0, "echo": true}),
    );
    assert_eq!(texts(&echoed, "/text")[0], format!("{prompt}{plain}"));
    let ev = s.stream(
        "/v1/completions",
        &json!({"prompt": prompt, "max_tokens": 8, "temperature": 0, "echo": true, "stream": true}),
    );
    assert_eq!(
        streamed_by_index(&ev, "/text", 1)[0],
        format!("{prompt}{plain}")
    );
    // echo with logprobs: the prompt's tokens scored too (the first has none), as
    // lm-eval-harness asks for log-likelihoods (max_tokens 0).
    let (_, toks) = s.post("/tokenize", &json!({"content": prompt}));
    let prompt_ids: Vec<u64> = toks["tokens"]
        .as_array()
        .expect("tokens")
        .iter()
        .map(|t| t.as_u64().expect("id"))
        .collect();
    let scored = s.ok(
        "/v1/completions",
        &json!({"prompt": prompt, "echo": true, "logprobs": 1, "max_tokens": 0}),
    );
    let lp = &scored["choices"][0]["logprobs"];
    assert_eq!(scored["choices"][0]["text"], prompt, "{scored}");
    let pieces: Vec<&str> = lp["tokens"]
        .as_array()
        .expect("tokens")
        .iter()
        .map(|t| t.as_str().expect("piece"))
        .collect();
    assert_eq!(pieces.len(), prompt_ids.len(), "{lp}");
    assert_eq!(pieces.concat(), prompt);
    let lps = lp["token_logprobs"].as_array().expect("token_logprobs");
    assert!(lps[0].is_null() && lp["top_logprobs"][0].is_null(), "{lp}");
    for v in &lps[1..] {
        let v = v.as_f64().expect("a logprob");
        assert!(v.is_finite() && v <= 0.0, "{lp}");
    }
    // The score of a token after the prompt equals its log-probability as the first generated
    // token, and the greedy token is the top candidate there.
    let first = s.ok(
        "/v1/completions",
        &json!({"prompt": prompt, "max_tokens": 1, "temperature": 0, "logprobs": 1}),
    );
    let gen_lp = &first["choices"][0]["logprobs"];
    let want = gen_lp["token_logprobs"][0].as_f64().expect("logprob");
    let (_, t) = s.post(
        "/tokenize",
        &json!({"content": first["choices"][0]["text"]}),
    );
    let mut ext = prompt_ids.clone();
    ext.push(t["tokens"][0].as_u64().expect("the generated token"));
    let scored = s.ok(
        "/v1/completions",
        &json!({"prompt": ext, "echo": true, "logprobs": 1, "max_tokens": 0}),
    );
    let lp = &scored["choices"][0]["logprobs"];
    let got = lp["token_logprobs"][prompt_ids.len()]
        .as_f64()
        .expect("logprob");
    assert!(
        (got - want).abs() < 1e-3,
        "scored {got} vs generated {want}"
    );
    let top = lp["top_logprobs"][prompt_ids.len()]
        .as_object()
        .expect("top");
    assert!(
        top.contains_key(gen_lp["tokens"][0].as_str().expect("piece")),
        "{top:?}"
    );
    // With generated tokens after the prompt: both kinds, in order.
    let both = s.ok(
        "/v1/completions",
        &json!({"prompt": prompt, "echo": true, "logprobs": 0, "max_tokens": 3, "temperature": 0}),
    );
    let n = both["choices"][0]["logprobs"]["token_logprobs"]
        .as_array()
        .expect("token_logprobs")
        .len();
    assert_eq!(
        n,
        prompt_ids.len() + both["usage"]["completion_tokens"].as_u64().unwrap() as usize
    );
    bad(
        &s,
        "/v1/completions",
        json!({"prompt": prompt, "echo": true, "logprobs": 2, "stream": true}),
        "'echo' with 'logprobs'",
    );
    // Token ids and a list of prompts times n: index = prompt * n + choice.
    let (_, toks) = s.post("/tokenize", &json!({"content": prompt}));
    let ids = toks["tokens"].clone();
    let by_ids = s.ok(
        "/v1/completions",
        &json!({"prompt": ids, "max_tokens": 8, "temperature": 0}),
    );
    assert_eq!(texts(&by_ids, "/text")[0], plain);
    let other = "class Stack:";
    let other_plain = texts(
        &s.ok(
            "/v1/completions",
            &json!({"prompt": other, "max_tokens": 8, "temperature": 0}),
        ),
        "/text",
    )[0]
    .clone();
    for prompts in [json!([prompt, other]), json!([ids, other])] {
        let r = s.ok(
            "/v1/completions",
            &json!({"prompt": prompts, "n": 2, "max_tokens": 8, "temperature": 0}),
        );
        assert_eq!(indices(&r), vec![0, 1, 2, 3]);
        assert_eq!(
            texts(&r, "/text"),
            vec![
                plain.clone(),
                plain.clone(),
                other_plain.clone(),
                other_plain.clone()
            ],
            "{prompts}"
        );
    }
    let (_, other_toks) = s.post("/tokenize", &json!({"content": other}));
    let r = s.ok(
        "/v1/completions",
        &json!({"prompt": [ids, other_toks["tokens"]], "max_tokens": 8, "temperature": 0}),
    );
    assert_eq!(texts(&r, "/text"), vec![plain.clone(), other_plain.clone()]);
    assert_eq!(
        r["usage"]["prompt_tokens"].as_u64().unwrap() as usize,
        ids.as_array().unwrap().len() + other_toks["tokens"].as_array().unwrap().len()
    );
    let ev = s.stream(
        "/v1/completions",
        &json!({"prompt": [prompt, other], "max_tokens": 8, "temperature": 0, "stream": true}),
    );
    assert_eq!(
        streamed_by_index(&ev, "/text", 2),
        vec![plain.clone(), other_plain]
    );
    bad(&s, "/v1/completions", json!({"prompt": []}), "'prompt'");
    bad(
        &s,
        "/v1/completions",
        json!({"prompt": [[1], 2]}),
        "'prompt[1]'",
    );
    bad(
        &s,
        "/v1/completions",
        json!({"prompt": [999999999]}),
        "'prompt'",
    );
    bad(
        &s,
        "/v1/completions",
        json!({"prompt": vec!["a"; 8], "n": 16}),
        "at most",
    );

    // llama.cpp's /completion: a list of prompts gives an array of results, in order.
    let (status, arr) = s.post(
        "/completion",
        &json!({"prompt": [prompt, ids], "n_predict": 8, "temperature": 0}),
    );
    assert_eq!(status, 200, "{arr}");
    let arr = arr.as_array().expect("an array for a list of prompts");
    assert_eq!(arr.len(), 2);
    for (i, r) in arr.iter().enumerate() {
        assert_eq!(r["index"], i);
        assert_eq!(r["content"], plain.as_str());
    }
    bad(&s, "/completion", json!({"prompt": "a", "n": 2}), "'n'");

    // --- /v1/models/{id} ---
    let (status, m) = s.get("/v1/models/org/coder-0.5b");
    assert_eq!(status, 200, "{m}");
    let m: Value = serde_json::from_str(&m).unwrap();
    assert_eq!(m["id"], "org/coder-0.5b");
    assert_eq!(m["object"], "model");
    let (status, m) = s.get(&format!("/v1/models/{}", common::MODEL_05B));
    assert_eq!(status, 200, "the file name names the model too: {m}");
    let (status, m) = s.get("/v1/models/gpt-4");
    assert_eq!(status, 404, "{m}");
    let m: Value = serde_json::from_str(&m).unwrap();
    assert_eq!(m["error"]["code"], 404);
    assert!(m["error"]["message"].as_str().unwrap().contains("gpt-4"));

    // --- /slots: the last task's parameters, never its prompt ---
    let secret = "The password is swordfish-42.";
    let mut req = chat(secret, 3);
    req["seed"] = json!(1234);
    req["temperature"] = json!(0.5);
    s.ok("/v1/chat/completions", &req);
    // The reply goes out just before the slot is marked idle.
    let t0 = std::time::Instant::now();
    let (status, text) = loop {
        let (status, text) = s.get("/slots");
        if status != 200 || !text.contains("\"is_processing\":true") || t0.elapsed().as_secs() > 5 {
            break (status, text);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(status, 200, "{text}");
    assert!(
        !text.contains("swordfish"),
        "/slots shows prompt text: {text}"
    );
    let slots: Value = serde_json::from_str(&text).unwrap();
    let slot = &slots[0];
    assert_eq!(slots.as_array().unwrap().len(), 1);
    assert_eq!(slot["id"], 0);
    assert_eq!(slot["n_ctx"], 4096);
    assert_eq!(slot["is_processing"], false);
    assert_eq!(slot["params"]["seed"], 1234);
    assert_eq!(slot["params"]["temperature"], 0.5);
    assert_eq!(slot["params"]["n_predict"], 3);
    assert!(slot["n_tokens_cached"].as_u64().unwrap() > 10, "{slot}");
    let (status, _) = s.get("/slots?fail_on_no_slot=1");
    assert_eq!(status, 200);

    // --- /infill: the prompt llama-server builds (its length; the layout is checked token for
    // token in infill_prompt_follows_llama_server) and a completion ---
    let body = json!({
        "input_prefix": "def add(a, b):\n",
        "input_suffix": "\n\nprint(add(1, 2))\n",
        "input_extra": [{"filename": "util.py", "text": "X = 1\n"}],
        "prompt": "    return",
        "n_predict": 6,
        "temperature": 0,
    });
    let r = s.ok("/infill", &body);
    let g = Gguf::open(&model).unwrap();
    let tok = Tokenizer::from_gguf(&g).unwrap();
    let want = expected_infill(
        &tok,
        "def add(a, b):\n",
        "\n\nprint(add(1, 2))\n",
        &[("util.py", "X = 1\n")],
        "    return",
    );
    assert_eq!(
        r["tokens_evaluated"].as_u64().unwrap() as usize,
        want.len(),
        "{r}"
    );
    assert!(r["content"].as_str().unwrap().contains('a'), "{r}");
    assert!(r["tokens_predicted"].as_u64().unwrap() > 0);
    bad(&s, "/infill", json!({"input_suffix": ""}), "'input_prefix'");
    bad(
        &s,
        "/infill",
        json!({"input_prefix": "", "input_suffix": "", "input_extra": [{"filename": "a"}]}),
        "'input_extra[0]'",
    );
    bad(
        &s,
        "/infill",
        json!({"input_prefix": "", "input_suffix": "", "input_extra": "x"}),
        "'input_extra'",
    );

    // --- /apply-template: the chat prompt, as the chat endpoint renders it ---
    let msgs = json!([{"role": "user", "content": "Hello there"}]);
    let t = s.ok("/apply-template", &json!({ "messages": msgs }));
    let prompt_text = t["prompt"].as_str().unwrap();
    assert!(
        prompt_text.contains("<|im_start|>user\nHello there<|im_end|>")
            && prompt_text.ends_with("<|im_start|>assistant\n"),
        "{prompt_text}"
    );
    let (_, toks) = s.post("/tokenize", &json!({"content": prompt_text}));
    let used = s.ok(
        "/v1/chat/completions",
        &json!({"messages": msgs, "max_tokens": 1}),
    );
    assert_eq!(
        used["usage"]["prompt_tokens"].as_u64().unwrap() as usize,
        toks["tokens"].as_array().unwrap().len()
    );
    let tools = json!([{"type": "function", "function": {"name": "get_weather_x",
        "parameters": {"type": "object", "properties": {}}}}]);
    let t = s.ok(
        "/apply-template",
        &json!({"messages": msgs, "tools": tools}),
    );
    assert!(t["prompt"].as_str().unwrap().contains("get_weather_x"));
    bad(&s, "/apply-template", json!({"messages": []}), "'messages'");

    // --- embeddings (pooling last, normalized) ---
    let before = s.ok("/v1/chat/completions", &chat("Say hi.", 6));
    let e = s.ok(
        "/v1/embeddings",
        &json!({"input": "hello world", "model": "x"}),
    );
    assert_eq!(e["object"], "list");
    assert_eq!(e["data"][0]["object"], "embedding");
    let v = vector(&e["data"][0]);
    assert_eq!(v.len(), 896);
    assert!((dot(&v, &v).sqrt() - 1.0).abs() < 1e-4);
    let (_, ht) = s.post("/tokenize", &json!({"content": "hello world"}));
    let n_hello = ht["tokens"].as_array().unwrap().len();
    assert_eq!(
        e["usage"]["prompt_tokens"].as_u64().unwrap() as usize,
        n_hello
    );
    let again = s.ok("/v1/embeddings", &json!({"input": "hello world"}));
    assert_eq!(vector(&again["data"][0]), v, "deterministic");
    let two = s.ok(
        "/v1/embeddings",
        &json!({"input": ["hello world", "the stock market fell sharply"]}),
    );
    assert_eq!(two["data"][1]["index"], 1);
    let (v0, v1) = (vector(&two["data"][0]), vector(&two["data"][1]));
    let max_diff = v0
        .iter()
        .zip(&v)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(max_diff < 1e-4, "the same text in a list: {max_diff}");
    assert!(
        dot(&v0, &v1) < 0.99,
        "different texts: cos {}",
        dot(&v0, &v1)
    );
    let by_ids = s.ok("/v1/embeddings", &json!({"input": ht["tokens"]}));
    assert_eq!(vector(&by_ids["data"][0]), v);
    // base64: the same floats, little-endian.
    let b64 = s.ok(
        "/v1/embeddings",
        &json!({"input": "hello world", "encoding_format": "base64"}),
    );
    let decoded = decode_base64(b64["data"][0]["embedding"].as_str().unwrap());
    let floats: Vec<f32> = decoded
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert_eq!(floats, v);
    // The native route: llama.cpp's shape, one pooled vector per input.
    let (status, native) = s.post("/embeddings", &json!({"content": "hello world"}));
    assert_eq!(status, 200, "{native}");
    assert_eq!(native[0]["index"], 0);
    let nv: Vec<f32> = native[0]["embedding"][0]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(nv, v);
    bad(
        &s,
        "/v1/embeddings",
        json!({"input": "x", "encoding_format": "int8"}),
        "'encoding_format'",
    );
    bad(&s, "/v1/embeddings", json!({"input": 5}), "'input'");
    bad(&s, "/v1/embeddings", json!({}), "'input'");
    // The slot that computed embeddings generates exactly as before.
    let after = s.ok("/v1/chat/completions", &chat("Say hi.", 6));
    assert_eq!(
        texts(&after, "/message/content"),
        texts(&before, "/message/content")
    );
}

fn decode_base64(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a') as u32 + 26,
            b'0'..=b'9' => (c - b'0') as u32 + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let mut out = Vec::new();
    for quad in s.as_bytes().chunks(4) {
        let pad = quad.iter().filter(|&&c| c == b'=').count();
        let n = quad
            .iter()
            .map(|&c| if c == b'=' { 0 } else { val(c) })
            .fold(0u32, |acc, x| acc << 6 | x);
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    out
}

// What a server without the features, or a model without FIM tokens or a pooling type, answers.
#[test]
fn disabled_and_unsupported_features() {
    let tiny = common::fixture("tiny/qwen3/model-f32.gguf");
    let s = Server::start(&tiny, &["-c", "256", "--no-slots"]);
    let (status, body) = s.get("/slots");
    assert_eq!(status, 501, "{body}");
    assert!(body.contains("--slots"), "{body}");
    for path in ["/v1/embeddings", "/embeddings"] {
        let (status, v) = s.post(path, &json!({"input": "a"}));
        assert_eq!(status, 501, "{v}");
        assert!(error_message(&v).contains("--embeddings"), "{v}");
    }
    let (status, v) = s.post(
        "/infill",
        &json!({"input_prefix": "a", "input_suffix": "b"}),
    );
    assert_eq!(status, 501, "{v}");
    assert!(
        error_message(&v).contains("Infill is not supported by this model"),
        "{v}"
    );
    drop(s);

    // --embeddings on a model without a pooling type: none, as llama-server: every token's
    // vector on the native route (not normalized), and the OpenAI route refuses.
    let s = Server::start(&tiny, &["-c", "256", "--embeddings"]);
    let (status, v) = s.post("/v1/embeddings", &json!({"input": "a"}));
    assert_eq!(status, 400, "{v}");
    assert!(error_message(&v).contains("Pooling type 'none'"), "{v}");
    let (_, toks) = s.post(
        "/tokenize",
        &json!({"content": "hello world", "add_special": true}),
    );
    let n = toks["tokens"].as_array().unwrap().len();
    let (status, v) = s.post("/embeddings", &json!({"content": "hello world"}));
    assert_eq!(status, 200, "{v}");
    let rows = v[0]["embedding"].as_array().unwrap();
    assert_eq!(rows.len(), n);
    let r0: Vec<f32> = rows[0]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(r0.len(), 64);
    assert!((dot(&r0, &r0).sqrt() - 1.0).abs() > 0.01, "not normalized");
    let (status, _) = s.get("/slots");
    assert_eq!(status, 200, "/slots is on by default");
}
