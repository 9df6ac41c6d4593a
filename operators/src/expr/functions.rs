//! Built-in scalar functions: their names, type rules and implementations, plus the helpers
//! they share (LIKE patterns, duration strings, timestamp formatting).

use std::sync::Arc;

use chrono::{DateTime, Datelike, SecondsFormat, Timelike, Utc};

use crate::value::{DataType, Value};

use super::eval::{as_str, describe, type_error};
use super::EvalError;

/// A built-in function evaluated over already-evaluated arguments. (`coalesce`, `if` and
/// `CASE` are tree nodes instead, because they evaluate their arguments lazily.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Func {
    Lower,
    Upper,
    Trim,
    LTrim,
    RTrim,
    Contains,
    StartsWith,
    EndsWith,
    Length,
    /// `concat(...)`: NULL arguments are skipped.
    Concat,
    /// The `||` operator: a NULL operand makes the result NULL.
    ConcatOp,
    Split,
    Substring,
    Abs,
    Round,
    Floor,
    Ceil,
    Sqrt,
    Greatest,
    Least,
    Year,
    Month,
    Day,
    Hour,
    Minute,
    Second,
    DayOfWeek,
    WindowStart,
    WindowEnd,
}

/// Names of the functions users can call, for "unknown function" messages.
pub(crate) const FUNCTION_NAMES: &str = "lower, upper, trim, ltrim, rtrim, contains, \
starts_with, ends_with, length, concat, split, substring, abs, round, floor, ceil, sqrt, \
greatest, least, coalesce, if, year, month, day, hour, minute, second, day_of_week, \
window_start, window_end";

impl Func {
    /// Looks a function up by (lower-case) name.
    pub(crate) fn lookup(name: &str) -> Option<Func> {
        Some(match name {
            "lower" => Func::Lower,
            "upper" => Func::Upper,
            "trim" => Func::Trim,
            "ltrim" => Func::LTrim,
            "rtrim" => Func::RTrim,
            "contains" => Func::Contains,
            "starts_with" => Func::StartsWith,
            "ends_with" => Func::EndsWith,
            "length" | "len" | "char_length" => Func::Length,
            "concat" => Func::Concat,
            "split" => Func::Split,
            "substring" | "substr" => Func::Substring,
            "abs" => Func::Abs,
            "round" => Func::Round,
            "floor" => Func::Floor,
            "ceil" | "ceiling" => Func::Ceil,
            "sqrt" => Func::Sqrt,
            "greatest" => Func::Greatest,
            "least" => Func::Least,
            "year" => Func::Year,
            "month" => Func::Month,
            "day" => Func::Day,
            "hour" => Func::Hour,
            "minute" => Func::Minute,
            "second" => Func::Second,
            "day_of_week" | "dayofweek" | "isodow" => Func::DayOfWeek,
            "window_start" => Func::WindowStart,
            "window_end" => Func::WindowEnd,
            _ => return None,
        })
    }

