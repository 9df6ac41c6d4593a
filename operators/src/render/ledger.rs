//! The ledger in front of a differential operator (an unwindowed aggregate, `distinct`): the
//! operator's input, kept consolidated per record beside it, so that the operator's state can
//! leave with a shard and be restored from a checkpoint.
//!
//! A differential arrangement cannot be cut by key from the outside, but its contents are a
//! function of its input collection. So the ledger remembers that collection (consolidated:
//! an aggregate's input is projected to `(key, aggregated values)`, so a count keeps one entry
//! per key, a sum one per distinct amount) and moves state by moving input, the way Flink
//! moves keyed state by key group:
//!
//! * **Release** (old owner): for each record of a released shard the ledger emits its
//!   negation at the current time, so the operator retracts the key's results (a `kv_put`
//!   behind it deletes the key from this node's view), and hands the records over. Records
//!   of released keys that arrive later (in a channel, or a future expiry of `distinct`) are
//!   diverted to the new owner the same way.
//! * **Adopt** (new owner): the ledger emits the records it is handed at its current time,
//!   so the operator computes the key's results here, as if it had seen them all along.
//! * **Checkpoint**: the ledger's part is the records that entered before the checkpoint's
//!   time; a restore emits them again, and the log is replayed from the checkpoint on.
//!
//! Consumers of the output see the move as a retraction on one node and the same result
//! inserted on the other: the consolidated output equals one node's.

use std::collections::HashMap;
use std::rc::Rc;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;

use super::handoff::Handoff;
use super::snapshot::{self, Checkpoints, RecordSnap, WindowSnap};
use super::window::follow;
use super::{Time, Update, Updates};

type Out = CapacityContainerBuilder<Vec<Update>>;
use crate::event::Event;

/// The consolidated input of one worker's operator: records whose time the frontier has
/// passed, netted, and records still at or after it (what a checkpoint at the frontier must
/// leave to the log replay).
#[derive(Default)]
struct Book {
    settled: HashMap<Event, isize>,
    recent: Vec<(Event, Time, isize)>,
}

impl Book {
    fn add(&mut self, e: &Event, t: Time, diff: isize) {
        self.recent.push((e.clone(), t, diff));
    }

    /// Nets what the frontier has passed into the settled records.
    fn settle(&mut self, frontier: Option<Time>) {
        let settled = &mut self.settled;
        self.recent.retain(|(e, t, d)| {
            if frontier.is_some_and(|f| *t >= f) {
                return true;
            }
            let slot = settled.entry(e.clone()).or_insert(0);
            *slot += d;
            if *slot == 0 {
                settled.remove(e);
            }
            false
        });
    }

    /// Takes out every record whose key `shard_of` places in a released shard: settled ones
    /// netted (time 0), recent ones at their own times, so that retracting each at the later
    /// of its time and now never takes out something before it went in.
    fn take(&mut self, shard_of: impl Fn(&Event) -> Option<u32>) -> Vec<(u32, Event, Time, isize)> {
        let mut out = Vec::new();
        self.settled.retain(|e, d| match shard_of(e) {
            Some(shard) => {
                out.push((shard, e.clone(), 0, *d));
                false
            }
            None => true,
        });
        self.recent.retain(|(e, t, d)| match shard_of(e) {
            Some(shard) => {
                out.push((shard, e.clone(), *t, *d));
                false
            }
            None => true,
        });
        out
    }
}

