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
//!
//! This file holds the engine's state and its lifecycle (start, shutdown); each of its other
//! concerns is an `impl Engine` block of its own: `topics`, `publish`, `dataflows`, `subscribe`,
//! `watermarks`, and in `internal_sink` where dataflow results go in a cluster.
//!
//! Every operation acts on this node only. In a cluster the node routes its front doors'
//! calls (to the owners of shards, through Raft, to every node's results) and calls these for
//! this node's part; the engine never calls back into the cluster layer, except to hand over
//! what its dataflows write (see [`InternalSink`]).

mod checkpoint;
mod dataflows;
mod handoff;
mod internal_sink;
mod publish;
mod recovery;
mod replica;
mod subscribe;
mod subscribers;
mod topics;
mod watermarks;
mod worker;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

pub use checkpoint::CheckpointInfo;
pub use dataflows::DataflowInfo;
pub use handoff::ShardPart;
pub use internal_sink::InternalSink;
pub use recovery::RecoveryReport;
pub use subscribers::{feed, Feed, Subscribers, Subscription, SubscriptionClosed};
pub use topics::TopicInfo;
pub use watermarks::WATERMARK_SHARD;

use dataflows::Installed;
use topics::Topic;
use worker::Command;

use crate::durable::Store;
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
    /// How many shards keys are spread over: the unit a hand-off cuts out of the dataflows.
    /// `None` takes the store's count (no store: keys are not sharded and nothing is ever
    /// handed off). A cluster passes its own count, which every member shares; a store with
    /// another count is refused at start, because the log's shard of an event and the
    /// cluster's shard of its key must be the same number or a move leaves keys behind.
    pub shards: Option<u32>,
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
            shards: None,
        }
    }
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
    /// Set once by the cluster layer: records dataflows write to topics go through it (see
    /// [`InternalSink`]).
    internal_sink: std::sync::OnceLock<Arc<dyn InternalSink>>,
}

/// The in-process engine. Cheap to share: clone the `Arc` it lives in, or use its methods
/// from any thread.
pub struct Engine {
    inner: Arc<Inner>,
    guards: Mutex<Option<timely::communication::initialize::WorkerGuards<()>>>,
    clock: Mutex<Option<JoinHandle<()>>>,
    recovery: Mutex<Option<RecoveryReport>>,
}

impl Engine {
    /// Starts the workers and the clock.
    pub fn start(config: EngineConfig) -> Result<Engine, EngineError> {
        let workers = config.workers.max(1);
        if let (Some(asked), Some(store)) = (config.shards, &config.store) {
            if store.shards != asked {
                return Err(EngineError::Startup(format!(
                    "the engine was asked for {asked} shards but its store has {}: \
                     a cluster and its members' logs must agree on the shard count",
                    store.shards
                )));
            }
        }
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
            internal_sink: std::sync::OnceLock::new(),
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

    /// Time each worker spent doing work (not parked), in nanoseconds.
    pub fn worker_busy_nanos(&self) -> Vec<u64> {
        self.inner
            .busy
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect()
    }

    /// Whether the engine accepts work (not shutting down).
    pub fn is_running(&self) -> bool {
        !self.inner.shutting_down.load(Ordering::Relaxed)
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
}
