//! Splitting a chat reply into reasoning, content and tool calls, incrementally.
//!
//! Reasoning is the text inside `<think>...</think>` (Qwen3, DeepSeek-R1 style; a prompt that
//! already ends with `<think>` starts inside it). Tool calls are Qwen/Hermes-style
//! `<tool_call>{"name": ..., "arguments": ...}</tool_call>` blocks, or `<tool_call>` blocks in
//! Qwen3-Coder's XML form (`<function=NAME>` with `<parameter=ARG>` values, see [`super::tool_xml`];
//! Qwen3.5 and Qwen3.6 write them so). With templates of that XML family a `<tool_call>` also ends
//! the reasoning, as in llama.cpp. The same parser serves
//! streaming (text arrives in pieces; a piece that could be the start of a tag is held back)
//! and non-streaming replies (one piece), so both give the same result.
//!
//! Some models (Qwen2.5-Coder) answer a tool request with a bare JSON object, often in a
//! ```json fence, instead of `<tool_call>`: a reply that starts that way is held back to its end
//! and becomes a tool call when it is exactly one `{"name": <an offered tool>, "arguments": ..}`.

use super::tool_xml::{is_xml_call, parse_xml_call};
use serde_json::Value;

const THINK_OPEN: &str = "<think>";
const THINK_CLOSE: &str = "</think>";
const TOOL_OPEN: &str = "<tool_call>";
const TOOL_CLOSE: &str = "</tool_call>";

#[derive(Clone, Debug, PartialEq)]
pub struct ToolCall {
    pub index: usize,
    pub id: String,
    pub name: String,
    /// JSON text, as OpenAI sends it.
    pub arguments: String,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ChatDelta {
    Reasoning(String),
    Content(String),
    ToolCall(ToolCall),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Content,
    Reasoning,
    ToolCall,
    /// The reply so far could be a bare JSON tool call: held back until the end.
    MaybeBareCall,
}

const JSON_FENCE: &str = "```json";

pub struct ChatParser {
    parse_reasoning: bool,
    parse_tools: bool,
    state: State,
    /// Text not yet classified.
    buf: String,
    /// Skip whitespace at the start of the next reasoning or content (after a tag).
    trim_start: bool,
    n_tool_calls: usize,
    /// Prefix of tool call ids (unique per reply).
    id_prefix: String,
    /// The offered tools (a bare JSON reply must name one of them; XML calls are typed by their
    /// schemas).
    tools: Vec<Value>,
    /// The template writes tool calls in the XML form: `<tool_call>` also ends reasoning.
    xml_tool_calls: bool,
    /// Nothing has been emitted as content yet (a bare JSON call can only be the whole reply).
    at_reply_start: bool,
}

impl ChatParser {
    /// `prompt_opens_reasoning`: the rendered prompt ends inside `<think>` (the template opened
    /// it), so the reply starts as reasoning. `tools`: the offered tool definitions (OpenAI
    /// form). `xml_tool_calls`: the template writes tool calls in Qwen3-Coder's XML form.
    pub fn new(
        parse_reasoning: bool,
        parse_tools: bool,
        prompt_opens_reasoning: bool,
        id_prefix: String,
        tools: Vec<Value>,
        xml_tool_calls: bool,
    ) -> ChatParser {
        ChatParser {
            parse_reasoning,
            parse_tools,
            state: if parse_reasoning && prompt_opens_reasoning {
                State::Reasoning
            } else {
                State::Content
            },
            buf: String::new(),
            trim_start: true,
            n_tool_calls: 0,
            id_prefix,
            tools,
            xml_tool_calls,
            at_reply_start: true,
        }
    }

    pub fn n_tool_calls(&self) -> usize {
        self.n_tool_calls
    }

