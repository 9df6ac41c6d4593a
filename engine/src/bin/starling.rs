//! The `starling` binary: parses arguments and calls `starling_engine::cli`.
//! Exit codes: 0 success, 1 runtime error, 2 usage error.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use starling_engine::cli;

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

#[derive(Subcommand)]
enum Cmd {
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
    let result = match cli.cmd {
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
        Cmd::Check { file } => cli::check::check(&file).map(|s| print!("{s}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
