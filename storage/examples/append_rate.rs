//! Rough append rate of the sled event log per durability mode and batch size.
//!
//! `cargo run --release -p starling-storage --example append_rate [dir]`
//! (defaults to a directory under the system temp dir, removed afterwards).

use std::time::{Duration, Instant};

use starling_storage::{Durability, EventLog, LogOptions, SledLog};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let base = std::env::args()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::env::temp_dir().join(format!("starling-append-rate-{}", std::process::id()))
        });
    let payload = [0x5au8; 100];
    let shards: u64 = std::env::var("SHARDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    println!("mode                     batch   appends/s    events/s   MB/s");
    for (name, durability) in [
        ("Batch{interval_ms:10}", Durability::default()),
        (
            "Batch{interval_ms:1000}",
            Durability::Batch { interval_ms: 1000 },
        ),
        ("Sync", Durability::Sync),
    ] {
        for batch in [1usize, 10, 100, 1000] {
            let dir = base.join(format!("{name}-{batch}"));
            let log = SledLog::open(
                &dir,
                LogOptions {
                    durability,
                    ..LogOptions::default()
                },
            )?;
            let refs: Vec<&[u8]> = vec![&payload[..]; batch];
            let started = Instant::now();
            let mut calls = 0u64;
            while started.elapsed() < Duration::from_secs(2) {
                log.append("bench", (calls % shards) as u32, &refs)?;
                calls += 1;
            }
            log.flush()?;
            let secs = started.elapsed().as_secs_f64();
            let events = calls as f64 * batch as f64;
            println!(
                "{name:<23} {batch:>6} {:>11.0} {:>11.0} {:>6.1}",
                calls as f64 / secs,
                events / secs,
                events * payload.len() as f64 / secs / 1e6
            );
            drop(log);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    let _ = std::fs::remove_dir_all(&base);
    Ok(())
}
