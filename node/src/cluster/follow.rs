//! On every node: following the committed state (the agreed catalog installed here, peers
//! learnt, dead members noticed, promotions taken over, moves to this node completed). Its
//! own file because it is the one loop that makes this node match what the cluster agreed.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use starling_cluster::{controller, CatalogKind, ClusterState, NodeId};
use starling_operators::definition::{Definition, TopicDef};
use starling_operators::plan::stages;

use super::{handoff, replication, PeerAddr, Shared};
use crate::Engine;

/// On every node: follow the committed state (install the catalog, learn peers, complete
/// hand-offs to this node).
pub(super) async fn follow_loop(s: Arc<Shared>) {
    let mut state = s.state.clone();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    // The table as last seen, to notice promotions of this node. None at start: a restart's
    // replay rebuilt every shard the log holds.
    let mut prev: Option<Arc<ClusterState>> = None;
    loop {
        tokio::select! {
            _ = state.changed() => {}
            _ = tick.tick() => {}
        }
        let st = state.borrow_and_update().clone();
        // Shards just promoted to this node: writes for them wait until their log is
        // replayed (below).
        let promoted = prev
            .as_ref()
            .map(|p| replication::promoted(p, &st, s.me))
            .unwrap_or_default();
        replication::watching(&s, &st, &promoted);
        let dead: BTreeSet<NodeId> = s.membership.dead().await.into_iter().collect();
        let newly: Vec<NodeId> = match s.dead.lock() {
            Ok(mut d) => {
                let newly = dead.difference(&d).copied().collect();
                *d = dead;
                newly
            }
            Err(_) => Vec::new(),
        };
        for node in newly {
            s.peers.close_dead(node).await;
        }
        for m in s.membership.members().await {
            s.peers.learn(
                m.node_id,
                PeerAddr {
                    peer: m.peer_addr,
                    fingerprint: m.peer_fingerprint.clone(),
                },
            );
        }
        let Ok(engine) = s.engine() else { return };
        let s2 = Arc::clone(&s);
        let st2 = Arc::clone(&st);
        let installed = tokio::task::spawn_blocking(move || sync_catalog(&engine, &st2, &s2)).await;
        if installed.unwrap_or(false) {
            s.membership.set_catalog(st.catalog_version).await;
        }
        complete_moves(&s, &st).await;
        if !promoted.is_empty() {
            tracing::info!(shards = ?promoted, "promoted to owner of shards whose owner died");
            // Not tried again: a replay that failed part way has fed some events already.
            if let Err(e) = replication::take_over(&s, promoted.clone()).await {
                tracing::error!(error = %e, shards = ?promoted, "taking over shards failed: their dataflow state may miss logged events (the log itself is whole)");
            }
            replication::recovered(&s, &promoted);
        }
        prev = Some(st);
    }
}

/// The agreed dataflows, each cut into its stages (one stage when it has no `key_by`).
pub(super) fn catalog_stages(st: &ClusterState) -> Vec<stages::Stage> {
    st.catalog
        .values()
        .filter(|e| e.kind == CatalogKind::Dataflow)
        .filter_map(|e| Definition::from_json(&e.text).ok())
        .flat_map(|d| stages::split(&d))
        .collect()
}

/// The stage of an agreed dataflow that has `output`.
pub(super) fn stage_of_output(st: &ClusterState, dataflow: &str, output: &str) -> Option<String> {
    let entry = st
        .catalog
        .get(&(CatalogKind::Dataflow, dataflow.to_string()))?;
    let def = Definition::from_json(&entry.text).ok()?;
    stages::split(&def)
        .into_iter()
        .find(|s| s.definition.outputs.iter().any(|o| o.name == output))
        .map(|s| s.definition.name)
}

/// Makes this node's topics and dataflows match the agreed catalog; true once they do.
fn sync_catalog(engine: &Engine, st: &ClusterState, s: &Shared) -> bool {
    let mut whole = true;
    for ((kind, name), entry) in &st.catalog {
        match kind {
            CatalogKind::Topic if engine.topic_spec(name).is_err() => {
                match serde_json::from_str::<TopicDef>(&entry.text) {
                    Ok(def) => {
                        if let Err(e) = engine.create_topic_local(&def) {
                            tracing::error!(topic = %name, error = %e, "cannot create an agreed topic");
                            whole = false;
                        }
                    }
                    Err(e) => {
                        tracing::error!(topic = %name, error = %e, "bad agreed topic");
                        whole = false;
                    }
                }
            }
            CatalogKind::Dataflow => match Definition::from_json(&entry.text) {
                // Stages in order: each creates the internal topics the next one reads.
                Ok(def) => {
                    for stage in stages::split(&def) {
                        let d = &stage.definition;
                        if engine.dataflow(&d.name).is_ok() {
                            continue;
                        }
                        if let Err(e) = engine.install_local(d) {
                            tracing::error!(dataflow = %d.name, error = %e, "cannot install an agreed dataflow");
                            whole = false;
                            break;
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(dataflow = %name, error = %e, "bad agreed dataflow");
                    whole = false;
                }
            },
            _ => {}
        }
    }
    let expected: BTreeSet<String> = catalog_stages(st)
        .into_iter()
        .map(|s| s.definition.name)
        .collect();
    // Only once this node has caught up with the log: a stale state must not drop dataflows.
    if s.started.elapsed() > Duration::from_secs(2) || s.raft.is_leader() {
        // Later stages first, so that no stage loses its producer while it runs.
        let mut local = engine.dataflows();
        local.sort_by(|a, b| b.name.cmp(&a.name));
        for d in local {
            if !expected.contains(&d.name) {
                if let Err(e) = engine.drop_dataflow_local(&d.name) {
                    tracing::warn!(dataflow = %d.name, error = %e, "cannot drop a dataflow the cluster dropped");
                    whole = false;
                }
            }
        }
        whole
    } else {
        false
    }
}

/// Completes moves of shards to this node whose old owner is gone (crashed or removed), so
/// that no state will come; the old owner's hand-off completes every other move (see
/// [`handoff`]).
async fn complete_moves(s: &Shared, st: &ClusterState) {
    let incoming: Vec<u32> = st
        .table
        .iter()
        .filter(|(_, e)| e.moving_to == Some(s.me) && handoff::owner_gone(s, e.owner))
        .map(|(shard, _)| shard)
        .collect();
    let ready: Vec<u32> = {
        let Ok(mut moving) = s.moving_in.lock() else {
            return;
        };
        moving.retain(|shard, _| incoming.contains(shard));
        let now = Instant::now();
        incoming
            .iter()
            .filter(|shard| {
                now.duration_since(*moving.entry(**shard).or_insert(now)) >= handoff::HANDOFF_DRAIN
            })
            .copied()
            .collect()
    };
    for shard in ready {
        if let Some(command) = controller::complete(st, shard, s.me) {
            if let Err(e) = s.propose(command).await {
                tracing::debug!(shard, error = %e, "could not complete a move yet");
            }
        }
    }
}
