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

use std::collections::{BTreeMap, BTreeSet};

use hashbrown::hash_map::EntryRef;
use rustc_hash::FxBuildHasher;

type HashMap<K, V> = hashbrown::HashMap<K, V, FxBuildHasher>;
type HashSet<K> = hashbrown::HashSet<K, FxBuildHasher>;
use std::rc::Rc;
use std::sync::Arc;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::{InputHandleCore, Operator};
use timely::dataflow::operators::Capability;

use super::accumulate::{new_group, results_into, Acc};
use super::handoff::Handoff;
use super::sink::DeadLetters;
use super::snapshot::{
    self, AccSnap, Checkpoints, GroupSnap, MovedSnap, PaneSnap, RecordSnap, SessionSnap, WindowSnap,
};
use super::{DataflowStats, Diff, Time, Update, Updates};
use crate::definition::EmitMode;
use crate::event::Event;
use crate::plan::{AggPlan, WindowSpec};
use crate::value::Value;

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

/// One open tumbling or sliding window.
struct Pane {
    start: Time,
    groups: HashMap<Value, Vec<Acc>>,
    emitted: bool,
    cap: Option<Capability<Time>>,
    /// The frontier reached end + lateness: nothing can change it any more and it no longer
    /// counts as state. It is kept until the frontier is past that point, so that a
    /// checkpoint taken exactly there still holds the result it has just emitted.
    closed: bool,
    /// Keys whose result another node emitted before their shard moved here: left out of
    /// this node's emission, and corrected like emitted ones. Almost always empty.
    done: HashSet<Value>,
}

impl Pane {
    /// Marks the window emitted and, the first time (in `final` mode), gives its results
    /// with the capability at its end to emit them under.
    fn take_final(
        &mut self,
        end: Time,
    ) -> Option<(Capability<Time>, impl Iterator<Item = Update> + '_)> {
        if self.emitted {
            return None;
        }
        self.emitted = true;
        let cap = self.cap.take()?;
        let start = self.start;
        let done = &self.done;
        // At `end`, or later for a window handed over after this node's frontier had passed
        // its end (its capability is at that frontier): never below the capability.
        let at = end.max(*cap.time());
        Some((
            cap,
            self.groups
                .iter()
                .filter(move |(k, _)| done.is_empty() || !done.contains(*k))
                .map(move |(k, accs)| (result_event(k, start, end, accs), at, 1)),
        ))
    }
}

/// One session of one key.
struct Session {
    start: Time,
    end: Time,
    accs: Vec<Acc>,
    emitted: bool,
    /// As [`Pane::closed`]: final, uncounted, kept one step for checkpoints.
    closed: bool,
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

fn group_snap(k: &Value, accs: &[Acc]) -> GroupSnap {
    GroupSnap {
        key: crate::flat::row_to_wire(std::slice::from_ref(k)),
        accs: accs.iter().map(AccSnap::of).collect(),
    }
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

/// Exchanges updates by key and releases them in time order: the updates at time `t` leave
/// once the frontier has passed `t`. Window state then changes in the order of time, never in
/// the order messages happened to arrive from other workers, so every output (intermediate
/// `updates` included) is the same whatever the schedule. The price is that results wait for
/// the watermark to move past the time their inputs entered at.
pub(crate) fn in_time_order<'s>(s: Updates<'s>, name: &str) -> Updates<'s> {
    in_time_order_moving(s, name, None)
}

