//! Which publishes a node's log holds, so that a retried publish is logged once per shard
//! (ARCHITECTURE §6: producers carry ids and sequence numbers).
//!
//! A publish is named by its origin, (producer, batch). A sender that gets no answer sends
//! the same publish again, maybe to another owner after a failover; the node that receives
//! it must log its events for a shard only if its log does not hold them already, whether
//! it logged them itself (an owner that answered too late) or copied them (a replica of an
//! owner that died before it answered). And while one attempt is logging them, another must
//! neither log them too nor answer before they are logged: the attempt **claims** the
//! (origin, shard)s it logs, and a second attempt finds them busy until the first ends.

use std::collections::{HashSet, VecDeque};

use crate::core::table::ShardId;

/// A publish: (producer, batch).
pub type Origin = (u64, u64);

/// How many (producer, batch, shard) a node remembers by default: a retry comes within
/// seconds of its first attempt, so the oldest are forgotten.
pub const SEEN_CAPACITY: usize = 1 << 20;

/// The shards of one publish an attempt may go ahead with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claimed {
    /// Shards this attempt logs; they are busy for any other attempt until released.
    pub claimed: Vec<ShardId>,
    /// Shards whose events of this publish the log holds already: the attempt skips them.
    pub logged: Vec<ShardId>,
}

/// A bounded set of (producer, batch, shard) in the log, forgetting the oldest first, and
/// the ones being logged right now.
#[derive(Clone, Debug)]
pub struct Seen {
    capacity: usize,
    set: HashSet<(u64, u64, ShardId)>,
    order: VecDeque<(u64, u64, ShardId)>,
    /// Claimed by an attempt that is logging them.
    inflight: HashSet<(u64, u64, ShardId)>,
}

impl Default for Seen {
    fn default() -> Seen {
        Seen::new(SEEN_CAPACITY)
    }
}

fn key(origin: Origin, shard: ShardId) -> (u64, u64, ShardId) {
    (origin.0, origin.1, shard)
}

impl Seen {
    /// An empty set remembering at most `capacity` entries (at least one).
    pub fn new(capacity: usize) -> Seen {
        Seen {
            capacity: capacity.max(1),
            set: HashSet::new(),
            order: VecDeque::new(),
            inflight: HashSet::new(),
        }
    }

    /// Whether another attempt is logging some of `shards` of `origin`: a new attempt waits
    /// until it ends, then finds them logged (or not, if it failed).
    pub fn busy(&self, origin: Origin, shards: &[ShardId]) -> bool {
        shards
            .iter()
            .any(|s| self.inflight.contains(&key(origin, *s)))
    }

    /// Claims `shards` of `origin` for one attempt: `None` while another attempt holds any
    /// of them ([`Seen::busy`]); otherwise those the log holds are `logged` and the others
    /// are `claimed`, until [`Seen::release`].
    pub fn try_claim(&mut self, origin: Origin, shards: &[ShardId]) -> Option<Claimed> {
        if self.busy(origin, shards) {
            return None;
        }
        let (logged, claimed): (Vec<ShardId>, Vec<ShardId>) = shards
            .iter()
            .partition(|s| self.set.contains(&key(origin, **s)));
        for s in &claimed {
            self.inflight.insert(key(origin, *s));
        }
        Some(Claimed { claimed, logged })
    }

    /// The attempt that claimed `claimed` of `origin` ended, logged ([`Seen::note`] first)
    /// or not.
    pub fn release(&mut self, origin: Origin, claimed: &[ShardId]) {
        for s in claimed {
            self.inflight.remove(&key(origin, *s));
        }
    }

    /// The log holds the events of `origin` for `shards` now.
    pub fn note(&mut self, origin: Origin, shards: &[ShardId]) {
        for s in shards {
            self.insert(key(origin, *s));
        }
    }

    /// The log holds the events of publish (producer, batch) for shard, as found in the log
    /// (a restart reads its newest entries) or copied from an owner.
    pub fn insert(&mut self, k: (u64, u64, ShardId)) {
        if self.set.insert(k) {
            self.order.push_back(k);
            if self.order.len() > self.capacity {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }

    /// The log no longer holds the events of (producer, batch) for shard: a replica's
    /// truncation removed them. Left in the set, a retry of the publish would find it logged
    /// and be acknowledged with its events nowhere (once this node owns the shard). The
    /// key's place in the order of forgetting stays behind: if logged again it may be
    /// forgotten a little early, only once the set has taken its capacity of newer ones.
    pub fn forget(&mut self, k: (u64, u64, ShardId)) {
        self.set.remove(&k);
    }

    /// Whether the log holds the events of (producer, batch) for shard, as far as this set
    /// remembers.
    pub fn contains(&self, k: (u64, u64, ShardId)) -> bool {
        self.set.contains(&k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_splits_logged_shards_from_those_to_log() {
        let mut s = Seen::default();
        s.note((7, 1), &[2]);
        let c = s.try_claim((7, 1), &[1, 2, 3]).unwrap();
        assert_eq!(c.logged, vec![2]);
        assert_eq!(c.claimed, vec![1, 3]);
        // Another publish of the same producer is independent.
        assert_eq!(s.try_claim((7, 2), &[1]).map(|c| c.claimed), Some(vec![1]));
    }

    #[test]
    fn a_second_attempt_waits_for_the_first_and_then_skips_what_it_logged() {
        let mut s = Seen::default();
        let first = s.try_claim((1, 1), &[4, 5]).unwrap();
        assert!(s.busy((1, 1), &[5, 6]));
        assert_eq!(s.try_claim((1, 1), &[5]), None);
        // A shard of the publish nobody claimed is free.
        assert!(!s.busy((1, 1), &[6]));
        s.note((1, 1), &first.claimed);
        s.release((1, 1), &first.claimed);
        let second = s.try_claim((1, 1), &[4, 5, 6]).unwrap();
        assert_eq!((second.logged, second.claimed), (vec![4, 5], vec![6]));
    }

    #[test]
    fn a_failed_attempt_leaves_the_shards_to_the_next_one() {
        let mut s = Seen::default();
        let first = s.try_claim((1, 1), &[4]).unwrap();
        s.release((1, 1), &first.claimed);
        let second = s.try_claim((1, 1), &[4]).unwrap();
        assert_eq!((second.logged, second.claimed), (vec![], vec![4]));
    }

    #[test]
    fn a_truncated_publish_is_logged_again_by_its_retry() {
        let mut s = Seen::default();
        s.insert((1, 1, 0));
        s.insert((1, 2, 0));
        s.forget((1, 1, 0));
        let c = s.try_claim((1, 1), &[0]).unwrap();
        assert_eq!((c.logged, c.claimed), (vec![], vec![0]));
        assert!(s.contains((1, 2, 0)));
    }

    #[test]
    fn the_oldest_are_forgotten_first() {
        let mut s = Seen::new(2);
        s.insert((1, 1, 0));
        s.insert((1, 2, 0));
        s.insert((1, 1, 0)); // already there: not counted twice
        assert!(s.contains((1, 1, 0)) && s.contains((1, 2, 0)));
        s.insert((1, 3, 0));
        assert!(!s.contains((1, 1, 0)));
        assert!(s.contains((1, 2, 0)) && s.contains((1, 3, 0)));
        assert!(Seen::new(0).capacity == 1);
    }
}
