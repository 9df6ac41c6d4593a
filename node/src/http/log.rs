//! Reading a topic's event log by offset: what Kafka's fetch by offset gives an operator or a
//! consumer that must check what was acknowledged (the crash tests do exactly that).

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value as JsonValue};
use starling_operators::json::{row_to_json, value_to_json};

use super::error::{ApiError, Path, Query};
use super::{blocking, store, AppState};
use crate::durable::record::{self, Entry};
use crate::EngineError;

/// Most entries one read returns.
const MAX_LIMIT: usize = 10_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LogQuery {
    shard: Option<u32>,
    #[serde(default)]
    from: u64,
    limit: Option<usize>,
}

/// Without `shard`: every shard with its first and next offset. With `shard`: up to `limit`
/// entries from offset `from`, each with its sequence number and events.
pub(super) async fn read(
    State(s): State<AppState>,
    Path(topic): Path<String>,
    Query(q): Query<LogQuery>,
) -> Result<Json<JsonValue>, ApiError> {
    let spec = s.engine.topic_spec(&topic)?;
    let store = store(&s)?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and {MAX_LIMIT}, found {limit}"
        )));
    }
    if let Some(shard) = q.shard {
        // A cluster node's own watermark marks live in a shard of their own (see
        // `runtime::WATERMARK_SHARD`); it is listed and readable like the others.
        if shard >= store.shards() && shard != crate::runtime::WATERMARK_SHARD {
            return Err(ApiError::bad_request(format!(
                "shard {shard} does not exist; shards are 0 to {}",
                store.shards() - 1
            )));
        }
    }
    let from = q.from;
    // In a cluster each shard's log is whole only on its owner (and its replicas): every
    // answer says what this node's copy is and where the owner answers.
    let cluster = s.cluster.get().cloned();
    let holder = move |shard: u32| -> JsonValue {
        match &cluster {
            Some(_) if shard == crate::runtime::WATERMARK_SHARD => json!({ "role": "marks" }),
            Some(c) => c.log_holder(shard).unwrap_or(JsonValue::Null),
            None => json!({ "role": "owner" }),
        }
    };
    blocking(move || {
        let log = store.log();
        let Some(shard) = q.shard else {
            let mut shards = Vec::new();
            for shard in log.shards(&topic).map_err(EngineError::from)? {
                shards.push(json!({
                    "shard": shard,
                    "first_offset": log.first_offset(&topic, shard).map_err(EngineError::from)?,
                    "next_offset": log.next_offset(&topic, shard).map_err(EngineError::from)?,
                    "holder": holder(shard),
                }));
            }
            return Ok(Json(json!({ "topic": topic, "shards": shards })));
        };
        let entries = log
            .read(&topic, shard, from, limit)
            .map_err(EngineError::from)?;
        let mut out = Vec::with_capacity(entries.len());
        for (offset, bytes) in entries {
            let (seq, entry) = record::decode(&bytes)
                .map_err(|e| EngineError::Internal(format!("log entry {offset}: {e}")))?;
            out.push(match entry {
                Entry::Events(events) => json!({
                    "offset": offset,
                    "seq": seq,
                    "events": events
                        .iter()
                        .map(|e| json!({
                            "key": value_to_json(&e.key),
                            "time": e.time,
                            "row": row_to_json(&spec.schema, &e.row),
                        }))
                        .collect::<Vec<_>>(),
                }),
                Entry::Watermark(time) => {
                    json!({ "offset": offset, "seq": seq, "watermark": time })
                }
            });
        }
        Ok(Json(json!({
            "topic": topic,
            "shard": shard,
            "first_offset": log.first_offset(&topic, shard).map_err(EngineError::from)?,
            "next_offset": log.next_offset(&topic, shard).map_err(EngineError::from)?,
            "holder": holder(shard),
            "entries": out,
        })))
    })
    .await
}
