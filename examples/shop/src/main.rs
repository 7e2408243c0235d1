//! The `shop` binary: every Cloudlysis role over the shop's behaviours ([`cloudlysis_shop::app`]).

fn main() -> std::process::ExitCode {
    cloudlysis_shop::app().main()
}
