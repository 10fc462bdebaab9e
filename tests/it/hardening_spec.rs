//! Hostile specs: each must be refused with a located message (or run correctly), never crash
//! the process, hang, or be silently accepted.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::root;

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

/// Runs `sluice` as a child that is killed after `limit`; returns its output, how long it
/// took, and whether it had to be killed. A crash shows as a failed assertion, not a dead test.
fn sluice_within(args: &[&str], limit: Duration) -> (Output, Duration, bool) {
    let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .current_dir(root())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sluice runs");
    let pid = child.id() as libc::pid_t;
    let start = Instant::now();
    // Output is collected on another thread, so a child filling its pipes cannot stall.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output().expect("output")));
    match rx.recv_timeout(limit) {
        Ok(out) => (out, start.elapsed(), false),
        Err(_) => {
            // SAFETY: `pid` is our child, not yet reaped (its output is still awaited).
            unsafe { libc::kill(pid, libc::SIGKILL) };
            (rx.recv().expect("output after kill"), start.elapsed(), true)
        }
    }
}

/// `file:line:col` of the first `needle` in `spec`, the column counted in characters.
fn place(file: &str, spec: &str, needle: &str) -> String {
    let at = spec.find(needle).unwrap_or_else(|| panic!("`{needle}` not in the spec"));
    let line = spec[..at].matches('\n').count() + 1;
    let line_start = spec[..at].rfind('\n').map_or(0, |i| i + 1);
    format!("{file}:{line}:{}", spec[line_start..at].chars().count() + 1)
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Asserts a refusal: exit 1 within `limit`, with `message` and `place` (file:line:col) shown.
fn assert_refused(args: &[&str], limit: Duration, message: &str, place: &str) {
    let (out, took, killed) = sluice_within(args, limit);
    let all = text(&out);
    assert!(!killed, "{args:?} still running after {limit:?}");
    assert_eq!(out.status.code(), Some(1), "{args:?} ended with {:?}: {all}", out.status);
    assert!(all.contains(message), "{args:?}: no `{message}` in:\n{all}");
    assert!(all.contains(place), "{args:?}: not located at `{place}`:\n{all}");
    assert!(took < limit, "{args:?} took {took:?}");
}

const PIPELINE_TAIL: &str = "sources:
  s: { connector: datagen, count: 3, schema: { x: bigint } }
sinks:
  o: { connector: blackhole, input: s }
";

#[test]
fn an_alias_bomb_is_refused_by_validate_plan_and_run() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = String::from("version: 1\nname: bomb\na1: &a1 [x, x, x, x, x, x, x, x, x]\n");
    for i in 2..=9 {
        let items = vec![format!("*a{}", i - 1); 9].join(", ");
        spec.push_str(&format!("a{i}: &a{i} [{items}]\n"));
    }
    spec.push_str(PIPELINE_TAIL);
    assert!(spec.len() < 700);
    let path = write(dir.path(), "bomb.yaml", &spec);
    // a6 is the first level whose copies pass the limit; the error points at its first alias.
    for cmd in ["validate", "plan", "run"] {
        assert_refused(&[cmd, &path], Duration::from_secs(10), "aliases expand to more than", "bomb.yaml:8:10");
    }
}

