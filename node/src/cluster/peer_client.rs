//! The client side of the peer listener: one node asking another for the cluster protocol's
//! operations (forwards, marks, hand-offs, fetches, Raft, reads of the peer's own part).
//!
//! It rides on `starling_client::QuicClient`'s connection machinery with the peer ALPN, so
//! the client crate keeps only public operations and a client can never reach these.

use std::net::SocketAddr;
use std::time::Duration;

use starling_client::quic::unexpected;
use starling_client::{ClientError, Trust};

use super::peer_link::{Link, PeerItem, PeerNet, PeerSubscription};
use crate::quic::wire::{self, PeerRequest, Response};

/// A connection to a peer's listener. Cheap to clone.
#[derive(Clone)]
pub struct PeerClient {
    link: Link,
}

impl PeerClient {
    /// Connects to a peer's listener over QUIC: keep-alives every second and the connection
    /// declared dead after `idle` without a packet, so a request to a peer that froze
    /// (SIGSTOP, a hung host) fails in `idle` rather than in quinn's 30 s default, and the
    /// caller can route around it.
    pub async fn connect(
        addr: SocketAddr,
        trust: Trust,
        idle: Duration,
    ) -> Result<PeerClient, ClientError> {
        PeerClient::connect_on(&PeerNet::Quic, None, addr, trust, idle).await
    }

    /// Connects over `net` (QUIC or the in-memory network); `me` is this node's own
    /// listener.
    pub async fn connect_on(
        net: &PeerNet,
        me: Option<SocketAddr>,
        addr: SocketAddr,
        trust: Trust,
        idle: Duration,
    ) -> Result<PeerClient, ClientError> {
        Ok(PeerClient {
            link: net.connect(me, addr, trust, idle).await?,
        })
    }

    /// The QUIC connection underneath, for tests that send raw frames (`None` in memory).
    pub fn connection(&self) -> Option<&quinn::Connection> {
        match &self.link {
            Link::Quic(c) => Some(c.connection()),
            Link::Memory(_) => None,
        }
    }

    /// The peer's listener address.
    pub fn remote(&self) -> SocketAddr {
        self.link.remote()
    }

    /// Closes the link: requests in flight fail at once.
    pub fn close(&self, reason: &'static [u8]) {
        self.link.close(reason)
    }

    /// Whether the connection is still open (the pool drops closed ones).
    pub fn is_open(&self) -> bool {
        self.link.is_open()
    }

    async fn call(&self, req: PeerRequest) -> Result<Response, ClientError> {
        self.link.call(&wire::encode_peer(req)?).await
    }

    /// Node to node: a stream of this peer's own part of something several nodes hold
    /// (`SubscribeOutputLocal`: one output's results; `SubscribeTopicLocal`: the events it
    /// appends as their shards' owner), not merged with its peers'.
    pub(crate) async fn stream<T: PeerItem>(
        &self,
        req: PeerRequest,
    ) -> Result<PeerSubscription<T>, ClientError> {
        self.link.subscribe(wire::encode_peer(req)?).await
    }

    /// Node to node: events of shards the peer owns, stamped with the epochs the sender's
    /// table gives those shards. Refused whole (`stale_epoch`) when the peer's table differs.
    pub async fn forward(
        &self,
        topic: &str,
        epochs: Vec<(u32, u64)>,
        rows: Vec<Vec<wire::WireValue>>,
        origin: Option<(u64, u64)>,
    ) -> Result<u64, ClientError> {
        let req = PeerRequest::Forward {
            topic: topic.into(),
            epochs,
            rows,
            origin,
        };
        match self.call(req).await? {
            Response::Ack { accepted } => Ok(accepted),
            other => Err(unexpected(&other)),
        }
    }

    /// Node to node: events one stage produced for a later stage on the peer.
    pub async fn forward_events(
        &self,
        topic: &str,
        epochs: Vec<(u32, u64)>,
        events: Vec<wire::WireEvent>,
    ) -> Result<u64, ClientError> {
        let req = PeerRequest::ForwardEvents {
            topic: topic.into(),
            epochs,
            events,
        };
        match self.call(req).await? {
            Response::Ack { accepted } => Ok(accepted),
            other => Err(unexpected(&other)),
        }
    }

