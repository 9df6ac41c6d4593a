//! Rust clients of a Starling node's front doors.
//!
//! [`QuicClient`] speaks the QUIC protocol of [`crate::quic`]: the fast way to publish typed
//! rows and to follow outputs from another process.

#![warn(missing_docs)]

pub mod quic;

pub use quic::{ClientError, QuicClient, QuicSubscription, Trust};
