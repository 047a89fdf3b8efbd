//! Template capabilities (what a template does with its inputs), found by rendering probe
//! conversations.

use super::environment::render_with;
use minijinja::Environment;
use serde_json::{json, Value as Json};

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
pub(super) fn detect_caps(env: &Environment<'static>, name: &str) -> Caps {
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
