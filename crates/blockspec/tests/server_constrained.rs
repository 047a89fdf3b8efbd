//! Constrained output and `logit_bias` through the server: `response_format` (JSON Schema,
//! JSON object), llama.cpp's `json_schema` and GBNF `grammar`, forced tool calls
//! (`tool_choice`), on the chat, OpenAI completions and native endpoints, streamed and not, with
//! `n` choices, and with drafters (n-gram on the 0.5B, the shipped DFlash drafter on the 1.5B),
//! whose constrained output equals the plain constrained output. Bad grammars and biases are
//! 400s naming the field.

mod common;

use common::json_schema::validates;

use common::server::Server;
use serde_json::{json, Value};
use std::time::Instant;

/// Questions and the schema of their answers: a nested object, an enum, an array with
/// `minItems` (each as the top level of the answer or inside it).
fn schemas() -> Vec<(&'static str, Value)> {
    vec![
        (
            "Tell me about a fictional person.",
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
            }),
        ),
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
                "type": "array",
                "items": { "type": "string", "maxLength": 12 },
                "minItems": 3,
                "maxItems": 4
            }),
        ),
    ]
}

fn chat(question: &str) -> Value {
    json!({
        "messages": [{"role": "user", "content": question}],
        "temperature": 0,
        "max_tokens": 100,
    })
}

fn with_schema(mut body: Value, schema: &Value) -> Value {
    body["response_format"] = json!({
        "type": "json_schema",
        "json_schema": {"name": "answer", "strict": true, "schema": schema}
    });
    body
}

fn content(r: &Value) -> String {
    r["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_else(|| panic!("no content: {r}"))
        .to_string()
}

/// A streamed chat reply's content per choice.
fn streamed(events: &[Value], n: usize) -> Vec<String> {
    let mut out = vec![String::new(); n];
    for e in events {
        for c in e["choices"].as_array().into_iter().flatten() {
            let i = c["index"].as_u64().expect("index") as usize;
            if let Some(t) = c["delta"]["content"].as_str() {
                out[i].push_str(t);
            }
        }
    }
    out
}

/// The drafted tokens a reply's timings report.
fn drafted(r: &Value) -> u64 {
    r["timings"]["draft_n"].as_u64().unwrap_or(0)
}

fn bad(s: &Server, path: &str, body: Value, needle: &str) {
    let (status, v) = s.post(path, &body);
    assert_eq!(status, 400, "{path} {body}: {v}");
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains(needle), "{path} {body}: {msg}");
}

