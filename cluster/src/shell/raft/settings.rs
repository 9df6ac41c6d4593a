//! The Raft shell's timing and size limits, apart from the shell that uses them: one place to
//! read (and tune) how fast elections, snapshots and proposals are.

use std::time::Duration;

/// Timing and size limits of the Raft shell. The defaults suit a LAN (and loopback tests):
/// a leader heartbeats every 100 ms and a follower that hears nothing for a random 300–600 ms
/// starts an election, so a dead leader is replaced in well under a second while a few
/// delayed heartbeats do not cause needless elections.
#[derive(Clone, Debug)]
pub struct RaftSettings {
    /// How often the leader sends heartbeats (and replication) to each peer.
    pub heartbeat: Duration,
    /// The shortest silence after which a follower calls an election.
    pub election_timeout_min: Duration,
    /// The longest; each follower draws its timeout between the two, so that elections
    /// rarely collide.
    pub election_timeout_max: Duration,
    /// Take a snapshot (the serialized `ClusterState`) every this many applied entries,
    /// then purge the log up to it: this bounds the log on disk and in memory.
    pub snapshot_every: u64,
    /// Entries kept before the snapshot point, so that a briefly lagging follower catches
    /// up from the log rather than by receiving a whole snapshot.
    pub keep_after_snapshot: u64,
    /// How long [`ClusterRaft::propose`](super::ClusterRaft::propose) waits for a leader and for its proposal to commit.
    pub propose_timeout: Duration,
    /// How long [`ClusterRaft::add_node`](super::ClusterRaft::add_node) waits for a new learner to catch up before
    /// leaving it a learner (the leader promotes it later, [`ClusterRaft::promote`](super::ClusterRaft::promote)).
    pub catch_up_timeout: Duration,
    /// The largest RPC (request or reply) accepted, in bytes; bounds what a hostile or
    /// broken peer can make a node allocate and parse.
    pub max_rpc_bytes: usize,
}

impl Default for RaftSettings {
    fn default() -> Self {
        RaftSettings {
            heartbeat: Duration::from_millis(100),
            election_timeout_min: Duration::from_millis(300),
            election_timeout_max: Duration::from_millis(600),
            snapshot_every: 1000,
            keep_after_snapshot: 100,
            propose_timeout: Duration::from_secs(5),
            catch_up_timeout: Duration::from_secs(5),
            max_rpc_bytes: 64 << 20,
        }
    }
}
