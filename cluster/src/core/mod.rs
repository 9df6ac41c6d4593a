//! The pure decisions of the cluster: what the shard table says, who should own a shard, when
//! a write is fenced, how watermarks merge, how a hand-off and replication proceed, where a
//! batch goes. Nothing here reads a clock, opens a socket or a file, or spawns a task: time
//! and messages are passed in, decisions come back as values.
//!
//! The split exists so that the same code that runs in production is what the seeded
//! simulations in `cluster/tests` drive through thousands of membership changes, lost
//! messages and crashes, deterministically — as `quinn-proto` (the QUIC state machine) is
//! kept apart from `quinn` (the tokio shell that feeds it). A module belongs here only if it
//! stays pure; anything that waits, reads the time or does I/O goes to [`crate::shell`], which
//! may use this module but never the reverse.

pub mod controller;
pub mod fence;
pub mod handoff;
pub mod placement;
pub mod replication;
pub mod routing;
pub mod state;
pub mod table;
pub mod watermark;
