//! `cargo bench -p starling-bench --bench window`: the windowed-aggregation benchmark at
//! full size (10 M events, 10 k keys, 5 % out of order), 1 worker then 2 in one invocation.
//! Set `STARLING_BENCH_EVENTS` to change the size.

use starling_bench::window::{run, WindowBench};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let events = std::env::var("STARLING_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let mut base = None;
    for workers in [1, 2] {
        match run(&WindowBench {
            events,
            workers,
            ..WindowBench::default()
        }) {
            Ok(r) => {
                let eps = r.events_per_sec();
                let first = *base.get_or_insert(eps);
                println!(
                    "window/tumbling-10s-count-sum workers={workers}: {:.0} events/s ({:.2}x the 1-worker run), {} results",
                    eps,
                    eps / first,
                    r.results
                );
            }
            Err(e) => {
                eprintln!("window benchmark failed: {e:#}");
                std::process::exit(1);
            }
        }
    }
}
