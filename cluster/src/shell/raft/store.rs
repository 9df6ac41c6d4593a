//! The Raft storage of one node: log, vote and state-machine snapshot on disk.
//!
//! Raft's safety rests on a node never forgetting a vote it gave or an entry it acknowledged,
//! so both are fsynced before openraft is told they are stored. The layout under the node's
//! Raft directory is deliberately plain:
//!
//! - `identity`: node id, cluster id and shard count, written on first start, checked on
//!   every later one (a directory never silently changes cluster);
//! - `vote`, `purged`, `committed`, `snapshot`: one record each, replaced atomically
//!   (write `*.tmp`, fsync, rename, fsync the directory);
//! - `log`: the entries after the purge point, appended as records.
//!
//! A record is `len: u32 LE | !len: u32 LE | crc32(payload): u32 LE | payload (JSON)`. The
//! complemented length lets a damaged length be told from a write cut short by a crash: a
//! record whose payload runs past the end of `log` was never acknowledged and is dropped,
//! anything else that does not check out is reported as damage, never guessed around.
//!
//! The entries between the purge point and the end are also kept in memory (the log is
//! bounded by snapshots, see `RaftSettings::snapshot_every`), so reads never touch the disk.
//! The state machine itself (`ClusterState`) lives in memory and is rebuilt on start from the
//! snapshot plus the committed entries after it.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Cursor, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{LogState, Snapshot};
use openraft::{
    AnyError, BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftLogReader,
    RaftSnapshotBuilder, RaftStorage, SnapshotMeta, StorageError, StorageIOError, StoredMembership,
    Vote,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::sync::watch;

use super::TypeConfig;
use crate::core::state::{ClusterState, Outcome};
use crate::core::table::NodeId;

/// The largest record accepted when reading back a file: far above any real entry or
/// snapshot, low enough that a damaged length cannot make the node allocate gigabytes.
const MAX_RECORD: usize = 256 << 20;
const HEADER: usize = 12;

/// Why a node's Raft directory could not be opened or written. Each message names the file
/// and says what the operator can do, because these errors stop a node from starting.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The file system refused an operation.
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A file's content does not check out (bad checksum, impossible length, unreadable
    /// JSON, entries out of order).
    #[error(
        "the Raft file {path} is damaged at byte {offset}: {reason}. The node cannot trust \
         its Raft state: restore the directory from a backup, or delete it so that the node \
         rejoins the cluster as a new member"
    )]
    Damaged {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    /// The directory holds the Raft state of another cluster (or the same name with another
    /// shard count, which can never change for a cluster).
    #[error(
        "{dir} holds the Raft state of cluster `{found_cluster}` with {found_shards} shards, \
         but this node was started for cluster `{wanted_cluster}` with {wanted_shards} shards; \
         start it with the cluster id and shard count it was created with, or give it another \
         data directory"
    )]
    ClusterMismatch {
        dir: PathBuf,
        found_cluster: String,
        found_shards: u32,
        wanted_cluster: String,
        wanted_shards: u32,
    },
    /// The directory was created by another node id: two nodes must never share a log.
    #[error("{dir} holds the Raft state of node {found}, not of node {wanted}")]
    NodeMismatch {
        dir: PathBuf,
        found: NodeId,
        wanted: NodeId,
    },
    /// The shard count is invalid (zero).
    #[error("a cluster needs at least one shard")]
    NoShards,
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Appends one framed record to `out`.
fn encode_record(payload: &[u8], out: &mut Vec<u8>) {
    let len = payload.len() as u32;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&(!len).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

enum Decoded<'a> {
    /// A complete record and the offset just past it.
    Record(&'a [u8], usize),
    /// The bytes from `at` on are a record cut short (a crash during an append).
    Torn,
    End,
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[at..at + 4]);
    u32::from_le_bytes(b)
}

