//! The Raft log on disk: the entries after the purge point, appended as records to `log`,
//! and kept in memory too so that reads never touch the disk (the log is bounded by
//! snapshots, see `RaftSettings::snapshot_every`).
//!
//! Apart from the vote and the state machine because it is the one file that grows, is cut
//! (conflicting entries) and rewritten (purges), and is read concurrently with appends
//! ([`LogReader`]). On open, a record whose payload runs past the end of the file was never
//! acknowledged and is dropped; anything else that does not check out is damage.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openraft::{Entry, LogId, OptionalSend, RaftLogReader, StorageError};

use super::records::{decode_record, encode_record, io_err, sync_dir, write_atomic, Decoded};
use super::{lock, DiskStore, StoreError};
use crate::core::table::NodeId;
use crate::shell::raft::TypeConfig;

/// The log file and its entries in memory.
pub(super) struct DiskLog {
    path: PathBuf,
    dir: PathBuf,
    file: File,
    /// Entries after the purge point, by index.
    pub(super) entries: BTreeMap<u64, Entry<TypeConfig>>,
    /// Byte offset of each entry's record in `file`.
    offsets: BTreeMap<u64, u64>,
    end: u64,
    pub(super) purged: Option<LogId<NodeId>>,
}

impl DiskLog {
    pub(super) fn open(dir: &Path, purged: Option<LogId<NodeId>>) -> Result<DiskLog, StoreError> {
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

    pub(super) fn last_log_id(&self) -> Option<LogId<NodeId>> {
        self.entries
            .values()
            .next_back()
            .map(|e| e.log_id)
            .or(self.purged)
    }

    /// Cuts the log at `index` (inclusive), on disk and in memory.
    pub(super) fn truncate(&mut self, index: u64) -> Result<(), StoreError> {
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

    pub(super) fn append(&mut self, entries: Vec<Entry<TypeConfig>>) -> Result<(), StoreError> {
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
    pub(super) fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StoreError> {
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

/// Reads entries for replication, concurrently with appends.
#[derive(Clone)]
pub(crate) struct LogReader {
    pub(super) log: Arc<Mutex<DiskLog>>,
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
