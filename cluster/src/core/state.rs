//! The replicated state: what Raft agrees on, and the commands that change it.
//!
//! Besides the shard table it holds the members (with the addresses other nodes reach them
//! at) and the catalog (topic and dataflow declarations, as opaque text), so that a node that
//! joins later learns every dataflow from the log and runs it too. Applying a command is
//! pure and deterministic: every node that applies the same log reaches the same state.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::core::table::{Epoch, NodeId, ShardId, ShardTable, TableError};

/// The largest replication factor: every copy costs a network round trip per publish.
pub const MAX_REPLICATION: u32 = 7;

/// How other nodes reach a member.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// A readable name (`--node-name`, or derived from the id).
    pub name: String,
    /// The node's peer listener (node to node only; clients use its QUIC front door).
    /// Read under its old name from a state written before peers had their own listener.
    #[serde(alias = "quic_addr")]
    pub peer_addr: String,
    /// The node's HTTP front door.
    pub http_addr: String,
    /// True once the node asked to leave: it gets no new shards and its shards move away.
    #[serde(default)]
    pub leaving: bool,
}

/// What kind of declaration a catalog entry holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum CatalogKind {
    Topic,
    Dataflow,
}

/// One declaration, as the user wrote it (JSON or YAML text the engine understands).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogEntry {
    pub kind: CatalogKind,
    pub name: String,
    pub text: String,
}

/// A change to the replicated state. Commands are checked when applied; a command that does
/// not apply (an unknown shard, a move that is not in progress) leaves the state unchanged
/// and its outcome says why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Records a member (or updates its addresses).
    AddMember { node: NodeId, info: MemberInfo },
    /// Marks a member as leaving.
    SetLeaving { node: NodeId },
    /// Forgets a member; it must own no shard.
    RemoveMember { node: NodeId },
    /// Gives a shard to a node at once (no data to hand over).
    Assign { shard: ShardId, node: NodeId },
    /// Starts handing a shard over.
    BeginMove { shard: ShardId, to: NodeId },
    /// Ends a hand-off.
    CompleteMove { shard: ShardId, to: NodeId },
    /// Gives a hand-off up.
    AbortMove { shard: ShardId, to: NodeId },
    /// Adds or replaces a catalog entry.
    PutCatalog(CatalogEntry),
    /// Removes a catalog entry.
    DropCatalog { kind: CatalogKind, name: String },
    /// Sets how many nodes hold each shard (owner included), R.
    SetReplication { factor: u32 },
    /// Adds a replica of a shard that starts copying its log.
    AddReplica { shard: ShardId, node: NodeId },
    /// Removes a replica of a shard.
    RemoveReplica { shard: ShardId, node: NodeId },
    /// A joining replica copied the whole log of the owner of `epoch`, as it found in a
    /// fetch it sent while the shard's lists were at version `isr`.
    ReplicaInSync {
        shard: ShardId,
        node: NodeId,
        epoch: Epoch,
        isr: u64,
    },
    /// The owner of `epoch` waited too long on a replica, judging by version `isr` of the
    /// shard's lists: an in-sync one goes back to joining.
    ReplicaOutOfSync {
        shard: ShardId,
        node: NodeId,
        epoch: Epoch,
        isr: u64,
    },
    /// Makes an in-sync replica the owner (the owner died), at the next epoch.
    Promote { shard: ShardId, node: NodeId },
    /// A member marked leaving is back and stays: it was stopped before its shards could
    /// move (every member stopped at once, or the last one), and has been started again.
    /// Clears `leaving`, so that placement gives it shards again instead of draining and
    /// removing it. Only the member itself proposes it, from a process that is not leaving.
    Rejoin { node: NodeId },
}

/// What applying a command did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Done,
    /// The shard's new epoch after an ownership change.
    Epoch(Epoch),
    /// The command did not apply; the state is unchanged.
    Refused(String),
}

/// The state every node follows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// The cluster's name; nodes of another cluster are refused.
    pub cluster_id: String,
    pub table: ShardTable,
    pub members: BTreeMap<NodeId, MemberInfo>,
    /// Catalog entries by (kind, name), in a stable order.
    pub catalog: BTreeMap<(CatalogKind, String), CatalogEntry>,
    /// How many nodes hold each shard, owner included (R); 0 until the first leader set it
    /// from its configuration, which means 1.
    #[serde(default)]
    pub replication: u32,
    /// How many catalog changes took effect (`PutCatalog`, `DropCatalog`): each member
    /// gossips the version it has installed, so a submit can wait until every member runs
    /// the new dataflow (an event published before would not be counted there).
    #[serde(default)]
    pub catalog_version: u64,
}

