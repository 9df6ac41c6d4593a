//! Behaviour of the time-series store through the public `SeriesStore` API, on real sled files.

use starling_storage::{SeriesStore, SeriesWrite, StorageError, SERIES_MAX_VALUE_BYTES};

fn times(points: &[(u64, Vec<u8>)]) -> Vec<u64> {
    points.iter().map(|(t, _)| *t).collect()
}

#[test]
fn range_is_half_open_in_time_order_and_limited() {
    let dir = tempfile::tempdir().unwrap();
    let s = SeriesStore::open(dir.path()).unwrap();
    // Written out of order, including times that differ only in a high byte.
    for t in [300u64, 100, 256, 0, 200, u64::MAX, 1] {
        s.put("cpu", b"host-1", t, &t.to_be_bytes()).unwrap();
    }
    let all = s.range("cpu", b"host-1", 0, u64::MAX, 100).unwrap();
    assert_eq!(
        times(&all),
        vec![0, 1, 100, 200, 256, 300],
        "u64::MAX is outside [0, MAX)"
    );
    assert!(all.iter().all(|(t, v)| v == &t.to_be_bytes()));
    assert_eq!(
        times(&s.range("cpu", b"host-1", 100, 300, 100).unwrap()),
        vec![100, 200, 256]
    );
    assert_eq!(
        times(&s.range("cpu", b"host-1", 101, 301, 100).unwrap()),
        vec![200, 256, 300]
    );
    assert_eq!(
        times(&s.range("cpu", b"host-1", 0, 300, 2).unwrap()),
        vec![0, 1]
    );
    assert!(s.range("cpu", b"host-1", 300, 300, 10).unwrap().is_empty());
    assert!(s.range("cpu", b"host-1", 300, 100, 10).unwrap().is_empty());
    assert!(s.range("cpu", b"host-1", 0, 300, 0).unwrap().is_empty());
    assert!(s
        .range("cpu", b"host-2", 0, u64::MAX, 10)
        .unwrap()
        .is_empty());
    assert!(s
        .range("mem", b"host-1", 0, u64::MAX, 10)
        .unwrap()
        .is_empty());
}

#[test]
fn an_upsert_replaces_and_deletes_remove_single_points() {
    let dir = tempfile::tempdir().unwrap();
    let s = SeriesStore::open(dir.path()).unwrap();
    s.put("m", b"k", 10, b"first").unwrap();
    s.put("m", b"k", 10, b"late correction").unwrap();
    assert_eq!(
        s.range("m", b"k", 0, 100, 10).unwrap(),
        vec![(10, b"late correction".to_vec())]
    );
    assert!(s.delete("m", b"k", 10).unwrap());
    assert!(!s.delete("m", b"k", 10).unwrap());
    assert!(!s.delete("none", b"k", 10).unwrap());

    s.write_batch(
        "m",
        &[
            SeriesWrite::Put {
                key: b"k".to_vec(),
                time_ms: 1,
                value: b"a".to_vec(),
            },
            SeriesWrite::Put {
                key: b"k".to_vec(),
                time_ms: 2,
                value: b"b".to_vec(),
            },
            SeriesWrite::Delete {
                key: b"k".to_vec(),
                time_ms: 1,
            },
            SeriesWrite::Put {
                key: b"k".to_vec(),
                time_ms: 2,
                value: b"c".to_vec(),
            },
        ],
    )
    .unwrap();
    assert_eq!(
        s.range("m", b"k", 0, 100, 10).unwrap(),
        vec![(2, b"c".to_vec())]
    );

    // A bad item refuses the whole batch.
    let bad = [
        SeriesWrite::Put {
            key: b"k".to_vec(),
            time_ms: 3,
            value: b"ok".to_vec(),
        },
        SeriesWrite::Put {
            key: b"k".to_vec(),
            time_ms: 4,
            value: vec![0; SERIES_MAX_VALUE_BYTES + 1],
        },
    ];
    assert!(matches!(
        s.write_batch("m", &bad),
        Err(StorageError::TooLarge { .. })
    ));
    assert_eq!(times(&s.range("m", b"k", 0, 100, 10).unwrap()), vec![2]);
    assert!(matches!(
        s.put("", b"k", 1, b"v"),
        Err(StorageError::InvalidInput { .. })
    ));
    assert!(matches!(
        s.put("a\u{7}", b"k", 1, b"v"),
        Err(StorageError::InvalidInput { .. })
    ));
    assert_eq!(s.series().unwrap(), vec!["m".to_string()]);
}

