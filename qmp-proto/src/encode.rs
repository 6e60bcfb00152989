//! Encoding commands: compact JSON, one command per line, written straight into a `BytesMut`.
//!
//! Everything QEMU would reject *without an id* is refused here, before sending, because such a
//! command would never get an answer: strings holding Unicode noncharacters, nesting deeper than
//! QEMU's 1024, and commands over QEMU's 64 MiB input limit. Arguments that serialize to nothing
//! (`()`, `null`, `{}`) are omitted: QEMU parses `"arguments":{}` byte by byte for nothing.

use bytes::{BufMut, BytesMut};
use serde::Serialize;
use std::fmt;

/// Why a command was refused before sending.
#[derive(Debug)]
pub enum EncodeError {
    /// The arguments could not be serialized.
    Serialize(serde_json::Error),
    /// The arguments serialized to something other than a JSON object.
    ArgumentsNotObject,
    /// A string contains a Unicode noncharacter (U+FDD0–U+FDEF, U+xFFFE, U+xFFFF), which QEMU's parser
    /// rejects without an id.
    Noncharacter {
        /// The offending character.
        character: char,
    },
    /// The command would nest deeper than QEMU accepts.
    TooDeep {
        /// The command's depth (the command object itself is depth 1).
        depth: usize,
        /// The limit in force.
        limit: usize,
    },
    /// The command would be larger than QEMU accepts.
    TooLarge {
        /// The command's size in bytes.
        len: usize,
        /// The limit in force.
        limit: usize,
    },
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::Serialize(e) => write!(f, "arguments could not be serialized: {e}"),
            EncodeError::ArgumentsNotObject => {
                f.write_str("arguments must serialize to a JSON object")
            }
            EncodeError::Noncharacter { character } => write!(
                f,
                "arguments contain the Unicode noncharacter U+{:04X}, which QEMU rejects",
                *character as u32
            ),
            EncodeError::TooDeep { depth, limit } => {
                write!(
                    f,
                    "command nests {depth} deep; QEMU accepts at most {limit}"
                )
            }
            EncodeError::TooLarge { len, limit } => {
                write!(f, "command is {len} bytes; the limit is {limit}")
            }
        }
    }
}

impl std::error::Error for EncodeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            EncodeError::Serialize(e) => Some(e),
            _ => None,
        }
    }
}

/// What to write for one command.
pub(crate) struct CommandText<'a, A: ?Sized> {
    pub(crate) name: &'a str,
    pub(crate) arguments: &'a A,
    pub(crate) oob: bool,
    pub(crate) id: WireId<'a>,
}

/// A command's id as written: a string for `qmp_capabilities`, a bare integer for the rest
/// (docs/PROTOCOL.md, rule 5).
#[derive(Debug, Clone, Copy)]
pub(crate) enum WireId<'a> {
    /// `"id":"<text>"`; the text holds only characters that need no escaping.
    Text(&'a str),
    /// `"id":<n>`.
    Number(u64),
}

/// Appends the command to `buf`, or leaves `buf` as it was and returns why not.
pub(crate) fn encode_command<A: Serialize + ?Sized>(
    buf: &mut BytesMut,
    cmd: &CommandText<'_, A>,
    max_len: usize,
    max_depth: usize,
) -> Result<(), EncodeError> {
    let start = buf.len();
    let result = write_command(buf, cmd, max_len, max_depth);
    if result.is_err() {
        buf.truncate(start);
    }
    result
}

fn write_command<A: Serialize + ?Sized>(
    buf: &mut BytesMut,
    cmd: &CommandText<'_, A>,
    max_len: usize,
    max_depth: usize,
) -> Result<(), EncodeError> {
    let start = buf.len();
    buf.put_slice(if cmd.oob {
        b"{\"exec-oob\":"
    } else {
        b"{\"execute\":"
    });
    serde_json::to_writer(buf.writer(), cmd.name).map_err(EncodeError::Serialize)?;
    let args_start = buf.len();
    buf.put_slice(b",\"arguments\":");
    let value_start = buf.len();
    serde_json::to_writer(buf.writer(), cmd.arguments).map_err(EncodeError::Serialize)?;
    match &buf[value_start..] {
        b"null" | b"{}" => buf.truncate(args_start),
        [b'{', ..] => {}
        _ => return Err(EncodeError::ArgumentsNotObject),
    }
    check_text(&buf[start..], max_depth)?;
    match cmd.id {
        WireId::Text(text) => {
            buf.put_slice(b",\"id\":\"");
            buf.put_slice(text.as_bytes());
            buf.put_slice(b"\"}\n");
        }
        WireId::Number(n) => {
            buf.put_slice(b",\"id\":");
            buf.put_slice(itoa(n, &mut [0u8; 20]));
            buf.put_slice(b"}\n");
        }
    }
    let len = buf.len() - start;
    if len > max_len {
        return Err(EncodeError::TooLarge {
            len,
            limit: max_len,
        });
    }
    Ok(())
}