#[test]
fn aliases_within_the_limit_still_work() {
    let dir = tempfile::tempdir().unwrap();
    let spec = "version: 1\nname: ok\nsources:\n  s: { connector: datagen, count: 3, schema: &cols { x: bigint, y: bigint } }\n  t: { connector: datagen, count: 3, schema: *cols }\ntransforms:\n  u: { type: union, inputs: [s, t] }\nsinks:\n  o: { connector: blackhole, input: u }\n";
    let path = write(dir.path(), "ok.yaml", spec);
    let (out, _, _) = sluice_within(&["validate", &path], Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

fn filter_spec(condition: &str) -> String {
    format!(
        "version: 1\nname: long\nsources:\n  s: {{ connector: datagen, count: 1, schema: {{ x: bigint }} }}\ntransforms:\n  f: {{ type: filter, input: s, where: \"{condition}\" }}\nsinks:\n  o: {{ connector: blackhole, input: f }}\n"
    )
}

#[test]
fn long_expressions_are_refused_not_overflowing_the_stack() {
    let dir = tempfile::tempdir().unwrap();
    let limit = Duration::from_secs(10);
    // 10,000 chained `+` and 16,000 `OR` terms used to abort with a stack overflow.
    let plus = write(dir.path(), "plus.yaml", &filter_spec(&(vec!["x"; 10_000].join(" + ") + " > 0")));
    // The 501st operator: `where: "` starts at column 40, each `x + ` is 4 characters.
    assert_refused(
        &["validate", &plus],
        limit,
        "error[E0315]: the expression has more than 500 operators",
        "plus.yaml:6:2042",
    );
    assert_refused(&["run", &plus], limit, "has more than 500 operators", "plus.yaml:6:2042");
    let or = write(dir.path(), "or.yaml", &filter_spec(&vec!["x > 0"; 16_000].join(" OR ")));
    assert_refused(&["validate", &or], limit, "has more than 500 operators", "or.yaml:6:");
    // Deep nesting is refused the same way, in `select` and `sql` too.
    let deep = format!("{}x{}", "(".repeat(200), ")".repeat(200));
    let nested = write(
        dir.path(),
        "nested.yaml",
        &format!(
            "version: 1\nname: n\nsources:\n  s: {{ connector: datagen, count: 1, schema: {{ x: bigint }} }}\ntransforms:\n  p: {{ type: select, input: s, columns: {{ y: \"{deep}\" }} }}\n  q: {{ type: sql, input: p, query: \"SELECT {deep} AS z FROM p\" }}\nsinks:\n  o: {{ connector: blackhole, input: q }}\n"
        ),
    );
    let (out, _, killed) = sluice_within(&["validate", &nested], limit);
    let all = text(&out);
    assert!(!killed && out.status.code() == Some(1), "{all}");
    assert_eq!(all.matches("nested more than 32 levels deep").count(), 1, "{all}");
}

#[test]
fn the_runtime_compiler_refuses_long_expressions_too() {
    use arrow::datatypes::{DataType, Field, Schema};
    let schema = std::sync::Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)]));
    let compiler = sluice::runtime::expr::Compiler::default();
    let long = vec!["x"; 600].join(" + ") + " > 0";
    let err = compiler.filter(&long, "s", &schema).err().expect("refused");
    assert!(err.to_string().contains("more than 500 operators"), "{err}");
    let query = format!("SELECT {} AS y FROM s", vec!["x"; 600].join(" + "));
    assert!(compiler.query(&query, "s", &schema).is_err());
    assert!(compiler.filter("x + x > 0", "s", &schema).is_ok());
}

#[test]
fn unicode_spaces_in_multi_line_scalars_are_located_not_panicking() {
    let dir = tempfile::tempdir().unwrap();
    for space in ['\u{3000}', '\u{a0}'] {
        let spec = format!(
            "version: 1\nname: u\nsources:\n  s: {{ connector: datagen, count: 1, schema: {{ x: bigint }} }}\ntransforms:\n  f:\n    type: filter\n    input: s\n    where: x > 1 AND\n       x > 0 AND\n      {space}amout > 2\nsinks:\n  o: {{ connector: blackhole, input: f }}\n"
        );
        let path = write(dir.path(), "u.yaml", &spec);
        // Line 11 is six spaces, the Unicode space (content, not indentation), then `amout`.
        assert_refused(&["validate", &path], Duration::from_secs(10), "unknown column `amout`", "u.yaml:11:8");
    }
}

