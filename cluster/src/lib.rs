//! Starling's cluster layer: gossip membership (chitchat), the Raft-agreed shard table,
//! shard placement and hand-off. Knows nothing of timely or of the engine: the engine feeds it
//! events ("member joined", "shard copied") and carries its messages over its own QUIC
//! endpoint.
//!
//! The decisions ([`table`], and the placement, hand-off and watermark modules) are pure code
//! with no clock, socket or task, so that a simulation can drive them through thousands of
//! membership changes; the shells around them (membership, raft) stay thin.

pub mod controller;
pub mod fence;
pub mod handoff;
pub mod membership;
pub mod placement;
pub mod raft;
pub mod replication;
pub mod routing;
pub mod state;
pub mod table;
pub mod watermark;

pub use controller::{complete, eligible, next_commands};
pub use fence::{check_write, Fence};
pub use handoff::{
    chunks_of, reconcile, straggler_route, Ended, Inbox, Outbox, Receive, Refused, Send,
    StragglerRoute,
};
pub use membership::{
    FailureDetection, Incompatible, Member, MemberState, Membership, MembershipConfig,
    MembershipError,
};
pub use placement::{targets, weight};
pub use raft::{ClusterRaft, ProposeError, RaftError, RaftSettings, RaftTransport, TransportError};
pub use replication::{
    check_min_insync, copied_by_owner, promoted, truncate_to, AckError, AckVerdict, AckWait,
    Lagging, Progress, Seen,
};
pub use routing::{epochs_for, route, Routed};
pub use state::{CatalogEntry, CatalogKind, ClusterState, Command, MemberInfo, Outcome};
pub use table::{shard_of_hash, Epoch, NodeId, ShardEntry, ShardId, ShardTable, TableError};
pub use watermark::WatermarkMerge;
