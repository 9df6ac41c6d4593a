//! Records crossing nodes between the stages of a dataflow, and the watermarks that follow
//! them (see `starling_operators::plan::stages`).
//!
//! A stage's `publish` into an internal topic lands here (on a worker thread, so it only
//! queues). One task per node drains the queue in order: each batch is split by the shard of
//! each record's key, this node's part goes into its engine, the rest is forwarded to the
//! owners, fenced by epoch like a client publish, and retried until it is taken (a moving
//! shard, an owner restarting). Counters per topic say how much was queued and how much
//! delivered.
//!
//! Watermarks: every 100 ms each node reads the frontier F of each of its stages that write an
//! internal topic, and once everything it queued before reading F is delivered, tells every
//! node "node n is at F for topic t". Each node keeps the smallest F over the members
//! ([`WatermarkMerge`]) and moves the topic's watermark there. A later stage therefore closes a
//! window only when every node has sent it every record before the window's end.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use starling_cluster::{NodeId, WatermarkMerge};
use starling_operators::plan::stages;
use starling_operators::Event;

use super::Shared;
use crate::quic::wire;
use crate::EngineError;
use starling_cluster::epochs_for;

/// Queued and delivered record counts of one topic on this node.
#[derive(Default)]
pub struct Counters {
    queued: AtomicU64,
    delivered: AtomicU64,
}

/// A batch of records for one topic, as a stage produced it.
type Batch = (String, Vec<Event>);

/// The per-node state of repartitioning.
pub struct Repartition {
    /// Per topic: a frontier read and how much was queued right after reading it; the mark
    /// goes out once that much is delivered (under steady load something is always in
    /// flight, so waiting for "nothing queued" would never send one).
    waiting: Mutex<HashMap<String, (u64, u64)>>,
    tx: mpsc::UnboundedSender<Batch>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<Batch>>>,
    counters: Mutex<HashMap<String, Arc<Counters>>>,
    merges: Mutex<HashMap<String, WatermarkMerge>>,
}

impl Default for Repartition {
    fn default() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Repartition {
            waiting: Mutex::new(HashMap::new()),
            tx,
            rx: Mutex::new(Some(rx)),
            counters: Mutex::new(HashMap::new()),
            merges: Mutex::new(HashMap::new()),
        }
    }
}

impl Repartition {
    fn counters(&self, topic: &str) -> Arc<Counters> {
        let mut c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(c.entry(topic.to_string()).or_default())
    }

    /// Queues records for routing; never blocks (called on worker threads).
    pub fn queue(&self, topic: &str, events: Vec<Event>) {
        self.counters(topic)
            .queued
            .fetch_add(events.len() as u64, Ordering::SeqCst);
        if self.tx.send((topic.to_string(), events)).is_err() {
            tracing::error!(topic, "repartition queue closed; records dropped");
        }
    }

    /// Records a producer's mark; returns the merged watermark when it rose.
    pub fn mark(&self, topic: &str, node: NodeId, time: u64, members: &[NodeId]) -> Option<u64> {
        let mut merges = self.merges.lock().unwrap_or_else(|p| p.into_inner());
        let m = merges.entry(topic.to_string()).or_default();
        m.set_producers(&members.iter().copied().collect());
        if m.update(node, time) {
            m.merged()
        } else {
            None
        }
    }
}

/// Drains the queue: routes each batch to the owners of its records' keys, in order.
pub async fn forward_loop(s: Arc<Shared>) {
    let Some(mut rx) = s
        .repartition
        .rx
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
    else {
        return;
    };
    while let Some((topic, events)) = rx.recv().await {
        let n = events.len() as u64;
        let mut pending: Vec<(u32, Event)> = events
            .into_iter()
            .map(|e| (s.shard_of(&e.key), e))
            .collect();
        let mut delay = Duration::from_millis(5);
        loop {
            pending = place(&s, &topic, pending).await;
            if pending.is_empty() {
                break;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(200));
        }
        s.repartition
            .counters(&topic)
            .delivered
            .fetch_add(n, Ordering::SeqCst);
    }
}

