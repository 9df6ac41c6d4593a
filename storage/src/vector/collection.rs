//! [`VectorCollection`]: one collection's usearch index with its key/metadata table, and the
//! writes (upsert, delete) that keep the two in step. Search and checkpoints extend it elsewhere.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use usearch::{Index, IndexOptions, ScalarKind};

use super::search::{thread_slots, Slots};
use super::{
    lock, CollectionSpec, Metric, VectorError, HNSW_CONNECTIVITY, HNSW_EXPANSION_ADD,
    HNSW_EXPANSION_SEARCH, MAX_KEY_BYTES, MAX_METADATA_BYTES,
};
use crate::StorageError;

/// usearch needs capacity reserved before `add`; it is grown in chunks of at least this many.
pub(super) const MIN_RESERVE: usize = 1024;
/// A batch at least this large is inserted on several threads.
const PARALLEL_BATCH: usize = 512;

/// Key, metadata and usearch id of one vector.
#[derive(Debug)]
pub(super) struct Entry {
    pub(super) key: Arc<str>,
    pub(super) metadata: Box<[u8]>,
}

#[derive(Debug, Default)]
pub(super) struct State {
    pub(super) by_key: HashMap<Arc<str>, u64>,
    pub(super) by_id: HashMap<u64, Entry>,
    /// Ids are never reused, so a replaced vector can be added before the old one is removed.
    pub(super) next_id: u64,
    /// Bumped on every change; compared with the saved version to skip clean saves.
    pub(super) version: u64,
}

#[derive(Debug, Default)]
pub(super) struct SaveState {
    pub(super) generation: u64,
    pub(super) saved_version: Option<u64>,
}

/// One named collection of vectors. Obtain it from [`VectorStore`](super::VectorStore); it is
/// shared as `Arc<VectorCollection>` and all methods take `&self`.
pub struct VectorCollection {
    pub(super) name: String,
    pub(super) spec: CollectionSpec,
    pub(super) dir: Mutex<PathBuf>,
    /// Only touched under `state`: read lock for search/get/save, write lock for changes,
    /// because usearch's `reserve` must not overlap anything and `add` must not overlap search.
    pub(super) index: Index,
    pub(super) state: RwLock<State>,
    pub(super) save_state: Mutex<SaveState>,
    pub(super) slots: Slots,
    pub(super) threads: usize,
    pub(super) dropped: AtomicBool,
}

impl fmt::Debug for VectorCollection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VectorCollection")
            .field("name", &self.name)
            .field("spec", &self.spec)
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

pub(super) fn index_options(spec: CollectionSpec, connectivity: usize) -> IndexOptions {
    IndexOptions {
        dimensions: spec.dim,
        metric: spec.metric.usearch(),
        quantization: ScalarKind::F32,
        connectivity,
        expansion_add: HNSW_EXPANSION_ADD,
        expansion_search: HNSW_EXPANSION_SEARCH,
        multi: false,
    }
}

impl VectorCollection {
    pub(super) fn index_err(&self, context: &'static str, e: impl fmt::Display) -> StorageError {
        VectorError::Index {
            collection: self.name.clone(),
            context,
            message: e.to_string(),
        }
        .into()
    }

    pub(super) fn new(
        name: &str,
        spec: CollectionSpec,
        dir: PathBuf,
    ) -> Result<Self, StorageError> {
        let index = Index::new(&index_options(spec, HNSW_CONNECTIVITY)).map_err(|e| {
            StorageError::from(VectorError::Index {
                collection: name.to_string(),
                context: "creating the index",
                message: e.to_string(),
            })
        })?;
        let threads = thread_slots();
        let collection = VectorCollection {
            name: name.to_string(),
            spec,
            dir: Mutex::new(dir),
            index,
            state: RwLock::new(State::default()),
            save_state: Mutex::new(SaveState::default()),
            slots: Slots::new(threads),
            threads,
            dropped: AtomicBool::new(false),
        };
        collection
            .index
            .reserve_capacity_and_threads(MIN_RESERVE, threads)
            .map_err(|e| collection.index_err("reserving capacity", e))?;
        Ok(collection)
    }

    pub(super) fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The collection's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Dimension and metric, fixed at creation.
    pub fn spec(&self) -> CollectionSpec {
        self.spec
    }

    /// Number of vectors.
    pub fn len(&self) -> usize {
        self.read().by_id.len()
    }

    /// Whether the collection holds no vectors.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sets how many candidates a search examines (at least `k` are always used); higher is
    /// slower with better recall. Not saved: every open starts from [`HNSW_EXPANSION_SEARCH`]. Meant
    /// for benchmarks and tuning.
    pub fn set_search_expansion(&self, expansion: usize) {
        let _state = self.write();
        self.index.change_expansion_search(expansion.max(1));
    }

    pub(super) fn check_vector(&self, vector: &[f32], what: &str) -> Result<(), StorageError> {
        if vector.len() != self.spec.dim {
            return Err(VectorError::WrongDimension {
                collection: self.name.clone(),
                expected: self.spec.dim,
                got: vector.len(),
            }
            .into());
        }
        if let Some(i) = vector.iter().position(|x| !x.is_finite()) {
            return Err(VectorError::BadVector {
                collection: self.name.clone(),
                what: format!("{what} has a non-finite value ({}) at index {i}", vector[i]),
            }
            .into());
        }
        if self.spec.metric == Metric::Cosine && vector.iter().all(|x| *x == 0.0) {
            return Err(VectorError::BadVector {
                collection: self.name.clone(),
                what: format!("{what} is all zeros, which has no cosine distance"),
            }
            .into());
        }
        Ok(())
    }

