//! `starling-bench cluster`: what a cluster of `starling node` processes costs and how fast it
//! changes shape, on this machine (127.0.0.1, OS-chosen ports, temporary data directories).
//!
//! 1. **Throughput**: the same QUIC publish load (typed rows, a string key and a timestamp)
//!    into one node and into a 3-node cluster with the clients spread over the three (so
//!    about 2/3 of the events are forwarded to their shard's owner), alternating 1, 3, 1, 3 …
//!    with fresh nodes each round; events/s and publish→ack p50/p99.
//! 2. **Convergence**: from spawning a node with `--seed` until every node's `/v1/cluster`
//!    lists it, until it owns its first shard, and until the cluster is `settled`; for the
//!    2nd, 3rd, 4th … node.
//! 3. **Hand-off**: while a paced publisher runs into a windowed dataflow (per user, 10 s
//!    windows, so every moving shard carries open window state), a 3rd node joins a 2-node
//!    cluster and later leaves through `POST /v1/cluster/leave`; time until settled divided by
//!    the shards whose owner changed.
//!
//! 4. **Replication**: the throughput load into 3-node clusters with R = 1, 2, 3 (`acks =
//!    all`, the default), alternating, fresh nodes each run; events/s and ack p50/p99 as a
//!    ratio to R = 1 of the same round.
//!
//! Every child is killed when its [`Member`] is dropped, on error and on panic alike.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use hdrhistogram::Histogram;
use serde_json::{json, Value as Json};
use starling_node::client::http::HttpClient;
use starling_node::client::{QuicClient, Trust};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The topic every part publishes to.
const TOPIC: &str = "clicks";
/// How long a cluster may take to settle before the run fails.
const SETTLE_LIMIT: Duration = Duration::from_secs(120);
/// Between two polls of `/v1/cluster`.
const POLL: Duration = Duration::from_millis(10);

/// What `starling-bench cluster` runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// Events per throughput run.
    pub events: u64,
    /// Pairs of (1 node, 3 nodes) throughput runs.
    pub rounds: usize,
    /// QUIC connections (spread over the nodes).
    pub connections: usize,
    /// Publish operations in flight per connection.
    pub streams: usize,
    /// Events per publish.
    pub batch: usize,
    /// The nodes' `--durability`.
    pub durability: String,
    /// The nodes' `--shards`.
    pub shards: u32,
    /// The nodes' `--workers`.
    pub workers: usize,
    /// Grow the convergence cluster to this many nodes.
    pub nodes: usize,
    /// Events/s of the publisher running during hand-off.
    pub handoff_rate: u64,
    /// The replication part runs 3-node clusters with R = 1 … this (1: skipped).
    pub max_replication: u32,
}

impl Options {
    /// Refuses sizes the runs cannot use.
    pub fn check(&self) -> Result<()> {
        if self.events == 0
            || self.batch == 0
            || self.rounds == 0
            || self.connections == 0
            || self.streams == 0
        {
            bail!("--events, --batch, --rounds, --connections and --streams must be at least 1");
        }
        if self.shards == 0 || self.workers == 0 {
            bail!("--shards and --workers must be at least 1");
        }
        if self.nodes < 2 {
            bail!("--nodes must be at least 2 (the convergence part adds nodes up to it)");
        }
        if self.handoff_rate == 0 {
            bail!("--handoff-rate must be at least 1");
        }
        if !matches!(self.durability.as_str(), "none" | "batch" | "sync") {
            bail!("--durability must be none, batch or sync");
        }
        Ok(())
    }
}

