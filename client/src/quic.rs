//! The QUIC client: one connection, one stream per operation.
//!
//! Trust is explicit, never "accept any": either the node's certificate file
//! (`data_dir/tls/cert.der`), or the SHA-256 fingerprint of that certificate, checked by a
//! verifier that also verifies the handshake signature against the pinned certificate's key.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quinn::crypto::rustls::QuicClientConfig;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use thiserror::Error;

use starling_protocol::{
    self as wire, FrameError, Request, Response, WireDataflow, WireEvent, WireTopic, WireUpdate,
    WireValue, ALPN,
};

use crate::tls;

/// The name the client asks for in TLS. Node certificates carry it (and `127.0.0.1`); the
/// pinned trust makes the name check a formality, so any address of the node works.
pub const SERVER_NAME: &str = "localhost";

/// How the client decides to trust the node's certificate.
#[derive(Clone, Debug)]
pub enum Trust {
    /// The node's certificate file (DER), e.g. a copy of `data_dir/tls/cert.der`.
    CertFile(PathBuf),
    /// SHA-256 of the node's certificate DER as hex (colons and case are ignored).
    Fingerprint(String),
}

/// Why a client operation failed.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The trust setting is unusable (unreadable file, malformed fingerprint).
    #[error("trust: {0}")]
    Trust(String),
    /// The server presented a certificate other than the pinned one.
    #[error("server certificate fingerprint {found} does not match the pinned {expected}")]
    FingerprintMismatch {
        /// The pinned fingerprint.
        expected: String,
        /// The fingerprint of the certificate the server presented.
        found: String,
    },
    /// rustls refused the configuration or the handshake.
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// The connection could not be started (bad address, endpoint closed).
    #[error("connect: {0}")]
    Connect(#[from] quinn::ConnectError),
    /// The connection failed or was closed.
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// A frame could not be read, written or decoded.
    #[error("{0}")]
    Frame(#[from] FrameError),
    /// The stream was already finished.
    #[error("stream already closed")]
    Closed(#[from] quinn::ClosedStream),
    /// The local UDP socket could not be bound.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The server refused the request; `code` is one of [`starling_protocol::codes`].
    #[error("server: {code}: {message}")]
    Server {
        /// One of the stable codes in [`starling_protocol::codes`].
        code: String,
        /// The server's explanation.
        message: String,
    },
    /// The server answered something this client does not expect.
    #[error("protocol: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The server's error code, when the server refused the request.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Server { code, .. } => Some(code),
            _ => None,
        }
    }
}

impl From<quinn::WriteError> for ClientError {
    fn from(e: quinn::WriteError) -> Self {
        ClientError::Frame(FrameError::Write(e))
    }
}

/// How a connection is set up; the defaults are a client's.
#[derive(Clone, Copy, Debug)]
pub struct ConnectOptions {
    /// The ALPN protocol id to ask for ([`ALPN`] for the client port).
    pub alpn: &'static [u8],
    /// `Some`: keep-alives every second and the connection declared dead after this long
    /// without a packet, so a request to a peer that froze (SIGSTOP, a hung host) fails in
    /// that time rather than in quinn's 30 s default. `None`: keep-alives every 5 s.
    pub idle: Option<Duration>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            alpn: ALPN,
            idle: None,
        }
    }
}

/// A connection to a node's QUIC front door. Cheap to clone; clones share the connection
/// and may issue operations concurrently (each on its own stream).
#[derive(Clone)]
pub struct QuicClient {
    endpoint: quinn::Endpoint,
    conn: quinn::Connection,
}

impl QuicClient {
    /// Connects to `addr`, trusting the server as `trust` says.
    pub async fn connect(addr: SocketAddr, trust: Trust) -> Result<QuicClient, ClientError> {
        QuicClient::connect_with(addr, trust, ConnectOptions::default()).await
    }