    /// The name used in messages.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Func::Lower => "lower",
            Func::Upper => "upper",
            Func::Trim => "trim",
            Func::LTrim => "ltrim",
            Func::RTrim => "rtrim",
            Func::Contains => "contains",
            Func::StartsWith => "starts_with",
            Func::EndsWith => "ends_with",
            Func::Length => "length",
            Func::Concat => "concat",
            Func::ConcatOp => "||",
            Func::Split => "split",
            Func::Substring => "substring",
            Func::Abs => "abs",
            Func::Round => "round",
            Func::Floor => "floor",
            Func::Ceil => "ceil",
            Func::Sqrt => "sqrt",
            Func::Greatest => "greatest",
            Func::Least => "least",
            Func::Year => "year",
            Func::Month => "month",
            Func::Day => "day",
            Func::Hour => "hour",
            Func::Minute => "minute",
            Func::Second => "second",
            Func::DayOfWeek => "day_of_week",
            Func::WindowStart => "window_start",
            Func::WindowEnd => "window_end",
        }
    }

    /// Accepted argument counts (min, max).
    pub(crate) fn arity(self) -> (usize, usize) {
        match self {
            Func::Lower | Func::Upper | Func::Trim | Func::LTrim | Func::RTrim => (1, 1),
            Func::Contains | Func::StartsWith | Func::EndsWith | Func::Split => (2, 2),
            Func::Length | Func::Abs | Func::Floor | Func::Ceil | Func::Sqrt => (1, 1),
            Func::Concat | Func::Greatest | Func::Least => (1, usize::MAX),
            Func::ConcatOp => (2, 2),
            Func::Substring => (2, 3),
            Func::Round => (1, 2),
            Func::Year
            | Func::Month
            | Func::Day
            | Func::Hour
            | Func::Minute
            | Func::Second
            | Func::DayOfWeek => (1, 1),
            Func::WindowStart | Func::WindowEnd => (2, 2),
        }
    }

    /// The result type for the given argument types, or a message saying which argument
    /// is wrong. Returns the type every argument should be coerced to, when it matters
    /// (`greatest`/`least` over ints and floats compute in float).
    pub(crate) fn check(
        self,
        args: &[DataType],
    ) -> Result<(DataType, Option<DataType>), (usize, String)> {
        use DataType as T;
        let want = |i: usize, ok: &dyn Fn(&T) -> bool, what: &str| -> Result<(), (usize, String)> {
            let t = &args[i];
            if matches!(t, T::Null | T::Any) || ok(t) {
                Ok(())
            } else {
                Err((
                    i,
                    format!(
                        "argument {} of {}() must be {what}, found {t}",
                        i + 1,
                        self.name()
                    ),
                ))
            }
        };
        let string = |t: &T| *t == T::String;
        let int = |t: &T| *t == T::Int;
        let numeric = |t: &T| t.is_numeric();
        let time = |t: &T| matches!(t, T::Timestamp | T::Int);
        let same_numeric = |t: &T| match t {
            T::Null => T::Null,
            T::Any => T::Any,
            t => t.clone(),
        };
        Ok(match self {
            Func::Lower | Func::Upper | Func::Trim | Func::LTrim | Func::RTrim => {
                want(0, &string, "a string")?;
                (T::String, None)
            }
            Func::Contains | Func::StartsWith | Func::EndsWith => {
                want(0, &string, "a string")?;
                want(1, &string, "a string")?;
                (T::Bool, None)
            }
            Func::Split => {
                want(0, &string, "a string")?;
                want(1, &string, "a string")?;
                (T::List(Box::new(T::String)), None)
            }
            Func::Length => {
                want(
                    0,
                    &|t| {
                        matches!(
                            t,
                            T::String | T::List(_) | T::Vector(_) | T::Map(_) | T::Bytes
                        )
                    },
                    "a string, list, map, bytes or vector",
                )?;
                (T::Int, None)
            }
            Func::Concat | Func::ConcatOp => {
                for i in 0..args.len() {
                    want(
                        i,
                        &|t| matches!(t, T::String | T::Int | T::Float | T::Bool | T::Timestamp),
                        "a string, number, bool or timestamp",
                    )?;
                }
                (T::String, None)
            }
            Func::Substring => {
                want(0, &string, "a string")?;
                for i in 1..args.len() {
                    want(i, &int, "an int")?;
                }
                (T::String, None)
            }
            Func::Abs | Func::Floor | Func::Ceil => {
                want(0, &numeric, "a number")?;
                (same_numeric(&args[0]), None)
            }
            Func::Round => {
                want(0, &numeric, "a number")?;
                if args.len() > 1 {
                    want(1, &int, "an int (number of digits)")?;
                }
                (same_numeric(&args[0]), None)
            }
            Func::Sqrt => {
                want(0, &numeric, "a number")?;
                (T::Float, None)
            }
            Func::Greatest | Func::Least => {
                let mut ty = T::Null;
                for (i, t) in args.iter().enumerate() {
                    ty = super::compile::unify(&ty, t).ok_or_else(|| {
                        (
                            i,
                            format!(
                                "arguments of {}() must have one type, found {ty} and {t}",
                                self.name()
                            ),
                        )
                    })?;
                }
                (ty.clone(), Some(ty))
            }
            Func::Year
            | Func::Month
            | Func::Day
            | Func::Hour
            | Func::Minute
            | Func::Second
            | Func::DayOfWeek => {
                want(0, &time, "a timestamp")?;
                (T::Int, None)
            }
            Func::WindowStart | Func::WindowEnd => {
                want(0, &time, "a timestamp")?;
                want(
                    1,
                    &int,
                    "a window size (int milliseconds or a duration like '10s')",
                )?;
                (T::Timestamp, None)
            }
        })
    }

    /// Applies the function to evaluated arguments (arity and static types already checked).
    pub(crate) fn apply(self, args: &[Value]) -> Result<Value, EvalError> {
        let name = self.name();
        let arg = |i: usize| args.get(i).unwrap_or(&Value::Null);
        match self {
            Func::Concat => {
                let mut out = String::new();
                for a in args {
                    push_text(&mut out, a, name)?;
                }
                return Ok(Value::str(&out));
            }
            Func::Greatest | Func::Least => {
                let mut best: Option<&Value> = None;
                for a in args.iter().filter(|a| !a.is_null()) {
                    best = Some(match best {
                        None => a,
                        Some(b) => {
                            let o = super::eval::compare(a, b)?;
                            let better = match self {
                                Func::Greatest => o == Some(std::cmp::Ordering::Greater),
                                _ => o == Some(std::cmp::Ordering::Less),
                            };
                            if better {
                                a
                            } else {
                                b
                            }
                        }
                    });
                }
                return Ok(best.cloned().unwrap_or(Value::Null));
            }
            _ => {}
        }
        // Every other function is NULL if any argument is NULL.
        if args.iter().any(Value::is_null) {
            return Ok(Value::Null);
        }
        let s =
            |i: usize| -> Result<&str, EvalError> { Ok(as_str(arg(i), name)?.unwrap_or_default()) };
        let int = |i: usize| -> Result<i64, EvalError> {
            match arg(i) {
                Value::Int(v) => Ok(*v),
                other => Err(type_error(format!(
                    "{name}() expects an int, found {}",
                    describe(other)
                ))),
            }
        };
        let ts = |i: usize| -> Result<i64, EvalError> {
            match arg(i) {
                Value::Int(v) | Value::Timestamp(v) => Ok(*v),
                other => Err(type_error(format!(
                    "{name}() expects a timestamp, found {}",
                    describe(other)
                ))),
            }
        };
        let not_number =
            |v: &Value| type_error(format!("{name}() expects a number, found {}", describe(v)));
        Ok(match self {
            Func::Lower => Value::str(&s(0)?.to_lowercase()),
            Func::Upper => Value::str(&s(0)?.to_uppercase()),
            Func::Trim => Value::str(s(0)?.trim()),
            Func::LTrim => Value::str(s(0)?.trim_start()),
            Func::RTrim => Value::str(s(0)?.trim_end()),
            Func::Contains => Value::Bool(s(0)?.contains(s(1)?)),
            Func::StartsWith => Value::Bool(s(0)?.starts_with(s(1)?)),
            Func::EndsWith => Value::Bool(s(0)?.ends_with(s(1)?)),
            Func::Length => Value::Int(match arg(0) {
                Value::Str(s) => s.chars().count() as i64,
                Value::List(l) => l.len() as i64,
                Value::Vector(v) => v.len() as i64,
                Value::Map(m) => m.len() as i64,
                Value::Bytes(b) => b.len() as i64,
                other => {
                    return Err(type_error(format!(
                        "length() expects a string, list, map, bytes or vector, found {}",
                        describe(other)
                    )))
                }
            }),
            Func::ConcatOp => {
                let mut out = String::new();
                push_text(&mut out, arg(0), name)?;
                push_text(&mut out, arg(1), name)?;
                Value::str(&out)
            }
            Func::Split => {
                let sep = s(1)?;
                if sep.is_empty() {
                    return Err(EvalError::InvalidArgument {
                        function: name,
                        message: "the separator must not be empty".into(),
                    });
                }
                let parts: Vec<Value> = s(0)?.split(sep).map(Value::str).collect();
                Value::List(Arc::from(parts))
            }
            Func::Substring => {
                let text = s(0)?;
                // SQL positions are 1-based; characters before position 1 are "virtual".
                let start = int(1)?;
                let end = match args.len() {
                    3 => {
                        let len = int(2)?;
                        if len < 0 {
                            return Err(EvalError::InvalidArgument {
                                function: name,
                                message: format!("negative length {len}"),
                            });
                        }
                        start.saturating_add(len)
                    }
                    _ => i64::MAX,
                };
                let from = start.max(1);
                if end <= from {
                    Value::str("")
                } else {
                    let skip = usize::try_from(from - 1).unwrap_or(usize::MAX);
                    let take = usize::try_from(end - from).unwrap_or(usize::MAX);
                    let out: String = text.chars().skip(skip).take(take).collect();
                    Value::str(&out)
                }
            }
            Func::Abs => match arg(0) {
                Value::Int(i) => Value::Int(
                    i.checked_abs()
                        .ok_or(EvalError::Overflow { operation: "abs" })?,
                ),
                Value::Float(f) => Value::Float(f.abs()),
                other => return Err(not_number(other)),
            },
            Func::Floor => match arg(0) {
                Value::Int(i) => Value::Int(*i),
                Value::Float(f) => Value::Float(f.floor()),
                other => return Err(not_number(other)),
            },
            Func::Ceil => match arg(0) {
                Value::Int(i) => Value::Int(*i),
                Value::Float(f) => Value::Float(f.ceil()),
                other => return Err(not_number(other)),
            },
            Func::Round => {
                let digits = if args.len() > 1 { int(1)? } else { 0 };
                match arg(0) {
                    Value::Int(i) => Value::Int(round_int(*i, digits)?),
                    Value::Float(f) => Value::Float(round_float(*f, digits)),
                    other => return Err(not_number(other)),
                }
            }
            Func::Sqrt => {
                let x = arg(0).as_f64().ok_or_else(|| not_number(arg(0)))?;
                if x < 0.0 {
                    return Err(EvalError::InvalidArgument {
                        function: name,
                        message: format!("square root of negative number {x}"),
                    });
                }
                Value::Float(x.sqrt())
            }
            Func::Year
            | Func::Month
            | Func::Day
            | Func::Hour
            | Func::Minute
            | Func::Second
            | Func::DayOfWeek => {
                let t = ts(0)?;
                let d = datetime(t).ok_or_else(|| EvalError::InvalidArgument {
                    function: name,
                    message: format!("timestamp {t} ms is out of the supported date range"),
                })?;
                Value::Int(match self {
                    Func::Year => d.year() as i64,
                    Func::Month => d.month() as i64,
                    Func::Day => d.day() as i64,
                    Func::Hour => d.hour() as i64,
                    Func::Minute => d.minute() as i64,
                    Func::Second => d.second() as i64,
                    _ => d.weekday().number_from_monday() as i64,
                })
            }
            Func::WindowStart | Func::WindowEnd => {
                let t = ts(0)?;
                let size = int(1)?;
                if size <= 0 {
                    return Err(EvalError::InvalidArgument {
                        function: name,
                        message: format!("window size must be positive, found {size} ms"),
                    });
                }
                let overflow = EvalError::Overflow { operation: name };
                let start = t
                    .div_euclid(size)
                    .checked_mul(size)
                    .ok_or(overflow.clone())?;
                Value::Timestamp(if self == Func::WindowStart {
                    start
                } else {
                    start.checked_add(size).ok_or(overflow)?
                })
            }
            Func::Concat | Func::Greatest | Func::Least => Value::Null,
        })
    }
}

