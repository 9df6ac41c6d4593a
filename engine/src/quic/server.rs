//! The QUIC server: an accept loop, a task per connection and a task per stream.
//!
//! Every engine call runs off the async runtime (`spawn_blocking`), because publishing blocks
//! while the workers' queues are full: that wait is the back-pressure. A connection may have
//! at most [`MAX_IN_FLIGHT`] requests being read or handled at once; further streams are not
//! read, so QUIC flow control makes the client's writes wait. Subscriptions are bridged from
//! the engine's blocking [`Subscription`] by a thread each, through a small bounded channel,
//! so a client that reads slowly is eventually cut off by the engine with a reason.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::QuicServerConfig;
use rkyv::string::ArchivedString;
use rkyv::vec::ArchivedVec;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;

use starling_operators::plan::TopicSpec;
use starling_operators::schema::Field;
use starling_operators::{DataType, Value};

use super::wire::{self, codes, ArchivedRequest, ArchivedWireValue, FrameError, Response};
use super::{tls, QuicError, ALPN};
use crate::metrics::Metrics;
use crate::runtime::SubscriptionClosed;
use crate::{Engine, EngineError, Subscription};

/// Requests a connection may have being read or handled at once.
pub const MAX_IN_FLIGHT: usize = 4;
/// Open subscriptions per connection (each holds a bridging thread).
pub const MAX_SUBSCRIPTIONS: usize = 32;
/// Streams a client may have open at once on one connection.
pub const MAX_STREAMS: u32 = 64;
/// Results (updates or events) per subscription frame.
pub const SUBSCRIPTION_FRAME_ITEMS: usize = 16_384;

/// A running QUIC front door.
pub struct QuicServer {
    endpoint: quinn::Endpoint,
    local_addr: SocketAddr,
    fingerprint: String,
    cert_path: PathBuf,
    accept: JoinHandle<()>,
}

impl QuicServer {
    /// Loads or creates the TLS identity under `data_dir`, binds `addr` (port 0 picks one) and
    /// starts accepting on the current tokio runtime.
    pub fn start(
        engine: Arc<Engine>,
        addr: SocketAddr,
        data_dir: &Path,
    ) -> Result<QuicServer, QuicError> {
        Self::start_with_metrics(engine, addr, data_dir, None)
    }

    /// As [`QuicServer::start`], recording each operation's latency (route `quic:<op>`,
    /// method `QUIC`, status `ok` or the error code) and refused publishes in `metrics`.
    pub fn start_with_metrics(
        engine: Arc<Engine>,
        addr: SocketAddr,
        data_dir: &Path,
        metrics: Option<Arc<Metrics>>,
    ) -> Result<QuicServer, QuicError> {
        tokio::runtime::Handle::try_current().map_err(|_| QuicError::NoRuntime)?;
        let id = tls::load_or_create(data_dir)?;
        let mut crypto = rustls::ServerConfig::builder_with_provider(tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_no_client_auth()
            .with_single_cert(vec![id.cert.clone()], id.key.clone_key())?;
        crypto.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = QuicServerConfig::try_from(crypto)
            .map_err(|e| QuicError::Tls(rustls::Error::General(e.to_string())))?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        let mut transport = quinn::TransportConfig::default();
        transport
            .max_concurrent_bidi_streams(MAX_STREAMS.into())
            .max_concurrent_uni_streams(0u32.into())
            .stream_receive_window((4u32 << 20).into())
            .receive_window((16u32 << 20).into());
        config.transport_config(Arc::new(transport));
        let endpoint = quinn::Endpoint::server(config, addr)
            .map_err(|source| QuicError::Bind { addr, source })?;
        let local_addr = endpoint
            .local_addr()
            .map_err(|source| QuicError::Bind { addr, source })?;
        let accept = {
            let endpoint = endpoint.clone();
            tokio::spawn(async move {
                while let Some(incoming) = endpoint.accept().await {
                    tokio::spawn(serve_connection(
                        Arc::clone(&engine),
                        metrics.clone(),
                        incoming,
                    ));
                }
            })
        };
        tracing::info!(addr = %local_addr, fingerprint = %id.fingerprint, "QUIC front door listening");
        Ok(QuicServer {
            endpoint,
            local_addr,
            fingerprint: id.fingerprint,
            cert_path: id.cert_path,
            accept,
        })
    }

    /// The bound address (useful after binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// SHA-256 of the certificate DER, lowercase hex: what clients pin with
    /// `Trust::Fingerprint`.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The certificate file clients may trust with `Trust::CertFile`.
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// Closes every connection and waits until the endpoint is idle.
    pub async fn shutdown(self) {
        self.endpoint.close(0u32.into(), b"server shutting down");
        self.accept.abort();
        self.endpoint.wait_idle().await;
        tracing::info!(addr = %self.local_addr, "QUIC front door stopped");
    }
}

/// Per-connection limits.
struct Limits {
    requests: Arc<Semaphore>,
    subscriptions: Arc<Semaphore>,
}

async fn serve_connection(
    engine: Arc<Engine>,
    metrics: Option<Arc<Metrics>>,
    incoming: quinn::Incoming,
) {
    let conn = match incoming.await {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(error = %e, "QUIC handshake failed");
            return;
        }
    };
    let peer = conn.remote_address();
    tracing::debug!(%peer, "QUIC connection");
    let limits = Arc::new(Limits {
        requests: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        subscriptions: Arc::new(Semaphore::new(MAX_SUBSCRIPTIONS)),
    });
    loop {
        match conn.accept_bi().await {
            Ok((send, recv)) => {
                tokio::spawn(serve_stream(
                    Arc::clone(&engine),
                    metrics.clone(),
                    Arc::clone(&limits),
                    send,
                    recv,
                ));
            }
            Err(e) => {
                tracing::debug!(%peer, error = %e, "QUIC connection ended");
                return;
            }
        }
    }
}

