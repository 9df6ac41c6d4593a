//! Node settings: defaults, then a TOML file, then `STARLING_*` environment variables, then
//! command-line flags; each later source wins over the earlier ones.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

pub use crate::cluster::ClusterConfig;
use crate::cluster::PeerNet;
use crate::durable::{Durability, Retention, StoreOptions};
use crate::http::Limits;

/// Everything a node needs to start.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeConfig {
    pub http_addr: SocketAddr,
    pub quic_addr: SocketAddr,
    pub data_dir: PathBuf,
    pub workers: usize,
    pub limits: Limits,
    /// Batches a subscriber may leave unread before it is cut off.
    pub subscriber_queue: usize,
    /// How published events are stored; `None` keeps them in memory only (nothing survives
    /// a restart; for benchmarks that measure the cost of the log).
    pub store: Option<StoreOptions>,
    /// How often window state is checkpointed.
    pub checkpoint_interval_ms: u64,
    /// Cluster membership; `None` runs a single node with no gossip port.
    pub cluster: Option<ClusterConfig>,
}

/// The default gossip port.
pub const DEFAULT_GOSSIP_PORT: u16 = 7072;

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 7070)),
            quic_addr: SocketAddr::from(([127, 0, 0, 1], 7071)),
            data_dir: PathBuf::from("./starling-data"),
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            limits: Limits::default(),
            subscriber_queue: 1024,
            store: Some(StoreOptions::default()),
            checkpoint_interval_ms: 60_000,
            cluster: None,
        }
    }
}

/// The TOML file: every key optional, unknown keys refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub http_addr: Option<SocketAddr>,
    pub quic_addr: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub workers: Option<usize>,
    pub max_body_bytes: Option<usize>,
    pub max_event_bytes: Option<usize>,
    pub subscriber_queue: Option<usize>,
    /// `batch` (default: flushed every `flush_interval_ms`), `sync` (flushed before the
    /// acknowledgement) or `none` (no log; nothing survives a restart).
    pub durability: Option<String>,
    /// Milliseconds between flushes with `batch` durability (default 10).
    pub flush_interval_ms: Option<u64>,
    /// Shards per topic (default 256), fixed when the data directory is created.
    pub shards: Option<u32>,
    /// In a cluster, how many nodes hold each shard (owner included, default 1), fixed when
    /// the cluster is created.
    pub replication: Option<u32>,
    /// Remove log entries older than this many milliseconds (default: keep).
    pub retention_ms: Option<u64>,
    /// Keep at most this many payload bytes per topic shard (default: no limit).
    pub retention_bytes: Option<u64>,
    /// Refuse publishes while the data directory's file system has less free space than this
    /// (default 64 MiB; 0 disables the check).
    pub min_free_bytes: Option<u64>,
    /// Milliseconds between checkpoints of window state (default 60000).
    pub checkpoint_interval_ms: Option<u64>,
    /// Joins or creates a cluster of this name (enables gossip).
    pub cluster_id: Option<String>,
    /// This node's readable name in the cluster.
    pub node_name: Option<String>,
    /// Gossip (UDP) listen address; setting it enables cluster mode.
    pub gossip_addr: Option<SocketAddr>,
    /// The peer listener (QUIC, node to node only) in cluster mode (default: the QUIC front
    /// door's IP with a port the OS picks; gossip tells the others where it is).
    pub peer_addr: Option<SocketAddr>,
    /// Gossip addresses of existing members; setting them enables cluster mode.
    pub seeds: Option<Vec<String>>,
}

/// Why the settings are unusable.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    #[error("{name}: {message}")]
    Invalid { name: &'static str, message: String },
}

impl FileConfig {
    /// Reads a TOML config file.
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }
}

impl NodeConfig {
    /// Applies the file's settings, then `overrides` (flags and environment, already merged
    /// by the argument parser: a flag wins over its variable).
    pub fn build(file: FileConfig, overrides: FileConfig) -> Result<NodeConfig, ConfigError> {
        let d = NodeConfig::default();
        let store = store_options(&file, &overrides)?;
        let cluster = cluster_config(&file, &overrides)?;
        let pick = |o: Option<usize>, f: Option<usize>, default: usize, name: &'static str| {
            let v = o.or(f).unwrap_or(default);
            if v == 0 {
                Err(ConfigError::Zero(name))
            } else {
                Ok(v)
            }
        };
        Ok(NodeConfig {
            http_addr: overrides
                .http_addr
                .or(file.http_addr)
                .unwrap_or(d.http_addr),
            quic_addr: overrides
                .quic_addr
                .or(file.quic_addr)
                .unwrap_or(d.quic_addr),
            data_dir: overrides.data_dir.or(file.data_dir).unwrap_or(d.data_dir),
            workers: pick(overrides.workers, file.workers, d.workers, "workers")?,
            limits: Limits {
                max_body_bytes: pick(
                    overrides.max_body_bytes,
                    file.max_body_bytes,
                    d.limits.max_body_bytes,
                    "max_body_bytes",
                )?,
                max_event_bytes: pick(
                    overrides.max_event_bytes,
                    file.max_event_bytes,
                    d.limits.max_event_bytes,
                    "max_event_bytes",
                )?,
            },
            subscriber_queue: pick(
                overrides.subscriber_queue,
                file.subscriber_queue,
                d.subscriber_queue,
                "subscriber_queue",
            )?,
            store,
            checkpoint_interval_ms: pick(
                overrides.checkpoint_interval_ms.map(|v| v as usize),
                file.checkpoint_interval_ms.map(|v| v as usize),
                d.checkpoint_interval_ms as usize,
                "checkpoint_interval_ms",
            )? as u64,
            cluster,
        })
    }
}

