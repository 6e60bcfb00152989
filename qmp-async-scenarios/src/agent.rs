//! Guest-agent scenarios: a real qemu-ga 10.0.2 run on the host (only the commands in
//! qmp_testkit::SAFE_RPCS enabled), behind a fault proxy for stale data and late replies, and a
//! real QEMU whose virtio-serial port has no agent behind it.

use crate::{step, TestRuntime};
use qmp_async::{Agent, AgentBuilder, CallOptions, Error};
use qmp_proto::guest_exec::{decode_base64, encode_base64, ExecRequest};
use qmp_proto::Config;
use qmp_qapi::qga::{GuestGetOsinfo, GuestGetTime, GuestInfo};
use qmp_testkit::{AgentProxy, Emulator, Qemu, QemuGa, QemuOptions, Rule, TempDir};
use serde_json::json;
use std::time::Duration;

fn builder<R: TestRuntime>() -> AgentBuilder<R::Rt> {
    Agent::<R::Rt>::builder()
        .connect_timeout(Duration::from_secs(10))
        .config(Config {
            negotiation_id: Some("t".into()),
            ..Config::agent()
        })
}

/// guest-ping, guest-info, guest-get-osinfo, guest-get-time; untyped and typed.
pub async fn agent_basics<R: TestRuntime>(rt: R) {
    let Some(ga) = QemuGa::start("agent_basics") else {
        return;
    };
    let agent = step(rt, "connect", builder::<R>().connect_unix(ga.socket()))
        .await
        .unwrap();
    assert_eq!(agent.execute("guest-ping", ()).await.unwrap(), json!({}));
    let info = agent.run(&GuestInfo).await.unwrap();
    assert!(info.version.starts_with("10."), "{}", info.version);
    assert!(info
        .supported_commands
        .iter()
        .any(|c| c.name == "guest-shutdown" && !c.success_response));
    let os = agent.run(&GuestGetOsinfo).await.unwrap();
    assert!(os.kernel_release.is_some(), "{os:?}");
    let t = agent.run(&GuestGetTime).await.unwrap();
    assert!(t > 1_600_000_000_000_000_000, "{t}");
    assert_eq!(agent.stats().session.resyncs, 0);
}

/// The guest-exec helper: output, exit code, stdin, a refused program.
pub async fn agent_guest_exec<R: TestRuntime>(rt: R) {
    let Some(ga) = QemuGa::start("agent_guest_exec") else {
        return;
    };
    let agent = step(rt, "connect", builder::<R>().connect_unix(ga.socket()))
        .await
        .unwrap();
    let t = Duration::from_secs(10);
    let out = agent
        .guest_exec(&ExecRequest::new("/bin/echo").arg("hello"), t)
        .await
        .unwrap();
    assert_eq!(
        (out.stdout.as_slice(), out.exit_code),
        (&b"hello\n"[..], Some(0))
    );
    let out = agent
        .guest_exec(&ExecRequest::new("/bin/sh").args(["-c", "exit 3"]), t)
        .await
        .unwrap();
    assert_eq!(out.exit_code, Some(3));
    let out = agent
        .guest_exec(
            &ExecRequest::new("/bin/cat").input(&b"in\xff\x00put"[..]),
            t,
        )
        .await
        .unwrap();
    assert_eq!(out.stdout, b"in\xff\x00put");
    assert!(matches!(
        agent.guest_exec(&ExecRequest::new("/nonexistent"), t).await,
        Err(Error::Qmp { .. })
    ));
}

/// guest-file-open/write/read/close of a temp file, with a 10 MiB read.
pub async fn agent_file_10_mib<R: TestRuntime>(rt: R) {
    let Some(ga) = QemuGa::start("agent_file_10_mib") else {
        return;
    };
    let agent = step(rt, "connect", builder::<R>().connect_unix(ga.socket()))
        .await
        .unwrap();
    let path = ga.dir().join("f.bin");
    let data: Vec<u8> = (0..10u32 << 20).map(|i| (i ^ (i >> 9)) as u8).collect();
    let h = agent
        .execute("guest-file-open", json!({"path": path, "mode": "w"}))
        .await
        .unwrap();
    for chunk in data.chunks(2 << 20) {
        agent
            .execute(
                "guest-file-write",
                json!({"handle": h, "buf-b64": encode_base64(chunk)}),
            )
            .await
            .unwrap();
    }
    agent
        .execute("guest-file-close", json!({"handle": h}))
        .await
        .unwrap();
    let h = agent
        .execute("guest-file-open", json!({"path": path, "mode": "r"}))
        .await
        .unwrap();
    let r = agent
        .execute("guest-file-read", json!({"handle": h, "count": 10 << 20}))
        .await
        .unwrap();
    let got = decode_base64(r["buf-b64"].as_str().unwrap()).unwrap();
    assert!(got == data, "read back what was written");
    agent
        .execute("guest-file-close", json!({"handle": h}))
        .await
        .unwrap();
}

