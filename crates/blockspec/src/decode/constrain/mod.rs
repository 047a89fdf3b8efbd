//! Constrained decoding: the output follows a JSON Schema, any JSON object, a llama.cpp GBNF
//! grammar, an llguidance Lark grammar or a regular expression.
//!
//! The grammar engine is `llguidance` (the one llama.cpp and vLLM use): a [`GrammarCompiler`]
//! holds its token trie over one model's vocabulary (built once per model), and
//! [`GrammarCompiler::compile`] turns a [`Grammar`] into a [`Constraint`]: the parser state of
//! one generation. A generation carries it in `GenerateOptions::constraint`; the sampler then
//! masks every choice to the tokens the grammar allows after what was committed so far (an
//! end-of-generation token only where the grammar may end) and advances the state over each
//! committed token.
//!
//! With speculation the drafts are checked against the grammar before the verify and cut at
//! the first one it forbids ([`Constraint::valid_prefix`]); the target's choice at each
//! verified row is masked with the state after the accepted drafts before it, which is what
//! plain constrained decoding would have had there: the output is the same.

pub mod gbnf;

use crate::text::tokenizer::{attr, Tokenizer};
use anyhow::{anyhow, bail, Context as _, Result};
use llguidance::api::{ParserLimits, TopLevelGrammar};
use llguidance::toktrie::{ApproximateTokEnv, SimpleVob, TokEnv, TokRxInfo, TokTrie};
use llguidance::{Matcher, ParserFactory};
use std::sync::Arc;

/// What the output must match.
#[derive(Clone, Debug, PartialEq)]
pub enum Grammar {
    /// A JSON Schema (OpenAI `response_format: {"type": "json_schema", "json_schema":
    /// {"schema": ..}}`, llama.cpp's `json_schema`, `--json-schema`). llguidance's subset of
    /// JSON Schema: types, `properties`/`required`/`additionalProperties`, `enum`/`const`,
    /// `items`/`prefixItems`/`minItems`/`maxItems`, `anyOf`/`oneOf`/`allOf`, local `$ref`s,
    /// string `pattern`/`format`/lengths, number bounds. Whitespace between tokens is
    /// limited to 20 characters unless the schema's `x-guidance` says otherwise.
    JsonSchema(serde_json::Value),
    /// Any JSON object (`response_format: {"type": "json_object"}`).
    JsonObject,
    /// A llama.cpp GBNF grammar (`grammar`, `--grammar`), starting at its `root` rule.
    Gbnf(String),
    /// An llguidance Lark grammar (its `start` rule).
    Lark(String),
    /// A regular expression (Rust `regex` syntax) the whole output must match.
    Regex(String),
}

impl Grammar {
    /// Short name of the kind, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Grammar::JsonSchema(_) => "JSON schema",
            Grammar::JsonObject => "JSON object",
            Grammar::Gbnf(_) => "GBNF grammar",
            Grammar::Lark(_) => "Lark grammar",
            Grammar::Regex(_) => "regex",
        }
    }

    /// The JSON schema of a tool call's arguments object, as an OpenAI tool's `parameters`
    /// gives it: a missing or empty schema is any object.
    pub fn tool_arguments(parameters: Option<&serde_json::Value>) -> Grammar {
        Grammar::JsonSchema(arguments_schema(parameters))
    }

    /// One tool call constrained to the tools' parameter schemas (`tool_choice` "required":
    /// all the request's tools; a named function: that one): `open`, then a JSON object
    /// `{"name": <one of the names>, "arguments": <that tool's parameters>}`, then `close`.
    /// Qwen2.5 / Hermes models wrap it as `("<tool_call>\n", "\n</tool_call>")`. `tools`:
    /// (name, the tool's `parameters` schema). At least one tool.
    pub fn tool_call(
        tools: &[(String, Option<serde_json::Value>)],
        open: &str,
        close: &str,
    ) -> Grammar {
        let calls: Vec<serde_json::Value> = tools
            .iter()
            .map(|(name, params)| {
                serde_json::json!({
                    "type": "object",
                    "properties": {
                        "name": { "const": name },
                        "arguments": arguments_schema(params.as_ref()),
                    },
                    "required": ["name", "arguments"],
                    "additionalProperties": false
                })
            })
            .collect();
        let schema = serde_json::json!({
            "anyOf": calls,
            "x-guidance": { "whitespace_pattern": JSON_WHITESPACE }
        });
        let mut lark = String::from("start:");
        for part in [
            lark_string(open),
            format!("%json {schema}"),
            lark_string(close),
        ] {
            if !part.is_empty() {
                lark.push(' ');
                lark.push_str(&part);
            }
        }
        lark.push('\n');
        Grammar::Lark(lark)
    }
}

/// A tool's `parameters` as the schema of its arguments (any object when missing or empty).
fn arguments_schema(parameters: Option<&serde_json::Value>) -> serde_json::Value {
    match parameters {
        Some(p) if p.as_object().is_some_and(|o| !o.is_empty()) => p.clone(),
        _ => serde_json::json!({ "type": "object" }),
    }
}