/// [`in_time_order`] for a window that hands its keys' state over when their shard moves:
/// records waiting here move with the shard, and records handed over wait here again.
fn in_time_order_moving<'s>(
    s: Updates<'s>,
    name: &str,
    handoff: Option<(Rc<Handoff>, String)>,
) -> Updates<'s> {
    let exchange = Exchange::new(|u: &Update| u.0.key.stable_hash());
    let scope = s.scope();
    s.unary_frontier::<Out, _, _, _>(exchange, &format!("{name} (in time order)"), |initial, info| {
        let mut stash = TimeStash::new();
        // Follows the input frontier: what records handed over from another node wait under.
        let mut spare = handoff.as_ref().map(|(h, node)| {
            h.register(node, scope.activator_for(info.address.clone()));
            initial.clone()
        });
        drop(initial);
        move |(input, frontier), output| {
            if let Some((h, node)) = &handoff {
                follow(&mut spare, frontier.frontier().first());
                for part in h.take_adopted(node) {
                    let Some(sp) = spare.as_ref() else { break };
                    for r in &part.records {
                        match r.restore() {
                            Ok(u) if h.owns_here(&u.0.key) => {
                                let t = u.1.max(*sp.time());
                                let entry = stash.entry(t).or_insert_with(|| (sp.delayed(&t), Vec::new()));
                                entry.1.push(vec![u]);
                            }
                            Ok(_) => {}
                            Err(e) => tracing::error!(node = %node, error = %e, "a handed-over record could not be read"),
                        }
                    }
                }
            }
            match &handoff {
                // Records of released keys that arrive after the release (they were in a
                // channel from another worker) go to the shard's new owner.
                Some((h, node)) if h.any_released() => {
                    let divert = |u: &Update| match h.released_shard(&u.0.key) {
                        Some(shard) => {
                            h.divert(node, shard, u);
                            true
                        }
                        None => false,
                    };
                    stash_diverting(input, &mut stash, Some(&divert));
                }
                _ => stash_by_time(input, &mut stash),
            }
            while let Some(entry) = stash.first_entry() {
                if frontier.less_equal(entry.key()) {
                    break;
                }
                let (cap, batches) = entry.remove();
                let mut session = output.session(&cap);
                for mut b in batches {
                    session.give_container(&mut b);
                }
            }
            if let Some((h, node)) = &handoff {
                if h.take_due(node) {
                    take_released_records(h, node, &mut stash);
                }
            }
        }
    })
}

/// Moves a spare capability up to the frontier (dropping it once the input is done).
pub(crate) fn follow(spare: &mut Option<Capability<Time>>, frontier: Option<&Time>) {
    match (spare.as_mut(), frontier) {
        (Some(cap), Some(t)) if cap.time() < t => cap.downgrade(t),
        (Some(_), None) => *spare = None,
        _ => {}
    }
}

/// Takes the waiting records of released keys out of `stash`, into the hand-off.
pub(crate) fn take_released_records(h: &Handoff, node: &str, stash: &mut TimeStash) {
    for (_, batches) in stash.values_mut() {
        for batch in batches.iter_mut() {
            batch.retain(|u| match h.released_shard(&u.0.key) {
                Some(shard) => {
                    h.part(node, shard, |m| m.records.push(RecordSnap::of(u)));
                    false
                }
                None => true,
            });
        }
        batches.retain(|b| !b.is_empty());
    }
    stash.retain(|_, (_, batches)| !batches.is_empty());
}

/// Updates waiting for the frontier to pass their time: per time, a capability for it and
/// the batches.
pub(crate) type TimeStash = BTreeMap<Time, (Capability<Time>, Vec<Vec<Update>>)>;

/// Moves an input's updates into `stash` by their own time (a stamp only bounds its records
/// from below); a batch whose records share one time moves whole.
pub(crate) fn stash_by_time<P>(
    input: &mut InputHandleCore<Time, Vec<Update>, P>,
    stash: &mut TimeStash,
) where
    P: timely::communication::Pull<timely::dataflow::channels::Message<Time, Vec<Update>>>,
{
    stash_diverting(input, stash, None)
}

/// [`stash_by_time`], leaving out the records `divert` takes.
pub(crate) fn stash_diverting<P>(
    input: &mut InputHandleCore<Time, Vec<Update>, P>,
    stash: &mut TimeStash,
    divert: Option<&dyn Fn(&Update) -> bool>,
) where
    P: timely::communication::Pull<timely::dataflow::channels::Message<Time, Vec<Update>>>,
{
    input.for_each_stamp(|stamp, data| {
        let Some(&least) = stamp.least() else { return };
        for batch in data {
            if let Some(divert) = divert {
                batch.retain(|u| !divert(u));
            }
            let first = batch.first().map(|u| u.1);
            if batch.iter().all(|u| Some(u.1) == first) {
                if let Some(t) = first.map(|t| t.max(least)) {
                    stash
                        .entry(t)
                        .or_insert_with(|| (stamp.delayed(&t, 0), Vec::new()))
                        .1
                        .push(std::mem::take(batch));
                }
            } else {
                for u in batch.drain(..) {
                    let t = u.1.max(least);
                    let entry = stash
                        .entry(t)
                        .or_insert_with(|| (stamp.delayed(&t, 0), Vec::new()));
                    match entry.1.last_mut() {
                        Some(v) => v.push(u),
                        None => entry.1.push(vec![u]),
                    }
                }
            }
        }
    });
}

