//! How nodes of a cluster reach each other's peer listeners: over QUIC (what runs), or over an
//! in-memory network inside one process (for tests that start several nodes in one process
//! and need no root, no network namespaces and no sockets for peer traffic).
//!
//! Both carry the same frames to the same handler (`PeerDoor`), so the in-memory network
//! tests the node's real peer protocol; only the wire is replaced. A closed set of two, so an
//! enum rather than a trait object: no boxing on the forward path.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rkyv::util::AlignedVec;
use starling_client::quic::unexpected;
use starling_client::{ClientError, ConnectOptions, QuicClient, QuicSubscription, Trust};
use starling_operators::render::Update;
use starling_operators::Event;
use tokio::sync::mpsc;

use crate::quic::server::{Handler, Outcome};
use crate::quic::wire::{self, codes, Response, PEER_ALPN};
use crate::runtime::SubscriptionClosed;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A network of peer listeners inside one process. Each listener gets an address of its own
/// (never bound: peers find it through gossip like a real one); links between two addresses
/// can be cut and healed.
#[derive(Clone, Default)]
pub struct MemoryNet {
    inner: Arc<NetInner>,
}

#[derive(Default)]
struct NetInner {
    doors: Mutex<HashMap<SocketAddr, Arc<dyn Handler>>>,
    /// Cut links, both directions stored.
    cut: Mutex<BTreeSet<(SocketAddr, SocketAddr)>>,
    next_port: AtomicU16,
}

impl fmt::Debug for MemoryNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryNet")
            .field("listeners", &lock(&self.inner.doors).len())
            .finish()
    }
}

impl PartialEq for MemoryNet {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl MemoryNet {
    /// A new, empty network.
    pub fn new() -> MemoryNet {
        MemoryNet::default()
    }

    /// Registers a listener; returns its address. (127.0.0.2 marks it as not a socket.)
    pub(crate) fn listen(&self, door: Arc<dyn Handler>) -> SocketAddr {
        let port = 1 + self.inner.next_port.fetch_add(1, Ordering::Relaxed);
        let addr = SocketAddr::from(([127, 0, 0, 2], port));
        lock(&self.inner.doors).insert(addr, door);
        addr
    }

    /// Removes a listener (its node stopped): calls to it fail as to a dead host.
    pub(crate) fn close(&self, addr: SocketAddr) {
        lock(&self.inner.doors).remove(&addr);
    }

    /// Cuts the link between two listeners: calls either way fail until [`MemoryNet::heal`].
    pub fn cut(&self, a: SocketAddr, b: SocketAddr) {
        let mut cut = lock(&self.inner.cut);
        cut.insert((a, b));
        cut.insert((b, a));
    }

    /// Heals a cut link.
    pub fn heal(&self, a: SocketAddr, b: SocketAddr) {
        let mut cut = lock(&self.inner.cut);
        cut.remove(&(a, b));
        cut.remove(&(b, a));
    }

    fn door(
        &self,
        from: Option<SocketAddr>,
        to: SocketAddr,
    ) -> Result<Arc<dyn Handler>, ClientError> {
        if let Some(from) = from {
            if lock(&self.inner.cut).contains(&(from, to)) {
                return Err(ClientError::Protocol(format!("the link to {to} is cut")));
            }
        }
        lock(&self.inner.doors)
            .get(&to)
            .cloned()
            .ok_or_else(|| ClientError::Protocol(format!("nothing listens at {to}")))
    }
}

/// Which network a node's peer traffic uses.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum PeerNet {
    /// QUIC on the peer listener (`--peer`).
    #[default]
    Quic,
    /// An in-memory network shared by the nodes of one process.
    Memory(MemoryNet),
}

impl PeerNet {
    /// Opens a link to the listener at `addr`; `me` is this node's own listener (for cut
    /// links of the in-memory network).
    pub(crate) async fn connect(
        &self,
        me: Option<SocketAddr>,
        addr: SocketAddr,
        trust: Trust,
        idle: Duration,
    ) -> Result<Link, ClientError> {
        match self {
            PeerNet::Quic => {
                let options = ConnectOptions {
                    alpn: PEER_ALPN,
                    idle: Some(idle),
                };
                Ok(Link::Quic(
                    QuicClient::connect_with(addr, trust, options).await?,
                ))
            }
            PeerNet::Memory(net) => {
                net.door(me, addr)?;
                Ok(Link::Memory(MemoryLink {
                    net: net.clone(),
                    me,
                    to: addr,
                    open: Arc::new(AtomicBool::new(true)),
                }))
            }
        }
    }
}

/// One open link to a peer's listener.
#[derive(Clone)]
pub(crate) enum Link {
    Quic(QuicClient),
    Memory(MemoryLink),
}

/// A link over the in-memory network: each call runs the peer's handler on a blocking
/// thread, as the QUIC server does.
#[derive(Clone)]
pub(crate) struct MemoryLink {
    net: MemoryNet,
    me: Option<SocketAddr>,
    to: SocketAddr,
    open: Arc<AtomicBool>,
}

impl MemoryLink {
    async fn handle(&self, frame: &[u8]) -> Result<Outcome, ClientError> {
        if !self.open.load(Ordering::Relaxed) {
            return Err(ClientError::Protocol("the link was closed".into()));
        }
        let door = self.net.door(self.me, self.to)?;
        // The handler reads the archive in place: it must be aligned as a received frame is.
        let body = frame.get(4..).unwrap_or_default();
        let mut aligned = AlignedVec::<16>::with_capacity(body.len());
        aligned.extend_from_slice(body);
        tokio::task::spawn_blocking(move || door.handle(&aligned).1)
            .await
            .map_err(|e| ClientError::Protocol(format!("the peer's handler failed: {e}")))
    }
}

