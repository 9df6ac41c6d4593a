//! Unary and binary operators and the type rules they define (which types combine, compare
//! or widen). Its own file because CASE, coalesce and function calls reuse these rules.

use sqlparser::ast::{self, BinaryOperator, UnaryOperator};

use crate::expr::eval::{ArithOp, CmpOp, Node};
use crate::expr::functions::Func;
use crate::expr::ExprError;
use crate::value::DataType;

use super::literals::number;
use super::{snippet, Compiler, Ctx, Typed};

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
pub(super) fn coerce(node: Node, from: &DataType, to: &DataType) -> Node {
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
pub(super) fn comparable(a: &DataType, b: &DataType) -> bool {
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

pub(super) fn is_boolish(t: &DataType) -> bool {
    matches!(t, DataType::Bool | DataType::Null | DataType::Any)
}

impl Compiler<'_> {
    pub(super) fn unary(
        &self,
        op: &UnaryOperator,
        x: &ast::Expr,
        c: &Ctx<'_>,
    ) -> Result<Typed, ExprError> {
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

    pub(super) fn binary(
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
}
