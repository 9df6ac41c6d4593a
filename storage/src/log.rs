//! The partitioned event log as a trait, plus its options.
//!
//! The engine talks to [`EventLog`] only, so the backend (sled today, see
//! [`crate::SledLog`]) can be replaced without touching the rest of the workspace.

use std::ops::Range;

use crate::StorageError;

/// Default free space kept on the log's file system: appends are refused below it, before
/// the disk is actually full. A backend that hits "no space left" mid-write can end in a
/// state it does not recover from while running (sled's flush then blocks forever), so the
/// log stops early and cleanly instead.
pub const DEFAULT_MIN_FREE_BYTES: u64 = 64 * 1024 * 1024;
/// How long a flush may take before the log declares itself failed: a disk that stopped
/// answering must give the writer an error, not a request that never ends.
pub const FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Default largest single payload: 16 MiB. Bigger events belong in a blob store, and a bound
/// keeps one bad producer from making a shard unreadable in memory.
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 16 * 1024 * 1024;
/// Default largest number of entries in one `append`, so that one atomic batch stays small
/// enough to be applied (and replayed after a crash) quickly.
pub const DEFAULT_MAX_BATCH_ENTRIES: usize = 65_536;
/// Default largest total payload bytes in one `append`, for the same reason.
pub const DEFAULT_MAX_BATCH_BYTES: usize = 64 * 1024 * 1024;

/// When an acknowledged append is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `append` flushes to disk before it returns: an acknowledged batch survives a process
    /// crash and a power loss (as far as the file system honours `fsync`). Costs one flush per
    /// append call, so batch events per call.
    Sync,
    /// `append` returns as soon as the batch is in the backend's write buffer; a background
    /// flusher writes to disk every `interval_ms` milliseconds (0 is treated as 1).
    ///
    /// **Loss window:** a crash (of the process or the machine) can lose the batches
    /// acknowledged in the last `2 × interval_ms` (plus the duration of one flush). The bound
    /// holds under load: when the disk falls further behind, `append` flushes before it
    /// returns (backpressure) instead of letting unflushed data pile up in memory. What is
    /// lost is always a suffix: offsets stay dense and every batch is all-or-nothing.
    Batch {
        /// Milliseconds between background flushes.
        interval_ms: u64,
    },
}

impl Default for Durability {
    /// `Batch { interval_ms: 10 }`: group commit, bounded 10 ms loss window, far higher append
    /// rate than `Sync`. Choose `Sync` where an acknowledgement must mean "on disk".
    fn default() -> Self {
        Durability::Batch { interval_ms: 10 }
    }
}

/// What [`EventLog::apply_retention`] removes. `None` means "no limit of this kind".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Remove entries appended more than this many milliseconds before `now_ms`.
    pub max_age_ms: Option<u64>,
    /// Remove the oldest entries of a shard while its payload bytes exceed this.
    pub max_bytes_per_shard: Option<u64>,
}

/// How a log is opened. `LogOptions::default()` is batch durability (10 ms), no retention and
/// the default limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogOptions {
    /// When an acknowledged append is on disk.
    pub durability: Durability,
    /// What `apply_retention` removes.
    pub retention: Retention,
    /// Largest single payload, in bytes.
    pub max_payload_bytes: usize,
    /// Largest number of entries in one `append`.
    pub max_batch_entries: usize,
    /// Largest total payload bytes in one `append`.
    pub max_batch_bytes: usize,
    /// Appends are refused ([`StorageError::DiskFull`]) while the file system has less
    /// free space than this.
    pub min_free_bytes: u64,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            durability: Durability::default(),
            retention: Retention::default(),
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            max_batch_entries: DEFAULT_MAX_BATCH_ENTRIES,
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
            min_free_bytes: DEFAULT_MIN_FREE_BYTES,
        }
    }
}

/// What one [`EventLog::apply_retention`] pass removed, for logs and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Shards that were examined.
    pub shards_visited: u64,
    /// Entries removed across all shards.
    pub entries_removed: u64,
    /// Payload bytes removed across all shards.
    pub bytes_removed: u64,
}