fn push_text(out: &mut String, v: &Value, function: &'static str) -> Result<(), EvalError> {
    use std::fmt::Write as _;
    match v {
        Value::Null => {}
        Value::Str(s) => out.push_str(s),
        Value::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Value::Float(f) => {
            let _ = write!(out, "{f}");
        }
        Value::Bool(b) => {
            let _ = write!(out, "{b}");
        }
        Value::Timestamp(t) => match format_timestamp(*t) {
            Some(s) => out.push_str(&s),
            None => {
                let _ = write!(out, "{t}");
            }
        },
        other => {
            return Err(type_error(format!(
                "{function} cannot join {}",
                describe(other)
            )))
        }
    }
    Ok(())
}

fn round_float(f: f64, digits: i64) -> f64 {
    let digits = digits.clamp(-308, 308) as i32;
    let scale = 10f64.powi(digits.abs());
    if digits >= 0 {
        let r = (f * scale).round() / scale;
        // Scaling overflows for huge values, which have no fractional digits anyway.
        if r.is_finite() {
            r
        } else {
            f
        }
    } else {
        (f / scale).round() * scale
    }
}

fn round_int(i: i64, digits: i64) -> Result<i64, EvalError> {
    if digits >= 0 {
        return Ok(i);
    }
    if digits < -18 {
        return Ok(0);
    }
    let scale = 10i64.pow(digits.unsigned_abs() as u32);
    let half = scale / 2;
    let rem = i % scale;
    let base = i - rem;
    let overflow = EvalError::Overflow { operation: "round" };
    if rem.abs() >= half {
        if i >= 0 {
            base.checked_add(scale).ok_or(overflow)
        } else {
            base.checked_sub(scale).ok_or(overflow)
        }
    } else {
        Ok(base)
    }
}

