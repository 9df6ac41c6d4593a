//! The QUIC front door end to end: real QUIC on 127.0.0.1, a real engine, a temp data dir.

#[path = "../../engine/tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{engine, row_text, CLICKS_TOPIC};
use starling_node::client::{ClientError, QuicClient, Trust};
use starling_node::operators::flat::{event_from_wire, rows_to_wire, update_from_wire};
use starling_node::operators::Value;
use starling_node::quic::wire::{self, ArchivedRequest, Request, Response, WireValue, MAX_FRAME};
use starling_node::quic::{QuicError, QuicServer};
use starling_node::Engine;
use starling_testkit::rng::Rng;

/// Typed rows through the client, which takes flat cells.
trait PublishValues {
    async fn publish_values(&self, topic: &str, rows: &[Vec<Value>]) -> Result<u64, ClientError>;
}

impl PublishValues for QuicClient {
    async fn publish_values(&self, topic: &str, rows: &[Vec<Value>]) -> Result<u64, ClientError> {
        self.publish(topic, rows_to_wire(rows)).await
    }
}

const ANY: &str = "127.0.0.1:0";

fn per_user() -> String {
    format!(
        r#"
name: per_user
{CLICKS_TOPIC}
inputs:
  - id: c
    topic: clicks
    watermark: {{max_delay: 1s, idle_timeout: 0s, allowed_lateness: 0s}}
nodes:
  - {{id: w, op: window, input: c, kind: tumbling, size: 10s}}
  - id: agg
    op: aggregate
    input: w
    aggregates:
      - {{name: n, fn: count}}
      - {{name: total, fn: sum, expr: amount}}
outputs:
  - {{name: counts, from: agg}}
"#
    )
}

fn click(user: &str, ts: i64, amount: i64) -> Vec<Value> {
    vec![Value::str(user), Value::Timestamp(ts), Value::Int(amount)]
}

fn start(engine: &Arc<Engine>, dir: &Path) -> QuicServer {
    QuicServer::start(Arc::clone(engine), ANY.parse().expect("addr"), dir).expect("server starts")
}

async fn connect(server: &QuicServer) -> QuicClient {
    QuicClient::connect(
        server.local_addr(),
        Trust::Fingerprint(server.fingerprint().into()),
    )
    .await
    .expect("client connects")
}

fn published(engine: &Engine, topic: &str) -> u64 {
    engine
        .topics()
        .into_iter()
        .find(|t| t.spec.name == topic)
        .map(|t| t.published)
        .expect("topic exists")
}

