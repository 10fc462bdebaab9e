//! Turning what a file holds into the declared column types without changing any value:
//! text or a differently typed Parquet column is converted row by row, and a row whose
//! value does not convert exactly (a fraction into an integer column, an overflow, NaN, a
//! timestamp outside the calendar) is reported, never stored as null or truncated.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, ArrowPrimitiveType, AsArray, BooleanArray, Date32Array, Float64Array, Int64Array, PrimitiveArray,
    StringArray, TimestampMillisecondArray,
};
use arrow::compute::kernels::cast_utils::{Parser, string_to_datetime};
use arrow::compute::kernels::cmp::distinct;
use arrow::compute::{cast, filter, max, min};
use arrow::datatypes::{
    DataType, Date32Type, Date64Type, Field, Int32Type, Int64Type, Schema, SchemaRef, TimeUnit,
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType,
};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;

use crate::plan::type_name;

/// Problems found in rows of a batch: row index and what is wrong.
pub type RowErrors = Vec<(usize, String)>;

/// The schema a CSV or JSON-lines decoder reads with: every declared column as nullable text,
/// converted afterwards by [`conform`] so a bad value is one bad row, not a failed chunk.
pub fn text_schema(schema: &Schema) -> SchemaRef {
    Arc::new(Schema::new(
        schema.fields().iter().map(|f| Field::new(f.name(), DataType::Utf8, true)).collect::<Vec<_>>(),
    ))
}

/// `text` as an integer if it is exactly one: `7`, `-7`, `7.0`, `7e2`; not `7.5` or `-0.9`.
pub fn exact_integer(text: &str) -> Option<i128> {
    let s = text.as_bytes();
    // Fast path, the common case: plain digits with an optional sign, short enough not to overflow.
    let digits = s.strip_prefix(b"-").unwrap_or(s);
    if !digits.is_empty() && digits.len() <= 18 {
        let mut v = 0u64;
        let plain = digits.iter().all(|d| {
            let x = d.wrapping_sub(b'0');
            v = v * 10 + u64::from(x);
            x <= 9
        });
        if plain {
            let v = i128::from(v);
            return Some(if digits.len() < s.len() { -v } else { v });
        }
    }
    // Nothing else than digits, a sign, a point and an exponent makes a number (a timestamp
    // such as `2026-01-01T00:00:00Z` is refused here, at its `T`).
    if !s.iter().all(|c| c.is_ascii_digit() || matches!(c, b'-' | b'+' | b'.' | b'e' | b'E')) {
        return None;
    }
    let (neg, s) = match s.first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let (mantissa, exp) = match s.iter().position(|c| matches!(c, b'e' | b'E')) {
        Some(p) => (&s[..p], std::str::from_utf8(&s[p + 1..]).ok()?.parse::<i64>().ok()?),
        None => (s, 0),
    };
    let (int, frac) = match mantissa.iter().position(|c| *c == b'.') {
        Some(p) => (&mantissa[..p], &mantissa[p + 1..]),
        None => (mantissa, &[][..]),
    };
    if (int.is_empty() && frac.is_empty()) || !int.iter().chain(frac).all(u8::is_ascii_digit) {
        return None;
    }
    // The digits of int and frac in turn, without copying them.
    let digit = |i: usize| if i < int.len() { int[i] } else { frac[i - int.len()] };
    let mut end = int.len() + frac.len();
    let mut e = exp.saturating_sub(frac.len() as i64);
    // Trailing zeros cancel a negative exponent; any other digit left after the point is a fraction.
    while e < 0 && end > 0 && digit(end - 1) == b'0' {
        end -= 1;
        e += 1;
    }
    let start = (0..end).find(|&i| digit(i) != b'0').unwrap_or(end);
    if start == end {
        return Some(0);
    }
    // At most 20 digits, so the loop below is short and cannot overflow.
    if e < 0 || ((end - start) as i64).checked_add(e).is_none_or(|n| n > 20) {
        return None;
    }
    let v = (start..end).fold(0i128, |v, i| v * 10 + i128::from(digit(i) - b'0')) * 10i128.pow(e as u32);
    Some(if neg { -v } else { v })
}

/// Whether `ms` since the epoch is a calendar instant (one that can be printed).
fn valid_millis(ms: i64) -> bool {
    chrono::DateTime::from_timestamp_millis(ms).is_some()
}

fn valid_days(days: i32) -> bool {
    chrono::NaiveDate::from_ymd_opt(1970, 1, 1)
        .and_then(|d| d.checked_add_signed(chrono::TimeDelta::try_days(i64::from(days))?))
        .is_some()
}

