//! The decoder: bytes in, parsed server messages (or typed decode errors) out.
//!
//! It combines [framing](crate::framing) (where does a message end), the parser (`json`)
//! (is it JSON) and [classification](crate::ServerMessage) (which kind of QMP message). It is what the
//! [`Session`](crate::Session) uses, and is public for tools that only need to read a QMP stream.

use crate::framing::{Frame, Framer, SkipReason};
use crate::json::{self, JsonError};
use crate::{Limits, ServerMessage};
use serde_json::Value;
use std::fmt;

/// A message, or stretch of bytes, that could not be decoded. The stream goes on after each.
///
/// Where the bytes had a top-level `id`, [`DecodeError::id`] returns it, so that the command it
/// belongs to can be failed instead of waiting forever.
///
/// A message over a limit is reported when the limit is crossed, not when the message ends (which
/// may be never, when a broken message does not close): as [`DecodeError::TooLarge`] or
/// [`DecodeError::TooDeep`], with its `id` when that came before the limit. When its `id` comes
/// later (QEMU writes `id` last in successful replies), [`DecodeError::LateId`] reports it where
/// the skip ends. The rules for where a skip or a broken message ends are in the module docs of
/// `framing` and in docs/PROTOCOL.md ("Resynchronisation").
#[derive(Debug, Clone, PartialEq)]
pub enum DecodeError {
    /// A message longer than [`Limits::max_message_size`]; it is skipped without being buffered.
    TooLarge {
        /// Bytes of the message read when this was reported: `limit + 1` when reported as the
        /// limit was crossed; the whole message inside a [`DecodeError::LateId`].
        len: usize,
        /// The limit in force.
        limit: usize,
        /// Its top-level `id`, if found.
        id: Option<Value>,
    },
    /// A message nesting deeper than [`Limits::max_depth`]; it is skipped.
    TooDeep {
        /// The limit in force.
        limit: usize,
        /// Its top-level `id`, if found.
        id: Option<Value>,
    },
    /// The end of a message reported as [`DecodeError::TooLarge`] or [`DecodeError::TooDeep`]
    /// without an `id`: its top-level `id` came after the point where the limit was crossed, and
    /// was found in the bytes skipped after that report. Holds the report again with the `id` (and,
    /// for `TooLarge`, the whole length) filled in, so that the command the `id` belongs to can
    /// fail with it. The message was counted once, when it was first reported.
    LateId(Box<DecodeError>),
    /// A message that was still open when a new message began: a `{` at the start of a line, which
    /// in QEMU's output only ever starts a message, or the guest agent's `0xFF` reset byte
    /// ([`Decoder::reset`]). Its bytes were dropped.
    Unterminated {
        /// How many bytes of the message had arrived.
        len: usize,
        /// Its top-level `id`, if found.
        id: Option<Value>,
    },
    /// A message that is not valid JSON (including invalid UTF-8 and QEMU's `inf`/`nan`).
    Malformed {
        /// What was wrong, and where.
        error: JsonError,
        /// Its top-level `id`, if found.
        id: Option<Value>,
    },
    /// A JSON object that is not a valid greeting, reply or event.
    NotQmp {
        /// What was wrong.
        reason: &'static str,
        /// Its top-level `id`, if any.
        id: Option<Value>,
    },
    /// Bytes outside any object: garbage, or a top-level value that is not an object.
    Garbage {
        /// How many bytes were skipped.
        len: usize,
    },
    /// The stream ended inside a message.
    Truncated {
        /// How many bytes of the message had arrived.
        len: usize,
        /// Its top-level `id`, if found.
        id: Option<Value>,
    },
}

impl DecodeError {
    /// The top-level `id` of the message this error is about, when it could be recovered.
    pub fn id(&self) -> Option<&Value> {
        match self {
            DecodeError::TooLarge { id, .. }
            | DecodeError::TooDeep { id, .. }
            | DecodeError::Unterminated { id, .. }
            | DecodeError::Malformed { id, .. }
            | DecodeError::NotQmp { id, .. }
            | DecodeError::Truncated { id, .. } => id.as_ref(),
            DecodeError::LateId(report) => report.id(),
            DecodeError::Garbage { .. } => None,
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::TooLarge { len, limit, .. } if *len > limit.saturating_add(1) => {
                write!(
                    f,
                    "message of {len} bytes exceeds the limit of {limit} bytes; skipped"
                )
            }
            DecodeError::TooLarge { limit, .. } => {
                write!(f, "message exceeds the limit of {limit} bytes; skipped")
            }
            DecodeError::TooDeep { limit, .. } => {
                write!(f, "message nests deeper than the limit of {limit}; skipped")
            }
            DecodeError::LateId(report) => write!(f, "{report} (its id came after the limit)"),
            DecodeError::Unterminated { len, .. } => write!(
                f,
                "message cut off after {len} bytes: a new message began before it closed"
            ),
            DecodeError::Malformed { error, .. } => write!(f, "message is not valid JSON: {error}"),
            DecodeError::NotQmp { reason, .. } => write!(f, "not a QMP message: {reason}"),
            DecodeError::Garbage { len } => {
                write!(f, "skipped {len} bytes outside any JSON object")
            }
            DecodeError::Truncated { len, .. } => {
                write!(f, "stream ended inside a message after {len} bytes")
            }
        }
    }
}

