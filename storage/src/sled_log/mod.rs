//! [`EventLog`] on sled 0.34.
//!
//! # Layout
//!
//! * One sled tree per topic, named `b"starling.log/"` + topic length (`u32`, big-endian) +
//!   topic UTF-8 bytes. The length prefix makes the encoding unambiguous for any topic name
//!   and leaves room for other tree families (checkpoints, KV) under other prefixes.
//! * In a topic tree, per shard:
//!   * the shard record at key `[0x00][shard u32 BE]`, value
//!     `[next u64 BE][first u64 BE][payload bytes u64 BE][crc32 u32 BE]`;
//!   * each entry at key `[0x01][shard u32 BE][offset u64 BE]`, value
//!     `[crc32 u32 BE][append time ms u64 BE][payload]`. The CRC covers the key, the time and
//!     the payload, so a value stored under the wrong offset is detected too.
//!
//!   Big-endian integers make sled's byte order equal to (shard, offset) order, so a read is
//!   one range scan, and all shard records sit together at the front of the tree.
//! * An append writes its entries and the updated shard record in one `sled::Batch`, which
//!   sled applies atomically, also across a crash: after recovery either the whole batch and
//!   its record are there, or neither. A truncation removes a prefix of entries and updates the
//!   record in the same way (in chunks; each chunk is atomic, so the record always matches).
//!
//! The shard records are loaded into memory on open; reads are bounded by the in-memory
//! record, so a reader never sees a half-applied batch.
//!
//! # Files
//!
//! The [`EventLog`] implementation below is a table of contents: each operation is in the
//! file of its concept. [`encoding`] holds the bytes above; [`append`], [`read`],
//! [`retention`] (prefix cuts and age/size retention) and [`epochs`] (epoch marks and suffix
//! cuts, for replication) the operations; [`flush`] the flusher and its backpressure;
//! [`marks`] the recorded flushed ends that catch a silent rollback. This file opens the
//! log (repairing a torn tail) and holds the state the others share.

mod append;
mod encoding;
mod epochs;
mod flush;
mod marks;
mod read;
mod retention;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use crate::log::{Durability, EventLog, LogOptions, RetentionReport};
use crate::StorageError;
use encoding::{
    decode_tree_name, entry_key, meta_key, payload_len, tree_name, ShardMeta, META_TAG,
};
use flush::{bounded_flush, Flusher};
use marks::{check_durable_marks, durable_marks, write_marks, Recorder};

/// Entries removed per atomic batch when truncating, so a big truncation does not build one
/// huge batch in memory.
const TRUNCATE_CHUNK: usize = 4096;

type ShardHandle = Arc<RwLock<ShardMeta>>;

/// One topic: its tree and the in-memory records of its shards.
struct TopicState {
    tree: sled::Tree,
    shards: RwLock<BTreeMap<u32, ShardHandle>>,
}

/// Locks ignore poisoning: in-memory records are only assigned after a successful write, so a
/// panic elsewhere cannot leave them half-updated.
fn rlock<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

fn wlock<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

/// Drops entries missing at the end of a shard, as a torn suffix.
///
/// sled keeps large values in separate blob files. When a write fails half way (seen with a
/// full disk), its recovery can keep the batch's shard record but remove the blobs of the
/// entries. Only a write that was never confirmed durable can end like that, and the log's
/// promise is that such a loss is a suffix: so missing entries *at the end* shorten the shard
/// (loudly), while an entry missing *before* a present one stays an error on read. The
/// shortened offsets are reused by later appends.
fn repair_torn_tail(
    tree: &sled::Tree,
    topic: &str,
    shard: u32,
    meta: ShardMeta,
) -> Result<ShardMeta, StorageError> {
    let backend =
        |e| StorageError::backend(format!("checking the end of {topic:?} shard {shard}"), e);
    let mut next = meta.next;
    while next > meta.first
        && tree
            .get(entry_key(shard, next - 1))
            .map_err(backend)?
            .is_none()
    {
        next -= 1;
    }
    if next == meta.next {
        return Ok(meta);
    }
    let mut bytes = 0;
    for item in tree.range(entry_key(shard, meta.first)..entry_key(shard, next)) {
        let (_, v) = item.map_err(backend)?;
        bytes += payload_len(&v);
    }
    let repaired = ShardMeta {
        next,
        first: meta.first,
        bytes,
    };
    tree.insert(&meta_key(shard)[..], &repaired.encode()[..])
        .map_err(backend)?;
    tracing::warn!(
        topic,
        shard,
        lost_from = next,
        lost_to = meta.next,
        "the end of a shard was lost in a failed write (never confirmed durable); the shard is shortened"
    );
    // The lost offsets are issued again, as Kafka does when it truncates a log to its high
    // watermark: they never named a durable entry.
    Ok(repaired)
}

