//! State shared by the handles and the driver of one connection, behind one mutex.
//!
//! The lock is held only for short, non-blocking work (feeding the session, routing its outputs,
//! queueing a command), never across an `.await` or an I/O call.

use crate::driver::Io;
use crate::events::Subscriber;
use crate::Runtime;
use qmp_proto::{CloseReason, CommandError, CommandId, Greeting, Output, Session, Warning};
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;

/// Most warnings kept for [`crate::Client::take_warnings`]; older ones are dropped (and counted).
pub(crate) const WARNINGS_KEPT: usize = 64;

/// One command's reply slot, from submission until its future takes the result or is dropped.
#[derive(Default)]
pub(crate) struct Slot {
    pub(crate) result: Option<Result<Value, CommandError>>,
    pub(crate) waker: Option<Waker>,
}

pub(crate) struct Shared {
    pub(crate) session: Session,
    /// The transport and its buffers; see [`crate::driver::pump`].
    pub(crate) io: Io,
    pub(crate) slots: HashMap<CommandId, Slot>,
    /// Descriptors of queued commands, handed to the driver with the command's bytes.
    pub(crate) fds: HashMap<CommandId, Vec<OwnedFd>>,
    pub(crate) subscribers: HashMap<u64, Subscriber>,
    pub(crate) next_subscriber: u64,
    pub(crate) driver_waker: Option<Waker>,
    /// Waiters for readiness or closing (connect, `Client::closed`).
    pub(crate) watchers: Vec<Waker>,
    pub(crate) ready: bool,
    pub(crate) closed: Option<CloseReason>,
    /// Client handles and event streams alive; at zero the driver closes the connection.
    pub(crate) users: usize,
    pub(crate) warnings: VecDeque<Warning>,
    /// The I/O error that ended the connection, if one did.
    pub(crate) io_error: Option<std::io::Error>,
    pub(crate) event_buffer: usize,
    /// Diagnostics: how often the driver task was polled.
    pub(crate) driver_polls: u64,
}

pub(crate) struct Inner {
    pub(crate) shared: Mutex<Shared>,
    pub(crate) runtime: Arc<dyn Runtime>,
}

impl Inner {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Shared> {
        // A panic while holding the lock leaves the state consistent enough to go on: every
        // critical section is a few map operations.
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Wakers collected under the lock, woken after it is released.
#[derive(Default)]
pub(crate) struct Wakeups(Vec<Waker>);

impl Wakeups {
    pub(crate) fn push(&mut self, waker: Option<Waker>) {
        if let Some(w) = waker {
            self.0.push(w);
        }
    }

    pub(crate) fn wake(self) {
        for w in self.0 {
            w.wake();
        }
    }
}

impl Shared {
    /// Drains the session's outputs: replies to their slots, events to subscribers, warnings to
    /// the ring, readiness and closing to the watchers.
    pub(crate) fn route(&mut self, wakeups: &mut Wakeups) {
        while let Some(output) = self.session.poll_output() {
            match output {
                Output::Greeting(_) => {}
                Output::Ready => {
                    self.ready = true;
                    wakeups.0.append(&mut self.watchers);
                }
                Output::Reply { id, result } => {
                    // A dropped caller removed its slot and abandoned the id under this lock, so
                    // a missing slot is a reply nobody waits for any more.
                    if let Some(slot) = self.slots.get_mut(&id) {
                        slot.result = Some(result);
                        wakeups.push(slot.waker.take());
                    }
                }
                Output::Event(event) => {
                    for sub in self.subscribers.values_mut() {
                        if sub.offer(&event) {
                            wakeups.push(sub.waker.take());
                        }
                    }
                }
                Output::Warning(w) => {
                    if self.warnings.len() == WARNINGS_KEPT {
                        self.warnings.pop_front();
                    }
                    self.warnings.push_back(w);
                }
                Output::Closed(reason) => {
                    self.closed = Some(reason);
                    // Commands were answered by the session before `Closed`; these are only
                    // descriptors of commands that were never sent.
                    self.fds.clear();
                    wakeups.0.append(&mut self.watchers);
                    wakeups.push(self.driver_waker.take());
                    for sub in self.subscribers.values_mut() {
                        wakeups.push(sub.waker.take());
                    }
                }
            }
        }
    }

    pub(crate) fn greeting(&self) -> Option<Greeting> {
        self.session.greeting().cloned()
    }

    /// Registers `waker` once among the watchers.
    pub(crate) fn watch(&mut self, waker: &Waker) {
        if !self.watchers.iter().any(|w| w.will_wake(waker)) {
            self.watchers.push(waker.clone());
        }
    }
}
