//! Constrained output and `logit_bias` in requests.
//!
//! What the output must follow: `response_format` (OpenAI: `{"type": "json_schema",
//! "json_schema": {"schema": ..}}`, `{"type": "json_object"}` with an optional `schema` as
//! llama-server takes it, `{"type": "text"}`), llama.cpp's `json_schema` (a schema) and
//! `grammar` (GBNF text), and in chat a forced tool call (`tool_choice` "required" or a named
//! function). At most one of them; it is compiled once per request and every choice starts
//! from its own copy of the start state.
//!
//! `logit_bias`: OpenAI's object `{"<token id>": bias}` or llama-server's array
//! `[[id, bias], ...]`; a key or first element that is not an integer is text, and the bias
//! goes to each of its tokens; `false` as the bias bans the token(s). Biases are in
//! [-100, 100] (OpenAI's range).

use super::openai::{short, ApiError, ApiResult, Fields};
use super::tool_xml::xml_call_grammar;
use crate::decode::constrain::{Constraint, Grammar};
use crate::session::LoadedModel;
use crate::text::tokenizer::Tokenizer;
use axum::http::StatusCode;
use serde_json::{Map, Value};
use std::sync::Arc;

/// A request's grammar and the field it came from (named in errors).
#[derive(Clone, Debug)]
pub struct RequestGrammar {
    pub grammar: Grammar,
    pub field: &'static str,
}

/// The grammar a request's `response_format`, `json_schema` or `grammar` asks for (None: the
/// output is free). More than one of them is an error, as in llama-server.
pub fn request_grammar(f: &Fields) -> ApiResult<Option<RequestGrammar>> {
    let mut found: Vec<RequestGrammar> = Vec::new();
    if let Some(rf) = f.get("response_format") {
        if let Some(g) = response_format(rf)? {
            found.push(RequestGrammar {
                grammar: g,
                field: "response_format",
            });
        }
    }
    if let Some(schema) = f.get("json_schema") {
        found.push(RequestGrammar {
            grammar: Grammar::JsonSchema(schema_value(schema, "json_schema")?),
            field: "json_schema",
        });
    }
    match f.get("grammar") {
        None => {}
        Some(Value::String(g)) if g.trim().is_empty() => {}
        Some(Value::String(g)) => found.push(RequestGrammar {
            grammar: Grammar::Gbnf(g.clone()),
            field: "grammar",
        }),
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "'grammar' must be a string (a GBNF grammar), got {}",
                short(v)
            )))
        }
    }
    match found.len() {
        0 | 1 => Ok(found.pop()),
        _ => Err(ApiError::bad_request(format!(
            "'{}' and '{}' both constrain the output; give only one",
            found[0].field, found[1].field
        ))),
    }
}

/// A schema field's value: an object (or `true`, any JSON).
fn schema_value(v: &Value, field: &str) -> ApiResult<Value> {
    match v {
        Value::Object(_) | Value::Bool(true) => Ok(v.clone()),
        _ => Err(ApiError::bad_request(format!(
            "'{field}' must be a JSON Schema object, got {}",
            short(v)
        ))),
    }
}

/// OpenAI's `response_format`.
fn response_format(rf: &Value) -> ApiResult<Option<Grammar>> {
    let Value::Object(o) = rf else {
        return Err(ApiError::bad_request(format!(
            "'response_format' must be an object, got {}",
            short(rf)
        )));
    };
    let schema_in = |o: &Map<String, Value>, field: &str| -> ApiResult<Option<Value>> {
        match o.get("schema").filter(|v| !v.is_null()) {
            Some(s) => schema_value(s, field).map(Some),
            None => Ok(None),
        }
    };
    match o.get("type") {
        None | Some(Value::Null) => Err(ApiError::bad_request(
            "'response_format' needs a 'type': \"text\", \"json_object\" or \"json_schema\"",
        )),
        Some(Value::String(t)) => match t.as_str() {
            "text" => Ok(None),
            "json_object" => Ok(Some(
                match schema_in(o, "response_format.schema")? {
                    Some(s) => Grammar::JsonSchema(s),
                    None => Grammar::JsonObject,
                },
            )),
            "json_schema" => {
                let schema = match o.get("json_schema").filter(|v| !v.is_null()) {
                    Some(Value::Object(js)) => schema_in(js, "response_format.json_schema.schema")?,
                    Some(v) => {
                        return Err(ApiError::bad_request(format!(
                            "'response_format.json_schema' must be an object with a 'schema', got {}",
                            short(v)
                        )))
                    }
                    // llama-server also takes the schema beside the type.
                    None => schema_in(o, "response_format.schema")?,
                };
                // No schema: any JSON value (llama-server's `{}`).
                Ok(Some(Grammar::JsonSchema(
                    schema.unwrap_or_else(|| Value::Object(Map::new())),
                )))
            }
            other => Err(ApiError::bad_request(format!(
                "'response_format.type' must be \"text\", \"json_object\" or \"json_schema\", got \"{other}\""
            ))),
        },
        Some(v) => Err(ApiError::bad_request(format!(
            "'response_format.type' must be a string, got {}",
            short(v)
        ))),
    }
}

