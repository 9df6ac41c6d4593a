//! `starling-bench`: runs Starling's benchmarks and prints events/s.

use anyhow::Result;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
use clap::{Parser, Subcommand};
use starling_bench::window::{run, WindowBench};

mod cluster;

#[derive(Parser)]
#[command(about = "Starling benchmarks (build with --release)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Publish typed rows into a `starling node` child process over QUIC: max rate, then half.
    QuicPublish {
        #[arg(long, default_value_t = 4_000_000)]
        events: u64,
        #[arg(long, default_value_t = 1_000)]
        batch: usize,
        /// Operations in flight on the connection.
        #[arg(long, default_value_t = 4)]
        streams: usize,
        /// Node worker threads.
        #[arg(long, default_value_t = 2)]
        workers: usize,
    },
    /// `kv_lookup` enrichment rate against a plain `map` of the same stream (same run).
    KvLookup {
        #[arg(long, default_value_t = 2_000_000)]
        events: u64,
        #[arg(long, default_value_t = 100_000)]
        keys: u64,
        #[arg(long, default_value_t = 1_000)]
        batch: usize,
        #[arg(long, default_value_t = 2)]
        workers: usize,
    },
    /// The cost of the event log: the same QUIC publish load into nodes started with each
    /// `--durability` mode in turn (same invocation), with ratios to the first `none` run.
    Durability {
        #[arg(long, default_value_t = 2_000_000)]
        events: u64,
        #[arg(long, default_value_t = 1_000)]
        batch: usize,
        #[arg(long, default_value_t = 4)]
        streams: usize,
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// Modes to run, in order (repeat one to see the noise).
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "none,batch,sync,none,batch"
        )]
        modes: Vec<String>,
    },
    /// Cluster mode: publish throughput into 1 node and into 3 (alternating), how fast
    /// joining nodes converge, and shard hand-off time under load.
    Cluster {
        /// Events per throughput run.
        #[arg(long, default_value_t = 300_000)]
        events: u64,
        /// Rounds of (1 node, 3 nodes).
        #[arg(long, default_value_t = 2)]
        rounds: usize,
        /// QUIC connections, spread over the nodes.
        #[arg(long, default_value_t = 6)]
        connections: usize,
        /// Publish operations in flight per connection.
        #[arg(long, default_value_t = 2)]
        streams: usize,
        #[arg(long, default_value_t = 500)]
        batch: usize,
        /// The nodes' `--durability`.
        #[arg(long, default_value = "batch", value_parser = ["none", "batch", "sync"])]
        durability: String,
        #[arg(long, default_value_t = 256)]
        shards: u32,
        /// Worker threads per node.
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// Grow the convergence cluster to this many nodes.
        #[arg(long, default_value_t = 4)]
        nodes: usize,
        /// Events/s of the publisher running during the hand-off part.
        #[arg(long, default_value_t = 20_000)]
        handoff_rate: u64,
        /// Keys of unwindowed state (running totals per key, kept in a KV view) loaded into
        /// the hand-off cluster before the join, so that the moves carry that much state
        /// besides the windows; 0 loads none.
        #[arg(long, default_value_t = 0)]
        handoff_keys: u64,
        /// Largest replication factor of the replication part (3-node clusters with
        /// R = 1 … this, `acks = all`); 1 skips the part.
        #[arg(long, default_value_t = 3)]
        max_replication: u32,
        /// Print one JSON object instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Publish into a `starling node` child process over HTTP NDJSON: max rate, then half of it.
    HttpPublish {
        #[arg(long, default_value_t = 2_000_000)]
        events: u64,
        #[arg(long, default_value_t = 1_000)]
        batch: usize,
        #[arg(long, default_value_t = 4)]
        connections: usize,
        /// Node worker threads.
        #[arg(long, default_value_t = 2)]
        workers: usize,
    },
    /// Nexmark queries in-process on generated events (or on NDJSON files): events/s over
    /// all events, with each query's ratio to q0 (pass-through) of the same invocation.
    Nexmark(NexmarkArgs),
    /// Generate Nexmark events into DIR/{person,auction,bid}.ndjson (for replay and for
    /// the peer engines), deterministic from the seed.
    NexmarkGenerate {
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        #[command(flatten)]
        stream: StreamArgs,
        #[arg(long, value_name = "DIR")]
        out: std::path::PathBuf,
    },
    /// Tumbling 10 s count+sum per key, in-process, with 1 and 2 workers in one invocation.
    Window {
        #[arg(long, default_value_t = 10_000_000)]
        events: u64,
        #[arg(long, default_value_t = 10_000)]
        keys: u64,
        /// Worker counts to compare, e.g. `1,2`.
        #[arg(long, value_delimiter = ',', default_value = "1,2")]
        workers: Vec<usize>,
        #[arg(long, default_value_t = 0.05)]
        out_of_order: f64,
        #[arg(long, default_value_t = 10_000)]
        batch: usize,
        /// Generate rows while publishing instead of before the clock starts.
        #[arg(long)]
        inline_generation: bool,
        /// Events per second of event time.
        #[arg(long, default_value_t = 100_000)]
        rate: u64,
    },
}

