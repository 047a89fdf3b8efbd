//! Request parsing and response shapes of the OpenAI API and llama.cpp's native endpoints.
//!
//! Requests are read field by field from JSON (not derived), so that a field of the wrong type
//! or out of range gets an error naming it; unknown fields are ignored, as clients send extras.

use super::constrained::{request_grammar, RequestGrammar};
use super::slots::Finished;
use crate::decode::constrain::Constraint;
use crate::decode::generate::{Generation, StopReason, TokenLogprob};
use crate::decode::sampling::SamplingParams;
use crate::decode::spec::SpecStats;
use crate::text::tokenizer::Tokenizer;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

/// An error answered as OpenAI-style JSON (`{"error": {"code", "message", "type"}}`).
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
    /// The `type` llama-server uses for this status.
    fn kind(&self) -> &'static str {
        match self.status.as_u16() {
            400 | 408 | 413 => "invalid_request_error",
            401 => "authentication_error",
            404 => "not_found_error",
            501 => "not_supported_error",
            503 => "unavailable_error",
            _ => "server_error",
        }
    }
    pub fn to_json(&self) -> Value {
        json!({"error": {"code": self.status.as_u16(), "message": self.message, "type": self.kind()}})
    }
}

/// Seconds a 503 (loading, busy, too many connections) asks the client to wait
/// (`Retry-After`).
pub const RETRY_AFTER_S: u32 = 1;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, axum::Json(self.to_json())).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_S));
        }
        r
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

fn not_an_object() -> ApiError {
    ApiError::bad_request("the request body must be a JSON object")
}

/// The request body's object of fields (owned), or 400 as [`Fields::parse`] answers.
pub fn body_object(body: Value) -> ApiResult<Map<String, Value>> {
    match body {
        Value::Object(m) => Ok(m),
        _ => Err(not_an_object()),
    }
}

/// Typed access to a request object's fields; errors name the field.
pub struct Fields<'a>(pub &'a Map<String, Value>);

impl<'a> Fields<'a> {
    /// The fields of a request body, or 400 if it is not a JSON object.
    pub fn parse(body: &'a Value) -> ApiResult<Fields<'a>> {
        body.as_object().map(Fields).ok_or_else(not_an_object)
    }
    /// The field, with `null` treated as absent.
    pub fn get(&self, name: &str) -> Option<&'a Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }
    pub fn f32(&self, name: &str) -> ApiResult<Option<f32>> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => match v.as_f64() {
                Some(x) if x.is_finite() => Ok(Some(x as f32)),
                _ => Err(ApiError::bad_request(format!(
                    "'{name}' must be a number, got {v}"
                ))),
            },
        }
    }
    pub fn i64(&self, name: &str) -> ApiResult<Option<i64>> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => match v.as_i64() {
                Some(x) => Ok(Some(x)),
                None => Err(ApiError::bad_request(format!(
                    "'{name}' must be an integer, got {v}"
                ))),
            },
        }
    }
    /// An integer in `lo..=hi`; an integer outside it (however large) is an error naming the
    /// range, anything else one saying it must be an integer.
    pub fn int_in(&self, name: &str, lo: i64, hi: i64) -> ApiResult<Option<i64>> {
        let Some(v) = self.get(name) else {
            return Ok(None);
        };
        let out_of_range = || {
            ApiError::bad_request(format!(
                "'{name}' must be between {lo} and {hi}, got {}",
                short(v)
            ))
        };
        match v.as_i64() {
            Some(x) if (lo..=hi).contains(&x) => Ok(Some(x)),
            Some(_) => Err(out_of_range()),
            // Integers beyond i64 (u64, or written with an exponent and read as a float).
            None if v.is_u64() || v.as_f64().is_some_and(|x| x.fract() == 0.0) => {
                Err(out_of_range())
            }
            None => Err(ApiError::bad_request(format!(
                "'{name}' must be an integer, got {}",
                short(v)
            ))),
        }
    }
    pub fn bool(&self, name: &str) -> ApiResult<Option<bool>> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(ApiError::bad_request(format!(
                "'{name}' must be true or false, got {v}"
            ))),
        }
    }
    pub fn str(&self, name: &str) -> ApiResult<Option<&'a str>> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(ApiError::bad_request(format!(
                "'{name}' must be a string, got {v}"
            ))),
        }
    }
    pub fn object(&self, name: &str) -> ApiResult<Option<&'a Map<String, Value>>> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Object(m)) => Ok(Some(m)),
            Some(v) => Err(ApiError::bad_request(format!(
                "'{name}' must be an object, got {v}"
            ))),
        }
    }
}

