//! The running window aggregate: assigns rows to event-time windows per key, keeps their
//! accumulators in the subtask's state backend, and emits a window's result when the
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
//! Tumbling and hopping windows are cut into slices of `gcd(size, slide)`: a row updates the
//! accumulators of its one slice, and a window's result is the merge of its `size / gcd`
//! slices when it fires. Per key there is one timer per slice end that has windows to fire,
//! not one per window: when the window ending there fires, the next window of that key that
//! has data is due next. Sessions are kept per key in state, with a fire and a cleanup timer.
//!
//! Per batch, argument expressions are evaluated once (vectorized, by DataFusion), each row's
//! key is row-encoded and hashed to its key group once (the partition hash), and rows are
//! grouped by (key, slice) before accumulators are touched: one state read and write per
//! group, one accumulator update per row.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::Range;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, Float64Array, Float64Builder, Int64Array, Int64Builder, TimestampMillisecondArray, UInt32Array,
};
use arrow::compute::{cast, take_record_batch};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;
use arrow::row::{RowConverter, Rows, SortField};
use datafusion::common::DFSchema;
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::PhysicalExpr;

use super::Window;
use super::acc::{Acc, Accs, max_bytes, min_bytes};
use crate::runtime::expr::Compiler;
use crate::runtime::{BuildContext, Operator, OperatorError, OperatorMetrics, Output};
use crate::spec::check::StreamSchema;
use crate::state::backend::{StateBackend, StateDescriptor, StateResult, keyed_prefix, prefix_end};
use crate::state::codec::{Codec, WindowNs, from_ordered_i64, ordered_i64};
use crate::state::key_group_of;
use crate::state::key_hash::hash_rows;
use crate::state::typed::{DueTimer, KeyCtx, Timers, ValueState};

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
    /// Row encoding of the argument, for values kept as bytes (count distinct, min/max of
    /// non-numbers), with the encoding of null.
    bytes: Option<(RowConverter, Vec<u8>)>,
}

/// An argument column prepared for accumulation.
enum Arg {
    None,
    Int(Int64Array),
    Float(Float64Array),
    Other(ArrayRef),
}

/// What a timer does when it fires.
const FIRE: u8 = 0;
const CLEANUP: u8 = 1;

/// A timer's namespace: the window (or session) it is for, and what it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TimerNs {
    window: WindowNs,
    action: u8,
}

impl Codec for TimerNs {
    const NAME: &'static str = "window + action";
    fn encode(&self, out: &mut Vec<u8>) {
        self.window.encode(out);
        out.push(self.action);
    }
    fn decode(b: &[u8]) -> StateResult<Self> {
        match b {
            [w @ .., action] if w.len() == 16 && *action <= CLEANUP => {
                Ok(TimerNs { window: WindowNs::decode(w)?, action: *action })
            }
            _ => Err(crate::state::backend::StateError::new("a stored window timer is malformed")),
        }
    }
}

