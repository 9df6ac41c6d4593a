//! The cluster shell of a node: gossip membership, the Raft-agreed shard table, and the
//! cluster-wide form of the public operations, which the node's [`Router`] calls and which
//! send work where the table says (ARCHITECTURE §5).
//!
//! [`Router`]: crate::router::Router
//!
//! The decisions live in `starling_cluster` (placement, controller, fencing); this module only
//! wires them to the engine, to the node's QUIC endpoint and to tokio tasks:
//! - every node follows the committed [`ClusterState`]: it installs the catalog's topics and
//!   dataflows, serves the shards it owns, and completes hand-offs to it;
//! - the Raft leader adds members gossip reports and proposes what the controller decides;
//! - a publish is split by shard: this node's part goes to its engine, the rest is forwarded
//!   to the owners with their epochs, and events of a moving shard wait for the move.

mod config;
mod follow;
mod handoff;
mod leader;
mod merge;
mod operations;
pub mod peer_client;
pub(crate) mod peer_door;
pub mod peer_link;
mod peer_ops;
mod peers;
mod placement;
mod rejoin;
mod released;
mod repartition;
mod replication;
mod scatter;
mod status;
mod transport;

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use starling_cluster::membership::{MemberState, Membership, MembershipConfig};
use starling_cluster::raft::{ClusterRaft, RaftSettings};
use starling_cluster::{fence, shard_of_hash, ClusterState, Command, Epoch, MemberInfo, NodeId};
use starling_operators::{Event, Value};

pub use config::ClusterConfig;
pub use peer_client::PeerClient;
pub use peer_link::{MemoryNet, PeerNet};
pub use peer_ops::FetchView;
pub use peers::PeerAddr;

use crate::quic::wire;
use crate::runtime::InternalSink;
use crate::{Engine, EngineError};

/// How long a node keeps accepting writes for its shards without hearing from the Raft
/// majority. Must stay well under the failure detection time (gossip marks a silent node
/// dead after about 2–3 s with 200 ms gossip, and only then does the leader move its
/// shards), and well over the Raft heartbeat (100 ms) so a busy node does not refuse writes
/// for a late heartbeat.
const LEASE: Duration = Duration::from_millis(1500);
/// Hand-offs in flight at once, cluster-wide: more settle a join sooner, fewer hold fewer
/// publishes back (a batch touching any moving shard waits for it).
const MOVES_IN_FLIGHT: usize = 16;

