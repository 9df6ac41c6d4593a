//! The wire format of the QUIC front door: the protocol crate's messages and framing, and the
//! conversions between the engine's values and the protocol's flat cells.

pub use starling_operators::flat::{
    event_from_wire, event_to_wire, push_value, row_from_wire, row_to_wire, take_value,
    update_from_wire, update_to_wire, value_from_wire, Cell, FlatCell,
};
pub use starling_protocol::codes;
pub use starling_protocol::frame::*;
pub use starling_protocol::messages::*;
pub use starling_protocol::peer::*;
pub use starling_protocol::value::*;
pub use starling_protocol::{ALPN, PEER_ALPN};
