//! The Raft shell: replicates [`ClusterState`] among up to five voters (ARCHITECTURE §5).
//!
//! Placement must be decided once and followed everywhere, so the shard table and the rest
//! of [`ClusterState`] change only through commands committed by Raft (openraft 0.9). This
//! module is the thin layer around it:
//!
//! - [`store`] keeps the log, the vote and the snapshot on disk so that a restarted node is
//!   the same Raft member;
//! - [`network`] turns Raft RPCs into bytes for a [`RaftTransport`] the engine provides over
//!   its QUIC endpoint, and back in [`ClusterRaft::handle_rpc`];
//! - [`ClusterRaft`] is what the engine uses: start, bootstrap, add and remove nodes,
//!   propose commands from any node, and follow the committed state through a watch channel.
//!
//! Who becomes a voter: the first node bootstraps a one-voter cluster; every node the leader
//! adds becomes a learner, and is promoted to voter once caught up while there are fewer
//! than [`MAX_VOTERS`]. A leaving voter is replaced by a caught-up learner if there is one.

mod error;
mod network;
mod settings;
mod store;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, InitializeError, RaftError as OrRaftError};
use openraft::storage::Adaptor;
use openraft::{BasicNode, ChangeMembers, Config, Raft, SnapshotPolicy, TokioRuntime};
use tokio::sync::watch;
use tokio::time::Instant;

pub use error::{ProposeError, RaftError};
pub use network::{ForwardError, RaftRpc, RaftRpcReply, RaftTransport, RpcRequest, TransportError};
pub use settings::RaftSettings;
pub use store::StoreError;

use crate::core::state::{ClusterState, Command, MemberInfo, Outcome};
use crate::core::table::NodeId;
use network::{encode, ErasedTransport, NetworkFactory};
use store::DiskStore;

openraft::declare_raft_types!(
    /// openraft's type parameters for Starling: the log carries [`Command`]s, applying one
    /// yields an [`Outcome`], nodes are named by [`NodeId`] and reached at the QUIC address
    /// kept in a [`BasicNode`].
    pub TypeConfig:
        D = Command,
        R = Outcome,
        NodeId = NodeId,
        Node = BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = TokioRuntime,
);

/// The most voters the cluster keeps: five tolerate two failures; more would only slow
/// every commit down. Further nodes follow the log as learners.
pub const MAX_VOTERS: usize = 5;

/// Leader contacts a follower keeps for its lease: one comes every [`LEASE_POLL`], so this
/// covers well over a lease's worth.
const CONTACTS_KEPT: usize = 32;
/// How often a follower asks its leader for a lease.
const LEASE_POLL: Duration = Duration::from_millis(200);

type Contacts = std::sync::Mutex<std::collections::VecDeque<(std::time::Instant, u64)>>;

/// On a follower, for as long as its `ClusterRaft` lives: asks the leader every
/// [`LEASE_POLL`] how recently a majority acknowledged it, and records a contact at (when
/// this node *asked* − that age), with the leader's last log index. Counted from the
/// asking, an answer that waited in a queue (a paused process, a slow network) can only
/// shorten the lease; counted from its arrival, as a heartbeat's would be, a process
/// resuming from a pause would take a heartbeat queued before the pause for a fresh one.
async fn keep_lease(
    raft: Raft<TypeConfig>,
    transport: Arc<dyn ErasedTransport>,
    (me, cluster_id): (NodeId, String),
    contacts: std::sync::Weak<Contacts>,
) {
    loop {
        tokio::time::sleep(LEASE_POLL).await;
        if contacts.strong_count() == 0 {
            return;
        }
        let m = raft.metrics().borrow().clone();
        if m.running_state.is_err() {
            return;
        }
        let Some(leader) = m.current_leader.filter(|l| *l != me) else {
            continue;
        };
        let Some(addr) = m
            .membership_config
            .membership()
            .get_node(&leader)
            .map(|n| n.addr.clone())
        else {
            continue;
        };
        let asked = std::time::Instant::now();
        let request = encode(&RpcRequest {
            cluster_id: cluster_id.clone(),
            from: me,
            to: leader,
            rpc: RaftRpc::Lease,
        });
        let call = transport.call_boxed(leader, &addr, request);
        let Ok(Ok(reply)) = tokio::time::timeout(LEASE_POLL * 5, call).await else {
            continue;
        };
        let Ok(RaftRpcReply::Lease {
            age_ms: Some(age),
            last_index,
        }) = serde_json::from_slice(&reply)
        else {
            continue;
        };
        let (Some(at), Some(contacts)) = (
            asked.checked_sub(Duration::from_millis(age)),
            contacts.upgrade(),
        ) else {
            continue;
        };
        if let Ok(mut t) = contacts.lock() {
            if t.back().is_none_or(|(old, _)| at >= *old) {
                t.push_back((at, last_index));
                if t.len() > CONTACTS_KEPT {
                    t.pop_front();
                }
            }
        };
    }
}

