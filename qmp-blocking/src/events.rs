//! The bounded event queue, the blocking event iterator, and handler bookkeeping.

use crate::{Client, Error};
use qmp_proto::Event;
use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Events waiting to be read, oldest first. Full: the oldest is dropped and counted, so the reader
/// thread never waits for a consumer (docs/PROTOCOL.md, rule 10).
pub(crate) struct EventQueue {
    items: VecDeque<(u64, Event)>,
    capacity: usize,
    next_seq: u64,
    dropped: u64,
}

impl EventQueue {
    pub(crate) fn new(capacity: usize) -> Self {
        EventQueue {
            items: VecDeque::new(),
            capacity,
            next_seq: 0,
            dropped: 0,
        }
    }

    pub(crate) fn push(&mut self, event: Event) {
        if self.capacity == 0 {
            return;
        }
        if self.items.len() >= self.capacity {
            self.items.pop_front();
            self.dropped += 1;
        }
        self.items.push_back((self.next_seq, event));
        self.next_seq += 1;
    }

    pub(crate) fn pop(&mut self) -> Option<Event> {
        self.items.pop_front().map(|(_, e)| e)
    }

    pub(crate) fn take_all(&mut self) -> Vec<Event> {
        self.items.drain(..).map(|(_, e)| e).collect()
    }

    pub(crate) fn dropped(&self) -> u64 {
        self.dropped
    }

    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    /// Removes and returns the first event with sequence number `>= *from` that matches; moves
    /// `*from` past every event looked at, so each event is tested once.
    pub(crate) fn take_first(
        &mut self,
        from: &mut u64,
        mut matches: impl FnMut(&Event) -> bool,
    ) -> Option<Event> {
        let start = self.items.partition_point(|(seq, _)| *seq < *from);
        for i in start..self.items.len() {
            let (seq, event) = &self.items[i];
            *from = seq + 1;
            if matches(event) {
                return self.items.remove(i).map(|(_, e)| e);
            }
        }
        None
    }
}

/// Identifies a registered event handler, for [`Client::remove_handler`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HandlerId(pub(crate) u64);

pub(crate) type HandlerFn = Arc<dyn Fn(&Event) + Send + Sync>;

pub(crate) struct Handler {
    pub(crate) id: HandlerId,
    /// `None`: every event.
    pub(crate) name: Option<String>,
    pub(crate) run: HandlerFn,
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

/// A blocking iterator over events, from [`Client::events`].
///
/// `next()` waits without limit and returns `None` once the connection has closed and every
/// queued event has been read. [`Events::next_timeout`] waits at most a given time.
///
/// ```no_run
/// # let client = qmp_blocking::Client::connect_unix("/tmp/qmp.sock")?;
/// for event in client.events() {
///     println!("{} {:?}", event.name, event.data);
///     if event.name == "SHUTDOWN" {
///         break;
///     }
/// }
/// # Ok::<(), qmp_blocking::Error>(())
/// ```
pub struct Events<'a> {
    pub(crate) client: &'a Client,
}

impl Events<'_> {
    /// The next event, waiting at most `timeout`: [`Error::Timeout`] when none came,
    /// [`Error::Disconnected`] when the connection closed and nothing is left.
    pub fn next_timeout(&mut self, timeout: Duration) -> Result<Event, Error> {
        self.client.next_event(timeout)
    }
}

impl Iterator for Events<'_> {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        self.client.next_event_until(None).ok()
    }
}

impl fmt::Debug for Events<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Events").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(name: &str) -> Event {
        Event {
            name: name.into(),
            data: Default::default(),
            timestamp: None,
        }
    }

    #[test]
    fn full_queue_drops_the_oldest_and_counts() {
        let mut q = EventQueue::new(2);
        for n in ["A", "B", "C", "D"] {
            q.push(ev(n));
        }
        assert_eq!(q.dropped(), 2);
        let names: Vec<_> = q.take_all().into_iter().map(|e| e.name).collect();
        assert_eq!(names, ["C", "D"]);
    }

    #[test]
    fn take_first_leaves_others_in_order_and_tests_each_once() {
        let mut q = EventQueue::new(10);
        for n in ["A", "B", "A", "C"] {
            q.push(ev(n));
        }
        let mut from = 0;
        let mut tested = 0;
        let got = q.take_first(&mut from, |e| {
            tested += 1;
            e.name == "C"
        });
        assert_eq!(got.map(|e| e.name).as_deref(), Some("C"));
        assert_eq!(tested, 4);
        assert!(q.take_first(&mut from, |_| true).is_none());
        q.push(ev("D"));
        assert_eq!(
            q.take_first(&mut from, |_| true).map(|e| e.name).as_deref(),
            Some("D")
        );
        let names: Vec<_> = q.take_all().into_iter().map(|e| e.name).collect();
        assert_eq!(names, ["A", "B", "A"]);
    }

    #[test]
    fn zero_capacity_keeps_nothing() {
        let mut q = EventQueue::new(0);
        q.push(ev("A"));
        assert_eq!((q.len(), q.dropped()), (0, 0));
    }
}
