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

    /// A vector collection operation failed (bad input, unknown collection, damaged file,
    /// ...); the boxed [`VectorError`](crate::VectorError) says which.
    #[error(transparent)]
    Vector(Box<crate::VectorError>),
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
