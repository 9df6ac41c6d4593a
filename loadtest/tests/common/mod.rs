//! Helpers for the tests against a real node: find (or build) the `starling` binary, start
//! `starling node` on OS-chosen ports with a temporary data directory, run the load tester.
//!
//! The `starling` binary belongs to the engine crate, so cargo does not build it for this
//! crate's tests. It lives next to this crate's binary (same target directory and profile);
//! the tests run `cargo build -p starling-node --bin starling` there once per test process
//! with the cargo that runs them (`$CARGO`, inheriting `CARGO_TARGET_DIR`), so the node under
//! test is never older than the source: a no-op when it is up to date. `STARLING_BIN` names
//! a binary to use instead.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// This crate's binary.
pub const LOADTEST: &str = env!("CARGO_BIN_EXE_starling-loadtest");

/// The `starling` binary, built or brought up to date once per test process.
pub fn starling_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("STARLING_BIN") {
            return PathBuf::from(p);
        }
        let dir = Path::new(LOADTEST)
            .parent()
            .expect("binary has a directory");
        let bin = dir.join(format!("starling{}", std::env::consts::EXE_SUFFIX));
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
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

/// A `starling node` child process; killed when dropped.
pub struct Node {
    child: Child,
    pub http: String,
    pub quic: String,
    pub fingerprint: String,
    pub dir: tempfile::TempDir,
}

impl Node {
    /// Starts `starling node` on 127.0.0.1 with OS-chosen HTTP and QUIC ports.
    pub fn start() -> Node {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = std::fs::File::create(dir.path().join("node.log")).expect("log file");
        let mut child = Command::new(starling_bin())
            .args([
                "node",
                "--http",
                "127.0.0.1:0",
                "--quic",
                "127.0.0.1:0",
                "--workers",
                "2",
            ])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .env_remove("STARLING_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("starling node starts");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            let _ = r.read_line(&mut line);
            let _ = tx.send(line);
            // Keep draining so the node never blocks on a full pipe.
            let _ = r.read_to_end(&mut Vec::new());
        });
        let banner = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the node prints its addresses");
        let field = |key: &str| {
            banner
                .split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .unwrap_or_else(|| {
                    panic!(
                        "no {key} in {banner:?}; the node said:\n{}",
                        std::fs::read_to_string(dir.path().join("node.log")).unwrap_or_default()
                    )
                })
                .to_string()
        };
        Node {
            http: format!("http://{}", field("http=")),
            quic: field("quic="),
            fingerprint: field("quic_fingerprint="),
            child,
            dir,
        }
    }

    /// Kills the node (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The node's log (stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("node.log")).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one run of the load tester gave.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the load tester with `args`.
pub fn loadtest(args: &[&str]) -> Run {
    finish(spawn_loadtest(args))
}

/// Starts the load tester with `args`, its output captured.
pub fn spawn_loadtest(args: &[&str]) -> Child {
    Command::new(LOADTEST)
        .args(args)
        .env_remove("STARLING_NODE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starling-loadtest runs")
}

/// Waits for a load tester started with [`spawn_loadtest`].
pub fn finish(child: Child) -> Run {
    let out = child.wait_with_output().expect("starling-loadtest output");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