/// What handling a request produced.
enum Outcome {
    Reply(Response),
    Output(Subscription<Arc<[starling_operators::render::Update]>>),
    Topic(Subscription<Arc<[starling_operators::Event]>>),
}

async fn serve_stream(
    engine: Arc<Engine>,
    metrics: Option<Arc<Metrics>>,
    limits: Arc<Limits>,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    // Not reading until a permit is free is what lets flow control push back.
    let Ok(permit) = Arc::clone(&limits.requests).acquire_owned().await else {
        return;
    };
    let frame = match wire::read_frame(&mut recv).await {
        Ok(Some(f)) => f,
        Ok(None) => {
            return reply(
                &mut send,
                &Response::error(codes::BAD_REQUEST, "empty stream"),
            )
            .await
        }
        Err(e @ FrameError::TooLarge(_)) => {
            let _ = recv.stop(0u32.into());
            return reply(&mut send, &Response::error(codes::TOO_LARGE, e.to_string())).await;
        }
        Err(e @ FrameError::Truncated) => {
            return reply(
                &mut send,
                &Response::error(codes::BAD_REQUEST, e.to_string()),
            )
            .await
        }
        Err(e) => {
            tracing::debug!(error = %e, "request stream failed");
            return;
        }
    };
    let _ = recv.stop(0u32.into());
    let started = std::time::Instant::now();
    let handled = {
        let engine = Arc::clone(&engine);
        tokio::task::spawn_blocking(move || handle(&engine, &frame)).await
    };
    drop(permit);
    let handled = handled.map(|(op, outcome)| {
        if let Some(m) = &metrics {
            let status = match &outcome {
                Outcome::Reply(Response::Error { code, .. }) => code.as_str(),
                _ => "ok",
            };
            m.requests
                .with_label_values(&[&format!("quic:{op}"), "QUIC", status])
                .observe(started.elapsed().as_secs_f64());
            if op.starts_with("publish") && status != "ok" {
                m.rejected.with_label_values(&[status]).inc();
            }
        }
        outcome
    });
    match handled {
        Ok(Outcome::Reply(r)) => reply(&mut send, &r).await,
        Ok(Outcome::Output(sub)) => {
            subscription(send, &limits, sub, |batch| {
                Response::Updates(batch.iter().map(wire::update_to_wire).collect())
            })
            .await
        }
        Ok(Outcome::Topic(sub)) => {
            subscription(send, &limits, sub, |batch| {
                Response::Events(batch.iter().map(wire::event_to_wire).collect())
            })
            .await
        }
        Err(e) => {
            tracing::error!(error = %e, "request handler failed");
            reply(
                &mut send,
                &Response::error(codes::INTERNAL, "request handler failed"),
            )
            .await
        }
    }
}

