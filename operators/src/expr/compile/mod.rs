//! From text to a typed tree: parsing (with pre-checks that protect the stack), name
//! resolution, type checking and node selection.
//!
//! This file holds the entry point and the walk over the syntax tree; each kind of construct
//! it meets is checked in a file of its own.

mod branches;
mod calls;
mod literals;
mod operators;
mod parse;

use sqlparser::ast::{self, CastKind, CeilFloorKind, DateTimeField, Spanned, TrimWhereField};

use crate::schema::Schema;
use crate::value::{DataType, Value};

use super::eval::{castable, Node};
use super::functions::{Func, LikePattern};
use super::{ExprError, MAX_DEPTH};

use literals::{interval, literal};
pub(crate) use operators::unify;
use operators::{comparable, is_boolish};
use parse::parse;

type Typed = (Node, DataType);

/// Parses and compiles `text` against `schema`.
pub(crate) fn compile(text: &str, schema: &Schema) -> Result<Typed, ExprError> {
    let ast = parse(text)?;
    Compiler { schema }.expr(&ast, None)
}

/// Where we are in the syntax tree: the node and its ancestors, for error positions.
struct Ctx<'a> {
    expr: &'a ast::Expr,
    parent: Option<&'a Ctx<'a>>,
    depth: usize,
}

impl Ctx<'_> {
    /// Position of this node, or of the nearest ancestor whose span is known.
    fn pos(&self) -> (u64, u64) {
        let mut c = Some(self);
        while let Some(ctx) = c {
            let s = ctx.expr.span().start;
            if s.line > 0 {
                return (s.line, s.column.max(1));
            }
            c = ctx.parent;
        }
        (1, 1)
    }

    fn pos_of(&self, span: sqlparser::tokenizer::Span) -> (u64, u64) {
        if span.start.line > 0 {
            (span.start.line, span.start.column.max(1))
        } else {
            self.pos()
        }
    }

    fn type_error(&self, message: String) -> ExprError {
        let (line, column) = self.pos();
        ExprError::Type {
            message,
            line,
            column,
        }
    }

    fn unsupported(&self, construct: impl Into<String>, reason: impl Into<String>) -> ExprError {
        let (line, column) = self.pos();
        ExprError::Unsupported {
            construct: construct.into(),
            reason: reason.into(),
            line,
            column,
        }
    }

    fn invalid(&self, message: String) -> ExprError {
        let (line, column) = self.pos();
        ExprError::InvalidLiteral {
            message,
            line,
            column,
        }
    }
}

/// A short rendering of SQL for messages.
fn snippet(e: &impl std::fmt::Display) -> String {
    let mut s = e.to_string();
    if s.len() > 40 {
        let mut cut = 40;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    format!("`{s}`")
}

struct Compiler<'s> {
    schema: &'s Schema,
}

