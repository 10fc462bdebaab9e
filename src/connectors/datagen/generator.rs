//! Row generation for `datagen`: every value is a pure function of (seed, column, row
//! index), so the same seed gives the same rows whatever the parallelism, and subtask `s` of
//! `p` simply produces rows `s, s + p, s + 2p, ...`. Rates are enforced per subtask by
//! sleeping until each batch is due.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Float32Builder, Float64Builder, Int32Builder, Int64Builder,
    StringBuilder, TimestampMillisecondBuilder,
};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

use super::{DatagenColumn, DatagenSource, chrono_like_rfc3339, nexmark};
use crate::runtime::{BuildContext, OperatorError, OperatorMetrics, SourceEvent, SourceReader};
use crate::spec::values::ColumnType;

/// Default start of generated event time: 2026-01-01T00:00:00Z.
pub const DEFAULT_START_MS: i64 = 1_767_225_600_000;

/// Most rows in one generated batch.
pub const BATCH_ROWS: usize = 8192;

/// Byte budget of one generated batch. Batches are cut by estimated row width as well as by
/// rows: Arrow's string and binary arrays hold at most 2 GiB of data each (i32 offsets), and
/// 8192 strings of the longest allowed `length` would be 8 GiB.
pub const BATCH_BYTES: usize = 4 << 20;

/// Rows per batch for rows about `width` bytes wide: at least one, at most [`BATCH_ROWS`].
pub fn rows_within_budget(width: usize) -> usize {
    (BATCH_BYTES / width.max(1)).clamp(1, BATCH_ROWS)
}