/// What every generation endpoint asks for, after parsing and validation.
#[derive(Clone, Debug)]
pub struct GenParams {
    pub sampling: SamplingParams,
    /// None: until end of generation or a full context.
    pub max_tokens: Option<usize>,
    pub stop: Vec<String>,
    pub ignore_eos: bool,
    pub stream: bool,
    /// OpenAI `stream_options.include_usage`.
    pub include_usage: bool,
    /// Top candidates per token to report (None: no logprobs).
    pub logprobs: Option<usize>,
    /// Also score the prompt's tokens (`echo` with `logprobs` on `/v1/completions`).
    pub prompt_logprobs: bool,
    /// Reuse the KV of the common prefix with the slot's previous prompt (llama.cpp's
    /// `cache_prompt`, default true).
    pub cache_prompt: bool,
    /// Choices per prompt (`n`).
    pub n: usize,
    /// What the output must follow (`response_format`, `json_schema`, `grammar`).
    pub grammar: Option<RequestGrammar>,
    /// `grammar` compiled (by the handler, which may also set a tool-call grammar); every
    /// generation starts from a copy of it.
    pub constraint: Option<Constraint>,
}

/// The largest token limit a request may ask for (llama.cpp's `n_predict` is an int32);
/// anything above the context is capped at it.
pub const MAX_TOKEN_LIMIT: i64 = i32::MAX as i64;

/// Most choices a request may ask for (`n`); they run one after another on one slot.
pub const MAX_CHOICES: usize = 16;

/// Most top candidates reported per token (OpenAI allows 20).
pub const MAX_TOP_LOGPROBS: i64 = 20;

/// The seed for a request without one: a fresh one per request (llama.cpp's -1).
fn random_seed() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ COUNTER
        .fetch_add(1, Ordering::Relaxed)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Which endpoint a request came in on (field spellings differ a little).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Completions,
    /// llama.cpp's native `/completion`.
    Native,
}

