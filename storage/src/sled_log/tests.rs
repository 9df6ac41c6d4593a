//! Tests of the encoding, the flusher and recovery that need the log's internals; the
//! behaviour every `EventLog` must have is tested in `storage/tests/log.rs`.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::encoding::*;
use super::marks::MARKS_FILE;
use super::*;

fn sync_options() -> LogOptions {
    LogOptions {
        durability: Durability::Sync,
        ..LogOptions::default()
    }
}

#[test]
fn tree_names_are_length_prefixed_and_round_trip() {
    for topic in ["", "a", "a/b", "ab", "x\u{0}y", "ünïcode"] {
        assert_eq!(decode_tree_name(&tree_name(topic)).as_deref(), Some(topic));
    }
    // "a" + "b/c" and "ab" + "/c" cannot collide, unlike plain concatenation.
    assert_ne!(tree_name("a"), tree_name("ab"));
    assert_eq!(decode_tree_name(b"__sled__default"), None);
    let mut bad = tree_name("abc");
    bad.pop();
    assert_eq!(decode_tree_name(&bad), None);
}

#[test]
fn keys_sort_in_shard_then_offset_order() {
    let keys = [
        entry_key(0, 0),
        entry_key(0, 1),
        entry_key(0, 255),
        entry_key(0, 256),
        entry_key(0, u64::MAX),
        entry_key(1, 0),
        entry_key(u32::MAX, 0),
    ];
    assert!(keys.windows(2).all(|w| w[0] < w[1]));
    assert!(meta_key(u32::MAX)[..] < entry_key(0, 0)[..]);
    assert_eq!(decode_entry_key(&entry_key(7, 42)), Some((7, 42)));
    assert_eq!(decode_entry_key(&meta_key(7)), None);
}

#[test]
fn entry_check_detects_damage_and_misplacement() {
    let key = entry_key(3, 9);
    let v = encode_entry(&key, 1234, b"hello");
    assert_eq!(decode_entry(&key, &v), Ok((1234, &b"hello"[..])));
    let mut flipped = v.clone();
    flipped[ENTRY_HEADER + 1] ^= 0x40;
    assert!(decode_entry(&key, &flipped).is_err());
    assert!(decode_entry(&entry_key(3, 10), &v).is_err());
    assert!(decode_entry(&key, &v[..5]).is_err());
}

#[test]
fn shard_record_round_trips_and_is_checked() {
    let m = ShardMeta {
        next: 10,
        first: 4,
        bytes: 99,
    };
    assert_eq!(ShardMeta::decode(&m.encode()), Ok(m));
    let mut bad = m.encode();
    bad[3] ^= 1;
    assert!(ShardMeta::decode(&bad).is_err());
    assert!(ShardMeta::decode(&bad[..20]).is_err());
}

