//! Rendering: a [`Plan`] becomes a timely dataflow on one worker.
//!
//! Every node's output is a stream of differential updates `(event, time, diff)`, where
//! `time` is the timely timestamp. Timestamps are event time: a record enters at the input's
//! watermark (the lower bound of what can still arrive), and the input frontier *is* the
//! watermark, so operators close windows when the frontier passes their end. Insert-only
//! operators emit `diff = +1`; retracting ones (aggregates, distinct, corrections of late
//! windows) emit `-1` for what they take back.
//!
//! One file per operator family, as in timely: [`stateless`] (map, filter, key_by),
//! [`window`] (windowed aggregates, frontier-driven), [`aggregate`] (incremental aggregates
//! with differential), [`join`], [`distinct`], [`sink`] (publish, trigger, outputs).

pub mod accumulate;
pub mod aggregate;
pub mod distinct;
pub mod handoff;
pub mod join;
mod ledger;
pub mod sink;
pub mod snapshot;
pub mod state;
pub mod stateless;
pub mod vectors;
pub mod window;

use std::rc::Rc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use timely::dataflow::operators::{Concatenate, Probe};
use timely::dataflow::{ProbeHandle, Scope, Stream};

use crate::event::Event;
use crate::plan::{NodeKind, Plan, WindowSpec};

/// Event time in milliseconds: the timely timestamp of every Starling dataflow.
pub type Time = u64;
/// Multiplicity of an update.
pub type Diff = isize;
/// One differential update.
pub type Update = (Event, Time, Diff);
/// A stream of updates within a dataflow.
pub type Updates<'s> = Stream<'s, Time, Vec<Update>>;

/// What a rendered dataflow may do outside itself. The engine implements it; rendering
/// stays free of channels, topics and threads.
pub trait Effects {
    /// Appends events to a topic (`publish`, `trigger`, late and dead-letter topics).
    fn publish(&self, topic: &str, events: Vec<Event>);
    /// Delivers a batch of a named output's updates to its subscribers.
    fn output(&self, output: usize, updates: Vec<Update>);
}

/// Live counters of one installed dataflow, shared by all its workers and read by the
/// engine (and tests) to observe state and losses.
#[derive(Debug, Default)]
pub struct DataflowStats {
    /// Entries of open window state (one per key per window); zero once every window retired.
    pub window_state: AtomicI64,
    /// Events that failed an expression and went to the dead-letter topic.
    pub dead_letters: AtomicU64,
    /// Updates delivered to outputs.
    pub output_updates: AtomicU64,
    /// Writes to a KV view or series that the store refused (logged with the reason).
    pub store_errors: AtomicU64,
}

impl DataflowStats {
    pub(crate) fn add_window_state(&self, delta: i64) {
        if delta != 0 {
            self.window_state.fetch_add(delta, Ordering::Relaxed);
        }
    }
}

/// Everything rendering needs besides the plan and the inputs.
pub struct RenderContext {
    pub effects: Rc<dyn Effects>,
    pub stats: Arc<DataflowStats>,
    /// The node's KV views and series; plans that use them are only installed with them.
    pub stores: state::Stores,
    /// Where window operators restore their state from and write their checkpoints to.
    pub checkpoints: Rc<snapshot::Checkpoints>,
    /// Where window operators hand their keys' state over when a shard changes node.
    pub handoff: Rc<handoff::Handoff>,
}