/// The window shape in milliseconds.
#[derive(Debug, Clone, Copy)]
enum Shape {
    /// Tumbling (`slide == size`) or hopping windows, cut into slices of `slice`.
    Fixed { size: i64, slide: i64, slice: i64 },
    /// Sessions that close after `gap`.
    Session { gap: i64 },
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Timers fired per step of one watermark.
const FIRE_STEP: usize = 8192;

/// The states a window aggregate declares, in table order: accumulators, then timers.
pub fn descriptors(window: &Window) -> Vec<StateDescriptor> {
    let acc = match window {
        Window::Session { .. } => ValueState::<WindowNs, Accs>::descriptor("sessions"),
        _ => ValueState::<i64, Accs>::descriptor("slices"),
    };
    vec![acc, Timers::<TimerNs>::descriptor("timers")]
}

const ACC: usize = 0;
const TIMERS: usize = 1;

/// A result to emit: key, window start and end, accumulators.
type Result4 = (Vec<u8>, i64, i64, Accs);

/// The operator.
pub struct WindowOperator {
    shape: Shape,
    lateness: i64,
    key_cols: Vec<usize>,
    ts_col: usize,
    aggs: Vec<AggSpec>,
    keys: RowConverter,
    output: SchemaRef,
    watermark: i64,
    state: Box<dyn StateBackend>,
    slices: ValueState<i64, Accs>,
    sessions: ValueState<WindowNs, Accs>,
    timers: Timers<TimerNs>,
    key_groups: Range<u16>,
    max_parallelism: u32,
    hashes: Vec<u64>,
    late_output: bool,
    metrics: Arc<OperatorMetrics>,
}

impl WindowOperator {
    /// Builds the operator for one subtask and opens its state backend.
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
            let as_bytes = match kind {
                Kind::CountDistinct => true,
                Kind::Min | Kind::Max => !is_int_like(&out_type) && !is_float(&out_type),
                _ => false,
            };
            let bytes = match &arg {
                Some(a) if as_bytes => {
                    let t = a.data_type(schema)?;
                    let conv = RowConverter::new(vec![SortField::new(t.clone())])?;
                    let null = conv.convert_columns(&[arrow::array::new_null_array(&t, 1)])?.row(0).as_ref().to_vec();
                    Some((conv, null))
                }
                _ => None,
            };
            aggs.push(AggSpec { kind, arg, out_type, bytes });
        }
        // Validation refuses these; a window that could loop for ages per row never runs.
        if let Some((_, problem)) = spec.window.problem() {
            return Err(OperatorError::new(problem));
        }
        let shape = match &spec.window {
            Window::Tumbling { size } => {
                let size = size.as_millis_i64().max(1);
                Shape::Fixed { size, slide: size, slice: size }
            }
            Window::Hopping { size, slide } => {
                let (size, slide) = (size.as_millis_i64().max(1), slide.as_millis_i64().max(1));
                Shape::Fixed { size, slide, slice: gcd(size, slide) }
            }
            Window::Session { gap } => Shape::Session { gap: gap.as_millis_i64().max(1) },
        };
        let state = ctx.state.open(&ctx.operator, ctx.subtask, descriptors(&spec.window))?;
        Ok(WindowOperator {
            shape,
            lateness: spec.allowed_lateness.map_or(0, |d| d.as_millis_i64()),
            key_cols,
            ts_col,
            aggs,
            keys,
            output: output.schema.clone(),
            watermark: i64::MIN,
            state,
            slices: ValueState::new(ACC),
            sessions: ValueState::new(ACC),
            timers: Timers::new(TIMERS),
            key_groups: ctx.key_groups.clone(),
            max_parallelism: ctx.max_parallelism,
            hashes: Vec::new(),
            late_output: spec.late_output.is_some(),
            metrics: ctx.metrics.clone(),
        })
    }

    fn new_accs(&self) -> Accs {
        let accs = self
            .aggs
            .iter()
            .map(|a| {
                let int = is_int_like(&a.out_type);
                let bytes = a.bytes.is_some();
                match a.kind {
                    Kind::Count => Acc::Count(0),
                    Kind::CountDistinct => Acc::Distinct(BTreeMap::new()),
                    Kind::Sum if int => Acc::SumInt(None),
                    Kind::Sum => Acc::SumFloat(None),
                    Kind::Min if bytes => Acc::MinBytes(None),
                    Kind::Max if bytes => Acc::MaxBytes(None),
                    Kind::Min if int => Acc::MinInt(None),
                    Kind::Max if int => Acc::MaxInt(None),
                    Kind::Min => Acc::MinFloat(None),
                    Kind::Max => Acc::MaxFloat(None),
                    Kind::Avg => Acc::Avg(0.0, 0),
                }
            })
            .collect();
        Accs(accs)
    }

    /// Whether a window ending at `end` no longer accepts rows.
    fn is_late(&self, end: i64) -> bool {
        end.saturating_sub(1).saturating_add(self.lateness) <= self.watermark
    }

    /// Whether a window ending at `end` has already fired.
    fn is_due(&self, end: i64) -> bool {
        end.saturating_sub(1) <= self.watermark
    }

    fn cleanup_time(&self, end: i64) -> i64 {
        end.saturating_sub(1).saturating_add(self.lateness)
    }

    /// Evaluates the arguments of every aggregate once for the batch, with the row encoding
    /// of those kept as bytes.
    fn prepare_args(&self, batch: &RecordBatch) -> Result<Vec<(Arg, Option<Rows>)>, OperatorError> {
        let mut args = Vec::new();
        for a in &self.aggs {
            let Some(expr) = &a.arg else {
                args.push((Arg::None, None));
                continue;
            };
            let array = expr.evaluate(batch)?.into_array(batch.num_rows())?;
            let rows = match &a.bytes {
                Some((conv, _)) => Some(conv.convert_columns(std::slice::from_ref(&array))?),
                None => None,
            };
            let t = array.data_type();
            let arg = if is_int_like(t) {
                Arg::Int(downcast_owned::<Int64Array>(cast(&array, &DataType::Int64)?)?)
            } else if t.is_numeric() {
                Arg::Float(downcast_owned::<Float64Array>(cast(&array, &DataType::Float64)?)?)
            } else {
                Arg::Other(array)
            };
            args.push((arg, rows));
        }
        Ok(args)
    }

    /// Builds output rows for `(key, start, end, accs)` results.
    fn emit(&self, results: Vec<Result4>, out: &mut dyn Output) -> Result<(), OperatorError> {
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
            let values: Vec<&Acc> = results.iter().map(|r| &r.3.0[i]).collect();
            columns.push(finish(&values, spec)?);
        }
        out.emit(RecordBatch::try_new(self.output.clone(), columns)?)
    }

    /// The key group of every row: the partition hash of its key columns.
    fn key_groups_of(&mut self, key_arrays: &[ArrayRef], rows: usize) -> Result<Vec<u16>, OperatorError> {
        if self.key_cols.is_empty() {
            return Ok(vec![self.key_groups.start; rows]);
        }
        hash_rows(key_arrays, &mut self.hashes)?;
        let mut groups = Vec::with_capacity(rows);
        for &h in &self.hashes {
            let kg = key_group_of(h, self.max_parallelism) as u16;
            if !self.key_groups.contains(&kg) {
                return Err(OperatorError::new(format!(
                    "a row of key group {kg} reached the subtask owning key groups {}..{}",
                    self.key_groups.start, self.key_groups.end
                )));
            }
            groups.push(kg);
        }
        Ok(groups)
    }

    // ---- tumbling and hopping windows, in slices ----

    fn fixed(&self) -> (i64, i64, i64) {
        match self.shape {
            Shape::Fixed { size, slide, slice } => (size, slide, slice),
            Shape::Session { .. } => unreachable!("sessions have no slices"),
        }
    }

    /// The start of the last window containing the slice at `s`, and its end.
    fn last_window(&self, s: i64) -> Option<(i64, i64)> {
        let (size, slide, _) = self.fixed();
        let start = s.checked_sub(s.rem_euclid(slide))?;
        Some((start, start.checked_add(size)?))
    }

    /// The end of the first window containing the slice at `s`.
    fn first_window_end(&self, s: i64) -> i64 {
        let (size, slide, _) = self.fixed();
        // The smallest multiple of `slide` above `s - size`, plus `size`.
        let lo = i128::from(s) - i128::from(size);
        let start = lo - lo.rem_euclid(i128::from(slide)) + i128::from(slide);
        i64::try_from(start + i128::from(size)).unwrap_or(i64::MAX)
    }

    fn slice_key(k: KeyCtx<'_>, s: i64) -> Vec<u8> {
        keyed_prefix(k.key_group, k.key, &ordered_i64(s))
    }

    /// The merged accumulators of the slices of `k` in `[start, end)`, if there is any.
    fn merged(&self, k: KeyCtx<'_>, start: i64, end: i64) -> Result<Option<Accs>, OperatorError> {
        let mut merged: Option<Accs> = None;
        for e in self.state.range(ACC, &Self::slice_key(k, start), Some(&Self::slice_key(k, end)))? {
            let acc = Accs::decode(&e?.1)?;
            match &mut merged {
                Some(m) => m.merge(&acc),
                None => merged = Some(acc),
            }
        }
        Ok(merged)
    }

    /// Deletes the slices of `k` that start before `before`.
    fn drop_slices(&mut self, k: KeyCtx<'_>, before: i64) -> Result<(), OperatorError> {
        let keys: Vec<Vec<u8>> = self
            .state
            .range(ACC, &Self::slice_key(k, i64::MIN), Some(&Self::slice_key(k, before)))?
            .map(|e| e.map(|(key, _)| key))
            .collect::<StateResult<_>>()?;
        for key in keys {
            self.state.delete(ACC, &key)?;
        }
        Ok(())
    }

    /// The first slice of `k` starting at or after `from`.
    fn next_slice(&self, k: KeyCtx<'_>, from: i64) -> Result<Option<i64>, OperatorError> {
        let start = Self::slice_key(k, from);
        let end = prefix_end(&Self::slice_key(k, from)[..start.len() - 8]);
        let first = self.state.range(ACC, &start, end.as_deref())?.next().transpose()?;
        Ok(first.and_then(|(key, _)| from_ordered_i64(&key[key.len() - 8..])))
    }

    fn process_fixed(
        &mut self,
        ts: &TimestampMillisecondArray,
        keys: &Rows,
        kgs: &[u16],
        args: &[(Arg, Option<Rows>)],
        out: &mut dyn Output,
    ) -> Result<Vec<u32>, OperatorError> {
        let (size, slide, slice) = self.fixed();
        let n = ts.len();
        // Group rows by (key, slice), vectorized: one pass assigns each row its group.
        let mut group_of = vec![u32::MAX; n];
        let mut index: HashMap<(&[u8], i64), u32> = HashMap::new();
        let mut groups: Vec<(usize, i64)> = Vec::new();
        let mut late = Vec::new();
        for (r, g) in group_of.iter_mut().enumerate() {
            if ts.is_null(r) {
                late.push(r as u32);
                continue;
            }
            let t = ts.value(r);
            // Event times so close to the ends of the i64 range that their windows cannot be
            // represented are treated as late.
            let Some(s) = t.checked_sub(t.rem_euclid(slice)) else {
                late.push(r as u32);
                continue;
            };
            match self.last_window(s) {
                Some((_, end)) if !self.is_late(end) => {}
                _ => {
                    late.push(r as u32);
                    continue;
                }
            }
            let next = groups.len() as u32;
            *g = *index.entry((keys.row(r).data(), s)).or_insert_with(|| {
                groups.push((r, s));
                next
            });
        }
        let mut accs = Vec::with_capacity(groups.len());
        for &(r, s) in &groups {
            let k = KeyCtx { key_group: kgs[r], key: keys.row(r).data() };
            accs.push(self.slices.get(&*self.state, k, &s)?.unwrap_or_else(|| self.new_accs()));
        }
        for (i, (arg, bytes)) in args.iter().enumerate() {
            for (r, &g) in group_of.iter().enumerate() {
                if g != u32::MAX {
                    add(&mut accs[g as usize].0[i], arg, bytes.as_ref(), r);
                }
            }
        }
        // Windows that already fired and that this batch changed: (key, start, key group).
        let mut updated: BTreeSet<(&[u8], i64, u16)> = BTreeSet::new();
        for (&(r, s), acc) in groups.iter().zip(&accs) {
            let key = keys.row(r).data();
            let k = KeyCtx { key_group: kgs[r], key };
            self.slices.put(&mut *self.state, k, &s, acc)?;
            let (mut start, last_end) = self.last_window(s).expect("checked above");
            // The windows containing this slice, from the last back (at most size / slide).
            let mut first_pending = None;
            while start > s.saturating_sub(size) {
                let end = start.saturating_add(size);
                if !self.is_due(end) {
                    first_pending = Some((start, end));
                } else if !self.is_late(end) {
                    updated.insert((key, start, kgs[r]));
                }
                match start.checked_sub(slide) {
                    Some(x) => start = x,
                    None => break,
                }
            }
            // Registering a timer twice keeps one: one per (key, slice end) with windows to fire.
            if let Some((start, end)) = first_pending {
                let ns = TimerNs { window: WindowNs { start, end }, action: FIRE };
                self.timers.register(&mut *self.state, k, end.saturating_sub(1), &ns)?;
            } else if self.lateness > 0 {
                // Every window of the slice has fired: it goes when the last one is past lateness.
                let ns = TimerNs {
                    window: WindowNs { start: last_end.saturating_sub(size), end: last_end },
                    action: CLEANUP,
                };
                let at = self.cleanup_time(last_end);
                self.timers.register(&mut *self.state, k, at, &ns)?;
            }
        }
        let mut results = Vec::new();
        for (key, start, kg) in updated {
            let end = start.saturating_add(size);
            if let Some(acc) = self.merged(KeyCtx { key_group: kg, key }, start, end)? {
                results.push((key.to_vec(), start, end, acc));
            }
        }
        self.emit(results, out)?;
        Ok(late)
    }

    /// Fires a due timer of tumbling or hopping windows, then every later window of the
    /// same key that has data and is due too; registers the timer of the next one.
    fn fire_fixed(
        &mut self,
        t: DueTimer<TimerNs>,
        fired: &mut HashSet<(u16, Vec<u8>, i64)>,
        results: &mut Vec<Result4>,
    ) -> Result<(), OperatorError> {
        let (size, slide, _) = self.fixed();
        let key = t.key;
        let k = KeyCtx { key_group: t.key_group, key: &key };
        let mut end = t.namespace.window.end;
        // Slices before this start belong to no window after the one ending at `end`.
        let keep_from = |end: i64| end.saturating_add(slide).saturating_sub(size);
        if t.namespace.action == CLEANUP {
            return self.drop_slices(k, keep_from(end));
        }
        loop {
            if !fired.insert((t.key_group, key.clone(), end)) {
                return Ok(());
            }
            let start = end.saturating_sub(size);
            if let Some(acc) = self.merged(k, start, end)? {
                results.push((key.clone(), start, end, acc));
            }
            if self.is_late(end) {
                self.drop_slices(k, keep_from(end))?;
            } else {
                let ns = TimerNs { window: WindowNs { start, end }, action: CLEANUP };
                let at = self.cleanup_time(end);
                self.timers.register(&mut *self.state, k, at, &ns)?;
            }
            let Some(s) = self.next_slice(k, keep_from(end))? else { return Ok(()) };
            // The first window after this one that holds `s`.
            let next = self.first_window_end(s).max(end.saturating_add(slide));
            if next <= end {
                return Ok(());
            }
            if !self.is_due(next) {
                let ns = TimerNs { window: WindowNs { start: next.saturating_sub(size), end: next }, action: FIRE };
                return Ok(self.timers.register(&mut *self.state, k, next.saturating_sub(1), &ns)?);
            }
            end = next;
        }
    }

    // ---- session windows ----

    /// Every session of `k`, by start.
    fn load_sessions(&self, k: KeyCtx<'_>) -> Result<Vec<(WindowNs, Accs)>, OperatorError> {
        let full = keyed_prefix(k.key_group, k.key, &[0; 16]);
        let prefix = &full[..full.len() - 16];
        let mut out = Vec::new();
        for e in self.state.prefix(ACC, prefix)? {
            let (key, value) = e?;
            out.push((WindowNs::decode(&key[prefix.len()..])?, Accs::decode(&value)?));
        }
        Ok(out)
    }

    fn register_session(&mut self, k: KeyCtx<'_>, w: WindowNs) -> Result<(), OperatorError> {
        if !self.is_due(w.end) {
            self.timers.register(&mut *self.state, k, w.end.saturating_sub(1), &TimerNs { window: w, action: FIRE })?;
        }
        if self.lateness > 0 {
            let ns = TimerNs { window: w, action: CLEANUP };
            let at = self.cleanup_time(w.end);
            self.timers.register(&mut *self.state, k, at, &ns)?;
        }
        Ok(())
    }

    fn process_sessions(
        &mut self,
        ts: &TimestampMillisecondArray,
        keys: &Rows,
        kgs: &[u16],
        args: &[(Arg, Option<Rows>)],
        out: &mut dyn Output,
    ) -> Result<Vec<u32>, OperatorError> {
        let Shape::Session { gap } = self.shape else { unreachable!("not a session window") };
        let mut by_key: HashMap<&[u8], (u16, Vec<u32>)> = HashMap::new();
        let mut late = Vec::new();
        for (r, &kg) in kgs.iter().enumerate() {
            if ts.is_null(r) {
                late.push(r as u32);
            } else {
                by_key.entry(keys.row(r).data()).or_insert_with(|| (kg, Vec::new())).1.push(r as u32);
            }
        }
        let mut by_key: Vec<_> = by_key.into_iter().collect();
        by_key.sort_by(|a, b| a.0.cmp(b.0));
        let mut results = Vec::new();
        for (key, (kg, mut rows)) in by_key {
            let k = KeyCtx { key_group: kg, key };
            rows.sort_by_key(|&r| ts.value(r as usize));
            let mut sessions = self.load_sessions(k)?;
            let before: Vec<WindowNs> = sessions.iter().map(|s| s.0).collect();
            let mut touched: Vec<WindowNs> = Vec::new();
            for r in rows {
                let t = ts.value(r as usize);
                let (start, end) = (t, t.saturating_add(gap));
                // Flink's `TimeWindow.intersects`: sessions that overlap or touch merge, so a row
                // exactly `gap` after a session's last row extends it.
                let overlapping: Vec<usize> =
                    (0..sessions.len()).filter(|&i| sessions[i].0.start <= end && start <= sessions[i].0.end).collect();
                if overlapping.is_empty() && self.is_late(end) {
                    late.push(r);
                    continue;
                }
                let mut w = WindowNs { start, end };
                let mut acc = self.new_accs();
                for &i in overlapping.iter().rev() {
                    let (old, old_acc) = sessions.remove(i);
                    w.start = w.start.min(old.start);
                    w.end = w.end.max(old.end);
                    acc.merge(&old_acc);
                }
                for (i, (arg, bytes)) in args.iter().enumerate() {
                    add(&mut acc.0[i], arg, bytes.as_ref(), r as usize);
                }
                // Timers are a set: registering an unchanged session again is a no-op.
                self.register_session(k, w)?;
                if self.is_due(w.end) {
                    touched.retain(|x| *x != w);
                    touched.push(w);
                }
                sessions.push((w, acc));
            }
            // Timers of sessions merged away stay; they find no session when they fire.
            for old in before {
                if !sessions.iter().any(|s| s.0 == old) {
                    self.sessions.clear(&mut *self.state, k, &old)?;
                }
            }
            for (w, acc) in &sessions {
                self.sessions.put(&mut *self.state, k, w, acc)?;
            }
            // A session updated twice in one batch is reported once, with its latest value.
            for w in touched {
                if let Some((_, acc)) = sessions.iter().find(|s| s.0 == w) {
                    results.push((key.to_vec(), w.start, w.end, acc.clone()));
                }
            }
        }
        self.emit(results, out)?;
        Ok(late)
    }

    fn fire_session(&mut self, t: DueTimer<TimerNs>, results: &mut Vec<Result4>) -> Result<(), OperatorError> {
        let k = KeyCtx { key_group: t.key_group, key: &t.key };
        let w = t.namespace.window;
        // A timer of a session that has since merged into another finds nothing.
        let Some(acc) = self.sessions.get(&*self.state, k, &w)? else { return Ok(()) };
        if t.namespace.action == FIRE {
            results.push((t.key.clone(), w.start, w.end, acc));
        }
        if t.namespace.action == CLEANUP || self.lateness == 0 {
            self.sessions.clear(&mut *self.state, k, &w)?;
        }
        Ok(())
    }
}

