//! Part 3: a node joining and leaving under a paced publisher into windowed state; its own file
//! because it combines the load, the views and a leave, and reports per moved shard.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use starling_node::client::http::HttpClient;

use super::http::{create_topic, http_call};
use super::load::{connect, run_load, Load, LoadResult};
use super::member::{Member, Spec};
use super::view::{moved, owners, shards_of, view, views, wait_settled};
use super::{ms, Options, POLL, SETTLE_LIMIT, TOPIC};

/// One membership change under load.
#[derive(Debug, Clone)]
pub struct Move {
    pub what: &'static str,
    /// Start of the change → every node settled.
    pub ms: f64,
    /// For the leave: `POST /v1/cluster/leave` answered (the node owned nothing).
    pub answered_ms: Option<f64>,
    pub shards_moved: usize,
}

impl Move {
    pub fn ms_per_shard(&self) -> Option<f64> {
        (self.shards_moved > 0).then(|| self.ms / self.shards_moved as f64)
    }
}

/// The hand-off figures.
#[derive(Debug)]
pub struct Handoff {
    pub join: Move,
    pub leave: Move,
    pub load: LoadResult,
    pub rate: u64,
    /// Keys of unwindowed state loaded before the join.
    pub keys: u64,
}

/// A 2-node cluster under a paced publisher (clients on both nodes); a 3rd node joins, the
/// cluster settles, then the 3rd node leaves.
pub(super) async fn handoff(o: &Options, spec: &Spec) -> Result<Handoff> {
    let id = "bench-handoff";
    let h1 = Member::start(Spec {
        name: "h1".into(),
        cluster: Some(id.into()),
        seed: None,
        ..spec.clone()
    })
    .await?;
    let seed = h1.gossip.clone();
    let h2 = Member::start(Spec {
        name: "h2".into(),
        cluster: Some(id.into()),
        seed: seed.clone(),
        ..spec.clone()
    })
    .await?;
    wait_settled(&[&h1, &h2], 2).await?;
    create_topic(&h1, &[&h1, &h2]).await?;
    // Keyed window state to move with every shard (per user, 10 s windows).
    HttpClient::new(&h1.base())
        .submit(&format!(
            "name: per_user\ninputs:\n  - {{id: c, topic: {TOPIC}, watermark: {{max_delay: 5s, idle_timeout: 1s}}}}\nnodes:\n  - {{id: w, op: window, input: c, kind: tumbling, size: 10s}}\n  - id: agg\n    op: aggregate\n    input: w\n    aggregates: [{{name: n, fn: count}}, {{name: s, fn: sum, expr: amount}}]\noutputs:\n  - {{name: out, from: agg}}\n"
        ))
        .await
        .context("submitting the windowed dataflow whose state the hand-off moves")?;
    let clients = connect(&[&h1, &h2], 2).await?;
    if o.handoff_keys > 0 {
        load_running_totals(&h1, &clients, o.handoff_keys).await?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let phase = Arc::new(AtomicU8::new(0));
    let publisher = tokio::spawn(run_load(Load {
        clients: clients.clone(),
        streams: o.streams,
        batch: o.batch,
        limit: None,
        rate: Some(o.handoff_rate),
        stop: Arc::clone(&stop),
        phase: Arc::clone(&phase),
        keep_going: true,
    }));
    let steady = Duration::from_millis(1000);
    tokio::time::sleep(steady).await;

    // Join.
    let before = owners(&view(&h1).await?);
    phase.store(1, Ordering::Relaxed);
    let t0 = Instant::now();
    let h3 = Member::start(Spec {
        name: "h3".into(),
        cluster: Some(id.into()),
        seed,
        ..spec.clone()
    })
    .await?;
    wait_settled(&[&h1, &h2, &h3], 3).await?;
    let join_ms = ms(t0.elapsed());
    phase.store(0, Ordering::Relaxed);
    let after = owners(&view(&h1).await?);
    let join = Move {
        what: "join (2 → 3 nodes)",
        ms: join_ms,
        answered_ms: None,
        shards_moved: moved(&before, &after),
    };
    tokio::time::sleep(steady).await;

    // Leave.
    let before = owners(&view(&h1).await?);
    phase.store(1, Ordering::Relaxed);
    let t0 = Instant::now();
    let (status, answer) = http_call(h3.http, "POST", "/v1/cluster/leave").await?;
    let answered = t0.elapsed();
    if status != 200 {
        bail!("POST /v1/cluster/leave on h3: {status} {answer}");
    }
    let left = loop {
        if let Some(vs) = views(&[&h1, &h2]).await {
            let done = vs.iter().all(|v| {
                v["settled"] == true
                    && v["moving"] == 0
                    && shards_of(v, "h3") == 0
                    && v["shards"]
                        .as_array()
                        .is_some_and(|s| s.iter().all(|e| !e["owner"].is_null()))
            });
            if done {
                break t0.elapsed();
            }
        }
        if t0.elapsed() > SETTLE_LIMIT {
            bail!("the cluster did not settle after h3 left within {SETTLE_LIMIT:?}");
        }
        tokio::time::sleep(POLL).await;
    };
    phase.store(0, Ordering::Relaxed);
    let after = owners(&view(&h1).await?);
    let leave = Move {
        what: "leave (3 → 2 nodes)",
        ms: ms(left),
        answered_ms: Some(ms(answered)),
        shards_moved: moved(&before, &after),
    };
    tokio::time::sleep(steady).await;
    stop.store(true, Ordering::Relaxed);
    let load = publisher.await??;
    for c in clients {
        c.close().await;
    }
    drop(h3);
    Ok(Handoff {
        join,
        leave,
        load,
        rate: o.handoff_rate,
        keys: o.handoff_keys,
    })
}

/// Unwindowed state to move: running totals per key (a ledger in front of the aggregate, a
/// KV view behind it), one event for each of `keys` keys, acknowledged before the join.
async fn load_running_totals(
    h1: &Member,
    clients: &[starling_node::client::quic::QuicClient],
    keys: u64,
) -> Result<()> {
    use starling_engine::operators::Value;
    use starling_node::quic::wire::row_to_wire;
    HttpClient::new(&h1.base())
        .submit(&format!(
            "name: totals\ninputs:\n  - {{id: c, topic: {TOPIC}, watermark: {{max_delay: 5s, idle_timeout: 1s}}}}\nnodes:\n  - id: t\n    op: aggregate\n    input: c\n    aggregates: [{{name: n, fn: count}}, {{name: s, fn: sum, expr: amount}}]\n  - {{id: v, op: kv_put, input: t, view: totals}}\noutputs:\n  - {{name: out, from: t}}\n"
        ))
        .await
        .context("submitting the running totals whose state the hand-off moves")?;
    let note = "an event of about one hundred bytes";
    let mut sent = 0u64;
    while sent < keys {
        let n = (keys - sent).min(1000);
        let rows: Vec<_> = (sent..sent + n)
            .map(|k| {
                row_to_wire(&[
                    Value::str(&format!("key-{k:07}")),
                    Value::Timestamp(1_000),
                    Value::Int((k % 1000) as i64),
                    Value::str(note),
                ])
            })
            .collect();
        let client = &clients[(sent / 1000) as usize % clients.len()];
        let acked = client
            .publish(TOPIC, rows)
            .await
            .context("loading the running totals")?;
        if acked != n {
            bail!("{acked} of {n} events of the running totals acknowledged");
        }
        sent += n;
    }
    Ok(())
}
