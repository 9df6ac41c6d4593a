//! Vector collections over HTTP, the way Qdrant users expect: create, list, drop, upsert
//! points, delete a point, and search by vector or by text (embedded with the built-in
//! embedder at the collection's dimension).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value as JsonValue};
use starling_storage::{CollectionSpec, Metric, VectorStore};

use super::error::{ApiError, Path};
use super::topics::read_body;
use super::{blocking, store, AppState};
use crate::durable::queries::VectorQuery;

fn vectors(s: &AppState) -> Result<std::sync::Arc<VectorStore>, ApiError> {
    store(s)?
        .vectors()
        .cloned()
        .ok_or_else(|| ApiError::not_found("this node keeps no vector collections"))
}

async fn json_body<T: serde::de::DeserializeOwned>(
    s: &AppState,
    body: axum::body::Body,
) -> Result<T, ApiError> {
    let bytes = read_body(body, s.limits.max_body_bytes).await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid request: {e}")))
}

fn describe(name: &str, spec: CollectionSpec, len: usize) -> JsonValue {
    json!({ "name": name, "dim": spec.dim, "metric": spec.metric.to_string(), "points": len })
}

pub(super) async fn list(State(s): State<AppState>) -> Result<Json<JsonValue>, ApiError> {
    let store = vectors(&s)?;
    Ok(Json(JsonValue::Array(
        store
            .list()
            .into_iter()
            .map(|(n, spec, len)| describe(&n, spec, len))
            .collect(),
    )))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    name: String,
    dim: usize,
    #[serde(default)]
    metric: Option<String>,
}

pub(super) async fn create(
    State(s): State<AppState>,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let store = vectors(&s)?;
    let req: CreateRequest = json_body(&s, body).await?;
    let metric: Metric = match &req.metric {
        None => Metric::Cosine,
        Some(m) => m
            .parse()
            .map_err(|e: starling_storage::VectorError| ApiError::bad_request(e.to_string()))?,
    };
    let spec = CollectionSpec {
        dim: req.dim,
        metric,
    };
    let existed = store.get(&req.name).is_ok();
    let name = req.name.clone();
    let st = store.clone();
    let c = blocking(move || Ok(st.create(&name, spec)?)).await?;
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(describe(&req.name, c.spec(), c.len()))).into_response())
}

pub(super) async fn drop_collection(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let store = vectors(&s)?;
    let n = name.clone();
    if blocking(move || Ok(store.drop_collection(&n)?)).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!(
            "collection `{name}` does not exist"
        )))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PointIn {
    key: String,
    vector: Vec<f32>,
    #[serde(default)]
    metadata: Map<String, JsonValue>,
}

pub(super) async fn upsert(
    State(s): State<AppState>,
    Path(name): Path<String>,
    body: axum::body::Body,
) -> Result<Json<JsonValue>, ApiError> {
    let store = vectors(&s)?;
    let points: Vec<PointIn> = json_body(&s, body).await?;
    let n = points.len();
    blocking(move || {
        let c = store.get(&name)?;
        let metadata: Vec<Vec<u8>> = points
            .iter()
            .map(|p| {
                JsonValue::Object(p.metadata.clone())
                    .to_string()
                    .into_bytes()
            })
            .collect();
        let items: Vec<(&str, &[f32], &[u8])> = points
            .iter()
            .zip(&metadata)
            .map(|(p, m)| (p.key.as_str(), p.vector.as_slice(), m.as_slice()))
            .collect();
        c.upsert_batch(&items)?;
        Ok(())
    })
    .await?;
    Ok(Json(json!({ "upserted": n })))
}

pub(super) async fn delete_point(
    State(s): State<AppState>,
    Path((name, key)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let store = vectors(&s)?;
    let k = key.clone();
    if blocking(move || Ok(store.get(&name)?.delete(&k)?)).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("no point with key `{key}`")))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchRequest {
    #[serde(default)]
    vector: Option<Vec<f32>>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    k: Option<usize>,
    #[serde(default)]
    filter: Map<String, JsonValue>,
}

pub(super) async fn search(
    State(s): State<AppState>,
    Path(name): Path<String>,
    body: axum::body::Body,
) -> Result<Json<JsonValue>, ApiError> {
    vectors(&s)?;
    let req: SearchRequest = json_body(&s, body).await?;
    let query = match (req.vector, req.text) {
        (Some(v), None) => VectorQuery::Vector(v),
        (None, Some(t)) => VectorQuery::Text(t),
        _ => {
            return Err(ApiError::bad_request(
                "give exactly one of `vector` and `text`",
            ))
        }
    };
    let k = req.k.unwrap_or(10);
    let filter = req.filter;
    let router = s.router.clone();
    // Routed: in a cluster the collection's points are spread over the nodes.
    let hits = blocking(move || router.vector_search(&name, query, k, &filter)).await?;
    let hits: Vec<JsonValue> = hits
        .into_iter()
        .map(|h| {
            json!({
                "key": h.key,
                "distance": h.distance,
                "metadata": serde_json::from_slice::<JsonValue>(&h.metadata).unwrap_or(JsonValue::Null),
            })
        })
        .collect();
    Ok(Json(json!({ "hits": hits })))
}
