//! The partition hash: which key group a key belongs to. A contract, not an implementation
//! detail — key groups are written into checkpoints, so this hash never changes by accident.
//!
//! # Version 1
//!
//! A row's key columns are encoded one after another in a canonical form, and the bytes are
//! hashed with XXH64 (seed 0); the key group is `hash % max_parallelism`. Equal values of
//! compatible types encode alike, so they land in the same key group:
//!
//! | Arrow types | encoding |
//! |---|---|
//! | null of any type | `0x00` |
//! | Boolean | `0x01`, then `0x00` or `0x01` |
//! | Int8–Int64, UInt8–UInt64 | `0x02` + the value as i64, big-endian; a UInt64 above `i64::MAX`: `0x03` + u64, big-endian |
//! | Float16, Float32, Float64 | `0x04` + the value widened to f64, its bits big-endian; `-0.0` as `0.0`, every NaN as `0x7ff8000000000000` |
//! | Utf8, LargeUtf8, Utf8View | `0x05` + byte length as u64, big-endian, + the UTF-8 bytes |
//! | Binary, LargeBinary, BinaryView, FixedSizeBinary | `0x06` + byte length as u64, big-endian, + the bytes |
//! | Timestamp (any unit, any time zone) | `0x07` + nanoseconds since the epoch as i128, big-endian |
//! | Date32, Date64 | `0x08` + milliseconds since the epoch as i64, big-endian |
//! | Decimal32–Decimal128 | `0x09` + the unscaled value as i128, big-endian, + the scale as i16, big-endian, after trailing zeros are stripped (so 5.00 and 5.0 agree) |
//! | Dictionary | as its values |
//!
//! Other key types are refused when the job is built. The golden vectors in the tests pin
//! version 1; a change to any of this is a new version, and checkpoints record the version.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::compute::cast;
use arrow::datatypes::{
    DataType, Date32Type, Date64Type, Decimal32Type, Decimal64Type, Decimal128Type, Float16Type, Float32Type,
    Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, TimeUnit, TimestampMicrosecondType,
    TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType, UInt8Type, UInt16Type, UInt32Type,
    UInt64Type,
};
use arrow::error::ArrowError;
use twox_hash::XxHash64;

/// The version of the key encoding and hash; checkpoints record it.
pub const KEY_HASH_VERSION: u32 = 1;

/// Whether `t` can be a key column: it has a canonical encoding.
pub fn is_hashable(t: &DataType) -> bool {
    match t {
        DataType::Null
        | DataType::Boolean
        | DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64
        | DataType::Float16
        | DataType::Float32
        | DataType::Float64
        | DataType::Utf8
        | DataType::LargeUtf8
        | DataType::Utf8View
        | DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_)
        | DataType::Timestamp(_, _)
        | DataType::Date32
        | DataType::Date64
        | DataType::Decimal32(_, _)
        | DataType::Decimal64(_, _)
        | DataType::Decimal128(_, _) => true,
        DataType::Dictionary(_, v) => is_hashable(v),
        _ => false,
    }
}

/// Hashes the key columns of every row into `out` (one hash per row).
pub fn hash_rows(columns: &[ArrayRef], out: &mut Vec<u64>) -> Result<(), ArrowError> {
    let rows = columns.first().map_or(0, |c| c.len());
    let columns: Vec<ArrayRef> = columns
        .iter()
        .map(|c| match c.data_type() {
            DataType::Dictionary(_, v) => cast(c, v),
            _ => Ok(Arc::clone(c)),
        })
        .collect::<Result<_, _>>()?;
    for c in &columns {
        if !is_hashable(c.data_type()) {
            return Err(ArrowError::InvalidArgumentError(format!(
                "a key column of type {} cannot be hashed",
                c.data_type()
            )));
        }
        if c.len() != rows {
            return Err(ArrowError::InvalidArgumentError("key columns differ in length".into()));
        }
    }
    out.clear();
    out.reserve(rows);
    let encoders: Vec<Encoder<'_>> = columns.iter().map(|c| encoder(c.as_ref())).collect();
    let mut buf = Vec::with_capacity(64);
    for row in 0..rows {
        buf.clear();
        for e in &encoders {
            e(row, &mut buf);
        }
        out.push(XxHash64::oneshot(0, &buf));
    }
    Ok(())
}

/// The key group of a key hash.
pub fn key_group_of(hash: u64, max_parallelism: u32) -> u32 {
    (hash % u64::from(max_parallelism.max(1))) as u32
}

