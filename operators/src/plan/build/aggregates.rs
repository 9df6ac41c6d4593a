//! Windows and aggregates: a window is checked on its own but planned into the aggregate
//! that consumes it. One file because the two are planned as one node.

use crate::definition::{AggDef, AggregateDef, EmitMode, WindowDef, WindowKind};
use crate::plan::{AggPlan, NodeKind, NodePlan, PlanError, WindowSpec};
use crate::schema::{Field, Schema};
use crate::value::DataType;

use super::builder::Builder;
use super::checks::{check_name, positive_duration};

impl Builder {
    pub(super) fn plan_window(&mut self, w: &WindowDef) -> Result<(), PlanError> {
        // Checked now, planned into the aggregate that consumes it.
        window_spec(w)?;
        let input = self.upstream(&w.input);
        self.windows.insert(w.id.clone(), (w.clone(), input));
        Ok(())
    }

    pub(super) fn plan_aggregate(&mut self, id: String, a: &AggregateDef) -> Result<(), PlanError> {
        let windowed = self.windows.get(&a.input).cloned();
        let input = match &windowed {
            Some((_, input)) => *input,
            None => self.upstream(&a.input),
        };
        if a.aggregates.is_empty() {
            return Err(PlanError::MissingField {
                node: id,
                field: "aggregates",
                why: "and must list at least one aggregate",
            });
        }
        let aggs = a
            .aggregates
            .iter()
            .map(|d| self.agg(&id, d, input))
            .collect::<Result<Vec<_>, _>>()?;
        let up = &self.nodes[input];
        let mut fields = vec![Field::required("key", up.key_type.clone())];
        if windowed.is_some() {
            fields.push(Field::required("window_start", DataType::Timestamp));
            fields.push(Field::required("window_end", DataType::Timestamp));
        }
        for agg in &aggs {
            if fields.iter().any(|f| f.name == agg.name) {
                return Err(PlanError::InvalidParameter {
                        node: id,
                        field: "aggregates",
                        message: format!("output field `{}` is used twice (key, window_start and window_end are taken)", agg.name),
                    });
            }
            fields.push(Field::required(&agg.name, agg.data_type.clone()));
        }
        let (kind, append_only) = match windowed {
            Some((w, _)) => {
                let emit = a.emit.unwrap_or(EmitMode::Final);
                // Final results with no allowed lateness are emitted once and never
                // corrected (an event behind a closed window is late and goes to the
                // late topic), so downstream they are an insert-only stream: interval
                // joins may consume them (Nexmark q5, q7, q8 join window results).
                let insert_only = emit == EmitMode::Final && up.lateness == 0 && up.append_only;
                (
                    NodeKind::WindowAggregate {
                        input,
                        window: window_spec(&w)?,
                        aggs,
                        emit,
                    },
                    insert_only,
                )
            }
            None => {
                if a.emit == Some(EmitMode::Final) {
                    return Err(PlanError::InvalidParameter {
                            node: id,
                            field: "emit",
                            message: "`final` needs a window: an aggregate over a whole stream never ends; put a `window` before it or use `updates`".into(),
                        });
                }
                (NodeKind::Aggregate { input, aggs }, false)
            }
        };
        let plan = NodePlan {
            id,
            schema: Schema::new(fields),
            key_type: up.key_type.clone(),
            append_only,
            lateness: up.lateness,
            kind,
        };
        self.push(plan);
        Ok(())
    }

    fn agg(&self, node: &str, d: &AggDef, input: usize) -> Result<AggPlan, PlanError> {
        use crate::definition::AggFn::*;
        check_name("field", &d.name)?;
        let field = format!("aggregates.{}", d.name);
        let expr = match (&d.expr, d.function) {
            (None, Count) => None,
            (Some(text), _) => Some(self.expr(node, &field, text, input)?),
            (None, _) => {
                return Err(PlanError::MissingField {
                    node: node.to_string(),
                    field: "expr",
                    why: "for every aggregate but count",
                })
            }
        };
        if d.k.is_some() && d.function != TopK {
            return Err(PlanError::InvalidParameter {
                node: node.to_string(),
                field: "k",
                message: "only top_k takes `k`".into(),
            });
        }
        let ty = expr
            .as_ref()
            .map(|e| e.data_type().clone())
            .unwrap_or(DataType::Int);
        let numeric = || {
            if ty.is_numeric() || ty == DataType::Any || ty == DataType::Null {
                Ok(())
            } else {
                Err(PlanError::TypeMismatch {
                    node: node.to_string(),
                    field: field.clone(),
                    expected: "a numeric expression".into(),
                    found: ty.to_string(),
                })
            }
        };
        let data_type = match d.function {
            Count | CountDistinct => DataType::Int,
            Sum => {
                numeric()?;
                if ty == DataType::Int {
                    DataType::Int
                } else {
                    DataType::Float
                }
            }
            Avg => {
                numeric()?;
                DataType::Float
            }
            Min | Max => ty.clone(),
            TopK => DataType::List(Box::new(ty.clone())),
        };
        let k = match (d.function, d.k) {
            (TopK, None) => {
                return Err(PlanError::MissingField {
                    node: node.to_string(),
                    field: "k",
                    why: "for top_k",
                })
            }
            (TopK, Some(k)) if k == 0 || k > 10_000 => {
                return Err(PlanError::InvalidParameter {
                    node: node.to_string(),
                    field: "k",
                    message: format!("k must be between 1 and 10000, got {k}"),
                })
            }
            (_, k) => k.unwrap_or(0),
        };
        Ok(AggPlan {
            name: d.name.clone(),
            func: d.function,
            expr,
            k,
            data_type,
        })
    }
}

fn window_spec(w: &WindowDef) -> Result<WindowSpec, PlanError> {
    let id = &w.id;
    let reject = |field: &'static str, present: bool| {
        if present {
            Err(PlanError::InvalidParameter {
                node: id.clone(),
                field,
                message: format!("a {:?} window does not take `{field}`", w.kind).to_lowercase(),
            })
        } else {
            Ok(())
        }
    };
    Ok(match w.kind {
        WindowKind::Tumbling => {
            reject("slide", w.slide.is_some())?;
            reject("gap", w.gap.is_some())?;
            WindowSpec::Tumbling {
                size: positive_duration(id, "size", w.size.as_ref())?,
            }
        }
        WindowKind::Sliding => {
            reject("gap", w.gap.is_some())?;
            let size = positive_duration(id, "size", w.size.as_ref())?;
            let slide = positive_duration(id, "slide", w.slide.as_ref())?;
            if slide > size || size % slide != 0 {
                return Err(PlanError::InvalidParameter {
                    node: id.clone(),
                    field: "slide",
                    message: format!("slide ({slide} ms) must divide size ({size} ms)"),
                });
            }
            if size / slide > 1_000 {
                return Err(PlanError::InvalidParameter {
                    node: id.clone(),
                    field: "slide",
                    message: "size / slide is over 1000: each event would land in too many windows"
                        .into(),
                });
            }
            WindowSpec::Sliding { size, slide }
        }
        WindowKind::Session => {
            reject("size", w.size.is_some())?;
            reject("slide", w.slide.is_some())?;
            WindowSpec::Session {
                gap: positive_duration(id, "gap", w.gap.as_ref())?,
            }
        }
    })
}
