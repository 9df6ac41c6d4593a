//! Behaviour of the sled event log through the public `EventLog` trait.

use std::io::{BufRead, BufReader};
use std::ops::Range;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use starling_storage::{Durability, EventLog, LogOptions, Retention, SledLog, StorageError};

fn options(durability: Durability) -> LogOptions {
    LogOptions {
        durability,
        ..LogOptions::default()
    }
}

fn open(dir: &Path, durability: Durability) -> SledLog {
    SledLog::open(dir, options(durability)).expect("open log")
}

/// A payload that is a function of its position, so any stored entry can be checked.
fn payload_for(topic: &str, shard: u32, offset: u64) -> Vec<u8> {
    let len = (offset.wrapping_mul(7919) % 300) as usize;
    let mut p = format!("{topic}/{shard}/{offset}:").into_bytes();
    p.extend((0..len).map(|i| (offset as usize).wrapping_add(i * 31) as u8));
    p
}

fn append_generated(log: &dyn EventLog, topic: &str, shard: u32, n: u64) -> Range<u64> {
    let start = log.next_offset(topic, shard).unwrap();
    let payloads: Vec<Vec<u8>> = (start..start + n)
        .map(|o| payload_for(topic, shard, o))
        .collect();
    let refs: Vec<&[u8]> = payloads.iter().map(|p| &p[..]).collect();
    let r = log.append(topic, shard, &refs).unwrap();
    assert_eq!(r, start..start + n);
    r
}

/// Reads the whole shard and checks density and every payload; returns the entry count.
fn check_shard(log: &dyn EventLog, topic: &str, shard: u32) -> u64 {
    let (first, next) = (
        log.first_offset(topic, shard).unwrap(),
        log.next_offset(topic, shard).unwrap(),
    );
    let mut expected = first;
    loop {
        let chunk = log.read(topic, shard, expected, 1000).unwrap();
        if chunk.is_empty() {
            break;
        }
        for (o, p) in chunk {
            assert_eq!(o, expected, "offsets must be dense");
            assert_eq!(p, payload_for(topic, shard, o), "payload at {o}");
            expected += 1;
        }
    }
    assert_eq!(expected, next);
    next - first
}

const TOPICS: [&str; 5] = ["orders", "orders/eu", "o", "", "ünïcode topic"];

#[test]
fn round_trip_across_topics_and_shards() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), Durability::default());
    for (ti, topic) in TOPICS.iter().enumerate() {
        for shard in [0u32, 1, 7, 255, 256, u32::MAX] {
            for batch in 1..=(ti as u64 + 3) {
                append_generated(&log, topic, shard, batch);
            }
        }
    }
    let mut sorted: Vec<String> = TOPICS.iter().map(|t| t.to_string()).collect();
    sorted.sort();
    assert_eq!(log.topics().unwrap(), sorted);
    for (ti, topic) in TOPICS.iter().enumerate() {
        assert_eq!(
            log.shards(topic).unwrap(),
            vec![0, 1, 7, 255, 256, u32::MAX]
        );
        for shard in [0u32, 1, 7, 255, 256, u32::MAX] {
            let n = (1..=(ti as u64 + 3)).sum::<u64>();
            assert_eq!(check_shard(&log, topic, shard), n);
            // Windows: from the middle, bounded by max.
            let w = log.read(topic, shard, 2, 3).unwrap();
            assert_eq!(w.iter().map(|e| e.0).collect::<Vec<_>>(), vec![2, 3, 4]);
        }
    }
    assert!(log.read("orders", 2, 0, 10).unwrap().is_empty());
    assert!(log.read("nope", 0, 0, 10).unwrap().is_empty());
    assert!(log.read("orders", 0, 1_000, 10).unwrap().is_empty());
    assert!(log.read("orders", 0, 0, 0).unwrap().is_empty());
    assert_eq!(log.next_offset("nope", 3).unwrap(), 0);
    assert!(log.shards("nope").unwrap().is_empty());
    // An empty batch writes nothing and returns the empty range at the end.
    assert_eq!(log.append("orders", 0, &[]).unwrap(), 6..6);
    assert_eq!(log.append("fresh", 0, &[]).unwrap(), 0..0);
    assert!(!log.topics().unwrap().contains(&"fresh".to_string()));
    // Empty payloads are entries like any other.
    assert_eq!(log.append("orders", 0, &[b"", b""]).unwrap(), 6..8);
    assert_eq!(
        log.read("orders", 0, 6, 5).unwrap(),
        vec![(6, vec![]), (7, vec![])]
    );
}

