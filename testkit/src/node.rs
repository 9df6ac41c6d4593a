//! A `starling node` process for tests and benchmarks: started on OS-chosen ports with a
//! temporary data directory, its start line read for its addresses, signalled, restarted on
//! what it left, and spoken to with raw HTTP.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A node running as a child process; killed when dropped.
pub struct NodeProc {
    pub child: Child,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    /// The line the node printed on start (addresses, QUIC fingerprint).
    pub banner: String,
}

impl NodeProc {
    /// Starts `starling node --http 127.0.0.1:0 --data-dir <tmp> --workers 2 <extra>`.
    pub fn start(extra: &[&str]) -> NodeProc {
        NodeProc::start_in(tempfile::tempdir().expect("temp dir"), extra)
    }

    /// Like [`NodeProc::start`], on an existing directory (`<dir>/data` is the data dir), so a
    /// node can be restarted on what a previous one left.
    pub fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> NodeProc {
        NodeProc::spawn(
            Command::new(crate::bin::starling()),
            "127.0.0.1",
            dir,
            extra,
        )
    }

    /// Starts `starling node` through `command` (the binary itself, or a wrapper such as
    /// `ip netns exec NS <binary>`), listening on `ip` with OS-chosen ports.
    pub fn spawn(
        mut command: Command,
        ip: &str,
        dir: tempfile::TempDir,
        extra: &[&str],
    ) -> NodeProc {
        // Appended to, so the log of a restarted node follows its predecessor's.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.path().join("node.log"))
            .expect("log file");
        let any_port = format!("{ip}:0");
        let mut child = command
            .args([
                "node",
                "--http",
                &any_port,
                "--quic",
                &any_port,
                "--workers",
                "2",
                "--data-dir",
            ])
            .arg(dir.path().join("data"))
            .args(extra)
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
            let mut rest = Vec::new();
            let _ = r.read_to_end(&mut rest);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("node prints its address");
        let addr = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("http="))
            .unwrap_or_else(|| {
                let _ = child.wait();
                panic!(
                    "no http= in {line:?}; the node said:\n{}",
                    std::fs::read_to_string(dir.path().join("node.log")).unwrap_or_default()
                )
            })
            .parse()
            .expect("address parses");
        NodeProc {
            child,
            addr,
            dir,
            banner: line,
        }
    }

    /// A `key=value` field of the start banner (`quic`, `quic_fingerprint`, ...).
    pub fn banner_field(&self, key: &str) -> String {
        let prefix = format!("{key}=");
        self.banner
            .split_whitespace()
            .find_map(|w| w.strip_prefix(prefix.as_str()))
            .unwrap_or_else(|| panic!("no {key}= in {:?}", self.banner))
            .to_string()
    }

    /// `http://ADDR`.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://ADDR{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        let st = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(st.success());
    }

    /// Waits up to `limit` for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// SIGKILLs the node and gives back its directory for a restart.
    pub fn sigkill(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dir = tempfile::TempDir::new().expect("temp dir");
        std::mem::replace(&mut self.dir, dir)
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// The node's log (stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("node.log")).unwrap_or_default()
    }

    /// One raw HTTP/1.1 exchange over a fresh TCP connection: returns (status, body text).
    /// Sends `Connection: close` and reads until the node closes.
    pub fn raw(&self, request: &[u8]) -> (u16, String) {
        raw_exchange(self.addr, request)
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes `request` on a new connection and reads the whole answer (until close or 10 s).
pub fn raw_exchange(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(request);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => break,
        }
        if let Some(text) = complete_response(&buf) {
            return text;
        }
    }
    parse_response(&buf)
}

/// Parses a response once its body is complete (Content-Length known).
fn complete_response(buf: &[u8]) -> Option<(u16, String)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))?
        .trim()
        .parse()
        .ok()?;
    if buf.len() >= end + 4 + len {
        Some(parse_response(&buf[..end + 4 + len]))
    } else {
        None
    }
}

fn parse_response(buf: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Runs the `starling` CLI against `base`; returns (exit code, stdout, stderr).
pub fn cli(base: &str, args: &[&str], stdin: Option<&[u8]>) -> (i32, String, String) {
    let mut child = Command::new(crate::bin::starling())
        .args(args)
        .env("STARLING_NODE", base)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starling runs");
    if let Some(input) = stdin {
        let mut w = child.stdin.take().unwrap();
        let input = input.to_vec();
        std::thread::spawn(move || {
            let _ = w.write_all(&input);
        });
    }
    let out = child.wait_with_output().expect("output");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
