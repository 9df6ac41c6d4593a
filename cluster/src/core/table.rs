//! The shard table: who owns each shard, at which epoch. It is the state that Raft agrees on
//! (ARCHITECTURE §5): every node routes and fences by the committed table, never by its own
//! view of gossip.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A node's identity in the cluster. A `u64` because Raft names voters by number; drawn at
/// random when a node's data directory is created and kept there, so a restarted node is the
/// same member.
pub type NodeId = u64;

/// A shard number, `0..S`.
pub type ShardId = u32;

/// The fencing token of one shard's ownership. Every change of owner raises it; a write
/// stamped with an older epoch than the receiver knows is refused (ARCHITECTURE §5).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Epoch(pub u64);

impl Epoch {
    /// The epoch after this one.
    pub fn next(self) -> Epoch {
        Epoch(self.0.saturating_add(1))
    }
}

impl std::fmt::Display for Epoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One shard's row of the table.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardEntry {
    /// The node that accepts writes and runs dataflows for this shard; `None` only before
    /// the first node is placed.
    pub owner: Option<NodeId>,
    /// In-sync replicas: nodes whose copy of the shard's log holds every event the owner
    /// acknowledged with `acks = all`. Only these may be promoted when the owner dies.
    pub replicas: Vec<NodeId>,
    /// Replicas still copying the log: they fetch like the others but the owner does not wait
    /// for them, and they are not promoted, until they report they caught up at this epoch.
    #[serde(default)]
    pub joining: Vec<NodeId>,
    /// Raised on every change of owner.
    pub epoch: Epoch,
    /// Set while the shard is being handed from `owner` to this node: writes for the shard
    /// are held back until the move completes at the next epoch.
    pub moving_to: Option<NodeId>,
    /// Raised on every change to the shard's owner or replica lists. A replica's report that
    /// it caught up names the version it saw when it asked the owner, and an owner's
    /// complaint that a replica lags names the version it judged by; one made before another
    /// change is refused, so neither acts on a stale view (see `engine` replication).
    #[serde(default)]
    pub isr: u64,
}

/// Why a table operation was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TableError {
    #[error("shard {shard} does not exist (the cluster has {shards} shards)")]
    NoSuchShard { shard: ShardId, shards: u32 },
    #[error("a cluster needs at least one shard")]
    NoShards,
    #[error("shard {shard} is not moving to node {node}")]
    NotMoving { shard: ShardId, node: NodeId },
    #[error("shard {shard} is already moving to node {node}")]
    AlreadyMoving { shard: ShardId, node: NodeId },
    #[error("node {node} already holds shard {shard} (as owner or replica)")]
    AlreadyHolds { shard: ShardId, node: NodeId },
    #[error("node {node} is not a replica of shard {shard}")]
    NotReplica { shard: ShardId, node: NodeId },
    #[error("node {node} is not an in-sync replica of shard {shard}, so it may miss acknowledged events")]
    NotInSync { shard: ShardId, node: NodeId },
    #[error("shard {shard}'s replica lists changed since (version {now}, not {asked})")]
    StaleIsr {
        shard: ShardId,
        now: u64,
        asked: u64,
    },
    #[error("shard {shard} is at epoch {now}, not {asked}")]
    WrongEpoch {
        shard: ShardId,
        now: Epoch,
        asked: Epoch,
    },
}

/// Owner, replicas and epoch of every shard. The number of shards is fixed when the cluster
/// is created.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardTable {
    shards: Vec<ShardEntry>,
}

impl ShardTable {
    /// A table of `shards` unowned shards at epoch 0.
    pub fn new(shards: u32) -> Result<ShardTable, TableError> {
        if shards == 0 {
            return Err(TableError::NoShards);
        }
        Ok(ShardTable {
            shards: vec![ShardEntry::default(); shards as usize],
        })
    }

    /// The number of shards, S.
    pub fn len(&self) -> u32 {
        self.shards.len() as u32
    }

    /// Always false: a table has at least one shard. (Here for clippy's `len_without_is_empty`.)
    pub fn is_empty(&self) -> bool {
        self.shards.is_empty()
    }

    /// One shard's row.
    pub fn get(&self, shard: ShardId) -> Result<&ShardEntry, TableError> {
        self.shards
            .get(shard as usize)
            .ok_or(TableError::NoSuchShard {
                shard,
                shards: self.len(),
            })
    }

    /// One shard's row, to change.
    pub fn get_mut(&mut self, shard: ShardId) -> Result<&mut ShardEntry, TableError> {
        let shards = self.len();
        self.shards
            .get_mut(shard as usize)
            .ok_or(TableError::NoSuchShard { shard, shards })
    }

    /// Every row with its shard number.
    pub fn iter(&self) -> impl Iterator<Item = (ShardId, &ShardEntry)> {
        self.shards
            .iter()
            .enumerate()
            .map(|(i, e)| (i as ShardId, e))
    }