/// Decimal digits of `n`, written into `scratch`.
fn itoa(mut n: u64, scratch: &mut [u8; 20]) -> &[u8] {
    let mut i = scratch.len();
    loop {
        i -= 1;
        scratch[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &scratch[i..];
        }
    }
}

/// Checks the nesting depth (counting the command object, whose closing brace is not written yet)
/// and looks for noncharacters.
fn check_text(text: &[u8], max_depth: usize) -> Result<(), EncodeError> {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    let mut may_hold_nonchar = false;
    for &b in text {
        // Noncharacters are encoded with a lead byte of 0xEF (U+FDD0.., U+FFFE/F) or 0xF0..0xF4.
        may_hold_nonchar |= b >= 0xEF;
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    if deepest > max_depth {
        return Err(EncodeError::TooDeep {
            depth: deepest,
            limit: max_depth,
        });
    }
    if may_hold_nonchar {
        // serde_json writes valid UTF-8 and never escapes non-ASCII characters.
        let s = std::str::from_utf8(text).unwrap_or("");
        if let Some(character) = s.chars().find(|&c| is_noncharacter(c)) {
            return Err(EncodeError::Noncharacter { character });
        }
    }
    Ok(())
}

/// Unicode noncharacters: U+FDD0..=U+FDEF and the last two code points of every plane.
pub(crate) fn is_noncharacter(c: char) -> bool {
    let c = c as u32;
    (0xFDD0..=0xFDEF).contains(&c) || (c & 0xFFFE) == 0xFFFE
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn enc<A: Serialize + ?Sized>(name: &str, args: &A, oob: bool) -> Result<String, EncodeError> {
        let mut buf = BytesMut::from(&b"keep"[..]);
        let cmd = CommandText {
            name,
            arguments: args,
            oob,
            id: WireId::Number(17),
        };
        let r = encode_command(&mut buf, &cmd, 1 << 20, 1024);
        let text = String::from_utf8(buf.to_vec()).unwrap();
        match r {
            Ok(()) => Ok(text["keep".len()..].to_string()),
            Err(e) => {
                assert_eq!(text, "keep", "buffer restored on error");
                Err(e)
            }
        }
    }

    #[test]
    fn compact_one_line_and_no_empty_arguments() {
        assert_eq!(
            enc("query-version", &(), false).unwrap(),
            "{\"execute\":\"query-version\",\"id\":17}\n"
        );
        assert_eq!(
            enc("stop", &json!({}), false).unwrap(),
            "{\"execute\":\"stop\",\"id\":17}\n"
        );
        assert_eq!(
            enc("stop", &None::<()>, false).unwrap(),
            "{\"execute\":\"stop\",\"id\":17}\n"
        );
        assert_eq!(
            enc("yank", &json!({"instances": []}), true).unwrap(),
            "{\"exec-oob\":\"yank\",\"arguments\":{\"instances\":[]},\"id\":17}\n"
        );
    }

    #[test]
    fn name_is_escaped() {
        let s = enc("we\"ird", &(), false).unwrap();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&s).unwrap()["execute"],
            "we\"ird"
        );
    }

    #[test]
    fn refuses_what_qemu_rejects_without_id() {
        assert!(matches!(
            enc("x", &json!([1]), false),
            Err(EncodeError::ArgumentsNotObject)
        ));
        assert!(matches!(
            enc("x", &5, false),
            Err(EncodeError::ArgumentsNotObject)
        ));
        for bad in ["\u{FFFF}", "a\u{FDD0}", "\u{1FFFE}", "\u{10FFFF}"] {
            assert!(
                matches!(
                    enc("x", &json!({"s": bad}), false),
                    Err(EncodeError::Noncharacter { .. })
                ),
                "{bad:?}"
            );
        }
        assert!(enc(
            "x",
            &json!({"s": "\u{FFFD}\u{FDCF}\u{FDF0}é😀\u{0}"}),
            false
        )
        .is_ok());
        // The command object is depth 1, so arguments may nest 1023 deep.
        let nest = |n: usize| {
            let mut v = json!(1);
            for _ in 0..n - 1 {
                v = json!([v]);
            }
            json!({ "a": v })
        };
        assert!(enc("x", &nest(1023), false).is_ok());
        assert!(matches!(
            enc("x", &nest(1024), false),
            Err(EncodeError::TooDeep {
                depth: 1025,
                limit: 1024
            })
        ));
    }

    #[test]
    fn size_limit() {
        let mut buf = BytesMut::new();
        let args = json!({"s": "x".repeat(100)});
        let cmd = CommandText {
            name: "x",
            arguments: &args,
            oob: false,
            id: WireId::Text("p0"),
        };
        assert!(matches!(
            encode_command(&mut buf, &cmd, 64, 1024),
            Err(EncodeError::TooLarge { limit: 64, .. })
        ));
        assert!(buf.is_empty());
    }

    #[test]
    fn unserializable_arguments() {
        let mut m = std::collections::HashMap::new();
        m.insert(vec![1u8], 2);
        assert!(matches!(
            enc("x", &m, false),
            Err(EncodeError::Serialize(_))
        ));
    }
}
