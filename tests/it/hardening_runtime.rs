//! Hardening of the runtime: file sinks sharing a folder, cleanup after a failed run, and
//! `${env:…}` values kept out of every message, log and output.

use std::path::Path;

use crate::sluice_env;

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

/// Two sinks of one job write the same folder at the same moment: each gets its own files,
/// and every row of both arrives whole.
#[test]
fn two_sinks_on_one_folder_keep_every_row_intact() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("in.jsonl");
    let rows = 3000;
    let text: String =
        (0..rows).map(|i| format!("{{\"id\": {i}, \"name\": \"row number {i} with some padding\"}}\n")).collect();
    std::fs::write(&data, text).unwrap();
    let out = dir.path().join("out");
    let spec = dir.path().join("two.yaml");
    std::fs::write(
        &spec,
        format!(
            "version: 1\nname: two-sinks\nsources:\n  s:\n    connector: file\n    path: {}\n    format: jsonl\n    \
             schema: {{ id: bigint, name: string }}\nsinks:\n  a: {{ connector: file, input: s, path: {o}, format: jsonl }}\n  \
             b: {{ connector: file, input: s, path: {o}, format: jsonl }}\n",
            data.display(),
            o = out.display()
        ),
    )
    .unwrap();
    let run = sluice_env(&["run", "-q", spec.to_str().unwrap()], &[]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let names = files(&out);
    assert!(names.iter().all(|n| !n.ends_with(".inprogress")), "{names:?}");
    assert!(names.iter().any(|n| n.contains("-a-")) && names.iter().any(|n| n.contains("-b-")), "{names:?}");
    let mut ids = Vec::new();
    for n in &names {
        for line in std::fs::read_to_string(out.join(n)).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("torn line in {n}: {e}"));
            ids.push(v["id"].as_i64().unwrap());
        }
    }
    ids.sort();
    let expected: Vec<i64> = (0..rows).flat_map(|i| [i, i]).collect();
    assert_eq!(ids, expected, "every row of both sinks, once each");
}

/// A run that fails after its sink opened a file leaves no in-progress file behind.
#[test]
fn a_failed_run_removes_its_in_progress_files() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("in");
    std::fs::create_dir(&data).unwrap();
    // Files are read in name order: the good rows reach the sink before the bad record fails the job.
    std::fs::write(data.join("a.jsonl"), "{\"id\": 1}\n{\"id\": 2}\n").unwrap();
    std::fs::write(data.join("b.jsonl"), "{\"id\": \"three\"}\n").unwrap();
    let out = dir.path().join("out");
    let spec = dir.path().join("fail.yaml");
    std::fs::write(
        &spec,
        format!(
            "version: 1\nname: fails\nsources:\n  s: {{ connector: file, path: {}, format: jsonl, schema: {{ id: bigint }} }}\n\
             sinks:\n  out: {{ connector: file, input: s, path: {}, format: csv }}\n",
            data.display(),
            out.display()
        ),
    )
    .unwrap();
    let run = sluice_env(&["run", "-q", spec.to_str().unwrap()], &[]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("b.jsonl:1"), "the failure is the bad record: {stderr}");
    assert_eq!(files(&out), Vec::<String>::new(), "nothing left in the sink folder");
}
