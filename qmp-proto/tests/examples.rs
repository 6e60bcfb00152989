//! The example runs against a real QEMU and prints what it should.

use qmp_testkit::{example, run_example, Emulator, Qemu, QemuOptions};

#[test]
fn poll_loop_drives_a_session_over_a_nonblocking_socket() {
    let Some(q) = Qemu::start(QemuOptions::new(Emulator::System), "poll_loop example") else {
        return;
    };
    let Some(exe) = example("poll_loop") else {
        return;
    };
    let out = run_example(&exe, q.socket());
    assert!(out.starts_with("connected to QEMU 10."), "{out}");
    assert!(out.contains("version {\"major\":10"), "{out}");
    assert!(out.contains("status running"), "{out}");
}
