//! The node's router: where the front doors (HTTP, the client QUIC door) send the public
//! operations, so that they need not know whether the node runs alone or in a cluster.
//!
//! The engine runs local operations only (ARCHITECTURE §1). On a single node every public
//! operation is one of them. In a cluster the same operation means more: a publish is split
//! by shard and forwarded to the owners, a topic or definition is agreed through Raft before
//! any node creates it, a subscription merges every node's results, a watermark moves on every
//! node, and reads scatter to every node and merge. That is the cluster layer's work, and it
//! calls the engine's local operations for this node's part. The choice is made here, above
//! both, so that the engine never calls up into the cluster layer for it.

use std::sync::{Arc, OnceLock};

use serde_json::{Map, Value as Json};

use starling_operators::definition::{Definition, TopicDef};
use starling_operators::render::Update;
use starling_operators::{Event, Row};
use starling_storage::{Hit, KvPage};

use crate::cluster::{Cluster, Shared};
use crate::durable::queries::VectorQuery;
use crate::{DataflowInfo, Engine, EngineError, Subscription};

/// Sends each public operation to the engine (a node alone) or to the cluster layer. Cheap to
/// clone: every front door holds one.
///
/// Every method may block (a publish waits for room and for the owners' acknowledgements, a
/// cluster-wide call for the cluster's answer): call them from a blocking thread, or from an
/// async task only on a multi-threaded runtime (the cluster layer then blocks in place).
#[derive(Clone)]
pub struct Router {
    engine: Arc<Engine>,
    /// `None` on a node that runs alone; in cluster mode, the cluster once the node joined it.
    cluster: Option<Arc<OnceLock<Arc<Cluster>>>>,
}

impl Router {
    /// The router of a node that runs alone: every operation is the engine's own.
    pub fn single(engine: Arc<Engine>) -> Router {
        Router {
            engine,
            cluster: None,
        }
    }

    /// The router of a node in cluster mode: operations go to the cluster layer once the node
    /// has joined and set `cluster` (its doors listen before that, because gossip announces
    /// their addresses). Until then they are refused as unavailable: run on this node alone, a
    /// publish would log events of shards other nodes own, and a definition would run here
    /// without the cluster having agreed it.
    pub fn clustered(engine: Arc<Engine>, cluster: Arc<OnceLock<Arc<Cluster>>>) -> Router {
        Router {
            engine,
            cluster: Some(cluster),
        }
    }

    /// The engine behind the router: what this node holds itself (its topics, dataflows,
    /// store), which the doors describe without routing.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The cluster layer to hand operations to; `None` on a node that runs alone.
    fn cluster(&self) -> Result<Option<&Shared>, EngineError> {
        match &self.cluster {
            None => Ok(None),
            Some(lock) => lock.get().map(|c| Some(c.shared())).ok_or_else(|| {
                EngineError::Unavailable(
                    "this node is still joining its cluster; retry in a moment".into(),
                )
            }),
        }
    }

    /// Publishes a batch of rows of a topic; in a cluster, returns once every owner
    /// acknowledged its part. While the queues are full it waits (`wait`), or refuses with
    /// [`EngineError::Busy`] for callers that must not block (HTTP answers 429).
    pub fn publish(&self, topic: &str, rows: Vec<Row>, wait: bool) -> Result<usize, EngineError> {
        match self.cluster()? {
            Some(c) => c.publish(topic, rows, wait),
            None => self.engine.publish_local(topic, rows, wait),
        }
    }

    /// Publishes JSON objects to a topic, validated against its schema first (nothing of a
    /// batch with a bad event is applied; the error gives the event's position). Waits for
    /// room.
    pub fn publish_json(&self, topic: &str, docs: &[Json]) -> Result<usize, EngineError> {
        let rows = self.engine.decode_json(topic, docs)?;
        self.publish(topic, rows, true)
    }

    /// Creates a topic from its declaration (agreed by the cluster first, in a cluster).
    pub fn create_topic(&self, def: &TopicDef) -> Result<(), EngineError> {
        match self.cluster()? {
            Some(c) => c.create_topic(def),
            None => self.engine.create_topic_local(def),
        }
    }

    /// Checks and installs a definition (agreed by the cluster first, in a cluster).
    pub fn install(&self, def: &Definition) -> Result<DataflowInfo, EngineError> {
        match self.cluster()? {
            Some(c) => c.install(def),
            None => self.engine.install_local(def),
        }
    }

    /// Like [`Router::install`], for a definition written as YAML or JSON.
    pub fn install_text(&self, text: &str) -> Result<DataflowInfo, EngineError> {
        let def = Definition::parse(text).map_err(|e| EngineError::Plan(e.into()))?;
        self.install(&def)
    }

    /// Drops a dataflow (on every node, in a cluster). Its topics stay.
    pub fn drop_dataflow(&self, name: &str) -> Result<(), EngineError> {
        match self.cluster()? {
            Some(c) => c.drop_dataflow(name),
            None => self.engine.drop_dataflow_local(name),
        }
    }

    /// Subscribes to a dataflow output (every node's results merged, in a cluster).
    pub fn subscribe(
        &self,
        dataflow: &str,
        output: &str,
    ) -> Result<Subscription<Arc<[Update]>>, EngineError> {
        match self.cluster()? {
            Some(c) => c.subscribe(dataflow, output),
            None => self.engine.subscribe_local(dataflow, output),
        }
    }

    /// Follows the events appended to a topic (in a cluster, by every shard's owner, merged:
    /// each event once, in its shard's order).
    pub fn subscribe_topic(&self, topic: &str) -> Result<Subscription<Arc<[Event]>>, EngineError> {
        match self.cluster()? {
            Some(c) => c.subscribe_topic(topic),
            None => self.engine.subscribe_topic(topic),
        }
    }

    /// Forces the watermark of every input reading `topic` up to `time` (on every node, in a
    /// cluster: an end-of-input mark must close the windows of every shard).
    pub fn advance_watermark(&self, topic: &str, time: u64) -> Result<(), EngineError> {
        match self.cluster()? {
            Some(c) => c.advance_watermark(topic, time),
            None => self.engine.advance_watermark_local(topic, time),
        }
    }

    /// The live value of `key` in `view`, wherever in the cluster it was written.
    pub fn kv_get(&self, view: &str, key: &str) -> Result<Option<Vec<u8>>, EngineError> {
        match self.cluster()? {
            Some(c) => c.scatter_kv_get(view, key),
            None => self.engine.kv_get_local(view, key),
        }
    }

    /// A page of a view across the cluster, in key order; `next` continues it.
    pub fn kv_scan(
        &self,
        view: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<KvPage, EngineError> {
        match self.cluster()? {
            Some(c) => c.scatter_kv_scan(view, prefix, after, limit),
            None => self.engine.kv_scan_local(view, prefix, after, limit),
        }
    }

    /// Points of a series key in `[from, to)`, from every node that wrote some.
    pub fn series_range(
        &self,
        series: &str,
        key: &str,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, EngineError> {
        match self.cluster()? {
            Some(c) => c.scatter_series_range(series, key, from, to, limit),
            None => self.engine.series_range_local(series, key, from, to, limit),
        }
    }

    /// The `k` nearest points of a collection across the cluster.
    pub fn vector_search(
        &self,
        collection: &str,
        query: VectorQuery,
        k: usize,
        filter: &Map<String, Json>,
    ) -> Result<Vec<Hit>, EngineError> {
        match self.cluster()? {
            Some(c) => c.scatter_vector_search(collection, query, k, filter),
            None => self
                .engine
                .vector_search_local(collection, query, k, filter),
        }
    }
}
