//! JSON views of topics and dataflows, as the API returns them.

use serde_json::{json, Value as Json};
use starling_operators::json::value_to_json;
use starling_operators::Schema;

use crate::runtime::{DataflowInfo, TopicInfo};

/// A schema as a list of fields.
pub fn schema(s: &Schema) -> Json {
    Json::Array(
        s.fields
            .iter()
            .map(|f| {
                json!({
                    "name": f.name,
                    "type": f.data_type.to_string(),
                    "optional": f.optional,
                    "default": value_to_json(&f.default),
                })
            })
            .collect(),
    )
}

/// A topic with its counters.
pub fn topic(t: &TopicInfo) -> Json {
    let s = &t.spec.schema;
    json!({
        "name": t.spec.name,
        "key": t.spec.key.map(|k| s.field(k).name.clone()),
        "time": t.spec.time.map(|k| s.field(k).name.clone()),
        "fields": schema(s),
        "published": t.published,
        "max_event_time": t.max_event_time,
        "subscribers": t.subscribers,
    })
}

/// A dataflow with its live counters and watermarks.
pub fn dataflow(d: &DataflowInfo) -> Json {
    json!({
        "name": d.name,
        "description": d.definition.description,
        "inputs": d.inputs.iter().zip(&d.watermarks).map(|((id, topic), wm)| json!({
            "id": id, "topic": topic, "watermark": wm,
        })).collect::<Vec<_>>(),
        "outputs": d.outputs,
        "frontier": d.frontier,
        "counters": {
            "window_state": d.window_state,
            "late_events": d.late_events,
            "dead_letters": d.dead_letters,
            "output_updates": d.output_updates,
        },
        "definition": serde_json::to_value(&d.definition).unwrap_or(Json::Null),
    })
}
