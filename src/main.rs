//! The `sluice` command line. See `sluice --help`.

/// jemalloc: measured against glibc's malloc and mimalloc (`bench/nexmark.rs`), it keeps
/// freed batch memory for reuse (fewer page faults, faster keyed state) at the peak memory of
/// glibc; mimalloc was as fast but peaked about twice as high.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    sluice_cli::main()
}

#[path = "cli/mod.rs"]
mod sluice_cli;
