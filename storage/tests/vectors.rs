//! Vector collections against real files: recall against brute force, persistence, every
//! documented error, and damaged files.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use starling_storage::{
    CollectionSpec, Hit, Metric, StorageError, VectorError, VectorStore, MAX_K, MAX_KEY_BYTES,
    MAX_METADATA_BYTES,
};
use starling_testkit::rng::Rng;

/// A vector with components uniform in [-1, 1), from a seeded generator, so every run uses
/// the same vectors.
fn vector(rng: &mut Rng, dim: usize) -> Vec<f32> {
    (0..dim)
        .map(|_| ((rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0)
        .collect()
}

fn spec(dim: usize, metric: Metric) -> CollectionSpec {
    CollectionSpec { dim, metric }
}

fn vector_error(e: StorageError) -> VectorError {
    match e {
        StorageError::Vector(v) => *v,
        other => panic!("expected a vector error, got {other:?}"),
    }
}

fn keys(hits: &[Hit]) -> Vec<&str> {
    hits.iter().map(|h| h.key.as_str()).collect()
}

fn cosine_distance(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    1.0 - dot / (na * nb)
}

fn normalised(v: &[f32]) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / n).collect()
}

#[test]
fn recall_at_10_on_50k_random_vectors() {
    const N: usize = 50_000;
    const DIM: usize = 128;
    const QUERIES: usize = 100;
    let dir = tempfile::tempdir().unwrap();
    let store = VectorStore::open(dir.path()).unwrap();
    let c = store.create("random", spec(DIM, Metric::Cosine)).unwrap();
    let mut rng = Rng::seeded(42);
    let data: Vec<Vec<f32>> = (0..N).map(|_| vector(&mut rng, DIM)).collect();
    let names: Vec<String> = (0..N).map(|i| format!("v{i}")).collect();

    let start = Instant::now();
    for chunk in (0..N).collect::<Vec<_>>().chunks(5_000) {
        let items: Vec<(&str, &[f32], &[u8])> = chunk
            .iter()
            .map(|&i| (names[i].as_str(), data[i].as_slice(), &b""[..]))
            .collect();
        c.upsert_batch(&items).unwrap();
    }
    let insert = start.elapsed();
    assert_eq!(c.len(), N);

    let start = Instant::now();
    // Brute force on unit vectors: cosine distance is 1 - dot.
    let unit: Vec<Vec<f32>> = data.iter().map(|v| normalised(v)).collect();
    let mut found = 0;
    for _ in 0..QUERIES {
        let q = vector(&mut rng, DIM);
        let qn = normalised(&q);
        let mut exact: Vec<(f32, usize)> = unit
            .iter()
            .enumerate()
            .map(|(i, v)| (-v.iter().zip(&qn).map(|(a, b)| a * b).sum::<f32>(), i))
            .collect();
        exact.select_nth_unstable_by(10, |a, b| a.0.total_cmp(&b.0));
        let truth: HashSet<&str> = exact[..10]
            .iter()
            .map(|(_, i)| names[*i].as_str())
            .collect();
        let hits = c.search(&q, 10, None).unwrap();
        assert_eq!(hits.len(), 10);
        assert!(hits.windows(2).all(|w| w[0].distance <= w[1].distance));
        found += hits
            .iter()
            .filter(|h| truth.contains(h.key.as_str()))
            .count();
    }
    let recall = found as f64 / (QUERIES * 10) as f64;
    eprintln!(
        "recall@10 = {recall:.3}; insert {N} x {DIM}: {insert:?}; {QUERIES} queries + brute force: {:?}",
        start.elapsed()
    );
    assert!(recall >= 0.95, "recall@10 {recall} < 0.95");
}

