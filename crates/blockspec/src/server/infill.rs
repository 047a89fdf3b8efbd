//! `POST /infill`: fill-in-the-middle with the model's FIM tokens, as llama-server builds it.
//!
//! The prompt, from llama.cpp's `format_prompt_infill` (the repo-level pattern of Qwen2.5-Coder,
//! arXiv 2409.12186):
//!
//! ```text
//! [FIM_REP]myproject\n [FIM_SEP]{filename}\n{text} ... [FIM_SEP]filename\n   (the extra context)
//! [BOS if the model adds one] [FIM_PRE]{input_prefix}{prompt} [FIM_SUF]{input_suffix} [FIM_MID]
//! ```
//!
//! Prefix, suffix, file names and texts are tokenized without special tokens and without
//! parsing special-token text; `prompt` with special-token text parsed. The prefix keeps its
//! last `3/4` of a 2048-token batch, the suffix its first `1/4 - 2 - prompt` tokens, and the
//! extra context its last `n_ctx - 2048 - 2 * n_predict` tokens (the server's `-n`), as there.
//! (llama-server's README places `prompt` after `FIM_MID`; its code, followed here, puts it
//! right after the prefix.) The reply is `/completion`'s.

use super::completions::{native_reply, Prompt};
use super::openai::{short, ApiError, ApiResult, Endpoint, Fields};
use super::{gen_request, GenRequest, Shared};
use crate::text::tokenizer::Tokenizer;
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value;

/// llama-server's batch size (`-b`, 2048 by default), which bounds the prefix and suffix taken.
const INFILL_BATCH: usize = 2048;

/// The model's fill-in-the-middle tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FimTokens {
    pub pre: Option<u32>,
    pub suf: Option<u32>,
    pub mid: Option<u32>,
    /// The repository-name token (Qwen's `<|repo_name|>`).
    pub rep: Option<u32>,
    /// The file separator (Qwen's `<|file_sep|>`).
    pub sep: Option<u32>,
}

impl FimTokens {
    /// The tokenizer's FIM ids: from the GGUF's `tokenizer.ggml.fim_*_token_id` keys, else the
    /// vocabulary's tokens of the spellings llama.cpp recognizes (the same ids that end a
    /// generation, see `text::tokenizer::special`).
    pub fn of(tok: &Tokenizer) -> FimTokens {
        let sp = tok.special_ids();
        FimTokens {
            pre: sp.fim_pre,
            suf: sp.fim_suf,
            mid: sp.fim_mid,
            rep: sp.fim_rep,
            sep: sp.fim_sep,
        }
    }

    /// The three tokens infill needs, or the 501 llama-server answers without them.
    fn required(&self) -> ApiResult<(u32, u32, u32)> {
        let mut missing = String::new();
        for (t, what) in [
            (self.pre, "prefix"),
            (self.suf, "suffix"),
            (self.mid, "middle"),
        ] {
            if t.is_none() {
                missing.push_str(&format!("{what} token is missing. "));
            }
        }
        match (self.pre, self.suf, self.mid) {
            (Some(p), Some(s), Some(m)) => Ok((p, s, m)),
            _ => Err(ApiError::new(
                StatusCode::NOT_IMPLEMENTED,
                format!(
                    "Infill is not supported by this model: {}",
                    missing.trim_end()
                ),
            )),
        }
    }
}

/// One `input_extra` chunk.
pub struct ExtraChunk {
    pub filename: String,
    pub text: String,
}

