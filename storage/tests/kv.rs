//! Behaviour of KV views through the public `KvStore` API, on real sled files.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use proptest::prelude::*;
use starling_storage::{
    KvPage, KvStore, KvWrite, StorageError, KV_MAX_KEY_BYTES, KV_MAX_VALUE_BYTES,
};

fn put(key: &[u8], value: &[u8], expires_at_ms: Option<u64>) -> KvWrite {
    KvWrite::Put {
        key: key.to_vec(),
        value: value.to_vec(),
        expires_at_ms,
    }
}

/// Pages through `prefix` with page size `limit`; returns every item and the number of pages.
fn scan_all(
    kv: &KvStore,
    view: &str,
    prefix: &[u8],
    limit: usize,
    now: u64,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let KvPage { items, next } = kv.scan(view, prefix, after.as_deref(), limit, now).unwrap();
        assert!(items.len() <= limit);
        out.extend(items);
        match next {
            Some(n) => after = Some(n),
            None => return out,
        }
    }
}

#[test]
fn put_get_overwrite_delete() {
    let dir = tempfile::tempdir().unwrap();
    let kv = KvStore::open(dir.path()).unwrap();
    assert_eq!(kv.get("v", b"k", 0).unwrap(), None);
    kv.put("v", b"k", b"one", None).unwrap();
    assert_eq!(kv.get("v", b"k", 0).unwrap().as_deref(), Some(&b"one"[..]));
    kv.put("v", b"k", b"two", None).unwrap();
    assert_eq!(kv.get("v", b"k", 0).unwrap().as_deref(), Some(&b"two"[..]));
    // Views are separate namespaces.
    assert_eq!(kv.get("w", b"k", 0).unwrap(), None);
    // Empty keys and values are fine.
    kv.put("v", b"", b"", None).unwrap();
    assert_eq!(kv.get("v", b"", 0).unwrap(), Some(vec![]));
    assert!(kv.delete("v", b"k").unwrap());
    assert!(!kv.delete("v", b"k").unwrap());
    assert!(!kv.delete("nowhere", b"k").unwrap());
    assert_eq!(kv.get("v", b"k", 0).unwrap(), None);

    kv.put_batch(
        "v",
        &[
            put(b"a", b"1", None),
            put(b"b", b"2", None),
            KvWrite::Delete { key: b"a".to_vec() },
            put(b"c", b"3", None),
        ],
    )
    .unwrap();
    assert_eq!(kv.get("v", b"a", 0).unwrap(), None);
    assert_eq!(kv.get("v", b"b", 0).unwrap().as_deref(), Some(&b"2"[..]));
    assert_eq!(
        kv.views().unwrap(),
        vec![("v".to_string(), 3)],
        "b, c and the empty key"
    );
    assert!(kv.drop_view("v").unwrap());
    assert!(!kv.drop_view("v").unwrap());
    assert!(kv.views().unwrap().is_empty());
    assert_eq!(kv.get("v", b"b", 0).unwrap(), None);
}