/// Compile a request's grammar for `model` (off the async runtime: the first one builds the
/// model's token trie). A grammar the engine rejects is a 400 naming the field.
pub async fn compile(model: &Arc<LoadedModel>, g: &RequestGrammar) -> ApiResult<Constraint> {
    let model = model.clone();
    let grammar = g.grammar.clone();
    let field = g.field;
    let compiled = tokio::task::spawn_blocking(move || {
        let compiler = model.grammars().map_err(|e| {
            ApiError::new(
                StatusCode::NOT_IMPLEMENTED,
                format!("'{field}': this model's output cannot be constrained: {e:#}"),
            )
        })?;
        compiler
            .compile(&grammar)
            .map_err(|e| ApiError::bad_request(format!("'{field}': {e:#}")))
    })
    .await;
    match compiled {
        Ok(r) => r,
        Err(_) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("'{field}': compiling the grammar failed"),
        )),
    }
}

/// Most `logit_bias` entries a request may give.
pub const MAX_LOGIT_BIAS: usize = 4096;

/// A request's `logit_bias` (None: the field is absent), token ids checked against `tok`'s
/// vocabulary.
pub fn logit_bias(f: &Fields, tok: &Tokenizer) -> ApiResult<Option<Vec<(u32, f32)>>> {
    let Some(v) = f.get("logit_bias") else {
        return Ok(None);
    };
    let n_vocab = tok.n_vocab();
    // (key as written, whether it came as a JSON number, bias).
    let entries: Vec<(String, bool, &Value)> = match v {
        Value::Object(o) => o.iter().map(|(k, b)| (k.clone(), false, b)).collect(),
        Value::Array(a) => {
            let mut out = Vec::with_capacity(a.len());
            for (i, e) in a.iter().enumerate() {
                match e.as_array().map(Vec::as_slice) {
                    Some([key @ Value::Number(_), b]) => out.push((key.to_string(), true, b)),
                    Some([Value::String(s), b]) => out.push((s.clone(), false, b)),
                    _ => {
                        return Err(ApiError::bad_request(format!(
                            "'logit_bias[{i}]' must be a pair [token id or text, bias], got {}",
                            short(e)
                        )))
                    }
                }
            }
            out
        }
        _ => {
            return Err(ApiError::bad_request(format!(
                "'logit_bias' must be an object {{\"<token id>\": bias}} or an array of [token id, bias] pairs, got {}",
                short(v)
            )))
        }
    };
    if entries.len() > MAX_LOGIT_BIAS {
        return Err(ApiError::bad_request(format!(
            "'logit_bias' has {} entries; at most {MAX_LOGIT_BIAS} are taken",
            entries.len()
        )));
    }
    let mut out = Vec::new();
    for (key, numeric, b) in entries {
        let bias = match b {
            Value::Bool(false) => f32::NEG_INFINITY,
            Value::Number(n) => match n.as_f64() {
                Some(x) if (-100.0..=100.0).contains(&x) => x as f32,
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "'logit_bias': the bias of \"{key}\" must be between -100 and 100, got {n}"
                    )))
                }
            },
            other => {
                return Err(ApiError::bad_request(format!(
                    "'logit_bias': the bias of \"{key}\" must be a number between -100 and 100 (or false to ban), got {}",
                    short(other)
                )))
            }
        };
        let digits = key.strip_prefix('-').unwrap_or(&key);
        let is_int = !digits.is_empty() && digits.bytes().all(|c| c.is_ascii_digit());
        if is_int || numeric {
            // A token id.
            match key.parse::<u64>() {
                Ok(id) if id < n_vocab as u64 => out.push((id as u32, bias)),
                _ if is_int => {
                    return Err(ApiError::bad_request(format!(
                        "'logit_bias': token id {key} is out of range (the vocabulary has {n_vocab} tokens)"
                    )))
                }
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "'logit_bias': {key} is not a token id (ids are integers)"
                    )))
                }
            }
            continue;
        }
        // Text: every token it is made of.
        let mut ids = tok.encode(&key, false, false).map_err(|e| {
            ApiError::bad_request(format!("'logit_bias': cannot tokenize \"{key}\": {e:#}"))
        })?;
        if ids.is_empty() {
            return Err(ApiError::bad_request(format!(
                "'logit_bias': \"{key}\" is neither a token id nor text with tokens"
            )));
        }
        ids.sort_unstable();
        ids.dedup();
        out.extend(ids.into_iter().map(|t| (t, bias)));
    }
    Ok(Some(out))
}