    /// Like [`QuicClient::connect`], with another ALPN or idle timeout (a node's peer client
    /// speaks the peer protocol over the same connection machinery).
    pub async fn connect_with(
        addr: SocketAddr,
        trust: Trust,
        ConnectOptions { alpn, idle }: ConnectOptions,
    ) -> Result<QuicClient, ClientError> {
        let provider = tls::provider();
        let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13])?;
        let mut pinned = None;
        let mut crypto = match trust {
            Trust::CertFile(path) => {
                let der = std::fs::read(&path)
                    .map_err(|e| ClientError::Trust(format!("{}: {e}", path.display())))?;
                let mut roots = rustls::RootCertStore::empty();
                roots.add(CertificateDer::from(der)).map_err(|e| {
                    ClientError::Trust(format!("{}: not a DER certificate: {e}", path.display()))
                })?;
                builder.with_root_certificates(roots).with_no_client_auth()
            }
            Trust::Fingerprint(hex) => {
                let v = Arc::new(PinnedVerifier::new(&hex, provider)?);
                pinned = Some(Arc::clone(&v));
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(v)
                    .with_no_client_auth()
            }
        };
        crypto.alpn_protocols = vec![alpn.to_vec()];
        let crypto = QuicClientConfig::try_from(crypto)
            .map_err(|e| ClientError::Tls(rustls::Error::General(e.to_string())))?;
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        let mut transport = quinn::TransportConfig::default();
        match idle {
            Some(idle) => {
                transport.keep_alive_interval(Some(Duration::from_secs(1)));
                transport.max_idle_timeout(quinn::IdleTimeout::try_from(idle).ok());
            }
            None => {
                transport.keep_alive_interval(Some(Duration::from_secs(5)));
            }
        }
        config.transport_config(Arc::new(transport));
        let bind: SocketAddr = if addr.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let mut endpoint = quinn::Endpoint::client(bind)?;
        endpoint.set_default_client_config(config);
        let conn = match endpoint.connect(addr, SERVER_NAME)?.await {
            Ok(c) => c,
            Err(e) => {
                if let Some(found) = pinned.as_ref().and_then(|p| p.mismatch()) {
                    return Err(ClientError::FingerprintMismatch {
                        expected: pinned.map(|p| p.expected.clone()).unwrap_or_default(),
                        found,
                    });
                }
                return Err(e.into());
            }
        };
        Ok(QuicClient { endpoint, conn })
    }

    /// The underlying QUIC connection (for tools that speak raw frames).
    pub fn connection(&self) -> &quinn::Connection {
        &self.conn
    }

    /// Publishes typed rows (flat cells in the topic's field order) and returns how many were
    /// accepted: all of them, or an error naming the first bad row with nothing applied.
    pub async fn publish(
        &self,
        topic: &str,
        rows: Vec<Vec<WireValue>>,
    ) -> Result<u64, ClientError> {
        let req = Request::Publish {
            topic: topic.into(),
            rows,
        };
        match self.request(&req).await? {
            Response::Ack { accepted } => Ok(accepted),
            other => Err(unexpected(&other)),
        }
    }

    /// Publishes newline-delimited JSON objects, validated against the topic's schema.
    pub async fn publish_json(&self, topic: &str, ndjson: &[u8]) -> Result<u64, ClientError> {
        let req = Request::PublishJson {
            topic: topic.into(),
            ndjson: ndjson.to_vec(),
        };
        match self.request(&req).await? {
            Response::Ack { accepted } => Ok(accepted),
            other => Err(unexpected(&other)),
        }
    }

    /// Installs a definition (YAML or JSON); returns the dataflow's name.
    pub async fn submit(&self, definition: &str) -> Result<String, ClientError> {
        let req = Request::Submit {
            definition: definition.into(),
        };
        match self.request(&req).await? {
            Response::Submitted { name } => Ok(name),
            other => Err(unexpected(&other)),
        }
    }

    /// The live value (JSON text) of `key` in a KV view; `None` when absent or expired.
    pub async fn kv_get(&self, view: &str, key: &str) -> Result<Option<String>, ClientError> {
        let req = Request::KvGet {
            view: view.into(),
            key: key.into(),
        };
        match self.request(&req).await? {
            Response::KvValue(v) => Ok(v),
            other => Err(unexpected(&other)),
        }
    }

    /// A page of a KV view: `(key, JSON value)` pairs and the cursor for the next page.
    pub async fn kv_scan(
        &self,
        view: &str,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<(String, String)>, Option<String>), ClientError> {
        let req = Request::KvScan {
            view: view.into(),
            prefix: prefix.into(),
            after: after.map(Into::into),
            limit,
        };
        match self.request(&req).await? {
            Response::KvPage { items, next } => Ok((items, next)),
            other => Err(unexpected(&other)),
        }
    }

    /// Points `(window start, JSON value)` of a series key in `[from, to)`.
    pub async fn series_range(
        &self,
        series: &str,
        key: &str,
        from: u64,
        to: u64,
        limit: u32,
    ) -> Result<Vec<(u64, String)>, ClientError> {
        let req = Request::SeriesRange {
            series: series.into(),
            key: key.into(),
            from,
            to,
            limit,
        };
        match self.request(&req).await? {
            Response::Points(p) => Ok(p),
            other => Err(unexpected(&other)),
        }
    }

    /// The `k` nearest points `(key, distance, JSON metadata)`; `filter_json` is a JSON
    /// object of required metadata fields, or empty.
    pub async fn vector_search(
        &self,
        collection: &str,
        vector: &[f32],
        k: u32,
        filter_json: &str,
    ) -> Result<Vec<(String, f32, String)>, ClientError> {
        let req = Request::VectorSearch {
            collection: collection.into(),
            vector: vector.to_vec(),
            k,
            filter_json: filter_json.into(),
        };
        match self.request(&req).await? {
            Response::Hits(h) => Ok(h),
            other => Err(unexpected(&other)),
        }
    }

    /// Every topic with its counters.
    pub async fn topics(&self) -> Result<Vec<WireTopic>, ClientError> {
        match self.request(&Request::ListTopics).await? {
            Response::Topics(t) => Ok(t),
            other => Err(unexpected(&other)),
        }
    }

    /// Installed dataflows with their counters.
    pub async fn dataflows(&self) -> Result<Vec<WireDataflow>, ClientError> {
        match self.request(&Request::ListDataflows).await? {
            Response::Dataflows(d) => Ok(d),
            other => Err(unexpected(&other)),
        }
    }

    /// Follows a dataflow output. Returns once the server has registered the subscription,
    /// so everything published afterwards is seen.
    pub async fn subscribe_output(
        &self,
        dataflow: &str,
        output: &str,
    ) -> Result<QuicSubscription<WireUpdate>, ClientError> {
        let req = Request::SubscribeOutput {
            dataflow: dataflow.into(),
            output: output.into(),
        };
        self.subscribe(wire::encode(&req)?, |r| match r {
            Response::Updates(u) => Ok(u),
            other => Err(unexpected(&other)),
        })
        .await
    }

    /// Whether the connection is still open (a pool drops closed ones).
    pub fn is_open(&self) -> bool {
        self.conn.close_reason().is_none()
    }

    /// Follows the events appended to a topic.
    pub async fn subscribe_topic(
        &self,
        topic: &str,
    ) -> Result<QuicSubscription<WireEvent>, ClientError> {
        let req = Request::SubscribeTopic {
            topic: topic.into(),
        };
        self.subscribe(wire::encode(&req)?, |r| match r {
            Response::Events(e) => Ok(e),
            other => Err(unexpected(&other)),
        })
        .await
    }

    /// Closes the connection and waits until the server knows.
    pub async fn close(&self) {
        self.conn.close(0u32.into(), b"client done");
        self.endpoint.wait_idle().await;
    }

    /// Sends an encoded request frame that opens a stream of answers; `decode` turns each
    /// answer frame into items. For protocols layered on this connection (the peer protocol).
    pub async fn subscribe<T>(
        &self,
        frame: Vec<u8>,
        decode: fn(Response) -> Result<Vec<T>, ClientError>,
    ) -> Result<QuicSubscription<T>, ClientError> {
        let (send, mut recv) = self.send_frame(&frame).await?;
        // The server's first frame is an empty batch (subscribed) or an error.
        read_response(&mut recv).await.and_then(decode)?;
        Ok(QuicSubscription {
            recv,
            _send: send,
            decode,
        })
    }

    async fn send_frame(
        &self,
        frame: &[u8],
    ) -> Result<(quinn::SendStream, quinn::RecvStream), ClientError> {
        let (mut send, recv) = self.conn.open_bi().await?;
        send.write_all(frame).await?;
        send.finish()?;
        Ok((send, recv))
    }

    /// Sends an encoded request frame and reads the one answer; an error frame becomes
    /// [`ClientError::Server`]. For protocols layered on this connection (the peer protocol).
    pub async fn call(&self, frame: &[u8]) -> Result<Response, ClientError> {
        let (_send, mut recv) = self.send_frame(frame).await?;
        read_response(&mut recv).await
    }

    async fn request(&self, req: &Request) -> Result<Response, ClientError> {
        self.call(&wire::encode(req)?).await
    }
}

