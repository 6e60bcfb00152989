//! The QAPI schema syntax: single-quoted JSON-like expressions, `#` comments, `##` doc blocks.
//!
//! Only what the language allows is accepted (qapi-code-gen.rst, "Schema syntax"): objects,
//! arrays, single-quoted strings with `\\` as the only escape, `true` and `false`. Each top-level
//! expression comes with the doc block right before it, if any.

use std::fmt;

/// A parsed value. Object members keep their schema order.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `'text'`.
    Str(String),
    /// `true` / `false`.
    Bool(bool),
    /// `[ ... ]`.
    List(Vec<Value>),
    /// `{ 'key': value, ... }`.
    Object(Vec<(String, Value)>),
}

impl Value {
    /// The member `key` of an object.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Object(m) => m.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// A top-level expression with the doc block before it and where it starts.
#[derive(Debug, Clone)]
pub struct TopLevel {
    /// The expression.
    pub expr: Value,
    /// The doc block's lines, without the leading `#` and one space, if the expression has one.
    pub doc: Option<Vec<String>>,
    /// 1-based line of the expression's opening brace.
    pub line: usize,
}

/// A syntax error: where and what.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntaxError {
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

struct Parser<'a> {
    src: &'a [u8],
    pos: usize,
    line: usize,
    /// The last doc block seen and not yet claimed by an expression.
    pending_doc: Option<Vec<String>>,
}

/// Parses a whole schema file into its top-level expressions.
pub fn parse(src: &str) -> Result<Vec<TopLevel>, SyntaxError> {
    let mut p = Parser {
        src: src.as_bytes(),
        pos: 0,
        line: 1,
        pending_doc: None,
    };
    let mut out = Vec::new();
    loop {
        p.skip_space(true)?;
        if p.pos >= p.src.len() {
            return Ok(out);
        }
        if p.src[p.pos] != b'{' {
            return Err(p.error("expected '{' to start a top-level expression"));
        }
        let doc = p.pending_doc.take();
        let line = p.line;
        let expr = p.value()?;
        out.push(TopLevel { expr, doc, line });
    }
}

