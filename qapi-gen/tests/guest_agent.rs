//! The guest agent's generated types against a real qemu-ga 10.0.2, run on this host on a Unix
//! socket with only harmless commands allowed. Commands are encoded from the generated types and
//! replies decoded into them, without a fallback; every command qemu-ga reports has a type.
//! (qemu-ga sends no greeting and frames replies with `\n`; the bytes are moved by hand here.)

mod support;

use qmp_proto::Command;
use qmp_qapi::qga;
use qmp_testkit::TempDir;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const ALLOWED: &str = "guest-sync,guest-sync-delimited,guest-ping,guest-info,guest-get-osinfo,guest-get-time,guest-get-host-name,guest-get-timezone,guest-network-get-interfaces,guest-get-vcpus";

struct Agent {
    child: Child,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    _dir: TempDir,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Agent {
    fn start() -> Option<Agent> {
        if qmp_testkit::find_binary("qemu-ga").is_none() {
            assert!(
                !qmp_testkit::in_ci(),
                "qemu-ga is not installed and CI is set: run scripts/install-qemu"
            );
            eprintln!("\n*** SKIPPED guest agent tests: qemu-ga not found on PATH ***\n");
            return None;
        }
        let dir = TempDir::new().expect("temp dir");
        let sock = dir.path().join("qga.sock");
        let child = std::process::Command::new("qemu-ga")
            .arg("-m")
            .arg("unix-listen")
            .arg("-p")
            .arg(&sock)
            .arg("-t")
            .arg(dir.path())
            .arg("-f")
            .arg(dir.path().join("qga.pid"))
            .arg(format!("--allow-rpcs={ALLOWED}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn qemu-ga");
        let deadline = Instant::now() + Duration::from_secs(10);
        let stream = loop {
            match UnixStream::connect(&sock) {
                Ok(s) => break s,
                Err(e) if Instant::now() > deadline => panic!("qemu-ga did not listen: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        Some(Agent {
            child,
            reader: BufReader::new(stream.try_clone().expect("clone")),
            writer: stream,
            _dir: dir,
        })
    }

    /// Runs a generated command and decodes its reply into the command's output type.
    fn run<C: Command>(&mut self, cmd: &C) -> C::Output {
        let args = serde_json::to_value(cmd).expect("encode");
        let mut msg = json!({"execute": C::NAME});
        if args.as_object().is_some_and(|a| !a.is_empty()) {
            msg["arguments"] = args;
        }
        writeln!(self.writer, "{msg}").expect("write");
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("read");
        let mut reply: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        let ret = reply
            .get_mut("return")
            .map(Value::take)
            .unwrap_or_else(|| panic!("{}: {line}", C::NAME));
        C::decode_output(ret).unwrap_or_else(|e| panic!("{}: {e}", C::NAME))
    }
}

#[test]
fn guest_agent_replies_decode_typed() {
    let Some(mut agent) = Agent::start() else {
        return;
    };
    let fallbacks = qmp_qapi::rt::fallbacks();
    assert_eq!(agent.run(&qga::GuestSync { id: 41 }), 41);
    agent.run(&qga::GuestPing);
    let info = agent.run(&qga::GuestInfo);
    assert_eq!(info.version, "10.0.2");
    // Every command this qemu-ga knows has a generated type.
    let names: Vec<&str> = info
        .supported_commands
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    let missing: Vec<&&str> = names
        .iter()
        .filter(|n| support::qga_table::command(n).is_none())
        .collect();
    assert!(missing.is_empty(), "{missing:?}");
    eprintln!(
        "qemu-ga: {} of {} commands have generated counterparts",
        names.len() - missing.len(),
        names.len()
    );
    let ping = info
        .supported_commands
        .iter()
        .find(|c| c.name == "guest-ping")
        .expect("guest-ping");
    assert!(ping.enabled && ping.success_response);
    let shutdown = info
        .supported_commands
        .iter()
        .find(|c| c.name == "guest-shutdown")
        .expect("guest-shutdown");
    assert!(!shutdown.enabled && !shutdown.success_response);

    let os = agent.run(&qga::GuestGetOsinfo);
    assert!(os.kernel_release.is_some_and(|k| !k.is_empty()));
    assert!(agent.run(&qga::GuestGetTime) > 1_600_000_000_000_000_000);
    assert!(!agent.run(&qga::GuestGetHostName).host_name.is_empty());
    agent.run(&qga::GuestGetTimezone);
    let interfaces = agent.run(&qga::GuestNetworkGetInterfaces);
    assert!(interfaces.iter().any(|i| i.name == "lo"), "{interfaces:?}");
    assert!(!agent.run(&qga::GuestGetVcpus).is_empty());
    assert_eq!(
        qmp_qapi::rt::fallbacks(),
        fallbacks,
        "a reply decoded only to a fallback"
    );
}
