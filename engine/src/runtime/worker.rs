//! One timely worker: applies commands, feeds inputs, tracks watermarks, steps dataflows.
//!
//! Watermarks: for each dataflow input, `watermark = max(watermark, newest event time on the
//! topic − max_delay)`, raised to `newest + 1` once the topic has been idle for
//! `idle_timeout`, or to an explicit mark. An event is judged against the watermark *before*
//! its own batch moves it: older than `watermark − allowed_lateness` means late (sent to the
//! late topic and counted, never into results); otherwise it enters at the watermark, which
//! is the input's timely time. Every worker receives every clock update, so all agree.

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use crossbeam_channel::Receiver;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::Input;
use timely::dataflow::{InputHandle, ProbeHandle};
use timely::worker::Worker;

use starling_operators::plan::{Plan, WatermarkPolicy};
use starling_operators::render::handoff::Handoff;
use starling_operators::render::snapshot::{self, Checkpoints};
use starling_operators::render::{render, DataflowStats, Effects, RenderContext, Time, Update};
use starling_operators::{Event, Value};

use super::{Inner, Subscribers};

/// What the engine asks a worker to do.
pub(crate) enum Command {
    Install(Box<InstallCommand>),
    Drop(String),
    /// A batch for this worker (updates whose time it sets to the input's watermark), and the
    /// topic's newest event time after it.
    Events {
        topic: Arc<str>,
        events: Vec<Update>,
        max_seen: u64,
        /// Log position: every record with a smaller sequence number came before this
        /// command (`u64::MAX` for events that are not logged).
        pos: u64,
    },
    /// The topic's newest event time and how long it has been idle.
    Clock {
        topic: Arc<str>,
        max_seen: u64,
        idle_ms: u64,
        pos: u64,
    },
    /// Raise the watermark of every input on the topic to `time`.
    Watermark {
        topic: Arc<str>,
        time: u64,
        pos: u64,
    },
    /// Snapshot the dataflow's window state at its inputs' current watermark.
    Checkpoint {
        dataflow: String,
        collector: Arc<super::checkpoint::Collector>,
    },
    /// Cut the window state of these shards' keys out of every dataflow (none: only collect
    /// diverted records) and hand it to `gather`.
    HandOff {
        shards: Arc<[u32]>,
        gather: Arc<super::handoff::Gather>,
    },
    /// Merge state handed over for these shards, which this node owns again.
    Adopt {
        shards: Arc<[u32]>,
        parts: Arc<Vec<super::handoff::ShardPart>>,
    },
    /// End the dataflow's checkpoint: release its inputs as of log position `pos`.
    Release {
        dataflow: String,
        pos: u64,
    },
    Shutdown,
}

/// Everything a worker needs to build one dataflow.
#[derive(Clone)]
pub(crate) struct InstallCommand {
    pub plan: Arc<Plan>,
    pub stats: Arc<DataflowStats>,
    pub outputs: Vec<Arc<Subscribers<Arc<[Update]>>>>,
    pub frontiers: Arc<Vec<AtomicU64>>,
    pub watermarks: Arc<Vec<Vec<AtomicU64>>>,
    pub late_events: Arc<AtomicU64>,
    pub stores: starling_operators::render::state::Stores,
    /// State and positions to start from (a restart with a checkpoint).
    pub restore: Option<Arc<super::checkpoint::Restore>>,
    /// Shards keys are spread over (0 without a store: nothing is ever handed off).
    pub shards: u32,
    /// Node-wide count of diverted records (see [`Handoff`]).
    pub stragglers: Arc<AtomicUsize>,
}

struct LocalInput {
    id: String,
    topic: String,
    policy: WatermarkPolicy,
    handle: InputHandle<Time, CapacityContainerBuilder<Vec<Update>>>,
    watermark: Time,
    /// Recent raises: (watermark, first log position that entered at it), oldest first.
    raises: VecDeque<(Time, u64)>,
    /// Log records below this position are already in the restored state: skipped.
    skip_below: u64,
    /// While a checkpoint holds the input: the highest watermark asked for meanwhile.
    held: Option<Time>,
}

