//! Round trips of `query-version` against qemu-storage-daemon: raw std `UnixStream` baselines,
//! qmp-smol and qmp-async-std. Sequential (one command at a time) and pipelined (100 in flight).
//! Run: `cargo bench -p qmp-async-scenarios --bench round_trip -- --noplot`.
//!
//! The figure to compare is the *interleaved* run printed first (on stderr): short alternating
//! blocks of every contender, and the median of the per-block time ratios to raw, which resists
//! the load of a shared machine changing between contenders. Criterion's separate numbers follow.
//!
//! Two raw baselines, because QEMU reads its input one byte per syscall and so the command's
//! length matters as much as the client: *raw, same bytes* writes exactly what the clients write
//! (ids are reused, smallest first: `"id":1` one at a time, `1`..=`100` for 100 in flight,
//! docs/PROTOCOL.md rule 5); *raw `"id":1`* writes `{"execute":"query-version","id":1}`, the
//! fixed shortest command every client is measured against (BENCHMARKS.md). Sequentially the two
//! send the same bytes.

#![allow(missing_docs, clippy::unwrap_used)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures::future::join_all;
use qmp_async::{Client, Runtime};
use qmp_testkit::{Emulator, Qemu, QemuOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

const PIPELINE: usize = 100;
const SHORT: &[u8] = b"{\"execute\":\"query-version\",\"id\":1}\n";
/// Commands each client runs before measuring.
const WARM_UP: u64 = 10_000;

fn qsd() -> Qemu {
    Qemu::start(
        QemuOptions::new(Emulator::StorageDaemon),
        "round_trip bench",
    )
    .expect("qemu-storage-daemon is needed for this benchmark")
}

/// A negotiated raw connection.
struct Raw {
    writer: UnixStream,
    reader: BufReader<UnixStream>,
    line: String,
    batch: Vec<u8>,
}

impl Raw {
    fn connect(q: &Qemu) -> Raw {
        let writer = UnixStream::connect(q.socket()).unwrap();
        writer
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut raw = Raw {
            reader: BufReader::new(writer.try_clone().unwrap()),
            writer,
            line: String::new(),
            batch: Vec::new(),
        };
        raw.read_line(); // greeting
        raw.writer
            .write_all(b"{\"execute\":\"qmp_capabilities\",\"id\":\"r0\"}\n")
            .unwrap();
        // A second greeting may come first (QEMU's startup race): read up to the reply.
        loop {
            raw.read_line();
            if raw.line.contains("\"return\"") {
                break;
            }
        }
        raw
    }

    fn read_line(&mut self) {
        self.line.clear();
        self.reader.read_line(&mut self.line).unwrap();
    }

    /// `n` commands written with one `write_all`, then their `n` replies read. `short`:
    /// `"id":1`; otherwise the clients' bytes.
    fn round_trips(&mut self, n: usize, short: bool) {
        self.batch.clear();
        for k in 1..=n {
            if short {
                self.batch.extend_from_slice(SHORT);
            } else {
                // The k-th of n in flight holds id k (the smallest free).
                writeln!(self.batch, "{{\"execute\":\"query-version\",\"id\":{k}}}").unwrap();
            }
        }
        self.writer.write_all(&self.batch).unwrap();
        for _ in 0..n {
            self.read_line();
        }
    }
}

async fn sequential<R: Runtime>(client: &Client<R>, iters: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        client.execute("query-version", ()).await.unwrap();
    }
    start.elapsed()
}

async fn pipelined<R: Runtime>(client: &Client<R>, batches: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..batches {
        let calls = (0..PIPELINE).map(|_| client.execute("query-version", ()));
        for r in join_all(calls).await {
            r.unwrap();
        }
    }
    start.elapsed()
}

struct Setup {
    _daemons: Vec<Qemu>,
    raw: Raw,
    smol: qmp_smol::Client,
    std: qmp_async_std::Client,
}

