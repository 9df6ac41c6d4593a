//! KV views and time series written by dataflows: exact values after out-of-order input,
//! TTL expiry, paging, lookups, and the same state after a restart (replay).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{click, settle, CLICKS_TOPIC};
use serde_json::{json, Value as Json};
use starling_engine::durable::{Store, StoreOptions};
use starling_engine::{Engine, EngineConfig};

fn engine_on(dir: &std::path::Path) -> Engine {
    let store = Store::open(
        dir,
        StoreOptions {
            shards: 4,
            ..StoreOptions::default()
        },
    )
    .expect("store opens");
    Engine::start(EngineConfig {
        workers: 2,
        clock_interval: Duration::from_millis(20),
        store: Some(Arc::new(store)),
        ..EngineConfig::default()
    })
    .expect("engine starts")
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn get(e: &Engine, view: &str, key: &str) -> Option<Json> {
    let kv = e.store().unwrap().kv().unwrap();
    kv.get(view, key.as_bytes(), now_ms())
        .unwrap()
        .map(|b| serde_json::from_slice(&b).unwrap())
}

const TOTALS: &str = r#"
inputs: [{id: c, topic: clicks, watermark: {max_delay: 5s, idle_timeout: 0s}}]
nodes:
  - {id: w, op: window, input: c, kind: tumbling, size: 10s}
  - id: agg
    op: aggregate
    input: w
    aggregates: [{name: n, fn: count}, {name: s, fn: sum, expr: amount}]
  - {id: hist, op: series, input: agg, name: per_user}
  - id: all
    op: aggregate
    input: c
    aggregates: [{name: n, fn: count}, {name: s, fn: sum, expr: amount}]
  - {id: latest, op: kv_put, input: all, view: totals}
  - {id: recent, op: kv_put, input: c, view: last_click, ttl: 300ms}
outputs: [{name: out, from: hist}]
"#;

fn install(e: &Engine) {
    e.install_text(&format!("name: views\n{CLICKS_TOPIC}{TOTALS}"))
        .expect("installs");
}

/// Out of order within 5 s: 3 users, 60 clicks over 30 s.
fn clicks() -> Vec<Json> {
    let mut v = Vec::new();
    for i in 0..60u64 {
        let ts = i * 500 + if i % 3 == 0 { 0 } else { 4_000 };
        v.push(click(&format!("u{}", i % 3), ts, i as i64));
    }
    // Neighbours swapped as well: disorder beyond the +4 s shifts, all within max_delay.
    for pair in v.chunks_mut(2) {
        pair.reverse();
    }
    v
}

fn wait_for(mut cond: impl FnMut() -> bool) {
    assert!(common::eventually(Duration::from_secs(10), &mut cond));
}

#[test]
fn views_and_series_hold_exact_values_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let expected = |user: u64| {
        let ids: Vec<u64> = (0..60).filter(|i| i % 3 == user).collect();
        json!({"key": format!("u{user}"), "n": ids.len(), "s": ids.iter().sum::<u64>()})
    };
    {
        let e = engine_on(dir.path());
        install(&e);
        for chunk in clicks().chunks(7) {
            e.publish_json("clicks", chunk).unwrap();
        }
        settle(&e, "views", "clicks", 100_000);
        assert_eq!(e.dataflow("views").unwrap().late_events, 0);
        for u in 0..3 {
            wait_for(|| get(&e, "totals", &format!("u{u}")) == Some(expected(u)));
        }
        // Series: one point per 10 s window per user, counts exact.
        let series = e.store().unwrap().series().unwrap();
        let points = series.range("per_user", b"u0", 0, u64::MAX, 100).unwrap();
        let starts: Vec<u64> = points.iter().map(|(t, _)| *t).collect();
        assert_eq!(starts, vec![0, 10_000, 20_000]);
        let total: u64 = points
            .iter()
            .map(|(_, v)| {
                serde_json::from_slice::<Json>(v).unwrap()["n"]
                    .as_u64()
                    .unwrap()
            })
            .sum();
        assert_eq!(total, 20);
        assert_eq!(
            series
                .range("per_user", b"u0", 10_000, 20_000, 100)
                .unwrap()
                .len(),
            1
        );
        // TTL: the latest click per user is there, then expires.
        assert!(get(&e, "last_click", "u1").is_some());
        wait_for(|| get(&e, "last_click", "u1").is_none());
        // Paging returns every key exactly once.
        let kv = e.store().unwrap().kv().unwrap();
        let mut seen = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = kv
                .scan("totals", b"u", after.as_deref(), 1, now_ms())
                .unwrap();
            seen.extend(
                page.items
                    .iter()
                    .map(|(k, _)| String::from_utf8(k.clone()).unwrap()),
            );
            match page.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        assert_eq!(seen, ["u0", "u1", "u2"]);
        // Wipe the view: the replay must rebuild it.
        kv.drop_view("totals").unwrap();
    }
    let e = engine_on(dir.path());
    for u in 0..3 {
        wait_for(|| get(&e, "totals", &format!("u{u}")) == Some(expected(u)));
    }
}