/// Raises remembered per input, enough to find where any recent watermark began.
const RAISES_KEPT: usize = 4096;

struct Running {
    index: usize,
    inputs: Vec<LocalInput>,
    probe: ProbeHandle<Time>,
    cmd: InstallCommand,
    checkpoints: Rc<Checkpoints>,
    handoff: Rc<Handoff>,
    /// The checkpoint under way: its collector and what was fixed when it began.
    job: Option<Job>,
}

struct Job {
    collector: Arc<super::checkpoint::Collector>,
    time: Time,
    watermarks: Vec<Time>,
    positions: Vec<u64>,
}

/// The effects of a dataflow on this worker: topics and subscribers live in the engine.
struct WorkerEffects {
    inner: Weak<Inner>,
    outputs: Vec<Arc<Subscribers<Arc<[Update]>>>>,
}

impl Effects for WorkerEffects {
    fn publish(&self, topic: &str, events: Vec<Event>) {
        if let Some(inner) = self.inner.upgrade() {
            inner.publish_internal(topic, events);
        }
    }

    fn output(&self, output: usize, updates: Vec<Update>) {
        if let Some(subs) = self.outputs.get(output) {
            if !subs.is_empty() {
                subs.send(&Arc::from(updates));
            }
        }
    }
}

/// The worker's main loop; returns on [`Command::Shutdown`] or when the engine is gone.
pub(crate) fn run(worker: &mut Worker, rx: Receiver<Command>, inner: Weak<Inner>) {
    let me = worker.index();
    match inner.upgrade() {
        Some(i) => i.register_thread(me),
        None => return,
    }
    let mut running: HashMap<String, Running> = HashMap::new();
    // Releases whose parts the operators have not all cut out yet, oldest first.
    let mut releases: VecDeque<Arc<super::handoff::Gather>> = VecDeque::new();
    loop {
        let mut stop = false;
        while let Ok(cmd) = rx.try_recv() {
            match cmd {
                Command::Shutdown => {
                    stop = true;
                    break;
                }
                Command::Install(cmd) => {
                    let name = cmd.plan.name.clone();
                    let r = install(worker, *cmd, &inner);
                    if let Some(old) = running.insert(name, r) {
                        // Cannot happen while the engine orders installs and drops, but a
                        // replaced dataflow must never keep running unseen.
                        drop(old.inputs);
                        worker.drop_dataflow(old.index);
                    }
                }
                Command::Drop(name) => {
                    if let Some(r) = running.remove(&name) {
                        drop(r.inputs);
                        worker.drop_dataflow(r.index);
                    }
                }
                Command::Events {
                    topic,
                    events,
                    max_seen,
                    pos,
                } => {
                    ingest(&mut running, &topic, events, max_seen, pos, me, &inner);
                    if let Some(i) = inner.upgrade() {
                        i.queued[me].fetch_sub(1, Ordering::AcqRel);
                    }
                }
                Command::Clock {
                    topic,
                    max_seen,
                    idle_ms,
                    pos,
                } => advance(&mut running, &topic, me, pos, |p, _| {
                    if p.idle_timeout > 0 && idle_ms >= p.idle_timeout {
                        max_seen.saturating_add(1)
                    } else {
                        max_seen.saturating_sub(p.max_delay)
                    }
                }),
                Command::Watermark { topic, time, pos } => {
                    advance(&mut running, &topic, me, pos, |_, _| time)
                }
                Command::Checkpoint {
                    dataflow,
                    collector,
                } => begin_checkpoint(&mut running, &dataflow, collector, me),
                Command::Release { dataflow, pos } => release(&mut running, &dataflow, pos, me),
                Command::HandOff { shards, gather } => {
                    for r in running.values() {
                        if !shards.is_empty() {
                            r.handoff.release(&shards);
                        }
                    }
                    releases.push_back(gather);
                }
                Command::Adopt { shards, parts } => adopt(&running, &shards, &parts),
            }
        }
        if stop || inner.strong_count() == 0 {
            break;
        }
        // Parks until the engine or another worker wakes this thread (both unpark it).
        worker.step_or_park(Some(Duration::from_millis(20)));
        // Busy time is the thread's CPU time: parked time costs none.
        let cpu = cpu_time::ThreadTime::now();
        if let Some(i) = inner.upgrade() {
            let total = cpu.as_duration().as_nanos() as u64;
            i.busy[me].store(total, Ordering::Relaxed);
        }
        for r in running.values_mut() {
            let f = r
                .probe
                .with_frontier(|f| f.first().copied().unwrap_or(Time::MAX));
            r.cmd.frontiers[me].store(f, Ordering::Release);
            finish_checkpoint(r, me);
        }
        while !releases.is_empty() && running.values().all(|r| r.handoff.finished()) {
            if let Some(gather) = releases.pop_front() {
                hand_in(&running, &gather);
            }
        }
        if let Some(i) = inner.upgrade() {
            i.set_live(me, worker.installed_dataflows().len());
        }
    }
    for (_, r) in running.drain() {
        drop(r.inputs);
        worker.drop_dataflow(r.index);
    }
}