fn window_spec(window: &str, extra: &str) -> String {
    format!(
        "version: 1\nname: w\nsources:\n  s: {{ connector: datagen, count: 1, schema: {{ k: bigint, ts: timestamp }}, event_time: {{ column: ts }} }}\ntransforms:\n  w:\n    type: window_aggregate\n    input: s\n    key: [k]\n    window: {window}\n{extra}    aggregates: {{ n: \"count(*)\" }}\nsinks:\n  o: {{ connector: blackhole, input: w }}\n"
    )
}

#[test]
fn windows_that_would_explode_per_row_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let limit = Duration::from_secs(10);
    let cases = [
        ("{ type: hopping, size: 1d, slide: 1ms }", "", "every row in 86400000 windows; at most 1000", "1ms"),
        ("{ type: hopping, size: 106751991167d, slide: 1d }", "", "longer than the longest", "106751991167d"),
        ("{ type: tumbling, size: 106751991167d }", "", "longer than the longest", "106751991167d"),
        ("{ type: session, gap: 40000d }", "", "longer than the longest", "40000d"),
        ("{ type: tumbling, size: 1m }", "    allowed_lateness: 106751991167d\n", "allowed lateness", "106751991167d"),
    ];
    for (window, extra, message, at) in cases {
        let spec = window_spec(window, extra);
        let path = write(dir.path(), "w.yaml", &spec);
        assert_refused(&["validate", &path], limit, message, &place("w.yaml", &spec, at));
        assert_refused(&["run", &path], limit, message, &place("w.yaml", &spec, at));
    }
    // 1000 windows per row is the limit, and it runs.
    let path = write(dir.path(), "w.yaml", &window_spec("{ type: hopping, size: 1000s, slide: 1s }", ""));
    let (out, _, killed) = sluice_within(&["run", "--quiet", &path], Duration::from_secs(20));
    assert!(!killed && out.status.success(), "{}", text(&out));
}

#[test]
fn plan_of_a_long_chain_is_not_quadratic() {
    let dir = tempfile::tempdir().unwrap();
    let n = 12_000;
    let mut spec = String::from(
        "version: 1\nname: chain\nsources:\n  s: { connector: datagen, count: 1, schema: { x: bigint } }\ntransforms:\n",
    );
    let mut prev = "s".to_string();
    for i in 0..n {
        spec.push_str(&format!("  t{i}: {{ type: filter, input: {prev}, where: \"x > 0\" }}\n"));
        prev = format!("t{i}");
    }
    spec.push_str(&format!("sinks:\n  o: {{ connector: blackhole, input: {prev} }}\n"));
    let path = write(dir.path(), "chain.yaml", &spec);
    let report = sluice::spec::validate_file(Path::new(&path), &Default::default()).unwrap();
    let validated = report.validated.expect("valid");
    let start = Instant::now();
    let plan = sluice::plan::build(&validated);
    let text = plan.render(sluice::plan::PlanFormat::Text);
    let took = start.elapsed();
    assert_eq!(plan.tasks.len(), 1, "one chain");
    assert_eq!(plan.tasks[0].operators.len(), n + 2);
    assert!(text.contains(&format!("t{} [transform filter]", n - 1)));
    // Quadratic, 12,000 operators took about 16 s in a debug build; linear, tens of
    // milliseconds. The bound leaves a loaded CI machine a hundredfold margin.
    assert!(took < Duration::from_secs(5), "plan took {took:?}");
}

#[test]
#[cfg(unix)]
fn validating_a_folder_with_a_symlink_cycle_ends() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    write(dir.path(), "a.yaml", &format!("version: 1\nname: a\n{PIPELINE_TAIL}"));
    std::os::unix::fs::symlink(dir.path(), dir.path().join("sub/loop")).unwrap();
    std::os::unix::fs::symlink("../sub", dir.path().join("sub/again")).unwrap();
    let folder = dir.path().to_string_lossy().into_owned();
    let (out, _, killed) = sluice_within(&["validate", &folder], Duration::from_secs(10));
    let all = text(&out);
    assert!(!killed, "still walking: {all}");
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(all.contains("checked 1 file: 0 errors"), "{all}");
}

