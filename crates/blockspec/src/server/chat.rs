//! `/v1/chat/completions`: messages through the chat template, replies parsed into reasoning,
//! content and tool calls.

use super::chat_parse::{parse_reply, ChatDelta, ChatParser};
use super::constrained::{compile, forced_call_grammar, tool_signatures, RequestGrammar};
use super::openai::{
    body_object, chat_logprobs_json, finish_reason, short, timings_json, usage_json, ApiError,
    ApiResult, Endpoint, Fields,
};
use super::relay::{
    collect, event_frames, runs_of, sse_data, sse_response, stream_error, submit, Envelope,
};
use super::slots::Event;
use super::{gen_request, json_body, GenRequest, Ready, Shared};
use crate::text::chat::llama_default_kwargs;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

/// What a chat request adds to the generation parameters.
struct ChatRequest {
    prompt_text: String,
    parse_tools: bool,
    /// The offered tools (after `tool_choice`).
    tools: Vec<Value>,
    /// The template writes tool calls in Qwen3-Coder's XML form.
    xml_tool_calls: bool,
    parse_reasoning: bool,
    /// `tool_choice` asks for a tool call ("required" or a named function).
    forces_tool_call: bool,
}

/// The roles a message may have: OpenAI's (`developer` is its newer name for `system`, and is
/// given to the template as `system`).
const ROLES: &[&str] = &["system", "developer", "user", "assistant", "tool"];

/// The `messages` array, checked: a non-empty array of objects, each with a known role.
fn chat_messages(f: &Fields) -> ApiResult<Value> {
    let messages = match f.get("messages") {
        Some(Value::Array(a)) if !a.is_empty() => a,
        Some(Value::Array(_)) => return Err(ApiError::bad_request("'messages' is empty")),
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "'messages' must be an array of messages, got {}",
                short(v)
            )))
        }
        None => return Err(ApiError::bad_request("'messages' is required")),
    };
    let mut out = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        let Some(o) = m.as_object() else {
            return Err(ApiError::bad_request(format!(
                "'messages[{i}]' must be an object with a 'role', got {}",
                short(m)
            )));
        };
        match o.get("role") {
            Some(Value::String(role)) if ROLES.contains(&role.as_str()) => {}
            Some(Value::String(role)) => {
                return Err(ApiError::bad_request(format!(
                "'messages[{i}].role' is \"{role}\", which is not a known role; expected one of {}",
                ROLES.join(", ")
            )))
            }
            Some(v) => {
                return Err(ApiError::bad_request(format!(
                    "'messages[{i}].role' must be a string, got {}",
                    short(v)
                )))
            }
            None => {
                return Err(ApiError::bad_request(format!(
                    "'messages[{i}]' has no 'role'"
                )))
            }
        }
        let mut m = m.clone();
        if m["role"] == "developer" {
            m["role"] = "system".into();
        }
        out.push(m);
    }
    Ok(Value::Array(out))
}

/// The tools offered to the template after `tool_choice`: all (`auto`, `required`, or no
/// choice), none (`none`), or the one a named choice names. `required` or a named function
/// without tools is an error: nothing could satisfy it.
fn chosen_tools(f: &Fields) -> ApiResult<Option<Value>> {
    let offered = match f.get("tools") {
        None => None,
        Some(Value::Array(a)) => Some(a).filter(|a| !a.is_empty()),
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "'tools' must be an array, got {}",
                short(v)
            )))
        }
    };
    let no_tools = |what: &str| {
        ApiError::bad_request(format!(
            "'tool_choice' is {what}, but the request offers no 'tools' to call"
        ))
    };
    match f.get("tool_choice") {
        None => Ok(offered.cloned().map(Value::Array)),
        Some(Value::String(s)) => match s.as_str() {
            "auto" => Ok(offered.cloned().map(Value::Array)),
            "none" => Ok(None),
            "required" => match offered {
                Some(all) => Ok(Some(Value::Array(all.clone()))),
                None => Err(no_tools("\"required\"")),
            },
            other => Err(ApiError::bad_request(format!(
                "'tool_choice' must be \"none\", \"auto\", \"required\" or a function, got \"{other}\""
            ))),
        },
        Some(Value::Object(o)) => {
            // A named function: offer only that one.
            let name = o
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "'tool_choice' as an object must be {\"type\": \"function\", \"function\": {\"name\": ...}}",
                    )
                })?;
            let Some(all) = offered else {
                return Err(no_tools(&format!("the function \"{name}\"")));
            };
            let chosen: Vec<Value> = all
                .iter()
                .filter(|t| {
                    t.get("function")
                        .and_then(|f| f.get("name"))
                        .and_then(Value::as_str)
                        == Some(name)
                })
                .cloned()
                .collect();
            if chosen.is_empty() {
                return Err(ApiError::bad_request(format!(
                    "'tool_choice' names the function \"{name}\", which is not in 'tools'"
                )));
            }
            Ok(Some(Value::Array(chosen)))
        }
        Some(v) => Err(ApiError::bad_request(format!(
            "'tool_choice' must be a string or an object, got {}",
            short(v)
        ))),
    }
}

