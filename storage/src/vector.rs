//! Vector collections: named sets of fixed-dimension `f32` vectors with string keys and opaque
//! metadata, searched approximately (HNSW, via usearch) and checkpointed to disk.
//!
//! # Why this shape
//!
//! The engine's `embed`/`upsert`/`nearest` operators need a per-node store that answers
//! "the k vectors nearest to this one" in well under a millisecond for 10⁵–10⁶ vectors, so a
//! brute-force scan is not enough; usearch is a small single-header HNSW library that builds
//! with only a C++ compiler. Its keys are `u64`, so this module keeps the mapping from the
//! user's string keys (and their metadata) itself and never exposes usearch types.
//!
//! # Distances
//!
//! [`Hit::distance`] is "smaller is closer" for every metric:
//!
//! * [`Metric::Cosine`]: `1 − cos(a, b)`, in `[0, 2]`. Vectors need not be normalised. A zero
//!   vector has no direction and is refused (as a stored vector and as a query).
//! * [`Metric::L2`]: the Euclidean distance `‖a − b‖` (usearch computes the square; the root
//!   is taken before it is returned, which does not change the order).
//! * [`Metric::InnerProduct`]: `1 − a·b`. It can be negative. For unit vectors it equals the
//!   cosine distance; use it only when the vectors are already normalised or when magnitude
//!   is meant to count.
//!
//! # Index parameters
//!
//! Every collection uses connectivity [`HNSW_CONNECTIVITY`], `expansion_add` [`HNSW_EXPANSION_ADD`]
//! and `expansion_search` [`HNSW_EXPANSION_SEARCH`], with vectors stored as `f32` (no
//! quantisation), so [`VectorCollection::get`] returns exactly what was stored and recall does
//! not depend on the value range of the data. The figures behind the choice are in
//! `examples/vector_bench.rs` and in the tests (recall@10 ≥ 0.95 on random 128-d vectors, which
//! are harder than real embeddings).
//!
//! # Files
//!
//! A [`VectorStore`] owns one directory with one sub-directory per collection, named after the
//! collection. Each collection directory holds:
//!
//! * `collection.meta`: format version, name, spec, index parameters, the checkpoint
//!   generation, the length and CRC32 of the index file it belongs to, and the key → id →
//!   metadata table; the whole file ends with its own CRC32.
//! * `index-<generation>.usearch`: the usearch index saved at that checkpoint.
//!
//! A checkpoint writes the new index file and the new meta file under temporary names, syncs
//! them, renames the index file into place, and then renames the meta file: that last rename
//! is the commit point. A crash at any moment leaves the previous meta file pointing at the
//! previous index file, which is removed only after the commit. Whatever is damaged on open
//! (a checksum, a length, a count that does not match) is reported as
//! [`VectorError::Corrupt`] naming the file; nothing is loaded silently wrong.
//!
//! Names starting with `.` are reserved: the store uses them for collections being created or
//! dropped, and removes such leftovers on open.
//!
//! # Concurrency
//!
//! Collections are `Send + Sync` and shared as `Arc<VectorCollection>`. Writes (upsert,
//! delete) are serialised per collection; searches and reads run concurrently with each other.
//! A large [`VectorCollection::upsert_batch`] inserts on several threads.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use usearch::{Index, IndexOptions, MetricKind, ScalarKind};

use crate::StorageError;

/// Largest dimension a collection may have; larger vectors are almost certainly a mistake
/// (the biggest common embedding models are 3072-d) and would make one vector > 16 KiB.
pub const MAX_DIM: usize = 4096;
/// Longest collection name in bytes, so that a name always fits in one path component.
pub const MAX_NAME_BYTES: usize = 128;
/// Longest key in bytes; keys are held in memory twice (map and table), so they stay small.
pub const MAX_KEY_BYTES: usize = 1024;
/// Largest metadata blob per vector; metadata lives in memory next to the index.
pub const MAX_METADATA_BYTES: usize = 64 * 1024;
/// Largest `k` a search answers; larger requests are capped to this.
pub const MAX_K: usize = 1000;

