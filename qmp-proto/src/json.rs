//! An iterative JSON parser that builds `serde_json::Value`.
//!
//! serde_json's parser recurses once per nesting level and needs about 1 KiB of stack per level in
//! debug builds (measured: a 2 MiB thread overflows at depth 4096), so a deeply nested message from the
//! peer could crash the caller's thread. This parser keeps its own stack of open containers on the heap.
//! It accepts exactly RFC 8259 JSON; QEMU's non-JSON numbers (`inf`, `nan`) are errors.

use crate::message::{Envelope, Timestamp};
use serde_json::{Map, Number, Value};
use std::borrow::Cow;
use std::fmt;

/// Why a byte sequence is not valid JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError {
    /// Byte offset in the message where the problem was found.
    pub offset: usize,
    /// What was wrong there.
    pub reason: &'static str,
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.reason, self.offset)
    }
}

impl std::error::Error for JsonError {}

enum Open {
    Array(Vec<Value>),
    Object(Map<String, Value>, String),
}

struct Parser<'a> {
    /// The message, checked to be UTF-8 once up front: string contents are then sliced out of it
    /// without checking each string again.
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Parser<'a> {
    /// A parser at the start of `bytes`, which must be UTF-8.
    fn new(bytes: &'a [u8]) -> Result<Self, JsonError> {
        let text = std::str::from_utf8(bytes).map_err(|e| JsonError {
            offset: e.valid_up_to(),
            reason: "invalid UTF-8",
        })?;
        Ok(Parser {
            text,
            bytes,
            pos: 0,
        })
    }
}

/// Parses one JSON value (with optional surrounding whitespace) that nests at most `max_depth` deep.
pub(crate) fn parse(bytes: &[u8], max_depth: usize) -> Result<Value, JsonError> {
    let mut p = Parser::new(bytes)?;
    let v = p.value(max_depth)?;
    p.skip_ws();
    if p.pos != bytes.len() {
        return Err(p.err("trailing characters after the value"));
    }
    Ok(v)
}

/// Parses one message (with optional surrounding whitespace) that nests at most `max_depth` deep,
/// as [`parse`] does, but without building its top-level object: the members that classify a QMP
/// message go into an [`Envelope`] as they are read, and the others are checked and dropped.
/// `Ok(None)`: valid JSON, but not an object. Errors are exactly those of [`parse`].
pub(crate) fn parse_envelope(
    bytes: &[u8],
    max_depth: usize,
) -> Result<Option<Envelope>, JsonError> {
    let mut p = Parser::new(bytes)?;
    p.skip_ws();
    let envelope = if p.peek() == Some(b'{') {
        p.pos += 1;
        if max_depth == 0 {
            return Err(p.err("nesting too deep"));
        }
        let mut envelope = Envelope::default();
        p.skip_ws();
        if p.peek() == Some(b'}') {
            p.pos += 1;
        } else {
            loop {
                let key = p.key_ref()?;
                let stamp = if key == "timestamp" && max_depth >= 2 {
                    p.timestamp()
                } else {
                    None
                };
                match stamp {
                    Some(stamp) => envelope.set_timestamp(stamp),
                    // The same depth check as for a container inside the top-level object in
                    // `value`.
                    None => envelope.set(&key, p.value(max_depth - 1)?),
                }
                p.skip_ws();
                match p.peek() {
                    Some(b',') => {
                        p.pos += 1;
                        p.skip_ws();
                    }
                    Some(b'}') => {
                        p.pos += 1;
                        break;
                    }
                    _ => return Err(p.err("expected ',' or '}' in object")),
                }
            }
        }
        Some(envelope)
    } else {
        p.value(max_depth)?;
        None
    };
    p.skip_ws();
    if p.pos != bytes.len() {
        return Err(p.err("trailing characters after the value"));
    }
    Ok(envelope)
}

impl<'a> Parser<'a> {
    fn err(&self, reason: &'static str) -> JsonError {
        JsonError {
            offset: self.pos,
            reason,
        }
    }

    fn skip_ws(&mut self) {
        let is_ws = |b: Option<&u8>| matches!(b, Some(b' ' | b'\t' | b'\r' | b'\n'));
        // Compact JSON has at most one space here; pretty JSON has a line break and indentation.
        if !is_ws(self.bytes.get(self.pos)) {
            return;
        }
        self.pos += 1;
        if is_ws(self.bytes.get(self.pos)) {
            self.pos += crate::scan::whitespace_len(&self.bytes[self.pos..]);
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn expect(&mut self, b: u8, reason: &'static str) -> Result<(), JsonError> {
        self.skip_ws();
        if self.peek() == Some(b) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.err(reason))
        }
    }

