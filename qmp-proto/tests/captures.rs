//! Real QEMU 10.0.2 output (tests/captures, see its README.md) through the decoder and the session.
//!
//! The decoder must read every capture the same whole or in pieces of every size from 1 to 16
//! bytes, 64 and 4096. The session replays each capture as the capturing client did: same
//! commands, same order, one at a time, and must write exactly the bytes that client wrote (ids
//! `cap`, then `1`, `2`, ...) and match every reply; replayed again with a message that never closes
//! injected before every reply, it must still match every reply. As an independent check, each
//! message is also cut out with a small brace counter and parsed with serde_json, and the
//! session's values must equal serde_json's. The framer's line rule (a `{` at the start of a line
//! starts a message, a `}` there ends one) is checked against every line of every capture.

// Helpers outside #[test] functions unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used)]

use qmp_proto::{
    CloseReason, CommandError, Config, DecodeError, Decoder, ErrorClass, Limits, Output,
    ServerMessage, Session, Warning,
};
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;
use std::path::PathBuf;

struct Capture {
    name: &'static str,
    server: Vec<u8>,
    client: Vec<String>,
}

fn capture(name: &'static str) -> Capture {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/captures");
    let server = std::fs::read(dir.join(format!("{name}.server.bin"))).unwrap();
    let client = std::fs::read_to_string(dir.join(format!("{name}.client.jsonl")))
        .unwrap()
        .lines()
        .map(|l| format!("{l}\n"))
        .collect();
    Capture {
        name,
        server,
        client,
    }
}

const NAMES: [&str; 4] = [
    "qsd-compact",
    "qsd-pretty",
    "system-compact",
    "system-pretty",
];

/// Ends of the top-level objects in `bytes` (a brace counter independent of qmp-proto's framer;
/// enough for QEMU's output, which has no garbage).
fn message_ends(bytes: &[u8]) -> Vec<usize> {
    let (mut depth, mut in_str, mut esc) = (0usize, false, false);
    let mut ends = Vec::new();
    for (i, &b) in bytes.iter().enumerate() {
        if in_str {
            if esc {
                esc = false;
            } else if b == b'\\' {
                esc = true;
            } else if b == b'"' {
                in_str = false;
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth -= 1;
                if depth == 0 {
                    ends.push(i + 1);
                }
            }
            _ => {}
        }
    }
    ends
}

/// Each message of the capture, parsed by serde_json.
fn oracle(server: &[u8]) -> Vec<Value> {
    let mut start = 0;
    message_ends(server)
        .into_iter()
        .map(|end| {
            let v = serde_json::from_slice(&server[start..end]).unwrap();
            start = end;
            v
        })
        .collect()
}

fn decode(server: &[u8], chunk: usize) -> Vec<Result<ServerMessage, DecodeError>> {
    let mut d = Decoder::new(&Limits::default());
    let mut out = Vec::new();
    for c in server.chunks(chunk) {
        d.feed(c, &mut out);
    }
    d.finish(&mut out);
    out
}

#[test]
fn captures_decode_the_same_however_chunked() {
    for name in NAMES {
        let cap = capture(name);
        let whole = decode(&cap.server, cap.server.len());
        let (mut greetings, mut replies, mut errors, mut events) = (0, 0, 0, 0);
        for m in &whole {
            match m {
                Ok(ServerMessage::Greeting(g)) => {
                    assert_eq!(g.version.to_string(), "10.0.2");
                    assert!(g.has_capability("oob"));
                    greetings += 1;
                }
                Ok(ServerMessage::Reply(r)) => {
                    assert!(r.id.is_some());
                    match r.result {
                        Ok(_) => replies += 1,
                        Err(_) => errors += 1,
                    }
                }
                Ok(ServerMessage::Event(e)) => {
                    assert!(e.timestamp.is_some());
                    events += 1;
                }
                Err(e) => panic!("{name}: {e}"),
            }
        }
        let expected_events = if name.starts_with("qsd") { 9 } else { 4 };
        assert_eq!(
            (greetings, replies, errors, events),
            (1, cap.client.len() - 1, 1, expected_events),
            "{name}"
        );
        assert_eq!(whole.len(), oracle(&cap.server).len(), "{name}");
        // Every size up to 16 puts a chunk boundary at every byte position (size 1), between
        // every line feed and the byte after it, and at every alignment of the framer's 8-byte
        // words relative to a boundary.
        for chunk in (1..=16).chain([64, 4096]) {
            assert!(
                decode(&cap.server, chunk) == whole,
                "{name} in {chunk}-byte pieces"
            );
        }
    }
}