/// `s` as a Lark string literal (a JSON string without raw DEL); empty for an empty `s`.
pub(crate) fn lark_string(s: &str) -> String {
    if s.is_empty() {
        return String::new();
    }
    serde_json::to_string(s)
        .unwrap_or_default()
        .replace('\u{7f}', "\\u007f")
}

/// A Lark `%json` atom for a value of `schema` (whitespace between its tokens limited as in
/// [`Grammar::JsonSchema`]).
pub(crate) fn lark_json(schema: &serde_json::Value) -> String {
    let schema = match schema {
        serde_json::Value::Object(_) => schema.clone(),
        _ => serde_json::json!({}),
    };
    format!("%json {}", limit_json_whitespace(schema))
}

/// `schema` (an object) with the whitespace between JSON tokens limited to [`JSON_WHITESPACE`]
/// unless its own `x-guidance` says otherwise.
fn limit_json_whitespace(mut schema: serde_json::Value) -> serde_json::Value {
    if let Some(o) = schema.as_object_mut() {
        o.entry("x-guidance")
            .or_insert_with(|| serde_json::json!({ "whitespace_pattern": JSON_WHITESPACE }));
    }
    schema
}

/// Whitespace allowed between JSON tokens: JSON's blanks, at most 20 at a time (an unbounded
/// run lets a small model fill its token budget with newlines).
const JSON_WHITESPACE: &str = r"[\x20\x0A\x0D\x09]{1,20}";

/// Compiles grammars for one model's vocabulary: llguidance's token trie over the tokenizer
/// (every token's bytes; control tokens as special tokens, which text cannot spell) and its
/// parser factory. Build it once per model (it walks the whole vocabulary) and share it.
#[derive(Clone)]
pub struct GrammarCompiler {
    factory: Arc<ParserFactory>,
    n_vocab: usize,
}

impl std::fmt::Debug for GrammarCompiler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GrammarCompiler {{ n_vocab: {} }}", self.n_vocab)
    }
}

impl GrammarCompiler {
    /// The compiler for `tok`'s vocabulary. Its end-of-generation tokens end a constrained
    /// output; a vocabulary without any cannot be constrained.
    pub fn new(tok: &Tokenizer) -> Result<GrammarCompiler> {
        let n_vocab = tok.n_vocab();
        let eog: Vec<u32> = tok.eog_ids().filter(|&t| (t as usize) < n_vocab).collect();
        if eog.is_empty() {
            bail!("constrained decoding needs an end-of-generation token, and this vocabulary has none");
        }
        let words: Vec<Vec<u8>> = (0..n_vocab as u32)
            .map(|id| {
                let bytes = tok.token_bytes(id);
                if tok.token_attr(id) & (attr::CONTROL | attr::UNKNOWN) != 0 && !bytes.is_empty() {
                    // A special token: matched by `<name>` in a grammar, never by text.
                    let mut b = Vec::with_capacity(bytes.len() + 1);
                    b.push(TokTrie::SPECIAL_TOKEN_MARKER);
                    b.extend_from_slice(&bytes);
                    b
                } else {
                    bytes
                }
            })
            .collect();
        let info = TokRxInfo {
            vocab_size: n_vocab as u32,
            tok_eos: eog[0],
            tok_bos: tok.bos(),
            tok_pad: None,
            tok_unk: None,
            tok_end_of_turn: None,
        };
        // llguidance asserts on a malformed vocabulary: an error here, not a crash.
        let trie = std::panic::catch_unwind(|| TokTrie::from(&info, &words).with_eos_tokens(&eog))
            .map_err(|_| {
                anyhow!("llguidance could not build its token trie over this vocabulary")
            })?;
        let env: TokEnv = Arc::new(ApproximateTokEnv::new(trie));
        let mut factory = ParserFactory::new_simple(&env)
            .context("llguidance: setting up the grammar compiler")?;
        factory.quiet();
        *factory.limits_mut() = ParserLimits {
            verbose_errors: false,
            ..ParserLimits::default()
        };
        Ok(GrammarCompiler {
            factory: Arc::new(factory),
            n_vocab,
        })
    }

