//! Dataflow routes: submit, list, describe, drop, subscribe to an output.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value as JsonValue};
use starling_operators::definition::Definition;
use starling_operators::json::{row_to_json, value_to_json};

use super::error::{ApiError, Path, Query};
use super::stream::{subscription_response, Format};
use super::topics::{media_type, read_body, StreamQuery};
use super::{views, AppState};
use crate::EngineError;

const DEFINITION_TYPES: [&str; 5] = [
    "application/yaml",
    "application/x-yaml",
    "text/yaml",
    "application/json",
    "text/plain",
];

pub(super) async fn submit(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let kind = media_type(&headers);
    if !DEFINITION_TYPES.contains(&kind.as_str()) {
        return Err(ApiError::unsupported_media_type(&kind, &DEFINITION_TYPES));
    }
    let bytes = read_body(body, s.limits.max_body_bytes).await?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_definition",
                format!("definition is not UTF-8: {e}"),
            )
        })?
        .to_string();
    let router = s.router.clone();
    let info = tokio::task::spawn_blocking(move || -> Result<_, EngineError> {
        let def = if kind == "application/json" {
            Definition::from_json(&text)
        } else {
            Definition::parse(&text)
        }
        .map_err(|e| EngineError::Plan(e.into()))?;
        router.install(&def)
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))??;
    Ok((StatusCode::CREATED, Json(views::dataflow(&info))).into_response())
}

pub(super) async fn list(State(s): State<AppState>) -> Json<JsonValue> {
    Json(JsonValue::Array(
        s.engine.dataflows().iter().map(views::dataflow).collect(),
    ))
}

pub(super) async fn describe(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<JsonValue>, ApiError> {
    Ok(Json(views::dataflow(&s.engine.dataflow(&name)?)))
}

pub(super) async fn drop(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.router.drop_dataflow(&name)?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn subscribe(
    State(s): State<AppState>,
    Path((dataflow, output)): Path<(String, String)>,
    Query(q): Query<StreamQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let format = Format::choose(q.format(), &headers)?;
    let schema = s.engine.output_schema(&dataflow, &output)?;
    let sub = s.router.subscribe(&dataflow, &output)?;
    Ok(subscription_response(format, sub, move |(e, t, d)| {
        json!({
            "time": t,
            "diff": d,
            "key": value_to_json(&e.key),
            "event_time": e.time,
            "row": row_to_json(&schema, &e.row),
        })
    }))
}
