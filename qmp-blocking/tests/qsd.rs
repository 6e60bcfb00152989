//! Against a real qemu-storage-daemon: negotiation, commands, errors, block-job events, threads.

// Test helpers outside #[test] functions unwrap too.
#![allow(clippy::unwrap_used)]

use qmp_blocking::{Client, Error, ErrorClass};
use qmp_qapi::qmp::QueryVersion;
use qmp_testkit::{Emulator, Qemu, QemuOptions};
use serde_json::json;
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

fn qsd(test: &str) -> Option<Qemu> {
    Qemu::start(QemuOptions::new(Emulator::StorageDaemon), test)
}

fn connect(q: &Qemu) -> Client {
    Client::builder()
        .timeout(T)
        .connect_unix(q.socket())
        .unwrap()
}

#[test]
fn negotiates_and_reports_the_greeting() {
    let Some(q) = qsd("negotiates_and_reports_the_greeting") else {
        return;
    };
    let c = connect(&q);
    let g = c.greeting();
    assert_eq!(g.version.major, 10);
    assert!(g.has_capability("oob"));
    assert!(!c.oob_enabled(), "oob is only requested on demand");
    assert!(c.is_connected());
    assert!(c.transport().starts_with("unix:"));
}

#[test]
fn query_version_untyped_and_typed() {
    let Some(q) = qsd("query_version_untyped_and_typed") else {
        return;
    };
    let c = connect(&q);
    let v = c.execute("query-version", ()).unwrap();
    assert_eq!(v["qemu"]["major"], 10);
    let typed = c.run(&QueryVersion).unwrap();
    assert_eq!(typed.qemu.major, c.greeting().version.major as i64);
    assert_eq!(typed.qemu.minor, c.greeting().version.minor as i64);
    assert_eq!(c.query("version").unwrap(), v);
}

