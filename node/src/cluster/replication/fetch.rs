//! The replica's side: one fetch task per owner this node copies shards from, each a loop
//! of long-polling fetches. An answer is appended at the owner's offsets, or truncates the
//! copy where the owner says it diverged; a joining replica found level reports itself in
//! sync through Raft. Every step checks, under the lock a forward's claim takes, that this
//! node still copies the shard, so a promoted node's log never takes the old owner's entries.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use starling_cluster::replication::{copied_by_owner, Levels, Truncation};
use starling_cluster::{Command, Epoch, NodeId};
use starling_storage::EventLog;

use super::{lock, FETCH_ENTRIES};
use crate::cluster::Shared;
use crate::quic::wire::FetchItem;

/// How long an owner holds a fetch that finds nothing new.
const FETCH_WAIT_MS: u32 = 200;

/// Entries per shard read back at start for their publishes (see `replica_loop`).
const RECENT_ORIGINS: u64 = 256;

/// On every node: runs one fetch task per owner this node copies shards from.
pub(in crate::cluster) async fn replica_loop(s: Arc<Shared>) {
    // After a restart: the publishes of the newest entries, so that a forward retried
    // across the restart is still recognised.
    if let Ok(engine) = s.engine() {
        let found = tokio::task::spawn_blocking(move || engine.recent_origins(RECENT_ORIGINS))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        let mut seen = lock(&s.replication.seen);
        for key in found {
            seen.insert(key);
        }
    }
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        let owners: Vec<NodeId> = copied_by_owner(&s.current(), s.me).into_keys().collect();
        for owner in owners {
            if lock(&s.replication.fetching).insert(owner) {
                tokio::spawn(fetch_from(Arc::clone(&s), owner));
            }
        }
    }
}

