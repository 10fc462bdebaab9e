//! The `sluice` command line. See `sluice --help`.

fn main() -> std::process::ExitCode {
    sluice_cli::main()
}

#[path = "cli/mod.rs"]
mod sluice_cli;
