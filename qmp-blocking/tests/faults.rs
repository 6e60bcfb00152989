//! Faults QEMU will not produce, from a scripted peer: each gives its clear error, nothing hangs.

// Test helpers outside #[test] functions unwrap too.
#![allow(clippy::unwrap_used)]

use qmp_blocking::qmp_proto::DecodeError;
use qmp_blocking::{Client, Config, Error, Limits, ProtocolError, Warning};
use qmp_testkit::{negotiated, FaultPeer, Step, GREETING};
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

fn config() -> Config {
    Config {
        negotiation_id: Some("t0".into()),
        ..Config::default()
    }
}

/// Greets, accepts negotiation (`t0`), then runs `rest`.
fn peer(rest: Vec<Step>) -> FaultPeer {
    let mut script = negotiated("t0");
    script.extend(rest);
    FaultPeer::start(script)
}

fn connect(p: &FaultPeer, config: Config) -> Client {
    Client::builder()
        .config(config)
        .timeout(T)
        .connect_timeout(T)
        .connect_unix(p.path())
        .unwrap()
}

#[test]
fn truncated_message_then_eof_is_disconnected_with_the_detail() {
    let p = peer(vec![
        Step::ReadLines(2),
        Step::Send(b"{\"return\": {\"status\": \"run".to_vec()),
        Step::Close,
    ]);
    let c = connect(&p, config());
    let e = c.execute("query-status", ()).unwrap_err();
    assert!(e.is_disconnected(), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains("'query-status'") && text.contains("cut off"),
        "{text}"
    );
    assert!(c.execute("query-status", ()).unwrap_err().is_disconnected());
    assert_eq!(
        p.join(),
        b"{\"execute\":\"qmp_capabilities\",\"id\":\"t0\"}\n{\"execute\":\"query-status\",\"id\":1}\n"
    );
}

#[test]
fn an_oversize_reply_fails_its_command_only() {
    let mut big = b"{\"return\": {\"x\": \"".to_vec();
    big.extend(std::iter::repeat_n(b'a', 10_000));
    big.extend(b"\"}, \"id\": 1}\r\n");
    let p = peer(vec![
        Step::ReadLines(2),
        Step::Send(big),
        Step::ReadLines(3),
        // One call at a time: every command carries id 1 (ids are reused).
        Step::Send(b"{\"return\": {\"ok\": true}, \"id\": 1}\r\n".to_vec()),
        Step::ReadLines(4),
    ]);
    let mut cfg = config();
    cfg.limits = Limits {
        max_message_size: 4096,
        ..Limits::default()
    };
    let c = connect(&p, cfg);
    let e = c.execute("query-big", ()).unwrap_err();
    match &e {
        Error::Protocol {
            command: Some(cmd),
            problem: ProtocolError::Undecodable(DecodeError::TooLarge { limit: 4096, .. }),
        } => assert_eq!(cmd, "query-big"),
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("'query-big'"), "{e}");
    assert_eq!(c.execute("query-small", ()).unwrap()["ok"], true);
}

#[test]
fn garbage_is_skipped_and_reported_and_a_non_json_reply_fails_its_command() {
    let p = peer(vec![
        Step::ReadLines(2),
        Step::Send(b"garbage!! ]]\r\n{\"return\": {}, \"id\": 1}\r\n".to_vec()),
        Step::ReadLines(3),
        Step::Send(b"{\"return\": {\"x\": inf}, \"id\": 1}\r\n".to_vec()),
        Step::ReadLines(4),
        Step::Send(b"{\"return\": 7, \"id\": 1}\r\n".to_vec()),
        Step::ReadLines(5),
    ]);
    let c = connect(&p, config());
    c.execute("first", ()).unwrap();
    let w = c.take_warnings();
    assert!(
        matches!(
            w.as_slice(),
            [Warning::Decode(DecodeError::Garbage { .. }), ..]
        ),
        "{w:?}"
    );
    let e = c.execute("second", ()).unwrap_err();
    assert!(
        matches!(
            &e,
            Error::Protocol {
                problem: ProtocolError::Undecodable(DecodeError::Malformed { .. }),
                ..
            }
        ),
        "{e:?}"
    );
    // A reply of the wrong shape for a typed command.
    let e = c.run(&qmp_qapi::qmp::QueryStatus).unwrap_err();
    assert!(
        matches!(
            &e,
            Error::Protocol {
                problem: ProtocolError::UnexpectedReply(_),
                ..
            }
        ),
        "{e:?}"
    );
}