/// HNSW connectivity (edges per node on the upper levels, twice that on the base level).
/// 32 rather than the common 16: on hard (high intrinsic dimension) data, 16 needed twice the
/// search expansion for the same recall; the cost is 256 bytes of graph per vector.
pub const HNSW_CONNECTIVITY: usize = 32;
/// Candidate list size while inserting; higher builds a better graph, more slowly.
pub const HNSW_EXPANSION_ADD: usize = 128;
/// Candidate list size while searching (at least `k` is always used). Chosen with
/// `examples/vector_bench.rs` as the smallest value giving recall@10 ≥ 0.97 on 100 000 random
/// 128-d vectors (512 gave 0.94 there, 0.99 on 50 000). Random vectors are the hard case; real
/// embeddings reach the same recall with far less, see [`VectorCollection::set_search_expansion`].
pub const HNSW_EXPANSION_SEARCH: usize = 768;

const META_FILE: &str = "collection.meta";
const META_MAGIC: &[u8; 8] = b"STVCMETA";
const FORMAT_VERSION: u32 = 1;
/// usearch needs capacity reserved before `add`; it is grown in chunks of at least this many.
const MIN_RESERVE: usize = 1024;
/// A batch at least this large is inserted on several threads.
const PARALLEL_BATCH: usize = 512;

/// Everything that can go wrong with vector collections. Carried inside
/// [`StorageError::Vector`]; each variant names the collection, key or file involved.
#[derive(Debug, thiserror::Error)]
pub enum VectorError {
    /// A metric name that is not one of `cosine`, `l2`, `inner_product` (or `ip`).
    #[error("unknown vector metric {given:?}: expected \"cosine\", \"l2\" or \"inner_product\" (\"ip\")")]
    UnknownMetric {
        /// What was given.
        given: String,
    },

    /// The collection name cannot be used (it names a directory).
    #[error("invalid collection name {name:?}: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },

    /// The dimension is 0 or above [`MAX_DIM`].
    #[error("invalid vector dimension {dim}: must be between 1 and {max}")]
    InvalidDimension {
        /// The dimension asked for.
        dim: usize,
        /// [`MAX_DIM`].
        max: usize,
    },

    /// `create` for an existing collection with a different spec.
    #[error("collection {name:?} already exists as {existing}, not {requested}")]
    SpecConflict {
        /// The collection.
        name: String,
        /// Its spec.
        existing: CollectionSpec,
        /// The spec that was asked for.
        requested: CollectionSpec,
    },

    /// No collection of that name.
    #[error("no vector collection named {name:?}")]
    UnknownCollection {
        /// The name asked for.
        name: String,
    },

    /// The collection was dropped while a handle to it was still held.
    #[error("vector collection {name:?} has been dropped")]
    Dropped {
        /// The collection.
        name: String,
    },

    /// A vector or query of the wrong length.
    #[error("collection {collection:?} holds {expected}-d vectors, got {got} values")]
    WrongDimension {
        /// The collection.
        collection: String,
        /// Its dimension.
        expected: usize,
        /// The length given.
        got: usize,
    },

    /// A vector or query containing NaN or an infinity, or (for cosine) only zeros.
    #[error("collection {collection:?}: {what}")]
    BadVector {
        /// The collection.
        collection: String,
        /// What is wrong, with the position of the first bad value.
        what: String,
    },

    /// A key that is empty or longer than [`MAX_KEY_BYTES`].
    #[error("collection {collection:?}: invalid key: {reason}")]
    InvalidKey {
        /// The collection.
        collection: String,
        /// Why (empty, or its length).
        reason: String,
    },

    /// Metadata larger than [`MAX_METADATA_BYTES`].
    #[error("collection {collection:?}: metadata of key {key:?} is {size} bytes, over the limit of {limit}")]
    MetadataTooLarge {
        /// The collection.
        collection: String,
        /// The key it belongs to.
        key: String,
        /// Its size.
        size: usize,
        /// [`MAX_METADATA_BYTES`].
        limit: usize,
    },

    /// A saved file failed its checksum, length or consistency check. Nothing was loaded.
    #[error("damaged vector collection file {path}: {reason}")]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// Which check failed.
        reason: String,
    },

    /// A file-system operation failed.
    #[error("vector store I/O failed while {context} ({path}): {source}")]
    Io {
        /// What the store was doing.
        context: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },

    /// usearch reported a failure (out of memory, a file it cannot read, ...).
    #[error("vector index of collection {collection:?} failed while {context}: {message}")]
    Index {
        /// The collection.
        collection: String,
        /// What was being done.
        context: &'static str,
        /// usearch's message.
        message: String,
    },
}

