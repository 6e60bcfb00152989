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
    pub(crate) fn wait_reply(
        &self,
        id: CommandId,
        name: &str,
        deadline: Option<Instant>,
        timeout: Option<Duration>,
    ) -> Result<Value, Error> {
        loop {
            let mut inner = self.lock();
            match inner.slots.get_mut(&id) {
                Some(Slot::Waiting { result, .. }) => {
                    if let Some(result) = result.take() {
                        inner.slots.remove(&id);
                        return result.map_err(|e| Error::from_command(name, e));
                    }
                }
                _ => return Err(inner.closed_error(Some(name))),
            }
            match deadline {
                None => {
                    drop(inner);
                    thread::park();
                }
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        inner.session.abandon(id);
                        inner.slots.remove(&id);
                        return Err(Error::reply_timeout(name, timeout.unwrap_or_default()));
                    }
                    drop(inner);
                    thread::park_timeout(d - now);
                }
            }
        }
    }
}
