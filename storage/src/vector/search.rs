//! Nearest-neighbour search: the graph search, the filter (which must not unwind through
//! usearch), the exact scan it falls back to, and the bound on concurrent searches.

use std::panic::{self, AssertUnwindSafe};
use std::sync::{Condvar, Mutex};

use super::collection::State;
use super::{lock, VectorCollection, MAX_K};
use crate::StorageError;

/// One search result, nearest first in the returned list.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// The key the vector was stored under.
    pub key: String,
    /// Distance to the query; smaller is closer (meaning per [`Metric`](super::Metric), see the
    /// [module docs](super)).
    pub distance: f32,
    /// The metadata stored with the vector.
    pub metadata: Vec<u8>,
}

/// A search filter: called with a vector's key and metadata, true to keep it.
pub type SearchFilter<'a> = dyn Fn(&str, &[u8]) -> bool + 'a;

/// Bounds concurrent searches to the number of usearch thread contexts reserved; usearch
/// fails a search outright when all contexts are taken.
pub(super) struct Slots {
    free: Mutex<usize>,
    cond: Condvar,
}

pub(super) struct SlotGuard<'a>(&'a Slots);

impl Slots {
    pub(super) fn new(n: usize) -> Slots {
        Slots {
            free: Mutex::new(n),
            cond: Condvar::new(),
        }
    }

    pub(super) fn acquire(&self) -> SlotGuard<'_> {
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

pub(super) fn thread_slots() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .max(4)
}

impl VectorCollection {
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
}