fn install(worker: &mut Worker, cmd: InstallCommand, inner: &Weak<Inner>) -> Running {
    let index = worker.next_dataflow_index();
    let me = worker.index();
    let checkpoints = match &cmd.restore {
        Some(r) => Checkpoints::restoring(r.parts_of(me)),
        None => Rc::new(Checkpoints::default()),
    };
    let handoff = Rc::new(Handoff::new(
        cmd.shards,
        me,
        worker.peers(),
        Arc::clone(&cmd.stragglers),
    ));
    let ctx = RenderContext {
        effects: Rc::new(WorkerEffects {
            inner: inner.clone(),
            outputs: cmd.outputs.clone(),
        }),
        stats: Arc::clone(&cmd.stats),
        stores: cmd.stores.clone(),
        checkpoints: Rc::clone(&checkpoints),
        handoff: Rc::clone(&handoff),
    };
    let plan = Arc::clone(&cmd.plan);
    let (handles, probe) = worker.dataflow_named::<Time, _, _>(&plan.name, |scope| {
        let mut handles = Vec::new();
        let mut streams = Vec::new();
        for _ in &plan.inputs {
            let (h, s) = scope.new_input::<Vec<Update>>();
            handles.push(h);
            streams.push(s);
        }
        let probe = render(&plan, scope, streams, &ctx);
        (handles, probe)
    });
    let mut inputs: Vec<LocalInput> = plan
        .inputs
        .iter()
        .zip(handles)
        .map(|(i, handle)| LocalInput {
            id: i.id.clone(),
            topic: i.topic.clone(),
            policy: i.watermark,
            handle,
            watermark: 0,
            raises: VecDeque::new(),
            skip_below: 0,
            held: None,
        })
        .collect();
    if let Some(r) = &cmd.restore {
        // Start where the checkpoint was taken: its watermarks, and the log after it.
        for (index, input) in inputs.iter_mut().enumerate() {
            let (wm, from) = r.input(index);
            input.skip_below = from;
            input.raises.push_back((wm, from));
            if wm > 0 {
                input.watermark = wm;
                input.handle.advance_to(wm);
                if let Some(w) = cmd.watermarks.get(me).and_then(|w| w.get(index)) {
                    w.store(wm, Ordering::Relaxed);
                }
            }
        }
    }
    Running {
        index,
        inputs,
        probe,
        cmd,
        checkpoints,
        handoff,
        job: None,
    }
}

/// Hands every dataflow's cut-out parts to a release's gather.
fn hand_in(running: &HashMap<String, Running>, gather: &super::handoff::Gather) {
    let mut parts = Vec::new();
    let mut errors = Vec::new();
    for (name, r) in running {
        for (node, shard, moved) in r.handoff.take_out() {
            if moved.is_empty() {
                continue;
            }
            match snapshot::encode_moved(&moved) {
                Ok(bytes) => parts.push(super::handoff::ShardPart {
                    dataflow: name.clone(),
                    node,
                    shard,
                    bytes,
                }),
                Err(e) => errors.push(format!("{name}/{node}, shard {shard}: {e}")),
            }
        }
    }
    gather.add(parts, errors);
}

