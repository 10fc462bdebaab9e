//! Types: an Arrow schema propagated from every source through every transform to every
//! sink, with each expression and query compiled by DataFusion on the way, and test rows
//! checked against the columns they feed or expect.

use indexmap::IndexMap;

use super::check::{Checker, StreamSchema};
use super::loader::push_pointer;
use super::{Pipeline, Stream};
use crate::diagnostics::{Code, did_you_mean};

/// Checks types in topological `order` and returns every stream's schema, or `None` when a
/// stream could not be typed (its errors are in `cx`).
pub fn check(p: &Pipeline, order: &[String], cx: &mut Checker) -> Option<IndexMap<String, Stream>> {
    let mut streams: IndexMap<String, Stream> = IndexMap::new();
    let mut complete = true;
    for (name, source) in &p.sources {
        match source.get().check(cx, &push_pointer("/sources", name)) {
            Some(schema) => {
                streams.insert(name.clone(), Stream { producer: name.clone(), schema });
                if let Some(dl) = source.get().dead_letter() {
                    let schema = StreamSchema { schema: crate::runtime::dead_letter_schema(), event_time: None };
                    streams.insert(dl.to_string(), Stream { producer: name.clone(), schema });
                }
            }
            None => complete = false,
        }
    }
    for name in order {
        let t = p.transforms[name].get();
        let ptr = push_pointer("/transforms", name);
        let inputs: Option<Vec<_>> = t.inputs().iter().map(|(i, _)| streams.get(*i).map(|s| (*i, &s.schema))).collect();
        // An input that failed its own check is already reported; skip what depends on it.
        let Some(inputs) = inputs else {
            complete = false;
            continue;
        };
        match t.check(cx, &ptr, &inputs) {
            Some(out) => {
                streams.insert(name.clone(), Stream { producer: name.clone(), schema: out.main });
                for (side, schema) in out.side {
                    streams.insert(side, Stream { producer: name.clone(), schema });
                }
            }
            None => complete = false,
        }
    }
    for (name, sink) in &p.sinks {
        if let Some(input) = streams.get(sink.get().input()) {
            sink.get().check(cx, &push_pointer("/sinks", name), &input.schema);
        }
    }
    check_test_rows(p, &streams, cx);
    complete.then_some(streams)
}

fn check_test_rows(p: &Pipeline, streams: &IndexMap<String, Stream>, cx: &mut Checker) {
    for (i, test) in p.tests.iter().enumerate() {
        let sides = [("given", &test.given, true), ("expect", &test.expect, false)];
        for (field, rows_by_name, is_source) in sides {
            for (name, rows) in rows_by_name {
                let stream = if is_source { Some(name.as_str()) } else { p.sinks.get(name).map(|s| s.get().input()) };
                let Some(schema) = stream.and_then(|s| streams.get(s)) else { continue };
                let columns = schema.schema.column_names();
                for (r, row) in rows.iter().enumerate() {
                    let ptr = push_pointer(&push_pointer(&format!("/tests/{i}/{field}"), name), &r.to_string());
                    if is_source && row.len() == 1 && row.contains_key("watermark") {
                        let w = &row["watermark"];
                        if w.as_str().and_then(crate::connectors::datagen::chrono_like_rfc3339).is_none() {
                            cx.error(
                                Code::TestValueType,
                                &push_pointer(&ptr, "watermark"),
                                format!("watermark {w} is not an RFC 3339 time"),
                            )
                            .help = Some("write it like \"2026-01-01T01:00:00Z\"".into());
                        }
                        continue;
                    }
                    for (key, value) in row {
                        let Ok(field) = schema.schema.schema.field_with_name(key) else { continue };
                        let ty = a_type(field);
                        let at = push_pointer(&ptr, key);
                        if is_source && value.is_null() && !field.is_nullable() {
                            cx.error(Code::TestValueType, &at, format!("column `{key}` of `{name}` cannot be null"));
                        } else if let Some(why) = is_source.then(|| misfit(field, value)).flatten() {
                            cx.error(Code::TestValueType, &at, format!("{value} {why} (column `{key}` of `{name}`)"));
                        } else if !fits(field, value) {
                            cx.error(
                                Code::TestValueType,
                                &at,
                                format!("{value} is not {ty} (column `{key}` of `{name}`)"),
                            );
                        }
                    }
                    if is_source {
                        let missing = schema.schema.schema.fields().iter().filter(|f| !f.is_nullable());
                        for field in missing.filter(|f| !row.contains_key(f.name())) {
                            cx.error(
                                Code::TestValueType,
                                &ptr,
                                format!(
                                    "the row gives no `{}`, a column of `{name}` that cannot be null",
                                    field.name()
                                ),
                            );
                        }
                    }
                    for key in row.keys() {
                        if columns.contains(&key.as_str()) {
                            continue;
                        }
                        let help = did_you_mean(key, columns.iter().copied())
                            .unwrap_or_else(|| format!("`{name}` has columns: {}", columns.join(", ")));
                        cx.error_at_key(
                            Code::UnknownTestColumn,
                            &push_pointer(&ptr, key),
                            format!("`{key}` is not a column of `{name}`"),
                        )
                        .help = Some(help);
                    }
                }
            }
        }
    }
}