/// Puts a ledger in front of the differential operator `name`. `ckpt` makes the ledger
/// part of the dataflow's checkpoints (give it only when every other stateful operator of the
/// dataflow checkpoints too).
pub(crate) fn ledger<'s>(
    s: Updates<'s>,
    name: &str,
    handoff: Rc<Handoff>,
    ckpt: Option<Rc<Checkpoints>>,
) -> Updates<'s> {
    let node = format!("{name}~ledger");
    let scope = s.scope();
    let exchange = Exchange::new(|u: &Update| u.0.key.stable_hash());
    s.unary_frontier::<Out, _, _, _>(exchange, &format!("{name} (ledger)"), move |initial, info| {
        handoff.register(&node, scope.activator_for(info.address.clone()));
        let mut restored: Vec<Update> = Vec::new();
        if let Some(c) = &ckpt {
            c.register(scope.activator_for(info.address.clone()));
            if let Some(bytes) = c.take_restore(&node) {
                match restored_records(&bytes) {
                    Ok(r) => restored = r,
                    Err(e) => tracing::error!(node = %node, error = %e, "ledger state could not be restored"),
                }
            }
        }
        let mut spare = Some(initial.clone());
        drop(initial);
        let mut book = Book::default();
        move |(input, frontier), output| {
            follow(&mut spare, frontier.frontier().first());
            if let Some(sp) = spare.as_ref() {
                let now = *sp.time();
                let mut session = output.session(sp);
                // A restore: the records the checkpoint held, as of the first time there is.
                for (e, _, d) in restored.drain(..) {
                    book.add(&e, now, d);
                    session.give((e, now, d));
                }
                // State handed over (and records diverted to this node after a release).
                for part in handoff.take_adopted(&node) {
                    for r in &part.records {
                        match r.restore() {
                            Ok((e, at, d)) if handoff.owns_here(&e.key) => {
                                let t = at.max(now);
                                book.add(&e, t, d);
                                session.give((e, t, d));
                            }
                            Ok(_) => {}
                            Err(e) => tracing::error!(node = %node, error = %e, "a handed-over record could not be read"),
                        }
                    }
                }
            }
            input.for_each_stamp(|stamp, data| {
                let mut session = output.session(&stamp);
                for batch in data {
                    if handoff.any_released() {
                        batch.retain(|u| match handoff.released_shard(&u.0.key) {
                            Some(shard) => {
                                handoff.divert(&node, shard, u);
                                false
                            }
                            None => true,
                        });
                    }
                    for (e, t, d) in batch.iter() {
                        book.add(e, *t, *d);
                    }
                    session.give_container(batch);
                }
            });
            if handoff.take_due(&node) {
                let taken = book.take(|e| handoff.released_shard(&e.key));
                match spare.as_ref() {
                    Some(sp) => {
                        let now = *sp.time();
                        let mut session = output.session(sp);
                        for (shard, e, t, d) in taken {
                            let t = t.max(now);
                            handoff.part(&node, shard, |m| m.records.push(RecordSnap::of(&(e.clone(), t, d))));
                            session.give((e, t, -d));
                        }
                    }
                    // The input is complete: nothing runs here any more, but the records
                    // still go to the shard's new owner.
                    None => {
                        for (shard, e, t, d) in taken {
                            handoff.part(&node, shard, |m| m.records.push(RecordSnap::of(&(e, t, d))));
                        }
                    }
                }
            }
            let f = frontier.frontier().first().copied();
            book.settle(f);
            if let Some(c) = &ckpt {
                c.offer(&node, frontier.frontier().as_ref(), |_| {
                    WindowSnap::Records(
                        book.settled
                            .iter()
                            .map(|(e, d)| RecordSnap::of(&(e.clone(), 0, *d)))
                            .collect(),
                    )
                });
            }
        }
    })
}

/// The records a ledger's checkpoint part holds.
fn restored_records(bytes: &[u8]) -> Result<Vec<Update>, String> {
    let WindowSnap::Records(list) = snapshot::decode(bytes)? else {
        return Err("the checkpoint part is not a ledger's".into());
    };
    list.iter().map(RecordSnap::restore).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Value;

    fn ev(key: &str, v: i64) -> Event {
        Event {
            key: Value::str(key),
            time: 0,
            row: vec![Value::Int(v)],
        }
    }

    #[test]
    fn a_book_nets_what_the_frontier_passed_and_keeps_the_rest_apart() {
        let mut b = Book::default();
        b.add(&ev("a", 1), 5, 1);
        b.add(&ev("a", 1), 6, 1);
        b.add(&ev("a", 1), 7, -1);
        b.add(&ev("b", 2), 9, 1);
        b.settle(Some(9));
        assert_eq!(b.settled.get(&ev("a", 1)), Some(&1));
        assert!(
            !b.settled.contains_key(&ev("b", 2)),
            "at the frontier: not settled yet"
        );
        b.add(&ev("a", 1), 9, -1);
        b.settle(Some(10));
        assert!(
            !b.settled.contains_key(&ev("a", 1)),
            "netted to nothing: gone"
        );
        assert_eq!(b.settled.get(&ev("b", 2)), Some(&1));
    }

    #[test]
    fn taking_a_shard_takes_its_keys_only_and_everything_of_them() {
        let mut b = Book::default();
        b.add(&ev("a", 1), 1, 2);
        b.add(&ev("a", 3), 1, 1);
        b.add(&ev("b", 2), 1, 1);
        b.settle(Some(2));
        b.add(&ev("a", 3), 4, 1);
        // Settled records netted at time 0, recent ones at their own times.
        let mut taken = b.take(|e| (e.key == Value::str("a")).then_some(7));
        taken.sort_by_key(|(_, e, t, _)| (e.row.clone(), *t));
        assert_eq!(
            taken,
            vec![
                (7, ev("a", 1), 0, 2),
                (7, ev("a", 3), 0, 1),
                (7, ev("a", 3), 4, 1)
            ]
        );
        assert_eq!(b.settled.len(), 1);
        assert!(b.settled.contains_key(&ev("b", 2)));
    }
}
