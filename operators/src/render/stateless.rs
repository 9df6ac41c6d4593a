//! `map`, `filter` and `key_by`: one event in, at most one out, no state.
//!
//! They keep the input's timestamps and diffs, so they work on insert-only and retracting
//! streams alike. An event whose expression fails goes to the dead-letter topic with the
//! error; the dataflow goes on.

use std::rc::Rc;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;

use super::sink::DeadLetters;
use super::{Update, Updates};
use crate::expr::Expr;

type Out = CapacityContainerBuilder<Vec<Update>>;

/// Replaces each row by the values of `exprs`.
pub fn map<'s>(s: Updates<'s>, name: &str, exprs: Vec<Expr>, dead: Rc<DeadLetters>) -> Updates<'s> {
    let name = name.to_string();
    s.unary::<Out, _, _, _>(Pipeline, &format!("Map {name}"), move |_, _| {
        move |input, output| {
            input.for_each_stamp(|cap, data| {
                let mut session = output.session(&cap);
                for batch in data {
                    for (mut e, t, d) in batch.drain(..) {
                        let mut row = Vec::with_capacity(exprs.len());
                        let mut failed = None;
                        for x in &exprs {
                            match x.eval(&e.row) {
                                Ok(v) => row.push(v),
                                Err(err) => {
                                    failed = Some(format!("{} (`{}`)", err, x.source()));
                                    break;
                                }
                            }
                        }
                        match failed {
                            None => {
                                e.row = row;
                                session.give((e, t, d));
                            }
                            Some(err) => dead.push(&name, &e, err),
                        }
                    }
                }
            });
            dead.flush();
        }
    })
}

/// Passes an input's batches on unchanged. Timely's input handle leaves records in the
/// buffers of a downstream exchange until its time moves, which under a watermark that
/// stands still (a long `max_delay`) can be a long while; an operator's output is flushed
/// each time it runs, so after this step every record a worker was given reaches its keyed
/// operator on the next step. Shard hand-offs rely on that to find every record.
pub fn pass<'s>(s: Updates<'s>, name: &str) -> Updates<'s> {
    s.unary::<Out, _, _, _>(Pipeline, &format!("Input {name}"), |_, _| {
        |input, output| {
            input.for_each_stamp(|cap, data| {
                let mut session = output.session(&cap);
                for batch in data {
                    session.give_container(batch);
                }
            });
        }
    })
}

/// Keeps the events for which `predicate` is true.
pub fn filter<'s>(
    s: Updates<'s>,
    name: &str,
    predicate: Expr,
    dead: Rc<DeadLetters>,
) -> Updates<'s> {
    let name = name.to_string();
    s.unary::<Out, _, _, _>(Pipeline, &format!("Filter {name}"), move |_, _| {
        move |input, output| {
            input.for_each_stamp(|cap, data| {
                let mut session = output.session(&cap);
                for batch in data {
                    batch.retain(|(e, _, _)| match predicate.eval_bool(&e.row) {
                        Ok(keep) => keep,
                        Err(err) => {
                            dead.push(&name, e, format!("{} (`{}`)", err, predicate.source()));
                            false
                        }
                    });
                    session.give_container(batch);
                }
            });
            dead.flush();
        }
    })
}

/// Sets each event's key to the value of `key`.
pub fn key_by<'s>(s: Updates<'s>, name: &str, key: Expr, dead: Rc<DeadLetters>) -> Updates<'s> {
    let name = name.to_string();
    s.unary::<Out, _, _, _>(Pipeline, &format!("KeyBy {name}"), move |_, _| {
        move |input, output| {
            input.for_each_stamp(|cap, data| {
                let mut session = output.session(&cap);
                for batch in data {
                    for (mut e, t, d) in batch.drain(..) {
                        match key.eval(&e.row) {
                            Ok(k) => {
                                e.key = k;
                                session.give((e, t, d));
                            }
                            Err(err) => {
                                dead.push(&name, &e, format!("{} (`{}`)", err, key.source()))
                            }
                        }
                    }
                }
            });
            dead.flush();
        }
    })
}

/// Appends the embedding of `text` (a string expression) to each row. A null text gives the
/// zero vector, like an empty one.
pub fn embed<'s>(
    s: Updates<'s>,
    name: &str,
    text: Expr,
    dim: usize,
    dead: Rc<DeadLetters>,
) -> Updates<'s> {
    use crate::embed::{Embedder, HashingEmbedder};
    use crate::value::Value;
    let name = name.to_string();
    s.unary::<Out, _, _, _>(Pipeline, &format!("Embed {name}"), move |_, _| {
        // The plan checked the dimension, so this cannot fail; a bad one embeds nothing.
        let embedder = HashingEmbedder::new(dim).ok();
        let mut buf: Vec<f32> = Vec::with_capacity(dim);
        move |input, output| {
            input.for_each_stamp(|cap, data| {
                let mut session = output.session(&cap);
                for batch in data {
                    for (mut e, t, d) in batch.drain(..) {
                        let value = match text.eval(&e.row) {
                            Ok(v) => v,
                            Err(err) => {
                                dead.push(&name, &e, format!("{err} (`{}`)", text.source()));
                                continue;
                            }
                        };
                        buf.clear();
                        match (&embedder, &value) {
                            (Some(m), Value::Str(s)) => m.embed_into(s, &mut buf),
                            _ => buf.resize(dim, 0.0),
                        }
                        buf.resize(dim, 0.0);
                        e.row.push(Value::Vector(buf.as_slice().into()));
                        session.give((e, t, d));
                    }
                }
            });
            dead.flush();
        }
    })
}