/// Cluster mode is on when any cluster setting is given.
fn cluster_config(
    file: &FileConfig,
    overrides: &FileConfig,
) -> Result<Option<ClusterConfig>, ConfigError> {
    let cluster_id = overrides.cluster_id.clone().or(file.cluster_id.clone());
    let gossip_addr = overrides.gossip_addr.or(file.gossip_addr);
    let seeds = overrides.seeds.clone().or(file.seeds.clone());
    if cluster_id.is_none() && gossip_addr.is_none() && seeds.is_none() {
        return Ok(None);
    }
    let cluster_id = cluster_id.unwrap_or_else(|| "starling".to_string());
    if cluster_id.is_empty()
        || cluster_id.len() > 64
        || !cluster_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    {
        return Err(ConfigError::Invalid {
            name: "cluster_id",
            message: format!("`{cluster_id}` must be 1 to 64 letters, digits, `-`, `_` or `.`"),
        });
    }
    let seeds = seeds.unwrap_or_default();
    for seed in &seeds {
        let ok = seed.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !ok {
            return Err(ConfigError::Invalid {
                name: "seed",
                message: format!("`{seed}` is not HOST:PORT (the gossip address of a member)"),
            });
        }
    }
    let shards = overrides.shards.or(file.shards).unwrap_or(256);
    let replication = overrides.replication.or(file.replication).unwrap_or(0);
    if replication > starling_cluster::state::MAX_REPLICATION {
        return Err(ConfigError::Invalid {
            name: "replication",
            message: format!(
                "{replication} is not between 1 and {}",
                starling_cluster::state::MAX_REPLICATION
            ),
        });
    }
    Ok(Some(ClusterConfig {
        cluster_id,
        node_name: overrides.node_name.clone().or(file.node_name.clone()),
        gossip_addr: gossip_addr
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], DEFAULT_GOSSIP_PORT))),
        seeds,
        peer_addr: overrides.peer_addr.or(file.peer_addr),
        peer_net: PeerNet::Quic,
        shards,
        replication,
    }))
}

/// The log settings from the file and the overrides.
fn store_options(
    file: &FileConfig,
    overrides: &FileConfig,
) -> Result<Option<StoreOptions>, ConfigError> {
    let interval = overrides
        .flush_interval_ms
        .or(file.flush_interval_ms)
        .unwrap_or(10);
    if interval == 0 {
        return Err(ConfigError::Zero("flush_interval_ms"));
    }
    let durability = match overrides
        .durability
        .as_deref()
        .or(file.durability.as_deref())
        .unwrap_or("batch")
    {
        "none" => return Ok(None),
        "batch" => Durability::Batch {
            interval_ms: interval,
        },
        "sync" => Durability::Sync,
        other => {
            return Err(ConfigError::Invalid {
                name: "durability",
                message: format!("`{other}` is not one of none, batch, sync"),
            })
        }
    };
    let shards = overrides.shards.or(file.shards).unwrap_or(256);
    if shards == 0 || shards > 65_536 {
        return Err(ConfigError::Invalid {
            name: "shards",
            message: format!("{shards} is not between 1 and 65536"),
        });
    }
    Ok(Some(StoreOptions {
        durability,
        shards,
        retention: Retention {
            max_age_ms: overrides.retention_ms.or(file.retention_ms),
            max_bytes_per_shard: overrides.retention_bytes.or(file.retention_bytes),
        },
        min_free_bytes: overrides
            .min_free_bytes
            .or(file.min_free_bytes)
            .unwrap_or(starling_storage::DEFAULT_MIN_FREE_BYTES),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_sources_win() {
        let file: FileConfig =
            toml::from_str("http_addr = \"127.0.0.1:9000\"\nworkers = 3\n").unwrap();
        let over = FileConfig {
            workers: Some(5),
            ..FileConfig::default()
        };
        let c = NodeConfig::build(file, over).unwrap();
        assert_eq!(c.http_addr.port(), 9000);
        assert_eq!(c.workers, 5);
        assert_eq!(c.quic_addr.port(), 7071);
        assert!(toml::from_str::<FileConfig>("bogus = 1").is_err());
        assert!(matches!(
            NodeConfig::build(
                FileConfig {
                    workers: Some(0),
                    ..FileConfig::default()
                },
                FileConfig::default()
            ),
            Err(ConfigError::Zero("workers"))
        ));
    }

    #[test]
    fn durability_settings_are_checked() {
        let build =
            |text: &str| NodeConfig::build(toml::from_str(text).unwrap(), FileConfig::default());
        let c = build("").unwrap();
        assert_eq!(
            c.store.unwrap().durability,
            Durability::Batch { interval_ms: 10 }
        );
        assert!(build("durability = \"none\"").unwrap().store.is_none());
        let c = build("durability = \"sync\"\nshards = 8\nretention_ms = 60000").unwrap();
        let s = c.store.unwrap();
        assert_eq!(
            (s.durability, s.shards, s.retention.max_age_ms),
            (Durability::Sync, 8, Some(60_000))
        );
        let err = build("durability = \"fast\"").unwrap_err().to_string();
        assert!(err.contains("none, batch, sync"), "{err}");
        assert!(build("shards = 0").is_err());
        assert!(build("flush_interval_ms = 0").is_err());
    }
}