#[test]
fn expired_entries_read_as_absent_and_expire_removes_exactly_those() {
    let dir = tempfile::tempdir().unwrap();
    let kv = KvStore::open(dir.path()).unwrap();
    kv.put("s", b"forever", b"x", None).unwrap();
    kv.put("s", b"t100", b"x", Some(100)).unwrap();
    kv.put("s", b"t200", b"x", Some(200)).unwrap();
    kv.put("other", b"t150", b"x", Some(150)).unwrap();

    // Live strictly before the expiry time, absent from it on, before any sweep.
    assert!(kv.get("s", b"t100", 99).unwrap().is_some());
    assert!(kv.get("s", b"t100", 100).unwrap().is_none());
    let live: Vec<Vec<u8>> = kv
        .scan("s", b"", None, 10, 150)
        .unwrap()
        .items
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(live, vec![b"forever".to_vec(), b"t200".to_vec()]);

    assert_eq!(kv.expire(99).unwrap(), 0);
    assert_eq!(kv.expire(150).unwrap(), 2, "t100 and other/t150");
    assert_eq!(
        kv.views().unwrap(),
        vec![("other".into(), 0), ("s".into(), 2)]
    );
    assert_eq!(kv.expire(150).unwrap(), 0);
    // An expired entry is gone also for readers that pass an earlier clock.
    assert!(kv.get("s", b"t100", 0).unwrap().is_none());
    assert!(kv.get("s", b"t200", 0).unwrap().is_some());

    // Re-putting with another expiry moves its index entry: the old time no longer removes it.
    kv.put("s", b"t200", b"y", Some(500)).unwrap();
    assert_eq!(kv.expire(300).unwrap(), 0);
    assert_eq!(
        kv.get("s", b"t200", 300).unwrap().as_deref(),
        Some(&b"y"[..])
    );
    // Re-putting without expiry removes it from the index altogether.
    kv.put("s", b"t200", b"z", None).unwrap();
    assert_eq!(kv.expire(u64::MAX).unwrap(), 0);
    assert_eq!(
        kv.get("s", b"t200", u64::MAX).unwrap().as_deref(),
        Some(&b"z"[..])
    );
    // A delete removes the index entry too; a later put without expiry is not swept.
    kv.put("s", b"d", b"x", Some(10)).unwrap();
    kv.delete("s", b"d").unwrap();
    kv.put("s", b"d", b"x", None).unwrap();
    assert_eq!(kv.expire(u64::MAX).unwrap(), 0);
    assert!(kv.get("s", b"d", u64::MAX).unwrap().is_some());

    // Many entries: expire goes through more than one chunk.
    let items: Vec<KvWrite> = (0..3000u32)
        .map(|i| put(&i.to_be_bytes(), b"v", Some(1000 + u64::from(i % 7))))
        .collect();
    kv.put_batch("bulk", &items).unwrap();
    assert_eq!(
        kv.expire(1003).unwrap(),
        (0..3000).filter(|i| i % 7 <= 3).count() as u64
    );
    assert_eq!(
        kv.expire(2000).unwrap(),
        (0..3000).filter(|i| i % 7 > 3).count() as u64
    );
}

#[test]
fn paging_with_small_limits_returns_every_key_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let kv = KvStore::open(dir.path()).unwrap();
    let mut expected = Vec::new();
    for i in 0..200u32 {
        let key = format!("user/{i:04}").into_bytes();
        kv.put("p", &key, &i.to_be_bytes(), None).unwrap();
        expected.push((key, i.to_be_bytes().to_vec()));
    }
    kv.put("p", b"user", b"not under user/", None).unwrap();
    kv.put("p", b"usex", b"after the prefix", None).unwrap();
    for limit in [1, 2, 3, 7, 200, 1000] {
        assert_eq!(
            scan_all(&kv, "p", b"user/", limit, 0),
            expected,
            "limit {limit}"
        );
    }
    // A cursor before the prefix starts at the prefix; one past it returns nothing.
    let p = kv.scan("p", b"user/", Some(b"a"), 1, 0).unwrap();
    assert_eq!(p.items[0].0, b"user/0000");
    assert!(kv
        .scan("p", b"user/", Some(b"zzz"), 5, 0)
        .unwrap()
        .items
        .is_empty());
    assert!(matches!(
        kv.scan("p", b"", None, 0, 0),
        Err(StorageError::InvalidInput { .. })
    ));
    // The last page of an exact multiple says nothing more follows.
    let p = kv.scan("p", b"user/01", None, 100, 0).unwrap();
    assert_eq!((p.items.len(), p.next), (100, None));
}

#[test]
fn paging_sees_stable_keys_exactly_once_while_others_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let kv = KvStore::open(dir.path()).unwrap();
    let stable: Vec<Vec<u8>> = (0..500u32)
        .map(|i| format!("k{:05}", i * 2).into_bytes())
        .collect();
    let batch: Vec<KvWrite> = stable.iter().map(|k| put(k, b"s", None)).collect();
    kv.put_batch("c", &batch).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (kv, stop) = (kv.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) {
                // Odd keys between the stable ones come and go.
                let key = format!("k{:05}", (i % 500) * 2 + 1).into_bytes();
                match i % 3 {
                    0 => {
                        kv.delete("c", &key).unwrap();
                    }
                    _ => kv.put("c", &key, b"churn", None).unwrap(),
                }
                i += 1;
            }
        })
    };
    for _ in 0..5 {
        let seen = scan_all(&kv, "c", b"k", 7, 0);
        assert!(
            seen.windows(2).all(|w| w[0].0 < w[1].0),
            "strictly ascending"
        );
        let stable_seen: Vec<Vec<u8>> = seen
            .into_iter()
            .filter(|(_, v)| v == b"s")
            .map(|(k, _)| k)
            .collect();
        assert_eq!(stable_seen, stable);
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
}