#[test]
fn offsets_are_stable_across_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path(), Durability::default());
        append_generated(&log, "a", 0, 10);
        append_generated(&log, "a", 3, 4);
        append_generated(&log, "ab", 0, 1);
    }
    {
        let log = open(dir.path(), Durability::default());
        assert_eq!(log.topics().unwrap(), vec!["a", "ab"]);
        assert_eq!(log.shards("a").unwrap(), vec![0, 3]);
        assert_eq!(log.next_offset("a", 0).unwrap(), 10);
        assert_eq!(append_generated(&log, "a", 0, 5), 10..15);
        assert_eq!(check_shard(&log, "a", 0), 15);
        assert_eq!(check_shard(&log, "a", 3), 4);
        assert_eq!(check_shard(&log, "ab", 0), 1);
    }
    let log = open(dir.path(), Durability::Sync);
    assert_eq!(log.next_offset("a", 0).unwrap(), 15);
    assert_eq!(check_shard(&log, "a", 0), 15);
}

#[test]
fn sync_appends_survive_dropping_the_handle_without_flush() {
    let dir = tempfile::tempdir().unwrap();
    let mut acked = Vec::new();
    {
        let log = open(dir.path(), Durability::Sync);
        for shard in 0..4 {
            acked.push((shard, append_generated(&log, "s", shard, 3 + shard as u64)));
        }
        // No flush: dropped right after the last acknowledgement.
    }
    let log = open(dir.path(), Durability::Sync);
    for (shard, r) in acked {
        assert_eq!(log.next_offset("s", shard).unwrap(), r.end);
        assert_eq!(check_shard(&log, "s", shard), r.end);
    }
}

#[test]
fn truncation_keeps_next_offset_even_when_everything_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path(), Durability::Sync);
        append_generated(&log, "t", 1, 10);
        assert_eq!(log.truncate_before("t", 1, 4).unwrap(), 4);
        assert_eq!(log.truncate_before("t", 1, 2).unwrap(), 0);
        assert_eq!(log.first_offset("t", 1).unwrap(), 4);
        // A reader behind retention starts at the first stored offset.
        assert_eq!(log.read("t", 1, 0, 2).unwrap()[0].0, 4);
        assert_eq!(check_shard(&log, "t", 1), 6);
        // Past the end is clamped: everything goes, next_offset stays.
        assert_eq!(log.truncate_before("t", 1, 1_000).unwrap(), 6);
        assert_eq!(log.first_offset("t", 1).unwrap(), 10);
        assert_eq!(log.next_offset("t", 1).unwrap(), 10);
        assert!(log.read("t", 1, 0, 100).unwrap().is_empty());
        assert_eq!(log.truncate_before("nope", 0, 5).unwrap(), 0);
    }
    let log = open(dir.path(), Durability::Sync);
    assert_eq!(log.first_offset("t", 1).unwrap(), 10);
    assert_eq!(log.next_offset("t", 1).unwrap(), 10);
    assert_eq!(log.shards("t").unwrap(), vec![1]);
    assert_eq!(append_generated(&log, "t", 1, 2), 10..12);
    assert_eq!(check_shard(&log, "t", 1), 2);
}

