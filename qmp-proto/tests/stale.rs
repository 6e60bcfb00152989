//! docs/PROTOCOL.md rule 5, against real QEMU: a command of an earlier connection that is still
//! running when its client goes away answers on the monitor's next connection, and always before
//! the reply to that connection's `qmp_capabilities`. So a session that takes every reply before its
//! negotiation reply as stale can number its commands 1, 2, 3, … even when the stale reply carries
//! one of those very numbers.
//!
//! The earlier connection runs `blockdev-add` of an NBD node whose server is a local TCP listener
//! that accepts and never answers (a "black hole"): QEMU's NBD client waits for the server's
//! greeting, so the command blocks QEMU's in-band dispatcher. The old client disconnects; a new
//! session connects, with commands queued before the greeting, and negotiates. Its
//! `qmp_capabilities` is not answered while the black hole holds the dispatcher. Then the black
//! hole closes: the stale error reply (id `1`, the old client's) arrives, then the negotiation
//! reply, then the new session's commands get their own replies.

// Helpers outside #[test] functions unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used)]

use qmp_proto::{Config, Output, Session, State, Warning};
use qmp_testkit::{Emulator, Qemu, QemuOptions};
use serde_json::{json, Value};
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(20);

/// Reads raw lines until one contains `needle`; returns everything read.
fn read_until(s: &mut UnixStream, needle: &str) -> String {
    let deadline = Instant::now() + TIMEOUT;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains(needle) {
        assert!(Instant::now() < deadline, "no {needle:?} in {got:?}");
        match s.read(&mut buf) {
            Ok(0) => panic!("EOF before {needle:?}: {:?}", String::from_utf8_lossy(&got)),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("read: {e}"),
        }
    }
    String::from_utf8(got).unwrap()
}

/// Accepts the connection QEMU's NBD client makes to the black hole.
fn accept(listener: &TcpListener) -> TcpStream {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match listener.accept() {
            Ok((s, _)) => return s,
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("QEMU never connected to the black hole: {e}"),
        }
    }
}

/// Drives `session` over `stream`: writes every transmit, feeds what arrives, collects outputs,
/// until `done` holds for the outputs so far or `wait` passes. Returns whether `done` held.
fn pump(
    stream: &mut UnixStream,
    session: &mut Session,
    outputs: &mut Vec<Output>,
    wait: Duration,
    done: impl Fn(&[Output]) -> bool,
) -> bool {
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 65536];
    loop {
        while let Some(t) = session.poll_transmit() {
            stream.write_all(&t.bytes).unwrap();
        }
        outputs.extend(std::iter::from_fn(|| session.poll_output()));
        if done(outputs) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        match stream.read(&mut buf) {
            Ok(0) => session.receive_eof(),
            Ok(n) => session.receive(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => session.read_failed(&e),
        }
    }
}

fn stale_reply_comes_before_the_negotiation_reply(emulator: Emulator, test: &str) {
    let Some(q) = Qemu::start(QemuOptions::new(emulator), test) else {
        return;
    };
    let black_hole = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = black_hole.local_addr().unwrap().port();

    // The earlier connection: negotiate, start the blocking command with id 1, go away.
    let mut old = UnixStream::connect(q.socket()).unwrap();
    old.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    read_until(&mut old, "\"QMP\"");
    old.write_all(b"{\"execute\":\"qmp_capabilities\",\"id\":\"old\"}\n")
        .unwrap();
    read_until(&mut old, "\"id\": \"old\"");
    let add = json!({"execute": "blockdev-add", "id": 1, "arguments": {
        "driver": "nbd", "node-name": "black-hole",
        "server": {"type": "inet", "host": "127.0.0.1", "port": port.to_string()}}});
    old.write_all(format!("{add}\n").as_bytes()).unwrap();
    // QEMU is inside the command once its NBD client has connected.
    let held = accept(&black_hole);
    drop(old);

    // The new connection, with commands queued before the greeting.
    let mut stream = UnixStream::connect(q.socket()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut s = Session::new(Config::default());
    let commands = [
        s.execute("query-version", &()).unwrap(),
        s.execute("query-block-jobs", &()).unwrap(),
        s.execute("query-version", &()).unwrap(),
    ];
    assert_eq!(commands.map(|c| c.number()), [1, 2, 3]);
    let mut out = Vec::new();
    let greeted = pump(&mut stream, &mut s, &mut out, TIMEOUT, |o| {
        o.iter().any(|o| matches!(o, Output::Greeting(_)))
    });
    assert!(greeted, "no greeting: {out:?}");
    // qmp_capabilities is on the wire; the dispatcher is still in the old blockdev-add.
    let answered = pump(
        &mut stream,
        &mut s,
        &mut out,
        Duration::from_millis(500),
        |o| o.len() > 1,
    );
    assert!(!answered, "answered while the old command runs: {out:?}");
    assert_eq!(s.state(), State::Negotiating);

    // The black hole closes: the old command fails and replies here, then ours are answered.
    drop(held);
    drop(black_hole);
    let replies = |o: &[Output]| {
        o.iter()
            .filter(|o| matches!(o, Output::Reply { .. }))
            .count()
    };
    let all = pump(&mut stream, &mut s, &mut out, TIMEOUT, |o| replies(o) == 3);
    assert!(all, "{out:?}");

    let stale_at = out
        .iter()
        .position(|o| matches!(o, Output::Warning(Warning::UnmatchedReply { id: Some(id) }) if *id == json!(1)))
        .unwrap_or_else(|| panic!("no stale reply: {out:?}"));
    let ready_at = out.iter().position(|o| matches!(o, Output::Ready)).unwrap();
    assert!(stale_at < ready_at, "{out:?}");
    assert_eq!(s.stats().stale_replies, 1, "{out:?}");
    assert_eq!(s.stats().unmatched_replies, 1, "{out:?}");
    let results: Vec<(u64, Value)> = out
        .iter()
        .filter_map(|o| match o {
            Output::Reply { id, result } => Some((id.number(), result.clone().unwrap())),
            _ => None,
        })
        .collect();
    assert_eq!(results.len(), 3);
    for (n, v) in results {
        match n {
            1 | 3 => assert_eq!(v["qemu"]["major"], 10, "{n}: {v}"),
            2 => assert_eq!(v, json!([]), "{n}: {v}"),
            _ => panic!("reply to {n}"),
        }
    }
    // The node was never added: the stale reply was the old command's failure.
    let n = s.execute("query-named-block-nodes", &()).unwrap();
    let done = pump(
        &mut stream,
        &mut s,
        &mut out,
        TIMEOUT,
        |o| matches!(o.last(), Some(Output::Reply { id, .. }) if *id == n),
    );
    assert!(done, "{out:?}");
    let Some(Output::Reply {
        result: Ok(nodes), ..
    }) = out.last()
    else {
        panic!("{out:?}")
    };
    assert!(!nodes.to_string().contains("black-hole"), "{nodes}");
}

#[test]
fn stale_reply_before_negotiation_reply_qsd() {
    stale_reply_comes_before_the_negotiation_reply(
        Emulator::StorageDaemon,
        "stale_reply_before_negotiation_reply_qsd",
    );
}

#[test]
fn stale_reply_before_negotiation_reply_system() {
    stale_reply_comes_before_the_negotiation_reply(
        Emulator::System,
        "stale_reply_before_negotiation_reply_system",
    );
}
