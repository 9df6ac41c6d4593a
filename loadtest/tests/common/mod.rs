//! Helpers for the tests against a real node: the node process comes from
//! `starling_testkit` (which builds the `starling` binary if needed); what is here runs the
//! load tester.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};

use starling_testkit::node::NodeProc;

/// This crate's binary.
pub const LOADTEST: &str = env!("CARGO_BIN_EXE_starling-loadtest");

/// A `starling node` child process with the addresses the load tester is given; killed when
/// dropped.
pub struct Node {
    proc: NodeProc,
    pub http: String,
    pub quic: String,
    pub fingerprint: String,
}

impl Node {
    /// Starts `starling node` on 127.0.0.1 with OS-chosen HTTP and QUIC ports.
    pub fn start() -> Node {
        let proc = NodeProc::start(&[]);
        Node {
            http: proc.base(),
            quic: proc.banner_field("quic"),
            fingerprint: proc.banner_field("quic_fingerprint"),
            proc,
        }
    }

    /// The node's temporary directory (its data dir is `data/` inside).
    pub fn dir(&self) -> &std::path::Path {
        self.proc.dir.path()
    }

    /// Kills the node (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.proc.child.kill();
        let _ = self.proc.child.wait();
    }

    /// The node's log (stderr).
    pub fn log(&self) -> String {
        self.proc.log()
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
