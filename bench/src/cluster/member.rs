//! Starting a `starling node` child and reading its start banner; kept apart because every
//! part starts nodes, and the rule that a dropped [`Member`] kills its child lives here.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// A `starling node` child process; killed (and its data directory removed) on drop.
pub struct Member {
    child: Child,
    pub name: String,
    pub http: SocketAddr,
    pub quic: SocketAddr,
    pub fingerprint: String,
    /// The gossip address (`host:port`), when the node is a cluster member.
    pub gossip: Option<String>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// How to start a member.
#[derive(Clone, Debug)]
pub(super) struct Spec {
    pub(super) bin: PathBuf,
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
        let log = dir.path().join("node.log");
        let log_file = std::fs::File::create(&log)?;
        let mut cmd = Command::new(&spec.bin);
        cmd.args(["node", "--http", "127.0.0.1:0", "--quic", "127.0.0.1:0"])
            .args(["--workers", &spec.workers.to_string()])
            .args(["--durability", &spec.durability])
            .args(["--shards", &spec.shards.to_string()])
            .arg("--data-dir")
            .arg(dir.path().join("data"));
        if let Some(id) = &spec.cluster {
            cmd.args(["--gossip", "127.0.0.1:0", "--cluster-id", id])
                .args(["--node-name", &spec.name]);
            if let Some(seed) = &spec.seed {
                cmd.args(["--seed", seed]);
            }
            if spec.replication > 0 {
                cmd.args(["--replication", &spec.replication.to_string()]);
            }
        }
        for var in ["STARLING_CONFIG", "STARLING_SEEDS", "STARLING_SHARDS"] {
            cmd.env_remove(var);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .spawn()
            .with_context(|| format!("cannot start {}", spec.bin.display()))?;
        let Some(stdout) = child.stdout.take() else {
            let _ = child.kill();
            let _ = child.wait();
            bail!("no stdout from the node");
        };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            let _ = r.read_line(&mut line);
            let _ = tx.send(line);
            // Keep draining so the node never blocks on a full pipe.
            let mut rest = Vec::new();
            let _ = r.read_to_end(&mut rest);
        });
        let line = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_default();
        let field = |key: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .map(str::to_string)
        };
        let parsed = (|| -> Option<(SocketAddr, SocketAddr, String)> {
            Some((
                field("http=")?.parse().ok()?,
                field("quic=")?.parse().ok()?,
                field("quic_fingerprint=")?,
            ))
        })();
        let Some((http, quic, fingerprint)) = parsed else {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "node {} did not print its addresses (banner {line:?}); it said:\n{}",
                spec.name,
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        let gossip = field("gossip=");
        if spec.cluster.is_some() && gossip.is_none() {
            let _ = child.kill();
            let _ = child.wait();
            bail!("node {} printed no gossip= address: {line:?}", spec.name);
        }
        Ok(Member {
            child,
            name: spec.name.clone(),
            http,
            quic,
            fingerprint,
            gossip,
            log,
            _dir: dir,
        })
    }

    /// Starts the node off the async runtime (the banner wait blocks).
    pub(super) async fn start(spec: Spec) -> Result<Member> {
        tokio::task::spawn_blocking(move || Member::spawn(&spec)).await?
    }

    pub(super) fn base(&self) -> String {
        format!("http://{}", self.http)
    }

    /// The node's stderr so far (for error messages).
    pub(super) fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