/// Reads the record at `at`; `Err` is the reason it is damaged.
fn decode_record(buf: &[u8], at: usize) -> Result<Decoded<'_>, String> {
    let rest = buf.len() - at;
    if rest == 0 {
        return Ok(Decoded::End);
    }
    if rest < HEADER {
        return Ok(Decoded::Torn);
    }
    let len = u32_at(buf, at);
    if !len != u32_at(buf, at + 4) {
        return Err("the record length does not match its check".into());
    }
    let len = len as usize;
    if len > MAX_RECORD {
        return Err(format!("a record claims {len} bytes"));
    }
    if rest - HEADER < len {
        return Ok(Decoded::Torn);
    }
    let payload = &buf[at + HEADER..at + HEADER + len];
    if crc32fast::hash(payload) != u32_at(buf, at + 8) {
        return Err("checksum mismatch".into());
    }
    Ok(Decoded::Record(payload, at + HEADER + len))
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("sync directory", dir))
}

/// Replaces `dir/name` with the given records; durable on return if `sync`.
fn write_records(dir: &Path, name: &str, payloads: &[&[u8]], sync: bool) -> Result<(), StoreError> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let mut buf = Vec::with_capacity(payloads.iter().map(|p| p.len() + HEADER).sum());
    for p in payloads {
        encode_record(p, &mut buf);
    }
    let mut f = File::create(&tmp).map_err(io_err("create", &tmp))?;
    f.write_all(&buf).map_err(io_err("write", &tmp))?;
    if sync {
        f.sync_all().map_err(io_err("sync", &tmp))?;
    }
    drop(f);
    fs::rename(&tmp, &path).map_err(io_err("rename into place", &path))?;
    if sync {
        sync_dir(dir)?;
    }
    Ok(())
}

fn encode_json<T: Serialize>(path: &Path, value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Io {
        action: "encode",
        path: path.to_path_buf(),
        source: io::Error::other(e),
    })
}

/// Replaces `dir/name` with one JSON record holding `value`.
fn write_atomic<T: Serialize>(
    dir: &Path,
    name: &str,
    value: &T,
    sync: bool,
) -> Result<(), StoreError> {
    let json = encode_json(&dir.join(name), value)?;
    write_records(dir, name, &[&json], sync)
}

/// Records read back from a file, each with the offset of its payload.
type Records = Vec<(usize, Vec<u8>)>;

/// Reads a file written by [`write_records`] that must hold exactly `count` records:
/// each with its offset. `None` if the file does not exist.
fn read_records(dir: &Path, name: &str, count: usize) -> Result<Option<Records>, StoreError> {
    let path = dir.join(name);
    let buf = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("read", &path)(e)),
    };
    let mut out = Vec::with_capacity(count);
    let mut at = 0;
    while out.len() < count {
        match decode_record(&buf, at).map_err(|reason| damaged(&path, at, reason))? {
            Decoded::Record(payload, next) => {
                out.push((at + HEADER, payload.to_vec()));
                at = next;
            }
            Decoded::Torn | Decoded::End => {
                return Err(damaged(&path, at, "the file is cut short".into()))
            }
        }
    }
    if at != buf.len() {
        return Err(damaged(
            &path,
            at,
            "unexpected bytes after the last record".into(),
        ));
    }
    Ok(Some(out))
}

fn damaged(path: &Path, offset: usize, reason: String) -> StoreError {
    StoreError::Damaged {
        path: path.to_path_buf(),
        offset: offset as u64,
        reason,
    }
}

/// Reads a file written by [`write_atomic`]; `None` if it does not exist.
fn read_atomic<T: DeserializeOwned>(dir: &Path, name: &str) -> Result<Option<T>, StoreError> {
    let Some(records) = read_records(dir, name, 1)? else {
        return Ok(None);
    };
    let (offset, payload) = &records[0];
    serde_json::from_slice(payload)
        .map(Some)
        .map_err(|e| damaged(&dir.join(name), *offset, format!("unreadable content: {e}")))
}

