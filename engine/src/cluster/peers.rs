//! One pooled QUIC connection per peer, for forwarding, Raft and merged subscriptions.
//!
//! A peer is trusted by the certificate fingerprint it gossips: node-to-node traffic is as
//! trustworthy as the gossip network (see docs/scaling.md; a cluster CA is the next step).
//! A connection that closed is dropped from the pool and opened again on next use.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use starling_cluster::NodeId;

use crate::client::quic::{ClientError, QuicClient, Trust};

/// How to reach a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerAddr {
    pub quic: SocketAddr,
    pub fingerprint: String,
}

/// The pool.
#[derive(Default)]
pub struct Peers {
    addrs: Mutex<HashMap<NodeId, PeerAddr>>,
    open: tokio::sync::Mutex<HashMap<NodeId, Arc<QuicClient>>>,
}

impl Peers {
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

    /// The open connection to a peer, opened if needed.
    pub async fn client(&self, node: NodeId) -> Result<Arc<QuicClient>, ClientError> {
        let addr = self.addr(node).ok_or_else(|| {
            ClientError::Protocol(format!("node {node:016x} is not known (no gossip from it)"))
        })?;
        let mut open = self.open.lock().await;
        if let Some(c) = open.get(&node) {
            if c.is_open() && c.connection().remote_address() == addr.quic {
                return Ok(Arc::clone(c));
            }
        }
        let c =
            Arc::new(QuicClient::connect(addr.quic, Trust::Fingerprint(addr.fingerprint)).await?);
        open.insert(node, Arc::clone(&c));
        Ok(c)
    }

    /// Forgets a peer's connection after a failure, so the next call reconnects.
    pub async fn reset(&self, node: NodeId) {
        self.open.lock().await.remove(&node);
    }
}
