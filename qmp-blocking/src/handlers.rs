//! Event handlers and completion callbacks: registering, dispatching to the worker pool,
//! catching and reporting panics.

use crate::pool::{Job, Submitted};
use crate::shared::{Inner, Shared};
use qmp_proto::Event;
use std::cell::Cell;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Once};

thread_local! {
    /// Set while a handler or callback runs on this thread: its panic is caught and reported
    /// (`take_handler_panics`), so the panic hook need not print it too.
    static RUNNING_HANDLER: Cell<bool> = const { Cell::new(false) };
}

/// Wraps the process's panic hook, once, so that panics caught from handlers are not printed;
/// every other panic goes to the hook that was there before. A hook the program sets later
/// replaces this one (and then prints handler panics too).
fn quiet_handler_panics() {
    static WRAP: Once = Once::new();
    WRAP.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !RUNNING_HANDLER.with(Cell::get) {
                previous(info);
            }
        }));
    });
}

/// Runs `job` as a handler, catching its panic.
fn run_caught(job: impl FnOnce()) -> std::thread::Result<()> {
    quiet_handler_panics();
    RUNNING_HANDLER.with(|r| r.set(true));
    let outcome = catch_unwind(AssertUnwindSafe(job));
    RUNNING_HANDLER.with(|r| r.set(false));
    outcome
}

/// Identifies a registered event handler, for [`Client::remove_handler`](crate::Client::remove_handler).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HandlerId(u64);

pub(crate) type HandlerFn = Arc<dyn Fn(&Event) + Send + Sync>;

struct Handler {
    id: HandlerId,
    /// `None`: every event.
    name: Option<String>,
    run: HandlerFn,
}

/// The registered handlers.
#[derive(Default)]
pub(crate) struct Handlers {
    list: Vec<Handler>,
    next: u64,
}

impl Handlers {
    pub(crate) fn add(&mut self, name: Option<String>, run: HandlerFn) -> HandlerId {
        let id = HandlerId(self.next);
        self.next += 1;
        self.list.push(Handler { id, name, run });
        id
    }

    pub(crate) fn remove(&mut self, id: HandlerId) -> bool {
        let before = self.list.len();
        self.list.retain(|h| h.id != id);
        self.list.len() != before
    }

    fn for_event(&self, event: &Event) -> Vec<HandlerFn> {
        self.list
            .iter()
            .filter(|h| h.name.as_deref().is_none_or(|n| n == event.name))
            .map(|h| Arc::clone(&h.run))
            .collect()
    }
}

/// A handler or completion callback that panicked. The panic was caught; the client went on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerPanic {
    /// What was running, e.g. `handler for event STOP` or `callback of 'query-status'`.
    pub source: String,
    /// The panic's message, when it was a string.
    pub message: String,
}

impl fmt::Display for HandlerPanic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} panicked: {}", self.source, self.message)
    }
}

impl Shared {
    /// Runs the handlers registered for `event` on the pool, in one job.
    pub(crate) fn dispatch_event(self: &Arc<Self>, inner: &mut Inner, event: &Event) {
        let handlers = inner.handlers.for_event(event);
        if handlers.is_empty() {
            return;
        }
        let event = event.clone();
        let source = format!("handler for event {}", event.name);
        self.run_job(inner, source, true, move || {
            for h in handlers {
                h(&event);
            }
        });
    }

    /// Runs `job` on the pool, catching a panic. `count`: an event-handler run, added to `busy`
    /// here and droppable behind a full backlog; otherwise a completion callback, counted in
    /// `busy` at submission and never dropped.
    pub(crate) fn run_job(
        self: &Arc<Self>,
        inner: &mut Inner,
        source: String,
        count: bool,
        job: impl FnOnce() + Send + 'static,
    ) {
        if count {
            inner.busy += 1;
        }
        let shared = Arc::clone(self);
        let job: Job = Box::new(move || {
            let outcome = run_caught(job);
            let mut inner = shared.lock();
            if let Err(payload) = outcome {
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "(not a string)".to_string());
                inner.panics.push(HandlerPanic { source, message });
            }
            inner.busy -= 1;
            shared.notify(&inner);
        });
        // Handler runs for events may be dropped behind a slow handler; callbacks never are.
        match self.pool.submit(job, count, self.handler_backlog) {
            Submitted::Queued => {}
            Submitted::QueuedDroppingOldest => {
                inner.busy -= 1;
                inner.dropped_handler_runs += 1;
            }
            Submitted::Refused => inner.busy -= 1,
        }
        if inner.busy == 0 {
            self.notify(inner);
        }
    }
}
