//! Property: however a stream is cut into reads, the decoder and the session produce exactly what
//! they produce when the stream arrives in one read.
//!
//! Streams mix valid messages (greetings, replies, errors, events; compact and pretty-printed),
//! garbage, non-QMP objects, malformed JSON, oversize and over-deep messages (small limits),
//! messages that never close (deep, shallow, in a string, over the size limit) and a truncated tail.
//!
//! A second property: a message that never closes, of any of those shapes, written before a
//! reply, costs that reply nothing, however the stream is cut.

// Helpers outside #[test] functions unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use qmp_proto::{Config, Decoder, Limits, Output, Session};
use serde_json::{json, Value};

const MAX_SIZE: usize = 256;
const MAX_DEPTH: usize = 8;

fn limits() -> Limits {
    Limits {
        max_message_size: MAX_SIZE,
        max_depth: MAX_DEPTH,
        ..Limits::default()
    }
}

/// QEMU's pretty form: 4-space indent, CRLF line ends.
fn pretty(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    serde::Serialize::serialize(v, &mut ser).unwrap();
    String::from_utf8(out)
        .unwrap()
        .replace('\n', "\r\n")
        .into_bytes()
}

/// QEMU's compact form: `": "` and `", "` separators.
fn compact(v: &Value) -> Vec<u8> {
    // serde_json writes no spaces; QEMU does. Either must frame the same; use QEMU's style through
    // a formatter-free rewrite that only touches structure, not strings.
    let s = serde_json::to_string(v).unwrap();
    let mut out = Vec::with_capacity(s.len() + s.len() / 4);
    let (mut in_str, mut esc) = (false, false);
    for b in s.bytes() {
        out.push(b);
        if in_str {
            if esc {
                esc = false;
            } else if b == b'\\' {
                esc = true;
            } else if b == b'"' {
                in_str = false;
            }
        } else if b == b'"' {
            in_str = true;
        } else if b == b':' || b == b',' {
            out.push(b' ');
        }
    }
    out
}

fn id_strategy() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        3 => (0u64..8).prop_map(|n| Some(json!(n))),
        1 => Just(Some(json!("p"))),
        1 => Just(Some(json!("x1"))),
        1 => Just(Some(json!(5))),
        1 => Just(None),
    ]
}

fn payload() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!({})),
        any::<i64>().prop_map(|n| json!(n)),
        "[a-z{}\\[\\]\"\\\\:, \r\n]{0,12}".prop_map(|s| json!(s)),
        any::<String>().prop_map(|s| json!(s.chars().take(8).collect::<String>())),
        (any::<bool>(), "[a-z]{0,4}").prop_map(|(b, s)| json!({"ok": b, "list": [s, null, 1.5]})),
    ]
}

fn with_id(mut obj: Value, id: Option<Value>) -> Value {
    if let Some(id) = id {
        obj["id"] = id;
    }
    obj
}

fn nested(depth: usize) -> Value {
    let mut v = json!(1);
    for _ in 0..depth {
        v = json!([v]);
    }
    v
}

/// The shapes of a message that never closes, each cut off by a line end (`\r\n`, or `\n` as
/// the guest agent ends lines): nested past the depth limit as arrays or as objects, open but
/// within the limits, open inside a string, and past the size limit inside a string. `id`, when
/// given, comes before the point where it breaks.
fn unclosed(shape: usize, id: Option<&Value>, lf_only: bool) -> Vec<u8> {
    let head = match id {
        Some(id) => format!("{{\"id\": {id}, \"event\": \"BROKEN\", \"data\": "),
        None => "{\"event\": \"BROKEN\", \"data\": ".to_string(),
    };
    let body = match shape % 5 {
        0 => "[".repeat(MAX_DEPTH + 5),
        1 => "{\"a\": ".repeat(MAX_DEPTH + 5),
        2 => "[[1, {\"b\": ".to_string(),
        3 => "\"an open string".to_string(),
        _ => format!("\"{}", "y".repeat(MAX_SIZE)),
    };
    let end = if lf_only { "\n" } else { "\r\n" };
    format!("{head}{body}{end}").into_bytes()
}

