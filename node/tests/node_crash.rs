//! The crash test of ARCHITECTURE §6 on a real node process: under a steady publish load the
//! node is SIGKILLed at random moments, ten times; after each restart every acknowledged
//! event is in the log, and at the end the dataflows' results equal what the log holds (the
//! run with no kill over the same events): an unwindowed count (whole-log replay) and a
//! windowed count into a time series, checkpointed every 300 ms (restore + partial replay).

mod node_common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use node_common::{clicks_topic, NodeProc};
use serde_json::{json, Value as Json};
use starling_node::client::http::HttpClient;

const KILLS: usize = 10;
const USERS: u64 = 7;

const COUNTS: &str = r#"name: totals
inputs: [{id: c, topic: clicks}]
nodes:
  - id: agg
    op: aggregate
    input: c
    aggregates:
      - {name: n, fn: count}
      - {name: s, fn: sum, expr: amount}
outputs: [{name: out, from: agg}]
"#;

const WINDOWS: &str = r#"name: windows
inputs: [{id: c, topic: clicks, watermark: {max_delay: 0s, idle_timeout: 200ms}}]
nodes:
  - {id: w, op: window, input: c, kind: tumbling, size: 100ms}
  - id: a
    op: aggregate
    input: w
    aggregates: [{name: n, fn: count}, {name: s, fn: sum, expr: amount}]
  - {id: h, op: series, input: a, name: per_user}
outputs: [{name: out, from: a}]
"#;

fn start(dir: tempfile::TempDir) -> NodeProc {
    NodeProc::start_in(
        dir,
        &[
            "--durability",
            "sync",
            "--shards",
            "16",
            "--checkpoint-interval-ms",
            "300",
        ],
    )
}

/// Count and sum per user over every window the series holds below `to`.
async fn series_totals(node: &NodeProc, to: u64) -> BTreeMap<String, (u64, u64)> {
    let http = reqwest::Client::new();
    let mut out = BTreeMap::new();
    for u in 0..USERS {
        let user = format!("u{u}");
        let r: Json = http
            .get(node.url(&format!(
                "/v1/series/per_user/{user}?from=0&to={to}&limit=10000"
            )))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let (mut n, mut s) = (0, 0);
        for p in r["points"].as_array().unwrap() {
            n += p["value"]["n"].as_u64().unwrap();
            s += p["value"]["s"].as_u64().unwrap();
        }
        out.insert(user, (n, s));
    }
    out
}

