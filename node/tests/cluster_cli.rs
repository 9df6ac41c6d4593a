//! `starling status` and `starling leave` against real cluster members: status lists the
//! members with their shards, leave hands every shard of a node to the other, and a node that
//! runs alone refuses to leave with a message that says why.

mod cluster_common;
mod node_common;

use std::time::Duration;

use cluster_common::{cluster_view, members, owned_by_name, rt, settled};
use node_common::{cli, NodeProc};

/// Status on a 2-node cluster shows both members (name, id, state, voter, shards, HTTP
/// address); `starling leave` on one moves all its shards to the other; status on a node
/// that runs alone shows no cluster part.
#[test]
fn status_lists_members_and_leave_moves_every_shard() {
    let nodes = members(2);
    let (a, b) = (&nodes[0], &nodes[1]);
    let rt = rt();
    rt.block_on(settled(&[a, b], 2, Duration::from_secs(60)));
    let view = rt.block_on(cluster_view(a)).expect("cluster view");

    let (code, out, err) = cli(&b.base(), &["status"], None);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("node: up"), "{out}");
    assert!(
        out.contains("cluster: t (16 shards; this node is b)"),
        "{out}"
    );
    assert!(out.contains("members: 2"), "{out}");
    assert!(out.contains("shards moving: 0 (settled)"), "{out}");
    let leader = view["leader"].as_str().expect("a leader");
    assert!(
        out.contains("leader: b (") || out.contains("leader: a ("),
        "{out}"
    );
    assert!(out.contains(leader), "{out}");
    for m in view["members"].as_array().expect("members") {
        let id = m["id"].as_str().unwrap();
        let line = out
            .lines()
            .find(|l| l.starts_with("  ") && l.contains(id))
            .unwrap_or_else(|| panic!("no line for member {id}: {out}"));
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            cols,
            vec![
                m["name"].as_str().unwrap(),
                id,
                "live",
                if m["voter"] == true { "yes" } else { "no" },
                &m["shards"].to_string(),
                m["http"].as_str().unwrap(),
            ],
            "{out}"
        );
    }
    let before = owned_by_name(&view);
    assert_eq!(before.values().sum::<u64>(), 16, "{view:#}");
    assert!(before["b"] > 0, "b owns nothing to hand over: {view:#}");

    let (code, out, err) = cli(&b.base(), &["leave"], None);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out.trim(),
        format!(
            "node b owned {} shards before leaving and owns none now; stop it when you like",
            before["b"]
        )
    );
    let after = owned_by_name(&rt.block_on(cluster_view(a)).expect("cluster view"));
    assert_eq!(after["a"], 16, "{after:?}");
    // b may already be removed from the members (it owns nothing).
    assert_eq!(after.get("b").copied().unwrap_or(0), 0, "{after:?}");
    // b is marked as leaving in its status, or, once the leader removed it (it owns
    // nothing), no longer listed as a member.
    let (code, out, _) = cli(&b.base(), &["status", "--node", &b.base()], None);
    assert_eq!(code, 0);
    let listed = out.lines().any(|l| l.trim_start().starts_with("b "));
    assert!(out.contains("leaving") || !listed, "{out}");

    let single = NodeProc::start(&[]);
    let (code, out, err) = cli(&single.base(), &["status"], None);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("node: up") && !out.contains("cluster"),
        "{out}"
    );
}

/// `starling leave` against a node that runs alone fails with exit code 1 and says the node
/// is not part of a cluster.
#[test]
fn leave_on_a_single_node_is_refused_clearly() {
    let single = NodeProc::start(&[]);
    let (code, out, err) = cli(&single.base(), &["leave"], None);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains("is not part of a cluster") && err.contains(&single.base()),
        "{err}"
    );
    // And the node is unharmed.
    let (code, out, _) = cli(&single.base(), &["status"], None);
    assert_eq!(code, 0);
    assert!(out.contains("node: up"), "{out}");
}
