//! Topic routes: create, list, describe, publish, subscribe.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value as JsonValue};
use starling_operators::definition::TopicDef;
use starling_operators::json::row_to_json;

use super::error::{ApiError, Path, Query};
use super::stream::{subscription_response, Format};
use super::{views, AppState};
use crate::EngineError;

pub(super) async fn list(State(s): State<AppState>) -> Json<JsonValue> {
    Json(JsonValue::Array(
        s.engine.topics().iter().map(views::topic).collect(),
    ))
}

pub(super) async fn describe(
    State(s): State<AppState>,
    Path(topic): Path<String>,
) -> Result<Json<JsonValue>, ApiError> {
    Ok(Json(views::topic(&s.engine.topic(&topic)?)))
}

pub(super) async fn create(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_body(body, s.limits.max_body_bytes).await?;
    require_type(&headers, &["application/json"])?;
    // The error names the field at fault (`min_insync: invalid type ...`).
    let def: TopicDef =
        serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(&bytes))
            .map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_topic",
                    format!("invalid topic declaration: {e}"),
                )
            })?;
    let existed = s.engine.topic(&def.name).is_ok();
    s.router.create_topic(&def).map_err(|e| match e {
        EngineError::Plan(p) => ApiError::new(StatusCode::BAD_REQUEST, "bad_topic", p.to_string()),
        other => other.into(),
    })?;
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(views::topic(&s.engine.topic(&def.name)?))).into_response())
}

/// How much of an over-limit body is read and discarded (at most, and for at most
/// [`DRAIN_TIME`]) before answering 413, so that a client still sending gets the answer
/// instead of a connection reset.
const DRAIN_BYTES: usize = 64 << 20;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// Reads a body up to `limit` bytes; beyond that answers 413, keeping none of the rest.
pub(super) async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    use futures_util::StreamExt;
    let mut stream = body.into_data_stream();
    let mut buf: Vec<u8> = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|e| ApiError::bad_request(format!("could not read the request body: {e}")))?;
        if buf.len() + chunk.len() > limit {
            drop(buf);
            let mut drained = 0usize;
            let _ = tokio::time::timeout(DRAIN_TIME, async {
                while let Some(Ok(c)) = stream.next().await {
                    drained += c.len();
                    if drained > DRAIN_BYTES {
                        break;
                    }
                }
            })
            .await;
            return Err(ApiError::too_large(
                format!("request body is over the limit of {limit} bytes"),
                limit,
            ));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}

/// The media type without parameters, lower-cased.
pub(super) fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default()
}

fn require_type(headers: &HeaderMap, accepted: &[&str]) -> Result<(), ApiError> {
    let t = media_type(headers);
    if accepted.contains(&t.as_str()) {
        Ok(())
    } else {
        Err(ApiError::unsupported_media_type(&t, accepted))
    }
}

const EVENT_TYPES: [&str; 3] = [
    "application/x-ndjson",
    "application/jsonl",
    "application/json",
];

/// Parses a publish body: NDJSON (one object per line) or a JSON array. Errors name the
/// position of the first bad event; nothing of the batch is applied.
fn parse_events(kind: &str, bytes: &[u8], max_event: usize) -> Result<Vec<JsonValue>, ApiError> {
    let bad = |index: usize, msg: String| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_event",
            format!("event {index}: {msg}"),
        )
        .with_details(json!({ "index": index }))
    };
    if kind == "application/json" {
        if bytes.len() > max_event && !bytes.trim_ascii_start().starts_with(b"[") {
            return Err(ApiError::too_large(
                format!("a single event is over {max_event} bytes"),
                max_event,
            ));
        }
        return match serde_json::from_slice::<JsonValue>(bytes) {
            Ok(JsonValue::Array(items)) => Ok(items),
            Ok(JsonValue::Object(o)) => Ok(vec![JsonValue::Object(o)]),
            Ok(other) => Err(bad(
                0,
                format!("expected an object or an array of objects, found {other}"),
            )),
            Err(e) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_json",
                format!("invalid JSON: {e}"),
            )
            .with_details(json!({ "line": e.line(), "column": e.column() }))),
        };
    }
    let mut out = Vec::new();
    for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
        let line = line.trim_ascii();
        if line.is_empty() {
            continue;
        }
        let index = out.len();
        if line.len() > max_event {
            return Err(ApiError::too_large(
                format!(
                    "event {index} (line {}) is {} bytes, over the limit of {max_event}",
                    i + 1,
                    line.len()
                ),
                max_event,
            )
            .with_details(json!({ "index": index, "line": i + 1, "limit_bytes": max_event })));
        }
        match serde_json::from_slice::<JsonValue>(line) {
            Ok(v) => out.push(v),
            Err(e) => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_json",
                    format!("event {index} (line {}): invalid JSON: {e}", i + 1),
                )
                .with_details(json!({ "index": index, "line": i + 1, "column": e.column() })))
            }
        }
    }
    Ok(out)
}

