//! Time series: one value per `(key, time)` in named series, read by time range — the role
//! TimescaleDB plays for window aggregates.
//!
//! # Layout
//!
//! * One sled tree per series, named `b"starling.ts/"` + name length (`u32` BE) + name.
//! * Each point at key `[key length u32 BE][key][time_ms u64 BE]`, value
//!   `[crc32 u32 BE][payload]`; the CRC covers the stored key and the payload, so damage and a
//!   value under the wrong `(key, time)` are both detected.
//!
//!   The length prefix keeps keys apart whatever their bytes ("a" at any time never sorts
//!   among "ab"'s points), and the big-endian time makes sled's order time order within a key,
//!   so [`SeriesStore::range`] is one sled range scan.
//! * A write or a batch is one `sled::Batch`, atomic also across a crash. Writing an existing
//!   `(key, time)` replaces its value (a late correction).
//!
//! Durability is as for [`crate::KvStore`]: sled flushes every 500 ms, [`SeriesStore::flush`]
//! and dropping the last handle write everything, a crash loses whole recent batches only.

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use crate::sled_dir::{
    be_u32, be_u64, check_len, check_name, open_db, rlock, wlock, NamedTrees, MAX_NAME_BYTES,
};
use crate::StorageError;

/// Largest key, in bytes (as for KV views).
pub const SERIES_MAX_KEY_BYTES: usize = 4 * 1024;
/// Largest value of one point, in bytes.
pub const SERIES_MAX_VALUE_BYTES: usize = 1024 * 1024;
/// Largest total of key and value bytes in one [`SeriesStore::write_batch`], so that one
/// atomic batch stays small enough to build in memory and to replay after a crash.
pub const SERIES_MAX_BATCH_BYTES: usize = 64 * 1024 * 1024;

const TREE_PREFIX: &[u8] = b"starling.ts/";
const VALUE_HEADER: usize = 4;
/// Points removed per atomic batch by `retain`.
const RETAIN_CHUNK: usize = 4096;

/// One write of a [`SeriesStore::write_batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeriesWrite {
    /// Stores `value` at `(key, time_ms)`, replacing any previous value there.
    Put {
        /// The series key (at most [`SERIES_MAX_KEY_BYTES`]).
        key: Vec<u8>,
        /// Time of the point, ms.
        time_ms: u64,
        /// The value (at most [`SERIES_MAX_VALUE_BYTES`]).
        value: Vec<u8>,
    },
    /// Removes the point at `(key, time_ms)` (no effect when absent).
    Delete {
        /// The series key.
        key: Vec<u8>,
        /// Time of the point, ms.
        time_ms: u64,
    },
}

/// `(key, time, Some(value))` to store a point, `(key, time, None)` to delete one.
type PointOp<'a> = (&'a [u8], u64, Option<&'a [u8]>);

/// Time-series points on sled; see the module docs for the layout.
///
/// A cheap, cloneable handle (`Send + Sync`); flushed and closed when the last clone is
/// dropped. Only one process may open a directory at a time.
#[derive(Clone)]
pub struct SeriesStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    dir: PathBuf,
    series: NamedTrees,
    /// Shared by writers, exclusive for `drop_series`, so that no write lands in a tree that
    /// is being dropped.
    gate: RwLock<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Err(e) = self.db.flush() {
            tracing::error!(dir = %self.dir.display(), error = %e, "flushing the series store on close failed");
        }
    }
}

impl std::fmt::Debug for SeriesStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeriesStore")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

fn point_key(key: &[u8], time_ms: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(12 + key.len());
    k.extend_from_slice(&(key.len() as u32).to_be_bytes());
    k.extend_from_slice(key);
    k.extend_from_slice(&time_ms.to_be_bytes());
    k
}

/// `(key, time)` of a stored point key, or `None` when malformed.
fn decode_point_key(k: &[u8]) -> Option<(&[u8], u64)> {
    let len = be_u32(k, 0)? as usize;
    if k.len() != 12 + len {
        return None;
    }
    Some((&k[4..4 + len], be_u64(k, 4 + len)?))
}

fn value_crc(point_key: &[u8], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(point_key);
    h.update(payload);
    h.finalize()
}

fn encode_value(point_key: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(VALUE_HEADER + payload.len());
    v.extend_from_slice(&value_crc(point_key, payload).to_be_bytes());
    v.extend_from_slice(payload);
    v
}

fn decode_value<'v>(point_key: &[u8], value: &'v [u8]) -> Result<&'v [u8], String> {
    let Some(stored) = be_u32(value, 0) else {
        return Err(format!(
            "value is {} bytes, shorter than the {VALUE_HEADER}-byte header",
            value.len()
        ));
    };
    let payload = &value[VALUE_HEADER..];
    let actual = value_crc(point_key, payload);
    if stored != actual {
        return Err(format!(
            "checksum mismatch (stored {stored:#010x}, computed {actual:#010x})"
        ));
    }
    Ok(payload)
}

