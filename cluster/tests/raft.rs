//! The Raft shell over a real in-memory network: real openraft, real disk storage, RPCs
//! carried as bytes between `ClusterRaft::handle_rpc` of in-process nodes, with links that
//! can be cut (the same idea as chitchat's `ChannelTransport`).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use starling_cluster::raft::{NodeRole, RaftRpcReply, StoreError};
use starling_cluster::{
    CatalogEntry, CatalogKind, ClusterRaft, ClusterState, Command, MemberInfo, NodeId, Outcome,
    RaftError, RaftSettings, RaftTransport, TransportError,
};

/// The in-memory network: who is on it, and who is cut off.
#[derive(Default)]
struct Net {
    nodes: Mutex<HashMap<NodeId, ClusterRaft>>,
    cut: Mutex<HashSet<NodeId>>,
}

impl Net {
    fn join(&self, raft: &ClusterRaft) {
        self.nodes.lock().unwrap().insert(raft.id(), raft.clone());
    }
    fn leave(&self, id: NodeId) {
        self.nodes.lock().unwrap().remove(&id);
    }
    fn cut(&self, id: NodeId, cut: bool) {
        let mut c = self.cut.lock().unwrap();
        if cut {
            c.insert(id);
        } else {
            c.remove(&id);
        }
    }
}

/// One node's end of the network.
struct Link {
    net: Arc<Net>,
    me: NodeId,
}

impl RaftTransport for Link {
    fn call(
        &self,
        target: NodeId,
        _addr: &str,
        request: Vec<u8>,
    ) -> impl Future<Output = Result<Vec<u8>, TransportError>> + Send {
        let net = self.net.clone();
        let me = self.me;
        async move {
            let node = {
                let cut = net.cut.lock().unwrap();
                if cut.contains(&me) || cut.contains(&target) {
                    return Err(TransportError::Unreachable(format!("{me} -> {target} cut")));
                }
                net.nodes.lock().unwrap().get(&target).cloned()
            };
            match node {
                Some(n) => Ok(n.handle_rpc(&request).await),
                None => Err(TransportError::Unreachable(format!("no node {target}"))),
            }
        }
    }
}

const CLUSTER: &str = "test-cluster";
const SHARDS: u32 = 8;

fn settings() -> RaftSettings {
    RaftSettings {
        snapshot_every: 10,
        keep_after_snapshot: 2,
        catch_up_timeout: Duration::from_secs(2),
        ..RaftSettings::default()
    }
}

fn info(id: NodeId) -> MemberInfo {
    MemberInfo {
        name: format!("node-{id}"),
        peer_addr: format!("127.0.0.1:{}", 7000 + id),
        http_addr: format!("127.0.0.1:{}", 8000 + id),
        leaving: false,
    }
}

fn put(i: usize) -> Command {
    Command::PutCatalog(CatalogEntry {
        kind: CatalogKind::Topic,
        name: format!("topic-{i}"),
        text: format!("{{\"partitions\": {i}}}"),
    })
}

async fn start(net: &Arc<Net>, id: NodeId, dir: &Path) -> Result<ClusterRaft, RaftError> {
    let link = Arc::new(Link {
        net: net.clone(),
        me: id,
    });
    let raft = ClusterRaft::start(id, dir, CLUSTER, SHARDS, link, settings()).await?;
    net.join(&raft);
    Ok(raft)
}

async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn state_of(r: &ClusterRaft) -> ClusterState {
    (**r.state().borrow()).clone()
}

/// Starts a three-node cluster: node 1 bootstraps, nodes 2 and 3 are added by it.
async fn three_nodes(net: &Arc<Net>, dirs: &[PathBuf]) -> Vec<ClusterRaft> {
    let n1 = start(net, 1, &dirs[0]).await.unwrap();
    n1.initialize(info(1)).await.unwrap();
    eventually("node 1 to lead", || n1.is_leader()).await;
    let n2 = start(net, 2, &dirs[1]).await.unwrap();
    let n3 = start(net, 3, &dirs[2]).await.unwrap();
    assert_eq!(n1.add_node(2, info(2)).await.unwrap(), NodeRole::Voter);
    assert_eq!(n1.add_node(3, info(3)).await.unwrap(), NodeRole::Voter);
    assert_eq!(n1.voters(), [1, 2, 3].into());
    vec![n1, n2, n3]
}

