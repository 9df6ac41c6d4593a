//! Values and their types.
//!
//! A [`Value`] is one cell of a positional row. It is 24 bytes: every variant that needs heap
//! space keeps it behind an `Arc`, so copying a row between operators or workers never copies
//! strings, lists or vectors. Numbers, booleans and timestamps live inline, which is why
//! numeric and boolean expressions evaluate without allocating.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// The type of a field or of an expression, checked when a definition is planned.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataType {
    /// Only the literal `NULL` has this type before it is unified with another one.
    Null,
    Bool,
    /// 64-bit signed integer.
    Int,
    /// 64-bit float.
    Float,
    String,
    Bytes,
    /// Milliseconds since the Unix epoch (UTC).
    Timestamp,
    /// A list whose elements all have the given type.
    List(Box<DataType>),
    /// A map from strings to values of the given type.
    Map(Box<DataType>),
    /// A dense f32 vector of the given dimension.
    Vector(usize),
    /// Any JSON value, unchecked; for fields whose shape varies.
    Any,
}

impl DataType {
    /// Whether arithmetic applies to values of this type.
    pub fn is_numeric(&self) -> bool {
        matches!(self, DataType::Int | DataType::Float)
    }

    /// Parses the type names accepted in schemas and casts: `bool`, `int`/`i64`/`bigint`,
    /// `float`/`f64`/`double`, `string`/`text`/`varchar`, `bytes`, `timestamp`,
    /// `list<T>`, `map<T>`, `vector<N>`, `any`.
    pub fn parse(text: &str) -> Option<DataType> {
        let t = text.trim().to_ascii_lowercase();
        let simple = match t.as_str() {
            "bool" | "boolean" => Some(DataType::Bool),
            "int" | "i64" | "bigint" | "integer" | "long" => Some(DataType::Int),
            "float" | "f64" | "double" | "real" => Some(DataType::Float),
            "string" | "text" | "varchar" | "str" => Some(DataType::String),
            "bytes" | "bytea" | "binary" => Some(DataType::Bytes),
            "timestamp" | "time" => Some(DataType::Timestamp),
            "any" | "json" => Some(DataType::Any),
            _ => None,
        };
        if simple.is_some() {
            return simple;
        }
        let inner = |prefix: &str| -> Option<&str> {
            t.strip_prefix(prefix)?.strip_prefix('<')?.strip_suffix('>')
        };
        if let Some(i) = inner("list") {
            return Some(DataType::List(Box::new(DataType::parse(i)?)));
        }
        if let Some(i) = inner("map") {
            return Some(DataType::Map(Box::new(DataType::parse(i)?)));
        }
        if let Some(n) = inner("vector") {
            let dim: usize = n.trim().parse().ok()?;
            if dim == 0 || dim > 65_536 {
                return None;
            }
            return Some(DataType::Vector(dim));
        }
        None
    }

    /// Whether a value of type `other` may be stored where `self` is expected
    /// (`int` widens to `float`, anything fits `any`, `null` fits everything).
    pub fn accepts(&self, other: &DataType) -> bool {
        self == other
            || *other == DataType::Null
            || *self == DataType::Any
            || (*self == DataType::Float && *other == DataType::Int)
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataType::Null => write!(f, "null"),
            DataType::Bool => write!(f, "bool"),
            DataType::Int => write!(f, "int"),
            DataType::Float => write!(f, "float"),
            DataType::String => write!(f, "string"),
            DataType::Bytes => write!(f, "bytes"),
            DataType::Timestamp => write!(f, "timestamp"),
            DataType::List(t) => write!(f, "list<{t}>"),
            DataType::Map(t) => write!(f, "map<{t}>"),
            DataType::Vector(n) => write!(f, "vector<{n}>"),
            DataType::Any => write!(f, "any"),
        }
    }
}

/// One cell of a row.
///
/// `Eq`, `Ord` and `Hash` are total (floats compare with `total_cmp`, so `NaN` equals itself),
/// because values are keys of differential arrangements and of window state.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub enum Value {
    #[default]
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Arc<str>),
    Bytes(Arc<[u8]>),
    /// Milliseconds since the Unix epoch (UTC).
    Timestamp(i64),
    List(Arc<[Value]>),
    Map(Arc<BTreeMap<String, Value>>),
    Vector(Arc<[f32]>),
}

impl Value {
    /// Builds a string value.
    pub fn str(s: &str) -> Value {
        Value::Str(Arc::from(s))
    }

    /// The type of this value (`Null` for null; lists and maps report their first element's type).
    pub fn data_type(&self) -> DataType {
        match self {
            Value::Null => DataType::Null,
            Value::Bool(_) => DataType::Bool,
            Value::Int(_) => DataType::Int,
            Value::Float(_) => DataType::Float,
            Value::Str(_) => DataType::String,
            Value::Bytes(_) => DataType::Bytes,
            Value::Timestamp(_) => DataType::Timestamp,
            Value::List(l) => DataType::List(Box::new(
                l.first().map(Value::data_type).unwrap_or(DataType::Any),
            )),
            Value::Map(m) => DataType::Map(Box::new(
                m.values()
                    .next()
                    .map(Value::data_type)
                    .unwrap_or(DataType::Any),
            )),
            Value::Vector(v) => DataType::Vector(v.len()),
        }
    }

    /// Whether this is SQL `NULL`.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The value as a float, widening integers and timestamps; `None` for other types.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) | Value::Timestamp(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }

    /// The value as an integer (timestamps give their milliseconds); `None` otherwise.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) | Value::Timestamp(i) => Some(*i),
            _ => None,
        }
    }

    /// The value as a string slice, if it is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    fn rank(&self) -> u8 {
        match self {
            Value::Null => 0,
            Value::Bool(_) => 1,
            Value::Int(_) | Value::Float(_) => 2,
            Value::Timestamp(_) => 3,
            Value::Str(_) => 4,
            Value::Bytes(_) => 5,
            Value::List(_) => 6,
            Value::Map(_) => 7,
            Value::Vector(_) => 8,
        }
    }

    /// A hash that is the same on every platform and release, for routing keys to workers and
    /// (later) to shards. `std`'s `Hash` is not stable across releases, so it is not used here.
    pub fn stable_hash(&self) -> u64 {
        // Integers (and integral floats, which equal them) skip the byte loop: they are the
        // usual keys, and this hash runs twice per event in a keyed operator.
        let int = match self {
            Value::Int(i) => Some(*i),
            Value::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Some(*f as i64),
            _ => None,
        };
        if let Some(i) = int {
            return mix(0x51_7cc1_b727_220a ^ i as u64);
        }
        let mut h = Fnv(0xcbf2_9ce4_8422_2325);
        self.feed(&mut h);
        mix(h.0)
    }

    fn feed(&self, h: &mut Fnv) {
        h.byte(self.rank());
        match self {
            Value::Null => {}
            Value::Bool(b) => h.byte(*b as u8),
            Value::Int(i) => h.bytes(&i.to_le_bytes()),
            Value::Float(f) => {
                // Integral floats hash like the equal integer, matching `Eq`.
                if f.fract() == 0.0 && f.abs() < 9.0e15 {
                    h.bytes(&(*f as i64).to_le_bytes())
                } else {
                    h.bytes(&f.to_bits().to_le_bytes())
                }
            }
            Value::Timestamp(t) => h.bytes(&t.to_le_bytes()),
            Value::Str(s) => h.bytes(s.as_bytes()),
            Value::Bytes(b) => h.bytes(b),
            Value::List(l) => l.iter().for_each(|v| v.feed(h)),
            Value::Map(m) => m.iter().for_each(|(k, v)| {
                h.bytes(k.as_bytes());
                v.feed(h)
            }),
            Value::Vector(v) => v.iter().for_each(|x| h.bytes(&x.to_bits().to_le_bytes())),
        }
    }
}

/// The splitmix64 finaliser: spreads small differences over all bits.
#[inline]
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

struct Fnv(u64);
impl Fnv {
    #[inline]
    fn byte(&mut self, b: u8) {
        self.0 = (self.0 ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    #[inline]
    fn bytes(&mut self, bs: &[u8]) {
        for b in bs {
            self.byte(*b);
        }
    }
}

impl PartialEq for Value {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        // Fast paths for the usual key types; everything else agrees with `cmp`.
        match (self, other) {
            (Value::Int(a), Value::Int(b)) => a == b,
            (Value::Str(a), Value::Str(b)) => a == b,
            _ => self.cmp(other) == Ordering::Equal,
        }
    }
}
impl Eq for Value {}

impl PartialOrd for Value {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Value {
    fn cmp(&self, other: &Self) -> Ordering {
        use Value::*;
        match (self, other) {
            (Null, Null) => Ordering::Equal,
            (Bool(a), Bool(b)) => a.cmp(b),
            (Int(a), Int(b)) => a.cmp(b),
            (Float(a), Float(b)) => a.total_cmp(b),
            (Int(a), Float(b)) => (*a as f64).total_cmp(b),
            (Float(a), Int(b)) => a.total_cmp(&(*b as f64)),
            (Timestamp(a), Timestamp(b)) => a.cmp(b),
            (Str(a), Str(b)) => a.cmp(b),
            (Bytes(a), Bytes(b)) => a.cmp(b),
            (List(a), List(b)) => a.cmp(b),
            (Map(a), Map(b)) => a.cmp(b),
            (Vector(a), Vector(b)) => {
                for (x, y) in a.iter().zip(b.iter()) {
                    match x.total_cmp(y) {
                        Ordering::Equal => {}
                        o => return o,
                    }
                }
                a.len().cmp(&b.len())
            }
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl Hash for Value {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.stable_hash());
    }
}

impl From<&Value> for Value {
    fn from(v: &Value) -> Self {
        v.clone()
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::str(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_is_small() {
        assert_eq!(std::mem::size_of::<Value>(), 24);
    }

    #[test]
    fn int_and_float_compare_and_hash_alike() {
        assert_eq!(Value::Int(3), Value::Float(3.0));
        assert_eq!(Value::Int(3).stable_hash(), Value::Float(3.0).stable_hash());
        assert!(Value::Int(2) < Value::Float(2.5));
        assert_ne!(Value::str("a").stable_hash(), Value::str("b").stable_hash());
    }

    const PINNED_USER_1: u64 = 12_112_128_356_103_642_882;

    #[test]
    fn stable_hash_is_fixed() {
        // Routing depends on this never changing between releases.
        assert_eq!(Value::Int(42).stable_hash(), Value::Int(42).stable_hash());
        assert_eq!(Value::str("user-1").stable_hash(), PINNED_USER_1);
    }

    #[test]
    fn parse_types() {
        assert_eq!(DataType::parse("vector<128>"), Some(DataType::Vector(128)));
        assert_eq!(
            DataType::parse("list<int>"),
            Some(DataType::List(Box::new(DataType::Int)))
        );
        assert_eq!(DataType::parse("vector<0>"), None);
        assert_eq!(DataType::parse("nope"), None);
    }
}