/// Writes one response frame and finishes the stream.
async fn reply(send: &mut quinn::SendStream, r: &Response) {
    let frame = match wire::encode(r) {
        Ok(f) => f,
        Err(e) => match wire::encode(&Response::error(codes::INTERNAL, e.to_string())) {
            Ok(f) => f,
            Err(_) => return,
        },
    };
    if let Err(e) = send.write_all(&frame).await {
        tracing::debug!(error = %e, "could not answer");
        return;
    }
    let _ = send.finish();
}

/// Streams a subscription until the client stops the stream, the connection ends, or the
/// engine closes the subscription (then an error frame says why).
async fn subscription<T, F>(
    mut send: quinn::SendStream,
    limits: &Limits,
    sub: Subscription<Arc<[T]>>,
    convert: F,
) where
    T: Send + Sync + 'static,
    F: Fn(&[T]) -> Response + Send + 'static,
{
    let Ok(_slot) = Arc::clone(&limits.subscriptions).try_acquire_owned() else {
        let msg = format!("at most {MAX_SUBSCRIPTIONS} subscriptions per connection");
        return reply(&mut send, &Response::error(codes::BUSY, msg)).await;
    };
    // An empty first batch tells the client the subscription is registered.
    let Ok(first) = wire::encode(&convert(&[])) else {
        return;
    };
    if send.write_all(&first).await.is_err() {
        return;
    }
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(4);
    let bridge = std::thread::Builder::new()
        .name("starling-quic-sub".into())
        .spawn(move || bridge(sub, tx, convert));
    if let Err(e) = bridge {
        return reply(&mut send, &Response::error(codes::INTERNAL, e.to_string())).await;
    }
    loop {
        tokio::select! {
            frame = rx.recv() => match frame {
                Some(f) => {
                    if send.write_all(&f).await.is_err() {
                        break;
                    }
                }
                None => {
                    let _ = send.finish();
                    break;
                }
            },
            _ = send.stopped() => break,
        }
    }
}

/// Runs on its own thread: moves batches from the engine to the stream task.
fn bridge<T, F>(sub: Subscription<Arc<[T]>>, tx: mpsc::Sender<Vec<u8>>, convert: F)
where
    F: Fn(&[T]) -> Response,
{
    let encode = |r: &Response| {
        wire::encode(r).or_else(|e| wire::encode(&Response::error(codes::INTERNAL, e.to_string())))
    };
    loop {
        match sub.recv_timeout(Duration::from_millis(200)) {
            Ok(Some(batch)) => {
                for chunk in batch.chunks(SUBSCRIPTION_FRAME_ITEMS) {
                    let Ok(frame) = encode(&convert(chunk)) else {
                        return;
                    };
                    if tx.blocking_send(frame).is_err() {
                        return;
                    }
                }
            }
            Ok(None) => {
                if tx.is_closed() {
                    return;
                }
            }
            Err(closed) => {
                let r = match closed {
                    SubscriptionClosed::CutOff(reason) => Response::error(codes::CUT_OFF, reason),
                    SubscriptionClosed::Ended => Response::error(codes::ENDED, closed.to_string()),
                };
                if let Ok(frame) = encode(&r) {
                    let _ = tx.blocking_send(frame);
                }
                return;
            }
        }
    }
}

