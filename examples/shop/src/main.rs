//! The `shop` binary: every Cloudlysis role over the shop's behaviours ([`cloudlysis_shop::app`]).

/// The allocator the `cloudlysis` binary uses too (docs/performance.md): a binary's choice.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cloudlysis_shop::app().main()
}
