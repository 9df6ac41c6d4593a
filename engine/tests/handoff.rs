//! Moving window state between engines when shards change owner (ARCHITECTURE §5): the old
//! engine cuts some shards' keys out of its running windows, the new one merges them into
//! its own, and together they give the results of one engine that saw everything.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{click, consolidate, drain, settle, CLICKS_TOPIC};
use serde_json::Value as Json;
use starling_engine::durable::{Durability, Store, StoreOptions};
use starling_engine::operators::Value;
use starling_engine::{Engine, EngineConfig, EngineError, ShardPart};

const SHARDS: u32 = 8;

fn engine_on(dir: &Path, workers: usize) -> Engine {
    let store = Store::open(
        dir,
        StoreOptions {
            durability: Durability::Batch { interval_ms: 50 },
            shards: SHARDS,
            ..StoreOptions::default()
        },
    )
    .expect("store opens");
    Engine::start(EngineConfig {
        workers,
        clock_interval: Duration::from_millis(20),
        store: Some(Arc::new(store)),
        checkpoint_interval: None,
        ..EngineConfig::default()
    })
    .expect("engine starts")
}

fn def(window: &str) -> String {
    def_delayed(window, "5s")
}

fn def_delayed(window: &str, max_delay: &str) -> String {
    format!(
        "name: win\n{CLICKS_TOPIC}\ninputs:\n  - id: c\n    topic: clicks\n    watermark: {{max_delay: {max_delay}, idle_timeout: 0s}}\nnodes:\n  - {{id: w, op: window, input: c, {window}}}\n  - id: agg\n    op: aggregate\n    input: w\n    aggregates:\n      - {{name: n, fn: count}}\n      - {{name: s, fn: sum, expr: amount}}\n      - {{name: hi, fn: max, expr: amount}}\noutputs:\n  - {{name: out, from: agg}}\n"
    )
}

/// 40 batches of 50 clicks over 100 s of event time, out of order within 2 s, over 40 users.
fn batches() -> Vec<Vec<(String, Json)>> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..40u64)
        .map(|b| {
            (0..50u64)
                .map(|i| {
                    let ts = (b * 50 + i) * 50 + 3_000 - next() % 2_000;
                    let user = format!("u{}", next() % 40);
                    let j = click(&user, ts, (next() % 100) as i64);
                    (user, j)
                })
                .collect()
        })
        .collect()
}

fn publish(engine: &Engine, batch: &[Json]) {
    if !batch.is_empty() {
        engine.publish_json("clicks", batch).expect("publish");
    }
}

/// Feeds half the input to `old`, moves `moved` shards to `new`, feeds the rest to whichever
/// engine owns each key, and returns the two engines' results together.
fn run_moved(
    window: &str,
    old_workers: usize,
    new_workers: usize,
    moved: &[u32],
) -> (BTreeMap<String, isize>, usize) {
    run_moved_with(&def(window), old_workers, new_workers, moved)
}

fn run_moved_with(
    text: &str,
    old_workers: usize,
    new_workers: usize,
    moved: &[u32],
) -> (BTreeMap<String, isize>, usize) {
    let m = run_moved_full(text, old_workers, new_workers, moved);
    (m.results, m.bytes)
}

