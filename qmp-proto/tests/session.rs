//! The session's rules, through its public API only: feed bytes, take outputs and transmits.
//! No sockets. Byte sequences follow what QEMU 10.0.2 sends (docs/PROTOCOL.md).

// Helpers outside #[test] functions unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used)]

use qmp_proto::{
    CloseReason, CommandError, CommandId, Config, DecodeError, Disconnect, EncodeError, ErrorClass,
    ExecuteOptions, Handshake, IoFailure, Limits, Output, Session, State, SubmitError, Warning,
};
use serde_json::{json, Value};
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;

const GREETING_OOB: &[u8] = b"{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 2, \"minor\": 0, \"major\": 10}, \"package\": \"Debian 1:10.0.2+ds-2+deb13u1~bpo12+1\"}, \"capabilities\": [\"oob\"]}}\r\n";
const GREETING_PLAIN: &[u8] = b"{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 2, \"minor\": 0, \"major\": 10}, \"package\": \"\"}, \"capabilities\": []}}\r\n";

fn config(request_oob: bool) -> Config {
    Config {
        request_oob,
        negotiation_id: Some("t".into()),
        ..Config::default()
    }
}

fn outputs(s: &mut Session) -> Vec<Output> {
    std::iter::from_fn(|| s.poll_output()).collect()
}

/// Every transmit available now, as text.
fn sent(s: &mut Session) -> Vec<String> {
    std::iter::from_fn(|| s.poll_transmit())
        .map(|t| String::from_utf8(t.bytes.to_vec()).unwrap())
        .collect()
}

fn wire_id(line: &str) -> String {
    let v: Value = serde_json::from_str(line).unwrap();
    v["id"].to_string()
}

/// A reply; `id` is the id's JSON text (`1`, `"t"`).
fn ret(id: &str, value: Value) -> Vec<u8> {
    format!("{{\"return\": {value}, \"id\": {id}}}\r\n").into_bytes()
}

fn err(id: &str, class: &str) -> Vec<u8> {
    format!("{{\"id\": {id}, \"error\": {{\"class\": \"{class}\", \"desc\": \"boom\"}}}}\r\n")
        .into_bytes()
}

fn event(name: &str) -> Vec<u8> {
    format!("{{\"timestamp\": {{\"seconds\": 1795674316, \"microseconds\": 793698}}, \"event\": \"{name}\"}}\r\n")
        .into_bytes()
}

/// Takes the `qmp_capabilities` transmit and feeds its success reply.
fn answer_negotiation(s: &mut Session) {
    let cap = sent(s);
    assert_eq!(cap.len(), 1);
    s.receive(&ret(&wire_id(&cap[0]), json!({})));
}

/// A session that completed negotiation; its outputs so far are drained.
fn ready(request_oob: bool, greeting: &[u8]) -> Session {
    let mut s = Session::new(config(request_oob));
    s.receive(greeting);
    let cap = sent(&mut s);
    assert_eq!(cap.len(), 1);
    s.receive(&ret(&wire_id(&cap[0]), json!({})));
    assert_eq!(s.state(), State::Ready);
    outputs(&mut s);
    s
}

// Typed commands and events of the shape qmp-qapi generates (qmp-proto cannot depend on it).

#[derive(serde::Serialize)]
struct QueryStatus;

#[derive(Debug, PartialEq, serde::Deserialize)]
struct StatusInfo {
    running: bool,
    status: String,
}

impl qmp_proto::Command for QueryStatus {
    const NAME: &'static str = "query-status";
    type Output = StatusInfo;
}

#[derive(serde::Serialize)]
struct HumanMonitorCommand {
    #[serde(rename = "command-line")]
    command_line: String,
}

impl HumanMonitorCommand {
    fn new(command_line: &str) -> Self {
        HumanMonitorCommand {
            command_line: command_line.into(),
        }
    }
}

impl qmp_proto::Command for HumanMonitorCommand {
    const NAME: &'static str = "human-monitor-command";
    type Output = String;
}

#[derive(serde::Serialize)]
struct Quit;

impl qmp_proto::Command for Quit {
    const NAME: &'static str = "quit";
    type Output = qmp_proto::command::Empty;
}

#[derive(serde::Deserialize)]
struct Shutdown {
    reason: String,
}

impl qmp_proto::events::EventData for Shutdown {
    const NAME: &'static str = "SHUTDOWN";
}

#[derive(serde::Deserialize)]
struct Reset {
    reason: String,
}

impl qmp_proto::events::EventData for Reset {
    const NAME: &'static str = "RESET";
}

/// The close reason of a plain end of stream.
fn eof() -> CloseReason {
    CloseReason::Disconnected(Disconnect::default())
}

/// Options carrying `n` descriptors (ends of socket pairs whose other ends are dropped).
fn with_fds(n: usize) -> ExecuteOptions {
    ExecuteOptions {
        fds: (0..n).map(|_| watched_fd().0).collect(),
        ..ExecuteOptions::default()
    }
}

/// A descriptor, and the other end of its socket pair: reading that end returns 0 (end of
/// stream) once every copy of the descriptor is closed.
fn watched_fd() -> (OwnedFd, UnixStream) {
    let (a, b) = UnixStream::pair().unwrap();
    (OwnedFd::from(a), b)
}

fn is_closed(other_end: &mut UnixStream) -> bool {
    other_end.set_nonblocking(true).unwrap();
    matches!(other_end.read(&mut [0u8; 1]), Ok(0))
}

/// A session with `limits` that completed negotiation (without `oob`); outputs drained.
fn ready_with(limits: Limits) -> Session {
    let mut s = Session::new(Config {
        limits,
        ..config(false)
    });
    s.receive(GREETING_PLAIN);
    answer_negotiation(&mut s);
    outputs(&mut s);
    s
}

fn reply_of(o: &Output) -> (CommandId, &Result<Value, CommandError>) {
    match o {
        Output::Reply { id, result } => (*id, result),
        other => panic!("expected a reply, got {other:?}"),
    }
}

// ---- state machine and negotiation -------------------------------------------------------------

#[test]
fn commands_wait_for_negotiation_then_go_in_order() {
    let mut s = Session::new(config(true));
    assert_eq!(s.state(), State::AwaitingGreeting);
    let a = s.execute("query-version", &()).unwrap();
    let b = s.execute("query-name", &()).unwrap();
    assert_eq!(s.outstanding(), 2);
    assert!(
        s.poll_transmit().is_none(),
        "nothing is sent before the greeting"
    );

    s.receive(GREETING_OOB);
    assert_eq!(s.state(), State::Negotiating);
    assert_eq!(
        sent(&mut s),
        ["{\"execute\":\"qmp_capabilities\",\"arguments\":{\"enable\":[\"oob\"]},\"id\":\"t\"}\n"],
        "the session negotiates by itself, oob requested and offered, and holds the commands back"
    );
    assert!(matches!(&outputs(&mut s)[..], [Output::Greeting(g)] if g.has_capability("oob")));
    assert_eq!(s.greeting().unwrap().version.to_string(), "10.0.2");

    s.receive(b"{\"return\": {}, \"id\": \"t\"}\r\n");
    assert_eq!(s.state(), State::Ready);
    assert!(s.oob_enabled());
    assert_eq!(outputs(&mut s), [Output::Ready]);
    assert_eq!(
        sent(&mut s),
        [
            "{\"execute\":\"query-version\",\"id\":1}\n",
            "{\"execute\":\"query-name\",\"id\":2}\n"
        ]
    );
    s.receive(b"{\"return\": {\"name\": \"vm\"}, \"id\": 2}\r\n{\"return\": {}, \"id\": 1}\r\n");
    let out = outputs(&mut s);
    assert_eq!(reply_of(&out[0]), (b, &Ok(json!({"name": "vm"}))));
    assert_eq!(reply_of(&out[1]), (a, &Ok(json!({}))));
    assert_eq!(s.outstanding(), 0);
}

