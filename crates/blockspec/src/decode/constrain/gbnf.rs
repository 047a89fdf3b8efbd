//! llama.cpp GBNF grammars turned into llguidance's Lark syntax.
//!
//! GBNF (llama.cpp `grammars/README.md`): rules `name ::= alternatives`, one per line (a rule
//! goes on to the next line only after `::=`, after `|` and inside parentheses), string
//! literals `"..."`, character classes `[a-z]` / `[^"\\]`, `.` (any character), groups
//! `( .. )`, the postfix operators `*`, `+`, `?`, `{m}`, `{m,}`, `{m,n}`, comments from `#`,
//! and token references `<...>` (passed through: Lark has the same syntax). Generation starts at
//! `root`.
//!
//! The parse follows llama.cpp's `llama_grammar_parser`; the output is one Lark rule per GBNF
//! rule (names lowercased, made unique, as Lark reads capitalized names as terminals), string
//! literals as JSON strings, character classes as `/[...]/` regexes with every character
//! escaped, and `start: root`.

use std::collections::HashMap;

/// Convert a GBNF grammar into llguidance Lark. The error says where (line and column) and
/// what was wrong.
pub fn gbnf_to_lark(src: &str) -> Result<String, String> {
    let mut p = Parser {
        s: src.as_bytes(),
        src,
        pos: 0,
        rules: Vec::new(),
        refs: Vec::new(),
    };
    p.parse()?;
    p.emit()
}

/// A parsed expression.
enum Node {
    /// A string literal (decoded).
    Literal(String),
    /// A character class: inclusive ranges, negated with `^`.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
    /// `.`.
    Any,
    /// A rule reference (index into `Parser::refs`).
    Ref(usize),
    /// A `<token>` reference, verbatim.
    Token(String),
    Seq(Vec<Node>),
    Alt(Vec<Node>),
    Repeat {
        node: Box<Node>,
        min: u32,
        max: Option<u32>,
    },
}

struct Parser<'a> {
    s: &'a [u8],
    src: &'a str,
    pos: usize,
    /// (name, body) in order of definition.
    rules: Vec<(String, Node)>,
    /// Referenced names, with the position of their first use.
    refs: Vec<(String, usize)>,
}

/// A rule name character: llama.cpp's (letters, digits, `-`) and `_` (vLLM's grammars use it).
fn is_word_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-' || c == b'_'
}

