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
mod handoff;
pub mod peer_client;
pub(crate) mod peer_door;
pub mod peer_link;
mod peers;
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

use starling_cluster::membership::{Member, MemberState, Membership, MembershipConfig};
use starling_cluster::raft::{ClusterRaft, RaftSettings};
use starling_cluster::{
    controller, fence, shard_of_hash, CatalogEntry, CatalogKind, ClusterState, Command, Epoch,
    MemberInfo, NodeId,
};
use starling_operators::definition::{Definition, TopicDef};
use starling_operators::plan::stages;
use starling_operators::render::Update;
use starling_operators::{Event, Row, Value};

pub use config::ClusterConfig;
pub use peer_client::PeerClient;
pub use peer_link::{MemoryNet, PeerNet};
pub use peers::PeerAddr;

/// What a replica's fetch says of its view of the shards it copies.
#[derive(Clone, Copy, Debug)]
pub struct FetchView<'a> {
    /// (shard, epoch) the replica copies at.
    pub epochs: &'a [(u32, u64)],
    /// (shard, version of its replica lists) the replica saw when it asked.
    pub isr: &'a [(u32, u64)],
}

use crate::quic::wire;
use crate::runtime::{feed, InternalSink};
use crate::{DataflowInfo, Engine, EngineError, Subscription};

