//! How a node finds and joins its cluster: the settings the cluster shell starts from. Here
//! rather than with the node's other settings so that the cluster shell depends on nothing
//! of the node that starts it (no import circle).

use std::net::SocketAddr;

use super::PeerNet;

/// How a node finds and joins its cluster.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterConfig {
    /// The cluster's name; a node of another cluster is refused.
    pub cluster_id: String,
    /// A readable name for this node (defaults to one derived from its id).
    pub node_name: Option<String>,
    /// Where gossip listens (UDP). Port 0 picks a free one.
    pub gossip_addr: SocketAddr,
    /// Gossip addresses (`HOST:PORT`) of members to join through; empty starts a new cluster.
    pub seeds: Vec<String>,
    /// Where the peer listener binds; `None`: the QUIC front door's IP, a port the OS picks.
    /// Peers find it through gossip, so it needs no fixed port unless a firewall does.
    pub peer_addr: Option<SocketAddr>,
    /// The network peer traffic uses: QUIC, or an in-memory network shared by nodes started
    /// in one process (tests without sockets for peers).
    pub peer_net: PeerNet,
    /// Shards of the cluster, fixed when it is created.
    pub shards: u32,
    /// R, the nodes that hold each shard (owner included), set when the cluster is created
    /// (the first leader proposes its own); 0 means the default, 1.
    pub replication: u32,
}