/// What a directory belongs to.
#[derive(Debug, Serialize, Deserialize)]
struct Identity {
    node: NodeId,
    cluster_id: String,
    shards: u32,
}

/// The persisted snapshot: the state machine at `meta.last_log_id`. On disk (and as the
/// snapshot data sent to followers) the state is bincode, not JSON: `ClusterState` has maps
/// keyed by tuples, which JSON cannot represent. The file holds two records: the meta as
/// JSON, then the state.
#[derive(Clone, Debug)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, BasicNode>,
    state: ClusterState,
}

fn encode_state(state: &ClusterState) -> Result<Vec<u8>, bincode::Error> {
    bincode::serialize(state)
}

fn decode_state(bytes: &[u8]) -> Result<ClusterState, bincode::Error> {
    use bincode::Options;
    // The same encoding as `bincode::serialize`, with a size limit so that a hostile
    // snapshot cannot make the node allocate without bound.
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .allow_trailing_bytes()
        .with_limit(MAX_RECORD as u64)
        .deserialize(bytes)
}

impl StoredSnapshot {
    fn to_snapshot(&self) -> Result<Snapshot<TypeConfig>, bincode::Error> {
        Ok(Snapshot {
            meta: self.meta.clone(),
            snapshot: Box::new(Cursor::new(encode_state(&self.state)?)),
        })
    }

    fn read_error(&self, e: bincode::Error) -> StorageError<NodeId> {
        StorageIOError::read_snapshot(Some(self.meta.signature()), AnyError::new(&e)).into()
    }

    fn save(&self, dir: &Path) -> Result<(), StoreError> {
        let path = dir.join("snapshot");
        let meta = encode_json(&path, &self.meta)?;
        let state = encode_state(&self.state).map_err(|e| StoreError::Io {
            action: "encode",
            path,
            source: io::Error::other(e),
        })?;
        write_records(dir, "snapshot", &[&meta, &state], true)
    }

    fn load(dir: &Path) -> Result<Option<StoredSnapshot>, StoreError> {
        let path = dir.join("snapshot");
        let Some(records) = read_records(dir, "snapshot", 2)? else {
            return Ok(None);
        };
        let meta = serde_json::from_slice(&records[0].1)
            .map_err(|e| damaged(&path, records[0].0, format!("unreadable meta: {e}")))?;
        let state = decode_state(&records[1].1)
            .map_err(|e| damaged(&path, records[1].0, format!("unreadable state: {e}")))?;
        Ok(Some(StoredSnapshot { meta, state }))
    }
}

/// The log file and its entries in memory.
struct DiskLog {
    path: PathBuf,
    dir: PathBuf,
    file: File,
    /// Entries after the purge point, by index.
    entries: BTreeMap<u64, Entry<TypeConfig>>,
    /// Byte offset of each entry's record in `file`.
    offsets: BTreeMap<u64, u64>,
    end: u64,
    purged: Option<LogId<NodeId>>,
}

