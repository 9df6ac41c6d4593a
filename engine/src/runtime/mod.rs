//! The in-process engine.
//!
//! Threads: W timely workers, each fed by its own command channel, and one clock thread that
//! lets idle inputs advance their watermarks. Every command that changes what runs
//! (install, drop) or moves event time is sent to all workers under one lock, so every worker
//! sees the same sequence; a batch of events goes whole to one worker (round robin), and
//! keyed operators exchange by key inside the dataflow.
//!
//! Event time: the engine tracks, per topic, the newest event time seen and when the last
//! event arrived. Each worker derives each dataflow input's watermark from that and the
//! input's policy (see [`worker`]), so all workers agree without talking to each other.

mod checkpoint;
mod distribution;
mod handoff;
mod recovery;
mod replica;
mod subscribers;
mod worker;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use serde_json::Value as Json;

use starling_operators::definition::{Definition, TopicDef};
use starling_operators::json::row_from_json;
use starling_operators::plan::{self, Plan, TopicSpec};
use starling_operators::render::{DataflowStats, Update};
use starling_operators::{Event, Row, Value};

pub use distribution::Distribution;
pub use handoff::ShardPart;
pub use subscribers::{feed, Feed, Subscribers, Subscription, SubscriptionClosed};
use worker::Command;

use crate::durable::{record, Store};
use crate::EngineError;

/// Settings of an engine.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Timely worker threads.
    pub workers: usize,
    /// Batches a subscriber may leave unread before it is cut off.
    pub subscriber_queue: usize,
    /// The largest batch accepted by one publish call.
    pub max_batch: usize,
    /// How often idle inputs are checked (their watermark then advances).
    pub clock_interval: Duration,
    /// Event batches a worker may have queued before publishers wait (back-pressure that
    /// keeps memory bounded when producers outrun the workers).
    pub max_queued_batches: usize,
    /// Where published events, topics and dataflows are made durable; `None` keeps
    /// everything in memory (tests, benchmarks of the engine alone). With a store, `start`
    /// replays it before returning.
    pub store: Option<Arc<Store>>,
    /// How often window state is checkpointed (with a store); `None` never.
    pub checkpoint_interval: Option<Duration>,
    /// The node runs in a cluster: records a replay sends to internal repartition topics are
    /// not published here (they belong to the owners of their keys, which already had them).
    pub clustered: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            subscriber_queue: 1024,
            max_batch: 1_000_000,
            clock_interval: Duration::from_millis(100),
            max_queued_batches: 8,
            store: None,
            checkpoint_interval: Some(Duration::from_secs(60)),
            clustered: false,
        }
    }
}

/// A topic and its live state.
pub(crate) struct Topic {
    pub spec: TopicSpec,
    pub clock: Mutex<TopicClock>,
    pub subscribers: Subscribers<Arc<[Event]>>,
    pub published: AtomicU64,
}

/// Newest event time seen on a topic and when the last event arrived.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TopicClock {
    pub max_seen: Option<u64>,
    pub last_arrival: Instant,
}

/// Checks one row of a publish (field count, event time) and returns its event time.
fn checked_time(
    spec: &TopicSpec,
    topic: &str,
    time: usize,
    index: usize,
    row: &Row,
) -> Result<u64, EngineError> {
    if row.len() != spec.schema.len() {
        return Err(EngineError::BadEventShape {
            index,
            message: format!(
                "row has {} values; topic `{topic}` has {} fields",
                row.len(),
                spec.schema.len()
            ),
        });
    }
    match &row[time] {
        Value::Timestamp(v) | Value::Int(v) if *v >= 0 => Ok(*v as u64),
        other => Err(EngineError::BadEventShape {
            index,
            message: format!(
                "event time `{}` must be a non-negative timestamp, found {other}",
                spec.schema.field(time).name
            ),
        }),
    }
}

/// A description of a topic for listings.
#[derive(Clone, Debug)]
pub struct TopicInfo {
    pub spec: TopicSpec,
    /// Events accepted so far.
    pub published: u64,
    /// Newest event time seen.
    pub max_event_time: Option<u64>,
    pub subscribers: usize,
}

/// An installed dataflow, as the engine keeps it.
pub(crate) struct Installed {
    pub plan: Arc<Plan>,
    pub definition: Definition,
    pub stats: Arc<DataflowStats>,
    pub outputs: Vec<Arc<Subscribers<Arc<[Update]>>>>,
    /// Per worker: the frontier of the dataflow's probe (`u64::MAX` once complete).
    pub frontiers: Arc<Vec<AtomicU64>>,
    /// Per worker, per input: the input's watermark.
    pub watermarks: Arc<Vec<Vec<AtomicU64>>>,
    pub late_events: Arc<AtomicU64>,
}

