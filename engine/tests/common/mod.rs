//! Helpers shared by the engine's tests: start an engine, feed JSON, read consolidated results.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value as Json};
use starling_engine::operators::json::value_to_json;
use starling_engine::operators::render::Update;
use starling_engine::{Engine, EngineConfig, Subscription};

pub fn engine(workers: usize) -> Engine {
    Engine::start(EngineConfig {
        workers,
        clock_interval: Duration::from_millis(20),
        ..EngineConfig::default()
    })
    .expect("engine starts")
}

/// A row as compact JSON text (a stable, readable identity for comparisons).
pub fn row_text(row: &[starling_engine::operators::Value]) -> String {
    Json::Array(row.iter().map(value_to_json).collect()).to_string()
}

/// Every update received so far, in arrival order, as (row, diff).
pub fn drain(sub: &Subscription<Arc<[Update]>>) -> Vec<(String, isize)> {
    sub.drain()
        .iter()
        .flat_map(|b| {
            b.iter()
                .map(|(e, _, d)| (row_text(&e.row), *d))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Sums diffs per row and drops rows that cancel out: the final state of an output.
pub fn consolidate(updates: &[(String, isize)]) -> BTreeMap<String, isize> {
    let mut m = BTreeMap::new();
    for (r, d) in updates {
        *m.entry(r.clone()).or_insert(0) += d;
    }
    m.retain(|_, d| *d != 0);
    m
}

/// Closes every window up to `time` on `topic` and waits until `dataflow` has emitted it.
pub fn settle(engine: &Engine, dataflow: &str, topic: &str, time: u64) {
    engine
        .advance_watermark_local(topic, time)
        .expect("topic exists");
    assert!(
        engine
            .wait_until(dataflow, time - 1, Duration::from_secs(20))
            .expect("dataflow exists"),
        "dataflow {dataflow} did not reach {time}"
    );
}

pub const CLICKS_TOPIC: &str = r#"
topics:
  - name: clicks
    key: user
    time: ts
    fields:
      - {name: user, type: string}
      - {name: ts, type: timestamp}
      - {name: amount, type: int, optional: true, default: 1}
"#;

pub fn click(user: &str, ts: u64, amount: i64) -> Json {
    json!({"user": user, "ts": ts, "amount": amount})
}

/// Every update received so far as (time, row, diff), sorted: an exact, order-independent
/// view of an output's stream.
pub fn timed(sub: &Subscription<Arc<[Update]>>) -> Vec<(u64, String, isize)> {
    let mut v: Vec<(u64, String, isize)> = sub
        .drain()
        .iter()
        .flat_map(|b| {
            b.iter()
                .map(|(e, t, d)| (*t, row_text(&e.row), *d))
                .collect::<Vec<_>>()
        })
        .collect();
    v.sort();
    v
}

/// Every update received so far as (key, row, diff), sorted.
pub fn keyed(sub: &Subscription<Arc<[Update]>>) -> Vec<(String, String, isize)> {
    let mut v: Vec<(String, String, isize)> = sub
        .drain()
        .iter()
        .flat_map(|b| {
            b.iter()
                .map(|(e, _, d)| (value_to_json(&e.key).to_string(), row_text(&e.row), *d))
                .collect::<Vec<_>>()
        })
        .collect();
    v.sort();
    v
}

/// The consolidated rows of an output, each present exactly once (asserted), sorted.
pub fn rows(sub: &Subscription<Arc<[Update]>>) -> Vec<String> {
    let c = consolidate(&drain(sub));
    assert!(c.values().all(|d| *d == 1), "multiplicities not 1: {c:?}");
    c.into_keys().collect()
}

/// Rows of the events appended to a topic so far, sorted.
pub fn topic_rows(sub: &Subscription<Arc<[starling_engine::operators::Event]>>) -> Vec<String> {
    let mut v: Vec<String> = sub
        .drain()
        .iter()
        .flat_map(|b| b.iter().map(|e| row_text(&e.row)).collect::<Vec<_>>())
        .collect();
    v.sort();
    v
}

/// Events appended to a topic so far.
pub fn topic_events(
    sub: &Subscription<Arc<[starling_engine::operators::Event]>>,
) -> Vec<starling_engine::operators::Event> {
    sub.drain().iter().flat_map(|b| b.iter().cloned()).collect()
}

/// Like [`settle`] for a dataflow reading several topics.
pub fn settle_all(engine: &Engine, dataflow: &str, topics: &[&str], time: u64) {
    for t in topics {
        engine
            .advance_watermark_local(t, time)
            .expect("topic exists");
    }
    assert!(
        engine
            .wait_until(dataflow, time - 1, Duration::from_secs(20))
            .expect("dataflow exists"),
        "dataflow {dataflow} did not reach {time}"
    );
}

/// Polls `cond` until it holds or `timeout` passes; returns whether it held.
pub fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Owned strings from literals.
pub fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// (time, row, diff) triples from literals.
pub fn ups(v: &[(u64, &str, isize)]) -> Vec<(u64, String, isize)> {
    let mut v: Vec<(u64, String, isize)> =
        v.iter().map(|(t, r, d)| (*t, r.to_string(), *d)).collect();
    v.sort();
    v
}

/// A topic `m` with nullable int, float and string fields, for aggregate tests.
pub const METRICS_TOPIC: &str = r#"
topics:
  - name: m
    key: k
    time: ts
    fields:
      - {name: k, type: string}
      - {name: ts, type: timestamp}
      - {name: v, type: int, optional: true}
      - {name: x, type: float, optional: true}
      - {name: s, type: string, optional: true}
"#;
