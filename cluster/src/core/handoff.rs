//! Moving a shard's operator state with the shard (ARCHITECTURE §5, scale-out): every
//! decision the old and the new owner take, as pure code. The node's shell
//! (`node/src/cluster/handoff.rs`) cuts state out of and into the engine and carries the
//! chunks; the simulation (`cluster/tests/simulation.rs`) drives these same types through
//! thousands of joins, leaves, lost and repeated messages.
//!
//! The protocol, for shard `s` moving from `O` to `N` (the leader committed `BeginMove`):
//!
//! 1. `O`'s table shows the move; routers hold `s`'s writes and `O` refuses them (fencing).
//!    After [`Outbox::ready`]'s drain `O` releases `s`: its dataflows stop counting `s` and
//!    hand over the cut-out parts, which [`Outbox::start`] keeps, cut into chunks, under a
//!    release id of its own.
//! 2. `O` sends every chunk not yet acknowledged ([`Outbox::pending`]), again and again until
//!    `N` acknowledges it ([`Outbox::acked`]); if `N` acknowledged every chunk but has not
//!    completed the move long after (it restarted and lost them), all are sent again.
//! 3. `N` takes each chunk through [`Inbox::receive`]: a chunk of a release it has merged is
//!    not merged twice; a chunk of a newer release of the same shard replaces what an older
//!    release brought; once every chunk of the release is in ([`Inbox::merged`]) `N`
//!    proposes `CompleteMove`.
//! 4. A move that ends without completing (an abort) gives the parts back to `O`'s dataflows
//!    ([`Outbox::ended`]), and `N` drops what it merged ([`Inbox::sweep`]).
//! 5. Records of `s` still in flight inside `O` when it released `s` are diverted and sent to
//!    whoever owns `s` once it is settled ([`straggler_route`]).
//!
//! So each key's state is counted by one node at a time, and results equal those of a
//! cluster that never changed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::core::table::{NodeId, ShardId, ShardTable};

/// Cuts parts into chunks of at most `max` bytes as `size` measures them (a part larger than
/// `max` goes alone): each chunk must fit one message under the frame limit. Always at least
/// one chunk, so an empty shard still completes its move with one (empty) message.
pub fn chunks_of<P>(parts: Vec<P>, size: impl Fn(&P) -> usize, max: usize) -> Vec<Vec<P>> {
    let mut out: Vec<Vec<P>> = vec![Vec::new()];
    let mut used = 0;
    for p in parts {
        let n = size(&p);
        if used + n > max && out.last().is_some_and(|c| !c.is_empty()) {
            out.push(Vec::new());
            used = 0;
        }
        used += n;
        if let Some(c) = out.last_mut() {
            c.push(p);
        }
    }
    out
}

/// One release of a shard moving away, at its old owner.
#[derive(Clone, Debug)]
struct Outgoing<P> {
    to: NodeId,
    epoch: u64,
    release: u64,
    chunks: Vec<Vec<P>>,
    acked: Vec<bool>,
    /// When the last chunk was acknowledged.
    all_acked: Option<Instant>,
}

/// How a move this node was sending ended.
#[derive(Debug, PartialEq)]
pub enum Ended<P> {
    /// The shard is still this node's (the move was aborted): its parts go back into this
    /// node's dataflows.
    Aborted {
        /// The shard.
        shard: ShardId,
        /// Everything that was released.
        parts: Vec<P>,
    },
    /// The shard is another node's now; `undelivered` says some chunk was never
    /// acknowledged (the receiver completed without it: its state is incomplete).
    Completed {
        /// The shard.
        shard: ShardId,
        /// Whether a chunk was never acknowledged.
        undelivered: bool,
    },
}

/// One chunk to send.
#[derive(Clone, Debug, PartialEq)]
pub struct Send<P> {
    /// The shard moving.
    pub shard: ShardId,
    /// Its epoch in the sender's table when released.
    pub epoch: u64,
    /// The release the chunk belongs to.
    pub release: u64,
    /// The receiver.
    pub to: NodeId,
    /// This chunk's index, below `chunks`.
    pub chunk: u32,
    /// How many chunks the release has.
    pub chunks: u32,
    /// The parts.
    pub parts: Vec<P>,
}

