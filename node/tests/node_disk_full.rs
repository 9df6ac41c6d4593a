//! A full disk: publishes are refused with a clear error, and nothing acknowledged before is
//! lost. The data directory is a small tmpfs mounted by the test (needs root and mount
//! rights; the test says so and skips where it has neither).

mod node_common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use node_common::{clicks_topic, NodeProc};
use serde_json::{json, Value as Json};

struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn mount_tmpfs(at: &std::path::Path, size: &str) -> Option<Mount> {
    std::fs::create_dir_all(at).ok()?;
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(at)
        .stderr(std::process::Stdio::null())
        .status()
        .ok()?
        .success();
    ok.then(|| Mount(at.to_path_buf()))
}

async fn logged_ids(node: &NodeProc) -> BTreeSet<u64> {
    match try_logged_ids(node).await {
        Ok(ids) => ids,
        Err(e) => panic!("log read failed: {e}"),
    }
}

/// Every event id in the log, or the error answer of the first read that failed.
async fn try_logged_ids(node: &NodeProc) -> Result<BTreeSet<u64>, Json> {
    Ok(node_common::read_log(node, "clicks")
        .await?
        .into_keys()
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_publishes_and_keeps_what_was_acknowledged() {
    // The default: the log refuses early, while 4 MiB are still free.
    fill_the_disk(&["--min-free-bytes", "4194304"], "disk almost full").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_reserve_a_write_error_is_an_answer_not_a_hang() {
    // The backend itself hits "no space left": still an error answer, never a request that
    // hangs, and nothing acknowledged lost.
    fill_the_disk(&["--min-free-bytes", "0"], "").await;
}

async fn fill_the_disk(reserve: &[&str], expected_message: &str) {
    // The node's data directory (`<dir>/data`) is the tmpfs.
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("data");
    let Some(mount) = mount_tmpfs(&mnt, "24m") else {
        eprintln!(
            "SKIPPED: cannot mount a tmpfs here (needs root); the full-disk test did not run"
        );
        return;
    };
    let mut extra = vec!["--durability", "sync", "--shards", "4"];
    extra.extend_from_slice(reserve);
    let node = NodeProc::start_in(dir, &extra);
    let http = reqwest::Client::new();
    let r = http
        .post(node.url("/v1/topics"))
        .json(&clicks_topic("clicks"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    let pad = "x".repeat(200);
    let mut acked = BTreeSet::new();
    let mut refusal = None;
    let mut id = 0u64;
    for _ in 0..2_000 {
        let batch: Vec<u64> = (id..id + 500).collect();
        id += 500;
        let body: String = batch
            .iter()
            .map(|i| {
                json!({"user": format!("u{}-{pad}", i % 50), "ts": i, "amount": i}).to_string()
                    + "\n"
            })
            .collect();
        let r = tokio::time::timeout(
            Duration::from_secs(30),
            http.post(node.url("/v1/topics/clicks/events"))
                .header("content-type", "application/x-ndjson")
                .body(body)
                .send(),
        )
        .await
        .expect("a publish on a full disk hung")
        .unwrap();
        let status = r.status().as_u16();
        let answer: Json = r.json().await.unwrap_or(Json::Null);
        if status == 200 {
            acked.extend(batch);
        } else {
            refusal = Some((status, answer));
            break;
        }
    }
    let (status, answer) = refusal.expect("the disk never filled up");
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["code"], "storage_unavailable", "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains(expected_message),
        "{answer}"
    );
    assert!(!acked.is_empty());
    eprintln!(
        "disk full after {} acknowledged events: {}",
        acked.len(),
        answer["message"]
    );

    // The node stays up and keeps refusing clearly. sled stops serving reads too after a
    // write failed (its I/O error is sticky until a restart), so a read now either shows every
    // acknowledged event or is refused with the same clear error.
    let mut node = node;
    assert!(
        node.alive(),
        "the node died on a full disk:\n{}",
        node.log()
    );
    let r = tokio::time::timeout(
        Duration::from_secs(30),
        http.post(node.url("/v1/topics/clicks/events"))
            .header("content-type", "application/x-ndjson")
            .body(json!({"user": "u", "ts": 1, "amount": 1}).to_string())
            .send(),
    )
    .await
    .expect("a publish after the disk filled hung")
    .unwrap();
    assert_eq!(r.status(), 503);
    match tokio::time::timeout(Duration::from_secs(30), try_logged_ids(&node))
        .await
        .expect("a log read on a full disk hung")
    {
        Ok(logged) => {
            let missing: Vec<&u64> = acked.difference(&logged).take(10).collect();
            assert!(
                missing.is_empty(),
                "acknowledged but not in the log: {missing:?}"
            );
        }
        Err(refused) => assert_eq!(refused["code"], "storage_unavailable", "{refused}"),
    }

    // With room again (the tmpfs grown), a restarted node has every acknowledged event.
    let dir_back = node.sigkill();
    let grown = Command::new("mount")
        .args(["-o", "remount,size=256m"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(grown.success());
    let node = NodeProc::start_in(dir_back, &extra);
    let logged = logged_ids(&node).await;
    let missing: Vec<&u64> = acked.difference(&logged).take(10).collect();
    assert!(missing.is_empty(), "lost after restart: {missing:?}");
    let r = http
        .post(node.url("/v1/topics/clicks/events"))
        .header("content-type", "application/x-ndjson")
        .body(json!({"user": "u", "ts": 1, "amount": 1}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "publishes work again once there is room");
    drop(node);
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(mount);
}
