//! Leader/follower reads on a socket (issue 15): a waiting caller reads its own reply, hands the
//! role on, and the reader thread keeps reading when no caller does. Each test stresses one way
//! the role could be lost or two readers could meet: events with no call, many concurrent
//! callers, a leader that times out, a disconnect or a close while one leads.

// Test helpers outside #[test] functions unwrap too.
#![allow(clippy::unwrap_used)]

use qmp_blocking::Client;
use qmp_testkit::{negotiated, Emulator, FaultPeer, Qemu, QemuOptions, Step};
use serde_json::json;
use std::sync::mpsc;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(10);

/// Greets and accepts negotiation (id `t0`), then runs `rest`.
fn peer(rest: Vec<Step>) -> FaultPeer {
    let mut script = negotiated("t0");
    script.extend(rest);
    FaultPeer::start(script)
}

fn connect(p: &FaultPeer) -> Client {
    Client::builder()
        .config(qmp_blocking::Config {
            negotiation_id: Some("t0".into()),
            ..qmp_blocking::Config::default()
        })
        .timeout(T)
        .connect_timeout(T)
        .connect_unix(p.path())
        .unwrap()
}

fn reply(id: u64, value: u64) -> Step {
    Step::Send(format!("{{\"return\": {{\"v\": {value}}}, \"id\": {id}}}\r\n").into_bytes())
}

fn event(name: &str) -> Step {
    Step::Send(
        format!(
            "{{\"event\": \"{name}\", \"data\": {{}}, \"timestamp\": {{\"seconds\": 1, \"microseconds\": 2}}}}\r\n"
        )
        .into_bytes(),
    )
}

/// Waits (at most `T`) until `client` has `n` commands in flight.
fn until_pending(client: &Client, n: usize) {
    let until = Instant::now() + T;
    while client.pending() < n && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(client.pending(), n);
}

#[test]
fn events_keep_flowing_with_no_call_pending() {
    // Calls lead and leave the role free; events sent later, with no call and nobody waiting
    // on the client, must still be read (a handler sees them) and more calls still work.
    let p = peer(vec![
        // One call at a time: every command carries id 1 (ids are reused).
        Step::ReadLines(2),
        reply(1, 1),
        Step::ReadLines(3),
        reply(1, 2),
        Step::Sleep(Duration::from_millis(100)),
        event("FIRST"),
        Step::Sleep(Duration::from_millis(100)),
        event("SECOND"),
        Step::ReadLines(4),
        reply(1, 3),
        Step::ReadLines(5),
    ]);
    let c = connect(&p);
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    c.on_any_event(move |e| tx.lock().unwrap().send(e.name.clone()).unwrap());
    assert_eq!(c.execute("one", ()).unwrap(), json!({"v": 1}));
    assert_eq!(c.execute("two", ()).unwrap(), json!({"v": 2}));
    assert_eq!(rx.recv_timeout(T).unwrap(), "FIRST");
    assert_eq!(rx.recv_timeout(T).unwrap(), "SECOND");
    assert_eq!(c.queued_events(), 2);
    assert_eq!(c.execute("three", ()).unwrap(), json!({"v": 3}));
    c.close();
    p.join();
}

#[test]
fn concurrent_callers_each_get_their_own_reply() {
    // Real QEMU: each thread sets a value only it uses and reads it back, over and over; a
    // reply routed to the wrong caller (or lost between leaders) shows as a wrong value or a
    // timeout.
    let Some(q) = Qemu::start(
        QemuOptions::new(Emulator::StorageDaemon),
        "concurrent_callers_each_get_their_own_reply",
    ) else {
        return;
    };
    let c = Client::builder()
        .timeout(T)
        .connect_unix(q.socket())
        .unwrap();
    const THREADS: u64 = 8;
    const CALLS: u64 = 150;
    for t in 0..THREADS {
        c.execute(
            "object-add",
            json!({"qom-type": "iothread", "id": format!("t{t}")}),
        )
        .unwrap();
    }
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let c = &c;
            s.spawn(move || {
                let path = format!("/objects/t{t}");
                for k in 0..CALLS {
                    let value = t * 1_000_000 + k;
                    c.execute(
                        "qom-set",
                        json!({"path": path, "property": "poll-max-ns", "value": value}),
                    )
                    .unwrap();
                    let got = c
                        .execute("qom-get", json!({"path": path, "property": "poll-max-ns"}))
                        .unwrap();
                    assert_eq!(got, json!(value), "thread {t}, call {k}");
                }
            });
        }
    });
    assert_eq!(c.pending(), 0);
    assert!(c.take_warnings().is_empty(), "{:?}", c.take_warnings());
}

