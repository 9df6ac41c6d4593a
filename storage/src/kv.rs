//! KV views: the latest value per key, with optional expiry — what a Redis user expects of a
//! materialized table.
//!
//! # Layout
//!
//! * One sled tree per view, named `b"starling.kv/"` + name length (`u32` BE) + name (the same
//!   length-prefixed scheme as the event log's `starling.log/` trees, so the families never
//!   collide).
//! * In a view's tree:
//!   * each entry at key `[0x00][user key]`, value `[crc32 u32 BE][expires_at_ms u64 BE, 0 =
//!     never][payload]`. The CRC covers the stored key, the expiry and the payload, so damage
//!     and a value stored under the wrong key are both detected;
//!   * the expiry index at key `[0x01][expires_at_ms u64 BE][user key]`, empty value, for
//!     entries that expire. Big-endian times make sled's order the expiry order, so
//!     [`KvStore::expire`] reads only the index entries that are due, never the whole view.
//!
//!   The index lives in the view's own tree (not a tree of its own) so that an entry and its
//!   index entry change in one `sled::Batch`, which sled applies atomically, also across a
//!   crash: a write, a batch of writes and an expiry are all-or-nothing.
//!
//! # Concurrency
//!
//! Writers read the previous expiry of each key before building their batch (to remove its
//! index entry). Two writers racing on one key can leave an index entry that no longer matches
//! the stored value; that is harmless because `expire` checks the stored expiry before removing
//! anything, and drops index entries that do not match. The entry's own index entry is always
//! written by the batch that wrote the entry, so no expiring entry is ever left unindexed.
//! `expire` and `drop_view` take a store-wide gate exclusively (per chunk), writers take it
//! shared, so an expiry never removes a value written after it was checked.
//!
//! # Durability
//!
//! A write is in sled's buffer when the call returns; sled flushes every 500 ms, and
//! [`KvStore::flush`] (or dropping the last handle) writes everything. A crash loses at most
//! the writes of the last flush interval, as whole batches. Views are meant to be rebuilt from
//! the event log after a checkpoint, so this window is a cost of replay, not of data.

use std::collections::HashMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use crate::sled_dir::{
    be_u32, be_u64, check_len, check_name, open_db, rlock, wlock, NamedTrees, MAX_NAME_BYTES,
};
use crate::StorageError;

/// Largest key, in bytes. Keys are copied into the expiry index and into page cursors, so
/// they are kept small; put a big identifier's hash in the key instead.
pub const KV_MAX_KEY_BYTES: usize = 4 * 1024;
/// Largest value, in bytes. A view holds the latest state per key, not blobs.
pub const KV_MAX_VALUE_BYTES: usize = 1024 * 1024;
/// Largest total of key and value bytes in one [`KvStore::put_batch`], so that one atomic
/// batch stays small enough to build in memory and to replay quickly after a crash.
pub const KV_MAX_BATCH_BYTES: usize = 64 * 1024 * 1024;

const TREE_PREFIX: &[u8] = b"starling.kv/";
const DATA_TAG: u8 = 0;
const EXPIRY_TAG: u8 = 1;
const VALUE_HEADER: usize = 12;
/// Index entries handled per atomic batch (and per hold of the gate) in `expire`, so a big
/// sweep neither builds a huge batch nor blocks writers for long.
const EXPIRE_CHUNK: usize = 1024;

/// One write of a [`KvStore::put_batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvWrite {
    /// Sets `key` to `value`, replacing any previous value and expiry.
    Put {
        /// The key (at most [`KV_MAX_KEY_BYTES`]).
        key: Vec<u8>,
        /// The value (at most [`KV_MAX_VALUE_BYTES`]).
        value: Vec<u8>,
        /// Wall-clock time (ms since the Unix epoch) from which the entry reads as absent;
        /// `None` never expires. `Some(0)` is refused (0 means "never" on disk).
        expires_at_ms: Option<u64>,
    },
    /// Removes `key` (no effect when absent).
    Delete {
        /// The key.
        key: Vec<u8>,
    },
}

/// One page of [`KvStore::scan`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KvPage {
    /// Live `(key, value)` pairs in key byte order.
    pub items: Vec<(Vec<u8>, Vec<u8>)>,
    /// The last key returned, when more keys may follow: pass it as `after` for the next
    /// page. `None` when the prefix is exhausted.
    pub next: Option<Vec<u8>>,
}

