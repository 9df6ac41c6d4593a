//! The plan under construction: nodes planned so far, found by id, and the dispatch of each
//! node to its family's planning. Its own file because every family builds on it.

use std::collections::HashMap;

use crate::definition::{NodeDef, WindowDef};
use crate::expr::Expr;
use crate::plan::{NodeKind, NodePlan, PlanError};

pub(super) struct Builder {
    pub(super) nodes: Vec<NodePlan>,
    pub(super) index: HashMap<String, usize>,
    /// Window nodes are not rendered on their own; their aggregate fuses them.
    pub(super) windows: HashMap<String, (WindowDef, usize)>,
}

impl Builder {
    pub(super) fn push(&mut self, node: NodePlan) -> usize {
        let i = self.nodes.len();
        self.index.insert(node.id.clone(), i);
        self.nodes.push(node);
        i
    }

    pub(super) fn resolve(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }

    pub(super) fn upstream(&self, id: &str) -> usize {
        // Topological order and the reference check guarantee presence.
        self.index.get(id).copied().unwrap_or(0)
    }

    pub(super) fn expr(
        &self,
        node: &str,
        field: &str,
        text: &str,
        input: usize,
    ) -> Result<Expr, PlanError> {
        Expr::compile(text, &self.nodes[input].schema).map_err(|error| PlanError::Expression {
            node: node.to_string(),
            field: field.to_string(),
            error,
        })
    }

    pub(super) fn plan_node(&mut self, node: &NodeDef) -> Result<(), PlanError> {
        let id = node.id().to_string();
        match node {
            NodeDef::Map(m) | NodeDef::Project(m) => self.plan_map(id, m),
            NodeDef::Filter(f) => self.plan_filter(id, f),
            NodeDef::KeyBy(k) => self.plan_key_by(id, k),
            NodeDef::Window(w) => self.plan_window(w),
            NodeDef::Aggregate(a) => self.plan_aggregate(id, a),
            NodeDef::Join(j) => self.plan_join(id, j),
            NodeDef::Distinct(d) => self.plan_distinct(id, d),
            NodeDef::Union(u) => self.plan_union(id, u),
            NodeDef::Publish(p) => self.plan_publish(id, p),
            NodeDef::KvPut(k) => self.plan_kv_put(id, k),
            NodeDef::KvLookup(k) => self.plan_kv_lookup(id, k),
            NodeDef::Series(x) => self.plan_series(id, x),
            NodeDef::Embed(e) => self.plan_embed(id, e),
            NodeDef::VectorUpsert(v) => self.plan_vector_upsert(id, v),
            NodeDef::VectorSearch(v) => self.plan_vector_search(id, v),
            NodeDef::Trigger(t) => self.plan_trigger(id, t),
        }
    }
}

impl NodePlan {
    /// A copy of the shape (schema, key, flags) with a placeholder kind, for `..` updates.
    pub(super) fn clone_shape(&self) -> NodePlan {
        NodePlan {
            id: self.id.clone(),
            schema: self.schema.clone(),
            key_type: self.key_type.clone(),
            append_only: self.append_only,
            lateness: self.lateness,
            kind: NodeKind::Union { inputs: vec![] },
        }
    }
}
