//! `blockspec serve`: an OpenAI- and llama-server-compatible HTTP API (axum + tokio).
//!
//! The model loads once on a background thread while `/health` answers 503; then `-np` slots
//! ([`slots`]) each run generations on their own thread and session. Handlers only parse,
//! validate, queue and relay: streaming responses are Server-Sent Events (`data: {...}`,
//! ending with `data: [DONE]` on the OpenAI endpoints).

pub mod chat_parse;
pub mod metrics;
pub mod openai;
pub mod slots;

use crate::decode::generate::{GenerateOptions, StopReason};
use crate::decode::sampling::SamplingParams;
use crate::session::{DraftSource, LoadedModel};
use crate::text::chat::ChatTemplate;
use anyhow::{Context as _, Result};
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chat_parse::{parse_reply, ChatDelta, ChatParser};
use metrics::Metrics;
use openai::{
    chat_logprobs_json, completion_logprobs_json, finish_reason, gen_params, native_probs_json,
    new_id, prompt_input, short, timings_json, unix_time, usage_json, ApiError, ApiResult,
    Endpoint, Fields, GenParams, PromptInput,
};
use serde_json::{json, Value};
use slots::{CancelOnDrop, Event, Finished, Job, SlotPool};
use std::sync::{Arc, OnceLock};
use tokio::sync::mpsc::UnboundedReceiver;

/// Server settings from the command line.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    pub n_slots: usize,
    /// Requests that may wait for a slot; more get 503.
    pub max_queued: usize,
    pub api_key: Option<String>,
    /// Chat template source replacing the model's (`--chat-template-file`).
    pub chat_template: Option<String>,
    /// Largest request body in bytes (413 above).
    pub body_limit: usize,
    /// The model name `/v1/models` lists.
    pub model_alias: String,
    pub model_path: String,
    /// Sampling for fields a request leaves out (the command line's --temp etc.).
    pub defaults: SamplingParams,
    /// Token limit for requests without one (None: until end of generation or a full context).
    pub default_max_tokens: Option<usize>,
}

/// What exists once the model is loaded.
struct Ready {
    model: Arc<LoadedModel>,
    template: ChatTemplate,
    pool: Arc<SlotPool>,
}

struct AppState {
    cfg: ServerConfig,
    ready: OnceLock<Ready>,
    metrics: Arc<Metrics>,
}

type Shared = Arc<AppState>;

impl AppState {
    fn ready(&self) -> ApiResult<&Ready> {
        self.ready
            .get()
            .ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "Loading model"))
    }
}

/// Run the server until interrupted. `load` runs on a background thread; the listener answers
/// (503 on everything but `/health` semantics) while it runs.
pub fn serve(
    cfg: ServerConfig,
    load: impl FnOnce() -> Result<LoadedModel> + Send + 'static,
) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let addr = format!("{}:{}", cfg.host, cfg.port);
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let local = listener.local_addr()?;
        let state = Arc::new(AppState {
            cfg: cfg.clone(),
            ready: OnceLock::new(),
            metrics: Arc::new(Metrics::default()),
        });
        start_loading(state.clone(), load);
        eprintln!("blockspec server listening on http://{local} (loading the model)");
        axum::serve(listener, router(state))
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
            .context("server error")
    })
}

/// Load the model, its template and the slots on a thread; a failure ends the process (as
/// llama-server does), since the server cannot serve anything without them.
fn start_loading(state: Shared, load: impl FnOnce() -> Result<LoadedModel> + Send + 'static) {
    std::thread::spawn(move || {
        let r = (|| -> Result<Ready> {
            let model = Arc::new(load()?);
            let template = ChatTemplate::from_gguf(&model.gguf, state.cfg.chat_template.clone())?;
            let pool = SlotPool::start(
                model.clone(),
                state.cfg.n_slots,
                state.cfg.max_queued,
                state.metrics.clone(),
            )?;
            Ok(Ready {
                model,
                template,
                pool,
            })
        })();
        match r {
            Ok(ready) => {
                let _ = state.ready.set(ready);
                eprintln!("model loaded; {} slot(s) ready", state.cfg.n_slots);
            }
            Err(e) => {
                eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
                std::process::exit(2);
            }
        }
    });
}

