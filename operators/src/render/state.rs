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

use super::handoff::Handoff;
use super::sink::DeadLetters;
use super::window::{in_time_order, in_time_order_diverting, Divert};
use super::{DataflowStats, Update, Updates};
use crate::expr::Expr;
use crate::json::{row_to_json, value_from_json, value_to_json};
use crate::schema::{Field, Schema};
use crate::value::{DataType, Value};

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

/// Where a `kv_put` meets the shard hand-off, and what it needs to find a stored key's shard.
pub struct Moving {
    pub handoff: Rc<Handoff>,
    /// The type of the keys written (stored as text, see [`key_bytes`]).
    pub key_type: DataType,
    /// Whether the input is an operator whose state moves and whose new owner computes the
    /// key's later results (an unwindowed aggregate): then nothing that arrives after a
    /// release goes to the new owner. Otherwise newer values still in flight do.
    pub fed_by_moving_state: bool,
}

/// Writes the latest row per key into `view`, and passes the stream on.
///
/// The view's entries move with their shard: on a release this worker takes the entries of
/// its released keys out of the view and hands them over (records still waiting in the
/// time-order stage go too); the new owner writes what it is handed. Finding them scans the
/// view, as a release is rare next to writes.
#[allow(clippy::too_many_arguments)]
pub fn kv_put<'s>(
    s: Updates<'s>,
    name: &str,
    view: String,
    ttl_ms: Option<u64>,
    schema: Schema,
    kv: KvStore,
    stats: Arc<DataflowStats>,
    moving: Moving,
) -> Updates<'s> {
    let Moving {
        handoff,
        key_type,
        fed_by_moving_state,
    } = moving;
    let which = if fed_by_moving_state {
        Divert::Nothing
    } else {
        Divert::Insertions
    };
    let s = in_time_order_diverting(
        s,
        name,
        Some((Rc::clone(&handoff), format!("{name}~stash"))),
        which,
    );
    let node = format!("{name}~view");
    let name = name.to_string();
    let scope = s.scope();
    s.unary::<Out, _, _, _>(Pipeline, "KvPut", move |_, info| {
        handoff.register(&node, scope.activator_for(info.address.clone()));
        move |input, output| {
            let adopted: Vec<KvWrite> = handoff
                .take_adopted(&node)
                .into_iter()
                .flat_map(|part| part.kv)
                .filter(|(k, _)| handoff.owns_here(&stored_key(k, &key_type)))
                .map(|(key, value)| KvWrite::Put {
                    key,
                    value,
                    expires_at_ms: ttl_ms.map(|t| now_ms().saturating_add(t)),
                })
                .collect();
            if !adopted.is_empty() {
                if let Err(e) = kv.put_batch(&view, &adopted) {
                    stats.store_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(node = %name, view = %view, error = %e, "KV entries handed over could not be written");
                }
            }
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
            if handoff.take_due(&node) {
                if let Err(e) = hand_over_entries(&kv, &view, &handoff, &node, &key_type) {
                    stats.store_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(node = %name, view = %view, error = %e, "KV entries of released shards could not be handed over");
                }
            }
        }
    })
}

/// The key a view entry was stored under, as the value it was written from.
fn stored_key(bytes: &[u8], key_type: &DataType) -> Value {
    let text = String::from_utf8_lossy(bytes);
    if *key_type == DataType::String {
        return Value::str(&text);
    }
    serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|j| value_from_json("key", key_type, &j).ok())
        .unwrap_or_else(|| Value::str(&text))
}

/// Takes the entries of this worker's released keys out of `view`, into the hand-off.
fn hand_over_entries(
    kv: &KvStore,
    view: &str,
    handoff: &Handoff,
    node: &str,
    key_type: &DataType,
) -> Result<(), starling_storage::StorageError> {
    if !handoff.any_released() {
        return Ok(());
    }
    let now = now_ms();
    let mut after: Option<Vec<u8>> = None;
    let mut gone = Vec::new();
    loop {
        let page = kv.scan(view, b"", after.as_deref(), 1000, now)?;
        for (k, v) in page.items {
            let key = stored_key(&k, key_type);
            if !handoff.owns_here(&key) {
                continue;
            }
            if let Some(shard) = handoff.released_shard(&key) {
                handoff.part(node, shard, |m| m.kv.push((k.clone(), v)));
                gone.push(KvWrite::Delete { key: k });
            }
        }
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    if !gone.is_empty() {
        kv.put_batch(view, &gone)?;
    }
    Ok(())
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
