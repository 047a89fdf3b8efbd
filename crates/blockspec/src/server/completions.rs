//! `/v1/completions` (OpenAI) and `/completion` (llama.cpp's native format).

use super::info::settings_json;
use super::openai::{
    completion_logprobs_json, echo_logprobs_json, finish_reason, native_probs_json, prompt_inputs,
    timings_json, usage_json, ApiError, ApiResult, Endpoint, Fields, GenParams, PromptInput,
    PromptPiece,
};
use super::relay::{
    collect, event_frames, runs_of, sse_data, sse_response, stream_error, submit, Envelope,
};
use super::slots::{Event, Finished, Run};
use super::{gen_request, AppState, GenRequest, Ready, Shared};
use crate::decode::generate::StopReason;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

/// A prompt's tokens, and the text `echo` puts before its completions.
pub(super) struct Prompt {
    pub tokens: Vec<u32>,
    pub text: String,
}

/// Most generations in one request (prompts times `n`); they run one after another.
const MAX_RUNS: usize = 64;

/// Tokenize one prompt of field `field` as llama-server does: text with the model's special
/// tokens added (BOS when it wants one) and special-token text parsed; token ids checked
/// against the vocabulary; a mixed prompt piece by piece (only a leading text piece gets BOS).
pub(super) fn tokenize_prompt(r: &Ready, input: &PromptInput, field: &str) -> ApiResult<Prompt> {
    let tok = &r.model.tokenizer;
    let n_vocab = tok.n_vocab();
    let check = |t: u64| -> ApiResult<u32> {
        if t < n_vocab as u64 {
            Ok(t as u32)
        } else {
            Err(ApiError::bad_request(format!(
                "'{field}': {t} is not a token id (the vocabulary has {n_vocab})"
            )))
        }
    };
    let encode = |s: &str, add_special: bool| {
        tok.encode(s, add_special, true)
            .map_err(|e| ApiError::bad_request(format!("cannot tokenize '{field}': {e:#}")))
    };
    match input {
        PromptInput::Text(s) => Ok(Prompt {
            tokens: encode(s, true)?,
            text: s.clone(),
        }),
        PromptInput::Tokens(ids) => {
            let tokens = ids
                .iter()
                .map(|&t| check(t))
                .collect::<ApiResult<Vec<u32>>>()?;
            let text = tok.decode(&tokens, false);
            Ok(Prompt { tokens, text })
        }
        PromptInput::Mixed(pieces) => {
            let mut tokens = Vec::new();
            for (i, piece) in pieces.iter().enumerate() {
                match piece {
                    PromptPiece::Text(s) => tokens.extend(encode(s, i == 0)?),
                    PromptPiece::Token(t) => tokens.push(check(*t)?),
                }
            }
            let text = tok.decode(&tokens, false);
            Ok(Prompt { tokens, text })
        }
    }
}

fn completion_prompts(r: &Ready, f: &Fields) -> ApiResult<Vec<Prompt>> {
    prompt_inputs(f, "prompt")?
        .iter()
        .map(|p| tokenize_prompt(r, p, "prompt"))
        .collect()
}

/// The runs of a request: each prompt's `n` choices, in OpenAI's order (choice index =
/// prompt index * n + i).
fn all_runs(prompts: &[Prompt], p: &GenParams) -> ApiResult<Vec<Run>> {
    let total = prompts.len() * p.n;
    if total > MAX_RUNS {
        return Err(ApiError::bad_request(format!(
            "{} prompts with 'n' = {} ask for {total} completions; at most {MAX_RUNS} are made in one request",
            prompts.len(),
            p.n
        )));
    }
    Ok(prompts
        .iter()
        .flat_map(|pr| runs_of(&pr.tokens, p))
        .collect())
}

