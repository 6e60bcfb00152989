//! The guest-agent session, byte by byte: syncing, the `0xFF` reset point, stale data, re-syncing
//! after an abandoned command, and commands that do not reply on success.

use proptest::prelude::*;
use qmp_proto::{
    CloseReason, CommandError, CommandId, Config, DecodeError, Output, Session, State, Warning,
};
use serde_json::{json, Value};

fn agent() -> Session {
    Session::new(Config {
        negotiation_id: Some("t".into()),
        ..Config::agent()
    })
}

/// The next transmit's bytes.
fn sent(s: &mut Session) -> Vec<u8> {
    s.poll_transmit().expect("something to send").bytes.to_vec()
}

/// The id `N` of a sync (or probe) command.
fn sync_id(bytes: &[u8], flush: bool) -> u64 {
    let (first, json) = bytes.split_first().expect("not empty");
    let json = if flush {
        assert_eq!(*first, 0xFF, "a sync starts with the flush byte");
        json
    } else {
        bytes
    };
    let v: Value = serde_json::from_slice(json).expect("JSON");
    assert_eq!(v["execute"], "guest-sync-delimited");
    assert!(v.get("id").is_none(), "the sync carries no id");
    assert_eq!(bytes.last(), Some(&b'\n'));
    v["arguments"]["id"].as_u64().expect("numeric id")
}

fn outputs(s: &mut Session) -> Vec<Output> {
    std::iter::from_fn(|| s.poll_output()).collect()
}

/// What real qemu-ga 10.0.2 answers to `0xFF` + the sync (QEMU-FACTS.md).
fn sync_answer(n: u64) -> Vec<u8> {
    let mut v =
        br#"{"error": {"class": "GenericError", "desc": "JSON parse error, stray '\uFFFD'"}}"#
            .to_vec();
    v.push(b'\n');
    v.push(0xFF);
    v.extend_from_slice(format!("{{\"return\": {n}}}\n").as_bytes());
    v
}

/// A session past its first sync.
fn ready() -> Session {
    let mut s = agent();
    let n = sync_id(&sent(&mut s), true);
    s.receive(&sync_answer(n));
    assert_eq!(outputs(&mut s), vec![Output::Ready]);
    s
}

fn reply(s: &mut Session) -> (CommandId, Result<Value, CommandError>) {
    match s.poll_output() {
        Some(Output::Reply { id, result }) => (id, result),
        other => panic!("expected a reply, got {other:?}"),
    }
}

#[test]
fn starts_syncing_and_sends_the_flush_byte_and_a_random_id() {
    let mut s = agent();
    assert_eq!(s.state(), State::Syncing);
    let a = sync_id(&sent(&mut s), true);
    assert!(s.poll_transmit().is_none(), "one sync");
    let mut t = agent();
    let b = sync_id(&sent(&mut t), true);
    assert_ne!(a, b, "ids are random per session");
    assert!(a < 1 << 53 && b < 1 << 53);
}

#[test]
fn commands_wait_for_the_sync_reply() {
    let mut s = agent();
    let id = s.execute("guest-ping", &()).unwrap();
    let n = sync_id(&sent(&mut s), true);
    assert!(
        s.poll_transmit().is_none(),
        "the command waits for the sync"
    );
    s.receive(&sync_answer(n));
    assert_eq!(s.state(), State::Ready);
    assert_eq!(outputs(&mut s), vec![Output::Ready]);
    assert_eq!(sent(&mut s), b"{\"execute\":\"guest-ping\",\"id\":1}\n");
    s.receive(b"{\"return\": {}, \"id\": 1}\n");
    assert_eq!(reply(&mut s), (id, Ok(json!({}))));
    let st = s.stats();
    assert_eq!((st.stale, st.resets, st.resyncs), (1, 1, 0), "{st:?}");
    assert_eq!(
        st.errors_without_id, 0,
        "the stray error is stale, not a warning"
    );
}

