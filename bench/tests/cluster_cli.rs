//! `starling-bench cluster` as a user runs it, with tiny sizes so the runner cannot rot: one
//! round of 1 node against 3, three joins, a hand-off under load; one JSON object out. The
//! benchmark finds or builds the `starling` binary beside it itself (`starling_testkit::bin`).

use std::process::Command;

#[test]
fn tiny_cluster_run_reports_every_part() {
    let out = Command::new(env!("CARGO_BIN_EXE_starling-bench"))
        .args([
            "cluster",
            "--events",
            "4000",
            "--rounds",
            "1",
            "--connections",
            "3",
            "--streams",
            "1",
            "--batch",
            "500",
            "--shards",
            "16",
            "--nodes",
            "3",
            "--handoff-rate",
            "5000",
            "--json",
        ])
        .output()
        .expect("starling-bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let r: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");

    let runs = r["throughput"]["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 2, "{r:#}");
    assert_eq!(runs[0]["nodes"], 1);
    assert_eq!(runs[1]["nodes"], 3);
    for run in runs {
        assert_eq!(run["events"], 4000, "{run}");
        assert!(run["events_per_sec"].as_f64().unwrap_or(0.0) > 0.0, "{run}");
        assert!(run["ack_p99_us"].as_u64().unwrap_or(0) >= run["ack_p50_us"].as_u64().unwrap_or(1));
    }
    assert!(
        r["throughput"]["ratio_cluster_to_single"]
            .as_f64()
            .unwrap_or(0.0)
            > 0.0
    );

    let joins = r["convergence"]["joins"].as_array().expect("joins");
    assert_eq!(joins.len(), 2, "{r:#}");
    for (j, nth) in joins.iter().zip([2, 3]) {
        assert_eq!(j["nth"], nth);
        let (listed, settled) = (j["listed_ms"].as_f64(), j["settled_ms"].as_f64());
        assert!(listed.unwrap_or(-1.0) >= 0.0 && settled >= listed, "{j}");
        assert!(j["shards"].as_u64().unwrap_or(0) > 0, "{j}");
    }

    let h = &r["handoff"];
    for part in ["join", "leave"] {
        // 16 shards: a 3rd node takes about a third, and gives them back when it leaves.
        let moved = h[part]["shards_moved"].as_u64().unwrap_or(0);
        assert!((1..=16).contains(&moved), "{part}: {h:#}");
        assert!(
            h[part]["ms_per_shard"].as_f64().unwrap_or(0.0) > 0.0,
            "{h:#}"
        );
    }
    assert!(h["published"].as_u64().unwrap_or(0) > 0, "{h:#}");
    assert_eq!(
        h["failures"], 0,
        "publishes failed during planned moves: {h:#}"
    );
}

#[test]
fn bad_sizes_are_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_starling-bench"))
        .args(["cluster", "--nodes", "1"])
        .output()
        .expect("starling-bench runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--nodes"), "{stderr}");
}
