//! Syscalls per command: a child process per contender runs `n` sequential round trips under
//! `perf stat` (syscall tracepoints, every thread of the child); two runs with different `n`
//! cancel out start-up and connecting.
//!
//! perf rather than `strace -c`: strace stops the client at every syscall, which changes how
//! often an async client finds its socket empty, and so the very counts being measured.

use crate::contenders::Kind;
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

/// Syscalls grouped by what they are for, each group a list of tracepoints.
const GROUPS: &[(&str, &[&str])] = &[
    ("read", &["read", "readv", "recvfrom", "recvmsg"]),
    ("write", &["write", "writev", "sendto", "sendmsg"]),
    ("futex", &["futex"]),
    ("epoll_wait", &["epoll_wait", "epoll_pwait", "epoll_pwait2"]),
    ("epoll_ctl", &["epoll_ctl"]),
    ("poll", &["poll", "ppoll"]),
    ("sched_yield", &["sched_yield"]),
];

const TOTAL: &str = "raw_syscalls:sys_enter";

/// Per command: all syscalls, and each group.
#[derive(Debug, Clone)]
pub struct Counts {
    pub total: f64,
    pub groups: Vec<(&'static str, f64)>,
}

impl Counts {
    /// `read 1.0, write 1.0, futex 2.1, ...`, groups above 0.05 only, then the rest.
    pub fn breakdown(&self) -> String {
        let named: f64 = self.groups.iter().map(|(_, v)| v).sum();
        let mut parts: Vec<String> = self
            .groups
            .iter()
            .filter(|(_, v)| *v >= 0.05)
            .map(|(g, v)| format!("{g} {v:.1}"))
            .collect();
        let other = self.total - named;
        if other >= 0.05 {
            parts.push(format!("other {other:.1}"));
        }
        parts.join(", ")
    }
}

/// Whether `perf stat` can count syscall tracepoints here (root, or perf_event_paranoid ≤ 1).
pub fn perf_works() -> bool {
    Command::new("perf")
        .args(["stat", "-x,", "-e", TOTAL, "--", "true"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Counts `kind`'s syscalls per command on the monitor at `socket`: runs of `n1` and `n2`.
pub fn count(kind: Kind, socket: &Path, n1: usize, n2: usize) -> Option<Counts> {
    let a = run(kind, socket, n1)?;
    let b = run(kind, socket, n2)?;
    let per = |event: &str| {
        (b.get(event).copied().unwrap_or(0.0) - a.get(event).copied().unwrap_or(0.0))
            / (n2 - n1) as f64
    };
    let groups = GROUPS
        .iter()
        .map(|(g, calls)| {
            let sum = calls
                .iter()
                .map(|c| per(&format!("syscalls:sys_enter_{c}")))
                .sum();
            (*g, sum)
        })
        .collect();
    Some(Counts {
        total: per(TOTAL),
        groups,
    })
}

fn run(kind: Kind, socket: &Path, n: usize) -> Option<HashMap<String, f64>> {
    let dir = qmp_testkit::TempDir::new().ok()?;
    let out = dir.path().join("perf.csv");
    let mut events = vec![TOTAL.to_string()];
    for (_, calls) in GROUPS {
        events.extend(calls.iter().map(|c| format!("syscalls:sys_enter_{c}")));
    }
    let status = Command::new("perf")
        .args(["stat", "-x,", "-o"])
        .arg(&out)
        .args(["-e", &events.join(",")])
        .arg("--")
        .arg(std::env::current_exe().ok()?)
        .args(["count", kind.id()])
        .arg(socket)
        .arg(n.to_string())
        .status()
        .ok()?;
    if !status.success() {
        eprintln!("  {}: the counting run failed ({status})", kind.name());
        return None;
    }
    let text = std::fs::read_to_string(&out).ok()?;
    // CSV lines: value,unit,event,...; comments start with '#'.
    Some(
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(|l| {
                let mut f = l.split(',');
                let value = f.next()?.parse::<f64>().ok()?;
                let _unit = f.next()?;
                Some((f.next()?.to_string(), value))
            })
            .collect(),
    )
}

/// The counting child: connect, `n` sequential round trips, exit.
pub fn child(kind: Kind, socket: &Path, n: usize) {
    let tokio = std::sync::Arc::new(crate::tokio_runtime());
    let mut c = kind.connect(socket, &tokio);
    c.sequential(n);
}
