//! Reading `/v1/cluster` views: members, shard owners, and when the cluster counts as settled.
//! One file so every part judges "settled" and "moved" by the same rules.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::Value as Json;

use super::http::http_call;
use super::member::Member;
use super::{POLL, SETTLE_LIMIT};

/// `GET /v1/cluster` of one node.
pub(super) async fn view(m: &Member) -> Result<Json> {
    let (status, v) = http_call(m.http, "GET", "/v1/cluster").await?;
    if status != 200 {
        bail!("GET /v1/cluster on {}: {status} {v}", m.name);
    }
    Ok(v)
}

/// Every node's view, or `None` if one did not answer.
pub(super) async fn views(members: &[&Member]) -> Option<Vec<Json>> {
    let mut out = Vec::with_capacity(members.len());
    for m in members {
        out.push(view(m).await.ok()?);
    }
    Some(out)
}

pub(super) fn member_names(v: &Json) -> Vec<String> {
    v["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["name"].as_str().map(str::to_string))
        .collect()
}

/// Shards a member owns, by name, in one view.
pub(super) fn shards_of(v: &Json, name: &str) -> u64 {
    v["members"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["name"] == name)
        .and_then(|m| m["shards"].as_u64())
        .unwrap_or(0)
}

/// The owner of every shard (node id), in one view.
pub(super) fn owners(v: &Json) -> BTreeMap<u64, Option<String>> {
    v["shards"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| {
            Some((
                s["shard"].as_u64()?,
                s["owner"].as_str().map(str::to_string),
            ))
        })
        .collect()
}

/// Shards whose owner differs between two tables.
pub(super) fn moved(
    before: &BTreeMap<u64, Option<String>>,
    after: &BTreeMap<u64, Option<String>>,
) -> usize {
    after
        .iter()
        .filter(|(shard, owner)| before.get(shard) != Some(owner))
        .count()
}

/// Settled as the engine's tests define it: every node sees `n` members (all live), one
/// leader, every shard owned, nothing moving.
pub(super) fn all_settled(vs: &[Json], n: usize) -> bool {
    let leaders: std::collections::BTreeSet<String> =
        vs.iter().map(|v| v["leader"].to_string()).collect();
    leaders.len() == 1
        && !leaders.contains("null")
        && vs.iter().all(|v| {
            let members = v["members"].as_array();
            members.map_or(0, Vec::len) == n
                && members.is_some_and(|m| m.iter().all(|m| m["state"] == "live"))
                && v["shards"]
                    .as_array()
                    .is_some_and(|s| s.iter().all(|e| !e["owner"].is_null()))
                && v["settled"] == true
        })
}

/// Waits until `all_settled` with `n` members; returns how long it took.
pub(super) async fn wait_settled(members: &[&Member], n: usize) -> Result<Duration> {
    let start = Instant::now();
    loop {
        if let Some(vs) = views(members).await {
            if all_settled(&vs, n) {
                return Ok(start.elapsed());
            }
        }
        if start.elapsed() > SETTLE_LIMIT {
            let last = match members.first() {
                Some(m) => view(m)
                    .await
                    .map_or_else(|e| e.to_string(), |v| v.to_string()),
                None => String::new(),
            };
            bail!(
                "the cluster did not settle on {n} members within {SETTLE_LIMIT:?}; last view: {last}"
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moved_counts_changed_owners() {
        let a: BTreeMap<u64, Option<String>> =
            [(0, Some("x".into())), (1, Some("y".into())), (2, None)].into();
        let b: BTreeMap<u64, Option<String>> = [
            (0, Some("x".into())),
            (1, Some("z".into())),
            (2, Some("z".into())),
        ]
        .into();
        assert_eq!(moved(&a, &b), 2);
        assert_eq!(moved(&a, &a), 0);
    }
}
