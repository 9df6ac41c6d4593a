//! Shard replication (ARCHITECTURE §6): every shard's log is copied to R − 1 replicas, so
//! that losing its owner loses no acknowledged event.
//!
//! The protocol and every decision in it (truncation, acknowledgement against the in-sync
//! replicas, the in-sync set, retry claims, promotion) are pure code in
//! [`starling_cluster::replication`], where its module doc explains them and a seeded
//! simulation drives them. This is the shell around them: it reads and writes the log,
//! carries fetches to the owners, proposes the commands through Raft, and waits (for
//! progress, for a claim, for appends) on tokio.
//!
//! Split by role: [`owner`] (before and after an owner appends: `min_insync`, epoch marks,
//! waiting for the in-sync replicas), [`serve`] (the owner answering fetches), [`fetch`]
//! (the replica's fetch loop, appends and truncations), [`claim`] (a retried publish logged
//! once per shard) and [`promotion`] (a promoted owner replays its copy before taking
//! writes). This file holds the state they share.

mod claim;
mod fetch;
mod owner;
mod promotion;
mod serve;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use starling_cluster::replication::{Progress, Seen};
use starling_cluster::{ClusterState, NodeId};
use tokio::sync::Notify;

pub(super) use fetch::replica_loop;
pub(super) use owner::{await_replicas, check_min_insync, mark_epochs};
pub(super) use promotion::{check_ready, rebuilding, recovered, take_over, watching};
pub(super) use serve::serve_fetch;
pub(super) use starling_cluster::replication::promoted;

/// Entries per (topic, shard) in one answer.
const FETCH_ENTRIES: usize = 1024;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One node's replication state, both as an owner and as a replica.
#[derive(Default)]
pub(super) struct Replication {
    /// As owner: what each replica reported and which joining replicas are level, which
    /// every publish waiting for its replicas consults (and which demotions are being
    /// proposed).
    progress: Mutex<Progress>,
    /// Woken when a replica reports progress.
    progressed: Notify,
    /// Woken when this node appends to a shard it owns, for fetches waiting for entries.
    appended: Notify,
    /// As a promoted owner: shards whose log is still being replayed into this node's
    /// dataflows. Writes for them wait, so that replayed history reaches the dataflows
    /// before anything new (new events first would make the replayed ones late).
    recovering: Mutex<BTreeSet<u32>>,
    /// The table the state watcher last looked at for promotions: a write for a shard whose
    /// epoch it has not seen yet waits too, so none slips in before `recovering` is set.
    watched: Mutex<Option<Arc<ClusterState>>>,
    /// As owner: (topic, shard) → the newest epoch marked in the log, so that a write reads
    /// the marks only at the first write of an epoch.
    marked: Mutex<HashMap<(String, u32), u64>>,
    /// As replica: shard → when this node last reported itself in sync (a report is
    /// repeated, at most every second, while the table still lists it as joining).
    reported: Mutex<HashMap<u32, Instant>>,
    /// As replica: owners a fetch task runs for.
    fetching: Mutex<BTreeSet<NodeId>>,
    /// Publishes whose events for a shard are in this node's log, as owner or replica, and
    /// those being logged right now. Replica appends take it too (see `fetch_once`).
    seen: Mutex<Seen>,
    /// Signalled when an attempt to log a publish ends (see [`Replication::claim`]).
    settled: std::sync::Condvar,
}
