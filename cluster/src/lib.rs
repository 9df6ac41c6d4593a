//! Starling's cluster layer: gossip membership (chitchat), the Raft-agreed shard table,
//! shard placement and hand-off. Knows nothing of timely or of the engine: the engine feeds it
//! events ("member joined", "shard copied") and carries its messages over its own QUIC
//! endpoint.
//!
//! The decisions live in [`core`](crate::core) (the table, placement, controller, fencing,
//! watermark merge, hand-off, routing and replication bookkeeping): pure code with no clock,
//! socket or task, so that a simulation can drive them through thousands of membership
//! changes. The shells around them, in [`shell`](crate::shell) (membership, raft), stay thin.

pub mod core;
pub mod shell;

// Every module keeps its path from before the core/shell split (`starling_cluster::table`,
// `starling_cluster::raft`, ...), so no other crate had to change. `self::` because a bare
// `core` at the crate root would be ambiguous with the built-in `core` crate.
pub use self::core::{
    controller, fence, handoff, placement, replication, routing, state, table, watermark,
};
pub use self::shell::{membership, raft};

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