#[test]
fn oob_is_enabled_only_when_requested_and_offered() {
    for (request, greeting, expect) in [
        (true, GREETING_PLAIN, false),
        (false, GREETING_OOB, false),
        (true, GREETING_OOB, true),
    ] {
        let mut s = Session::new(config(request));
        s.receive(greeting);
        let cap = sent(&mut s);
        let v: Value = serde_json::from_str(&cap[0]).unwrap();
        assert_eq!(v["execute"], "qmp_capabilities");
        if expect {
            assert_eq!(v["arguments"], json!({"enable": ["oob"]}));
        } else {
            assert!(v.get("arguments").is_none(), "{cap:?}");
        }
        s.receive(&ret(&wire_id(&cap[0]), json!({})));
        assert_eq!(s.oob_enabled(), expect);
    }
}

#[test]
fn unknown_capabilities_are_kept_but_not_enabled() {
    let mut s = Session::new(config(true));
    s.receive(b"{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, \"major\": 11}, \"package\": \"\", \"new\": 1}, \"capabilities\": [\"oob\", \"future-cap\"], \"extra\": {}}}\r\n");
    let g = s.greeting().unwrap();
    assert_eq!(g.capabilities, ["oob", "future-cap"]);
    assert!(sent(&mut s)[0].contains("\"enable\":[\"oob\"]}"));
}

#[test]
fn refused_negotiation_closes_and_fails_queued_commands() {
    let mut s = Session::new(config(false));
    let q = s.execute("query-version", &()).unwrap();
    s.receive(GREETING_PLAIN);
    sent(&mut s);
    s.receive(&err("\"t\"", "GenericError"));
    assert_eq!(s.state(), State::Closed);
    let out = outputs(&mut s);
    let refused = CloseReason::NegotiationRefused(qmp_proto::QmpError {
        class: ErrorClass::GenericError,
        desc: "boom".into(),
    });
    assert_eq!(out[0], Output::Greeting(s.greeting().unwrap().clone()));
    assert_eq!(
        out[1],
        Output::Reply {
            id: q,
            result: Err(CommandError::Closed {
                reason: refused.clone(),
                sent: false
            })
        }
    );
    assert_eq!(out[2], Output::Closed(refused));
    assert_eq!(out.len(), 3);
    assert!(s.poll_transmit().is_none());
    assert!(matches!(
        s.execute("query-version", &()),
        Err(SubmitError::Closed)
    ));
}

#[test]
fn undecodable_negotiation_reply_closes() {
    let mut s = Session::new(config(false));
    s.receive(GREETING_PLAIN);
    sent(&mut s);
    s.receive(b"{\"return\": {\"x\": inf}, \"id\": \"t\"}\r\n");
    let out = outputs(&mut s);
    assert!(matches!(
        out.last(),
        Some(Output::Closed(CloseReason::NegotiationUndecodable(
            DecodeError::Malformed { .. }
        )))
    ));
    assert_eq!(s.state(), State::Closed);
}

#[test]
fn second_greeting_is_a_warning() {
    let mut s = ready(false, GREETING_PLAIN);
    s.receive(GREETING_OOB);
    assert!(matches!(
        &outputs(&mut s)[..],
        [Output::Warning(Warning::UnexpectedGreeting(g))] if g.has_capability("oob")
    ));
    assert_eq!(s.state(), State::Ready);
    assert!(!s.oob_enabled());
}

#[test]
fn close_fails_everything_locally() {
    let mut s = ready(false, GREETING_PLAIN);
    let a = s.execute("stop", &()).unwrap();
    s.close();
    assert_eq!(
        outputs(&mut s),
        [
            Output::Reply {
                id: a,
                result: Err(CommandError::Closed {
                    reason: CloseReason::Local,
                    sent: false
                })
            },
            Output::Closed(CloseReason::Local)
        ]
    );
    s.close();
    s.receive_eof();
    assert!(
        outputs(&mut s).is_empty(),
        "closing twice says nothing more"
    );
}

// ---- exec-oob ----------------------------------------------------------------------------------

#[test]
fn exec_oob_is_refused_at_submit_without_oob() {
    // Not requested.
    let mut s = Session::new(config(false));
    assert!(matches!(
        s.execute_oob("yank", &()),
        Err(SubmitError::OobNotNegotiated)
    ));
    // Requested, but not offered: refused as soon as the greeting says so.
    let mut s = Session::new(config(true));
    s.receive(GREETING_PLAIN);
    assert!(matches!(
        s.execute_oob("yank", &()),
        Err(SubmitError::OobNotNegotiated)
    ));
    answer_negotiation(&mut s);
    assert!(matches!(
        s.execute_oob("yank", &()),
        Err(SubmitError::OobNotNegotiated)
    ));
    assert_eq!(s.outstanding(), 0);
}

#[test]
fn exec_oob_queued_before_greeting_fails_when_server_lacks_oob() {
    let mut s = Session::new(config(true));
    let y = s.execute_oob("yank", &()).unwrap();
    let q = s.execute("query-version", &()).unwrap();
    s.receive(GREETING_PLAIN);
    answer_negotiation(&mut s);
    let out = outputs(&mut s);
    assert_eq!(out[1], Output::Ready);
    assert_eq!(
        out[2],
        Output::Reply {
            id: y,
            result: Err(CommandError::OobNotNegotiated)
        }
    );
    let lines = sent(&mut s);
    assert_eq!(lines, ["{\"execute\":\"query-version\",\"id\":2}\n"]);
    assert_eq!(s.outstanding(), 1);
    let _ = q;
}

#[test]
fn exec_oob_with_oob_goes_first() {
    let mut s = Session::new(config(true));
    s.execute("query-version", &()).unwrap();
    s.execute_oob("query-yank", &()).unwrap();
    s.receive(GREETING_OOB);
    answer_negotiation(&mut s);
    assert_eq!(
        sent(&mut s),
        [
            "{\"exec-oob\":\"query-yank\",\"id\":2}\n",
            "{\"execute\":\"query-version\",\"id\":1}\n"
        ]
    );
}

// ---- ids and matching --------------------------------------------------------------------------

#[test]
fn ids_are_unique_and_replies_match_out_of_order() {
    let mut s = ready(false, GREETING_PLAIN);
    let ids: Vec<CommandId> = (0..50)
        .map(|i| s.execute("echo", &json!({ "n": i })).unwrap())
        .collect();
    let lines = sent(&mut s);
    let wire: Vec<String> = lines.iter().map(|l| wire_id(l)).collect();
    let unique: std::collections::HashSet<&String> = wire.iter().collect();
    assert_eq!(unique.len(), 50);
    assert!(wire.iter().all(|w| w.parse::<u64>().is_ok()), "{wire:?}");
    let unique: std::collections::HashSet<&CommandId> = ids.iter().collect();
    assert_eq!(unique.len(), 50);
    // Answer in reverse order; each reply carries its command's n.
    for (i, w) in wire.iter().enumerate().rev() {
        s.receive(&ret(w, json!({ "n": i })));
    }
    let out = outputs(&mut s);
    assert_eq!(out.len(), 50);
    for o in &out {
        let (id, result) = reply_of(o);
        let i = ids.iter().position(|x| *x == id).unwrap();
        assert_eq!(result, &Ok(json!({ "n": i })));
    }
}

#[test]
fn random_negotiation_id_differs_between_sessions() {
    let a = Session::new(Config::default());
    let b = Session::new(Config::default());
    assert_eq!(a.negotiation_id().len(), 12);
    assert!(a.negotiation_id().bytes().all(|c| c.is_ascii_lowercase()));
    // 26^12 ids: two sessions colliding would be a 1-in-10^16 event.
    assert_ne!(a.negotiation_id(), b.negotiation_id());
    let s = Session::new(Config {
        negotiation_id: Some("a b\"é".into()),
        ..Config::default()
    });
    assert_eq!(s.negotiation_id(), "a_b__");
}

