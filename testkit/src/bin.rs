//! The `starling` binary the tests and benchmarks start.
//!
//! It belongs to the node crate, so cargo does not build it for other crates' tests. It
//! lives in the same target directory and profile as the running test or benchmark; the first
//! call in a process runs `cargo build -p starling-node --bin starling` there with the cargo
//! that runs the tests (`$CARGO`, inheriting `CARGO_TARGET_DIR`), so the node under test is
//! never older than the source: a no-op when it is up to date. `STARLING_BIN` names a binary
//! to use instead.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The `starling` binary, built or brought up to date once per test process.
pub fn starling() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("STARLING_BIN") {
            return PathBuf::from(p);
        }
        // Test binaries live in target/<profile>/deps, benchmarks in target/<profile>.
        let exe = std::env::current_exe().expect("the running executable has a path");
        let mut dir = exe.parent().expect("binary has a directory").to_path_buf();
        if dir.file_name().is_some_and(|n| n == "deps") {
            dir.pop();
        }
        let bin = dir.join(format!("starling{}", std::env::consts::EXE_SUFFIX));
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let workspace = crate::reference::repo();
        let mut cmd = Command::new(cargo);
        cmd.current_dir(&workspace).args([
            "build",
            "--quiet",
            "-p",
            "starling-node",
            "--bin",
            "starling",
        ]);
        if dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        match cmd.status() {
            Ok(status) => assert!(status.success(), "building the starling binary failed"),
            // No cargo here (the test binary was run by hand): use what was built.
            Err(e) => eprintln!("cannot run cargo ({e}); using {} as it is", bin.display()),
        }
        assert!(bin.exists(), "{} is missing", bin.display());
        bin
    })
}
