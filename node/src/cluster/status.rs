//! What `GET /v1/cluster` and `starling status` show: members with their gossip state and
//! load, the Raft leader and voters, and the shard table (owner, replicas, epoch per shard);
//! and whether this member is ready to serve (`/readyz`), with the reason when it is not.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};
use starling_cluster::membership::MemberState;
use starling_cluster::{ClusterState, MemberInfo, NodeId};

use super::Shared;

/// Why a cluster member cannot serve yet. After a restart every node comes back at its own
/// pace, so a member waits (for as long as it takes) rather than exit, and says here what it
/// waits for: `/readyz` answers 503 with this, and `GET /v1/cluster` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum NotReady {
    /// No Raft leader known, or none heard from recently (the lease lapsed): fewer than a
    /// majority of the voters are back, or this node cannot reach them.
    NoLeader {
        /// The leader this node last knew, when it knows one but has not heard from it.
        last: Option<String>,
        /// The voters by name (or id), as this node last knew them.
        voters: Vec<String>,
        /// How many of them gossip reports live, this node included.
        live: usize,
    },
    /// The committed membership does not list this node yet: the leader adds it once it
    /// sees it in gossip.
    NotAMember,
    /// The committed state has this node at other addresses (it came back on new ports):
    /// peers would reach it at the old ones until the leader commits the new ones.
    OldAddresses { peer: String, http: String },
    /// This node is handing its shards over to leave the cluster.
    Leaving,
    /// The committed state still marks this node leaving from before its restart (it was
    /// stopped before its shards could move): it stays once `Rejoin` commits.
    MarkedLeaving,
    /// Shards this node owns are being rebuilt from their log (after a promotion).
    Rebuilding { shards: Vec<u32> },
    /// Shards are owned by members that are not back: writes to them wait.
    OwnersAway { shards: usize, members: Vec<String> },
}

impl std::fmt::Display for NotReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotReady::NoLeader { last, voters, live } => {
                match last {
                    None => f.write_str("no Raft leader is known")?,
                    Some(l) => write!(
                        f,
                        "no Raft leader has been heard from recently (the last known was {l})"
                    )?,
                }
                write!(
                    f,
                    ": waiting for a majority ({} of {}) of the voters [{}] to be back and \
                     reachable; {live} of them live",
                    voters.len() / 2 + 1,
                    voters.len(),
                    voters.join(", ")
                )
            }
            NotReady::NotAMember => f.write_str(
                "this node is not in the cluster's committed membership yet: waiting for the \
                 Raft leader to add it",
            ),
            NotReady::OldAddresses { peer, http } => write!(
                f,
                "the cluster has not yet recorded this node's addresses (peer {peer}, HTTP \
                 {http}): waiting for the Raft leader to commit them"
            ),
            NotReady::Leaving => {
                f.write_str("this node is leaving the cluster (handing its shards over)")
            }
            NotReady::MarkedLeaving => f.write_str(
                "the cluster still marks this node as leaving, from before its restart: \
                 waiting for the Raft leader to commit that it stays",
            ),
            NotReady::Rebuilding { shards } => write!(
                f,
                "{} shards this node owns are being rebuilt from their log: {shards:?}",
                shards.len()
            ),
            NotReady::OwnersAway { shards, members } => write!(
                f,
                "{shards} shards are owned by members that are not back yet [{}]: writes to \
                 them wait for those members",
                members.join(", ")
            ),
        }
    }
}

/// What readiness is judged on, read from Raft, gossip and the committed state.
pub(crate) struct Facts<'a> {
    pub me: NodeId,
    /// What this node tells the cluster about itself.
    pub info: &'a MemberInfo,
    pub state: &'a ClusterState,
    pub leader: Option<NodeId>,
    /// The Raft membership (voters and learners) as this node knows it.
    pub raft_nodes: &'a BTreeSet<NodeId>,
    pub voters: &'a BTreeSet<NodeId>,
    /// Members gossip reports live, this node included.
    pub live: &'a BTreeSet<NodeId>,
    /// Whether this node itself is leaving (it said so in gossip).
    pub leaving: bool,
    pub lease: bool,
    pub rebuilding: Vec<u32>,
}

