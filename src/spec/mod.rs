//! The spec: the typed model of a pipeline file, and its validation.
//!
//! A spec is YAML or TOML; both load into one JSON value with a source map
//! ([`loader`]). Validation then runs in order, each phase only when the previous one passed:
//! the JSON Schema generated from these types ([`structure`]), deserialization into
//! [`Pipeline`], typed `${...}` references, names and the graph ([`names`]), and types
//! ([`types`]), where an Arrow schema is propagated through every transform and each
//! expression is compiled by DataFusion. Everything here is offline: no file but the spec
//! is read, no environment variable is looked at unless asked, nothing touches the network.

pub mod check;
pub mod loader;
pub mod names;
pub mod structure;
pub mod types;
pub mod values;

use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::connectors::{SinkConfig, SourceConfig};
use crate::diagnostics::{Code, Diagnostic, Span};
use crate::operators::TransformConfig;
use check::StreamSchema;
use loader::{SourceMap, Syntax};
use values::{Duration, Reference};

/// The spec versions this build reads.
pub const SUPPORTED_VERSION: u32 = 1;

/// A pipeline: sources, transforms and sinks, with how it runs and how it is tested.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Sluice pipeline spec")]
pub struct Pipeline {
    /// Spec format version; `1`.
    pub version: u32,
    /// The pipeline's name; it identifies its checkpoints.
    #[schemars(length(min = 1))]
    pub name: String,
    /// What the pipeline is for.
    #[serde(default)]
    pub description: Option<String>,
    /// Default number of subtasks per operator (default 1).
    #[serde(default)]
    #[schemars(range(min = 1, max = 1024))]
    pub parallelism: Option<u32>,
    /// Number of key groups: the most subtasks a keyed operator can ever be rescaled to
    /// (default, as in Flink: 1.5 × the highest parallelism rounded up to a power of two, at
    /// least 128; set it explicitly to keep state compatible when parallelism changes).
    #[serde(default)]
    #[schemars(range(min = 1, max = 32768))]
    pub max_parallelism: Option<u32>,
    /// When and where state is checkpointed.
    #[serde(default)]
    pub checkpoints: Option<Checkpoints>,
    /// What happens after a failure.
    #[serde(default)]
    pub restart: Option<Restart>,
    /// Where keyed state lives.
    #[serde(default)]
    pub state: Option<StateConfig>,
    /// Named inputs.
    pub sources: IndexMap<String, SourceConfig>,
    /// Named operators between sources and sinks.
    #[serde(default)]
    pub transforms: IndexMap<String, TransformConfig>,
    /// Named outputs.
    pub sinks: IndexMap<String, SinkConfig>,
    /// Examples run by `sluice test`: rows in, rows expected out.
    #[serde(default)]
    pub tests: Vec<TestCase>,
}

impl Pipeline {
    /// The pipeline-wide default parallelism.
    pub fn default_parallelism(&self) -> u32 {
        self.parallelism.unwrap_or(1)
    }

    /// The number of key groups: `max_parallelism`, or Flink's default for the highest
    /// parallelism in the pipeline.
    pub fn key_groups(&self) -> u32 {
        self.max_parallelism.unwrap_or_else(|| {
            let highest = std::iter::once(self.parallelism)
                .chain(self.sources.values().map(|s| s.get().parallelism()))
                .chain(self.transforms.values().map(|t| t.get().parallelism()))
                .chain(self.sinks.values().map(|s| s.get().parallelism()))
                .flatten()
                .max()
                .unwrap_or(1);
            (highest + highest / 2).next_power_of_two().clamp(128, 32768)
        })
    }
}

/// Checkpoint settings.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Checkpoints {
    /// Time between checkpoints.
    pub interval: Duration,
    /// Where checkpoints go: `file://folder` or `s3://bucket/prefix`.
    #[schemars(regex(pattern = r"^(file|s3)://.+"))]
    pub storage: String,
    /// A checkpoint not complete after this long is abandoned (default 10m).
    #[serde(default)]
    pub timeout: Option<Duration>,
    /// Least time between the end of one checkpoint and the start of the next.
    #[serde(default)]
    pub min_pause: Option<Duration>,
    /// Complete checkpoints kept (default 1); older ones are deleted. Savepoints are kept.
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub retain: Option<u32>,
    /// Checkpoints that may fail in a row before the job fails (default: any number; the job
    /// keeps running and keeps trying).
    #[serde(default)]
    pub tolerable_failures: Option<u32>,
    /// S3 settings for an `s3://` storage: region, endpoint, path-style addressing and
    /// credentials (default: the standard AWS environment and credential chain).
    #[serde(default)]
    pub s3: Option<crate::checkpoint::S3Options>,
}