fn router(state: Shared) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/v1/health", get(health))
        .route("/v1/models", get(models))
        .route("/models", get(models))
        .route("/props", get(props))
        .route("/metrics", get(metrics_text))
        .route("/tokenize", post(tokenize))
        .route("/detokenize", post(detokenize))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/completion", post(native_completion))
        .route("/completions", post(native_completion))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            check_api_key,
        ))
        // Bodies are read (and limited) by json_body.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

async fn not_found(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no such endpoint: {} {}", req.method(), req.uri().path()),
    )
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
}

/// Endpoints that answer without an API key (as llama-server's public endpoints).
const PUBLIC_PATHS: &[&str] = &["/health", "/v1/health", "/models", "/v1/models"];

async fn check_api_key(State(state): State<Shared>, req: Request, next: Next) -> Response {
    if let Some(key) = &state.cfg.api_key {
        if !PUBLIC_PATHS.contains(&req.uri().path()) {
            let given = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .or_else(|| req.headers().get("x-api-key").and_then(|v| v.to_str().ok()));
            if given != Some(key.as_str()) {
                return ApiError::new(StatusCode::UNAUTHORIZED, "Invalid API Key").into_response();
            }
        }
    }
    next.run(req).await
}

/// The JSON body, or an error: 413 over the size limit, 400 for anything that is not JSON.
///
/// An oversized body is still read (and dropped) up to a multiple of the limit before the 413
/// goes out: answering while the client is still sending would close the connection under it,
/// and it would see a broken pipe instead of the error.
async fn json_body(body: Body, limit: usize) -> ApiResult<Value> {
    use tokio_stream::StreamExt as _;
    let drain_max = limit.saturating_mul(4).max(64 << 20);
    let mut stream = body.into_data_stream();
    let mut buf = Vec::new();
    let mut total = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?;
        total += chunk.len();
        if total <= limit {
            buf.extend_from_slice(&chunk);
        } else if total > drain_max {
            break;
        }
    }
    if total > limit {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the request body is larger than the server's limit of {} MiB (--max-body-mib)",
                limit >> 20
            ),
        ));
    }
    serde_json::from_slice(&buf)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))
}

async fn health(State(state): State<Shared>) -> Response {
    match state.ready() {
        Ok(_) => Json(json!({"status": "ok"})).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn models(State(state): State<Shared>) -> ApiResult<Json<Value>> {
    let r = state.ready()?;
    let hp = &r.model.model.hp;
    let entry = json!({
        "id": state.cfg.model_alias,
        "object": "model",
        "created": unix_time(),
        "owned_by": "blockspec",
        "meta": {
            "n_vocab": hp.n_vocab,
            "n_ctx_train": hp.n_ctx_train,
            "n_embd": hp.n_embd,
            "n_ctx": r.model.n_ctx,
        },
    });
    Ok(Json(json!({"object": "list", "data": [entry]})))
}

fn spec_name(m: &LoadedModel) -> &'static str {
    match m.draft {
        DraftSource::None => "none",
        DraftSource::DFlash { .. } => "draft-dflash",
        DraftSource::DraftModel { .. } => "draft-simple",
        DraftSource::Ngram { .. } => "ngram-simple",
    }
}

fn settings_json(cfg: &ServerConfig, n_ctx: usize) -> Value {
    let d = &cfg.defaults;
    json!({
        "n_ctx": n_ctx,
        "params": {
            "temperature": d.temperature,
            "top_k": d.top_k,
            "top_p": d.top_p,
            "min_p": d.min_p,
            "repeat_penalty": d.repeat_penalty,
            "repeat_last_n": d.repeat_last_n,
            "presence_penalty": d.presence_penalty,
            "frequency_penalty": d.frequency_penalty,
            "n_predict": cfg.default_max_tokens.map_or(-1, |n| n as i64),
        },
    })
}

async fn props(State(state): State<Shared>) -> ApiResult<Json<Value>> {
    let r = state.ready()?;
    Ok(Json(json!({
        "default_generation_settings": settings_json(&state.cfg, r.model.n_ctx),
        "total_slots": r.pool.n_slots(),
        "model_alias": state.cfg.model_alias,
        "model_path": state.cfg.model_path,
        "chat_template": r.template.source(),
        "modalities": {"vision": false, "audio": false},
        "speculative": {"type": spec_name(&r.model)},
        "build_info": concat!("blockspec ", env!("CARGO_PKG_VERSION")),
    })))
}

async fn metrics_text(State(state): State<Shared>) -> ApiResult<Response> {
    state.ready()?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response())
}

