//! A `starling node` process for tests and benchmarks: started on OS-chosen ports with a
//! temporary data directory, its start line read for its addresses, signalled, restarted on
//! what it left, and spoken to with raw HTTP. [`Launch`] holds what benchmarks set besides
//! (worker count, start-line wait, stderr, environment) and reports a failed start as an error.

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
    /// Starts `starling node --http 127.0.0.1:0 --data-dir <tmp> --workers 2 <extra>`
    /// ([`Launch::default`]).
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

    /// Like [`NodeProc::start_in`], with HTTP and QUIC at `http` and `quic` rather than on
    /// OS-chosen ports: a node restarted at the addresses its first start got (give
    /// `--gossip` and `--peer` in `extra` too, for a cluster member).
    pub fn start_in_at(
        dir: tempfile::TempDir,
        http: SocketAddr,
        quic: SocketAddr,
        extra: &[&str],
    ) -> NodeProc {
        Launch::default()
            .spawn_at(
                Command::new(crate::bin::starling()),
                (&http.to_string(), &quic.to_string()),
                dir,
                extra,
            )
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts `starling node` through `command` (the binary itself, or a wrapper such as
    /// `ip netns exec NS <binary>`), listening on `ip` with OS-chosen ports.
    pub fn spawn(command: Command, ip: &str, dir: tempfile::TempDir, extra: &[&str]) -> NodeProc {
        Launch::default()
            .spawn(command, ip, dir, extra)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// A `key=value` field of the start banner (`quic`, `quic_fingerprint`, ...).
    pub fn banner_field(&self, key: &str) -> String {
        self.banner_value(key)
            .unwrap_or_else(|| panic!("no {key}= in {:?}", self.banner))
            .to_string()
    }

    /// Like [`NodeProc::banner_field`], `None` when the banner lacks the field.
    pub fn banner_value(&self, key: &str) -> Option<&str> {
        banner_value(&self.banner, key)
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

/// How to start a node, beyond what [`NodeProc::start`] fixes. The default is what
/// [`NodeProc::start`] does; benchmarks size their nodes, wait longer, may show the node's
/// warnings, and get a failed start back as an error rather than a panic.
#[derive(Clone, Debug)]
pub struct Launch {
    /// `--workers` (2).
    pub workers: usize,
    /// How long to wait for the start line (30 s).
    pub banner_wait: Duration,
    /// The node's stderr goes to this process's stderr instead of `<dir>/node.log` (which
    /// [`NodeProc::log`] then does not have).
    pub inherit_stderr: bool,
    /// Variables taken out of the node's environment, so a setting in the caller's shell does
    /// not reach it (`STARLING_CONFIG`). Empty passes the caller's `STARLING_*` settings on.
    pub env_remove: Vec<&'static str>,
}

impl Default for Launch {
    fn default() -> Launch {
        Launch {
            workers: 2,
            banner_wait: Duration::from_secs(30),
            inherit_stderr: false,
            env_remove: vec!["STARLING_CONFIG"],
        }
    }
}

impl Launch {
    /// Starts `starling node` ([`crate::bin::try_starling`]) on 127.0.0.1 with OS-chosen
    /// ports and `<dir>/data` as its data directory.
    pub fn start_in(&self, dir: tempfile::TempDir, extra: &[&str]) -> Result<NodeProc, String> {
        let bin = crate::bin::try_starling()?;
        self.spawn(Command::new(bin), "127.0.0.1", dir, extra)
    }

    /// Starts `starling node` through `command`, listening on `ip` with OS-chosen ports, and
    /// reads its start line. On failure no process is left behind and the error carries what
    /// the node said.
    pub fn spawn(
        &self,
        command: Command,
        ip: &str,
        dir: tempfile::TempDir,
        extra: &[&str],
    ) -> Result<NodeProc, String> {
        let any_port = format!("{ip}:0");
        self.spawn_at(command, (&any_port, &any_port), dir, extra)
    }

    /// Like [`Launch::spawn`], with HTTP and QUIC listening at `(http, quic)` (`IP:PORT`,
    /// port 0 for one the OS picks).
    pub fn spawn_at(
        &self,
        mut command: Command,
        (http, quic): (&str, &str),
        dir: tempfile::TempDir,
        extra: &[&str],
    ) -> Result<NodeProc, String> {
        let log_path = dir.path().join("node.log");
        let stderr = if self.inherit_stderr {
            Stdio::inherit()
        } else {
            // Appended to, so the log of a restarted node follows its predecessor's.
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .map_err(|e| format!("{}: {e}", log_path.display()))?;
            Stdio::from(log)
        };
        let said = || {
            if self.inherit_stderr {
                "(its stderr is above)".to_string()
            } else {
                std::fs::read_to_string(&log_path).unwrap_or_default()
            }
        };
        command
            .args(["node", "--http", http, "--quic", quic, "--workers"])
            .arg(self.workers.to_string())
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(extra);
        for var in &self.env_remove {
            command.env_remove(var);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("starling node does not start ({command:?}): {e}"))?;
        let fail = |mut child: Child, why: String| {
            let _ = child.kill();
            let _ = child.wait();
            Err(format!("{why}; the node said:\n{}", said()))
        };
        let Some(stdout) = child.stdout.take() else {
            return fail(child, "no stdout from the node".into());
        };
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
        let Ok(line) = rx.recv_timeout(self.banner_wait) else {
            return fail(
                child,
                format!(
                    "the node printed no start line within {:?}",
                    self.banner_wait
                ),
            );
        };
        let Some(addr) = banner_value(&line, "http").and_then(|a| a.parse().ok()) else {
            return fail(child, format!("no http= address in {line:?}"));
        };
        Ok(NodeProc {
            child,
            addr,
            dir,
            banner: line,
        })
    }
}

/// The value of `key=` in a start line.
fn banner_value<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
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

#[cfg(test)]
mod tests {
    use super::banner_value;

    #[test]
    fn banner_fields_match_whole_keys() {
        let line = "starling node listening: http=127.0.0.1:1 quic=127.0.0.1:2 workers=2 \
                    quic_fingerprint=ab:cd gossip=127.0.0.1:3\n";
        assert_eq!(banner_value(line, "http"), Some("127.0.0.1:1"));
        assert_eq!(banner_value(line, "quic"), Some("127.0.0.1:2"));
        assert_eq!(banner_value(line, "quic_fingerprint"), Some("ab:cd"));
        assert_eq!(banner_value(line, "gossip"), Some("127.0.0.1:3"));
        assert_eq!(banner_value(line, "peer"), None);
        assert_eq!(banner_value(line, "qui"), None);
    }
}