impl From<VectorError> for StorageError {
    fn from(e: VectorError) -> Self {
        StorageError::Vector(Box::new(e))
    }
}

fn io_err<'a>(
    context: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> StorageError + 'a {
    move |source| {
        VectorError::Io {
            context,
            path: path.to_path_buf(),
            source,
        }
        .into()
    }
}

fn corrupt(path: &Path, reason: impl Into<String>) -> StorageError {
    VectorError::Corrupt {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
    .into()
}

/// How distance between vectors is measured; fixed per collection. See the module docs for
/// what [`Hit::distance`] means under each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    /// `1 − cos(a, b)`: direction only, the usual choice for text embeddings.
    Cosine,
    /// Euclidean distance `‖a − b‖`.
    L2,
    /// `1 − a·b`: for vectors that are already normalised, or when magnitude should count.
    InnerProduct,
}

impl Metric {
    fn code(self) -> u8 {
        match self {
            Metric::Cosine => 1,
            Metric::L2 => 2,
            Metric::InnerProduct => 3,
        }
    }

    fn from_code(code: u8) -> Option<Metric> {
        match code {
            1 => Some(Metric::Cosine),
            2 => Some(Metric::L2),
            3 => Some(Metric::InnerProduct),
            _ => None,
        }
    }

    fn usearch(self) -> MetricKind {
        match self {
            Metric::Cosine => MetricKind::Cos,
            Metric::L2 => MetricKind::L2sq,
            Metric::InnerProduct => MetricKind::IP,
        }
    }

    /// The distance reported to callers, from usearch's raw distance.
    fn public_distance(self, raw: f32) -> f32 {
        match self {
            Metric::L2 => raw.max(0.0).sqrt(),
            Metric::Cosine | Metric::InnerProduct => raw,
        }
    }

    /// The distance computed here, the same way usearch orders results (used when a filtered
    /// search has to fall back to a scan).
    fn exact_distance(self, a: &[f32], b: &[f32]) -> f32 {
        match self {
            Metric::L2 => a
                .iter()
                .zip(b)
                .map(|(x, y)| (x - y) * (x - y))
                .sum::<f32>()
                .sqrt(),
            Metric::InnerProduct => 1.0 - a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>(),
            Metric::Cosine => {
                let (mut dot, mut na, mut nb) = (0.0f32, 0.0f32, 0.0f32);
                for (x, y) in a.iter().zip(b) {
                    dot += x * y;
                    na += x * x;
                    nb += y * y;
                }
                if na == 0.0 || nb == 0.0 {
                    1.0
                } else {
                    1.0 - dot / (na.sqrt() * nb.sqrt())
                }
            }
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Metric::Cosine => "cosine",
            Metric::L2 => "l2",
            Metric::InnerProduct => "inner_product",
        })
    }
}

impl FromStr for Metric {
    type Err = VectorError;

    /// Accepts `cosine`, `l2`, `inner_product` and `ip`, in any ASCII case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "cosine" => Ok(Metric::Cosine),
            "l2" => Ok(Metric::L2),
            "inner_product" | "ip" => Ok(Metric::InnerProduct),
            _ => Err(VectorError::UnknownMetric {
                given: s.to_string(),
            }),
        }
    }
}

/// What a collection holds: the vector dimension and the metric. Fixed at creation, so that
/// `create` can be repeated safely (same spec: nothing happens; another spec: an error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CollectionSpec {
    /// Number of `f32` values per vector, 1..=[`MAX_DIM`].
    pub dim: usize,
    /// How distance is measured.
    pub metric: Metric,
}

impl fmt::Display for CollectionSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-d {}", self.dim, self.metric)
    }
}

/// One search result, nearest first in the returned list.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// The key the vector was stored under.
    pub key: String,
    /// Distance to the query; smaller is closer (meaning per [`Metric`], see module docs).
    pub distance: f32,
    /// The metadata stored with the vector.
    pub metadata: Vec<u8>,
}

