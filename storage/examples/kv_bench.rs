//! Rough write and read rates of KV views: `put_batch` in batches of 100 and 1000, then point
//! `get`s of random existing keys.
//!
//! `cargo run --release -p starling-storage --example kv_bench [dir]`
//! (defaults to a directory under the system temp dir, removed afterwards). `SECS` sets the
//! seconds per row (default 2).

use std::time::{Duration, Instant};

use starling_storage::{KvStore, KvWrite};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let explicit = std::env::args().nth(1).map(std::path::PathBuf::from);
    let base = explicit.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("starling-kv-bench-{}", std::process::id()))
    });
    let secs: u64 = std::env::var("SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let run_for = Duration::from_secs(secs);
    let value = [0x5au8; 100];
    println!("16-byte keys, 100-byte values, {secs} s per row");
    println!("{:<34} {:>12} {:>12}", "operation", "calls/s", "entries/s");
    for (batch, ttl) in [(100usize, false), (1000, false), (1000, true)] {
        let dir = base.join(format!("batch-{batch}-{ttl}"));
        let kv = KvStore::open(&dir)?;
        let mut next = 0u64;
        let mut calls = 0u64;
        let started = Instant::now();
        while started.elapsed() < run_for {
            let items: Vec<KvWrite> = (next..next + batch as u64)
                .map(|i| KvWrite::Put {
                    key: key(i),
                    value: value.to_vec(),
                    expires_at_ms: ttl.then_some(1_000_000 + i),
                })
                .collect();
            kv.put_batch("bench", &items)?;
            next += batch as u64;
            calls += 1;
        }
        kv.flush()?;
        let s = started.elapsed().as_secs_f64();
        let label = format!("put_batch {batch}{}", if ttl { " (with TTL)" } else { "" });
        println!(
            "{label:<34} {:>12.0} {:>12.0}",
            calls as f64 / s,
            next as f64 / s
        );

        if batch == 1000 && !ttl {
            let mut gets = 0u64;
            let mut x = 0x9e37_79b9_7f4a_7c15u64;
            let started = Instant::now();
            while started.elapsed() < run_for {
                for _ in 0..1000 {
                    // xorshift: random existing keys, so the cache does not just see a scan.
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let found = kv.get("bench", &key(x % next), 0)?;
                    debug_assert!(found.is_some());
                }
                gets += 1000;
            }
            let s = started.elapsed().as_secs_f64();
            println!(
                "{:<34} {:>12.0} {:>12.0}",
                format!("get (random of {next} keys)"),
                gets as f64 / s,
                gets as f64 / s
            );
        }
    }
    if explicit.is_none() {
        let _ = std::fs::remove_dir_all(&base);
    }
    Ok(())
}

fn key(i: u64) -> Vec<u8> {
    format!("key-{i:012}").into_bytes()
}
