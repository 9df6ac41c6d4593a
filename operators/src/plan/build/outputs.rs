//! Nodes that write to topics (publish, trigger) and the topics they derive. Their own file
//! because only these nodes create a topic, shaped by their input's schema.

use crate::definition::{PublishDef, TriggerDef};
use crate::plan::{NodeKind, NodePlan, PlanError, TopicSpec};

use super::builder::Builder;
use super::checks::expect_bool;

impl Builder {
    pub(super) fn derived_topic(&self, node: &str, topic: &str) -> Result<TopicSpec, PlanError> {
        let n = &self.nodes[self.upstream(node)];
        Ok(TopicSpec {
            name: topic.to_string(),
            schema: n.schema.clone(),
            key: n.schema.index_of("key"),
            time: None,
            acks: Default::default(),
            min_insync: 1,
        })
    }

    pub(super) fn plan_publish(&mut self, id: String, p: &PublishDef) -> Result<(), PlanError> {
        let input = self.upstream(&p.input);
        let shape = self.nodes[input].clone_shape();
        self.push(NodePlan {
            id,
            kind: NodeKind::Publish {
                input,
                topic: p.topic.clone(),
            },
            ..shape
        });
        Ok(())
    }

    pub(super) fn plan_trigger(&mut self, id: String, t: &TriggerDef) -> Result<(), PlanError> {
        let input = self.upstream(&t.input);
        if !matches!(
            self.nodes[input].kind,
            NodeKind::WindowAggregate { .. } | NodeKind::Aggregate { .. }
        ) {
            return Err(PlanError::InvalidParameter {
                node: id,
                field: "input",
                message: format!(
                    "a trigger fires on an aggregate's results, but `{}` is not an aggregate",
                    t.input
                ),
            });
        }
        let when = self.expr(&id, "when", &t.when, input)?;
        expect_bool(&id, "when", &when)?;
        let mut shape = self.nodes[input].clone_shape();
        shape.append_only = true;
        self.push(NodePlan {
            id,
            kind: NodeKind::Trigger {
                input,
                when,
                topic: t.topic.clone(),
            },
            ..shape
        });
        Ok(())
    }
}
