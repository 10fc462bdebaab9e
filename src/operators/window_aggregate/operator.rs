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
//! bridges two sessions (rows of a key are taken in event-time order within a batch).
//!
//! Tumbling and hopping windows are cut into slices of `gcd(size, slide)`: a row updates the
//! accumulators of its one slice, and a window's result is the merge of its `size / gcd`
//! slices when it fires. Slices live in two tiers:
//!
//! - the hot tier, in memory, by slice then key (hashed once per batch by the partition hash):
//!   one hash probe and one accumulator update per row; when the watermark passes a window's
//!   end, the window is merged from its hot slices for every key at once, and slices no later
//!   window needs are dropped. No timers, no encoding.
//! - the state backend, `[key group][key][slice]`, with one timer per key for its next window
//!   to fire (not one per window). Hot slices move there when the hot tier outgrows its share of
//!   `state.memory`, when the job stops, and always under `allowed_lateness` (fired windows stay
//!   updatable, and a late row's update is emitted after its batch). A due window that may
//!   hold rows in the backend (it starts at or before the latest slice moved there) moves its
//!   hot slices there first and fires by its timers, so every window fires from one tier.
//!
//! Sessions are kept per key in the backend, with a fire and a cleanup timer; per batch, a
//! key's sessions and timers are written once, and a session merged into another takes its
//! timers with it.
//!
//! Per batch, argument expressions are evaluated once (vectorized, by DataFusion), and each
//! row's key is row-encoded and hashed to its key group once (the partition hash).

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
use super::acc::{Acc, Accs, SessionList, max_bytes, min_bytes};
use crate::runtime::expr::Compiler;
use crate::runtime::{BuildContext, Operator, OperatorError, OperatorMetrics, OperatorSnapshot, Output};
use crate::spec::check::StreamSchema;
use crate::state::backend::{StateBackend, StateDescriptor, StateResult, keyed_prefix};
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimerAction {
    /// Emit the window's result.
    Fire = 0,
    /// Drop the window's state: it is past its allowed lateness.
    Cleanup = 1,
}

/// A timer's namespace: the window (or session) it is for, and what it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TimerNs {
    window: WindowNs,
    action: TimerAction,
}