/// Whether a cluster member is ready to serve: a leader is known and heard from (its lease
/// holds), the committed state lists it at its current addresses, none of its shards is being rebuilt, and
/// every shard's owner is back. The first reason found otherwise, most basic first (without
/// a leader nothing else can change).
pub(crate) fn readiness(f: &Facts<'_>) -> Result<(), NotReady> {
    let name = |n: &NodeId| {
        f.state
            .members
            .get(n)
            .map_or_else(|| hex(*n), |m| m.name.clone())
    };
    // A leader known from before a restart (or a removal) may be long gone: without a
    // lease nothing it said counts, and this node takes no writes.
    if f.leader.is_none() || !f.lease {
        return Err(NotReady::NoLeader {
            last: f.leader.as_ref().map(name),
            voters: f.voters.iter().map(name).collect(),
            live: f.voters.iter().filter(|v| f.live.contains(v)).count(),
        });
    }
    let Some(recorded) = f.state.members.get(&f.me) else {
        return Err(NotReady::NotAMember);
    };
    if !f.raft_nodes.contains(&f.me) {
        return Err(NotReady::NotAMember);
    }
    if recorded.peer_addr != f.info.peer_addr || recorded.http_addr != f.info.http_addr {
        return Err(NotReady::OldAddresses {
            peer: f.info.peer_addr.clone(),
            http: f.info.http_addr.clone(),
        });
    }
    if f.leaving {
        return Err(NotReady::Leaving);
    }
    if recorded.leaving {
        return Err(NotReady::MarkedLeaving);
    }
    if !f.rebuilding.is_empty() {
        return Err(NotReady::Rebuilding {
            shards: f.rebuilding.clone(),
        });
    }
    let away: BTreeSet<NodeId> = f
        .state
        .table
        .iter()
        .filter_map(|(_, e)| e.owner)
        .filter(|o| !f.live.contains(o))
        .collect();
    if !away.is_empty() {
        let shards = f
            .state
            .table
            .iter()
            .filter(|(_, e)| e.owner.is_some_and(|o| away.contains(&o)))
            .count();
        return Err(NotReady::OwnersAway {
            shards,
            members: away.iter().map(name).collect(),
        });
    }
    Ok(())
}

/// This member's readiness now.
pub(crate) async fn check(s: &Shared) -> Result<(), NotReady> {
    let gossip = s.membership.members().await;
    let live: BTreeSet<NodeId> = gossip.iter().map(|m| m.node_id).collect();
    let leaving = gossip
        .iter()
        .any(|m| m.node_id == s.me && m.state == MemberState::Leaving);
    let state = s.current();
    readiness(&Facts {
        me: s.me,
        info: &s.info,
        state: &state,
        leader: s.raft.leader(),
        raft_nodes: &s.raft.raft_nodes(),
        voters: &s.raft.voters(),
        live: &live,
        leaving,
        lease: s.raft.lease_valid(super::LEASE),
        rebuilding: super::replication::rebuilding(s),
    })
}

fn hex(n: u64) -> String {
    format!("{n:016x}")
}

