//! Topic schemas: named, typed fields, some optional with defaults.
//!
//! A schema is the contract between producers and dataflows. Field names are resolved to
//! positions once, when a definition is planned; at run time rows are plain positional
//! vectors. Adding an optional field with a default is the way to evolve a topic.

use serde::{Deserialize, Serialize};

use crate::value::{DataType, Value};

/// One field of a schema.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Field {
    pub name: String,
    pub data_type: DataType,
    /// An optional field may be absent from an incoming event; it then takes `default`.
    pub optional: bool,
    /// The value used when an optional field is absent (null if none was given).
    pub default: Value,
}

impl Field {
    /// A required field.
    pub fn required(name: &str, data_type: DataType) -> Field {
        Field {
            name: name.to_string(),
            data_type,
            optional: false,
            default: Value::Null,
        }
    }

    /// An optional field with a default.
    pub fn optional(name: &str, data_type: DataType, default: Value) -> Field {
        Field {
            name: name.to_string(),
            data_type,
            optional: true,
            default,
        }
    }
}

/// An ordered list of fields; a row of this schema has one value per field, in order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Schema {
    pub fields: Vec<Field>,
}

impl Schema {
    /// Builds a schema from fields.
    pub fn new(fields: Vec<Field>) -> Schema {
        Schema { fields }
    }

    /// The position of a field by name (names are case-sensitive).
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.name == name)
    }

    /// The field at a position.
    pub fn field(&self, index: usize) -> &Field {
        &self.fields[index]
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Whether the schema has no fields.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Field names, for error messages.
    pub fn names(&self) -> Vec<&str> {
        self.fields.iter().map(|f| f.name.as_str()).collect()
    }
}
