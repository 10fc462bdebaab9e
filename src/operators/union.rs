//! `union`: merges streams of the same schema into one.

use schemars::JsonSchema;
use serde::Deserialize;

use super::{BuildContext, Checker, Operator, OperatorError, Output, Outputs, StreamSchema, Transform};

/// Passes rows of every input on under the union's schema (inputs differ at most in
/// nullability, which the union widens).
struct UnionOperator(arrow::datatypes::SchemaRef);

impl Operator for UnionOperator {
    fn process(
        &mut self,
        _: usize,
        batch: arrow::record_batch::RecordBatch,
        out: &mut dyn Output,
    ) -> Result<(), OperatorError> {
        if batch.schema() == self.0 {
            return out.emit(batch);
        }
        out.emit(arrow::record_batch::RecordBatch::try_new(self.0.clone(), batch.columns().to_vec())?)
    }
}
use crate::diagnostics::Code;

/// Merges several streams with the same columns.
///
/// ```yaml
/// all_orders: { type: union, inputs: [web_orders, shop_orders] }
/// ```
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Union {
    /// The streams to merge; all must have the same column names and types.
    #[schemars(length(min = 2))]
    pub inputs: Vec<String>,
    /// Subtasks (default: the pipeline's).
    #[serde(default)]
    #[schemars(range(min = 1, max = 1024))]
    pub parallelism: Option<u32>,
}

impl Transform for Union {
    fn inputs(&self) -> Vec<(&str, String)> {
        self.inputs.iter().enumerate().map(|(i, n)| (n.as_str(), format!("/inputs/{i}"))).collect()
    }

    fn check(&self, cx: &mut Checker, ptr: &str, inputs: &[(&str, &StreamSchema)]) -> Option<Outputs> {
        let (first_name, first) = inputs[0];
        let mut ok = true;
        for (i, (name, other)) in inputs.iter().enumerate().skip(1) {
            let a: Vec<_> = first.schema.fields().iter().map(|f| (f.name(), f.data_type())).collect();
            let b: Vec<_> = other.schema.fields().iter().map(|f| (f.name(), f.data_type())).collect();
            if a != b {
                let show = |v: &Vec<(&String, &arrow::datatypes::DataType)>| {
                    v.iter().map(|(n, t)| format!("{n} {}", crate::plan::type_name(t))).collect::<Vec<_>>().join(", ")
                };
                cx.error(
                    Code::UnionMismatch,
                    &format!("{ptr}/inputs/{i}"),
                    format!("`{name}` has columns ({}) but `{first_name}` has ({})", show(&b), show(&a)),
                )
                .help = Some("make the inputs match with a `select` on each".into());
                ok = false;
            }
        }
        if !ok {
            return None;
        }
        let event_time =
            first.event_time.clone().filter(|et| inputs.iter().all(|(_, s)| s.event_time.as_ref() == Some(et)));
        // A column may be null in the union when it may be null in any input.
        let fields: Vec<_> = first
            .schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let nullable = inputs.iter().any(|(_, s)| s.schema.field(i).is_nullable());
                f.as_ref().clone().with_nullable(nullable)
            })
            .collect();
        let schema = std::sync::Arc::new(arrow::datatypes::Schema::new(fields));
        Some(StreamSchema { schema, event_time }.into())
    }

    fn parallelism(&self) -> Option<u32> {
        self.parallelism
    }

    fn operator(
        &self,
        _: &BuildContext,
        _: &[(&str, &StreamSchema)],
        output: &StreamSchema,
    ) -> Result<Box<dyn Operator>, OperatorError> {
        Ok(Box::new(UnionOperator(output.schema.clone())))
    }

    fn describe(&self) -> String {
        format!("union of {}", self.inputs.join(", "))
    }
}
