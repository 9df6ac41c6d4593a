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

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::log::{Durability, EventLog, LogOptions, RetentionReport, FLUSH_TIMEOUT};
use crate::StorageError;

const TREE_PREFIX: &[u8] = b"starling.log/";
const META_TAG: u8 = 0;
const ENTRY_TAG: u8 = 1;
const EPOCH_TAG: u8 = 2;
const ENTRY_HEADER: usize = 12;
const META_LEN: usize = 28;
/// Entries removed per atomic batch when truncating, so a big truncation does not build one
/// huge batch in memory.
const TRUNCATE_CHUNK: usize = 4096;

/// The sled tree name of a topic (length-prefixed, see the module docs).
fn tree_name(topic: &str) -> Vec<u8> {
    let mut name = Vec::with_capacity(TREE_PREFIX.len() + 4 + topic.len());
    name.extend_from_slice(TREE_PREFIX);
    name.extend_from_slice(&(topic.len() as u32).to_be_bytes());
    name.extend_from_slice(topic.as_bytes());
    name
}

/// The topic of a tree name, or `None` for trees that are not event logs.
fn decode_tree_name(name: &[u8]) -> Option<String> {
    let rest = name.strip_prefix(TREE_PREFIX)?;
    let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let topic = rest.get(4..)?;
    if topic.len() != len {
        return None;
    }
    String::from_utf8(topic.to_vec()).ok()
}

fn meta_key(shard: u32) -> [u8; 5] {
    let mut k = [META_TAG; 5];
    k[1..].copy_from_slice(&shard.to_be_bytes());
    k
}

fn entry_key(shard: u32, offset: u64) -> [u8; 13] {
    let mut k = [ENTRY_TAG; 13];
    k[1..5].copy_from_slice(&shard.to_be_bytes());
    k[5..].copy_from_slice(&offset.to_be_bytes());
    k
}

fn epoch_key(shard: u32, epoch: u64) -> [u8; 13] {
    let mut k = [EPOCH_TAG; 13];
    k[1..5].copy_from_slice(&shard.to_be_bytes());
    k[5..].copy_from_slice(&epoch.to_be_bytes());
    k
}

/// `(shard, offset)` of an entry key.
fn decode_entry_key(key: &[u8]) -> Option<(u32, u64)> {
    if key.len() != 13 || key[0] != ENTRY_TAG {
        return None;
    }
    let shard = u32::from_be_bytes(key[1..5].try_into().ok()?);
    let offset = u64::from_be_bytes(key[5..].try_into().ok()?);
    Some((shard, offset))
}

fn entry_crc(key: &[u8], time_ms: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(key);
    h.update(&time_ms.to_be_bytes());
    h.update(payload);
    h.finalize()
}

fn encode_entry(key: &[u8], time_ms: u64, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(ENTRY_HEADER + payload.len());
    v.extend_from_slice(&entry_crc(key, time_ms, payload).to_be_bytes());
    v.extend_from_slice(&time_ms.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// Checks an entry value against its key; returns `(append time, payload)`.
fn decode_entry<'v>(key: &[u8], value: &'v [u8]) -> Result<(u64, &'v [u8]), String> {
    if value.len() < ENTRY_HEADER {
        return Err(format!(
            "value is {} bytes, shorter than the {ENTRY_HEADER}-byte header",
            value.len()
        ));
    }
    let (header, payload) = value.split_at(ENTRY_HEADER);
    let stored = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    let mut t = [0u8; 8];
    t.copy_from_slice(&header[4..12]);
    let time_ms = u64::from_be_bytes(t);
    let actual = entry_crc(key, time_ms, payload);
    if stored != actual {
        return Err(format!(
            "checksum mismatch (stored {stored:#010x}, computed {actual:#010x})"
        ));
    }
    Ok((time_ms, payload))
}

/// Payload bytes of an entry value without checking it (used when deleting).
fn payload_len(value: &[u8]) -> u64 {
    value.len().saturating_sub(ENTRY_HEADER) as u64
}

/// A big-endian `u64` of exactly eight bytes.
fn decode_u64(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(b.try_into().ok()?))
}

/// The per-shard record: offsets and size. Kept in memory and persisted with every change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct ShardMeta {
    next: u64,
    first: u64,
    bytes: u64,
}

