//! The Cloudlysis demo domain: bank accounts.
//!
//! Layout:
//! - [`account`] — the `account` aggregate: `Open`, `Deposit`, `Withdraw`, `Close`.
//! - [`balances`] — the `balances` view: `{"owner", "balance", "open"}` per account.
//! - [`load`] — synthetic deposit loads for benchmarks and tests.
//!
//! Register it on a node with one line: `.register::<account::Account>()`.

pub mod account;
pub mod balances;
pub mod load;
