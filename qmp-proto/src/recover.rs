//! Finding the end of a message that is being skipped, and the top-level `id` inside it.
//!
//! When a message is too large, too deep or not valid JSON, its command must still get an answer.
//! The [`Skipper`] walks the message's bytes with only a few integers of state (no buffering beyond a
//! small capture of the `id` value) and remembers the value of the top-level `id` member, so the
//! session can fail exactly the command that owns the message.

use serde_json::Value;

/// Most bytes of an `id` value that are captured. Our own ids are a few bytes long; a longer value
/// cannot belong to one of our commands.
const MAX_ID_BYTES: usize = 256;

/// Where the scanner stands at depth 1 (directly inside the top-level object).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// Expecting a member name (after `{` or `,`).
    Key,
    /// Inside or after a member name; `is_id` tells whether it reads `id` so far.
    KeyName { len: usize, is_id: bool },
    /// After the `:` of a member whose value is (or is not) the `id`.
    Value { is_id: bool },
}

/// Structural scanner for one message that is being skipped.
#[derive(Debug, Clone)]
pub(crate) struct Skipper {
    depth: u64,
    in_string: bool,
    escaped: bool,
    slot: Slot,
    capturing: bool,
    capture: Vec<u8>,
    capture_overflow: bool,
    id: Option<Value>,
    len: usize,
}

impl Skipper {
    /// A scanner positioned before the opening `{` of a message.
    pub(crate) fn new() -> Self {
        Skipper {
            depth: 0,
            in_string: false,
            escaped: false,
            slot: Slot::Key,
            capturing: false,
            capture: Vec::new(),
            capture_overflow: false,
            id: None,
            len: 0,
        }
    }

    /// Bytes scanned so far.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Scans `bytes`; returns the index just past the message's closing brace when the message ends
    /// inside `bytes`, or `None` when it goes on.
    pub(crate) fn scan(&mut self, bytes: &[u8]) -> Option<usize> {
        for (i, &b) in bytes.iter().enumerate() {
            if self.push(b) {
                return Some(i + 1);
            }
        }
        None
    }

    /// Scans one byte; true when it closed the top-level object.
    pub(crate) fn push(&mut self, b: u8) -> bool {
        self.len += 1;
        self.step(b)
    }

    /// The top-level `id` found so far.
    pub(crate) fn id(&self) -> Option<&Value> {
        self.id.as_ref()
    }

    /// The recovered top-level `id`, once the message has ended (or whatever was found so far).
    pub(crate) fn into_id(self) -> Option<Value> {
        self.id
    }

    /// The recovered top-level `id` of a message cut off at the end of a line (see `framing`):
    /// like [`Skipper::into_id`], but an `id` value still being read counts when it is complete,
    /// that is when it parses and a line end follows it (`{"id": 12\r\n` gives 12; at end of
    /// stream `{"id": 12` could be the start of 123, so [`Skipper::into_id`] leaves it out).
    pub(crate) fn into_id_at_line_end(mut self) -> Option<Value> {
        if self.capture.last() == Some(&b'\n') {
            self.end_capture();
        }
        self.id
    }

    fn capture_byte(&mut self, b: u8) {
        if self.capturing {
            if self.capture.len() < MAX_ID_BYTES {
                self.capture.push(b);
            } else {
                self.capture_overflow = true;
            }
        }
    }

    fn end_capture(&mut self) {
        if self.capturing {
            self.capturing = false;
            if self.id.is_none() && !self.capture_overflow {
                self.id = crate::json::parse(&self.capture, 64).ok();
            }
            self.capture = Vec::new();
        }
    }

    /// One byte; true when it closed the top-level object.
    fn step(&mut self, b: u8) -> bool {
        if self.in_string {
            self.capture_byte(b);
            if let Slot::KeyName { len, is_id } = self.slot {
                if self.depth == 1 && (b != b'"' || self.escaped) {
                    let is_id = is_id && len < 2 && b"id"[len] == b && !self.escaped && b != b'\\';
                    self.slot = Slot::KeyName {
                        len: len + 1,
                        is_id,
                    };
                }
            }
            if self.escaped {
                self.escaped = false;
            } else if b == b'\\' {
                self.escaped = true;
            } else if b == b'"' {
                self.in_string = false;
                if let Slot::KeyName { len, is_id } = self.slot {
                    if self.depth == 1 {
                        self.slot = Slot::KeyName {
                            len,
                            is_id: is_id && len == 2,
                        };
                    }
                }
            }
            return false;
        }
        match b {
            b'"' => {
                self.in_string = true;
                if self.depth == 1 && self.slot == Slot::Key {
                    self.slot = Slot::KeyName {
                        len: 0,
                        is_id: true,
                    };
                }
                self.capture_byte(b);
            }
            b'{' | b'[' => {
                self.depth += 1;
                self.capture_byte(b);
            }
            b'}' | b']' => {
                if self.depth == 1 {
                    self.end_capture();
                } else {
                    self.capture_byte(b);
                }
                self.depth = self.depth.saturating_sub(1);
                return self.depth == 0;
            }
            b':' if self.depth == 1 => {
                if let Slot::KeyName { is_id, .. } = self.slot {
                    self.slot = Slot::Value { is_id };
                    if is_id {
                        self.capturing = true;
                        self.capture.clear();
                        self.capture_overflow = false;
                    }
                }
            }
            b',' if self.depth == 1 => {
                self.end_capture();
                self.slot = Slot::Key;
            }
            _ => self.capture_byte(b),
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn recover(s: &str) -> (Option<usize>, Option<Value>) {
        let mut sk = Skipper::new();
        let end = sk.scan(s.as_bytes());
        (end, sk.into_id())
    }

    #[test]
    fn finds_id_first_or_last() {
        assert_eq!(
            recover(r#"{"id": "ab1", "return": {}}"#).1,
            Some(json!("ab1"))
        );
        assert_eq!(
            recover(r#"{"return": {"id": "inner"}, "id": "ab2"}"#).1,
            Some(json!("ab2"))
        );
    }

    #[test]
    fn ignores_nested_and_lookalike_keys() {
        assert_eq!(
            recover(r#"{"return": [{"id": 1}], "idx": 2, "i": 3}"#).1,
            None
        );
        assert_eq!(recover(r#"{"data": {"id": "job"}}"#).1, None);
        assert_eq!(recover(r#"{"x": "id", "y": "\"id\""}"#).1, None);
    }

    #[test]
    fn structured_id_and_strings_with_braces() {
        let (end, id) = recover(r#"{"return": "}{]", "id": {"n": [1, "}"]}} tail"#);
        assert_eq!(id, Some(json!({"n": [1, "}"]})));
        assert_eq!(
            end,
            Some(r#"{"return": "}{]", "id": {"n": [1, "}"]}}"#.len())
        );
    }

    #[test]
    fn id_survives_garbage_elsewhere() {
        let (_, id) = recover(r#"{"return": {"x": inf}, "id": "q7"}"#);
        assert_eq!(id, Some(json!("q7")));
    }

    #[test]
    fn chunked_scan_matches_whole() {
        let s = r#"{"return": {"a": "\"}"}, "id": "zz9"}"#;
        let mut sk = Skipper::new();
        let mut end = None;
        for (i, b) in s.as_bytes().chunks(1).enumerate() {
            if let Some(e) = sk.scan(b) {
                end = Some(i + e);
            }
        }
        assert_eq!(end, Some(s.len()));
        assert_eq!(sk.into_id(), Some(json!("zz9")));
    }
}
