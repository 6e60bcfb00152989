//! Framing: finding complete top-level JSON objects in a byte stream.
//!
//! QEMU ends each message with `\r\n`, but with `pretty=on` one message spans many lines, so framing
//! follows JSON structure and never newlines. The framer counts `{`/`[` against `}`/`]` outside
//! strings, remembering where it stands between calls, so every byte is looked at once however the
//! stream is chunked. Inside a message it takes eight bytes at a time where it can (see `scan`):
//! framing costs a small fraction of parsing.
//!
//! # Resynchronisation
//! - Whitespace between messages is skipped silently.
//! - Any other byte outside a message is garbage (this includes top-level values that are not objects,
//!   such as `123` or `[1]`). Garbage is skipped up to the next `{`, which starts a message; one
//!   `Frame::Garbage` reports the whole run when it ends (or at end of stream).
//! - A message that grows past the size limit or nests past the depth limit is skipped to its end
//!   (found by the same structural counting, without buffering it) and reported as
//!   `Frame::Skipped`, with its top-level `id` when one could be recovered.
//! - A message still open at end of stream is reported as `Frame::Truncated`.
//!
//! The framer does not check that a message is valid JSON: a balanced but malformed object (`{]`,
//! `{"a": inf}`) is delivered as a `Frame::Message` and fails in the parser.