    fn value(&mut self, max_depth: usize) -> Result<Value, JsonError> {
        let mut stack: Vec<Open> = Vec::new();
        loop {
            // Parse a value, or open a container.
            self.skip_ws();
            let mut v = match self.peek() {
                Some(b'{') => {
                    self.pos += 1;
                    if stack.len() >= max_depth {
                        return Err(self.err("nesting too deep"));
                    }
                    self.skip_ws();
                    if self.peek() == Some(b'}') {
                        self.pos += 1;
                        Value::Object(Map::new())
                    } else {
                        let key = self.key()?;
                        stack.push(Open::Object(Map::new(), key));
                        continue;
                    }
                }
                Some(b'[') => {
                    self.pos += 1;
                    if stack.len() >= max_depth {
                        return Err(self.err("nesting too deep"));
                    }
                    self.skip_ws();
                    if self.peek() == Some(b']') {
                        self.pos += 1;
                        Value::Array(Vec::new())
                    } else {
                        stack.push(Open::Array(Vec::new()));
                        continue;
                    }
                }
                Some(b'"') => Value::String(self.string()?),
                Some(b't') => self.literal(b"true", Value::Bool(true))?,
                Some(b'f') => self.literal(b"false", Value::Bool(false))?,
                Some(b'n') => self.literal(b"null", Value::Null)?,
                Some(b'-' | b'0'..=b'9') => self.number()?,
                Some(_) => return Err(self.err("expected a value")),
                None => return Err(self.err("unexpected end of input")),
            };
            // Attach the value to the innermost open container, closing containers as they end.
            loop {
                match stack.last_mut() {
                    None => return Ok(v),
                    Some(Open::Array(items)) => {
                        items.push(v);
                        self.skip_ws();
                        match self.peek() {
                            Some(b',') => {
                                self.pos += 1;
                                break;
                            }
                            Some(b']') => self.pos += 1,
                            _ => return Err(self.err("expected ',' or ']' in array")),
                        }
                    }
                    Some(Open::Object(map, key)) => {
                        map.insert(std::mem::take(key), v);
                        self.skip_ws();
                        match self.peek() {
                            Some(b',') => {
                                self.pos += 1;
                                self.skip_ws();
                                *key = self.key()?;
                                break;
                            }
                            Some(b'}') => self.pos += 1,
                            _ => return Err(self.err("expected ',' or '}' in object")),
                        }
                    }
                }
                // The innermost container just closed: it becomes the value to attach.
                v = match stack.pop() {
                    Some(Open::Array(items)) => Value::Array(items),
                    Some(Open::Object(map, _)) => Value::Object(map),
                    None => unreachable!("stack checked non-empty above"),
                };
            }
        }
    }

    /// A member name and its colon.
    fn key(&mut self) -> Result<String, JsonError> {
        self.key_ref().map(Cow::into_owned)
    }

