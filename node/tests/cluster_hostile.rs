//! Hostile input for the node-to-node QUIC requests (`Forward`, `Raft`,
//! `SubscribeOutputLocal`, `SubscribeTopicLocal`, `Handoff`, `Fetch`), sent as raw frames to real node processes' peer
//! listeners: each is refused with a stable code or a refusal in the Raft reply, nothing of a
//! refused batch is applied, and the node stays healthy and in its cluster. The client port
//! refuses every one of them (`peer_only`) and keeps serving.

mod cluster_common;
mod node_common;

use std::time::Duration;

use cluster_common::{cluster_view, member, rt, settled};
use node_common::{clicks_topic, read_log, NodeProc};
use serde_json::Value as Json;
use starling_cluster::raft::{RaftRpc, RpcRequest};
use starling_cluster::{shard_of_hash, Command};
use starling_node::client::http::HttpClient;
use starling_node::client::quic::{QuicClient, Trust};
use starling_node::cluster::PeerClient;
use starling_node::operators::render::snapshot;
use starling_node::operators::Value;
use starling_node::quic::wire::{self, PeerRequest, Response, WireValue, MAX_FRAME};

/// A connection to the node's peer listener, as another member would open it.
async fn connect(node: &NodeProc) -> PeerClient {
    let addr = node.banner_field("peer").parse().expect("peer address");
    PeerClient::connect(
        addr,
        Trust::Fingerprint(node.banner_field("quic_fingerprint")),
        Duration::from_secs(5),
    )
    .await
    .expect("the peer listener accepts a connection")
}

/// A connection to the node's client port.
async fn connect_client(node: &NodeProc) -> QuicClient {
    let addr = node.banner_field("quic").parse().expect("quic address");
    QuicClient::connect(
        addr,
        Trust::Fingerprint(node.banner_field("quic_fingerprint")),
    )
    .await
    .expect("QUIC connects")
}

/// Sends raw bytes on a new stream and reads the one answer frame. `None`: the server
/// closed or reset the stream without an answer frame.
async fn exchange(c: &quinn::Connection, bytes: &[u8]) -> Option<Response> {
    let (mut send, mut recv) = c.open_bi().await.expect("stream opens");
    // The server may stop reading early (a frame over the limit): a failed write is fine.
    let _ = send.write_all(bytes).await;
    let _ = send.finish();
    let frame = tokio::time::timeout(Duration::from_secs(30), wire::read_frame(&mut recv))
        .await
        .expect("an answer within 30 s");
    match frame {
        Ok(Some(body)) => Some(wire::decode_response(&body).expect("a valid response frame")),
        _ => None,
    }
}

async fn ask(c: &PeerClient, req: &PeerRequest) -> Response {
    exchange(
        c.connection().expect("a QUIC link"),
        &wire::encode_peer(req.clone()).expect("encodes"),
    )
    .await
    .expect("an answer frame")
}

fn code(r: &Response) -> &str {
    match r {
        Response::Error { code, .. } => code,
        other => panic!("expected an error, got {other:?}"),
    }
}

fn message(r: &Response) -> &str {
    match r {
        Response::Error { message, .. } => message,
        _ => "",
    }
}

/// A clicks row: user, ts, amount.
fn row(user: &str, ts: i64) -> Vec<WireValue> {
    wire::row_to_wire(&[Value::str(user), Value::Timestamp(ts), Value::Int(1)])
}

fn forward(topic: &str, epochs: Vec<(u32, u64)>, rows: Vec<Vec<WireValue>>) -> PeerRequest {
    PeerRequest::Forward {
        topic: topic.into(),
        epochs,
        rows,
        origin: None,
    }
}

/// A `Handoff` request.
fn handoff(
    shard: u32,
    epoch: u64,
    chunk: u32,
    chunks: u32,
    parts: Vec<wire::WireShardPart>,
) -> PeerRequest {
    PeerRequest::Handoff {
        shard,
        epoch,
        release: 1,
        chunk,
        chunks,
        parts,
    }
}

/// How many events a node's log of `topic` holds.
async fn logged(node: &NodeProc, topic: &str) -> usize {
    read_log(node, topic)
        .await
        .unwrap_or_else(|e| panic!("log of {topic}: {e}"))
        .values()
        .map(|(_, n)| n)
        .sum()
}

