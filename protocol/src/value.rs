//! Values written flat: one cell per scalar, nesting in pre-order.
//!
//! A row is a `Vec<WireValue>` in which a nested value is written in pre-order: `List(n)`
//! followed by its `n` elements and `Map(n)` followed by `n` pairs of (`Str` key, value). Flat
//! rows keep archives non-recursive, so validating hostile bytes never recurses deeply;
//! nesting is limited to [`MAX_DEPTH`] when decoding. Why here: clients build rows of these
//! without compiling the engine, and the engine's checkpoints store the same cells.

use rkyv::{Archive, Deserialize, Serialize};

/// How deeply lists and maps may nest inside one value.
pub const MAX_DEPTH: usize = 32;

/// One cell of a flat row (see the module docs for how nesting is written).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum WireValue {
    /// SQL null (an optional field then takes its default).
    Null,
    /// A boolean.
    Bool(bool),
    /// A 64-bit integer (also accepted for float and timestamp fields).
    Int(i64),
    /// A 64-bit float.
    Float(f64),
    /// UTF-8 text (validated on receipt).
    Str(String),
    /// Raw bytes.
    Bytes(Vec<u8>),
    /// Milliseconds since the Unix epoch (UTC).
    Timestamp(i64),
    /// A dense f32 vector.
    Vector(Vec<f32>),
    /// A list: the next `n` values (each possibly nested) are its elements.
    List(u32),
    /// A map: the next `n` pairs of (`Str` key, value) are its entries.
    Map(u32),
}
