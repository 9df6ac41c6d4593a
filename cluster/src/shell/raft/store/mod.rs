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
//! Split by what is stored: [`records`] (the framing every file uses, and the one-record
//! files), [`log`] (the log file and its in-memory copy), [`snapshot`] (the state machine on
//! disk) and [`machine`] (the state machine in memory). This module opens the directory
//! and is openraft's `RaftStorage` over them.

mod log;
mod machine;
mod records;
mod snapshot;

use std::fs;
use std::io::{self, Cursor};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{LogState, Snapshot};
use openraft::{
    AnyError, BasicNode, Entry, LogId, OptionalSend, RaftStorage, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership, Vote,
};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::sync::watch;

use super::TypeConfig;
use crate::core::state::{ClusterState, Outcome};
use crate::core::table::NodeId;
use log::{DiskLog, LogReader};
use machine::Machine;
use records::{io_err, read_atomic, write_atomic};
use snapshot::{decode_state, SnapshotBuilder, StoredSnapshot};

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

/// What a directory belongs to.
#[derive(Debug, Serialize, Deserialize)]
struct Identity {
    node: NodeId,
    cluster_id: String,
    shards: u32,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere while holding the lock leaves plain data behind; keep going.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn log_write_error(e: StoreError) -> StorageError<NodeId> {
    StorageIOError::write_logs(AnyError::new(&e)).into()
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
        let outcomes = self.machine.apply(entries);
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
