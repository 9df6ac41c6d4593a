//! As owner: what each replica holds, and whether an `acks = all` publish may be answered.
//!
//! An owner learns a replica's log end from its fetches (a fetch asks for what follows what
//! it holds). A publish whose entries end at offset `E` in a shard's log is answered once
//! every replica it waits on reported an end at or past `E` at the shard's current epoch.
//! It waits on:
//!
//! - the shard's in-sync replicas as the table lists them, and
//! - joining replicas this owner has sent everything it had (**level**): such a replica
//!   proposes itself in sync, and the cluster may count it so before this owner's table says
//!   it does, so from then on the owner waits for it too (Kafka's "maximal ISR" while an ISR
//!   change is pending).
//!
//! A level mark remembers the version of the shard's replica lists the replica saw when it
//! sent the fetch that made it level: its in-sync report names that version, and the table
//! accepts the report only while its lists are still at it. So the mark counts while this
//! owner's table is at that version or an older one (its table may lag the cluster's). Once
//! its table is past that version, the report can no longer be accepted, or it has been and
//! the replica is listed in sync there; either way the mark stops counting by itself.
//!
//! A replica the publish has waited on for [`REPLICA_LAG_MAX`] (alive to gossip, but cut from
//! its owner alone, or stuck) is **demoted**: its owner proposes `ReplicaOutOfSync` at the
//! version of the shard's replica lists it judged by, which raises the version, and from
//! then on publishes no longer wait on it. Not before: a publish answered without the
//! replica while its in-sync report could still be accepted could be missing from a copy the
//! cluster counts in sync (and may promote). Fetches it sends after the raise count again.
//!
//! A known gap: level marks live in memory. An owner that restarts before failure detection
//! notices (so it keeps its shards, at the same epoch) has forgotten them, while a replica's
//! in-sync report made from its earlier life's answer may still be on its way through Raft
//! (held by a leader election, say). Until that report is refused, or applied and seen, the
//! owner can answer a publish without the replica. The replication simulation shows it with
//! `STARLING_SIM_STRICT=1 STARLING_SIM_SEED=22`. Closing it needs the marks to survive a
//! restart, or the owner to raise each shard's list version (fencing such reports) before it
//! answers again.
//!
//! Everything here is a value: time is a [`Duration`] since an origin the caller picks and
//! keeps (production: when the publish started to wait; the simulation: its own clock), and
//! the waiting itself (notifications, timeouts) is the caller's.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use thiserror::Error;

use crate::core::state::{ClusterState, Command};
use crate::core::table::{Epoch, NodeId, ShardId, ShardTable};

/// How long a publish waits on a replica before its owner takes that replica out of what
/// publishes wait on (Kafka's `replica.lag.time.max.ms`): a replica that is alive to gossip
/// but not copying then stops holding every `acks = all` publish of its shards until the
/// publish's own timeout.
pub const REPLICA_LAG_MAX: Duration = Duration::from_secs(4);

/// A replica whose owner waited on it too long: taking it out of the in-sync set is proposed
/// at this epoch and version of the shard's replica lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lagging {
    pub shard: ShardId,
    pub replica: NodeId,
    /// The shard's epoch: an old owner's complaint cannot demote a replica of a new one.
    pub epoch: u64,
    /// The version of the shard's replica lists the owner judged by.
    pub isr: u64,
}

impl Lagging {
    /// The command that takes the replica out (Kafka's ISR shrink).
    pub fn command(&self) -> Command {
        Command::ReplicaOutOfSync {
            shard: self.shard,
            node: self.replica,
            epoch: Epoch(self.epoch),
            isr: self.isr,
        }
    }
}

/// Why a publish that was logged cannot be answered as acknowledged. Both say "retry": the
/// events may or may not be kept.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum AckError {
    /// The shard has another owner now; what happens to the entries is its business.
    #[error(
        "shard {shard} moved to another node before its replicas confirmed the events; they \
         may or may not be kept, retry"
    )]
    Moved { shard: ShardId },
    /// Every replica waited on confirmed, but replicas dropped out meanwhile (Kafka's
    /// `NOT_ENOUGH_REPLICAS_AFTER_APPEND`).
    #[error(
        "the events were logged but only {fewest} in-sync copies of a shard hold them, fewer \
         than topic `{topic}`'s min_insync {min} (replicas dropped out while they copied); \
         they may or may not be kept, retry"
    )]
    TooFewCopies {
        topic: String,
        fewest: u32,
        min: u32,
    },
}

