//! The examples run against a real QEMU and print what they should.

// Test helpers outside #[test] functions unwrap too.
#![allow(clippy::unwrap_used)]

use qmp_testkit::{Emulator, Qemu, QemuOptions};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The example binary cargo built next to this test (`target/<profile>/examples/NAME`).
fn example(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent()?.parent()?.join("examples").join(name);
    if path.exists() {
        Some(path)
    } else {
        eprintln!(
            "\n*** SKIPPED: example {name} not built at {} ***\n",
            path.display()
        );
        None
    }
}

/// Runs the example with `arg`, failing after 20 s; returns its stdout.
fn run(path: PathBuf, arg: &std::path::Path) -> String {
    let child = Command::new(path)
        .arg(arg)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let id = child.id();
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let out = child.wait_with_output();
        let _ = done_tx.send(out);
    });
    let out = match done_rx.recv_timeout(Duration::from_secs(20)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &id.to_string()])
                .status();
            panic!("example did not finish within 20 s");
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "example failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn vm_status_prints_the_run_state() {
    let Some(q) = Qemu::start(QemuOptions::new(Emulator::System), "vm_status example") else {
        return;
    };
    let Some(exe) = example("vm_status") else {
        return;
    };
    let out = run(exe, q.socket());
    assert!(out.starts_with("QEMU 10."), "{out}");
    assert!(out.contains(": running (running)"), "{out}");
}

#[test]
fn callbacks_example_runs_every_callback_before_wait_returns() {
    let Some(q) = Qemu::start(QemuOptions::new(Emulator::System), "callbacks example") else {
        return;
    };
    let Some(exe) = example("callbacks") else {
        return;
    };
    let out = run(exe, q.socket());
    let before_wait: &str = out.split("all done").next().unwrap();
    for line in [
        "status: \"running\"",
        "callback: the VM stopped",
        "callback: the VM resumed",
        "event STOP",
        "event RESUME",
        "stop: done",
        "cont: done",
    ] {
        assert!(before_wait.contains(line), "missing {line:?} in:\n{out}");
    }
    assert!(out.contains("all done; status: \"running\""), "{out}");
}