#[test]
fn a_leader_that_times_out_hands_on_and_a_later_reply_reaches_its_caller() {
    // `slow` leads (its thread's previous call just returned, so the role is free), times out,
    // and must hand the role to `waiting`, whose reply comes long after.
    let p = peer(vec![
        Step::ReadLines(2),
        reply(1, 1),
        Step::ReadLines(4),
        Step::Sleep(Duration::from_millis(800)),
        // The late reply to `slow` (id 1, reused after `warm`; discarded) and then the one
        // `waiting` (id 2) waits for; `after` reuses id 1, freed by the late reply.
        reply(1, 2),
        reply(2, 3),
        Step::ReadLines(5),
        reply(1, 4),
        Step::ReadLines(6),
    ]);
    let c = connect(&p);
    std::thread::scope(|s| {
        let slow = s.spawn(|| {
            assert_eq!(c.execute("warm", ()).unwrap(), json!({"v": 1}));
            c.execute_timeout("slow", (), Duration::from_millis(200))
        });
        until_pending(&c, 1);
        let waiting = s.spawn(|| c.execute("waiting", ()));
        let e = slow.join().unwrap().unwrap_err();
        assert!(e.is_timeout(), "{e:?}");
        assert_eq!(waiting.join().unwrap().unwrap(), json!({"v": 3}));
    });
    assert_eq!(c.execute("after", ()).unwrap(), json!({"v": 4}));
    c.close();
    p.join();
}

#[test]
fn a_disconnect_while_leading_wakes_every_waiter() {
    // One caller leads, two follow; the peer closes. Each must get Disconnected, not its
    // (10 s) timeout.
    let p = peer(vec![
        Step::ReadLines(2),
        reply(1, 1),
        Step::ReadLines(5),
        Step::Sleep(Duration::from_millis(100)),
        Step::Close,
    ]);
    let c = connect(&p);
    std::thread::scope(|s| {
        let leader = s.spawn(|| {
            assert_eq!(c.execute("warm", ()).unwrap(), json!({"v": 1}));
            c.execute("lead", ())
        });
        until_pending(&c, 1);
        let followers: Vec<_> = (0..2)
            .map(|_| s.spawn(|| c.execute("follow", ())))
            .collect();
        for r in std::iter::once(leader).chain(followers) {
            let e = r.join().unwrap().unwrap_err();
            assert!(e.is_disconnected(), "{e:?}");
        }
    });
    assert!(!c.is_connected());
    p.join();
}

#[test]
fn close_while_a_caller_leads_ends_the_call_and_the_reader() {
    // The leader blocks in its read with no deadline; close must wake it with an error, and
    // return (close joins the reader thread).
    let p = peer(vec![
        Step::ReadLines(2),
        reply(1, 1),
        Step::ReadLines(3),
        Step::Sleep(Duration::from_secs(5)),
    ]);
    let c = Client::builder()
        .config(qmp_blocking::Config {
            negotiation_id: Some("t0".into()),
            ..qmp_blocking::Config::default()
        })
        .no_timeout()
        .connect_unix(p.path())
        .unwrap();
    std::thread::scope(|s| {
        let leader = s.spawn(|| {
            assert_eq!(c.execute("warm", ()).unwrap(), json!({"v": 1}));
            c.execute("never", ())
        });
        until_pending(&c, 1);
        std::thread::sleep(Duration::from_millis(50));
        c.close();
        let e = leader.join().unwrap().unwrap_err();
        assert!(!e.is_timeout(), "{e:?}");
        assert!(e.to_string().contains("'never'"), "{e}");
    });
    assert!(!c.is_connected());
}
