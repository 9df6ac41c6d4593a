//! On the Raft leader: turning what gossip reports into agreed members and proposing the
//! controller's decisions. Its own file because only the leader runs it, apart from the
//! state every node follows (`follow`).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use starling_cluster::membership::{Member, MemberState};
use starling_cluster::{controller, ClusterState, Command, MemberInfo, NodeId};

use super::{PeerAddr, Shared, MOVES_IN_FLIGHT};

/// How long after this node started a member that gossip has reported neither live nor dead
/// — not seen at all by this process — still counts as live for placement. After a whole
/// cluster stopped (maintenance, a power loss) every node comes back at its own pace, and
/// the first majority back would otherwise take the others' shards away at once: started
/// afresh without their state (R = 1) or promoted to a replica whose owner is about to
/// return. A member seen and then lost is judged by the failure detector as before, and one
/// still not back after this long is taken for gone.
const RETURN_GRACE: Duration = Duration::from_secs(120);

/// On the Raft leader: adds the members gossip reports, marks leaving ones, and proposes
/// what the controller decides, until the table is at its target.
pub(super) async fn leader_loop(s: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    // This node's own record (a leader restarted at new addresses): retried every round
    // until it commits, with the warnings spaced out.
    let mut own_record = Backoff::default();
    // Members waited for (see RETURN_GRACE), as last logged.
    let mut awaited: BTreeSet<NodeId> = BTreeSet::new();
    loop {
        tick.tick().await;
        if !s.raft.is_leader() {
            continue;
        }
        let members = s.membership.members().await;
        let state = s.current();
        for m in &members {
            s.peers.learn(
                m.node_id,
                PeerAddr {
                    peer: m.peer_addr,
                    fingerprint: m.peer_fingerprint.clone(),
                },
            );
            let info = member_info(m);
            let known = state.members.get(&m.node_id);
            if known.is_none_or(|k| k.peer_addr != info.peer_addr || k.http_addr != info.http_addr)
            {
                if m.node_id == s.me {
                    // The leader itself (restarted at new addresses): only its record changes.
                    match s
                        .propose(Command::AddMember {
                            node: m.node_id,
                            info,
                        })
                        .await
                    {
                        Ok(()) => own_record.succeeded("recorded this node's addresses"),
                        Err(e) => {
                            own_record.failed("could not record this node's addresses yet", &e)
                        }
                    }
                } else if let Err(e) = s.raft.add_node(m.node_id, info).await {
                    // `add_node` records the member (AddMember) as well as adding it to Raft.
                    tracing::warn!(node = %format!("{:016x}", m.node_id), error = %e, "could not add a member to Raft");
                    continue;
                }
            }
            if m.state == MemberState::Leaving && known.is_some_and(|k| !k.leaving) {
                let _ = s.propose(Command::SetLeaving { node: m.node_id }).await;
            }
            // A member that joined while the log ran ahead stayed a learner: try again.
            if known.is_some() && m.node_id != s.me && m.state != MemberState::Leaving {
                if let Err(e) = s.raft.promote(m.node_id).await {
                    tracing::debug!(node = %format!("{:016x}", m.node_id), error = %e, "could not promote a learner");
                }
            }
        }
        if state.replication == 0 {
            let factor = s.replication_factor.max(1);
            if let Err(e) = s.propose(Command::SetReplication { factor }).await {
                tracing::warn!(factor, error = %e, "could not set the replication factor");
            }
        } else if s.replication_factor > 0 && s.replication_factor != state.replication {
            tracing::debug!(
                configured = s.replication_factor,
                agreed = state.replication,
                "this node's --replication differs from the cluster's; the cluster's holds"
            );
        }
        let mut live: BTreeSet<NodeId> = members.iter().map(|m| m.node_id).collect();
        let state = s.current();
        let away = if s.started.elapsed() < RETURN_GRACE {
            not_seen(&state, &live, &s.membership.dead().await)
        } else {
            BTreeSet::new()
        };
        if away != awaited {
            if !away.is_empty() {
                let names: Vec<&str> = away
                    .iter()
                    .filter_map(|n| state.members.get(n).map(|m| m.name.as_str()))
                    .collect();
                tracing::info!(members = ?names, grace = ?RETURN_GRACE, "waiting for members not seen since this node started: their shards stay theirs meanwhile");
            }
            awaited = away.clone();
        }
        live.extend(&away);
        let commands = controller::next_commands(&state, &live, MOVES_IN_FLIGHT)
            .into_iter()
            .filter(|c| !needs(c, &state, &away));
        for command in commands {
            let removed = match &command {
                Command::RemoveMember { node } => Some(*node),
                _ => None,
            };
            if let Err(e) = s.propose(command).await {
                tracing::debug!(error = %e, "controller proposal not applied");
                break;
            }
            if let Some(node) = removed {
                if node != s.me {
                    let _ = s.raft.remove_node(node).await;
                }
            }
        }
    }
}

