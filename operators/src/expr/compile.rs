//! From text to a typed tree: parsing (with pre-checks that protect the stack), name
//! resolution, type checking and node selection.

use sqlparser::ast::{
    self, BinaryOperator, CastKind, CeilFloorKind, DateTimeField, FunctionArg, FunctionArgExpr,
    FunctionArguments, Spanned, TrimWhereField, UnaryOperator,
};
use sqlparser::dialect::GenericDialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Token, Tokenizer};

use crate::schema::Schema;
use crate::value::{DataType, Value};

use super::eval::{castable, ArithOp, CmpOp, Node};
use super::functions::{parse_duration, Func, LikePattern, FUNCTION_NAMES};
use super::{ExprError, MAX_DEPTH, MAX_NESTING, MAX_OPERATORS, MAX_SOURCE_LEN};

type Typed = (Node, DataType);

/// Parses and compiles `text` against `schema`.
pub(crate) fn compile(text: &str, schema: &Schema) -> Result<Typed, ExprError> {
    let ast = parse(text)?;
    Compiler { schema }.expr(&ast, None)
}

/// Parses one expression, rejecting over-long or over-nested input before sqlparser sees it.
pub(crate) fn parse(text: &str) -> Result<ast::Expr, ExprError> {
    if text.len() > MAX_SOURCE_LEN {
        return Err(ExprError::TooComplex {
            message: format!(
                "the expression is {} bytes long; the limit is {MAX_SOURCE_LEN}",
                text.len()
            ),
            line: 1,
            column: 1,
        });
    }
    check_nesting(text)?;
    let dialect = GenericDialect {};
    let mut parser = Parser::new(&dialect)
        .try_with_sql(text)
        .map_err(parser_error)?;
    let expr = parser.parse_expr().map_err(parser_error)?;
    let next = parser.peek_token();
    if next.token != Token::EOF {
        return Err(ExprError::Parse {
            message: format!(
                "unexpected `{}` after the end of the expression",
                next.token
            ),
            line: next.span.start.line.max(1),
            column: next.span.start.column.max(1),
        });
    }
    Ok(expr)
}

/// Rejects input that would make sqlparser recurse deeper than [`MAX_NESTING`]: brackets,
/// `CASE … END` and runs of prefix operators (`NOT NOT …`, `- - …`) each add a level. The
/// tokenizer is iterative, so this is safe on any input.
fn check_nesting(text: &str) -> Result<(), ExprError> {
    let dialect = GenericDialect {};
    let tokens = Tokenizer::new(&dialect, text)
        .tokenize_with_location()
        .map_err(|e| ExprError::Parse {
            message: e.message,
            line: e.location.line.max(1),
            column: e.location.column.max(1),
        })?;
    let mut depth = 0usize;
    let mut prefix_run = 0usize;
    let mut operators = 0usize;
    for t in &tokens {
        let operator = matches!(
            &t.token,
            Token::Plus
                | Token::Minus
                | Token::Mul
                | Token::Div
                | Token::Mod
                | Token::StringConcat
                | Token::Eq
                | Token::Neq
                | Token::Lt
                | Token::Gt
                | Token::LtEq
                | Token::GtEq
        ) || matches!(
            &t.token,
            Token::Word(w) if matches!(w.keyword, Keyword::AND | Keyword::OR | Keyword::NOT)
        );
        if operator {
            operators += 1;
            if operators > MAX_OPERATORS {
                return Err(ExprError::TooComplex {
                    message: format!(
                        "the expression has more than {MAX_OPERATORS} operators; split it up"
                    ),
                    line: t.span.start.line.max(1),
                    column: t.span.start.column.max(1),
                });
            }
        }
        match &t.token {
            Token::Whitespace(_) => continue,
            Token::LParen | Token::LBracket => depth += 1,
            Token::RParen | Token::RBracket => depth = depth.saturating_sub(1),
            Token::Word(w) if w.keyword == Keyword::CASE => depth += 1,
            Token::Word(w) if w.keyword == Keyword::END => depth = depth.saturating_sub(1),
            _ => {}
        }
        let prefix = matches!(&t.token, Token::Minus | Token::Plus)
            || matches!(&t.token, Token::Word(w) if w.keyword == Keyword::NOT);
        prefix_run = if prefix { prefix_run + 1 } else { 0 };
        if depth + prefix_run > MAX_NESTING {
            return Err(ExprError::TooComplex {
                message: format!(
                    "the expression nests more than {MAX_NESTING} levels deep \
                     (brackets, CASE and prefix operators each add one)"
                ),
                line: t.span.start.line.max(1),
                column: t.span.start.column.max(1),
            });
        }
    }
    Ok(())
}