#[test]
fn search_answers_survive_save_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::seeded(7);
    let queries: Vec<Vec<f32>> = (0..20).map(|_| vector(&mut rng, 16)).collect();
    let before: Vec<Vec<Hit>>;
    {
        let store = VectorStore::open(dir.path()).unwrap();
        let c = store.create("docs", spec(16, Metric::L2)).unwrap();
        for i in 0..2_000 {
            let meta = format!("meta-{i}");
            c.upsert(&format!("k{i}"), &vector(&mut rng, 16), meta.as_bytes())
                .unwrap();
        }
        for i in 0..100 {
            c.delete(&format!("k{i}")).unwrap();
        }
        before = queries
            .iter()
            .map(|q| c.search(q, 10, None).unwrap())
            .collect();
        store.save_all().unwrap();
    }
    let store = VectorStore::open(dir.path()).unwrap();
    assert_eq!(
        store.list(),
        vec![("docs".to_string(), spec(16, Metric::L2), 1_900)]
    );
    let c = store.get("docs").unwrap();
    let after: Vec<Vec<Hit>> = queries
        .iter()
        .map(|q| c.search(q, 10, None).unwrap())
        .collect();
    assert_eq!(before, after);
    let (_, meta) = c.get("k500").unwrap();
    assert_eq!(meta, b"meta-500");
    assert!(c.get("k5").is_none());

    // Changes after the reopen are saved too, and ids keep counting up.
    c.upsert("new", &[0.5; 16], b"n").unwrap();
    c.save().unwrap();
    drop(store);
    let store = VectorStore::open(dir.path()).unwrap();
    let c = store.get("docs").unwrap();
    assert_eq!(c.len(), 1_901);
    assert_eq!(c.search(&[0.5; 16], 1, None).unwrap()[0].key, "new");
    // Only one index file is left.
    let files: Vec<_> = fs::read_dir(dir.path().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(files.len(), 2, "{files:?}");
}

#[test]
fn upsert_replaces_and_delete_removes() {
    let dir = tempfile::tempdir().unwrap();
    let store = VectorStore::open(dir.path()).unwrap();
    let c = store.create("c", spec(2, Metric::L2)).unwrap();
    c.upsert("a", &[0.0, 0.0], b"first").unwrap();
    c.upsert("b", &[10.0, 10.0], b"b").unwrap();
    c.upsert("a", &[20.0, 20.0], b"second").unwrap();
    assert_eq!(c.len(), 2);
    assert_eq!(c.get("a").unwrap(), (vec![20.0, 20.0], b"second".to_vec()));
    let hits = c.search(&[0.0, 0.0], 10, None).unwrap();
    assert_eq!(keys(&hits), ["b", "a"]);
    assert_eq!(hits[1].metadata, b"second");

    assert!(c.delete("b").unwrap());
    assert!(!c.delete("b").unwrap());
    assert!(c.get("b").is_none());
    assert_eq!(keys(&c.search(&[10.0, 10.0], 10, None).unwrap()), ["a"]);
    assert!(c.delete("a").unwrap());
    assert!(c.is_empty());
    assert!(c.search(&[0.0, 0.0], 10, None).unwrap().is_empty());

    // A batch with a repeated key: the later item wins.
    c.upsert_batch(&[("x", &[1.0, 1.0], b"1"), ("x", &[2.0, 2.0], b"2")])
        .unwrap();
    assert_eq!(c.len(), 1);
    assert_eq!(c.get("x").unwrap(), (vec![2.0, 2.0], b"2".to_vec()));
}

#[test]
fn filter_still_returns_k() {
    let dir = tempfile::tempdir().unwrap();
    let store = VectorStore::open(dir.path()).unwrap();
    let c = store.create("f", spec(8, Metric::Cosine)).unwrap();
    let mut rng = Rng::seeded(3);
    let vectors: Vec<Vec<f32>> = (0..5_000).map(|_| vector(&mut rng, 8)).collect();
    let names: Vec<String> = (0..5_000).map(|i| format!("k{i}")).collect();
    let items: Vec<(&str, &[f32], &[u8])> = (0..5_000)
        .map(|i| {
            let tag: &[u8] = if i % 100 == 0 { b"rare" } else { b"common" };
            (names[i].as_str(), vectors[i].as_slice(), tag)
        })
        .collect();
    c.upsert_batch(&items).unwrap();

    let q = vector(&mut rng, 8);
    let rare = |_: &str, m: &[u8]| m == b"rare";
    let hits = c.search(&q, 20, Some(&rare)).unwrap();
    assert_eq!(hits.len(), 20);
    assert!(hits.iter().all(|h| h.metadata == b"rare"));
    assert!(hits.windows(2).all(|w| w[0].distance <= w[1].distance));
    // They are the 20 nearest rare vectors.
    let mut exact: Vec<(f32, &str)> = (0..5_000)
        .filter(|i| i % 100 == 0)
        .map(|i| (cosine_distance(&q, &vectors[i]), names[i].as_str()))
        .collect();
    exact.sort_by(|a, b| a.0.total_cmp(&b.0));
    let truth: HashSet<&str> = exact[..20].iter().map(|(_, k)| *k).collect();
    let got: HashSet<&str> = keys(&hits).into_iter().collect();
    assert!(got.intersection(&truth).count() >= 19);

    // Fewer matches than k: all of them.
    let hits = c.search(&q, 100, Some(&rare)).unwrap();
    assert_eq!(hits.len(), 50);
    // A key filter matching one vector.
    let one = |k: &str, _: &[u8]| k == "k4321";
    assert_eq!(keys(&c.search(&q, 5, Some(&one)).unwrap()), ["k4321"]);
    let none = |_: &str, _: &[u8]| false;
    assert!(c.search(&q, 5, Some(&none)).unwrap().is_empty());
}

