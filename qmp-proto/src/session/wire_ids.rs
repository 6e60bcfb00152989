//! The ids commands carry on the wire: the smallest positive integer no other command holds
//! (docs/PROTOCOL.md rule 5, "Ids are reused").
//!
//! A command holds its wire id from submission until its reply has arrived (or, queued, until it
//! is dropped unsent). An abandoned command keeps holding its id until its late reply arrives, so
//! a late reply can never be taken for the reply of a newer command. A client making one call at
//! a time therefore always sends `"id":1`, and 100 concurrent calls use `1`–`100`: the fewest bytes
//! QEMU has to read, one syscall each.
//!
//! Guest-agent sessions do not reuse ids: an agent restarted inside the guest may answer out of
//! order, after a new sync, so an old id must never name a new command (qmp-proto/tests/agent.rs,
//! `a_late_reply_after_the_new_sync_matches_nothing`). They number commands 1, 2, 3, …

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

/// Which command holds which wire id, and the ids free for reuse.
#[derive(Debug)]
pub(super) struct WireIds {
    /// Wire id → the holding command's number.
    held: HashMap<u64, u64>,
    /// Ids below `next` that are free, smallest first.
    free: BinaryHeap<Reverse<u64>>,
    /// The smallest id never handed out.
    next: u64,
    /// Whether released ids are handed out again (QMP) or never (the guest agent).
    reuse: bool,
}

impl WireIds {
    /// Ids that are reused when `reuse`, else handed out once each.
    pub(super) fn new(reuse: bool) -> Self {
        WireIds {
            held: HashMap::new(),
            free: BinaryHeap::new(),
            next: 1,
            reuse,
        }
    }

    /// The smallest free id, now held by command `number`.
    pub(super) fn take(&mut self, number: u64) -> u64 {
        let wire = match self.free.pop() {
            Some(Reverse(w)) => w,
            None => {
                let w = self.next;
                self.next += 1;
                w
            }
        };
        self.held.insert(wire, number);
        wire
    }

    /// `wire` is held no more; it is free for reuse if ids are reused.
    pub(super) fn release(&mut self, wire: u64) {
        if self.held.remove(&wire).is_some() && self.reuse {
            self.free.push(Reverse(wire));
        }
    }

    /// The number of the command holding `wire`.
    pub(super) fn holder(&self, wire: u64) -> Option<u64> {
        self.held.get(&wire).copied()
    }

    /// Forgets every id (the session closed).
    pub(super) fn clear(&mut self) {
        self.held.clear();
        self.free.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::WireIds;

    #[test]
    fn the_smallest_free_id_is_reused() {
        let mut ids = WireIds::new(true);
        assert_eq!(ids.take(10), 1);
        ids.release(1);
        assert_eq!(ids.take(11), 1, "one call at a time always gets id 1");
        assert_eq!(ids.take(12), 2);
        assert_eq!(ids.take(13), 3);
        ids.release(2);
        ids.release(1);
        assert_eq!(ids.holder(3), Some(13));
        assert_eq!(ids.holder(1), None);
        assert_eq!(ids.take(14), 1);
        assert_eq!(ids.take(15), 2);
        assert_eq!(ids.take(16), 4);
    }

    #[test]
    fn releasing_an_id_twice_frees_it_once() {
        let mut ids = WireIds::new(true);
        assert_eq!(ids.take(1), 1);
        ids.release(1);
        ids.release(1);
        assert_eq!(ids.take(2), 1);
        assert_eq!(ids.take(3), 2, "id 1 must not be handed out twice");
    }

    #[test]
    fn without_reuse_every_id_is_new() {
        let mut ids = WireIds::new(false);
        assert_eq!(ids.take(1), 1);
        ids.release(1);
        assert_eq!(ids.holder(1), None);
        assert_eq!(ids.take(2), 2);
    }
}
