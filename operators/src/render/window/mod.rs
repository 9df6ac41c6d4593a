//! Windowed aggregates: tumbling, sliding and session windows over event time.
//!
//! A frontier-driven timely operator (about ten times cheaper than differential for this
//! shape; see CRATE-NOTES): events are exchanged by key, each open window keeps a hash map
//! from key to accumulators and one capability at its end.
//!
//! * **Emission.** `final`: when the frontier (the watermark) reaches a window's end, each
//!   key's result is emitted once, at time `end`. `updates`: every change is emitted at once
//!   as `-old, +new`.
//! * **Late events.** An event that arrives after its window was emitted but while the
//!   window is within `allowed_lateness` updates it, and the correction comes out as a
//!   retraction of the old result plus the new result, at the event's arrival time.
//!   (Events later than that never get here: the engine sends them to the late topic.)
//! * **State.** A window is dropped when the frontier passes `end + allowed_lateness`, so
//!   memory is bounded by the windows that can still change.
//! * **Determinism.** Whether an event is a correction depends only on its timestamp, never
//!   on scheduling: if it arrives at or after its window's end and the window has not been
//!   emitted yet, the window is emitted first, then corrected.
//!
//! This file holds the entry point and what both window kinds share (configuration, per-event
//! evaluation, result rows); panes, sessions, the time-order stage and the moving of window
//! state each have a file of their own.

mod panes;
mod sessions;
mod time_order;
mod transfer;

use std::rc::Rc;
use std::sync::Arc;

use rustc_hash::FxBuildHasher;
use timely::container::CapacityContainerBuilder;

use super::accumulate::{results_into, Acc};
use super::handoff::Handoff;
use super::sink::DeadLetters;
use super::snapshot::Checkpoints;
use super::{DataflowStats, Diff, Time, Update, Updates};
use crate::definition::EmitMode;
use crate::event::Event;
use crate::plan::{AggPlan, WindowSpec};
use crate::value::Value;

use panes::panes;
use sessions::sessions;
pub(crate) use time_order::{
    follow, in_time_order, in_time_order_diverting, in_time_order_moving, stash_by_time,
    stash_diverting, take_released_records, Divert, TimeStash,
};

type HashMap<K, V> = hashbrown::HashMap<K, V, FxBuildHasher>;
type HashSet<K> = hashbrown::HashSet<K, FxBuildHasher>;

type Out = CapacityContainerBuilder<Vec<Update>>;

/// What a windowed aggregate needs to know.
pub struct WindowConfig {
    pub name: String,
    pub window: WindowSpec,
    pub aggs: Vec<AggPlan>,
    pub emit: EmitMode,
    pub lateness: u64,
    /// Whether the input only inserts (lets min/max keep a single value).
    pub append_only: bool,
    /// Whether the input carries source events only (see `render::from_sources`). If not,
    /// records can still arrive at a pane's end time itself (an upstream window result
    /// ending there), so a pane is final only once the frontier is *past* its end.
    pub from_sources: bool,
}

fn result_event(key: &Value, start: Time, end: Time, accs: &[Acc]) -> Event {
    let mut row = Vec::with_capacity(3 + accs.len());
    row.push(key.clone());
    row.push(Value::Timestamp(start as i64));
    row.push(Value::Timestamp(end as i64));
    results_into(accs, &mut row);
    Event {
        key: key.clone(),
        time: end.saturating_sub(1),
        row,
    }
}

/// Renders a windowed aggregate.
pub fn window_aggregate<'s>(
    s: Updates<'s>,
    cfg: WindowConfig,
    stats: Arc<DataflowStats>,
    dead: Rc<DeadLetters>,
    ckpt: Rc<Checkpoints>,
    handoff: Rc<Handoff>,
) -> Updates<'s> {
    let name = format!("Window {}", cfg.name);
    let stash = stash_node(&cfg.name);
    let s = in_time_order_moving(s, &name, Some((Rc::clone(&handoff), stash)));
    let parts = Parts {
        stats,
        dead,
        ckpt,
        handoff,
    };
    match cfg.window {
        WindowSpec::Session { gap } => sessions(s, cfg, gap, parts, &name),
        WindowSpec::Tumbling { size } => panes(s, cfg, size, size, parts, &name),
        WindowSpec::Sliding { size, slide } => panes(s, cfg, size, slide, parts, &name),
    }
}

/// What a window operator shares with its worker.
struct Parts {
    stats: Arc<DataflowStats>,
    dead: Rc<DeadLetters>,
    ckpt: Rc<Checkpoints>,
    handoff: Rc<Handoff>,
}

/// The hand-off name of a window's time-order stage.
fn stash_node(window: &str) -> String {
    format!("{window}~stash")
}

/// Evaluates the aggregated expressions of one event into `vals`; false if one failed.
/// Plain column references are read directly, without going through the evaluator.
fn eval_aggs(cfg: &WindowConfig, e: &Event, vals: &mut Vec<Value>, dead: &DeadLetters) -> bool {
    vals.clear();
    for agg in &cfg.aggs {
        match &agg.expr {
            None => vals.push(Value::Null),
            Some(x) if x.as_column().is_some() => {
                let i = x.as_column().unwrap_or(0);
                vals.push(e.row.get(i).cloned().unwrap_or(Value::Null));
            }
            Some(x) => match x.eval(&e.row) {
                Ok(v) => vals.push(v),
                Err(err) => {
                    dead.push(&cfg.name, e, format!("{} (`{}`)", err, x.source()));
                    return false;
                }
            },
        }
    }
    true
}

fn apply(accs: &mut [Acc], vals: &[Value], diff: Diff) {
    for (acc, v) in accs.iter_mut().zip(vals) {
        acc.update(v, diff);
    }
}
