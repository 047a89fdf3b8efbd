//! The endpoints that generate nothing: health, models, props, metrics, tokenize, detokenize.

use super::openai::{short, unix_time, ApiError, ApiResult, Fields};
use super::{json_body, ServerConfig, Shared};
use crate::session::{DraftSource, LoadedModel};
use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

pub(super) async fn health(State(state): State<Shared>) -> Response {
    match state.ready() {
        Ok(_) => Json(json!({"status": "ok"})).into_response(),
        Err(e) => e.into_response(),
    }
}

pub(super) async fn models(State(state): State<Shared>) -> ApiResult<Json<Value>> {
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
