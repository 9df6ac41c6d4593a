//! `starling demo`: the support-desk agent on generated traffic, printed live.
//!
//! Starts a node on free ports with a temporary data directory, and then works as any client
//! would, over HTTP: submits the shipped `support_desk` definition, streams simulated customer
//! messages (some out of order, a few too late), subscribes to the results, prints the live
//! per-channel counts, each closed minute, every escalation and every late event, then marks
//! the end of the input (closing the last windows) and prints a summary.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::{json, Value as Json};
use std::net::SocketAddr;
use tokio::sync::mpsc;

use crate::node::{Node, NodeConfig};
use starling_client::http::HttpClient;

/// The definition the demo runs (shipped in `dataflows/agents/`).
pub const SUPPORT_DESK: &str = starling_dataflows::SUPPORT_DESK;

/// Demo settings.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Wall-clock duration of the event stream.
    pub seconds: u64,
    /// Event-time seconds per wall-clock second (so minutes close during the demo).
    pub speed: u64,
    /// Messages per wall-clock second.
    pub rate: u64,
    pub workers: usize,
    pub seed: u64,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            seconds: 20,
            speed: 15,
            rate: 40,
            workers: 2,
            seed: 7,
        }
    }
}

/// What the demo saw, for its summary and for tests.
#[derive(Clone, Debug, Default)]
pub struct DemoSummary {
    pub published: u64,
    pub out_of_order: u64,
    pub too_late: u64,
    pub window_results: u64,
    pub corrections: u64,
    pub escalations: u64,
    pub late_seen: u64,
    pub messages_counted: i64,
}

const BASE: u64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
const USERS: usize = 40;
const CHANNELS: [&str; 3] = ["chat", "mail", "phone"];
const CALM: [&str; 4] = ["hello", "where is my order?", "thanks!", "can you help me"];
const UPSET: [&str; 3] = [
    "I want a refund",
    "this makes me angry",
    "cancel my subscription",
];

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn clock(ms: u64) -> String {
    let s = ms.saturating_sub(BASE) / 1000;
    format!("{:02}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
}

/// Runs the demo, writing its live output to `out`.
pub fn run(opts: &DemoOptions, out: &mut dyn Write) -> Result<DemoSummary> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run_async(opts, out))
}

/// The JSON lines of one subscription, gathered by a background task.
struct Lines {
    rx: mpsc::UnboundedReceiver<Json>,
}

impl Lines {
    fn start(client: &HttpClient, target: &str) -> Lines {
        let (tx, rx) = mpsc::unbounded_channel();
        let client = client.clone();
        let target = target.to_string();
        tokio::spawn(async move {
            if let Err(e) = client
                .subscribe(&target, |line| tx.send(line).is_ok())
                .await
            {
                tracing::warn!(%target, error = %e, "demo subscription ended");
            }
        });
        Lines { rx }
    }

    fn drain(&mut self) -> Vec<Json> {
        let mut v = Vec::new();
        while let Ok(line) = self.rx.try_recv() {
            v.push(line);
        }
        v
    }
}

struct Streams {
    activity: Lines,
    channels: Lines,
    escalations: Lines,
    late: Lines,
}

async fn run_async(opts: &DemoOptions, out: &mut dyn Write) -> Result<DemoSummary> {
    let dir = tempfile::tempdir()?;
    let node = Node::start(&NodeConfig {
        http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        quic_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        data_dir: dir.path().to_path_buf(),
        workers: opts.workers,
        ..NodeConfig::default()
    })
    .await?;
    let client = HttpClient::new(&format!("http://{}", node.http_addr()));
    let result = drive(opts, out, &client).await;
    node.shutdown().await;
    result
}

