//! The decoder against an independent reference: serde_json's parser (without its recursion
//! limit) and a classification written here from the spec, message by message.
//!
//! On every real capture, and on generated messages: strings with every kind of escape (short
//! ones, `\u` escapes of ASCII, of other characters and of surrogate pairs, escaped member names
//! such as `"\u0065vent"`), numbers at the edges (u64/i64 bounds and one past them, `-0`, 1e308,
//! the smallest subnormal, 18 and 19 digits), nesting up to the depth limit, members in any order
//! and repeated, timestamps in QEMU's form and not, and invalid strings and numbers, which both
//! must reject. The stream is fed in random pieces.

// Helpers outside #[test] functions unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use qmp_proto::message::{Greeting, QmpError, Reply, Timestamp, Version};
use qmp_proto::{DecodeError, Decoder, Limits, ServerMessage};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::path::PathBuf;

/// serde_json's reading of one message, without its recursion limit.
fn serde_parse(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    de.disable_recursion_limit();
    let v = Value::deserialize(&mut de)?;
    de.end()?;
    Ok(v)
}

/// The spec's classification of a top-level object (docs/PROTOCOL.md), written independently of
/// qmp-proto's; `Err` carries the object's `id`.
fn classify(v: Value) -> Result<ServerMessage, Option<Value>> {
    let Value::Object(mut m) = v else {
        panic!("not an object")
    };
    let id = m.get("id").cloned();
    let bad = || id.clone();
    if let Some(qmp) = m.remove("QMP") {
        let qemu = &qmp["version"]["qemu"];
        let part = |k: &str| qemu.get(k).and_then(Value::as_u64).ok_or_else(bad);
        let capabilities = match qmp.get("capabilities") {
            None => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|c| c.as_str().map(str::to_owned))
                .collect(),
            Some(_) => return Err(bad()),
        };
        return Ok(ServerMessage::Greeting(Greeting {
            version: Version {
                major: part("major")?,
                minor: part("minor")?,
                micro: part("micro")?,
            },
            package: qmp["version"]["package"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            capabilities,
        }));
    }
    if let Some(name) = m.remove("event") {
        let Value::String(name) = name else {
            return Err(bad());
        };
        let data = match m.remove("data") {
            None => Map::new(),
            Some(Value::Object(d)) => d,
            Some(_) => return Err(bad()),
        };
        let timestamp = match m.remove("timestamp") {
            None => None,
            Some(Value::Object(t)) => {
                let get = |k: &str| t.get(k).and_then(Value::as_i64).ok_or_else(bad);
                Some(Timestamp {
                    seconds: get("seconds")?,
                    microseconds: get("microseconds")?,
                })
            }
            Some(_) => return Err(bad()),
        };
        return Ok(ServerMessage::Event(qmp_proto::message::Event {
            name,
            data,
            timestamp,
        }));
    }
    if let Some(ret) = m.remove("return") {
        return Ok(ServerMessage::Reply(Reply {
            id,
            result: Ok(ret),
        }));
    }
    if let Some(err) = m.remove("error") {
        let class = err.get("class").and_then(Value::as_str).ok_or_else(bad)?;
        let desc = err.get("desc").and_then(Value::as_str).unwrap_or_default();
        return Ok(ServerMessage::Reply(Reply {
            id,
            result: Err(QmpError {
                class: class.to_owned().into(),
                desc: desc.to_owned(),
            }),
        }));
    }
    Err(bad())
}

/// Checks the decoder's outputs for `messages` (each one complete message) against the reference.
fn check(outputs: &[Result<ServerMessage, DecodeError>], messages: &[Vec<u8>]) {
    assert_eq!(outputs.len(), messages.len(), "one output per message");
    for (out, msg) in outputs.iter().zip(messages) {
        let text = String::from_utf8_lossy(msg);
        match serde_parse(msg) {
            Ok(v) => match (classify(v), out) {
                (Ok(expected), Ok(got)) => assert_eq!(got, &expected, "{text}"),
                (Err(id), Err(DecodeError::NotQmp { id: got, .. })) => {
                    assert_eq!(got, &id, "{text}")
                }
                (expected, got) => panic!("{text}: expected {expected:?}, got {got:?}"),
            },
            Err(e) => assert!(
                matches!(out, Err(DecodeError::Malformed { .. })),
                "{text}: serde_json rejects it ({e}), decoder gave {out:?}"
            ),
        }
    }
}

fn decode(
    limits: &Limits,
    stream: &[u8],
    pieces: &[usize],
) -> Vec<Result<ServerMessage, DecodeError>> {
    let mut decoder = Decoder::new(limits);
    let mut out = Vec::new();
    let (mut at, mut k) = (0, 0);
    while at < stream.len() {
        let n = pieces[k % pieces.len()].min(stream.len() - at);
        decoder.feed(&stream[at..at + n], &mut out);
        at += n;
        k += 1;
    }
    decoder.finish(&mut out);
    out
}

