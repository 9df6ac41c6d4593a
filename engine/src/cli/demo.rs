//! `starling demo`: the support-desk agent on generated traffic, printed live.
//!
//! Runs the engine in-process on its embedded defaults: installs the shipped
//! `support_desk` definition, streams simulated customer messages (some out of order, a few
//! too late), prints the live per-channel counts, each closed minute, every escalation and
//! every late event, then closes the last windows and prints a summary.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::json;
use starling_operators::render::Update;
use starling_operators::{Event, Value};

use crate::{Engine, EngineConfig, Subscription};

/// The definition the demo runs (shipped in `dataflows/agents/`).
pub const SUPPORT_DESK: &str = include_str!("../../../dataflows/agents/support_desk.yaml");

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

fn text(v: &Value) -> String {
    match v {
        Value::Str(s) => s.to_string(),
        other => other.to_string(),
    }
}

/// Runs the demo, writing its live output to `out`.
pub fn run(opts: &DemoOptions, out: &mut dyn Write) -> Result<DemoSummary> {
    let engine = Engine::start(EngineConfig {
        workers: opts.workers,
        ..EngineConfig::default()
    })?;
    engine.install_text(SUPPORT_DESK)?;
    let activity = engine.subscribe("support_desk", "activity")?;
    let channels = engine.subscribe("support_desk", "channel_counts")?;
    let escalations = engine.subscribe_topic("escalations")?;
    let late = engine.subscribe_topic("support_desk.late")?;
    writeln!(
        out,
        "starling demo: support-desk agent, {} workers, {} messages/s for {} s, event time x{}",
        engine.workers(),
        opts.rate,
        opts.seconds,
        opts.speed
    )?;
    writeln!(
        out,
        "  dataflow: dataflows/agents/support_desk.yaml (copy it to start your own agent)"
    )?;

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
        let mut batch = Vec::with_capacity(per_tick as usize);
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
            batch.push(json!({
                "user": format!("user-{user:02}"),
                "ts": ts,
                "channel": CHANNELS[rng.below(3) as usize],
                "text": msg,
            }));
        }
        summary.published += engine.publish_json("messages", &batch)? as u64;
        report(
            &activity,
            &escalations,
            &late,
            &channels,
            &mut channel_counts,
            &mut summary,
            out,
        )?;
        if start.elapsed() >= next_print {
            next_print += Duration::from_secs(2);
            let counts: Vec<String> = channel_counts
                .iter()
                .map(|(c, n)| format!("{c}={n}"))
                .collect();
            let info = engine.dataflow("support_desk")?;
            writeln!(
                out,
                "[{:>4.1}s] event time {} | watermark {} | messages per channel: {} | open window entries {}",
                start.elapsed().as_secs_f64(),
                clock(now_event),
                clock(info.watermarks.first().copied().unwrap_or(0)),
                counts.join(" "),
                info.window_state
            )?;
        }
        std::thread::sleep(tick);
    }
    // Close every window still open and wait for the last results.
    let end = now_event.saturating_add(120_000);
    engine.advance_watermark("messages", end)?;
    if !engine.wait_until("support_desk", end - 1, Duration::from_secs(30))? {
        bail!("the dataflow did not finish its last windows within 30 s");
    }
    std::thread::sleep(Duration::from_millis(50));
    report(
        &activity,
        &escalations,
        &late,
        &channels,
        &mut channel_counts,
        &mut summary,
        out,
    )?;
    let info = engine.dataflow("support_desk")?;
    engine.shutdown();
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
        info.late_events,
        summary.messages_counted,
        info.window_state
    )?;
    Ok(summary)
}

fn report(
    activity: &Subscription<Arc<[Update]>>,
    escalations: &Subscription<Arc<[Event]>>,
    late: &Subscription<Arc<[Event]>>,
    channels: &Subscription<Arc<[Update]>>,
    channel_counts: &mut BTreeMap<String, i64>,
    summary: &mut DemoSummary,
    out: &mut dyn Write,
) -> Result<()> {
    for b in channels.drain() {
        for (e, _, d) in b.iter() {
            if *d > 0 {
                if let (Some(c), Some(Value::Int(n))) = (e.row.first(), e.row.get(1)) {
                    channel_counts.insert(text(c), *n);
                }
            }
        }
    }
    let mut windows: BTreeMap<u64, Vec<(String, i64, i64)>> = BTreeMap::new();
    for b in activity.drain() {
        for (e, _, d) in b.iter() {
            let (Some(Value::Timestamp(start)), Some(Value::Int(n)), Some(Value::Int(neg))) =
                (e.row.get(1), e.row.get(3), e.row.get(4))
            else {
                continue;
            };
            summary.messages_counted += n * *d as i64;
            if *d < 0 {
                summary.corrections += 1;
                continue;
            }
            summary.window_results += 1;
            windows
                .entry(*start as u64)
                .or_default()
                .push((text(&e.key), *n, *neg));
        }
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
    for b in escalations.drain() {
        for e in b.iter() {
            summary.escalations += 1;
            let start = e.row.get(1).and_then(Value::as_i64).unwrap_or(0) as u64;
            writeln!(
                out,
                "ESCALATE {} in minute {}: {} messages, {} negative",
                text(&e.key),
                clock(start),
                e.row.get(3).map(text).unwrap_or_default(),
                e.row.get(4).map(text).unwrap_or_default()
            )?;
        }
    }
    let late: Vec<u64> = late
        .drain()
        .iter()
        .flat_map(|b| b.iter().map(|e| e.time).collect::<Vec<_>>())
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