/// Restart strategy after a failure; the job restarts from its latest checkpoint.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(tag = "strategy", rename_all = "snake_case", deny_unknown_fields)]
pub enum Restart {
    /// Fail the job on the first failure.
    None,
    /// Restart after a fixed delay, at most `attempts` times.
    FixedDelay {
        /// Restarts before giving up.
        #[schemars(range(min = 1))]
        attempts: u32,
        /// Wait before each restart.
        delay: Duration,
    },
    /// Restart while fewer than `max_failures` failures happen within `interval`.
    FailureRate {
        /// Failures tolerated per interval.
        #[schemars(range(min = 1))]
        max_failures: u32,
        /// The measuring interval.
        interval: Duration,
        /// Wait before each restart.
        delay: Duration,
    },
    /// Restart with a delay doubling from `initial_delay` up to `max_delay`.
    ExponentialBackoff {
        /// First delay.
        initial_delay: Duration,
        /// Largest delay.
        max_delay: Duration,
        /// Factor between delays (default 2).
        #[serde(default)]
        #[schemars(range(min = 1.0))]
        multiplier: Option<f64>,
        /// Running this long without failure resets the delay (default: 1h).
        #[serde(default)]
        reset_after: Option<Duration>,
    },
}

/// Where keyed state lives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StateBackend {
    /// In memory; checkpointed whole.
    #[default]
    Memory,
    /// On local disk in RocksDB; for state larger than memory.
    Rocksdb,
}

/// State settings.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// `memory` (default) or `rocksdb`.
    #[serde(default)]
    pub backend: StateBackend,
    /// Local folder for RocksDB (default: a temporary folder). Each run keeps its state in a
    /// folder of its own inside it and removes that folder when it ends.
    #[serde(default)]
    pub path: Option<String>,
    /// Memory keyed state may use for the whole job, divided among its stateful subtasks
    /// (default 256MB): RocksDB's block cache and write buffers, and a quarter for the
    /// in-memory tier of tumbling and hopping windows (on either backend).
    #[serde(default)]
    pub memory: Option<values::ByteSize>,
}

/// One example: rows given to sources (and watermarks), rows expected at sinks.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    /// What the test shows.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Source name → rows, in order; `{ watermark: "2026-01-01T01:00:00Z" }` advances event time.
    #[serde(default)]
    pub given: IndexMap<String, Vec<serde_json::Map<String, serde_json::Value>>>,
    /// Sink name → rows expected.
    #[serde(default)]
    pub expect: IndexMap<String, Vec<serde_json::Map<String, serde_json::Value>>>,
    /// Compare rows in order (default: as a multiset).
    #[serde(default)]
    pub ordered: bool,
}

/// What a stream in a validated spec is: who produces it, and its schema.
#[derive(Debug, Clone)]
pub struct Stream {
    /// The source or transform that produces it.
    pub producer: String,
    /// Its columns and event time.
    pub schema: StreamSchema,
}

/// A spec that passed validation, with what the checks learned.
#[derive(Debug, Clone)]
pub struct Validated {
    /// The pipeline.
    pub pipeline: Pipeline,
    /// Every named stream (sources, transforms, side outputs), in topological order.
    pub streams: IndexMap<String, Stream>,
}

/// A reference to a value from outside, as found in the spec.
#[derive(Debug, Clone)]
pub struct FoundReference {
    /// The reference.
    pub reference: Reference,
    /// Where it is written.
    pub span: Span,
    /// JSON pointer of the string holding it.
    pub pointer: String,
}

/// Options of a validation run.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Check that referenced environment variables and files exist (never printing values).
    pub resolve_env: bool,
}

/// The outcome of validating one file.
#[derive(Debug, Clone)]
pub struct Report {
    /// The file.
    pub file: PathBuf,
    /// Everything found, errors and warnings, in file order.
    pub diagnostics: Vec<Diagnostic>,
    /// The typed, checked spec, when there were no errors.
    pub validated: Option<Validated>,
    /// Every `${...}` reference, unresolved.
    pub references: Vec<FoundReference>,
    /// The source map, for rendering.
    pub map: SourceMap,
}

impl Report {
    /// Whether the file has errors.
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }
}

/// Validates a spec file on disk. I/O errors are returned, not reported as diagnostics.
pub fn validate_file(path: &Path, options: &Options) -> std::io::Result<Report> {
    let syntax = Syntax::from_path(path)
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a .yaml, .yml or .toml file"))?;
    let text = std::fs::read_to_string(path)?;
    Ok(validate_text(path, &text, syntax, options))
}

