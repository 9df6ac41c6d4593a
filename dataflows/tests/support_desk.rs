//! The support-desk agent end to end, with exact results.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;
use starling_dataflows::{ALL, SUPPORT_DESK};
use starling_engine::operators::json::value_to_json;
use starling_engine::{Engine, EngineConfig};

fn engine(workers: usize) -> Engine {
    Engine::start(EngineConfig {
        workers,
        ..EngineConfig::default()
    })
    .unwrap()
}

#[test]
fn every_shipped_definition_installs() {
    for (file, text) in ALL {
        let e = engine(1);
        e.install_text(text)
            .unwrap_or_else(|err| panic!("{file}: {err}"));
    }
    for q in starling_dataflows::nexmark::QUERIES {
        let e = engine(1);
        let info = e
            .install_text(q.definition)
            .unwrap_or_else(|err| panic!("nexmark {}: {err}", q.name));
        assert_eq!(info.name, q.dataflow());
        for topic in q.topics {
            e.topic(topic)
                .unwrap_or_else(|err| panic!("nexmark {}: {err}", q.name));
        }
        e.output_schema(&q.dataflow(), "out")
            .unwrap_or_else(|err| panic!("nexmark {}: {err}", q.name));
    }
}

fn msg(user: &str, ts: u64, channel: &str, text: &str) -> serde_json::Value {
    json!({"user": user, "ts": ts, "channel": channel, "text": text})
}

#[test]
fn escalates_once_per_user_and_minute() {
    for workers in [1, 2] {
        let e = engine(workers);
        e.install_text(SUPPORT_DESK).unwrap();
        let activity = e.subscribe_local("support_desk", "activity").unwrap();
        let escalations = e.subscribe_topic("escalations").unwrap();
        // ann: 3 negative messages in minute 0 (out of order); bob: 8 messages in minute 0,
        // 1 in minute 1; cid: 2 calm messages.
        let mut batch = vec![
            msg("ann", 30_000, "chat", "I want a REFUND"),
            msg("ann", 10_000, "mail", "this makes me angry"),
            msg("cid", 5_000, "chat", "hello"),
            msg("ann", 20_000, "chat", "cancel my plan"),
            msg("cid", 6_000, "chat", "thanks"),
        ];
        for i in 0..8 {
            batch.push(msg("bob", 1_000 + i * 1_000, "chat", "ping"));
        }
        batch.push(msg("bob", 61_000, "chat", "ping"));
        e.publish_json("messages", &batch).unwrap();
        e.advance_watermark_local("messages", 120_000).unwrap();
        assert!(e
            .wait_until("support_desk", 119_999, Duration::from_secs(20))
            .unwrap());

        let mut got = BTreeMap::new();
        for b in activity.drain() {
            for (ev, _, d) in b.iter() {
                let row: Vec<_> = ev.row.iter().map(value_to_json).collect();
                *got.entry(serde_json::Value::Array(row).to_string())
                    .or_insert(0) += d;
            }
        }
        got.retain(|_, d| *d != 0);
        let want: BTreeMap<String, isize> = [
            r#"["ann",0,60000,3,3,2]"#,
            r#"["bob",0,60000,8,0,1]"#,
            r#"["bob",60000,120000,1,0,1]"#,
            r#"["cid",0,60000,2,0,1]"#,
        ]
        .iter()
        .map(|s| (s.to_string(), 1))
        .collect();
        assert_eq!(got, want, "workers={workers}");

        let mut fired: Vec<String> = escalations
            .drain()
            .iter()
            .flat_map(|b| b.iter().map(|ev| ev.key.to_string()).collect::<Vec<_>>())
            .collect();
        fired.sort();
        assert_eq!(fired, vec!["\"ann\"", "\"bob\""], "workers={workers}");
    }
}
