//! Nodes backed by storage or vectors: KV views, time series, embeddings, vector
//! collections. One file because they share the naming rule for stores and add fields to
//! their input rather than replace its schema.

use crate::definition::{
    EmbedDef, KvLookupDef, KvPutDef, SeriesDef, VectorSearchDef, VectorUpsertDef,
};
use crate::plan::{NodeKind, NodePlan, PlanError};
use crate::schema::{Field, Schema};
use crate::value::DataType;

use super::builder::Builder;
use super::checks::{check_name, check_store_name, positive_duration};
use super::topics::field_from_def;

impl Builder {
    pub(super) fn plan_kv_put(&mut self, id: String, k: &KvPutDef) -> Result<(), PlanError> {
        let input = self.upstream(&k.input);
        check_store_name(&id, "view", &k.view)?;
        let ttl_ms = match &k.ttl {
            None => None,
            Some(t) => Some(positive_duration(&id, "ttl", Some(t))?),
        };
        let shape = self.nodes[input].clone_shape();
        self.push(NodePlan {
            id,
            kind: NodeKind::KvPut {
                input,
                view: k.view.clone(),
                ttl_ms,
            },
            ..shape
        });
        Ok(())
    }

    pub(super) fn plan_kv_lookup(&mut self, id: String, k: &KvLookupDef) -> Result<(), PlanError> {
        let input = self.upstream(&k.input);
        check_store_name(&id, "view", &k.view)?;
        let key = match &k.key {
            Some(text) => Some(self.expr(&id, "key", text, input)?),
            None => None,
        };
        if k.fields.is_empty() {
            return Err(PlanError::MissingField {
                node: id,
                field: "fields",
                why: "and must list the fields read from the view",
            });
        }
        let mut shape = self.nodes[input].clone_shape();
        let mut all = shape.schema.fields.clone();
        let mut added = Vec::new();
        for fd in &k.fields {
            check_name("field", &fd.name)?;
            if all.iter().any(|f| f.name == fd.name) {
                return Err(PlanError::InvalidParameter {
                        node: id,
                        field: "fields",
                        message: format!(
                            "`{}` is already a field of the input (or listed twice); rename it with a map first",
                            fd.name
                        ),
                    });
            }
            let mut f = field_from_def(fd).map_err(|message| PlanError::InvalidParameter {
                node: id.clone(),
                field: "fields",
                message: format!("`{}`: {message}", fd.name),
            })?;
            // An absent key or field reads as the default: every looked-up field is
            // optional.
            f.optional = true;
            all.push(f.clone());
            added.push(f);
        }
        shape.schema = Schema::new(all);
        self.push(NodePlan {
            id,
            kind: NodeKind::KvLookup {
                input,
                view: k.view.clone(),
                key,
                fields: added,
            },
            ..shape
        });
        Ok(())
    }

    pub(super) fn plan_series(&mut self, id: String, x: &SeriesDef) -> Result<(), PlanError> {
        let input = self.upstream(&x.input);
        check_store_name(&id, "name", &x.name)?;
        if !matches!(self.nodes[input].kind, NodeKind::WindowAggregate { .. }) {
            return Err(PlanError::InvalidParameter {
                    node: id,
                    field: "input",
                    message: format!(
                        "a series stores windowed results per window start, but `{}` is not a windowed aggregate",
                        x.input
                    ),
                });
        }
        let shape = self.nodes[input].clone_shape();
        self.push(NodePlan {
            id,
            kind: NodeKind::Series {
                input,
                name: x.name.clone(),
            },
            ..shape
        });
        Ok(())
    }

