//! `blockspec serve`: an OpenAI- and llama-server-compatible HTTP API (axum + tokio).
//!
//! The model loads once on a background thread while `/health` answers 503; then `-np` slots
//! ([`slots`]) each run generations on their own thread and session. Handlers only parse,
//! validate, queue and relay: streaming responses are Server-Sent Events (`data: {...}`,
//! ending with `data: [DONE]` on the OpenAI endpoints).

mod chat;
pub mod chat_parse;
mod completions;
pub mod constrained;
pub mod embeddings;
pub mod infill;
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
use embeddings::Pooling;
use infill::FimTokens;
use metrics::Metrics;
use openai::{
    body_object, gen_params, ApiError, ApiResult, Endpoint, Fields, GenParams, RETRY_AFTER_S,
};
use serde_json::{Map, Value};
use slots::SlotPool;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

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
    /// The longest a client may take to send a request's headers, and then its body (`--timeout`);
    /// an idle keep-alive connection is closed after it too.
    pub read_timeout: Duration,
    /// Connections open at once (`--max-connections`); one more is answered 503 and closed.
    pub max_connections: usize,
    /// Serve `GET /slots` (`--slots`, the default; `--no-slots` answers 501).
    pub slots_endpoint: bool,
    /// Serve `/v1/embeddings` and `/embeddings` (`--embeddings`; otherwise 501).
    pub embeddings: bool,
    /// `--pooling` (None: the model's `{arch}.pooling_type`, else none).
    pub pooling: Option<Pooling>,
}

/// What exists once the model is loaded.
struct Ready {
    model: Arc<LoadedModel>,
    template: ChatTemplate,
    pool: Arc<SlotPool>,
    /// The model's fill-in-the-middle tokens (`/infill`).
    fim: FimTokens,
    /// How embeddings are pooled.
    pooling: Pooling,
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
        accept_loop(listener, router(state), &cfg).await;
        Ok(())
    })
}

/// Over-cap connections being answered 503 at once; more are closed without an answer.
const MAX_REFUSING: usize = 64;

/// Serve connections until interrupted: each on its own task with hyper's HTTP/1 settings
/// (`cfg.read_timeout` for the request headers, also between keep-alive requests), at most
/// `cfg.max_connections` at once. Then wait for the open ones to finish their responses.
async fn accept_loop(listener: tokio::net::TcpListener, app: Router, cfg: &ServerConfig) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let open = Arc::new(tokio::sync::Semaphore::new(cfg.max_connections));
    let refusing = Arc::new(tokio::sync::Semaphore::new(MAX_REFUSING));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(cfg.read_timeout);
    let mut interrupted = std::pin::pin!(tokio::signal::ctrl_c());
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little instead of spinning.
                    tracing::warn!("cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut interrupted => break,
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            if let Ok(permit) = refusing.clone().try_acquire_owned() {
                let max = cfg.max_connections;
                tokio::spawn(async move {
                    refuse_connection(stream, max).await;
                    drop(permit);
                });
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("connection ended: {e}");
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Answer a connection over the cap with a 503 (and `Retry-After`) without reading its request,
/// then close it. What the client already sent is read (briefly) first, so that closing does
/// not reset the connection before it has read the answer.
async fn refuse_connection(mut stream: tokio::net::TcpStream, max: usize) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let body = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "the server has {max} connections open, its limit (--max-connections); try again later"
        ),
    )
    .to_json()
    .to_string();
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: {RETRY_AFTER_S}\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let io = async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), io).await;
}

/// Load the model, its template and the slots on a thread; a failure ends the process (as
/// llama-server does), since the server cannot serve anything without them.
fn start_loading(state: Shared, load: LoadConfig) {
    std::thread::spawn(move || {
        let r = (|| -> Result<Ready> {
            let model = Arc::new(crate::session::load::load(&load)?);
            let template = ChatTemplate::from_gguf(&model.gguf, state.cfg.chat_template.clone())?;
            let pooling = match state.cfg.pooling {
                Some(p) => p,
                None if state.cfg.embeddings => Pooling::from_gguf(&model.gguf)?,
                None => Pooling::None,
            };
            let fim = FimTokens::of(&model.tokenizer);
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
                fim,
                pooling,
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
        .route("/v1/models/{*id}", get(info::model_retrieve))
        .route("/models/{*id}", get(info::model_retrieve))
        .route("/slots", get(info::slots))
        .route("/apply-template", post(chat::apply_template))
        .route("/infill", post(infill::infill))
        .route("/v1/embeddings", post(embeddings::embeddings_openai))
        .route("/embeddings", post(embeddings::embeddings_native))
        .route("/embedding", post(embeddings::embeddings_native))
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

/// Endpoints that answer without an API key (as llama-server's public endpoints), and the
/// model objects under `/v1/models/`.
const PUBLIC_PATHS: &[&str] = &["/health", "/v1/health", "/models", "/v1/models"];
const PUBLIC_PREFIXES: &[&str] = &["/models/", "/v1/models/"];

async fn check_api_key(State(state): State<Shared>, req: Request, next: Next) -> Response {
    if let Some(key) = &state.cfg.api_key {
        let path = req.uri().path();
        let public =
            PUBLIC_PATHS.contains(&path) || PUBLIC_PREFIXES.iter().any(|p| path.starts_with(p));
        if !public {
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
/// object of fields (400) and the generation parameters for `endpoint` (400), in that order;
/// `logit_bias` is read against the model's vocabulary and the request's grammar compiled
/// (400 naming the field).
async fn gen_request(
    state: &AppState,
    body: Body,
    endpoint: Endpoint,
) -> ApiResult<GenRequest<'_>> {
    let r = state.ready()?;
    let fields = body_object(json_body(body, &state.cfg).await?)?;
    let f = Fields(&fields);
    let mut p = gen_params(&f, endpoint, &state.cfg.defaults, r.model.n_ctx)?;
    // A request's logit_bias replaces the command line's (as in llama-server).
    if let Some(bias) = constrained::logit_bias(&f, &r.model.tokenizer)? {
        p.sampling.logit_bias = bias;
    }
    p.sampling
        .validate()
        .and_then(|()| p.sampling.check_vocab(r.model.tokenizer.n_vocab()))
        .map_err(ApiError::bad_request)?;
    if let Some(g) = &p.grammar {
        p.constraint = Some(constrained::compile(&r.model, g).await?);
    }
    Ok(GenRequest { r, fields, p })
}

/// The JSON body, or an error: 413 over the size limit, 408 when it has not all arrived within
/// the read timeout, 400 for anything that is not JSON.
///
/// An oversized body is still read (and dropped) up to a multiple of the limit before the 413
/// goes out: answering while the client is still sending would close the connection under it,
/// and it would see a broken pipe instead of the error.
async fn json_body(body: Body, cfg: &ServerConfig) -> ApiResult<Value> {
    use tokio_stream::StreamExt as _;
    let limit = cfg.body_limit;
    let deadline = tokio::time::Instant::now() + cfg.read_timeout;
    let drain_max = limit.saturating_mul(4).max(64 << 20);
    let mut stream = body.into_data_stream();
    let mut buf = Vec::new();
    let mut total = 0usize;
    loop {
        let Ok(next) = tokio::time::timeout_at(deadline, stream.next()).await else {
            return Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {} s (--timeout); {total} bytes came",
                    cfg.read_timeout.as_secs_f64()
                ),
            ));
        };
        let Some(chunk) = next else {
            break;
        };
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
