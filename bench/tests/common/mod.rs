//! Helpers shared by the benchmark CLI tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

/// The `starling` binary beside `starling-bench` (where the in-node runs look for it),
/// built if this test runs before it was.
pub fn ensure_starling() {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_starling-bench"));
    if exe.with_file_name("starling").exists() {
        return;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "-p", "starling-node", "--bin", "starling"])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building the starling binary failed");
}
