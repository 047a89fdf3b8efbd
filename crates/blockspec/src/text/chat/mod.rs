//! Chat templates: a model's `tokenizer.chat_template` (Jinja) rendered with minijinja the way
//! llama.cpp renders it (`common/chat.cpp` + its own Jinja engine in `common/jinja`):
//!
//! * **inputs**: the messages are validated and rebuilt as llama.cpp's
//!   `common_chat_msgs_parse_oaicompat` + `to_json_oaicompat` do (content always present, tool
//!   call arguments as strings, typed content parts normalized to what the template supports),
//!   then its workarounds run: `developer` -> `system`, a system message merged into the next
//!   one when the template ignores system messages, and tool call arguments parsed back into
//!   objects when the template reads them as objects. The template capabilities these depend on
//!   are probed once at load time by rendering probe conversations (llama.cpp's `caps_get`
//!   tracks value accesses instead; we check what reaches the output).
//! * **variables**: `messages`, `bos_token`, `eos_token`, `enable_thinking` (true),
//!   `tools` (only when non-empty), `datetime`, `date_string`, the `extra` kwargs
//!   (chat_template_kwargs, overriding), and `add_generation_prompt` (only when true, as there).
//!   A leading BOS / trailing EOS text is removed from the result when the vocabulary adds them
//!   itself.
//! * **Jinja dialect**: `trim_blocks` and `lstrip_blocks` on, one trailing newline of the
//!   template dropped, CRLF normalized, chainable undefined values, Python string/dict methods
//!   (minijinja_contrib::pycompat), `raise_exception`, `strftime_now` (UTC), loop controls,
//!   `{% generation %}` tags ignored; values print as llama.cpp prints them (`True`/`False`,
//!   nothing for none/undefined/mappings, list items concatenated) and `tojson` formats as
//!   llama.cpp's (", " and ": " separators, non-ASCII kept, `indent`, `separators`,
//!   `ensure_ascii`; numbers as C++ streams print them).
//!
//! Checked against llama.cpp's own rendering (tests/chat_template.rs): the model fixtures plus
//! ~90 cases over real-world templates and Jinja features. Known differences:
//! * not replicated: llama.cpp's model-specific handlers that rewrite messages or tools before
//!   rendering (Gemma 4 tool responses, gpt-oss, ...), `continue_final_message`, and list
//!   mutation (`list.append`) inside templates (minijinja values are immutable);
//! * template capabilities are probed by what reaches the output, llama.cpp tracks accesses;
//! * time is UTC (`strftime_now`, `datetime`, `date_string`); llama.cpp uses local time;
//! * expression semantics where minijinja follows Python and llama.cpp does not: `%` with a
//!   negative operand (`-3 % 2` is 1 here, -1 there), `'a' ~ none` ("aNone" here, "a" there),
//!   `x and y` printed (a boolean here, the operand there);
//! * templates llama.cpp's engine rejects may render here (e.g. `1e-7` literals, `//`, `**`,
//!   `round`, `unique`, `{%+`, a backslash-newline inside a string).

use crate::format::gguf::{Gguf, Value as GValue};
use crate::text::tokenizer::ChatTokens;
use anyhow::{anyhow, bail, Result};
use minijinja::value::{Kwargs, Rest, Value, ValueKind};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, Output, State, UndefinedBehavior};
use serde_json::{json, Map, Value as Json};

/// llama.cpp's fallback template (`CHATML_TEMPLATE_SRC`) for models without one.
pub const CHATML_TEMPLATE: &str = "{%- for message in messages -%}\n  {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' -}}\n{%- endfor -%}\n{%- if add_generation_prompt -%}\n  {{- '<|im_start|>assistant\\n' -}}\n{%- endif -%}";

const RAISE_PREFIX: &str = "raise_exception: ";

/// Largest `tojson`/`indent` indentation accepted (a guard against absurd allocations).
const MAX_INDENT: i64 = 1024;

/// What a template does with its inputs (llama.cpp's `jinja::caps`, the parts that change what
/// gets rendered).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caps {
    pub supports_system_role: bool,
    pub supports_string_content: bool,
    pub supports_typed_content: bool,
    pub supports_object_arguments: bool,
}

impl Default for Caps {
    fn default() -> Self {
        Caps {
            supports_system_role: true,
            supports_string_content: true,
            supports_typed_content: false,
            supports_object_arguments: false,
        }
    }
}

struct Tmpl {
    name: &'static str,
    source: String,
    caps: Caps,
}

/// A chat template ready to render conversations.
pub struct ChatTemplate {
    env: Environment<'static>,
    default: Tmpl,
    tool_use: Option<Tmpl>,
    tokens: ChatTokens,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("caps", &self.default.caps)
            .field("has_tool_use", &self.tool_use.is_some())
            .field("tokens", &self.tokens)
            .finish()
    }
}