/// The role a node got from [`ClusterRaft::add_node`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeRole {
    /// It votes and can become leader.
    Voter,
    /// It follows the log but does not vote (enough voters already, or not caught up yet).
    Learner,
}

/// One node's Raft member: the handle the engine holds. Cheap to clone (all clones drive
/// the same Raft core).
#[derive(Clone)]
pub struct ClusterRaft {
    id: NodeId,
    cluster_id: String,
    raft: Raft<TypeConfig>,
    transport: Arc<dyn ErasedTransport>,
    state: watch::Receiver<Arc<ClusterState>>,
    settings: RaftSettings,
    /// When this node's leader was recently acknowledged by a majority, as its answers to
    /// this node's lease requests say ([`keep_lease`]), each with the leader's last log
    /// index then, newest last: what a follower's lease runs on.
    last_leader_contact:
        Arc<std::sync::Mutex<std::collections::VecDeque<(std::time::Instant, u64)>>>,
}

fn stopped<E: std::fmt::Display>(e: E) -> RaftError {
    RaftError::Stopped(e.to_string())
}

impl ClusterRaft {
    /// Starts the Raft member `node_id` with its storage under `<dir>/raft/` (`dir` is the
    /// node's data directory). A directory used before is reloaded: same log, vote and
    /// state. It must have been created for the same cluster id and shard count, otherwise
    /// this fails naming both. The node does nothing on its own until it is either
    /// [bootstrapped](Self::initialize) or added by the leader.
    pub async fn start<T: RaftTransport>(
        node_id: NodeId,
        dir: &Path,
        cluster_id: &str,
        shards: u32,
        transport: Arc<T>,
        settings: RaftSettings,
    ) -> Result<ClusterRaft, RaftError> {
        let ms = |d: Duration| d.as_millis().try_into().unwrap_or(u64::MAX);
        let config = Config {
            cluster_name: cluster_id.to_string(),
            heartbeat_interval: ms(settings.heartbeat),
            election_timeout_min: ms(settings.election_timeout_min),
            election_timeout_max: ms(settings.election_timeout_max),
            install_snapshot_timeout: ms(settings.election_timeout_max).max(1000),
            max_payload_entries: 64,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(settings.snapshot_every.max(1)),
            max_in_snapshot_log_to_keep: settings.keep_after_snapshot,
            // Snapshot chunks travel as JSON arrays of numbers (up to ~4 bytes per byte).
            snapshot_max_chunk_size: (settings.max_rpc_bytes as u64 / 8).max(1024),
            ..Config::default()
        }
        .validate()
        .map_err(|e| RaftError::Settings(e.to_string()))?;
        let (store, state) = DiskStore::open(&dir.join("raft"), node_id, cluster_id, shards)?;
        let (log_store, state_machine) = Adaptor::new(store);
        let transport: Arc<dyn ErasedTransport> = transport;
        let network = NetworkFactory {
            transport: transport.clone(),
            cluster_id: Arc::from(cluster_id),
            me: node_id,
            max_bytes: settings.max_rpc_bytes,
        };
        let raft = Raft::new(node_id, Arc::new(config), network, log_store, state_machine)
            .await
            .map_err(stopped)?;
        tracing::info!(node = node_id, cluster = cluster_id, "Raft member started");
        let me = ClusterRaft {
            id: node_id,
            cluster_id: cluster_id.to_string(),
            raft,
            transport,
            state,
            settings,
            // No lease before a leader has been heard: a node restarting on a stale table
            // must not take writes for shards that moved while it was away.
            last_leader_contact: Arc::new(std::sync::Mutex::new(Default::default())),
        };
        tokio::spawn(keep_lease(
            me.raft.clone(),
            Arc::clone(&me.transport),
            (node_id, me.cluster_id.clone()),
            Arc::downgrade(&me.last_leader_contact),
        ));
        Ok(me)
    }