    /// Feed a piece of the reply; returns what can be classified so far.
    pub fn push(&mut self, text: &str) -> Vec<ChatDelta> {
        self.buf.push_str(text);
        let mut out = Vec::new();
        loop {
            if self.trim_start && matches!(self.state, State::Content | State::Reasoning) {
                let t = self.buf.trim_start().len();
                self.buf.drain(..self.buf.len() - t);
                if self.buf.is_empty() {
                    break;
                }
                self.trim_start = false;
            }
            match self.state {
                State::Reasoning => {
                    let mut ends = vec![THINK_CLOSE];
                    if self.parse_tools && self.xml_tool_calls {
                        ends.push(TOOL_OPEN);
                    }
                    let found = ends
                        .iter()
                        .filter_map(|t| self.buf.find(t).map(|i| (i, *t)))
                        .min();
                    match found {
                        Some((i, tag)) => {
                            self.emit(&mut out, State::Reasoning, i);
                            if tag == THINK_CLOSE {
                                // A `<tool_call>` is left for the content state to open.
                                self.buf.drain(..THINK_CLOSE.len());
                            }
                            self.state = State::Content;
                            self.trim_start = true;
                        }
                        None => {
                            let keep = partial_tag_len(&self.buf, &ends);
                            self.emit(&mut out, State::Reasoning, self.buf.len() - keep);
                            break;
                        }
                    }
                }
                State::ToolCall => match self.buf.find(TOOL_CLOSE) {
                    Some(i) => {
                        let body: String = self.buf.drain(..i).collect();
                        self.buf.drain(..TOOL_CLOSE.len());
                        out.push(self.tool_call(&body));
                        self.state = State::Content;
                        self.trim_start = true;
                    }
                    None => break,
                },
                State::MaybeBareCall => break,
                State::Content => {
                    if self.parse_tools && self.at_reply_start {
                        let b = self.buf.as_str();
                        if b.starts_with('{') || b.starts_with(JSON_FENCE) {
                            self.state = State::MaybeBareCall;
                            break;
                        }
                        if JSON_FENCE.starts_with(b) {
                            // Could still become a fence: wait for more.
                            break;
                        }
                    }
                    let mut tags: Vec<&str> = Vec::new();
                    if self.parse_reasoning {
                        tags.push(THINK_OPEN);
                    }
                    if self.parse_tools {
                        tags.push(TOOL_OPEN);
                    }
                    let found = tags
                        .iter()
                        .filter_map(|t| self.buf.find(t).map(|i| (i, *t)))
                        .min();
                    match found {
                        Some((i, tag)) => {
                            self.emit(&mut out, State::Content, i);
                            self.buf.drain(..tag.len());
                            if tag == THINK_OPEN {
                                self.state = State::Reasoning;
                                self.trim_start = true;
                            } else {
                                self.state = State::ToolCall;
                            }
                        }
                        None => {
                            let keep = partial_tag_len(&self.buf, &tags);
                            self.emit(&mut out, State::Content, self.buf.len() - keep);
                            break;
                        }
                    }
                }
            }
        }
        out
    }

    /// The reply ended: classify what is left (an unclosed tool call that is not valid JSON is
    /// given back as content, so no text is lost).
    pub fn finish(&mut self) -> Vec<ChatDelta> {
        let mut out = Vec::new();
        let rest = std::mem::take(&mut self.buf);
        match self.state {
            State::Reasoning if !rest.is_empty() => out.push(ChatDelta::Reasoning(rest)),
            State::Content if !rest.is_empty() => out.push(ChatDelta::Content(rest)),
            State::ToolCall => match self.parse_call(&rest) {
                Some((name, arguments)) => out.push(self.new_call(name, arguments)),
                None => out.push(ChatDelta::Content(format!("{TOOL_OPEN}{rest}"))),
            },
            State::MaybeBareCall => {
                let body = rest.trim();
                let body = body
                    .strip_prefix(JSON_FENCE)
                    .and_then(|b| b.strip_suffix("```"))
                    .unwrap_or(body);
                match parse_tool_json(body) {
                    Some((name, arguments)) if self.offers(&name) => {
                        out.push(self.new_call(name, arguments))
                    }
                    _ => out.push(ChatDelta::Content(rest)),
                }
            }
            _ => {}
        }
        out
    }