/// Logs this member's readiness as it changes: what it waits for (info, repeated as a
/// warning every minute it goes on), and when it is ready. A node waiting for its peers
/// after a restart is otherwise silent, and an operator needs to see what it waits for.
pub(super) async fn ready_loop(s: std::sync::Arc<Shared>) {
    use std::time::{Duration, Instant};
    const REPEAT: Duration = Duration::from_secs(60);
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    // The kind of reason last logged (`None`: ready), when the wait began, when last said.
    let mut last: Option<Option<std::mem::Discriminant<NotReady>>> = None;
    let started = Instant::now();
    let mut waiting_since = started;
    let mut said = started;
    loop {
        tick.tick().await;
        let now = check(&s).await;
        let kind = now.as_ref().err().map(std::mem::discriminant);
        match &now {
            Ok(()) if last != Some(None) => {
                tracing::info!(waited = ?waiting_since.elapsed(), "this cluster member is ready");
            }
            Err(why) if last != Some(kind) => {
                if last == Some(None) {
                    waiting_since = Instant::now();
                }
                said = Instant::now();
                tracing::info!(reason = %why, "this cluster member is not ready");
            }
            Err(why) if said.elapsed() >= REPEAT => {
                said = Instant::now();
                tracing::warn!(waited = ?waiting_since.elapsed(), reason = %why, "this cluster member is still not ready");
            }
            _ => {}
        }
        last = Some(kind);
    }
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
    let ready = check(s).await;
    json!({
        "cluster_id": s.cluster_id,
        // Whether this node is ready to serve, and why not (what `/readyz` answers).
        "ready": ready.is_ok(),
        "not_ready": ready.err().map(|r| r.to_string()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use starling_cluster::Command;

    fn info(name: &str, port: u16) -> MemberInfo {
        MemberInfo {
            name: name.into(),
            peer_addr: format!("127.0.0.1:{port}"),
            http_addr: format!("127.0.0.1:{}", port + 1),
            leaving: false,
        }
    }

    /// Three members 1, 2, 3 (a, b, c), shard 0 owned by 1, shard 1 by 3.
    fn three() -> ClusterState {
        let mut s = ClusterState::new("t", 2).unwrap();
        for (n, name) in [(1, "a"), (2, "b"), (3, "c")] {
            s.apply(&Command::AddMember {
                node: n,
                info: info(name, 1000 * n as u16),
            });
        }
        s.apply(&Command::Assign { shard: 0, node: 1 });
        s.apply(&Command::Assign { shard: 1, node: 3 });
        s
    }

    fn judge(
        state: &ClusterState,
        leader: Option<NodeId>,
        live: &[NodeId],
    ) -> Result<(), NotReady> {
        judge_lease(state, leader, live, true)
    }

    fn judge_lease(
        state: &ClusterState,
        leader: Option<NodeId>,
        live: &[NodeId],
        lease: bool,
    ) -> Result<(), NotReady> {
        let nodes: BTreeSet<NodeId> = [1, 2, 3].into();
        readiness(&Facts {
            me: 1,
            info: &info("a", 1000),
            state,
            leader,
            raft_nodes: &nodes,
            voters: &nodes,
            live: &live.iter().copied().collect(),
            leaving: false,
            lease,
            rebuilding: Vec::new(),
        })
    }

    #[test]
    fn a_member_waits_for_a_leader_then_for_the_owners_to_come_back() {
        let s = three();
        let why = judge(&s, None, &[1]).unwrap_err();
        assert_eq!(
            why,
            NotReady::NoLeader {
                last: None,
                voters: vec!["a".into(), "b".into(), "c".into()],
                live: 1
            }
        );
        assert!(why.to_string().contains("majority (2 of 3)"), "{why}");
        // A leader remembered from before the restart, not heard from since.
        let why = judge_lease(&s, Some(2), &[1], false).unwrap_err();
        assert!(
            matches!(&why, NotReady::NoLeader { last: Some(l), .. } if l == "b"),
            "{why}"
        );
        let why = judge(&s, Some(2), &[1, 2]).unwrap_err();
        assert_eq!(
            why,
            NotReady::OwnersAway {
                shards: 1,
                members: vec!["c".into()]
            }
        );
        assert_eq!(judge(&s, Some(2), &[1, 2, 3]), Ok(()));
    }

    #[test]
    fn a_member_back_waits_for_its_addresses_and_its_stay_to_be_recorded() {
        let mut s = three();
        s.apply(&Command::AddMember {
            node: 1,
            info: info("a", 5000),
        });
        let why = judge(&s, Some(1), &[1, 2, 3]).unwrap_err();
        assert!(matches!(why, NotReady::OldAddresses { .. }), "{why}");
        let mut s = three();
        s.apply(&Command::SetLeaving { node: 1 });
        assert_eq!(judge(&s, Some(2), &[1, 2, 3]), Err(NotReady::MarkedLeaving));
        s.apply(&Command::Rejoin { node: 1 });
        assert_eq!(judge(&s, Some(2), &[1, 2, 3]), Ok(()));
        let mut s = three();
        s.apply(&Command::Assign { shard: 0, node: 2 });
        s.apply(&Command::RemoveMember { node: 1 });
        assert_eq!(judge(&s, Some(2), &[1, 2, 3]), Err(NotReady::NotAMember));
    }
}