/// Why a node could not join or run its cluster.
#[derive(Debug, Error)]
pub enum ClusterError {
    #[error("{0}")]
    Membership(#[from] starling_cluster::membership::MembershipError),
    #[error("Raft: {0}")]
    Raft(#[from] starling_cluster::raft::RaftError),
    #[error("node id file {path}: {message}")]
    NodeId { path: String, message: String },
}

/// The cluster side of a running node.
pub struct Cluster {
    shared: Arc<Shared>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

pub(crate) struct Shared {
    me: NodeId,
    name: String,
    /// What this node tells the cluster about itself (name, peer and HTTP addresses): what
    /// the committed state must record before the node is ready.
    info: MemberInfo,
    cluster_id: String,
    shards: u32,
    engine: Weak<Engine>,
    membership: Membership,
    raft: ClusterRaft,
    state: watch::Receiver<Arc<ClusterState>>,
    peers: Arc<peers::Peers>,
    /// When each shard moving to this node was first seen moving.
    moving_in: Mutex<HashMap<u32, Instant>>,
    started: Instant,
    repartition: repartition::Repartition,
    handoffs: handoff::Handoffs,
    /// Members gossip reports dead (refreshed every 100 ms). A member that crashed stays in
    /// the agreed state until it is removed, but must not hold watermarks back or be asked
    /// for its results. A member gossip has not reported yet counts as alive: assuming a
    /// producer gone too early would close windows before its records arrive.
    dead: Arc<Mutex<BTreeSet<NodeId>>>,
    replication: replication::Replication,
    /// Set once this process starts to leave the cluster ([`Cluster::leave`]): from then on
    /// a leaving mark in the agreed state is its own, not one left from before a restart.
    leaving: std::sync::atomic::AtomicBool,
    /// R from this node's configuration, proposed by the first leader that finds it unset.
    replication_factor: u32,
    /// The next publish batch number of this node (see `Request::Forward`'s `origin`);
    /// starts at the clock in microseconds so a restarted node does not reuse numbers.
    batches: std::sync::atomic::AtomicU64,
}

/// What the node tells the cluster about itself.
pub struct Endpoints {
    pub http: SocketAddr,
    pub quic: SocketAddr,
    /// The peer listener: what other nodes of the cluster connect to.
    pub peer: SocketAddr,
    /// The network the peer listener is on, and peer links go over.
    pub net: PeerNet,
    pub fingerprint: String,
}

impl Cluster {
    /// Where this node's gossip listens (what others give as `--seed`).
    pub fn gossip_addr(&self) -> SocketAddr {
        self.shared.membership.gossip_addr()
    }

    /// The state peers' requests and routed front-door calls act on (the peer door and the
    /// node's router call it directly).
    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }

    /// Joins (or creates) the cluster: gossip first, then Raft; a node started with seeds
    /// that only finds another cluster is refused here. Then takes the records the engine's
    /// dataflows write to topics, to route them to the owners of their keys.
    pub async fn start(
        config: &ClusterConfig,
        data_dir: &Path,
        engine: &Arc<Engine>,
        endpoints: Endpoints,
    ) -> Result<Cluster, ClusterError> {
        let me = node_id(data_dir)?;
        let name = config
            .node_name
            .clone()
            .unwrap_or_else(|| format!("n{:04x}", me & 0xffff));
        let peers = Arc::new(peers::Peers::new(
            endpoints.net.clone(),
            Some(endpoints.peer),
        ));
        let transport = Arc::new(transport::QuicRaftTransport {
            peers: Arc::clone(&peers),
        });
        // Raft first: whether this node was a member before decides what its seeds must do.
        let raft = ClusterRaft::start(
            me,
            data_dir,
            &config.cluster_id,
            config.shards,
            transport,
            RaftSettings {
                // Under the QUIC frame limit (16 MiB), or a large snapshot could never be sent.
                max_rpc_bytes: wire::MAX_FRAME / 2,
                ..RaftSettings::default()
            },
        )
        .await?;
        let fail = |raft: ClusterRaft, e: ClusterError| async move {
            let _ = raft.shutdown().await;
            Err(e)
        };
        let restarted = match raft.was_initialized().await {
            Ok(r) => r,
            Err(e) => return fail(raft, e.into()).await,
        };
        let mut mc = MembershipConfig::new(
            me,
            name.clone(),
            config.cluster_id.clone(),
            config.shards,
            config.gossip_addr,
            endpoints.peer,
            endpoints.http,
        );
        mc.seeds = config.seeds.clone();
        mc.peer_fingerprint = endpoints.fingerprint.clone();
        mc.gossip_interval = Duration::from_millis(200);
        let membership = match Membership::start(mc).await {
            Ok(m) => m,
            Err(e) => return fail(raft, e.into()).await,
        };
        if !config.seeds.is_empty() && !restarted {
            // A new node must find its cluster (and not another one) before it joins.
            if let Err(e) = membership.check_seeds(Duration::from_secs(10)).await {
                let _ = membership.shutdown().await;
                return fail(raft, e.into()).await;
            }
        }
        let info = MemberInfo {
            name: name.clone(),
            peer_addr: endpoints.peer.to_string(),
            http_addr: endpoints.http.to_string(),
            leaving: false,
        };
        if config.seeds.is_empty() {
            // Local only: a restarted member must not wait here for peers that may come back
            // much later. Its record (new addresses) is proposed by the leader loop, which
            // retries until a majority is back.
            match raft.bootstrap(&info.peer_addr).await {
                // A new one-voter cluster commits on its own: record the node before the
                // start returns, so that it owns its shards at once.
                Ok(true) => {
                    if let Err(e) = raft.initialize(info.clone()).await {
                        tracing::warn!(error = %e, "could not record this node as a member yet; the leader loop retries");
                    }
                }
                Ok(false) => {}
                Err(e) => {
                    let _ = membership.shutdown().await;
                    return fail(raft, e.into()).await;
                }
            }
        }
        let state = raft.state();
        let shared = Arc::new(Shared {
            me,
            name,
            info,
            cluster_id: config.cluster_id.clone(),
            shards: config.shards,
            engine: Arc::downgrade(engine),
            membership,
            raft,
            state,
            peers,
            moving_in: Mutex::new(HashMap::new()),
            started: Instant::now(),
            repartition: repartition::Repartition::default(),
            handoffs: handoff::Handoffs::default(),
            dead: Arc::new(Mutex::new(BTreeSet::new())),
            replication: replication::Replication::default(),
            leaving: std::sync::atomic::AtomicBool::new(false),
            replication_factor: config.replication,
            batches: std::sync::atomic::AtomicU64::new(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_micros() as u64),
            ),
        });
        engine
            .set_internal_sink(Arc::clone(&shared) as Arc<dyn InternalSink>)
            .map_err(|e| ClusterError::NodeId {
                path: data_dir.display().to_string(),
                message: e.to_string(),
            })?;
        handoff::restore_released(&shared, data_dir).await;
        let tasks = vec![
            tokio::spawn(leader::leader_loop(Arc::clone(&shared))),
            tokio::spawn(follow::follow_loop(Arc::clone(&shared))),
            tokio::spawn(repartition::forward_loop(Arc::clone(&shared))),
            tokio::spawn(repartition::mark_loop(Arc::clone(&shared))),
            tokio::spawn(handoff::hand_off_loop(Arc::clone(&shared))),
            tokio::spawn(replication::replica_loop(Arc::clone(&shared))),
            tokio::spawn(status::ready_loop(Arc::clone(&shared))),
            tokio::spawn(rejoin::rejoin_loop(Arc::clone(&shared))),
        ];
        shared.membership.set_state(MemberState::Live).await;
        tracing::info!(node = %format!("{me:016x}"), cluster = %config.cluster_id, "joined the cluster");
        Ok(Cluster {
            shared,
            tasks: Mutex::new(tasks),
        })
    }

    /// One line for the node's start-up message.
    pub fn summary(&self) -> String {
        format!(
            "cluster={} node={} node_id={:016x} gossip={}",
            self.shared.cluster_id,
            self.shared.name,
            self.shared.me,
            self.shared.membership.gossip_addr()
        )
    }

    /// Whether this member can serve now; otherwise what it waits for (a leader, its own
    /// record, its lease, its shards), in words for `/readyz`.
    pub async fn readiness(&self) -> Result<(), String> {
        status::check(&self.shared).await.map_err(|r| r.to_string())
    }

    /// The cluster as `GET /v1/cluster` shows it.
    pub async fn describe(&self) -> serde_json::Value {
        status::cluster_json(&self.shared).await
    }

    /// What this node's copy of `shard`'s log is, and who owns the shard, for a log read
    /// that must say where the whole log is: `role` is `owner`, `replica` (in sync),
    /// `joining` (a replica still copying) or `none` (this node holds at most what it logged
    /// while it owned the shard). `None` for a shard the table does not have.
    pub fn log_holder(&self, shard: u32) -> Option<serde_json::Value> {
        let st = self.shared.current();
        let e = st.table.get(shard).ok()?;
        let me = self.shared.me;
        let role = if e.owner == Some(me) {
            "owner"
        } else if e.replicas.contains(&me) {
            "replica"
        } else if e.joining.contains(&me) {
            "joining"
        } else {
            "none"
        };
        let owner = e.owner.map(|o| {
            let info = st.members.get(&o);
            serde_json::json!({
                "id": format!("{o:016x}"),
                "name": info.map(|m| m.name.as_str()),
                "http": info.map(|m| m.http_addr.as_str()),
            })
        });
        Some(serde_json::json!({ "role": role, "owner": owner }))
    }

    /// Hands this node's shards to the others, then leaves gossip and Raft. Used by SIGTERM
    /// and `starling leave`; gives up after `timeout` (the shards then move when the node is
    /// seen gone).
    pub async fn leave(&self, timeout: Duration) -> Result<(), EngineError> {
        let s = &self.shared;
        s.leaving.store(true, std::sync::atomic::Ordering::Relaxed);
        s.membership.set_state(MemberState::Leaving).await;
        let deadline = Instant::now() + timeout;
        let mut state = s.state.clone();
        loop {
            let st = state.borrow_and_update().clone();
            let mine = st
                .table
                .iter()
                .filter(|(_, e)| e.owner == Some(s.me) || e.moving_to == Some(s.me))
                .count();
            // Members that stay: when every member is stopped at once (maintenance), each
            // sees the others leaving too, and waiting for its shards to move would only
            // hold its stop up until the timeout.
            let others = st
                .members
                .iter()
                .filter(|(n, m)| **n != s.me && !m.leaving)
                .count();
            // Owning nothing is not enough: state released to a receiver and records
            // diverted after a release must reach their owners first.
            let idle = s.handoffs.idle();
            if mine == 0 && idle {
                handoff::checkpoint_released(s).await;
                handoff::drain_outputs(s).await;
                return Ok(());
            }
            if others == 0 && idle {
                return Err(EngineError::BadRequest(format!(
                    "no other member stays in the cluster (it is the only one, or the others \
                     are leaving too): its {mine} shards have nowhere to go and stay here; \
                     start another node first, or stop this one"
                )));
            }
            if !st.members.get(&s.me).is_some_and(|m| m.leaving) {
                let _ = s.raft.propose(Command::SetLeaving { node: s.me }).await;
            }
            if Instant::now() > deadline {
                return Err(EngineError::Unavailable(if mine > 0 {
                    format!("{mine} shards were still owned by this node after {timeout:?}")
                } else {
                    format!("hand-off state was still being delivered after {timeout:?}")
                }));
            }
            let _ = tokio::time::timeout(Duration::from_millis(200), state.changed()).await;
        }
    }

    /// Stops the cluster tasks, gossip and Raft.
    pub async fn shutdown(&self) {
        if let Ok(tasks) = self.tasks.lock() {
            for t in tasks.iter() {
                t.abort();
            }
        }
        // Peers learn from gossip that this node is going; the gossip server itself stops
        // with the process.
        self.shared.membership.set_state(MemberState::Leaving).await;
        let _ = self.shared.raft.shutdown().await;
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
}

/// The node's id: drawn once when the data directory is created, then read back, so that a
/// restarted node is the same member.
fn node_id(data_dir: &Path) -> Result<NodeId, ClusterError> {
    let path = data_dir.join("node_id");
    let err = |message: String| ClusterError::NodeId {
        path: path.display().to_string(),
        message,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => u64::from_str_radix(text.trim(), 16)
            .map_err(|e| err(format!("not a hexadecimal node id: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0),
            );
            h.write_u32(std::process::id());
            let id = h.finish().max(1);
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, format!("{id:016x}\n"))
                .and_then(|()| std::fs::rename(&tmp, &path))
                .map_err(|e| err(e.to_string()))?;
            Ok(id)
        }
        Err(e) => Err(err(e.to_string())),
    }
}

impl Shared {
    fn engine(&self) -> Result<Arc<Engine>, EngineError> {
        self.engine.upgrade().ok_or(EngineError::ShuttingDown)
    }

    fn current(&self) -> Arc<ClusterState> {
        self.state.borrow().clone()
    }

    /// Agreed members that gossip does not report dead, this node included.
    fn live_members(&self) -> Vec<NodeId> {
        let dead = self.dead.lock().map(|d| d.clone()).unwrap_or_default();
        self.current()
            .members
            .keys()
            .copied()
            .filter(|n| *n == self.me || !dead.contains(n))
            .collect()
    }

    fn shard_of(&self, key: &Value) -> u32 {
        shard_of_hash(key.stable_hash(), self.shards)
    }

    /// Runs a future to completion from a front-door call, whether that call came from a
    /// blocking thread or (a few HTTP handlers) from an async task.
    fn block<F: Future>(&self, f: F) -> F::Output {
        let handle = tokio::runtime::Handle::current();
        tokio::task::block_in_place(|| handle.block_on(f))
    }

    /// Waits until the committed state satisfies `done`, or the timeout.
    async fn wait_for(&self, timeout: Duration, done: impl Fn(&ClusterState) -> bool) -> bool {
        let mut state = self.state.clone();
        let deadline = Instant::now() + timeout;
        loop {
            if done(&state.borrow_and_update()) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            if tokio::time::timeout(left, state.changed())
                .await
                .is_ok_and(|r| r.is_err())
            {
                return false;
            }
        }
    }

    /// Refuses writes once this node has lost touch with the Raft majority for longer than
    /// [`LEASE`]: by then the majority may be about to give its shards to others.
    fn check_lease(&self) -> Result<(), EngineError> {
        if self.raft.lease_valid(LEASE) {
            Ok(())
        } else {
            Err(EngineError::Unavailable(format!(
                "this node has not heard from a majority of the cluster for over {} ms, so it \
                 accepts no writes for its shards until it does (they may be moving to other \
                 nodes); publish to another node or retry",
                LEASE.as_millis()
            )))
        }
    }

    /// Whether this node may append to `shards` of `topic` now, as their owner: its lease
    /// holds, none of them is being rebuilt from its log, and each has the in-sync copies the
    /// topic's `min_insync` asks. The one gate of both write paths (own share, forwards).
    fn may_append(&self, topic: &str, shards: &[u32]) -> Result<(), EngineError> {
        self.check_lease()?;
        replication::check_ready(self, shards)?;
        replication::check_min_insync(self, topic, shards)
    }

    /// Checks that this node owns each shard at exactly the epoch the sender stamped; waits
    /// briefly when the sender's table is newer than ours.
    fn fence(&self, epochs: &[(u32, u64)]) -> Result<(), EngineError> {
        self.check_lease()?;
        let mut table = self.current();
        for &(shard, epoch) in epochs {
            let mut check = fence::check_write(&table.table, self.me, shard, Epoch(epoch))
                .map_err(|e| EngineError::BadRequest(e.to_string()))?;
            if matches!(check, fence::Fence::Ahead { .. }) {
                let want = Epoch(epoch);
                self.block(self.wait_for(Duration::from_secs(2), |s| {
                    s.table.get(shard).is_ok_and(|e| e.epoch >= want)
                }));
                table = self.current();
                check = fence::check_write(&table.table, self.me, shard, Epoch(epoch))
                    .map_err(|e| EngineError::BadRequest(e.to_string()))?;
            }
            if check != fence::Fence::Accept {
                return Err(EngineError::StaleEpoch(format!(
                    "shard {shard} at epoch {epoch}: {check}"
                )));
            }
        }
        Ok(())
    }

    async fn propose(&self, command: Command) -> Result<(), EngineError> {
        match self.raft.propose(command).await {
            Ok(starling_cluster::Outcome::Refused(why)) => Err(EngineError::BadRequest(why)),
            Ok(_) => Ok(()),
            Err(e) => Err(EngineError::Unavailable(e.to_string())),
        }
    }
}

/// Records dataflows write to topics (a later stage's internal topic, or a topic written by
/// `publish`/`trigger`) go to the owners of their keys: queued here, sent by the forward loop,
/// as a worker must not wait for the network.
impl InternalSink for Shared {
    fn route(&self, topic: &str, events: Vec<Event>) {
        self.repartition.queue(topic, events);
    }
}
