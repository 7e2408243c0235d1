//! The `cloudlysis` binary: the [`cloudlysis::App`] builder with the demo domain (bank
//! accounts, their balances, the transfer saga; registered in [`cloudlysis::demo::app`]).
//! Every role is a subcommand of this one binary.

/// mimalloc instead of the system allocator: the command path allocates many small, short-lived
/// buffers, and glibc's malloc spent a fifth of its CPU on them (docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cloudlysis::demo::app().main()
}