/// One piece of a stream, already encoded; greetings only with `greetings`.
fn piece(greetings: bool) -> impl Strategy<Value = Vec<u8>> {
    let message = prop_oneof![
        // greeting, with capabilities known and not (else: an unknown event)
        prop_oneof![
            Just(json!(["oob"])),
            Just(json!([])),
            Just(json!(["oob", "future"]))
        ]
        .prop_map(move |caps| if greetings {
            json!({"QMP": {"version": {"qemu": {"micro": 2, "minor": 0,
                "major": 10}, "package": "p"}, "capabilities": caps}})
        } else {
            json!({"event": "NOT_A_GREETING", "data": {"caps": caps}})
        }),
        // success reply
        (payload(), id_strategy()).prop_map(|(p, id)| with_id(json!({"return": p}), id)),
        // error reply, known or unknown class, with or without id
        (
            prop_oneof![Just("GenericError"), Just("CommandNotFound"), Just("Weird")],
            id_strategy()
        )
            .prop_map(|(c, id)| with_id(json!({"error": {"class": c, "desc": "d"}}), id)),
        // event with or without data
        ("[A-Z_]{1,8}", proptest::option::of(payload()), any::<u32>()).prop_map(|(n, d, s)| {
            let mut e = json!({"timestamp": {"seconds": s, "microseconds": 5}, "event": n});
            if let Some(d) = d {
                e["data"] = json!({ "x": d });
            }
            e
        }),
        // oversize
        (MAX_SIZE - 40..MAX_SIZE + 60, id_strategy())
            .prop_map(|(n, id)| with_id(json!({"return": "y".repeat(n)}), id)),
        // deep (the limit is MAX_DEPTH, the object itself counts)
        (MAX_DEPTH - 3..MAX_DEPTH + 3, id_strategy())
            .prop_map(|(d, id)| with_id(json!({"return": nested(d)}), id)),
        // both oversize and deep, crossing either limit first (serde_json writes keys in sorted
        // order, so the id comes last)
        (
            MAX_SIZE - 60..MAX_SIZE + 20,
            MAX_DEPTH - 2..MAX_DEPTH + 2,
            any::<bool>()
        )
            .prop_map(|(n, d, deep_first)| {
                let (k1, k2) = if deep_first { ("b", "c") } else { ("c", "b") };
                json!({"id": 2, k1: nested(d), k2: "w".repeat(n)})
            }),
        // an object that is not QMP
        Just(json!({"foo": {"id": 1}})),
    ];
    prop_oneof![
        8 => (message, any::<bool>()).prop_map(|(m, p)| {
            let mut b = if p { pretty(&m) } else { compact(&m) };
            b.extend_from_slice(b"\r\n");
            b
        }),
        1 => prop_oneof![
            Just(b"{\"return\": {\"x\": inf}, \"id\": 1}\r\n".to_vec()),
            Just(b"{\"return\": \"\xc3\x28\", \"id\": 2}\r\n".to_vec()),
            Just(b"{\"return\": {}, \"id\": 3]\r\n".to_vec()),
            Just(b"123 [1] \"str\" ".to_vec()),
        ],
        1 => proptest::collection::vec(any::<u8>(), 0..16),
        1 => (0..5usize, id_strategy(), any::<bool>())
            .prop_map(|(shape, id, lf_only)| unclosed(shape, id.as_ref(), lf_only)),
    ]
}

/// A stream of pieces, maybe followed by a truncated piece.
fn stream(greetings: bool) -> impl Strategy<Value = Vec<u8>> {
    (
        proptest::collection::vec(piece(greetings), 0..12),
        proptest::option::of((piece(greetings), any::<prop::sample::Index>())),
    )
        .prop_map(|(pieces, tail)| {
            let mut s: Vec<u8> = pieces.concat();
            if let Some((t, cut)) = tail {
                s.extend_from_slice(&t[..cut.index(t.len().max(1)).min(t.len())]);
            }
            s
        })
}