/// The rows of an NDJSON body when every line is a clean event of the topic, decoded
/// straight from the text (`json_fast`); `None` otherwise, and then [`parse_events`] and the
/// engine's decoder find the first bad event and say what is wrong with it.
fn clean_ndjson_rows(
    engine: &crate::Engine,
    topic: &str,
    kind: &str,
    bytes: &[u8],
    max_event: usize,
) -> Option<Vec<starling_operators::Row>> {
    if kind == "application/json" {
        return None;
    }
    let spec = engine.topic_spec(topic).ok()?;
    let mut rows = Vec::new();
    for line in bytes.split(|b| *b == b'\n') {
        let line = line.trim_ascii();
        if line.is_empty() {
            continue;
        }
        if line.len() > max_event {
            return None;
        }
        let text = std::str::from_utf8(line).ok()?;
        rows.push(starling_operators::json_fast::try_row_from_json_str(
            &spec.schema,
            text,
        )?);
    }
    Some(rows)
}

pub(super) async fn publish(
    State(s): State<AppState>,
    Path(topic): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<JsonValue>, ApiError> {
    let reject = |reason: &str| s.metrics.rejected.with_label_values(&[reason]).inc();
    let kind = media_type(&headers);
    if !EVENT_TYPES.contains(&kind.as_str()) {
        reject("unsupported_media_type");
        return Err(ApiError::unsupported_media_type(&kind, &EVENT_TYPES));
    }
    let bytes = read_body(body, s.limits.max_body_bytes)
        .await
        .inspect_err(|_| reject("too_large"))?;
    let router = s.router.clone();
    let max_event = s.limits.max_event_bytes;
    // Parsing and validation are CPU work: keep them off the async threads.
    let result = tokio::task::spawn_blocking(move || -> Result<usize, ApiError> {
        let engine = router.engine();
        let rows = match clean_ndjson_rows(engine, &topic, &kind, &bytes, max_event) {
            Some(rows) => rows,
            None => {
                let docs = parse_events(&kind, &bytes, max_event)?;
                engine.decode_json(&topic, &docs)?
            }
        };
        Ok(router.publish(&topic, rows, false)?)
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    match result {
        Ok(n) => Ok(Json(json!({ "accepted": n }))),
        Err(e) => {
            reject(e.code);
            Err(e)
        }
    }
}

/// `?format=ndjson|sse` on subscription routes.
#[derive(Deserialize)]
pub(super) struct StreamQuery {
    format: Option<String>,
}

impl StreamQuery {
    pub(super) fn format(&self) -> Option<&str> {
        self.format.as_deref()
    }
}

pub(super) async fn subscribe(
    State(s): State<AppState>,
    Path(topic): Path<String>,
    Query(q): Query<StreamQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let format = Format::choose(q.format(), &headers)?;
    let info = s.engine.topic(&topic)?;
    let sub = s.router.subscribe_topic(&topic)?;
    let schema = info.spec.schema.clone();
    Ok(subscription_response(format, sub, move |e| {
        json!({
            "key": starling_operators::json::value_to_json(&e.key),
            "time": e.time,
            "event": row_to_json(&schema, &e.row),
        })
    }))
}

/// Body of `POST /v1/topics/{topic}/watermark`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WatermarkBody {
    time: u64,
}

/// Raises the watermark of every input reading the topic to `time`: an end-of-input mark up
/// to that time, which closes the windows that end before it.
/// `?local=true` on the watermark route: this node only (what a node asks its peers).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WatermarkQuery {
    #[serde(default)]
    local: bool,
}

pub(super) async fn watermark(
    State(s): State<AppState>,
    Path(topic): Path<String>,
    Query(q): Query<WatermarkQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<JsonValue>, ApiError> {
    require_type(&headers, &["application/json"])?;
    let bytes = read_body(body, 4096).await?;
    let w: WatermarkBody = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("expected {{\"time\": <ms>}}: {e}")))?;
    let router = s.router.clone();
    let t = topic.clone();
    tokio::task::spawn_blocking(move || {
        if q.local {
            router.engine().advance_watermark_local(&t, w.time)
        } else {
            router.advance_watermark(&t, w.time)
        }
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))??;
    Ok(Json(json!({ "topic": topic, "watermark": w.time })))
}
