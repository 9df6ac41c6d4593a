use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::schema::Field;

fn schema() -> Schema {
    Schema::new(vec![
        Field::required("user", DataType::String),
        Field::required("ts", DataType::Timestamp),
        Field::required("a", DataType::Int),
        Field::required("b", DataType::Int),
        Field::required("x", DataType::Float),
        Field::optional("flag", DataType::Bool, Value::Null),
        Field::optional("n", DataType::Int, Value::Null),
        Field::optional(
            "tags",
            DataType::List(Box::new(DataType::String)),
            Value::Null,
        ),
        Field::optional("payload", DataType::Any, Value::Null),
        Field::optional("s", DataType::String, Value::Null),
    ])
}

/// 2024-03-15T13:45:30.250Z, a Friday.
const TS: i64 = 1_710_510_330_250;

fn row() -> Vec<Value> {
    vec![
        Value::str("alice"),
        Value::Timestamp(TS),
        Value::Int(7),
        Value::Int(3),
        Value::Float(2.5),
        Value::Bool(true),
        Value::Null,
        Value::List(Arc::from(vec![Value::str("x"), Value::str("y")])),
        Value::Int(5),
        Value::str("  Hello World  "),
    ]
}

fn eval(text: &str) -> Result<Value, EvalError> {
    let e = Expr::compile(text, &schema()).unwrap_or_else(|e| panic!("{text}: {e}"));
    e.eval(&row())
}

