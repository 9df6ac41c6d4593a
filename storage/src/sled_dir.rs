//! Helpers shared by the sled-backed stores ([`crate::KvStore`], [`crate::SeriesStore`]):
//! opening a directory, naming trees, checking names.
//!
//! Kept apart from `sled_log/` so that the event log's code is untouched by the newer stores.

use std::path::Path;
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use crate::StorageError;

/// Longest view or series name, in bytes. Names end up in tree names and log lines; a bound
/// keeps both readable.
pub(crate) const MAX_NAME_BYTES: usize = 200;

/// How long `open` waits for sled's file lock. Right after a close in the same process sled's
/// I/O threads may still hold the previous handle for a moment, so a held lock is retried
/// briefly; a lock held by another process (or a live handle in this one) is reported after
/// this delay.
const LOCK_WAIT: Duration = Duration::from_secs(2);

/// Creates `dir`, checks it is writable (so that the error names the directory, not a sled
/// file), and opens sled on it. `what` names the store in errors ("KV store", ...).
///
/// sled's background flush (every 500 ms) stays on: these stores hold state that can be
/// rebuilt from the event log, so a bounded loss window is acceptable and `flush` closes it.
pub(crate) fn open_db(dir: &Path, what: &str) -> Result<sled::Db, StorageError> {
    let unwritable = |source| StorageError::Unwritable {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(unwritable)?;
    let probe = dir.join(".starling-write-probe");
    std::fs::write(&probe, b"probe").map_err(unwritable)?;
    let _ = std::fs::remove_file(&probe);

    let started = Instant::now();
    loop {
        match sled::Config::new().path(dir).open() {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && started.elapsed() < LOCK_WAIT =>
            {
                tracing::debug!(dir = %dir.display(), what, "store is locked, retrying");
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => {
                let held = matches!(&e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"));
                let context = if held {
                    format!(
                        "opening the {what} in {} (it is held by another process or another \
                         open handle; close that one first)",
                        dir.display()
                    )
                } else {
                    format!("opening the {what} in {}", dir.display())
                };
                return Err(StorageError::backend(context, e));
            }
        }
    }
}

/// A tree name: `prefix` + name length (`u32` BE) + name bytes. The length prefix keeps names
/// unambiguous and keeps each store's trees apart from the others' (and from the event log's).
pub(crate) fn tree_name(prefix: &[u8], name: &str) -> Vec<u8> {
    let mut t = Vec::with_capacity(prefix.len() + 4 + name.len());
    t.extend_from_slice(prefix);
    t.extend_from_slice(&(name.len() as u32).to_be_bytes());
    t.extend_from_slice(name.as_bytes());
    t
}

/// The name in a tree name made by [`tree_name`] with this prefix, or `None` for other trees.
pub(crate) fn decode_tree_name(prefix: &[u8], tree: &[u8]) -> Option<String> {
    let rest = tree.strip_prefix(prefix)?;
    let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let name = rest.get(4..)?;
    if name.len() != len {
        return None;
    }
    String::from_utf8(name.to_vec()).ok()
}

/// Checks a view, series or checkpoint name: non-empty, at most `max` bytes, no control
/// characters (they make log lines and file listings misleading).
pub(crate) fn check_name(what: &'static str, name: &str, max: usize) -> Result<(), StorageError> {
    let reason = if name.is_empty() {
        Some("it is empty".to_string())
    } else if name.len() > max {
        Some(format!(
            "it is {} bytes, over the limit of {max}",
            name.len()
        ))
    } else if name.chars().any(char::is_control) {
        Some("it contains control characters".to_string())
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(StorageError::InvalidInput {
            what,
            value: name.chars().take(max.min(256)).collect(),
            reason,
        }),
    }
}

/// Refuses a key or value over `limit` bytes, before anything is written.
pub(crate) fn check_len(what: &'static str, len: usize, limit: usize) -> Result<(), StorageError> {
    if len > limit {
        return Err(StorageError::TooLarge {
            what,
            size: len as u64,
            limit: limit as u64,
        });
    }
    Ok(())
}

/// Locks ignore poisoning: the guarded maps only cache tree handles, which stay valid.
pub(crate) fn rlock<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

/// See [`rlock`].
pub(crate) fn wlock<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

/// Reads a big-endian `u64` at `at`, or `None` when `b` is too short.
pub(crate) fn be_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Reads a big-endian `u32` at `at`, or `None` when `b` is too short.
pub(crate) fn be_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The named trees of one kind (KV views, series) in a store's sled db: loaded on open,
/// created on first write, dropped by name. Both stores keep exactly this registry.
pub(crate) struct NamedTrees {
    db: sled::Db,
    prefix: &'static [u8],
    /// "KV view" or "series", for messages.
    kind: &'static str,
    trees: RwLock<std::collections::HashMap<String, sled::Tree>>,
}

impl NamedTrees {
    /// Loads every tree of this kind already in `db`.
    pub(crate) fn open(
        db: &sled::Db,
        prefix: &'static [u8],
        kind: &'static str,
    ) -> Result<NamedTrees, StorageError> {
        let mut trees = std::collections::HashMap::new();
        for raw in db.tree_names() {
            let Some(name) = decode_tree_name(prefix, &raw) else {
                continue;
            };
            let tree = db
                .open_tree(&raw)
                .map_err(|e| StorageError::backend(format!("opening {kind} {name:?}"), e))?;
            trees.insert(name, tree);
        }
        Ok(NamedTrees {
            db: db.clone(),
            prefix,
            kind,
            trees: RwLock::new(trees),
        })
    }

    /// The tree of `name`, if it exists.
    pub(crate) fn get(&self, name: &str) -> Option<sled::Tree> {
        rlock(&self.trees).get(name).cloned()
    }

    /// The tree of `name`, created if needed.
    pub(crate) fn get_or_create(&self, name: &str) -> Result<sled::Tree, StorageError> {
        if let Some(t) = self.get(name) {
            return Ok(t);
        }
        let mut trees = wlock(&self.trees);
        if let Some(t) = trees.get(name) {
            return Ok(t.clone());
        }
        let kind = self.kind;
        let tree = self
            .db
            .open_tree(tree_name(self.prefix, name))
            .map_err(|e| StorageError::backend(format!("creating {kind} {name:?}"), e))?;
        trees.insert(name.to_string(), tree.clone());
        tracing::debug!(kind, name, "created");
        Ok(tree)
    }

    /// Every tree with its name.
    pub(crate) fn all(&self) -> Vec<(String, sled::Tree)> {
        rlock(&self.trees)
            .iter()
            .map(|(n, t)| (n.clone(), t.clone()))
            .collect()
    }

    /// Removes `name` and everything in it; whether it existed. The caller holds its store's
    /// write gate, so no write lands in a tree being dropped.
    pub(crate) fn drop_tree(&self, name: &str) -> Result<bool, StorageError> {
        let kind = self.kind;
        let known = wlock(&self.trees).remove(name).is_some();
        let dropped = self
            .db
            .drop_tree(tree_name(self.prefix, name))
            .map_err(|e| StorageError::backend(format!("dropping {kind} {name:?}"), e))?;
        if known || dropped {
            tracing::info!(kind, name, "dropped");
        }
        Ok(known || dropped)
    }

    /// Writes everything buffered in the store's db to disk.
    pub(crate) fn flush(&self) -> Result<(), StorageError> {
        let kind = self.kind;
        self.db
            .flush()
            .map(|_| ())
            .map_err(|e| StorageError::backend(format!("flushing the {kind} store"), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_names_round_trip_per_prefix() {
        for name in ["a", "ab", "a/b", "ünï"] {
            assert_eq!(
                decode_tree_name(b"p/", &tree_name(b"p/", name)).as_deref(),
                Some(name)
            );
            assert_eq!(decode_tree_name(b"q/", &tree_name(b"p/", name)), None);
        }
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("view name", "orders", 200).is_ok());
        assert!(check_name("view name", "", 200).is_err());
        assert!(check_name("view name", "a\nb", 200).is_err());
        assert!(check_name("view name", &"x".repeat(201), 200).is_err());
    }
}
