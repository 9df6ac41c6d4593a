//! Where records a dataflow writes to a topic go when this engine is one node of a cluster.
//!
//! The engine runs local operations only; everything cluster-wide (routing a publish to the
//! owners of its shards, agreeing a definition, merging subscriptions and reads) is done by
//! the node above it, which calls the engine's local operations for this node's part. One
//! thing cannot be done from above: records a running dataflow produces (a stage writing a
//! later stage's internal topic, `publish` and `trigger` writing topics) appear on a worker
//! thread in the middle of a dataflow, and in a cluster they belong to the owners of their
//! keys, which may be other nodes. The engine hands them to an [`InternalSink`] the node sets
//! once, so it stays ignorant of shards, owners and the network.

use std::sync::Arc;

use starling_operators::Event;

use super::Engine;
use crate::EngineError;

/// Takes the records dataflows write to topics, so that they reach the owners of their keys.
/// Without one, the engine appends them to its own topics (a single node owns every key).
pub trait InternalSink: Send + Sync {
    /// Routes records a dataflow wrote to `topic`, with their keys and event times as
    /// produced. Called on a worker thread: it must not block (queue, and send from
    /// elsewhere), or the worker would stall the dataflow that produced them.
    fn route(&self, topic: &str, events: Vec<Event>);
}

impl Engine {
    /// Sends the records dataflows write to topics to `sink` from now on, instead of this
    /// engine's own topics. Set once; a second call is refused.
    pub fn set_internal_sink(&self, sink: Arc<dyn InternalSink>) -> Result<(), EngineError> {
        self.inner
            .internal_sink
            .set(sink)
            .map_err(|_| EngineError::Internal("the internal sink is already set".into()))
    }
}
