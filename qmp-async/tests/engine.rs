//! The engine without a runtime: an in-memory transport, the driver and the calls polled by hand,
//! so every poll point is reached deterministically. Cancellation at each point, partial writes,
//! and many calls written in one go.

#![allow(clippy::unwrap_used)]

use futures::future::BoxFuture;
use futures::io::{AsyncRead, AsyncWrite};
use futures::task::noop_waker_ref;
use qmp_async::{ChildProcess, Client, Config, Error, Runtime, Transport};
use serde_json::{json, Value};

/// `query-status`, typed as qmp-qapi does (qmp-async's tests do not build the whole schema).
#[derive(serde::Serialize)]
struct QueryStatus;

#[derive(Debug, serde::Deserialize)]
struct StatusInfo {
    running: bool,
}

impl qmp_async::Command for QueryStatus {
    const NAME: &'static str = "query-status";
    type Output = StatusInfo;
}
use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

const GREETING: &[u8] = b"{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 2, \"minor\": 0, \"major\": 10}, \"package\": \"\"}, \"capabilities\": [\"oob\"]}}\r\n";

/// Both directions of a fake QEMU connection.
#[derive(Default)]
struct Wire {
    to_client: VecDeque<u8>,
    read_waker: Option<Waker>,
    /// Every write call's bytes, in order.
    writes: Vec<Vec<u8>>,
    /// At most this many bytes per write; 0 blocks writes (Pending).
    max_write: usize,
    write_waker: Option<Waker>,
}

#[derive(Clone)]
struct Peer(Arc<Mutex<Wire>>);

impl Peer {
    fn send(&self, bytes: &[u8]) {
        let mut w = self.0.lock().unwrap();
        w.to_client.extend(bytes);
        if let Some(waker) = w.read_waker.take() {
            waker.wake();
        }
    }

    /// A reply; `id` is a command number (`"1"`) or the negotiation id (`"t0"`).
    fn reply(&self, id: &str, value: Value) {
        let mut v = serde_json::to_vec(&json!({"return": value, "id": wire(id)})).unwrap();
        v.extend_from_slice(b"\r\n");
        self.send(&v);
    }

    fn set_max_write(&self, n: usize) {
        let mut w = self.0.lock().unwrap();
        w.max_write = n;
        if let Some(waker) = w.write_waker.take() {
            waker.wake();
        }
    }

    /// Everything the client wrote, as text.
    fn received(&self) -> String {
        let w = self.0.lock().unwrap();
        String::from_utf8(w.writes.concat()).unwrap()
    }

    fn write_calls(&self) -> usize {
        self.0.lock().unwrap().writes.len()
    }
}

impl AsyncRead for Peer {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut w = self.0.lock().unwrap();
        if w.to_client.is_empty() {
            w.read_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = buf.len().min(w.to_client.len());
        for (b, byte) in buf.iter_mut().zip(w.to_client.drain(..n)) {
            *b = byte;
        }
        Poll::Ready(Ok(n))
    }
}

impl AsyncWrite for Peer {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut w = self.0.lock().unwrap();
        let n = buf.len().min(w.max_write);
        if n == 0 {
            w.write_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        w.writes.push(buf[..n].to_vec());
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

thread_local! {
    /// What `Manual::spawn` was given on this thread: the driver, for the test to poll.
    static SPAWNED: RefCell<Vec<BoxFuture<'static, ()>>> = const { RefCell::new(Vec::new()) };
    /// How many timers `Manual::sleep` made on this thread.
    static TIMERS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    /// The longest timer `Manual::sleep` was asked for on this thread.
    static LONGEST: std::cell::Cell<Duration> = const { std::cell::Cell::new(Duration::ZERO) };
}

/// A runtime the test drives by hand: spawning keeps the future for the test to poll, and no
/// timer ever fires.
struct Manual;

impl Runtime for Manual {
    fn spawn(future: BoxFuture<'static, ()>) {
        SPAWNED.with(|s| s.borrow_mut().push(future));
    }

    fn sleep(duration: Duration) -> BoxFuture<'static, ()> {
        TIMERS.with(|t| t.set(t.get() + 1));
        LONGEST.with(|l| l.set(l.get().max(duration)));
        Box::pin(futures::future::pending())
    }

    fn connect_unix(_: &std::path::Path) -> BoxFuture<'static, io::Result<Transport>> {
        unreachable!("the tests bring their own transport")
    }