/// Latest-value-per-key views on sled; see the module docs for layout and guarantees.
///
/// A cheap, cloneable handle (`Send + Sync`); the store is flushed and closed when the last
/// clone is dropped. Only one process may open a directory at a time.
#[derive(Clone)]
pub struct KvStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    dir: PathBuf,
    views: NamedTrees,
    /// Shared by writers, exclusive for `expire` and `drop_view` (see the module docs).
    gate: RwLock<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Err(e) = self.db.flush() {
            tracing::error!(dir = %self.dir.display(), error = %e, "flushing the KV store on close failed");
        }
    }
}

impl std::fmt::Debug for KvStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvStore")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

fn data_key(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + key.len());
    k.push(DATA_TAG);
    k.extend_from_slice(key);
    k
}

fn expiry_key(expires_at_ms: u64, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + key.len());
    k.push(EXPIRY_TAG);
    k.extend_from_slice(&expires_at_ms.to_be_bytes());
    k.extend_from_slice(key);
    k
}

fn value_crc(data_key: &[u8], expires_at_ms: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(data_key);
    h.update(&expires_at_ms.to_be_bytes());
    h.update(payload);
    h.finalize()
}

fn encode_value(data_key: &[u8], expires_at_ms: u64, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(VALUE_HEADER + payload.len());
    v.extend_from_slice(&value_crc(data_key, expires_at_ms, payload).to_be_bytes());
    v.extend_from_slice(&expires_at_ms.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// Checks a stored value against its data key; returns `(expires_at_ms, payload)`.
fn decode_value<'v>(data_key: &[u8], value: &'v [u8]) -> Result<(u64, &'v [u8]), String> {
    let (Some(stored), Some(expires)) = (be_u32(value, 0), be_u64(value, 4)) else {
        return Err(format!(
            "value is {} bytes, shorter than the {VALUE_HEADER}-byte header",
            value.len()
        ));
    };
    let payload = &value[VALUE_HEADER..];
    let actual = value_crc(data_key, expires, payload);
    if stored != actual {
        return Err(format!(
            "checksum mismatch (stored {stored:#010x}, computed {actual:#010x})"
        ));
    }
    Ok((expires, payload))
}

/// The expiry field of a stored value, unchecked (0 when too short). Used only to find index
/// entries to remove; a wrong answer leaves a stale index entry, which `expire` tolerates.
fn raw_expiry(value: &[u8]) -> u64 {
    be_u64(value, 4).unwrap_or(0)
}

fn is_live(expires_at_ms: u64, now_ms: u64) -> bool {
    expires_at_ms == 0 || now_ms < expires_at_ms
}

/// A write with borrowed bytes, so `put` and `put_batch` share one path without copies.
enum Op<'a> {
    Put(&'a [u8], &'a [u8], u64),
    Delete(&'a [u8]),
}

impl Op<'_> {
    fn key(&self) -> &[u8] {
        match self {
            Op::Put(k, _, _) | Op::Delete(k) => k,
        }
    }
}

/// Refuses `Some(0)`, which the on-disk format cannot tell from "never".
fn check_expiry(expires_at_ms: Option<u64>) -> Result<u64, StorageError> {
    match expires_at_ms {
        None => Ok(0),
        Some(0) => Err(StorageError::InvalidInput {
            what: "expiry time",
            value: "0".to_string(),
            reason: "expires_at_ms must be a wall-clock time after 0; use None for no expiry"
                .to_string(),
        }),
        Some(t) => Ok(t),
    }
}

impl KvStore {
    /// Opens (or creates) the KV store in `dir` and loads its view list.
    ///
    /// Fails with [`StorageError::Unwritable`] when `dir` cannot be created or written, and
    /// with [`StorageError::Backend`] when sled cannot open it — in particular when another
    /// process (or another open handle in this one) holds it; the message says so.
    pub fn open(dir: &Path) -> Result<KvStore, StorageError> {
        let db = open_db(dir, "KV store")?;
        let views = NamedTrees::open(&db, TREE_PREFIX, "KV view")?;
        tracing::info!(dir = %dir.display(), views = views.all().len(), "KV store opened");
        Ok(KvStore {
            inner: Arc::new(Inner {
                db,
                dir: dir.to_path_buf(),
                views,
                gate: RwLock::new(()),
            }),
        })
    }