/// What a run with a move leaves: the two engines' results together, the bytes moved, and
/// the engines themselves (to read their views).
struct Moved {
    results: BTreeMap<String, isize>,
    bytes: usize,
    old: Engine,
    new: Engine,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

fn run_moved_full(text: &str, old_workers: usize, new_workers: usize, moved: &[u32]) -> Moved {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let old = engine_on(d1.path(), old_workers);
    let new = engine_on(d2.path(), new_workers);
    for e in [&old, &new] {
        e.install_text(text).unwrap();
    }
    let (s_old, s_new) = (
        old.subscribe_local("win", "out").unwrap(),
        new.subscribe_local("win", "out").unwrap(),
    );
    let all = batches();
    let (first, second) = all.split_at(all.len() / 2);
    for b in first {
        publish(&old, &b.iter().map(|(_, j)| j.clone()).collect::<Vec<_>>());
    }
    let parts = old.release_shards(moved).unwrap();
    let moved_bytes: usize = parts.iter().map(|p| p.bytes.len()).sum();
    assert!(parts.iter().all(|p| moved.contains(&p.shard)), "{parts:?}");
    new.adopt_shards(moved, parts).unwrap();
    let store = old.store().unwrap().clone();
    for b in second {
        let (to_new, to_old): (Vec<_>, Vec<_>) = b
            .iter()
            .partition(|(user, _)| moved.contains(&store.shard_of(&Value::str(user))));
        publish(
            &old,
            &to_old
                .into_iter()
                .map(|(_, j)| j.clone())
                .collect::<Vec<_>>(),
        );
        publish(
            &new,
            &to_new
                .into_iter()
                .map(|(_, j)| j.clone())
                .collect::<Vec<_>>(),
        );
    }
    for e in [&old, &new] {
        settle(e, "win", "clicks", 200_000);
    }
    assert_eq!(old.stragglers(), 0);
    let mut both = drain(&s_old);
    both.extend(drain(&s_new));
    Moved {
        results: consolidate(&both),
        bytes: moved_bytes,
        old,
        new,
        _dirs: (d1, d2),
    }
}

fn reference(window: &str) -> BTreeMap<String, isize> {
    reference_with(&def(window))
}

fn reference_with(text: &str) -> BTreeMap<String, isize> {
    let d = tempfile::tempdir().unwrap();
    let e = engine_on(d.path(), 2);
    e.install_text(text).unwrap();
    let sub = e.subscribe_local("win", "out").unwrap();
    for b in batches() {
        publish(&e, &b.iter().map(|(_, j)| j.clone()).collect::<Vec<_>>());
    }
    settle(&e, "win", "clicks", 200_000);
    consolidate(&drain(&sub))
}

#[test]
fn moved_tumbling_windows_give_the_results_of_one_engine() {
    let window = "kind: tumbling, size: 10s";
    let expected = reference(window);
    assert!(expected.len() > 300, "{}", expected.len());
    assert!(expected.values().all(|d| *d == 1));
    // Different worker counts: the receiver spreads the keys by its own exchange.
    let (got, bytes) = run_moved(window, 2, 3, &[0, 3, 5]);
    assert!(bytes > 0, "open windows were moved");
    assert_eq!(got, expected);
}

#[test]
fn records_waiting_for_the_watermark_move_too() {
    // Nothing closes before the final watermark: the whole state is records waiting in the
    // windows' time-order stage.
    let window = "kind: tumbling, size: 10s";
    let mut expected = reference_with(&def_delayed(window, "3600s"));
    let (got, bytes) = run_moved_with(&def_delayed(window, "3600s"), 2, 2, &[1, 4, 6]);
    assert!(bytes > 0);
    expected.retain(|_, _| true);
    assert_eq!(got, expected);
}

fn join_def(max_delay: &str) -> String {
    format!(
        "name: win\n{CLICKS_TOPIC}\ninputs:\n  - {{id: a, topic: clicks, watermark: {{max_delay: {max_delay}, idle_timeout: 0s}}}}\n  - {{id: b, topic: clicks, watermark: {{max_delay: {max_delay}, idle_timeout: 0s}}}}\nnodes:\n  - {{id: lo, op: filter, input: a, where: 'amount < 50'}}\n  - {{id: hi, op: filter, input: b, where: 'amount >= 50'}}\n  - {{id: j, op: join, kind: interval, left: lo, right: hi, within: 2s}}\noutputs:\n  - {{name: out, from: j}}\n"
    )
}

#[test]
fn a_moved_interval_join_finds_every_pair_one_engine_finds() {
    for max_delay in ["3s", "3600s"] {
        let expected = reference_with(&join_def(max_delay));
        assert!(expected.len() > 200, "{}", expected.len());
        let (got, bytes) = run_moved_with(&join_def(max_delay), 2, 3, &[0, 2, 5, 7]);
        assert!(bytes > 0, "kept and waiting events were moved");
        assert_eq!(got, expected, "max_delay {max_delay}");
    }
}

#[test]
fn moved_sliding_windows_give_the_results_of_one_engine() {
    let window = "kind: sliding, size: 10s, slide: 5s";
    let expected = reference(window);
    let (got, _) = run_moved(window, 3, 1, &[1, 2, 6, 7]);
    assert_eq!(got, expected);
}

#[test]
fn moved_sessions_give_the_results_of_one_engine() {
    let window = "kind: session, gap: 3s";
    let expected = reference(window);
    assert!(!expected.is_empty());
    let (got, bytes) = run_moved(window, 2, 2, &[0, 1, 2, 3]);
    assert!(bytes > 0, "open sessions were moved");
    assert_eq!(got, expected);
}

#[test]
fn moving_every_shard_and_back_loses_nothing() {
    // The whole state goes to the other engine and comes back: the released flags are
    // cleared by the adoption, so the old engine counts its keys again.
    let window = "kind: tumbling, size: 10s";
    let expected = reference(window);
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = engine_on(d1.path(), 2);
    let b = engine_on(d2.path(), 2);
    for e in [&a, &b] {
        e.install_text(&def(window)).unwrap();
    }
    let sa = a.subscribe_local("win", "out").unwrap();
    let sb = b.subscribe_local("win", "out").unwrap();
    let all: Vec<u32> = (0..SHARDS).collect();
    let data = batches();
    let (first, rest) = data.split_at(15);
    let (second, third) = rest.split_at(10);
    let feed = |e: &Engine, bs: &[Vec<(String, Json)>]| {
        for batch in bs {
            publish(e, &batch.iter().map(|(_, j)| j.clone()).collect::<Vec<_>>());
        }
    };
    feed(&a, first);
    b.adopt_shards(&all, a.release_shards(&all).unwrap())
        .unwrap();
    feed(&b, second);
    a.adopt_shards(&all, b.release_shards(&all).unwrap())
        .unwrap();
    feed(&a, third);
    for e in [&a, &b] {
        settle(e, "win", "clicks", 200_000);
    }
    let mut both = drain(&sa);
    both.extend(drain(&sb));
    assert_eq!(consolidate(&both), expected);
}

#[test]
fn bad_handed_over_state_is_refused_or_skipped_without_harm() {
    let d = tempfile::tempdir().unwrap();
    let e = engine_on(d.path(), 2);
    e.install_text(&def("kind: tumbling, size: 10s")).unwrap();
    let sub = e.subscribe_local("win", "out").unwrap();
    // A dataflow this node does not run: refused whole.
    let unknown = ShardPart {
        dataflow: "nope".into(),
        node: "w".into(),
        shard: 0,
        bytes: vec![1, 2, 3],
    };
    assert!(matches!(
        e.adopt_shards(&[0], vec![unknown]),
        Err(EngineError::UnknownDataflow(_))
    ));
    // Garbage, an empty archive, a truncated one, an unknown operator: logged and skipped.
    let mut parts = vec![
        ShardPart {
            dataflow: "win".into(),
            node: "w".into(),
            shard: 0,
            bytes: vec![0xff; 64],
        },
        ShardPart {
            dataflow: "win".into(),
            node: "w".into(),
            shard: 0,
            bytes: Vec::new(),
        },
    ];
    // A real part, cut short.
    let d2 = tempfile::tempdir().unwrap();
    let other = engine_on(d2.path(), 1);
    other
        .install_text(&def("kind: tumbling, size: 10s"))
        .unwrap();
    publish(&other, &[click("u1", 1_000, 5), click("u2", 1_500, 7)]);
    let real = other
        .release_shards(&(0..SHARDS).collect::<Vec<_>>())
        .unwrap();
    assert!(!real.is_empty());
    for p in &real {
        let mut cut = p.clone();
        cut.bytes.truncate(p.bytes.len() / 2);
        parts.push(cut);
        let mut elsewhere = p.clone();
        elsewhere.node = "agg".into();
        parts.push(elsewhere);
    }
    e.adopt_shards(&[0], parts).unwrap();
    // Still working, and none of it was counted.
    publish(&e, &[click("u3", 2_000, 1)]);
    settle(&e, "win", "clicks", 50_000);
    let got = consolidate(&drain(&sub));
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got.keys().next().unwrap().contains("u3"));
}