#[test]
fn data_and_expiry_index_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let kv = KvStore::open(dir.path()).unwrap();
        kv.put("v", b"a", b"1", None).unwrap();
        kv.put("v", b"b", b"2", Some(100)).unwrap();
        kv.put("w", b"c", b"3", None).unwrap();
        kv.flush().unwrap();
    }
    let kv = KvStore::open(dir.path()).unwrap();
    assert_eq!(kv.views().unwrap(), vec![("v".into(), 2), ("w".into(), 1)]);
    assert_eq!(kv.get("v", b"a", 0).unwrap().as_deref(), Some(&b"1"[..]));
    assert_eq!(kv.get("v", b"b", 0).unwrap().as_deref(), Some(&b"2"[..]));
    assert_eq!(kv.expire(100).unwrap(), 1);
    assert_eq!(kv.views().unwrap(), vec![("v".into(), 1), ("w".into(), 1)]);
}

#[test]
fn a_second_open_of_the_same_directory_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let _kv = KvStore::open(dir.path()).unwrap();
    match KvStore::open(dir.path()) {
        Err(e @ StorageError::Backend { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("held by another process"), "{msg}");
        }
        other => panic!("expected Backend, got {other:?}"),
    }
}

/// The sled tree of a view, as `kv.rs` documents it.
fn raw_tree(db: &sled::Db, view: &str) -> sled::Tree {
    let mut name = b"starling.kv/".to_vec();
    name.extend_from_slice(&(view.len() as u32).to_be_bytes());
    name.extend_from_slice(view.as_bytes());
    db.open_tree(name).unwrap()
}

#[test]
fn a_damaged_value_is_reported_with_view_and_key_never_returned() {
    let dir = tempfile::tempdir().unwrap();
    {
        let kv = KvStore::open(dir.path()).unwrap();
        kv.put("orders", b"o-1", b"first order", None).unwrap();
        kv.put("orders", b"o-2", b"second order", None).unwrap();
    }
    {
        let db = sled::open(dir.path()).unwrap();
        let tree = raw_tree(&db, "orders");
        let mut value = tree.get(b"\x00o-2").unwrap().unwrap().to_vec();
        let last = value.len() - 1;
        value[last] ^= 0x20;
        tree.insert(b"\x00o-2", value).unwrap();
        db.flush().unwrap();
    }
    let kv = KvStore::open(dir.path()).unwrap();
    assert!(kv.get("orders", b"o-1", 0).unwrap().is_some());
    for result in [
        kv.get("orders", b"o-2", 0).map(|_| ()),
        kv.scan("orders", b"o-", None, 10, 0).map(|_| ()),
    ] {
        match result {
            Err(e @ StorageError::CorruptKv { .. }) => {
                let StorageError::CorruptKv { view, key, reason } = &e else {
                    unreachable!()
                };
                assert_eq!((view.as_str(), key.as_slice()), ("orders", &b"o-2"[..]));
                assert!(reason.contains("checksum"), "{reason}");
                assert!(e.to_string().contains("o-2"), "{e}");
            }
            other => panic!("expected CorruptKv, got {other:?}"),
        }
    }
    // The page before the damage is still readable, and the entry can be overwritten.
    assert_eq!(kv.scan("orders", b"o-", None, 1, 0).unwrap().items.len(), 1);
    kv.put("orders", b"o-2", b"fixed", None).unwrap();
    assert_eq!(
        kv.get("orders", b"o-2", 0).unwrap().as_deref(),
        Some(&b"fixed"[..])
    );
}

