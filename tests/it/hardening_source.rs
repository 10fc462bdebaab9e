//! The file source never changes data silently: values that do not fit the declared type are
//! bad records in every format, CSV records may span lines, a byte-order mark is not data,
//! and the answer of a bounded job does not depend on how files are dealt to subtasks.

use std::path::Path;

use crate::sluice;

fn write(dir: &Path, name: &str, text: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

/// The JSON rows of every file in `dir`, sorted by their text.
fn rows(dir: &Path) -> Vec<serde_json::Value> {
    let mut files: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let mut rows = Vec::new();
    for f in files {
        for line in std::fs::read_to_string(&f).unwrap().lines() {
            rows.push(serde_json::from_str::<serde_json::Value>(line).unwrap());
        }
    }
    rows.sort_by_key(|r| r.to_string());
    rows
}

/// Runs a one-source spec into a JSON-lines sink `good` (and `rejects` with dead letters);
/// returns (exit code, stderr).
fn run(dir: &Path, source: &str, on_error: &str) -> (Option<i32>, String) {
    let dead = if on_error == "dead_letter" { ", dead_letter: rejected" } else { "" };
    let rejects = if on_error == "dead_letter" {
        format!(
            "  rejects: {{ connector: file, input: rejected, path: \"{}\", format: jsonl }}\n",
            dir.join("rejects").display()
        )
    } else {
        String::new()
    };
    let spec = format!(
        "version: 1\nname: t\nsources:\n  src: {{ {source}, on_error: {on_error}{dead} }}\nsinks:\n  good: {{ connector: file, input: src, path: \"{}\", format: jsonl }}\n{rejects}",
        dir.join("good").display()
    );
    let spec = write(dir, "spec.yaml", spec.as_bytes());
    let out = sluice(&["run", "--quiet", &spec]);
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn ids(dir: &Path) -> Vec<i64> {
    let mut ids: Vec<i64> = rows(&dir.join("good")).iter().map(|r| r["id"].as_i64().unwrap()).collect();
    ids.sort();
    ids
}

#[test]
fn csv_records_may_hold_quoted_line_breaks() {
    let dir = tempfile::tempdir().unwrap();
    let data = write(
        dir.path(),
        "in.csv",
        b"id,note\n1,\"first line\nsecond line\"\n2,\"say \"\"hi\"\"\nagain\"\n3,plain\n4,x,extra\n5,ab\"c\n",
    );
    let source = format!("connector: file, path: \"{data}\", format: csv, schema: {{ id: bigint, note: string }}");
    let (code, err) = run(dir.path(), &source, "fail");
    assert_eq!(code, Some(1), "{err}");
    // Physical lines: the record of id 4 starts on line 7.
    assert!(err.contains("in.csv:7"), "the location counts physical lines: {err}");
    assert!(err.contains("expected 2 fields, found 3"), "{err}");

    let (code, err) = run(dir.path(), &source, "dead_letter");
    assert_eq!(code, Some(0), "{err}");
    let good = rows(&dir.path().join("good"));
    let notes: Vec<&str> = good.iter().map(|r| r["note"].as_str().unwrap()).collect();
    assert_eq!(notes, vec!["first line\nsecond line", "say \"hi\"\nagain", "plain", "ab\"c"]);
    let rejects = rows(&dir.path().join("rejects"));
    assert_eq!(rejects.len(), 1, "{rejects:?}");
    assert_eq!(rejects[0]["raw"], "4,x,extra");
}

#[test]
fn csv_quote_left_open_is_one_bad_record() {
    let dir = tempfile::tempdir().unwrap();
    let data = write(dir.path(), "in.csv", b"id,note\n1,ok\n2,\"never closed\n3,lost\n");
    let source = format!("connector: file, path: \"{data}\", format: csv, schema: {{ id: bigint, note: string }}");
    let (code, err) = run(dir.path(), &source, "fail");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("in.csv:3") && err.contains("not closed"), "{err}");
}

#[test]
fn json_fractions_are_not_integers() {
    let dir = tempfile::tempdir().unwrap();
    let data = write(
        dir.path(),
        "in.jsonl",
        b"{\"id\": 1, \"n\": 1}\n{\"id\": 2, \"n\": 1.5}\n{\"id\": 3, \"n\": -0.9}\n{\"id\": 4, \"n\": 2.0}\n{\"id\": 5, \"n\": 1e3}\n{\"id\": 6, \"n\": 3000000000}\n{\"id\": 7, \"n\": \"8\"}\n",
    );
    let source = format!("connector: file, path: \"{data}\", format: jsonl, schema: {{ id: bigint, n: int }}");
    let (code, err) = run(dir.path(), &source, "fail");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("in.jsonl:2") && err.contains("`1.5` is not a int"), "{err}");

    let (code, err) = run(dir.path(), &source, "skip");
    assert_eq!(code, Some(0), "{err}");
    let good = rows(&dir.path().join("good"));
    let got: Vec<(i64, i64)> = good.iter().map(|r| (r["id"].as_i64().unwrap(), r["n"].as_i64().unwrap())).collect();
    // Whole numbers written as 2.0 or 1e3 are exact and kept; 3000000000 overflows an int.
    assert_eq!(got, vec![(1, 1), (4, 2), (5, 1000), (7, 8)]);
}

