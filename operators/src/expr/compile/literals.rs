//! Literals: numbers (64-bit or float), strings, booleans, NULL and intervals. Their own file
//! because they are turned into values at compile time, with their own errors.

use sqlparser::ast::{self, DateTimeField};

use crate::expr::eval::Node;
use crate::expr::functions::parse_duration;
use crate::expr::ExprError;
use crate::value::{DataType, Value};

use super::{snippet, Ctx, Typed};

pub(super) fn number(text: &str, c: &Ctx<'_>) -> Result<Typed, ExprError> {
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

pub(super) fn literal(v: &ast::Value, c: &Ctx<'_>) -> Result<Typed, ExprError> {
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
pub(super) fn interval(iv: &ast::Interval, c: &Ctx<'_>) -> Result<i64, ExprError> {
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
