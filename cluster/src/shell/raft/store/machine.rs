//! The state machine openraft applies committed entries to: the [`ClusterState`] in memory,
//! the last applied log id and the last membership.
//!
//! Apart from the files because it has none of its own: it is rebuilt on start from the
//! snapshot plus the committed entries after it, and applying a command is the core's pure
//! [`ClusterState::apply`]; this only records what openraft needs besides.

use std::sync::Arc;

use openraft::{BasicNode, Entry, EntryPayload, LogId, StoredMembership};

use crate::core::state::{ClusterState, Outcome};
use crate::core::table::NodeId;
use crate::shell::raft::TypeConfig;

/// The in-memory state machine.
pub(super) struct Machine {
    pub(super) state: Arc<ClusterState>,
    pub(super) last_applied: Option<LogId<NodeId>>,
    pub(super) membership: StoredMembership<NodeId, BasicNode>,
}

impl Machine {
    /// Applies committed entries in order; one outcome per entry.
    pub(super) fn apply(&mut self, entries: &[Entry<TypeConfig>]) -> Vec<Outcome> {
        let mut outcomes = Vec::with_capacity(entries.len());
        for entry in entries {
            self.last_applied = Some(entry.log_id);
            outcomes.push(match &entry.payload {
                EntryPayload::Blank => Outcome::Done,
                EntryPayload::Normal(command) => {
                    let outcome = Arc::make_mut(&mut self.state).apply(command);
                    if let Outcome::Refused(why) = &outcome {
                        tracing::debug!(
                            index = entry.log_id.index,
                            ?command,
                            why,
                            "command refused"
                        );
                    }
                    outcome
                }
                EntryPayload::Membership(mem) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), mem.clone());
                    Outcome::Done
                }
            });
        }
        outcomes
    }
}
