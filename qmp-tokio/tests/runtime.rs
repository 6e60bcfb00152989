//! How the client lives with tokio's runtimes: where it may be used, and what a runtime's
//! shutdown does to it. Against real QEMU.

#![allow(clippy::unwrap_used)]

use qmp_testkit::{Emulator, Qemu, QemuOptions};
use qmp_tokio::{Client, Error};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tokio::runtime::{Builder, Runtime};

fn qsd(test: &str) -> Option<Qemu> {
    Qemu::start(QemuOptions::new(Emulator::StorageDaemon), test)
}

fn system(test: &str) -> Option<Qemu> {
    Qemu::start(QemuOptions::new(Emulator::System), test)
}

fn current_thread() -> Runtime {
    Builder::new_current_thread().enable_all().build().unwrap()
}

/// Connects, retrying once: QEMU 10.0.2 may drop a connection made as it starts listening
/// (docs/async-engine.md, "QEMU's startup race").
async fn connect(q: &Qemu) -> Client {
    let first = Client::builder().connect_timeout(Duration::from_secs(3));
    match first.connect_unix(q.socket()).await {
        Ok(client) => client,
        Err(_) => Client::connect_unix(q.socket()).await.unwrap(),
    }
}

#[test]
fn connecting_outside_a_runtime_is_an_error_not_a_panic() {
    let result = futures::executor::block_on(Client::connect_unix("/nonexistent/qmp.sock"));
    match result {
        Err(Error::Io { source, .. }) => {
            assert!(source.to_string().contains("tokio runtime"), "{source}")
        }
        other => panic!("expected an I/O error naming the runtime, got {other:?}"),
    }
}

#[test]
fn a_client_serves_callers_on_other_threads_and_executors() {
    let Some(q) = system("other_threads") else {
        return;
    };
    let runtime = Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client = runtime.block_on(connect(&q));
    // A call (its deadline is the driver's) and waits with timers of their own, all polled by
    // another executor on a thread outside the runtime.
    let caller = client.clone();
    let (version, stop) = std::thread::spawn(move || {
        futures::executor::block_on(async {
            let version = caller.execute("query-version", ()).await;
            caller.execute("stop", ()).await.unwrap();
            let stop = caller
                .wait_event("STOP", |_| true, Duration::from_secs(10))
                .await;
            let none = caller.next_event(Duration::from_millis(20)).await;
            assert!(none.unwrap_err().is_timeout());
            (version, stop)
        })
    })
    .join()
    .unwrap();
    assert_eq!(version.unwrap()["qemu"]["major"], 10);
    assert_eq!(stop.unwrap().name, "STOP");
}

#[test]
fn shutting_down_the_runtime_fails_pending_and_later_calls() {
    let Some(q) = qsd("runtime_shutdown") else {
        return;
    };
    let runtime = current_thread();
    let client = runtime.block_on(connect(&q));
    // The runtime is not being driven now, so nothing reads the reply: the call stays pending.
    let caller = client.clone();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(futures::executor::block_on(
            caller.execute("query-version", ()),
        ));
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.pending() == 0 {
        assert!(Instant::now() < deadline, "the call was never submitted");
        std::thread::sleep(Duration::from_millis(1));
    }
    drop(runtime);
    let pending = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the pending call was left waiting after the runtime shut down");
    assert!(matches!(pending, Err(Error::Closed { .. })), "{pending:?}");
    let later = futures::executor::block_on(client.execute("query-version", ()));
    assert!(matches!(later, Err(Error::Closed { .. })), "{later:?}");
    assert_eq!(client.close_reason(), Some(qmp_tokio::CloseReason::Local));
}