/// Reads one response frame; an error frame becomes [`ClientError::Server`].
async fn read_response(recv: &mut quinn::RecvStream) -> Result<Response, ClientError> {
    let body = wire::read_frame(recv).await?.ok_or_else(|| {
        ClientError::Protocol("the server closed the stream without answering".into())
    })?;
    match wire::decode_response(&body)? {
        Response::Error { code, message } => Err(ClientError::Server { code, message }),
        r => Ok(r),
    }
}

/// The error for an answer of the wrong kind.
pub fn unexpected(r: &Response) -> ClientError {
    let name = match r {
        Response::Ack { .. } => "Ack",
        Response::Error { .. } => "Error",
        Response::Updates(_) => "Updates",
        Response::Events(_) => "Events",
        Response::Submitted { .. } => "Submitted",
        Response::Topics(_) => "Topics",
        Response::Dataflows(_) => "Dataflows",
        Response::KvValue(_) => "KvValue",
        Response::KvPage { .. } => "KvPage",
        Response::Points(_) => "Points",
        Response::Hits(_) => "Hits",
        Response::Raft(_) => "Raft",
        Response::Fetched(_) => "Fetched",
    };
    ClientError::Protocol(format!("unexpected {name} response"))
}

/// A live subscription. Dropping it stops the stream; the server then ends its side.
pub struct QuicSubscription<T> {
    recv: quinn::RecvStream,
    _send: quinn::SendStream,
    decode: fn(Response) -> Result<Vec<T>, ClientError>,
}