/// A timestamp (ms since the epoch) as a UTC date-time, if chrono can represent it.
pub(crate) fn datetime(ms: i64) -> Option<DateTime<Utc>> {
    DateTime::<Utc>::from_timestamp_millis(ms)
}

/// Formats a timestamp as RFC 3339 with milliseconds, e.g. `2024-01-02T03:04:05.000Z`.
pub(crate) fn format_timestamp(ms: i64) -> Option<String> {
    datetime(ms).map(|d| d.to_rfc3339_opts(SecondsFormat::Millis, true))
}

/// Parses a duration string such as `250ms`, `10s`, `5m`, `1h`, `1d` to milliseconds.
pub(crate) fn parse_duration(text: &str) -> Result<i64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let unit_ms: i64 = match unit.trim().to_ascii_lowercase().as_str() {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "" => {
            return Err(format!(
            "duration `{text}` has no unit; write e.g. '{t}ms' or '{t}s' (units: ms, s, m, h, d)"
        ))
        }
        other => {
            return Err(format!(
                "duration `{text}` has unknown unit `{other}` (units: ms, s, m, h, d)"
            ))
        }
    };
    let n: i64 = digits.parse().map_err(|_| {
        format!("duration `{text}` must be a whole number followed by a unit, e.g. '10s'")
    })?;
    let ms = n
        .checked_mul(unit_ms)
        .ok_or_else(|| format!("duration `{text}` is too large"))?;
    if ms <= 0 {
        return Err(format!("duration `{text}` must be positive"));
    }
    Ok(ms)
}

