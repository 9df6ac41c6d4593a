//! Publishing into a node from another process: HTTP NDJSON throughput and publish→ack
//! latency. The node runs as a child process (`starling node` on free ports, the binary
//! `starling_testkit::bin` finds or builds beside this one); this process is the client, as a
//! producer would be.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use hdrhistogram::Histogram;
use serde_json::json;
use starling_node::client::http::HttpClient;
use starling_testkit::node::{Launch, NodeProc};

/// A `starling node` child for the publish and in-node runs (testkit's [`NodeProc`]: killed
/// and its temporary directory removed on drop), with the addresses its clients need.
pub struct NodeProcess {
    pub proc: NodeProc,
    /// `http://ADDR`.
    pub http: String,
    pub quic: SocketAddr,
    pub fingerprint: String,
}

impl NodeProcess {
    /// Starts `starling node` on free ports and waits until it listens.
    pub fn start(workers: usize) -> Result<NodeProcess> {
        NodeProcess::start_with(workers, &[])
    }

    /// Like [`NodeProcess::start`], with extra `starling node` flags (e.g. `--durability`).
    /// The node's warnings go to this process's stderr, and `STARLING_*` settings in the
    /// environment reach it (`STARLING_SHARDS=16 starling-bench durability`).
    pub fn start_with(workers: usize, extra: &[&str]) -> Result<NodeProcess> {
        let launch = Launch {
            workers,
            banner_wait: Duration::from_secs(60),
            inherit_stderr: true,
            env_remove: Vec::new(),
        };
        let dir = tempfile::Builder::new()
            .prefix("starling-bench-")
            .tempdir()?;
        let proc = launch.start_in(dir, extra).map_err(|e| anyhow!(e))?;
        let (quic, fingerprint) = quic_door(&proc)?;
        Ok(NodeProcess {
            http: proc.base(),
            quic,
            fingerprint,
            proc,
        })
    }
}

/// The QUIC address and certificate fingerprint a node printed on start.
pub fn quic_door(node: &NodeProc) -> Result<(SocketAddr, String)> {
    let field = |key: &str| {
        node.banner_value(key)
            .ok_or_else(|| anyhow!("the node did not print {key}=: {:?}", node.banner))
    };
    let quic = field("quic")?
        .parse()
        .with_context(|| format!("the node's quic= address: {:?}", node.banner))?;
    Ok((quic, field("quic_fingerprint")?.to_string()))
}

/// One run's figures.
#[derive(Debug, Clone)]
pub struct PublishResult {
    pub events: u64,
    pub elapsed: Duration,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

impl PublishResult {
    /// Throughput.
    pub fn events_per_sec(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64()
    }
}

/// NDJSON batches of ~100-byte events.
fn batch(seq: u64, size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size * 110);
    for i in 0..size as u64 {
        let n = seq * size as u64 + i;
        let line = json!({"user": format!("user-{:05}", n % 10_000), "ts": 1_000 + n, "amount": n % 1000, "note": "an event of about one hundred bytes"});
        out.extend_from_slice(line.to_string().as_bytes());
        out.push(b'\n');
    }
    out
}

/// `count` pre-built batches of typed rows of [`bench_topic`] (10 000 keys), so that the
/// client's own row building stays out of what is measured.
pub fn wire_batches(
    batch: usize,
    count: u64,
) -> Arc<Vec<Vec<Vec<starling_node::quic::wire::WireValue>>>> {
    use starling_engine::operators::Value;
    use starling_node::quic::wire::row_to_wire;
    let note = "an event of about one hundred bytes";
    Arc::new(
        (0..count)
            .map(|b| {
                (0..batch as u64)
                    .map(|i| {
                        let n = b * batch as u64 + i;
                        row_to_wire(&[
                            Value::str(&format!("user-{:05}", n % 10_000)),
                            Value::Timestamp(1_000 + n as i64),
                            Value::Int((n % 1000) as i64),
                            Value::str(note),
                        ])
                    })
                    .collect()
            })
            .collect(),
    )
}

/// The topic the publish benchmarks write to (about 100 bytes per event).
pub fn bench_topic() -> serde_json::Value {
    json!({"name": "bench", "key": "user", "time": "ts", "fields": [
        {"name": "user", "type": "string"}, {"name": "ts", "type": "timestamp"},
        {"name": "amount", "type": "int"}, {"name": "note", "type": "string"}]})
}

