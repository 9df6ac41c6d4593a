//! A cluster of nodes inside one test process whose peer traffic (forwards, hand-off chunks,
//! marks, Raft, merged subscriptions) goes over the in-memory peer network instead of QUIC:
//! no root, no network namespaces, no peer sockets; the same peer handler and cluster shell
//! as in production. Three members run a windowed dataflow while a fourth joins and one
//! leaves, and every window result equals that of one node given the same events.
//! `STARLING_TEST_QUIC_PEERS=1` runs the same over QUIC peers, to tell a fault of the
//! in-memory network from one of the cluster.

mod node_common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use node_common::{clicks_topic, window_yaml};
use serde_json::{json, Value as Json};
use starling_node::client::http::HttpClient;
use starling_node::cluster::{ClusterConfig, MemoryNet, PeerNet};
use starling_node::node::{Node, NodeConfig};

const SHARDS: u32 = 16;

/// A node of this process and its temporary directory.
struct Member {
    node: Node,
    http: HttpClient,
    _dir: tempfile::TempDir,
}

impl Member {
    /// Starts a node: a cluster member on `net` (joining through `seed`), or alone.
    async fn start(net: Option<(&MemoryNet, &str, Option<SocketAddr>)>) -> Member {
        let dir = tempfile::tempdir().expect("temp dir");
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let cluster = net.map(|(net, name, seed)| ClusterConfig {
            cluster_id: "mem".into(),
            node_name: Some(name.into()),
            gossip_addr: loopback,
            seeds: seed.map(|s| vec![s.to_string()]).unwrap_or_default(),
            peer_addr: None,
            peer_net: if std::env::var_os("STARLING_TEST_QUIC_PEERS").is_some() {
                PeerNet::Quic
            } else {
                PeerNet::Memory(net.clone())
            },
            shards: SHARDS,
            replication: 0,
        });
        let config = NodeConfig {
            http_addr: loopback,
            quic_addr: loopback,
            data_dir: dir.path().join("data"),
            workers: 2,
            cluster,
            ..NodeConfig::default()
        };
        let node = Node::start(&config).await.expect("the node starts");
        let http = HttpClient::new(&format!("http://{}", node.http_addr()));
        Member {
            node,
            http,
            _dir: dir,
        }
    }

    fn gossip(&self) -> SocketAddr {
        self.node.cluster().expect("a cluster member").gossip_addr()
    }
}

