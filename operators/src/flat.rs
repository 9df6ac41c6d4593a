//! Values written flat, for rkyv archives (the QUIC wire format and operator checkpoints):
//! conversions between the engine's [`Value`]s and the protocol's [`WireValue`] cells.
//!
//! A row is a `Vec<WireValue>` in which a nested value is written in pre-order: `List(n)`
//! followed by its `n` elements and `Map(n)` followed by `n` pairs of (`Str` key, value). Flat
//! rows keep archives non-recursive, so validating hostile bytes never recurses deeply;
//! nesting is limited to [`MAX_DEPTH`] when decoding.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::value::Value;

pub use starling_protocol::value::{ArchivedWireValue, WireValue, MAX_DEPTH};
use starling_protocol::{WireEvent, WireUpdate};

use crate::event::Event;

/// An output update as the renderer emits it (`render::Update`): written out here so that the
/// flat encoding, which the renderer's checkpoints use, does not depend back on the renderer.
type Update = (Event, u64, isize);

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

/// Rows written flat, as a client publishes them.
pub fn rows_to_wire(rows: &[Vec<Value>]) -> Vec<Vec<WireValue>> {
    rows.iter().map(|r| row_to_wire(r)).collect()
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

// ---- events and updates ----

/// An output update for the wire.
pub fn update_to_wire((e, time, diff): &Update) -> WireUpdate {
    let mut key = Vec::with_capacity(1);
    push_value(&e.key, &mut key);
    WireUpdate {
        key,
        event_time: e.time,
        row: row_to_wire(&e.row),
        time: *time,
        diff: *diff as i64,
    }
}

/// A topic event for the wire.
pub fn event_to_wire(e: &Event) -> WireEvent {
    let mut key = Vec::with_capacity(1);
    push_value(&e.key, &mut key);
    WireEvent {
        key,
        time: e.time,
        row: row_to_wire(&e.row),
    }
}

/// An update read back from the wire.
pub fn update_from_wire(u: &WireUpdate) -> Result<Update, String> {
    let event = Event::new(
        value_from_wire(&u.key)?,
        u.event_time,
        row_from_wire(&u.row)?,
    );
    Ok((event, u.time, u.diff as isize))
}

/// An event read back from the wire.
pub fn event_from_wire(e: &WireEvent) -> Result<Event, String> {
    Ok(Event::new(
        value_from_wire(&e.key)?,
        e.time,
        row_from_wire(&e.row)?,
    ))
}

#[cfg(test)]
mod wire_tests {
    use super::*;
    use crate::Value;
    use rkyv::util::AlignedVec;
    use starling_protocol::{access_request, encode, ArchivedRequest, Request};
    use std::collections::BTreeMap;
    use std::sync::Arc;

    #[test]
    fn nested_values_round_trip() {
        let mut m = BTreeMap::new();
        m.insert(
            "a".to_string(),
            Value::List(vec![Value::Int(1), Value::str("x")].into()),
        );
        let row = vec![
            Value::Map(Arc::new(m)),
            Value::Null,
            Value::Vector(vec![1.0f32, 2.0].into()),
            Value::Timestamp(5),
        ];
        let wire = row_to_wire(&row);
        assert_eq!(row_from_wire(&wire).unwrap(), row);
        let frame = encode(&Request::Publish {
            topic: "t".into(),
            rows: vec![wire],
        })
        .unwrap();
        let mut body = AlignedVec::<16>::new();
        body.extend_from_slice(&frame[4..]);
        let ArchivedRequest::Publish { rows, .. } = access_request(&body).unwrap() else {
            panic!("wrong variant")
        };
        assert_eq!(row_from_wire(rows[0].as_slice()).unwrap(), row);
    }

    #[test]
    fn lying_counts_and_depth_are_refused() {
        assert!(row_from_wire(&[WireValue::List(3), WireValue::Int(1)]).is_err());
        assert!(row_from_wire(&[WireValue::Map(1), WireValue::Int(1), WireValue::Int(2)]).is_err());
        let deep: Vec<WireValue> = (0..100)
            .map(|_| WireValue::List(1))
            .chain([WireValue::Null])
            .collect();
        assert!(row_from_wire(&deep).is_err());
    }
}