async fn tokenize(State(state): State<Shared>, body: Body) -> ApiResult<Json<Value>> {
    let r = state.ready()?;
    let body = json_body(body, state.cfg.body_limit).await?;
    let f = Fields::parse(&body)?;
    let content = f
        .str("content")?
        .ok_or_else(|| ApiError::bad_request("'content' is required (a string)"))?;
    let add_special = f.bool("add_special")?.unwrap_or(false);
    let parse_special = f.bool("parse_special")?.unwrap_or(true);
    let with_pieces = f.bool("with_pieces")?.unwrap_or(false);
    let tok = &r.model.tokenizer;
    let ids = tok
        .encode(content, add_special, parse_special)
        .map_err(|e| ApiError::bad_request(format!("cannot tokenize 'content': {e:#}")))?;
    let tokens: Value = if with_pieces {
        ids.iter()
            .map(|&id| {
                let bytes = tok.token_bytes(id);
                let piece = match String::from_utf8(bytes.clone()) {
                    Ok(s) => json!(s),
                    Err(_) => json!(bytes),
                };
                json!({"id": id, "piece": piece})
            })
            .collect()
    } else {
        json!(ids)
    };
    Ok(Json(json!({ "tokens": tokens })))
}

/// Token ids from a JSON array, checked against the vocabulary.
fn token_ids(v: &Value, field: &str, n_vocab: usize) -> ApiResult<Vec<u32>> {
    let Some(a) = v.as_array() else {
        return Err(ApiError::bad_request(format!(
            "'{field}' must be an array of token ids, got {}",
            short(v)
        )));
    };
    a.iter()
        .map(|x| match x.as_u64() {
            Some(t) if (t as usize) < n_vocab => Ok(t as u32),
            _ => Err(ApiError::bad_request(format!(
                "'{field}': {} is not a token id (the vocabulary has {n_vocab})",
                short(x)
            ))),
        })
        .collect()
}

async fn detokenize(State(state): State<Shared>, body: Body) -> ApiResult<Json<Value>> {
    let r = state.ready()?;
    let body = json_body(body, state.cfg.body_limit).await?;
    let f = Fields::parse(&body)?;
    let tok = &r.model.tokenizer;
    let ids = match f.get("tokens") {
        Some(v) => token_ids(v, "tokens", tok.n_vocab())?,
        None => Vec::new(),
    };
    Ok(Json(json!({ "content": tok.decode(&ids, false) })))
}

/// Check the prompt against the slot context and queue the job.
fn submit(
    r: &Ready,
    prompt: Vec<u32>,
    p: &GenParams,
    default_max_tokens: Option<usize>,
) -> ApiResult<(UnboundedReceiver<Event>, CancelOnDrop, usize)> {
    let n_ctx = r.model.n_ctx;
    if prompt.is_empty() {
        return Err(ApiError::bad_request("the prompt is empty (no tokens)"));
    }
    if prompt.len() >= n_ctx {
        return Err(ApiError::bad_request(format!(
            "the prompt is {} tokens, which does not fit the context of {n_ctx} tokens per slot; shorten it or start the server with a larger -c",
            prompt.len()
        )));
    }
    let n_prompt = prompt.len();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let job = Job::new(
        prompt,
        p.sampling.clone(),
        GenerateOptions {
            max_tokens: p.max_tokens.or(default_max_tokens),
            ignore_eos: p.ignore_eos,
            stop: p.stop.clone(),
            stop_tokens: vec![],
            cancel: None,
            logprobs: p.logprobs,
            on_logprob: None,
            reuse_kv: 0,
        },
        p.cache_prompt,
        p.stream,
        tx,
    );
    let guard = r.pool.submit(job)?;
    Ok((rx, guard, n_prompt))
}

