//! What a node must recreate before it replays its log: the topics it was asked to create and
//! the dataflows it runs, each dataflow with the sequence number at which it was installed
//! (it must see the events logged after that point and none before).
//!
//! Stored as one JSON file, rewritten whole on every change (a temp file, fsync, rename, fsync
//! of the directory), so a crash leaves either the old or the new catalog, never a mix. Changes
//! are rare (topic and dataflow management), so rewriting is cheap; JSON keeps it readable by
//! an operator in an emergency.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use starling_operators::definition::{Definition, TopicDef};

const VERSION: u32 = 1;

/// A dataflow as the catalog keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CatalogDataflow {
    /// The node-wide sequence number at install: logged records below it predate it.
    pub seq: u64,
    pub definition: Definition,
}

/// The catalog's content.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogState {
    pub version: u32,
    pub topics: Vec<TopicDef>,
    pub dataflows: Vec<CatalogDataflow>,
}

/// Why the catalog could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("cannot write the catalog {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read the catalog {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the catalog {path} is damaged ({reason}); restore it from a backup or move it away to start empty (the event log is kept)")]
    Damaged { path: PathBuf, reason: String },
}

/// The catalog file and its content in memory.
pub struct Catalog {
    path: PathBuf,
    state: Mutex<CatalogState>,
}

impl Catalog {
    /// Opens the catalog in `dir`, or an empty one if there is none yet.
    pub fn open(dir: &Path) -> Result<Catalog, CatalogError> {
        let path = dir.join("catalog.json");
        let state = match std::fs::read(&path) {
            Ok(bytes) => {
                let state: CatalogState =
                    serde_json::from_slice(&bytes).map_err(|e| CatalogError::Damaged {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                if state.version != VERSION {
                    return Err(CatalogError::Damaged {
                        path,
                        reason: format!(
                            "version {} is not known to this build (expected {VERSION})",
                            state.version
                        ),
                    });
                }
                state
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => CatalogState {
                version: VERSION,
                ..CatalogState::default()
            },
            Err(source) => return Err(CatalogError::Read { path, source }),
        };
        Ok(Catalog {
            path,
            state: Mutex::new(state),
        })
    }

    /// A copy of the content.
    pub fn state(&self) -> CatalogState {
        self.lock().clone()
    }

    /// Records a topic (once; an identical declaration is not repeated).
    pub fn add_topic(&self, def: &TopicDef) -> Result<(), CatalogError> {
        self.update(|s| {
            if s.topics.iter().any(|t| t.name == def.name) {
                false
            } else {
                s.topics.push(def.clone());
                true
            }
        })
    }

    /// Records an installed dataflow.
    pub fn add_dataflow(&self, seq: u64, def: &Definition) -> Result<(), CatalogError> {
        self.update(|s| {
            s.dataflows.retain(|d| d.definition.name != def.name);
            s.dataflows.push(CatalogDataflow {
                seq,
                definition: def.clone(),
            });
            true
        })
    }

    /// Forgets a dropped dataflow.
    pub fn remove_dataflow(&self, name: &str) -> Result<(), CatalogError> {
        self.update(|s| {
            let before = s.dataflows.len();
            s.dataflows.retain(|d| d.definition.name != name);
            s.dataflows.len() != before
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CatalogState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies `change` and, if it changed something, writes the file; the in-memory state
    /// changes only once the file is written.
    fn update(&self, change: impl FnOnce(&mut CatalogState) -> bool) -> Result<(), CatalogError> {
        let mut state = self.lock();
        let mut next = state.clone();
        if !change(&mut next) {
            return Ok(());
        }
        self.write(&next)?;
        *state = next;
        Ok(())
    }

    fn write(&self, state: &CatalogState) -> Result<(), CatalogError> {
        let err = |source| CatalogError::Write {
            path: self.path.clone(),
            source,
        };
        let bytes = serde_json::to_vec_pretty(state)
            .map_err(|e| err(std::io::Error::other(e.to_string())))?;
        let tmp = self.path.with_extension("json.tmp");
        let mut f = File::create(&tmp).map_err(err)?;
        f.write_all(&bytes).map_err(err)?;
        f.sync_all().map_err(err)?;
        drop(f);
        std::fs::rename(&tmp, &self.path).map_err(err)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir).and_then(|d| d.sync_all()).map_err(err)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str) -> TopicDef {
        serde_json::from_value(serde_json::json!({
            "name": name, "time": "ts", "fields": [{"name": "ts", "type": "timestamp"}]
        }))
        .unwrap()
    }

    #[test]
    fn changes_survive_reopen_and_damage_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let c = Catalog::open(dir.path()).unwrap();
        c.add_topic(&topic("a")).unwrap();
        c.add_topic(&topic("a")).unwrap();
        let def = Definition::parse(
            "name: d\ntopics: [{name: a, time: ts, fields: [{name: ts, type: timestamp}]}]\ninputs: [{id: i, topic: a}]\noutputs: [{name: o, from: i}]\n",
        )
        .unwrap();
        c.add_dataflow(7, &def).unwrap();
        let again = Catalog::open(dir.path()).unwrap().state();
        assert_eq!(again.topics.len(), 1);
        assert_eq!(again.dataflows[0].seq, 7);
        c.remove_dataflow("d").unwrap();
        assert!(Catalog::open(dir.path())
            .unwrap()
            .state()
            .dataflows
            .is_empty());

        std::fs::write(dir.path().join("catalog.json"), b"{\"version\": 1, \"topi").unwrap();
        let err = Catalog::open(dir.path()).err().unwrap().to_string();
        assert!(err.contains("damaged"), "{err}");
    }
}