#[test]
fn timestamps_outside_the_calendar_are_bad_records() {
    let dir = tempfile::tempdir().unwrap();
    let data = write(
        dir.path(),
        "in.jsonl",
        b"{\"id\": 1, \"ts\": \"2026-01-01T00:00:00Z\"}\n{\"id\": 2, \"ts\": 9000000000000000000}\n{\"id\": 3, \"ts\": 1e20}\n{\"id\": 4, \"ts\": \"+300000-01-01T00:00:00Z\"}\n{\"id\": 5, \"ts\": 1767225600000}\n",
    );
    let source = format!("connector: file, path: \"{data}\", format: jsonl, schema: {{ id: bigint, ts: timestamp }}");
    let (code, err) = run(dir.path(), &source, "dead_letter");
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(ids(dir.path()), vec![1, 5]);
    let text = std::fs::read_dir(dir.path().join("good"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect::<String>();
    assert!(!text.contains("ERROR"), "{text}");
    let rejects = rows(&dir.path().join("rejects"));
    let locations: Vec<&str> = rejects.iter().map(|r| r["location"].as_str().unwrap()).collect();
    assert!(locations.iter().all(|l| l.ends_with(":2") || l.ends_with(":3") || l.ends_with(":4")), "{locations:?}");
    assert_eq!(rejects.len(), 3, "{rejects:?}");

    let csv = write(dir.path(), "in.csv", b"id,ts\n1,2026-01-01T00:00:00Z\n2,9000000000000000000\n");
    let source = format!("connector: file, path: \"{csv}\", format: csv, schema: {{ id: bigint, ts: timestamp }}");
    let (code, err) = run(dir.path(), &source, "fail");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("in.csv:3"), "{err}");
}

#[test]
fn sinks_never_print_an_error_message_as_a_value() {
    let dir = tempfile::tempdir().unwrap();
    let data = write(dir.path(), "in.jsonl", b"{\"id\": 1}\n");
    for sink in [
        format!("{{ connector: file, input: far, path: \"{}\", format: jsonl }}", dir.path().join("out").display()),
        "{ connector: stdout, input: far, format: json }".to_string(),
    ] {
        let spec = format!(
            "version: 1\nname: t\nsources:\n  src: {{ connector: file, path: \"{data}\", format: jsonl, schema: {{ id: bigint }} }}\ntransforms:\n  far: {{ type: select, input: src, columns: {{ id: id, ts: \"to_timestamp_millis(id * 9000000000000000000)\" }} }}\nsinks:\n  out: {sink}\n"
        );
        let spec = write(dir.path(), "spec.yaml", spec.as_bytes());
        let out = sluice(&["run", "--quiet", &spec]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!stdout.contains("ERROR"), "{stdout}");
        assert_eq!(out.status.code(), Some(1), "{sink}: {stdout} {err}");
        assert!(err.contains("cannot print"), "{err}");
        if let Ok(entries) = std::fs::read_dir(dir.path().join("out")) {
            for e in entries {
                let text = std::fs::read_to_string(e.unwrap().path()).unwrap();
                assert!(!text.contains("ERROR"), "{text}");
            }
        }
    }
}

/// Writes `jsonl` to a Parquet file through `sluice run`, with `schema`.
fn to_parquet(dir: &Path, jsonl: &str, schema: &str) -> String {
    let data = write(dir, "p.jsonl", jsonl.as_bytes());
    let out_dir = dir.join("parquet");
    let spec = format!(
        "version: 1\nname: p\nsources:\n  src: {{ connector: file, path: \"{data}\", format: jsonl, schema: {schema} }}\nsinks:\n  out: {{ connector: file, input: src, path: \"{}\", format: parquet }}\n",
        out_dir.display()
    );
    let spec = write(dir, "p.yaml", spec.as_bytes());
    let out = sluice(&["run", "--quiet", &spec]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    out_dir.to_string_lossy().into_owned()
}

#[test]
fn parquet_values_that_do_not_fit_are_bad_records() {
    let dir = tempfile::tempdir().unwrap();
    let parquet = to_parquet(
        dir.path(),
        "{\"id\": 1, \"s\": \"7\", \"f\": 2.0, \"big\": 5, \"t\": \"2026-01-01T00:00:00Z\", \"ms\": 1767225600000}\n\
         {\"id\": 2, \"s\": \"seven\", \"f\": 2.0, \"big\": 5, \"t\": \"2026-01-01T00:00:00Z\", \"ms\": 1767225600000}\n\
         {\"id\": 3, \"s\": \"7\", \"f\": 1.5, \"big\": 5, \"t\": \"2026-01-01T00:00:00Z\", \"ms\": 1767225600000}\n\
         {\"id\": 4, \"s\": \"7\", \"f\": 2.0, \"big\": 3000000000, \"t\": \"2026-01-01T00:00:00Z\", \"ms\": 1767225600000}\n\
         {\"id\": 5, \"s\": \"7\", \"f\": 2.0, \"big\": 5, \"t\": \"soon\", \"ms\": 1767225600000}\n\
         {\"id\": 6, \"s\": \"7\", \"f\": 2.0, \"big\": 5, \"t\": \"2026-01-01T00:00:00Z\", \"ms\": 100000000000000000}\n\
         {\"id\": 7, \"s\": \"7\", \"f\": 2.0, \"big\": 5, \"t\": \"2026-01-01T00:00:00Z\", \"ms\": null}\n",
        "{ id: bigint, s: string, f: double, big: bigint, t: string, ms: bigint }",
    );
    let source = format!(
        "connector: file, path: \"{parquet}\", format: parquet, schema: {{ id: bigint, s: bigint, f: bigint, big: int, t: timestamp, ms: timestamp }}, event_time: {{ column: ms }}"
    );
    let (code, err) = run(dir.path(), &source, "fail");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("row 2") && err.contains("`seven` is not a bigint"), "{err}");

    let (code, err) = run(dir.path(), &source, "dead_letter");
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(ids(dir.path()), vec![1]);
    let good = rows(&dir.path().join("good"));
    assert_eq!(good[0]["s"], 7);
    assert_eq!(good[0]["f"], 2);
    let rejects = rows(&dir.path().join("rejects"));
    assert_eq!(rejects.len(), 6, "{rejects:?}");
    for r in &rejects {
        let raw: serde_json::Value = serde_json::from_str(r["raw"].as_str().unwrap()).unwrap();
        assert!(raw["id"].as_i64().unwrap() > 1, "{r}");
        assert!(r["location"].as_str().unwrap().contains(": row "), "{r}");
    }
}

#[test]
fn a_byte_order_mark_is_not_data() {
    let dir = tempfile::tempdir().unwrap();
    let data = write(dir.path(), "in.jsonl", b"\xEF\xBB\xBF{\"id\": 1}\n{\"id\": 2}\n");
    let source = format!("connector: file, path: \"{data}\", format: jsonl, schema: {{ id: bigint }}");
    let (code, err) = run(dir.path(), &source, "fail");
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(ids(dir.path()), vec![1, 2]);

    let dir = tempfile::tempdir().unwrap();
    let data = write(dir.path(), "in.csv", b"\xEF\xBB\xBF1,a\n2,b\n");
    let source = format!(
        "connector: file, path: \"{data}\", format: csv, csv: {{ header: false }}, schema: {{ id: bigint, s: string }}"
    );
    let (code, err) = run(dir.path(), &source, "fail");
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(ids(dir.path()), vec![1, 2]);
}

#[test]
fn a_csv_header_that_is_not_utf8_does_not_matter() {
    let dir = tempfile::tempdir().unwrap();
    let data = write(dir.path(), "in.csv", b"id,caf\xe9\n1,a\n2,\xff\n");
    let source = format!("connector: file, path: \"{data}\", format: csv, schema: {{ id: bigint, s: string }}");
    let (code, err) = run(dir.path(), &source, "fail");
    // The header's names are not used; a record that is not UTF-8 is a bad record, located.
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("in.csv:3"), "{err}");
    let (code, err) = run(dir.path(), &source, "skip");
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(ids(dir.path()), vec![1]);
}