impl DiskLog {
    fn open(dir: &Path, purged: Option<LogId<NodeId>>) -> Result<DiskLog, StoreError> {
        let path = dir.join("log");
        let buf = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io_err("read", &path)(e)),
        };
        let damaged = |offset: usize, reason: String| StoreError::Damaged {
            path: path.clone(),
            offset: offset as u64,
            reason,
        };
        let mut entries = BTreeMap::new();
        let mut offsets = BTreeMap::new();
        let mut at = 0usize;
        let mut last: Option<u64> = None;
        loop {
            match decode_record(&buf, at).map_err(|r| damaged(at, r))? {
                Decoded::End => break,
                Decoded::Torn => {
                    tracing::warn!(
                        path = %path.display(),
                        offset = at,
                        "dropping a Raft log record cut short by a crash (it was never acknowledged)"
                    );
                    break;
                }
                Decoded::Record(payload, next) => {
                    let entry: Entry<TypeConfig> = serde_json::from_slice(payload)
                        .map_err(|e| damaged(at, format!("unreadable entry: {e}")))?;
                    let index = entry.log_id.index;
                    if let Some(prev) = last {
                        if index != prev + 1 {
                            return Err(damaged(at, format!("entry {index} follows entry {prev}")));
                        }
                    }
                    last = Some(index);
                    if purged.as_ref().is_none_or(|p| index > p.index) {
                        offsets.insert(index, at as u64);
                        entries.insert(index, entry);
                    }
                    at = next;
                }
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err("open", &path))?;
        if at as u64 != buf.len() as u64 {
            file.set_len(at as u64)
                .and_then(|()| file.sync_all())
                .map_err(io_err("truncate", &path))?;
        }
        Ok(DiskLog {
            dir: dir.to_path_buf(),
            path,
            file,
            entries,
            offsets,
            end: at as u64,
            purged,
        })
    }

    fn last_log_id(&self) -> Option<LogId<NodeId>> {
        self.entries
            .values()
            .next_back()
            .map(|e| e.log_id)
            .or(self.purged)
    }

    /// Cuts the log at `index` (inclusive), on disk and in memory.
    fn truncate(&mut self, index: u64) -> Result<(), StoreError> {
        let Some(offset) = self.offsets.range(index..).next().map(|(_, o)| *o) else {
            return Ok(());
        };
        self.file
            .set_len(offset)
            .and_then(|()| self.file.sync_data())
            .map_err(io_err("truncate", &self.path))?;
        self.end = offset;
        self.entries.split_off(&index);
        self.offsets.split_off(&index);
        Ok(())
    }

    fn append(&mut self, entries: Vec<Entry<TypeConfig>>) -> Result<(), StoreError> {
        let Some(first) = entries.first().map(|e| e.log_id.index) else {
            return Ok(());
        };
        // openraft removes conflicting entries before appending; cut anyway so that the
        // file can never hold two entries with one index.
        if self.entries.range(first..).next().is_some() {
            self.truncate(first)?;
        }
        let mut buf = Vec::new();
        let mut placed = Vec::with_capacity(entries.len());
        for entry in entries {
            let json = serde_json::to_vec(&entry).map_err(|e| StoreError::Io {
                action: "encode an entry for",
                path: self.path.clone(),
                source: io::Error::other(e),
            })?;
            placed.push((self.end + buf.len() as u64, entry));
            encode_record(&json, &mut buf);
        }
        use std::io::{Seek, SeekFrom};
        self.file
            .seek(SeekFrom::Start(self.end))
            .and_then(|_| self.file.write_all(&buf))
            .and_then(|()| self.file.sync_data())
            .map_err(io_err("append to", &self.path))?;
        self.end += buf.len() as u64;
        for (offset, entry) in placed {
            self.offsets.insert(entry.log_id.index, offset);
            self.entries.insert(entry.log_id.index, entry);
        }
        Ok(())
    }

    /// Forgets the entries up to `log_id`: records the purge point, then rewrites the log
    /// file with the remaining entries so that it stays bounded.
    fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StoreError> {
        write_atomic(&self.dir, "purged", &log_id, true)?;
        self.purged = Some(log_id);
        let keep = self.entries.split_off(&(log_id.index + 1));
        self.entries = keep;
        let tmp = self.dir.join("log.tmp");
        let mut buf = Vec::new();
        let mut offsets = BTreeMap::new();
        for (index, entry) in &self.entries {
            let json = serde_json::to_vec(entry).map_err(|e| StoreError::Io {
                action: "encode an entry for",
                path: tmp.clone(),
                source: io::Error::other(e),
            })?;
            offsets.insert(*index, buf.len() as u64);
            encode_record(&json, &mut buf);
        }
        let mut f = File::create(&tmp).map_err(io_err("create", &tmp))?;
        f.write_all(&buf)
            .and_then(|()| f.sync_all())
            .map_err(io_err("write", &tmp))?;
        drop(f);
        fs::rename(&tmp, &self.path).map_err(io_err("rename into place", &self.path))?;
        sync_dir(&self.dir)?;
        self.file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)
            .map_err(io_err("open", &self.path))?;
        self.offsets = offsets;
        self.end = buf.len() as u64;
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere while holding the lock leaves plain data behind; keep going.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn log_write_error(e: StoreError) -> StorageError<NodeId> {
    StorageIOError::write_logs(AnyError::new(&e)).into()
}

