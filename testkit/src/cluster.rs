//! Cluster members for tests and benchmarks: start them on loopback with OS-chosen ports,
//! and wait until the cluster has settled (one leader, every shard owned, nothing moving).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::Value as Json;

use crate::node::NodeProc;

/// Shards of the test clusters (few, so placement settles fast).
pub const SHARDS: &str = "16";

/// Starts a cluster member of cluster `t` (`--gossip 127.0.0.1:0`), joining through `seed`
/// (a member's gossip address) if given.
pub fn member(seed: Option<&str>, name: &str) -> NodeProc {
    member_of("t", SHARDS, seed, name)
}

/// Starts a member of cluster `cluster` with `shards` shards, joining through `seed`.
pub fn member_of(cluster: &str, shards: &str, seed: Option<&str>, name: &str) -> NodeProc {
    let mut args = vec![
        "--gossip",
        "127.0.0.1:0",
        "--cluster-id",
        cluster,
        "--shards",
        shards,
        "--node-name",
        name,
    ];
    if let Some(s) = seed {
        args.extend(["--seed", s]);
    }
    NodeProc::start(&args)
}

/// Starts `n` members named a, b, c, ... joined through the first.
pub fn members(n: usize) -> Vec<NodeProc> {
    let first = member(None, "a");
    let seed = first.banner_field("gossip");
    let mut out = vec![first];
    for i in 1..n {
        let name = ((b'a' + i as u8) as char).to_string();
        out.push(member(Some(&seed), &name));
    }
    out
}

/// A multi-threaded runtime for the async HTTP and QUIC clients.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// `GET /v1/cluster` of one node, if it answers JSON.
pub async fn cluster_view(node: &NodeProc) -> Option<Json> {
    let r = reqwest::get(node.url("/v1/cluster")).await.ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.json().await.ok()
}

/// Waits until every node sees `n` live members, one leader, every shard owned and nothing
/// left to move; returns how long that took.
pub async fn settled(nodes: &[&NodeProc], n: usize, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let mut ok = true;
        let mut leaders = BTreeSet::new();
        let mut last = Json::Null;
        for node in nodes {
            match cluster_view(node).await {
                Some(v) => {
                    let members = v["members"].as_array().map_or(0, Vec::len);
                    let owned = v["shards"]
                        .as_array()
                        .is_some_and(|s| s.iter().all(|e| !e["owner"].is_null()));
                    let live = v["members"]
                        .as_array()
                        .is_some_and(|m| m.iter().all(|m| m["state"] == "live"));
                    ok &= members == n && owned && live && v["settled"] == true;
                    leaders.insert(v["leader"].to_string());
                    last = v;
                }
                None => ok = false,
            }
        }
        if ok && leaders.len() == 1 && !leaders.contains("null") {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "the cluster did not settle on {n} members within {limit:?}; last view: {last:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Shards owned per member name, from one node's view.
pub fn owned_by_name(view: &Json) -> std::collections::BTreeMap<String, u64> {
    view["members"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            (
                m["name"].as_str().unwrap_or("?").to_string(),
                m["shards"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// A member's gossip state by name in a `/v1/cluster` view (`removed` when not listed).
pub fn state_of(view: &Json, name: &str) -> String {
    view["members"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["name"] == name)
        .map_or("removed".into(), |m| {
            m["state"].as_str().unwrap_or("?").to_string()
        })
}