fn dirs(n: usize) -> (Vec<tempfile::TempDir>, Vec<PathBuf>) {
    let t: Vec<_> = (0..n).map(|_| tempfile::tempdir().unwrap()).collect();
    let p = t.iter().map(|d| d.path().to_path_buf()).collect();
    (t, p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_proposes_and_a_new_leader_takes_over() {
    let net = Arc::new(Net::default());
    let (_keep, dirs) = dirs(3);
    let nodes = three_nodes(&net, &dirs).await;

    // A proposal made on a follower is forwarded, committed and applied everywhere.
    let follower = nodes.iter().find(|n| !n.is_leader()).unwrap();
    assert_eq!(follower.propose(put(1)).await.unwrap(), Outcome::Done);
    let refused = follower
        .propose(Command::RemoveMember { node: 99 })
        .await
        .unwrap();
    assert_eq!(
        refused,
        Outcome::Done,
        "removing an unknown member is a no-op"
    );
    let expected = state_of(nodes.iter().find(|n| n.is_leader()).unwrap());
    eventually("identical state on all three", || {
        nodes.iter().all(|n| state_of(n) == expected)
    })
    .await;
    assert_eq!(expected.members.len(), 3);
    assert!(expected
        .catalog
        .contains_key(&(CatalogKind::Topic, "topic-1".into())));
    assert_eq!(expected.cluster_id, CLUSTER);

    // The leader goes away; the other two elect a new one and keep accepting proposals.
    let old = nodes.iter().find(|n| n.is_leader()).unwrap().clone();
    old.shutdown().await.unwrap();
    net.leave(old.id());
    let rest: Vec<_> = nodes.iter().filter(|n| n.id() != old.id()).collect();
    eventually("a new leader", || {
        rest.iter()
            .any(|n| n.is_leader() && rest.iter().all(|m| m.leader() == Some(n.id())))
    })
    .await;
    for (i, n) in rest.iter().enumerate() {
        assert_eq!(n.propose(put(10 + i)).await.unwrap(), Outcome::Done);
    }
    let leader = rest.iter().find(|n| n.is_leader()).unwrap();
    let expected = state_of(leader);
    eventually("identical state on the survivors", || {
        rest.iter().all(|n| state_of(n) == expected)
    })
    .await;
    assert!(expected
        .catalog
        .contains_key(&(CatalogKind::Topic, "topic-11".into())));
    for n in rest {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_reloads_its_state_and_catches_up() {
    let net = Arc::new(Net::default());
    let (_keep, dirs) = dirs(3);
    let mut nodes = three_nodes(&net, &dirs).await;
    for i in 0..5 {
        nodes[0].propose(put(i)).await.unwrap();
    }
    let leader = nodes.iter().find(|n| n.is_leader()).unwrap().clone();
    let victim = nodes
        .iter()
        .position(|n| !n.is_leader())
        .expect("a follower");
    let expected = state_of(&leader);
    eventually("the follower to apply", || {
        state_of(&nodes[victim]) == expected
    })
    .await;
    let id = nodes[victim].id();
    nodes[victim].shutdown().await.unwrap();
    net.leave(id);
    let before = state_of(&nodes[victim]);

    // More than a snapshot's worth of entries while it is down: the leader snapshots and
    // purges its log, so the returning node needs the snapshot.
    for i in 5..40 {
        leader.propose(put(i)).await.unwrap();
    }
    let leader_dir = &dirs[(leader.id() - 1) as usize];
    assert!(leader_dir.join("raft/snapshot").exists());
    let log_len = std::fs::metadata(leader_dir.join("raft/log"))
        .unwrap()
        .len();
    assert!(log_len < 8 << 10, "the log is purged ({log_len} bytes)");

    // Restarted, still cut off: the same state as when it stopped.
    net.cut(id, true);
    let back = start(&net, id, &dirs[victim]).await.unwrap();
    assert_eq!(state_of(&back), before);
    // Reconnected: it catches up with the leader.
    net.cut(id, false);
    let expected = state_of(&leader);
    eventually("the restarted node to catch up", || {
        state_of(&back) == expected
    })
    .await;
    assert_eq!(back.voters(), [1, 2, 3].into());
    // And it can propose again.
    back.propose(put(100)).await.unwrap();
    nodes[victim] = back;
    let expected = state_of(&leader);
    eventually("all three identical", || {
        nodes.iter().all(|n| state_of(n) == expected)
    })
    .await;
    for n in &nodes {
        n.shutdown().await.unwrap();
    }
}

/// After a whole-cluster stop, the first member comes back alone: bootstrapping again needs
/// nobody and returns at once, while recording new addresses needs a majority and fails
/// until one is back (what made a restarted node exit before it retried in the background).
/// Once a second voter returns, the record commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_restarted_alone_bootstraps_at_once_and_records_itself_once_a_majority_is_back() {
    let net = Arc::new(Net::default());
    let (_keep, dirs) = dirs(3);
    let nodes = three_nodes(&net, &dirs).await;
    for n in &nodes {
        n.shutdown().await.unwrap();
        net.leave(n.id());
    }

    let n1 = start(&net, 1, &dirs[0]).await.unwrap();
    assert!(n1.was_initialized().await.unwrap());
    let t = Instant::now();
    assert!(!n1.bootstrap(&info(1).peer_addr).await.unwrap());
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    let mut moved = info(1);
    moved.peer_addr = "127.0.0.1:9001".into();
    assert!(!n1.has_record(&moved));
    let alone = n1.initialize(moved.clone()).await;
    assert!(
        matches!(alone, Err(RaftError::Propose(_))),
        "recorded without a majority? {alone:?}"
    );
    assert!(!n1.lease_valid(Duration::from_millis(1500)));

    let n2 = start(&net, 2, &dirs[1]).await.unwrap();
    n1.initialize(moved.clone()).await.unwrap();
    assert!(n1.has_record(&moved));
    eventually("a lease with a majority back", || {
        n1.lease_valid(Duration::from_millis(1500))
    })
    .await;
    n1.shutdown().await.unwrap();
    n2.shutdown().await.unwrap();
}

/// A one-node cluster with a few entries, shut down, leaving its directory behind.
async fn one_node_dir(dir: &Path) {
    let net = Arc::new(Net::default());
    let n = start(&net, 1, dir).await.unwrap();
    n.initialize(info(1)).await.unwrap();
    for i in 0..3 {
        n.propose(put(i)).await.unwrap();
    }
    n.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_restarts_with_its_state_and_initialize_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    one_node_dir(dir.path()).await;
    let net = Arc::new(Net::default());
    let n = start(&net, 1, dir.path()).await.unwrap();
    n.initialize(info(1)).await.unwrap();
    eventually("the node to lead again", || n.is_leader()).await;
    n.propose(put(3)).await.unwrap();
    let s = state_of(&n);
    assert_eq!(s.catalog.len(), 4);
    assert_eq!(s.members.len(), 1);
    n.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_log_is_reported_and_a_torn_tail_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    one_node_dir(dir.path()).await;
    let log = dir.path().join("raft/log");
    let good = std::fs::read(&log).unwrap();
    assert!(good.len() > 40);

    // A write cut short by a crash: the partial record is dropped, the node starts.
    std::fs::write(&log, &good[..good.len() - 3]).unwrap();
    let net = Arc::new(Net::default());
    let n = start(&net, 1, dir.path()).await.unwrap();
    n.shutdown().await.unwrap();

    // A flipped bit inside a record: refused with a clear error, no panic.
    let mut bad = good.clone();
    bad[20] ^= 0x10;
    std::fs::write(&log, &bad).unwrap();
    let net = Arc::new(Net::default());
    let err = match start(&net, 1, dir.path()).await {
        Ok(_) => panic!("a damaged log must not start"),
        Err(e) => e,
    };
    assert!(
        matches!(err, RaftError::Store(StoreError::Damaged { .. })),
        "{err}"
    );
    let msg = err.to_string();
    assert!(msg.contains("damaged") && msg.contains("raft/log"), "{msg}");

    // A damaged vote file, likewise.
    std::fs::write(&log, &good).unwrap();
    std::fs::write(dir.path().join("raft/vote"), b"garbage").unwrap();
    let err = match start(&net, 1, dir.path()).await {
        Ok(_) => panic!("a damaged vote must not start"),
        Err(e) => e,
    };
    assert!(err.to_string().contains("raft/vote"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_of_another_cluster_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    one_node_dir(dir.path()).await;
    for (cluster, shards) in [("other", SHARDS), (CLUSTER, SHARDS * 2)] {
        let net = Arc::new(Net::default());
        let link = Arc::new(Link { net, me: 1 });
        let err = match ClusterRaft::start(1, dir.path(), cluster, shards, link, settings()).await {
            Ok(_) => panic!("{cluster}/{shards} must be refused"),
            Err(e) => e,
        };
        let msg = err.to_string();
        assert!(
            matches!(err, RaftError::Store(StoreError::ClusterMismatch { .. })),
            "{msg}"
        );
        assert!(
            msg.contains(&format!("`{CLUSTER}` with {SHARDS} shards"))
                && msg.contains(&format!("`{cluster}` with {shards} shards")),
            "{msg}"
        );
    }
    // Another node id on the same directory.
    let net = Arc::new(Net::default());
    let err = match start(&net, 2, dir.path()).await {
        Ok(_) => panic!("another node id must be refused"),
        Err(e) => e,
    };
    assert!(matches!(
        err,
        RaftError::Store(StoreError::NodeMismatch { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_bytes_get_an_error_reply() {
    let dir = tempfile::tempdir().unwrap();
    let net = Arc::new(Net::default());
    let n = start(&net, 1, dir.path()).await.unwrap();
    n.initialize(info(1)).await.unwrap();
    let refused = |reply: Vec<u8>| match serde_json::from_slice::<RaftRpcReply>(&reply) {
        Ok(RaftRpcReply::Refused(why)) => why,
        other => panic!("expected a refusal, got {other:?}"),
    };
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for len in [0usize, 1, 7, 64, 1000] {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        refused(n.handle_rpc(&bytes).await);
    }
    for text in [
        "null",
        "{}",
        "[1,2,3]",
        r#"{"cluster_id":"test-cluster","from":2,"to":1,"rpc":{"Vote":{}}}"#,
        r#"{"cluster_id":"test-cluster","from":2,"to":1,"rpc":{"AppendEntries":{"vote":1}}}"#,
        r#"{"cluster_id":"test-cluster","from":2,"to":1,"rpc":{"Nope":1}}"#,
    ] {
        refused(n.handle_rpc(text.as_bytes()).await);
    }
    let why = refused(
        n.handle_rpc(
            br#"{"cluster_id":"evil","from":2,"to":1,"rpc":{"ClientWrite":{"RemoveMember":{"node":1}}}}"#,
        )
        .await,
    );
    assert!(why.contains("evil"), "{why}");
    let why = refused(
        n.handle_rpc(
            br#"{"cluster_id":"test-cluster","from":2,"to":5,"rpc":{"ClientWrite":{"RemoveMember":{"node":1}}}}"#,
        )
        .await,
    );
    assert!(why.contains("node 5"), "{why}");
    let huge = vec![b' '; settings().max_rpc_bytes + 1];
    assert!(refused(n.handle_rpc(&huge).await).contains("exceeds"));
    // A well-formed forwarded proposal works.
    let ok = n
        .handle_rpc(
            br#"{"cluster_id":"test-cluster","from":2,"to":1,"rpc":{"ClientWrite":{"SetLeaving":{"node":1}}}}"#,
        )
        .await;
    assert!(matches!(
        serde_json::from_slice::<RaftRpcReply>(&ok),
        Ok(RaftRpcReply::ClientWrite(Ok(Outcome::Done)))
    ));
    assert!(state_of(&n).members[&1].leaving);
    n.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_five_voters_and_a_leaving_voter_is_replaced_by_a_learner() {
    let net = Arc::new(Net::default());
    let (_keep, dirs) = dirs(6);
    let n1 = start(&net, 1, &dirs[0]).await.unwrap();
    n1.initialize(info(1)).await.unwrap();
    eventually("node 1 to lead", || n1.is_leader()).await;
    // The only voter cannot leave.
    assert!(matches!(
        n1.remove_node(1).await,
        Err(RaftError::LastVoter(1))
    ));
    let mut nodes = vec![n1.clone()];
    for id in 2..=6 {
        nodes.push(start(&net, id, &dirs[(id - 1) as usize]).await.unwrap());
        let role = n1.add_node(id, info(id)).await.unwrap();
        let want = if id <= 5 {
            NodeRole::Voter
        } else {
            NodeRole::Learner
        };
        assert_eq!(role, want, "node {id}");
    }
    assert_eq!(n1.voters(), [1, 2, 3, 4, 5].into());
    assert_eq!(n1.raft_nodes(), [1, 2, 3, 4, 5, 6].into());
    // Membership changes are the leader's.
    assert!(matches!(
        nodes[1].remove_node(6).await,
        Err(RaftError::NotLeader {
            me: 2,
            leader: Some(1)
        })
    ));
    // A node that comes back at another address is re-pointed, and keeps its vote.
    let mut moved = info(4);
    moved.peer_addr = "127.0.0.1:9999".into();
    assert_eq!(n1.add_node(4, moved).await.unwrap(), NodeRole::Voter);
    assert_eq!(state_of(&n1).members[&4].peer_addr, "127.0.0.1:9999");
    assert_eq!(n1.voters(), [1, 2, 3, 4, 5].into());
    // A leaving voter is replaced by the caught-up learner.
    n1.remove_node(5).await.unwrap();
    assert_eq!(n1.voters(), [1, 2, 3, 4, 6].into());
    assert_eq!(n1.raft_nodes(), [1, 2, 3, 4, 6].into());
    // A proposal made on the promoted node reaches everyone left.
    nodes[5].propose(put(7)).await.unwrap();
    let live: Vec<_> = nodes.iter().filter(|n| n.id() != 5).collect();
    let expected = state_of(&n1);
    eventually("identical state on the remaining five", || {
        live.iter().all(|n| state_of(n) == expected)
    })
    .await;
    assert_eq!(
        expected.members.len(),
        6,
        "members leave the state separately"
    );
    for n in &nodes {
        n.shutdown().await.unwrap();
    }
}

/// A member added while it cannot catch up stays a learner; the leader promotes it on a
/// later round once it has caught up, so a cluster does not keep too few voters for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_that_could_not_catch_up_is_promoted_later() {
    let net = Arc::new(Net::default());
    let (_keep, dirs) = dirs(4);
    let nodes = three_nodes(&net, &dirs).await;
    let n4 = start(&net, 4, &dirs[3]).await.unwrap();
    net.cut(4, true);
    assert_eq!(
        nodes[0].add_node(4, info(4)).await.unwrap(),
        NodeRole::Learner
    );
    assert_eq!(nodes[0].promote(4).await.unwrap(), NodeRole::Learner);
    assert_eq!(nodes[0].voters(), [1, 2, 3].into());
    // Only the leader changes membership; an unknown node is not made a voter.
    assert!(matches!(
        nodes[1].promote(4).await,
        Err(RaftError::NotLeader { .. })
    ));
    assert_eq!(nodes[0].promote(9).await.unwrap(), NodeRole::Learner);
    net.cut(4, false);
    let deadline = Instant::now() + Duration::from_secs(15);
    while nodes[0].promote(4).await.unwrap() != NodeRole::Voter {
        assert!(Instant::now() < deadline, "node 4 was never promoted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(nodes[0].voters(), [1, 2, 3, 4].into());
    eventually("node 4 to see itself a voter", || n4.voters().contains(&4)).await;
    for n in nodes.iter().chain([&n4]) {
        n.shutdown().await.unwrap();
    }
}

/// Leases: a follower's comes from asking its leader (counted from when it asked) and holds
/// while the leader keeps a majority; it lapses once the follower is cut off, and comes back
/// when it is reachable again. A leader's lease lapses once it has no majority.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_follow_the_majority() {
    let lease = Duration::from_millis(1000);
    let net = Arc::new(Net::default());
    let (_keep, dirs) = dirs(3);
    let nodes = three_nodes(&net, &dirs).await;
    eventually("every lease", || nodes.iter().all(|n| n.lease_valid(lease))).await;
    net.cut(2, true);
    eventually("the cut follower's lease to lapse", || {
        !nodes[1].lease_valid(lease)
    })
    .await;
    assert!(nodes[0].lease_valid(lease) && nodes[2].lease_valid(lease));
    net.cut(2, false);
    eventually("the follower's lease back", || nodes[1].lease_valid(lease)).await;
    net.cut(2, true);
    net.cut(3, true);
    eventually("the leader's lease to lapse without a majority", || {
        !nodes[0].lease_valid(lease)
    })
    .await;
    net.cut(2, false);
    net.cut(3, false);
    for n in &nodes {
        n.shutdown().await.unwrap();
    }
}
