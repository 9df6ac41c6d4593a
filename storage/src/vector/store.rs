//! [`VectorStore`]: the directory of collections (open, create, drop, list). Its own file
//! because creating and dropping are directory renames with their own crash rules.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::checkpoint::sync_dir;
use super::error::io_err;
use super::spec::{check_name, check_spec};
use super::{lock, CollectionSpec, VectorCollection, VectorError};
use crate::StorageError;

/// A directory of vector collections. `Send + Sync`; share it behind an `Arc`.
pub struct VectorStore {
    dir: PathBuf,
    collections: RwLock<BTreeMap<String, Arc<VectorCollection>>>,
}

impl fmt::Debug for VectorStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VectorStore")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl VectorStore {
    /// Opens (creating if needed) the store in `dir` and loads every saved collection, so that
    /// a restarted node serves what it had at its last checkpoint. A damaged file fails the
    /// whole open with [`VectorError::Corrupt`] naming it, rather than serving partial data.
    pub fn open(dir: &Path) -> Result<VectorStore, StorageError> {
        fs::create_dir_all(dir).map_err(|source| StorageError::Unwritable {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut collections = BTreeMap::new();
        let entries = fs::read_dir(dir).map_err(io_err("listing the vector store", dir))?;
        for entry in entries {
            let entry = entry.map_err(io_err("listing the vector store", dir))?;
            let path = entry.path();
            let file_type = entry
                .file_type()
                .map_err(io_err("inspecting a store entry", &path))?;
            if !file_type.is_dir() {
                continue;
            }
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                tracing::warn!(path = %path.display(), "ignoring a directory whose name is not UTF-8");
                continue;
            };
            if name.starts_with('.') {
                // An interrupted create or drop.
                tracing::warn!(path = %path.display(), "removing an interrupted create/drop");
                fs::remove_dir_all(&path).map_err(io_err("removing a leftover", &path))?;
                continue;
            }
            let collection = VectorCollection::load(&name, &path)?;
            collections.insert(name, Arc::new(collection));
        }
        Ok(VectorStore {
            dir: dir.to_path_buf(),
            collections: RwLock::new(collections),
        })
    }

    fn read(&self) -> RwLockReadGuard<'_, BTreeMap<String, Arc<VectorCollection>>> {
        self.collections.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, BTreeMap<String, Arc<VectorCollection>>> {
        self.collections.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates a collection and writes its first (empty) checkpoint, so that it survives a
    /// restart even before anything is saved. Creating it again with the same spec returns the
    /// existing one (definitions are re-applied on every start); another spec is a
    /// [`VectorError::SpecConflict`].
    pub fn create(
        &self,
        name: &str,
        spec: CollectionSpec,
    ) -> Result<Arc<VectorCollection>, StorageError> {
        check_name(name)?;
        check_spec(spec)?;
        let mut collections = self.write();
        if let Some(existing) = collections.get(name) {
            if existing.spec == spec {
                return Ok(Arc::clone(existing));
            }
            return Err(VectorError::SpecConflict {
                name: name.to_string(),
                existing: existing.spec,
                requested: spec,
            }
            .into());
        }
        // Built under a reserved name and renamed into place, so a crash never leaves a
        // collection directory without its checkpoint.
        let staging = self.dir.join(format!(".creating-{name}"));
        if staging.exists() {
            fs::remove_dir_all(&staging).map_err(io_err("removing a leftover", &staging))?;
        }
        fs::create_dir(&staging).map_err(io_err("creating a collection directory", &staging))?;
        let collection = VectorCollection::new(name, spec, staging.clone())?;
        collection.save()?;
        let final_dir = self.dir.join(name);
        fs::rename(&staging, &final_dir).map_err(io_err("creating a collection", &final_dir))?;
        sync_dir(&self.dir)?;
        *lock(&collection.dir) = final_dir;
        let collection = Arc::new(collection);
        collections.insert(name.to_string(), Arc::clone(&collection));
        Ok(collection)
    }

    /// The collection called `name`; an unknown name is [`VectorError::UnknownCollection`].
    pub fn get(&self, name: &str) -> Result<Arc<VectorCollection>, StorageError> {
        self.read().get(name).cloned().ok_or_else(|| {
            VectorError::UnknownCollection {
                name: name.to_string(),
            }
            .into()
        })
    }

    /// Removes a collection and its files; `Ok(false)` if there was none. Handles still held
    /// elsewhere keep answering reads but refuse to save ([`VectorError::Dropped`]).
    pub fn drop_collection(&self, name: &str) -> Result<bool, StorageError> {
        let mut collections = self.write();
        let Some(collection) = collections.get(name).cloned() else {
            return Ok(false);
        };
        // Wait for a save in progress, then stop further saves.
        let _saving = lock(&collection.save_state);
        collection.dropped.store(true, Ordering::SeqCst);
        let dir = lock(&collection.dir).clone();
        // Renamed first, so a crash during removal leaves a reserved name that open() cleans up
        // rather than a half-deleted collection that fails to load.
        let doomed = self.dir.join(format!(".dropping-{name}"));
        if doomed.exists() {
            fs::remove_dir_all(&doomed).map_err(io_err("removing a leftover", &doomed))?;
        }
        fs::rename(&dir, &doomed).map_err(io_err("dropping a collection", &dir))?;
        collections.remove(name);
        sync_dir(&self.dir)?;
        fs::remove_dir_all(&doomed).map_err(io_err("removing a dropped collection", &doomed))?;
        Ok(true)
    }

    /// Every collection with its spec and number of vectors, sorted by name.
    pub fn list(&self) -> Vec<(String, CollectionSpec, usize)> {
        self.read()
            .iter()
            .map(|(name, c)| (name.clone(), c.spec, c.len()))
            .collect()
    }

    /// Checkpoints every collection that changed since its last save. Stops at the first
    /// failure; collections saved before it keep their new checkpoint.
    pub fn save_all(&self) -> Result<(), StorageError> {
        let collections: Vec<_> = self.read().values().cloned().collect();
        for collection in collections {
            collection.save()?;
        }
        Ok(())
    }
}