#[test]
fn filter_panic_reaches_the_caller() {
    let dir = tempfile::tempdir().unwrap();
    let store = VectorStore::open(dir.path()).unwrap();
    let c = store.create("p", spec(2, Metric::L2)).unwrap();
    c.upsert("a", &[1.0, 0.0], b"").unwrap();
    let boom = |_: &str, _: &[u8]| -> bool { panic!("filter failed") };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        c.search(&[1.0, 0.0], 1, Some(&boom))
    }));
    assert!(result.is_err());
    // The collection still works.
    assert_eq!(c.search(&[1.0, 0.0], 1, None).unwrap().len(), 1);
}

#[test]
fn each_metric_finds_the_right_neighbours() {
    let dir = tempfile::tempdir().unwrap();
    let store = VectorStore::open(dir.path()).unwrap();
    let points: [(&str, [f32; 2]); 4] = [
        ("east", [1.0, 0.0]),
        ("far_east", [10.0, 0.0]),
        ("north", [0.0, 2.0]),
        ("west", [-1.0, 0.0]),
    ];
    for metric in [Metric::Cosine, Metric::L2, Metric::InnerProduct] {
        let c = store.create(&metric.to_string(), spec(2, metric)).unwrap();
        for (k, v) in &points {
            c.upsert(k, v, b"").unwrap();
        }
        let hits = c.search(&[2.0, 0.1], 4, None).unwrap();
        let d: Vec<f32> = hits.iter().map(|h| h.distance).collect();
        match metric {
            // Direction only: east and far_east are equally close (tie broken arbitrarily).
            Metric::Cosine => {
                let first: HashSet<&str> = keys(&hits)[..2].iter().copied().collect();
                assert_eq!(first, HashSet::from(["east", "far_east"]));
                assert_eq!(keys(&hits)[2..], ["north", "west"]);
                let expected = 1.0 - 2.0 / (4.01f32).sqrt();
                assert!((d[0] - expected).abs() < 1e-5, "{d:?}");
                assert!((d[3] - (1.0 + 2.0 / 4.01f32.sqrt())).abs() < 1e-5, "{d:?}");
            }
            // Euclidean distance, not squared.
            Metric::L2 => {
                assert_eq!(keys(&hits), ["east", "north", "west", "far_east"]);
                assert!((d[0] - (1.0f32 + 0.01).sqrt()).abs() < 1e-5, "{d:?}");
                assert!((d[3] - (64.0f32 + 0.01).sqrt()).abs() < 1e-4, "{d:?}");
            }
            // 1 − a·b: magnitude counts.
            Metric::InnerProduct => {
                assert_eq!(keys(&hits), ["far_east", "east", "north", "west"]);
                assert!((d[0] - (1.0 - 20.0)).abs() < 1e-4, "{d:?}");
                assert!((d[1] - (1.0 - 2.0)).abs() < 1e-5, "{d:?}");
            }
        }
    }
}

#[test]
fn metric_names() {
    for (text, metric) in [
        ("cosine", Metric::Cosine),
        ("l2", Metric::L2),
        ("inner_product", Metric::InnerProduct),
        ("ip", Metric::InnerProduct),
        ("Cosine", Metric::Cosine),
    ] {
        assert_eq!(text.parse::<Metric>().unwrap(), metric);
    }
    for metric in [Metric::Cosine, Metric::L2, Metric::InnerProduct] {
        assert_eq!(metric.to_string().parse::<Metric>().unwrap(), metric);
    }
    let e = "hamming".parse::<Metric>().unwrap_err();
    assert!(matches!(e, VectorError::UnknownMetric { .. }));
    assert!(e.to_string().contains("hamming"), "{e}");
}