/// How long a publish keeps trying to place events (owners unreachable, shards moving)
/// before it answers `unavailable`.
const PLACE_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a submit waits for the agreed definition to be installed here.
const APPLY_TIMEOUT: Duration = Duration::from_secs(15);
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
        let membership = Membership::start(mc).await?;
        if !config.seeds.is_empty() {
            if let Err(e) = membership.check_seeds(Duration::from_secs(10)).await {
                let _ = membership.shutdown().await;
                return Err(e.into());
            }
        }
        let peers = Arc::new(peers::Peers::new(
            endpoints.net.clone(),
            Some(endpoints.peer),
        ));
        let transport = Arc::new(transport::QuicRaftTransport {
            peers: Arc::clone(&peers),
        });
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
        let info = MemberInfo {
            name: name.clone(),
            peer_addr: endpoints.peer.to_string(),
            http_addr: endpoints.http.to_string(),
            leaving: false,
        };
        if config.seeds.is_empty() {
            raft.initialize(info).await?;
        }
        let state = raft.state();
        let shared = Arc::new(Shared {
            me,
            name,
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
        let tasks = vec![
            tokio::spawn(leader_loop(Arc::clone(&shared))),
            tokio::spawn(follow_loop(Arc::clone(&shared))),
            tokio::spawn(repartition::forward_loop(Arc::clone(&shared))),
            tokio::spawn(repartition::mark_loop(Arc::clone(&shared))),
            tokio::spawn(handoff::hand_off_loop(Arc::clone(&shared))),
            tokio::spawn(replication::replica_loop(Arc::clone(&shared))),
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

    /// The cluster as `GET /v1/cluster` shows it.
    pub async fn describe(&self) -> serde_json::Value {
        status::cluster_json(&self.shared).await
    }

    /// Hands this node's shards to the others, then leaves gossip and Raft. Used by SIGTERM
    /// and `starling leave`; gives up after `timeout` (the shards then move when the node is
    /// seen gone).
    pub async fn leave(&self, timeout: Duration) -> Result<(), EngineError> {
        let s = &self.shared;
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
            let others = st.members.keys().filter(|n| **n != s.me).count();
            // Owning nothing is not enough: state released to a receiver and records
            // diverted after a release must reach their owners first.
            if mine == 0 && s.handoffs.idle() {
                return Ok(());
            }
            if others == 0 {
                return Err(EngineError::BadRequest(format!(
                    "this node is the only member: its {mine} shards have nowhere to go; \
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

    /// One pass of placing `pending` rows: this node's part into the engine, the rest
    /// forwarded. Returns the rows still to place and the last reason one could not be.
    async fn place(
        &self,
        engine: &Arc<Engine>,
        topic: &str,
        pending: Vec<(u32, Row)>,
        wait: bool,
        origin: (u64, u64),
    ) -> Result<Placed, EngineError> {
        let state = self.current();
        let starling_cluster::Routed {
            mut by_owner,
            held: mut left,
            mut why,
        } = starling_cluster::route(&state.table, pending);
        let mut accepted = 0;
        // This node's part is written while the other owners' parts travel: the ack waits for
        // the slowest write, not for the sum of them.
        let mut local_rows = by_owner.remove(&self.me);
        if let Some(rows) = &local_rows {
            let shards = distinct_shards(rows.iter().map(|(s, _)| *s));
            if let Err(e) = self.may_append(topic, &shards) {
                why = Some(e.to_string());
                left.extend(local_rows.take().unwrap_or_default());
            }
        }
        let local = async {
            let Some(rows) = local_rows else {
                return Ok((0, Vec::new()));
            };
            // This publish may have reached this node's log already: through a forward to the
            // shard's previous owner that this node copied as its replica before taking over.
            let all_shards = distinct_shards(rows.iter().map(|(s, _)| *s));
            let claim = self.replication.claim(origin, &all_shards)?;
            let mut rows = rows;
            let before = rows.len();
            rows.retain(|(s, _)| !claim.logged.contains(s));
            let done = before - rows.len();
            if rows.is_empty() {
                // Logged already (as a replica before this node took the shard over): its
                // own replicas must have it too before it is acknowledged.
                drop(claim);
                replication::await_replicas(self, topic, &all_shards).await?;
                return Ok((done, Vec::new()));
            }
            let rows_shards: Vec<u32> = rows.iter().map(|(s, _)| *s).collect();
            // Kept for a retry only when the engine may answer busy (`wait` false); a waiting
            // publish takes the rows as they are.
            let (plain, keep): (Vec<Row>, Vec<(u32, Row)>) = if wait {
                (rows.into_iter().map(|(_, r)| r).collect(), Vec::new())
            } else {
                (rows.iter().map(|(_, r)| r.clone()).collect(), rows)
            };
            let shards = distinct_shards(rows_shards.iter().copied());
            replication::mark_epochs(self, topic, &shards)?;
            let e = Arc::clone(engine);
            let t = topic.to_string();
            let r = tokio::task::spawn_blocking(move || {
                e.publish_local_tagged(&t, plain, wait, origin)
            })
            .await
            .map_err(|e| EngineError::Internal(e.to_string()))?;
            if r.is_ok() {
                claim.done();
            }
            drop(claim);
            if r.is_ok() {
                self.replication.appended();
                replication::await_replicas(self, topic, &all_shards).await?;
            }
            match r {
                Ok(n) => Ok((n + done, Vec::new())),
                // Other owners may already have their part: keep this one for the next round
                // rather than answer `busy` for a batch partly applied.
                Err(EngineError::Busy) => Ok((done, keep)),
                Err(e) => Err(e),
            }
        };
        let mut sends = Vec::new();
        for (owner, rows) in by_owner {
            let epochs = epochs_of(&state, &rows);
            sends.push(async move {
                let wire_rows: Vec<_> = rows.iter().map(|(_, r)| wire::row_to_wire(r)).collect();
                let r = match self.peers.client(owner).await {
                    Ok(c) => c.forward(topic, epochs, wire_rows, Some(origin)).await,
                    Err(e) => Err(e),
                };
                (owner, rows, r)
            });
        }
        let (local, remote) = tokio::join!(local, futures_util::future::join_all(sends));
        let (n, busy_rows) = local?;
        accepted += n;
        let mut busy = false;
        if !busy_rows.is_empty() {
            why = Some("this node's workers are busy".into());
            busy = true;
            left.extend(busy_rows);
        }
        for (owner, rows, r) in remote {
            match r {
                Ok(n) => accepted += n as usize,
                Err(e) => {
                    let code = e.code().map(str::to_string);
                    match code.as_deref() {
                        // Refused whole by the owner for the caller's own input: report it.
                        Some(wire::codes::BAD_REQUEST)
                        | Some(wire::codes::NOT_FOUND)
                        | Some(wire::codes::TOO_LARGE) => {
                            return Err(EngineError::BadRequest(format!(
                                "node {owner:016x} refused the batch: {e}"
                            )))
                        }
                        Some(wire::codes::BUSY) => busy = true,
                        Some(wire::codes::STALE_EPOCH) => {}
                        _ => self.peers.reset(owner).await,
                    }
                    why = Some(format!("node {owner:016x}: {e}"));
                    left.extend(rows);
                }
            }
        }
        Ok(Placed {
            accepted,
            left,
            why,
            busy,
        })
    }
}

/// What one pass of placing a publish did.
struct Placed {
    /// Events acknowledged in this pass.
    accepted: usize,
    /// Events still to place.
    left: Vec<(u32, Row)>,
    /// Why some could not be placed (the last reason seen).
    why: Option<String>,
    /// Whether an owner (this node or a peer) refused its part for lack of room.
    busy: bool,
}

/// The shards a forward lists, sorted, to check each event against in O(log n).
fn listed_shards(epochs: &[(u32, u64)]) -> Vec<u32> {
    let mut v: Vec<u32> = epochs.iter().map(|(s, _)| *s).collect();
    v.sort_unstable();
    v
}

/// Each shard once, sorted.
fn distinct_shards(shards: impl Iterator<Item = u32>) -> Vec<u32> {
    let mut v: Vec<u32> = shards.collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// (shard, epoch) for every shard the rows fall in, from one table.
fn epochs_of(state: &ClusterState, rows: &[(u32, Row)]) -> Vec<(u32, u64)> {
    starling_cluster::epochs_for(&state.table, rows.iter().map(|(s, _)| *s))
}

/// Records dataflows write to topics (a later stage's internal topic, or a topic written by
/// `publish`/`trigger`) go to the owners of their keys: queued here, sent by the forward loop,
/// as a worker must not wait for the network.
impl InternalSink for Shared {
    fn route(&self, topic: &str, events: Vec<Event>) {
        self.repartition.queue(topic, events);
    }
}

/// The public operations across the cluster, called by the node's router (never by the
/// engine). Each is called from a blocking thread or a multi-threaded runtime's task, and
/// blocks until the cluster answers; reads scatter with the `scatter_*` methods.
impl Shared {
    /// Publishes a batch across the cluster: this node's part into its engine, the rest
    /// forwarded to the owners; returns once every owner acknowledged its part. `wait` false
    /// asks for [`EngineError::Busy`] instead of waiting for room.
    pub(crate) fn publish(
        &self,
        topic: &str,
        rows: Vec<Row>,
        wait: bool,
    ) -> Result<usize, EngineError> {
        let engine = self.engine()?;
        engine.check_rows(topic, &rows)?;
        let key = engine.read_topic_spec(topic, |t| t.key)?;
        let total = rows.len();
        let mut pending: Vec<(u32, Row)> = rows
            .into_iter()
            .map(|r| {
                let shard = key.map_or(0, |k| self.shard_of(&r[k]));
                (shard, r)
            })
            .collect();
        // Names this publish in every forward and log entry, so that a retry is not logged
        // twice by a shard that has it already.
        let origin = (
            self.me,
            self.batches
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        );
        self.block(async {
            let deadline = Instant::now() + PLACE_TIMEOUT;
            let mut accepted = 0;
            let mut state = self.state.clone();
            loop {
                state.borrow_and_update();
                let Placed {
                    accepted: n,
                    left,
                    why,
                    busy,
                } = self.place(&engine, topic, pending, wait, origin).await?;
                accepted += n;
                if left.is_empty() {
                    return Ok(accepted);
                }
                if busy && !wait && accepted == 0 {
                    // Nothing was applied anywhere: the caller may back off and resend all.
                    return Err(EngineError::Busy);
                }
                if Instant::now() > deadline {
                    return Err(EngineError::Unavailable(format!(
                        "{accepted} of {total} events were acknowledged; {} could not be placed \
                         within {PLACE_TIMEOUT:?} ({}); retry them",
                        left.len(),
                        why.unwrap_or_default()
                    )));
                }
                pending = left;
                let _ = tokio::time::timeout(Duration::from_millis(50), state.changed()).await;
            }
        })
    }

    /// Agrees a definition with the cluster (its stages must plan here first), then waits
    /// until it is installed here.
    pub(crate) fn install(&self, def: &Definition) -> Result<DataflowInfo, EngineError> {
        let engine = self.engine()?;
        engine.check_definition(def)?;
        // Each stage must plan too, or the cluster would agree on what cannot run.
        let cut = stages::split(def);
        let parts: Vec<Definition> = cut.iter().map(|s| s.definition.clone()).collect();
        if parts.len() > 1 {
            let retracting = engine.retracting_nodes(def)?;
            if let Some(node) = stages::crossing(&cut)
                .into_iter()
                .find(|c| retracting.contains(c))
            {
                return Err(EngineError::BadRequest(format!(
                    "in a cluster, the records of node `{node}` must move to other nodes (a \
                     `key_by` reads it), but it corrects what it emitted (retractions) and only \
                     insertions can move between nodes yet; re-key before that node, or make it \
                     emit final results with no allowed lateness"
                )));
            }
            engine.check_definitions(&parts).map_err(|e| {
                EngineError::BadRequest(format!(
                    "dataflow `{}` cannot be cut into stages for the cluster: {e}",
                    def.name
                ))
            })?;
        }
        let text = serde_json::to_string(def).map_err(|e| EngineError::Internal(e.to_string()))?;
        let name = def.name.clone();
        let last = parts
            .last()
            .map(|d| d.name.clone())
            .unwrap_or_else(|| name.clone());
        self.block(async {
            if self
                .current()
                .catalog
                .contains_key(&(CatalogKind::Dataflow, name.clone()))
            {
                return Err(EngineError::DataflowExists(name.clone()));
            }
            self.propose(Command::PutCatalog(CatalogEntry {
                kind: CatalogKind::Dataflow,
                name: name.clone(),
                text,
            }))
            .await?;
            let deadline = Instant::now() + APPLY_TIMEOUT;
            loop {
                if engine.dataflow(&last).is_ok() {
                    if let Ok(info) = engine.dataflow(&name) {
                        return Ok(info);
                    }
                }
                if Instant::now() > deadline {
                    return Err(EngineError::Unavailable(format!(
                        "dataflow `{name}` was agreed by the cluster but not installed here \
                         within {APPLY_TIMEOUT:?}"
                    )));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    }

    /// Agrees a topic declaration with the cluster, then waits until it exists here.
    pub(crate) fn create_topic(&self, def: &TopicDef) -> Result<(), EngineError> {
        let engine = self.engine()?;
        // An existing topic is checked here (identical: nothing to do; different: the
        // engine's own conflict error), without asking the cluster.
        if engine.topic_spec(&def.name).is_ok() {
            return engine.create_topic_local(def);
        }
        engine.check_topic(def)?;
        let text = serde_json::to_string(def).map_err(|e| EngineError::Internal(e.to_string()))?;
        let name = def.name.clone();
        self.block(async {
            self.propose(Command::PutCatalog(CatalogEntry {
                kind: CatalogKind::Topic,
                name: name.clone(),
                text,
            }))
            .await?;
            let deadline = Instant::now() + APPLY_TIMEOUT;
            while engine.topic_spec(&name).is_err() {
                if Instant::now() > deadline {
                    return Err(EngineError::Unavailable(format!(
                        "topic `{name}` was agreed but not created here within {APPLY_TIMEOUT:?}"
                    )));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(())
        })
    }

    /// Drops a dataflow on every node: agreed, then waited for here.
    pub(crate) fn drop_dataflow(&self, name: &str) -> Result<(), EngineError> {
        let engine = self.engine()?;
        engine.dataflow(name)?;
        self.block(async {
            self.propose(Command::DropCatalog {
                kind: CatalogKind::Dataflow,
                name: name.to_string(),
            })
            .await?;
            let deadline = Instant::now() + APPLY_TIMEOUT;
            while engine.dataflow(name).is_ok() {
                if Instant::now() > deadline {
                    return Err(EngineError::Unavailable(format!(
                        "dataflow `{name}` was dropped by the cluster but still runs here"
                    )));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(())
        })
    }

    /// Results of every node for one output, merged into one subscription; members that
    /// join later are merged in as they start the dataflow.
    pub(crate) fn subscribe(
        &self,
        dataflow: &str,
        output: &str,
    ) -> Result<Subscription<Arc<[Update]>>, EngineError> {
        let engine = self.engine()?;
        let stage = stage_of_output(&self.current(), dataflow, output)
            .unwrap_or_else(|| dataflow.to_string());
        let dataflow = stage.as_str();
        let local = engine.subscribe_local(dataflow, output)?;
        let (tx, sub) = feed::<Arc<[Update]>>(engine.subscriber_queue());
        let peers: Vec<NodeId> = self
            .live_members()
            .into_iter()
            .filter(|n| *n != self.me)
            .collect();
        // Each peer's subscription is registered before this returns, so everything
        // published afterwards is seen, as on one node.
        let opened = self.block(async {
            let mut opened = Vec::new();
            for p in peers {
                let c = self
                    .peers
                    .client(p)
                    .await
                    .map_err(|e| EngineError::Unavailable(format!("node {p:016x}: {e}")))?;
                let s = c
                    .subscribe_output_local(dataflow, output)
                    .await
                    .map_err(|e| EngineError::Unavailable(format!("node {p:016x}: {e}")))?;
                opened.push((p, s));
            }
            Ok::<_, EngineError>(opened)
        })?;
        let mut members: BTreeSet<NodeId> = opened.iter().map(|(p, _)| *p).collect();
        members.insert(self.me);
        let subscribed = Arc::new(Mutex::new(members));
        let watch = Watch {
            state: self.state.clone(),
            dead: Arc::clone(&self.dead),
            subscribed: Arc::clone(&subscribed),
        };
        for (p, s) in opened {
            tokio::spawn(forward_results(p, s, tx.clone(), watch.clone()));
        }
        // Members that join later are added as soon as they run the dataflow, which is
        // before the leader gives them a shard (that waits for the controller's next round
        // and the hand-off drain), so their results are merged too.
        {
            let mut state = self.state.clone();
            let peers = Arc::clone(&self.peers);
            let tx = tx.clone();
            let (dataflow, output) = (dataflow.to_string(), output.to_string());
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        r = state.changed() => if r.is_err() { return },
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                    if tx.is_ended() {
                        return;
                    }
                    let new: Vec<NodeId> = {
                        let subscribed = subscribed.lock().unwrap_or_else(|p| p.into_inner());
                        let dead = watch.dead.lock().unwrap_or_else(|p| p.into_inner());
                        state
                            .borrow()
                            .members
                            .keys()
                            .filter(|m| !subscribed.contains(m) && !dead.contains(m))
                            .copied()
                            .collect()
                    };
                    for p in new {
                        let opened = match peers.client(p).await {
                            Ok(c) => c.subscribe_output_local(&dataflow, &output).await,
                            Err(e) => Err(e),
                        };
                        // Not yet (the dataflow is still being installed there): next round.
                        if let Ok(s) = opened {
                            subscribed
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .insert(p);
                            tokio::spawn(forward_results(p, s, tx.clone(), watch.clone()));
                        }
                    }
                }
            });
        }
        std::thread::Builder::new()
            .name("starling-merge".into())
            .spawn(move || loop {
                match local.recv_timeout(Duration::from_millis(200)) {
                    Ok(Some(b)) => {
                        if !tx.send(b) {
                            return;
                        }
                    }
                    Ok(None) => {
                        if tx.is_ended() {
                            return;
                        }
                    }
                    Err(e) => {
                        tx.end(e.to_string());
                        return;
                    }
                }
            })
            .map_err(|e| EngineError::Internal(e.to_string()))?;
        Ok(sub)
    }

    /// Moves a topic's watermark on every live node (an end-of-input mark must close the
    /// windows of every shard, wherever they run).
    pub(crate) fn advance_watermark(&self, topic: &str, time: u64) -> Result<(), EngineError> {
        let engine = self.engine()?;
        engine.advance_watermark_local(topic, time)?;
        let live = self.live_members();
        let peers: Vec<(NodeId, String)> = self
            .current()
            .members
            .iter()
            .filter(|(n, _)| **n != self.me && live.contains(n))
            .map(|(n, m)| (*n, m.http_addr.clone()))
            .collect();
        self.block(async {
            let calls = peers.iter().map(|(n, addr)| async move {
                let c = starling_client::http::HttpClient::new(&format!("http://{addr}"));
                c.advance_watermark_local(topic, time)
                    .await
                    .map_err(|e| format!("node {n:016x}: {e}"))
            });
            let failed: Vec<String> = futures_util::future::join_all(calls)
                .await
                .into_iter()
                .filter_map(Result::err)
                .collect();
            if failed.is_empty() {
                Ok(())
            } else {
                Err(EngineError::Unavailable(format!(
                    "the watermark moved here but not on every node: {}",
                    failed.join("; ")
                )))
            }
        })
    }
}

/// What peers ask of this node on the peer listener: the cluster protocol, not the engine's
/// public operations.
impl Shared {
    pub(crate) fn forwarded(
        &self,
        topic: &str,
        epochs: &[(u32, u64)],
        rows: Vec<Row>,
        origin: Option<(u64, u64)>,
    ) -> Result<usize, EngineError> {
        let engine = self.engine()?;
        let key = engine.read_topic_spec(topic, |t| t.key)?;
        let listed = listed_shards(epochs);
        for row in &rows {
            let shard = key.map_or(0, |k| row.get(k).map_or(0, |v| self.shard_of(v)));
            if listed.binary_search(&shard).is_err() {
                return Err(EngineError::BadRequest(format!(
                    "an event of shard {shard} came without that shard's epoch"
                )));
            }
        }
        self.fence(epochs)?;
        let total = rows.len();
        let shard_of_row = |r: &Row| key.map_or(0, |k| r.get(k).map_or(0, |v| self.shard_of(v)));
        // A retry of a publish whose events for a shard this node logged already (as the
        // owner that answered too late, or as the replica of one that died before it
        // answered) is acknowledged without logging them again.
        let row_shards = distinct_shards(rows.iter().map(shard_of_row));
        let claim = origin
            .map(|o| self.replication.claim(o, &row_shards))
            .transpose()?;
        // The claim may have waited for an earlier attempt: check ownership again.
        self.fence(epochs)?;
        let rows: Vec<Row> = match &claim {
            Some(c) if !c.logged.is_empty() => rows
                .into_iter()
                .filter(|r| !c.logged.contains(&shard_of_row(r)))
                .collect(),
            _ => rows,
        };
        if rows.is_empty() {
            drop(claim);
            self.block(replication::await_replicas(self, topic, &row_shards))?;
            return Ok(total);
        }
        let shards = distinct_shards(rows.iter().map(shard_of_row));
        self.may_append(topic, &shards)?;
        replication::mark_epochs(self, topic, &shards)?;
        match origin {
            Some(o) => {
                engine.publish_local_tagged(topic, rows, true, o)?;
                if let Some(c) = &claim {
                    c.done();
                }
            }
            None => {
                engine.publish_local(topic, rows, true)?;
            }
        }
        drop(claim);
        self.replication.appended();
        self.block(replication::await_replicas(self, topic, &row_shards))?;
        Ok(total)
    }

    pub(crate) fn fetch(
        &self,
        replica: u64,
        view: FetchView<'_>,
        items: Vec<wire::FetchItem>,
        wait_ms: u32,
    ) -> Result<Vec<wire::Fetched>, EngineError> {
        replication::serve_fetch(self, replica, view, items, wait_ms)
    }

    pub(crate) fn forwarded_events(
        &self,
        topic: &str,
        epochs: &[(u32, u64)],
        events: Vec<Event>,
    ) -> Result<usize, EngineError> {
        let engine = self.engine()?;
        let listed = listed_shards(epochs);
        for e in &events {
            let shard = self.shard_of(&e.key);
            if listed.binary_search(&shard).is_err() {
                return Err(EngineError::BadRequest(format!(
                    "a record of shard {shard} came without that shard's epoch"
                )));
            }
        }
        self.fence(epochs)?;
        engine.publish_internal_local(topic, events)
    }

    pub(crate) fn handoff(
        &self,
        shard: u32,
        epoch: u64,
        release: u64,
        (chunk, chunks): (u32, u32),
        parts: Vec<crate::runtime::ShardPart>,
    ) -> Result<(), EngineError> {
        handoff::receive(self, (shard, epoch, release), (chunk, chunks), parts)
    }

    pub(crate) fn mark(&self, topic: &str, node: u64, time: u64) -> Result<(), EngineError> {
        repartition::apply_mark(self, topic, node, time)
    }

    pub(crate) fn raft(&self, payload: &[u8]) -> Vec<u8> {
        self.block(self.raft.handle_rpc(payload))
    }
}

/// On the Raft leader: adds the members gossip reports, marks leaving ones, and proposes
/// what the controller decides, until the table is at its target.
async fn leader_loop(s: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
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
                    let _ = s
                        .propose(Command::AddMember {
                            node: m.node_id,
                            info,
                        })
                        .await;
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

fn member_info(m: &Member) -> MemberInfo {
    MemberInfo {
        name: m.name.clone(),
        peer_addr: m.peer_addr.to_string(),
        http_addr: m.http_addr.to_string(),
        leaving: m.state == MemberState::Leaving,
    }
}

/// What a merged subscription's member streams consult when one of them fails.
#[derive(Clone)]
struct Watch {
    state: watch::Receiver<Arc<ClusterState>>,
    dead: Arc<Mutex<BTreeSet<NodeId>>>,
    /// Members whose results are being merged; one that ends quietly is taken out, so it is
    /// merged again if it comes back.
    subscribed: Arc<Mutex<BTreeSet<NodeId>>>,
}

impl Watch {
    /// Whether `p` left, is leaving, or is dead: its shards, and their results, are on the
    /// other members now.
    fn gone(&self, p: NodeId) -> bool {
        self.state
            .borrow()
            .members
            .get(&p)
            .is_none_or(|m| m.leaving)
            || self
                .dead
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&p)
    }
}

/// How long a member whose result stream failed may take to be reported dead before the
/// merged subscription ends with its error.
const MEMBER_GONE_WAIT: Duration = Duration::from_secs(10);

/// Copies one peer's results into a merged subscription until either side ends. A peer that
/// left the cluster, is leaving or died ends its part quietly: its shards, and their
/// results, are on the other members now (a dead owner's shards are rebuilt from their logs
/// by the replicas promoted in its place).
async fn forward_results(
    p: NodeId,
    mut s: peer_link::PeerSubscription,
    tx: crate::runtime::Feed<Arc<[Update]>>,
    watch: Watch,
) {
    // The stream is read by its own task (reading a frame is not cancel-safe), so this one
    // can also notice a reader that went away while the peer is quiet.
    let (btx, mut brx) = tokio::sync::mpsc::channel(4);
    let reader = tokio::spawn(async move {
        loop {
            let r = s.next().await;
            let more = matches!(r, Ok(Some(_)));
            if btx.send(r).await.is_err() || !more {
                return;
            }
        }
    });
    let mut check = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            r = brx.recv() => match r {
                Some(Ok(Some(batch))) => {
                    if !batch.is_empty() && !tx.send(Arc::from(batch)) {
                        break;
                    }
                }
                Some(Ok(None)) | None => break,
                Some(Err(e)) => {
                    let since = Instant::now();
                    while !watch.gone(p) && since.elapsed() < MEMBER_GONE_WAIT {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    if !watch.gone(p) {
                        tx.end(format!("node {p:016x}: {e}"));
                    }
                    break;
                }
            },
            _ = check.tick() => {
                if tx.is_ended() {
                    break;
                }
            }
        }
    }
    reader.abort();
    watch
        .subscribed
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&p);
}

/// On every node: follow the committed state (install the catalog, learn peers, complete
/// hand-offs to this node).
async fn follow_loop(s: Arc<Shared>) {
    let mut state = s.state.clone();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    // The table as last seen, to notice promotions of this node. None at start: a restart's
    // replay rebuilt every shard the log holds.
    let mut prev: Option<Arc<ClusterState>> = None;
    loop {
        tokio::select! {
            _ = state.changed() => {}
            _ = tick.tick() => {}
        }
        let st = state.borrow_and_update().clone();
        // Shards just promoted to this node: writes for them wait until their log is
        // replayed (below).
        let promoted = prev
            .as_ref()
            .map(|p| replication::promoted(p, &st, s.me))
            .unwrap_or_default();
        replication::watching(&s, &st, &promoted);
        let dead: BTreeSet<NodeId> = s.membership.dead().await.into_iter().collect();
        let newly: Vec<NodeId> = match s.dead.lock() {
            Ok(mut d) => {
                let newly = dead.difference(&d).copied().collect();
                *d = dead;
                newly
            }
            Err(_) => Vec::new(),
        };
        for node in newly {
            s.peers.close_dead(node).await;
        }
        for m in s.membership.members().await {
            s.peers.learn(
                m.node_id,
                PeerAddr {
                    peer: m.peer_addr,
                    fingerprint: m.peer_fingerprint.clone(),
                },
            );
        }
        let Ok(engine) = s.engine() else { return };
        let s2 = Arc::clone(&s);
        let st2 = Arc::clone(&st);
        let _ = tokio::task::spawn_blocking(move || sync_catalog(&engine, &st2, &s2)).await;
        complete_moves(&s, &st).await;
        if !promoted.is_empty() {
            tracing::info!(shards = ?promoted, "promoted to owner of shards whose owner died");
            // Not tried again: a replay that failed part way has fed some events already.
            if let Err(e) = replication::take_over(&s, promoted.clone()).await {
                tracing::error!(error = %e, shards = ?promoted, "taking over shards failed: their dataflow state may miss logged events (the log itself is whole)");
            }
            replication::recovered(&s, &promoted);
        }
        prev = Some(st);
    }
}

/// The agreed dataflows, each cut into its stages (one stage when it has no `key_by`).
fn catalog_stages(st: &ClusterState) -> Vec<stages::Stage> {
    st.catalog
        .values()
        .filter(|e| e.kind == CatalogKind::Dataflow)
        .filter_map(|e| Definition::from_json(&e.text).ok())
        .flat_map(|d| stages::split(&d))
        .collect()
}

/// The stage of an agreed dataflow that has `output`.
fn stage_of_output(st: &ClusterState, dataflow: &str, output: &str) -> Option<String> {
    let entry = st
        .catalog
        .get(&(CatalogKind::Dataflow, dataflow.to_string()))?;
    let def = Definition::from_json(&entry.text).ok()?;
    stages::split(&def)
        .into_iter()
        .find(|s| s.definition.outputs.iter().any(|o| o.name == output))
        .map(|s| s.definition.name)
}

/// Makes this node's topics and dataflows match the agreed catalog.
fn sync_catalog(engine: &Engine, st: &ClusterState, s: &Shared) {
    for ((kind, name), entry) in &st.catalog {
        match kind {
            CatalogKind::Topic if engine.topic_spec(name).is_err() => {
                match serde_json::from_str::<TopicDef>(&entry.text) {
                    Ok(def) => {
                        if let Err(e) = engine.create_topic_local(&def) {
                            tracing::error!(topic = %name, error = %e, "cannot create an agreed topic");
                        }
                    }
                    Err(e) => tracing::error!(topic = %name, error = %e, "bad agreed topic"),
                }
            }
            CatalogKind::Dataflow => match Definition::from_json(&entry.text) {
                // Stages in order: each creates the internal topics the next one reads.
                Ok(def) => {
                    for stage in stages::split(&def) {
                        let d = &stage.definition;
                        if engine.dataflow(&d.name).is_ok() {
                            continue;
                        }
                        if let Err(e) = engine.install_local(d) {
                            tracing::error!(dataflow = %d.name, error = %e, "cannot install an agreed dataflow");
                            break;
                        }
                    }
                }
                Err(e) => tracing::error!(dataflow = %name, error = %e, "bad agreed dataflow"),
            },
            _ => {}
        }
    }
    let expected: BTreeSet<String> = catalog_stages(st)
        .into_iter()
        .map(|s| s.definition.name)
        .collect();
    // Only once this node has caught up with the log: a stale state must not drop dataflows.
    if s.started.elapsed() > Duration::from_secs(2) || s.raft.is_leader() {
        // Later stages first, so that no stage loses its producer while it runs.
        let mut local = engine.dataflows();
        local.sort_by(|a, b| b.name.cmp(&a.name));
        for d in local {
            if !expected.contains(&d.name) {
                if let Err(e) = engine.drop_dataflow_local(&d.name) {
                    tracing::warn!(dataflow = %d.name, error = %e, "cannot drop a dataflow the cluster dropped");
                }
            }
        }
    }
}

/// Completes moves of shards to this node whose old owner is gone (crashed or removed), so
/// that no state will come; the old owner's hand-off completes every other move (see
/// [`handoff`]).
async fn complete_moves(s: &Shared, st: &ClusterState) {
    let incoming: Vec<u32> = st
        .table
        .iter()
        .filter(|(_, e)| e.moving_to == Some(s.me) && handoff::owner_gone(s, e.owner))
        .map(|(shard, _)| shard)
        .collect();
    let ready: Vec<u32> = {
        let Ok(mut moving) = s.moving_in.lock() else {
            return;
        };
        moving.retain(|shard, _| incoming.contains(shard));
        let now = Instant::now();
        incoming
            .iter()
            .filter(|shard| {
                now.duration_since(*moving.entry(**shard).or_insert(now)) >= handoff::HANDOFF_DRAIN
            })
            .copied()
            .collect()
    };
    for shard in ready {
        if let Some(command) = controller::complete(st, shard, s.me) {
            if let Err(e) = s.propose(command).await {
                tracing::debug!(shard, error = %e, "could not complete a move yet");
            }
        }
    }
}