/// What a publish does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AckVerdict {
    /// Every copy waited on holds the entries: answer the publish.
    Answer,
    /// Wait for these (shard, replica) to report; first take `lagging` out.
    Wait {
        missing: Vec<(ShardId, NodeId)>,
        lagging: Vec<Lagging>,
    },
}

/// One publish waiting for its replicas: its topic, where its entries end in each shard, and
/// since when it has missed each replica.
#[derive(Clone, Debug)]
pub struct AckWait {
    topic: String,
    ends: Vec<(ShardId, u64)>,
    min_insync: u32,
    /// (shard, replica, version of the lists) → when this publish first found it missing. By
    /// version, so that a replica back in sync after a demotion gets the full lag again.
    since: BTreeMap<(ShardId, NodeId, u64), Duration>,
}

impl AckWait {
    /// A publish to `topic` whose entries end (exclusive) at `ends` per shard, needing
    /// `min_insync` copies (the owner's included).
    pub fn new(topic: &str, ends: Vec<(ShardId, u64)>, min_insync: u32) -> AckWait {
        AckWait {
            topic: topic.to_string(),
            ends,
            min_insync,
            since: BTreeMap::new(),
        }
    }

    /// Where the publish's entries end, per shard.
    pub fn ends(&self) -> &[(ShardId, u64)] {
        &self.ends
    }
}

/// One topic's reports.
#[derive(Clone, Debug, Default)]
struct TopicProgress {
    /// (shard, replica) → (the shard's epoch, the replica's log end at its last fetch at that
    /// epoch). Only the current epoch counts: a copy reported to an earlier owner period may
    /// have been truncated since.
    ends: BTreeMap<(ShardId, NodeId), (u64, u64)>,
    /// (shard, replica, epoch) of joining replicas this owner has sent everything it had,
    /// with the newest version of the shard's replica lists the replica had seen when it sent
    /// such a fetch. Only the newest epoch of a (shard, replica) is kept.
    level: BTreeMap<(ShardId, NodeId, u64), u64>,
}

/// As owner, what replicas reported, for every topic. Kept by production inside a mutex and
/// consulted by each waiting publish; driven directly by the simulation.
#[derive(Clone, Debug, Default)]
pub struct Progress {
    topics: BTreeMap<String, TopicProgress>,
    /// Demotions being proposed, so that many publishes waiting on one replica propose it once.
    demoting: BTreeSet<Lagging>,
}

impl Progress {
    /// A fetch from `replica` at `epoch` asked for `topic`/`shard` from `next` on: it holds
    /// everything before. Reports only rise (a fetch delivered late says less than a newer
    /// one; a newer epoch supersedes).
    pub fn report(&mut self, topic: &str, shard: ShardId, replica: NodeId, epoch: u64, next: u64) {
        let t = self.topic_mut(topic);
        let e = t.ends.entry((shard, replica)).or_insert((epoch, next));
        if *e < (epoch, next) {
            *e = (epoch, next);
        }
    }

    /// A fetch from `replica` at `epoch`, sent when it saw version `isr` of the shard's
    /// replica lists, got everything this owner had of `topic`/`shard`: from now on
    /// publishes wait for it even while it is joining (see the module doc).
    pub fn level(&mut self, topic: &str, shard: ShardId, replica: NodeId, epoch: u64, isr: u64) {
        let t = self.topic_mut(topic);
        // An older epoch's mark can never count again (a table at a newer epoch): forgotten,
        // so the marks stay as few as the (shard, replica) pairs.
        t.level
            .retain(|(sh, r, e), _| !(*sh == shard && *r == replica && *e < epoch));
        let v = t.level.entry((shard, replica, epoch)).or_insert(isr);
        *v = (*v).max(isr);
    }

    fn topic_mut(&mut self, topic: &str) -> &mut TopicProgress {
        self.topics.entry(topic.to_string()).or_default()
    }

    /// The log end `replica` reported for `topic`/`shard` at `epoch`; 0 if it reported none
    /// at that epoch.
    pub fn reported(&self, topic: &str, shard: ShardId, replica: NodeId, epoch: u64) -> u64 {
        self.topics
            .get(topic)
            .and_then(|t| t.ends.get(&(shard, replica)))
            .filter(|(e, _)| *e == epoch)
            .map_or(0, |(_, next)| *next)
    }