#[test]
fn store_errors() {
    let dir = tempfile::tempdir().unwrap();
    let store = VectorStore::open(dir.path()).unwrap();
    let good = spec(4, Metric::Cosine);
    let long = "x".repeat(129);
    for name in ["", "a/b", "..", ".", ".hidden", "../up", "tab\there", &long] {
        let e = vector_error(store.create(name, good).unwrap_err());
        assert!(
            matches!(e, VectorError::InvalidName { .. }),
            "{name:?}: {e}"
        );
    }
    assert!(store.create(&"x".repeat(128), good).is_ok());
    for dim in [0, 4097] {
        let e = vector_error(store.create("d", spec(dim, Metric::L2)).unwrap_err());
        assert!(matches!(e, VectorError::InvalidDimension { .. }), "{e}");
    }
    assert!(store.create("d", spec(4096, Metric::L2)).is_ok());

    let a = store.create("same", good).unwrap();
    a.upsert("k", &[1.0, 0.0, 0.0, 0.0], b"").unwrap();
    let again = store.create("same", good).unwrap();
    assert_eq!(
        again.len(),
        1,
        "create with the same spec returns the existing one"
    );
    let e = vector_error(store.create("same", spec(5, Metric::Cosine)).unwrap_err());
    assert!(matches!(e, VectorError::SpecConflict { .. }), "{e}");
    let e = vector_error(store.create("same", spec(4, Metric::L2)).unwrap_err());
    assert!(e.to_string().contains("4-d cosine"), "{e}");

    let e = vector_error(store.get("nope").unwrap_err());
    assert!(e.to_string().contains("nope"), "{e}");

    assert!(store.drop_collection("same").unwrap());
    assert!(!store.drop_collection("same").unwrap());
    assert!(!dir.path().join("same").exists());
    let e = vector_error(a.save().unwrap_err());
    assert!(matches!(e, VectorError::Dropped { .. }), "{e}");
    assert!(store.get("same").is_err());
    let names: Vec<String> = store.list().into_iter().map(|(n, _, _)| n).collect();
    assert_eq!(names, ["d".to_string(), "x".repeat(128)]);
}

#[test]
fn collection_input_errors_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = VectorStore::open(dir.path()).unwrap();
    let c = store.create("c", spec(3, Metric::Cosine)).unwrap();
    c.upsert("keep", &[1.0, 2.0, 3.0], b"m").unwrap();

    let long_key = "k".repeat(MAX_KEY_BYTES + 1);
    let big_meta = vec![0u8; MAX_METADATA_BYTES + 1];
    let cases: Vec<(&str, Vec<f32>, &[u8])> = vec![
        ("keep", vec![1.0, 2.0], b""),
        ("keep", vec![1.0, 2.0, 3.0, 4.0], b""),
        ("keep", vec![f32::NAN, 0.0, 0.0], b""),
        ("keep", vec![f32::INFINITY, 0.0, 0.0], b""),
        ("keep", vec![0.0, 0.0, 0.0], b""),
        ("", vec![1.0, 0.0, 0.0], b""),
        (&long_key, vec![1.0, 0.0, 0.0], b""),
        ("keep", vec![1.0, 0.0, 0.0], &big_meta),
    ];
    for (key, vector, meta) in &cases {
        let e = vector_error(c.upsert(key, vector, meta).unwrap_err());
        eprintln!("{e}");
    }
    let dims = vector_error(c.upsert("keep", &[1.0], b"").unwrap_err());
    assert!(matches!(
        dims,
        VectorError::WrongDimension {
            expected: 3,
            got: 1,
            ..
        }
    ));
    let nan = vector_error(c.upsert("keep", &[0.0, f32::NAN, 0.0], b"").unwrap_err());
    assert!(nan.to_string().contains("index 1"), "{nan}");
    assert!(c
        .upsert("k", &[1.0, 0.0, 0.0], &vec![0u8; MAX_METADATA_BYTES])
        .is_ok());
    assert!(c
        .upsert(&"k".repeat(MAX_KEY_BYTES), &[1.0, 0.0, 0.0], b"")
        .is_ok());
    assert!(c.delete("k").unwrap());
    assert!(c.delete(&"k".repeat(MAX_KEY_BYTES)).unwrap());

    // A batch with one bad item changes nothing.
    let e = c.upsert_batch(&[
        ("new1", &[1.0, 1.0, 1.0], b""),
        ("keep", &[9.0, 9.0, 9.0], b"changed"),
        ("new2", &[f32::NAN, 1.0, 1.0], b""),
    ]);
    assert!(e.is_err());
    assert_eq!(c.len(), 1);
    assert_eq!(c.get("keep").unwrap(), (vec![1.0, 2.0, 3.0], b"m".to_vec()));

    // Queries.
    for q in [
        vec![1.0, 0.0],
        vec![f32::NAN, 0.0, 0.0],
        vec![0.0, 0.0, 0.0],
    ] {
        assert!(c.search(&q, 5, None).is_err(), "{q:?}");
    }
    assert!(c.search(&[1.0, 0.0, 0.0], 0, None).unwrap().is_empty());
    assert_eq!(
        c.search(&[1.0, 0.0, 0.0], MAX_K + 5, None).unwrap().len(),
        1
    );
    let empty = store.create("empty", spec(3, Metric::L2)).unwrap();
    assert!(empty.search(&[0.0, 0.0, 0.0], 5, None).unwrap().is_empty());
}