impl ShardMeta {
    fn encode(&self) -> [u8; META_LEN] {
        let mut v = [0u8; META_LEN];
        v[..8].copy_from_slice(&self.next.to_be_bytes());
        v[8..16].copy_from_slice(&self.first.to_be_bytes());
        v[16..24].copy_from_slice(&self.bytes.to_be_bytes());
        let crc = crc32fast::hash(&v[..24]);
        v[24..].copy_from_slice(&crc.to_be_bytes());
        v
    }

    fn decode(v: &[u8]) -> Result<Self, String> {
        if v.len() != META_LEN {
            return Err(format!("record is {} bytes, expected {META_LEN}", v.len()));
        }
        let word = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&v[i..i + 8]);
            u64::from_be_bytes(b)
        };
        let stored = u32::from_be_bytes([v[24], v[25], v[26], v[27]]);
        if stored != crc32fast::hash(&v[..24]) {
            return Err("checksum mismatch".to_string());
        }
        let meta = ShardMeta {
            next: word(0),
            first: word(8),
            bytes: word(16),
        };
        if meta.first > meta.next {
            return Err(format!(
                "first offset {} is past next offset {}",
                meta.first, meta.next
            ));
        }
        Ok(meta)
    }
}

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

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// How far the disk is behind, shared by appenders and the background flusher
/// ([`Durability::Batch`] only).
///
/// sled's own `flush_every_ms` flusher is not used: it applies no backpressure, so a fast
/// appender can run seconds ahead of the disk (measured: 7 s of unflushed single-entry appends
/// after a 2 s burst). Instead our flusher records the start time of its last completed flush
/// (`durable_us`, microseconds since `epoch`), and an append that finds the disk more than
/// `max_lag` behind flushes itself before returning. That makes the promised loss window real.
struct FlushClock {
    epoch: Instant,
    durable_us: AtomicU64,
    stop: AtomicBool,
}

impl FlushClock {
    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    /// Flushes and records that everything appended before the call is on disk.
    fn flush(&self, db: &sled::Db) -> sled::Result<()> {
        let started = self.now_us();
        db.flush()?;
        self.durable_us.fetch_max(started, Ordering::AcqRel);
        Ok(())
    }
}

/// The background flusher of [`Durability::Batch`]; stopped and joined on drop.
struct Flusher {
    clock: Arc<FlushClock>,
    max_lag_us: u64,
    thread: Option<JoinHandle<()>>,
}

impl Flusher {
    fn start(db: sled::Db, interval_ms: u64) -> Result<Flusher, StorageError> {
        let clock = Arc::new(FlushClock {
            epoch: Instant::now(),
            durable_us: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let interval = Duration::from_millis(interval_ms);
        let c = clock.clone();
        let thread = std::thread::Builder::new()
            .name("starling-log-flush".to_string())
            .spawn(move || {
                while !c.stop.load(Ordering::Acquire) {
                    let started = Instant::now();
                    if let Err(e) = c.flush(&db) {
                        tracing::error!(error = %e, "background flush of the event log failed");
                    }
                    if let Some(rest) = interval.checked_sub(started.elapsed()) {
                        std::thread::park_timeout(rest);
                    }
                }
            })
            .map_err(|e| StorageError::backend("starting the event log flusher", e))?;
        Ok(Flusher {
            clock,
            max_lag_us: 2 * interval_ms * 1000,
            thread: Some(thread),
        })
    }

    /// Backpressure: flush in the caller when the disk is more than `max_lag` behind.
    fn catch_up(&self, db: &sled::Db) -> Result<(), String> {
        let c = &self.clock;
        if c.now_us()
            .saturating_sub(c.durable_us.load(Ordering::Acquire))
            > self.max_lag_us
        {
            let started = c.now_us();
            bounded_flush(db)?;
            c.durable_us.fetch_max(started, Ordering::AcqRel);
        }
        Ok(())
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.clock.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// Flushes on a helper thread and waits at most [`FLUSH_TIMEOUT`]: after an I/O error sled's
/// flush can block forever (seen with a full disk), and a writer must get an error instead.
/// A flush that times out keeps its thread; the log is then marked failed and used no more.
fn bounded_flush(db: &sled::Db) -> Result<(), String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let db = db.clone();
    std::thread::Builder::new()
        .name("starling-log-sync".to_string())
        .spawn(move || {
            let _ = tx.send(db.flush().map(|_| ()));
        })
        .map_err(|e| format!("cannot start a flush: {e}"))?;
    match rx.recv_timeout(FLUSH_TIMEOUT) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "a flush did not finish within {} s",
            FLUSH_TIMEOUT.as_secs()
        )),
    }
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

