//! The one error type of the storage crate.
//!
//! Backend (sled) errors are carried as boxed sources so that the public API does not name
//! sled: callers match on the variant, never on the backend's own error type.

use std::path::PathBuf;

/// Boxed backend error, so that replacing sled does not change this crate's public types.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in the storage crate.
///
/// Each variant carries enough context (topic, shard, offset, path) to be logged as-is.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The data directory cannot be created or written (bad path, a regular file in the way,
    /// read-only file system, missing permissions). Reported before the backend is opened so
    /// that the operator sees the path, not a backend-internal file name.
    #[error("data directory {path} is not writable: {source}")]
    Unwritable {
        /// The directory that was asked for.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },

    /// The storage backend failed (I/O error, lock held by another process, ...).
    #[error("storage backend failed while {context}: {source}")]
    Backend {
        /// What the log was doing, with topic and shard when relevant.
        context: String,
        /// The backend's own error.
        #[source]
        source: BoxError,
    },

    /// A stored entry failed its checksum or layout check. The entry is not returned, so a
    /// consumer never sees silently damaged data.
    #[error("corrupt entry in topic {topic:?} shard {shard} at offset {offset}: {reason}")]
    Corrupt {
        /// Topic of the entry.
        topic: String,
        /// Shard of the entry.
        shard: u32,
        /// Offset of the damaged (or missing) entry.
        offset: u64,
        /// What check failed.
        reason: String,
    },

    /// The per-shard bookkeeping record (next/first offset) failed its check.
    #[error("corrupt metadata for topic {topic:?} shard {shard}: {reason}")]
    CorruptMeta {
        /// Topic of the shard.
        topic: String,
        /// The shard whose record is damaged.
        shard: u32,
        /// What check failed.
        reason: String,
    },

    /// A payload or batch exceeds the configured limit; nothing was written.
    #[error("{what} is {size}, over the limit of {limit}")]
    TooLarge {
        /// Which limit: "payload bytes", "batch entries" or "batch bytes".
        what: &'static str,
        /// The size that was asked for.
        size: u64,
        /// The configured limit.
        limit: u64,
    },

    /// A name or argument was refused before anything was written (empty or over-long view,
    /// series or checkpoint name, control characters, a zero expiry time, a zero page size).
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidInput {
        /// What was refused: "view name", "series name", "checkpoint name", ...
        what: &'static str,
        /// The refused value, as given (lossy for bytes).
        value: String,
        /// Which rule it breaks, phrased so the caller knows what to change.
        reason: String,
    },

    /// A stored KV value failed its checksum or layout check; its bytes are not returned.
    #[error("corrupt value in KV view {view:?} at key \"{}\": {reason}", .key.escape_ascii())]
    CorruptKv {
        /// View of the entry.
        view: String,
        /// Key of the damaged entry.
        key: Vec<u8>,
        /// What check failed.
        reason: String,
    },

    /// A stored time-series point failed its checksum or layout check; it is not returned.
    #[error("corrupt point in series {series:?} key \"{}\" at time {time_ms}: {reason}", .key.escape_ascii())]
    CorruptSeries {
        /// Series of the point.
        series: String,
        /// Key of the damaged point.
        key: Vec<u8>,
        /// Time (ms) of the damaged point.
        time_ms: u64,
        /// What check failed.
        reason: String,
    },

    /// Every stored checkpoint of a name is damaged, so none can be loaded. Nothing damaged
    /// is ever returned; the files are named so that an operator can inspect or remove them.
    #[error("no intact checkpoint for {name:?}; damaged files: {}: {reason}", display_paths(.files))]
    CorruptCheckpoint {
        /// Checkpoint name.
        name: String,
        /// The damaged files, newest first.
        files: Vec<PathBuf>,
        /// What check failed, per file.
        reason: String,
    },

    /// The write was applied but could not be flushed to disk (e.g. the disk filled up
    /// between the write and the flush). Readers already see it and a restart may keep it:
    /// its outcome is unknown, like a timeout, and retrying it can store it twice.
    #[error("written but not confirmed durable ({context}): {source}")]
    NotDurable {
        /// What the log was doing.
        context: String,
        /// The flush error.
        #[source]
        source: BoxError,
    },

    /// The file system holding the data has less free space than the configured reserve:
    /// nothing was written. Free space (or raise the limit) and retry.
    #[error("disk almost full: {available} bytes free under {path}, below the reserve of {reserve} bytes; writes are refused until space is freed")]
    DiskFull {
        /// The data directory.
        path: PathBuf,
        /// Bytes free when the write was refused.
        available: u64,
        /// The configured reserve.
        reserve: u64,
    },

    /// An earlier flush failed or did not finish in time; the log refuses every write until
    /// the node is restarted (what was acknowledged before is on disk).
    #[error("the event log in {path} stopped after a failed flush ({reason}); restart the node once the disk is healthy")]
    Failed {
        /// The data directory.
        path: PathBuf,
        /// What failed.
        reason: String,
    },

    /// A vector collection operation failed (bad input, unknown collection, damaged file,
    /// ...); the boxed [`VectorError`](crate::VectorError) says which.
    #[error(transparent)]
    Vector(Box<crate::VectorError>),

    /// The log holds fewer entries than were recorded as flushed: its files were damaged or
    /// replaced (the backend recovered to an earlier point without saying so). Refused rather
    /// than run on a silently shorter history.
    #[error("the event log lost entries that were on disk: topic {topic:?} shard {shard} ends at offset {have}, but {durable} entries had been flushed; restore the log from a backup, or move it away to start empty")]
    Lost {
        /// Topic of the shard.
        topic: String,
        /// The shard.
        shard: u32,
        /// Where the shard ends now.
        have: u64,
        /// Where it ended at the last recorded flush.
        durable: u64,
    },
}

/// Paths joined for an error message.
fn display_paths(files: &[PathBuf]) -> String {
    files
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

impl StorageError {
    /// Wraps a backend error with what the log was doing at the time.
    pub(crate) fn backend(
        context: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        StorageError::Backend {
            context: context.into(),
            source: Box::new(source),
        }
    }
}