/// One element of a LIKE pattern.
#[derive(Clone, Debug, PartialEq)]
enum LikeToken {
    /// `%`: any run of characters.
    AnyRun,
    /// `_`: exactly one character.
    One,
    Char(char),
}

/// A compiled LIKE pattern (`%` any run, `_` one character; no escape character).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct LikePattern {
    tokens: Vec<LikeToken>,
}

impl LikePattern {
    pub(crate) fn new(pattern: &str) -> LikePattern {
        let mut tokens = Vec::with_capacity(pattern.len());
        for c in pattern.chars() {
            let t = match c {
                '%' => LikeToken::AnyRun,
                '_' => LikeToken::One,
                c => LikeToken::Char(c),
            };
            // Consecutive `%` are equivalent to one.
            if !(t == LikeToken::AnyRun && tokens.last() == Some(&LikeToken::AnyRun)) {
                tokens.push(t);
            }
        }
        LikePattern { tokens }
    }

    /// Whole-string match, iterative with single backtrack point: O(len·pattern), no
    /// allocation, no recursion.
    pub(crate) fn matches(&self, text: &str) -> bool {
        let pat = &self.tokens;
        let (mut t, mut p) = (0usize, 0usize);
        let mut star: Option<(usize, usize)> = None;
        loop {
            if p < pat.len() {
                let rest = &text[t..];
                match pat[p] {
                    LikeToken::AnyRun => {
                        star = Some((p + 1, t));
                        p += 1;
                        continue;
                    }
                    LikeToken::One => {
                        if let Some(c) = rest.chars().next() {
                            t += c.len_utf8();
                            p += 1;
                            continue;
                        }
                    }
                    LikeToken::Char(c) => {
                        if rest.starts_with(c) {
                            t += c.len_utf8();
                            p += 1;
                            continue;
                        }
                    }
                }
            } else if t == text.len() {
                return true;
            }
            match star {
                Some((sp, st)) => match text[st..].chars().next() {
                    Some(c) => {
                        let nt = st + c.len_utf8();
                        star = Some((sp, nt));
                        p = sp;
                        t = nt;
                    }
                    None => return false,
                },
                None => return false,
            }
        }
    }
}
