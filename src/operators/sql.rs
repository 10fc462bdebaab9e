//! `sql`: a stateless SQL SELECT (projections and WHERE) over one input stream.

use schemars::JsonSchema;
use serde::Deserialize;

use super::{BuildContext, Checker, Operator, OperatorError, Outputs, StreamSchema, Transform};

/// Runs a SELECT over its input, row by row. The query reads the input by its name.
///
/// ```yaml
/// cheap:
///   type: sql
///   input: bids
///   query: "SELECT auction, price, date_time FROM bids WHERE price < 100"
/// ```
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Sql {
    /// The stream to read; the query names it in `FROM`.
    pub input: String,
    /// A SELECT without GROUP BY, JOIN, ORDER BY, LIMIT or window functions.
    pub query: String,
    /// Subtasks (default: the pipeline's).
    #[serde(default)]
    #[schemars(range(min = 1, max = 1024))]
    pub parallelism: Option<u32>,
}

impl Transform for Sql {
    fn inputs(&self) -> Vec<(&str, String)> {
        vec![(&self.input, "/input".into())]
    }

    fn check(&self, cx: &mut Checker, ptr: &str, inputs: &[(&str, &StreamSchema)]) -> Option<Outputs> {
        let (name, input) = inputs[0];
        let schema = cx.query(&format!("{ptr}/query"), &self.query, name, input)?;
        // Event time survives when a timestamp column of the same name is still there.
        let event_time = input
            .event_time
            .clone()
            .filter(|et| schema.field_with_name(et).is_ok_and(|f| crate::spec::values::is_timestamp(f.data_type())));
        Some(StreamSchema { schema, event_time }.into())
    }

    fn parallelism(&self) -> Option<u32> {
        self.parallelism
    }

    fn reads(&self, input: &StreamSchema) -> Option<Vec<String>> {
        crate::runtime::expr::Compiler::default().query_reads(&self.query, &self.input, &input.schema)
    }

    fn keeps(&self, input: &StreamSchema) -> Option<Vec<crate::plan::predicate::ColumnBound>> {
        crate::runtime::expr::Compiler::default().query_keeps(&self.query, &self.input, &input.schema)
    }

    fn operator(
        &self,
        _: &BuildContext,
        inputs: &[(&str, &StreamSchema)],
        _: &StreamSchema,
    ) -> Result<Box<dyn Operator>, OperatorError> {
        let (name, input) = inputs[0];
        let program = crate::runtime::expr::Compiler::default().query(&self.query, name, &input.schema)?;
        Ok(Box::new(super::ProgramOperator(program)))
    }

    fn describe(&self) -> String {
        format!("sql {}", self.query.split_whitespace().collect::<Vec<_>>().join(" "))
    }
}
