//! The `starling` binary the tests and benchmarks start.
//!
//! It belongs to the node crate, so cargo does not build it for other crates' tests. It
//! lives in the same target directory and profile as the running test or benchmark; the first
//! call in a process runs `cargo build -p starling-node --bin starling` there with the cargo
//! that runs the tests (`$CARGO`, inheriting `CARGO_TARGET_DIR`; with `--release` when the
//! running binary is in a `release` directory, so a release `starling-bench` gets a release
//! node beside it), so the node under test is never older than the source: a no-op when it is
//! up to date. `STARLING_BIN` names a binary to use instead.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The `starling` binary, built or brought up to date once per test process.
pub fn starling() -> &'static Path {
    try_starling().unwrap_or_else(|e| panic!("{e}"))
}

/// Like [`starling`], with a failed build or a missing binary as an error instead of a panic
/// (for benchmarks, which report what went wrong). The answer is computed once per process.
pub fn try_starling() -> Result<&'static Path, String> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(find).as_deref().map_err(Clone::clone)
}

fn find() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("STARLING_BIN") {
        return Ok(PathBuf::from(p));
    }
    // Test binaries live in target/<profile>/deps, benchmarks in target/<profile>.
    let exe =
        std::env::current_exe().map_err(|e| format!("the running executable has no path: {e}"))?;
    let mut dir = exe
        .parent()
        .ok_or_else(|| format!("{} has no directory", exe.display()))?
        .to_path_buf();
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
        Ok(status) if status.success() => {}
        Ok(_) => return Err("building the starling binary failed".into()),
        // No cargo here (the binary was run by hand): use what was built.
        Err(e) => eprintln!("cannot run cargo ({e}); using {} as it is", bin.display()),
    }
    if !bin.exists() {
        return Err(format!("{} is missing", bin.display()));
    }
    Ok(bin)
}
