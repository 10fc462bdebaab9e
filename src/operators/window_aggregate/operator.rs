//! The running window aggregate: assigns rows to event-time windows per key, keeps one set of
//! accumulators per (key, window) in keyed state, and emits a window's result when the
//! watermark passes its end.
//!
//! Semantics (Flink's): a window `[start, end)` fires when the watermark reaches `end - 1`.
//! With `allowed_lateness` its state is kept until the watermark reaches
//! `end - 1 + allowed_lateness`, and rows arriving meanwhile update it: after each batch the
//! window's updated result is emitted again (once per batch). A row is late when each of its
//! windows is already past that point; late rows go to `late_output` or are counted as
//! dropped. Session windows merge per key when they overlap or touch (a row at `t` opens
//! `[t, t + gap)`; one at exactly `end` of a session joins it), including when a late row
//! bridges two sessions (rows of a key are taken in event-time order within a batch); timers
//! of merged-away sessions are ignored.
//!
//! Per batch, argument expressions are evaluated once (vectorized, by DataFusion) and rows
//! are grouped by key and window before accumulators are touched.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, Float64Array, Float64Builder, Int64Array, Int64Builder, TimestampMillisecondArray, UInt32Array,
};
use arrow::compute::{cast, take_record_batch};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;
use arrow::row::{RowConverter, SortField};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::PhysicalExpr;

use super::Window;
use crate::runtime::expr::Compiler;
use crate::runtime::{BuildContext, Operator, OperatorError, OperatorMetrics, Output};
use crate::spec::check::StreamSchema;
use crate::state::{ListState, Timers, ValueState};

/// Which aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Count,
    CountDistinct,
    Sum,
    Min,
    Max,
    Avg,
}

/// One aggregate of the spec, compiled.
struct AggSpec {
    kind: Kind,
    /// The argument; `None` for `count(*)`.
    arg: Option<Arc<dyn PhysicalExpr>>,
    /// Result type.
    out_type: DataType,
}

/// An argument column prepared for accumulation.
enum Arg {
    None,
    Int(Int64Array),
    Float(Float64Array),
    Other(ArrayRef),
}

/// A running aggregate value.
#[derive(Debug, Clone)]
enum Acc {
    Count(i64),
    Distinct(HashSet<Vec<u8>>),
    SumInt(Option<i64>),
    SumFloat(Option<f64>),
    MinInt(Option<i64>),
    MaxInt(Option<i64>),
    MinFloat(Option<f64>),
    MaxFloat(Option<f64>),
    MinOther(Option<ScalarValue>),
    MaxOther(Option<ScalarValue>),
    Avg(f64, i64),
}

/// Accumulators of one (key, window).
#[derive(Debug, Clone)]
struct WindowAcc {
    accs: Vec<Acc>,
}

/// A session of one key.
#[derive(Debug, Clone)]
struct Session {
    start: i64,
    end: i64,
    acc: WindowAcc,
}

const FIRE: u8 = 0;
const CLEANUP: u8 = 1;

/// The operator.
pub struct WindowOperator {
    window: (i64, i64, bool), // (size or gap, slide, is_session)
    lateness: i64,
    key_cols: Vec<usize>,
    ts_col: usize,
    aggs: Vec<AggSpec>,
    keys: RowConverter,
    distinct: Vec<Option<RowConverter>>,
    output: SchemaRef,
    watermark: i64,
    windows: ValueState<(i64, i64), WindowAcc>,
    sessions: ListState<(), Session>,
    timers: Timers<(i64, i64, u8)>,
    late_output: bool,
    metrics: Arc<OperatorMetrics>,
}

