//! Part 1 (and 4): one throughput run on fresh nodes. The replication part reuses it with
//! another `--replication`, so it is a file of its own rather than inline in `run`.

use std::sync::atomic::{AtomicBool, AtomicU8};
use std::sync::Arc;

use anyhow::{Context, Result};

use super::http::create_topic;
use super::load::{connect, run_load, Load};
use super::member::{Member, Spec};
use super::view::wait_settled;
use super::Options;

/// One throughput run.
#[derive(Debug, Clone)]
pub struct ThroughputRun {
    pub nodes: usize,
    pub events: u64,
    pub seconds: f64,
    pub events_per_sec: f64,
    pub ack_p50_us: u64,
    pub ack_p99_us: u64,
    pub ack_max_us: u64,
}

/// Starts `nodes` fresh nodes (a cluster if more than one), publishes the load spread over
/// them, stops them.
pub(super) async fn throughput_run(
    o: &Options,
    spec: &Spec,
    nodes: usize,
    id: &str,
) -> Result<ThroughputRun> {
    let mut members = Vec::new();
    if nodes == 1 {
        members.push(Member::start(spec.clone()).await?);
    } else {
        let first = Member::start(Spec {
            name: "t1".into(),
            cluster: Some(id.into()),
            seed: None,
            ..spec.clone()
        })
        .await?;
        let seed = first.gossip.clone();
        members.push(first);
        for k in 2..=nodes {
            members.push(
                Member::start(Spec {
                    name: format!("t{k}"),
                    cluster: Some(id.into()),
                    seed: seed.clone(),
                    ..spec.clone()
                })
                .await?,
            );
        }
        let refs: Vec<&Member> = members.iter().collect();
        wait_settled(&refs, nodes).await?;
    }
    let refs: Vec<&Member> = members.iter().collect();
    create_topic(refs[0], &refs).await?;
    let clients = connect(&refs, o.connections).await?;
    let batches = o.events.div_ceil(o.batch as u64);
    let r = run_load(Load {
        clients: clients.clone(),
        streams: o.streams,
        batch: o.batch,
        limit: Some(batches),
        rate: None,
        stop: Arc::new(AtomicBool::new(false)),
        phase: Arc::new(AtomicU8::new(0)),
        keep_going: false,
    })
    .await
    .with_context(|| {
        format!(
            "publishing into {nodes} node(s); last log lines of the first:\n{}",
            refs[0].log_tail()
        )
    })?;
    for c in clients {
        c.close().await;
    }
    Ok(ThroughputRun {
        nodes,
        events: r.events,
        seconds: r.elapsed.as_secs_f64(),
        events_per_sec: r.events_per_sec(),
        ack_p50_us: r.steady.value_at_quantile(0.5),
        ack_p99_us: r.steady.value_at_quantile(0.99),
        ack_max_us: r.steady.max(),
    })
}