/// A durable, partitioned, append-only log of opaque payloads.
///
/// A log is identified by `(topic, shard)`. Each has dense offsets starting at 0: the first
/// append gets 0, and an offset is never reused, even after retention removed everything and
/// the log was reopened; the one exception is a suffix lost in a write that was never
/// confirmed durable (a failed flush), whose offsets are issued again after a restart. Payloads are opaque bytes: the engine owns the encoding.
///
/// Implementations are shared between threads; appends to one `(topic, shard)` are
/// serialised, appends to different shards may run in parallel.
pub trait EventLog: Send + Sync {
    /// Appends the whole batch atomically (all entries or none, also across a crash) and
    /// returns the offsets assigned, in batch order. An empty batch writes nothing and returns
    /// the empty range at `next_offset`. When it returns `Ok`, the batch is durable as
    /// promised by the log's [`Durability`].
    fn append(
        &self,
        topic: &str,
        shard: u32,
        payloads: &[&[u8]],
    ) -> Result<Range<u64>, StorageError>;

    /// Appends to several shards of one topic in one atomic step: after a crash either every
    /// shard's entries are there or none are. Returns each shard's offsets, in the order of
    /// `batches`. A shard may appear only once. The engine uses it to log one published batch,
    /// whose events hash to many shards, with one write instead of one per shard. The limits
    /// of [`LogOptions`] apply to the whole call.
    fn append_shards(
        &self,
        topic: &str,
        batches: &[(u32, Vec<&[u8]>)],
    ) -> Result<Vec<Range<u64>>, StorageError>;

    /// Reads up to `max` entries in offset order, starting at `from` or at `first_offset` if
    /// `from` was already removed by retention (the returned offsets show the gap). Reading at
    /// or past `next_offset`, or an unknown topic/shard, returns an empty vector.
    fn read(
        &self,
        topic: &str,
        shard: u32,
        from: u64,
        max: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StorageError>;

    /// The offset the next appended entry will get (0 for a shard never written).
    fn next_offset(&self, topic: &str, shard: u32) -> Result<u64, StorageError>;

    /// The oldest offset still stored; equal to `next_offset` when the shard is empty.
    fn first_offset(&self, topic: &str, shard: u32) -> Result<u64, StorageError>;

    /// Topics that have had at least one entry appended, sorted.
    fn topics(&self) -> Result<Vec<String>, StorageError>;

    /// Shards of `topic` that have had at least one entry appended, sorted.
    fn shards(&self, topic: &str) -> Result<Vec<u32>, StorageError>;

    /// Removes every entry with an offset below `offset` (clamped to `next_offset`), e.g. once
    /// a checkpoint covers them. Returns the number of entries removed. Entries are not
    /// checksummed on the way out, so this also cuts past a damaged entry.
    fn truncate_before(&self, topic: &str, shard: u32, offset: u64) -> Result<u64, StorageError>;

    /// Removes every entry at `offset` and after, and the epoch marks that start there or
    /// later: the next append gets `offset` again. Only for a replica whose log diverged from
    /// its shard owner's (entries written by an owner that lost its shard before they were
    /// copied, hence never acknowledged with `acks = all`); Kafka truncates a follower the
    /// same way. Returns the number of entries removed.
    fn truncate_from(&self, topic: &str, shard: u32, offset: u64) -> Result<u64, StorageError>;

    /// The epochs of the owners that wrote this shard, each with the offset of its first
    /// entry, oldest first. Replicas compare them with the owner's to find where their copy
    /// diverged.
    fn epoch_marks(&self, topic: &str, shard: u32) -> Result<Vec<(u64, u64)>, StorageError>;

    /// Records that entries from `start` on were written by the owner of `epoch`. A mark for
    /// an epoch at or below the last one is ignored.
    fn mark_epoch(
        &self,
        topic: &str,
        shard: u32,
        epoch: u64,
        start: u64,
    ) -> Result<(), StorageError>;

    /// Applies the configured [`Retention`] to every shard, as of `now_ms` (milliseconds since
    /// the Unix epoch). Removes only a prefix of each shard: the oldest entries while they are
    /// older than `max_age_ms` or while the shard holds more than `max_bytes_per_shard`.
    /// `next_offset` is unaffected.
    fn apply_retention(&self, now_ms: u64) -> Result<RetentionReport, StorageError>;

    /// Forces everything appended so far to disk; useful with [`Durability::Batch`] before a
    /// planned shutdown or a checkpoint.
    fn flush(&self) -> Result<(), StorageError>;
}