    /// Compile `grammar` into a fresh constraint. The error names the kind of grammar and what
    /// is wrong with it.
    pub fn compile(&self, grammar: &Grammar) -> Result<Constraint> {
        let top = match grammar {
            Grammar::JsonSchema(schema) => {
                let schema = match schema {
                    serde_json::Value::Bool(true) => serde_json::json!({}),
                    serde_json::Value::Object(_) => schema.clone(),
                    other => bail!("JSON schema: expected an object, got {other}"),
                };
                TopLevelGrammar::from_json_schema(limit_json_whitespace(schema))
            }
            Grammar::JsonObject => TopLevelGrammar::from_json_schema(limit_json_whitespace(
                serde_json::json!({ "type": "object" }),
            )),
            Grammar::Gbnf(g) => {
                let lark = gbnf::gbnf_to_lark(g).map_err(anyhow::Error::msg)?;
                TopLevelGrammar::from_lark(lark)
            }
            Grammar::Lark(g) => TopLevelGrammar::from_lark(g.clone()),
            Grammar::Regex(r) => TopLevelGrammar::from_regex(r),
        };
        let factory = self.factory.clone();
        let parser = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            factory.create_parser(top)
        }))
        .map_err(|_| anyhow!("{}: the grammar engine failed on it", grammar.kind()))?
        .map_err(|e| anyhow!("invalid {}: {e}", grammar.kind()))?;
        let mut c = Constraint {
            matcher: Matcher::new(Ok(parser)),
            n_vocab: self.n_vocab,
            mask: None,
            error: None,
        };
        if let Some(e) = c.matcher.get_error() {
            bail!("invalid {}: {e}", grammar.kind());
        }
        c.refresh();
        if let Some(e) = c.error.take() {
            bail!("invalid {}: {e}", grammar.kind());
        }
        Ok(c)
    }
}

/// One generation's grammar state: which tokens may come next. Cloning copies the state.
#[derive(Clone)]
pub struct Constraint {
    matcher: Matcher,
    /// The tokenizer's vocabulary (logits past it are padding, never allowed).
    n_vocab: usize,
    /// The tokens allowed next (computed after each commit).
    mask: Option<SimpleVob>,
    /// What went wrong in the grammar engine, if anything did.
    error: Option<String>,
}

impl std::fmt::Debug for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Constraint")
            .field("done", &self.is_done())
            .field("error", &self.error)
            .finish()
    }
}

impl Constraint {
    /// Recompute the mask of the current state (only end-of-generation once it is complete).
    fn refresh(&mut self) {
        match self.matcher.compute_mask_or_eos() {
            Ok(m) => self.mask = Some(m),
            Err(e) => {
                self.error.get_or_insert_with(|| e.to_string());
                self.mask = None;
            }
        }
    }

    /// Whether `tok` may come next.
    pub fn allows(&self, tok: u32) -> bool {
        (tok as usize) < self.n_vocab && self.mask.as_ref().is_some_and(|m| m.is_allowed(tok))
    }

    /// Set every logit the grammar forbids to -inf.
    pub fn apply(&self, logits: &mut [f32]) {
        let Some(mask) = &self.mask else {
            logits.fill(f32::NEG_INFINITY);
            return;
        };
        let words = mask.as_slice();
        for (w, chunk) in logits.chunks_mut(32).enumerate() {
            let bits = words.get(w).copied().unwrap_or(0);
            if bits == u32::MAX && (w + 1) * 32 <= self.n_vocab {
                continue;
            }
            for (b, l) in chunk.iter_mut().enumerate() {
                if (bits >> b) & 1 == 0 || w * 32 + b >= self.n_vocab {
                    *l = f32::NEG_INFINITY;
                }
            }
        }
    }

    /// Advance over a committed token (one the mask allowed).
    pub fn commit(&mut self, tok: u32) {
        // Once the grammar is complete only end-of-generation came (the mask allowed nothing
        // else): nothing to advance over.
        if self.error.is_some() || self.matcher.is_stopped() {
            return;
        }
        if let Err(e) = self.matcher.consume_token(tok) {
            self.error = Some(e.to_string());
            self.mask = None;
            return;
        }
        self.refresh();
    }

    /// Go back over the last `n` committed tokens.
    pub fn rollback(&mut self, n: usize) {
        if n == 0 || self.error.is_some() {
            return;
        }
        if let Err(e) = self.matcher.rollback(n) {
            self.error = Some(e.to_string());
            self.mask = None;
            return;
        }
        self.refresh();
    }

    /// How many of `tokens`, in order from the current state, the grammar allows (the state
    /// does not change). An end-of-generation token counts where the grammar may end, and
    /// nothing after it does.
    pub fn valid_prefix(&mut self, tokens: &[u32]) -> usize {
        if tokens.is_empty() || self.error.is_some() {
            return 0;
        }
        // The first token is already known from the mask.
        if !self.allows(tokens[0]) {
            return 0;
        }
        let n = tokens
            .iter()
            .position(|&t| t as usize >= self.n_vocab)
            .unwrap_or(tokens.len());
        if n == 1 || self.matcher.is_stopped() {
            return 1;
        }
        // Checking does not touch the committed state.
        match self.matcher.validate_tokens(&tokens[..n]) {
            Ok(k) => k.min(n),
            Err(e) => {
                self.error = Some(e.to_string());
                self.mask = None;
                0
            }
        }
    }

    /// Whether the grammar is complete: only end-of-generation may follow.
    pub fn is_done(&self) -> bool {
        self.matcher.is_stopped()
    }

    /// What went wrong in the grammar engine (the generation must stop with an error).
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }
}