    /// The directory this store lives in.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Sets `key` in `view` to `value`, replacing any previous value and expiry. The view is
    /// created on first write. `expires_at_ms` is a wall-clock time (ms since the Unix epoch)
    /// from which the entry reads as absent; `Some(0)` is refused.
    pub fn put(
        &self,
        view: &str,
        key: &[u8],
        value: &[u8],
        expires_at_ms: Option<u64>,
    ) -> Result<(), StorageError> {
        let expires = check_expiry(expires_at_ms)?;
        self.write(view, &[Op::Put(key, value, expires)])
            .map(|_| ())
    }

    /// Applies `items` in order as one atomic batch (all or nothing, also across a crash).
    /// Every item is checked first; on any error nothing is written.
    pub fn put_batch(&self, view: &str, items: &[KvWrite]) -> Result<(), StorageError> {
        let mut ops = Vec::with_capacity(items.len());
        for item in items {
            ops.push(match item {
                KvWrite::Put {
                    key,
                    value,
                    expires_at_ms,
                } => Op::Put(key, value, check_expiry(*expires_at_ms)?),
                KvWrite::Delete { key } => Op::Delete(key),
            });
        }
        self.write(view, &ops).map(|_| ())
    }

    /// Removes `key` from `view`. Returns whether an entry was stored (an expired entry that
    /// `expire` has not removed yet counts as stored).
    pub fn delete(&self, view: &str, key: &[u8]) -> Result<bool, StorageError> {
        Ok(self.write(view, &[Op::Delete(key)])? > 0)
    }

    /// The value of `key` in `view`, or `None` when absent or expired at `now_ms` (an expired
    /// entry reads as absent before `expire` removes it). A damaged value is reported as
    /// [`StorageError::CorruptKv`], never returned.
    pub fn get(
        &self,
        view: &str,
        key: &[u8],
        now_ms: u64,
    ) -> Result<Option<Vec<u8>>, StorageError> {
        check_name("view name", view, MAX_NAME_BYTES)?;
        let Some(tree) = self.view(view) else {
            return Ok(None);
        };
        let dk = data_key(key);
        let Some(v) = tree
            .get(&dk)
            .map_err(|e| StorageError::backend(format!("reading KV view {view:?}"), e))?
        else {
            return Ok(None);
        };
        let (expires, payload) = decode_value(&dk, &v).map_err(|r| corrupt(view, key, r))?;
        Ok(is_live(expires, now_ms).then(|| payload.to_vec()))
    }

    /// Up to `limit` live entries of `view` whose key starts with `prefix`, in key byte order,
    /// starting after the key `after` (exclusive) when given.
    ///
    /// Paging with `after = page.next` visits every key that is live and present for the
    /// whole walk exactly once, in order, also while other keys are written concurrently (keys
    /// written or removed during the walk may or may not appear). `limit` must be at least 1.
    pub fn scan(
        &self,
        view: &str,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
        now_ms: u64,
    ) -> Result<KvPage, StorageError> {
        check_name("view name", view, MAX_NAME_BYTES)?;
        if limit == 0 {
            return Err(StorageError::InvalidInput {
                what: "page size",
                value: "0".to_string(),
                reason: "a scan must be allowed to return at least one entry".to_string(),
            });
        }
        let Some(tree) = self.view(view) else {
            return Ok(KvPage::default());
        };
        let start = match after {
            // A cursor at or past the prefix continues after it; one before the prefix starts
            // at the prefix.
            Some(a) if a >= prefix => Bound::Excluded(data_key(a)),
            _ => Bound::Included(data_key(prefix)),
        };
        let end = Bound::Excluded(vec![EXPIRY_TAG]);
        let mut page = KvPage::default();
        for item in tree.range::<Vec<u8>, _>((start, end)) {
            let (k, v) =
                item.map_err(|e| StorageError::backend(format!("scanning KV view {view:?}"), e))?;
            let key = &k[1..];
            if !key.starts_with(prefix) {
                break;
            }
            if page.items.len() == limit {
                page.next = page.items.last().map(|(k, _)| k.clone());
                break;
            }
            let (expires, payload) = decode_value(&k, &v).map_err(|r| corrupt(view, key, r))?;
            if is_live(expires, now_ms) {
                page.items.push((key.to_vec(), payload.to_vec()));
            }
        }
        Ok(page)
    }