impl ClusterState {
    /// The state of a new cluster: no members, every shard unowned.
    pub fn new(cluster_id: &str, shards: u32) -> Result<ClusterState, TableError> {
        Ok(ClusterState {
            cluster_id: cluster_id.to_string(),
            table: ShardTable::new(shards)?,
            members: BTreeMap::new(),
            catalog: BTreeMap::new(),
            replication: 0,
            catalog_version: 0,
        })
    }

    /// R, the number of nodes that hold each shard (owner included), at least 1.
    pub fn replication_factor(&self) -> u32 {
        self.replication.max(1)
    }

    /// Applies one command.
    pub fn apply(&mut self, command: &Command) -> Outcome {
        let refused = |e: TableError| Outcome::Refused(e.to_string());
        match command {
            Command::AddMember { node, info } => {
                let leaving = self.members.get(node).is_some_and(|m| m.leaving);
                let mut info = info.clone();
                info.leaving |= leaving;
                self.members.insert(*node, info);
                Outcome::Done
            }
            Command::SetLeaving { node } => match self.members.get_mut(node) {
                Some(m) => {
                    m.leaving = true;
                    Outcome::Done
                }
                None => Outcome::Refused(format!("node {node} is not a member")),
            },
            Command::Rejoin { node } => match self.members.get_mut(node) {
                Some(m) => {
                    m.leaving = false;
                    Outcome::Done
                }
                None => Outcome::Refused(format!("node {node} is not a member")),
            },
            Command::RemoveMember { node } => {
                let owned = self
                    .table
                    .iter()
                    .filter(|(_, e)| e.owner == Some(*node) || e.moving_to == Some(*node))
                    .count();
                if owned > 0 {
                    return Outcome::Refused(format!(
                        "node {node} still owns or receives {owned} shards"
                    ));
                }
                self.members.remove(node);
                self.table.forget_replica(*node);
                Outcome::Done
            }
            Command::Assign { shard, node } => {
                if !self.members.contains_key(node) {
                    return Outcome::Refused(format!("node {node} is not a member"));
                }
                self.table
                    .assign(*shard, *node)
                    .map_or_else(refused, Outcome::Epoch)
            }
            Command::BeginMove { shard, to } => {
                if !self.members.contains_key(to) {
                    return Outcome::Refused(format!("node {to} is not a member"));
                }
                match self.table.owner(*shard) {
                    None => Outcome::Refused(format!("shard {shard} has no owner to hand it over")),
                    Some(owner) if owner == *to => {
                        Outcome::Refused(format!("shard {shard} is already owned by {to}"))
                    }
                    Some(_) => self
                        .table
                        .begin_move(*shard, *to)
                        .map_or_else(refused, |()| Outcome::Done),
                }
            }
            Command::CompleteMove { shard, to } => self
                .table
                .complete_move(*shard, *to)
                .map_or_else(refused, Outcome::Epoch),
            Command::AbortMove { shard, to } => self
                .table
                .abort_move(*shard, *to)
                .map_or_else(refused, Outcome::Epoch),
            Command::PutCatalog(entry) => {
                self.catalog
                    .insert((entry.kind, entry.name.clone()), entry.clone());
                self.catalog_version += 1;
                Outcome::Done
            }
            Command::SetReplication { factor } => {
                if *factor == 0 || *factor > MAX_REPLICATION {
                    return Outcome::Refused(format!(
                        "a replication factor must be 1 to {MAX_REPLICATION}, not {factor}"
                    ));
                }
                self.replication = *factor;
                Outcome::Done
            }
            Command::AddReplica { shard, node } => {
                if !self.members.contains_key(node) {
                    return Outcome::Refused(format!("node {node} is not a member"));
                }
                self.table
                    .add_replica(*shard, *node)
                    .map_or_else(refused, |()| Outcome::Done)
            }
            Command::RemoveReplica { shard, node } => self
                .table
                .remove_replica(*shard, *node)
                .map_or_else(refused, |()| Outcome::Done),
            Command::ReplicaInSync {
                shard,
                node,
                epoch,
                isr,
            } => self
                .table
                .replica_in_sync(*shard, *node, *epoch, *isr)
                .map_or_else(refused, |()| Outcome::Done),
            Command::ReplicaOutOfSync {
                shard,
                node,
                epoch,
                isr,
            } => self
                .table
                .replica_out_of_sync(*shard, *node, *epoch, *isr)
                .map_or_else(refused, |()| Outcome::Done),
            Command::Promote { shard, node } => self
                .table
                .promote(*shard, *node)
                .map_or_else(refused, Outcome::Epoch),
            Command::DropCatalog { kind, name } => {
                match self.catalog.remove(&(*kind, name.clone())) {
                    Some(_) => {
                        self.catalog_version += 1;
                        Outcome::Done
                    }
                    None => Outcome::Refused(format!("no {kind:?} named `{name}`")),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str) -> MemberInfo {
        MemberInfo {
            name: name.into(),
            ..MemberInfo::default()
        }
    }

    #[test]
    fn the_catalog_version_counts_the_changes_that_took_effect() {
        let mut s = ClusterState::new("c", 2).unwrap();
        let put = Command::PutCatalog(CatalogEntry {
            kind: CatalogKind::Dataflow,
            name: "w".into(),
            text: "{}".into(),
        });
        let drop = Command::DropCatalog {
            kind: CatalogKind::Dataflow,
            name: "w".into(),
        };
        assert_eq!(s.catalog_version, 0);
        s.apply(&put);
        assert_eq!(s.catalog_version, 1);
        s.apply(&drop);
        assert_eq!(s.catalog_version, 2);
        assert!(matches!(s.apply(&drop), Outcome::Refused(_)));
        assert_eq!(s.catalog_version, 2, "a refused drop changes nothing");
        // A state saved before the field existed reads as version 0.
        let mut old = serde_json::to_value(&s).unwrap();
        old.as_object_mut().unwrap().remove("catalog_version");
        let back: ClusterState = serde_json::from_value(old).unwrap();
        assert_eq!(back.catalog_version, 0);
    }

    #[test]
    fn moves_raise_the_epoch_and_refusals_change_nothing() {
        let mut s = ClusterState::new("c", 2).unwrap();
        assert!(matches!(
            s.apply(&Command::Assign { shard: 0, node: 1 }),
            Outcome::Refused(_)
        ));
        s.apply(&Command::AddMember {
            node: 1,
            info: member("a"),
        });
        s.apply(&Command::AddMember {
            node: 2,
            info: member("b"),
        });
        assert_eq!(
            s.apply(&Command::Assign { shard: 0, node: 1 }),
            Outcome::Epoch(Epoch(1))
        );
        let before = s.clone();
        assert!(matches!(
            s.apply(&Command::CompleteMove { shard: 0, to: 2 }),
            Outcome::Refused(_)
        ));
        assert!(matches!(
            s.apply(&Command::Assign { shard: 9, node: 1 }),
            Outcome::Refused(_)
        ));
        assert!(matches!(
            s.apply(&Command::RemoveMember { node: 1 }),
            Outcome::Refused(_)
        ));
        assert_eq!(s, before);
        assert_eq!(
            s.apply(&Command::BeginMove { shard: 0, to: 2 }),
            Outcome::Done
        );
        assert_eq!(s.table.owner(0), Some(1));
        assert_eq!(
            s.apply(&Command::CompleteMove { shard: 0, to: 2 }),
            Outcome::Epoch(Epoch(2))
        );
        assert_eq!(s.table.owner(0), Some(2));
        assert_eq!(s.apply(&Command::RemoveMember { node: 1 }), Outcome::Done);
    }

    #[test]
    fn a_member_back_from_leaving_stays_and_an_address_update_keeps_the_mark() {
        let mut s = ClusterState::new("c", 2).unwrap();
        s.apply(&Command::AddMember {
            node: 1,
            info: member("a"),
        });
        s.apply(&Command::SetLeaving { node: 1 });
        // Addresses learnt from gossip do not say whether the member still leaves.
        s.apply(&Command::AddMember {
            node: 1,
            info: member("a"),
        });
        assert!(s.members[&1].leaving);
        assert_eq!(s.apply(&Command::Rejoin { node: 1 }), Outcome::Done);
        assert!(!s.members[&1].leaving);
        assert!(matches!(
            s.apply(&Command::Rejoin { node: 2 }),
            Outcome::Refused(_)
        ));
        assert!(!s.members.contains_key(&2));
    }
}
