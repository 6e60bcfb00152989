//! `Session` against a bare `Decoder` on a big reply (the 117 KB `query-qmp-schema` reply of the
//! qsd-compact capture), fed in pieces of a given size. Meant for callgrind, whose instruction
//! counts do not depend on the machine's load (BENCHMARKS.md, "Session against Decoder"):
//!
//! ```sh
//! cargo bench -p qmp-proto --bench session_overhead --no-run   # prints the binary's path
//! valgrind --tool=callgrind BINARY session 4096 20   # or: decoder 4096 20; session 1 2; ...
//! ```
//!
//! Arguments: `decoder` or `session`, the piece size in bytes, the number of replies. Both drop
//! every message as soon as it is out. Without arguments (as `cargo bench` runs it) it does one
//! short pass of each, as a smoke test.

#![allow(missing_docs, clippy::unwrap_used)]

use qmp_proto::{Config, Decoder, Limits, Output, Session};
use std::hint::black_box;
use std::path::PathBuf;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let capture = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/captures/qsd-compact.server.bin"),
    )
    .unwrap();
    let text = std::str::from_utf8(&capture).unwrap();
    let greeting = format!("{}\r\n", text.split("\r\n").next().unwrap());
    // The reply without its id, which each round appends (QEMU writes a return's id last).
    let line = text
        .split("\r\n")
        .find(|l| l.ends_with("\"id\": 4}"))
        .unwrap();
    let head = &line.as_bytes()[..line.len() - "4}".len()];
    match args.as_slice() {
        [mode, chunk, reps] => run(
            mode,
            chunk.parse().unwrap(),
            reps.parse().unwrap(),
            &greeting,
            head,
        ),
        _ => {
            run("decoder", 4096, 2, &greeting, head);
            run("session", 4096, 2, &greeting, head);
        }
    }
}

fn run(mode: &str, chunk: usize, reps: u64, greeting: &str, head: &[u8]) {
    let reply = |n: u64| {
        let mut r = head.to_vec();
        r.extend_from_slice(format!("{n}}}\r\n").as_bytes());
        r
    };
    match mode {
        "decoder" => {
            let mut d = Decoder::new(&Limits::default());
            let mut out = Vec::new();
            for _ in 1..=reps {
                for c in reply(1).chunks(chunk) {
                    d.feed(c, &mut out);
                    for m in out.drain(..) {
                        assert!(black_box(m).is_ok());
                    }
                }
            }
        }
        "session" => {
            let mut s = Session::new(Config {
                negotiation_id: Some("cap".into()),
                ..Config::default()
            });
            s.receive(greeting.as_bytes());
            s.poll_transmit().unwrap();
            s.receive(b"{\"return\": {}, \"id\": \"cap\"}\r\n");
            while s.poll_output().is_some() {}
            for _ in 0..reps {
                s.execute("query-qmp-schema", &()).unwrap();
                s.poll_transmit().unwrap();
                // One command at a time: its wire id is always 1 (docs/PROTOCOL.md rule 5).
                for c in reply(1).chunks(chunk) {
                    s.receive(c);
                    while let Some(o) = s.poll_output() {
                        let Output::Reply { result, .. } = o else {
                            panic!("{o:?}")
                        };
                        assert!(black_box(result).is_ok());
                    }
                }
            }
        }
        _ => panic!("mode: decoder or session"),
    }
}
