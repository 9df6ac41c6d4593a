//! JSON ↔ row conversion with validation against a schema.
//!
//! Every error names the field and says what was expected and what was found, because the
//! person reading it is fixing a producer they may not own.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use serde_json::Value as Json;
use thiserror::Error;

use crate::event::Row;
use crate::schema::Schema;
use crate::value::{DataType, Value};

/// Why a JSON document is not a valid row of a schema.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum DecodeError {
    #[error("an event must be a JSON object, found {found}")]
    NotAnObject { found: &'static str },
    #[error("field `{field}` is required but missing")]
    Missing { field: String },
    #[error("field `{field}`: expected {expected}, found {found}")]
    WrongType {
        field: String,
        expected: String,
        found: String,
    },
    #[error("field `{field}` is not in the schema (known fields: {known})")]
    UnknownField { field: String, known: String },
}

fn kind(j: &Json) -> &'static str {
    match j {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

fn describe(j: &Json) -> String {
    let mut s = j.to_string();
    if s.len() > 40 {
        let mut cut = 40;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    format!("{} ({s})", kind(j))
}

/// Decodes a JSON object into a row of `schema`.
pub fn row_from_json(schema: &Schema, json: &Json) -> Result<Row, DecodeError> {
    let Json::Object(obj) = json else {
        return Err(DecodeError::NotAnObject { found: kind(json) });
    };
    for name in obj.keys() {
        if schema.index_of(name).is_none() {
            return Err(DecodeError::UnknownField {
                field: name.clone(),
                known: schema.names().join(", "),
            });
        }
    }
    let mut row = Vec::with_capacity(schema.len());
    for field in &schema.fields {
        match obj.get(&field.name) {
            None | Some(Json::Null) if field.optional => row.push(field.default.clone()),
            None => {
                return Err(DecodeError::Missing {
                    field: field.name.clone(),
                })
            }
            Some(Json::Null) => {
                return Err(DecodeError::WrongType {
                    field: field.name.clone(),
                    expected: field.data_type.to_string(),
                    found: "null (the field is not optional)".into(),
                })
            }
            Some(j) => row.push(value_from_json(&field.name, &field.data_type, j)?),
        }
    }
    Ok(row)
}

/// Decodes one JSON value as a value of type `ty`; `path` names it in errors.
pub fn value_from_json(path: &str, ty: &DataType, j: &Json) -> Result<Value, DecodeError> {
    let wrong = || DecodeError::WrongType {
        field: path.to_string(),
        expected: match ty {
            DataType::Timestamp => "timestamp (integer milliseconds or an RFC 3339 string)".into(),
            DataType::Bytes => "bytes (a base64 string)".into(),
            t => t.to_string(),
        },
        found: describe(j),
    };
    Ok(match (ty, j) {
        (_, Json::Null) => Value::Null,
        (DataType::Any, j) => any_from_json(j),
        (DataType::Bool, Json::Bool(b)) => Value::Bool(*b),
        (DataType::Int, Json::Number(n)) => Value::Int(n.as_i64().ok_or_else(wrong)?),
        (DataType::Float, Json::Number(n)) => Value::Float(n.as_f64().ok_or_else(wrong)?),
        (DataType::String, Json::String(s)) => Value::str(s),
        (DataType::Bytes, Json::String(s)) => Value::Bytes(Arc::from(
            base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|_| wrong())?,
        )),
        (DataType::Timestamp, Json::Number(n)) => Value::Timestamp(n.as_i64().ok_or_else(wrong)?),
        (DataType::Timestamp, Json::String(s)) => {
            Value::Timestamp(parse_timestamp(s).ok_or_else(wrong)?)
        }
        (DataType::List(inner), Json::Array(items)) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                out.push(value_from_json(&format!("{path}[{i}]"), inner, item)?);
            }
            Value::List(Arc::from(out))
        }
        (DataType::Map(inner), Json::Object(obj)) => {
            let mut out = BTreeMap::new();
            for (k, v) in obj {
                out.insert(
                    k.clone(),
                    value_from_json(&format!("{path}.{k}"), inner, v)?,
                );
            }
            Value::Map(Arc::new(out))
        }
        (DataType::Vector(dim), Json::Array(items)) => {
            if items.len() != *dim {
                return Err(DecodeError::WrongType {
                    field: path.to_string(),
                    expected: format!("vector<{dim}> ({dim} numbers)"),
                    found: format!("an array of {} elements", items.len()),
                });
            }
            let mut out = Vec::with_capacity(*dim);
            for item in items {
                out.push(item.as_f64().ok_or_else(wrong)? as f32);
            }
            Value::Vector(Arc::from(out))
        }
        _ => return Err(wrong()),
    })
}