/// A search filter: called with a vector's key and metadata, true to keep it.
pub type SearchFilter<'a> = dyn Fn(&str, &[u8]) -> bool + 'a;

fn check_name(name: &str) -> Result<(), StorageError> {
    let bad = |reason| {
        Err(VectorError::InvalidName {
            name: name.to_string(),
            reason,
        }
        .into())
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > MAX_NAME_BYTES {
        return bad("it is longer than 128 bytes");
    }
    if name.starts_with('.') {
        return bad("names starting with '.' (including \".\" and \"..\") are reserved");
    }
    if name.contains(['/', '\\']) {
        return bad("it contains a path separator");
    }
    if name.chars().any(char::is_control) {
        return bad("it contains a control character");
    }
    Ok(())
}

fn check_spec(spec: CollectionSpec) -> Result<(), StorageError> {
    if spec.dim == 0 || spec.dim > MAX_DIM {
        return Err(VectorError::InvalidDimension {
            dim: spec.dim,
            max: MAX_DIM,
        }
        .into());
    }
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

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

/// Key, metadata and usearch id of one vector.
#[derive(Debug)]
struct Entry {
    key: Arc<str>,
    metadata: Box<[u8]>,
}

#[derive(Debug, Default)]
struct State {
    by_key: HashMap<Arc<str>, u64>,
    by_id: HashMap<u64, Entry>,
    /// Ids are never reused, so a replaced vector can be added before the old one is removed.
    next_id: u64,
    /// Bumped on every change; compared with the saved version to skip clean saves.
    version: u64,
}

#[derive(Debug, Default)]
struct SaveState {
    generation: u64,
    saved_version: Option<u64>,
}

/// Bounds concurrent searches to the number of usearch thread contexts reserved; usearch
/// fails a search outright when all contexts are taken.
struct Slots {
    free: Mutex<usize>,
    cond: Condvar,
}

struct SlotGuard<'a>(&'a Slots);

impl Slots {
    fn new(n: usize) -> Slots {
        Slots {
            free: Mutex::new(n),
            cond: Condvar::new(),
        }
    }

    fn acquire(&self) -> SlotGuard<'_> {
        let mut free = lock(&self.free);
        while *free == 0 {
            free = self.cond.wait(free).unwrap_or_else(|p| p.into_inner());
        }
        *free -= 1;
        SlotGuard(self)
    }
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        *lock(&self.0.free) += 1;
        self.0.cond.notify_one();
    }
}

fn thread_slots() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .max(4)
}

