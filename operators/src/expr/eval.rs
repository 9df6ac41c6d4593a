//! The compiled expression tree and its evaluation.
//!
//! Every node returns a [`Value`]; numbers, booleans and timestamps are inline, so a
//! numeric/boolean tree evaluates without touching the heap. Depth is bounded by the compiler
//! (`MAX_DEPTH`), which bounds the recursion here.

use std::cmp::Ordering;

use crate::value::{DataType, Value};

use super::functions::{self, Func, LikePattern};
use super::EvalError;

/// Arithmetic operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

impl ArithOp {
    pub(crate) fn symbol(self) -> &'static str {
        match self {
            ArithOp::Add => "+",
            ArithOp::Sub => "-",
            ArithOp::Mul => "*",
            ArithOp::Div => "/",
            ArithOp::Rem => "%",
        }
    }

    fn operation(self) -> &'static str {
        match self {
            ArithOp::Add => "addition",
            ArithOp::Sub => "subtraction",
            ArithOp::Mul => "multiplication",
            ArithOp::Div => "division",
            ArithOp::Rem => "remainder",
        }
    }
}

/// Comparison operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
}

impl CmpOp {
    fn test(self, o: Ordering) -> bool {
        match self {
            CmpOp::Eq => o == Ordering::Equal,
            CmpOp::NotEq => o != Ordering::Equal,
            CmpOp::Lt => o == Ordering::Less,
            CmpOp::LtEq => o != Ordering::Greater,
            CmpOp::Gt => o == Ordering::Greater,
            CmpOp::GtEq => o != Ordering::Less,
        }
    }

    /// The operator with its operands swapped (`1 < a` is `a > 1`).
    pub(crate) fn flip(self) -> CmpOp {
        match self {
            CmpOp::Lt => CmpOp::Gt,
            CmpOp::LtEq => CmpOp::GtEq,
            CmpOp::Gt => CmpOp::Lt,
            CmpOp::GtEq => CmpOp::LtEq,
            o => o,
        }
    }
}

/// A compiled expression node.
#[derive(Clone, Debug)]
pub(crate) enum Node {
    Column(usize),
    Literal(Value),
    Neg(Box<Node>),
    Not(Box<Node>),
    Arith(ArithOp, Box<Node>, Box<Node>),
    Cmp(CmpOp, Box<Node>, Box<Node>),
    /// `column <op> literal`, the most common filter shape: no clone of the column value.
    CmpColumnLiteral(CmpOp, usize, Value),
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
    IsNull(Box<Node>, bool),
    /// `x IS [NOT] TRUE|FALSE`.
    IsBool {
        expr: Box<Node>,
        value: bool,
        negated: bool,
    },
    /// `a IS [NOT] DISTINCT FROM b`.
    Distinct {
        left: Box<Node>,
        right: Box<Node>,
        negated: bool,
    },
    Between {
        expr: Box<Node>,
        low: Box<Node>,
        high: Box<Node>,
        negated: bool,
    },
    InList {
        expr: Box<Node>,
        list: Vec<Node>,
        negated: bool,
    },
    Like {
        expr: Box<Node>,
        pattern: Box<Node>,
        /// Pre-compiled when the pattern is a literal.
        compiled: Option<LikePattern>,
        negated: bool,
    },
    Case {
        operand: Option<Box<Node>>,
        branches: Vec<(Node, Node)>,
        otherwise: Option<Box<Node>>,
    },
    Coalesce(Vec<Node>),
    If(Box<Node>, Box<Node>, Box<Node>),
    /// `CAST(x AS t)`; with `try_cast`, failures give `NULL` instead of an error.
    Cast {
        expr: Box<Node>,
        to: DataType,
        try_cast: bool,
    },
    Call(Func, Vec<Node>),
}

/// Arguments evaluated into a stack buffer when there are at most this many (no allocation).
const INLINE_ARGS: usize = 4;

