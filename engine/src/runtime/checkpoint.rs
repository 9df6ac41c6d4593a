//! Operator-state checkpoints (ARCHITECTURE §6), the engine's side: ask every worker for its
//! window state at an aligned watermark, collect the parts, save them with the log position
//! to replay from, and give them back at a restart.
//!
//! A checkpoint runs in the command order like everything else: `Checkpoint` holds the
//! dataflow's inputs at their watermarks on every worker (events keep entering, at that
//! watermark), each worker's window operators write their state once the frontier settles
//! there, and `Release` lets the inputs move again at the same point of the order on every
//! worker. Dataflows with state that cannot be snapshotted yet (joins, distinct) or that read topics other dataflows write are not checkpointed: a restart
//! replays their whole log.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use starling_operators::plan::{NodeKind, Plan};

use super::worker::Command;
use super::{Engine, Inner};
use crate::durable::record;
use crate::durable::Store;
use crate::EngineError;

/// How long the engine waits for every worker's part.
const WAIT: Duration = Duration::from_secs(20);

/// What a finished checkpoint was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointInfo {
    pub dataflow: String,
    /// Increasing id (the log position when it was asked for).
    pub id: u64,
    /// The aligned watermark: the state of every event that entered before it.
    pub time: u64,
    /// Bytes of state saved.
    pub bytes: u64,
    /// Wall time from request to saved file.
    pub millis: u64,
}

/// The parts of one checkpoint as workers hand them in.
pub(crate) struct Collector {
    expected: usize,
    state: Mutex<Collected>,
    ready: Condvar,
}

#[derive(Default)]
struct Collected {
    arrived: usize,
    time: u64,
    watermarks: Vec<u64>,
    positions: Vec<u64>,
    parts: Vec<(usize, Parts)>,
    errors: Vec<String>,
}

/// One worker's window state: (node id, bytes).
type Parts = Vec<(String, Vec<u8>)>;

impl Collector {
    pub(crate) fn new(expected: usize) -> Arc<Collector> {
        Arc::new(Collector {
            expected,
            state: Mutex::new(Collected::default()),
            ready: Condvar::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Collected> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A worker's state, with the time and positions it saw.
    pub(crate) fn add(
        &self,
        worker: usize,
        time: u64,
        watermarks: Vec<u64>,
        positions: Vec<u64>,
        parts: Vec<(String, Vec<u8>)>,
    ) {
        let mut s = self.lock();
        if s.arrived > 0 && (s.time != time || s.positions != positions) {
            let msg = format!(
                "worker {worker} saw time {time} and positions {positions:?}, others {} and {:?}",
                s.time, s.positions
            );
            s.errors.push(msg);
        }
        s.time = time;
        s.watermarks = watermarks;
        s.positions = positions;
        s.parts.push((worker, parts));
        s.arrived += 1;
        self.ready.notify_all();
    }

    /// A worker could not take part.
    pub(crate) fn fail(&self, worker: usize, reason: String) {
        let mut s = self.lock();
        s.errors.push(format!("worker {worker}: {reason}"));
        s.arrived += 1;
        self.ready.notify_all();
    }

    fn wait(&self, timeout: Duration) -> Result<Collected, String> {
        let deadline = Instant::now() + timeout;
        let mut s = self.lock();
        while s.arrived < self.expected {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "only {} of {} workers answered within {} s",
                    s.arrived,
                    self.expected,
                    timeout.as_secs()
                ));
            }
            s = self
                .ready
                .wait_timeout(s, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        if !s.errors.is_empty() {
            return Err(s.errors.join("; "));
        }
        Ok(std::mem::take(&mut *s))
    }
}

/// The `meta` part of a saved checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Meta {
    version: u32,
    time: u64,
    workers: usize,
    /// Per input, in plan order: (watermark, first log position to replay).
    inputs: Vec<(u64, u64)>,
    /// Per topic: (shard, first offset to read).
    starts: BTreeMap<String, Vec<(u32, u64)>>,
}

/// What a restart starts a dataflow from.
pub(crate) struct Restore {
    inputs: Vec<(u64, u64)>,
    parts: HashMap<usize, HashMap<String, Vec<u8>>>,
    /// Per topic, per shard: the first offset this dataflow needs.
    pub(crate) starts: BTreeMap<String, Vec<(u32, u64)>>,
    pub(crate) time: u64,
}

impl Restore {
    /// This worker's window state, by node id.
    pub(crate) fn parts_of(&self, worker: usize) -> HashMap<String, Vec<u8>> {
        self.parts.get(&worker).cloned().unwrap_or_default()
    }

