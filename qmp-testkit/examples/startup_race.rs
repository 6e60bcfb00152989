//! Measures QEMU 10.0.2's startup race: how often the first client connection after
//! [`Qemu::start`]'s probes fails. Each round starts a qemu-storage-daemon, lets the testkit make
//! `PROBES` probe connections, then connects once more as a client would: greeting, `qmp_capabilities`
//! with `oob`, one `query-version`, its reply. Prints each failure and the count.
//!
//! `cargo run -p qmp-testkit --example startup_race -- ROUNDS PROBES` (defaults 1000 and 2).
//! The race shows under load (docs/async-engine.md, "QEMU's startup race"); run it beside a
//! build or two spinning processes.

use qmp_proto::{Config, Output, Session, State};
use qmp_testkit::{Emulator, Qemu, QemuOptions};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// One client connection through to the reply of `query-version`; why it failed otherwise.
fn client(q: &Qemu) -> Result<(), String> {
    let mut stream = UnixStream::connect(q.socket()).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let mut session = Session::new(Config {
        request_oob: true,
        ..Config::default()
    });
    let id = session
        .execute("query-version", &())
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 4096];
    loop {
        while let Some(t) = session.poll_transmit() {
            stream
                .write_all(&t.bytes)
                .map_err(|e| format!("write: {e}"))?;
        }
        while let Some(out) = session.poll_output() {
            match out {
                Output::Reply { id: got, result } if got == id => {
                    return result.map(drop).map_err(|e| format!("reply: {e}"));
                }
                Output::Warning(w) => return Err(format!("warning: {w:?}")),
                _ => {}
            }
        }
        if session.state() == State::Closed {
            return Err(format!("closed: {:?}", session.close_reason()));
        }
        match stream.read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => session.read_failed(&e),
            Ok(0) => session.receive_eof(),
            Ok(n) => session.receive(&buf[..n]),
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().map_or(1000, |a| a.parse().expect("ROUNDS"));
    let probes: usize = args.next().map_or(2, |a| a.parse().expect("PROBES"));
    let mut failed = 0;
    for round in 0..rounds {
        let options = QemuOptions {
            probes,
            ..QemuOptions::new(Emulator::StorageDaemon)
        };
        let q = Qemu::start(options, "startup_race").expect("qemu-storage-daemon");
        if let Err(e) = client(&q) {
            failed += 1;
            println!("round {round}: {e}");
        }
    }
    println!("{failed} of {rounds} first client connections failed after {probes} probes");
}
