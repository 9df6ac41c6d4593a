//! Durability in process: every publish is logged before it is acknowledged, and an engine
//! started on the same store replays the log into the same state (ARCHITECTURE §6).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{click, drain, settle, CLICKS_TOPIC};
use serde_json::Value as Json;
use starling_engine::durable::{Durability, Store, StoreOptions};
use starling_engine::{Engine, EngineConfig};

fn engine_on(dir: Option<&Path>) -> Result<Engine, String> {
    let store = match dir {
        Some(d) => Some(Arc::new(
            Store::open(
                d,
                StoreOptions {
                    durability: Durability::Batch { interval_ms: 5 },
                    shards: 8,
                    ..StoreOptions::default()
                },
            )
            .map_err(|e| e.to_string())?,
        )),
        None => None,
    };
    Engine::start(EngineConfig {
        workers: 2,
        clock_interval: Duration::from_millis(20),
        store,
        checkpoint_interval: None,
        ..EngineConfig::default()
    })
    .map_err(|e| e.to_string())
}

fn window_def(name: &str) -> String {
    format!(
        "name: {name}\n{CLICKS_TOPIC}\ninputs:\n  - id: c\n    topic: clicks\n    watermark: {{max_delay: 20s, idle_timeout: 0s}}\nnodes:\n  - {{id: w, op: window, input: c, kind: tumbling, size: 10s}}\n  - id: agg\n    op: aggregate\n    input: w\n    aggregates:\n      - {{name: n, fn: count}}\n      - {{name: s, fn: sum, expr: amount}}\noutputs:\n  - {{name: out, from: agg}}\n"
    )
}

/// Deterministic batches: 30 batches of 40 clicks over 60 s of event time, out of order
/// within 2 s, plus a few events far in the past (late).
fn batches() -> Vec<Vec<Json>> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..30u64)
        .map(|b| {
            (0..40u64)
                .map(|i| {
                    let base = (b * 40 + i) * 50;
                    let ts = base.saturating_sub(next() % 2000);
                    let ts = if i == 39 && b % 7 == 3 { ts / 10 } else { ts };
                    let user = format!("u{}", next() % 9);
                    click(&user, ts, (next() % 100) as i64)
                })
                .collect()
        })
        .collect()
}

/// Publishes the first `upto` batches, then a watermark mark at 30 s.
fn feed(engine: &Engine, upto: usize) {
    for b in batches().into_iter().take(upto) {
        engine.publish_json("clicks", &b).expect("publish");
    }
}

/// Results of windows ending at or after 40 s: all still open when the feed ends (the
/// watermark is then just under 40 s), so they come out only after `settle`. Earlier windows
/// may be emitted by the replay while the test subscribes, so they are left out.
fn open_windows(updates: &[(String, isize)]) -> BTreeMap<String, isize> {
    let mut m = common::consolidate(updates);
    m.retain(|row, _| {
        let end = serde_json::from_str::<Json>(row).unwrap()[2]
            .as_u64()
            .unwrap();
        end >= 40_000
    });
    m
}

#[test]
fn a_restarted_engine_replays_the_log_into_the_same_open_windows() {
    // Reference: one engine that never stops.
    let reference = engine_on(None).unwrap();
    reference.install_text(&window_def("win")).unwrap();
    let sub = reference.subscribe_local("win", "out").unwrap();
    feed(&reference, 30);
    settle(&reference, "win", "clicks", 100_000);
    let expected = open_windows(&drain(&sub));
    let expected_late = reference.dataflow("win").unwrap().late_events;
    assert!(expected.len() >= 20, "{expected:?}");
    assert!(expected_late > 0, "the input has late events");

    let dir = tempfile::tempdir().unwrap();
    {
        let first = engine_on(Some(dir.path())).unwrap();
        first.install_text(&window_def("win")).unwrap();
        feed(&first, 30);
        first.shutdown();
    }
    let second = engine_on(Some(dir.path())).unwrap();
    let report = second.recovery().unwrap();
    assert_eq!(report.dataflows, 1);
    assert_eq!(report.events, 30 * 40);
    let sub = second.subscribe_local("win", "out").unwrap();
    settle(&second, "win", "clicks", 100_000);
    assert_eq!(open_windows(&drain(&sub)), expected);
    assert!(common::eventually(Duration::from_secs(10), || {
        second.dataflow("win").unwrap().late_events == expected_late
    }));
}