/// A 64-bit mix of (seed, column, row): splitmix64 over the combined input.
pub fn mix(seed: u64, column: u64, row: u64) -> u64 {
    let mut z = seed
        .wrapping_add(column.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(row.wrapping_mul(0xD1B5_4A32_D192_ED03))
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A uniform float in [0, 1) from a mix.
pub fn unit(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}

const ALPHANUMERIC: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

/// A string of `len` alphanumerics determined by `x`.
pub fn text(x: u64, len: usize) -> String {
    (0..len).map(|i| ALPHANUMERIC[(mix(x, 7, i as u64) % ALPHANUMERIC.len() as u64) as usize] as char).collect()
}

/// How one column is produced.
struct ColumnGen {
    ty: ColumnType,
    min: Option<f64>,
    max: Option<f64>,
    start_ms: i64,
    step_ms: f64,
    values: Option<Vec<serde_json::Value>>,
    sequence: bool,
    null_rate: f64,
    length: usize,
}

impl ColumnGen {
    /// Largest size in bytes of one value in an Arrow array (offsets included).
    fn width(&self) -> usize {
        match self.ty {
            ColumnType::Boolean => 1,
            ColumnType::Int | ColumnType::Float | ColumnType::Date => 4,
            ColumnType::Bigint | ColumnType::Double | ColumnType::Timestamp => 8,
            ColumnType::String | ColumnType::Bytes => {
                let picked = self.values.as_ref().map(|v| {
                    v.iter().map(|v| v.as_str().map_or_else(|| v.to_string().len(), str::len)).max().unwrap_or(0)
                });
                4 + picked.unwrap_or(self.length)
            }
        }
    }
}

/// What a datagen subtask produces.
enum Mode {
    Rows(Vec<ColumnGen>),
    Nexmark(nexmark::Generator),
}

/// Arrays standing for the columns nobody downstream reads (which are then not generated):
/// zeros cast to each column's type (0, "0", the epoch), built once and sliced per batch.
#[derive(Debug, Default)]
pub struct Placeholders(Vec<Option<ArrayRef>>);

impl Placeholders {
    /// `rows` placeholder values of column `column` of `schema`.
    pub fn get(&mut self, schema: &SchemaRef, column: usize, rows: usize) -> Result<ArrayRef, OperatorError> {
        if self.0.len() <= column {
            self.0.resize(column + 1, None);
        }
        let slot = &mut self.0[column];
        if slot.as_ref().is_none_or(|a| a.len() < rows) {
            let zeros = arrow::array::Int64Array::from(vec![0i64; rows.max(BATCH_ROWS)]);
            *slot = Some(arrow::compute::cast(&zeros, schema.field(column).data_type())?);
        }
        Ok(slot.as_ref().expect("just set").slice(0, rows))
    }
}

/// One datagen subtask.
pub struct DatagenReader {
    mode: Mode,
    schema: SchemaRef,
    seed: u64,
    next: u64,
    stride: u64,
    count: Option<u64>,
    /// After a restore at another parallelism: per old subtask (by residue), the first row it
    /// had not generated; rows below are skipped.
    done: Option<Vec<u64>>,
    rate: Option<f64>,
    batch_size: usize,
    started: Instant,
    emitted: u64,
    metrics: Arc<OperatorMetrics>,
    /// Per column, whether something downstream reads it (`None`: all are read).
    want: Option<Vec<bool>>,
    placeholders: Placeholders,
}

impl DatagenReader {
    /// The reader of subtask `ctx.subtask`.
    pub fn new(cfg: &DatagenSource, ctx: &BuildContext, schema: SchemaRef) -> Result<Self, OperatorError> {
        let p = ctx.parallelism as u64;
        let rate = cfg.rows_per_second.map(|r| r as f64 / p as f64);
        let mode = match (&cfg.nexmark, &cfg.schema) {
            (Some(n), _) => Mode::Nexmark(nexmark::Generator::new(n)?),
            (None, Some(cols)) => {
                let step_default = cfg.rows_per_second.map_or(1.0, |r| 1000.0 / r as f64);
                let mut gens = Vec::new();
                for (name, col) in cols {
                    let g = match col {
                        DatagenColumn::Type(ty) => ColumnGen {
                            ty: *ty,
                            min: None,
                            max: None,
                            start_ms: DEFAULT_START_MS,
                            step_ms: step_default,
                            values: None,
                            sequence: false,
                            null_rate: 0.0,
                            length: 8,
                        },
                        DatagenColumn::Options(o) => {
                            let time = |v: &Option<serde_json::Value>| {
                                v.as_ref().and_then(|v| v.as_str()).and_then(chrono_like_rfc3339)
                            };
                            let start_ms = time(&o.min).unwrap_or(DEFAULT_START_MS);
                            let step_ms = match (time(&o.max), cfg.count) {
                                (Some(end), Some(count)) if count > 0 => (end - start_ms) as f64 / count as f64,
                                _ => step_default,
                            };
                            if o.values.is_some()
                                && matches!(o.ty, ColumnType::Date | ColumnType::Timestamp | ColumnType::Bytes)
                            {
                                return Err(OperatorError::new(format!(
                                    "column `{name}`: `values` is not supported for this type"
                                )));
                            }
                            ColumnGen {
                                ty: o.ty,
                                min: o.min.as_ref().and_then(|v| v.as_f64()),
                                max: o.max.as_ref().and_then(|v| v.as_f64()),
                                start_ms,
                                step_ms,
                                values: o.values.clone(),
                                sequence: o.sequence,
                                null_rate: o.null_rate.unwrap_or(0.0),
                                length: o.length.unwrap_or(8) as usize,
                            }
                        }
                    };
                    gens.push(g);
                }
                Mode::Rows(gens)
            }
            (None, None) => return Err(OperatorError::new("datagen needs `schema` or `nexmark`")),
        };
        let width = match &mode {
            Mode::Rows(gens) => gens.iter().map(ColumnGen::width).sum(),
            Mode::Nexmark(g) => g.row_width(),
        };
        let batch_size = match rate {
            Some(r) => ((r / 10.0).ceil() as usize).clamp(1, BATCH_ROWS),
            None => BATCH_ROWS,
        }
        .min(rows_within_budget(width));
        // A restored job goes on from the next row of each subtask; at another parallelism,
        // from the first row some old subtask had not generated, skipping rows the old subtask
        // of their residue had (old subtask i generated rows i, i + q, … below its `next`).
        let positions: Vec<(u64, u64)> = ctx
            .restored_state()
            .iter()
            .filter_map(|(m, _)| Some((m.get("next")?.as_u64()?, m.get("stride")?.as_u64()?)))
            .collect();
        let mut done = None;
        let next = match positions.get(ctx.subtask) {
            _ if positions.is_empty() => ctx.subtask as u64,
            Some(&(next, stride)) if stride == p && positions.len() == ctx.parallelism => next,
            _ => {
                let q = positions[0].1.max(1);
                let mut nexts = vec![None; q as usize];
                for &(n, stride) in &positions {
                    if stride == q {
                        nexts[(n % q) as usize] = Some(n);
                    }
                }
                let Some(nexts) = nexts.into_iter().collect::<Option<Vec<u64>>>() else {
                    return Err(OperatorError::new(format!(
                        "source `{}`: the checkpoint lacks the position of some of its {q} old subtasks",
                        ctx.operator
                    )));
                };
                let first_missing = nexts.iter().copied().min().unwrap_or(0);
                let base = first_missing - first_missing % p + ctx.subtask as u64;
                done = Some(nexts);
                if base < first_missing { base.saturating_add(p) } else { base }
            }
        };
        let want =
            ctx.read_columns.as_ref().map(|cols| schema.fields().iter().map(|f| cols.contains(f.name())).collect());
        Ok(DatagenReader {
            mode,
            schema,
            seed: cfg.seed.unwrap_or(0),
            next,
            done,
            stride: p,
            count: cfg.count,
            rate,
            batch_size,
            started: Instant::now(),
            emitted: 0,
            metrics: ctx.metrics.clone(),
            want,
            placeholders: Placeholders::default(),
        })
    }

    fn rows_batch(
        &self,
        gens: &[ColumnGen],
        rows: &[u64],
        placeholders: &mut Placeholders,
    ) -> Result<RecordBatch, OperatorError> {
        let last = rows.iter().copied().max().unwrap_or(0);
        for (g, field) in gens.iter().zip(self.schema.fields()) {
            let top = match g.ty {
                ColumnType::Int => i128::from(i32::MAX),
                ColumnType::Bigint => i128::from(i64::MAX),
                _ => continue,
            };
            if g.sequence && g.min.unwrap_or(0.0) as i64 as i128 + i128::from(last) > top {
                return Err(OperatorError::new(format!(
                    "column `{}`: the sequence passed the largest {} at row {last}; set a `count` or a lower `min`",
                    field.name(),
                    if g.ty == ColumnType::Int { "int" } else { "bigint" },
                )));
            }
        }
        let columns = gens
            .iter()
            .enumerate()
            .map(|(c, g)| match self.want.as_ref().is_none_or(|w| w[c]) {
                true => Ok(column(self.seed, c as u64, g, rows)),
                false => placeholders.get(&self.schema, c, rows.len()),
            })
            .collect::<Result<Vec<ArrayRef>, OperatorError>>()?;
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}

fn column(seed: u64, c: u64, g: &ColumnGen, rows: &[u64]) -> ArrayRef {
    let null = |r: u64| g.null_rate > 0.0 && unit(mix(seed ^ 0x5eed, c, r)) < g.null_rate;
    let pick = |r: u64| -> Option<&serde_json::Value> {
        g.values.as_ref().map(|v| &v[(mix(seed, c, r) % v.len() as u64) as usize])
    };
    let int = |r: u64, lo: f64, hi: f64| -> i64 {
        if g.sequence {
            // `rows_batch` refuses rows past the column type's range.
            return (g.min.unwrap_or(0.0) as i64).saturating_add_unsigned(r);
        }
        if let Some(v) = pick(r) {
            return v.as_i64().unwrap_or(0);
        }
        // In i128: the full bigint range spans more than an i64 holds.
        let lo = g.min.unwrap_or(lo) as i64 as i128;
        let hi = g.max.unwrap_or(hi) as i64 as i128;
        let span = (hi - lo).max(0) as u128 + 1;
        (lo + (u128::from(mix(seed, c, r)) % span) as i128) as i64
    };
    let float = |r: u64| -> f64 {
        if g.sequence {
            return g.min.unwrap_or(0.0) + r as f64;
        }
        if let Some(v) = pick(r) {
            return v.as_f64().unwrap_or(0.0);
        }
        let lo = g.min.unwrap_or(0.0);
        let hi = g.max.unwrap_or(1.0);
        lo + unit(mix(seed, c, r)) * (hi - lo)
    };
    match g.ty {
        ColumnType::Boolean => {
            let mut b = BooleanBuilder::with_capacity(rows.len());
            for &r in rows {
                b.append_option(
                    (!null(r)).then(|| pick(r).and_then(|v| v.as_bool()).unwrap_or(mix(seed, c, r) & 1 == 1)),
                );
            }
            Arc::new(b.finish())
        }
        ColumnType::Int => {
            let mut b = Int32Builder::with_capacity(rows.len());
            for &r in rows {
                b.append_option((!null(r)).then(|| int(r, 0.0, 1_000_000.0) as i32));
            }
            Arc::new(b.finish())
        }
        ColumnType::Bigint => {
            let mut b = Int64Builder::with_capacity(rows.len());
            for &r in rows {
                b.append_option((!null(r)).then(|| int(r, 0.0, 1_000_000.0)));
            }
            Arc::new(b.finish())
        }
        ColumnType::Float => {
            let mut b = Float32Builder::with_capacity(rows.len());
            for &r in rows {
                b.append_option((!null(r)).then(|| float(r) as f32));
            }
            Arc::new(b.finish())
        }
        ColumnType::Double => {
            let mut b = Float64Builder::with_capacity(rows.len());
            for &r in rows {
                b.append_option((!null(r)).then(|| float(r)));
            }
            Arc::new(b.finish())
        }
        ColumnType::String => {
            let mut b = StringBuilder::with_capacity(rows.len(), rows.len() * g.length);
            for &r in rows {
                if null(r) {
                    b.append_null();
                } else if let Some(v) = pick(r) {
                    b.append_value(v.as_str().map_or_else(|| v.to_string(), str::to_string));
                } else {
                    b.append_value(text(mix(seed, c, r), g.length));
                }
            }
            Arc::new(b.finish())
        }
        ColumnType::Bytes => {
            let mut b = BinaryBuilder::with_capacity(rows.len(), rows.len() * g.length);
            for &r in rows {
                if null(r) {
                    b.append_null();
                } else {
                    b.append_value(text(mix(seed, c, r), g.length).as_bytes());
                }
            }
            Arc::new(b.finish())
        }
        ColumnType::Date => {
            let mut b = Date32Builder::with_capacity(rows.len());
            for &r in rows {
                let ms = g.start_ms.saturating_add((r as f64 * g.step_ms) as i64);
                b.append_option((!null(r)).then(|| (ms.div_euclid(86_400_000)) as i32));
            }
            Arc::new(b.finish())
        }
        ColumnType::Timestamp => {
            let mut b = TimestampMillisecondBuilder::with_capacity(rows.len()).with_timezone("UTC");
            for &r in rows {
                b.append_option((!null(r)).then(|| g.start_ms.saturating_add((r as f64 * g.step_ms) as i64)));
            }
            Arc::new(b.finish())
        }
    }
}

impl SourceReader for DatagenReader {
    fn next(&mut self) -> Result<SourceEvent, OperatorError> {
        let remaining = match self.count {
            Some(c) if self.next >= c => return Ok(SourceEvent::End),
            Some(c) => ((c - self.next).div_ceil(self.stride)) as usize,
            None => usize::MAX,
        };
        let n = self.batch_size.min(remaining);
        if let Some(rate) = self.rate {
            let due = Duration::from_secs_f64(self.emitted as f64 / rate);
            let elapsed = self.started.elapsed();
            if due > elapsed {
                // Wait in short steps so a stop request is seen promptly.
                std::thread::sleep((due - elapsed).min(Duration::from_millis(100)));
                if due > self.started.elapsed() {
                    return Ok(SourceEvent::Pending);
                }
            }
        }
        let mut rows: Vec<u64> = (0..n as u64).map(|i| self.next + i * self.stride).collect();
        self.next += n as u64 * self.stride;
        if let Some(done) = &self.done {
            let q = done.len() as u64;
            rows.retain(|r| *r >= done[(r % q) as usize]);
            if done.iter().all(|d| self.next >= *d) {
                self.done = None;
            }
        }
        self.emitted += n as u64;
        let mut placeholders = std::mem::take(&mut self.placeholders);
        let batch = match &self.mode {
            Mode::Rows(gens) => self.rows_batch(gens, &rows, &mut placeholders),
            Mode::Nexmark(g) => g.batch(&self.schema, self.seed, &rows, self.want.as_deref(), &mut placeholders),
        };
        self.placeholders = placeholders;
        let batch = batch?;
        OperatorMetrics::add(&self.metrics.bytes_read, batch.get_array_memory_size() as u64);
        Ok(SourceEvent::Batch(batch))
    }

    fn position(&mut self) -> serde_json::Value {
        serde_json::json!({ "next": self.next, "stride": self.stride })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(yaml: &str) -> DatagenReader {
        let cfg: DatagenSource = serde_json::from_value(serde_json::from_str(yaml).unwrap()).unwrap();
        let ctx = BuildContext::local("gen", 128);
        let fields: Vec<_> = cfg
            .schema
            .iter()
            .flatten()
            .map(|(name, col)| {
                let ty = match col {
                    DatagenColumn::Type(t) => *t,
                    DatagenColumn::Options(o) => o.ty,
                };
                arrow::datatypes::Field::new(name, ty.arrow(), false)
            })
            .collect();
        DatagenReader::new(&cfg, &ctx, Arc::new(arrow::datatypes::Schema::new(fields))).unwrap()
    }

    fn batches(mut r: DatagenReader) -> Vec<RecordBatch> {
        let mut out = Vec::new();
        loop {
            match r.next().unwrap() {
                SourceEvent::Batch(b) => out.push(b),
                SourceEvent::End => return out,
                _ => {}
            }
        }
    }

    #[test]
    fn batches_are_cut_by_bytes_as_well_as_rows() {
        assert_eq!(rows_within_budget(0), BATCH_ROWS);
        assert_eq!(rows_within_budget(BATCH_BYTES * 2), 1);
        // The longest strings the schema allows: 4 rows of 1 MiB per batch, not 8192.
        let r = reader(r#"{"count": 9, "schema": {"id": "bigint", "s": {"type": "string", "length": 1048576}}}"#);
        assert_eq!(r.batch_size, 3);
        let sizes: Vec<usize> = batches(r).iter().map(RecordBatch::num_rows).collect();
        assert_eq!(sizes, [3, 3, 3]);
        // Values drawn from a list are as wide as the longest of them.
        let long = "x".repeat(100_000);
        let r =
            reader(&format!(r#"{{"count": 10, "schema": {{"s": {{"type": "string", "values": ["a", "{long}"]}}}}}}"#));
        assert_eq!(r.batch_size, BATCH_BYTES / 100_004);
        // Narrow rows keep the row limit.
        assert_eq!(reader(r#"{"count": 9, "schema": {"id": "bigint"}}"#).batch_size, BATCH_ROWS);
    }
}
