//! Joins.
//!
//! * **Interval join** (stream–stream, insert-only inputs): events with equal keys whose
//!   event times are at most `within` apart. A frontier-driven operator with a hash map per
//!   side, like the windows: each event is kept until no partner can still arrive
//!   (`time + within + allowed_lateness`), then forgotten, so state is bounded. The output is
//!   insert-only. (Differential arrangements did this 3–7× slower: every event went through
//!   the batcher and the trace's merges twice, once in and once expired.)
//! * **Table join** (stream–table), on differential arrangements: each left event meets the
//!   right side's current value for its key at the event's timestamp. An insert-only right
//!   side is read as upserts (the newest event time per key wins); a retracting right side
//!   (an aggregate) is already a table. Left events are held for one tick only.
//!
//! Output rows are the left fields followed by the right fields (a right field whose name is
//! taken is renamed `<right id>_<name>`); the key is the left key.

use std::collections::{BTreeMap, HashMap};

use differential_dataflow::collection::AsCollection;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;

use std::rc::Rc;

use super::handoff::Handoff;
use super::snapshot::{MovedSnap, RecordSnap};
use super::window::{follow, stash_by_time, stash_diverting, take_released_records, TimeStash};
use super::{Time, Update, Updates};
use crate::event::{Event, Row};
use crate::value::Value;

type Out = CapacityContainerBuilder<Vec<Update>>;

