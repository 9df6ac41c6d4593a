//! Reads that span a cluster: a `kv_put` view and a series are written on the node that
//! processes each key, yet a GET, a paged scan and a series range on any one node answer
//! for the whole cluster (HTTP and QUIC front doors alike).

mod cluster_common;
mod node_common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cluster_common::{members, rt, settled};
use node_common::{clicks_topic, NodeProc};
use serde_json::{json, Value as Json};
use starling_node::client::http::HttpClient;
use starling_node::client::quic::{QuicClient, Trust};
use starling_node::cluster::PeerClient;

const USERS: usize = 40;

/// Per-user count into the `totals` view, and per-user 10 s counts into the `per_user`
/// series.
const COUNTS: &str = r#"
name: counts
inputs: [{id: c, topic: clicks, watermark: {max_delay: 0s, idle_timeout: 0s}}]
nodes:
  - id: all
    op: aggregate
    input: c
    aggregates: [{name: n, fn: count}]
  - {id: latest, op: kv_put, input: all, view: totals}
  - {id: w, op: window, input: c, kind: tumbling, size: 10s}
  - id: per_window
    op: aggregate
    input: w
    aggregates: [{name: n, fn: count}]
  - {id: hist, op: series, input: per_window, name: per_user}
outputs: [{name: out, from: all}]
"#;

fn user(u: usize) -> String {
    format!("u{u:02}")
}

/// User `u` clicks `u % 5 + 1` times in the first window and once in the second.
fn clicks() -> Vec<Json> {
    let mut out = Vec::new();
    for u in 0..USERS {
        for i in 0..u % 5 + 1 {
            out.push(json!({"user": user(u), "ts": 1_000_000 + (i * 100 + u) as u64}));
        }
        out.push(json!({"user": user(u), "ts": 1_015_000 + u as u64}));
    }
    out
}