/// Wait for a non-streamed generation's result.
async fn collect(mut rx: UnboundedReceiver<Event>) -> ApiResult<Finished> {
    while let Some(ev) = rx.recv().await {
        match ev {
            Event::Text(_) | Event::Logprob(_) => {}
            Event::Done(f) => return Ok(*f),
            Event::Failed(msg) => {
                return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, msg));
            }
        }
    }
    Err(ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "the generation ended without a result",
    ))
}

fn sse_data(v: &Value) -> String {
    format!("data: {v}\n\n")
}

/// An SSE response from a stream of text frames.
fn sse_response(frames: impl tokio_stream::Stream<Item = String> + Send + 'static) -> Response {
    use tokio_stream::StreamExt as _;
    let body = Body::from_stream(frames.map(Ok::<_, std::convert::Infallible>));
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(body)
        .unwrap_or_else(|_| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot build the response",
            )
            .into_response()
        })
}

/// Turn a job's events into SSE frames: `on_event` maps each event to zero or more frames;
/// the cancel guard lives as long as the stream, so a client that disconnects cancels.
fn event_frames(
    rx: UnboundedReceiver<Event>,
    guard: CancelOnDrop,
    mut on_event: impl FnMut(Event) -> String + Send + 'static,
) -> impl tokio_stream::Stream<Item = String> + Send + 'static {
    use tokio_stream::StreamExt as _;
    tokio_stream::wrappers::UnboundedReceiverStream::new(rx)
        .map(move |ev| {
            let _keep = &guard;
            on_event(ev)
        })
        // Events that produce nothing yet (held-back text, log-probabilities waiting for their
        // text) send no empty chunk.
        .filter(|frame| !frame.is_empty())
}

fn stream_error(msg: &str) -> String {
    sse_data(&ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, msg).to_json())
}

/// What every OpenAI completion object and stream chunk of one request carries.
struct Envelope {
    id: String,
    created: u64,
    model: String,
}

impl Envelope {
    fn new(id_prefix: &str, model: &str) -> Envelope {
        Envelope {
            id: new_id(id_prefix),
            created: unix_time(),
            model: model.to_string(),
        }
    }

    fn object(&self, object: &str, choices: Value) -> Value {
        json!({
            "id": self.id,
            "object": object,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "blockspec",
            "choices": choices,
        })
    }

    /// A whole (non-streamed) reply: one choice, usage, llama.cpp's timings and the slot.
    fn finished(&self, object: &str, choice: Value, n_prompt: usize, done: &Finished) -> Value {
        let g = &done.generation;
        let mut v = self.object(object, json!([choice]));
        v["usage"] = usage_json(n_prompt, g);
        v["timings"] = timings_json(g, done.spec.as_ref());
        v["id_slot"] = done.slot.into();
        v
    }
}

// ---- /v1/chat/completions ----

/// What a chat request adds to the generation parameters.
struct ChatRequest {
    prompt_text: String,
    parse_tools: bool,
    tool_names: Vec<String>,
    parse_reasoning: bool,
}