    pub(super) fn plan_embed(&mut self, id: String, e: &EmbedDef) -> Result<(), PlanError> {
        let input = self.upstream(&e.input);
        let text = self.expr(&id, "text", &e.text, input)?;
        if !matches!(
            text.data_type(),
            DataType::String | DataType::Null | DataType::Any
        ) {
            return Err(PlanError::InvalidParameter {
                node: id,
                field: "text",
                message: format!("must be a string expression, found {}", text.data_type()),
            });
        }
        let dim = e.dim.unwrap_or(256);
        if dim == 0 || dim > 4096 {
            return Err(PlanError::InvalidParameter {
                node: id,
                field: "dim",
                message: format!("must be between 1 and 4096, found {dim}"),
            });
        }
        let name = e.field.clone().unwrap_or_else(|| "embedding".to_string());
        check_name("field", &name)?;
        let mut shape = self.nodes[input].clone_shape();
        if shape.schema.index_of(&name).is_some() {
            return Err(PlanError::InvalidParameter {
                node: id,
                field: "field",
                message: format!("`{name}` is already a field of the input"),
            });
        }
        let mut all = shape.schema.fields.clone();
        all.push(Field::required(&name, DataType::Vector(dim)));
        shape.schema = Schema::new(all);
        self.push(NodePlan {
            id,
            kind: NodeKind::Embed { input, text, dim },
            ..shape
        });
        Ok(())
    }

    pub(super) fn plan_vector_upsert(
        &mut self,
        id: String,
        v: &VectorUpsertDef,
    ) -> Result<(), PlanError> {
        let input = self.upstream(&v.input);
        check_store_name(&id, "collection", &v.collection)?;
        let vector = self.expr(&id, "vector", &v.vector, input)?;
        let DataType::Vector(dim) = vector.data_type().clone() else {
            return Err(PlanError::InvalidParameter {
                node: id,
                field: "vector",
                message: format!(
                    "must be a vector<N> expression (e.g. a field added by `embed`), found {}",
                    vector.data_type()
                ),
            });
        };
        let metric = match &v.metric {
            None => starling_storage::Metric::Cosine,
            Some(m) => m.parse().map_err(|e: starling_storage::VectorError| {
                PlanError::InvalidParameter {
                    node: id.clone(),
                    field: "metric",
                    message: e.to_string(),
                }
            })?,
        };
        let shape = self.nodes[input].clone_shape();
        self.push(NodePlan {
            id,
            kind: NodeKind::VectorUpsert {
                input,
                collection: v.collection.clone(),
                vector,
                dim,
                metric,
            },
            ..shape
        });
        Ok(())
    }

    pub(super) fn plan_vector_search(
        &mut self,
        id: String,
        v: &VectorSearchDef,
    ) -> Result<(), PlanError> {
        let input = self.upstream(&v.input);
        check_store_name(&id, "collection", &v.collection)?;
        let vector = self.expr(&id, "vector", &v.vector, input)?;
        if !matches!(vector.data_type(), DataType::Vector(_)) {
            return Err(PlanError::InvalidParameter {
                node: id,
                field: "vector",
                message: format!(
                    "must be a vector<N> expression, found {}",
                    vector.data_type()
                ),
            });
        }
        let k = v.k.unwrap_or(5);
        if k == 0 || k > 1000 {
            return Err(PlanError::InvalidParameter {
                node: id,
                field: "k",
                message: format!("must be between 1 and 1000, found {k}"),
            });
        }
        let mut shape = self.nodes[input].clone_shape();
        let mut all = shape.schema.fields.clone();
        for (name, ty) in [
            ("match_key", DataType::String),
            ("match_distance", DataType::Float),
            ("match_rank", DataType::Int),
            ("match", DataType::Any),
        ] {
            if all.iter().any(|f| f.name == name) {
                return Err(PlanError::InvalidParameter {
                        node: id,
                        field: "input",
                        message: format!("the input already has a field `{name}`, which vector_search adds; rename it with a map first"),
                    });
            }
            all.push(Field::required(name, ty));
        }
        shape.schema = Schema::new(all);
        shape.append_only = true;
        self.push(NodePlan {
            id,
            kind: NodeKind::VectorSearch {
                input,
                collection: v.collection.clone(),
                vector,
                k,
                filter: v.filter.clone().unwrap_or_default().into_iter().collect(),
            },
            ..shape
        });
        Ok(())
    }
}