/// The old owner's side of every move away from it: which shards to release and when, the
/// chunks of each release and which were acknowledged, and how each move ended. Generic over
/// the part type, so the simulation moves event ids where the node moves operator state.
#[derive(Clone, Debug)]
pub struct Outbox<P> {
    moves: BTreeMap<ShardId, Outgoing<P>>,
    /// Shards seen moving away and not released yet: since when.
    first_seen: BTreeMap<ShardId, Instant>,
}

impl<P> Default for Outbox<P> {
    fn default() -> Self {
        Outbox {
            moves: BTreeMap::new(),
            first_seen: BTreeMap::new(),
        }
    }
}

impl<P: Clone> Outbox<P> {
    /// Takes out every move `table` no longer shows (moving from `me` to the same receiver
    /// at the same epoch) and says how each ended: aborted (the shard is still `me`'s) or
    /// completed.
    pub fn ended(&mut self, table: &ShardTable, me: NodeId) -> Vec<Ended<P>> {
        let gone: Vec<ShardId> = self
            .moves
            .iter()
            .filter(|(shard, o)| {
                table
                    .get(**shard)
                    .map_or(true, |e| e.moving_to != Some(o.to) || e.epoch.0 != o.epoch)
            })
            .map(|(shard, _)| *shard)
            .collect();
        let mut out = Vec::new();
        for shard in gone {
            let Some(o) = self.moves.remove(&shard) else {
                continue;
            };
            // Still ours (aborted, or aborted and moving elsewhere now): the state goes back
            // into this node's dataflows, and a new move releases it again.
            if table.get(shard).is_ok_and(|e| e.owner == Some(me)) {
                out.push(Ended::Aborted {
                    shard,
                    parts: o.chunks.into_iter().flatten().collect(),
                });
            } else {
                out.push(Ended::Completed {
                    shard,
                    undelivered: o.acked.iter().any(|a| !a),
                });
            }
        }
        out
    }

    /// The shards to release now, with the epoch and receiver of their move: those `me` owns
    /// that are moving to another node, not released yet, and seen moving for at least
    /// `drain` (so writes accepted before the move reached the dataflows first).
    pub fn ready(
        &mut self,
        table: &ShardTable,
        me: NodeId,
        now: Instant,
        drain: Duration,
    ) -> Vec<(ShardId, u64, NodeId)> {
        let outgoing: Vec<(ShardId, u64, NodeId)> = table
            .iter()
            .filter(|(_, e)| e.owner == Some(me))
            .filter_map(|(shard, e)| match e.moving_to {
                Some(to) if to != me => Some((shard, e.epoch.0, to)),
                _ => None,
            })
            .collect();
        self.first_seen
            .retain(|shard, _| outgoing.iter().any(|(s, _, _)| s == shard));
        let moves = &self.moves;
        let seen = &mut self.first_seen;
        outgoing
            .into_iter()
            .filter(|(shard, _, _)| !moves.contains_key(shard))
            .filter(|(shard, _, _)| {
                now.saturating_duration_since(*seen.entry(*shard).or_insert(now)) >= drain
            })
            .collect()
    }

    /// Keeps a shard's released parts, already cut into `chunks`, as release `release` of
    /// its move to `to` at `epoch`.
    pub fn start(
        &mut self,
        shard: ShardId,
        (epoch, to): (u64, NodeId),
        release: u64,
        chunks: Vec<Vec<P>>,
    ) {
        let acked = vec![false; chunks.len()];
        self.moves.insert(
            shard,
            Outgoing {
                to,
                epoch,
                release,
                chunks,
                acked,
                all_acked: None,
            },
        );
    }

    /// Every chunk to send now: those not acknowledged yet, and all of a release whose
    /// receiver acknowledged everything more than `resend_after` ago without completing the
    /// move (it restarted and lost what it had merged).
    pub fn pending(&mut self, now: Instant, resend_after: Duration) -> Vec<Send<P>> {
        let mut out = Vec::new();
        for (shard, o) in &mut self.moves {
            if o.all_acked
                .is_some_and(|t| now.saturating_duration_since(t) > resend_after)
            {
                o.acked.iter_mut().for_each(|a| *a = false);
                o.all_acked = None;
            }
            let chunks = o.chunks.len() as u32;
            for (i, c) in o.chunks.iter().enumerate() {
                if !o.acked[i] {
                    out.push(Send {
                        shard: *shard,
                        epoch: o.epoch,
                        release: o.release,
                        to: o.to,
                        chunk: i as u32,
                        chunks,
                        parts: c.clone(),
                    });
                }
            }
        }
        out
    }