/// The shard a hand-off cuts by and the shard the log files an event under are one number:
/// an engine asked for a count its store does not have refuses to start, naming both.
#[test]
fn an_engine_refuses_a_shard_count_its_store_does_not_have() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(
        dir.path(),
        StoreOptions {
            shards: SHARDS,
            ..StoreOptions::default()
        },
    )
    .expect("store opens");
    let err = Engine::start(EngineConfig {
        workers: 1,
        store: Some(Arc::new(store)),
        shards: Some(SHARDS * 2),
        ..EngineConfig::default()
    })
    .err()
    .expect("the engine refuses two shard counts");
    let text = err.to_string();
    assert!(
        text.contains("16 shards") && text.contains("has 8"),
        "{text}"
    );
}

/// Running totals per user (no window), with the kinds of aggregate that keep a value per
/// distinct input (`count_distinct`, `top_k`), written to a KV view.
fn totals_def() -> String {
    format!(
        "name: win\n{CLICKS_TOPIC}\ninputs:\n  - id: c\n    topic: clicks\n    watermark: {{max_delay: 5s, idle_timeout: 0s}}\nnodes:\n  - id: agg\n    op: aggregate\n    input: c\n    aggregates:\n      - {{name: n, fn: count}}\n      - {{name: s, fn: sum, expr: amount}}\n      - {{name: hi, fn: max, expr: amount}}\n      - {{name: kinds, fn: count_distinct, expr: amount}}\n      - {{name: top, fn: top_k, expr: amount, k: 2}}\n  - {{id: v, op: kv_put, input: agg, view: totals}}\noutputs:\n  - {{name: out, from: agg}}\n"
    )
}

