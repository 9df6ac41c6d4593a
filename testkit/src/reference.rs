//! The Python interpreter with DuckDB that the Nexmark reference check compares against.
//!
//! `bench/reference/setup.sh` creates a virtual environment under `target/` on first use.
//! Several test binaries (and several tests in one binary) may ask for it at once on a fresh
//! clone; two `python3 -m venv` runs on one directory fail with `File exists`. Every caller
//! therefore takes an exclusive lock on a file beside the environment first, so exactly one
//! process creates it and the others wait, then find it ready.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository's root (this crate sits one level below it).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// The interpreter that has `duckdb`: `STARLING_REFERENCE_PYTHON` if set, otherwise the
/// environment `bench/reference/setup.sh` makes (created on first use, under a lock).
pub fn python() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("STARLING_REFERENCE_PYTHON") {
        return Ok(PathBuf::from(p));
    }
    let venv = std::env::var_os("STARLING_REFERENCE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target").join("reference-venv"));
    if let Some(dir) = venv.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let lock_path = venv.with_extension("lock");
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| format!("{}: {e}", lock_path.display()))?;
    lock.lock()
        .map_err(|e| format!("locking {}: {e}", lock_path.display()))?;
    let out = Command::new("bash")
        .arg(repo().join("bench/reference/setup.sh"))
        .env("STARLING_REFERENCE_VENV", &venv)
        .output()
        .map_err(|e| format!("cannot run bash: {e}"))?;
    // Dropping the file releases the lock; the environment is complete by now.
    drop(lock);
    if !out.status.success() {
        return Err(format!(
            "bench/reference/setup.sh failed (DuckDB is needed for the reference check):\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}