fn corrupt(series: &str, key: &[u8], time_ms: u64, reason: String) -> StorageError {
    tracing::warn!(series, key = %key.escape_ascii(), time_ms, %reason, "corrupt series point");
    StorageError::CorruptSeries {
        series: series.to_string(),
        key: key.to_vec(),
        time_ms,
        reason,
    }
}

impl SeriesStore {
    /// Opens (or creates) the series store in `dir` and loads its series list.
    ///
    /// Fails with [`StorageError::Unwritable`] when `dir` cannot be created or written, and
    /// with [`StorageError::Backend`] when sled cannot open it — in particular when another
    /// process (or another open handle in this one) holds it; the message says so.
    pub fn open(dir: &Path) -> Result<SeriesStore, StorageError> {
        let db = open_db(dir, "series store")?;
        let series = NamedTrees::open(&db, TREE_PREFIX, "series")?;
        tracing::info!(dir = %dir.display(), series = series.all().len(), "series store opened");
        Ok(SeriesStore {
            inner: Arc::new(Inner {
                db,
                dir: dir.to_path_buf(),
                series,
                gate: RwLock::new(()),
            }),
        })
    }

    /// The directory this store lives in.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Stores `value` at `(key, time_ms)` in `series`, replacing any previous value there
    /// (upsert). The series is created on first write.
    pub fn put(
        &self,
        series: &str,
        key: &[u8],
        time_ms: u64,
        value: &[u8],
    ) -> Result<(), StorageError> {
        self.write(series, &[(key, time_ms, Some(value))])
    }

    /// Applies `items` in order as one atomic batch (all or nothing, also across a crash).
    /// Every item is checked first; on any error nothing is written.
    pub fn write_batch(&self, series: &str, items: &[SeriesWrite]) -> Result<(), StorageError> {
        let ops: Vec<PointOp<'_>> = items
            .iter()
            .map(|item| match item {
                SeriesWrite::Put {
                    key,
                    time_ms,
                    value,
                } => (&key[..], *time_ms, Some(&value[..])),
                SeriesWrite::Delete { key, time_ms } => (&key[..], *time_ms, None),
            })
            .collect();
        self.write(series, &ops)
    }

    /// Removes the point at `(key, time_ms)`. Returns whether it existed.
    pub fn delete(&self, series: &str, key: &[u8], time_ms: u64) -> Result<bool, StorageError> {
        check_name("series name", series, MAX_NAME_BYTES)?;
        check_len("key bytes", key.len(), SERIES_MAX_KEY_BYTES)?;
        let _gate = rlock(&self.inner.gate);
        let Some(tree) = self.tree(series) else {
            return Ok(false);
        };
        let old = tree
            .remove(point_key(key, time_ms))
            .map_err(|e| StorageError::backend(format!("deleting from series {series:?}"), e))?;
        Ok(old.is_some())
    }