#[test]
fn many_bad_lines_are_found_and_good_ones_kept() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::new();
    let mut want = Vec::new();
    for i in 0..20_000 {
        match i % 97 {
            13 => text.push_str("not json\n"),
            41 => text.push_str(&format!("{{\"id\": {i}.5}}\n")),
            _ => {
                text.push_str(&format!("{{\"id\": {i}}}\n"));
                want.push(i);
            }
        }
    }
    let data = write(dir.path(), "in.jsonl", text.as_bytes());
    let source = format!("connector: file, path: \"{data}\", format: jsonl, schema: {{ id: bigint }}");
    let (code, err) = run(dir.path(), &source, "skip");
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(ids(dir.path()), want);
}

#[test]
fn files_spanning_the_same_hours_give_the_same_windows_at_any_parallelism() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    for f in 0..3 {
        let mut text = String::new();
        for m in 0..60 {
            text.push_str(&format!("{{\"server\": {f}, \"ts\": \"2026-01-01T00:{m:02}:30Z\"}}\n"));
        }
        std::fs::write(input.join(format!("server-{f}.jsonl")), text).unwrap();
    }
    let mut results = Vec::new();
    for p in [1, 2] {
        let out = dir.path().join(format!("out{p}"));
        let spec = format!(
            "version: 1\nname: w\nparallelism: {p}\nsources:\n  logs: {{ connector: file, path: \"{}\", format: jsonl, schema: {{ server: bigint, ts: timestamp }}, event_time: {{ column: ts }} }}\ntransforms:\n  w: {{ type: window_aggregate, input: logs, window: {{ type: tumbling, size: 10m }}, aggregates: {{ n: \"count(*)\" }} }}\nsinks:\n  out: {{ connector: file, input: w, path: \"{}\", format: jsonl }}\n",
            input.display(),
            out.display()
        );
        let spec = write(dir.path(), "spec.yaml", spec.as_bytes());
        let run = sluice(&["run", "--quiet", &spec]);
        assert_eq!(run.status.code(), Some(0), "{}", String::from_utf8_lossy(&run.stderr));
        let rows = rows(&out);
        let counts: Vec<i64> = rows.iter().map(|r| r["n"].as_i64().unwrap()).collect();
        assert_eq!(counts, vec![30; 6], "parallelism {p}: every row in its window: {rows:?}");
        results.push(rows);
    }
    assert_eq!(results[0], results[1]);
}

