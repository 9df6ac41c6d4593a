//! The state-machine snapshot: written when openraft asks for one (which bounds the log),
//! installed when a leader sends one, and read back on start.
//!
//! On disk (and as the snapshot data sent to followers) the state is bincode, not JSON:
//! `ClusterState` has maps keyed by tuples, which JSON cannot represent. The `snapshot` file
//! holds two records: the meta as JSON, then the state. Decoding has a size limit, because a
//! snapshot can come from the network.

use std::io::{self, Cursor};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openraft::storage::Snapshot;
use openraft::{
    AnyError, BasicNode, LogId, RaftSnapshotBuilder, SnapshotMeta, StorageError, StorageIOError,
    StoredMembership,
};

use super::lock;
use super::records::{damaged, encode_json, read_records, write_records, MAX_RECORD};
use super::StoreError;
use crate::core::state::ClusterState;
use crate::core::table::NodeId;
use crate::shell::raft::TypeConfig;

/// The persisted snapshot: the state machine at `meta.last_log_id`. On disk (and as the
/// snapshot data sent to followers) the state is bincode, not JSON: `ClusterState` has maps
/// keyed by tuples, which JSON cannot represent. The file holds two records: the meta as
/// JSON, then the state.
#[derive(Clone, Debug)]
pub(super) struct StoredSnapshot {
    pub(super) meta: SnapshotMeta<NodeId, BasicNode>,
    pub(super) state: ClusterState,
}

fn encode_state(state: &ClusterState) -> Result<Vec<u8>, bincode::Error> {
    bincode::serialize(state)
}

pub(super) fn decode_state(bytes: &[u8]) -> Result<ClusterState, bincode::Error> {
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
    pub(super) fn to_snapshot(&self) -> Result<Snapshot<TypeConfig>, bincode::Error> {
        Ok(Snapshot {
            meta: self.meta.clone(),
            snapshot: Box::new(Cursor::new(encode_state(&self.state)?)),
        })
    }

    pub(super) fn read_error(&self, e: bincode::Error) -> StorageError<NodeId> {
        StorageIOError::read_snapshot(Some(self.meta.signature()), AnyError::new(&e)).into()
    }

    pub(super) fn save(&self, dir: &Path) -> Result<(), StoreError> {
        let path = dir.join("snapshot");
        let meta = encode_json(&path, &self.meta)?;
        let state = encode_state(&self.state).map_err(|e| StoreError::Io {
            action: "encode",
            path,
            source: io::Error::other(e),
        })?;
        write_records(dir, "snapshot", &[&meta, &state], true)
    }

    pub(super) fn load(dir: &Path) -> Result<Option<StoredSnapshot>, StoreError> {
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

/// Builds a snapshot of the state machine as it was when the builder was made.
pub(crate) struct SnapshotBuilder {
    pub(super) dir: PathBuf,
    pub(super) snapshot: Arc<Mutex<Option<StoredSnapshot>>>,
    pub(super) state: Arc<ClusterState>,
    pub(super) last_applied: Option<LogId<NodeId>>,
    pub(super) membership: StoredMembership<NodeId, BasicNode>,
    pub(super) seq: u64,
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
