//! The `datagen` connector: seeded random rows from a declared schema, or the Nexmark
//! benchmark's persons, auctions and bids.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema};
use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::Deserialize;

pub mod generator;
pub mod nexmark;

use super::{Checker, Source, StateKind, StreamSchema, check_event_time};
use crate::diagnostics::Code;
use crate::runtime::{BuildContext, OperatorError, SourceReader};
use crate::spec::values::{ColumnType, EventTime, timestamp_type};

/// How one generated column gets its values.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum DatagenColumn {
    /// Just the type: uniform random values of it.
    Type(ColumnType),
    /// The type and how to draw values.
    Options(DatagenOptions),
}

/// Value options for one generated column.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DatagenOptions {
    /// The column type.
    #[serde(rename = "type")]
    pub ty: ColumnType,
    /// Smallest value (numbers) or earliest (timestamps, as RFC 3339 text).
    #[serde(default)]
    pub min: Option<serde_json::Value>,
    /// Largest value (numbers) or latest (timestamps).
    #[serde(default)]
    pub max: Option<serde_json::Value>,
    /// Draw uniformly from these values instead.
    #[serde(default)]
    pub values: Option<Vec<serde_json::Value>>,
    /// Count up from `min` (or 0) instead of drawing at random.
    #[serde(default)]
    pub sequence: bool,
    /// Fraction of rows where the column is null, from 0 to 1.
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub null_rate: Option<f64>,
    /// Length of generated strings and bytes (default 8).
    #[serde(default)]
    #[schemars(range(min = 0, max = 1048576))]
    pub length: Option<u32>,
}

/// The three Nexmark streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NexmarkTable {
    /// People registering to buy or sell.
    Persons,
    /// Items put up for auction.
    Auctions,
    /// Bids on auctions.
    Bids,
}

/// Nexmark generator options.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NexmarkOptions {
    /// Which of the three streams this source emits.
    pub table: NexmarkTable,
    /// Event time of the first event, RFC 3339 (default `2026-01-01T00:00:00Z`).
    #[serde(default)]
    pub first_event_time: Option<String>,
    /// Event-time rate of the whole generator, in events per second (default 10000).
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub events_per_second: Option<u64>,
}

/// Generates rows.
///
/// ```yaml
/// clicks:
///   connector: datagen
///   rows_per_second: 1000
///   count: 100000
///   seed: 7
///   schema:
///     user_id: { type: bigint, min: 1, max: 1000 }
///     page: { type: string, values: [home, cart, checkout] }
///     ts: timestamp
/// ```
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DatagenSource {
    /// The columns to generate, in order. Either this or `nexmark`.
    #[serde(default)]
    pub schema: Option<IndexMap<String, DatagenColumn>>,
    /// Generate a Nexmark stream instead of `schema`.
    #[serde(default)]
    pub nexmark: Option<NexmarkOptions>,
    /// Rows per second across all subtasks; as fast as possible when absent.
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub rows_per_second: Option<u64>,
    /// Rows to generate in all; endless when absent.
    #[serde(default)]
    pub count: Option<u64>,
    /// Seed of the random generator; the same seed gives the same rows (default 0).
    #[serde(default)]
    pub seed: Option<u64>,
    /// Which column holds event time, and how watermarks follow it.
    #[serde(default)]
    pub event_time: Option<EventTime>,
    /// Subtasks generating in parallel (default: the pipeline's).
    #[serde(default)]
    #[schemars(range(min = 1, max = 1024))]
    pub parallelism: Option<u32>,
}

/// The Arrow schema of a Nexmark stream, with the standard field names.
pub fn nexmark_schema(table: NexmarkTable) -> Arc<Schema> {
    let i = |n: &str| Field::new(n, DataType::Int64, false);
    let s = |n: &str| Field::new(n, DataType::Utf8, false);
    let t = |n: &str| Field::new(n, timestamp_type(), false);
    Arc::new(Schema::new(match table {
        NexmarkTable::Persons => vec![
            i("id"),
            s("name"),
            s("email_address"),
            s("credit_card"),
            s("city"),
            s("state"),
            t("date_time"),
            s("extra"),
        ],
        NexmarkTable::Auctions => vec![
            i("id"),
            s("item_name"),
            s("description"),
            i("initial_bid"),
            i("reserve"),
            t("date_time"),
            t("expires"),
            i("seller"),
            i("category"),
            s("extra"),
        ],
        NexmarkTable::Bids => {
            vec![i("auction"), i("bidder"), i("price"), s("channel"), s("url"), t("date_time"), s("extra")]
        }
    }))
}