/// One named collection of vectors. Obtain it from [`VectorStore`]; it is shared as
/// `Arc<VectorCollection>` and all methods take `&self`.
pub struct VectorCollection {
    name: String,
    spec: CollectionSpec,
    dir: Mutex<PathBuf>,
    /// Only touched under `state`: read lock for search/get/save, write lock for changes,
    /// because usearch's `reserve` must not overlap anything and `add` must not overlap search.
    index: Index,
    state: RwLock<State>,
    save_state: Mutex<SaveState>,
    slots: Slots,
    threads: usize,
    dropped: AtomicBool,
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

fn index_options(spec: CollectionSpec, connectivity: usize) -> IndexOptions {
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
    fn index_err(&self, context: &'static str, e: impl fmt::Display) -> StorageError {
        VectorError::Index {
            collection: self.name.clone(),
            context,
            message: e.to_string(),
        }
        .into()
    }

    fn new(name: &str, spec: CollectionSpec, dir: PathBuf) -> Result<Self, StorageError> {
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

    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
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

    fn check_vector(&self, vector: &[f32], what: &str) -> Result<(), StorageError> {
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

    /// The `k` stored vectors nearest to `query`, nearest first (`k` is capped at [`MAX_K`]).
    ///
    /// With a `filter`, only vectors for which `filter(key, metadata)` is true are returned,
    /// and still `k` of them when at least `k` match: the graph search keeps going until it
    /// has `k` matches, and if it still has fewer (a very selective filter, or a part of the
    /// graph cut off by deletions) the matching vectors are scanned exactly. The filter may be
    /// called more than once per vector. A panic in the filter is passed on to the caller.
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        filter: Option<&SearchFilter<'_>>,
    ) -> Result<Vec<Hit>, StorageError> {
        self.check_vector(query, "the query")?;
        let k = k.min(MAX_K);
        let state = self.read();
        if k == 0 || state.by_id.is_empty() {
            return Ok(Vec::new());
        }
        let _slot = self.slots.acquire();
        let matches = match filter {
            None => self
                .index
                .search(query, k)
                .map_err(|e| self.index_err("searching", e))?,
            Some(filter) => {
                let panicked = Mutex::new(None);
                let predicate = |id: u64| match state.by_id.get(&id) {
                    None => false,
                    Some(entry) => {
                        if lock(&panicked).is_some() {
                            return false;
                        }
                        // usearch calls this through `extern "C"`, where a panic would abort
                        // the process; catch it and re-raise it after the search.
                        match panic::catch_unwind(AssertUnwindSafe(|| {
                            filter(&entry.key, &entry.metadata)
                        })) {
                            Ok(keep) => keep,
                            Err(p) => {
                                *lock(&panicked) = Some(p);
                                false
                            }
                        }
                    }
                };
                let result = self.index.filtered_search(query, k, predicate);
                if let Some(p) = panicked.into_inner().unwrap_or_else(|p| p.into_inner()) {
                    panic::resume_unwind(p);
                }
                result.map_err(|e| self.index_err("searching", e))?
            }
        };
        let mut hits = Vec::with_capacity(matches.keys.len());
        for (id, raw) in matches.keys.iter().zip(&matches.distances) {
            if let Some(entry) = state.by_id.get(id) {
                hits.push(Hit {
                    key: entry.key.to_string(),
                    distance: self.spec.metric.public_distance(*raw),
                    metadata: entry.metadata.to_vec(),
                });
            }
        }
        if let Some(filter) = filter {
            if hits.len() < k {
                return self.scan(&state, query, k, filter, hits);
            }
        }
        Ok(hits)
    }

    /// Exact filtered search over every stored vector, used when the graph search found fewer
    /// than `k` matches. Keeps `found` if the scan finds nothing more.
    fn scan(
        &self,
        state: &State,
        query: &[f32],
        k: usize,
        filter: &SearchFilter<'_>,
        found: Vec<Hit>,
    ) -> Result<Vec<Hit>, StorageError> {
        let mut vector = vec![0.0f32; self.spec.dim];
        let mut all = Vec::new();
        for (id, entry) in &state.by_id {
            if !filter(&entry.key, &entry.metadata) {
                continue;
            }
            match self.index.get(*id, &mut vector) {
                Ok(1) => {}
                Ok(_) => continue,
                Err(e) => return Err(self.index_err("reading a vector", e)),
            }
            let distance = self.spec.metric.exact_distance(query, &vector);
            all.push((distance, entry));
        }
        if all.len() <= found.len() {
            return Ok(found);
        }
        all.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.key.cmp(&b.1.key)));
        all.truncate(k);
        Ok(all
            .into_iter()
            .map(|(distance, entry)| Hit {
                key: entry.key.to_string(),
                distance,
                metadata: entry.metadata.to_vec(),
            })
            .collect())
    }

    /// Writes a checkpoint (index file + meta file, see the module docs) if anything changed
    /// since the last one. A crash during `save` leaves the previous checkpoint intact.
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