/// A store with one saved collection; returns the paths of its meta and index files.
fn saved_store(dir: &Path) -> (PathBuf, PathBuf) {
    let store = VectorStore::open(dir).unwrap();
    let c = store.create("c", spec(8, Metric::Cosine)).unwrap();
    let mut rng = Rng::seeded(11);
    for i in 0..300 {
        c.upsert(&format!("k{i}"), &vector(&mut rng, 8), b"metadata")
            .unwrap();
    }
    c.save().unwrap();
    let cdir = dir.join("c");
    let mut index = None;
    for entry in fs::read_dir(&cdir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "usearch") {
            index = Some(path);
        }
    }
    (cdir.join("collection.meta"), index.unwrap())
}

fn assert_corrupt(dir: &Path, file: &Path) {
    let e = vector_error(VectorStore::open(dir).unwrap_err());
    match &e {
        VectorError::Corrupt { path, .. } => assert_eq!(path, file, "{e}"),
        other => panic!("expected Corrupt naming {}, got {other}", file.display()),
    }
    assert!(e.to_string().contains(&file.display().to_string()));
}

#[test]
fn damaged_files_are_reported_on_open() {
    for target in ["meta", "index"] {
        for damage in ["truncate", "flip", "empty"] {
            let dir = tempfile::tempdir().unwrap();
            let (meta, index) = saved_store(dir.path());
            let file = if target == "meta" { &meta } else { &index };
            let mut bytes = fs::read(file).unwrap();
            match damage {
                "truncate" => bytes.truncate(bytes.len() * 2 / 3),
                "flip" => {
                    let at = bytes.len() / 2;
                    bytes[at] ^= 0x5a;
                }
                _ => bytes.clear(),
            }
            fs::write(file, &bytes).unwrap();
            eprintln!("{target}/{damage}:");
            assert_corrupt(dir.path(), file);
        }
    }
    // A missing index file.
    let dir = tempfile::tempdir().unwrap();
    let (_, index) = saved_store(dir.path());
    fs::remove_file(&index).unwrap();
    let e = vector_error(VectorStore::open(dir.path()).unwrap_err());
    assert!(e.to_string().contains(&index.display().to_string()), "{e}");
}

#[test]
fn interrupted_save_keeps_the_previous_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (meta, index) = saved_store(dir.path());
    let cdir = meta.parent().unwrap().to_path_buf();
    // What a crash after writing the new files but before the commit leaves behind.
    fs::write(cdir.join("collection.meta.tmp"), b"partial").unwrap();
    fs::write(cdir.join("index-00000000000000ff.usearch"), b"next").unwrap();
    fs::write(cdir.join("index-00000000000000ff.usearch.tmp"), b"next").unwrap();
    fs::create_dir(dir.path().join(".creating-x")).unwrap();
    let store = VectorStore::open(dir.path()).unwrap();
    assert_eq!(store.get("c").unwrap().len(), 300);
    assert_eq!(store.list().len(), 1);
    let mut left: Vec<PathBuf> = fs::read_dir(&cdir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    left.sort();
    let mut expected = vec![meta, index];
    expected.sort();
    assert_eq!(left, expected);
    assert!(!dir.path().join(".creating-x").exists());
}

#[test]
fn concurrent_readers_and_writers() {
    let dir = tempfile::tempdir().unwrap();
    let store = VectorStore::open(dir.path()).unwrap();
    let c = store.create("c", spec(16, Metric::L2)).unwrap();
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let c = &c;
            s.spawn(move || {
                let mut rng = Rng::seeded(100 + t);
                for i in 0..500 {
                    c.upsert(&format!("{t}-{i}"), &vector(&mut rng, 16), b"")
                        .unwrap();
                }
            });
        }
        for t in 0..16u64 {
            let c = &c;
            s.spawn(move || {
                let mut rng = Rng::seeded(200 + t);
                for _ in 0..200 {
                    c.search(&vector(&mut rng, 16), 5, None).unwrap();
                }
            });
        }
        s.spawn(|| {
            for _ in 0..5 {
                c.save().unwrap();
            }
        });
    });
    assert_eq!(c.len(), 2_000);
}
