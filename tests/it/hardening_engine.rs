//! Hardening of the engine side: byte-bounded datagen batches, exact comparison and typed
//! given rows in `sluice test`, Flink's session merging at the exact gap, JUnit XML that
//! stays well-formed, and `--update` errors that name the file.

use std::path::Path;
use std::process::Output;

use crate::sluice;

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Rows of 1 MiB strings, the longest the schema allows: 2050 of them in one batch would
/// need more than 2 GiB of string data, which Arrow cannot index (it panicked with "byte
/// array offset overflow"). The value comes from `values` so the run stays fast.
#[test]
fn datagen_rows_of_the_longest_strings_run_in_byte_bounded_batches() {
    let dir = tempfile::tempdir().unwrap();
    let long = "x".repeat(1 << 20);
    let spec = write(
        dir.path(),
        "long.yaml",
        &format!(
            "version: 1\nname: long\nparallelism: 1\nsources:\n  a:\n    connector: datagen\n    count: 2050\n    \
             schema:\n      id: {{ type: bigint, sequence: true }}\n      s: {{ type: string, values: [\"{long}\"] }}\n\
             sinks:\n  out: {{ connector: blackhole, input: a }}\n"
        ),
    );
    let out = sluice(&["run", &spec]);
    let text = text(&out);
    assert_eq!(out.status.code(), Some(0), "{}", &text[..text.len().min(2000)]);
    let sink = text.lines().find(|l| l.starts_with("out ")).unwrap_or_default();
    assert!(sink.split_whitespace().any(|w| w == "2050"), "{text}");
}

const BIGINTS: &str = r#"version: 1
name: numbers
sources:
  a:
    connector: datagen
    schema: { n: bigint, i: int, x: double, ts: timestamp }
sinks:
  out: { connector: blackhole, input: a }
tests:
  - name: integers exactly
    given:
      a:
        - { n: 10000000001, i: 2, x: 0.30000000000000004, ts: "2026-01-01T00:00:00Z" }
    expect:
      out:
        - { n: NEXPECT, i: IEXPECT, x: 0.3 }
"#;

fn run_numbers(n: &str, i: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let spec = write(dir.path(), "n.yaml", &BIGINTS.replace("NEXPECT", n).replace("IEXPECT", i));
    sluice(&["test", &spec])
}

#[test]
fn test_compares_integers_exactly_and_floats_with_tolerance() {
    // Floats within tolerance (0.3 vs 0.30000000000000004), integers equal.
    let ok = run_numbers("10000000001", "2.0");
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok));
    // Off by one in 1e10 is a different integer, not a rounding error.
    let off = run_numbers("10000000000", "2");
    let t = text(&off);
    assert_eq!(off.status.code(), Some(1), "{t}");
    assert!(t.contains("- missing    {\"n\":10000000000"), "{t}");
    // A fraction never equals an integer column's value.
    let frac = run_numbers("10000000001", "1.9999999999");
    let t = text(&frac);
    assert_eq!(frac.status.code(), Some(1), "{t}");
    assert!(t.contains("- missing"), "{t}");
}

const DECIMALS: &str = r#"version: 1
name: d
sources:
  a: { connector: datagen, schema: { n: bigint } }
transforms:
  t: { type: select, input: a, columns: { d: "CAST(n AS DECIMAL(30, 2)) / 100" } }
sinks:
  out: { connector: blackhole, input: t }
tests:
  - name: decimals
    given: { a: [{ n: 150 }] }
    expect: { out: [{ d: DEXPECT }] }
"#;

#[test]
fn test_compares_decimals_exactly_as_numbers() {
    let run = |d: &str| {
        let dir = tempfile::tempdir().unwrap();
        sluice(&["test", &write(dir.path(), "d.yaml", &DECIMALS.replace("DEXPECT", d))])
    };
    let ok = run("1.5");
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok));
    // Within a float tolerance, but not the same decimal.
    let off = run("1.5000000001");
    assert_eq!(off.status.code(), Some(1), "{}", text(&off));
    assert!(text(&off).contains("+ unexpected {\"d\":1.5}"), "{}", text(&off));
}

const GIVEN: &str = r#"version: 1
name: given
sources:
  a:
    connector: datagen
    schema:
      n: bigint
      i: int
      s: { type: string, null_rate: 0.5 }
      ts: timestamp
sinks:
  out: { connector: blackhole, input: a }
