//! Starling's data model and operators.
//!
//! Three layers, kept apart as in Materialize and DataFusion: [`definition`] is the serde model
//! of what the user wrote; [`plan`] checks it and resolves names to positions and expressions to
//! compiled code; [`render`] turns a plan into a timely/differential dataflow. Errors are found
//! in `plan`; rendering never re-validates.

pub mod definition;
pub mod duration;
pub mod embed;
pub mod event;
pub mod expr;
pub mod flat;
pub mod json;
pub mod json_fast;
pub mod plan;
pub mod render;
pub mod schema;
pub mod value;

pub use event::{Event, Row};
pub use expr::{EvalError, Expr, ExprError};
pub use schema::{Field, Schema};
pub use value::{DataType, Value};
