//! qmp-rs beside the other Rust QMP clients, side by side against one qemu-storage-daemon: round
//! trips (sequential, 100 concurrent callers, pipelined), client CPU, syscalls, memory per idle
//! connection, the same under a busy core, and the build cost of a minimal tool.
//!
//! Run: `cargo run --release --manifest-path bench/peers/Cargo.toml` (BENCHMARKS.md, "Peers").
//! Options: `--quick` (few rounds, to try the harness), `--no-build` (skip the build phase);
//! `memory [COUNT]` measures only the memory per idle connection; `tokio [ROUNDS]` compares
//! qmp-tokio with raw tokio loops on each way a tokio program awaits.
//!
//! Not part of the qmp-rs workspace, so the peers never enter its dependency graph.

mod build_cost;
mod contenders;
mod measure;
mod qsd;
mod rss;
mod syscalls;
mod tokio_floor;

use contenders::{Contender, Kind, ALL};
use measure::{load_average, sample, Rounds};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Commands every peer whose ids are a growing counter runs before measuring, so that its ids
/// have five digits throughout (our clients reuse ids and need no warm-up).
pub const WARM_UP: u64 = 10_000;

struct Plan {
    seq_rounds: usize,
    seq_per_round: usize,
    conc_rounds: usize,
    callers: usize,
    calls_per_caller: usize,
    batch: usize,
    busy_rounds: usize,
    count_runs: (usize, usize),
    rss_connections: usize,
    build: bool,
}

impl Plan {
    fn full() -> Plan {
        Plan {
            seq_rounds: 40,
            seq_per_round: 150,
            conc_rounds: 24,
            callers: 100,
            calls_per_caller: 5,
            batch: 100,
            busy_rounds: 24,
            count_runs: (300, 2300),
            rss_connections: 1000,
            build: true,
        }
    }

    fn quick() -> Plan {
        Plan {
            seq_rounds: 3,
            seq_per_round: 50,
            conc_rounds: 2,
            calls_per_caller: 1,
            busy_rounds: 2,
            count_runs: (50, 250),
            rss_connections: 50,
            ..Plan::full()
        }
    }
}

/// A tokio runtime as under `#[tokio::main]`: tokio's default multi-thread runtime (worker
/// threads for spawned tasks; the caller in `block_on` on the main thread).
pub fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().expect("tokio runtime")
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("count") => {
            let kind = Kind::from_id(&args[1]).expect("contender");
            syscalls::child(kind, args[2].as_ref(), args[3].parse().expect("n"));
        }
        Some("rss") => {
            raise_fd_limit();
            let kind = Kind::from_id(&args[1]).expect("contender");
            rss::child(kind, args[2].as_ref(), args[3].parse().expect("count"));
        }
        Some("memory") => {
            // Memory per idle connection alone: `memory [COUNT]` (default 1,000).
            let count = args.get(1).map_or(1000, |c| c.parse().expect("count"));
            let many = qsd::Daemon::start(count);
            println!("| contender | RSS per idle connection ({count}) | heap per idle connection | threads per connection |");
            println!("| --- | ---: | ---: | ---: |");
            for &k in &ALL {
                if let Some(h) = rss::measure(k, &many.dir(), count) {
                    println!(
                        "| {} | {:.1} KiB | {:.1} KiB | {:.2} |",
                        k.name(),
                        h.kib_per_connection,
                        h.heap_kib_per_connection,
                        h.threads_per_connection
                    );
                }
            }
        }
        Some("tokio") => {
            // Where qmp-tokio's sequential rate goes: `tokio [ROUNDS [ONLY]]` (default 30 rounds,
            // every contender).
            tokio_floor::run(
                args.get(1).map_or(30, |r| r.parse().expect("rounds")),
                args.get(2).map(|o| o.parse().expect("contender row")),
            );
        }
        Some("spin") => loop {
            std::hint::black_box(0u64.wrapping_add(1));
        },
        _ => {
            let mut plan = if args.iter().any(|a| a == "--quick") {
                Plan::quick()
            } else {
                Plan::full()
            };
            plan.build &= !args.iter().any(|a| a == "--no-build");
            run(&plan);
        }
    }
}

fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit only read and write the struct given.
    unsafe {
        let mut l: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 {
            l.rlim_cur = l.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    let out = |cmd: &str, args: &[&str]| {
        std::process::Command::new(cmd)
            .args(args)
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string()
            })
            .unwrap_or_default()
    };
    format!(
        "{} CPUs ({cpu}), Linux {}, {}, {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        out("uname", &["-r"]),
        out("rustc", &["-V"]),
        out("qemu-storage-daemon", &["--version"]),
    )
}

