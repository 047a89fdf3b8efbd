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
//!
//! The parts: `messages` (OpenAI messages and tools validated and rebuilt, llama.cpp's
//! workarounds), `environment` (the minijinja environment and template source patches),
//! `values` (how values print and the filters llama.cpp implements its own way), `caps`
//! (capability probes) and `time` (`strftime` in UTC).

mod caps;
mod environment;
mod messages;
mod time;
mod values;

pub use caps::Caps;

use crate::format::gguf::{Gguf, Value as GValue};
use crate::text::tokenizer::ChatTokens;
use anyhow::{anyhow, bail, Result};
use caps::detect_caps;
use environment::{add_template, environment, render_with, Tmpl, RAISE_PREFIX};
use messages::{
    json_type, merge_system_message, normalize_content, parse_messages, parse_tool_call_arguments,
    parse_tools, Msg,
};
use minijinja::{Environment, Error};
use serde_json::{json, Map, Value as Json};
use time::{strftime, unix_now};

/// llama.cpp's fallback template (`CHATML_TEMPLATE_SRC`) for models without one.
pub const CHATML_TEMPLATE: &str = "{%- for message in messages -%}\n  {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' -}}\n{%- endfor -%}\n{%- if add_generation_prompt -%}\n  {{- '<|im_start|>assistant\\n' -}}\n{%- endif -%}";

/// The template kwargs of a request as llama.cpp's tools (llama-server, llama-cli) pass them:
/// `preserve_reasoning` on (their `--reasoning-preserve` default, which sets `preserve_thinking`
/// for templates such as Qwen3.6's), then the request's own `kwargs`, which win.
pub fn llama_default_kwargs(kwargs: Option<&Map<String, Json>>) -> Json {
    let mut out = Map::new();
    out.insert("preserve_reasoning".into(), json!(true));
    for (k, v) in kwargs.into_iter().flatten() {
        out.insert(k.clone(), v.clone());
    }
    Json::Object(out)
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

    /// Whether the template used for a request (with or without tools) writes tool calls in
    /// Qwen3-Coder's XML form (`<tool_call>`, `<function=NAME>`, `<parameter=ARG>`: Qwen3-Coder,
    /// Qwen3.5, Qwen3.6), detected from its source as llama.cpp detects it.
    pub fn xml_tool_calls(&self, with_tools: bool) -> bool {
        let src = match &self.tool_use {
            Some(tu) if with_tools => &tu.source,
            _ => &self.default.source,
        };
        ["<tool_call>", "<function=", "<parameter="]
            .iter()
            .all(|s| src.contains(s))
            && !src.contains("'<tool_call><function=' ~ tool_call.name ~ '>'")
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A template from source, with `<s>`/`</s>` as BOS/EOS (shared by the submodules' tests).
    pub(super) fn tmpl(src: &str) -> ChatTemplate {
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