impl WindowOperator {
    /// Builds the operator for one subtask.
    pub fn new(
        spec: &super::WindowAggregate,
        ctx: &BuildContext,
        input_name: &str,
        input: &StreamSchema,
        output: &StreamSchema,
    ) -> Result<Self, OperatorError> {
        let schema = &input.schema;
        let ts = input.event_time.as_deref().ok_or_else(|| OperatorError::new("the input has no event time"))?;
        let ts_col = schema.index_of(ts)?;
        let key_cols = spec.key.iter().map(|k| schema.index_of(k)).collect::<Result<Vec<_>, _>>()?;
        // Without key columns every row has the same (empty-column) key: one global group.
        let key_fields = if key_cols.is_empty() {
            vec![SortField::new(DataType::Boolean)]
        } else {
            key_cols.iter().map(|&c| SortField::new(schema.field(c).data_type().clone())).collect()
        };
        let keys = RowConverter::new(key_fields)?;
        let compiler = Compiler::default();
        let df = DFSchema::try_from_qualified_schema(input_name, schema)?;
        let mut aggs = Vec::new();
        let mut distinct = Vec::new();
        for (name, sql) in &spec.aggregates {
            let out_type = output.schema.field_with_name(name)?.data_type().clone();
            let expr = compiler.parse(sql, &df)?.unalias_nested().data;
            let Expr::AggregateFunction(af) = expr else {
                return Err(OperatorError::new(format!("`{sql}` is not an aggregate")));
            };
            let func = af.func.name().to_lowercase();
            let star = af.params.args.is_empty() || matches!(&af.params.args[0], Expr::Literal(..)) && func == "count";
            let kind = match (func.as_str(), af.params.distinct) {
                ("count", true) => Kind::CountDistinct,
                ("count", false) => Kind::Count,
                ("sum", _) => Kind::Sum,
                ("min", _) => Kind::Min,
                ("max", _) => Kind::Max,
                ("avg", _) => Kind::Avg,
                (other, _) => return Err(OperatorError::new(format!("`{other}` is not supported in windows"))),
            };
            let arg = if star { None } else { Some(compiler.physical(af.params.args[0].clone(), &df)?) };
            distinct.push(match (&arg, kind) {
                (Some(a), Kind::CountDistinct) => Some(RowConverter::new(vec![SortField::new(a.data_type(schema)?)])?),
                _ => None,
            });
            aggs.push(AggSpec { kind, arg, out_type });
        }
        // Validation refuses these; a window that could loop for ages per row never runs.
        if let Some((_, problem)) = spec.window.problem() {
            return Err(OperatorError::new(problem));
        }
        let window = match &spec.window {
            Window::Tumbling { size } => (size.as_millis_i64(), size.as_millis_i64(), false),
            Window::Hopping { size, slide } => (size.as_millis_i64(), slide.as_millis_i64(), false),
            Window::Session { gap } => (gap.as_millis_i64(), 0, true),
        };
        Ok(WindowOperator {
            window,
            lateness: spec.allowed_lateness.map_or(0, |d| d.as_millis_i64()),
            key_cols,
            ts_col,
            aggs,
            keys,
            distinct,
            output: output.schema.clone(),
            watermark: i64::MIN,
            windows: ValueState::default(),
            sessions: ListState::default(),
            timers: Timers::default(),
            late_output: spec.late_output.is_some(),
            metrics: ctx.metrics.clone(),
        })
    }

    fn new_acc(&self) -> WindowAcc {
        let accs = self
            .aggs
            .iter()
            .map(|a| {
                let int = is_int_like(&a.out_type);
                match a.kind {
                    Kind::Count => Acc::Count(0),
                    Kind::CountDistinct => Acc::Distinct(HashSet::new()),
                    Kind::Sum if int => Acc::SumInt(None),
                    Kind::Sum => Acc::SumFloat(None),
                    Kind::Min if int => Acc::MinInt(None),
                    Kind::Max if int => Acc::MaxInt(None),
                    Kind::Min if is_float(&a.out_type) => Acc::MinFloat(None),
                    Kind::Max if is_float(&a.out_type) => Acc::MaxFloat(None),
                    Kind::Min => Acc::MinOther(None),
                    Kind::Max => Acc::MaxOther(None),
                    Kind::Avg => Acc::Avg(0.0, 0),
                }
            })
            .collect();
        WindowAcc { accs }
    }

    /// Whether a window ending at `end` no longer accepts rows.
    fn is_late(&self, end: i64) -> bool {
        end.saturating_sub(1).saturating_add(self.lateness) <= self.watermark
    }

    /// Whether a window ending at `end` has already fired.
    fn is_due(&self, end: i64) -> bool {
        end.saturating_sub(1) <= self.watermark
    }

    /// Timers for a new window: fire at its end (unless already due; it is then emitted
    /// with the batch), clean up after the allowed lateness.
    fn register(&mut self, key: &[u8], start: i64, end: i64) {
        if !self.is_due(end) {
            self.timers.register(end.saturating_sub(1), key, (start, end, FIRE));
        }
        if self.lateness > 0 {
            self.timers.register(end.saturating_sub(1).saturating_add(self.lateness), key, (start, end, CLEANUP));
        }
    }