/// Starts of the top-level objects in `bytes` (the same independent brace counter).
fn message_starts(bytes: &[u8]) -> Vec<usize> {
    let mut starts = vec![0];
    starts.extend(message_ends(bytes).iter().map(|&end| {
        end + bytes[end..]
            .iter()
            .position(|&b| b == b'{')
            .unwrap_or(bytes.len() - end)
    }));
    starts.pop();
    starts
}

#[test]
fn a_line_starting_with_a_brace_starts_or_ends_a_message_in_every_capture() {
    for name in NAMES {
        let server = capture(name).server;
        assert_eq!(server[0], b'{', "{name}");
        let starts = message_starts(&server);
        let lasts: Vec<usize> = message_ends(&server).iter().map(|e| e - 1).collect();
        assert_eq!(starts.len(), lasts.len());
        let (mut open, mut close, mut indent) = (Vec::new(), Vec::new(), 0);
        for (i, w) in server.windows(2).enumerate() {
            match w {
                [b'\n', b'{'] => open.push(i + 1),
                [b'\n', b'}'] => close.push(i + 1),
                [b'\n', b' '] => indent += 1,
                [b'\n', other] => panic!("{name}: line {i} starts with {other:#x}"),
                _ => {}
            }
        }
        // Every message but the first starts a line (the first starts the stream), and nothing
        // else does; every line inside a message is indented.
        assert_eq!(open, starts[1..], "{name}");
        if name.ends_with("pretty") {
            // A pretty message's last line is its closing brace, and no other line starts with one.
            assert_eq!(close, lasts, "{name}");
            assert!(indent > 10_000, "{name}: {indent} indented lines");
        } else {
            assert!(close.is_empty() && indent == 0, "{name}");
        }
        assert!(server.ends_with(b"}\r\n"), "{name}");
    }
}

/// A JSON object that keeps its members in order (serde_json's `Map` sorts them), so that the
/// commands can be sent with the very bytes the capture client wrote.
struct Ordered(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Ordered;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ordered, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    out.push(entry);
                }
                Ok(Ordered(out))
            }
        }
        d.deserialize_map(V)
    }
}

