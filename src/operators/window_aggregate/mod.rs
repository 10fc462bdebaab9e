//! `window_aggregate`: aggregates per key over tumbling, hopping or session windows of event
//! time, with allowed lateness and a side output for rows later than that.

use std::sync::Arc;

use arrow::datatypes::{Field, Schema};
use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::Deserialize;

mod acc;
pub mod operator;

use super::{
    BuildContext, Checker, InputPartitioning, Operator, OperatorError, Outputs, StateKind, StreamSchema, Transform,
};
use crate::diagnostics::{Code, did_you_mean};
use crate::spec::loader::push_pointer;
use crate::spec::values::{Duration, timestamp_type};

/// The window shape.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Window {
    /// Fixed, non-overlapping windows of `size`.
    Tumbling {
        /// Window length.
        size: Duration,
    },
    /// Windows of `size` starting every `slide`; a row falls in `size / slide` windows.
    Hopping {
        /// Window length.
        size: Duration,
        /// Distance between window starts.
        slide: Duration,
    },
    /// Windows per key that close after `gap` without rows.
    Session {
        /// Inactivity that ends a session.
        gap: Duration,
    },
}

/// Aggregates per key and event-time window. Results are emitted when the watermark passes
/// the window end; output rows carry the key columns, `window_start`, `window_end` and one
/// column per aggregate.
///
/// ```yaml
/// per_customer:
///   type: window_aggregate
///   input: orders
///   key: [customer_id]
///   window: { type: tumbling, size: 1h }
///   allowed_lateness: 1m
///   late_output: late_orders
///   aggregates: { total: "sum(amount)", orders: "count(*)" }
/// ```
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WindowAggregate {
    /// The stream to aggregate; it must have event time.
    pub input: String,
    /// Columns to group by; rows are hash-partitioned on them. Empty: one global group.
    #[serde(default)]
    pub key: Vec<String>,
    /// The window shape.
    pub window: Window,
    /// How long after a window closes late rows still update it (default 0s).
    #[serde(default)]
    pub allowed_lateness: Option<Duration>,
    /// Name of a stream that receives rows too late for their window; without it they are
    /// counted as dropped.
    #[serde(default)]
    pub late_output: Option<String>,
    /// Output column → aggregate: `count(*)`, `count(x)`, `count(DISTINCT x)`, `sum`, `min`,
    /// `max`, `avg`.
    #[schemars(length(min = 1))]
    pub aggregates: IndexMap<String, String>,
    /// Subtasks (default: the pipeline's; 1 when there is no key).
    #[serde(default)]
    #[schemars(range(min = 1, max = 1024))]
    pub parallelism: Option<u32>,
}

const WINDOW_COLUMNS: [&str; 2] = ["window_start", "window_end"];

/// The most windows one row may fall in (`size / slide` of a hopping window).
pub const MAX_WINDOWS_PER_ROW: u64 = 1000;

/// The longest window size, slide, session gap or allowed lateness: 36500 days (about 100
/// years), far from where event-time arithmetic could overflow.
pub const MAX_WINDOW_DURATION: Duration = Duration(std::time::Duration::from_millis(36_500 * 86_400_000));

impl Window {
    /// Why the window cannot run, with the relative pointer of the value at fault.
    pub fn problem(&self) -> Option<(&'static str, String)> {
        let too_long = |what: &str, d: &Duration| {
            format!("{what} {d} is longer than the longest a window setting may be ({MAX_WINDOW_DURATION})")
        };
        match self {
            Window::Tumbling { size } | Window::Hopping { size, .. } if size.as_millis() == 0 => {
                Some(("/size", "a window cannot be 0 long".into()))
            }
            Window::Tumbling { size } | Window::Hopping { size, .. } if *size > MAX_WINDOW_DURATION => {
                Some(("/size", too_long("size", size)))
            }
            Window::Hopping { size, slide }
                if slide.as_millis() == 0 || slide > size || size.as_millis() % slide.as_millis() != 0 =>
            {
                Some(("/slide", format!("slide {slide} must be more than 0, at most the size {size}, and divide it")))
            }
            Window::Hopping { size, slide } if size.as_millis() / slide.as_millis() > MAX_WINDOWS_PER_ROW => Some((
                "/slide",
                format!(
                    "size {size} with slide {slide} puts every row in {} windows; at most {MAX_WINDOWS_PER_ROW} are allowed",
                    size.as_millis() / slide.as_millis()
                ),
            )),
            Window::Session { gap } if gap.as_millis() == 0 => Some(("/gap", "a session gap cannot be 0".into())),
            Window::Session { gap } if *gap > MAX_WINDOW_DURATION => Some(("/gap", too_long("gap", gap))),
            _ => None,
        }
    }
}

impl Transform for WindowAggregate {
    fn inputs(&self) -> Vec<(&str, String)> {
        vec![(&self.input, "/input".into())]
    }

    fn side_outputs(&self) -> Vec<(&str, String)> {
        self.late_output.iter().map(|n| (n.as_str(), "/late_output".to_string())).collect()
    }