/// Validates spec text as if read from `file`.
pub fn validate_text(file: &Path, text: &str, syntax: Syntax, options: &Options) -> Report {
    let loaded = loader::load(text, syntax);
    let mut diagnostics = loader::diagnostics_for(&loaded, file);
    let map = loaded.map;
    let mut report =
        Report { file: file.to_path_buf(), diagnostics: Vec::new(), validated: None, references: Vec::new(), map };
    let Some(value) = loaded.value else {
        report.diagnostics = diagnostics;
        return report;
    };
    if !value.is_object() {
        let span = report.map.value_span("");
        diagnostics.push(
            Diagnostic::new(
                Code::UnsupportedDocument,
                "a spec is a mapping with `version`, `name`, `sources` and `sinks`",
            )
            .at(file, span),
        );
        report.diagnostics = diagnostics;
        return report;
    }
    diagnostics.extend(structure::check(&value, syntax, file, &report.map));
    let (refs, ref_diags) = names::references(&value, file, &report.map, options);
    report.references = refs;
    diagnostics.extend(ref_diags);
    if diagnostics.iter().any(Diagnostic::is_error) {
        report.diagnostics = sorted(diagnostics);
        return report;
    }
    let pipeline: Pipeline = match serde_path_to_error::deserialize(value) {
        Ok(p) => p,
        Err(e) => {
            diagnostics.push(typed_value_error(&e, file, &report.map));
            report.diagnostics = sorted(diagnostics);
            return report;
        }
    };
    let mut cx = check::Checker::new(file, &report.map);
    let graph = names::check(&pipeline, &mut cx);
    let streams = match graph {
        Some(order) if !cx.has_errors() => with_big_stack(|| types::check(&pipeline, &order, &mut cx)),
        _ => None,
    };
    diagnostics.extend(cx.into_diagnostics());
    let ok = !diagnostics.iter().any(Diagnostic::is_error);
    report.diagnostics = sorted(diagnostics);
    if ok {
        report.validated = streams.map(|streams| Validated { pipeline, streams });
    }
    report
}

/// Stack for type checking: DataFusion recurses over expressions, and some of its recursion
/// (cloning, dropping) is unguarded. Expression size limits keep it shallow; this is the margin.
const CHECK_STACK_BYTES: usize = 256 << 20;

/// Runs `f` on a thread with a [`CHECK_STACK_BYTES`] stack (only touched pages use memory).
fn with_big_stack<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        let spawned = std::thread::Builder::new().name("sluice-check".into()).stack_size(CHECK_STACK_BYTES);
        match spawned.spawn_scoped(scope, f) {
            Ok(handle) => handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            Err(e) => panic!("cannot start the type-checking thread: {e}"),
        }
    })
}

/// A value that fits the JSON Schema but not its Rust type (a fraction where a whole number
/// belongs, a number too large, a duration too long), located at its path.
fn typed_value_error(e: &serde_path_to_error::Error<serde_json::Error>, file: &Path, map: &SourceMap) -> Diagnostic {
    use serde_path_to_error::Segment;
    let mut pointer = String::new();
    for segment in e.path().iter() {
        match segment {
            Segment::Map { key } => pointer = loader::push_pointer(&pointer, key),
            Segment::Seq { index } => pointer = format!("{pointer}/{index}"),
            Segment::Enum { .. } | Segment::Unknown => {}
        }
    }
    let field = loader::pointer_tokens(&pointer).last().cloned().unwrap_or_else(|| "value".into());
    let inner = e.inner().to_string();
    let (code, message) = if inner.starts_with("invalid type: floating point") {
        (Code::WrongType, format!("`{field}` must be a whole number"))
    } else if inner.starts_with("invalid value: integer") {
        (Code::OutOfRange, format!("`{field}` is out of range ({})", inner.trim_start_matches("invalid value: ")))
    } else if inner.contains("too large") || inner.contains("duration") {
        (Code::InvalidDuration, format!("`{field}`: {inner}"))
    } else {
        (Code::InvalidStructure, format!("`{field}`: {inner}"))
    };
    let mut d = Diagnostic::new(code, message).at(file, map.value_span(&pointer));
    d.pointer = Some(pointer);
    d
}

fn sorted(mut d: Vec<Diagnostic>) -> Vec<Diagnostic> {
    d.sort_by_key(|d| d.span.map(|s| (s.line, s.column)).unwrap_or((0, 0)));
    d
}

/// The JSON Schema of specs, as `sluice schema` prints it and `schemas/` keeps it.
pub fn json_schema() -> serde_json::Value {
    let mut schema = serde_json::to_value(schemars::schema_for!(Pipeline)).expect("schema serializes");
    if let Some(obj) = schema.as_object_mut() {
        obj.insert("$id".into(), "https://sluice.dev/schemas/pipeline.schema.json".into());
    }
    schema
}
