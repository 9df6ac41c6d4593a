//! Interval and table joins, end to end and exact.

mod common;

use common::*;
use serde_json::{json, Value as Json};
use std::collections::BTreeMap;

fn lv(k: &str, ts: u64, v: i64) -> Json {
    json!({"k": k, "ts": ts, "lv": v})
}
fn rv(k: &str, ts: u64, v: i64) -> Json {
    json!({"k": k, "ts": ts, "rv": v})
}

const TWO_TOPICS: &str = r#"
topics:
  - name: left
    key: k
    time: ts
    fields:
      - {name: k, type: string}
      - {name: ts, type: timestamp}
      - {name: lv, type: int}
  - name: right
    key: k
    time: ts
    fields:
      - {name: k, type: string}
      - {name: ts, type: timestamp}
      - {name: rv, type: int}
"#;

#[test]
fn interval_join_is_exact() {
    let def = format!(
        r#"
name: ij
{TWO_TOPICS}
inputs:
  - {{id: l, topic: left, watermark: {{max_delay: 0s, idle_timeout: 0s}}}}
  - {{id: r, topic: right, watermark: {{max_delay: 0s, idle_timeout: 0s}}}}
nodes:
  - {{id: j, op: join, kind: interval, left: l, right: r, within: 2s}}
  - id: named
    op: map
    input: j
    fields:
      - {{key: k}}
      - {{lt: ts}}
      - {{rt: r_ts}}
      - {{rk: r_k}}
      - {{sum: lv + rv}}
outputs:
  - {{name: out, from: j}}
  - {{name: named, from: named}}
"#
    );
    for workers in [1, 3] {
        let e = engine(workers);
        e.install_text(&def).unwrap();
        let out = e.subscribe_local("ij", "out").unwrap();
        let named = e.subscribe_local("ij", "named").unwrap();
        e.publish_json(
            "left",
            &[
                lv("a", 1_000, 1),
                lv("a", 5_000, 2),
                lv("b", 1_000, 3),
                lv("a", 20_000, 4),
                lv("a", 30_000, 5),
            ],
        )
        .unwrap();
        e.publish_json(
            "right",
            &[
                rv("a", 2_500, 10),
                rv("a", 9_000, 20),
                rv("b", 4_000, 30),
                rv("c", 1_000, 40),
                rv("a", 6_000, 50),
                rv("a", 22_000, 60), // exactly `within` apart: joins
                rv("a", 32_001, 70), // 1 ms too far
            ],
        )
        .unwrap();
        settle_all(&e, "ij", &["left", "right"], 100_000);
        let w = format!("workers={workers}");
        let all = timed(&out);
        // Insert-only: expiring state retracts nothing downstream.
        assert!(all.iter().all(|(_, _, d)| *d == 1), "{w}: {all:?}");
        let mut got: Vec<String> = all.into_iter().map(|(_, r, _)| r).collect();
        got.sort();
        assert_eq!(
            got,
            strs(&[
                r#"["a",1000,1,"a",2500,10]"#,
                r#"["a",20000,4,"a",22000,60]"#,
                r#"["a",5000,2,"a",6000,50]"#,
            ]),
            "{w}"
        );
        assert_eq!(
            rows(&named),
            strs(&[
                r#"["a",1000,2500,"a",11]"#,
                r#"["a",20000,22000,"a",64]"#,
                r#"["a",5000,6000,"a",52]"#,
            ]),
            "{w}"
        );
        // Later batches, from both sides, still meet within the bound.
        e.publish_json("left", &[lv("d", 200_000, 6)]).unwrap();
        e.publish_json("right", &[rv("d", 201_000, 7)]).unwrap();
        settle_all(&e, "ij", &["left", "right"], 300_000);
        assert_eq!(
            timed(&out)
                .into_iter()
                .map(|(_, r, d)| (r, d))
                .collect::<Vec<_>>(),
            vec![(r#"["d",200000,6,"d",201000,7]"#.to_string(), 1)],
            "{w}"
        );
    }
}

#[test]
fn interval_join_output_time_is_the_later_event() {
    let def = format!(
        r#"
name: ijt
{TWO_TOPICS}
inputs:
  - {{id: l, topic: left, watermark: {{max_delay: 0s, idle_timeout: 0s}}}}
  - {{id: r, topic: right, watermark: {{max_delay: 0s, idle_timeout: 0s}}}}
nodes:
  - {{id: j, op: join, kind: interval, left: l, right: r, within: 5s}}
outputs:
  - {{name: out, from: j}}
"#
    );
    let e = engine(2);
    e.install_text(&def).unwrap();
    let out = e.subscribe_local("ijt", "out").unwrap();
    e.publish_json("left", &[lv("a", 3_000, 1)]).unwrap();
    e.publish_json("right", &[rv("a", 1_000, 2)]).unwrap();
    settle_all(&e, "ijt", &["left", "right"], 50_000);
    let got: Vec<_> = out
        .drain()
        .iter()
        .flat_map(|b| b.iter().map(|(ev, _, d)| (ev.time, *d)).collect::<Vec<_>>())
        .collect();
    assert_eq!(got, vec![(3_000, 1)]);
}

#[test]
fn table_join_meets_latest_right_row() {
    let def = r#"
name: tj
topics:
  - name: orders
    key: k
    time: ts
    fields:
      - {name: k, type: string}
      - {name: ts, type: timestamp}
      - {name: amt, type: int}
  - name: users
    key: k
    time: ts
    fields:
      - {name: k, type: string}
      - {name: ts, type: timestamp}
      - {name: name, type: string}
inputs:
  - {id: o, topic: orders, watermark: {max_delay: 0s, idle_timeout: 0s}}
  - {id: u, topic: users, watermark: {max_delay: 0s, idle_timeout: 0s}}
nodes:
  - {id: j, op: join, kind: table, left: o, right: u}
outputs:
  - {name: out, from: j}
"#;
    for workers in [1, 3] {
        let e = engine(workers);
        e.install_text(def).unwrap();
        let out = e.subscribe_local("tj", "out").unwrap();
        let u = |k: &str, ts: u64, n: &str| json!({"k": k, "ts": ts, "name": n});
        let o = |k: &str, ts: u64, a: i64| json!({"k": k, "ts": ts, "amt": a});
        e.publish_json("users", &[u("a", 1_000, "alice"), u("b", 1_000, "bob")])
            .unwrap();
        // a: newer event time wins; an older one arriving later is ignored.
        e.publish_json("users", &[u("a", 2_000, "alice2"), u("a", 1_500, "stale")])
            .unwrap();
        // Orders enter at 3 000, when the table is a=alice2, b=bob.
        settle_all(&e, "tj", &["orders", "users"], 3_000);
        e.publish_json(
            "orders",
            &[o("a", 5_000, 10), o("b", 5_000, 20), o("c", 5_000, 30)],
        )
        .unwrap();
        settle_all(&e, "tj", &["orders", "users"], 6_000);
        let w = format!("workers={workers}");
        assert_eq!(
            rows(&out),
            strs(&[
                r#"["a",5000,10,"a",2000,"alice2"]"#,
                r#"["b",5000,20,"b",1000,"bob"]"#,
            ]),
            "{w}"
        );
        // A newer right row applies to later left events only; earlier results stay.
        e.publish_json("users", &[u("b", 7_000, "bobby")]).unwrap();
        settle_all(&e, "tj", &["orders", "users"], 8_000);
        e.publish_json("orders", &[o("b", 9_000, 40)]).unwrap();
        settle_all(&e, "tj", &["orders", "users"], 10_000);
        assert_eq!(
            timed(&out)
                .into_iter()
                .map(|(_, r, d)| (r, d))
                .collect::<Vec<_>>(),
            vec![(r#"["b",9000,40,"b",7000,"bobby"]"#.to_string(), 1)],
            "{w}"
        );
    }
}

/// A window fed by a differential operator (the join's output carries records at several
/// times per message) must count each joined pair once, in the window of its event time.
#[test]
fn window_over_an_interval_join_counts_each_pair_once() {
    let def = format!(
        r#"
name: jw
{TWO_TOPICS}
inputs:
  - {{id: l, topic: left, watermark: {{max_delay: 0s, idle_timeout: 0s}}}}
  - {{id: r, topic: right, watermark: {{max_delay: 0s, idle_timeout: 0s}}}}
nodes:
  - {{id: j, op: join, kind: interval, left: l, right: r, within: 1s}}
  - {{id: w, op: window, input: j, kind: tumbling, size: 10s}}
  - id: agg
    op: aggregate
    input: w
    aggregates:
      - {{name: pairs, fn: count}}
      - {{name: total, fn: sum, expr: lv + rv}}
outputs:
  - {{name: out, from: agg}}
"#
    );
    for workers in [1, 3] {
        let e = engine(workers);
        e.install_text(&def).unwrap();
        let out = e.subscribe_local("jw", "out").unwrap();
        // Several batches, so the join emits at several timestamps.
        for i in 0..6u64 {
            let t = 1_000 + i * 4_000;
            e.publish_json("left", &[lv("a", t, 1), lv("b", t, 2)])
                .unwrap();
            e.publish_json("right", &[rv("a", t + 500, 10), rv("b", t + 2_000, 20)])
                .unwrap();
        }
        settle_all(&e, "jw", &["left", "right"], 100_000);
        let got = consolidate(&drain(&out));
        // Pairs a: times 1000..21000 step 4000, joined at max(lt, rt) = t + 500:
        // windows [0,10s): t=1000,5000,9000→ 9500 is in [0,10s) → 3 pairs; [10s,20s): 13000,17000 → 2;
        // [20s,30s): 21000 → 1. b never joins (2 s apart > within).
        let want: BTreeMap<String, isize> = [
            (r#"["a",0,10000,3,33]"#.to_string(), 1),
            (r#"["a",10000,20000,2,22]"#.to_string(), 1),
            (r#"["a",20000,30000,1,11]"#.to_string(), 1),
        ]
        .into_iter()
        .collect();
        assert_eq!(got, want, "workers={workers}");
        assert_eq!(e.dataflow("jw").unwrap().window_state, 0);
    }
}
