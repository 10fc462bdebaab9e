//! Broken specs: each file's first line says which code its diagnostic carries and where,
//! as `# expect: E0201 11:31`.

use sluice::spec::{self, Options};

use crate::{root, sluice, spec_files};

#[test]
fn every_broken_spec_reports_its_code_at_its_place() {
    let files = spec_files(&root().join("tests/specs/invalid"));
    assert!(files.len() >= 30, "at least 30 broken specs, found {}", files.len());
    let mut failures = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let header = text.lines().next().unwrap_or_default();
        let mut parts = header.strip_prefix("# expect: ").expect("expect header").split_whitespace();
        let code = parts.next().unwrap();
        let (line, col) = parts.next().and_then(|l| l.split_once(':')).expect("line:col");
        let (line, col): (usize, usize) = (line.parse().unwrap(), col.parse().unwrap());
        let report = spec::validate_file(file, &Options::default()).unwrap();
        assert!(report.has_errors(), "{} should be invalid", file.display());
        assert!(report.validated.is_none());
        let found = report
            .diagnostics
            .iter()
            .any(|d| d.code.as_str() == code && d.span.is_some_and(|s| s.line == line && s.column == col));
        if !found {
            let got: Vec<String> = report
                .diagnostics
                .iter()
                .map(|d| {
                    format!(
                        "{} {}:{} {}",
                        d.code,
                        d.span.map_or(0, |s| s.line),
                        d.span.map_or(0, |s| s.column),
                        d.message
                    )
                })
                .collect();
            failures.push(format!("{}: expected {code} at {line}:{col}, got {got:?}", file.display()));
        }
        for d in &report.diagnostics {
            assert!(d.span.is_some(), "{}: diagnostic without location: {d:?}", file.display());
            assert!(!d.message.contains("is not valid under any of the given schemas"), "{}", d.message);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn broken_specs_exit_one_with_file_line_col() {
    let out = sluice(&["validate", "tests/specs/invalid/unknown-input.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("error[E0201]: `ordres` is not a source, transform or side output"), "{text}");
    assert!(text.contains("tests/specs/invalid/unknown-input.yaml:11:31"), "{text}");
    assert!(text.contains("did you mean `orders`?"), "{text}");
    assert!(text.contains("11 │   big: { type: filter, input: ordres, where: \"amount > 10\" }"), "{text}");
}

#[test]
fn new_user_mistakes_say_exactly_what_to_change() {
    let cases = [
        ("unknown-transform-key.yaml", "unknown key `wher` in transform `big`", "did you mean `where`?"),
        ("unknown-input.yaml", "`ordres` is not a source, transform or side output", "did you mean `orders`?"),
        ("unknown-column.yaml", "unknown column `amout`", "did you mean `amount`?"),
        ("unknown-connector.yaml", "unknown connector `datagne`", "did you mean `datagen`?"),
        ("bad-duration.yaml", "`5 seconds` is not a duration", "`10s`"),
    ];
    for (file, message, help) in cases {
        let report = spec::validate_file(&root().join("tests/specs/invalid").join(file), &Options::default()).unwrap();
        let d = &report.diagnostics.iter().find(|d| d.is_error()).unwrap();
        assert!(d.message.contains(message), "{file}: {}", d.message);
        assert!(d.help.as_deref().unwrap_or_default().contains(help), "{file}: {:?}", d.help);
    }
}
