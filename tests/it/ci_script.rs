//! `ci/sluice-ci.sh` checks only the specs a change touches, and annotates their errors.

use std::path::Path;
use std::process::Command;

use crate::root;

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn checks_changed_specs_only_with_annotations() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path();
    std::fs::create_dir_all(repo.join("pipelines")).unwrap();
    let good = std::fs::read_to_string(root().join("pipelines/quickstart.yaml")).unwrap();
    let broken = std::fs::read_to_string(root().join("tests/specs/invalid/unknown-input.yaml")).unwrap();
    // An invalid spec already on the base branch is not this change's business.
    std::fs::write(repo.join("pipelines/old_broken.yaml"), &broken).unwrap();
    std::fs::write(repo.join("pipelines/quickstart.yaml"), &good).unwrap();
    git(repo, &["init", "-q", "-b", "main"]);
    git(repo, &["add", "."]);
    git(repo, &["commit", "-qm", "base"]);
    git(repo, &["checkout", "-qb", "change"]);

    let run = |base: &str| {
        Command::new("bash")
            .arg(root().join("ci/sluice-ci.sh"))
            .arg(base)
            .current_dir(repo)
            .env("SLUICE", env!("CARGO_BIN_EXE_sluice"))
            .env("GITHUB_ACTIONS", "true")
            .env("GITHUB_STEP_SUMMARY", repo.join("summary.md"))
            .env("NO_COLOR", "1")
            .output()
            .expect("script runs")
    };

    let out = run("main");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).contains("no pipeline specs changed"));

    std::fs::write(repo.join("pipelines/quickstart.yaml"), good.replace("count: 2000", "count: 3000")).unwrap();
    let out = run("main");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("plan of pipelines/quickstart.yaml"), "{stdout}");
    let summary = std::fs::read_to_string(repo.join("summary.md")).unwrap();
    assert!(summary.contains("```mermaid") && summary.contains("flowchart LR"), "{summary}");

    std::fs::write(repo.join("pipelines/new_broken.yaml"), &broken).unwrap();
    let out = run("main");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("::error file=pipelines/new_broken.yaml,line=11,col=31,title=sluice E0201::"), "{stdout}");
    assert!(!stdout.contains("old_broken"), "unchanged specs are not checked: {stdout}");

    let out = run("no-such-branch");
    assert_eq!(out.status.code(), Some(2));
}