impl Serialize for Ordered {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

#[derive(serde::Deserialize)]
struct ClientLine {
    execute: String,
    arguments: Option<Ordered>,
    id: Value,
}

fn outputs(s: &mut Session) -> Vec<Output> {
    std::iter::from_fn(|| s.poll_output()).collect()
}

/// Replays one capture through a session, feeding the server's bytes in `chunk`-byte pieces but
/// never past the reply the client was waiting for (QEMU could not have answered a command not
/// yet sent). Unless `inject` is empty, it is fed after each command is sent, before anything
/// QEMU wrote in answer, and must cost that answer nothing: it is reported once, as a warning.
fn replay(cap: &Capture, chunk: usize, inject: &[u8]) {
    let name = cap.name;
    let compact = name.ends_with("compact");
    let messages = oracle(&cap.server);
    let ends = message_ends(&cap.server);
    let mut s = Session::new(Config {
        request_oob: compact,
        negotiation_id: Some("cap".into()),
        ..Config::default()
    });
    let mut fed = 0;
    let mut next_message = 0;
    let mut feed_through = |s: &mut Session, message: usize| {
        let end = ends[message];
        for c in cap.server[fed..end].chunks(chunk) {
            s.receive(c);
        }
        fed = end;
        let first = next_message;
        next_message = message + 1;
        &messages[first..=message]
    };

    // The greeting, then the session's own qmp_capabilities.
    feed_through(&mut s, 0);
    assert!(matches!(&outputs(&mut s)[..], [Output::Greeting(_)]));
    let t = s.poll_transmit().unwrap();
    assert_eq!(
        std::str::from_utf8(&t.bytes).unwrap(),
        cap.client[0],
        "{name}"
    );
    assert!(s.poll_transmit().is_none());
    let cap0 = messages.iter().position(|m| m["id"] == "cap").unwrap();
    feed_through(&mut s, cap0);
    // Every command carries id 1 (one at a time, the smallest free id): each reply is the first
    // message with the command's id after the previous reply.
    let mut last_reply = cap0;
    assert_eq!(outputs(&mut s), [Output::Ready]);
    assert_eq!(s.oob_enabled(), compact);

    for line in &cap.client[1..] {
        let cmd: ClientLine = serde_json::from_str(line).unwrap();
        let id = match &cmd.arguments {
            Some(args) => s.execute(&cmd.execute, args),
            None => s.execute(&cmd.execute, &()),
        }
        .unwrap();
        let t = s.poll_transmit().unwrap();
        assert_eq!(t.id, id);
        assert_eq!(std::str::from_utf8(&t.bytes).unwrap(), *line, "{name}");
        assert!(s.poll_transmit().is_none());

        for c in inject.chunks(chunk) {
            s.receive(c);
        }
        // Everything up to this command's reply: the events before it, then the reply.
        let reply_at = last_reply
            + 1
            + messages[last_reply + 1..]
                .iter()
                .position(|m| m["id"] == cmd.id)
                .unwrap();
        last_reply = reply_at;
        let expected = feed_through(&mut s, reply_at);
        let mut out = outputs(&mut s);
        if !inject.is_empty() {
            assert!(
                matches!(out.first(), Some(Output::Warning(Warning::Decode(_)))),
                "{name} {}: {:?}",
                cmd.execute,
                out.first()
            );
            out.remove(0);
        }
        assert_eq!(out.len(), expected.len(), "{name} {}", cmd.execute);
        for (o, m) in out.iter().zip(expected) {
            match o {
                Output::Event(e) => {
                    assert_eq!(m["event"], *e.name);
                    let data = m
                        .get("data")
                        .cloned()
                        .unwrap_or(Value::Object(Default::default()));
                    assert_eq!(Value::Object(e.data.clone()), data);
                }
                Output::Reply { id: got, result } => {
                    assert_eq!(*got, id);
                    match (cmd.execute.as_str(), result) {
                        ("no-such-command", Err(CommandError::Qmp(e))) => {
                            assert_eq!(e.class, ErrorClass::CommandNotFound);
                            assert_eq!(m["error"]["desc"], *e.desc);
                        }
                        ("query-qmp-schema", Ok(v)) => {
                            assert!(v.as_array().unwrap().len() > 500, "{name}");
                            assert_eq!(*v, m["return"]);
                        }
                        ("query-version", Ok(v)) => {
                            let info: VersionInfo = serde_json::from_value(v.clone()).unwrap();
                            assert_eq!((info.qemu.major, info.qemu.minor), (10, 0));
                        }
                        (_, Ok(v)) => assert_eq!(*v, m["return"], "{name} {}", cmd.execute),
                        (_, Err(e)) => panic!("{name} {}: {e}", cmd.execute),
                    }
                }
                other => panic!("{name} {}: unexpected {other:?}", cmd.execute),
            }
        }
    }
    // Whatever follows the last reply, then the end of the stream: every capture ends with
    // `quit`, so a clean close.
    for c in cap.server[fed..].chunks(chunk) {
        s.receive(c);
    }
    s.receive_eof();
    assert_eq!(
        outputs(&mut s),
        [Output::Closed(CloseReason::Quit)],
        "{name}"
    );
    let injected = if inject.is_empty() {
        0
    } else {
        cap.client.len() - 1
    };
    assert_eq!(s.stats().unmatched_replies, 0, "{name}");
    assert_eq!(s.stats().decode_errors, injected as u64, "{name}");
}

#[test]
fn captures_replay_through_a_session() {
    for name in NAMES {
        let cap = capture(name);
        for chunk in [usize::MAX, 4096, 7] {
            replay(&cap, chunk, b"");
        }
    }
}

#[test]
fn captures_replay_one_byte_at_a_time() {
    for name in NAMES {
        replay(&capture(name), 1, b"");
    }
}

/// Messages that never close, as a faulty peer or a corrupted stream could put before a reply:
/// an event nested 100,000 deep in arrays, one nested past the default depth limit in objects, one
/// open within the limits, and one open inside a string. Each is followed by QEMU's line end.
fn unclosed_messages() -> Vec<Vec<u8>> {
    let event = "{\"event\": \"BROKEN\", \"data\": ";
    [
        "[".repeat(100_000),
        "{\"a\": ".repeat(5000),
        "[[1, {\"b\": ".to_string(),
        "\"open string".to_string(),
    ]
    .into_iter()
    .map(|body| format!("{event}{body}").into_bytes())
    .collect()
}

#[test]
fn captures_replay_with_a_message_that_never_closes_before_every_reply() {
    for name in NAMES {
        let cap = capture(name);
        for inject in unclosed_messages() {
            for chunk in [usize::MAX, 4096, 7] {
                replay(&cap, chunk, &inject);
            }
        }
    }
}

/// `query-version`'s return, as qmp-qapi types it (qmp-proto cannot depend on it).
#[derive(serde::Deserialize)]
struct VersionInfo {
    qemu: VersionTriple,
}

#[derive(serde::Deserialize)]
struct VersionTriple {
    major: u64,
    minor: u64,
}