    /// Removes the oldest entries of a shard while `remove(offset, key, value)` says so, in
    /// atomic chunks that also update the shard record. Returns `(entries, bytes)` removed.
    fn remove_front(
        &self,
        t: &TopicState,
        topic: &str,
        shard: u32,
        meta: &mut ShardMeta,
        mut remove: impl FnMut(u64, &[u8], &[u8]) -> Result<bool, StorageError>,
    ) -> Result<(u64, u64), StorageError> {
        let (mut entries, mut bytes) = (0u64, 0u64);
        loop {
            let mut batch = sled::Batch::default();
            let mut next = *meta;
            let mut stop = false;
            let mut n = 0usize;
            let range = entry_key(shard, meta.first)..entry_key(shard, meta.next);
            for item in t.tree.range(range) {
                let (k, v) = item.map_err(|e| {
                    StorageError::backend(
                        format!("scanning topic {topic:?} shard {shard} for truncation"),
                        e,
                    )
                })?;
                if decode_entry_key(&k) != Some((shard, next.first)) {
                    return Err(StorageError::Corrupt {
                        topic: topic.to_string(),
                        shard,
                        offset: next.first,
                        reason: "entry missing from the stored range".to_string(),
                    });
                }
                if !remove(next.first, &k, &v)? {
                    stop = true;
                    break;
                }
                batch.remove(k);
                next.first += 1;
                next.bytes = next.bytes.saturating_sub(payload_len(&v));
                n += 1;
                if n == TRUNCATE_CHUNK {
                    break;
                }
            }
            if n == 0 {
                break;
            }
            batch.insert(&meta_key(shard)[..], &next.encode()[..]);
            t.tree.apply_batch(batch).map_err(|e| {
                StorageError::backend(format!("truncating topic {topic:?} shard {shard}"), e)
            })?;
            entries += next.first - meta.first;
            bytes += meta.bytes - next.bytes;
            *meta = next;
            if stop || n < TRUNCATE_CHUNK {
                break;
            }
        }
        if entries > 0 {
            self.sync_if_required(|| format!("flushing truncation of {topic:?} shard {shard}"))?;
        }
        Ok((entries, bytes))
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

/// File in the log directory with the end offset of every shard at the last recorded
/// flush. sled recovers a damaged file by silently going back to an earlier consistent
/// point; comparing with these marks on open turns that into an error. Written at most every
/// [`RECORD_EVERY`], so damage confined to the writes of the last interval is not detected.
const MARKS_FILE: &str = "durable.marks";
const MARKS_MAGIC: &[u8; 8] = b"STRLMRK1";
/// How often the flushed ends are recorded.
const RECORD_EVERY: Duration = Duration::from_millis(200);

type Marks = Vec<(String, u32, u64)>;

fn durable_marks(topics: &RwLock<HashMap<String, Arc<TopicState>>>) -> Marks {
    let mut out = Vec::new();
    for (name, t) in rlock(topics).iter() {
        for (shard, meta) in rlock(&t.shards).iter() {
            out.push((name.clone(), *shard, rlock(meta).next));
        }
    }
    out.sort();
    out
}

fn write_marks(dir: &Path, marks: &Marks) -> std::io::Result<()> {
    use std::io::Write;
    let mut body = Vec::with_capacity(16 + marks.len() * 24);
    body.extend_from_slice(MARKS_MAGIC);
    body.extend_from_slice(&(marks.len() as u32).to_be_bytes());
    for (topic, shard, next) in marks {
        body.extend_from_slice(&(topic.len() as u32).to_be_bytes());
        body.extend_from_slice(topic.as_bytes());
        body.extend_from_slice(&shard.to_be_bytes());
        body.extend_from_slice(&next.to_be_bytes());
    }
    let crc = crc32fast::hash(&body);
    body.extend_from_slice(&crc.to_be_bytes());
    let tmp = dir.join(format!("{MARKS_FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&body)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, dir.join(MARKS_FILE))?;
    std::fs::File::open(dir)?.sync_all()
}

fn read_marks(dir: &Path) -> Result<Option<Marks>, String> {
    let bytes = match std::fs::read(dir.join(MARKS_FILE)) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let bad = |why: &str| format!("{MARKS_FILE} is damaged ({why})");
    if bytes.len() < 16 || &bytes[..8] != MARKS_MAGIC {
        return Err(bad("no header"));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body) != u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]) {
        return Err(bad("checksum mismatch"));
    }
    let mut at = 8;
    let mut take = |n: usize| -> Result<&[u8], String> {
        let s = body.get(at..at + n).ok_or_else(|| bad("truncated"))?;
        at += n;
        Ok(s)
    };
    let word = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let count = word(take(4)?) as usize;
    let mut out = Vec::with_capacity(count.min(1 << 16));
    for _ in 0..count {
        let len = word(take(4)?) as usize;
        let topic = String::from_utf8(take(len)?.to_vec()).map_err(|_| bad("topic not UTF-8"))?;
        let shard = word(take(4)?);
        let mut n = [0u8; 8];
        n.copy_from_slice(take(8)?);
        out.push((topic, shard, u64::from_be_bytes(n)));
    }
    Ok(Some(out))
}

/// Refuses to open a log that ends before its recorded flushed ends.
fn check_durable_marks(
    dir: &Path,
    topics: &HashMap<String, Arc<TopicState>>,
) -> Result<(), StorageError> {
    let marks = read_marks(dir).map_err(|reason| StorageError::CorruptMeta {
        topic: String::new(),
        shard: u32::MAX,
        reason,
    })?;
    for (topic, shard, durable) in marks.unwrap_or_default() {
        let have = topics
            .get(&topic)
            .and_then(|t| rlock(&t.shards).get(&shard).map(|m| rlock(m).next))
            .unwrap_or(0);
        if have < durable {
            return Err(StorageError::Lost {
                topic,
                shard,
                have,
                durable,
            });
        }
    }
    Ok(())
}

/// Records the flushed ends every [`RECORD_EVERY`]: takes the ends, flushes, then writes
/// them (everything below them is on disk by then). Stopped and joined on drop.
struct Recorder {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Recorder {
    fn start(
        db: sled::Db,
        dir: PathBuf,
        topics: Arc<RwLock<HashMap<String, Arc<TopicState>>>>,
        lock: Arc<Mutex<()>>,
    ) -> Result<Recorder, StorageError> {
        let stop = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("starling-log-marks".to_string())
            .spawn(move || {
                let mut last: Option<Marks> = None;
                while !s.load(Ordering::Acquire) {
                    std::thread::park_timeout(RECORD_EVERY);
                    let _held = lock.lock().unwrap_or_else(PoisonError::into_inner);
                    let marks = durable_marks(&topics);
                    if last.as_ref() == Some(&marks) {
                        continue;
                    }
                    if db.flush().is_err() {
                        continue;
                    }
                    match write_marks(&dir, &marks) {
                        Ok(()) => last = Some(marks),
                        Err(e) => tracing::warn!(error = %e, "recording the event log's flushed ends failed"),
                    }
                }
            })
            .map_err(|e| StorageError::backend("starting the event log recorder", e))?;
        Ok(Recorder {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
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
        let o = &self.options;
        let entries: usize = batches.iter().map(|(_, p)| p.len()).sum();
        if entries > o.max_batch_entries {
            return Err(StorageError::TooLarge {
                what: "batch entries",
                size: entries as u64,
                limit: o.max_batch_entries as u64,
            });
        }
        let mut total = 0u64;
        for p in batches.iter().flat_map(|(_, p)| p) {
            if p.len() > o.max_payload_bytes {
                return Err(StorageError::TooLarge {
                    what: "payload bytes",
                    size: p.len() as u64,
                    limit: o.max_payload_bytes as u64,
                });
            }
            total += p.len() as u64;
        }
        if total > o.max_batch_bytes as u64 {
            return Err(StorageError::TooLarge {
                what: "batch bytes",
                size: total,
                limit: o.max_batch_bytes as u64,
            });
        }
        if entries == 0 {
            return batches
                .iter()
                .map(|(shard, _)| {
                    let next = self.next_offset(topic, *shard)?;
                    Ok(next..next)
                })
                .collect();
        }

        self.check_writable()?;
        let t = self.topic_or_create(topic)?;
        // Shard records are locked in shard order, so concurrent multi-shard appends cannot
        // deadlock; a shard named twice is locked once and its entries follow each other.
        let mut ids: Vec<u32> = batches.iter().map(|(s, _)| *s).collect();
        ids.sort_unstable();
        ids.dedup();
        let handles: Vec<ShardHandle> = ids.iter().map(|s| Self::shard_or_create(&t, *s)).collect();
        let mut guards: Vec<RwLockWriteGuard<'_, ShardMeta>> =
            handles.iter().map(|h| wlock(h)).collect();
        let mut new: Vec<ShardMeta> = guards.iter().map(|g| **g).collect();
        let time_ms = now_ms();
        let mut batch = sled::Batch::default();
        let mut ranges = Vec::with_capacity(batches.len());
        for (shard, payloads) in batches {
            let i = ids.binary_search(shard).unwrap_or(0);
            let meta = &mut new[i];
            let start = meta.next;
            for p in payloads {
                let key = entry_key(*shard, meta.next);
                batch.insert(&key[..], encode_entry(&key, time_ms, p));
                meta.next += 1;
                meta.bytes += p.len() as u64;
            }
            ranges.push(start..meta.next);
        }
        for (shard, meta) in ids.iter().zip(&new) {
            batch.insert(&meta_key(*shard)[..], &meta.encode()[..]);
        }
        t.tree.apply_batch(batch).map_err(|e| {
            StorageError::backend(format!("appending to topic {topic:?} shards {ids:?}"), e)
        })?;
        // The batch is visible from here on, so the records must follow even if the flush
        // fails.
        for (g, meta) in guards.iter_mut().zip(&new) {
            **g = *meta;
        }
        drop(guards);
        self.sync_if_required(|| format!("flushing append to topic {topic:?}"))?;
        if let Some(f) = &self.flusher {
            f.catch_up(&self.db).map_err(|reason| {
                self.fail(
                    format!("catching up with the disk after appending to {topic:?}"),
                    reason,
                )
            })?;
        }
        tracing::trace!(topic, shards = ids.len(), entries, "appended");
        Ok(ranges)
    }

    fn read(
        &self,
        topic: &str,
        shard: u32,
        from: u64,
        max: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StorageError> {
        let Some(t) = self.topic(topic) else {
            return Ok(Vec::new());
        };
        let Some(handle) = Self::shard(&t, shard) else {
            return Ok(Vec::new());
        };
        let meta = rlock(&handle);
        let start = from.max(meta.first);
        if start >= meta.next || max == 0 {
            return Ok(Vec::new());
        }
        let end = meta.next.min(start.saturating_add(max as u64));
        let corrupt = |offset, reason: String| {
            tracing::warn!(topic, shard, offset, %reason, "corrupt event log entry");
            StorageError::Corrupt {
                topic: topic.to_string(),
                shard,
                offset,
                reason,
            }
        };
        let mut out = Vec::with_capacity((end - start).min(4096) as usize);
        let mut expected = start;
        for item in t.tree.range(entry_key(shard, start)..entry_key(shard, end)) {
            let (k, v) = item.map_err(|e| {
                StorageError::backend(format!("reading topic {topic:?} shard {shard}"), e)
            })?;
            if decode_entry_key(&k) != Some((shard, expected)) {
                return Err(corrupt(expected, "entry missing".to_string()));
            }
            let (_, payload) = decode_entry(&k, &v).map_err(|r| corrupt(expected, r))?;
            out.push((expected, payload.to_vec()));
            expected += 1;
        }
        if expected != end {
            return Err(corrupt(expected, "entry missing".to_string()));
        }
        Ok(out)
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
        let Some(t) = self.topic(topic) else {
            return Ok(0);
        };
        let Some(handle) = Self::shard(&t, shard) else {
            return Ok(0);
        };
        let mut meta = wlock(&handle);
        let cut = offset.min(meta.next);
        if cut <= meta.first {
            return Ok(0);
        }
        let (entries, _) = self.remove_front(&t, topic, shard, &mut meta, |o, _, _| Ok(o < cut))?;
        tracing::debug!(topic, shard, cut, entries, "event log truncated");
        Ok(entries)
    }

    fn truncate_from(&self, topic: &str, shard: u32, offset: u64) -> Result<u64, StorageError> {
        let Some(t) = self.topic(topic) else {
            return Ok(0);
        };
        let Some(handle) = Self::shard(&t, shard) else {
            return Ok(0);
        };
        self.check_writable()?;
        let _held = self
            .marks_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if offset >= rlock(&handle).next {
            return Ok(0);
        }
        let backend = |e| StorageError::backend(format!("truncating {topic:?} shard {shard}"), e);
        // The recorded end goes down first: a crash part-way must not leave a recorded end
        // above what the log holds. (Taken before the shard's lock, which it reads.)
        let mut marks = durable_marks(&self.topics);
        let mut meta = wlock(&handle);
        for m in &mut marks {
            if m.0 == topic && m.1 == shard {
                m.2 = m.2.min(offset);
            }
        }
        write_marks(&self.dir, &marks).map_err(|e| {
            StorageError::backend(format!("recording the end of {topic:?} shard {shard}"), e)
        })?;
        let removed = meta.next - offset.max(meta.first);
        // From the end backwards, in atomic chunks that each leave a consistent record.
        while meta.next > offset && meta.next > meta.first {
            let low = meta
                .next
                .saturating_sub(TRUNCATE_CHUNK as u64)
                .max(offset)
                .max(meta.first);
            let mut batch = sled::Batch::default();
            let mut next = *meta;
            for item in t
                .tree
                .range(entry_key(shard, low)..entry_key(shard, meta.next))
            {
                let (k, v) = item.map_err(backend)?;
                next.bytes = next.bytes.saturating_sub(payload_len(&v));
                batch.remove(k);
            }
            next.next = low;
            batch.insert(&meta_key(shard)[..], &next.encode()[..]);
            t.tree.apply_batch(batch).map_err(backend)?;
            *meta = next;
        }
        if offset < meta.first {
            let next = ShardMeta {
                next: offset,
                first: offset,
                bytes: 0,
            };
            t.tree
                .insert(&meta_key(shard)[..], &next.encode()[..])
                .map_err(backend)?;
            *meta = next;
        }
        for item in t.tree.scan_prefix(&epoch_key(shard, 0)[..5]) {
            let (k, v) = item.map_err(backend)?;
            if decode_u64(&v).is_some_and(|start| start >= offset) {
                t.tree.remove(k).map_err(backend)?;
            }
        }
        bounded_flush(&self.db).map_err(|reason| {
            self.fail(
                format!("flushing truncation of {topic:?} shard {shard}"),
                reason,
            )
        })?;
        tracing::info!(
            topic,
            shard,
            from = offset,
            removed,
            "event log suffix removed"
        );
        Ok(removed)
    }

    fn epoch_marks(&self, topic: &str, shard: u32) -> Result<Vec<(u64, u64)>, StorageError> {
        let Some(t) = self.topic(topic) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for item in t.tree.scan_prefix(&epoch_key(shard, 0)[..5]) {
            let (k, v) = item.map_err(|e| {
                StorageError::backend(format!("reading epochs of {topic:?} shard {shard}"), e)
            })?;
            if let (Some(epoch), Some(start)) = (k.get(5..).and_then(decode_u64), decode_u64(&v)) {
                out.push((epoch, start));
            }
        }
        Ok(out)
    }

    fn mark_epoch(
        &self,
        topic: &str,
        shard: u32,
        epoch: u64,
        start: u64,
    ) -> Result<(), StorageError> {
        if self
            .epoch_marks(topic, shard)?
            .last()
            .is_some_and(|(e, _)| *e >= epoch)
        {
            return Ok(());
        }
        self.check_writable()?;
        let t = self.topic_or_create(topic)?;
        t.tree
            .insert(&epoch_key(shard, epoch)[..], &start.to_be_bytes()[..])
            .map_err(|e| {
                StorageError::backend(
                    format!("marking epoch {epoch} of {topic:?} shard {shard}"),
                    e,
                )
            })?;
        self.sync_if_required(|| format!("flushing an epoch mark of {topic:?}"))
    }

    fn apply_retention(&self, now_ms: u64) -> Result<RetentionReport, StorageError> {
        let retention = self.options.retention;
        let mut report = RetentionReport::default();
        if retention.max_age_ms.is_none() && retention.max_bytes_per_shard.is_none() {
            return Ok(report);
        }
        let topics: Vec<(String, Arc<TopicState>)> = rlock(&self.topics)
            .iter()
            .map(|(n, t)| (n.clone(), t.clone()))
            .collect();
        for (topic, t) in topics {
            let shards: Vec<(u32, ShardHandle)> = rlock(&t.shards)
                .iter()
                .map(|(id, s)| (*id, s.clone()))
                .collect();
            for (shard, handle) in shards {
                report.shards_visited += 1;
                let mut meta = wlock(&handle);
                let mut remaining = meta.bytes;
                let (entries, bytes) =
                    self.remove_front(&t, &topic, shard, &mut meta, |offset, k, v| {
                        let over = retention.max_bytes_per_shard.is_some_and(|m| remaining > m);
                        let expired = match retention.max_age_ms {
                            None => false,
                            Some(age) => {
                                let (time_ms, _) =
                                    decode_entry(k, v).map_err(|reason| StorageError::Corrupt {
                                        topic: topic.clone(),
                                        shard,
                                        offset,
                                        reason,
                                    })?;
                                now_ms.saturating_sub(time_ms) > age
                            }
                        };
                        if over || expired {
                            remaining = remaining.saturating_sub(payload_len(v));
                            Ok(true)
                        } else {
                            Ok(false)
                        }
                    })?;
                if entries > 0 {
                    tracing::debug!(topic = %topic, shard, entries, bytes, "retention applied");
                }
                report.entries_removed += entries;
                report.bytes_removed += bytes;
            }
        }
        Ok(report)
    }

    fn flush(&self) -> Result<(), StorageError> {
        match &self.flusher {
            Some(f) => f.clock.flush(&self.db),
            None => self.db.flush().map(|_| ()),
        }
        .map_err(|e| StorageError::backend("flushing the event log", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sync_options() -> LogOptions {
        LogOptions {
            durability: Durability::Sync,
            ..LogOptions::default()
        }
    }

    #[test]
    fn tree_names_are_length_prefixed_and_round_trip() {
        for topic in ["", "a", "a/b", "ab", "x\u{0}y", "ünïcode"] {
            assert_eq!(decode_tree_name(&tree_name(topic)).as_deref(), Some(topic));
        }
        // "a" + "b/c" and "ab" + "/c" cannot collide, unlike plain concatenation.
        assert_ne!(tree_name("a"), tree_name("ab"));
        assert_eq!(decode_tree_name(b"__sled__default"), None);
        let mut bad = tree_name("abc");
        bad.pop();
        assert_eq!(decode_tree_name(&bad), None);
    }

    #[test]
    fn keys_sort_in_shard_then_offset_order() {
        let keys = [
            entry_key(0, 0),
            entry_key(0, 1),
            entry_key(0, 255),
            entry_key(0, 256),
            entry_key(0, u64::MAX),
            entry_key(1, 0),
            entry_key(u32::MAX, 0),
        ];
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        assert!(meta_key(u32::MAX)[..] < entry_key(0, 0)[..]);
        assert_eq!(decode_entry_key(&entry_key(7, 42)), Some((7, 42)));
        assert_eq!(decode_entry_key(&meta_key(7)), None);
    }

    #[test]
    fn entry_check_detects_damage_and_misplacement() {
        let key = entry_key(3, 9);
        let v = encode_entry(&key, 1234, b"hello");
        assert_eq!(decode_entry(&key, &v), Ok((1234, &b"hello"[..])));
        let mut flipped = v.clone();
        flipped[ENTRY_HEADER + 1] ^= 0x40;
        assert!(decode_entry(&key, &flipped).is_err());
        assert!(decode_entry(&entry_key(3, 10), &v).is_err());
        assert!(decode_entry(&key, &v[..5]).is_err());
    }

    #[test]
    fn shard_record_round_trips_and_is_checked() {
        let m = ShardMeta {
            next: 10,
            first: 4,
            bytes: 99,
        };
        assert_eq!(ShardMeta::decode(&m.encode()), Ok(m));
        let mut bad = m.encode();
        bad[3] ^= 1;
        assert!(ShardMeta::decode(&bad).is_err());
        assert!(ShardMeta::decode(&bad[..20]).is_err());
    }

    #[test]
    fn a_bad_value_under_a_valid_key_is_reported_as_corrupt_with_its_offset() {
        let dir = tempfile::tempdir().unwrap();
        let log = SledLog::open(dir.path(), sync_options()).unwrap();
        let payloads: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 20]).collect();
        let refs: Vec<&[u8]> = payloads.iter().map(|p| &p[..]).collect();
        log.append("orders", 2, &refs).unwrap();

        let t = log.topic("orders").unwrap();
        let key = entry_key(2, 3);
        let mut value = t.tree.get(key).unwrap().unwrap().to_vec();
        value[ENTRY_HEADER + 5] ^= 0xff;
        t.tree.insert(key, value).unwrap();

        assert_eq!(log.read("orders", 2, 0, 3).unwrap().len(), 3);
        match log.read("orders", 2, 0, 10) {
            Err(StorageError::Corrupt {
                topic,
                shard,
                offset,
                reason,
            }) => {
                assert_eq!((topic.as_str(), shard, offset), ("orders", 2, 3));
                assert!(reason.contains("checksum"), "{reason}");
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
        assert_eq!(log.read("orders", 2, 4, 10).unwrap().len(), 1);

        // A short value and a missing entry are reported the same way.
        t.tree.insert(entry_key(2, 1), &b"xy"[..]).unwrap();
        assert!(matches!(
            log.read("orders", 2, 1, 1),
            Err(StorageError::Corrupt { offset: 1, .. })
        ));
        t.tree.remove(entry_key(2, 4)).unwrap();
        assert!(matches!(
            log.read("orders", 2, 4, 1),
            Err(StorageError::Corrupt { offset: 4, .. })
        ));

        // truncate_before does not check entries, so it can cut past the damage.
        assert_eq!(log.truncate_before("orders", 2, 4).unwrap(), 4);
        assert_eq!(log.first_offset("orders", 2).unwrap(), 4);
    }

    #[test]
    fn the_background_flusher_keeps_the_disk_close_behind() {
        let dir = tempfile::tempdir().unwrap();
        let log = SledLog::open(
            dir.path(),
            LogOptions {
                durability: Durability::Batch { interval_ms: 5 },
                ..LogOptions::default()
            },
        )
        .unwrap();
        let flusher = log.flusher.as_ref().unwrap();
        log.append("f", 0, &[b"x"]).unwrap();
        let appended = flusher.clock.now_us();
        let deadline = Instant::now() + Duration::from_secs(10);
        while flusher.clock.durable_us.load(Ordering::Acquire) < appended {
            assert!(
                Instant::now() < deadline,
                "background flush never completed"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        // Many small appends never leave the disk more than the window (plus one flush) behind.
        for i in 0..2000u32 {
            log.append("f", 0, &[&i.to_be_bytes()]).unwrap();
        }
        drop(log);
        let log = SledLog::open(dir.path(), sync_options()).unwrap();
        assert_eq!(log.next_offset("f", 0).unwrap(), 2001);
    }

    #[test]
    fn a_damaged_shard_record_is_reported_on_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = SledLog::open(dir.path(), sync_options()).unwrap();
            log.append("t", 5, &[b"x"]).unwrap();
            let t = log.topic("t").unwrap();
            t.tree.insert(meta_key(5), &b"garbage"[..]).unwrap();
            log.flush().unwrap();
        }
        match SledLog::open(dir.path(), sync_options()) {
            Err(StorageError::CorruptMeta { topic, shard, .. }) => {
                assert_eq!((topic.as_str(), shard), ("t", 5));
            }
            other => panic!("expected CorruptMeta, got {other:?}"),
        }
    }

    #[test]
    fn a_torn_tail_is_cut_and_a_hole_in_the_middle_stays_an_error() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = SledLog::open(dir.path(), sync_options()).unwrap();
            log.append("t", 1, &[b"a", b"b", b"c", b"d", b"e"]).unwrap();
            log.append("t", 2, &[b"a", b"b", b"c"]).unwrap();
            let t = log.topic("t").unwrap();
            // Shard 1 lost its last two entries (as sled's blob recovery can do); shard 2 lost
            // one in the middle.
            t.tree.remove(entry_key(1, 3)).unwrap();
            t.tree.remove(entry_key(1, 4)).unwrap();
            t.tree.remove(entry_key(2, 1)).unwrap();
            log.flush().unwrap();
        }
        // A clean close recorded the ends: shorter now is a loss, refused.
        assert!(matches!(
            SledLog::open(dir.path(), sync_options()),
            Err(StorageError::Lost {
                shard: 1,
                have: 3,
                durable: 5,
                ..
            })
        ));
        // After a crash the marks can predate the failed write: then the tail is cut.
        std::fs::remove_file(dir.path().join(MARKS_FILE)).unwrap();
        let log = SledLog::open(dir.path(), sync_options()).unwrap();
        assert_eq!(log.next_offset("t", 1).unwrap(), 3);
        let read: Vec<Vec<u8>> = log
            .read("t", 1, 0, 10)
            .unwrap()
            .into_iter()
            .map(|e| e.1)
            .collect();
        assert_eq!(read, [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
        assert_eq!(log.append("t", 1, &[b"new"]).unwrap(), 3..4);
        assert_eq!(log.next_offset("t", 2).unwrap(), 3);
        assert!(matches!(
            log.read("t", 2, 0, 10),
            Err(StorageError::Corrupt { offset: 1, .. })
        ));
    }
}
