//! `select`: computes named columns from SQL expressions, row by row.

use std::sync::Arc;

use arrow::datatypes::{Field, Schema};
use datafusion::logical_expr::Expr;
use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::Deserialize;

use super::{BuildContext, Checker, Operator, OperatorError, Outputs, StreamSchema, Transform};
use crate::spec::loader::push_pointer;

/// Computes new columns; only the listed columns are kept.
///
/// ```yaml
/// in_euro:
///   type: select
///   input: bids
///   columns: { auction: auction, price_eur: "price * 0.908", date_time: date_time }
/// ```
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Select {
    /// The stream to read.
    pub input: String,
    /// Output columns, in order: name → SQL expression over the input's columns.
    #[schemars(length(min = 1))]
    pub columns: IndexMap<String, String>,
    /// Subtasks (default: the pipeline's).
    #[serde(default)]
    #[schemars(range(min = 1, max = 1024))]
    pub parallelism: Option<u32>,
}

impl Transform for Select {
    fn inputs(&self) -> Vec<(&str, String)> {
        vec![(&self.input, "/input".into())]
    }

    fn check(&self, cx: &mut Checker, ptr: &str, inputs: &[(&str, &StreamSchema)]) -> Option<Outputs> {
        let (name, input) = inputs[0];
        let mut fields = Vec::new();
        let mut ok = true;
        let mut event_time = None;
        for (col, expr) in &self.columns {
            let at = push_pointer(&format!("{ptr}/columns"), col);
            let Some((e, ty)) = cx.expression(&at, expr, name, input) else {
                ok = false;
                continue;
            };
            let nullable = match &e {
                Expr::Column(c) => {
                    // Event time survives when its column is passed through, renamed or not.
                    if event_time.is_none() && input.event_time.as_deref() == Some(c.name.as_str()) {
                        event_time = Some(col.clone());
                    }
                    input.schema.field_with_name(&c.name).map_or(true, |f| f.is_nullable())
                }
                _ => true,
            };
            fields.push(Field::new(col, ty, nullable));
        }
        if !ok {
            return None;
        }
        Some(StreamSchema { schema: Arc::new(Schema::new(fields)), event_time }.into())
    }

    fn parallelism(&self) -> Option<u32> {
        self.parallelism
    }

    fn reads(&self, input: &StreamSchema) -> Option<Vec<String>> {
        crate::runtime::expr::Compiler::default().expression_reads(
            self.columns.values().map(String::as_str),
            &self.input,
            &input.schema,
        )
    }

    fn operator(
        &self,
        _: &BuildContext,
        inputs: &[(&str, &StreamSchema)],
        output: &StreamSchema,
    ) -> Result<Box<dyn Operator>, OperatorError> {
        let (name, input) = inputs[0];
        let columns: Vec<(String, String)> = self.columns.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let program =
            crate::runtime::expr::Compiler::default().select(&columns, name, &input.schema, output.schema.clone())?;
        Ok(Box::new(super::ProgramOperator(program)))
    }

    fn describe(&self) -> String {
        let cols: Vec<String> =
            self.columns.iter().map(|(k, v)| if k == v { k.clone() } else { format!("{v} AS {k}") }).collect();
        format!("select {}", cols.join(", "))
    }
}
