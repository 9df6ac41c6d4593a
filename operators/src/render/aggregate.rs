//! Incremental aggregates without a window, on differential's `reduce`.
//!
//! The input may insert and retract; every change to a key's result comes out as
//! `-old, +new` at the time of the change. State is one arrangement entry per distinct
//! (key, aggregated values) pair, compacted as the frontier advances; with high-cardinality
//! aggregated values prefer a windowed aggregate, whose state is retired. A ledger in front
//! of the `reduce` keeps the same pairs, so that a key's state moves with its shard and is
//! checkpointed (see `ledger.rs`).

use std::rc::Rc;

use differential_dataflow::collection::AsCollection;

use super::accumulate::{new_group, results_into};
use super::handoff::Handoff;
use super::ledger::ledger;
use super::sink::DeadLetters;
use super::snapshot::Checkpoints;
use super::Updates;
use crate::event::Event;
use crate::plan::AggPlan;
use crate::value::Value;

/// Renders an incremental aggregate per key.
pub fn aggregate<'s>(
    s: Updates<'s>,
    name: &str,
    aggs: Vec<AggPlan>,
    dead: Rc<DeadLetters>,
    (handoff, ckpt): (Rc<Handoff>, Rc<Checkpoints>),
) -> Updates<'s> {
    let name = name.to_string();
    let eval_aggs = aggs.clone();
    let dead_name = name.clone();
    // Projected to (key, aggregated values) at time 0, so that the ledger nets a key's
    // equal contributions into one entry.
    let projected = s.as_collection().flat_map(move |e: Event| {
        let mut vals = Vec::with_capacity(eval_aggs.len());
        for agg in &eval_aggs {
            match &agg.expr {
                None => vals.push(Value::Null),
                Some(x) => match x.eval(&e.row) {
                    Ok(v) => vals.push(v),
                    Err(err) => {
                        dead.push(&dead_name, &e, format!("{err} (`{}`)", x.source()));
                        dead.flush();
                        return None;
                    }
                },
            }
        }
        Some(Event {
            key: e.key,
            time: 0,
            row: vals,
        })
    });
    let kept = ledger(projected.inner, &name, handoff, Some(ckpt));
    kept.as_collection()
        .map(|e: Event| (e.key, e.row))
        .reduce(
            move |key: &Value,
                  input: &[(&Vec<Value>, isize)],
                  output: &mut Vec<(Vec<Value>, isize)>| {
                let mut accs = new_group(&aggs, false);
                for (vals, diff) in input {
                    for (acc, v) in accs.iter_mut().zip(vals.iter()) {
                        acc.update(v, *diff);
                    }
                }
                let mut row = Vec::with_capacity(1 + aggs.len());
                row.push(key.clone());
                results_into(&accs, &mut row);
                output.push((row, 1));
            },
        )
        .inner
        .map_in_place_updates()
}

/// Turns `((key, row), time, diff)` back into events.
trait IntoEvents<'s> {
    fn map_in_place_updates(self) -> Updates<'s>;
}

impl<'s> IntoEvents<'s>
    for timely::dataflow::Stream<'s, super::Time, Vec<((Value, Vec<Value>), super::Time, isize)>>
{
    fn map_in_place_updates(self) -> Updates<'s> {
        use timely::dataflow::operators::core::Map;
        self.map(|((key, row), t, d)| (Event { key, time: t, row }, t, d))
    }
}