#[test]
fn kv_lookup_enriches_by_key_and_defaults_when_absent() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine_on(dir.path());
    install(&e);
    e.publish_json("clicks", &[click("a", 1, 5), click("a", 2, 7)])
        .unwrap();
    // Views are written as the watermark passes the results' time.
    settle(&e, "views", "clicks", 10_000);
    wait_for(|| get(&e, "totals", "a").is_some_and(|v| v["n"] == 2));
    e.install_text(
        r#"
name: enrich
topics:
  - {name: asks, key: user, time: ts, fields: [{name: user, type: string}, {name: ts, type: timestamp}]}
inputs: [{id: q, topic: asks}]
nodes:
  - id: look
    op: kv_lookup
    input: q
    view: totals
    fields: [{name: n, type: int}, {name: s, type: int, optional: true, default: -1}]
outputs: [{name: out, from: look}]
"#,
    )
    .unwrap();
    let sub = e.subscribe_local("enrich", "out").unwrap();
    e.publish_json(
        "asks",
        &[
            json!({"user": "a", "ts": 5}),
            json!({"user": "zz", "ts": 6}),
        ],
    )
    .unwrap();
    let mut rows = Vec::new();
    wait_for(|| {
        rows.extend(common::rows(&sub));
        rows.len() >= 2
    });
    rows.sort();
    assert_eq!(rows, ["[\"a\",5,2,12]", "[\"zz\",6,null,-1]"]);
}

#[test]
fn store_operators_are_checked_at_submit() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine_on(dir.path());
    let bad = [
        (
            "- {id: k, op: kv_put, input: c, view: \"bad name\"}",
            "view",
        ),
        ("- {id: k, op: kv_put, input: c, view: v, ttl: 0s}", "ttl"),
        (
            "- {id: k, op: series, input: c, name: s}",
            "not a windowed aggregate",
        ),
        (
            "- {id: k, op: kv_lookup, input: c, view: v, fields: []}",
            "fields",
        ),
        (
            "- {id: k, op: kv_lookup, input: c, view: v, fields: [{name: user, type: string}]}",
            "already a field",
        ),
        (
            "- {id: k, op: kv_lookup, input: c, view: v, fields: [{name: x, type: blob}]}",
            "unknown type",
        ),
        ("- {id: k, op: embed, input: c, text: amount}", "string"),
        ("- {id: k, op: embed, input: c, text: user, dim: 0}", "dim"),
    ];
    for (node, needle) in bad {
        let text = format!(
            "name: bad\n{CLICKS_TOPIC}inputs: [{{id: c, topic: clicks}}]\nnodes:\n  {node}\noutputs: [{{name: out, from: k}}]\n"
        );
        let err = e
            .install_text(&text)
            .map(|_| ())
            .expect_err(node)
            .to_string();
        assert!(err.contains(needle), "{node}: {err}");
    }
    // Without storage, a definition that needs it is refused with the reason.
    let plain = common::engine(1);
    let err = plain
        .install_text(&format!("name: views\n{CLICKS_TOPIC}{TOTALS}"))
        .map(|_| ())
        .expect_err("no storage")
        .to_string();
    assert!(err.contains("without storage"), "{err}");
}

#[test]
fn embed_adds_a_normalised_vector() {
    let e = common::engine(1);
    e.install_text(&format!(
        "name: emb\n{CLICKS_TOPIC}inputs: [{{id: c, topic: clicks}}]\nnodes:\n  - {{id: v, op: embed, input: c, text: user, dim: 16}}\noutputs: [{{name: out, from: v}}]\n"
    ))
    .unwrap();
    let sub = e.subscribe_local("emb", "out").unwrap();
    e.publish_json("clicks", &[click("refund please", 1, 1)])
        .unwrap();
    let mut got = Vec::new();
    wait_for(|| {
        got.extend(sub.drain());
        !got.is_empty()
    });
    let row = &got[0][0].0.row;
    let starling_engine::operators::Value::Vector(v) = &row[3] else {
        panic!("{row:?}")
    };
    assert_eq!(v.len(), 16);
    let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4, "{norm}");
}