impl Compiler<'_> {
    fn expr(&self, e: &ast::Expr, parent: Option<&Ctx<'_>>) -> Result<Typed, ExprError> {
        let ctx = Ctx {
            expr: e,
            parent,
            depth: parent.map_or(1, |p| p.depth + 1),
        };
        if ctx.depth > MAX_DEPTH {
            let (line, column) = parent.map_or((1, 1), |p| p.pos());
            return Err(ExprError::TooComplex {
                message: format!("the expression tree is more than {MAX_DEPTH} levels deep"),
                line,
                column,
            });
        }
        let c = &ctx;
        use ast::Expr as E;
        Ok(match e {
            E::Identifier(id) => self.field(&id.value, c.pos_of(id.span))?,
            E::CompoundIdentifier(ids) => {
                return Err(c.unsupported(
                    format!(
                        "qualified name `{}`",
                        ids.iter()
                            .map(|i| i.value.as_str())
                            .collect::<Vec<_>>()
                            .join(".")
                    ),
                    "an expression sees the fields of one input row; refer to them by bare name",
                ))
            }
            E::Nested(inner) => self.expr(inner, Some(c))?,
            E::Value(v) => literal(&v.value, c)?,
            E::UnaryOp { op, expr } => self.unary(op, expr, c)?,
            E::BinaryOp { left, op, right } => self.binary(left, op, right, c)?,
            E::IsNull(x) | E::IsNotNull(x) => {
                let (n, _) = self.expr(x, Some(c))?;
                (
                    Node::IsNull(Box::new(n), matches!(e, E::IsNotNull(_))),
                    DataType::Bool,
                )
            }
            E::IsTrue(x)
            | E::IsNotTrue(x)
            | E::IsFalse(x)
            | E::IsNotFalse(x)
            | E::IsUnknown(x)
            | E::IsNotUnknown(x) => {
                let (n, t) = self.expr(x, Some(c))?;
                if !is_boolish(&t) {
                    return Err(c.type_error(format!(
                        "IS TRUE/FALSE/UNKNOWN expects a boolean, found {t}"
                    )));
                }
                let node = match e {
                    E::IsUnknown(_) => Node::IsNull(Box::new(n), false),
                    E::IsNotUnknown(_) => Node::IsNull(Box::new(n), true),
                    _ => Node::IsBool {
                        expr: Box::new(n),
                        value: matches!(e, E::IsTrue(_) | E::IsNotTrue(_)),
                        negated: matches!(e, E::IsNotTrue(_) | E::IsNotFalse(_)),
                    },
                };
                (node, DataType::Bool)
            }
            E::IsDistinctFrom(a, b) | E::IsNotDistinctFrom(a, b) => {
                let (l, lt) = self.expr(a, Some(c))?;
                let (r, rt) = self.expr(b, Some(c))?;
                if !comparable(&lt, &rt) {
                    return Err(c.type_error(format!("cannot compare {lt} with {rt}")));
                }
                (
                    Node::Distinct {
                        left: Box::new(l),
                        right: Box::new(r),
                        negated: matches!(e, E::IsNotDistinctFrom(..)),
                    },
                    DataType::Bool,
                )
            }
            E::Between {
                expr,
                negated,
                low,
                high,
            } => {
                let (x, xt) = self.expr(expr, Some(c))?;
                let (lo, lt) = self.expr(low, Some(c))?;
                let (hi, ht) = self.expr(high, Some(c))?;
                for t in [&lt, &ht] {
                    if !comparable(&xt, t) {
                        return Err(c.type_error(format!("BETWEEN cannot compare {xt} with {t}")));
                    }
                }
                (
                    Node::Between {
                        expr: Box::new(x),
                        low: Box::new(lo),
                        high: Box::new(hi),
                        negated: *negated,
                    },
                    DataType::Bool,
                )
            }
            E::In {
                expr,
                target,
                negated,
                ..
            } => {
                let ast::InTarget::List(items) = target else {
                    return Err(c.unsupported(
                        "IN with a subquery or table",
                        "an expression sees one event at a time; list the values, \
                         e.g. `x IN (1, 2, 3)`, or use a join",
                    ));
                };
                let (x, xt) = self.expr(expr, Some(c))?;
                let mut list = Vec::with_capacity(items.len());
                for item in items {
                    let (n, t) = self.expr(item, Some(c))?;
                    if !comparable(&xt, &t) {
                        return Err(c.type_error(format!(
                            "IN list item {} has type {t}, which cannot be compared with {xt}",
                            snippet(item)
                        )));
                    }
                    list.push(n);
                }
                (
                    Node::InList {
                        expr: Box::new(x),
                        list,
                        negated: *negated,
                    },
                    DataType::Bool,
                )
            }
            E::Like {
                negated,
                any,
                expr,
                pattern,
                escape_char,
            } => {
                if *any || escape_char.is_some() {
                    return Err(c.unsupported(
                        "LIKE ANY / LIKE … ESCAPE",
                        "only plain `x LIKE 'pattern'` with % and _ is supported",
                    ));
                }
                let (x, xt) = self.expr(expr, Some(c))?;
                let (p, pt) = self.expr(pattern, Some(c))?;
                for t in [&xt, &pt] {
                    if !matches!(t, DataType::String | DataType::Null | DataType::Any) {
                        return Err(c.type_error(format!("LIKE expects strings, found {t}")));
                    }
                }
                let compiled = match &p {
                    Node::Literal(Value::Str(s)) => Some(LikePattern::new(s)),
                    _ => None,
                };
                (
                    Node::Like {
                        expr: Box::new(x),
                        pattern: Box::new(p),
                        compiled,
                        negated: *negated,
                    },
                    DataType::Bool,
                )
            }
            E::ILike { .. } => {
                return Err(c.unsupported(
                    "ILIKE",
                    "write `lower(x) LIKE 'pattern'` for a case-insensitive match",
                ))
            }
            E::Cast {
                kind,
                expr,
                data_type,
                format,
            } => {
                if format.is_some() {
                    return Err(c.unsupported("CAST … FORMAT", "cast formats are not supported"));
                }
                let try_cast = match kind {
                    CastKind::Cast | CastKind::DoubleColon => false,
                    CastKind::TryCast | CastKind::SafeCast => true,
                };
                let name = data_type.to_string();
                let Some(to) = DataType::parse(&name) else {
                    return Err(c.type_error(format!(
                        "unknown type `{name}`; known types: bool, int, float, string, bytes, \
                         timestamp, list<T>, map<T>, vector<N>, any"
                    )));
                };
                let (x, xt) = self.expr(expr, Some(c))?;
                if !castable(&xt, &to) {
                    return Err(c.type_error(format!("cannot cast {xt} to {to}")));
                }
                (
                    Node::Cast {
                        expr: Box::new(x),
                        to: to.clone(),
                        try_cast,
                    },
                    to,
                )
            }
            E::Extract { field, expr, .. } => {
                let func = match field {
                    DateTimeField::Year => Func::Year,
                    DateTimeField::Month => Func::Month,
                    DateTimeField::Day => Func::Day,
                    DateTimeField::Hour => Func::Hour,
                    DateTimeField::Minute => Func::Minute,
                    DateTimeField::Second => Func::Second,
                    DateTimeField::DayOfWeek | DateTimeField::Dow | DateTimeField::Isodow => {
                        Func::DayOfWeek
                    }
                    other => {
                        return Err(c.unsupported(
                            format!("EXTRACT({other} …)"),
                            "supported fields: YEAR, MONTH, DAY, HOUR, MINUTE, SECOND, \
                             DOW/ISODOW (ISO, Monday = 1)",
                        ))
                    }
                };
                self.call(func, &[expr.as_ref()], c)?
            }
            E::Ceil { expr, field } | E::Floor { expr, field } => {
                if !matches!(
                    field,
                    CeilFloorKind::DateTimeField(DateTimeField::NoDateTime)
                ) {
                    return Err(c.unsupported(
                        "CEIL/FLOOR with a scale or unit",
                        "use round(x, digits) or window_start(ts, size)",
                    ));
                }
                let func = if matches!(e, E::Ceil { .. }) {
                    Func::Ceil
                } else {
                    Func::Floor
                };
                self.call(func, &[expr.as_ref()], c)?
            }
            E::Substring {
                expr,
                substring_from,
                substring_for,
                ..
            } => {
                let mut args: Vec<&ast::Expr> = vec![expr];
                match substring_from {
                    Some(f) => args.push(f),
                    None => {
                        return Err(c.type_error(
                            "substring() needs a start position: substring(s, start[, length])"
                                .into(),
                        ))
                    }
                }
                if let Some(f) = substring_for {
                    args.push(f);
                }
                self.call(Func::Substring, &args, c)?
            }
            E::Trim {
                trim_where,
                trim_what,
                expr,
                trim_characters,
            } => {
                if trim_what.is_some() || trim_characters.is_some() {
                    return Err(c.unsupported(
                        "TRIM of specific characters",
                        "only whitespace trimming is supported: trim(x), ltrim(x), rtrim(x)",
                    ));
                }
                let func = match trim_where {
                    None | Some(TrimWhereField::Both) => Func::Trim,
                    Some(TrimWhereField::Leading) => Func::LTrim,
                    Some(TrimWhereField::Trailing) => Func::RTrim,
                };
                self.call(func, &[expr.as_ref()], c)?
            }
            E::Case {
                operand,
                conditions,
                else_result,
                ..
            } => self.case(operand.as_deref(), conditions, else_result.as_deref(), c)?,
            E::Function(f) => self.function(f, c)?,
            E::Interval(iv) => (Node::Literal(Value::Int(interval(iv, c)?)), DataType::Int),
            E::Subquery(_) | E::Exists { .. } => {
                return Err(c.unsupported(
                    "a subquery",
                    "an expression sees one event at a time; use a join or an aggregate",
                ))
            }
            E::TypedString(ts) => {
                let name = ts.data_type.to_string();
                let text = match &ts.value.value {
                    ast::Value::SingleQuotedString(s) => s.clone(),
                    other => other.to_string(),
                };
                match DataType::parse(&name) {
                    Some(DataType::Timestamp) => {
                        let Some(t) = crate::json::parse_timestamp(&text) else {
                            return Err(c.invalid(format!(
                                "`{text}` is not an RFC 3339 timestamp \
                                 (e.g. '2024-01-02T03:04:05Z')"
                            )));
                        };
                        (Node::Literal(Value::Timestamp(t)), DataType::Timestamp)
                    }
                    _ => {
                        return Err(c.unsupported(
                            format!("typed literal {}", snippet(e)),
                            "only TIMESTAMP '…' literals are supported; use CAST otherwise",
                        ))
                    }
                }
            }
            other => {
                return Err(c.unsupported(
                    snippet(other),
                    "this SQL construct is not part of Starling expressions \
                     (see docs/expressions.md)",
                ))
            }
        })
    }

    fn field(&self, name: &str, (line, column): (u64, u64)) -> Result<Typed, ExprError> {
        match self.schema.index_of(name) {
            Some(i) => Ok((Node::Column(i), self.schema.field(i).data_type.clone())),
            None => Err(ExprError::UnknownField {
                name: name.to_string(),
                line,
                column,
                known: self.schema.names().join(", "),
            }),
        }
    }
}
