//! Every shipped Nexmark query against DuckDB: the same generated events go to Starling (an
//! in-process engine, 2 workers) and to DuckDB running the Flink benchmark's SQL
//! (`bench/reference/nexmark_duckdb.py`); the consolidated results must be equal, row for
//! row and multiplicity for multiplicity, with events in order and out of order.
//!
//! DuckDB comes from PyPI: `bench/reference/setup.sh` installs it into a virtual environment
//! under `target/` the first time any test asks (`starling_testkit::reference`).
//! `STARLING_REFERENCE_PYTHON` points at another interpreter that has `duckdb`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value as Json;
use starling_bench::nexmark::{write_ndjson, Generator, NexmarkConfig};
use starling_bench::queries::{self, RunOptions};
use starling_dataflows::nexmark::QUERIES;

/// The shipped definitions allow events up to this far out of order (`max_delay`).
const MAX_DELAY_MS: u64 = 5_000;
/// q4 joins a bid with its auction within this much event time.
const Q4_WITHIN_MS: u64 = 60_000;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The interpreter with DuckDB, installing it on first use (under a lock: both tests of this
/// file, and any other test binary, may ask at once on a fresh clone).
fn python() -> PathBuf {
    starling_testkit::reference::python().unwrap_or_else(|e| panic!("{e}"))
}

/// A row with every number as a float, so that DuckDB's `2` and Starling's `2.0` (or the
/// reverse) compare by value; both print floats as the shortest text that reads back exact.
fn normalise(row: &Json) -> String {
    fn walk(v: &Json) -> Json {
        match v {
            Json::Number(n) => n
                .as_f64()
                .and_then(serde_json::Number::from_f64)
                .map_or(Json::Null, Json::Number),
            Json::Array(a) => Json::Array(a.iter().map(walk).collect()),
            other => other.clone(),
        }
    }
    walk(row).to_string()
}

fn multiset<'a>(rows: impl IntoIterator<Item = (&'a str, isize)>) -> BTreeMap<String, isize> {
    let mut m = BTreeMap::new();
    for (text, d) in rows {
        let row: Json = serde_json::from_str(text).expect("a JSON row");
        *m.entry(normalise(&row)).or_insert(0) += d;
    }
    m.retain(|_, d| *d != 0);
    m
}

/// Where two results differ, as readable lines (at most a few of each kind).
fn differences(want: &BTreeMap<String, isize>, got: &BTreeMap<String, isize>) -> String {
    let mut out = String::new();
    let mut missing = 0;
    let mut extra = 0;
    for (row, &n) in want {
        let g = got.get(row).copied().unwrap_or(0);
        if g != n {
            missing += 1;
            if missing <= 5 {
                out += &format!("  DuckDB has {row} x{n}, Starling x{g}\n");
            }
        }
    }
    for (row, &n) in got {
        if !want.contains_key(row) {
            extra += 1;
            if extra <= 5 {
                out += &format!("  Starling has {row} x{n}, DuckDB none\n");
            }
        }
    }
    format!("{missing} rows differ or are missing, {extra} extra\n{out}")
}

fn check_all(cfg: &NexmarkConfig, events: u64, label: &str) {
    assert!(
        cfg.max_displacement_ms() < MAX_DELAY_MS,
        "the test's disorder must stay within the definitions' max_delay"
    );
    assert!(
        cfg.max_auction_length_ms() <= Q4_WITHIN_MS,
        "q4's join bound must cover the longest auction"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    write_ndjson(dir.path(), cfg, events).expect("NDJSON written");
    let names: Vec<&str> = QUERIES.iter().map(|q| q.name).collect();
    let out = dir.path().join("duckdb");
    let status = Command::new(python())
        .arg(repo().join("bench/reference/nexmark_duckdb.py"))
        .arg(dir.path())
        .arg(&out)
        .args(&names)
        .status()
        .expect("python runs");
    assert!(status.success(), "the DuckDB reference failed");

    let mut failures = Vec::new();
    for q in QUERIES {
        let text = std::fs::read_to_string(out.join(format!("{}.ndjson", q.name)))
            .expect("DuckDB result file");
        let want = multiset(text.lines().map(|l| (l, 1)));
        let gen = Generator::new(cfg, events).expect("valid config");
        let batches = queries::batches(gen.map(|e| (e.topic(), e.date_time(), e.to_row())), 2_000);
        let run = queries::run(q, batches, &RunOptions::default())
            .unwrap_or_else(|e| panic!("{label} {}: {e:#}", q.name));
        let output = run.output.expect("collected");
        let got = multiset(output.iter().map(|(r, d)| (r.as_str(), *d)));
        let rows: isize = want.values().sum();
        println!("{label} {}: {rows} result rows", q.name);
        if got != want {
            failures.push(format!("{label} {}: {}", q.name, differences(&want, &got)));
        }
        // A comparison of two empty results would prove nothing.
        if rows == 0 {
            failures.push(format!("{label} {}: the reference has no rows", q.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// 400 events per second of event time: 60 000 events span 150 s, so there are many
/// windows and sessions, and auctions last up to a few seconds.
fn config(seed: u64, out_of_order_group: u64) -> NexmarkConfig {
    NexmarkConfig {
        seed,
        rate: 400,
        out_of_order_group,
        ..NexmarkConfig::default()
    }
}

#[test]
fn every_query_equals_duckdb_in_order() {
    check_all(&config(7, 1), 60_000, "in order");
}

#[test]
fn every_query_equals_duckdb_out_of_order() {
    // Groups of 1 000 events (2.5 s of event time) are emitted permuted.
    let cfg = config(11, 1_000);
    check_all(&cfg, 60_000, "out of order");
}
