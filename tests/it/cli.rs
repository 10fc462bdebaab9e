//! The command line: exit codes, output formats, warnings and references.

use crate::{sluice, sluice_env};

fn write_spec(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

const UNUSED_SOURCE: &str = "version: 1
name: t
sources:
  a: { connector: datagen, schema: { x: bigint } }
  b: { connector: datagen, schema: { x: bigint } }
sinks:
  out: { connector: blackhole, input: a }
";

const WITH_SECRET: &str = "version: 1
name: t
sources:
  a: { connector: file, path: \"${env:SLUICE_IT_SECRET}\", format: csv, schema: { x: bigint } }
sinks:
  out: { connector: blackhole, input: a }
";

#[test]
fn usage_and_io_errors_exit_two() {
    assert_eq!(sluice(&["validate"]).status.code(), Some(2));
    assert_eq!(sluice(&["validate", "--frobnicate", "pipelines"]).status.code(), Some(2));
    let missing = sluice(&["validate", "no/such/spec.yaml"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no/such/spec.yaml"));
    assert_eq!(sluice(&["validate", "README.md"]).status.code(), Some(2));
    assert_eq!(sluice(&["plan", "no/such/spec.yaml"]).status.code(), Some(2));
}

#[test]
fn warnings_pass_unless_denied() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(&dir, "w.yaml", UNUSED_SOURCE);
    let out = sluice(&["validate", &spec]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("warning[W0203]: source `b` is not read by any transform or sink"), "{text}");
    assert_eq!(sluice(&["validate", "--deny-warnings", &spec]).status.code(), Some(1));
}

#[test]
fn json_and_github_formats() {
    let out = sluice(&["validate", "--format", "json", "tests/specs/invalid/unknown-column.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    let first: serde_json::Value =
        serde_json::from_str(String::from_utf8(out.stdout).unwrap().lines().next().unwrap()).unwrap();
    assert_eq!(first["code"], "E0300");
    assert_eq!(first["severity"], "error");
    assert_eq!(first["span"]["line"], 11);
    assert_eq!(first["span"]["column"], 47);
    assert_eq!(first["pointer"], "/transforms/big/where");
    assert_eq!(first["file"], "tests/specs/invalid/unknown-column.yaml");

    let out = sluice(&["validate", "--format", "github", "tests/specs/invalid/unknown-column.yaml"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with("::error file=tests/specs/invalid/unknown-column.yaml,line=11,col=47,title=sluice E0300::E0300: unknown column `amout`"),
        "{text}"
    );
}

#[test]
fn references_are_listed_not_resolved_unless_asked_and_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(&dir, "s.yaml", WITH_SECRET);
    let out = sluice(&["validate", &spec]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("${env:SLUICE_IT_SECRET} at "), "{text}");

    let out = sluice(&["validate", "--env", &spec]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("error[E0206]: environment variable `SLUICE_IT_SECRET` is not set"), "{text}");

    let secret = "hunter2-very-secret";
    let out = sluice_env(&["validate", "--env", "--format", "json", &spec], &[("SLUICE_IT_SECRET", secret)]);
    assert_eq!(out.status.code(), Some(0));
    let plan = sluice_env(&["plan", "--format", "json", &spec], &[("SLUICE_IT_SECRET", secret)]);
    for o in [&out, &plan] {
        assert!(!String::from_utf8_lossy(&o.stdout).contains(secret));
        assert!(!String::from_utf8_lossy(&o.stderr).contains(secret));
    }
}

#[test]
fn plan_of_an_invalid_spec_shows_why_and_exits_one() {
    let out = sluice(&["plan", "tests/specs/invalid/cycle.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8(out.stdout).unwrap().contains("E0202"));
}

#[test]
fn folders_are_searched_recursively() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
    std::fs::write(dir.path().join("a/b/one.yml"), UNUSED_SOURCE).unwrap();
    std::fs::write(dir.path().join("a/notes.txt"), "not a spec").unwrap();
    let out = sluice(&["validate", &dir.path().to_string_lossy()]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8(out.stdout).unwrap().contains("checked 1 file"));
}