impl ChatTemplate {
    /// The model's template (`tokenizer.chat_template`, and `tokenizer.chat_template.tool_use`
    /// for requests with tools), or `override_template` (template source; `"chatml"` names the
    /// built-in ChatML template). Models without a template get ChatML, as in llama.cpp.
    pub fn from_gguf(g: &Gguf, override_template: Option<String>) -> Result<ChatTemplate> {
        let tokens = match ChatTokens::from_gguf(g) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!("chat template: {e:#}; using the raw BOS/EOS token texts");
                raw_chat_tokens(g)
            }
        };
        let meta_str = |k: &str| g.get(k).and_then(GValue::as_str).map(str::to_string);
        let (source, tool_use) = match override_template {
            Some(s) if !s.is_empty() => (s, None),
            _ => (
                meta_str("tokenizer.chat_template").unwrap_or_default(),
                meta_str("tokenizer.chat_template.tool_use"),
            ),
        };
        Self::new(&source, tool_use.as_deref(), tokens)
            .map_err(|e| anyhow!("{}: {e:#}", g.path().display()))
    }

    /// From template source. `source` empty or `"chatml"`: the tool-use template if there is
    /// one, else ChatML.
    pub fn new(source: &str, tool_use: Option<&str>, tokens: ChatTokens) -> Result<ChatTemplate> {
        let tool_use = tool_use.filter(|s| !s.is_empty());
        let default_src = match source {
            "" | "chatml" => tool_use.unwrap_or(CHATML_TEMPLATE),
            s => s,
        };
        let mut env = environment();
        let default = add_template(&mut env, "default", default_src)
            .map_err(|e| anyhow!("cannot parse the chat template: {e:#}"))?;
        let tool_use = match tool_use {
            Some(src) if src != default_src => match add_template(&mut env, "tool_use", src) {
                Ok(t) => Some(t),
                Err(e) => {
                    tracing::warn!("cannot parse the tool_use chat template (ignoring it): {e:#}");
                    None
                }
            },
            _ => None,
        };
        let mut t = ChatTemplate {
            env,
            default,
            tool_use,
            tokens,
        };
        t.default.caps = detect_caps(&t.env, t.default.name);
        if let Some(tu) = &mut t.tool_use {
            tu.caps = detect_caps(&t.env, tu.name);
        }
        Ok(t)
    }

    /// The default template's source (after llama.cpp's source patches).
    pub fn source(&self) -> &str {
        &self.default.source
    }

    pub fn caps(&self) -> Caps {
        self.default.caps
    }

    pub fn tokens(&self) -> &ChatTokens {
        &self.tokens
    }

    /// Render a conversation. `messages`: an array of OpenAI-style messages (`role`, `content`
    /// as a string or an array of `{"type": "text", "text": ..}` parts, optional `tool_calls`,
    /// `reasoning_content`, `name`, `tool_call_id`); `tools`: OpenAI-style tool definitions;
    /// `extra`: an object of additional template variables (chat_template_kwargs, e.g.
    /// `{"enable_thinking": false}`).
    pub fn render(
        &self,
        messages: &Json,
        add_generation_prompt: bool,
        tools: Option<&Json>,
        extra: Option<&Json>,
    ) -> Result<String> {
        let mut msgs = parse_messages(messages)?;
        let tools = match tools {
            None | Some(Json::Null) => Vec::new(),
            Some(t) => parse_tools(t)?,
        };
        let tmpl = match &self.tool_use {
            Some(tu) if !tools.is_empty() => tu,
            _ => &self.default,
        };
        let src = &tmpl.source;
        let caps = tmpl.caps;
        if src.contains("You have access to the following functions in JSONSchema format") {
            // StepFun: llama.cpp trims message contents for this template.
            for m in &mut msgs {
                m.content = m.content.trim_matches(is_trim_ws).to_string();
                m.reasoning_content = m.reasoning_content.trim_matches(is_trim_ws).to_string();
                for p in &mut m.parts {
                    if p.kind == "text" {
                        p.text = p.text.trim_matches(is_trim_ws).to_string();
                    }
                }
            }
        }
        let mut jmsgs: Vec<Json> = msgs.iter().map(Msg::to_json).collect();
        normalize_content(&mut jmsgs, caps);
        if !src.contains("<|channel|>") {
            for m in &mut jmsgs {
                if m.get("role").and_then(Json::as_str) == Some("developer") {
                    m["role"] = json!("system");
                }
            }
        }
        if !caps.supports_system_role {
            merge_system_message(&mut jmsgs)?;
        }
        for m in &mut jmsgs {
            if m.get("tool_calls").is_some() && m.get("content").is_none() {
                m["content"] = json!("");
            }
        }
        if caps.supports_object_arguments {
            parse_tool_call_arguments(&mut jmsgs)?;
        }

        let mut ctx = Map::new();
        ctx.insert("messages".into(), Json::Array(jmsgs));
        ctx.insert("bos_token".into(), json!(self.tokens.bos));
        ctx.insert("eos_token".into(), json!(self.tokens.eos));
        ctx.insert("enable_thinking".into(), json!(true));
        if !tools.is_empty() {
            ctx.insert("tools".into(), Json::Array(tools));
        }
        let now = unix_now();
        ctx.insert("datetime".into(), json!(strftime(now, "%b %d %Y")));
        ctx.insert("date_string".into(), json!(strftime(now, "%d %b %Y")));
        match extra {
            None | Some(Json::Null) => {}
            Some(Json::Object(kv)) => {
                for (k, v) in kv {
                    ctx.insert(k.clone(), v.clone());
                }
            }
            Some(other) => bail!(
                "chat template kwargs must be a JSON object, got {}",
                json_type(other)
            ),
        }
        if add_generation_prompt {
            ctx.insert("add_generation_prompt".into(), json!(true));
        }
        if let Some(enabled) = ctx.get("preserve_reasoning").and_then(Json::as_bool) {
            ctx.insert("preserve_thinking".into(), json!(enabled));
            for k in [
                "clear_thinking",
                "truncate_history_thinking",
                "drop_thinking",
            ] {
                ctx.insert(k.into(), json!(!enabled));
            }
        }
        if let Some(effort) = ctx
            .get("reasoning_effort")
            .and_then(Json::as_str)
            .filter(|s| !s.is_empty())
        {
            let effort = json!(effort);
            ctx.insert("reasoning_strength".into(), effort);
        }

        let mut out =
            render_with(&self.env, tmpl.name, &Json::Object(ctx)).map_err(template_error)?;
        if self.tokens.add_bos && out.starts_with(&self.tokens.bos) {
            out.drain(..self.tokens.bos.len());
        }
        if self.tokens.add_eos && out.ends_with(&self.tokens.eos) {
            out.truncate(out.len() - self.tokens.eos.len());
        }
        Ok(out)
    }
}