#[test]
fn an_error_reply_names_class_desc_and_command() {
    let Some(q) = qsd("an_error_reply_names_class_desc_and_command") else {
        return;
    };
    let c = connect(&q);
    let e = c.execute("no-such-command", ()).unwrap_err();
    match &e {
        Error::Qmp { command, error } => {
            assert_eq!(command, "no-such-command");
            assert_eq!(error.class, ErrorClass::CommandNotFound);
            assert!(error.desc.contains("no-such-command"), "{}", error.desc);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        e.to_string()
            .starts_with("'no-such-command' failed: CommandNotFound"),
        "{e}"
    );
    let e = c
        .execute("blockdev-del", json!({"node-name": "missing"}))
        .unwrap_err();
    assert_eq!(e.qmp_error().unwrap().class, ErrorClass::GenericError);
    // The session goes on.
    c.execute("query-version", ()).unwrap();
}

#[test]
fn block_job_events_are_waited_for_by_name_and_predicate() {
    let Some(q) = qsd("block_job_events_are_waited_for_by_name_and_predicate") else {
        return;
    };
    let c = connect(&q);
    for n in ["n0", "n1"] {
        c.execute(
            "blockdev-add",
            json!({"driver": "null-co", "node-name": n, "size": 1048576}),
        )
        .unwrap();
    }
    c.execute(
        "blockdev-backup",
        json!({"job-id": "j0", "device": "n0", "target": "n1", "sync": "full", "auto-dismiss": false}),
    )
    .unwrap();
    let concluded = c
        .wait_event(
            "JOB_STATUS_CHANGE",
            |e| e.data["id"] == "j0" && e.data["status"] == "concluded",
            T,
        )
        .unwrap();
    assert_eq!(concluded.data["status"], "concluded");
    // Events other than the one waited for stay queued, in order.
    let before: Vec<_> = c.take_events();
    let statuses: Vec<String> = before
        .iter()
        .filter(|e| e.name == "JOB_STATUS_CHANGE")
        .map(|e| e.data["status"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        statuses.first().map(String::as_str),
        Some("created"),
        "{statuses:?}"
    );
    assert!(statuses.contains(&"running".to_string()), "{statuses:?}");
    assert!(
        before.iter().any(|e| e.name == "BLOCK_JOB_COMPLETED"),
        "{before:?}"
    );
    // auto-dismiss off: the job stays until job-dismiss, which ends it with status null.
    c.execute("job-dismiss", json!({"id": "j0"})).unwrap();
    let null = c
        .wait_event("JOB_STATUS_CHANGE", |e| e.data["status"] == "null", T)
        .unwrap();
    assert_eq!(null.data["id"], "j0");
    assert!(c
        .wait_event("NO_SUCH_EVENT", |_| true, Duration::from_millis(50))
        .unwrap_err()
        .is_timeout());
}

#[test]
fn eight_threads_each_get_their_own_replies() {
    let Some(q) = qsd("eight_threads_each_get_their_own_replies") else {
        return;
    };
    let c = connect(&q);
    std::thread::scope(|s| {
        for t in 0..8 {
            let c = &c;
            s.spawn(move || {
                for k in 0..25 {
                    // The error text carries the argument: a reply routed to the wrong caller
                    // would show someone else's node name.
                    let node = format!("t{t}-{k}");
                    let e = c
                        .execute("blockdev-del", json!({"node-name": node}))
                        .unwrap_err();
                    let desc = &e.qmp_error().unwrap().desc;
                    assert!(desc.contains(&format!("'{node}'")), "{node}: {desc}");
                    let v = c.execute("query-version", ()).unwrap();
                    assert_eq!(v["qemu"]["major"], 10);
                }
            });
        }
    });
    assert_eq!(c.pending(), 0);
}

#[test]
fn oob_is_negotiated_on_request_and_exec_oob_works() {
    let Some(q) = qsd("oob_is_negotiated_on_request_and_exec_oob_works") else {
        return;
    };
    let c = Client::builder()
        .oob(true)
        .timeout(T)
        .connect_unix(q.socket())
        .unwrap();
    assert!(c.oob_enabled());
    // qemu-storage-daemon has no OOB-capable command: QEMU's answer proves exec-oob went out
    // with an id and came back to us (qemu-system's query-yank succeeds: tests/system.rs).
    let e = c.execute_oob("query-version", ()).unwrap_err();
    assert!(e.qmp_error().unwrap().desc.contains("OOB"), "{e}");
    // Without oob, exec-oob is refused before sending.
    let plain = connect_again(&q, c);
    let e = plain.execute_oob("query-yank", ()).unwrap_err();
    assert!(matches!(e, Error::Refused { .. }), "{e:?}");
}

fn connect_again(q: &Qemu, old: Client) -> Client {
    old.close();
    connect(q)
}

#[test]
fn a_timed_out_command_is_abandoned_and_the_connection_goes_on() {
    let Some(q) = qsd("a_timed_out_command_is_abandoned_and_the_connection_goes_on") else {
        return;
    };
    let c = connect(&q);
    // Stop QEMU so the reply cannot come in time, then let it go on.
    let pid = q.pid().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap()
        .success());
    let e = c
        .execute_timeout("query-version", (), Duration::from_millis(100))
        .unwrap_err();
    assert!(e.is_timeout(), "{e:?}");
    assert!(e.to_string().contains("'query-version'"), "{e}");
    assert!(std::process::Command::new("kill")
        .args(["-CONT", &pid])
        .status()
        .unwrap()
        .success());
    // The late reply is discarded; the next call gets its own reply. (Wire ids are reused, but
    // the abandoned command holds id 1 until its late reply: the next call is sent with id 2. Had
    // it reused id 1, it would get query-version's late reply.)
    let e = c
        .execute("blockdev-del", json!({"node-name": "after"}))
        .unwrap_err();
    assert!(e.qmp_error().unwrap().desc.contains("'after'"));
    assert_eq!(c.stats().session.discarded_replies, 1);
    // Id 1 is free again once the late reply came.
    let e = c
        .execute("blockdev-del", json!({"node-name": "later"}))
        .unwrap_err();
    assert!(e.qmp_error().unwrap().desc.contains("'later'"));
}

#[test]
fn twelve_threads_with_oob_stay_within_eight_in_flight() {
    let Some(q) = qsd("twelve_threads_with_oob_stay_within_eight_in_flight") else {
        return;
    };
    let c = Client::builder()
        .oob(true)
        .timeout(T)
        .connect_unix(q.socket())
        .unwrap();
    assert!(c.oob_enabled());
    // More callers than QEMU's 8-command queue: the session holds the rest back and the reader
    // thread sends them as replies come in.
    std::thread::scope(|s| {
        for t in 0..12 {
            let c = &c;
            s.spawn(move || {
                for k in 0..10 {
                    let node = format!("o{t}-{k}");
                    let e = c
                        .execute("blockdev-del", json!({"node-name": node}))
                        .unwrap_err();
                    assert!(e.qmp_error().unwrap().desc.contains(&format!("'{node}'")));
                }
            });
        }
    });
    assert_eq!(c.pending(), 0);
}

/// docs/PROTOCOL.md rule 5 through the client: an earlier connection's `blockdev-add` (id 1) of
/// an NBD node whose server accepts and never answers blocks QEMU's dispatcher; the client
/// connects meanwhile, and its connect completes once that command fails. The stale reply, which
/// carries id 1 like the client's first command, came before the negotiation reply and was
/// dropped; the client's commands get their own replies.
#[test]
fn a_stale_reply_from_an_earlier_connection_is_dropped() {
    use std::io::{BufRead, BufReader, Write};
    let Some(q) = qsd("a_stale_reply_from_an_earlier_connection_is_dropped") else {
        return;
    };
    let black_hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = black_hole.local_addr().unwrap().port();
    let mut old = std::os::unix::net::UnixStream::connect(q.socket()).unwrap();
    old.set_read_timeout(Some(T)).unwrap();
    let mut lines = BufReader::new(old.try_clone().unwrap());
    let mut line = String::new();
    lines.read_line(&mut line).unwrap(); // greeting
    old.write_all(b"{\"execute\":\"qmp_capabilities\",\"id\":\"old\"}\n")
        .unwrap();
    line.clear();
    lines.read_line(&mut line).unwrap();
    assert!(line.contains("\"return\""), "{line}");
    let add = json!({"execute": "blockdev-add", "id": 1, "arguments": {
        "driver": "nbd", "node-name": "black-hole",
        "server": {"type": "inet", "host": "127.0.0.1", "port": port.to_string()}}});
    old.write_all(format!("{add}\n").as_bytes()).unwrap();
    // QEMU is inside the command once its NBD client has connected.
    let (held, _) = black_hole.accept().unwrap();
    drop((old, lines));
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        drop((held, black_hole));
    });
    let c = connect(&q);
    release.join().unwrap();
    assert_eq!(c.stats().session.stale_replies, 1);
    assert_eq!(c.stats().session.unmatched_replies, 1);
    for _ in 0..3 {
        let v = c.execute("query-version", ()).unwrap();
        assert_eq!(v["qemu"]["major"], 10);
    }
    let nodes = c.execute("query-named-block-nodes", ()).unwrap();
    assert!(!nodes.to_string().contains("black-hole"), "{nodes}");
}