/// Stale data before the sentinel (a full reply with the next command's id, half a reply), and
/// a replayed reply to an old sync id.
pub async fn agent_stale_data<R: TestRuntime>(rt: R) {
    let Some(ga) = QemuGa::start("agent_stale_data") else {
        return;
    };
    let proxy = AgentProxy::start(
        ga.socket(),
        vec![Rule::Inject {
            trigger: "guest-sync-delimited".into(),
            bytes: b"\xff{\"return\": 4242}\n{\"return\": {\"stale\": 1}, \"id\": 1}\n{\"return\": {\"ha"
                .to_vec(),
        }],
    );
    let agent = step(rt, "connect", builder::<R>().connect_unix(proxy.path()))
        .await
        .unwrap();
    let info = agent.execute("guest-info", ()).await.unwrap();
    assert!(info["version"].is_string(), "its own reply: {info}");
    assert!(agent.stats().session.stale >= 3, "{:?}", agent.stats());
    assert!(agent.take_warnings().is_empty());
}

/// A call times out; the late reply arrives; the next command gets its own reply.
pub async fn agent_timeout_then_late_reply<R: TestRuntime>(rt: R) {
    let Some(ga) = QemuGa::start("agent_timeout_then_late_reply") else {
        return;
    };
    let proxy = AgentProxy::start(
        ga.socket(),
        vec![Rule::Delay {
            trigger: "guest-get-osinfo".into(),
            delay: Duration::from_millis(1500),
        }],
    );
    let agent = step(rt, "connect", builder::<R>().connect_unix(proxy.path()))
        .await
        .unwrap();
    let short = CallOptions::new().timeout(Duration::from_millis(300));
    match agent.execute_with("guest-get-osinfo", (), short).await {
        Err(e) if e.is_timeout() => {}
        other => panic!("{other:?}"),
    }
    let t = step(rt, "after the timeout", agent.execute("guest-get-time", ()))
        .await
        .unwrap();
    assert!(t.is_i64(), "its own reply, not the late osinfo: {t}");
    assert_eq!(agent.stats().session.resyncs, 1);
}

/// A command that does not reply on success completes by the probe behind it (the proxy
/// swallows it: the agent never sees it).
pub async fn agent_no_reply_command<R: TestRuntime>(rt: R) {
    let Some(ga) = QemuGa::start("agent_no_reply_command") else {
        return;
    };
    let proxy = AgentProxy::start(
        ga.socket(),
        vec![Rule::Swallow {
            trigger: "guest-suspend-ram".into(),
        }],
    );
    let agent = step(rt, "connect", builder::<R>().connect_unix(proxy.path()))
        .await
        .unwrap();
    let v = step(rt, "suspend", agent.execute("guest-suspend-ram", ()))
        .await
        .unwrap();
    assert_eq!(v, json!({}));
    // Refused by the real agent (not allowed): its error carries the id.
    assert!(matches!(
        agent.execute("guest-shutdown", ()).await,
        Err(Error::Qmp { .. })
    ));
    agent.execute("guest-ping", ()).await.unwrap();
}

/// Over TCP (a forwarder to the agent's socket).
pub async fn agent_over_tcp<R: TestRuntime>(rt: R) {
    let Some(ga) = QemuGa::start("agent_over_tcp") else {
        return;
    };
    let addr = qmp_testkit::tcp_forwarder(ga.socket());
    let agent = step(rt, "connect", builder::<R>().connect_tcp(addr))
        .await
        .unwrap();
    assert!(agent.transport().starts_with("tcp:"));
    agent.execute("guest-ping", ()).await.unwrap();
}

/// Over any AsyncRead + AsyncWrite: the two halves of a socket opened by the caller.
pub async fn agent_over_io<R: TestRuntime>(rt: R) {
    let Some(ga) = QemuGa::start("agent_over_io") else {
        return;
    };
    let stream = async_io::Async::<std::os::unix::net::UnixStream>::connect(ga.socket())
        .await
        .unwrap();
    let (reader, writer) = futures::AsyncReadExt::split(stream);
    let agent = step(rt, "connect", builder::<R>().connect_io(reader, writer))
        .await
        .unwrap();
    assert_eq!(agent.transport(), "io");
    assert_eq!(agent.execute("guest-ping", ()).await.unwrap(), json!({}));
}

/// QEMU with a virtio-serial port and no agent: the connect fails with AgentNotResponding.
pub async fn agent_not_responding<R: TestRuntime>(rt: R) {
    if qmp_testkit::require(Emulator::System, "agent_not_responding").is_none() {
        return;
    }
    let dir = TempDir::new().unwrap();
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
    let Some(_qemu) = Qemu::start(options, "agent_not_responding") else {
        return;
    };
    let connect = Agent::<R::Rt>::builder()
        .connect_timeout(Duration::from_secs(1))
        .connect_unix(&sock);
    match step(rt, "connect", connect).await {
        Err(Error::AgentNotResponding { after, .. }) => assert_eq!(after, Duration::from_secs(1)),
        other => panic!("{other:?}"),
    }
}