fn is_trim_ws(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

fn raw_chat_tokens(g: &Gguf) -> ChatTokens {
    let text = |key: &str| -> String {
        let Some(id) = g.get(key).and_then(GValue::as_i64) else {
            return String::new();
        };
        g.get("tokenizer.ggml.tokens")
            .and_then(GValue::as_array)
            .and_then(|a| a.get(usize::try_from(id).ok()?))
            .and_then(GValue::as_str)
            .unwrap_or("")
            .to_string()
    };
    ChatTokens {
        bos: text("tokenizer.ggml.bos_token_id"),
        eos: text("tokenizer.ggml.eos_token_id"),
        add_bos: g
            .get("tokenizer.ggml.add_bos_token")
            .and_then(GValue::as_bool)
            .unwrap_or(false),
        add_eos: g
            .get("tokenizer.ggml.add_eos_token")
            .and_then(GValue::as_bool)
            .unwrap_or(false),
    }
}

fn json_type(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

/// A template error as an anyhow error: `raise_exception` messages plainly, others with
/// minijinja's location.
fn template_error(e: Error) -> anyhow::Error {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(err) = cur {
        if let Some(me) = err.downcast_ref::<Error>() {
            if let Some(msg) = me.detail().and_then(|d| d.strip_prefix(RAISE_PREFIX)) {
                let line = e
                    .line()
                    .map(|l| format!(" (template line {l})"))
                    .unwrap_or_default();
                return anyhow!("the chat template raised an exception: {msg}{line}");
            }
        }
        cur = err.source();
    }
    let mut msg = format!("cannot render the chat template: {e}");
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    anyhow!(msg)
}

// ---- messages ----

#[derive(Clone, Debug, Default)]
struct Part {
    kind: String,
    text: String,
}

#[derive(Clone, Debug, Default)]
struct ToolCall {
    name: String,
    arguments: String,
    id: String,
}

#[derive(Clone, Debug, Default)]
struct Msg {
    role: String,
    content: String,
    parts: Vec<Part>,
    tool_calls: Vec<ToolCall>,
    reasoning_content: String,
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
fn parse_messages(messages: &Json) -> Result<Vec<Msg>> {
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
    fn to_json(&self) -> Json {
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
fn normalize_content(msgs: &mut [Json], caps: Caps) {
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
fn merge_system_message(msgs: &mut Vec<Json>) -> Result<()> {
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
fn parse_tool_call_arguments(msgs: &mut [Json]) -> Result<()> {
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
fn parse_tools(tools: &Json) -> Result<Vec<Json>> {
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

// ---- template environment ----

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_keep_trailing_newline(false);
    env.set_undefined_behavior(UndefinedBehavior::Chainable);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.set_formatter(format_output);
    env.add_function("raise_exception", raise_exception);
    env.add_function("strftime_now", strftime_now);
    env.add_filter("tojson", tojson_filter);
    env.add_filter("string", string_filter);
    env.add_filter("default", default_filter);
    env.add_filter("d", default_filter);
    env.add_filter("indent", indent_filter);
    env
}

fn add_template(
    env: &mut Environment<'static>,
    name: &'static str,
    source: &str,
) -> Result<Tmpl, Error> {
    let source = patch_source(source);
    env.add_template_owned(name, prepare_for_minijinja(&source))?;
    Ok(Tmpl {
        name,
        source,
        caps: Caps::default(),
    })
}

/// llama.cpp's source patches (`common_chat_templates_init`).
fn patch_source(src: &str) -> String {
    let mut s = src.to_string();
    if s.contains("<|channel|>") && s.contains("in message.content or") {
        s = s.replace(
            "{%- if \"<|channel|>analysis<|message|>\" in message.content or \"<|channel|>final<|message|>\" in message.content %}",
            "{%- if false %}",
        );
    }
    if s.contains("[TOOL_CALLS]") && s.contains("if (message['content'] is none or") {
        s = s.replace(
            "{%- if (message['content'] is none or message['content'] == '' or message['content']|length == 0) and (message['tool_calls'] is not defined or message['tool_calls'] is none or message['tool_calls']|length == 0) %}",
            "{%- if false %}",
        );
    }
    s
}

/// CRLF/CR -> LF (llama.cpp's lexer does this), and `{% generation %}` / `{% endgeneration %}`
/// (ignored by llama.cpp) turned into a no-op block minijinja understands.
fn prepare_for_minijinja(src: &str) -> String {
    let src = src.replace("\r\n", "\n").replace('\r', "\n");
    let mut out = String::with_capacity(src.len());
    let mut rest = src.as_str();
    while let Some(p) = rest.find("{%") {
        out.push_str(&rest[..p]);
        let tag = &rest[p + 2..];
        let ws_ctl = tag.starts_with(['-', '+']);
        let after_ctl = if ws_ctl { &tag[1..] } else { tag };
        let trimmed = after_ctl.trim_start();
        let ident_len = trimmed
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(trimmed.len());
        let ident = &trimmed[..ident_len];
        let replacement = match ident {
            "generation" => Some("if true"),
            "endgeneration" => Some("endif"),
            _ => None,
        };
        match replacement {
            Some(r) => {
                out.push_str("{%");
                if ws_ctl {
                    out.push_str(&tag[..1]);
                }
                out.push(' ');
                out.push_str(r);
                rest = &trimmed[ident_len..];
            }
            None => {
                out.push_str("{%");
                rest = tag;
            }
        }
    }
    out.push_str(rest);
    out
}

fn render_with(env: &Environment<'static>, name: &str, ctx: &Json) -> Result<String, Error> {
    env.get_template(name)?.render(Value::from_serialize(ctx))
}

fn raise_exception(msg: String) -> Result<Value, Error> {
    Err(Error::new(
        ErrorKind::InvalidOperation,
        format!("{RAISE_PREFIX}{msg}"),
    ))
}

fn strftime_now(fmt: String) -> Result<String, Error> {
    Ok(strftime(unix_now(), &fmt))
}

/// How llama.cpp prints a value in `{{ }}`: strings as they are, numbers, `True`/`False`, the
/// items of a list one after another, nothing for none/undefined/mappings.
fn format_output(out: &mut Output, _state: &State, value: &Value) -> Result<(), Error> {
    let mut s = String::new();
    print_value(value, &mut s);
    out.write_str(&s)
        .map_err(|e| Error::new(ErrorKind::WriteFailure, "cannot write the output").with_source(e))
}

fn print_value(v: &Value, out: &mut String) {
    match v.kind() {
        ValueKind::String => out.push_str(v.as_str().unwrap_or("")),
        ValueKind::Bool => out.push_str(if v.is_true() { "True" } else { "False" }),
        ValueKind::Number => out.push_str(&number_str(v)),
        ValueKind::Seq | ValueKind::Iterable => {
            if let Ok(items) = v.try_iter() {
                for item in items {
                    print_value(&item, out);
                }
            }
        }
        ValueKind::Bytes => out.push_str(&String::from_utf8_lossy(v.as_bytes().unwrap_or(&[]))),
        _ => {}
    }
}

fn as_float(v: &Value) -> Option<f64> {
    if v.is_number() && !v.is_integer() {
        f64::try_from(v.clone()).ok()
    } else {
        None
    }
}

/// A number as llama.cpp's `as_string` prints it (floats: `%f`, trailing zeros removed).
fn number_str(v: &Value) -> String {
    match as_float(v) {
        Some(f) => {
            if !f.is_finite() {
                return if f.is_nan() {
                    "nan".into()
                } else if f > 0.0 {
                    "inf".into()
                } else {
                    "-inf".into()
                };
            }
            let mut s = format!("{f:.6}");
            while s.ends_with('0') {
                s.pop();
            }
            if s.ends_with('.') {
                s.push('0');
            }
            s
        }
        None => v.to_string(),
    }
}

/// A float as a C++ stream prints it by default (`%g`, 6 significant digits).
fn float_g(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if f == 0.0 {
        return if f.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    let e_repr = format!("{f:.5e}");
    let (mant, exp) = e_repr.split_once('e').unwrap_or((&e_repr, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let trim = |s: &str| -> String {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s.to_string()
        }
    };
    if !(-4..6).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{}e{sign}{:02}", trim(mant), exp.abs())
    } else {
        let decimals = usize::try_from(5 - exp).unwrap_or(0);
        trim(&format!("{f:.decimals$}"))
    }
}

fn json_escape_into(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// llama.cpp's `value_to_json`.
fn to_json_into(
    v: &Value,
    lvl: usize,
    indent: i64,
    item_sep: &str,
    key_sep: &str,
    out: &mut String,
) {
    let pad = |lvl: usize| -> String {
        if indent > 0 {
            " ".repeat(lvl * indent as usize)
        } else {
            String::new()
        }
    };
    let newline = if indent >= 0 { "\n" } else { "" };
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number => match as_float(v) {
            Some(f) => out.push_str(&float_g(f)),
            None => out.push_str(&v.to_string()),
        },
        ValueKind::String => json_escape_into(v.as_str().unwrap_or(""), out),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = v.try_iter().map(|it| it.collect()).unwrap_or_default();
            out.push('[');
            if !items.is_empty() {
                out.push_str(newline);
                for (i, item) in items.iter().enumerate() {
                    out.push_str(&pad(lvl + 1));
                    to_json_into(item, lvl + 1, indent, item_sep, key_sep, out);
                    if i + 1 < items.len() {
                        out.push_str(item_sep);
                    }
                    out.push_str(newline);
                }
                out.push_str(&pad(lvl));
            }
            out.push(']');
        }
        ValueKind::Map => {
            let keys: Vec<Value> = v.try_iter().map(|it| it.collect()).unwrap_or_default();
            out.push('{');
            if !keys.is_empty() {
                out.push_str(newline);
                for (i, k) in keys.iter().enumerate() {
                    out.push_str(&pad(lvl + 1));
                    let key = match k.as_str() {
                        Some(s) => s.to_string(),
                        None => str_value(k),
                    };
                    json_escape_into(&key, out);
                    out.push_str(key_sep);
                    let val = v.get_item(k).unwrap_or_default();
                    to_json_into(&val, lvl + 1, indent, item_sep, key_sep, out);
                    if i + 1 < keys.len() {
                        out.push_str(item_sep);
                    }
                    out.push_str(newline);
                }
                out.push_str(&pad(lvl));
            }
            out.push('}');
        }
        _ => out.push_str("null"),
    }
}

/// `tojson(value, ensure_ascii, indent, separators, sort_keys)` as llama.cpp implements it
/// (positions after the value as there; keyword arguments preferred).
fn tojson_filter(value: &Value, args: Rest<Value>, kwargs: Kwargs) -> Result<String, Error> {
    let arg = |name: &str, pos: usize| -> Result<Value, Error> {
        match kwargs.get::<Option<Value>>(name)? {
            Some(v) => Ok(v),
            None => Ok(args.get(pos).cloned().unwrap_or(Value::UNDEFINED)),
        }
    };
    let ensure_ascii = arg("ensure_ascii", 0)?.is_true();
    let indent_v = arg("indent", 1)?;
    let separators = arg("separators", 2)?;
    let sort_keys = arg("sort_keys", 3)?;
    kwargs.assert_all_used()?;
    if sort_keys.is_true() {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            "tojson sort_keys=true is not implemented (as in llama.cpp)",
        ));
    }
    let indent = if indent_v.is_integer() {
        indent_v.as_i64().unwrap_or(-1)
    } else {
        -1
    };
    if indent > MAX_INDENT {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("tojson indent {indent} is too large"),
        ));
    }
    let seps: Vec<String> = if separators.kind() == ValueKind::Seq {
        separators.try_iter()?.map(|s| str_value(&s)).collect()
    } else {
        Vec::new()
    };
    let item_sep =
        seps.first()
            .cloned()
            .unwrap_or_else(|| if indent < 0 { ", ".into() } else { ",".into() });
    let key_sep = seps.get(1).cloned().unwrap_or_else(|| ": ".into());
    let mut out = String::new();
    to_json_into(value, 0, indent, &item_sep, &key_sep, &mut out);
    if ensure_ascii {
        let mut ascii = String::with_capacity(out.len());
        for c in out.chars() {
            if c.is_ascii() {
                ascii.push(c);
            } else {
                let mut buf = [0u16; 2];
                for u in c.encode_utf16(&mut buf) {
                    ascii.push_str(&format!("\\u{u:04x}"));
                }
            }
        }
        out = ascii;
    }
    Ok(out)
}

/// Python-like `str()` of a value, as llama.cpp's `as_string`.
fn str_value(v: &Value) -> String {
    match v.kind() {
        ValueKind::String => v.as_str().unwrap_or("").to_string(),
        ValueKind::Bool => (if v.is_true() { "True" } else { "False" }).into(),
        ValueKind::None => "None".into(),
        ValueKind::Undefined => String::new(),
        ValueKind::Number => number_str(v),
        _ => repr_value(v),
    }
}

/// llama.cpp's `value_to_string_repr` (Python-like `repr()`).
fn repr_value(v: &Value) -> String {
    match v.kind() {
        ValueKind::String => {
            let s = v.as_str().unwrap_or("");
            if s.contains('\'') {
                let mut out = String::new();
                json_escape_into(s, &mut out);
                out
            } else {
                format!("'{s}'")
            }
        }
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<String> = v
                .try_iter()
                .map(|it| it.map(|x| repr_value(&x)).collect())
                .unwrap_or_default();
            format!("[{}]", items.join(", "))
        }
        ValueKind::Map => {
            let keys: Vec<Value> = v.try_iter().map(|it| it.collect()).unwrap_or_default();
            let items: Vec<String> = keys
                .iter()
                .map(|k| {
                    format!(
                        "{}: {}",
                        repr_value(k),
                        repr_value(&v.get_item(k).unwrap_or_default())
                    )
                })
                .collect();
            format!("{{{}}}", items.join(", "))
        }
        _ => str_value(v),
    }
}

fn string_filter(value: &Value) -> String {
    str_value(value)
}

/// `default(value, default = "", boolean = false)`: llama.cpp replaces none as well as
/// undefined (Jinja2 only undefined).
fn default_filter(value: &Value, args: Rest<Value>, kwargs: Kwargs) -> Result<Value, Error> {
    let boolean = match kwargs.get::<Option<Value>>("boolean")? {
        Some(b) => b.is_true(),
        None => args.get(1).is_some_and(Value::is_true),
    };
    kwargs.assert_all_used()?;
    let dflt = args.first().cloned().unwrap_or_else(|| Value::from(""));
    let missing = if boolean {
        !value.is_true()
    } else {
        value.is_undefined() || value.is_none()
    };
    Ok(if missing { dflt } else { value.clone() })
}

/// `indent(s, width = 4, first = false, blank = false)` exactly as llama.cpp implements it
/// (`width` may be a string; a trailing newline is kept).
fn indent_filter(value: &Value, args: Rest<Value>, kwargs: Kwargs) -> Result<String, Error> {
    let arg = |name: &str, pos: usize| -> Result<Value, Error> {
        match kwargs.get::<Option<Value>>(name)? {
            Some(v) => Ok(v),
            None => Ok(args.get(pos).cloned().unwrap_or(Value::UNDEFINED)),
        }
    };
    let width = arg("width", 0)?;
    let first = arg("first", 1)?.is_true();
    let blank = arg("blank", 2)?.is_true();
    kwargs.assert_all_used()?;
    let input = value.as_str().ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidOperation,
            "indent() first argument must be a string",
        )
    })?;
    let indent = if width.is_integer() {
        let w = width
            .as_i64()
            .and_then(|w| usize::try_from(w).ok())
            .unwrap_or(0);
        if w > MAX_INDENT as usize {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("indent width {w} is too large"),
            ));
        }
        " ".repeat(w)
    } else if let Some(s) = width.as_str() {
        s.to_string()
    } else {
        "    ".to_string()
    };
    let mut out = String::new();
    // std::getline semantics: no empty last line after a trailing newline
    let body = input.strip_suffix('\n').unwrap_or(input);
    if !input.is_empty() {
        for line in body.split('\n') {
            if !out.is_empty() {
                out.push('\n');
            }
            if if out.is_empty() {
                first
            } else {
                !line.is_empty() || blank
            } {
                out.push_str(&indent);
            }
            out.push_str(line);
        }
    }
    if input.ends_with('\n') {
        out.push('\n');
        if blank {
            out.push_str(&indent);
        }
    }
    Ok(out)
}