    fn connect_tcp(_: std::net::SocketAddr) -> BoxFuture<'static, io::Result<Transport>> {
        unreachable!("the tests bring their own transport")
    }

    fn accept_unix(_: &std::os::unix::net::UnixListener) -> BoxFuture<'_, io::Result<Transport>> {
        unreachable!("the tests bring their own transport")
    }

    fn spawn_process(_: std::process::Command) -> io::Result<(Transport, Box<dyn ChildProcess>)> {
        unreachable!("the tests bring their own transport")
    }
}

fn poll<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
    Pin::new(f).poll(&mut Context::from_waker(noop_waker_ref()))
}

/// A negotiated connection with ids `t1`, `t2`, ...; the driver is polled by hand.
fn connected() -> (Client<Manual>, BoxFuture<'static, ()>, Peer) {
    let peer = Peer(Arc::new(Mutex::new(Wire {
        max_write: usize::MAX,
        ..Wire::default()
    })));
    let config = Config {
        negotiation_id: Some("t0".into()),
        ..Config::default()
    };
    let transport = Transport::new(peer.clone(), peer.clone());
    let mut connect = Box::pin(
        Client::<Manual>::builder()
            .config(config)
            .connect_transport(transport),
    );
    assert!(poll(&mut connect).is_pending());
    let mut driver = SPAWNED
        .with(|s| s.borrow_mut().pop())
        .expect("driver spawned");
    peer.send(GREETING);
    assert!(poll(&mut driver).is_pending());
    assert_eq!(
        peer.received(),
        "{\"execute\":\"qmp_capabilities\",\"id\":\"t0\"}\n"
    );
    peer.reply("t0", json!({}));
    assert!(poll(&mut driver).is_pending());
    let Poll::Ready(Ok(client)) = poll(&mut connect) else {
        panic!("not connected")
    };
    peer.0.lock().unwrap().writes.clear();
    (client, driver, peer)
}

fn command(id: &str) -> String {
    format!("{{\"execute\":\"query-version\",\"id\":{}}}\n", wire(id))
}

/// The wire id for `id`: commands' are numbers, `qmp_capabilities`' is a string.
fn wire(id: &str) -> Value {
    id.parse::<u64>().map_or_else(|_| id.into(), Value::from)
}

#[test]
fn a_call_dropped_before_its_first_poll_is_never_sent() {
    let (client, mut driver, peer) = connected();
    let call = client.execute("query-version", ());
    assert_eq!(client.pending(), 1, "submitted when made");
    drop(call);
    assert_eq!(client.pending(), 0);
    assert_eq!(client.waiting(), 0);
    let mut next = client.execute("query-version", ());
    assert!(poll(&mut next).is_pending());
    // Never sent, so its id was freed at once: the next command reuses it.
    assert_eq!(
        peer.received(),
        command("1"),
        "the dropped one was never written"
    );
    peer.reply("1", json!({"n": 2}));
    assert!(poll(&mut driver).is_pending());
    assert_eq!(
        poll(&mut next).map(Result::unwrap),
        Poll::Ready(json!({"n": 2}))
    );
}

#[test]
fn a_call_dropped_on_the_wire_has_its_late_reply_discarded() {
    let (client, mut driver, peer) = connected();
    let mut call = client.execute("query-version", ());
    assert!(poll(&mut call).is_pending());
    assert_eq!(peer.received(), command("1"));
    drop(call);
    assert_eq!(client.waiting(), 0);
    let mut next = client.execute("query-version", ());
    assert!(poll(&mut next).is_pending());
    peer.reply("1", json!({"late": true}));
    peer.reply("2", json!({"n": 2}));
    assert!(poll(&mut driver).is_pending());
    assert_eq!(
        poll(&mut next).map(Result::unwrap),
        Poll::Ready(json!({"n": 2}))
    );
    assert_eq!(client.stats().session.discarded_replies, 1);
    assert!(client.take_warnings().is_empty());
    assert_eq!((client.pending(), client.waiting()), (0, 0));
}