    /// Whether publishes wait on joining `replica` of `topic`/`shard` at `epoch`, by a table
    /// whose replica lists are at version `isr`: it was made level by a fetch sent at that
    /// version or a newer one, so its in-sync report may still be accepted.
    pub fn is_level(
        &self,
        topic: &str,
        shard: ShardId,
        replica: NodeId,
        epoch: u64,
        isr: u64,
    ) -> bool {
        self.topics
            .get(topic)
            .and_then(|t| t.level.get(&(shard, replica, epoch)))
            .is_some_and(|seen| *seen >= isr)
    }

    /// What publish `wait` does next, by `table` as this node (`me`) sees it now (`now`, on
    /// the clock `wait` was started on).
    ///
    /// Refused when a shard has another owner, and when every copy waited on has the
    /// entries but fewer than the topic's `min_insync` in-sync copies (the owner's included)
    /// hold them. Otherwise answered, or waiting on the replicas that lack the entries, with
    /// those missing for [`REPLICA_LAG_MAX`] or longer to be demoted.
    pub fn check(
        &self,
        table: &ShardTable,
        me: NodeId,
        wait: &mut AckWait,
        now: Duration,
    ) -> Result<AckVerdict, AckError> {
        let mut missing = Vec::new();
        let mut lagging = Vec::new();
        // The fewest in-sync copies any of the shards has of the entries, the owner's
        // included.
        let mut fewest = u32::MAX;
        for &(shard, end) in &wait.ends {
            let Ok(e) = table.get(shard) else {
                continue;
            };
            if e.owner != Some(me) {
                return Err(AckError::Moved { shard });
            }
            let epoch = e.epoch.0;
            let waited = e.replicas.iter().chain(
                e.joining
                    .iter()
                    .filter(|r| self.is_level(&wait.topic, shard, **r, epoch, e.isr)),
            );
            let mut copies = 1;
            for &r in waited {
                if self.reported(&wait.topic, shard, r, epoch) < end {
                    missing.push((shard, r));
                    let since = *wait.since.entry((shard, r, e.isr)).or_insert(now);
                    if now.saturating_sub(since) >= REPLICA_LAG_MAX {
                        lagging.push(Lagging {
                            shard,
                            replica: r,
                            epoch,
                            isr: e.isr,
                        });
                    }
                } else if e.replicas.contains(&r) {
                    copies += 1;
                }
            }
            fewest = fewest.min(copies);
        }
        if !missing.is_empty() {
            return Ok(AckVerdict::Wait { missing, lagging });
        }
        if fewest < wait.min_insync {
            return Err(AckError::TooFewCopies {
                topic: wait.topic.clone(),
                fewest,
                min: wait.min_insync,
            });
        }
        Ok(AckVerdict::Answer)
    }

    /// Starts a demotion; false if it is being proposed already (the caller then does
    /// nothing). Publishes go on waiting on the replica until the table they are checked
    /// against shows the raised version (see the module doc): dropping its level marks here
    /// would answer them while its in-sync report, proposed before, may still be accepted.
    pub fn begin_demote(&mut self, l: Lagging) -> bool {
        self.demoting.insert(l)
    }

    /// The proposal of a demotion ended (applied, refused or timed out): another publish may
    /// propose it again.
    pub fn end_demote(&mut self, l: &Lagging) {
        self.demoting.remove(l);
    }
}

/// Why a write is refused before anything is logged.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error(
    "shard {shard} has {copies} in-sync {} (the cluster keeps {factor}) but topic `{topic}` \
     needs min_insync {min}; nothing was logged, retry once its replicas have caught up",
    if *.copies == 1 { "copy" } else { "copies" }
)]
pub struct NotEnoughReplicas {
    pub shard: ShardId,
    pub copies: u32,
    pub factor: u32,
    pub topic: String,
    pub min: u32,
}