fn chat_request(r: &Ready, f: &Fields) -> ApiResult<ChatRequest> {
    let messages = match f.get("messages") {
        Some(m @ Value::Array(a)) if !a.is_empty() => m,
        Some(Value::Array(_)) => return Err(ApiError::bad_request("'messages' is empty")),
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "'messages' must be an array of messages, got {}",
                short(v)
            )))
        }
        None => return Err(ApiError::bad_request("'messages' is required")),
    };
    let tools = match f.get("tools") {
        None => None,
        Some(t @ Value::Array(_)) => Some(t.clone()),
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "'tools' must be an array, got {}",
                short(v)
            )))
        }
    };
    let tools = match (f.get("tool_choice"), tools) {
        (_, None) => None,
        (None, t) => t,
        (Some(Value::String(s)), t) => match s.as_str() {
            "auto" | "required" => t,
            "none" => None,
            other => {
                return Err(ApiError::bad_request(format!(
                    "'tool_choice' must be \"none\", \"auto\", \"required\" or a function, got \"{other}\""
                )))
            }
        },
        (Some(Value::Object(o)), Some(Value::Array(all))) => {
            // A named function: offer only that one.
            let name = o
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "'tool_choice' as an object must be {\"type\": \"function\", \"function\": {\"name\": ...}}",
                    )
                })?;
            let chosen: Vec<Value> = all
                .iter()
                .filter(|t| {
                    t.get("function")
                        .and_then(|f| f.get("name"))
                        .and_then(Value::as_str)
                        == Some(name)
                })
                .cloned()
                .collect();
            if chosen.is_empty() {
                return Err(ApiError::bad_request(format!(
                    "'tool_choice' names the function \"{name}\", which is not in 'tools'"
                )));
            }
            Some(Value::Array(chosen))
        }
        (Some(v), _) => {
            return Err(ApiError::bad_request(format!(
                "'tool_choice' must be a string or an object, got {}",
                short(v)
            )))
        }
    };
    let tools = tools.filter(|t| t.as_array().is_some_and(|a| !a.is_empty()));
    let kwargs = f
        .object("chat_template_kwargs")?
        .map(|o| Value::Object(o.clone()));
    if let Some(rf) = f.object("response_format")? {
        match rf.get("type").and_then(Value::as_str) {
            None | Some("text") => {}
            Some(other) => {
                return Err(ApiError::new(
                    StatusCode::NOT_IMPLEMENTED,
                    format!("'response_format' type \"{other}\" is not supported (constrained output is not implemented); use \"text\""),
                ))
            }
        }
    }
    let reasoning_format = f.str("reasoning_format")?.unwrap_or("auto");
    let prompt_text = r
        .template
        .render(messages, true, tools.as_ref(), kwargs.as_ref())
        .map_err(|e| ApiError::bad_request(format!("cannot apply the chat template: {e:#}")))?;
    let tool_names = tools
        .iter()
        .filter_map(Value::as_array)
        .flatten()
        .filter_map(|t| t.get("function")?.get("name")?.as_str())
        .map(str::to_string)
        .collect();
    Ok(ChatRequest {
        prompt_text,
        parse_tools: tools.is_some(),
        tool_names,
        parse_reasoning: reasoning_format != "none",
    })
}

fn delta_json(d: &ChatDelta) -> Value {
    match d {
        ChatDelta::Reasoning(s) => json!({"reasoning_content": s}),
        ChatDelta::Content(s) => json!({"content": s}),
        ChatDelta::ToolCall(c) => json!({"tool_calls": [{
            "index": c.index,
            "id": c.id,
            "type": "function",
            "function": {"name": c.name, "arguments": c.arguments},
        }]}),
    }
}