#[test]
fn captures_decode_as_serde_json_reads_them() {
    for name in [
        "qsd-compact",
        "qsd-pretty",
        "system-compact",
        "system-pretty",
    ] {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/captures")
            .join(format!("{name}.server.bin"));
        let bytes = std::fs::read(path).unwrap();
        // serde_json's stream reader finds the messages itself: no framer of ours involved.
        let mut messages = Vec::new();
        let mut stream = serde_json::Deserializer::from_slice(&bytes).into_iter::<Value>();
        let mut start = 0;
        while let Some(v) = stream.next() {
            v.unwrap();
            messages.push(bytes[start..stream.byte_offset()].to_vec());
            start = stream.byte_offset();
        }
        assert!(messages.len() > 5, "{name}");
        for pieces in [vec![bytes.len()], vec![4096], vec![1], vec![7, 1, 300, 2]] {
            check(&decode(&Limits::default(), &bytes, &pieces), &messages);
        }
    }
}

/// A JSON value as text to write, with the writer's choices (escapes, whitespace) left open.
#[derive(Debug, Clone)]
enum Node {
    /// A number, or any other token, written verbatim (may be invalid on purpose).
    Raw(String),
    Str(String),
    Array(Vec<Node>),
    Object(Vec<(String, Node)>),
}

/// A pseudo-random choice among `n` from the xorshift state `choice`.
fn next(choice: &mut u64, n: u64) -> u64 {
    *choice ^= *choice << 13;
    *choice ^= *choice >> 7;
    *choice ^= *choice << 17;
    *choice % n
}

/// Whitespace between tokens, of the kinds QEMU writes (never a brace at the start of a line).
fn ws(choice: &mut u64, out: &mut String) {
    out.push_str(["", "", " ", "\t", "\r\n    "][next(choice, 5) as usize]);
}

/// Writes `node`; `choice` (a xorshift state) picks each string character's form and whitespace.
fn write(node: &Node, choice: &mut u64, out: &mut String) {
    match node {
        Node::Raw(t) => out.push_str(t),
        Node::Str(s) => write_str(s, choice, out),
        Node::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                ws(choice, out);
                write(item, choice, out);
                ws(choice, out);
            }
            out.push(']');
        }
        Node::Object(members) => {
            out.push('{');
            for (i, (k, v)) in members.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                ws(choice, out);
                write_str(k, choice, out);
                ws(choice, out);
                out.push(':');
                ws(choice, out);
                write(v, choice, out);
                ws(choice, out);
            }
            out.push('}');
        }
    }
}

fn write_str(s: &str, choice: &mut u64, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        let short = match c {
            '"' => Some("\\\""),
            '\\' => Some("\\\\"),
            '/' => Some("\\/"),
            '\u{8}' => Some("\\b"),
            '\u{c}' => Some("\\f"),
            '\n' => Some("\\n"),
            '\r' => Some("\\r"),
            '\t' => Some("\\t"),
            _ => None,
        };
        let must = c < ' ' || c == '"' || c == '\\';
        match (next(choice, 3), short) {
            (0, _) if !must => out.push(c),
            (1, Some(short)) => out.push_str(short),
            _ => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    if next(choice, 2) == 0 {
                        out.push_str(&format!("\\u{u:04x}"));
                    } else {
                        out.push_str(&format!("\\u{u:04X}"));
                    }
                }
            }
        }
    }
    out.push('"');
}

fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        (0u32..100).prop_map(|n| n.to_string()),
        // Exactly representable, so any correct parser agrees: mantissa < 2^53, |exp| <= 22.
        (0u64..(1 << 53), -22i32..=22, any::<bool>())
            .prop_map(|(m, e, neg)| format!("{}{m}e{e}", if neg { "-" } else { "" })),
        (0u64..(1 << 53), 1u32..6).prop_map(|(m, d)| {
            let p = 10u64.pow(d);
            format!("{}.{:0>w$}", m / p, m % p, w = d as usize)
        }),
        prop::sample::select(vec![
            "0",
            "-0",
            "-0.0",
            "0.0",
            "1e308",
            "-1e308",
            "1.7976931348623157e308",
            "5e-324",
            "2.2250738585072014e-308",
            "18446744073709551615",
            "18446744073709551616",
            "-9223372036854775808",
            "-9223372036854775809",
            "9223372036854775807",
            "9223372036854775808",
            "999999999999999999",
            "-999999999999999999",
            "1000000000000000000",
            "-1000000000000000000",
            "1E+2",
            "1e-0",
            "0.5E-3",
            "123456789012345678901234567890",
            "-1",
        ])
        .prop_map(str::to_owned),
    ]
}

/// Tokens that are not JSON: both parsers must reject the message.
fn invalid() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "01",
        "1.",
        ".5",
        "-",
        "1e",
        "1e+",
        "--1",
        "+1",
        "1e400",
        "-1e400",
        "inf",
        "nan",
        "tru",
        "nul",
        "\"\\x\"",
        "\"\\ud800\"",
        "\"\\udc00\"",
        "\"\\ud800\\u0041\"",
        "\"\\u12\"",
        "\"\\u12g4\"",
        "\"\u{1}\"",
        "'a'",
    ])
    .prop_map(str::to_owned)
}