use crate::recover::Skipper;
use crate::scan;
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
            // Inside a message is where nearly all bytes go; the rest is kept out of line so that
            // small reads (QEMU flushes pretty output line by line) cost little.
            if let Phase::Message = self.phase {
                i = self.scan_message(chunk, i, seg_start, emit);
            } else {
                i = self.feed_outside(chunk, i, &mut seg_start, emit);
            }
        }
        if let Phase::Message = self.phase {
            // `scan_message` stops at the size limit, so this never holds more than the limit.
            let rest = &chunk[seg_start..];
            if rest.len() <= 8 {
                // A call to memcpy costs more than the copy for the tiny reads of pretty output.
                self.buf.extend(rest.iter().copied());
            } else {
                self.buf.extend_from_slice(rest);
            }
        }
    }

    /// Scans from `chunk[i..]` between messages, in garbage, or in a message being skipped; returns
    /// where scanning stopped (a message starts there, or chunk end).
    #[inline(never)]
    fn feed_outside(
        &mut self,
        chunk: &[u8],
        mut i: usize,
        seg_start: &mut usize,
        emit: &mut dyn FnMut(Frame<'_>),
    ) -> usize {
        while i < chunk.len() {
            match &mut self.phase {
                Phase::Between => {
                    let b = chunk[i];
                    if b == b'{' {
                        self.start_message();
                        *seg_start = i;
                        return i + 1;
                    } else if !is_whitespace(b) {
                        self.phase = Phase::Garbage { len: 1 };
                    }
                    i += 1;
                }
                Phase::Garbage { len } => match chunk[i..].iter().position(|&b| b == b'{') {
                    Some(k) => {
                        let len = *len + k;
                        emit(Frame::Garbage { len });
                        i += k;
                        self.start_message();
                        *seg_start = i;
                        return i + 1;
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
                Phase::Message => return i,
            }
        }
        i
    }

    /// Scans a message from `chunk[i..]`; returns where scanning stopped (message end, a limit, or
    /// chunk end).
    ///
    /// The size limit is checked at the byte that crosses it, not at chunk ends, so that whichever
    /// limit a message crosses first in the stream is the one reported, however the stream is
    /// chunked.
    fn scan_message(
        &mut self,
        chunk: &[u8],
        i: usize,
        seg_start: usize,
        emit: &mut dyn FnMut(Frame<'_>),
    ) -> usize {
        // Bytes of this message at `seg_start + room` and beyond are over the limit.
        let room = self.max_size - self.buf.len();
        let limit = chunk.len().min(seg_start.saturating_add(room));
        let end = self.scan_within(&chunk[..limit], i, seg_start, emit);
        if limit < chunk.len() && end == limit && matches!(self.phase, Phase::Message) {
            self.skip_current(SkipReason::TooLarge, &chunk[seg_start..limit]);
        }
        end
    }

    fn scan_within(
        &mut self,
        chunk: &[u8],
        mut i: usize,
        seg_start: usize,
        emit: &mut dyn FnMut(Frame<'_>),
    ) -> usize {
        while i < chunk.len() {
            if i + 8 <= chunk.len() && self.skip_word(scan::word(&chunk[i..])) {
                i += 8;
                continue;
            }
            let b = chunk[i];
            i += 1;
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => {
                    self.depth += 1;
                    if self.depth > self.max_depth {
                        self.skip_current(SkipReason::TooDeep, &chunk[seg_start..i]);
                        return i;
                    }
                }
                b'}' | b']' => {
                    self.depth -= 1;
                    if self.depth == 0 {
                        self.finish_message(&chunk[seg_start..i], emit);
                        return i;
                    }
                }
                _ => {}
            }
        }
        chunk.len()
    }

    /// Accounts for the 8 bytes of `w` at once when that is safe, and says whether it did.
    ///
    /// Safe means: no escape pending and no backslash in the word (escapes are rare; the byte loop
    /// handles them), and the word can neither close the message nor cross the depth limit. Then
    /// only the string state and the depth change: a byte is inside a string when an odd number of
    /// quotes precede it (prefix XOR of the quote flags), and the brackets outside strings change
    /// the depth by their count. This reads dense compact JSON without a branch per quote or
    /// bracket.
    #[inline(always)]
    fn skip_word(&mut self, w: u64) -> bool {
        if self.escaped || scan::bytes_equal(w, b'\\') != 0 {
            return false;
        }
        let quotes = scan::bytes_equal(w, b'"');
        // '[' / '{' and ']' / '}' differ only in bit 0x20 (see scan::structural).
        let folded = w | scan::splat(0x20);
        let opens = scan::bytes_equal(folded, b'{');
        let closes = scan::bytes_equal(folded, b'}');
        if quotes | opens | closes == 0 {
            return true;
        }
        // Bit 0 of byte j: whether byte j is inside a string (after it is read).
        let mut inside = quotes >> 7;
        inside ^= inside << 8;
        inside ^= inside << 16;
        inside ^= inside << 32;
        if self.in_string {
            inside ^= scan::splat(1);
        }
        let outside = (!inside & scan::splat(1)) << 7;
        let opens = scan::count_marked(opens & outside);
        let closes = scan::count_marked(closes & outside);
        if closes >= self.depth || self.depth + opens > self.max_depth {
            return false;
        }
        self.depth = self.depth + opens - closes;
        self.in_string = inside >> 56 != 0;
        true
    }

    fn start_message(&mut self) {
        self.phase = Phase::Message;
        self.depth = 1;
        self.in_string = false;
        self.escaped = false;
    }

    /// The message ended with `tail` (its bytes in the current chunk), within the size limit.
    #[inline(never)]
    fn finish_message(&mut self, tail: &[u8], emit: &mut dyn FnMut(Frame<'_>)) {
        self.phase = Phase::Between;
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
    #[cold]
    #[inline(never)]
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
    fn word_at_a_time_scan_at_every_alignment() {
        // Quotes, escapes, brackets inside and outside strings, and the closing brace, at every
        // offset from the start of the chunk (so at every position within an 8-byte word).
        let bodies = [
            r#"{"a": "x\"}{[", "b": [1, {"c": "]\\"}], "d": "\\\""}"#,
            r#"{"e": [[[]]], "f": "{{{{{{{{", "g": "}}}}}}}}}"}"#,
            r#"{"h": "\u00e9\n\r", "i": {}}"#,
        ];
        for body in bodies {
            assert!(serde_json::from_str::<Value>(body).is_ok(), "{body}");
            for pad in 0..17 {
                let s = format!("{}{body}{}{{}}", " ".repeat(pad), "\r\n".repeat(pad % 3));
                assert_eq!(
                    all_splits(s.as_bytes(), 1024, 4),
                    vec![F::M(body.to_string()), F::M("{}".into())],
                    "{s:?}"
                );
            }
        }
        // The depth limit is exact across words: 4 deep passes, 5 deep is skipped.
        for pad in 0..9 {
            let ok = format!("{}{{\"a\": [[[1]]], \"b\": \"[[[[[[\"}}", " ".repeat(pad));
            assert!(
                matches!(&all_splits(ok.as_bytes(), 1024, 4)[0], F::M(_)),
                "{ok}"
            );
            let deep = format!("{}{{\"a\": [[[[1]]]], \"id\": 1}}", " ".repeat(pad));
            assert!(
                matches!(
                    &all_splits(deep.as_bytes(), 1024, 4)[0],
                    F::S(SkipReason::TooDeep, _, Some(_))
                ),
                "{deep}"
            );
        }
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
    fn first_limit_crossed_is_reported_however_chunked() {
        // Crosses the size limit (20) at byte 21, the depth limit (3) at byte 33.
        let s = b"{\"id\": 1, \"a\": \"xxxxxxxxxx\", \"b\": [[[[1]]]]}{}";
        let out = all_splits(s, 20, 3);
        assert_eq!(
            out,
            vec![
                F::S(
                    SkipReason::TooLarge,
                    s.len() - 2,
                    Some(serde_json::json!(1))
                ),
                F::M("{}".into())
            ]
        );
        // Crosses the depth limit (3) at byte 19, the size limit (24) at byte 25.
        let s = b"{\"id\": 2, \"b\": [[[[1]]]], \"a\": \"xxxxxxxxxx\"}{}";
        let out = all_splits(s, 24, 3);
        assert_eq!(
            out,
            vec![
                F::S(SkipReason::TooDeep, s.len() - 2, Some(serde_json::json!(2))),
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
