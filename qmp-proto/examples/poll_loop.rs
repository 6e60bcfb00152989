//! The sans-IO session driven by a loop over a non-blocking Unix socket: what an event loop does
//! with qmp-proto, without any of this project's clients. Prints QEMU's version and the VM's run
//! state, then every event until `--events N` events have arrived.
//!
//! `cargo run -p qmp-proto --example poll_loop -- /path/to/qmp.sock [--events N]`
//!
//! A real event loop (epoll, mio, a runtime's reactor) would wait for the socket to be readable
//! where this one sleeps a millisecond after `WouldBlock`; everything else is the same.

use qmp_proto::{CommandId, Config, Output, Session};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or("usage: poll_loop SOCKET [--events N]")?;
    let want_events: usize = match (args.next().as_deref(), args.next()) {
        (Some("--events"), Some(n)) => n.parse()?,
        _ => 0,
    };
    let mut socket = UnixStream::connect(&path)?;
    socket.set_nonblocking(true)?;

    let mut session = Session::new(Config::default());
    // Queued now, sent once negotiation is done (the session sends qmp_capabilities itself).
    let version: CommandId = session.execute("query-version", &())?;
    let status: CommandId = session.execute("query-status", &())?;
    let (mut answers, mut events) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 4096];
    let mut pending_write: Vec<u8> = Vec::new();

    loop {
        // 1. Write what the session released; a short write leaves the rest for next time
        //    (never half a command abandoned: the session's bytes are written in order).
        while let Some(t) = session.poll_transmit() {
            pending_write.extend_from_slice(&t.bytes);
        }
        while !pending_write.is_empty() {
            match socket.write(&pending_write) {
                Ok(n) => drop(pending_write.drain(..n)),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => return Err(e.into()),
            }
        }
        // 2. Read what arrived and feed it to the session.
        match socket.read(&mut buf) {
            Ok(0) => session.receive_eof(),
            Ok(n) => session.receive(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if Instant::now() > deadline {
                    return Err("no answer from QEMU within 10 s".into());
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => session.read_failed(&e),
        }
        // 3. Take what happened.
        while let Some(output) = session.poll_output() {
            match output {
                Output::Greeting(g) => println!("connected to QEMU {}", g.version),
                Output::Ready => {}
                Output::Reply { id, result } => {
                    let value = result?;
                    if id == version {
                        println!("version {}", value["qemu"]);
                    } else if id == status {
                        let state = value["status"].as_str().unwrap_or("?");
                        println!("status {state}");
                    }
                    answers += 1;
                }
                Output::Event(e) => {
                    println!("event {}", e.name);
                    events += 1;
                }
                Output::Warning(w) => eprintln!("warning: {w}"),
                Output::Closed(reason) => return Err(reason.to_string().into()),
            }
        }
        if answers == 2 && events >= want_events {
            return Ok(());
        }
    }
}