/// The grammar of a forced tool call (`tool_choice` "required" or a named function) for a chat
/// whose rendered prompt is `prompt_text`, over `tools` (name, `parameters` schema): the
/// XML form where the template writes calls so (Qwen3.5 / Qwen3.6 / Qwen3-Coder), else the
/// JSON form Qwen2.5 / Hermes templates ask for, `<tool_call>\n{"name": .., "arguments":
/// ..}\n</tool_call>`. None where the template shows no `<tool_call>` syntax or there is no
/// tool: the call is left to the model, as without a constraint.
pub fn forced_call_grammar(
    prompt_text: &str,
    xml_tool_calls: bool,
    tools: &[(String, Option<Value>)],
) -> Option<Grammar> {
    if tools.is_empty() {
        return None;
    }
    if xml_tool_calls {
        return Some(xml_call_grammar(tools));
    }
    if !prompt_text.contains("<tool_call>") {
        return None;
    }
    Some(Grammar::tool_call(tools, "<tool_call>\n", "\n</tool_call>"))
}

/// (name, parameters) of each tool in an OpenAI `tools` array (entries without a function name
/// are skipped).
pub fn tool_signatures(tools: &[Value]) -> Vec<(String, Option<Value>)> {
    tools
        .iter()
        .filter_map(|t| {
            let f = t.get("function")?;
            let name = f.get("name")?.as_str()?.to_string();
            Some((name, f.get("parameters").cloned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn grammar(body: Value) -> ApiResult<Option<Grammar>> {
        let f = Fields::parse(&body)?;
        Ok(request_grammar(&f)?.map(|g| g.grammar))
    }

    #[test]
    fn request_grammars() {
        let s = json!({"type": "object"});
        assert_eq!(grammar(json!({})).unwrap(), None);
        assert_eq!(
            grammar(json!({"response_format": {"type": "text"}})).unwrap(),
            None
        );
        assert_eq!(
            grammar(json!({"response_format": {"type": "json_object"}})).unwrap(),
            Some(Grammar::JsonObject)
        );
        assert_eq!(
            grammar(json!({"response_format": {"type": "json_object", "schema": s}})).unwrap(),
            Some(Grammar::JsonSchema(s.clone()))
        );
        assert_eq!(
            grammar(json!({"response_format": {"type": "json_schema",
                "json_schema": {"name": "x", "strict": true, "schema": s}}}))
            .unwrap(),
            Some(Grammar::JsonSchema(s.clone()))
        );
        assert_eq!(
            grammar(json!({"json_schema": s})).unwrap(),
            Some(Grammar::JsonSchema(s.clone()))
        );
        assert_eq!(
            grammar(json!({"grammar": "root ::= \"a\""})).unwrap(),
            Some(Grammar::Gbnf("root ::= \"a\"".into()))
        );
        assert_eq!(grammar(json!({"grammar": ""})).unwrap(), None);
        for (bad, needle) in [
            (
                json!({"response_format": {"type": "xml"}}),
                "'response_format.type'",
            ),
            (json!({"response_format": "json"}), "'response_format'"),
            (
                json!({"response_format": {"type": "json_schema", "json_schema": {"schema": 3}}}),
                "'response_format.json_schema.schema'",
            ),
            (json!({"json_schema": "x"}), "'json_schema'"),
            (json!({"grammar": 1}), "'grammar'"),
            (
                json!({"grammar": "root ::= \"a\"", "json_schema": s}),
                "both",
            ),
        ] {
            let e = grammar(bad.clone()).unwrap_err();
            assert!(e.message.contains(needle), "{bad}: {}", e.message);
        }
    }
}
