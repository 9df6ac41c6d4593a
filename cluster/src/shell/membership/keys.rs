//! The gossip keys a Starling node publishes, and the life state among them. Public so that
//! tools (e.g. a debug dump of the chitchat state) and other shells read the same names.

use std::fmt;
use std::str::FromStr;

/// The node's [`NodeId`](crate::NodeId), decimal.
pub const NODE_ID: &str = "node_id";
/// A human-readable name for logs and the UI.
pub const NAME: &str = "name";
/// Where the node's peer listener (forwards, hand-off, replication, Raft) listens.
pub const PEER_ADDR: &str = "peer_addr";
/// SHA-256 of the node's QUIC certificate (hex), so peers can pin it.
pub const PEER_FINGERPRINT: &str = "peer_fingerprint";
/// Where the node's HTTP API listens.
pub const HTTP_ADDR: &str = "http_addr";
/// The Starling cluster id the node was started for.
pub const CLUSTER_ID: &str = "cluster_id";
/// The shard count the node was started for (fixed at cluster creation).
pub const SHARDS: &str = "shards";
/// `joining`, `live` or `leaving`.
pub const STATE: &str = "state";
/// A load figure (e.g. events/s) for placement and the UI.
pub const LOAD: &str = "load";
/// The catalog version (`ClusterState::catalog_version`) the node has installed: every
/// agreed topic and dataflow up to it runs there.
pub const CATALOG: &str = "catalog";

/// Where a node is in its life. Published so that the placement leader only gives shards to
/// nodes that are ready (`live`) and moves them off nodes that announced their departure
/// (`leaving`) before the failure detector would notice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MemberState {
    /// Started, gossiping, not yet ready to own shards.
    Joining,
    /// Ready to own shards.
    Live,
    /// Shutting down: move its shards away, do not give it new ones.
    Leaving,
}

impl MemberState {
    /// The gossip value of this state.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Joining => "joining",
            MemberState::Live => "live",
            MemberState::Leaving => "leaving",
        }
    }
}

impl fmt::Display for MemberState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MemberState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "joining" => Ok(MemberState::Joining),
            "live" => Ok(MemberState::Live),
            "leaving" => Ok(MemberState::Leaving),
            other => Err(format!("unknown member state `{other}`")),
        }
    }
}