#[test]
fn everything_before_the_sync_reply_is_stale_and_silent() {
    let mut s = agent();
    let id = s.execute("guest-ping", &()).unwrap();
    let n = sync_id(&sent(&mut s), true);
    let mut input = Vec::new();
    input.extend_from_slice(b"{\"return\": {}, \"id\": 1}\n"); // an earlier client's reply
    input.extend_from_slice(b"{\"return\": 12345}\n"); // a reply to an old sync
    input.extend_from_slice(b"{\"error\": {\"class\": \"GenericError\", \"desc\": \"x\"}}\n");
    input.extend_from_slice(b"garbage\n");
    input.extend_from_slice(
        b"{\"event\": \"X\", \"timestamp\": {\"seconds\": 1, \"microseconds\": 2}}\n",
    );
    input.extend_from_slice(b"{\"return\": {\"half\": ");
    input.extend_from_slice(&sync_answer(n));
    s.receive(&input);
    assert_eq!(
        outputs(&mut s),
        vec![Output::Ready],
        "no warnings, no reply, no event"
    );
    assert_eq!(s.outstanding(), 1);
    // The stale `t1` reply did not answer the command, which goes out now.
    assert_eq!(sent(&mut s), b"{\"execute\":\"guest-ping\",\"id\":1}\n");
    s.receive(b"{\"return\": {}, \"id\": 1}\n");
    assert_eq!(reply(&mut s), (id, Ok(json!({}))));
    let st = s.stats();
    // 5 messages, then the half message, which swallows the stray error (written on the same
    // line, so not at a line start) and is dropped at the 0xFF: 6.
    assert_eq!(st.stale, 6, "{st:?}");
    assert_eq!(st.resets, 1);
}

#[test]
fn the_reset_byte_drops_a_half_message_whatever_its_state() {
    // Inside a string, at depth 3, after an escape: the 0xFF ends it all.
    for half in [
        &b"{\"return\": {\"a\": [\"unterminated"[..],
        b"{\"return\": {\"a\": \"\\",
        b"{",
        b"{\"id\": 1, \"return\": {\"buf-b64\": \"AAAA",
    ] {
        let mut s = agent();
        let n = sync_id(&sent(&mut s), true);
        let mut input = half.to_vec();
        input.extend_from_slice(&sync_answer(n));
        s.receive(&input);
        assert_eq!(s.state(), State::Ready, "{}", String::from_utf8_lossy(half));
        assert_eq!(outputs(&mut s), vec![Output::Ready]);
    }
}

