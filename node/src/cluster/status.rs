//! What `GET /v1/cluster` and `starling status` show: members with their gossip state and
//! load, the Raft leader and voters, and the shard table (owner, replicas, epoch per shard).

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::Shared;

fn hex(n: u64) -> String {
    format!("{n:016x}")
}

/// The cluster as this node sees it.
pub(crate) async fn cluster_json(s: &Shared) -> Value {
    let state = s.current();
    let gossip = s.membership.members().await;
    let voters = s.raft.voters();
    let mut owned: BTreeMap<u64, usize> = BTreeMap::new();
    let mut shards = Vec::with_capacity(state.table.len() as usize);
    for (shard, e) in state.table.iter() {
        if let Some(o) = e.owner {
            *owned.entry(o).or_default() += 1;
        }
        shards.push(json!({
            "shard": shard,
            "owner": e.owner.map(hex),
            "replicas": e.replicas.iter().map(|r| hex(*r)).collect::<Vec<_>>(),
            "joining": e.joining.iter().map(|r| hex(*r)).collect::<Vec<_>>(),
            "epoch": e.epoch.0,
            "moving_to": e.moving_to.map(hex),
        }));
    }
    let members: Vec<Value> = state
        .members
        .iter()
        .map(|(id, m)| {
            let g = gossip.iter().find(|g| g.node_id == *id);
            json!({
                "id": hex(*id),
                "name": m.name,
                "peer": m.peer_addr,
                "http": m.http_addr,
                "gossip": g.map(|g| g.gossip_addr.to_string()),
                "state": match g {
                    Some(g) => g.state.to_string(),
                    None => "down".to_string(),
                },
                "leaving": m.leaving,
                "load": g.map(|g| g.load),
                "voter": voters.contains(id),
                "shards": owned.get(id).copied().unwrap_or(0),
            })
        })
        .collect();
    let moving = state
        .table
        .iter()
        .filter(|(_, e)| e.moving_to.is_some())
        .count();
    let live = gossip.iter().map(|m| m.node_id).collect();
    let joining = state
        .table
        .iter()
        .filter(|(_, e)| !e.joining.is_empty())
        .count();
    // Nothing left for the leader to do: every shard is where placement wants it, with all
    // its replicas in sync.
    // As many voters as there can be: otherwise most of the nodes need not hold most of the
    // votes, and a partition could leave the larger side without a leader.
    let voting = state
        .members
        .keys()
        .filter(|id| voters.contains(id))
        .count();
    let full_vote = voting >= state.members.len().min(starling_cluster::raft::MAX_VOTERS);
    let settled = moving == 0
        && joining == 0
        && full_vote
        && starling_cluster::controller::next_commands(&state, &live, super::MOVES_IN_FLIGHT)
            .is_empty();
    json!({
        "cluster_id": s.cluster_id,
        "node": {"id": hex(s.me), "name": s.name},
        "leader": s.raft.leader().map(hex),
        "shard_count": state.table.len(),
        "moving": moving,
        "replication": state.replication_factor(),
        "replicas_joining": joining,
        "voters": voting,
        // Whether this node may take writes for its shards now (ARCHITECTURE §5, fencing).
        "lease": s.raft.lease_valid(super::LEASE),
        "settled": settled,
        "members": members,
        "shards": shards,
    })
}
