//! Joins: interval joins of two insert-only streams and table joins. Their own file because
//! a join is the one node whose schema and key come from two inputs.

use crate::definition::{JoinDef, JoinKind};
use crate::plan::{NodeKind, NodePlan, PlanError};
use crate::schema::Schema;
use crate::value::DataType;

use super::builder::Builder;
use super::checks::duration;

impl Builder {
    pub(super) fn plan_join(&mut self, id: String, j: &JoinDef) -> Result<(), PlanError> {
        let left = self.upstream(&j.left);
        let right = self.upstream(&j.right);
        let (l, r) = (&self.nodes[left], &self.nodes[right]);
        if l.key_type != r.key_type && l.key_type != DataType::Any && r.key_type != DataType::Any {
            return Err(PlanError::TypeMismatch {
                node: id,
                field: "right".into(),
                expected: format!("a key of type {} (the left key)", l.key_type),
                found: format!("{} (use key_by to align the keys)", r.key_type),
            });
        }
        let mut fields = l.schema.fields.clone();
        for f in &r.schema.fields {
            let mut f = f.clone();
            if fields.iter().any(|x| x.name == f.name) {
                f.name = format!("{}_{}", j.right, f.name);
            }
            fields.push(f);
        }
        let kind = match j.kind {
            JoinKind::Interval => {
                let within =
                    match &j.within {
                        Some(w) => duration(&id, "within", w)?,
                        None => return Err(PlanError::MissingField {
                            node: id,
                            field: "within",
                            why: "for an interval join (how far apart the two event times may be)",
                        }),
                    };
                if !l.append_only || !r.append_only {
                    return Err(PlanError::InvalidParameter {
                            node: id,
                            field: "left",
                            message: "an interval join needs insert-only inputs (not an aggregate or distinct)".into(),
                        });
                }
                NodeKind::IntervalJoin {
                    left,
                    right,
                    within,
                }
            }
            JoinKind::Table => {
                if j.within.is_some() {
                    return Err(PlanError::InvalidParameter {
                        node: id,
                        field: "within",
                        message: "only interval joins take `within`".into(),
                    });
                }
                NodeKind::TableJoin { left, right }
            }
        };
        let plan = NodePlan {
            id,
            schema: Schema::new(fields),
            key_type: l.key_type.clone(),
            append_only: true,
            lateness: l.lateness.max(r.lateness),
            kind,
        };
        self.push(plan);
        Ok(())
    }
}