    /// Removes every entry whose expiry is at or before `now_ms`, in all views, and returns how
    /// many. Reads only the due part of each view's expiry index (ordered by expiry time), in
    /// atomic chunks; stale index entries left by racing writers are dropped on the way.
    pub fn expire(&self, now_ms: u64) -> Result<u64, StorageError> {
        let views: Vec<(String, sled::Tree)> = self.inner.views.all();
        let mut removed = 0u64;
        for (view, tree) in views {
            loop {
                let _gate = wlock(&self.inner.gate);
                let err =
                    |e| StorageError::backend(format!("expiring entries of KV view {view:?}"), e);
                let mut batch = sled::Batch::default();
                let (mut seen, mut n) = (0usize, 0u64);
                for item in tree.range(vec![EXPIRY_TAG]..vec![EXPIRY_TAG + 1]) {
                    let (ik, _) = item.map_err(err)?;
                    let Some(expires) = be_u64(&ik, 1) else {
                        tracing::warn!(view = %view, "dropping a malformed KV expiry index entry");
                        batch.remove(ik);
                        seen += 1;
                        continue;
                    };
                    if expires > now_ms || seen == EXPIRE_CHUNK {
                        break;
                    }
                    let dk = data_key(&ik[9..]);
                    if let Some(v) = tree.get(&dk).map_err(err)? {
                        if raw_expiry(&v) == expires {
                            batch.remove(dk);
                            n += 1;
                        }
                    }
                    batch.remove(ik);
                    seen += 1;
                }
                if seen == 0 {
                    break;
                }
                tree.apply_batch(batch).map_err(err)?;
                removed += n;
                if seen < EXPIRE_CHUNK {
                    break;
                }
            }
        }
        if removed > 0 {
            tracing::debug!(removed, now_ms, "expired KV entries removed");
        }
        Ok(removed)
    }

    /// Every view with its number of stored entries (expired entries that `expire` has not
    /// removed yet included), sorted by name. Counts by scanning, so it costs O(entries).
    pub fn views(&self) -> Result<Vec<(String, u64)>, StorageError> {
        let views: Vec<(String, sled::Tree)> = self.inner.views.all();
        let mut out = Vec::with_capacity(views.len());
        for (view, tree) in views {
            let mut n = 0u64;
            for item in tree.range(vec![DATA_TAG]..vec![EXPIRY_TAG]) {
                item.map_err(|e| StorageError::backend(format!("counting KV view {view:?}"), e))?;
                n += 1;
            }
            out.push((view, n));
        }
        out.sort();
        Ok(out)
    }

    /// Removes `view` and all its entries. Returns whether it existed.
    pub fn drop_view(&self, view: &str) -> Result<bool, StorageError> {
        check_name("view name", view, MAX_NAME_BYTES)?;
        let _gate = wlock(&self.inner.gate);
        self.inner.views.drop_tree(view)
    }

    /// Writes everything buffered to disk.
    pub fn flush(&self) -> Result<(), StorageError> {
        self.inner.views.flush()
    }

    fn view(&self, view: &str) -> Option<sled::Tree> {
        self.inner.views.get(view)
    }

    fn view_or_create(&self, view: &str) -> Result<sled::Tree, StorageError> {
        self.inner.views.get_or_create(view)
    }

