//! distinct (with ttl expiry) and trigger (fires once per crossing), exact.

mod common;

use common::*;

#[test]
fn distinct_forgets_after_ttl_and_reemits() {
    let def = format!(
        r#"
name: dd
{CLICKS_TOPIC}
inputs:
  - {{id: c, topic: clicks, watermark: {{max_delay: 0s, idle_timeout: 0s}}}}
nodes:
  - id: p
    op: map
    input: c
    fields:
      - {{u: user}}
      - {{a: amount}}
  - {{id: d, op: distinct, input: p, ttl: 5s}}
outputs:
  - {{name: out, from: d}}
"#
    );
    for workers in [1, 3] {
        let e = engine(workers);
        e.install_text(&def).unwrap();
        let sub = e.subscribe_local("dd", "out").unwrap();
        // All enter at 0; each copy expires at its event time + 5 s.
        e.publish_json(
            "clicks",
            &[
                click("a", 1_000, 1),
                click("a", 2_000, 1),
                click("b", 2_000, 1),
                click("a", 3_000, 2),
            ],
        )
        .unwrap();
        settle(&e, "dd", "clicks", 20_000);
        e.publish_json("clicks", &[click("a", 21_000, 1)]).unwrap();
        settle(&e, "dd", "clicks", 40_000);
        assert_eq!(
            timed(&sub),
            ups(&[
                (0, r#"["a",1]"#, 1),
                (0, r#"["b",1]"#, 1),
                (0, r#"["a",2]"#, 1),
                (7_000, r#"["a",1]"#, -1),
                (7_000, r#"["b",1]"#, -1),
                (8_000, r#"["a",2]"#, -1),
                (20_000, r#"["a",1]"#, 1),
                (26_000, r#"["a",1]"#, -1),
            ]),
            "workers={workers}"
        );
    }
}

#[test]
fn trigger_fires_once_per_crossing() {
    let def = format!(
        r#"
name: tg
{CLICKS_TOPIC}
inputs:
  - {{id: c, topic: clicks, watermark: {{max_delay: 0s, idle_timeout: 0s}}}}
nodes:
  - id: agg
    op: aggregate
    input: c
    aggregates:
      - {{name: n, fn: count}}
  - {{id: t, op: trigger, input: agg, when: "n >= 2", topic: alerts}}
outputs:
  - {{name: fired, from: t}}
  - {{name: agg, from: agg}}
"#
    );
    for workers in [1, 3] {
        let e = engine(workers);
        e.install_text(&def).unwrap();
        let alerts = e.subscribe_topic("alerts").unwrap();
        let fired = e.subscribe_local("tg", "fired").unwrap();
        let agg = e.subscribe_local("tg", "agg").unwrap();
        e.publish_json("clicks", &[click("a", 1_000, 1), click("a", 1_000, 1)])
            .unwrap();
        e.publish_json("clicks", &[click("a", 2_000, 1)]).unwrap(); // 2 -> 3: no re-fire
        e.publish_json("clicks", &[click("b", 3_000, 1)]).unwrap(); // 1: no
        e.publish_json("clicks", &[click("b", 4_000, 1)]).unwrap(); // 2: fires
        e.publish_json("clicks", &[click("b", 5_000, 1)]).unwrap(); // 3: no
        settle(&e, "tg", "clicks", 10_000);
        let w = format!("workers={workers}");
        assert_eq!(
            topic_rows(&alerts),
            strs(&[r#"["a",2]"#, r#"["b",2]"#]),
            "{w}"
        );
        assert_eq!(rows(&fired), strs(&[r#"["a",2]"#, r#"["b",2]"#]), "{w}");
        assert_eq!(rows(&agg), strs(&[r#"["a",3]"#, r#"["b",3]"#]), "{w}");
    }
}

#[test]
fn windowed_trigger_correction_does_not_refire() {
    let def = format!(
        r#"
name: tw
{CLICKS_TOPIC}
inputs:
  - {{id: c, topic: clicks, watermark: {{max_delay: 0s, idle_timeout: 0s, allowed_lateness: 5s}}}}
nodes:
  - {{id: w, op: window, input: c, kind: tumbling, size: 10s}}
  - id: agg
    op: aggregate
    input: w
    aggregates:
      - {{name: n, fn: count}}
  - {{id: t, op: trigger, input: agg, when: "n >= 2", topic: alerts}}
"#
    );
    for workers in [1, 3] {
        let e = engine(workers);
        e.install_text(&def).unwrap();
        let alerts = e.subscribe_topic("alerts").unwrap();
        e.publish_json("clicks", &[click("a", 1_000, 1), click("a", 2_000, 1)])
            .unwrap();
        e.publish_json("clicks", &[click("b", 1_000, 1)]).unwrap();
        e.publish_json("clicks", &[click("b", 12_000, 1)]).unwrap(); // closes [0, 10 s)
                                                                     // Corrections: a 2 -> 3 (no re-fire), b 1 -> 2 (crosses: fires).
        e.publish_json("clicks", &[click("a", 8_000, 1), click("b", 9_000, 1)])
            .unwrap();
        settle(&e, "tw", "clicks", 40_000);
        assert_eq!(
            topic_rows(&alerts),
            strs(&[r#"["a",0,10000,2]"#, r#"["b",0,10000,2]"#]),
            "workers={workers}"
        );
    }
}

/// A late event that extends a session backwards changes its start; the trigger must see the
/// merged result as a correction of the session that already fired, not as a new session.
#[test]
fn trigger_does_not_refire_when_a_fired_session_grows_backwards() {
    for workers in [1, 3] {
        let e = engine(workers);
        e.install_text(&format!(
            r#"
name: st
{CLICKS_TOPIC}
inputs:
  - {{id: c, topic: clicks, watermark: {{max_delay: 0s, idle_timeout: 0s, allowed_lateness: 30s}}}}
nodes:
  - {{id: w, op: window, input: c, kind: session, gap: 5s}}
  - {{id: agg, op: aggregate, input: w, aggregates: [{{name: n, fn: count}}]}}
  - {{id: alert, op: trigger, input: agg, when: "n >= 2", topic: alerts}}
outputs:
  - {{name: out, from: agg}}
"#
        ))
        .unwrap();
        let alerts = e.subscribe_topic("alerts").unwrap();
        e.publish_json("clicks", &[click("a", 5_000, 1), click("a", 6_000, 1)])
            .unwrap();
        settle(&e, "st", "clicks", 12_000);
        // Late but allowed: bridges into the emitted session and moves its start to 1 000.
        e.publish_json("clicks", &[click("a", 1_000, 1)]).unwrap();
        settle(&e, "st", "clicks", 100_000);
        let fired: usize = alerts.drain().iter().map(|b| b.len()).sum();
        assert_eq!(
            fired, 1,
            "workers={workers}: the threshold was crossed once"
        );
    }
}
