//! Memory per idle connection: a child process per contender opens one connection per monitor
//! of a daemon with many, and reports its resident set after the first few and after the last.

use crate::contenders::{Contender, Kind};
use crate::measure::rss_kib;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What one child saw.
#[derive(Debug, Clone, Copy)]
pub struct Held {
    /// KiB of resident memory per connection beyond the first few.
    pub kib_per_connection: f64,
    /// KiB of heap allocated (malloc's count, whether touched or not) per connection: unlike
    /// RSS, it does not depend on whether the allocator had to zero recycled memory.
    pub heap_kib_per_connection: f64,
    /// Threads of the process per connection beyond the first few.
    pub threads_per_connection: f64,
}

/// Runs the child for `kind` over the `count` monitors in `dir`.
pub fn measure(kind: Kind, dir: &Path, count: usize) -> Option<Held> {
    let out = Command::new(std::env::current_exe().ok()?)
        .args(["rss", kind.id()])
        .arg(dir)
        .arg(count.to_string())
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "  {}: the memory run failed ({}): {}",
            kind.name(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Vec<f64> = text
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    let [first, rss1, heap1, threads1, rss2, heap2, threads2] = v[..] else {
        return None;
    };
    let more = count as f64 - first;
    Some(Held {
        kib_per_connection: (rss2 - rss1) / more,
        heap_kib_per_connection: (heap2 - heap1) / more,
        threads_per_connection: (threads2 - threads1) / more,
    })
}

/// Bytes malloc has handed out and not taken back, all arenas, in KiB.
fn heap_kib() -> u64 {
    // SAFETY: mallinfo2 only reads the allocator's counters.
    let m = unsafe { libc::mallinfo2() };
    ((m.uordblks + m.hblkhd) / 1024) as u64
}

fn threads() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Threads that open connections in parallel. With 1,000 monitors every QEMU main-loop turn
/// polls some 2,000 descriptors and reads one byte per monitor, so a round trip takes ~10 ms;
/// connections opened side by side share those turns.
const OPENERS: usize = 50;

/// Opens the connections to monitors `range`, `OPENERS` at a time; each is negotiated and used
/// once (so every client has made its first round trip), then returned to be held.
fn open(
    kind: Kind,
    dir: &Path,
    range: std::ops::Range<usize>,
    tokio: &Arc<tokio::runtime::Runtime>,
) -> Vec<Box<dyn Contender>> {
    let next = AtomicUsize::new(range.start);
    let opened = Mutex::new(Vec::with_capacity(range.len()));
    std::thread::scope(|s| {
        for _ in 0..OPENERS.min(range.len()) {
            s.spawn(|| loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= range.end {
                    return;
                }
                let mut c = kind.connect(&dir.join(format!("m{k}.sock")), tokio);
                c.sequential(1);
                opened.lock().expect("opened").push(c);
            });
        }
    });
    opened.into_inner().expect("opened")
}

/// The child: one connection per monitor, held idle. The first `OPENERS` are opened before the
/// first reading, by the same threads that open the rest, so both readings include the
/// openers' cached stacks. Prints how many came first, then `rss_kib heap_kib threads` at the
/// first reading and at the last.
pub fn child(kind: Kind, dir: &Path, count: usize) {
    let tokio = Arc::new(crate::tokio_runtime());
    let first = OPENERS.min(count / 2);
    let mut held = open(kind, dir, 0..first, &tokio);
    std::thread::sleep(Duration::from_millis(300));
    let (rss1, heap1, threads1) = (rss_kib(), heap_kib(), threads());
    held.extend(open(kind, dir, first..count, &tokio));
    std::thread::sleep(Duration::from_millis(500));
    let (rss2, heap2, threads2) = (rss_kib(), heap_kib(), threads());
    println!("{first} {rss1} {heap1} {threads1} {rss2} {heap2} {threads2}");
    drop(held);
}
