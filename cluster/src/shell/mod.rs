//! The thin I/O shell around [`crate::core`]: gossip membership (a chitchat runner over UDP)
//! and the Raft glue (openraft, its network and its on-disk store). These modules own the
//! tasks, sockets, files and clocks, and leave every decision to the pure core, so that what
//! the simulations in `cluster/tests` check is what runs — as `quinn` is a tokio shell feeding
//! `quinn-proto`. Keep it thin: a rule that can be written without I/O belongs in the core.
//!
//! The node's own shell (`starling-node`'s `cluster/`: peer transport, replication fetches,
//! the leader loop) sits above this crate and calls the same core.

pub mod membership;
pub mod raft;