/// Handles one validated request; runs on a blocking thread.
fn handle(engine: &Engine, frame: &[u8]) -> (&'static str, Outcome) {
    let req = match wire::access_request(frame) {
        Ok(r) => r,
        Err(e) => {
            return (
                "invalid",
                Outcome::Reply(Response::error(codes::BAD_REQUEST, e.to_string())),
            )
        }
    };
    let (op, result) = match req {
        ArchivedRequest::Publish { topic, rows } => ("publish", publish(engine, topic, rows)),
        ArchivedRequest::PublishJson { topic, ndjson } => {
            ("publish_json", publish_json(engine, topic, ndjson))
        }
        ArchivedRequest::Submit { definition } => (
            "submit",
            engine
                .install_text(definition.as_str())
                .map(|info| Response::Submitted { name: info.name }),
        ),
        ArchivedRequest::SubscribeOutput { dataflow, output } => {
            let outcome = match engine.subscribe(dataflow.as_str(), output.as_str()) {
                Ok(s) => Outcome::Output(s),
                Err(e) => Outcome::Reply(engine_error(&e)),
            };
            return ("subscribe_output", outcome);
        }
        ArchivedRequest::SubscribeTopic { topic } => {
            let outcome = match engine.subscribe_topic(topic.as_str()) {
                Ok(s) => Outcome::Topic(s),
                Err(e) => Outcome::Reply(engine_error(&e)),
            };
            return ("subscribe_topic", outcome);
        }
        ArchivedRequest::KvGet { view, key } => ("kv_get", kv_get(engine, view, key, false)),
        ArchivedRequest::KvGetLocal { view, key } => {
            ("kv_get_local", kv_get(engine, view, key, true))
        }
        ArchivedRequest::KvScan {
            view,
            prefix,
            after,
            limit,
        } => (
            "kv_scan",
            kv_scan(engine, view, prefix, after, limit, false),
        ),
        ArchivedRequest::KvScanLocal {
            view,
            prefix,
            after,
            limit,
        } => (
            "kv_scan_local",
            kv_scan(engine, view, prefix, after, limit, true),
        ),
        ArchivedRequest::SeriesRange {
            series,
            key,
            from,
            to,
            limit,
        } => (
            "series_range",
            series_range(
                engine,
                series,
                key,
                (from.to_native(), to.to_native()),
                limit,
                false,
            ),
        ),
        ArchivedRequest::SeriesRangeLocal {
            series,
            key,
            from,
            to,
            limit,
        } => (
            "series_range_local",
            series_range(
                engine,
                series,
                key,
                (from.to_native(), to.to_native()),
                limit,
                true,
            ),
        ),
        ArchivedRequest::VectorSearch {
            collection,
            vector,
            k,
            filter_json,
        } => (
            "vector_search",
            vector_query(vector, None).and_then(|q| {
                vector_search(engine, collection, q, k.to_native(), filter_json, false)
            }),
        ),
        ArchivedRequest::VectorSearchLocal {
            collection,
            vector,
            text,
            k,
            filter_json,
        } => (
            "vector_search_local",
            vector_query(vector, text.as_ref().map(|t| t.as_str())).and_then(|q| {
                vector_search(engine, collection, q, k.to_native(), filter_json, true)
            }),
        ),
        ArchivedRequest::Forward {
            topic,
            epochs,
            rows,
            origin,
        } => (
            "forward",
            forward(
                engine,
                topic,
                epochs,
                rows,
                origin.as_ref().map(|o| (o.0.to_native(), o.1.to_native())),
            ),
        ),
        ArchivedRequest::ForwardEvents {
            topic,
            epochs,
            events,
        } => (
            "forward_events",
            forward_events(engine, topic, epochs, events),
        ),
        ArchivedRequest::Mark { topic, node, time } => (
            "mark",
            match engine.distribution() {
                Some(d) => d
                    .mark(topic.as_str(), node.to_native(), time.to_native())
                    .map(|()| Response::Ack { accepted: 0 }),
                None => Err(EngineError::BadRequest(
                    "this node is not part of a cluster".into(),
                )),
            },
        ),
        ArchivedRequest::Handoff {
            shard,
            epoch,
            release,
            chunk,
            chunks,
            parts,
        } => (
            "handoff",
            handoff(
                engine,
                (shard.to_native(), epoch.to_native(), release.to_native()),
                (chunk.to_native(), chunks.to_native()),
                parts,
            ),
        ),
        ArchivedRequest::Fetch {
            replica,
            epochs,
            items,
            wait_ms,
            isr,
        } => (
            "fetch",
            fetch(
                engine,
                replica.to_native(),
                (epochs, isr),
                items,
                wait_ms.to_native(),
            ),
        ),
        ArchivedRequest::Raft { payload } => (
            "raft",
            match engine.distribution() {
                Some(d) => Ok(Response::Raft(d.raft(payload.as_slice()))),
                None => Err(EngineError::BadRequest(
                    "this node is not part of a cluster".into(),
                )),
            },
        ),
        ArchivedRequest::SubscribeOutputLocal { dataflow, output } => {
            let outcome = match engine.subscribe_local(dataflow.as_str(), output.as_str()) {
                Ok(s) => Outcome::Output(s),
                Err(e) => Outcome::Reply(engine_error(&e)),
            };
            return ("subscribe_output_local", outcome);
        }
        ArchivedRequest::ListTopics => ("list_topics", Ok(Response::Topics(list_topics(engine)))),
        ArchivedRequest::ListDataflows => (
            "list_dataflows",
            Ok(Response::Dataflows(list_dataflows(engine))),
        ),
    };
    (
        op,
        Outcome::Reply(result.unwrap_or_else(|e| engine_error(&e))),
    )
}

