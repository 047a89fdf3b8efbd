//! Template values printed and converted as llama.cpp's Jinja engine does: the `{{ }}`
//! formatter, Python-like `str()`/`repr()`, and the `tojson`, `string`, `default` and `indent`
//! filters.

use minijinja::value::{Kwargs, Rest, Value, ValueKind};
use minijinja::{Error, ErrorKind, Output, State};

/// Largest `tojson`/`indent` indentation accepted (a guard against absurd allocations).
const MAX_INDENT: i64 = 1024;

/// How llama.cpp prints a value in `{{ }}`: strings as they are, numbers, `True`/`False`, the
/// items of a list one after another, nothing for none/undefined/mappings.
pub(super) fn format_output(out: &mut Output, _state: &State, value: &Value) -> Result<(), Error> {
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
pub(super) fn tojson_filter(
    value: &Value,
    args: Rest<Value>,
    kwargs: Kwargs,
) -> Result<String, Error> {
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

/// `string(value)`: Python-like `str()`.
pub(super) fn string_filter(value: &Value) -> String {
    str_value(value)
}

/// `default(value, default = "", boolean = false)`: llama.cpp replaces none as well as
/// undefined (Jinja2 only undefined).
pub(super) fn default_filter(
    value: &Value,
    args: Rest<Value>,
    kwargs: Kwargs,
) -> Result<Value, Error> {
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
pub(super) fn indent_filter(
    value: &Value,
    args: Rest<Value>,
    kwargs: Kwargs,
) -> Result<String, Error> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::chat::tests::tmpl;
    use serde_json::json;

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
}
