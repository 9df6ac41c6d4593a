//! Helpers for the real-process cluster tests: members come from `starling_testkit`; what is
//! here is the steady publisher and the per-second window flow several tests share.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value as Json;
use starling_node::client::http::HttpClient;
pub use starling_testkit::cluster::*;

/// Subscribes to `target` (`dataflow/output`, or a topic) on the node at `base`; the lines
/// arrive in the returned vector. A subscription that could not be opened (a peer's part not
/// installed yet: the node refuses rather than merge part of the cluster) is tried again
/// until a line arrived, for up to 30 s.
pub fn collect(base: &str, target: &str) -> (Arc<Mutex<Vec<Json>>>, tokio::task::JoinHandle<()>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&lines);
    let client = HttpClient::new(base);
    let target = target.to_string();
    let task = tokio::spawn(async move {
        let started = Instant::now();
        loop {
            let r = client
                .subscribe(&target, |line| {
                    sink.lock().unwrap_or_else(|p| p.into_inner()).push(line);
                    true
                })
                .await;
            let got_some = !sink.lock().unwrap_or_else(|p| p.into_inner()).is_empty();
            match r {
                Err(e) if !got_some && started.elapsed() < Duration::from_secs(30) => {
                    println!("{target}: subscription not opened yet: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                _ => return,
            }
        }
    });
    (lines, task)
}

/// Per user and second of event time, nothing closing until the final watermark: every
/// window is open through any move or failover, so its state must survive it.
pub const PER_SECOND_YAML: &str = r#"name: per_second
inputs:
  - {id: c, topic: clicks, watermark: {max_delay: 3600s, idle_timeout: 0s}}
nodes:
  - {id: w, op: window, input: c, kind: tumbling, size: 1s}
  - id: n
    op: aggregate
    input: w
    aggregates: [{name: clicks, fn: count}]
outputs:
  - {name: out, from: n}
"#;

/// Publishes batches of 50 `clicks` events (`users` users, event times from 1 000 000 up,
/// one millisecond apart) with `pause` between batches to the nodes of `bases` in turn, until
/// `stop` (with no pause, event time runs about ten times ahead of the wall clock); every
/// acknowledged event goes
/// into `acked` as (ts, user). Returns how many publishes were not acknowledged.
pub fn publish_steadily(
    bases: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    users: u64,
    acked: std::sync::Arc<std::sync::Mutex<Vec<(u64, String)>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    pause: Duration,
) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let mut i = 0u64;
        let mut refused = 0;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let batch: Vec<(u64, String)> = (0..50)
                .map(|j| (1_000_000 + i * 50 + j, format!("u{}", (i * 50 + j) % users)))
                .collect();
            let mut body = Vec::new();
            for (ts, user) in &batch {
                body.extend_from_slice(
                    serde_json::json!({"user": user, "ts": ts})
                        .to_string()
                        .as_bytes(),
                );
                body.push(b'\n');
            }
            let targets = bases.lock().unwrap().clone();
            let base = &targets[i as usize % targets.len()];
            match starling_node::client::http::HttpClient::new(base)
                .publish_ndjson("clicks", body)
                .await
            {
                Ok(n) => {
                    assert_eq!(n, 50);
                    acked.lock().unwrap().extend(batch);
                }
                Err(e) => {
                    refused += 1;
                    eprintln!("publish to {base} not acknowledged: {e}");
                }
            }
            i += 1;
            tokio::time::sleep(pause).await;
        }
        refused
    })
}