    /// Node to node: this node's watermark for an internal topic.
    pub async fn mark(&self, topic: &str, node: u64, time: u64) -> Result<(), ClientError> {
        let req = PeerRequest::Mark {
            topic: topic.into(),
            node,
            time,
        };
        match self.call(req).await? {
            Response::Ack { .. } => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Node to node: one chunk of a moving shard's window state (or, `chunks` 0, records
    /// of a shard the peer owns that reached this node late).
    pub async fn handoff(
        &self,
        (shard, epoch, release): (u32, u64, u64),
        (chunk, chunks): (u32, u32),
        parts: Vec<wire::WireShardPart>,
    ) -> Result<(), ClientError> {
        let req = PeerRequest::Handoff {
            shard,
            epoch,
            release,
            chunk,
            chunks,
            parts,
        };
        match self.call(req).await? {
            Response::Ack { .. } => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Node to node: copies entries of shard logs the peer owns (see `PeerRequest::Fetch`).
    pub async fn fetch(
        &self,
        replica: u64,
        epochs: Vec<(u32, u64)>,
        items: Vec<wire::FetchItem>,
        wait_ms: u32,
        isr: Vec<(u32, u64)>,
    ) -> Result<Vec<wire::Fetched>, ClientError> {
        let req = PeerRequest::Fetch {
            replica,
            epochs,
            items,
            wait_ms,
            isr,
        };
        match self.call(req).await? {
            Response::Fetched(v) => Ok(v),
            other => Err(unexpected(&other)),
        }
    }

    /// Node to node: one Raft message; returns the peer's serialised answer.
    pub async fn raft(&self, payload: Vec<u8>) -> Result<Vec<u8>, ClientError> {
        match self.call(PeerRequest::Raft { payload }).await? {
            Response::Raft(reply) => Ok(reply),
            other => Err(unexpected(&other)),
        }
    }

    /// Node to node: the value of a key in the peer's own store only (never scattered
    /// further), so the asking node can merge the answers of every node.
    pub async fn kv_get_local(&self, view: &str, key: &str) -> Result<Option<String>, ClientError> {
        let req = PeerRequest::KvGetLocal {
            view: view.into(),
            key: key.into(),
        };
        match self.call(req).await? {
            Response::KvValue(v) => Ok(v),
            other => Err(unexpected(&other)),
        }
    }

    /// Node to node: a page of the peer's own part of a view.
    pub async fn kv_scan_local(
        &self,
        view: &str,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<(String, String)>, Option<String>), ClientError> {
        let req = PeerRequest::KvScanLocal {
            view: view.into(),
            prefix: prefix.into(),
            after: after.map(Into::into),
            limit,
        };
        match self.call(req).await? {
            Response::KvPage { items, next } => Ok((items, next)),
            other => Err(unexpected(&other)),
        }
    }

    /// Node to node: the series points the peer itself wrote.
    pub async fn series_range_local(
        &self,
        series: &str,
        key: &str,
        from: u64,
        to: u64,
        limit: u32,
    ) -> Result<Vec<(u64, String)>, ClientError> {
        let req = PeerRequest::SeriesRangeLocal {
            series: series.into(),
            key: key.into(),
            from,
            to,
            limit,
        };
        match self.call(req).await? {
            Response::Points(p) => Ok(p),
            other => Err(unexpected(&other)),
        }
    }

    /// Node to node: the nearest points of the peer's own collection, by vector or by text
    /// (`text` set: the peer embeds it at its collection's dimension; `vector` is ignored).
    pub async fn vector_search_local(
        &self,
        collection: &str,
        vector: Vec<f32>,
        text: Option<String>,
        k: u32,
        filter_json: &str,
    ) -> Result<Vec<(String, f32, String)>, ClientError> {
        let req = PeerRequest::VectorSearchLocal {
            collection: collection.into(),
            vector,
            text,
            k,
            filter_json: filter_json.into(),
        };
        match self.call(req).await? {
            Response::Hits(h) => Ok(h),
            other => Err(unexpected(&other)),
        }
    }
}
