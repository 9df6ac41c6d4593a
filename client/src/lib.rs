//! Rust clients of a Starling node's front doors, used by the CLI, the load tester, the
//! benchmarks and the tests: [`http::HttpClient`] for the HTTP API, and [`QuicClient`] for
//! the QUIC protocol of `starling-protocol` (the fast way to publish typed rows and to follow
//! outputs from another process).
//!
//! Public operations only, and nothing of the engine: a program that only talks to nodes
//! compiles this crate and the protocol, never timely, sled, usearch or openraft.

pub mod http;
pub mod quic;
pub mod tls;

pub use quic::{ClientError, ConnectOptions, QuicClient, QuicSubscription, Trust};
pub use starling_protocol as protocol;