    /// Input `i`'s watermark and first position to replay.
    pub(crate) fn input(&self, i: usize) -> (u64, u64) {
        self.inputs.get(i).copied().unwrap_or((0, 0))
    }
}

/// Why a plan cannot be checkpointed yet, if it cannot.
pub(crate) fn unsupported(plan: &Plan) -> Option<&'static str> {
    plan.nodes.iter().find_map(|n| match n.kind {
        NodeKind::IntervalJoin { .. } | NodeKind::TableJoin { .. } => Some("a join"),
        NodeKind::Distinct { .. } => Some("distinct"),
        _ => None,
    })
}

/// The first offset of a shard whose entry's sequence number is at least `from` (entries of a
/// shard are in sequence order, so a binary search over offsets finds it).
fn first_offset_from(
    store: &Store,
    topic: &str,
    shard: u32,
    from: u64,
) -> Result<u64, EngineError> {
    let log = store.log();
    let (mut lo, mut hi) = (
        log.first_offset(topic, shard)?,
        log.next_offset(topic, shard)?,
    );
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let seq = match log.read(topic, shard, mid, 1)?.first() {
            Some((_, bytes)) => record::decode(bytes).map_err(EngineError::Internal)?.0,
            None => u64::MAX,
        };
        if seq < from {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    Ok(lo)
}

impl Engine {
    /// Takes a checkpoint of a dataflow's window state now and saves it; a restart then
    /// replays only the log written after it. Runs by itself every checkpoint interval.
    pub fn checkpoint(&self, dataflow: &str) -> Result<CheckpointInfo, EngineError> {
        run(&self.inner, dataflow)
    }
}

/// Checkpoints every dataflow that can be; called every checkpoint interval.
pub(crate) fn run_all(inner: &Inner) {
    let names: Vec<String> = inner
        .lock_dataflows()
        .iter()
        .filter(|(_, d)| unsupported(&d.plan).is_none())
        .map(|(n, _)| n.clone())
        .collect();
    for name in names {
        match run(inner, &name) {
            Ok(_) => {}
            Err(e) => tracing::debug!(dataflow = %name, error = %e, "no checkpoint this time"),
        }
    }
}

/// The checkpoint of one dataflow (see [`Engine::checkpoint`]).
pub(crate) fn run(inner: &Inner, dataflow: &str) -> Result<CheckpointInfo, EngineError> {
    {
        let started = Instant::now();
        let store = inner
            .config
            .store
            .clone()
            .ok_or_else(|| EngineError::NoStorage(dataflow.into()))?;
        let plan = {
            let dataflows = inner.lock_dataflows();
            let d = dataflows
                .get(dataflow)
                .ok_or_else(|| EngineError::UnknownDataflow(dataflow.into()))?;
            let written: Vec<&str> = dataflows
                .values()
                .flat_map(|o| {
                    o.plan
                        .nodes
                        .iter()
                        .filter_map(|n| match &n.kind {
                            NodeKind::Publish { topic, .. } | NodeKind::Trigger { topic, .. } => {
                                Some(topic.as_str())
                            }
                            _ => None,
                        })
                        .chain([
                            o.plan.late_topic.as_str(),
                            o.plan.dead_letter_topic.as_str(),
                        ])
                })
                .collect();
            if let Some(what) = unsupported(&d.plan) {
                return Err(EngineError::BadRequest(format!(
                    "dataflow `{dataflow}` has {what}, whose state is not checkpointed yet; a restart replays its whole log"
                )));
            }
            if let Some(i) = d
                .plan
                .inputs
                .iter()
                .find(|i| written.contains(&i.topic.as_str()))
            {
                return Err(EngineError::BadRequest(format!(
                    "dataflow `{dataflow}` reads `{}`, which a dataflow writes; a restart replays its whole log",
                    i.topic
                )));
            }
            Arc::clone(&d.plan)
        };
        let collector = Collector::new(inner.config.workers);
        let id = {
            let next = inner.lock_ingest();
            let c = Arc::clone(&collector);
            let name = dataflow.to_string();
            inner.broadcast(|| Command::Checkpoint {
                dataflow: name.clone(),
                collector: Arc::clone(&c),
            });
            *next
        };
        let collected = collector.wait(WAIT);
        {
            let next = inner.lock_ingest();
            let pos = *next;
            let name = dataflow.to_string();
            inner.broadcast(|| Command::Release {
                dataflow: name.clone(),
                pos,
            });
        }
        let c = collected.map_err(|e| {
            EngineError::Internal(format!("checkpoint of `{dataflow}` failed: {e}"))
        })?;
        let mut starts: BTreeMap<String, Vec<(u32, u64)>> = BTreeMap::new();
        for (input, from) in plan.inputs.iter().zip(&c.positions) {
            let entry = starts.entry(input.topic.clone()).or_default();
            for shard in store.log().shards(&input.topic)? {
                let off = first_offset_from(&store, &input.topic, shard, *from)?;
                match entry.iter_mut().find(|(s, _)| *s == shard) {
                    Some((_, o)) => *o = (*o).min(off),
                    None => entry.push((shard, off)),
                }
            }
        }
        let meta = Meta {
            version: 1,
            time: c.time,
            workers: inner.config.workers,
            inputs: c
                .watermarks
                .iter()
                .copied()
                .zip(c.positions.iter().copied())
                .collect(),
            starts,
        };
        let meta = serde_json::to_vec(&meta).map_err(|e| EngineError::Internal(e.to_string()))?;
        let mut named: Vec<(String, Vec<u8>)> = vec![("meta".into(), meta)];
        for (worker, parts) in c.parts {
            for (node, bytes) in parts {
                named.push((format!("w{worker}/{node}"), bytes));
            }
        }
        let bytes: u64 = named.iter().map(|(_, b)| b.len() as u64).sum();
        let refs: Vec<(&str, &[u8])> = named
            .iter()
            .map(|(n, b)| (n.as_str(), b.as_slice()))
            .collect();
        // What the sinks wrote for results before the checkpoint's time must be on disk
        // before the checkpoint says those results are done.
        store.save()?;
        store.checkpoints.save(dataflow, id, &refs)?;
        let info = CheckpointInfo {
            dataflow: dataflow.to_string(),
            id,
            time: c.time,
            bytes,
            millis: started.elapsed().as_millis() as u64,
        };
        tracing::info!(
            dataflow,
            id,
            time = info.time,
            bytes,
            millis = info.millis,
            "checkpoint saved"
        );
        Ok(info)
    }
}

/// The restore of `dataflow` from its newest checkpoint, if it has a usable one.
pub(crate) fn load(
    store: &Store,
    dataflow: &str,
    workers: usize,
) -> Result<Option<Restore>, EngineError> {
    let Some(cp) = store.checkpoints.load_latest(dataflow)? else {
        return Ok(None);
    };
    let meta: Meta = cp
        .part("meta")
        .ok_or_else(|| {
            EngineError::Recovery(format!(
                "checkpoint {} of `{dataflow}` has no meta part",
                cp.id
            ))
        })
        .and_then(|m| {
            serde_json::from_slice(m).map_err(|e| {
                EngineError::Recovery(format!(
                    "checkpoint {} of `{dataflow}`: bad meta: {e}",
                    cp.id
                ))
            })
        })?;
    if meta.workers != workers {
        tracing::warn!(
            dataflow,
            saved = meta.workers,
            now = workers,
            "checkpoint taken with another worker count; replaying the whole log instead"
        );
        return Ok(None);
    }
    let mut parts: HashMap<usize, HashMap<String, Vec<u8>>> = HashMap::new();
    for (name, bytes) in cp.parts {
        let Some(rest) = name.strip_prefix('w') else {
            continue;
        };
        let Some((w, node)) = rest.split_once('/') else {
            continue;
        };
        let Ok(w) = w.parse::<usize>() else { continue };
        parts.entry(w).or_default().insert(node.to_string(), bytes);
    }
    Ok(Some(Restore {
        inputs: meta.inputs,
        parts,
        starts: meta.starts,
        time: meta.time,
    }))
}
