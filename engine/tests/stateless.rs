//! map/project, filter, key_by, union, publish and dead letters, end to end and exact.

mod common;

use common::*;
use serde_json::json;

fn def() -> String {
    format!(
        r#"
name: st
{CLICKS_TOPIC}
  - name: clicks_b
    key: user
    time: ts
    fields:
      - {{name: user, type: string}}
      - {{name: ts, type: timestamp}}
      - {{name: amount, type: int, optional: true, default: 1}}
inputs:
  - {{id: c, topic: clicks, watermark: {{idle_timeout: 0s}}}}
  - {{id: d, topic: clicks_b, watermark: {{idle_timeout: 0s}}}}
nodes:
  - id: m
    op: map
    input: c
    fields:
      - {{u: user}}
      - {{double: amount * 2}}
      - {{inv: 100 / amount}}
  - id: p
    op: project
    input: c
    fields:
      - {{who: "upper(user)"}}
  - {{id: f, op: filter, input: m, where: "double > 4"}}
  - {{id: k, op: key_by, input: f, key: "inv"}}
  - {{id: pub, op: publish, input: k, topic: big}}
  - {{id: un, op: union, inputs: [c, d]}}
outputs:
  - {{name: mapped, from: m}}
  - {{name: projected, from: p}}
  - {{name: filtered, from: f}}
  - {{name: keyed, from: k}}
  - {{name: unioned, from: un}}
"#
    )
}

#[test]
fn stateless_operators_are_exact() {
    for workers in [1, 3] {
        let e = engine(workers);
        e.install_text(&def()).unwrap();
        let mapped = e.subscribe_local("st", "mapped").unwrap();
        let projected = e.subscribe_local("st", "projected").unwrap();
        let filtered = e.subscribe_local("st", "filtered").unwrap();
        let keyed_out = e.subscribe_local("st", "keyed").unwrap();
        let unioned = e.subscribe_local("st", "unioned").unwrap();
        let big = e.subscribe_topic("big").unwrap();
        let dead = e.subscribe_topic("st.dead").unwrap();
        e.publish_json(
            "clicks",
            &[
                click("a", 1_000, 1),
                click("b", 2_000, 5),
                click("c", 3_000, 0), // 100 / 0: dead letter
                click("a", 4_000, 4),
            ],
        )
        .unwrap();
        e.publish_json("clicks_b", &[click("z", 500, 9)]).unwrap();
        settle_all(&e, "st", &["clicks", "clicks_b"], 10_000);

        let w = format!("workers={workers}");
        assert_eq!(
            rows(&mapped),
            strs(&[r#"["a",2,100]"#, r#"["a",8,25]"#, r#"["b",10,20]"#]),
            "{w}"
        );
        let proj = consolidate(&drain(&projected));
        let want: std::collections::BTreeMap<String, isize> = [
            (r#"["A"]"#.to_string(), 2),
            (r#"["B"]"#.to_string(), 1),
            (r#"["C"]"#.to_string(), 1),
        ]
        .into_iter()
        .collect();
        assert_eq!(proj, want, "{w}");
        assert_eq!(
            rows(&filtered),
            strs(&[r#"["a",8,25]"#, r#"["b",10,20]"#]),
            "{w}"
        );
        // key_by changes the key, not the row.
        assert_eq!(
            keyed(&keyed_out),
            vec![
                ("20".to_string(), r#"["b",10,20]"#.to_string(), 1),
                ("25".to_string(), r#"["a",8,25]"#.to_string(), 1),
            ],
            "{w}"
        );
        assert_eq!(
            rows(&unioned),
            strs(&[
                r#"["a",1000,1]"#,
                r#"["a",4000,4]"#,
                r#"["b",2000,5]"#,
                r#"["c",3000,0]"#,
                r#"["z",500,9]"#,
            ]),
            "{w}"
        );
        // publish: the keyed rows, in the topic.
        assert_eq!(
            topic_rows(&big),
            strs(&[r#"["a",8,25]"#, r#"["b",10,20]"#]),
            "{w}"
        );
        // Dead letter: the failing event, with node, reason, time, key and event.
        let dl = topic_events(&dead);
        assert_eq!(dl.len(), 1, "{w}: {dl:?}");
        let r = row_text(&dl[0].row);
        let j: serde_json::Value = serde_json::from_str(&r).unwrap();
        assert_eq!(j[0], json!("m"), "{w}: {r}");
        assert!(
            j[1].as_str().unwrap().to_lowercase().contains("zero"),
            "{w}: {r}"
        );
        assert_eq!(j[2], json!(3000), "{w}: {r}");
        assert_eq!(j[3], json!("c"), "{w}: {r}");
        assert_eq!(j[4], json!(["c", 3000, 0]), "{w}: {r}");
        assert_eq!(
            e.stats("st")
                .unwrap()
                .dead_letters
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        assert_eq!(e.dataflow("st").unwrap().dead_letters, 1);

        // The dataflow goes on after a dead letter.
        e.publish_json("clicks", &[click("d", 11_000, 10)]).unwrap();
        settle_all(&e, "st", &["clicks", "clicks_b"], 20_000);
        assert_eq!(rows(&mapped), strs(&[r#"["d",20,10]"#]), "{w}");
        assert_eq!(topic_rows(&big), strs(&[r#"["d",20,10]"#]), "{w}");
    }
}
