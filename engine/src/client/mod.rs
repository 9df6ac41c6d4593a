//! Rust clients of a Starling node's front doors, used by the CLI, the load tester and the
//! tests: [`http::HttpClient`] for the HTTP API, and [`QuicClient`] for the QUIC protocol of
//! [`crate::quic`] (the fast way to publish typed rows and to follow outputs from another
//! process).

pub mod http;
pub mod quic;

pub use quic::{ClientError, QuicClient, QuicSubscription, Trust};
