//! A `starling node` process driven over QUIC by the client library: trust by pinned
//! fingerprint and by certificate file, publish typed rows, exact window results.

mod node_common;

use std::time::Duration;

use node_common::NodeProc;
use starling_node::client::{ClientError, QuicClient, Trust};
use starling_node::operators::flat::{rows_to_wire, update_from_wire};
use starling_node::operators::Value;

/// Typed rows through the client, which takes flat cells.
trait PublishValues {
    async fn publish_values(&self, topic: &str, rows: &[Vec<Value>]) -> Result<u64, ClientError>;
}

impl PublishValues for QuicClient {
    async fn publish_values(&self, topic: &str, rows: &[Vec<Value>]) -> Result<u64, ClientError> {
        self.publish(topic, rows_to_wire(rows)).await
    }
}

const DEF: &str = r#"
name: per_user
topics:
  - name: clicks
    key: user
    time: ts
    fields:
      - {name: user, type: string}
      - {name: ts, type: timestamp}
      - {name: amount, type: int}
inputs:
  - id: c
    topic: clicks
    watermark: {max_delay: 0s, idle_timeout: 0s}
nodes:
  - {id: w, op: window, input: c, kind: tumbling, size: 10s}
  - id: agg
    op: aggregate
    input: w
    aggregates:
      - {name: n, fn: count}
      - {name: total, fn: sum, expr: amount}
outputs:
  - {name: counts, from: agg}
"#;

fn row(user: &str, ts: i64, amount: i64) -> Vec<Value> {
    vec![Value::str(user), Value::Timestamp(ts), Value::Int(amount)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_process_over_quic_gives_exact_window_results() {
    let node = NodeProc::start(&[]);
    let addr = node.banner_field("quic").parse().expect("quic address");
    let fingerprint = node.banner_field("quic_fingerprint");
    let client = QuicClient::connect(addr, Trust::Fingerprint(fingerprint.clone()))
        .await
        .expect("connects with the pinned fingerprint");
    assert_eq!(client.submit(DEF).await.expect("submit"), "per_user");
    let mut sub = client
        .subscribe_output("per_user", "counts")
        .await
        .expect("subscribe");
    let accepted = client
        .publish_values(
            "clicks",
            &[
                row("a", 1_000, 1),
                row("b", 2_000, 5),
                row("a", 9_999, 2),
                row("a", 10_000, 7),
            ],
        )
        .await
        .expect("publish");
    assert_eq!(accepted, 4);
    // A later event moves the watermark past both windows.
    client
        .publish_values("clicks", &[row("z", 30_000, 0)])
        .await
        .expect("publish");
    let mut got = Vec::new();
    while got.len() < 3 {
        let batch = tokio::time::timeout(Duration::from_secs(20), sub.next())
            .await
            .expect("results in time")
            .expect("stream ok")
            .expect("stream open");
        for (e, _, d) in batch.iter().map(|u| update_from_wire(u).unwrap()) {
            assert_eq!(d, 1);
            got.push(format!("{:?}", e.row));
        }
    }
    got.sort();
    assert_eq!(
        got,
        vec![
            format!(
                "{:?}",
                vec![
                    Value::str("a"),
                    Value::Timestamp(0),
                    Value::Timestamp(10_000),
                    Value::Int(2),
                    Value::Int(3)
                ]
            ),
            format!(
                "{:?}",
                vec![
                    Value::str("a"),
                    Value::Timestamp(10_000),
                    Value::Timestamp(20_000),
                    Value::Int(1),
                    Value::Int(7)
                ]
            ),
            format!(
                "{:?}",
                vec![
                    Value::str("b"),
                    Value::Timestamp(0),
                    Value::Timestamp(10_000),
                    Value::Int(1),
                    Value::Int(5)
                ]
            ),
        ]
    );

    // Trust by the certificate file the node keeps in its data dir.
    let cert = node.dir.path().join("data").join("tls").join("cert.der");
    let by_file = QuicClient::connect(addr, Trust::CertFile(cert))
        .await
        .expect("connects by file");
    let topics = by_file.topics().await.expect("topics");
    assert!(topics.iter().any(|t| t.name == "clicks"));

    // A wrong pin is refused, never accepted.
    let mut wrong = fingerprint.into_bytes();
    wrong[0] = if wrong[0] == b'0' { b'1' } else { b'0' };
    let wrong = String::from_utf8(wrong).unwrap();
    assert!(QuicClient::connect(addr, Trust::Fingerprint(wrong))
        .await
        .is_err());
}
