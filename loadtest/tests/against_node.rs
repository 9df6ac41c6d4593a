//! `starling-loadtest` against a real `starling node` process: short runs over HTTP and QUIC
//! pass the exactly-once check; a deliberately withheld or doubled event makes it fail; bad
//! arguments and unreachable nodes are clear errors with a non-zero exit, never a panic.

mod common;

use std::time::{Duration, Instant};

use common::{finish, loadtest, spawn_loadtest, Node, Run};
use serde_json::Value as Json;

fn report(run: &Run) -> Json {
    serde_json::from_str(run.stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON object ({e}):\n{}\nstderr:\n{}",
            run.stdout, run.stderr
        )
    })
}

/// Sanity of the figures every successful run reports.
fn assert_sensible(j: &Json, events: u64) {
    assert_eq!(j["events_acknowledged"], events, "{j:#}");
    assert_eq!(j["check"]["status"], "ok", "{j:#}");
    assert_eq!(j["check"]["acknowledged"], events);
    assert_eq!(j["check"]["counted"], events);
    assert_eq!(j["check"]["missing"], 0);
    assert_eq!(j["check"]["duplicated"], 0);
    assert!(j["events_per_sec"].as_f64().unwrap() > 0.0);
    let l = &j["latency_us"];
    let p: Vec<u64> = ["p50", "p90", "p99", "p99_9", "max"]
        .iter()
        .map(|k| l[k].as_u64().unwrap())
        .collect();
    // A localhost round trip through the node takes well over 10 µs.
    assert!(p[0] >= 10, "{l}");
    assert!(
        p.windows(2).all(|w| w[0] <= w[1]),
        "percentiles not ordered: {l}"
    );
    assert!(l["batches"].as_u64().unwrap() > 0);
}

#[test]
fn http_run_counts_every_acknowledged_event_once() {
    let node = Node::start();
    let run = loadtest(&[
        "--node",
        &node.http,
        "--protocol",
        "http",
        "--events",
        "3000",
        "--batch",
        "100",
        "--connections",
        "3",
        "--keys",
        "50",
        "--distribution",
        "zipf:1.1",
        "--jitter-ms",
        "200",
        "--json",
        "-",
    ]);
    assert_eq!(
        run.code,
        0,
        "stderr:\n{}\nnode:\n{}",
        run.stderr,
        node.log()
    );
    let j = report(&run);
    assert_sensible(&j, 3000);
    assert_eq!(j["protocol"], "http");
    assert_eq!(j["distribution"], "zipf:1.1");
    assert!(
        run.stderr
            .contains("check OK: 3000 acknowledged, 3000 counted exactly once"),
        "{}",
        run.stderr
    );
}

#[test]
fn quic_run_at_a_fixed_rate_counts_every_acknowledged_event_once() {
    let node = Node::start();
    let run = loadtest(&[
        "--node",
        &node.http,
        "--protocol",
        "quic",
        "--quic",
        &node.quic,
        "--fingerprint",
        &node.fingerprint,
        "--rate",
        "4000",
        "--duration",
        "1s",
        "--batch",
        "100",
        "--connections",
        "2",
        "--keys",
        "200",
        "--jitter-ms",
        "50",
        "--json",
        "-",
    ]);
    assert_eq!(
        run.code,
        0,
        "stderr:\n{}\nnode:\n{}",
        run.stderr,
        node.log()
    );
    let j = report(&run);
    // 4000 events/s for 1 s in batches of 100: 40 batches, due every 25 ms.
    assert_sensible(&j, 4000);
    assert_eq!(j["protocol"], "quic");
    assert_eq!(j["rate"], "4000/s");
    let elapsed = j["elapsed_s"].as_f64().unwrap();
    assert!((0.9..5.0).contains(&elapsed), "paced run took {elapsed} s");
}

