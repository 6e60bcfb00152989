//! Decoding throughput: qmp-proto's `Decoder` against serde_json, the floor.
//!
//! Inputs: two real captures (qsd-compact: one-line messages with a 117 KB reply; system-pretty:
//! multi-line messages with a 648 KB reply) and 100,000 synthetic events. The decoder is fed each
//! input whole and in 4 KiB, 64-byte and 1-byte pieces. The floor is
//! `serde_json::from_slice::<Value>` on the same messages already cut apart, which is what any
//! decoder must at least do. Both drop each message at once, as a client does once it has routed
//! it (the decoder's are dropped after each piece fed; keeping all of them alive until the end, as
//! this benchmark did before, made the floor pay for 100,000 live `Value`s and flattered the
//! decoder). One `Decoder` serves all iterations, as one serves a whole connection.
//!
//! Time is the thread's CPU time (see `CpuTime`), not wall time. After criterion's groups, an
//! interleaved run (on stderr) times floor and decoder in turn, round after round, and prints the
//! median of the per-round ratios to the floor: the figure to compare (BENCHMARKS.md).
//!
//! Run with `cargo bench -p qmp-proto`, then `qmp-proto/benches/summarize.py` for MB/s and ratios
//! to the floor from criterion's samples; compare ratios within one run (BENCHMARKS.md).

// Helpers outside #[test] functions unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used)]

use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use qmp_proto::{Decoder, Limits};
use serde_json::Value;
use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

/// CPU time of the measuring thread, in nanoseconds, from `/proc/thread-self/schedstat`.
///
/// The machines this runs on are small and shared: with other jobs running, this thread waits in
/// the run queue for as long as it runs, and wall time measures the neighbours. The kernel updates
/// the figure at every scheduler tick (4 ms at HZ=250), so samples last 250 ms. Std has no thread
/// CPU clock, and the crate takes no libc dependency for a benchmark.
struct CpuTime;

fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .expect("/proc/thread-self/schedstat (Linux) is needed for CPU-time measurement")
}

impl Measurement for CpuTime {
    type Intermediate = u64;
    type Value = u64;
    fn start(&self) -> u64 {
        thread_cpu_ns()
    }
    fn end(&self, start: u64) -> u64 {
        thread_cpu_ns() - start
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, v: &u64) -> f64 {
        *v as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &NsFormatter
    }
}

/// Nanoseconds shown as criterion shows wall time; throughput in MiB/s.
struct NsFormatter;

impl ValueFormatter for NsFormatter {
    fn scale_values(&self, typical: f64, values: &mut [f64]) -> &'static str {
        let (factor, unit) = if typical < 1e3 {
            (1.0, "ns")
        } else if typical < 1e6 {
            (1e-3, "µs")
        } else if typical < 1e9 {
            (1e-6, "ms")
        } else {
            (1e-9, "s")
        };
        values.iter_mut().for_each(|v| *v *= factor);
        unit
    }
    fn scale_throughputs(&self, _typical: f64, t: &Throughput, values: &mut [f64]) -> &'static str {
        let bytes = match *t {
            Throughput::Bytes(n) | Throughput::BytesDecimal(n) | Throughput::Elements(n) => n,
        } as f64;
        values
            .iter_mut()
            .for_each(|v| *v = bytes * 1e9 / *v / (1024.0 * 1024.0));
        "MiB/s (CPU time)"
    }
    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}

fn capture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/captures")
        .join(format!("{name}.server.bin"));
    std::fs::read(path).unwrap()
}

fn events(n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * 150);
    for i in 0..n {
        out.extend_from_slice(
            format!(
                "{{\"timestamp\": {{\"seconds\": {}, \"microseconds\": {}}}, \"event\": \"JOB_STATUS_CHANGE\", \"data\": {{\"status\": \"running\", \"id\": \"job{}\"}}}}\r\n",
                1_795_674_316 + i / 1000,
                (i * 7919) % 1_000_000,
                i % 100
            )
            .as_bytes(),
        );
    }
    out
}

