//! Starting a `starling node` child for the cluster parts (testkit's [`NodeProc`]); kept
//! apart because every part starts nodes, and the rule that a dropped [`Member`] kills its
//! child lives here.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use starling_bench::publish::quic_door;
use starling_testkit::node::{Launch, NodeProc};

/// A `starling node` child process; killed (and its data directory removed) on drop.
pub struct Member {
    node: NodeProc,
    pub name: String,
    pub http: SocketAddr,
    pub quic: SocketAddr,
    pub fingerprint: String,
    /// The gossip address (`host:port`), when the node is a cluster member.
    pub gossip: Option<String>,
}

/// How to start a member.
#[derive(Clone, Debug)]
pub(super) struct Spec {
    pub(super) name: String,
    pub(super) workers: usize,
    pub(super) durability: String,
    pub(super) shards: u32,
    /// `Some(cluster id)` for a cluster member.
    pub(super) cluster: Option<String>,
    pub(super) seed: Option<String>,
    /// The cluster's `--replication` (0: not given).
    pub(super) replication: u32,
}

impl Member {
    /// Starts the node and waits (up to 60 s) for its start banner.
    fn spawn(spec: &Spec) -> Result<Member> {
        let dir = tempfile::Builder::new()
            .prefix("starling-bench-cluster-")
            .tempdir()?;
        let shards = spec.shards.to_string();
        let replication = spec.replication.to_string();
        let mut args = vec!["--durability", &spec.durability, "--shards", &shards];
        if let Some(id) = &spec.cluster {
            args.extend(["--gossip", "127.0.0.1:0", "--cluster-id", id]);
            args.extend(["--node-name", &spec.name]);
            if let Some(seed) = &spec.seed {
                args.extend(["--seed", seed]);
            }
            if spec.replication > 0 {
                args.extend(["--replication", &replication]);
            }
        }
        let launch = Launch {
            workers: spec.workers,
            banner_wait: Duration::from_secs(60),
            inherit_stderr: false,
            env_remove: vec!["STARLING_CONFIG", "STARLING_SEEDS", "STARLING_SHARDS"],
        };
        let node = launch
            .start_in(dir, &args)
            .map_err(|e| anyhow!("node {}: {e}", spec.name))?;
        let (quic, fingerprint) =
            quic_door(&node).with_context(|| format!("node {}", spec.name))?;
        let gossip = node.banner_value("gossip").map(str::to_string);
        if spec.cluster.is_some() && gossip.is_none() {
            bail!(
                "node {} printed no gossip= address: {:?}",
                spec.name,
                node.banner
            );
        }
        Ok(Member {
            name: spec.name.clone(),
            http: node.addr,
            quic,
            fingerprint,
            gossip,
            node,
        })
    }

    /// Starts the node off the async runtime (the banner wait blocks).
    pub(super) async fn start(spec: Spec) -> Result<Member> {
        tokio::task::spawn_blocking(move || Member::spawn(&spec)).await?
    }

    pub(super) fn base(&self) -> String {
        self.node.base()
    }

    /// The node's stderr so far (for error messages).
    pub(super) fn log_tail(&self) -> String {
        let text = self.node.log();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}
