//! The small validators every node family uses: names, durations, boolean expressions.
//! Their own file so that each family's planning reads as its own rules only.

use crate::duration::parse_duration_ms;
use crate::expr::Expr;
use crate::plan::PlanError;
use crate::value::DataType;

fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    !s.is_empty()
        && s.len() <= 128
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// View and series names end up in URLs and storage keys: the same rule as topic names.
pub(super) fn check_store_name(
    node: &str,
    field: &'static str,
    name: &str,
) -> Result<(), PlanError> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(PlanError::InvalidParameter {
            node: node.to_string(),
            field,
            message: format!(
                "`{}` is not a valid name (letters, digits, `_`, `-`, `.`; at most 128 bytes)",
                name.chars().take(200).collect::<String>()
            ),
        })
    }
}

pub(super) fn check_name(what: &'static str, name: &str) -> Result<(), PlanError> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(PlanError::InvalidName {
            what,
            name: name.chars().take(200).collect(),
        })
    }
}

pub(super) fn duration(node: &str, field: &'static str, text: &str) -> Result<u64, PlanError> {
    parse_duration_ms(text).map_err(|error| PlanError::BadDuration {
        node: node.to_string(),
        field,
        error,
    })
}

pub(super) fn positive_duration(
    node: &str,
    field: &'static str,
    text: Option<&String>,
) -> Result<u64, PlanError> {
    let Some(text) = text else {
        return Err(PlanError::MissingField {
            node: node.to_string(),
            field,
            why: "for this kind of node",
        });
    };
    let ms = duration(node, field, text)?;
    if ms == 0 {
        return Err(PlanError::InvalidParameter {
            node: node.to_string(),
            field,
            message: "must be greater than zero".into(),
        });
    }
    Ok(ms)
}

pub(super) fn expect_bool(node: &str, field: &str, e: &Expr) -> Result<(), PlanError> {
    match e.data_type() {
        DataType::Bool | DataType::Null | DataType::Any => Ok(()),
        other => Err(PlanError::TypeMismatch {
            node: node.to_string(),
            field: field.to_string(),
            expected: "a boolean expression".into(),
            found: format!("{other} (`{}`)", e.source()),
        }),
    }
}
