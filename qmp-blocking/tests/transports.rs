//! Every transport, each against a real QEMU; connect errors.

// Test helpers outside #[test] functions unwrap too.
#![allow(clippy::unwrap_used)]

use qmp_blocking::{Client, Error};
use qmp_testkit::{qemu_command, Emulator, Endpoint, Qemu, QemuOptions, TempDir};
use std::io::Read;
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

/// Runs `f` on a thread and fails the test if it takes longer than `T` (a hang is a failure).
fn within<R: Send + 'static>(what: &str, f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(T)
        .unwrap_or_else(|_| panic!("{what} did not finish within {T:?}"))
}

fn exercise(c: &Client) {
    assert_eq!(c.greeting().version.major, 10);
    assert_eq!(c.query("version").unwrap()["qemu"]["major"], 10);
    assert!(c
        .execute("no-such-command", ())
        .unwrap_err()
        .qmp_error()
        .is_some());
}

fn exercise_system(c: &Client) {
    exercise(c);
    c.execute("stop", ()).unwrap();
    assert_eq!(c.next_event(T).unwrap().name, "STOP");
}

#[test]
fn unix_socket() {
    let Some(q) = Qemu::start(QemuOptions::new(Emulator::System), "unix_socket") else {
        return;
    };
    let c = Client::connect_unix(q.socket()).unwrap();
    exercise_system(&c);
    within("close", move || c.close());
}

#[test]
fn tcp() {
    let addr = qmp_testkit::free_tcp_addr().unwrap();
    let mut opts = QemuOptions::new(Emulator::System);
    opts.endpoint = Some(Endpoint::Tcp(addr));
    let Some(_q) = Qemu::start(opts, "tcp") else {
        return;
    };
    let c = Client::connect_tcp(addr).unwrap();
    assert_eq!(c.transport(), format!("tcp:{addr}"));
    exercise_system(&c);
    within("close", move || c.close());
}