#[test]
fn large_truncation_spans_several_atomic_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), Durability::default());
    for _ in 0..10 {
        append_generated(&log, "big", 0, 1000);
    }
    assert_eq!(log.truncate_before("big", 0, 9_500).unwrap(), 9_500);
    assert_eq!(check_shard(&log, "big", 0), 500);
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[test]
fn retention_by_age_removes_only_old_entries() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = now_ms();
    let old_end;
    let (t1, t2);
    {
        let log = open(dir.path(), Durability::default());
        old_end = append_generated(&log, "age", 0, 5).end;
        append_generated(&log, "age", 1, 2);
        t1 = now_ms();
        std::thread::sleep(Duration::from_millis(60));
        t2 = now_ms();
        append_generated(&log, "age", 0, 3);
    }
    assert!(t2 >= t1 + 50 && t1 >= t0);
    let mut opts = options(Durability::default());
    opts.retention = Retention {
        max_age_ms: Some(1_000 + (t2 - t1) / 2),
        max_bytes_per_shard: None,
    };
    let log = SledLog::open(dir.path(), opts).unwrap();
    // Nothing is old enough yet.
    assert_eq!(log.apply_retention(t2).unwrap().entries_removed, 0);
    let report = log.apply_retention(t2 + 1_000).unwrap();
    assert_eq!(report.entries_removed, 7);
    assert_eq!(report.shards_visited, 2);
    assert_eq!(log.first_offset("age", 0).unwrap(), old_end);
    assert_eq!(check_shard(&log, "age", 0), 3);
    assert_eq!(log.first_offset("age", 1).unwrap(), 2);
    assert_eq!(log.next_offset("age", 1).unwrap(), 2);
    // Far in the future: everything goes, offsets stay.
    assert_eq!(
        log.apply_retention(t2 + 1_000_000).unwrap().entries_removed,
        3
    );
    assert_eq!(log.next_offset("age", 0).unwrap(), 8);
    drop(log);
    let log = open(dir.path(), Durability::default());
    assert_eq!(
        (
            log.first_offset("age", 0).unwrap(),
            log.next_offset("age", 0).unwrap()
        ),
        (8, 8)
    );
}

#[test]
fn retention_by_size_keeps_the_newest_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(Durability::default());
    opts.retention = Retention {
        max_age_ms: None,
        max_bytes_per_shard: Some(350),
    };
    let log = SledLog::open(dir.path(), opts).unwrap();
    let payload = [7u8; 100];
    for _ in 0..10 {
        log.append("size", 0, &[&payload]).unwrap();
    }
    log.append("size", 1, &[&payload[..50]]).unwrap();
    let report = log.apply_retention(now_ms()).unwrap();
    assert_eq!(report.entries_removed, 7);
    assert_eq!(report.bytes_removed, 700);
    assert_eq!(log.first_offset("size", 0).unwrap(), 7);
    assert_eq!(log.read("size", 0, 0, 100).unwrap().len(), 3);
    assert_eq!(log.first_offset("size", 1).unwrap(), 0);
    // The byte count survives a reopen and keeps being maintained.
    drop(log);
    let log = SledLog::open(dir.path(), opts).unwrap();
    log.append("size", 0, &[&payload]).unwrap();
    assert_eq!(log.apply_retention(now_ms()).unwrap().entries_removed, 1);
    assert_eq!(log.first_offset("size", 0).unwrap(), 8);
    assert_eq!(log.next_offset("size", 0).unwrap(), 11);
}

#[test]
fn limits_are_enforced_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let opts = LogOptions {
        max_payload_bytes: 100,
        max_batch_entries: 4,
        max_batch_bytes: 250,
        ..LogOptions::default()
    };
    let log = SledLog::open(dir.path(), opts).unwrap();
    let big = [0u8; 101];
    let ok = [0u8; 100];
    let err = log.append("l", 0, &[&ok, &big]).unwrap_err();
    assert!(matches!(
        err,
        StorageError::TooLarge {
            what: "payload bytes",
            size: 101,
            limit: 100
        }
    ));
    assert!(err.to_string().contains("101"), "{err}");
    assert!(matches!(
        log.append("l", 0, &[b"a", b"b", b"c", b"d", b"e"]),
        Err(StorageError::TooLarge {
            what: "batch entries",
            ..
        })
    ));
    assert!(matches!(
        log.append("l", 0, &[&ok, &ok, &ok]),
        Err(StorageError::TooLarge {
            what: "batch bytes",
            size: 300,
            ..
        })
    ));
    assert_eq!(log.next_offset("l", 0).unwrap(), 0);
    assert!(log.topics().unwrap().is_empty());
    assert_eq!(log.append("l", 0, &[&ok, &ok]).unwrap(), 0..2);
}

