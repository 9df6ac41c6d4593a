//! Dataflows: checking definitions, installing and dropping them on every worker, and
//! describing what runs. Its own file because install and drop change what every worker
//! runs and must reach them all in one order, with the catalog kept in step.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use starling_operators::definition::Definition;
use starling_operators::plan::{self, Plan};
use starling_operators::render::{DataflowStats, Update};

use super::worker::{self, Command};
use super::{checkpoint, Engine, Subscribers};
use crate::EngineError;

/// An installed dataflow, as the engine keeps it.
pub(crate) struct Installed {
    pub plan: Arc<Plan>,
    pub definition: Definition,
    pub stats: Arc<DataflowStats>,
    pub outputs: Vec<Arc<Subscribers<Arc<[Update]>>>>,
    /// Per worker: the frontier of the dataflow's probe (`u64::MAX` once complete).
    pub frontiers: Arc<Vec<AtomicU64>>,
    /// Per worker, per input: the input's watermark.
    pub watermarks: Arc<Vec<Vec<AtomicU64>>>,
    pub late_events: Arc<AtomicU64>,
}

/// A description of an installed dataflow, with live counters.
#[derive(Clone, Debug)]
pub struct DataflowInfo {
    pub name: String,
    pub definition: Definition,
    pub inputs: Vec<(String, String)>,
    pub outputs: Vec<String>,
    /// Lowest watermark over workers, per input.
    pub watermarks: Vec<u64>,
    /// Lowest probe frontier over workers: every result up to here is out.
    pub frontier: u64,
    pub window_state: i64,
    pub late_events: u64,
    pub dead_letters: u64,
    pub output_updates: u64,
}

impl Engine {
    /// Plans a definition against this node's topics without installing it: the errors a
    /// submit would give, before the cluster is asked to agree on it.
    pub fn check_definition(&self, def: &Definition) -> Result<(), EngineError> {
        self.check_definitions(std::slice::from_ref(def))
    }

    /// The ids of a definition's nodes that may retract what they emitted (corrections,
    /// `updates` aggregates, table joins): records that cannot cross nodes as plain events.
    pub fn retracting_nodes(&self, def: &Definition) -> Result<Vec<String>, EngineError> {
        let plan = plan::plan(def, &self.topic_specs())?;
        Ok(plan
            .nodes
            .iter()
            .filter(|n| !n.append_only)
            .map(|n| n.id.clone())
            .collect())
    }

    /// Plans definitions in order, each seeing the topics the earlier ones create (the stages
    /// of a dataflow cut for a cluster), without installing any.
    pub fn check_definitions(&self, defs: &[Definition]) -> Result<(), EngineError> {
        let mut topics = self.topic_specs();
        for def in defs {
            if self.inner.lock_dataflows().contains_key(&def.name) {
                return Err(EngineError::DataflowExists(def.name.clone()));
            }
            let plan = plan::plan(def, &topics)?;
            if self.inner.config.store.is_none() && plan.uses_stores() {
                return Err(EngineError::NoStorage(def.name.clone()));
            }
            for t in plan.new_topics {
                topics.insert(t.name.clone(), t);
            }
        }
        Ok(())
    }

    /// Checks and installs on this node a definition written as YAML or JSON.
    pub fn install_text(&self, text: &str) -> Result<DataflowInfo, EngineError> {
        let def = Definition::parse(text).map_err(|e| EngineError::Plan(e.into()))?;
        self.install_local(&def)
    }

    /// Checks a definition, creates the topics it declares, and runs it on every worker of
    /// this node (in a cluster, once the cluster agreed it).
    pub fn install_local(&self, def: &Definition) -> Result<DataflowInfo, EngineError> {
        let mut next_seq = self.inner.lock_ingest();
        let info = self.install_at(def, Some(*next_seq), None)?;
        *next_seq += 1;
        Ok(info)
    }

