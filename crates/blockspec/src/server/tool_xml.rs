//! Tool calls in Qwen3-Coder's XML form (Qwen3-Coder, Qwen3.5, Qwen3.6, Nemotron Nano 3), read
//! as llama.cpp reads them (`common/parsers/qwen3-coder.cpp`). Inside `<tool_call>`:
//!
//! ```text
//! <function=get_weather>
//! <parameter=city>
//! Paris
//! </parameter>
//! </function>
//! ```
//!
//! A value is typed by its argument's JSON schema in the offered tool: a string-only argument
//! keeps the text as a string; one that cannot be a string takes it as JSON; one that may be
//! either takes JSON of an allowed kind (object, array, number, boolean, null) when the text is
//! that, else the string. The arguments JSON text is built as llama.cpp builds it:
//! `{"name":value,...}`, JSON values as the model wrote them, strings escaped.

use crate::decode::constrain::{lark_json, lark_string, Grammar};
use serde_json::Value;

const FUNCTION_OPEN: &str = "<function=";
const FUNCTION_CLOSE: &str = "</function>";
const PARAM_OPEN: &str = "<parameter=";
const PARAM_CLOSE: &str = "</parameter>";

// JSON value kinds a schema allows (llama.cpp's common_chat_schema::type_set).
const NULL: u8 = 1;
const BOOLEAN: u8 = 2;
const NUMBER: u8 = 4;
const INTEGER: u8 = 8;
const STRING: u8 = 16;
const ARRAY: u8 = 32;
const OBJECT: u8 = 64;
const ALL: u8 = 127;

/// Whether a tool call body (the text between `<tool_call>` and `</tool_call>`) is in the XML
/// form.
pub(super) fn is_xml_call(body: &str) -> bool {
    body.trim_start().starts_with(FUNCTION_OPEN)
}

/// A `<function=...>` tool call body -> (name, arguments as JSON text), or None when it is not
/// well formed or names no offered tool (`tools`: the request's tool definitions).
pub(super) fn parse_xml_call(body: &str, tools: &[Value]) -> Option<(String, String)> {
    let rest = body.trim_start().strip_prefix(FUNCTION_OPEN)?;
    let (name, mut rest) = rest.split_once('>')?;
    let function = tools
        .iter()
        .filter_map(|t| t.get("function"))
        .find(|f| f.get("name").and_then(Value::as_str) == Some(name))?;
    let properties = function.get("parameters").and_then(|p| p.get("properties"));
    let mut args = Vec::new();
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix(FUNCTION_CLOSE) {
            if !after.trim().is_empty() {
                return None;
            }
            break;
        }
        let (arg, after) = rest.strip_prefix(PARAM_OPEN)?.split_once('>')?;
        let (value, after) = after.split_once(PARAM_CLOSE)?;
        let value = value.strip_prefix('\n').unwrap_or(value);
        let value = value.strip_suffix('\n').unwrap_or(value);
        let types = properties
            .and_then(|p| p.get(arg))
            .map_or(ALL, |s| value_types(s, 0));
        args.push(format!(
            "{}:{}",
            json_string(arg),
            typed_value(value, types)
        ));
        rest = after;
    }
    Some((name.to_string(), format!("{{{}}}", args.join(","))))
}