impl Link {
    /// The peer's listener address.
    pub(crate) fn remote(&self) -> SocketAddr {
        match self {
            Link::Quic(c) => c.connection().remote_address(),
            Link::Memory(m) => m.to,
        }
    }

    /// Whether the link is still open (the pool drops closed ones).
    pub(crate) fn is_open(&self) -> bool {
        match self {
            Link::Quic(c) => c.is_open(),
            Link::Memory(m) => m.open.load(Ordering::Relaxed),
        }
    }

    /// Closes the link: calls in flight and later ones fail.
    pub(crate) fn close(&self, reason: &'static [u8]) {
        match self {
            Link::Quic(c) => c.connection().close(0u32.into(), reason),
            Link::Memory(m) => m.open.store(false, Ordering::Relaxed),
        }
    }

    /// One request frame, one answer; an error answer becomes [`ClientError::Server`].
    pub(crate) async fn call(&self, frame: &[u8]) -> Result<Response, ClientError> {
        match self {
            Link::Quic(c) => c.call(frame).await,
            Link::Memory(m) => match m.handle(frame).await? {
                Outcome::Reply(Response::Error { code, message }) => {
                    Err(ClientError::Server { code, message })
                }
                Outcome::Reply(r) => Ok(r),
                Outcome::Output(_) | Outcome::Topic(_) => Err(ClientError::Protocol(
                    "a stream answered a request that expects one answer".into(),
                )),
            },
        }
    }

    /// A request frame that opens a stream of `T`s (output updates or topic events).
    pub(crate) async fn subscribe<T: PeerItem>(
        &self,
        frame: Vec<u8>,
    ) -> Result<PeerSubscription<T>, ClientError> {
        match self {
            Link::Quic(c) => Ok(PeerSubscription::Quic(c.subscribe(frame, T::decode).await?)),
            Link::Memory(m) => match m.handle(&frame).await? {
                Outcome::Reply(Response::Error { code, message }) => {
                    Err(ClientError::Server { code, message })
                }
                Outcome::Reply(other) => Err(unexpected(&other)),
                outcome => {
                    let sub = T::stream(outcome)?;
                    let (tx, rx) = mpsc::channel(4);
                    let open = Arc::clone(&m.open);
                    std::thread::Builder::new()
                        .name("starling-peer-mem".into())
                        .spawn(move || loop {
                            if !open.load(Ordering::Relaxed) {
                                return;
                            }
                            let item = match sub.recv_timeout(Duration::from_millis(200)) {
                                Ok(Some(batch)) => Ok(batch.to_vec()),
                                Ok(None) if tx.is_closed() => return,
                                Ok(None) => continue,
                                Err(closed) => Err(ClientError::Server {
                                    code: match closed {
                                        SubscriptionClosed::CutOff(_) => codes::CUT_OFF,
                                        SubscriptionClosed::Ended => codes::ENDED,
                                    }
                                    .into(),
                                    message: closed.to_string(),
                                }),
                            };
                            let last = item.is_err();
                            if tx.blocking_send(item).is_err() || last {
                                return;
                            }
                        })
                        .map_err(ClientError::Io)?;
                    Ok(PeerSubscription::Memory(rx))
                }
            },
        }
    }
}

/// What a peer streams to a merged subscription: a dataflow's output updates or a topic's
/// events. Says how each travels, over QUIC (its answer frame) and in memory (the handler's
/// outcome), so one subscription type serves both.
pub(crate) trait PeerItem: Clone + Send + Sync + Sized + 'static {
    /// One answer frame's items.
    fn decode(r: Response) -> Result<Vec<Self>, ClientError>;
    /// The subscription an in-memory handler answered with.
    fn stream(o: Outcome) -> Result<crate::Subscription<Arc<[Self]>>, ClientError>;
}

impl PeerItem for Update {
    fn decode(r: Response) -> Result<Vec<Update>, ClientError> {
        match r {
            Response::Updates(u) => u
                .iter()
                .map(wire::update_from_wire)
                .collect::<Result<_, _>>()
                .map_err(ClientError::Protocol),
            other => Err(unexpected(&other)),
        }
    }

    fn stream(o: Outcome) -> Result<crate::Subscription<Arc<[Update]>>, ClientError> {
        match o {
            Outcome::Output(sub) => Ok(sub),
            _ => Err(ClientError::Protocol(
                "a peer answered an output subscription with something else".into(),
            )),
        }
    }
}

impl PeerItem for Event {
    fn decode(r: Response) -> Result<Vec<Event>, ClientError> {
        match r {
            Response::Events(e) => e
                .iter()
                .map(wire::event_from_wire)
                .collect::<Result<_, _>>()
                .map_err(ClientError::Protocol),
            other => Err(unexpected(&other)),
        }
    }

    fn stream(o: Outcome) -> Result<crate::Subscription<Arc<[Event]>>, ClientError> {
        match o {
            Outcome::Topic(sub) => Ok(sub),
            _ => Err(ClientError::Protocol(
                "a peer answered a topic subscription with something else".into(),
            )),
        }
    }
}

/// A peer's own output updates or topic events, batch by batch.
pub enum PeerSubscription<T> {
    /// Over QUIC.
    Quic(QuicSubscription<T>),
    /// Over the in-memory network.
    Memory(mpsc::Receiver<Result<Vec<T>, ClientError>>),
}

impl<T> PeerSubscription<T> {
    /// The next batch; `Ok(None)` when the stream ended cleanly.
    pub async fn next(&mut self) -> Result<Option<Vec<T>>, ClientError> {
        match self {
            PeerSubscription::Quic(s) => s.next().await,
            PeerSubscription::Memory(rx) => rx.recv().await.transpose(),
        }
    }
}
