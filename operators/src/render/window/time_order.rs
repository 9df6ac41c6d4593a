//! The time-order stage in front of a window (and of joins and state operators): exchange
//! by key, then release updates only once the frontier has passed their time. Its own file
//! because it is shared, and because records stashed here move with a shard's hand-off.

use std::collections::BTreeMap;
use std::rc::Rc;

use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::{InputHandleCore, Operator};
use timely::dataflow::operators::Capability;

use super::Out;
use crate::render::handoff::Handoff;
use crate::render::snapshot::RecordSnap;
use crate::render::{Time, Update, Updates};

/// Exchanges updates by key and releases them in time order: the updates at time `t` leave
/// once the frontier has passed `t`. Window state then changes in the order of time, never in
/// the order messages happened to arrive from other workers, so every output (intermediate
/// `updates` included) is the same whatever the schedule. The price is that results wait for
/// the watermark to move past the time their inputs entered at.
pub(crate) fn in_time_order<'s>(s: Updates<'s>, name: &str) -> Updates<'s> {
    in_time_order_moving(s, name, None)
}

/// [`in_time_order`] for an operator that hands its keys' state over when their shard moves:
/// records waiting here move with the shard, and records handed over wait here again.
pub(crate) fn in_time_order_moving<'s>(
    s: Updates<'s>,
    name: &str,
    handoff: Option<(Rc<Handoff>, String)>,
) -> Updates<'s> {
    in_time_order_diverting(s, name, handoff, Divert::All)
}

/// Which records of a released key that arrive after the release go to the new owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Divert {
    /// Every one (a window: its state moved, so every record belongs to the new owner).
    All,
    /// Insertions only; a retraction stays here. A store writer fed by the stream wants this:
    /// its entries moved whole at the release, an insertion still in flight is a newer value
    /// the new owner must have, and a retraction is this node taking back its own result.
    Insertions,
    /// None: a store writer fed by an operator whose state moved (an unwindowed aggregate),
    /// whose new owner computes every later result itself; what arrives here is this node's
    /// own results being taken back.
    Nothing,
}

/// [`in_time_order_moving`], choosing which late records of released keys are diverted.
pub(crate) fn in_time_order_diverting<'s>(
    s: Updates<'s>,
    name: &str,
    handoff: Option<(Rc<Handoff>, String)>,
    which: Divert,
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
                        Some(_) if which == Divert::Nothing => false,
                        Some(_) if which == Divert::Insertions && u.2 < 0 => false,
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
