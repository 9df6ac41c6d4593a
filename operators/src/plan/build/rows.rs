//! Nodes that work row by row or merge streams (map, filter, key_by, distinct, union): their
//! schema and key follow from their inputs. One file because they share those rules.

use crate::definition::{DistinctDef, FilterDef, KeyByDef, MapDef, UnionDef};
use crate::plan::{NodeKind, NodePlan, PlanError};
use crate::schema::{Field, Schema};

use super::builder::Builder;
use super::checks::{check_name, expect_bool, positive_duration};
use super::describe_schema;

impl Builder {
    pub(super) fn plan_map(&mut self, id: String, m: &MapDef) -> Result<(), PlanError> {
        let input = self.upstream(&m.input);
        if m.fields.is_empty() {
            return Err(PlanError::MissingField {
                node: id,
                field: "fields",
                why: "and must list at least one `name: expression`",
            });
        }
        let mut fields = Vec::new();
        let mut exprs = Vec::new();
        for f in &m.fields {
            check_name("field", &f.name)?;
            if fields.iter().any(|x: &Field| x.name == f.name) {
                return Err(PlanError::InvalidParameter {
                    node: id,
                    field: "fields",
                    message: format!("output field `{}` is listed twice", f.name),
                });
            }
            let e = self.expr(&id, &format!("fields.{}", f.name), &f.expr, input)?;
            fields.push(Field::required(&f.name, e.data_type().clone()));
            exprs.push(e);
        }
        let up = &self.nodes[input];
        let plan = NodePlan {
            id,
            schema: Schema::new(fields),
            key_type: up.key_type.clone(),
            append_only: up.append_only,
            lateness: up.lateness,
            kind: NodeKind::Map { input, exprs },
        };
        self.push(plan);
        Ok(())
    }

    pub(super) fn plan_filter(&mut self, id: String, f: &FilterDef) -> Result<(), PlanError> {
        let input = self.upstream(&f.input);
        let predicate = self.expr(&id, "where", &f.predicate, input)?;
        expect_bool(&id, "where", &predicate)?;
        let up = self.nodes[input].clone_shape();
        self.push(NodePlan {
            id,
            kind: NodeKind::Filter { input, predicate },
            ..up
        });
        Ok(())
    }

    pub(super) fn plan_key_by(&mut self, id: String, k: &KeyByDef) -> Result<(), PlanError> {
        let input = self.upstream(&k.input);
        let key = self.expr(&id, "key", &k.key, input)?;
        let up = self.nodes[input].clone_shape();
        self.push(NodePlan {
            id,
            key_type: key.data_type().clone(),
            kind: NodeKind::KeyBy { input, key },
            ..up
        });
        Ok(())
    }

    pub(super) fn plan_distinct(&mut self, id: String, d: &DistinctDef) -> Result<(), PlanError> {
        let input = self.upstream(&d.input);
        let ttl = positive_duration(&id, "ttl", Some(&d.ttl))?;
        let up = self.nodes[input].clone_shape();
        self.push(NodePlan {
            id,
            append_only: false,
            kind: NodeKind::Distinct { input, ttl },
            ..up
        });
        Ok(())
    }

    pub(super) fn plan_union(&mut self, id: String, u: &UnionDef) -> Result<(), PlanError> {
        let inputs: Vec<usize> = u.inputs.iter().map(|i| self.upstream(i)).collect();
        let first = &self.nodes[inputs[0]];
        for (name, &i) in u.inputs.iter().zip(&inputs).skip(1) {
            let other = &self.nodes[i];
            let same = other.schema.fields.len() == first.schema.fields.len()
                && other
                    .schema
                    .fields
                    .iter()
                    .zip(&first.schema.fields)
                    .all(|(a, b)| a.name == b.name && a.data_type == b.data_type)
                && other.key_type == first.key_type;
            if !same {
                return Err(PlanError::SchemaMismatch {
                        node: id,
                        message: format!(
                            "inputs `{}` ({}; key {}) and `{name}` ({}; key {}) differ; a union needs identical fields and key types (use map to align them)",
                            u.inputs[0],
                            describe_schema(&first.schema),
                            first.key_type,
                            describe_schema(&other.schema),
                            other.key_type
                        ),
                    });
            }
        }
        let mut shape = first.clone_shape();
        shape.append_only = inputs.iter().all(|&i| self.nodes[i].append_only);
        shape.lateness = inputs
            .iter()
            .map(|&i| self.nodes[i].lateness)
            .max()
            .unwrap_or(0);
        self.push(NodePlan {
            id,
            kind: NodeKind::Union { inputs },
            ..shape
        });
        Ok(())
    }
}
