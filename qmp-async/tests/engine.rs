//! The engine without a runtime: an in-memory transport, the driver and the calls polled by hand,
//! so every poll point is reached deterministically. Cancellation at each point, partial writes,
//! and many calls written in one go.

#![allow(clippy::unwrap_used)]

use futures::future::BoxFuture;
use futures::io::{AsyncRead, AsyncWrite};
use futures::task::noop_waker_ref;
use qmp_async::{Client, Driver, Error, Options, Runtime, Transport};
use serde_json::{json, Value};
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

    fn reply(&self, id: &str, value: Value) {
        let mut v = serde_json::to_vec(&json!({"return": value, "id": id})).unwrap();
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

/// Nothing is spawned (the test polls the driver) and no timer fires.
struct NoRuntime;

impl Runtime for NoRuntime {
    fn spawn(&self, _: BoxFuture<'static, ()>) {
        unreachable!("the tests poll the driver themselves")
    }

    fn sleep(&self, _: Duration) -> BoxFuture<'static, ()> {
        Box::pin(futures::future::pending())
    }
}

/// Nothing is spawned; every timer fires at once, and the durations asked for are recorded.
#[derive(Default)]
struct InstantTimers(Mutex<Vec<Duration>>);

impl Runtime for InstantTimers {
    fn spawn(&self, _: BoxFuture<'static, ()>) {
        unreachable!("the tests poll the driver themselves")
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        self.0.lock().unwrap().push(duration);
        Box::pin(futures::future::ready(()))
    }
}

fn poll<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
    Pin::new(f).poll(&mut Context::from_waker(noop_waker_ref()))
}

/// A negotiated connection with ids `t1`, `t2`, ...; the driver is polled by hand.
fn connected() -> (Client, Driver, Peer) {
    connected_on(Arc::new(NoRuntime))
}

fn connected_on(runtime: Arc<dyn Runtime>) -> (Client, Driver, Peer) {
    let peer = Peer(Arc::new(Mutex::new(Wire {
        max_write: usize::MAX,
        ..Wire::default()
    })));
    let mut options = Options::default();
    options.config.id_prefix = Some("t".into());
    let transport = Transport::new(peer.clone(), peer.clone());
    let (client, mut driver) = qmp_async::connection(transport, &options, runtime);
    peer.send(GREETING);
    assert!(poll(&mut driver).is_pending());
    assert_eq!(
        peer.received(),
        "{\"execute\":\"qmp_capabilities\",\"id\":\"t0\"}\n"
    );
    peer.reply("t0", json!({}));
    assert!(poll(&mut driver).is_pending());
    peer.0.lock().unwrap().writes.clear();
    (client, driver, peer)
}

fn command(id: &str) -> String {
    format!("{{\"execute\":\"query-version\",\"id\":\"{id}\"}}\n")
}

#[test]
fn a_call_dropped_before_its_first_poll_is_never_sent() {
    let (client, mut driver, peer) = connected();
    let call = client.execute("query-version", &());
    assert_eq!(client.outstanding(), 1, "submitted when made");
    drop(call);
    assert_eq!(client.outstanding(), 0);
    assert_eq!(client.waiting(), 0);
    let mut next = client.execute("query-version", &());
    assert!(poll(&mut next).is_pending());
    assert_eq!(peer.received(), command("t2"), "t1 was never written");
    peer.reply("t2", json!({"n": 2}));
    assert!(poll(&mut driver).is_pending());
    assert_eq!(
        poll(&mut next).map(Result::unwrap),
        Poll::Ready(json!({"n": 2}))
    );
}

