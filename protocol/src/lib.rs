//! The wire of Starling's client protocol, shared by the clients and the node: flat values,
//! the request and response messages, framing, error codes and ALPN names.
//!
//! One bidirectional QUIC stream per operation. Each message is a frame (a `u32`
//! little-endian length, then an rkyv archive of a [`Request`] or a [`Response`]). The client
//! sends one request frame and finishes its side; the server answers with one frame (or, for
//! subscriptions, a frame per batch) and finishes.
//!
//! Why a crate of its own: a client (the load tester, a user's program) links this and
//! `starling-client` only, never timely, sled, usearch or openraft.

// rkyv's derive generates undocumented resolver types for enums with struct variants; every
// item written by hand is documented.
#![warn(missing_docs)]

pub mod codes;
#[allow(missing_docs)]
pub mod frame;
#[allow(missing_docs)]
pub mod messages;
#[allow(missing_docs)]
pub mod peer;
#[allow(missing_docs)]
pub mod value;

#[cfg(feature = "stream")]
pub use frame::read_frame;
pub use frame::{
    access_peer_request, access_request, decode_request, decode_response, encode, encode_peer,
    FrameError, MAX_FRAME,
};
pub use messages::*;
pub use peer::*;
pub use value::{ArchivedWireValue, WireValue, MAX_DEPTH};

/// ALPN protocol id of the client port, so a Starling client never talks to another QUIC
/// service by mistake (and vice versa).
pub const ALPN: &[u8] = b"starling/1";

/// ALPN protocol id of the peer listener: a client cannot reach node-to-node operations by
/// mistake, and a node never sends them to a client port.
pub const PEER_ALPN: &[u8] = b"starling-peer/1";