/// Runs `batches` publish calls `publish(i)` over `lanes` concurrent tasks, paced to `rate`
/// events/s if given, and gathers the acknowledged count and publish→ack latencies. Fails
/// unless every event was acknowledged.
async fn drive<F, Fut>(
    batches: u64,
    batch_size: usize,
    lanes: usize,
    rate: Option<u64>,
    publish: F,
) -> Result<PublishResult>
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<u64>> + Send,
{
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let per_batch = rate.map(|r| Duration::from_secs_f64(batch_size as f64 / r.max(1) as f64));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..lanes.max(1) {
        let next = Arc::clone(&next);
        let publish = publish.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new(3).map_err(|e| anyhow!("{e}"))?;
            let mut accepted = 0u64;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= batches {
                    break;
                }
                if let Some(p) = per_batch {
                    tokio::time::sleep_until((start + p * i as u32).into()).await;
                }
                let t = Instant::now();
                accepted += publish(i).await?;
                hist.record(t.elapsed().as_micros() as u64)
                    .map_err(|e| anyhow!("{e}"))?;
            }
            Ok::<_, anyhow::Error>((accepted, hist))
        }));
    }
    let mut total = 0;
    let mut hist = Histogram::<u64>::new(3).map_err(|e| anyhow!("{e}"))?;
    for t in tasks {
        let (n, h) = t.await??;
        total += n;
        hist.add(h).map_err(|e| anyhow!("{e}"))?;
    }
    let elapsed = start.elapsed();
    let expected = batches * batch_size as u64;
    if total != expected {
        bail!("{total} events acknowledged of {expected}");
    }
    Ok(PublishResult {
        events: total,
        elapsed,
        p50_us: hist.value_at_quantile(0.5),
        p99_us: hist.value_at_quantile(0.99),
        max_us: hist.max(),
    })
}

/// Publishes `events` as NDJSON in batches of `batch_size` over `connections` concurrent
/// HTTP clients; with `rate` (events/s) it paces itself, otherwise it goes as fast as acks
/// come back. A `429 busy` answer is retried.
pub async fn http_publish(
    node: &str,
    events: u64,
    batch_size: usize,
    connections: usize,
    rate: Option<u64>,
) -> Result<PublishResult> {
    let client = HttpClient::new(node);
    client.create_topic(&bench_topic()).await?;
    let batches = events.div_ceil(batch_size as u64);
    // Pre-build the bodies so the client measures the node, not JSON encoding.
    let bodies: Arc<Vec<Vec<u8>>> =
        Arc::new((0..batches.min(64)).map(|s| batch(s, batch_size)).collect());
    drive(batches, batch_size, connections, rate, move |i| {
        let client = client.clone();
        let body = bodies[(i % bodies.len() as u64) as usize].clone();
        async move {
            let mut tries = 0;
            loop {
                match client.publish_ndjson("bench", body.clone()).await {
                    Ok(n) => return Ok(n),
                    Err(starling_node::client::http::ClientError::Api { status: 429, .. })
                        if tries < 1000 =>
                    {
                        tries += 1;
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    Err(e) => return Err(anyhow!(e)),
                }
            }
        }
    })
    .await
}

/// Publishes `events` typed rows over QUIC in batches of `batch_size`, with `streams`
/// operations in flight on one connection; with `rate` it paces itself.
pub async fn quic_publish(
    http: &str,
    quic: std::net::SocketAddr,
    fingerprint: &str,
    events: u64,
    batch_size: usize,
    streams: usize,
    rate: Option<u64>,
) -> Result<PublishResult> {
    use starling_node::client::{QuicClient, Trust};

    HttpClient::new(http).create_topic(&bench_topic()).await?;
    let client = QuicClient::connect(quic, Trust::Fingerprint(fingerprint.to_string())).await?;
    let batches = events.div_ceil(batch_size as u64);
    let wire_batches = wire_batches(batch_size, batches.min(16));
    let result = drive(batches, batch_size, streams, rate, {
        let client = client.clone();
        move |i| {
            let client = client.clone();
            let rows = wire_batches[(i % wire_batches.len() as u64) as usize].clone();
            async move { Ok(client.publish("bench", rows).await?) }
        }
    })
    .await;
    client.close().await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use starling_node::node::{Node, NodeConfig};

    /// Both publish benchmarks run (small) against an in-process node, so they cannot rot.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn publish_benchmarks_run_and_count_every_event() {
        let dir = std::env::temp_dir().join(format!("starling-bench-test-{}", std::process::id()));
        let node = Node::start(&NodeConfig {
            http_addr: "127.0.0.1:0".parse().unwrap(),
            quic_addr: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.clone(),
            workers: 2,
            ..NodeConfig::default()
        })
        .await
        .unwrap();
        let http = format!("http://{}", node.http_addr());
        let r = http_publish(&http, 5_000, 500, 2, None).await.unwrap();
        assert_eq!(r.events, 5_000);
        let q = quic_publish(
            &http,
            node.quic_addr(),
            node.quic_fingerprint(),
            5_000,
            500,
            2,
            Some(200_000),
        )
        .await
        .unwrap();
        assert_eq!(q.events, 5_000);
        assert_eq!(node.engine().topic("bench").unwrap().published, 10_000);
        node.shutdown().await;
        let _ = std::fs::remove_dir_all(dir);
    }
}
