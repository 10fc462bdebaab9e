//! Projection pushdown into sources: a file source decodes only the columns its consumers
//! read (plus its event time and non-nullable columns); a generator makes only those (plus its
//! event time). A value that would be a bad record in
//! a column nobody reads is then never decoded, which is how these tests see what was decoded.

use std::path::Path;
use std::sync::Arc;

use crate::sluice;

fn write(dir: &Path, name: &str, text: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

/// The rows of every file in `dir`, as `(id, n2)`, sorted.
fn pairs(dir: &Path) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    for f in std::fs::read_dir(dir).unwrap() {
        for line in std::fs::read_to_string(f.unwrap().path()).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            out.push((v["id"].as_i64().unwrap(), v["n2"].as_i64().unwrap()));
        }
    }
    out.sort();
    out
}

const SCHEMA: &str = "{ id: bigint, name: string, n: bigint, junk: bigint }";

/// A spec reading `source` into `transform` (or straight into the sink) with `on_error: fail`.
fn spec(dir: &Path, source: &str, transform: Option<&str>) -> String {
    let out = dir.join("out");
    let (transforms, input) = match transform {
        Some(t) => (format!("transforms:\n  t: {{ {t} }}\n"), "t"),
        None => (String::new(), "src"),
    };
    let text = format!(
        "version: 1\nname: p\nsources:\n  src: {{ {source}, schema: {SCHEMA}, on_error: fail }}\n{transforms}sinks:\n  out: {{ connector: file, input: {input}, path: \"{}\", format: jsonl }}\n",
        out.display()
    );
    write(dir, "spec.yaml", text.as_bytes())
}

/// Row 2's `junk` is not a number: a bad record when `junk` is decoded.
fn check(dir: &Path, source: &str, format: &str) {
    let select = "type: select, input: src, columns: { id: id, n2: \"n * 2\" }";
    let query = "type: sql, input: src, query: \"SELECT id, n * 2 AS n2 FROM src WHERE n > 0\"";
    for transform in [select, query] {
        let spec = spec(dir, source, Some(transform));
        let plan = sluice(&["plan", &spec]);
        let text = String::from_utf8_lossy(&plan.stdout);
        assert!(text.contains("decodes only id, n "), "{format}: {text}");
        let out = sluice(&["run", "--quiet", &spec]);
        assert!(out.status.success(), "{format}, {transform}: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(pairs(&dir.join("out")), vec![(1, 20), (2, 40), (3, 60)], "{format}, {transform}");
        std::fs::remove_dir_all(dir.join("out")).unwrap();
    }
    // A sink reads every column: the same file now has a bad record.
    let spec = spec(dir, source, None);
    let plan = String::from_utf8_lossy(&sluice(&["plan", &spec]).stdout).into_owned();
    assert!(!plan.contains("decodes only"), "{plan}");
    let out = sluice(&["run", "--quiet", &spec]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{format}: {err}");
    assert!(err.contains("abc"), "{format}: {err}");
}

#[test]
fn json_lines_sources_decode_only_what_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let data = write(
        dir.path(),
        "in.jsonl",
        b"{\"id\": 1, \"name\": \"a\", \"n\": 10, \"junk\": 5}\n{\"id\": 2, \"name\": \"b\", \"n\": 20, \"junk\": \"abc\"}\n{\"id\": 3, \"n\": 30}\n",
    );
    check(dir.path(), &format!("connector: file, path: \"{data}\", format: jsonl"), "jsonl");
}

#[test]
fn csv_sources_decode_only_what_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let data = write(dir.path(), "in.csv", b"id,name,n,junk\n1,a,10,5\n2,\"b,\"\"c\"\"\",20,abc\n3,,30,\n");
    check(dir.path(), &format!("connector: file, path: \"{data}\", format: csv"), "csv");
}

