//! Function calls: the SQL forms rejected with a reason (aggregates, non-deterministic and
//! window functions), arity and argument checks, and window sizes given as durations. Its own
//! file because it is the door to the built-in function table.

use sqlparser::ast::{self, FunctionArg, FunctionArgExpr, FunctionArguments, Spanned};

use crate::expr::eval::Node;
use crate::expr::functions::{parse_duration, Func, FUNCTION_NAMES};
use crate::expr::ExprError;
use crate::value::{DataType, Value};

use super::operators::coerce;
use super::{Compiler, Ctx, Typed};

const NONDETERMINISTIC: &str = "results must be deterministic (re-running a dataflow over the \
same events must give the same output); use the event's timestamp field instead";

impl Compiler<'_> {
    /// Compiles the arguments and checks a built-in function call.
    pub(super) fn call(
        &self,
        func: Func,
        args: &[&ast::Expr],
        c: &Ctx<'_>,
    ) -> Result<Typed, ExprError> {
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

    pub(super) fn function(&self, f: &ast::Function, c: &Ctx<'_>) -> Result<Typed, ExprError> {
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
}