/// The messages of `stream`, cut apart (QEMU's output: top-level objects, whitespace between).
fn split(stream: &[u8]) -> Vec<&[u8]> {
    let (mut depth, mut in_str, mut esc, mut start) = (0usize, false, false, 0);
    let mut out = Vec::new();
    for (i, &b) in stream.iter().enumerate() {
        if in_str {
            if esc {
                esc = false;
            } else if b == b'\\' {
                esc = true;
            } else if b == b'"' {
                in_str = false;
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'{' | b'[' => {
                if depth == 0 {
                    start = i;
                }
                depth += 1;
            }
            b'}' | b']' => {
                depth -= 1;
                if depth == 0 {
                    out.push(&stream[start..=i]);
                }
            }
            _ => {}
        }
    }
    out
}

/// Decodes `stream` in `chunk`-byte pieces with `decoder`, which a connection keeps for its
/// lifetime (so its buffer for messages that span reads is already allocated, as in steady state).
fn decode(decoder: &mut Decoder, stream: &[u8], chunk: usize) -> usize {
    let mut out = Vec::new();
    let mut n = 0;
    for c in stream.chunks(chunk) {
        decoder.feed(c, &mut out);
        n += out.len();
        assert!(out.drain(..).all(|m| black_box(m).is_ok()));
    }
    decoder.finish(&mut out);
    n + out.len()
}

fn floor(messages: &[&[u8]]) -> usize {
    let mut n = 0;
    for m in messages {
        black_box(serde_json::from_slice::<Value>(m).unwrap());
        n += 1;
    }
    n
}

/// Floor and decoder timed in turn, round after round, in thread CPU time; prints the median
/// over rounds of each feeding's rate relative to the floor.
fn interleaved(name: &str, stream: &[u8], messages: &[&[u8]], decoder: &mut Decoder) {
    const ROUNDS: usize = 15;
    let feedings = [("4KiB", 4096), ("64B", 64), ("1B", 1)];
    // Each sample at least ~100 ms of CPU, long against the 4 ms resolution of the clock.
    let t = thread_cpu_ns();
    floor(messages);
    let reps = (100_000_000 / (thread_cpu_ns() - t).max(1)).clamp(1, 1000);
    let time = |f: &mut dyn FnMut()| {
        let t = thread_cpu_ns();
        for _ in 0..reps {
            f();
        }
        (thread_cpu_ns() - t) as f64
    };
    let mut ratios = vec![Vec::new(); feedings.len()];
    for _ in 0..ROUNDS {
        let base = time(&mut || {
            floor(black_box(messages));
        });
        for (k, &(_, chunk)) in feedings.iter().enumerate() {
            let t = time(&mut || {
                decode(decoder, black_box(stream), chunk);
            });
            ratios[k].push(base / t);
        }
    }
    let line: Vec<String> = feedings
        .iter()
        .zip(&mut ratios)
        .map(|((label, _), r)| {
            r.sort_by(f64::total_cmp);
            format!("{label} {:.2}", r[r.len() / 2])
        })
        .collect();
    eprintln!(
        "interleaved {name} ({ROUNDS} rounds x {reps}): rate vs drop-at-once floor, median: {}",
        line.join(", ")
    );
}

fn bench_input(c: &mut Criterion<CpuTime>, name: &str, stream: &[u8]) {
    let messages = split(stream);
    let mut decoder = Decoder::new(&Limits::default());
    assert_eq!(decode(&mut decoder, stream, stream.len()), messages.len());
    let mut group = c.benchmark_group(format!("decode/{name}"));
    group.throughput(Throughput::Bytes(stream.len() as u64));
    group.sampling_mode(SamplingMode::Flat);
    // Enough samples for a median and a best sample (benches/summarize.py), each long against the
    // 4 ms resolution of CpuTime; flat sampling, as one iteration can take 0.3 s (1-byte pieces
    // over 100,000 events).
    group.sample_size(20);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("serde_json floor", |b| {
        b.iter(|| floor(black_box(&messages)))
    });
    for (label, chunk) in [
        ("whole", stream.len()),
        ("4KiB", 4096),
        ("64B", 64),
        ("1B", 1),
    ] {
        group.bench_with_input(BenchmarkId::new("qmp-proto", label), &chunk, |b, &chunk| {
            b.iter(|| decode(&mut decoder, black_box(stream), chunk))
        });
    }
    group.finish();
    interleaved(name, stream, &messages, &mut decoder);
}

fn benches(c: &mut Criterion<CpuTime>) {
    bench_input(c, "qsd-compact", &capture("qsd-compact"));
    bench_input(c, "system-pretty", &capture("system-pretty"));
    bench_input(c, "events-100k", &events(100_000));
}

mod group {
    // criterion_group! defines a public function without documentation.
    #![allow(missing_docs)]
    criterion::criterion_group! {
        name = decoding;
        config = criterion::Criterion::default().with_measurement(super::CpuTime);
        targets = super::benches
    }
}

/// `decode interleaved [INPUT...]`: only the interleaved runs (the figures to compare).
/// `decode callgrind INPUT MODE CHUNK`: one pass of `floor` or `decoder` (at `CHUNK`-byte pieces)
/// over INPUT (`qsd-compact`, `system-pretty` or `events-10k`), for
/// `valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*measured*'`: instruction
/// counts do not depend on the machine's load. Without these arguments, criterion's run.
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|a| a == "interleaved") {
        // Only the interleaved runs, for the inputs named (default: all three).
        for name in ["qsd-compact", "system-pretty", "events-100k"] {
            if args.len() == 1 || args[1..].iter().any(|a| a == name) {
                let stream = match name {
                    "events-100k" => events(100_000),
                    name => capture(name),
                };
                interleaved(
                    name,
                    &stream,
                    &split(&stream),
                    &mut Decoder::new(&Limits::default()),
                );
            }
        }
        return;
    }
    if let [cmd, input, mode, chunk] = args.as_slice() {
        if cmd == "callgrind" {
            let stream = match input.as_str() {
                "events-10k" => events(10_000),
                name => capture(name),
            };
            let messages = split(&stream);
            let n = measured(mode, &stream, &messages, chunk.parse().unwrap());
            assert_eq!(n, messages.len());
            return;
        }
    }
    group::decoding();
    Criterion::default().configure_from_args().final_summary();
}

/// The pass `main` runs under callgrind; not inlined, so that callgrind can count it alone.
#[inline(never)]
fn measured(mode: &str, stream: &[u8], messages: &[&[u8]], chunk: usize) -> usize {
    match mode {
        "floor" => floor(messages),
        "decoder" => decode(&mut Decoder::new(&Limits::default()), stream, chunk),
        _ => panic!("mode: floor or decoder"),
    }
}
