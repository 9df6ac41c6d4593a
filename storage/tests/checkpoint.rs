//! Behaviour of checkpoint files through the public `CheckpointStore` API.

use std::fs;
use std::path::PathBuf;

use starling_storage::{CheckpointStore, StorageError, CHECKPOINT_KEEP};

/// The checkpoint files in the directory (what `checkpoint.rs` documents: `*.ckpt`).
fn files(store: &CheckpointStore) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(store.dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "ckpt"))
        .collect();
    out.sort();
    out
}

#[test]
fn a_checkpoint_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::open(dir.path()).unwrap();
    assert_eq!(store.load_latest("flow").unwrap(), None);
    let big = vec![0xabu8; 3 * 1024 * 1024];
    store
        .save(
            "flow",
            42,
            &[
                ("worker-0", b"state zero"),
                ("offsets", b""),
                ("worker-1", &big),
            ],
        )
        .unwrap();
    let c = store.load_latest("flow").unwrap().unwrap();
    assert_eq!(c.id, 42);
    assert_eq!(c.part("worker-0"), Some(&b"state zero"[..]));
    assert_eq!(c.part("offsets"), Some(&b""[..]));
    assert_eq!(c.part("worker-1"), Some(&big[..]));
    assert_eq!(
        c.parts.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        ["worker-0", "offsets", "worker-1"]
    );
    store.save("empty", 0, &[]).unwrap();
    assert_eq!(store.load_latest("empty").unwrap().unwrap().parts, vec![]);
    // Reopening sees the same.
    drop(store);
    let store = CheckpointStore::open(dir.path()).unwrap();
    assert_eq!(store.load_latest("flow").unwrap().unwrap().id, 42);
}

#[test]
fn only_the_newest_two_are_kept_per_name() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::open(dir.path()).unwrap();
    for id in [1u64, 5, 3, 10, 7] {
        store.save("a", id, &[("p", &id.to_be_bytes())]).unwrap();
        store.save("b", id * 100, &[]).unwrap();
    }
    assert_eq!(CHECKPOINT_KEEP, 2);
    assert_eq!(store.list("a").unwrap(), vec![7, 10]);
    assert_eq!(store.list("b").unwrap(), vec![700, 1000]);
    assert_eq!(store.load_latest("a").unwrap().unwrap().id, 10);
    assert_eq!(files(&store).len(), 4);
    store.remove("a").unwrap();
    assert!(store.list("a").unwrap().is_empty());
    assert_eq!(store.load_latest("a").unwrap(), None);
    assert_eq!(store.list("b").unwrap(), vec![700, 1000]);
}

#[test]
fn a_truncated_newest_checkpoint_falls_back_to_the_previous() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::open(dir.path()).unwrap();
    store.save("flow", 1, &[("s", b"old state")]).unwrap();
    store.save("flow", 2, &[("s", b"new state")]).unwrap();
    let newest = files(&store).pop().unwrap();
    let bytes = fs::read(&newest).unwrap();
    for keep in [0, 10, bytes.len() / 2, bytes.len() - 1] {
        fs::write(&newest, &bytes[..keep]).unwrap();
        let c = store.load_latest("flow").unwrap().unwrap();
        assert_eq!(
            (c.id, c.part("s")),
            (1, Some(&b"old state"[..])),
            "truncated to {keep}"
        );
    }
    // A flipped bit in the middle is caught as well.
    let mut flipped = bytes.clone();
    flipped[bytes.len() / 2] ^= 0x10;
    fs::write(&newest, &flipped).unwrap();
    assert_eq!(store.load_latest("flow").unwrap().unwrap().id, 1);
}

#[test]
fn when_every_checkpoint_is_damaged_the_error_names_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::open(dir.path()).unwrap();
    store.save("flow", 1, &[("s", b"one")]).unwrap();
    store.save("flow", 2, &[("s", b"two")]).unwrap();
    let paths = files(&store);
    fs::write(&paths[0], b"garbage").unwrap();
    let b = fs::read(&paths[1]).unwrap();
    fs::write(&paths[1], &b[..b.len() - 3]).unwrap();
    match store.load_latest("flow") {
        Err(e @ StorageError::CorruptCheckpoint { .. }) => {
            let msg = e.to_string();
            let StorageError::CorruptCheckpoint { name, files, .. } = e else {
                unreachable!()
            };
            assert_eq!(name, "flow");
            assert_eq!(
                files,
                vec![paths[1].clone(), paths[0].clone()],
                "newest first"
            );
            for p in &paths {
                assert!(msg.contains(&p.display().to_string()), "{msg}");
            }
        }
        other => panic!("expected CorruptCheckpoint, got {other:?}"),
    }
    // A new save gives an intact one again.
    store.save("flow", 3, &[("s", b"three")]).unwrap();
    assert_eq!(store.load_latest("flow").unwrap().unwrap().id, 3);
}

#[test]
fn a_stray_temporary_file_is_ignored_and_cleaned_up_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::open(dir.path()).unwrap();
    store.save("flow", 1, &[("s", b"one")]).unwrap();
    // What a crash between write and rename leaves behind: a newer, half-written temp file.
    let final_name = files(&store)[0]
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .replace("00000000000000000001", "00000000000000000002");
    let stray = dir.path().join(format!("{final_name}.tmp-999-0"));
    fs::write(&stray, b"STRLCKPT half written").unwrap();
    assert_eq!(store.list("flow").unwrap(), vec![1]);
    assert_eq!(store.load_latest("flow").unwrap().unwrap().id, 1);
    drop(store);
    let store = CheckpointStore::open(dir.path()).unwrap();
    assert!(!stray.exists(), "open removes temporary files");
    assert_eq!(store.load_latest("flow").unwrap().unwrap().id, 1);
}

#[test]
fn hostile_names_stay_inside_the_directory() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("ckpt");
    let store = CheckpointStore::open(&dir).unwrap();
    let names = ["..", "../escape", "a/b", "/abs", ".", "a.b", "a%2Eb", "ünï"];
    for (i, name) in names.iter().enumerate() {
        store
            .save(name, i as u64, &[("n", name.as_bytes())])
            .unwrap();
    }
    for (i, name) in names.iter().enumerate() {
        let c = store.load_latest(name).unwrap().unwrap();
        assert_eq!(
            (c.id, c.part("n")),
            (i as u64, Some(name.as_bytes())),
            "{name}"
        );
    }
    // Everything landed directly in the store's directory, nothing next to it.
    let outside: Vec<_> = fs::read_dir(parent.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(outside, vec![std::ffi::OsString::from("ckpt")]);
    assert_eq!(files(&store).len(), names.len());
    for bad in ["", "a\nb", &"x".repeat(65)] {
        assert!(
            matches!(
                store.save(bad, 1, &[]),
                Err(StorageError::InvalidInput { .. })
            ),
            "{bad:?}"
        );
    }
}
