//! The `tessera` binary: every role and command lives in `tessera-cli`.

// glibc's per-thread arenas keep freed multi-MiB chunk buffers, so a long
// put grew to 2-3x its working set; mimalloc returns them (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    tessera_cli::main()
}
