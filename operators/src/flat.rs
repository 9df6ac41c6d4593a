//! Values written flat, for rkyv archives (the QUIC wire format and operator checkpoints).
//!
//! A row is a `Vec<WireValue>` in which a nested value is written in pre-order: `List(n)`
//! followed by its `n` elements and `Map(n)` followed by `n` pairs of (`Str` key, value). Flat
//! rows keep archives non-recursive, so validating hostile bytes never recurses deeply;
//! nesting is limited to [`MAX_DEPTH`] when decoding.

use std::collections::BTreeMap;
use std::sync::Arc;

use rkyv::{Archive, Deserialize, Serialize};

use crate::value::Value;

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

// ---- values ----

/// Writes `v` flat onto `out`.
pub fn push_value(v: &Value, out: &mut Vec<WireValue>) {
    match v {
        Value::Null => out.push(WireValue::Null),
        Value::Bool(b) => out.push(WireValue::Bool(*b)),
        Value::Int(i) => out.push(WireValue::Int(*i)),
        Value::Float(f) => out.push(WireValue::Float(*f)),
        Value::Str(s) => out.push(WireValue::Str(s.to_string())),
        Value::Bytes(b) => out.push(WireValue::Bytes(b.to_vec())),
        Value::Timestamp(t) => out.push(WireValue::Timestamp(*t)),
        Value::Vector(v) => out.push(WireValue::Vector(v.to_vec())),
        Value::List(l) => {
            out.push(WireValue::List(l.len() as u32));
            l.iter().for_each(|x| push_value(x, out));
        }
        Value::Map(m) => {
            out.push(WireValue::Map(m.len() as u32));
            for (k, x) in m.iter() {
                out.push(WireValue::Str(k.clone()));
                push_value(x, out);
            }
        }
    }
}

/// A row (or any values) written flat.
pub fn row_to_wire(row: &[Value]) -> Vec<WireValue> {
    let mut out = Vec::with_capacity(row.len());
    row.iter().for_each(|v| push_value(v, &mut out));
    out
}

/// One flat cell, as either the owned or the archived form sees it.
pub enum Cell {
    /// A complete value.
    Leaf(Value),
    /// A list header: this many elements follow.
    List(usize),
    /// A map header: this many (key, value) pairs follow.
    Map(usize),
}

/// Read access to a flat cell; lets one decoder serve owned and archived rows.
pub trait FlatCell {
    /// The cell as a leaf value or a container header.
    fn cell(&self) -> Cell;
}

impl FlatCell for WireValue {
    fn cell(&self) -> Cell {
        match self {
            WireValue::Null => Cell::Leaf(Value::Null),
            WireValue::Bool(b) => Cell::Leaf(Value::Bool(*b)),
            WireValue::Int(i) => Cell::Leaf(Value::Int(*i)),
            WireValue::Float(f) => Cell::Leaf(Value::Float(*f)),
            WireValue::Str(s) => Cell::Leaf(Value::Str(Arc::from(s.as_str()))),
            WireValue::Bytes(b) => Cell::Leaf(Value::Bytes(Arc::from(b.as_slice()))),
            WireValue::Timestamp(t) => Cell::Leaf(Value::Timestamp(*t)),
            WireValue::Vector(v) => Cell::Leaf(Value::Vector(Arc::from(v.as_slice()))),
            WireValue::List(n) => Cell::List(*n as usize),
            WireValue::Map(n) => Cell::Map(*n as usize),
        }
    }
}

impl FlatCell for ArchivedWireValue {
    fn cell(&self) -> Cell {
        match self {
            ArchivedWireValue::Null => Cell::Leaf(Value::Null),
            ArchivedWireValue::Bool(b) => Cell::Leaf(Value::Bool(*b)),
            ArchivedWireValue::Int(i) => Cell::Leaf(Value::Int(i.to_native())),
            ArchivedWireValue::Float(f) => Cell::Leaf(Value::Float(f.to_native())),
            ArchivedWireValue::Str(s) => Cell::Leaf(Value::Str(Arc::from(s.as_str()))),
            ArchivedWireValue::Bytes(b) => Cell::Leaf(Value::Bytes(Arc::from(b.as_slice()))),
            ArchivedWireValue::Timestamp(t) => Cell::Leaf(Value::Timestamp(t.to_native())),
            ArchivedWireValue::Vector(v) => {
                Cell::Leaf(Value::Vector(v.iter().map(|x| x.to_native()).collect()))
            }
            ArchivedWireValue::List(n) => Cell::List(n.to_native() as usize),
            ArchivedWireValue::Map(n) => Cell::Map(n.to_native() as usize),
        }
    }
}

/// Reads one (possibly nested) value from the front of a flat slice.
pub fn take_value<C: FlatCell>(
    cells: &mut std::slice::Iter<'_, C>,
    depth: usize,
) -> Result<Value, String> {
    let Some(c) = cells.next() else {
        return Err("a list or map claims more elements than the row holds".into());
    };
    match c.cell() {
        Cell::Leaf(v) => Ok(v),
        Cell::List(_) | Cell::Map(_) if depth >= MAX_DEPTH => {
            Err(format!("values nest deeper than {MAX_DEPTH} levels"))
        }
        Cell::List(n) => {
            if n > cells.len() {
                return Err(format!(
                    "a list claims {n} elements; only {} cells follow",
                    cells.len()
                ));
            }
            let mut items = Vec::with_capacity(n);
            for _ in 0..n {
                items.push(take_value(cells, depth + 1)?);
            }
            Ok(Value::List(items.into()))
        }
        Cell::Map(n) => {
            if n.saturating_mul(2) > cells.len() {
                return Err(format!(
                    "a map claims {n} entries; only {} cells follow",
                    cells.len()
                ));
            }
            let mut m = BTreeMap::new();
            for _ in 0..n {
                let Value::Str(k) = take_value(cells, depth + 1)? else {
                    return Err("a map key is not a string".into());
                };
                let v = take_value(cells, depth + 1)?;
                m.insert(k.to_string(), v);
            }
            Ok(Value::Map(Arc::new(m)))
        }
    }
}

/// Decodes a whole flat row.
pub fn row_from_wire<C: FlatCell>(cells: &[C]) -> Result<Vec<Value>, String> {
    let mut it = cells.iter();
    let mut row = Vec::with_capacity(cells.len());
    while it.len() > 0 {
        row.push(take_value(&mut it, 0)?);
    }
    Ok(row)
}

/// Decodes a flat cell list that must hold exactly one value (a key).
pub fn value_from_wire<C: FlatCell>(cells: &[C]) -> Result<Value, String> {
    let mut row = row_from_wire(cells)?;
    match row.len() {
        1 => Ok(row.pop().unwrap_or_default()),
        n => Err(format!("a key must be one value, found {n}")),
    }
}
