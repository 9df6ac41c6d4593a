//! Vector collections: named sets of fixed-dimension `f32` vectors with string keys and opaque
//! metadata, searched approximately (HNSW, via usearch) and checkpointed to disk.
//! This file holds the overview, the limits and the index tunables; each concept is its own
//! sub-module, so that none has to be read to change another.
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

mod checkpoint;
mod collection;
mod error;
mod meta;
mod search;
mod spec;
mod store;

use std::sync::{Mutex, MutexGuard};

pub use collection::VectorCollection;
pub use error::VectorError;
pub use search::{Hit, SearchFilter};
pub use spec::{CollectionSpec, Metric};
pub use store::VectorStore;

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

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