fn int(buf: &mut Vec<u8>, v: i64) {
    buf.push(0x02);
    buf.extend_from_slice(&v.to_be_bytes());
}

fn uint(buf: &mut Vec<u8>, v: u64) {
    match i64::try_from(v) {
        Ok(v) => int(buf, v),
        Err(_) => {
            buf.push(0x03);
            buf.extend_from_slice(&v.to_be_bytes());
        }
    }
}

fn float(buf: &mut Vec<u8>, v: f64) {
    let bits = if v.is_nan() {
        0x7ff8_0000_0000_0000
    } else if v == 0.0 {
        0
    } else {
        v.to_bits()
    };
    buf.push(0x04);
    buf.extend_from_slice(&bits.to_be_bytes());
}

fn bytes(buf: &mut Vec<u8>, tag: u8, b: &[u8]) {
    buf.push(tag);
    buf.extend_from_slice(&(b.len() as u64).to_be_bytes());
    buf.extend_from_slice(b);
}

fn nanos(buf: &mut Vec<u8>, v: i128) {
    buf.push(0x07);
    buf.extend_from_slice(&v.to_be_bytes());
}

fn millis_date(buf: &mut Vec<u8>, v: i64) {
    buf.push(0x08);
    buf.extend_from_slice(&v.to_be_bytes());
}

fn decimal(buf: &mut Vec<u8>, mut v: i128, mut scale: i16) {
    while v != 0 && v % 10 == 0 && scale > i16::from(i8::MIN) {
        v /= 10;
        scale -= 1;
    }
    if v == 0 {
        scale = 0;
    }
    buf.push(0x09);
    buf.extend_from_slice(&v.to_be_bytes());
    buf.extend_from_slice(&scale.to_be_bytes());
}

/// Appends the canonical encoding of one row of a column.
type Encoder<'a> = Box<dyn Fn(usize, &mut Vec<u8>) + 'a>;

