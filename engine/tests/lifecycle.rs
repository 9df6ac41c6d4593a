//! Installing and dropping dataflows under load leaks nothing, and what stays installed
//! stays exact.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::*;

fn def(name: &str) -> String {
    format!(
        r#"
name: {name}
{CLICKS_TOPIC}
inputs:
  - {{id: c, topic: clicks, watermark: {{max_delay: 0s, idle_timeout: 0s}}}}
nodes:
  - {{id: k, op: key_by, input: c, key: user}}
  - {{id: w, op: window, input: k, kind: tumbling, size: 1s}}
  - id: agg
    op: aggregate
    input: w
    aggregates:
      - {{name: n, fn: count}}
  - {{id: plain, op: aggregate, input: c, aggregates: [{{name: n, fn: count}}]}}
  - {{id: d, op: distinct, input: c, ttl: 1s}}
outputs:
  - {{name: out, from: agg}}
  - {{name: plain, from: plain}}
  - {{name: d, from: d}}
"#
    )
}

#[test]
fn install_drop_under_load_leaks_nothing() {
    let workers = 3;
    let e = Arc::new(engine(workers));
    e.install_text(&def("keeper")).unwrap();
    let keeper = e.subscribe_local("keeper", "out").unwrap();
    assert!(eventually(Duration::from_secs(10), || e.live_dataflows() == workers));
    let baseline_topics: BTreeSet<String> = e.topics().into_iter().map(|t| t.spec.name).collect();

    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let (e, stop) = (Arc::clone(&e), Arc::clone(&stop));
        thread::spawn(move || {
            let mut t = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let batch: Vec<_> = (0..20)
                    .map(|i| click(["a", "b", "c"][i % 3], t + i as u64, 1))
                    .collect();
                e.publish_json("clicks", &batch).unwrap();
                t += 20;
            }
            t
        })
    };
    for _ in 0..100 {
        e.install_text(&def("churn")).unwrap();
        let sub = e.subscribe_local("churn", "out").unwrap();
        drop(sub);
        e.drop_dataflow_local("churn").unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let published_until = publisher.join().unwrap();
    assert!(published_until > 0);

    assert!(
        eventually(Duration::from_secs(10), || e.live_dataflows() == workers),
        "live dataflows: {} (expected {workers})",
        e.live_dataflows()
    );
    let names: Vec<String> = e.dataflows().into_iter().map(|d| d.name).collect();
    assert_eq!(names, vec!["keeper".to_string()]);
    let topics: BTreeSet<String> = e.topics().into_iter().map(|t| t.spec.name).collect();
    let churn: BTreeSet<String> = ["churn.late", "churn.dead"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let extra: BTreeSet<String> = topics.difference(&baseline_topics).cloned().collect();
    assert_eq!(extra, churn, "only the declared, late and dead topics");

    // The keeper saw every event exactly once: its window counts add up to what was published.
    settle(&e, "keeper", "clicks", published_until + 10_000);
    let counted: i64 = keeper
        .drain()
        .iter()
        .flat_map(|b| {
            b.iter()
                .map(|(ev, _, d)| ev.row[3].as_i64().unwrap_or(0) * *d as i64)
                .collect::<Vec<_>>()
        })
        .sum();
    assert_eq!(
        counted, published_until as i64,
        "keeper counted every event once"
    );
    // A fresh dataflow installed now is exact.
    e.install_text(&def("last")).unwrap();
    let sub = e.subscribe_local("last", "out").unwrap();
    let base = (published_until / 1_000 + 100) * 1_000;
    e.publish_json(
        "clicks",
        &[
            click("x", base + 100, 1),
            click("y", base + 200, 1),
            click("x", base + 900, 1),
        ],
    )
    .unwrap();
    settle(&e, "last", "clicks", base + 5_000);
    let start = base - base % 1_000;
    assert_eq!(
        rows(&sub),
        vec![
            format!(r#"["x",{start},{},2]"#, start + 1_000),
            format!(r#"["y",{start},{},1]"#, start + 1_000),
        ]
    );
    assert_eq!(e.live_dataflows(), 2 * workers);
    e.drop_dataflow_local("last").unwrap();
    e.drop_dataflow_local("keeper").unwrap();
    assert!(eventually(Duration::from_secs(10), || e.live_dataflows() == 0));
}
