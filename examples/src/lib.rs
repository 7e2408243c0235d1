//! The Cloudlysis demo domain: bank accounts (an `account` aggregate, a `balances` view and a
//! transfer workflow).
//!
//! Placeholder: filled by the command-path issue.