/// Every event id in the topic's log (all shards), with duplicates counted.
async fn logged(node: &NodeProc) -> BTreeMap<u64, (String, usize)> {
    match node_common::read_log(node, "clicks").await {
        Ok(log) => log,
        Err(e) => panic!("log read failed: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_no_acknowledged_event() {
    let mut node = start(tempfile::tempdir().unwrap());
    let client = HttpClient::new(&node.base());
    client.create_topic(&clicks_topic("clicks")).await.unwrap();
    client.submit(COUNTS).await.unwrap();
    client.submit(WINDOWS).await.unwrap();

    let acked: Arc<Mutex<BTreeSet<u64>>> = Arc::default();
    let mut next_id = 1u64;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for kill in 0..KILLS {
        // A publisher that keeps sending 20-event batches until the node dies.
        let base = node.base();
        let acked_now = Arc::clone(&acked);
        let first = next_id;
        let publisher = tokio::spawn(async move {
            let client = HttpClient::new(&base);
            let mut id = first;
            loop {
                let batch: Vec<u64> = (id..id + 20).collect();
                id += 20;
                let body: Vec<u8> = batch
                    .iter()
                    .flat_map(|i| {
                        let e = json!({"user": format!("u{}", i % USERS), "ts": i, "amount": i});
                        let mut line = e.to_string().into_bytes();
                        line.push(b'\n');
                        line
                    })
                    .collect();
                match client.publish_ndjson("clicks", body).await {
                    Ok(n) => {
                        assert_eq!(n, 20);
                        acked_now.lock().unwrap().extend(batch);
                    }
                    Err(_) => return id,
                }
            }
        });
        tokio::time::sleep(Duration::from_millis(150 + rand() % 400)).await;
        let dir = node.sigkill();
        next_id = publisher.await.unwrap();
        node = start(dir);
        // Every acknowledged event so far is in the log after the restart.
        let log = logged(&node).await;
        let acked_ids = acked.lock().unwrap().clone();
        let missing: Vec<&u64> = acked_ids.iter().filter(|i| !log.contains_key(i)).collect();
        assert!(
            missing.is_empty(),
            "kill {kill}: acknowledged but not in the log: {missing:?}"
        );
        let doubled: Vec<&u64> = log
            .iter()
            .filter(|(_, (_, n))| *n > 1)
            .map(|(i, _)| i)
            .collect();
        assert!(doubled.is_empty(), "kill {kill}: logged twice: {doubled:?}");
    }
    assert!(
        acked.lock().unwrap().len() > 500,
        "the load was too light to mean much"
    );

    // The results equal a run over exactly what the log holds: count and sum per user.
    let log = logged(&node).await;
    eprintln!(
        "{KILLS} SIGKILLs: {} events acknowledged, {} in the log",
        acked.lock().unwrap().len(),
        log.len()
    );
    let mut expected: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for (id, (user, _)) in &log {
        let e = expected.entry(user.clone()).or_default();
        e.0 += 1;
        e.1 += id;
    }
    let http = reqwest::Client::new();
    let resp = http
        .get(node.url("/v1/dataflows/totals/outputs/out"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // One more event per user makes every key's result come out now.
    let sentinel = 1u64 << 40;
    let body: Vec<u8> = (0..USERS)
        .flat_map(|u| {
            let mut line = json!({"user": format!("u{u}"), "ts": sentinel, "amount": sentinel})
                .to_string()
                .into_bytes();
            line.push(b'\n');
            line
        })
        .collect();
    HttpClient::new(&node.base())
        .publish_ndjson("clicks", body)
        .await
        .unwrap();
    for (user, e) in expected.iter_mut() {
        assert!(user.starts_with('u'));
        e.0 += 1;
        e.1 += sentinel;
    }
    // The windowed count, restored from checkpoints and the log after them, put every
    // logged event in exactly one window of the series.
    let logged_totals: BTreeMap<String, (u64, u64)> = expected
        .iter()
        .map(|(u, (n, s))| (u.clone(), (n - 1, s - sentinel)))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = series_totals(&node, sentinel).await;
        if got == logged_totals {
            break;
        }
        if Instant::now() >= deadline {
            // Which windows differ, for the failure message.
            let r: Json = reqwest::Client::new()
                .get(node.url(&format!(
                    "/v1/series/per_user/u0?from=0&to={sentinel}&limit=10000"
                )))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let mut have: BTreeMap<u64, u64> = BTreeMap::new();
            for p in r["points"].as_array().unwrap() {
                have.insert(
                    p["time"].as_u64().unwrap(),
                    p["value"]["n"].as_u64().unwrap(),
                );
            }
            let mut want: BTreeMap<u64, u64> = BTreeMap::new();
            for (id, (user, _)) in &log {
                if user == "u0" {
                    *want.entry(id / 100 * 100).or_default() += 1;
                }
            }
            let diff: Vec<_> = want
                .iter()
                .filter(|(t, n)| have.get(t) != Some(n))
                .map(|(t, n)| (*t, *n, have.get(t).copied()))
                .collect();
            let _ = std::fs::write(
                std::env::temp_dir().join("starling-crash-node.log"),
                node.log(),
            );
            panic!(
                "the series never matched the log\n got: {got:?}\nwant: {logged_totals:?}\nu0 windows (start, want, have): {diff:?}\nnode log:\n{}",
                node.log().lines().filter(|l| (l.contains("checkpoint saved") && !l.contains("time=1099511627777")) || l.contains("recover") || l.contains("starting from") || l.contains("WARN") || l.contains("ERROR")).collect::<Vec<_>>().join("\n").chars().rev().take(20000).collect::<String>().chars().rev().collect::<String>()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut stream = resp.bytes_stream();
    let mut buf = Vec::new();
    let mut state: BTreeMap<(String, u64, u64), i64> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let current = |state: &BTreeMap<(String, u64, u64), i64>| -> BTreeMap<String, (u64, u64)> {
        state
            .iter()
            .filter(|(_, d)| **d > 0)
            .map(|((u, n, s), _)| (u.clone(), (*n, *s)))
            .collect()
    };
    while current(&state) != expected {
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, stream.next()).await;
        let Ok(Some(Ok(chunk))) = chunk else {
            panic!(
                "results never matched the log\n got: {:?}\nwant: {expected:?}",
                current(&state)
            );
        };
        buf.extend_from_slice(&chunk);
        while let Some(i) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=i).collect();
            let u: Json = serde_json::from_slice(&line).unwrap();
            let row = &u["row"];
            let k = (
                u["key"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{u}"))
                    .to_string(),
                row["n"].as_u64().unwrap(),
                row["s"].as_u64().unwrap(),
            );
            *state.entry(k).or_default() += u["diff"].as_i64().unwrap();
        }
    }
}