fn not_a(field: &Field, value: &str) -> String {
    let value = if value.len() > 60 { format!("{}…", &value[..value.floor_char_boundary(60)]) } else { value.into() };
    format!("column `{}`: `{value}` is not a {}", field.name(), type_name(field.data_type()))
}

fn out_of_range(field: &Field, value: impl std::fmt::Display) -> String {
    format!("column `{}`: {value} is outside the range of {}", field.name(), type_name(field.data_type()))
}

/// Each value of `col` parsed by `parse`; a value it refuses is a row error.
fn parse_each<T: ArrowPrimitiveType>(
    col: &StringArray,
    field: &Field,
    errors: &mut RowErrors,
    parse: impl Fn(&str) -> Option<T::Native>,
) -> PrimitiveArray<T> {
    // Values straight into a buffer; a null mask only for nulls and refused values.
    let mut refused = Vec::new();
    let values: Vec<T::Native> = col
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let Some(s) = s else {
                refused.push(i);
                return T::Native::default();
            };
            parse(s).unwrap_or_else(|| {
                errors.push((i, not_a(field, s)));
                refused.push(i);
                T::Native::default()
            })
        })
        .collect();
    let nulls = (!refused.is_empty()).then(|| {
        let mut valid = vec![true; values.len()];
        for i in refused {
            valid[i] = false;
        }
        arrow::buffer::NullBuffer::from(valid)
    });
    PrimitiveArray::new(values.into(), nulls)
}

/// Text values converted to `field`'s type; rows that do not convert go to `errors`.
fn from_text(col: &StringArray, field: &Field, errors: &mut RowErrors) -> Result<ArrayRef, ArrowError> {
    Ok(match field.data_type() {
        DataType::Utf8 => Arc::new(col.clone()),
        DataType::Int32 => Arc::new(parse_each::<Int32Type>(col, field, errors, |s| {
            exact_integer(s).and_then(|v| i32::try_from(v).ok())
        })),
        DataType::Int64 => Arc::new(parse_each::<Int64Type>(col, field, errors, |s| {
            exact_integer(s).and_then(|v| i64::try_from(v).ok())
        })),
        DataType::Timestamp(TimeUnit::Millisecond, tz) => {
            let values: TimestampMillisecondArray =
                parse_each::<TimestampMillisecondType>(col, field, errors, |s| match exact_integer(s) {
                    Some(v) => i64::try_from(v).ok().filter(|v| valid_millis(*v)),
                    None => string_to_datetime(&chrono::Utc, s).ok().map(|d| d.timestamp_millis()),
                });
            Arc::new(values.with_timezone_opt(tz.clone()))
        }
        DataType::Date32 => Arc::new(parse_each::<Date32Type>(col, field, errors, |s| match exact_integer(s) {
            Some(v) => i32::try_from(v).ok().filter(|v| valid_days(*v)),
            None => Date32Type::parse(s),
        })),
        ty => {
            let out = cast(col, ty)?;
            for i in 0..col.len() {
                if col.is_valid(i) && out.is_null(i) {
                    errors.push((i, not_a(field, col.value(i))));
                }
            }
            out
        }
    })
}

/// A float column into an integer type: only finite, whole values in range.
fn from_float(col: &ArrayRef, field: &Field, errors: &mut RowErrors) -> Result<ArrayRef, ArrowError> {
    let f = cast(col, &DataType::Float64)?;
    let f = f.as_any().downcast_ref::<Float64Array>().expect("cast to f64");
    let (lo, hi) = match field.data_type() {
        DataType::Int32 => (f64::from(i32::MIN), f64::from(i32::MAX)),
        _ => (i64::MIN as f64, 9_223_372_036_854_774_784.0),
    };
    let values: Int64Array = (0..f.len())
        .map(|i| {
            if f.is_null(i) {
                return None;
            }
            let v = f.value(i);
            if v.is_finite() && v.fract() == 0.0 && v >= lo && v <= hi {
                Some(v as i64)
            } else {
                errors.push((i, not_a(field, &v.to_string())));
                None
            }
        })
        .collect();
    cast(&values, field.data_type())
}

/// Rows of a typed timestamp or date column outside the calendar.
fn check_range(col: &ArrayRef, field: &Field, errors: &mut RowErrors) {
    if let Some(ts) = col.as_any().downcast_ref::<TimestampMillisecondArray>() {
        for (i, v) in ts.iter().enumerate() {
            if let Some(v) = v.filter(|v| !valid_millis(*v)) {
                errors.push((i, out_of_range(field, format!("{v} ms"))));
            }
        }
    } else if let Some(d) = col.as_any().downcast_ref::<Date32Array>() {
        for (i, v) in d.iter().enumerate() {
            if let Some(v) = v.filter(|v| !valid_days(*v)) {
                errors.push((i, out_of_range(field, format!("day {v}"))));
            }
        }
    }
}