/// A `starling node` child process; killed (and its data directory removed) on drop.
pub struct Member {
    child: Child,
    pub name: String,
    pub http: SocketAddr,
    pub quic: SocketAddr,
    pub fingerprint: String,
    /// The gossip address (`host:port`), when the node is a cluster member.
    pub gossip: Option<String>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// How to start a member.
#[derive(Clone, Debug)]
struct Spec {
    bin: PathBuf,
    name: String,
    workers: usize,
    durability: String,
    shards: u32,
    /// `Some(cluster id)` for a cluster member.
    cluster: Option<String>,
    seed: Option<String>,
    /// The cluster's `--replication` (0: not given).
    replication: u32,
}

impl Member {
    /// Starts the node and waits (up to 60 s) for its start banner.
    fn spawn(spec: &Spec) -> Result<Member> {
        let dir = tempfile::Builder::new()
            .prefix("starling-bench-cluster-")
            .tempdir()?;
        let log = dir.path().join("node.log");
        let log_file = std::fs::File::create(&log)?;
        let mut cmd = Command::new(&spec.bin);
        cmd.args(["node", "--http", "127.0.0.1:0", "--quic", "127.0.0.1:0"])
            .args(["--workers", &spec.workers.to_string()])
            .args(["--durability", &spec.durability])
            .args(["--shards", &spec.shards.to_string()])
            .arg("--data-dir")
            .arg(dir.path().join("data"));
        if let Some(id) = &spec.cluster {
            cmd.args(["--gossip", "127.0.0.1:0", "--cluster-id", id])
                .args(["--node-name", &spec.name]);
            if let Some(seed) = &spec.seed {
                cmd.args(["--seed", seed]);
            }
            if spec.replication > 0 {
                cmd.args(["--replication", &spec.replication.to_string()]);
            }
        }
        for var in ["STARLING_CONFIG", "STARLING_SEEDS", "STARLING_SHARDS"] {
            cmd.env_remove(var);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .spawn()
            .with_context(|| format!("cannot start {}", spec.bin.display()))?;
        let Some(stdout) = child.stdout.take() else {
            let _ = child.kill();
            let _ = child.wait();
            bail!("no stdout from the node");
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
        let line = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_default();
        let field = |key: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .map(str::to_string)
        };
        let parsed = (|| -> Option<(SocketAddr, SocketAddr, String)> {
            Some((
                field("http=")?.parse().ok()?,
                field("quic=")?.parse().ok()?,
                field("quic_fingerprint=")?,
            ))
        })();
        let Some((http, quic, fingerprint)) = parsed else {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "node {} did not print its addresses (banner {line:?}); it said:\n{}",
                spec.name,
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        let gossip = field("gossip=");
        if spec.cluster.is_some() && gossip.is_none() {
            let _ = child.kill();
            let _ = child.wait();
            bail!("node {} printed no gossip= address: {line:?}", spec.name);
        }
        Ok(Member {
            child,
            name: spec.name.clone(),
            http,
            quic,
            fingerprint,
            gossip,
            log,
            _dir: dir,
        })
    }

    /// Starts the node off the async runtime (the banner wait blocks).
    async fn start(spec: Spec) -> Result<Member> {
        tokio::task::spawn_blocking(move || Member::spawn(&spec)).await?
    }

    fn base(&self) -> String {
        format!("http://{}", self.http)
    }

    /// The node's stderr so far (for error messages).
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 exchange on a fresh connection (the cluster routes are not in
/// [`HttpClient`]); returns the status and the body as JSON.
async fn http_call(addr: SocketAddr, method: &str, path: &str) -> Result<(u16, Json)> {
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await?;
        Ok::<_, anyhow::Error>(raw)
    };
    let raw = tokio::time::timeout(Duration::from_secs(90), exchange)
        .await
        .map_err(|_| anyhow!("{method} {path} on {addr}: no answer within 90 s"))??;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("{method} {path} on {addr}: not an HTTP answer"))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("{method} {path} on {addr}: no status in {head:?}"))?;
    let mut body = raw[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        body = dechunk(&body)?;
    }
    let json = if body.is_empty() {
        Json::Null
    } else {
        serde_json::from_slice(&body)
            .unwrap_or_else(|_| Json::String(String::from_utf8_lossy(&body).into_owned()))
    };
    Ok((status, json))
}

/// The body of a chunked HTTP answer.
fn dechunk(mut raw: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| anyhow!("bad chunked body"))?;
        let size_text = String::from_utf8_lossy(&raw[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| anyhow!("bad chunk size {size_text:?}"))?;
        raw = &raw[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if raw.len() < size {
            bail!("truncated chunked body");
        }
        out.extend_from_slice(&raw[..size]);
        raw = raw.get(size + 2..).unwrap_or(&[]);
    }
}

/// `GET /v1/cluster` of one node.
async fn view(m: &Member) -> Result<Json> {
    let (status, v) = http_call(m.http, "GET", "/v1/cluster").await?;
    if status != 200 {
        bail!("GET /v1/cluster on {}: {status} {v}", m.name);
    }
    Ok(v)
}

/// Every node's view, or `None` if one did not answer.
async fn views(members: &[&Member]) -> Option<Vec<Json>> {
    let mut out = Vec::with_capacity(members.len());
    for m in members {
        out.push(view(m).await.ok()?);
    }
    Some(out)
}

fn member_names(v: &Json) -> Vec<String> {
    v["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["name"].as_str().map(str::to_string))
        .collect()
}

/// Shards a member owns, by name, in one view.
fn shards_of(v: &Json, name: &str) -> u64 {
    v["members"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["name"] == name)
        .and_then(|m| m["shards"].as_u64())
        .unwrap_or(0)
}

/// The owner of every shard (node id), in one view.
fn owners(v: &Json) -> BTreeMap<u64, Option<String>> {
    v["shards"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| {
            Some((
                s["shard"].as_u64()?,
                s["owner"].as_str().map(str::to_string),
            ))
        })
        .collect()
}

/// Shards whose owner differs between two tables.
fn moved(before: &BTreeMap<u64, Option<String>>, after: &BTreeMap<u64, Option<String>>) -> usize {
    after
        .iter()
        .filter(|(shard, owner)| before.get(shard) != Some(owner))
        .count()
}

/// Settled as the engine's tests define it: every node sees `n` members (all live), one
/// leader, every shard owned, nothing moving.
fn all_settled(vs: &[Json], n: usize) -> bool {
    let leaders: std::collections::BTreeSet<String> =
        vs.iter().map(|v| v["leader"].to_string()).collect();
    leaders.len() == 1
        && !leaders.contains("null")
        && vs.iter().all(|v| {
            let members = v["members"].as_array();
            members.map_or(0, Vec::len) == n
                && members.is_some_and(|m| m.iter().all(|m| m["state"] == "live"))
                && v["shards"]
                    .as_array()
                    .is_some_and(|s| s.iter().all(|e| !e["owner"].is_null()))
                && v["settled"] == true
        })
}

/// Waits until `all_settled` with `n` members; returns how long it took.
async fn wait_settled(members: &[&Member], n: usize) -> Result<Duration> {
    let start = Instant::now();
    loop {
        if let Some(vs) = views(members).await {
            if all_settled(&vs, n) {
                return Ok(start.elapsed());
            }
        }
        if start.elapsed() > SETTLE_LIMIT {
            let last = match members.first() {
                Some(m) => view(m)
                    .await
                    .map_or_else(|e| e.to_string(), |v| v.to_string()),
                None => String::new(),
            };
            bail!(
                "the cluster did not settle on {n} members within {SETTLE_LIMIT:?}; last view: {last}"
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Creates the benchmark topic through `admin` and waits until every node knows it.
async fn create_topic(admin: &Member, all: &[&Member]) -> Result<()> {
    let mut decl = starling_bench::publish::bench_topic();
    decl["name"] = json!(TOPIC);
    HttpClient::new(&admin.base())
        .create_topic(&decl)
        .await
        .with_context(|| format!("creating topic {TOPIC} on {}", admin.name))?;
    let start = Instant::now();
    for m in all {
        loop {
            let topics = HttpClient::new(&m.base()).topics().await?;
            if topics.to_string().contains(&format!("\"{TOPIC}\"")) {
                break;
            }
            if start.elapsed() > Duration::from_secs(30) {
                bail!("topic {TOPIC} did not reach {} within 30 s", m.name);
            }
            tokio::time::sleep(POLL).await;
        }
    }
    Ok(())
}

/// What a publisher saw.
#[derive(Debug)]
pub struct LoadResult {
    pub events: u64,
    pub elapsed: Duration,
    /// Publish→ack per batch (µs), outside and during membership changes.
    pub steady: Histogram<u64>,
    pub moving: Histogram<u64>,
    /// Publishes answered `busy`, `unavailable` or `stale_epoch` and sent again.
    pub retries: u64,
    /// Publishes that failed otherwise (with `keep_going`; otherwise the run fails).
    pub failures: u64,
    pub first_failure: Option<String>,
}

impl LoadResult {
    pub fn events_per_sec(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// A publish load: `clients` (one QUIC connection each), `streams` operations in flight per
/// connection, batches of `batch`, until `limit` batches or `stop`, paced to `rate` events/s
/// if given. `phase` set to 1 records latencies as "moving".
struct Load {
    clients: Vec<QuicClient>,
    streams: usize,
    batch: usize,
    limit: Option<u64>,
    rate: Option<u64>,
    stop: Arc<AtomicBool>,
    phase: Arc<AtomicU8>,
    keep_going: bool,
}

fn is_retryable(e: &starling_node::client::quic::ClientError) -> bool {
    matches!(e.code(), Some("busy" | "unavailable" | "stale_epoch"))
}

async fn run_load(load: Load) -> Result<LoadResult> {
    let rows = starling_bench::publish::wire_batches(load.batch, 16);
    let next = Arc::new(AtomicU64::new(0));
    let per_batch = load
        .rate
        .map(|r| Duration::from_secs_f64(load.batch as f64 / r.max(1) as f64));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for client in &load.clients {
        for _ in 0..load.streams.max(1) {
            let (client, rows, next) = (client.clone(), Arc::clone(&rows), Arc::clone(&next));
            let (stop, phase) = (Arc::clone(&load.stop), Arc::clone(&load.phase));
            let (limit, keep_going) = (load.limit, load.keep_going);
            tasks.push(tokio::spawn(async move {
                let mut steady = Histogram::<u64>::new(3).map_err(|e| anyhow!("{e}"))?;
                let mut moving = steady.clone();
                let (mut acked, mut retries, mut failures) = (0u64, 0u64, 0u64);
                let mut first_failure = None;
                loop {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if limit.is_some_and(|l| i >= l) {
                        break;
                    }
                    if let Some(p) = per_batch {
                        tokio::time::sleep_until((start + p.mul_f64(i as f64)).into()).await;
                    }
                    let during_move = phase.load(Ordering::Relaxed) == 1;
                    let batch = &rows[(i % rows.len() as u64) as usize];
                    let t = Instant::now();
                    let mut tries = 0;
                    let outcome = loop {
                        match client.publish(TOPIC, batch.clone()).await {
                            Err(e) if is_retryable(&e) && tries < 5_000 => {
                                tries += 1;
                                retries += 1;
                                tokio::time::sleep(Duration::from_millis(2)).await;
                            }
                            other => break other,
                        }
                    };
                    match outcome {
                        Ok(n) => {
                            if n != batch.len() as u64 {
                                bail!("{n} of {} events acknowledged", batch.len());
                            }
                            acked += n;
                            let us = t.elapsed().as_micros() as u64;
                            let h = if during_move || phase.load(Ordering::Relaxed) == 1 {
                                &mut moving
                            } else {
                                &mut steady
                            };
                            h.record(us.max(1)).map_err(|e| anyhow!("{e}"))?;
                        }
                        Err(e) if keep_going => {
                            failures += 1;
                            first_failure.get_or_insert_with(|| e.to_string());
                        }
                        Err(e) => return Err(anyhow!(e).context("publishing")),
                    }
                }
                Ok::<_, anyhow::Error>((acked, steady, moving, retries, failures, first_failure))
            }));
        }
    }
    let mut steady = Histogram::<u64>::new(3).map_err(|e| anyhow!("{e}"))?;
    let mut moving = steady.clone();
    let (mut events, mut retries, mut failures) = (0, 0, 0);
    let mut first_failure = None;
    for t in tasks {
        let (n, s, m, r, f, ff) = t.await??;
        events += n;
        steady.add(s).map_err(|e| anyhow!("{e}"))?;
        moving.add(m).map_err(|e| anyhow!("{e}"))?;
        retries += r;
        failures += f;
        if first_failure.is_none() {
            first_failure = ff;
        }
    }
    let elapsed = start.elapsed();
    if let Some(l) = load.limit {
        let expected = l * load.batch as u64;
        if failures == 0 && events != expected {
            bail!("{events} events acknowledged of {expected}");
        }
    }
    Ok(LoadResult {
        events,
        elapsed,
        steady,
        moving,
        retries,
        failures,
        first_failure,
    })
}

/// QUIC connections spread over `targets` (connection i to target i mod n).
async fn connect(targets: &[&Member], connections: usize) -> Result<Vec<QuicClient>> {
    let mut out = Vec::new();
    for i in 0..connections.max(1) {
        let m = targets[i % targets.len()];
        let c = QuicClient::connect(m.quic, Trust::Fingerprint(m.fingerprint.clone()))
            .await
            .with_context(|| format!("QUIC connection to {}", m.name))?;
        out.push(c);
    }
    Ok(out)
}

/// One throughput run.
#[derive(Debug, Clone)]
pub struct ThroughputRun {
    pub nodes: usize,
    pub events: u64,
    pub seconds: f64,
    pub events_per_sec: f64,
    pub ack_p50_us: u64,
    pub ack_p99_us: u64,
    pub ack_max_us: u64,
}

/// Starts `nodes` fresh nodes (a cluster if more than one), publishes the load spread over
/// them, stops them.
async fn throughput_run(o: &Options, spec: &Spec, nodes: usize, id: &str) -> Result<ThroughputRun> {
    let mut members = Vec::new();
    if nodes == 1 {
        members.push(Member::start(spec.clone()).await?);
    } else {
        let first = Member::start(Spec {
            name: "t1".into(),
            cluster: Some(id.into()),
            seed: None,
            ..spec.clone()
        })
        .await?;
        let seed = first.gossip.clone();
        members.push(first);
        for k in 2..=nodes {
            members.push(
                Member::start(Spec {
                    name: format!("t{k}"),
                    cluster: Some(id.into()),
                    seed: seed.clone(),
                    ..spec.clone()
                })
                .await?,
            );
        }
        let refs: Vec<&Member> = members.iter().collect();
        wait_settled(&refs, nodes).await?;
    }
    let refs: Vec<&Member> = members.iter().collect();
    create_topic(refs[0], &refs).await?;
    let clients = connect(&refs, o.connections).await?;
    let batches = o.events.div_ceil(o.batch as u64);
    let r = run_load(Load {
        clients: clients.clone(),
        streams: o.streams,
        batch: o.batch,
        limit: Some(batches),
        rate: None,
        stop: Arc::new(AtomicBool::new(false)),
        phase: Arc::new(AtomicU8::new(0)),
        keep_going: false,
    })
    .await
    .with_context(|| {
        format!(
            "publishing into {nodes} node(s); last log lines of the first:\n{}",
            refs[0].log_tail()
        )
    })?;
    for c in clients {
        c.close().await;
    }
    Ok(ThroughputRun {
        nodes,
        events: r.events,
        seconds: r.elapsed.as_secs_f64(),
        events_per_sec: r.events_per_sec(),
        ack_p50_us: r.steady.value_at_quantile(0.5),
        ack_p99_us: r.steady.value_at_quantile(0.99),
        ack_max_us: r.steady.max(),
    })
}

/// One node joining.
#[derive(Debug, Clone)]
pub struct Join {
    /// The cluster size once it joined (2 for the second node).
    pub nth: usize,
    /// Spawn → the node printed its banner (listening).
    pub started_ms: f64,
    /// Spawn → every node's `/v1/cluster` lists it.
    pub listed_ms: f64,
    /// Spawn → a view shows it owning a shard.
    pub first_shard_ms: f64,
    /// Spawn → every node settled with it.
    pub settled_ms: f64,
    pub shards: u64,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Starts one node alone, then adds nodes with `--seed` one at a time up to `o.nodes`,
/// timing each join. Returns the bootstrap time of the first node and the joins.
async fn convergence(o: &Options, spec: &Spec) -> Result<(f64, Vec<Join>)> {
    let id = "bench-converge";
    let t = Instant::now();
    let first = Member::start(Spec {
        name: "c1".into(),
        cluster: Some(id.into()),
        seed: None,
        ..spec.clone()
    })
    .await?;
    let seed = first.gossip.clone();
    let mut members = vec![first];
    wait_settled(&[&members[0]], 1).await?;
    let bootstrap = ms(t.elapsed());
    let mut joins = Vec::new();
    for k in 2..=o.nodes {
        let name = format!("c{k}");
        let t0 = Instant::now();
        let m = Member::start(Spec {
            name: name.clone(),
            cluster: Some(id.into()),
            seed: seed.clone(),
            ..spec.clone()
        })
        .await?;
        let started = t0.elapsed();
        members.push(m);
        let refs: Vec<&Member> = members.iter().collect();
        let (mut listed, mut first_shard) = (None, None);
        let settled = loop {
            if let Some(vs) = views(&refs).await {
                let now = t0.elapsed();
                if listed.is_none() && vs.iter().all(|v| member_names(v).contains(&name)) {
                    listed = Some(now);
                }
                if first_shard.is_none() && vs.iter().any(|v| shards_of(v, &name) > 0) {
                    first_shard = Some(now);
                }
                if all_settled(&vs, k) && vs.iter().all(|v| shards_of(v, &name) > 0) {
                    break (now, shards_of(&vs[0], &name));
                }
            }
            if t0.elapsed() > SETTLE_LIMIT {
                bail!(
                    "node {name} did not settle into the cluster within {SETTLE_LIMIT:?}; its log:\n{}",
                    refs[k - 1].log_tail()
                );
            }
            tokio::time::sleep(POLL).await;
        };
        joins.push(Join {
            nth: k,
            started_ms: ms(started),
            listed_ms: ms(listed.unwrap_or(settled.0)),
            first_shard_ms: ms(first_shard.unwrap_or(settled.0)),
            settled_ms: ms(settled.0),
            shards: settled.1,
        });
    }
    Ok((bootstrap, joins))
}

/// One membership change under load.
#[derive(Debug, Clone)]
pub struct Move {
    pub what: &'static str,
    /// Start of the change → every node settled.
    pub ms: f64,
    /// For the leave: `POST /v1/cluster/leave` answered (the node owned nothing).
    pub answered_ms: Option<f64>,
    pub shards_moved: usize,
}

impl Move {
    pub fn ms_per_shard(&self) -> Option<f64> {
        (self.shards_moved > 0).then(|| self.ms / self.shards_moved as f64)
    }
}

/// The hand-off figures.
#[derive(Debug)]
pub struct Handoff {
    pub join: Move,
    pub leave: Move,
    pub load: LoadResult,
    pub rate: u64,
}

/// A 2-node cluster under a paced publisher (clients on both nodes); a 3rd node joins, the
/// cluster settles, then the 3rd node leaves.
async fn handoff(o: &Options, spec: &Spec) -> Result<Handoff> {
    let id = "bench-handoff";
    let h1 = Member::start(Spec {
        name: "h1".into(),
        cluster: Some(id.into()),
        seed: None,
        ..spec.clone()
    })
    .await?;
    let seed = h1.gossip.clone();
    let h2 = Member::start(Spec {
        name: "h2".into(),
        cluster: Some(id.into()),
        seed: seed.clone(),
        ..spec.clone()
    })
    .await?;
    wait_settled(&[&h1, &h2], 2).await?;
    create_topic(&h1, &[&h1, &h2]).await?;
    // Keyed window state to move with every shard (per user, 10 s windows).
    HttpClient::new(&h1.base())
        .submit(&format!(
            "name: per_user\ninputs:\n  - {{id: c, topic: {TOPIC}, watermark: {{max_delay: 5s, idle_timeout: 1s}}}}\nnodes:\n  - {{id: w, op: window, input: c, kind: tumbling, size: 10s}}\n  - id: agg\n    op: aggregate\n    input: w\n    aggregates: [{{name: n, fn: count}}, {{name: s, fn: sum, expr: amount}}]\noutputs:\n  - {{name: out, from: agg}}\n"
        ))
        .await
        .context("submitting the windowed dataflow whose state the hand-off moves")?;
    let clients = connect(&[&h1, &h2], 2).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let phase = Arc::new(AtomicU8::new(0));
    let publisher = tokio::spawn(run_load(Load {
        clients: clients.clone(),
        streams: o.streams,
        batch: o.batch,
        limit: None,
        rate: Some(o.handoff_rate),
        stop: Arc::clone(&stop),
        phase: Arc::clone(&phase),
        keep_going: true,
    }));
    let steady = Duration::from_millis(1000);
    tokio::time::sleep(steady).await;

    // Join.
    let before = owners(&view(&h1).await?);
    phase.store(1, Ordering::Relaxed);
    let t0 = Instant::now();
    let h3 = Member::start(Spec {
        name: "h3".into(),
        cluster: Some(id.into()),
        seed,
        ..spec.clone()
    })
    .await?;
    wait_settled(&[&h1, &h2, &h3], 3).await?;
    let join_ms = ms(t0.elapsed());
    phase.store(0, Ordering::Relaxed);
    let after = owners(&view(&h1).await?);
    let join = Move {
        what: "join (2 → 3 nodes)",
        ms: join_ms,
        answered_ms: None,
        shards_moved: moved(&before, &after),
    };
    tokio::time::sleep(steady).await;

    // Leave.
    let before = owners(&view(&h1).await?);
    phase.store(1, Ordering::Relaxed);
    let t0 = Instant::now();
    let (status, answer) = http_call(h3.http, "POST", "/v1/cluster/leave").await?;
    let answered = t0.elapsed();
    if status != 200 {
        bail!("POST /v1/cluster/leave on h3: {status} {answer}");
    }
    let left = loop {
        if let Some(vs) = views(&[&h1, &h2]).await {
            let done = vs.iter().all(|v| {
                v["settled"] == true
                    && v["moving"] == 0
                    && shards_of(v, "h3") == 0
                    && v["shards"]
                        .as_array()
                        .is_some_and(|s| s.iter().all(|e| !e["owner"].is_null()))
            });
            if done {
                break t0.elapsed();
            }
        }
        if t0.elapsed() > SETTLE_LIMIT {
            bail!("the cluster did not settle after h3 left within {SETTLE_LIMIT:?}");
        }
        tokio::time::sleep(POLL).await;
    };
    phase.store(0, Ordering::Relaxed);
    let after = owners(&view(&h1).await?);
    let leave = Move {
        what: "leave (3 → 2 nodes)",
        ms: ms(left),
        answered_ms: Some(ms(answered)),
        shards_moved: moved(&before, &after),
    };
    tokio::time::sleep(steady).await;
    stop.store(true, Ordering::Relaxed);
    let load = publisher.await??;
    for c in clients {
        c.close().await;
    }
    drop(h3);
    Ok(Handoff {
        join,
        leave,
        load,
        rate: o.handoff_rate,
    })
}

/// Everything one invocation measured.
#[derive(Debug)]
pub struct Report {
    pub runs: Vec<ThroughputRun>,
    /// (R, run) of the replication part.
    pub replicated: Vec<(u32, ThroughputRun)>,
    pub bootstrap_ms: f64,
    pub joins: Vec<Join>,
    pub handoff: Handoff,
}

fn mean(xs: impl Iterator<Item = f64>) -> f64 {
    let v: Vec<f64> = xs.collect();
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

impl Report {
    fn mean_rate(&self, nodes: usize) -> f64 {
        mean(
            self.runs
                .iter()
                .filter(|r| r.nodes == nodes)
                .map(|r| r.events_per_sec),
        )
    }

    /// Mean events/s and ack p50/p99 (µs) of the replication runs with factor `r`.
    fn replicated(&self, r: u32) -> (f64, f64, f64) {
        let runs: Vec<&ThroughputRun> = self
            .replicated
            .iter()
            .filter(|(f, _)| *f == r)
            .map(|(_, run)| run)
            .collect();
        (
            mean(runs.iter().map(|x| x.events_per_sec)),
            mean(runs.iter().map(|x| x.ack_p50_us as f64)),
            mean(runs.iter().map(|x| x.ack_p99_us as f64)),
        )
    }

    /// Mean 3-node rate over mean 1-node rate.
    pub fn ratio(&self) -> f64 {
        self.mean_rate(3) / self.mean_rate(1).max(1e-9)
    }

    pub fn to_json(&self, o: &Options) -> Json {
        let mv = |m: &Move| {
            json!({
                "ms": m.ms,
                "answered_ms": m.answered_ms,
                "shards_moved": m.shards_moved,
                "ms_per_shard": m.ms_per_shard(),
            })
        };
        let h = &self.handoff;
        json!({
            "bench": "cluster",
            "options": {
                "events": o.events, "rounds": o.rounds, "connections": o.connections,
                "streams": o.streams, "batch": o.batch, "durability": o.durability,
                "shards": o.shards, "workers": o.workers, "nodes": o.nodes,
                "handoff_rate": o.handoff_rate,
            },
            "throughput": {
                "runs": self.runs.iter().map(|r| json!({
                    "nodes": r.nodes, "events": r.events, "seconds": r.seconds,
                    "events_per_sec": r.events_per_sec, "ack_p50_us": r.ack_p50_us,
                    "ack_p99_us": r.ack_p99_us, "ack_max_us": r.ack_max_us,
                })).collect::<Vec<_>>(),
                "single_events_per_sec": self.mean_rate(1),
                "cluster_events_per_sec": self.mean_rate(3),
                "ratio_cluster_to_single": self.ratio(),
            },
            "replication": self.replicated.iter().map(|(r, x)| json!({
                "replication": r, "events": x.events, "events_per_sec": x.events_per_sec,
                "ack_p50_us": x.ack_p50_us, "ack_p99_us": x.ack_p99_us,
                "ratio_to_r1": x.events_per_sec / self.replicated(1).0.max(1e-9),
            })).collect::<Vec<_>>(),
            "convergence": {
                "bootstrap_ms": self.bootstrap_ms,
                "joins": self.joins.iter().map(|j| json!({
                    "nth": j.nth, "started_ms": j.started_ms, "listed_ms": j.listed_ms,
                    "first_shard_ms": j.first_shard_ms, "settled_ms": j.settled_ms,
                    "shards": j.shards,
                })).collect::<Vec<_>>(),
            },
            "handoff": {
                "publish_rate": h.rate,
                "join": mv(&h.join),
                "leave": mv(&h.leave),
                "published": h.load.events,
                "retries": h.load.retries,
                "failures": h.load.failures,
                "first_failure": h.load.first_failure,
                "steady_ack_p50_us": h.load.steady.value_at_quantile(0.5),
                "steady_ack_p99_us": h.load.steady.value_at_quantile(0.99),
                "moving_ack_p50_us": h.load.moving.value_at_quantile(0.5),
                "moving_ack_p99_us": h.load.moving.value_at_quantile(0.99),
                "moving_ack_max_us": h.load.moving.max(),
            },
        })
    }

    pub fn to_text(&self, o: &Options) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "cluster throughput: {} events per run, QUIC typed rows, batches of {}, {} connections x {} streams, durability {}, {} shards, {} workers per node",
            o.events, o.batch, o.connections, o.streams, o.durability, o.shards, o.workers
        );
        let _ = writeln!(
            s,
            "  {:<6} {:>5} {:>12} {:>12} {:>12} {:>12}",
            "round", "nodes", "events/s", "ack p50 ms", "ack p99 ms", "ack max ms"
        );
        for (i, r) in self.runs.iter().enumerate() {
            let _ = writeln!(
                s,
                "  {:<6} {:>5} {:>12.0} {:>12.1} {:>12.1} {:>12.1}",
                i / 2 + 1,
                r.nodes,
                r.events_per_sec,
                r.ack_p50_us as f64 / 1000.0,
                r.ack_p99_us as f64 / 1000.0,
                r.ack_max_us as f64 / 1000.0
            );
        }
        let _ = writeln!(
            s,
            "  mean: 1 node {:.0} events/s, 3 nodes {:.0} events/s, cluster/single = {:.2}",
            self.mean_rate(1),
            self.mean_rate(3),
            self.ratio()
        );
        if !self.replicated.is_empty() {
            let base = self.replicated(1).0.max(1e-9);
            let _ = writeln!(
                s,
                "replication (3 nodes, acks = all, same load; mean over {} rounds):",
                o.rounds
            );
            for r in 1..=o.max_replication {
                let (rate, p50, p99) = self.replicated(r);
                let _ = writeln!(
                    s,
                    "  R = {r}: {rate:>9.0} events/s ({:.2} x R = 1), ack p50 {:.1} ms, p99 {:.1} ms",
                    rate / base,
                    p50 / 1000.0,
                    p99 / 1000.0
                );
            }
        }
        let _ = writeln!(
            s,
            "convergence (first node alone settled {:.0} ms after spawn); ms from spawning the node:",
            self.bootstrap_ms
        );
        let _ = writeln!(
            s,
            "  {:<6} {:>10} {:>12} {:>12} {:>12} {:>8}",
            "node", "listening", "listed all", "first shard", "settled", "shards"
        );
        for j in &self.joins {
            let _ = writeln!(
                s,
                "  {:<6} {:>10.0} {:>12.0} {:>12.0} {:>12.0} {:>8}",
                ordinal(j.nth),
                j.started_ms,
                j.listed_ms,
                j.first_shard_ms,
                j.settled_ms,
                j.shards
            );
        }
        let h = &self.handoff;
        let _ = writeln!(
            s,
            "hand-off under load ({} events/s published over QUIC to the 2 original nodes):",
            h.rate
        );
        for m in [&h.join, &h.leave] {
            let _ = writeln!(
                s,
                "  {:<20} settled in {:>7.0} ms{}, {:>4} shards moved = {} ms/shard",
                m.what,
                m.ms,
                m.answered_ms
                    .map_or(String::new(), |a| format!(" (leave answered {a:.0} ms)")),
                m.shards_moved,
                m.ms_per_shard()
                    .map_or("n/a".to_string(), |x| format!("{x:.1}"))
            );
        }
        let _ = writeln!(
            s,
            "  publisher: {} events acknowledged, {} retried, {} failed{}; ack p50/p99 steady {:.1}/{:.1} ms, while moving {:.1}/{:.1} ms (max {:.1} ms)",
            h.load.events,
            h.load.retries,
            h.load.failures,
            h.load
                .first_failure
                .as_ref()
                .map_or(String::new(), |f| format!(" (first: {f})")),
            h.load.steady.value_at_quantile(0.5) as f64 / 1000.0,
            h.load.steady.value_at_quantile(0.99) as f64 / 1000.0,
            h.load.moving.value_at_quantile(0.5) as f64 / 1000.0,
            h.load.moving.value_at_quantile(0.99) as f64 / 1000.0,
            h.load.moving.max() as f64 / 1000.0,
        );
        s
    }
}

fn ordinal(n: usize) -> String {
    match n {
        1 => "1st".into(),
        2 => "2nd".into(),
        3 => "3rd".into(),
        n => format!("{n}th"),
    }
}

/// Runs the three parts; `bin` is the `starling` binary.
pub async fn run(o: &Options, bin: &Path) -> Result<Report> {
    o.check()?;
    let spec = Spec {
        bin: bin.to_path_buf(),
        name: "single".into(),
        workers: o.workers,
        durability: o.durability.clone(),
        shards: o.shards,
        cluster: None,
        seed: None,
        replication: 0,
    };
    let mut runs = Vec::new();
    for round in 0..o.rounds {
        for nodes in [1, 3] {
            let id = format!("bench-tp-{round}");
            let r = throughput_run(o, &spec, nodes, &id)
                .await
                .with_context(|| format!("throughput round {} with {nodes} node(s)", round + 1))?;
            eprintln!(
                "round {} with {nodes} node(s): {:.0} events/s",
                round + 1,
                r.events_per_sec
            );
            runs.push(r);
        }
    }
    let mut replicated = Vec::new();
    for round in 0..o.rounds {
        for r in 1..=o.max_replication {
            if o.max_replication < 2 {
                break;
            }
            let id = format!("bench-r{r}-{round}");
            let run = throughput_run(
                o,
                &Spec {
                    replication: r,
                    ..spec.clone()
                },
                3,
                &id,
            )
            .await
            .with_context(|| format!("replication round {} with R = {r}", round + 1))?;
            eprintln!(
                "round {} with R = {r}: {:.0} events/s",
                round + 1,
                run.events_per_sec
            );
            replicated.push((r, run));
        }
    }
    let (bootstrap_ms, joins) = convergence(o, &spec).await.context("convergence")?;
    let handoff = handoff(o, &spec).await.context("hand-off")?;
    Ok(Report {
        runs,
        replicated,
        bootstrap_ms,
        joins,
        handoff,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moved_counts_changed_owners() {
        let a: BTreeMap<u64, Option<String>> =
            [(0, Some("x".into())), (1, Some("y".into())), (2, None)].into();
        let b: BTreeMap<u64, Option<String>> = [
            (0, Some("x".into())),
            (1, Some("z".into())),
            (2, Some("z".into())),
        ]
        .into();
        assert_eq!(moved(&a, &b), 2);
        assert_eq!(moved(&a, &a), 0);
    }

    #[test]
    fn chunked_bodies_are_joined() {
        let body = b"4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n";
        assert_eq!(dechunk(body).unwrap(), b"{\"a\":1}");
    }
}
