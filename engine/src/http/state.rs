//! Reading what dataflows keep: KV views (`GET /v1/kv/...`) and time series
//! (`GET /v1/series/...`). Values are the JSON rows the dataflow wrote.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value as JsonValue};

use super::error::{ApiError, Path, Query};
use super::AppState;
use crate::durable::Store;
use crate::EngineError;

/// Most entries or points one request returns.
const MAX_LIMIT: usize = 10_000;

fn store(s: &AppState) -> Result<std::sync::Arc<Store>, ApiError> {
    s.engine.store().cloned().ok_or_else(|| {
        ApiError::not_found("this node keeps no views or series (it runs with durability `none`)")
    })
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn limit(asked: Option<usize>) -> Result<usize, ApiError> {
    let limit = asked.unwrap_or(100);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and {MAX_LIMIT}, found {limit}"
        )));
    }
    Ok(limit)
}

/// A stored value back as JSON (a value that is not JSON is returned as a string, so a
/// damaged or foreign entry is visible rather than hidden).
fn value_json(bytes: &[u8]) -> JsonValue {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| JsonValue::String(String::from_utf8_lossy(bytes).into_owned()))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, EngineError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::from(EngineError::Internal(e.to_string())))?
        .map_err(ApiError::from)
}

pub(super) async fn kv_get(
    State(s): State<AppState>,
    Path((view, key)): Path<(String, String)>,
) -> Result<Json<JsonValue>, ApiError> {
    let store = store(&s)?;
    let (v, k) = (view.clone(), key.clone());
    let found = blocking(move || {
        let kv = store
            .kv()
            .ok_or_else(|| EngineError::Internal("no KV store".into()))?;
        Ok(kv.get(&v, k.as_bytes(), now_ms())?)
    })
    .await?;
    match found {
        Some(bytes) => Ok(Json(
            json!({ "view": view, "key": key, "value": value_json(&bytes) }),
        )),
        None => Err(ApiError::not_found(format!(
            "view `{view}` has no live entry under key `{key}`"
        ))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ScanQuery {
    #[serde(default)]
    prefix: String,
    after: Option<String>,
    limit: Option<usize>,
}

pub(super) async fn kv_scan(
    State(s): State<AppState>,
    Path(view): Path<String>,
    Query(q): Query<ScanQuery>,
) -> Result<Json<JsonValue>, ApiError> {
    let store = store(&s)?;
    let limit = limit(q.limit)?;
    let v = view.clone();
    let page = blocking(move || {
        let kv = store
            .kv()
            .ok_or_else(|| EngineError::Internal("no KV store".into()))?;
        Ok(kv.scan(
            &v,
            q.prefix.as_bytes(),
            q.after.as_deref().map(str::as_bytes),
            limit,
            now_ms(),
        )?)
    })
    .await?;
    let items: Vec<JsonValue> = page
        .items
        .iter()
        .map(|(k, v)| json!({ "key": String::from_utf8_lossy(k), "value": value_json(v) }))
        .collect();
    Ok(Json(json!({
        "view": view,
        "items": items,
        "next": page.next.map(|n| String::from_utf8_lossy(&n).into_owned()),
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RangeQuery {
    #[serde(default)]
    from: u64,
    to: Option<u64>,
    limit: Option<usize>,
}

pub(super) async fn series_range(
    State(s): State<AppState>,
    Path((name, key)): Path<(String, String)>,
    Query(q): Query<RangeQuery>,
) -> Result<Json<JsonValue>, ApiError> {
    let store = store(&s)?;
    let limit = limit(q.limit)?;
    let to = q.to.unwrap_or(u64::MAX);
    if to < q.from {
        return Err(ApiError::bad_request(format!(
            "`to` ({to}) is before `from` ({})",
            q.from
        )));
    }
    let (n, k, from) = (name.clone(), key.clone(), q.from);
    let points = blocking(move || {
        let series = store
            .series()
            .ok_or_else(|| EngineError::Internal("no series store".into()))?;
        Ok(series.range(&n, k.as_bytes(), from, to, limit)?)
    })
    .await?;
    let points: Vec<JsonValue> = points
        .iter()
        .map(|(t, v)| json!({ "time": t, "value": value_json(v) }))
        .collect();
    Ok(Json(
        json!({ "series": name, "key": key, "points": points }),
    ))
}