/// Gives each dataflow the parts handed over for it, and the shards back.
fn adopt(running: &HashMap<String, Running>, shards: &[u32], parts: &[super::handoff::ShardPart]) {
    for (name, r) in running {
        let mine: Vec<(String, snapshot::MovedSnap)> = parts
            .iter()
            .filter(|p| &p.dataflow == name)
            .filter_map(|p| match snapshot::decode_moved(&p.bytes) {
                Ok(m) => Some((p.node.clone(), m)),
                Err(e) => {
                    tracing::error!(dataflow = %name, node = %p.node, error = %e, "handed-over state could not be read");
                    None
                }
            })
            .collect();
        r.handoff.adopt(shards, mine);
    }
}

/// Feeds a batch to every input reading `topic`, then moves their watermarks.
fn ingest(
    running: &mut HashMap<String, Running>,
    topic: &str,
    events: Vec<Update>,
    max_seen: u64,
    pos: u64,
    me: usize,
    inner: &Weak<Inner>,
) {
    let consumers: usize = running
        .values()
        .map(|r| r.inputs.iter().filter(|i| i.topic == topic).count())
        .sum();
    let mut events = Some(events);
    let mut seen = 0;
    let mut late_out: Vec<(String, Vec<Event>)> = Vec::new();
    for r in running.values_mut() {
        let Running { inputs, cmd, .. } = r;
        for (index, input) in inputs.iter_mut().enumerate() {
            if input.topic != topic {
                continue;
            }
            seen += 1;
            if pos <= input.skip_below {
                // Already in the state this dataflow was restored with.
                continue;
            }
            let mut updates = if seen == consumers {
                events.take().unwrap_or_default()
            } else {
                events.as_ref().cloned().unwrap_or_default()
            };
            let wm = input.watermark;
            let oldest = wm.saturating_sub(input.policy.allowed_lateness);
            // One pass stamps every update with the watermark; late ones are rare and are
            // taken out only when there are some.
            let mut any_late = false;
            for u in updates.iter_mut() {
                u.1 = wm;
                any_late |= u.0.time < oldest;
            }
            let mut late = Vec::new();
            if any_late {
                updates.retain(|(e, _, _)| {
                    if e.time < oldest {
                        late.push(late_record(&input.id, e, wm));
                        false
                    } else {
                        true
                    }
                });
            }
            input.handle.send_batch(&mut updates);
            if !late.is_empty() {
                cmd.late_events
                    .fetch_add(late.len() as u64, Ordering::Relaxed);
                late_out.push((cmd.plan.late_topic.clone(), late));
            }
            let target = max_seen.saturating_sub(input.policy.max_delay);
            raise(input, target, pos, cmd, me, index);
            input.handle.flush();
        }
    }
    if let Some(inner) = inner.upgrade() {
        for (t, late) in late_out {
            inner.publish_internal(&t, late);
        }
    }
}

fn late_record(input: &str, e: &Event, watermark: u64) -> Event {
    Event {
        key: Value::Null,
        time: e.time,
        row: vec![
            Value::str(input),
            Value::str(&format!(
                "late by {} ms: event time {} is older than the watermark {} minus allowed lateness",
                watermark - e.time,
                e.time,
                watermark
            )),
            Value::Timestamp(e.time as i64),
            e.key.clone(),
            Value::List(e.row.clone().into()),
        ],
    }
}

fn raise(
    input: &mut LocalInput,
    target: u64,
    pos: u64,
    cmd: &InstallCommand,
    me: usize,
    index: usize,
) {
    if let Some(held) = input.held.as_mut() {
        // A checkpoint holds the input: remember the raise for when it is released.
        *held = (*held).max(target);
        return;
    }
    if target > input.watermark {
        input.watermark = target;
        input.handle.advance_to(target);
        input.raises.push_back((target, pos));
        if input.raises.len() > RAISES_KEPT {
            input.raises.pop_front();
        }
        if let Some(w) = cmd.watermarks.get(me).and_then(|w| w.get(index)) {
            w.store(target, Ordering::Relaxed);
        }
    }
}