#[test]
fn a_peer_that_never_greets_times_out_with_the_path() {
    // The peer waits for a line that never comes; our timeout ends the connection, which ends it.
    let p = FaultPeer::start(vec![Step::ReadLines(1)]);
    let e = Client::builder()
        .connect_timeout(Duration::from_millis(200))
        .connect_unix(p.path())
        .unwrap_err();
    assert!(e.is_timeout(), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains("greeting") && text.contains("fault.sock"),
        "{text}"
    );
    assert_eq!(p.join(), b"");
}

#[test]
fn negotiation_that_never_completes_times_out() {
    let p = FaultPeer::start(vec![Step::Send(GREETING.to_vec()), Step::ReadLines(2)]);
    let e = Client::builder()
        .connect_timeout(Duration::from_millis(200))
        .connect_unix(p.path())
        .unwrap_err();
    assert!(e.is_timeout(), "{e:?}");
    assert!(e.to_string().contains("qmp_capabilities"), "{e}");
}

#[test]
fn garbage_then_eof_before_the_greeting() {
    let p = FaultPeer::start(vec![
        Step::Send(b"HTTP/1.1 400 Bad Request\r\n".to_vec()),
        Step::Close,
    ]);
    let e = Client::builder()
        .connect_timeout(T)
        .connect_unix(p.path())
        .unwrap_err();
    assert!(e.is_disconnected(), "{e:?}");
    assert_eq!(
        e.to_string(),
        "disconnected: the connection to QEMU closed before the greeting (last problem seen: \
         skipped 26 bytes outside any JSON object)"
    );
}

