//! The publish paths: rows (plain, or tagged with the cluster publish they belong to) and
//! dataflow results, down to the one place (`push`) a batch is logged and handed to a worker.
//! Its own file because the log's order must equal the workers' order, and that is kept only
//! here.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value as Json;

use starling_operators::plan;
use starling_operators::render::Update;
use starling_operators::{Event, Row, Value};

use super::topics::{checked_time, Topic};
use super::worker::Command;
use super::{Engine, Inner};
use crate::durable::{record, Store};
use crate::EngineError;

impl Engine {
    /// Publishes JSON objects to a topic on this node, validated against its schema. Nothing
    /// of a batch with a bad event is applied; the error gives the event's position. Waits
    /// while every worker's queue is full (back-pressure).
    pub fn publish_json(&self, topic: &str, docs: &[Json]) -> Result<usize, EngineError> {
        let rows = self.decode_json(topic, docs)?;
        self.publish_local(topic, rows, true)
    }

    /// Publishes rows of a topic into this node's log and workers, whatever shards they fall
    /// in (in a cluster, the node calls it for the events this node owns): key and event time
    /// are read from the declared fields. The whole batch is checked first; a bad row refuses
    /// the batch with its position. While every worker's queue is full it waits (`wait`), or
    /// refuses with [`EngineError::Busy`] for callers that must not block (HTTP answers 429
    /// with `Retry-After`).
    pub fn publish_local(
        &self,
        topic: &str,
        rows: Vec<Row>,
        wait: bool,
    ) -> Result<usize, EngineError> {
        self.publish_rows_inner(topic, rows, wait, None)
    }

    /// Like [`Engine::publish_local`], with the log entries tagged as coming from publish
    /// `batch` of cluster node `producer` (see `durable::record::LogRecord::Tagged`).
    pub fn publish_local_tagged(
        &self,
        topic: &str,
        rows: Vec<Row>,
        wait: bool,
        origin: (u64, u64),
    ) -> Result<usize, EngineError> {
        self.publish_rows_inner(topic, rows, wait, Some(origin))
    }

    /// Appends records a dataflow stage produced (on this node or forwarded from another) to a
    /// topic on this node, with their keys and event times as produced.
    pub fn publish_internal_local(
        &self,
        topic: &str,
        events: Vec<Event>,
    ) -> Result<usize, EngineError> {
        self.inner.topic(topic)?;
        let n = events.len();
        self.inner.publish_internal_here(topic, events);
        Ok(n)
    }

    fn publish_rows_inner(
        &self,
        topic: &str,
        rows: Vec<Row>,
        wait: bool,
        origin: Option<(u64, u64)>,
    ) -> Result<usize, EngineError> {
        let t = self.inner.topic(topic)?;
        let time = t
            .spec
            .time
            .ok_or_else(|| EngineError::WriteOnlyTopic(topic.into()))?;
        self.inner.check_batch(rows.len())?;
        let mut events = Vec::with_capacity(rows.len());
        for (index, row) in rows.into_iter().enumerate() {
            let ts = checked_time(&t.spec, topic, time, index, &row)?;
            let key = t.spec.key.map(|k| row[k].clone()).unwrap_or(Value::Null);
            events.push((Event::new(key, ts, row), 0, 1));
        }
        let n = events.len();
        // Encoded before the ingest lock is taken, stamped under it.
        let mut entries = match &self.inner.config.store {
            Some(store) => Some(encode_by_shard(store, &events, origin)?),
            None => None,
        };
        if wait {
            self.inner.wait_for_room();
        } else if !self.inner.has_room() {
            return Err(EngineError::Busy);
        }
        let mut next_seq = self.inner.lock_ingest();
        if self.inner.shutting_down.load(Ordering::Relaxed) {
            return Err(EngineError::ShuttingDown);
        }
        // Every logged record before this position reached the workers before this batch.
        let pos = next_seq.saturating_add(1);
        if let (Some(store), Some(entries)) = (&self.inner.config.store, entries.as_mut()) {
            for (_, payload) in entries.iter_mut() {
                record::stamp(payload, *next_seq);
            }
            let batches: Vec<(u32, Vec<&[u8]>)> = entries
                .iter()
                .map(|(shard, p)| (*shard, vec![p.as_slice()]))
                .collect();
            match store.log.append_shards(&t.spec.name, &batches) {
                Ok(_) => {}
                Err(e @ starling_storage::StorageError::NotDurable { .. }) => {
                    // In the log but not confirmed on disk: the workers get it too, so what
                    // runs never differs from what a replay would see; the caller learns the
                    // outcome is unknown.
                    *next_seq += 1;
                    self.inner.push(&t, events, pos)?;
                    return Err(e.into());
                }
                Err(e) => return Err(e.into()),
            }
            *next_seq += 1;
        }
        // Cannot be refused now: shutdown sets its flag under the ingest lock we hold.
        self.inner.push(&t, events, pos)?;
        drop(next_seq);
        Ok(n)
    }
}

impl Inner {
    pub(super) fn check_batch(&self, size: usize) -> Result<(), EngineError> {
        if size > self.config.max_batch {
            return Err(EngineError::BatchTooLarge {
                size,
                limit: self.config.max_batch,
            });
        }
        if self.shutting_down.load(Ordering::Relaxed) {
            return Err(EngineError::ShuttingDown);
        }
        Ok(())
    }