fn chat_request(r: &Ready, f: &Fields) -> ApiResult<ChatRequest> {
    let messages = chat_messages(f)?;
    let tools = chosen_tools(f)?;
    // "required" or a named function (chosen_tools has checked that tools are offered).
    let forces_tool_call = tools.is_some()
        && match f.get("tool_choice") {
            Some(Value::String(c)) => c == "required",
            Some(Value::Object(_)) => true,
            _ => false,
        };
    let kwargs = llama_default_kwargs(f.object("chat_template_kwargs")?);
    let reasoning_format = f.str("reasoning_format")?.unwrap_or("auto");
    let prompt_text = r
        .template
        .render(&messages, true, tools.as_ref(), Some(&kwargs))
        .map_err(|e| ApiError::bad_request(format!("cannot apply the chat template: {e:#}")))?;
    Ok(ChatRequest {
        prompt_text,
        parse_tools: tools.is_some(),
        xml_tool_calls: r.template.xml_tool_calls(tools.is_some()),
        tools: match tools {
            Some(Value::Array(a)) => a,
            _ => Vec::new(),
        },
        parse_reasoning: reasoning_format != "none",
        forces_tool_call,
    })
}

fn delta_json(d: &ChatDelta) -> Value {
    match d {
        ChatDelta::Reasoning(s) => json!({"reasoning_content": s}),
        ChatDelta::Content(s) => json!({"content": s}),
        ChatDelta::ToolCall(c) => json!({"tool_calls": [{
            "index": c.index,
            "id": c.id,
            "type": "function",
            "function": {"name": c.name, "arguments": c.arguments},
        }]}),
    }
}

/// `POST /apply-template`: the prompt a chat request renders to (messages, tools,
/// `chat_template_kwargs`), as `{"prompt": text}`, without generating.
pub(super) async fn apply_template(
    State(state): State<Shared>,
    body: Body,
) -> ApiResult<Json<Value>> {
    let r = state.ready()?;
    let fields = body_object(json_body(body, &state.cfg).await?)?;
    let chat = chat_request(r, &Fields(&fields))?;
    Ok(Json(json!({ "prompt": chat.prompt_text })))
}

