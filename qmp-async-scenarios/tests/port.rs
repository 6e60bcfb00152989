//! One program, written once, compiled against qmp-blocking and against every async client: the
//! only differences are the client type (the import) and `.await` (passed to the macro as tokens).
//! If an async client's names, argument shapes, defaults or errors drifted from the blocking
//! client's, this would not compile, or its output would differ. It runs against real QEMU.

#![allow(clippy::unwrap_used)]

use qmp_proto::Error;
use qmp_qapi::qmp::{event, QueryStatus, QueryVersion};
use qmp_testkit::{Emulator, Qemu, QemuOptions};
use serde_json::json;
use std::path::Path;
use std::time::Duration;

/// The program: `$client` is the client type, `[$($async)*]` what precedes `fn`, and
/// `[$($await)*]` what follows every call (nothing, or `.await`).
macro_rules! vm_tool {
    ($name:ident, $client:ty, [$($async:tt)*], [$($await:tt)*]) => {
        $($async)* fn $name(socket: &Path) -> Result<Vec<String>, Error> {
            let mut out = Vec::new();
            let client = <$client>::builder()
                .timeout(Duration::from_secs(10))
                .connect_timeout(Duration::from_secs(10))
                .connect_unix(socket)$($await)*?;
            out.push(format!("QEMU {}", client.greeting().version));
            out.push(format!("oob: {}", client.oob_enabled()));
            let status = client.query("status")$($await)*?;
            out.push(format!("VM is {}", status["status"].as_str().unwrap_or("?")));
            let version = client.run(&QueryVersion)$($await)*?;
            out.push(format!("major {}", version.qemu.major));
            client.execute("stop", ())$($await)*?;
            let stop = client.wait_event("STOP", |_| true, Duration::from_secs(5))$($await)*?;
            out.push(format!("event {}", stop.name));
            client.execute("cont", ())$($await)*?;
            client.wait_event_typed::<event::Resume>(|_| true, Duration::from_secs(5))$($await)*?;
            client.execute("stop", ())$($await)*?;
            client.wait_event_typed::<event::Stop>(|_| true, Duration::from_secs(5))$($await)*?;
            let stopped = client.run(&QueryStatus)$($await)*?;
            out.push(format!("status {}", stopped.status));
            match client.execute("blockdev-del", json!({"node-name": "nope"}))$($await)* {
                Err(Error::Qmp { command, error }) => {
                    out.push(format!("{command} failed: {}", error.class.as_str()))
                }
                other => panic!("expected a QMP error, got {other:?}"),
            }
            let e = client.execute_oob("query-status", ())$($await)*.unwrap_err();
            out.push(format!("exec-oob refused: {}", matches!(e, Error::Refused { .. })));
            client.execute_timeout("cont", (), Duration::from_secs(5))$($await)*?;
            let resume = client.next_event(Duration::from_secs(5))$($await)*?;
            out.push(format!("event {}", resume.name));
            out.push(format!("pending {}", client.pending()));
            client.quit()$($await)*?;
            out.push(format!("connected {}", client.is_connected()));
            let after = client.execute("query-status", ())$($await)*.unwrap_err();
            out.push(format!("after quit: {after}"));
            Ok(out)
        }
    };
}

vm_tool!(on_blocking, qmp_blocking::Client, [], []);
vm_tool!(on_smol, qmp_smol::Client, [async], [.await]);
vm_tool!(on_async_std, qmp_async_std::Client, [async], [.await]);
vm_tool!(on_tokio, qmp_tokio::Client, [async], [.await]);

fn system(test: &str) -> Option<Qemu> {
    Qemu::start(QemuOptions::new(Emulator::System), test)
}

#[test]
fn the_same_program_runs_the_same_on_every_client() {
    let Some(q) = system("port_blocking") else {
        return;
    };
    let blocking = on_blocking(q.socket()).unwrap();
    let expected = [
        format!("QEMU {}", blocking[0].trim_start_matches("QEMU ")),
        "oob: false".into(),
        "VM is running".into(),
        "major 10".into(),
        "event STOP".into(),
        "status paused".into(),
        "blockdev-del failed: GenericError".into(),
        "exec-oob refused: true".into(),
        "event RESUME".into(),
        "pending 0".into(),
        "connected false".into(),
        "after quit: 'query-status' not sent: QEMU quit and closed the connection".into(),
    ];
    assert_eq!(blocking, expected);

    let q = system("port_smol").unwrap();
    assert_eq!(smol::block_on(on_smol(q.socket())).unwrap(), expected);
    let q = system("port_async_std").unwrap();
    assert_eq!(
        async_std::task::block_on(on_async_std(q.socket())).unwrap(),
        expected
    );
    let q = system("port_tokio").unwrap();
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    assert_eq!(tokio.block_on(on_tokio(q.socket())).unwrap(), expected);
}