#[test]
fn a_data_dir_under_a_regular_file_is_unwritable() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let path = file.join("log");
    let err = SledLog::open(&path, LogOptions::default()).unwrap_err();
    match &err {
        StorageError::Unwritable { path: p, .. } => assert_eq!(p, &path),
        other => panic!("expected Unwritable, got {other:?}"),
    }
    assert!(err.to_string().contains("not-a-dir"), "{err}");
}

#[test]
fn a_log_open_elsewhere_is_a_backend_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let _first = open(dir.path(), Durability::default());
    match SledLog::open(dir.path(), LogOptions::default()) {
        Err(StorageError::Backend { context, .. }) => assert!(context.contains("opening")),
        other => panic!("expected Backend, got {other:?}"),
    }
}

#[test]
fn concurrent_appenders_to_one_shard_get_dense_disjoint_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), Durability::default());
    let ranges: Vec<Range<u64>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let log = &log;
                s.spawn(move || {
                    (0..100)
                        .map(|i| {
                            let p = [t as u8, i as u8];
                            log.append("c", 0, &[&p, &p]).unwrap()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let mut starts: Vec<u64> = ranges.iter().map(|r| r.start).collect();
    starts.sort_unstable();
    assert_eq!(starts, (0..400).map(|i| i * 2).collect::<Vec<_>>());
    let all = log.read("c", 0, 0, usize::MAX).unwrap();
    assert_eq!(all.len(), 800);
    for pair in all.chunks(2) {
        assert_eq!(pair[0].1, pair[1].1, "a batch stays contiguous");
    }
}

// ---------------------------------------------------------------------------------------
// Crash test: the test binary re-runs itself as a child that appends with `Sync` and
// prints every acknowledged range; the parent SIGKILLs it and checks the acknowledgements.

const CHILD_ENV: &str = "STARLING_STORAGE_CRASH_CHILD_DIR";
const CRASH_TOPIC: &str = "crash";

/// Child side; a no-op unless the parent set `CHILD_ENV`.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    use std::io::Write;
    let log = open(Path::new(&dir), Durability::Sync);
    let mut out = std::io::stdout().lock();
    for i in 0u64.. {
        let shard = (i % 3) as u32;
        let r = append_generated(&log, CRASH_TOPIC, shard, 1 + i % 5);
        writeln!(out, "ACK {shard} {} {}", r.start, r.end).unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn sigkill_never_loses_an_acknowledged_sync_append() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
        | 1;
    let mut acked: Vec<(u32, Range<u64>)> = Vec::new();
    for round in 0..5 {
        let mut child = Command::new(&exe)
            .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut line = Vec::new();
            loop {
                line.clear();
                match r.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    // Only complete lines are acknowledgements.
                    Ok(_) if line.ends_with(b"\n") => {
                        let text = String::from_utf8_lossy(&line);
                        let f: Vec<&str> = text.split_whitespace().collect();
                        if f.len() == 4 && f[0] == "ACK" {
                            let shard: u32 = f[1].parse().unwrap();
                            let r = f[2].parse::<u64>().unwrap()..f[3].parse::<u64>().unwrap();
                            if tx.send((shard, r)).is_err() {
                                break;
                            }
                        }
                    }
                    Ok(_) => break,
                }
            }
        });
        // Wait for the first acknowledgement, then kill at a random moment.
        let first = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("child acks");
        acked.push(first);
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = Duration::from_millis(20 + seed % 400);
        let started = Instant::now();
        while started.elapsed() < delay {
            if let Ok(a) = rx.recv_timeout(Duration::from_millis(5)) {
                acked.push(a);
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
        reader.join().unwrap();
        acked.extend(rx.try_iter());

        let log = open(dir.path(), Durability::Sync);
        let mut total = 0;
        for shard in 0..3u32 {
            let next = log.next_offset(CRASH_TOPIC, shard).unwrap();
            for (s, r) in &acked {
                if *s == shard {
                    assert!(
                        r.end <= next,
                        "round {round}: acked {r:?} on shard {shard} lost (next {next})"
                    );
                }
            }
            assert_eq!(log.first_offset(CRASH_TOPIC, shard).unwrap(), 0);
            total += check_shard(&log, CRASH_TOPIC, shard);
        }
        eprintln!(
            "round {round}: killed after {delay:?}, {} acknowledged batches so far, {total} entries stored",
            acked.len()
        );
    }
}

#[test]
fn multi_shard_appends_assign_offsets_per_shard_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path(), Durability::Sync);
        log.append("t", 3, &[b"x"]).unwrap();
        let ranges = log
            .append_shards(
                "t",
                &[
                    (3, vec![b"a".as_slice(), b"b"]),
                    (9, vec![b"c".as_slice()]),
                    (3, vec![b"d".as_slice()]),
                    (5, vec![]),
                ],
            )
            .unwrap();
        assert_eq!(ranges, vec![1..3, 0..1, 3..4, 0..0]);
    }
    let log = open(dir.path(), Durability::Sync);
    let read = |shard| -> Vec<Vec<u8>> {
        log.read("t", shard, 0, 100)
            .unwrap()
            .into_iter()
            .map(|(_, p)| p)
            .collect()
    };
    let three = read(3);
    assert_eq!(
        &three[..4],
        &[b"x".to_vec(), b"a".to_vec(), b"b".to_vec(), b"d".to_vec()]
    );
    assert_eq!(read(9)[0], b"c".to_vec());
    assert_eq!(log.shards("t").unwrap(), vec![3, 9]);
}