async fn chat_completions(State(state): State<Shared>, body: Body) -> ApiResult<Response> {
    let r = state.ready()?;
    let body = json_body(body, state.cfg.body_limit).await?;
    let f = Fields::parse(&body)?;
    let p = gen_params(&f, Endpoint::Chat, &state.cfg.defaults, r.model.n_ctx)?;
    let chat = chat_request(r, &f)?;
    let prompt = r
        .model
        .tokenizer
        .encode(&chat.prompt_text, true, true)
        .map_err(|e| ApiError::bad_request(format!("cannot tokenize the prompt: {e:#}")))?;
    let opens_reasoning = chat.prompt_text.trim_end().ends_with("<think>");
    let env = Envelope::new("chatcmpl", &state.cfg.model_alias);
    let mut parser = ChatParser::new(
        chat.parse_reasoning,
        chat.parse_tools,
        opens_reasoning,
        format!("call_{}_", env.id.trim_start_matches("chatcmpl-")),
        chat.tool_names,
    );
    let (rx, guard, n_prompt) = submit(r, prompt, &p, state.cfg.default_max_tokens)?;
    let model = r.model.clone();

    if !p.stream {
        let done = collect(rx).await?;
        drop(guard);
        let g = &done.generation;
        let (reasoning, content, calls) = parse_reply(&mut parser, &g.text);
        let mut message = json!({"role": "assistant", "content": content});
        if let Some(rc) = reasoning {
            message["reasoning_content"] = rc.into();
        }
        let finish = if calls.is_empty() {
            finish_reason(g.stop)
        } else {
            "tool_calls"
        };
        if !calls.is_empty() {
            message["tool_calls"] = calls
                .iter()
                .map(|c| {
                    json!({"id": c.id, "type": "function",
                           "function": {"name": c.name, "arguments": c.arguments}})
                })
                .collect();
        }
        let logprobs = match p.logprobs {
            Some(_) => chat_logprobs_json(&model.tokenizer, &g.logprobs),
            None => Value::Null,
        };
        let choice =
            json!({"index": 0, "message": message, "logprobs": logprobs, "finish_reason": finish});
        return Ok(Json(env.finished("chat.completion", choice, n_prompt, &done)).into_response());
    }

    let chunk = move |delta: Value, finish: Option<&str>| {
        env.object(
            "chat.completion.chunk",
            json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]),
        )
    };
    let first = sse_data(&chunk(json!({"role": "assistant", "content": null}), None));
    let model_for_final = model.clone();
    let include_usage = p.include_usage;
    // Log-probabilities of tokens whose text has not gone out yet ride on the next chunk.
    let mut pending_lp = Vec::new();
    let with_lp = move |mut c: Value, pending: &mut Vec<_>| {
        if !pending.is_empty() {
            c["choices"][0]["logprobs"] = chat_logprobs_json(&model.tokenizer, pending);
            pending.clear();
        }
        sse_data(&c)
    };
    let frames = event_frames(rx, guard, move |ev| match ev {
        Event::Logprob(lp) => {
            pending_lp.push(lp);
            String::new()
        }
        Event::Text(t) => parser
            .push(&t)
            .iter()
            .map(|d| with_lp(chunk(delta_json(d), None), &mut pending_lp))
            .collect(),
        Event::Done(done) => {
            let g = &done.generation;
            let mut s: String = parser
                .finish()
                .iter()
                .map(|d| with_lp(chunk(delta_json(d), None), &mut pending_lp))
                .collect();
            let finish = if parser.n_tool_calls() > 0 {
                "tool_calls"
            } else {
                finish_reason(g.stop)
            };
            let mut last = chunk(json!({}), Some(finish));
            if !pending_lp.is_empty() {
                last["choices"][0]["logprobs"] =
                    chat_logprobs_json(&model_for_final.tokenizer, &pending_lp);
            }
            last["timings"] = timings_json(g, done.spec.as_ref());
            s.push_str(&sse_data(&last));
            if include_usage {
                let mut u = chunk(json!({}), None);
                u["choices"] = json!([]);
                u["usage"] = usage_json(n_prompt, g);
                s.push_str(&sse_data(&u));
            }
            s.push_str("data: [DONE]\n\n");
            s
        }
        Event::Failed(msg) => stream_error(&msg),
    });
    let first = tokio_stream::once(first);
    Ok(sse_response(tokio_stream::StreamExt::chain(first, frames)))
}

// ---- /v1/completions and /completion ----

fn completion_prompt(r: &Ready, f: &Fields) -> ApiResult<Vec<u32>> {
    let tok = &r.model.tokenizer;
    match prompt_input(f)? {
        PromptInput::Text(s) => tok
            .encode(&s, true, true)
            .map_err(|e| ApiError::bad_request(format!("cannot tokenize 'prompt': {e:#}"))),
        PromptInput::Tokens(ids) => {
            let v = json!(ids);
            token_ids(&v, "prompt", tok.n_vocab())
        }
    }
}

