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
#[derive(Debug, Clone, PartialEq)]
pub enum DecodeError {
    /// A message longer than [`Limits::max_message_size`]; it was skipped without being buffered.
    TooLarge {
        /// The message's length in bytes.
        len: usize,
        /// The limit in force.
        limit: usize,
        /// Its top-level `id`, if found.
        id: Option<Value>,
    },
    /// A message nesting deeper than [`Limits::max_depth`]; it was skipped.
    TooDeep {
        /// The limit in force.
        limit: usize,
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
            | DecodeError::Malformed { id, .. }
            | DecodeError::NotQmp { id, .. }
            | DecodeError::Truncated { id, .. } => id.as_ref(),
            DecodeError::Garbage { .. } => None,
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::TooLarge { len, limit, .. } => {
                write!(
                    f,
                    "message of {len} bytes exceeds the limit of {limit} bytes; skipped"
                )
            }
            DecodeError::TooDeep { limit, .. } => {
                write!(f, "message nests deeper than the limit of {limit}; skipped")
            }
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
    match json::parse(bytes, max_depth) {
        Ok(Value::Object(obj)) => {
            let id = obj.get("id").cloned();
            ServerMessage::from_object(obj).map_err(|reason| DecodeError::NotQmp { reason, id })
        }
        // The framer only delivers text starting with '{', so this is unreachable in practice.
        Ok(_) => Err(DecodeError::Garbage { len: bytes.len() }),
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
    match frame {
        Frame::Message(bytes) => decode_message(bytes, max_depth),
        Frame::Skipped {
            reason: SkipReason::TooLarge,
            len,
            id,
        } => Err(DecodeError::TooLarge {
            len,
            limit: max_size,
            id,
        }),
        Frame::Skipped {
            reason: SkipReason::TooDeep,
            id,
            ..
        } => Err(DecodeError::TooDeep {
            limit: max_depth,
            id,
        }),
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
        assert!(
            matches!(&out[0], Err(DecodeError::TooLarge { limit: 32, id: Some(i), .. }) if i == 1)
        );
        assert!(matches!(&out[1], Err(DecodeError::TooDeep { limit: 3, id: Some(i) }) if i == 2));
        assert!(matches!(&out[2], Ok(ServerMessage::Reply(r)) if r.id == Some(json!(3))));
        assert_eq!(out.len(), 3);
        for e in &out[..2] {
            assert!(e.as_ref().unwrap_err().to_string().contains("limit"));
        }
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
