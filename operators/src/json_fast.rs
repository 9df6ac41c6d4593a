//! Decoding a JSON object straight into a row of a schema, without building a
//! `serde_json::Value` first: one pass over the text, field names looked up once, strings
//! copied once. Reading NDJSON was most of the cost of a run over a file.
//!
//! Only the happy path lives here. Anything this decoder does not accept (bad JSON, a missing
//! or unknown field, a wrong type) makes it answer `None`, and the caller decodes the same
//! text with [`row_from_json`](crate::json::row_from_json), whose errors name the field and
//! say what to fix. So both paths accept exactly the same documents, with the same rows, and
//! errors stay in one place.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::Value as Json;

use crate::event::Row;
use crate::json::{parse_timestamp, value_from_json};
use crate::schema::Schema;
use crate::value::{DataType, Value};

/// The row `text` (one JSON object) decodes to, or `None` if it does not decode cleanly;
/// then [`row_from_json`](crate::json::row_from_json) on the parsed text gives the error.
pub fn try_row_from_json_str(schema: &Schema, text: &str) -> Option<Row> {
    let mut de = serde_json::Deserializer::from_str(text);
    let row = RowSeed(schema).deserialize(&mut de).ok()?;
    de.end().ok()?;
    Some(row)
}

struct RowSeed<'a>(&'a Schema);

impl<'de> DeserializeSeed<'de> for RowSeed<'_> {
    type Value = Row;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Row, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RowSeed<'_> {
    type Value = Row;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Row, A::Error> {
        let schema = self.0;
        let mut slots: Vec<Option<Value>> = vec![None; schema.len()];
        while let Some(i) = map.next_key_seed(FieldIndex(schema))? {
            let field = schema.field(i);
            // A repeated key: the last one wins, as in `serde_json::Value`.
            slots[i] = Some(map.next_value_seed(Typed(&field.name, &field.data_type))?);
        }
        let mut row = Vec::with_capacity(schema.len());
        for (field, slot) in schema.fields.iter().zip(slots) {
            match slot {
                Some(Value::Null) | None if field.optional => row.push(field.default.clone()),
                Some(Value::Null) | None => return Err(de::Error::custom("missing or null")),
                Some(v) => row.push(v),
            }
        }
        Ok(row)
    }
}

/// A key: the position of the schema field it names; an unknown name is an error.
struct FieldIndex<'a>(&'a Schema);

impl<'de> DeserializeSeed<'de> for FieldIndex<'_> {
    type Value = usize;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<usize, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for FieldIndex<'_> {
    type Value = usize;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<usize, E> {
        self.0.index_of(s).ok_or_else(|| E::custom("unknown field"))
    }
}

/// A value of one field's type. Scalars are read directly; lists, maps, vectors, bytes and
/// `any` go through `serde_json::Value` and the general decoder.
struct Typed<'a>(&'a str, &'a DataType);

impl<'de> DeserializeSeed<'de> for Typed<'_> {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        match self.1 {
            DataType::Int
            | DataType::Float
            | DataType::String
            | DataType::Bool
            | DataType::Timestamp => d.deserialize_any(self),
            ty => {
                let j = <Json as serde::Deserialize>::deserialize(d)?;
                value_from_json(self.0, ty, &j).map_err(de::Error::custom)
            }
        }
    }
}