/// An engine with the `per_user` dataflow (and so the `clicks` topic) installed.
fn engine_with_clicks() -> Arc<Engine> {
    let e = Arc::new(engine(2));
    e.install_text(&per_user()).expect("installs");
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_then_subscribe_sees_exact_window_results() {
    let dir = tempfile::tempdir().unwrap();
    let e = Arc::new(engine(2));
    let server = start(&e, dir.path());
    let client = connect(&server).await;

    assert_eq!(client.submit(&per_user()).await.unwrap(), "per_user");
    let mut sub = client.subscribe_output("per_user", "counts").await.unwrap();
    let mut events = client.subscribe_topic("clicks").await.unwrap();
    let rows = vec![
        click("a", 1_000, 1),
        click("b", 2_000, 5),
        click("a", 9_999, 2),
        click("a", 10_000, 7),
    ];
    assert_eq!(client.publish_values("clicks", &rows).await.unwrap(), 4);
    e.advance_watermark_local("clicks", 20_000).unwrap();
    assert!(e
        .wait_until("per_user", 19_999, Duration::from_secs(20))
        .unwrap());

    let want: BTreeMap<String, isize> = [
        r#"["a",0,10000,2,3]"#,
        r#"["a",10000,20000,1,7]"#,
        r#"["b",0,10000,1,5]"#,
    ]
    .iter()
    .map(|s| (s.to_string(), 1))
    .collect();
    let mut got: BTreeMap<String, isize> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while got != want && Instant::now() < deadline {
        if let Ok(batch) = tokio::time::timeout(Duration::from_millis(500), sub.next()).await {
            let batch = batch.unwrap().expect("stream open");
            for (ev, _, diff) in batch.iter().map(|u| update_from_wire(u).unwrap()) {
                *got.entry(row_text(&ev.row)).or_insert(0) += diff;
            }
            got.retain(|_, d| *d != 0);
        }
    }
    assert_eq!(got, want);

    let mut seen = Vec::new();
    while seen.len() < 4 {
        let batch = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("events arrive")
            .unwrap()
            .expect("stream open");
        seen.extend(
            batch
                .iter()
                .map(|ev| row_text(&event_from_wire(ev).unwrap().row)),
        );
    }
    assert_eq!(seen[0], r#"["a",1000,1]"#);

    let dfs = client.dataflows().await.unwrap();
    assert_eq!(dfs.len(), 1);
    assert_eq!(dfs[0].outputs, vec!["counts".to_string()]);
    let topics = client.topics().await.unwrap();
    let clicks = topics.iter().find(|t| t.name == "clicks").unwrap();
    assert_eq!(clicks.published, 4);
    assert_eq!(clicks.key.as_deref(), Some("user"));
    assert_eq!(clicks.time.as_deref(), Some("ts"));
    drop(sub);
    drop(events);
    client.close().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_carry_codes_and_positions() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine_with_clicks();
    let server = start(&e, dir.path());
    let client = connect(&server).await;

    let err = client
        .publish_values("nope", &[click("a", 1, 1)])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("not_found"), "{err}");
    let err = client.subscribe_output("nope", "x").await.err().unwrap();
    assert_eq!(err.code(), Some("not_found"), "{err}");
    let err = client
        .subscribe_output("per_user", "x")
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), Some("not_found"), "{err}");
    let err = client.subscribe_topic("nope").await.err().unwrap();
    assert_eq!(err.code(), Some("not_found"), "{err}");
    let err = client.submit(&per_user()).await.unwrap_err();
    assert_eq!(err.code(), Some("conflict"), "{err}");
    let err = client.submit("name: [").await.unwrap_err();
    assert_eq!(err.code(), Some("bad_request"), "{err}");

    // Bad rows: the error names the first bad one and nothing is applied.
    let bad_arity = vec![click("a", 1, 1), vec![Value::str("b")], click("c", 3, 1)];
    let err = client
        .publish_values("clicks", &bad_arity)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("bad_request"), "{err}");
    assert!(err.to_string().contains("event 1 "), "{err}");
    let bad_type = vec![
        click("a", 1, 1),
        click("b", 2, 2),
        vec![Value::Int(1), Value::Timestamp(3), Value::Int(1)],
    ];
    let err = client
        .publish_values("clicks", &bad_type)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("event 2 ") && err.to_string().contains("user"),
        "{err}"
    );
    let err = client
        .publish_json("clicks", b"{\"user\":\"a\",\"ts\":1}\n{not json}\n")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("event 1 "), "{err}");
    assert_eq!(published(&e, "clicks"), 0);

    // Optional fields take their default; JSON goes through the schema.
    let n = client
        .publish_values(
            "clicks",
            &[vec![Value::str("a"), Value::Int(5), Value::Null]],
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    let n = client
        .publish_json(
            "clicks",
            b"{\"user\":\"a\",\"ts\":1}\n\n{\"user\":\"b\",\"ts\":2,\"amount\":3}\n",
        )
        .await
        .unwrap();
    assert_eq!(n, 2);
    assert_eq!(published(&e, "clicks"), 3);
    client.close().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_by_file_or_fingerprint_and_never_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine_with_clicks();
    let server = start(&e, dir.path());
    let addr = server.local_addr();
    assert_eq!(server.fingerprint().len(), 64);

    let by_file = QuicClient::connect(addr, Trust::CertFile(server.cert_path().to_path_buf()))
        .await
        .expect("trust by file");
    assert!(by_file
        .topics()
        .await
        .unwrap()
        .iter()
        .any(|t| t.name == "clicks"));
    let upper = server.fingerprint().to_ascii_uppercase();
    let by_fp = QuicClient::connect(addr, Trust::Fingerprint(upper))
        .await
        .expect("trust by fingerprint");
    assert!(!by_fp.topics().await.unwrap().is_empty());

    let wrong = "00".repeat(32);
    match QuicClient::connect(addr, Trust::Fingerprint(wrong)).await {
        Err(ClientError::FingerprintMismatch { found, .. }) => {
            assert_eq!(found, server.fingerprint())
        }
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("a wrong fingerprint connected"),
    }
    assert!(matches!(
        QuicClient::connect(addr, Trust::Fingerprint("abc".into())).await,
        Err(ClientError::Trust(_))
    ));
    // Another node's certificate file is not trusted.
    let other_dir = tempfile::tempdir().unwrap();
    let other = start(&e, other_dir.path());
    assert!(
        QuicClient::connect(addr, Trust::CertFile(other.cert_path().to_path_buf()))
            .await
            .is_err()
    );
    other.shutdown().await;
    by_file.close().await;
    by_fp.close().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_is_kept_and_corruption_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine_with_clicks();
    let first = start(&e, dir.path());
    let fp = first.fingerprint().to_string();
    first.shutdown().await;
    let second = start(&e, dir.path());
    assert_eq!(second.fingerprint(), fp);
    let client = connect(&second).await;
    assert!(!client.topics().await.unwrap().is_empty());
    client.close().await;
    second.shutdown().await;

    let cert = dir.path().join("tls").join("cert.der");
    std::fs::write(&cert, b"not a certificate").unwrap();
    let addr: SocketAddr = ANY.parse().unwrap();
    match QuicServer::start(Arc::clone(&e), addr, dir.path()) {
        Err(err @ QuicError::Certificate { .. }) => {
            let text = err.to_string();
            assert!(
                text.contains("cert.der") && text.contains("corrupt"),
                "{text}"
            );
        }
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("a corrupt certificate was accepted"),
    }
    std::fs::remove_file(&cert).unwrap();
    assert!(matches!(
        QuicServer::start(Arc::clone(&e), addr, dir.path()),
        Err(QuicError::Certificate { .. })
    ));
}

