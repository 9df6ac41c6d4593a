//! What an owner answers for one (topic, shard) of a replica's fetch, and what a replica
//! concludes from the answer: Kafka's leader-epoch truncation, reduced to offsets and marks.
//!
//! A shard's log is one sequence of offsets on every node that holds it. Before its first
//! write at a new epoch an owner records an **epoch mark** `(epoch, start)`: the entries from
//! `start` on were written by the owner of `epoch` (until the next mark). Replicas copy the
//! marks with the entries. The marks are what lets an owner recognise, from nothing but a
//! replica's log end and newest epoch, a copy that holds entries the owner never had.

use crate::core::table::ShardId;

/// One mark of a shard's log: `(epoch, start)`, the owner of `epoch` wrote the entries
/// from offset `start` on. A log's marks are in increasing order of both.
pub type EpochMark = (u64, u64);

/// What an owner tells a replica whose copy holds entries the owner never had: Kafka's
/// answer to `OffsetsForLeaderEpoch` (with KIP-279's refinement), carried in a fetch
/// answer as `truncate_to` and, as its only mark, [`Truncation::mark`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Truncation {
    /// Where the replica's newest epoch ends in the owner's history: the start of the
    /// owner's first newer epoch, or the owner's log end.
    pub to: u64,
    /// The owner's newest epoch at or below the replica's newest, with its start (0 and 0
    /// when it has none). When it is not the replica's own newest epoch, the owner never
    /// had that one: the replica's entries from its first epoch past this one are not the
    /// owner's either, even below `to`. `None` from an owner that sent no mark (an older
    /// build), which knew only `to`.
    pub owner_epoch: Option<EpochMark>,
}

impl Truncation {
    /// Read back from a fetch answer: its `truncate_to` and its marks.
    pub fn from_answer(to: u64, marks: &[EpochMark]) -> Truncation {
        Truncation {
            to,
            owner_epoch: marks.first().copied(),
        }
    }

    /// The marks a fetch answer carries with the cut.
    pub fn marks(&self) -> Vec<EpochMark> {
        self.owner_epoch.into_iter().collect()
    }

    /// As replica, with its own `marks` and log end `next`: where to cut its copy. Below
    /// `to`, and below the start of its first epoch newer than the owner's (entries of an
    /// epoch the owner never had). A replica whose newest epoch the owner does not have
    /// may need several cuts, each to an older epoch, until its newest is one the owner
    /// has; a cut at or past `next` still drops the marks from there on.
    pub fn cut(&self, marks: &[EpochMark], next: u64) -> u64 {
        let own_end = self
            .owner_epoch
            .and_then(|(epoch, _)| marks.iter().find(|(e, _)| *e > epoch))
            .map_or(next, |(_, start)| *start);
        self.to.min(own_end)
    }
}

