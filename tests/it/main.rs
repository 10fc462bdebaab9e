//! Integration tests, in one binary so the dependency set is linked once.

mod checkpoints;
mod ci_script;
mod cli;
mod corpus;
mod engine;
mod engine_core;
mod examples;
mod hardening_engine;
mod hardening_runtime;
mod hardening_source;
mod hardening_spec;
mod mutation;
mod projection;
mod schema;
mod state_backends;
mod windows;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the `sluice` binary with `args` from the repository root.
pub fn sluice(args: &[&str]) -> Output {
    sluice_env(args, &[])
}

/// Runs the `sluice` binary with extra environment variables.
pub fn sluice_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.args(args).current_dir(root()).env("NO_COLOR", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("sluice runs")
}

/// Spec files directly in `dir`, sorted.
pub fn spec_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("folder exists")
        .map(|e| e.expect("entry").path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "toml")))
        .collect();
    files.sort();
    files
}