/// Starts of the windows `[start, start + size)` that contain `t`, newest first.
fn window_starts(t: Time, size: u64, slide: u64) -> impl Iterator<Item = Time> {
    let last = t - t % slide;
    std::iter::successors(Some(last), move |&s| {
        s.checked_sub(slide).filter(|&p| p + size > t)
    })
}

fn apply(accs: &mut [Acc], vals: &[Value], diff: Diff) {
    for (acc, v) in accs.iter_mut().zip(vals) {
        acc.update(v, diff);
    }
}

fn panes<'s>(
    s: Updates<'s>,
    cfg: WindowConfig,
    size: u64,
    slide: u64,
    parts: Parts,
    name: &str,
) -> Updates<'s> {
    let scope = s.scope();
    let Parts {
        stats,
        dead,
        ckpt,
        handoff,
    } = parts;
    s.unary_frontier::<Out, _, _, _>(Pipeline, name, move |initial, info| {
        ckpt.register(scope.activator_for(info.address.clone()));
        handoff.register(&cfg.name, scope.activator_for(info.address.clone()));
        let stash = stash_node(&cfg.name);
        let mut spare = Some(initial.clone());
        let mut panes: BTreeMap<Time, Pane> = BTreeMap::new();
        if let Some(bytes) = ckpt.take_restore(&cfg.name) {
            match restore_panes(&bytes, &initial) {
                Ok(restored) => {
                    let n: usize = restored.values().map(|p| p.groups.len()).sum();
                    stats.add_window_state(n as i64);
                    panes = restored;
                }
                Err(e) => tracing::error!(node = %cfg.name, error = %e, "window state could not be restored"),
            }
        }
        drop(initial);
        let mut vals: Vec<Value> = Vec::with_capacity(cfg.aggs.len());
        let lateness = cfg.lateness;
        let updates = cfg.emit == EmitMode::Updates;
        move |(input, frontier), output| {
            follow(&mut spare, frontier.frontier().first());
            for part in handoff.take_adopted(&cfg.name) {
                let Some(sp) = spare.as_ref() else { break };
                match adopt_panes(&part, sp, &mut panes, updates, &handoff, &stats) {
                    Ok(emit) if !emit.is_empty() => output.session(sp).give_iterator(emit.into_iter()),
                    Ok(_) => {}
                    Err(e) => tracing::error!(node = %cfg.name, error = %e, "handed-over window state could not be read"),
                }
            }
            input.for_each_stamp(|stamp, data| {
                // `in_time_order` releases each time's updates under that time's stamp, so
                // every record here is handled at the stamp's time.
                let Some(&now) = stamp.least() else { return };
                let cap: Capability<Time> = stamp.delayed(&now, 0);
                for batch in data {
                    for (e, _, diff) in batch.drain(..) {
                        if let Some(shard) = handoff.released_shard(&e.key) {
                            handoff.divert(&stash, shard, &(e, now, diff));
                            continue;
                        }
                        if !eval_aggs(&cfg, &e, &mut vals, &dead) {
                            continue;
                        }
                        for start in window_starts(e.time, size, slide) {
                            let end = start.saturating_add(size);
                            // `>=`: a window result of an upstream window that ends at this
                            // pane's end arrives exactly at `end` (stamped `end − 1`); every
                            // record of that time is here now (`in_time_order`), so the pane
                            // can still take it and emit once this stamp is done. A source
                            // event never gets here at `end + lateness == now`: it would be late.
                            if end.saturating_add(lateness) >= now {
                                let pane = panes.entry(end).or_insert_with(|| Pane {
                                    start,
                                    groups: HashMap::default(),
                                    emitted: updates || end < now,
                                    cap: (!updates && end >= now).then(|| cap.delayed(&end)),
                                    closed: false,
                                    done: HashSet::default(),
                                });
                                if !pane.emitted && end < now {
                                    // Emit before correcting, whatever the schedule was.
                                    if let Some((pcap, results)) = pane.take_final(end) {
                                        output.session(&pcap).give_iterator(results);
                                    }
                                }
                                let (accs, fresh) = match pane.groups.entry_ref(&e.key) {
                                    EntryRef::Occupied(o) => (o.into_mut(), false),
                                    EntryRef::Vacant(v) => {
                                        stats.add_window_state(1);
                                        (v.insert(new_group(&cfg.aggs, cfg.append_only)), true)
                                    }
                                };
                                if pane.emitted
                                    || (!pane.done.is_empty() && pane.done.contains(&e.key))
                                {
                                    let mut session = output.session(&cap);
                                    if !fresh {
                                        session.give((
                                            result_event(&e.key, start, end, accs),
                                            now,
                                            -1,
                                        ));
                                    }
                                    apply(accs, &vals, diff);
                                    session.give((result_event(&e.key, start, end, accs), now, 1));
                                } else {
                                    apply(accs, &vals, diff);
                                }
                            }
                        }
                    }
                }
            });
            let f = frontier.frontier().first().copied().unwrap_or(Time::MAX);
            let closing = if cfg.from_sources {
                panes.range_mut(..=f)
            } else {
                panes.range_mut(..f)
            };
            for (&end, pane) in closing {
                if let Some((pcap, results)) = pane.take_final(end) {
                    output.session(&pcap).give_iterator(results);
                }
            }
            if handoff.take_due(&cfg.name) {
                take_released_panes(&handoff, &cfg.name, &mut panes, &stats);
            }
            // Before retirement: a window that ends at the checkpoint's time emits at that
            // time, which is still on its way to the sinks; the checkpoint keeps it.
            ckpt.offer(&cfg.name, frontier.frontier().as_ref(), |time| {
                WindowSnap::Panes(
                    panes
                        .iter()
                        .map(|(&end, p)| PaneSnap {
                            start: p.start,
                            end,
                            // A result emitted at the checkpoint's own time is still on its
                            // way downstream (sinks take it once the frontier passes): it
                            // belongs to what comes after, so the restore emits it again.
                            emitted: p.emitted && (updates || end < time),
                            groups: p
                                .groups
                                .iter()
                                .map(|(k, accs)| group_snap(k, accs))
                                .collect(),
                        })
                        .collect(),
                )
            });
            // Final once the frontier reaches end + lateness; dropped once it is *past* it: a
            // window that ends exactly at the frontier has just emitted, and a checkpoint
            // taken there must still hold it.
            for (&end, pane) in panes.iter_mut() {
                if end.saturating_add(lateness) > f {
                    break;
                }
                if !pane.closed {
                    pane.closed = true;
                    stats.add_window_state(-(pane.groups.len() as i64));
                }
            }
            while let Some(entry) = panes.first_entry() {
                if entry.key().saturating_add(lateness) < f {
                    entry.remove();
                } else {
                    break;
                }
            }
            dead.flush();
        }
    })
}

