//! Saving and loading a collection: the order of writes, syncs and renames that makes the meta
//! file's rename the commit point. Kept apart so the crash rules can be read in one place.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use usearch::Index;

use super::collection::{index_options, Entry, SaveState, State, MIN_RESERVE};
use super::error::{corrupt, io_err};
use super::meta::{Meta, META_FILE};
use super::search::{thread_slots, Slots};
use super::{lock, VectorCollection, VectorError, HNSW_EXPANSION_ADD, HNSW_EXPANSION_SEARCH};
use crate::StorageError;

impl VectorCollection {
    /// Writes a checkpoint (index file + meta file, see the [module docs](super)) if anything
    /// changed since the last one. A crash during `save` leaves the previous checkpoint intact.
    /// Searches continue meanwhile; writes wait.
    pub fn save(&self) -> Result<(), StorageError> {
        let mut save_state = lock(&self.save_state);
        if self.dropped.load(Ordering::SeqCst) {
            return Err(VectorError::Dropped {
                name: self.name.clone(),
            }
            .into());
        }
        let state = self.read();
        if save_state.saved_version == Some(state.version) {
            return Ok(());
        }
        let dir = lock(&self.dir).clone();
        let generation = save_state.generation + 1;

        let index_name = index_file_name(generation);
        let index_tmp = dir.join(format!("{index_name}.tmp"));
        let index_path = dir.join(&index_name);
        let Some(index_tmp_str) = index_tmp.to_str() else {
            return Err(VectorError::Io {
                context: "saving the index (usearch needs a UTF-8 path)",
                path: index_tmp,
                source: io::Error::from(io::ErrorKind::InvalidInput),
            }
            .into());
        };
        self.index
            .save(index_tmp_str)
            .map_err(|e| self.index_err("saving the index", e))?;
        let (index_len, index_crc) = checksum_file(&index_tmp)?;
        File::open(&index_tmp)
            .and_then(|f| f.sync_all())
            .map_err(io_err("syncing the index", &index_tmp))?;

        let meta = self.encode_meta(&state, generation, index_len, index_crc);
        let version = state.version;
        drop(state);
        let meta_path = dir.join(META_FILE);
        let meta_tmp = dir.join(format!("{META_FILE}.tmp"));
        write_synced(&meta_tmp, &meta)?;

        fs::rename(&index_tmp, &index_path).map_err(io_err("installing the index", &index_path))?;
        fs::rename(&meta_tmp, &meta_path)
            .map_err(io_err("installing the meta file", &meta_path))?;
        sync_dir(&dir)?;

        if save_state.generation > 0 {
            let old = dir.join(index_file_name(save_state.generation));
            if let Err(e) = fs::remove_file(&old) {
                tracing::warn!(path = %old.display(), error = %e, "could not remove an old index file");
            }
        }
        save_state.generation = generation;
        save_state.saved_version = Some(version);
        Ok(())
    }

    /// Loads the collection saved in `dir`, verifying both files.
    pub(super) fn load(name: &str, dir: &Path) -> Result<Self, StorageError> {
        let meta_path = dir.join(META_FILE);
        let bytes = fs::read(&meta_path).map_err(io_err("reading the meta file", &meta_path))?;
        let meta = Meta::decode(&bytes, &meta_path)?;
        if meta.name != name {
            return Err(corrupt(
                &meta_path,
                format!("it belongs to collection {:?}, not {name:?}", meta.name),
            ));
        }
        let index_path = dir.join(index_file_name(meta.generation));
        let (len, crc) = checksum_file(&index_path)?;
        if len != meta.index_len || crc != meta.index_crc {
            return Err(corrupt(
                &index_path,
                format!(
                    "length {len} / CRC32 {crc:08x} do not match the checkpoint's {} / {:08x}",
                    meta.index_len, meta.index_crc
                ),
            ));
        }
        let index = Index::new(&index_options(meta.spec, meta.connectivity)).map_err(|e| {
            StorageError::from(VectorError::Index {
                collection: name.to_string(),
                context: "creating the index",
                message: e.to_string(),
            })
        })?;
        let Some(index_str) = index_path.to_str() else {
            return Err(VectorError::Io {
                context: "loading the index (usearch needs a UTF-8 path)",
                path: index_path,
                source: io::Error::from(io::ErrorKind::InvalidInput),
            }
            .into());
        };
        index
            .load(index_str)
            .map_err(|e| corrupt(&index_path, format!("usearch could not load it: {e}")))?;
        index.change_expansion_add(HNSW_EXPANSION_ADD);
        index.change_expansion_search(HNSW_EXPANSION_SEARCH);
        if index.dimensions() != meta.spec.dim {
            return Err(corrupt(
                &index_path,
                format!(
                    "it holds {}-d vectors, the meta file says {}",
                    index.dimensions(),
                    meta.spec.dim
                ),
            ));
        }
        if index.size() != meta.entries.len() {
            return Err(corrupt(
                &index_path,
                format!(
                    "it holds {} vectors, the meta file lists {}",
                    index.size(),
                    meta.entries.len()
                ),
            ));
        }
        let mut state = State {
            next_id: meta.next_id,
            version: meta.version,
            ..State::default()
        };
        for (id, key, metadata) in meta.entries {
            if !index.contains(id) || id >= meta.next_id {
                return Err(corrupt(
                    &index_path,
                    format!("vector {id} of key {key:?} is missing from the index"),
                ));
            }
            let key: Arc<str> = Arc::from(key);
            if state.by_key.insert(Arc::clone(&key), id).is_some() {
                return Err(corrupt(&meta_path, format!("key {key:?} appears twice")));
            }
            state.by_id.insert(
                id,
                Entry {
                    key,
                    metadata: metadata.into_boxed_slice(),
                },
            );
        }
        let threads = thread_slots();
        let collection = VectorCollection {
            name: name.to_string(),
            spec: meta.spec,
            dir: Mutex::new(dir.to_path_buf()),
            index,
            state: RwLock::new(state),
            save_state: Mutex::new(SaveState {
                generation: meta.generation,
                saved_version: Some(meta.version),
            }),
            slots: Slots::new(threads),
            threads,
            dropped: AtomicBool::new(false),
        };
        let capacity = collection.index.size().max(MIN_RESERVE);
        collection
            .index
            .reserve_capacity_and_threads(capacity, threads)
            .map_err(|e| collection.index_err("reserving capacity", e))?;
        remove_strays(dir, &index_file_name(meta.generation));
        Ok(collection)
    }
}

fn index_file_name(generation: u64) -> String {
    format!("index-{generation:016x}.usearch")
}

/// Removes temporary files and index files of other generations left by an interrupted save.
fn remove_strays(dir: &Path, keep: &str) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name == META_FILE || name == keep {
            continue;
        }
        if name.ends_with(".tmp") || (name.starts_with("index-") && name.ends_with(".usearch")) {
            let path = entry.path();
            if let Err(e) = fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %e, "could not remove a stray file");
            }
        }
    }
}

fn checksum_file(path: &Path) -> Result<(u64, u32), StorageError> {
    let mut file = File::open(path).map_err(io_err("opening the index", path))?;
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .map_err(io_err("reading the index", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
    Ok((len, hasher.finalize()))
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), StorageError> {
    let mut file = File::create(path).map_err(io_err("creating a file", path))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(io_err("writing a file", path))
}

pub(super) fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("syncing a directory", dir))
}
