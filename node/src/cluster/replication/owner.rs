//! The owner's side of a publish: before appending, refuse a shard short of `min_insync`
//! copies and mark where a new epoch starts in the log; after appending to an `acks = all`
//! topic, wait until every in-sync replica holds the entries, taking out (through Raft) a
//! replica that lags too long. The verdicts are
//! [`Progress`](starling_cluster::Progress)'s; this waits on tokio.

use std::time::{Duration, Instant};

use starling_cluster::replication::{needs_mark, AckVerdict, AckWait, Lagging, REPLICA_LAG_MAX};

use super::lock;
use crate::cluster::Shared;
use crate::EngineError;

/// How long a publish to an `acks = all` topic waits for its replicas.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// The topic's `min_insync` when its publishes are `acks = all`; `None` with `acks = leader`
/// (or an unknown topic), which waits for no copy but the owner's.
fn all_acks(s: &Shared, topic: &str) -> Option<u32> {
    s.engine()
        .ok()?
        .read_topic_spec(topic, |t| {
            (t.acks == starling_operators::definition::Acks::All).then_some(t.min_insync)
        })
        .ok()?
}

/// As owner, before appending to `shards` of `topic`: refuses the write while a shard has
/// fewer in-sync copies than the topic's `min_insync` (see
/// [`starling_cluster::replication::check_min_insync`]).
pub(in crate::cluster) fn check_min_insync(
    s: &Shared,
    topic: &str,
    shards: &[u32],
) -> Result<(), EngineError> {
    let Some(min) = all_acks(s, topic) else {
        return Ok(());
    };
    starling_cluster::replication::check_min_insync(&s.current(), topic, shards, min)
        .map_err(|e| EngineError::Unavailable(e.to_string()))
}

/// As owner, before appending to `shards` of `topic`: records where the current epoch of
/// each starts in the log, the first time this node writes at that epoch.
pub(in crate::cluster) fn mark_epochs(
    s: &Shared,
    topic: &str,
    shards: &[u32],
) -> Result<(), EngineError> {
    let engine = s.engine()?;
    let Some(store) = engine.store() else {
        return Ok(());
    };
    let log = store.log();
    let state = s.current();
    for &shard in shards {
        let Ok(entry) = state.table.get(shard) else {
            continue;
        };
        if entry.owner != Some(s.me) {
            return Err(EngineError::StaleEpoch(format!(
                "shard {shard} is no longer owned by this node"
            )));
        }
        let epoch = entry.epoch.0;
        let key = (topic.to_string(), shard);
        if lock(&s.replication.marked).get(&key) == Some(&epoch) {
            continue;
        }
        if needs_mark(&log.epoch_marks(topic, shard)?, epoch) {
            log.mark_epoch(topic, shard, epoch, log.next_offset(topic, shard)?)?;
        }
        lock(&s.replication.marked).insert(key, epoch);
    }
    Ok(())
}

/// As owner, after appending to `shards` of an `acks = all` topic: waits until every
/// in-sync replica of each shard holds the log up to its current end, as
/// [`Progress::check`](starling_cluster::Progress::check) decides, taking out the replicas it
/// finds lagging.
pub(in crate::cluster) async fn await_replicas(
    s: &Shared,
    topic: &str,
    shards: &[u32],
) -> Result<(), EngineError> {
    // Only `acks = all` publishes in a replicated cluster wait.
    let Some(min) = all_acks(s, topic) else {
        return Ok(());
    };
    if shards.is_empty() || s.current().replication_factor() <= 1 {
        return Ok(());
    }
    let engine = s.engine()?;
    let Some(store) = engine.store() else {
        return Ok(());
    };
    let log = store.log();
    let mut ends = Vec::with_capacity(shards.len());
    for &shard in shards {
        ends.push((shard, log.next_offset(topic, shard)?));
    }
    // The publish's clock for the lag limit starts here, like its timeout.
    let started = Instant::now();
    let deadline = started + ACK_TIMEOUT;
    let mut wait = AckWait::new(topic, ends, min);
    let mut state = s.state.clone();
    loop {
        let notified = s.replication.progressed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let table = s.current();
        let verdict = lock(&s.replication.progress)
            .check(&table.table, s.me, &mut wait, started.elapsed())
            .map_err(|e| EngineError::Unavailable(e.to_string()))?;
        let (missing, lagging) = match verdict {
            // A write that waited (for its replicas, or a paused process) may have outlived
            // this node's lease; by then the shard may have another owner.
            AckVerdict::Answer => return s.check_lease(),
            AckVerdict::Wait { missing, lagging } => (missing, lagging),
        };
        for l in lagging {
            demote(s, topic, l).await;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let missing: Vec<String> = missing
                .iter()
                .map(|(shard, r)| format!("{r:016x} (shard {shard})"))
                .collect();
            return Err(EngineError::Unavailable(format!(
                "the events were logged by their shard's owner but in-sync replicas {} did not \
                 confirm them within {ACK_TIMEOUT:?}; they may or may not be kept, retry",
                missing.join(", ")
            )));
        }
        tokio::select! {
            _ = &mut notified => {}
            _ = state.changed() => {}
            _ = tokio::time::sleep(left.min(Duration::from_millis(100))) => {}
        }
    }
}

/// As owner: takes a replica that a publish waited on for [`REPLICA_LAG_MAX`] out of what
/// publishes wait on, by proposing `ReplicaOutOfSync`, which raises the version of the
/// shard's replica lists. Publishes go on waiting on it until this node's table shows the
/// raise (see [`Progress`](starling_cluster::Progress) for why not before).
async fn demote(s: &Shared, topic: &str, l: Lagging) {
    if !lock(&s.replication.progress).begin_demote(l) {
        return;
    }
    let Lagging { shard, replica, .. } = l;
    tracing::warn!(shard, topic, replica = %format!("{replica:016x}"), waited = ?REPLICA_LAG_MAX, "a replica did not confirm in time; it no longer counts as in sync");
    match tokio::time::timeout(Duration::from_secs(2), s.propose(l.command())).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::debug!(shard, error = %e, "could not take a replica out of the in-sync set")
        }
        Err(_) => tracing::debug!(shard, "taking a replica out of the in-sync set timed out"),
    }
    lock(&s.replication.progress).end_demote(&l);
}