    fn encode_meta(
        &self,
        state: &State,
        generation: u64,
        index_len: u64,
        index_crc: u32,
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + state.by_id.len() * 48);
        out.extend_from_slice(META_MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        put_bytes(&mut out, self.name.as_bytes());
        out.extend_from_slice(&(self.spec.dim as u32).to_le_bytes());
        out.push(self.spec.metric.code());
        out.extend_from_slice(&(self.index.connectivity() as u32).to_le_bytes());
        out.extend_from_slice(&generation.to_le_bytes());
        out.extend_from_slice(&state.version.to_le_bytes());
        out.extend_from_slice(&state.next_id.to_le_bytes());
        out.extend_from_slice(&index_len.to_le_bytes());
        out.extend_from_slice(&index_crc.to_le_bytes());
        out.extend_from_slice(&(state.by_id.len() as u64).to_le_bytes());
        let mut ids: Vec<_> = state.by_id.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            if let Some(entry) = state.by_id.get(&id) {
                out.extend_from_slice(&id.to_le_bytes());
                put_bytes(&mut out, entry.key.as_bytes());
                put_bytes(&mut out, &entry.metadata);
            }
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Loads the collection saved in `dir`, verifying both files.
    fn load(name: &str, dir: &Path) -> Result<Self, StorageError> {
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

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
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

fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("syncing a directory", dir))
}

/// The decoded meta file.
struct Meta {
    name: String,
    spec: CollectionSpec,
    connectivity: usize,
    generation: u64,
    version: u64,
    next_id: u64,
    index_len: u64,
    index_crc: u32,
    entries: Vec<(u64, String, Vec<u8>)>,
}

/// Bounds-checked reader over a meta file; every short read is a `Corrupt` error.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], StorageError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len());
        let Some(end) = end else {
            return Err(corrupt(
                self.path,
                format!("truncated while reading {what}"),
            ));
        };
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn u8(&mut self, what: &str) -> Result<u8, StorageError> {
        Ok(self.take(1, what)?[0])
    }

    fn u32(&mut self, what: &str) -> Result<u32, StorageError> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4, what)?);
        Ok(u32::from_le_bytes(a))
    }

    fn u64(&mut self, what: &str) -> Result<u64, StorageError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8, what)?);
        Ok(u64::from_le_bytes(a))
    }

    fn bytes(&mut self, what: &str) -> Result<&'a [u8], StorageError> {
        let len = self.u32(what)? as usize;
        self.take(len, what)
    }

    fn string(&mut self, what: &str) -> Result<String, StorageError> {
        let bytes = self.bytes(what)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| corrupt(self.path, format!("{what} is not UTF-8")))
    }
}

impl Meta {
    fn decode(bytes: &[u8], path: &Path) -> Result<Meta, StorageError> {
        if bytes.len() < META_MAGIC.len() + 4 + 4 || &bytes[..META_MAGIC.len()] != META_MAGIC {
            return Err(corrupt(
                path,
                "not a vector collection meta file (bad header)",
            ));
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        let mut stored = [0u8; 4];
        stored.copy_from_slice(crc);
        let stored = u32::from_le_bytes(stored);
        let actual = crc32fast::hash(body);
        if stored != actual {
            return Err(corrupt(
                path,
                format!("CRC32 mismatch (stored {stored:08x}, computed {actual:08x}): truncated or damaged"),
            ));
        }
        let mut r = Reader {
            bytes: body,
            pos: META_MAGIC.len(),
            path,
        };
        let version = r.u32("the format version")?;
        if version != FORMAT_VERSION {
            return Err(corrupt(
                path,
                format!("format version {version}, this build reads {FORMAT_VERSION}"),
            ));
        }
        let name = r.string("the name")?;
        let dim = r.u32("the dimension")? as usize;
        let metric_code = r.u8("the metric")?;
        let Some(metric) = Metric::from_code(metric_code) else {
            return Err(corrupt(path, format!("unknown metric code {metric_code}")));
        };
        let spec = CollectionSpec { dim, metric };
        if dim == 0 || dim > MAX_DIM {
            return Err(corrupt(path, format!("invalid dimension {dim}")));
        }
        let connectivity = r.u32("the connectivity")? as usize;
        let generation = r.u64("the generation")?;
        let data_version = r.u64("the data version")?;
        let next_id = r.u64("the next id")?;
        let index_len = r.u64("the index length")?;
        let index_crc = r.u32("the index CRC")?;
        let count = r.u64("the entry count")?;
        // Each entry takes at least 16 bytes, which bounds the allocation below.
        if count > (body.len() / 16) as u64 {
            return Err(corrupt(
                path,
                format!("entry count {count} exceeds the file size"),
            ));
        }
        let mut entries = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let id = r.u64("an entry id")?;
            let key = r.string("an entry key")?;
            let metadata = r.bytes("entry metadata")?.to_vec();
            entries.push((id, key, metadata));
        }
        if r.pos != body.len() {
            return Err(corrupt(path, "trailing bytes after the last entry"));
        }
        Ok(Meta {
            name,
            spec,
            connectivity,
            generation,
            version: data_version,
            next_id,
            index_len,
            index_crc,
            entries,
        })
    }
}