    /// A member name and its colon, borrowed from the message when it has no escapes.
    fn key_ref(&mut self) -> Result<Cow<'a, str>, JsonError> {
        if self.peek() != Some(b'"') {
            return Err(self.err("expected a member name"));
        }
        let k = self.string_ref()?;
        self.expect(b':', "expected ':' after member name")?;
        Ok(k)
    }

    fn literal(&mut self, word: &'static [u8], v: Value) -> Result<Value, JsonError> {
        if self.bytes[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(v)
        } else {
            Err(self.err("invalid literal"))
        }
    }

    /// An event timestamp as QEMU writes it, `{"seconds": S, "microseconds": U}` (integers of at
    /// most 18 digits, not `-0`), read without building its object. Anything else (another
    /// order, other members, escapes, other numbers) returns `None` with nothing consumed, for
    /// `value` to read as any other value.
    fn timestamp(&mut self) -> Option<Timestamp> {
        let start = self.pos;
        let stamp = self.timestamp_members();
        if stamp.is_none() {
            self.pos = start;
        }
        stamp
    }

    fn timestamp_members(&mut self) -> Option<Timestamp> {
        let member = |p: &mut Self, name: &[u8], end: u8| {
            p.skip_ws();
            p.bytes[p.pos..].starts_with(name).then_some(())?;
            p.pos += name.len();
            p.skip_ws();
            (p.peek() == Some(b':')).then_some(())?;
            p.pos += 1;
            p.skip_ws();
            let n = p.small_int()?;
            p.skip_ws();
            (p.peek() == Some(end)).then_some(())?;
            p.pos += 1;
            Some(n)
        };
        self.skip_ws();
        (self.peek() == Some(b'{')).then_some(())?;
        self.pos += 1;
        let seconds = member(self, b"\"seconds\"", b',')?;
        let microseconds = member(self, b"\"microseconds\"", b'}')?;
        Some(Timestamp {
            seconds,
            microseconds,
        })
    }

    /// A JSON integer of 1 to 18 digits other than `-0`, followed by a byte that cannot continue
    /// a number.
    fn small_int(&mut self) -> Option<i64> {
        let negative = self.peek() == Some(b'-');
        let start = self.pos + usize::from(negative);
        let digits = self.bytes[start..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        let end = start + digits;
        if digits == 0
            || digits > 18
            || (digits > 1 && self.bytes[start] == b'0')
            || matches!(self.bytes.get(end), Some(b'.' | b'e' | b'E'))
        {
            return None;
        }
        let n = self.bytes[start..end]
            .iter()
            .fold(0i64, |n, &d| n * 10 + i64::from(d - b'0'));
        if negative && n == 0 {
            return None;
        }
        self.pos = end;
        Some(if negative { -n } else { n })
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
        self.pos - start
    }

    fn number(&mut self) -> Result<Value, JsonError> {
        let start = self.pos;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.pos += 1;
        }
        let int_start = self.pos;
        match self.digits() {
            0 => return Err(self.err("invalid number")),
            n if n > 1 && self.bytes[int_start] == b'0' => {
                return Err(JsonError {
                    offset: int_start,
                    reason: "leading zero in number",
                })
            }
            _ => {}
        }
        let mut integral = true;
        if self.peek() == Some(b'.') {
            integral = false;
            self.pos += 1;
            if self.digits() == 0 {
                return Err(self.err("invalid number"));
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            integral = false;
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return Err(self.err("invalid number"));
            }
        }
        let int_len = self.pos - int_start;
        if integral && int_len <= 18 {
            // At most 18 digits fit both u64 and i64 (timestamps, sizes, ids): summed here rather
            // than through `str::parse`. `-0` is left to the float path below.
            let n = self.bytes[int_start..self.pos]
                .iter()
                .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
            if !negative {
                return Ok(Value::Number(n.into()));
            }
            if n != 0 {
                // n < 10^18 < 2^63, so the cast is exact.
                return Ok(Value::Number((-(n as i64)).into()));
            }
        }
        // Only ASCII digits and signs were accepted above, so this cannot fail.
        let text = std::str::from_utf8(&self.bytes[start..self.pos]).unwrap_or("");
        if integral {
            // serde_json reads "-0" as the float -0.0; so do we.
            if negative && text != "-0" {
                if let Ok(n) = text.parse::<i64>() {
                    return Ok(Value::Number(n.into()));
                }
            } else if !negative {
                if let Ok(n) = text.parse::<u64>() {
                    return Ok(Value::Number(n.into()));
                }
            }
        }
        match text.parse::<f64>().ok().and_then(Number::from_f64) {
            Some(n) => Ok(Value::Number(n)),
            None => Err(JsonError {
                offset: start,
                reason: "number out of range",
            }),
        }
    }

    /// A string starting at the opening quote.
    fn string(&mut self) -> Result<String, JsonError> {
        self.string_ref().map(Cow::into_owned)
    }

    /// A string starting at the opening quote, borrowed from the message when it has no escapes.
    fn string_ref(&mut self) -> Result<Cow<'a, str>, JsonError> {
        self.pos += 1;
        let mut out = String::new();
        loop {
            let rest = &self.bytes[self.pos..];
            let Some(k) = crate::scan::string_special(rest) else {
                return Err(JsonError {
                    offset: self.bytes.len(),
                    reason: "unterminated string",
                });
            };
            // Both ends are ASCII bytes (or the string's start), so on character boundaries.
            let run = self
                .text
                .get(self.pos..self.pos + k)
                .ok_or_else(|| self.err("invalid UTF-8 in string"))?;
            self.pos += k;
            if out.is_empty() && self.bytes[self.pos] == b'"' {
                // No escapes (most strings): borrowed, or one allocation of the exact size.
                self.pos += 1;
                return Ok(Cow::Borrowed(run));
            }
            out.push_str(run);
            match self.bytes[self.pos] {
                b'"' => {
                    self.pos += 1;
                    return Ok(Cow::Owned(out));
                }
                b'\\' => {
                    self.pos += 1;
                    self.escape(&mut out)?;
                }
                _ => return Err(self.err("control character in string")),
            }
        }
    }

    fn escape(&mut self, out: &mut String) -> Result<(), JsonError> {
        let Some(b) = self.peek() else {
            return Err(self.err("unterminated string"));
        };
        self.pos += 1;
        let c = match b {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let hi = self.hex4()?;
                match hi {
                    0xD800..=0xDBFF => {
                        if self.bytes[self.pos..].starts_with(b"\\u") {
                            self.pos += 2;
                            let lo = self.hex4()?;
                            if !(0xDC00..=0xDFFF).contains(&lo) {
                                return Err(self.err("invalid low surrogate"));
                            }
                            let cp = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                            char::from_u32(cp).ok_or_else(|| self.err("invalid escape"))?
                        } else {
                            return Err(self.err("lone surrogate in string"));
                        }
                    }
                    0xDC00..=0xDFFF => return Err(self.err("lone surrogate in string")),
                    _ => char::from_u32(hi).ok_or_else(|| self.err("invalid escape"))?,
                }
            }
            _ => return Err(self.err("invalid escape")),
        };
        out.push(c);
        Ok(())
    }

    fn hex4(&mut self) -> Result<u32, JsonError> {
        let Some(h) = self.bytes.get(self.pos..self.pos + 4) else {
            return Err(self.err("truncated \\u escape"));
        };
        let mut v = 0u32;
        for &b in h {
            let d = (b as char)
                .to_digit(16)
                .ok_or_else(|| self.err("invalid \\u escape"))?;
            v = v * 16 + d;
        }
        self.pos += 4;
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok(s: &str) -> Value {
        parse(s.as_bytes(), 4096).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn agrees_with_serde_json() {
        let samples = [
            r#"{"a": [1, -2, 3.5, 1e3, -0, 0.25e-2, true, false, null, "x"], "b": {}}"#,
            r#"{"s": "\"\\\/\b\f\n\r\t\u00e9\uD83D\uDE00 caf\u00E9", "u": "é😀"}"#,
            r#"{"big": 18446744073709551615, "neg": -9223372036854775808, "f": 1.8446744073709552e+19}"#,
            r#"{"over": 18446744073709551616, "under": -9223372036854775809}"#,
            " \r\n{\"x\" : [ [ ] , { } ] }\r\n",
        ];
        for s in samples {
            let expected: Value = serde_json::from_str(s).unwrap();
            assert_eq!(ok(s), expected, "{s}");
        }
    }

    #[test]
    fn rejects_what_json_rejects() {
        for bad in [
            "{",
            "{]",
            "{\"a\"}",
            "{\"a\":}",
            "{\"a\": inf}",
            "{\"a\": nan}",
            "{\"a\": -inf}",
            "{\"a\": 01}",
            "{\"a\": 1.}",
            "{\"a\": .5}",
            "{\"a\": 1e}",
            "{\"a\": tru}",
            "{\"a\": \"\u{1}\"}",
            "{\"a\": \"\\x\"}",
            "{\"a\": \"\\ud800\"}",
            "{\"a\": \"\\udc00x\"}",
            "{\"a\": 1,}",
            "[1,]",
            "{} {}",
            "{'a': 1}",
            "{\"a\": 1e400}",
            "\"abc",
        ] {
            assert!(parse(bad.as_bytes(), 64).is_err(), "accepted {bad:?}");
        }
        assert!(parse(b"{\"a\": \"\xff\"}", 64).is_err());
    }

    #[test]
    fn depth_limit_is_exact() {
        let at = format!("{}{}", "[".repeat(1024), "]".repeat(1024));
        assert!(parse(at.as_bytes(), 1024).is_ok());
        let over = format!("{}{}", "[".repeat(1025), "]".repeat(1025));
        assert_eq!(
            parse(over.as_bytes(), 1024).unwrap_err().reason,
            "nesting too deep"
        );
    }

    #[test]
    fn deep_nesting_uses_no_stack() {
        // Runs in a small thread: a recursive parser would overflow at this depth.
        let h = std::thread::Builder::new()
            .stack_size(128 * 1024)
            .spawn(|| {
                let s = format!("{{\"a\": {}1{}}}", "[".repeat(4095), "]".repeat(4095));
                // Dropping a deep Value recurses; leak it so only the parser's stack use is measured.
                parse(s.as_bytes(), 4096).map(std::mem::forget)
            })
            .unwrap();
        assert!(h.join().unwrap().is_ok());
    }

    #[test]
    fn last_duplicate_key_wins() {
        assert_eq!(ok(r#"{"a": 1, "a": 2}"#), json!({"a": 2}));
    }
}
