//! `sluice test`: runs a spec's `tests:` — given rows and watermarks per source, expected rows
//! per sink — through the real engine, with sources replaced by the given rows and sinks by
//! captures, and compares.
//!
//! Comparison is by value: integers and decimals exactly, floats with a relative tolerance of
//! 1e-9, timestamps as instants (any RFC 3339 form), and an expected row may leave out
//! columns it does not care about. Rows are compared as a
//! multiset unless the test says `ordered: true`. `--update` rewrites the expectations in the
//! spec file from what the pipeline produced, keeping the rest of the file as written.

use std::collections::{HashMap, HashSet};

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, TimeUnit};
use arrow::record_batch::RecordBatch;
use indexmap::IndexMap;
use serde_json::{Map, Value};

use crate::connectors::datagen::chrono_like_rfc3339;
use crate::connectors::datagen::generator::BATCH_BYTES;
use crate::runtime::controller::TestInput;
use crate::runtime::{JobOptions, run_job};
use crate::spec::loader::{SourceMap, Syntax, push_pointer};
use crate::spec::{TestCase, Validated};

/// A row as compared: column → JSON value.
pub type Row = Map<String, Value>;

/// The outcome of one test.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The test's name.
    pub name: String,
    /// What did not match (empty when passed).
    pub failures: Vec<String>,
    /// Rows each sink received.
    pub actual: IndexMap<String, Vec<Row>>,
    /// Wall time.
    pub seconds: f64,
    /// Whether the test could not run at all (bad input rows, a failing pipeline); such a
    /// test has no result to `--update` from.
    pub errored: bool,
}