// ---- capability probes ----

/// Render a probe conversation; None when the template fails on it.
fn probe(env: &Environment<'static>, name: &str, messages: Json, tools: Json) -> Option<String> {
    let ctx = json!({
        "messages": messages,
        "tools": tools,
        "bos_token": "",
        "eos_token": "",
        "add_generation_prompt": true,
    });
    render_with(env, name, &ctx).ok()
}

/// What llama.cpp's `caps_get` finds out, approximated by what reaches the output.
fn detect_caps(env: &Environment<'static>, name: &str) -> Caps {
    let mut caps = Caps::default();
    const STRING_MARKER: &str = "<STRING_CONTENT_MARKER_4242>";
    const TYPED_MARKER: &str = "<TYPED_CONTENT_MARKER_4242>";
    const SYSTEM_MARKER: &str = "<SYSTEM_CONTENT_MARKER_4242>";
    const ARG_MARKER: &str = "<ARGUMENT_MARKER_4242>";

    let string_ok = probe(
        env,
        name,
        json!([{"role": "user", "content": STRING_MARKER}]),
        json!([]),
    )
    .is_some_and(|o| o.contains(STRING_MARKER));
    // Typed content is supported when the text of the part reaches the output on its own, not
    // inside a printed list (`{'type': 'text', 'text': '...'}`).
    let typed_ok = probe(
        env,
        name,
        json!([{"role": "user", "content": [{"type": "text", "text": TYPED_MARKER}]}]),
        json!([]),
    )
    .is_some_and(|o| {
        o.contains(TYPED_MARKER)
            && !o.contains(&format!("'text': '{TYPED_MARKER}"))
            && !o.contains(&format!("\"text\": \"{TYPED_MARKER}"))
    });
    caps.supports_typed_content = typed_ok;
    caps.supports_string_content = string_ok || !typed_ok;

    let sys = if caps.supports_string_content {
        json!([{"role": "system", "content": SYSTEM_MARKER}, {"role": "user", "content": "User message"}])
    } else {
        json!([
            {"role": "system", "content": [{"type": "text", "text": SYSTEM_MARKER}]},
            {"role": "user", "content": [{"type": "text", "text": "User message"}]},
        ])
    };
    caps.supports_system_role =
        probe(env, name, sys, json!([])).is_some_and(|o| o.contains(SYSTEM_MARKER));

    let tools = json!([{
        "name": "tool",
        "type": "function",
        "function": {
            "name": "tool1",
            "description": "Tool description",
            "parameters": {
                "type": "object",
                "properties": {"arg": {"type": "string", "description": "Arg description"}},
                "required": ["arg"],
            },
        },
    }]);
    let msgs = json!([
        {"role": "user", "content": "User message"},
        {"role": "assistant", "content": "", "tool_calls": [{
            "id": "call00001",
            "type": "function",
            "function": {"name": "tool1", "arguments": {"arg": ARG_MARKER}},
        }]},
        {"role": "tool", "content": "Tool response", "tool_call_id": "call00001"},
        {"role": "assistant", "content": "The tool response was 'tool response'"},
        {"role": "user", "content": "User message"},
    ]);
    caps.supports_object_arguments =
        probe(env, name, msgs, tools).is_some_and(|o| o.contains(ARG_MARKER));
    caps
}

