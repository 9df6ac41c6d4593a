//! The QUIC front door: the engine's operations for high-rate clients.
//!
//! Why QUIC: one connection carries many independent streams (one per operation), so a slow
//! subscription never holds up a publish, and QUIC's per-stream and per-connection flow
//! control is the back-pressure: while the engine's queues are full the server stops reading,
//! and the client's writes wait.
//!
//! - [`tls`]: the node's self-signed certificate, created on first start in the data dir.
//! - [`wire`]: the frame format (u32 little-endian length + rkyv bytes) and its limits.
//! - [`server`]: [`QuicServer`], the accept loop and one task per stream.
//!
//! The Rust client is `starling_client::QuicClient`; the peer listener (node-to-node
//! requests, its own ALPN) runs the same transport with the cluster's handler.

#![warn(missing_docs)]

pub(crate) mod dispatch;
pub mod server;
pub mod tls;
// rkyv's derive generates undocumented resolver types for enums with struct variants; every
// item written by hand in `wire` is documented.
#[allow(missing_docs)]
pub mod wire;

use std::path::PathBuf;

use thiserror::Error;

pub use server::QuicServer;

pub use starling_protocol::{ALPN, PEER_ALPN};

/// Why the QUIC server could not start.
#[derive(Debug, Error)]
pub enum QuicError {
    /// A file of the TLS identity could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The stored certificate or key is unusable (corrupt, mismatched, or half missing).
    #[error("TLS identity in {}: {message} (remove the `tls` directory to create a new certificate; clients must then trust the new one)", path.display())]
    Certificate {
        /// The file or directory at fault.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The TLS configuration was refused by rustls.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// `start` was called outside a tokio runtime.
    #[error("the QUIC server must be started from inside a tokio runtime")]
    NoRuntime,
    /// The UDP socket could not be bound.
    #[error("could not listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
}
