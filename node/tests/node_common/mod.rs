//! Helpers for the real-process node tests: the node process itself comes from
//! `starling_testkit`; what is here is this crate's test vocabulary (topics, definitions,
//! metrics and log reads).
#![allow(dead_code, unused_imports)]

use serde_json::Value as Json;

pub use starling_testkit::node::{cli, raw_exchange, NodeProc};

pub const BIN: &str = env!("CARGO_BIN_EXE_starling");

/// The clicks topic declaration as JSON.
pub fn clicks_topic(name: &str) -> Json {
    serde_json::json!({
        "name": name,
        "key": "user",
        "time": "ts",
        "fields": [
            {"name": "user", "type": "string"},
            {"name": "ts", "type": "timestamp"},
            {"name": "amount", "type": "int", "optional": true, "default": 1}
        ]
    })
}

/// A tumbling-window dataflow over `topic`: per user and 10 s window, count and sum.
pub fn window_yaml(name: &str, topic: &str) -> String {
    format!(
        r#"name: {name}
inputs:
  - id: c
    topic: {topic}
    watermark: {{max_delay: 0s, idle_timeout: 0s}}
nodes:
  - {{id: w, op: window, input: c, kind: tumbling, size: 10s}}
  - id: per_user
    op: aggregate
    input: w
    aggregates:
      - {{name: clicks, fn: count}}
      - {{name: spent, fn: sum, expr: amount}}
outputs:
  - {{name: out, from: per_user}}
"#
    )
}

/// The events a node's dataflows counted as late (every dataflow, since its start).
pub async fn late_events(node: &NodeProc) -> f64 {
    let text = reqwest::get(node.url("/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    metric_sum(&text, "starling_late_events_total").unwrap_or(0.0)
}

/// Sum of every sample of a metric family whose line starts with `name` (`name{` or `name `).
pub fn metric_sum(text: &str, name: &str) -> Option<f64> {
    let mut found = false;
    let mut sum = 0.0;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(name.ends_with('}') || rest.starts_with('{') || rest.starts_with(' ')) {
            continue;
        }
        found = true;
        if let Some(v) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) {
            sum += v;
        }
    }
    found.then_some(sum)
}

/// Whether the metric family is declared (`# TYPE name`).
pub fn metric_declared(text: &str, name: &str) -> bool {
    text.lines()
        .any(|l| l.starts_with(&format!("# TYPE {name} ")))
}

/// Every event in a topic's log, for topics shaped like `clicks`: the `amount` field (a unique
/// id by the durability tests) → (the `user` field, how many times it is logged). Reads
/// every shard page by page over `GET /v1/topics/{topic}/log`; the first error answer is
/// returned as it came.
pub async fn read_log(
    node: &NodeProc,
    topic: &str,
) -> Result<std::collections::BTreeMap<u64, (String, usize)>, Json> {
    let http = reqwest::Client::new();
    let get = |path: String| {
        let http = http.clone();
        let url = node.url(&path);
        async move {
            http.get(url)
                .send()
                .await
                .expect("log read sent")
                .json::<Json>()
                .await
                .expect("log read answered JSON")
        }
    };
    let shards = get(format!("/v1/topics/{topic}/log")).await;
    let Some(list) = shards["shards"].as_array() else {
        return Err(shards);
    };
    let mut out: std::collections::BTreeMap<u64, (String, usize)> = Default::default();
    for s in list {
        let shard = s["shard"].as_u64().unwrap_or_default();
        let mut from = s["first_offset"].as_u64().unwrap_or_default();
        let next = s["next_offset"].as_u64().unwrap_or_default();
        while from < next {
            let page = get(format!(
                "/v1/topics/{topic}/log?shard={shard}&from={from}&limit=1000"
            ))
            .await;
            let Some(entries) = page["entries"].as_array() else {
                return Err(page);
            };
            for entry in entries {
                from = entry["offset"].as_u64().unwrap_or(u64::MAX - 1) + 1;
                for e in entry["events"].as_array().into_iter().flatten() {
                    let id = e["row"]["amount"].as_u64().unwrap_or_default();
                    let user = e["row"]["user"].as_str().unwrap_or_default().to_string();
                    out.entry(id).or_insert((user, 0)).1 += 1;
                }
            }
        }
    }
    Ok(out)
}