#[test]
fn a_dataflow_sees_after_a_restart_only_what_it_saw_before() {
    let dir = tempfile::tempdir().unwrap();
    let counts = |name: &str| {
        format!("name: {name}\n{CLICKS_TOPIC}\ninputs: [{{id: c, topic: clicks}}]\nnodes:\n  - id: agg\n    op: aggregate\n    input: c\n    aggregates: [{{name: n, fn: count}}]\noutputs: [{{name: out, from: agg}}]\n")
    };
    {
        let e = engine_on(Some(dir.path())).unwrap();
        e.install_text(&counts("early")).unwrap();
        e.publish_json("clicks", &[click("a", 1, 1), click("a", 2, 1)])
            .unwrap();
        e.install_text(&counts("late")).unwrap();
        e.install_text(&counts("gone")).unwrap();
        e.publish_json("clicks", &[click("a", 3, 1)]).unwrap();
        e.drop_dataflow_local("gone").unwrap();
    }
    let e = engine_on(Some(dir.path())).unwrap();
    let names: Vec<String> = e.dataflows().into_iter().map(|d| d.name).collect();
    assert_eq!(names, ["early", "late"]);
    let early = e.subscribe_local("early", "out").unwrap();
    let late = e.subscribe_local("late", "out").unwrap();
    e.publish_json("clicks", &[click("a", 4, 1)]).unwrap();
    // The replay may still be emitting when the test subscribes: wait for the positive part
    // of the consolidated output to be the expected count.
    let reaches = |sub: &starling_engine::Subscription<_>, want: &str| {
        let mut got = Vec::new();
        common::eventually(Duration::from_secs(10), || {
            got.extend(drain(sub));
            let plus: Vec<String> = common::consolidate(&got)
                .into_iter()
                .filter(|(_, d)| *d > 0)
                .map(|(r, _)| r)
                .collect();
            plus == [want]
        })
    };
    assert!(reaches(&early, "[\"a\",4]"));
    assert!(reaches(&late, "[\"a\",2]"));
}

#[test]
fn a_damaged_catalog_stops_the_start_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    {
        let e = engine_on(Some(dir.path())).unwrap();
        e.install_text(&window_def("win")).unwrap();
        feed(&e, 2);
    }
    let catalog = dir.path().join("catalog.json");
    let text = std::fs::read(&catalog).unwrap();
    std::fs::write(&catalog, &text[..text.len() / 2]).unwrap();
    let err = engine_on(Some(dir.path())).err().expect("start refused");
    assert!(err.contains("catalog") && err.contains("damaged"), "{err}");
}

#[test]
fn the_shard_count_of_a_data_directory_cannot_change() {
    let dir = tempfile::tempdir().unwrap();
    drop(engine_on(Some(dir.path())).unwrap());
    let err = Store::open(
        dir.path(),
        StoreOptions {
            shards: 16,
            ..StoreOptions::default()
        },
    )
    .map(|_| ())
    .expect_err("refused")
    .to_string();
    assert!(err.contains("8 shards") && err.contains("16"), "{err}");
}

#[test]
fn an_unwritable_data_directory_refuses_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let err = engine_on(Some(&file.join("data"))).err().expect("refused");
    assert!(err.contains("not writable"), "{err}");
}

