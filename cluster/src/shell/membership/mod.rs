//! Gossip membership: who is in the cluster, where to reach them, and how loaded they are.
//!
//! A thin shell over [chitchat](https://docs.rs/chitchat) (ARCHITECTURE §5): gossip is for
//! discovery, liveness and load only. It never decides who owns a shard — the Raft-agreed
//! [`ShardTable`](crate::ShardTable) does — because gossip views differ during a partition.
//!
//! Every node publishes a few key-values ([`keys`]): its node id, name, QUIC and HTTP
//! addresses, the *Starling* cluster id and shard count it was started for, its
//! [`MemberState`] and its load. All Starling nodes gossip under one fixed chitchat cluster id
//! ([`GOSSIP_CLUSTER`]), so a node pointed by mistake at another Starling cluster still sees
//! its nodes and can refuse with a clear message ([`Membership::check_seeds`]) instead of
//! silently seeing nobody (which is what chitchat's own cluster id check would give).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chitchat::transport::{Socket, Transport, UdpSocket};
use chitchat::{
    spawn_chitchat, Chitchat, ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig,
    NodeState, ProtocolVersion,
};
use thiserror::Error;
use tokio::sync::{watch, Mutex};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::core::table::NodeId;

mod view;
use view::{classify, parse_peer, same_membership, Ours, View};

/// The chitchat cluster id every Starling node gossips under. Fixed on purpose: the user's
/// cluster id travels as a key ([`keys::CLUSTER_ID`]) so that a node of another Starling
/// cluster is *seen* and refused by name, rather than dropped by chitchat without a word.
pub const GOSSIP_CLUSTER: &str = "starling";

pub mod keys;
pub use keys::MemberState;

/// Failure-detector settings (chitchat's phi accrual detector).
///
/// A peer is declared dead when the time since its last heartbeat exceeds
/// `phi_threshold × mean heartbeat interval`. Peers see a node's heartbeat advance about once
/// or twice per gossip round, so with the defaults (gossip every 500 ms, phi 8) a node that
/// stops is reported dead by the others after roughly **3–4 s** (3.5–4 s measured on
/// 127.0.0.1, three nodes; a new node is seen by all in 1–1.5 s). chitchat's own defaults take about
/// 30 s, too slow for moving shards off a dead node. With gossip every 100 ms and
/// `initial_interval` 200 ms (the tests) it is about 1 s.
#[derive(Clone, Debug, PartialEq)]
pub struct FailureDetection {
    /// How many mean heartbeat intervals of silence make a node dead. Lower detects faster
    /// but declares slow-but-alive nodes (GC pause, overloaded host) dead more often.
    pub phi_threshold: f64,
    /// The heartbeat interval assumed for a peer before any has been measured; keep it near
    /// the gossip interval so that a new peer is judged by realistic numbers.
    pub initial_interval: Duration,
    /// Heartbeat gaps longer than this are not counted in the mean (a node that was paused
    /// would otherwise teach the detector to wait forever).
    pub max_interval: Duration,
    /// How long a dead node stays listed by [`Membership::dead`] before chitchat forgets it.
    /// Long enough for the placement leader to act on the death.
    pub dead_grace: Duration,
}

impl Default for FailureDetection {
    /// Detects a stopped node in about 3–4 s with the default 500 ms gossip interval.
    fn default() -> Self {
        FailureDetection {
            phi_threshold: 8.0,
            initial_interval: Duration::from_millis(500),
            max_interval: Duration::from_secs(5),
            dead_grace: Duration::from_secs(60 * 60),
        }
    }
}