/// (id, note) of every row in `good`, by id.
fn notes(dir: &Path) -> Vec<(i64, String)> {
    let mut rows: Vec<(i64, String)> = rows(&dir.join("good"))
        .iter()
        .map(|r| (r["id"].as_i64().unwrap(), r["note"].as_str().unwrap().to_string()))
        .collect();
    rows.sort();
    rows
}

#[test]
fn csv_records_spanning_lines_at_chunk_boundaries_stay_whole() {
    // Chunks hold 8192 records: records 8192 and 16384 each end a chunk, and span lines.
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("id,note\n");
    let mut want = Vec::new();
    for i in 1..=20_000i64 {
        let note = if (8188..=8196).contains(&i) || (16380..=16388).contains(&i) {
            format!("line {i}\nnext \"{i}\"\n,end")
        } else {
            format!("n{i}")
        };
        text.push_str(&format!("{i},\"{}\"\n", note.replace('"', "\"\"")));
        want.push((i, note));
    }
    let data = write(dir.path(), "in.csv", text.as_bytes());
    let source = format!("connector: file, path: \"{data}\", format: csv, schema: {{ id: bigint, note: string }}");
    let (code, err) = run(dir.path(), &source, "fail");
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(notes(dir.path()), want);
}

#[test]
fn an_unclosed_quote_is_cut_at_the_record_limit() {
    const MAX: usize = 8 << 20;
    let dir = tempfile::tempdir().unwrap();
    let mut text = b"id,note\n1,ok\n".to_vec();
    let record = text.len();
    text.extend_from_slice(b"2,\"oops\n");
    // Equal lines after the open quote; the record is cut in the line that crosses the limit,
    // and reading resumes with the next line.
    let mut first_good = None;
    let last = 700_000;
    for i in 3..=last {
        text.extend_from_slice(format!("{i:07},fine\n").as_bytes());
        if first_good.is_none() && text.len() - record > MAX {
            first_good = Some(i + 1);
        }
    }
    let first_good = first_good.unwrap();
    let data = write(dir.path(), "in.csv", &text);
    let source = format!("connector: file, path: \"{data}\", format: csv, schema: {{ id: bigint, note: string }}");
    let (code, err) = run(dir.path(), &source, "fail");
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("in.csv:3") && err.contains("a quoted field runs past 8388608 bytes; is a quote unclosed?"),
        "{err}"
    );

    let (code, err) = run(dir.path(), &source, "dead_letter");
    assert_eq!(code, Some(0), "{err}");
    let want: Vec<i64> = std::iter::once(1).chain(first_good..=last).collect();
    assert_eq!(ids(dir.path()), want);
    let rejects = rows(&dir.path().join("rejects"));
    assert_eq!(rejects.len(), 1);
    assert!(rejects[0]["location"].as_str().unwrap().ends_with("in.csv:3"), "{}", rejects[0]["location"]);

    // A JSON line longer than the limit is one bad record too.
    let dir = tempfile::tempdir().unwrap();
    let long = format!("{{\"id\": 1}}\n{{\"id\": 2, \"pad\": \"{}\"}}\n{{\"id\": 3}}\n", "x".repeat(MAX));
    let data = write(dir.path(), "in.jsonl", long.as_bytes());
    let source = format!("connector: file, path: \"{data}\", format: jsonl, schema: {{ id: bigint }}");
    let (code, err) = run(dir.path(), &source, "fail");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("in.jsonl:2") && err.contains("longer than 8388608 bytes"), "{err}");
    let (code, err) = run(dir.path(), &source, "skip");
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(ids(dir.path()), vec![1, 3]);
}