impl<'de> Visitor<'de> for Typed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a value of type {}", self.1)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Value, E> {
        match self.1 {
            DataType::Bool => Ok(Value::Bool(b)),
            _ => Err(E::custom("type")),
        }
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Value, E> {
        match self.1 {
            DataType::Int => Ok(Value::Int(n)),
            DataType::Timestamp => Ok(Value::Timestamp(n)),
            DataType::Float => Ok(Value::Float(n as f64)),
            _ => Err(E::custom("type")),
        }
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Value, E> {
        match (self.1, i64::try_from(n)) {
            (DataType::Float, _) => Ok(Value::Float(n as f64)),
            (_, Ok(n)) => self.visit_i64(n),
            (_, Err(_)) => Err(E::custom("out of range")),
        }
    }

    fn visit_f64<E: de::Error>(self, x: f64) -> Result<Value, E> {
        match self.1 {
            DataType::Float => Ok(Value::Float(x)),
            _ => Err(E::custom("type")),
        }
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Value, E> {
        match self.1 {
            DataType::String => Ok(Value::str(s)),
            DataType::Timestamp => parse_timestamp(s)
                .map(Value::Timestamp)
                .ok_or_else(|| E::custom("timestamp")),
            _ => Err(E::custom("type")),
        }
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Err(de::Error::custom("type"))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Err(de::Error::custom("type"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::row_from_json;
    use crate::schema::Field;
    use proptest::prelude::*;

    fn schema() -> Schema {
        Schema::new(vec![
            Field::required("id", DataType::Int),
            Field::required("name", DataType::String),
            Field::required("at", DataType::Timestamp),
            Field::required("score", DataType::Float),
            Field::required("ok", DataType::Bool),
            Field::required("tags", DataType::List(Box::new(DataType::String))),
            Field::optional("note", DataType::String, Value::str("none")),
        ])
    }

    /// The slow, general path: the reference for the fast one.
    fn slow(schema: &Schema, text: &str) -> Option<Row> {
        let j: Json = serde_json::from_str(text).ok()?;
        row_from_json(schema, &j).ok()
    }

    #[test]
    fn decodes_what_the_general_decoder_decodes() {
        let s = schema();
        for text in [
            r#"{"id":1,"name":"a","at":5,"score":1.5,"ok":true,"tags":["x"],"note":"n"}"#,
            r#"{"tags":[],"ok":false,"score":2,"at":"2024-01-02T03:04:05Z","name":"é\n","id":-7}"#,
            r#"{"id":1,"name":"a","at":5,"score":1,"ok":true,"tags":["x"],"note":null}"#,
            r#"{"id":1,"id":2,"name":"a","at":5,"score":1,"ok":true,"tags":["x"]}"#,
        ] {
            let fast = try_row_from_json_str(&s, text);
            assert!(fast.is_some(), "{text}");
            assert_eq!(fast, slow(&s, text), "{text}");
        }
    }

    #[test]
    fn leaves_every_mistake_to_the_general_decoder() {
        let s = schema();
        for text in [
            r#"{"id":1.5,"name":"a","at":5,"score":1,"ok":true,"tags":[]}"#,
            r#"{"id":1,"name":"a","at":5,"score":1,"ok":true}"#,
            r#"{"id":1,"name":null,"at":5,"score":1,"ok":true,"tags":[]}"#,
            r#"{"id":1,"name":"a","at":5,"score":1,"ok":true,"tags":[],"evil":1}"#,
            r#"{"id":18446744073709551615,"name":"a","at":5,"score":1,"ok":true,"tags":[]}"#,
            r#"{"id":"1","name":"a","at":5,"score":1,"ok":true,"tags":[]}"#,
            r#"{"id":1,"name":"a","at":"yesterday","score":1,"ok":true,"tags":[]}"#,
            r#"{"id":1,"name":"a","at":5,"score":1,"ok":true,"tags":[1]}"#,
            r#"{"id":1,"name":"a","at":5,"score":1,"ok":true,"tags":[]} trailing"#,
            r#"[1,2]"#,
            r#"{"id":1"#,
            "",
        ] {
            assert_eq!(try_row_from_json_str(&s, text), None, "{text}");
            assert_eq!(slow(&s, text), None, "{text}");
        }
    }

    fn json_value() -> impl Strategy<Value = Json> {
        prop_oneof![
            Just(Json::Null),
            any::<bool>().prop_map(Json::Bool),
            any::<i64>().prop_map(Json::from),
            any::<u64>().prop_map(Json::from),
            (-1e12f64..1e12).prop_map(Json::from),
            "[a-z0-9 é:T-]{0,12}".prop_map(Json::String),
            prop::collection::vec("[a-z]{0,3}".prop_map(Json::String), 0..3).prop_map(Json::Array),
        ]
    }

    proptest! {
        /// A valid object with up to four fields replaced, added or removed at random: the
        /// fast decoder either declines where the general decoder refuses, or gives exactly
        /// its row.
        #[test]
        fn agrees_with_the_general_decoder(
            changes in prop::collection::vec(
                (
                    prop::sample::select(vec!["id", "name", "at", "score", "ok", "tags", "note", "x"]),
                    prop::option::of(json_value()),
                ),
                0..4,
            )
        ) {
            let s = schema();
            let base = r#"{"id":1,"name":"a","at":5,"score":1.5,"ok":true,"tags":["x"],"note":"n"}"#;
            let mut obj: serde_json::Map<String, Json> = serde_json::from_str(base).unwrap();
            for (k, v) in changes {
                match v {
                    Some(v) => obj.insert(k.to_string(), v),
                    None => obj.remove(k),
                };
            }
            let text = Json::Object(obj).to_string();
            let fast = try_row_from_json_str(&s, &text);
            prop_assert_eq!(fast, slow(&s, &text));
        }
    }
}