/// Everything [`Membership::start`] needs. Public fields so the binary fills it from its flags.
#[derive(Clone, Debug)]
pub struct MembershipConfig {
    /// This node's id (kept in its data directory).
    pub node_id: NodeId,
    /// A human-readable name for logs and the UI.
    pub name: String,
    /// The Starling cluster this node belongs to; peers with another id are refused.
    pub cluster_id: String,
    /// The cluster's shard count; peers with another count are refused (their hash → shard
    /// mapping differs, so they would route the same key to different shards).
    pub shards: u32,
    /// Where gossip (UDP) binds. Port 0 picks a free port; [`Membership::gossip_addr`] tells
    /// which.
    pub gossip_listen: SocketAddr,
    /// The address peers should gossip to, when it differs from `gossip_listen` (NAT, or a
    /// listen address of 0.0.0.0). A port of 0 here means "the port actually bound".
    pub gossip_advertise: Option<SocketAddr>,
    /// Gossip addresses (`HOST:PORT`) of nodes already in the cluster; empty for the first
    /// node. Host names are re-resolved by chitchat every minute.
    pub seeds: Vec<String>,
    /// Published so peers can forward events to this node over QUIC.
    pub peer_addr: SocketAddr,
    /// Published so peers can pin this node's QUIC certificate: node-to-node trust is then
    /// as strong as the gossip network (a cluster CA would make it stronger).
    pub peer_fingerprint: String,
    /// Published so peers and the UI can reach this node's HTTP API.
    pub http_addr: SocketAddr,
    /// How often this node gossips with up to three peers. Shorter converges and detects
    /// failures faster at the cost of more UDP traffic.
    pub gossip_interval: Duration,
    /// Failure-detector settings; see [`FailureDetection`] for the detection time they give.
    pub failure: FailureDetection,
}

impl MembershipConfig {
    /// A config with the default timings (gossip every 500 ms, failure detection in ~3–4 s),
    /// no seeds and no separate advertise address.
    pub fn new(
        node_id: NodeId,
        name: impl Into<String>,
        cluster_id: impl Into<String>,
        shards: u32,
        gossip_listen: SocketAddr,
        peer_addr: SocketAddr,
        http_addr: SocketAddr,
    ) -> MembershipConfig {
        MembershipConfig {
            node_id,
            name: name.into(),
            cluster_id: cluster_id.into(),
            shards,
            gossip_listen,
            gossip_advertise: None,
            seeds: Vec::new(),
            peer_addr,
            peer_fingerprint: String::new(),
            http_addr,
            gossip_interval: Duration::from_millis(500),
            failure: FailureDetection::default(),
        }
    }
}

/// A live member of this node's cluster, as gossip reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// The member's node id.
    pub node_id: NodeId,
    /// Its human-readable name.
    pub name: String,
    /// Where it gossips.
    pub gossip_addr: SocketAddr,
    /// Where its QUIC endpoint listens.
    pub peer_addr: SocketAddr,
    /// Its QUIC certificate's SHA-256 (hex), to pin when connecting.
    pub peer_fingerprint: String,
    /// Where its HTTP API listens.
    pub http_addr: SocketAddr,
    /// Joining, live or leaving.
    pub state: MemberState,
    /// Its last published load (e.g. events/s).
    pub load: u64,
    /// The catalog version it has installed (0 from a node that does not say).
    pub catalog: u64,
}

/// A Starling node seen in gossip that belongs to another cluster (other cluster id or shard
/// count). Listed so that operators see the mistake instead of a silently missing node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incompatible {
    /// Where it gossips.
    pub gossip_addr: SocketAddr,
    /// Its node id.
    pub node_id: NodeId,
    /// Its name.
    pub name: String,
    /// The cluster id it was started for.
    pub cluster_id: String,
    /// The shard count it was started for.
    pub shards: u32,
}

/// Why membership could not start or could not find its cluster.
#[derive(Debug, Error)]
pub enum MembershipError {
    /// A seed is not `HOST:PORT`.
    #[error("bad seed `{seed}`: {reason} (expected HOST:PORT, e.g. 10.0.0.5:7072)")]
    BadSeed {
        /// The seed as given.
        seed: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The configuration cannot work (empty cluster id, zero shards, unusable address).
    #[error("invalid membership config: {0}")]
    InvalidConfig(String),
    /// The gossip UDP socket could not be bound.
    #[error("cannot bind gossip socket {addr}/UDP: {reason}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        reason: String,
    },
    /// chitchat failed to start or to stop.
    #[error("gossip: {0}")]
    Gossip(String),
    /// The seeds answered, but only for another cluster.
    #[error(
        "node at {peer} belongs to cluster `{peer_cluster_id}` with {peer_shards} shards; \
         this node was started for cluster `{cluster_id}` with {shards} shards; use the same \
         --cluster-id and --shards as the cluster you are joining, or a fresh --data-dir"
    )]
    Incompatible {
        /// The gossip address of the other cluster's node.
        peer: SocketAddr,
        /// Its cluster id.
        peer_cluster_id: String,
        /// Its shard count.
        peer_shards: u32,
        /// This node's cluster id.
        cluster_id: String,
        /// This node's shard count.
        shards: u32,
    },
    /// No node answered at any seed.
    #[error(
        "no Starling node answered at the seeds {} within {waited:?}; check that they run and \
         that their gossip port is reachable over UDP",
        seeds.join(", ")
    )]
    NoSeedAnswered {
        /// The seeds as given.
        seeds: Vec<String>,
        /// How long this node waited.
        waited: Duration,
    },
}

