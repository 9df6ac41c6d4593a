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

/// Deeply nested YAML flow collections used to take time quadratic in the depth before the
/// parser refused them (100 000 brackets, 200 KB: about 50 s). They are now refused by a
/// linear scan, and brackets inside quoted strings and comments do not count.
#[test]
fn deep_yaml_nesting_is_refused_quickly() {
    use starling_engine::operators::definition::Definition;
    let depth = 200_000;
    let text = format!(
        "name: x\ndescription: {}{}\n",
        "[".repeat(depth),
        "]".repeat(depth)
    );
    let t = std::time::Instant::now();
    assert!(Definition::parse(&text).is_err());
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );
    // Not counted: brackets in quoted strings, escaped quotes, comments.
    let many = "[".repeat(500);
    let ok = format!(
        "name: x\ndescription: \"a \\\" {many}\"\n# {many}\ninputs: [{{id: c, topic: '{many}'}}]\n"
    );
    let def = Definition::parse(&ok).expect("quoted brackets are text");
    assert_eq!(def.inputs[0].topic, many);
}