    /// The receiver acknowledged `chunk` of `release`; an acknowledgement of an older
    /// release of the shard is ignored.
    pub fn acked(&mut self, shard: ShardId, release: u64, chunk: u32, now: Instant) {
        if let Some(o) = self.moves.get_mut(&shard) {
            if o.release != release {
                return;
            }
            if let Some(a) = o.acked.get_mut(chunk as usize) {
                *a = true;
            }
            if o.all_acked.is_none() && o.acked.iter().all(|a| *a) {
                o.all_acked = Some(now);
            }
        }
    }

    /// Whether a release of `shard` is being sent.
    pub fn contains(&self, shard: ShardId) -> bool {
        self.moves.contains_key(&shard)
    }

    /// The shards being sent.
    pub fn shards(&self) -> impl Iterator<Item = ShardId> + '_ {
        self.moves.keys().copied()
    }

    /// Every released part held, acknowledged or not, with its shard: what this node gives
    /// back if the move is aborted (and loses if it dies before the move completes).
    pub fn parts(&self) -> impl Iterator<Item = (ShardId, &P)> + '_ {
        self.moves
            .iter()
            .flat_map(|(shard, o)| o.chunks.iter().flatten().map(move |p| (*shard, p)))
    }
}

/// Why a receiver refuses a chunk (nothing of it is merged).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum Refused {
    /// A straggler (`chunks` 0) for a shard that is not settled on the receiver: its sender
    /// must route it again by a newer table.
    #[error("shard {0} is not settled on this node")]
    NotSettled(ShardId),
    /// The chunk index is not below the chunk count.
    #[error("chunk {chunk} of {chunks}: the index must be below the count")]
    BadIndex {
        /// The index given.
        chunk: u32,
        /// The count given.
        chunks: u32,
    },
    /// The shard is not moving to the receiver at that epoch.
    #[error("shard {shard} is not moving to this node at epoch {epoch}")]
    NotMoving {
        /// The shard.
        shard: ShardId,
        /// The epoch the sender named.
        epoch: u64,
    },
    /// The shard is not in the table (the table's own words).
    #[error("{0}")]
    NoShard(String),
}

/// What a receiver does with a chunk it accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Receive {
    /// Records of a shard settled here that reached its old owner late: merge them.
    Straggler,
    /// A retry of a move this node has completed already: acknowledge, merge nothing.
    AlreadyDone,
    /// A chunk of the move in progress.
    Chunk {
        /// An earlier release of the shard was merged here: cut it out and drop it first
        /// (the new release holds everything).
        replace_earlier: bool,
        /// This chunk was merged already: acknowledge, merge nothing.
        duplicate: bool,
    },
}

/// What a receiver merged of one release.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Adopted {
    epoch: u64,
    release: u64,
    chunks: BTreeSet<u32>,
}

/// Straggler batches a receiver remembers having merged, so that one sent again (its
/// acknowledgement was lost) is not merged twice; far more than are ever in flight.
const STRAGGLERS_REMEMBERED: usize = 1 << 16;

/// The new owner's side of every move to it: which chunks of which release it merged, when a
/// move is complete, and which straggler batches it merged.
#[derive(Clone, Debug, Default)]
pub struct Inbox {
    adopted: BTreeMap<ShardId, Adopted>,
    stragglers: BTreeSet<u64>,
    straggler_order: std::collections::VecDeque<u64>,
}

