//! The `sluice` command line. See `sluice --help`.

/// mimalloc keeps freed batch memory for reuse instead of handing it back to the kernel after
/// every chunk, which glibc's malloc does and which makes the next chunk page-fault it back in.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    sluice_cli::main()
}

#[path = "cli/mod.rs"]
mod sluice_cli;