/// Copies every shard this node replicates from `owner`, until it replicates none.
async fn fetch_from(s: Arc<Shared>, owner: NodeId) {
    loop {
        let st = s.current();
        let Some(shards) = copied_by_owner(&st, s.me).remove(&owner) else {
            break;
        };
        match fetch_once(&s, owner, &shards).await {
            Ok(true) => {}
            Ok(false) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) => {
                tracing::debug!(owner = %format!("{owner:016x}"), error = %e, "replica fetch failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    lock(&s.replication.fetching).remove(&owner);
}

/// One fetch from `owner` for `shards`; true when it brought anything.
async fn fetch_once(s: &Arc<Shared>, owner: NodeId, shards: &[(u32, u64)]) -> Result<bool, String> {
    let engine = s.engine().map_err(|e| e.to_string())?;
    let store = engine.store().ok_or("this node keeps no log")?;
    let log = Arc::clone(store.log());
    let topics: Vec<String> = engine
        .topics()
        .into_iter()
        .filter(|t| t.spec.time.is_some())
        .map(|t| t.spec.name)
        .collect();
    let mut items = Vec::with_capacity(topics.len() * shards.len());
    for (shard, _) in shards {
        for topic in &topics {
            let last_epoch = log
                .epoch_marks(topic, *shard)
                .map_err(|e| e.to_string())?
                .last()
                .map_or(0, |(e, _)| *e);
            items.push(FetchItem {
                topic: topic.clone(),
                shard: *shard,
                next: log.next_offset(topic, *shard).map_err(|e| e.to_string())?,
                last_epoch,
            });
        }
    }
    // The version of each shard's replica lists as this node sees them before it asks, sent
    // along, and named when a level answer makes it report itself in sync (see `demote`);
    // and the shards it saw itself joining.
    let (isr, joining_before): (Vec<(u32, u64)>, BTreeSet<u32>) = {
        let st = s.current();
        let mut isr = Vec::with_capacity(shards.len());
        let mut joining = BTreeSet::new();
        for (sh, ep) in shards {
            if let Ok(e) = st.table.get(*sh) {
                isr.push((*sh, e.isr));
                if e.joining.contains(&s.me) && e.epoch.0 == *ep {
                    joining.insert(*sh);
                }
            }
        }
        (isr, joining)
    };
    let client = s.peers.replica(owner).await.map_err(|e| e.to_string())?;
    let answer = tokio::time::timeout(
        Duration::from_millis(u64::from(FETCH_WAIT_MS)) + Duration::from_secs(5),
        client.fetch(s.me, shards.to_vec(), items, FETCH_WAIT_MS, isr.clone()),
    )
    .await
    .map_err(|_| "the owner did not answer in time".to_string())?
    .map_err(|e| e.to_string())?;
    // Still copying from this owner at these epochs? A table that changed meanwhile may have
    // promoted this node, whose log must then not take the old owner's entries.
    let now = s.current();
    let still = copied_by_owner(&now, s.me)
        .remove(&owner)
        .unwrap_or_default();
    let mut brought = false;
    let mut level = Levels::new(shards.iter().map(|(sh, _)| *sh));
    for f in answer {
        let (topic, shard) = (f.topic.clone(), f.shard);
        let epoch_now = shards
            .iter()
            .find(|(sh, _)| *sh == shard)
            .map_or(u64::MAX, |(_, e)| *e);
        if !still.contains(&(shard, epoch_now)) {
            continue;
        }
        if let Some(to) = f.truncate_to {
            let truncation = Truncation::from_answer(to, &f.marks);
            let s2 = Arc::clone(s);
            let l2 = Arc::clone(&log);
            let t2 = topic.clone();
            // Like an append (below): only while this node still copies the shard, so a
            // truncation never removes what it wrote after taking the shard over. The
            // publishes of the removed entries are forgotten under the same lock: a retry
            // must log them again, not find them logged (see `Seen::forget`).
            let cut = tokio::task::spawn_blocking(move || -> Result<Option<u64>, String> {
                let mut seen = lock(&s2.replication.seen);
                if !copied_by_owner(&s2.current(), s2.me)
                    .remove(&owner)
                    .unwrap_or_default()
                    .contains(&(shard, epoch_now))
                {
                    return Ok(None);
                }
                let marks = l2.epoch_marks(&t2, shard).map_err(|e| e.to_string())?;
                let next = l2.next_offset(&t2, shard).map_err(|e| e.to_string())?;
                let cut = truncation.cut(&marks, next);
                let removed = origins_from(l2.as_ref(), &t2, shard, cut)?;
                l2.truncate_from(&t2, shard, cut)
                    .map_err(|e| e.to_string())?;
                for (producer, batch) in removed {
                    seen.forget((producer, batch, shard));
                }
                Ok(Some(cut))
            })
            .await
            .map_err(|e| e.to_string())??;
            let Some(from) = cut else {
                continue;
            };
            tracing::warn!(topic = %topic, shard, from, owner = %format!("{owner:016x}"), "removed entries the shard's owner never had (written by an owner that lost the shard)");
            level.truncated(shard);
            brought = true;
            continue;
        }
        let n = f.payloads.len() as u64;
        if n > 0 {
            let e2 = Arc::clone(&engine);
            let s2 = Arc::clone(s);
            let t2 = topic.clone();
            let (first, payloads, marks) = (f.first, f.payloads, f.marks);
            // Under the lock a forward's claim takes: the check that this node still copies
            // the shard (once it owns it, its log takes only its own writes), the append and
            // the note of the copied publishes are one step for a retried forward, which so
            // either finds the publish noted or finds this node the owner first.
            let appended = tokio::task::spawn_blocking(move || -> Result<bool, String> {
                let mut seen = lock(&s2.replication.seen);
                let still = copied_by_owner(&s2.current(), s2.me)
                    .remove(&owner)
                    .unwrap_or_default()
                    .contains(&(shard, epoch_now));
                if !still {
                    return Ok(false);
                }
                let origins = e2
                    .append_replicated(&t2, shard, first, payloads)
                    .map_err(|e| e.to_string())?;
                for (p, b) in origins {
                    seen.insert((p, b, shard));
                }
                drop(seen);
                let Some(store) = e2.store() else {
                    return Ok(true);
                };
                for (epoch, start) in marks {
                    store
                        .log()
                        .mark_epoch(&t2, shard, epoch, start)
                        .map_err(|e| e.to_string())?;
                }
                Ok(true)
            })
            .await
            .map_err(|e| e.to_string())??;
            if !appended {
                continue;
            }
            brought = true;
        }
        level.copied(shard, f.first, n, f.owner_next);
    }
    // Level with the owner on every topic: a joining replica is in sync from here on.
    for (shard, epoch) in shards {
        let joining = joining_before.contains(shard)
            && now
                .table
                .get(*shard)
                .is_ok_and(|e| e.joining.contains(&s.me) && e.epoch.0 == *epoch);
        if !joining || !level.level(*shard) {
            continue;
        }
        if lock(&s.replication.reported)
            .get(shard)
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            continue;
        }
        lock(&s.replication.reported).insert(*shard, Instant::now());
        let command = Command::ReplicaInSync {
            shard: *shard,
            node: s.me,
            epoch: Epoch(*epoch),
            isr: isr
                .iter()
                .find(|(sh, _)| sh == shard)
                .map_or(0, |(_, v)| *v),
        };
        // Proposed on the side: a Raft majority out of reach must not stop the copying.
        let s2 = Arc::clone(s);
        let shard = *shard;
        tokio::spawn(async move {
            match tokio::time::timeout(Duration::from_secs(5), s2.propose(command)).await {
                Ok(Ok(())) => {
                    tracing::info!(shard, owner = %format!("{owner:016x}"), "replica in sync");
                }
                Ok(Err(e)) => {
                    tracing::debug!(shard, error = %e, "could not report a replica in sync")
                }
                Err(_) => tracing::debug!(shard, "reporting a replica in sync timed out"),
            }
        });
    }
    Ok(brought)
}

/// The publishes of the entries of `topic`/`shard` from offset `from` on, which a
/// truncation is about to remove. An entry that does not decode names none (the truncation
/// removes it all the same).
fn origins_from(
    log: &dyn EventLog,
    topic: &str,
    shard: u32,
    from: u64,
) -> Result<Vec<(u64, u64)>, String> {
    let mut out = Vec::new();
    let mut at = from;
    loop {
        let chunk = log
            .read(topic, shard, at, FETCH_ENTRIES)
            .map_err(|e| e.to_string())?;
        let Some(last) = chunk.last().map(|(o, _)| *o) else {
            return Ok(out);
        };
        for (_, bytes) in &chunk {
            if let Ok((_, _, Some(origin))) = crate::durable::record::decode_tagged(bytes) {
                out.push(origin);
            }
        }
        at = last + 1;
    }
}
