//! Tumbling and sliding windows: each open window is a pane holding every key's
//! accumulators. Its own file because a pane spans all keys for a fixed interval, where a
//! session belongs to one key and grows.

use std::collections::BTreeMap;

use hashbrown::hash_map::EntryRef;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;

use super::transfer::{adopt_panes, group_snap, restore_panes, take_released_panes};
use super::{
    apply, eval_aggs, follow, result_event, stash_node, HashMap, HashSet, Out, Parts, WindowConfig,
};
use crate::definition::EmitMode;
use crate::render::accumulate::{new_group, Acc};
use crate::render::snapshot::{PaneSnap, WindowSnap};
use crate::render::{Time, Update, Updates};
use crate::value::Value;

/// One open tumbling or sliding window.
pub(super) struct Pane {
    pub(super) start: Time,
    pub(super) groups: HashMap<Value, Vec<Acc>>,
    pub(super) emitted: bool,
    pub(super) cap: Option<Capability<Time>>,
    /// The frontier reached end + lateness: nothing can change it any more and it no longer
    /// counts as state. It is kept until the frontier is past that point, so that a
    /// checkpoint taken exactly there still holds the result it has just emitted.
    pub(super) closed: bool,
    /// Keys whose result another node emitted before their shard moved here: left out of
    /// this node's emission, and corrected like emitted ones. Almost always empty.
    pub(super) done: HashSet<Value>,
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

/// Starts of the windows `[start, start + size)` that contain `t`, newest first.
fn window_starts(t: Time, size: u64, slide: u64) -> impl Iterator<Item = Time> {
    let last = t - t % slide;
    std::iter::successors(Some(last), move |&s| {
        s.checked_sub(slide).filter(|&p| p + size > t)
    })
}

pub(super) fn panes<'s>(
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
