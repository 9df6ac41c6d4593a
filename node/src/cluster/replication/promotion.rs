//! Promotion: when the table makes this node the owner of shards it copied, writes for them
//! wait until their logged history is replayed into this node's dataflows (new events first
//! would make the replayed ones late), then the dataflows are checkpointed. Which shards
//! were promoted is the core's [`promoted`](starling_cluster::replication::promoted).

use std::sync::Arc;
use std::time::Instant;

use starling_cluster::ClusterState;

use super::lock;
use crate::cluster::Shared;
use crate::EngineError;

/// Refuses a write for `shards` while it must wait on this node (see
/// `Replication::recovering`), saying why.
pub(in crate::cluster) fn check_ready(s: &Shared, shards: &[u32]) -> Result<(), EngineError> {
    let table = s.current();
    let watched = lock(&s.replication.watched).clone();
    let recovering = lock(&s.replication.recovering);
    for &shard in shards {
        if recovering.contains(&shard) {
            return Err(EngineError::Unavailable(format!(
                "shard {shard} is being rebuilt from its log on its new owner; retry"
            )));
        }
        let now = table.table.get(shard).map(|e| e.epoch).ok();
        let seen = watched
            .as_ref()
            .and_then(|w| w.table.get(shard).ok().map(|e| e.epoch));
        if seen < now {
            return Err(EngineError::Unavailable(format!(
                "shard {shard} changed owner a moment ago; retry"
            )));
        }
    }
    Ok(())
}

/// The state watcher looked at `st`: `promoted` are recovering until [`recovered`].
pub(in crate::cluster) fn watching(s: &Shared, st: &Arc<ClusterState>, promoted: &[u32]) {
    lock(&s.replication.recovering).extend(promoted.iter().copied());
    *lock(&s.replication.watched) = Some(Arc::clone(st));
}

/// The shards whose logged history is still being replayed here (writes for them wait):
/// what `/readyz` names while there are any.
pub(in crate::cluster) fn rebuilding(s: &Shared) -> Vec<u32> {
    lock(&s.replication.recovering).iter().copied().collect()
}

/// Writes for `shards` may go ahead: their history is in the dataflows.
pub(in crate::cluster) fn recovered(s: &Shared, shards: &[u32]) {
    let mut recovering = lock(&s.replication.recovering);
    for shard in shards {
        recovering.remove(shard);
    }
}

/// As a newly promoted owner: feeds each shard's logged events, up to where this node's own
/// epoch starts (what it appended since is in its dataflows already), to the dataflows, then
/// checkpoints them so a restart does not depend on the replay.
pub(in crate::cluster) async fn take_over(
    s: &Arc<Shared>,
    shards: Vec<u32>,
) -> Result<(), EngineError> {
    let engine = s.engine()?;
    let st = s.current();
    let e2 = Arc::clone(&engine);
    let s2 = Arc::clone(s);
    let started = Instant::now();
    let events = tokio::task::spawn_blocking(move || -> Result<u64, EngineError> {
        crate::cluster::handoff::readopt(&s2, &e2, &shards)?;
        let Some(store) = e2.store() else {
            return Ok(0);
        };
        let log = store.log();
        let topics = log.topics()?;
        let mut events = 0;
        for shard in &shards {
            let epoch = st.table.get(*shard).map_or(0, |e| e.epoch.0);
            for topic in &topics {
                if e2.topic_spec(topic).is_err() {
                    continue;
                }
                // The end first, then the mark: an append in between is after both.
                let next = log.next_offset(topic, *shard)?;
                let mine = log
                    .epoch_marks(topic, *shard)?
                    .into_iter()
                    .find(|(e, _)| *e >= epoch)
                    .map(|(_, start)| start);
                let end = mine.map_or(next, |m| m.min(next));
                events += e2.replay_shard(topic, *shard, end)?;
            }
        }
        crate::cluster::handoff::checkpoint_all(&e2);
        Ok(events)
    })
    .await
    .map_err(|e| EngineError::Internal(e.to_string()))??;
    tracing::info!(
        events,
        millis = started.elapsed().as_millis() as u64,
        "took over shards of a node that died: their logged events are replayed"
    );
    Ok(())
}