/// A description of an installed dataflow, with live counters.
#[derive(Clone, Debug)]
pub struct DataflowInfo {
    pub name: String,
    pub definition: Definition,
    pub inputs: Vec<(String, String)>,
    pub outputs: Vec<String>,
    /// Lowest watermark over workers, per input.
    pub watermarks: Vec<u64>,
    /// Lowest probe frontier over workers: every result up to here is out.
    pub frontier: u64,
    pub window_state: i64,
    pub late_events: u64,
    pub dead_letters: u64,
    pub output_updates: u64,
}

pub(crate) struct Inner {
    config: EngineConfig,
    senders: Vec<Sender<Command>>,
    threads: Mutex<Vec<Option<Thread>>>,
    /// Held while sending to all workers, so they all see one order.
    order: Mutex<()>,
    next_worker: AtomicUsize,
    topics: RwLock<HashMap<String, Arc<Topic>>>,
    dataflows: Mutex<HashMap<String, Installed>>,
    shutting_down: AtomicBool,
    /// Per worker: timely dataflows alive (for leak checks).
    live: Vec<AtomicUsize>,
    /// Per worker: event batches sent but not yet taken.
    pub(crate) queued: Vec<AtomicUsize>,
    /// Per worker: nanoseconds spent working.
    pub(crate) busy: Vec<AtomicU64>,
    /// Cut-off counts of the outputs of dataflows since dropped.
    dropped_cut_off: AtomicU64,
    /// Records of shards this node handed off that reached a window afterwards, waiting to
    /// be sent to their owner (see [`Engine::stragglers`]).
    stragglers: Arc<AtomicUsize>,
    /// The next node-wide log sequence number. Held while a publish is logged and handed to
    /// the workers, while a watermark mark is, and while a dataflow is installed, so that the
    /// log's order is the workers' order (see [`crate::durable`]).
    ingest: Mutex<u64>,
    /// True while the log is replayed: the idle clock then stays still, as replayed topics
    /// only look idle.
    replaying: AtomicBool,
    /// Set once by the cluster layer; front-door calls and records dataflows write to topics
    /// go through it (see [`Distribution`]).
    distribution: std::sync::OnceLock<Arc<dyn Distribution>>,
}

/// The in-process engine. Cheap to share: clone the `Arc` it lives in, or use its methods
/// from any thread.
pub struct Engine {
    inner: Arc<Inner>,
    guards: Mutex<Option<timely::communication::initialize::WorkerGuards<()>>>,
    clock: Mutex<Option<JoinHandle<()>>>,
    recovery: Mutex<Option<RecoveryReport>>,
}

pub use checkpoint::CheckpointInfo;
pub use recovery::RecoveryReport;

