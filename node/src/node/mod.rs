//! A Starling node: the engine plus its network front doors.
//!
//! `starling node` builds a [`NodeConfig`], calls [`Node::start`], prints where it listens,
//! and on SIGINT/SIGTERM calls [`Node::shutdown`]: stop accepting, end live streams, let
//! in-flight requests finish, stop the workers.

pub mod config;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::{ClusterConfig, ConfigError, FileConfig, NodeConfig};

use crate::cluster::peer_door::PeerDoor;
use crate::cluster::{Cluster, Endpoints};
use crate::cluster::{MemoryNet, PeerNet};
use crate::durable::Store;
use crate::http::{router, AppState};
use crate::metrics::Metrics;
use crate::quic::server::Door;
use crate::quic::{QuicServer, PEER_ALPN};
use crate::router::Router;
use crate::{Engine, EngineConfig, EngineError};

/// Why a node could not start.
#[derive(Debug, Error)]
pub enum NodeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot listen for HTTP on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("cannot open the store: {0}")]
    Store(crate::durable::StoreError),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("QUIC front door: {0}")]
    Quic(#[from] crate::quic::QuicError),
    #[error("cluster: {0}")]
    Cluster(#[from] crate::cluster::ClusterError),
}

/// Where a node's peers reach it.
enum PeerListener {
    Quic(QuicServer),
    Memory(MemoryNet, SocketAddr),
}

impl PeerListener {
    fn addr(&self) -> SocketAddr {
        match self {
            PeerListener::Quic(s) => s.local_addr(),
            PeerListener::Memory(_, a) => *a,
        }
    }

    /// Stops taking peer requests (waiting up to 3 s for the QUIC endpoint to go idle).
    async fn shutdown(self) {
        match self {
            PeerListener::Quic(s) => {
                let _ = tokio::time::timeout(Duration::from_secs(3), s.shutdown()).await;
            }
            PeerListener::Memory(net, addr) => net.close(addr),
        }
    }
}

/// A running node.
pub struct Node {
    engine: Arc<Engine>,
    http_addr: SocketAddr,
    quic: QuicServer,
    /// The peer listener, in cluster mode.
    peer: Option<PeerListener>,
    stop: watch::Sender<bool>,
    http: JoinHandle<()>,
    retention: Option<JoinHandle<()>>,
    cluster: Arc<OnceLock<Arc<Cluster>>>,
}

impl Node {
    /// Starts the engine and the HTTP front door. Must run inside a tokio runtime.
    pub async fn start(config: &NodeConfig) -> Result<Node, NodeError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|source| NodeError::DataDir {
            path: config.data_dir.display().to_string(),
            source,
        })?;
        // One shard count for the log, the dataflows and the cluster: a member's is the
        // cluster's (set when the cluster was created). Two counts would put a key in one
        // shard for the table and another for the hand-off, which then leaves it behind.
        let shards = config.cluster.as_ref().map(|c| c.shards);
        let store_options = config.store.map(|mut o| {
            if let Some(n) = shards {
                o.shards = n;
            }
            o
        });
        let store = match store_options {
            Some(options) => Some(Arc::new(
                Store::open(&config.data_dir, options).map_err(NodeError::Store)?,
            )),
            None => None,
        };
        // Recovery replays the whole log: blocking work, off the async threads.
        let engine_config = EngineConfig {
            workers: config.workers,
            subscriber_queue: config.subscriber_queue,
            store,
            checkpoint_interval: Some(Duration::from_millis(config.checkpoint_interval_ms)),
            clustered: config.cluster.is_some(),
            shards,
            ..EngineConfig::default()
        };
        let engine = Arc::new(
            tokio::task::spawn_blocking(move || Engine::start(engine_config))
                .await
                .map_err(|e| NodeError::Engine(EngineError::Startup(e.to_string())))??,
        );
        let retention = spawn_retention(&engine);
        let metrics = Arc::new(Metrics::new(&engine)?);
        let listener = TcpListener::bind(config.http_addr)
            .await
            .map_err(|source| NodeError::Bind {
                addr: config.http_addr,
                source,
            })?;
        let http_addr = listener.local_addr().map_err(|source| NodeError::Bind {
            addr: config.http_addr,
            source,
        })?;
        let cluster = Arc::new(OnceLock::new());
        // What the front doors call for public operations: the engine alone, or the cluster.
        let routes = match &config.cluster {
            Some(_) => Router::clustered(Arc::clone(&engine), Arc::clone(&cluster)),
            None => Router::single(Arc::clone(&engine)),
        };
        let app = router(AppState {
            engine: Arc::clone(&engine),
            router: routes.clone(),
            metrics: Arc::clone(&metrics),
            limits: config.limits,
            cluster: Arc::clone(&cluster),
            clustered: config.cluster.is_some(),
        });
        let (stop, mut stopped) = watch::channel(false);
        let http = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::error!(error = %e, "HTTP server failed");
            }
        });
        let quic = QuicServer::start_with_metrics(
            routes,
            config.quic_addr,
            &config.data_dir,
            Some(Arc::clone(&metrics)),
        )?;
        let mut peer = None;
        if let Some(cc) = &config.cluster {
            // Peers get their own listener (own port, own ALPN): the client port answers
            // public operations only. It is bound before the cluster starts because gossip
            // announces its address; requests wait for the cluster to be set.
            let peer_addr = cc
                .peer_addr
                .unwrap_or_else(|| SocketAddr::new(config.quic_addr.ip(), 0));
            let handler = Arc::new(PeerDoor {
                engine: Arc::clone(&engine),
                cluster: Arc::clone(&cluster),
            });
            let (server, peer_addr, fingerprint) = match &cc.peer_net {
                PeerNet::Quic => {
                    let door = Door {
                        handler,
                        alpn: PEER_ALPN,
                        label: "peer",
                    };
                    let server =
                        QuicServer::serve(door, peer_addr, &config.data_dir, Some(metrics))?;
                    let (addr, fp) = (server.local_addr(), server.fingerprint().to_string());
                    (PeerListener::Quic(server), addr, fp)
                }
                PeerNet::Memory(net) => {
                    let addr = net.listen(handler);
                    let fp = quic.fingerprint().to_string();
                    (PeerListener::Memory(net.clone(), addr), addr, fp)
                }
            };
            let endpoints = Endpoints {
                http: http_addr,
                quic: quic.local_addr(),
                peer: peer_addr,
                net: cc.peer_net.clone(),
                fingerprint,
            };
            peer = Some(server);
            match Cluster::start(cc, &config.data_dir, &engine, endpoints).await {
                Ok(c) => {
                    let _ = cluster.set(Arc::new(c));
                }
                Err(e) => {
                    let _ = stop.send(true);
                    let _ = tokio::time::timeout(Duration::from_secs(3), quic.shutdown()).await;
                    if let Some(p) = peer {
                        p.shutdown().await;
                    }
                    let engine = Arc::clone(&engine);
                    let _ = tokio::task::spawn_blocking(move || engine.shutdown()).await;
                    return Err(e.into());
                }
            }
        }
        tracing::info!(%http_addr, quic_addr = %quic.local_addr(), peer_addr = ?peer.as_ref().map(PeerListener::addr), "node started");
        Ok(Node {
            engine,
            http_addr,
            quic,
            peer,
            stop,
            http,
            retention,
            cluster,
        })
    }

    /// Where HTTP listens (the real port when 0 was asked).
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Where QUIC listens (the real port when 0 was asked).
    pub fn quic_addr(&self) -> SocketAddr {
        self.quic.local_addr()
    }

    /// Where the peer listener listens, in cluster mode.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer.as_ref().map(PeerListener::addr)
    }

    /// SHA-256 of the node's QUIC certificate (hex), for clients that pin it.
    pub fn quic_fingerprint(&self) -> &str {
        self.quic.fingerprint()
    }

    /// The node's QUIC certificate file, for clients that trust it by file.
    pub fn quic_cert_path(&self) -> &std::path::Path {
        self.quic.cert_path()
    }

    /// `cluster=… node=… gossip=…` for the start-up line; `None` on a single node.
    pub fn cluster_summary(&self) -> Option<String> {
        let peer = self
            .peer_addr()
            .map(|a| format!(" peer={a}"))
            .unwrap_or_default();
        self.cluster.get().map(|c| format!("{}{peer}", c.summary()))
    }

    /// The cluster side, when the node runs in a cluster.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.get()
    }

    /// The engine inside.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Stops accepting, ends live streams, waits (up to 3 s) for in-flight requests, then
    /// closes the connections left (clients that stopped reading) and stops the workers.
    pub async fn shutdown(self) {
        if let Some(c) = self.cluster.get() {
            // Hand this node's shards to the others before anything stops.
            match c.leave(Duration::from_secs(30)).await {
                Ok(()) => {}
                // The last member keeps its shards: its log is there when it comes back.
                Err(EngineError::BadRequest(why)) => tracing::info!(%why, "not handing off"),
                Err(e) => tracing::warn!(error = %e, "leaving the cluster did not finish"),
            }
        }
        let _ = self.stop.send(true);
        if let Some(r) = &self.retention {
            r.abort();
        }
        self.engine.close_subscriptions();
        let abort = self.http.abort_handle();
        if tokio::time::timeout(Duration::from_secs(3), self.http)
            .await
            .is_err()
        {
            // A connection whose client stopped reading never finishes its response; without
            // the abort it would hold the node up until the process is killed.
            tracing::warn!("in-flight HTTP requests did not finish within 3 s; closing them");
            abort.abort();
        }
        let _ = tokio::time::timeout(Duration::from_secs(3), self.quic.shutdown()).await;
        if let Some(c) = self.cluster.get() {
            c.shutdown().await;
        }
        if let Some(p) = self.peer {
            p.shutdown().await;
        }
        let engine = self.engine;
        let _ = tokio::task::spawn_blocking(move || engine.shutdown()).await;
    }
}