#[test]
fn error_replies_keep_known_and_unknown_classes() {
    let mut s = ready(false, GREETING_PLAIN);
    let a = s.execute("no-such-command", &()).unwrap();
    let b = s.execute("guest-x", &()).unwrap();
    sent(&mut s);
    s.receive(b"{\"id\": 1, \"error\": {\"class\": \"CommandNotFound\", \"desc\": \"The command no-such-command has not been found\"}}\r\n");
    s.receive(&err("2", "QgaCommandFailed"));
    let out = outputs(&mut s);
    let (id, r) = reply_of(&out[0]);
    assert_eq!(id, a);
    match r {
        Err(CommandError::Qmp(e)) => {
            assert_eq!(e.class, ErrorClass::CommandNotFound);
            assert!(e.desc.contains("no-such-command"));
        }
        other => panic!("{other:?}"),
    }
    let (id, r) = reply_of(&out[1]);
    assert_eq!(id, b);
    assert!(
        matches!(r, Err(CommandError::Qmp(e)) if e.class == ErrorClass::Other("QgaCommandFailed".into()))
    );
    assert!(!r.as_ref().unwrap_err().is_disconnected());
}

#[test]
fn foreign_and_missing_ids_are_reported_not_fatal() {
    let mut s = ready(false, GREETING_PLAIN);
    let a = s.execute("query-version", &()).unwrap();
    sent(&mut s);
    for foreign in [
        &b"{\"return\": {}, \"id\": \"old-conn-1\"}\r\n"[..],
        b"{\"return\": {}, \"id\": \"1\"}\r\n",
        b"{\"return\": {}, \"id\": 1.0}\r\n",
        b"{\"return\": {}, \"id\": 0}\r\n",
        b"{\"return\": {}, \"id\": \"t\"}\r\n",
        b"{\"return\": {}, \"id\": 7}\r\n",
        b"{\"return\": {}, \"id\": {\"nested\": [1, 2.5, null, true]}}\r\n",
    ] {
        s.receive(foreign);
        let out = outputs(&mut s);
        assert!(
            matches!(
                &out[..],
                [Output::Warning(Warning::UnmatchedReply { id: Some(_) })]
            ),
            "{out:?}"
        );
    }
    s.receive(b"{\"return\": {}}\r\n");
    assert_eq!(
        outputs(&mut s),
        [Output::Warning(Warning::UnmatchedReply { id: None })]
    );
    s.receive(b"{\"error\": {\"class\": \"GenericError\", \"desc\": \"JSON parse error, stray '\\u0001'\"}}\r\n");
    assert!(matches!(
        &outputs(&mut s)[..],
        [Output::Warning(Warning::ErrorWithoutId(e))] if e.desc.contains("stray")
    ));
    assert_eq!(s.stats().unmatched_replies, 8);
    assert_eq!(
        s.stats().stale_replies,
        0,
        "after negotiation nothing is stale"
    );
    assert_eq!(s.stats().errors_without_id, 1);
    assert_eq!((s.state(), s.outstanding()), (State::Ready, 1));
    s.receive(&ret("1", json!({})));
    assert_eq!(reply_of(&outputs(&mut s)[0]).0, a);
}

#[test]
fn reply_for_a_command_not_yet_sent_is_not_its_answer() {
    // A stale reply carries the id of a command that is still queued whenever an earlier
    // connection used the same small integers. It must not answer it, and must be reported.
    let mut s = Session::new(config(false));
    s.execute("query-version", &()).unwrap();
    s.receive(GREETING_PLAIN);
    s.receive(&ret("1", json!({})));
    s.receive(b"{\"return\": {\"x\": inf}, \"id\": 1}\r\n");
    let out = outputs(&mut s);
    assert!(
        matches!(
            &out[1..],
            [
                Output::Warning(Warning::UnmatchedReply { id: Some(_) }),
                Output::Warning(Warning::Decode(DecodeError::Malformed { .. }))
            ]
        ),
        "{out:?}"
    );
    assert_eq!(s.outstanding(), 1);
    assert_eq!(s.stats().stale_replies, 1);
}

#[test]
fn every_reply_before_the_negotiation_reply_is_stale() {
    // docs/PROTOCOL.md rule 5: an earlier connection's command that was still running replies on
    // this connection, before the greeting or during negotiation, and always before the reply to
    // our `qmp_capabilities`. Whatever its id, it answers nothing here, not even a command queued
    // with the same number; after the negotiation reply, plain integer ids match.
    let mut s = Session::new(config(false));
    let a = s.execute("query-version", &()).unwrap();
    assert_eq!(a.number(), 1);
    s.receive(&ret("1", json!("stale before the greeting")));
    s.receive(GREETING_PLAIN);
    assert_eq!(
        sent(&mut s),
        ["{\"execute\":\"qmp_capabilities\",\"id\":\"t\"}\n"]
    );
    for stale in ["1", "2", "\"t1\"", "\"x\""] {
        s.receive(&ret(stale, json!({})));
    }
    s.receive(&err("1", "GenericError"));
    assert_eq!(s.state(), State::Negotiating);
    assert_eq!(s.stats().stale_replies, 6);
    assert_eq!(s.stats().unmatched_replies, 6);
    s.receive(&ret("\"t\"", json!({})));
    assert_eq!(s.state(), State::Ready);
    assert_eq!(sent(&mut s), ["{\"execute\":\"query-version\",\"id\":1}\n"]);
    s.receive(&ret("1", json!({"qemu": 1})));
    let out = outputs(&mut s);
    let stale = out
        .iter()
        .filter(|o| matches!(o, Output::Warning(Warning::UnmatchedReply { .. })))
        .count();
    assert_eq!(stale, 6, "{out:?}");
    assert_eq!(reply_of(out.last().unwrap()), (a, &Ok(json!({"qemu": 1}))));
    assert_eq!(s.stats().stale_replies, 6);
    // Stale replies are expected, not the reason a connect failed.
    let mut s = Session::new(config(false));
    s.receive(GREETING_PLAIN);
    s.receive(&ret("5", json!({})));
    s.receive_eof();
    assert_eq!(
        s.close_reason().unwrap().to_string(),
        "the connection to QEMU closed before negotiation completed"
    );
}

// ---- abandon and outstanding -------------------------------------------------------------------

#[test]
fn abandoned_commands_are_not_answered_and_late_replies_vanish() {
    let mut s = ready(false, GREETING_PLAIN);
    let a = s.execute("slow", &()).unwrap();
    let b = s.execute("slow-too", &()).unwrap();
    assert_eq!(s.outstanding(), 2);
    assert_eq!(sent(&mut s).len(), 2);
    let c = s.execute("queued", &()).unwrap();
    let d = s.execute("queued-too", &()).unwrap();
    assert_eq!(s.outstanding(), 4);

    assert!(s.abandon(a));
    assert!(!s.abandon(a), "abandoning twice");
    assert!(s.abandon(c), "a queued command");
    assert_eq!(s.outstanding(), 2);
    assert_eq!(
        sent(&mut s),
        ["{\"execute\":\"queued-too\",\"id\":4}\n"],
        "an abandoned queued command is never sent"
    );
    // Late replies to abandoned commands are discarded quietly, a good one or an undecodable one.
    s.receive(&ret("1", json!({"late": true})));
    assert!(outputs(&mut s).is_empty());
    assert!(s.abandon(b));
    s.receive(b"{\"return\": {\"x\": inf}, \"id\": 2}\r\n");
    assert!(outputs(&mut s).is_empty());
    assert_eq!(s.stats().discarded_replies, 2);
    assert_eq!(s.outstanding(), 1);
    assert!(!s.abandon(a), "answered ids are no longer outstanding");
    s.receive_eof();
    let out = outputs(&mut s);
    assert_eq!(
        out,
        [
            Output::Reply {
                id: d,
                result: Err(CommandError::Closed {
                    reason: eof(),
                    sent: true
                })
            },
            Output::Closed(eof())
        ]
    );
}

#[test]
fn abandoned_command_still_counts_against_the_in_flight_limit() {
    let mut s = ready(true, GREETING_OOB);
    let ids: Vec<CommandId> = (0..9).map(|_| s.execute("x", &()).unwrap()).collect();
    assert_eq!(sent(&mut s).len(), 8);
    assert!(s.abandon(ids[0]));
    assert!(
        sent(&mut s).is_empty(),
        "QEMU still holds the abandoned one"
    );
    s.receive(&ret("1", json!({})));
    assert_eq!(sent(&mut s).len(), 1);
}

