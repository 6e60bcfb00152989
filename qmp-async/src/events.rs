//! QMP events as [`Stream`]s: the connection's own queue ([`Events`], shared by `next_event`
//! and `wait_event`, as in the blocking client), and any number of subscribers, each with its own
//! filter and its own bounded queue ([`EventStream`]).
//!
//! The driver never waits for a consumer (QEMU must always be read, or replies queue behind
//! unread events: rule 10). When a queue is full, its oldest event is dropped and counted; a
//! subscriber's stream then yields [`Missed`] with that count before the events that follow the
//! gap.

use crate::shared::{register, Inner, Wakeups};
use futures_core::Stream;
use qmp_proto::Event;
use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

/// A predicate on events.
type Predicate = Arc<dyn Fn(&Event) -> bool + Send + Sync>;

/// Which events a subscriber receives, and how many it may hold unread.
///
/// ```
/// use qmp_async::EventFilter;
/// let jobs = EventFilter::names(["JOB_STATUS_CHANGE", "BLOCK_JOB_COMPLETED"])
///     .matching(|e| e.data.get("id").or(e.data.get("device")).and_then(|v| v.as_str()) == Some("j0"))
///     .buffer(256);
/// # let _ = jobs;
/// ```
#[derive(Clone, Default)]
pub struct EventFilter {
    names: Option<Vec<String>>,
    predicate: Option<Predicate>,
    buffer: Option<usize>,
}

impl EventFilter {
    /// Every event.
    pub fn all() -> Self {
        EventFilter::default()
    }

    /// Only events with one of these names.
    pub fn names<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        EventFilter {
            names: Some(names.into_iter().map(Into::into).collect()),
            ..EventFilter::default()
        }
    }

    /// Only events for which `predicate` is true (on top of the name filter). It runs on the
    /// driver task for every event: keep it quick.
    pub fn matching(mut self, predicate: impl Fn(&Event) -> bool + Send + Sync + 'static) -> Self {
        self.predicate = Some(Arc::new(predicate));
        self
    }

    /// How many unread events this subscriber may hold (at least 1); default
    /// [`Builder::subscriber_buffer`](crate::Builder::subscriber_buffer).
    pub fn buffer(mut self, events: usize) -> Self {
        self.buffer = Some(events);
        self
    }

    fn accepts(&self, event: &Event) -> bool {
        self.names
            .as_ref()
            .is_none_or(|names| names.contains(&event.name))
            && self.predicate.as_ref().is_none_or(|p| p(event))
    }
}

impl fmt::Debug for EventFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventFilter")
            .field("names", &self.names)
            .field("predicate", &self.predicate.is_some())
            .field("buffer", &self.buffer)
            .finish()
    }
}

/// A subscriber fell behind: this many events were dropped from its queue (the oldest first)
/// before the next event it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Missed(pub u64);

impl fmt::Display for Missed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} events were dropped because the subscriber fell behind",
            self.0
        )
    }
}

impl std::error::Error for Missed {}

pub(crate) struct Subscriber {
    filter: EventFilter,
    queue: VecDeque<Event>,
    capacity: usize,
    missed: u64,
    pub(crate) waker: Option<Waker>,
}

impl Subscriber {
    /// Queues `event` if the filter takes it; true when the subscriber should be woken.
    pub(crate) fn offer(&mut self, event: &Event) -> bool {
        if !self.filter.accepts(event) {
            return false;
        }
        if self.queue.len() >= self.capacity {
            self.queue.pop_front();
            self.missed += 1;
        }
        self.queue.push_back(event.clone());
        true
    }
}

/// A stream of the QMP events that match its [`EventFilter`], in the order QEMU sent them, from
/// the moment of subscribing. It ends when the connection closes (after the events that arrived
/// before). Items are `Err(Missed(n))` when `n` events were dropped because this stream was not
/// read fast enough. Alive streams keep the connection open.
pub struct EventStream {
    inner: Arc<Inner>,
    id: u64,
}

impl EventStream {
    pub(crate) fn new(inner: Arc<Inner>, filter: EventFilter) -> Self {
        let id = {
            let mut s = inner.lock();
            let capacity = filter.buffer.unwrap_or(s.subscriber_buffer).max(1);
            let id = s.next_subscriber;
            s.next_subscriber += 1;
            s.users += 1;
            s.subscribers.insert(
                id,
                Subscriber {
                    filter,
                    queue: VecDeque::new(),
                    capacity,
                    missed: 0,
                    waker: None,
                },
            );
            id
        };
        EventStream { inner, id }
    }
}

impl Stream for EventStream {
    type Item = Result<Event, Missed>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut s = self.inner.lock();
        let closed = s.closed();
        let Some(sub) = s.subscribers.get_mut(&self.id) else {
            return Poll::Ready(None);
        };
        if sub.missed > 0 {
            return Poll::Ready(Some(Err(Missed(std::mem::take(&mut sub.missed)))));
        }
        if let Some(event) = sub.queue.pop_front() {
            return Poll::Ready(Some(Ok(event)));
        }
        if closed {
            return Poll::Ready(None);
        }
        if !sub.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            sub.waker = Some(cx.waker().clone());
        }
        let driver = s.read.hand_to_driver();
        drop(s);
        if let Some(w) = driver {
            w.wake();
        }
        Poll::Pending
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        let mut wakeups = Wakeups::default();
        {
            let mut s = self.inner.lock();
            s.subscribers.remove(&self.id);
            s.users -= 1;
            if s.users == 0 {
                wakeups.push(s.driver_waker.take());
            }
        }
        wakeups.wake();
    }
}

impl fmt::Debug for EventStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventStream").field("id", &self.id).finish()
    }
}

/// The connection's event queue as a [`Stream`], from [`Client::events`](crate::Client::events):
/// it takes events from the same queue as `next_event` and `wait_event` (so each event goes to
/// one reader), oldest first, including those that arrived before it was made. It ends when the
/// connection has closed and the queue is empty.
pub struct Events<'a> {
    pub(crate) inner: &'a Arc<Inner>,
}

impl Stream for Events<'_> {
    type Item = Event;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        let mut s = self.inner.lock();
        if let Some(event) = s.events.pop() {
            return Poll::Ready(Some(event));
        }
        if s.closed() {
            return Poll::Ready(None);
        }
        register(&mut s.event_waiters, cx.waker());
        let driver = s.read.hand_to_driver();
        drop(s);
        if let Some(w) = driver {
            w.wake();
        }
        Poll::Pending
    }
}

impl fmt::Debug for Events<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Events").finish_non_exhaustive()
    }
}
