//! Where a batch of events goes by one view of the shard table: to each shard's owner, or
//! held back while the shard moves or has no owner yet. The node's publish path and the
//! simulation's routers call this one function, so the routing the simulation checks is the
//! routing that runs.

use std::collections::BTreeMap;

use crate::core::table::{NodeId, ShardId, ShardTable};

/// A batch split by `route`.
#[derive(Debug, PartialEq)]
pub struct Routed<T> {
    /// What goes to each owner, in batch order.
    pub by_owner: BTreeMap<NodeId, Vec<(ShardId, T)>>,
    /// What must wait (its shard is moving or unowned), in batch order: the caller tries it
    /// again by a newer table, or answers "unavailable" once its deadline passes.
    pub held: Vec<(ShardId, T)>,
    /// Why the last held item could not go, for the answer to the client.
    pub why: Option<String>,
}

/// Splits `items` (each with its shard) by `table`. Items of a shard that is moving are held
/// even though it has an owner: the owner refuses them while it copies the shard's state, and
/// they must reach the new owner after that state, not before.
pub fn route<T>(table: &ShardTable, items: impl IntoIterator<Item = (ShardId, T)>) -> Routed<T> {
    let mut by_owner: BTreeMap<NodeId, Vec<(ShardId, T)>> = BTreeMap::new();
    let mut held = Vec::new();
    let mut why = None;
    for (shard, item) in items {
        match table.get(shard) {
            Ok(e) if e.moving_to.is_some() => {
                why = Some(format!("shard {shard} is moving"));
                held.push((shard, item));
            }
            Ok(e) => match e.owner {
                Some(owner) => by_owner.entry(owner).or_default().push((shard, item)),
                None => {
                    why = Some(format!("shard {shard} has no owner yet"));
                    held.push((shard, item));
                }
            },
            Err(_) => {
                why = Some(format!("shard {shard} is not in the table"));
                held.push((shard, item));
            }
        }
    }
    Routed {
        by_owner,
        held,
        why,
    }
}

/// (shard, epoch) for each distinct shard, sorted, from one table: what a forward carries so
/// that its receiver can fence it.
pub fn epochs_for(
    table: &ShardTable,
    shards: impl Iterator<Item = ShardId>,
) -> Vec<(ShardId, u64)> {
    let mut shards: Vec<ShardId> = shards.collect();
    shards.sort_unstable();
    shards.dedup();
    shards
        .into_iter()
        .map(|s| (s, table.get(s).map(|e| e.epoch.0).unwrap_or(0)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::state::{ClusterState, Command, MemberInfo};

    #[test]
    fn owners_get_their_parts_and_moving_or_unowned_shards_wait() {
        let mut st = ClusterState::new("t", 4).unwrap();
        for node in [1, 2] {
            st.apply(&Command::AddMember {
                node,
                info: MemberInfo::default(),
            });
        }
        st.apply(&Command::Assign { shard: 0, node: 1 });
        st.apply(&Command::Assign { shard: 1, node: 2 });
        st.apply(&Command::Assign { shard: 2, node: 1 });
        st.apply(&Command::BeginMove { shard: 2, to: 2 });
        let r = route(
            &st.table,
            [(0, "a"), (1, "b"), (2, "c"), (3, "d"), (0, "e"), (9, "f")],
        );
        assert_eq!(r.by_owner[&1], vec![(0, "a"), (0, "e")]);
        assert_eq!(r.by_owner[&2], vec![(1, "b")]);
        assert_eq!(r.held, vec![(2, "c"), (3, "d"), (9, "f")]);
        assert!(r.why.is_some_and(|w| w.contains("shard 9")));
        let e = |s: ShardId| st.table.get(s).unwrap().epoch.0;
        assert_eq!(
            epochs_for(&st.table, [2, 0, 2].into_iter()),
            vec![(0, e(0)), (2, e(2))]
        );
    }
}