fn parser_error(e: ParserError) -> ExprError {
    match e {
        ParserError::RecursionLimitExceeded => ExprError::TooComplex {
            message: "the expression is nested too deeply for the parser".into(),
            line: 1,
            column: 1,
        },
        ParserError::TokenizerError(m) | ParserError::ParserError(m) => {
            let (message, line, column) = split_position(&m);
            ExprError::Parse {
                message,
                line,
                column,
            }
        }
    }
}

/// sqlparser appends " at Line: L, Column: C" to its messages; move that into fields.
fn split_position(m: &str) -> (String, u64, u64) {
    if let Some(at) = m.rfind(" at Line: ") {
        let tail = &m[at + " at Line: ".len()..];
        let mut parts = tail.split(", Column: ");
        let line = parts.next().and_then(|l| l.trim().parse().ok());
        let column = parts.next().and_then(|c| c.trim().parse().ok());
        if let (Some(line), Some(column)) = (line, column) {
            return (m[..at].to_string(), line, column);
        }
    }
    (m.to_string(), 1, 1)
}

/// The most general type two branches can share (`int` and `float` → `float`).
pub(crate) fn unify(a: &DataType, b: &DataType) -> Option<DataType> {
    use DataType as T;
    match (a, b) {
        _ if a == b => Some(a.clone()),
        (T::Null, t) | (t, T::Null) => Some(t.clone()),
        (T::Any, _) | (_, T::Any) => Some(T::Any),
        (T::Int, T::Float) | (T::Float, T::Int) => Some(T::Float),
        _ => None,
    }
}

/// Wraps an int-typed node in a cast when its context computes in float.
fn coerce(node: Node, from: &DataType, to: &DataType) -> Node {
    if *from == DataType::Int && *to == DataType::Float {
        Node::Cast {
            expr: Box::new(node),
            to: DataType::Float,
            try_cast: false,
        }
    } else {
        node
    }
}

/// Whether two types can be compared.
fn comparable(a: &DataType, b: &DataType) -> bool {
    use DataType as T;
    matches!(a, T::Null | T::Any)
        || matches!(b, T::Null | T::Any)
        || (a.is_numeric() && b.is_numeric())
        || matches!(
            (a, b),
            (T::Timestamp, T::Timestamp) | (T::Timestamp, T::Int) | (T::Int, T::Timestamp)
        )
        || (a == b && !matches!(a, T::Map(_)))
        || matches!((a, b), (T::Map(_), T::Map(_)))
}

fn arith_type(op: ArithOp, a: &DataType, b: &DataType) -> Option<DataType> {
    use DataType as T;
    let arithmetic = |t: &T| matches!(t, T::Int | T::Float | T::Timestamp | T::Null | T::Any);
    if !arithmetic(a) || !arithmetic(b) {
        return None;
    }
    Some(match (a, b) {
        (T::Null, _) | (_, T::Null) => T::Null,
        (T::Any, _) | (_, T::Any) => T::Any,
        (T::Int, T::Int) => T::Int,
        (T::Float, T::Int | T::Float) | (T::Int, T::Float) => T::Float,
        (T::Timestamp, T::Int) if matches!(op, ArithOp::Add | ArithOp::Sub) => T::Timestamp,
        (T::Int, T::Timestamp) if op == ArithOp::Add => T::Timestamp,
        (T::Timestamp, T::Timestamp) if op == ArithOp::Sub => T::Int,
        _ => return None,
    })
}

