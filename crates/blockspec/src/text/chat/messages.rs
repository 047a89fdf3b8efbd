//! Chat messages and tool definitions: OpenAI-style JSON validated and rebuilt as llama.cpp
//! does, and llama.cpp's workarounds for templates that need them in another shape.

use super::Caps;
use anyhow::{anyhow, bail, Result};
use serde_json::{json, Map, Value as Json};

/// A JSON value's type, as error messages name it.
pub(super) fn json_type(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

/// A typed content part (`text` or `media_marker`).
#[derive(Clone, Debug, Default)]
pub(super) struct Part {
    pub(super) kind: String,
    pub(super) text: String,
}

/// A function call of an assistant message, its arguments as a JSON string.
#[derive(Clone, Debug, Default)]
struct ToolCall {
    name: String,
    arguments: String,
    id: String,
}

/// One chat message, as llama.cpp's `common_chat_msg` holds it.
#[derive(Clone, Debug, Default)]
pub(super) struct Msg {
    role: String,
    pub(super) content: String,
    pub(super) parts: Vec<Part>,
    tool_calls: Vec<ToolCall>,
    pub(super) reasoning_content: String,
    name: String,
    tool_call_id: String,
}

fn get_str(m: &Map<String, Json>, key: &str, what: &str) -> Result<Option<String>> {
    match m.get(key) {
        None => Ok(None),
        Some(Json::String(s)) => Ok(Some(s.clone())),
        Some(other) => bail!("{what}.{key} must be a string, got {}", json_type(other)),
    }
}

/// llama.cpp's `common_chat_msgs_parse_oaicompat`.
pub(super) fn parse_messages(messages: &Json) -> Result<Vec<Msg>> {
    let arr = messages.as_array().ok_or_else(|| {
        anyhow!(
            "chat messages must be a JSON array, got {}",
            json_type(messages)
        )
    })?;
    let mut out = Vec::with_capacity(arr.len());
    for (i, m) in arr.iter().enumerate() {
        let what = format!("messages[{i}]");
        let obj = m
            .as_object()
            .ok_or_else(|| anyhow!("{what} must be an object, got {}", json_type(m)))?;
        let role = get_str(obj, "role", &what)?.ok_or_else(|| anyhow!("{what} has no \"role\""))?;
        let mut msg = Msg {
            role,
            ..Msg::default()
        };
        let has_content = obj.contains_key("content");
        let has_tool_calls = obj.contains_key("tool_calls");
        match obj.get("content") {
            None | Some(Json::Null) => {}
            Some(Json::String(s)) => msg.content = s.clone(),
            Some(Json::Array(parts)) => {
                for (j, p) in parts.iter().enumerate() {
                    let pw = format!("{what}.content[{j}]");
                    let po = p
                        .as_object()
                        .ok_or_else(|| anyhow!("{pw} must be an object, got {}", json_type(p)))?;
                    let kind =
                        get_str(po, "type", &pw)?.ok_or_else(|| anyhow!("{pw} has no \"type\""))?;
                    if kind != "text" && kind != "media_marker" {
                        bail!("{pw}: unsupported content part type \"{kind}\" (supported: text)");
                    }
                    let text =
                        get_str(po, "text", &pw)?.ok_or_else(|| anyhow!("{pw} has no \"text\""))?;
                    msg.parts.push(Part { kind, text });
                }
            }
            Some(other) => bail!(
                "{what}.content must be a string, an array of parts or null, got {}",
                json_type(other)
            ),
        }
        if let Some(tcs) = obj.get("tool_calls") {
            let tcs = tcs.as_array().ok_or_else(|| {
                anyhow!("{what}.tool_calls must be an array, got {}", json_type(tcs))
            })?;
            for (j, tc) in tcs.iter().enumerate() {
                let tw = format!("{what}.tool_calls[{j}]");
                let to = tc
                    .as_object()
                    .ok_or_else(|| anyhow!("{tw} must be an object"))?;
                match get_str(to, "type", &tw)?.as_deref() {
                    Some("function") => {}
                    Some(t) => bail!("{tw}: unsupported tool call type \"{t}\""),
                    None => bail!("{tw} has no \"type\""),
                }
                let fw = format!("{tw}.function");
                let f = to
                    .get("function")
                    .and_then(Json::as_object)
                    .ok_or_else(|| anyhow!("{tw} has no \"function\" object"))?;
                let name =
                    get_str(f, "name", &fw)?.ok_or_else(|| anyhow!("{fw} has no \"name\""))?;
                let arguments = match f.get("arguments") {
                    Some(Json::String(s)) => s.clone(),
                    Some(v) => serde_json::to_string(v)?,
                    None => bail!("{fw} has no \"arguments\""),
                };
                let id = get_str(to, "id", &tw)?.unwrap_or_default();
                msg.tool_calls.push(ToolCall {
                    name,
                    arguments,
                    id,
                });
            }
        }
        if !has_content && !has_tool_calls {
            bail!("{what} has neither \"content\" nor \"tool_calls\"");
        }
        msg.reasoning_content = get_str(obj, "reasoning_content", &what)?.unwrap_or_default();
        msg.name = get_str(obj, "name", &what)?.unwrap_or_default();
        msg.tool_call_id = get_str(obj, "tool_call_id", &what)?.unwrap_or_default();
        if !msg.content.is_empty() && !msg.parts.is_empty() {
            bail!("{what}: both content and content parts");
        }
        out.push(msg);
    }
    Ok(out)
}

/// Join text parts with newlines, none around media markers.
fn concat_parts<'a>(parts: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut text = String::new();
    let mut last_was_media = false;
    for (kind, t) in parts {
        let add_newline = match kind {
            "text" => {
                let nl = !last_was_media && !text.is_empty();
                last_was_media = false;
                nl
            }
            "media_marker" => {
                last_was_media = true;
                false
            }
            _ => continue,
        };
        if add_newline {
            text.push('\n');
        }
        text.push_str(t);
    }
    text
}

