//! Round trips of `query-version` against qemu-storage-daemon: a raw std `UnixStream` baseline,
//! qmp-smol and qmp-async-std, in one criterion run. Sequential (one command at a time) and
//! pipelined (100 in flight). Run: `cargo bench -p qmp-async-scenarios --bench round_trip`.

#![allow(missing_docs, clippy::unwrap_used)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures::future::join_all;
use qmp_async::{Client, Options};
use qmp_testkit::{Emulator, Qemu, QemuOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

const PIPELINE: usize = 100;
const COMMAND: &[u8] = b"{\"execute\":\"query-version\",\"id\":\"r1\"}\n";

fn qsd() -> Qemu {
    Qemu::start(
        QemuOptions::new(Emulator::StorageDaemon),
        "round_trip bench",
    )
    .expect("qemu-storage-daemon is needed for this benchmark")
}

/// A negotiated raw connection: greeting read, `qmp_capabilities` answered.
fn raw_connect(q: &Qemu) -> (UnixStream, BufReader<UnixStream>) {
    let stream = UnixStream::connect(q.socket()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    (&stream)
        .write_all(b"{\"execute\":\"qmp_capabilities\",\"id\":\"r0\"}\n")
        .unwrap();
    // A second greeting may come first (see qmp-async-scenarios): read up to the reply.
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        if line.contains("\"return\"") {
            break;
        }
    }
    (stream, reader)
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("sequential");
    group
        .throughput(Throughput::Elements(1))
        .sample_size(20)
        .measurement_time(Duration::from_secs(5));
    {
        let q = qsd();
        let (mut stream, mut reader) = raw_connect(&q);
        let mut line = String::new();
        group.bench_function("raw", |b| {
            b.iter(|| {
                stream.write_all(COMMAND).unwrap();
                line.clear();
                reader.read_line(&mut line).unwrap();
            })
        });
    }
    {
        let q = qsd();
        let client =
            smol::block_on(qmp_smol::connect_unix(q.socket(), Options::default())).unwrap();
        group.bench_function("qmp-smol", |b| {
            b.iter_custom(|iters| smol::block_on(sequential(&client, iters)))
        });
    }
    {
        let q = qsd();
        let client =
            async_std::task::block_on(qmp_async_std::connect_unix(q.socket(), Options::default()))
                .unwrap();
        group.bench_function("qmp-async-std", |b| {
            b.iter_custom(|iters| async_std::task::block_on(sequential(&client, iters)))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("pipelined_100");
    group
        .throughput(Throughput::Elements(PIPELINE as u64))
        .sample_size(20)
        .measurement_time(Duration::from_secs(5));
    {
        let q = qsd();
        let (mut stream, mut reader) = raw_connect(&q);
        let batch = COMMAND.repeat(PIPELINE);
        let mut line = String::new();
        group.bench_function("raw", |b| {
            b.iter(|| {
                stream.write_all(&batch).unwrap();
                for _ in 0..PIPELINE {
                    line.clear();
                    reader.read_line(&mut line).unwrap();
                }
            })
        });
    }
    {
        let q = qsd();
        let client =
            smol::block_on(qmp_smol::connect_unix(q.socket(), Options::default())).unwrap();
        group.bench_function("qmp-smol", |b| {
            b.iter_custom(|iters| smol::block_on(pipelined(&client, iters)))
        });
    }
    {
        let q = qsd();
        let client =
            async_std::task::block_on(qmp_async_std::connect_unix(q.socket(), Options::default()))
                .unwrap();
        group.bench_function("qmp-async-std", |b| {
            b.iter_custom(|iters| async_std::task::block_on(pipelined(&client, iters)))
        });
    }
    group.finish();
}

async fn sequential(client: &Client, iters: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        client.execute("query-version", &()).await.unwrap();
    }
    start.elapsed()
}

async fn pipelined(client: &Client, iters: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        let calls = (0..PIPELINE).map(|_| client.execute("query-version", &()));
        for r in join_all(calls).await {
            r.unwrap();
        }
    }
    start.elapsed()
}

/// On a shared machine the load changes between criterion's benchmarks; this alternates short
/// blocks of raw, smol and async-std round trips (each on its own qemu-storage-daemon) and prints
/// the median per-block ratio to raw, which is what the goals compare.
fn interleaved(_: &mut Criterion) {
    const BLOCKS: usize = 30;
    const PER_BLOCK: u64 = 200;
    let (qr, qs, qa) = (qsd(), qsd(), qsd());
    let (mut stream, mut reader) = raw_connect(&qr);
    let smol_client =
        smol::block_on(qmp_smol::connect_unix(qs.socket(), Options::default())).unwrap();
    let std_client =
        async_std::task::block_on(qmp_async_std::connect_unix(qa.socket(), Options::default()))
            .unwrap();
    let batch = COMMAND.repeat(PIPELINE);
    let mut line = String::new();
    for mode in ["sequential", "pipelined_100"] {
        let mut ratios = (Vec::new(), Vec::new());
        for _ in 0..BLOCKS {
            let start = Instant::now();
            for _ in 0..PER_BLOCK / if mode == "sequential" { 1 } else { 20 } {
                if mode == "sequential" {
                    stream.write_all(COMMAND).unwrap();
                    line.clear();
                    reader.read_line(&mut line).unwrap();
                } else {
                    stream.write_all(&batch).unwrap();
                    for _ in 0..PIPELINE {
                        line.clear();
                        reader.read_line(&mut line).unwrap();
                    }
                }
            }
            let raw = start.elapsed().as_secs_f64();
            let (s, a) = if mode == "sequential" {
                (
                    smol::block_on(sequential(&smol_client, PER_BLOCK)),
                    async_std::task::block_on(sequential(&std_client, PER_BLOCK)),
                )
            } else {
                (
                    smol::block_on(pipelined(&smol_client, PER_BLOCK / 20)),
                    async_std::task::block_on(pipelined(&std_client, PER_BLOCK / 20)),
                )
            };
            ratios.0.push(s.as_secs_f64() / raw);
            ratios.1.push(a.as_secs_f64() / raw);
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        println!(
            "interleaved {mode}: time / raw time, median of {BLOCKS} blocks: qmp-smol {:.3}, qmp-async-std {:.3}",
            median(&mut ratios.0),
            median(&mut ratios.1)
        );
    }
}

criterion_group!(benches, bench, interleaved);
criterion_main!(benches);