impl Outcome {
    /// Whether the test passed.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Formats ms since the epoch as RFC 3339 in UTC (`2026-01-01T00:00:00Z`, with `.mmm` when
/// there are milliseconds).
pub fn format_ms(ms: i64) -> String {
    match chrono::DateTime::from_timestamp_millis(ms) {
        Some(t) if ms % 1000 == 0 => t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        Some(t) => t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        None => ms.to_string(),
    }
}

/// Rows of a batch as JSON objects, timestamps in RFC 3339. Decimals are numbers when a JSON
/// number holds them exactly, their exact text otherwise.
pub fn rows_of(batch: &RecordBatch) -> Vec<Row> {
    let schema = batch.schema();
    let mut rows = vec![Map::new(); batch.num_rows()];
    for (c, field) in schema.fields().iter().enumerate() {
        let col = batch.column(c);
        // Each column is cast once to the type its JSON values are read from.
        let t = col.data_type();
        let cast_to = |to: &DataType| arrow::compute::cast(col, to).ok();
        let ms = matches!(t, DataType::Timestamp(_, _))
            .then(|| cast_to(&DataType::Timestamp(TimeUnit::Millisecond, None)))
            .flatten();
        let ints = (t.is_integer()).then(|| cast_to(&DataType::Int64)).flatten();
        let floats = (t.is_floating()).then(|| cast_to(&DataType::Float64)).flatten();
        let formatter = arrow::util::display::ArrayFormatter::try_new(
            col.as_ref(),
            &arrow::util::display::FormatOptions::default(),
        )
        .ok();
        for (r, row) in rows.iter_mut().enumerate() {
            let v = if col.is_null(r) {
                Value::Null
            } else if let Some(ms) = &ms {
                Value::String(format_ms(ms.as_primitive::<arrow::datatypes::TimestampMillisecondType>().value(r)))
            } else if let Some(i) = &ints {
                Value::from(i.as_primitive::<arrow::datatypes::Int64Type>().value(r))
            } else if let Some(f) = &floats {
                serde_json::Number::from_f64(f.as_primitive::<arrow::datatypes::Float64Type>().value(r))
                    .map_or(Value::Null, Value::Number)
            } else if *t == DataType::Boolean {
                Value::Bool(col.as_boolean().value(r))
            } else if matches!(t, DataType::Decimal128(_, _) | DataType::Decimal256(_, _))
                && let Some(f) = &formatter
            {
                decimal_value(&f.value(r).to_string())
            } else {
                formatter.as_ref().map_or(Value::Null, |f| Value::String(f.value(r).to_string()))
            };
            row.insert(field.name().clone(), v);
        }
    }
    rows
}

/// A decimal's text as a JSON number when that holds it exactly, else as the text.
fn decimal_value(text: &str) -> Value {
    let normal = normal_decimal(text);
    match serde_json::from_str::<serde_json::Number>(&normal) {
        Ok(n) if decimal_text(&n) == normal => Value::Number(n),
        _ => Value::String(text.to_string()),
    }
}

/// A number's exact decimal value as normalized text (no exponent, no trailing zeros).
fn decimal_text(n: &serde_json::Number) -> String {
    // Rust prints floats in full positional form with the fewest digits that round-trip.
    let text = match (n.as_i64(), n.as_u64(), n.as_f64()) {
        (Some(i), _, _) => i.to_string(),
        (_, Some(u), _) => u.to_string(),
        (_, _, Some(f)) => format!("{f}"),
        _ => n.to_string(),
    };
    normal_decimal(&text)
}

/// `-1.500` → `-1.5`, `2.0` → `2`, `-0` → `0`.
fn normal_decimal(text: &str) -> String {
    let mut t = text.trim().to_string();
    if t.contains('.') {
        t = t.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    if t == "-0" { "0".into() } else { t }
}

/// Which columns of a sink's rows hold floats and which decimals: how numbers compare.
#[derive(Debug, Clone, Default)]
pub struct NumberColumns {
    /// Float columns: numbers match within a relative 1e-9.
    pub floats: HashSet<String>,
    /// Decimal columns: values too precise for a JSON number are compared as decimal text.
    pub decimals: HashSet<String>,
}

impl NumberColumns {
    /// The number columns of the batches a sink received.
    pub fn of(batches: &[RecordBatch]) -> Self {
        let mut out = NumberColumns::default();
        for field in batches.iter().flat_map(|b| b.schema().fields().to_vec()) {
            match field.data_type() {
                t if t.is_floating() => out.floats.insert(field.name().clone()),
                DataType::Decimal128(_, _) | DataType::Decimal256(_, _) => out.decimals.insert(field.name().clone()),
                _ => false,
            };
        }
        out
    }
}

/// Whether `actual` has `expected`'s value for every column `expected` names.
fn matches(expected: &Row, actual: &Row, columns: &NumberColumns) -> bool {
    expected.iter().all(|(k, e)| actual.get(k).is_some_and(|a| same(e, a, k, columns)))
}

fn same(e: &Value, a: &Value, column: &str, columns: &NumberColumns) -> bool {
    match (e, a) {
        (Value::Number(x), Value::Number(y)) if columns.floats.contains(column) => {
            let (x, y) = (x.as_f64().unwrap_or(f64::NAN), y.as_f64().unwrap_or(f64::NAN));
            x == y || (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0)
        }
        // Integers and decimals exactly: 1.9 is not 2, 10000000000 is not 10000000001.
        (Value::Number(x), Value::Number(y)) => decimal_text(x) == decimal_text(y),
        (Value::Number(x), Value::String(y)) | (Value::String(y), Value::Number(x))
            if columns.decimals.contains(column) =>
        {
            decimal_text(x) == normal_decimal(y)
        }
        (Value::String(x), Value::String(y)) if columns.decimals.contains(column) => {
            normal_decimal(x) == normal_decimal(y)
        }
        (Value::String(x), Value::String(y)) => {
            x == y || matches!((chrono_like_rfc3339(x), chrono_like_rfc3339(y)), (Some(p), Some(q)) if p == q)
        }
        _ => e == a,
    }
}

/// Compares rows of one sink; returns what is missing and what is unexpected. Numbers in
/// float columns match within a relative 1e-9, all other numbers only when equal.
pub fn compare(expected: &[Row], actual: &[Row], ordered: bool, columns: &NumberColumns) -> Vec<String> {
    let matches = |e: &Row, a: &Row| matches(e, a, columns);
    let show = |r: &Row| serde_json::to_string(r).unwrap_or_default();
    let mut out = Vec::new();
    if ordered {
        for i in 0..expected.len().max(actual.len()) {
            match (expected.get(i), actual.get(i)) {
                (Some(e), Some(a)) if matches(e, a) => {}
                (Some(e), Some(a)) => out.push(format!("row {}: expected {} but got {}", i + 1, show(e), show(a))),
                (Some(e), None) => out.push(format!("row {}: expected {} but there is none", i + 1, show(e))),
                (None, Some(a)) => out.push(format!("row {}: unexpected {}", i + 1, show(a))),
                (None, None) => {}
            }
        }
        return out;
    }
    let mut used = vec![false; actual.len()];
    for e in expected {
        match (0..actual.len()).find(|&i| !used[i] && matches(e, &actual[i])) {
            Some(i) => used[i] = true,
            None => out.push(format!("- missing    {}", show(e))),
        }
    }
    for (i, a) in actual.iter().enumerate() {
        if !used[i] {
            out.push(format!("+ unexpected {}", show(a)));
        }
    }
    out
}

/// The given rows of a test as engine inputs, batched between watermarks and cut into
/// batches of about [`BATCH_BYTES`] of JSON text (Arrow's strings hold at most 2 GiB).
fn inputs(v: &Validated, test: &TestCase) -> Result<HashMap<String, Vec<TestInput>>, String> {
    let mut out = HashMap::new();
    for (source, rows) in &test.given {
        let schema = v.streams.get(source).ok_or_else(|| format!("`{source}` is not a source"))?.schema.schema.clone();
        let mut events = Vec::new();
        let mut pending: Vec<&Row> = Vec::new();
        let flush = |pending: &mut Vec<&Row>, events: &mut Vec<TestInput>| -> Result<(), String> {
            if pending.is_empty() {
                return Ok(());
            }
            let mut d = arrow::json::ReaderBuilder::new(schema.clone())
                .with_batch_size(pending.len() + 1)
                .build_decoder()
                .map_err(|e| e.to_string())?;
            let misfit =
                |e: arrow::error::ArrowError| format!("a row given to `{source}` does not fit its schema: {e}");
            let mut bytes = 0;
            for (i, row) in pending.iter().enumerate() {
                let text = serde_json::to_string(row).unwrap_or_default() + "\n";
                d.decode(text.as_bytes()).map_err(misfit)?;
                bytes += text.len();
                if bytes >= BATCH_BYTES || i + 1 == pending.len() {
                    events.extend(d.flush().map_err(misfit)?.map(TestInput::Rows));
                    bytes = 0;
                }
            }
            pending.clear();
            Ok(())
        };
        for row in rows {
            if row.len() == 1
                && let Some(w) = row.get("watermark")
            {
                flush(&mut pending, &mut events)?;
                let ms = w
                    .as_str()
                    .and_then(chrono_like_rfc3339)
                    .ok_or_else(|| format!("watermark `{w}` is not an RFC 3339 time"))?;
                events.push(TestInput::Watermark(ms));
            } else {
                pending.push(row);
            }
        }
        flush(&mut pending, &mut events)?;
        out.insert(source.clone(), events);
    }
    Ok(out)
}

/// Runs one test.
pub fn run_test(v: &Validated, test: &TestCase) -> Outcome {
    let started = std::time::Instant::now();
    let mut outcome = Outcome {
        name: test.name.clone(),
        failures: Vec::new(),
        actual: IndexMap::new(),
        seconds: 0.0,
        errored: false,
    };
    let inputs = match inputs(v, test) {
        Ok(i) => i,
        Err(e) => {
            outcome.failures.push(e);
            outcome.errored = true;
            return outcome;
        }
    };
    let options = JobOptions { capture_sinks: true, test_inputs: Some(inputs), ..JobOptions::default() };
    match run_job(v, options) {
        Ok(result) => {
            let mut columns = HashMap::new();
            for (sink, batches) in result.captured {
                columns.insert(sink.clone(), NumberColumns::of(&batches));
                outcome.actual.insert(sink, batches.iter().flat_map(rows_of).collect());
            }
            for (sink, expected) in &test.expect {
                let actual = outcome.actual.get(sink).map(Vec::as_slice).unwrap_or_default();
                let columns = columns.remove(sink).unwrap_or_default();
                for line in compare(expected, actual, test.ordered, &columns) {
                    outcome.failures.push(format!("sink `{sink}`: {line}"));
                }
            }
        }
        Err(e) => {
            outcome.failures.push(format!("the pipeline failed: {e}"));
            outcome.errored = true;
        }
    }
    outcome.seconds = started.elapsed().as_secs_f64();
    outcome
}

/// Renders a value as YAML flow text.
fn yaml_value(v: &Value) -> String {
    match v {
        Value::Object(o) => {
            let parts: Vec<String> = o.iter().map(|(k, v)| format!("{}: {}", yaml_key(k), yaml_value(v))).collect();
            format!("{{ {} }}", parts.join(", "))
        }
        Value::Array(a) => format!("[{}]", a.iter().map(yaml_value).collect::<Vec<_>>().join(", ")),
        Value::String(s) => serde_json::to_string(s).unwrap_or_default(),
        other => other.to_string(),
    }
}

fn yaml_key(k: &str) -> String {
    let plain = k.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if plain { k.to_string() } else { serde_json::to_string(k).unwrap_or_default() }
}

fn toml_value(v: &Value) -> toml_edit::Value {
    match v {
        Value::Null => toml_edit::Value::from(""),
        Value::Bool(b) => toml_edit::Value::from(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => toml_edit::Value::from(i),
            None => toml_edit::Value::from(n.as_f64().unwrap_or(0.0)),
        },
        Value::String(s) => toml_edit::Value::from(s.as_str()),
        Value::Array(a) => toml_edit::Value::Array(a.iter().map(toml_value).collect()),
        Value::Object(o) => {
            // TOML has no null: a null column is left out (and so not compared).
            let mut t = toml_edit::InlineTable::new();
            for (k, v) in o.iter().filter(|(_, v)| !v.is_null()) {
                t.insert(k, toml_value(v));
            }
            toml_edit::Value::InlineTable(t)
        }
    }
}

/// The expectations `--update` writes for a test: the sinks it already names (all sinks with
/// rows when it names none), with the rows they received.
fn new_expectations(test: &TestCase, outcome: &Outcome) -> IndexMap<String, Vec<Row>> {
    let names: Vec<&String> = if test.expect.is_empty() {
        outcome.actual.iter().filter(|(_, r)| !r.is_empty()).map(|(k, _)| k).collect()
    } else {
        test.expect.keys().collect()
    };
    names.into_iter().map(|n| (n.clone(), outcome.actual.get(n).cloned().unwrap_or_default())).collect()
}

/// Rewrites the expectations of every test in the spec text. Tests without an `expect:` key
/// in YAML are left alone (and reported).
pub fn update_text(
    text: &str,
    syntax: Syntax,
    map: &SourceMap,
    tests: &[TestCase],
    outcomes: &[Outcome],
) -> Result<String, String> {
    match syntax {
        Syntax::Toml => {
            let mut doc: toml_edit::DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| e.to_string())?;
            let Some(array) = doc.get_mut("tests").and_then(|t| t.as_array_of_tables_mut()) else {
                return Err("the spec's tests are not a [[tests]] array".into());
            };
            for (i, (test, outcome)) in tests.iter().zip(outcomes).enumerate() {
                let Some(table) = array.get_mut(i) else { continue };
                let mut expect = toml_edit::Table::new();
                for (sink, rows) in new_expectations(test, outcome) {
                    let arr: toml_edit::Array = rows.iter().map(|r| toml_value(&Value::Object(r.clone()))).collect();
                    expect.insert(&sink, toml_edit::Item::Value(toml_edit::Value::Array(arr)));
                }
                table.insert("expect", toml_edit::Item::Table(expect));
            }
            Ok(doc.to_string())
        }
        Syntax::Yaml => {
            // Replace each `expect:` value, last first so earlier offsets stay valid.
            let mut edits = Vec::new();
            for (i, (test, outcome)) in tests.iter().zip(outcomes).enumerate() {
                let ptr = push_pointer(&format!("/tests/{i}"), "expect");
                let Some((key, value)) = map.member_range(&ptr) else {
                    return Err(format!("test `{}` has no `expect:` to update; add `expect: {{}}`", test.name));
                };
                let expectations = new_expectations(test, outcome);
                // In flow style (`expect: { ... }`, or a test written on one line) the new
                // value is written in flow style in place of the old one; in block style as
                // an indented block after the key.
                let flow = text[value.clone()].starts_with('{') || map.in_flow(&ptr);
                if flow || expectations.is_empty() {
                    let obj: Map<String, Value> = expectations
                        .into_iter()
                        .map(|(k, rows)| (k, Value::Array(rows.into_iter().map(Value::Object).collect())))
                        .collect();
                    let rendered = if obj.is_empty() { "{}".to_string() } else { yaml_value(&Value::Object(obj)) };
                    edits.push((value.start, value.end, rendered));
                    continue;
                }
                let indent = map.span(key.clone()).column - 1;
                let pad = " ".repeat(indent + 2);
                let mut block = String::from(":");
                for (sink, rows) in expectations {
                    block.push_str(&format!("\n{pad}{}:", yaml_key(&sink)));
                    if rows.is_empty() {
                        block.push_str(" []");
                    }
                    for r in rows {
                        block.push_str(&format!("\n{pad}  - {}", yaml_value(&Value::Object(r))));
                    }
                }
                // The rest of the value's last line (a newline, a comment) stays.
                edits.push((key.end, value.end, block));
            }
            let mut out = text.to_string();
            for (start, end, replacement) in edits.into_iter().rev() {
                out.replace_range(start..end, &replacement);
            }
            Ok(out)
        }
    }
}

/// Escapes text for XML 1.0 attribute values and content. Characters XML 1.0 cannot hold at
/// all (control characters other than tab, newline and carriage return; U+FFFE, U+FFFF)
/// are written as `\u{..}`; tab, newline and carriage return as character references, so
/// they survive attribute-value normalization.
fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\t' | '\n' | '\r' => out.push_str(&format!("&#{};", c as u32)),
            '\u{0}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}' => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// Writes JUnit XML for CI systems.
pub fn junit(results: &[(String, Vec<Outcome>)]) -> String {
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites>\n");
    for (file, outcomes) in results {
        let failures = outcomes.iter().filter(|o| !o.passed()).count();
        let time: f64 = outcomes.iter().map(|o| o.seconds).sum();
        xml.push_str(&format!(
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" time=\"{time:.3}\">\n",
            xml_escape(file),
            outcomes.len()
        ));
        for o in outcomes {
            xml.push_str(&format!(
                "    <testcase name=\"{}\" classname=\"{}\" time=\"{:.3}\"",
                xml_escape(&o.name),
                xml_escape(file),
                o.seconds
            ));
            if o.passed() {
                xml.push_str("/>\n");
            } else {
                xml.push_str(&format!(
                    ">\n      <failure message=\"{}\">{}</failure>\n    </testcase>\n",
                    xml_escape(o.failures.first().map_or("", String::as_str)),
                    xml_escape(&o.failures.join("\n"))
                ));
            }
        }
        xml.push_str("  </testsuite>\n");
    }
    xml.push_str("</testsuites>\n");
    xml
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rows(v: Value) -> Vec<Row> {
        v.as_array().unwrap().iter().map(|r| r.as_object().unwrap().clone()).collect()
    }

    #[test]
    fn compare_by_value_subset_and_order() {
        let actual = rows(json!([
            {"k": 1, "total": 150.0, "window_start": "2026-01-01T00:00:00Z"},
            {"k": 2, "total": 10.5, "window_start": "2026-01-01T01:00:00Z"},
        ]));
        // Numbers numerically, timestamps as instants, columns left out are not compared.
        let expected = rows(json!([
            {"k": 2, "window_start": "2026-01-01T01:00:00.000+00:00"},
            {"k": 1, "total": 150},
        ]));
        let cols = NumberColumns { floats: ["total".to_string()].into(), ..Default::default() };
        assert!(compare(&expected, &actual, false, &cols).is_empty());
        let ordered = compare(&expected, &actual, true, &cols);
        assert_eq!(ordered.len(), 2, "{ordered:?}");
        let wrong = rows(json!([{"k": 1, "total": 151}]));
        let diff = compare(&wrong, &actual, false, &cols);
        assert_eq!(diff.len(), 3, "one missing, two unexpected: {diff:?}");
        assert!(diff[0].starts_with("- missing"));
    }

    #[test]
    fn integers_and_decimals_compare_exactly_floats_with_tolerance() {
        let cols = NumberColumns { floats: ["f".to_string()].into(), decimals: ["d".to_string()].into() };
        let same = |e: Value, a: Value, c: &str| same(&e, &a, c, &cols);
        assert!(!same(json!(10_000_000_000i64), json!(10_000_000_001i64), "i"));
        assert!(!same(json!(1.9), json!(2), "i"));
        assert!(same(json!(2.0), json!(2), "i"));
        assert!(same(json!(10_000_000_000i64), json!(10_000_000_000.000_001), "f"));
        assert!(!same(json!(1.0), json!(1.001), "f"));
        assert!(same(json!(1.5), decimal_value("1.50"), "d"));
        assert!(!same(json!(1.5), decimal_value("1.51"), "d"));
        // Too precise for a JSON number: kept as text, compared as decimals.
        let precise = decimal_value("12345678901234567890.12");
        assert_eq!(precise, json!("12345678901234567890.12"));
        assert!(!same(json!(12345678901234567890.12), precise.clone(), "d"));
        assert!(same(json!("12345678901234567890.12"), precise.clone(), "d"));
        assert!(same(json!(1.5), json!("1.5"), "d"));
        assert!(same(json!("1.50"), decimal_value("1.5"), "d"), "an exact decimal written as text");
        assert!(!same(json!("1.51"), decimal_value("1.5"), "d"));
        assert!(same(json!("12345678901234567890.120"), precise.clone(), "d"));
        assert!(!same(json!(1.5), json!("1.5"), "s"), "only decimal columns compare text as numbers");
        assert_eq!(decimal_value("-0.00"), json!(0));
    }

    #[test]
    fn junit_is_well_formed_xml_whatever_the_names() {
        let outcome = Outcome {
            name: "bell\u{7} tab\t <&\"".into(),
            failures: vec!["esc\u{1b}[31m red \u{ffff}".into()],
            actual: IndexMap::new(),
            seconds: 0.0,
            errored: false,
        };
        let xml = junit(&[("a\u{0}.yaml".into(), vec![outcome])]);
        let forbidden = |c: char| (c < ' ' && !matches!(c, '\t' | '\n' | '\r')) || matches!(c, '\u{fffe}' | '\u{ffff}');
        assert!(!xml.chars().any(forbidden), "{xml:?}");
        assert!(xml.contains(r#"name="bell\u{7} tab&#9; &lt;&amp;&quot;""#), "{xml}");
        assert!(xml.contains(r"esc\u{1b}[31m red \u{ffff}"), "{xml}");
    }

    #[test]
    fn given_rows_are_cut_into_batches_by_bytes() {
        let spec = "version: 1\nname: t\nsources:\n  a: { connector: datagen, schema: { s: string } }\n\
                    sinks:\n  o: { connector: blackhole, input: a }\n";
        let report = crate::spec::validate_text(
            std::path::Path::new("t.yaml"),
            spec,
            Syntax::Yaml,
            &crate::spec::Options::default(),
        );
        let v = report.validated.unwrap();
        let row = |s: String| rows(json!([{ "s": s }])).remove(0);
        let mut given = vec![row("x".repeat(BATCH_BYTES / 2)); 5];
        given.insert(2, rows(json!([{ "watermark": "2026-01-01T00:00:00Z" }])).remove(0));
        given.push(row("y".into()));
        let test = TestCase {
            name: "big".into(),
            given: [("a".to_string(), given)].into_iter().collect(),
            expect: IndexMap::new(),
            ordered: false,
        };
        let events = &inputs(&v, &test).unwrap()["a"];
        let shape: Vec<String> = events
            .iter()
            .map(|e| match e {
                TestInput::Rows(b) => b.num_rows().to_string(),
                TestInput::Watermark(_) => "w".into(),
            })
            .collect();
        // Two rows before the watermark; then 2 rows of half the budget fill a batch.
        assert_eq!(shape, ["2", "w", "2", "2"]);
    }

    #[test]
    fn timestamps_print_in_rfc3339() {
        assert_eq!(format_ms(1_767_225_600_000), "2026-01-01T00:00:00Z");
        assert_eq!(format_ms(1_767_225_600_250), "2026-01-01T00:00:00.250Z");
    }
}
