//! The bounded queue every client keeps QMP events (and its recent warnings) in.
//!
//! A client must never stop reading QEMU's output (docs/PROTOCOL.md, rule 10: QEMU buffers unread
//! output without limit, and replies queue behind unread events), so it can never wait for a
//! consumer of events either. When the queue is full, the oldest item is dropped and counted.

use crate::Event;
use std::collections::VecDeque;

/// The queue of QMP events a client keeps for its caller.
pub type EventQueue = BoundedQueue<Event>;

/// Items waiting to be read, oldest first, at most `capacity` of them; when full, the oldest is
/// dropped and counted.
///
/// ```
/// use qmp_proto::{Event, EventQueue};
/// let mut queue = EventQueue::new(2);
/// for name in ["A", "B", "C"] {
///     queue.push(Event { name: name.into(), data: Default::default(), timestamp: None });
/// }
/// assert_eq!(queue.dropped(), 1);
/// assert_eq!(queue.pop().unwrap().name, "B");
/// ```
#[derive(Debug)]
pub struct BoundedQueue<T> {
    items: VecDeque<(u64, T)>,
    capacity: usize,
    next_seq: u64,
    dropped: u64,
}

impl<T> BoundedQueue<T> {
    /// An empty queue holding at most `capacity` items (0: keeps none, drops nothing).
    pub fn new(capacity: usize) -> Self {
        BoundedQueue {
            items: VecDeque::new(),
            capacity,
            next_seq: 0,
            dropped: 0,
        }
    }

    /// Appends `item`, dropping (and counting) the oldest when full.
    pub fn push(&mut self, item: T) {
        let seq = self.next_seq;
        self.next_seq += 1;
        if self.capacity == 0 {
            return;
        }
        if self.items.len() >= self.capacity {
            self.items.pop_front();
            self.dropped += 1;
        }
        self.items.push_back((seq, item));
    }

    /// Removes the oldest item.
    pub fn pop(&mut self) -> Option<T> {
        self.items.pop_front().map(|(_, e)| e)
    }

    /// The newest item still queued.
    pub fn last(&self) -> Option<&T> {
        self.items.back().map(|(_, item)| item)
    }

    /// Removes every item, oldest first.
    pub fn take_all(&mut self) -> Vec<T> {
        self.items.drain(..).map(|(_, e)| e).collect()
    }

    /// How many items were dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// How many items are queued.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// How many items were ever pushed (kept, dropped or taken since).
    pub fn pushed(&self) -> u64 {
        self.next_seq
    }

    /// Removes and returns the first item that `matches`, among those pushed since the cursor
    /// `*from` (start at 0); moves `*from` past every item looked at, so a waiter that calls this
    /// again after new items arrived tests each one once. Other items stay, in order.
    pub fn take_first(&mut self, from: &mut u64, mut matches: impl FnMut(&T) -> bool) -> Option<T> {
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
        assert_eq!((q.len(), q.dropped(), q.pushed()), (0, 0, 1));
        assert!(q.is_empty());
    }
}