pub(super) async fn chat_completions(
    State(state): State<Shared>,
    body: Body,
) -> ApiResult<Response> {
    let GenRequest { r, fields, mut p } = gen_request(&state, body, Endpoint::Chat).await?;
    let mut chat = chat_request(r, &Fields(&fields))?;
    if chat.forces_tool_call {
        if let Some(g) = &p.grammar {
            return Err(ApiError::bad_request(format!(
                "'{}' and a forced tool call ('tool_choice') both constrain the output; give only one",
                g.field
            )));
        }
        // The call is constrained where the template's call syntax is one the reply parser
        // reads; otherwise it is left to the model, as without a constraint.
        let tools = tool_signatures(&chat.tools);
        if let Some(grammar) = forced_call_grammar(&chat.prompt_text, chat.xml_tool_calls, &tools) {
            let g = RequestGrammar {
                grammar,
                field: "tools",
            };
            p.constraint = Some(compile(&r.model, &g).await?);
        }
    }
    let mut opens_reasoning = chat.prompt_text.trim_end().ends_with("<think>");
    if opens_reasoning && p.constraint.is_some() {
        // The template opened the reasoning block: a constrained reply starts after it (as
        // templates write a reply without thinking), so it is content, not reasoning.
        chat.prompt_text.push_str("\n</think>\n\n");
        opens_reasoning = false;
    }
    let prompt = r
        .model
        .tokenizer
        .encode(&chat.prompt_text, true, true)
        .map_err(|e| ApiError::bad_request(format!("cannot tokenize the prompt: {e:#}")))?;
    let env = Envelope::new("chatcmpl", &state.cfg.model_alias);
    let id_prefix = env.id.trim_start_matches("chatcmpl-").to_string();
    // One parser per choice (tool call ids stay unique across choices).
    let mut parsers: Vec<ChatParser> = (0..p.n)
        .map(|i| {
            let prefix = if i == 0 {
                format!("call_{id_prefix}_")
            } else {
                format!("call_{id_prefix}_{i}_")
            };
            ChatParser::new(
                chat.parse_reasoning,
                chat.parse_tools,
                opens_reasoning,
                prefix,
                chat.tools.clone(),
                chat.xml_tool_calls,
            )
        })
        .collect();
    let n_prompt = prompt.len();
    let n = p.n;
    let (rx, guard) = submit(r, runs_of(&prompt, &p), &p, state.cfg.default_max_tokens)?;
    let model = r.model.clone();

    if !p.stream {
        let done = collect(rx, n).await?;
        drop(guard);
        let choices = done
            .iter()
            .map(|d| {
                let g = &d.generation;
                let (reasoning, content, calls) = parse_reply(&mut parsers[d.index], &g.text);
                let mut message = json!({"role": "assistant", "content": content});
                if let Some(rc) = reasoning {
                    message["reasoning_content"] = rc.into();
                }
                let finish = if calls.is_empty() {
                    finish_reason(g.stop)
                } else {
                    "tool_calls"
                };
                if !calls.is_empty() {
                    message["tool_calls"] = calls
                        .iter()
                        .map(|c| {
                            json!({"id": c.id, "type": "function",
                                   "function": {"name": c.name, "arguments": c.arguments}})
                        })
                        .collect();
                }
                let logprobs = match p.logprobs {
                    Some(_) => chat_logprobs_json(&model.tokenizer, &g.logprobs),
                    None => Value::Null,
                };
                json!({"index": d.index, "message": message, "logprobs": logprobs, "finish_reason": finish})
            })
            .collect();
        return Ok(Json(env.finished("chat.completion", choices, n_prompt, &done)).into_response());
    }

    let chunk = move |index: usize, delta: Value, finish: Option<&str>| {
        env.object(
            "chat.completion.chunk",
            json!([{"index": index, "delta": delta, "logprobs": null, "finish_reason": finish}]),
        )
    };
    // Every choice opens with its role.
    let first: String = (0..n)
        .map(|i| {
            sse_data(&chunk(
                i,
                json!({"role": "assistant", "content": null}),
                None,
            ))
        })
        .collect();
    let model_for_final = model.clone();
    let include_usage = p.include_usage;
    // Log-probabilities of tokens whose text has not gone out yet ride on the next chunk.
    let mut pending_lp = Vec::new();
    let with_lp = move |mut c: Value, pending: &mut Vec<_>| {
        if !pending.is_empty() {
            c["choices"][0]["logprobs"] = chat_logprobs_json(&model.tokenizer, pending);
            pending.clear();
        }
        sse_data(&c)
    };
    let mut finished = Vec::new();
    let frames = event_frames(rx, guard, move |ev| match ev {
        Event::Logprob(_, lp) => {
            pending_lp.push(lp);
            String::new()
        }
        Event::Text(i, t) => match parsers.get_mut(i) {
            Some(parser) => parser
                .push(&t)
                .iter()
                .map(|d| with_lp(chunk(i, delta_json(d), None), &mut pending_lp))
                .collect(),
            None => String::new(),
        },
        Event::Done(done) => {
            let i = done.index;
            let Some(parser) = parsers.get_mut(i) else {
                return String::new();
            };
            let g = &done.generation;
            let mut s: String = parser
                .finish()
                .iter()
                .map(|d| with_lp(chunk(i, delta_json(d), None), &mut pending_lp))
                .collect();
            let finish = if parser.n_tool_calls() > 0 {
                "tool_calls"
            } else {
                finish_reason(g.stop)
            };
            let mut last = chunk(i, json!({}), Some(finish));
            if !pending_lp.is_empty() {
                last["choices"][0]["logprobs"] =
                    chat_logprobs_json(&model_for_final.tokenizer, &pending_lp);
                pending_lp.clear();
            }
            last["timings"] = timings_json(g, done.spec.as_ref());
            s.push_str(&sse_data(&last));
            finished.push(*done);
            if finished.len() < n {
                return s;
            }
            if include_usage {
                let mut u = chunk(0, json!({}), None);
                u["choices"] = json!([]);
                u["usage"] = usage_json(n_prompt, &finished);
                s.push_str(&sse_data(&u));
            }
            s.push_str("data: [DONE]\n\n");
            s
        }
        Event::Embedding(_) => String::new(),
        Event::Failed(msg) => stream_error(&msg),
    });
    let first = tokio_stream::once(first);
    Ok(sse_response(tokio_stream::StreamExt::chain(first, frames)))
}