/// One attempt at placing records; returns those still to place. Every failure is retried
/// (an owner that has not installed the next stage yet, a moving shard, a peer restarting)
/// except records an owner refuses as malformed, which are logged and dropped: sending them
/// again cannot help.
async fn place(s: &Shared, topic: &str, pending: Vec<(u32, Event)>) -> Vec<(u32, Event)> {
    let state = s.current();
    let mut by_owner: HashMap<NodeId, Vec<(u32, Event)>> = HashMap::new();
    let mut left = Vec::new();
    for (shard, e) in pending {
        match state.table.get(shard) {
            Ok(entry) if entry.moving_to.is_none() => match entry.owner {
                Some(o) => by_owner.entry(o).or_default().push((shard, e)),
                None => left.push((shard, e)),
            },
            _ => left.push((shard, e)),
        }
    }
    if let Some(batch) = by_owner.remove(&s.me) {
        if s.check_lease().is_err() {
            // Cut off from the majority: kept until this node hears from it (and learns
            // whether the shards are still its own).
            left.extend(batch);
        } else {
            let events: Vec<Event> = batch.iter().map(|(_, e)| e.clone()).collect();
            match s
                .engine()
                .and_then(|engine| engine.publish_internal_local(topic, events))
            {
                Ok(_) => {}
                Err(EngineError::UnknownTopic(_)) => left.extend(batch),
                Err(e) => {
                    tracing::error!(topic, error = %e, "stage records refused here; dropped");
                }
            }
        }
    }
    let mut sends = Vec::new();
    for (owner, batch) in by_owner {
        let epochs = epochs_for(&state.table, batch.iter().map(|(sh, _)| *sh));
        sends.push(async move {
            let wire_events: Vec<_> = batch.iter().map(|(_, e)| wire::event_to_wire(e)).collect();
            let r = match s.peers.client(owner).await {
                Ok(c) => c.forward_events(topic, epochs, wire_events).await,
                Err(e) => Err(e),
            };
            (owner, batch, r)
        });
    }
    for (owner, batch, r) in futures_util::future::join_all(sends).await {
        let Err(e) = r else { continue };
        match e.code() {
            Some(wire::codes::BAD_REQUEST) => {
                tracing::error!(node = %format!("{owner:016x}"), error = %e, "stage records refused as malformed; dropped");
                continue;
            }
            Some(wire::codes::STALE_EPOCH | wire::codes::BUSY | wire::codes::NOT_FOUND) => {}
            _ => s.peers.reset(owner).await,
        }
        tracing::debug!(node = %format!("{owner:016x}"), error = %e, "stage records not taken; retrying");
        left.extend(batch);
    }
    left
}

/// Every 100 ms: for each local stage that writes internal topics, tell every member how
/// far it is, once what it queued before is delivered.
pub async fn mark_loop(s: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        let Ok(engine) = s.engine() else { return };
        let state = s.current();
        let members: Vec<NodeId> = s.live_members();
        let mut marks: Vec<(String, u64)> = Vec::new();
        for stage in super::follow::catalog_stages(&state) {
            if stage.writes.is_empty() {
                continue;
            }
            let Ok(info) = engine.dataflow(&stage.definition.name) else {
                continue;
            };
            let frontier = info.frontier;
            for topic in &stage.writes {
                let c = s.repartition.counters(topic);
                let delivered = c.delivered.load(Ordering::SeqCst);
                let mut waiting = s
                    .repartition
                    .waiting
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                // A frontier read earlier whose records are all delivered now can be sent.
                if let Some(&(time, upto)) = waiting.get(topic) {
                    if delivered >= upto {
                        waiting.remove(topic);
                        marks.push((topic.clone(), time));
                    }
                }
                if !waiting.contains_key(topic) {
                    // Read after the frontier: everything before it was queued by now.
                    let queued = c.queued.load(Ordering::SeqCst);
                    if delivered >= queued {
                        // Sent every tick, changed or not: a node that joined later learns it.
                        marks.push((topic.clone(), frontier));
                    } else {
                        waiting.insert(topic.clone(), (frontier, queued));
                    }
                }
            }
        }
        for (topic, time) in marks {
            for node in &members {
                if *node == s.me {
                    let _ = apply_mark(&s, &topic, s.me, time);
                    continue;
                }
                let r = match s.peers.control(*node).await {
                    Ok(c) => c.mark(&topic, s.me, time).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = r {
                    // Sent again on the next tick.
                    tracing::debug!(node = %format!("{node:016x}"), error = %e, "mark not delivered");
                }
            }
        }
    }
}

/// Takes a producer's mark and moves the topic's watermark to the merged value.
pub fn apply_mark(s: &Shared, topic: &str, node: NodeId, time: u64) -> Result<(), EngineError> {
    if !stages::is_internal_topic(topic) {
        return Err(EngineError::BadRequest(format!(
            "`{topic}` is not an internal topic"
        )));
    }
    let engine = s.engine()?;
    if engine.topic_spec(topic).is_err() {
        // This node has not installed the stage yet; the producer sends again.
        return Ok(());
    }
    let members: Vec<NodeId> = s.live_members();
    if !members.contains(&node) {
        return Err(EngineError::BadRequest(format!(
            "node {node:016x} is not a member"
        )));
    }
    if let Some(merged) = s.repartition.mark(topic, node, time, &members) {
        tracing::debug!(topic, merged, "internal topic watermark moves");
        engine.advance_watermark_local(topic, merged)?;
    }
    Ok(())
}