#[test]
fn multi_shard_limits_count_every_shard() {
    let dir = tempfile::tempdir().unwrap();
    let options = LogOptions {
        max_batch_entries: 3,
        ..LogOptions::default()
    };
    let log = SledLog::open(dir.path(), options).unwrap();
    let err = log
        .append_shards(
            "t",
            &[
                (0, vec![b"a".as_slice(), b"b"]),
                (1, vec![b"c".as_slice(), b"d"]),
            ],
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::TooLarge {
                what: "batch entries",
                ..
            }
        ),
        "{err}"
    );
    assert!(log.shards("t").unwrap().is_empty());
}

#[test]
fn a_diverged_suffix_is_removed_with_its_epoch_marks_and_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path(), Durability::Sync);
        log.mark_epoch("t", 3, 1, 0).unwrap();
        append_generated(&log, "t", 3, 5);
        log.mark_epoch("t", 3, 4, 5).unwrap();
        // An older or equal epoch than the last mark changes nothing.
        log.mark_epoch("t", 3, 2, 7).unwrap();
        append_generated(&log, "t", 3, 5);
        assert_eq!(log.epoch_marks("t", 3).unwrap(), vec![(1, 0), (4, 5)]);
        // Beyond the end: nothing to do.
        assert_eq!(log.truncate_from("t", 3, 10).unwrap(), 0);
        assert_eq!(log.truncate_from("t", 3, 4).unwrap(), 6);
        assert_eq!(log.next_offset("t", 3).unwrap(), 4);
        assert_eq!(log.epoch_marks("t", 3).unwrap(), vec![(1, 0)]);
        assert_eq!(log.read("t", 3, 0, 100).unwrap().len(), 4);
        // The offsets are issued again.
        assert_eq!(log.append("t", 3, &[b"again"]).unwrap(), 4..5);
        // Wait for the recorder to write the lowered end, then some.
        std::thread::sleep(Duration::from_millis(500));
    }
    // The recorded ends went down with the truncation: the reopen is not refused as a loss.
    let log = open(dir.path(), Durability::Sync);
    assert_eq!(log.next_offset("t", 3).unwrap(), 5);
    assert_eq!(log.read("t", 3, 4, 1).unwrap()[0].1, b"again".to_vec());
    assert_eq!(log.epoch_marks("t", 3).unwrap(), vec![(1, 0)]);
    // Truncating below the first retained offset empties the shard at that offset.
    log.truncate_before("t", 3, 3).unwrap();
    log.truncate_from("t", 3, 1).unwrap();
    assert_eq!(
        (
            log.first_offset("t", 3).unwrap(),
            log.next_offset("t", 3).unwrap()
        ),
        (1, 1)
    );
    assert!(log.read("t", 3, 0, 10).unwrap().is_empty());
}
