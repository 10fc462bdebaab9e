//! The engine end to end through `sluice run` and `sluice test`: files in and out, bad
//! records, dry runs, Ctrl-C, and the examples' own tests.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{root, sluice};

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

fn read_lines(dir: &Path) -> Vec<serde_json::Value> {
    let mut files: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let mut rows = Vec::new();
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        assert!(!name.ends_with(".inprogress"), "unfinished file left behind: {name}");
        for line in std::fs::read_to_string(&f).unwrap().lines() {
            rows.push(serde_json::from_str(line).unwrap());
        }
    }
    rows
}

fn bad_records_spec(dir: &Path, on_error: &str) -> String {
    let data = dir.join("in.jsonl");
    std::fs::write(
        &data,
        "{\"id\": 1, \"amount\": 10.5, \"ts\": \"2026-01-01T00:00:01Z\"}\n\
         {\"id\": \"two\", \"amount\": 3, \"ts\": \"2026-01-01T00:00:02Z\"}\n\
         {\"id\": 3, \"amount\": 7, \"ts\": \"2026-01-01T00:00:03Z\"}\n\
         not json at all\n\
         {\"id\": 5, \"amount\": 1, \"ts\": null}\n\
         {\"id\": 6, \"amount\": 2, \"ts\": \"2026-01-01T00:00:06Z\"}\n\
         {\"id\": 7, \"amount\": 2, \"ts\": \"2026-01-01T00:00:07Z\"} {\"id\": 8, \"amount\": 2}\n",
    )
    .unwrap();
    let dead = if on_error == "dead_letter" { "dead_letter: rejected" } else { "" };
    let dead_sink = if on_error == "dead_letter" {
        format!(
            "  rejects: {{ connector: file, input: rejected, path: \"{}\", format: jsonl }}",
            dir.join("rejects").display()
        )
    } else {
        String::new()
    };
    let spec = format!(
        r#"version: 1
name: bad-records
sources:
  payments:
    connector: file
    path: "{data}"
    format: jsonl
    schema: {{ id: bigint, amount: double, ts: timestamp }}
    event_time: {{ column: ts }}
    on_error: {on_error}
    {dead}
sinks:
  good: {{ connector: file, input: payments, path: "{good}", format: jsonl }}
{dead_sink}
"#,
        data = data.display(),
        good = dir.join("good").display()
    );
    write(dir, "spec.yaml", &spec)
}

#[test]
fn bad_records_fail_the_job_with_file_line_and_record() {
    let dir = tempfile::tempdir().unwrap();
    let spec = bad_records_spec(dir.path(), "fail");
    let out = sluice(&["run", "--quiet", &spec]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("operator `payments` (subtask 0) failed"), "{err}");
    assert!(err.contains("in.jsonl:2"), "names file and line: {err}");
    assert!(err.contains("\"two\""), "shows the record: {err}");
}