    /// Checks and applies `ops` as one batch; returns how many deletes found a stored entry.
    fn write(&self, view: &str, ops: &[Op<'_>]) -> Result<u64, StorageError> {
        check_name("view name", view, MAX_NAME_BYTES)?;
        let mut total = 0usize;
        for op in ops {
            check_len("key bytes", op.key().len(), KV_MAX_KEY_BYTES)?;
            total += op.key().len();
            if let Op::Put(_, value, _) = op {
                check_len("value bytes", value.len(), KV_MAX_VALUE_BYTES)?;
                total += value.len();
            }
        }
        check_len("batch bytes", total, KV_MAX_BATCH_BYTES)?;
        if ops.is_empty() {
            return Ok(0);
        }
        let _gate = rlock(&self.inner.gate);
        let tree = if ops.iter().all(|op| matches!(op, Op::Delete(_))) {
            match self.view(view) {
                Some(t) => t,
                None => return Ok(0),
            }
        } else {
            self.view_or_create(view)?
        };
        let err = |e| StorageError::backend(format!("writing to KV view {view:?}"), e);
        // The expiry (0 = none, `None` = absent) each key has as of the batch so far, so that a
        // key written twice in one batch removes the right index entry.
        let mut current: HashMap<&[u8], Option<u64>> = HashMap::new();
        let mut batch = sled::Batch::default();
        let mut found = 0u64;
        for op in ops {
            let key = op.key();
            let dk = data_key(key);
            let old = match current.get(key) {
                Some(old) => *old,
                None => tree.get(&dk).map_err(err)?.map(|v| raw_expiry(&v)),
            };
            // Removal first: within a batch the later operation on a key wins, so an unchanged
            // expiry's index entry is removed and re-inserted, never lost.
            if let Some(old_expires) = old.filter(|&e| e != 0) {
                batch.remove(expiry_key(old_expires, key));
            }
            match op {
                Op::Put(_, value, expires) => {
                    batch.insert(&dk[..], encode_value(&dk, *expires, value));
                    if *expires != 0 {
                        batch.insert(expiry_key(*expires, key), &[][..]);
                    }
                    current.insert(key, Some(*expires));
                }
                Op::Delete(_) => {
                    batch.remove(dk);
                    if old.is_some() {
                        found += 1;
                    }
                    current.insert(key, None);
                }
            }
        }
        tree.apply_batch(batch).map_err(err)?;
        Ok(found)
    }
}

fn corrupt(view: &str, key: &[u8], reason: String) -> StorageError {
    tracing::warn!(view, key = %key.escape_ascii(), %reason, "corrupt KV value");
    StorageError::CorruptKv {
        view: view.to_string(),
        key: key.to_vec(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_checked_against_their_key() {
        let dk = data_key(b"k");
        let v = encode_value(&dk, 77, b"hello");
        assert_eq!(decode_value(&dk, &v), Ok((77, &b"hello"[..])));
        assert!(decode_value(&data_key(b"j"), &v).is_err());
        let mut bad = v.clone();
        bad[VALUE_HEADER] ^= 1;
        assert!(decode_value(&dk, &bad).is_err());
        assert!(decode_value(&dk, &v[..5]).is_err());
        assert_eq!(raw_expiry(&v), 77);
    }

    #[test]
    fn expiry_keys_sort_by_time_then_key_and_after_all_data() {
        let ks = [
            expiry_key(1, b"z"),
            expiry_key(2, b""),
            expiry_key(2, b"a"),
            expiry_key(256, b"a"),
            expiry_key(u64::MAX, b"a"),
        ];
        assert!(ks.windows(2).all(|w| w[0] < w[1]));
        assert!(data_key(&[0xff; 10]) < ks[0]);
    }

    #[test]
    fn rewrites_keep_exactly_one_index_entry_per_expiring_key() {
        let dir = tempfile::tempdir().unwrap();
        let kv = KvStore::open(dir.path()).unwrap();
        kv.put("v", b"k", b"1", Some(50)).unwrap();
        kv.put("v", b"k", b"2", Some(50)).unwrap();
        kv.put_batch(
            "v",
            &[
                KvWrite::Put {
                    key: b"j".to_vec(),
                    value: b"1".to_vec(),
                    expires_at_ms: Some(60),
                },
                KvWrite::Put {
                    key: b"j".to_vec(),
                    value: b"2".to_vec(),
                    expires_at_ms: Some(70),
                },
            ],
        )
        .unwrap();
        let tree = kv.view("v").unwrap();
        let index = || -> Vec<Vec<u8>> {
            tree.scan_prefix([EXPIRY_TAG])
                .keys()
                .map(|k| k.unwrap().to_vec())
                .collect()
        };
        assert_eq!(index(), vec![expiry_key(50, b"k"), expiry_key(70, b"j")]);
        // Another expiry moves the index entry; no expiry or a delete removes it.
        kv.put("v", b"k", b"3", Some(90)).unwrap();
        assert_eq!(index(), vec![expiry_key(70, b"j"), expiry_key(90, b"k")]);
        kv.put("v", b"k", b"4", None).unwrap();
        kv.delete("v", b"j").unwrap();
        assert!(index().is_empty());
    }
}