fn sessions<'s>(
    s: Updates<'s>,
    cfg: WindowConfig,
    gap: u64,
    parts: Parts,
    name: &str,
) -> Updates<'s> {
    let scope = s.scope();
    let Parts {
        stats,
        dead,
        ckpt,
        handoff,
    } = parts;
    s.unary_frontier::<Out, _, _, _>(Pipeline, name, move |initial, info| {
        ckpt.register(scope.activator_for(info.address.clone()));
        handoff.register(&cfg.name, scope.activator_for(info.address.clone()));
        let stash = stash_node(&cfg.name);
        let mut spare = Some(initial.clone());
        let mut by_key: HashMap<Value, Vec<Session>> = HashMap::default();
        // (end, key) of every session not yet retired, to find what the frontier closes.
        let mut index: BTreeSet<(Time, Value)> = BTreeSet::new();
        let mut caps: BTreeMap<Time, Capability<Time>> = BTreeMap::new();
        if let Some(bytes) = ckpt.take_restore(&cfg.name) {
            match restore_sessions(&bytes) {
                Ok(list) => {
                    for (key, s) in list {
                        if !s.emitted {
                            caps.entry(s.end)
                                .or_insert_with(|| initial.delayed(&s.end));
                        }
                        index.insert((s.end, key.clone()));
                        stats.add_window_state(1);
                        by_key.entry(key).or_default().push(s);
                    }
                }
                Err(e) => tracing::error!(node = %cfg.name, error = %e, "session state could not be restored"),
            }
        }
        drop(initial);
        let mut vals: Vec<Value> = Vec::with_capacity(cfg.aggs.len());
        let lateness = cfg.lateness;
        let updates = cfg.emit == EmitMode::Updates;
        move |(input, frontier), output| {
            follow(&mut spare, frontier.frontier().first());
            for part in handoff.take_adopted(&cfg.name) {
                let Some(sp) = spare.as_ref() else { break };
                let mut state = SessionState {
                    by_key: &mut by_key,
                    index: &mut index,
                    caps: &mut caps,
                };
                match adopt_sessions(&part, sp, &mut state, updates, &handoff, &stats) {
                    Ok(emit) if !emit.is_empty() => output.session(sp).give_iterator(emit.into_iter()),
                    Ok(_) => {}
                    Err(e) => tracing::error!(node = %cfg.name, error = %e, "handed-over sessions could not be read"),
                }
            }
            input.for_each_stamp(|stamp, data| {
                // `in_time_order` releases each time's updates under that time's stamp, so
                // every record here is handled at the stamp's time.
                let Some(&now) = stamp.least() else { return };
                let cap: Capability<Time> = stamp.delayed(&now, 0);
                for batch in data {
                    for (e, _, diff) in batch.drain(..) {
                        if let Some(shard) = handoff.released_shard(&e.key) {
                            handoff.divert(&stash, shard, &(e, now, diff));
                            continue;
                        }
                        if !eval_aggs(&cfg, &e, &mut vals, &dead) {
                            continue;
                        }
                        let (lo, hi) = (e.time, e.time.saturating_add(gap));
                        if hi.saturating_add(lateness) <= now {
                            continue;
                        }
                        let list = by_key.entry(e.key.clone()).or_default();
                        let mut merged = Session {
                            start: lo,
                            end: hi,
                            accs: new_group(&cfg.aggs, cfg.append_only),
                            emitted: false,
                            closed: false,
                        };
                        let mut retract = Vec::new();
                        let mut i = 0;
                        while i < list.len() {
                            let s = &list[i];
                            // A closed session is final: as if it were already gone.
                            if !s.closed && s.start < hi && lo < s.end {
                                let s = list.swap_remove(i);
                                index.remove(&(s.end, e.key.clone()));
                                stats.add_window_state(-1);
                                // A session the frontier already closed was (or now is) emitted.
                                if s.emitted || s.end <= now {
                                    if !s.emitted && !updates {
                                        let pcap = cap.clone();
                                        output.session(&pcap).give((
                                            result_event(&e.key, s.start, s.end, &s.accs),
                                            now,
                                            1,
                                        ));
                                    }
                                    retract.push(result_event(&e.key, s.start, s.end, &s.accs));
                                }
                                merged.start = merged.start.min(s.start);
                                merged.end = merged.end.max(s.end);
                                merged
                                    .accs
                                    .iter_mut()
                                    .zip(s.accs)
                                    .for_each(|(a, b)| a.merge(b));
                            } else {
                                i += 1;
                            }
                        }
                        apply(&mut merged.accs, &vals, diff);
                        let mut session = output.session(&cap);
                        for old in retract.drain(..) {
                            session.give((old, now, -1));
                        }
                        if updates || merged.end <= now {
                            merged.emitted = true;
                            session.give((
                                result_event(&e.key, merged.start, merged.end, &merged.accs),
                                now,
                                1,
                            ));
                        } else {
                            caps.entry(merged.end)
                                .or_insert_with(|| cap.delayed(&merged.end));
                        }
                        drop(session);
                        index.insert((merged.end, e.key.clone()));
                        stats.add_window_state(1);
                        list.push(merged);
                    }
                }
            });
            let f = frontier.frontier().first().copied().unwrap_or(Time::MAX);
            // Emit sessions whose end the frontier reached.
            if !updates {
                for (end, cap) in caps.range(..=f) {
                    let mut session = output.session(cap);
                    for (_, key) in index
                        .range((*end, Value::Null)..)
                        .take_while(|(e2, _)| e2 == end)
                    {
                        if let Some(list) = by_key.get_mut(key) {
                            for s in list.iter_mut().filter(|s| s.end == *end && !s.emitted) {
                                s.emitted = true;
                                session.give((result_event(key, s.start, s.end, &s.accs), *end, 1));
                            }
                        }
                    }
                }
                caps.retain(|end, _| *end > f);
            }
            if handoff.take_due(&cfg.name) {
                let taken: Vec<(Value, Vec<Session>)> = by_key
                    .extract_if(|k, _| handoff.released_shard(k).is_some())
                    .collect();
                for (key, list) in taken {
                    let Some(shard) = handoff.released_shard(&key) else { continue };
                    let wire = crate::flat::row_to_wire(std::slice::from_ref(&key));
                    let mut snaps = Vec::with_capacity(list.len());
                    for s in list {
                        index.remove(&(s.end, key.clone()));
                        if !s.closed {
                            stats.add_window_state(-1);
                        }
                        snaps.push(SessionSnap {
                            key: wire.clone(),
                            start: s.start,
                            end: s.end,
                            emitted: s.emitted,
                            accs: s.accs.iter().map(AccSnap::of).collect(),
                        });
                    }
                    handoff.part(&cfg.name, shard, |m| m.sessions.extend(snaps));
                }
            }
            ckpt.offer(&cfg.name, frontier.frontier().as_ref(), |time| {
                WindowSnap::Sessions(
                    by_key
                        .iter()
                        .flat_map(|(k, list)| {
                            list.iter().map(move |s| SessionSnap {
                                key: crate::flat::row_to_wire(std::slice::from_ref(k)),
                                start: s.start,
                                end: s.end,
                                emitted: s.emitted && (updates || s.end < time),
                                accs: s.accs.iter().map(AccSnap::of).collect(),
                            })
                        })
                        .collect(),
                )
            });
            // Sessions are final once the frontier reaches end + lateness (they stop counting
            // as state) and dropped once it is past it (see `Pane::closed`).
            let due: Vec<(Time, Value)> = index
                .iter()
                .take_while(|(end, _)| end.saturating_add(lateness) <= f)
                .cloned()
                .collect();
            for (end, key) in due {
                let past = end.saturating_add(lateness) < f;
                if let Some(list) = by_key.get_mut(&key) {
                    for s in list.iter_mut().filter(|s| s.end == end && !s.closed) {
                        s.closed = true;
                        stats.add_window_state(-1);
                    }
                    if past {
                        list.retain(|s| s.end != end);
                        if list.is_empty() {
                            by_key.remove(&key);
                        }
                    }
                }
                if past {
                    index.remove(&(end, key));
                }
            }
            dead.flush();
        }
    })
}