impl Parser<'_> {
    fn err<T>(&self, at: usize, msg: impl AsRef<str>) -> Result<T, String> {
        let at = at.min(self.src.len());
        let before = &self.s[..at];
        let line = before.iter().filter(|&&c| c == b'\n').count() + 1;
        let col = at
            - before
                .iter()
                .rposition(|&c| c == b'\n')
                .map_or(0, |i| i + 1)
            + 1;
        Err(format!(
            "GBNF grammar, line {line} column {col}: {}",
            msg.as_ref()
        ))
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    /// Skip blanks and comments; newlines too when `newline_ok`.
    fn space(&mut self, newline_ok: bool) {
        while let Some(c) = self.peek() {
            match c {
                b'#' => {
                    while self.peek().is_some_and(|c| c != b'\n' && c != b'\r') {
                        self.pos += 1;
                    }
                }
                b' ' | b'\t' => self.pos += 1,
                b'\r' | b'\n' if newline_ok => self.pos += 1,
                _ => break,
            }
        }
    }

    fn name(&mut self) -> Result<String, String> {
        let start = self.pos;
        while self.peek().is_some_and(is_word_char) {
            self.pos += 1;
        }
        if self.pos == start {
            return self.err(start, "expected a rule name");
        }
        Ok(self.src[start..self.pos].to_string())
    }

    fn int(&mut self) -> Result<u32, String> {
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        if self.pos == start {
            return self.err(start, "expected a number");
        }
        self.src[start..self.pos]
            .parse()
            .or_else(|_| self.err(start, "number too large"))
    }

    /// One character of a literal or class (with llama.cpp's escapes).
    fn char_(&mut self) -> Result<char, String> {
        let start = self.pos;
        let rest = &self.src[self.pos..];
        let Some(c) = rest.chars().next() else {
            return self.err(start, "unexpected end of input");
        };
        if c != '\\' {
            self.pos += c.len_utf8();
            return Ok(c);
        }
        let Some(&e) = self.s.get(self.pos + 1) else {
            return self.err(start, "unexpected end of input after \\");
        };
        self.pos += 2;
        let hex = |p: &mut Self, n: usize| -> Result<char, String> {
            let h = p.src.get(p.pos..p.pos + n).unwrap_or("");
            let v = (h.len() == n)
                .then(|| u32::from_str_radix(h, 16).ok())
                .flatten();
            match v.and_then(char::from_u32) {
                Some(c) => {
                    p.pos += n;
                    Ok(c)
                }
                None => p.err(start, format!("invalid escape: expected {n} hex digits")),
            }
        };
        match e {
            b'x' => hex(self, 2),
            b'u' => hex(self, 4),
            b'U' => hex(self, 8),
            b't' => Ok('\t'),
            b'r' => Ok('\r'),
            b'n' => Ok('\n'),
            b'\\' | b'"' | b'[' | b']' => Ok(e as char),
            _ => self.err(start, format!("unknown escape \\{}", e as char)),
        }
    }

    fn parse(&mut self) -> Result<(), String> {
        self.space(true);
        while self.pos < self.s.len() {
            self.rule()?;
            self.space(true);
        }
        let mut defined: HashMap<&str, usize> = HashMap::new();
        for (i, (name, _)) in self.rules.iter().enumerate() {
            if defined.insert(name.as_str(), i).is_some() {
                return Err(format!("GBNF grammar: rule {name:?} is defined twice"));
            }
        }
        for (name, at) in &self.refs {
            if !defined.contains_key(name.as_str()) {
                return self.err(*at, format!("undefined rule {name:?}"));
            }
        }
        if !defined.contains_key("root") {
            return Err("GBNF grammar: no `root` rule (generation starts there)".into());
        }
        Ok(())
    }

    fn rule(&mut self) -> Result<(), String> {
        let name = self.name()?;
        self.space(false);
        if !self.s[self.pos..].starts_with(b"::=") {
            return self.err(self.pos, format!("expected ::= after rule name {name:?}"));
        }
        self.pos += 3;
        self.space(true);
        let body = self.alternates(false)?;
        match self.peek() {
            None | Some(b'\n') | Some(b'\r') => {}
            Some(_) => return self.err(self.pos, "expected a newline or the end of the grammar"),
        }
        self.rules.push((name, body));
        Ok(())
    }

    fn alternates(&mut self, nested: bool) -> Result<Node, String> {
        let mut alts = vec![self.sequence(nested)?];
        while self.peek() == Some(b'|') {
            self.pos += 1;
            self.space(true);
            alts.push(self.sequence(nested)?);
        }
        Ok(if alts.len() == 1 {
            alts.pop().expect("one alternative")
        } else {
            Node::Alt(alts)
        })
    }

    fn sequence(&mut self, nested: bool) -> Result<Node, String> {
        let mut items: Vec<Node> = Vec::new();
        while let Some(c) = self.peek() {
            let start = self.pos;
            let item = match c {
                b'"' => {
                    self.pos += 1;
                    let mut s = String::new();
                    loop {
                        match self.peek() {
                            None => return self.err(start, "unterminated string literal"),
                            Some(b'"') => break,
                            Some(_) => s.push(self.char_()?),
                        }
                    }
                    self.pos += 1;
                    Node::Literal(s)
                }
                b'[' => {
                    self.pos += 1;
                    let negated = self.peek() == Some(b'^');
                    if negated {
                        self.pos += 1;
                    }
                    let mut ranges = Vec::new();
                    loop {
                        match self.peek() {
                            None => return self.err(start, "unterminated character class"),
                            Some(b']') => break,
                            Some(_) => {}
                        }
                        let lo = self.char_()?;
                        let hi = if self.peek() == Some(b'-')
                            && self.s.get(self.pos + 1) != Some(&b']')
                        {
                            self.pos += 1;
                            if self.peek().is_none() {
                                return self.err(start, "unterminated character class");
                            }
                            self.char_()?
                        } else {
                            lo
                        };
                        if hi < lo {
                            return self.err(start, format!("empty range {lo:?}-{hi:?}"));
                        }
                        ranges.push((lo, hi));
                    }
                    self.pos += 1;
                    match (ranges.is_empty(), negated) {
                        (true, false) => return self.err(start, "empty character class"),
                        // [^]: any character.
                        (true, true) => Node::Any,
                        _ => Node::Class { negated, ranges },
                    }
                }
                b'.' => {
                    self.pos += 1;
                    Node::Any
                }
                b'<' => {
                    let end = self.s[self.pos..].iter().position(|&c| c == b'>');
                    match end {
                        Some(n)
                            if n > 1
                                && !self.s[self.pos + 1..self.pos + n]
                                    .iter()
                                    .any(|&c| c.is_ascii_whitespace() || c == b'<') =>
                        {
                            let t = self.src[self.pos..self.pos + n + 1].to_string();
                            self.pos += n + 1;
                            Node::Token(t)
                        }
                        _ => return self.err(start, "invalid token reference: expected <...>"),
                    }
                }
                b'(' => {
                    self.pos += 1;
                    self.space(true);
                    let inner = self.alternates(true)?;
                    if self.peek() != Some(b')') {
                        return self.err(self.pos, "expected ) to close the group");
                    }
                    self.pos += 1;
                    inner
                }
                b'*' | b'+' | b'?' | b'{' => {
                    let Some(last) = items.pop() else {
                        return self
                            .err(start, format!("{} without anything before it", c as char));
                    };
                    self.pos += 1;
                    let (min, max) = match c {
                        b'*' => (0, None),
                        b'+' => (1, None),
                        b'?' => (0, Some(1)),
                        _ => {
                            self.space(false);
                            let min = self.int()?;
                            self.space(false);
                            let max = if self.peek() == Some(b',') {
                                self.pos += 1;
                                self.space(false);
                                if self.peek() == Some(b'}') {
                                    None
                                } else {
                                    Some(self.int()?)
                                }
                            } else {
                                Some(min)
                            };
                            self.space(false);
                            if self.peek() != Some(b'}') {
                                return self.err(self.pos, "expected } to close the repetition");
                            }
                            self.pos += 1;
                            if max.is_some_and(|m| m < min) {
                                return self.err(
                                    start,
                                    format!(
                                        "repetition {{{min},..}} with a maximum below its minimum"
                                    ),
                                );
                            }
                            (min, max)
                        }
                    };
                    Node::Repeat {
                        node: Box::new(last),
                        min,
                        max,
                    }
                }
                c if is_word_char(c) => {
                    let name = self.name()?;
                    let i = self.refs.len();
                    self.refs.push((name, start));
                    Node::Ref(i)
                }
                _ => break,
            };
            items.push(item);
            self.space(nested);
        }
        Ok(if items.len() == 1 {
            items.pop().expect("one item")
        } else {
            Node::Seq(items)
        })
    }

    fn emit(&self) -> Result<String, String> {
        // Lark names: lowercase (a capital first letter makes a terminal), unique, not `start`.
        let mut names: HashMap<&str, String> = HashMap::new();
        let mut taken: std::collections::HashSet<String> = ["start".to_string()].into();
        for (name, _) in &self.rules {
            let mut base = name.to_ascii_lowercase();
            if !base.starts_with(|c: char| c.is_ascii_lowercase()) {
                base = format!("r-{base}");
            }
            let mut n = base.clone();
            let mut k = 1;
            while !taken.insert(n.clone()) {
                k += 1;
                n = format!("{base}-{k}");
            }
            names.insert(name.as_str(), n);
        }
        let mut out = format!("start: {}\n", names["root"]);
        for (name, body) in &self.rules {
            out.push_str(&names[name.as_str()]);
            out.push_str(": ");
            self.write(body, &names, &mut out, true);
            out.push('\n');
        }
        Ok(out)
    }

    fn write(&self, n: &Node, names: &HashMap<&str, String>, out: &mut String, top: bool) {
        match n {
            Node::Literal(s) if s.is_empty() => out.push_str("\"\""),
            Node::Literal(s) => out.push_str(&super::lark_string(s)),
            Node::Class { negated, ranges } => {
                out.push_str("/[");
                if *negated {
                    out.push('^');
                }
                for &(lo, hi) in ranges {
                    out.push_str(&format!("\\x{{{:x}}}", lo as u32));
                    if hi != lo {
                        out.push_str(&format!("-\\x{{{:x}}}", hi as u32));
                    }
                }
                out.push_str("]/");
            }
            Node::Any => out.push_str("/[\\x{0}-\\x{10ffff}]/"),
            Node::Ref(i) => out.push_str(&names[self.refs[*i].0.as_str()]),
            Node::Token(t) => out.push_str(t),
            Node::Seq(items) if items.is_empty() => out.push_str("\"\""),
            Node::Seq(items) => {
                if !top {
                    out.push('(');
                }
                for (i, it) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(' ');
                    }
                    self.write(it, names, out, false);
                }
                if !top {
                    out.push(')');
                }
            }
            Node::Alt(alts) => {
                if !top {
                    out.push('(');
                }
                for (i, a) in alts.iter().enumerate() {
                    if i > 0 {
                        out.push_str(" | ");
                    }
                    self.write(a, names, out, true);
                }
                if !top {
                    out.push(')');
                }
            }
            Node::Repeat { node, min, max } => {
                let nested = matches!(**node, Node::Repeat { .. });
                if nested {
                    out.push('(');
                }
                self.write(node, names, out, false);
                if nested {
                    out.push(')');
                }
                match (min, max) {
                    (0, None) => out.push('*'),
                    (1, None) => out.push('+'),
                    (0, Some(1)) => out.push('?'),
                    (m, None) => out.push_str(&format!("{{{m},}}")),
                    (m, Some(x)) if m == x => out.push_str(&format!("{{{m}}}")),
                    (m, Some(x)) => out.push_str(&format!("{{{m},{x}}}")),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_rules_literals_classes_and_repeats() {
        let g = r#"
# a comment
root ::= Greeting " " name{1,3} ( "!" | "?" )*
Greeting ::= "hi" | "hello\n"
name ::= [A-Za-z_] [^"\\]? .
"#;
        let l = gbnf_to_lark(g).unwrap();
        assert_eq!(
            l,
            "start: root\n\
             root: greeting \" \" name{1,3} (\"!\" | \"?\")*\n\
             greeting: \"hi\" | \"hello\\n\"\n\
             name: /[\\x{41}-\\x{5a}\\x{61}-\\x{7a}\\x{5f}]/ /[^\\x{22}\\x{5c}]/? /[\\x{0}-\\x{10ffff}]/\n"
        );
    }

    #[test]
    fn rules_continue_after_bar_and_inside_groups() {
        let g = "root ::= (\n  \"a\"\n  \"b\" ) |\n  \"c\"\nx ::= \"d\"\n";
        let l = gbnf_to_lark(g).unwrap();
        assert!(l.contains("root: \"a\" \"b\" | \"c\"\n"), "{l}");
        assert!(l.contains("x: \"d\"\n"), "{l}");
        let l = gbnf_to_lark("root ::= select_stmt\nselect_stmt ::= \"SELECT\"\n").unwrap();
        assert!(l.contains("root: select_stmt\n"), "{l}");
    }

    #[test]
    fn clear_errors() {
        let e = gbnf_to_lark("root ::= foo\n").unwrap_err();
        assert!(
            e.contains("undefined rule \"foo\"") && e.contains("line 1"),
            "{e}"
        );
        let e = gbnf_to_lark("item ::= \"a\"\n").unwrap_err();
        assert!(e.contains("no `root` rule"), "{e}");
        let e = gbnf_to_lark("root ::= \"a\n").unwrap_err();
        assert!(e.contains("unterminated string"), "{e}");
        for g in ["root ::= [a-", "root ::= [ab"] {
            let e = gbnf_to_lark(g).unwrap_err();
            assert!(e.contains("unterminated character class"), "{e}");
        }
        let e = gbnf_to_lark("root ::= [z-a]\n").unwrap_err();
        assert!(e.contains("empty range"), "{e}");
        let e = gbnf_to_lark("root = \"a\"\n").unwrap_err();
        assert!(e.contains("expected ::="), "{e}");
        let e = gbnf_to_lark("root ::= \"a\"{3,1}\n").unwrap_err();
        assert!(e.contains("maximum below"), "{e}");
        let e = gbnf_to_lark("root ::= \"a\" )\n").unwrap_err();
        assert!(e.contains("line 1 column 14"), "{e}");
        let e = gbnf_to_lark("root ::= \"\\q\"\n").unwrap_err();
        assert!(e.contains("unknown escape"), "{e}");
        // Garbage (and non-ASCII) never panics.
        for g in [
            "",
            "::=",
            "root ::= (",
            "root ::= \"\\x4",
            "root ::= [\\u12",
            "ü ::= é",
            "root ::= <",
            "root ::= *",
        ] {
            let _ = gbnf_to_lark(g);
        }
    }
}