tests:
  - name: rows that do not fit
    given:
      a:
        - { n: 1.9, i: 1, s: x, ts: "2026-01-01T00:00:00Z" }
        - { n: 1, i: 3000000000, s: x, ts: "2026-01-01T00:00:00Z" }
        - { n: 1, i: 1, s: x, ts: "yesterday" }
        - { n: null, i: 1, s: null, ts: "2026-01-01T00:00:00Z" }
        - { n: "2.5", i: 1, ts: "2026-01-01T00:00:00Z" }
        - { i: 1, s: x, ts: "2026-01-01T00:00:00Z" }
    expect: {}
"#;

#[test]
fn given_values_that_do_not_fit_their_column_are_located_errors() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write(dir.path(), "g.yaml", GIVEN);
    let out = sluice(&["validate", "--format", "json", &spec]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let found: Vec<(String, String, i64, i64)> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|d| d.get("code").is_some())
        .map(|d| {
            let s = &d["span"];
            let msg = d["message"].as_str().unwrap_or_default().to_string();
            (d["code"].as_str().unwrap().to_string(), msg, s["line"].as_i64().unwrap(), s["column"].as_i64().unwrap())
        })
        .collect();
    let at = |line: i64, col: i64| found.iter().find(|f| f.2 == line && f.3 == col);
    let expect = [
        (17, 16, "1.9 is not a bigint: it has a fraction"),
        (18, 22, "3000000000 is not an int: out of range"),
        (19, 35, "is not a timestamp"),
        (20, 16, "column `n` of `a` cannot be null"),
        (21, 16, "\"2.5\" is not a bigint: it has a fraction"),
        (22, 11, "the row gives no `n`"),
    ];
    for (line, col, msg) in expect {
        let f = at(line, col).unwrap_or_else(|| panic!("nothing at {line}:{col} in {found:#?}"));
        assert_eq!(f.0, "E0314");
        assert!(f.1.contains(msg), "{line}:{col}: {}", f.1);
    }
    // A null in a nullable column is fine.
    assert!(at(20, 32).is_none(), "{found:#?}");
    assert_eq!(found.len(), expect.len(), "{found:#?}");
    // `sluice test` refuses the spec with the same diagnostics, before running anything.
    let t = sluice(&["test", &spec]);
    let t = text(&t);
    assert!(t.contains("g.yaml:17:16") && t.contains("(the spec is invalid)"), "{t}");
}

const SESSIONS: &str = r#"version: 1
name: sessions
sources:
  clicks:
    connector: datagen
    schema: { k: bigint, ts: timestamp }
    event_time: { column: ts }
transforms:
  s:
    type: window_aggregate
    input: clicks
    key: [k]
    window: { type: session, gap: 10s }
    aggregates: { n: "count(*)" }
sinks:
  out: { connector: blackhole, input: s }
tests:
  - name: touching sessions merge
    given:
      clicks:
        # Exactly the gap after the last row: the windows [0, 10) and [10, 20) touch.
        - { k: 1, ts: "2026-01-01T00:00:00Z" }
        - { k: 1, ts: "2026-01-01T00:00:10Z" }
        # 1 ms less than the gap: overlapping.
        - { k: 2, ts: "2026-01-01T00:00:00Z" }
        - { k: 2, ts: "2026-01-01T00:00:09.999Z" }
        # 1 ms more than the gap: two sessions.
        - { k: 3, ts: "2026-01-01T00:00:00Z" }
        - { k: 3, ts: "2026-01-01T00:00:10.001Z" }
        # Two sessions, [0, 10) and [20, 30), bridged by a later row at 10 touching both.
        - { k: 4, ts: "2026-01-01T00:00:00Z" }
        - { k: 4, ts: "2026-01-01T00:00:20Z" }
        - { watermark: "2026-01-01T00:00:05Z" }
        - { k: 4, ts: "2026-01-01T00:00:10Z" }
        - { watermark: "2026-01-01T01:00:00Z" }
    expect:
      out:
        - { k: 1, window_start: "2026-01-01T00:00:00Z", window_end: "2026-01-01T00:00:20Z", n: 2 }
        - { k: 2, window_start: "2026-01-01T00:00:00Z", window_end: "2026-01-01T00:00:19.999Z", n: 2 }
        - { k: 3, window_start: "2026-01-01T00:00:00Z", window_end: "2026-01-01T00:00:10Z", n: 1 }
        - { k: 3, window_start: "2026-01-01T00:00:10.001Z", window_end: "2026-01-01T00:00:20.001Z", n: 1 }
        - { k: 4, window_start: "2026-01-01T00:00:00Z", window_end: "2026-01-01T00:00:30Z", n: 3 }
"#;