/// The in-memory state machine.
struct Machine {
    state: Arc<ClusterState>,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
}

/// One node's Raft storage (openraft's v1 `RaftStorage`, split by `openraft::storage::Adaptor`).
pub(crate) struct DiskStore {
    dir: PathBuf,
    cluster_id: String,
    shards: u32,
    log: Arc<Mutex<DiskLog>>,
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
    machine: Machine,
    /// The current snapshot, shared with snapshot builders running in the background.
    snapshot: Arc<Mutex<Option<StoredSnapshot>>>,
    state_tx: watch::Sender<Arc<ClusterState>>,
    snapshot_seq: u64,
}

impl DiskStore {
    /// Opens (or creates) the Raft directory `dir` of `node` in cluster `cluster_id` with
    /// `shards` shards.
    pub(crate) fn open(
        dir: &Path,
        node: NodeId,
        cluster_id: &str,
        shards: u32,
    ) -> Result<(DiskStore, watch::Receiver<Arc<ClusterState>>), StoreError> {
        let fresh = ClusterState::new(cluster_id, shards).map_err(|_| StoreError::NoShards)?;
        fs::create_dir_all(dir).map_err(io_err("create", dir))?;
        let mismatch = |found_cluster: &str, found_shards: u32| StoreError::ClusterMismatch {
            dir: dir.to_path_buf(),
            found_cluster: found_cluster.to_string(),
            found_shards,
            wanted_cluster: cluster_id.to_string(),
            wanted_shards: shards,
        };
        match read_atomic::<Identity>(dir, "identity")? {
            Some(id) => {
                if id.cluster_id != cluster_id || id.shards != shards {
                    return Err(mismatch(&id.cluster_id, id.shards));
                }
                if id.node != node {
                    return Err(StoreError::NodeMismatch {
                        dir: dir.to_path_buf(),
                        found: id.node,
                        wanted: node,
                    });
                }
            }
            None => write_atomic(
                dir,
                "identity",
                &Identity {
                    node,
                    cluster_id: cluster_id.to_string(),
                    shards,
                },
                true,
            )?,
        }
        let vote = read_atomic::<Vote<NodeId>>(dir, "vote")?;
        let purged = read_atomic::<LogId<NodeId>>(dir, "purged")?;
        let snapshot = StoredSnapshot::load(dir)?;
        // `committed` only lets a restarted node re-apply its log before it hears from a
        // leader; if it is unreadable the leader will tell again.
        let committed = read_atomic::<LogId<NodeId>>(dir, "committed").unwrap_or_else(|e| {
            tracing::warn!(error = %e, "ignoring the saved commit point");
            None
        });
        let machine = match &snapshot {
            Some(s) => {
                if s.state.cluster_id != cluster_id || s.state.table.len() != shards {
                    return Err(mismatch(&s.state.cluster_id, s.state.table.len()));
                }
                Machine {
                    state: Arc::new(s.state.clone()),
                    last_applied: s.meta.last_log_id,
                    membership: s.meta.last_membership.clone(),
                }
            }
            None => Machine {
                state: Arc::new(fresh),
                last_applied: None,
                membership: StoredMembership::default(),
            },
        };
        let log = DiskLog::open(dir, purged)?;
        // A commit point beyond what the log holds (a torn tail was dropped) is not usable.
        let committed =
            committed.filter(|c| Some(*c) <= log.last_log_id().max(machine.last_applied));
        tracing::info!(
            dir = %dir.display(),
            entries = log.entries.len(),
            purged = ?purged.map(|p| p.index),
            snapshot = ?machine.last_applied.map(|l| l.index),
            "opened the Raft storage"
        );
        let (state_tx, state_rx) = watch::channel(machine.state.clone());
        Ok((
            DiskStore {
                dir: dir.to_path_buf(),
                cluster_id: cluster_id.to_string(),
                shards,
                log: Arc::new(Mutex::new(log)),
                vote,
                committed,
                machine,
                snapshot: Arc::new(Mutex::new(snapshot)),
                state_tx,
                snapshot_seq: 0,
            },
            state_rx,
        ))
    }

