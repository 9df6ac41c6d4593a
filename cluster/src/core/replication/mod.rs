//! The decisions of shard replication (ARCHITECTURE §6), as pure code: every shard's log is
//! copied to R − 1 replicas, so that losing its owner loses no acknowledged event. The node's
//! shell (`starling-node`, `cluster/replication/`) reads and writes logs, carries fetches
//! over QUIC, proposes commands through Raft and waits; everything it decides, it asks of
//! this module, which a seeded simulation (`tests/replication_sim.rs`) drives through
//! thousands of faults with the same types.
//!
//! # Protocol (Kafka's, reduced to what Starling needs)
//!
//! - **Pull.** A replica fetches from the owner, one long-polling fetch per owner for all
//!   the shards it copies from it ([`copied_by_owner`]), giving for each (topic, shard) its
//!   log end and the epoch of the newest owner it holds entries of. Catching up and
//!   following are the same loop.
//! - **Same offsets.** The replica appends each entry at the offset the owner gave it, so
//!   one shard has one log, whichever node holds it. A move (which, with replication, goes
//!   only to an in-sync replica) and a promotion ([`promoted`]) both continue the same
//!   sequence.
//! - **Epoch marks.** Before its first write at a new epoch, an owner records where that
//!   epoch starts in the shard's log ([`needs_mark`]), and replicas copy the marks
//!   ([`marks_within`]). A replica whose copy goes past the end of its newest epoch in the
//!   owner's history holds entries that owner never had (written by an owner that lost the
//!   shard before they were copied, so never acknowledged with `acks = all`): the owner
//!   tells it to truncate there ([`truncate_to`], Kafka's leader-epoch truncation). A
//!   replica whose newest epoch the owner never had is told so, with the owner's newest
//!   epoch below it, and cuts its own entries of newer epochs too ([`Truncation::cut`],
//!   Kafka's KIP-279).
//! - **Acknowledgement.** The log end a replica sends is what it holds; an owner answers a
//!   publish to an `acks = all` topic only once every in-sync replica of the shard (the
//!   table's `replicas`) reported an end at or past the publish's entries ([`Progress`]).
//! - **In sync.** A new replica joins as `joining`; once a fetch leaves it level with the
//!   owner ([`Levels`]) it proposes `ReplicaInSync` at the owner's epoch, naming the version
//!   of the shard's replica lists it saw when it sent that fetch (the table refuses a stale
//!   one). Replicas that gossip reports dead are removed by the Raft leader, so an owner
//!   never waits on a dead one for longer than failure detection takes; one that is alive
//!   but does not confirm a publish within [`REPLICA_LAG_MAX`] is taken out by its owner
//!   (`ReplicaOutOfSync`, Kafka's ISR shrink, which raises the version) and returns by the
//!   same report once it has caught up.
//! - **Once per shard.** A retried publish is logged once per shard by whichever node holds
//!   the shard's log ([`Seen`]).
//! - **Promotion.** When an owner dies the leader promotes an in-sync replica; the new owner
//!   replays the shard's log into its dataflows, rebuilding the shard's state.

mod progress;
mod roles;
mod seen;
mod truncation;

pub use progress::{
    check_min_insync, AckError, AckVerdict, AckWait, Lagging, NotEnoughReplicas, Progress,
    REPLICA_LAG_MAX,
};
pub use roles::{copied_by_owner, promoted};
pub use seen::{Claimed, Origin, Seen, SEEN_CAPACITY};
pub use truncation::{
    caught_up, marks_within, needs_mark, truncate_to, EpochMark, Levels, Truncation,
};
