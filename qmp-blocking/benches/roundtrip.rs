//! Sequential `query-version` round trips against qemu-storage-daemon: the client beside a raw
//! baseline (a plain `UnixStream` writing a fixed command and reading one line), in the same run.
//!
//! Both talk to the same qemu-storage-daemon over two monitors, so they can be measured
//! alternately. criterion measures each; then an interleaved run (raw and client in alternating
//! blocks of 100) prints the ratio, which is what to compare on a shared machine: the median of
//! the per-round ratios resists the stalls other processes cause.
//!
//! Two baselines: `{"execute":"query-version","id":1}`, the fixed shortest command (the one every
//! client is measured against, BENCHMARKS.md), and the very bytes the client sends. QEMU reads
//! its input one byte per syscall, so the id's length alone moves the round trip by a few
//! microseconds per byte. Since ids are reused (docs/PROTOCOL.md rule 5) a client making one
//! call at a time sends `"id":1` every time, so the two baselines now write the same bytes;
//! both are kept so that earlier results (a 5-digit counter) stay comparable.
//!
//! `cargo bench -p qmp-blocking --bench roundtrip`

#![allow(missing_docs, clippy::unwrap_used)]

use criterion::{criterion_group, criterion_main, Criterion};
use qmp_blocking::Client;
use qmp_testkit::{Emulator, Qemu, QemuOptions, TempDir};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// The baseline: one write of a fixed command, one line read.
struct Raw {
    writer: UnixStream,
    reader: BufReader<UnixStream>,
    line: String,
    command: Vec<u8>,
}

impl Raw {
    fn connect(path: &Path) -> Raw {
        let writer = UnixStream::connect(path).unwrap();
        let mut reader = BufReader::new(writer.try_clone().unwrap());
        let mut raw = Raw {
            writer,
            reader: BufReader::new(reader.get_mut().try_clone().unwrap()),
            line: String::new(),
            command: Vec::with_capacity(64),
        };
        raw.read_line(); // greeting
        raw.writer
            .write_all(b"{\"execute\":\"qmp_capabilities\",\"id\":\"c\"}\n")
            .unwrap();
        raw.read_line();
        raw
    }

    fn read_line(&mut self) {
        self.line.clear();
        self.reader.read_line(&mut self.line).unwrap();
    }

    /// The baseline: `"id":1`, the minimum QEMU has to read.
    fn round_trip_short(&mut self) {
        self.writer
            .write_all(b"{\"execute\":\"query-version\",\"id\":1}\n")
            .unwrap();
        self.read_line();
        debug_assert!(self.line.contains("\"return\""));
    }

    /// The same bytes the client sends: no arguments, and one call at a time, id 1 (the smallest
    /// free id). QEMU reads its input one byte per syscall, so each byte of id costs QEMU a few
    /// microseconds.
    fn round_trip(&mut self) {
        self.command.clear();
        writeln!(self.command, "{{\"execute\":\"query-version\",\"id\":1}}").unwrap();
        self.writer.write_all(&self.command).unwrap();
        self.read_line();
        debug_assert!(self.line.contains("\"return\""));
    }
}

fn client_round_trip(c: &Client) {
    let v = c.execute("query-version", ()).unwrap();
    debug_assert!(v.is_object());
}

struct Setup {
    _qsd: Qemu,
    _dir: TempDir,
    raw: Raw,
    client: Client,
}

fn setup() -> Option<Setup> {
    let dir = TempDir::new().unwrap();
    let raw_sock = dir.path().join("raw.sock");
    let mut opts = QemuOptions::new(Emulator::StorageDaemon);
    opts.extra_args = vec![
        "--chardev".into(),
        format!(
            "socket,path={},server=on,wait=off,id=raw",
            raw_sock.display()
        ),
        "--monitor".into(),
        "chardev=raw".into(),
    ];
    let qsd = Qemu::start(opts, "roundtrip bench")?;
    // The socket file appears before QEMU listens on it: retry until a connect succeeds.
    let until = Instant::now() + Duration::from_secs(10);
    while UnixStream::connect(&raw_sock).is_err() {
        assert!(Instant::now() < until, "raw monitor socket did not appear");
        std::thread::sleep(Duration::from_millis(5));
    }
    let raw = Raw::connect(&raw_sock);
    let client = Client::connect_unix(qsd.socket()).unwrap();
    Some(Setup {
        _qsd: qsd,
        _dir: dir,
        raw,
        client,
    })
}

fn interleaved(s: &mut Setup) {
    const ROUNDS: usize = 60;
    const BLOCK: u32 = 100;
    let (mut raw, mut short, mut client) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let (mut ratios, mut short_ratios) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let t = Instant::now();
        for _ in 0..BLOCK {
            s.raw.round_trip();
        }
        let r = t.elapsed();
        let t = Instant::now();
        for _ in 0..BLOCK {
            client_round_trip(&s.client);
        }
        let c = t.elapsed();
        let t = Instant::now();
        for _ in 0..BLOCK {
            s.raw.round_trip_short();
        }
        let sh = t.elapsed();
        raw += r;
        client += c;
        short += sh;
        ratios.push(c.as_secs_f64() / r.as_secs_f64());
        short_ratios.push(c.as_secs_f64() / sh.as_secs_f64());
    }
    let n = f64::from(BLOCK) * ROUNDS as f64;
    let us = |d: Duration| d.as_secs_f64() * 1e6 / n;
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[v.len() / 2], v[0], v[v.len() - 1])
    };
    let (m, lo, hi) = median(&mut ratios);
    let (ms, los, his) = median(&mut short_ratios);
    eprintln!(
        "interleaved, {ROUNDS} rounds x {BLOCK} round trips per variant:\n  \
         raw, same bytes as the client: {:.1} us/op ({:.0}/s)\n  \
         raw, \"id\":1:                 {:.1} us/op ({:.0}/s)\n  \
         qmp-blocking Client:           {:.1} us/op ({:.0}/s)\n  \
         client rate vs raw same bytes: median of rounds {:.1}%, overall {:.1}%  (per-round time ratio client/raw: median {m:.3}, min {lo:.3}, max {hi:.3})\n  \
         client rate vs raw \"id\":1:   median of rounds {:.1}%, overall {:.1}%  (per-round time ratio client/raw: median {ms:.3}, min {los:.3}, max {his:.3})",
        us(raw),
        1e6 / us(raw),
        us(short),
        1e6 / us(short),
        us(client),
        1e6 / us(client),
        100.0 / m,
        100.0 * raw.as_secs_f64() / client.as_secs_f64(),
        100.0 / ms,
        100.0 * short.as_secs_f64() / client.as_secs_f64(),
    );
}

fn bench(c: &mut Criterion) {
    let Some(mut s) = setup() else { return };
    let mut group = c.benchmark_group("query-version round trip");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    group.bench_function("raw UnixStream, same bytes", |b| {
        b.iter(|| s.raw.round_trip())
    });
    group.bench_function("raw UnixStream, \"id\":1", |b| {
        b.iter(|| s.raw.round_trip_short())
    });
    group.bench_function("qmp-blocking Client", |b| {
        b.iter(|| client_round_trip(&s.client))
    });
    group.finish();
    interleaved(&mut s);
}

criterion_group!(benches, bench);
criterion_main!(benches);