    /// The owner of a shard, if it has one.
    pub fn owner(&self, shard: ShardId) -> Option<NodeId> {
        self.shards.get(shard as usize).and_then(|e| e.owner)
    }

    /// The shards a node owns.
    pub fn owned_by(&self, node: NodeId) -> Vec<ShardId> {
        self.iter()
            .filter(|(_, e)| e.owner == Some(node))
            .map(|(s, _)| s)
            .collect()
    }
}

impl ShardTable {
    /// Gives an unowned shard, or one whose owner is gone, to `node` straight away (no data
    /// to hand over), at the next epoch. Any move in progress is cancelled.
    pub fn assign(&mut self, shard: ShardId, node: NodeId) -> Result<Epoch, TableError> {
        let e = self.get_mut(shard)?;
        e.owner = Some(node);
        e.moving_to = None;
        e.replicas.retain(|r| *r != node);
        e.joining.retain(|r| *r != node);
        e.isr += 1;
        e.epoch = e.epoch.next();
        Ok(e.epoch)
    }

    /// Makes an in-sync replica the owner at the next epoch (its owner died): it holds every
    /// event acknowledged with `acks = all`. The old owner is no longer a replica; it copies
    /// the log again, from the point where it diverged, if it comes back.
    pub fn promote(&mut self, shard: ShardId, node: NodeId) -> Result<Epoch, TableError> {
        let e = self.get_mut(shard)?;
        if !e.replicas.contains(&node) {
            return Err(TableError::NotInSync { shard, node });
        }
        e.owner = Some(node);
        e.moving_to = None;
        e.replicas.retain(|r| *r != node);
        e.joining.retain(|r| *r != node);
        e.isr += 1;
        e.epoch = e.epoch.next();
        Ok(e.epoch)
    }

    /// Adds a replica that starts copying the shard's log (`joining`).
    pub fn add_replica(&mut self, shard: ShardId, node: NodeId) -> Result<(), TableError> {
        let e = self.get_mut(shard)?;
        if e.owner == Some(node) || e.replicas.contains(&node) || e.joining.contains(&node) {
            return Err(TableError::AlreadyHolds { shard, node });
        }
        e.isr += 1;
        e.joining.push(node);
        Ok(())
    }

    /// Removes a replica, in sync or joining.
    pub fn remove_replica(&mut self, shard: ShardId, node: NodeId) -> Result<(), TableError> {
        let e = self.get_mut(shard)?;
        if !e.replicas.contains(&node) && !e.joining.contains(&node) {
            return Err(TableError::NotReplica { shard, node });
        }
        e.replicas.retain(|r| *r != node);
        e.isr += 1;
        e.joining.retain(|r| *r != node);
        Ok(())
    }

    /// Counts a joining replica in sync: it copied the whole log of the owner of `epoch`.
    /// Refused at any other epoch, since a new owner's log may differ.
    /// The replica's view is version `isr` of the lists, taken when it asked the owner for
    /// what made it level; refused at another version.
    pub fn replica_in_sync(
        &mut self,
        shard: ShardId,
        node: NodeId,
        epoch: Epoch,
        isr: u64,
    ) -> Result<(), TableError> {
        let e = self.get_mut(shard)?;
        check_view(shard, e, epoch, isr)?;
        if !e.joining.contains(&node) {
            return Err(TableError::NotReplica { shard, node });
        }
        e.joining.retain(|r| *r != node);
        e.replicas.push(node);
        e.isr += 1;
        Ok(())
    }

    /// Moves an in-sync replica back to joining at `epoch` (Kafka's ISR shrink): its owner
    /// waited on it too long, so it may be neither waited on nor promoted until it reports
    /// itself caught up again. Refused at another epoch, so that an old owner's complaint
    /// cannot demote a replica of the new one, and at another version `isr` of the lists.
    /// A joining replica stays joining, but the version still rises: a report of it being
    /// in sync, made before, no longer counts.
    pub fn replica_out_of_sync(
        &mut self,
        shard: ShardId,
        node: NodeId,
        epoch: Epoch,
        isr: u64,
    ) -> Result<(), TableError> {
        let e = self.get_mut(shard)?;
        check_view(shard, e, epoch, isr)?;
        if e.replicas.contains(&node) {
            e.replicas.retain(|r| *r != node);
            e.joining.push(node);
        } else if !e.joining.contains(&node) {
            return Err(TableError::NotReplica { shard, node });
        }
        e.isr += 1;
        Ok(())
    }

    /// Drops a node from every replica list (it left the cluster).
    pub fn forget_replica(&mut self, node: NodeId) {
        for e in &mut self.shards {
            if e.replicas.contains(&node) || e.joining.contains(&node) {
                e.replicas.retain(|r| *r != node);
                e.joining.retain(|r| *r != node);
                e.isr += 1;
            }
        }
    }