/// A KV read: across the cluster, or (`local`, a peer asking) this node's store only.
fn kv_get(
    engine: &Engine,
    view: &ArchivedString,
    key: &ArchivedString,
    local: bool,
) -> Result<Response, EngineError> {
    let (view, key) = (view.as_str(), key.as_str());
    let found = if local {
        engine.kv_get_local(view, key)?
    } else {
        engine.kv_get(view, key)?
    };
    Ok(Response::KvValue(
        found.map(|b| String::from_utf8_lossy(&b).into_owned()),
    ))
}

/// A page of a KV view: across the cluster, or (`local`) this node's part only.
fn kv_scan(
    engine: &Engine,
    view: &ArchivedString,
    prefix: &ArchivedString,
    after: &rkyv::option::ArchivedOption<ArchivedString>,
    limit: &rkyv::rend::u32_le,
    local: bool,
) -> Result<Response, EngineError> {
    let after = after.as_ref().map(|a| a.as_str());
    let limit = limit.to_native() as usize;
    let page = if local {
        engine.kv_scan_local(view.as_str(), prefix.as_str(), after, limit)?
    } else {
        engine.kv_scan(view.as_str(), prefix.as_str(), after, limit)?
    };
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    Ok(Response::KvPage {
        items: page.items.iter().map(|(k, v)| (text(k), text(v))).collect(),
        next: page.next.as_deref().map(text),
    })
}

/// Series points: across the cluster, or (`local`) those this node wrote.
fn series_range(
    engine: &Engine,
    series: &ArchivedString,
    key: &ArchivedString,
    (from, to): (u64, u64),
    limit: &rkyv::rend::u32_le,
    local: bool,
) -> Result<Response, EngineError> {
    let limit = limit.to_native() as usize;
    let points = if local {
        engine.series_range_local(series.as_str(), key.as_str(), from, to, limit)?
    } else {
        engine.series_range(series.as_str(), key.as_str(), from, to, limit)?
    };
    Ok(Response::Points(
        points
            .into_iter()
            .map(|(t, v)| (t, String::from_utf8_lossy(&v).into_owned()))
            .collect(),
    ))
}

/// The query of a vector search: the text when given, else the vector.
fn vector_query(
    vector: &ArchivedVec<rkyv::rend::f32_le>,
    text: Option<&str>,
) -> Result<crate::durable::queries::VectorQuery, EngineError> {
    use crate::durable::queries::VectorQuery;
    Ok(match text {
        Some(t) => VectorQuery::Text(t.to_string()),
        None => VectorQuery::Vector(vector.iter().map(|x| x.to_native()).collect()),
    })
}

