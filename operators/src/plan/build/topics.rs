//! Declared topics: field types and defaults, the event-time and key fields, and the shape
//! of the late and dead-letter topics. Its own file because topics are checked before any
//! node, and lookups reuse the field rules.

use crate::definition::{FieldDef, TopicDef, MAX_COPIES};
use crate::json::value_from_json;
use crate::plan::{PlanError, TopicSpec};
use crate::schema::{Field, Schema};
use crate::value::{DataType, Value};

use super::checks::check_name;
use super::SYSTEM_TOPIC_FIELDS;

const MAX_FIELDS: usize = 1_000;

/// One declared field: its type parsed and its default checked against it.
pub(super) fn field_from_def(fd: &FieldDef) -> Result<Field, String> {
    let FieldDef {
        name,
        data_type,
        optional,
        default,
    } = fd;
    let ty = DataType::parse(data_type).ok_or_else(|| {
        format!("unknown type `{data_type}`; use bool, int, float, string, bytes, timestamp, list<T>, map<T>, vector<N> or any")
    })?;
    let default = match default {
        None => Value::Null,
        Some(_) if !optional => {
            return Err("a default is only allowed on an optional field".into());
        }
        Some(j) => value_from_json(name, &ty, j).map_err(|e| format!("bad default: {e}"))?,
    };
    Ok(Field {
        name: name.clone(),
        data_type: ty,
        optional: *optional,
        default,
    })
}

/// Builds the schema of a declared topic.
pub(super) fn topic_spec(def: &TopicDef) -> Result<TopicSpec, PlanError> {
    check_name("topic", &def.name)?;
    let bad = |field: &str, message: String| PlanError::BadTopic {
        topic: def.name.clone(),
        field: field.to_string(),
        message,
    };
    if def.fields.is_empty() {
        return Err(bad("fields", "a topic needs at least one field".into()));
    }
    if def.fields.len() > MAX_FIELDS {
        return Err(PlanError::TooMany {
            what: "fields",
            count: def.fields.len(),
            limit: MAX_FIELDS,
        });
    }
    let mut fields = Vec::with_capacity(def.fields.len());
    for fd in &def.fields {
        check_name("field", &fd.name)?;
        if fields.iter().any(|f: &Field| f.name == fd.name) {
            return Err(bad(&fd.name, "declared more than once".into()));
        }
        fields.push(field_from_def(fd).map_err(|m| bad(&fd.name, m))?);
    }
    let schema = Schema::new(fields);
    let time = schema.index_of(&def.time).ok_or_else(|| {
        bad(
            "time",
            format!("`{}` is not a field of the topic", def.time),
        )
    })?;
    let tf = schema.field(time);
    if !matches!(tf.data_type, DataType::Timestamp | DataType::Int) || tf.optional {
        return Err(bad(
            "time",
            format!(
                "event-time field `{}` must be a required timestamp or int, not {}{}",
                tf.name,
                if tf.optional { "optional " } else { "" },
                tf.data_type
            ),
        ));
    }
    if !(1..=MAX_COPIES).contains(&def.min_insync) {
        return Err(bad(
            "min_insync",
            format!(
                "must be between 1 and {MAX_COPIES} (the most copies a cluster keeps of a \
                 shard), not {}",
                def.min_insync
            ),
        ));
    }
    let key = match &def.key {
        None => None,
        Some(k) => Some(
            schema
                .index_of(k)
                .ok_or_else(|| bad("key", format!("`{k}` is not a field of the topic")))?,
        ),
    };
    Ok(TopicSpec {
        name: def.name.clone(),
        schema,
        key,
        time: Some(time),
        acks: def.acks,
        min_insync: def.min_insync,
    })
}

/// The topic spec of a late or dead-letter topic.
pub(crate) fn system_topic(name: &str) -> TopicSpec {
    TopicSpec {
        name: name.to_string(),
        schema: Schema::new(
            SYSTEM_TOPIC_FIELDS
                .iter()
                .map(|(n, t)| Field::required(n, t.clone()))
                .collect(),
        ),
        key: None,
        time: Some(2),
        acks: Default::default(),
        min_insync: 1,
    }
}