    /// Bootstraps a one-voter cluster made of this node at `peer_addr`, unless this node's
    /// Raft was ever initialised (or joined) before. Returns whether it bootstrapped now.
    ///
    /// Needs no other node: a restarted member of a larger cluster must be able to call it
    /// while its peers are still down (after a power loss every node comes back at its own
    /// pace), so it never waits for a commit. Recording the node as a member is left to the
    /// caller ([`ClusterRaft::initialize`], or the engine's leader loop).
    pub async fn bootstrap(&self, peer_addr: &str) -> Result<bool, RaftError> {
        if self.raft.is_initialized().await.map_err(stopped)? {
            return Ok(false);
        }
        let nodes = BTreeMap::from([(self.id, BasicNode::new(peer_addr))]);
        match self.raft.initialize(nodes).await {
            Ok(()) => {
                tracing::info!(node = self.id, "bootstrapped a new Raft cluster");
                Ok(true)
            }
            Err(OrRaftError::APIError(InitializeError::NotAllowed(_))) => Ok(false),
            Err(e) => Err(RaftError::Membership(e.to_string())),
        }
    }

    /// Whether this node's Raft was initialised or joined before (its log holds a
    /// membership): a restarted member rather than a node that has never been part of a
    /// cluster.
    pub async fn was_initialized(&self) -> Result<bool, RaftError> {
        self.raft.is_initialized().await.map_err(stopped)
    }

    /// [Bootstraps](Self::bootstrap), then records the node as a member unless the
    /// committed state already has it with these addresses. Idempotent. The record is a
    /// proposal: on a restarted member of a larger cluster it waits for a majority of the
    /// voters and fails after `RaftSettings::propose_timeout` if they are not back, so a
    /// node that must come back at its peers' pace bootstraps alone and leaves the record
    /// to a loop that retries.
    pub async fn initialize(&self, self_info: MemberInfo) -> Result<(), RaftError> {
        self.bootstrap(&self_info.peer_addr).await?;
        if !self.has_record(&self_info) {
            self.propose(Command::AddMember {
                node: self.id,
                info: self_info,
            })
            .await?;
        }
        Ok(())
    }

    /// Whether the committed state records this node with `info`'s name and addresses.
    pub fn has_record(&self, info: &MemberInfo) -> bool {
        self.state.borrow().members.get(&self.id).is_some_and(|m| {
            m.name == info.name && m.peer_addr == info.peer_addr && m.http_addr == info.http_addr
        })
    }