/// Damages the log's files in several ways; every restart either refuses with a clear error
/// or replays every published event — never fewer without saying so.
#[test]
fn a_damaged_log_is_refused_or_complete_never_silently_short() {
    for (i, damage) in ["flip", "truncate", "zero"].iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        {
            let e = engine_on(Some(dir.path())).unwrap();
            e.install_text(&window_def("win")).unwrap();
            feed(&e, 30);
        }
        // The largest file of the log holds the entries.
        let mut files: Vec<(u64, std::path::PathBuf)> = walk(&dir.path().join("log"))
            .into_iter()
            .map(|p| (std::fs::metadata(&p).unwrap().len(), p))
            .collect();
        files.sort();
        let (len, path) = files.pop().unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        match *damage {
            "flip" => {
                for k in 0..64 {
                    let at = (len as usize / 3 + k * 97) % bytes.len();
                    bytes[at] ^= 0x5a;
                }
            }
            "truncate" => bytes.truncate(bytes.len() * 2 / 3),
            _ => {
                let start = bytes.len() / 4;
                let end = (start + 4096).min(bytes.len());
                bytes[start..end].fill(0);
            }
        }
        std::fs::write(&path, &bytes).unwrap();
        match engine_on(Some(dir.path())) {
            Ok(e) => {
                let r = e.recovery().unwrap();
                assert_eq!(
                    r.events,
                    30 * 40,
                    "case {i} ({damage}): started with {} of {} events and no error",
                    r.events,
                    30 * 40
                );
            }
            Err(err) => {
                assert!(
                    err.contains("lost entries")
                        || err.contains("corrupt")
                        || err.contains("recovery"),
                    "case {i} ({damage}): unclear error: {err}"
                );
            }
        }
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn session_def(name: &str) -> String {
    format!(
        "name: {name}\n{CLICKS_TOPIC}\ninputs:\n  - id: c\n    topic: clicks\n    watermark: {{max_delay: 20s, idle_timeout: 0s}}\nnodes:\n  - {{id: w, op: window, input: c, kind: session, gap: 3s}}\n  - id: agg\n    op: aggregate\n    input: w\n    aggregates:\n      - {{name: n, fn: count}}\n      - {{name: s, fn: sum, expr: amount}}\n      - {{name: top, fn: top_k, expr: amount, k: 2}}\n      - {{name: hi, fn: max, expr: amount}}\n      - {{name: d, fn: count_distinct, expr: amount}}\noutputs:\n  - {{name: out, from: agg}}\n"
    )
}

#[test]
fn a_checkpoint_bounds_the_replay_and_the_results_stay_exact() {
    for (kind, def) in [
        ("tumbling", window_def("win")),
        ("session", session_def("win")),
    ] {
        let reference = engine_on(None).unwrap();
        reference.install_text(&def).unwrap();
        let sub = reference.subscribe_local("win", "out").unwrap();
        feed(&reference, 30);
        settle(&reference, "win", "clicks", 100_000);
        let expected = open_windows(&drain(&sub));
        assert!(!expected.is_empty(), "{kind}");

        let dir = tempfile::tempdir().unwrap();
        {
            let first = engine_on(Some(dir.path())).unwrap();
            first.install_text(&def).unwrap();
            let batches = batches();
            for b in &batches[..20] {
                first.publish_json("clicks", b).unwrap();
            }
            let info = first.checkpoint("win").unwrap();
            assert!(info.time > 0 && info.bytes > 0, "{kind}: {info:?}");
            for b in &batches[20..] {
                first.publish_json("clicks", b).unwrap();
            }
        }
        let second = engine_on(Some(dir.path())).unwrap();
        let report = second.recovery().unwrap();
        assert_eq!(report.checkpoints, 1, "{kind}");
        assert!(
            report.events >= 10 * 40 && report.events < 30 * 40,
            "{kind}: the replay read {} events; a checkpoint after 20 of 30 batches bounds it",
            report.events
        );
        let sub = second.subscribe_local("win", "out").unwrap();
        settle(&second, "win", "clicks", 100_000);
        assert_eq!(open_windows(&drain(&sub)), expected, "{kind}");
        // Retired state stays retired after a restore.
        assert!(common::eventually(Duration::from_secs(10), || {
            second.dataflow("win").unwrap().window_state == 0
        }));
    }
}

/// Running totals per user written to a KV view: the ledger in front of the aggregate is
/// checkpointed, so a restart replays only the log after the checkpoint, and totals updated
/// after the restart build on the restored ones.
#[test]
fn running_totals_restore_from_a_checkpoint_and_replay_only_the_rest() {
    let def = format!(
        "name: totals\n{CLICKS_TOPIC}\ninputs:\n  - id: c\n    topic: clicks\n    watermark: {{max_delay: 20s, idle_timeout: 0s}}\nnodes:\n  - id: agg\n    op: aggregate\n    input: c\n    aggregates:\n      - {{name: n, fn: count}}\n      - {{name: s, fn: sum, expr: amount}}\n      - {{name: d, fn: count_distinct, expr: amount}}\n      - {{name: top, fn: top_k, expr: amount, k: 2}}\n  - {{id: v, op: kv_put, input: agg, view: totals}}\noutputs:\n  - {{name: out, from: agg}}\n"
    );
    let view = |e: &Engine| {
        let page = e.kv_scan_local("totals", "", None, 1000).unwrap();
        page.items
    };
    let reference_dir = tempfile::tempdir().unwrap();
    let reference = engine_on(Some(reference_dir.path())).unwrap();
    reference.install_text(&def).unwrap();
    feed(&reference, 30);
    settle(&reference, "totals", "clicks", 100_000);
    let expected = view(&reference);
    assert_eq!(expected.len(), 9);

    let dir = tempfile::tempdir().unwrap();
    let batches = batches();
    {
        let first = engine_on(Some(dir.path())).unwrap();
        first.install_text(&def).unwrap();
        for b in &batches[..20] {
            first.publish_json("clicks", b).unwrap();
        }
        let info = first.checkpoint("totals").unwrap();
        assert!(info.time > 0 && info.bytes > 0, "{info:?}");
        for b in &batches[20..25] {
            first.publish_json("clicks", b).unwrap();
        }
    }
    let second = engine_on(Some(dir.path())).unwrap();
    let report = second.recovery().unwrap();
    assert_eq!(report.checkpoints, 1);
    assert!(
        report.events >= 5 * 40 && report.events < 25 * 40,
        "the replay read {} events; a checkpoint after 20 of 25 batches bounds it",
        report.events
    );
    for b in &batches[25..] {
        second.publish_json("clicks", b).unwrap();
    }
    settle(&second, "totals", "clicks", 100_000);
    assert_eq!(view(&second), expected);
}

#[test]
fn what_cannot_be_checkpointed_says_why_and_replays_in_full() {
    let dir = tempfile::tempdir().unwrap();
    let firsts = format!("name: firsts\n{CLICKS_TOPIC}inputs: [{{id: c, topic: clicks}}]\nnodes:\n  - {{id: d, op: distinct, input: c, ttl: 60s}}\noutputs: [{{name: out, from: d}}]\n");
    {
        let e = engine_on(Some(dir.path())).unwrap();
        e.install_text(&firsts).unwrap();
        feed(&e, 3);
        let err = e.checkpoint("firsts").unwrap_err().to_string();
        assert!(err.contains("distinct"), "{err}");
        assert!(e.checkpoint("nope").is_err());
    }
    let e = engine_on(Some(dir.path())).unwrap();
    let r = e.recovery().unwrap();
    assert_eq!((r.checkpoints, r.events), (0, 3 * 40));
}