    /// Installs under the ingest lock (held by the caller). `seq` is where the install sits
    /// in the log's order; it is recorded in the catalog (`None` during replay, where the
    /// catalog already has it).
    pub(super) fn install_at(
        &self,
        def: &Definition,
        seq: Option<u64>,
        restore: Option<Arc<checkpoint::Restore>>,
    ) -> Result<DataflowInfo, EngineError> {
        let mut dataflows = self.inner.lock_dataflows();
        if dataflows.contains_key(&def.name) {
            return Err(EngineError::DataflowExists(def.name.clone()));
        }
        let plan = Arc::new(plan::plan(def, &self.topic_specs())?);
        let stores = match &self.inner.config.store {
            Some(store) => store.stores.clone(),
            None if plan.uses_stores() => {
                return Err(EngineError::NoStorage(def.name.clone()));
            }
            None => Default::default(),
        };
        // Collections that the definition fills are created (or checked) before it runs.
        if let Some(vectors) = &stores.vectors {
            for node in &plan.nodes {
                if let plan::NodeKind::VectorUpsert {
                    collection,
                    dim,
                    metric,
                    ..
                } = &node.kind
                {
                    let spec = starling_storage::CollectionSpec {
                        dim: *dim,
                        metric: *metric,
                    };
                    vectors.create(collection, spec)?;
                }
            }
        }
        for spec in &plan.new_topics {
            self.inner.add_topic(spec.clone())?;
        }
        let workers = self.inner.config.workers;
        let installed = Installed {
            plan: Arc::clone(&plan),
            definition: def.clone(),
            stats: Arc::new(DataflowStats::default()),
            outputs: plan
                .outputs
                .iter()
                .map(|_| Arc::new(Subscribers::new(self.inner.config.subscriber_queue)))
                .collect(),
            frontiers: Arc::new((0..workers).map(|_| AtomicU64::new(0)).collect()),
            watermarks: Arc::new(
                (0..workers)
                    .map(|_| plan.inputs.iter().map(|_| AtomicU64::new(0)).collect())
                    .collect(),
            ),
            late_events: Arc::new(AtomicU64::new(0)),
        };
        if let (Some(store), Some(seq)) = (&self.inner.config.store, seq) {
            for t in &def.topics {
                store.catalog.add_topic(t)?;
            }
            store.catalog.add_dataflow(seq, def)?;
            // A new definition under an old name must not start from the old one's state.
            store.checkpoints.remove(&def.name)?;
        }
        let info = describe(&installed);
        let cmd = worker::InstallCommand {
            plan,
            stats: Arc::clone(&installed.stats),
            outputs: installed.outputs.clone(),
            frontiers: Arc::clone(&installed.frontiers),
            watermarks: Arc::clone(&installed.watermarks),
            late_events: Arc::clone(&installed.late_events),
            stores,
            restore,
            shards: self
                .inner
                .config
                .shards
                .unwrap_or_else(|| self.inner.config.store.as_ref().map_or(0, |s| s.shards)),
            stragglers: Arc::clone(&self.inner.stragglers),
        };
        dataflows.insert(def.name.clone(), installed);
        // Broadcast before releasing the lock: a concurrent drop of the same name then
        // reaches the workers after the install, never before it. (No path holds `order`
        // and then waits for `dataflows`, so this cannot deadlock.)
        self.inner
            .broadcast(|| Command::Install(Box::new(cmd.clone())));
        drop(dataflows);
        tracing::info!(dataflow = %def.name, "installed");
        Ok(info)
    }

    /// Stops a dataflow on every worker of this node and ends its subscriptions. Its topics
    /// stay.
    pub fn drop_dataflow_local(&self, name: &str) -> Result<(), EngineError> {
        let mut dataflows = self.inner.lock_dataflows();
        if !dataflows.contains_key(name) {
            return Err(EngineError::UnknownDataflow(name.into()));
        }
        if let Some(store) = &self.inner.config.store {
            store.catalog.remove_dataflow(name)?;
            store.checkpoints.remove(name)?;
        }
        let removed = dataflows
            .remove(name)
            .ok_or_else(|| EngineError::UnknownDataflow(name.into()))?;
        self.inner.broadcast(|| Command::Drop(name.into()));
        drop(dataflows);
        for o in &removed.outputs {
            self.inner
                .dropped_cut_off
                .fetch_add(o.cut_off.load(Ordering::Relaxed), Ordering::Relaxed);
            o.close_all();
        }
        tracing::info!(dataflow = %name, "dropped");
        Ok(())
    }

    /// Installed dataflows with their live counters.
    pub fn dataflows(&self) -> Vec<DataflowInfo> {
        let mut v: Vec<DataflowInfo> = self.inner.lock_dataflows().values().map(describe).collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// One installed dataflow with its live counters.
    pub fn dataflow(&self, name: &str) -> Result<DataflowInfo, EngineError> {
        self.inner
            .lock_dataflows()
            .get(name)
            .map(describe)
            .ok_or_else(|| EngineError::UnknownDataflow(name.into()))
    }

    /// The live counters of a dataflow (window state, dead letters, ...).
    pub fn stats(&self, name: &str) -> Result<Arc<DataflowStats>, EngineError> {
        self.inner
            .lock_dataflows()
            .get(name)
            .map(|d| Arc::clone(&d.stats))
            .ok_or_else(|| EngineError::UnknownDataflow(name.into()))
    }

    /// Number of timely dataflows alive on the workers (for leak checks).
    pub fn live_dataflows(&self) -> usize {
        self.inner
            .live
            .iter()
            .map(|l| l.load(Ordering::Relaxed))
            .sum()
    }
}

fn describe(d: &Installed) -> DataflowInfo {
    let n_inputs = d.plan.inputs.len();
    DataflowInfo {
        name: d.plan.name.clone(),
        definition: d.definition.clone(),
        inputs: d
            .plan
            .inputs
            .iter()
            .map(|i| (i.id.clone(), i.topic.clone()))
            .collect(),
        outputs: d.plan.outputs.iter().map(|o| o.name.clone()).collect(),
        watermarks: (0..n_inputs)
            .map(|i| {
                d.watermarks
                    .iter()
                    .map(|w| w[i].load(Ordering::Relaxed))
                    .min()
                    .unwrap_or(0)
            })
            .collect(),
        frontier: d
            .frontiers
            .iter()
            .map(|f| f.load(Ordering::Relaxed))
            .min()
            .unwrap_or(0),
        window_state: d.stats.window_state.load(Ordering::Relaxed),
        late_events: d.late_events.load(Ordering::Relaxed),
        dead_letters: d.stats.dead_letters.load(Ordering::Relaxed),
        output_updates: d.stats.output_updates.load(Ordering::Relaxed),
    }
}