/// Waits until every member sees `n` live members, one leader and every shard settled.
async fn settled(members: &[&Member], n: usize) {
    let start = Instant::now();
    loop {
        let mut ok = true;
        let mut leaders = Vec::new();
        for m in members {
            match m.http.cluster().await {
                Ok(Some(v)) => {
                    let count = v["members"].as_array().map_or(0, Vec::len);
                    let live = v["members"]
                        .as_array()
                        .is_some_and(|ms| ms.iter().all(|m| m["state"] == "live"));
                    ok &= count == n && live && v["settled"] == true;
                    leaders.push(v["leader"].to_string());
                }
                _ => ok = false,
            }
        }
        leaders.dedup();
        if ok && leaders.len() == 1 {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "the cluster did not settle on {n} members"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `users` users, `per_user` events each, in event-time order, over about 30 s of event time.
fn events(users: usize, per_user: usize) -> Vec<Json> {
    (0..per_user)
        .flat_map(|i| {
            (0..users).map(move |u| {
                json!({
                    "user": format!("u{u}"),
                    "ts": 1_000_000 + (i as u64) * 500 + u as u64,
                    "amount": (u * 7 + i) % 13,
                })
            })
        })
        .collect()
}

fn ndjson(events: &[Json]) -> Vec<u8> {
    let mut body = Vec::new();
    for e in events {
        body.extend_from_slice(e.to_string().as_bytes());
        body.push(b'\n');
    }
    body
}

/// Follows `target` (`dataflow/output`) on `m`; lines arrive in the returned vector.
fn collect(m: &Member, target: &str) -> (Arc<Mutex<Vec<Json>>>, tokio::task::JoinHandle<()>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&lines);
    let client = m.http.clone();
    let target = target.to_string();
    let task = tokio::spawn(async move {
        let _ = client
            .subscribe(&target, |line| {
                sink.lock().expect("lines").push(line);
                true
            })
            .await;
    });
    (lines, task)
}

async fn wait_for(lines: &Arc<Mutex<Vec<Json>>>, n: usize) {
    let start = Instant::now();
    while lines.lock().expect("lines").len() < n {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "only {} of {n} results",
            lines.lock().expect("lines").len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn sorted(lines: &[Json]) -> Vec<String> {
    let mut out: Vec<String> = lines.iter().map(Json::to_string).collect();
    out.sort();
    out
}

/// Per user and second of event time, nothing closing until the final watermark: every
/// window is open through the join and the leave, so its state must move with its shard.
const PER_SECOND: &str = r#"name: w
inputs:
  - {id: c, topic: clicks, watermark: {max_delay: 3600s, idle_timeout: 0s}}
nodes:
  - {id: win, op: window, input: c, kind: tumbling, size: 1s}
  - id: n
    op: aggregate
    input: win
    aggregates: [{name: clicks, fn: count}, {name: spent, fn: sum, expr: amount}]
outputs:
  - {name: out, from: n}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_on_the_in_memory_network_gives_one_nodes_results_through_a_join() {
    // 30 users × 30 windows of 1 s (60 events 0.5 s apart).
    run(PER_SECOND.to_string(), 30 * 30, Changes::Join).await;
}

/// Three members and no change of membership: the baseline the join is held to.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_members_on_the_in_memory_network_give_one_nodes_results() {
    run(PER_SECOND.to_string(), 30 * 30, Changes::None).await;
}

/// A join, then a planned leave (`POST /v1/cluster/leave`, publishers already moved off the
/// leaver). This lost 140 to 180 of the 900 windows while the members' dataflows cut keys
/// into the store's default 256 shards and the table into the cluster's 16: a hand-off then
/// took out only the keys whose two shard numbers agreed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_gives_one_nodes_results_through_a_join_and_a_leave() {
    run(PER_SECOND.to_string(), 30 * 30, Changes::JoinAndLeave).await;
}

/// The same with 10 s windows that close while shards move (`max_delay: 0s`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn windows_closing_during_a_join_and_a_leave_give_one_nodes_results() {
    run(window_yaml("w", "clicks"), 30 * 3, Changes::JoinAndLeave).await;
}

/// Running totals per user (no window) into a KV view: state that lives in differential
/// arrangements and in the nodes' stores, not in windows.
const TOTALS: &str = r#"name: w
inputs:
  - {id: c, topic: clicks, watermark: {max_delay: 5s, idle_timeout: 0s}}
nodes:
  - id: n
    op: aggregate
    input: c
    aggregates: [{name: clicks, fn: count}, {name: spent, fn: sum, expr: amount}]
  - {id: v, op: kv_put, input: n, view: totals}
outputs:
  - {name: out, from: n}
"#;

/// Running totals and their view through a join and a leave: the merged output, consolidated,
/// and the view read through any member equal one node's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn running_totals_and_their_view_through_a_join_and_a_leave_equal_one_nodes() {
    run_checked(TOTALS.to_string(), Check::Totals, Changes::JoinAndLeave).await;
}

/// What is compared with one node's run.
#[derive(Clone, Copy, PartialEq)]
enum Check {
    /// Exactly this many window results, each once.
    Windows(usize),
    /// The output consolidated (one current row per user), and the `totals` view.
    Totals,
}

/// An output's updates summed per line (without its diff); lines that cancel out dropped.
fn consolidated(lines: &[Json]) -> std::collections::BTreeMap<String, i64> {
    let mut m = std::collections::BTreeMap::new();
    for l in lines {
        let mut l = l.clone();
        let diff = l["diff"].as_i64().unwrap_or(0);
        if let Some(o) = l.as_object_mut() {
            o.remove("diff");
            o.remove("time");
            o.remove("event_time");
        }
        *m.entry(l.to_string()).or_insert(0) += diff;
    }
    m.retain(|_, d| *d != 0);
    m
}

