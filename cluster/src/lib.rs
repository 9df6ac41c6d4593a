//! Starling's cluster layer: gossip membership (chitchat), the Raft-agreed shard table,
//! node-to-node QUIC transport, replication and shard hand-off. Knows nothing of timely.
//!
//! Empty until the cluster issue: Starling runs on one node for now.
