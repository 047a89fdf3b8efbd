//! Queue a generation job and relay its events: a whole reply, or Server-Sent Events.

use super::openai::{new_id, timings_json, unix_time, usage_json, ApiError, ApiResult, GenParams};
use super::slots::{CancelOnDrop, Event, Finished, Job, Run, Work};
use super::Ready;
use crate::decode::generate::{GenerateOptions, Generation, Timings};
use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio::sync::mpsc::UnboundedReceiver;

/// Check every run's prompt against the slot context and queue the runs as one job. A token
/// limit of 0 generates nothing: the replies (empty, finish_reason "length") are ready at once,
/// without a slot, and there is no job to cancel.
pub(super) fn submit(
    r: &Ready,
    runs: Vec<Run>,
    p: &GenParams,
    default_max_tokens: Option<usize>,
) -> ApiResult<(UnboundedReceiver<Event>, Option<CancelOnDrop>)> {
    for run in &runs {
        check_prompt(r, &run.prompt)?;
    }
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let max_tokens = p.max_tokens.or(default_max_tokens);
    // (Scoring the prompt, `echo` with `logprobs`, still needs a slot.)
    if max_tokens == Some(0) && !p.prompt_logprobs {
        for index in 0..runs.len() {
            let generation = Generation::nothing(Timings::default(), 0, Vec::new());
            let _ = tx.send(Event::Done(Box::new(Finished {
                generation,
                spec: None,
                slot: 0,
                index,
            })));
        }
        return Ok((rx, None));
    }
    let job = Job::new(
        Work::Generate(runs),
        GenerateOptions {
            max_tokens,
            ignore_eos: p.ignore_eos,
            stop: p.stop.clone(),
            stop_tokens: vec![],
            cancel: None,
            logprobs: p.logprobs,
            on_logprob: None,
            reuse_kv: 0,
            prompt_logprobs: p.prompt_logprobs,
            constraint: p.constraint.clone(),
        },
        p.cache_prompt,
        p.stream,
        tx,
    );
    let guard = r.pool.submit(job)?;
    Ok((rx, Some(guard)))
}

/// A prompt must have a token and leave room in the slot's context for one more.
pub(super) fn check_prompt(r: &Ready, prompt: &[u32]) -> ApiResult<()> {
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
    Ok(())
}

/// `n` runs of one prompt: the first with the request's seed, the others with seeds derived
/// from it (so the choices differ, and a request with a seed gives the same choices again).
pub(super) fn runs_of(prompt: &[u32], p: &GenParams) -> Vec<Run> {
    (0..p.n)
        .map(|i| {
            let mut sampling = p.sampling.clone();
            sampling.seed = choice_seed(sampling.seed, i);
            Run {
                prompt: prompt.to_vec(),
                sampling,
            }
        })
        .collect()
}

/// The seed of choice `i` (0: the request's own).
pub(super) fn choice_seed(seed: u64, i: usize) -> u64 {
    if i == 0 {
        return seed;
    }
    // splitmix64 of the seed and the choice.
    let mut z = seed.wrapping_add((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Wait for `n` non-streamed results, in run order.
pub(super) async fn collect(
    mut rx: UnboundedReceiver<Event>,
    n: usize,
) -> ApiResult<Vec<Finished>> {
    let mut done: Vec<Finished> = Vec::with_capacity(n);
    while let Some(ev) = rx.recv().await {
        match ev {
            Event::Text(..) | Event::Logprob(..) | Event::Embedding(_) => {}
            Event::Done(f) => {
                done.push(*f);
                if done.len() == n {
                    done.sort_by_key(|f| f.index);
                    return Ok(done);
                }
            }
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

pub(super) fn sse_data(v: &Value) -> String {
    format!("data: {v}\n\n")
}

/// An SSE response from a stream of text frames.
pub(super) fn sse_response(
    frames: impl tokio_stream::Stream<Item = String> + Send + 'static,
) -> Response {
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
pub(super) fn event_frames(
    rx: UnboundedReceiver<Event>,
    guard: Option<CancelOnDrop>,
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

pub(super) fn stream_error(msg: &str) -> String {
    sse_data(&ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, msg).to_json())
}

/// What every OpenAI completion object and stream chunk of one request carries.
pub(super) struct Envelope {
    pub(super) id: String,
    created: u64,
    model: String,
}

impl Envelope {
    pub(super) fn new(id_prefix: &str, model: &str) -> Envelope {
        Envelope {
            id: new_id(id_prefix),
            created: unix_time(),
            model: model.to_string(),
        }
    }

    pub(super) fn object(&self, object: &str, choices: Value) -> Value {
        json!({
            "id": self.id,
            "object": object,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "blockspec",
            "choices": choices,
        })
    }

    /// A whole (non-streamed) reply: its choices, usage over all of them (`n_prompt`: the
    /// prompt tokens, each prompt counted once), llama.cpp's timings (the first choice's) and
    /// the slot.
    pub(super) fn finished(
        &self,
        object: &str,
        choices: Vec<Value>,
        n_prompt: usize,
        done: &[Finished],
    ) -> Value {
        let mut v = self.object(object, Value::Array(choices));
        v["usage"] = usage_json(n_prompt, done);
        if let Some(first) = done.first() {
            v["timings"] = timings_json(&first.generation, first.spec.as_ref());
            v["id_slot"] = first.slot.into();
        }
        v
    }
}