/// Nearest points: across the cluster, or (`local`) of this node's collection only.
fn vector_search(
    engine: &Engine,
    collection: &ArchivedString,
    query: crate::durable::queries::VectorQuery,
    k: u32,
    filter_json: &ArchivedString,
    local: bool,
) -> Result<Response, EngineError> {
    let filter: serde_json::Map<String, serde_json::Value> = if filter_json.is_empty() {
        serde_json::Map::new()
    } else {
        serde_json::from_str(filter_json.as_str())
            .map_err(|e| EngineError::BadRequest(format!("filter must be a JSON object: {e}")))?
    };
    let k = k as usize;
    let hits = if local {
        engine.vector_search_local(collection.as_str(), query, k, &filter)?
    } else {
        engine.vector_search(collection.as_str(), query, k, &filter)?
    };
    Ok(Response::Hits(
        hits.into_iter()
            .map(|h| {
                (
                    h.key,
                    h.distance,
                    String::from_utf8_lossy(&h.metadata).into_owned(),
                )
            })
            .collect(),
    ))
}

/// Maps an engine refusal to its stable code.
pub fn engine_error(e: &EngineError) -> Response {
    let code = match e {
        EngineError::UnknownTopic(_)
        | EngineError::UnknownDataflow(_)
        | EngineError::UnknownOutput { .. } => codes::NOT_FOUND,
        EngineError::TopicConflict { .. } | EngineError::DataflowExists(_) => codes::CONFLICT,
        EngineError::BatchTooLarge { .. } => codes::TOO_LARGE,
        EngineError::ShuttingDown | EngineError::Unavailable(_) => codes::UNAVAILABLE,
        EngineError::StaleEpoch(_) => codes::STALE_EPOCH,
        EngineError::Busy => codes::BUSY,
        EngineError::Storage(starling_storage::StorageError::TooLarge { .. }) => codes::TOO_LARGE,
        EngineError::Storage(starling_storage::StorageError::InvalidInput { .. }) => {
            codes::BAD_REQUEST
        }
        EngineError::Storage(starling_storage::StorageError::Vector(v)) => {
            use starling_storage::VectorError as V;
            match **v {
                V::UnknownCollection { .. } | V::Dropped { .. } => codes::NOT_FOUND,
                V::SpecConflict { .. } => codes::CONFLICT,
                V::Corrupt { .. } | V::Io { .. } | V::Index { .. } => codes::STORAGE_UNAVAILABLE,
                _ => codes::BAD_REQUEST,
            }
        }
        EngineError::Storage(_) | EngineError::Catalog(_) => codes::STORAGE_UNAVAILABLE,
        EngineError::Startup(_) | EngineError::Internal(_) | EngineError::Recovery(_) => {
            codes::INTERNAL
        }
        EngineError::BadEvent { .. }
        | EngineError::BadEventShape { .. }
        | EngineError::WriteOnlyTopic(_)
        | EngineError::Plan(_)
        | EngineError::NoStorage(_)
        | EngineError::BadRequest(_) => codes::BAD_REQUEST,
    };
    Response::error(code, e.to_string())
}

/// The fast path: typed rows, checked against the schema, then published whole.
fn publish(
    engine: &Engine,
    topic: &ArchivedString,
    rows: &ArchivedVec<ArchivedVec<ArchivedWireValue>>,
) -> Result<Response, EngineError> {
    let spec = engine.topic_spec(topic.as_str())?;
    let mut out = Vec::with_capacity(rows.len());
    for (index, cells) in rows.iter().enumerate() {
        let row = typed_row(&spec, cells.as_slice())
            .map_err(|message| EngineError::BadEventShape { index, message })?;
        out.push(row);
    }
    let n = engine.publish_rows(topic.as_str(), out)?;
    Ok(Response::Ack { accepted: n as u64 })
}

/// Events forwarded by another node: typed like a publish, then fenced by the cluster layer.
fn forward(
    engine: &Engine,
    topic: &ArchivedString,
    epochs: &ArchivedVec<rkyv::tuple::ArchivedTuple2<rkyv::rend::u32_le, rkyv::rend::u64_le>>,
    rows: &ArchivedVec<ArchivedVec<ArchivedWireValue>>,
    origin: Option<(u64, u64)>,
) -> Result<Response, EngineError> {
    let Some(d) = engine.distribution() else {
        return Err(EngineError::BadRequest(
            "this node is not part of a cluster".into(),
        ));
    };
    let spec = engine.topic_spec(topic.as_str())?;
    let mut out = Vec::with_capacity(rows.len());
    for (index, cells) in rows.iter().enumerate() {
        let row = typed_row(&spec, cells.as_slice())
            .map_err(|message| EngineError::BadEventShape { index, message })?;
        out.push(row);
    }
    let epochs: Vec<(u32, u64)> = epochs
        .iter()
        .map(|t| (t.0.to_native(), t.1.to_native()))
        .collect();
    let n = d.forwarded(topic.as_str(), &epochs, out, origin)?;
    Ok(Response::Ack { accepted: n as u64 })
}