#[test]
fn stdio_spawned_qemu_is_owned_killed_and_reaped() {
    if qmp_testkit::require(
        Emulator::System,
        "stdio_spawned_qemu_is_owned_killed_and_reaped",
    )
    .is_none()
    {
        return;
    }
    let mut cmd = qemu_command(Emulator::System, "stdio", false);
    // A trace pattern that matches nothing: QEMU warns about it on stderr and runs on.
    cmd.args(["-trace", "enable=no_such_trace_event_qmp_test"]);
    cmd.stderr(Stdio::piped());
    let c = Client::builder().timeout(T).spawn(cmd).unwrap();
    assert!(c.transport().starts_with("stdio:"));
    let pid = c.child_id().unwrap();
    let mut stderr = c.take_stderr().expect("stderr was piped");
    exercise_system(&c);
    within("close", move || c.close());
    // Reaped: not even a zombie is left.
    let alive = std::process::Command::new("kill")
        .args(["-0", &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(!alive, "QEMU {pid} still exists after close");
    let mut text = String::new();
    stderr.read_to_string(&mut text).unwrap();
    assert!(
        text.contains("no_such_trace_event_qmp_test"),
        "stderr: {text:?}"
    );
}

#[test]
fn stdio_exit_before_the_greeting_reports_the_exit_status() {
    // Any program that exits at once stands for a QEMU given a bad option.
    let mut cmd = std::process::Command::new("sh");
    cmd.args(["-c", "exit 3"]);
    let e = within("spawn", move || {
        Client::builder().connect_timeout(T).spawn(cmd).unwrap_err()
    });
    assert!(
        matches!(&e, Error::Exited { status, .. } if status.code() == Some(3)),
        "{e:?}"
    );
    assert!(
        e.to_string().contains("QEMU exited (exit status: 3)"),
        "{e}"
    );
}

#[test]
fn stdio_quit_waits_for_exit() {
    if qmp_testkit::require(Emulator::StorageDaemon, "stdio_quit_waits_for_exit").is_none() {
        return;
    }
    let mut cmd = qemu_command(Emulator::StorageDaemon, "stdio", false);
    cmd.stderr(Stdio::null());
    let c = Client::builder().timeout(T).spawn(cmd).unwrap();
    exercise(&c);
    c.quit().unwrap();
    assert!(c.exit_status().unwrap().success());
}

#[test]
fn spawn_adds_the_stdio_monitor_a_bare_command_line_lacks() {
    for emulator in [Emulator::System, Emulator::StorageDaemon] {
        if qmp_testkit::require(emulator, "spawn_adds_the_stdio_monitor").is_none() {
            return;
        }
        // No monitor at all on the command line: the client adds -qmp stdio (or the storage
        // daemon's --chardev stdio monitor) instead of waiting for a greeting that never comes.
        let mut cmd = std::process::Command::new(emulator.binary());
        if emulator == Emulator::System {
            cmd.args(["-M", "none", "-nodefaults", "-display", "none"]);
        }
        cmd.stderr(Stdio::null());
        let c = within("spawn", move || {
            Client::builder()
                .timeout(T)
                .connect_timeout(T)
                .spawn(cmd)
                .unwrap()
        });
        exercise(&c);
        c.quit().unwrap();
    }
}

#[test]
fn a_spawned_qemu_killed_from_outside_is_reaped_with_its_status() {
    if qmp_testkit::require(Emulator::StorageDaemon, "killed_from_outside").is_none() {
        return;
    }
    let mut cmd = qemu_command(Emulator::StorageDaemon, "stdio", false);
    cmd.stderr(Stdio::null());
    let c = Client::builder().timeout(T).spawn(cmd).unwrap();
    let pid = c.child_id().unwrap();
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    // The reader sees the end of QEMU's stdout and reaps it: no zombie, no quit() or drop needed.
    let e = c.next_event(T).unwrap_err();
    assert!(e.is_disconnected(), "{e:?}");
    use std::os::unix::process::ExitStatusExt;
    let status = c.exit_status().expect("reaped when its stdout closed");
    assert_eq!(status.signal(), Some(9));
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
    assert!(
        zombie.is_none(),
        "{pid} still in the process table: {zombie:?}"
    );
}

#[test]
fn pipe_fifos() {
    let dir = TempDir::new().unwrap();
    let base = dir.path().join("qmp");
    let mut opts = QemuOptions::new(Emulator::System);
    opts.endpoint = Some(Endpoint::Pipe(base.clone()));
    let Some(_q) = Qemu::start(opts, "pipe_fifos") else {
        return;
    };
    let c = Client::builder().timeout(T).connect_pipe(&base).unwrap();
    assert!(c.transport().starts_with("pipe:"));
    exercise_system(&c);
    within("close", move || c.close());
}

#[test]
fn pipe_without_qemu_times_out_clearly() {
    let dir = TempDir::new().unwrap();
    let base = dir.path().join("qmp");
    for ext in ["in", "out"] {
        let ok = std::process::Command::new("mkfifo")
            .arg(base.with_extension(ext))
            .status()
            .unwrap();
        assert!(ok.success());
    }
    let e = within("connect", move || {
        Client::builder()
            .connect_timeout(Duration::from_millis(100))
            .connect_pipe(&base)
            .unwrap_err()
    });
    assert!(e.is_timeout(), "{e:?}");
    assert!(
        e.to_string().contains("qmp.out") || e.to_string().contains("pipe:"),
        "{e}"
    );
}

#[test]
fn reader_and_writer_the_caller_has() {
    let Some(q) = Qemu::start(
        QemuOptions::new(Emulator::StorageDaemon),
        "reader_and_writer",
    ) else {
        return;
    };
    let stream = UnixStream::connect(q.socket()).unwrap();
    let reader = stream.try_clone().unwrap();
    let c = Client::builder()
        .timeout(T)
        .connect_io(reader, stream)
        .unwrap();
    assert_eq!(c.transport(), "io");
    exercise(&c);
    let f = std::fs::File::open("/dev/null").unwrap();
    let e = c.getfd("x", std::os::fd::AsFd::as_fd(&f)).unwrap_err();
    assert!(matches!(e, Error::FdPassingUnsupported { .. }), "{e:?}");
    within("close", move || c.close());
}

#[test]
fn a_connected_unix_stream() {
    let Some(q) = Qemu::start(
        QemuOptions::new(Emulator::StorageDaemon),
        "a_connected_unix_stream",
    ) else {
        return;
    };
    let stream = UnixStream::connect(q.socket()).unwrap();
    let c = Client::builder()
        .timeout(T)
        .connect_unix_stream(stream)
        .unwrap();
    exercise(&c);
}

#[test]
fn accept_mode_takes_qemus_connection() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("listen.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let mut opts = QemuOptions::new(Emulator::System);
    opts.endpoint = Some(Endpoint::UnixClient(path.clone()));
    let Some(_q) = Qemu::start(opts, "accept_mode_takes_qemus_connection") else {
        return;
    };
    let c = Client::builder().timeout(T).accept_unix(&listener).unwrap();
    exercise_system(&c);
    // fds work in accept mode too: it is a Unix socket.
    let f = std::fs::File::open("/dev/null").unwrap();
    c.getfd("n", std::os::fd::AsFd::as_fd(&f)).unwrap();
}

#[test]
fn accept_times_out_when_nobody_connects() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("listen.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let e = Client::builder()
        .connect_timeout(Duration::from_millis(50))
        .accept_unix(&listener)
        .unwrap_err();
    assert!(e.is_timeout(), "{e:?}");
    assert!(e.to_string().contains("listen.sock"), "{e}");
}

#[test]
fn nothing_listening_names_the_path_or_address() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("nobody.sock");
    let e = Client::connect_unix(&path).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e:?}");
    assert!(e.to_string().contains("nobody.sock"), "{e}");
    let addr = qmp_testkit::free_tcp_addr().unwrap();
    let e = Client::connect_tcp(addr).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e:?}");
    assert!(e.to_string().contains(&addr.to_string()), "{e}");
}