/// Cuts `s` at the given points (taken modulo its length).
fn chunks<'a>(s: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (s.len() + 1)).collect();
    points.sort_unstable();
    points.dedup();
    let mut out = Vec::new();
    let mut start = 0;
    for p in points {
        out.push(&s[start..p]);
        start = p;
    }
    out.push(&s[start..]);
    out
}

type Decoded = Vec<Result<qmp_proto::ServerMessage, qmp_proto::DecodeError>>;

fn decode(chunks: &[&[u8]]) -> Decoded {
    let mut d = Decoder::new(&limits());
    let mut out = Vec::new();
    for c in chunks {
        d.feed(c, &mut out);
        assert!(d.buffered() <= MAX_SIZE);
    }
    d.finish(&mut out);
    out
}

/// Drives a session as an eager client would: six commands (one out-of-band) queued before the
/// greeting, every transmit taken after every read. Reads are `pre` (ending with the greeting),
/// the negotiation reply alone, then `post`: QEMU cannot answer a command before it was sent, so
/// the reply to `qmp_capabilities` cannot share a read with the greeting, nor a reply to a command
/// a read with the negotiation reply. Six commands stay within the in-flight limit, so all are
/// sent once negotiation completes.
fn run_session(pre: &[&[u8]], post: &[&[u8]]) -> (Vec<Output>, Vec<Vec<u8>>) {
    let mut s = Session::new(Config {
        limits: limits(),
        request_oob: true,
        negotiation_id: Some("p".into()),
        ..Config::default()
    });
    for i in 0..5 {
        s.execute("cmd", &json!({ "n": i })).unwrap();
    }
    s.execute_oob("yank", &()).unwrap();
    let mut sent = Vec::new();
    let negotiated: &[u8] = b"{\"return\": {}, \"id\": \"p\"}\r\n";
    for c in pre.iter().chain([&negotiated]).chain(post) {
        s.receive(c);
        while let Some(t) = s.poll_transmit() {
            sent.push(t.bytes.to_vec());
        }
    }
    s.receive_eof();
    let mut outputs = Vec::new();
    while let Some(o) = s.poll_output() {
        outputs.push(o);
    }
    assert_eq!(s.outstanding(), 0);
    (outputs, sent)
}

const GREETING: &[u8] = b"{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 2, \"minor\": 0, \"major\": 10}, \"package\": \"\"}, \"capabilities\": [\"oob\"]}}\r\n";

