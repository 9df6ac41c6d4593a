//! What gossip says, read: a peer's published key-values parsed, and every node sorted into
//! members of this cluster or nodes of another one. Pure functions of chitchat's state, kept
//! apart from the shell that runs chitchat so they can be read (and tested) on their own.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use chitchat::{ChitchatId, NodeState};

use super::{keys, Incompatible, Member, MemberState};
use tracing::debug;

use crate::core::table::NodeId;

/// This node's identity and cluster, to classify peers.
#[derive(Clone)]
pub(super) struct Ours {
    pub(super) self_id: ChitchatId,
    pub(super) cluster_id: String,
    pub(super) shards: u32,
}

/// A peer's published key-values, parsed.
pub(super) struct Peer {
    pub(super) generation: u64,
    pub(super) node_id: NodeId,
    pub(super) name: String,
    pub(super) gossip_addr: SocketAddr,
    pub(super) peer_addr: SocketAddr,
    pub(super) peer_fingerprint: String,
    pub(super) http_addr: SocketAddr,
    pub(super) cluster_id: String,
    pub(super) shards: u32,
    pub(super) state: MemberState,
    pub(super) load: u64,
    pub(super) catalog: u64,
}

impl Peer {
    pub(super) fn compatible(&self, ours: &Ours) -> bool {
        self.cluster_id == ours.cluster_id && self.shards == ours.shards
    }
}

/// Parses a node's key-values; `None` if it is not (yet) a complete Starling node — chitchat
/// may deliver a node's heartbeat before its keys, or a non-Starling chitchat user may share
/// the gossip cluster id.
pub(super) fn parse_peer(state: &NodeState) -> Option<Peer> {
    let id = state.chitchat_id();
    let parsed = (|| {
        Some(Peer {
            generation: id.generation_id,
            node_id: state.get(keys::NODE_ID)?.parse().ok()?,
            name: state.get(keys::NAME)?.to_string(),
            gossip_addr: id.gossip_advertise_addr,
            peer_addr: state.get(keys::PEER_ADDR)?.parse().ok()?,
            peer_fingerprint: state
                .get(keys::PEER_FINGERPRINT)
                .unwrap_or_default()
                .to_string(),
            http_addr: state.get(keys::HTTP_ADDR)?.parse().ok()?,
            cluster_id: state.get(keys::CLUSTER_ID)?.to_string(),
            shards: state.get(keys::SHARDS)?.parse().ok()?,
            state: state.get(keys::STATE)?.parse().ok()?,
            load: state.get(keys::LOAD)?.parse().ok()?,
            // Optional: a node that does not publish it has installed nothing it vouches for.
            catalog: state
                .get(keys::CATALOG)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        })
    })();
    if parsed.is_none() {
        debug!(peer = ?id, "gossip peer without complete Starling keys, ignored");
    }
    parsed
}

/// Live members of our cluster and live nodes of other clusters.
pub(super) struct View {
    pub(super) members: Vec<Member>,
    pub(super) incompatible: Vec<Incompatible>,
}

/// Splits live nodes into members of our cluster and others. A node id seen under two
/// incarnations (a restart before the old one was declared dead) is listed once, newest first.
pub(super) fn classify<'a>(
    nodes: impl Iterator<Item = (&'a ChitchatId, &'a NodeState)>,
    ours: &Ours,
) -> View {
    let mut members: BTreeMap<NodeId, (u64, Member)> = BTreeMap::new();
    let mut incompatible = Vec::new();
    for (id, state) in nodes {
        let Some(peer) = parse_peer(state) else {
            continue;
        };
        if *id != ours.self_id && !peer.compatible(ours) {
            incompatible.push(Incompatible {
                gossip_addr: peer.gossip_addr,
                node_id: peer.node_id,
                name: peer.name,
                cluster_id: peer.cluster_id,
                shards: peer.shards,
            });
            continue;
        }
        let generation = peer.generation;
        let member = Member {
            node_id: peer.node_id,
            name: peer.name,
            gossip_addr: peer.gossip_addr,
            peer_addr: peer.peer_addr,
            peer_fingerprint: peer.peer_fingerprint,
            http_addr: peer.http_addr,
            state: peer.state,
            load: peer.load,
            catalog: peer.catalog,
        };
        match members.get(&member.node_id) {
            Some((g, _)) if *g >= generation => {}
            _ => {
                members.insert(member.node_id, (generation, member));
            }
        }
    }
    incompatible.sort_by_key(|i| i.gossip_addr);
    View {
        members: members.into_values().map(|(_, m)| m).collect(),
        incompatible,
    }
}

/// Equal apart from load and catalog version: load changes every second and must not wake
/// every watcher; the catalog version is read by a submit that polls for it.
pub(super) fn same_membership(a: &[Member], b: &[Member]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.node_id == y.node_id
                && x.name == y.name
                && x.gossip_addr == y.gossip_addr
                && x.peer_addr == y.peer_addr
                && x.http_addr == y.http_addr
                && x.state == y.state
        })
}