/// Agreed members gossip reports neither live nor dead: not seen by this process at all.
fn not_seen(state: &ClusterState, live: &BTreeSet<NodeId>, dead: &[NodeId]) -> BTreeSet<NodeId> {
    state
        .members
        .keys()
        .filter(|n| !live.contains(n) && !dead.contains(n))
        .copied()
        .collect()
}

/// Whether `command` needs one of `away` to be back: it gives one of them a shard, a replica
/// or a move, or moves a shard away from one (its state leaves only with it). They are
/// counted live so that their shards stay theirs, not so that work waits on them.
fn needs(command: &Command, state: &ClusterState, away: &BTreeSet<NodeId>) -> bool {
    match command {
        Command::Assign { node, .. }
        | Command::AddReplica { node, .. }
        | Command::Promote { node, .. } => away.contains(node),
        Command::BeginMove { shard, to } => {
            away.contains(to) || state.table.owner(*shard).is_some_and(|o| away.contains(&o))
        }
        _ => false,
    }
}

/// Spaces out the warnings of a proposal retried every round: the first failure is logged
/// at once, then only after 1, 2, 4 … 60 s of further failures; a success after failures
/// is logged at info.
#[derive(Default)]
pub(super) struct Backoff {
    failures: u32,
    next_warning: Option<std::time::Instant>,
}

impl Backoff {
    pub(super) fn failed(&mut self, what: &str, e: &crate::EngineError) {
        self.failures += 1;
        let now = std::time::Instant::now();
        if self.next_warning.is_none_or(|t| now >= t) {
            tracing::warn!(failures = self.failures, error = %e, "{what}; retrying");
            let wait = Duration::from_secs(1 << self.failures.min(6)).min(Duration::from_secs(60));
            self.next_warning = Some(now + wait);
        }
    }

    pub(super) fn succeeded(&mut self, what: &str) {
        if self.failures > 0 {
            tracing::info!(after_failures = self.failures, "{what}");
        }
        *self = Backoff::default();
    }
}

fn member_info(m: &Member) -> MemberInfo {
    MemberInfo {
        name: m.name.clone(),
        peer_addr: m.peer_addr.to_string(),
        http_addr: m.http_addr.to_string(),
        leaving: m.state == MemberState::Leaving,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> ClusterState {
        let mut s = ClusterState::new("t", 8).unwrap();
        for (n, name) in [(1, "a"), (2, "b"), (3, "c")] {
            s.apply(&Command::AddMember {
                node: n,
                info: MemberInfo {
                    name: name.into(),
                    ..MemberInfo::default()
                },
            });
        }
        // Where placement wants each shard, so that nothing is left to move.
        let all: BTreeSet<NodeId> = [1, 2, 3].into();
        for (shard, node) in starling_cluster::targets(8, &all).into_iter().enumerate() {
            s.apply(&Command::Assign {
                shard: shard as u32,
                node: node.unwrap(),
            });
        }
        s
    }

    /// The first two members back after a whole-cluster stop leave the third one's shards
    /// alone while it has not been seen, and take them once gossip has seen it die.
    #[test]
    fn the_shards_of_a_member_not_seen_yet_wait_for_it() {
        let st = state();
        let live: BTreeSet<NodeId> = [1, 2].into();
        let away = not_seen(&st, &live, &[]);
        assert_eq!(away, [3].into());
        let mut counted = live.clone();
        counted.extend(&away);
        let commands: Vec<Command> = controller::next_commands(&st, &counted, 16)
            .into_iter()
            .filter(|c| !needs(c, &st, &away))
            .collect();
        assert!(commands.is_empty(), "{commands:?}");
        // Without the wait, R = 1 starts its shards afresh elsewhere.
        let of_c: Vec<u32> = st
            .table
            .iter()
            .filter(|(_, e)| e.owner == Some(3))
            .map(|(shard, _)| shard)
            .collect();
        assert!(!of_c.is_empty());
        let taken = controller::next_commands(&st, &live, 16);
        for shard in of_c {
            assert!(
                taken
                    .iter()
                    .any(|c| matches!(c, Command::Assign { shard: s, .. } if *s == shard)),
                "{taken:?}"
            );
        }
        // Seen dead: no longer waited for.
        assert!(not_seen(&st, &live, &[3]).is_empty());
        // Marked leaving (every member was stopped with SIGTERM at once): its shards would
        // move to the others, but only it can hand their state over.
        let mut st = st;
        st.apply(&Command::SetLeaving { node: 3 });
        let moves: Vec<Command> = controller::next_commands(&st, &counted, 16);
        let from_c = |c: &Command| matches!(c, Command::BeginMove { shard, .. } if st.table.owner(*shard) == Some(3));
        assert!(moves.iter().any(from_c), "{moves:?}");
        assert!(
            moves
                .iter()
                .filter(|c| from_c(c))
                .all(|c| needs(c, &st, &away)),
            "{moves:?}"
        );
    }
}