#[test]
fn session_windows_merge_at_exactly_the_gap_like_flink() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write(dir.path(), "s.yaml", SESSIONS);
    let out = sluice(&["test", &spec]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[test]
fn junit_stays_well_formed_with_control_characters_in_names() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write(
        dir.path(),
        "j.yaml",
        &BIGINTS
            .replace("integers exactly", "\"bell\\a and escape\\e[31m\"")
            .replace("NEXPECT", "1")
            .replace("IEXPECT", "1"),
    );
    let report = dir.path().join("junit.xml");
    let out = sluice(&["test", &spec, "--junit", report.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let xml = std::fs::read_to_string(&report).unwrap();
    let forbidden = |c: char| (c < ' ' && !matches!(c, '\t' | '\n' | '\r')) || matches!(c, '\u{fffe}' | '\u{ffff}');
    assert!(!xml.chars().any(forbidden), "{xml:?}");
    assert!(xml.contains(r#"<testcase name="bell\u{7} and escape\u{1b}[31m""#), "{xml}");
    assert!(xml.contains("<failure message=\"sink `out`: - missing"), "{xml}");
}

/// `--update` on a spec it cannot write says which file and what failed. As root, file
/// permissions do not stop writes, so the binary runs as `nobody` from a copy it can read.
#[test]
fn update_on_a_read_only_spec_names_the_file() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let spec = write(dir.path(), "ro.yaml", &BIGINTS.replace("NEXPECT", "1").replace("IEXPECT", "1"));
    std::fs::set_permissions(&spec, std::fs::Permissions::from_mode(0o444)).unwrap();
    let mut cmd = if unsafe { libc::geteuid() } == 0 {
        let bin = dir.path().join("sluice");
        std::fs::copy(env!("CARGO_BIN_EXE_sluice"), &bin).unwrap();
        let mut cmd = std::process::Command::new(bin);
        cmd.uid(65534).gid(65534);
        cmd
    } else {
        std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
    };
    let out = cmd.args(["test", "--update", &spec]).current_dir(dir.path()).output().unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(t.contains(&format!("cannot write the updated expectations to {spec}: Permission denied")), "{t}");
    assert!(std::fs::read_to_string(&spec).unwrap().contains("n: 1, i: 1"), "the spec is unchanged");
}

/// A range as wide as the bigint type: its span does not fit an i64, so it used to wrap to
/// one value (or panic in a debug build).
#[test]
fn datagen_ranges_spanning_the_whole_bigint_type_spread_their_values() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    let spec = write(
        dir.path(),
        "wide.yaml",
        &format!(
            "version: 1\nname: wide\nparallelism: 1\nsources:\n  a:\n    connector: datagen\n    count: 200\n    seed: 3\n    \
             schema:\n      n: {{ type: bigint, min: -5000000000000000000, max: 5000000000000000000 }}\n\
             sinks:\n  out: {{ connector: file, input: a, path: \"{}\", format: jsonl }}\n",
            out_dir.display()
        ),
    );
    let out = sluice(&["run", "--quiet", &spec]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let mut values = Vec::new();
    for f in std::fs::read_dir(&out_dir).unwrap() {
        for line in std::fs::read_to_string(f.unwrap().path()).unwrap().lines() {
            let row: serde_json::Value = serde_json::from_str(line).unwrap();
            values.push(row["n"].as_i64().unwrap());
        }
    }
    assert_eq!(values.len(), 200);
    assert!(values.iter().all(|v| (-5_000_000_000_000_000_000..=5_000_000_000_000_000_000).contains(v)));
    assert!(values.iter().any(|v| *v < -1_000_000_000_000_000_000), "{values:?}");
    assert!(values.iter().any(|v| *v > 1_000_000_000_000_000_000), "{values:?}");
}

/// An unbounded `int` sequence that reaches the type's largest value fails the job with a
/// message, rather than wrapping around to negative numbers.
#[test]
fn an_int_sequence_past_its_type_fails_instead_of_wrapping() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    let spec = write(
        dir.path(),
        "seq.yaml",
        &format!(
            "version: 1\nname: seq\nparallelism: 1\nsources:\n  a:\n    connector: datagen\n    \
             schema:\n      n: {{ type: int, sequence: true, min: 2147480000 }}\n\
             sinks:\n  out: {{ connector: file, input: a, path: \"{}\", format: jsonl }}\n",
            out_dir.display()
        ),
    );
    let out = sluice(&["run", "--quiet", &spec]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("column `n`: the sequence passed the largest int"), "{all}");
    for f in std::fs::read_dir(&out_dir).into_iter().flatten() {
        let body = std::fs::read_to_string(f.unwrap().path()).unwrap_or_default();
        assert!(!body.contains("\"n\":-"), "no wrapped values written");
    }
}
