//! `qmp events`: prints matching events as they arrive, every one of them, in order.
//!
//! qmp-blocking's event queue drops the oldest event when nobody reads fast enough, which is right
//! for a library (the socket is never left unread, docs/PROTOCOL.md rule 10) and wrong for a
//! printer whose output may be a slow pipe: in an event storm, `--count 1000` printed 1,000 events
//! but not the first 1,000. So events are collected on the client's handler thread the moment
//! they are decoded (the first `--count` matching ones, at most [`WAITING`] at a time), and
//! printed from there in batches, one write and one flush per batch, however slowly stdout takes
//! them. Memory stays bounded: no client queue, at most [`WAITING`] events collected and 65,536
//! handler runs waiting. Should events be lost anyway (more than that waiting), the printer stops
//! with an error rather than print past a gap.

use crate::monitor::Monitor;
use crate::output::{self, Style};
use crate::Failure;
use qmp_blocking::Event;
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Most matching events collected and not yet printed.
const WAITING: usize = 1 << 16;

/// How often the printer looks whether the connection has closed while nothing arrives.
const CLOSED_POLL: Duration = Duration::from_millis(100);

/// Events collected by the handler, waiting for the printer.
#[derive(Default)]
struct Collected {
    waiting: VecDeque<Event>,
    /// Matching events collected so far.
    taken: u64,
    /// Matching events that found no room.
    lost: u64,
}

#[derive(Default)]
struct Collector {
    state: Mutex<Collected>,
    arrived: Condvar,
}

impl Collector {
    fn lock(&self) -> MutexGuard<'_, Collected> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What the printer's wait ended with.
enum Next {
    Batch(Vec<Event>),
    TimedOut,
    Closed,
}

/// Prints matching events (all when `names` is empty) until `count` were printed, `limit`
/// elapsed, or QEMU closed the connection. `conn` must take its events through a handler
/// (`transport::Events::Handled`).
pub(crate) fn run(
    conn: &Monitor,
    names: &[String],
    count: Option<u64>,
    limit: Option<Duration>,
    style: Style,
) -> Result<(), Failure> {
    let Some(client) = conn.client() else {
        return Err(Failure::usage("the guest agent sends no events to watch"));
    };
    let collector = Arc::new(Collector::default());
    let names = names.to_vec();
    let c = Arc::clone(&collector);
    // Events decoded between negotiation and this registration (microseconds) are not printed,
    // like those before the connection.
    client.on_any_event(move |e| {
        if !names.is_empty() && !names.iter().any(|n| n.eq_ignore_ascii_case(&e.name)) {
            return;
        }
        let mut s = c.lock();
        if count.is_some_and(|n| s.taken >= n) {
            return;
        }
        // After a loss nothing more is collected: what is waiting then is all before the gap.
        if s.lost > 0 || s.waiting.len() >= WAITING {
            s.lost += 1;
            return;
        }
        s.waiting.push_back(e.clone());
        s.taken += 1;
        drop(s);
        c.arrived.notify_one();
    });
    let deadline = limit.map(|l| Instant::now() + l);
    let runs_dropped = client.stats().dropped_handler_runs;
    let mut printed = 0u64;
    let mut text = String::new();
    while count.is_none_or(|c| printed < c) {
        let batch = match next(conn, &collector, deadline)? {
            Next::Batch(batch) => batch,
            Next::TimedOut => {
                return match count {
                    Some(c) => Err(Failure::connection(format!(
                        "timed out: {printed} of {c} events arrived within {:?}",
                        limit.unwrap_or_default()
                    ))),
                    None => Ok(()),
                }
            }
            Next::Closed => {
                return match count {
                    Some(c) => Err(Failure::connection(format!(
                        "QEMU closed the connection after {printed} of {c} events"
                    ))),
                    None => Ok(()),
                }
            }
        };
        // Runs dropped before the batch was taken may have left a gap inside it; runs dropped
        // later only affect later events.
        if client.stats().dropped_handler_runs > runs_dropped {
            return Err(lost(printed));
        }
        text.clear();
        for e in &batch {
            // Writing to a String cannot fail.
            let _ = writeln!(text, "{}", output::event_text(style, e));
        }
        // One write and one flush for the batch: a pipe sees each batch as it arrives.
        out!("{text}");
        printed += batch.len() as u64;
        conn.report();
    }
    Ok(())
}

/// Waits for collected events, the deadline, or the end of the connection.
fn next(conn: &Monitor, collector: &Collector, deadline: Option<Instant>) -> Result<Next, Failure> {
    let mut s = collector.lock();
    loop {
        if !s.waiting.is_empty() {
            return Ok(Next::Batch(s.waiting.drain(..).collect()));
        }
        if s.lost > 0 {
            return Err(lost(s.taken));
        }
        if !conn.is_connected() {
            // Every event that arrived before the end has its handler run; collect those too.
            drop(s);
            if let Some(client) = conn.client() {
                let _ = client.wait_timeout(CLOSED_POLL);
            }
            s = collector.lock();
            if s.waiting.is_empty() {
                return Ok(Next::Closed);
            }
            continue;
        }
        let mut wait = CLOSED_POLL;
        if let Some(d) = deadline {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(Next::TimedOut);
            }
            wait = wait.min(left);
        }
        s = collector
            .arrived
            .wait_timeout(s, wait)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
}

fn lost(printed: u64) -> Failure {
    Failure::connection(format!(
        "events arrived faster than they could be printed and some were lost after the {printed} \
         printed (all of those in order, none missing); stopped rather than print past the gap"
    ))
}
