//! Queue a generation job and relay its events: a whole reply, or Server-Sent Events.

use super::openai::{new_id, timings_json, unix_time, usage_json, ApiError, ApiResult, GenParams};
use super::slots::{CancelOnDrop, Event, Finished, Job};
use super::Ready;
use crate::decode::generate::{GenerateOptions, Generation, StopReason, Timings};
use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio::sync::mpsc::UnboundedReceiver;

/// Check the prompt against the slot context and queue the job. A token limit of 0 generates
/// nothing: the reply (empty, finish_reason "length") is ready at once, without a slot, and
/// there is no job to cancel.
pub(super) fn submit(
    r: &Ready,
    prompt: Vec<u32>,
    p: &GenParams,
    default_max_tokens: Option<usize>,
) -> ApiResult<(UnboundedReceiver<Event>, Option<CancelOnDrop>, usize)> {
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
    let max_tokens = p.max_tokens.or(default_max_tokens);
    if max_tokens == Some(0) {
        let generation = Generation {
            tokens: Vec::new(),
            text: String::new(),
            stop: StopReason::Limit,
            timings: Timings::default(),
            logprobs: Vec::new(),
            cached_prompt_n: 0,
        };
        let _ = tx.send(Event::Done(Box::new(Finished {
            generation,
            spec: None,
            slot: 0,
        })));
        return Ok((rx, None, n_prompt));
    }
    let job = Job::new(
        prompt,
        p.sampling.clone(),
        GenerateOptions {
            max_tokens,
            ignore_eos: p.ignore_eos,
            stop: p.stop.clone(),
            stop_tokens: vec![],
            cancel: None,
            logprobs: p.logprobs,
            on_logprob: None,
            reuse_kv: 0,
            constraint: None,
        },
        p.cache_prompt,
        p.stream,
        tx,
    );
    let guard = r.pool.submit(job)?;
    Ok((rx, Some(guard), n_prompt))
}

/// Wait for a non-streamed generation's result.
pub(super) async fn collect(mut rx: UnboundedReceiver<Event>) -> ApiResult<Finished> {
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

    /// A whole (non-streamed) reply: one choice, usage, llama.cpp's timings and the slot.
    pub(super) fn finished(
        &self,
        object: &str,
        choice: Value,
        n_prompt: usize,
        done: &Finished,
    ) -> Value {
        let g = &done.generation;
        let mut v = self.object(object, json!([choice]));
        v["usage"] = usage_json(n_prompt, g);
        v["timings"] = timings_json(g, done.spec.as_ref());
        v["id_slot"] = done.slot.into();
        v
    }
}