fn run(plan: &Plan) {
    raise_fd_limit();
    let started = Instant::now();
    println!("# qmp-rs beside its peers\n");
    println!("machine: {}", machine());
    println!("load average at start: {}\n", load_average());

    // One monitor per contender, and one more for the counting children and the built tools.
    let daemon = qsd::Daemon::start(ALL.len() + 1);
    let spare = daemon.socket(ALL.len());
    // Each tokio contender on a runtime of its own, so that one's timers and wake-ups are never
    // paid inside another's measurement.
    let mut clients: Vec<Box<dyn Contender>> = ALL
        .iter()
        .enumerate()
        .map(|(k, kind)| kind.connect(&daemon.socket(k), &Arc::new(tokio_runtime())))
        .collect();
    for (kind, c) in ALL.iter().zip(&mut clients) {
        if kind.counts_ids() {
            let batches = WARM_UP as usize / plan.batch;
            if c.pipelined(plan.batch, batches).is_none() {
                let each = WARM_UP as usize / plan.callers;
                c.concurrent(plan.callers, each)
                    .expect("every id-counting peer takes concurrent callers");
            }
        }
    }
    eprintln!(
        "connected and warmed up in {:.0?}; daemon pid {}",
        started.elapsed(),
        daemon.pid()
    );

    let seq = sequential_rounds(&mut clients, plan.seq_rounds, plan.seq_per_round);
    eprintln!("sequential done ({:.0?})", started.elapsed());
    let (conc, pipe) = concurrent_rounds(&mut clients, plan);
    eprintln!("concurrent and pipelined done ({:.0?})", started.elapsed());
    let load_before_busy = load_average();
    let mut spinner = std::process::Command::new(std::env::current_exe().expect("exe"))
        .arg("spin")
        .spawn()
        .expect("spinner");
    std::thread::sleep(Duration::from_millis(300));
    let busy = sequential_rounds(&mut clients, plan.busy_rounds, plan.seq_per_round);
    let _ = spinner.kill();
    let _ = spinner.wait();
    eprintln!("busy-core rounds done ({:.0?})", started.elapsed());
    drop(clients);

    let counts: Vec<Option<syscalls::Counts>> = if syscalls::perf_works() {
        ALL.iter()
            .map(|&k| syscalls::count(k, &spare, plan.count_runs.0, plan.count_runs.1))
            .collect()
    } else {
        eprintln!("perf cannot count syscall tracepoints here (needs root or perf_event_paranoid <= 1): syscalls skipped");
        vec![None; ALL.len()]
    };
    eprintln!("syscall counts done ({:.0?})", started.elapsed());

    let held: Vec<Option<rss::Held>> = {
        let many = qsd::Daemon::start(plan.rss_connections);
        ALL.iter()
            .map(|&k| rss::measure(k, &many.dir(), plan.rss_connections))
            .collect()
    };
    eprintln!("memory done ({:.0?})", started.elapsed());

    let builds: Vec<(&'static str, Result<build_cost::Built, String>)> = if plan.build {
        let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
        let workspace = workspace.canonicalize().expect("workspace root");
        build_cost::tools(&workspace)
            .iter()
            .map(|t| {
                eprintln!("  building {}", t.name);
                (t.name, build_cost::build(t, &spare))
            })
            .collect()
    } else {
        Vec::new()
    };

    report(plan, &seq, &conc, &pipe, &busy, &counts, &held, &builds);
    println!(
        "\nload average: {load_before_busy} before the busy-core rounds, {} at the end; {:.0?} in all",
        load_average(),
        started.elapsed()
    );
}

/// Each round: every contender in turn (the order rotated each round), `n` calls each.
fn sequential_rounds(clients: &mut [Box<dyn Contender>], rounds: usize, n: usize) -> Rounds {
    let mut out = Rounds::default();
    for r in 0..rounds {
        let mut row = vec![None; clients.len()];
        for i in 0..clients.len() {
            let k = (i + r) % clients.len();
            row[k] = sample(n, || Some(clients[k].sequential(n)));
        }
        out.rounds.push(row);
    }
    out
}

/// Each round, every contender in turn (rotated): the raw loops one call at a time (the
/// baselines), the clients with 100 concurrent callers; then each that can, pipelined batches.
fn concurrent_rounds(clients: &mut [Box<dyn Contender>], plan: &Plan) -> (Rounds, Rounds) {
    let n = plan.callers * plan.calls_per_caller;
    let (mut conc, mut pipe) = (Rounds::default(), Rounds::default());
    for r in 0..plan.conc_rounds {
        let mut c_row = vec![None; clients.len()];
        let mut p_row = vec![None; clients.len()];
        for i in 0..clients.len() {
            let k = (i + r) % clients.len();
            let c = &mut clients[k];
            c_row[k] = if matches!(ALL[k], Kind::Raw | Kind::RawOurBytes) {
                sample(n, || Some(c.sequential(n)))
            } else {
                sample(n, || c.concurrent(plan.callers, plan.calls_per_caller))
            };
            p_row[k] = sample(n, || c.pipelined(plan.batch, n / plan.batch));
        }
        conc.rounds.push(c_row);
        pipe.rounds.push(p_row);
    }
    (conc, pipe)
}