/// The infill prompt's tokens (see the module's documentation).
#[allow(clippy::too_many_arguments)]
pub fn infill_tokens(
    tok: &Tokenizer,
    fim: &FimTokens,
    prefix: &str,
    suffix: &str,
    extra: &[ExtraChunk],
    prompt: &str,
    n_ctx: usize,
    n_predict: i64,
) -> ApiResult<Vec<u32>> {
    let (pre, suf, mid) = fim.required()?;
    let plain = |s: &str, field: &str| {
        tok.encode(s, false, false)
            .map_err(|e| ApiError::bad_request(format!("cannot tokenize '{field}': {e:#}")))
    };
    let mut extra_tokens = Vec::new();
    if let Some(rep) = fim.rep {
        extra_tokens.push(rep);
        extra_tokens.extend(plain("myproject\n", "input_extra")?);
    }
    for chunk in extra {
        match fim.sep {
            Some(sep) => {
                extra_tokens.push(sep);
                extra_tokens.extend(plain(&format!("{}\n", chunk.filename), "input_extra")?);
            }
            None => extra_tokens.extend(plain("\n\n--- snippet ---\n\n", "input_extra")?),
        }
        extra_tokens.extend(plain(&chunk.text, "input_extra")?);
    }
    if let Some(sep) = fim.sep {
        extra_tokens.push(sep);
        extra_tokens.extend(plain("filename\n", "input_extra")?);
    }
    let prefix = plain(prefix, "input_prefix")?;
    let suffix = plain(suffix, "input_suffix")?;
    let prompt = tok
        .encode(prompt, false, true)
        .map_err(|e| ApiError::bad_request(format!("cannot tokenize 'prompt': {e:#}")))?;

    let n_batch = INFILL_BATCH;
    let n_prefix_take = prefix.len().min(3 * (n_batch / 4));
    let n_suffix_take = suffix
        .len()
        .min((n_batch / 4).saturating_sub(2 + prompt.len()));
    let room = (n_ctx as i64 - n_batch as i64 - 2 * n_predict).max(0) as usize;
    let n_extra_take = room.min(extra_tokens.len());

    let mut out = Vec::new();
    out.extend_from_slice(&extra_tokens[extra_tokens.len() - n_extra_take..]);
    if tok.add_bos() {
        out.extend(tok.bos());
    }
    out.push(pre);
    out.extend_from_slice(&prefix[prefix.len() - n_prefix_take..]);
    out.extend_from_slice(&prompt);
    out.push(suf);
    out.extend_from_slice(&suffix[..n_suffix_take]);
    out.push(mid);
    Ok(out)
}

/// `input_extra`: an array of `{"filename": string, "text": string}` (filename optional).
fn extra_chunks(f: &Fields) -> ApiResult<Vec<ExtraChunk>> {
    let Some(v) = f.get("input_extra") else {
        return Ok(Vec::new());
    };
    let Value::Array(a) = v else {
        return Err(ApiError::bad_request(format!(
            "'input_extra' must be an array of {{\"filename\": string, \"text\": string}}, got {}",
            short(v)
        )));
    };
    a.iter()
        .enumerate()
        .map(|(i, c)| {
            let text = c.get("text").and_then(Value::as_str).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "'input_extra[{i}]' must be an object with a string 'text', got {}",
                    short(c)
                ))
            })?;
            let filename = match c.get("filename") {
                None | Some(Value::Null) => "tmp",
                Some(Value::String(s)) => s,
                Some(other) => {
                    return Err(ApiError::bad_request(format!(
                        "'input_extra[{i}].filename' must be a string, got {}",
                        short(other)
                    )))
                }
            };
            Ok(ExtraChunk {
                filename: filename.to_string(),
                text: text.to_string(),
            })
        })
        .collect()
}

pub(super) async fn infill(State(state): State<Shared>, body: Body) -> ApiResult<Response> {
    let GenRequest { r, fields, p } = gen_request(&state, body, Endpoint::Native).await?;
    r.fim.required()?;
    let f = Fields(&fields);
    let prefix = f
        .str("input_prefix")?
        .ok_or_else(|| ApiError::bad_request("'input_prefix' is required (a string)"))?;
    let suffix = f
        .str("input_suffix")?
        .ok_or_else(|| ApiError::bad_request("'input_suffix' is required (a string)"))?;
    let extra = extra_chunks(&f)?;
    let prompt = f.str("prompt")?.unwrap_or("");
    let n_predict = state.cfg.default_max_tokens.map_or(-1, |n| n as i64);
    let tokens = infill_tokens(
        &r.model.tokenizer,
        &r.fim,
        prefix,
        suffix,
        &extra,
        prompt,
        r.model.n_ctx,
        n_predict,
    )?;
    let prompts = vec![Prompt {
        tokens,
        text: String::new(),
    }];
    native_reply(&state, r, prompts, p).await
}
