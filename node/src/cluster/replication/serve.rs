//! The owner answering a replica's fetch: check the epochs it fetches at, then hold the
//! fetch (long poll) until there is something new or the wait ends; each answer carries
//! the entries the replica is missing, the epoch marks within them, or where it must
//! truncate, and records its reported progress for the publishes waiting on it.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use starling_cluster::replication::{caught_up, marks_within, truncate_to};
use starling_cluster::{Epoch, NodeId};
use starling_storage::EventLog;

use super::{lock, Replication, FETCH_ENTRIES};
use crate::cluster::Shared;
use crate::quic::wire::{self, FetchItem, Fetched};
use crate::EngineError;

/// Payload bytes in one answer, well under the frame limit.
const FETCH_BYTES: usize = wire::MAX_FRAME / 4;

impl Replication {
    /// Wakes fetches waiting for entries.
    pub(in crate::cluster) fn appended(&self) {
        self.appended.notify_waiters();
    }
}

/// As owner: answers a replica's fetch.
pub(in crate::cluster) fn serve_fetch(
    s: &Shared,
    replica: NodeId,
    view: crate::cluster::FetchView<'_>,
    items: Vec<FetchItem>,
    wait_ms: u32,
) -> Result<Vec<Fetched>, EngineError> {
    let engine = s.engine()?;
    let store = engine
        .store()
        .ok_or_else(|| EngineError::BadRequest("this node keeps no log".into()))?;
    let log = store.log();
    let epochs = view.epochs;
    let table = s.current();
    for &(shard, epoch) in epochs {
        let e = table
            .table
            .get(shard)
            .map_err(|e| EngineError::BadRequest(e.to_string()))?;
        if e.owner != Some(s.me) || e.epoch != Epoch(epoch) {
            return Err(EngineError::StaleEpoch(format!(
                "shard {shard}: this node does not own it at epoch {epoch} (the table says {:?} \
                 at epoch {})",
                e.owner.map(|o| format!("{o:016x}")),
                e.epoch
            )));
        }
    }
    for item in &items {
        if !epochs.iter().any(|(sh, _)| *sh == item.shard) {
            return Err(EngineError::BadRequest(format!(
                "shard {} is fetched without its epoch",
                item.shard
            )));
        }
    }
    let wait = Duration::from_millis(u64::from(wait_ms.min(1000)));
    let deadline = Instant::now() + wait;
    loop {
        let notified = s.replication.appended.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let answer = read_for(s, log.as_ref(), replica, view, &items)?;
        let left = deadline.saturating_duration_since(Instant::now());
        let news = answer
            .iter()
            .any(|f| f.truncate_to.is_some() || !f.payloads.is_empty());
        if news || left.is_zero() {
            return Ok(answer);
        }
        s.block(async {
            let _ = tokio::time::timeout(left, notified).await;
        });
    }
}

/// One pass of a fetch: what each item's replica is missing, and its reported progress.
fn read_for(
    s: &Shared,
    log: &dyn EventLog,
    replica: NodeId,
    crate::cluster::FetchView { epochs, isr }: crate::cluster::FetchView<'_>,
    items: &[FetchItem],
) -> Result<Vec<Fetched>, EngineError> {
    let mut out = Vec::with_capacity(items.len());
    // Topics this node logs in a fetched shard that the replica did not ask for (its
    // catalog lags behind): an empty answer carrying this node's end keeps the replica
    // from counting itself level, and this node from counting it so.
    let mut unasked: BTreeSet<u32> = BTreeSet::new();
    let engine = s.engine()?;
    let asked: std::collections::HashSet<(&str, u32)> =
        items.iter().map(|i| (i.topic.as_str(), i.shard)).collect();
    for topic in log.topics()? {
        if !engine
            .read_topic_spec(&topic, |t| t.time.is_some())
            .unwrap_or(false)
        {
            continue;
        }
        for &(shard, _) in epochs {
            if asked.contains(&(topic.as_str(), shard)) {
                continue;
            }
            let owner_next = log.next_offset(&topic, shard)?;
            if owner_next > 0 {
                unasked.insert(shard);
                out.push(Fetched {
                    topic: topic.clone(),
                    shard,
                    owner_next,
                    truncate_to: None,
                    first: 0,
                    payloads: Vec::new(),
                    marks: Vec::new(),
                });
            }
        }
    }
    let mut budget = FETCH_BYTES;
    let mut reported = Vec::new();
    // (topic, shard, epoch, version seen) of the items that leave the replica level.
    let mut level = Vec::new();
    for item in items {
        let owner_next = log.next_offset(&item.topic, item.shard)?;
        let marks = log.epoch_marks(&item.topic, item.shard)?;
        let mut f = Fetched {
            topic: item.topic.clone(),
            shard: item.shard,
            owner_next,
            truncate_to: None,
            first: item.next,
            payloads: Vec::new(),
            marks: Vec::new(),
        };
        if let Some(t) = truncate_to(&marks, owner_next, item.next, item.last_epoch) {
            // The mark tells the replica which of its epochs this node has (see
            // `Truncation::cut`).
            f.truncate_to = Some(t.to);
            f.marks = t.marks();
            out.push(f);
            continue;
        }
        let epoch = epochs
            .iter()
            .find(|(sh, _)| *sh == item.shard)
            .map_or(0, |(_, e)| *e);
        reported.push((item.topic.as_str(), item.shard, epoch, item.next));
        if budget > 0 && item.next < owner_next {
            let entries = log.read(&item.topic, item.shard, item.next, FETCH_ENTRIES)?;
            // Retention may have removed the start: the copy then cannot continue (an append
            // must follow the replica's end), which its fetch loop reports, rather than store
            // entries at the wrong offsets.
            if let Some((o, _)) = entries.first() {
                f.first = *o;
            }
            for (_, p) in entries {
                budget = budget.saturating_sub(p.len());
                f.payloads.push(p);
                if budget == 0 {
                    break;
                }
            }
            let end = item.next + f.payloads.len() as u64;
            f.marks = marks_within(&marks, item.next, end);
        }
        if caught_up(item.next, f.payloads.len() as u64, owner_next)
            && !unasked.contains(&item.shard)
        {
            // A fetch without the version counts as sent before any (0).
            let seen = isr
                .iter()
                .find(|(sh, _)| *sh == item.shard)
                .map_or(0, |(_, v)| *v);
            level.push((item.topic.as_str(), item.shard, epoch, seen));
        }
        out.push(f);
    }
    if !reported.is_empty() || !level.is_empty() {
        let mut progress = lock(&s.replication.progress);
        for (topic, shard, epoch, seen) in level {
            progress.level(topic, shard, replica, epoch, seen);
        }
        for (topic, shard, epoch, next) in reported {
            progress.report(topic, shard, replica, epoch, next);
        }
        drop(progress);
        s.replication.progressed.notify_waiters();
    }
    Ok(out)
}
