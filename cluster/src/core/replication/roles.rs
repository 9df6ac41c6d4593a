//! A node's replication roles as the committed table gives them: which shards it copies
//! from which owner, and which it has just been promoted to own.

use std::collections::BTreeMap;

use crate::core::state::ClusterState;
use crate::core::table::{NodeId, ShardId};

/// The shards `me` copies, by owner: (shard, epoch), in shard order. A replica runs one
/// fetch loop per owner, and an answer is applied only while the shard is still copied from
/// that owner at that epoch, so a node promoted meanwhile never takes the old owner's entries.
pub fn copied_by_owner(st: &ClusterState, me: NodeId) -> BTreeMap<NodeId, Vec<(ShardId, u64)>> {
    let mut out: BTreeMap<NodeId, Vec<(ShardId, u64)>> = BTreeMap::new();
    for (shard, e) in st.table.iter() {
        if let Some(owner) = e.owner {
            if owner != me && (e.replicas.contains(&me) || e.joining.contains(&me)) {
                out.entry(owner).or_default().push((shard, e.epoch.0));
            }
        }
    }
    out
}

/// Shards `me` has just been promoted to own (it was a replica, the owner died) between the
/// table it saw before (`prev`) and the one it sees `now`: their events are in its log but
/// not in its dataflows, which must replay them before new writes. A shard handed over to
/// `me` (it was `moving_to`) came with its state and is not listed.
pub fn promoted(prev: &ClusterState, now: &ClusterState, me: NodeId) -> Vec<ShardId> {
    now.table
        .iter()
        .filter(|(shard, e)| {
            e.owner == Some(me)
                && prev.table.get(*shard).is_ok_and(|p| {
                    p.owner != Some(me)
                        && p.moving_to != Some(me)
                        && (p.replicas.contains(&me) || p.joining.contains(&me))
                })
        })
        .map(|(shard, _)| shard)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::state::{Command, MemberInfo};
    use crate::core::table::Epoch;

    fn cluster() -> ClusterState {
        let mut s = ClusterState::new("c", 4).unwrap();
        for n in 1..=3 {
            s.apply(&Command::AddMember {
                node: n,
                info: MemberInfo::default(),
            });
        }
        s.apply(&Command::SetReplication { factor: 2 });
        s
    }

    #[test]
    fn a_replica_copies_in_sync_and_joining_shards_from_their_owners() {
        let mut s = cluster();
        s.apply(&Command::Assign { shard: 0, node: 1 });
        s.apply(&Command::Assign { shard: 1, node: 2 });
        s.apply(&Command::Assign { shard: 2, node: 1 });
        s.apply(&Command::Assign { shard: 3, node: 3 });
        s.apply(&Command::AddReplica { shard: 0, node: 3 });
        s.apply(&Command::AddReplica { shard: 1, node: 3 });
        s.apply(&Command::AddReplica { shard: 2, node: 3 });
        let isr = s.table.get(2).unwrap().isr;
        s.apply(&Command::ReplicaInSync {
            shard: 2,
            node: 3,
            epoch: Epoch(1),
            isr,
        });
        let by = copied_by_owner(&s, 3);
        assert_eq!(by.len(), 2);
        assert_eq!(by[&1], vec![(0, 1), (2, 1)]);
        assert_eq!(by[&2], vec![(1, 1)]);
        // Owners copy nothing of their own shards; a node with no replica copies nothing.
        assert!(copied_by_owner(&s, 2).is_empty());
        // An unowned shard is copied from nobody.
        let mut u = cluster();
        u.table.get_mut(0).unwrap().joining.push(3);
        assert!(copied_by_owner(&u, 3).is_empty());
    }

    #[test]
    fn only_a_replica_that_takes_a_shard_over_is_promoted() {
        let mut s = cluster();
        s.apply(&Command::Assign { shard: 0, node: 1 });
        s.apply(&Command::Assign { shard: 1, node: 1 });
        s.apply(&Command::Assign { shard: 2, node: 1 });
        s.apply(&Command::AddReplica { shard: 0, node: 2 });
        let isr = s.table.get(0).unwrap().isr;
        s.apply(&Command::ReplicaInSync {
            shard: 0,
            node: 2,
            epoch: Epoch(1),
            isr,
        });
        let prev = s.clone();
        // Shard 0: promoted. Shard 1: assigned afresh to a node that held nothing. Shard 2:
        // handed over (moving_to), its state came along.
        s.apply(&Command::Promote { shard: 0, node: 2 });
        s.apply(&Command::Assign { shard: 1, node: 2 });
        let mut moving = prev.clone();
        moving.apply(&Command::AddReplica { shard: 2, node: 2 });
        moving.apply(&Command::BeginMove { shard: 2, to: 2 });
        let mut after = moving.clone();
        after.apply(&Command::CompleteMove { shard: 2, to: 2 });
        assert_eq!(promoted(&prev, &s, 2), vec![0]);
        assert!(promoted(&moving, &after, 2).is_empty());
        assert!(promoted(&s, &s, 2).is_empty(), "already the owner");
        assert!(promoted(&prev, &s, 1).is_empty());
    }
}