// ---- end of stream -----------------------------------------------------------------------------

#[test]
fn eof_delivers_complete_messages_then_fails_pending_and_reports_the_fragment() {
    let mut s = ready(false, GREETING_PLAIN);
    let a = s.execute("a", &()).unwrap();
    let b = s.execute("b", &()).unwrap();
    sent(&mut s);
    let c = s.execute("c", &()).unwrap();
    assert_eq!(s.poll_transmit().unwrap().id, c);
    let queued = s.execute_with("d", &(), with_fds(1));
    let d = queued.unwrap();
    let mut tail = event("STOP");
    tail.extend_from_slice(&ret("1", json!(1)));
    tail.extend_from_slice(b"{\"return\": {\"partial\": [1, 2");
    s.receive(&tail);
    s.receive_eof();
    assert_eq!(s.state(), State::Closed);
    let out = outputs(&mut s);
    assert!(matches!(&out[0], Output::Event(e) if e.name == "STOP"));
    assert_eq!(reply_of(&out[1]), (a, &Ok(json!(1))));
    assert!(matches!(
        &out[2],
        Output::Warning(Warning::Decode(DecodeError::Truncated { len: 28, .. }))
    ));
    for (o, id) in out[3..6].iter().zip([b, c, d]) {
        let (got, r) = reply_of(o);
        assert_eq!(got, id);
        assert!(r.as_ref().unwrap_err().is_disconnected());
    }
    assert_eq!(
        out[6],
        Output::Closed(CloseReason::Disconnected(Disconnect {
            error: None,
            truncated: Some(28),
            ..Disconnect::default()
        }))
    );
    assert_eq!(out.len(), 7);
    assert_eq!(s.outstanding(), 0);
    s.receive(&ret("2", json!({})));
    s.receive_eof();
    assert!(outputs(&mut s).is_empty());
    assert!(matches!(s.execute("x", &()), Err(SubmitError::Closed)));
}

#[test]
fn eof_before_greeting_fails_queued_commands() {
    let mut s = Session::new(config(false));
    let a = s.execute("x", &()).unwrap();
    s.receive(b"{\"QMP\": {\"vers");
    s.receive_eof();
    let out = outputs(&mut s);
    assert!(matches!(
        &out[0],
        Output::Warning(Warning::Decode(DecodeError::Truncated { .. }))
    ));
    assert_eq!(
        out[1],
        Output::Reply {
            id: a,
            result: Err(CommandError::Closed {
                reason: CloseReason::Disconnected(Disconnect {
                    error: None,
                    truncated: Some(14),
                    handshake: Some(Handshake::AwaitingGreeting),
                    last_problem: None,
                }),
                sent: false
            })
        }
    );
    assert!(matches!(
        out[2],
        Output::Closed(CloseReason::Disconnected(_))
    ));
}

// ---- undecodable replies ----------------------------------------------------------------------

#[test]
fn undecodable_reply_fails_only_its_command() {
    let limits = Limits {
        max_message_size: 200,
        max_depth: 10,
        ..Limits::default()
    };
    let mut s = ready_with(limits);
    let ids: Vec<CommandId> = (0..6).map(|_| s.execute("x", &()).unwrap()).collect();
    sent(&mut s);
    let big = format!("{{\"return\": \"{}\", \"id\": 1}}\r\n", "z".repeat(300));
    let deep = format!(
        "{{\"id\": 2, \"return\": {}1{}}}\r\n",
        "[".repeat(20),
        "]".repeat(20)
    );
    let stream = [
        big.as_bytes(),
        deep.as_bytes(),
        b"{\"return\": {\"x\": nan}, \"id\": 3}\r\n",
        b"{\"return\": \"\xff\", \"id\": 4}\r\n",
        b"{\"id\": 5, \"neither\": 1}\r\n",
        b"{\"return\": \"big\", \"id\": 6}\r\n",
    ]
    .concat();
    // In 7-byte pieces: the large reply is never held whole.
    for c in stream.chunks(7) {
        s.receive(c);
        assert!(s.buffered() <= 200);
    }
    let mut out = outputs(&mut s);
    // The large reply's id comes last: the limit is reported when crossed, without an id, and
    // its command fails when the id is found at the end of the skip.
    assert_eq!(
        out.remove(0),
        Output::Warning(Warning::Decode(DecodeError::TooLarge {
            len: 201,
            limit: 200,
            id: None
        }))
    );
    let err = |i: usize| match reply_of(&out[i]) {
        (id, Err(CommandError::Undecodable(e))) if id == ids[i] => e.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        err(0),
        DecodeError::TooLarge {
            len: big.len() - 2,
            limit: 200,
            id: Some(json!(1))
        }
    );
    assert!(matches!(err(1), DecodeError::TooDeep { limit: 10, .. }));
    assert!(matches!(err(2), DecodeError::Malformed { .. }));
    assert!(matches!(err(3), DecodeError::Malformed { .. }));
    assert!(matches!(err(4), DecodeError::NotQmp { .. }));
    assert_eq!(reply_of(&out[5]), (ids[5], &Ok(json!("big"))));
    assert_eq!(s.outstanding(), 0);
    assert_eq!(s.stats().decode_errors, 5);
}

#[test]
fn undecodable_bytes_without_an_owner_are_warnings() {
    let mut s = ready(false, GREETING_PLAIN);
    let a = s.execute("x", &()).unwrap();
    sent(&mut s);
    s.receive(b"garbage 123 [1] \"s\" {\"return\": inf}\r\n{\"foo\": 1}\r\n");
    s.receive(&ret("1", json!(true)));
    let out = outputs(&mut s);
    assert!(
        matches!(
            &out[..],
            [
                Output::Warning(Warning::Decode(DecodeError::Garbage { len: 20 })),
                Output::Warning(Warning::Decode(DecodeError::Malformed { id: None, .. })),
                Output::Warning(Warning::Decode(DecodeError::NotQmp { id: None, .. })),
                Output::Reply { .. },
            ]
        ),
        "{out:?}"
    );
    assert_eq!(reply_of(&out[3]), (a, &Ok(json!(true))));
}

// ---- events ------------------------------------------------------------------------------------

#[test]
fn events_arrive_anywhere_with_or_without_data() {
    let mut s = Session::new(config(true));
    s.receive(&event("VSERPORT_CHANGE"));
    s.receive(GREETING_OOB);
    sent(&mut s);
    s.receive(b"{\"timestamp\": {\"seconds\": 5, \"microseconds\": 6}, \"event\": \"RESET\", \"data\": {\"guest\": false, \"reason\": \"host-qmp-system-reset\"}, \"new-member\": 1}\r\n");
    s.receive(b"{\"event\": \"NO_TIMESTAMP\"}\r\n");
    s.receive(&ret("\"t\"", json!({})));
    let out = outputs(&mut s);
    assert!(
        matches!(&out[0], Output::Event(e) if e.name == "VSERPORT_CHANGE" && e.data.is_empty())
    );
    assert!(matches!(&out[1], Output::Greeting(_)));
    let Output::Event(reset) = &out[2] else {
        panic!("{out:?}")
    };
    assert_eq!(reset.timestamp.unwrap().seconds, 5);
    assert_eq!(reset.timestamp.unwrap().microseconds, 6);
    let typed = reset.decode::<Reset>().unwrap().unwrap();
    assert_eq!(typed.reason, "host-qmp-system-reset");
    assert!(matches!(&out[3], Output::Event(e) if e.timestamp.is_none()));
    assert_eq!(out[4], Output::Ready);
    assert_eq!(s.stats().events, 3);
}

// ---- encoding and typed commands ---------------------------------------------------------------

