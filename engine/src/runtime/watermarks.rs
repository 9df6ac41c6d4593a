//! Event time: forced watermark marks, the idle clock that lets quiet inputs advance, and
//! waiting for a dataflow's results up to a time. Its own file because marks are logged and
//! ordered like events but carry no rows, and the clock runs on its own thread.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::topics::Topic;
use super::worker::Command;
use super::{Engine, Inner};
use crate::durable::record;
use crate::EngineError;

/// Where a cluster node logs a topic's watermark marks: a log no shard of the table names,
/// so no replica copies it and no owner's offsets move for it.
pub const WATERMARK_SHARD: u32 = u32::MAX;

/// The watermark a departing node's inputs end at: past every event time, below `u64::MAX`
/// so that "every result before it is out" is a time a probe can pass.
const END_OF_TIME: u64 = u64::MAX - 1;

impl Engine {
    /// Forces the watermark of every input reading `topic` on this node up to `time` (like an
    /// end-of-input mark up to that time). Events older than it that arrive later are late.
    /// (In a cluster the node does it on every node.)
    pub fn advance_watermark_local(&self, topic: &str, time: u64) -> Result<(), EngineError> {
        let t = self.inner.topic(topic)?;
        let mut next_seq = self.inner.lock_ingest();
        if self.inner.shutting_down.load(Ordering::Relaxed) {
            return Err(EngineError::ShuttingDown);
        }
        let pos = next_seq.saturating_add(1);
        if let Some(store) = &self.inner.config.store {
            let mut entry = record::encode_watermark(time).map_err(EngineError::Internal)?;
            record::stamp(&mut entry, *next_seq);
            // In a cluster every node logs its own watermark marks, so they stay out of the
            // shards whose logs replicas copy offset for offset.
            let shard = if self.inner.config.clustered {
                WATERMARK_SHARD
            } else {
                0
            };
            store.log.append(&t.spec.name, shard, &[&entry])?;
            *next_seq += 1;
        }
        self.inner.broadcast(|| Command::Watermark {
            topic: t.spec.name.clone().into(),
            time,
            pos,
        });
        Ok(())
    }

    /// Lets every dataflow on this node emit everything it still holds back, for a node that
    /// has handed all its shards away and is about to stop: each input's watermark goes to the
    /// end of time *in memory only*. Nothing is logged, so the node's log, should it come
    /// back, replays with the watermarks it had. What comes out is what the hand-offs left:
    /// the retractions of the results whose state moved (an unwindowed aggregate's), which
    /// the nodes merging this one's outputs must see before it goes. Waits up to `timeout`
    /// for them to be out; returns whether they all were.
    pub fn drain_before_leaving(&self, timeout: Duration) -> Result<bool, EngineError> {
        let topics: Vec<Arc<Topic>> = self.inner.read_topics().values().cloned().collect();
        {
            let next_seq = self.inner.lock_ingest();
            if self.inner.shutting_down.load(Ordering::Relaxed) {
                return Err(EngineError::ShuttingDown);
            }
            let pos = next_seq.saturating_add(1);
            for t in topics {
                self.inner.broadcast(|| Command::Watermark {
                    topic: t.spec.name.as_str().into(),
                    time: END_OF_TIME,
                    pos,
                });
            }
        }
        let deadline = Instant::now() + timeout;
        let names: Vec<String> = self.inner.lock_dataflows().keys().cloned().collect();
        let mut all = true;
        for name in names {
            let left = deadline.saturating_duration_since(Instant::now());
            // A dataflow dropped meanwhile has nothing left to say.
            all &= self
                .wait_until(&name, END_OF_TIME - 1, left)
                .unwrap_or(true);
        }
        Ok(all)
    }

    /// Waits until every result of `dataflow` up to `time` is out (its probe passed `time`
    /// on every worker). Returns false on timeout.
    pub fn wait_until(
        &self,
        dataflow: &str,
        time: u64,
        timeout: Duration,
    ) -> Result<bool, EngineError> {
        let frontiers = self
            .inner
            .lock_dataflows()
            .get(dataflow)
            .map(|d| Arc::clone(&d.frontiers))
            .ok_or_else(|| EngineError::UnknownDataflow(dataflow.into()))?;
        let deadline = Instant::now() + timeout;
        loop {
            if frontiers.iter().all(|f| f.load(Ordering::Acquire) > time) {
                return Ok(true);
            }
            if Instant::now() > deadline {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

impl Inner {
    /// Tells the workers how long each topic has been idle, so idle inputs advance.
    pub(super) fn tick(&self) {
        if self.replaying.load(Ordering::Relaxed) {
            return;
        }
        let topics: Vec<Arc<Topic>> = self.read_topics().values().cloned().collect();
        // Under the ingest lock, so the position is exact: every record below it was handed
        // over before these clocks.
        let ingest = self.lock_ingest();
        let pos = *ingest;
        for t in topics {
            let (max_seen, idle) = {
                let c = t.clock.lock().unwrap_or_else(|p| p.into_inner());
                (c.max_seen, c.last_arrival.elapsed())
            };
            if let Some(max_seen) = max_seen {
                let name: Arc<str> = t.spec.name.as_str().into();
                self.broadcast(|| Command::Clock {
                    topic: Arc::clone(&name),
                    max_seen,
                    idle_ms: idle.as_millis() as u64,
                    pos,
                });
            }
        }
        drop(ingest);
    }
}
