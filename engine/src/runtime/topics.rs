//! Topics: their declaration and live state, creating and listing them, and checking rows
//! against a topic's schema. Its own file because every path that takes events (publish,
//! replay, replication) leans on these checks and nothing here sends to a worker.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::Value as Json;

use starling_operators::definition::{Definition, TopicDef};
use starling_operators::json::row_from_json;
use starling_operators::plan::{self, TopicSpec};
use starling_operators::{Event, Row, Value};

use super::{Engine, Inner, Subscribers};
use crate::EngineError;

/// A topic and its live state.
pub(crate) struct Topic {
    pub spec: TopicSpec,
    pub clock: Mutex<TopicClock>,
    pub subscribers: Subscribers<Arc<[Event]>>,
    pub published: AtomicU64,
}

/// Newest event time seen on a topic and when the last event arrived.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TopicClock {
    pub max_seen: Option<u64>,
    pub last_arrival: Instant,
}

/// A description of a topic for listings.
#[derive(Clone, Debug)]
pub struct TopicInfo {
    pub spec: TopicSpec,
    /// Events accepted so far.
    pub published: u64,
    /// Newest event time seen.
    pub max_event_time: Option<u64>,
    pub subscribers: usize,
}

/// Checks one row of a publish (field count, event time) and returns its event time.
pub(super) fn checked_time(
    spec: &TopicSpec,
    topic: &str,
    time: usize,
    index: usize,
    row: &Row,
) -> Result<u64, EngineError> {
    if row.len() != spec.schema.len() {
        return Err(EngineError::BadEventShape {
            index,
            message: format!(
                "row has {} values; topic `{topic}` has {} fields",
                row.len(),
                spec.schema.len()
            ),
        });
    }
    match &row[time] {
        Value::Timestamp(v) | Value::Int(v) if *v >= 0 => Ok(*v as u64),
        other => Err(EngineError::BadEventShape {
            index,
            message: format!(
                "event time `{}` must be a non-negative timestamp, found {other}",
                spec.schema.field(time).name
            ),
        }),
    }
}

fn describe_topic(t: &Topic) -> TopicInfo {
    TopicInfo {
        spec: t.spec.clone(),
        published: t.published.load(Ordering::Relaxed),
        max_event_time: t.clock.lock().ok().and_then(|c| c.max_seen),
        subscribers: t.subscribers.len(),
    }
}

impl Engine {
    /// Creates a topic on this node from its declaration (in a cluster, once the cluster
    /// agreed it). Creating an identical topic again is a no-op; a different declaration
    /// under the same name is refused.
    pub fn create_topic_local(&self, def: &TopicDef) -> Result<(), EngineError> {
        if let Some(spec) = self.check_topic(def)? {
            self.inner.add_topic(spec)?;
        }
        if let Some(store) = &self.inner.config.store {
            store.catalog.add_topic(def)?;
        }
        Ok(())
    }

    /// Checks a topic declaration with the errors its creation would give, creating
    /// nothing: a cluster checks before it agrees on a declaration, since every node
    /// would otherwise fail to create what was agreed.
    pub fn check_topic(&self, def: &TopicDef) -> Result<Option<TopicSpec>, EngineError> {
        let probe = Definition {
            name: "topic".into(),
            description: None,
            topics: vec![def.clone()],
            inputs: vec![starling_operators::definition::InputDef {
                id: "i".into(),
                topic: def.name.clone(),
                watermark: Default::default(),
            }],
            nodes: vec![],
            outputs: vec![],
            late_topic: None,
            dead_letter_topic: None,
        };
        // Planning a one-input definition validates the declaration with the same errors.
        // Planned against no existing topics, so that a declaration differing from an existing
        // topic is reported as the conflict it is (`add_topic` compares).
        let p = plan::plan(&probe, &HashMap::new())?;
        Ok(p.new_topics.into_iter().find(|t| t.name == def.name))
    }

    /// Every topic with its counters.
    pub fn topics(&self) -> Vec<TopicInfo> {
        let topics = self.inner.read_topics();
        let mut out: Vec<TopicInfo> = topics
            .values()
            .map(|t| describe_topic(t.as_ref()))
            .collect();
        out.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
        out
    }

    /// One topic's description.
    pub fn topic(&self, name: &str) -> Result<TopicInfo, EngineError> {
        let t = self.inner.topic(name)?;
        Ok(describe_topic(&t))
    }

    /// The declaration of one topic (schema, key and time fields), for front doors that check
    /// typed rows before publishing them.
    pub fn topic_spec(&self, topic: &str) -> Result<TopicSpec, EngineError> {
        Ok(self.inner.topic(topic)?.spec.clone())
    }

    /// Reads part of a topic's spec without cloning it (schema included): a cluster's
    /// publish path needs the key field and the acks setting on every batch.
    pub fn read_topic_spec<R>(
        &self,
        topic: &str,
        read: impl FnOnce(&TopicSpec) -> R,
    ) -> Result<R, EngineError> {
        Ok(read(&self.inner.topic(topic)?.spec))
    }

    pub(super) fn topic_specs(&self) -> HashMap<String, TopicSpec> {
        self.inner
            .read_topics()
            .iter()
            .map(|(k, v)| (k.clone(), v.spec.clone()))
            .collect()
    }

    /// Checks a batch as a publish would (topic, size, every row's shape and event time)
    /// without applying it, so that a batch split across nodes is refused whole.
    pub fn check_rows(&self, topic: &str, rows: &[Row]) -> Result<(), EngineError> {
        let t = self.inner.topic(topic)?;
        let time = t
            .spec
            .time
            .ok_or_else(|| EngineError::WriteOnlyTopic(topic.into()))?;
        self.inner.check_batch(rows.len())?;
        for (index, row) in rows.iter().enumerate() {
            checked_time(&t.spec, topic, time, index, row)?;
        }
        Ok(())
    }

    /// Checks JSON objects against a topic's schema and turns them into rows, without
    /// publishing; the error gives the position of the first bad event.
    pub fn decode_json(&self, topic: &str, docs: &[Json]) -> Result<Vec<Row>, EngineError> {
        let t = self.inner.topic(topic)?;
        self.inner.check_batch(docs.len())?;
        let mut rows = Vec::with_capacity(docs.len());
        for (index, doc) in docs.iter().enumerate() {
            rows.push(
                row_from_json(&t.spec.schema, doc)
                    .map_err(|error| EngineError::BadEvent { index, error })?,
            );
        }
        Ok(rows)
    }
}

impl Inner {
    pub(super) fn topic(&self, name: &str) -> Result<Arc<Topic>, EngineError> {
        self.read_topics()
            .get(name)
            .cloned()
            .ok_or_else(|| EngineError::UnknownTopic(name.into()))
    }

    pub(super) fn add_topic(&self, spec: TopicSpec) -> Result<(), EngineError> {
        let mut topics = self.topics.write().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = topics.get(&spec.name) {
            return if t.spec == spec {
                Ok(())
            } else {
                Err(EngineError::TopicConflict { name: spec.name })
            };
        }
        tracing::info!(topic = %spec.name, "topic created");
        topics.insert(
            spec.name.clone(),
            Arc::new(Topic {
                spec,
                clock: Mutex::new(TopicClock {
                    max_seen: None,
                    last_arrival: Instant::now(),
                }),
                subscribers: Subscribers::new(self.config.subscriber_queue),
                published: AtomicU64::new(0),
            }),
        );
        Ok(())
    }
}
