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
    engine.advance_watermark(topic, time).expect("topic exists");
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