/// Adds row `r` of an argument to an accumulator.
fn add(acc: &mut Acc, arg: &Arg, bytes: Option<&Rows>, r: usize) {
    match (acc, arg) {
        (Acc::Count(n), Arg::None) => *n += 1,
        (Acc::Count(n), arg) => *n += i64::from(!is_null(arg, r)),
        (Acc::Distinct(m), arg) if !is_null(arg, r) => {
            if let Some(rows) = bytes {
                let c = m.entry(rows.row(r).as_ref().to_vec()).or_insert(0);
                *c = c.saturating_add(1);
            }
        }
        (Acc::SumInt(s), Arg::Int(v)) if v.is_valid(r) => *s = Some(s.unwrap_or(0).wrapping_add(v.value(r))),
        (Acc::SumFloat(s), Arg::Float(v)) if v.is_valid(r) => *s = Some(s.unwrap_or(0.0) + v.value(r)),
        (Acc::SumFloat(s), Arg::Int(v)) if v.is_valid(r) => *s = Some(s.unwrap_or(0.0) + v.value(r) as f64),
        (Acc::MinInt(m), Arg::Int(v)) if v.is_valid(r) => *m = Some(m.map_or(v.value(r), |m| m.min(v.value(r)))),
        (Acc::MaxInt(m), Arg::Int(v)) if v.is_valid(r) => *m = Some(m.map_or(v.value(r), |m| m.max(v.value(r)))),
        (Acc::MinFloat(m), Arg::Float(v)) if v.is_valid(r) => *m = Some(m.map_or(v.value(r), |m| m.min(v.value(r)))),
        (Acc::MaxFloat(m), Arg::Float(v)) if v.is_valid(r) => *m = Some(m.map_or(v.value(r), |m| m.max(v.value(r)))),
        (Acc::MinBytes(m), arg) if !is_null(arg, r) => {
            if let Some(rows) = bytes {
                min_bytes(m, rows.row(r).as_ref());
            }
        }
        (Acc::MaxBytes(m), arg) if !is_null(arg, r) => {
            if let Some(rows) = bytes {
                max_bytes(m, rows.row(r).as_ref());
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

/// Final values of one aggregate over many windows, as an array of its output type.
fn finish(values: &[&Acc], spec: &AggSpec) -> Result<ArrayRef, OperatorError> {
    let ty = &spec.out_type;
    let array: ArrayRef = match (values.first(), &spec.bytes) {
        (Some(Acc::MinBytes(_) | Acc::MaxBytes(_)), Some((conv, null))) => {
            let parser = conv.parser();
            let rows = values.iter().map(|v| match v {
                Acc::MinBytes(Some(b)) | Acc::MaxBytes(Some(b)) => parser.parse(b),
                _ => parser.parse(null),
            });
            conv.convert_rows(rows)?.remove(0)
        }
        (Some(Acc::Count(_) | Acc::Distinct(_) | Acc::SumInt(_) | Acc::MinInt(_) | Acc::MaxInt(_)), _) => {
            let mut b = Int64Builder::with_capacity(values.len());
            for v in values {
                b.append_option(match v {
                    Acc::Count(n) => Some(*n),
                    Acc::Distinct(m) => Some(m.len() as i64),
                    Acc::SumInt(x) | Acc::MinInt(x) | Acc::MaxInt(x) => *x,
                    _ => None,
                });
            }
            Arc::new(b.finish())
        }
        (Some(Acc::SumFloat(_) | Acc::MinFloat(_) | Acc::MaxFloat(_) | Acc::Avg(..)), _) => {
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
        _ => arrow::array::new_null_array(ty, values.len()),
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
        // Each row's key is encoded and hashed once per batch.
        let keys = self.keys.convert_columns(&key_arrays)?;
        let kgs = self.key_groups_of(&key_arrays, batch.num_rows())?;
        // Aggregate arguments are evaluated once per batch, whatever the window shape.
        let args = self.prepare_args(&batch)?;
        let late = match self.shape {
            Shape::Session { .. } => self.process_sessions(ts, &keys, &kgs, &args, out)?,
            Shape::Fixed { .. } => self.process_fixed(ts, &keys, &kgs, &args, out)?,
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
        if watermark <= self.watermark {
            return Ok(());
        }
        self.watermark = watermark;
        // Due timers in bounded steps, each emitted before the next is taken, so a watermark
        // that closes millions of windows (the end of input) holds only a step in memory.
        let mut fired = HashSet::new();
        loop {
            let due = self.timers.take_due(&mut *self.state, self.key_groups.clone(), watermark, FIRE_STEP)?;
            if due.is_empty() {
                return Ok(());
            }
            let mut results = Vec::new();
            for t in due {
                match self.shape {
                    Shape::Fixed { .. } => self.fire_fixed(t, &mut fired, &mut results)?,
                    Shape::Session { .. } => self.fire_session(t, &mut results)?,
                }
            }
            self.emit(results, out)?;
        }
    }
}
