//! The `cloudlysis` binary: the [`cloudlysis::App`] builder with the demo domain (bank
//! accounts, their balances, the transfer saga; registered in [`cloudlysis::demo::app`]).
//! Every role is a subcommand of this one binary.

fn main() -> std::process::ExitCode {
    cloudlysis::demo::app().main()
}
