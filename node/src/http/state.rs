//! Reading what dataflows keep: KV views (`GET /v1/kv/...`) and time series
//! (`GET /v1/series/...`). Values are the JSON rows the dataflow wrote.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value as JsonValue};

use super::error::{ApiError, Path, Query};
use super::{blocking, store, AppState};

/// A stored value back as JSON (a value that is not JSON is returned as a string, so a
/// damaged or foreign entry is visible rather than hidden).
fn value_json(bytes: &[u8]) -> JsonValue {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| JsonValue::String(String::from_utf8_lossy(bytes).into_owned()))
}

pub(super) async fn kv_get(
    State(s): State<AppState>,
    Path((view, key)): Path<(String, String)>,
) -> Result<Json<JsonValue>, ApiError> {
    store(&s)?;
    let router = s.router.clone();
    let (v, k) = (view.clone(), key.clone());
    // Routed: in a cluster the key may have been written on another node.
    let found = blocking(move || router.kv_get(&v, &k)).await?;
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
    store(&s)?;
    let router = s.router.clone();
    let v = view.clone();
    let page =
        blocking(move || router.kv_scan(&v, &q.prefix, q.after.as_deref(), q.limit.unwrap_or(100)))
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
    store(&s)?;
    let router = s.router.clone();
    let (n, k) = (name.clone(), key.clone());
    let points = blocking(move || {
        router.series_range(
            &n,
            &k,
            q.from,
            q.to.unwrap_or(u64::MAX),
            q.limit.unwrap_or(100),
        )
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
