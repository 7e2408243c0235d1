//! The Cloudlysis demo domain: bank accounts.
//!
//! Layout:
//! - [`account`] — the `account` aggregate: `Open`, `Deposit`, `Withdraw`, `Close`.
//! - [`balances`] — the `balances` view: `{"owner", "balance", "open"}` per account.
//!
//! Register it on a node with one line: `.register::<account::Account>()`.

pub mod account;
pub mod balances;
