//! The runtime of one Starling node: topics, pub/sub and the timely workers that run
//! dataflow definitions, with the durable log glue, checkpoints and recovery.
//!
//! [`Engine`] is the in-process engine: it starts W timely worker threads, creates topics,
//! installs and drops definitions while running, accepts pushed event batches, tracks event
//! time (watermarks, lateness) and delivers each output to its subscribers. It knows only
//! local operations; the network front doors, the cluster shell and the `starling` binary
//! live in `starling-node` above it.

pub mod durable;
pub mod error;
pub mod runtime;

pub use error::EngineError;
pub use runtime::{
    DataflowInfo, Engine, EngineConfig, ShardPart, Subscription, SubscriptionClosed, TopicInfo,
};
pub use starling_operators as operators;