    fn publish(&self) {
        self.state_tx.send_replace(self.machine.state.clone());
    }
}

/// Reads entries for replication, concurrently with appends.
#[derive(Clone)]
pub(crate) struct LogReader {
    log: Arc<Mutex<DiskLog>>,
}

fn read_range<RB: RangeBounds<u64>>(log: &Mutex<DiskLog>, range: RB) -> Vec<Entry<TypeConfig>> {
    lock(log)
        .entries
        .range(range)
        .map(|(_, e)| e.clone())
        .collect()
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        Ok(read_range(&self.log, range))
    }
}

impl RaftLogReader<TypeConfig> for DiskStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        Ok(read_range(&self.log, range))
    }
}

/// Builds a snapshot of the state machine as it was when the builder was made.
pub(crate) struct SnapshotBuilder {
    dir: PathBuf,
    snapshot: Arc<Mutex<Option<StoredSnapshot>>>,
    state: Arc<ClusterState>,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    seq: u64,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let snapshot_id = match &self.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, self.seq),
            None => format!("none-{}", self.seq),
        };
        let stored = StoredSnapshot {
            meta: SnapshotMeta {
                last_log_id: self.last_applied,
                last_membership: self.membership.clone(),
                snapshot_id,
            },
            state: (*self.state).clone(),
        };
        let mut slot = lock(&self.snapshot);
        let newer = slot
            .as_ref()
            .is_none_or(|s| s.meta.last_log_id <= stored.meta.last_log_id);
        if newer {
            stored.save(&self.dir).map_err(|e| {
                StorageIOError::write_snapshot(Some(stored.meta.signature()), AnyError::new(&e))
            })?;
            tracing::debug!(upto = ?stored.meta.last_log_id, "wrote a Raft snapshot");
            *slot = Some(stored.clone());
        }
        stored.to_snapshot().map_err(|e| stored.read_error(e))
    }
}