#[test]
fn parquet_sources_read_only_what_is_read() {
    use arrow::array::{ArrayRef, Int64Array, StringArray};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.parquet");
    // `junk` is text in the file: row 2 does not convert to the declared bigint.
    let batch = arrow::record_batch::RecordBatch::try_from_iter([
        ("id", Arc::new(Int64Array::from(vec![1, 2, 3])) as ArrayRef),
        ("name", Arc::new(StringArray::from(vec![Some("a"), Some("b"), None])) as ArrayRef),
        ("n", Arc::new(Int64Array::from(vec![10, 20, 30])) as ArrayRef),
        ("junk", Arc::new(StringArray::from(vec![Some("5"), Some("abc"), None])) as ArrayRef),
    ])
    .unwrap();
    let mut w =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    check(dir.path(), &format!("connector: file, path: \"{}\", format: parquet", path.display()), "parquet");
}

#[test]
fn a_source_always_decodes_its_event_time_and_non_nullable_columns() {
    let dir = tempfile::tempdir().unwrap();
    let spec = format!(
        "version: 1\nname: p\nsources:\n  src: {{ connector: file, path: \"{}/in.jsonl\", format: jsonl, schema: {{ id: bigint, name: string, n: {{ type: bigint, nullable: false }}, ts: timestamp }}, event_time: {{ column: ts }} }}\ntransforms:\n  t: {{ type: select, input: src, columns: {{ id: id }} }}\nsinks:\n  out: {{ connector: blackhole, input: t }}\n",
        dir.path().display()
    );
    let spec = write(dir.path(), "spec.yaml", spec.as_bytes());
    let out = sluice(&["plan", "--format", "json", &spec]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let src = plan["operators"].as_array().unwrap().iter().find(|o| o["id"] == "src").unwrap();
    assert_eq!(src["reads"], serde_json::json!(["id", "n", "ts"]));
}

/// A Parquet file of 5 row groups of 100 rows: `id` and `n` count 0..500, `ts` is one second
/// per row, and `code` is text declared as bigint, with `abc` (a bad record if read) at id 50.
fn grouped_parquet(dir: &Path) -> String {
    use arrow::array::{ArrayRef, Int64Array, StringArray, TimestampMillisecondArray};
    let path = dir.join("groups.parquet");
    let ids: Vec<i64> = (0..500).collect();
    let codes: Vec<String> = ids.iter().map(|i| if *i == 50 { "abc".into() } else { (i % 7).to_string() }).collect();
    let batch = arrow::record_batch::RecordBatch::try_from_iter([
        ("id", Arc::new(Int64Array::from(ids.clone())) as ArrayRef),
        ("n", Arc::new(Int64Array::from(ids.clone())) as ArrayRef),
        ("code", Arc::new(StringArray::from(codes)) as ArrayRef),
        (
            "ts",
            Arc::new(TimestampMillisecondArray::from_iter_values(ids.iter().map(|i| 1_767_225_600_000 + i * 1000)))
                as ArrayRef,
        ),
    ])
    .unwrap();
    let props = parquet::file::properties::WriterProperties::builder().set_max_row_group_row_count(Some(100)).build();
    let mut w =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), batch.schema(), Some(props))
            .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    path.to_string_lossy().into_owned()
}

/// Runs `spec` through the library, returning the rows sink `out` got and the source's
/// skipped row groups.
fn run_captured(spec: &str) -> (Vec<serde_json::Map<String, serde_json::Value>>, u64) {
    use sluice::runtime::{JobOptions, run_job};
    let report = sluice::spec::validate_text(
        Path::new("p.yaml"),
        spec,
        sluice::spec::loader::Syntax::Yaml,
        &sluice::spec::Options::default(),
    );
    let v = report.validated.unwrap_or_else(|| panic!("{:?}", report.diagnostics));
    let result = run_job(&v, JobOptions { capture_sinks: true, ..JobOptions::default() }).expect("job runs");
    let rows = result.captured["out"].iter().flat_map(sluice::testing::rows_of).collect();
    let skipped = result.stats.iter().find(|s| s.id == "src").unwrap().counters.row_groups_skipped;
    (rows, skipped)
}