/// Takes the released keys' groups out of every pane, into the hand-off.
fn take_released_panes(
    h: &Handoff,
    node: &str,
    panes: &mut BTreeMap<Time, Pane>,
    stats: &DataflowStats,
) {
    for (&end, pane) in panes.iter_mut() {
        let taken: Vec<(Value, Vec<Acc>)> = pane
            .groups
            .extract_if(|k, _| h.released_shard(k).is_some())
            .collect();
        if !pane.closed {
            stats.add_window_state(-(taken.len() as i64));
        }
        for (key, accs) in taken {
            let Some(shard) = h.released_shard(&key) else {
                continue;
            };
            let emitted = pane.emitted || pane.done.remove(&key);
            let group = group_snap(&key, &accs);
            let start = pane.start;
            h.part(node, shard, |m| {
                match m
                    .panes
                    .iter_mut()
                    .find(|p| p.end == end && p.emitted == emitted)
                {
                    Some(p) => p.groups.push(group),
                    None => m.panes.push(PaneSnap {
                        start,
                        end,
                        emitted,
                        groups: vec![group],
                    }),
                }
            });
        }
    }
}

/// Merges the panes handed over from a shard's old owner (the keys this worker owns).
/// Returns the results to emit at once: windows this node had already emitted for its own
/// keys, or whose end its frontier has passed, while the old owner had not.
fn adopt_panes(
    part: &MovedSnap,
    spare: &Capability<Time>,
    panes: &mut BTreeMap<Time, Pane>,
    updates: bool,
    h: &Handoff,
    stats: &DataflowStats,
) -> Result<Vec<Update>, String> {
    let now = *spare.time();
    let mut emit = Vec::new();
    for p in &part.panes {
        for g in &p.groups {
            let (key, accs) = snapshot::restore_group(g)?;
            if !h.owns_here(&key) {
                continue;
            }
            let pane = panes.entry(p.end).or_insert_with(|| Pane {
                start: p.start,
                groups: HashMap::default(),
                emitted: updates,
                cap: None,
                closed: false,
                done: HashSet::default(),
            });
            if p.emitted || updates {
                // The old owner emitted it; later corrections continue from there. The pane
                // still needs a capability for this node's own keys that may join it.
                if !pane.emitted {
                    pane.done.insert(key.clone());
                    if pane.cap.is_none() {
                        pane.cap = Some(spare.delayed(&p.end.max(now)));
                    }
                }
            } else if pane.emitted {
                emit.push((result_event(&key, p.start, p.end, &accs), now, 1));
            } else if pane.cap.is_none() {
                // Ends where the frontier is or later: emitted when the frontier passes.
                pane.cap = Some(spare.delayed(&p.end.max(now)));
            }
            if !pane.closed {
                stats.add_window_state(1);
            }
            match pane.groups.entry(key) {
                hashbrown::hash_map::Entry::Occupied(mut o) => {
                    for (a, b) in o.get_mut().iter_mut().zip(accs) {
                        a.merge(b);
                    }
                }
                hashbrown::hash_map::Entry::Vacant(v) => {
                    v.insert(accs);
                }
            }
        }
    }
    Ok(emit)
}

