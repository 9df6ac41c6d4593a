//! Scalar expressions: the SQL-like formulas users write in filters, projections, keys and
//! window triggers.
//!
//! An expression is parsed once with sqlparser, type-checked against the input [`Schema`]
//! (field names become positions, so rows stay positional) and compiled into a small typed
//! tree ([`Expr`]). Evaluation walks that tree over a `&[Value]` row. Numbers, booleans and
//! timestamps live inline in [`Value`], so numeric and boolean expressions evaluate without
//! allocating; strings are `Arc<str>`, so reading a string column is a refcount increment.
//!
//! Mistakes are found at compile time whenever the types allow it ([`ExprError`], with a
//! `line:column` position); what can only be known per event (division by zero, overflow, a
//! failed cast, a mistyped `any` field) is an [`EvalError`], which the dataflow turns into a
//! dead-letter record. See `docs/expressions.md` for the user-facing reference.

mod compile;
mod eval;
mod functions;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;

use thiserror::Error;

use crate::schema::Schema;
use crate::value::{DataType, Value};

use eval::Node;

/// Deepest expression tree accepted by the compiler. Compilation and evaluation recurse, so
/// this bounds the stack an expression can use (it must fit a 2 MiB thread stack even in
/// unoptimised builds); hand-written expressions are far shallower.
pub const MAX_DEPTH: usize = 64;

/// Most operators (arithmetic, comparison, `AND`/`OR`/`NOT`, `||`) accepted in one
/// expression. Long flat chains such as `a + a + a + …` parse without recursion but produce a
/// deep syntax tree; this bounds it before anything walks it.
pub const MAX_OPERATORS: usize = 256;

/// Deepest bracket nesting accepted before the text is handed to sqlparser, whose own
/// recursion limit is lower than [`MAX_DEPTH`]; checking first gives a positioned error.
pub const MAX_NESTING: usize = 40;

/// Longest expression text accepted (in bytes). Bounds the size of the syntax tree sqlparser
/// builds (and later drops recursively) for long operator chains such as `a + a + a + …`.
pub const MAX_SOURCE_LEN: usize = 16 * 1024;

/// A compiled, type-checked scalar expression, ready to evaluate over rows of the schema it
/// was compiled against.
///
/// Why it exists: operators (filter, map, key-by, triggers) need to evaluate user formulas on
/// every event; resolving names and checking types once, up front, keeps the per-event work to
/// a tree walk and moves errors to the moment a dataflow is defined.
#[derive(Clone, Debug)]
pub struct Expr {
    root: Node,
    data_type: DataType,
    source: Arc<str>,
}

impl Expr {
    /// Parses `text` (sqlparser's generic dialect, one expression, nothing after it),
    /// type-checks it against `schema` and compiles it.
    pub fn compile(text: &str, schema: &Schema) -> Result<Expr, ExprError> {
        let (root, data_type) = compile::compile(text, schema)?;
        Ok(Expr {
            root,
            data_type,
            source: Arc::from(text),
        })
    }

    /// The static type of the result, so callers can check e.g. that a filter is boolean or
    /// derive the output schema of a projection. A `NULL` result is possible for any type.
    pub fn data_type(&self) -> &DataType {
        &self.data_type
    }

    /// The text the expression was compiled from, for error messages and plans.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates the expression over one row of the schema it was compiled against.
    ///
    /// A row shorter than the schema is treated as having `NULL` in the missing positions
    /// rather than panicking.
    pub fn eval(&self, row: &[Value]) -> Result<Value, EvalError> {
        self.root.eval(row)
    }

    /// Evaluates a condition (filters, triggers): `NULL` counts as false. A non-boolean
    /// result is an [`EvalError::Type`]; callers check `data_type()` at compile time so that
    /// only `any`-typed inputs can get there.
    pub fn eval_bool(&self, row: &[Value]) -> Result<bool, EvalError> {
        match self.root.eval(row)? {
            Value::Bool(b) => Ok(b),
            Value::Null => Ok(false),
            other => Err(EvalError::Type {
                message: format!(
                    "a condition must be boolean, but `{}` gave {}",
                    self.source,
                    eval::describe(&other)
                ),
            }),
        }
    }

    /// If the expression is just a column reference, its position, so callers can skip
    /// evaluation (e.g. key-by a field).
    pub fn as_column(&self) -> Option<usize> {
        match self.root {
            Node::Column(i) => Some(i),
            _ => None,
        }
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// Why an expression cannot be compiled. Every variant carries the 1-based `line:column` of
/// the offending construct, because the reader is fixing a definition file.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ExprError {
    /// The text is not a syntactically valid expression.
    #[error("syntax error at {line}:{column}: {message}")]
    Parse {
        message: String,
        line: u64,
        column: u64,
    },
    /// A field name that is not in the input schema.
    #[error("unknown field `{name}` at {line}:{column}; known fields: {known}")]
    UnknownField {
        name: String,
        line: u64,
        column: u64,
        known: String,
    },
    /// Operand or argument types that do not fit the operator or function.
    #[error("type error at {line}:{column}: {message}")]
    Type {
        message: String,
        line: u64,
        column: u64,
    },
    /// Valid SQL that Starling expressions deliberately do not support.
    #[error("{construct} at {line}:{column} is not supported: {reason}")]
    Unsupported {
        construct: String,
        reason: String,
        line: u64,
        column: u64,
    },
    /// A literal that is well-formed SQL but not a valid value (e.g. a bad duration string).
    #[error("invalid literal at {line}:{column}: {message}")]
    InvalidLiteral {
        message: String,
        line: u64,
        column: u64,
    },
    /// The expression is nested too deeply or is too long; limits protect the stack.
    #[error("expression too complex at {line}:{column}: {message}")]
    TooComplex {
        message: String,
        line: u64,
        column: u64,
    },
}

/// Why evaluating an expression on one event failed. The event goes to the dataflow's
/// dead-letter topic with this message; other events are unaffected.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum EvalError {
    /// Integer or float division or remainder by zero.
    #[error("division by zero")]
    DivisionByZero,
    /// An integer or timestamp result outside the 64-bit range.
    #[error("integer overflow in {operation}")]
    Overflow { operation: &'static str },
    /// A value that cannot be converted to the requested type.
    #[error("cannot cast {value} ({from}) to {to}")]
    Cast {
        from: String,
        to: String,
        value: String,
    },
    /// A function argument outside the function's domain (e.g. `sqrt(-1)`).
    #[error("invalid argument to {function}: {message}")]
    InvalidArgument {
        function: &'static str,
        message: String,
    },
    /// A value of the wrong type at run time; only possible through `any`-typed fields.
    #[error("type error: {message}")]
    Type { message: String },
}
