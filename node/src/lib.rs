//! A Starling node as a library: the engine of `starling-engine` behind its network front
//! doors (HTTP and QUIC), the router that sends their operations to the engine or the
//! cluster, the cluster shell that wires `starling-cluster` to it, metrics, the Rust clients,
//! and the `starling` command line.
//!
//! `bin/starling.rs` only parses arguments and calls [`cli`] and [`node`].

pub mod cli;
pub use starling_client as client;
pub mod cluster;
pub mod http;
pub mod metrics;
pub mod node;
pub mod quic;
pub mod router;

pub use starling_engine::{
    durable, operators, runtime, DataflowInfo, Engine, EngineConfig, EngineError, ShardPart,
    Subscription, SubscriptionClosed, TopicInfo,
};