/// Whether a cast between these types is checked by casting back: numbers and booleans,
/// where a cast may round (decimal to integer, double to float, a large bigint to double).
fn round_trips(t: &DataType) -> bool {
    t.is_numeric() || *t == DataType::Boolean
}

/// Whether `t` holds text (in any layout), converted as CSV and JSON text is.
fn is_text(t: &DataType) -> bool {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
        DataType::Dictionary(_, values) => is_text(values),
        _ => false,
    }
}

/// One column of a batch in `field`'s type; rows that do not convert go to `errors`.
fn convert(col: &ArrayRef, field: &Field, errors: &mut RowErrors) -> Result<ArrayRef, ArrowError> {
    let target = field.data_type();
    let out = if let Some(text) = col.as_any().downcast_ref::<StringArray>() {
        return from_text(text, field, errors);
    } else if is_text(col.data_type()) {
        let text = cast(col, &DataType::Utf8)?;
        return from_text(text.as_string::<i32>(), field, errors);
    } else if col.data_type() == target {
        col.clone()
    } else if col.data_type().is_floating() && target.is_integer() {
        from_float(col, field, errors)?
    } else {
        let out = cast(col, target)?;
        // A value that does not come back unchanged was rounded, truncated or overflowed.
        let changed = match round_trips(col.data_type()) && round_trips(target) {
            true => Some(distinct(&cast(&out, col.data_type())?, col)?),
            false => None,
        };
        let shown = arrow::util::display::ArrayFormatter::try_new(col.as_ref(), &Default::default())?;
        for i in 0..col.len() {
            if col.is_valid(i) && (out.is_null(i) || changed.as_ref().is_some_and(|c| c.value(i))) {
                errors.push((i, not_a(field, &shown.value(i).to_string())));
            }
        }
        out
    };
    check_range(&out, field, errors);
    Ok(out)
}

/// `batch` with its columns (found by name) converted to `schema`, and the rows that could
/// not be: a value that does not convert exactly, a null event time (`event_time`, a column
/// index) or a null in a column declared `nullable: false`. The returned batch has only the
/// good rows; the errors are sorted by row, one per row.
pub fn conform(
    batch: &RecordBatch,
    schema: &SchemaRef,
    event_time: Option<usize>,
) -> Result<(RecordBatch, RowErrors), ConformError> {
    let mut errors = RowErrors::new();
    let mut columns = Vec::with_capacity(schema.fields().len());
    for (c, field) in schema.fields().iter().enumerate() {
        let col = batch.column_by_name(field.name()).ok_or_else(|| ConformError::Missing(field.name().clone()))?;
        let out = convert(col, field, &mut errors)?;
        if Some(c) == event_time || !field.is_nullable() {
            for i in (0..col.len()).filter(|&i| col.is_null(i)) {
                let what = if Some(c) == event_time { "event-time column" } else { "column" };
                errors.push((i, format!("{what} `{}` is empty", field.name())));
            }
        }
        columns.push(out);
    }
    errors.sort_by_key(|e| e.0);
    errors.dedup_by_key(|e| e.0);
    let columns = if errors.is_empty() {
        columns
    } else {
        let mut keep = vec![true; batch.num_rows()];
        for (i, _) in &errors {
            keep[*i] = false;
        }
        let keep = BooleanArray::from(keep);
        columns.iter().map(|c| filter(c, &keep)).collect::<Result<Vec<_>, _>>()?
    };
    let options = arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(batch.num_rows() - errors.len()));
    Ok((RecordBatch::try_new_with_options(schema.clone(), columns, &options)?, errors))
}

/// Why [`conform`] could not convert a batch at all.
#[derive(Debug)]
pub enum ConformError {
    /// A declared column is not in the batch.
    Missing(String),
    /// Arrow failed.
    Arrow(ArrowError),
}

impl From<ArrowError> for ConformError {
    fn from(e: ArrowError) -> Self {
        ConformError::Arrow(e)
    }
}

/// The smallest and largest value of a primitive column, as a column of the same type.
fn extremes<T: ArrowPrimitiveType>(col: &dyn Array) -> ArrayRef {
    let a = col.as_primitive::<T>();
    let values = [min(a), max(a)].into_iter().flatten();
    Arc::new(PrimitiveArray::<T>::from_iter_values(values).with_data_type(col.data_type().clone()))
}