#[test]
fn refused_negotiation_is_a_protocol_error() {
    let p = FaultPeer::start(vec![
        Step::Send(GREETING.to_vec()),
        Step::ReadLines(1),
        Step::Send(
            b"{\"id\": \"t0\", \"error\": {\"class\": \"GenericError\", \"desc\": \"no\"}}\r\n"
                .to_vec(),
        ),
        Step::ReadLines(2),
    ]);
    let e = Client::builder()
        .config(config())
        .connect_timeout(T)
        .connect_unix(p.path())
        .unwrap_err();
    assert!(
        matches!(
            &e,
            Error::Protocol {
                problem: ProtocolError::Negotiation(_),
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("refused"), "{e}");
}

#[test]
fn ten_thousand_unread_events_are_bounded_and_the_reply_still_arrives() {
    let mut flood = Vec::new();
    for n in 0..10_000 {
        flood.extend(
            format!("{{\"timestamp\": {{\"seconds\": 1, \"microseconds\": {n}}}, \"event\": \"E{n}\"}}\r\n")
                .bytes(),
        );
    }
    flood.extend(b"{\"return\": {}, \"id\": 1}\r\n");
    let p = peer(vec![
        Step::ReadLines(2),
        Step::Send(flood),
        Step::ReadLines(3),
    ]);
    let c = Client::builder()
        .config(config())
        .timeout(T)
        .event_queue_capacity(100)
        .connect_unix(p.path())
        .unwrap();
    c.execute("x", ()).unwrap();
    assert_eq!(c.queued_events(), 100);
    assert_eq!(c.dropped_events(), 9_900);
    let events = c.take_events();
    assert_eq!(events.first().unwrap().name, "E9900");
    assert_eq!(events.last().unwrap().name, "E9999");
}

#[test]
fn id_less_errors_and_stale_replies_leave_commands_pending() {
    let p = peer(vec![
        Step::ReadLines(2),
        Step::Send(
            b"{\"error\": {\"class\": \"GenericError\", \"desc\": \"JSON parse error\"}}\r\n"
                .to_vec(),
        ),
        Step::Send(b"{\"return\": {}, \"id\": \"old-conn-1\"}\r\n".to_vec()),
        Step::Send(b"{\"return\": {\"mine\": 1}, \"id\": 1}\r\n".to_vec()),
        Step::ReadLines(3),
    ]);
    let c = connect(&p, config());
    assert_eq!(c.execute("x", ()).unwrap()["mine"], 1);
    let w = c.take_warnings();
    assert!(matches!(w[0], Warning::ErrorWithoutId(_)), "{w:?}");
    assert!(matches!(w[1], Warning::UnmatchedReply { .. }), "{w:?}");
    assert_eq!(c.stats().warnings, 2);
}

#[test]
fn a_slow_handler_has_a_bounded_backlog() {
    let mut flood = Vec::new();
    for n in 0..100 {
        flood.extend(format!("{{\"event\": \"E\", \"data\": {{\"n\": {n}}}}}\r\n").bytes());
    }
    flood.extend(b"{\"return\": {}, \"id\": 1}\r\n");
    let p = peer(vec![
        Step::ReadLines(2),
        Step::Send(flood),
        Step::ReadLines(3),
    ]);
    let c = Client::builder()
        .config(config())
        .timeout(T)
        .handler_backlog(2)
        .connect_unix(p.path())
        .unwrap();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let release_rx = std::sync::Mutex::new(release_rx);
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen2 = std::sync::Arc::clone(&seen);
    c.on_event("E", move |e| {
        // The first run blocks until released: a slow handler.
        let _ = release_rx.lock().unwrap().recv_timeout(T);
        seen2.lock().unwrap().push(e.data["n"].as_u64().unwrap());
    });
    c.execute("x", ()).unwrap();
    let dropped = c.stats().dropped_handler_runs;
    assert!((97..=98).contains(&dropped), "{dropped}");
    drop(release_tx);
    c.wait_timeout(T).unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len() as u64 + dropped, 100);
    // The newest runs survived, in order.
    assert_eq!(seen[seen.len() - 2..], [98, 99]);
    // The event queue itself kept every event (its own bound is larger).
    assert_eq!(c.queued_events(), 100);
}

/// QEMU 10.0.2 greets twice a client that connects as its socket starts listening: the second
/// greeting is reported and ignored, and the connection works.
#[test]
fn a_second_greeting_is_ignored() {
    let p = FaultPeer::start(vec![
        Step::Send(GREETING.to_vec()),
        Step::Send(GREETING.to_vec()),
        Step::ReadLines(1),
        Step::Send(b"{\"return\": {}, \"id\": \"t0\"}\r\n".to_vec()),
        Step::ReadLines(2),
        Step::Send(b"{\"return\": {\"ok\": true}, \"id\": 1}\r\n".to_vec()),
        Step::ReadLines(3),
    ]);
    let c = connect(&p, config());
    assert_eq!(c.execute("x", ()).unwrap(), serde_json::json!({"ok": true}));
    assert!(
        matches!(c.take_warnings()[..], [Warning::UnexpectedGreeting(_)]),
        "one warning, for the second greeting"
    );
    drop(c);
    p.join();
}

/// QEMU 10.0.2 sometimes closes, without a word, a connection made as its socket starts
/// listening: connecting fails as disconnected (the caller may retry), not by timeout.
#[test]
fn a_close_before_the_greeting_is_disconnected_at_once() {
    let p = FaultPeer::start(vec![Step::Close]);
    let e = Client::builder()
        .connect_timeout(T)
        .connect_unix(p.path())
        .unwrap_err();
    assert!(e.is_disconnected(), "{e:?}");
}

#[test]
fn a_typed_event_whose_data_does_not_fit_fails_only_that_wait() {
    let p = peer(vec![
        Step::Send(
            b"{\"event\": \"JOB_STATUS_CHANGE\", \"data\": {\"id\": 7, \"status\": \"running\"}}\r\n\
              {\"event\": \"JOB_STATUS_CHANGE\", \"data\": {\"id\": \"j0\", \"status\": \"concluded\"}}\r\n"
                .to_vec(),
        ),
        // Stays open until the client goes.
        Step::ReadLines(2),
    ]);
    let c = connect(&p, config());
    use qmp_qapi::qmp::{event::JobStatusChange, JobStatus};
    let e = c
        .wait_event_typed::<JobStatusChange>(|_| true, T)
        .unwrap_err();
    assert!(
        matches!(
            &e,
            Error::Protocol {
                problem: ProtocolError::UnexpectedEvent { name, .. },
                ..
            } if name == "JOB_STATUS_CHANGE"
        ),
        "{e:?}"
    );
    let done = c
        .wait_event_typed::<JobStatusChange>(|e| e.status == JobStatus::Concluded, T)
        .unwrap();
    assert_eq!(done.id, "j0");
    drop(c);
    p.join();
}
