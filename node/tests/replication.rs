//! Replication (issue 7) with real node processes on loopback: R = 2 with `acks = all`, an
//! owner killed under load. Nothing acknowledged may be lost, every shard's copies must hold
//! the same log, and the window results must equal those of one node that saw every event
//! the cluster kept.

mod cluster_common;
mod node_common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cluster_common::{cluster_view, rt, settled, state_of, PER_SECOND_YAML};
use node_common::{clicks_topic, late_events, NodeProc};
use serde_json::Value as Json;
use starling_node::client::http::HttpClient;

const SHARDS: &str = "16";

/// The arguments of a member of cluster `r` with R = `replication`.
fn member_args(seed: Option<&str>, name: &str, replication: &str) -> Vec<String> {
    let mut args = vec![
        "--gossip",
        "127.0.0.1:0",
        "--cluster-id",
        "r",
        "--shards",
        SHARDS,
        "--node-name",
        name,
        "--replication",
        replication,
    ];
    if let Some(s) = seed {
        args.extend(["--seed", s]);
    }
    args.into_iter().map(String::from).collect()
}

/// A member of cluster `r` with R = `replication`.
fn member(seed: Option<&str>, name: &str, replication: &str) -> NodeProc {
    let args = member_args(seed, name, replication);
    NodeProc::start(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn id_of(view: &Json, name: &str) -> Json {
    view["members"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["name"] == name)
        .map(|m| m["id"].clone())
        .unwrap_or(Json::Null)
}

/// (ts, user) of every event in one shard of a node's log, in log order.
async fn shard_log(node: &NodeProc, topic: &str, shard: u64) -> Vec<(u64, String)> {
    let http = reqwest::Client::new();
    let mut out = Vec::new();
    let mut from = 0;
    loop {
        let page: Json = http
            .get(node.url(&format!(
                "/v1/topics/{topic}/log?shard={shard}&from={from}&limit=1000"
            )))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let entries = page["entries"].as_array().cloned().unwrap_or_default();
        if entries.is_empty() {
            return out;
        }
        for e in &entries {
            from = e["offset"].as_u64().unwrap() + 1;
            for ev in e["events"].as_array().into_iter().flatten() {
                out.push((
                    ev["time"].as_u64().unwrap(),
                    ev["row"]["user"].as_str().unwrap().to_string(),
                ));
            }
        }
    }
}

fn collect(node: &NodeProc, target: &str) -> (Arc<Mutex<Vec<Json>>>, tokio::task::JoinHandle<()>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&lines);
    let client = HttpClient::new(&node.base());
    let target = target.to_string();
    let task = tokio::spawn(async move {
        let r = client
            .subscribe(&target, |line| {
                sink.lock().unwrap().push(line);
                true
            })
            .await;
        eprintln!("subscription ended: {r:?}");
    });
    (lines, task)
}

#[test]
fn a_killed_owner_loses_no_acknowledged_event_and_results_stay_exact() {
    killed_owner(PER_SECOND_YAML, Duration::from_millis(5));
}

/// Per-user 1 s windows that close as event time moves (`max_delay: 5s`), while the
/// publisher sends flat out, so event time runs several times ahead of the wall clock, as in
/// any catch-up: the windows open when the owner is killed must come out whole on its
/// promoted replica, and no event may be counted late (one node fed the same events in
/// order counts none). With a 5 ms pause between batches it passes; flat out it does not.
///
/// Ignored: it reproduces the failover bug of the exactness issue (two runs: 187 of 3 992
/// windows wrong, 125 of them missing; 95 of 4 442 short, e.g. 1 event instead of 2). The
/// promoted owner replays the dead owner's shards into dataflows whose watermark its own
/// shards moved on during failure detection, so the windows open at the kill lose their
/// events as late. The fix needs the cluster-wide watermark of ARCHITECTURE §4 (see the
/// issue's notes).
#[test]
#[ignore = "failover under a fast event clock still counts replayed events late: see the exactness issue"]
fn a_killed_owner_under_a_fast_event_clock_keeps_every_window_whole() {
    killed_owner(&closing_yaml(), Duration::ZERO);
}

/// `PER_SECOND_YAML` with windows that close 5 s of event time after their end (slack for
/// batches forwarded between members out of order) instead of only at the final watermark.
fn closing_yaml() -> String {
    let yaml = PER_SECOND_YAML.replace("max_delay: 3600s", "max_delay: 5s");
    assert_ne!(
        yaml, PER_SECOND_YAML,
        "PER_SECOND_YAML no longer sets max_delay: 3600s"
    );
    yaml
}

/// Three members with R = 2 under steady publishing; one owner SIGKILLed; the survivors
/// must keep every acknowledged event once, hold equal copies, count nothing late, and give
/// the window results of one node over the events they kept.
fn killed_owner(yaml: &str, pause: Duration) {
    rt().block_on(async {
        let a = member(None, "a", "2");
        let seed = a.banner_field("gossip");
        let b = member(Some(&seed), "b", "2");
        let c = member(Some(&seed), "c", "2");
        settled(&[&a, &b, &c], 3, Duration::from_secs(60)).await;
        let view = cluster_view(&a).await.unwrap();
        assert_eq!(view["replication"], 2);
        for e in view["shards"].as_array().unwrap() {
            assert_eq!(e["replicas"].as_array().unwrap().len(), 1, "{e}");
        }
        let admin = HttpClient::new(&a.base());
        admin.create_topic(&clicks_topic("clicks")).await.unwrap();
        admin.submit(yaml).await.unwrap();
        let (lines, task) = collect(&a, "per_second/out");

        let acked = Arc::new(Mutex::new(Vec::<(u64, String)>::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let publisher = cluster_common::publish_steadily(
            Arc::new(Mutex::new(vec![a.base(), b.base()])),
            499,
            Arc::clone(&acked),
            Arc::clone(&stop),
            pause,
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        let before = acked.lock().unwrap().len();
        let c_id = id_of(&view, "c");
        let owned_by_c = view["shards"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["owner"] == c_id)
            .count();
        assert!(owned_by_c > 0, "c owns no shard: {view:#}");
        let _dir = c.sigkill();
        let t = Instant::now();
        let mut down = None;
        let failover;
        loop {
            let v = cluster_view(&a).await.unwrap_or(Json::Null);
            if down.is_none() && state_of(&v, "c") != "live" {
                down = Some(t.elapsed());
            }
            let served = v["shards"].as_array().is_some_and(|s| {
                s.iter()
                    .all(|e| e["owner"] != c_id && !e["owner"].is_null() && e["moving_to"].is_null())
            });
            if down.is_some() && served {
                failover = t.elapsed();
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(60), "no failover: {v:#}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let down = down.unwrap_or_default();
        println!(
            "SIGKILL of c (owner of {owned_by_c} shards) after {before} acknowledged events: marked down after {down:?}, every shard served by a survivor after {failover:?}"
        );
        assert!(down < Duration::from_secs(5), "detection took {down:?} (documented: 2–3 s)");
        // Load goes on until 1 000 more events are acknowledged (or 30 s pass).
        let t = Instant::now();
        let resumed = loop {
            let n = acked.lock().unwrap().len();
            if n >= before + 1_000 || t.elapsed() > Duration::from_secs(30) {
                break t.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        println!("1 000 more events acknowledged {resumed:?} after failover");
        stop.store(true, Ordering::Relaxed);
        let refused = publisher.await.unwrap();
        let acked = acked.lock().unwrap().clone();
        assert!(acked.len() >= before + 1_000, "too little load after the kill: {}", acked.len());

        // Every shard has its R copies again, on the survivors, with the same log.
        let t = Instant::now();
        let view = loop {
            let v = cluster_view(&a).await.unwrap_or(Json::Null);
            let copied = v["shards"].as_array().is_some_and(|s| {
                s.iter().all(|e| {
                    e["replicas"].as_array().is_some_and(|r| r.len() == 1 && r[0] != c_id)
                        && e["joining"].as_array().is_some_and(Vec::is_empty)
                })
            });
            if copied {
                break v;
            }
            assert!(t.elapsed() < Duration::from_secs(30), "copies not restored: {v:#}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let node_of = |id: &Json| if *id == id_of(&view, "a") { &a } else { &b };
        let mut kept: Vec<(u64, String)> = Vec::new();
        for e in view["shards"].as_array().unwrap() {
            let shard = e["shard"].as_u64().unwrap();
            let owner_log = shard_log(node_of(&e["owner"]), "clicks", shard).await;
            // The replica may be a fetch behind: wait for it to catch up.
            let t = Instant::now();
            loop {
                let replica_log = shard_log(node_of(&e["replicas"][0]), "clicks", shard).await;
                if replica_log == owner_log {
                    break;
                }
                assert!(
                    t.elapsed() < Duration::from_secs(10),
                    "shard {shard}: the owner logged {} events, its replica {}",
                    owner_log.len(),
                    replica_log.len()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            kept.extend(owner_log);
        }
        let mut count: BTreeMap<&(u64, String), usize> = BTreeMap::new();
        for e in &kept {
            *count.entry(e).or_insert(0) += 1;
        }
        let twice = count.values().filter(|n| **n > 1).count();
        let lost: Vec<_> = acked.iter().filter(|e| !count.contains_key(e)).collect();
        println!(
            "{} acknowledged, {} kept by the owners' logs ({} kept without an acknowledgement), {refused} publishes refused",
            acked.len(),
            count.len(),
            count.len() - (acked.len() - lost.len())
        );
        assert!(lost.is_empty(), "{} acknowledged events lost, e.g. {:?}", lost.len(), &lost[..lost.len().min(5)]);
        assert_eq!(twice, 0, "events logged twice by their shard's owner");

        // The window results equal those of one node over the events the cluster kept.
        let mut truth: BTreeMap<(String, u64), i64> = BTreeMap::new();
        for (ts, user) in count.keys() {
            *truth.entry((user.clone(), ts / 1000 * 1000 + 999)).or_insert(0) += 1;
        }
        let last = kept.iter().map(|(ts, _)| *ts).max().unwrap_or(0);
        admin.advance_watermark("clicks", last + 10_000).await.unwrap();
        let t = Instant::now();
        let got = loop {
            let mut got: BTreeMap<(String, u64), i64> = BTreeMap::new();
            for l in lines.lock().unwrap().iter() {
                let d = l["diff"].as_i64().unwrap();
                let key = (l["key"].as_str().unwrap().to_string(), l["event_time"].as_u64().unwrap());
                *got.entry(key).or_insert(0) += d * l["row"]["clicks"].as_i64().unwrap();
            }
            got.retain(|_, n| *n != 0);
            if got == truth || t.elapsed() > Duration::from_secs(30) {
                break got;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        task.abort();
        let differ: Vec<_> = truth
            .iter()
            .filter(|(k, n)| got.get(*k) != Some(*n))
            .map(|(k, n)| (k.clone(), *n, got.get(k).copied()))
            .collect();
        let extra = got.keys().filter(|k| !truth.contains_key(*k)).count();
        assert!(
            differ.is_empty() && extra == 0,
            "{} windows expected, {} received ({extra} unexpected); {} differ, e.g. (key, expected, got): {:?}",
            truth.len(),
            got.len(),
            differ.len(),
            &differ[..differ.len().min(10)]
        );
        println!("{} per-user windows equal one node's over every kept event", truth.len());
        let late = late_events(&a).await + late_events(&b).await;
        assert_eq!(late, 0.0, "events counted late (one node in order counts none)");
    });
}

/// 32 events of 32 users (so every shard gets some), `first` giving their times.
fn spread(first: u64) -> Vec<u8> {
    let mut body = Vec::new();
    for i in 0..32 {
        body.extend_from_slice(
            serde_json::json!({"user": format!("u{i}"), "ts": 1_000 + first + i})
                .to_string()
                .as_bytes(),
        );
        body.push(b'\n');
    }
    body
}

/// Events of `topic` in `node`'s log, over every shard.
async fn logged(node: &NodeProc, topic: &str) -> Vec<(u64, String)> {
    let mut all = Vec::new();
    for shard in 0..SHARDS.parse::<u64>().unwrap() {
        all.extend(shard_log(node, topic, shard).await);
    }
    all
}

/// `min_insync` (Kafka's `min.insync.replicas`) with R = 3 on three nodes: while one is
/// dead, a topic that needs three in-sync copies refuses publishes with an error naming the
/// setting and logs none of them, while a topic that needs one copy takes them; once the
/// node is back and has caught up, the first topic takes publishes again. Values that no
/// cluster can meet, or of the wrong type, are refused when the topic is declared.
#[test]
fn min_insync_refuses_publishes_while_too_few_copies_are_in_sync() {
    rt().block_on(async {
        let a = member(None, "a", "3");
        let seed = a.banner_field("gossip");
        let b = member(Some(&seed), "b", "3");
        let c = member(Some(&seed), "c", "3");
        settled(&[&a, &b, &c], 3, Duration::from_secs(60)).await;
        let admin = HttpClient::new(&a.base());
        for bad in [
            serde_json::json!(0),
            serde_json::json!(8),
            serde_json::json!("two"),
        ] {
            let mut t = clicks_topic("bad");
            t["min_insync"] = bad.clone();
            let e = admin.create_topic(&t).await.unwrap_err().to_string();
            assert!(e.contains("min_insync"), "min_insync {bad}: {e}");
        }
        let mut safe = clicks_topic("safe");
        safe["min_insync"] = serde_json::json!(3);
        admin.create_topic(&safe).await.unwrap();
        admin.create_topic(&clicks_topic("clicks")).await.unwrap();
        assert_eq!(admin.publish_ndjson("safe", spread(0)).await.unwrap(), 32);

        let c_id = c.banner_field("node_id");
        let dir = c.sigkill();
        let t = Instant::now();
        loop {
            let v = cluster_view(&a).await.unwrap_or(Json::Null);
            let without_c = v["shards"].as_array().is_some_and(|s| {
                s.iter().all(|e| {
                    e["owner"] != c_id.as_str()
                        && e["replicas"]
                            .as_array()
                            .is_some_and(|r| r.len() == 1 && r[0] != c_id.as_str())
                })
            });
            if without_c {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "c's copies stayed listed: {v:#}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let e = admin
            .publish_ndjson("safe", spread(100))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("min_insync 3") && e.contains("2 in-sync copies"),
            "{e}"
        );
        assert_eq!(
            admin.publish_ndjson("clicks", spread(200)).await.unwrap(),
            32
        );
        assert_eq!(
            logged(&a, "safe").await.len(),
            32,
            "a refused publish was logged"
        );
        assert_eq!(
            logged(&b, "safe").await.len(),
            32,
            "a refused publish was logged"
        );

        let args = member_args(Some(&seed), "c", "3");
        let c = NodeProc::start_in(dir, &args.iter().map(String::as_str).collect::<Vec<_>>());
        settled(&[&a, &b, &c], 3, Duration::from_secs(60)).await;
        assert_eq!(admin.publish_ndjson("safe", spread(300)).await.unwrap(), 32);
        // Every node holds every shard, as owner or in-sync replica, once the acks are in.
        let mut on_a = logged(&a, "safe").await;
        on_a.sort();
        assert_eq!(on_a.len(), 64);
        for other in [&b, &c] {
            let mut copy = logged(other, "safe").await;
            copy.sort();
            assert_eq!(on_a, copy);
        }
    });
}
