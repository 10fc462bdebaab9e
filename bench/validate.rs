//! Validation speed: 100 spec files, made from the examples in `pipelines/` under new names,
//! validated through the library and through the `sluice validate` binary, against a baseline
//! measured in the same run: parsing the same files into values with their source maps.
//!
//! Run with `cargo bench --bench validate`; prints milliseconds and ratios.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sluice::spec::loader::{Syntax, load};
use sluice::spec::{Options, validate_file};

const SPECS: usize = 100;
const ROUNDS: usize = 5;

fn make_specs(dir: &Path) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
    let mut examples: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("pipelines/")
        .map(|e| e.expect("entry").path())
        .filter(|p| Syntax::from_path(p).is_some())
        .collect();
    examples.sort();
    (0..SPECS)
        .map(|i| {
            let src = &examples[i % examples.len()];
            let text = std::fs::read_to_string(src).expect("example");
            let ext = src.extension().and_then(|e| e.to_str()).unwrap_or("yaml");
            let path = dir.join(format!("spec_{i:03}.{ext}"));
            std::fs::write(&path, text).expect("write");
            path
        })
        .collect()
}

/// The best of `ROUNDS` runs of `f`.
fn best(mut f: impl FnMut()) -> Duration {
    (0..ROUNDS)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .expect("rounds")
}

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let files = make_specs(dir.path());

    let parse = best(|| {
        for f in &files {
            let text = std::fs::read_to_string(f).expect("read");
            let loaded = load(&text, Syntax::from_path(f).expect("syntax"));
            assert!(loaded.value.is_some());
        }
    });
    let library = best(|| {
        for f in &files {
            let report = validate_file(f, &Options::default()).expect("read");
            assert!(report.validated.is_some(), "{}: {:?}", f.display(), report.diagnostics);
        }
    });
    let binary = option_env!("CARGO_BIN_EXE_sluice").map(PathBuf::from).or_else(|| {
        let exe = std::env::current_exe().ok()?;
        let candidate = exe.parent()?.parent()?.join("sluice");
        candidate.exists().then_some(candidate)
    });
    let cli = binary.as_ref().map(|bin| {
        best(|| {
            let status = std::process::Command::new(bin)
                .arg("validate")
                .arg(dir.path())
                .stdout(std::process::Stdio::null())
                .status()
                .expect("sluice runs");
            assert!(status.success());
        })
    });

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("validate {SPECS} specs (best of {ROUNDS}):");
    println!("  baseline: parse into values + source maps   {:8.1} ms", ms(parse));
    println!(
        "  library:  full validation (schema, names, types) {:8.1} ms  ({:.1}× baseline)",
        ms(library),
        ms(library) / ms(parse)
    );
    match cli {
        Some(cli) => println!(
            "  binary:   `sluice validate DIR` end to end  {:8.1} ms  ({:.1}× baseline)",
            ms(cli),
            ms(cli) / ms(parse)
        ),
        None => println!("  binary:   not found next to the bench executable; skipped"),
    }
    println!("  per spec: {:.2} ms", ms(library) / SPECS as f64);
}
