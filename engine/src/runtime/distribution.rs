//! The seam between the engine and the cluster layer.
//!
//! On one node every publish, submit and subscription is served by this engine alone. In a
//! cluster the same front-door calls must go elsewhere: a publish is split by shard and
//! forwarded to the owners, a definition is agreed through Raft before any node installs it,
//! and a subscription merges every node's results. The front doors keep calling the engine;
//! when a [`Distribution`] is set the engine hands those calls to it, and the cluster layer
//! calls the `*_local` methods for the part this node serves itself.

use std::sync::Arc;

use starling_operators::definition::{Definition, TopicDef};
use starling_operators::render::Update;
use starling_operators::{Event, Row};

use serde_json::{Map, Value as Json};
use starling_storage::{Hit, KvPage};

use super::{DataflowInfo, Subscription};
use crate::durable::queries::VectorQuery;
use crate::EngineError;

/// Where front-door calls go in a cluster. Every method is called from a blocking thread
/// (never from an async task) and may block until the cluster answers.
/// What a replica's fetch says of its view of the shards it copies.
#[derive(Clone, Copy, Debug)]
pub struct FetchView<'a> {
    /// (shard, epoch) the replica copies at.
    pub epochs: &'a [(u32, u64)],
    /// (shard, version of its replica lists) the replica saw when it asked.
    pub isr: &'a [(u32, u64)],
}

pub trait Distribution: Send + Sync {
    /// Publishes a batch across the cluster; returns once every owner acknowledged its part.
    /// `wait` false asks for [`EngineError::Busy`] instead of waiting for room.
    fn publish(&self, topic: &str, rows: Vec<Row>, wait: bool) -> Result<usize, EngineError>;
    /// Agrees a definition with the cluster, then installs it here.
    fn install(&self, def: &Definition) -> Result<DataflowInfo, EngineError>;
    /// Agrees a topic declaration with the cluster, then creates it here.
    fn create_topic(&self, def: &TopicDef) -> Result<(), EngineError>;
    /// Drops a dataflow on every node.
    fn drop_dataflow(&self, name: &str) -> Result<(), EngineError>;
    /// Results of every node for one output, merged into one subscription.
    fn subscribe(
        &self,
        dataflow: &str,
        output: &str,
    ) -> Result<Subscription<Arc<[Update]>>, EngineError>;
    /// Applies events another node forwarded, after checking that this node owns each of
    /// `epochs`' shards at exactly that epoch (fencing); nothing is applied otherwise.
    fn forwarded(
        &self,
        topic: &str,
        epochs: &[(u32, u64)],
        rows: Vec<Row>,
        origin: Option<(u64, u64)>,
    ) -> Result<usize, EngineError>;
    /// Moves a topic's watermark on every node (an end-of-input mark must close the windows
    /// of every shard, wherever they run).
    fn advance_watermark(&self, topic: &str, time: u64) -> Result<(), EngineError>;
    /// Routes records a dataflow wrote to a topic (a later stage's internal topic, or a
    /// topic written by `publish`/`trigger`) to the owners of their keys. Called on a worker
    /// thread: it must not block.
    fn route_internal(&self, topic: &str, events: Vec<Event>);
    /// Applies records another node's stage produced, after the same fencing as `forwarded`.
    fn forwarded_events(
        &self,
        topic: &str,
        epochs: &[(u32, u64)],
        events: Vec<Event>,
    ) -> Result<usize, EngineError>;
    /// A producing node's watermark for an internal topic.
    fn mark(&self, topic: &str, node: u64, time: u64) -> Result<(), EngineError>;
    /// Merges one chunk of a shard's window state that its old owner handed over, and
    /// completes the move once every chunk is in (`chunks` 0: late records of a shard this
    /// node already owns).
    fn handoff(
        &self,
        shard: u32,
        epoch: u64,
        release: u64,
        chunk: (u32, u32),
        parts: Vec<super::ShardPart>,
    ) -> Result<(), EngineError>;
    /// Answers a replica copying the logs of shards this node owns: entries past its copy,
    /// or where its copy diverged (see `Request::Fetch`).
    fn fetch(
        &self,
        replica: u64,
        view: FetchView<'_>,
        items: Vec<crate::quic::wire::FetchItem>,
        wait_ms: u32,
    ) -> Result<Vec<crate::quic::wire::Fetched>, EngineError>;
    /// Answers one Raft message from a peer.
    fn raft(&self, payload: &[u8]) -> Vec<u8>;
    /// The live value of a KV key: a view is written on the node that processes the key, so
    /// this node's store and every peer's are asked; the first value present wins.
    fn kv_get(&self, view: &str, key: &str) -> Result<Option<Vec<u8>>, EngineError>;
    /// A page of a KV view merged from every node in key order, honouring `after` and
    /// `limit`; `next` is set when any node may hold more.
    fn kv_scan(
        &self,
        view: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<KvPage, EngineError>;
    /// Points of a series key from every node, united by window start.
    fn series_range(
        &self,
        series: &str,
        key: &str,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, EngineError>;
    /// The `k` nearest points over every node's part of a collection.
    fn vector_search(
        &self,
        collection: &str,
        query: VectorQuery,
        k: usize,
        filter: &Map<String, Json>,
    ) -> Result<Vec<Hit>, EngineError>;
}