impl Inbox {
    /// Decides what to do with chunk `chunk` of `chunks` of `shard`'s release `release` at
    /// `epoch` (`chunks` 0: a straggler batch, `release` its id, 0 for none), by this node's `table`. A
    /// `Chunk` answer already records the release (dropping an earlier one); call
    /// [`Inbox::merged`] once the parts are merged. A `Straggler` answer records the batch id,
    /// so the same batch sent again is `AlreadyDone`.
    pub fn receive(
        &mut self,
        table: &ShardTable,
        me: NodeId,
        (shard, epoch, release): (ShardId, u64, u64),
        (chunk, chunks): (u32, u32),
    ) -> Result<Receive, Refused> {
        let entry = table
            .get(shard)
            .map_err(|e| Refused::NoShard(e.to_string()))?;
        if chunks == 0 {
            if entry.owner != Some(me) || entry.moving_to.is_some() {
                return Err(Refused::NotSettled(shard));
            }
            // Id 0 names no batch (a sender that does not number them): merged every time.
            if release == 0 {
                return Ok(Receive::Straggler);
            }
            if !self.stragglers.insert(release) {
                return Ok(Receive::AlreadyDone);
            }
            self.straggler_order.push_back(release);
            if self.straggler_order.len() > STRAGGLERS_REMEMBERED {
                if let Some(old) = self.straggler_order.pop_front() {
                    self.stragglers.remove(&old);
                }
            }
            return Ok(Receive::Straggler);
        }
        if chunk >= chunks {
            return Err(Refused::BadIndex { chunk, chunks });
        }
        if entry.moving_to != Some(me) || entry.epoch.0 != epoch {
            // A retry of a move this node has already completed.
            if entry.owner == Some(me) && entry.epoch.0 > epoch && entry.moving_to.is_none() {
                return Ok(Receive::AlreadyDone);
            }
            return Err(Refused::NotMoving { shard, epoch });
        }
        let replace_earlier = self
            .adopted
            .get(&shard)
            .is_some_and(|a| (a.epoch, a.release) != (epoch, release));
        if replace_earlier {
            self.adopted.remove(&shard);
        }
        let got = self.adopted.entry(shard).or_insert_with(|| Adopted {
            epoch,
            release,
            chunks: BTreeSet::new(),
        });
        Ok(Receive::Chunk {
            replace_earlier,
            duplicate: got.chunks.contains(&chunk),
        })
    }

    /// Records that `chunk` of `chunks` of the shard's current release is merged; true once
    /// every chunk is in (then propose `CompleteMove`).
    pub fn merged(&mut self, shard: ShardId, chunk: u32, chunks: u32) -> bool {
        match self.adopted.get_mut(&shard) {
            Some(a) => {
                a.chunks.insert(chunk);
                a.chunks.len() as u32 >= chunks
            }
            None => false,
        }
    }

    /// Forgets moves `table` shows ended: a completed one needs no record any more; one
    /// that ended otherwise (aborted after some chunks were merged) is returned, because what
    /// was merged must be cut out and dropped (its old owner takes its copy back).
    pub fn sweep(&mut self, table: &ShardTable, me: NodeId) -> Vec<ShardId> {
        let mut dropped = Vec::new();
        self.adopted.retain(|shard, _| match table.get(*shard) {
            Ok(e) if e.moving_to == Some(me) => true,
            Ok(e) if e.owner == Some(me) => false,
            _ => {
                dropped.push(*shard);
                false
            }
        });
        dropped
    }
}

/// What this node's dataflows should stop or start counting so that they match `table`, for
/// what no hand-off covered: `stale` are shards another node owns that this node still counts
/// (a restart's replay rebuilt them), `taken` are shards this node owns again without a move
/// (a plain assignment) whose state it had released. `released` is what this node's
/// dataflows do not count; shards in `sending` are left to their move.
pub fn reconcile(
    table: &ShardTable,
    me: NodeId,
    released: &BTreeSet<ShardId>,
    sending: &BTreeSet<ShardId>,
) -> (Vec<ShardId>, Vec<ShardId>) {
    let stale = table
        .iter()
        .filter(|(shard, e)| {
            e.owner.is_some_and(|o| o != me) && e.moving_to != Some(me) && !released.contains(shard)
        })
        .map(|(shard, _)| shard)
        .collect();
    let taken = table
        .iter()
        .filter(|(shard, e)| {
            e.owner == Some(me)
                && e.moving_to.is_none()
                && released.contains(shard)
                && !sending.contains(shard)
        })
        .map(|(shard, _)| shard)
        .collect();
    (stale, taken)
}