#[test]
fn a_call_dropped_after_its_reply_arrived_leaves_nothing_behind() {
    let (client, mut driver, peer) = connected();
    let mut call = client.execute("query-version", ());
    assert!(poll(&mut call).is_pending());
    peer.reply("1", json!({}));
    assert!(poll(&mut driver).is_pending());
    assert_eq!(client.waiting(), 1, "the reply waits in its slot");
    drop(call);
    assert_eq!((client.pending(), client.waiting()), (0, 0));
    assert_eq!(client.stats().session.discarded_replies, 0);
}

#[test]
fn a_command_cut_short_by_the_socket_is_finished_by_the_driver_after_the_call_is_dropped() {
    let (client, mut driver, peer) = connected();
    peer.set_max_write(10);
    let args = json!({"node-name": "n"});
    let mut call = client.execute("blockdev-del", &args);
    assert!(poll(&mut call).is_pending());
    peer.set_max_write(0); // the socket is full
    assert!(poll(&mut driver).is_pending());
    drop(call);
    peer.set_max_write(7);
    assert!(poll(&mut driver).is_pending());
    let expected = "{\"execute\":\"blockdev-del\",\"arguments\":{\"node-name\":\"n\"},\"id\":1}\n";
    assert_eq!(peer.received(), expected, "written whole, in pieces");
    assert!(peer.write_calls() > 3);
    // The connection stays in sync: the dropped command's reply is discarded.
    peer.set_max_write(usize::MAX);
    let mut next = client.execute("query-version", ());
    assert!(poll(&mut next).is_pending());
    peer.reply("1", json!({}));
    peer.reply("2", json!({"n": 2}));
    assert!(poll(&mut driver).is_pending());
    assert_eq!(
        poll(&mut next).map(Result::unwrap),
        Poll::Ready(json!({"n": 2}))
    );
}

#[test]
fn calls_made_together_are_written_in_one_write() {
    let (client, mut driver, peer) = connected();
    let mut calls: Vec<_> = (0..100)
        .map(|_| client.execute("query-version", ()))
        .collect();
    assert!(poll(&mut calls[0]).is_pending());
    assert_eq!(peer.write_calls(), 1, "one write for 100 commands");
    let expected: String = (1..=100).map(|k| command(&k.to_string())).collect();
    assert_eq!(peer.received(), expected);
    for call in &mut calls[1..] {
        assert!(poll(call).is_pending());
    }
    assert_eq!(peer.write_calls(), 1, "nothing left to write");
    for k in (1..=100).rev() {
        peer.reply(&k.to_string(), json!({ "k": k }));
    }
    assert!(poll(&mut driver).is_pending());
    for (k, call) in (1..=100).zip(&mut calls) {
        assert_eq!(
            poll(call).map(Result::unwrap),
            Poll::Ready(json!({ "k": k }))
        );
    }
}

