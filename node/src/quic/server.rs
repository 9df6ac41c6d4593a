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
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;

use super::dispatch::ClientDoor;
use super::wire::{self, codes, FrameError, Response};
use super::{tls, QuicError, ALPN};
use crate::metrics::Metrics;
use crate::router::Router;
use crate::runtime::SubscriptionClosed;
use crate::{Engine, Subscription};

/// Requests a connection may have being read or handled at once.
pub const MAX_IN_FLIGHT: usize = 4;
/// Open subscriptions per connection (each holds a bridging thread).
pub const MAX_SUBSCRIPTIONS: usize = 32;
/// Streams a client may have open at once on one connection.
pub const MAX_STREAMS: u32 = 64;
/// Results (updates or events) per subscription frame.
pub const SUBSCRIPTION_FRAME_ITEMS: usize = 16_384;

/// Answers the requests of one door; runs on a blocking thread (engine calls block while
/// queues are full, which is the back-pressure). Returns the operation's name for metrics.
pub(crate) trait Handler: Send + Sync + 'static {
    fn handle(&self, frame: &[u8]) -> (&'static str, Outcome);
}

/// One door: who answers, the ALPN it requires, and its metrics prefix.
pub(crate) struct Door {
    pub handler: Arc<dyn Handler>,
    pub alpn: &'static [u8],
    pub label: &'static str,
}

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
    /// starts the client front door of a node that runs alone (every operation is `engine`'s
    /// own) on the current tokio runtime.
    pub fn start(
        engine: Arc<Engine>,
        addr: SocketAddr,
        data_dir: &Path,
    ) -> Result<QuicServer, QuicError> {
        Self::start_with_metrics(Router::single(engine), addr, data_dir, None)
    }

    /// As [`QuicServer::start`], sending operations through `router` (so a cluster node's
    /// client door serves the whole cluster), recording each operation's latency (route
    /// `quic:<op>`, method `QUIC`, status `ok` or the error code) and refused publishes in
    /// `metrics`.
    pub fn start_with_metrics(
        router: Router,
        addr: SocketAddr,
        data_dir: &Path,
        metrics: Option<Arc<Metrics>>,
    ) -> Result<QuicServer, QuicError> {
        let door = Door {
            handler: Arc::new(ClientDoor { router }),
            alpn: ALPN,
            label: "quic",
        };
        Self::serve(door, addr, data_dir, metrics)
    }

    /// Serves `door` on `addr` with the node's TLS identity (the client front door and the
    /// peer listener run the same transport with different handlers and ALPNs).
    pub(crate) fn serve(
        door: Door,
        addr: SocketAddr,
        data_dir: &Path,
        metrics: Option<Arc<Metrics>>,
    ) -> Result<QuicServer, QuicError> {
        let Door {
            handler,
            alpn,
            label,
        } = door;
        tokio::runtime::Handle::try_current().map_err(|_| QuicError::NoRuntime)?;
        let id = tls::load_or_create(data_dir)?;
        let mut crypto = rustls::ServerConfig::builder_with_provider(tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_no_client_auth()
            .with_single_cert(vec![id.cert.clone()], id.key.clone_key())?;
        crypto.alpn_protocols = vec![alpn.to_vec()];
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
                        Arc::clone(&handler),
                        label,
                        metrics.clone(),
                        incoming,
                    ));
                }
            })
        };
        tracing::info!(addr = %local_addr, fingerprint = %id.fingerprint, door = label, "QUIC listening");
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
    handler: Arc<dyn Handler>,
    label: &'static str,
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
                    Arc::clone(&handler),
                    label,
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
pub(crate) enum Outcome {
    /// One answer frame.
    Reply(Response),
    /// A stream of output updates.
    Output(Subscription<Arc<[starling_operators::render::Update]>>),
    /// A stream of topic events.
    Topic(Subscription<Arc<[starling_operators::Event]>>),
}

async fn serve_stream(
    handler: Arc<dyn Handler>,
    label: &'static str,
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
    let handled = { tokio::task::spawn_blocking(move || handler.handle(&frame)).await };
    drop(permit);
    let handled = handled.map(|(op, outcome)| {
        if let Some(m) = &metrics {
            let status = match &outcome {
                Outcome::Reply(Response::Error { code, .. }) => code.as_str(),
                _ => "ok",
            };
            m.requests
                .with_label_values(&[&format!("{label}:{op}"), "QUIC", status])
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
