//! `blockspec serve`: an OpenAI- and llama-server-compatible HTTP API (axum + tokio).
//!
//! The model loads once on a background thread while `/health` answers 503; then `-np` slots
//! ([`slots`]) each run generations on their own thread and session. Handlers only parse,
//! validate, queue and relay: streaming responses are Server-Sent Events (`data: {...}`,
//! ending with `data: [DONE]` on the OpenAI endpoints).

mod chat;
pub mod chat_parse;
mod completions;
mod info;
pub mod metrics;
pub mod openai;
mod relay;
pub mod slots;
mod tool_xml;

use crate::decode::sampling::SamplingParams;
use crate::session::load::LoadConfig;
use crate::session::LoadedModel;
use crate::text::chat::ChatTemplate;
use anyhow::{Context as _, Result};
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use metrics::Metrics;
use openai::{body_object, gen_params, ApiError, ApiResult, Endpoint, Fields, GenParams};
use serde_json::{Map, Value};
use slots::SlotPool;
use std::sync::{Arc, OnceLock};

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

/// Run the server until interrupted. The model loads from `load` (the total context and the
/// threads split between `cfg.n_slots` slots) on a background thread; the listener answers
/// (503 on everything but `/health` semantics) while it runs.
pub fn serve(cfg: ServerConfig, load: LoadConfig) -> Result<()> {
    let load = load.per_slot(cfg.n_slots)?;
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
fn start_loading(state: Shared, load: LoadConfig) {
    std::thread::spawn(move || {
        let r = (|| -> Result<Ready> {
            let model = Arc::new(crate::session::load::load(&load)?);
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
        .route("/health", get(info::health))
        .route("/v1/health", get(info::health))
        .route("/v1/models", get(info::models))
        .route("/models", get(info::models))
        .route("/props", get(info::props))
        .route("/metrics", get(info::metrics_text))
        .route("/tokenize", post(info::tokenize))
        .route("/detokenize", post(info::detokenize))
        .route("/v1/chat/completions", post(chat::chat_completions))
        .route("/chat/completions", post(chat::chat_completions))
        .route("/v1/completions", post(completions::completions))
        .route("/completion", post(completions::native_completion))
        .route("/completions", post(completions::native_completion))
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

/// The opening every generation endpoint shares: the loaded model, the request's fields and
/// its generation parameters.
struct GenRequest<'s> {
    r: &'s Ready,
    fields: Map<String, Value>,
    p: GenParams,
}

/// Read a generation request: 503 while the model loads, then the JSON body (413/400), its
/// object of fields (400) and the generation parameters for `endpoint` (400), in that order.
async fn gen_request(
    state: &AppState,
    body: Body,
    endpoint: Endpoint,
) -> ApiResult<GenRequest<'_>> {
    let r = state.ready()?;
    let fields = body_object(json_body(body, state.cfg.body_limit).await?)?;
    let p = gen_params(
        &Fields(&fields),
        endpoint,
        &state.cfg.defaults,
        r.model.n_ctx,
    )?;
    Ok(GenRequest { r, fields, p })
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
