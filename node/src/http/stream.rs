//! Live result streams over HTTP: NDJSON (chunked) or Server-Sent Events.
//!
//! A blocking task reads the engine subscription and writes lines into a small bounded
//! channel that the response body drains. When the client reads slowly the channel fills,
//! the task waits, the engine's bounded queue for this subscriber fills, and the engine cuts
//! the subscriber off; the stream then ends with an error line giving the reason. A client
//! that disconnects closes the channel and the task ends. Neither stalls publishing.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value as JsonValue};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

use super::error::ApiError;
use crate::runtime::{Subscription, SubscriptionClosed};

/// The wire format of a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Ndjson,
    Sse,
}

impl Format {
    /// `?format=` wins; otherwise `Accept: text/event-stream` means SSE; NDJSON by default.
    pub fn choose(query: Option<&str>, headers: &HeaderMap) -> Result<Format, ApiError> {
        match query {
            Some("ndjson") => return Ok(Format::Ndjson),
            Some("sse") => return Ok(Format::Sse),
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "unknown format `{other}`: use ndjson or sse"
                )))
            }
            None => {}
        }
        let accept = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        Ok(if accept.contains("text/event-stream") {
            Format::Sse
        } else {
            Format::Ndjson
        })
    }
}

/// How long a write may wait for a client that does not read before the stream is ended.
/// Without it a client that never reads would hold its blocking thread (and its engine
/// subscription, already cut off) for as long as it keeps the connection open.
const STALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The writing end used by the blocking reader.
pub struct LineSender {
    tx: mpsc::Sender<Bytes>,
    format: Format,
    last: Instant,
    handle: tokio::runtime::Handle,
}

impl LineSender {
    /// Sends one JSON value as a line (or an SSE event); false once the client is gone.
    pub fn send_json(&mut self, v: &JsonValue) -> bool {
        let text = v.to_string();
        let framed = match self.format {
            Format::Ndjson => format!("{text}\n"),
            Format::Sse => format!("data: {text}\n\n"),
        };
        self.last = Instant::now();
        self.send(Bytes::from(framed))
    }

    /// Sends one chunk; false once the client is gone or has not read for STALL_TIMEOUT.
    fn send(&mut self, chunk: Bytes) -> bool {
        match self.tx.try_send(chunk) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Closed(_)) => false,
            Err(mpsc::error::TrySendError::Full(chunk)) => self
                .handle
                .block_on(self.tx.send_timeout(chunk, STALL_TIMEOUT))
                .is_ok(),
        }
    }

    /// Keeps an idle SSE connection alive; false once the client is gone.
    /// Idle streams get a heartbeat every 15 s (an SSE comment, or an empty NDJSON line that
    /// readers skip), so a client that went away is noticed and its subscription released.
    pub fn keep_alive(&mut self) -> bool {
        if self.tx.is_closed() {
            return false;
        }
        if self.last.elapsed() > Duration::from_secs(15) {
            self.last = Instant::now();
            let beat: &'static [u8] = match self.format {
                Format::Sse => b": keep-alive\n\n",
                Format::Ndjson => b"\n",
            };
            return self.send(Bytes::from_static(beat));
        }
        true
    }

    /// Ends the stream with the reason it was closed.
    pub fn send_error(&mut self, closed: &SubscriptionClosed) {
        let code = match closed {
            SubscriptionClosed::CutOff(_) => "cut_off",
            SubscriptionClosed::Ended => "ended",
        };
        let _ =
            self.send_json(&json!({ "error": { "code": code, "message": closed.to_string() } }));
    }
}

/// A streaming response of a subscription: each item becomes one line via `to_json`; idle
/// streams get heartbeats; a stream the engine ends closes with an error line giving why.
pub fn subscription_response<T: Send + Sync + 'static>(
    format: Format,
    sub: Subscription<Arc<[T]>>,
    to_json: impl Fn(&T) -> JsonValue + Send + 'static,
) -> Response {
    stream_response(format, move |tx| loop {
        match sub.recv_timeout(Duration::from_millis(250)) {
            Ok(Some(batch)) => {
                for item in batch.iter() {
                    if !tx.send_json(&to_json(item)) {
                        return;
                    }
                }
            }
            Ok(None) => {
                if !tx.keep_alive() {
                    return;
                }
            }
            Err(closed) => {
                tx.send_error(&closed);
                return;
            }
        }
    })
}

/// A streaming response fed by `reader`, which runs on a blocking thread.
fn stream_response(
    format: Format,
    reader: impl FnOnce(&mut LineSender) + Send + 'static,
) -> Response {
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let mut sender = LineSender {
        tx,
        format,
        last: Instant::now(),
        handle: tokio::runtime::Handle::current(),
    };
    tokio::task::spawn_blocking(move || reader(&mut sender));
    let body = Body::from_stream(ReceiverStream::new(rx).map(Ok::<_, Infallible>));
    let content_type = match format {
        Format::Ndjson => "application/x-ndjson",
        Format::Sse => "text/event-stream",
    };
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}
