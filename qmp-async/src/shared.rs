//! State shared by the handles, calls, streams and the driver of one connection, behind one mutex.
//!
//! The lock is held only for short, non-blocking work (feeding the session, routing its outputs,
//! queueing a command, one non-blocking syscall), never across an `.await`.

use crate::driver::Io;
use crate::events::Subscriber;
use crate::read_route::ReadRoute;
use crate::ChildProcess;
use qmp_proto::{BoundedQueue, CommandError, CommandId, EventQueue, Output, Session, Warning};
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::process::ExitStatus;
use std::sync::{Mutex, MutexGuard};
use std::task::Waker;
use std::time::Instant;

/// Most warnings kept for [`crate::Client::take_warnings`]; older ones are dropped.
const WARNINGS_KEPT: usize = 64;

/// How a call ended, before its future takes it.
pub(crate) enum Outcome {
    Reply(Result<Value, CommandError>),
    /// Its deadline passed; the driver abandoned the command.
    TimedOut,
}

/// One command's reply slot, from submission until its future takes the outcome or is dropped.
pub(crate) struct Slot {
    pub(crate) outcome: Option<Outcome>,
    pub(crate) waker: Option<Waker>,
    pub(crate) deadline: Option<Instant>,
}

pub(crate) struct Shared {
    pub(crate) session: Session,
    /// The transport and its buffers; see [`crate::driver`].
    pub(crate) io: Io,
    pub(crate) slots: HashMap<CommandId, Slot>,
    /// Deadlines of calls waiting for replies, earliest first; the driver times them out.
    pub(crate) deadlines: BTreeSet<(Instant, CommandId)>,
    /// When the driver's timer is set to fire, if it is set.
    pub(crate) timer_at: Option<Instant>,
    pub(crate) subscribers: HashMap<u64, Subscriber>,
    pub(crate) next_subscriber: u64,
    /// Events for `next_event`, `wait_event` and `events()` (rule 10: bounded, oldest dropped).
    pub(crate) events: EventQueue,
    /// Tasks waiting for an event in `events`.
    pub(crate) event_waiters: Vec<Waker>,
    pub(crate) driver_waker: Option<Waker>,
    /// Who reads, and the one waker every read is made with; see [`crate::read_route`].
    pub(crate) read: ReadRoute,
    /// Tasks waiting for negotiation or the end (connect, `quit`, `Client::closed`).
    pub(crate) watchers: Vec<Waker>,
    /// Client handles and event streams alive; at zero the driver closes the connection.
    pub(crate) users: usize,
    pub(crate) warnings: BoundedQueue<Warning>,
    /// Default queue size of a subscriber.
    pub(crate) subscriber_buffer: usize,
    pub(crate) child: Option<Box<dyn ChildProcess>>,
    pub(crate) exit_status: Option<ExitStatus>,
}

/// The lock and what never changes.
pub(crate) struct Inner {
    pub(crate) shared: Mutex<Shared>,
    /// `unix:PATH`, `tcp:ADDR`, `stdio:PROGRAM`, `io`: for messages.
    pub(crate) label: String,
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

    pub(crate) fn append(&mut self, wakers: &mut Vec<Waker>) {
        self.0.append(wakers);
    }

    pub(crate) fn wake(self) {
        for w in self.0 {
            w.wake();
        }
    }
}

/// Keeps `waker` in `list` once.
pub(crate) fn register(list: &mut Vec<Waker>, waker: &Waker) {
    if !list.iter().any(|w| w.will_wake(waker)) {
        list.push(waker.clone());
    }
}

impl Shared {
    pub(crate) fn new(session: Session, io: Io, event_capacity: usize, buffer: usize) -> Self {
        Shared {
            session,
            io,
            slots: HashMap::new(),
            deadlines: BTreeSet::new(),
            timer_at: None,
            subscribers: HashMap::new(),
            next_subscriber: 0,
            events: EventQueue::new(event_capacity),
            event_waiters: Vec::new(),
            driver_waker: None,
            read: ReadRoute::new(),
            watchers: Vec::new(),
            users: 1,
            warnings: BoundedQueue::new(WARNINGS_KEPT),
            subscriber_buffer: buffer.max(1),
            child: None,
            exit_status: None,
        }
    }

    pub(crate) fn closed(&self) -> bool {
        self.session.state() == qmp_proto::State::Closed
    }

    /// Drains the session's outputs: replies to their slots, events to the queue and the
    /// subscribers, warnings to the ring, readiness and closing to the watchers.
    pub(crate) fn route(&mut self, wakeups: &mut Wakeups) {
        while let Some(output) = self.session.poll_output() {
            match output {
                Output::Greeting(_) => {}
                Output::Ready => wakeups.append(&mut self.watchers),
                Output::Reply { id, result } => {
                    // A dropped call removed its slot and abandoned the id under this lock, so a
                    // missing slot is a reply nobody waits for any more.
                    if let Some(slot) = self.slots.get_mut(&id) {
                        slot.outcome = Some(Outcome::Reply(result));
                        wakeups.push(slot.waker.take());
                        if let Some(d) = slot.deadline.take() {
                            self.deadlines.remove(&(d, id));
                        }
                    }
                }
                Output::Event(event) => {
                    for sub in self.subscribers.values_mut() {
                        if sub.offer(&event) {
                            wakeups.push(sub.waker.take());
                        }
                    }
                    self.events.push(event);
                    wakeups.append(&mut self.event_waiters);
                }
                Output::Warning(w) => self.warnings.push(w),
                Output::Closed(_) => {
                    wakeups.append(&mut self.watchers);
                    wakeups.append(&mut self.event_waiters);
                    wakeups.push(self.driver_waker.take());
                    for sub in self.subscribers.values_mut() {
                        wakeups.push(sub.waker.take());
                    }
                }
            }
        }
    }

    /// Times out the calls whose deadline is at or before `now`: each is abandoned in the
    /// session (its late reply is discarded, rule 11) and its future woken.
    pub(crate) fn expire(&mut self, now: Instant, wakeups: &mut Wakeups) {
        while let Some(&(at, id)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.deadlines.pop_first();
            if let Some(slot) = self.slots.get_mut(&id) {
                slot.deadline = None;
                if slot.outcome.is_none() {
                    self.session.abandon(id);
                    slot.outcome = Some(Outcome::TimedOut);
                    wakeups.push(slot.waker.take());
                }
            }
        }
    }

    /// Forgets the slot of a call whose future is gone or done. If the call held the read
    /// role, the role passes to another waiting call, or back to the driver (woken to read if
    /// the socket's read registration is spent).
    pub(crate) fn remove_slot(&mut self, id: CommandId, wakeups: &mut Wakeups) -> Option<Slot> {
        let slot = self.slots.remove(&id)?;
        if let Some(d) = slot.deadline {
            self.deadlines.remove(&(d, id));
        }
        if self.read.holds(id) {
            let next = self.slots.iter().find_map(|(&other, s)| {
                s.outcome
                    .is_none()
                    .then(|| s.waker.clone().map(|w| (other, w)))
                    .flatten()
            });
            wakeups.push(self.read.release(id, next));
        }
        Some(slot)
    }

    /// The exit status of a spawned QEMU, once it has exited (reaping it).
    pub(crate) fn exit_status(&mut self) -> Option<ExitStatus> {
        if self.exit_status.is_none() {
            if let Some(c) = self.child.as_mut() {
                self.exit_status = c.try_wait().ok().flatten();
            }
        }
        self.exit_status
    }
}
