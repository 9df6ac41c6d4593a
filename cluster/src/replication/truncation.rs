//! What an owner answers for one (topic, shard) of a replica's fetch, and what a replica
//! concludes from the answer: Kafka's leader-epoch truncation, reduced to offsets and marks.
//!
//! A shard's log is one sequence of offsets on every node that holds it. Before its first
//! write at a new epoch an owner records an **epoch mark** `(epoch, start)`: the entries from
//! `start` on were written by the owner of `epoch` (until the next mark). Replicas copy the
//! marks with the entries. The marks are what lets an owner recognise, from nothing but a
//! replica's log end and newest epoch, a copy that holds entries the owner never had.

use crate::table::ShardId;

/// One mark of a shard's log: `(epoch, start)`, the owner of `epoch` wrote the entries
/// from offset `start` on. A log's marks are in increasing order of both.
pub type EpochMark = (u64, u64);

/// As owner, for one fetched (topic, shard): where the replica must cut its copy, or `None`
/// when the copy continues at `replica_next`.
///
/// `owner_marks` and `owner_next` are the owner's marks and log end for the shard; the
/// replica reports its log end `replica_next` and `replica_last_epoch`, the epoch of its
/// newest mark (0 for none). The replica's newest epoch ends, in the owner's history, where
/// the owner's first newer epoch starts (or at the owner's end if it has none). A copy that
/// goes past that point holds entries written by an owner that lost the shard before they
/// were copied to whoever took over: never acknowledged with `acks = all`, and not in this
/// owner's log, so the replica drops them rather than keep a log that differs at the same
/// offsets.
pub fn truncate_to(
    owner_marks: &[EpochMark],
    owner_next: u64,
    replica_next: u64,
    replica_last_epoch: u64,
) -> Option<u64> {
    let end_of_last = owner_marks
        .iter()
        .find(|(epoch, _)| *epoch > replica_last_epoch)
        .map_or(owner_next, |(_, start)| *start);
    (replica_next > end_of_last).then_some(end_of_last)
}

/// The marks that start within `[from, end)`: those an answer carrying the entries at those
/// offsets must carry along, so the replica's marks say the same as the owner's about every
/// entry it copied (its next fetch's `last_epoch` depends on them).
pub fn marks_within(marks: &[EpochMark], from: u64, end: u64) -> Vec<EpochMark> {
    marks
        .iter()
        .filter(|(_, start)| *start >= from && *start < end)
        .copied()
        .collect()
}

/// As owner, before writing at `epoch`: whether the log needs a mark first. Only the first
/// write of an epoch marks it, and a mark for an epoch at or below the newest one would say
/// something false about entries already written.
pub fn needs_mark(marks: &[EpochMark], epoch: u64) -> bool {
    marks.last().is_none_or(|(newest, _)| *newest < epoch)
}

/// Whether a copy that continued at `first` with `copied` entries is level with an owner
/// whose log ends at `owner_next`. Both sides use it: the owner to start waiting on a joining
/// replica, the replica to report itself in sync.
pub fn caught_up(first: u64, copied: u64, owner_next: u64) -> bool {
    first.saturating_add(copied) >= owner_next
}

/// A replica's conclusion from one fetch answer, shard by shard: level with the owner on
/// every topic of a shard, or not. A shard starts level; any topic of it that was truncated,
/// or copied only in part, makes it not level. Only a level shard may be reported in sync.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Levels {
    shards: std::collections::BTreeMap<ShardId, bool>,
}

impl Levels {
    /// Every fetched shard level until an answer item says otherwise.
    pub fn new(shards: impl IntoIterator<Item = ShardId>) -> Levels {
        Levels {
            shards: shards.into_iter().map(|s| (s, true)).collect(),
        }
    }

    /// A topic of `shard` was truncated: the replica must fetch again from the cut.
    pub fn truncated(&mut self, shard: ShardId) {
        self.shards.insert(shard, false);
    }

    /// A topic of `shard` was copied from `first`, `copied` entries, of an owner's log that
    /// ends at `owner_next`.
    pub fn copied(&mut self, shard: ShardId, first: u64, copied: u64, owner_next: u64) {
        if !caught_up(first, copied, owner_next) {
            self.shards.insert(shard, false);
        }
    }

    /// Whether `shard` was fetched and is level on every topic.
    pub fn level(&self, shard: ShardId) -> bool {
        self.shards.get(&shard).copied().unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_within_the_owners_history_continues() {
        // Owner: epoch 1 from 0, epoch 3 from 5, log end 9.
        let owner = [(1, 0), (3, 5)];
        // A replica at epoch 1 with 5 entries: exactly where epoch 1 ends.
        assert_eq!(truncate_to(&owner, 9, 5, 1), None);
        // Behind: fine.
        assert_eq!(truncate_to(&owner, 9, 2, 1), None);
        // At the owner's epoch, anywhere up to its end.
        assert_eq!(truncate_to(&owner, 9, 9, 3), None);
        // An empty replica never truncates.
        assert_eq!(truncate_to(&owner, 9, 0, 0), None);
    }

    #[test]
    fn a_copy_past_the_end_of_its_epoch_is_cut_there() {
        let owner = [(1, 0), (3, 5)];
        // Epoch 1's owner wrote 7 entries on the replica, the new owner kept 5.
        assert_eq!(truncate_to(&owner, 9, 7, 1), Some(5));
        // An epoch the owner never saw (2, written by an owner that lost the shard): it ends
        // where the owner's next epoch after it starts.
        assert_eq!(truncate_to(&owner, 9, 6, 2), Some(5));
        // A replica ahead of an owner at the same epoch (only a stale owner could see this):
        // cut at the owner's end.
        assert_eq!(truncate_to(&owner, 9, 12, 3), Some(9));
        // An owner without marks (nothing written since marks exist): its end.
        assert_eq!(truncate_to(&[], 4, 6, 0), Some(4));
        // The cut is never above the replica's end.
        assert_eq!(truncate_to(&[(2, 0)], 0, 3, 1), Some(0));
    }

    #[test]
    fn marks_travel_with_the_entries_they_start_in() {
        let marks = [(1, 0), (3, 5), (4, 8)];
        assert_eq!(marks_within(&marks, 0, 5), vec![(1, 0)]);
        assert_eq!(marks_within(&marks, 5, 8), vec![(3, 5)]);
        assert_eq!(marks_within(&marks, 4, 9), vec![(3, 5), (4, 8)]);
        assert!(marks_within(&marks, 6, 6).is_empty());
    }

    #[test]
    fn an_epoch_is_marked_once_and_never_below_the_newest() {
        assert!(needs_mark(&[], 1));
        assert!(needs_mark(&[(1, 0)], 2));
        assert!(!needs_mark(&[(1, 0), (2, 4)], 2));
        assert!(!needs_mark(&[(3, 0)], 2));
    }

    #[test]
    fn a_shard_is_level_only_if_every_topic_is() {
        let mut l = Levels::new([1, 2, 3]);
        l.copied(1, 4, 2, 6);
        l.copied(1, 0, 0, 0);
        l.copied(2, 4, 1, 6);
        l.truncated(3);
        assert!(l.level(1));
        assert!(!l.level(2));
        assert!(!l.level(3));
        assert!(!l.level(4), "a shard not fetched is not level");
        assert!(caught_up(3, 0, 3) && !caught_up(3, 0, 4));
    }
}