impl Node {
    pub(crate) fn eval(&self, row: &[Value]) -> Result<Value, EvalError> {
        Ok(match self {
            Node::Column(i) => row.get(*i).cloned().unwrap_or(Value::Null),
            Node::Literal(v) => v.clone(),
            Node::Neg(e) => match e.eval(row)? {
                Value::Null => Value::Null,
                Value::Int(i) => Value::Int(i.checked_neg().ok_or(EvalError::Overflow {
                    operation: "negation",
                })?),
                Value::Float(f) => Value::Float(-f),
                other => return Err(type_error(format!("cannot negate {}", describe(&other)))),
            },
            Node::Not(e) => match as_bool(&e.eval(row)?, "NOT")? {
                Some(b) => Value::Bool(!b),
                None => Value::Null,
            },
            Node::Arith(op, l, r) => arith(*op, &l.eval(row)?, &r.eval(row)?)?,
            Node::Cmp(op, l, r) => cmp_value(*op, &l.eval(row)?, &r.eval(row)?)?,
            Node::CmpColumnLiteral(op, c, lit) => match row.get(*c) {
                Some(v) => cmp_value(*op, v, lit)?,
                None => Value::Null,
            },
            Node::And(l, r) => {
                let a = as_bool(&l.eval(row)?, "AND")?;
                if a == Some(false) {
                    return Ok(Value::Bool(false));
                }
                match (a, as_bool(&r.eval(row)?, "AND")?) {
                    (_, Some(false)) => Value::Bool(false),
                    (Some(true), Some(true)) => Value::Bool(true),
                    _ => Value::Null,
                }
            }
            Node::Or(l, r) => {
                let a = as_bool(&l.eval(row)?, "OR")?;
                if a == Some(true) {
                    return Ok(Value::Bool(true));
                }
                match (a, as_bool(&r.eval(row)?, "OR")?) {
                    (_, Some(true)) => Value::Bool(true),
                    (Some(false), Some(false)) => Value::Bool(false),
                    _ => Value::Null,
                }
            }
            Node::IsNull(e, negated) => Value::Bool(e.eval(row)?.is_null() != *negated),
            Node::IsBool {
                expr,
                value,
                negated,
            } => {
                let v = as_bool(&expr.eval(row)?, "IS")?;
                Value::Bool((v == Some(*value)) != *negated)
            }
            Node::Distinct {
                left,
                right,
                negated,
            } => {
                let (a, b) = (left.eval(row)?, right.eval(row)?);
                let distinct = match (a.is_null(), b.is_null()) {
                    (true, true) => false,
                    (true, false) | (false, true) => true,
                    _ => compare(&a, &b)? != Some(Ordering::Equal),
                };
                Value::Bool(distinct != *negated)
            }
            Node::Between {
                expr,
                low,
                high,
                negated,
            } => {
                let v = expr.eval(row)?;
                let lo = compare(&v, &low.eval(row)?)?.map(|o| o != Ordering::Less);
                let hi = compare(&v, &high.eval(row)?)?.map(|o| o != Ordering::Greater);
                let inside = match (lo, hi) {
                    (Some(false), _) | (_, Some(false)) => Some(false),
                    (Some(true), Some(true)) => Some(true),
                    _ => None,
                };
                match inside {
                    Some(b) => Value::Bool(b != *negated),
                    None => Value::Null,
                }
            }
            Node::InList {
                expr,
                list,
                negated,
            } => {
                let v = expr.eval(row)?;
                if v.is_null() {
                    return Ok(Value::Null);
                }
                let mut saw_null = false;
                for item in list {
                    match compare(&v, &item.eval(row)?)? {
                        Some(Ordering::Equal) => return Ok(Value::Bool(!*negated)),
                        None => saw_null = true,
                        Some(_) => {}
                    }
                }
                if saw_null {
                    Value::Null
                } else {
                    Value::Bool(*negated)
                }
            }
            Node::Like {
                expr,
                pattern,
                compiled,
                negated,
            } => {
                let v = expr.eval(row)?;
                let Some(text) = as_str(&v, "LIKE")? else {
                    return Ok(Value::Null);
                };
                let matched = match compiled {
                    Some(p) => p.matches(text),
                    None => {
                        let p = pattern.eval(row)?;
                        match as_str(&p, "LIKE")? {
                            Some(p) => LikePattern::new(p).matches(text),
                            None => return Ok(Value::Null),
                        }
                    }
                };
                Value::Bool(matched != *negated)
            }
            Node::Case {
                operand,
                branches,
                otherwise,
            } => {
                let operand = match operand {
                    Some(o) => Some(o.eval(row)?),
                    None => None,
                };
                for (when, then) in branches {
                    let w = when.eval(row)?;
                    let hit = match &operand {
                        Some(o) => compare(o, &w)? == Some(Ordering::Equal),
                        None => as_bool(&w, "CASE WHEN")? == Some(true),
                    };
                    if hit {
                        return then.eval(row);
                    }
                }
                match otherwise {
                    Some(e) => e.eval(row)?,
                    None => Value::Null,
                }
            }
            Node::Coalesce(args) => {
                for a in args {
                    let v = a.eval(row)?;
                    if !v.is_null() {
                        return Ok(v);
                    }
                }
                Value::Null
            }
            Node::If(c, a, b) => {
                if as_bool(&c.eval(row)?, "if")? == Some(true) {
                    a.eval(row)?
                } else {
                    b.eval(row)?
                }
            }
            Node::Cast { expr, to, try_cast } => match cast(expr.eval(row)?, to) {
                Ok(v) => v,
                Err(_) if *try_cast => Value::Null,
                Err(e) => return Err(e),
            },
            Node::Call(f, args) => {
                if args.len() <= INLINE_ARGS {
                    let mut buf: [Value; INLINE_ARGS] = Default::default();
                    for (slot, a) in buf.iter_mut().zip(args) {
                        *slot = a.eval(row)?;
                    }
                    f.apply(&buf[..args.len()])?
                } else {
                    let mut vals = Vec::with_capacity(args.len());
                    for a in args {
                        vals.push(a.eval(row)?);
                    }
                    f.apply(&vals)?
                }
            }
        })
    }
}

