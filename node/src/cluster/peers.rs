//! One pooled QUIC connection per peer, for forwarding, Raft and merged subscriptions.
//!
//! A peer is trusted by the certificate fingerprint it gossips: node-to-node traffic is as
//! trustworthy as the gossip network (see docs/scaling.md; a cluster CA is the next step).
//! A connection that closed is dropped from the pool and opened again on next use.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use starling_cluster::NodeId;

use starling_client::{ClientError, Trust};

use super::peer_client::PeerClient;
use super::peer_link::PeerNet;

/// How to reach a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerAddr {
    pub peer: SocketAddr,
    pub fingerprint: String,
}

/// Which connection to a peer: bulk data (forwards, subscriptions, reads) or control (Raft,
/// watermark marks). Kept apart so Raft heartbeats never wait behind forwards held by
/// back-pressure in the peer's per-connection request limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Lane {
    Data,
    Control,
    /// Replicas fetching from owners: an owner holds a forward until its replicas fetched
    /// it, so fetches must never queue behind forwards on the same connection's stream
    /// limit (that deadlocks until the ack timeout).
    Replica,
}

/// How long opening a connection to a peer may take before the call fails (and is retried
/// by its caller).
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);
/// A peer silent this long (no packet, keep-alives every second) is taken as gone: requests
/// to it fail and are routed again. Long enough that a peer busy under back-pressure (its
/// QUIC stack still answers) is never cut off; short enough that a frozen one is noticed in
/// about the time gossip takes to declare it dead.
const PEER_IDLE: std::time::Duration = std::time::Duration::from_secs(5);

/// How long after a failed connect calls to the same peer fail at once instead of trying
/// again. Without it every call queued on the slot tried its own connect in turn, so with
/// a peer out of reach a publish could wait many connect timeouts, far past its own
/// placement deadline.
const RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// One connection to a peer, and the last failed attempt to open it.
#[derive(Default)]
struct SlotState {
    client: Option<Arc<PeerClient>>,
    failed: Option<(std::time::Instant, String)>,
}

type Slot = Arc<tokio::sync::Mutex<SlotState>>;

/// The pool.
pub struct Peers {
    /// The network peer links use (QUIC, or in-memory in tests).
    net: PeerNet,
    /// This node's own peer listener.
    me: Option<SocketAddr>,
    addrs: Mutex<HashMap<NodeId, PeerAddr>>,
    /// One slot per (peer, lane): a slow connect to one peer never blocks calls to another.
    slots: Mutex<HashMap<(NodeId, Lane), Slot>>,
}

impl Peers {
    /// An empty pool whose links go over `net`; `me` is this node's own listener.
    pub fn new(net: PeerNet, me: Option<SocketAddr>) -> Peers {
        Peers {
            net,
            me,
            addrs: Mutex::default(),
            slots: Mutex::default(),
        }
    }

    /// Records (or updates) where a peer is; a changed address drops the old connection on
    /// next use.
    pub fn learn(&self, node: NodeId, addr: PeerAddr) {
        if let Ok(mut a) = self.addrs.lock() {
            a.insert(node, addr);
        }
    }

    /// Where a peer is, if known.
    pub fn addr(&self, node: NodeId) -> Option<PeerAddr> {
        self.addrs.lock().ok().and_then(|a| a.get(&node).cloned())
    }

    /// The open data connection to a peer, opened if needed.
    pub async fn client(&self, node: NodeId) -> Result<Arc<PeerClient>, ClientError> {
        self.client_on(node, Lane::Data).await
    }

    /// The open control connection to a peer (Raft, marks), opened if needed.
    pub async fn control(&self, node: NodeId) -> Result<Arc<PeerClient>, ClientError> {
        self.client_on(node, Lane::Control).await
    }

    /// The open replication connection to a peer (fetches), opened if needed.
    pub async fn replica(&self, node: NodeId) -> Result<Arc<PeerClient>, ClientError> {
        self.client_on(node, Lane::Replica).await
    }

    async fn client_on(&self, node: NodeId, lane: Lane) -> Result<Arc<PeerClient>, ClientError> {
        let addr = self.addr(node).ok_or_else(|| {
            ClientError::Protocol(format!("node {node:016x} is not known (no gossip from it)"))
        })?;
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(slots.entry((node, lane)).or_default())
        };
        let mut open = slot.lock().await;
        if let Some(c) = open.client.as_ref() {
            if c.is_open() && c.remote() == addr.peer {
                return Ok(Arc::clone(c));
            }
        }
        if let Some((at, why)) = &open.failed {
            if at.elapsed() < RETRY_AFTER {
                return Err(ClientError::Protocol(format!(
                    "node {node:016x} could not be reached a moment ago ({why})"
                )));
            }
        }
        let connect = PeerClient::connect_on(
            &self.net,
            self.me,
            addr.peer,
            Trust::Fingerprint(addr.fingerprint),
            PEER_IDLE,
        );
        let c = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                open.failed = Some((std::time::Instant::now(), e.to_string()));
                return Err(e);
            }
            Err(_) => {
                let why = format!(
                    "node {node:016x} at {} did not answer within {CONNECT_TIMEOUT:?}",
                    addr.peer
                );
                open.failed = Some((std::time::Instant::now(), why.clone()));
                return Err(ClientError::Protocol(why));
            }
        };
        let c = Arc::new(c);
        open.client = Some(Arc::clone(&c));
        open.failed = None;
        Ok(c)
    }

    /// The connection slots of a peer, every lane.
    fn slots_of(&self, node: NodeId) -> Vec<Slot> {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        [Lane::Data, Lane::Control, Lane::Replica]
            .iter()
            .filter_map(|l| slots.get(&(node, *l)).cloned())
            .collect()
    }

    /// Closes every connection to a peer gossip declared dead: requests in flight to it fail
    /// at once and are routed again, instead of waiting for the idle timeout.
    pub async fn close_dead(&self, node: NodeId) {
        for slot in self.slots_of(node) {
            if let Some(c) = slot.lock().await.client.take() {
                c.close(b"declared dead by gossip");
            }
        }
    }

    /// Forgets a peer's connections after a failure, so the next call reconnects.
    pub async fn reset(&self, node: NodeId) {
        for slot in self.slots_of(node) {
            if let Ok(mut s) = slot.try_lock() {
                s.client = None;
            }
        }
    }
}
