//! `/v1/completions` (OpenAI) and `/completion` (llama.cpp's native format).

use super::info::{settings_json, token_ids};
use super::openai::{
    completion_logprobs_json, finish_reason, native_probs_json, prompt_input, timings_json,
    usage_json, ApiError, ApiResult, Endpoint, Fields, PromptInput,
};
use super::relay::{collect, event_frames, sse_data, sse_response, stream_error, submit, Envelope};
use super::slots::{Event, Finished};
use super::{gen_request, GenRequest, Ready, Shared};
use crate::decode::generate::StopReason;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

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

pub(super) async fn completions(State(state): State<Shared>, body: Body) -> ApiResult<Response> {
    let GenRequest { r, fields, p } = gen_request(&state, body, Endpoint::Completions).await?;
    let f = Fields(&fields);
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

pub(super) async fn native_completion(
    State(state): State<Shared>,
    body: Body,
) -> ApiResult<Response> {
    let GenRequest { r, fields, p } = gen_request(&state, body, Endpoint::Native).await?;
    let f = Fields(&fields);
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
