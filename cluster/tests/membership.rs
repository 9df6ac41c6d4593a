//! Gossip membership over real UDP on 127.0.0.1, OS-chosen ports only.
//!
//! Timings use fast settings (gossip every 100 ms, phi 8) so that joins and deaths show within
//! a second or two; the deadlines below are generous because the test machine is shared.

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use starling_cluster::{
    FailureDetection, MemberState, Membership, MembershipConfig, MembershipError, NodeId,
};

const GOSSIP: Duration = Duration::from_millis(100);
const PATIENCE: Duration = Duration::from_secs(15);

fn config(node_id: NodeId, cluster_id: &str, shards: u32, seeds: Vec<String>) -> MembershipConfig {
    let localhost = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    let mut config = MembershipConfig::new(
        node_id,
        format!("node-{node_id}"),
        cluster_id,
        shards,
        localhost(0),
        // Published only, never bound here: any value will do.
        localhost(20_000 + node_id as u16),
        localhost(30_000 + node_id as u16),
    );
    config.seeds = seeds;
    config.gossip_interval = GOSSIP;
    config.failure = FailureDetection {
        phi_threshold: 8.0,
        initial_interval: Duration::from_millis(200),
        max_interval: Duration::from_secs(2),
        dead_grace: Duration::from_secs(60),
    };
    config
}

async fn start(
    node_id: NodeId,
    cluster_id: &str,
    shards: u32,
    seeds: &[&Membership],
) -> Membership {
    let seeds = seeds.iter().map(|m| m.gossip_addr().to_string()).collect();
    match Membership::start(config(node_id, cluster_id, shards, seeds)).await {
        Ok(m) => m,
        Err(e) => panic!("node {node_id} did not start: {e}"),
    }
}