impl Msg {
    /// llama.cpp's `common_chat_msg::to_json_oaicompat(concat_typed_text = false)`.
    pub(super) fn to_json(&self) -> Json {
        let mut m = Map::new();
        m.insert("role".into(), json!(self.role));
        let content = if !self.content.is_empty() {
            json!(self.content)
        } else if !self.parts.is_empty() {
            if self.parts.iter().any(|p| p.kind == "media_marker") {
                json!(concat_parts(
                    self.parts
                        .iter()
                        .map(|p| (p.kind.as_str(), p.text.as_str()))
                ))
            } else {
                Json::Array(
                    self.parts
                        .iter()
                        .map(|p| json!({"type": p.kind, "text": p.text}))
                        .collect(),
                )
            }
        } else {
            json!("")
        };
        m.insert("content".into(), content);
        if !self.reasoning_content.is_empty() {
            m.insert("reasoning_content".into(), json!(self.reasoning_content));
        }
        if !self.name.is_empty() {
            m.insert("name".into(), json!(self.name));
        }
        if !self.tool_call_id.is_empty() {
            m.insert("tool_call_id".into(), json!(self.tool_call_id));
        }
        if !self.tool_calls.is_empty() {
            let calls = self
                .tool_calls
                .iter()
                .map(|tc| {
                    let mut c = Map::new();
                    c.insert("type".into(), json!("function"));
                    c.insert(
                        "function".into(),
                        json!({"name": tc.name, "arguments": tc.arguments}),
                    );
                    if !tc.id.is_empty() {
                        c.insert("id".into(), json!(tc.id));
                    }
                    Json::Object(c)
                })
                .collect();
            m.insert("tool_calls".into(), Json::Array(calls));
        }
        Json::Object(m)
    }
}