    fn check_item(&self, key: &str, vector: &[f32], metadata: &[u8]) -> Result<(), StorageError> {
        if key.is_empty() {
            return Err(VectorError::InvalidKey {
                collection: self.name.clone(),
                reason: "it is empty".to_string(),
            }
            .into());
        }
        if key.len() > MAX_KEY_BYTES {
            return Err(VectorError::InvalidKey {
                collection: self.name.clone(),
                reason: format!(
                    "it is {} bytes, over the limit of {MAX_KEY_BYTES}",
                    key.len()
                ),
            }
            .into());
        }
        if metadata.len() > MAX_METADATA_BYTES {
            return Err(VectorError::MetadataTooLarge {
                collection: self.name.clone(),
                key: key.to_string(),
                size: metadata.len(),
                limit: MAX_METADATA_BYTES,
            }
            .into());
        }
        self.check_vector(vector, "the vector")
    }

    /// Makes room for `extra` more vectors, growing in chunks (usearch needs `reserve` before
    /// `add`, and reserving one at a time would copy the lookup tables every insert).
    fn ensure_capacity(&self, extra: usize) -> Result<(), StorageError> {
        let needed = self.index.size() + extra;
        let capacity = self.index.capacity();
        if needed <= capacity {
            return Ok(());
        }
        let target = needed.max(capacity + capacity / 2).max(MIN_RESERVE);
        self.index
            .reserve_capacity_and_threads(target, self.threads)
            .map_err(|e| self.index_err("reserving capacity", e))
    }

    /// Stores `vector` with `metadata` under `key`, replacing what the key held. Invalid input
    /// (wrong dimension, NaN or infinity, a zero vector under cosine, an empty key or one over
    /// [`MAX_KEY_BYTES`], metadata over [`MAX_METADATA_BYTES`]) is an error and changes
    /// nothing.
    pub fn upsert(&self, key: &str, vector: &[f32], metadata: &[u8]) -> Result<(), StorageError> {
        self.upsert_batch(&[(key, vector, metadata)])
    }

    /// Upserts many vectors: every item is checked first and an invalid one fails the whole
    /// batch with nothing changed. If the same key appears twice, the later item wins. Large
    /// batches are inserted on several threads.
    pub fn upsert_batch(&self, items: &[(&str, &[f32], &[u8])]) -> Result<(), StorageError> {
        for (key, vector, metadata) in items {
            self.check_item(key, vector, metadata)?;
        }
        if items.is_empty() {
            return Ok(());
        }
        let mut state = self.write();
        self.ensure_capacity(items.len())?;
        let first_id = state.next_id;
        let count = items.len() as u64;
        let added = self.add_all(first_id, items);
        if let Err(e) = added {
            // Roll back whatever got in; the maps were not touched yet.
            for i in 0..count {
                let _ = self.index.remove(first_id + i);
            }
            return Err(e);
        }
        state.next_id = first_id + count;
        state.version += 1;
        let mut replaced = Vec::new();
        for (i, (key, _, metadata)) in items.iter().enumerate() {
            let id = first_id + i as u64;
            let key: Arc<str> = Arc::from(*key);
            if let Some(old) = state.by_key.insert(Arc::clone(&key), id) {
                state.by_id.remove(&old);
                replaced.push(old);
            }
            state.by_id.insert(
                id,
                Entry {
                    key,
                    metadata: Box::from(*metadata),
                },
            );
        }
        for old in replaced {
            self.index
                .remove(old)
                .map_err(|e| self.index_err("removing a replaced vector", e))?;
        }
        Ok(())
    }

    fn add_all(&self, first_id: u64, items: &[(&str, &[f32], &[u8])]) -> Result<(), StorageError> {
        let add = |i: usize| {
            self.index
                .add(first_id + i as u64, items[i].1)
                .map_err(|e| self.index_err("adding a vector", e))
        };
        if items.len() < PARALLEL_BATCH || self.threads < 2 {
            return (0..items.len()).try_for_each(add);
        }
        let workers = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(self.threads);
        let next = std::sync::atomic::AtomicUsize::new(0);
        let failed = Mutex::new(None);
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= items.len() || lock(&failed).is_some() {
                        break;
                    }
                    if let Err(e) = add(i) {
                        *lock(&failed) = Some(e);
                        break;
                    }
                });
            }
        });
        match failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Removes `key`; `Ok(false)` if it was not there.
    pub fn delete(&self, key: &str) -> Result<bool, StorageError> {
        let mut state = self.write();
        let Some(id) = state.by_key.get(key).copied() else {
            return Ok(false);
        };
        self.index
            .remove(id)
            .map_err(|e| self.index_err("removing a vector", e))?;
        state.by_key.remove(key);
        state.by_id.remove(&id);
        state.version += 1;
        Ok(true)
    }

    /// The stored vector and metadata of `key`, if any.
    pub fn get(&self, key: &str) -> Option<(Vec<f32>, Vec<u8>)> {
        let state = self.read();
        let id = *state.by_key.get(key)?;
        let entry = state.by_id.get(&id)?;
        let mut vector = vec![0.0f32; self.spec.dim];
        match self.index.get(id, &mut vector) {
            Ok(1) => Some((vector, entry.metadata.to_vec())),
            _ => None,
        }
    }
}