#[test]
fn query_runs_query_what_and_run_is_typed() {
    let (client, mut driver, peer) = connected();
    let mut status = client.query("status");
    assert!(poll(&mut status).is_pending());
    let mut same = client.query("query-status");
    assert!(poll(&mut same).is_pending());
    let mut typed = Box::pin(client.run(&QueryStatus));
    assert!(poll(&mut typed).is_pending());
    assert_eq!(
        peer.received(),
        "{\"execute\":\"query-status\",\"id\":1}\n\
         {\"execute\":\"query-status\",\"id\":2}\n\
         {\"execute\":\"query-status\",\"id\":3}\n"
    );
    let value = json!({"status": "running", "running": true});
    for id in ["1", "2", "3"] {
        peer.reply(id, value.clone());
    }
    assert!(poll(&mut driver).is_pending());
    assert_eq!(
        poll(&mut status).map(Result::unwrap),
        Poll::Ready(value.clone())
    );
    assert_eq!(poll(&mut same).map(Result::unwrap), Poll::Ready(value));
    match poll(&mut typed) {
        Poll::Ready(Ok(s)) => assert!(s.running),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_refused_command_fails_at_once_and_sends_nothing() {
    let (client, _driver, peer) = connected();
    let mut call = client.execute("blockdev-del", json!({"node-name": "\u{ffff}"}));
    assert!(matches!(
        poll(&mut call),
        Poll::Ready(Err(Error::Refused { .. }))
    ));
    assert_eq!(peer.received(), "");
    assert_eq!((client.pending(), client.waiting()), (0, 0));
}

#[test]
fn a_call_past_its_deadline_times_out_and_its_late_reply_is_discarded() {
    let (client, mut driver, peer) = connected();
    let mut call = client.execute_timeout("query-version", (), Duration::ZERO);
    assert!(poll(&mut call).is_pending());
    assert_eq!(peer.received(), command("1"));
    // The driver keeps the deadlines: at its next turn the call is timed out and abandoned.
    assert!(poll(&mut driver).is_pending());
    match poll(&mut call) {
        Poll::Ready(Err(e)) => {
            assert!(e.is_timeout());
            assert_eq!(
                e.to_string(),
                "timed out after 0 µs waiting for the reply to 'query-version'"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!((client.pending(), client.waiting()), (0, 0));
    let mut next = client.execute("query-version", ());
    assert!(poll(&mut next).is_pending());
    peer.reply("1", json!({"late": true}));
    peer.reply("2", json!({"n": 2}));
    assert!(poll(&mut driver).is_pending());
    assert_eq!(
        poll(&mut next).map(Result::unwrap),
        Poll::Ready(json!({"n": 2}))
    );
    assert_eq!(client.stats().session.discarded_replies, 1);
}

#[test]
fn one_timer_serves_every_call_of_a_connection() {
    let (client, mut driver, peer) = connected();
    TIMERS.with(|t| t.set(0));
    for k in 1..=100 {
        let mut call = client.execute("query-version", ());
        assert!(poll(&mut call).is_pending());
        assert!(poll(&mut driver).is_pending());
        // One call at a time: each carries id 1 (ids are reused).
        peer.reply("1", json!({ "k": k }));
        assert!(poll(&mut driver).is_pending());
        assert_eq!(
            poll(&mut call).map(Result::unwrap),
            Poll::Ready(json!({ "k": k }))
        );
    }
    // Each call had the default 30 s deadline; the timer set for the first one still stands.
    assert_eq!(TIMERS.with(|t| t.get()), 1);
}

#[test]
fn a_dropped_driver_fails_pending_and_later_calls() {
    let (client, driver, _peer) = connected();
    let mut events = client.subscribe(qmp_async::EventFilter::all());
    let mut call = client.execute("query-version", ());
    assert!(poll(&mut call).is_pending());
    drop(driver);
    assert!(matches!(
        poll(&mut call),
        Poll::Ready(Err(Error::Closed { .. }))
    ));
    assert!(matches!(
        poll(&mut client.execute("query-version", ())),
        Poll::Ready(Err(Error::Closed { .. }))
    ));
    assert_eq!(client.close_reason(), Some(qmp_async::CloseReason::Local));
    assert_eq!(
        poll(&mut futures::StreamExt::next(&mut events)).map(|e| e.is_none()),
        Poll::Ready(true),
        "streams end"
    );
    assert_eq!((client.pending(), client.waiting()), (0, 0));
}

#[test]
fn calls_with_default_options_time_out_after_30_seconds() {
    // A QEMU that never answers: with default options the call still ends, with a timeout.
    let (client, mut driver, _peer) = connected();
    assert_eq!(client.default_timeout(), Some(Duration::from_secs(30)));
    TIMERS.with(|t| t.set(0));
    LONGEST.with(|l| l.set(Duration::ZERO));
    let mut call = client.execute("query-version", ());
    assert!(poll(&mut call).is_pending());
    assert!(poll(&mut driver).is_pending());
    let longest = LONGEST.with(|l| l.get());
    assert!(
        longest > Duration::from_secs(29) && longest <= Duration::from_secs(30),
        "{longest:?}"
    );
    // Without a limit, asked for: no timer of its own, the call waits.
    drop(call);
    let relaxed = client.with_timeout(None);
    let mut patient = relaxed.execute("query-version", ());
    let timers = TIMERS.with(|t| t.get());
    assert!(poll(&mut patient).is_pending());
    assert!(poll(&mut driver).is_pending());
    assert_eq!(TIMERS.with(|t| t.get()), timers);
}

/// A waker that counts its wakes.
#[derive(Default)]
struct Counter(std::sync::atomic::AtomicUsize);

impl futures::task::ArcWake for Counter {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        arc_self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Counter {
    fn waker() -> (Arc<Counter>, Waker) {
        let c = Arc::new(Counter::default());
        let w = futures::task::waker(c.clone());
        (c, w)
    }

    fn wakes(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// `query-version` without a timeout: the driver's timer (set once per timeout period, which
/// wakes the driver) stays out of these tests.
fn untimed(client: &Client<Manual>) -> qmp_async::Call<'_> {
    client.execute_with(
        "query-version",
        (),
        qmp_async::CallOptions::new().no_timeout(),
    )
}

fn poll_with<F: Future + Unpin>(f: &mut F, waker: &Waker) -> Poll<F::Output> {
    Pin::new(f).poll(&mut Context::from_waker(waker))
}

/// The driver polled once with a counting waker: its wakes afterwards.
fn counted_driver(driver: &mut BoxFuture<'static, ()>) -> Arc<Counter> {
    let (count, waker) = Counter::waker();
    assert!(poll_with(driver, &waker).is_pending());
    count
}

#[test]
fn a_waiting_call_reads_its_own_reply_without_waking_the_driver() {
    let (client, mut driver, peer) = connected();
    let driver_wakes = counted_driver(&mut driver);
    for k in 1..=3u64 {
        let (woken, waker) = Counter::waker();
        let mut call = untimed(&client);
        assert!(poll_with(&mut call, &waker).is_pending());
        // One call at a time: each carries id 1 (ids are reused).
        peer.reply("1", json!({ "k": k }));
        assert_eq!(woken.wakes(), 1, "the reactor woke the waiting call");
        assert_eq!(
            poll_with(&mut call, &waker).map(Result::unwrap),
            Poll::Ready(json!({ "k": k })),
            "read by the call itself: the driver was not polled"
        );
        // Its own reply, routed by its own poll, woke nobody: a woken task would be polled
        // again for nothing (and tokio's multi-thread scheduler wakes an idle worker for it).
        assert_eq!(woken.wakes(), 1, "the call woke itself reading its reply");
    }
    assert_eq!(driver_wakes.wakes(), 0, "no round trip woke the driver");
    assert_eq!((client.pending(), client.waiting()), (0, 0));
}

#[test]
fn the_read_role_passes_on_when_the_reading_call_is_dropped_unpolled() {
    let (client, mut driver, peer) = connected();
    let driver_wakes = counted_driver(&mut driver);
    let (b_woken, b_waker) = Counter::waker();
    let mut b = untimed(&client);
    let mut a = untimed(&client);
    assert!(poll_with(&mut b, &b_waker).is_pending());
    // `a`, polled last, holds the read role; it is dropped without being polled again.
    assert!(poll_with(&mut a, noop_waker_ref()).is_pending());
    drop(a);
    peer.reply("2", json!({"late": true}));
    peer.reply("1", json!({"b": 1}));
    assert_eq!(b_woken.wakes(), 1, "the reactor now wakes b");
    assert_eq!(
        poll_with(&mut b, &b_waker).map(Result::unwrap),
        Poll::Ready(json!({"b": 1}))
    );
    assert_eq!(driver_wakes.wakes(), 0);
    assert_eq!(client.stats().session.discarded_replies, 1);
    assert_eq!((client.pending(), client.waiting()), (0, 0));
}

#[test]
fn events_keep_flowing_to_the_driver_once_no_call_waits() {
    let (client, mut driver, peer) = connected();
    let driver_wakes = counted_driver(&mut driver);
    let mut call = untimed(&client);
    assert!(poll(&mut call).is_pending());
    peer.reply("1", json!({}));
    assert!(poll(&mut call).is_ready(), "the call read its reply");
    assert_eq!(driver_wakes.wakes(), 0);
    // No call waits: the next bytes wake the driver, which reads them.
    peer.send(b"{\"event\": \"STOP\", \"timestamp\": {\"seconds\": 1, \"microseconds\": 2}}\r\n");
    assert_eq!(driver_wakes.wakes(), 1, "the reactor woke the driver");
    assert!(poll(&mut driver).is_pending());
    let events = client.take_events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].name, "STOP");
}

#[test]
fn a_hundred_concurrent_calls_complete_without_the_driver() {
    let (client, mut driver, peer) = connected();
    let driver_wakes = counted_driver(&mut driver);
    let mut calls: Vec<_> = (0..100)
        .map(|_| {
            let (woken, waker) = Counter::waker();
            (untimed(&client), woken, waker, 0)
        })
        .collect();
    for (call, _, waker, _) in &mut calls {
        assert!(poll_with(call, waker).is_pending());
    }
    assert_eq!(peer.write_calls(), 1, "one write for 100 commands");
    for k in (1..=100).rev() {
        peer.reply(&k.to_string(), json!({ "k": k }));
    }
    // Poll only the calls that were woken, as an executor does, until all are done.
    let mut done = vec![None; 100];
    let mut progress = true;
    while progress {
        progress = false;
        for (i, (call, woken, waker, seen)) in calls.iter_mut().enumerate() {
            if done[i].is_none() && woken.wakes() > *seen {
                *seen = woken.wakes();
                progress = true;
                if let Poll::Ready(v) = poll_with(call, waker) {
                    done[i] = Some(v.unwrap());
                }
            }
        }
    }
    for (k, v) in (1..=100).zip(&done) {
        assert_eq!(v.as_ref(), Some(&json!({ "k": k })), "call {k}");
    }
    assert_eq!(driver_wakes.wakes(), 0);
    assert_eq!((client.pending(), client.waiting()), (0, 0));
}

#[test]
fn a_task_waiting_for_an_event_gives_the_read_role_back_to_the_driver() {
    use futures::Stream;
    let (client, mut driver, peer) = connected();
    let driver_wakes = counted_driver(&mut driver);
    let (call_woken, call_waker) = Counter::waker();
    let mut call = untimed(&client);
    // Polled while waiting, the call holds the read role; then it is kept aside, unpolled, while
    // its task waits for an event.
    assert!(poll_with(&mut call, &call_waker).is_pending());
    let mut events = client.events();
    let (event_woken, event_waker) = Counter::waker();
    let mut cx = Context::from_waker(&event_waker);
    assert!(Pin::new(&mut events).poll_next(&mut cx).is_pending());
    peer.send(b"{\"event\": \"STOP\", \"timestamp\": {\"seconds\": 1, \"microseconds\": 2}}\r\n");
    assert_eq!(
        (driver_wakes.wakes(), call_woken.wakes()),
        (1, 0),
        "the reactor woke the driver, not the call kept aside"
    );
    assert!(poll(&mut driver).is_pending());
    assert_eq!(event_woken.wakes(), 1, "the driver routed the event");
    match Pin::new(&mut events).poll_next(&mut cx) {
        Poll::Ready(Some(e)) => assert_eq!(e.name, "STOP"),
        other => panic!("{other:?}"),
    }
    // The driver reads the call's reply too, and wakes the call.
    peer.reply("1", json!({"n": 1}));
    assert!(poll(&mut driver).is_pending());
    assert_eq!(call_woken.wakes(), 1);
    assert_eq!(
        poll_with(&mut call, &call_waker).map(Result::unwrap),
        Poll::Ready(json!({"n": 1}))
    );
}