#[test]
fn a_withheld_event_fails_the_check_with_its_count() {
    let node = Node::start();
    let json = node.dir().join("report.json");
    let run = loadtest(&[
        "--node",
        &node.http,
        "--events",
        "1000",
        "--batch",
        "50",
        "--connections",
        "2",
        "--keys",
        "20",
        "--fault-skip-events",
        "7",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(
        run.code, 1,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    assert!(
        run.stdout
            .contains("check FAILED: 1000 acknowledged, 993 counted: 7 missing, 0 duplicated"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("fault injection: 7 events"),
        "{}",
        run.stdout
    );
    let j: Json = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(j["check"]["status"], "failed");
    assert_eq!(j["check"]["missing"], 7);
    assert_eq!(j["events_withheld"], 7);
    let listed: u64 = j["check"]["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["acknowledged"].as_u64().unwrap() - d["distinct"].as_u64().unwrap())
        .sum();
    assert_eq!(listed, 7, "{j:#}");
}

#[test]
fn an_event_sent_twice_fails_the_check_as_duplicated() {
    let node = Node::start();
    let run = loadtest(&[
        "--node",
        &node.http,
        "--protocol",
        "quic",
        "--quic",
        &node.quic,
        "--fingerprint",
        &node.fingerprint,
        "--events",
        "500",
        "--batch",
        "100",
        "--keys",
        "10",
        "--fault-duplicate-events",
        "4",
        "--json",
        "-",
    ]);
    assert_eq!(
        run.code, 1,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    let j = report(&run);
    assert_eq!(j["check"]["status"], "failed");
    assert_eq!(j["check"]["duplicated"], 4, "{j:#}");
    assert_eq!(j["check"]["missing"], 0, "{j:#}");
    assert_eq!(j["check"]["counted"], 504, "{j:#}");
    assert!(
        run.stderr
            .contains("500 acknowledged, 504 counted: 0 missing, 4 duplicated"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_quic_port_nobody_answers_is_a_clear_error() {
    let node = Node::start();
    let closed = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().to_string()
    };
    let run = loadtest(&[
        "--node",
        &node.http,
        "--protocol",
        "quic",
        "--quic",
        &closed,
        "--fingerprint",
        &node.fingerprint,
        "--events",
        "100",
        "--request-timeout",
        "2s",
    ]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains(&closed), "{}", run.stderr);
    assert!(run.stderr.contains("--quic"), "{}", run.stderr);
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
}

#[test]
fn a_node_that_dies_mid_run_stops_the_run_with_an_error_and_a_report() {
    let mut node = Node::start();
    let child = spawn_loadtest(&[
        "--node",
        &node.http,
        "--duration",
        "60s",
        "--rate",
        "2000",
        "--connections",
        "2",
        "--request-timeout",
        "3s",
    ]);
    std::thread::sleep(Duration::from_millis(1500));
    node.kill();
    let killed = Instant::now();
    let run = finish(child);
    assert!(
        killed.elapsed() < Duration::from_secs(30),
        "the run went on for {:?} after the node died",
        killed.elapsed()
    );
    assert_eq!(
        run.code, 2,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    assert!(
        run.stdout.contains("publishing stopped early"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("check: could not be made"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr.contains("exactly-once check could not be made"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
}

#[test]
fn an_unreachable_node_is_a_clear_error() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{closed}");
    let run = loadtest(&["--node", &url, "--events", "10"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("cannot reach the node"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("--node"), "{}", run.stderr);
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
}

#[test]
fn bad_arguments_are_refused_with_a_reason() {
    let cases: &[(&[&str], &str)] = &[
        (&["--rate", "0"], "zero"),
        (&["--rate", "-5"], "negative"),
        (&["--rate", "fast"], "not a whole number"),
        (&["--events", "0"], "zero"),
        (&["--distribution", "normal"], "unknown distribution"),
        (&["--distribution", "zipf:-1"], "Zipf exponent"),
        (
            &["--protocol", "carrier-pigeon"],
            "possible values: http, quic",
        ),
        (&["--query", "sum"], "possible values: count, none"),
        (&["--duration", "10"], "not a duration"),
        (&["--connections", "0"], "--connections"),
        (&["--protocol", "quic"], "--quic HOST:PORT"),
        (&["--node", "localhost:7070"], "not an HTTP URL"),
    ];
    for (args, why) in cases {
        let run = loadtest(args);
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert!(
            run.stderr.contains(why),
            "{args:?}: expected `{why}` in:\n{}",
            run.stderr
        );
        assert!(!run.stderr.contains("panicked"), "{args:?}: {}", run.stderr);
        assert!(run.stdout.is_empty(), "{args:?}: {}", run.stdout);
    }
}
