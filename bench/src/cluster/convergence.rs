//! Part 2: growing a cluster one `--seed` join at a time and timing when each node is listed,
//! owns a shard and is settled; its own file because it measures joins, not load.

use std::time::Instant;

use anyhow::{bail, Result};

use super::member::{Member, Spec};
use super::view::{all_settled, member_names, shards_of, views, wait_settled};
use super::{ms, Options, POLL, SETTLE_LIMIT};

/// One node joining.
#[derive(Debug, Clone)]
pub struct Join {
    /// The cluster size once it joined (2 for the second node).
    pub nth: usize,
    /// Spawn → the node printed its banner (listening).
    pub started_ms: f64,
    /// Spawn → every node's `/v1/cluster` lists it.
    pub listed_ms: f64,
    /// Spawn → a view shows it owning a shard.
    pub first_shard_ms: f64,
    /// Spawn → every node settled with it.
    pub settled_ms: f64,
    pub shards: u64,
}

/// Starts one node alone, then adds nodes with `--seed` one at a time up to `o.nodes`,
/// timing each join. Returns the bootstrap time of the first node and the joins.
pub(super) async fn convergence(o: &Options, spec: &Spec) -> Result<(f64, Vec<Join>)> {
    let id = "bench-converge";
    let t = Instant::now();
    let first = Member::start(Spec {
        name: "c1".into(),
        cluster: Some(id.into()),
        seed: None,
        ..spec.clone()
    })
    .await?;
    let seed = first.gossip.clone();
    let mut members = vec![first];
    wait_settled(&[&members[0]], 1).await?;
    let bootstrap = ms(t.elapsed());
    let mut joins = Vec::new();
    for k in 2..=o.nodes {
        let name = format!("c{k}");
        let t0 = Instant::now();
        let m = Member::start(Spec {
            name: name.clone(),
            cluster: Some(id.into()),
            seed: seed.clone(),
            ..spec.clone()
        })
        .await?;
        let started = t0.elapsed();
        members.push(m);
        let refs: Vec<&Member> = members.iter().collect();
        let (mut listed, mut first_shard) = (None, None);
        let settled = loop {
            if let Some(vs) = views(&refs).await {
                let now = t0.elapsed();
                if listed.is_none() && vs.iter().all(|v| member_names(v).contains(&name)) {
                    listed = Some(now);
                }
                if first_shard.is_none() && vs.iter().any(|v| shards_of(v, &name) > 0) {
                    first_shard = Some(now);
                }
                if all_settled(&vs, k) && vs.iter().all(|v| shards_of(v, &name) > 0) {
                    break (now, shards_of(&vs[0], &name));
                }
            }
            if t0.elapsed() > SETTLE_LIMIT {
                bail!(
                    "node {name} did not settle into the cluster within {SETTLE_LIMIT:?}; its log:\n{}",
                    refs[k - 1].log_tail()
                );
            }
            tokio::time::sleep(POLL).await;
        };
        joins.push(Join {
            nth: k,
            started_ms: ms(started),
            listed_ms: ms(listed.unwrap_or(settled.0)),
            first_shard_ms: ms(first_shard.unwrap_or(settled.0)),
            settled_ms: ms(settled.0),
            shards: settled.1,
        });
    }
    Ok((bootstrap, joins))
}