/// This node's gossip membership. Dropping it stops gossip abruptly (peers notice through the
/// failure detector); [`Membership::shutdown`] says goodbye first.
pub struct Membership {
    handle: ChitchatHandle,
    chitchat: Arc<Mutex<Chitchat>>,
    self_id: ChitchatId,
    node_id: NodeId,
    cluster_id: String,
    shards: u32,
    seeds: Vec<String>,
    gossip_interval: Duration,
    members_rx: watch::Receiver<Vec<Member>>,
    watch_task: JoinHandle<()>,
}

impl Membership {
    /// Binds the gossip socket, publishes this node's key-values (state `joining`) and starts
    /// gossiping with the seeds. Must run inside a tokio runtime.
    ///
    /// The socket is bound here, before chitchat starts, so that with port 0 the node
    /// advertises the port the OS actually chose (chitchat binds inside `spawn_chitchat` and
    /// does not report the address, but needs it up front in its node id).
    pub async fn start(config: MembershipConfig) -> Result<Membership, MembershipError> {
        if config.cluster_id.is_empty() {
            return Err(MembershipError::InvalidConfig(
                "the cluster id is empty".to_string(),
            ));
        }
        if config.shards == 0 {
            return Err(MembershipError::InvalidConfig(
                "a cluster needs at least one shard".to_string(),
            ));
        }
        if config.gossip_interval.is_zero() {
            return Err(MembershipError::InvalidConfig(
                "the gossip interval is zero".to_string(),
            ));
        }
        for seed in &config.seeds {
            validate_seed(seed)?;
        }

        let socket =
            UdpSocket::open(config.gossip_listen)
                .await
                .map_err(|e| MembershipError::Bind {
                    addr: config.gossip_listen,
                    reason: format!("{e:#}"),
                })?;
        let bound = socket.local_addr().map_err(|e| MembershipError::Bind {
            addr: config.gossip_listen,
            reason: format!("{e:#}"),
        })?;
        let advertise = match config.gossip_advertise {
            Some(mut addr) => {
                if addr.port() == 0 {
                    addr.set_port(bound.port());
                }
                addr
            }
            None => bound,
        };
        if advertise.ip().is_unspecified() {
            return Err(MembershipError::InvalidConfig(format!(
                "gossip listens on {bound}, which peers cannot dial; set the gossip advertise \
                 address to this host's reachable IP"
            )));
        }

        // The generation tells peers that a restarted node (same id and address) is a new
        // incarnation whose state replaces the old one.
        let generation = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let self_id = ChitchatId::new(config.node_id.to_string(), generation, advertise);
        let fd = &config.failure;
        let chitchat_config = ChitchatConfig {
            chitchat_id: self_id.clone(),
            cluster_id: GOSSIP_CLUSTER.to_string(),
            gossip_interval: config.gossip_interval,
            listen_addr: bound,
            seed_nodes: config.seeds.clone(),
            failure_detector_config: FailureDetectorConfig {
                phi_threshold: fd.phi_threshold,
                sampling_window_size: 1_000,
                max_interval: fd.max_interval,
                initial_interval: fd.initial_interval,
                dead_node_grace_period: fd.dead_grace,
            },
            // Starling never deletes its keys; tombstones only matter to other users.
            marked_for_deletion_grace_period: Duration::from_secs(60 * 60),
            catchup_callback: None,
            extra_liveness_predicate: None,
            protocol_version: ProtocolVersion::V0,
        };
        let initial = vec![
            (keys::NODE_ID.to_string(), config.node_id.to_string()),
            (keys::NAME.to_string(), config.name.clone()),
            (keys::PEER_ADDR.to_string(), config.peer_addr.to_string()),
            (
                keys::PEER_FINGERPRINT.to_string(),
                config.peer_fingerprint.clone(),
            ),
            (keys::HTTP_ADDR.to_string(), config.http_addr.to_string()),
            (keys::CLUSTER_ID.to_string(), config.cluster_id.clone()),
            (keys::SHARDS.to_string(), config.shards.to_string()),
            (
                keys::STATE.to_string(),
                MemberState::Joining.as_str().to_string(),
            ),
            (keys::LOAD.to_string(), "0".to_string()),
            (keys::CATALOG.to_string(), "0".to_string()),
        ];
        let transport = PreBound::new(Box::new(socket));
        let handle = spawn_chitchat(chitchat_config, initial, &transport)
            .await
            .map_err(|e| MembershipError::Gossip(format!("cannot start chitchat: {e:#}")))?;
        let chitchat = handle.chitchat();

        let ours = Ours {
            self_id: self_id.clone(),
            cluster_id: config.cluster_id.clone(),
            shards: config.shards,
        };
        let (initial_members, live_rx) = {
            let guard = chitchat.lock().await;
            let view = classify(
                guard
                    .live_nodes()
                    .filter_map(|id| guard.node_state(id).map(|s| (id, s))),
                &ours,
            );
            (view.members, guard.live_nodes_watcher())
        };
        let (members_tx, members_rx) = watch::channel(initial_members);
        let watch_task = tokio::spawn(watch_members(live_rx, members_tx, ours));

        info!(
            node_id = config.node_id,
            name = %config.name,
            gossip = %advertise,
            listen = %bound,
            cluster_id = %config.cluster_id,
            shards = config.shards,
            seeds = ?config.seeds,
            "gossip membership started"
        );
        Ok(Membership {
            handle,
            chitchat,
            self_id,
            node_id: config.node_id,
            cluster_id: config.cluster_id,
            shards: config.shards,
            seeds: config.seeds,
            gossip_interval: config.gossip_interval,
            members_rx,
            watch_task,
        })
    }

