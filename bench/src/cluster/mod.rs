//! `starling-bench cluster`: what a cluster of `starling node` processes costs and how fast it
//! changes shape, on this machine (127.0.0.1, OS-chosen ports, temporary data directories).
//! This file holds the options and the order of the parts; each part, and each piece the parts
//! share (the nodes, HTTP, the load, the report), is its own module.
//!
//! 1. **Throughput**: the same QUIC publish load (typed rows, a string key and a timestamp)
//!    into one node and into a 3-node cluster with the clients spread over the three (so
//!    about 2/3 of the events are forwarded to their shard's owner), alternating 1, 3, 1, 3 …
//!    with fresh nodes each round; events/s and publish→ack p50/p99.
//! 2. **Convergence**: from spawning a node with `--seed` until every node's `/v1/cluster`
//!    lists it, until it owns its first shard, and until the cluster is `settled`; for the
//!    2nd, 3rd, 4th … node.
//! 3. **Hand-off**: while a paced publisher runs into a windowed dataflow (per user, 10 s
//!    windows, so every moving shard carries open window state), a 3rd node joins a 2-node
//!    cluster and later leaves through `POST /v1/cluster/leave`; time until settled divided by
//!    the shards whose owner changed.
//!
//! 4. **Replication**: the throughput load into 3-node clusters with R = 1, 2, 3 (`acks =
//!    all`, the default), alternating, fresh nodes each run; events/s and ack p50/p99 as a
//!    ratio to R = 1 of the same round.
//!
//! Every child is killed when its [`Member`](member::Member) is dropped, on error and on panic
//! alike.

mod convergence;
mod handoff;
mod http;
mod load;
mod member;
mod report;
mod throughput;
mod view;

use std::time::Duration;

use anyhow::{bail, Context, Result};

use convergence::convergence;
use handoff::handoff;
use member::Spec;
use throughput::throughput_run;

pub use report::Report;

/// The topic every part publishes to.
const TOPIC: &str = "clicks";
/// How long a cluster may take to settle before the run fails.
const SETTLE_LIMIT: Duration = Duration::from_secs(120);
/// Between two polls of `/v1/cluster`.
const POLL: Duration = Duration::from_millis(10);

/// What `starling-bench cluster` runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// Events per throughput run.
    pub events: u64,
    /// Pairs of (1 node, 3 nodes) throughput runs.
    pub rounds: usize,
    /// QUIC connections (spread over the nodes).
    pub connections: usize,
    /// Publish operations in flight per connection.
    pub streams: usize,
    /// Events per publish.
    pub batch: usize,
    /// The nodes' `--durability`.
    pub durability: String,
    /// The nodes' `--shards`.
    pub shards: u32,
    /// The nodes' `--workers`.
    pub workers: usize,
    /// Grow the convergence cluster to this many nodes.
    pub nodes: usize,
    /// Events/s of the publisher running during hand-off.
    pub handoff_rate: u64,
    /// Keys of unwindowed state loaded before the hand-off part's join (0: none).
    pub handoff_keys: u64,
    /// The replication part runs 3-node clusters with R = 1 … this (1: skipped).
    pub max_replication: u32,
}

impl Options {
    /// Refuses sizes the runs cannot use.
    pub fn check(&self) -> Result<()> {
        if self.events == 0
            || self.batch == 0
            || self.rounds == 0
            || self.connections == 0
            || self.streams == 0
        {
            bail!("--events, --batch, --rounds, --connections and --streams must be at least 1");
        }
        if self.shards == 0 || self.workers == 0 {
            bail!("--shards and --workers must be at least 1");
        }
        if self.nodes < 2 {
            bail!("--nodes must be at least 2 (the convergence part adds nodes up to it)");
        }
        if self.handoff_rate == 0 {
            bail!("--handoff-rate must be at least 1");
        }
        if !matches!(self.durability.as_str(), "none" | "batch" | "sync") {
            bail!("--durability must be none, batch or sync");
        }
        Ok(())
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Runs the parts; the nodes are `starling_testkit::bin`'s `starling` binary.
pub async fn run(o: &Options) -> Result<Report> {
    o.check()?;
    let spec = Spec {
        name: "single".into(),
        workers: o.workers,
        durability: o.durability.clone(),
        shards: o.shards,
        cluster: None,
        seed: None,
        replication: 0,
    };
    let mut runs = Vec::new();
    for round in 0..o.rounds {
        for nodes in [1, 3] {
            let id = format!("bench-tp-{round}");
            let r = throughput_run(o, &spec, nodes, &id)
                .await
                .with_context(|| format!("throughput round {} with {nodes} node(s)", round + 1))?;
            eprintln!(
                "round {} with {nodes} node(s): {:.0} events/s",
                round + 1,
                r.events_per_sec
            );
            runs.push(r);
        }
    }
    let mut replicated = Vec::new();
    for round in 0..o.rounds {
        for r in 1..=o.max_replication {
            if o.max_replication < 2 {
                break;
            }
            let id = format!("bench-r{r}-{round}");
            let run = throughput_run(
                o,
                &Spec {
                    replication: r,
                    ..spec.clone()
                },
                3,
                &id,
            )
            .await
            .with_context(|| format!("replication round {} with R = {r}", round + 1))?;
            eprintln!(
                "round {} with R = {r}: {:.0} events/s",
                round + 1,
                run.events_per_sec
            );
            replicated.push((r, run));
        }
    }
    let (bootstrap_ms, joins) = convergence(o, &spec).await.context("convergence")?;
    let handoff = handoff(o, &spec).await.context("hand-off")?;
    Ok(Report {
        runs,
        replicated,
        bootstrap_ms,
        joins,
        handoff,
    })
}
