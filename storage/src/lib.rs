//! Per-node durable state for Starling (ARCHITECTURE §1, §6). This crate depends on nothing
//! else in the workspace; everything above it talks to its traits, never to sled, so the
//! backend can be replaced (sled 0.34 is no longer maintained).
//!
//! # The partitioned event log
//!
//! [`EventLog`] stores opaque payloads per `(topic, shard)` with dense `u64` offsets from 0.
//! [`SledLog`] implements it on sled; its module docs describe the on-disk layout (one tree
//! per topic with a length-prefixed name, big-endian `(shard, offset)` keys, CRC32 per entry).
//!
//! ## Durability ([`Durability`])
//!
//! * `Sync`: `append` returns after the batch is flushed to disk. Acknowledged means durable.
//! * `Batch { interval_ms }` (**the default, 10 ms**): `append` returns once the batch is in
//!   sled's buffer; a background flusher writes every `interval_ms`. A crash may lose the
//!   batches acknowledged in the last `2 × interval_ms` (plus one flush); when the disk falls
//!   further behind, `append` flushes itself before returning (backpressure), so the window
//!   stays bounded under load. Call [`EventLog::flush`] to close the window on demand.
//!
//! A clean close (dropping the log) flushes in both modes.
//!
//! In both modes a batch is atomic (all or nothing, also across a crash), offsets stay dense,
//! and anything lost is a suffix of the log.
//!
//! ## Retention ([`Retention`])
//!
//! Retention only removes a prefix of a shard: [`EventLog::truncate_before`] removes entries
//! below an offset (e.g. covered by a checkpoint); [`EventLog::apply_retention`] removes the
//! oldest entries while they are older than `max_age_ms` (by their stored append time) or the
//! shard holds more than `max_bytes_per_shard` payload bytes. It may remove every entry, but
//! `next_offset` is kept in the shard record, so offsets are never reused, also after a reopen.
//!
//! A log that ends before the flushed ends it recorded (`durable.marks`, written after each
//! flush at most every 200 ms) is refused on open with [`StorageError::Lost`]: sled recovers
//! a damaged file by silently going back to an earlier point, and that must not pass for a
//! shorter history. Appends are refused with [`StorageError::DiskFull`] below a free-space
//! reserve, and a flush that fails or hangs stops the log ([`StorageError::Failed`]).
//!
//! # KV views, time series, checkpoints
//!
//! * [`KvStore`] (`kv.rs`): latest value per key in named views, optional expiry with an
//!   expiry-ordered index, prefix scans with cursors.
//! * [`SeriesStore`] (`series.rs`): points per `(key, time)` in named series, range reads and
//!   retention.
//! * [`CheckpointStore`] (`checkpoint.rs`): operator-state snapshots as files written
//!   atomically (temp file, fsync, rename), the newest [`CHECKPOINT_KEEP`] kept per name.

#![warn(missing_docs)]

mod checkpoint;
mod error;
mod kv;
mod log;
mod series;
mod sled_dir;
mod sled_log;
pub mod vector;

pub use error::{BoxError, StorageError};
pub use log::{
    Durability, EventLog, LogOptions, Retention, RetentionReport, DEFAULT_MAX_BATCH_BYTES,
    DEFAULT_MAX_BATCH_ENTRIES, DEFAULT_MAX_PAYLOAD_BYTES, DEFAULT_MIN_FREE_BYTES, FLUSH_TIMEOUT,
};
pub use sled_log::SledLog;

pub use checkpoint::{Checkpoint, CheckpointStore, CHECKPOINT_KEEP, CHECKPOINT_MAX_NAME_BYTES};
pub use kv::{KvPage, KvStore, KvWrite, KV_MAX_BATCH_BYTES, KV_MAX_KEY_BYTES, KV_MAX_VALUE_BYTES};
pub use series::{
    SeriesStore, SeriesWrite, SERIES_MAX_BATCH_BYTES, SERIES_MAX_KEY_BYTES, SERIES_MAX_VALUE_BYTES,
};
pub use vector::{
    CollectionSpec, Hit, Metric, SearchFilter, VectorCollection, VectorError, VectorStore, MAX_DIM,
    MAX_K, MAX_KEY_BYTES, MAX_METADATA_BYTES, MAX_NAME_BYTES,
};