#[test]
fn start_outside_a_runtime_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let e = Arc::new(engine(1));
    assert!(matches!(
        QuicServer::start(e, ANY.parse().unwrap(), dir.path()),
        Err(QuicError::NoRuntime)
    ));
}

fn frame_of(body: &[u8]) -> Vec<u8> {
    let mut f = (body.len() as u32).to_le_bytes().to_vec();
    f.extend_from_slice(body);
    f
}

fn publish_frame(rows: Vec<Vec<Value>>) -> Vec<u8> {
    wire::encode(&Request::Publish {
        topic: "clicks".into(),
        rows: rows.iter().map(|r| wire::row_to_wire(r)).collect(),
    })
    .unwrap()
}

/// Generates malformed frame number `i`.
fn hostile(i: usize, rng: &mut Rng) -> Vec<u8> {
    let good = publish_frame(vec![click("a", 1, 1), click("QQQQQQQQQQQQ", 2, 2)]);
    match i % 10 {
        // Truncated: a valid frame cut short.
        0 => good[..rng.below(good.len() as u64) as usize].to_vec(),
        // Huge length prefix (over the limit), then a little data.
        1 => {
            let len = MAX_FRAME as u64 + 1 + rng.below(u32::MAX as u64 - MAX_FRAME as u64);
            let mut f = (len as u32).to_le_bytes().to_vec();
            let n = rng.below(64) as usize;
            f.extend(rng.bytes(n));
            f
        }
        // A length the stream never delivers.
        2 => {
            let mut f = ((MAX_FRAME - 1) as u32).to_le_bytes().to_vec();
            f.extend(rng.bytes(100));
            f
        }
        // Random bytes.
        3 => {
            let n = rng.below(300) as usize;
            rng.bytes(n)
        }
        // A valid length with garbage rkyv (drawn again in the rare case the garbage is a
        // valid archive: a unit variant such as `ListTopics` needs only its tag byte right).
        4 => loop {
            let n = 1 + rng.below(300) as usize;
            let body = rng.bytes(n);
            if wire::decode_request(&body).is_err() {
                break frame_of(&body);
            }
        },
        // A valid frame with some bytes flipped.
        // A valid frame with some bytes flipped (until it no longer decodes: a flip inside a
        // string's text can leave a valid frame).
        5 => loop {
            let mut f = good.clone();
            for _ in 0..1 + rng.below(4) {
                let at = 4 + rng.below(f.len() as u64 - 4) as usize;
                f[at] ^= 1 + rng.below(255) as u8;
            }
            if wire::decode_request(&f[4..]).is_err() {
                break f;
            }
        },
        // A variant tag that does not exist (the root's first byte is the tag).
        6 => {
            let mut f = wire::encode(&Request::ListTopics).unwrap();
            let at = f.len() - std::mem::size_of::<ArchivedRequest>();
            f[at] = 7 + rng.below(249) as u8;
            f
        }
        // A response where a request belongs, or an empty body.
        7 => {
            if rng.below(2) == 0 {
                wire::encode(&Response::Submitted {
                    name: "x".repeat(rng.below(40) as usize),
                })
                .unwrap()
            } else {
                frame_of(&[])
            }
        }
        // Rows of the wrong arity or type, or lying nesting counts.
        8 => match rng.below(4) {
            0 => publish_frame(vec![
                click("a", 1, 1),
                vec![Value::str("a"); 1 + rng.below(2) as usize],
            ]),
            1 => publish_frame(vec![{
                let mut r = click("a", 1, 1);
                r.push(Value::Int(9));
                r
            }]),
            2 => publish_frame(vec![
                click("a", 1, 1),
                vec![Value::Int(1), Value::str("t"), Value::Int(1)],
            ]),
            _ => wire::encode(&Request::Publish {
                topic: "clicks".into(),
                rows: vec![vec![
                    WireValue::Str("a".into()),
                    WireValue::Timestamp(1),
                    WireValue::List(1000 + rng.below(1000) as u32),
                ]],
            })
            .unwrap(),
        },
        // Invalid UTF-8 inside a string.
        _ => {
            let mut f = good.clone();
            let at = f
                .windows(12)
                .position(|w| w == b"QQQQQQQQQQQQ")
                .expect("marker present");
            let bad: &[u8] = [
                &[0xff][..],
                &[0xc3, 0x28],
                &[0xe2, 0x82],
                &[0xed, 0xa0, 0x80],
            ][i % 4];
            f[at + rng.below(4) as usize..][..bad.len()].copy_from_slice(bad);
            f
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_frames_are_refused_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine_with_clicks();
    let server = start(&e, dir.path());
    let client = connect(&server).await;
    let conn = client.connection().clone();
    let before = published(&e, "clicks");
    let mut rng = Rng::seeded(0x5eed_1234_abcd_0042);
    let (mut error_frames, mut resets) = (0, 0);
    for i in 0..400 {
        let bytes = hostile(i, &mut rng);
        let (mut send, mut recv) = conn.open_bi().await.expect("stream opens");
        // The server may stop reading early (too large); a failed write is fine.
        let _ = send.write_all(&bytes).await;
        let _ = send.finish();
        let answer = tokio::time::timeout(Duration::from_secs(10), wire::read_frame(&mut recv))
            .await
            .unwrap_or_else(|_| panic!("frame {i}: no answer"));
        match answer {
            Ok(Some(body)) => match wire::decode_response(&body) {
                Ok(Response::Error { code, .. }) => {
                    assert!(
                        ["bad_request", "too_large", "not_found"].contains(&code.as_str()),
                        "frame {i}: {code}"
                    );
                    error_frames += 1;
                }
                other => panic!(
                    "frame {i} ({} bytes) was not refused: {other:?}",
                    bytes.len()
                ),
            },
            Ok(None) => panic!("frame {i}: stream ended without an answer"),
            Err(_) => resets += 1,
        }
    }
    assert!(
        error_frames >= 300,
        "error frames {error_frames}, resets {resets}"
    );
    assert_eq!(
        published(&e, "clicks"),
        before,
        "a rejected batch was applied"
    );

    // The same connection and a new one still work.
    assert_eq!(
        client
            .publish_values("clicks", &[click("z", 5, 1)])
            .await
            .unwrap(),
        1
    );
    let fresh = connect(&server).await;
    assert_eq!(
        fresh
            .publish_values("clicks", &[click("y", 6, 1), click("x", 7, 1)])
            .await
            .unwrap(),
        2
    );
    assert_eq!(published(&e, "clicks"), before + 3);
    client.close().await;
    fresh.close().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishers_are_all_counted() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine_with_clicks();
    let server = start(&e, dir.path());
    let client = connect(&server).await;
    let batch: Vec<Vec<Value>> = (0..1_000)
        .map(|i| click(&format!("user-{}", i % 97), i, 1))
        .collect();
    let batch = Arc::new(batch);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (c, b) = (client.clone(), Arc::clone(&batch));
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            for _ in 0..25 {
                n += c.publish_values("clicks", &b).await.unwrap();
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    eprintln!("{total} events in {:?}", started.elapsed());
    assert_eq!(total, 200_000);
    assert_eq!(published(&e, "clicks"), 200_000);
    client.close().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_does_not_read_is_cut_off_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let e = Arc::new(
        Engine::start(starling_node::EngineConfig {
            workers: 1,
            subscriber_queue: 2,
            ..Default::default()
        })
        .unwrap(),
    );
    e.install_text(&per_user()).unwrap();
    let server = start(&e, dir.path());
    let client = connect(&server).await;
    let mut sub = client.subscribe_topic("clicks").await.unwrap();
    let batch: Vec<Vec<Value>> = (0..1_000)
        .map(|i| click(&format!("user-with-a-long-name-{i:08}"), i, 1))
        .collect();
    // Nobody reads: QUIC flow control fills, then the engine's queue, then the cut-off.
    let publisher = {
        let e = Arc::clone(&e);
        tokio::task::spawn_blocking(move || {
            for _ in 0..300 {
                e.publish_local("clicks", batch.clone(), true).unwrap();
            }
        })
    };
    publisher.await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut events = 0;
    let err = loop {
        assert!(Instant::now() < deadline, "never cut off");
        match tokio::time::timeout(Duration::from_secs(5), sub.next()).await {
            Ok(Ok(Some(b))) => events += b.len(),
            Ok(Ok(None)) => panic!("ended without a reason"),
            Ok(Err(e)) => break e,
            Err(_) => panic!("stalled"),
        }
    };
    assert_eq!(err.code(), Some("cut_off"), "{err}");
    assert!(events < 300_000, "{events}");
    client.close().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_subscription_releases_it_on_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine_with_clicks();
    let server = start(&e, dir.path());
    let client = connect(&server).await;
    let subscribers = |e: &Engine| {
        e.topics()
            .into_iter()
            .find(|t| t.spec.name == "clicks")
            .map(|t| t.subscribers)
            .unwrap()
    };
    let sub = client.subscribe_topic("clicks").await.unwrap();
    assert_eq!(subscribers(&e), 1);
    drop(sub);
    let deadline = Instant::now() + Duration::from_secs(10);
    while subscribers(&e) > 0 {
        assert!(Instant::now() < deadline, "subscription never released");
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The engine notices a gone subscriber when it next offers it a batch.
        client
            .publish_values("clicks", &[click("a", 1, 1)])
            .await
            .unwrap();
    }
    client.close().await;
    server.shutdown().await;
}

/// Publish rate of one client through real QUIC (run with `--release -- --ignored`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn publish_throughput() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine_with_clicks();
    let server = start(&e, dir.path());
    let client = connect(&server).await;
    // ~100-byte rows: a 40-character user, a timestamp, an amount.
    let rows: Vec<Vec<WireValue>> = (0..1_000)
        .map(|i| wire::row_to_wire(&click(&format!("{:040}", i % 1_000), i, 1)))
        .collect();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (c, rows) = (client.clone(), rows.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            for _ in 0..500 {
                n += c.publish("clicks", rows.clone()).await.unwrap();
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "{total} events in {secs:.2} s: {:.2} M events/s",
        total as f64 / secs / 1e6
    );
    client.close().await;
    server.shutdown().await;
}

/// KV views, series and vector search over QUIC give what the stores hold, and refuse bad
/// requests with codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_series_and_vectors_over_quic() {
    let dir = tempfile::tempdir().unwrap();
    let store = starling_node::durable::Store::open(
        &dir.path().join("data"),
        starling_node::durable::StoreOptions {
            shards: 4,
            ..Default::default()
        },
    )
    .unwrap();
    let e = Arc::new(
        Engine::start(starling_node::EngineConfig {
            workers: 2,
            store: Some(Arc::new(store)),
            clock_interval: Duration::from_millis(20),
            ..Default::default()
        })
        .unwrap(),
    );
    e.install_text(&format!(
        "name: v\n{CLICKS_TOPIC}inputs: [{{id: c, topic: clicks, watermark: {{idle_timeout: 30ms}}}}]\nnodes:\n  - {{id: w, op: window, input: c, kind: tumbling, size: 10s}}\n  - {{id: a, op: aggregate, input: w, aggregates: [{{name: n, fn: count}}]}}\n  - {{id: s, op: series, input: a, name: per_user}}\n  - {{id: p, op: kv_put, input: c, view: last}}\noutputs: [{{name: o, from: s}}]\n"
    ))
    .unwrap();
    let server = start(&e, dir.path());
    let client = connect(&server).await;
    client
        .publish_values("clicks", &[click("ann", 1_000, 5), click("bob", 12_000, 7)])
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let ann = loop {
        if let Some(v) = client.kv_get("last", "ann").await.unwrap() {
            break v;
        }
        assert!(Instant::now() < deadline, "view never written");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let ann: serde_json::Value = serde_json::from_str(&ann).unwrap();
    assert_eq!(ann["amount"], 5);
    assert_eq!(client.kv_get("last", "nobody").await.unwrap(), None);
    let (items, next) = client.kv_scan("last", "", None, 1).await.unwrap();
    assert_eq!(items[0].0, "ann");
    let (items, _) = client
        .kv_scan("last", "", next.as_deref(), 10)
        .await
        .unwrap();
    assert_eq!(
        items.iter().map(|i| i.0.as_str()).collect::<Vec<_>>(),
        ["bob"]
    );
    let points = loop {
        let p = client
            .series_range("per_user", "ann", 0, u64::MAX, 10)
            .await
            .unwrap();
        if !p.is_empty() {
            break p;
        }
        assert!(Instant::now() < deadline, "series never written");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // ann's window [0, 10 s) closed when the idle stream's watermark passed it.
    assert_eq!(points[0].0, 0);

    let vectors = e.store().unwrap().vectors().unwrap();
    let c = vectors
        .create(
            "docs",
            starling_node::durable::CollectionSpec {
                dim: 2,
                metric: starling_node::durable::Metric::L2,
            },
        )
        .unwrap();
    c.upsert("a", &[0.0, 0.0], br#"{"lang":"en"}"#).unwrap();
    c.upsert("b", &[3.0, 4.0], br#"{"lang":"fr"}"#).unwrap();
    let hits = client
        .vector_search("docs", &[3.0, 4.0], 2, "")
        .await
        .unwrap();
    assert_eq!(hits[0].0, "b");
    assert!((hits[1].1 - 5.0).abs() < 1e-4, "{hits:?}");
    let hits = client
        .vector_search("docs", &[3.0, 4.0], 1, r#"{"lang":"en"}"#)
        .await
        .unwrap();
    assert_eq!(hits[0].0, "a");

    for (result, code) in [
        (
            client
                .vector_search("nope", &[1.0, 1.0], 1, "")
                .await
                .map(|_| ()),
            "not_found",
        ),
        (
            client
                .vector_search("docs", &[1.0], 1, "")
                .await
                .map(|_| ()),
            "bad_request",
        ),
        (
            client
                .vector_search("docs", &[1.0, 1.0], 0, "")
                .await
                .map(|_| ()),
            "bad_request",
        ),
        (
            client
                .vector_search("docs", &[1.0, 1.0], 1, "[")
                .await
                .map(|_| ()),
            "bad_request",
        ),
        (
            client.kv_scan("last", "", None, 0).await.map(|_| ()),
            "bad_request",
        ),
        (
            client.kv_get("bad\u{7}view", "k").await.map(|_| ()),
            "bad_request",
        ),
        (
            client
                .series_range("per_user", "bob", 10, 5, 1)
                .await
                .map(|_| ()),
            "bad_request",
        ),
    ] {
        match result {
            Err(ClientError::Server { code: c, message }) => {
                assert_eq!(c, code, "{message}");
                assert!(!message.is_empty());
            }
            other => panic!("expected {code}, got {other:?}"),
        }
    }
}
