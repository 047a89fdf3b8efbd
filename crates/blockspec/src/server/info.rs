//! The endpoints that generate nothing: health, models, props, metrics, tokenize, detokenize.

use super::openai::{short, unix_time, ApiError, ApiResult, Fields};
use super::{json_body, AppState, Ready, ServerConfig, Shared};
use crate::session::{DraftSource, LoadedModel};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

pub(super) async fn health(State(state): State<Shared>) -> Response {
    match state.ready() {
        Ok(_) => Json(json!({"status": "ok"})).into_response(),
        Err(e) => e.into_response(),
    }
}

/// The one model's `/v1/models` entry.
fn model_entry(state: &AppState, r: &Ready) -> Value {
    let hp = &r.model.model.hp;
    json!({
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
    })
}

pub(super) async fn models(State(state): State<Shared>) -> ApiResult<Json<Value>> {
    let r = state.ready()?;
    Ok(Json(
        json!({"object": "list", "data": [model_entry(&state, r)]}),
    ))
}

/// `GET /v1/models/{id}` (the openai client's `models.retrieve`): the model object when `id`
/// names the served model (its alias, the model path or the path's file name), else 404.
pub(super) async fn model_retrieve(
    State(state): State<Shared>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let r = state.ready()?;
    let path = std::path::Path::new(&state.cfg.model_path);
    let file_name = path.file_name().map(|f| f.to_string_lossy());
    let known = id == state.cfg.model_alias
        || id == state.cfg.model_path
        || file_name.as_deref() == Some(id.as_str());
    if !known {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "The model '{id}' does not exist; this server serves '{}'",
                state.cfg.model_alias
            ),
        ));
    }
    Ok(Json(model_entry(&state, r)))
}

/// `?fail_on_no_slot` of `GET /slots`.
#[derive(serde::Deserialize)]
pub(super) struct SlotsQuery {
    fail_on_no_slot: Option<String>,
}

/// `GET /slots`, as llama-server: one object per slot with its context, whether it is
/// processing, and the parameters of its current (or last) task. No prompt text, stop strings
/// or other request content. `?fail_on_no_slot=1` answers 503 when no slot is idle. 501 with
/// `--no-slots`.
pub(super) async fn slots(
    State(state): State<Shared>,
    Query(q): Query<SlotsQuery>,
) -> ApiResult<Json<Value>> {
    if !state.cfg.slots_endpoint {
        return Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "This server does not support slots endpoint. Start it with `--slots`",
        ));
    }
    let r = state.ready()?;
    let slots = r.pool.slots();
    let fail = q
        .fail_on_no_slot
        .is_some_and(|v| !matches!(v.as_str(), "0" | "false"));
    if fail && slots.iter().all(|s| s.is_processing) {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no slot available",
        ));
    }
    let speculative = !matches!(r.model.draft, DraftSource::None);
    let d = &state.cfg.defaults;
    let all: Vec<Value> = slots
        .iter()
        .map(|s| {
            let sampling = s
                .task
                .as_ref()
                .and_then(|t| t.sampling.as_ref())
                .unwrap_or(d);
            let n_predict = match &s.task {
                Some(t) => t.max_tokens.map_or(-1, |n| n as i64),
                None => state.cfg.default_max_tokens.map_or(-1, |n| n as i64),
            };
            json!({
                "id": s.id,
                "id_task": s.task.as_ref().map_or(-1, |t| t.id as i64),
                "n_ctx": r.model.n_ctx,
                "speculative": speculative,
                "is_processing": s.is_processing,
                "task_type": s.task.as_ref().map_or("none", |t| t.kind),
                "n_tokens_cached": s.n_cached,
                "n_prompt_tokens": s.task.as_ref().map_or(0, |t| t.n_prompt_tokens),
                "n_choices": s.task.as_ref().map_or(0, |t| t.n_runs),
                "params": {
                    "n_predict": n_predict,
                    "seed": sampling.seed,
                    "temperature": sampling.temperature,
                    "top_k": sampling.top_k,
                    "top_p": sampling.top_p,
                    "min_p": sampling.min_p,
                    "repeat_penalty": sampling.repeat_penalty,
                    "repeat_last_n": sampling.repeat_last_n,
                    "presence_penalty": sampling.presence_penalty,
                    "frequency_penalty": sampling.frequency_penalty,
                    "ignore_eos": s.task.as_ref().is_some_and(|t| t.ignore_eos),
                    "n_stop": s.task.as_ref().map_or(0, |t| t.n_stop),
                },
            })
        })
        .collect();
    Ok(Json(Value::Array(all)))
}

fn spec_name(m: &LoadedModel) -> &'static str {
    match m.draft {
        DraftSource::None => "none",
        DraftSource::DFlash { .. } => "draft-dflash",
        DraftSource::DraftModel { .. } => "draft-simple",
        DraftSource::Ngram { .. } => "ngram-simple",
    }
}

pub(super) fn settings_json(cfg: &ServerConfig, n_ctx: usize) -> Value {
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

pub(super) async fn props(State(state): State<Shared>) -> ApiResult<Json<Value>> {
    let r = state.ready()?;
    Ok(Json(json!({
        "default_generation_settings": settings_json(&state.cfg, r.model.n_ctx),
        "total_slots": r.pool.n_slots(),
        "model_alias": state.cfg.model_alias,
        "model_path": state.cfg.model_path,
        "chat_template": r.template.source(),
        "modalities": {"vision": false, "audio": false},
        "speculative": {"type": spec_name(&r.model), "verify": r.model.verify.name()},
        "build_info": concat!("blockspec ", env!("CARGO_PKG_VERSION")),
    })))
}

pub(super) async fn metrics_text(State(state): State<Shared>) -> ApiResult<Response> {
    state.ready()?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response())
}

pub(super) async fn tokenize(State(state): State<Shared>, body: Body) -> ApiResult<Json<Value>> {
    let r = state.ready()?;
    let body = json_body(body, &state.cfg).await?;
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
pub(super) fn token_ids(v: &Value, field: &str, n_vocab: usize) -> ApiResult<Vec<u32>> {
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

pub(super) async fn detokenize(State(state): State<Shared>, body: Body) -> ApiResult<Json<Value>> {
    let r = state.ready()?;
    let body = json_body(body, &state.cfg).await?;
    let f = Fields::parse(&body)?;
    let tok = &r.model.tokenizer;
    let ids = match f.get("tokens") {
        Some(v) => token_ids(v, "tokens", tok.n_vocab())?,
        None => Vec::new(),
    };
    Ok(Json(json!({ "content": tok.decode(&ids, false) })))
}
