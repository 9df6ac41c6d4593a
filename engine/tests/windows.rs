//! Windowed aggregates end to end: exact results, lateness, state retirement.

mod common;

use common::*;

fn tumbling(extra: &str, lateness: &str) -> String {
    format!(
        r#"
name: per_user
{CLICKS_TOPIC}
inputs:
  - id: c
    topic: clicks
    watermark: {{max_delay: 1s, idle_timeout: 0s, allowed_lateness: {lateness}}}
nodes:
  - {{id: w, op: window, input: c, kind: tumbling, size: 10s}}
  - id: agg
    op: aggregate
    input: w
    aggregates:
      - {{name: n, fn: count}}
      - {{name: total, fn: sum, expr: amount}}
{extra}
outputs:
  - {{name: counts, from: agg}}
"#
    )
}

#[test]
fn tumbling_count_and_sum_are_exact() {
    for workers in [1, 3] {
        let e = engine(workers);
        e.install_text(&tumbling("", "0s")).unwrap();
        let sub = e.subscribe_local("per_user", "counts").unwrap();
        e.publish_json(
            "clicks",
            &[
                click("a", 1_000, 1),
                click("b", 2_000, 5),
                click("a", 9_999, 2),
                click("a", 10_000, 7),
            ],
        )
        .unwrap();
        settle(&e, "per_user", "clicks", 20_000);
        let got = consolidate(&drain(&sub));
        let want: Vec<String> = vec![
            r#"["a",0,10000,2,3]"#.into(),
            r#"["a",10000,20000,1,7]"#.into(),
            r#"["b",0,10000,1,5]"#.into(),
        ];
        assert_eq!(
            got.keys().cloned().collect::<Vec<_>>(),
            want,
            "workers={workers}"
        );
        assert!(got.values().all(|d| *d == 1));
        assert_eq!(e.dataflow("per_user").unwrap().window_state, 0);
    }
}
