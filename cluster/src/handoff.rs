//! Handing a shard from one node to another (ARCHITECTURE §5, scale-out): the router-side
//! [`Holder`] that keeps writes for a moving shard back, and the [`HandoffStep`] machine that
//! tracks one hand-off's copy.
//!
//! While a shard moves, its owner refuses writes ([`crate::fence::Fence::Held`]) so that the
//! copy the receiver takes is complete; routers keep those writes in a [`Holder`] and release
//! them, in arrival order, once the table shows the move completed (they go to the new owner)
//! or aborted (they go back to the old one). The holder is bounded: a stuck hand-off pushes
//! back on clients instead of growing memory or dropping data.

use std::collections::{BTreeMap, VecDeque};

use thiserror::Error;

use crate::state::Command;
use crate::table::{NodeId, ShardId};

/// Refusal to hold one more item: the shard's queue is full. The item comes back so that
/// nothing is lost silently; the caller answers its client "busy, retry later".
#[derive(Debug, Error, PartialEq, Eq)]
#[error(
    "shard {shard} is being handed over and already has {max} batches held back; \
     back off and retry once the move has completed"
)]
pub struct HoldFull<T> {
    /// The shard whose queue is full.
    pub shard: ShardId,
    /// The bound it hit, for the message.
    pub max: usize,
    /// The item that was not held.
    pub item: T,
}

/// Items (batches of events) for moving shards, kept back until the move ends. Why a router
/// holds rather than the old owner: the old owner must stop changing the shard while it is
/// copied, and the router is the one that can answer its client.
#[derive(Debug)]
pub struct Holder<T> {
    max_per_shard: usize,
    held: BTreeMap<ShardId, VecDeque<T>>,
}

impl<T> Holder<T> {
    /// A holder that keeps at most `max_per_shard` items per shard (at least one).
    pub fn new(max_per_shard: usize) -> Holder<T> {
        Holder {
            max_per_shard: max_per_shard.max(1),
            held: BTreeMap::new(),
        }
    }

    /// Keeps `item` back for `shard`, after those already held. Refuses, returning the item,
    /// when the shard already has `max_per_shard` items: back-pressure.
    pub fn hold(&mut self, shard: ShardId, item: T) -> Result<(), HoldFull<T>> {
        let q = self.held.entry(shard).or_default();
        if q.len() >= self.max_per_shard {
            return Err(HoldFull {
                shard,
                max: self.max_per_shard,
                item,
            });
        }
        q.push_back(item);
        Ok(())
    }

    /// Everything held for `shard`, in arrival order, to send now that its move has ended.
    pub fn release(&mut self, shard: ShardId) -> Vec<T> {
        self.held.remove(&shard).map(Vec::from).unwrap_or_default()
    }

    /// How many items are held for `shard`. A router that has some must hold new items for
    /// the shard too (or release first), so that order is kept.
    pub fn len(&self, shard: ShardId) -> usize {
        self.held.get(&shard).map_or(0, VecDeque::len)
    }

    /// True when nothing is held for any shard.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// The shards with items held, to check against the table after it changes.
    pub fn shards(&self) -> impl Iterator<Item = ShardId> + '_ {
        self.held.keys().copied()
    }

    /// Every held item with its shard, for metrics and checks.
    pub fn iter(&self) -> impl Iterator<Item = (ShardId, &T)> {
        self.held
            .iter()
            .flat_map(|(s, q)| q.iter().map(move |t| (*s, t)))
    }
}

/// Where one hand-off is, as the receiver sees it. The receiver drives it: it asks the owner
/// for the shard's data (`Requested`), receives it in chunks (`Copying`), and once it has all
/// of it proposes `CompleteMove` (`Copied`); the commit of that command ends it (`Done`). An
/// abort in the table ends it from any step before `Done` (`Aborted`), and the receiver drops
/// what it copied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandoffStep {
    /// The receiver asked the owner for the data; the owner holds new writes from now on.
    Requested,
    /// `upto` of `total` items received. `total` is fixed when the copy starts: the owner
    /// accepts no write for the shard during the move.
    Copying {
        /// Items received so far.
        upto: u64,
        /// Items to receive in all.
        total: u64,
    },
    /// Everything received: propose `CompleteMove`.
    Copied,
    /// The move is committed: the receiver owns the shard.
    Done,
    /// The move was given up.
    Aborted,
}

/// What happens to a hand-off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandoffEvent {
    /// The owner answered the request: the shard has `total` items to copy.
    Started {
        /// The number of items the owner will send.
        total: u64,
    },
    /// Items up to `upto` have arrived.
    Chunk {
        /// Items received so far, cumulative.
        upto: u64,
    },
    /// `CompleteMove` was committed.
    Committed,
    /// `AbortMove` (or an `Assign`) was committed.
    Aborted,
}