/// Records of another node's dataflow stage, fenced by the cluster layer.
fn forward_events(
    engine: &Engine,
    topic: &ArchivedString,
    epochs: &ArchivedVec<rkyv::tuple::ArchivedTuple2<rkyv::rend::u32_le, rkyv::rend::u64_le>>,
    events: &ArchivedVec<wire::ArchivedWireEvent>,
) -> Result<Response, EngineError> {
    let Some(d) = engine.distribution() else {
        return Err(EngineError::BadRequest(
            "this node is not part of a cluster".into(),
        ));
    };
    let mut out = Vec::with_capacity(events.len());
    for (index, e) in events.iter().enumerate() {
        let e: wire::WireEvent = rkyv::deserialize::<wire::WireEvent, rkyv::rancor::Error>(e)
            .map_err(|err| EngineError::BadEventShape {
                index,
                message: err.to_string(),
            })?;
        let event = wire::event_from_wire(&e)
            .map_err(|message| EngineError::BadEventShape { index, message })?;
        out.push(event);
    }
    let epochs: Vec<(u32, u64)> = epochs
        .iter()
        .map(|t| (t.0.to_native(), t.1.to_native()))
        .collect();
    let n = d.forwarded_events(topic.as_str(), &epochs, out)?;
    Ok(Response::Ack { accepted: n as u64 })
}

/// A replica copying shard logs this node owns.
fn fetch(
    engine: &Engine,
    replica: u64,
    (epochs, isr): (&ArchivedPairs, &ArchivedPairs),
    items: &ArchivedVec<wire::ArchivedFetchItem>,
    wait_ms: u32,
) -> Result<Response, EngineError> {
    let Some(d) = engine.distribution() else {
        return Err(EngineError::BadRequest(
            "this node is not part of a cluster".into(),
        ));
    };
    let pairs = |v: &ArchivedPairs| -> Vec<(u32, u64)> {
        v.iter()
            .map(|t| (t.0.to_native(), t.1.to_native()))
            .collect()
    };
    let (epochs, isr) = (pairs(epochs), pairs(isr));
    let items: Vec<wire::FetchItem> = items
        .iter()
        .map(|i| wire::FetchItem {
            topic: i.topic.as_str().to_string(),
            shard: i.shard.to_native(),
            next: i.next.to_native(),
            last_epoch: i.last_epoch.to_native(),
        })
        .collect();
    let view = crate::runtime::FetchView {
        epochs: &epochs,
        isr: &isr,
    };
    Ok(Response::Fetched(d.fetch(replica, view, items, wait_ms)?))
}

/// An archived list of (shard, number) pairs, as fetches carry them.
type ArchivedPairs =
    ArchivedVec<rkyv::tuple::ArchivedTuple2<rkyv::rend::u32_le, rkyv::rend::u64_le>>;

fn handoff(
    engine: &Engine,
    (shard, epoch, release): (u32, u64, u64),
    (chunk, chunks): (u32, u32),
    parts: &ArchivedVec<wire::ArchivedWireShardPart>,
) -> Result<Response, EngineError> {
    let Some(d) = engine.distribution() else {
        return Err(EngineError::BadRequest(
            "this node is not part of a cluster".into(),
        ));
    };
    let parts: Vec<crate::runtime::ShardPart> = parts
        .iter()
        .map(|p| crate::runtime::ShardPart {
            dataflow: p.dataflow.as_str().to_string(),
            node: p.node.as_str().to_string(),
            shard: p.shard.to_native(),
            bytes: p.bytes.as_slice().to_vec(),
        })
        .collect();
    d.handoff(shard, epoch, release, (chunk, chunks), parts)?;
    Ok(Response::Ack { accepted: 0 })
}

