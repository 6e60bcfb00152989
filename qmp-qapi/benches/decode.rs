//! Typed decoding of 100,000 `JOB_STATUS_CHANGE` events beside `serde_json::Value`.
//!
//! Input: 100,000 events as QEMU writes them (one line each, `\r\n`), ids and statuses varying.
//! Contenders, interleaved round by round in one run:
//! - `value`: `serde_json::from_slice::<Value>` on each message, already cut apart (the floor);
//! - `proto`: qmp-proto's `Decoder` on the whole stream: framing, parsing, `ServerMessage::Event`
//!   with its data as a `Value` map (what a client gets today);
//! - `proto+typed`: the same, then each event into the generated `qmp::Event` enum, moving out
//!   of that map (`Event::try_from`);
//! - `serde typed`: `serde_json::from_slice` of each message straight into a struct holding the
//!   generated event type (its `Deserialize` goes through a `Value`).
//!
//! Time is the thread's CPU time from `/proc/thread-self/schedstat`, so that neighbours on a
//! shared machine do not count. Prints the median per contender and its ratio to `value`.
//!
//! Run with `cargo bench -p qmp-qapi --bench decode`.

#![allow(clippy::unwrap_used, missing_docs)]

use qmp_proto::{Decoder, Limits, ServerMessage};
use qmp_qapi::qmp::{event::JobStatusChange, Event};
use serde::Deserialize;
use serde_json::Value;
use std::hint::black_box;

const EVENTS: usize = 100_000;
const ROUNDS: usize = 15;

fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .expect("/proc/thread-self/schedstat (Linux) is needed for CPU-time measurement")
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct Message {
    event: String,
    data: JobStatusChange,
    timestamp: Value,
}

fn main() {
    let statuses = [
        "created",
        "running",
        "paused",
        "ready",
        "waiting",
        "pending",
        "concluded",
        "null",
    ];
    let lines: Vec<Vec<u8>> = (0..EVENTS)
        .map(|i| {
            format!(
                "{{\"timestamp\": {{\"seconds\": {}, \"microseconds\": {}}}, \"event\": \"JOB_STATUS_CHANGE\", \"data\": {{\"status\": \"{}\", \"id\": \"job{}\"}}}}\r\n",
                1_700_000_000 + i / 1000,
                i % 1_000_000,
                statuses[i % statuses.len()],
                i % 64
            )
            .into_bytes()
        })
        .collect();
    let stream: Vec<u8> = lines.concat();

    type Contender<'a> = (&'static str, Box<dyn Fn() -> usize + 'a>);
    let contenders: Vec<Contender<'_>> = vec![
        (
            "value",
            Box::new(|| {
                let v: Vec<Value> = lines
                    .iter()
                    .map(|l| serde_json::from_slice(l).unwrap())
                    .collect();
                black_box(v).len()
            }),
        ),
        (
            "proto",
            Box::new(|| {
                let mut d = Decoder::new(&Limits::default());
                let mut out = Vec::with_capacity(EVENTS);
                d.feed(&stream, &mut out);
                black_box(out).len()
            }),
        ),
        (
            "proto+typed",
            Box::new(|| {
                let mut d = Decoder::new(&Limits::default());
                let mut out = Vec::with_capacity(EVENTS);
                d.feed(&stream, &mut out);
                let typed: Vec<Event> = out
                    .into_iter()
                    .map(|m| match m.unwrap() {
                        ServerMessage::Event(e) => Event::try_from(e).unwrap(),
                        _ => unreachable!(),
                    })
                    .collect();
                assert!(matches!(typed[1], Event::JobStatusChange(_)));
                black_box(typed).len()
            }),
        ),
        (
            "serde typed",
            Box::new(|| {
                let v: Vec<Message> = lines
                    .iter()
                    .map(|l| serde_json::from_slice(l).unwrap())
                    .collect();
                black_box(v).len()
            }),
        ),
    ];
    let mut times: Vec<Vec<u64>> = vec![Vec::new(); contenders.len()];
    for _ in 0..ROUNDS {
        for (i, (_, f)) in contenders.iter().enumerate() {
            let t0 = thread_cpu_ns();
            assert_eq!(f(), EVENTS);
            times[i].push(thread_cpu_ns() - t0);
        }
    }
    let median = |t: &mut Vec<u64>| {
        t.sort_unstable();
        t[t.len() / 2] as f64 / 1e6
    };
    let medians: Vec<f64> = times.iter_mut().map(median).collect();
    println!("{EVENTS} JOB_STATUS_CHANGE events ({} bytes), median of {ROUNDS} interleaved rounds, thread CPU time:", stream.len());
    for ((name, _), m) in contenders.iter().zip(&medians) {
        println!(
            "  {name:<12} {m:8.1} ms  {:6.0} ns/event  {:4.2}x value",
            m * 1e6 / EVENTS as f64,
            m / medians[0]
        );
    }
}