    /// Starts handing a shard from its owner to `to`: from now on writes for it are held
    /// back. The epoch does not change until the move completes.
    pub fn begin_move(&mut self, shard: ShardId, to: NodeId) -> Result<(), TableError> {
        let e = self.get_mut(shard)?;
        if let Some(node) = e.moving_to {
            return Err(TableError::AlreadyMoving { shard, node });
        }
        e.moving_to = Some(to);
        Ok(())
    }

    /// Ends a hand-off: `to` owns the shard at the next epoch.
    pub fn complete_move(&mut self, shard: ShardId, to: NodeId) -> Result<Epoch, TableError> {
        let e = self.get_mut(shard)?;
        if e.moving_to != Some(to) {
            return Err(TableError::NotMoving { shard, node: to });
        }
        e.owner = Some(to);
        e.moving_to = None;
        e.replicas.retain(|r| *r != to);
        e.joining.retain(|r| *r != to);
        e.isr += 1;
        e.epoch = e.epoch.next();
        Ok(e.epoch)
    }

    /// Gives up a hand-off (the receiver left): the owner keeps the shard at a new epoch,
    /// so that anything the receiver wrote at the old epoch is refused.
    pub fn abort_move(&mut self, shard: ShardId, to: NodeId) -> Result<Epoch, TableError> {
        let e = self.get_mut(shard)?;
        if e.moving_to != Some(to) {
            return Err(TableError::NotMoving { shard, node: to });
        }
        e.moving_to = None;
        e.isr += 1;
        e.epoch = e.epoch.next();
        Ok(e.epoch)
    }
}

/// Refuses a command made against another epoch or version of a shard's lists.
fn check_view(shard: ShardId, e: &ShardEntry, epoch: Epoch, isr: u64) -> Result<(), TableError> {
    if e.epoch != epoch {
        return Err(TableError::WrongEpoch {
            shard,
            now: e.epoch,
            asked: epoch,
        });
    }
    if e.isr != isr {
        return Err(TableError::StaleIsr {
            shard,
            now: e.isr,
            asked: isr,
        });
    }
    Ok(())
}

/// The shard of a key's stable hash (see `starling_operators::Value::stable_hash`).
pub fn shard_of_hash(hash: u64, shards: u32) -> ShardId {
    (hash % u64::from(shards.max(1))) as ShardId
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_table_has_no_owners_and_refuses_unknown_shards() {
        assert_eq!(ShardTable::new(0), Err(TableError::NoShards));
        let t = ShardTable::new(4).unwrap();
        assert_eq!(t.len(), 4);
        assert!(t
            .iter()
            .all(|(_, e)| e.owner.is_none() && e.epoch == Epoch(0)));
        assert_eq!(
            t.get(4),
            Err(TableError::NoSuchShard {
                shard: 4,
                shards: 4
            })
        );
    }

    #[test]
    fn a_replica_out_of_sync_goes_back_to_joining_only_at_its_epoch() {
        let mut t = ShardTable::new(2).unwrap();
        t.assign(0, 1).unwrap();
        let epoch = t.get(0).unwrap().epoch;
        t.add_replica(0, 2).unwrap();
        let isr = t.get(0).unwrap().isr;
        t.replica_in_sync(0, 2, epoch, isr).unwrap();
        let isr = t.get(0).unwrap().isr;
        assert_eq!(
            t.replica_out_of_sync(0, 2, Epoch(epoch.0 + 1), isr),
            Err(TableError::WrongEpoch {
                shard: 0,
                now: epoch,
                asked: Epoch(epoch.0 + 1)
            })
        );
        assert_eq!(
            t.replica_out_of_sync(0, 3, epoch, isr),
            Err(TableError::NotReplica { shard: 0, node: 3 })
        );
        t.replica_out_of_sync(0, 2, epoch, isr).unwrap();
        let e = t.get(0).unwrap();
        assert!(e.replicas.is_empty() && e.joining == [2], "{e:?}");
        // A report of being in sync made before the demotion is refused...
        assert_eq!(
            t.replica_in_sync(0, 2, epoch, isr),
            Err(TableError::StaleIsr {
                shard: 0,
                now: isr + 1,
                asked: isr
            })
        );
        // ... and so is a complaint about a joining replica made against an older view,
        // while one made against the current view raises the version, leaving it joining.
        assert!(t.replica_out_of_sync(0, 2, epoch, isr).is_err());
        t.replica_out_of_sync(0, 2, epoch, isr + 1).unwrap();
        assert_eq!(t.get(0).unwrap().joining, [2]);
        assert!(t.replica_in_sync(0, 2, epoch, isr + 1).is_err());
        // Caught up again, reported against the current view, it is back in sync.
        t.replica_in_sync(0, 2, epoch, isr + 2).unwrap();
        assert_eq!(t.get(0).unwrap().replicas, [2]);
    }
}
