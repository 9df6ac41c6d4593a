//! Start-up replay of the store (see [`crate::durable`] for the design).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use starling_storage::EventLog;

use super::{worker::Command, Engine};
use crate::durable::catalog::CatalogDataflow;
use crate::durable::record::{self, Entry};
use crate::durable::Store;
use crate::EngineError;

/// Entries read from a shard at a time: bounds replay memory to
/// `topics × shards × CHUNK` raw entries.
const CHUNK: usize = 64;

/// What the start-up replay did, for logs, status and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Topics recreated from the catalog.
    pub topics: usize,
    /// Dataflows reinstalled.
    pub dataflows: usize,
    /// Log entries replayed.
    pub entries: u64,
    /// Events replayed.
    pub events: u64,
    /// Wall time of the whole recovery.
    pub millis: u64,
    /// The next sequence number after recovery.
    pub next_seq: u64,
    /// Dataflows started from a checkpoint (the others replayed their whole log).
    pub checkpoints: usize,
}

/// One shard's unread entries.
struct Cursor {
    topic: Arc<str>,
    shard: u32,
    next: u64,
    buffered: VecDeque<(u64, Vec<u8>)>,
}

impl Cursor {
    /// The next entry, decoded, refilling from the log when the buffer is empty.
    fn pop(&mut self, log: &dyn EventLog) -> Result<Option<(u64, Entry)>, EngineError> {
        if self.buffered.is_empty() {
            let chunk = log.read(&self.topic, self.shard, self.next, CHUNK)?;
            self.buffered.extend(chunk);
        }
        let Some((offset, bytes)) = self.buffered.pop_front() else {
            return Ok(None);
        };
        self.next = offset + 1;
        let (seq, entry) = record::decode(&bytes).map_err(|reason| {
            EngineError::Recovery(format!(
                "topic `{}` shard {} offset {offset}: {reason}",
                self.topic, self.shard
            ))
        })?;
        Ok(Some((seq, entry)))
    }
}