/// Fails on the first value of `col` that cannot be printed, naming its row.
fn print_each(col: &dyn Array, name: &str) -> Result<(), ArrowError> {
    let options = arrow::util::display::FormatOptions::new().with_display_error(false);
    let f = arrow::util::display::ArrayFormatter::try_new(col, &options)?;
    let mut s = String::new();
    for i in 0..col.len() {
        s.clear();
        f.value(i).write(&mut s).map_err(|e| {
            ArrowError::ComputeError(format!("column `{name}` row {}: cannot print the value: {e}", i + 1))
        })?;
    }
    Ok(())
}

/// Fails if a value of `batch` cannot be printed (a timestamp outside the calendar, say), so
/// writers that print values never write an error message in place of one. Timestamps and
/// dates print for a contiguous range of values, so only a column's smallest and largest
/// values are tried (the column is searched only if one fails); times and nested values are
/// tried one by one.
pub fn check_printable(batch: &RecordBatch) -> Result<(), ArrowError> {
    for (col, field) in batch.columns().iter().zip(batch.schema().fields()) {
        let extremes = match col.data_type() {
            DataType::Timestamp(TimeUnit::Second, _) => extremes::<TimestampSecondType>(col),
            DataType::Timestamp(TimeUnit::Millisecond, _) => extremes::<TimestampMillisecondType>(col),
            DataType::Timestamp(TimeUnit::Microsecond, _) => extremes::<TimestampMicrosecondType>(col),
            DataType::Timestamp(TimeUnit::Nanosecond, _) => extremes::<TimestampNanosecondType>(col),
            DataType::Date32 => extremes::<Date32Type>(col),
            DataType::Date64 => extremes::<Date64Type>(col),
            t if t.is_nested() || matches!(t, DataType::Time32(_) | DataType::Time64(_)) => {
                print_each(col.as_ref(), field.name())?;
                continue;
            }
            _ => continue,
        };
        if print_each(extremes.as_ref(), field.name()).is_err() {
            print_each(col.as_ref(), field.name())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unprintable_values_are_found_by_row() {
        use arrow::array::{Date64Array, Time32SecondArray, TimestampNanosecondArray, TimestampSecondArray};
        let check = |col: ArrayRef| {
            let batch = RecordBatch::try_from_iter([("c", col)]).unwrap();
            check_printable(&batch).map_err(|e| e.to_string())
        };
        let bad: [(ArrayRef, usize); 6] = [
            (Arc::new(TimestampSecondArray::from(vec![Some(0), None, Some(i64::MAX), Some(1)])), 3),
            (Arc::new(TimestampMillisecondArray::from(vec![1, i64::MIN]).with_timezone("+01:00")), 2),
            (Arc::new(Date32Array::from(vec![i32::MAX, 0])), 1),
            (Arc::new(Date64Array::from(vec![0, 1, i64::MAX])), 3),
            (Arc::new(Time32SecondArray::from(vec![0, 86_400])), 2),
            (Arc::new(TimestampMillisecondArray::from(vec![0, 8_210_266_876_799_999, 8_210_266_876_800_000])), 3),
        ];
        for (col, row) in bad {
            let err = check(col.clone()).expect_err(&format!("{col:?}"));
            assert!(err.contains(&format!("column `c` row {row}: cannot print")), "{err}");
        }
        let good: [ArrayRef; 3] = [
            Arc::new(TimestampNanosecondArray::from(vec![i64::MIN, i64::MAX])),
            Arc::new(TimestampMillisecondArray::from(vec![
                Some(-8_334_601_228_800_000),
                None,
                Some(8_210_266_876_799_999),
            ])),
            Arc::new(Date32Array::from(vec![None, Some(0)])),
        ];
        for col in good {
            assert_eq!(check(col.clone()), Ok(()), "{col:?}");
        }
    }

    #[test]
    fn exact_integers() {
        for (text, want) in [
            ("7", Some(7)),
            ("-7", Some(-7)),
            ("2.0", Some(2)),
            ("1e3", Some(1000)),
            ("1.5e1", Some(15)),
            ("-0.0", Some(0)),
            ("1.5", None),
            ("-0.9", None),
            ("1e-1", None),
            ("", None),
            ("abc", None),
            (" 7", None),
            ("1e999999", None),
            ("9223372036854775807", Some(i64::MAX as i128)),
            ("1e9223372036854775807", None),
            ("10e9223372036854775806", None),
            ("-1e9223372036854775807", None),
            ("0e9223372036854775807", Some(0)),
            ("1e-9223372036854775808", None),
            ("0.000e-9223372036854775808", Some(0)),
            ("100e-2", Some(1)),
            ("1.0e19", Some(10_000_000_000_000_000_000)),
            ("1.0e20", None),
            ("1e21", None),
            ("00012.50e1", Some(125)),
        ] {
            assert_eq!(exact_integer(text), want, "{text}");
        }
    }
}