/// As owner, for one fetched (topic, shard): how the replica must cut its copy, or `None`
/// when the copy continues at `replica_next`.
///
/// `owner_marks` and `owner_next` are the owner's marks and log end for the shard; the
/// replica reports its log end `replica_next` and `replica_last_epoch`, the epoch of its
/// newest mark (0 for none: entries from before marks, or none). The replica's newest
/// epoch ends, in the owner's history, where the owner's first newer epoch starts (or at
/// the owner's end if it has none). A copy that goes past that point holds entries written
/// by an owner that lost the shard before they were copied to whoever took over: never
/// acknowledged with `acks = all`, and not in this owner's log, so the replica drops them
/// rather than keep a log that differs at the same offsets. And a replica whose newest
/// epoch this owner never had (its writer lost the shard to an owner that had not copied
/// it) holds entries this owner does not have, wherever its copy ends: it is told to cut
/// too, and finds where with [`Truncation::cut`].
pub fn truncate_to(
    owner_marks: &[EpochMark],
    owner_next: u64,
    replica_next: u64,
    replica_last_epoch: u64,
) -> Option<Truncation> {
    let end_of_last = owner_marks
        .iter()
        .find(|(epoch, _)| *epoch > replica_last_epoch)
        .map_or(owner_next, |(_, start)| *start);
    let owner_epoch = owner_marks
        .iter()
        .rev()
        .find(|(epoch, _)| *epoch <= replica_last_epoch)
        .copied()
        .unwrap_or((0, 0));
    let known = replica_last_epoch == 0 || owner_epoch.0 == replica_last_epoch;
    (replica_next > end_of_last || !known).then_some(Truncation {
        to: end_of_last,
        owner_epoch: Some(owner_epoch),
    })
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

    fn cut_at(
        owner: &[EpochMark],
        owner_next: u64,
        replica: &[EpochMark],
        next: u64,
    ) -> Option<u64> {
        let last = replica.last().map_or(0, |(e, _)| *e);
        truncate_to(owner, owner_next, next, last).map(|t| t.cut(replica, next))
    }

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
        // An empty replica has nothing to cut.
        assert_eq!(truncate_to(&owner, 9, 0, 0), None);
        // One with entries but no mark did not copy them from this owner (a copy brings the
        // marks along): they go.
        assert_eq!(truncate_to(&owner, 9, 4, 0).map(|t| t.to), Some(0));
        assert_eq!(truncate_to(&[], 9, 4, 0), None);
    }

    #[test]
    fn a_copy_past_the_end_of_its_epoch_is_cut_there() {
        let owner = [(1, 0), (3, 5)];
        // Epoch 1's owner wrote 7 entries on the replica, the new owner kept 5.
        let t = truncate_to(&owner, 9, 7, 1).unwrap();
        assert_eq!(t.to, 5);
        assert_eq!(t.owner_epoch, Some((1, 0)));
        assert_eq!(t.cut(&[(1, 0)], 7), 5);
        // A replica ahead of an owner at the same epoch (only a stale owner could see this):
        // cut at the owner's end.
        assert_eq!(cut_at(&owner, 9, &[(1, 0), (3, 5)], 12), Some(9));
        // An owner without marks (entries from before marks only): its end.
        assert_eq!(truncate_to(&[], 4, 6, 0).map(|t| t.to), Some(4));
        // The cut is never above the replica's end.
        assert_eq!(cut_at(&[(2, 0)], 0, &[(1, 0)], 3), Some(0));
    }

    #[test]
    fn a_copy_of_an_epoch_the_owner_never_had_is_cut_where_that_epoch_starts() {
        // Epoch 2's owner wrote at 3 and 4 on this replica only; epoch 3's owner had not
        // copied them and wrote its own from 3.
        let owner = [(1, 0), (3, 3)];
        assert_eq!(cut_at(&owner, 9, &[(1, 0), (2, 3)], 5), Some(3));
        // Even when the copy does not reach past the owner's epoch 1 in offsets: epoch 2's
        // owner took over at 1 (the replica's entries 1 and 2 are not the owner's).
        let owner = [(1, 0), (3, 4)];
        let t = truncate_to(&owner, 9, 3, 2).unwrap();
        assert_eq!((t.to, t.owner_epoch), (4, Some((1, 0))));
        assert_eq!(t.cut(&[(1, 0), (2, 1)], 3), 1);
        // No epoch of the owner at or below the replica's: the owner's history starts after
        // it, nothing of the replica's is the owner's.
        assert_eq!(cut_at(&[(5, 0)], 4, &[(2, 1)], 3), Some(0));
        // Several epochs the owner never had: one cut per epoch, each to an older one,
        // until the replica's newest is one the owner has.
        let owner = [(1, 0), (3, 5), (5, 7)];
        let replica = [(1, 0), (2, 4), (4, 6)];
        assert_eq!(cut_at(&owner, 9, &replica, 9), Some(6));
        assert_eq!(cut_at(&owner, 9, &replica[..2], 6), Some(4));
        assert_eq!(cut_at(&owner, 9, &replica[..1], 4), None);
        // A mark without entries after it is dropped by a cut at the replica's end.
        assert_eq!(cut_at(&owner, 9, &[(1, 0), (2, 4)], 4), Some(4));
    }

    #[test]
    fn an_answer_from_an_older_owner_cuts_where_it_says() {
        let t = Truncation::from_answer(5, &[]);
        assert_eq!(t.cut(&[(1, 0), (2, 3)], 7), 5);
        let t = Truncation::from_answer(5, &[(1, 0)]);
        assert_eq!(t.cut(&[(1, 0), (2, 3)], 7), 3);
        assert_eq!(Truncation::from_answer(5, &t.marks()), t);
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