/// Every kind of node-to-node request sent to a client port (a single node's, which has no
/// peer listener at all) is refused with `peer_only` and a message naming the request and
/// where it belongs; nothing is logged and the node goes on serving public requests.
#[test]
fn the_client_port_refuses_every_node_to_node_request() {
    let node = NodeProc::start(&["--shards", "16"]);
    rt().block_on(async {
        HttpClient::new(&node.base())
            .create_topic(&clicks_topic("clicks"))
            .await
            .unwrap();
        let c = connect_client(&node).await;
        let every_kind: Vec<(&str, PeerRequest)> = vec![
            (
                "Forward",
                forward("clicks", vec![(0, 1)], vec![row("u1", 1)]),
            ),
            (
                "ForwardEvents",
                PeerRequest::ForwardEvents {
                    topic: "clicks".into(),
                    epochs: vec![(0, 1)],
                    events: Vec::new(),
                },
            ),
            (
                "Mark",
                PeerRequest::Mark {
                    topic: "clicks".into(),
                    node: 1,
                    time: u64::MAX,
                },
            ),
            ("Handoff", handoff(0, 1, 0, 1, Vec::new())),
            (
                "Fetch",
                PeerRequest::Fetch {
                    replica: 1,
                    epochs: vec![(0, 1)],
                    items: Vec::new(),
                    wait_ms: 0,
                    isr: Vec::new(),
                },
            ),
            (
                "Raft",
                PeerRequest::Raft {
                    payload: b"{}".to_vec(),
                },
            ),
            (
                "SubscribeOutputLocal",
                PeerRequest::SubscribeOutputLocal {
                    dataflow: "nope".into(),
                    output: "out".into(),
                },
            ),
            (
                "KvGetLocal",
                PeerRequest::KvGetLocal {
                    view: "v".into(),
                    key: "k".into(),
                },
            ),
            (
                "KvScanLocal",
                PeerRequest::KvScanLocal {
                    view: "v".into(),
                    prefix: String::new(),
                    after: None,
                    limit: 10,
                },
            ),
            (
                "SeriesRangeLocal",
                PeerRequest::SeriesRangeLocal {
                    series: "s".into(),
                    key: "k".into(),
                    from: 0,
                    to: 10,
                    limit: 10,
                },
            ),
            (
                "VectorSearchLocal",
                PeerRequest::VectorSearchLocal {
                    collection: "c".into(),
                    vector: vec![0.0; 4],
                    text: None,
                    k: 1,
                    filter_json: String::new(),
                },
            ),
            (
                "SubscribeTopicLocal",
                PeerRequest::SubscribeTopicLocal {
                    topic: "clicks".into(),
                },
            ),
        ];
        for (name, req) in &every_kind {
            let bytes = wire::encode_peer(req.clone()).expect("encodes");
            let r = exchange(c.connection(), &bytes)
                .await
                .unwrap_or_else(|| panic!("{name}: no answer frame"));
            assert_eq!(code(&r), "peer_only", "{name}: {r:?}");
            assert!(message(&r).contains(name), "{name}: {r:?}");
            assert!(message(&r).contains("peer listener"), "{name}: {r:?}");
        }
        assert_eq!(logged(&node, "clicks").await, 0);
        // The same connection still serves public requests.
        assert!(c.topics().await.unwrap().iter().any(|t| t.name == "clicks"));
        let (status, _) =
            node.raw(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        assert_eq!(status, 200);
        // A single node has no peer listener to reach.
        assert!(!node.banner.contains(" peer="), "{}", node.banner);
    });
}

/// The two doors do not mix: a client (client ALPN) cannot open a connection to the peer
/// listener, a peer (peer ALPN) cannot open one to the client port, and a public request
/// that reaches the peer listener anyway is refused there; the member keeps serving both.
#[test]
fn the_peer_listener_serves_peers_only() {
    let node = member(None, "a");
    rt().block_on(async {
        settled(&[&node], 1, Duration::from_secs(60)).await;
        let fingerprint = node.banner_field("quic_fingerprint");
        let peer_addr = node.banner_field("peer").parse().expect("peer address");
        let quic_addr = node.banner_field("quic").parse().expect("quic address");
        assert_ne!(peer_addr, quic_addr);
        let as_client = QuicClient::connect(peer_addr, Trust::Fingerprint(fingerprint.clone()));
        assert!(
            as_client.await.is_err(),
            "a client connection to the peer listener must fail the handshake"
        );
        let as_peer = PeerClient::connect(
            quic_addr,
            Trust::Fingerprint(fingerprint.clone()),
            Duration::from_secs(5),
        );
        assert!(
            as_peer.await.is_err(),
            "a peer connection to the client port must fail the handshake"
        );
        let p = connect(&node).await;
        let public = wire::encode(&wire::Request::ListTopics).expect("encodes");
        let r = exchange(p.connection().expect("a QUIC link"), &public)
            .await
            .expect("an answer frame");
        assert_eq!(code(&r), "bad_request", "{r:?}");
        assert!(message(&r).contains("peer listener"), "{r:?}");
        // Both doors still serve what they are for.
        assert!(connect_client(&node).await.topics().await.is_ok());
        let r = ask(
            &p,
            &PeerRequest::KvGetLocal {
                view: "nope".into(),
                key: "k".into(),
            },
        )
        .await;
        assert!(
            !matches!(r, Response::Error { ref code, .. } if code == "bad_request"),
            "{r:?}"
        );
    });
}

/// A cluster member: forwards with a stale or future epoch, rows of an unlisted shard, a
/// shard outside the table, malformed rows or an unknown topic are refused whole with a
/// stable code and nothing lands in the log; Raft garbage, an oversized payload and a
/// message for another cluster get a refusal and change nothing; an unknown dataflow is
/// `not_found`. A well-formed forward is then accepted, so the refusals were not an accident.
#[test]
fn a_member_refuses_hostile_node_to_node_requests() {
    let node = member(None, "a");
    rt().block_on(async {
        settled(&[&node], 1, Duration::from_secs(60)).await;
        HttpClient::new(&node.base())
            .create_topic(&clicks_topic("clicks"))
            .await
            .unwrap();
        let view = cluster_view(&node).await.expect("cluster view");
        let me = u64::from_str_radix(view["node"]["id"].as_str().unwrap(), 16).unwrap();
        let epoch_of = |shard: u32| -> u64 {
            view["shards"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["shard"] == shard)
                .and_then(|s| s["epoch"].as_u64())
                .expect("shard in the table")
        };
        let shard = shard_of_hash(Value::str("u1").stable_hash(), 16);
        let other = (shard + 1) % 16;
        let epoch = epoch_of(shard);
        assert!(epoch >= 1, "{view:#}");
        let c = connect(&node).await;

        let cases: Vec<(&str, PeerRequest, &str)> = vec![
            (
                "an old epoch",
                forward("clicks", vec![(shard, epoch - 1)], vec![row("u1", 1)]),
                "stale_epoch",
            ),
            (
                "a future epoch",
                forward("clicks", vec![(shard, epoch + 7)], vec![row("u1", 1)]),
                "stale_epoch",
            ),
            (
                "rows of a shard not in epochs",
                forward("clicks", vec![(other, epoch_of(other))], vec![row("u1", 1)]),
                "bad_request",
            ),
            (
                "no epochs at all",
                forward("clicks", vec![], vec![row("u1", 1)]),
                "bad_request",
            ),
            (
                "a shard outside the table",
                forward("clicks", vec![(shard, epoch), (99, 1)], vec![row("u1", 1)]),
                "bad_request",
            ),
            (
                "too few values",
                forward(
                    "clicks",
                    vec![(shard, epoch)],
                    vec![vec![WireValue::Str("u1".into())]],
                ),
                "bad_request",
            ),
            (
                "a value of the wrong type",
                forward(
                    "clicks",
                    vec![(shard, epoch)],
                    vec![wire::row_to_wire(&[
                        Value::str("u1"),
                        Value::str("yesterday"),
                        Value::Int(1),
                    ])],
                ),
                "bad_request",
            ),
            (
                "a list that claims more elements than follow",
                forward(
                    "clicks",
                    vec![(shard, epoch)],
                    vec![vec![
                        WireValue::Str("u1".into()),
                        WireValue::Int(1),
                        WireValue::List(u32::MAX),
                    ]],
                ),
                "bad_request",
            ),
            (
                "a good row after a bad one",
                forward(
                    "clicks",
                    vec![(shard, epoch)],
                    vec![row("u1", 1), vec![WireValue::Null]],
                ),
                "bad_request",
            ),
            (
                "an unknown topic",
                forward("nope", vec![(shard, epoch)], vec![row("u1", 1)]),
                "not_found",
            ),
        ];
        for (what, req, want) in &cases {
            let r = ask(&c, req).await;
            assert_eq!(code(&r), *want, "{what}: {r:?}");
            assert!(!message(&r).is_empty(), "{what}: no message");
        }
        assert_eq!(
            logged(&node, "clicks").await,
            0,
            "a refused forward was applied"
        );

        // Raft: garbage, an oversized payload, a message for another cluster.
        let refusal = |r: Response| -> String {
            match r {
                Response::Raft(bytes) => {
                    let j: Json = serde_json::from_slice(&bytes).expect("a JSON Raft reply");
                    j["Refused"]
                        .as_str()
                        .unwrap_or_else(|| panic!("not a refusal: {j}"))
                        .to_string()
                }
                other => panic!("expected a Raft reply, got {other:?}"),
            }
        };
        let why = refusal(
            ask(
                &c,
                &PeerRequest::Raft {
                    payload: vec![0xff; 300],
                },
            )
            .await,
        );
        assert!(why.contains("malformed"), "{why}");
        let big = vec![b'['; MAX_FRAME - 1024];
        let why = refusal(ask(&c, &PeerRequest::Raft { payload: big }).await);
        // Raft takes at most half a frame, so that any message it accepts can be sent on.
        assert!(why.contains("exceeds the limit"), "{why}");
        // Over the frame limit: refused before anything is read into memory.
        let mut over = ((MAX_FRAME + 1) as u32).to_le_bytes().to_vec();
        over.extend_from_slice(&[0u8; 1024]);
        // (Or the stream is reset instead: also a refusal.)
        if let Some(r) = exchange(c.connection().expect("a QUIC link"), &over).await {
            assert_eq!(code(&r), "too_large", "{r:?}");
        }
        let foreign = serde_json::to_vec(&RpcRequest {
            cluster_id: "other".into(),
            from: 1,
            to: me,
            rpc: RaftRpc::ClientWrite(Command::SetLeaving { node: me }),
        })
        .unwrap();
        let why = refusal(ask(&c, &PeerRequest::Raft { payload: foreign }).await);
        assert!(
            why.contains("cluster `t`") && why.contains("`other`"),
            "{why}"
        );
        let wrong_node = serde_json::to_vec(&RpcRequest {
            cluster_id: "t".into(),
            from: 1,
            to: me ^ 1,
            rpc: RaftRpc::ClientWrite(Command::SetLeaving { node: me }),
        })
        .unwrap();
        let why = refusal(
            ask(
                &c,
                &PeerRequest::Raft {
                    payload: wrong_node,
                },
            )
            .await,
        );
        assert!(why.contains("not node"), "{why}");

        // SubscribeOutputLocal for a dataflow that does not exist.
        let r = ask(
            &c,
            &PeerRequest::SubscribeOutputLocal {
                dataflow: "nope".into(),
                output: "out".into(),
            },
        )
        .await;
        assert_eq!(code(&r), "not_found", "{r:?}");
        // SubscribeTopicLocal for a topic that does not exist, and for an absurd name.
        for topic in ["nope".to_string(), "x".repeat(100_000)] {
            let r = ask(&c, &PeerRequest::SubscribeTopicLocal { topic }).await;
            assert_eq!(code(&r), "not_found", "{r:?}");
        }

        // Shard state handed over: for a shard that is not moving here, a shard outside the
        // table, a chunk index past the count, a part of another shard: refused. Late
        // records (`chunks` 0) for a dataflow the cluster does not run, and garbage bytes for
        // one it runs: accepted and left out (logged), nothing counted.
        HttpClient::new(&node.base())
            .submit(&node_common::window_yaml("w", "clicks"))
            .await
            .unwrap();
        let part = |dataflow: &str, shard: u32, bytes: Vec<u8>| wire::WireShardPart {
            dataflow: dataflow.into(),
            // The window's hand-off name is its (fused) aggregate's id.
            node: "per_user".into(),
            shard,
            bytes,
        };
        let r = ask(
            &c,
            &handoff(shard, epoch, 0, 1, vec![part("w", shard, vec![0; 8])]),
        )
        .await;
        assert_eq!(code(&r), "stale_epoch", "{r:?}");
        let r = ask(&c, &handoff(99_999, 1, 0, 1, Vec::new())).await;
        assert_eq!(code(&r), "bad_request", "{r:?}");
        let r = ask(&c, &handoff(shard, epoch, 5, 2, Vec::new())).await;
        assert_eq!(code(&r), "bad_request", "{r:?}");
        let r = ask(
            &c,
            &handoff(shard, epoch, 0, 1, vec![part("w", shard + 1, Vec::new())]),
        )
        .await;
        assert_eq!(code(&r), "bad_request", "{r:?}");
        let r = ask(
            &c,
            &handoff(shard, epoch, 0, 0, vec![part("nope", shard, vec![1, 2])]),
        )
        .await;
        // Not a dataflow of the cluster (dropped, or never there): left out, nothing counted.
        assert_eq!(r, Response::Ack { accepted: 0 });
        let mut junk = vec![
            part("w", shard, vec![0xff; 4096]),
            part("w", shard, Vec::new()),
            part("w", shard, b"\x00\x00\x00\x00not an archive".to_vec()),
        ];
        let mut stash_junk = part("w", shard, vec![7; 100]);
        stash_junk.node = "per_user~stash".into();
        junk.push(stash_junk);
        let mut unknown_node = part("w", shard, vec![7; 100]);
        unknown_node.node = "nobody".into();
        junk.push(unknown_node);
        let r = ask(&c, &handoff(shard, epoch, 0, 0, junk)).await;
        assert_eq!(r, Response::Ack { accepted: 0 });
        // The control: one well-formed late record is counted, the junk was not.
        let record = snapshot::MovedSnap {
            records: vec![snapshot::RecordSnap {
                key: wire::row_to_wire(&[Value::str("u1")]),
                time: 5,
                row: wire::row_to_wire(&[Value::str("u1"), Value::Timestamp(5), Value::Int(3)]),
                at: 0,
                diff: 1,
            }],
            ..Default::default()
        };
        let bytes = snapshot::encode_moved(&record).unwrap();
        let mut good = part("w", shard, bytes);
        good.node = "per_user~stash".into();
        // Straggler batches carry an id the receiver remembers; the junk above used 1.
        let mut req = handoff(shard, epoch, 0, 0, vec![good]);
        if let PeerRequest::Handoff { release, .. } = &mut req {
            *release = 2;
        }
        let r = ask(&c, &req).await;
        assert_eq!(r, Response::Ack { accepted: 0 });
        let admin = HttpClient::new(&node.base());
        admin.advance_watermark("clicks", 20_000).await.unwrap();
        let mut counted = Json::Null;
        for _ in 0..100 {
            counted = admin.dataflow("w").await.unwrap()["counters"]["output_updates"].clone();
            if counted.as_u64() == Some(1) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            counted.as_u64(),
            Some(1),
            "one window result, from the good record only"
        );

        // Healthy, still the only member, not leaving, nothing moved.
        let (status, _) =
            node.raw(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        assert_eq!(status, 200);
        settled(&[&node], 1, Duration::from_secs(10)).await;
        let after = cluster_view(&node).await.unwrap();
        assert_eq!(after["members"][0]["leaving"], false, "{after:#}");
        assert_eq!(after["shards"], view["shards"], "the shard table changed");

        // The control: the same forward with the right epoch is applied.
        let r = ask(
            &c,
            &forward("clicks", vec![(shard, epoch)], vec![row("u1", 1)]),
        )
        .await;
        assert_eq!(r, Response::Ack { accepted: 1 });
        assert_eq!(logged(&node, "clicks").await, 1);

        // Replica fetches: a wrong epoch, a shard without its epoch, a shard outside the
        // table are refused; a wait beyond the cap is cut to it; a copy that goes past the
        // owner's log is told where to truncate; a well-formed fetch gets the entry.
        let item = |shard: u32, next: u64| wire::FetchItem {
            topic: "clicks".into(),
            shard,
            next,
            last_epoch: 0,
        };
        let fetch = |epochs: Vec<(u32, u64)>, items: Vec<wire::FetchItem>, wait_ms: u32| {
            PeerRequest::Fetch {
                replica: 7,
                epochs,
                items,
                wait_ms,
                isr: Vec::new(),
            }
        };
        let r = ask(
            &c,
            &fetch(vec![(shard, epoch + 1)], vec![item(shard, 0)], 0),
        )
        .await;
        assert_eq!(code(&r), "stale_epoch", "{}", message(&r));
        let r = ask(&c, &fetch(vec![(shard, epoch)], vec![item(other, 0)], 0)).await;
        assert_eq!(code(&r), "bad_request", "{}", message(&r));
        let r = ask(&c, &fetch(vec![(99_999, 1)], vec![], 0)).await;
        assert_eq!(code(&r), "bad_request", "{}", message(&r));
        let t = std::time::Instant::now();
        let r = ask(
            &c,
            &fetch(vec![(shard, epoch)], vec![item(shard, 1)], u32::MAX),
        )
        .await;
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "waited {:?}",
            t.elapsed()
        );
        let Response::Fetched(f) = r else {
            panic!("{r:?}")
        };
        assert_eq!((f[0].owner_next, f[0].payloads.len()), (1, 0));
        let r = ask(&c, &fetch(vec![(shard, epoch)], vec![item(shard, 9)], 0)).await;
        let Response::Fetched(f) = r else {
            panic!("{r:?}")
        };
        // No epoch of its own: nothing of it came from an owner this one knows.
        assert_eq!(f[0].truncate_to, Some(0), "{f:?}");
        let r = ask(
            &c,
            &fetch(
                vec![(shard, epoch)],
                vec![wire::FetchItem {
                    last_epoch: epoch,
                    ..item(shard, 9)
                }],
                0,
            ),
        )
        .await;
        let Response::Fetched(f) = r else {
            panic!("{r:?}")
        };
        // The owner's own epoch: the copy keeps what the owner has.
        assert_eq!(f[0].truncate_to, Some(1), "{f:?}");
        let r = ask(&c, &fetch(vec![(shard, epoch)], vec![item(shard, 0)], 0)).await;
        let Response::Fetched(f) = r else {
            panic!("{r:?}")
        };
        assert_eq!(
            (f[0].first, f[0].payloads.len(), f[0].owner_next),
            (0, 1, 1)
        );
        assert_eq!(logged(&node, "clicks").await, 1);
    });
}

/// A topic declaration that no node could create (a key that is not a field, a `min_insync`
/// no cluster can meet) is refused before the cluster agrees on it, as on a single node:
/// a 400 naming the fault, at once, not a 503 after every node failed to create it.
#[test]
fn a_member_refuses_a_bad_topic_before_the_cluster_agrees_on_it() {
    let node = member(None, "a");
    rt().block_on(async {
        settled(&[&node], 1, Duration::from_secs(60)).await;
        let admin = HttpClient::new(&node.base());
        let mut keyless = clicks_topic("bad");
        keyless["key"] = serde_json::json!("nope");
        let mut unmeetable = clicks_topic("bad");
        unmeetable["min_insync"] = serde_json::json!(8);
        for (def, word) in [(keyless, "nope"), (unmeetable, "min_insync")] {
            let t = std::time::Instant::now();
            let e = admin.create_topic(&def).await.unwrap_err().to_string();
            assert!(e.contains("400") && e.contains(word), "{e}");
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "refused after {:?}",
                t.elapsed()
            );
        }
        // Nothing was agreed: the name is free for a good declaration.
        admin.create_topic(&clicks_topic("bad")).await.unwrap();
        let topics = admin.topics().await.unwrap().to_string();
        assert!(topics.contains("\"bad\""), "{topics}");
    });
}