/// Recreates topics, replays every log in sequence order and reinstalls each dataflow at its
/// place in that order.
pub(super) fn recover(engine: &Engine, store: &Store) -> Result<RecoveryReport, EngineError> {
    let started = Instant::now();
    let inner = &engine.inner;
    inner.replaying.store(true, Ordering::Relaxed);
    let _reset = ResetOnDrop(&inner.replaying);
    let mut next_seq = inner.lock_ingest();
    let state = store.catalog.state();
    let mut report = RecoveryReport {
        topics: state.topics.len(),
        ..RecoveryReport::default()
    };
    for t in &state.topics {
        engine.create_topic_local(t).map_err(|e| {
            EngineError::Recovery(format!(
                "recreating topic `{}` from the catalog: {e}",
                t.name
            ))
        })?;
    }
    let mut pending: Vec<CatalogDataflow> = state.dataflows;
    pending.sort_by_key(|d| Reverse(d.seq));
    // Checkpoints: each dataflow that has one starts from its state and reads each shard of
    // its inputs from the checkpoint's offset on; a shard is read from the smallest offset
    // any dataflow reading the topic needs (a dataflow without a checkpoint needs all).
    let workers = inner.config.workers;
    let mut restores: HashMap<String, Arc<super::checkpoint::Restore>> = HashMap::new();
    let mut starts: HashMap<(String, u32), u64> = HashMap::new();
    let mut full: HashSet<String> = HashSet::new();
    let mut read: HashSet<String> = HashSet::new();
    for d in &pending {
        let restore = super::checkpoint::load(store, &d.definition.name, workers)?;
        for i in &d.definition.inputs {
            read.insert(i.topic.clone());
            match &restore {
                Some(r) => {
                    for (shard, off) in r.starts.get(&i.topic).into_iter().flatten() {
                        let e = starts.entry((i.topic.clone(), *shard)).or_insert(*off);
                        *e = (*e).min(*off);
                    }
                }
                None => {
                    full.insert(i.topic.clone());
                }
            }
        }
        if let Some(r) = restore {
            report.checkpoints += 1;
            tracing::info!(dataflow = %d.definition.name, time = r.time, "starting from a checkpoint");
            restores.insert(d.definition.name.clone(), Arc::new(r));
        }
    }

    let log = store.log.as_ref();
    let mut cursors = Vec::new();
    for topic in log.topics()? {
        if !read.contains(&topic) {
            // No dataflow reads it: nothing to rebuild.
            continue;
        }
        if inner.topic(&topic).is_err() {
            tracing::warn!(topic = %topic, "the log has a topic the catalog does not know; it is not replayed");
            continue;
        }
        let name: Arc<str> = topic.as_str().into();
        for shard in log.shards(&topic)? {
            cursors.push(Cursor {
                topic: Arc::clone(&name),
                shard,
                next: if full.contains(&topic) {
                    log.first_offset(&topic, shard)?
                } else {
                    // A shard created after the checkpoints is read whole.
                    starts
                        .get(&(topic.clone(), shard))
                        .copied()
                        .unwrap_or(0)
                        .max(log.first_offset(&topic, shard)?)
                },
                buffered: VecDeque::new(),
            });
        }
    }
    // Min-heap of (seq, cursor) heads.
    let mut heads: BinaryHeap<Reverse<(u64, usize)>> = BinaryHeap::new();
    let mut entries: Vec<Option<Entry>> = Vec::with_capacity(cursors.len());
    for (i, c) in cursors.iter_mut().enumerate() {
        match c.pop(log)? {
            Some((seq, entry)) => {
                heads.push(Reverse((seq, i)));
                entries.push(Some(entry));
            }
            None => entries.push(None),
        }
    }
    let mut last_seq = None;
    while let Some(Reverse((seq, i))) = heads.pop() {
        while pending.last().is_some_and(|d| d.seq < seq) {
            if let Some(d) = pending.pop() {
                reinstall(engine, &d, restores.remove(&d.definition.name))?;
                report.dataflows += 1;
            }
        }
        // Every shard's entry of one published batch has the same sequence number: they are
        // put back together and handed over as one batch, as they were first, since a batch
        // is judged late or on time against the watermark before it.
        let mut group = vec![i];
        while let Some(Reverse((s, j))) = heads.peek().copied() {
            if s != seq {
                break;
            }
            heads.pop();
            if cursors[j].topic != cursors[i].topic {
                return Err(EngineError::Recovery(format!(
                    "sequence number {seq} is in topics `{}` and `{}`: the log was written by two nodes or copied",
                    cursors[i].topic, cursors[j].topic
                )));
            }
            group.push(j);
        }
        let topic = inner.topic(&cursors[i].topic)?;
        let mut events = Vec::new();
        for &j in &group {
            match entries[j].take() {
                Some(Entry::Events(batch)) => events.extend(batch.into_iter().map(|e| (e, 0, 1))),
                Some(Entry::Watermark(time)) => {
                    let name: Arc<str> = topic.spec.name.as_str().into();
                    inner.broadcast(|| Command::Watermark {
                        topic: Arc::clone(&name),
                        time,
                        pos: seq + 1,
                    });
                }
                None => {}
            }
            report.entries += 1;
        }
        if !events.is_empty() {
            report.events += events.len() as u64;
            inner.wait_for_room();
            inner.push(&topic, events, seq + 1)?;
        }
        last_seq = Some(seq);
        for j in group {
            if let Some((seq, entry)) = cursors[j].pop(log)? {
                heads.push(Reverse((seq, j)));
                entries[j] = Some(entry);
            }
        }
    }
    // The next sequence number follows the newest entry of every shard, also of shards the
    // replay did not read (topics no dataflow reads, prefixes covered by checkpoints).
    let mut max_seq = last_seq;
    for topic in log.topics()? {
        for shard in log.shards(&topic)? {
            let (first, next) = (
                log.first_offset(&topic, shard)?,
                log.next_offset(&topic, shard)?,
            );
            if next > first {
                if let Some((offset, bytes)) = log.read(&topic, shard, next - 1, 1)?.pop() {
                    let (seq, _) = record::decode(&bytes).map_err(|reason| {
                        EngineError::Recovery(format!(
                            "topic `{topic}` shard {shard} offset {offset}: {reason}"
                        ))
                    })?;
                    max_seq = max_seq.max(Some(seq));
                }
            }
        }
    }
    while let Some(d) = pending.pop() {
        max_seq = max_seq.max(Some(d.seq));
        reinstall(engine, &d, restores.remove(&d.definition.name))?;
        report.dataflows += 1;
    }
    *next_seq = max_seq.map_or(0, |s| s + 1);
    report.next_seq = *next_seq;
    report.millis = started.elapsed().as_millis() as u64;
    tracing::info!(
        topics = report.topics,
        dataflows = report.dataflows,
        entries = report.entries,
        events = report.events,
        millis = report.millis,
        "recovered from the event log"
    );
    Ok(report)
}

fn reinstall(
    engine: &Engine,
    d: &CatalogDataflow,
    restore: Option<Arc<super::checkpoint::Restore>>,
) -> Result<(), EngineError> {
    engine
        .install_at(&d.definition, None, restore)
        .map_err(|e| {
            EngineError::Recovery(format!(
                "reinstalling dataflow `{}` from the catalog: {e}",
                d.definition.name
            ))
        })?;
    Ok(())
}

struct ResetOnDrop<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for ResetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}
