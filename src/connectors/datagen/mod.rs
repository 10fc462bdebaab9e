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
                            check_options(cx, &at, o);
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

fn check_options(cx: &mut Checker, at: &str, o: &DatagenOptions) {
    let numeric = matches!(o.ty, ColumnType::Int | ColumnType::Bigint | ColumnType::Float | ColumnType::Double);
    for (key, v) in [("min", &o.min), ("max", &o.max)] {
        let Some(v) = v else { continue };
        let ok = match o.ty {
            _ if numeric => v.is_number(),
            ColumnType::Timestamp | ColumnType::Date => v.as_str().and_then(chrono_like_rfc3339).is_some(),
            _ => false,
        };
        if !ok {
            let want = if numeric { "a number" } else { "an RFC 3339 time" };
            let msg = match o.ty {
                _ if numeric || matches!(o.ty, ColumnType::Timestamp | ColumnType::Date) => {
                    format!("`{key}` must be {want}")
                }
                _ => format!("`{key}` does not apply to {:?} columns", o.ty).to_lowercase(),
            };
            cx.error(Code::WrongType, &format!("{at}/{key}"), msg);
        }
    }
    if let (Some(a), Some(b)) = (o.min.as_ref().and_then(|v| v.as_f64()), o.max.as_ref().and_then(|v| v.as_f64()))
        && a > b
    {
        cx.error(Code::OutOfRange, &format!("{at}/min"), format!("`min` ({a}) is larger than `max` ({b})"));
    }
    if o.values.as_ref().is_some_and(|v| v.is_empty()) {
        cx.error(Code::InvalidValue, &format!("{at}/values"), "`values` is empty");
    }
    if o.sequence && !numeric {
        cx.error(Code::InvalidValue, &format!("{at}/sequence"), "`sequence` needs a numeric column");
    }
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fff](Z|±HH:MM)` into milliseconds since the epoch.
pub fn chrono_like_rfc3339(text: &str) -> Option<i64> {
    arrow::compute::kernels::cast_utils::string_to_timestamp_nanos(text)
        .ok()
        .filter(|_| text.len() >= 10 && text.as_bytes().get(4) == Some(&b'-'))
        .map(|n| n / 1_000_000)
}