pub(crate) fn type_error(message: String) -> EvalError {
    EvalError::Type { message }
}

/// A short description of a value for error messages: its type and (truncated) text.
pub(crate) fn describe(v: &Value) -> String {
    if v.is_null() {
        return "NULL".to_string();
    }
    let mut s = v.to_string();
    if s.len() > 40 {
        let mut cut = 40;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    format!("{} {s}", v.data_type())
}

/// A boolean operand: `None` for NULL, an error for anything else.
pub(crate) fn as_bool(v: &Value, what: &str) -> Result<Option<bool>, EvalError> {
    match v {
        Value::Bool(b) => Ok(Some(*b)),
        Value::Null => Ok(None),
        other => Err(type_error(format!(
            "{what} expects a boolean, found {}",
            describe(other)
        ))),
    }
}

/// A string operand: `None` for NULL, an error for anything else.
pub(crate) fn as_str<'v>(v: &'v Value, what: &str) -> Result<Option<&'v str>, EvalError> {
    match v {
        Value::Str(s) => Ok(Some(s)),
        Value::Null => Ok(None),
        other => Err(type_error(format!(
            "{what} expects a string, found {}",
            describe(other)
        ))),
    }
}

fn int_arith(op: ArithOp, x: i64, y: i64) -> Result<i64, EvalError> {
    let overflow = EvalError::Overflow {
        operation: op.operation(),
    };
    match op {
        ArithOp::Add => x.checked_add(y).ok_or(overflow),
        ArithOp::Sub => x.checked_sub(y).ok_or(overflow),
        ArithOp::Mul => x.checked_mul(y).ok_or(overflow),
        ArithOp::Div if y == 0 => Err(EvalError::DivisionByZero),
        ArithOp::Div => x.checked_div(y).ok_or(overflow),
        ArithOp::Rem if y == 0 => Err(EvalError::DivisionByZero),
        // `i64::MIN % -1` is mathematically 0; only the machine instruction overflows.
        ArithOp::Rem => Ok(x.wrapping_rem(y)),
    }
}