    /// Adds `node` (reached at `info.peer_addr`) as a learner, records it as a member, and
    /// promotes it to voter once it has caught up if there are fewer than [`MAX_VOTERS`].
    /// Call on the leader (the engine does when gossip shows a new member). Calling it again
    /// for a node that is already a learner retries the promotion; for a node that came back
    /// at another QUIC address it updates the address Raft uses.
    pub async fn add_node(&self, node: NodeId, info: MemberInfo) -> Result<NodeRole, RaftError> {
        self.ensure_leader()?;
        let known_addr = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&node)
            .map(|n| n.addr.clone());
        if known_addr.as_ref().is_some_and(|a| *a != info.peer_addr) {
            // The node came back at another address: point Raft at the new one.
            let nodes = BTreeMap::from([(node, BasicNode::new(&info.peer_addr))]);
            self.raft
                .change_membership(ChangeMembers::SetNodes(nodes), true)
                .await
                .map_err(|e| self.write_error(e))?;
            tracing::info!(node, addr = %info.peer_addr, "updated a Raft member's address");
        }
        if known_addr.is_none() {
            let added = self
                .raft
                .add_learner(node, BasicNode::new(&info.peer_addr), false)
                .await
                .map_err(|e| self.write_error(e))?;
            tracing::info!(node, log = %added.log_id, "added a Raft learner");
        }
        self.propose(Command::AddMember { node, info }).await?;
        if self.voters().len() < MAX_VOTERS && !self.wait_caught_up(node).await {
            tracing::warn!(
                node,
                "the learner did not catch up in time; it stays a learner for now"
            );
            return Ok(NodeRole::Learner);
        }
        self.promote(node).await
    }

    /// Makes a caught-up learner a voter while there are fewer than [`MAX_VOTERS`]; does not
    /// wait for one that lags. The leader calls this on every round for members left as
    /// learners: with too few voters, the side of a partition that holds most of the nodes
    /// may not hold most of the votes, and the wrong side would keep its leases.
    pub async fn promote(&self, node: NodeId) -> Result<NodeRole, RaftError> {
        self.ensure_leader()?;
        let voters = self.voters();
        if voters.contains(&node) {
            return Ok(NodeRole::Voter);
        }
        if voters.len() >= MAX_VOTERS
            || !self.raft_nodes().contains(&node)
            || !self.is_caught_up(node)
        {
            return Ok(NodeRole::Learner);
        }
        self.raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([node])), false)
            .await
            .map_err(|e| self.write_error(e))?;
        tracing::info!(node, "promoted a Raft learner to voter");
        Ok(NodeRole::Voter)
    }

    /// Takes `node` out of the Raft membership. A voter is replaced by a caught-up learner
    /// if there is one, so that the number of voters holds up. Call on the leader. This does
    /// not remove the node from [`ClusterState::members`]: that waits until its shards have
    /// moved away (`Command::RemoveMember`).
    pub async fn remove_node(&self, node: NodeId) -> Result<(), RaftError> {
        self.ensure_leader()?;
        let voters = self.voters();
        if voters.contains(&node) {
            let mut next: BTreeSet<NodeId> =
                voters.iter().copied().filter(|v| *v != node).collect();
            if next.is_empty() {
                return Err(RaftError::LastVoter(node));
            }
            let learners: Vec<NodeId> = self
                .raft_nodes()
                .into_iter()
                .filter(|n| !voters.contains(n))
                .collect();
            // The learner furthest along; it gets a bounded wait to catch up completely.
            let candidate = learners.into_iter().max_by_key(|l| self.matched(*l));
            if let Some(l) = candidate {
                if self.wait_caught_up(l).await {
                    tracing::info!(leaving = node, replacement = l, "promoting a learner");
                    next.insert(l);
                } else {
                    tracing::warn!(
                        leaving = node,
                        learner = l,
                        "no caught-up learner to promote"
                    );
                }
            }
            self.raft
                .change_membership(ChangeMembers::ReplaceAllVoters(next), false)
                .await
                .map_err(|e| self.write_error(e))?;
        } else if self.raft_nodes().contains(&node) {
            self.raft
                .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([node])), false)
                .await
                .map_err(|e| self.write_error(e))?;
        }
        tracing::info!(node, "removed from the Raft membership");
        Ok(())
    }

    /// Commits `command` and returns what applying it did. Works on any node: a follower
    /// forwards the proposal to the leader (`RaftRpc::ClientWrite`). Waits up to
    /// `RaftSettings::propose_timeout` for a leader to be known and reachable.
    pub async fn propose(&self, command: Command) -> Result<Outcome, ProposeError> {
        let timeout = self.settings.propose_timeout;
        let deadline = Instant::now() + timeout;
        let mut metrics = self.raft.metrics();
        loop {
            let (leader, addr) = {
                let m = metrics.borrow_and_update();
                let leader = m.current_leader;
                let addr = leader.and_then(|l| {
                    m.membership_config
                        .membership()
                        .get_node(&l)
                        .map(|n| n.addr.clone())
                });
                (leader, addr)
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            match (leader, addr) {
                (Some(l), _) if l == self.id => {
                    match tokio::time::timeout(remaining, self.raft.client_write(command.clone()))
                        .await
                    {
                        Ok(Ok(resp)) => return Ok(resp.data),
                        Ok(Err(OrRaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {}
                        Ok(Err(OrRaftError::Fatal(f))) => {
                            return Err(ProposeError::Stopped(f.to_string()))
                        }
                        Ok(Err(e)) => {
                            return Err(ProposeError::Uncertain {
                                leader,
                                reason: e.to_string(),
                            })
                        }
                        Err(_) => {
                            return Err(ProposeError::Uncertain {
                                leader,
                                reason: format!("not committed within {timeout:?}"),
                            })
                        }
                    }
                }
                (Some(l), Some(addr)) => {
                    if let Some(outcome) = self.forward(l, &addr, &command, remaining).await? {
                        return Ok(outcome);
                    }
                }
                _ => {}
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(ProposeError::NoLeader(timeout));
            }
            // Wait for news of a leader, but poll too: a leader that is known but unreachable
            // produces no metrics change.
            let pause = remaining.min(Duration::from_millis(50));
            tokio::select! {
                changed = metrics.changed() => if changed.is_err() {
                    return Err(ProposeError::Stopped("the Raft core is gone".into()));
                },
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Sends a proposal to the leader; `None` means "not delivered or not the leader, retry".
    async fn forward(
        &self,
        leader: NodeId,
        addr: &str,
        command: &Command,
        remaining: Duration,
    ) -> Result<Option<Outcome>, ProposeError> {
        let request = encode(&RpcRequest {
            cluster_id: self.cluster_id.clone(),
            from: self.id,
            to: leader,
            rpc: RaftRpc::ClientWrite(command.clone()),
        });
        let uncertain = |reason: String| ProposeError::Uncertain {
            leader: Some(leader),
            reason,
        };
        let call = self.transport.call_boxed(leader, addr, request);
        let reply = match tokio::time::timeout(remaining, call).await {
            Err(_) => return Err(uncertain(format!("no reply within {remaining:?}"))),
            Ok(Err(TransportError::Unreachable(why))) => {
                tracing::debug!(leader, why, "the leader is unreachable; retrying");
                return Ok(None);
            }
            Ok(Err(TransportError::Failed(why))) => return Err(uncertain(why)),
            Ok(Ok(reply)) => reply,
        };
        match serde_json::from_slice::<RaftRpcReply>(&reply) {
            Ok(RaftRpcReply::ClientWrite(Ok(outcome))) => Ok(Some(outcome)),
            Ok(RaftRpcReply::ClientWrite(Err(ForwardError::NotLeader { .. }))) => Ok(None),
            Ok(RaftRpcReply::ClientWrite(Err(ForwardError::Failed(why)))) => Err(uncertain(why)),
            Ok(RaftRpcReply::Refused(why)) => Err(ProposeError::Refused(why)),
            Ok(_) => Err(uncertain(
                "the leader answered with the wrong kind of reply".into(),
            )),
            Err(e) => Err(uncertain(format!("unreadable reply: {e}"))),
        }
    }

    /// Answers one request from a peer (what its [`RaftTransport`] delivered) with the bytes
    /// to send back. Never panics: malformed, oversized or misaddressed requests get a
    /// [`RaftRpcReply::Refused`] reply.
    pub async fn handle_rpc(&self, request: &[u8]) -> Vec<u8> {
        encode(&self.answer(request).await)
    }

    async fn answer(&self, request: &[u8]) -> RaftRpcReply {
        if request.len() > self.settings.max_rpc_bytes {
            return RaftRpcReply::Refused(format!(
                "a request of {} bytes exceeds the limit of {}",
                request.len(),
                self.settings.max_rpc_bytes
            ));
        }
        let request: RpcRequest = match serde_json::from_slice(request) {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "refusing a malformed Raft request");
                return RaftRpcReply::Refused(format!("malformed request: {e}"));
            }
        };
        if request.cluster_id != self.cluster_id {
            return RaftRpcReply::Refused(format!(
                "this node belongs to cluster `{}`, not `{}`",
                self.cluster_id, request.cluster_id
            ));
        }
        if request.to != self.id {
            return RaftRpcReply::Refused(format!(
                "this is node {}, not node {}",
                self.id, request.to
            ));
        }
        match request.rpc {
            RaftRpc::AppendEntries(rpc) => {
                RaftRpcReply::AppendEntries(self.raft.append_entries(rpc).await)
            }
            RaftRpc::Lease => {
                let m = self.raft.metrics().borrow().clone();
                RaftRpcReply::Lease {
                    age_ms: m
                        .millis_since_quorum_ack
                        .filter(|_| m.current_leader == Some(self.id)),
                    last_index: m.last_log_index.unwrap_or(0),
                }
            }
            RaftRpc::Vote(rpc) => RaftRpcReply::Vote(self.raft.vote(rpc).await),
            RaftRpc::InstallSnapshot(rpc) => {
                RaftRpcReply::InstallSnapshot(self.raft.install_snapshot(rpc).await)
            }
            RaftRpc::ClientWrite(command) => {
                let timeout = self.settings.propose_timeout;
                let result =
                    match tokio::time::timeout(timeout, self.raft.client_write(command)).await {
                        Ok(Ok(resp)) => Ok(resp.data),
                        Ok(Err(OrRaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                            Err(ForwardError::NotLeader {
                                leader: f.leader_id,
                            })
                        }
                        Ok(Err(e)) => Err(ForwardError::Failed(e.to_string())),
                        Err(_) => Err(ForwardError::Failed(format!(
                            "not committed within {timeout:?}"
                        ))),
                    };
                RaftRpcReply::ClientWrite(result)
            }
        }
    }

    /// The committed cluster state, updated each time entries are applied. Every node
    /// routes and fences by this, never by its own view of gossip.
    pub fn state(&self) -> watch::Receiver<Arc<ClusterState>> {
        self.state.clone()
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The leader as this node last heard, if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    /// True if this node believes it leads: the engine runs placement decisions only here.
    pub fn is_leader(&self) -> bool {
        self.leader() == Some(self.id)
    }

    /// Whether this node may still act on its ownership (ARCHITECTURE §5, fencing): a leader
    /// while a majority of voters acknowledged it within `lease`, a follower while its leader
    /// says a majority acknowledged it within `lease` (measured from when this node asked)
    /// and this node has applied the leader's log as it was then, the only voter always. A node cut off
    /// from the majority therefore stops accepting writes once `lease` has passed, which must
    /// be shorter than the time the majority needs to declare it dead and move its shards.
    pub fn lease_valid(&self, lease: Duration) -> bool {
        // Read in place: every write checks this, and a clone of the metrics copies the
        // membership.
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let mut voters = m.membership_config.membership().voter_ids();
        if voters.next() == Some(self.id) && voters.next().is_none() {
            return true;
        }
        if m.current_leader == Some(self.id) {
            return m
                .millis_since_quorum_ack
                .is_some_and(|ms| u128::from(ms) < lease.as_millis());
        }
        // Fresh contact is not enough: this node's applied state must also have caught up
        // with the leader's log as it was then. A node resuming from a pause learns of its
        // leader before it applies the entries that gave its shards away, and would
        // otherwise take writes for them on its stale table for that moment. Any recent
        // contact whose index is applied will do, so that applying the newest entries a
        // moment after they arrive does not lapse the lease of a node that keeps up.
        let applied = m.last_applied.map_or(0, |l| l.index);
        self.last_leader_contact
            .lock()
            .map(|t| {
                t.iter()
                    .any(|(t, commit)| t.elapsed() < lease && applied >= *commit)
            })
            .unwrap_or(false)
    }

    /// The current voters (by the latest membership this node knows).
    pub fn voters(&self) -> BTreeSet<NodeId> {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .collect()
    }

    /// Every node in the Raft membership, voters and learners.
    pub fn raft_nodes(&self) -> BTreeSet<NodeId> {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .nodes()
            .map(|(id, _)| *id)
            .collect()
    }

    /// Stops the Raft core: no more votes, replication or proposals from this handle. The
    /// storage stays on disk for a restart.
    pub async fn shutdown(&self) -> Result<(), RaftError> {
        self.raft.shutdown().await.map_err(stopped)?;
        tracing::info!(node = self.id, "Raft member stopped");
        Ok(())
    }

    fn ensure_leader(&self) -> Result<(), RaftError> {
        let leader = self.leader();
        if leader == Some(self.id) {
            Ok(())
        } else {
            Err(RaftError::NotLeader {
                me: self.id,
                leader,
            })
        }
    }

    fn write_error(
        &self,
        e: OrRaftError<NodeId, ClientWriteError<NodeId, BasicNode>>,
    ) -> RaftError {
        match e {
            OrRaftError::APIError(ClientWriteError::ForwardToLeader(f)) => RaftError::NotLeader {
                me: self.id,
                leader: f.leader_id,
            },
            OrRaftError::APIError(e) => RaftError::Membership(e.to_string()),
            OrRaftError::Fatal(f) => stopped(f),
        }
    }

    /// The last log index the leader knows `node` holds.
    fn matched(&self, node: NodeId) -> Option<u64> {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.replication
            .as_ref()
            .and_then(|r| r.get(&node).copied().flatten())
            .map(|l| l.index)
    }

    /// True if the leader's replication to `node` has reached its last log entry.
    fn is_caught_up(&self, node: NodeId) -> bool {
        let last = self.raft.metrics().borrow().last_log_index;
        let matched = self.matched(node);
        matched.is_some() && matched >= last
    }

    async fn wait_caught_up(&self, node: NodeId) -> bool {
        let deadline = Instant::now() + self.settings.catch_up_timeout;
        while Instant::now() < deadline {
            if self.is_caught_up(node) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }
}