/// Sampling, limits, stop strings and streaming options of a request.
pub fn gen_params(
    f: &Fields,
    endpoint: Endpoint,
    defaults: &SamplingParams,
    n_ctx: usize,
) -> ApiResult<GenParams> {
    let mut s = defaults.clone();
    if let Some(t) = f.f32("temperature")? {
        if t < 0.0 {
            return Err(ApiError::bad_request(format!(
                "'temperature' must be >= 0, got {t}"
            )));
        }
        s.temperature = t;
    }
    if let Some(v) = f.f32("top_p")? {
        if !(0.0..=1.0).contains(&v) {
            return Err(ApiError::bad_request(format!(
                "'top_p' must be in [0, 1], got {v}"
            )));
        }
        s.top_p = v;
    }
    if let Some(v) = f.i64("top_k")? {
        s.top_k = v.clamp(i32::MIN as i64, i32::MAX as i64) as i32;
    }
    if let Some(v) = f.f32("min_p")? {
        if !(0.0..=1.0).contains(&v) {
            return Err(ApiError::bad_request(format!(
                "'min_p' must be in [0, 1], got {v}"
            )));
        }
        s.min_p = v;
    }
    s.seed = match f.get("seed") {
        None => random_seed(),
        Some(v) => match (v.as_u64(), v.as_i64()) {
            (Some(x), _) => x,
            // -1 (llama.cpp's "random") or any negative integer.
            (None, Some(_)) => random_seed(),
            _ => {
                return Err(ApiError::bad_request(format!(
                    "'seed' must be an integer between 0 and {} (or -1 for a random seed), got {}",
                    u64::MAX,
                    short(v)
                )))
            }
        },
    };
    if let Some(v) = f.f32("presence_penalty")? {
        if !(-2.0..=2.0).contains(&v) {
            return Err(ApiError::bad_request(format!(
                "'presence_penalty' must be in [-2, 2], got {v}"
            )));
        }
        s.presence_penalty = v;
    }
    if let Some(v) = f.f32("frequency_penalty")? {
        if !(-2.0..=2.0).contains(&v) {
            return Err(ApiError::bad_request(format!(
                "'frequency_penalty' must be in [-2, 2], got {v}"
            )));
        }
        s.frequency_penalty = v;
    }
    if let Some(v) = f.f32("repeat_penalty")? {
        s.repeat_penalty = v;
    }
    if let Some(v) = f.i64("repeat_last_n")? {
        s.repeat_last_n = v.clamp(-1, i32::MAX as i64) as i32;
    }
    s.validate().map_err(ApiError::bad_request)?;

    // Token limit: OpenAI's max_completion_tokens / max_tokens, llama.cpp's n_predict. -1 (as
    // in llama.cpp) is no limit, 0 generates nothing; as llama-server, a limit beyond the
    // slot's context is capped at it (generation ends where the context is full).
    let mut max_tokens = None;
    for name in ["max_completion_tokens", "max_tokens", "n_predict"] {
        if let Some(v) = f.int_in(name, -1, MAX_TOKEN_LIMIT)? {
            if v >= 0 {
                max_tokens = Some((v as u64).min(n_ctx as u64) as usize);
                break;
            }
        }
    }

    let stop = match f.get("stop") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => {
            let mut v = Vec::new();
            for x in a {
                match x.as_str() {
                    Some(s) => v.push(s.to_string()),
                    None => {
                        return Err(ApiError::bad_request(format!(
                            "'stop' must be a string or an array of strings, got {x} in the array"
                        )))
                    }
                }
            }
            v
        }
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "'stop' must be a string or an array of strings, got {v}"
            )))
        }
    };

    // Choices per prompt (OpenAI's `n`); llama.cpp's native endpoint has one.
    let n = match endpoint {
        Endpoint::Native => match f.int_in("n", 1, 1) {
            Ok(_) => 1,
            Err(_) => {
                return Err(ApiError::bad_request(
                    "'n' must be 1 on /completion (ask /v1/completions for several choices)",
                ))
            }
        },
        _ => f.int_in("n", 1, MAX_CHOICES as i64)?.unwrap_or(1) as usize,
    };

    let stream = f.bool("stream")?.unwrap_or(false);
    let include_usage = match f.object("stream_options")? {
        Some(o) => Fields(o).bool("include_usage")?.unwrap_or(false),
        None => false,
    };

    let top_n = |name: &str, v: i64| -> ApiResult<usize> {
        if !(0..=MAX_TOP_LOGPROBS).contains(&v) {
            return Err(ApiError::bad_request(format!(
                "'{name}' must be between 0 and {MAX_TOP_LOGPROBS}, got {v}"
            )));
        }
        Ok(v as usize)
    };
    let logprobs = match endpoint {
        Endpoint::Chat => match f.bool("logprobs")? {
            Some(true) => Some(top_n("top_logprobs", f.i64("top_logprobs")?.unwrap_or(0))?),
            _ => {
                if f.get("top_logprobs").is_some() {
                    return Err(ApiError::bad_request(
                        "'top_logprobs' needs 'logprobs': true",
                    ));
                }
                None
            }
        },
        Endpoint::Completions => match f.i64("logprobs")? {
            Some(v) => Some(top_n("logprobs", v)?),
            None => None,
        },
        Endpoint::Native => match f.i64("n_probs")? {
            Some(0) | None => None,
            Some(v) => Some(top_n("n_probs", v)?),
        },
    };

    Ok(GenParams {
        sampling: s,
        max_tokens,
        stop,
        ignore_eos: f.bool("ignore_eos")?.unwrap_or(false),
        stream,
        include_usage,
        logprobs,
        prompt_logprobs: false,
        cache_prompt: f.bool("cache_prompt")?.unwrap_or(true),
        n,
        grammar: request_grammar(f)?,
        constraint: None,
    })
}

