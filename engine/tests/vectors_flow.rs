//! Vector memory in dataflows: `embed` → `vector_upsert` writes a collection that
//! `vector_search` (and the store) query; the answers are the same after a restart.

mod common;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
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

const MEMORY: &str = r#"
name: memory
topics:
  - {name: notes, key: id, time: ts, fields: [{name: id, type: string}, {name: user, type: string}, {name: ts, type: timestamp}, {name: text, type: string}]}
inputs: [{id: n, topic: notes, watermark: {idle_timeout: 50ms}}]
nodes:
  - {id: e, op: embed, input: n, text: text, dim: 64}
  - {id: up, op: vector_upsert, input: e, collection: notes, vector: embedding}
outputs: [{name: out, from: up}]
"#;

const RECALL: &str = r#"
name: recall
topics:
  - {name: asks, key: user, time: ts, fields: [{name: user, type: string}, {name: ts, type: timestamp}, {name: q, type: string}]}
inputs: [{id: a, topic: asks}]
nodes:
  - {id: e, op: embed, input: a, text: q, dim: 64}
  - {id: s, op: vector_search, input: e, collection: notes, vector: embedding, k: 2}
  - {id: only_bob, op: vector_search, input: e, collection: notes, vector: embedding, k: 2, filter: {user: bob}}
outputs: [{name: out, from: s}, {name: bob, from: only_bob}]
"#;

fn notes() -> Vec<serde_json::Value> {
    vec![
        json!({"id": "n1", "user": "ann", "ts": 1, "text": "I want a refund for my broken order"}),
        json!({"id": "n2", "user": "bob", "ts": 2, "text": "password reset email never arrived"}),
        json!({"id": "n3", "user": "bob", "ts": 3, "text": "the shipping is delayed again"}),
        json!({"id": "n4", "user": "cy", "ts": 4, "text": "how do I change my password"}),
    ]
}

fn search(e: &Engine, text: &str) -> Vec<String> {
    let c = e.store().unwrap().vectors().unwrap().get("notes").unwrap();
    let q = starling_engine::operators::embed::HashingEmbedder::new(64).unwrap();
    use starling_engine::operators::embed::Embedder;
    c.search(&q.embed(text), 2, None)
        .unwrap()
        .into_iter()
        .map(|h| h.key)
        .collect()
}

#[test]
fn memory_is_written_searched_in_stream_and_kept_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let before;
    {
        let e = engine_on(dir.path());
        e.install_text(MEMORY).unwrap();
        e.install_text(RECALL).unwrap();
        e.publish_json("notes", &notes()).unwrap();
        let c = e.store().unwrap().vectors().unwrap().get("notes").unwrap();
        assert!(common::eventually(Duration::from_secs(10), || c.len() == 4));
        assert_eq!(search(&e, "refund my order")[0], "n1");
        assert_eq!(search(&e, "reset my password")[0], "n2");

        let all = e.subscribe_local("recall", "out").unwrap();
        let bob = e.subscribe_local("recall", "bob").unwrap();
        e.publish_json(
            "asks",
            &[json!({"user": "zed", "ts": 10, "q": "password reset"})],
        )
        .unwrap();
        let mut rows = Vec::new();
        assert!(common::eventually(Duration::from_secs(10), || {
            rows.extend(common::rows(&all));
            rows.len() >= 2
        }));
        // Fields: user, ts, q, embedding, match_key, match_distance, match_rank, match.
        let parsed: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| serde_json::from_str(r).unwrap())
            .collect();
        let keys: Vec<&str> = parsed.iter().map(|r| r[4].as_str().unwrap()).collect();
        assert!(keys.contains(&"n2") && keys.contains(&"n4"), "{keys:?}");
        let mut bob_rows = Vec::new();
        assert!(common::eventually(Duration::from_secs(10), || {
            bob_rows.extend(common::rows(&bob));
            bob_rows.len() >= 2
        }));
        for r in &bob_rows {
            let r: serde_json::Value = serde_json::from_str(r).unwrap();
            assert_eq!(r[7]["user"], "bob", "{r}");
        }
        // An update replaces the vector of its key.
        e.publish_json(
            "notes",
            &[json!({"id": "n3", "user": "bob", "ts": 20, "text": "refund the broken order please"})],
        )
        .unwrap();
        assert!(common::eventually(Duration::from_secs(10), || {
            c.get("n3").is_some_and(|(_, meta)| {
                String::from_utf8_lossy(&meta).contains("refund the broken order")
            })
        }));
        assert!(search(&e, "refund broken order").contains(&"n3".to_string()));
        assert_eq!(c.len(), 4);
        before = (search(&e, "refund broken order"), search(&e, "password"));
    }
    let e = engine_on(dir.path());
    let c = e.store().unwrap().vectors().unwrap().get("notes").unwrap();
    assert!(common::eventually(Duration::from_secs(10), || c.len() == 4));
    assert_eq!(
        (search(&e, "refund broken order"), search(&e, "password")),
        before
    );
}

#[test]
fn vector_operators_are_checked_at_submit() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine_on(dir.path());
    let head = "name: bad\ntopics:\n  - {name: t, key: k, time: ts, fields: [{name: k, type: string}, {name: ts, type: timestamp}, {name: v, type: \"vector<3>\"}]}\ninputs: [{id: i, topic: t}]\nnodes:\n";
    for (node, needle) in [
        (
            "  - {id: x, op: vector_upsert, input: i, collection: c, vector: k}",
            "vector<N>",
        ),
        (
            "  - {id: x, op: vector_upsert, input: i, collection: c, vector: v, metric: manhattan}",
            "metric",
        ),
        (
            "  - {id: x, op: vector_search, input: i, collection: c, vector: v, k: 0}",
            "k",
        ),
        (
            "  - {id: x, op: vector_search, input: i, collection: \"../c\", vector: v}",
            "collection",
        ),
    ] {
        let text = format!("{head}{node}\noutputs: [{{name: o, from: x}}]\n");
        let err = e
            .install_text(&text)
            .map(|_| ())
            .expect_err(node)
            .to_string();
        assert!(err.contains(needle), "{node}: {err}");
    }
    // A collection that exists with another dimension is a conflict, not a silent mix.
    let ok = format!("{head}  - {{id: x, op: vector_upsert, input: i, collection: c3, vector: v}}\noutputs: [{{name: o, from: x}}]\n");
    e.install_text(&ok).unwrap();
    e.drop_dataflow_local("bad").unwrap();
    e.store()
        .unwrap()
        .vectors()
        .unwrap()
        .drop_collection("c3")
        .unwrap();
    e.store()
        .unwrap()
        .vectors()
        .unwrap()
        .create(
            "c3",
            starling_engine::durable::CollectionSpec {
                dim: 5,
                metric: starling_engine::durable::Metric::L2,
            },
        )
        .unwrap();
    let err = e
        .install_text(&ok)
        .map(|_| ())
        .expect_err("conflict")
        .to_string();
    assert!(err.contains("c3"), "{err}");
}
