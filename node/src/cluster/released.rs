//! The shards whose state this node has given away, kept on disk.
//!
//! A node's log keeps the events of every shard it ever owned, and a restart replays the
//! part no checkpoint covers (all of it while a watermark has not moved, as with a long
//! `max_delay`), so the dataflows come back counting shards that were handed to other nodes
//! before the stop. Which of that replayed state is stale cannot be read off the shard
//! table alone: after a rolling restart a shard may be moving back to this node with its
//! owner's state, which already holds those events, while after a power loss a shard this
//! node still owned comes back only from its own log. This record tells them apart: a
//! shard in it was handed away, so what the replay rebuilt for it is dropped before any
//! peer can send state; a shard not in it was this node's when it stopped.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The set, and the file that holds it (one shard number per line).
pub(super) struct Released {
    shards: BTreeSet<u32>,
    path: Option<PathBuf>,
}

impl Default for Released {
    /// A set kept in memory only (tests of the shell without a data directory).
    fn default() -> Self {
        Released {
            shards: BTreeSet::new(),
            path: None,
        }
    }
}

impl Released {
    /// The set saved under `data_dir`, empty if none was. A file that cannot be read is
    /// reported and treated as empty: the replayed state is then kept, as before this
    /// record existed, and the table's reconciliation still drops what other nodes own.
    pub(super) fn open(data_dir: &Path) -> Released {
        let path = data_dir.join("released_shards");
        let shards = match std::fs::read_to_string(&path) {
            Ok(text) => parse(&text).unwrap_or_else(|line| {
                tracing::warn!(path = %path.display(), line, "unreadable record of released shards; ignored");
                BTreeSet::new()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeSet::new(),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "could not read the record of released shards; ignored");
                BTreeSet::new()
            }
        };
        Released {
            shards,
            path: Some(path),
        }
    }

    pub(super) fn contains(&self, shard: &u32) -> bool {
        self.shards.contains(shard)
    }

    pub(super) fn set(&self) -> &BTreeSet<u32> {
        &self.shards
    }

    /// Adds `shards`, saving the set if it changed.
    pub(super) fn extend(&mut self, shards: impl IntoIterator<Item = u32>) {
        let before = self.shards.len();
        self.shards.extend(shards);
        if self.shards.len() != before {
            self.save();
        }
    }

    /// Removes `shard`, saving the set if it changed.
    pub(super) fn remove(&mut self, shard: &u32) {
        if self.shards.remove(shard) {
            self.save();
        }
    }

    /// Writes the set to a new file and renames it over the old one, so a crash leaves one
    /// or the other whole.
    fn save(&self) {
        let Some(path) = &self.path else { return };
        let tmp = path.with_extension("tmp");
        let text: String = self.shards.iter().map(|s| format!("{s}\n")).collect();
        let written = std::fs::File::create(&tmp)
            .and_then(|mut f| {
                f.write_all(text.as_bytes())?;
                f.sync_all()
            })
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = written {
            tracing::warn!(path = %path.display(), error = %e, "could not save the record of released shards");
        }
    }
}

/// The shard numbers of `text`, one per line; the first line that is not one on error.
fn parse(text: &str) -> Result<BTreeSet<u32>, String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.trim().parse::<u32>().map_err(|_| l.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_set_survives_a_restart_and_a_bad_file_counts_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Released::open(dir.path());
        assert!(r.set().is_empty());
        r.extend([3, 9, 3]);
        r.remove(&9);
        r.extend([12]);
        let again = Released::open(dir.path());
        assert_eq!(again.set(), &BTreeSet::from([3, 12]));
        std::fs::write(dir.path().join("released_shards"), "3\nnot a shard\n").unwrap();
        assert!(Released::open(dir.path()).set().is_empty());
    }
}