/// One prompt given as text, token ids, or a mix of both (llama.cpp's "mixed" prompts).
#[derive(Clone, Debug, PartialEq)]
pub enum PromptInput {
    Text(String),
    Tokens(Vec<u64>),
    Mixed(Vec<PromptPiece>),
}

#[derive(Clone, Debug, PartialEq)]
pub enum PromptPiece {
    Text(String),
    Token(u64),
}

/// Most prompts (or embeddings inputs) in one request.
pub const MAX_PROMPTS: usize = 64;

/// The prompts of field `name` (`prompt`, `input`), as OpenAI and llama-server take them: a
/// string, an array of token ids, an array mixing strings and token ids (one prompt), or an
/// array of those (one prompt each).
pub fn prompt_inputs(f: &Fields, name: &str) -> ApiResult<Vec<PromptInput>> {
    let what = "a string, an array of token ids, or an array of strings or of token id arrays";
    let Some(v) = f.get(name) else {
        return Err(ApiError::bad_request(format!("'{name}' is required")));
    };
    let one = |v: &Value| -> Option<PromptInput> {
        match v {
            Value::String(s) => Some(PromptInput::Text(s.clone())),
            Value::Array(a) if !a.is_empty() && a.iter().all(Value::is_u64) => Some(
                PromptInput::Tokens(a.iter().filter_map(Value::as_u64).collect()),
            ),
            Value::Array(a)
                if a.iter().any(Value::is_string)
                    && a.iter().all(|x| x.is_string() || x.is_u64()) =>
            {
                Some(PromptInput::Mixed(
                    a.iter()
                        .map(|x| match x {
                            Value::String(s) => PromptPiece::Text(s.clone()),
                            other => PromptPiece::Token(other.as_u64().unwrap_or_default()),
                        })
                        .collect(),
                ))
            }
            _ => None,
        }
    };
    let prompts = match v {
        Value::Array(a) if a.is_empty() => {
            return Err(ApiError::bad_request(format!("'{name}' is empty")))
        }
        // A list of prompts (strings, or arrays of tokens or of mixed pieces).
        Value::Array(a) if a.iter().all(|x| x.is_string()) || a.iter().any(|x| x.is_array()) => {
            let mut out = Vec::with_capacity(a.len());
            for (i, x) in a.iter().enumerate() {
                out.push(one(x).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "'{name}[{i}]' must be a string or a non-empty array of token ids, got {}",
                        short(x)
                    ))
                })?);
            }
            out
        }
        v => vec![one(v).ok_or_else(|| {
            ApiError::bad_request(format!("'{name}' must be {what}, got {}", short(v)))
        })?],
    };
    if prompts.len() > MAX_PROMPTS {
        return Err(ApiError::bad_request(format!(
            "'{name}' has {} prompts; at most {MAX_PROMPTS} are taken in one request",
            prompts.len()
        )));
    }
    Ok(prompts)
}

/// A value for an error message, cut short.
pub fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 80 {
        format!("{}...", &s[..s.floor_char_boundary(80)])
    } else {
        s
    }
}

/// OpenAI's finish_reason.
pub fn finish_reason(stop: StopReason) -> &'static str {
    match stop {
        StopReason::Eos | StopReason::Word | StopReason::Cancelled => "stop",
        StopReason::Limit | StopReason::Context => "length",
    }
}

/// llama.cpp's `timings` object, with the speculative counters when a drafter ran: llama.cpp's
/// `draft_n` and `draft_n_accepted` (a tree step counts its nodes as drafted), and ours:
/// `target_steps` (target steps after the prompt, speculative and plain: tau is `predicted_n`
/// over it), `spec_steps` (steps that verified drafts), `tree_steps` and `tree_nodes` (DDTree
/// steps among them and the nodes they verified).
pub fn timings_json(g: &Generation, spec: Option<&SpecStats>) -> Value {
    let mut t = serde_json::to_value(&g.timings).unwrap_or_else(|_| json!({}));
    t["cache_n"] = g.cached_prompt_n.into();
    if let Some(s) = spec {
        t["draft_n"] = s.drafted.into();
        t["draft_n_accepted"] = s.accepted.into();
        t["target_steps"] = s.steps.into();
        t["spec_steps"] = s.spec_steps.into();
        t["tree_steps"] = s.trees.iter().map(|&(_, n)| n).sum::<usize>().into();
        t["tree_nodes"] = s.trees.iter().map(|&(b, n)| b * n).sum::<usize>().into();
    }
    t
}