/// Waits until the consolidated output has one row per user, counting all `per_user` of
/// the user's events.
async fn wait_consolidated(lines: &Arc<Mutex<Vec<Json>>>, users: usize, per_user: usize) {
    let start = Instant::now();
    loop {
        let c = consolidated(&lines.lock().expect("lines"));
        let complete = c.iter().all(|(row, d)| {
            *d == 1
                && serde_json::from_str::<Json>(row)
                    .is_ok_and(|r| r["row"]["clicks"] == per_user as u64)
        });
        if c.len() == users && complete {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the output did not settle on one row per user: {c:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The whole `totals` view as one member answers it (a scan, which spans the cluster).
async fn view(m: &Member) -> Json {
    let url = format!("http://{}/v1/kv/totals?limit=1000", m.node.http_addr());
    let r = reqwest::get(&url).await.expect("the view answers");
    assert!(r.status().is_success(), "{url}: {}", r.status());
    r.json().await.expect("JSON")
}

/// What happens to the membership while events flow.
#[derive(Clone, Copy, PartialEq)]
enum Changes {
    None,
    Join,
    JoinAndLeave,
}

async fn run(definition: String, windows: usize, changes: Changes) {
    run_checked(definition, Check::Windows(windows), changes).await;
}

async fn run_checked(definition: String, check: Check, changes: Changes) {
    // `STARLING_LOG=starling_node=debug` shows the nodes' logs, as it does for the binary.
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("STARLING_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    }
    let users = 30;
    let per_user = 60;
    let all = events(users, per_user);

    // One node: the reference.
    let single = Member::start(None).await;
    single
        .http
        .create_topic(&clicks_topic("clicks"))
        .await
        .unwrap();
    single.http.submit(&definition).await.unwrap();
    let (want, task) = collect(&single, "w/out");
    tokio::time::sleep(Duration::from_millis(500)).await;
    for chunk in all.chunks(100) {
        single
            .http
            .publish_ndjson("clicks", ndjson(chunk))
            .await
            .unwrap();
    }
    single
        .http
        .advance_watermark("clicks", 2_000_000)
        .await
        .unwrap();
    match check {
        Check::Windows(windows) => wait_for(&want, windows).await,
        Check::Totals => wait_consolidated(&want, users, per_user).await,
    }
    task.abort();

    // Three members, then a fourth joins and one leaves while events flow.
    let net = MemoryNet::new();
    let a = Member::start(Some((&net, "a", None))).await;
    let seed = a.gossip();
    let b = Member::start(Some((&net, "b", Some(seed)))).await;
    let c = Member::start(Some((&net, "c", Some(seed)))).await;
    settled(&[&a, &b, &c], 3).await;
    // Peers really are on the in-memory network (not bound sockets).
    for m in [&a, &b, &c] {
        let peer = m.node.peer_addr().expect("a peer listener");
        if std::env::var_os("STARLING_TEST_QUIC_PEERS").is_none() {
            assert_eq!(peer.ip().to_string(), "127.0.0.2", "{peer}");
        }
    }
    c.http.create_topic(&clicks_topic("clicks")).await.unwrap();
    c.http.submit(&definition).await.unwrap();
    // Subscribed before anything joins or leaves: the merged stream takes in the member that
    // joins and lets the one that leaves go.
    let (got, task) = collect(&a, "w/out");
    tokio::time::sleep(Duration::from_millis(1000)).await;

    let (first, rest) = all.split_at(all.len() / 3);
    let (second, third) = rest.split_at(rest.len() / 2);
    let mut accepted = 0;
    for (i, chunk) in first.chunks(100).enumerate() {
        let m = [&a, &b, &c][i % 3];
        accepted += m
            .http
            .publish_ndjson("clicks", ndjson(chunk))
            .await
            .unwrap();
    }
    let d = if changes != Changes::None {
        let d = Member::start(Some((&net, "d", Some(seed)))).await;
        settled(&[&a, &b, &c, &d], 4).await;
        Some(d)
    } else {
        None
    };
    let d = d.as_ref().unwrap_or(&b);
    // b is about to leave: publishers stop using it first, as a load balancer would.
    let members = [&a, &c, d];
    for (i, chunk) in second.chunks(100).enumerate() {
        let m = members[i % members.len()];
        accepted += m
            .http
            .publish_ndjson("clicks", ndjson(chunk))
            .await
            .unwrap();
    }
    let b_addr = b.node.peer_addr().expect("peer address");
    if changes == Changes::JoinAndLeave {
        b.http.leave_cluster().await.unwrap();
        settled(&[&a, &c, d], 3).await;
    }
    for (i, chunk) in third.chunks(100).enumerate() {
        let m = members[i % members.len()];
        accepted += m
            .http
            .publish_ndjson("clicks", ndjson(chunk))
            .await
            .unwrap();
    }
    assert_eq!(accepted, all.len() as u64);
    a.http.advance_watermark("clicks", 2_000_000).await.unwrap();
    match check {
        Check::Windows(windows) => {
            wait_for(&got, windows).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            task.abort();
            let want = sorted(&want.lock().expect("lines"));
            let got = sorted(&got.lock().expect("lines"));
            assert_eq!(want.len(), windows, "{want:#?}");
            assert_eq!(got, want, "the cluster's results differ from one node's");
        }
        Check::Totals => {
            wait_consolidated(&got, users, per_user).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            task.abort();
            let want = consolidated(&want.lock().expect("lines"));
            let got = consolidated(&got.lock().expect("lines"));
            assert_eq!(got, want, "the cluster's totals differ from one node's");
            let want_view = view(&single).await;
            assert_eq!(want_view["items"].as_array().map_or(0, Vec::len), users);
            for m in [&a, &c, d] {
                assert_eq!(view(m).await, want_view, "the view read through a member");
            }
        }
    }
    // Every node stops; then it is gone from the in-memory network too.
    for m in [a, b, c] {
        m.node.shutdown().await;
    }
    assert!(net_closed(&net, b_addr).await);
    single.node.shutdown().await;
}

/// Whether nothing listens at `addr` on `net` any more.
async fn net_closed(net: &MemoryNet, addr: SocketAddr) -> bool {
    let c = starling_node::cluster::PeerClient::connect_on(
        &PeerNet::Memory(net.clone()),
        None,
        addr,
        starling_node::client::Trust::Fingerprint(String::new()),
        Duration::from_secs(1),
    )
    .await;
    c.is_err()
}

/// The shipped support-desk agent through a join and a leave: its final per-minute activity,
/// the escalations its trigger publishes (read as a topic subscription on one member, which
/// merges every owner's), and its live per-channel counts (an unwindowed aggregate behind a
/// repartition by channel) equal one node's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_support_desk_agent_through_a_join_and_a_leave_equals_one_node() {
    let definition = starling_dataflows::SUPPORT_DESK;
    // 20 users over 5 minutes, three channels, some messages negative; bursts make some
    // users cross the escalation thresholds.
    let channels = ["chat", "mail", "phone"];
    let mut all = Vec::new();
    for i in 0..60u64 {
        for u in 0..20u64 {
            let burst = u % 5 == 0 && (i / 12) % 2 == 0;
            let n = if burst { 2 } else { 1 };
            for k in 0..n {
                let text = if (i + u + k) % 4 == 0 {
                    "I want a refund"
                } else {
                    "hello"
                };
                all.push(json!({
                    "user": format!("u{u}"),
                    "ts": 1_000_000 + i * 5_000 + u * 10 + k,
                    "channel": channels[((i + u) % 3) as usize],
                    "text": text,
                }));
            }
        }
    }
    let users = 20;
    type Lines = Arc<Mutex<Vec<Json>>>;
    struct Seen {
        activity: Lines,
        escalations: Lines,
        counts: Lines,
        tasks: Vec<tokio::task::JoinHandle<()>>,
    }
    let follow = |m: &Member| {
        let (activity, t1) = collect(m, "support_desk/activity");
        let (escalations, t2) = collect(m, "escalations");
        let (counts, t3) = collect(m, "support_desk/channel_counts");
        Seen {
            activity,
            escalations,
            counts,
            tasks: vec![t1, t2, t3],
        }
    };
    // Once every minute is closed: one activity row per user and minute.
    let minutes = 6; // event times 1000 s to 1300 s: minutes 16 to 21
    let wait_done = |seen: &Seen| {
        let activity = Arc::clone(&seen.activity);
        async move { wait_for(&activity, users * minutes).await }
    };

    let single = Member::start(None).await;
    single.http.submit(definition).await.unwrap();
    let want = follow(&single);
    tokio::time::sleep(Duration::from_millis(500)).await;
    for chunk in all.chunks(100) {
        single
            .http
            .publish_ndjson("messages", ndjson(chunk))
            .await
            .unwrap();
    }
    single
        .http
        .advance_watermark("messages", 10_000_000)
        .await
        .unwrap();
    wait_done(&want).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;

    let net = MemoryNet::new();
    let a = Member::start(Some((&net, "a", None))).await;
    let seed = a.gossip();
    let b = Member::start(Some((&net, "b", Some(seed)))).await;
    let c = Member::start(Some((&net, "c", Some(seed)))).await;
    settled(&[&a, &b, &c], 3).await;
    c.http.submit(definition).await.unwrap();
    let got = follow(&a);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (first, rest) = all.split_at(all.len() / 3);
    let (second, third) = rest.split_at(rest.len() / 2);
    for (i, chunk) in first.chunks(100).enumerate() {
        let m = [&a, &b, &c][i % 3];
        m.http
            .publish_ndjson("messages", ndjson(chunk))
            .await
            .unwrap();
    }
    let d = Member::start(Some((&net, "d", Some(seed)))).await;
    settled(&[&a, &b, &c, &d], 4).await;
    let members = [&a, &c, &d];
    for (i, chunk) in second.chunks(100).enumerate() {
        let m = members[i % 3];
        m.http
            .publish_ndjson("messages", ndjson(chunk))
            .await
            .unwrap();
    }
    b.http.leave_cluster().await.unwrap();
    settled(&[&a, &c, &d], 3).await;
    for (i, chunk) in third.chunks(100).enumerate() {
        let m = members[i % 3];
        m.http
            .publish_ndjson("messages", ndjson(chunk))
            .await
            .unwrap();
    }
    a.http
        .advance_watermark("messages", 10_000_000)
        .await
        .unwrap();
    wait_done(&got).await;
    // The live counts settle on the single node's (their updates may be split differently).
    let target = consolidated(&want.counts.lock().expect("lines"));
    let start = Instant::now();
    while consolidated(&got.counts.lock().expect("lines")) != target
        && start.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    for t in want.tasks.iter().chain(got.tasks.iter()) {
        t.abort();
    }

    let activity = sorted(&want.activity.lock().expect("lines"));
    assert_eq!(activity.len(), users * minutes);
    assert_eq!(
        sorted(&got.activity.lock().expect("lines")),
        activity,
        "per-minute activity"
    );
    let escalations = sorted(&want.escalations.lock().expect("lines"));
    assert!(
        !escalations.is_empty(),
        "the input makes some users escalate"
    );
    assert_eq!(
        sorted(&got.escalations.lock().expect("lines")),
        escalations,
        "escalations"
    );
    assert_eq!(target.len(), 3, "one live count per channel: {target:#?}");
    assert_eq!(
        consolidated(&got.counts.lock().expect("lines")),
        target,
        "live per-channel counts"
    );
    for m in [a, b, c, d, single] {
        m.node.shutdown().await;
    }
}
