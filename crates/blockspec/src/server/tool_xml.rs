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
