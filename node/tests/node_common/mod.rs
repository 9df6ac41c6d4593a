//! Helpers for the real-process node tests: start `starling node` on an OS-chosen port with a
//! temporary data directory, find its address, send it signals, wait for it to exit.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value as Json;

pub const BIN: &str = env!("CARGO_BIN_EXE_starling");

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
        NodeProc::spawn(Command::new(BIN), "127.0.0.1", dir, extra)
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
    let mut child = Command::new(BIN)
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

/// The clicks topic declaration as JSON.
pub fn clicks_topic(name: &str) -> Json {
    serde_json::json!({
        "name": name,
        "key": "user",
        "time": "ts",
        "fields": [
            {"name": "user", "type": "string"},
            {"name": "ts", "type": "timestamp"},
            {"name": "amount", "type": "int", "optional": true, "default": 1}
        ]
    })
}

/// A tumbling-window dataflow over `topic`: per user and 10 s window, count and sum.
pub fn window_yaml(name: &str, topic: &str) -> String {
    format!(
        r#"name: {name}
inputs:
  - id: c
    topic: {topic}
    watermark: {{max_delay: 0s, idle_timeout: 0s}}
nodes:
  - {{id: w, op: window, input: c, kind: tumbling, size: 10s}}
  - id: per_user
    op: aggregate
    input: w
    aggregates:
      - {{name: clicks, fn: count}}
      - {{name: spent, fn: sum, expr: amount}}
outputs:
  - {{name: out, from: per_user}}
"#
    )
}

/// Sum of every sample of a metric family whose line starts with `name` (`name{` or `name `).
pub fn metric_sum(text: &str, name: &str) -> Option<f64> {
    let mut found = false;
    let mut sum = 0.0;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(name.ends_with('}') || rest.starts_with('{') || rest.starts_with(' ')) {
            continue;
        }
        found = true;
        if let Some(v) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) {
            sum += v;
        }
    }
    found.then_some(sum)
}

/// Whether the metric family is declared (`# TYPE name`).
pub fn metric_declared(text: &str, name: &str) -> bool {
    text.lines()
        .any(|l| l.starts_with(&format!("# TYPE {name} ")))
}

/// Every event in a topic's log, for topics shaped like `clicks`: the `amount` field (a unique
/// id by the durability tests) → (the `user` field, how many times it is logged). Reads
/// every shard page by page over `GET /v1/topics/{topic}/log`; the first error answer is
/// returned as it came.
pub async fn read_log(
    node: &NodeProc,
    topic: &str,
) -> Result<std::collections::BTreeMap<u64, (String, usize)>, Json> {
    let http = reqwest::Client::new();
    let get = |path: String| {
        let http = http.clone();
        let url = node.url(&path);
        async move {
            http.get(url)
                .send()
                .await
                .expect("log read sent")
                .json::<Json>()
                .await
                .expect("log read answered JSON")
        }
    };
    let shards = get(format!("/v1/topics/{topic}/log")).await;
    let Some(list) = shards["shards"].as_array() else {
        return Err(shards);
    };
    let mut out: std::collections::BTreeMap<u64, (String, usize)> = Default::default();
    for s in list {
        let shard = s["shard"].as_u64().unwrap_or_default();
        let mut from = s["first_offset"].as_u64().unwrap_or_default();
        let next = s["next_offset"].as_u64().unwrap_or_default();
        while from < next {
            let page = get(format!(
                "/v1/topics/{topic}/log?shard={shard}&from={from}&limit=1000"
            ))
            .await;
            let Some(entries) = page["entries"].as_array() else {
                return Err(page);
            };
            for entry in entries {
                from = entry["offset"].as_u64().unwrap_or(u64::MAX - 1) + 1;
                for e in entry["events"].as_array().into_iter().flatten() {
                    let id = e["row"]["amount"].as_u64().unwrap_or_default();
                    let user = e["row"]["user"].as_str().unwrap_or_default().to_string();
                    out.entry(id).or_insert((user, 0)).1 += 1;
                }
            }
        }
    }
    Ok(out)
}
