//! The seam between the engine and the cluster layer.
//!
//! On one node every publish, submit and subscription is served by this engine alone. In a
//! cluster the same front-door calls must go elsewhere: a publish is split by shard and
//! forwarded to the owners, a definition is agreed through Raft before any node installs it,
//! and a subscription merges every node's results. The front doors keep calling the engine;
//! when a [`Distribution`] is set the engine hands those calls to it, and the cluster layer
//! calls the `*_local` methods for the part this node serves itself. What peers ask of each
//! other (forwards, marks, hand-offs, fetches, Raft) never passes through the engine: the
//! node's peer server calls the cluster layer directly.

use std::sync::Arc;

use starling_operators::definition::{Definition, TopicDef};
use starling_operators::render::Update;
use starling_operators::{Event, Row};

use serde_json::{Map, Value as Json};
use starling_storage::{Hit, KvPage};

use super::{DataflowInfo, Engine, Subscription};
use crate::durable::queries::VectorQuery;
use crate::EngineError;

/// Where front-door calls go in a cluster. Every method is called from a blocking thread
/// (never from an async task) and may block until the cluster answers.
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
    /// Moves a topic's watermark on every node (an end-of-input mark must close the windows
    /// of every shard, wherever they run).
    fn advance_watermark(&self, topic: &str, time: u64) -> Result<(), EngineError>;
    /// Routes records a dataflow wrote to a topic (a later stage's internal topic, or a
    /// topic written by `publish`/`trigger`) to the owners of their keys. Called on a worker
    /// thread: it must not block.
    fn route_internal(&self, topic: &str, events: Vec<Event>);
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

/// Setting and reading the seam; the front-door methods that consult it live with their
/// concerns (topics, publish, dataflows, subscriptions, watermarks).
impl Engine {
    /// Hands front-door calls to the cluster layer from now on. Set once; a second call is
    /// refused.
    pub fn set_distribution(&self, d: Arc<dyn Distribution>) -> Result<(), EngineError> {
        self.inner
            .distribution
            .set(d)
            .map_err(|_| EngineError::Internal("the distribution is already set".into()))
    }

    /// The cluster layer, when set.
    pub fn distribution(&self) -> Option<&Arc<dyn Distribution>> {
        self.inner.distribution.get()
    }

    /// Whether front-door calls go to a cluster.
    pub fn is_distributed(&self) -> bool {
        self.inner.distribution.get().is_some()
    }
}