impl Source for DatagenSource {
    /// Generated values are never empty where the schema says so.
    fn checks_non_nullable(&self) -> bool {
        false
    }

    fn check(&self, cx: &mut Checker, ptr: &str) -> Option<StreamSchema> {
        let schema = match (&self.schema, &self.nexmark) {
            (Some(_), Some(_)) => {
                cx.error_at_key(
                    Code::InvalidStructure,
                    &format!("{ptr}/nexmark"),
                    "give either `schema` or `nexmark`, not both",
                );
                return None;
            }
            (None, None) => {
                cx.error_at_key(
                    Code::MissingField,
                    ptr,
                    "a datagen source needs `schema` (columns to generate) or `nexmark`",
                );
                return None;
            }
            (None, Some(n)) => {
                if let Some(t) = &n.first_event_time
                    && chrono_like_rfc3339(t).is_none()
                {
                    cx.error(
                        Code::InvalidValue,
                        &format!("{ptr}/nexmark/first_event_time"),
                        format!("`{t}` is not an RFC 3339 time such as `2026-01-01T00:00:00Z`"),
                    );
                }
                nexmark_schema(n.table)
            }
            (Some(cols), None) => {
                if cols.is_empty() {
                    cx.error(Code::InvalidStructure, &format!("{ptr}/schema"), "the schema declares no columns");
                    return None;
                }
                let mut fields = Vec::new();
                for (name, col) in cols {
                    let at = format!("{ptr}/schema/{name}");
                    let (ty, nullable) = match col {
                        DatagenColumn::Type(t) => (*t, false),
                        DatagenColumn::Options(o) => {
                            check_options(cx, &at, o, self.count);
                            (o.ty, o.null_rate.is_some_and(|r| r > 0.0))
                        }
                    };
                    fields.push(Field::new(name, ty.arrow(), nullable));
                }
                Arc::new(Schema::new(fields))
            }
        };
        // A wrong event-time column is reported once, here, not again by every window below.
        let event_time = check_event_time(cx, ptr, &schema, self.event_time.as_ref()).ok()?;
        Some(StreamSchema { schema, event_time })
    }

    fn parallelism(&self) -> Option<u32> {
        self.parallelism
    }

    fn state(&self) -> StateKind {
        StateKind::Operator("generator position")
    }

    fn event_time(&self) -> Option<&EventTime> {
        self.event_time.as_ref()
    }

    fn reader(&self, ctx: &BuildContext, schema: &StreamSchema) -> Result<Box<dyn SourceReader>, OperatorError> {
        Ok(Box::new(generator::DatagenReader::new(self, ctx, schema.schema.clone())?))
    }

    fn describe(&self) -> String {
        let what = match &self.nexmark {
            Some(n) => format!("nexmark {:?}", n.table).to_lowercase(),
            None => "rows".into(),
        };
        let rate = self.rows_per_second.map_or("max rate".into(), |r| format!("{r}/s"));
        let count = self.count.map_or("endless".into(), |c| format!("{c} rows"));
        format!("datagen {what}, {rate}, {count}, seed {}", self.seed.unwrap_or(0))
    }
}

