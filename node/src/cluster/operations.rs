//! The cluster-wide catalog and watermark operations the node's router calls: each is agreed
//! with (or sent to) the cluster, then waited for here. Kept apart from the write path
//! (`placement`) and from merged subscriptions (`merge`), which have their own machinery.

use std::time::{Duration, Instant};

use starling_cluster::{CatalogEntry, CatalogKind, Command, NodeId};
use starling_operators::definition::{Definition, TopicDef};
use starling_operators::plan::stages;

use super::Shared;
use crate::{DataflowInfo, EngineError};

/// How long a submit waits for the agreed definition to be installed here.
const APPLY_TIMEOUT: Duration = Duration::from_secs(15);

/// The public operations across the cluster, called by the node's router (never by the
/// engine). Each is called from a blocking thread or a multi-threaded runtime's task, and
/// blocks until the cluster answers; reads scatter with the `scatter_*` methods, publishes
/// are placed by `placement`, subscriptions are merged by `merge`.
impl Shared {
    /// Agrees a definition with the cluster (its stages must plan here first), then waits
    /// until it is installed here.
    pub(crate) fn install(&self, def: &Definition) -> Result<DataflowInfo, EngineError> {
        let engine = self.engine()?;
        engine.check_definition(def)?;
        // Each stage must plan too, or the cluster would agree on what cannot run.
        let cut = stages::split(def);
        let parts: Vec<Definition> = cut.iter().map(|s| s.definition.clone()).collect();
        if parts.len() > 1 {
            let retracting = engine.retracting_nodes(def)?;
            if let Some(node) = stages::crossing(&cut)
                .into_iter()
                .find(|c| retracting.contains(c))
            {
                return Err(EngineError::BadRequest(format!(
                    "in a cluster, the records of node `{node}` must move to other nodes (a \
                     `key_by` reads it), but it corrects what it emitted (retractions) and only \
                     insertions can move between nodes yet; re-key before that node, or make it \
                     emit final results with no allowed lateness"
                )));
            }
            engine.check_definitions(&parts).map_err(|e| {
                EngineError::BadRequest(format!(
                    "dataflow `{}` cannot be cut into stages for the cluster: {e}",
                    def.name
                ))
            })?;
        }
        let text = serde_json::to_string(def).map_err(|e| EngineError::Internal(e.to_string()))?;
        let name = def.name.clone();
        let last = parts
            .last()
            .map(|d| d.name.clone())
            .unwrap_or_else(|| name.clone());
        self.block(async {
            if self
                .current()
                .catalog
                .contains_key(&(CatalogKind::Dataflow, name.clone()))
            {
                return Err(EngineError::DataflowExists(name.clone()));
            }
            self.propose(Command::PutCatalog(CatalogEntry {
                kind: CatalogKind::Dataflow,
                name: name.clone(),
                text,
            }))
            .await?;
            let deadline = Instant::now() + APPLY_TIMEOUT;
            loop {
                if engine.dataflow(&last).is_ok() {
                    if let Ok(info) = engine.dataflow(&name) {
                        self.installed_everywhere(&name, deadline).await;
                        return Ok(info);
                    }
                }
                if Instant::now() > deadline {
                    return Err(EngineError::Unavailable(format!(
                        "dataflow `{name}` was agreed by the cluster but not installed here \
                         within {APPLY_TIMEOUT:?}"
                    )));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    }

    /// Waits (until `deadline`) for every live member to report in gossip that it installed
    /// the catalog as of now: a dataflow counts only what reaches it after it runs, so an
    /// event published right after a submit returned would be missed by a member that had
    /// not installed it yet. A member that does not catch up in time is named in the log;
    /// the submit still succeeds (the definition is agreed and will run there).
    async fn installed_everywhere(&self, dataflow: &str, deadline: Instant) {
        let version = self.current().catalog_version;
        loop {
            let st = self.current();
            let behind: Vec<String> = self
                .membership
                .members()
                .await
                .into_iter()
                .filter(|m| m.node_id != self.me && m.catalog < version)
                .filter(|m| st.members.get(&m.node_id).is_some_and(|i| !i.leaving))
                .map(|m| m.name)
                .collect();
            if behind.is_empty() {
                return;
            }
            if Instant::now() > deadline {
                tracing::warn!(dataflow, members = ?behind, "submitted, but not yet running on every member: events those members own that arrive before it starts there are not counted");
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Agrees a topic declaration with the cluster, then waits until it exists here.
    pub(crate) fn create_topic(&self, def: &TopicDef) -> Result<(), EngineError> {
        let engine = self.engine()?;
        // An existing topic is checked here (identical: nothing to do; different: the
        // engine's own conflict error), without asking the cluster.
        if engine.topic_spec(&def.name).is_ok() {
            return engine.create_topic_local(def);
        }
        engine.check_topic(def)?;
        let text = serde_json::to_string(def).map_err(|e| EngineError::Internal(e.to_string()))?;
        let name = def.name.clone();
        self.block(async {
            self.propose(Command::PutCatalog(CatalogEntry {
                kind: CatalogKind::Topic,
                name: name.clone(),
                text,
            }))
            .await?;
            let deadline = Instant::now() + APPLY_TIMEOUT;
            while engine.topic_spec(&name).is_err() {
                if Instant::now() > deadline {
                    return Err(EngineError::Unavailable(format!(
                        "topic `{name}` was agreed but not created here within {APPLY_TIMEOUT:?}"
                    )));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(())
        })
    }

    /// Drops a dataflow on every node: agreed, then waited for here.
    pub(crate) fn drop_dataflow(&self, name: &str) -> Result<(), EngineError> {
        let engine = self.engine()?;
        engine.dataflow(name)?;
        self.block(async {
            self.propose(Command::DropCatalog {
                kind: CatalogKind::Dataflow,
                name: name.to_string(),
            })
            .await?;
            let deadline = Instant::now() + APPLY_TIMEOUT;
            while engine.dataflow(name).is_ok() {
                if Instant::now() > deadline {
                    return Err(EngineError::Unavailable(format!(
                        "dataflow `{name}` was dropped by the cluster but still runs here"
                    )));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(())
        })
    }

    /// Moves a topic's watermark on every live node (an end-of-input mark must close the
    /// windows of every shard, wherever they run).
    pub(crate) fn advance_watermark(&self, topic: &str, time: u64) -> Result<(), EngineError> {
        let engine = self.engine()?;
        engine.advance_watermark_local(topic, time)?;
        let live = self.live_members();
        let peers: Vec<(NodeId, String)> = self
            .current()
            .members
            .iter()
            .filter(|(n, _)| **n != self.me && live.contains(n))
            .map(|(n, m)| (*n, m.http_addr.clone()))
            .collect();
        self.block(async {
            let calls = peers.iter().map(|(n, addr)| async move {
                let c = starling_client::http::HttpClient::new(&format!("http://{addr}"));
                c.advance_watermark_local(topic, time)
                    .await
                    .map_err(|e| format!("node {n:016x}: {e}"))
            });
            let failed: Vec<String> = futures_util::future::join_all(calls)
                .await
                .into_iter()
                .filter_map(Result::err)
                .collect();
            if failed.is_empty() {
                Ok(())
            } else {
                Err(EngineError::Unavailable(format!(
                    "the watermark moved here but not on every node: {}",
                    failed.join("; ")
                )))
            }
        })
    }
}
