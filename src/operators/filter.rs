//! `filter`: keeps the rows for which a SQL condition is true.

use schemars::JsonSchema;
use serde::Deserialize;

use super::{BuildContext, Checker, Operator, OperatorError, Outputs, StreamSchema, Transform};
use crate::diagnostics::Code;

/// Keeps rows matching a condition.
///
/// ```yaml
/// big_orders: { type: filter, input: orders, where: "amount > 100" }
/// ```
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// The stream to filter.
    pub input: String,
    /// A SQL boolean expression over the input's columns.
    #[serde(rename = "where")]
    pub condition: String,
    /// Subtasks (default: the pipeline's).
    #[serde(default)]
    #[schemars(range(min = 1, max = 1024))]
    pub parallelism: Option<u32>,
}

impl Transform for Filter {
    fn inputs(&self) -> Vec<(&str, String)> {
        vec![(&self.input, "/input".into())]
    }

    fn check(&self, cx: &mut Checker, ptr: &str, inputs: &[(&str, &StreamSchema)]) -> Option<Outputs> {
        let (name, input) = inputs[0];
        let at = format!("{ptr}/where");
        let (_, ty) = cx.expression(&at, &self.condition, name, input)?;
        if ty != arrow::datatypes::DataType::Boolean && ty != arrow::datatypes::DataType::Null {
            cx.error(Code::NotBoolean, &at, format!("the condition is {}, not boolean", crate::plan::type_name(&ty)))
                .help = Some("compare it, such as `amount > 100` or `status = 'paid'`".into());
            return None;
        }
        Some(input.clone().into())
    }

    fn parallelism(&self) -> Option<u32> {
        self.parallelism
    }

    fn keeps(&self, input: &StreamSchema) -> Option<Vec<crate::plan::predicate::ColumnBound>> {
        let df = datafusion::common::DFSchema::try_from_qualified_schema(&self.input, &input.schema).ok()?;
        let condition = crate::runtime::expr::Compiler::default().parse(&self.condition, &df).ok()?;
        Some(crate::plan::predicate::bounds(&condition))
    }

    fn describe(&self) -> String {
        format!("filter {}", self.condition)
    }

    fn operator(
        &self,
        _: &BuildContext,
        inputs: &[(&str, &StreamSchema)],
        _: &StreamSchema,
    ) -> Result<Box<dyn Operator>, OperatorError> {
        let (name, input) = inputs[0];
        let program = crate::runtime::expr::Compiler::default().filter(&self.condition, name, &input.schema)?;
        Ok(Box::new(super::ProgramOperator(program)))
    }
}
