//! Framing: finding complete top-level JSON objects in a byte stream.
//!
//! QEMU ends each message with `\r\n`, but with `pretty=on` one message spans many lines, so framing
//! follows JSON structure and never newlines. The framer counts `{`/`[` against `}`/`]` outside
//! strings, remembering where it stands between calls, so every byte is looked at once however the
//! stream is chunked.
//!
//! # Resynchronisation
//! - Whitespace between messages is skipped silently.
//! - Any other byte outside a message is garbage (this includes top-level values that are not objects,
//!   such as `123` or `[1]`). Garbage is skipped up to the next `{`, which starts a message; one
//!   [`Frame::Garbage`] reports the whole run when it ends (or at end of stream).
//! - A message that grows past the size limit or nests past the depth limit is skipped to its end
//!   (found by the same structural counting, without buffering it) and reported as
//!   [`Frame::Skipped`], with its top-level `id` when one could be recovered. Both limits are
//!   checked byte by byte, so a message breaking both is reported for the one it breaks first in
//!   byte order, however the stream is chunked.
//! - A message still open at end of stream is reported as [`Frame::Truncated`].
//!
//! The framer does not check that a message is valid JSON: a balanced but malformed object (`{]`,
//! `{"a": inf}`) is delivered as a [`Frame::Message`] and fails in the parser.

use crate::recover::Skipper;
use serde_json::Value;

/// Why a message was skipped without being parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SkipReason {
    TooLarge,
    TooDeep,
}

/// What the framer found.
#[derive(Debug)]
pub(crate) enum Frame<'a> {
    /// A complete, structurally balanced top-level object.
    Message(&'a [u8]),
    /// A message that was skipped; `len` bytes long.
    Skipped {
        reason: SkipReason,
        len: usize,
        id: Option<Value>,
    },
    /// A run of `len` bytes outside any message.
    Garbage { len: usize },
    /// End of stream inside a message of `len` bytes.
    Truncated { len: usize, id: Option<Value> },
}

#[derive(Debug)]
enum Phase {
    /// Between messages: skipping whitespace.
    Between,
    /// Inside a run of garbage of `len` bytes so far.
    Garbage { len: usize },
    /// Inside a message that is being kept.
    Message,
    /// Inside a message that is being skipped.
    Skipping {
        reason: SkipReason,
        skipper: Skipper,
    },
}

/// Incremental framer. See the module docs for the rules.
#[derive(Debug)]
pub(crate) struct Framer {
    max_size: usize,
    max_depth: usize,
    phase: Phase,
    depth: usize,
    in_string: bool,
    escaped: bool,
    /// Bytes of the current message that arrived in earlier chunks.
    buf: Vec<u8>,
}