#[test]
fn bad_records_can_be_skipped_or_dead_lettered() {
    let dir = tempfile::tempdir().unwrap();
    let spec = bad_records_spec(dir.path(), "skip");
    let out = sluice(&["run", &spec]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let ids: Vec<i64> = read_lines(&dir.path().join("good")).iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, vec![1, 3, 6]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.lines().any(|l| l.starts_with("payments") && l.split_whitespace().nth(4) == Some("4")), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let spec = bad_records_spec(dir.path(), "dead_letter");
    let out = sluice(&["run", "--quiet", &spec]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(read_lines(&dir.path().join("good")).len(), 3);
    let rejects = read_lines(&dir.path().join("rejects"));
    assert_eq!(rejects.len(), 4);
    assert!(rejects.iter().any(|r| r["error"] == "expected one record on the line, found 2"), "{rejects:?}");
    let raws: Vec<&str> = rejects.iter().map(|r| r["raw"].as_str().unwrap()).collect();
    assert!(raws.contains(&"not json at all"), "{raws:?}");
    assert!(rejects.iter().all(|r| r["source"] == "payments" && !r["error"].as_str().unwrap().is_empty()));
    let locations: Vec<&str> = rejects.iter().map(|r| r["location"].as_str().unwrap()).collect();
    assert!(locations.iter().any(|l| l.ends_with("in.jsonl:5")), "{locations:?}");
}

#[test]
fn missing_input_files_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write(
        dir.path(),
        "s.yaml",
        "version: 1\nname: t\nsources:\n  a: { connector: file, path: /no/such/dir/*.csv, format: csv, schema: { x: bigint } }\nsinks:\n  o: { connector: blackhole, input: a }\n",
    );
    let out = sluice(&["run", &spec]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no files match `/no/such/dir/*.csv`"));
}

#[test]
fn csv_in_windows_out_as_parquet_buckets() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(root().join("pipelines/orders.yaml"))
        .unwrap()
        .replace("path: pipelines/data/orders*.csv", &format!("path: {}/pipelines/data/orders*.csv", root().display()))
        .replace("path: ./.sluice/archive/", &format!("path: {}/archive/", dir.path().display()))
        .replace("file://./.sluice/checkpoints/orders", &format!("file://{}/checkpoints", dir.path().display()));
    let spec = write(dir.path(), "orders.yaml", &text);
    let out = sluice(&["run", "--quiet", &spec]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let buckets: Vec<String> = std::fs::read_dir(dir.path().join("archive/dt=2026-01-01"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(buckets.contains(&"hour=00".to_string()) && buckets.contains(&"hour=02".to_string()), "{buckets:?}");
    // Read the Parquet files back and add up the totals.
    let mut total = 0.0;
    for hour in std::fs::read_dir(dir.path().join("archive/dt=2026-01-01")).unwrap() {
        for f in std::fs::read_dir(hour.unwrap().path()).unwrap() {
            let file = std::fs::File::open(f.unwrap().path()).unwrap();
            let reader =
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap();
            for b in reader {
                for row in sluice::testing::rows_of(&b.unwrap()) {
                    total += row["total"].as_f64().unwrap();
                }
            }
        }
    }
    // Orders above 100 in pipelines/data/orders.csv.
    assert!((total - (150.0 + 310.5 + 120.0 + 450.0 + 101.0 + 700.0)).abs() < 1e-9, "{total}");
}

#[test]
fn dry_run_prints_what_sinks_would_receive() {
    let out = sluice(&["run", "--dry-run", "--quiet", "pipelines/currency.toml"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("── sink `converted` would receive 10000 rows"), "{text}");
    assert!(text.contains("── sink `show` would receive"), "{text}");
}

#[test]
fn dry_run_writes_nothing_where_a_real_run_writes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let spec = write(
        dir.path(),
        "files.yaml",
        &format!(
            "version: 1\nname: files\nsources:\n  g: {{ connector: datagen, count: 100, schema: {{ x: bigint }} }}\nsinks:\n  out: {{ connector: file, input: g, path: \"{}\", format: jsonl }}\n",
            out.display()
        ),
    );
    let dry = sluice(&["run", "--dry-run", "--quiet", &spec]);
    assert_eq!(dry.status.code(), Some(0), "{}", String::from_utf8_lossy(&dry.stderr));
    assert!(String::from_utf8_lossy(&dry.stdout).contains("── sink `out` would receive 100 rows"));
    assert!(!out.exists(), "a dry run creates no sink folder");
    // The same spec run for real creates it, so the check above can fail.
    let real = sluice(&["run", "--quiet", &spec]);
    assert_eq!(real.status.code(), Some(0), "{}", String::from_utf8_lossy(&real.stderr));
    assert!(out.is_dir());
}

#[test]
fn ctrl_c_stops_cleanly_and_finishes_files() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write(
        dir.path(),
        "endless.yaml",
        &format!(
            "version: 1\nname: endless\nsources:\n  g: {{ connector: datagen, rows_per_second: 2000, schema: {{ x: bigint, ts: timestamp }}, event_time: {{ column: ts }} }}\nsinks:\n  out: {{ connector: file, input: g, path: \"{}\", format: jsonl }}\n",
            dir.path().join("out").display()
        ),
    );
    let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["run", &spec])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let started = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(started.elapsed() < Duration::from_secs(10), "stopping took too long");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("endless stopped in"), "{err}");
    let rows = read_lines(&dir.path().join("out"));
    assert!(rows.len() > 500, "rows written before the stop are flushed: {}", rows.len());
}

#[test]
fn examples_pass_their_tests() {
    let out = sluice(&["test", "pipelines/"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("6 passed, 0 failed"), "{text}");
}

#[test]
fn failing_tests_show_a_diff_and_update_rewrites_them() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(root().join("pipelines/quickstart.yaml"))
        .unwrap()
        .replace("total: 400.0", "total: 401.0");
    let spec = write(dir.path(), "q.yaml", &text);
    let junit = dir.path().join("junit.xml");
    let out = sluice(&["test", &spec, "--junit", &junit.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("- missing    {\"customer_id\":7"), "{stdout}");
    assert!(stdout.contains("\"total\":401.0"), "{stdout}");
    assert!(stdout.contains("+ unexpected {\"customer_id\":7"), "{stdout}");
    assert!(stdout.contains("0 passed, 1 failed"), "{stdout}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("failures=\"1\"") && xml.contains("<failure message="), "{xml}");

    let out = sluice(&["test", "--update", &spec]);
    assert_eq!(out.status.code(), Some(0));
    let updated = std::fs::read_to_string(&spec).unwrap();
    assert!(updated.contains("total: 400.0"), "{updated}");
    assert!(updated.starts_with("# yaml-language-server"), "the rest of the file is kept");
    let out = sluice(&["test", &spec]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn stdout_sink_prints_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write(
        dir.path(),
        "p.yaml",
        "version: 1\nname: p\nsources:\n  g: { connector: datagen, count: 5, seed: 1, schema: { n: { type: bigint, sequence: true } } }\nsinks:\n  out: { connector: stdout, input: g }\n",
    );
    let out = sluice(&["run", "--quiet", &spec]);
    assert_eq!(out.status.code(), Some(0));
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let mut ns: Vec<i64> = lines.iter().map(|l| l["n"].as_i64().unwrap()).collect();
    ns.sort();
    assert_eq!(ns, vec![0, 1, 2, 3, 4]);
}

#[test]
fn file_sink_rolls_by_size() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write(
        dir.path(),
        "roll.yaml",
        &format!(
            "version: 1\nname: roll\nsources:\n  g: {{ connector: datagen, count: 20000, seed: 3, schema: {{ x: bigint, s: {{ type: string, length: 40 }} }} }}\nsinks:\n  out: {{ connector: file, input: g, path: \"{}\", format: csv, rolling: {{ max_size: 100KB }} }}\n",
            dir.path().join("out").display()
        ),
    );
    let out = sluice(&["run", "--quiet", &spec]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let files: Vec<_> = std::fs::read_dir(dir.path().join("out")).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(files.len() >= 5, "about 1 MB in files of about 100 KB: {}", files.len());
    let mut rows = 0;
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        assert!(text.starts_with("x,s\n"), "each CSV file has its header");
        rows += text.lines().count() - 1;
        assert!(std::fs::metadata(f).unwrap().len() < 400_000, "rolled near the limit");
    }
    assert_eq!(rows, 20000);
}

#[test]
fn an_idle_input_does_not_hold_back_windows_and_watched_folders_pick_up_new_files() {
    let dir = tempfile::tempdir().unwrap();
    let incoming = dir.path().join("incoming");
    std::fs::create_dir_all(&incoming).unwrap();
    let spec = write(
        dir.path(),
        "idle.yaml",
        &format!(
            r#"version: 1
name: idle
sources:
  live:
    connector: datagen
    rows_per_second: 1000
    schema: {{ n: bigint, ts: {{ type: timestamp, min: "2026-01-01T00:00:00Z" }} }}
    event_time: {{ column: ts }}
  files:
    connector: file
    path: "{incoming}"
    format: jsonl
    watch: true
    schema: {{ n: bigint, ts: timestamp }}
    event_time: {{ column: ts, idle_timeout: 300ms }}
transforms:
  files_again: {{ type: select, input: files, parallelism: 2, columns: {{ n: n, ts: ts }} }}
  both: {{ type: union, inputs: [live, files_again] }}
  per_100ms: {{ type: window_aggregate, input: both, window: {{ type: tumbling, size: 100ms }}, aggregates: {{ rows: "count(*)" }} }}
sinks:
  counts: {{ connector: file, input: per_100ms, path: "{counts}", format: jsonl }}
  copied: {{ connector: file, input: files, path: "{copied}", format: jsonl }}
"#,
            incoming = incoming.display(),
            counts = dir.path().join("counts").display(),
            copied = dir.path().join("copied").display(),
        ),
    );
    let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["run", "--quiet", &spec])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    std::fs::write(incoming.join("late-arrival.jsonl"), "{\"n\": 42, \"ts\": \"2026-01-01T00:00:00.500Z\"}\n").unwrap();
    std::thread::sleep(Duration::from_millis(3000));
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let counts = read_lines(&dir.path().join("counts"));
    assert!(counts.len() >= 5, "windows fired while `files` was idle: {}", counts.len());
    let copied = read_lines(&dir.path().join("copied"));
    assert_eq!(copied.len(), 1, "the new file was picked up");
    assert_eq!(copied[0]["n"], 42);
}

