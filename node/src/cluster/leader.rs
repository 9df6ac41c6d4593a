//! On the Raft leader: turning what gossip reports into agreed members and proposing the
//! controller's decisions. Its own file because only the leader runs it, apart from the
//! state every node follows (`follow`).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use starling_cluster::membership::{Member, MemberState};
use starling_cluster::{controller, Command, MemberInfo, NodeId};

use super::{PeerAddr, Shared, MOVES_IN_FLIGHT};

/// On the Raft leader: adds the members gossip reports, marks leaving ones, and proposes
/// what the controller decides, until the table is at its target.
pub(super) async fn leader_loop(s: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    // This node's own record (a leader restarted at new addresses): retried every round
    // until it commits, with the warnings spaced out.
    let mut own_record = Backoff::default();
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
        let live: BTreeSet<NodeId> = members.iter().map(|m| m.node_id).collect();
        let state = s.current();
        for command in controller::next_commands(&state, &live, MOVES_IN_FLIGHT) {
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

/// Spaces out the warnings of a proposal retried every round: the first failure is logged
/// at once, then only after 1, 2, 4 … 60 s of further failures; a success after failures
/// is logged at info.
#[derive(Default)]
struct Backoff {
    failures: u32,
    next_warning: Option<std::time::Instant>,
}

impl Backoff {
    fn failed(&mut self, what: &str, e: &crate::EngineError) {
        self.failures += 1;
        let now = std::time::Instant::now();
        if self.next_warning.is_none_or(|t| now >= t) {
            tracing::warn!(failures = self.failures, error = %e, "{what}; retrying");
            let wait = Duration::from_secs(1 << self.failures.min(6)).min(Duration::from_secs(60));
            self.next_warning = Some(now + wait);
        }
    }

    fn succeeded(&mut self, what: &str) {
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
