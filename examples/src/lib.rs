//! The Cloudlysis demo domain: bank accounts.
//!
//! Layout:
//! - [`account`] — the `account` aggregate: `Open`, `Deposit`, `Withdraw`, `Close`.
//! - [`balances`] — the `balances` view: `{"owner", "balance", "open"}` per account.
//! - [`transfer`] — the `transfer` saga (withdraw, deposit, refund on failure or timeout) and
//!   its `withdraw` / `deposit` effects.
//! - [`load`] — synthetic deposit loads for benchmarks and tests.
//!
//! Register it on a node with one line: `.register::<account::Account>()`.

pub mod account;
pub mod balances;
pub mod load;
pub mod transfer;
