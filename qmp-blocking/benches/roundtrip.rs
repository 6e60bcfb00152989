//! Sequential `query-version` round trips against qemu-storage-daemon: the client beside a raw
//! baseline (a plain `UnixStream` writing a fixed command and reading one line), in the same run.
//!
//! Both talk to the same qemu-storage-daemon over two monitors, so they can be measured
//! alternately. criterion measures each; then an interleaved run (raw and client in alternating
//! blocks) prints the ratio, which is what to compare on a shared machine.
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
}

impl Raw {
    fn connect(path: &Path) -> Raw {
        let writer = UnixStream::connect(path).unwrap();
        let mut reader = BufReader::new(writer.try_clone().unwrap());
        let mut raw = Raw {
            writer,
            reader: BufReader::new(reader.get_mut().try_clone().unwrap()),
            line: String::new(),
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

    /// Same shape as the client's command: no arguments, a short string id.
    fn round_trip(&mut self) {
        self.writer
            .write_all(b"{\"execute\":\"query-version\",\"id\":\"abcd1\"}\n")
            .unwrap();
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
    let until = Instant::now() + Duration::from_secs(10);
    while !raw_sock.exists() {
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
    const ROUNDS: usize = 50;
    const BLOCK: u32 = 200;
    let (mut raw, mut client) = (Duration::ZERO, Duration::ZERO);
    let mut ratios = Vec::new();
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
        raw += r;
        client += c;
        ratios.push(c.as_secs_f64() / r.as_secs_f64());
    }
    ratios.sort_by(f64::total_cmp);
    let n = f64::from(BLOCK) * ROUNDS as f64;
    let raw_rate = n / raw.as_secs_f64();
    let client_rate = n / client.as_secs_f64();
    eprintln!(
        "interleaved ({ROUNDS} rounds x {BLOCK} round trips each): raw {:.1} us ({raw_rate:.0}/s), \
         client {:.1} us ({client_rate:.0}/s); client rate = {:.1}% of raw; \
         per-round time ratio client/raw: median {:.3}, min {:.3}, max {:.3}",
        raw.as_secs_f64() * 1e6 / n,
        client.as_secs_f64() * 1e6 / n,
        100.0 * client_rate / raw_rate,
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1],
    );
}

fn bench(c: &mut Criterion) {
    let Some(mut s) = setup() else { return };
    let mut group = c.benchmark_group("query-version round trip");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    group.bench_function("raw UnixStream", |b| b.iter(|| s.raw.round_trip()));
    group.bench_function("qmp-blocking Client", |b| {
        b.iter(|| client_round_trip(&s.client))
    });
    group.finish();
    interleaved(&mut s);
}

criterion_group!(benches, bench);
criterion_main!(benches);
