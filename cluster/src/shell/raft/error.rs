//! Why a Raft operation or a proposal failed, each with what the caller can do about it.

use std::time::Duration;

use thiserror::Error;

use super::store::StoreError;
use crate::core::table::NodeId;

/// Why a Raft operation failed. Each variant says what the caller can do about it.
#[derive(Debug, Error)]
pub enum RaftError {
    /// The node's Raft directory could not be opened or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The settings are inconsistent (for example an election timeout below the heartbeat).
    #[error("invalid Raft settings: {0}")]
    Settings(String),
    /// Membership changes are made by the leader; call this on it.
    #[error("node {me} is not the Raft leader (the leader is {leader:?}); ask the leader")]
    NotLeader { me: NodeId, leader: Option<NodeId> },
    /// Removing the last voter would leave nobody to decide anything.
    #[error("node {0} is the only voter and cannot be removed")]
    LastVoter(NodeId),
    /// openraft refused a membership change (another change in progress, unknown learner).
    #[error("membership change refused: {0}")]
    Membership(String),
    /// The Raft core stopped (shut down, or a storage failure it cannot survive).
    #[error("the Raft core stopped: {0}")]
    Stopped(String),
    /// Recording the node in the cluster state failed.
    #[error(transparent)]
    Propose(#[from] ProposeError),
}

/// Why a proposal has no outcome.
#[derive(Debug, Error)]
pub enum ProposeError {
    /// No leader was known, or reachable, within the timeout (an election is going on, or
    /// this node is cut off from the majority). Nothing was applied; safe to retry.
    #[error("no Raft leader reachable within {0:?}")]
    NoLeader(Duration),
    /// The proposal may or may not have been committed: the leader was asked but did not
    /// answer. Read [`ClusterRaft::state`](super::ClusterRaft::state) before retrying a command that is not idempotent.
    #[error("the leader ({leader:?}) did not confirm the proposal: {reason}")]
    Uncertain {
        leader: Option<NodeId>,
        reason: String,
    },
    /// The leader refused the request itself (too large, wrong cluster).
    #[error("the leader refused the proposal: {0}")]
    Refused(String),
    /// The Raft core of this node stopped.
    #[error("the Raft core stopped: {0}")]
    Stopped(String),
}