#[test]
fn json_schemas_grammars_logit_bias_and_errors_05b() {
    let Some(m) = common::model(common::MODEL_05B) else {
        return;
    };
    let t0 = Instant::now();
    let s = Server::start(&m, &["-c", "1024"]);
    let mut plain = Vec::new();
    for (question, schema) in schemas() {
        let body = with_schema(chat(question), &schema);
        let r = s.ok("/v1/chat/completions", &body);
        let text = content(&r);
        eprintln!("{question} -> {text:?}");
        assert_eq!(r["choices"][0]["finish_reason"], "stop", "{r}");
        validates(&schema, &text).unwrap_or_else(|e| panic!("{question}: {e}"));
        // Streamed: the same reply.
        let mut sb = body.clone();
        sb["stream"] = json!(true);
        let events = s.stream("/v1/chat/completions", &sb);
        assert_eq!(events.last(), Some(&json!("[DONE]")));
        assert_eq!(streamed(&events, 1)[0], text, "streamed");
        // Without the constraint the model answers otherwise: the check above can fail.
        let mut fb = chat(question);
        fb["max_tokens"] = json!(40);
        let free = content(&s.ok("/v1/chat/completions", &fb));
        eprintln!("  unconstrained -> {free:?}");
        assert!(
            validates(&schema, &free).is_err(),
            "{question}: the unconstrained reply already validates: {free:?}"
        );
        plain.push(text);
    }

    // n choices, sampled: each its own constraint state, each valid.
    let (question, schema) = &schemas()[2];
    let mut body = with_schema(chat(question), schema);
    body["n"] = json!(3);
    body["temperature"] = json!(1.0);
    body["seed"] = json!(5);
    let r = s.ok("/v1/chat/completions", &body);
    let choices = r["choices"].as_array().expect("choices");
    assert_eq!(choices.len(), 3);
    for c in choices {
        let text = c["message"]["content"].as_str().unwrap_or_default();
        validates(schema, text).unwrap_or_else(|e| panic!("n=3: {e}"));
    }
    body["stream"] = json!(true);
    for (i, text) in streamed(&s.stream("/v1/chat/completions", &body), 3)
        .iter()
        .enumerate()
    {
        validates(schema, text).unwrap_or_else(|e| panic!("n=3 streamed, choice {i}: {e}"));
    }

    // json_object (any object) and llama.cpp's top-level json_schema, on /v1/completions.
    let r = s.ok(
        "/v1/chat/completions",
        &json!({
            "messages": [{"role": "user", "content": "Describe a cat."}],
            "temperature": 0, "max_tokens": 60,
            "response_format": {"type": "json_object"}
        }),
    );
    let text = content(&r);
    if r["choices"][0]["finish_reason"] == "stop" {
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text:?}"));
        assert!(v.is_object(), "{text:?}");
    } else {
        assert!(text.trim_start().starts_with('{'), "{text:?}");
    }
    let dog = json!({
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 16}, "good": {"type": "boolean"}},
        "required": ["name", "good"],
        "additionalProperties": false
    });
    let r = s.ok(
        "/v1/completions",
        &json!({"prompt": "A dog, as JSON:", "temperature": 0, "max_tokens": 40, "json_schema": dog}),
    );
    let text = r["choices"][0]["text"].as_str().unwrap_or_default();
    validates(&dog, text).unwrap_or_else(|e| panic!("/v1/completions json_schema: {e}"));

    // GBNF on /completion, streamed and not.
    let gbnf = r#"root ::= " " answer "."