/// A session operator's state, borrowed for an adoption.
struct SessionState<'a> {
    by_key: &'a mut HashMap<Value, Vec<Session>>,
    index: &'a mut BTreeSet<(Time, Value)>,
    caps: &'a mut BTreeMap<Time, Capability<Time>>,
}

/// Merges the sessions handed over from a shard's old owner (the keys this worker owns);
/// returns the results to emit at once (sessions the frontier here has already closed).
fn adopt_sessions(
    part: &MovedSnap,
    spare: &Capability<Time>,
    st: &mut SessionState<'_>,
    updates: bool,
    h: &Handoff,
    stats: &DataflowStats,
) -> Result<Vec<Update>, String> {
    let now = *spare.time();
    let mut emit = Vec::new();
    for s in &part.sessions {
        let key = crate::flat::value_from_wire(&s.key)?;
        if !h.owns_here(&key) {
            continue;
        }
        let accs: Vec<Acc> = s
            .accs
            .iter()
            .map(AccSnap::restore)
            .collect::<Result<_, _>>()?;
        let mut emitted = s.emitted || updates;
        if !emitted {
            if s.end <= now {
                emit.push((result_event(&key, s.start, s.end, &accs), now, 1));
                emitted = true;
            } else {
                st.caps
                    .entry(s.end)
                    .or_insert_with(|| spare.delayed(&s.end));
            }
        }
        st.index.insert((s.end, key.clone()));
        stats.add_window_state(1);
        st.by_key.entry(key).or_default().push(Session {
            start: s.start,
            end: s.end,
            accs,
            emitted,
            closed: false,
        });
    }
    Ok(emit)
}

