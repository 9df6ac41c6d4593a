//! Conditional forms (CASE, coalesce, if) whose branches must share one type. Their own file
//! because they unify and widen branch types, which no other construct does.

use sqlparser::ast;

use crate::expr::eval::Node;
use crate::expr::ExprError;
use crate::value::DataType;

use super::operators::{coerce, comparable, is_boolish, unify};
use super::{snippet, Compiler, Ctx, Typed};

impl Compiler<'_> {
    pub(super) fn coalesce(&self, args: &[&ast::Expr], c: &Ctx<'_>) -> Result<Typed, ExprError> {
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

    pub(super) fn if_(&self, args: &[&ast::Expr], c: &Ctx<'_>) -> Result<Typed, ExprError> {
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

    pub(super) fn case(
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