#[test]
fn a_bad_value_under_a_valid_key_is_reported_as_corrupt_with_its_offset() {
    let dir = tempfile::tempdir().unwrap();
    let log = SledLog::open(dir.path(), sync_options()).unwrap();
    let payloads: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 20]).collect();
    let refs: Vec<&[u8]> = payloads.iter().map(|p| &p[..]).collect();
    log.append("orders", 2, &refs).unwrap();

    let t = log.topic("orders").unwrap();
    let key = entry_key(2, 3);
    let mut value = t.tree.get(key).unwrap().unwrap().to_vec();
    value[ENTRY_HEADER + 5] ^= 0xff;
    t.tree.insert(key, value).unwrap();

    assert_eq!(log.read("orders", 2, 0, 3).unwrap().len(), 3);
    match log.read("orders", 2, 0, 10) {
        Err(StorageError::Corrupt {
            topic,
            shard,
            offset,
            reason,
        }) => {
            assert_eq!((topic.as_str(), shard, offset), ("orders", 2, 3));
            assert!(reason.contains("checksum"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert_eq!(log.read("orders", 2, 4, 10).unwrap().len(), 1);

    // A short value and a missing entry are reported the same way.
    t.tree.insert(entry_key(2, 1), &b"xy"[..]).unwrap();
    assert!(matches!(
        log.read("orders", 2, 1, 1),
        Err(StorageError::Corrupt { offset: 1, .. })
    ));
    t.tree.remove(entry_key(2, 4)).unwrap();
    assert!(matches!(
        log.read("orders", 2, 4, 1),
        Err(StorageError::Corrupt { offset: 4, .. })
    ));

    // truncate_before does not check entries, so it can cut past the damage.
    assert_eq!(log.truncate_before("orders", 2, 4).unwrap(), 4);
    assert_eq!(log.first_offset("orders", 2).unwrap(), 4);
}

#[test]
fn the_background_flusher_keeps_the_disk_close_behind() {
    let dir = tempfile::tempdir().unwrap();
    let log = SledLog::open(
        dir.path(),
        LogOptions {
            durability: Durability::Batch { interval_ms: 5 },
            ..LogOptions::default()
        },
    )
    .unwrap();
    let flusher = log.flusher.as_ref().unwrap();
    log.append("f", 0, &[b"x"]).unwrap();
    let appended = flusher.clock.now_us();
    let deadline = Instant::now() + Duration::from_secs(10);
    while flusher.clock.durable_us.load(Ordering::Acquire) < appended {
        assert!(
            Instant::now() < deadline,
            "background flush never completed"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    // Many small appends never leave the disk more than the window (plus one flush) behind.
    for i in 0..2000u32 {
        log.append("f", 0, &[&i.to_be_bytes()]).unwrap();
    }
    drop(log);
    let log = SledLog::open(dir.path(), sync_options()).unwrap();
    assert_eq!(log.next_offset("f", 0).unwrap(), 2001);
}

#[test]
fn a_damaged_shard_record_is_reported_on_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = SledLog::open(dir.path(), sync_options()).unwrap();
        log.append("t", 5, &[b"x"]).unwrap();
        let t = log.topic("t").unwrap();
        t.tree.insert(meta_key(5), &b"garbage"[..]).unwrap();
        log.flush().unwrap();
    }
    match SledLog::open(dir.path(), sync_options()) {
        Err(StorageError::CorruptMeta { topic, shard, .. }) => {
            assert_eq!((topic.as_str(), shard), ("t", 5));
        }
        other => panic!("expected CorruptMeta, got {other:?}"),
    }
}

#[test]
fn a_torn_tail_is_cut_and_a_hole_in_the_middle_stays_an_error() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = SledLog::open(dir.path(), sync_options()).unwrap();
        log.append("t", 1, &[b"a", b"b", b"c", b"d", b"e"]).unwrap();
        log.append("t", 2, &[b"a", b"b", b"c"]).unwrap();
        let t = log.topic("t").unwrap();
        // Shard 1 lost its last two entries (as sled's blob recovery can do); shard 2 lost
        // one in the middle.
        t.tree.remove(entry_key(1, 3)).unwrap();
        t.tree.remove(entry_key(1, 4)).unwrap();
        t.tree.remove(entry_key(2, 1)).unwrap();
        log.flush().unwrap();
    }
    // A clean close recorded the ends: shorter now is a loss, refused.
    assert!(matches!(
        SledLog::open(dir.path(), sync_options()),
        Err(StorageError::Lost {
            shard: 1,
            have: 3,
            durable: 5,
            ..
        })
    ));
    // After a crash the marks can predate the failed write: then the tail is cut.
    std::fs::remove_file(dir.path().join(MARKS_FILE)).unwrap();
    let log = SledLog::open(dir.path(), sync_options()).unwrap();
    assert_eq!(log.next_offset("t", 1).unwrap(), 3);
    let read: Vec<Vec<u8>> = log
        .read("t", 1, 0, 10)
        .unwrap()
        .into_iter()
        .map(|e| e.1)
        .collect();
    assert_eq!(read, [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
    assert_eq!(log.append("t", 1, &[b"new"]).unwrap(), 3..4);
    assert_eq!(log.next_offset("t", 2).unwrap(), 3);
    assert!(matches!(
        log.read("t", 2, 0, 10),
        Err(StorageError::Corrupt { offset: 1, .. })
    ));
}