/// Every (key, value) of `view` on `engine`.
fn view_of(engine: &Engine, view: &str) -> BTreeMap<String, String> {
    let page = engine.kv_scan_local(view, "", None, 10_000).unwrap();
    assert!(page.next.is_none());
    page.items
        .into_iter()
        .map(|(k, v)| {
            (
                String::from_utf8_lossy(&k).into_owned(),
                String::from_utf8_lossy(&v).into_owned(),
            )
        })
        .collect()
}

/// The running totals of the moved users go with their shards: the results of the two
/// engines together equal one engine's, and so does the union of their views, with each key
/// in one view only (the old owner's view deleted the keys it handed over).
#[test]
fn moved_running_totals_and_their_view_give_the_results_of_one_engine() {
    let text = totals_def();
    let d = tempfile::tempdir().unwrap();
    let one = engine_on(d.path(), 2);
    one.install_text(&text).unwrap();
    let sub = one.subscribe_local("win", "out").unwrap();
    for b in batches() {
        publish(&one, &b.iter().map(|(_, j)| j.clone()).collect::<Vec<_>>());
    }
    settle(&one, "win", "clicks", 200_000);
    let expected = consolidate(&drain(&sub));
    assert_eq!(expected.len(), 40, "one result per user: {expected:#?}");
    let want_view = view_of(&one, "totals");
    assert_eq!(want_view.len(), 40);

    let m = run_moved_full(&text, 2, 3, &[0, 3, 5]);
    assert!(m.bytes > 0, "the moved users' totals went with them");
    assert_eq!(m.results, expected);
    let (old_view, new_view) = (view_of(&m.old, "totals"), view_of(&m.new, "totals"));
    assert!(
        old_view.keys().all(|k| !new_view.contains_key(k)),
        "a key is in both views: {old_view:#?} {new_view:#?}"
    );
    let mut both = old_view;
    both.extend(new_view);
    assert_eq!(both, want_view);
}

/// `distinct` moved while copies are still within their time to live: nothing seen before the
/// move is reported again after it, and expiries follow the keys.
#[test]
fn a_moved_distinct_reports_each_first_occurrence_once() {
    let text = format!(
        "name: win\n{CLICKS_TOPIC}\ninputs:\n  - id: c\n    topic: clicks\n    watermark: {{max_delay: 5s, idle_timeout: 0s}}\nnodes:\n  - id: amounts\n    op: map\n    input: c\n    fields: [{{amount: amount}}]\n  - {{id: first, op: distinct, input: amounts, ttl: 3600s}}\noutputs:\n  - {{name: out, from: first}}\n"
    );
    let expected = reference_with(&text);
    assert!(expected.len() > 40, "{}", expected.len());
    let (got, bytes) = run_moved_with(&text, 2, 2, &[1, 2, 6]);
    assert!(bytes > 0);
    assert_eq!(got, expected);
}

/// A view written straight from the stream (the latest click per user, no aggregate): its
/// entries of the moved users go with their shards, so the two engines' views together equal
/// one engine's, each key in one view only.
#[test]
fn a_moved_view_of_latest_rows_gives_the_view_of_one_engine() {
    let text = format!(
        "name: win\n{CLICKS_TOPIC}\ninputs:\n  - id: c\n    topic: clicks\n    watermark: {{max_delay: 5s, idle_timeout: 0s}}\nnodes:\n  - {{id: v, op: kv_put, input: c, view: latest}}\noutputs:\n  - {{name: out, from: v}}\n"
    );
    let d = tempfile::tempdir().unwrap();
    let one = engine_on(d.path(), 2);
    one.install_text(&text).unwrap();
    for b in batches() {
        publish(&one, &b.iter().map(|(_, j)| j.clone()).collect::<Vec<_>>());
    }
    settle(&one, "win", "clicks", 200_000);
    let want = view_of(&one, "latest");
    assert_eq!(want.len(), 40);

    let m = run_moved_full(&text, 2, 3, &[0, 3, 5]);
    assert!(m.bytes > 0, "the moved users' entries went with them");
    let (old_view, new_view) = (view_of(&m.old, "latest"), view_of(&m.new, "latest"));
    assert!(!new_view.is_empty());
    assert!(
        old_view.keys().all(|k| !new_view.contains_key(k)),
        "a key is in both views"
    );
    let mut both = old_view;
    both.extend(new_view);
    assert_eq!(both, want);
}