impl Parser<'_> {
    fn error(&self, message: impl Into<String>) -> SyntaxError {
        SyntaxError {
            line: self.line,
            message: message.into(),
        }
    }

    /// Skips whitespace and comments. At top level a `##` line starts a doc block, kept in
    /// `pending_doc`; a free-form doc block (one not followed by an expression) is replaced by
    /// the next one.
    fn skip_space(&mut self, top_level: bool) -> Result<(), SyntaxError> {
        while self.pos < self.src.len() {
            match self.src[self.pos] {
                b'\n' => {
                    self.line += 1;
                    self.pos += 1;
                }
                b' ' | b'\t' | b'\r' => self.pos += 1,
                b'#' => {
                    let at_line_start = self.pos == 0 || self.src[self.pos - 1] == b'\n';
                    let text = self.rest_of_line();
                    if top_level && at_line_start && text == "##" {
                        self.doc_block()?;
                    }
                }
                _ => break,
            }
        }
        Ok(())
    }

    /// Consumes up to (not including) the end of the line and returns it.
    fn rest_of_line(&mut self) -> String {
        let start = self.pos;
        while self.pos < self.src.len() && self.src[self.pos] != b'\n' {
            self.pos += 1;
        }
        String::from_utf8_lossy(&self.src[start..self.pos])
            .trim_end()
            .to_string()
    }

    /// Reads the lines of a doc block after its opening `##` line, through its closing `##`.
    /// Blank lines inside are skipped, as QEMU does.
    fn doc_block(&mut self) -> Result<(), SyntaxError> {
        let mut lines = Vec::new();
        loop {
            if self.pos >= self.src.len() {
                return Err(self.error("doc block not closed by '##'"));
            }
            // At the newline ending the previous line.
            self.pos += 1;
            self.line += 1;
            let text = self.rest_of_line();
            if text == "##" {
                self.pending_doc = Some(lines);
                return Ok(());
            }
            // QEMU's parser skips whitespace between the comment lines of a doc block.
            if text.trim().is_empty() {
                continue;
            }
            let Some(body) = text.strip_prefix('#') else {
                return Err(self.error("doc block line does not start with '#'"));
            };
            lines.push(body.strip_prefix(' ').unwrap_or(body).to_string());
        }
    }

    fn value(&mut self) -> Result<Value, SyntaxError> {
        self.skip_space(false)?;
        let Some(&c) = self.src.get(self.pos) else {
            return Err(self.error("unexpected end of file"));
        };
        match c {
            b'{' => {
                self.pos += 1;
                let mut members = Vec::new();
                loop {
                    self.skip_space(false)?;
                    if self.eat(b'}') {
                        return Ok(Value::Object(members));
                    }
                    if !members.is_empty() {
                        self.expect(b',')?;
                        self.skip_space(false)?;
                    }
                    let key = match self.value()? {
                        Value::Str(s) => s,
                        _ => return Err(self.error("object keys must be strings")),
                    };
                    if members.iter().any(|(k, _)| *k == key) {
                        return Err(self.error(format!("duplicate key '{key}'")));
                    }
                    self.skip_space(false)?;
                    self.expect(b':')?;
                    let v = self.value()?;
                    members.push((key, v));
                }
            }
            b'[' => {
                self.pos += 1;
                let mut items = Vec::new();
                loop {
                    self.skip_space(false)?;
                    if self.eat(b']') {
                        return Ok(Value::List(items));
                    }
                    if !items.is_empty() {
                        self.expect(b',')?;
                    }
                    items.push(self.value()?);
                }
            }
            b'\'' => {
                self.pos += 1;
                let mut s = String::new();
                loop {
                    let Some(&c) = self.src.get(self.pos) else {
                        return Err(self.error("string not closed"));
                    };
                    self.pos += 1;
                    match c {
                        b'\'' => return Ok(Value::Str(s)),
                        b'\\' => match self.src.get(self.pos) {
                            Some(b'\\') => {
                                self.pos += 1;
                                s.push('\\');
                            }
                            _ => return Err(self.error("the only escape allowed is \\\\")),
                        },
                        0x20..=0x7e => s.push(c as char),
                        _ => return Err(self.error("strings are printable ASCII")),
                    }
                }
            }
            _ if self.src[self.pos..].starts_with(b"true") => {
                self.pos += 4;
                Ok(Value::Bool(true))
            }
            _ if self.src[self.pos..].starts_with(b"false") => {
                self.pos += 5;
                Ok(Value::Bool(false))
            }
            _ => Err(self.error(format!("unexpected character '{}'", c as char))),
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.src.get(self.pos) == Some(&c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: u8) -> Result<(), SyntaxError> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(self.error(format!("expected '{}'", c as char)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expressions_comments_and_doc_blocks() {
        let src = "# a comment\n##\n# = Heading\n##\n\n##\n# @Foo:\n#\n# Since: 2.9\n##\n{ 'struct': 'Foo', # trailing\n  'data': { '*a': ['int'], 'b': { 'type': 'str', 'if': 'X' } },\n  'gen': false }\n{ 'include': 'x\\\\y.json' }\n";
        let t = parse(src).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(
            t[0].doc.as_deref(),
            Some(&["@Foo:".to_string(), String::new(), "Since: 2.9".into()][..])
        );
        assert_eq!(t[0].line, 11);
        assert_eq!(t[0].expr.get("struct"), Some(&Value::Str("Foo".into())));
        assert_eq!(t[0].expr.get("gen"), Some(&Value::Bool(false)));
        let data = t[0].expr.get("data").unwrap();
        assert_eq!(
            data.get("*a"),
            Some(&Value::List(vec![Value::Str("int".into())]))
        );
        assert_eq!(t[1].doc, None);
        assert_eq!(
            t[1].expr.get("include").unwrap().as_str(),
            Some("x\\y.json")
        );
    }

    #[test]
    fn errors_name_the_line() {
        assert_eq!(parse("{ 'a': 'b' }\n\n{ \"a\": 1 }").unwrap_err().line, 3);
        assert!(parse("{ 'a': 'b', 'a': 'c' }").is_err());
        assert!(parse("{ 'a': 'b\\n' }").is_err());
        assert!(parse("##\n# open").is_err());
        assert!(parse("[ 'x' ]").is_err());
    }
}