fn fmt(v: Option<f64>, digits: usize) -> String {
    v.map_or("—".into(), |v| format!("{v:.digits$}"))
}

#[allow(clippy::too_many_arguments)]
fn report(
    plan: &Plan,
    seq: &Rounds,
    conc: &Rounds,
    pipe: &Rounds,
    busy: &Rounds,
    counts: &[Option<syscalls::Counts>],
    held: &[Option<rss::Held>],
    builds: &[(&'static str, Result<build_cost::Built, String>)],
) {
    let raw = 0;
    let ours_bytes = ALL
        .iter()
        .position(|&k| k == Kind::RawOurBytes)
        .expect("raw, our bytes");
    println!(
        "\n## Round trips, `query-version`, one qemu-storage-daemon, one monitor each\n\n\
         Ratios are rates relative to the raw `\"id\":1` loop (above 1: faster), the median over \
         rounds of the ratio within each round (min–max in brackets). \"Our bytes\": the raw \
         loop sending our clients' exact commands. Sequential: {} rounds × {} calls; 100 \
         concurrent: {} callers × {} calls each, {} rounds, against the raw loops one call at a \
         time in the same round; pipelined: batches of {} issued together (raw: one write); busy \
         core: {} sequential rounds with one spinning process.\n",
        plan.seq_rounds,
        plan.seq_per_round,
        plan.callers,
        plan.calls_per_caller,
        plan.conc_rounds,
        plan.batch,
        plan.busy_rounds
    );
    println!("| contender | sequential µs/cmd | sequential vs raw | sequential vs our bytes | 100 concurrent vs raw | 100 concurrent vs our bytes | pipelined vs raw | client CPU µs/cmd (Q1) | syscalls/cmd | RSS per idle connection ({}) | busy core vs our bytes |", plan.rss_connections);
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (k, kind) in ALL.iter().enumerate() {
        let show = |r: Option<measure::Ratio>| match r {
            Some(r) if (r.lo - 1.0).abs() < 1e-9 && (r.hi - 1.0).abs() < 1e-9 => "1".into(),
            Some(r) => format!("{:.3} ({:.2}–{:.2})", r.median, r.lo, r.hi),
            None => "—".into(),
        };
        let mem = held[k].map_or("—".into(), |h| {
            let threads = if h.threads_per_connection >= 0.5 {
                format!(", {:.1} threads", h.threads_per_connection)
            } else {
                String::new()
            };
            format!(
                "{:.1} KiB (heap {:.1} KiB){threads}",
                h.kib_per_connection, h.heap_kib_per_connection
            )
        });
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            kind.name(),
            fmt(seq.us(k), 1),
            show(seq.ratio(k, raw)),
            show(seq.ratio(k, ours_bytes)),
            show(conc.ratio(k, raw)),
            show(conc.ratio(k, ours_bytes)),
            show(pipe.ratio_to(k, conc, raw)),
            fmt(seq.cpu_us(k), 1),
            fmt(counts[k].as_ref().map(|c| c.total), 1),
            mem,
            show(busy.ratio(k, ours_bytes)),
        );
    }
    println!(
        "\nClient CPU is this process's user + system time during the contender's sequential \
         blocks (all its threads), per command, the lower quartile over rounds. Syscalls come from a separate counting pass \
         (`perf stat`, runs of {} and {} sequential calls, the difference per call).\n",
        plan.count_runs.0, plan.count_runs.1
    );
    println!("### Where the syscalls go (per command, sequential)\n");
    println!("| contender | syscalls/cmd | by kind |");
    println!("| --- | ---: | --- |");
    for (k, kind) in ALL.iter().enumerate() {
        if let Some(c) = &counts[k] {
            println!("| {} | {:.1} | {} |", kind.name(), c.total, c.breakdown());
        }
    }
    if !builds.is_empty() {
        println!("\n## Clean release build of a minimal tool (connect, `query-version`, print)\n");
        println!("| client | build time | crates compiled | tool ran |");
        println!("| --- | ---: | ---: | --- |");
        for (name, b) in builds {
            match b {
                Ok(b) => println!(
                    "| {name} | {:.1} s | {} | {} |",
                    b.time.as_secs_f64(),
                    b.crates,
                    match &b.ran {
                        Ok(out) if out.contains("10") => "yes".to_string(),
                        Ok(out) => format!("unexpected output: {out}"),
                        Err(e) => format!("failed: {e}"),
                    }
                ),
                Err(e) => println!("| {name} | failed: {} | | |", e.replace('\n', " ")),
            }
        }
    }
    for (kind, c) in ALL.iter().zip(counts) {
        if kind.is_ours() && c.is_none() {
            eprintln!("no syscall count for {}", kind.name());
        }
    }
}