#[test]
fn keys_that_prefix_each_other_never_mix() {
    let dir = tempfile::tempdir().unwrap();
    let s = SeriesStore::open(dir.path()).unwrap();
    // "ab" at time t and "a" at a time whose first byte is 'b' would collide without the
    // length prefix.
    let tricky = u64::from_be_bytes(*b"b\0\0\0\0\0\0\x05");
    s.put("x", b"a", 5, b"a@5").unwrap();
    s.put("x", b"a", tricky, b"a@tricky").unwrap();
    s.put("x", b"ab", 5, b"ab@5").unwrap();
    s.put("x", b"", 5, b"empty@5").unwrap();
    s.put("x", b"a\0", 5, b"a0@5").unwrap();
    assert_eq!(
        s.range("x", b"a", 0, u64::MAX, 10).unwrap(),
        vec![(5, b"a@5".to_vec()), (tricky, b"a@tricky".to_vec())]
    );
    assert_eq!(
        s.range("x", b"ab", 0, u64::MAX, 10).unwrap(),
        vec![(5, b"ab@5".to_vec())]
    );
    assert_eq!(
        s.range("x", b"", 0, u64::MAX, 10).unwrap(),
        vec![(5, b"empty@5".to_vec())]
    );
    assert_eq!(
        s.range("x", b"a\0", 0, u64::MAX, 10).unwrap(),
        vec![(5, b"a0@5".to_vec())]
    );
}

#[test]
fn retain_removes_only_older_points_of_every_key() {
    let dir = tempfile::tempdir().unwrap();
    let s = SeriesStore::open(dir.path()).unwrap();
    let mut batch = Vec::new();
    for key in 0..50u32 {
        for t in 0..100u64 {
            batch.push(SeriesWrite::Put {
                key: key.to_be_bytes().to_vec(),
                time_ms: t * 10,
                value: vec![key as u8],
            });
        }
    }
    // Many points of one key, so that one key spans several removal chunks.
    for t in 0..10_000u64 {
        batch.push(SeriesWrite::Put {
            key: b"big".to_vec(),
            time_ms: t,
            value: vec![],
        });
    }
    s.write_batch("r", &batch).unwrap();
    s.put("other", b"k", 0, b"untouched").unwrap();

    assert_eq!(s.retain("r", 0).unwrap(), 0);
    assert_eq!(s.retain("r", 500).unwrap(), 50 * 50 + 500);
    assert_eq!(s.retain("r", 500).unwrap(), 0);
    for key in 0..50u32 {
        let pts = s.range("r", &key.to_be_bytes(), 0, u64::MAX, 1000).unwrap();
        assert_eq!(pts.len(), 50);
        assert_eq!(pts[0].0, 500);
    }
    assert_eq!(s.retain("r", 9_000).unwrap(), 50 * 50 + 8_500);
    assert_eq!(
        s.range("r", b"big", 0, u64::MAX, 100_000).unwrap().len(),
        1_000
    );
    assert_eq!(s.range("other", b"k", 0, 1, 10).unwrap().len(), 1);
    assert_eq!(s.retain("none", 100).unwrap(), 0);
}

#[test]
fn points_survive_reopen_and_drop_series_removes_them() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = SeriesStore::open(dir.path()).unwrap();
        s.put("a", b"k", 1, b"one").unwrap();
        s.put("b", b"k", 2, b"two").unwrap();
        s.flush().unwrap();
    }
    {
        let s = SeriesStore::open(dir.path()).unwrap();
        assert_eq!(s.series().unwrap(), vec!["a".to_string(), "b".to_string()]);
        assert_eq!(
            s.range("a", b"k", 0, 10, 10).unwrap(),
            vec![(1, b"one".to_vec())]
        );
        assert!(s.drop_series("a").unwrap());
        assert!(!s.drop_series("a").unwrap());
    }
    let s = SeriesStore::open(dir.path()).unwrap();
    assert_eq!(s.series().unwrap(), vec!["b".to_string()]);
    assert!(s.range("a", b"k", 0, 10, 10).unwrap().is_empty());
}

#[test]
fn a_damaged_point_is_reported_not_returned() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = SeriesStore::open(dir.path()).unwrap();
        s.put("temp", b"room", 7, b"21.5").unwrap();
        s.put("temp", b"room", 8, b"21.7").unwrap();
    }
    {
        let db = sled::open(dir.path()).unwrap();
        let mut name = b"starling.ts/".to_vec();
        name.extend_from_slice(&4u32.to_be_bytes());
        name.extend_from_slice(b"temp");
        let tree = db.open_tree(name).unwrap();
        let mut key = 4u32.to_be_bytes().to_vec();
        key.extend_from_slice(b"room");
        key.extend_from_slice(&8u64.to_be_bytes());
        let mut v = tree.get(&key).unwrap().unwrap().to_vec();
        v[5] ^= 1;
        tree.insert(key, v).unwrap();
        db.flush().unwrap();
    }
    let s = SeriesStore::open(dir.path()).unwrap();
    assert_eq!(s.range("temp", b"room", 0, 8, 10).unwrap().len(), 1);
    match s.range("temp", b"room", 0, 10, 10) {
        Err(StorageError::CorruptSeries {
            series,
            key,
            time_ms,
            ..
        }) => {
            assert_eq!(
                (series.as_str(), key.as_slice(), time_ms),
                ("temp", &b"room"[..], 8)
            );
        }
        other => panic!("expected CorruptSeries, got {other:?}"),
    }
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _s = SeriesStore::open(dir.path()).unwrap();
    let err = SeriesStore::open(dir.path()).unwrap_err();
    assert!(err.to_string().contains("series store"), "{err}");
}
