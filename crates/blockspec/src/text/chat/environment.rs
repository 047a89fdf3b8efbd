//! The minijinja environment set up as llama.cpp's Jinja engine behaves, and the template
//! sources patched and prepared for it.

use super::time::{strftime, unix_now};
use super::values::{default_filter, format_output, indent_filter, string_filter, tojson_filter};
use super::Caps;
use minijinja::value::Value;
use minijinja::{AutoEscape, Environment, Error, ErrorKind, UndefinedBehavior};
use serde_json::Value as Json;

/// Starts the error detail of a template's `raise_exception`, so that it is reported plainly.
pub(super) const RAISE_PREFIX: &str = "raise_exception: ";

/// One template in the environment: its name there, its patched source, what it supports.
pub(super) struct Tmpl {
    pub(super) name: &'static str,
    pub(super) source: String,
    pub(super) caps: Caps,
}

/// An environment with llama.cpp's Jinja dialect (see the `chat` module doc).
pub(super) fn environment() -> Environment<'static> {
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

/// Patch `source`, add it to `env` as `name`; its capabilities are probed afterwards.
pub(super) fn add_template(
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

/// Render template `name` with the JSON object `ctx` as its variables.
pub(super) fn render_with(
    env: &Environment<'static>,
    name: &str,
    ctx: &Json,
) -> Result<String, Error> {
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

#[cfg(test)]
mod tests {
    use crate::text::chat::tests::tmpl;
    use serde_json::json;

    #[test]
    fn loop_controls_generation_tags_and_pycompat() {
        let t = tmpl(
            "{%- for m in messages %}{% if loop.index > 2 %}{% break %}{% endif %}{% generation %}{{ m.content.strip().upper() }};{% endgeneration %}{% endfor %}",
        );
        let msgs = json!([{"role": "user", "content": " a "}, {"role": "user", "content": "b"}, {"role": "user", "content": "c"}]);
        assert_eq!(t.render(&msgs, false, None, None).expect("render"), "A;B;");
    }
}
