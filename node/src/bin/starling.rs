//! The `starling` binary: parses arguments and calls `starling_node::cli` and `node`.
//! Exit codes: 0 success, 1 runtime error, 2 usage error.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use starling_node::cli;
use starling_node::client::http::HttpClient;
use starling_node::node::{FileConfig, Node, NodeConfig};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "starling",
    version,
    about = "Starling: an incremental dataflow engine for event-driven agents"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// Where the client commands find the node.
#[derive(Args)]
struct Remote {
    /// The node's HTTP address.
    #[arg(long, env = "STARLING_NODE", default_value = "http://127.0.0.1:7070")]
    node: String,
}

#[derive(Args)]
struct NodeArgs {
    /// A TOML file of settings (flags and STARLING_* variables override it).
    #[arg(long, env = "STARLING_CONFIG")]
    config: Option<PathBuf>,
    /// HTTP listen address [default: 127.0.0.1:7070].
    #[arg(long = "http", env = "STARLING_HTTP_ADDR")]
    http_addr: Option<SocketAddr>,
    /// QUIC listen address [default: 127.0.0.1:7071].
    #[arg(long = "quic", env = "STARLING_QUIC_ADDR")]
    quic_addr: Option<SocketAddr>,
    /// Data directory [default: ./starling-data].
    #[arg(long, env = "STARLING_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Timely worker threads [default: the number of cores].
    #[arg(long, env = "STARLING_WORKERS")]
    workers: Option<usize>,
    /// Largest HTTP request body, in bytes [default: 16 MiB].
    #[arg(long, env = "STARLING_MAX_BODY_BYTES")]
    max_body_bytes: Option<usize>,
    /// Largest single event, in bytes [default: 1 MiB].
    #[arg(long, env = "STARLING_MAX_EVENT_BYTES")]
    max_event_bytes: Option<usize>,
    /// Batches a subscriber may leave unread before it is cut off [default: 1024].
    #[arg(long, env = "STARLING_SUBSCRIBER_QUEUE")]
    subscriber_queue: Option<usize>,
    /// When a publish is acknowledged: `batch` (in the log, flushed within 2 × the flush
    /// interval), `sync` (flushed to disk first) or `none` (no log) [default: batch].
    #[arg(long, env = "STARLING_DURABILITY")]
    durability: Option<String>,
    /// Milliseconds between log flushes with `batch` durability [default: 10].
    #[arg(long, env = "STARLING_FLUSH_INTERVAL_MS")]
    flush_interval_ms: Option<u64>,
    /// Shards per topic, fixed when the data directory is created [default: 256].
    #[arg(long, env = "STARLING_SHARDS")]
    shards: Option<u32>,
    /// In a cluster: how many nodes hold each shard, owner included (1 to 7), fixed when the
    /// cluster is created [default: 1].
    #[arg(long, env = "STARLING_REPLICATION")]
    replication: Option<u32>,
    /// Remove log entries older than this many milliseconds [default: keep].
    #[arg(long, env = "STARLING_RETENTION_MS")]
    retention_ms: Option<u64>,
    /// Keep at most this many log bytes per topic shard [default: no limit].
    #[arg(long, env = "STARLING_RETENTION_BYTES")]
    retention_bytes: Option<u64>,
    /// Refuse publishes while the data directory has less free space than this, in bytes
    /// [default: 67108864; 0 disables the check].
    #[arg(long, env = "STARLING_MIN_FREE_BYTES")]
    min_free_bytes: Option<u64>,
    /// Milliseconds between checkpoints of window state; a restart replays the log written
    /// after the last one [default: 60000].
    #[arg(long, env = "STARLING_CHECKPOINT_INTERVAL_MS")]
    checkpoint_interval_ms: Option<u64>,
    /// Run as a member of this cluster (enables gossip) [default: starling].
    #[arg(long, env = "STARLING_CLUSTER_ID")]
    cluster_id: Option<String>,
    /// This node's name in the cluster [default: derived from its id].
    #[arg(long, env = "STARLING_NODE_NAME")]
    node_name: Option<String>,
    /// Gossip (UDP) listen address; enables cluster mode [default: 127.0.0.1:7072].
    #[arg(long = "gossip", env = "STARLING_GOSSIP_ADDR")]
    gossip_addr: Option<SocketAddr>,
    /// The peer listener in cluster mode: QUIC for node-to-node traffic only (forwards,
    /// hand-offs, replication, Raft) [default: the --quic IP, a port the OS picks].
    #[arg(long = "peer", env = "STARLING_PEER_ADDR")]
    peer_addr: Option<SocketAddr>,
    /// Gossip address (HOST:PORT) of a member to join through; repeat for several.
    #[arg(long = "seed", env = "STARLING_SEEDS", value_delimiter = ',')]
    seeds: Vec<String>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a node: the engine with its HTTP front door.
    Node(Box<NodeArgs>),
    /// Submit a dataflow definition (YAML or JSON) to a node.
    Submit {
        file: PathBuf,
        #[command(flatten)]
        remote: Remote,
    },
    /// Publish NDJSON events to a topic, from a file or standard input (`-`).
    Publish {
        topic: String,
        file: Option<PathBuf>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Print a live stream: a topic's events or a dataflow output (`DATAFLOW/OUTPUT`).
    Subscribe {
        target: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// List a node's topics.
    Topics {
        #[command(flatten)]
        remote: Remote,
    },
    /// List a node's dataflows with their counters.
    Dataflows {
        #[command(flatten)]
        remote: Remote,
    },
    /// Show whether a node is up, and what it runs.
    Status {
        #[command(flatten)]
        remote: Remote,
    },
    /// Hand a cluster member's shards to the other members (then stop it).
    Leave {
        #[command(flatten)]
        remote: Remote,
    },
    /// Run the support-desk agent on generated traffic and print what it decides.
    Demo {
        /// How long to stream events, in seconds.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// Event-time seconds per wall-clock second.
        #[arg(long, default_value_t = 15)]
        speed: u64,
        /// Messages per second.
        #[arg(long, default_value_t = 40)]
        rate: u64,
        /// Timely worker threads.
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// Seed of the traffic generator.
        #[arg(long, default_value_t = 7)]
        seed: u64,
    },
    /// Check a dataflow definition (YAML or JSON) and print what it would run.
    Check {
        /// The definition file.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("STARLING_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli.cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

fn run(cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Node(args) => runtime()?.block_on(node(*args)),
        Cmd::Submit { file, remote } => {
            let out =
                runtime()?.block_on(cli::remote::submit(&HttpClient::new(&remote.node), &file))?;
            print!("{out}");
            Ok(())
        }
        Cmd::Publish {
            topic,
            file,
            remote,
        } => {
            let n = runtime()?.block_on(cli::remote::publish(
                &HttpClient::new(&remote.node),
                &topic,
                file.as_deref(),
            ))?;
            println!("published {n} events to {topic}");
            Ok(())
        }
        Cmd::Subscribe { target, remote } => runtime()?.block_on(cli::remote::subscribe(
            &HttpClient::new(&remote.node),
            &target,
        )),
        Cmd::Topics { remote } => {
            print!(
                "{}",
                runtime()?.block_on(cli::remote::topics(&HttpClient::new(&remote.node)))?
            );
            Ok(())
        }
        Cmd::Dataflows { remote } => {
            print!(
                "{}",
                runtime()?.block_on(cli::remote::dataflows(&HttpClient::new(&remote.node)))?
            );
            Ok(())
        }
        Cmd::Status { remote } => {
            print!(
                "{}",
                runtime()?.block_on(cli::remote::status(&HttpClient::new(&remote.node)))?
            );
            Ok(())
        }
        Cmd::Leave { remote } => {
            print!(
                "{}",
                runtime()?.block_on(cli::remote::leave(&HttpClient::new(&remote.node)))?
            );
            Ok(())
        }
        Cmd::Demo {
            seconds,
            speed,
            rate,
            workers,
            seed,
        } => {
            let opts = cli::demo::DemoOptions {
                seconds,
                speed: speed.max(1),
                rate: rate.max(1),
                workers: workers.max(1),
                seed,
            };
            cli::demo::run(&opts, &mut std::io::stdout()).map(|_| ())
        }
        Cmd::Check { file } => {
            print!("{}", cli::check::check(&file)?);
            Ok(())
        }
    }
}

async fn node(args: NodeArgs) -> Result<()> {
    let file = match &args.config {
        Some(p) => FileConfig::load(p)?,
        None => FileConfig::default(),
    };
    let overrides = FileConfig {
        http_addr: args.http_addr,
        quic_addr: args.quic_addr,
        data_dir: args.data_dir,
        workers: args.workers,
        max_body_bytes: args.max_body_bytes,
        max_event_bytes: args.max_event_bytes,
        subscriber_queue: args.subscriber_queue,
        durability: args.durability,
        flush_interval_ms: args.flush_interval_ms,
        shards: args.shards,
        replication: args.replication,
        retention_ms: args.retention_ms,
        retention_bytes: args.retention_bytes,
        min_free_bytes: args.min_free_bytes,
        checkpoint_interval_ms: args.checkpoint_interval_ms,
        cluster_id: args.cluster_id,
        node_name: args.node_name,
        gossip_addr: args.gossip_addr,
        peer_addr: args.peer_addr,
        seeds: (!args.seeds.is_empty()).then_some(args.seeds),
    };
    let config = NodeConfig::build(file, overrides)?;
    let node = Node::start(&config).await?;
    println!(
        "starling node listening: http={} quic={} data_dir={} workers={} quic_fingerprint={}{}",
        node.http_addr(),
        node.quic_addr(),
        config.data_dir.display(),
        config.workers,
        node.quic_fingerprint(),
        node.cluster_summary()
            .map(|s| format!(" {s}"))
            .unwrap_or_default()
    );
    use std::io::Write;
    std::io::stdout().flush()?;
    starling_node::node::wait_for_signal().await;
    eprintln!("starling node: shutting down");
    node.shutdown().await;
    println!("starling node: stopped");
    Ok(())
}