/// One daemon per contender (the two raw baselines share one).
fn setup() -> Setup {
    let daemons = vec![qsd(), qsd(), qsd()];
    let raw = Raw::connect(&daemons[0]);
    let smol = smol::block_on(qmp_smol::Client::connect_unix(daemons[1].socket())).unwrap();
    let std = async_std::task::block_on(qmp_async_std::Client::connect_unix(daemons[2].socket()))
        .unwrap();
    // Warm both clients up (ids are reused, so this changes no id's length).
    smol::block_on(pipelined(&smol, WARM_UP / PIPELINE as u64));
    async_std::task::block_on(pipelined(&std, WARM_UP / PIPELINE as u64));
    Setup {
        _daemons: daemons,
        raw,
        smol,
        std,
    }
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn interleaved(s: &mut Setup) {
    const BLOCKS: usize = 30;
    eprintln!(
        "interleaved, {BLOCKS} blocks per mode (load average before: {})",
        load()
    );
    for (mode, per_block, batch) in [
        ("sequential", 200u64, 1usize),
        ("pipelined_100", 10, PIPELINE),
    ] {
        // Per block: time of raw same bytes, raw "id":1, smol, async-std.
        let mut times: Vec<[f64; 4]> = Vec::new();
        for _ in 0..BLOCKS {
            let t = Instant::now();
            for _ in 0..per_block {
                s.raw.round_trips(batch, false);
            }
            let raw = t.elapsed().as_secs_f64();
            let (smol, std) = if batch == 1 {
                (
                    smol::block_on(sequential(&s.smol, per_block)),
                    async_std::task::block_on(sequential(&s.std, per_block)),
                )
            } else {
                (
                    smol::block_on(pipelined(&s.smol, per_block)),
                    async_std::task::block_on(pipelined(&s.std, per_block)),
                )
            };
            let t = Instant::now();
            for _ in 0..per_block {
                s.raw.round_trips(batch, true);
            }
            let short = t.elapsed().as_secs_f64();
            times.push([raw, short, smol.as_secs_f64(), std.as_secs_f64()]);
        }
        let commands = (BLOCKS as u64 * per_block * batch as u64) as f64;
        let us = |k: usize| times.iter().map(|t| t[k]).sum::<f64>() * 1e6 / commands;
        let median_ratio = |k: usize, base: usize| {
            let mut r: Vec<f64> = times.iter().map(|t| t[base] / t[k]).collect();
            r.sort_by(f64::total_cmp);
            r[r.len() / 2]
        };
        eprintln!(
            "  {mode}, {} commands per contender:\n    \
             raw, same bytes: {:.1} us/command\n    \
             raw, \"id\":1:  {:.1} us/command\n    \
             qmp-smol:        {:.1} us/command; rate vs raw same bytes, median of blocks {:.1}%; vs \"id\":1 {:.1}%\n    \
             qmp-async-std:   {:.1} us/command; rate vs raw same bytes, median of blocks {:.1}%; vs \"id\":1 {:.1}%",
            commands,
            us(0),
            us(1),
            us(2),
            100.0 * median_ratio(2, 0),
            100.0 * median_ratio(2, 1),
            us(3),
            100.0 * median_ratio(3, 0),
            100.0 * median_ratio(3, 1),
        );
    }
    eprintln!("  load average after: {}", load());
}

fn bench(c: &mut Criterion) {
    let mut s = setup();
    interleaved(&mut s);

    for (name, batch) in [("sequential", 1usize), ("pipelined_100", PIPELINE)] {
        let mut group = c.benchmark_group(name);
        group
            .throughput(Throughput::Elements(batch as u64))
            .sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3));
        group.bench_function("raw, same bytes", |b| {
            b.iter(|| s.raw.round_trips(batch, false))
        });
        group.bench_function("raw, \"id\":1", |b| {
            b.iter(|| s.raw.round_trips(batch, true))
        });
        let (smol_client, std_client) = (&s.smol, &s.std);
        group.bench_function("qmp-smol", |b| {
            b.iter_custom(|iters| {
                if batch == 1 {
                    smol::block_on(sequential(smol_client, iters))
                } else {
                    smol::block_on(pipelined(smol_client, iters))
                }
            })
        });
        group.bench_function("qmp-async-std", |b| {
            b.iter_custom(|iters| {
                if batch == 1 {
                    async_std::task::block_on(sequential(std_client, iters))
                } else {
                    async_std::task::block_on(pipelined(std_client, iters))
                }
            })
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
