//! Windowed aggregates end to end: tumbling, sliding, session (with merges), emission modes,
//! lateness and state retirement, each with exact rows and with 1 and 3 workers.

mod common;

use common::*;

fn windowed(name: &str, window: &str, wm: &str, emit: &str) -> String {
    format!(
        r#"
name: {name}
{CLICKS_TOPIC}
inputs:
  - id: c
    topic: clicks
    watermark: {wm}
nodes:
  - {{id: w, op: window, input: c, {window}}}
  - id: agg
    op: aggregate
    input: w
    emit: {emit}
    aggregates:
      - {{name: n, fn: count}}
      - {{name: total, fn: sum, expr: amount}}
outputs:
  - {{name: out, from: agg}}
"#
    )
}

const STRICT: &str = "{max_delay: 0s, idle_timeout: 0s, allowed_lateness: 0s}";

#[test]
fn sliding_windows_are_exact() {
    for workers in [1, 3] {
        let e = engine(workers);
        e.install_text(&windowed(
            "sl",
            "kind: sliding, size: 10s, slide: 5s",
            STRICT,
            "final",
        ))
        .unwrap();
        let sub = e.subscribe_local("sl", "out").unwrap();
        e.publish_json(
            "clicks",
            &[
                click("a", 1_000, 1),
                click("b", 3_000, 4),
                click("a", 7_000, 2),
                click("a", 12_000, 3),
            ],
        )
        .unwrap();
        settle(&e, "sl", "clicks", 40_000);
        assert_eq!(
            timed(&sub),
            ups(&[
                (10_000, r#"["a",0,10000,2,3]"#, 1),
                (10_000, r#"["b",0,10000,1,4]"#, 1),
                (15_000, r#"["a",5000,15000,2,5]"#, 1),
                (20_000, r#"["a",10000,20000,1,3]"#, 1),
            ]),
            "workers={workers}"
        );
        assert_eq!(e.dataflow("sl").unwrap().window_state, 0);
    }
}

#[test]
fn tumbling_final_emits_once_at_window_end() {
    for workers in [1, 3] {
        let e = engine(workers);
        e.install_text(&windowed(
            "tf",
            "kind: tumbling, size: 10s",
            STRICT,
            "final",
        ))
        .unwrap();
        let sub = e.subscribe_local("tf", "out").unwrap();
        e.publish_json("clicks", &[click("a", 1_000, 1)]).unwrap();
        e.publish_json("clicks", &[click("a", 2_000, 2)]).unwrap();
        e.publish_json("clicks", &[click("b", 9_999, 3)]).unwrap();
        // Watermark 9 999: nothing is closed yet.
        assert!(e
            .wait_until("tf", 9_998, std::time::Duration::from_secs(20))
            .unwrap());
        assert_eq!(timed(&sub), vec![], "workers={workers}");
        assert_eq!(e.dataflow("tf").unwrap().window_state, 2);
        e.publish_json("clicks", &[click("a", 10_000, 5)]).unwrap();
        settle(&e, "tf", "clicks", 10_000);
        assert_eq!(
            timed(&sub),
            ups(&[
                (10_000, r#"["a",0,10000,2,3]"#, 1),
                (10_000, r#"["b",0,10000,1,3]"#, 1),
            ]),
            "workers={workers}"
        );
        settle(&e, "tf", "clicks", 20_000);
        assert_eq!(
            timed(&sub),
            ups(&[(20_000, r#"["a",10000,20000,1,5]"#, 1)]),
            "workers={workers}"
        );
        assert_eq!(e.dataflow("tf").unwrap().window_state, 0);
    }
}

#[test]
fn tumbling_updates_stream_is_exact() {
    for workers in [1, 3] {
        let e = engine(workers);
        e.install_text(&windowed(
            "tu",
            "kind: tumbling, size: 10s",
            STRICT,
            "updates",
        ))
        .unwrap();
        let sub = e.subscribe_local("tu", "out").unwrap();
        // Each batch enters at the watermark before it: 0, 1000, 2000, 3000.
        e.publish_json("clicks", &[click("a", 1_000, 1)]).unwrap();
        e.publish_json("clicks", &[click("a", 2_000, 2)]).unwrap();
        e.publish_json("clicks", &[click("b", 3_000, 4)]).unwrap();
        e.publish_json("clicks", &[click("a", 11_000, 7)]).unwrap();
        settle(&e, "tu", "clicks", 30_000);
        assert_eq!(
            timed(&sub),
            ups(&[
                (0, r#"["a",0,10000,1,1]"#, 1),
                (1_000, r#"["a",0,10000,1,1]"#, -1),
                (1_000, r#"["a",0,10000,2,3]"#, 1),
                (2_000, r#"["b",0,10000,1,4]"#, 1),
                (3_000, r#"["a",10000,20000,1,7]"#, 1),
            ]),
            "workers={workers}"
        );
        assert_eq!(e.dataflow("tu").unwrap().window_state, 0);
    }
}

#[test]
fn lateness_corrects_within_and_rejects_past() {
    for workers in [1, 3] {
        let e = engine(workers);
        e.install_text(&windowed(
            "lt",
            "kind: tumbling, size: 10s",
            "{max_delay: 0s, idle_timeout: 0s, allowed_lateness: 5s}",
            "final",
        ))
        .unwrap();
        let sub = e.subscribe_local("lt", "out").unwrap();
        let late = e.subscribe_topic("lt.late").unwrap();
        e.publish_json("clicks", &[click("a", 1_000, 1)]).unwrap();
        e.publish_json("clicks", &[click("a", 12_000, 1)]).unwrap();
        // Watermark 12 000: [0, 10 000) is out, kept until 15 000.
        assert!(e
            .wait_until("lt", 11_999, std::time::Duration::from_secs(20))
            .unwrap());
        assert_eq!(
            timed(&sub),
            ups(&[(10_000, r#"["a",0,10000,1,1]"#, 1)]),
            "workers={workers}"
        );
        // 8 000 >= 12 000 - 5 000: a correction.
        e.publish_json("clicks", &[click("a", 8_000, 10)]).unwrap();
        // 6 000 < 7 000: late.
        e.publish_json("clicks", &[click("b", 6_000, 3)]).unwrap();
        settle(&e, "lt", "clicks", 40_000);
        assert_eq!(
            timed(&sub),
            ups(&[
                (12_000, r#"["a",0,10000,1,1]"#, -1),
                (12_000, r#"["a",0,10000,2,11]"#, 1),
                (20_000, r#"["a",10000,20000,1,1]"#, 1),
            ]),
            "workers={workers}"
        );
        let info = e.dataflow("lt").unwrap();
        assert_eq!(info.late_events, 1);
        assert_eq!(info.window_state, 0);
        let l = topic_events(&late);
        assert_eq!(l.len(), 1);
        let j: serde_json::Value = serde_json::from_str(&row_text(&l[0].row)).unwrap();
        assert_eq!(j[0], serde_json::json!("c"));
        assert_eq!(j[2], serde_json::json!(6000));
        assert_eq!(j[3], serde_json::json!("b"));
        assert_eq!(j[4], serde_json::json!(["b", 6000, 3]));
    }
}

#[test]
fn lateness_with_updates_emission_is_exact() {
    for workers in [1, 3] {
        let e = engine(workers);
        e.install_text(&windowed(
            "lu",
            "kind: tumbling, size: 10s",
            "{max_delay: 0s, idle_timeout: 0s, allowed_lateness: 5s}",
            "updates",
        ))
        .unwrap();
        let sub = e.subscribe_local("lu", "out").unwrap();
        e.publish_json("clicks", &[click("a", 1_000, 1)]).unwrap();
        e.publish_json("clicks", &[click("a", 12_000, 1)]).unwrap();
        e.publish_json("clicks", &[click("a", 8_000, 10)]).unwrap();
        e.publish_json("clicks", &[click("a", 3_000, 3)]).unwrap(); // late
        settle(&e, "lu", "clicks", 40_000);
        assert_eq!(
            timed(&sub),
            ups(&[
                (0, r#"["a",0,10000,1,1]"#, 1),
                (1_000, r#"["a",10000,20000,1,1]"#, 1),
                (12_000, r#"["a",0,10000,1,1]"#, -1),
                (12_000, r#"["a",0,10000,2,11]"#, 1),
            ]),
            "workers={workers}"
        );
        assert_eq!(e.dataflow("lu").unwrap().late_events, 1);
        assert_eq!(e.dataflow("lu").unwrap().window_state, 0);
    }
}

#[test]
fn sessions_merge_before_emission() {
    for workers in [1, 3] {
        let e = engine(workers);
        e.install_text(&windowed(
            "sm",
            "kind: session, gap: 5s",
            "{max_delay: 20s, idle_timeout: 0s, allowed_lateness: 0s}",
            "final",
        ))
        .unwrap();
        let sub = e.subscribe_local("sm", "out").unwrap();
        e.publish_json("clicks", &[click("a", 1_000, 1)]).unwrap();
        e.publish_json("clicks", &[click("a", 9_000, 2)]).unwrap();
        e.publish_json("clicks", &[click("b", 2_000, 7)]).unwrap();
        e.publish_json("clicks", &[click("a", 5_000, 4)]).unwrap(); // bridges
        settle(&e, "sm", "clicks", 60_000);
        assert_eq!(
            timed(&sub),
            ups(&[
                (7_000, r#"["b",2000,7000,1,7]"#, 1),
                (14_000, r#"["a",1000,14000,3,7]"#, 1),
            ]),
            "workers={workers}"
        );
        assert_eq!(e.dataflow("sm").unwrap().window_state, 0);
    }
}

#[test]
fn sessions_merge_after_emission_retracts_both() {
    for workers in [1, 3] {
        let e = engine(workers);
        e.install_text(&windowed(
            "se",
            "kind: session, gap: 5s",
            "{max_delay: 0s, idle_timeout: 0s, allowed_lateness: 20s}",
            "final",
        ))
        .unwrap();
        let sub = e.subscribe_local("se", "out").unwrap();
        e.publish_json("clicks", &[click("a", 1_000, 1)]).unwrap();
        e.publish_json("clicks", &[click("a", 3_000, 1)]).unwrap();
        e.publish_json("clicks", &[click("a", 10_000, 1)]).unwrap();
        e.publish_json("clicks", &[click("b", 20_000, 1)]).unwrap();
        assert!(e
            .wait_until("se", 19_999, std::time::Duration::from_secs(20))
            .unwrap());
        assert_eq!(
            timed(&sub),
            ups(&[
                (8_000, r#"["a",1000,8000,2,2]"#, 1),
                (15_000, r#"["a",10000,15000,1,1]"#, 1),
            ]),
            "workers={workers}"
        );
        assert!(e.dataflow("se").unwrap().window_state > 0);
        // 6 000 bridges both emitted sessions: both retracted, the merge emitted at once.
        e.publish_json("clicks", &[click("a", 6_000, 5)]).unwrap();
        settle(&e, "se", "clicks", 100_000);
        assert_eq!(
            timed(&sub),
            ups(&[
                (20_000, r#"["a",1000,8000,2,2]"#, -1),
                (20_000, r#"["a",10000,15000,1,1]"#, -1),
                (20_000, r#"["a",1000,15000,4,8]"#, 1),
                (25_000, r#"["b",20000,25000,1,1]"#, 1),
            ]),
            "workers={workers}"
        );
        assert_eq!(e.dataflow("se").unwrap().window_state, 0);
    }
}

#[test]
fn sessions_updates_stream_is_exact() {
    for workers in [1, 3] {
        let e = engine(workers);
        e.install_text(&windowed(
            "su",
            "kind: session, gap: 5s",
            "{max_delay: 0s, idle_timeout: 0s, allowed_lateness: 5s}",
            "updates",
        ))
        .unwrap();
        let sub = e.subscribe_local("su", "out").unwrap();
        // Each event at its own timestamp (0, 1000, 9000): within one timestamp the
        // intermediate updates depend on arrival order, only their sum is defined.
        e.publish_json("clicks", &[click("a", 1_000, 1)]).unwrap();
        e.publish_json("clicks", &[click("a", 9_000, 2)]).unwrap();
        e.publish_json("clicks", &[click("a", 5_000, 4)]).unwrap();
        settle(&e, "su", "clicks", 60_000);
        assert_eq!(
            timed(&sub),
            ups(&[
                (0, r#"["a",1000,6000,1,1]"#, 1),
                (1_000, r#"["a",9000,14000,1,2]"#, 1),
                (9_000, r#"["a",1000,6000,1,1]"#, -1),
                (9_000, r#"["a",9000,14000,1,2]"#, -1),
                (9_000, r#"["a",1000,14000,3,7]"#, 1),
            ]),
            "workers={workers}"
        );
        assert_eq!(e.dataflow("su").unwrap().window_state, 0);
    }
}

#[test]
fn state_retires_for_every_window_kind() {
    for (i, window) in [
        "kind: tumbling, size: 10s",
        "kind: sliding, size: 10s, slide: 2s",
        "kind: session, gap: 3s",
    ]
    .iter()
    .enumerate()
    {
        for workers in [1, 3] {
            let e = engine(workers);
            let name = format!("r{i}");
            e.install_text(&windowed(
                &name,
                window,
                "{max_delay: 30s, idle_timeout: 0s, allowed_lateness: 5s}",
                "final",
            ))
            .unwrap();
            let sub = e.subscribe_local(&name, "out").unwrap();
            let batch: Vec<_> = (0..50u64)
                .map(|j| click(["a", "b", "c", "d"][j as usize % 4], j * 700, 1))
                .collect();
            e.publish_json("clicks", &batch).unwrap();
            assert!(e
                .wait_until(&name, 0, std::time::Duration::from_secs(20))
                .unwrap());
            assert!(e.dataflow(&name).unwrap().window_state > 0, "{window}");
            settle(&e, &name, "clicks", 1_000_000);
            assert_eq!(
                e.dataflow(&name).unwrap().window_state,
                0,
                "{window} workers={workers}"
            );
            // Every event counted exactly once per window kind's coverage.
            let total: i64 = rows(&sub)
                .iter()
                .map(|r| {
                    let j: serde_json::Value = serde_json::from_str(r).unwrap();
                    j[3].as_i64().unwrap()
                })
                .sum();
            // A sliding window of 10 s every 2 s holds an event in up to 5 windows (windows
            // start at 0 or later).
            let expected: i64 = (0..50u64)
                .map(|j| {
                    if window.contains("sliding") {
                        (j * 700 / 2_000).min(4) as i64 + 1
                    } else {
                        1
                    }
                })
                .sum();
            assert_eq!(total, expected, "{window} workers={workers}");
        }
    }
}

/// A rollup: 10 s counts summed into minutes. The 10 s window that ends where the minute
/// ends comes out at the minute's end (stamped end − 1); the minute must still take it
/// (it was silently dropped before), and the minute is final only once it has: no early
/// result and correction. Watermarks stop exactly on window ends on the way.
#[test]
fn chained_windows_roll_up_exactly() {
    let def = format!(
        r#"
name: rollup
{CLICKS_TOPIC}
inputs:
  - {{id: c, topic: clicks, watermark: {{idle_timeout: 0s}}}}
nodes:
  - {{id: w10, op: window, input: c, kind: tumbling, size: 10s}}
  - {{id: per10, op: aggregate, input: w10, aggregates: [{{name: n, fn: count}}]}}
  - {{id: w60, op: window, input: per10, kind: tumbling, size: 1m}}
  - id: per_minute
    op: aggregate
    input: w60
    aggregates: [{{name: total, fn: sum, expr: n}}, {{name: windows, fn: count}}, {{name: biggest, fn: max, expr: n}}]
outputs:
  - {{name: out, from: per_minute}}
"#
    );
    for workers in [1, 3] {
        for stops in [vec![], vec![60_000u64]] {
            let e = engine(workers);
            e.install_text(&def).unwrap();
            let sub = e.subscribe_local("rollup", "out").unwrap();
            let mut events = Vec::new();
            for (user, ts) in [
                ("ann", 1_000),
                ("ann", 15_000),
                ("ann", 55_000),
                ("ann", 59_999),
                ("bob", 50_000),
                ("ann", 61_000),
                ("bob", 119_000),
            ] {
                events.push(click(user, ts, 1));
            }
            e.publish_json("clicks", &events[..5]).unwrap();
            for &t in &stops {
                settle(&e, "rollup", "clicks", t);
            }
            e.publish_json("clicks", &events[5..]).unwrap();
            settle(&e, "rollup", "clicks", 1_000_000);
            // Final means once: no early result taken back when the last 10 s arrives.
            let stream = timed(&sub);
            let mut rows: Vec<&str> = stream.iter().map(|(_, r, _)| r.as_str()).collect();
            rows.sort();
            assert!(
                stream.iter().all(|(_, _, d)| *d == 1),
                "workers={workers} stops={stops:?}: {stream:?}"
            );
            assert_eq!(
                rows,
                [
                    r#"["ann",0,60000,4,3,2]"#,
                    r#"["ann",60000,120000,1,1,1]"#,
                    r#"["bob",0,60000,1,1,1]"#,
                    r#"["bob",60000,120000,1,1,1]"#,
                ],
                "workers={workers} stops={stops:?}"
            );
        }
    }
}