#[test]
fn files_are_dealt_to_subtasks_once_each() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let mut expected = 0;
    for f in 0..5 {
        let rows: String = (0..(100 + f * 37)).map(|i| format!("{{\"n\": {i}}}\n")).collect();
        expected += 100 + f * 37;
        std::fs::write(data.join(format!("part-{f}.jsonl")), rows).unwrap();
    }
    std::fs::write(data.join(".hidden.jsonl"), "{\"n\": 1}\n").unwrap();
    let spec = write(
        dir.path(),
        "split.yaml",
        &format!(
            "version: 1\nname: split\nparallelism: 3\nsources:\n  f: {{ connector: file, path: \"{}\", format: jsonl, schema: {{ n: bigint }} }}\nsinks:\n  out: {{ connector: file, input: f, path: \"{}\", format: jsonl }}\n",
            data.display(),
            dir.path().join("out").display()
        ),
    );
    let out = sluice(&["run", "--quiet", &spec]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(read_lines(&dir.path().join("out")).len(), expected);
}

#[test]
fn a_sink_that_cannot_open_stops_the_job_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write(
        dir.path(),
        "s3.yaml",
        "version: 1\nname: s3\nsources:\n  g: { connector: datagen, rows_per_second: 10, schema: { x: bigint } }\nsinks:\n  out: { connector: file, input: g, path: \"s3://bucket/out/\", format: jsonl, s3: { endpoint: \"http://127.0.0.1:1\", access_key_id: k, secret_access_key: s } }\n",
    );
    let started = Instant::now();
    let out = sluice(&["run", &spec]);
    assert_eq!(out.status.code(), Some(1));
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("operator `out`"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn extreme_event_times_do_not_break_windows() {
    use arrow::array::{Array, Int64Array};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("x.jsonl");
    std::fs::write(
        &data,
        // The calendar's ends (later or earlier event times are bad records at the source).
        format!(
            "{{\"k\": 1, \"ts\": {}}}\n{{\"k\": 1, \"ts\": {}}}\n{{\"k\": 1, \"ts\": 0}}\n",
            chrono::DateTime::<chrono::Utc>::MAX_UTC.timestamp_millis(),
            chrono::DateTime::<chrono::Utc>::MIN_UTC.timestamp_millis()
        ),
    )
    .unwrap();
    // Every record is counted in each window it belongs to: one tumbling window, six hopping
    // ones (1h every 10m), one session.
    for (window, expected) in [
        ("{ type: tumbling, size: 1h }", 3),
        ("{ type: hopping, size: 1h, slide: 10m }", 18),
        ("{ type: session, gap: 1h }", 3),
    ] {
        let spec = format!(
            "version: 1\nname: x\nsources:\n  f: {{ connector: file, path: \"{}\", format: jsonl, schema: {{ k: bigint, ts: timestamp }}, event_time: {{ column: ts }} }}\ntransforms:\n  w: {{ type: window_aggregate, input: f, key: [k], window: {window}, allowed_lateness: 1d, aggregates: {{ n: \"count(*)\" }} }}\nsinks:\n  out: {{ connector: blackhole, input: w }}\n",
            data.display()
        );
        let report = sluice::spec::validate_text(
            Path::new("x.yaml"),
            &spec,
            sluice::spec::loader::Syntax::Yaml,
            &sluice::spec::Options::default(),
        );
        let v = report.validated.expect("valid spec");
        let options = sluice::runtime::JobOptions { capture_sinks: true, ..Default::default() };
        let result = sluice::runtime::run_job(&v, options).unwrap_or_else(|e| panic!("{window}: {e}"));
        let counted: i64 = result.captured["out"]
            .iter()
            .map(|b| {
                let n = b.column_by_name("n").expect("n").as_any().downcast_ref::<Int64Array>().expect("count");
                n.iter().flatten().sum::<i64>()
            })
            .sum();
        assert_eq!(counted, expected, "{window}");
    }
}

#[test]
fn time_rolling_closes_files_while_input_is_quiet() {
    let dir = tempfile::tempdir().unwrap();
    let incoming = dir.path().join("in");
    std::fs::create_dir_all(&incoming).unwrap();
    std::fs::write(incoming.join("a.jsonl"), "{\"n\": 1}\n{\"n\": 2}\n").unwrap();
    let out_dir = dir.path().join("out");
    let spec = write(
        dir.path(),
        "quiet.yaml",
        &format!(
            "version: 1\nname: quiet\nsources:\n  f: {{ connector: file, path: \"{}\", format: jsonl, watch: true, schema: {{ n: bigint }} }}\nsinks:\n  out: {{ connector: file, input: f, path: \"{}\", format: jsonl, rolling: {{ interval: 1s }} }}\n",
            incoming.display(),
            out_dir.display()
        ),
    );
    let child = Command::new(env!("CARGO_BIN_EXE_sluice")).args(["run", "--quiet", &spec]).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(3500));
    let finished: Vec<String> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait_with_output().unwrap().status;
    assert_eq!(status.code(), Some(0));
    assert_eq!(finished.len(), 1, "the file was closed by its interval while the job ran: {finished:?}");
}