    fn check(&self, cx: &mut Checker, ptr: &str, inputs: &[(&str, &StreamSchema)]) -> Option<Outputs> {
        let (name, input) = inputs[0];
        let mut ok = true;
        if input.event_time.is_none() {
            cx.error(
                Code::NoEventTime,
                &format!("{ptr}/input"),
                format!("`{name}` has no event time, which windows need"),
            )
            .help = Some(
                "declare `event_time: { column: ... }` on the source, and keep that column through any `select`".into(),
            );
            ok = false;
        }
        if let Some((at, message)) = self.window.problem() {
            cx.error(Code::InvalidWindow, &format!("{ptr}/window{at}"), message);
            ok = false;
        }
        if let Some(lateness) = self.allowed_lateness
            && lateness > MAX_WINDOW_DURATION
        {
            cx.error(
                Code::InvalidWindow,
                &format!("{ptr}/allowed_lateness"),
                format!("allowed lateness {lateness} is longer than the longest it may be ({MAX_WINDOW_DURATION})"),
            );
            ok = false;
        }
        let mut fields = Vec::new();
        let columns = input.column_names();
        for (i, k) in self.key.iter().enumerate() {
            if self.key[..i].contains(k) {
                cx.error(
                    Code::ColumnConflict,
                    &format!("{ptr}/key/{i}"),
                    format!("key column `{k}` is listed twice"),
                )
                .help = Some("list each key column once".into());
                ok = false;
                continue;
            }
            match input.schema.field_with_name(k) {
                Ok(f) => fields.push(f.as_ref().clone()),
                Err(_) => {
                    let help = did_you_mean(k, columns.iter().copied())
                        .unwrap_or_else(|| format!("the input has columns: {}", columns.join(", ")));
                    cx.error(Code::UnknownColumn, &format!("{ptr}/key/{i}"), format!("unknown key column `{k}`"))
                        .help = Some(help);
                    ok = false;
                }
            }
        }
        fields.push(Field::new(WINDOW_COLUMNS[0], timestamp_type(), false));
        fields.push(Field::new(WINDOW_COLUMNS[1], timestamp_type(), false));
        for (out, agg) in &self.aggregates {
            let at = push_pointer(&format!("{ptr}/aggregates"), out);
            if self.key.contains(out) || WINDOW_COLUMNS.contains(&out.as_str()) {
                cx.error_at_key(
                    Code::ColumnConflict,
                    &at,
                    format!("output column `{out}` is already a key or window column"),
                )
                .help = Some("rename the aggregate".into());
                ok = false;
                continue;
            }
            match cx.aggregate(&at, agg, name, input) {
                Some(ty) => fields.push(Field::new(out, ty, true)),
                None => ok = false,
            }
        }
        if !ok {
            return None;
        }
        let main = StreamSchema { schema: Arc::new(Schema::new(fields)), event_time: Some(WINDOW_COLUMNS[0].into()) };
        let side = self.late_output.iter().map(|n| (n.clone(), input.clone())).collect();
        Some(Outputs { main, side })
    }

    fn partitioning(&self, _input: usize) -> InputPartitioning {
        if self.key.is_empty() { InputPartitioning::Single } else { InputPartitioning::Hash(self.key.clone()) }
    }

    fn parallelism(&self) -> Option<u32> {
        self.parallelism
    }

    fn state(&self) -> StateKind {
        StateKind::Keyed("window accumulators + event-time timers")
    }

    fn states(&self) -> Vec<crate::state::backend::StateDescriptor> {
        operator::descriptors(&self.window)
    }

    fn reads(&self, input: &StreamSchema) -> Option<Vec<String>> {
        // Late rows leave whole, with every column of the input.
        if self.late_output.is_some() {
            return None;
        }
        let mut read: Vec<String> = self.key.clone();
        read.extend(input.event_time.clone());
        let df = datafusion::common::DFSchema::try_from(input.schema.as_ref().clone()).ok()?;
        let compiler = crate::runtime::expr::Compiler::default();
        for sql in self.aggregates.values() {
            // An aggregate that does not parse here is refused elsewhere; read everything.
            let expr = compiler.parse(sql, &df).ok()?;
            read.extend(expr.column_refs().into_iter().map(|c| c.name.clone()));
        }
        Some(read)
    }

    fn operator(
        &self,
        ctx: &BuildContext,
        inputs: &[(&str, &StreamSchema)],
        output: &StreamSchema,
    ) -> Result<Box<dyn Operator>, OperatorError> {
        let (name, input) = inputs[0];
        Ok(Box::new(operator::WindowOperator::new(self, ctx, name, input, output)?))
    }

    fn describe(&self) -> String {
        let w = match &self.window {
            Window::Tumbling { size } => format!("tumbling {size}"),
            Window::Hopping { size, slide } => format!("hopping {size} every {slide}"),
            Window::Session { gap } => format!("session gap {gap}"),
        };
        let aggs: Vec<String> = self.aggregates.iter().map(|(k, v)| format!("{v} AS {k}")).collect();
        let key = if self.key.is_empty() { "global".into() } else { format!("by {}", self.key.join(", ")) };
        format!("window_aggregate {w} {key}: {}", aggs.join(", "))
    }
}