fn float_arith(op: ArithOp, x: f64, y: f64) -> Result<f64, EvalError> {
    Ok(match op {
        ArithOp::Add => x + y,
        ArithOp::Sub => x - y,
        ArithOp::Mul => x * y,
        ArithOp::Div | ArithOp::Rem if y == 0.0 => return Err(EvalError::DivisionByZero),
        ArithOp::Div => x / y,
        ArithOp::Rem => x % y,
    })
}

/// Arithmetic on two values with int→float promotion and timestamp rules.
pub(crate) fn arith(op: ArithOp, a: &Value, b: &Value) -> Result<Value, EvalError> {
    use Value::*;
    Ok(match (a, b) {
        (Null, _) | (_, Null) => Null,
        (Int(x), Int(y)) => Int(int_arith(op, *x, *y)?),
        (Float(x), Float(y)) => Float(float_arith(op, *x, *y)?),
        (Int(x), Float(y)) => Float(float_arith(op, *x as f64, *y)?),
        (Float(x), Int(y)) => Float(float_arith(op, *x, *y as f64)?),
        (Timestamp(t), Int(d)) if matches!(op, ArithOp::Add | ArithOp::Sub) => {
            Timestamp(int_arith(op, *t, *d)?)
        }
        (Int(d), Timestamp(t)) if op == ArithOp::Add => Timestamp(int_arith(op, *d, *t)?),
        (Timestamp(x), Timestamp(y)) if op == ArithOp::Sub => Int(int_arith(op, *x, *y)?),
        _ => {
            return Err(type_error(format!(
                "cannot apply `{}` to {} and {}",
                op.symbol(),
                describe(a),
                describe(b)
            )))
        }
    })
}

/// Float ordering for SQL: `-0.0 = 0.0`; NaN equals NaN and sorts above every number.
pub(crate) fn float_cmp(x: f64, y: f64) -> Ordering {
    x.partial_cmp(&y)
        .unwrap_or_else(|| x.is_nan().cmp(&y.is_nan()))
}

/// Compares two values; `None` if either is NULL; an error for incomparable types (only
/// reachable through `any` fields, the compiler rejects the rest).
pub(crate) fn compare(a: &Value, b: &Value) -> Result<Option<Ordering>, EvalError> {
    use Value::*;
    Ok(Some(match (a, b) {
        (Null, _) | (_, Null) => return Ok(None),
        (Int(x), Int(y))
        | (Timestamp(x), Timestamp(y))
        | (Timestamp(x), Int(y))
        | (Int(x), Timestamp(y)) => x.cmp(y),
        (Float(x), Float(y)) => float_cmp(*x, *y),
        (Int(x), Float(y)) => float_cmp(*x as f64, *y),
        (Float(x), Int(y)) => float_cmp(*x, *y as f64),
        (Str(x), Str(y)) => x.cmp(y),
        (Bool(x), Bool(y)) => x.cmp(y),
        (Bytes(_), Bytes(_)) | (List(_), List(_)) | (Map(_), Map(_)) | (Vector(_), Vector(_)) => {
            a.cmp(b)
        }
        _ => {
            return Err(type_error(format!(
                "cannot compare {} with {}",
                describe(a),
                describe(b)
            )))
        }
    }))
}

fn cmp_value(op: CmpOp, a: &Value, b: &Value) -> Result<Value, EvalError> {
    Ok(match compare(a, b)? {
        Some(o) => Value::Bool(op.test(o)),
        None => Value::Null,
    })
}

fn cast_error(v: &Value, to: &DataType) -> EvalError {
    EvalError::Cast {
        from: v.data_type().to_string(),
        to: to.to_string(),
        value: describe(v),
    }
}

