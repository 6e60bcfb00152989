//! The built `qmp` binary against real QEMU (qemu-storage-daemon and qemu-system-x86_64), started
//! by qmp-testkit. Every run of the binary and every wait has a timeout.

use qmp_testkit::{free_tcp_addr, Emulator, Endpoint, Qemu, QemuOptions, TempDir};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const QMP: &str = env!("CARGO_BIN_EXE_qmp");
/// No run of the binary in these tests should take longer.
const LIMIT: Duration = Duration::from_secs(20);

#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not one JSON value ({e}): {self:?}"))
    }
}

fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(QMP);
    cmd.args(args)
        .env_remove("QMP_SOCKET")
        .env("QMP_HISTORY", "/dev/null")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Waits for `child` (killing it after `LIMIT`), feeding it `input` on stdin.
fn finish(mut child: Child, input: Option<&[u8]>) -> Run {
    if let Some(bytes) = input {
        let mut stdin = child.stdin.take().expect("stdin piped");
        let bytes = bytes.to_owned();
        thread::spawn(move || {
            let _ = stdin.write_all(&bytes);
        });
    }
    // Without stdout: the caller took it to read it its own way.
    let out = child.stdout.take();
    let mut err = child.stderr.take().expect("stderr piped");
    let out = thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut out) = out {
            let _ = out.read_to_string(&mut s);
        }
        s
    });
    let err = thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + LIMIT;
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("qmp did not finish within {LIMIT:?}");
        }
        thread::sleep(Duration::from_millis(5));
    };
    Run {
        code: status.code().unwrap_or(-1),
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

fn qmp(args: &[&str]) -> Run {
    finish(command(args).spawn().expect("spawn qmp"), None)
}

fn qmp_stdin(args: &[&str], input: impl AsRef<[u8]>) -> Run {
    let child = command(args)
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn qmp");
    finish(child, Some(input.as_ref()))
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn qsd(test: &str) -> Option<Qemu> {
    Qemu::start(QemuOptions::new(Emulator::StorageDaemon), test)
}

fn system(test: &str) -> Option<Qemu> {
    Qemu::start(QemuOptions::new(Emulator::System), test)
}

/// A QEMU with two QMP monitors: the kit's socket and `second`.
fn with_second_monitor(emulator: Emulator, test: &str, second: &Path) -> Option<Qemu> {
    let chardev = format!("socket,path={},server=on,wait=off,id=m1", second.display());
    let extra = match emulator {
        Emulator::StorageDaemon => vec![
            "--chardev".into(),
            chardev,
            "--monitor".into(),
            "chardev=m1".into(),
        ],
        Emulator::System => vec![
            "-chardev".into(),
            chardev,
            "-mon".into(),
            "chardev=m1,mode=control".into(),
        ],
    };
    let mut options = QemuOptions::new(emulator);
    options.extra_args = extra;
    let q = Qemu::start(options, test)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !second.exists() {
        assert!(Instant::now() < deadline, "second monitor socket missing");
        thread::sleep(Duration::from_millis(5));
    }
    Some(q)
}

#[test]
fn exec_prints_the_return_value_as_one_line_of_json() {
    let Some(q) = qsd("exec_prints_the_return_value") else {
        return;
    };
    let r = qmp(&["-s", s(q.socket()), "exec", "query-version"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        r.stdout.lines().count(),
        1,
        "not a terminal: compact: {r:?}"
    );
    assert_eq!(r.json()["qemu"]["major"], 10, "{r:?}");

    let r = qmp(&["-s", s(q.socket()), "--pretty", "exec", "query-version"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.lines().count() > 3, "--pretty: {r:?}");
    assert!(r.stdout.contains("\n  \"qemu\": {"), "{r:?}");
}

#[test]
fn exec_nests_dotted_keys() {
    let Some(q) = qsd("exec_nests_dotted_keys") else {
        return;
    };
    let sock = s(q.socket());
    let r = qmp(&[
        "-s",
        sock,
        "exec",
        "blockdev-add",
        "driver=null-co",
        "cache.direct=true",
        "cache.no-flush=false",
        "node-name=n0",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.json(), json!({}));
    let r = qmp(&["-s", sock, "exec", "query-named-block-nodes", "flat=true"]);
    assert_eq!(r.code, 0, "{r:?}");
    let nodes = r.json();
    let n0 = nodes
        .as_array()
        .and_then(|a| a.iter().find(|n| n["node-name"] == "n0"))
        .unwrap_or_else(|| panic!("no node n0: {r:?}"));
    assert_eq!(n0["cache"]["direct"], true, "{n0}");
    assert_eq!(n0["cache"]["no-flush"], false, "{n0}");

    // One JSON object works as well.
    let r = qmp(&[
        "-s",
        sock,
        "exec",
        "blockdev-add",
        r#"{"driver": "null-co", "node-name": "n1", "size": 4096}"#,
    ]);
    assert_eq!(r.code, 0, "{r:?}");
}

#[test]
fn a_qmp_error_exits_1_with_class_and_description() {
    let Some(q) = qsd("a_qmp_error_exits_1") else {
        return;
    };
    let r = qmp(&["-s", s(q.socket()), "exec", "no-such-command"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stdout.is_empty(), "{r:?}");
    assert!(
        r.stderr
            .contains("CommandNotFound: The command no-such-command has not been found"),
        "{r:?}"
    );
    let r = qmp(&[
        "-s",
        s(q.socket()),
        "exec",
        "blockdev-del",
        "node-name=nope",
    ]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("GenericError: "), "{r:?}");
}

#[test]
fn usage_errors_exit_2_without_connecting() {
    // No QEMU is needed: arguments are checked before connecting.
    let r = qmp(&["-s", "/nonexistent.sock", "exec", "x", "a=1", "a.b=2"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains("'a' is given both a value and members"),
        "{r:?}"
    );
    let r = qmp(&["-s", "/nonexistent.sock", "exec", "x", "novalue"]);
    assert_eq!(r.code, 2, "{r:?}");
    let r = qmp(&["exec", "query-version"]);
    assert_eq!(r.code, 2, "no target and no QMP_SOCKET: {r:?}");
    assert!(
        r.stderr.contains("--socket PATH (or set QMP_SOCKET)"),
        "{r:?}"
    );
    let r = qmp(&["--bogus", "exec", "query-version"]);
    assert_eq!(r.code, 2, "{r:?}");
    let r = qmp(&["-s", "/x", "--tcp", "127.0.0.1:1", "exec", "query-version"]);
    assert_eq!(r.code, 2, "two targets: {r:?}");
    let r = qmp(&["--spawn", "qemu 'unclosed", "exec", "query-version"]);
    assert_eq!(r.code, 2, "{r:?}");
}

#[test]
fn help_documents_exit_codes() {
    let r = qmp(&["--help"]);
    assert_eq!(r.code, 0, "{r:?}");
    for text in [
        "0  success",
        "1  QEMU answered with an error",
        "2  usage error",
        "3  connection or protocol error",
        "exec",
        "events",
        "hmp",
        "schema",
        "shell",
        "demo",
    ] {
        assert!(r.stdout.contains(text), "missing {text:?}: {}", r.stdout);
    }
}

#[test]
fn connection_errors_exit_3_and_name_the_target() {
    let dir = TempDir::new().unwrap();
    let missing = dir.path().join("missing.sock");
    let r = qmp(&["-s", s(&missing), "exec", "query-version"]);
    assert_eq!(r.code, 3, "{r:?}");
    assert!(r.stderr.contains(s(&missing)), "{r:?}");
    assert!(r.stderr.contains("check the path"), "{r:?}");

    // A socket file nobody listens on.
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let r = qmp(&["-s", s(&stale), "exec", "query-version"]);
    assert_eq!(r.code, 3, "{r:?}");
    assert!(r.stderr.contains("nothing listens on it"), "{r:?}");

    let addr = free_tcp_addr().unwrap().to_string();
    let r = qmp(&["--tcp", &addr, "exec", "query-version"]);
    assert_eq!(r.code, 3, "{r:?}");
    assert!(r.stderr.contains(&addr), "{r:?}");
}

#[test]
fn a_busy_monitor_times_out_with_a_hint() {
    let Some(q) = qsd("a_busy_monitor_times_out") else {
        return;
    };
    // The first client holds QEMU's only connection on this monitor.
    let _first = std::os::unix::net::UnixStream::connect(q.socket()).unwrap();
    let r = qmp(&[
        "-s",
        s(q.socket()),
        "--timeout",
        "0.5",
        "exec",
        "query-version",
    ]);
    assert_eq!(r.code, 3, "{r:?}");
    assert!(r.stderr.contains("no QMP greeting"), "{r:?}");
    assert!(r.stderr.contains("one client at a time"), "{r:?}");
}

#[test]
fn qmp_socket_is_the_default_target() {
    let Some(q) = qsd("qmp_socket_is_the_default_target") else {
        return;
    };
    let child = command(&["exec", "query-version"])
        .env("QMP_SOCKET", q.socket())
        .spawn()
        .unwrap();
    let r = finish(child, None);
    assert_eq!(r.code, 0, "{r:?}");
}

#[test]
fn tcp_pipe_listen_and_spawn_transports() {
    if qmp_testkit::require(Emulator::StorageDaemon, "transports").is_none() {
        return;
    }
    // TCP.
    let addr = free_tcp_addr().unwrap();
    let mut o = QemuOptions::new(Emulator::StorageDaemon);
    o.endpoint = Some(Endpoint::Tcp(addr));
    let q = Qemu::start(o, "tcp").unwrap();
    let r = qmp(&["--tcp", &addr.to_string(), "exec", "query-version"]);
    assert_eq!(r.code, 0, "tcp: {r:?}");
    drop(q);

    // Pipes.
    let dir = TempDir::new().unwrap();
    let base = dir.path().join("mon");
    let mut o = QemuOptions::new(Emulator::StorageDaemon);
    o.endpoint = Some(Endpoint::Pipe(base.clone()));
    let q = Qemu::start(o, "pipe").unwrap();
    let r = qmp(&["--pipe", s(&base), "exec", "query-version"]);
    assert_eq!(r.code, 0, "pipe: {r:?}");
    // A pipe monitor greets once, when QEMU starts: a second session gets no greeting.
    let r = qmp(&[
        "--pipe",
        s(&base),
        "--timeout",
        "0.5",
        "exec",
        "query-version",
    ]);
    assert_eq!(r.code, 3, "pipe, second session: {r:?}");
    assert!(r.stderr.contains("greets only once"), "{r:?}");
    drop(q);
    let base = dir.path().join("mon2");
    let mut o = QemuOptions::new(Emulator::StorageDaemon);
    o.endpoint = Some(Endpoint::Pipe(base.clone()));
    let q = Qemu::start(o, "pipe").unwrap();
    let r = qmp_stdin(&["--pipe", s(&base), "shell"], "query-version\n");
    assert_eq!(r.code, 0, "pipe shell: {r:?}");
    assert_eq!(r.json()["qemu"]["major"], 10);
    drop(q);

    // Listen: qmp waits, QEMU connects in client mode.
    let path = dir.path().join("listen.sock");
    let child = command(&[
        "--listen",
        s(&path),
        "--timeout",
        "10",
        "exec",
        "query-version",
    ])
    .spawn()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !path.exists() {
        assert!(Instant::now() < deadline, "qmp did not listen");
        thread::sleep(Duration::from_millis(5));
    }
    let mut o = QemuOptions::new(Emulator::StorageDaemon);
    o.endpoint = Some(Endpoint::UnixClient(path.clone()));
    let q = Qemu::start(o, "listen").unwrap();
    let r = finish(child, None);
    assert_eq!(r.code, 0, "listen: {r:?}");
    assert_eq!(r.json()["qemu"]["major"], 10);
    assert!(!path.exists(), "the listening socket is removed");
    drop(q);

    // Spawn: QEMU on qmp's stdio; the monitor is added by qmp.
    let r = qmp(&["--spawn", "qemu-storage-daemon", "exec", "query-version"]);
    assert_eq!(r.code, 0, "spawn: {r:?}");
    let r = qmp(&["--spawn", "qemu-no-such-binary -x", "exec", "query-version"]);
    assert_eq!(r.code, 3, "{r:?}");
    assert!(
        r.stderr.contains("qemu-no-such-binary was not found"),
        "{r:?}"
    );
}

#[test]
fn spawned_qemu_system_quits() {
    if qmp_testkit::require(Emulator::System, "spawned_qemu_system_quits").is_none() {
        return;
    }
    let r = qmp(&[
        "--spawn",
        "qemu-system-x86_64 -M none -nodefaults -display none",
        "exec",
        "query-status",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.json()["status"], "running");
}

#[test]
fn hmp_prints_text() {
    let Some(q) = system("hmp_prints_text") else {
        return;
    };
    let r = qmp(&["-s", s(q.socket()), "hmp", "info", "status"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout, "VM status: running\n");
}

#[test]
fn schema_describes_commands_and_events() {
    let Some(q) = qsd("schema_describes") else {
        return;
    };
    let sock = s(q.socket());
    let r = qmp(&["-s", sock, "schema", "blockdev-add"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.starts_with("command blockdev-add\narguments:\n"),
        "{r:?}"
    );
    assert!(
        r.stdout
            .contains("\n  cache?: object\n    direct?: bool\n    no-flush?: bool\n"),
        "{}",
        r.stdout
    );
    let r = qmp(&["-s", sock, "schema", "JOB_STATUS_CHANGE"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout
            .starts_with("event JOB_STATUS_CHANGE\ndata:\n  id: str\n"),
        "{r:?}"
    );
    let r = qmp(&["-s", sock, "schema"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("\n  query-version\n"), "{r:?}");
    let r = qmp(&["-s", sock, "schema", "no-such-thing"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("no-such-thing"), "{r:?}");
}

/// Starts `qmp events ...` on `second`, then runs `trigger` on the first monitor until the
/// events process exits (it may connect after the first trigger).
fn events_while(q: &Qemu, second: &Path, events_args: &[&str], trigger: &[&[&str]]) -> Run {
    let mut args = vec!["-s", s(second), "events"];
    args.extend_from_slice(events_args);
    let mut child = command(&args).spawn().expect("spawn qmp events");
    let deadline = Instant::now() + LIMIT;
    while child.try_wait().expect("try_wait").is_none() && Instant::now() < deadline {
        for t in trigger {
            let mut a = vec!["-s", s(q.socket()), "exec"];
            a.extend_from_slice(t);
            let r = qmp(&a);
            assert_eq!(r.code, 0, "{r:?}");
        }
        thread::sleep(Duration::from_millis(50));
    }
    finish(child, None)
}

#[test]
fn events_with_name_and_count() {
    let dir = TempDir::new().unwrap();
    let second = dir.path().join("events.sock");
    let Some(q) = with_second_monitor(Emulator::System, "events_with_name_and_count", &second)
    else {
        return;
    };
    let r = events_while(
        &q,
        &second,
        &["--name", "resume", "--count", "2", "--timeout", "15"],
        &[&["stop"], &["cont"]],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let lines: Vec<Value> = r
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{r:?}");
    for e in &lines {
        assert_eq!(
            e["event"], "RESUME",
            "--name filters (case-insensitive): {e}"
        );
        assert!(e["timestamp"]["seconds"].as_i64().unwrap() > 0, "{e}");
    }
}

#[test]
fn events_timeout() {
    let Some(q) = qsd("events_timeout") else {
        return;
    };
    let sock = s(q.socket());
    // Listening for a while with nothing happening is a success.
    let r = qmp(&["-s", sock, "events", "--timeout", "0.3"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.is_empty(), "{r:?}");
    // Waiting for events that do not come is not.
    let r = qmp(&["-s", sock, "events", "--count", "1", "--timeout", "0.3"]);
    assert_eq!(r.code, 3, "{r:?}");
    assert!(r.stderr.contains("timed out: 0 of 1 events"), "{r:?}");
}

#[test]
fn events_from_a_block_job() {
    let dir = TempDir::new().unwrap();
    let second = dir.path().join("events.sock");
    let Some(q) = with_second_monitor(Emulator::StorageDaemon, "events_from_a_block_job", &second)
    else {
        return;
    };
    for n in ["a", "b"] {
        let node = format!("node-name={n}");
        let r = qmp(&[
            "-s",
            s(q.socket()),
            "exec",
            "blockdev-add",
            "driver=null-co",
            &node,
        ]);
        assert_eq!(r.code, 0, "{r:?}");
    }
    // Each trigger runs a job with a fresh id: the first that the events client sees ends it.
    let mut child = command(&[
        "-s",
        s(&second),
        "events",
        "--name",
        "BLOCK_JOB_COMPLETED",
        "--count",
        "1",
        "--timeout",
        "15",
    ])
    .spawn()
    .unwrap();
    let deadline = Instant::now() + LIMIT;
    let mut n = 0;
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        n += 1;
        let job = format!("job-id=j{n}");
        let r = qmp(&[
            "-s",
            s(q.socket()),
            "exec",
            "blockdev-backup",
            &job,
            "device=a",
            "target=b",
            "sync=full",
        ]);
        assert_eq!(r.code, 0, "{r:?}");
        thread::sleep(Duration::from_millis(50));
    }
    let r = finish(child, None);
    assert_eq!(r.code, 0, "{r:?}");
    let e: Value = serde_json::from_str(r.stdout.trim()).unwrap();
    assert_eq!(e["event"], "BLOCK_JOB_COMPLETED");
    assert_eq!(e["data"]["type"], "backup");
}

/// The STOP events of a storm: `pairs` times `stop` then `cont` written to `socket` as fast as QEMU
/// reads them (commands without ids, all in one go, as QEMU reads them one by one), each answered
/// with a STOP or RESUME event and a reply. Returns the timestamps of the STOP events, in order,
/// and how many events there were in all.
fn stop_cont_storm(socket: &Path, pairs: usize) -> (Vec<(i64, i64)>, usize) {
    use qmp_blocking::qmp_proto::{Decoder, Limits, ServerMessage};
    let mut stream = std::os::unix::net::UnixStream::connect(socket).expect("connect");
    stream.set_read_timeout(Some(LIMIT)).expect("timeout");
    let mut writer = stream.try_clone().expect("clone");
    let mut commands = b"{\"execute\":\"qmp_capabilities\"}".to_vec();
    for _ in 0..pairs {
        commands.extend_from_slice(b"{\"execute\":\"stop\"}{\"execute\":\"cont\"}");
    }
    let write = thread::spawn(move || writer.write_all(&commands).expect("write the storm"));
    let mut decoder = Decoder::new(&Limits::default());
    let (mut stops, mut events, mut replies) = (Vec::new(), 0, 0);
    let mut buf = vec![0u8; 1 << 16];
    let mut out = Vec::new();
    while replies < 2 * pairs + 1 {
        // A read with a timeout (SO_RCVTIMEO) is not restarted after a signal: retry on EINTR.
        let n = match stream.read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            read => read.expect("read the storm"),
        };
        assert!(n > 0, "QEMU closed the storm's monitor");
        decoder.feed(&buf[..n], &mut out);
        for m in out.drain(..) {
            match m.expect("QEMU's output decodes") {
                ServerMessage::Event(e) => {
                    events += 1;
                    if e.name == "STOP" {
                        let t = e.timestamp.expect("a timestamp");
                        stops.push((t.seconds, t.microseconds));
                    }
                }
                ServerMessage::Reply(_) => replies += 1,
                ServerMessage::Greeting(_) => {}
            }
        }
    }
    write.join().expect("writer thread");
    (stops, events)
}

#[test]
fn events_count_prints_the_first_events_of_a_storm_in_order_to_a_stalled_reader() {
    const COUNT: usize = 1000;
    let dir = TempDir::new().unwrap();
    let second = dir.path().join("events.sock");
    let Some(q) = with_second_monitor(Emulator::System, "events_in_a_storm", &second) else {
        return;
    };
    let count = COUNT.to_string();
    let mut child = command(&[
        "-s",
        s(&second),
        "events",
        "--name",
        "STOP",
        "--count",
        &count,
        "--timeout",
        "60",
    ])
    .spawn()
    .expect("spawn qmp events");
    let pid = child.id();
    // A reader that stalls for 1.5 s after the first line, while the storm goes on: the pipe
    // fills (about 880 lines) and qmp's writes block. Before the fix its event queue then
    // overflowed, the oldest events were dropped, and it printed 1,000 events with a gap after
    // the 881st ("2108 events dropped").
    let stdout = child.stdout.take().unwrap();
    let (first_tx, first_rx) = std::sync::mpsc::channel();
    let reader = thread::spawn(move || {
        let (mut lines, mut peak_kb) = (Vec::new(), 0u64);
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
            lines.push(line.unwrap());
            peak_kb = peak_kb.max(vm_hwm_kb(pid));
            if lines.len() == 1 {
                let _ = first_tx.send(());
                thread::sleep(Duration::from_millis(1500));
            }
        }
        (lines, peak_kb)
    });
    // Until qmp has printed an event (so it is connected, and the first event it printed is the
    // first after its connection), one stop/cont at a time; then the storm.
    let deadline = Instant::now() + LIMIT;
    while first_rx.try_recv().is_err() {
        assert!(Instant::now() < deadline, "qmp events printed nothing");
        for c in [&["stop"][..], &["cont"]] {
            let mut a = vec!["-s", s(q.socket()), "exec"];
            a.extend_from_slice(c);
            assert_eq!(qmp(&a).code, 0);
        }
        thread::sleep(Duration::from_millis(20));
    }
    let (stops, events) = stop_cont_storm(q.socket(), 50_000);
    let r = finish(child, None);
    let (lines, peak_kb) = reader.join().unwrap();
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.is_empty(), "no warning, nothing dropped: {r:?}");
    assert!(events >= 100_000, "{events} events");
    let printed: Vec<(i64, i64)> = lines
        .iter()
        .map(|l| {
            let e: Value = serde_json::from_str(l).unwrap();
            assert_eq!(e["event"], "STOP", "{l}");
            let t = &e["timestamp"];
            (
                t["seconds"].as_i64().unwrap(),
                t["microseconds"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(printed.len(), COUNT);
    // The storm's monitor saw every STOP the printer's did, from the storm's start on: the printed
    // events are consecutive STOPs, from the first qmp saw, none missing, none reordered.
    let storm_start = stops[0];
    let before: Vec<&(i64, i64)> = printed.iter().take_while(|t| **t < storm_start).collect();
    assert!(before.len() < COUNT, "the storm reached qmp events");
    let storm_part = &printed[before.len()..];
    assert_eq!(
        storm_part,
        &stops[..storm_part.len()],
        "a gap or a reordering"
    );
    // Bounded memory: the printer kept at most the events it was asked for.
    assert!(peak_kb < 64 << 10, "qmp events peaked at {peak_kb} KiB");
}

/// Peak resident memory of process `pid` in KiB (0 once it has exited).
fn vm_hwm_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

#[test]
fn shell_reads_commands_from_stdin() {
    let Some(q) = qsd("shell_reads_commands_from_stdin") else {
        return;
    };
    let input = "\
query-version
# a comment, then an empty line

blockdev-add driver=null-co node-name=src size=65536
blockdev-add {\"driver\": \"null-co\", \"node-name\": \"dst\", \"size\": 65536}
blockdev-backup job-id=j0 device=src target=dst sync=full
query-jobs
";
    let r = qmp_stdin(&["-s", s(q.socket()), "shell"], input);
    assert_eq!(r.code, 0, "{r:?}");
    let lines: Vec<Value> = r
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    assert_eq!(lines[0]["qemu"]["major"], 10, "{r:?}");
    let events: Vec<&Value> = lines.iter().filter(|l| l.get("event").is_some()).collect();
    assert!(
        events.iter().any(|e| e["event"] == "BLOCK_JOB_COMPLETED"),
        "events are printed: {r:?}"
    );
    let results: Vec<&Value> = lines.iter().filter(|l| l.get("event").is_none()).collect();
    assert_eq!(results.len(), 5, "{r:?}");
}

#[test]
fn shell_exit_status_reports_failed_lines() {
    let Some(q) = qsd("shell_exit_status") else {
        return;
    };
    let r = qmp_stdin(
        &["-s", s(q.socket()), "shell"],
        "no-such-command\nquery-version\n",
    );
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("CommandNotFound"), "{r:?}");
    assert_eq!(
        r.stdout.lines().count(),
        1,
        "the next line still ran: {r:?}"
    );
    let r = qmp_stdin(
        &["-s", s(q.socket()), "shell"],
        "x a=1 a.b=2\nquery-version\n",
    );
    assert_eq!(r.code, 2, "{r:?}");
    assert_eq!(r.stdout.lines().count(), 1, "{r:?}");
    // A line that is not UTF-8 cannot be read: exit status 2 (a usage error, as --help says),
    // and the lines after it still run.
    let r = qmp_stdin(
        &["-s", s(q.socket()), "shell"],
        b"query-\xff\xfeversion\r\nquery-version\r\n",
    );
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("line 1 is not UTF-8"), "{r:?}");
    assert_eq!(r.stdout.lines().count(), 1, "{r:?}");
    // quit ends the shell; QEMU exits.
    let r = qmp_stdin(&["-s", s(q.socket()), "shell"], "quit\nquery-version\n");
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout.trim(), "{}", "{r:?}");
}

#[test]
fn shell_hmp_mode_and_events_on_qemu_system() {
    let Some(q) = system("shell_hmp_mode") else {
        return;
    };
    let input = "!info status\n/hmp\nstop\ninfo status\n/qmp\nquery-status\ncont\n";
    let r = qmp_stdin(&["-s", s(q.socket()), "shell"], input);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("VM status: running\n"), "{r:?}");
    assert!(r.stdout.contains("VM status: paused\n"), "{r:?}");
    assert!(r.stdout.contains(r#""status":"paused""#), "{r:?}");
    assert!(r.stdout.contains(r#"{"event":"STOP""#), "{r:?}");
    assert!(r.stdout.contains(r#"{"event":"RESUME""#), "{r:?}");
}

#[test]
fn demo_runs_the_tour() {
    if qmp_testkit::require(Emulator::StorageDaemon, "demo_runs_the_tour").is_none() {
        return;
    }
    let r = qmp(&["demo"]);
    assert_eq!(r.code, 0, "{r:?}");
    for text in [
        "[1/7]",
        "exec query-version",
        "\"major\": 10",
        "event BLOCK_JOB_COMPLETED",
        "GenericError: ",
        "[7/7]",
        "qemu-storage-daemon has exited",
    ] {
        assert!(r.stdout.contains(text), "missing {text:?}: {}", r.stdout);
    }
}

#[test]
fn demo_without_qemu_says_how_to_install_it() {
    let dir = TempDir::new().unwrap();
    let child = command(&["demo"]).env("PATH", dir.path()).spawn().unwrap();
    let r = finish(child, None);
    assert_eq!(r.code, 3, "{r:?}");
    assert!(r.stderr.contains("apt-get install qemu-utils"), "{r:?}");
    assert!(r.stderr.contains("scripts/install-qemu"), "{r:?}");
}

#[test]
fn schema_offline_needs_no_qemu_and_names_the_real_types() {
    // No target at all: the schema built in answers.
    let r = qmp(&["schema", "--offline", "blockdev-add"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.starts_with("command blockdev-add\n"), "{r:?}");
    assert!(r.stdout.contains("driver:"), "{r:?}");
    let r = qmp(&["schema", "--offline"]);
    assert_eq!(r.code, 0, "{r:?}");
    // qemu-system's commands, the storage daemon's, and target-specific ones (s390x) alike.
    for name in [
        "\n  blockdev-backup\n",
        "\n  query-cpus-fast\n",
        "\n  query-s390x-cpu-polarization\n",
        "\n  JOB_STATUS_CHANGE\n",
    ] {
        assert!(r.stdout.contains(name), "{name:?} missing: {r:?}");
    }
    let r = qmp(&["schema", "--offline", "no-such-command"]);
    assert_ne!(r.code, 0, "{r:?}");
}

/// `--qga`: against a real qemu-ga (restricted to qmp_testkit::SAFE_RPCS).
#[test]
fn qga_exec_prints_the_agents_reply() {
    let Some(ga) = qmp_testkit::QemuGa::start("qga_exec_prints_the_agents_reply") else {
        return;
    };
    let r = qmp(&[
        "--qga",
        "-s",
        s(ga.socket()),
        "--compact",
        "exec",
        "guest-info",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    let v = r.json();
    assert!(
        v["version"].as_str().is_some_and(|v| v.starts_with("10.")),
        "{v}"
    );
    let r = qmp(&[
        "--qga",
        "-s",
        s(ga.socket()),
        "exec",
        "guest-exec",
        "path=/bin/echo",
        r#"arg=["hi"]"#,
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.json()["pid"].is_i64(), "{r:?}");
    // A command the agent refuses: exit 1 with its class and description.
    let r = qmp(&["--qga", "-s", s(ga.socket()), "exec", "guest-shutdown"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("CommandNotFound"), "{r:?}");
}

#[test]
fn qga_shell_runs_lines_and_lists_the_agents_commands() {
    let Some(ga) = qmp_testkit::QemuGa::start("qga_shell_runs_lines_and_lists_the_agents_commands")
    else {
        return;
    };
    let r = qmp_stdin(
        &["--qga", "-s", s(ga.socket()), "--compact", "shell"],
        "guest-ping\n/schema\nguest-get-time\n",
    );
    assert_eq!(r.code, 0, "{r:?}");
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines[0], "{}", "{r:?}");
    // The completion schema: the enabled commands guest-info lists.
    assert!(r.stdout.contains("guest-exec-status"), "{r:?}");
    assert!(
        !r.stdout.contains("guest-shutdown"),
        "disabled commands are not offered: {r:?}"
    );
    assert!(
        lines.last().is_some_and(|l| l.parse::<i64>().is_ok()),
        "{r:?}"
    );
}

#[test]
fn qga_without_an_agent_exits_4_with_a_clear_message() {
    if qmp_testkit::require(
        Emulator::System,
        "qga_without_an_agent_exits_4_with_a_clear_message",
    )
    .is_none()
    {
        return;
    }
    let dir = TempDir::new().expect("dir");
    let sock = dir.path().join("qga.sock");
    let mut options = QemuOptions::new(Emulator::System);
    options.extra_args = [
        "-M",
        "pc",
        "-S",
        "-chardev",
        &format!("socket,path={},server=on,wait=off,id=qga0", sock.display()),
        "-device",
        "virtio-serial",
        "-device",
        "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
    ]
    .map(String::from)
    .to_vec();
    let Some(_qemu) = Qemu::start(options, "qga_without_an_agent_exits_4_with_a_clear_message")
    else {
        return;
    };
    let r = qmp(&[
        "--qga",
        "-s",
        s(&sock),
        "--timeout",
        "1",
        "exec",
        "guest-ping",
    ]);
    assert_eq!(r.code, 4, "{r:?}");
    assert!(
        r.stderr.contains("guest-sync-delimited") && r.stderr.contains("qemu-ga"),
        "{r:?}"
    );
    // What --qga cannot do is a usage error, before connecting.
    let r = qmp(&["--qga", "-s", s(&sock), "events"]);
    assert_eq!(r.code, 2, "{r:?}");
    let r = qmp(&["--qga", "--pipe", "/nonexistent", "exec", "guest-ping"]);
    assert_eq!(r.code, 2, "{r:?}");
}
