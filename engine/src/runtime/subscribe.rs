//! Subscriptions to topics and dataflow outputs, including finding the stage that holds an
//! output of a dataflow a cluster cut into stages. Its own file because readers only attach
//! to what runs; the queues themselves are in `subscribers`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use starling_operators::plan;
use starling_operators::render::Update;
use starling_operators::Event;

use super::{Engine, Subscription};
use crate::EngineError;

impl Engine {
    /// Subscribes to this node's results of a dataflow output: batches of
    /// `(event, time, diff)` updates. (In a cluster the node merges every node's.)
    pub fn subscribe_local(
        &self,
        dataflow: &str,
        output: &str,
    ) -> Result<Subscription<Arc<[Update]>>, EngineError> {
        let located = self.locate_output(dataflow, output);
        let dataflow = located.as_str();
        let dataflows = self.inner.lock_dataflows();
        let d = dataflows
            .get(dataflow)
            .ok_or_else(|| EngineError::UnknownDataflow(dataflow.into()))?;
        let i = d
            .plan
            .outputs
            .iter()
            .position(|o| o.name == output)
            .ok_or_else(|| EngineError::UnknownOutput {
                dataflow: dataflow.into(),
                output: output.into(),
                known: d
                    .plan
                    .outputs
                    .iter()
                    .map(|o| o.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        Ok(d.outputs[i].subscribe())
    }

    /// Subscribes to the events appended to a topic.
    pub fn subscribe_topic(&self, topic: &str) -> Result<Subscription<Arc<[Event]>>, EngineError> {
        Ok(self.inner.topic(topic)?.subscribers.subscribe())
    }

    /// The schema of a dataflow output's rows.
    pub fn output_schema(
        &self,
        dataflow: &str,
        output: &str,
    ) -> Result<starling_operators::Schema, EngineError> {
        let located = self.locate_output(dataflow, output);
        let dataflow = located.as_str();
        let dataflows = self.inner.lock_dataflows();
        let d = dataflows
            .get(dataflow)
            .ok_or_else(|| EngineError::UnknownDataflow(dataflow.into()))?;
        d.plan
            .outputs
            .iter()
            .find(|o| o.name == output)
            .map(|o| o.schema.clone())
            .ok_or_else(|| EngineError::UnknownOutput {
                dataflow: dataflow.into(),
                output: output.into(),
                known: d
                    .plan
                    .outputs
                    .iter()
                    .map(|o| o.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// The installed dataflow that has `output`: the dataflow itself, or, for a dataflow a
    /// cluster cut into stages (`plan::stages`), the stage holding that output. Falls back to
    /// `dataflow` so that errors name what the user asked for.
    fn locate_output(&self, dataflow: &str, output: &str) -> String {
        let dataflows = self.inner.lock_dataflows();
        let has = |name: &str| {
            dataflows
                .get(name)
                .is_some_and(|d| d.plan.outputs.iter().any(|o| o.name == output))
        };
        if has(dataflow) {
            return dataflow.to_string();
        }
        let mut n = 1;
        loop {
            let stage = plan::stages::stage_name(dataflow, n);
            if !dataflows.contains_key(&stage) {
                return dataflow.to_string();
            }
            if has(&stage) {
                return stage;
            }
            n += 1;
        }
    }

    /// Live subscriptions (topics and outputs) and how many were cut off for reading slowly.
    pub fn subscriptions(&self) -> (usize, u64) {
        let mut live = 0;
        let mut cut = 0;
        for t in self.inner.read_topics().values() {
            live += t.subscribers.len();
            cut += t.subscribers.cut_off.load(Ordering::Relaxed);
        }
        for d in self.inner.lock_dataflows().values() {
            for o in &d.outputs {
                live += o.len();
                cut += o.cut_off.load(Ordering::Relaxed);
            }
        }
        (
            live,
            cut + self.inner.dropped_cut_off.load(Ordering::Relaxed),
        )
    }

    /// Ends every live subscription (readers see the end of their stream); used when a node
    /// shuts down so that streaming responses finish.
    pub fn close_subscriptions(&self) {
        for t in self.inner.read_topics().values() {
            t.subscribers.close_all();
        }
        for d in self.inner.lock_dataflows().values() {
            d.outputs.iter().for_each(|o| o.close_all());
        }
    }
}