/// The shape of a generated Nexmark stream, shared by `nexmark` and `nexmark-generate` so
/// that the same flags give the same events.
#[derive(clap::Args)]
struct StreamArgs {
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Events per second of event time.
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// Events permuted in groups of this many (1 = in order).
    #[arg(long, default_value_t = 1)]
    out_of_order_group: u64,
}

impl StreamArgs {
    fn config(&self) -> starling_bench::nexmark::NexmarkConfig {
        starling_bench::nexmark::NexmarkConfig {
            seed: self.seed,
            rate: self.rate,
            out_of_order_group: self.out_of_order_group,
            ..Default::default()
        }
    }
}

/// Arguments of `starling-bench nexmark`.
#[derive(clap::Args)]
struct NexmarkArgs {
    /// Queries to run, in order: names from dataflows/nexmark (q0 … q11, tumble) or `all`.
    #[arg(long, value_delimiter = ',', default_value = "q0,q5,q7,q8")]
    query: Vec<String>,
    /// Events to generate (all topics).
    #[arg(long, default_value_t = 10_000_000)]
    events: u64,
    /// Engine worker threads.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Events per published batch.
    #[arg(long, default_value_t = 10_000)]
    batch: usize,
    #[command(flatten)]
    stream: StreamArgs,
    /// Read DIR/{person,auction,bid}.ndjson instead of generating; reading and decoding
    /// are counted in the time (as the peer engines that read the same files do).
    #[arg(long, value_name = "DIR")]
    input: Option<std::path::PathBuf>,
    /// Write the results (consolidated, sorted, one JSON array per line) to FILE; with
    /// several queries, FILE gets each query's name appended (`FILE.q5`).
    #[arg(long, value_name = "FILE")]
    output: Option<std::path::PathBuf>,
    /// Print one JSON object per query instead of text.
    #[arg(long)]
    json: bool,
    /// Where the query runs: `inproc` (the engine in this process, no front door), or a
    /// `starling node` child process fed over `quic` or `http` (adds publish→ack latency).
    #[arg(long, default_value = "inproc", value_parser = ["inproc", "quic", "http"])]
    via: String,
    /// Run this definition (a variant of the query, reading the Nexmark topics, results in
    /// its output `out`) instead of the shipped one; in-process only.
    #[arg(long, value_name = "FILE")]
    definition: Option<std::path::PathBuf>,
    /// With `--via quic|http`: the node's `--durability` (`batch` by default; `none` takes
    /// the event log out, to see what the front door alone costs).
    #[arg(long, value_name = "MODE", value_parser = ["none", "batch", "sync"])]
    durability: Option<String>,
    /// With `--via quic|http`: publish operations in flight.
    #[arg(long, default_value_t = 2)]
    lanes: usize,
}

