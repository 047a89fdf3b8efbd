//! A checker for the subset of JSON Schema the constrained-output tests use (enum, object with
//! required / additionalProperties, array with min/maxItems, string lengths, integer bounds,
//! boolean): written here so that the tests do not check our output with our own grammar engine.

use serde_json::{json, Value};

/// The subset of JSON Schema the test schemas use.
pub fn check(schema: &Value, v: &Value, at: &str) -> Result<(), String> {
    if let Some(e) = schema.get("enum").and_then(Value::as_array) {
        if !e.contains(v) {
            return Err(format!("{at}: {v} not in {e:?}"));
        }
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("object") => {
            let o = v.as_object().ok_or(format!("{at}: not an object: {v}"))?;
            let props = schema["properties"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            for r in schema["required"].as_array().into_iter().flatten() {
                let r = r.as_str().unwrap_or_default();
                if !o.contains_key(r) {
                    return Err(format!("{at}: missing {r:?}"));
                }
            }
            for (k, x) in o {
                match props.get(k) {
                    Some(s) => check(s, x, &format!("{at}.{k}"))?,
                    None if schema["additionalProperties"] == json!(false) => {
                        return Err(format!("{at}: unexpected property {k:?}"))
                    }
                    None => {}
                }
            }
        }
        Some("array") => {
            let a = v.as_array().ok_or(format!("{at}: not an array: {v}"))?;
            let n = a.len() as u64;
            if schema["minItems"].as_u64().is_some_and(|m| n < m)
                || schema["maxItems"].as_u64().is_some_and(|m| n > m)
            {
                return Err(format!("{at}: {n} items"));
            }
            for (i, x) in a.iter().enumerate() {
                check(&schema["items"], x, &format!("{at}[{i}]"))?;
            }
        }
        Some("string") => {
            let s = v.as_str().ok_or(format!("{at}: not a string: {v}"))?;
            let n = s.chars().count() as u64;
            if schema["maxLength"].as_u64().is_some_and(|m| n > m)
                || schema["minLength"].as_u64().is_some_and(|m| n < m)
            {
                return Err(format!("{at}: length {n}"));
            }
        }
        Some("integer") => {
            let x = v.as_i64().ok_or(format!("{at}: not an integer: {v}"))?;
            if schema["minimum"].as_i64().is_some_and(|m| x < m)
                || schema["maximum"].as_i64().is_some_and(|m| x > m)
            {
                return Err(format!("{at}: {x} out of bounds"));
            }
        }
        Some("boolean") => {
            v.as_bool().ok_or(format!("{at}: not a boolean: {v}"))?;
        }
        Some(other) => return Err(format!("test validator: type {other}")),
        None => {}
    }
    Ok(())
}

/// `text` parses as JSON and satisfies `schema`.
pub fn validates(schema: &Value, text: &str) -> Result<(), String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON ({e}): {text:?}"))?;
    check(schema, &v, "$")
}
