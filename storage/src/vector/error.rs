//! [`VectorError`] and the helpers that build it: every failure of the vector store is
//! described here once, so the store, the collection and the checkpoint code report alike.

use std::io;
use std::path::{Path, PathBuf};

use super::CollectionSpec;
use crate::StorageError;

/// Everything that can go wrong with vector collections. Carried inside
/// [`StorageError::Vector`]; each variant names the collection, key or file involved.
#[derive(Debug, thiserror::Error)]
pub enum VectorError {
    /// A metric name that is not one of `cosine`, `l2`, `inner_product` (or `ip`).
    #[error("unknown vector metric {given:?}: expected \"cosine\", \"l2\" or \"inner_product\" (\"ip\")")]
    UnknownMetric {
        /// What was given.
        given: String,
    },

    /// The collection name cannot be used (it names a directory).
    #[error("invalid collection name {name:?}: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },

    /// The dimension is 0 or above [`MAX_DIM`](super::MAX_DIM).
    #[error("invalid vector dimension {dim}: must be between 1 and {max}")]
    InvalidDimension {
        /// The dimension asked for.
        dim: usize,
        /// [`MAX_DIM`](super::MAX_DIM).
        max: usize,
    },

    /// `create` for an existing collection with a different spec.
    #[error("collection {name:?} already exists as {existing}, not {requested}")]
    SpecConflict {
        /// The collection.
        name: String,
        /// Its spec.
        existing: CollectionSpec,
        /// The spec that was asked for.
        requested: CollectionSpec,
    },

    /// No collection of that name.
    #[error("no vector collection named {name:?}")]
    UnknownCollection {
        /// The name asked for.
        name: String,
    },

    /// The collection was dropped while a handle to it was still held.
    #[error("vector collection {name:?} has been dropped")]
    Dropped {
        /// The collection.
        name: String,
    },

    /// A vector or query of the wrong length.
    #[error("collection {collection:?} holds {expected}-d vectors, got {got} values")]
    WrongDimension {
        /// The collection.
        collection: String,
        /// Its dimension.
        expected: usize,
        /// The length given.
        got: usize,
    },

    /// A vector or query containing NaN or an infinity, or (for cosine) only zeros.
    #[error("collection {collection:?}: {what}")]
    BadVector {
        /// The collection.
        collection: String,
        /// What is wrong, with the position of the first bad value.
        what: String,
    },

    /// A key that is empty or longer than [`MAX_KEY_BYTES`](super::MAX_KEY_BYTES).
    #[error("collection {collection:?}: invalid key: {reason}")]
    InvalidKey {
        /// The collection.
        collection: String,
        /// Why (empty, or its length).
        reason: String,
    },

    /// Metadata larger than [`MAX_METADATA_BYTES`](super::MAX_METADATA_BYTES).
    #[error("collection {collection:?}: metadata of key {key:?} is {size} bytes, over the limit of {limit}")]
    MetadataTooLarge {
        /// The collection.
        collection: String,
        /// The key it belongs to.
        key: String,
        /// Its size.
        size: usize,
        /// [`MAX_METADATA_BYTES`](super::MAX_METADATA_BYTES).
        limit: usize,
    },

    /// A saved file failed its checksum, length or consistency check. Nothing was loaded.
    #[error("damaged vector collection file {path}: {reason}")]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// Which check failed.
        reason: String,
    },

    /// A file-system operation failed.
    #[error("vector store I/O failed while {context} ({path}): {source}")]
    Io {
        /// What the store was doing.
        context: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },

    /// usearch reported a failure (out of memory, a file it cannot read, ...).
    #[error("vector index of collection {collection:?} failed while {context}: {message}")]
    Index {
        /// The collection.
        collection: String,
        /// What was being done.
        context: &'static str,
        /// usearch's message.
        message: String,
    },
}

impl From<VectorError> for StorageError {
    fn from(e: VectorError) -> Self {
        StorageError::Vector(Box::new(e))
    }
}

pub(super) fn io_err<'a>(
    context: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> StorageError + 'a {
    move |source| {
        VectorError::Io {
            context,
            path: path.to_path_buf(),
            source,
        }
        .into()
    }
}

pub(super) fn corrupt(path: &Path, reason: impl Into<String>) -> StorageError {
    VectorError::Corrupt {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
    .into()
}