    fn prepare_args(&self, batch: &RecordBatch) -> Result<(Vec<Arg>, Vec<Option<arrow::row::Rows>>), OperatorError> {
        let mut args = Vec::new();
        let mut distinct_rows = Vec::new();
        for (i, a) in self.aggs.iter().enumerate() {
            let Some(expr) = &a.arg else {
                args.push(Arg::None);
                distinct_rows.push(None);
                continue;
            };
            let array = expr.evaluate(batch)?.into_array(batch.num_rows())?;
            distinct_rows.push(match &self.distinct[i] {
                Some(conv) => Some(conv.convert_columns(std::slice::from_ref(&array))?),
                None => None,
            });
            let t = array.data_type();
            args.push(if is_int_like(t) {
                Arg::Int(downcast_owned::<Int64Array>(cast(&array, &DataType::Int64)?)?)
            } else if t.is_numeric() {
                Arg::Float(downcast_owned::<Float64Array>(cast(&array, &DataType::Float64)?)?)
            } else {
                Arg::Other(array)
            });
        }
        Ok((args, distinct_rows))
    }

    fn update(
        &self,
        acc: &mut WindowAcc,
        rows: &[u32],
        args: &[Arg],
        distinct: &[Option<arrow::row::Rows>],
    ) -> Result<(), OperatorError> {
        for (i, a) in acc.accs.iter_mut().enumerate() {
            for &r in rows {
                let r = r as usize;
                match (&mut *a, &args[i]) {
                    (Acc::Count(n), Arg::None) => *n += 1,
                    (Acc::Count(n), arg) => *n += i64::from(!is_null(arg, r)),
                    (Acc::Distinct(set), arg) if !is_null(arg, r) => {
                        if let Some(rows) = &distinct[i] {
                            set.insert(rows.row(r).as_ref().to_vec());
                        }
                    }
                    (Acc::SumInt(s), Arg::Int(v)) if v.is_valid(r) => {
                        *s = Some(s.unwrap_or(0).wrapping_add(v.value(r)))
                    }
                    (Acc::SumFloat(s), Arg::Float(v)) if v.is_valid(r) => *s = Some(s.unwrap_or(0.0) + v.value(r)),
                    (Acc::SumFloat(s), Arg::Int(v)) if v.is_valid(r) => *s = Some(s.unwrap_or(0.0) + v.value(r) as f64),
                    (Acc::MinInt(m), Arg::Int(v)) if v.is_valid(r) => {
                        *m = Some(m.map_or(v.value(r), |m| m.min(v.value(r))))
                    }
                    (Acc::MaxInt(m), Arg::Int(v)) if v.is_valid(r) => {
                        *m = Some(m.map_or(v.value(r), |m| m.max(v.value(r))))
                    }
                    (Acc::MinFloat(m), Arg::Float(v)) if v.is_valid(r) => {
                        *m = Some(m.map_or(v.value(r), |m| m.min(v.value(r))))
                    }
                    (Acc::MaxFloat(m), Arg::Float(v)) if v.is_valid(r) => {
                        *m = Some(m.map_or(v.value(r), |m| m.max(v.value(r))))
                    }
                    (Acc::MinOther(m), Arg::Other(v)) if v.is_valid(r) => {
                        let x = ScalarValue::try_from_array(v, r)?;
                        if m.as_ref().is_none_or(|cur| x < *cur) {
                            *m = Some(x);
                        }
                    }
                    (Acc::MaxOther(m), Arg::Other(v)) if v.is_valid(r) => {
                        let x = ScalarValue::try_from_array(v, r)?;
                        if m.as_ref().is_none_or(|cur| x > *cur) {
                            *m = Some(x);
                        }
                    }
                    (Acc::Avg(s, n), Arg::Int(v)) if v.is_valid(r) => {
                        *s += v.value(r) as f64;
                        *n += 1;
                    }
                    (Acc::Avg(s, n), Arg::Float(v)) if v.is_valid(r) => {
                        *s += v.value(r);
                        *n += 1;
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Builds output rows for `(key, start, end, acc)` results.
    fn emit(&self, results: Vec<(Vec<u8>, i64, i64, WindowAcc)>, out: &mut dyn Output) -> Result<(), OperatorError> {
        if results.is_empty() {
            return Ok(());
        }
        let parser = self.keys.parser();
        let mut columns: Vec<ArrayRef> = if self.key_cols.is_empty() {
            Vec::new()
        } else {
            self.keys.convert_rows(results.iter().map(|r| parser.parse(&r.0)))?
        };
        let tz = Some(Arc::from("UTC"));
        let starts =
            TimestampMillisecondArray::from_iter_values(results.iter().map(|r| r.1)).with_timezone_opt(tz.clone());
        let ends = TimestampMillisecondArray::from_iter_values(results.iter().map(|r| r.2)).with_timezone_opt(tz);
        columns.push(Arc::new(starts));
        columns.push(Arc::new(ends));
        for (i, spec) in self.aggs.iter().enumerate() {
            let values: Vec<&Acc> = results.iter().map(|r| &r.3.accs[i]).collect();
            columns.push(finish(&values, &spec.out_type)?);
        }
        out.emit(RecordBatch::try_new(self.output.clone(), columns)?)
    }

    fn process_fixed(
        &mut self,
        batch: &RecordBatch,
        ts: &TimestampMillisecondArray,
        key_rows: &arrow::row::Rows,
        (args, distinct): &(Vec<Arg>, Vec<Option<arrow::row::Rows>>),
        out: &mut dyn Output,
    ) -> Result<Vec<u32>, OperatorError> {
        let (size, slide, _) = self.window;
        let mut groups: HashMap<(&[u8], i64), Vec<u32>> = HashMap::new();
        let mut late = Vec::new();
        for r in 0..batch.num_rows() {
            if ts.is_null(r) {
                late.push(r as u32);
                continue;
            }
            let t = ts.value(r);
            // Event times so close to the ends of the i64 range that their window cannot be
            // represented are treated as late; the rest use saturating arithmetic.
            let Some(mut start) = t.checked_sub(t.rem_euclid(slide)) else {
                late.push(r as u32);
                continue;
            };
            let mut accepted = false;
            while start > t.saturating_sub(size) {
                if !self.is_late(start.saturating_add(size)) {
                    groups.entry((key_rows.row(r).data(), start)).or_default().push(r as u32);
                    accepted = true;
                }
                match start.checked_sub(slide) {
                    Some(s) => start = s,
                    None => break,
                }
            }
            if !accepted {
                late.push(r as u32);
            }
        }
        let mut updated = Vec::new();
        let mut order: Vec<_> = groups.into_iter().collect();
        order.sort_by(|a, b| a.0.cmp(&b.0));
        for ((key, start), rows) in order {
            let ns = (start, start.saturating_add(size));
            let mut acc = match self.windows.get(key, &ns) {
                Some(acc) => acc,
                None => {
                    self.register(key, ns.0, ns.1);
                    self.new_acc()
                }
            };
            self.update(&mut acc, &rows, args, distinct)?;
            if self.is_due(ns.1) {
                updated.push((key.to_vec(), ns.0, ns.1, acc.clone()));
            }
            self.windows.put(key, ns, acc);
        }
        self.emit(updated, out)?;
        Ok(late)
    }

    fn process_sessions(
        &mut self,
        batch: &RecordBatch,
        ts: &TimestampMillisecondArray,
        key_rows: &arrow::row::Rows,
        (args, distinct): &(Vec<Arg>, Vec<Option<arrow::row::Rows>>),
        out: &mut dyn Output,
    ) -> Result<Vec<u32>, OperatorError> {
        let gap = self.window.0;
        let mut by_key: HashMap<&[u8], Vec<u32>> = HashMap::new();
        let mut late = Vec::new();
        for r in 0..batch.num_rows() {
            if ts.is_null(r) {
                late.push(r as u32);
            } else {
                by_key.entry(key_rows.row(r).data()).or_default().push(r as u32);
            }
        }
        let mut keys: Vec<_> = by_key.into_iter().collect();
        keys.sort_by(|a, b| a.0.cmp(b.0));
        let mut updated = Vec::new();
        for (key, mut rows) in keys {
            rows.sort_by_key(|&r| ts.value(r as usize));
            let mut sessions = self.sessions.get(key, &());
            for r in rows {
                let t = ts.value(r as usize);
                let (start, end) = (t, t.saturating_add(gap));
                // Flink's `TimeWindow.intersects`: sessions that overlap or touch merge, so a row
                // exactly `gap` after a session's last row extends it.
                let overlapping: Vec<usize> =
                    (0..sessions.len()).filter(|&i| sessions[i].start <= end && start <= sessions[i].end).collect();
                if overlapping.is_empty() && self.is_late(end) {
                    late.push(r);
                    continue;
                }
                let mut merged = Session { start, end, acc: self.new_acc() };
                for &i in overlapping.iter().rev() {
                    let s = sessions.remove(i);
                    merged.start = merged.start.min(s.start);
                    merged.end = merged.end.max(s.end);
                    merge(&mut merged.acc, s.acc);
                }
                self.update(&mut merged.acc, &[r], args, distinct)?;
                // Timers are a set: registering an unchanged session again is a no-op.
                self.register(key, merged.start, merged.end);
                if self.is_due(merged.end) {
                    updated.push((key.to_vec(), merged.start, merged.end, merged.acc.clone()));
                }
                sessions.push(merged);
            }
            sessions.sort_by_key(|s| s.start);
            self.sessions.update(key, (), sessions);
        }
        // A session updated twice in one batch is reported once, with its latest value.
        updated.reverse();
        let mut seen = HashSet::new();
        updated.retain(|(k, s, e, _)| seen.insert((k.clone(), *s, *e)));
        updated.reverse();
        let updated = updated
            .into_iter()
            .filter(|(k, s, e, _)| self.sessions.get(k, &()).iter().any(|x| x.start == *s && x.end == *e))
            .collect();
        self.emit(updated, out)?;
        Ok(late)
    }
}

fn merge(into: &mut WindowAcc, from: WindowAcc) {
    for (a, b) in into.accs.iter_mut().zip(from.accs) {
        match (a, b) {
            (Acc::Count(x), Acc::Count(y)) => *x += y,
            (Acc::Distinct(x), Acc::Distinct(y)) => x.extend(y),
            (Acc::SumInt(x), Acc::SumInt(y)) => *x = opt(*x, y, |a, b| a.wrapping_add(b)),
            (Acc::SumFloat(x), Acc::SumFloat(y)) => *x = opt(*x, y, |a, b| a + b),
            (Acc::MinInt(x), Acc::MinInt(y)) => *x = opt(*x, y, i64::min),
            (Acc::MaxInt(x), Acc::MaxInt(y)) => *x = opt(*x, y, i64::max),
            (Acc::MinFloat(x), Acc::MinFloat(y)) => *x = opt(*x, y, f64::min),
            (Acc::MaxFloat(x), Acc::MaxFloat(y)) => *x = opt(*x, y, f64::max),
            (Acc::MinOther(x), Acc::MinOther(Some(y))) if x.as_ref().is_none_or(|c| y < *c) => *x = Some(y),
            (Acc::MaxOther(x), Acc::MaxOther(Some(y))) if x.as_ref().is_none_or(|c| y > *c) => *x = Some(y),
            (Acc::Avg(s, n), Acc::Avg(s2, n2)) => {
                *s += s2;
                *n += n2;
            }
            _ => {}
        }
    }
}

fn opt<T: Copy>(a: Option<T>, b: Option<T>, f: impl Fn(T, T) -> T) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(f(a, b)),
        (a, b) => a.or(b),
    }
}

fn is_null(arg: &Arg, r: usize) -> bool {
    match arg {
        Arg::None => false,
        Arg::Int(a) => a.is_null(r),
        Arg::Float(a) => a.is_null(r),
        Arg::Other(a) => a.is_null(r),
    }
}

fn is_int_like(t: &DataType) -> bool {
    t.is_integer() || matches!(t, DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64)
}

fn is_float(t: &DataType) -> bool {
    t.is_floating() || matches!(t, DataType::Decimal128(_, _) | DataType::Decimal256(_, _))
}

fn downcast_owned<T: Array + Clone + 'static>(a: ArrayRef) -> Result<T, OperatorError> {
    a.as_any().downcast_ref::<T>().cloned().ok_or_else(|| OperatorError::new("unexpected array type"))
}

/// Final values of one aggregate over many windows, as an array of `ty`.
fn finish(values: &[&Acc], ty: &DataType) -> Result<ArrayRef, OperatorError> {
    let array: ArrayRef = match values.first() {
        Some(Acc::Count(_))
        | Some(Acc::Distinct(_))
        | Some(Acc::SumInt(_))
        | Some(Acc::MinInt(_))
        | Some(Acc::MaxInt(_)) => {
            let mut b = Int64Builder::with_capacity(values.len());
            for v in values {
                b.append_option(match v {
                    Acc::Count(n) => Some(*n),
                    Acc::Distinct(s) => Some(s.len() as i64),
                    Acc::SumInt(x) | Acc::MinInt(x) | Acc::MaxInt(x) => *x,
                    _ => None,
                });
            }
            Arc::new(b.finish())
        }
        Some(Acc::SumFloat(_)) | Some(Acc::MinFloat(_)) | Some(Acc::MaxFloat(_)) | Some(Acc::Avg(..)) => {
            let mut b = Float64Builder::with_capacity(values.len());
            for v in values {
                b.append_option(match v {
                    Acc::SumFloat(x) | Acc::MinFloat(x) | Acc::MaxFloat(x) => *x,
                    Acc::Avg(s, n) => (*n > 0).then(|| s / *n as f64),
                    _ => None,
                });
            }
            Arc::new(b.finish())
        }
        Some(Acc::MinOther(_)) | Some(Acc::MaxOther(_)) => {
            let scalars = values.iter().map(|v| match v {
                Acc::MinOther(Some(x)) | Acc::MaxOther(Some(x)) => x.clone(),
                _ => ScalarValue::try_from(ty).unwrap_or(ScalarValue::Null),
            });
            ScalarValue::iter_to_array(scalars)?
        }
        None => arrow::array::new_empty_array(ty),
    };
    if array.data_type() == ty { Ok(array) } else { Ok(cast(&array, ty)?) }
}

impl Operator for WindowOperator {
    fn process(&mut self, _: usize, batch: RecordBatch, out: &mut dyn Output) -> Result<(), OperatorError> {
        let ts_array =
            cast(batch.column(self.ts_col), &DataType::Timestamp(arrow::datatypes::TimeUnit::Millisecond, None))?;
        let ts = ts_array
            .as_any()
            .downcast_ref::<TimestampMillisecondArray>()
            .ok_or_else(|| OperatorError::new("event time is not a timestamp"))?;
        let key_arrays: Vec<ArrayRef> = if self.key_cols.is_empty() {
            vec![Arc::new(arrow::array::BooleanArray::from(vec![false; batch.num_rows()]))]
        } else {
            self.key_cols.iter().map(|&c| batch.column(c).clone()).collect()
        };
        let key_rows = self.keys.convert_columns(&key_arrays)?;
        // Aggregate arguments are evaluated once per batch, whatever the window shape.
        let args = self.prepare_args(&batch)?;
        let late = if self.window.2 {
            self.process_sessions(&batch, ts, &key_rows, &args, out)?
        } else {
            self.process_fixed(&batch, ts, &key_rows, &args, out)?
        };
        if !late.is_empty() {
            if self.late_output {
                out.emit_side(1, take_record_batch(&batch, &UInt32Array::from(late))?)?;
            } else {
                OperatorMetrics::add(&self.metrics.late_dropped, late.len() as u64);
            }
        }
        Ok(())
    }

    fn on_watermark(&mut self, watermark: i64, out: &mut dyn Output) -> Result<(), OperatorError> {
        self.watermark = self.watermark.max(watermark);
        let mut results = Vec::new();
        for (_, key, (start, end, kind)) in self.timers.due(watermark) {
            let ns = (start, end);
            if self.window.2 {
                let mut sessions = self.sessions.get(&key, &());
                // A timer of a session that has since merged into another is stale.
                let Some(i) = sessions.iter().position(|s| s.start == start && s.end == end) else { continue };
                if kind == FIRE {
                    results.push((key.clone(), start, end, sessions[i].acc.clone()));
                }
                if kind == CLEANUP || self.lateness == 0 {
                    sessions.remove(i);
                }
                self.sessions.update(&key, (), sessions);
            } else if kind == CLEANUP {
                self.windows.remove(&key, &ns);
            } else if let Some(acc) = self.windows.get(&key, &ns) {
                results.push((key.clone(), start, end, acc));
                if self.lateness == 0 {
                    self.windows.remove(&key, &ns);
                }
            }
        }
        self.emit(results, out)
    }
}
