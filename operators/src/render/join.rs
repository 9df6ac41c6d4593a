//! Joins, on differential arrangements.
//!
//! * **Interval join** (stream–stream): events with equal keys whose event times are at most
//!   `within` apart. Each side's event stays in its arrangement until no partner can still
//!   arrive (`time + within + allowed_lateness`), then is retracted, so state is bounded.
//!   The output is insert-only: the retraction of expired state is not a result.
//! * **Table join** (stream–table): each left event meets the right side's current value for
//!   its key at the event's timestamp. An insert-only right side is read as upserts (the
//!   newest event time per key wins); a retracting right side (an aggregate) is already a
//!   table. Left events are held for one tick only.
//!
//! Output rows are the left fields followed by the right fields (a right field whose name is
//! taken is renamed `<right id>_<name>`); the key is the left key.

use std::collections::HashMap;

use differential_dataflow::collection::AsCollection;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;

use super::{Time, Update, Updates};
use crate::event::{Event, Row};
use crate::value::Value;

type Out = CapacityContainerBuilder<Vec<Update>>;

/// Re-emits every update and, later, its negation at `expiry(event, time)`.
pub fn with_expiry<'s>(
    s: Updates<'s>,
    name: &str,
    expiry: impl Fn(&Event, Time) -> Time + 'static,
) -> Updates<'s> {
    s.unary::<Out, _, _, _>(Pipeline, name, move |_, _| {
        move |input, output| {
            input.for_each_stamp(|cap, data| {
                let Some(&least) = cap.least() else { return };
                let mut later: HashMap<Time, Vec<Update>> = HashMap::new();
                {
                    let mut session = output.session(&cap);
                    for batch in data {
                        for (e, t, d) in batch.drain(..) {
                            // The record's own time: a stamp only bounds it from below.
                            let now = t.max(least);
                            let at = expiry(&e, now).max(now + 1);
                            later.entry(at).or_default().push((e.clone(), at, -d));
                            session.give((e, t, d));
                        }
                    }
                }
                for (at, updates) in later {
                    let c: Capability<Time> = cap.delayed(&at, 0);
                    output.session(&c).give_iterator(updates.into_iter());
                }
            });
        }
    })
}

fn keyed<'s>(
    s: Updates<'s>,
) -> differential_dataflow::VecCollection<'s, Time, (Value, (Time, Row)), isize> {
    s.as_collection().map(|e: Event| (e.key, (e.time, e.row)))
}

fn only_insertions<'s>(
    c: differential_dataflow::VecCollection<'s, Time, Event, isize>,
) -> Updates<'s> {
    c.consolidate()
        .inner
        .unary::<Out, _, _, _>(Pipeline, "Insertions", |_, _| {
            move |input, output| {
                input.for_each_stamp(|cap, data| {
                    let mut session = output.session(&cap);
                    for batch in data {
                        batch.retain(|(_, _, d)| *d > 0);
                        session.give_container(batch);
                    }
                });
            }
        })
}

/// Renders an interval join.
pub fn interval_join<'s>(
    left: Updates<'s>,
    right: Updates<'s>,
    within: u64,
    lateness: u64,
) -> Updates<'s> {
    let horizon = move |e: &Event, _now: Time| {
        e.time
            .saturating_add(within)
            .saturating_add(lateness)
            .saturating_add(1)
    };
    let l = keyed(with_expiry(left, "Expire left", horizon)).arrange_by_key();
    let r = keyed(with_expiry(right, "Expire right", horizon)).arrange_by_key();
    let joined = l.join_core(
        r,
        move |k: &Value, (lt, lrow): &(Time, Row), (rt, rrow): &(Time, Row)| {
            (lt.abs_diff(*rt) <= within).then(|| {
                let mut row = lrow.clone();
                row.extend(rrow.iter().cloned());
                Event {
                    key: k.clone(),
                    time: (*lt).max(*rt),
                    row,
                }
            })
        },
    );
    only_insertions(joined)
}

/// Renders a stream–table join. `right_is_table` says the right side already retracts
/// (one current row per key); otherwise it is read as upserts.
pub fn table_join<'s>(left: Updates<'s>, right: Updates<'s>, right_is_table: bool) -> Updates<'s> {
    let table = if right_is_table {
        right
    } else {
        upserts(right)
    };
    let l = keyed(with_expiry(left, "Hold left one tick", |_, now| now + 1)).arrange_by_key();
    let r = keyed(table).arrange_by_key();
    let joined = l.join_core(
        r,
        |k: &Value, (lt, lrow): &(Time, Row), (_, rrow): &(Time, Row)| {
            let mut row = lrow.clone();
            row.extend(rrow.iter().cloned());
            Some(Event {
                key: k.clone(),
                time: *lt,
                row,
            })
        },
    );
    only_insertions(joined)
}

/// Turns an insert-only stream into a table: per key, the event with the newest event time
/// (ties: the later arrival) replaces the previous one, as `-old, +new`.
fn upserts<'s>(s: Updates<'s>) -> Updates<'s> {
    s.unary::<Out, _, _, _>(
        Exchange::new(|u: &Update| u.0.key.stable_hash()),
        "Upsert",
        |_, _| {
            let mut current: HashMap<Value, Event> = HashMap::new();
            move |input, output| {
                input.for_each_stamp(|cap, data| {
                    let Some(&least) = cap.least() else { return };
                    let mut session = output.session(&cap);
                    for batch in data {
                        // Records at their own times, in time order (a stamp only bounds them).
                        if !batch.is_sorted_by_key(|u| u.1) {
                            batch.sort_by_key(|u| u.1);
                        }
                        for (e, t, d) in batch.drain(..) {
                            let now = t.max(least);
                            if d <= 0 {
                                continue;
                            }
                            match current.get(&e.key) {
                                Some(old) if old.time > e.time => continue,
                                Some(old) => session.give((old.clone(), now, -1)),
                                None => {}
                            }
                            session.give((e.clone(), now, 1));
                            current.insert(e.key.clone(), e);
                        }
                    }
                });
            }
        },
    )
}