    /// The address peers gossip to (the advertise address, with the port actually bound), so
    /// that a node started on port 0 can hand its address to the next one as a seed.
    pub fn gossip_addr(&self) -> SocketAddr {
        self.self_id.gossip_advertise_addr
    }

    /// This node's id, to tell itself apart in [`Membership::members`].
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The live members of this node's cluster (same cluster id and shard count), this node
    /// included, sorted by node id: the set the placement leader places shards over.
    pub async fn members(&self) -> Vec<Member> {
        self.view().await.members
    }

    /// Live Starling nodes of *another* cluster seen in gossip, so that the mistake (a wrong
    /// seed, a wrong `--shards`) is visible rather than a node silently missing.
    pub async fn incompatible(&self) -> Vec<Incompatible> {
        self.view().await.incompatible
    }

    /// Members of this cluster that the failure detector reports dead (and that have not come
    /// back under a new incarnation), so that the placement leader moves their shards away.
    /// A dead node is forgotten after [`FailureDetection::dead_grace`].
    pub async fn dead(&self) -> Vec<NodeId> {
        let ours = self.ours();
        let guard = self.chitchat.lock().await;
        let live: HashSet<NodeId> = guard
            .live_nodes()
            .filter_map(|id| guard.node_state(id))
            .filter_map(parse_peer)
            .map(|p| p.node_id)
            .collect();
        let mut dead: Vec<NodeId> = guard
            .dead_nodes()
            .filter_map(|id| guard.node_state(id))
            .filter_map(parse_peer)
            .filter(|p| p.compatible(&ours) && !live.contains(&p.node_id))
            .map(|p| p.node_id)
            .collect();
        dead.sort_unstable();
        dead.dedup();
        dead
    }