/// Where records of a shard diverted after its release go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StragglerRoute {
    /// The shard is settled on this node: merge them here.
    Here,
    /// The shard is settled on `owner` at `epoch`: send them there.
    To {
        /// The owner.
        owner: NodeId,
        /// Its epoch.
        epoch: u64,
    },
    /// The shard is moving or has no owner: keep them and ask again later.
    Wait,
    /// The shard is not in the table: there is nobody to give them to.
    Drop,
}

/// Where `shard`'s stragglers go by `table`.
pub fn straggler_route(table: &ShardTable, me: NodeId, shard: ShardId) -> StragglerRoute {
    match table.get(shard) {
        Err(_) => StragglerRoute::Drop,
        Ok(e) => match (e.owner, e.moving_to) {
            (Some(o), None) if o == me => StragglerRoute::Here,
            (Some(owner), None) => StragglerRoute::To {
                owner,
                epoch: e.epoch.0,
            },
            _ => StragglerRoute::Wait,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::state::{ClusterState, Command, MemberInfo};

    const O: NodeId = 1;
    const N: NodeId = 2;

    /// A 4-shard table owned by O, with shard 0 moving to N.
    fn moving() -> ClusterState {
        let mut st = ClusterState::new("t", 4).unwrap();
        for node in [O, N] {
            st.apply(&Command::AddMember {
                node,
                info: MemberInfo::default(),
            });
        }
        for shard in 0..4 {
            st.apply(&Command::Assign { shard, node: O });
        }
        st.apply(&Command::BeginMove { shard: 0, to: N });
        st
    }

    #[test]
    fn chunks_respect_the_size_and_an_empty_shard_has_one() {
        let c = chunks_of(vec![3, 3, 3, 9, 1], |n| *n, 6);
        assert_eq!(c, vec![vec![3, 3], vec![3], vec![9], vec![1]]);
        assert_eq!(
            chunks_of(Vec::<u8>::new(), |_| 1, 6),
            vec![Vec::<u8>::new()]
        );
    }

    #[test]
    fn a_move_is_released_after_the_drain_sent_until_acked_and_completed() {
        let st = moving();
        let t0 = Instant::now();
        let drain = Duration::from_millis(100);
        let mut out: Outbox<u64> = Outbox::default();
        assert!(out.ready(&st.table, O, t0, drain).is_empty(), "drain first");
        let ready = out.ready(&st.table, O, t0 + drain, drain);
        let epoch = st.table.get(0).unwrap().epoch.0;
        assert_eq!(ready, vec![(0, epoch, N)]);
        out.start(0, (epoch, N), 7, vec![vec![10, 11], vec![12]]);
        assert!(
            out.ready(&st.table, O, t0 + drain, drain).is_empty(),
            "once"
        );
        assert_eq!(out.pending(t0, Duration::from_secs(10)).len(), 2);

        let mut inbox = Inbox::default();
        let r = inbox.receive(&st.table, N, (0, epoch, 7), (1, 2));
        assert_eq!(
            r,
            Ok(Receive::Chunk {
                replace_earlier: false,
                duplicate: false
            })
        );
        assert!(!inbox.merged(0, 1, 2));
        out.acked(0, 7, 1, t0);
        out.acked(0, 6, 0, t0); // an older release: ignored
        let left = out.pending(t0, Duration::from_secs(10));
        assert_eq!(left.len(), 1);
        assert_eq!((left[0].chunk, left[0].parts.clone()), (0, vec![10, 11]));
        // A repeated chunk is acknowledged but not merged twice.
        assert_eq!(
            inbox.receive(&st.table, N, (0, epoch, 7), (1, 2)),
            Ok(Receive::Chunk {
                replace_earlier: false,
                duplicate: true
            })
        );
        let r = inbox.receive(&st.table, N, (0, epoch, 7), (0, 2));
        assert!(matches!(
            r,
            Ok(Receive::Chunk {
                duplicate: false,
                ..
            })
        ));
        assert!(inbox.merged(0, 0, 2), "every chunk is in");
        out.acked(0, 7, 0, t0);
        // Everything acknowledged and not completed for too long: sent again.
        assert!(out.pending(t0, Duration::from_secs(10)).is_empty());
        assert_eq!(
            out.pending(t0 + Duration::from_secs(11), Duration::from_secs(10))
                .len(),
            2
        );

        let mut done = st.clone();
        done.apply(&Command::CompleteMove { shard: 0, to: N });
        assert_eq!(
            out.ended(&done.table, O),
            vec![Ended::Completed {
                shard: 0,
                undelivered: true
            }]
        );
        assert!(inbox.sweep(&done.table, N).is_empty());
        // The old owner's retry after the completion is acknowledged, not merged.
        assert_eq!(
            inbox.receive(&done.table, N, (0, epoch, 7), (0, 2)),
            Ok(Receive::AlreadyDone)
        );
    }

    #[test]
    fn an_abort_gives_the_parts_back_and_the_receiver_drops_its_copy() {
        let st = moving();
        let epoch = st.table.get(0).unwrap().epoch.0;
        let mut out: Outbox<u64> = Outbox::default();
        out.start(0, (epoch, N), 1, vec![vec![1, 2], vec![3]]);
        let mut inbox = Inbox::default();
        assert!(inbox.receive(&st.table, N, (0, epoch, 1), (0, 2)).is_ok());
        inbox.merged(0, 0, 2);
        let mut aborted = st.clone();
        aborted.apply(&Command::AbortMove { shard: 0, to: N });
        assert_eq!(
            out.ended(&aborted.table, O),
            vec![Ended::Aborted {
                shard: 0,
                parts: vec![1, 2, 3]
            }]
        );
        assert_eq!(inbox.sweep(&aborted.table, N), vec![0]);
        assert!(matches!(
            inbox.receive(&aborted.table, N, (0, epoch, 1), (1, 2)),
            Err(Refused::NotMoving { .. })
        ));
    }

    #[test]
    fn a_newer_release_replaces_an_older_one_and_bad_chunks_are_refused() {
        let st = moving();
        let epoch = st.table.get(0).unwrap().epoch.0;
        let mut inbox = Inbox::default();
        inbox.receive(&st.table, N, (0, epoch, 1), (0, 2)).unwrap();
        inbox.merged(0, 0, 2);
        assert_eq!(
            inbox.receive(&st.table, N, (0, epoch, 2), (1, 2)),
            Ok(Receive::Chunk {
                replace_earlier: true,
                duplicate: false
            })
        );
        assert!(
            !inbox.merged(0, 1, 2),
            "the old release's chunk 0 does not count"
        );
        assert_eq!(
            inbox.receive(&st.table, N, (0, epoch, 2), (2, 2)),
            Err(Refused::BadIndex {
                chunk: 2,
                chunks: 2
            })
        );
        assert_eq!(
            inbox.receive(&st.table, N, (0, epoch, 2), (0, 0)),
            Err(Refused::NotSettled(0))
        );
        assert_eq!(
            inbox.receive(&st.table, O, (1, epoch, 2), (0, 0)),
            Ok(Receive::Straggler)
        );
        assert_eq!(
            inbox.receive(&st.table, O, (1, epoch, 2), (0, 0)),
            Ok(Receive::AlreadyDone),
            "a straggler batch sent again is not merged twice"
        );
        assert!(matches!(
            inbox.receive(&st.table, N, (9, epoch, 2), (0, 1)),
            Err(Refused::NoShard(why)) if why.contains("shard 9")
        ));
    }

    #[test]
    fn reconcile_and_stragglers_follow_the_table() {
        let st = moving();
        // N counts nothing of O's shards it never received: all are stale to it.
        let (stale, taken) = reconcile(&st.table, N, &BTreeSet::new(), &BTreeSet::new());
        assert_eq!((stale, taken), (vec![1, 2, 3], vec![]));
        // O released shard 2 once, and owns it again without a move: taken back.
        let released = BTreeSet::from([2]);
        let (stale, taken) = reconcile(&st.table, O, &released, &BTreeSet::new());
        assert_eq!((stale, taken), (vec![], vec![2]));
        assert_eq!(straggler_route(&st.table, O, 1), StragglerRoute::Here);
        assert_eq!(straggler_route(&st.table, O, 0), StragglerRoute::Wait);
        let epoch = st.table.get(1).unwrap().epoch.0;
        assert_eq!(
            straggler_route(&st.table, N, 1),
            StragglerRoute::To { owner: O, epoch }
        );
        assert_eq!(straggler_route(&st.table, N, 40), StragglerRoute::Drop);
    }
}