impl RaftStorage<TypeConfig> for DiskStore {
    type LogReader = LogReader;
    type SnapshotBuilder = SnapshotBuilder;

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        write_atomic(&self.dir, "vote", vote, true)
            .map_err(|e| StorageIOError::write_vote(AnyError::new(&e)))?;
        self.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(self.vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        if let Some(c) = committed {
            // Not synced: losing it costs only a wait for the leader after a crash.
            if let Err(e) = write_atomic(&self.dir, "committed", &c, false) {
                tracing::warn!(error = %e, "could not save the commit point");
            }
        }
        self.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(self.committed)
    }

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let log = lock(&self.log);
        Ok(LogState {
            last_purged_log_id: log.purged,
            last_log_id: log.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> LogReader {
        LogReader {
            log: self.log.clone(),
        }
    }

    async fn append_to_log<I>(&mut self, entries: I) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
    {
        let entries: Vec<_> = entries.into_iter().collect();
        lock(&self.log).append(entries).map_err(log_write_error)
    }

    async fn delete_conflict_logs_since(
        &mut self,
        log_id: LogId<NodeId>,
    ) -> Result<(), StorageError<NodeId>> {
        tracing::debug!(from = log_id.index, "deleting conflicting Raft log entries");
        lock(&self.log)
            .truncate(log_id.index)
            .map_err(log_write_error)
    }

    async fn purge_logs_upto(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        tracing::debug!(upto = log_id.index, "purging the Raft log");
        lock(&self.log).purge(log_id).map_err(log_write_error)
    }

    async fn last_applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), StorageError<NodeId>>
    {
        Ok((self.machine.last_applied, self.machine.membership.clone()))
    }

    async fn apply_to_state_machine(
        &mut self,
        entries: &[Entry<TypeConfig>],
    ) -> Result<Vec<Outcome>, StorageError<NodeId>> {
        let mut outcomes = Vec::with_capacity(entries.len());
        let m = &mut self.machine;
        for entry in entries {
            m.last_applied = Some(entry.log_id);
            outcomes.push(match &entry.payload {
                EntryPayload::Blank => Outcome::Done,
                EntryPayload::Normal(command) => {
                    let outcome = Arc::make_mut(&mut m.state).apply(command);
                    if let Outcome::Refused(why) = &outcome {
                        tracing::debug!(
                            index = entry.log_id.index,
                            ?command,
                            why,
                            "command refused"
                        );
                    }
                    outcome
                }
                EntryPayload::Membership(mem) => {
                    m.membership = StoredMembership::new(Some(entry.log_id), mem.clone());
                    Outcome::Done
                }
            });
        }
        self.publish();
        Ok(outcomes)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        self.snapshot_seq += 1;
        SnapshotBuilder {
            dir: self.dir.clone(),
            snapshot: self.snapshot.clone(),
            state: self.machine.state.clone(),
            last_applied: self.machine.last_applied,
            membership: self.machine.membership.clone(),
            seq: self.snapshot_seq,
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let fail = |e: AnyError| StorageIOError::read_snapshot(Some(meta.signature()), e);
        let state = decode_state(snapshot.get_ref())
            .map_err(|e| fail(AnyError::error(format!("unreadable snapshot: {e}"))))?;
        if state.cluster_id != self.cluster_id || state.table.len() != self.shards {
            return Err(fail(AnyError::error(format!(
                "the snapshot is of cluster `{}` with {} shards, this node belongs to `{}` with {}",
                state.cluster_id,
                state.table.len(),
                self.cluster_id,
                self.shards
            )))
            .into());
        }
        tracing::info!(upto = ?meta.last_log_id, "installing a Raft snapshot from the leader");
        let stored = StoredSnapshot {
            meta: meta.clone(),
            state,
        };
        {
            let mut slot = lock(&self.snapshot);
            stored.save(&self.dir).map_err(|e| {
                StorageIOError::write_snapshot(Some(meta.signature()), AnyError::new(&e))
            })?;
            *slot = Some(stored.clone());
        }
        self.machine = Machine {
            state: Arc::new(stored.state),
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
        };
        self.publish();
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let slot = lock(&self.snapshot);
        match slot.as_ref() {
            Some(s) => s.to_snapshot().map(Some).map_err(|e| s.read_error(e)),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_damage_is_told_from_a_torn_tail() {
        let mut buf = Vec::new();
        encode_record(b"hello", &mut buf);
        encode_record(b"world!", &mut buf);
        let Ok(Decoded::Record(p, next)) = decode_record(&buf, 0) else {
            panic!("first record")
        };
        assert_eq!(p, b"hello");
        assert!(matches!(
            decode_record(&buf, next),
            Ok(Decoded::Record(b"world!", _))
        ));
        // Cut short: torn.
        assert!(matches!(
            decode_record(&buf[..buf.len() - 2], next),
            Ok(Decoded::Torn)
        ));
        // A flipped payload byte: damaged.
        let mut bad = buf.clone();
        bad[HEADER] ^= 1;
        assert!(decode_record(&bad, 0).is_err());
        // A flipped length byte: damaged, not mistaken for a torn tail.
        let mut bad = buf.clone();
        bad[0] ^= 0x40;
        assert!(decode_record(&bad, 0).is_err());
    }
}