/// An event that does not fit the step: a protocol bug or a duplicated message, reported
/// rather than silently ignored so a simulation catches it.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("hand-off of shard {shard} to node {to}: {event:?} does not apply at step {step:?}")]
pub struct HandoffError {
    /// The shard being handed over.
    pub shard: ShardId,
    /// Its receiver.
    pub to: NodeId,
    /// Where the hand-off was (unchanged by the refused event).
    pub step: HandoffStep,
    /// The event that did not fit.
    pub event: HandoffEvent,
}

/// One shard's hand-off to `to`, at the receiver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handoff {
    /// The shard being handed over.
    pub shard: ShardId,
    /// The receiver, which drives this machine.
    pub to: NodeId,
    /// Where it is.
    pub step: HandoffStep,
}

impl Handoff {
    /// A hand-off the receiver has just requested, after seeing `BeginMove` committed.
    pub fn new(shard: ShardId, to: NodeId) -> Handoff {
        Handoff {
            shard,
            to,
            step: HandoffStep::Requested,
        }
    }

    /// Advances by one event. Chunks are cumulative and must not go backwards or past the
    /// total; an empty shard is copied as soon as it starts.
    pub fn on(&mut self, event: HandoffEvent) -> Result<HandoffStep, HandoffError> {
        use HandoffEvent as E;
        use HandoffStep as S;
        let next = match (self.step, event) {
            (S::Done | S::Aborted, _) => None,
            (_, E::Aborted) => Some(S::Aborted),
            (S::Requested, E::Started { total: 0 }) => Some(S::Copied),
            (S::Requested, E::Started { total }) => Some(S::Copying { upto: 0, total }),
            (S::Copying { upto, total }, E::Chunk { upto: to }) if to >= upto && to <= total => {
                Some(if to == total {
                    S::Copied
                } else {
                    S::Copying { upto: to, total }
                })
            }
            (S::Copied, E::Committed) => Some(S::Done),
            _ => None,
        };
        match next {
            Some(step) => {
                self.step = step;
                Ok(step)
            }
            None => Err(HandoffError {
                shard: self.shard,
                to: self.to,
                step: self.step,
                event,
            }),
        }
    }

    /// The command to propose once everything is copied; `None` before.
    pub fn complete_command(&self) -> Option<Command> {
        (self.step == HandoffStep::Copied).then_some(Command::CompleteMove {
            shard: self.shard,
            to: self.to,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_items_come_back_in_order_and_the_bound_pushes_back() {
        let mut h = Holder::new(2);
        h.hold(3, "a").unwrap();
        h.hold(3, "b").unwrap();
        h.hold(4, "x").unwrap();
        let full = h.hold(3, "c").unwrap_err();
        assert_eq!(full.item, "c");
        assert!(full.to_string().contains("back off"), "{full}");
        assert_eq!(h.len(3), 2);
        assert_eq!(h.shards().collect::<Vec<_>>(), vec![3, 4]);
        assert_eq!(h.release(3), vec!["a", "b"]);
        assert_eq!(h.release(3), Vec::<&str>::new());
        assert_eq!(h.iter().collect::<Vec<_>>(), vec![(4, &"x")]);
        assert_eq!(h.release(4), vec!["x"]);
        assert!(h.is_empty());
    }

    #[test]
    fn a_handoff_copies_then_completes() {
        let mut h = Handoff::new(7, 2);
        assert_eq!(h.complete_command(), None);
        h.on(HandoffEvent::Started { total: 10 }).unwrap();
        h.on(HandoffEvent::Chunk { upto: 4 }).unwrap();
        assert!(h.on(HandoffEvent::Chunk { upto: 3 }).is_err(), "backwards");
        assert!(
            h.on(HandoffEvent::Chunk { upto: 11 }).is_err(),
            "past the end"
        );
        assert!(h.on(HandoffEvent::Committed).is_err(), "not copied yet");
        assert_eq!(
            h.on(HandoffEvent::Chunk { upto: 10 }),
            Ok(HandoffStep::Copied)
        );
        assert_eq!(
            h.complete_command(),
            Some(Command::CompleteMove { shard: 7, to: 2 })
        );
        assert_eq!(h.on(HandoffEvent::Committed), Ok(HandoffStep::Done));
        assert!(h.on(HandoffEvent::Aborted).is_err(), "done is final");
    }

    #[test]
    fn an_empty_shard_is_copied_at_once_and_aborts_end_anything() {
        let mut h = Handoff::new(0, 1);
        assert_eq!(
            h.on(HandoffEvent::Started { total: 0 }),
            Ok(HandoffStep::Copied)
        );
        assert_eq!(h.on(HandoffEvent::Aborted), Ok(HandoffStep::Aborted));
        assert_eq!(h.complete_command(), None);
        let err = h.on(HandoffEvent::Started { total: 1 }).unwrap_err();
        assert!(err.to_string().contains("shard 0 to node 1"), "{err}");
    }
}