/// How often log retention runs.
const RETENTION_EVERY: Duration = Duration::from_secs(60);

/// Applies the log's retention once a minute, if the node has a log.
fn spawn_retention(engine: &Arc<Engine>) -> Option<JoinHandle<()>> {
    let store = Arc::clone(engine.store()?);
    let log = Arc::clone(store.log());
    Some(tokio::spawn(async move {
        let mut every = tokio::time::interval(RETENTION_EVERY);
        loop {
            every.tick().await;
            let s = Arc::clone(&store);
            match tokio::task::spawn_blocking(move || s.save()).await {
                Ok(Err(e)) => tracing::error!(error = %e, "saving the stores failed"),
                Err(e) => tracing::error!(error = %e, "saving the stores failed"),
                Ok(Ok(())) => {}
            }
            let log = Arc::clone(&log);
            let now = starling_operators::render::state::now_ms();
            match tokio::task::spawn_blocking(move || log.apply_retention(now)).await {
                Ok(Ok(r)) if r.entries_removed > 0 => {
                    tracing::info!(
                        entries = r.entries_removed,
                        bytes = r.bytes_removed,
                        "log retention applied"
                    )
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "log retention failed"),
                Err(e) => tracing::error!(error = %e, "log retention task failed"),
            }
        }
    }))
}

/// Waits for SIGINT or SIGTERM.
pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