fn is_boolish(t: &DataType) -> bool {
    matches!(t, DataType::Bool | DataType::Null | DataType::Any)
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

const NONDETERMINISTIC: &str = "results must be deterministic (re-running a dataflow over the \
same events must give the same output); use the event's timestamp field instead";

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

    fn unary(&self, op: &UnaryOperator, x: &ast::Expr, c: &Ctx<'_>) -> Result<Typed, ExprError> {
        match op {
            UnaryOperator::Minus => {
                // Fold `-<number>` so that `-9223372036854775808` is a valid literal.
                if let ast::Expr::Value(v) = x {
                    if let ast::Value::Number(n, _) = &v.value {
                        return number(&format!("-{n}"), c);
                    }
                }
                let (n, t) = self.expr(x, Some(c))?;
                if !matches!(
                    t,
                    DataType::Int | DataType::Float | DataType::Null | DataType::Any
                ) {
                    return Err(c.type_error(format!("cannot negate {t}")));
                }
                Ok((Node::Neg(Box::new(n)), t))
            }
            UnaryOperator::Plus => {
                let (n, t) = self.expr(x, Some(c))?;
                if !matches!(
                    t,
                    DataType::Int | DataType::Float | DataType::Null | DataType::Any
                ) {
                    return Err(c.type_error(format!("unary + expects a number, found {t}")));
                }
                Ok((n, t))
            }
            UnaryOperator::Not | UnaryOperator::BangNot => {
                let (n, t) = self.expr(x, Some(c))?;
                if !is_boolish(&t) {
                    return Err(c.type_error(format!("NOT expects a boolean, found {t}")));
                }
                Ok((Node::Not(Box::new(n)), DataType::Bool))
            }
            other => Err(c.unsupported(
                format!("unary operator `{other}`"),
                "supported unary operators: -, +, NOT",
            )),
        }
    }

    fn binary(
        &self,
        left: &ast::Expr,
        op: &BinaryOperator,
        right: &ast::Expr,
        c: &Ctx<'_>,
    ) -> Result<Typed, ExprError> {
        use BinaryOperator as B;
        let arith = match op {
            B::Plus => Some(ArithOp::Add),
            B::Minus => Some(ArithOp::Sub),
            B::Multiply => Some(ArithOp::Mul),
            B::Divide => Some(ArithOp::Div),
            B::Modulo => Some(ArithOp::Rem),
            _ => None,
        };
        let cmp = match op {
            B::Eq => Some(CmpOp::Eq),
            B::NotEq => Some(CmpOp::NotEq),
            B::Lt => Some(CmpOp::Lt),
            B::LtEq => Some(CmpOp::LtEq),
            B::Gt => Some(CmpOp::Gt),
            B::GtEq => Some(CmpOp::GtEq),
            _ => None,
        };
        if arith.is_none() && cmp.is_none() && !matches!(op, B::And | B::Or | B::StringConcat) {
            return Err(c.unsupported(
                format!("operator `{op}`"),
                "supported operators: + - * / % || = <> != < <= > >= AND OR",
            ));
        }
        if *op == B::StringConcat {
            return self.call(Func::ConcatOp, &[left, right], c);
        }
        let (l, lt) = self.expr(left, Some(c))?;
        let (r, rt) = self.expr(right, Some(c))?;
        if let Some(a) = arith {
            let Some(t) = arith_type(a, &lt, &rt) else {
                let hint = if lt == DataType::String || rt == DataType::String {
                    "; use `||` or concat() to join strings, or CAST(x AS float) to convert"
                } else {
                    ""
                };
                return Err(c.type_error(format!(
                    "cannot apply `{}` to {lt} and {rt}{hint}",
                    a.symbol()
                )));
            };
            return Ok((Node::Arith(a, Box::new(l), Box::new(r)), t));
        }
        if let Some(o) = cmp {
            if !comparable(&lt, &rt) {
                return Err(c.type_error(format!(
                    "cannot compare {lt} with {rt} using `{op}`; convert one side with CAST(x AS type)"
                )));
            }
            let node = match (l, r) {
                (Node::Column(i), Node::Literal(v)) if !v.is_null() => {
                    Node::CmpColumnLiteral(o, i, v)
                }
                (Node::Literal(v), Node::Column(i)) if !v.is_null() => {
                    Node::CmpColumnLiteral(o.flip(), i, v)
                }
                (l, r) => Node::Cmp(o, Box::new(l), Box::new(r)),
            };
            return Ok((node, DataType::Bool));
        }
        let name = if *op == B::And { "AND" } else { "OR" };
        for (t, side) in [(&lt, left), (&rt, right)] {
            if !is_boolish(t) {
                return Err(c.type_error(format!(
                    "{name} expects boolean operands, but {} is {t}",
                    snippet(side)
                )));
            }
        }
        let node = if *op == B::And {
            Node::And(Box::new(l), Box::new(r))
        } else {
            Node::Or(Box::new(l), Box::new(r))
        };
        Ok((node, DataType::Bool))
    }

    /// Compiles the arguments and checks a built-in function call.
    fn call(&self, func: Func, args: &[&ast::Expr], c: &Ctx<'_>) -> Result<Typed, ExprError> {
        let (min, max) = func.arity();
        if args.len() < min || args.len() > max {
            let expected = if min == max {
                format!("{min}")
            } else if max == usize::MAX {
                format!("at least {min}")
            } else {
                format!("{min} to {max}")
            };
            return Err(c.type_error(format!(
                "{}() takes {expected} argument{}, found {}",
                func.name(),
                if min == 1 && max == 1 { "" } else { "s" },
                args.len()
            )));
        }
        let mut nodes = Vec::with_capacity(args.len());
        let mut types = Vec::with_capacity(args.len());
        for (i, a) in args.iter().enumerate() {
            // A window size may be a duration string, converted here once.
            if i == 1 && matches!(func, Func::WindowStart | Func::WindowEnd) {
                let (n, t) = self.window_size(a, c)?;
                nodes.push(n);
                types.push(t);
                continue;
            }
            let (n, t) = self.expr(a, Some(c))?;
            nodes.push(n);
            types.push(t);
        }
        let (result, coerce_to) = func.check(&types).map_err(|(i, message)| {
            let (line, column) = c.pos_of(args.get(i).map_or(c.expr.span(), |a| a.span()));
            ExprError::Type {
                message,
                line,
                column,
            }
        })?;
        if let Some(to) = coerce_to {
            nodes = nodes
                .into_iter()
                .zip(&types)
                .map(|(n, t)| coerce(n, t, &to))
                .collect();
        }
        Ok((Node::Call(func, nodes), result))
    }

    fn window_size(&self, a: &ast::Expr, c: &Ctx<'_>) -> Result<Typed, ExprError> {
        let (n, t) = self.expr(a, Some(c))?;
        let size = match &n {
            Node::Literal(Value::Str(s)) => Some(parse_duration(s).map_err(|m| c.invalid(m))?),
            Node::Literal(Value::Int(i)) => Some(*i),
            _ => None,
        };
        match size {
            Some(ms) if ms <= 0 => {
                Err(c.invalid(format!("window size must be positive, found {ms} ms")))
            }
            Some(ms) => Ok((Node::Literal(Value::Int(ms)), DataType::Int)),
            None => Ok((n, t)),
        }
    }

    fn function(&self, f: &ast::Function, c: &Ctx<'_>) -> Result<Typed, ExprError> {
        // Some field names (`user`, `current_user`, …) are SQL keywords that sqlparser reads as
        // functions without parentheses; a field of that name wins.
        if let (FunctionArguments::None, [ast::ObjectNamePart::Identifier(id)]) =
            (&f.args, f.name.0.as_slice())
        {
            if self.schema.index_of(&id.value).is_some() {
                return self.field(&id.value, c.pos_of(id.span));
            }
        }
        let name = match f.name.0.as_slice() {
            [ast::ObjectNamePart::Identifier(id)] => id.value.to_ascii_lowercase(),
            _ => {
                return Err(c.unsupported(
                    format!("function `{}`", f.name),
                    "qualified function names are not supported",
                ))
            }
        };
        match name.as_str() {
            "now" | "current_timestamp" | "current_date" | "current_time" | "localtimestamp"
            | "localtime" | "random" | "rand" | "uuid" | "gen_random_uuid" => {
                return Err(c.unsupported(format!("{name}()"), NONDETERMINISTIC))
            }
            "count" | "sum" | "avg" | "min" | "max" | "array_agg" | "string_agg" => {
                return Err(c.unsupported(
                    format!("aggregate function {name}()"),
                    "aggregates are computed by the dataflow's aggregate operator; a scalar \
                     expression sees one event (for two values use greatest()/least())",
                ))
            }
            _ => {}
        }
        if f.over.is_some() {
            return Err(c.unsupported(
                format!("window function {name}() OVER (…)"),
                "windows are defined by the dataflow's window operator, not inside expressions",
            ));
        }
        if f.filter.is_some() || !f.within_group.is_empty() || f.null_treatment.is_some() {
            return Err(c.unsupported(
                format!("FILTER/WITHIN GROUP/NULL treatment on {name}()"),
                "these only apply to aggregates, which expressions do not have",
            ));
        }
        if !matches!(f.parameters, FunctionArguments::None) {
            return Err(c.unsupported(
                format!("parameterised function {name}(…)(…)"),
                "functions take a single argument list",
            ));
        }
        let list = match &f.args {
            FunctionArguments::List(l) => l,
            FunctionArguments::None => {
                return Err(c.unsupported(
                    format!("`{name}` without parentheses"),
                    "call functions with an argument list, e.g. lower(name)",
                ))
            }
            FunctionArguments::Subquery(_) => {
                return Err(c.unsupported(
                    "a subquery",
                    "an expression sees one event at a time; use a join or an aggregate",
                ))
            }
        };
        if list.duplicate_treatment.is_some() || !list.clauses.is_empty() {
            return Err(c.unsupported(
                format!("DISTINCT/ORDER BY/… inside {name}()"),
                "these only apply to aggregates, which expressions do not have",
            ));
        }
        let mut args = Vec::with_capacity(list.args.len());
        for a in &list.args {
            match a {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => args.push(e),
                FunctionArg::Unnamed(_) => {
                    return Err(c.unsupported(
                        format!("`*` argument to {name}()"),
                        "a scalar function takes values; `*` only makes sense in count(*)",
                    ))
                }
                _ => {
                    return Err(c.unsupported(
                        format!("named argument to {name}()"),
                        "pass arguments by position",
                    ))
                }
            }
        }
        match name.as_str() {
            "coalesce" => self.coalesce(&args, c),
            "if" | "iff" => self.if_(&args, c),
            _ => match Func::lookup(&name) {
                Some(func) => self.call(func, &args, c),
                None => Err(c.unsupported(
                    format!("function `{name}`"),
                    format!("unknown function; supported functions: {FUNCTION_NAMES}"),
                )),
            },
        }
    }

    fn coalesce(&self, args: &[&ast::Expr], c: &Ctx<'_>) -> Result<Typed, ExprError> {
        if args.is_empty() {
            return Err(c.type_error("coalesce() takes at least 1 argument, found 0".into()));
        }
        let mut typed = Vec::with_capacity(args.len());
        let mut ty = DataType::Null;
        for a in args {
            let (n, t) = self.expr(a, Some(c))?;
            ty = unify(&ty, &t).ok_or_else(|| {
                c.type_error(format!(
                    "coalesce() arguments must have one type, found {ty} and {t} ({})",
                    snippet(a)
                ))
            })?;
            typed.push((n, t));
        }
        let nodes = typed.into_iter().map(|(n, t)| coerce(n, &t, &ty)).collect();
        Ok((Node::Coalesce(nodes), ty))
    }

    fn if_(&self, args: &[&ast::Expr], c: &Ctx<'_>) -> Result<Typed, ExprError> {
        let [cond, a, b] = args else {
            return Err(c.type_error(format!(
                "if() takes 3 arguments (condition, then, else), found {}",
                args.len()
            )));
        };
        let (cn, ct) = self.expr(cond, Some(c))?;
        if !is_boolish(&ct) {
            return Err(c.type_error(format!("if() condition must be boolean, found {ct}")));
        }
        let (an, at) = self.expr(a, Some(c))?;
        let (bn, bt) = self.expr(b, Some(c))?;
        let ty = unify(&at, &bt).ok_or_else(|| {
            c.type_error(format!(
                "if() branches must have one type, found {at} and {bt}"
            ))
        })?;
        Ok((
            Node::If(
                Box::new(cn),
                Box::new(coerce(an, &at, &ty)),
                Box::new(coerce(bn, &bt, &ty)),
            ),
            ty,
        ))
    }

    fn case(
        &self,
        operand: Option<&ast::Expr>,
        conditions: &[ast::CaseWhen],
        else_result: Option<&ast::Expr>,
        c: &Ctx<'_>,
    ) -> Result<Typed, ExprError> {
        let operand = match operand {
            Some(o) => Some(self.expr(o, Some(c))?),
            None => None,
        };
        let mut ty = DataType::Null;
        let mut branches = Vec::with_capacity(conditions.len());
        for w in conditions {
            let (wn, wt) = self.expr(&w.condition, Some(c))?;
            match &operand {
                Some((_, ot)) if !comparable(ot, &wt) => {
                    return Err(c.type_error(format!(
                        "CASE compares {ot} with WHEN value {} of type {wt}",
                        snippet(&w.condition)
                    )))
                }
                None if !is_boolish(&wt) => {
                    return Err(c.type_error(format!(
                        "CASE WHEN condition {} must be boolean, found {wt}",
                        snippet(&w.condition)
                    )))
                }
                _ => {}
            }
            let (rn, rt) = self.expr(&w.result, Some(c))?;
            ty = unify(&ty, &rt).ok_or_else(|| {
                c.type_error(format!(
                    "CASE branches must have one type, found {ty} and {rt} ({})",
                    snippet(&w.result)
                ))
            })?;
            branches.push((wn, (rn, rt)));
        }
        let otherwise = match else_result {
            Some(e) => {
                let (n, t) = self.expr(e, Some(c))?;
                ty = unify(&ty, &t).ok_or_else(|| {
                    c.type_error(format!(
                        "CASE branches must have one type, found {ty} and {t} (ELSE)"
                    ))
                })?;
                Some((n, t))
            }
            None => None,
        };
        let branches = branches
            .into_iter()
            .map(|(w, (r, rt))| (w, coerce(r, &rt, &ty)))
            .collect();
        Ok((
            Node::Case {
                operand: operand.map(|(n, _)| Box::new(n)),
                branches,
                otherwise: otherwise.map(|(n, t)| Box::new(coerce(n, &t, &ty))),
            },
            ty,
        ))
    }
}

