//! Bounded disorder does not change results: a permutation of a sorted sequence whose
//! disorder stays within `max_delay`, published in random batches, yields the same final
//! windows as the sorted sequence (and as a model), with 1 and 4 workers.

mod common;

use std::collections::BTreeMap;

use common::*;
use proptest::prelude::*;
use serde_json::Value as Json;

const MAX_DELAY: u64 = 3_000;

fn def() -> String {
    format!(
        r#"
name: ooo
{CLICKS_TOPIC}
inputs:
  - id: c
    topic: clicks
    watermark: {{max_delay: 3s, idle_timeout: 0s, allowed_lateness: 0s}}
nodes:
  - {{id: tw, op: window, input: c, kind: tumbling, size: 5s}}
  - id: tumbling
    op: aggregate
    input: tw
    aggregates:
      - {{name: n, fn: count}}
      - {{name: total, fn: sum, expr: amount}}
      - {{name: hi, fn: max, expr: amount}}
  - {{id: sw, op: window, input: c, kind: session, gap: 2s}}
  - id: sessions
    op: aggregate
    input: sw
    aggregates:
      - {{name: n, fn: count}}
      - {{name: total, fn: sum, expr: amount}}
outputs:
  - {{name: tumbling, from: tumbling}}
  - {{name: sessions, from: sessions}}
"#
    )
}

type Ev = (u64, &'static str, i64);

/// Runs `events` in `batches` and returns the consolidated (tumbling, sessions) results.
fn run(workers: usize, events: &[Ev], batches: &[usize]) -> (Vec<String>, Vec<String>) {
    let e = engine(workers);
    e.install_text(&def()).unwrap();
    let t = e.subscribe_local("ooo", "tumbling").unwrap();
    let s = e.subscribe_local("ooo", "sessions").unwrap();
    let mut rest: &[Ev] = events;
    let mut sizes = batches.iter().cycle();
    while !rest.is_empty() {
        let n = (*sizes.next().unwrap()).clamp(1, rest.len());
        let docs: Vec<Json> = rest[..n]
            .iter()
            .map(|(ts, u, a)| click(u, *ts, *a))
            .collect();
        e.publish_json("clicks", &docs).unwrap();
        rest = &rest[n..];
    }
    settle(&e, "ooo", "clicks", 1_000_000);
    assert_eq!(e.dataflow("ooo").unwrap().late_events, 0);
    assert_eq!(e.dataflow("ooo").unwrap().window_state, 0);
    (rows(&t), rows(&s))
}

fn model_tumbling(events: &[Ev]) -> Vec<String> {
    let mut m: BTreeMap<(&str, u64), (i64, i64, i64)> = BTreeMap::new();
    for (ts, u, a) in events {
        let w = ts - ts % 5_000;
        let e = m.entry((u, w)).or_insert((0, 0, i64::MIN));
        e.0 += 1;
        e.1 += a;
        e.2 = e.2.max(*a);
    }
    let mut v: Vec<String> = m
        .into_iter()
        .map(|((u, w), (n, t, h))| format!(r#"["{u}",{w},{},{n},{t},{h}]"#, w + 5_000))
        .collect();
    v.sort();
    v
}

fn scenario() -> impl Strategy<Value = (Vec<Ev>, Vec<Ev>, Vec<usize>)> {
    (
        prop::collection::vec((0u64..40_000, 0usize..3, 1i64..6, 0u64..=MAX_DELAY), 1..40),
        prop::collection::vec(1usize..8, 1..6),
    )
        .prop_map(|(raw, batches)| {
            let keys = ["a", "b", "c"];
            let mut sorted: Vec<(u64, &'static str, i64, u64)> = raw
                .into_iter()
                .map(|(t, k, a, j)| (t, keys[k], a, j))
                .collect();
            sorted.sort();
            // Release each event at time + jitter (<= max_delay): every event is then at
            // most max_delay older than the newest released before it.
            let mut shuffled = sorted.clone();
            shuffled.sort_by_key(|(t, _, _, j)| t + j);
            let strip = |v: Vec<(u64, &'static str, i64, u64)>| {
                v.into_iter()
                    .map(|(t, u, a, _)| (t, u, a))
                    .collect::<Vec<Ev>>()
            };
            (strip(sorted), strip(shuffled), batches)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn disorder_within_max_delay_does_not_change_results(
        (sorted, shuffled, batches) in scenario()
    ) {
        // The permutation really stays within the bound.
        let mut newest = 0;
        for (t, _, _) in &shuffled {
            prop_assert!(*t + MAX_DELAY >= newest);
            newest = newest.max(*t);
        }
        let reference = run(1, &sorted, &[1]);
        prop_assert_eq!(&reference.0, &model_tumbling(&sorted));
        for workers in [1, 4] {
            let got = run(workers, &shuffled, &batches);
            prop_assert_eq!(&got, &reference, "workers={}", workers);
        }
    }
}