#[test]
fn bad_names_and_oversized_input_are_refused_with_nothing_written() {
    let dir = tempfile::tempdir().unwrap();
    let kv = KvStore::open(dir.path()).unwrap();
    let long = "v".repeat(201);
    for view in ["", "a\nb", "tab\there", long.as_str()] {
        assert!(
            matches!(
                kv.put(view, b"k", b"v", None),
                Err(StorageError::InvalidInput { .. })
            ),
            "{view:?}"
        );
    }
    kv.put(&"v".repeat(200), b"k", b"v", None).unwrap();
    kv.drop_view(&"v".repeat(200)).unwrap();

    let big_key = vec![1u8; KV_MAX_KEY_BYTES + 1];
    let big_value = vec![1u8; KV_MAX_VALUE_BYTES + 1];
    assert!(matches!(
        kv.put("v", &big_key, b"x", None),
        Err(StorageError::TooLarge {
            what: "key bytes",
            ..
        })
    ));
    assert!(matches!(
        kv.put("v", b"k", &big_value, None),
        Err(StorageError::TooLarge {
            what: "value bytes",
            ..
        })
    ));
    assert!(matches!(
        kv.put("v", b"k", b"x", Some(0)),
        Err(StorageError::InvalidInput { .. })
    ));
    // One bad item refuses the whole batch.
    let batch = [put(b"ok", b"x", None), put(b"k", &big_value, None)];
    assert!(kv.put_batch("v", &batch).is_err());
    assert_eq!(kv.get("v", b"ok", 0).unwrap(), None);
    assert!(kv.views().unwrap().is_empty(), "no view was created");
    // The limits themselves are allowed.
    kv.put(
        "v",
        &vec![2u8; KV_MAX_KEY_BYTES],
        &vec![3u8; KV_MAX_VALUE_BYTES],
        None,
    )
    .unwrap();
}

#[derive(Debug, Clone)]
enum Op {
    Put(Vec<u8>, u8, Option<u64>),
    Delete(Vec<u8>),
    Expire(u64),
    Reopen,
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    // A small alphabet and short keys, so that prefixes and overwrites are common.
    proptest::collection::vec(
        prop_oneof![Just(b'a'), Just(b'b'), Just(0u8), Just(0xff)],
        0..4,
    )
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (key(), any::<u8>(), proptest::option::of(1u64..20)).prop_map(|(k, v, t)| Op::Put(k, v, t)),
        2 => key().prop_map(Op::Delete),
        1 => (0u64..25).prop_map(Op::Expire),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    /// Against a `BTreeMap` model: gets, prefix scans with paging, TTLs and `expire`.
    #[test]
    fn matches_a_btreemap_model(
        ops in proptest::collection::vec(op(), 1..40),
        prefix in key(),
        limit in 1usize..5,
        now in 0u64..25,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut kv = Some(KvStore::open(dir.path()).unwrap());
        // key -> (value, expires_at, 0 = never)
        let mut model: BTreeMap<Vec<u8>, (Vec<u8>, u64)> = BTreeMap::new();
        let live = |exp: u64, now: u64| exp == 0 || now < exp;
        for op in &ops {
            let store = kv.as_ref().unwrap();
            match op {
                Op::Put(k, v, t) => {
                    store.put("m", k, &[*v], *t).unwrap();
                    model.insert(k.clone(), (vec![*v], t.unwrap_or(0)));
                }
                Op::Delete(k) => {
                    let existed = store.delete("m", k).unwrap();
                    prop_assert_eq!(existed, model.remove(k).is_some());
                }
                Op::Expire(at) => {
                    let before = model.len();
                    model.retain(|_, (_, exp)| live(*exp, *at));
                    prop_assert_eq!(store.expire(*at).unwrap(), (before - model.len()) as u64);
                }
                Op::Reopen => {
                    drop(kv.take());
                    kv = Some(KvStore::open(dir.path()).unwrap());
                }
            }
        }
        let store = kv.as_ref().unwrap();
        for (k, (v, exp)) in &model {
            let expected = live(*exp, now).then(|| v.clone());
            prop_assert_eq!(store.get("m", k, now).unwrap(), expected);
        }
        let expected: Vec<(Vec<u8>, Vec<u8>)> = model
            .iter()
            .filter(|(k, (_, exp))| k.starts_with(&prefix) && live(*exp, now))
            .map(|(k, (v, _))| (k.clone(), v.clone()))
            .collect();
        prop_assert_eq!(scan_all(store, "m", &prefix, limit, now), expected);
        let stored = store.views().unwrap().first().map_or(0, |(_, n)| *n);
        prop_assert_eq!(stored, model.len() as u64);
    }
}

#[test]
fn the_store_is_a_shareable_handle() {
    fn is<T: Send + Sync + Clone>() {}
    is::<KvStore>();
}
