//! Shard hand-off, the engine's side (ARCHITECTURE §5): take the window state of some
//! shards' keys out of every running dataflow on the old owner, and merge it into the same
//! dataflows on the new owner.
//!
//! A release runs in the command order like a checkpoint: every event handed to the workers
//! before it is in the dataflows when the operators cut their part out, and every event of
//! the shard that still reaches a window afterwards (it was in a channel between workers) is
//! diverted and counted in [`Engine::stragglers`], for the cluster to send on.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use starling_operators::render::handoff::state_that_stays;

use super::worker::Command;
use super::Engine;
use crate::EngineError;

/// How long a release waits for every worker's part.
const WAIT: Duration = Duration::from_secs(20);

/// One shard's part of one window operator's state, as bytes that travel between nodes
/// (an rkyv archive of [`starling_operators::render::snapshot::MovedSnap`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardPart {
    /// The dataflow (or stage) that holds the operator.
    pub dataflow: String,
    /// The operator's node id in the definition.
    pub node: String,
    pub shard: u32,
    pub bytes: Vec<u8>,
}

/// The parts of one release as the workers hand them in.
pub(crate) struct Gather {
    expected: usize,
    state: Mutex<Gathered>,
    ready: Condvar,
}

#[derive(Default)]
struct Gathered {
    arrived: usize,
    parts: Vec<ShardPart>,
    errors: Vec<String>,
}

impl Gather {
    fn new(expected: usize) -> Arc<Gather> {
        Arc::new(Gather {
            expected,
            state: Mutex::new(Gathered::default()),
            ready: Condvar::new(),
        })
    }

    /// A worker's parts (and the parts it could not encode).
    pub(crate) fn add(&self, parts: Vec<ShardPart>, errors: Vec<String>) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.arrived += 1;
        st.parts.extend(parts);
        st.errors.extend(errors);
        drop(st);
        self.ready.notify_all();
    }

    fn wait(&self) -> Result<Vec<ShardPart>, EngineError> {
        let deadline = Instant::now() + WAIT;
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        while st.arrived < self.expected {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(EngineError::Unavailable(format!(
                    "{} of {} workers handed in their shard state within {WAIT:?}",
                    st.arrived, self.expected
                )));
            }
            st = self
                .ready
                .wait_timeout(st, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        if !st.errors.is_empty() {
            // The parts that were cut out must not be lost: they go with the error's caller
            // anyway, so an error here is only logged.
            tracing::error!(errors = ?st.errors, "some shard state could not be encoded");
        }
        Ok(std::mem::take(&mut st.parts))
    }
}

impl Engine {
    /// Takes the window state of `shards`' keys out of every running dataflow, so that the
    /// node they move to can carry on from it; records of those keys that reach a window
    /// later are diverted, not counted. With no shards, collects only what was diverted.
    pub fn release_shards(&self, shards: &[u32]) -> Result<Vec<ShardPart>, EngineError> {
        if !shards.is_empty() {
            for (name, d) in self.inner.lock_dataflows().iter() {
                let stays = state_that_stays(&d.plan);
                if !stays.is_empty() {
                    tracing::warn!(
                        dataflow = %name,
                        shards = ?shards,
                        nodes = ?stays,
                        "shards leave this node, but some of this dataflow's state does not move with them"
                    );
                }
            }
        }
        let shards: Arc<[u32]> = shards.into();
        let mut parts = self.hand_off_round(&shards)?;
        if !shards.is_empty() {
            // Records a worker had sent to another one before the release reach it in that
            // worker's next step: a second round, once every worker has handed in the
            // first, collects them.
            parts.extend(self.hand_off_round(&[].into())?);
        }
        tracing::debug!(shards = ?&shards[..], parts = parts.len(), "released shard state");
        Ok(parts)
    }

    fn hand_off_round(&self, shards: &Arc<[u32]>) -> Result<Vec<ShardPart>, EngineError> {
        let gather = Gather::new(self.inner.senders.len());
        self.inner.broadcast(|| Command::HandOff {
            shards: Arc::clone(shards),
            gather: Arc::clone(&gather),
        });
        gather.wait()
    }

    /// Merges state handed over by `shards`' old owner into the running dataflows (each
    /// worker keeps the keys it owns); this node's windows count those keys again.
    pub fn adopt_shards(&self, shards: &[u32], parts: Vec<ShardPart>) -> Result<(), EngineError> {
        {
            let dataflows = self.inner.lock_dataflows();
            if let Some(p) = parts.iter().find(|p| !dataflows.contains_key(&p.dataflow)) {
                return Err(EngineError::UnknownDataflow(p.dataflow.clone()));
            }
        }
        let shards: Arc<[u32]> = shards.into();
        let parts = Arc::new(parts);
        self.inner.broadcast(|| Command::Adopt {
            shards: Arc::clone(&shards),
            parts: Arc::clone(&parts),
        });
        Ok(())
    }

    /// Records of released shards that reached a window after the release and wait to be
    /// sent to the shard's owner ([`Engine::release_shards`] with no shards collects them).
    pub fn stragglers(&self) -> usize {
        self.inner
            .stragglers
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}