/// OpenAI's `usage` over a request's generations (`prompt_n`: its prompt tokens, each prompt
/// counted once however many choices it has).
pub fn usage_json(prompt_n: usize, done: &[Finished]) -> Value {
    let completion: usize = done.iter().map(|f| f.generation.tokens.len()).sum();
    let cached = done.first().map_or(0, |f| f.generation.cached_prompt_n);
    json!({
        "prompt_tokens": prompt_n,
        "completion_tokens": completion,
        "total_tokens": prompt_n + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    })
}

fn token_piece(tok: &Tokenizer, id: u32) -> (String, Vec<u8>) {
    let bytes = tok.token_bytes(id);
    (String::from_utf8_lossy(&bytes).into_owned(), bytes)
}

/// Chat `logprobs`: `{"content": [{token, logprob, bytes, top_logprobs: [...]}]}`.
pub fn chat_logprobs_json(tok: &Tokenizer, lps: &[TokenLogprob]) -> Value {
    let entry = |id: u32, lp: f32| {
        let (text, bytes) = token_piece(tok, id);
        json!({"token": text, "logprob": lp, "bytes": bytes})
    };
    let content: Vec<Value> = lps
        .iter()
        .map(|l| {
            let mut e = entry(l.token, l.logprob);
            e["top_logprobs"] = l.top.iter().map(|&(t, lp)| entry(t, lp)).collect();
            e
        })
        .collect();
    json!({ "content": content })
}

/// Legacy completions `logprobs`: tokens, token_logprobs, top_logprobs, text_offset.
pub fn completion_logprobs_json(tok: &Tokenizer, lps: &[TokenLogprob]) -> Value {
    completion_logprobs_after(tok, None, lps)
}

/// OpenAI's completion `logprobs` of an echoed prompt and its completion: the prompt's first
/// token (no log-probability: nothing comes before it), then `lps` (the prompt's other tokens'
/// and the generated ones').
pub fn echo_logprobs_json(tok: &Tokenizer, first: u32, lps: &[TokenLogprob]) -> Value {
    completion_logprobs_after(tok, Some(first), lps)
}

fn completion_logprobs_after(tok: &Tokenizer, first: Option<u32>, lps: &[TokenLogprob]) -> Value {
    let mut tokens = Vec::new();
    let mut token_logprobs = Vec::new();
    let mut top = Vec::new();
    let mut offsets = Vec::new();
    let mut offset = 0usize;
    if let Some(t) = first {
        let (text, _) = token_piece(tok, t);
        offsets.push(offset);
        offset += text.len();
        tokens.push(text);
        token_logprobs.push(Value::Null);
        top.push(Value::Null);
    }
    for l in lps {
        let (text, _) = token_piece(tok, l.token);
        offsets.push(offset);
        offset += text.len();
        tokens.push(text);
        token_logprobs.push(l.logprob.into());
        let mut m = Map::new();
        for &(t, lp) in &l.top {
            m.insert(token_piece(tok, t).0, lp.into());
        }
        top.push(Value::Object(m));
    }
    json!({"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": top, "text_offset": offsets})
}

/// llama.cpp's native `completion_probabilities`.
pub fn native_probs_json(tok: &Tokenizer, lps: &[TokenLogprob]) -> Value {
    let entry = |id: u32, lp: f32| {
        let (text, bytes) = token_piece(tok, id);
        json!({"id": id, "token": text, "logprob": lp, "bytes": bytes})
    };
    lps.iter()
        .map(|l| {
            let mut e = entry(l.token, l.logprob);
            e["top_logprobs"] = l.top.iter().map(|&(t, lp)| entry(t, lp)).collect();
            e
        })
        .collect()
}

/// A unique-enough id: prefix + time + counter, hex.
pub fn new_id(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{:x}{n:04x}", unix_time())
}