async fn drive(
    opts: &DemoOptions,
    out: &mut dyn Write,
    client: &HttpClient,
) -> Result<DemoSummary> {
    client.submit(SUPPORT_DESK).await?;
    let mut streams = Streams {
        activity: Lines::start(client, "support_desk/activity"),
        channels: Lines::start(client, "support_desk/channel_counts"),
        escalations: Lines::start(client, "escalations"),
        late: Lines::start(client, "support_desk.late"),
    };
    writeln!(
        out,
        "starling demo: a node on {} (temporary data dir), support-desk agent, {} messages/s for {} s, event time x{}",
        client.base(),
        opts.rate,
        opts.seconds,
        opts.speed
    )?;
    writeln!(
        out,
        "  dataflow: dataflows/agents/support_desk.yaml (copy it to start your own agent)"
    )?;
    // Let the subscriptions attach before the first event.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut rng = Rng(opts.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).max(1));
    let mut summary = DemoSummary::default();
    let mut channel_counts: BTreeMap<String, i64> = BTreeMap::new();
    let start = Instant::now();
    let tick = Duration::from_millis(100);
    let per_tick = (opts.rate / 10).max(1);
    let mut next_print = Duration::from_secs(2);
    let mut now_event = BASE;
    let hot_users = [3usize, 17, 29];
    while start.elapsed() < Duration::from_secs(opts.seconds) {
        now_event =
            BASE.saturating_add((start.elapsed().as_millis() as u64).saturating_mul(opts.speed));
        let mut ndjson = Vec::with_capacity(per_tick as usize * 100);
        for _ in 0..per_tick {
            let hot = rng.below(4) == 0;
            let user = if hot {
                hot_users[rng.below(hot_users.len() as u64) as usize]
            } else {
                rng.below(USERS as u64) as usize
            };
            let upset = rng.below(if user == 17 { 3 } else { 12 }) == 0;
            let msg = if upset {
                UPSET[rng.below(UPSET.len() as u64) as usize]
            } else {
                CALM[rng.below(CALM.len() as u64) as usize]
            };
            let mut ts = now_event;
            let r = rng.below(100);
            if r < 5 {
                ts = ts.saturating_sub(rng.below(4_000));
                summary.out_of_order += 1;
            } else if r < 6 && now_event > BASE + 150_000 {
                ts = ts.saturating_sub(100_000 + rng.below(30_000));
                summary.too_late += 1;
            }
            let line = json!({
                "user": format!("user-{user:02}"),
                "ts": ts,
                "channel": CHANNELS[rng.below(3) as usize],
                "text": msg,
            });
            ndjson.extend_from_slice(line.to_string().as_bytes());
            ndjson.push(b'\n');
        }
        summary.published += client.publish_ndjson("messages", ndjson).await?;
        report(&mut streams, &mut channel_counts, &mut summary, out)?;
        if start.elapsed() >= next_print {
            next_print += Duration::from_secs(2);
            let counts: Vec<String> = channel_counts
                .iter()
                .map(|(c, n)| format!("{c}={n}"))
                .collect();
            let info = client.dataflow("support_desk").await?;
            writeln!(
                out,
                "[{:>4.1}s] event time {} | watermark {} | messages per channel: {} | open window entries {}",
                start.elapsed().as_secs_f64(),
                clock(now_event),
                clock(info["inputs"][0]["watermark"].as_u64().unwrap_or(0)),
                counts.join(" "),
                info["counters"]["window_state"]
            )?;
        }
        tokio::time::sleep(tick).await;
    }
    // Mark the end of the input: every window still open closes.
    let end = now_event.saturating_add(120_000);
    client.advance_watermark("messages", end).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let info = client.dataflow("support_desk").await?;
        if info["frontier"].as_u64().unwrap_or(0) >= end {
            break;
        }
        if Instant::now() > deadline {
            bail!("the dataflow did not finish its last windows within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let the streams deliver what is in flight: stop once they are quiet.
    let mut quiet = 0;
    while quiet < 5 {
        tokio::time::sleep(Duration::from_millis(60)).await;
        let before = (
            summary.window_results,
            summary.escalations,
            summary.late_seen,
            summary.corrections,
        );
        report(&mut streams, &mut channel_counts, &mut summary, out)?;
        let after = (
            summary.window_results,
            summary.escalations,
            summary.late_seen,
            summary.corrections,
        );
        quiet = if before == after { quiet + 1 } else { 0 };
    }
    let info = client.dataflow("support_desk").await?;
    writeln!(
        out,
        "summary: {} messages published ({} out of order within max_delay, {} too late); {} window results ({} corrections); {} escalations; {} late events sent to support_desk.late (engine counted {}); {} messages counted in windows; open window entries at the end: {}",
        summary.published,
        summary.out_of_order,
        summary.too_late,
        summary.window_results,
        summary.corrections,
        summary.escalations,
        summary.late_seen,
        info["counters"]["late_events"],
        summary.messages_counted,
        info["counters"]["window_state"]
    )?;
    Ok(summary)
}

fn report(
    streams: &mut Streams,
    channel_counts: &mut BTreeMap<String, i64>,
    summary: &mut DemoSummary,
    out: &mut dyn Write,
) -> Result<()> {
    for line in streams.channels.drain() {
        if line["diff"].as_i64().unwrap_or(0) > 0 {
            if let (Some(c), Some(n)) = (
                line["row"]["key"].as_str(),
                line["row"]["messages"].as_i64(),
            ) {
                channel_counts.insert(c.to_string(), n);
            }
        }
    }
    let mut windows: BTreeMap<u64, Vec<(String, i64, i64)>> = BTreeMap::new();
    for line in streams.activity.drain() {
        let row = &line["row"];
        let (Some(start), Some(n), Some(neg), Some(d)) = (
            row["window_start"].as_u64(),
            row["messages"].as_i64(),
            row["negatives"].as_i64(),
            line["diff"].as_i64(),
        ) else {
            continue;
        };
        summary.messages_counted += n * d;
        if d < 0 {
            summary.corrections += 1;
            continue;
        }
        summary.window_results += 1;
        windows.entry(start).or_default().push((
            row["key"].as_str().unwrap_or("?").to_string(),
            n,
            neg,
        ));
    }
    for (start, mut users) in windows {
        users.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let total: i64 = users.iter().map(|u| u.1).sum();
        let top: Vec<String> = users
            .iter()
            .take(3)
            .map(|(u, n, neg)| format!("{u} {n} msgs/{neg} negative"))
            .collect();
        writeln!(
            out,
            "minute {}: {} users, {} messages; busiest: {}",
            clock(start),
            users.len(),
            total,
            top.join(", ")
        )?;
    }
    for line in streams.escalations.drain() {
        let e = &line["event"];
        summary.escalations += 1;
        writeln!(
            out,
            "ESCALATE {} in minute {}: {} messages, {} negative",
            e["key"].as_str().unwrap_or("?"),
            clock(e["window_start"].as_u64().unwrap_or(0)),
            e["messages"],
            e["negatives"]
        )?;
    }
    let late: Vec<u64> = streams
        .late
        .drain()
        .iter()
        .filter_map(|l| l["time"].as_u64())
        .collect();
    if let Some(oldest) = late.iter().min() {
        summary.late_seen += late.len() as u64;
        writeln!(
            out,
            "late: {} message(s) past allowed lateness (oldest stamped {}) went to support_desk.late",
            late.len(),
            clock(*oldest)
        )?;
    }
    Ok(())
}