/// Largest float below 2^63, the exclusive upper bound of floats that fit an `i64`.
const I64_BOUND: f64 = 9_223_372_036_854_775_808.0;

fn float_to_i64(f: f64) -> Option<i64> {
    (f.is_finite() && (-I64_BOUND..I64_BOUND).contains(&f)).then_some(f.trunc() as i64)
}

/// Converts a value to a type (`CAST`). NULL stays NULL.
pub(crate) fn cast(v: Value, to: &DataType) -> Result<Value, EvalError> {
    use Value::*;
    let fail = |v: &Value| Err(cast_error(v, to));
    match (to, &v) {
        (_, Null) | (DataType::Any, _) => Ok(v),
        (DataType::Int, Int(_)) => Ok(v),
        (DataType::Int, Float(f)) => float_to_i64(*f).map(Int).ok_or_else(|| cast_error(&v, to)),
        (DataType::Int, Str(s)) => match s.trim().parse::<i64>() {
            Ok(i) => Ok(Int(i)),
            Err(_) => fail(&v),
        },
        (DataType::Int, Bool(b)) => Ok(Int(*b as i64)),
        (DataType::Int, Timestamp(t)) => Ok(Int(*t)),
        (DataType::Float, Float(_)) => Ok(v),
        (DataType::Float, Int(i) | Timestamp(i)) => Ok(Float(*i as f64)),
        (DataType::Float, Str(s)) => match s.trim().parse::<f64>() {
            Ok(f) => Ok(Float(f)),
            Err(_) => fail(&v),
        },
        (DataType::Float, Bool(b)) => Ok(Float(*b as i64 as f64)),
        (DataType::String, Str(_)) => Ok(v),
        (DataType::String, Timestamp(t)) => Ok(match functions::format_timestamp(*t) {
            Some(s) => Value::str(&s),
            None => Value::str(&t.to_string()),
        }),
        (DataType::String, Int(i)) => Ok(Value::str(&i.to_string())),
        (DataType::String, Float(f)) => Ok(Value::str(&f.to_string())),
        (DataType::String, Bool(b)) => Ok(Value::str(if *b { "true" } else { "false" })),
        (DataType::String, _) => Ok(Value::str(&v.to_string())),
        (DataType::Bool, Bool(_)) => Ok(v),
        (DataType::Bool, Int(i)) => Ok(Bool(*i != 0)),
        (DataType::Bool, Str(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "t" | "yes" | "y" | "1" => Ok(Bool(true)),
            "false" | "f" | "no" | "n" | "0" => Ok(Bool(false)),
            _ => fail(&v),
        },
        (DataType::Timestamp, Timestamp(_)) => Ok(v),
        (DataType::Timestamp, Int(i)) => Ok(Timestamp(*i)),
        (DataType::Timestamp, Float(f)) => float_to_i64(*f)
            .map(Timestamp)
            .ok_or_else(|| cast_error(&v, to)),
        (DataType::Timestamp, Str(s)) => match crate::json::parse_timestamp(s.trim()) {
            Some(t) => Ok(Timestamp(t)),
            None => fail(&v),
        },
        (DataType::Bytes, Bytes(_)) | (DataType::List(_), List(_)) | (DataType::Map(_), Map(_)) => {
            Ok(v)
        }
        (DataType::Vector(n), Vector(x)) if x.len() == *n => Ok(v),
        _ => fail(&v),
    }
}

/// Whether `CAST(from AS to)` can ever succeed; statically impossible casts are compile errors.
pub(crate) fn castable(from: &DataType, to: &DataType) -> bool {
    use DataType as T;
    if from == to || matches!(from, T::Null | T::Any) || *to == T::Any {
        return true;
    }
    match to {
        T::Int | T::Float => matches!(from, T::Int | T::Float | T::String | T::Bool | T::Timestamp),
        T::String => true,
        T::Bool => matches!(from, T::Int | T::String),
        T::Timestamp => matches!(from, T::Int | T::Float | T::String),
        _ => false,
    }
}