fn number(text: &str, c: &Ctx<'_>) -> Result<Typed, ExprError> {
    let is_integer = text
        .trim_start_matches('-')
        .chars()
        .all(|ch| ch.is_ascii_digit());
    if is_integer {
        return match text.parse::<i64>() {
            Ok(i) => Ok((Node::Literal(Value::Int(i)), DataType::Int)),
            Err(_) => Err(c.invalid(format!(
                "integer {text} does not fit in 64 bits; write {text}.0 for a float"
            ))),
        };
    }
    match text.parse::<f64>() {
        Ok(f) if f.is_finite() => Ok((Node::Literal(Value::Float(f)), DataType::Float)),
        _ => Err(c.invalid(format!("`{text}` is not a valid number"))),
    }
}

fn literal(v: &ast::Value, c: &Ctx<'_>) -> Result<Typed, ExprError> {
    Ok(match v {
        ast::Value::Number(n, _) => return number(n, c),
        ast::Value::SingleQuotedString(s) => (Node::Literal(Value::str(s)), DataType::String),
        ast::Value::Boolean(b) => (Node::Literal(Value::Bool(*b)), DataType::Bool),
        ast::Value::Null => (Node::Literal(Value::Null), DataType::Null),
        ast::Value::Placeholder(p) => {
            return Err(c.unsupported(
                format!("placeholder `{p}`"),
                "expressions have no parameters; write the value",
            ))
        }
        other => {
            return Err(c.unsupported(
                format!("literal {}", snippet(other)),
                "supported literals: numbers, 'strings', TRUE, FALSE, NULL",
            ))
        }
    })
}