#[test]
fn json_lines_hold_one_value_each() {
    let dir = tempfile::tempdir().unwrap();
    let data = write(dir.path(), "in.jsonl", b"{\"id\":1}{\"id\":2}\n{\"id\":\n3}\n{\"id\":4}\n");
    let source = format!("connector: file, path: \"{data}\", format: jsonl, schema: {{ id: bigint }}");
    let (code, err) = run(dir.path(), &source, "dead_letter");
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(ids(dir.path()), vec![4]);
    let rejects = rows(&dir.path().join("rejects"));
    let mut got: Vec<(&str, &str)> =
        rejects.iter().map(|r| (r["location"].as_str().unwrap(), r["raw"].as_str().unwrap())).collect();
    got.sort();
    let at = |n: u32| format!("{data}:{n}");
    let (one, two, three) = (at(1), at(2), at(3));
    assert_eq!(got, vec![(one.as_str(), "{\"id\":1}{\"id\":2}"), (two.as_str(), "{\"id\":"), (three.as_str(), "3}")]);
    assert!(rejects.iter().any(|r| r["error"] == "expected one record on the line, found 2"), "{rejects:?}");
}

#[test]
fn json_lines_are_strict_json_decoded_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = Vec::new();
    // Good: escapes, a surrogate pair, unknown nested values, a key given twice, spacing.
    text.extend_from_slice(
        b"{\"id\": 1, \"note\": \"tab\\there \\\"q\\\" \\u00e9 \\ud83d\\ude00\", \"x\": {\"y\": [1, {\"z\": null}]}}\n",
    );
    text.extend_from_slice(b"  { \"note\" : \"last wins\" , \"id\":2 , \"note\": \"won\" }  \r\n");
    text.extend_from_slice(b"{\"id\": 3, \"note\": 2.50, \"extra\": [[[]]]}\n");
    // Bad: a missing comma, a lone surrogate, a leading zero, invalid UTF-8, a value where an
    // object should be, an unclosed list in an unknown key.
    text.extend_from_slice(b"{\"id\": 4 \"note\": \"x\"}\n");
    text.extend_from_slice(b"{\"id\": 5, \"note\": \"\\ud800\"}\n");
    text.extend_from_slice(b"{\"id\": 06}\n");
    text.extend_from_slice(b"{\"id\": 7, \"note\": \"\xff\"}\n");
    text.extend_from_slice(b"[8]\n");
    text.extend_from_slice(b"{\"id\": 9, \"x\": [1, 2}\n");
    text.extend_from_slice(b"{\"id\": 10}\n");
    let data = write(dir.path(), "in.jsonl", &text);
    let source = format!("connector: file, path: \"{data}\", format: jsonl, schema: {{ id: bigint, note: string }}");
    let (code, err) = run(dir.path(), &source, "dead_letter");
    assert_eq!(code, Some(0), "{err}");
    let good = rows(&dir.path().join("good"));
    let good: Vec<(i64, Option<&str>)> = good.iter().map(|r| (r["id"].as_i64().unwrap(), r["note"].as_str())).collect();
    let mut good = good;
    good.sort();
    assert_eq!(good, vec![(1, Some("tab\there \"q\" é 😀")), (2, Some("won")), (3, Some("2.50")), (10, None)]);
    let rejects = rows(&dir.path().join("rejects"));
    let mut got: Vec<(String, String)> = rejects
        .iter()
        .map(|r| {
            (
                r["location"].as_str().unwrap().rsplit(':').next().unwrap().to_string(),
                r["error"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    got.sort_by_key(|g| g.0.parse::<u32>().unwrap());
    let want = [
        ("4", "expected `,` or `}` at byte 10, found `\"`"),
        ("5", "unpaired UTF-16 surrogate"),
        ("6", "`06` at byte 8 is not a JSON number"),
        ("7", "the line is not UTF-8 (byte 20)"),
        ("8", "expected a JSON object at byte 1, found `[`"),
        ("9", "expected `,` or `]` at byte 21, found `}`"),
    ];
    assert_eq!(got.len(), want.len(), "{got:?}");
    for ((line, error), (want_line, want_error)) in got.iter().zip(want) {
        assert_eq!(line, want_line, "{got:?}");
        assert!(error.contains(want_error), "line {line}: {error}");
    }
}

#[test]
fn many_files_stay_within_the_open_file_limit() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    for f in 0..120 {
        let text: String =
            (0..10).map(|m| format!("{{\"server\": {f}, \"ts\": \"2026-01-01T00:0{m}:30Z\"}}\n")).collect();
        std::fs::write(input.join(format!("server-{f:03}.jsonl")), text).unwrap();
    }
    let out = dir.path().join("out");
    let spec = format!(
        "version: 1\nname: w\nparallelism: 2\nsources:\n  logs: {{ connector: file, path: \"{}\", format: jsonl, schema: {{ server: bigint, ts: timestamp }}, event_time: {{ column: ts }} }}\ntransforms:\n  w: {{ type: window_aggregate, input: logs, window: {{ type: tumbling, size: 5m }}, aggregates: {{ n: \"count(*)\" }} }}\nsinks:\n  out: {{ connector: file, input: w, path: \"{}\", format: jsonl }}\n",
        input.display(),
        out.display()
    );
    let spec = write(dir.path(), "spec.yaml", spec.as_bytes());
    // 120 files over 2 subtasks would be 120 open files at once, more than this limit.
    let run = std::process::Command::new("sh")
        .args(["-c", "ulimit -n 96 && exec \"$0\" \"$@\"", env!("CARGO_BIN_EXE_sluice"), "run", "--quiet", &spec])
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(0), "{}", String::from_utf8_lossy(&run.stderr));
    let counts: Vec<i64> = rows(&out).iter().map(|r| r["n"].as_i64().unwrap()).collect();
    assert_eq!(counts, vec![600, 600]);
}

#[test]
fn dry_run_never_prints_an_error_message_as_a_value() {
    let dir = tempfile::tempdir().unwrap();
    let data = write(dir.path(), "in.jsonl", b"{\"id\": 1}\n");
    let spec = format!(
        "version: 1\nname: t\nsources:\n  src: {{ connector: file, path: \"{data}\", format: jsonl, schema: {{ id: bigint }} }}\ntransforms:\n  far: {{ type: select, input: src, columns: {{ id: id, ts: \"to_timestamp_millis(id * 9000000000000000000)\" }} }}\nsinks:\n  out: {{ connector: stdout, input: far }}\n"
    );
    let spec = write(dir.path(), "spec.yaml", spec.as_bytes());
    let out = sluice(&["run", "--quiet", "--dry-run", &spec]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!stdout.contains("ERROR"), "{stdout}");
    assert_eq!(out.status.code(), Some(1), "{stdout} {err}");
    assert!(err.contains("sink `out`") && err.contains("column `ts` row 1: cannot print"), "{err}");
}

#[test]
fn parquet_conversions_that_would_round_are_bad_records() {
    use std::sync::Arc;

    use arrow::array::{
        ArrayRef, Decimal128Array, DictionaryArray, Float64Array, Int64Array, LargeStringArray, StringViewArray,
    };
    use arrow::datatypes::Int32Type;
    use arrow::record_batch::RecordBatch;

    let dir = tempfile::tempdir().unwrap();
    let n = 7;
    let id: ArrayRef = Arc::new(Int64Array::from_iter_values(1..=n));
    // Each row from the second has one value that does not convert exactly.
    let bad = |row: i64, good: &'static str, bad: &'static str| {
        (1..=n).map(|i| if i == row { bad } else { good }).collect::<Vec<_>>()
    };
    let d: ArrayRef = Arc::new(
        Decimal128Array::from_iter_values((1..=n).map(|i| if i == 2 { 150 } else { 100 }))
            .with_precision_and_scale(6, 2)
            .unwrap(),
    );
    let f: ArrayRef = Arc::new(Float64Array::from_iter_values((1..=n).map(|i| match i {
        3 => 1e300,
        4 => 0.1,
        _ => 0.5,
    })));
    let big: ArrayRef = Arc::new(Int64Array::from_iter_values((1..=n).map(|i| if i == 5 { (1 << 53) + 1 } else { 5 })));
    let ls: ArrayRef = Arc::new(LargeStringArray::from(bad(6, "7.0", "7.5")));
    let vs: ArrayRef = Arc::new(StringViewArray::from(bad(7, "1767225600000", "soon")));
    let dict: ArrayRef = Arc::new((1..=n).map(|_| "7.0").collect::<DictionaryArray<Int32Type>>());
    let batch = RecordBatch::try_from_iter([
        ("id", id),
        ("d", d),
        ("f", f),
        ("big", big),
        ("ls", ls),
        ("vs", vs),
        ("dict", dict),
    ])
    .unwrap();
    let path = dir.path().join("in.parquet");
    let mut w =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();

    let source = format!(
        "connector: file, path: \"{}\", format: parquet, schema: {{ id: bigint, d: bigint, f: float, big: double, ls: bigint, vs: timestamp, dict: bigint }}",
        path.display()
    );
    let (code, err) = run(dir.path(), &source, "dead_letter");
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(ids(dir.path()), vec![1]);
    let good = rows(&dir.path().join("good"));
    assert_eq!(
        (&good[0]["d"], &good[0]["f"], &good[0]["big"], &good[0]["ls"]),
        (&1.into(), &0.5.into(), &5.0.into(), &7.into())
    );
    assert!(good[0]["vs"].as_str().unwrap().starts_with("2026-01-01T00:00:00"), "{}", good[0]);
    assert_eq!(good[0]["dict"], 7);
    let rejects = rows(&dir.path().join("rejects"));
    let mut locations: Vec<&str> = rejects.iter().map(|r| r["location"].as_str().unwrap()).collect();
    locations.sort();
    let want: Vec<String> = (2..=n).map(|r| format!("{}: row {r}", path.display())).collect();
    assert_eq!(locations, want, "{rejects:?}");
    let errors: Vec<&str> = rejects.iter().map(|r| r["error"].as_str().unwrap()).collect();
    assert!(errors.contains(&"column `d`: `1.50` is not a bigint"), "{errors:?}");
    assert!(errors.contains(&"column `big`: `9007199254740993` is not a double"), "{errors:?}");
}

#[test]
fn a_csv_header_with_an_unclosed_quote_fails() {
    // Otherwise the header would swallow every record of the file.
    let dir = tempfile::tempdir().unwrap();
    let data = write(dir.path(), "in.csv", b"id,\"note\n1,a\n2,b\n");
    let source = format!("connector: file, path: \"{data}\", format: csv, schema: {{ id: bigint, note: string }}");
    let (code, err) = run(dir.path(), &source, "skip");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("in.csv") && err.contains("header is not closed"), "{err}");
}