#[test]
fn a_reset_after_the_sync_fails_the_command_whose_reply_it_cut() {
    let mut s = ready();
    let id = s.execute("guest-info", &()).unwrap();
    sent(&mut s);
    s.receive(b"{\"id\": 1, \"return\": {\"version\": \"10.0.2\", \"supp");
    s.receive(&[0xFF]);
    match reply(&mut s) {
        (got, Err(CommandError::Undecodable(DecodeError::Unterminated { id: Some(i), .. }))) => {
            assert_eq!(got, id);
            assert_eq!(i, 1);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(s.stats().resets, 2);
}

#[test]
fn the_sync_reply_must_carry_this_sessions_id() {
    let mut s = agent();
    let n = sync_id(&sent(&mut s), true);
    let mut input = vec![0xFF];
    input.extend_from_slice(format!("{{\"return\": {}}}\n", n ^ 1).as_bytes());
    input.extend_from_slice(format!("{{\"return\": \"{n}\"}}\n").as_bytes()); // a string
    input.extend_from_slice(format!("{{\"return\": {n}, \"id\": \"x\"}}\n").as_bytes()); // an id
    s.receive(&input);
    assert_eq!(s.state(), State::Syncing);
    assert!(outputs(&mut s).is_empty());
    assert_eq!(s.stats().stale, 3);
    s.receive(format!("{{\"return\": {n}}}\n").as_bytes());
    assert_eq!(s.state(), State::Ready);
}

#[test]
fn one_command_at_a_time() {
    let mut s = ready();
    let a = s.execute("guest-ping", &()).unwrap();
    let b = s.execute("guest-get-time", &()).unwrap();
    sent(&mut s);
    assert!(
        s.poll_transmit().is_none(),
        "the second waits for the first"
    );
    s.receive(b"{\"return\": {}, \"id\": 1}\n");
    assert_eq!(reply(&mut s).0, a);
    assert_eq!(sent(&mut s), b"{\"execute\":\"guest-get-time\",\"id\":2}\n");
    s.receive(b"{\"return\": 17, \"id\": 2}\n");
    assert_eq!(reply(&mut s), (b, Ok(json!(17))));
}

#[test]
fn unmatched_replies_are_counted_not_warned() {
    let mut s = ready();
    let a = s.execute("guest-ping", &()).unwrap();
    sent(&mut s);
    s.receive(b"{\"return\": {}, \"id\": 9}\n{\"return\": {}, \"id\": \"zz1\"}\n{\"return\": 5}\n");
    assert!(outputs(&mut s).is_empty());
    assert_eq!(s.stats().unmatched_replies, 3);
    s.receive(b"{\"return\": {}, \"id\": 1}\n");
    assert_eq!(reply(&mut s), (a, Ok(json!({}))));
}

#[test]
fn a_timeout_resyncs_and_the_late_reply_is_dropped() {
    let mut s = ready();
    let slow = s.execute("guest-exec-status", &json!({"pid": 1})).unwrap();
    sent(&mut s);
    let next = s.execute("guest-ping", &()).unwrap();
    assert!(s.abandon(slow), "the caller's timeout");
    assert_eq!(s.state(), State::Syncing);
    let n = sync_id(&sent(&mut s), true);
    assert!(
        s.poll_transmit().is_none(),
        "the next command waits for the new sync"
    );
    // The late reply, then the answer to the new sync.
    let mut input = b"{\"return\": {\"exited\": true}, \"id\": 1}\n".to_vec();
    input.extend_from_slice(&sync_answer(n));
    s.receive(&input);
    assert!(
        outputs(&mut s).is_empty(),
        "no second Ready, no reply for the abandoned"
    );
    assert_eq!(sent(&mut s), b"{\"execute\":\"guest-ping\",\"id\":2}\n");
    s.receive(b"{\"return\": {}, \"id\": 2}\n");
    assert_eq!(reply(&mut s), (next, Ok(json!({}))));
    let st = s.stats();
    // The first sync's stray error, then the late reply and the second stray error.
    assert_eq!((st.resyncs, st.stale), (1, 3), "{st:?}");
}

#[test]
fn a_late_reply_after_the_new_sync_matches_nothing() {
    let mut s = ready();
    let slow = s.execute("guest-ping", &()).unwrap();
    sent(&mut s);
    s.abandon(slow);
    let n = sync_id(&sent(&mut s), true);
    s.receive(&sync_answer(n));
    let next = s.execute("guest-ping", &()).unwrap();
    sent(&mut s);
    // An agent that restarted may answer out of order: the old id is not the new command's.
    s.receive(b"{\"return\": {}, \"id\": 1}\n");
    assert!(outputs(&mut s).is_empty());
    s.receive(b"{\"return\": {}, \"id\": 2}\n");
    assert_eq!(reply(&mut s), (next, Ok(json!({}))));
}

#[test]
fn an_unanswered_sync_is_sent_again_when_a_queued_command_times_out() {
    let mut s = agent();
    let first = sync_id(&sent(&mut s), true);
    let id = s.execute("guest-ping", &()).unwrap();
    assert!(s.abandon(id));
    let second = sync_id(&sent(&mut s), true);
    assert_ne!(first, second);
    // The old sync's reply no longer counts.
    s.receive(&sync_answer(first));
    assert_eq!(s.state(), State::Syncing);
    s.receive(&sync_answer(second));
    assert_eq!(outputs(&mut s), vec![Output::Ready]);
    assert_eq!(s.stats().resyncs, 1);
}

#[test]
fn no_reply_commands_complete_by_the_probe() {
    let mut s = ready();
    let id = s.execute("guest-suspend-ram", &()).unwrap();
    let after = s.execute("guest-ping", &()).unwrap();
    assert_eq!(
        sent(&mut s),
        b"{\"execute\":\"guest-suspend-ram\",\"id\":1}\n"
    );
    let probe = sync_id(&sent(&mut s), false);
    assert!(s.poll_transmit().is_none());
    let mut input = vec![0xFF];
    input.extend_from_slice(format!("{{\"return\": {probe}}}\n").as_bytes());
    s.receive(&input);
    assert_eq!(reply(&mut s), (id, Ok(json!({}))));
    assert_eq!(sent(&mut s), b"{\"execute\":\"guest-ping\",\"id\":2}\n");
    s.receive(b"{\"return\": {}, \"id\": 2}\n");
    assert_eq!(reply(&mut s).0, after);
}

#[test]
fn no_reply_commands_fail_by_an_error_with_their_id() {
    let mut s = ready();
    let id = s.execute("guest-shutdown", &()).unwrap();
    let after = s.execute("guest-ping", &()).unwrap();
    sent(&mut s);
    let probe = sync_id(&sent(&mut s), false);
    s.receive(b"{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"blocked\"}, \"id\": 1}\n");
    match reply(&mut s) {
        (got, Err(CommandError::Qmp(e))) => {
            assert_eq!(got, id);
            assert_eq!(e.desc, "blocked");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        s.poll_transmit().is_none(),
        "the probe's reply is awaited first"
    );
    let mut input = vec![0xFF];
    input.extend_from_slice(format!("{{\"return\": {probe}}}\n").as_bytes());
    s.receive(&input);
    assert!(outputs(&mut s).is_empty());
    assert_eq!(sent(&mut s), b"{\"execute\":\"guest-ping\",\"id\":2}\n");
    s.receive(b"{\"return\": {}, \"id\": 2}\n");
    assert_eq!(reply(&mut s).0, after);
}

#[test]
fn no_reply_commands_complete_at_the_end_of_the_connection() {
    let mut s = ready();
    let id = s.execute("guest-shutdown", &()).unwrap();
    let other = s.execute("guest-ping", &()).unwrap();
    sent(&mut s);
    sent(&mut s);
    s.receive_eof();
    assert_eq!(reply(&mut s), (id, Ok(json!({}))));
    match reply(&mut s) {
        (
            got,
            Err(CommandError::Closed {
                sent: false,
                reason,
            }),
        ) => {
            assert_eq!(got, other);
            assert!(matches!(reason, CloseReason::Disconnected(_)));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(s.poll_output(), Some(Output::Closed(_))));
}

#[test]
fn an_ordinary_command_fails_at_the_end_of_the_connection() {
    let mut s = ready();
    let id = s.execute("guest-ping", &()).unwrap();
    sent(&mut s);
    s.receive_eof();
    assert!(
        matches!(reply(&mut s), (got, Err(CommandError::Closed { sent: true, .. })) if got == id)
    );
}

#[test]
fn eof_before_the_sync_says_so() {
    let mut s = agent();
    sent(&mut s);
    s.receive_eof();
    let reason = s.close_reason().expect("closed").clone();
    match &reason {
        CloseReason::Disconnected(d) => {
            assert_eq!(d.handshake, Some(qmp_proto::Handshake::Syncing))
        }
        other => panic!("{other:?}"),
    }
    assert!(
        reason.to_string().contains("guest-sync-delimited"),
        "{reason}"
    );
}

#[test]
fn the_agents_largest_reply_fits_the_default_limit() {
    // guest-file-read of 48 MiB: 64 MiB of base64.
    let mut s = ready();
    let id = s
        .execute("guest-file-read", &json!({"handle": 1, "count": 48 << 20}))
        .unwrap();
    sent(&mut s);
    let mut r = b"{\"return\": {\"count\": 50331648, \"buf-b64\": \"".to_vec();
    r.resize(r.len() + (64 << 20), b'A');
    r.extend_from_slice(b"\", \"eof\": false}, \"id\": 1}\n");
    s.receive(&r);
    match reply(&mut s) {
        (got, Ok(v)) => {
            assert_eq!(got, id);
            assert_eq!(v["buf-b64"].as_str().map(str::len), Some(64 << 20));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn oob_is_refused() {
    let mut s = ready();
    assert!(s.execute_oob("guest-ping", &()).is_err());
}

#[test]
fn a_greeting_after_the_sync_is_only_a_warning() {
    let mut s = ready();
    s.receive(b"{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 2, \"minor\": 0, \"major\": 10}, \"package\": \"\"}, \"capabilities\": []}}\n");
    assert!(matches!(
        s.poll_output(),
        Some(Output::Warning(Warning::UnexpectedGreeting(_)))
    ));
    assert_eq!(s.state(), State::Ready);
}

/// A stream with stale data, the sync answer, and replies to two commands.
fn scripted(n: u64, stale: &[u8]) -> Vec<u8> {
    let mut v = stale.to_vec();
    v.extend_from_slice(&sync_answer(n));
    v.extend_from_slice(b"{\"return\": {}, \"id\": 1}\n");
    v.extend_from_slice(b"{\"return\": {\"x\": \"\xc3\xa9\"}, \"id\": 2}\n");
    v
}

fn run(chunks: &[&[u8]]) -> (Vec<Output>, qmp_proto::Stats) {
    let mut s = agent();
    s.execute("guest-ping", &()).expect("queued");
    s.execute("guest-info", &()).expect("queued");
    let n = sync_id(&sent(&mut s), true);
    let mut out = Vec::new();
    let whole: Vec<u8> = chunks.concat();
    let input = scripted(n, &whole);
    // Chunks of the stale prefix as given, then the rest in one piece per command.
    let mut pos = 0;
    for c in chunks {
        s.receive(&input[pos..pos + c.len()]);
        pos += c.len();
        out.extend(outputs(&mut s));
        while s.poll_transmit().is_some() {}
    }
    for b in &input[pos..] {
        s.receive(std::slice::from_ref(b));
        out.extend(outputs(&mut s));
        while s.poll_transmit().is_some() {}
    }
    (out, s.stats())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
    /// However the stale prefix and the rest are chunked, the outputs and counters are the same.
    #[test]
    fn chunking_does_not_matter(
        stale in proptest::collection::vec(
            prop_oneof![
                Just(b"{\"return\": {}, \"id\": 1}\n".to_vec()),
                Just(b"{\"return\": {\"ha".to_vec()),
                Just(vec![0xFFu8]),
                Just(b"}\n".to_vec()),
                Just(b"{\"error\": {\"class\": \"GenericError\", \"desc\": \"x\"}}\n".to_vec()),
                proptest::collection::vec(any::<u8>(), 0..8),
            ],
            0..8,
        ),
        cuts in proptest::collection::vec(1usize..12, 0..8),
    ) {
        let whole: Vec<u8> = stale.concat();
        let (expected, st) = run(&[&whole]);
        let mut chunks: Vec<&[u8]> = Vec::new();
        let mut rest = &whole[..];
        for c in cuts {
            let c = c.min(rest.len());
            let (a, b) = rest.split_at(c);
            chunks.push(a);
            rest = b;
        }
        chunks.push(rest);
        let (got, st2) = run(&chunks);
        prop_assert_eq!(&got, &expected);
        prop_assert_eq!(st, st2);
        // Whatever the stale bytes, both commands got their own replies.
        let replies: Vec<_> = got.iter().filter_map(|o| match o {
            Output::Reply { id, result } => Some((id.number(), result.is_ok())),
            _ => None,
        }).collect();
        prop_assert_eq!(replies, vec![(1, true), (2, true)]);
    }
}