/// One tool call in the XML form, constrained to the offered tools (`tools`: name and
/// `parameters` schema; at least one): `<tool_call>`, one `<function=NAME>` block with the
/// tool's declared parameters in the schema's order (the required ones always, the others
/// optionally), then `</tool_call>`, as the Qwen3.5 family's templates write calls. A value
/// whose schema allows only strings is free text (an `enum` or `const` of strings: one of
/// those); one that cannot be a string is JSON of its schema; one that may be both is free
/// text, which [`parse_xml_call`] types. A tool without declared parameters takes any.
pub(super) fn xml_call_grammar(tools: &[(String, Option<Value>)]) -> Grammar {
    let mut rules = Vec::new();
    let mut calls = Vec::new();
    for (i, (name, params)) in tools.iter().enumerate() {
        let props = params
            .as_ref()
            .and_then(|p| p.get("properties"))
            .and_then(Value::as_object);
        let required: Vec<&str> = params
            .as_ref()
            .and_then(|p| p.get("required"))
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let mut body = vec![lark_string(&format!("{FUNCTION_OPEN}{name}>\n"))];
        let declared: Vec<(&str, Option<&Value>)> = match props {
            Some(p) => p.iter().map(|(k, v)| (k.as_str(), Some(v))).collect(),
            None => Vec::new(),
        };
        let undeclared = required
            .iter()
            .filter(|r| !declared.iter().any(|(k, _)| k == *r))
            .map(|r| (*r, None));
        let all: Vec<(&str, Option<&Value>)> = declared.iter().copied().chain(undeclared).collect();
        if all.is_empty() {
            body.push(format!(
                "({} /[A-Za-z_][A-Za-z0-9_.\\-]*/ \">\\n\" XML_TEXT)*",
                lark_string(PARAM_OPEN)
            ));
        }
        for (j, (arg, schema)) in all.iter().enumerate() {
            let rule = format!("p_{i}_{j}");
            let open = lark_string(&format!("{PARAM_OPEN}{arg}>\n"));
            rules.push(format!("{rule}: {open} {}", xml_value(*schema)));
            let needed = required.contains(arg);
            body.push(if needed { rule } else { format!("{rule}?") });
        }
        body.push(lark_string(&format!("{FUNCTION_CLOSE}\n")));
        rules.push(format!("call_{i}: {}", body.join(" ")));
        calls.push(format!("call_{i}"));
    }
    let mut lark = format!(
        "start: {} ({}) {}\n",
        lark_string("<tool_call>\n"),
        calls.join(" | "),
        lark_string("</tool_call>")
    );
    for r in rules {
        lark.push_str(&r);
        lark.push('\n');
    }
    // A value and the line that closes it, with no other `</parameter>` in it.
    lark.push_str(
        "XML_TEXT: /(?s:.*)\\n<\\/parameter>\\n/ & ~/(?s:.*)<\\/parameter>(?s:.*)<\\/parameter>(?s:.*)/\n",
    );
    Grammar::Lark(lark)
}

/// A parameter's value and its closing line, by the argument's schema (None: undeclared).
fn xml_value(schema: Option<&Value>) -> String {
    let close = lark_string(&format!("\n{PARAM_CLOSE}\n"));
    let Some(schema) = schema else {
        return "XML_TEXT".into();
    };
    let types = value_types(schema, 0);
    if types == STRING {
        let fixed: Option<Vec<&str>> = match (schema.get("const"), schema.get("enum")) {
            (Some(c), _) => c.as_str().map(|c| vec![c]),
            (None, Some(Value::Array(vs))) => vs.iter().map(Value::as_str).collect(),
            _ => None,
        };
        // (An empty string has no Lark literal: such a list stays free text.)
        return match fixed {
            Some(vs) if !vs.is_empty() && vs.iter().all(|v| !v.is_empty()) => {
                let alts: Vec<String> = vs.iter().map(|v| lark_string(v)).collect();
                format!("({}) {close}", alts.join(" | "))
            }
            _ => "XML_TEXT".into(),
        };
    }
    if types & STRING == 0 {
        return format!("{} {close}", lark_json(schema));
    }
    "XML_TEXT".into()
}

/// The value's JSON text for an argument whose schema allows `types`.
fn typed_value(raw: &str, types: u8) -> String {
    if types == STRING {
        return json_string(raw);
    }
    let text = raw.trim();
    match serde_json::from_str::<Value>(text) {
        Ok(v) if types & STRING == 0 || kind(&v) & types != 0 => text.to_string(),
        _ => json_string(raw),
    }
}