pub fn unix_time() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(body: Value) -> ApiResult<GenParams> {
        let f = Fields::parse(&body)?;
        gen_params(&f, Endpoint::Chat, &SamplingParams::default(), 100)
    }

    #[test]
    fn wrong_types_name_the_field() {
        let e = params(json!({"temperature": "hot"})).unwrap_err();
        assert!(e.message.contains("'temperature'"), "{}", e.message);
        let e = params(json!({"stop": [1]})).unwrap_err();
        assert!(e.message.contains("'stop'"), "{}", e.message);
        for n in [json!(0), json!(17), json!(1.5), json!("2")] {
            let e = params(json!({ "n": n })).unwrap_err();
            assert!(e.message.contains("'n'"), "{}", e.message);
        }
        assert_eq!(params(json!({"n": 16})).unwrap().n, 16);
        // Out of range, however large: the field and the range, not "must be an integer".
        for big in [json!(9223372036854775808u64), json!(1e30), json!(-2)] {
            let e = params(json!({ "max_tokens": big })).unwrap_err();
            assert!(
                e.message
                    .contains("'max_tokens' must be between -1 and 2147483647"),
                "{}",
                e.message
            );
        }
        let e = params(json!({"n_predict": 1.5})).unwrap_err();
        assert!(
            e.message.contains("'n_predict' must be an integer"),
            "{}",
            e.message
        );
    }

    #[test]
    fn prompt_shapes() {
        let p = |v: Value| {
            let body = json!({ "prompt": v });
            prompt_inputs(&Fields::parse(&body).unwrap(), "prompt")
        };
        let text = |s: &str| PromptInput::Text(s.into());
        assert_eq!(p(json!("a")).unwrap(), vec![text("a")]);
        assert_eq!(p(json!(["a", "b"])).unwrap(), vec![text("a"), text("b")]);
        assert_eq!(
            p(json!([1, 2])).unwrap(),
            vec![PromptInput::Tokens(vec![1, 2])]
        );
        assert_eq!(
            p(json!([[1], [2, 3]])).unwrap(),
            vec![
                PromptInput::Tokens(vec![1]),
                PromptInput::Tokens(vec![2, 3])
            ]
        );
        assert_eq!(
            p(json!(["a", 7])).unwrap(),
            vec![PromptInput::Mixed(vec![
                PromptPiece::Text("a".into()),
                PromptPiece::Token(7)
            ])]
        );
        for bad in [
            json!([]),
            json!([-1]),
            json!([[]]),
            json!(3),
            json!([{"a": 1}]),
        ] {
            let e = p(bad.clone()).unwrap_err();
            assert!(e.message.contains("'prompt"), "{bad}: {}", e.message);
        }
        let e = p(json!(vec!["x"; MAX_PROMPTS + 1])).unwrap_err();
        assert!(e.message.contains("at most"), "{}", e.message);
    }

    #[test]
    fn token_limits_capped_at_the_context() {
        // llama-server caps a limit beyond the context (100 here) instead of refusing it.
        assert_eq!(
            params(json!({"max_tokens": 1000})).unwrap().max_tokens,
            Some(100)
        );
        assert_eq!(
            params(json!({"max_tokens": 0})).unwrap().max_tokens,
            Some(0)
        );
        assert_eq!(params(json!({"max_tokens": -1})).unwrap().max_tokens, None);
        assert_eq!(
            params(json!({"n_predict": 2147483647})).unwrap().max_tokens,
            Some(100)
        );
        // A seed may be any u64.
        let p = params(json!({"seed": 18446744073709551615u64})).unwrap();
        assert_eq!(p.sampling.seed, u64::MAX);
    }

    #[test]
    fn every_503_says_when_to_retry() {
        let r = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy").into_response();
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
        let r = ApiError::bad_request("no").into_response();
        assert!(r.headers().get(header::RETRY_AFTER).is_none());
    }

    #[test]
    fn defaults_and_values() {
        let p =
            params(json!({"temperature": 0, "max_tokens": 5, "stop": "x", "unknown": 1})).unwrap();
        assert_eq!(p.sampling.temperature, 0.0);
        assert_eq!(p.max_tokens, Some(5));
        assert_eq!(p.stop, vec!["x".to_string()]);
        assert!(p.cache_prompt && !p.stream);
    }
}