#[test]
fn datagen_rows_do_not_depend_on_parallelism() {
    let dir = tempfile::tempdir().unwrap();
    let mut runs = Vec::new();
    for p in [1, 3] {
        let out = dir.path().join(format!("out{p}"));
        let spec = write(
            dir.path(),
            &format!("g{p}.yaml"),
            &format!(
                "version: 1\nname: g\nparallelism: {p}\nsources:\n  g:\n    connector: datagen\n    count: 1000\n    seed: 9\n    schema:\n      id: {{ type: bigint, sequence: true, min: 1 }}\n      v: {{ type: int, min: -5, max: 5 }}\n      s: {{ type: string, values: [a, b, c], null_rate: 0.2 }}\n      ts: {{ type: timestamp, min: \"2026-01-01T00:00:00Z\", max: \"2026-01-01T00:16:40Z\" }}\nsinks:\n  out: {{ connector: file, input: g, path: \"{}\", format: jsonl }}\n",
                out.display()
            ),
        );
        let res = sluice(&["run", "--quiet", &spec]);
        assert_eq!(res.status.code(), Some(0), "{}", String::from_utf8_lossy(&res.stderr));
        let mut rows: Vec<String> = read_lines(&out).iter().map(|r| r.to_string()).collect();
        rows.sort();
        runs.push(rows);
    }
    assert_eq!(runs[0].len(), 1000);
    assert_eq!(runs[0], runs[1], "the same seed gives the same rows at parallelism 1 and 3");
    let rows: Vec<serde_json::Value> = runs[0].iter().map(|r| serde_json::from_str(r).unwrap()).collect();
    assert!(rows.iter().all(|r| (-5..=5).contains(&r["v"].as_i64().unwrap())));
    let nulls = rows.iter().filter(|r| r.get("s").is_none_or(|s| s.is_null())).count();
    assert!((100..300).contains(&nulls), "about 20% nulls: {nulls}");
    assert!(rows.iter().filter_map(|r| r["s"].as_str()).all(|s| ["a", "b", "c"].contains(&s)));
    let last = rows.iter().find(|r| r["id"] == 1000).unwrap();
    assert_eq!(last["ts"], "2026-01-01T00:16:39Z", "{last}");
}