fn json_string(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

/// The kinds a value counts as (a number is allowed by `number` and `integer` alike, as
/// llama.cpp's JSON number rule takes both).
fn kind(v: &Value) -> u8 {
    match v {
        Value::Null => NULL,
        Value::Bool(_) => BOOLEAN,
        Value::Number(_) => NUMBER | INTEGER,
        Value::String(_) => STRING,
        Value::Array(_) => ARRAY,
        Value::Object(_) => OBJECT,
    }
}

fn json_kind(v: &Value) -> u8 {
    match v {
        Value::Number(n) if n.is_f64() => NUMBER,
        Value::Number(_) => INTEGER,
        other => kind(other),
    }
}

/// The value kinds a JSON schema allows (llama.cpp's `value_types`); references and schemas
/// without type information allow everything.
fn value_types(schema: &Value, depth: usize) -> u8 {
    let Some(s) = schema.as_object().filter(|_| depth < 16) else {
        return ALL;
    };
    if s.contains_key("$ref") {
        return ALL;
    }
    if let Some(c) = s.get("const") {
        return json_kind(c);
    }
    if let Some(values) = s.get("enum").and_then(Value::as_array) {
        return values.iter().fold(0, |t, v| t | json_kind(v));
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(children) = s.get(key).and_then(Value::as_array) {
            return children
                .iter()
                .fold(0, |t, c| t | value_types(c, depth + 1));
        }
    }
    if let Some(children) = s.get("allOf").and_then(Value::as_array) {
        return children
            .iter()
            .fold(ALL, |t, c| t & value_types(c, depth + 1));
    }
    match s.get("type") {
        Some(Value::String(t)) => type_name(t),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .fold(0, |acc, t| acc | type_name(t)),
        _ if s.contains_key("properties") => OBJECT,
        _ if s.contains_key("items") => ARRAY,
        _ => ALL,
    }
}

fn type_name(t: &str) -> u8 {
    match t {
        "null" => NULL,
        "boolean" => BOOLEAN,
        "number" => NUMBER | INTEGER,
        "integer" => INTEGER,
        "string" => STRING,
        "array" => ARRAY,
        "object" => OBJECT,
        _ => ALL,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tools() -> Vec<Value> {
        vec![
            json!({"type": "function", "function": {"name": "f", "parameters": {
            "type": "object", "properties": {
                "s": {"type": "string"}, "n": {"type": "integer"}, "x": {"type": "number"},
                "b": {"type": "boolean"}, "a": {"type": "array"}, "o": {"type": "object"},
                "u": {"type": ["integer", "string"]}, "e": {"enum": ["a", "b"]},
                "any": {"anyOf": [{"type": "integer"}, {"type": "null"}]}}}}}),
        ]
    }

    fn call(args: &str) -> Option<(String, String)> {
        parse_xml_call(&format!("\n<function=f>\n{args}</function>\n"), &tools())
    }

    #[test]
    fn values_are_typed_by_the_schema() {
        let p = |name: &str, v: &str| format!("<parameter={name}>\n{v}\n</parameter>\n");
        let (name, args) =
            call(&[p("s", "42"), p("n", "3"), p("x", "0.5"), p("b", "true")].concat())
                .expect("call");
        assert_eq!(name, "f");
        assert_eq!(args, r#"{"s":"42","n":3,"x":0.5,"b":true}"#);
        let (_, args) =
            call(&[p("a", "[1, 2]"), p("o", "{\"k\": 1}"), p("u", "7")].concat()).expect("call");
        assert_eq!(args, r#"{"a":[1, 2],"o":{"k": 1},"u":7}"#);
        let (_, args) =
            call(&[p("u", "seven"), p("e", "a"), p("any", "null")].concat()).expect("call");
        assert_eq!(args, r#"{"u":"seven","e":"a","any":null}"#);
        // Strings keep inner newlines and quotes; an unknown argument takes any JSON.
        let (_, args) = call(&[p("s", "a\n\"b\""), p("zz", "[1]")].concat()).expect("call");
        assert_eq!(args, r#"{"s":"a\n\"b\"","zz":[1]}"#);
        assert_eq!(call("").expect("no arguments").1, "{}");
    }

    #[test]
    fn malformed_or_unknown_calls_are_refused() {
        assert!(parse_xml_call("<function=nope>\n</function>", &tools()).is_none());
        assert!(call("<parameter=s>\nx\n").is_none());
        assert!(parse_xml_call("<function=f>\n</function> trailing", &tools()).is_none());
        assert!(parse_xml_call("{\"name\": \"f\"}", &tools()).is_none());
        assert!(is_xml_call("\n<function=f>"));
        assert!(!is_xml_call("{\"name\": \"f\"}"));
    }
}