async fn completions(State(state): State<Shared>, body: Body) -> ApiResult<Response> {
    let r = state.ready()?;
    let body = json_body(body, state.cfg.body_limit).await?;
    let f = Fields::parse(&body)?;
    let p = gen_params(
        &f,
        Endpoint::Completions,
        &state.cfg.defaults,
        r.model.n_ctx,
    )?;
    if f.bool("echo")? == Some(true) {
        return Err(ApiError::bad_request("'echo' is not supported"));
    }
    let prompt = completion_prompt(r, &f)?;
    let (rx, guard, n_prompt) = submit(r, prompt, &p, state.cfg.default_max_tokens)?;
    let env = Envelope::new("cmpl", &state.cfg.model_alias);
    let model = r.model.clone();
    if !p.stream {
        let done = collect(rx).await?;
        drop(guard);
        let g = &done.generation;
        let logprobs = match p.logprobs {
            Some(_) => completion_logprobs_json(&model.tokenizer, &g.logprobs),
            None => Value::Null,
        };
        let choice = json!({"text": g.text, "index": 0, "logprobs": logprobs, "finish_reason": finish_reason(g.stop)});
        return Ok(Json(env.finished("text_completion", choice, n_prompt, &done)).into_response());
    }
    let chunk = move |text: &str, finish: Option<&str>| {
        env.object(
            "text_completion",
            json!([{"text": text, "index": 0, "logprobs": null, "finish_reason": finish}]),
        )
    };
    let include_usage = p.include_usage;
    let mut pending_lp = Vec::new();
    let frames = event_frames(rx, guard, move |ev| match ev {
        Event::Logprob(lp) => {
            pending_lp.push(lp);
            String::new()
        }
        Event::Text(t) => {
            let mut c = chunk(&t, None);
            if !pending_lp.is_empty() {
                c["choices"][0]["logprobs"] =
                    completion_logprobs_json(&model.tokenizer, &pending_lp);
                pending_lp.clear();
            }
            sse_data(&c)
        }
        Event::Done(done) => {
            let g = &done.generation;
            let mut last = chunk("", Some(finish_reason(g.stop)));
            last["timings"] = timings_json(g, done.spec.as_ref());
            if include_usage {
                last["usage"] = usage_json(n_prompt, g);
            }
            format!("{}data: [DONE]\n\n", sse_data(&last))
        }
        Event::Failed(msg) => stream_error(&msg),
    });
    Ok(sse_response(frames))
}

/// llama.cpp's `stop_type`.
fn native_stop_type(stop: StopReason) -> &'static str {
    match stop {
        StopReason::Eos => "eos",
        StopReason::Limit | StopReason::Context => "limit",
        StopReason::Word => "word",
        StopReason::Cancelled => "none",
    }
}

async fn native_completion(State(state): State<Shared>, body: Body) -> ApiResult<Response> {
    let r = state.ready()?;
    let body = json_body(body, state.cfg.body_limit).await?;
    let f = Fields::parse(&body)?;
    let p = gen_params(&f, Endpoint::Native, &state.cfg.defaults, r.model.n_ctx)?;
    let prompt = completion_prompt(r, &f)?;
    let stops = p.stop.clone();
    let (rx, guard, n_prompt) = submit(r, prompt, &p, state.cfg.default_max_tokens)?;
    let model_name = state.cfg.model_alias.clone();
    let model = r.model.clone();
    let n_probs = p.logprobs;
    let settings = settings_json(&state.cfg, r.model.n_ctx);
    let final_json = move |done: &Finished, content: &str| {
        let g = &done.generation;
        let stopping_word = match g.stop {
            // Which stop string matched is not recorded; with one it is that one.
            StopReason::Word if stops.len() == 1 => stops[0].clone(),
            _ => String::new(),
        };
        let mut v = json!({
            "content": content,
            "id_slot": done.slot,
            "stop": true,
            "model": model_name,
            "tokens_predicted": g.tokens.len(),
            "tokens_evaluated": n_prompt,
            "tokens_cached": g.cached_prompt_n,
            "generation_settings": settings,
            "truncated": false,
            "stop_type": native_stop_type(g.stop),
            "stopping_word": stopping_word,
            "timings": timings_json(g, done.spec.as_ref()),
        });
        if n_probs.is_some() {
            v["completion_probabilities"] = native_probs_json(&model.tokenizer, &g.logprobs);
        }
        v
    };
    if !p.stream {
        let done = collect(rx).await?;
        drop(guard);
        let v = final_json(&done, &done.generation.text);
        return Ok(Json(v).into_response());
    }
    let model_for_stream = r.model.clone();
    let mut pending_lp = Vec::new();
    let frames = event_frames(rx, guard, move |ev| match ev {
        Event::Logprob(lp) => {
            pending_lp.push(lp);
            String::new()
        }
        Event::Text(t) => {
            let mut c = json!({"content": t, "stop": false});
            if !pending_lp.is_empty() {
                c["completion_probabilities"] =
                    native_probs_json(&model_for_stream.tokenizer, &pending_lp);
                pending_lp.clear();
            }
            sse_data(&c)
        }
        Event::Done(done) => sse_data(&final_json(&done, "")),
        Event::Failed(msg) => stream_error(&msg),
    });
    Ok(sse_response(frames))
}