fn sql_spec(query: &str) -> String {
    format!(
        "version: 1\nname: q\nsources:\n  s: {{ connector: datagen, count: 5, schema: {{ x: {{ type: bigint, sequence: true }}, y: bigint }} }}\ntransforms:\n  q:\n    type: sql\n    input: s\n    query: \"{query}\"\nsinks:\n  o: {{ connector: stdout, input: q }}\n"
    )
}

#[test]
fn sql_validates_only_what_runs() {
    let dir = tempfile::tempdir().unwrap();
    let limit = Duration::from_secs(20);
    let refused = [
        ("SELECT x FROM s WHERE x IN (SELECT y FROM s)", "subqueries"),
        ("SELECT x, (SELECT max(y) FROM s) AS m FROM s", "cannot run"),
        ("SELECT x FROM s WHERE EXISTS (SELECT 1 FROM s)", "cannot run"),
        ("SELECT * FROM (VALUES (1, 2)) AS v(x, y)", "cannot run VALUES"),
        ("SELECT value AS x FROM generate_series(1, 3)", "reads only its input `s`"),
        ("SELECT 1 AS x", "cannot run a query without FROM"),
    ];
    for (query, message) in refused {
        let path = write(dir.path(), "q.yaml", &sql_spec(query));
        assert_refused(&["validate", &path], limit, message, "q.yaml:9:12");
        assert!(text(&sluice_within(&["validate", &path], limit).0).contains("E0304"));
    }
    // A condition the optimizer proves false runs, and emits nothing.
    let path = write(dir.path(), "q.yaml", &sql_spec("SELECT x FROM s WHERE 1 = 0"));
    let (out, _, killed) = sluice_within(&["run", "--quiet", &path], limit);
    assert!(!killed && out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "");
    // And a plain stateless query still runs.
    let path = write(dir.path(), "q.yaml", &sql_spec("SELECT x * 2 AS d FROM s WHERE x > 2"));
    let (out, _, _) = sluice_within(&["run", "--quiet", &path], limit);
    assert!(out.status.success(), "{}", text(&out));
    let mut rows: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect();
    rows.sort();
    assert_eq!(rows, ["{\"d\":6}", "{\"d\":8}"]);
}

#[test]
fn toml_nan_and_inf_are_errors_at_the_value() {
    let dir = tempfile::tempdir().unwrap();
    let spec = "version = 1\nname = \"t\"\nparallelism = nan\n[checkpoints]\ninterval = \"10s\"\nstorage = \"file://x\"\ntimeout = inf\n[sources.s]\nconnector = \"datagen\"\nschema = { x = \"bigint\" }\n[sinks.o]\nconnector = \"blackhole\"\ninput = \"s\"\n";
    let path = write(dir.path(), "t.toml", spec);
    let limit = Duration::from_secs(10);
    assert_refused(&["validate", &path], limit, "the value is not a number (`nan`)", "t.toml:3:15");
    assert_refused(&["validate", &path], limit, "the value is infinite", "t.toml:7:11");
}