/// Panes back from a snapshot, with a capability at the end of each pane not yet emitted.
fn restore_panes(bytes: &[u8], initial: &Capability<Time>) -> Result<BTreeMap<Time, Pane>, String> {
    let WindowSnap::Panes(list) = snapshot::decode(bytes)? else {
        return Err("the checkpoint holds sessions, the operator has panes".into());
    };
    let mut panes = BTreeMap::new();
    for p in list {
        let mut groups = HashMap::default();
        for g in &p.groups {
            let (k, accs) = snapshot::restore_group(g)?;
            groups.insert(k, accs);
        }
        panes.insert(
            p.end,
            Pane {
                start: p.start,
                groups,
                emitted: p.emitted,
                cap: (!p.emitted).then(|| initial.delayed(&p.end)),
                closed: false,
                done: HashSet::default(),
            },
        );
    }
    Ok(panes)
}

/// Sessions back from a snapshot.
fn restore_sessions(bytes: &[u8]) -> Result<Vec<(Value, Session)>, String> {
    let WindowSnap::Sessions(list) = snapshot::decode(bytes)? else {
        return Err("the checkpoint holds panes, the operator has sessions".into());
    };
    list.iter()
        .map(|s| {
            let key = crate::flat::value_from_wire(&s.key)?;
            let accs = s
                .accs
                .iter()
                .map(AccSnap::restore)
                .collect::<Result<_, _>>()?;
            Ok((
                key,
                Session {
                    start: s.start,
                    end: s.end,
                    accs,
                    emitted: s.emitted,
                    closed: false,
                },
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::window_starts;

    #[test]
    fn starts() {
        assert_eq!(window_starts(25, 10, 10).collect::<Vec<_>>(), vec![20]);
        assert_eq!(
            window_starts(25, 30, 10).collect::<Vec<_>>(),
            vec![20, 10, 0]
        );
        assert_eq!(window_starts(5, 30, 10).collect::<Vec<_>>(), vec![0]);
        assert_eq!(
            window_starts(30, 30, 10).collect::<Vec<_>>(),
            vec![30, 20, 10]
        );
    }
}
