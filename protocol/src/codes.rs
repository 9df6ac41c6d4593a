//! Stable error codes of [`crate::Response::Error`], the same words the HTTP front door uses.
//!
//! Why shared: a client matches on these words, whichever front door answered.

/// The request is malformed or refers to data that does not fit (the message says which).
pub const BAD_REQUEST: &str = "bad_request";
/// The topic, dataflow or output does not exist.
pub const NOT_FOUND: &str = "not_found";
/// A dataflow or topic of that name exists already with another declaration.
pub const CONFLICT: &str = "conflict";
/// The frame or batch is over a documented limit.
pub const TOO_LARGE: &str = "too_large";
/// A per-connection limit is reached; retry later.
pub const BUSY: &str = "busy";
/// The engine is shutting down.
pub const UNAVAILABLE: &str = "unavailable";
/// The node's storage refused the write (disk full, unwritable data directory): nothing
/// of the batch was acknowledged; retry later or elsewhere.
pub const STORAGE_UNAVAILABLE: &str = "storage_unavailable";
/// A fault on the server side.
pub const INTERNAL: &str = "internal";
/// A subscription was cut off for reading too slowly.
pub const CUT_OFF: &str = "cut_off";
/// A subscription ended because its dataflow or topic went away.
pub const ENDED: &str = "ended";
/// A forwarded write carried an older epoch than the receiver knows, or went to a node
/// that does not own the shard: nothing was applied; re-route by the current table.
pub const STALE_EPOCH: &str = "stale_epoch";
/// A node-to-node request reached the client port: peers talk on the peer listener only.
pub const PEER_ONLY: &str = "peer_only";