/// The encoder of column `a` (of a hashable, non-dictionary type): the type is matched and the
/// array downcast once per column, not once per value.
fn encoder(a: &dyn Array) -> Encoder<'_> {
    fn with_nulls<'a>(a: &'a dyn Array, f: impl Fn(usize, &mut Vec<u8>) + 'a) -> Encoder<'a> {
        if a.null_count() == 0 {
            Box::new(f)
        } else {
            Box::new(move |row, buf| if a.is_null(row) { buf.push(0x00) } else { f(row, buf) })
        }
    }
    // A primitive column: downcast once, encode each value with `$encode`.
    macro_rules! primitive {
        ($t:ty, $encode:expr) => {{
            let v = a.as_primitive::<$t>();
            with_nulls(a, move |r, buf| $encode(buf, v.value(r)))
        }};
    }
    match a.data_type() {
        DataType::Boolean => {
            let v = a.as_boolean();
            with_nulls(a, move |r, buf| {
                buf.push(0x01);
                buf.push(u8::from(v.value(r)));
            })
        }
        DataType::Int8 => primitive!(Int8Type, |b, x: i8| int(b, x.into())),
        DataType::Int16 => primitive!(Int16Type, |b, x: i16| int(b, x.into())),
        DataType::Int32 => primitive!(Int32Type, |b, x: i32| int(b, x.into())),
        DataType::Int64 => primitive!(Int64Type, int),
        DataType::UInt8 => primitive!(UInt8Type, |b, x: u8| uint(b, x.into())),
        DataType::UInt16 => primitive!(UInt16Type, |b, x: u16| uint(b, x.into())),
        DataType::UInt32 => primitive!(UInt32Type, |b, x: u32| uint(b, x.into())),
        DataType::UInt64 => primitive!(UInt64Type, uint),
        DataType::Float16 => primitive!(
            Float16Type,
            |b, x: <Float16Type as arrow::datatypes::ArrowPrimitiveType>::Native| float(b, x.to_f64())
        ),
        DataType::Float32 => primitive!(Float32Type, |b, x: f32| float(b, x.into())),
        DataType::Float64 => primitive!(Float64Type, float),
        DataType::Utf8 => {
            let v = a.as_string::<i32>();
            with_nulls(a, move |r, buf| bytes(buf, 0x05, v.value(r).as_bytes()))
        }
        DataType::LargeUtf8 => {
            let v = a.as_string::<i64>();
            with_nulls(a, move |r, buf| bytes(buf, 0x05, v.value(r).as_bytes()))
        }
        DataType::Utf8View => {
            let v = a.as_string_view();
            with_nulls(a, move |r, buf| bytes(buf, 0x05, v.value(r).as_bytes()))
        }
        DataType::Binary => {
            let v = a.as_binary::<i32>();
            with_nulls(a, move |r, buf| bytes(buf, 0x06, v.value(r)))
        }
        DataType::LargeBinary => {
            let v = a.as_binary::<i64>();
            with_nulls(a, move |r, buf| bytes(buf, 0x06, v.value(r)))
        }
        DataType::BinaryView => {
            let v = a.as_binary_view();
            with_nulls(a, move |r, buf| bytes(buf, 0x06, v.value(r)))
        }
        DataType::FixedSizeBinary(_) => {
            let v = a.as_fixed_size_binary();
            with_nulls(a, move |r, buf| bytes(buf, 0x06, v.value(r)))
        }
        DataType::Timestamp(TimeUnit::Second, _) => {
            primitive!(TimestampSecondType, |b, x: i64| nanos(b, i128::from(x) * 1_000_000_000))
        }
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            primitive!(TimestampMillisecondType, |b, x: i64| nanos(b, i128::from(x) * 1_000_000))
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            primitive!(TimestampMicrosecondType, |b, x: i64| nanos(b, i128::from(x) * 1_000))
        }
        DataType::Timestamp(TimeUnit::Nanosecond, _) => {
            primitive!(TimestampNanosecondType, |b, x: i64| nanos(b, i128::from(x)))
        }
        DataType::Date32 => primitive!(Date32Type, |b, x: i32| millis_date(b, i64::from(x) * 86_400_000)),
        DataType::Date64 => primitive!(Date64Type, millis_date),
        DataType::Decimal32(_, s) => {
            let s = i16::from(*s);
            primitive!(Decimal32Type, |b, x: i32| decimal(b, x.into(), s))
        }
        DataType::Decimal64(_, s) => {
            let s = i16::from(*s);
            primitive!(Decimal64Type, |b, x: i64| decimal(b, x.into(), s))
        }
        DataType::Decimal128(_, s) => {
            let s = i16::from(*s);
            primitive!(Decimal128Type, |b, x: i128| decimal(b, x, s))
        }
        // Null, and nothing else: `hash_rows` refuses unhashable types before encoding.
        _ => Box::new(|_, buf| buf.push(0x00)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::*;
    use arrow::datatypes::{Int32Type, i256};

    fn groups(a: ArrayRef) -> Vec<u32> {
        let mut h = Vec::new();
        hash_rows(&[a], &mut h).unwrap();
        h.iter().map(|h| key_group_of(*h, 128)).collect()
    }

    fn one(col: &ArrayRef) -> Vec<u64> {
        hashes(std::slice::from_ref(col))
    }

    fn hashes(cols: &[ArrayRef]) -> Vec<u64> {
        let mut h = Vec::new();
        hash_rows(cols, &mut h).unwrap();
        h
    }

    #[test]
    fn xxh64_is_the_reference_algorithm() {
        // XXH64("", seed 0), as the reference implementation gives it.
        assert_eq!(XxHash64::oneshot(0, b""), 0xEF46_DB37_51D8_E999);
    }

    #[test]
    fn compatible_types_agree() {
        let i64s: ArrayRef = Arc::new(Int64Array::from(vec![-3, 0, 5, i64::from(i32::MAX)]));
        let i32s: ArrayRef = Arc::new(Int32Array::from(vec![-3, 0, 5, i32::MAX]));
        let i16s: ArrayRef = Arc::new(Int16Array::from(vec![-3, 0, 5, 7]));
        let u32s: ArrayRef = Arc::new(UInt32Array::from(vec![3, 0, 5, i32::MAX as u32]));
        assert_eq!(one(&i64s), one(&i32s));
        assert_eq!(one(&i64s)[1..3], one(&i16s)[1..3]);
        assert_eq!(one(&i64s)[1..], one(&u32s)[1..]);

        let utf8: ArrayRef = Arc::new(StringArray::from(vec!["a", "", "ü"]));
        let large: ArrayRef = Arc::new(LargeStringArray::from(vec!["a", "", "ü"]));
        let view: ArrayRef = Arc::new(StringViewArray::from(vec!["a", "", "ü"]));
        let dict: ArrayRef = Arc::new(vec!["a", "", "ü"].into_iter().collect::<DictionaryArray<Int32Type>>());
        assert_eq!(one(&utf8), one(&large));
        assert_eq!(one(&utf8), one(&view));
        assert_eq!(one(&utf8), one(&dict));

        let f64s: ArrayRef = Arc::new(Float64Array::from(vec![1.5, -0.0, f64::NAN]));
        let f32s: ArrayRef = Arc::new(Float32Array::from(vec![1.5, 0.0, -f32::NAN]));
        assert_eq!(one(&f64s), one(&f32s));

        let ms: ArrayRef = Arc::new(TimestampMillisecondArray::from(vec![1_700_000_000_000]).with_timezone("UTC"));
        let s: ArrayRef = Arc::new(TimestampSecondArray::from(vec![1_700_000_000]));
        let ns: ArrayRef = Arc::new(TimestampNanosecondArray::from(vec![1_700_000_000_000_000_000]));
        assert_eq!(one(&ms), one(&s));
        assert_eq!(one(&ms), one(&ns));

        let d32: ArrayRef = Arc::new(Date32Array::from(vec![19_000]));
        let d64: ArrayRef = Arc::new(Date64Array::from(vec![19_000 * 86_400_000]));
        assert_eq!(one(&d32), one(&d64));

        let scale2: ArrayRef = Arc::new(Decimal128Array::from(vec![500, 0]).with_precision_and_scale(10, 2).unwrap());
        let scale1: ArrayRef = Arc::new(Decimal128Array::from(vec![50, 0]).with_precision_and_scale(10, 1).unwrap());
        assert_eq!(one(&scale2), one(&scale1));
    }

    #[test]
    fn column_boundaries_and_nulls_matter() {
        let a: ArrayRef = Arc::new(StringArray::from(vec!["ab", "a"]));
        let b: ArrayRef = Arc::new(StringArray::from(vec!["", "b"]));
        let h = hashes(&[a, b]);
        assert_ne!(h[0], h[1], "(ab, '') and (a, b) differ");
        let n: ArrayRef = Arc::new(Int64Array::from(vec![None, Some(0)]));
        let h = one(&n);
        assert_ne!(h[0], h[1], "null and 0 differ");
    }

    #[test]
    fn unhashable_types_are_refused() {
        let list: ArrayRef = Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(vec![Some(vec![Some(1)])]));
        let e = hash_rows(&[list], &mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains("cannot be hashed"), "{e}");
        let wide: ArrayRef = Arc::new(Decimal256Array::from(vec![i256::from(1)]));
        assert!(hash_rows(&[wide], &mut Vec::new()).is_err());
    }

    // Golden vectors: the key group (of 128) of fixed keys of every key type under version 1,
    // computed from the table above by an independent program (`tests/golden/key_hash_v1.py`,
    // with the reference xxHash library). If one of these changes, the hash changed and every
    // checkpoint's key groups with it.

    #[test]
    fn golden_bigint() {
        let keys: Vec<i64> = vec![
            0,
            1,
            -1,
            2,
            7,
            42,
            100,
            128,
            255,
            1000,
            65_536,
            1_000_000,
            -1_000_000,
            i64::from(i32::MAX),
            i64::from(i32::MIN),
            1 << 40,
            123_456_789_012,
            -987_654_321_098,
            i64::MAX,
            i64::MIN,
        ];
        assert_eq!(groups(Arc::new(Int64Array::from(keys))), GOLDEN_BIGINT);
    }

    #[test]
    fn golden_int() {
        let keys: Vec<i32> = vec![
            0,
            1,
            -1,
            2,
            7,
            42,
            100,
            128,
            255,
            1000,
            65_536,
            1_000_000,
            -1_000_000,
            i32::MAX,
            i32::MIN,
            12_345,
            -54_321,
            99_999,
            31,
            17,
        ];
        assert_eq!(groups(Arc::new(Int32Array::from(keys))), GOLDEN_INT);
    }

    #[test]
    fn golden_string() {
        let keys = vec![
            "",
            "a",
            "b",
            "ab",
            "ba",
            "customer-1",
            "customer-2",
            "customer-10",
            "Zürich",
            "東京",
            "emoji 🚀",
            " ",
            "null",
            "0",
            "1",
            "a somewhat longer key that spans more than sixteen bytes",
            "x".repeat(300).leak(),
            "tab\tseparated",
            "line\nbreak",
            "UPPER",
        ];
        assert_eq!(groups(Arc::new(StringArray::from(keys))), GOLDEN_STRING);
    }

    #[test]
    fn golden_double() {
        let keys = vec![
            0.0,
            -0.0,
            1.0,
            -1.0,
            0.5,
            1.5,
            3.25,
            100.0,
            1e-9,
            1e300,
            -1e300,
            f64::MIN_POSITIVE,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            std::f64::consts::PI,
            std::f64::consts::E,
            42.42,
            -7.125,
            65_536.0,
        ];
        assert_eq!(groups(Arc::new(Float64Array::from(keys))), GOLDEN_DOUBLE);
    }

    #[test]
    fn golden_timestamp_date_bool_bytes_decimal_null() {
        let ts: Vec<i64> = (0..20).map(|i| 1_767_225_600_000 + i * 3_600_000 - 7 * i * i).collect();
        assert_eq!(groups(Arc::new(TimestampMillisecondArray::from(ts).with_timezone("UTC"))), GOLDEN_TIMESTAMP);
        let dates: Vec<i32> = (0..20).map(|i| 20_000 + i * 11 - 100).collect();
        assert_eq!(groups(Arc::new(Date32Array::from(dates))), GOLDEN_DATE);
        let bools = vec![Some(true), Some(false), None];
        assert_eq!(groups(Arc::new(BooleanArray::from(bools))), GOLDEN_BOOL_NULL);
        let bins: Vec<Vec<u8>> =
            (0u8..20).map(|i| (0..i).map(|j| j.wrapping_mul(37).wrapping_add(i)).collect()).collect();
        let bins: Vec<&[u8]> = bins.iter().map(|b| b.as_slice()).collect();
        assert_eq!(groups(Arc::new(BinaryArray::from(bins))), GOLDEN_BYTES);
        let decs: Vec<i128> = (0..20).map(|i| (i - 10) * 12_345 + i * i).collect();
        let decs = Decimal128Array::from(decs).with_precision_and_scale(20, 3).unwrap();
        assert_eq!(groups(Arc::new(decs)), GOLDEN_DECIMAL);
    }

    #[test]
    fn golden_two_columns() {
        let a: ArrayRef = Arc::new(Int64Array::from((0..20).collect::<Vec<i64>>()));
        let b: ArrayRef = Arc::new(StringArray::from((0..20).map(|i| format!("k{}", i % 3)).collect::<Vec<_>>()));
        let h = hashes(&[a, b]);
        let g: Vec<u32> = h.iter().map(|h| key_group_of(*h, 128)).collect();
        assert_eq!(g, GOLDEN_TWO_COLUMNS);
    }

    const GOLDEN_BIGINT: [u32; 20] =
        [38, 21, 127, 116, 76, 103, 30, 52, 110, 96, 123, 81, 56, 14, 117, 63, 27, 63, 88, 123];
    const GOLDEN_INT: [u32; 20] =
        [38, 21, 127, 116, 76, 103, 30, 52, 110, 96, 123, 81, 56, 14, 117, 74, 62, 125, 37, 60];
    const GOLDEN_STRING: [u32; 20] =
        [30, 57, 106, 95, 5, 6, 32, 102, 113, 99, 17, 37, 89, 69, 102, 102, 88, 126, 86, 24];
    const GOLDEN_DOUBLE: [u32; 20] =
        [113, 113, 109, 13, 10, 123, 34, 103, 106, 69, 112, 119, 8, 79, 74, 27, 35, 67, 124, 122];
    const GOLDEN_TIMESTAMP: [u32; 20] =
        [54, 7, 10, 105, 98, 81, 93, 4, 82, 108, 37, 1, 82, 103, 77, 8, 44, 88, 114, 47];
    const GOLDEN_DATE: [u32; 20] = [82, 42, 97, 79, 81, 15, 23, 95, 25, 64, 13, 38, 87, 100, 89, 29, 82, 127, 39, 119];
    const GOLDEN_BOOL_NULL: [u32; 3] = [122, 113, 104];
    const GOLDEN_BYTES: [u32; 20] = [17, 16, 99, 91, 79, 95, 102, 43, 14, 24, 22, 14, 70, 93, 80, 72, 51, 82, 1, 97];
    const GOLDEN_DECIMAL: [u32; 20] = [87, 3, 73, 126, 58, 19, 27, 121, 15, 15, 19, 40, 17, 75, 70, 89, 6, 9, 99, 68];
    const GOLDEN_TWO_COLUMNS: [u32; 20] =
        [71, 83, 67, 8, 42, 54, 6, 30, 93, 30, 14, 3, 126, 77, 115, 33, 95, 123, 48, 62];
}