impl std::error::Error for DecodeError {}

/// Incremental decoder of a server's byte stream.
///
/// Total work is linear in the bytes fed, however they are chunked; memory held between calls is at
/// most [`Limits::max_message_size`].
///
/// ```
/// use qmp_proto::{Decoder, Limits, ServerMessage};
/// let mut decoder = Decoder::new(&Limits::default());
/// let mut out = Vec::new();
/// decoder.feed(b"{\"event\": \"STOP\", \"timestamp\": {\"seconds\": 1, \"micro", &mut out);
/// assert!(out.is_empty());
/// decoder.feed(b"seconds\": 2}}\r\n{\"return\": {}, \"id\": 1}\r\n", &mut out);
/// assert!(matches!(&out[0], Ok(ServerMessage::Event(e)) if e.name == "STOP"));
/// assert!(matches!(&out[1], Ok(ServerMessage::Reply(_))));
/// ```
#[derive(Debug)]
pub struct Decoder {
    framer: Framer,
    max_message_size: usize,
    max_depth: usize,
}

impl Decoder {
    /// A decoder enforcing `limits`.
    pub fn new(limits: &Limits) -> Self {
        Decoder {
            framer: Framer::new(limits.max_message_size, limits.max_depth),
            max_message_size: limits.max_message_size,
            max_depth: limits.max_depth,
        }
    }

    /// Feeds bytes; appends every message (or error) that completes in them to `out`, in order.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<Result<ServerMessage, DecodeError>>) {
        let (max_size, max_depth) = (self.max_message_size, self.max_depth);
        self.framer.feed(bytes, &mut |frame| {
            out.push(decode_frame(frame, max_size, max_depth))
        });
    }

    /// Ends the stream: reports a message left incomplete (or trailing garbage) and resets.
    pub fn finish(&mut self, out: &mut Vec<Result<ServerMessage, DecodeError>>) {
        let (max_size, max_depth) = (self.max_message_size, self.max_depth);
        self.framer
            .finish(&mut |frame| out.push(decode_frame(frame, max_size, max_depth)));
    }

    /// A reset point of the stream: the guest agent's `0xFF` sentinel (the caller finds it; the
    /// byte itself is not fed). A message still open is dropped and reported as
    /// [`DecodeError::Unterminated`] (a garbage run as [`DecodeError::Garbage`]); decoding goes on
    /// with the next byte as if it started a line.
    pub fn reset(&mut self, out: &mut Vec<Result<ServerMessage, DecodeError>>) {
        let (max_size, max_depth) = (self.max_message_size, self.max_depth);
        self.framer
            .reset(&mut |frame| out.push(decode_frame(frame, max_size, max_depth)));
    }

    /// Bytes held for a message that has not completed yet; never more than the size limit.
    pub fn buffered(&self) -> usize {
        self.framer.buffered()
    }
}

/// Parses one complete message.
fn decode_message(bytes: &[u8], max_depth: usize) -> Result<ServerMessage, DecodeError> {
    let recover_id = || {
        let mut skipper = crate::recover::Skipper::new();
        skipper.scan(bytes);
        skipper.into_id()
    };
    match json::parse_envelope(bytes, max_depth) {
        Ok(Some(mut envelope)) => {
            ServerMessage::from_envelope(&mut envelope).map_err(|reason| DecodeError::NotQmp {
                reason,
                id: envelope.into_id(),
            })
        }
        // The framer only delivers text starting with '{', so this is unreachable in practice.
        Ok(None) => Err(DecodeError::Garbage { len: bytes.len() }),
        Err(error) => Err(DecodeError::Malformed {
            error,
            id: recover_id(),
        }),
    }
}