// ---- time ----

fn unix_now() -> i64 {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// Days since 1970-01-01 -> (year, month 1..=12, day 1..=31) (H. Hinnant's civil_from_days).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

/// C `strftime` for a UTC time (the common conversions; glibc's `-` flag drops padding).
fn strftime(secs: i64, fmt: &str) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, mo, d) = civil_from_days(days);
    let (h, mi, s) = (rem / 3600, (rem / 60) % 60, rem % 60);
    let wday = (days + 4).rem_euclid(7) as usize;
    const CUM: [i64; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let yday = CUM[(mo - 1) as usize] + i64::from(d) + i64::from(mo > 2 && is_leap(y));
    let mut out = String::new();
    let mut chars = fmt.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let no_pad = chars.peek() == Some(&'-');
        if no_pad {
            chars.next();
        }
        let num = |v: i64, width: usize, padc: char| -> String {
            if no_pad {
                v.to_string()
            } else if padc == ' ' {
                format!("{v:>width$}")
            } else {
                format!("{v:0width$}")
            }
        };
        let h12 = if h % 12 == 0 { 12 } else { h % 12 };
        match chars.next() {
            Some('Y') => out.push_str(&y.to_string()),
            Some('y') => out.push_str(&num(y.rem_euclid(100), 2, '0')),
            Some('C') => out.push_str(&num(y.div_euclid(100), 2, '0')),
            Some('m') => out.push_str(&num(i64::from(mo), 2, '0')),
            Some('d') => out.push_str(&num(i64::from(d), 2, '0')),
            Some('e') => out.push_str(&num(i64::from(d), 2, ' ')),
            Some('j') => out.push_str(&num(yday, 3, '0')),
            Some('H') => out.push_str(&num(h, 2, '0')),
            Some('I') => out.push_str(&num(h12, 2, '0')),
            Some('M') => out.push_str(&num(mi, 2, '0')),
            Some('S') => out.push_str(&num(s, 2, '0')),
            Some('p') => out.push_str(if h < 12 { "AM" } else { "PM" }),
            Some('b') | Some('h') => out.push_str(&MONTHS[(mo - 1) as usize][..3]),
            Some('B') => out.push_str(MONTHS[(mo - 1) as usize]),
            Some('a') => out.push_str(&DAYS[wday][..3]),
            Some('A') => out.push_str(DAYS[wday]),
            Some('u') => out.push_str(&(if wday == 0 { 7 } else { wday }).to_string()),
            Some('w') => out.push_str(&wday.to_string()),
            Some('s') => out.push_str(&secs.to_string()),
            Some('Z') => out.push_str("UTC"),
            Some('z') => out.push_str("+0000"),
            Some('F') => out.push_str(&strftime(secs, "%Y-%m-%d")),
            Some('T') => out.push_str(&strftime(secs, "%H:%M:%S")),
            Some('R') => out.push_str(&strftime(secs, "%H:%M")),
            Some('D') | Some('x') => out.push_str(&strftime(secs, "%m/%d/%y")),
            Some('X') => out.push_str(&strftime(secs, "%H:%M:%S")),
            Some('c') => out.push_str(&strftime(secs, "%a %b %e %H:%M:%S %Y")),
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                if no_pad {
                    out.push('-');
                }
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpl(src: &str) -> ChatTemplate {
        ChatTemplate::new(
            src,
            None,
            ChatTokens {
                bos: "<s>".into(),
                eos: "</s>".into(),
                ..Default::default()
            },
        )
        .expect("template")
    }

    #[test]
    fn strftime_known_dates() {
        // 2024-02-29 13:05:09 UTC, a Thursday
        let t = 1_709_211_909;
        assert_eq!(strftime(t, "%Y-%m-%d %H:%M:%S"), "2024-02-29 13:05:09");
        assert_eq!(strftime(t, "%d %b %Y"), "29 Feb 2024");
        assert_eq!(
            strftime(t, "%A %B %-d, %I %p, day %j"),
            "Thursday February 29, 01 PM, day 060"
        );
        assert_eq!(strftime(0, "%F %T %a"), "1970-01-01 00:00:00 Thu");
        assert_eq!(strftime(-86_400, "%F %a"), "1969-12-31 Wed");
    }

    #[test]
    fn float_formats_like_cpp() {
        assert_eq!(float_g(0.5), "0.5");
        assert_eq!(float_g(1.0), "1");
        assert_eq!(float_g(1.23456789), "1.23457");
        assert_eq!(float_g(1e20), "1e+20");
        assert_eq!(float_g(1.5e-7), "1.5e-07");
        assert_eq!(float_g(123456.0), "123456");
        assert_eq!(float_g(1234567.0), "1.23457e+06");
        assert_eq!(float_g(0.0001), "0.0001");
        assert_eq!(number_str(&Value::from(1.5)), "1.5");
        assert_eq!(number_str(&Value::from(2.0)), "2.0");
    }

    #[test]
    fn tojson_spacing_and_options() {
        let t = tmpl("{{ x | tojson }}|{{ x | tojson(indent=2) }}|{{ x | tojson(separators=[',', ':']) }}|{{ 'é' | tojson(ensure_ascii=true) }}");
        let out = t
            .render(
                &json!([{"role": "user", "content": "hi"}]),
                false,
                None,
                Some(&json!({"x": {"a": [1, 2.5, "é\"\n"], "b": null, "c": true}})),
            )
            .expect("render");
        assert_eq!(
            out,
            "{\"a\": [1, 2.5, \"é\\\"\\n\"], \"b\": null, \"c\": true}|{\n  \"a\": [\n    1,\n    2.5,\n    \"é\\\"\\n\"\n  ],\n  \"b\": null,\n  \"c\": true\n}|{\"a\":[1,2.5,\"é\\\"\\n\"],\"b\":null,\"c\":true}|\"\\u00e9\""
        );
    }

    #[test]
    fn values_print_like_llama_cpp() {
        let t = tmpl("{{ true }} {{ none }}|{{ [1, 'a'] }}|{{ {'k': 1} }}|{{ 1.0 }}|{{ undefined_thing }}|{{ 'a b'.split(' ') | string }}");
        let out = t.render(&json!([]), false, None, None).expect("render");
        assert_eq!(out, "True |1a||1.0||['a', 'b']");
    }

    #[test]
    fn raise_exception_and_bad_input_are_errors() {
        let t = tmpl("{% if messages[0].role != 'user' %}{{ raise_exception('first message must be from the user') }}{% endif %}ok");
        let err = t
            .render(
                &json!([{"role": "assistant", "content": "x"}]),
                false,
                None,
                None,
            )
            .expect_err("raises");
        assert!(
            format!("{err:#}").contains("first message must be from the user"),
            "{err:#}"
        );
        assert_eq!(
            t.render(
                &json!([{"role": "user", "content": "x"}]),
                false,
                None,
                None
            )
            .expect("ok"),
            "ok"
        );
        for (bad, needle) in [
            (json!({"role": "user"}), "must be a JSON array"),
            (json!([{"content": "x"}]), "no \"role\""),
            (json!(["x"]), "must be an object"),
            (
                json!([{"role": "user"}]),
                "neither \"content\" nor \"tool_calls\"",
            ),
            (json!([{"role": "user", "content": 5}]), "content must be"),
            (
                json!([{"role": 1, "content": "x"}]),
                "role must be a string",
            ),
        ] {
            let err = t.render(&bad, false, None, None).expect_err("bad input");
            assert!(format!("{err:#}").contains(needle), "{bad}: {err:#}");
        }
        assert!(ChatTemplate::new("{% if %}", None, ChatTokens::default()).is_err());
        assert!(ChatTemplate::new("{% frobnicate %}", None, ChatTokens::default()).is_err());
    }

    #[test]
    fn loop_controls_generation_tags_and_pycompat() {
        let t = tmpl(
            "{%- for m in messages %}{% if loop.index > 2 %}{% break %}{% endif %}{% generation %}{{ m.content.strip().upper() }};{% endgeneration %}{% endfor %}",
        );
        let msgs = json!([{"role": "user", "content": " a "}, {"role": "user", "content": "b"}, {"role": "user", "content": "c"}]);
        assert_eq!(t.render(&msgs, false, None, None).expect("render"), "A;B;");
    }

    #[test]
    fn variables_bos_strip_and_system_merge() {
        let tokens = ChatTokens {
            bos: "<s>".into(),
            eos: "</s>".into(),
            add_bos: true,
            add_eos: false,
        };
        // A template that ignores system messages gets the system prompt merged into the next one.
        let src = "{{ bos_token }}{% for m in messages %}{% if m.role == 'user' %}[U]{{ m.content }}{% endif %}{% endfor %}{% if add_generation_prompt %}[A]{% endif %}{{ enable_thinking }}";
        let t = ChatTemplate::new(src, None, tokens).expect("template");
        assert!(!t.caps().supports_system_role);
        let out = t
            .render(
                &json!([{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]),
                true,
                None,
                None,
            )
            .expect("render");
        assert_eq!(out, "[U]S\nU[A]True");
        let out = t
            .render(
                &json!([{"role": "user", "content": "U"}]),
                false,
                None,
                Some(&json!({"enable_thinking": false})),
            )
            .expect("render");
        assert_eq!(out, "[U]UFalse");
    }

    #[test]
    fn chatml_default() {
        let t = ChatTemplate::new("", None, ChatTokens::default()).expect("template");
        let out = t
            .render(
                &json!([{"role": "user", "content": "hi"}]),
                true,
                None,
                None,
            )
            .expect("render");
        assert_eq!(
            out,
            "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
        );
    }
}
