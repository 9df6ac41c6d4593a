//! Session windows: per key, a list of sessions that merge when an event bridges the gap.
//! Its own file because sessions belong to one key and change shape (merge), where panes
//! are fixed intervals shared by all keys.

use std::collections::{BTreeMap, BTreeSet};

use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;

use super::transfer::{adopt_sessions, restore_sessions, SessionState};
use super::{
    apply, eval_aggs, follow, result_event, stash_node, HashMap, Out, Parts, WindowConfig,
};
use crate::definition::EmitMode;
use crate::render::accumulate::{new_group, Acc};
use crate::render::snapshot::{AccSnap, SessionSnap, WindowSnap};
use crate::render::{Time, Updates};
use crate::value::Value;

/// One session of one key.
pub(super) struct Session {
    pub(super) start: Time,
    pub(super) end: Time,
    pub(super) accs: Vec<Acc>,
    pub(super) emitted: bool,
    /// As [`Pane::closed`]: final, uncounted, kept one step for checkpoints.
    pub(super) closed: bool,
}

pub(super) fn sessions<'s>(
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
