//! Reads of what dataflows keep (KV views, series, vector collections), shared by the HTTP
//! and QUIC front doors so both answer the same way.

use serde_json::{Map, Value as Json};
use starling_operators::embed::{Embedder, HashingEmbedder};
use starling_operators::render::state::now_ms;
use starling_operators::render::vectors::metadata_matches;
use starling_storage::{Hit, KvPage, StorageError};

use super::Store;
use crate::{Engine, EngineError};

/// Most entries, points or hits one read returns.
pub const MAX_PAGE: usize = 10_000;

/// What a vector search looks for.
#[derive(Clone, Debug)]
pub enum VectorQuery {
    /// A vector of the collection's dimension.
    Vector(Vec<f32>),
    /// A text, embedded with the built-in embedder at the collection's dimension.
    Text(String),
}

/// Checks a page size: 1 to [`MAX_PAGE`].
pub fn check_limit(limit: usize) -> Result<usize, EngineError> {
    if limit == 0 || limit > MAX_PAGE {
        return Err(EngineError::BadRequest(format!(
            "limit must be between 1 and {MAX_PAGE}, found {limit}"
        )));
    }
    Ok(limit)
}

fn missing(what: &str) -> EngineError {
    EngineError::Internal(format!("this store has no {what}"))
}

impl Store {
    /// The live value of `key` in `view` (a string key as is, others as JSON text).
    pub fn kv_get(&self, view: &str, key: &str) -> Result<Option<Vec<u8>>, EngineError> {
        let kv = self.kv().ok_or_else(|| missing("KV views"))?;
        Ok(kv.get(view, key.as_bytes(), now_ms())?)
    }

    /// A page of live entries whose key starts with `prefix`, after `after`.
    pub fn kv_scan(
        &self,
        view: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<KvPage, EngineError> {
        let kv = self.kv().ok_or_else(|| missing("KV views"))?;
        let limit = check_limit(limit)?;
        Ok(kv.scan(
            view,
            prefix.as_bytes(),
            after.map(str::as_bytes),
            limit,
            now_ms(),
        )?)
    }

    /// Points of `key` in `series` with times in `[from, to)`.
    pub fn series_range(
        &self,
        series: &str,
        key: &str,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, EngineError> {
        let store = self.series().ok_or_else(|| missing("series"))?;
        let limit = check_limit(limit)?;
        if to < from {
            return Err(EngineError::BadRequest(format!(
                "`to` ({to}) is before `from` ({from})"
            )));
        }
        Ok(store.range(series, key.as_bytes(), from, to, limit)?)
    }

    /// The `k` nearest points, optionally only those whose metadata has every `filter` field.
    pub fn vector_search(
        &self,
        collection: &str,
        query: VectorQuery,
        k: usize,
        filter: &Map<String, Json>,
    ) -> Result<Vec<Hit>, EngineError> {
        if k == 0 || k > starling_storage::MAX_K {
            return Err(EngineError::BadRequest(format!(
                "k must be between 1 and {}, found {k}",
                starling_storage::MAX_K
            )));
        }
        let vectors = self
            .vectors()
            .ok_or_else(|| missing("vector collections"))?;
        let c = vectors.get(collection)?;
        let q = match query {
            VectorQuery::Vector(v) => v,
            VectorQuery::Text(text) => HashingEmbedder::new(c.spec().dim)
                .map_err(|e| EngineError::BadRequest(e.to_string()))?
                .embed(&text),
        };
        let filter: Vec<(String, Json)> =
            filter.iter().map(|(f, v)| (f.clone(), v.clone())).collect();
        let keep = |_: &str, meta: &[u8]| metadata_matches(&filter, meta);
        let hits: Result<Vec<Hit>, StorageError> = if filter.is_empty() {
            c.search(&q, k, None)
        } else {
            c.search(&q, k, Some(&keep))
        };
        Ok(hits?)
    }
}

/// Reads of what this node's dataflows keep. In a cluster a view, series or collection is
/// written on the node that processes each key, so the node scatters a client's read to every
/// node and merges; each node answers with these.
impl Engine {
    fn local_store(&self) -> Result<&std::sync::Arc<Store>, EngineError> {
        self.store().ok_or_else(|| {
            EngineError::NoStorage(
                "this node runs without storage (durability `none`), so it keeps no views, \
                 series or vectors"
                    .into(),
            )
        })
    }

    /// The live value of `key` in this node's own `view`.
    pub fn kv_get_local(&self, view: &str, key: &str) -> Result<Option<Vec<u8>>, EngineError> {
        self.local_store()?.kv_get(view, key)
    }

    /// A page of this node's own part of a view.
    pub fn kv_scan_local(
        &self,
        view: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<KvPage, EngineError> {
        self.local_store()?.kv_scan(view, prefix, after, limit)
    }

    /// Points of a series key that this node wrote.
    pub fn series_range_local(
        &self,
        series: &str,
        key: &str,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, EngineError> {
        self.local_store()?
            .series_range(series, key, from, to, limit)
    }

    /// The `k` nearest points of this node's own collection.
    pub fn vector_search_local(
        &self,
        collection: &str,
        query: VectorQuery,
        k: usize,
        filter: &Map<String, Json>,
    ) -> Result<Vec<Hit>, EngineError> {
        self.local_store()?
            .vector_search(collection, query, k, filter)
    }
}
