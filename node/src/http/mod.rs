//! The HTTP front door (axum on hyper 1.x): topics, publishing, live subscriptions,
//! dataflows, health and metrics. Every error is JSON `{code, message, details}`; the routes
//! are documented in `docs/openapi.yaml`.

mod dataflows;
pub mod error;
mod log;
mod state;
mod stream;
mod topics;
mod vectors;
mod views;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;

pub use error::ApiError;

use crate::metrics::Metrics;
use crate::Engine;

/// Request and event size limits of the HTTP front door.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest request body accepted (413 beyond).
    pub max_body_bytes: usize,
    /// Largest single event (one NDJSON line) accepted (413 beyond).
    pub max_event_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 16 << 20,
            max_event_bytes: 1 << 20,
        }
    }
}

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// This node's engine: what the node shows of itself (its topics, dataflows, store).
    pub engine: Arc<Engine>,
    /// Where the public operations go (publish, submit, subscribe, reads across the cluster).
    pub router: crate::router::Router,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
    /// The cluster side, set once the node joined its cluster (empty on a single node).
    pub cluster: Arc<std::sync::OnceLock<Arc<crate::cluster::Cluster>>>,
    /// Whether the node runs in cluster mode: `cluster` is empty both on a node alone and on
    /// a member still starting, and only the second is not ready.
    pub clustered: bool,
}

/// `GET /v1/cluster`: members, Raft leader and the shard table.
async fn cluster(State(s): State<AppState>) -> Result<axum::Json<serde_json::Value>, ApiError> {
    match s.cluster.get() {
        Some(c) => Ok(axum::Json(c.describe().await)),
        None => Err(ApiError::not_found(
            "this node runs alone (start it with --cluster-id, --gossip or --seed to form a cluster)",
        )),
    }
}

/// `POST /v1/cluster/leave`: hands this node's shards to the others; the node keeps running
/// (stop it afterwards). Answers once it owns no shard.
async fn leave(State(s): State<AppState>) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let Some(c) = s.cluster.get() else {
        return Err(ApiError::not_found("this node is not part of a cluster"));
    };
    c.leave(std::time::Duration::from_secs(60)).await?;
    Ok(axum::Json(serde_json::json!({"left": true})))
}

/// The router with every route.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/cluster", get(cluster))
        .route("/v1/cluster/leave", post(leave))
        .route("/v1/topics", get(topics::list).post(topics::create))
        .route("/v1/topics/{topic}", get(topics::describe))
        .route("/v1/topics/{topic}/watermark", post(topics::watermark))
        .route("/v1/topics/{topic}/log", get(log::read))
        .route("/v1/kv/{view}", get(state::kv_scan))
        .route("/v1/kv/{view}/{key}", get(state::kv_get))
        .route("/v1/series/{name}/{key}", get(state::series_range))
        .route("/v1/vectors", get(vectors::list).post(vectors::create))
        .route("/v1/vectors/{collection}", delete(vectors::drop_collection))
        .route("/v1/vectors/{collection}/points", post(vectors::upsert))
        .route(
            "/v1/vectors/{collection}/points/{key}",
            delete(vectors::delete_point),
        )
        .route("/v1/vectors/{collection}/search", post(vectors::search))
        .route(
            "/v1/topics/{topic}/events",
            get(topics::subscribe).post(topics::publish),
        )
        .route(
            "/v1/dataflows",
            get(dataflows::list).post(dataflows::submit),
        )
        .route(
            "/v1/dataflows/{dataflow}",
            get(dataflows::describe).delete(dataflows::drop),
        )
        .route(
            "/v1/dataflows/{dataflow}/outputs/{output}",
            get(dataflows::subscribe),
        )
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not answer this method; see docs/openapi.yaml",
            )
        })
        .fallback(|| async { ApiError::not_found("no such route; see docs/openapi.yaml") })
        .layer(middleware::from_fn_with_state(state.clone(), record))
        .with_state(state)
}

/// `GET /readyz`: 200 once the node can serve. In a cluster that also means the member has
/// found its cluster (a Raft leader, its own record, its lease, every shard's owner back);
/// until then 503 names what it waits for, since after a restart a node waits for its peers
/// for as long as it takes instead of exiting.
async fn readyz(State(s): State<AppState>) -> Response {
    if !s.engine.is_running() {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the node is shutting down",
        )
        .into_response();
    }
    if s.clustered {
        let waiting = match s.cluster.get() {
            None => Err("this node is still starting its cluster membership".to_string()),
            Some(c) => c.readiness().await,
        };
        if let Err(why) = waiting {
            return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", why)
                .into_response();
        }
    }
    (StatusCode::OK, "ready\n").into_response()
}

async fn metrics(State(s): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
        .into_response()
}

/// Records the latency of every request under its route template.
async fn record(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let started = Instant::now();
    let resp = next.run(req).await;
    s.metrics
        .requests
        .with_label_values(&[&route, &method, resp.status().as_str()])
        .observe(started.elapsed().as_secs_f64());
    resp
}

/// The node's store, or the `404` a node without one (durability `none`) answers for the
/// routes that read it (log, views, series, vectors).
fn store(s: &AppState) -> Result<Arc<crate::durable::Store>, ApiError> {
    s.engine.store().cloned().ok_or_else(|| {
        ApiError::not_found(
            "this node keeps no log, views, series or vectors (it runs with durability `none`)",
        )
    })
}

/// Runs storage work off the async threads and maps its refusal to the API's answer.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::EngineError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::from(crate::EngineError::Internal(e.to_string())))?
        .map_err(ApiError::from)
}
