//! Transforms: the operators between sources and sinks.
//!
//! Each transform lives in its own file and owns its config type, its offline type check
//! (input schemas in, output schema out, expressions compiled by DataFusion) and what the plan
//! needs to know of it: how its input is partitioned and what state it keeps. The
//! [`TransformConfig`] enum below, tagged by the spec's `type:` key, is the one registry.

pub mod filter;
pub mod select;
pub mod sql;
pub mod union;
pub mod window_aggregate;

pub use crate::plan::{InputPartitioning, StateKind};
pub use crate::runtime::{BuildContext, Operator, OperatorError, Output};
pub use crate::spec::check::{Checker, StreamSchema};

/// The streams a transform produces: its main output and any named side outputs.
#[derive(Debug, Clone)]
pub struct Outputs {
    /// The stream named after the transform.
    pub main: StreamSchema,
    /// Extra named streams, such as a window's late rows.
    pub side: Vec<(String, StreamSchema)>,
}

impl From<StreamSchema> for Outputs {
    fn from(main: StreamSchema) -> Self {
        Outputs { main, side: Vec::new() }
    }
}

/// What every transform can be asked offline.
pub trait Transform {
    /// The names of the streams it reads, with the JSON pointer (relative to the transform)
    /// where each is named.
    fn inputs(&self) -> Vec<(&str, String)>;
    /// Names of side outputs it creates, with the relative pointer where each is named.
    fn side_outputs(&self) -> Vec<(&str, String)> {
        Vec::new()
    }
    /// Type-checks the transform against its input schemas (in the order of
    /// [`Transform::inputs`]) and returns its outputs. Problems go to `cx` under `ptr`.
    fn check(&self, cx: &mut Checker, ptr: &str, inputs: &[(&str, &StreamSchema)]) -> Option<Outputs>;
    /// How rows of input `input` (by position in [`Transform::inputs`]) reach its subtasks;
    /// each input is partitioned on its own, by its own key columns.
    fn partitioning(&self, _input: usize) -> InputPartitioning {
        InputPartitioning::Forward
    }
    /// Subtasks requested, if it overrides the pipeline's parallelism.
    fn parallelism(&self) -> Option<u32>;
    /// What state it keeps.
    fn state(&self) -> StateKind {
        StateKind::None
    }
    /// The keyed states it declares up front, in table order: what `sluice plan` shows and
    /// what its state backend is opened with.
    fn states(&self) -> Vec<crate::state::backend::StateDescriptor> {
        Vec::new()
    }
    /// The columns of its (single) input it reads, when that is fewer than all: columns
    /// nobody reads are pruned before the edge into it. `None` reads every column.
    fn reads(&self, _input: &StreamSchema) -> Option<Vec<String>> {
        None
    }
    /// Comparisons that hold for every row of its (single) input it can output or act on
    /// (such as the `column op constant` terms of a filter's condition): a source may skip
    /// data where one is provably false. `None` when it may use any row.
    fn keeps(&self, _input: &StreamSchema) -> Option<Vec<crate::plan::predicate::ColumnBound>> {
        None
    }
    /// One line for `sluice plan`.
    fn describe(&self) -> String;
    /// Builds the running operator for one subtask; `inputs` and `output` are the schemas
    /// validation computed.
    fn operator(
        &self,
        ctx: &BuildContext,
        inputs: &[(&str, &StreamSchema)],
        output: &StreamSchema,
    ) -> Result<Box<dyn Operator>, OperatorError>;
}

/// Runs a compiled stateless program on every batch.
struct ProgramOperator(crate::runtime::expr::Program);

impl Operator for ProgramOperator {
    fn process(
        &mut self,
        _: usize,
        batch: arrow::record_batch::RecordBatch,
        out: &mut dyn Output,
    ) -> Result<(), OperatorError> {
        let result = self.0.run(batch)?;
        out.emit(result)
    }
}

macro_rules! registry {
    ($($variant:ident($ty:ty) = $name:literal,)*) => {
        /// A transform in a spec, by `type`.
        #[derive(Debug, Clone, serde::Deserialize, schemars::JsonSchema)]
        #[serde(tag = "type")]
        pub enum TransformConfig {
            $(#[doc = concat!("The `", $name, "` transform.")] #[serde(rename = $name)] $variant($ty),)*
        }

        impl TransformConfig {
            /// Names of all transform types, as written in `type:`.
            pub const NAMES: &'static [&'static str] = &[$($name,)*];

            /// The transform's type name.
            pub fn name(&self) -> &'static str {
                match self { $(Self::$variant(_) => $name,)* }
            }

            /// The transform behind its trait.
            pub fn get(&self) -> &dyn Transform {
                match self { $(Self::$variant(t) => t,)* }
            }
        }
    };
}

registry! {
    Filter(filter::Filter) = "filter",
    Select(select::Select) = "select",
    Sql(sql::Sql) = "sql",
    WindowAggregate(window_aggregate::WindowAggregate) = "window_aggregate",
    Union(union::Union) = "union",
}
