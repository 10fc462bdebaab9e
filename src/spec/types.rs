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
                        if !fits(field, value) {
                            let ty = crate::plan::type_name(field.data_type());
                            cx.error(
                                Code::TestValueType,
                                &push_pointer(&ptr, key),
                                format!("{value} is not a {ty} (column `{key}` of `{name}`)"),
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
