//! The Starling node as a library: topics, pub/sub and the timely workers that run
//! dataflow definitions.
//!
//! [`Engine`] is the in-process engine: it starts W timely worker threads, creates topics,
//! installs and drops definitions while running, accepts pushed event batches, tracks event
//! time (watermarks, lateness) and delivers each output to its subscribers. The network front
//! doors and the `starling` binary are thin layers over it.

pub mod cli;
pub mod client;
pub mod cluster;
pub mod durable;
pub mod error;
pub mod http;
pub mod metrics;
pub mod node;
pub mod quic;
pub mod runtime;

pub use error::EngineError;
pub use runtime::{
    DataflowInfo, Engine, EngineConfig, ShardPart, Subscription, SubscriptionClosed, TopicInfo,
};
pub use starling_operators as operators;
