//! The examples run against a real QEMU and print what they should.

use qmp_testkit::{example, run_example, Emulator, Qemu, QemuOptions};

#[test]
fn vm_status_prints_the_run_state() {
    let Some(q) = Qemu::start(QemuOptions::new(Emulator::System), "vm_status example") else {
        return;
    };
    let Some(exe) = example("vm_status_tokio") else {
        return;
    };
    let out = run_example(&exe, q.socket());
    assert!(out.starts_with("QEMU 10."), "{out}");
    assert!(out.contains(": running (running)"), "{out}");
}
