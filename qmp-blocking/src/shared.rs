//! What one connection's threads share: the session and everything routed from it, behind one
//! lock, plus the write half, the reader's waker, the child process and the handler pool.
//!
//! The lock is held for short, non-blocking work only (feeding the session, routing its outputs,
//! queueing a command). Callers are woken after it is released.

use crate::child::ChildProcess;
use crate::handlers::{HandlerPanic, Handlers};
use crate::pool::Pool;
use crate::role::{ReadHalf, Role};
use crate::slots::Slot;
use crate::transport::Waker;
use crate::writer::Writer;
use crate::Error;
use qmp_proto::{BoundedQueue, CommandId, EventQueue, Output, Session, State, Transmit, Warning};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// How many warnings and handler panics are kept for `take_*` (the oldest go first).
const KEPT_REPORTS: usize = 64;

/// The state behind the lock.
pub(crate) struct Inner {
    pub(crate) session: Session,
    pub(crate) slots: HashMap<CommandId, Slot>,
    /// Commands released by the session, waiting for the writer.
    pub(crate) outgoing: VecDeque<Transmit>,
    pub(crate) events: EventQueue,
    pub(crate) handlers: Handlers,
    /// Async commands not yet called back, plus handler runs queued or running.
    pub(crate) busy: usize,
    /// Callers to unpark once the lock is released.
    pub(crate) to_wake: Vec<Thread>,
    /// Handler runs dropped because the handler backlog was full.
    pub(crate) dropped_handler_runs: u64,
    /// Threads waiting on `Shared::changed` (notify only when someone listens).
    pub(crate) waiters: usize,
    pub(crate) warnings: BoundedQueue<Warning>,
    pub(crate) panics: BoundedQueue<HandlerPanic>,
    /// Who reads the socket now (`role.rs`; unused on other transports).
    pub(crate) role: Role,
}

impl Inner {
    pub(crate) fn new(session: Session, event_capacity: usize) -> Self {
        Inner {
            session,
            slots: HashMap::new(),
            outgoing: VecDeque::new(),
            events: EventQueue::new(event_capacity),
            handlers: Handlers::default(),
            busy: 0,
            to_wake: Vec::new(),
            dropped_handler_runs: 0,
            waiters: 0,
            warnings: BoundedQueue::new(KEPT_REPORTS),
            panics: BoundedQueue::new(KEPT_REPORTS),
            role: Role::new(),
        }
    }

    pub(crate) fn closed(&self) -> bool {
        self.session.state() == State::Closed
    }

    /// The error of a call about `command` on a closed session.
    pub(crate) fn closed_error(&self, command: Option<&str>) -> Error {
        let reason = self.session.close_reason().cloned();
        Error::from_close(
            command,
            false,
            reason.unwrap_or(qmp_proto::CloseReason::Local),
        )
    }

    fn pull_transmits(&mut self) {
        while let Some(t) = self.session.poll_transmit() {
            self.outgoing.push_back(t);
        }
    }
}

pub(crate) struct Shared {
    pub(crate) inner: Mutex<Inner>,
    pub(crate) changed: Condvar,
    /// The reader thread waits on it for the read role (`role.rs`).
    pub(crate) role_changed: Condvar,
    /// A socket's read half, read by whoever holds the role; `None`: the reader thread owns
    /// the read half (pipes, stdio, `connect_io`).
    pub(crate) read_half: Option<ReadHalf>,
    pub(crate) writer: Mutex<Writer>,
    pub(crate) waker: Waker,
    pub(crate) child: ChildProcess,
    pub(crate) pool: Pool,
    pub(crate) handler_backlog: usize,
    /// Whether the write half can carry file descriptors (a Unix socket).
    pub(crate) fds_supported: bool,
    /// `unix:PATH`, `tcp:ADDR`, `stdio:PROGRAM`, `pipe:BASE`, `io`: for messages.
    pub(crate) label: String,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Drains the session's outputs: wakes callers, queues events, schedules callbacks; then takes
    /// what the session releases for writing.
    pub(crate) fn process(self: &Arc<Self>, inner: &mut Inner) {
        let mut notify = false;
        while let Some(output) = inner.session.poll_output() {
            match output {
                Output::Greeting(_) | Output::Ready => notify = true,
                Output::Closed(_) => {
                    notify = true;
                    // The reader thread, waiting for the role, ends now.
                    self.role_changed.notify_all();
                }
                Output::Reply { id, result } => self.on_reply(inner, id, result),
                Output::Event(event) => {
                    self.dispatch_event(inner, &event);
                    inner.events.push(event);
                    notify = true;
                }
                Output::Warning(w) => inner.warnings.push(w),
            }
        }
        inner.pull_transmits();
        if notify {
            self.notify(inner);
        }
    }

    /// Unlocks, then wakes the callers whose replies arrived.
    pub(crate) fn release(&self, mut inner: MutexGuard<'_, Inner>) {
        let wake = std::mem::take(&mut inner.to_wake);
        drop(inner);
        for t in wake {
            t.unpark();
        }
    }

    pub(crate) fn notify(&self, inner: &Inner) {
        if inner.waiters > 0 {
            self.changed.notify_all();
        }
    }

    /// Makes a blocked read of the reader thread return (the client is closing).
    pub(crate) fn wake_reader(&self) {
        match self.waker {
            Waker::Child => self.child.kill(),
            ref w => w.wake(),
        }
    }

    /// Waits until `check` gives an answer, or until `deadline`.
    pub(crate) fn wait_until<T>(
        &self,
        deadline: Option<Instant>,
        waiting_for: impl FnOnce(&Inner) -> String,
        mut check: impl FnMut(&mut Inner) -> Option<Result<T, Error>>,
    ) -> Result<T, Error> {
        let start = Instant::now();
        let mut inner = self.lock();
        loop {
            if let Some(answer) = check(&mut inner) {
                return answer;
            }
            // Only a read answers: have the reader thread read if no caller leads.
            self.summon_reader(&mut inner);
            inner.waiters += 1;
            inner = match deadline {
                None => self
                    .changed
                    .wait(inner)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        inner.waiters -= 1;
                        return Err(Error::Timeout {
                            waiting_for: waiting_for(&inner),
                            after: round_up_ms(d.saturating_duration_since(start)),
                        });
                    }
                    self.changed
                        .wait_timeout(inner, d - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
            inner.waiters -= 1;
        }
    }
}

/// A waited time as the caller asked for it (a deadline computed a moment after the call started
/// reads as 299.99971 ms otherwise).
pub(crate) fn round_up_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_micros().div_ceil(1000) as u64)
}

/// Ends the connection and its threads: fails pending commands, wakes and joins the reader, runs
/// queued callbacks, ends the pool, kills and reaps a spawned QEMU. Safe to call more than once.
pub(crate) fn teardown(shared: &Arc<Shared>, reader: Option<std::thread::JoinHandle<()>>) {
    {
        let mut inner = shared.lock();
        inner.session.close();
        shared.process(&mut inner);
        shared.notify(&inner);
        shared.role_changed.notify_all();
        shared.release(inner);
    }
    shared.wake_reader();
    // Close our write half now, even if a reader thread that cannot be woken still holds `shared`.
    *shared.writer.lock().unwrap_or_else(PoisonError::into_inner) = Writer::closed();
    if let Some(h) = reader {
        if shared.waker.joinable() && h.thread().id() != std::thread::current().id() {
            let _ = h.join();
        }
    }
    shared.pool.shutdown();
    shared.child.kill_and_reap();
}
