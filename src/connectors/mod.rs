//! Connectors: where rows come from (sources) and where they go (sinks).
//!
//! Each connector lives in its own file and owns its config type (with serde and JSON Schema
//! derived from it), its offline checks and its description in the plan. This module is the
//! one registry: the [`SourceConfig`] and [`SinkConfig`] enums, tagged by the spec's
//! `connector:` key, list every connector. Adding a connector means adding its file and one
//! line to one of the `registry!` lists below. Checks here are pure: no file, network or
//! environment access (that is `validate --connect`, later, and `run`).

pub use crate::plan::StateKind;
pub use crate::runtime::{BuildContext, Operator, OperatorError, SourceReader};
pub use crate::spec::check::{Checker, StreamSchema};
use crate::spec::values::EventTime;

pub mod blackhole;
pub mod datagen;
pub mod file;
pub mod stdout;

/// What every source can be asked offline.
pub trait Source {
    /// Checks the config and returns the schema of the stream it produces. Problems are
    /// reported through `cx` at JSON pointers under `ptr`, the source's own pointer.
    fn check(&self, cx: &mut Checker, ptr: &str) -> Option<StreamSchema>;
    /// Subtasks requested for this source, if it overrides the pipeline's parallelism.
    fn parallelism(&self) -> Option<u32>;
    /// What the source keeps in checkpoints.
    fn state(&self) -> StateKind;
    /// One line for `sluice plan`.
    fn describe(&self) -> String;
    /// Which column holds event time, and how watermarks follow it.
    fn event_time(&self) -> Option<&EventTime>;
    /// The stream that receives records this source cannot read, if any.
    fn dead_letter(&self) -> Option<&str> {
        None
    }
    /// Enumerates the units of input (such as files) once at the start; they are dealt to
    /// subtasks round-robin through [`BuildContext::splits`]. Sources without splits return
    /// none and divide work by subtask index.
    fn splits(&self) -> Result<Vec<String>, OperatorError> {
        Ok(Vec::new())
    }
    /// Whether columns declared non-nullable must be read even when nothing downstream reads
    /// them (to refuse empty values, as input read from outside may hold). A source whose
    /// values are never empty says no.
    fn checks_non_nullable(&self) -> bool {
        true
    }
    /// Opens the reader of one subtask. `schema` is the schema validation computed.
    fn reader(&self, ctx: &BuildContext, schema: &StreamSchema) -> Result<Box<dyn SourceReader>, OperatorError>;
}

/// What every sink can be asked offline.
pub trait Sink {
    /// The stream the sink writes.
    fn input(&self) -> &str;
    /// Checks that the sink can write rows of `input`. Problems are reported under `ptr`.
    fn check(&self, cx: &mut Checker, ptr: &str, input: &StreamSchema);
    /// Subtasks requested for this sink, if it overrides the pipeline's parallelism.
    fn parallelism(&self) -> Option<u32>;
    /// What the sink keeps in checkpoints.
    fn state(&self) -> StateKind;
    /// One line for `sluice plan`.
    fn describe(&self) -> String;
    /// Opens the writer of one subtask, an operator without outputs.
    fn writer(&self, ctx: &BuildContext, input: &StreamSchema) -> Result<Box<dyn Operator>, OperatorError>;
    /// Before a job with checkpoints starts: finishes the commits of the checkpoint it restores
    /// (`restored` holds what each of sink `name`'s subtasks stored in it; empty without one)
    /// and removes uncommitted output it does not reference. Must be idempotent.
    fn recover(&self, _name: &str, _restored: &[&serde_json::Value]) -> Result<(), OperatorError> {
        Ok(())
    }
}

macro_rules! registry {
    ($(#[$meta:meta])* $enum:ident: $trait:ident { $($variant:ident($ty:ty) = $name:literal,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, serde::Deserialize, schemars::JsonSchema)]
        #[serde(tag = "connector")]
        pub enum $enum {
            $(#[doc = concat!("The `", $name, "` connector.")] #[serde(rename = $name)] $variant($ty),)*
        }

        impl $enum {
            /// Names of all connectors of this kind, as written in `connector:`.
            pub const NAMES: &'static [&'static str] = &[$($name,)*];

            /// The connector's name.
            pub fn name(&self) -> &'static str {
                match self { $(Self::$variant(_) => $name,)* }
            }

            /// The connector behind its trait.
            pub fn get(&self) -> &dyn $trait {
                match self { $(Self::$variant(c) => c,)* }
            }
        }
    };
}

registry! {
    /// A source in a spec, by `connector`.
    SourceConfig: Source {
        File(file::FileSource) = "file",
        Datagen(datagen::DatagenSource) = "datagen",
    }
}

registry! {
    /// A sink in a spec, by `connector`.
    SinkConfig: Sink {
        File(file::FileSink) = "file",
        Stdout(stdout::StdoutSink) = "stdout",
        Blackhole(blackhole::BlackholeSink) = "blackhole",
    }
}

/// Checks a source's `event_time` against its schema and returns the event-time column
/// (`Ok(None)` without one); `Err(())` when it was reported as wrong.
#[allow(clippy::result_unit_err)]
pub fn check_event_time(
    cx: &mut Checker,
    ptr: &str,
    schema: &arrow::datatypes::Schema,
    event_time: Option<&crate::spec::values::EventTime>,
) -> Result<Option<String>, ()> {
    use crate::diagnostics::{Code, did_you_mean};
    let Some(et) = event_time else { return Ok(None) };
    let at = format!("{ptr}/event_time/column");
    match schema.field_with_name(&et.column) {
        Ok(f) if crate::spec::values::is_timestamp(f.data_type()) => Ok(Some(et.column.clone())),
        Ok(f) => {
            cx.error(
                Code::EventTimeColumn,
                &at,
                format!(
                    "event-time column `{}` is {}, not a timestamp",
                    et.column,
                    crate::plan::type_name(f.data_type())
                ),
            )
            .help = Some(format!("declare `{}: timestamp` in the schema", et.column));
            Err(())
        }
        Err(_) => {
            let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            let help = did_you_mean(&et.column, names.iter().copied())
                .unwrap_or_else(|| format!("the schema has columns: {}", names.join(", ")));
            cx.error(Code::EventTimeColumn, &at, format!("event-time column `{}` is not in the schema", et.column))
                .help = Some(help);
            Err(())
        }
    }
}
