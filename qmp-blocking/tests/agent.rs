//! The guest-agent client against a real qemu-ga 10.0.2 run on the host (restricted to
//! commands that cannot change the host: qmp_testkit::SAFE_RPCS), behind a fault proxy for stale
//! data, and against real QEMU with a virtio-serial port and no agent behind it.

use qmp_blocking::qmp_proto::guest_exec::{decode_base64, encode_base64, ExecRequest};
use qmp_blocking::{Agent, CallOptions, Config, Error};
use qmp_qapi::qga::{GuestGetOsinfo, GuestGetTime, GuestInfo, GuestPing};
use qmp_testkit::{AgentProxy, Emulator, Qemu, QemuGa, QemuOptions, Rule, TempDir};
use serde_json::json;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

fn builder() -> qmp_blocking::AgentBuilder {
    Agent::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(20))
        .config(Config {
            negotiation_id: Some("t".into()),
            ..Config::agent()
        })
}

#[test]
fn ping_info_osinfo_time() {
    let Some(ga) = QemuGa::start("ping_info_osinfo_time") else {
        return;
    };
    let agent = builder().connect_unix(ga.socket()).expect("connect");
    assert_eq!(agent.execute("guest-ping", ()).expect("ping"), json!({}));
    agent.run(&GuestPing).expect("typed ping");
    let info = agent.run(&GuestInfo).expect("guest-info");
    assert!(info.version.starts_with("10."), "{}", info.version);
    let shutdown = info
        .supported_commands
        .iter()
        .find(|c| c.name == "guest-shutdown")
        .expect("guest-shutdown listed");
    assert!(
        !shutdown.success_response,
        "the schema's success-response: false"
    );
    assert!(
        !shutdown.enabled,
        "the test agent allows only safe commands"
    );
    let os = agent.run(&GuestGetOsinfo).expect("osinfo");
    assert!(os.kernel_release.is_some(), "{os:?}");
    let t = agent.run(&GuestGetTime).expect("time");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as i64;
    assert!(
        (t - now).abs() < 60_000_000_000,
        "agent time {t}, host {now}"
    );
    let st = agent.stats().session;
    assert_eq!(
        (st.stale, st.resyncs),
        (1, 0),
        "only the stray error: {st:?}"
    );
    assert!(agent.take_warnings().is_empty());
}

