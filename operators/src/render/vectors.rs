//! `vector_upsert` and `vector_search`: similarity memory for agents, on the node's vector
//! collections (usearch HNSW, see `starling_storage::vector`).
//!
//! Upserts see their input in time order and keyed (like KV views), netted per key and
//! time: the latest vector wins, a retraction with no new value deletes. Searches read the
//! collection as it is when the event is processed.

use std::rc::Rc;
use std::sync::Arc;

use serde_json::Value as Json;
use starling_storage::VectorStore;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;

use super::sink::DeadLetters;
use super::state::{key_bytes, Net};
use super::window::in_time_order;
use super::{Update, Updates};
use crate::event::Event;
use crate::expr::Expr;
use crate::json::{row_to_json, value_from_json};
use crate::schema::Schema;
use crate::value::{DataType, Value};

type Out = CapacityContainerBuilder<Vec<Update>>;

/// A netted upsert: the vector, the row as JSON metadata, and the event for dead letters.
#[derive(PartialEq)]
struct Point {
    vector: Arc<[f32]>,
    metadata: Vec<u8>,
    event: Event,
}

/// Keeps the latest vector per key in `collection` and passes the stream on.
#[allow(clippy::too_many_arguments)]
pub fn vector_upsert<'s>(
    s: Updates<'s>,
    name: &str,
    collection: String,
    vector: Expr,
    schema: Schema,
    store: Arc<VectorStore>,
    dead: Rc<DeadLetters>,
) -> Updates<'s> {
    let s = in_time_order(s, name);
    let name = name.to_string();
    s.unary::<Out, _, _, _>(Pipeline, "VectorUpsert", move |_, _| {
        move |input, output| {
            input.for_each_stamp(|cap, data| {
                let mut net: Net<Vec<u8>, Point> = Net::new();
                for batch in data {
                    for (e, _, d) in batch.iter() {
                        let v = match vector.eval(&e.row) {
                            Ok(Value::Vector(v)) => v,
                            Ok(Value::Null) => continue,
                            Ok(other) => {
                                dead.push(
                                    &name,
                                    e,
                                    format!("`{}` gave {other}, not a vector", vector.source()),
                                );
                                continue;
                            }
                            Err(err) => {
                                dead.push(&name, e, format!("{err} (`{}`)", vector.source()));
                                continue;
                            }
                        };
                        let point = Point {
                            vector: v,
                            metadata: row_to_json(&schema, &e.row).to_string().into_bytes(),
                            event: e.clone(),
                        };
                        net.apply(key_bytes(&e.key), point, *d);
                    }
                    output.session(&cap).give_container(batch);
                }
                let c = match store.get(&collection) {
                    Ok(c) => c,
                    Err(err) => {
                        for (_, p) in net.drain() {
                            if let Some(p) = p {
                                dead.push(&name, &p.event, err.to_string());
                            }
                        }
                        dead.flush();
                        return;
                    }
                };
                for (key, p) in net.drain() {
                    let key = String::from_utf8_lossy(&key).into_owned();
                    let result = match &p {
                        Some(p) => c.upsert(&key, &p.vector, &p.metadata),
                        None => c.delete(&key).map(|_| ()),
                    };
                    if let (Err(err), Some(p)) = (result, p) {
                        dead.push(&name, &p.event, format!("collection `{collection}`: {err}"));
                    }
                }
            });
            dead.flush();
        }
    })
}

/// The `k` nearest entries of `collection` per event, one output row per match.
#[allow(clippy::too_many_arguments)]
pub fn vector_search<'s>(
    s: Updates<'s>,
    name: &str,
    collection: String,
    vector: Expr,
    k: usize,
    filter: Vec<(String, Json)>,
    store: Arc<VectorStore>,
    dead: Rc<DeadLetters>,
) -> Updates<'s> {
    let name = name.to_string();
    s.unary::<Out, _, _, _>(Pipeline, "VectorSearch", move |_, _| {
        move |input, output| {
            input.for_each_stamp(|cap, data| {
                let mut out = Vec::new();
                let c = store.get(&collection);
                for batch in data {
                    for (e, t, d) in batch.drain(..) {
                        if d <= 0 {
                            // A search answers an event; a retraction asks nothing.
                            continue;
                        }
                        let c = match &c {
                            Ok(c) => c,
                            Err(err) => {
                                dead.push(&name, &e, err.to_string());
                                continue;
                            }
                        };
                        let q = match vector.eval(&e.row) {
                            Ok(Value::Vector(v)) => v,
                            Ok(other) => {
                                dead.push(
                                    &name,
                                    &e,
                                    format!("`{}` gave {other}, not a vector", vector.source()),
                                );
                                continue;
                            }
                            Err(err) => {
                                dead.push(&name, &e, format!("{err} (`{}`)", vector.source()));
                                continue;
                            }
                        };
                        let keep = |_: &str, meta: &[u8]| metadata_matches(&filter, meta);
                        let hits = if filter.is_empty() {
                            c.search(&q, k, None)
                        } else {
                            c.search(&q, k, Some(&keep))
                        };
                        let hits = match hits {
                            Ok(h) => h,
                            Err(err) => {
                                dead.push(&name, &e, format!("collection `{collection}`: {err}"));
                                continue;
                            }
                        };
                        for (rank, hit) in hits.into_iter().enumerate() {
                            let mut row = e.row.clone();
                            row.push(Value::str(&hit.key));
                            row.push(Value::Float(f64::from(hit.distance)));
                            row.push(Value::Int(rank as i64 + 1));
                            let stored = serde_json::from_slice::<Json>(&hit.metadata)
                                .ok()
                                .and_then(|j| value_from_json("match", &DataType::Any, &j).ok())
                                .unwrap_or(Value::Null);
                            row.push(stored);
                            out.push((
                                Event {
                                    key: e.key.clone(),
                                    time: e.time,
                                    row,
                                },
                                t,
                                1,
                            ));
                        }
                    }
                }
                if !out.is_empty() {
                    output.session(&cap).give_container(&mut out);
                }
            });
            dead.flush();
        }
    })
}

/// Whether a stored row (JSON metadata) has every `(field, value)` of the filter; the one
/// filter rule of `vector_search` and of the search front doors.
pub fn metadata_matches(filter: &[(String, Json)], metadata: &[u8]) -> bool {
    match serde_json::from_slice::<Json>(metadata) {
        Ok(doc) => filter.iter().all(|(f, v)| doc.get(f) == Some(v)),
        Err(_) => false,
    }
}