answer ::= "yes" | "no" | "maybe""#;
    let body = json!({"prompt": "Q: Is the sky green?\nA:", "temperature": 0, "n_predict": 20, "grammar": gbnf});
    let r = s.ok("/completion", &body);
    let text = r["content"].as_str().unwrap_or_default().to_string();
    assert!(
        [" yes.", " no.", " maybe."].contains(&text.as_str()),
        "{text:?}"
    );
    assert_eq!(r["stop_type"], "eos", "{r}");
    let mut sb = body.clone();
    sb["stream"] = json!(true);
    let got: String = s
        .stream("/completion", &sb)
        .iter()
        .filter_map(|e| e["content"].as_str())
        .collect();
    assert_eq!(got, text);
    let free = s.ok(
        "/completion",
        &json!({"prompt": "Q: Is the sky green?\nA:", "temperature": 0, "n_predict": 20}),
    );
    assert_ne!(free["content"].as_str(), Some(text.as_str()), "{free}");

    // logit_bias: banning the first token of the unbiased reply changes it; ids as strings,
    // llama-server's pair array and `false`, and text keys.
    let hello = json!({"messages": [{"role": "user", "content": "Say hello."}], "temperature": 0, "max_tokens": 6});
    let unbiased = s.ok("/v1/chat/completions", &hello);
    let first = s.ok("/tokenize", &json!({"content": content(&unbiased)}))["tokens"][0]
        .as_u64()
        .expect("a token");
    for bias in [
        json!({ first.to_string(): -100 }),
        json!([[first, false]]),
        json!([[first, -100.0]]),
    ] {
        let mut b = hello.clone();
        b["logit_bias"] = bias.clone();
        let r = s.ok("/v1/chat/completions", &b);
        assert_ne!(content(&r), content(&unbiased), "logit_bias {bias}: {r}");
        let again = s.ok("/tokenize", &json!({"content": content(&r)}))["tokens"][0].as_u64();
        assert_ne!(again, Some(first), "logit_bias {bias}");
    }
    // A positive bias on text (a word of one token) makes it the reply's first.
    let word = ["Yes", "Sure", "OK"]
        .into_iter()
        .find(|w| {
            s.ok("/tokenize", &json!({ "content": w }))["tokens"]
                .as_array()
                .map(Vec::len)
                == Some(1)
        })
        .expect("a one-token word");
    let mut b = hello.clone();
    b["logit_bias"] = json!({ word: 100 });
    let r = s.ok("/v1/chat/completions", &b);
    assert!(content(&r).starts_with(word), "{word}: {r}");
    assert!(!content(&unbiased).starts_with(word));

    // Bad input: 400 naming the field.
    let chat_path = "/v1/chat/completions";
    let q = chat("Hi");
    let mut b = q.clone();
    b["response_format"] = json!({"type": "json_schema", "json_schema": {"schema": {"type": "object", "properties": {"a": {"$ref": "#/definitions/none"}}}}});
    bad(&s, chat_path, b, "'response_format'");
    let mut b = q.clone();
    b["response_format"] = json!({"type": "yaml"});
    bad(&s, chat_path, b, "'response_format.type'");
    let mut b = q.clone();
    b["json_schema"] = json!("not a schema");
    bad(&s, chat_path, b, "'json_schema'");
    bad(
        &s,
        "/completion",
        json!({"prompt": "x", "grammar": "root ::= \"a\" undefined-rule"}),
        "'grammar': GBNF grammar, line 1",
    );
    bad(
        &s,
        "/completion",
        json!({"prompt": "x", "grammar": "root ::= \"a", "n_predict": 2}),
        "'grammar'",
    );
    bad(
        &s,
        "/v1/completions",
        json!({"prompt": "x", "grammar": "root ::= \"a\"", "json_schema": {"type": "object"}}),
        "both constrain",
    );
    for (bias, needle) in [
        (json!({"151936": 1}), "out of range"),
        (json!({"-1": 1}), "out of range"),
        (json!([[99999999999u64, 1]]), "out of range"),
        (json!({"15": "high"}), "must be a number"),
        (json!({"15": 101}), "between -100 and 100"),
        (json!([[1.5, 1]]), "not a token id"),
        (json!([15, 1]), "'logit_bias[0]'"),
        (json!("15"), "'logit_bias' must be"),
    ] {
        let mut b = q.clone();
        b["logit_bias"] = bias;
        bad(&s, chat_path, b, needle);
    }
    // A valid bias on the edge of the range is taken.
    let mut b = q.clone();
    b["max_tokens"] = json!(2);
    b["logit_bias"] = json!({"15": 100, "16": -100});
    s.ok(chat_path, &b);
    drop(s);

    // With an n-gram drafter: the same constrained replies (greedy, --verify auto).
    let s = Server::start(&m, &["-c", "1024", "--spec", "ngram"]);
    let mut n_drafted = 0;
    for ((question, schema), want) in schemas().into_iter().zip(&plain) {
        let r = s.ok(
            "/v1/chat/completions",
            &with_schema(chat(question), &schema),
        );
        n_drafted += drafted(&r);
        assert_eq!(&content(&r), want, "n-gram drafter: {question}");
    }
    eprintln!("n-gram drafts: {n_drafted}");
    assert!(n_drafted > 0, "the n-gram drafter never drafted");
    eprintln!(
        "0.5B constrained server tests: {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}

fn tools() -> Value {
    json!([
        {"type": "function", "function": {
            "name": "get_weather",
            "description": "The current weather in a city.",
            "parameters": {"type": "object", "properties": {
                "city": {"type": "string"},
                "unit": {"enum": ["celsius", "fahrenheit"]}
            }, "required": ["city", "unit"]}
        }},
        {"type": "function", "function": {
            "name": "get_time",
            "description": "The current time in a time zone.",
            "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]}
        }}
    ])
}

/// A reply's tool call, checked: a tool of `tools()` (`want`, if given) with JSON arguments that
/// have its required keys.
fn check_call(call: &Value, want: Option<&str>) -> String {
    let name = call["function"]["name"].as_str().expect("name").to_string();
    let args: Value = serde_json::from_str(call["function"]["arguments"].as_str().expect("args"))
        .unwrap_or_else(|e| panic!("arguments not JSON ({e}): {call}"));
    let required: &[&str] = match name.as_str() {
        "get_weather" => &["city", "unit"],
        "get_time" => &["zone"],
        other => panic!("not an offered tool: {other}"),
    };
    for k in required {
        assert!(args.get(k).is_some(), "{name}: no {k:?} in {args}");
    }
    if let Some(w) = want {
        assert_eq!(name, w);
    }
    name
}

/// The tool call a streamed chat reply makes: (name, arguments), joined from its deltas.
fn streamed_call(events: &[Value]) -> (String, String) {
    let (mut name, mut args) = (String::new(), String::new());
    for e in events {
        for c in e["choices"][0]["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            name.push_str(c["function"]["name"].as_str().unwrap_or_default());
            args.push_str(c["function"]["arguments"].as_str().unwrap_or_default());
        }
    }
    (name, args)
}

#[test]
fn forced_tool_calls_05b() {
    let Some(m) = common::model(common::MODEL_05B) else {
        return;
    };
    let t0 = Instant::now();
    let s = Server::start(&m, &["-c", "1024"]);
    // A message no tool fits: unconstrained, the model answers in prose.
    let body = json!({
        "messages": [{"role": "user", "content": "Write a haiku about the sea."}],
        "temperature": 0, "max_tokens": 60, "tools": tools(),
    });
    let free = s.ok("/v1/chat/completions", &body);
    eprintln!("auto -> {}", free["choices"][0]["message"]);
    assert!(
        free["choices"][0]["message"]["tool_calls"].is_null(),
        "{free}"
    );

    // "required": a call of one of the tools, with its required arguments.
    let mut b = body.clone();
    b["tool_choice"] = json!("required");
    let r = s.ok("/v1/chat/completions", &b);
    eprintln!("required -> {}", r["choices"][0]["message"]);
    assert_eq!(r["choices"][0]["finish_reason"], "tool_calls", "{r}");
    let calls = r["choices"][0]["message"]["tool_calls"]
        .as_array()
        .expect("tool_calls");
    assert_eq!(calls.len(), 1);
    check_call(&calls[0], None);
    // Streamed: the same call.
    b["stream"] = json!(true);
    let (name, args) = streamed_call(&s.stream("/v1/chat/completions", &b));
    assert_eq!(name, calls[0]["function"]["name"].as_str().unwrap());
    assert_eq!(args, calls[0]["function"]["arguments"].as_str().unwrap());

    // A named function: that one, even where the other would fit.
    let mut b = body.clone();
    b["messages"] = json!([{"role": "user", "content": "What's the weather in Oslo?"}]);
    b["tool_choice"] = json!({"type": "function", "function": {"name": "get_time"}});
    let r = s.ok("/v1/chat/completions", &b);
    eprintln!("named -> {}", r["choices"][0]["message"]);
    check_call(
        &r["choices"][0]["message"]["tool_calls"][0],
        Some("get_time"),
    );

    // A grammar and a forced call together are refused.
    let mut b = body.clone();
    b["tool_choice"] = json!("required");
    b["response_format"] = json!({"type": "json_object"});
    bad(
        &s,
        "/v1/chat/completions",
        b,
        "'response_format' and a forced tool call",
    );
    // A tool whose parameters are not a schema the engine takes: 400 naming the tools.
    let mut b = body.clone();
    b["tool_choice"] = json!("required");
    b["tools"] = json!([{"type": "function", "function": {"name": "f",
        "parameters": {"type": "object", "properties": {"a": {"$ref": "#/nowhere"}}}}}]);
    bad(&s, "/v1/chat/completions", b, "'tools'");
    eprintln!("tool call tests: {:.1} s", t0.elapsed().as_secs_f64());
}

/// Forced tool calls with a template of the Qwen3.5 family (calls written as
/// `<function=NAME>` blocks with `<parameter=ARG>` values, tests/fixtures/templates/
/// xml_tools.jinja) on the real 0.5B: the reply is a call in that form, parsed into
/// `tool_calls` whose arguments validate against the tool's schema (an enum included), plain and
/// streamed, "required" and named.
#[test]
fn forced_xml_tool_calls_05b() {
    let Some(m) = common::model(common::MODEL_05B) else {
        return;
    };
    let template = common::fixture("templates/xml_tools.jinja");
    let template = template.to_str().expect("utf-8 path");
    let s = Server::start(&m, &["-c", "1024", "--chat-template-file", template]);
    let schema_of = |name: &str| {
        tools()
            .as_array()
            .expect("tools")
            .iter()
            .find(|t| t["function"]["name"] == name)
            .map(|t| t["function"]["parameters"].clone())
            .unwrap_or_else(|| panic!("not an offered tool: {name}"))
    };
    let check = |r: &Value, want: Option<&str>| {
        let msg = &r["choices"][0]["message"];
        eprintln!("xml -> {msg}");
        assert_eq!(r["choices"][0]["finish_reason"], "tool_calls", "{r}");
        let calls = msg["tool_calls"].as_array().expect("tool_calls");
        assert_eq!(calls.len(), 1, "{msg}");
        let name = check_call(&calls[0], want);
        let args = calls[0]["function"]["arguments"].as_str().expect("args");
        validates(&schema_of(&name), args).unwrap_or_else(|e| panic!("{name}: {e}"));
        (name, args.to_string())
    };
    let mut body = json!({
        "messages": [{"role": "user", "content": "Is it cold in Reykjavik today?"}],
        "temperature": 0, "max_tokens": 80, "tools": tools(), "tool_choice": "required",
    });
    let (name, args) = check(&s.ok("/v1/chat/completions", &body), None);
    body["stream"] = json!(true);
    let streamed = streamed_call(&s.stream("/v1/chat/completions", &body));
    assert_eq!(streamed, (name, args));
    body["stream"] = json!(false);
    body["tool_choice"] = json!({"type": "function", "function": {"name": "get_time"}});
    check(&s.ok("/v1/chat/completions", &body), Some("get_time"));
    // Values that are JSON, not text (an integer with bounds, a boolean), and an optional one.
    let forecast = json!({"type": "object", "properties": {
        "city": {"type": "string"},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
        "hourly": {"type": "boolean"}
    }, "required": ["city", "days"]});
    body["tools"] = json!([{"type": "function", "function": {
        "name": "get_forecast", "parameters": forecast}}]);
    body["tool_choice"] = json!("required");
    body["messages"][0]["content"] = json!("Will it rain in Lima this week?");
    let r = s.ok("/v1/chat/completions", &body);
    eprintln!("xml forecast -> {}", r["choices"][0]["message"]);
    let call = &r["choices"][0]["message"]["tool_calls"][0]["function"];
    assert_eq!(call["name"], "get_forecast", "{r}");
    let args = call["arguments"].as_str().expect("args");
    validates(&forecast, args).unwrap_or_else(|e| panic!("get_forecast: {e}"));
    let v: Value = serde_json::from_str(args).expect("JSON");
    assert!(v["days"].is_i64(), "days must be a JSON integer: {args}");
}

/// The 1.5B with the shipped DFlash drafter: a constrained reply equals the plain server's.
#[test]
fn constrained_with_dflash_equals_plain_15b() {
    let Some(m) = common::model(common::MODEL_15B) else {
        return;
    };
    let dflash =
        common::repo_file("training/drafters/qwen2.5-coder-1.5b-instruct-dflash-q8_0.gguf");
    let t0 = Instant::now();
    let (question, schema) = &schemas()[0];
    let mut body = with_schema(chat(question), schema);
    body["max_tokens"] = json!(48);
    let plain = {
        let s = Server::start(&m, &["-c", "512"]);
        s.ok("/v1/chat/completions", &body)
    };
    let text = content(&plain);
    eprintln!("plain -> {text:?}");
    assert!(text.starts_with('{'), "{text:?}");
    if plain["choices"][0]["finish_reason"] == "stop" {
        validates(schema, &text).unwrap();
    }
    // A fixed verify length (capped at the largest batch this CPU computes exactly like
    // one-token steps): the adaptive one may find drafting does not pay here and not draft.
    let draft = dflash.to_str().unwrap();
    let s = Server::start(&m, &["-c", "512", "--draft", draft, "--block-size", "16"]);
    let r = s.ok("/v1/chat/completions", &body);
    eprintln!(
        "dflash: {} drafted, {} accepted",
        drafted(&r),
        r["timings"]["draft_n_accepted"]
    );
    assert_eq!(content(&r), text, "DFlash drafter");
    assert!(drafted(&r) > 0, "{r}");
    eprintln!("1.5B DFlash test: {:.1} s", t0.elapsed().as_secs_f64());
}