    /// For a node started with seeds: waits until it sees a live member of its own cluster.
    /// Returns [`MembershipError::Incompatible`] if only nodes of another cluster answered
    /// (early, as soon as every seed has turned out to be one), and
    /// [`MembershipError::NoSeedAnswered`] if nobody did. A node without seeds (the first of a
    /// new cluster), or whose only seed is itself, passes at once.
    pub async fn check_seeds(&self, timeout: Duration) -> Result<(), MembershipError> {
        let start = Instant::now();
        let deadline = start + timeout;
        let mut seed_addrs: HashSet<SocketAddr> = HashSet::new();
        let mut unresolved = 0;
        for seed in &self.seeds {
            let resolved =
                tokio::time::timeout_at(deadline, tokio::net::lookup_host(seed.as_str())).await;
            match resolved {
                Ok(Ok(addrs)) => seed_addrs.extend(addrs),
                Ok(Err(e)) => {
                    unresolved += 1;
                    warn!(seed = %seed, error = %e, "cannot resolve seed");
                }
                Err(_) => {
                    unresolved += 1;
                    warn!(seed = %seed, "resolving seed timed out");
                }
            }
        }
        seed_addrs.remove(&self.gossip_addr());
        if seed_addrs.is_empty() && unresolved == 0 {
            // No seeds, or only this node itself: the first node of a new cluster.
            return Ok(());
        }
        let poll = (self.gossip_interval / 2).max(Duration::from_millis(10));
        loop {
            let view = self.view().await;
            if view.members.iter().any(|m| m.node_id != self.node_id) {
                debug!(waited = ?start.elapsed(), "seeds answered");
                return Ok(());
            }
            let seeds_all_foreign = !seed_addrs.is_empty()
                && seed_addrs
                    .iter()
                    .all(|a| view.incompatible.iter().any(|i| i.gossip_addr == *a));
            let now = Instant::now();
            if seeds_all_foreign || now >= deadline {
                let first = view
                    .incompatible
                    .iter()
                    .find(|i| seed_addrs.contains(&i.gossip_addr))
                    .or_else(|| view.incompatible.first());
                return Err(match first {
                    Some(peer) => MembershipError::Incompatible {
                        peer: peer.gossip_addr,
                        peer_cluster_id: peer.cluster_id.clone(),
                        peer_shards: peer.shards,
                        cluster_id: self.cluster_id.clone(),
                        shards: self.shards,
                    },
                    None => MembershipError::NoSeedAnswered {
                        seeds: self.seeds.clone(),
                        waited: now.duration_since(start),
                    },
                });
            }
            tokio::time::sleep(poll.min(deadline - now)).await;
        }
    }

    /// Publishes this node's state, e.g. `live` once it is ready to own shards.
    pub async fn set_state(&self, state: MemberState) {
        let mut guard = self.chitchat.lock().await;
        guard.self_node_state().set(keys::STATE, state.as_str());
        debug!(state = %state, "member state published");
    }

    /// Publishes this node's load (e.g. events/s) for placement decisions and the UI.
    pub async fn set_load(&self, load: u64) {
        let mut guard = self.chitchat.lock().await;
        guard.self_node_state().set(keys::LOAD, load);
    }

    /// Publishes the catalog version this node has installed (see [`keys::CATALOG`]).
    pub async fn set_catalog(&self, version: u64) {
        let mut guard = self.chitchat.lock().await;
        guard.self_node_state().set(keys::CATALOG, version);
    }

    /// A receiver of the live members (as [`Membership::members`]) that changes when a member
    /// joins, dies, or changes state or addresses — the trigger for the placement leader to
    /// recompute. Load changes alone do not wake it (they change every second); the `load`
    /// in the value is as of the last change, so read [`Membership::members`] for fresh load.
    /// As with any `tokio::sync::watch`, do not hold a borrow of the value across an `.await`:
    /// it blocks the task that publishes changes.
    pub fn watch(&self) -> watch::Receiver<Vec<Member>> {
        self.members_rx.clone()
    }

    /// Leaves the cluster politely: publishes `leaving`, gives gossip a few rounds to carry it
    /// to the peers (so they move shards away before the failure detector would notice), then
    /// stops gossip and frees the UDP port.
    pub async fn shutdown(self) -> Result<(), MembershipError> {
        self.set_state(MemberState::Leaving).await;
        let has_peers = {
            let guard = self.chitchat.lock().await;
            let any = guard.live_nodes().any(|id| *id != self.self_id);
            any
        };
        if has_peers {
            tokio::time::sleep(self.gossip_interval * 3).await;
        }
        self.watch_task.abort();
        info!(node_id = self.node_id, "gossip membership stopped");
        self.handle
            .shutdown()
            .await
            .map_err(|e| MembershipError::Gossip(format!("stopping chitchat: {e:#}")))
    }

    fn ours(&self) -> Ours {
        Ours {
            self_id: self.self_id.clone(),
            cluster_id: self.cluster_id.clone(),
            shards: self.shards,
        }
    }

    async fn view(&self) -> View {
        let ours = self.ours();
        let guard = self.chitchat.lock().await;
        classify(
            guard
                .live_nodes()
                .filter_map(|id| guard.node_state(id).map(|s| (id, s))),
            &ours,
        )
    }
}

impl fmt::Debug for Membership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Membership")
            .field("node_id", &self.node_id)
            .field("gossip_addr", &self.gossip_addr())
            .field("cluster_id", &self.cluster_id)
            .field("shards", &self.shards)
            .finish_non_exhaustive()
    }
}