/// Polls `check` every 10 ms until it holds; panics with `what` after [`PATIENCE`].
async fn eventually<F, Fut>(what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < PATIENCE, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn ids(m: &Membership) -> Vec<NodeId> {
    m.members().await.iter().map(|m| m.node_id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_find_each_other_through_one_seed() {
    let n1 = start(1, "c", 16, &[]).await;
    assert_ne!(
        n1.gossip_addr().port(),
        0,
        "port 0 must resolve to the bound port"
    );
    assert_eq!(ids(&n1).await, vec![1], "a lone node lists itself");
    n1.check_seeds(Duration::from_millis(10))
        .await
        .expect("a node without seeds passes at once");

    let began = Instant::now();
    let n2 = start(2, "c", 16, &[&n1]).await;
    let n3 = start(3, "c", 16, &[&n1]).await;
    let nodes = [&n1, &n2, &n3];
    eventually("all three see all three", || async move {
        for n in nodes {
            if ids(n).await != vec![1, 2, 3] {
                return false;
            }
        }
        true
    })
    .await;
    let convergence = began.elapsed();
    println!(
        "membership convergence time (3 nodes, one seed, gossip every {GOSSIP:?}): {convergence:?}"
    );
    n2.check_seeds(Duration::from_secs(5))
        .await
        .expect("n2 found its cluster");
    n3.check_seeds(Duration::from_secs(5))
        .await
        .expect("n3 found its cluster");

    // Addresses, state and load as published.
    let mut watch = n1.watch();
    n2.set_state(MemberState::Live).await;
    n2.set_load(1234).await;
    let began = Instant::now();
    for peer in [&n1, &n3] {
        eventually("peers see n2 live with its load", || async move {
            peer.members()
                .await
                .iter()
                .any(|m| m.node_id == 2 && m.state == MemberState::Live && m.load == 1234)
        })
        .await;
    }
    println!(
        "state and load visible to both peers after {:?}",
        began.elapsed()
    );
    for peer in [&n1, &n3] {
        let members = peer.members().await;
        let Some(m2) = members.iter().find(|m| m.node_id == 2) else {
            panic!("n2 missing from {members:?}");
        };
        assert_eq!(m2.name, "node-2");
        assert_eq!(m2.gossip_addr, n2.gossip_addr());
        assert_eq!(m2.peer_addr, SocketAddr::from(([127, 0, 0, 1], 20_002)));
        assert_eq!(m2.http_addr, SocketAddr::from(([127, 0, 0, 1], 30_002)));
        let Some(m3) = members.iter().find(|m| m.node_id == 3) else {
            panic!("n3 missing from {members:?}");
        };
        assert_eq!(m3.state, MemberState::Joining, "nodes start as joining");
        assert!(peer.incompatible().await.is_empty());
        assert!(peer.dead().await.is_empty());
    }

    // The watch follows the state change (load alone does not wake it).
    // Decided in one statement: a `Ref` kept alive would block the watch's sender.
    let watched = matches!(
        tokio::time::timeout(
            PATIENCE,
            watch.wait_for(|ms| {
                ms.len() == 3
                    && ms
                        .iter()
                        .any(|m| m.node_id == 2 && m.state == MemberState::Live)
            }),
        )
        .await,
        Ok(Ok(_))
    );
    assert!(watched, "watch did not show n2 live");

    for n in [n1, n2, n3] {
        n.shutdown().await.expect("clean shutdown");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_of_another_cluster_are_refused_and_not_listed() {
    let a1 = start(11, "a", 256, &[]).await;
    let a2 = start(12, "a", 256, &[&a1]).await;
    a2.check_seeds(PATIENCE).await.expect("same cluster joins");

    // Another cluster id.
    let b = start(21, "b", 128, &[&a1]).await;
    let began = Instant::now();
    let err = b.check_seeds(Duration::from_secs(10)).await;
    let Err(err @ MembershipError::Incompatible { .. }) = err else {
        panic!("expected Incompatible, got {err:?}");
    };
    println!("refused after {:?}: {err}", began.elapsed());
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("node at {}", a1.gossip_addr())),
        "{msg}"
    );
    assert!(msg.contains("cluster `a` with 256 shards"), "{msg}");
    assert!(msg.contains("cluster `b` with 128 shards"), "{msg}");
    assert!(
        msg.contains("--cluster-id") && msg.contains("--shards"),
        "{msg}"
    );
    assert_eq!(ids(&b).await, vec![21], "b lists only itself");

    // Same cluster id, another shard count.
    let s = start(31, "a", 128, &[&a1]).await;
    let err = s.check_seeds(Duration::from_secs(10)).await;
    let Err(err @ MembershipError::Incompatible { .. }) = err else {
        panic!("expected Incompatible, got {err:?}");
    };
    let msg = err.to_string();
    assert!(msg.contains("cluster `a` with 256 shards"), "{msg}");
    assert!(msg.contains("cluster `a` with 128 shards"), "{msg}");

    // The others see them, list them as incompatible, never as members.
    let (b_addr, s_addr) = (b.gossip_addr(), s.gossip_addr());
    for n in [&a1, &a2] {
        eventually("a-nodes list b and s as incompatible", || async move {
            let inc = n.incompatible().await;
            inc.iter()
                .any(|i| i.gossip_addr == b_addr && i.cluster_id == "b" && i.shards == 128)
                && inc
                    .iter()
                    .any(|i| i.gossip_addr == s_addr && i.cluster_id == "a" && i.shards == 128)
        })
        .await;
        assert_eq!(ids(n).await, vec![11, 12]);
    }
    let watched: Vec<NodeId> = a1.watch().borrow().iter().map(|m| m.node_id).collect();
    assert_eq!(watched, vec![11, 12], "the watch shows members only");

    for n in [a1, a2, b, s] {
        n.shutdown().await.expect("clean shutdown");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_shuts_down_leaves_then_is_dead() {
    let n1 = start(41, "c", 8, &[]).await;
    let n2 = start(42, "c", 8, &[&n1]).await;
    let n3 = start(43, "c", 8, &[&n1]).await;
    for n in [&n1, &n2, &n3] {
        eventually(
            "all see all",
            || async move { ids(n).await == vec![41, 42, 43] },
        )
        .await;
    }

    let began = Instant::now();
    let stopping = tokio::spawn(n3.shutdown());
    let mut saw_leaving = false;
    loop {
        let m1 = n1.members().await;
        saw_leaving |= m1
            .iter()
            .any(|m| m.node_id == 43 && m.state == MemberState::Leaving);
        if !m1.iter().any(|m| m.node_id == 43) && ids(&n2).await == vec![41, 42] {
            break;
        }
        assert!(
            began.elapsed() < PATIENCE,
            "n3 still listed after {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let gone = began.elapsed();
    println!("a node that shut down was gone for its peers after {gone:?}");
    assert!(saw_leaving, "peers saw n3 `leaving` before it went");
    assert!(gone < Duration::from_secs(10), "took {gone:?}");
    assert!(matches!(stopping.await, Ok(Ok(()))), "n3 shut down cleanly");
    assert_eq!(n1.dead().await, vec![43]);
    assert_eq!(n2.dead().await, vec![43]);

    for n in [n1, n2] {
        n.shutdown().await.expect("clean shutdown");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_seed_gives_no_seed_answered() {
    // Bound but never answering: nobody speaks gossip there, and no other test can take it.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a local UDP socket");
    let seed = silent.local_addr().expect("local address").to_string();
    let n = match Membership::start(config(51, "c", 8, vec![seed.clone()])).await {
        Ok(n) => n,
        Err(e) => panic!("start: {e}"),
    };
    let err = n.check_seeds(Duration::from_secs(1)).await;
    let Err(err @ MembershipError::NoSeedAnswered { .. }) = err else {
        panic!("expected NoSeedAnswered, got {err:?}");
    };
    let msg = err.to_string();
    println!("{msg}");
    assert!(msg.contains(&seed), "{msg}");
    n.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_seeds_and_configs_are_clear_errors() {
    for bad in ["nonsense", "host:99999", "host:", ":7072", "10.0.0.1:0"] {
        let err = Membership::start(config(61, "c", 8, vec![bad.to_string()])).await;
        let Err(err @ MembershipError::BadSeed { .. }) = err else {
            panic!("seed {bad:?}: expected BadSeed, got {err:?}");
        };
        let msg = err.to_string();
        println!("{msg}");
        assert!(msg.contains(bad) && msg.contains("HOST:PORT"), "{msg}");
    }

    let mut zero_shards = config(62, "c", 0, Vec::new());
    zero_shards.shards = 0;
    assert!(matches!(
        Membership::start(zero_shards).await,
        Err(MembershipError::InvalidConfig(_))
    ));
    assert!(matches!(
        Membership::start(config(63, "", 8, Vec::new())).await,
        Err(MembershipError::InvalidConfig(_))
    ));

    // Listening on every interface needs an address peers can dial.
    let mut unspecified = config(64, "c", 8, Vec::new());
    unspecified.gossip_listen = SocketAddr::from(([0, 0, 0, 0], 0));
    let err = Membership::start(unspecified.clone()).await;
    assert!(
        matches!(err, Err(MembershipError::InvalidConfig(_))),
        "{err:?}"
    );
    unspecified.gossip_advertise = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    let n = match Membership::start(unspecified).await {
        Ok(n) => n,
        Err(e) => panic!("start with an advertise address: {e}"),
    };
    assert_eq!(n.gossip_addr().ip(), std::net::Ipv4Addr::LOCALHOST);
    assert_ne!(n.gossip_addr().port(), 0);
    n.shutdown().await.expect("clean shutdown");

    // A port already in use is a bind error, not a panic.
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a local UDP socket");
    let mut clash = config(65, "c", 8, Vec::new());
    clash.gossip_listen = taken.local_addr().expect("local address");
    let err = Membership::start(clash).await;
    assert!(matches!(err, Err(MembershipError::Bind { .. })), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_timings_converge_and_detect_a_crash() {
    let with_defaults = |node_id: NodeId, seeds: Vec<String>| {
        let mut c = config(node_id, "d", 8, seeds);
        let defaults = MembershipConfig::new(
            node_id,
            "",
            "d",
            8,
            c.gossip_listen,
            c.peer_addr,
            c.http_addr,
        );
        c.gossip_interval = defaults.gossip_interval;
        c.failure = defaults.failure;
        c
    };
    let start_default = |node_id: NodeId, seeds: Vec<String>| async move {
        match Membership::start(with_defaults(node_id, seeds)).await {
            Ok(m) => m,
            Err(e) => panic!("node {node_id} did not start: {e}"),
        }
    };
    let n1 = start_default(71, Vec::new()).await;
    let seed = vec![n1.gossip_addr().to_string()];
    let began = Instant::now();
    let n2 = start_default(72, seed.clone()).await;
    let n3 = start_default(73, seed).await;
    for n in [&n1, &n2, &n3] {
        eventually(
            "all see all",
            || async move { ids(n).await == vec![71, 72, 73] },
        )
        .await;
    }
    println!(
        "membership convergence time with the default timings (3 nodes, one seed): {:?}",
        began.elapsed()
    );

    // A crash: gossip stops without `leaving`.
    let began = Instant::now();
    drop(n3);
    eventually("n1 and n2 report n3 dead", || {
        let (n1, n2) = (&n1, &n2);
        async move { n1.dead().await == vec![73] && n2.dead().await == vec![73] }
    })
    .await;
    let detected = began.elapsed();
    println!("a crashed node was reported dead with the default timings after {detected:?}");
    assert_eq!(ids(&n1).await, vec![71, 72]);
    assert!(detected < Duration::from_secs(12), "took {detected:?}");
    for n in [n1, n2] {
        n.shutdown().await.expect("clean shutdown");
    }
}