pub(super) async fn completions(State(state): State<Shared>, body: Body) -> ApiResult<Response> {
    let GenRequest { r, fields, mut p } = gen_request(&state, body, Endpoint::Completions).await?;
    let f = Fields(&fields);
    let echo = f.bool("echo")?.unwrap_or(false);
    // `echo` with `logprobs`: the prompt's tokens are scored too (lm-eval-harness style
    // log-likelihoods, usually with `max_tokens: 0`).
    p.prompt_logprobs = echo && p.logprobs.is_some();
    if p.prompt_logprobs && p.stream {
        return Err(ApiError::bad_request(
            "'echo' with 'logprobs' is not supported when streamed ('stream': true); ask without streaming",
        ));
    }
    let prompts = completion_prompts(r, &f)?;
    let runs = all_runs(&prompts, &p)?;
    let n_runs = runs.len();
    let n_prompt: usize = prompts.iter().map(|pr| pr.tokens.len()).sum();
    let (rx, guard) = submit(r, runs, &p, state.cfg.default_max_tokens)?;
    let env = Envelope::new("cmpl", &state.cfg.model_alias);
    let model = r.model.clone();
    let n = p.n;
    let prompt_tokens: Vec<Vec<u32>> = prompts.iter().map(|pr| pr.tokens.clone()).collect();
    let echoed: Vec<String> = prompts
        .into_iter()
        .map(|pr| if echo { pr.text } else { String::new() })
        .collect();
    if !p.stream {
        let done = collect(rx, n_runs).await?;
        drop(guard);
        let choices = done
            .iter()
            .map(|d| {
                let g = &d.generation;
                let prompt = &prompt_tokens[d.index / n];
                let logprobs = match (p.logprobs, prompt.first()) {
                    (Some(_), Some(&first)) if p.prompt_logprobs => {
                        let all: Vec<_> =
                            g.prompt_logprobs.iter().chain(&g.logprobs).cloned().collect();
                        echo_logprobs_json(&model.tokenizer, first, &all)
                    }
                    (Some(_), _) => completion_logprobs_json(&model.tokenizer, &g.logprobs),
                    (None, _) => Value::Null,
                };
                let text = format!("{}{}", echoed[d.index / n], g.text);
                json!({"text": text, "index": d.index, "logprobs": logprobs, "finish_reason": finish_reason(g.stop)})
            })
            .collect();
        return Ok(Json(env.finished("text_completion", choices, n_prompt, &done)).into_response());
    }
    let chunk = move |index: usize, text: &str, finish: Option<&str>| {
        env.object(
            "text_completion",
            json!([{"text": text, "index": index, "logprobs": null, "finish_reason": finish}]),
        )
    };
    let include_usage = p.include_usage;
    let mut pending_lp = Vec::new();
    // Which runs have sent their first chunk (that carries the echoed prompt).
    let mut started = vec![false; n_runs];
    let mut finished = Vec::new();
    let frames = event_frames(rx, guard, move |ev| match ev {
        Event::Logprob(_, lp) => {
            pending_lp.push(lp);
            String::new()
        }
        Event::Text(i, t) => {
            let mut text = t;
            if let Some(s) = started.get_mut(i) {
                if !*s {
                    *s = true;
                    text.insert_str(0, &echoed[i / n]);
                }
            }
            let mut c = chunk(i, &text, None);
            if !pending_lp.is_empty() {
                c["choices"][0]["logprobs"] =
                    completion_logprobs_json(&model.tokenizer, &pending_lp);
                pending_lp.clear();
            }
            sse_data(&c)
        }
        Event::Done(done) => {
            let i = done.index;
            let mut out = String::new();
            if started.get(i) == Some(&false) && !echoed[i / n].is_empty() {
                out.push_str(&sse_data(&chunk(i, &echoed[i / n], None)));
            }
            let g = &done.generation;
            let mut last = chunk(i, "", Some(finish_reason(g.stop)));
            last["timings"] = timings_json(g, done.spec.as_ref());
            finished.push(*done);
            if finished.len() == n_runs {
                if include_usage {
                    last["usage"] = usage_json(n_prompt, &finished);
                }
                out.push_str(&sse_data(&last));
                out.push_str("data: [DONE]\n\n");
            } else {
                out.push_str(&sse_data(&last));
            }
            out
        }
        Event::Embedding(_) => String::new(),
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
    let prompts = completion_prompts(r, &f)?;
    native_reply(&state, r, prompts, p).await
}

/// The reply of llama.cpp's native completion endpoints (`/completion`, `/infill`): one object
/// per prompt (an array of them for a list of prompts; streamed chunks then carry `index`).
pub(super) async fn native_reply(
    state: &AppState,
    r: &Ready,
    prompts: Vec<Prompt>,
    p: GenParams,
) -> ApiResult<Response> {
    let n_prompts = prompts.len();
    let prompt_lens: Vec<usize> = prompts.iter().map(|pr| pr.tokens.len()).collect();
    let runs = all_runs(&prompts, &p)?;
    let stops = p.stop.clone();
    let (rx, guard) = submit(r, runs, &p, state.cfg.default_max_tokens)?;
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
            "tokens_evaluated": prompt_lens[done.index],
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
        if n_prompts > 1 {
            v["index"] = done.index.into();
        }
        v
    };
    if !p.stream {
        let done = collect(rx, n_prompts).await?;
        drop(guard);
        let mut all: Vec<Value> = done
            .iter()
            .map(|d| final_json(d, &d.generation.text))
            .collect();
        if n_prompts == 1 {
            return Ok(Json(all.remove(0)).into_response());
        }
        return Ok(Json(Value::Array(all)).into_response());
    }
    let model_for_stream = r.model.clone();
    let mut pending_lp = Vec::new();
    let frames = event_frames(rx, guard, move |ev| match ev {
        Event::Logprob(_, lp) => {
            pending_lp.push(lp);
            String::new()
        }
        Event::Text(i, t) => {
            let mut c = json!({"content": t, "stop": false});
            if n_prompts > 1 {
                c["index"] = i.into();
            }
            if !pending_lp.is_empty() {
                c["completion_probabilities"] =
                    native_probs_json(&model_for_stream.tokenizer, &pending_lp);
                pending_lp.clear();
            }
            sse_data(&c)
        }
        Event::Done(done) => sse_data(&final_json(&done, "")),
        Event::Embedding(_) => String::new(),
        Event::Failed(msg) => stream_error(&msg),
    });
    Ok(sse_response(frames))
}