fn nexmark(a: NexmarkArgs) -> Result<()> {
    use starling_bench::nexmark::Generator;
    use starling_bench::queries::{self, RunOptions};
    use starling_dataflows::nexmark::{names, query, QUERIES};
    let wanted: Vec<&str> = if a.query.iter().any(|q| q == "all") {
        names()
    } else {
        a.query.iter().map(String::as_str).collect()
    };
    let mut chosen = Vec::new();
    for name in &wanted {
        match query(name) {
            Some(q) => chosen.push(q),
            None => anyhow::bail!(
                "unknown query `{name}`; known: {}, or all",
                QUERIES
                    .iter()
                    .map(|q| q.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
    if a.events == 0 {
        anyhow::bail!("--events must be at least 1");
    }
    if a.workers == 0 || a.batch == 0 {
        anyhow::bail!("--workers and --batch must be at least 1");
    }
    let cfg = a.stream.config();
    // Checked once up front, so a bad --rate fails before any work.
    Generator::new(&cfg, a.events)?;
    let mut baseline: Option<f64> = None;
    for q in chosen {
        let (batches, read) = match &a.input {
            Some(dir) => queries::read_ndjson(dir, a.batch)?,
            None => {
                let gen = Generator::new(&cfg, a.events)?;
                let b =
                    queries::batches(gen.map(|e| (e.topic(), e.date_time(), e.to_row())), a.batch);
                (b, std::time::Duration::ZERO)
            }
        };
        if a.via != "inproc" {
            use starling_bench::node_run::{self, Door};
            let door = if a.via == "quic" {
                Door::Quic
            } else {
                Door::Http
            };
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            let mut r = rt.block_on(node_run::run(
                q,
                batches,
                door,
                a.lanes,
                a.workers,
                a.durability.as_deref(),
            ))?;
            r.elapsed += read;
            if a.json {
                println!("{}", node_run::report_json(q.name, door, a.workers, &r));
            } else {
                println!(
                    "nexmark {:>6} via {} (durability {}): {} events in {:.2}s = {:.0} events/s; publish->ack p50 {} us, p99 {} us, max {} us ({} workers, {} lanes)",
                    q.name, a.via, a.durability.as_deref().unwrap_or("batch"), r.events, r.elapsed.as_secs_f64(), r.events_per_sec(),
                    r.ack_p50_us, r.ack_p99_us, r.ack_max_us, a.workers, a.lanes
                );
            }
            continue;
        }
        let opts = RunOptions {
            workers: a.workers,
            collect: a.output.is_some(),
            ..RunOptions::default()
        };
        let mut run = match &a.definition {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
                queries::run_text(&text, batches, &opts)?
            }
            None => queries::run(q, batches, &opts)?,
        };
        run.elapsed += read;
        let eps = run.events_per_sec();
        if q.name == "q0" && baseline.is_none() {
            baseline = Some(eps);
        }
        if let (Some(path), Some(out)) = (&a.output, &run.output) {
            let path = if wanted.len() > 1 {
                let mut p = path.clone().into_os_string();
                p.push(format!(".{}", q.name));
                std::path::PathBuf::from(p)
            } else {
                path.clone()
            };
            let mut text = String::new();
            for (row, n) in out {
                for _ in 0..n.unsigned_abs() {
                    text.push_str(row);
                    text.push('\n');
                }
            }
            std::fs::write(&path, text)
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
        }
        let ratio = baseline.map(|b| eps / b);
        if a.json {
            println!(
                "{}",
                serde_json::json!({
                    "engine": "starling",
                    "query": q.name,
                    "events": run.events,
                    "seconds": run.elapsed.as_secs_f64(),
                    "events_per_sec": eps,
                    "result_updates": run.updates,
                    "workers": a.workers,
                    "workers_busy": run.busy,
                    "read_seconds": read.as_secs_f64(),
                    "ratio_to_q0": ratio,
                })
            );
        } else {
            println!(
                "nexmark {:>6}: {} events in {:.2}s = {:.0} events/s{} ({} result updates, {} workers busy {:.0}%{})",
                q.name,
                run.events,
                run.elapsed.as_secs_f64(),
                eps,
                ratio.map_or(String::new(), |r| format!(", {r:.2} x q0")),
                run.updates,
                a.workers,
                run.busy * 100.0,
                if a.input.is_some() {
                    format!(", of which reading and decoding {:.2}s", read.as_secs_f64())
                } else {
                    String::new()
                },
            );
        }
    }
    Ok(())
}

/// `starling-bench nexmark-generate`: writes the NDJSON files and says what they hold.
fn nexmark_generate(events: u64, stream: &StreamArgs, out: &std::path::Path) -> Result<()> {
    use starling_bench::nexmark::write_ndjson;
    let cfg = stream.config();
    let started = std::time::Instant::now();
    let c = write_ndjson(out, &cfg, events)?;
    let secs = started.elapsed().as_secs_f64();
    let span = c.time_range.map_or("no events".to_string(), |(lo, hi)| {
        format!(
            "event time {lo}..={hi} ms ({:.1} s)",
            (hi - lo) as f64 / 1000.0
        )
    });
    println!(
        "nexmark-generate: {} events ({} persons, {} auctions, {} bids), {span}, into {} in {secs:.2}s",
        c.total(),
        c.persons,
        c.auctions,
        c.bids,
        out.display()
    );
    Ok(())
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::NexmarkGenerate {
            events,
            stream,
            out,
        } => nexmark_generate(events, &stream, &out),
        Cmd::Nexmark(args) => nexmark(args),
        Cmd::Cluster {
            events,
            rounds,
            connections,
            streams,
            batch,
            durability,
            shards,
            workers,
            nodes,
            handoff_rate,
            handoff_keys,
            max_replication,
            json,
        } => {
            let o = cluster::Options {
                events,
                rounds,
                connections,
                streams,
                batch,
                durability,
                shards,
                workers,
                nodes,
                handoff_rate,
                handoff_keys,
                max_replication,
            };
            o.check()?;
            // Built (or brought up to date) before any node starts; a failure is reported here.
            starling_testkit::bin::try_starling().map_err(anyhow::Error::msg)?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            let report = rt.block_on(cluster::run(&o))?;
            if json {
                println!("{}", report.to_json(&o));
            } else {
                print!("{}", report.to_text(&o));
            }
            Ok(())
        }
        Cmd::QuicPublish {
            events,
            batch,
            streams,
            workers,
        } => {
            use starling_bench::publish::{quic_publish, NodeProcess};
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            let node = NodeProcess::start(workers)?;
            let max = rt.block_on(quic_publish(
                &node.http,
                node.quic,
                &node.fingerprint,
                events,
                batch,
                streams,
                None,
            ))?;
            println!(
                "quic-publish max: {} events in {:.2}s = {:.0} events/s; publish->ack p50 {} us, p99 {} us, max {} us (batches of {batch}, {streams} streams)",
                max.events, max.elapsed.as_secs_f64(), max.events_per_sec(), max.p50_us, max.p99_us, max.max_us
            );
            drop(node);
            let node = NodeProcess::start(workers)?;
            let half = (max.events_per_sec() / 2.0) as u64;
            let r = rt.block_on(quic_publish(
                &node.http,
                node.quic,
                &node.fingerprint,
                events / 2,
                batch,
                streams,
                Some(half),
            ))?;
            println!(
                "quic-publish at {half} events/s (half): {:.0} events/s achieved; publish->ack p50 {} us, p99 {} us, max {} us",
                r.events_per_sec(), r.p50_us, r.p99_us, r.max_us
            );
            Ok(())
        }
        Cmd::KvLookup {
            events,
            keys,
            batch,
            workers,
        } => {
            let r = starling_bench::lookup::run(&starling_bench::lookup::LookupBench {
                events,
                keys,
                batch,
                workers,
            })?;
            println!(
                "kv-lookup: {:.0} events/s enriched from a {keys}-key view; plain map {:.0} events/s; lookup/map = {:.2} ({events} events, {workers} workers, batches of {batch})",
                r.lookup_per_sec,
                r.map_per_sec,
                r.lookup_per_sec / r.map_per_sec
            );
            Ok(())
        }
        Cmd::Durability {
            events,
            batch,
            streams,
            workers,
            modes,
        } => {
            use starling_bench::publish::{quic_publish, NodeProcess};
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            let mut baseline = None;
            for mode in &modes {
                let node = NodeProcess::start_with(workers, &["--durability", mode.as_str()])?;
                let r = rt.block_on(quic_publish(
                    &node.http,
                    node.quic,
                    &node.fingerprint,
                    events,
                    batch,
                    streams,
                    None,
                ))?;
                let rate = r.events_per_sec();
                if mode == "none" && baseline.is_none() {
                    baseline = Some(rate);
                }
                let ratio =
                    baseline.map_or(String::new(), |b| format!(" ({:.2} x none)", rate / b));
                println!(
                    "durability {mode:>5}: {rate:.0} events/s{ratio}; publish->ack p50 {} us, p99 {} us, max {} us (batches of {batch}, {streams} streams)",
                    r.p50_us, r.p99_us, r.max_us
                );
            }
            Ok(())
        }
        Cmd::HttpPublish {
            events,
            batch,
            connections,
            workers,
        } => {
            let node = starling_bench::publish::NodeProcess::start(workers)?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            let max = rt.block_on(starling_bench::publish::http_publish(
                &node.http,
                events,
                batch,
                connections,
                None,
            ))?;
            println!(
                "http-publish max: {} events in {:.2}s = {:.0} events/s; publish->ack p50 {} us, p99 {} us, max {} us (batches of {batch}, {connections} connections)",
                max.events, max.elapsed.as_secs_f64(), max.events_per_sec(), max.p50_us, max.p99_us, max.max_us
            );
            drop(node);
            let node = starling_bench::publish::NodeProcess::start(workers)?;
            let half = (max.events_per_sec() / 2.0) as u64;
            let r = rt.block_on(starling_bench::publish::http_publish(
                &node.http,
                events / 2,
                batch,
                connections,
                Some(half),
            ))?;
            println!(
                "http-publish at {half} events/s (half): {:.0} events/s achieved; publish->ack p50 {} us, p99 {} us, max {} us",
                r.events_per_sec(), r.p50_us, r.p99_us, r.max_us
            );
            Ok(())
        }
        Cmd::Window {
            events,
            keys,
            workers,
            out_of_order,
            batch,
            rate,
            inline_generation,
        } => {
            if !(0.0..=1.0).contains(&out_of_order) {
                anyhow::bail!("--out-of-order must be between 0 and 1");
            }
            let mut base = None;
            for w in workers {
                let r = run(&WindowBench {
                    events,
                    keys,
                    workers: w,
                    out_of_order,
                    batch,
                    rate,
                    pregenerate: !inline_generation,
                })?;
                let eps = r.events_per_sec();
                let ratio = base.map(|b: f64| eps / b).unwrap_or(1.0);
                base.get_or_insert(eps);
                println!(
                    "window workers={w} rate={rate}/s pregenerated={} events={} elapsed={:.2}s throughput={:.0} events/s ({:.2}x first) results={}",
                    !inline_generation,
                    r.events,
                    r.elapsed.as_secs_f64(),
                    eps,
                    ratio,
                    r.results
                );
            }
            Ok(())
        }
    }
}
