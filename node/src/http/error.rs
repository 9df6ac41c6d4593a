//! API errors: JSON `{code, message, details}` with the right HTTP status.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value as Json};

use crate::EngineError;

/// An error answer. `code` is stable (clients branch on it); `message` says what to fix.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Json,
}

impl ApiError {
    /// An error with no details.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            details: Json::Null,
        }
    }

    /// Adds details.
    pub fn with_details(mut self, details: Json) -> ApiError {
        self.details = details;
        self
    }

    /// 400 for a malformed request.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 413 with the limit that was exceeded.
    pub fn too_large(message: impl Into<String>, limit: usize) -> ApiError {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message)
            .with_details(json!({ "limit_bytes": limit }))
    }

    /// 415 naming the accepted types.
    pub fn unsupported_media_type(got: &str, accepted: &[&str]) -> ApiError {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "content type `{got}` is not accepted here; use one of: {}",
                accepted.join(", ")
            ),
        )
        .with_details(json!({ "accepted": accepted }))
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> ApiError {
        let message = e.to_string();
        match e {
            EngineError::UnknownTopic(_)
            | EngineError::UnknownDataflow(_)
            | EngineError::UnknownOutput { .. } => ApiError::not_found(message),
            EngineError::TopicConflict { .. } | EngineError::DataflowExists(_) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", message)
            }
            EngineError::BadEvent { index, error } => {
                ApiError::new(StatusCode::BAD_REQUEST, "bad_event", message)
                    .with_details(json!({ "index": index, "error": error.to_string() }))
            }
            EngineError::BadEventShape { index, .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, "bad_event", message)
                    .with_details(json!({ "index": index }))
            }
            EngineError::WriteOnlyTopic(_) => {
                ApiError::new(StatusCode::CONFLICT, "write_only_topic", message)
            }
            EngineError::BatchTooLarge { limit, .. } => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message)
                    .with_details(json!({ "limit_events": limit }))
            }
            EngineError::BadRequest(_) => ApiError::bad_request(message),
            EngineError::Plan(_) | EngineError::NoStorage(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "bad_definition", message)
            }
            EngineError::Busy => ApiError::new(StatusCode::TOO_MANY_REQUESTS, "busy", message),
            EngineError::ShuttingDown => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", message)
            }
            EngineError::Unavailable(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
            }
            EngineError::StaleEpoch(_) => {
                ApiError::new(StatusCode::CONFLICT, "stale_epoch", message)
            }
            EngineError::Storage(starling_storage::StorageError::TooLarge { limit, .. }) => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message)
                    .with_details(json!({ "limit": limit }))
            }
            EngineError::Storage(starling_storage::StorageError::InvalidInput { .. }) => {
                ApiError::bad_request(message)
            }
            EngineError::Storage(starling_storage::StorageError::Vector(v)) => {
                use starling_storage::VectorError as V;
                match *v {
                    V::UnknownCollection { .. } | V::Dropped { .. } => ApiError::not_found(message),
                    V::SpecConflict { .. } => {
                        ApiError::new(StatusCode::CONFLICT, "conflict", message)
                    }
                    V::Corrupt { .. } | V::Io { .. } | V::Index { .. } => ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "storage_unavailable",
                        message,
                    ),
                    _ => ApiError::bad_request(message),
                }
            }
            EngineError::Storage(_) | EngineError::Catalog(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_unavailable",
                message,
            ),
            EngineError::Startup(_) | EngineError::Internal(_) | EngineError::Recovery(_) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "code": self.code, "message": self.message, "details": self.details });
        let mut resp = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS
            || self.status == StatusCode::SERVICE_UNAVAILABLE
        {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}

/// `axum::extract::Path` whose rejection (e.g. a path segment that is not UTF-8) is a JSON
/// `bad_request` like every other error, not axum's plain-text answer.
pub struct Path<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for Path<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| Path(v))
            .map_err(|e| ApiError::bad_request(e.body_text()))
    }
}

/// `axum::extract::Query` whose rejection (a malformed query string) is a JSON `bad_request`.
pub struct Query<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for Query<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| Query(v))
            .map_err(|e| ApiError::bad_request(e.body_text()))
    }
}
