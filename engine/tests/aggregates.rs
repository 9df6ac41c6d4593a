//! Every aggregate function, windowed and not, on hand-written input, exact.

mod common;

use common::*;
use serde_json::{json, Value as Json};

const AGGS: &str = r#"
      - {name: n, fn: count}
      - {name: sv, fn: sum, expr: v}
      - {name: sx, fn: sum, expr: x}
      - {name: mn, fn: min, expr: v}
      - {name: mx, fn: max, expr: v}
      - {name: av, fn: avg, expr: v}
      - {name: cd, fn: count_distinct, expr: s}
      - {name: top, fn: top_k, expr: s, k: 2}
"#;

fn m(k: &str, ts: u64, v: Option<i64>, x: Option<f64>, s: Option<&str>) -> Json {
    json!({"k": k, "ts": ts, "v": v, "x": x, "s": s})
}

fn events() -> Vec<Json> {
    vec![
        m("a", 1_000, Some(2), Some(1.5), Some("p")),
        m("a", 2_000, Some(1), Some(2.5), Some("q")),
        m("a", 3_000, None, None, Some("p")),
        m("a", 4_000, Some(3), None, None),
        // b: no non-null numbers; top_k ties broken by value ascending.
        m("b", 1_000, None, None, Some("z")),
        m("b", 2_000, None, None, Some("y")),
        m("b", 3_000, None, None, Some("x")),
    ]
}

#[test]
fn windowed_aggregates_are_exact() {
    let def = format!(
        r#"
name: wa
{METRICS_TOPIC}
inputs:
  - {{id: i, topic: m, watermark: {{max_delay: 0s, idle_timeout: 0s}}}}
nodes:
  - {{id: w, op: window, input: i, kind: tumbling, size: 10s}}
  - id: agg
    op: aggregate
    input: w
    aggregates:{AGGS}
outputs:
  - {{name: out, from: agg}}
"#
    );
    for workers in [1, 3] {
        let e = engine(workers);
        e.install_text(&def).unwrap();
        let sub = e.subscribe_local("wa", "out").unwrap();
        e.publish_json("m", &events()).unwrap();
        e.publish_json("m", &[m("a", 12_000, Some(-5), Some(0.25), Some("r"))])
            .unwrap();
        settle(&e, "wa", "m", 30_000);
        assert_eq!(
            rows(&sub),
            strs(&[
                r#"["a",0,10000,4,6,4.0,1,3,2.0,2,["p","q"]]"#,
                r#"["a",10000,20000,1,-5,0.25,-5,-5,-5.0,1,["r"]]"#,
                r#"["b",0,10000,3,null,null,null,null,null,3,["x","y"]]"#,
            ]),
            "workers={workers}"
        );
    }
}

#[test]
fn unwindowed_aggregates_are_exact_with_retractions() {
    let def = format!(
        r#"
name: ua
{METRICS_TOPIC}
inputs:
  - {{id: i, topic: m, watermark: {{max_delay: 0s, idle_timeout: 0s}}}}
nodes:
  - id: agg
    op: aggregate
    input: i
    aggregates:{AGGS}
outputs:
  - {{name: out, from: agg}}
"#
    );
    for workers in [1, 3] {
        let e = engine(workers);
        e.install_text(&def).unwrap();
        let sub = e.subscribe_local("ua", "out").unwrap();
        // All enter at watermark 0.
        e.publish_json("m", &events()).unwrap();
        settle(&e, "ua", "m", 5_000);
        assert_eq!(
            timed(&sub),
            ups(&[
                (0, r#"["a",4,6,4.0,1,3,2.0,2,["p","q"]]"#, 1),
                (0, r#"["b",3,null,null,null,null,null,3,["x","y"]]"#, 1),
            ]),
            "workers={workers}"
        );
        // One more for a enters at 5 000: -old +new.
        e.publish_json("m", &[m("a", 6_000, Some(10), Some(1.0), Some("q"))])
            .unwrap();
        e.publish_json("m", &[m("a", 7_000, Some(0), None, Some("q"))])
            .unwrap();
        settle(&e, "ua", "m", 8_000);
        assert_eq!(
            timed(&sub),
            ups(&[
                (5_000, r#"["a",4,6,4.0,1,3,2.0,2,["p","q"]]"#, -1),
                (5_000, r#"["a",5,16,5.0,1,10,4.0,2,["p","q"]]"#, 1),
                (6_000, r#"["a",5,16,5.0,1,10,4.0,2,["p","q"]]"#, -1),
                (6_000, r#"["a",6,16,5.0,0,10,3.2,2,["q","p"]]"#, 1),
            ]),
            "workers={workers}"
        );
    }
}

#[test]
fn aggregate_over_distinct_retracts_min_max() {
    // A retracting input (distinct with a ttl): min/max must forget expired values.
    let def = format!(
        r#"
name: ad
{METRICS_TOPIC}
inputs:
  - {{id: i, topic: m, watermark: {{max_delay: 0s, idle_timeout: 0s}}}}
nodes:
  - id: p
    op: map
    input: i
    fields:
      - {{k: k}}
      - {{v: v}}
  - {{id: d, op: distinct, input: p, ttl: 5s}}
  - id: agg
    op: aggregate
    input: d
    aggregates:
      - {{name: n, fn: count}}
      - {{name: mn, fn: min, expr: v}}
      - {{name: mx, fn: max, expr: v}}
      - {{name: sv, fn: sum, expr: v}}
outputs:
  - {{name: out, from: agg}}
"#
    );
    for workers in [1, 3] {
        let e = engine(workers);
        e.install_text(&def).unwrap();
        let sub = e.subscribe_local("ad", "out").unwrap();
        e.publish_json(
            "m",
            &[
                m("a", 1_000, Some(1), None, None),
                m("a", 1_000, Some(1), None, None),
                m("a", 2_000, Some(9), None, None),
            ],
        )
        .unwrap();
        e.publish_json("m", &[m("a", 5_000, Some(4), None, None)])
            .unwrap();
        // v=1 expires at 6 000, v=9 at 7 000, v=4 at 10 000.
        settle(&e, "ad", "m", 8_000);
        assert_eq!(rows(&sub), strs(&[r#"["a",1,4,4,4]"#]), "workers={workers}");
        settle(&e, "ad", "m", 20_000);
        // Everything expired: the last result is retracted, nothing replaces it.
        let rest = consolidate(&drain(&sub));
        assert_eq!(
            rest.into_iter().collect::<Vec<_>>(),
            vec![(r#"["a",1,4,4,4]"#.to_string(), -1)],
            "workers={workers}"
        );
    }
}