fn string() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z_-]{0,12}",
        any::<String>(),
        prop::collection::vec(
            prop::sample::select(vec![
                '"',
                '\\',
                '/',
                '\u{8}',
                '\u{c}',
                '\n',
                '\r',
                '\t',
                '\u{0}',
                '\u{1f}',
                '\u{7f}',
                'é',
                '\u{ffff}',
                '\u{fdd0}',
                '😀',
                '\u{10ffff}',
                'a',
            ]),
            0..8
        )
        .prop_map(|v| v.into_iter().collect()),
    ]
}

fn leaf() -> impl Strategy<Value = Node> {
    prop_oneof![
        4 => number().prop_map(Node::Raw),
        4 => string().prop_map(Node::Str),
        1 => prop::sample::select(vec!["true", "false", "null"]).prop_map(|t| Node::Raw(t.into())),
        1 => invalid().prop_map(Node::Raw),
    ]
}

fn value() -> impl Strategy<Value = Node> {
    leaf().prop_recursive(6, 48, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Node::Array),
            prop::collection::vec((string(), inner), 0..5).prop_map(Node::Object),
        ]
    })
}

/// What a timestamp member may hold: mostly QEMU's form, sometimes not.
fn timestamp() -> impl Strategy<Value = Node> {
    let int = prop_oneof![
        (0i64..4_000_000_000).prop_map(|n| n.to_string()),
        number(),
        invalid(),
    ];
    prop_oneof![
        3 => (int.clone(), int.clone()).prop_map(|(s, u)| Node::Object(vec![
            ("seconds".into(), Node::Raw(s)),
            ("microseconds".into(), Node::Raw(u)),
        ])),
        1 => (int.clone(), int).prop_map(|(s, u)| Node::Object(vec![
            ("microseconds".into(), Node::Raw(u)),
            ("seconds".into(), Node::Raw(s)),
        ])),
        1 => value(),
    ]
}

/// A top-level object: the envelope members QMP messages have, unknown ones, repeats.
fn message() -> impl Strategy<Value = Node> {
    let member = prop_oneof![
        2 => "event|return|error|id|data|timestamp|QMP|other".prop_flat_map(|k| {
            let v = match k.as_str() {
                "event" => prop_oneof![string().prop_map(Node::Str), value()].boxed(),
                "timestamp" => timestamp().boxed(),
                "error" => (string(), string(), value())
                    .prop_map(|(c, d, x)| Node::Object(vec![
                        ("class".into(), Node::Str(c)),
                        ("desc".into(), Node::Str(d)),
                        ("x".into(), x),
                    ]))
                    .boxed(),
                _ => value().boxed(),
            };
            (Just(k), v)
        }),
        1 => (string(), value()),
    ];
    prop::collection::vec(member, 0..6).prop_map(Node::Object)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn generated_messages_decode_as_serde_json_reads_them(
        nodes in prop::collection::vec(message(), 1..8),
        seed in 1u64..,
        pieces in prop::collection::vec(1usize..80, 1..6),
    ) {
        let mut choice = seed;
        let messages: Vec<Vec<u8>> = nodes
            .iter()
            .map(|n| {
                let mut s = String::new();
                write(n, &mut choice, &mut s);
                s.push_str("\r\n");
                s.into_bytes()
            })
            .collect();
        let stream = messages.concat();
        check(&decode(&Limits::default(), &stream, &pieces), &messages);
    }
}

#[test]
fn nesting_to_the_limit_decodes_as_serde_json_reads_it() {
    // serde_json recurses per level (and dropping a Value does): a big stack for the reference.
    std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(nesting_to_the_limit)
        .unwrap()
        .join()
        .unwrap();
}

fn nesting_to_the_limit() {
    let limits = Limits::default();
    for depth in [1, 2, 3, 64, limits.max_depth] {
        // `depth` levels in all, the top-level object included.
        let inner = depth - 1;
        let body = format!("{}\"\\u00e9\"{}", "[".repeat(inner), "]".repeat(inner));
        let msg = format!("{{\"return\": {body}, \"id\": -0}}\r\n").into_bytes();
        for pieces in [vec![msg.len()], vec![1], vec![3, 5]] {
            check(&decode(&limits, &msg, &pieces), std::slice::from_ref(&msg));
        }
    }
    let over = limits.max_depth;
    let msg = format!(
        "{{\"return\": {}{}, \"id\": 1}}",
        "[".repeat(over),
        "]".repeat(over)
    );
    let out = decode(&limits, msg.as_bytes(), &[4096]);
    assert!(
        matches!(out[0], Err(DecodeError::TooDeep { .. })),
        "{out:?}"
    );
}

/// The test would catch a broken escape: a message decoded with one character changed differs.
#[test]
fn check_rejects_a_wrong_string() {
    let msg = b"{\"return\": \"a\\u00e9\\n\", \"id\": 1}\r\n".to_vec();
    let wrong = b"{\"return\": \"a\\u00e8\\n\", \"id\": 1}\r\n".to_vec();
    let out = decode(&Limits::default(), &wrong, &[4096]);
    let caught = std::panic::catch_unwind(|| check(&out, std::slice::from_ref(&msg)));
    assert!(caught.is_err());
}
