//! Reply slots: where each command's outcome goes, and waiting for it.

use crate::shared::{Inner, Shared};
use crate::Error;
use qmp_proto::{CommandError, CommandId};
use serde_json::Value;
use std::sync::Arc;
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

/// A completion callback of `execute_async`.
pub(crate) type Callback = Box<dyn FnOnce(Result<Value, Error>) + Send>;

/// Where a command's outcome goes.
pub(crate) enum Slot {
    /// A caller blocked in `execute`, parked until `result` is set.
    Waiting {
        thread: Thread,
        result: Option<Result<Value, CommandError>>,
    },
    /// `execute_async`: run on the pool.
    Callback { command: String, callback: Callback },
}

impl Shared {
    /// Routes a command's outcome from the session to its slot.
    pub(crate) fn on_reply(
        self: &Arc<Self>,
        inner: &mut Inner,
        id: CommandId,
        result: Result<Value, CommandError>,
    ) {
        if let Some(Slot::Waiting {
            thread,
            result: slot,
        }) = inner.slots.get_mut(&id)
        {
            *slot = Some(result);
            // Woken once the lock is released (`Shared::release`), so it does not wake only to
            // wait for the lock.
            inner.to_wake.push(thread.clone());
            return;
        }
        if let Some(Slot::Callback { command, callback }) = inner.slots.remove(&id) {
            let result = result.map_err(|e| Error::from_command(&command, e));
            let source = format!("callback of '{command}'");
            // `busy` was counted when the command was submitted.
            self.run_job(inner, source, false, move || callback(result));
        }
    }

    /// Waits for the outcome of command `id` (`name`) until `deadline`. On timeout the command is
    /// abandoned: its late reply will be discarded by the session (rule 11).
    ///
    /// On a socket the caller leads whenever the read role is free (`role.rs`): it reads until
    /// its own reply arrives, then hands the role on. Otherwise it waits to be woken: by whoever
    /// read its reply, or to take the role handed on to it.
    pub(crate) fn wait_reply(
        self: &Arc<Self>,
        id: CommandId,
        name: &str,
        deadline: Option<Instant>,
        timeout: Option<Duration>,
    ) -> Result<Value, Error> {
        let mut inner = self.lock();
        loop {
            match inner.slots.get_mut(&id) {
                Some(Slot::Waiting { result, .. }) => {
                    if let Some(result) = result.take() {
                        inner.slots.remove(&id);
                        self.release(inner);
                        return result.map_err(|e| Error::from_command(name, e));
                    }
                }
                _ => {
                    let e = inner.closed_error(Some(name));
                    self.release(inner);
                    return Err(e);
                }
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                inner.session.abandon(id);
                inner.slots.remove(&id);
                // It may have been handed the role: pass it on.
                self.hand_on(&mut inner);
                self.release(inner);
                return Err(Error::reply_timeout(name, timeout.unwrap_or_default()));
            }
            if let Some(reading) = self.try_lead(&mut inner) {
                inner = self.lead(inner, reading, deadline, |inner| {
                    !matches!(
                        inner.slots.get(&id),
                        Some(Slot::Waiting { result: None, .. })
                    )
                });
                continue;
            }
            self.release(inner);
            match deadline {
                None => thread::park(),
                Some(d) => thread::park_timeout(d.saturating_duration_since(now)),
            }
            inner = self.lock();
        }
    }
}

impl Inner {
    /// A caller other than this thread still waiting for its reply: the next leader.
    pub(crate) fn next_follower(&self) -> Option<Thread> {
        let me = thread::current().id();
        self.slots.values().find_map(|s| match s {
            Slot::Waiting {
                thread,
                result: None,
            } if thread.id() != me => Some(thread.clone()),
            _ => None,
        })
    }

    /// Whether a caller waits for its reply.
    pub(crate) fn has_follower(&self) -> bool {
        self.slots
            .values()
            .any(|s| matches!(s, Slot::Waiting { result: None, .. }))
    }
}