#[test]
fn parquet_row_groups_no_consumer_can_use_are_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let data = grouped_parquet(dir.path());
    let source = format!(
        "src: {{ connector: file, path: \"{data}\", format: parquet, schema: {{ id: bigint, n: bigint, code: bigint, ts: timestamp }}, event_time: {{ column: ts }}, on_error: fail }}"
    );
    // Rows with n >= 250 and a key: groups 0 and 1 hold none (group 0 holds the bad `code`).
    let filtered = format!(
        "version: 1\nname: p\nsources:\n  {source}\ntransforms:\n  t: {{ type: filter, input: src, where: \"n >= 250 AND 600 > id\" }}\nsinks:\n  out: {{ connector: blackhole, input: t }}\n"
    );
    let (rows, skipped) = run_captured(&filtered);
    assert_eq!(skipped, 2);
    let mut ids: Vec<i64> = rows.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, (250..500).collect::<Vec<_>>());
    let spec = write(dir.path(), "filtered.yaml", filtered.as_bytes());
    let plan = String::from_utf8_lossy(&sluice(&["plan", &spec]).stdout).into_owned();
    assert!(plan.contains("skips Parquet row groups where none can hold rows with n >= 250 AND id < 600"), "{plan}");

    // The same through sql, into a window: skipped groups still move event time.
    let windowed = format!(
        "version: 1\nname: p\nsources:\n  {source}\ntransforms:\n  t: {{ type: sql, input: src, query: \"SELECT id, ts FROM src WHERE id >= 250\" }}\n  w: {{ type: window_aggregate, input: t, window: {{ type: tumbling, size: 100s }}, aggregates: {{ c: \"count(*)\" }} }}\nsinks:\n  out: {{ connector: blackhole, input: w }}\n"
    );
    let (rows, skipped) = run_captured(&windowed);
    assert_eq!(skipped, 2);
    let mut counts: Vec<i64> = rows.iter().map(|r| r["c"].as_i64().unwrap()).collect();
    counts.sort();
    assert_eq!(counts, vec![50, 100, 100], "windows of 100 s from 250 s on");

    // A consumer without a condition needs every row: nothing is skipped, and the bad value is
    // found.
    let both = format!(
        "version: 1\nname: p\nsources:\n  {source}\ntransforms:\n  t: {{ type: filter, input: src, where: \"n >= 250\" }}\n  u: {{ type: select, input: src, columns: {{ id: id, code: code }} }}\nsinks:\n  out: {{ connector: blackhole, input: t }}\n  all: {{ connector: blackhole, input: u }}\n"
    );
    let spec = write(dir.path(), "both.yaml", both.as_bytes());
    let out = sluice(&["run", "--quiet", &spec]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("row 51") && err.contains("abc"), "{err}");
}

#[test]
fn a_generator_makes_only_the_columns_that_are_read_and_the_results_are_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, transform: &str, input: &str| {
        let out = dir.path().join(name);
        let text = format!(
            "version: 1\nname: {name}\nparallelism: 2\nsources:\n  bids: {{ connector: datagen, nexmark: {{ table: bids }}, count: 20000, seed: 5, event_time: {{ column: date_time, max_out_of_orderness: 1s }} }}\n{transform}sinks:\n  out: {{ connector: file, input: {input}, path: \"{}\", format: jsonl }}\n",
            out.display()
        );
        let spec = write(dir.path(), &format!("{name}.yaml"), text.as_bytes());
        let plan = String::from_utf8_lossy(&sluice(&["plan", &spec]).stdout).into_owned();
        let ran = sluice(&["run", "--quiet", &spec]);
        assert!(ran.status.success(), "{}", String::from_utf8_lossy(&ran.stderr));
        let mut rows: Vec<(i64, i64)> = Vec::new();
        for f in std::fs::read_dir(&out).unwrap() {
            for line in std::fs::read_to_string(f.unwrap().path()).unwrap().lines() {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                rows.push((v["auction"].as_i64().unwrap(), v["price"].as_i64().unwrap()));
            }
        }
        rows.sort();
        (plan, rows)
    };
    let (plan, projected) = run(
        "q2",
        "transforms:\n  q2: { type: sql, input: bids, query: \"SELECT auction, price FROM bids WHERE auction % 7 = 0\" }\n",
        "q2",
    );
    assert!(plan.contains("decodes only auction, price, date_time "), "{plan}");
    // Every column generated, filtered here.
    let (plan, all) = run("all", "", "bids");
    assert!(!plan.contains("decodes only"), "{plan}");
    let expected: Vec<(i64, i64)> = all.into_iter().filter(|(a, _)| a % 7 == 0).collect();
    assert!(!expected.is_empty());
    assert_eq!(projected, expected);
}