/// How long `open` waits for sled's file lock. Right after a close in the same process,
/// sled's I/O threads may still hold the previous handle for a moment (seen when many logs
/// are opened and closed in parallel), so a held lock is retried briefly before it is
/// reported; a lock held by another process is reported after this delay.
const LOCK_WAIT: Duration = Duration::from_secs(2);

fn open_db(dir: &Path) -> Result<sled::Db, StorageError> {
    let started = Instant::now();
    loop {
        match sled::Config::new().path(dir).flush_every_ms(None).open() {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && started.elapsed() < LOCK_WAIT =>
            {
                tracing::debug!(dir = %dir.display(), "event log is locked, retrying");
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => {
                return Err(StorageError::backend(
                    format!("opening the event log in {}", dir.display()),
                    e,
                ))
            }
        }
    }
}

/// The sled-backed [`EventLog`]. See the module docs for the on-disk layout.
pub struct SledLog {
    /// Declared first so that it stops before the final flush in `Drop`.
    flusher: Option<Flusher>,
    /// Stopped before the final flush too.
    recorder: Option<Recorder>,
    db: sled::Db,
    dir: PathBuf,
    options: LogOptions,
    topics: Arc<RwLock<HashMap<String, Arc<TopicState>>>>,
    /// Set when a flush failed: every later write is refused (see [`StorageError::Failed`]).
    failed: RwLock<Option<String>>,
    /// Held while the flushed ends are recorded, and by a suffix truncation, so that the
    /// recorder never writes an end the truncation is removing.
    marks_lock: Arc<Mutex<()>>,
}

impl std::fmt::Debug for SledLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledLog")
            .field("dir", &self.dir)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl SledLog {
    /// Opens (or creates) the log stored in `dir` and loads every shard record.
    ///
    /// Fails with [`StorageError::Unwritable`] when `dir` cannot be created or written (checked
    /// with a probe file first, so the error names the directory), with
    /// [`StorageError::Backend`] when sled cannot open it (e.g. another process holds it), and
    /// with [`StorageError::CorruptMeta`] when a shard record fails its check.
    pub fn open(dir: &Path, options: LogOptions) -> Result<SledLog, StorageError> {
        let unwritable = |source| StorageError::Unwritable {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(unwritable)?;
        let probe = dir.join(".starling-write-probe");
        std::fs::write(&probe, b"probe").map_err(unwritable)?;
        let _ = std::fs::remove_file(&probe);

        let db = open_db(dir)?;

        let mut topics = HashMap::new();
        for name in db.tree_names() {
            let Some(topic) = decode_tree_name(&name) else {
                continue;
            };
            let tree = db
                .open_tree(&name)
                .map_err(|e| StorageError::backend(format!("opening topic {topic:?}"), e))?;
            let mut shards = BTreeMap::new();
            for item in tree.scan_prefix([META_TAG]) {
                let (k, v) = item.map_err(|e| {
                    StorageError::backend(format!("loading shards of topic {topic:?}"), e)
                })?;
                let shard = match k.get(1..5).and_then(|b| b.try_into().ok()) {
                    Some(b) if k.len() == 5 => u32::from_be_bytes(b),
                    _ => {
                        return Err(StorageError::CorruptMeta {
                            topic: topic.clone(),
                            shard: u32::MAX,
                            reason: format!("malformed shard record key {:?}", &k[..]),
                        })
                    }
                };
                let meta = ShardMeta::decode(&v).map_err(|reason| StorageError::CorruptMeta {
                    topic: topic.clone(),
                    shard,
                    reason,
                })?;
                let meta = repair_torn_tail(&tree, &topic, shard, meta)?;
                shards.insert(shard, Arc::new(RwLock::new(meta)));
            }
            tracing::debug!(topic = %topic, shards = shards.len(), "event log topic loaded");
            topics.insert(
                topic,
                Arc::new(TopicState {
                    tree,
                    shards: RwLock::new(shards),
                }),
            );
        }
        check_durable_marks(dir, &topics)?;
        tracing::info!(dir = %dir.display(), topics = topics.len(), durability = ?options.durability, "event log opened");
        let topics = Arc::new(RwLock::new(topics));
        let marks_lock = Arc::new(Mutex::new(()));
        let recorder = Some(Recorder::start(
            db.clone(),
            dir.to_path_buf(),
            Arc::clone(&topics),
            Arc::clone(&marks_lock),
        )?);
        let flusher = match options.durability {
            Durability::Sync => None,
            Durability::Batch { interval_ms } => {
                Some(Flusher::start(db.clone(), interval_ms.max(1))?)
            }
        };
        Ok(SledLog {
            flusher,
            recorder,
            db,
            dir: dir.to_path_buf(),
            options,
            topics,
            failed: RwLock::new(None),
            marks_lock,
        })
    }

    /// The directory this log lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The options the log was opened with.
    pub fn options(&self) -> &LogOptions {
        &self.options
    }

    fn topic(&self, topic: &str) -> Option<Arc<TopicState>> {
        rlock(&self.topics).get(topic).cloned()
    }

    fn topic_or_create(&self, topic: &str) -> Result<Arc<TopicState>, StorageError> {
        if let Some(t) = self.topic(topic) {
            return Ok(t);
        }
        let mut topics = wlock(&self.topics);
        if let Some(t) = topics.get(topic) {
            return Ok(t.clone());
        }
        let tree = self
            .db
            .open_tree(tree_name(topic))
            .map_err(|e| StorageError::backend(format!("creating topic {topic:?}"), e))?;
        let state = Arc::new(TopicState {
            tree,
            shards: RwLock::new(BTreeMap::new()),
        });
        topics.insert(topic.to_string(), state.clone());
        tracing::debug!(topic, "event log topic created");
        Ok(state)
    }

    fn shard(t: &TopicState, shard: u32) -> Option<ShardHandle> {
        rlock(&t.shards).get(&shard).cloned()
    }

    fn shard_or_create(t: &TopicState, shard: u32) -> ShardHandle {
        if let Some(s) = Self::shard(t, shard) {
            return s;
        }
        wlock(&t.shards).entry(shard).or_default().clone()
    }

    fn sync_if_required(&self, context: impl FnOnce() -> String) -> Result<(), StorageError> {
        if self.options.durability == Durability::Sync {
            bounded_flush(&self.db).map_err(|reason| self.fail(context(), reason))?;
        }
        Ok(())
    }

    /// Marks the log failed and gives the error for the write that found out.
    fn fail(&self, context: String, reason: String) -> StorageError {
        tracing::error!(dir = %self.dir.display(), %context, %reason, "event log flush failed; refusing further writes");
        *wlock(&self.failed) = Some(reason.clone());
        StorageError::NotDurable {
            context,
            source: reason.into(),
        }
    }

    /// Refuses a write when the log failed before or the disk is nearly full.
    fn check_writable(&self) -> Result<(), StorageError> {
        if let Some(reason) = rlock(&self.failed).clone() {
            return Err(StorageError::Failed {
                path: self.dir.clone(),
                reason,
            });
        }
        if self.options.min_free_bytes > 0 {
            let available = fs4::available_space(&self.dir).map_err(|e| {
                StorageError::backend(
                    format!("checking free space under {}", self.dir.display()),
                    e,
                )
            })?;
            if available < self.options.min_free_bytes {
                return Err(StorageError::DiskFull {
                    path: self.dir.clone(),
                    available,
                    reserve: self.options.min_free_bytes,
                });
            }
        }
        Ok(())
    }
}

/// A clean close is durable in every mode: dropping the log flushes what the background
/// flusher has not written yet (errors are logged, a destructor cannot return them).
impl Drop for SledLog {
    fn drop(&mut self) {
        drop(self.flusher.take());
        drop(self.recorder.take());
        let marks = durable_marks(&self.topics);
        match self.db.flush() {
            Ok(_) => {
                if let Err(e) = write_marks(&self.dir, &marks) {
                    tracing::error!(dir = %self.dir.display(), error = %e, "recording the event log's flushed ends on close failed");
                }
            }
            Err(e) => {
                tracing::error!(dir = %self.dir.display(), error = %e, "flushing the event log on close failed")
            }
        }
    }
}

impl EventLog for SledLog {
    fn append(
        &self,
        topic: &str,
        shard: u32,
        payloads: &[&[u8]],
    ) -> Result<Range<u64>, StorageError> {
        let mut ranges = self.append_shards(topic, &[(shard, payloads.to_vec())])?;
        Ok(ranges.pop().unwrap_or(0..0))
    }

    fn append_shards(
        &self,
        topic: &str,
        batches: &[(u32, Vec<&[u8]>)],
    ) -> Result<Vec<Range<u64>>, StorageError> {
        self.append_batches(topic, batches)
    }

    fn read(
        &self,
        topic: &str,
        shard: u32,
        from: u64,
        max: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StorageError> {
        self.read_entries(topic, shard, from, max)
    }

    fn next_offset(&self, topic: &str, shard: u32) -> Result<u64, StorageError> {
        Ok(self
            .topic(topic)
            .and_then(|t| Self::shard(&t, shard))
            .map_or(0, |s| rlock(&s).next))
    }

    fn first_offset(&self, topic: &str, shard: u32) -> Result<u64, StorageError> {
        Ok(self
            .topic(topic)
            .and_then(|t| Self::shard(&t, shard))
            .map_or(0, |s| rlock(&s).first))
    }

    fn topics(&self) -> Result<Vec<String>, StorageError> {
        let mut names: Vec<String> = rlock(&self.topics)
            .iter()
            .filter(|(_, t)| rlock(&t.shards).values().any(|s| rlock(s).next > 0))
            .map(|(name, _)| name.clone())
            .collect();
        names.sort();
        Ok(names)
    }

    fn shards(&self, topic: &str) -> Result<Vec<u32>, StorageError> {
        let Some(t) = self.topic(topic) else {
            return Ok(Vec::new());
        };
        let shards = rlock(&t.shards)
            .iter()
            .filter(|(_, s)| rlock(s).next > 0)
            .map(|(id, _)| *id)
            .collect();
        Ok(shards)
    }

    fn truncate_before(&self, topic: &str, shard: u32, offset: u64) -> Result<u64, StorageError> {
        self.truncate_prefix(topic, shard, offset)
    }

    fn truncate_from(&self, topic: &str, shard: u32, offset: u64) -> Result<u64, StorageError> {
        self.truncate_suffix(topic, shard, offset)
    }

    fn epoch_marks(&self, topic: &str, shard: u32) -> Result<Vec<(u64, u64)>, StorageError> {
        self.read_epoch_marks(topic, shard)
    }

    fn mark_epoch(
        &self,
        topic: &str,
        shard: u32,
        epoch: u64,
        start: u64,
    ) -> Result<(), StorageError> {
        self.add_epoch_mark(topic, shard, epoch, start)
    }

    fn apply_retention(&self, now_ms: u64) -> Result<RetentionReport, StorageError> {
        self.retain(now_ms)
    }

    fn flush(&self) -> Result<(), StorageError> {
        match &self.flusher {
            Some(f) => f.clock.flush(&self.db),
            None => self.db.flush().map(|_| ()),
        }
        .map_err(|e| StorageError::backend("flushing the event log", e))
    }
}