#[test]
fn spec_values_that_were_silently_accepted_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let limit = Duration::from_secs(10);
    // Each case: the spec, the message, and the text the error must point at.
    let check = |name: &str, spec: &str, message: &str, at: &str| {
        let path = write(dir.path(), name, spec);
        assert_refused(&["validate", &path], limit, message, &place(name, spec, at));
    };
    check(
        "p.yaml",
        &format!("version: 1\nname: p\nparallelism: 8\nmax_parallelism: 4\n{PIPELINE_TAIL}"),
        "parallelism 8 is more than `max_parallelism` (4)",
        "8",
    );
    check(
        "k.yaml",
        &window_spec("{ type: tumbling, size: 1m }", "").replace("key: [k]", "key: [k, k]"),
        "key column `k` is listed twice",
        "k]",
    );
    let datagen = |column: &str| {
        format!(
            "version: 1\nname: d\nsources:\n  s:\n    connector: datagen\n    count: 3\n    schema:\n      c: {column}\nsinks:\n  o: {{ connector: blackhole, input: s }}\n"
        )
    };
    check("d1.yaml", &datagen("{ type: int, min: 0, max: 3000000000 }"), "outside the range of int", "3000000000");
    check("d2.yaml", &datagen("{ type: int, min: -3000000000 }"), "outside the range of int", "-3000000000");
    check(
        "d3.yaml",
        &datagen("{ type: bigint, max: 10000000000000000000 }"),
        "beyond the largest bigint",
        "10000000000000000000",
    );
    check("d4.yaml", &datagen("{ type: int, values: [1, two, 3] }"), "value \"two\" must be a number", "two");
    check("d5.yaml", &datagen("{ type: string, values: [a, 7] }"), "value 7 is not a string", "7");
    check("d6.yaml", &datagen("{ type: int, values: [1.5] }"), "must be a whole number", "1.5");
    check(
        "d7.yaml",
        &datagen("{ type: timestamp, min: \"2026-02-01T00:00:00Z\", max: \"2026-01-01T00:00:00Z\" }"),
        "is larger than `max`",
        "\"2026-02",
    );
    check(
        "d8.yaml",
        &datagen("{ type: int, sequence: true, min: 2147483000 }").replace("count: 3", "count: 1000"),
        "passes the largest int",
        "true",
    );
    let file_source = |csv: &str| {
        format!(
            "version: 1\nname: f\nsources:\n  s: {{ connector: file, path: in.csv, format: csv, schema: {{ x: bigint }}, csv: {csv} }}\nsinks:\n  o: {{ connector: blackhole, input: s }}\n"
        )
    };
    check("c.yaml", &file_source("{ delimiter: \"§\" }"), "is not one ASCII character", "\"§\"");
    let bucket = |pattern: &str| {
        format!(
            "version: 1\nname: b\nsources:\n  s: {{ connector: datagen, count: 3, schema: {{ ts: timestamp }}, event_time: {{ column: ts }} }}\nsinks:\n  o: {{ connector: file, input: s, path: out, format: jsonl, bucket: \"{pattern}\" }}\n"
        )
    };
    check("b1.yaml", &bucket("../escaped/%Y"), "names folders outside the sink's `path`", "\"../");
    check("b2.yaml", &bucket("dt=%Y/../../x"), "names folders outside", "\"dt=");
    check("b3.yaml", &bucket("/tmp/%Y"), "names folders outside", "\"/tmp");
}

#[test]
fn file_references_are_bounded_and_regular_files_only() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.txt");
    std::fs::write(&big, vec![b'a'; (1 << 20) + 10]).unwrap();
    let limit = Duration::from_secs(10);
    for (target, message) in
        [("/dev/zero", "is not a regular file"), (big.to_str().unwrap(), "is larger than 1024 KiB")]
    {
        let spec = format!(
            "version: 1\nname: r\nsources:\n  s: {{ connector: file, path: \"${{file:{target}}}\", format: csv, schema: {{ x: bigint }} }}\nsinks:\n  o: {{ connector: blackhole, input: s }}\n"
        );
        let path = write(dir.path(), "r.yaml", &spec);
        let (out, took, killed) = sluice_within(&["run", "--quiet", &path], limit);
        let all = text(&out);
        assert!(!killed, "run still reading after {took:?}");
        assert_eq!(out.status.code(), Some(1), "{all}");
        assert!(all.contains(&format!("`${{file:{target}}}`")) && all.contains(message), "{all}");
        assert!(!all.contains("aaaa"), "the value is never printed: {all}");
        let (out, _, _) = sluice_within(&["validate", "--env", &path], limit);
        assert!(text(&out).contains(message), "{}", text(&out));
    }
}