impl Codec for TimerNs {
    const NAME: &'static str = "window + action";
    fn encode(&self, out: &mut Vec<u8>) {
        self.window.encode(out);
        out.push(self.action as u8);
    }
    fn decode(b: &[u8]) -> StateResult<Self> {
        match b {
            [w @ .., 0] if w.len() == 16 => Ok(TimerNs { window: WindowNs::decode(w)?, action: TimerAction::Fire }),
            [w @ .., 1] if w.len() == 16 => Ok(TimerNs { window: WindowNs::decode(w)?, action: TimerAction::Cleanup }),
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

/// The end of the first window of `size` every `slide` that contains the slice at `s`: the
/// smallest multiple of `slide` above `s - size`, plus `size`.
fn first_window_end(size: i64, slide: i64, s: i64) -> i64 {
    let lo = i128::from(s) - i128::from(size);
    let start = lo - lo.rem_euclid(i128::from(slide)) + i128::from(slide);
    i64::try_from(start + i128::from(size)).unwrap_or(i64::MAX)
}

/// The end of the last window of `size` every `slide` that is due at `watermark` (ends at or
/// before `watermark + 1`).
fn last_window_end_at(size: i64, slide: i64, watermark: i64) -> i64 {
    let hi = i128::from(watermark) + 1 - i128::from(size);
    let start = hi - hi.rem_euclid(i128::from(slide));
    i64::try_from(start + i128::from(size)).unwrap_or(i64::MAX)
}

/// The merge of the slices in `[start, end)`, if there is any.
fn merge_slices(slices: &[(i64, Accs)], start: i64, end: i64) -> Option<Accs> {
    let mut inside = slices.iter().filter(|(s, _)| (start..end).contains(s));
    let mut merged = inside.next()?.1.clone();
    for (_, acc) in inside {
        merged.merge(acc);
    }
    Some(merged)
}

/// The accumulators of one key in one slice of the hot tier.
struct HotEntry {
    /// The key's partition hash.
    hash: u64,
    key_group: u16,
    key: Box<[u8]>,
    accs: Accs,
}

/// The hot tier's slices, by start: per slice, its keys.
type HotSlices = BTreeMap<i64, hashbrown::HashTable<HotEntry>>;

/// What one hot (key, slice) entry is assumed to take, for the hot tier's bound.
const HOT_ENTRY_BYTES: usize = 128;

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Timers fired, and window results emitted per batch, in one step of a watermark.
const FIRE_STEP: usize = 8192;

/// The states a window aggregate declares, in table order: accumulators, then timers.
pub fn descriptors(window: &Window) -> Vec<StateDescriptor> {
    let acc = match window {
        Window::Session { .. } => ValueState::<(), SessionList>::descriptor("sessions"),
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
    sessions: ValueState<(), SessionList>,
    timers: Timers<TimerNs>,
    key_groups: Range<u16>,
    max_parallelism: u32,
    hashes: Vec<u64>,
    /// Tumbling and hopping slices kept decoded in memory, by slice then key (see
    /// [`WindowOperator::fire_hot`]); what is not here is in the state backend.
    hot: HotSlices,
    /// Entries in `hot`.
    hot_entries: usize,
    /// The latest slice start ever moved to the state backend: a window starting after it has
    /// all its rows in the hot tier. (A backend restored from a snapshot must set it to the
    /// latest slice it holds.)
    cold_until: Option<i64>,
    /// Entries the hot tier may hold: a quarter of the subtask's state memory.
    hot_limit: usize,
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
        let mut state = ctx.open_state(descriptors(&spec.window))?;
        // A restored job takes the entries of its key groups from every old subtask's snapshot
        // (any parallelism), the lowest watermark among them, and knows which slices are in state.
        let mut watermark = None::<i64>;
        let mut cold_until = None::<i64>;
        let mut hot: HotSlices = BTreeMap::new();
        let mut hot_entries = 0;
        for (meta, blob) in ctx.restored_state() {
            if let Some(blob) = blob {
                let (backend, entries) = split_snapshot(blob)?;
                // Empty when the backend's state came as native files (restored by `open_state`).
                if !backend.is_empty() {
                    state.restore(backend, ctx.key_groups.clone())?;
                }
                for (slice, e) in entries {
                    if ctx.key_groups.contains(&e.key_group) {
                        hot.entry(slice).or_default().insert_unique(e.hash, e, |e| e.hash);
                        hot_entries += 1;
                    }
                }
            }
            let w = meta.get("watermark").and_then(serde_json::Value::as_i64).unwrap_or(i64::MIN);
            watermark = Some(watermark.map_or(w, |m| m.min(w)));
            if let Some(c) = meta.get("cold_until").and_then(serde_json::Value::as_i64) {
                cold_until = Some(cold_until.map_or(c, |m| m.max(c)));
            }
        }
        Ok(WindowOperator {
            shape,
            lateness: spec.allowed_lateness.map_or(0, |d| d.as_millis_i64()),
            key_cols,
            ts_col,
            aggs,
            keys,
            output: output.schema.clone(),
            watermark: watermark.unwrap_or(i64::MIN),
            state,
            slices: ValueState::new(ACC),
            sessions: ValueState::new(ACC),
            timers: Timers::new(TIMERS),
            key_groups: ctx.key_groups.clone(),
            max_parallelism: ctx.max_parallelism,
            hashes: Vec::new(),
            hot,
            hot_entries,
            cold_until,
            hot_limit: (ctx.state.per_subtask_memory() / 4 / HOT_ENTRY_BYTES).max(1),
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
    fn emit<K: AsRef<[u8]>>(
        &self,
        results: Vec<(K, i64, i64, Accs)>,
        out: &mut dyn Output,
    ) -> Result<(), OperatorError> {
        if results.is_empty() {
            return Ok(());
        }
        let parser = self.keys.parser();
        let mut columns: Vec<ArrayRef> = if self.key_cols.is_empty() {
            Vec::new()
        } else {
            self.keys.convert_rows(results.iter().map(|r| parser.parse(r.0.as_ref())))?
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

    fn slice_key(k: KeyCtx<'_>, s: i64) -> Vec<u8> {
        keyed_prefix(k.key_group, k.key, &ordered_i64(s))
    }

    /// Every slice of `k`, by start.
    fn load_slices(&self, k: KeyCtx<'_>) -> Result<Vec<(i64, Accs)>, OperatorError> {
        let full = Self::slice_key(k, 0);
        let prefix = &full[..full.len() - 8];
        let mut out = Vec::new();
        for e in self.state.prefix(ACC, prefix)? {
            let (key, value) = e?;
            let s = from_ordered_i64(&key[prefix.len()..])
                .ok_or_else(|| OperatorError::new("a stored slice key is malformed"))?;
            out.push((s, Accs::decode(&value)?));
        }
        Ok(out)
    }

    /// Deletes the slices of `k` that start before `before`, in state and in `slices`.
    fn drop_slices(&mut self, k: KeyCtx<'_>, slices: &mut Vec<(i64, Accs)>, before: i64) -> Result<(), OperatorError> {
        let gone = slices.iter().take_while(|(s, _)| *s < before).count();
        for (s, _) in slices.drain(..gone) {
            self.state.delete(ACC, &Self::slice_key(k, s))?;
        }
        Ok(())
    }

    /// Folds a batch of tumbling or hopping rows into the hot tier, one accumulator update per
    /// row. Returns the late rows. Under `allowed_lateness`, slices that belong to an already
    /// fired window go to state at once, so that window's updated result is emitted after this
    /// batch.
    fn process_fixed(
        &mut self,
        ts: &TimestampMillisecondArray,
        keys: &Rows,
        kgs: &[u16],
        args: &[(Arg, Option<Rows>)],
        out: &mut dyn Output,
    ) -> Result<Vec<u32>, OperatorError> {
        let (size, slide, slice) = self.fixed();
        let template = self.new_accs();
        let mut late = Vec::new();
        // Event times mostly rise, so slice bounds are computed once per run of equal slices.
        let mut last: Option<(i64, bool)> = None;
        for (r, &kg) in kgs.iter().enumerate().take(ts.len()) {
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
            let is_late = match last {
                Some((ls, l)) if ls == s => l,
                _ => {
                    let l = self.last_window(s).is_none_or(|(_, end)| self.is_late(end));
                    last = Some((s, l));
                    l
                }
            };
            if is_late {
                late.push(r as u32);
                continue;
            }
            let key = keys.row(r).data();
            let hash = self.hashes.get(r).copied().unwrap_or(0);
            let table = self.hot.entry(s).or_default();
            let mut added = false;
            let entry = table
                .entry(hash, |e| *e.key == *key, |e| e.hash)
                .or_insert_with(|| {
                    added = true;
                    HotEntry { hash, key_group: kg, key: key.into(), accs: template.clone() }
                })
                .into_mut();
            for (i, (arg, bytes)) in args.iter().enumerate() {
                add(&mut entry.accs.0[i], arg, bytes.as_ref(), r);
            }
            self.hot_entries += usize::from(added);
        }
        if self.lateness > 0 {
            // Slices whose first window has fired: the slices before the first unfired window.
            // (A slice's first window ends within `slide` after it.)
            let first_unfired = first_window_end(size, slide, self.watermark.saturating_add(1));
            let bound = first_unfired.saturating_sub(slide);
            let keep = self.hot.split_off(&bound);
            let fired = std::mem::replace(&mut self.hot, keep);
            self.move_to_state(fired, out)?;
        }
        if self.hot_entries >= self.hot_limit {
            let all = std::mem::take(&mut self.hot);
            self.move_to_state(all, out)?;
        }
        Ok(late)
    }

    /// Fires the windows due at `watermark` (the old watermark was `prev`) whose rows are all
    /// in the hot tier, in end order, one result per key, and drops slices no later window
    /// needs. Windows that may hold rows in the state backend were moved there first (see
    /// `on_watermark`) and fire by their timers.
    fn fire_hot(&mut self, prev: i64, watermark: i64, out: &mut dyn Output) -> Result<(), OperatorError> {
        let (size, slide, _) = self.fixed();
        let Some(&first) = self.hot.keys().next() else { return Ok(()) };
        let mut end = first_window_end(size, slide, first).max(first_window_end(size, slide, prev.saturating_add(1)));
        while end.saturating_sub(1) <= watermark {
            let start = end.saturating_sub(size);
            // One result per key: indices into `results`, by key hash.
            let mut index: hashbrown::HashTable<usize> = hashbrown::HashTable::new();
            let mut results: Vec<(&HotEntry, Accs)> = Vec::new();
            for table in self.hot.range(start..end).map(|(_, t)| t) {
                for e in table {
                    let found = index.find(e.hash, |&i| *results[i].0.key == *e.key).copied();
                    match found {
                        Some(i) => results[i].1.merge(&e.accs),
                        None => {
                            index.insert_unique(e.hash, results.len(), |&i| results[i].0.hash);
                            results.push((e, e.accs.clone()));
                        }
                    }
                }
            }
            results.sort_unstable_by(|a, b| (a.0.key_group, &a.0.key).cmp(&(b.0.key_group, &b.0.key)));
            // In batches of at most FIRE_STEP rows.
            let mut rows = results.into_iter().map(|(e, acc)| (&*e.key, start, end, acc)).peekable();
            while rows.peek().is_some() {
                self.emit(rows.by_ref().take(FIRE_STEP).collect(), out)?;
            }
            // Slices before this start belong to no later window.
            let keep = self.hot.split_off(&end.saturating_add(slide).saturating_sub(size));
            for (_, t) in std::mem::replace(&mut self.hot, keep) {
                self.hot_entries -= t.len();
            }
            let Some(&next) = self.hot.keys().next() else { return Ok(()) };
            let following = first_window_end(size, slide, next).max(end.saturating_add(slide));
            if following <= end {
                return Ok(());
            }
            end = following;
        }
        Ok(())
    }

    /// Moves hot slices into the state backend.
    fn move_to_state(&mut self, slices: HotSlices, out: &mut dyn Output) -> Result<(), OperatorError> {
        let Some((&last, _)) = slices.last_key_value() else { return Ok(()) };
        self.cold_until = Some(self.cold_until.map_or(last, |c| c.max(last)));
        let entries = slices.into_iter().flat_map(|(s, t)| t.into_iter().map(move |e| (s, e)));
        self.flush(entries, out)
    }

    /// Merges hot accumulators into their slices in state, registers the timer of each
    /// slice's first window still to fire, and emits the windows that already fired and changed.
    fn flush(
        &mut self,
        entries: impl Iterator<Item = (i64, HotEntry)>,
        out: &mut dyn Output,
    ) -> Result<(), OperatorError> {
        let (size, slide, _) = self.fixed();
        let entries: Vec<(i64, HotEntry)> = entries.collect();
        self.hot_entries -= entries.len();
        // Windows that already fired and that this batch changed: (key, start, key group).
        let mut updated: BTreeSet<(&[u8], i64, u16)> = BTreeSet::new();
        for (s, p) in &entries {
            let (key, s) = (&*p.key, *s);
            let k = KeyCtx { key_group: p.key_group, key };
            let acc = match self.slices.get(&*self.state, k, &s)? {
                Some(mut stored) => {
                    stored.merge(&p.accs);
                    stored
                }
                None => p.accs.clone(),
            };
            self.slices.put(&mut *self.state, k, &s, &acc)?;
            let Some((mut start, last_end)) = self.last_window(s) else { continue };
            // The windows containing this slice, from the last back (at most size / slide).
            let mut first_pending = None;
            while start > s.saturating_sub(size) {
                let end = start.saturating_add(size);
                if !self.is_due(end) {
                    first_pending = Some((start, end));
                } else if !self.is_late(end) {
                    updated.insert((key, start, p.key_group));
                }
                match start.checked_sub(slide) {
                    Some(x) => start = x,
                    None => break,
                }
            }
            // Registering a timer twice keeps one: one per (key, slice end) with windows to fire.
            if let Some((start, end)) = first_pending {
                let ns = TimerNs { window: WindowNs { start, end }, action: TimerAction::Fire };
                self.timers.register(&mut *self.state, k, end.saturating_sub(1), &ns)?;
            } else if self.lateness > 0 {
                // Every window of the slice has fired: it goes when the last one is past lateness.
                let ns = TimerNs {
                    window: WindowNs { start: last_end.saturating_sub(size), end: last_end },
                    action: TimerAction::Cleanup,
                };
                let at = self.cleanup_time(last_end);
                self.timers.register(&mut *self.state, k, at, &ns)?;
            }
        }
        let mut results = Vec::new();
        for (key, start, kg) in updated {
            let end = start.saturating_add(size);
            let k = KeyCtx { key_group: kg, key };
            let slices = self.load_slices(k)?;
            if let Some(acc) = merge_slices(&slices, start, end) {
                results.push((key.to_vec(), start, end, acc));
            }
        }
        self.emit(results, out)
    }

    /// Fires a due timer of tumbling or hopping windows, then every later window of the
    /// same key that has data and is due too; registers the timer of the next one. The key's
    /// slices are read once, in one scan.
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
        let mut slices = self.load_slices(k)?;
        if t.namespace.action == TimerAction::Cleanup {
            return self.drop_slices(k, &mut slices, keep_from(end));
        }
        loop {
            if !fired.insert((t.key_group, key.clone(), end)) {
                return Ok(());
            }
            let start = end.saturating_sub(size);
            if let Some(acc) = merge_slices(&slices, start, end) {
                results.push((key.clone(), start, end, acc));
            }
            if self.is_late(end) {
                self.drop_slices(k, &mut slices, keep_from(end))?;
            } else {
                let ns = TimerNs { window: WindowNs { start, end }, action: TimerAction::Cleanup };
                let at = self.cleanup_time(end);
                self.timers.register(&mut *self.state, k, at, &ns)?;
            }
            let from = keep_from(end);
            let Some(&(s, _)) = slices.iter().find(|(s, _)| *s >= from) else { return Ok(()) };
            // The first window after this one that holds `s`.
            let next = first_window_end(size, slide, s).max(end.saturating_add(slide));
            if next <= end {
                return Ok(());
            }
            if !self.is_due(next) {
                let ns = TimerNs {
                    window: WindowNs { start: next.saturating_sub(size), end: next },
                    action: TimerAction::Fire,
                };
                return Ok(self.timers.register(&mut *self.state, k, next.saturating_sub(1), &ns)?);
            }
            end = next;
        }
    }

    // ---- session windows ----

    /// Every session of `k`, by start.
    fn load_sessions(&self, k: KeyCtx<'_>) -> Result<Vec<(WindowNs, Accs)>, OperatorError> {
        Ok(self.sessions.get(&*self.state, k, &())?.map(|l| l.0).unwrap_or_default())
    }

    /// Stores the sessions of `k` (none: removes them).
    fn store_sessions(&mut self, k: KeyCtx<'_>, sessions: Vec<(WindowNs, Accs)>) -> Result<(), OperatorError> {
        if sessions.is_empty() {
            return Ok(self.sessions.clear(&mut *self.state, k, &())?);
        }
        Ok(self.sessions.put(&mut *self.state, k, &(), &SessionList(sessions))?)
    }

    /// Deletes the timers of a session that merged into another.
    fn unregister_session(&mut self, k: KeyCtx<'_>, w: WindowNs) -> Result<(), OperatorError> {
        let fire = TimerNs { window: w, action: TimerAction::Fire };
        self.timers.delete(&mut *self.state, k, w.end.saturating_sub(1), &fire)?;
        if self.lateness > 0 {
            let cleanup = TimerNs { window: w, action: TimerAction::Cleanup };
            let at = self.cleanup_time(w.end);
            self.timers.delete(&mut *self.state, k, at, &cleanup)?;
        }
        Ok(())
    }

    fn register_session(&mut self, k: KeyCtx<'_>, w: WindowNs) -> Result<(), OperatorError> {
        if !self.is_due(w.end) {
            self.timers.register(
                &mut *self.state,
                k,
                w.end.saturating_sub(1),
                &TimerNs { window: w, action: TimerAction::Fire },
            )?;
        }
        if self.lateness > 0 {
            let ns = TimerNs { window: w, action: TimerAction::Cleanup };
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
            // Which sessions this batch changed (created, extended, merged or added to).
            let mut changed: Vec<bool> = vec![false; sessions.len()];
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
                    changed.remove(i);
                    w.start = w.start.min(old.start);
                    w.end = w.end.max(old.end);
                    acc.merge(&old_acc);
                }
                for (i, (arg, bytes)) in args.iter().enumerate() {
                    add(&mut acc.0[i], arg, bytes.as_ref(), r as usize);
                }
                if self.is_due(w.end) {
                    touched.retain(|x| *x != w);
                    touched.push(w);
                }
                sessions.push((w, acc));
                changed.push(true);
            }
            // Sessions merged into others go, with their timers; state and timers are written
            // once per batch, for what changed.
            for old in &before {
                if !sessions.iter().any(|s| s.0 == *old) {
                    self.unregister_session(k, *old)?;
                }
            }
            for ((w, _), _) in sessions.iter().zip(&changed).filter(|(_, c)| **c) {
                if !before.contains(w) {
                    self.register_session(k, *w)?;
                }
            }
            // A session updated twice in one batch is reported once, with its latest value.
            for w in touched {
                if let Some((_, acc)) = sessions.iter().find(|s| s.0 == w) {
                    results.push((key.to_vec(), w.start, w.end, acc.clone()));
                }
            }
            if changed.contains(&true) || sessions.len() != before.len() {
                sessions.sort_by_key(|s| s.0);
                self.store_sessions(k, sessions)?;
            }
        }
        self.emit(results, out)?;
        Ok(late)
    }

    fn fire_session(&mut self, t: DueTimer<TimerNs>, results: &mut Vec<Result4>) -> Result<(), OperatorError> {
        let k = KeyCtx { key_group: t.key_group, key: &t.key };
        let w = t.namespace.window;
        let mut sessions = self.load_sessions(k)?;
        // A timer of a session that has since merged into another finds nothing.
        let Some(i) = sessions.iter().position(|s| s.0 == w) else { return Ok(()) };
        if t.namespace.action == TimerAction::Fire {
            results.push((t.key.clone(), w.start, w.end, sessions[i].1.clone()));
        }
        if t.namespace.action == TimerAction::Cleanup || self.lateness == 0 {
            sessions.remove(i);
            self.store_sessions(k, sessions)?;
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
        let prev = self.watermark;
        if let Shape::Fixed { size, slide, .. } = self.shape {
            if self.lateness > 0 {
                // Windows stay updatable after they fire: every slice goes to state and windows
                // fire by their timers.
                let all = std::mem::take(&mut self.hot);
                self.move_to_state(all, out)?;
            } else {
                // Windows due now that may hold rows in state (they start at or before the
                // latest slice moved there) fire from state: their hot slices go there first,
                // under the old watermark, and register their timers.
                let first_due = first_window_end(size, slide, prev.saturating_add(1));
                let cold = self.cold_until.is_some_and(|c| c >= first_due.saturating_sub(size));
                if first_due.saturating_sub(1) <= watermark && cold {
                    let last_due_end = last_window_end_at(size, slide, watermark);
                    let keep = self.hot.split_off(&last_due_end);
                    let due = std::mem::replace(&mut self.hot, keep);
                    self.move_to_state(due, out)?;
                }
            }
        }
        self.watermark = watermark;
        // Due timers in bounded steps, each emitted before the next is taken, so a watermark
        // that closes millions of windows (the end of input) holds only a step in memory.
        let mut fired = HashSet::new();
        loop {
            let due = self.timers.take_due(&mut *self.state, self.key_groups.clone(), watermark, FIRE_STEP)?;
            if due.is_empty() {
                return match self.shape {
                    Shape::Fixed { .. } => self.fire_hot(prev, watermark, out),
                    Shape::Session { .. } => Ok(()),
                };
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

    fn on_end(&mut self, out: &mut dyn Output) -> Result<(), OperatorError> {
        // A stopped job's open windows stay open, but every row it took is in state.
        let all = std::mem::take(&mut self.hot);
        self.move_to_state(all, out)
    }

    /// The snapshot is the backend's entries in this subtask's key groups (or, for RocksDB,
    /// its files, uploaded incrementally), then the hot tier's entries as they are (windows go
    /// on firing from memory); the watermark and the latest slice in the backend go inline.
    fn snapshot(&mut self, checkpoint: u64, _: &mut dyn Output) -> Result<OperatorSnapshot, OperatorError> {
        let native = self.state.native_snapshot(checkpoint)?;
        let backend = if native.is_some() { Vec::new() } else { self.state.snapshot(self.key_groups.clone())? };
        let mut blob = Vec::with_capacity(backend.len() + 8 + self.hot_entries * 48);
        blob.extend_from_slice(&(backend.len() as u64).to_be_bytes());
        blob.extend_from_slice(&backend);
        let mut acc = Vec::new();
        for (slice, table) in &self.hot {
            for e in table {
                acc.clear();
                e.accs.encode(&mut acc);
                blob.extend_from_slice(&slice.to_be_bytes());
                blob.extend_from_slice(&e.hash.to_be_bytes());
                blob.extend_from_slice(&e.key_group.to_be_bytes());
                blob.extend_from_slice(&(e.key.len() as u32).to_be_bytes());
                blob.extend_from_slice(&e.key);
                blob.extend_from_slice(&(acc.len() as u32).to_be_bytes());
                blob.extend_from_slice(&acc);
            }
        }
        Ok(OperatorSnapshot {
            meta: serde_json::json!({ "watermark": self.watermark, "cold_until": self.cold_until }),
            blob: Some(blob),
            native,
        })
    }
}

/// Hot-tier entries with their slice start.
type SliceEntries = Vec<(i64, HotEntry)>;

/// A window snapshot's parts: the backend snapshot, and the hot tier's entries by slice.
fn split_snapshot(blob: &[u8]) -> Result<(&[u8], SliceEntries), OperatorError> {
    let bad = || OperatorError::new("a window snapshot is truncated or corrupt");
    let take = |b: &mut &[u8], n: usize| -> Result<Vec<u8>, OperatorError> {
        if b.len() < n {
            return Err(bad());
        }
        let (h, t) = b.split_at(n);
        *b = t;
        Ok(h.to_vec())
    };
    let mut rest = blob;
    let n = u64::from_be_bytes(take(&mut rest, 8)?.try_into().map_err(|_| bad())?) as usize;
    if rest.len() < n {
        return Err(bad());
    }
    let (backend, mut rest) = rest.split_at(n);
    let mut entries = Vec::new();
    while !rest.is_empty() {
        let slice = i64::from_be_bytes(take(&mut rest, 8)?.try_into().map_err(|_| bad())?);
        let hash = u64::from_be_bytes(take(&mut rest, 8)?.try_into().map_err(|_| bad())?);
        let key_group = u16::from_be_bytes(take(&mut rest, 2)?.try_into().map_err(|_| bad())?);
        let len = u32::from_be_bytes(take(&mut rest, 4)?.try_into().map_err(|_| bad())?) as usize;
        let key = take(&mut rest, len)?.into_boxed_slice();
        let len = u32::from_be_bytes(take(&mut rest, 4)?.try_into().map_err(|_| bad())?) as usize;
        let accs = Accs::decode(&take(&mut rest, len)?)?;
        entries.push((slice, HotEntry { hash, key_group, key, accs }));
    }
    Ok((backend, entries))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::loader::Syntax;
    use crate::spec::{Options, validate_text};

    struct Collect(Vec<RecordBatch>);

    impl Output for Collect {
        fn emit(&mut self, batch: RecordBatch) -> Result<(), OperatorError> {
            self.0.push(batch);
            Ok(())
        }
        fn emit_side(&mut self, _: usize, _: RecordBatch) -> Result<(), OperatorError> {
            Ok(())
        }
    }

    /// Every stored entry of table `t`.
    fn entries(op: &WindowOperator, t: crate::state::backend::TableId) -> usize {
        op.state.range(t, &[], None).unwrap().count()
    }

    #[test]
    fn merged_sessions_take_their_timers_with_them() {
        let spec = "version: 1\nname: s\nsources:\n  e: { connector: datagen, count: 1, schema: { k: bigint, ts: timestamp }, event_time: { column: ts } }\ntransforms:\n  w: { type: window_aggregate, input: e, key: [k], window: { type: session, gap: 10s }, aggregates: { n: \"count(*)\" } }\nsinks:\n  out: { connector: blackhole, input: w }\n";
        let report = validate_text(std::path::Path::new("s.yaml"), spec, Syntax::Yaml, &Options::default());
        let v = report.validated.expect("valid");
        let crate::operators::TransformConfig::WindowAggregate(w) = &v.pipeline.transforms["w"] else { panic!() };
        let ctx = BuildContext::local("w", v.pipeline.key_groups());
        let mut op = WindowOperator::new(w, &ctx, "e", &v.streams["e"].schema, &v.streams["w"].schema).unwrap();
        let schema = v.streams["e"].schema.schema.clone();
        let batch = |rows: &[(i64, i64)]| {
            let k = arrow::array::Int64Array::from_iter_values(rows.iter().map(|r| r.0));
            let ts = TimestampMillisecondArray::from_iter_values(rows.iter().map(|r| r.1 * 1000))
                .with_timezone_opt(Some(Arc::from("UTC")));
            let ts = cast(&ts, schema.field(1).data_type()).unwrap();
            RecordBatch::try_new(schema.clone(), vec![Arc::new(k), ts]).unwrap()
        };
        let mut out = Collect(Vec::new());
        // Key 1: sessions [0 s, 10 s) and [15 s, 25 s); key 2: [0 s, 10 s).
        op.process(0, batch(&[(1, 0), (1, 15), (2, 0)]), &mut out).unwrap();
        assert_eq!(entries(&op, TIMERS), 3, "one timer per session");
        // A row at 8 s bridges key 1's sessions (and one at 5 s extends key 2's): each key has
        // one session left, with one timer.
        op.process(0, batch(&[(1, 8), (2, 5)]), &mut out).unwrap();
        assert_eq!(entries(&op, TIMERS), 2, "merged and extended sessions left no timers behind");
        assert_eq!(entries(&op, ACC), 2, "one stored value per key");
        op.on_watermark(i64::MAX, &mut out).unwrap();
        let counts: Vec<i64> = out
            .0
            .iter()
            .flat_map(|b| b.column(3).as_any().downcast_ref::<Int64Array>().unwrap().values().to_vec())
            .collect();
        assert_eq!(counts, vec![2, 3], "by end: key 2 [0 s, 15 s), then key 1 [0 s, 25 s)");
        assert_eq!((entries(&op, TIMERS), entries(&op, ACC)), (0, 0), "fired sessions leave nothing");
    }
}