/// Renders `plan` in `scope`, reading `inputs` (one stream per plan input, in order).
/// Returns a probe that passes a time once every output has caught up to it.
pub fn render<'s>(
    plan: &Plan,
    scope: Scope<'s, Time>,
    inputs: Vec<Updates<'s>>,
    ctx: &RenderContext,
) -> ProbeHandle<Time> {
    let mut streams: Vec<Updates<'s>> = Vec::with_capacity(plan.nodes.len());
    let dead = Rc::new(sink::DeadLetters::new(
        plan.dead_letter_topic.clone(),
        Rc::clone(&ctx.effects),
        Arc::clone(&ctx.stats),
    ));
    for node in &plan.nodes {
        let s = match &node.kind {
            NodeKind::Input { input } => stateless::pass(inputs[*input].clone(), &node.id),
            NodeKind::Map { input, exprs } => stateless::map(
                streams[*input].clone(),
                &node.id,
                exprs.clone(),
                Rc::clone(&dead),
            ),
            NodeKind::Filter { input, predicate } => stateless::filter(
                streams[*input].clone(),
                &node.id,
                predicate.clone(),
                Rc::clone(&dead),
            ),
            NodeKind::KeyBy { input, key } => stateless::key_by(
                streams[*input].clone(),
                &node.id,
                key.clone(),
                Rc::clone(&dead),
            ),
            NodeKind::WindowAggregate {
                input,
                window,
                aggs,
                emit,
            } => window::window_aggregate(
                streams[*input].clone(),
                window::WindowConfig {
                    name: node.id.clone(),
                    window: *window,
                    aggs: aggs.clone(),
                    emit: *emit,
                    lateness: node.lateness,
                    append_only: plan.nodes[*input].append_only,
                    from_sources: from_sources(plan, *input),
                },
                Arc::clone(&ctx.stats),
                Rc::clone(&dead),
                Rc::clone(&ctx.checkpoints),
                Rc::clone(&ctx.handoff),
            ),
            NodeKind::Aggregate { input, aggs } => aggregate::aggregate(
                streams[*input].clone(),
                &node.id,
                aggs.clone(),
                Rc::clone(&dead),
                (Rc::clone(&ctx.handoff), Rc::clone(&ctx.checkpoints)),
            ),
            NodeKind::IntervalJoin {
                left,
                right,
                within,
            } => join::interval_join(
                streams[*left].clone(),
                streams[*right].clone(),
                join::IntervalConfig {
                    name: node.id.clone(),
                    within: *within,
                    lateness: node.lateness,
                },
                Rc::clone(&ctx.handoff),
            ),
            NodeKind::TableJoin { left, right } => join::table_join(
                streams[*left].clone(),
                streams[*right].clone(),
                !plan.nodes[*right].append_only,
            ),
            NodeKind::Distinct { input, ttl } => distinct::distinct(
                streams[*input].clone(),
                &node.id,
                *ttl,
                Rc::clone(&ctx.handoff),
            ),
            NodeKind::Union { inputs } => {
                scope.concatenate(inputs.iter().map(|i| streams[*i].clone()))
            }
            NodeKind::Publish { input, topic } => sink::publish(
                streams[*input].clone(),
                topic.clone(),
                Rc::clone(&ctx.effects),
            ),
            NodeKind::Trigger { input, when, topic } => sink::trigger(
                streams[*input].clone(),
                &node.id,
                // Results of fixed windows are told apart by their start; a session's start
                // moves when sessions merge, so session results are grouped by key alone.
                matches!(
                    plan.nodes[*input].kind,
                    NodeKind::WindowAggregate {
                        window: WindowSpec::Tumbling { .. } | WindowSpec::Sliding { .. },
                        ..
                    }
                ),
                when.clone(),
                topic.clone(),
                Rc::clone(&ctx.effects),
                Rc::clone(&dead),
            ),
            NodeKind::KvPut {
                input,
                view,
                ttl_ms,
            } => match &ctx.stores.kv {
                Some(kv) => state::kv_put(
                    streams[*input].clone(),
                    &node.id,
                    view.clone(),
                    *ttl_ms,
                    plan.nodes[*input].schema.clone(),
                    kv.clone(),
                    Arc::clone(&ctx.stats),
                    state::Moving {
                        handoff: Rc::clone(&ctx.handoff),
                        key_type: plan.nodes[*input].key_type.clone(),
                        fed_by_moving_state: matches!(
                            plan.nodes[*input].kind,
                            NodeKind::Aggregate { .. }
                        ),
                    },
                ),
                None => streams[*input].clone(),
            },
            NodeKind::KvLookup {
                input,
                view,
                key,
                fields,
            } => match &ctx.stores.kv {
                Some(kv) => state::kv_lookup(
                    streams[*input].clone(),
                    &node.id,
                    view.clone(),
                    key.clone(),
                    fields.clone(),
                    kv.clone(),
                    Rc::clone(&dead),
                ),
                None => streams[*input].clone(),
            },
            NodeKind::Series { input, name } => match &ctx.stores.series {
                Some(store) => state::series(
                    streams[*input].clone(),
                    &node.id,
                    name.clone(),
                    plan.nodes[*input].schema.clone(),
                    store.clone(),
                    Arc::clone(&ctx.stats),
                ),
                None => streams[*input].clone(),
            },
            NodeKind::VectorUpsert {
                input,
                collection,
                vector,
                ..
            } => match &ctx.stores.vectors {
                Some(store) => vectors::vector_upsert(
                    streams[*input].clone(),
                    &node.id,
                    collection.clone(),
                    vector.clone(),
                    plan.nodes[*input].schema.clone(),
                    Arc::clone(store),
                    Rc::clone(&dead),
                ),
                None => streams[*input].clone(),
            },
            NodeKind::VectorSearch {
                input,
                collection,
                vector,
                k,
                filter,
            } => match &ctx.stores.vectors {
                Some(store) => vectors::vector_search(
                    streams[*input].clone(),
                    &node.id,
                    collection.clone(),
                    vector.clone(),
                    *k,
                    filter.clone(),
                    Arc::clone(store),
                    Rc::clone(&dead),
                ),
                None => streams[*input].clone(),
            },
            NodeKind::Embed { input, text, dim } => stateless::embed(
                streams[*input].clone(),
                &node.id,
                text.clone(),
                *dim,
                Rc::clone(&dead),
            ),
        };
        streams.push(s);
    }
    let probe = ProbeHandle::new();
    let mut consumed = vec![false; streams.len()];
    for node in &plan.nodes {
        for i in node.kind.inputs() {
            consumed[i] = true;
        }
    }
    for (i, out) in plan.outputs.iter().enumerate() {
        consumed[out.node] = true;
        sink::output(
            streams[out.node].clone(),
            i,
            Rc::clone(&ctx.effects),
            Arc::clone(&ctx.stats),
        )
        .probe_with(&probe);
    }
    // Leaves without outputs (publish, trigger, dangling nodes) count for completeness too.
    // Only leaves are probed: a probe on a consumed stream would get a copy of its data.
    for (s, used) in streams.into_iter().zip(consumed) {
        if !used {
            s.probe_with(&probe);
        }
    }
    probe
}

/// Whether node `i` emits source events as they came (inputs, and maps, filters, re-keyings
/// and unions of them). Those enter at the watermark and are never behind it, so none that
/// arrives when the frontier is at a window's end can belong to that window. Results of
/// aggregates and joins can: a window result is stamped `end − 1` and comes out at `end`.
fn from_sources(plan: &Plan, i: usize) -> bool {
    match &plan.nodes[i].kind {
        NodeKind::Input { .. } => true,
        NodeKind::Map { input, .. }
        | NodeKind::Filter { input, .. }
        | NodeKind::KeyBy { input, .. } => from_sources(plan, *input),
        NodeKind::Union { inputs } => inputs.iter().all(|&j| from_sources(plan, j)),
        _ => false,
    }
}