/// llama.cpp's `messages_inp_normalizer`: string content for string-only templates, typed
/// content for typed-only templates.
pub(super) fn normalize_content(msgs: &mut [Json], caps: Caps) {
    let only_string = caps.supports_string_content && !caps.supports_typed_content;
    let only_typed = !caps.supports_string_content && caps.supports_typed_content;
    for m in msgs {
        let Some(c) = m.get_mut("content") else {
            continue;
        };
        if only_typed {
            if let Some(s) = c.as_str() {
                *c = json!([{"type": "text", "text": s}]);
            }
        } else if only_string {
            if let Some(parts) = c.as_array() {
                let joined = concat_parts(parts.iter().map(|p| {
                    (
                        p.get("type").and_then(Json::as_str).unwrap_or(""),
                        p.get("text").and_then(Json::as_str).unwrap_or(""),
                    )
                }));
                *c = json!(joined);
            }
        }
    }
}

/// llama.cpp's `workaround::system_message_not_supported`.
pub(super) fn merge_system_message(msgs: &mut Vec<Json>) -> Result<()> {
    if msgs
        .first()
        .and_then(|m| m.get("role"))
        .and_then(Json::as_str)
        != Some("system")
    {
        return Ok(());
    }
    let first = msgs.remove(0);
    if let Some(second) = msgs.first_mut() {
        let a = first.get("content").and_then(Json::as_str).ok_or_else(|| {
            anyhow!(
                "cannot merge the system message into the next one: its content is not a string"
            )
        })?;
        let b = second
            .get("content")
            .and_then(Json::as_str)
            .ok_or_else(|| anyhow!("cannot merge the system message into the next one: that content is not a string"))?;
        second["content"] = json!(format!("{a}\n{b}"));
    }
    Ok(())
}

/// llama.cpp's `workaround::func_args_not_string`.
pub(super) fn parse_tool_call_arguments(msgs: &mut [Json]) -> Result<()> {
    for m in msgs {
        let Some(calls) = m.get_mut("tool_calls").and_then(Json::as_array_mut) else {
            continue;
        };
        for c in calls {
            let Some(args) = c.get_mut("function").and_then(|f| f.get_mut("arguments")) else {
                continue;
            };
            if let Some(s) = args.as_str() {
                *args = serde_json::from_str(s).map_err(|e| {
                    anyhow!("failed to parse tool call arguments as JSON: {e}: {s:?}")
                })?;
            }
        }
    }
    Ok(())
}

/// llama.cpp's `common_chat_tools_parse_oaicompat` + `common_chat_tools_to_json_oaicompat`.
pub(super) fn parse_tools(tools: &Json) -> Result<Vec<Json>> {
    let arr = tools
        .as_array()
        .ok_or_else(|| anyhow!("tools must be a JSON array, got {}", json_type(tools)))?;
    let mut out = Vec::with_capacity(arr.len());
    for (i, t) in arr.iter().enumerate() {
        let what = format!("tools[{i}]");
        let o = t
            .as_object()
            .ok_or_else(|| anyhow!("{what} must be an object"))?;
        match o.get("type").and_then(Json::as_str) {
            Some("function") => {}
            _ => bail!("{what}: unsupported tool type (expected \"type\": \"function\")"),
        }
        let f = o
            .get("function")
            .and_then(Json::as_object)
            .ok_or_else(|| anyhow!("{what} has no \"function\" object"))?;
        let fw = format!("{what}.function");
        let name = get_str(f, "name", &fw)?.ok_or_else(|| anyhow!("{fw} has no \"name\""))?;
        let description = get_str(f, "description", &fw)?.unwrap_or_default();
        let parameters = f.get("parameters").cloned().unwrap_or_else(|| json!({}));
        out.push(json!({
            "type": "function",
            "function": {"name": name, "description": description, "parameters": parameters},
        }));
    }
    Ok(out)
}
