//! The `sluice` command line. See `sluice --help`.

/// jemalloc: measured against glibc's malloc (`bench/nexmark.rs` with a glibc build as
/// `SLUICE_BENCH_BEFORE`), it is as fast on stateless queries and faster on keyed state (q11
/// 1.16×), with as few page faults and a peak within a few MB (lower on all but q0); mimalloc
/// was as fast but peaked about twice as high.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    sluice_cli::main()
}

#[path = "cli/mod.rs"]
mod sluice_cli;