/// Publishes every event of [`clicks`] through `node`, retrying while the topic has not
/// reached it yet (a topic declared on another member arrives through the catalog a moment
/// later); every event must be accepted.
async fn publish_clicks(node: &NodeProc) {
    let mut body = Vec::new();
    for e in clicks() {
        body.extend_from_slice(e.to_string().as_bytes());
        body.push(b'\n');
    }
    let since = Instant::now();
    loop {
        match HttpClient::new(&node.base())
            .publish_ndjson("clicks", body.clone())
            .await
        {
            Ok(n) => break assert_eq!(n as usize, clicks().len()),
            Err(e) => assert!(since.elapsed() < Duration::from_secs(10), "{e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn expected_count(u: usize) -> u64 {
    (u % 5 + 2) as u64
}

async fn get_json(url: String) -> (u16, Json) {
    let r = reqwest::get(url).await.expect("GET sent");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Json::Null))
}

async fn quic(node: &NodeProc) -> QuicClient {
    let addr = node.banner_field("quic").parse().expect("quic address");
    QuicClient::connect(
        addr,
        Trust::Fingerprint(node.banner_field("quic_fingerprint")),
    )
    .await
    .expect("QUIC connects")
}

/// A connection to a node's peer listener, as another member opens it.
async fn peer(node: &NodeProc) -> PeerClient {
    let addr = node.banner_field("peer").parse().expect("peer address");
    PeerClient::connect(
        addr,
        Trust::Fingerprint(node.banner_field("quic_fingerprint")),
        Duration::from_secs(5),
    )
    .await
    .expect("the peer listener accepts a connection")
}

/// 3 nodes, a kv_put view of per-user counts spread over all of them: every key read on one
/// node has the right value, a paged scan returns every key once in order, a series range
/// unites the points; each node holds only part of the view (asked with `KvGetLocal`).
#[test]
fn kv_and_series_reads_answer_for_the_whole_cluster() {
    let nodes = members(3);
    let refs: Vec<&NodeProc> = nodes.iter().collect();
    let rt = rt();
    rt.block_on(async {
        settled(&refs, 3, Duration::from_secs(60)).await;
        let admin = HttpClient::new(&nodes[0].base());
        admin.create_topic(&clicks_topic("clicks")).await.unwrap();
        admin.submit(COUNTS).await.unwrap();
        publish_clicks(&nodes[1]).await;
        admin.advance_watermark("clicks", 2_000_000).await.unwrap();

        // Every key, read on node c only, whoever wrote it.
        let reader = &nodes[2];
        let start = Instant::now();
        for u in 0..USERS {
            loop {
                let (status, body) =
                    get_json(reader.url(&format!("/v1/kv/totals/{}", user(u)))).await;
                if status == 200 && body["value"]["n"] == expected_count(u) {
                    break;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(30),
                    "key {}: {status} {body}",
                    user(u)
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let (status, body) = get_json(reader.url("/v1/kv/totals/nobody")).await;
        assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));

        // The keys really are spread: each node's own store has part of them, none twice.
        let mut holders: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, node) in nodes.iter().enumerate() {
            let c = quic(node).await;
            let p = peer(node).await;
            for u in 0..USERS {
                if p.kv_get_local("totals", &user(u)).await.unwrap().is_some() {
                    holders.entry(user(u)).or_default().push(i);
                }
            }
            // The front-door request scatters like HTTP does.
            let v = c.kv_get("totals", &user(7)).await.unwrap().expect("u07");
            assert_eq!(
                serde_json::from_str::<Json>(&v).unwrap()["n"],
                expected_count(7)
            );
        }
        assert_eq!(holders.len(), USERS, "{holders:?}");
        assert!(holders.values().all(|h| h.len() == 1), "{holders:?}");
        for i in 0..nodes.len() {
            assert!(
                holders.values().any(|h| h[0] == i),
                "node {i} holds no key: {holders:?}"
            );
        }

        // A paged scan on one node: every key exactly once, in order, with right values.
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        let mut pages = 0;
        loop {
            let mut url = reader.url("/v1/kv/totals?prefix=u&limit=7");
            if let Some(a) = &after {
                url.push_str(&format!("&after={a}"));
            }
            let (status, page) = get_json(url).await;
            assert_eq!(status, 200, "{page}");
            pages += 1;
            for item in page["items"].as_array().unwrap() {
                let key = item["key"].as_str().unwrap().to_string();
                let u: usize = key[1..].parse().unwrap();
                assert_eq!(item["value"]["n"], expected_count(u), "{key}");
                seen.push(key);
            }
            match page["next"].as_str() {
                Some(n) => after = Some(n.to_string()),
                None => break,
            }
            assert!(pages < 20, "the scan does not end");
        }
        let all: Vec<String> = (0..USERS).map(user).collect();
        assert_eq!(seen, all);
        assert_eq!(pages, USERS.div_ceil(7));
        // The same over QUIC, in one page and with a page size that ends exactly.
        let c = quic(reader).await;
        let (items, next) = c.kv_scan("totals", "", None, 100).await.unwrap();
        assert_eq!(
            items.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
            all
        );
        assert_eq!(next, None);
        let (items, next) = c.kv_scan("totals", "u", Some("u29"), 10).await.unwrap();
        assert_eq!(items.len(), 10);
        assert_eq!(items[0].0, "u30");
        assert_eq!(next, None, "the last page must not promise more");
        let (_, next) = c.kv_scan("totals", "u", Some("u28"), 10).await.unwrap();
        assert_eq!(next.as_deref(), Some("u38"));

        // A series range on one node unites the windows: both windows of every user.
        for u in [0, 13, 39] {
            let (status, body) =
                get_json(reader.url(&format!("/v1/series/per_user/{}?from=0&limit=10", user(u))))
                    .await;
            assert_eq!(status, 200, "{body}");
            let points: Vec<(u64, Json)> = body["points"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| (p["time"].as_u64().unwrap(), p["value"]["n"].clone()))
                .collect();
            assert_eq!(
                points,
                vec![(1_000_000, json!(u % 5 + 1)), (1_010_000, json!(1))],
                "{}",
                user(u)
            );
        }
        let points = c
            .series_range("per_user", &user(2), 0, u64::MAX, 1)
            .await
            .unwrap();
        assert_eq!(points.len(), 1, "limit is honoured after the merge");
    });
}

/// A log read on any member says, per shard, what that member's copy is and which member
/// owns the shard; the owner named there has every event published for the shard, whichever
/// member took it in.
#[test]
fn a_log_read_names_each_shards_owner() {
    let nodes = members(3);
    let refs: Vec<&NodeProc> = nodes.iter().collect();
    let rt = rt();
    rt.block_on(async {
        settled(&refs, 3, Duration::from_secs(60)).await;
        let admin = HttpClient::new(&nodes[0].base());
        admin.create_topic(&clicks_topic("clicks")).await.unwrap();
        publish_clicks(&nodes[1]).await;
        let (_, view) = get_json(nodes[0].url("/v1/cluster")).await;
        let owner_of: BTreeMap<u64, Json> = view["shards"]
            .as_array()
            .expect("shards")
            .iter()
            .map(|e| (e["shard"].as_u64().unwrap(), e["owner"].clone()))
            .collect();
        let http_of: BTreeMap<String, String> = view["members"]
            .as_array()
            .expect("members")
            .iter()
            .map(|m| {
                (
                    m["id"].as_str().unwrap().to_string(),
                    m["http"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        let mut events = 0;
        for node in &nodes {
            let (_, me) = get_json(node.url("/v1/cluster")).await;
            let me_id = me["node"]["id"].clone();
            let (status, list) = get_json(node.url("/v1/topics/clicks/log")).await;
            assert_eq!(status, 200, "{list}");
            for s in list["shards"].as_array().unwrap() {
                let shard = s["shard"].as_u64().unwrap();
                let holder = &s["holder"];
                if shard == u64::from(u32::MAX) {
                    assert_eq!(holder["role"], "marks", "{s}");
                    continue;
                }
                let owner = &owner_of[&shard];
                assert_eq!(&holder["owner"]["id"], owner, "shard {shard}: {s}");
                let want = if *owner == me_id { "owner" } else { "none" };
                assert_eq!(
                    holder["role"],
                    want,
                    "shard {shard} on {}: {s}",
                    node.base()
                );
                // The named owner answers for the whole shard.
                let http = holder["owner"]["http"]
                    .as_str()
                    .expect("the owner's address");
                assert_eq!(http, http_of[owner.as_str().unwrap()]);
                let (status, read) = get_json(format!(
                    "http://{http}/v1/topics/clicks/log?shard={shard}&limit=10000"
                ))
                .await;
                assert_eq!(status, 200, "{read}");
                assert_eq!(read["holder"]["role"], "owner", "{read}");
                if want == "owner" {
                    events += read["entries"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|e| e["events"].as_array().map_or(0, Vec::len))
                        .sum::<usize>();
                }
            }
        }
        assert_eq!(
            events,
            clicks().len(),
            "the owners' logs hold every event once"
        );
    });
}

/// A read during a move waits for the move or answers from the old owner, never from a
/// half-moved shard: with every total in the view, a fourth member joins, and while its
/// shards move every key is read again and again through every member; each read must
/// give the key's whole total, and a paged scan every key.
#[test]
fn view_reads_during_a_join_never_see_a_half_moved_shard() {
    let mut nodes = members(3);
    let rt = rt();
    rt.block_on(async {
        {
            let refs: Vec<&NodeProc> = nodes.iter().collect();
            settled(&refs, 3, Duration::from_secs(60)).await;
        }
        let admin = HttpClient::new(&nodes[0].base());
        admin.create_topic(&clicks_topic("clicks")).await.unwrap();
        admin.submit(COUNTS).await.unwrap();
        publish_clicks(&nodes[1]).await;
        let start = Instant::now();
        for u in 0..USERS {
            loop {
                let (status, body) =
                    get_json(nodes[2].url(&format!("/v1/kv/totals/{}", user(u)))).await;
                if status == 200 && body["value"]["n"] == expected_count(u) {
                    break;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(30),
                    "{}: {status} {body}",
                    user(u)
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let seed = nodes[0].banner_field("gossip");
        nodes.push(cluster_common::member(Some(&seed), "d"));
        let bases: Vec<String> = nodes.iter().map(NodeProc::base).collect();
        let settle = {
            let refs: Vec<&NodeProc> = nodes.iter().collect();
            let t = Instant::now();
            let mut reads = 0;
            let mut wrong: Vec<String> = Vec::new();
            let mut scans = 0;
            loop {
                for (i, base) in bases[..3].iter().enumerate() {
                    for u in 0..USERS {
                        let (status, body) =
                            get_json(format!("{base}/v1/kv/totals/{}", user(u))).await;
                        reads += 1;
                        if status != 200 || body["value"]["n"] != expected_count(u) {
                            wrong.push(format!("{} via node {i}: {status} {body}", user(u)));
                        }
                    }
                    let (status, page) = get_json(format!("{base}/v1/kv/totals?limit=100")).await;
                    scans += 1;
                    let n = page["items"].as_array().map_or(0, Vec::len);
                    if status != 200 || n != USERS {
                        wrong.push(format!("scan via node {i}: {status}, {n} keys"));
                    }
                }
                let v = cluster_common::cluster_view(&nodes[0])
                    .await
                    .unwrap_or(Json::Null);
                let moving = v["shards"]
                    .as_array()
                    .is_none_or(|s| s.iter().any(|e| !e["moving_to"].is_null()));
                let members = v["members"].as_array().map_or(0, Vec::len);
                if members == 4 && !moving && t.elapsed() > Duration::from_secs(3) {
                    break;
                }
                assert!(
                    t.elapsed() < Duration::from_secs(90),
                    "the join did not settle: {v:#}"
                );
            }
            let took = settled(&refs, 4, Duration::from_secs(60)).await;
            println!(
                "{reads} reads and {scans} scans during the join, {} wrong",
                wrong.len()
            );
            assert!(
                wrong.is_empty(),
                "{} of {reads} reads and {scans} scans gave a half-moved answer, e.g. {:?}",
                wrong.len(),
                &wrong[..wrong.len().min(8)]
            );
            took
        };
        let view = cluster_common::cluster_view(&nodes[0]).await.unwrap();
        let d_owns = cluster_common::owned_by_name(&view)
            .get("d")
            .copied()
            .unwrap_or(0);
        assert!(
            d_owns > 0,
            "d owns no shard after settling {settle:?}: {view:#}"
        );
    });
}
