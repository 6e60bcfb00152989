//! Closing or dropping a client ends its threads, on every transport whose reader can be woken.
//! (One test in its own binary, so no other test's client threads are counted.)

// Test helpers outside #[test] functions unwrap too.
#![allow(clippy::unwrap_used)]

use qmp_blocking::Client;
use qmp_testkit::{qemu_command, Emulator, Endpoint, Qemu, QemuOptions, TempDir};
use std::process::Stdio;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(10);

/// Names of this process's threads that belong to a client.
fn client_threads() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_string())
        .filter(|n| n.starts_with("qmp-"))
        .collect()
}

fn use_threads(c: &Client) {
    // Start the handler pool too.
    c.on_any_event(|_| {});
    c.execute_async("query-version", (), |r| assert!(r.is_ok()))
        .unwrap();
    c.wait_timeout(T).unwrap();
    assert!(client_threads().len() >= 2, "{:?}", client_threads());
}

fn assert_gone(what: &str) {
    // Joined threads may show in /proc for a moment after join returns.
    let until = Instant::now() + T;
    while !client_threads().is_empty() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        client_threads(),
        Vec::<String>::new(),
        "after closing {what}"
    );
}

#[test]
fn closing_ends_the_threads() {
    let Some(q) = Qemu::start(
        QemuOptions::new(Emulator::StorageDaemon),
        "closing_ends_the_threads",
    ) else {
        return;
    };
    assert!(client_threads().is_empty());

    let c = Client::builder()
        .handler_threads(3)
        .connect_unix(q.socket())
        .unwrap();
    use_threads(&c);
    c.close();
    assert_gone("a unix client");

    let c = Client::connect_unix(q.socket()).unwrap();
    use_threads(&c);
    drop(c);
    assert_gone("a dropped unix client");

    let mut cmd = qemu_command(Emulator::StorageDaemon, "stdio", false);
    cmd.stderr(Stdio::null());
    let c = Client::spawn(cmd).unwrap();
    use_threads(&c);
    c.close();
    assert_gone("a spawned QEMU's client");

    let dir = TempDir::new().unwrap();
    let base = dir.path().join("qmp");
    let mut opts = QemuOptions::new(Emulator::StorageDaemon);
    opts.endpoint = Some(Endpoint::Pipe(base.clone()));
    let _pipe_qemu = Qemu::start(opts, "closing_ends_the_threads (pipe)").unwrap();
    let c = Client::builder().connect_pipe(&base).unwrap();
    use_threads(&c);
    c.close();
    assert_gone("a pipe client");
}
