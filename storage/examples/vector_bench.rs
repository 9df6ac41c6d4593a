//! Vector collection benchmark: insert rate, search QPS and recall@10 against brute force for
//! several search expansions, on uniformly random vectors (the hard case for HNSW: real
//! embeddings have a much lower intrinsic dimension and reach higher recall).
//!
//! ```text
//! cargo run --release -p starling-storage --example vector_bench -- [N] [DIM]
//! ```
//!
//! Defaults: N = 100000, DIM = 128, cosine metric, 1000 queries. The last line names the
//! smallest expansion whose recall@10 is at least 0.97 (0.95 plus a margin for other data
//! sets), which is how `HNSW_EXPANSION_SEARCH` was chosen.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use starling_storage::vector::{HNSW_CONNECTIVITY, HNSW_EXPANSION_ADD, HNSW_EXPANSION_SEARCH};
use starling_storage::{CollectionSpec, Metric, VectorCollection, VectorStore};
use starling_testkit::rng::Rng;

type BoxError = Box<dyn std::error::Error>;

const QUERIES: usize = 1000;
const K: usize = 10;
const TARGET_RECALL: f64 = 0.97;

/// A vector with components uniform in [-1, 1), from a seeded generator: the same data on
/// every run.
fn vector(rng: &mut Rng, dim: usize) -> Vec<f32> {
    (0..dim)
        .map(|_| ((rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0)
        .collect()
}

fn normalised(v: &[f32]) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / n).collect()
}

fn arg(position: usize, default: usize) -> Result<usize, String> {
    match std::env::args().nth(position) {
        None => Ok(default),
        Some(text) => text
            .parse()
            .map_err(|_| format!("argument {position} ({text:?}) is not a number")),
    }
}

fn threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Exact top-k (indices into `data`) for every query, on all cores.
fn ground_truth(data: &[Vec<f32>], queries: &[Vec<f32>]) -> Vec<HashSet<usize>> {
    let unit: Vec<Vec<f32>> = data.iter().map(|v| normalised(v)).collect();
    let chunk = queries.len().div_ceil(threads());
    let mut out = Vec::with_capacity(queries.len());
    std::thread::scope(|s| {
        let handles: Vec<_> = queries
            .chunks(chunk)
            .map(|qs| {
                let unit = &unit;
                s.spawn(move || {
                    qs.iter()
                        .map(|q| {
                            let q = normalised(q);
                            let mut d: Vec<(f32, usize)> = unit
                                .iter()
                                .enumerate()
                                .map(|(i, v)| {
                                    (-v.iter().zip(&q).map(|(a, b)| a * b).sum::<f32>(), i)
                                })
                                .collect();
                            d.select_nth_unstable_by(K, |a, b| a.0.total_cmp(&b.0));
                            d[..K].iter().map(|(_, i)| *i).collect::<HashSet<_>>()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            match h.join() {
                Ok(part) => out.extend(part),
                Err(p) => std::panic::resume_unwind(p),
            }
        }
    });
    out
}

/// Runs every query once on `workers` threads; returns the wall time and the hits found.
fn run(
    c: &VectorCollection,
    queries: &[Vec<f32>],
    workers: usize,
) -> Result<(Duration, Vec<Vec<usize>>), BoxError> {
    let chunk = queries.len().div_ceil(workers);
    let start = Instant::now();
    let mut results = Vec::with_capacity(queries.len());
    std::thread::scope(|s| -> Result<(), BoxError> {
        let handles: Vec<_> = queries
            .chunks(chunk)
            .map(|qs| {
                s.spawn(move || {
                    qs.iter()
                        .map(|q| {
                            c.search(q, K, None).map(|hits| {
                                hits.iter()
                                    .filter_map(|h| h.key.parse::<usize>().ok())
                                    .collect::<Vec<_>>()
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()
                })
            })
            .collect();
        for h in handles {
            match h.join() {
                Ok(part) => results.extend(part?),
                Err(p) => std::panic::resume_unwind(p),
            }
        }
        Ok(())
    })?;
    Ok((start.elapsed(), results))
}

fn main() -> Result<(), BoxError> {
    let n = arg(1, 100_000)?;
    let dim = arg(2, 128)?;
    let workers = threads();
    println!(
        "vector_bench: {n} x {dim}-d random vectors, cosine, f32; connectivity {HNSW_CONNECTIVITY}, \
         expansion_add {HNSW_EXPANSION_ADD}; {workers} threads"
    );
    println!(
        "usearch SIMD: compiled {}, available {}",
        usearch::hardware_acceleration_compiled(),
        usearch::hardware_acceleration_available()
    );
    let mut rng = Rng::seeded(2024);
    let data: Vec<Vec<f32>> = (0..n).map(|_| vector(&mut rng, dim)).collect();
    let queries: Vec<Vec<f32>> = (0..QUERIES).map(|_| vector(&mut rng, dim)).collect();
    let names: Vec<String> = (0..n).map(|i| i.to_string()).collect();

    let dir = tempfile::tempdir()?;
    let store = VectorStore::open(dir.path())?;
    let c = store.create(
        "bench",
        CollectionSpec {
            dim,
            metric: Metric::Cosine,
        },
    )?;
    let start = Instant::now();
    for (i, chunk) in data.chunks(10_000).enumerate() {
        let items: Vec<(&str, &[f32], &[u8])> = chunk
            .iter()
            .enumerate()
            .map(|(j, v)| (names[i * 10_000 + j].as_str(), v.as_slice(), &b""[..]))
            .collect();
        c.upsert_batch(&items)?;
    }
    let took = start.elapsed();
    println!(
        "upsert (batches of 10000): {:.0} vectors/s ({took:.2?})",
        n as f64 / took.as_secs_f64()
    );
    let start = Instant::now();
    c.save()?;
    println!("save: {:.2?}", start.elapsed());
    let start = Instant::now();
    drop(store);
    let store = VectorStore::open(dir.path())?;
    let c = store.get("bench")?;
    println!("reopen: {:.2?}", start.elapsed());

    let start = Instant::now();
    let truth = ground_truth(&data, &queries);
    println!("brute force for {QUERIES} queries: {:.2?}", start.elapsed());

    println!("expansion_search  recall@10  QPS(1 thread)  QPS({workers} threads)");
    let mut picked = None;
    for ef in [64, 128, 256, 384, 512, 768, 1024] {
        c.set_search_expansion(ef);
        let (single, results) = run(&c, &queries, 1)?;
        let (multi, _) = run(&c, &queries, workers)?;
        let found: usize = results
            .iter()
            .zip(&truth)
            .map(|(r, t)| r.iter().filter(|i| t.contains(i)).count())
            .sum();
        let recall = found as f64 / (QUERIES * K) as f64;
        println!(
            "{ef:>16}  {recall:>9.3}  {:>13.0}  {:>14.0}",
            QUERIES as f64 / single.as_secs_f64(),
            QUERIES as f64 / multi.as_secs_f64()
        );
        if picked.is_none() && recall >= TARGET_RECALL {
            picked = Some(ef);
        }
    }
    match picked {
        Some(ef) => println!(
            "default: connectivity {HNSW_CONNECTIVITY}, expansion_add {HNSW_EXPANSION_ADD}, \
             expansion_search {ef} (smallest with recall@10 >= {TARGET_RECALL}; built-in \
             default is {HNSW_EXPANSION_SEARCH})"
        ),
        None => println!("no expansion reached recall@10 >= {TARGET_RECALL}"),
    }
    Ok(())
}