#[test]
fn commands_are_compact_one_per_line() {
    let mut s = ready(true, GREETING_OOB);
    s.execute(
        "blockdev-add",
        &json!({"driver": "null-co", "node-name": "n\n0", "size": 1048576}),
    )
    .unwrap();
    s.execute("stop", &json!({})).unwrap();
    s.execute_oob("yank", &json!({"instances": []})).unwrap();
    for line in sent(&mut s) {
        assert!(line.ends_with('\n'));
        assert_eq!(line.matches('\n').count(), 1, "{line}");
        assert!(!line.contains(": ") && !line.contains(", "), "{line}");
        let v: Value = serde_json::from_str(&line).unwrap();
        assert!(v["id"].is_u64(), "{line}");
        if v["execute"] == "stop" {
            assert!(v.get("arguments").is_none(), "empty arguments are left out");
        }
    }
}

#[test]
fn typed_commands_encode_and_decode() {
    let mut s = ready(false, GREETING_PLAIN);
    let q = s.submit(&QueryStatus).unwrap();
    let h = s.submit(&HumanMonitorCommand::new("info status")).unwrap();
    assert_eq!(
        sent(&mut s),
        [
            "{\"execute\":\"query-status\",\"id\":1}\n",
            "{\"execute\":\"human-monitor-command\",\"arguments\":{\"command-line\":\"info status\"},\"id\":2}\n"
        ]
    );
    s.receive(b"{\"return\": {\"status\": \"running\", \"singlestep\": false, \"running\": true}, \"id\": 1}\r\n");
    s.receive(b"{\"return\": \"VM status: running\\r\\n\", \"id\": 2}\r\n");
    let out = outputs(&mut s);
    let (id, r) = reply_of(&out[0]);
    assert_eq!(id, q);
    assert_eq!(
        <QueryStatus as qmp_proto::Command>::decode_output(r.clone().unwrap()).unwrap(),
        StatusInfo {
            running: true,
            status: "running".into()
        }
    );
    let (id, r) = reply_of(&out[1]);
    assert_eq!(id, h);
    assert_eq!(
        <HumanMonitorCommand as qmp_proto::Command>::decode_output(r.clone().unwrap()).unwrap(),
        "VM status: running\r\n"
    );
}

#[test]
fn refused_submissions_queue_nothing() {
    let mut s = ready(false, GREETING_PLAIN);
    // U+FFFF draws an id-less error from QEMU, so the command would never be answered.
    assert!(matches!(
        s.execute("x", &json!({"s": "a\u{FFFF}"})),
        Err(SubmitError::Encode(EncodeError::Noncharacter {
            character: '\u{FFFF}'
        }))
    ));
    assert!(matches!(
        s.execute("x", &json!([1])),
        Err(SubmitError::Encode(EncodeError::ArgumentsNotObject))
    ));
    let mut deep = json!(1);
    for _ in 0..1024 {
        deep = json!([deep]);
    }
    assert!(matches!(
        s.execute("x", &json!({ "d": deep })),
        Err(SubmitError::Encode(EncodeError::TooDeep {
            limit: 1024,
            ..
        }))
    ));
    assert!(matches!(
        s.execute_with("getfd", &(), with_fds(17)),
        Err(SubmitError::TooManyFds { count: 17 })
    ));
    assert_eq!(s.outstanding(), 0);
    assert!(s.poll_transmit().is_none());
    // Refusals use up no id.
    s.execute("ok", &()).unwrap();
    assert_eq!(wire_id(&sent(&mut s)[0]), "1");
}

#[test]
fn command_size_limit_is_checked_before_sending() {
    let mut s = Session::new(Config {
        limits: Limits {
            max_command_size: 100,
            ..Limits::default()
        },
        ..config(false)
    });
    assert!(matches!(
        s.execute("x", &json!({"s": "y".repeat(100)})),
        Err(SubmitError::Encode(EncodeError::TooLarge {
            limit: 100,
            ..
        }))
    ));
    // qmp_capabilities is exempt from the command limits.
    s.receive(GREETING_PLAIN);
    assert_eq!(sent(&mut s).len(), 1);
}

// ---- flow control ------------------------------------------------------------------------------

#[test]
fn one_fd_bearing_command_in_flight() {
    let mut s = ready(false, GREETING_PLAIN);
    s.execute_with("getfd", &json!({"fdname": "a"}), with_fds(1))
        .unwrap();
    s.execute_with("getfd", &json!({"fdname": "b"}), with_fds(1))
        .unwrap();
    s.execute("query-version", &()).unwrap();
    let t = s.poll_transmit().unwrap();
    assert_eq!(t.fds.len(), 1);
    assert!(s.poll_transmit().is_none(), "the second batch waits");
    s.receive(&ret("1", json!({})));
    let t = s.poll_transmit().unwrap();
    assert_eq!(
        (t.fds.len(), wire_id(std::str::from_utf8(&t.bytes).unwrap())),
        (1, "2".into())
    );
    let t = s.poll_transmit().unwrap();
    assert_eq!(t.fds.len(), 0);
}

#[test]
fn without_oob_any_number_of_commands_is_sent() {
    let mut s = ready(false, GREETING_PLAIN);
    for _ in 0..20 {
        s.execute("x", &()).unwrap();
    }
    assert_eq!(sent(&mut s).len(), 20);
}

// ---- fault cases (docs/PROTOCOL.md, "Fault cases the tests replay") ------------------------------------------

#[test]
fn fault_size_limit_plus_one_then_a_good_reply() {
    const LIMIT: usize = 1 << 20;
    let mut s = ready_with(Limits {
        max_message_size: LIMIT,
        ..Limits::default()
    });
    let (a, b, c) = (
        s.execute("big", &()).unwrap(),
        s.execute("at-limit", &()).unwrap(),
        s.execute("small", &()).unwrap(),
    );
    sent(&mut s);
    let message = |id: &str, len: usize| {
        let head = "{\"return\": \"";
        let tail = format!("\", \"id\": {id}}}");
        format!("{head}{}{tail}", "x".repeat(len - head.len() - tail.len())).into_bytes()
    };
    let mut stream = message("1", LIMIT + 1);
    stream.extend_from_slice(b"\r\n");
    stream.extend_from_slice(&message("2", LIMIT));
    stream.extend_from_slice(b"\r\n");
    stream.extend_from_slice(&ret("3", json!("ok")));
    for c in stream.chunks(4096) {
        s.receive(c);
        assert!(s.buffered() <= LIMIT);
    }
    let mut out = outputs(&mut s);
    // Reported when byte LIMIT + 1 arrives; its command fails when its id (written last, as QEMU
    // writes returns) has been read.
    assert_eq!(
        out.remove(0),
        Output::Warning(Warning::Decode(DecodeError::TooLarge {
            len: LIMIT + 1,
            limit: LIMIT,
            id: None
        }))
    );
    assert_eq!(
        out[0],
        Output::Reply {
            id: a,
            result: Err(CommandError::Undecodable(DecodeError::TooLarge {
                len: LIMIT + 1,
                limit: LIMIT,
                id: Some(json!(1))
            }))
        }
    );
    assert!(
        matches!(reply_of(&out[1]), (id, Ok(Value::String(v))) if id == b && v.len() == LIMIT - 23)
    );
    assert_eq!(reply_of(&out[2]), (c, &Ok(json!("ok"))));
}

#[test]
fn a_limit_is_reported_at_the_byte_that_crosses_it() {
    let limits = Limits {
        max_message_size: 128,
        max_depth: 8,
        ..Limits::default()
    };
    let mut s = ready_with(limits);
    let (first, last) = (s.execute("a", &()).unwrap(), s.execute("b", &()).unwrap());
    sent(&mut s);
    // Id before the limit: the command fails at byte 129, while the message goes on (maybe
    // forever: nothing else of it is ever sent here).
    let head = format!("{{\"id\": 1, \"return\": \"{}", "x".repeat(128));
    s.receive(&head.as_bytes()[..128]);
    assert_eq!(outputs(&mut s), []);
    s.receive(&head.as_bytes()[128..129]);
    assert_eq!(
        outputs(&mut s),
        [Output::Reply {
            id: first,
            result: Err(CommandError::Undecodable(DecodeError::TooLarge {
                len: 129,
                limit: 128,
                id: Some(json!(1))
            }))
        }]
    );
    // Id after the limit (QEMU's order for returns): a warning at once, the failure at the id.
    s.receive(&head.as_bytes()[129..]);
    s.receive(b"\"}\r\n{\"return\": [[[[[[[[[");
    assert_eq!(
        outputs(&mut s),
        [Output::Warning(Warning::Decode(DecodeError::TooDeep {
            limit: 8,
            id: None
        }))]
    );
    s.receive(b"]]]]]]]]], \"id\": 2}\r\n");
    assert_eq!(
        outputs(&mut s),
        [Output::Reply {
            id: last,
            result: Err(CommandError::Undecodable(DecodeError::TooDeep {
                limit: 8,
                id: Some(json!(2))
            }))
        }]
    );
    // Counted once each.
    assert_eq!(s.stats().decode_errors, 2);
}

