//! One timely worker: applies commands, feeds inputs, tracks watermarks, steps dataflows.
//!
//! Watermarks: for each dataflow input, `watermark = max(watermark, newest event time on the
//! topic − max_delay)`, raised to `newest + 1` once the topic has been idle for
//! `idle_timeout`, or to an explicit mark. An event is judged against the watermark *before*
//! its own batch moves it: older than `watermark − allowed_lateness` means late (sent to the
//! late topic and counted, never into results); otherwise it enters at the watermark, which
//! is the input's timely time. Every worker receives every clock update, so all agree.

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use crossbeam_channel::Receiver;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::Input;
use timely::dataflow::{InputHandle, ProbeHandle};
use timely::worker::Worker;

use starling_operators::plan::{Plan, WatermarkPolicy};
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
    },
    /// The topic's newest event time and how long it has been idle.
    Clock {
        topic: Arc<str>,
        max_seen: u64,
        idle_ms: u64,
    },
    /// Raise the watermark of every input on the topic to `time`.
    Watermark {
        topic: Arc<str>,
        time: u64,
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
}

struct LocalInput {
    id: String,
    topic: String,
    policy: WatermarkPolicy,
    handle: InputHandle<Time, CapacityContainerBuilder<Vec<Update>>>,
    watermark: Time,
}

struct Running {
    index: usize,
    inputs: Vec<LocalInput>,
    probe: ProbeHandle<Time>,
    cmd: InstallCommand,
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
                } => {
                    ingest(&mut running, &topic, events, max_seen, me, &inner);
                    if let Some(i) = inner.upgrade() {
                        i.queued[me].fetch_sub(1, Ordering::AcqRel);
                    }
                }
                Command::Clock {
                    topic,
                    max_seen,
                    idle_ms,
                } => advance(&mut running, &topic, me, |p, _| {
                    if p.idle_timeout > 0 && idle_ms >= p.idle_timeout {
                        max_seen.saturating_add(1)
                    } else {
                        max_seen.saturating_sub(p.max_delay)
                    }
                }),
                Command::Watermark { topic, time } => {
                    advance(&mut running, &topic, me, |_, _| time)
                }
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
        for r in running.values() {
            let f = r
                .probe
                .with_frontier(|f| f.first().copied().unwrap_or(Time::MAX));
            r.cmd.frontiers[me].store(f, Ordering::Release);
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
    let ctx = RenderContext {
        effects: Rc::new(WorkerEffects {
            inner: inner.clone(),
            outputs: cmd.outputs.clone(),
        }),
        stats: Arc::clone(&cmd.stats),
        stores: cmd.stores.clone(),
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
    let inputs = plan
        .inputs
        .iter()
        .zip(handles)
        .map(|(i, handle)| LocalInput {
            id: i.id.clone(),
            topic: i.topic.clone(),
            policy: i.watermark,
            handle,
            watermark: 0,
        })
        .collect();
    Running {
        index,
        inputs,
        probe,
        cmd,
    }
}

/// Feeds a batch to every input reading `topic`, then moves their watermarks.
fn ingest(
    running: &mut HashMap<String, Running>,
    topic: &str,
    events: Vec<Update>,
    max_seen: u64,
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
            raise(input, target, cmd, me, index);
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

fn raise(input: &mut LocalInput, target: u64, cmd: &InstallCommand, me: usize, index: usize) {
    if target > input.watermark {
        input.watermark = target;
        input.handle.advance_to(target);
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
    target: impl Fn(&WatermarkPolicy, u64) -> u64,
) {
    for r in running.values_mut() {
        let Running { inputs, cmd, .. } = r;
        for (index, input) in inputs.iter_mut().enumerate() {
            if input.topic == topic {
                let t = target(&input.policy, input.watermark);
                raise(input, t, cmd, me, index);
            }
        }
    }
}
