//! Operators that keep results where agents read them back: KV views (`kv_put`,
//! `kv_lookup`) and time series (`series`), on the node's stores.
//!
//! Writers see their input in time order and keyed by the view's key (the same exchange and
//! release as windows), so "latest per key" is the latest in event-time order on one worker,
//! whatever the schedule. Within one time, a key's insertions and retractions are netted: an
//! aggregate's `-old, +new` becomes one put of `new`; a retraction with no new value deletes.
//! A replay of the log writes the same values again (puts are idempotent).

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use starling_storage::{KvStore, KvWrite, SeriesStore, SeriesWrite};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;

use super::sink::DeadLetters;
use super::window::in_time_order;
use super::{DataflowStats, Update, Updates};
use crate::expr::Expr;
use crate::json::{row_to_json, value_from_json, value_to_json};
use crate::schema::{Field, Schema};
use crate::value::Value;

type Out = CapacityContainerBuilder<Vec<Update>>;

/// The node's state stores a dataflow may use. Absent stores make plans that need them
/// refused at install (see [`crate::plan::Plan::uses_stores`]).
#[derive(Clone, Default)]
pub struct Stores {
    pub kv: Option<KvStore>,
    pub series: Option<SeriesStore>,
    pub vectors: Option<Arc<starling_storage::VectorStore>>,
}

/// The bytes a key is stored under: a string as its UTF-8, anything else as its JSON text
/// (so `GET /v1/kv/{view}/42` finds the int key 42 and `.../alice` the string "alice").
pub fn key_bytes(v: &Value) -> Vec<u8> {
    match v {
        Value::Str(s) => s.as_bytes().to_vec(),
        other => value_to_json(other).to_string().into_bytes(),
    }
}

/// Wall-clock milliseconds since the Unix epoch: what TTLs and expiry are measured in.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Nets one time's updates per group: the last inserted value wins; a group with only
/// retractions (or whose insertion was retracted again) is removed.
pub(super) struct Net<K, V = Vec<u8>> {
    order: Vec<K>,
    state: HashMap<K, Option<V>>,
}

impl<K: std::hash::Hash + Eq + Clone, V: PartialEq> Net<K, V> {
    pub(super) fn new() -> Self {
        Net {
            order: Vec::new(),
            state: HashMap::new(),
        }
    }

    pub(super) fn apply(&mut self, key: K, value: V, diff: isize) {
        match self.state.get_mut(&key) {
            None => {
                self.order.push(key.clone());
                self.state.insert(key, (diff > 0).then_some(value));
            }
            Some(slot) => {
                if diff > 0 {
                    *slot = Some(value);
                } else if slot.as_ref() == Some(&value) {
                    *slot = None;
                }
            }
        }
    }

    pub(super) fn drain(&mut self) -> impl Iterator<Item = (K, Option<V>)> + '_ {
        let state = &mut self.state;
        self.order
            .drain(..)
            .filter_map(move |k| state.remove(&k).map(|v| (k, v)))
    }
}

/// Writes the latest row per key into `view`, and passes the stream on.
pub fn kv_put<'s>(
    s: Updates<'s>,
    name: &str,
    view: String,
    ttl_ms: Option<u64>,
    schema: Schema,
    kv: KvStore,
    stats: Arc<DataflowStats>,
) -> Updates<'s> {
    let s = in_time_order(s, name);
    let name = name.to_string();
    s.unary::<Out, _, _, _>(Pipeline, "KvPut", move |_, _| {
        move |input, output| {
            input.for_each_stamp(|cap, data| {
                let mut net = Net::new();
                for batch in data {
                    for (e, _, d) in batch.iter() {
                        let value = row_to_json(&schema, &e.row).to_string().into_bytes();
                        net.apply(key_bytes(&e.key), value, *d);
                    }
                    output.session(&cap).give_container(batch);
                }
                let expires_at_ms = ttl_ms.map(|t| now_ms().saturating_add(t));
                let writes: Vec<KvWrite> = net
                    .drain()
                    .map(|(key, v)| match v {
                        Some(value) => KvWrite::Put {
                            key,
                            value,
                            expires_at_ms,
                        },
                        None => KvWrite::Delete { key },
                    })
                    .collect();
                if !writes.is_empty() {
                    if let Err(e) = kv.put_batch(&view, &writes) {
                        stats.store_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(node = %name, view = %view, error = %e, "KV view write failed");
                    }
                }
            });
        }
    })
}

/// Adds the fields of the `view` entry under each event's key (or `key`).
#[allow(clippy::too_many_arguments)]
pub fn kv_lookup<'s>(
    s: Updates<'s>,
    name: &str,
    view: String,
    key: Option<Expr>,
    fields: Vec<Field>,
    kv: KvStore,
    dead: Rc<DeadLetters>,
) -> Updates<'s> {
    let name = name.to_string();
    s.unary::<Out, _, _, _>(Pipeline, "KvLookup", move |_, _| {
        move |input, output| {
            input.for_each_stamp(|cap, data| {
                let now = now_ms();
                let mut out = Vec::new();
                for batch in data {
                    for (mut e, t, d) in batch.drain(..) {
                        let k = match &key {
                            None => e.key.clone(),
                            Some(x) => match x.eval(&e.row) {
                                Ok(v) => v,
                                Err(err) => {
                                    dead.push(&name, &e, format!("{err} (`{}`)", x.source()));
                                    continue;
                                }
                            },
                        };
                        let found = match kv.get(&view, &key_bytes(&k), now) {
                            Ok(v) => v,
                            Err(err) => {
                                dead.push(&name, &e, format!("reading view `{view}`: {err}"));
                                continue;
                            }
                        };
                        let doc = found
                            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
                        for f in &fields {
                            let v = doc
                                .as_ref()
                                .and_then(|d| d.get(&f.name))
                                .filter(|j| !j.is_null())
                                .and_then(|j| value_from_json(&f.name, &f.data_type, j).ok())
                                .unwrap_or_else(|| f.default.clone());
                            e.row.push(v);
                        }
                        out.push((e, t, d));
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

/// Stores a windowed aggregate's results per key and window start (row field 1).
pub fn series<'s>(
    s: Updates<'s>,
    name: &str,
    series: String,
    schema: Schema,
    store: SeriesStore,
    stats: Arc<DataflowStats>,
) -> Updates<'s> {
    let s = in_time_order(s, name);
    let name = name.to_string();
    s.unary::<Out, _, _, _>(Pipeline, "Series", move |_, _| {
        move |input, output| {
            input.for_each_stamp(|cap, data| {
                let mut net = Net::new();
                for batch in data {
                    for (e, _, d) in batch.iter() {
                        let start = match e.row.get(1) {
                            Some(Value::Timestamp(t)) | Some(Value::Int(t)) => (*t).max(0) as u64,
                            _ => continue,
                        };
                        let value = row_to_json(&schema, &e.row).to_string().into_bytes();
                        net.apply((key_bytes(&e.key), start), value, *d);
                    }
                    output.session(&cap).give_container(batch);
                }
                let writes: Vec<SeriesWrite> = net
                    .drain()
                    .map(|((key, time_ms), v)| match v {
                        Some(value) => SeriesWrite::Put {
                            key,
                            time_ms,
                            value,
                        },
                        None => SeriesWrite::Delete { key, time_ms },
                    })
                    .collect();
                if !writes.is_empty() {
                    if let Err(e) = store.write_batch(&series, &writes) {
                        stats.store_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(node = %name, series = %series, error = %e, "series write failed");
                    }
                }
            });
        }
    })
}
