//! Durability of a node (ARCHITECTURE §6): the event log every acknowledged publish is in,
//! the catalog of topics and dataflows to recreate, and the replay that brings a restarted
//! node back to the state it had.
//!
//! * **Ingest.** A published batch is split by shard (`stable_hash(key) % shards`), each
//!   shard's events become one log entry, and all entries of the batch are appended in one
//!   atomic write stamped with a node-wide sequence number. Only then are the events handed
//!   to the workers and the publish acknowledged, so an acknowledgement means "in the log, as
//!   durable as the log's [`Durability`] promises". Events written by dataflows (publish,
//!   trigger, late and dead-letter topics) are not logged: a replay recomputes them.
//! * **Recovery.** On start the catalog recreates the topics; then every shard of every topic
//!   is read back and merged by sequence number, and each dataflow is installed at the point
//!   of the sequence where it was first installed. The workers therefore see the same
//!   commands in the same order as before the stop, and the final results are the same.
//!   Idle-timeout watermarks are wall-clock decisions and are not logged: an event that was
//!   late only because its topic had been idle may be on time in the replay.

pub mod catalog;
pub mod queries;
pub mod record;

use std::path::Path;
use std::sync::Arc;

pub use catalog::{Catalog, CatalogError};
pub use starling_operators::render::state::Stores;
pub use starling_storage::{
    CheckpointStore, CollectionSpec, Durability, EventLog, KvStore, KvWrite, Metric, Retention,
    SeriesStore, SledLog, StorageError, VectorStore,
};

use starling_storage::LogOptions;

/// How a node stores its log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreOptions {
    /// When an acknowledged publish is on disk.
    pub durability: Durability,
    /// Shards per topic: events are spread over them by key hash. Fixed for the life of the
    /// data directory (the same number the cluster will place).
    pub shards: u32,
    /// What periodic retention removes.
    pub retention: Retention,
    /// Publishes are refused while the data directory's file system has less free space.
    pub min_free_bytes: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            durability: Durability::default(),
            shards: 256,
            retention: Retention::default(),
            min_free_bytes: starling_storage::DEFAULT_MIN_FREE_BYTES,
        }
    }
}

/// The durable state of one node: its log and its catalog.
pub struct Store {
    pub(crate) log: Arc<dyn EventLog>,
    pub(crate) catalog: Catalog,
    pub(crate) shards: u32,
    /// KV views and time series written by dataflows and read by agents.
    pub(crate) stores: Stores,
    /// Operator-state checkpoints, one series per dataflow.
    pub(crate) checkpoints: CheckpointStore,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("shards", &self.shards)
            .finish_non_exhaustive()
    }
}

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("event log: {0}")]
    Log(#[from] StorageError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("shards must be between 1 and 65536, found {0}")]
    Shards(u32),
    #[error("the data directory was created with {stored} shards; it cannot be opened with {asked} (the shard of every logged event depends on it)")]
    ShardsChanged { stored: u32, asked: u32 },
    #[error("cannot record the shard count in {path}: {source}")]
    ShardsFile {
        path: String,
        source: std::io::Error,
    },
}

impl Store {
    /// Opens (or creates) the log in `dir/log` and the catalog in `dir`.
    pub fn open(dir: &Path, options: StoreOptions) -> Result<Store, StoreError> {
        if options.shards == 0 || options.shards > 65_536 {
            return Err(StoreError::Shards(options.shards));
        }
        let log = SledLog::open(
            &dir.join("log"),
            LogOptions {
                durability: options.durability,
                retention: options.retention,
                min_free_bytes: options.min_free_bytes,
                ..LogOptions::default()
            },
        )?;
        check_shards(dir, options.shards)?;
        let catalog = Catalog::open(dir)?;
        let stores = Stores {
            kv: Some(KvStore::open(&dir.join("kv"))?),
            series: Some(SeriesStore::open(&dir.join("series"))?),
            vectors: Some(Arc::new(VectorStore::open(&dir.join("vectors"))?)),
        };
        Ok(Store {
            log: Arc::new(log),
            catalog,
            shards: options.shards,
            stores,
            checkpoints: CheckpointStore::open(&dir.join("checkpoints"))?,
        })
    }

    /// The shard an event with this key is logged in.
    pub fn shard_of(&self, key: &starling_operators::Value) -> u32 {
        (key.stable_hash() % u64::from(self.shards)) as u32
    }

    /// The log, for readers (HTTP log reads, tests).
    pub fn log(&self) -> &Arc<dyn EventLog> {
        &self.log
    }

    /// The KV view store.
    pub fn kv(&self) -> Option<&KvStore> {
        self.stores.kv.as_ref()
    }

    /// The time-series store.
    pub fn series(&self) -> Option<&SeriesStore> {
        self.stores.series.as_ref()
    }

    /// Writes what is only in memory to disk: the vector collections (their index files),
    /// and flushes the KV, series and log backends. Runs at shutdown and once a minute; a
    /// restart replays the log on top, so a save that a crash interrupted costs replay time,
    /// not data.
    pub fn save(&self) -> Result<(), StorageError> {
        if let Some(v) = &self.stores.vectors {
            v.save_all()?;
        }
        if let Some(kv) = &self.stores.kv {
            kv.flush()?;
        }
        if let Some(s) = &self.stores.series {
            s.flush()?;
        }
        self.log.flush()
    }

    /// The vector collections.
    pub fn vectors(&self) -> Option<&Arc<VectorStore>> {
        self.stores.vectors.as_ref()
    }

    /// Shards per topic.
    pub fn shards(&self) -> u32 {
        self.shards
    }
}

/// The shard count is fixed at creation: a different count would put a key's later events in
/// another shard than its earlier ones.
fn check_shards(dir: &Path, asked: u32) -> Result<(), StoreError> {
    let path = dir.join("shards");
    let file_err = |source| StoreError::ShardsFile {
        path: path.display().to_string(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => match text.trim().parse::<u32>() {
            Ok(stored) if stored == asked => Ok(()),
            Ok(stored) => Err(StoreError::ShardsChanged { stored, asked }),
            Err(e) => Err(file_err(std::io::Error::other(format!(
                "`{}` is not a shard count: {e}",
                text.trim()
            )))),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::write(&path, format!("{asked}\n")).map_err(file_err)
        }
        Err(e) => Err(file_err(e)),
    }
}