    /// Emit `buf[..n]` as `kind` (nothing when empty).
    fn emit(&mut self, out: &mut Vec<ChatDelta>, kind: State, n: usize) {
        if n == 0 {
            return;
        }
        if kind == State::Content {
            self.at_reply_start = false;
        }
        let s: String = self.buf.drain(..n).collect();
        out.push(match kind {
            State::Reasoning => ChatDelta::Reasoning(s),
            _ => ChatDelta::Content(s),
        });
    }

    /// Whether a tool of that name was offered.
    fn offers(&self, name: &str) -> bool {
        self.tools.iter().any(|t| {
            t.get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                == Some(name)
        })
    }

    /// A tool call body, JSON or XML -> (name, arguments as JSON text).
    fn parse_call(&self, body: &str) -> Option<(String, String)> {
        if is_xml_call(body) {
            parse_xml_call(body, &self.tools)
        } else {
            parse_tool_json(body)
        }
    }

    fn tool_call(&mut self, body: &str) -> ChatDelta {
        match self.parse_call(body) {
            Some((name, arguments)) => self.new_call(name, arguments),
            // Not a call after all: keep the text.
            None => ChatDelta::Content(format!("{TOOL_OPEN}{body}{TOOL_CLOSE}")),
        }
    }

    fn new_call(&mut self, name: String, arguments: String) -> ChatDelta {
        let index = self.n_tool_calls;
        self.n_tool_calls += 1;
        ChatDelta::ToolCall(ToolCall {
            index,
            id: format!("{}{index}", self.id_prefix),
            name,
            arguments,
        })
    }
}

/// `{"name": "...", "arguments": {...} or "..."}` -> (name, arguments as JSON text).
fn parse_tool_json(body: &str) -> Option<(String, String)> {
    let v: Value = serde_json::from_str(body.trim()).ok()?;
    let name = v.get("name")?.as_str()?.to_string();
    let arguments = match v.get("arguments").or_else(|| v.get("parameters")) {
        None | Some(Value::Null) => "{}".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(a) => a.to_string(),
    };
    Some((name, arguments))
}

/// Length of the longest suffix of `text` that is a proper prefix of one of `tags`.
fn partial_tag_len(text: &str, tags: &[&str]) -> usize {
    let mut best = 0;
    for tag in tags {
        for n in (1..tag.len()).rev() {
            if n > best && text.ends_with(&tag[..n]) {
                best = n;
                break;
            }
        }
    }
    best
}

/// A whole reply, parsed: (reasoning, content, tool calls).
pub fn parse_reply(
    parser: &mut ChatParser,
    text: &str,
) -> (Option<String>, Option<String>, Vec<ToolCall>) {
    let mut deltas = parser.push(text);
    deltas.extend(parser.finish());
    let (mut reasoning, mut content, mut calls) = (String::new(), String::new(), Vec::new());
    let mut any_reasoning = false;
    for d in deltas {
        match d {
            ChatDelta::Reasoning(s) => {
                any_reasoning = true;
                reasoning.push_str(&s)
            }
            ChatDelta::Content(s) => content.push_str(&s),
            ChatDelta::ToolCall(c) => calls.push(c),
        }
    }
    let reasoning = any_reasoning.then(|| reasoning.trim_end().to_string());
    // Content is kept as generated (streamed deltas concatenate to the same text), except
    // the whitespace left between it and tool calls.
    if !calls.is_empty() {
        content.truncate(content.trim_end().len());
    }
    let content = (!content.is_empty() || calls.is_empty()).then_some(content);
    (reasoning, content, calls)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parser(prompt_opens: bool) -> ChatParser {
        let tools = ["get_weather", "f"]
            .iter()
            .map(|n| serde_json::json!({"type": "function", "function": {"name": n}}))
            .collect();
        ChatParser::new(true, true, prompt_opens, "call_".into(), tools, false)
    }

    #[test]
    fn reasoning_and_content_split() {
        let (r, c, calls) = parse_reply(
            &mut parser(false),
            "<think>\nLet me see.\n</think>\n\nHello!",
        );
        assert_eq!(r.as_deref(), Some("Let me see."));
        assert_eq!(c.as_deref(), Some("Hello!"));
        assert!(calls.is_empty());
        // The template opened <think> already.
        let (r, c, _) = parse_reply(&mut parser(true), "hmm</think>ok");
        assert_eq!((r.as_deref(), c.as_deref()), (Some("hmm"), Some("ok")));
    }

    #[test]
    fn tool_calls_parsed() {
        let text = "Sure.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>";
        let (_, c, calls) = parse_reply(&mut parser(false), text);
        assert_eq!(c.as_deref(), Some("Sure."));
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].name, "get_weather");
        assert_eq!(calls[0].arguments, "{\"city\":\"Paris\"}");
        // Broken JSON stays text.
        let (_, c, calls) = parse_reply(&mut parser(false), "<tool_call>nope</tool_call>");
        assert!(calls.is_empty());
        assert_eq!(c.as_deref(), Some("<tool_call>nope</tool_call>"));
    }

    #[test]
    fn bare_json_reply_is_a_tool_call() {
        let text = "```json\n{\n  \"name\": \"get_weather\",\n  \"arguments\": {\"city\": \"Paris\"}\n}\n```";
        let (_, c, calls) = parse_reply(&mut parser(false), text);
        assert_eq!(c, None);
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].arguments, "{\"city\":\"Paris\"}");
        // An unknown name, or other JSON, is content.
        let (_, c, calls) =
            parse_reply(&mut parser(false), "{\"name\": \"rm\", \"arguments\": {}}");
        assert!(calls.is_empty());
        assert!(c.is_some());
        let (_, c, _) = parse_reply(&mut parser(false), "```python\nx\n```");
        assert_eq!(c.as_deref(), Some("```python\nx\n```"));
    }

    #[test]
    fn xml_tool_calls_parsed() {
        let tools = vec![serde_json::json!({"type": "function", "function": {
            "name": "get_weather",
            "parameters": {"properties": {"city": {"type": "string"}, "days": {"type": "integer"}}}}})];
        let xml = |prompt_opens| {
            ChatParser::new(true, true, prompt_opens, "c".into(), tools.clone(), true)
        };
        let call = "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n\
                    <parameter=days>\n2\n</parameter>\n</function>\n</tool_call>";
        let (r, c, calls) = parse_reply(&mut xml(true), &format!("Check.\n</think>\n\n{call}"));
        assert_eq!((r.as_deref(), c), (Some("Check."), None));
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].arguments, r#"{"city":"Paris","days":2}"#);
        // In the XML family a tool call also ends the reasoning; elsewhere it stays reasoning.
        let text = format!("Thinking {call}");
        let (r, _, calls) = parse_reply(&mut xml(true), &text);
        assert_eq!((r.as_deref(), calls.len()), (Some("Thinking"), 1));
        let mut json_family = ChatParser::new(true, true, true, "c".into(), tools.clone(), false);
        let (r, _, calls) = parse_reply(&mut json_family, &text);
        assert_eq!((r.as_deref(), calls.len()), (Some(text.as_str()), 0));
        // A function that was not offered is content.
        let other = call.replace("get_weather", "rm");
        let (_, c, calls) = parse_reply(&mut xml(false), &other);
        assert!(calls.is_empty());
        assert_eq!(c.as_deref(), Some(other.as_str()));
    }

    #[test]
    fn streaming_in_tiny_pieces_gives_the_same_result() {
        let text =
            "<think>a < b</think>x <tool_call>{\"name\":\"f\",\"arguments\":{}}</tool_call> y";
        let mut p = parser(false);
        let mut deltas = Vec::new();
        for ch in text.chars() {
            deltas.extend(p.push(&ch.to_string()));
        }
        deltas.extend(p.finish());
        let reasoning: String = deltas
            .iter()
            .filter_map(|d| match d {
                ChatDelta::Reasoning(s) => Some(s.as_str()),
                _ => None,
            })
            .collect();
        let content: String = deltas
            .iter()
            .filter_map(|d| match d {
                ChatDelta::Content(s) => Some(s.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(reasoning, "a < b");
        assert_eq!(content, "x y");
        assert_eq!(
            deltas
                .iter()
                .filter(|d| matches!(d, ChatDelta::ToolCall(_)))
                .count(),
            1
        );
    }
}
