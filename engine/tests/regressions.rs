//! Bugs found while documenting and testing definitions, each with the behaviour it fixed.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

/// A trigger whose condition fails at run time sends the result to the dead-letter topic
/// under the trigger's node id, like every other node (it used to write the literal
/// `"trigger"`, so two triggers could not be told apart).
#[test]
fn trigger_dead_letters_name_the_node() {
    for workers in [1, 2] {
        let e = engine(workers);
        e.install_text(&format!(
            r#"
name: trig
{CLICKS_TOPIC}
inputs:
  - {{id: c, topic: clicks, watermark: {{idle_timeout: 0s}}}}
nodes:
  - {{id: w, op: window, input: c, kind: tumbling, size: 10s}}
  - {{id: a, op: aggregate, input: w, aggregates: [{{name: n, fn: count}}]}}
  - {{id: hot, op: trigger, input: a, when: "10 / (n - 1) > 1", topic: alerts}}
"#
        ))
        .expect("valid");
        let dead = e.subscribe_topic("trig.dead").expect("dead-letter topic");
        e.publish_json("clicks", &[click("a", 1_000, 1)])
            .expect("publish");
        settle(&e, "trig", "clicks", 20_000);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut rows = Vec::new();
        while rows.is_empty() && std::time::Instant::now() < deadline {
            rows.extend(
                dead.drain()
                    .iter()
                    .flat_map(|b| b.iter().map(|ev| row_text(&ev.row)).collect::<Vec<_>>()),
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(rows.len(), 1, "workers={workers}: {rows:?}");
        let row: serde_json::Value = serde_json::from_str(&rows[0]).expect("json");
        assert_eq!(row[0], json!("hot"), "workers={workers}: {row}");
        assert!(
            row[1]
                .as_str()
                .is_some_and(|r| r.contains("division by zero")),
            "{row}"
        );
        assert_eq!(e.dataflow("trig").expect("installed").dead_letters, 1);
    }
}