fn ok(text: &str) -> Value {
    eval(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn err(text: &str) -> ExprError {
    match Expr::compile(text, &schema()) {
        Ok(e) => panic!("{text} compiled to {e:?}"),
        Err(e) => e,
    }
}

fn ty(text: &str) -> DataType {
    Expr::compile(text, &schema())
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .data_type()
        .clone()
}

fn s(v: &str) -> Value {
    Value::str(v)
}

#[test]
fn literals() {
    assert_eq!(ok("42"), Value::Int(42));
    assert_eq!(ok("-9223372036854775808"), Value::Int(i64::MIN));
    assert_eq!(ok("1.5"), Value::Float(1.5));
    assert_eq!(ok("'hi'"), s("hi"));
    assert_eq!(ok("'it''s'"), s("it's"));
    assert_eq!(ok("TRUE"), Value::Bool(true));
    assert_eq!(ok("false"), Value::Bool(false));
    assert_eq!(ok("NULL"), Value::Null);
    assert_eq!(ty("NULL"), DataType::Null);
    assert_eq!(ok("INTERVAL '5' SECOND"), Value::Int(5_000));
    assert_eq!(ok("INTERVAL '10m'"), Value::Int(600_000));
    assert_eq!(
        ok("TIMESTAMP '1970-01-01T00:00:01Z'"),
        Value::Timestamp(1000)
    );
}

#[test]
fn fields() {
    let e = Expr::compile("a", &schema()).unwrap();
    assert_eq!(e.as_column(), Some(2));
    assert_eq!(e.data_type(), &DataType::Int);
    assert_eq!(e.source(), "a");
    assert_eq!(e.eval(&row()).unwrap(), Value::Int(7));
    assert_eq!(ok("\"user\""), s("alice"));
    assert_eq!(Expr::compile("a + 1", &schema()).unwrap().as_column(), None);
    // A short row reads as NULL rather than panicking.
    assert_eq!(e.eval(&[]).unwrap(), Value::Null);
}

#[test]
fn arithmetic() {
    assert_eq!(ok("a + b"), Value::Int(10));
    assert_eq!(ok("a - b"), Value::Int(4));
    assert_eq!(ok("a * b"), Value::Int(21));
    assert_eq!(ok("a / b"), Value::Int(2));
    assert_eq!(ok("-7 / 2"), Value::Int(-3));
    assert_eq!(ok("a % b"), Value::Int(1));
    assert_eq!(ok("a + x"), Value::Float(9.5));
    assert_eq!(ok("x * 2"), Value::Float(5.0));
    assert_eq!(ok("a / 2.0"), Value::Float(3.5));
    assert_eq!(ok("7.5 % 2"), Value::Float(1.5));
    assert_eq!(ok("-a"), Value::Int(-7));
    assert_eq!(ok("+a"), Value::Int(7));
    assert_eq!(ok("-x"), Value::Float(-2.5));
    assert_eq!(ok("2 + 3 * 4"), Value::Int(14));
    assert_eq!(ok("(2 + 3) * 4"), Value::Int(20));
    assert_eq!(ty("a + b"), DataType::Int);
    assert_eq!(ty("a + x"), DataType::Float);
    assert_eq!(ok("ts + 1000"), Value::Timestamp(TS + 1000));
    assert_eq!(ok("1000 + ts"), Value::Timestamp(TS + 1000));
    assert_eq!(ok("ts - INTERVAL '1' SECOND"), Value::Timestamp(TS - 1000));
    assert_eq!(ok("ts - (ts - 250)"), Value::Int(250));
    assert_eq!(ty("ts - ts"), DataType::Int);
    assert_eq!(ty("ts + 1"), DataType::Timestamp);
    assert_eq!(ok("payload + 1"), Value::Int(6));
    assert_eq!(ty("payload + 1"), DataType::Any);
}

#[test]
fn runtime_errors() {
    assert_eq!(eval("a / 0"), Err(EvalError::DivisionByZero));
    assert_eq!(eval("a % 0"), Err(EvalError::DivisionByZero));
    assert_eq!(eval("x / 0"), Err(EvalError::DivisionByZero));
    assert_eq!(eval("x / 0.0"), Err(EvalError::DivisionByZero));
    assert_eq!(eval("x % 0.0"), Err(EvalError::DivisionByZero));
    assert!(matches!(
        eval("9223372036854775807 + a"),
        Err(EvalError::Overflow { .. })
    ));
    assert!(matches!(
        eval("-9223372036854775808 - 1"),
        Err(EvalError::Overflow { .. })
    ));
    assert!(matches!(
        eval("-9223372036854775808 / -1"),
        Err(EvalError::Overflow { .. })
    ));
    assert_eq!(ok("-9223372036854775808 % -1"), Value::Int(0));
    assert!(matches!(
        eval("-(-9223372036854775808)"),
        Err(EvalError::Overflow { .. })
    ));
    assert!(matches!(
        eval("abs(-9223372036854775808)"),
        Err(EvalError::Overflow { .. })
    ));
    assert!(matches!(
        eval("4611686018427387904 * 2"),
        Err(EvalError::Overflow { .. })
    ));
    let e = eval("CAST('abc' AS int)").unwrap_err();
    assert_eq!(
        e,
        EvalError::Cast {
            from: "string".into(),
            to: "int".into(),
            value: "string \"abc\"".into()
        }
    );
    assert_eq!(e.to_string(), "cannot cast string \"abc\" (string) to int");
    assert!(matches!(
        eval("CAST(1e300 AS int)"),
        Err(EvalError::Cast { .. })
    ));
    assert!(matches!(
        eval("CAST('yesterday' AS timestamp)"),
        Err(EvalError::Cast { .. })
    ));
    assert!(matches!(
        eval("sqrt(-1)"),
        Err(EvalError::InvalidArgument {
            function: "sqrt",
            ..
        })
    ));
    assert!(matches!(
        eval("split(user, '')"),
        Err(EvalError::InvalidArgument {
            function: "split",
            ..
        })
    ));
    assert_eq!(EvalError::DivisionByZero.to_string(), "division by zero");
    // `any` fields are checked at run time.
    assert!(matches!(
        eval("flag AND payload"),
        Err(EvalError::Type { .. })
    ));
    let e = Expr::compile("payload + 1", &schema()).unwrap();
    let mut r = row();
    r[8] = s("five");
    assert!(matches!(e.eval(&r), Err(EvalError::Type { .. })));
}

#[test]
fn comparisons() {
    assert_eq!(ok("a = 7"), Value::Bool(true));
    assert_eq!(ok("a <> 7"), Value::Bool(false));
    assert_eq!(ok("a != 8"), Value::Bool(true));
    assert_eq!(ok("a < 8"), Value::Bool(true));
    assert_eq!(ok("a <= 7"), Value::Bool(true));
    assert_eq!(ok("a > 7"), Value::Bool(false));
    assert_eq!(ok("a >= 7"), Value::Bool(true));
    assert_eq!(ok("8 > a"), Value::Bool(true));
    assert_eq!(ok("a > x"), Value::Bool(true));
    assert_eq!(ok("7 = 7.0"), Value::Bool(true));
    assert_eq!(ok("-0.0 = 0.0"), Value::Bool(true));
    assert_eq!(ok("user = 'alice'"), Value::Bool(true));
    assert_eq!(ok("user < 'bob'"), Value::Bool(true));
    assert_eq!(ok("flag = true"), Value::Bool(true));
    assert_eq!(ok("ts > 0"), Value::Bool(true));
    assert_eq!(ok("ts = ts"), Value::Bool(true));
    assert_eq!(
        ok("ts > TIMESTAMP '2024-01-01T00:00:00Z'"),
        Value::Bool(true)
    );
    assert_eq!(ok("a BETWEEN 1 AND 7"), Value::Bool(true));
    assert_eq!(ok("a BETWEEN 8 AND 9"), Value::Bool(false));
    assert_eq!(ok("a NOT BETWEEN 8 AND 9"), Value::Bool(true));
    assert_eq!(ok("a IN (1, 7, 9)"), Value::Bool(true));
    assert_eq!(ok("a IN (1, 2)"), Value::Bool(false));
    assert_eq!(ok("a NOT IN (1, 2)"), Value::Bool(true));
    assert_eq!(ok("a IN (b + 4)"), Value::Bool(true));
    assert_eq!(ok("user IN ('bob', 'alice')"), Value::Bool(true));
    assert_eq!(ok("n IS NULL"), Value::Bool(true));
    assert_eq!(ok("a IS NULL"), Value::Bool(false));
    assert_eq!(ok("n IS NOT NULL"), Value::Bool(false));
    assert_eq!(ok("flag IS TRUE"), Value::Bool(true));
    assert_eq!(ok("flag IS FALSE"), Value::Bool(false));
    assert_eq!(ok("flag IS NOT TRUE"), Value::Bool(false));
    assert_eq!(ok("NULL IS NOT FALSE"), Value::Bool(true));
    assert_eq!(ok("NULL IS UNKNOWN"), Value::Bool(true));
    assert_eq!(ok("n IS DISTINCT FROM NULL"), Value::Bool(false));
    assert_eq!(ok("a IS DISTINCT FROM NULL"), Value::Bool(true));
    assert_eq!(ok("a IS NOT DISTINCT FROM 7"), Value::Bool(true));
}

#[test]
fn like() {
    assert_eq!(ok("user LIKE 'al%'"), Value::Bool(true));
    assert_eq!(ok("user LIKE '%ice'"), Value::Bool(true));
    assert_eq!(ok("user LIKE '%lic%'"), Value::Bool(true));
    assert_eq!(ok("user LIKE 'a_ice'"), Value::Bool(true));
    assert_eq!(ok("user LIKE 'a_ce'"), Value::Bool(false));
    assert_eq!(ok("user LIKE 'alice'"), Value::Bool(true));
    assert_eq!(ok("user LIKE 'Alice'"), Value::Bool(false));
    assert_eq!(ok("user NOT LIKE 'b%'"), Value::Bool(true));
    assert_eq!(ok("user LIKE '%'"), Value::Bool(true));
    assert_eq!(ok("'' LIKE '%'"), Value::Bool(true));
    assert_eq!(ok("'' LIKE '_'"), Value::Bool(false));
    assert_eq!(ok("'aaab' LIKE '%a%ab'"), Value::Bool(true));
    assert_eq!(ok("'héllo' LIKE 'h_llo'"), Value::Bool(true));
    assert_eq!(ok("'abc' LIKE '%%c'"), Value::Bool(true));
    assert_eq!(ok("'abc' LIKE user"), Value::Bool(false));
    assert_eq!(ok("NULL LIKE '%'"), Value::Null);
    assert_eq!(ok("'abc' LIKE NULL"), Value::Null);
}

#[test]
fn null_semantics_truth_tables() {
    // (left, right, AND, OR) over TRUE, FALSE, NULL.
    let vals = ["TRUE", "FALSE", "NULL"];
    let and = [
        ["TRUE", "FALSE", "NULL"],
        ["FALSE", "FALSE", "FALSE"],
        ["NULL", "FALSE", "NULL"],
    ];
    let or = [
        ["TRUE", "TRUE", "TRUE"],
        ["TRUE", "FALSE", "NULL"],
        ["TRUE", "NULL", "NULL"],
    ];
    for (i, l) in vals.iter().enumerate() {
        for (j, r) in vals.iter().enumerate() {
            assert_eq!(ok(&format!("{l} AND {r}")), ok(and[i][j]), "{l} AND {r}");
            assert_eq!(ok(&format!("{l} OR {r}")), ok(or[i][j]), "{l} OR {r}");
        }
    }
    assert_eq!(ok("NOT TRUE"), Value::Bool(false));
    assert_eq!(ok("NOT FALSE"), Value::Bool(true));
    assert_eq!(ok("NOT NULL"), Value::Null);
    assert_eq!(ok("n + 1"), Value::Null);
    assert_eq!(ok("n * x"), Value::Null);
    assert_eq!(ok("-n"), Value::Null);
    assert_eq!(ok("n = 1"), Value::Null);
    assert_eq!(ok("n = NULL"), Value::Null);
    assert_eq!(ok("n < a"), Value::Null);
    assert_eq!(ok("n BETWEEN 1 AND 2"), Value::Null);
    assert_eq!(ok("a BETWEEN n AND 2"), Value::Bool(false));
    assert_eq!(ok("a BETWEEN n AND 9"), Value::Null);
    assert_eq!(ok("n IN (1, 2)"), Value::Null);
    assert_eq!(ok("a IN (1, NULL)"), Value::Null);
    assert_eq!(ok("a IN (7, NULL)"), Value::Bool(true));
    assert_eq!(ok("a NOT IN (1, NULL)"), Value::Null);
    assert_eq!(ok("n / 0"), Value::Null);
    assert_eq!(ok("'a' || NULL"), Value::Null);
    assert_eq!(ok("concat('a', NULL, 'b')"), s("ab"));
    assert_eq!(ok("lower(NULL)"), Value::Null);
    assert_eq!(ok("CAST(NULL AS int)"), Value::Null);
    // eval_bool: NULL counts as false.
    let e = Expr::compile("n > 1", &schema()).unwrap();
    assert!(!e.eval_bool(&row()).unwrap());
    let e = Expr::compile("a > 1", &schema()).unwrap();
    assert!(e.eval_bool(&row()).unwrap());
    let e = Expr::compile("payload", &schema()).unwrap();
    assert!(matches!(e.eval_bool(&row()), Err(EvalError::Type { .. })));
}

#[test]
fn string_functions() {
    assert_eq!(ok("lower('HeLLo')"), s("hello"));
    assert_eq!(ok("UPPER(user)"), s("ALICE"));
    assert_eq!(ok("contains(user, 'lic')"), Value::Bool(true));
    assert_eq!(ok("contains(user, 'bob')"), Value::Bool(false));
    assert_eq!(ok("starts_with(user, 'al')"), Value::Bool(true));
    assert_eq!(ok("ends_with(user, 'ce')"), Value::Bool(true));
    assert_eq!(ok("ends_with(user, 'al')"), Value::Bool(false));
    assert_eq!(ok("length('héllo')"), Value::Int(5));
    assert_eq!(ok("length(tags)"), Value::Int(2));
    assert_eq!(
        ok("concat(user, '-', a, '-', x, '-', flag)"),
        s("alice-7-2.5-true")
    );
    assert_eq!(ok("user || '!' || a"), s("alice!7"));
    assert_eq!(
        ok("split('a,b,,c', ',')"),
        Value::List(Arc::from(vec![s("a"), s("b"), s(""), s("c")]))
    );
    assert_eq!(
        ty("split(user, ',')"),
        DataType::List(Box::new(DataType::String))
    );
    assert_eq!(ok("trim(s)"), s("Hello World"));
    assert_eq!(ok("ltrim(s)"), s("Hello World  "));
    assert_eq!(ok("rtrim(s)"), s("  Hello World"));
    assert_eq!(ok("TRIM(LEADING FROM s)"), s("Hello World  "));
    assert_eq!(ok("substring('hello', 2, 3)"), s("ell"));
    assert_eq!(ok("substring('hello', 2)"), s("ello"));
    assert_eq!(ok("SUBSTRING('hello' FROM 0 FOR 2)"), s("h"));
    assert_eq!(ok("substring('hello', 9)"), s(""));
    assert_eq!(ok("substr('héllo', 2, 1)"), s("é"));
    assert_eq!(ok("concat(ts)"), s("2024-03-15T13:45:30.250Z"));
}

#[test]
fn numeric_functions() {
    assert_eq!(ok("abs(-3)"), Value::Int(3));
    assert_eq!(ok("abs(-2.5)"), Value::Float(2.5));
    assert_eq!(ok("round(2.5)"), Value::Float(3.0));
    assert_eq!(ok("round(-2.5)"), Value::Float(-3.0));
    assert_eq!(ok("round(2.71828, 2)"), Value::Float(2.72));
    assert_eq!(ok("round(1234.5, -2)"), Value::Float(1200.0));
    assert_eq!(ok("round(7)"), Value::Int(7));
    assert_eq!(ok("round(1250, -2)"), Value::Int(1300));
    assert_eq!(ok("round(-1250, -2)"), Value::Int(-1300));
    assert_eq!(ok("round(1249, -2)"), Value::Int(1200));
    assert_eq!(ok("floor(2.7)"), Value::Float(2.0));
    assert_eq!(ok("floor(-2.5)"), Value::Float(-3.0));
    assert_eq!(ok("FLOOR(a)"), Value::Int(7));
    assert_eq!(ok("ceil(2.1)"), Value::Float(3.0));
    assert_eq!(ok("CEIL(a)"), Value::Int(7));
    assert_eq!(ok("sqrt(16)"), Value::Float(4.0));
    assert_eq!(ok("greatest(1, a, 3)"), Value::Int(7));
    assert_eq!(ok("least(1, a, 3)"), Value::Int(1));
    assert_eq!(ok("greatest(1, 2.5)"), Value::Float(2.5));
    assert_eq!(ok("least(1, 2.5)"), Value::Float(1.0));
    assert_eq!(ty("least(1, 2.5)"), DataType::Float);
    assert_eq!(ok("greatest(n, 2)"), Value::Int(2));
    assert_eq!(ok("greatest('a', 'b')"), s("b"));
}

#[test]
fn conditionals() {
    assert_eq!(ok("coalesce(n, a)"), Value::Int(7));
    assert_eq!(ok("coalesce(n, NULL)"), Value::Null);
    assert_eq!(ok("coalesce(n, x)"), Value::Float(2.5));
    assert_eq!(ok("coalesce(n, 1, x)"), Value::Float(1.0));
    assert_eq!(ty("coalesce(n, 1, x)"), DataType::Float);
    assert_eq!(ok("if(a > 5, 'big', 'small')"), s("big"));
    assert_eq!(ok("IF(n > 5, 'big', 'small')"), s("small"));
    assert_eq!(ok("if(flag, 1, 2.5)"), Value::Float(1.0));
    assert_eq!(
        ok("CASE WHEN a > 10 THEN 'big' WHEN a > 5 THEN 'mid' ELSE 'small' END"),
        s("mid")
    );
    assert_eq!(ok("CASE WHEN a > 10 THEN 'big' END"), Value::Null);
    assert_eq!(ok("CASE WHEN n > 10 THEN 1 ELSE 0 END"), Value::Int(0));
    assert_eq!(
        ok("CASE a WHEN 1 THEN 'one' WHEN 7 THEN 'seven' END"),
        s("seven")
    );
    assert_eq!(ok("CASE n WHEN 1 THEN 'one' ELSE 'other' END"), s("other"));
    assert_eq!(ok("CASE WHEN flag THEN 1 ELSE 2.5 END"), Value::Float(1.0));
    // Lazy: the untaken branch is not evaluated.
    assert_eq!(ok("if(a > 0, 1, 1 / 0)"), Value::Int(1));
    assert_eq!(ok("CASE WHEN a = 0 THEN a / 0 ELSE 1 END"), Value::Int(1));
    assert_eq!(ok("coalesce(a, 1 / 0)"), Value::Int(7));
    assert_eq!(ok("a = 0 AND 1 / 0 = 1"), Value::Bool(false));
}

#[test]
fn casts() {
    assert_eq!(ok("CAST('42' AS int)"), Value::Int(42));
    assert_eq!(ok("' 42 '::int"), Value::Int(42));
    assert_eq!(ok("CAST(x AS int)"), Value::Int(2));
    assert_eq!(ok("CAST(-2.9 AS int)"), Value::Int(-2));
    assert_eq!(ok("CAST(a AS float)"), Value::Float(7.0));
    assert_eq!(ok("CAST('2.5' AS double)"), Value::Float(2.5));
    assert_eq!(ok("CAST(a AS string)"), s("7"));
    assert_eq!(ok("CAST(x AS text)"), s("2.5"));
    assert_eq!(ok("CAST(flag AS varchar)"), s("true"));
    assert_eq!(
        ok("CAST(0 AS timestamp)::string"),
        s("1970-01-01T00:00:00.000Z")
    );
    assert_eq!(ok("CAST('true' AS bool)"), Value::Bool(true));
    assert_eq!(ok("CAST(0 AS boolean)"), Value::Bool(false));
    assert_eq!(ok("CAST(true AS int)"), Value::Int(1));
    assert_eq!(
        ok("CAST('1970-01-01T00:00:01Z' AS timestamp)"),
        Value::Timestamp(1000)
    );
    assert_eq!(ok("CAST(ts AS int)"), Value::Int(TS));
    assert_eq!(ok("CAST(1000 AS timestamp)"), Value::Timestamp(1000));
    assert_eq!(ok("TRY_CAST('x' AS int)"), Value::Null);
    assert_eq!(ty("a::float"), DataType::Float);
    assert_eq!(ok("payload::string"), s("5"));
}

#[test]
fn date_parts_and_windows() {
    assert_eq!(ok("year(ts)"), Value::Int(2024));
    assert_eq!(ok("month(ts)"), Value::Int(3));
    assert_eq!(ok("day(ts)"), Value::Int(15));
    assert_eq!(ok("hour(ts)"), Value::Int(13));
    assert_eq!(ok("minute(ts)"), Value::Int(45));
    assert_eq!(ok("second(ts)"), Value::Int(30));
    assert_eq!(ok("day_of_week(ts)"), Value::Int(5));
    assert_eq!(ok("day_of_week(0)"), Value::Int(4)); // 1970-01-01 was a Thursday.
    assert_eq!(ok("EXTRACT(HOUR FROM ts)"), Value::Int(13));
    assert_eq!(ok("EXTRACT(YEAR FROM ts)"), Value::Int(2024));
    assert_eq!(ok("EXTRACT(DOW FROM ts)"), Value::Int(5));
    assert_eq!(ok("year(-1)"), Value::Int(1969));
    assert!(matches!(
        eval("year(9223372036854775807)"),
        Err(EvalError::InvalidArgument {
            function: "year",
            ..
        })
    ));
    assert_eq!(
        ok("window_start(ts, '10s')"),
        Value::Timestamp(1_710_510_330_000)
    );
    assert_eq!(
        ok("window_end(ts, '10s')"),
        Value::Timestamp(1_710_510_340_000)
    );
    assert_eq!(
        ok("window_start(ts, '1h')"),
        Value::Timestamp(1_710_507_600_000)
    );
    assert_eq!(ok("window_start(ts, '250ms')"), Value::Timestamp(TS));
    assert_eq!(
        ok("window_start(ts, 1000)"),
        Value::Timestamp(1_710_510_330_000)
    );
    assert_eq!(
        ok("window_start(ts, '1d')"),
        Value::Timestamp(1_710_460_800_000)
    );
    assert_eq!(
        ok("window_start(ts, '5m')"),
        Value::Timestamp(1_710_510_300_000)
    );
    assert_eq!(ok("window_start(-1, 1000)"), Value::Timestamp(-1000));
    assert_eq!(ok("window_start(ts, a)"), Value::Timestamp(TS - TS % 7));
    assert!(matches!(
        eval("window_start(ts, a - 7)"),
        Err(EvalError::InvalidArgument { .. })
    ));
    assert!(matches!(
        eval("window_end(9223372036854775807, 10)"),
        Err(EvalError::Overflow { .. })
    ));
    assert!(matches!(
        eval("window_start(-9223372036854775808, 3)"),
        Err(EvalError::Overflow { .. })
    ));
    assert_eq!(ty("window_start(ts, '10s')"), DataType::Timestamp);
}

#[test]
fn compile_errors_have_positions() {
    let e = err("usr = 'x'");
    assert_eq!(
        e.to_string(),
        "unknown field `usr` at 1:1; known fields: user, ts, a, b, x, flag, n, tags, payload, s"
    );
    let e = err("a +\n  bogus");
    assert!(
        matches!(&e, ExprError::UnknownField { name, line: 2, column: 3, .. } if name == "bogus"),
        "{e:?}"
    );
    let e = err("a + user");
    assert!(
        matches!(
            e,
            ExprError::Type {
                line: 1,
                column: 1,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        e.to_string().contains("cannot apply `+` to int and string"),
        "{e}"
    );
    assert!(e.to_string().contains("||"), "{e}");
    let e = err("user > 5");
    assert!(
        e.to_string().contains("cannot compare string with int"),
        "{e}"
    );
    let e = err("a AND flag");
    assert!(
        e.to_string()
            .contains("AND expects boolean operands, but `a` is int"),
        "{e}"
    );
    let e = err("NOT a");
    assert!(matches!(e, ExprError::Type { .. }), "{e:?}");
    let e = err("lower(a)");
    assert_eq!(
        e.to_string(),
        "type error at 1:7: argument 1 of lower() must be a string, found int"
    );
    let e = err("lower(user, user)");
    assert!(
        e.to_string().contains("lower() takes 1 argument, found 2"),
        "{e}"
    );
    let e = err("CAST(tags AS int)");
    assert!(
        e.to_string().contains("cannot cast list<string> to int"),
        "{e}"
    );
    let e = err("CAST(a AS frobnitz)");
    assert!(e.to_string().contains("unknown type"), "{e}");
    let e = err("if(a, 1, 2)");
    assert!(e.to_string().contains("condition must be boolean"), "{e}");
    let e = err("CASE WHEN flag THEN 1 ELSE 'x' END");
    assert!(
        e.to_string().contains("CASE branches must have one type"),
        "{e}"
    );
    let e = err("coalesce(a, 'x')");
    assert!(
        e.to_string()
            .contains("coalesce() arguments must have one type"),
        "{e}"
    );
    let e = err("user LIKE 5");
    assert!(matches!(e, ExprError::Type { .. }), "{e:?}");
    let e = err("a IN (1, 'x')");
    assert!(e.to_string().contains("IN list item `'x'`"), "{e}");
}

#[test]
fn parse_errors() {
    let e = err("a +");
    assert!(matches!(e, ExprError::Parse { line: 1, .. }), "{e:?}");
    let e = err("a b");
    assert_eq!(
        e,
        ExprError::Parse {
            message: "unexpected `b` after the end of the expression".into(),
            line: 1,
            column: 3
        }
    );
    let e = err("(a");
    assert!(matches!(e, ExprError::Parse { .. }), "{e:?}");
    let e = err("'unterminated");
    assert!(matches!(e, ExprError::Parse { .. }), "{e:?}");
    let e = err("");
    assert!(matches!(e, ExprError::Parse { .. }), "{e:?}");
    let e = err("a = 1; DROP TABLE x");
    assert!(matches!(e, ExprError::Parse { .. }), "{e:?}");
}

#[test]
fn invalid_literals() {
    let e = err("99999999999999999999");
    assert!(matches!(e, ExprError::InvalidLiteral { .. }), "{e:?}");
    assert!(e.to_string().contains("does not fit in 64 bits"), "{e}");
    let e = err("window_start(ts, '10 parsecs')");
    assert!(e.to_string().contains("unknown unit `parsecs`"), "{e}");
    let e = err("window_start(ts, '0s')");
    assert!(e.to_string().contains("must be positive"), "{e}");
    let e = err("window_start(ts, -5)");
    assert!(e.to_string().contains("must be positive"), "{e}");
    let e = err("window_start(ts, '10')");
    assert!(e.to_string().contains("has no unit"), "{e}");
    let e = err("TIMESTAMP 'yesterday'");
    assert!(matches!(e, ExprError::InvalidLiteral { .. }), "{e:?}");
    let e = err("INTERVAL '1' MONTH");
    assert!(matches!(e, ExprError::Unsupported { .. }), "{e:?}");
}

#[test]
fn unsupported_constructs() {
    let e = err("now()");
    assert!(
        matches!(
            e,
            ExprError::Unsupported {
                line: 1,
                column: 1,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("deterministic"), "{e}");
    let e = err("a > 1 AND ts < CURRENT_TIMESTAMP");
    assert!(e.to_string().contains("deterministic"), "{e}");
    let e = err("a IN (SELECT 1)");
    assert!(matches!(e, ExprError::Unsupported { .. }), "{e:?}");
    let e = err("EXISTS (SELECT 1)");
    assert!(e.to_string().contains("subquery"), "{e}");
    let e = err("row_number() OVER (ORDER BY a)");
    assert!(e.to_string().contains("window function"), "{e}");
    let e = err("count(*)");
    assert!(e.to_string().contains("aggregate"), "{e}");
    let e = err("frobnicate(a)");
    assert_eq!(
        e,
        ExprError::Unsupported {
            construct: "function `frobnicate`".into(),
            reason: format!(
                "unknown function; supported functions: {}",
                super::functions::FUNCTION_NAMES
            ),
            line: 1,
            column: 1
        }
    );
    let e = err("a + t.b");
    assert!(
        matches!(&e, ExprError::Unsupported { construct, column: 5, .. } if construct.contains("t.b")),
        "{e:?}"
    );
    let e = err("user ILIKE 'a%'");
    assert!(e.to_string().contains("lower(x) LIKE"), "{e}");
    let e = err("a & b");
    assert!(e.to_string().contains("operator `&`"), "{e}");
    let e = err("[1, 2]");
    assert!(matches!(e, ExprError::Unsupported { .. }), "{e:?}");
    let e = err("EXTRACT(EPOCH FROM ts)");
    assert!(matches!(e, ExprError::Unsupported { .. }), "{e:?}");
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let deep = format!("{}a{}", "(".repeat(10_000), ")".repeat(10_000));
    let e = err(&deep);
    assert!(matches!(e, ExprError::TooComplex { line: 1, .. }), "{e:?}");
    // Just below our pre-check: sqlparser's own recursion limit must answer with an error.
    let nested = format!("{}a{}", "(".repeat(MAX_NESTING), ")".repeat(MAX_NESTING));
    match Expr::compile(&nested, &schema()) {
        Ok(e) => assert_eq!(e.eval(&row()).unwrap(), Value::Int(7)),
        Err(e) => assert!(matches!(e, ExprError::TooComplex { .. }), "{e:?}"),
    }
    // Nesting without brackets, which the pre-check does not see.
    let nots = format!("{}flag", "NOT ".repeat(10_000));
    assert!(matches!(err(&nots), ExprError::TooComplex { .. }));
    let negs = format!("{}a", "- ".repeat(5_000));
    assert!(matches!(err(&negs), ExprError::TooComplex { .. }));
    // sqlparser directly: with its default limit it returns an error rather than overflowing.
    let dialect = sqlparser::dialect::GenericDialect {};
    let r = sqlparser::parser::Parser::new(&dialect)
        .try_with_sql(&nots)
        .and_then(|mut p| p.parse_expr());
    assert!(r.is_err() || r.is_ok_and(|e| e.to_string().len() < nots.len()));
    let parens = format!("{}a{}", "(".repeat(10_000), ")".repeat(10_000));
    let r = sqlparser::parser::Parser::new(&dialect)
        .try_with_sql(&parens)
        .and_then(|mut p| p.parse_expr());
    assert_eq!(
        r,
        Err(sqlparser::parser::ParserError::RecursionLimitExceeded)
    );
    let cases = format!(
        "{}1{}",
        "CASE WHEN flag THEN ".repeat(100),
        " END".repeat(100)
    );
    assert!(matches!(err(&cases), ExprError::TooComplex { .. }));
    // Long flat chains build a deep left-leaning tree without recursing in the parser.
    let chain = vec!["a"; 1_000].join(" + ");
    let e = err(&chain);
    assert!(e.to_string().contains("more than 256 operators"), "{e}");
    let chain = vec!["a"; 200].join(" + ");
    let e = err(&chain);
    assert!(e.to_string().contains("more than 64 levels"), "{e}");
    // The deepest accepted tree compiles and evaluates (in debug builds, on a test thread).
    let chain = vec!["a"; MAX_DEPTH].join(" + ");
    assert_eq!(ok(&chain), Value::Int(7 * MAX_DEPTH as i64));
    // The longest accepted chain is still dropped safely.
    let longest = vec!["a"; MAX_SOURCE_LEN / 4].join(" + ");
    assert!(longest.len() <= MAX_SOURCE_LEN);
    assert!(matches!(err(&longest), ExprError::TooComplex { .. }));
    let too_long = "a".repeat(MAX_SOURCE_LEN + 1);
    assert!(matches!(err(&too_long), ExprError::TooComplex { .. }));
}

#[test]
fn column_literal_comparison_is_specialised() {
    let e = Expr::compile("5 < a", &schema()).unwrap();
    assert!(matches!(
        e.root,
        eval::Node::CmpColumnLiteral(eval::CmpOp::Gt, 2, _)
    ));
    assert!(e.eval_bool(&row()).unwrap());
}

#[test]
fn expr_is_send_sync_clone() {
    fn check<T: Send + Sync + Clone + std::fmt::Debug>() {}
    check::<Expr>();
    check::<ExprError>();
    check::<EvalError>();
}

proptest! {
    #[test]
    fn random_integer_arithmetic_never_panics(
        a in any::<i64>(),
        b in any::<i64>(),
        ops in proptest::collection::vec(0usize..7, 1..6),
    ) {
        let symbols = ["+", "-", "*", "/", "%", "<", "="];
        let mut text = "a".to_string();
        for (i, op) in ops.iter().enumerate() {
            let operand = if i % 2 == 0 { "b" } else { "a" };
            text = if symbols[*op] == "<" || symbols[*op] == "=" {
                format!("CAST(({text}) {} {operand} AS int)", symbols[*op])
            } else {
                format!("({text}) {} {operand}", symbols[*op])
            };
        }
        let schema = Schema::new(vec![
            Field::required("a", DataType::Int),
            Field::required("b", DataType::Int),
        ]);
        let e = Expr::compile(&text, &schema).unwrap();
        match e.eval(&[Value::Int(a), Value::Int(b)]) {
            Ok(v) => prop_assert!(matches!(v, Value::Int(_)), "{:?}", v),
            Err(err) => {
                let expected = matches!(err, EvalError::DivisionByZero | EvalError::Overflow { .. });
                prop_assert!(expected, "{:?}", err);
            }
        }
    }

    #[test]
    fn arbitrary_text_never_panics(text in "[a-z0-9 ()+*/%<>=!'|,.-]{0,40}") {
        if let Ok(e) = Expr::compile(&text, &schema()) {
            let _ = e.eval(&row());
        }
    }
}

#[test]
fn documented_examples() {
    assert_eq!(ok("1e3"), Value::Float(1000.0));
    assert_eq!(ok("trim('  hi ')"), s("hi"));
    assert_eq!(ok("concat('a', NULL, 1)"), s("a1"));
    assert_eq!(ok("'a' || 1"), s("a1"));
    assert_eq!(ok("if(3 > 2, 'y', 'n')"), s("y"));
    assert_eq!(ok("hour(TIMESTAMP '2024-03-15T13:45:30Z')"), Value::Int(13));
    assert_eq!(ok("window_end(0, '1m')"), Value::Timestamp(60_000));
    assert_eq!(ok("1 NOT IN (2, NULL)"), Value::Null);
    assert_eq!(ok("coalesce(NULL, 7)"), Value::Int(7));
    let e = err(&format!("{}a{}", "(".repeat(41), ")".repeat(41)));
    assert!(
        matches!(
            e,
            ExprError::TooComplex {
                line: 1,
                column: 41,
                ..
            }
        ),
        "{e:?}"
    );
}