#[test]
fn a_call_dropped_on_the_wire_has_its_late_reply_discarded() {
    let (client, mut driver, peer) = connected();
    let mut call = client.execute("query-version", &());
    assert!(poll(&mut call).is_pending());
    assert_eq!(peer.received(), command("t1"));
    drop(call);
    assert_eq!(client.waiting(), 0);
    let mut next = client.execute("query-version", &());
    assert!(poll(&mut next).is_pending());
    peer.reply("t1", json!({"late": true}));
    peer.reply("t2", json!({"n": 2}));
    assert!(poll(&mut driver).is_pending());
    assert_eq!(
        poll(&mut next).map(Result::unwrap),
        Poll::Ready(json!({"n": 2}))
    );
    assert_eq!(client.stats().discarded_replies, 1);
    assert!(client.take_warnings().is_empty());
    assert_eq!((client.outstanding(), client.waiting()), (0, 0));
}

#[test]
fn a_call_dropped_after_its_reply_arrived_leaves_nothing_behind() {
    let (client, mut driver, peer) = connected();
    let mut call = client.execute("query-version", &());
    assert!(poll(&mut call).is_pending());
    peer.reply("t1", json!({}));
    assert!(poll(&mut driver).is_pending());
    assert_eq!(client.waiting(), 1, "the reply waits in its slot");
    drop(call);
    assert_eq!((client.outstanding(), client.waiting()), (0, 0));
    assert_eq!(client.stats().discarded_replies, 0);
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
    let expected =
        "{\"execute\":\"blockdev-del\",\"arguments\":{\"node-name\":\"n\"},\"id\":\"t1\"}\n";
    assert_eq!(peer.received(), expected, "written whole, in pieces");
    assert!(peer.write_calls() > 3);
    // The connection stays in sync: the dropped command's reply is discarded.
    peer.set_max_write(usize::MAX);
    let mut next = client.execute("query-version", &());
    assert!(poll(&mut next).is_pending());
    peer.reply("t1", json!({}));
    peer.reply("t2", json!({"n": 2}));
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
        .map(|_| client.execute("query-version", &()))
        .collect();
    assert!(poll(&mut calls[0]).is_pending());
    assert_eq!(peer.write_calls(), 1, "one write for 100 commands");
    let expected: String = (1..=100).map(|k| command(&format!("t{k}"))).collect();
    assert_eq!(peer.received(), expected);
    for call in &mut calls[1..] {
        assert!(poll(call).is_pending());
    }
    assert_eq!(peer.write_calls(), 1, "nothing left to write");
    for k in (1..=100).rev() {
        peer.reply(&format!("t{k}"), json!({ "k": k }));
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
    let mut typed = Box::pin(client.run(&qmp_proto::command::QueryStatus));
    assert!(poll(&mut typed).is_pending());
    assert_eq!(
        peer.received(),
        "{\"execute\":\"query-status\",\"id\":\"t1\"}\n\
         {\"execute\":\"query-status\",\"id\":\"t2\"}\n\
         {\"execute\":\"query-status\",\"id\":\"t3\"}\n"
    );
    let value = json!({"status": "running", "running": true});
    for id in ["t1", "t2", "t3"] {
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
    let mut call = client.execute("blockdev-del", &json!({"node-name": "\u{ffff}"}));
    assert!(matches!(
        poll(&mut call),
        Poll::Ready(Err(Error::Refused(_)))
    ));
    assert_eq!(peer.received(), "");
    assert_eq!((client.outstanding(), client.waiting()), (0, 0));
}

#[test]
fn calls_with_default_options_time_out_after_30_seconds() {
    // A QEMU that never answers: with default options the call still ends, with a timeout.
    let timers = Arc::new(InstantTimers::default());
    let (client, _driver, _peer) = connected_on(timers.clone());
    assert_eq!(client.timeout(), Some(Duration::from_secs(30)));
    let mut call = client.execute("query-version", &());
    assert!(matches!(poll(&mut call), Poll::Ready(Err(Error::Timeout))));
    assert_eq!(*timers.0.lock().unwrap(), [Duration::from_secs(30)]);
    // Without a limit, asked for: no timer, the call waits.
    let relaxed = client.with_timeout(None);
    let mut patient = relaxed.execute("query-version", &());
    assert!(poll(&mut patient).is_pending());
    assert_eq!(timers.0.lock().unwrap().len(), 1);
}