proptest! {
    // 256 cases by default; set PROPTEST_CASES for a longer search.
    #![proptest_config(ProptestConfig::default())]

    #[test]
    fn decoder_output_does_not_depend_on_chunking(
        s in stream(true),
        cuts in proptest::collection::vec(any::<usize>(), 0..24),
    ) {
        let whole = decode(&[&s]);
        prop_assert_eq!(&decode(&chunks(&s, &cuts)), &whole);
        let ones: Vec<&[u8]> = s.chunks(1).collect();
        prop_assert_eq!(&decode(&ones), &whole);
    }

    #[test]
    fn session_output_does_not_depend_on_chunking(
        before in stream(false),
        after in stream(false),
        replies in proptest::collection::vec(piece(false), 0..8),
        cuts_pre in proptest::collection::vec(any::<usize>(), 0..8),
        cuts_post in proptest::collection::vec(any::<usize>(), 0..24),
    ) {
        // Before the greeting: anything (stale replies, events, garbage). No other greeting
        // anywhere: a truncated tail or garbage may swallow this one (an open `{"`), and a later
        // greeting would then start negotiation in a read that may already hold the reply to it,
        // which QEMU cannot send. Without a greeting nothing is sent, and the property holds.
        let mut pre = before.clone();
        pre.extend_from_slice(GREETING);
        // After the negotiation reply (id "p"): replies and everything else.
        let mut post = Vec::new();
        for r in &replies {
            post.extend_from_slice(r);
        }
        post.extend_from_slice(&after);
        let whole = run_session(&[&pre], &[&post]);
        prop_assert_eq!(&run_session(&chunks(&pre, &cuts_pre), &chunks(&post, &cuts_post)), &whole);
        let ones_pre: Vec<&[u8]> = pre.chunks(1).collect();
        let ones_post: Vec<&[u8]> = post.chunks(1).collect();
        prop_assert_eq!(&run_session(&ones_pre, &ones_post), &whole);
    }

    #[test]
    fn a_message_that_never_closes_costs_the_next_reply_nothing(
        shape in 0..5usize,
        id in prop_oneof![Just(None), Just(Some(json!("x1"))), Just(Some(json!(5))), Just(Some(json!("p7")))],
        lf_only in any::<bool>(),
        pretty_reply in any::<bool>(),
        cuts in proptest::collection::vec(any::<usize>(), 0..24),
    ) {
        let mut server = unclosed(shape, id.as_ref(), lf_only);
        let reply = json!({"return": {"n": 1}, "id": 1});
        server.extend_from_slice(&if pretty_reply { pretty(&reply) } else { compact(&reply) });
        server.extend_from_slice(b"\r\n");
        let ones: Vec<&[u8]> = server.chunks(1).collect();
        for chunking in [vec![&server[..]], chunks(&server, &cuts), ones] {
            let (cmd, out) = one_reply_after(&chunking);
            // One report of the broken message (it is owned by no command in flight), then the reply.
            prop_assert!(matches!(&out[..], [
                Output::Warning(qmp_proto::Warning::Decode(_)),
                Output::Reply { id, result: Ok(v) },
            ] if *id == cmd && *v == json!({"n": 1})), "{:?}", out);
        }
    }
}

/// Negotiates a session, sends one command (wire id `1`), then feeds `server` in `chunks`; returns
/// the command and what the session produced after negotiation.
fn one_reply_after(chunks: &[&[u8]]) -> (qmp_proto::CommandId, Vec<Output>) {
    let mut s = Session::new(Config {
        limits: limits(),
        negotiation_id: Some("p".into()),
        ..Config::default()
    });
    s.receive(GREETING);
    assert!(s.poll_transmit().is_some());
    s.receive(b"{\"return\": {}, \"id\": \"p\"}\r\n");
    let id = s.execute("query-status", &()).unwrap();
    let t = s.poll_transmit().unwrap();
    assert_eq!(&t.bytes[..], b"{\"execute\":\"query-status\",\"id\":1}\n");
    while let Some(o) = s.poll_output() {
        assert!(matches!(o, Output::Greeting(_) | Output::Ready), "{o:?}");
    }
    for c in chunks {
        s.receive(c);
    }
    (id, std::iter::from_fn(|| s.poll_output()).collect())
}

/// The generators do produce what the properties are about (guards against a vacuous property).
#[test]
fn streams_cover_every_kind() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..300 {
        let s = stream(true).new_tree(&mut runner).unwrap().current();
        for r in decode(&[&s]) {
            let kind = match r {
                Ok(qmp_proto::ServerMessage::Greeting(_)) => "greeting",
                Ok(qmp_proto::ServerMessage::Reply(_)) => "reply",
                Ok(qmp_proto::ServerMessage::Event(_)) => "event",
                Err(qmp_proto::DecodeError::TooLarge { .. }) => "too large",
                Err(qmp_proto::DecodeError::TooDeep { .. }) => "too deep",
                Err(qmp_proto::DecodeError::LateId(_)) => "late id",
                Err(qmp_proto::DecodeError::Unterminated { .. }) => "unterminated",
                Err(qmp_proto::DecodeError::Malformed { .. }) => "malformed",
                Err(qmp_proto::DecodeError::NotQmp { .. }) => "not qmp",
                Err(qmp_proto::DecodeError::Garbage { .. }) => "garbage",
                Err(qmp_proto::DecodeError::Truncated { .. }) => "truncated",
            };
            seen.insert(kind);
        }
    }
    assert_eq!(seen.len(), 11, "{seen:?}");
}
