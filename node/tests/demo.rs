//! `starling demo` runs as a real process (shortened) and its output adds up.

use std::process::Command;

#[test]
fn demo_runs_and_its_summary_adds_up() {
    let out = Command::new(env!("CARGO_BIN_EXE_starling"))
        .args(["demo", "--seconds", "12", "--speed", "30", "--rate", "60"])
        .output()
        .expect("starling runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("a node on http://127.0.0.1:"), "{stdout}");
    assert!(stdout.contains("minute 00:00:00:"), "{stdout}");
    assert!(stdout.contains("ESCALATE user-"), "{stdout}");
    let summary = stdout
        .lines()
        .find(|l| l.starts_with("summary:"))
        .expect("a summary line");
    let nums: Vec<u64> = summary
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    // published, out of order, too late, results, corrections, escalations, late seen,
    // engine-counted late, counted in windows, open entries.
    let (published, too_late, late_seen, engine_late, counted, open) =
        (nums[0], nums[2], nums[6], nums[7], nums[8], nums[9]);
    assert!(published > 500, "{summary}");
    assert_eq!(late_seen, engine_late, "{summary}");
    assert!(late_seen <= too_late, "{summary}");
    assert_eq!(
        counted + late_seen,
        published,
        "every message is counted once or reported late: {summary}"
    );
    assert_eq!(open, 0, "{summary}");
}

#[test]
fn usage_errors_exit_with_2_and_runtime_errors_with_1() {
    let bad = Command::new(env!("CARGO_BIN_EXE_starling"))
        .args(["demo", "--seconds", "x"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let missing = Command::new(env!("CARGO_BIN_EXE_starling"))
        .args(["check", "/nonexistent/def.yaml"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read"));
    let ok = Command::new(env!("CARGO_BIN_EXE_starling"))
        .args([
            "check",
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../dataflows/agents/support_desk.yaml"
            ),
        ])
        .output()
        .unwrap();
    assert!(ok.status.success());
    assert!(String::from_utf8_lossy(&ok.stdout).contains("output escalations from escalate"));
}