/// `INTERVAL '5' SECOND` or `INTERVAL '10s'` → milliseconds.
fn interval(iv: &ast::Interval, c: &Ctx<'_>) -> Result<i64, ExprError> {
    let text = match iv.value.as_ref() {
        ast::Expr::Value(v) => match &v.value {
            ast::Value::SingleQuotedString(s) => s.clone(),
            ast::Value::Number(n, _) => n.clone(),
            _ => String::new(),
        },
        _ => String::new(),
    };
    if text.is_empty() || iv.last_field.is_some() || iv.fractional_seconds_precision.is_some() {
        return Err(c.unsupported(
            "this INTERVAL form",
            "write INTERVAL '5' SECOND (units MILLISECOND, SECOND, MINUTE, HOUR, DAY) or \
             INTERVAL '5s'",
        ));
    }
    let unit = match &iv.leading_field {
        None => return parse_duration(&text).map_err(|m| c.invalid(m)),
        Some(DateTimeField::Millisecond | DateTimeField::Milliseconds) => "ms",
        Some(DateTimeField::Second | DateTimeField::Seconds) => "s",
        Some(DateTimeField::Minute | DateTimeField::Minutes) => "m",
        Some(DateTimeField::Hour | DateTimeField::Hours) => "h",
        Some(DateTimeField::Day | DateTimeField::Days) => "d",
        Some(other) => {
            return Err(c.unsupported(
                format!("INTERVAL … {other}"),
                "months and years have no fixed length; use MILLISECOND, SECOND, MINUTE, \
                 HOUR or DAY",
            ))
        }
    };
    parse_duration(&format!("{}{unit}", text.trim())).map_err(|m| c.invalid(m))
}