impl Engine {
    /// Starts the workers and the clock.
    pub fn start(config: EngineConfig) -> Result<Engine, EngineError> {
        let workers = config.workers.max(1);
        let mut senders = Vec::with_capacity(workers);
        let mut receivers = Vec::with_capacity(workers);
        for _ in 0..workers {
            let (tx, rx) = crossbeam_channel::unbounded();
            senders.push(tx);
            receivers.push(Some(rx));
        }
        let inner = Arc::new(Inner {
            config: EngineConfig { workers, ..config },
            senders,
            threads: Mutex::new(vec![None; workers]),
            order: Mutex::new(()),
            next_worker: AtomicUsize::new(0),
            topics: RwLock::new(HashMap::new()),
            dataflows: Mutex::new(HashMap::new()),
            shutting_down: AtomicBool::new(false),
            live: (0..workers).map(|_| AtomicUsize::new(0)).collect(),
            queued: (0..workers).map(|_| AtomicUsize::new(0)).collect(),
            busy: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            dropped_cut_off: AtomicU64::new(0),
            stragglers: Arc::new(AtomicUsize::new(0)),
            ingest: Mutex::new(0),
            replaying: AtomicBool::new(false),
            distribution: std::sync::OnceLock::new(),
        });
        let receivers = Arc::new(Mutex::new(receivers));
        let weak = Arc::downgrade(&inner);
        let guards = timely::execute(timely::Config::process(workers), move |w| {
            let rx = receivers
                .lock()
                .ok()
                .and_then(|mut r| r.get_mut(w.index()).and_then(Option::take));
            if let Some(rx) = rx {
                worker::run(w, rx, weak.clone());
            }
        })
        .map_err(EngineError::Startup)?;
        // Wait until every worker registered its thread (for unparking).
        let deadline = Instant::now() + Duration::from_secs(10);
        while inner.lock_threads().iter().any(Option::is_none) {
            if Instant::now() > deadline {
                return Err(EngineError::Startup("workers did not start".into()));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let clock = {
            let weak = Arc::downgrade(&inner);
            let interval = inner.config.clock_interval;
            std::thread::Builder::new()
                .name("starling-clock".into())
                .spawn(move || {
                    while let Some(inner) = weak.upgrade() {
                        if inner.shutting_down.load(Ordering::Relaxed) {
                            break;
                        }
                        inner.tick();
                        drop(inner);
                        std::thread::sleep(interval);
                    }
                })
                .map_err(|e| EngineError::Startup(e.to_string()))?
        };
        let engine = Engine {
            inner,
            guards: Mutex::new(Some(guards)),
            clock: Mutex::new(Some(clock)),
            recovery: Mutex::new(None),
        };
        if let Some(store) = engine.inner.config.store.clone() {
            let report = recovery::recover(&engine, &store)?;
            *engine.recovery.lock().unwrap_or_else(|p| p.into_inner()) = Some(report);
            if let Some(every) = engine.inner.config.checkpoint_interval {
                let weak = Arc::downgrade(&engine.inner);
                std::thread::Builder::new()
                    .name("starling-checkpoint".into())
                    .spawn(move || loop {
                        std::thread::sleep(every);
                        let Some(inner) = weak.upgrade() else { break };
                        if inner.shutting_down.load(Ordering::Relaxed) {
                            break;
                        }
                        checkpoint::run_all(&inner);
                    })
                    .map_err(|e| EngineError::Startup(e.to_string()))?;
            }
        }
        Ok(engine)
    }

    /// What the start-up replay did (`None` without a store).
    pub fn recovery(&self) -> Option<RecoveryReport> {
        self.recovery
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The store this engine logs to, if any.
    pub fn store(&self) -> Option<&Arc<Store>> {
        self.inner.config.store.as_ref()
    }

    /// Batches a subscriber may leave unread (merged cluster subscriptions use the same).
    pub fn subscriber_queue(&self) -> usize {
        self.inner.config.subscriber_queue
    }

    /// Number of worker threads.
    pub fn workers(&self) -> usize {
        self.inner.config.workers
    }

    /// Creates a topic from its declaration. Creating an identical topic again is a no-op;
    /// a different declaration under the same name is refused.
    pub fn create_topic(&self, def: &TopicDef) -> Result<(), EngineError> {
        match self.inner.distribution.get() {
            Some(d) => d.create_topic(def),
            None => self.create_topic_local(def),
        }
    }

    /// Creates a topic on this node only (recovery, and the cluster layer once agreed).
    pub fn create_topic_local(&self, def: &TopicDef) -> Result<(), EngineError> {
        if let Some(spec) = self.check_topic(def)? {
            self.inner.add_topic(spec)?;
        }
        if let Some(store) = &self.inner.config.store {
            store.catalog.add_topic(def)?;
        }
        Ok(())
    }

    /// Checks a topic declaration with the errors its creation would give, creating
    /// nothing: a cluster checks before it agrees on a declaration, since every node
    /// would otherwise fail to create what was agreed.
    pub fn check_topic(&self, def: &TopicDef) -> Result<Option<TopicSpec>, EngineError> {
        let probe = Definition {
            name: "topic".into(),
            description: None,
            topics: vec![def.clone()],
            inputs: vec![starling_operators::definition::InputDef {
                id: "i".into(),
                topic: def.name.clone(),
                watermark: Default::default(),
            }],
            nodes: vec![],
            outputs: vec![],
            late_topic: None,
            dead_letter_topic: None,
        };
        // Planning a one-input definition validates the declaration with the same errors.
        // Planned against no existing topics, so that a declaration differing from an existing
        // topic is reported as the conflict it is (`add_topic` compares).
        let p = plan::plan(&probe, &HashMap::new())?;
        Ok(p.new_topics.into_iter().find(|t| t.name == def.name))
    }

    /// Every topic with its counters.
    pub fn topics(&self) -> Vec<TopicInfo> {
        let topics = self.inner.read_topics();
        let mut out: Vec<TopicInfo> = topics
            .values()
            .map(|t| describe_topic(t.as_ref()))
            .collect();
        out.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
        out
    }

    /// The declaration of one topic (schema, key and time fields), for front doors that check
    /// typed rows before publishing them.
    pub fn topic_spec(&self, topic: &str) -> Result<TopicSpec, EngineError> {
        Ok(self.inner.topic(topic)?.spec.clone())
    }

    /// Reads part of a topic's spec without cloning it (schema included): a cluster's
    /// publish path needs the key field and the acks setting on every batch.
    pub fn read_topic_spec<R>(
        &self,
        topic: &str,
        read: impl FnOnce(&TopicSpec) -> R,
    ) -> Result<R, EngineError> {
        Ok(read(&self.inner.topic(topic)?.spec))
    }

    fn topic_specs(&self) -> HashMap<String, TopicSpec> {
        self.inner
            .read_topics()
            .iter()
            .map(|(k, v)| (k.clone(), v.spec.clone()))
            .collect()
    }

    /// Publishes rows of a topic: key and event time are read from the declared fields.
    /// The whole batch is checked first; a bad row refuses the batch with its position.
    /// Waits while every worker's queue is full (back-pressure).
    pub fn publish_rows(&self, topic: &str, rows: Vec<Row>) -> Result<usize, EngineError> {
        match self.inner.distribution.get() {
            Some(d) => d.publish(topic, rows, true),
            None => self.publish_rows_inner(topic, rows, true, None),
        }
    }

    /// Like [`Engine::publish_rows`], but refuses with [`EngineError::Busy`] instead of
    /// waiting when every worker's queue is full, for callers that must not block (HTTP
    /// answers 429 with `Retry-After`).
    pub fn try_publish_rows(&self, topic: &str, rows: Vec<Row>) -> Result<usize, EngineError> {
        match self.inner.distribution.get() {
            Some(d) => d.publish(topic, rows, false),
            None => self.publish_rows_inner(topic, rows, false, None),
        }
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

    /// Checks a batch as a publish would (topic, size, every row's shape and event time)
    /// without applying it, so that a batch split across nodes is refused whole.
    pub fn check_rows(&self, topic: &str, rows: &[Row]) -> Result<(), EngineError> {
        let t = self.inner.topic(topic)?;
        let time = t
            .spec
            .time
            .ok_or_else(|| EngineError::WriteOnlyTopic(topic.into()))?;
        self.inner.check_batch(rows.len())?;
        for (index, row) in rows.iter().enumerate() {
            checked_time(&t.spec, topic, time, index, row)?;
        }
        Ok(())
    }

    /// Plans a definition against this node's topics without installing it: the errors a
    /// submit would give, before the cluster is asked to agree on it.
    pub fn check_definition(&self, def: &Definition) -> Result<(), EngineError> {
        self.check_definitions(std::slice::from_ref(def))
    }

    /// The ids of a definition's nodes that may retract what they emitted (corrections,
    /// `updates` aggregates, table joins): records that cannot cross nodes as plain events.
    pub fn retracting_nodes(&self, def: &Definition) -> Result<Vec<String>, EngineError> {
        let plan = plan::plan(def, &self.topic_specs())?;
        Ok(plan
            .nodes
            .iter()
            .filter(|n| !n.append_only)
            .map(|n| n.id.clone())
            .collect())
    }

    /// Plans definitions in order, each seeing the topics the earlier ones create (the stages
    /// of a dataflow cut for a cluster), without installing any.
    pub fn check_definitions(&self, defs: &[Definition]) -> Result<(), EngineError> {
        let mut topics = self.topic_specs();
        for def in defs {
            if self.inner.lock_dataflows().contains_key(&def.name) {
                return Err(EngineError::DataflowExists(def.name.clone()));
            }
            let plan = plan::plan(def, &topics)?;
            if self.inner.config.store.is_none() && plan.uses_stores() {
                return Err(EngineError::NoStorage(def.name.clone()));
            }
            for t in plan.new_topics {
                topics.insert(t.name.clone(), t);
            }
        }
        Ok(())
    }

    /// Publishes rows into this node's log and workers only, whatever shards they fall in:
    /// the cluster layer calls it for the events this node owns.
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

    /// Hands front-door calls to the cluster layer from now on. Set once; a second call is
    /// refused.
    pub fn set_distribution(&self, d: Arc<dyn Distribution>) -> Result<(), EngineError> {
        self.inner
            .distribution
            .set(d)
            .map_err(|_| EngineError::Internal("the distribution is already set".into()))
    }

    /// The cluster layer, when set.
    pub fn distribution(&self) -> Option<&Arc<dyn Distribution>> {
        self.inner.distribution.get()
    }

    /// Whether front-door calls go to a cluster.
    pub fn is_distributed(&self) -> bool {
        self.inner.distribution.get().is_some()
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

    /// Publishes JSON objects to a topic, validated against its schema. Nothing of a batch
    /// with a bad event is applied; the error gives the event's position.
    pub fn publish_json(&self, topic: &str, docs: &[Json]) -> Result<usize, EngineError> {
        let rows = self.decode_json(topic, docs)?;
        self.publish_rows(topic, rows)
    }

    /// Checks JSON objects against a topic's schema and turns them into rows, without
    /// publishing; the error gives the position of the first bad event.
    pub fn decode_json(&self, topic: &str, docs: &[Json]) -> Result<Vec<Row>, EngineError> {
        let t = self.inner.topic(topic)?;
        self.inner.check_batch(docs.len())?;
        let mut rows = Vec::with_capacity(docs.len());
        for (index, doc) in docs.iter().enumerate() {
            rows.push(
                row_from_json(&t.spec.schema, doc)
                    .map_err(|error| EngineError::BadEvent { index, error })?,
            );
        }
        Ok(rows)
    }

    /// One topic's description.
    pub fn topic(&self, name: &str) -> Result<TopicInfo, EngineError> {
        let t = self.inner.topic(name)?;
        Ok(describe_topic(&t))
    }

    /// Live subscriptions (topics and outputs) and how many were cut off for reading slowly.
    pub fn subscriptions(&self) -> (usize, u64) {
        let mut live = 0;
        let mut cut = 0;
        for t in self.inner.read_topics().values() {
            live += t.subscribers.len();
            cut += t.subscribers.cut_off.load(Ordering::Relaxed);
        }
        for d in self.inner.lock_dataflows().values() {
            for o in &d.outputs {
                live += o.len();
                cut += o.cut_off.load(Ordering::Relaxed);
            }
        }
        (
            live,
            cut + self.inner.dropped_cut_off.load(Ordering::Relaxed),
        )
    }

    /// Time each worker spent doing work (not parked), in nanoseconds.
    pub fn worker_busy_nanos(&self) -> Vec<u64> {
        self.inner
            .busy
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect()
    }

    /// Ends every live subscription (readers see the end of their stream); used when a node
    /// shuts down so that streaming responses finish.
    pub fn close_subscriptions(&self) {
        for t in self.inner.read_topics().values() {
            t.subscribers.close_all();
        }
        for d in self.inner.lock_dataflows().values() {
            d.outputs.iter().for_each(|o| o.close_all());
        }
    }

    /// Whether the engine accepts work (not shutting down).
    pub fn is_running(&self) -> bool {
        !self.inner.shutting_down.load(Ordering::Relaxed)
    }

    /// Forces the watermark of every input reading `topic` up to `time` (like an end-of-input
    /// mark up to that time). Events older than it that arrive later are late.
    pub fn advance_watermark(&self, topic: &str, time: u64) -> Result<(), EngineError> {
        match self.inner.distribution.get() {
            Some(d) => d.advance_watermark(topic, time),
            None => self.advance_watermark_local(topic, time),
        }
    }

    /// Moves a topic's watermark on this node only (the cluster layer does it on each node).
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

    /// Checks and installs a definition written as YAML or JSON.
    pub fn install_text(&self, text: &str) -> Result<DataflowInfo, EngineError> {
        let def = Definition::parse(text).map_err(|e| EngineError::Plan(e.into()))?;
        self.install(&def)
    }

    /// Checks a definition, creates the topics it declares, and runs it on every worker.
    pub fn install(&self, def: &Definition) -> Result<DataflowInfo, EngineError> {
        match self.inner.distribution.get() {
            Some(d) => d.install(def),
            None => self.install_local(def),
        }
    }

    /// Installs a definition on this node only (the cluster layer, once the cluster agreed).
    pub fn install_local(&self, def: &Definition) -> Result<DataflowInfo, EngineError> {
        let mut next_seq = self.inner.lock_ingest();
        let info = self.install_at(def, Some(*next_seq), None)?;
        *next_seq += 1;
        Ok(info)
    }

    /// Installs under the ingest lock (held by the caller). `seq` is where the install sits
    /// in the log's order; it is recorded in the catalog (`None` during replay, where the
    /// catalog already has it).
    fn install_at(
        &self,
        def: &Definition,
        seq: Option<u64>,
        restore: Option<Arc<checkpoint::Restore>>,
    ) -> Result<DataflowInfo, EngineError> {
        let mut dataflows = self.inner.lock_dataflows();
        if dataflows.contains_key(&def.name) {
            return Err(EngineError::DataflowExists(def.name.clone()));
        }
        let plan = Arc::new(plan::plan(def, &self.topic_specs())?);
        let stores = match &self.inner.config.store {
            Some(store) => store.stores.clone(),
            None if plan.uses_stores() => {
                return Err(EngineError::NoStorage(def.name.clone()));
            }
            None => Default::default(),
        };
        // Collections that the definition fills are created (or checked) before it runs.
        if let Some(vectors) = &stores.vectors {
            for node in &plan.nodes {
                if let plan::NodeKind::VectorUpsert {
                    collection,
                    dim,
                    metric,
                    ..
                } = &node.kind
                {
                    let spec = starling_storage::CollectionSpec {
                        dim: *dim,
                        metric: *metric,
                    };
                    vectors.create(collection, spec)?;
                }
            }
        }
        for spec in &plan.new_topics {
            self.inner.add_topic(spec.clone())?;
        }
        let workers = self.inner.config.workers;
        let installed = Installed {
            plan: Arc::clone(&plan),
            definition: def.clone(),
            stats: Arc::new(DataflowStats::default()),
            outputs: plan
                .outputs
                .iter()
                .map(|_| Arc::new(Subscribers::new(self.inner.config.subscriber_queue)))
                .collect(),
            frontiers: Arc::new((0..workers).map(|_| AtomicU64::new(0)).collect()),
            watermarks: Arc::new(
                (0..workers)
                    .map(|_| plan.inputs.iter().map(|_| AtomicU64::new(0)).collect())
                    .collect(),
            ),
            late_events: Arc::new(AtomicU64::new(0)),
        };
        if let (Some(store), Some(seq)) = (&self.inner.config.store, seq) {
            for t in &def.topics {
                store.catalog.add_topic(t)?;
            }
            store.catalog.add_dataflow(seq, def)?;
            // A new definition under an old name must not start from the old one's state.
            store.checkpoints.remove(&def.name)?;
        }
        let info = describe(&installed);
        let cmd = worker::InstallCommand {
            plan,
            stats: Arc::clone(&installed.stats),
            outputs: installed.outputs.clone(),
            frontiers: Arc::clone(&installed.frontiers),
            watermarks: Arc::clone(&installed.watermarks),
            late_events: Arc::clone(&installed.late_events),
            stores,
            restore,
            shards: self.inner.config.store.as_ref().map_or(0, |s| s.shards),
            stragglers: Arc::clone(&self.inner.stragglers),
        };
        dataflows.insert(def.name.clone(), installed);
        // Broadcast before releasing the lock: a concurrent drop of the same name then
        // reaches the workers after the install, never before it. (No path holds `order`
        // and then waits for `dataflows`, so this cannot deadlock.)
        self.inner
            .broadcast(|| Command::Install(Box::new(cmd.clone())));
        drop(dataflows);
        tracing::info!(dataflow = %def.name, "installed");
        Ok(info)
    }

    /// Stops a dataflow on every worker and ends its subscriptions. Its topics stay.
    pub fn drop_dataflow(&self, name: &str) -> Result<(), EngineError> {
        match self.inner.distribution.get() {
            Some(d) => d.drop_dataflow(name),
            None => self.drop_dataflow_local(name),
        }
    }

    /// Drops a dataflow on this node only.
    pub fn drop_dataflow_local(&self, name: &str) -> Result<(), EngineError> {
        let mut dataflows = self.inner.lock_dataflows();
        if !dataflows.contains_key(name) {
            return Err(EngineError::UnknownDataflow(name.into()));
        }
        if let Some(store) = &self.inner.config.store {
            store.catalog.remove_dataflow(name)?;
            store.checkpoints.remove(name)?;
        }
        let removed = dataflows
            .remove(name)
            .ok_or_else(|| EngineError::UnknownDataflow(name.into()))?;
        self.inner.broadcast(|| Command::Drop(name.into()));
        drop(dataflows);
        for o in &removed.outputs {
            self.inner
                .dropped_cut_off
                .fetch_add(o.cut_off.load(Ordering::Relaxed), Ordering::Relaxed);
            o.close_all();
        }
        tracing::info!(dataflow = %name, "dropped");
        Ok(())
    }

    /// Installed dataflows with their live counters.
    pub fn dataflows(&self) -> Vec<DataflowInfo> {
        let mut v: Vec<DataflowInfo> = self.inner.lock_dataflows().values().map(describe).collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// One installed dataflow with its live counters.
    pub fn dataflow(&self, name: &str) -> Result<DataflowInfo, EngineError> {
        self.inner
            .lock_dataflows()
            .get(name)
            .map(describe)
            .ok_or_else(|| EngineError::UnknownDataflow(name.into()))
    }

    /// The live counters of a dataflow (window state, dead letters, ...).
    pub fn stats(&self, name: &str) -> Result<Arc<DataflowStats>, EngineError> {
        self.inner
            .lock_dataflows()
            .get(name)
            .map(|d| Arc::clone(&d.stats))
            .ok_or_else(|| EngineError::UnknownDataflow(name.into()))
    }

    /// Subscribes to a dataflow output: batches of `(event, time, diff)` updates.
    pub fn subscribe(
        &self,
        dataflow: &str,
        output: &str,
    ) -> Result<Subscription<Arc<[Update]>>, EngineError> {
        match self.inner.distribution.get() {
            Some(d) => d.subscribe(dataflow, output),
            None => self.subscribe_local(dataflow, output),
        }
    }

    /// This node's results of one output only.
    pub fn subscribe_local(
        &self,
        dataflow: &str,
        output: &str,
    ) -> Result<Subscription<Arc<[Update]>>, EngineError> {
        let located = self.locate_output(dataflow, output);
        let dataflow = located.as_str();
        let dataflows = self.inner.lock_dataflows();
        let d = dataflows
            .get(dataflow)
            .ok_or_else(|| EngineError::UnknownDataflow(dataflow.into()))?;
        let i = d
            .plan
            .outputs
            .iter()
            .position(|o| o.name == output)
            .ok_or_else(|| EngineError::UnknownOutput {
                dataflow: dataflow.into(),
                output: output.into(),
                known: d
                    .plan
                    .outputs
                    .iter()
                    .map(|o| o.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        Ok(d.outputs[i].subscribe())
    }

    /// The installed dataflow that has `output`: the dataflow itself, or, for a dataflow a
    /// cluster cut into stages (`plan::stages`), the stage holding that output. Falls back to
    /// `dataflow` so that errors name what the user asked for.
    fn locate_output(&self, dataflow: &str, output: &str) -> String {
        let dataflows = self.inner.lock_dataflows();
        let has = |name: &str| {
            dataflows
                .get(name)
                .is_some_and(|d| d.plan.outputs.iter().any(|o| o.name == output))
        };
        if has(dataflow) {
            return dataflow.to_string();
        }
        let mut n = 1;
        loop {
            let stage = plan::stages::stage_name(dataflow, n);
            if !dataflows.contains_key(&stage) {
                return dataflow.to_string();
            }
            if has(&stage) {
                return stage;
            }
            n += 1;
        }
    }

    /// The schema of a dataflow output's rows.
    pub fn output_schema(
        &self,
        dataflow: &str,
        output: &str,
    ) -> Result<starling_operators::Schema, EngineError> {
        let located = self.locate_output(dataflow, output);
        let dataflow = located.as_str();
        let dataflows = self.inner.lock_dataflows();
        let d = dataflows
            .get(dataflow)
            .ok_or_else(|| EngineError::UnknownDataflow(dataflow.into()))?;
        d.plan
            .outputs
            .iter()
            .find(|o| o.name == output)
            .map(|o| o.schema.clone())
            .ok_or_else(|| EngineError::UnknownOutput {
                dataflow: dataflow.into(),
                output: output.into(),
                known: d
                    .plan
                    .outputs
                    .iter()
                    .map(|o| o.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// Subscribes to the events appended to a topic.
    pub fn subscribe_topic(&self, topic: &str) -> Result<Subscription<Arc<[Event]>>, EngineError> {
        Ok(self.inner.topic(topic)?.subscribers.subscribe())
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

    /// Number of timely dataflows alive on the workers (for leak checks).
    pub fn live_dataflows(&self) -> usize {
        self.inner
            .live
            .iter()
            .map(|l| l.load(Ordering::Relaxed))
            .sum()
    }

    /// Stops the workers. Publishing is refused from the moment this starts; events accepted
    /// but not yet processed are dropped with the workers (nothing is durable yet).
    pub fn shutdown(&self) {
        {
            // Under the ingest lock: a publish is then either logged and handed to the
            // workers before the Shutdown command, or refused; never logged and refused.
            let _ingest = self.inner.lock_ingest();
            self.inner.shutting_down.store(true, Ordering::Relaxed);
        }
        self.inner.broadcast(|| Command::Shutdown);
        if let Some(g) = self.guards.lock().ok().and_then(|mut g| g.take()) {
            for r in g.join() {
                if let Err(e) = r {
                    tracing::error!(error = %e, "worker failed");
                }
            }
        }
        if let Some(c) = self.clock.lock().ok().and_then(|mut c| c.take()) {
            let _ = c.join();
        }
        for t in self.inner.read_topics().values() {
            t.subscribers.close_all();
        }
        for d in self.inner.lock_dataflows().values() {
            d.outputs.iter().for_each(|o| o.close_all());
        }
        if let Some(store) = &self.inner.config.store {
            if let Err(e) = store.save() {
                tracing::error!(error = %e, "saving the stores at shutdown failed");
            }
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn describe_topic(t: &Topic) -> TopicInfo {
    TopicInfo {
        spec: t.spec.clone(),
        published: t.published.load(Ordering::Relaxed),
        max_event_time: t.clock.lock().ok().and_then(|c| c.max_seen),
        subscribers: t.subscribers.len(),
    }
}

fn describe(d: &Installed) -> DataflowInfo {
    let n_inputs = d.plan.inputs.len();
    DataflowInfo {
        name: d.plan.name.clone(),
        definition: d.definition.clone(),
        inputs: d
            .plan
            .inputs
            .iter()
            .map(|i| (i.id.clone(), i.topic.clone()))
            .collect(),
        outputs: d.plan.outputs.iter().map(|o| o.name.clone()).collect(),
        watermarks: (0..n_inputs)
            .map(|i| {
                d.watermarks
                    .iter()
                    .map(|w| w[i].load(Ordering::Relaxed))
                    .min()
                    .unwrap_or(0)
            })
            .collect(),
        frontier: d
            .frontiers
            .iter()
            .map(|f| f.load(Ordering::Relaxed))
            .min()
            .unwrap_or(0),
        window_state: d.stats.window_state.load(Ordering::Relaxed),
        late_events: d.late_events.load(Ordering::Relaxed),
        dead_letters: d.stats.dead_letters.load(Ordering::Relaxed),
        output_updates: d.stats.output_updates.load(Ordering::Relaxed),
    }
}

impl Inner {
    fn read_topics(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Topic>>> {
        self.topics.read().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_dataflows(&self) -> std::sync::MutexGuard<'_, HashMap<String, Installed>> {
        self.dataflows.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_ingest(&self) -> std::sync::MutexGuard<'_, u64> {
        self.ingest.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_threads(&self) -> std::sync::MutexGuard<'_, Vec<Option<Thread>>> {
        self.threads.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn set_live(&self, worker: usize, n: usize) {
        if let Some(l) = self.live.get(worker) {
            l.store(n, Ordering::Relaxed);
        }
    }

    pub(crate) fn register_thread(&self, index: usize) {
        if let Some(slot) = self.lock_threads().get_mut(index) {
            *slot = Some(std::thread::current());
        }
    }

    fn topic(&self, name: &str) -> Result<Arc<Topic>, EngineError> {
        self.read_topics()
            .get(name)
            .cloned()
            .ok_or_else(|| EngineError::UnknownTopic(name.into()))
    }

    fn check_batch(&self, size: usize) -> Result<(), EngineError> {
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

    fn add_topic(&self, spec: TopicSpec) -> Result<(), EngineError> {
        let mut topics = self.topics.write().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = topics.get(&spec.name) {
            return if t.spec == spec {
                Ok(())
            } else {
                Err(EngineError::TopicConflict { name: spec.name })
            };
        }
        tracing::info!(topic = %spec.name, "topic created");
        topics.insert(
            spec.name.clone(),
            Arc::new(Topic {
                spec,
                clock: Mutex::new(TopicClock {
                    max_seen: None,
                    last_arrival: Instant::now(),
                }),
                subscribers: Subscribers::new(self.config.subscriber_queue),
                published: AtomicU64::new(0),
            }),
        );
        Ok(())
    }

    /// Whether some worker's queue has room for another batch.
    fn has_room(&self) -> bool {
        let limit = self.config.max_queued_batches.max(1);
        self.queued
            .iter()
            .any(|q| q.load(Ordering::Acquire) < limit)
    }

    /// Blocks while every worker has a full queue. Only external publishers wait: a worker
    /// publishing its own results must never block on itself.
    fn wait_for_room(&self) {
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
    /// the owners of their keys instead.
    pub(crate) fn publish_internal(&self, topic: &str, events: Vec<Event>) {
        if self.config.clustered
            && self.replaying.load(Ordering::Relaxed)
            && plan::stages::is_internal_topic(topic)
        {
            // Replayed stage records: their owners had them before this node restarted.
            return;
        }
        if let Some(d) = self.distribution.get() {
            d.route_internal(topic, events);
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
    fn push(&self, t: &Topic, events: Vec<Update>, pos: u64) -> Result<(), EngineError> {
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

    /// Sends one command to every worker, in the same order for all.
    fn broadcast(&self, make: impl Fn() -> Command) {
        let order = self.order.lock().unwrap_or_else(|p| p.into_inner());
        for tx in &self.senders {
            let _ = tx.send(make());
        }
        drop(order);
        self.unpark_all();
    }

    fn unpark_all(&self) {
        for t in self.lock_threads().iter().flatten() {
            t.unpark();
        }
    }

    /// Tells the workers how long each topic has been idle, so idle inputs advance.
    fn tick(&self) {
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

/// Where a cluster node logs a topic's watermark marks: a log no shard of the table names,
/// so no replica copies it and no owner's offsets move for it.
pub const WATERMARK_SHARD: u32 = u32::MAX;

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