    /// Whether some worker's queue has room for another batch.
    pub(super) fn has_room(&self) -> bool {
        let limit = self.config.max_queued_batches.max(1);
        self.queued
            .iter()
            .any(|q| q.load(Ordering::Acquire) < limit)
    }

    /// Blocks while every worker has a full queue. Only external publishers wait: a worker
    /// publishing its own results must never block on itself.
    pub(super) fn wait_for_room(&self) {
        let mut spins = 0u32;
        while !self.has_room() {
            if self.shutting_down.load(Ordering::Relaxed) {
                return;
            }
            spins += 1;
            if spins < 64 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(100));
            }
        }
    }

    /// Appends trusted events (dataflow results) to a topic by name; in a cluster they go to
    /// the internal sink instead, which sends them to the owners of their keys.
    pub(crate) fn publish_internal(&self, topic: &str, events: Vec<Event>) {
        if self.config.clustered
            && self.replaying.load(Ordering::Relaxed)
            && plan::stages::is_internal_topic(topic)
        {
            // Replayed stage records: their owners had them before this node restarted.
            return;
        }
        if let Some(sink) = self.internal_sink.get() {
            sink.route(topic, events);
            return;
        }
        self.publish_internal_here(topic, events);
    }

    /// Appends trusted events to a topic on this node.
    pub(crate) fn publish_internal_here(&self, topic: &str, events: Vec<Event>) {
        match self.topic(topic) {
            Ok(t) => {
                // Not logged: no log position (dataflows reading it replay with their source).
                let pos = u64::MAX;
                if let Err(e) = self.push(&t, events.into_iter().map(|e| (e, 0, 1)).collect(), pos)
                {
                    tracing::debug!(error = %e, topic, "dataflow output not published");
                }
            }
            Err(e) => tracing::error!(error = %e, "a dataflow wrote to a missing topic"),
        }
    }

    /// Sends a batch to one worker and the topic's new clock to every worker.
    /// Sends a batch (as updates whose time the receiving worker sets to its watermark) to
    /// one worker and the topic's new clock to every worker.
    pub(super) fn push(&self, t: &Topic, events: Vec<Update>, pos: u64) -> Result<(), EngineError> {
        if events.is_empty() {
            return Ok(());
        }
        let _order = self.order.lock().unwrap_or_else(|p| p.into_inner());
        // Checked under the same lock the shutdown broadcast takes: a batch is either sent
        // before the workers' Shutdown command or refused, never acknowledged and then lost
        // in a stopped worker's queue.
        if self.shutting_down.load(Ordering::Relaxed) {
            return Err(EngineError::ShuttingDown);
        }
        t.published
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        let batch_max = events.iter().map(|u| u.0.time).max();
        // Under the lock too, so topic subscribers see batches in the workers' order.
        if !t.subscribers.is_empty() {
            let plain: Vec<Event> = events.iter().map(|u| u.0.clone()).collect();
            t.subscribers.send(&Arc::from(plain));
        }
        let (max_seen, raised) = {
            let mut c = t.clock.lock().unwrap_or_else(|p| p.into_inner());
            let before = c.max_seen;
            c.max_seen = c.max_seen.max(batch_max);
            c.last_arrival = Instant::now();
            (c.max_seen.unwrap_or(0), c.max_seen > before)
        };
        let topic: Arc<str> = t.spec.name.as_str().into();
        let n = self.senders.len();
        // Round robin, skipping workers whose queue is full when another has room.
        let limit = self.config.max_queued_batches.max(1);
        let first = self.next_worker.fetch_add(1, Ordering::Relaxed);
        let target = (0..n)
            .map(|k| (first + k) % n)
            .find(|&w| self.queued[w].load(Ordering::Acquire) < limit)
            .unwrap_or(first % n);
        self.queued[target].fetch_add(1, Ordering::AcqRel);
        let mut events = Some(events);
        for (i, tx) in self.senders.iter().enumerate() {
            let cmd = if i == target {
                Command::Events {
                    topic: Arc::clone(&topic),
                    events: events.take().unwrap_or_default(),
                    max_seen,
                    pos,
                }
            } else if raised {
                Command::Clock {
                    topic: Arc::clone(&topic),
                    max_seen,
                    idle_ms: 0,
                    pos,
                }
            } else {
                // The topic's clock did not move: the other workers have nothing to learn.
                continue;
            };
            let _ = tx.send(cmd);
        }
        drop(_order);
        if raised {
            self.unpark_all();
        } else if let Some(t) = self.lock_threads().get(target).and_then(Option::as_ref) {
            t.unpark();
        }
        Ok(())
    }
}

/// One log entry per shard the batch's events hash to, each shard's events in batch order.
fn encode_by_shard(
    store: &Store,
    events: &[Update],
    origin: Option<(u64, u64)>,
) -> Result<Vec<(u32, Vec<u8>)>, EngineError> {
    let mut by_shard: HashMap<u32, Vec<&Event>> = HashMap::new();
    for (e, _, _) in events {
        by_shard.entry(store.shard_of(&e.key)).or_default().push(e);
    }
    let mut out: Vec<(u32, Vec<u8>)> = Vec::with_capacity(by_shard.len());
    for (shard, evs) in by_shard {
        let bytes = match origin {
            Some(o) => record::encode_tagged(o, evs.into_iter()),
            None => record::encode_events(evs.into_iter()),
        }
        .map_err(|e| EngineError::Internal(format!("encoding a log entry: {e}")))?;
        out.push((shard, bytes));
    }
    out.sort_unstable_by_key(|(s, _)| *s);
    Ok(out)
}