fn any_from_json(j: &Json) -> Value {
    match j {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => Value::str(s),
        Json::Array(a) => Value::List(a.iter().map(any_from_json).collect()),
        Json::Object(o) => Value::Map(Arc::new(
            o.iter()
                .map(|(k, v)| (k.clone(), any_from_json(v)))
                .collect(),
        )),
    }
}

/// Parses an RFC 3339 timestamp to milliseconds since the epoch.
pub fn parse_timestamp(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|d| d.timestamp_millis())
}

/// Encodes a value as JSON (timestamps as integer milliseconds, bytes as base64).
pub fn value_to_json(v: &Value) -> Json {
    match v {
        Value::Null => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(i) | Value::Timestamp(i) => Json::from(*i),
        Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(Json::Number)
            .unwrap_or(Json::Null),
        Value::Str(s) => Json::String(s.to_string()),
        Value::Bytes(b) => Json::String(base64::engine::general_purpose::STANDARD.encode(b)),
        Value::List(l) => Json::Array(l.iter().map(value_to_json).collect()),
        Value::Map(m) => Json::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), value_to_json(v)))
                .collect(),
        ),
        Value::Vector(v) => Json::Array(
            v.iter()
                .map(|x| {
                    serde_json::Number::from_f64(*x as f64)
                        .map(Json::Number)
                        .unwrap_or(Json::Null)
                })
                .collect(),
        ),
    }
}

/// Encodes a row as a JSON object with the schema's field names.
pub fn row_to_json(schema: &Schema, row: &[Value]) -> Json {
    Json::Object(
        schema
            .fields
            .iter()
            .zip(row)
            .map(|(f, v)| (f.name.clone(), value_to_json(v)))
            .collect(),
    )
}

/// Values print as their JSON form: the one text form users see everywhere. Here, with the
/// JSON conversion, so that the value model does not depend on its JSON reading.
impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", value_to_json(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Field;
    use serde_json::json;

    fn schema() -> Schema {
        Schema::new(vec![
            Field::required("user", DataType::String),
            Field::required("ts", DataType::Timestamp),
            Field::optional("score", DataType::Float, Value::Float(0.5)),
            Field::optional(
                "tags",
                DataType::List(Box::new(DataType::String)),
                Value::Null,
            ),
            Field::optional("emb", DataType::Vector(2), Value::Null),
        ])
    }

    #[test]
    fn decodes_with_defaults_and_widening() {
        let row = row_from_json(&schema(), &json!({"user": "a", "ts": 5, "tags": ["x"]})).unwrap();
        assert_eq!(row[0], Value::str("a"));
        assert_eq!(row[1], Value::Timestamp(5));
        assert_eq!(row[2], Value::Float(0.5));
        let row = row_from_json(
            &schema(),
            &json!({"user": "a", "ts": "1970-01-01T00:00:01Z", "score": 2}),
        )
        .unwrap();
        assert_eq!(row[1], Value::Timestamp(1000));
        assert_eq!(row[2], Value::Float(2.0));
    }

    #[test]
    fn errors_name_the_field() {
        let e = row_from_json(&schema(), &json!({"ts": 5})).unwrap_err();
        assert_eq!(e.to_string(), "field `user` is required but missing");
        let e = row_from_json(&schema(), &json!({"user": 1, "ts": 5})).unwrap_err();
        assert_eq!(
            e.to_string(),
            "field `user`: expected string, found an integer (1)"
        );
        let e =
            row_from_json(&schema(), &json!({"user": "a", "ts": 5, "tags": ["x", 2]})).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("field `tags[1]`: expected string"),
            "{e}"
        );
        let e = row_from_json(&schema(), &json!({"user": "a", "ts": 5, "emb": [1.0]})).unwrap_err();
        assert!(e.to_string().contains("vector<2> (2 numbers)"), "{e}");
        let e = row_from_json(&schema(), &json!({"user": "a", "ts": 5, "bogus": 1})).unwrap_err();
        assert!(matches!(e, DecodeError::UnknownField { .. }));
        let e = row_from_json(&schema(), &json!([1])).unwrap_err();
        assert_eq!(e, DecodeError::NotAnObject { found: "an array" });
        let e = row_from_json(&schema(), &json!({"user": "a", "ts": "yesterday"})).unwrap_err();
        assert!(e.to_string().contains("RFC 3339"), "{e}");
    }

    #[test]
    fn round_trips() {
        let j = json!({"user": "a", "ts": 5, "score": 1.5, "tags": ["x", "y"], "emb": [0.5, 1.0]});
        let row = row_from_json(&schema(), &j).unwrap();
        assert_eq!(row_to_json(&schema(), &row), j);
    }
}