fn decode_frame(
    frame: Frame<'_>,
    max_size: usize,
    max_depth: usize,
) -> Result<ServerMessage, DecodeError> {
    let over_limit = |reason, len, id| match reason {
        SkipReason::TooLarge => DecodeError::TooLarge {
            len,
            limit: max_size,
            id,
        },
        SkipReason::TooDeep => DecodeError::TooDeep {
            limit: max_depth,
            id,
        },
    };
    match frame {
        Frame::Message(bytes) => decode_message(bytes, max_depth),
        Frame::Skipped { reason, len, id } => Err(over_limit(reason, len, id)),
        Frame::LateId { reason, len, id } => Err(DecodeError::LateId(Box::new(over_limit(
            reason,
            len,
            Some(id),
        )))),
        Frame::Unterminated { len, id } => Err(DecodeError::Unterminated { len, id }),
        Frame::Garbage { len } => Err(DecodeError::Garbage { len }),
        Frame::Truncated { len, id } => Err(DecodeError::Truncated { len, id }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decode_all(limits: &Limits, input: &[u8]) -> Vec<Result<ServerMessage, DecodeError>> {
        let mut d = Decoder::new(limits);
        let mut out = Vec::new();
        d.feed(input, &mut out);
        d.finish(&mut out);
        out
    }

    #[test]
    fn inf_fails_alone_with_its_id() {
        let out = decode_all(
            &Limits::default(),
            b"{\"return\": {\"x\": inf}, \"id\": \"ab1\"}\r\n{\"return\": {}, \"id\": \"ab2\"}\r\n",
        );
        assert!(matches!(&out[0], Err(DecodeError::Malformed { id: Some(id), .. }) if id == "ab1"));
        assert!(matches!(&out[1], Ok(ServerMessage::Reply(r)) if r.id == Some(json!("ab2"))));
    }

    #[test]
    fn invalid_utf8_is_malformed() {
        let out = decode_all(&Limits::default(), b"{\"return\": \"\xc3\x28\", \"id\": 1}");
        assert!(matches!(&out[0], Err(DecodeError::Malformed { id: Some(id), .. }) if id == 1));
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn not_qmp_keeps_id() {
        let out = decode_all(&Limits::default(), b"{\"id\": \"z\", \"other\": 1}");
        assert!(matches!(&out[0], Err(DecodeError::NotQmp { id: Some(id), .. }) if id == "z"));
    }

    #[test]
    fn limits_are_reported_with_the_limit() {
        let limits = Limits {
            max_message_size: 32,
            max_depth: 3,
            ..Limits::default()
        };
        let input = format!(
            "{{\"return\": \"{}\", \"id\": 1}}{{\"return\": [[[1]]], \"id\": 2}}{{\"return\": [[1]], \"id\": 3}}",
            "y".repeat(40)
        );
        let out = decode_all(&limits, input.as_bytes());
        // The first reply's id comes after the limit: reported at the limit, then with the id.
        assert_eq!(
            out[0],
            Err(DecodeError::TooLarge {
                len: 33,
                limit: 32,
                id: None
            })
        );
        assert_eq!(
            out[1],
            Err(DecodeError::LateId(Box::new(DecodeError::TooLarge {
                len: 63,
                limit: 32,
                id: Some(json!(1))
            })))
        );
        assert_eq!(out[1].as_ref().unwrap_err().id(), Some(&json!(1)));
        assert_eq!(out[2], Err(DecodeError::TooDeep { limit: 3, id: None }));
        assert!(
            matches!(&out[3], Err(DecodeError::LateId(r)) if **r == DecodeError::TooDeep { limit: 3, id: Some(json!(2)) })
        );
        assert!(matches!(&out[4], Ok(ServerMessage::Reply(r)) if r.id == Some(json!(3))));
        assert_eq!(out.len(), 5);
        let text: Vec<String> = out[..4]
            .iter()
            .map(|e| e.as_ref().unwrap_err().to_string())
            .collect();
        assert_eq!(
            text,
            [
                "message exceeds the limit of 32 bytes; skipped",
                "message of 63 bytes exceeds the limit of 32 bytes; skipped (its id came after the limit)",
                "message nests deeper than the limit of 3; skipped",
                "message nests deeper than the limit of 3; skipped (its id came after the limit)",
            ]
        );
    }

    #[test]
    fn nesting_206_and_1024_deep_decode_by_default() {
        for depth in [206, 1024] {
            let body = format!("{}1{}", "[".repeat(depth - 1), "]".repeat(depth - 1));
            let input = format!("{{\"return\": {body}, \"id\": \"n\"}}");
            let out = decode_all(&Limits::default(), input.as_bytes());
            assert!(
                matches!(&out[0], Ok(ServerMessage::Reply(_))),
                "depth {depth}"
            );
        }
    }
}
