//! Proves that numeric and boolean expressions evaluate without allocating: a counting global
//! allocator (this integration test is its own binary, so it affects nothing else). Counts are
//! per thread, so the test harness's own threads cannot make the test fail.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use starling_operators::{DataType, Expr, Field, Schema, Value};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn count() {
    let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
}

fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn numeric_and_boolean_evaluation_does_not_allocate() {
    let schema = Schema::new(vec![
        Field::required("a", DataType::Int),
        Field::required("b", DataType::Int),
        Field::required("c", DataType::Float),
        Field::required("flag", DataType::Bool),
        Field::required("user", DataType::String),
        Field::required("ts", DataType::Timestamp),
    ]);
    let exprs: Vec<Expr> = [
        "(a + b * 2) > 10 AND NOT flag OR c / 2.0 < 3.5",
        "abs(a - b) + round(c, 1) >= greatest(a, b) AND user = 'alice'",
        "CASE WHEN a > b THEN coalesce(c, 0.0) ELSE c * 2 END",
        "a BETWEEN 1 AND 10 AND b IN (1, 2, 3) AND user LIKE 'al%'",
        "window_start(ts, '10s') < ts + 1000 AND hour(ts) = 13",
    ]
    .iter()
    .map(|t| Expr::compile(t, &schema).unwrap())
    .collect();
    let row = vec![
        Value::Int(3),
        Value::Int(4),
        Value::Float(5.0),
        Value::Bool(false),
        Value::str("alice"),
        Value::Timestamp(1_710_510_330_250),
    ];
    for e in &exprs {
        let before = allocations();
        for _ in 0..1_000 {
            assert!(e.eval(&row).is_ok());
        }
        let after = allocations();
        assert_eq!(after - before, 0, "`{}` allocated", e.source());
    }
    let before = allocations();
    let mut trues = 0u64;
    for _ in 0..1_000_000 {
        for e in &exprs {
            if matches!(e.eval(&row), Ok(Value::Bool(true))) {
                trues += 1;
            }
        }
    }
    let after = allocations();
    assert_eq!(after - before, 0, "evaluation allocated");
    assert!(trues > 0);
    // The counter does see this thread's allocations.
    let before = allocations();
    let v = std::hint::black_box(vec![1u8; 10]);
    assert!(allocations() > before && v.len() == 10);
    // The headline expression gives the documented result.
    assert_eq!(exprs[0].eval(&row).unwrap(), Value::Bool(true));
}