/// Re-emits every update and, later, its negation at `expiry(event, time)`.
///
/// The negations are held here, each under a capability at its time, and sent only when the
/// frontier reaches that time. Sent at once (at their future times), they would wait in the
/// downstream arrangement's batcher, which re-sorts everything it holds at every frontier
/// step: a join keeping 10 s of events re-sorted all of them every time the watermark moved.
pub fn with_expiry<'s>(
    s: Updates<'s>,
    name: &str,
    expiry: impl Fn(&Event, Time) -> Time + 'static,
) -> Updates<'s> {
    s.unary_frontier::<Out, _, _, _>(Pipeline, name, move |_, _| {
        let mut later: BTreeMap<Time, (Capability<Time>, Vec<Update>)> = BTreeMap::new();
        move |(input, frontier), output| {
            input.for_each_stamp(|cap, data| {
                let Some(&least) = cap.least() else { return };
                let mut session = output.session(&cap);
                for batch in data {
                    for (e, t, d) in batch.drain(..) {
                        // The record's own time: a stamp only bounds it from below.
                        let now = t.max(least);
                        let at = expiry(&e, now).max(now + 1);
                        later
                            .entry(at)
                            .or_insert_with(|| (cap.delayed(&at, 0), Vec::new()))
                            .1
                            .push((e.clone(), at, -d));
                        session.give((e, t, d));
                    }
                }
            });
            while let Some(entry) = later.first_entry() {
                if frontier.less_than(entry.key()) {
                    break;
                }
                let (cap, updates) = entry.remove();
                output.session(&cap).give_iterator(updates.into_iter());
            }
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

/// One side of an interval join: per key, the events that may still meet a partner, and
/// when each key next has an event to forget.
#[derive(Default)]
struct Side {
    by_key: HashMap<Value, Vec<(Time, Row)>>,
    /// Horizon → keys holding an event whose horizon it is (a key may repeat).
    expiries: BTreeMap<Time, Vec<Value>>,
}

impl Side {
    fn insert(&mut self, key: Value, time: Time, row: Row, horizon: Time) {
        self.expiries.entry(horizon).or_default().push(key.clone());
        self.by_key.entry(key).or_default().push((time, row));
    }

    /// Takes the events of released keys out, into the hand-off as records (their horizon
    /// in `at`).
    fn take_released(&mut self, h: &Handoff, node: &str, horizon: impl Fn(Time) -> Time) {
        let taken: Vec<(Value, Vec<(Time, Row)>)> = self
            .by_key
            .extract_if(|k, _| h.released_shard(k).is_some())
            .collect();
        for (key, events) in taken {
            let Some(shard) = h.released_shard(&key) else {
                continue;
            };
            h.part(node, shard, |m| {
                for (time, row) in events {
                    m.records.push(RecordSnap::of(&(
                        Event {
                            key: key.clone(),
                            time,
                            row,
                        },
                        horizon(time),
                        1,
                    )));
                }
            });
        }
        // `expiries` may still name the keys: expiring a key that is gone does nothing.
    }

    /// Forgets every event whose horizon is at or before `now`.
    fn expire(&mut self, now: Time, horizon: impl Fn(Time) -> Time) {
        let keep = self.expiries.split_off(&(now + 1));
        let due = std::mem::replace(&mut self.expiries, keep);
        let mut keys: Vec<Value> = due.into_values().flatten().collect();
        keys.sort_unstable();
        keys.dedup();
        for k in keys {
            if let Some(events) = self.by_key.get_mut(&k) {
                events.retain(|(t, _)| horizon(*t) > now);
                if events.is_empty() {
                    self.by_key.remove(&k);
                }
            }
        }
    }
}

/// Renders an interval join of two insert-only streams, frontier-driven like the windows:
/// both inputs are exchanged by key and handled in time order (the updates at time `t` once
/// both frontiers have passed `t`, left before right), so every matching pair is found once,
/// by the later of its two events, and emitted at that event's time. Each event is held
/// until the frontier passes `time + within + lateness`, when no partner can arrive any
/// more. Hash maps per key instead of differential arrangements: the join sees only
/// insertions, so there is nothing to consolidate, and nothing is sorted.
/// What an interval join needs to know.
pub struct IntervalConfig {
    pub name: String,
    pub within: u64,
    pub lateness: u64,
}

/// The hand-off names of an interval join's parts: per side, its waiting records and the
/// events it keeps for partners.
fn join_parts(name: &str) -> [[String; 2]; 2] {
    [
        [format!("{name}~left"), format!("{name}~left~kept")],
        [format!("{name}~right"), format!("{name}~right~kept")],
    ]
}

pub fn interval_join<'s>(
    left: Updates<'s>,
    right: Updates<'s>,
    cfg: IntervalConfig,
    handoff: Rc<Handoff>,
) -> Updates<'s> {
    let IntervalConfig {
        name,
        within,
        lateness,
    } = cfg;
    let parts = join_parts(&name);
    let scope = left.scope();
    let horizon = move |t: Time| {
        t.saturating_add(within)
            .saturating_add(lateness)
            .saturating_add(1)
    };
    let by_key = |u: &Update| u.0.key.stable_hash();
    left.binary_frontier::<_, Out, _, _, _, _>(
        right,
        Exchange::new(by_key),
        Exchange::new(by_key),
        "Interval join",
        move |initial, info| {
            for p in parts.iter().flatten() {
                handoff.register(p, scope.activator_for(info.address.clone()));
            }
            let mut spare = Some(initial);
            let mut stash: [TimeStash; 2] = [TimeStash::new(), TimeStash::new()];
            let mut sides: [Side; 2] = [Side::default(), Side::default()];
            move |(in1, f1), (in2, f2), output| {
                // Both sides' records wait for both frontiers: the spare follows the lower.
                let lower = [f1.frontier().first(), f2.frontier().first()]
                    .into_iter()
                    .flatten()
                    .min()
                    .copied();
                follow(&mut spare, lower.as_ref());
                for (side, [waiting, kept]) in parts.iter().enumerate() {
                    let (w, k) = (handoff.take_adopted(waiting), handoff.take_adopted(kept));
                    let Some(sp) = spare.as_ref() else { break };
                    adopt_join(
                        w,
                        k,
                        waiting,
                        sp,
                        &handoff,
                        &mut stash[side],
                        &mut sides[side],
                    );
                }
                if handoff.any_released() {
                    for (side, input) in [0usize, 1].into_iter().zip([&parts[0][0], &parts[1][0]]) {
                        let divert = |u: &Update| match handoff.released_shard(&u.0.key) {
                            Some(shard) => {
                                handoff.divert(input, shard, u);
                                true
                            }
                            None => false,
                        };
                        if side == 0 {
                            stash_diverting(in1, &mut stash[0], Some(&divert));
                        } else {
                            stash_diverting(in2, &mut stash[1], Some(&divert));
                        }
                    }
                } else {
                    stash_by_time(in1, &mut stash[0]);
                    stash_by_time(in2, &mut stash[1]);
                }
                loop {
                    // The earliest stashed time that both frontiers have passed.
                    let next = stash
                        .iter()
                        .filter_map(|s| s.keys().next().copied())
                        .min()
                        .filter(|t| !f1.less_equal(t) && !f2.less_equal(t));
                    let Some(t) = next else { break };
                    for s in sides.iter_mut() {
                        s.expire(t, horizon);
                    }
                    for (side, pending) in stash.iter_mut().enumerate() {
                        let Some((cap, batches)) = pending.remove(&t) else {
                            continue;
                        };
                        let mut session = output.session(&cap);
                        let (mine, theirs) = if side == 0 {
                            let (a, b) = sides.split_at_mut(1);
                            (&mut a[0], &b[0])
                        } else {
                            let (a, b) = sides.split_at_mut(1);
                            (&mut b[0], &a[0])
                        };
                        for batch in batches {
                            for (e, _, d) in batch {
                                if d <= 0 {
                                    continue;
                                }
                                if let Some(partners) = theirs.by_key.get(&e.key) {
                                    for (pt, prow) in partners {
                                        if e.time.abs_diff(*pt) > within {
                                            continue;
                                        }
                                        let (lrow, rrow) = if side == 0 {
                                            (&e.row, prow)
                                        } else {
                                            (prow, &e.row)
                                        };
                                        let mut row = Vec::with_capacity(lrow.len() + rrow.len());
                                        row.extend(lrow.iter().cloned());
                                        row.extend(rrow.iter().cloned());
                                        let joined = Event {
                                            key: e.key.clone(),
                                            time: e.time.max(*pt),
                                            row,
                                        };
                                        for _ in 0..d {
                                            session.give((joined.clone(), t, 1));
                                        }
                                    }
                                }
                                let h = horizon(e.time).max(t + 1);
                                mine.insert(e.key, e.time, e.row, h);
                            }
                        }
                    }
                }
                for (side, [waiting, kept]) in parts.iter().enumerate() {
                    if handoff.take_due(waiting) {
                        take_released_records(&handoff, waiting, &mut stash[side]);
                    }
                    if handoff.take_due(kept) {
                        sides[side].take_released(&handoff, kept, horizon);
                    }
                }
            }
        },
    )
}

/// Merges one side's parts handed over from a shard's old owner: waiting records wait here
/// again (at the frontier if theirs has passed), kept events are kept until their horizon.
fn adopt_join(
    waiting: Vec<MovedSnap>,
    kept: Vec<MovedSnap>,
    node: &str,
    spare: &Capability<Time>,
    h: &Handoff,
    stash: &mut TimeStash,
    side: &mut Side,
) {
    let mine = |r: &RecordSnap| match r.restore() {
        Ok(u) if h.owns_here(&u.0.key) => Some(u),
        Ok(_) => None,
        Err(e) => {
            tracing::error!(node = %node, error = %e, "a handed-over join record could not be read");
            None
        }
    };
    for u in waiting.iter().flat_map(|m| &m.records).filter_map(mine) {
        let t = u.1.max(*spare.time());
        stash
            .entry(t)
            .or_insert_with(|| (spare.delayed(&t), Vec::new()))
            .1
            .push(vec![u]);
    }
    for (e, horizon, _) in kept.iter().flat_map(|m| &m.records).filter_map(mine) {
        side.insert(e.key, e.time, e.row, horizon);
    }
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