#[test]
fn a_reply_that_never_closes_fails_its_command_and_the_next_reply_is_matched() {
    let mut s = ready(false, GREETING_PLAIN);
    let (broken, good) = (s.execute("a", &()).unwrap(), s.execute("b", &()).unwrap());
    sent(&mut s);
    // A reply cut off mid-value, then QEMU's next line: it starts a message, so the cut one ends.
    s.receive(b"{\"id\": 1, \"return\": {\"a\": [[1, \"x\r\n");
    assert_eq!(outputs(&mut s), []);
    s.receive(&ret("2", json!(2)));
    assert_eq!(
        outputs(&mut s),
        [
            Output::Reply {
                id: broken,
                result: Err(CommandError::Undecodable(DecodeError::Unterminated {
                    len: 35,
                    id: Some(json!(1))
                }))
            },
            Output::Reply {
                id: good,
                result: Ok(json!(2))
            }
        ]
    );
}

#[test]
fn a_late_id_of_no_command_is_not_reported_twice() {
    let limits = Limits {
        max_message_size: 128,
        ..Limits::default()
    };
    let mut s = ready_with(limits);
    // A stale reply over the limit, id last: one warning, when the limit is crossed.
    s.receive(
        format!(
            "{{\"return\": \"{}\", \"id\": \"old1\"}}\r\n",
            "x".repeat(200)
        )
        .as_bytes(),
    );
    assert_eq!(
        outputs(&mut s),
        [Output::Warning(Warning::Decode(DecodeError::TooLarge {
            len: 129,
            limit: 128,
            id: None
        }))]
    );
    assert_eq!(s.stats().decode_errors, 1);
}

#[test]
fn fault_replies_nested_206_1024_and_100000_deep() {
    let mut s = ready(false, GREETING_PLAIN);
    let ids: Vec<CommandId> = (0..4)
        .map(|_| s.execute("query-named-block-nodes", &()).unwrap())
        .collect();
    sent(&mut s);
    let nested = |id: &str, depth: usize| {
        // The object is depth 1; `depth - 1` arrays inside it.
        format!(
            "{{\"return\": {}{}, \"id\": {id}}}\r\n",
            "[".repeat(depth - 1),
            "]".repeat(depth - 1)
        )
    };
    s.receive(nested("1", 206).as_bytes());
    s.receive(nested("2", 1024).as_bytes());
    // 100,000 deep, fed in pieces, then a good reply: a typed error with the id recovered.
    let deep = nested("3", 100_000);
    for c in deep.as_bytes().chunks(4096) {
        s.receive(c);
    }
    s.receive(&ret("4", json!({})));
    let mut out = outputs(&mut s);
    assert!(matches!(reply_of(&out[0]), (id, Ok(Value::Array(_))) if id == ids[0]));
    assert!(matches!(reply_of(&out[1]), (id, Ok(Value::Array(_))) if id == ids[1]));
    // Reported at the 4097th level, before its id (written last) has been read.
    assert_eq!(
        out.remove(2),
        Output::Warning(Warning::Decode(DecodeError::TooDeep {
            limit: 4096,
            id: None
        }))
    );
    assert_eq!(
        out[2],
        Output::Reply {
            id: ids[2],
            result: Err(CommandError::Undecodable(DecodeError::TooDeep {
                limit: 4096,
                id: Some(json!(3))
            }))
        }
    );
    assert_eq!(reply_of(&out[3]), (ids[3], &Ok(json!({}))));
    // Values this deep are dropped recursively by serde_json; keep that off this thread's stack.
    std::mem::forget(out);
}

/// The start of qsd-pretty.server.bin: greeting and replies as QEMU writes them with pretty=on.
const PRETTY: &[u8] = b"{\r\n    \"QMP\": {\r\n        \"version\": {\r\n            \"qemu\": {\r\n                \"micro\": 2,\r\n                \"minor\": 0,\r\n                \"major\": 10\r\n            },\r\n            \"package\": \"Debian 1:10.0.2+ds-2+deb13u1~bpo12+1\"\r\n        },\r\n        \"capabilities\": [\r\n            \"oob\"\r\n        ]\r\n    }\r\n}\r\n";

#[test]
fn fault_pretty_one_byte_at_a_time() {
    let mut s = Session::new(config(false));
    let q = s.execute("query-status", &()).unwrap();
    let (head, tail) = PRETTY.split_at(PRETTY.len() - 3);
    for b in head.chunks(1) {
        s.receive(b);
        assert!(s.poll_output().is_none());
    }
    for b in tail.chunks(1) {
        s.receive(b);
    }
    assert!(matches!(s.poll_output(), Some(Output::Greeting(g)) if g.version.major == 10));
    assert_eq!(
        sent(&mut s),
        ["{\"execute\":\"qmp_capabilities\",\"id\":\"t\"}\n"]
    );
    let replies = b"{\r\n    \"return\": {\r\n    },\r\n    \"id\": \"t\"\r\n}\r\n{\r\n    \"timestamp\": {\r\n        \"seconds\": 1,\r\n        \"microseconds\": 2\r\n    },\r\n    \"event\": \"STOP\"\r\n}\r\n";
    for b in replies.chunks(1) {
        s.receive(b);
    }
    assert_eq!(sent(&mut s).len(), 1);
    for b in b"{\r\n    \"return\": {\r\n        \"status\": \"paused\",\r\n        \"running\": false\r\n    },\r\n    \"id\": 1\r\n}\r\n".chunks(1) {
        s.receive(b);
    }
    let out = outputs(&mut s);
    assert_eq!(out[0], Output::Ready);
    assert!(matches!(&out[1], Output::Event(e) if e.name == "STOP"));
    assert_eq!(
        reply_of(&out[2]),
        (q, &Ok(json!({"status": "paused", "running": false})))
    );
    assert_eq!(s.buffered(), 0);
}

#[test]
fn fault_inf_fails_its_command_alone() {
    let mut s = ready(false, GREETING_PLAIN);
    let a = s.execute("x", &json!({"n": 1e300})).unwrap();
    let b = s.execute("y", &()).unwrap();
    sent(&mut s);
    s.receive(b"{\"return\": {\"x\": inf}, \"id\": 1}\r\n");
    s.receive(&ret("2", json!(2)));
    let out = outputs(&mut s);
    assert!(matches!(
        reply_of(&out[0]),
        (id, Err(CommandError::Undecodable(DecodeError::Malformed { .. }))) if id == a
    ));
    assert_eq!(reply_of(&out[1]), (b, &Ok(json!(2))));
    assert_eq!(s.state(), State::Ready);
}

#[test]
fn fault_stale_reply_right_after_the_greeting() {
    let mut s = Session::new(config(false));
    let a = s.execute("x", &()).unwrap();
    let mut input = GREETING_PLAIN.to_vec();
    input.extend_from_slice(b"{\"return\": {}, \"id\": \"old-conn-1\"}\r\n");
    s.receive(&input);
    assert_eq!(s.state(), State::Negotiating);
    answer_negotiation(&mut s);
    let out = outputs(&mut s);
    assert!(matches!(&out[0], Output::Greeting(_)));
    assert_eq!(
        out[1],
        Output::Warning(Warning::UnmatchedReply {
            id: Some(json!("old-conn-1"))
        })
    );
    assert_eq!(out[2], Output::Ready);
    assert_eq!(wire_id(&sent(&mut s)[0]), "1");
    assert_eq!(s.stats().stale_replies, 1);
    let _ = a;
}

