//! `/v1/embeddings` (OpenAI) and `/embeddings` (llama.cpp's native form), with `--embeddings`.
//!
//! An input's embedding is read from the target's own forward pass: every token's hidden state
//! after the final norm (the vector the lm_head multiplies, llama.cpp's `t_embd`), then pooled
//! (`--pooling`: the model's `{arch}.pooling_type`, else none, as llama-server) and normalized
//! (`embd_normalize`, default 2: Euclidean). Pooling `none` gives every token's vector,
//! unnormalized, on the native route only; the OpenAI route needs one vector and refuses it.

use super::completions::tokenize_prompt;
use super::openai::{body_object, prompt_inputs, ApiError, ApiResult, Fields};
use super::slots::{Event, Job, Work};
use super::{json_body, Shared};
use crate::decode::generate::GenerateOptions;
use crate::format::gguf::Gguf;
use anyhow::{bail, Result};
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

/// How the token vectors of an input become its embedding (llama.cpp's pooling types).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Pooling {
    /// Every token's vector.
    None,
    /// Their mean.
    Mean,
    /// The first token's.
    Cls,
    /// The last token's.
    Last,
}

impl Pooling {
    /// The model's pooling (`{arch}.pooling_type`), or none when it names none (llama.cpp's
    /// default for a decoder model).
    pub fn from_gguf(g: &Gguf) -> Result<Pooling> {
        let arch = g.arch()?;
        Ok(match g.int_or(&format!("{arch}.pooling_type"), 0)? {
            0 => Pooling::None,
            1 => Pooling::Mean,
            2 => Pooling::Cls,
            3 => Pooling::Last,
            other => bail!(
                "{arch}.pooling_type {other} is not supported (none, mean, cls and last are); choose one with --pooling"
            ),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Pooling::None => "none",
            Pooling::Mean => "mean",
            Pooling::Cls => "cls",
            Pooling::Last => "last",
        }
    }
}

/// The vectors of one input: `rows` (`n_tokens x n_embd`) pooled, each normalized with
/// llama.cpp's `embd_normalize` (-1: none, 0: max-abs scaled to int16, 2: Euclidean, p > 0:
/// p-norm) when there is pooling; without pooling every token's vector as it is.
pub fn pool(rows: &[f32], n_embd: usize, pooling: Pooling, normalize: i64) -> Vec<Vec<f32>> {
    let n_tokens = rows.len() / n_embd.max(1);
    let row = |i: usize| rows[i * n_embd..(i + 1) * n_embd].to_vec();
    let pooled = match pooling {
        Pooling::None => return (0..n_tokens).map(row).collect(),
        _ if n_tokens == 0 => vec![0.0; n_embd],
        Pooling::Cls => row(0),
        Pooling::Last => row(n_tokens - 1),
        Pooling::Mean => {
            let mut m = vec![0.0f64; n_embd];
            for t in 0..n_tokens {
                for (acc, &x) in m.iter_mut().zip(&rows[t * n_embd..(t + 1) * n_embd]) {
                    *acc += x as f64;
                }
            }
            m.iter().map(|&x| (x / n_tokens as f64) as f32).collect()
        }
    };
    vec![normalized(&pooled, normalize)]
}

/// llama.cpp's `common_embd_normalize`.
pub fn normalized(v: &[f32], norm: i64) -> Vec<f32> {
    let sum: f64 = match norm {
        -1 => 1.0,
        0 => v.iter().fold(0.0f64, |m, &x| m.max((x as f64).abs())) / 32760.0,
        2 => v
            .iter()
            .map(|&x| (x as f64) * (x as f64))
            .sum::<f64>()
            .sqrt(),
        p => v
            .iter()
            .map(|&x| (x as f64).abs().powf(p as f64))
            .sum::<f64>()
            .powf(1.0 / p as f64),
    };
    let scale = if sum > 0.0 { 1.0 / sum } else { 0.0 };
    v.iter().map(|&x| (x as f64 * scale) as f32).collect()
}

/// Standard base64 (with padding) of the vector's little-endian f32 bytes: OpenAI's
/// `encoding_format: "base64"`.
pub fn base64_f32(v: &[f32]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for k in 0..4 {
            if k <= c.len() {
                out.push(ABC[(n >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub(super) async fn embeddings_openai(
    State(state): State<Shared>,
    body: Body,
) -> ApiResult<Response> {
    embeddings(state, body, true).await
}

pub(super) async fn embeddings_native(
    State(state): State<Shared>,
    body: Body,
) -> ApiResult<Response> {
    embeddings(state, body, false).await
}

async fn embeddings(state: Shared, body: Body, openai: bool) -> ApiResult<Response> {
    let r = state.ready()?;
    if !state.cfg.embeddings {
        return Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "This server does not support embeddings. Start it with `--embeddings`",
        ));
    }
    let pooling = r.pooling;
    if openai && pooling == Pooling::None {
        return Err(ApiError::bad_request(
            "Pooling type 'none' is not OAI compatible. Please use a different pooling type (start the server with --pooling mean, cls or last)",
        ));
    }
    let fields = body_object(json_body(body, &state.cfg).await?)?;
    let f = Fields(&fields);
    // llama-server: `content` is its native field, answered in the native form.
    let (field, openai) = if f.get("input").is_some() {
        ("input", openai)
    } else if f.get("content").is_some() {
        ("content", false)
    } else {
        return Err(ApiError::bad_request("'input' (or 'content') is required"));
    };
    let base64 = match f.str("encoding_format")? {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "'encoding_format' must be \"float\" or \"base64\", got \"{other}\""
            )))
        }
    };
    let normalize = f.int_in("embd_normalize", -1, 64)?.unwrap_or(2);
    let n_ctx = r.model.n_ctx;
    let mut inputs = Vec::new();
    for (i, p) in prompt_inputs(&f, field)?.iter().enumerate() {
        let tokens = tokenize_prompt(r, p, field)?.tokens;
        if tokens.is_empty() {
            return Err(ApiError::bad_request(format!(
                "'{field}[{i}]' is empty (no tokens)"
            )));
        }
        if tokens.len() > n_ctx {
            return Err(ApiError::bad_request(format!(
                "'{field}[{i}]' is {} tokens, more than the context of {n_ctx} tokens per slot",
                tokens.len()
            )));
        }
        inputs.push(tokens);
    }
    let n_inputs = inputs.len();
    let n_tokens: usize = inputs.iter().map(Vec::len).sum();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let job = Job::new(
        Work::Embed(inputs),
        GenerateOptions::default(),
        false,
        false,
        tx,
    );
    let guard = r.pool.submit(job)?;
    let n_embd = r.model.model.hp.n_embd;
    let mut vectors: Vec<Option<Vec<Vec<f32>>>> = vec![None; n_inputs];
    let mut got = 0;
    while got < n_inputs {
        match rx.recv().await {
            Some(Event::Embedding(e)) => {
                if let Some(slot) = vectors.get_mut(e.index) {
                    *slot = Some(pool(&e.rows, n_embd, pooling, normalize));
                    got += 1;
                }
            }
            Some(Event::Failed(msg)) => {
                return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, msg))
            }
            Some(_) => {}
            None => {
                return Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the embeddings job ended without all its results",
                ))
            }
        }
    }
    drop(guard);
    let vectors: Vec<Vec<Vec<f32>>> = vectors.into_iter().map(Option::unwrap_or_default).collect();
    if !openai {
        let all: Vec<Value> = vectors
            .iter()
            .enumerate()
            .map(|(i, v)| json!({"index": i, "embedding": v}))
            .collect();
        return Ok(Json(Value::Array(all)).into_response());
    }
    let data: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let first = v.first().map_or(&[][..], |x| &x[..]);
            let embedding = if base64 {
                json!(base64_f32(first))
            } else {
                json!(first)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    Ok(Json(json!({
        "object": "list",
        "model": state.cfg.model_alias,
        "data": data,
        "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens},
    }))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooling_and_norms() {
        // Two tokens of 2 dims: [3, 4], [0, 2].
        let rows = [3.0, 4.0, 0.0, 2.0];
        assert_eq!(
            pool(&rows, 2, Pooling::None, 2),
            vec![vec![3.0, 4.0], vec![0.0, 2.0]]
        );
        assert_eq!(pool(&rows, 2, Pooling::Cls, 2), vec![vec![0.6, 0.8]]);
        assert_eq!(pool(&rows, 2, Pooling::Last, -1), vec![vec![0.0, 2.0]]);
        assert_eq!(pool(&rows, 2, Pooling::Mean, -1), vec![vec![1.5, 3.0]]);
        assert_eq!(normalized(&[1.0, -3.0], 1), vec![0.25, -0.75]);
        assert_eq!(normalized(&[1.0, -2.0], 0), vec![16380.0, -32760.0]);
        assert_eq!(normalized(&[0.0, 0.0], 2), vec![0.0, 0.0]);
    }

    #[test]
    fn base64_matches_the_standard_alphabet() {
        // 1.0f32 = 00 00 80 3f; two of them: "AACAPwAAgD8=".
        assert_eq!(base64_f32(&[1.0]), "AACAPw==");
        assert_eq!(base64_f32(&[1.0, 1.0]), "AACAPwAAgD8=");
        assert_eq!(base64_f32(&[]), "");
    }
}