/// Checks that a seed is `HOST:PORT` with a port in range, so that a typo fails at start with
/// a clear message (chitchat would only log a DNS failure every minute).
fn validate_seed(seed: &str) -> Result<(), MembershipError> {
    let bad = |reason: &str| MembershipError::BadSeed {
        seed: seed.to_string(),
        reason: reason.to_string(),
    };
    if let Ok(addr) = seed.parse::<SocketAddr>() {
        if addr.port() == 0 {
            return Err(bad("port 0 cannot be dialled"));
        }
        return Ok(());
    }
    let Some((host, port)) = seed.rsplit_once(':') else {
        return Err(bad("no port"));
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err(bad(
            "an IPv6 address must be written in brackets, [ADDR]:PORT",
        ));
    }
    if port.is_empty() {
        return Err(bad("no port"));
    }
    match port.parse::<u16>() {
        Ok(0) => Err(bad("port 0 cannot be dialled")),
        Ok(_) => Ok(()),
        Err(_) => Err(bad(&format!("`{port}` is not a port number (1-65535)"))),
    }
}

/// Follows chitchat's live-node watcher, republishes our cluster's members when they change,
/// and logs joins, departures and (once each) nodes of other clusters.
async fn watch_members(
    mut live_rx: watch::Receiver<BTreeMap<ChitchatId, NodeState>>,
    members_tx: watch::Sender<Vec<Member>>,
    ours: Ours,
) {
    let mut warned: HashMap<SocketAddr, (String, u32)> = HashMap::new();
    while live_rx.changed().await.is_ok() {
        let view = {
            let live = live_rx.borrow_and_update();
            classify(live.iter(), &ours)
        };
        for i in &view.incompatible {
            let key = (i.cluster_id.clone(), i.shards);
            if warned.get(&i.gossip_addr) != Some(&key) {
                warn!(
                    peer = %i.gossip_addr,
                    peer_cluster_id = %i.cluster_id,
                    peer_shards = i.shards,
                    cluster_id = %ours.cluster_id,
                    shards = ours.shards,
                    "ignoring a Starling node of another cluster"
                );
                warned.insert(i.gossip_addr, key);
            }
        }
        members_tx.send_if_modified(|current| {
            if same_membership(current, &view.members) {
                return false;
            }
            for m in &view.members {
                match current.iter().find(|c| c.node_id == m.node_id) {
                    None => info!(node_id = m.node_id, name = %m.name, gossip = %m.gossip_addr, state = %m.state, "member joined"),
                    Some(c) if c.state != m.state => info!(node_id = m.node_id, name = %m.name, state = %m.state, "member state changed"),
                    Some(_) => {}
                }
            }
            for c in current.iter() {
                if !view.members.iter().any(|m| m.node_id == c.node_id) {
                    info!(node_id = c.node_id, name = %c.name, "member gone");
                }
            }
            *current = view.members.clone();
            true
        });
    }
}

/// A chitchat transport that hands out a socket bound beforehand, so that the bound address
/// (port 0 → a real port) is known before chitchat's node id must be built. Opens once.
struct PreBound {
    socket: std::sync::Mutex<Option<Box<dyn Socket>>>,
}

impl PreBound {
    fn new(socket: Box<dyn Socket>) -> PreBound {
        PreBound {
            socket: std::sync::Mutex::new(Some(socket)),
        }
    }
}

#[async_trait::async_trait]
impl Transport for PreBound {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let taken = match self.socket.lock() {
            Ok(mut guard) => guard.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        taken.ok_or_else(|| anyhow::anyhow!("gossip socket for {listen_addr} already in use"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_are_validated() {
        for good in ["127.0.0.1:7072", "node-1:7072", "[::1]:7072", "a.b.c:1"] {
            assert!(validate_seed(good).is_ok(), "{good}");
        }
        for bad in [
            "nonsense",
            "host:99999",
            "host:",
            ":7072",
            "",
            "host:0",
            "10.0.0.1:0",
            "::1:7072",
            "host:x",
        ] {
            let err = validate_seed(bad).err().map(|e| e.to_string());
            assert!(
                err.as_deref().is_some_and(|e| e.contains("HOST:PORT")),
                "{bad}: {err:?}"
            );
        }
    }

    #[test]
    fn member_state_round_trips() {
        for s in [
            MemberState::Joining,
            MemberState::Live,
            MemberState::Leaving,
        ] {
            assert_eq!(s.as_str().parse::<MemberState>(), Ok(s));
        }
        assert!("dead".parse::<MemberState>().is_err());
    }
}
