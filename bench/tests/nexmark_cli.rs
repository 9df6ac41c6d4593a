//! `starling-bench nexmark` as a user runs it: a small run of the benchmark queries in
//! process and through a real node over QUIC and HTTP (so the runner cannot rot), and clear
//! errors with a non-zero exit for what a user can get wrong. The benchmark finds or builds
//! the `starling` binary beside it itself (`starling_testkit::bin`).

use std::process::Command;

fn bench() -> Command {
    Command::new(env!("CARGO_BIN_EXE_starling-bench"))
}

fn run(args: &[&str]) -> (bool, String, String) {
    let out = bench().args(args).output().expect("starling-bench runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn small_in_process_run_prints_a_figure_per_query() {
    let (ok, out, err) = run(&[
        "nexmark",
        "--query",
        "q0,q5,q7,q8",
        "--events",
        "20000",
        "--rate",
        "1000",
        "--json",
    ]);
    assert!(ok, "{err}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(lines.len(), 4, "{out}");
    for (l, q) in lines.iter().zip(["q0", "q5", "q7", "q8"]) {
        assert_eq!(l["query"], q);
        assert_eq!(l["events"], 20_000);
        assert!(l["events_per_sec"].as_f64().unwrap_or(0.0) > 0.0, "{l}");
    }
    // q0 passes every bid through: 46 of every 50 events.
    assert_eq!(lines[0]["result_updates"], 18_400, "{}", lines[0]);
    assert!(lines[1]["ratio_to_q0"].is_f64());
}

#[test]
fn generated_files_read_back_to_the_same_results() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (ok, _, err) = run(&[
        "nexmark-generate",
        "--events",
        "20000",
        "--rate",
        "1000",
        "--out",
        data.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let from_files = dir.path().join("files.ndjson");
    let generated = dir.path().join("generated.ndjson");
    for (extra, out) in [
        (vec!["--input", data.to_str().unwrap()], &from_files),
        (vec![], &generated),
    ] {
        let mut args = vec![
            "nexmark", "--query", "q5", "--events", "20000", "--rate", "1000",
        ];
        args.extend(extra);
        args.extend(["--output", out.to_str().unwrap()]);
        let (ok, _, err) = run(&args);
        assert!(ok, "{err}");
    }
    let a = std::fs::read_to_string(&from_files).unwrap();
    let b = std::fs::read_to_string(&generated).unwrap();
    assert!(a.lines().count() > 10, "{a}");
    assert_eq!(a, b);
}

#[test]
fn runs_through_a_node_over_quic_and_http() {
    for via in ["quic", "http"] {
        let (ok, out, err) = run(&[
            "nexmark", "--query", "q7", "--events", "20000", "--rate", "1000", "--batch", "2000",
            "--via", via, "--json",
        ]);
        assert!(ok, "via {via}: {err}");
        let v: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON");
        assert_eq!(v["via"], via);
        assert_eq!(v["events"], 20_000);
        assert!(v["ack_p99_us"].as_u64().unwrap_or(0) > 0, "{v}");
    }
}

#[test]
fn mistakes_get_clear_errors_and_a_failing_exit() {
    let cases: &[(&[&str], &str)] = &[
        (&["nexmark", "--query", "q99"], "unknown query `q99`"),
        (&["nexmark", "--query", "q6"], "known: q0, q1"),
        (&["nexmark", "--rate", "0", "--events", "10"], "rate"),
        (&["nexmark", "--events", "0"], "--events must be at least 1"),
        (&["nexmark", "--events", "-5"], "-5"),
        (&["nexmark", "--via", "carrier-pigeon"], "carrier-pigeon"),
        (
            &["nexmark", "--input", "/nonexistent/dir", "--events", "10"],
            "",
        ),
        (
            &["nexmark-generate", "--rate", "0", "--out", "/tmp/x"],
            "rate",
        ),
    ];
    for (args, needle) in cases {
        let (ok, _, err) = run(args);
        assert!(!ok, "{args:?} should fail");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

/// Input files a user may hand over: broken JSON, events that do not fit the topic, a
/// binary file, a very long line. Each is refused with the file and line, never a panic.
#[test]
fn bad_input_files_are_refused_with_the_place() {
    let good = r#"{"auction":1000,"bidder":1001,"price":5,"channel":"c","url":"u","date_time":1700000000000,"extra":""}"#;
    let long = format!("{{\"auction\": {}}}", "9".repeat(1 << 20));
    let cases: Vec<(String, &str)> = vec![
        (format!("{good}\n{{\"auction\": 1,\n"), "bid.ndjson:2"),
        (
            format!("{good}\n{}\n", good.replace("1000,", "\"x\",")),
            "auction",
        ),
        (
            format!(
                "{good}\n{}\n",
                good.replace("\"extra\":\"\"", "\"extra\":\"\",\"evil\":1")
            ),
            "evil",
        ),
        (format!("{good}\n[1,2,3]\n"), "object"),
        ("\u{0}\u{1}\u{2}\u{ff}garbage".to_string(), "bid.ndjson:1"),
        (long, "bid.ndjson:1"),
    ];
    for (text, needle) in cases {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("bid.ndjson"), &text).unwrap();
        let (ok, _, err) = run(&[
            "nexmark",
            "--query",
            "q0",
            "--input",
            dir.path().to_str().unwrap(),
        ]);
        assert!(!ok, "{needle}: should fail");
        assert!(err.contains(needle), "{needle}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    let file = tempfile::NamedTempFile::new().unwrap();
    let (ok, _, err) = run(&[
        "nexmark-generate",
        "--events",
        "10",
        "--out",
        file.path().join("sub").to_str().unwrap(),
    ]);
    assert!(!ok && !err.contains("panicked"), "{err}");
}