/// Why a value given to a source does not fit a numeric column exactly: a fraction for an
/// integer column, a number out of the column's range. The JSON decoder would truncate such
/// values; `fits` checks the rest.
fn misfit(field: &arrow::datatypes::Field, value: &serde_json::Value) -> Option<String> {
    use arrow::datatypes::DataType as T;
    let ty = a_type(field);
    let (lo, hi): (i128, i128) = match field.data_type() {
        T::Int8 => (i8::MIN.into(), i8::MAX.into()),
        T::Int16 => (i16::MIN.into(), i16::MAX.into()),
        T::Int32 => (i32::MIN.into(), i32::MAX.into()),
        T::Int64 => (i64::MIN.into(), i64::MAX.into()),
        T::UInt8 => (0, u8::MAX.into()),
        T::UInt16 => (0, u16::MAX.into()),
        T::UInt32 => (0, u32::MAX.into()),
        T::UInt64 => (0, u64::MAX.into()),
        T::Float32 => {
            let f = value.as_f64()?;
            return (f.is_finite() && !(f as f32).is_finite()).then(|| format!("is not {ty}: out of range"));
        }
        _ => return None,
    };
    let fraction = format!("is not {ty}: it has a fraction");
    let whole: Option<i128> = match value {
        serde_json::Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => Some(i.into()),
            (_, Some(u), _) => Some(u.into()),
            (_, _, Some(f)) if f.fract() != 0.0 => return Some(fraction),
            // Beyond i128 the value is out of range anyway.
            (_, _, Some(f)) => Some(f.clamp(i128::MIN as f64, i128::MAX as f64) as i128),
            _ => None,
        },
        serde_json::Value::String(t) => match (t.trim().parse::<i128>(), t.trim().parse::<f64>()) {
            (Ok(i), _) => Some(i),
            (_, Ok(f)) if f.fract() != 0.0 => return Some(fraction),
            _ => None,
        },
        _ => None,
    };
    whole.filter(|w| !(lo..=hi).contains(w)).map(|_| format!("is not {ty}: out of range {lo} to {hi}"))
}

/// The column's type with its article: `a bigint`, `an int`.
fn a_type(field: &arrow::datatypes::Field) -> String {
    let ty = crate::plan::type_name(field.data_type());
    let article = if ty.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" };
    format!("{article} {ty}")
}

/// Whether `value` decodes as a value of `field` (rows are given to sources as JSON).
fn fits(field: &arrow::datatypes::Field, value: &serde_json::Value) -> bool {
    if value.is_null() {
        return true;
    }
    let schema = std::sync::Arc::new(arrow::datatypes::Schema::new(vec![field.clone().with_nullable(true)]));
    let Ok(mut d) = arrow::json::ReaderBuilder::new(schema).build_decoder() else { return true };
    let row = serde_json::json!({ field.name(): value }).to_string();
    d.decode(row.as_bytes()).is_ok() && d.flush().is_ok()
}