fn check_options(cx: &mut Checker, at: &str, o: &DatagenOptions, count: Option<u64>) {
    let numeric = matches!(o.ty, ColumnType::Int | ColumnType::Bigint | ColumnType::Float | ColumnType::Double);
    let time = matches!(o.ty, ColumnType::Timestamp | ColumnType::Date);
    let type_name = type_name(o.ty);
    let mut bounds = [None, None];
    for (i, (key, v)) in [("min", &o.min), ("max", &o.max)].into_iter().enumerate() {
        let Some(v) = v else { continue };
        let ptr = format!("{at}/{key}");
        if numeric {
            match number_for(o.ty, v) {
                Ok(n) => bounds[i] = Some(n),
                Err(why) => {
                    cx.error(Code::OutOfRange, &ptr, format!("`{key}` {why}"));
                }
            }
        } else if time {
            match v.as_str().and_then(chrono_like_rfc3339) {
                Some(ms) => bounds[i] = Some(ms as f64),
                None => {
                    cx.error(Code::WrongType, &ptr, format!("`{key}` must be an RFC 3339 time"));
                }
            }
        } else {
            cx.error(Code::WrongType, &ptr, format!("`{key}` does not apply to {type_name} columns"));
        }
    }
    if let [Some(a), Some(b)] = bounds
        && a > b
    {
        let (min, max) = (o.min.as_ref().map(value_text), o.max.as_ref().map(value_text));
        cx.error(
            Code::OutOfRange,
            &format!("{at}/min"),
            format!("`min` ({}) is larger than `max` ({})", min.unwrap_or_default(), max.unwrap_or_default()),
        );
    }
    if let Some(values) = &o.values {
        if values.is_empty() {
            cx.error(Code::InvalidValue, &format!("{at}/values"), "`values` is empty");
        }
        for (i, v) in values.iter().enumerate() {
            let problem = match o.ty {
                _ if numeric => number_for(o.ty, v).err(),
                ColumnType::Boolean => (!v.is_boolean()).then(|| "is not true or false".to_string()),
                ColumnType::String => (!v.is_string()).then(|| "is not a string".to_string()),
                _ => {
                    cx.error(
                        Code::InvalidValue,
                        &format!("{at}/values"),
                        format!("`values` does not apply to {type_name} columns"),
                    );
                    break;
                }
            };
            if let Some(why) = problem {
                cx.error(
                    Code::WrongType,
                    &format!("{at}/values/{i}"),
                    format!("value {} {why} (the column is {type_name})", value_text(v)),
                );
            }
        }
    }
    if o.sequence && !numeric {
        cx.error(Code::InvalidValue, &format!("{at}/sequence"), "`sequence` needs a numeric column");
    }
    // A sequence counts up from `min` once per row: its last value must fit the column too.
    if o.sequence
        && let (Some(count), Some((_, hi))) = (count, int_range(o.ty))
    {
        let first = o.min.as_ref().and_then(|v| v.as_i64()).unwrap_or(0);
        let last = i128::from(first) + i128::from(count.saturating_sub(1));
        if last > i128::from(hi) {
            cx.error(
                Code::OutOfRange,
                &format!("{at}/sequence"),
                format!("a sequence of {count} rows passes the largest {type_name} ({hi})"),
            );
        }
    }
}

/// The range of whole numbers a column type holds.
fn int_range(ty: ColumnType) -> Option<(i64, i64)> {
    match ty {
        ColumnType::Int => Some((i32::MIN.into(), i32::MAX.into())),
        ColumnType::Bigint => Some((i64::MIN, i64::MAX)),
        _ => None,
    }
}

/// `v` as a number a column of `ty` holds, or why it is not one.
fn number_for(ty: ColumnType, v: &serde_json::Value) -> Result<f64, String> {
    let Some(n) = v.as_f64() else { return Err("must be a number".into()) };
    match ty {
        ColumnType::Int | ColumnType::Bigint => {
            let (lo, hi) = int_range(ty).expect("integer type");
            match v.as_i64() {
                None if v.is_u64() => Err(format!("{} is beyond the largest {} ({hi})", value_text(v), type_name(ty))),
                None => Err(format!("must be a whole number for a {} column", type_name(ty))),
                Some(i) if i < lo || i > hi => {
                    Err(format!("{} is outside the range of {} ({lo} to {hi})", value_text(v), type_name(ty)))
                }
                Some(i) => Ok(i as f64),
            }
        }
        ColumnType::Float if n.abs() > f32::MAX as f64 => {
            Err(format!("{} is beyond the range of float", value_text(v)))
        }
        _ => Ok(n),
    }
}

fn type_name(ty: ColumnType) -> String {
    format!("{ty:?}").to_lowercase()
}

fn value_text(v: &serde_json::Value) -> String {
    v.to_string()
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fff](Z|±HH:MM)` into milliseconds since the epoch.
pub fn chrono_like_rfc3339(text: &str) -> Option<i64> {
    arrow::compute::kernels::cast_utils::string_to_timestamp_nanos(text)
        .ok()
        .filter(|_| text.len() >= 10 && text.as_bytes().get(4) == Some(&b'-'))
        .map(|n| n / 1_000_000)
}