/// Moves the watermark of every input on `topic` to `target(policy, current)` if higher.
fn advance(
    running: &mut HashMap<String, Running>,
    topic: &str,
    me: usize,
    pos: u64,
    target: impl Fn(&WatermarkPolicy, u64) -> u64,
) {
    for r in running.values_mut() {
        let Running { inputs, cmd, .. } = r;
        for (index, input) in inputs.iter_mut().enumerate() {
            if input.topic == topic && pos > input.skip_below {
                let t = target(&input.policy, input.watermark);
                raise(input, t, pos, cmd, me, index);
            }
        }
    }
}

/// Holds the dataflow's inputs at their watermarks and asks its window operators for their
/// state at the smallest of them. Inputs whose watermarks differ cannot be aligned: the
/// checkpoint is declined (the next one may find them equal).
fn begin_checkpoint(
    running: &mut HashMap<String, Running>,
    dataflow: &str,
    collector: Arc<super::checkpoint::Collector>,
    me: usize,
) {
    let Some(r) = running.get_mut(dataflow) else {
        collector.fail(me, format!("dataflow `{dataflow}` is not running"));
        return;
    };
    if r.job.is_some() || r.checkpoints.pending() {
        collector.fail(me, "a checkpoint is already under way".into());
        return;
    }
    let watermarks: Vec<Time> = r.inputs.iter().map(|i| i.watermark).collect();
    let time = watermarks.iter().copied().min().unwrap_or(0);
    if watermarks.iter().any(|w| *w != time) {
        collector.fail(
            me,
            format!(
                "the inputs' watermarks differ ({watermarks:?}); a checkpoint needs them aligned"
            ),
        );
        return;
    }
    let mut positions = Vec::with_capacity(r.inputs.len());
    for input in &r.inputs {
        // The first record that entered at the current watermark: everything before it is
        // in the state, everything from it on is replayed.
        let pos = input
            .raises
            .iter()
            .find(|(wm, _)| *wm >= time)
            .map_or(input.skip_below, |(_, p)| *p);
        positions.push(pos);
    }
    if positions.contains(&u64::MAX) {
        collector.fail(me, "an input reads events that are not logged".into());
        return;
    }
    for input in r.inputs.iter_mut() {
        input.held = Some(input.watermark);
    }
    r.checkpoints.request(time);
    r.job = Some(Job {
        collector,
        time,
        watermarks,
        positions,
    });
}

/// Hands the finished checkpoint to its collector. The inputs stay held until the engine's
/// `Release`, which reaches every worker at the same point of the command order.
fn finish_checkpoint(r: &mut Running, me: usize) {
    let Some(job) = r.job.take() else { return };
    // Every sink (KV views, series, vectors, outputs) must also have taken what came before
    // the checkpoint's time, or results the state calls emitted would be written nowhere.
    if r.probe.less_than(&job.time) {
        r.job = Some(job);
        return;
    }
    let Some(req) = r.checkpoints.take_finished() else {
        r.job = Some(job);
        return;
    };
    if req.errors.is_empty() {
        job.collector
            .add(me, job.time, job.watermarks, job.positions, req.parts);
    } else {
        job.collector.fail(me, req.errors.join("; "));
    }
}

/// Ends a checkpoint: raises the held inputs to what was asked meanwhile, as of log
/// position `pos` (the same on every worker). A checkpoint still under way is abandoned.
fn release(running: &mut HashMap<String, Running>, dataflow: &str, pos: u64, me: usize) {
    let Some(r) = running.get_mut(dataflow) else {
        return;
    };
    if let Some(job) = r.job.take() {
        r.checkpoints.cancel();
        job.collector
            .fail(me, "abandoned before it finished".into());
    }
    let Running { inputs, cmd, .. } = r;
    for (index, input) in inputs.iter_mut().enumerate() {
        if let Some(target) = input.held.take() {
            raise(input, target, pos, cmd, me, index);
        }
    }
}
