//! The examples run against a real QEMU and print what they should.

#![allow(clippy::unwrap_used)]

use qmp_testkit::{example, run_example, Emulator, Qemu, QemuOptions};

#[test]
fn vm_status_prints_the_run_state() {
    let Some(q) = Qemu::start(QemuOptions::new(Emulator::System), "vm_status example") else {
        return;
    };
    let Some(exe) = example("vm_status") else {
        return;
    };
    let out = run_example(&exe, q.socket());
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
    let out = run_example(&exe, q.socket());
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

#[test]
fn agent_info_example_talks_to_a_real_agent() {
    let Some(ga) = qmp_testkit::QemuGa::start("agent_info example") else {
        return;
    };
    let Some(exe) = example("agent_info") else {
        return;
    };
    let out = run_example(&exe, ga.socket());
    assert!(out.starts_with("qemu-ga 10."), "{out}");
    assert!(out.contains("exec: hello from the guest\n"), "{out}");
    assert!(out.contains("exit code: Some(0)"), "{out}");
}
