//! The `threatbeat` binary; see the library for everything it does.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc; // measured: docs/performance.md

fn main() -> std::process::ExitCode {
    threatbeat::commands::main()
}