#[test]
fn guest_exec_captures_output_and_exit_code() {
    let Some(ga) = QemuGa::start("guest_exec_captures_output_and_exit_code") else {
        return;
    };
    let agent = builder().connect_unix(ga.socket()).expect("connect");
    let t = Duration::from_secs(20);
    let out = agent
        .guest_exec(&ExecRequest::new("/bin/echo").args(["hello", "agent"]), t)
        .expect("echo");
    assert_eq!(out.stdout, b"hello agent\n");
    assert!(out.success() && out.stderr.is_empty());
    let out = agent
        .guest_exec(&ExecRequest::new("/bin/sh").args(["-c", "exit 3"]), t)
        .expect("sh");
    assert_eq!(out.exit_code, Some(3));
    let input: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    let out = agent
        .guest_exec(&ExecRequest::new("/bin/cat").input(input.clone()), t)
        .expect("cat");
    assert_eq!(out.stdout, input, "binary data through stdin and stdout");
    match agent.guest_exec(&ExecRequest::new("/nonexistent/program"), t) {
        Err(Error::Qmp { command, .. }) => assert_eq!(command, "guest-exec"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn file_open_write_read_close_with_a_10_mib_read() {
    let Some(ga) = QemuGa::start("file_open_write_read_close_with_a_10_mib_read") else {
        return;
    };
    let agent = builder().connect_unix(ga.socket()).expect("connect");
    let path = ga.dir().join("data.bin");
    let data: Vec<u8> = (0..10 << 20)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let h = agent
        .execute("guest-file-open", json!({"path": path, "mode": "w"}))
        .expect("open for writing");
    for chunk in data.chunks(1 << 20) {
        let w = agent
            .execute(
                "guest-file-write",
                json!({"handle": h, "buf-b64": encode_base64(chunk)}),
            )
            .expect("write");
        assert_eq!(w["count"], chunk.len());
    }
    agent
        .execute("guest-file-close", json!({"handle": h}))
        .expect("close");
    assert_eq!(std::fs::read(&path).expect("file on disk"), data);
    let h = agent
        .execute("guest-file-open", json!({"path": path, "mode": "r"}))
        .expect("open for reading");
    let r = agent
        .execute("guest-file-read", json!({"handle": h, "count": 10 << 20}))
        .expect("10 MiB read");
    assert_eq!(r["count"], 10 << 20);
    let got = decode_base64(r["buf-b64"].as_str().expect("buf-b64")).expect("base64");
    assert!(got == data, "the read returns what was written");
    agent
        .execute("guest-file-close", json!({"handle": h}))
        .expect("close");
}

#[test]
fn a_disabled_no_reply_command_fails_with_the_agents_error() {
    let Some(ga) = QemuGa::start("a_disabled_no_reply_command_fails_with_the_agents_error") else {
        return;
    };
    let agent = builder().connect_unix(ga.socket()).expect("connect");
    // Not in SAFE_RPCS: the agent answers an error with the command's id, and runs nothing.
    match agent.execute("guest-shutdown", json!({"mode": "powerdown"})) {
        Err(Error::Qmp { command, error }) => {
            assert_eq!(command, "guest-shutdown");
            assert!(error.desc.contains("disabled"), "{error:?}");
        }
        other => panic!("{other:?}"),
    }
    agent
        .execute("guest-ping", ())
        .expect("the next command is answered");
}

#[test]
fn a_no_reply_command_succeeds_by_the_probe() {
    let Some(ga) = QemuGa::start("a_no_reply_command_succeeds_by_the_probe") else {
        return;
    };
    // The proxy does not even forward guest-suspend-ram (which the agent would refuse anyway):
    // no reply, as when it succeeds; the probe behind it is answered.
    let proxy = AgentProxy::start(
        ga.socket(),
        vec![Rule::Swallow {
            trigger: "guest-suspend-ram".into(),
        }],
    );
    let agent = builder().connect_unix(proxy.path()).expect("connect");
    let started = Instant::now();
    assert_eq!(
        agent.execute("guest-suspend-ram", ()).expect("suspend"),
        json!({})
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "completed by the probe, not a timeout"
    );
    agent.execute("guest-ping", ()).expect("ping after");
}

#[test]
fn stale_half_reply_and_full_reply_before_the_sentinel() {
    let Some(ga) = QemuGa::start("stale_half_reply_and_full_reply_before_the_sentinel") else {
        return;
    };
    // Before the agent's answer to the sync: a full reply carrying the id the first command
    // will have (1), then half a reply that never closes.
    let proxy = AgentProxy::start(
        ga.socket(),
        vec![Rule::Inject {
            trigger: "guest-sync-delimited".into(),
            bytes: b"{\"return\": {\"stale\": true}, \"id\": 1}\n{\"return\": {\"half\": \"xx"
                .to_vec(),
        }],
    );
    let agent = builder().connect_unix(proxy.path()).expect("connect");
    let v = agent.execute("guest-info", ()).expect("guest-info");
    assert!(
        v["version"].is_string(),
        "its own reply, not the stale one: {v}"
    );
    let st = agent.stats().session;
    assert!(st.stale >= 2, "{st:?}");
    assert!(agent.take_warnings().is_empty());
}

#[test]
fn a_replayed_reply_to_an_old_sync_id_is_ignored() {
    let Some(ga) = QemuGa::start("a_replayed_reply_to_an_old_sync_id_is_ignored") else {
        return;
    };
    let proxy = AgentProxy::start(
        ga.socket(),
        vec![Rule::Inject {
            trigger: "guest-sync-delimited".into(),
            bytes: b"\xff{\"return\": 4242}\n{\"return\": {}, \"id\": 1}\n".to_vec(),
        }],
    );
    let agent = builder().connect_unix(proxy.path()).expect("connect");
    let t = agent.execute("guest-get-time", ()).expect("time");
    assert!(t.is_i64(), "{t}");
    let st = agent.stats().session;
    assert!(st.stale >= 2 && st.resets >= 2, "{st:?}");
}

#[test]
fn a_timeout_then_the_late_reply_then_a_new_command() {
    let Some(ga) = QemuGa::start("a_timeout_then_the_late_reply_then_a_new_command") else {
        return;
    };
    let proxy = AgentProxy::start(
        ga.socket(),
        vec![Rule::Delay {
            trigger: "guest-get-osinfo".into(),
            delay: Duration::from_millis(1500),
        }],
    );
    let agent = builder().connect_unix(proxy.path()).expect("connect");
    let short = CallOptions::new().timeout(Duration::from_millis(300));
    match agent.execute_with("guest-get-osinfo", (), short) {
        Err(e) if e.is_timeout() => {}
        other => panic!("{other:?}"),
    }
    // The late osinfo reply arrives first, then the re-sync's answer, then this reply.
    let t = agent.execute("guest-get-time", ()).expect("time");
    assert!(t.is_i64(), "its own reply, not the late osinfo: {t}");
    let info = agent.execute("guest-info", ()).expect("info");
    assert!(info["supported_commands"].is_array(), "{info}");
    let st = agent.stats().session;
    assert_eq!(st.resyncs, 1, "{st:?}");
    assert!(st.stale >= 2, "the late reply and a stray error: {st:?}");
}

#[test]
fn over_tcp_and_over_any_reader_and_writer() {
    let Some(ga) = QemuGa::start("over_tcp_and_over_any_reader_and_writer") else {
        return;
    };
    // qemu-ga serves no TCP: a forwarder stands in for a TCP chardev.
    let addr = qmp_testkit::tcp_forwarder(ga.socket());
    let agent = builder().connect_tcp(addr).expect("tcp");
    assert!(
        agent.transport().starts_with("tcp:"),
        "{}",
        agent.transport()
    );
    agent.execute("guest-ping", ()).expect("ping over tcp");
    agent.close();

    let stream = UnixStream::connect(ga.socket()).expect("connect");
    let reader = stream.try_clone().expect("clone");
    let agent = builder().connect_io(reader, stream).expect("io");
    agent.execute("guest-ping", ()).expect("ping over io");
}

#[test]
fn qemu_with_no_agent_is_reported_promptly() {
    if qmp_testkit::require(Emulator::System, "qemu_with_no_agent_is_reported_promptly").is_none() {
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
    let Some(_qemu) = Qemu::start(options, "qemu_with_no_agent_is_reported_promptly") else {
        return;
    };
    let started = Instant::now();
    let result = Agent::builder()
        .connect_timeout(Duration::from_secs(1))
        .connect_unix(&sock);
    let elapsed = started.elapsed();
    match result {
        Err(Error::AgentNotResponding { transport, after }) => {
            assert!(transport.contains("qga.sock"), "{transport}");
            assert_eq!(after, Duration::from_secs(1));
        }
        other => panic!("{other:?}"),
    }
    // A hang guard, not a speed check: the connect ended by its own timeout.
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
    let text = Error::AgentNotResponding {
        transport: "unix:x".into(),
        after: Duration::from_secs(1),
    }
    .to_string();
    assert!(text.contains("qemu-ga"), "{text}");
}

#[test]
fn the_largest_guest_file_read_fits_the_default_limit() {
    let Some(ga) = QemuGa::start("the_largest_guest_file_read_fits_the_default_limit") else {
        return;
    };
    let agent = builder().connect_unix(ga.socket()).expect("connect");
    // 48 MiB, the most guest-file-read returns: 64 MiB of base64, a reply just over 64 MiB.
    let path = ga.dir().join("big.bin");
    let data: Vec<u8> = (0..48u32 << 20)
        .map(|i| (i.wrapping_mul(40_503) >> 7) as u8)
        .collect();
    std::fs::write(&path, &data).expect("write the file");
    let h = agent
        .execute("guest-file-open", json!({"path": path, "mode": "r"}))
        .expect("open");
    let r = agent
        .execute_timeout(
            "guest-file-read",
            json!({"handle": h, "count": 48 << 20}),
            Duration::from_secs(120),
        )
        .expect("the 48 MiB read");
    let b64 = r["buf-b64"].as_str().expect("buf-b64");
    assert_eq!(b64.len(), 64 << 20);
    assert!(decode_base64(b64).expect("base64") == data);
    agent
        .execute("guest-file-close", json!({"handle": h}))
        .expect("close");
}

#[test]
fn a_half_command_left_by_an_earlier_client_is_flushed() {
    let Some(ga) = QemuGa::start("a_half_command_left_by_an_earlier_client_is_flushed") else {
        return;
    };
    // An earlier client writes half a command and leaves: the agent's parser stays inside it,
    // and without the 0xFF flush nothing sent later would be answered (QEMU-FACTS.md).
    {
        use std::io::Write;
        let mut earlier = UnixStream::connect(ga.socket()).expect("connect");
        earlier
            .write_all(b"{\"execute\":\"guest-ping\", \"arguments\": {\"x\": [1, {\"y\": \"")
            .expect("write");
    }
    let agent = builder()
        .connect_unix(ga.socket())
        .expect("the sync flushes it");
    assert_eq!(agent.execute("guest-ping", ()).expect("ping"), json!({}));
}
