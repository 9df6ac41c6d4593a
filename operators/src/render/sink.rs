//! Where results leave a dataflow: outputs, `publish`, `trigger`, and the dead-letter topic.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;

use super::{DataflowStats, Effects, Update, Updates};
use crate::event::Event;
use crate::expr::Expr;
use crate::value::Value;

type Out = CapacityContainerBuilder<Vec<Update>>;

/// Collects events whose expression failed and publishes them, with the error, to the
/// definition's dead-letter topic (schema: input, reason, time, key, event).
pub struct DeadLetters {
    topic: String,
    effects: Rc<dyn Effects>,
    stats: Arc<DataflowStats>,
    pending: RefCell<Vec<Event>>,
}

impl DeadLetters {
    /// A dead-letter collector for `topic`.
    pub fn new(topic: String, effects: Rc<dyn Effects>, stats: Arc<DataflowStats>) -> DeadLetters {
        DeadLetters {
            topic,
            effects,
            stats,
            pending: RefCell::new(Vec::new()),
        }
    }

    /// Records that `node` could not process `e` because of `reason`.
    pub fn push(&self, node: &str, e: &Event, reason: String) {
        tracing::debug!(node, %reason, "event sent to dead-letter topic");
        self.stats.dead_letters.fetch_add(1, Ordering::Relaxed);
        self.pending.borrow_mut().push(Event {
            key: Value::Null,
            time: e.time,
            row: vec![
                Value::str(node),
                Value::str(&reason),
                Value::Timestamp(e.time as i64),
                e.key.clone(),
                Value::List(e.row.clone().into()),
            ],
        });
    }

    /// Publishes what was collected.
    pub fn flush(&self) {
        let pending = std::mem::take(&mut *self.pending.borrow_mut());
        if !pending.is_empty() {
            self.effects.publish(&self.topic, pending);
        }
    }
}

/// Delivers a named output's updates to its subscribers. The batches are handed over, not
/// copied: nothing downstream of an output needs the data, only its progress (the probe).
pub fn output<'s>(
    s: Updates<'s>,
    index: usize,
    effects: Rc<dyn Effects>,
    stats: Arc<DataflowStats>,
) -> Updates<'s> {
    s.unary::<Out, _, _, _>(Pipeline, "Output", move |_, _| {
        move |input, output| {
            let _ = output;
            input.for_each_stamp(|_cap, data| {
                for batch in data {
                    if !batch.is_empty() {
                        stats
                            .output_updates
                            .fetch_add(batch.len() as u64, Ordering::Relaxed);
                        effects.output(index, std::mem::take(batch));
                    }
                }
            });
        }
    })
}

/// Publishes the insertions of a stream to a topic (retractions have no meaning in a topic
/// of events, so they are not published), and passes the stream on.
pub fn publish<'s>(s: Updates<'s>, topic: String, effects: Rc<dyn Effects>) -> Updates<'s> {
    s.unary::<Out, _, _, _>(Pipeline, "Publish", move |_, _| {
        move |input, output| {
            input.for_each_stamp(|cap, data| {
                let mut session = output.session(&cap);
                let mut events = Vec::new();
                for batch in data {
                    for (e, _, d) in batch.iter() {
                        for _ in 0..(*d).max(0) {
                            events.push(e.clone());
                        }
                    }
                    session.give_container(batch);
                }
                if !events.is_empty() {
                    effects.publish(&topic, events);
                }
            });
        }
    })
}

/// Fires when an aggregate result satisfies `when`: publishes it to `topic` and emits it.
/// A correction (`-old, +new` for the same key and window) fires only if the old result did
/// not satisfy the condition, so a threshold crossed once fires once.
pub fn trigger<'s>(
    s: Updates<'s>,
    name: &str,
    by_window_start: bool,
    when: Expr,
    topic: String,
    effects: Rc<dyn Effects>,
    dead: Rc<DeadLetters>,
) -> Updates<'s> {
    let name = name.to_string();
    let group_of = move |e: &Event| -> (Value, Value) {
        let w = if by_window_start {
            e.row.get(1).cloned().unwrap_or(Value::Null)
        } else {
            Value::Null
        };
        (e.key.clone(), w)
    };
    s.unary::<Out, _, _, _>(Pipeline, "Trigger", move |_, _| {
        move |input, output| {
            input.for_each_stamp(|cap, data| {
                // Grouped by record time, not by stamp: a message of a differential output
                // carries several times, and a retraction only cancels the insertion of the
                // same group at the same time.
                let mut retracted: HashMap<(Value, Value, u64), bool> = HashMap::new();
                let mut inserted = Vec::new();
                for batch in data {
                    for (e, t, d) in batch.drain(..) {
                        let fired = match when.eval_bool(&e.row) {
                            Ok(b) => b,
                            Err(err) => {
                                dead.push(&name, &e, format!("{err} (`{}`)", when.source()));
                                continue;
                            }
                        };
                        if d < 0 {
                            let (k, w) = group_of(&e);
                            let entry = retracted.entry((k, w, t)).or_insert(false);
                            *entry |= fired;
                        } else if fired {
                            inserted.push((e, t, d));
                        }
                    }
                }
                let fire: Vec<Update> = inserted
                    .into_iter()
                    .filter(|(e, t, _)| {
                        let (k, w) = group_of(e);
                        !retracted.get(&(k, w, *t)).copied().unwrap_or(false)
                    })
                    .collect();
                if !fire.is_empty() {
                    effects.publish(&topic, fire.iter().map(|(e, _, _)| e.clone()).collect());
                    output.session(&cap).give_iterator(fire.into_iter());
                }
            });
            dead.flush();
        }
    })
}