#[test]
fn fault_events_before_greeting_and_before_negotiation_reply() {
    let mut s = Session::new(config(true));
    let mut input = event("VSERPORT_CHANGE");
    input.extend_from_slice(GREETING_OOB);
    s.receive(&input);
    let cap = wire_id(&sent(&mut s)[0]);
    let mut input = event("JOB_STATUS_CHANGE");
    input.extend_from_slice(&ret(&cap, json!({})));
    s.receive(&input);
    let names: Vec<String> = outputs(&mut s)
        .into_iter()
        .map(|o| match o {
            Output::Event(e) => e.name,
            Output::Greeting(_) => "greeting".into(),
            Output::Ready => "ready".into(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        names,
        ["VSERPORT_CHANGE", "greeting", "JOB_STATUS_CHANGE", "ready"]
    );
}

#[test]
fn fault_1026_id_less_errors_with_three_commands_pending() {
    let mut s = ready(false, GREETING_PLAIN);
    let ids: Vec<CommandId> = (0..3).map(|_| s.execute("x", &()).unwrap()).collect();
    sent(&mut s);
    let mut input = b"{\"error\": {\"class\": \"GenericError\", \"desc\": \"JSON nesting depth limit exceeded\"}}\r\n".to_vec();
    for _ in 0..1025 {
        input.extend_from_slice(
            b"{\"error\": {\"class\": \"GenericError\", \"desc\": \"JSON parse error, expecting value\"}}\r\n",
        );
    }
    s.receive(&input);
    assert_eq!(s.outstanding(), 3);
    let out = outputs(&mut s);
    assert_eq!(out.len(), 1026);
    assert!(out
        .iter()
        .all(|o| matches!(o, Output::Warning(Warning::ErrorWithoutId(e)) if e.class == ErrorClass::GenericError)));
    assert_eq!(s.stats().errors_without_id, 1026);
    for w in ["3", "1", "2"] {
        s.receive(&ret(w, json!(w)));
    }
    let got: Vec<CommandId> = outputs(&mut s).iter().map(|o| reply_of(o).0).collect();
    assert_eq!(got, [ids[2], ids[0], ids[1]]);
}

#[test]
fn fault_quit_shutdown_reply_then_reset() {
    let mut s = ready(false, GREETING_PLAIN);
    let q = s.submit(&Quit).unwrap();
    sent(&mut s);
    let mut input = b"{\"timestamp\": {\"seconds\": 1795674316, \"microseconds\": 793698}, \"event\": \"SHUTDOWN\", \"data\": {\"guest\": false, \"reason\": \"host-qmp-quit\"}}\r\n".to_vec();
    input.extend_from_slice(&ret("1", json!({})));
    s.receive(&input);
    s.read_failed(&std::io::ErrorKind::ConnectionReset.into());
    let out = outputs(&mut s);
    let Output::Event(e) = &out[0] else {
        panic!("{out:?}")
    };
    let shutdown = e.decode::<Shutdown>().unwrap().unwrap();
    assert_eq!(shutdown.reason, "host-qmp-quit");
    assert_eq!(reply_of(&out[1]), (q, &Ok(json!({}))));
    assert_eq!(out[2], Output::Closed(CloseReason::Quit));
    assert_eq!(out.len(), 3, "a clean close: no command failed");
    assert_eq!(s.close_reason(), Some(&CloseReason::Quit));
}

#[test]
fn fault_ten_thousand_unread_events_while_commands_run() {
    let mut s = ready(false, GREETING_PLAIN);
    let ids: Vec<CommandId> = (0..10).map(|_| s.execute("x", &()).unwrap()).collect();
    sent(&mut s);
    let mut input = Vec::new();
    for i in 0..10_000 {
        input.extend_from_slice(
            format!("{{\"timestamp\": {{\"seconds\": {i}, \"microseconds\": 0}}, \"event\": \"E\", \"data\": {{\"n\": {i}}}}}\r\n")
                .as_bytes(),
        );
        if i % 1000 == 999 {
            input.extend_from_slice(&ret(&format!("{}", i / 1000 + 1), json!(i)));
        }
    }
    for c in input.chunks(4096) {
        s.receive(c);
    }
    assert_eq!(s.outstanding(), 0);
    let out = outputs(&mut s);
    assert_eq!(out.len(), 10_010);
    let mut next_event = 0;
    let mut next_reply = 0;
    for o in &out {
        match o {
            Output::Event(e) => {
                assert_eq!(e.data["n"], next_event);
                next_event += 1;
            }
            Output::Reply { id, result } => {
                assert_eq!(*id, ids[next_reply]);
                assert_eq!(result, &Ok(json!(next_event - 1)), "after its 1000 events");
                next_reply += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(s.stats().events, 10_000);
}

#[test]
fn fault_nine_in_band_with_oob_while_one_blocks_then_exec_oob() {
    let mut s = ready(true, GREETING_OOB);
    assert!(s.oob_enabled());
    let inband: Vec<CommandId> = (0..9)
        .map(|i| s.execute("blockdev-add", &json!({ "n": i })).unwrap())
        .collect();
    let lines = sent(&mut s);
    assert_eq!(lines.len(), 8, "at most 8 in-band commands in flight");
    let yank = s.execute_oob("yank", &json!({"instances": []})).unwrap();
    let t = s.poll_transmit().expect("exec-oob goes out at once");
    assert_eq!(t.id, yank);
    assert!(t.bytes.starts_with(b"{\"exec-oob\":\"yank\""));
    assert!(s.poll_transmit().is_none(), "the 9th in-band still waits");
    s.receive(&ret("10", json!({})));
    assert_eq!(reply_of(&outputs(&mut s)[0]).0, yank);
    assert!(s.poll_transmit().is_none());
    s.receive(&ret("1", json!({})));
    let t = s.poll_transmit().unwrap();
    assert_eq!(t.id, inband[8]);
    assert!(s.poll_transmit().is_none());
}

// ---- the end of a connection: quit, resets, failed writes ---------------------------------------

#[test]
fn quit_whose_reply_is_lost_succeeds_and_others_fail_as_quit() {
    let mut s = ready(false, GREETING_PLAIN);
    let slow = s.execute("slow", &()).unwrap();
    let q = s.execute("quit", &()).unwrap();
    sent(&mut s);
    let later = s.execute("query-status", &()).unwrap();
    s.receive_eof();
    let out = outputs(&mut s);
    assert_eq!(
        out[0],
        Output::Reply {
            id: slow,
            result: Err(CommandError::Closed {
                reason: CloseReason::Quit,
                sent: true
            })
        }
    );
    assert_eq!(reply_of(&out[1]), (q, &Ok(json!({}))));
    assert!(reply_of(&out[2]).1.as_ref().unwrap_err().is_disconnected());
    assert_eq!(out[3], Output::Closed(CloseReason::Quit));
    let _ = later;
}

#[test]
fn quit_queued_but_never_sent_makes_no_clean_close() {
    let mut s = Session::new(config(false));
    s.receive(b"garbage");
    let q = s.execute("quit", &()).unwrap();
    s.receive_eof();
    let out = outputs(&mut s);
    let reason = CloseReason::Disconnected(Disconnect {
        handshake: Some(Handshake::AwaitingGreeting),
        last_problem: Some(Box::new(Warning::Decode(DecodeError::Garbage { len: 7 }))),
        ..Disconnect::default()
    });
    assert_eq!(
        out[1],
        Output::Reply {
            id: q,
            result: Err(CommandError::Closed {
                reason: reason.clone(),
                sent: false
            })
        }
    );
    assert_eq!(
        reason.to_string(),
        "the connection to QEMU closed before the greeting (last problem seen: skipped 7 bytes outside any JSON object)"
    );
}

#[test]
fn a_reset_is_kept_in_the_close_reason() {
    let mut s = ready(false, GREETING_PLAIN);
    let a = s.execute("a", &()).unwrap();
    sent(&mut s);
    s.receive(b"{\"return\": {\"x\"");
    s.read_failed(&std::io::Error::new(
        std::io::ErrorKind::ConnectionReset,
        "reset by peer",
    ));
    let reason = CloseReason::Disconnected(Disconnect {
        error: Some(IoFailure {
            writing: false,
            kind: std::io::ErrorKind::ConnectionReset,
            message: "reset by peer".into(),
        }),
        truncated: Some(15),
        ..Disconnect::default()
    });
    assert_eq!(s.close_reason(), Some(&reason));
    let out = outputs(&mut s);
    assert_eq!(
        out[1],
        Output::Reply {
            id: a,
            result: Err(CommandError::Closed {
                reason: reason.clone(),
                sent: true
            })
        }
    );
    assert_eq!(
        reason.to_string(),
        "the connection to QEMU closed (reading failed: reset by peer; the last message was cut off after 15 bytes)"
    );
}

#[test]
fn a_failed_write_closes_at_once() {
    let mut s = ready(false, GREETING_PLAIN);
    let a = s.execute("a", &()).unwrap();
    let t = s.poll_transmit().unwrap();
    assert_eq!(t.id, a);
    s.write_failed(&std::io::ErrorKind::BrokenPipe.into());
    assert_eq!(s.state(), State::Closed);
    let out = outputs(&mut s);
    let (id, result) = reply_of(&out[0]);
    assert_eq!(id, a);
    let Err(CommandError::Closed {
        reason: CloseReason::Disconnected(d),
        sent: true,
    }) = result
    else {
        panic!("{result:?}")
    };
    assert!(d.error.as_ref().is_some_and(|e| e.writing));
    assert!(matches!(s.execute("x", &()), Err(SubmitError::Closed)));
}

#[test]
fn descriptors_travel_with_their_command_and_close_when_it_never_goes() {
    let mut s = ready(false, GREETING_PLAIN);
    let (fd, mut sent_end) = watched_fd();
    let options = ExecuteOptions {
        fds: vec![fd],
        ..ExecuteOptions::default()
    };
    let a = s
        .execute_with("getfd", &json!({"fdname": "a"}), options)
        .unwrap();
    let t = s.poll_transmit().unwrap();
    assert_eq!((t.id, t.fds.len()), (a, 1));
    assert!(!is_closed(&mut sent_end), "handed out, not closed");
    drop(t);
    assert!(is_closed(&mut sent_end));

    // Abandoned while queued behind the first fd command: its descriptor is closed at once.
    let (fd, mut abandoned_end) = watched_fd();
    let b = s
        .execute_with(
            "getfd",
            &json!({"fdname": "b"}),
            ExecuteOptions {
                fds: vec![fd],
                ..ExecuteOptions::default()
            },
        )
        .unwrap();
    assert!(s.poll_transmit().is_none(), "one fd command in flight");
    assert!(s.abandon(b));
    assert!(is_closed(&mut abandoned_end));

    // Queued when the session closes: closed with it.
    let (fd, mut closed_end) = watched_fd();
    s.execute_with(
        "getfd",
        &json!({"fdname": "c"}),
        ExecuteOptions {
            fds: vec![fd],
            ..ExecuteOptions::default()
        },
    )
    .unwrap();
    s.close();
    assert!(is_closed(&mut closed_end));
}

/// The id of each line sent, as JSON text.
fn ids(lines: &[String]) -> Vec<String> {
    lines.iter().map(|l| wire_id(l)).collect()
}

#[test]
fn one_command_at_a_time_always_sends_id_1() {
    // docs/PROTOCOL.md rule 5, "Ids are reused": the smallest id no command holds.
    let mut s = ready(false, GREETING_PLAIN);
    let mut numbers = Vec::new();
    for k in 0..12 {
        let id = s.execute("query-version", &()).unwrap();
        assert_eq!(
            sent(&mut s),
            ["{\"execute\":\"query-version\",\"id\":1}\n"],
            "command {k}"
        );
        s.receive(&ret("1", json!({ "k": k })));
        assert_eq!(
            outputs(&mut s),
            [Output::Reply {
                id,
                result: Ok(json!({ "k": k }))
            }]
        );
        numbers.push(id.number());
    }
    // The caller's ids stay unique: only the wire id is reused.
    assert_eq!(numbers, (1..=12).collect::<Vec<u64>>());
}

#[test]
fn concurrent_commands_hold_distinct_ids_and_a_freed_id_is_reused_smallest_first() {
    let mut s = ready(false, GREETING_PLAIN);
    let a = s.execute("a", &()).unwrap();
    let b = s.execute("b", &()).unwrap();
    let c = s.execute("c", &()).unwrap();
    assert_eq!(ids(&sent(&mut s)), ["1", "2", "3"]);
    s.receive(&ret("2", json!("b")));
    s.receive(&ret("1", json!("a")));
    let d = s.execute("d", &()).unwrap();
    let e = s.execute("e", &()).unwrap();
    let f = s.execute("f", &()).unwrap();
    assert_eq!(ids(&sent(&mut s)), ["1", "2", "4"]);
    for (wire, v) in [("3", "c"), ("1", "d"), ("4", "f"), ("2", "e")] {
        s.receive(&ret(wire, json!(v)));
    }
    let got: Vec<(CommandId, Value)> = outputs(&mut s)
        .iter()
        .map(|o| {
            let (id, r) = reply_of(o);
            (id, r.clone().unwrap())
        })
        .collect();
    assert_eq!(
        got,
        [
            (b, json!("b")),
            (a, json!("a")),
            (c, json!("c")),
            (d, json!("d")),
            (f, json!("f")),
            (e, json!("e")),
        ]
    );
    assert_eq!(s.outstanding(), 0);
}

#[test]
fn an_abandoned_command_holds_its_id_until_its_late_reply() {
    let mut s = ready(false, GREETING_PLAIN);
    let slow = s.execute("slow", &()).unwrap();
    assert_eq!(ids(&sent(&mut s)), ["1"]);
    assert!(s.abandon(slow));
    // Id 1 may still be answered: the next command must not take it.
    let next = s.execute("next", &()).unwrap();
    assert_eq!(ids(&sent(&mut s)), ["2"]);
    s.receive(&ret("1", json!("late")));
    assert!(outputs(&mut s).is_empty(), "the late reply is discarded");
    assert_eq!(s.stats().discarded_replies, 1);
    s.receive(&ret("2", json!("mine")));
    assert_eq!(
        outputs(&mut s),
        [Output::Reply {
            id: next,
            result: Ok(json!("mine"))
        }]
    );
    // The late reply freed id 1.
    s.execute("again", &()).unwrap();
    assert_eq!(ids(&sent(&mut s)), ["1"]);
}

#[test]
fn a_finished_command_id_names_nothing_when_its_wire_id_is_reused() {
    let mut s = ready(false, GREETING_PLAIN);
    let old = s.execute("old", &()).unwrap();
    sent(&mut s);
    s.receive(&ret("1", json!("old")));
    outputs(&mut s);
    let new = s.execute("new", &()).unwrap();
    assert_eq!(ids(&sent(&mut s)), ["1"]);
    assert_ne!(old, new);
    // A caller that gives up on a command already answered does not touch the new one.
    assert!(!s.abandon(old));
    s.receive(&ret("1", json!("new")));
    assert_eq!(
        outputs(&mut s),
        [Output::Reply {
            id: new,
            result: Ok(json!("new"))
        }]
    );
}

#[test]
fn a_queued_command_abandoned_unsent_frees_its_id() {
    let mut s = Session::new(config(false));
    let first = s.execute("first", &()).unwrap();
    let second = s.execute("second", &()).unwrap();
    assert!(s.abandon(first));
    s.receive(GREETING_PLAIN);
    answer_negotiation(&mut s);
    outputs(&mut s);
    // `second` was given id 2 when submitted; id 1 is free again for the next one.
    s.execute("third", &()).unwrap();
    assert_eq!(ids(&sent(&mut s)), ["2", "1"]);
    s.receive(&ret("2", json!(2)));
    assert_eq!(
        outputs(&mut s),
        [Output::Reply {
            id: second,
            result: Ok(json!(2))
        }]
    );
}