/// As owner, before appending to `shards` of an `acks = all` topic needing `min` copies:
/// refuses the write while a shard has fewer in-sync copies (its owner included), as Kafka
/// answers `NOT_ENOUGH_REPLICAS`. Nothing is logged then, so a cluster down to one copy does
/// not acknowledge what losing that copy would lose. A `min` of 1 or less never refuses.
pub fn check_min_insync(
    state: &ClusterState,
    topic: &str,
    shards: &[ShardId],
    min: u32,
) -> Result<(), NotEnoughReplicas> {
    if min <= 1 {
        return Ok(());
    }
    for &shard in shards {
        let Ok(e) = state.table.get(shard) else {
            continue;
        };
        let copies = 1 + e.replicas.len() as u32;
        if copies < min {
            return Err(NotEnoughReplicas {
                shard,
                copies,
                factor: state.replication_factor(),
                topic: topic.to_string(),
                min,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::state::MemberInfo;

    const ME: NodeId = 1;

    /// Shard 0 owned by `ME` at epoch 1 with in-sync replicas 2 and 3 and joining 4.
    fn state() -> ClusterState {
        let mut s = ClusterState::new("c", 2).unwrap();
        for n in 1..=4 {
            s.apply(&Command::AddMember {
                node: n,
                info: MemberInfo::default(),
            });
        }
        s.apply(&Command::SetReplication { factor: 3 });
        s.apply(&Command::Assign { shard: 0, node: ME });
        for n in 2..=4 {
            s.apply(&Command::AddReplica { shard: 0, node: n });
        }
        for n in 2..=3 {
            let isr = s.table.get(0).unwrap().isr;
            s.apply(&Command::ReplicaInSync {
                shard: 0,
                node: n,
                epoch: Epoch(1),
                isr,
            });
        }
        let e = s.table.get(0).unwrap();
        assert_eq!(
            (e.replicas.clone(), e.joining.clone()),
            (vec![2, 3], vec![4])
        );
        s
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn a_publish_is_answered_once_every_in_sync_replica_reported_its_end() {
        let s = state();
        let mut p = Progress::default();
        let mut w = AckWait::new("t", vec![(0, 5)], 2);
        assert_eq!(
            p.check(&s.table, ME, &mut w, secs(0)),
            Ok(AckVerdict::Wait {
                missing: vec![(0, 2), (0, 3)],
                lagging: vec![]
            })
        );
        p.report("t", 0, 2, 1, 5);
        // At or past the end counts; short of it, or at another epoch, does not.
        p.report("t", 0, 3, 1, 4);
        p.report("u", 0, 3, 1, 9);
        assert_eq!(
            p.check(&s.table, ME, &mut w, secs(1)),
            Ok(AckVerdict::Wait {
                missing: vec![(0, 3)],
                lagging: vec![]
            })
        );
        p.report("t", 0, 3, 1, 7);
        // A late fetch saying less changes nothing.
        p.report("t", 0, 3, 1, 2);
        assert_eq!(p.reported("t", 0, 3, 1), 7);
        // The joining replica is not waited on: it is not level.
        assert_eq!(
            p.check(&s.table, ME, &mut w, secs(2)),
            Ok(AckVerdict::Answer)
        );
    }

    #[test]
    fn a_report_at_an_older_epoch_does_not_count() {
        let mut s = state();
        let mut p = Progress::default();
        p.report("t", 0, 2, 1, 5);
        p.report("t", 0, 3, 1, 5);
        // A new epoch (a hand-off aborted): the old reports say nothing of the new period.
        s.table.begin_move(0, 2).unwrap();
        s.table.abort_move(0, 2).unwrap();
        let mut w = AckWait::new("t", vec![(0, 5)], 2);
        assert!(matches!(
            p.check(&s.table, ME, &mut w, secs(0)),
            Ok(AckVerdict::Wait { missing, .. }) if missing == vec![(0, 2), (0, 3)]
        ));
        p.report("t", 0, 2, 2, 5);
        assert_eq!(p.reported("t", 0, 2, 2), 5);
        assert_eq!(p.reported("t", 0, 2, 1), 0, "superseded by the newer epoch");
    }

    #[test]
    fn a_level_joining_replica_is_waited_on_before_the_table_counts_it() {
        let s = state();
        let isr = s.table.get(0).unwrap().isr;
        let mut p = Progress::default();
        p.report("t", 0, 2, 1, 5);
        p.report("t", 0, 3, 1, 5);
        p.level("t", 0, 4, 1, isr);
        let mut w = AckWait::new("t", vec![(0, 5)], 2);
        assert_eq!(
            p.check(&s.table, ME, &mut w, secs(0)),
            Ok(AckVerdict::Wait {
                missing: vec![(0, 4)],
                lagging: vec![]
            })
        );
        // Level on another topic only, or at another epoch: not waited on.
        let mut q = Progress::default();
        q.report("t", 0, 2, 1, 5);
        q.report("t", 0, 3, 1, 5);
        q.level("u", 0, 4, 1, isr);
        q.level("t", 0, 4, 0, isr);
        assert_eq!(
            q.check(&s.table, ME, &mut w, secs(0)),
            Ok(AckVerdict::Answer)
        );
        p.report("t", 0, 4, 1, 5);
        assert_eq!(
            p.check(&s.table, ME, &mut w, secs(1)),
            Ok(AckVerdict::Answer)
        );
    }

    #[test]
    fn a_replica_missing_for_the_lag_limit_is_demoted_once() {
        let s = state();
        let isr = s.table.get(0).unwrap().isr;
        let mut p = Progress::default();
        p.report("t", 0, 2, 1, 5);
        p.level("t", 0, 4, 1, isr);
        p.level("u", 0, 4, 1, isr + 1);
        let mut w = AckWait::new("t", vec![(0, 5)], 2);
        let at = |t: Duration| Duration::from_millis(500) + t;
        assert!(matches!(
            p.check(&s.table, ME, &mut w, at(secs(0))),
            Ok(AckVerdict::Wait { lagging, .. }) if lagging.is_empty()
        ));
        let just_short = at(REPLICA_LAG_MAX - Duration::from_millis(1));
        assert!(matches!(
            p.check(&s.table, ME, &mut w, just_short),
            Ok(AckVerdict::Wait { lagging, .. }) if lagging.is_empty()
        ));
        let Ok(AckVerdict::Wait { missing, lagging }) =
            p.check(&s.table, ME, &mut w, at(REPLICA_LAG_MAX))
        else {
            panic!("still waiting");
        };
        assert_eq!(missing, vec![(0, 3), (0, 4)]);
        let l3 = Lagging {
            shard: 0,
            replica: 3,
            epoch: 1,
            isr,
        };
        assert_eq!(lagging, vec![l3, Lagging { replica: 4, ..l3 }]);
        assert_eq!(
            l3.command(),
            Command::ReplicaOutOfSync {
                shard: 0,
                node: 3,
                epoch: Epoch(1),
                isr
            }
        );
        let l4 = lagging[1];
        assert!(p.begin_demote(l4));
        assert!(!p.begin_demote(l4), "proposed once at a time");
        p.end_demote(&l4);
        assert!(p.begin_demote(l4));
    }

    /// The race the simulation found: a joining replica is made level by a fetch sent at
    /// version `v`, and proposes itself in sync at `v`; its owner, waiting on it too long,
    /// proposes to demote it at `v`. Whichever Raft applies first, a publish must not be
    /// answered without the replica while its report may still be accepted, that is while
    /// the owner's table is at `v`.
    #[test]
    fn a_level_replica_is_waited_on_until_the_table_is_past_the_version_it_saw() {
        let mut s = state();
        let v = s.table.get(0).unwrap().isr;
        let mut p = Progress::default();
        p.report("t", 0, 2, 1, 5);
        p.report("t", 0, 3, 1, 5);
        p.level("t", 0, 4, 1, v);
        let mut w = AckWait::new("t", vec![(0, 5)], 2);
        p.check(&s.table, ME, &mut w, secs(0)).unwrap();
        let Ok(AckVerdict::Wait { lagging, .. }) = p.check(&s.table, ME, &mut w, REPLICA_LAG_MAX)
        else {
            panic!("waits on the level replica");
        };
        let l = lagging[0];
        assert_eq!((l.replica, l.isr), (4, v));
        assert!(p.begin_demote(l));
        // Proposed, not yet applied: still waited on.
        assert!(matches!(
            p.check(&s.table, ME, &mut w, REPLICA_LAG_MAX),
            Ok(AckVerdict::Wait { missing, .. }) if missing == vec![(0, 4)]
        ));
        // Its in-sync report wins: listed in sync, so waited on as such.
        let mut won = s.clone();
        won.apply(&Command::ReplicaInSync {
            shard: 0,
            node: 4,
            epoch: Epoch(1),
            isr: v,
        });
        assert!(matches!(
            won.apply(&l.command()),
            crate::core::state::Outcome::Refused(_)
        ));
        assert!(matches!(
            p.check(&won.table, ME, &mut w, REPLICA_LAG_MAX),
            Ok(AckVerdict::Wait { missing, .. }) if missing == vec![(0, 4)]
        ));
        // The demotion wins: the version is past `v`, the report will be refused, the
        // publish is answered without the replica.
        s.apply(&l.command());
        assert!(matches!(
            s.clone().apply(&Command::ReplicaInSync {
                shard: 0,
                node: 4,
                epoch: Epoch(1),
                isr: v,
            }),
            crate::core::state::Outcome::Refused(_)
        ));
        assert_eq!(
            p.check(&s.table, ME, &mut w, REPLICA_LAG_MAX),
            Ok(AckVerdict::Answer)
        );
        // A fetch sent after the raise makes it level, and waited on, again.
        p.level("t", 0, 4, 1, v + 1);
        assert!(p.is_level("t", 0, 4, 1, v + 1));
        assert!(!p.is_level("t", 0, 4, 1, v + 2));
        // A mark at a newer epoch replaces the older one.
        p.level("t", 0, 4, 2, v + 1);
        assert!(!p.is_level("t", 0, 4, 1, v));
        assert!(p.is_level("t", 0, 4, 2, v + 1));
    }

    #[test]
    fn a_new_version_of_the_lists_restarts_the_lag_clock() {
        let mut s = state();
        let mut p = Progress::default();
        p.report("t", 0, 2, 1, 5);
        let mut w = AckWait::new("t", vec![(0, 5)], 2);
        p.check(&s.table, ME, &mut w, secs(0)).unwrap();
        // The lists change (a joining replica left): replica 3 is missed afresh.
        s.apply(&Command::RemoveReplica { shard: 0, node: 4 });
        let Ok(AckVerdict::Wait { lagging, .. }) = p.check(&s.table, ME, &mut w, secs(5)) else {
            panic!("still waiting");
        };
        assert!(lagging.is_empty());
        let Ok(AckVerdict::Wait { lagging, .. }) = p.check(&s.table, ME, &mut w, secs(9)) else {
            panic!("still waiting");
        };
        assert_eq!(lagging.len(), 1);
    }

    #[test]
    fn a_moved_shard_or_too_few_copies_refuse_the_answer() {
        let mut s = state();
        let p = Progress::default();
        let mut w = AckWait::new("t", vec![(1, 3)], 2);
        // Shard 1 is unowned: another owner's (or nobody's) business.
        assert_eq!(
            p.check(&s.table, ME, &mut w, secs(0)),
            Err(AckError::Moved { shard: 1 })
        );
        // Both in-sync replicas dropped out: nothing to wait on, but one copy is too few.
        s.apply(&Command::RemoveReplica { shard: 0, node: 2 });
        s.apply(&Command::RemoveReplica { shard: 0, node: 3 });
        let mut w = AckWait::new("t", vec![(0, 3)], 2);
        let err = p.check(&s.table, ME, &mut w, secs(0)).unwrap_err();
        assert_eq!(
            err,
            AckError::TooFewCopies {
                topic: "t".into(),
                fewest: 1,
                min: 2
            }
        );
        assert!(err.to_string().contains("min_insync 2"), "{err}");
        let mut w = AckWait::new("t", vec![(0, 3)], 1);
        assert_eq!(
            p.check(&s.table, ME, &mut w, secs(0)),
            Ok(AckVerdict::Answer)
        );
        // No shards: nothing to wait for.
        let mut w = AckWait::new("t", vec![], 3);
        assert_eq!(
            p.check(&s.table, ME, &mut w, secs(0)),
            Ok(AckVerdict::Answer)
        );
    }

    #[test]
    fn a_write_needs_min_insync_copies_before_it_is_logged() {
        let mut s = state();
        assert_eq!(
            check_min_insync(&s, "t", &[0, 7], 3),
            Ok(()),
            "shard 7 does not exist"
        );
        s.apply(&Command::RemoveReplica { shard: 0, node: 2 });
        let err = check_min_insync(&s, "t", &[0], 3).unwrap_err();
        assert_eq!((err.shard, err.copies, err.factor), (0, 2, 3));
        assert!(err
            .to_string()
            .starts_with("shard 0 has 2 in-sync copies (the cluster keeps 3)"));
        s.apply(&Command::RemoveReplica { shard: 0, node: 3 });
        let err = check_min_insync(&s, "t", &[0], 2).unwrap_err();
        assert!(err.to_string().contains("1 in-sync copy "), "{err}");
        assert_eq!(check_min_insync(&s, "t", &[0], 1), Ok(()));
        assert_eq!(check_min_insync(&s, "t", &[0], 0), Ok(()));
    }
}