fn is_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Index of the first `"` or `\` in `bytes`.
fn find_string_special(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'"' || b == b'\\')
}

impl Framer {
    pub(crate) fn new(max_size: usize, max_depth: usize) -> Self {
        Framer {
            max_size: max_size.max(2),
            max_depth: max_depth.max(1),
            phase: Phase::Between,
            depth: 0,
            in_string: false,
            escaped: false,
            buf: Vec::new(),
        }
    }

    /// Bytes held for a message that is not complete yet. Never more than the size limit.
    pub(crate) fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Scans `chunk`, calling `emit` for every frame that completes in it, in stream order.
    pub(crate) fn feed(&mut self, chunk: &[u8], emit: &mut dyn FnMut(Frame<'_>)) {
        let mut i = 0;
        // Start, within `chunk`, of the current message's bytes that are not yet in `buf`.
        let mut seg_start = 0;
        while i < chunk.len() {
            match &mut self.phase {
                Phase::Between => {
                    let b = chunk[i];
                    if b == b'{' {
                        self.start_message();
                        seg_start = i;
                    } else if !is_whitespace(b) {
                        self.phase = Phase::Garbage { len: 1 };
                    }
                    i += 1;
                }
                Phase::Garbage { len } => match chunk[i..].iter().position(|&b| b == b'{') {
                    Some(k) => {
                        let len = *len + k;
                        emit(Frame::Garbage { len });
                        i += k + 1;
                        self.start_message();
                        seg_start = i - 1;
                    }
                    None => {
                        *len += chunk.len() - i;
                        i = chunk.len();
                    }
                },
                Phase::Skipping { skipper, .. } => match skipper.scan(&chunk[i..]) {
                    Some(k) => {
                        i += k;
                        let Phase::Skipping { reason, skipper } =
                            std::mem::replace(&mut self.phase, Phase::Between)
                        else {
                            unreachable!("phase checked above")
                        };
                        let len = skipper.len();
                        emit(Frame::Skipped {
                            reason,
                            len,
                            id: skipper.into_id(),
                        });
                    }
                    None => i = chunk.len(),
                },
                Phase::Message => {
                    i = self.scan_message(chunk, i, seg_start, emit);
                }
            }
        }
        if let Phase::Message = self.phase {
            // `scan_message` switched to skipping at the byte that crossed the limit, so this fits.
            debug_assert!(self.buf.len() + (chunk.len() - seg_start) <= self.max_size);
            self.buf.extend_from_slice(&chunk[seg_start..]);
        }
    }

    /// Scans a message from `chunk[i..]`; returns where scanning stopped (message end, chunk end, or
    /// the message switched to skipping).
    ///
    /// The size limit is checked at the byte that crosses it, not at the end of the chunk: which
    /// limit a message breaks first (size or depth) must not depend on how the stream was chunked.
    fn scan_message(
        &mut self,
        chunk: &[u8],
        mut i: usize,
        seg_start: usize,
        emit: &mut dyn FnMut(Frame<'_>),
    ) -> usize {
        // `chunk[..size_end]` holds the bytes the message may have without exceeding the limit.
        let size_end = seg_start
            .saturating_add(self.max_size - self.buf.len())
            .min(chunk.len());
        while i < chunk.len() {
            if i == size_end {
                self.skip_current(SkipReason::TooLarge, &chunk[seg_start..i]);
                return i;
            }
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                    i += 1;
                    continue;
                }
                match find_string_special(&chunk[i..size_end]) {
                    Some(k) => {
                        i += k;
                        if chunk[i] == b'"' {
                            self.in_string = false;
                        } else {
                            self.escaped = true;
                        }
                        i += 1;
                    }
                    None => i = size_end,
                }
                continue;
            }
            match chunk[i] {
                b'"' => self.in_string = true,
                b'{' | b'[' => {
                    self.depth += 1;
                    if self.depth > self.max_depth {
                        self.skip_current(SkipReason::TooDeep, &chunk[seg_start..=i]);
                        return i + 1;
                    }
                }
                b'}' | b']' => {
                    self.depth -= 1;
                    if self.depth == 0 {
                        let end = i + 1;
                        self.finish_message(&chunk[seg_start..end], emit);
                        return end;
                    }
                }
                _ => {}
            }
            i += 1;
        }
        chunk.len()
    }

    fn start_message(&mut self) {
        self.phase = Phase::Message;
        self.depth = 1;
        self.in_string = false;
        self.escaped = false;
    }

    /// The message ended with `tail` (its bytes in the current chunk).
    fn finish_message(&mut self, tail: &[u8], emit: &mut dyn FnMut(Frame<'_>)) {
        self.phase = Phase::Between;
        // `scan_message` stops a message at the byte that crosses the size limit.
        debug_assert!(self.buf.len() + tail.len() <= self.max_size);
        if self.buf.is_empty() {
            emit(Frame::Message(tail));
        } else {
            self.buf.extend_from_slice(tail);
            emit(Frame::Message(&self.buf));
            self.buf.clear();
            // Give back memory held for an unusually large message.
            if self.buf.capacity() > 1 << 20 {
                self.buf = Vec::new();
            }
        }
    }

    /// Switches the current message to skipping; `tail` is its part of the current chunk so far.
    fn skip_current(&mut self, reason: SkipReason, tail: &[u8]) {
        let mut skipper = Skipper::new();
        skipper.scan(&self.buf);
        skipper.scan(tail);
        self.buf = Vec::new();
        self.phase = Phase::Skipping { reason, skipper };
    }

    /// End of stream: reports what was left open and resets.
    pub(crate) fn finish(&mut self, emit: &mut dyn FnMut(Frame<'_>)) {
        match std::mem::replace(&mut self.phase, Phase::Between) {
            Phase::Between => {}
            Phase::Garbage { len } => emit(Frame::Garbage { len }),
            Phase::Message => {
                let mut skipper = Skipper::new();
                skipper.scan(&self.buf);
                let len = self.buf.len();
                self.buf = Vec::new();
                emit(Frame::Truncated {
                    len,
                    id: skipper.into_id(),
                });
            }
            Phase::Skipping { skipper, .. } => {
                let len = skipper.len();
                emit(Frame::Truncated {
                    len,
                    id: skipper.into_id(),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    enum F {
        M(String),
        S(SkipReason, usize, Option<Value>),
        G(usize),
        T(usize, Option<Value>),
    }

    fn frames(max_size: usize, max_depth: usize, chunks: &[&[u8]]) -> Vec<F> {
        let mut fr = Framer::new(max_size, max_depth);
        let mut out = Vec::new();
        for c in chunks {
            fr.feed(c, &mut |f| out.push(own(f)));
            assert!(fr.buffered() <= max_size);
        }
        fr.finish(&mut |f| out.push(own(f)));
        out
    }

    fn own(f: Frame<'_>) -> F {
        match f {
            Frame::Message(m) => F::M(String::from_utf8_lossy(m).into_owned()),
            Frame::Skipped { reason, len, id } => F::S(reason, len, id),
            Frame::Garbage { len } => F::G(len),
            Frame::Truncated { len, id } => F::T(len, id),
        }
    }

    fn all_splits(input: &[u8], max_size: usize, max_depth: usize) -> Vec<F> {
        let whole = frames(max_size, max_depth, &[input]);
        for k in 0..=input.len() {
            let (a, b) = input.split_at(k);
            assert_eq!(frames(max_size, max_depth, &[a, b]), whole, "split at {k}");
        }
        let ones: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(frames(max_size, max_depth, &ones), whole, "byte by byte");
        whole
    }

    #[test]
    fn compact_messages_in_one_read() {
        let s = b"{\"return\": {}, \"id\": 1}\r\n{\"event\": \"STOP\"}\r\n";
        assert_eq!(
            all_splits(s, 1024, 64),
            vec![
                F::M("{\"return\": {}, \"id\": 1}".into()),
                F::M("{\"event\": \"STOP\"}".into())
            ]
        );
    }

    #[test]
    fn pretty_message_spans_lines() {
        let s = b"{\r\n    \"return\": {\r\n    },\r\n    \"id\": 1\r\n}\r\n";
        let out = all_splits(s, 1024, 64);
        assert_eq!(out.len(), 1);
        assert!(matches!(&out[0], F::M(m) if m.ends_with('}') && m.contains("\"id\": 1")));
    }

    #[test]
    fn braces_and_escapes_inside_strings() {
        let s = br#"{"a": "}\"{[", "b": "\\"}{"c": 1}"#;
        assert_eq!(
            all_splits(s, 1024, 64),
            vec![
                F::M(r#"{"a": "}\"{[", "b": "\\"}"#.into()),
                F::M(r#"{"c": 1}"#.into())
            ]
        );
    }

    #[test]
    fn garbage_is_skipped_to_next_object() {
        let s = b"hello 123 [1]{\"x\": 1}  oops";
        assert_eq!(
            all_splits(s, 1024, 64),
            vec![F::G(13), F::M("{\"x\": 1}".into()), F::G(4)]
        );
    }

    #[test]
    fn too_large_is_skipped_with_id_and_stream_goes_on() {
        let big = format!(
            "{{\"return\": \"{}\", \"id\": \"q1\"}}{{\"id\": 2}}",
            "x".repeat(100)
        );
        let out = all_splits(big.as_bytes(), 64, 64);
        assert_eq!(
            out,
            vec![
                F::S(
                    SkipReason::TooLarge,
                    big.len() - 9,
                    Some(serde_json::json!("q1"))
                ),
                F::M("{\"id\": 2}".into())
            ]
        );
    }

    #[test]
    fn exactly_at_size_limit_is_kept() {
        let m = b"{\"id\": 12}";
        assert_eq!(
            all_splits(m, m.len(), 64),
            vec![F::M("{\"id\": 12}".into())]
        );
        assert!(matches!(
            all_splits(m, m.len() - 1, 64)[0],
            F::S(SkipReason::TooLarge, 10, _)
        ));
    }

    #[test]
    fn too_deep_is_skipped_with_id() {
        let s = format!(
            "{{\"id\": \"d\", \"r\": {}{}}}{{}}",
            "[".repeat(10),
            "]".repeat(10)
        );
        let out = all_splits(s.as_bytes(), 1024, 10);
        assert_eq!(
            out[0],
            F::S(
                SkipReason::TooDeep,
                s.len() - 2,
                Some(serde_json::json!("d"))
            )
        );
        assert_eq!(out[1], F::M("{}".into()));
        // Depth 10 exactly (the object plus 9 arrays) is accepted.
        let ok = format!("{{\"r\": {}{}}}", "[".repeat(9), "]".repeat(9));
        assert!(matches!(all_splits(ok.as_bytes(), 1024, 10)[0], F::M(_)));
    }

    #[test]
    fn first_limit_crossed_in_byte_order_wins() {
        // Too large from byte 33 on, too deep only at byte 38: too large, however it is chunked.
        let s = format!("{{\"a\": \"{}\", \"b\": [[[1]]]}}{{}}", "x".repeat(24));
        let out = all_splits(s.as_bytes(), 32, 3);
        assert_eq!(
            out,
            vec![
                F::S(SkipReason::TooLarge, s.len() - 2, None),
                F::M("{}".into())
            ]
        );
        // Too deep at byte 11, before the size limit: too deep.
        let s = format!("{{\"b\": [[[1]]], \"a\": \"{}\"}}{{}}", "x".repeat(24));
        let out = all_splits(s.as_bytes(), 32, 3);
        assert_eq!(
            out,
            vec![
                F::S(SkipReason::TooDeep, s.len() - 2, None),
                F::M("{}".into())
            ]
        );
    }

    #[test]
    fn hundred_thousand_deep_needs_no_stack() {
        let s = format!("{{\"a\": {}", "[".repeat(100_000));
        let out = frames(1 << 20, 4096, &[s.as_bytes()]);
        assert_eq!(out, vec![F::T(s.len(), None)]);
    }

    #[test]
    fn truncated_at_eof_reports_id() {
        let s = b"{\"id\": \"t1\", \"return\": {\"a\"";
        assert_eq!(
            all_splits(s, 1024, 64),
            vec![F::T(s.len(), Some(serde_json::json!("t1")))]
        );
    }
}
