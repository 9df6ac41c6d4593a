//! Subscribers that misbehave while another client publishes a lot: one disconnects
//! mid-stream, one never reads (raw TCP, small receive window). Publishing must not stall,
//! the good subscriber sees everything, the slow one is cut off.

mod node_common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use node_common::{clicks_topic, metric_sum, NodeProc};
use serde_json::Value as Json;
use starling_node::client::http::HttpClient;
use tokio::io::AsyncWriteExt;

const TOTAL: u64 = 200_000;
const BATCH: u64 = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_vanishing_subscribers_do_not_stall_publishing() {
    let mut node = NodeProc::start(&["--subscriber-queue", "4"]);
    let http = reqwest::Client::new();
    let client = HttpClient::new(&node.base());
    client.create_topic(&clicks_topic("clicks")).await.unwrap();

    // the good subscriber counts every event and checks their order
    let good = http
        .get(node.url("/v1/topics/clicks/events"))
        .send()
        .await
        .unwrap();
    let seen = Arc::new(AtomicU64::new(0));
    let seen2 = seen.clone();
    let good = tokio::spawn(async move {
        let mut stream = good.bytes_stream();
        let mut buf = Vec::new();
        let mut n = 0u64;
        while let Some(Ok(chunk)) = stream.next().await {
            buf.extend_from_slice(&chunk);
            while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                let j: Json = serde_json::from_slice(&line).unwrap();
                assert!(j.get("error").is_none(), "good subscriber ended: {j}");
                assert_eq!(j["event"]["ts"].as_u64(), Some(n), "{j}");
                n += 1;
                seen2.store(n, Ordering::Relaxed);
                if n == TOTAL {
                    // keep the connection open: it is counted as live below
                    return (n, Some(stream));
                }
            }
        }
        (n, None)
    });

    // one that reads a little and goes away
    let vanishing = http
        .get(node.url("/v1/topics/clicks/events"))
        .send()
        .await
        .unwrap();
    let vanishing = tokio::spawn(async move {
        let mut stream = vanishing.bytes_stream();
        let mut got = 0;
        while let Some(Ok(c)) = stream.next().await {
            got += c.len();
            if got > 10_000 {
                break;
            }
        }
        drop(stream);
    });

    // one that never reads, with a tiny receive window
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(2048).unwrap();
    let mut slow = sock.connect(node.addr).await.unwrap();
    slow.write_all(b"GET /v1/topics/clicks/events HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();

    let start = Instant::now();
    while metric_sum(
        &client.metrics().await.unwrap(),
        "starling_active_subscriptions",
    ) != Some(3.0)
    {
        assert!(start.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // publish, pacing only on the good subscriber (never on the others)
    let t = Instant::now();
    let mut sent = 0u64;
    while sent < TOTAL {
        let mut body = String::with_capacity(BATCH as usize * 40);
        for ts in sent..sent + BATCH {
            body.push_str(&format!("{{\"user\":\"u{}\",\"ts\":{ts}}}\n", ts % 97));
        }
        let req = tokio::time::timeout(
            Duration::from_secs(10),
            client.publish_ndjson("clicks", body.into_bytes()),
        );
        assert_eq!(req.await.expect("publish stalled").unwrap(), BATCH);
        sent += BATCH;
        let wait = Instant::now();
        while seen.load(Ordering::Relaxed) + 2 * BATCH < sent {
            assert!(
                wait.elapsed() < Duration::from_secs(20),
                "good subscriber stuck"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let publish_time = t.elapsed();
    assert!(publish_time < Duration::from_secs(40), "{publish_time:?}");

    let (n, good_stream) = tokio::time::timeout(Duration::from_secs(30), good)
        .await
        .expect("good subscriber finishes")
        .unwrap();
    assert_eq!(n, TOTAL);
    vanishing.await.unwrap();

    // the slow one was cut off and the vanished one is gone; the good one is still live.
    // (An idle NDJSON stream notices a vanished client only at its next write, so the
    // good one stays open until the end of the test.)
    let start = Instant::now();
    loop {
        let m = client.metrics().await.unwrap();
        let cut = metric_sum(&m, "starling_subscriptions_cut_off_total").unwrap_or(0.0);
        let live = metric_sum(&m, "starling_active_subscriptions").unwrap_or(0.0);
        if cut >= 1.0 && live == 1.0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "cut off {cut}, live {live}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let t: Json = http
        .get(node.url("/v1/topics/clicks"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(t["published"], TOTAL);
    // and the node still answers quickly
    let t = Instant::now();
    assert_eq!(
        http.get(node.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert!(t.elapsed() < Duration::from_secs(2));
    // SIGTERM while the never-reading client still holds its connection (its stream is
    // stuck on a full socket): the node still exits 0 promptly
    let t = Instant::now();
    node.sigterm();
    let st = node
        .wait_exit(Duration::from_secs(9))
        .unwrap_or_else(|| panic!("node did not exit; log:\n{}", node.log()));
    assert_eq!(st.code(), Some(0), "log:\n{}", node.log());
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    drop(slow);
    drop(good_stream);
}
