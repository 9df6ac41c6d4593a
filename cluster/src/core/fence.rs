//! The epoch check a node applies to a write forwarded to it (ARCHITECTURE §5, fencing).
//!
//! Every forwarded batch carries the epoch the sender's table gives the shard. Comparing it
//! with the receiver's own table tells which side is behind, and so who must act: a sender
//! with an old table re-routes, a receiver with an old table catches up first, and only a
//! write at the very epoch at which the receiver owns the shard, with no hand-off going on, is
//! applied. Two nodes can therefore never both accept writes for one shard at one epoch,
//! whatever their gossip views say.

use thiserror::Error;

use crate::core::table::{Epoch, NodeId, ShardId, ShardTable, TableError};

/// The verdict on one forwarded write. Everything but [`Fence::Accept`] is a refusal that
/// goes back to the sender; the message says what happened and what the sender does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum Fence {
    /// Apply the write.
    #[error("accepted")]
    Accept,
    /// The sender's table is older than ours: it must refresh it and re-route the write.
    #[error(
        "refused: the write is stamped with an older epoch than the shard's current epoch \
         {current} (owner {}); refresh the shard table and re-route",
        owner_name(*.owner)
    )]
    Stale {
        /// The shard's epoch in the receiver's table.
        current: Epoch,
        /// Its owner there, as a routing hint.
        owner: Option<NodeId>,
    },
    /// Same epoch, but we do not own the shard at it: the sender routed by a table that
    /// names us wrongly; it must re-route to `owner`.
    #[error(
        "refused: this node does not own the shard at epoch {epoch} (owner {}); re-route",
        owner_name(*.owner)
    )]
    NotOwner {
        /// The owner at that epoch, where the write should go.
        owner: Option<NodeId>,
        /// The epoch both sides agree on.
        epoch: Epoch,
    },
    /// We own the shard but are handing it over to `to`: the sender holds the write back and
    /// sends it once the move completes or is aborted.
    #[error(
        "held: the shard is being handed over to node {to}; hold the write until the move ends"
    )]
    Held {
        /// The receiver of the hand-off.
        to: NodeId,
    },
    /// The sender knows a newer epoch than we do: our table is behind. The receiver waits
    /// until its table has caught up with the write's epoch, then checks again.
    #[error(
        "not yet: this node's table is at epoch {known} for the shard, behind the write's; \
         retry once the table has caught up"
    )]
    Ahead {
        /// The shard's epoch in the receiver's (older) table.
        known: Epoch,
    },
}

fn owner_name(owner: Option<NodeId>) -> String {
    owner.map_or_else(|| "none".to_string(), |n| n.to_string())
}

impl Fence {
    /// True when the write may be applied; the caller's only fast-path test.
    pub fn is_accept(&self) -> bool {
        matches!(self, Fence::Accept)
    }
}

/// Checks a write for `shard` stamped with `writer_epoch`, arriving at node `me` whose table
/// is `table`. Errs only for a shard the table does not have (a sender with another shard
/// count: a misconfigured cluster, not a race).
pub fn check_write(
    table: &ShardTable,
    me: NodeId,
    shard: ShardId,
    writer_epoch: Epoch,
) -> Result<Fence, TableError> {
    let e = table.get(shard)?;
    Ok(if writer_epoch < e.epoch {
        Fence::Stale {
            current: e.epoch,
            owner: e.owner,
        }
    } else if writer_epoch > e.epoch {
        Fence::Ahead { known: e.epoch }
    } else if e.owner != Some(me) {
        Fence::NotOwner {
            owner: e.owner,
            epoch: e.epoch,
        }
    } else if let Some(to) = e.moving_to {
        Fence::Held { to }
    } else {
        Fence::Accept
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shard 0 owned by node 1 at epoch 1; shard 1 owned by node 1 at epoch 1, moving to 2.
    fn table() -> ShardTable {
        let mut t = ShardTable::new(2).unwrap();
        t.assign(0, 1).unwrap();
        t.assign(1, 1).unwrap();
        t.begin_move(1, 2).unwrap();
        t
    }

    #[test]
    fn the_owner_accepts_at_its_epoch() {
        assert_eq!(check_write(&table(), 1, 0, Epoch(1)), Ok(Fence::Accept));
        assert!(Fence::Accept.is_accept());
    }

    #[test]
    fn an_older_epoch_is_stale() {
        let f = check_write(&table(), 1, 0, Epoch(0)).unwrap();
        assert_eq!(
            f,
            Fence::Stale {
                current: Epoch(1),
                owner: Some(1)
            }
        );
        assert!(f.to_string().contains("refresh the shard table"), "{f}");
    }

    #[test]
    fn a_newer_epoch_means_our_table_is_behind() {
        let f = check_write(&table(), 1, 0, Epoch(2)).unwrap();
        assert_eq!(f, Fence::Ahead { known: Epoch(1) });
        assert!(f.to_string().contains("caught up"), "{f}");
    }

    #[test]
    fn another_node_at_the_same_epoch_is_not_the_owner() {
        let f = check_write(&table(), 2, 0, Epoch(1)).unwrap();
        assert_eq!(
            f,
            Fence::NotOwner {
                owner: Some(1),
                epoch: Epoch(1)
            }
        );
        assert!(f.to_string().contains("owner 1"), "{f}");
        let none = ShardTable::new(1).unwrap();
        let f = check_write(&none, 2, 0, Epoch(0)).unwrap();
        assert!(f.to_string().contains("owner none"), "{f}");
    }

    #[test]
    fn a_moving_shard_holds_writes_even_at_the_receiver() {
        let f = check_write(&table(), 1, 1, Epoch(1)).unwrap();
        assert_eq!(f, Fence::Held { to: 2 });
        assert!(f.to_string().contains("handed over to node 2"), "{f}");
        // The receiver does not own it yet.
        assert!(matches!(
            check_write(&table(), 2, 1, Epoch(1)),
            Ok(Fence::NotOwner { .. })
        ));
    }

    #[test]
    fn an_unknown_shard_is_an_error() {
        assert_eq!(
            check_write(&table(), 1, 5, Epoch(1)),
            Err(TableError::NoSuchShard {
                shard: 5,
                shards: 2
            })
        );
    }
}