impl<T> QuicSubscription<T> {
    /// The next batch. `Ok(None)`: the server ended the stream cleanly. An error frame (for
    /// example `cut_off` for a reader that fell behind) is returned as
    /// [`ClientError::Server`].
    pub async fn next(&mut self) -> Result<Option<Vec<T>>, ClientError> {
        match wire::read_frame(&mut self.recv).await? {
            None => Ok(None),
            Some(body) => match wire::decode_response(&body)? {
                Response::Error { code, message } => Err(ClientError::Server { code, message }),
                r => (self.decode)(r).map(Some),
            },
        }
    }
}

/// Trusts exactly one certificate, named by its SHA-256, and verifies the handshake
/// signature with that certificate's key (so a stolen certificate without the key fails).
#[derive(Debug)]
struct PinnedVerifier {
    expected: String,
    provider: Arc<CryptoProvider>,
    /// The fingerprint seen when it did not match, for a clear error.
    seen: Mutex<Option<String>>,
}

impl PinnedVerifier {
    fn new(hex: &str, provider: Arc<CryptoProvider>) -> Result<PinnedVerifier, ClientError> {
        let expected: String = hex
            .chars()
            .filter(|c| *c != ':')
            .collect::<String>()
            .to_ascii_lowercase();
        if expected.len() != 64 || !expected.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(ClientError::Trust(format!(
                "fingerprint must be 64 hex digits (SHA-256), got `{hex}`"
            )));
        }
        Ok(PinnedVerifier {
            expected,
            provider,
            seen: Mutex::new(None),
        })
    }

    fn mismatch(&self) -> Option<String> {
        self.seen.lock().ok().and_then(|s| s.clone())
    }
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let found = tls::fingerprint(end_entity);
        // Compare without an early exit, so timing says nothing about the pinned value.
        let same = found.len() == self.expected.len()
            && found
                .bytes()
                .zip(self.expected.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if same {
            Ok(ServerCertVerified::assertion())
        } else {
            if let Ok(mut s) = self.seen.lock() {
                *s = Some(found);
            }
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
