//! [`Report`]: what one invocation measured, as JSON and as text. Kept apart from the runs so
//! the output format can change without touching how anything is measured.

use serde_json::{json, Value as Json};

use super::convergence::Join;
use super::handoff::{Handoff, Move};
use super::throughput::ThroughputRun;
use super::Options;

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
                "handoff_rate": o.handoff_rate, "handoff_keys": o.handoff_keys,
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
            "hand-off under load ({} events/s published over QUIC to the 2 original nodes; {} keys of running totals loaded before):",
            h.rate, h.keys
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