fn typed_row(spec: &TopicSpec, cells: &[ArchivedWireValue]) -> Result<Vec<Value>, String> {
    let fields = &spec.schema.fields;
    let mut it = cells.iter();
    let mut row = Vec::with_capacity(fields.len());
    while it.len() > 0 {
        let v = wire::take_value(&mut it, 0)?;
        let Some(field) = fields.get(row.len()) else {
            return Err(format!(
                "row has more than {} values; topic `{}` has {} fields",
                fields.len(),
                spec.name,
                fields.len()
            ));
        };
        row.push(conform(field, v)?);
    }
    if row.len() != fields.len() {
        return Err(format!(
            "row has {} values; topic `{}` has {} fields",
            row.len(),
            spec.name,
            fields.len()
        ));
    }
    Ok(row)
}

/// Checks a value against its field, widening `int` to `float` or `timestamp`.
fn conform(field: &Field, v: Value) -> Result<Value, String> {
    match (&field.data_type, v) {
        (_, Value::Null) if field.optional => Ok(field.default.clone()),
        (_, Value::Null) => Err(format!(
            "field `{}` is not optional; found null",
            field.name
        )),
        (DataType::Float, Value::Int(i)) => Ok(Value::Float(i as f64)),
        (DataType::Timestamp, Value::Int(i)) => Ok(Value::Timestamp(i)),
        (t, v) if fits(t, &v) => Ok(v),
        (t, v) => Err(format!(
            "field `{}` expects {t}, found {}",
            field.name,
            v.data_type()
        )),
    }
}

fn fits(t: &DataType, v: &Value) -> bool {
    match (t, v) {
        (DataType::Any, _) | (_, Value::Null) => true,
        (DataType::Bool, Value::Bool(_))
        | (DataType::Int, Value::Int(_))
        | (DataType::Float, Value::Float(_) | Value::Int(_))
        | (DataType::String, Value::Str(_))
        | (DataType::Bytes, Value::Bytes(_))
        | (DataType::Timestamp, Value::Timestamp(_)) => true,
        (DataType::List(e), Value::List(l)) => l.iter().all(|x| fits(e, x)),
        (DataType::Map(e), Value::Map(m)) => m.values().all(|x| fits(e, x)),
        (DataType::Vector(n), Value::Vector(x)) => x.len() == *n,
        _ => false,
    }
}

fn publish_json(
    engine: &Engine,
    topic: &ArchivedString,
    ndjson: &ArchivedVec<u8>,
) -> Result<Response, EngineError> {
    let mut docs = Vec::new();
    for line in ndjson.as_slice().split(|b| *b == b'\n') {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let doc = serde_json::from_slice(line).map_err(|e| EngineError::BadEventShape {
            index: docs.len(),
            message: format!("invalid JSON: {e}"),
        })?;
        docs.push(doc);
    }
    let n = engine.publish_json(topic.as_str(), &docs)?;
    Ok(Response::Ack { accepted: n as u64 })
}

fn list_topics(engine: &Engine) -> Vec<wire::WireTopic> {
    engine
        .topics()
        .into_iter()
        .map(|t| {
            let fields = &t.spec.schema.fields;
            let name_of = |i: Option<usize>| i.and_then(|i| fields.get(i)).map(|f| f.name.clone());
            wire::WireTopic {
                fields: fields
                    .iter()
                    .map(|f| (f.name.clone(), f.data_type.to_string()))
                    .collect(),
                key: name_of(t.spec.key),
                time: name_of(t.spec.time),
                name: t.spec.name,
                published: t.published,
                max_event_time: t.max_event_time,
                subscribers: t.subscribers as u64,
            }
        })
        .collect()
}

fn list_dataflows(engine: &Engine) -> Vec<wire::WireDataflow> {
    engine
        .dataflows()
        .into_iter()
        .map(|d| wire::WireDataflow {
            name: d.name,
            inputs: d.inputs,
            outputs: d.outputs,
            frontier: d.frontier,
            late_events: d.late_events,
            dead_letters: d.dead_letters,
            output_updates: d.output_updates,
        })
        .collect()
}