    /// The points of `key` with `from_ms <= time < to_ms`, in time order, at most `limit`.
    /// A damaged point is reported as [`StorageError::CorruptSeries`], never returned.
    pub fn range(
        &self,
        series: &str,
        key: &[u8],
        from_ms: u64,
        to_ms: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StorageError> {
        check_name("series name", series, MAX_NAME_BYTES)?;
        let Some(tree) = self.tree(series) else {
            return Ok(Vec::new());
        };
        if from_ms >= to_ms || limit == 0 {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for item in tree
            .range(point_key(key, from_ms)..point_key(key, to_ms))
            .take(limit)
        {
            let (k, v) =
                item.map_err(|e| StorageError::backend(format!("reading series {series:?}"), e))?;
            let time_ms = be_u64(&k, k.len().saturating_sub(8)).unwrap_or(0);
            let payload = decode_value(&k, &v).map_err(|r| corrupt(series, key, time_ms, r))?;
            out.push((time_ms, payload.to_vec()));
        }
        Ok(out)
    }

    /// Removes every point of `series` with a time before `before_ms`, for all keys, and
    /// returns how many. Visits each key once (a seek per key, then only its old points), in
    /// atomic chunks. A point written below `before_ms` while this runs may or may not stay.
    pub fn retain(&self, series: &str, before_ms: u64) -> Result<u64, StorageError> {
        check_name("series name", series, MAX_NAME_BYTES)?;
        let Some(tree) = self.tree(series) else {
            return Ok(0);
        };
        if before_ms == 0 {
            return Ok(0);
        }
        let err = |e| StorageError::backend(format!("applying retention to series {series:?}"), e);
        let mut removed = 0u64;
        let mut cursor: Bound<Vec<u8>> = Bound::Unbounded;
        loop {
            let Some(first) = tree.range::<Vec<u8>, _>((cursor, Bound::Unbounded)).next() else {
                break;
            };
            let (k, _) = first.map_err(err)?;
            let Some((key, _)) = decode_point_key(&k) else {
                return Err(corrupt(
                    series,
                    &k,
                    0,
                    "malformed point key (bad length prefix)".to_string(),
                ));
            };
            loop {
                let mut batch = sled::Batch::default();
                let mut n = 0usize;
                for item in tree.range(point_key(key, 0)..point_key(key, before_ms)) {
                    let (pk, _) = item.map_err(err)?;
                    batch.remove(pk);
                    n += 1;
                    if n == RETAIN_CHUNK {
                        break;
                    }
                }
                if n > 0 {
                    tree.apply_batch(batch).map_err(err)?;
                    removed += n as u64;
                }
                if n < RETAIN_CHUNK {
                    break;
                }
            }
            cursor = Bound::Excluded(point_key(key, u64::MAX));
        }
        if removed > 0 {
            tracing::debug!(series, before_ms, removed, "series retention applied");
        }
        Ok(removed)
    }

    /// The names of all series, sorted.
    pub fn series(&self) -> Result<Vec<String>, StorageError> {
        let mut names: Vec<String> = self
            .inner
            .series
            .all()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        names.sort();
        Ok(names)
    }

    /// Removes `series` and all its points. Returns whether it existed.
    pub fn drop_series(&self, series: &str) -> Result<bool, StorageError> {
        check_name("series name", series, MAX_NAME_BYTES)?;
        let _gate = wlock(&self.inner.gate);
        self.inner.series.drop_tree(series)
    }

    /// Writes everything buffered to disk.
    pub fn flush(&self) -> Result<(), StorageError> {
        self.inner.series.flush()
    }

    fn tree(&self, series: &str) -> Option<sled::Tree> {
        self.inner.series.get(series)
    }

    fn tree_or_create(&self, series: &str) -> Result<sled::Tree, StorageError> {
        self.inner.series.get_or_create(series)
    }

    fn write(&self, series: &str, ops: &[PointOp<'_>]) -> Result<(), StorageError> {
        check_name("series name", series, MAX_NAME_BYTES)?;
        let mut total = 0usize;
        for (key, _, value) in ops {
            check_len("key bytes", key.len(), SERIES_MAX_KEY_BYTES)?;
            let vlen = value.map_or(0, <[u8]>::len);
            check_len("value bytes", vlen, SERIES_MAX_VALUE_BYTES)?;
            total += key.len() + vlen;
        }
        check_len("batch bytes", total, SERIES_MAX_BATCH_BYTES)?;
        if ops.is_empty() {
            return Ok(());
        }
        let _gate = rlock(&self.inner.gate);
        let tree = if ops.iter().all(|(_, _, v)| v.is_none()) {
            match self.tree(series) {
                Some(t) => t,
                None => return Ok(()),
            }
        } else {
            self.tree_or_create(series)?
        };
        let mut batch = sled::Batch::default();
        for (key, time_ms, value) in ops {
            let pk = point_key(key, *time_ms);
            match value {
                Some(v) => {
                    let encoded = encode_value(&pk, v);
                    batch.insert(pk, encoded);
                }
                None => batch.remove(pk),
            }
        }
        tree.apply_batch(batch)
            .map_err(|e| StorageError::backend(format!("writing to series {series:?}"), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn point_keys_sort_by_key_then_time_and_never_mix_keys() {
        let ks = [
            point_key(b"", u64::MAX),
            point_key(b"a", 0),
            point_key(b"a", 255),
            point_key(b"a", 256),
            point_key(b"a", u64::MAX),
            point_key(b"ab", 0),
        ];
        assert!(ks.windows(2).all(|w| w[0] < w[1]));
        // No point of "a" falls in the range of "ab" and vice versa.
        assert!(point_key(b"a", u64::MAX) < point_key(b"ab", 0));
        assert_eq!(
            decode_point_key(&point_key(b"xy", 9)),
            Some((&b"xy"[..], 9))
        );
        assert_eq!(decode_point_key(&point_key(b"xy", 9)[..5]), None);
    }

    #[test]
    fn values_are_checked_against_their_key() {
        let pk = point_key(b"k", 5);
        let v = encode_value(&pk, b"data");
        assert_eq!(decode_value(&pk, &v), Ok(&b"data"[..]));
        assert!(decode_value(&point_key(b"k", 6), &v).is_err());
        assert!(decode_value(&pk, &v[..2]).is_err());
    }
}
