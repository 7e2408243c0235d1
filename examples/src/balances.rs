//! The `balances` view: one document per account, keyed by account id.
//!
//! Document: `{"owner": string, "balance": integer, "open": bool}`. Deposits and withdrawals
//! add and subtract, so the fold does not depend on their order. Amounts are at most
//! [`MAX_AMOUNT`](crate::account::MAX_AMOUNT) (the account refuses more), so an `i64` balance
//! holds any fold, even one that briefly applies a withdrawal before its deposit; an amount
//! beyond it is refused as the event's failure, never wrapped.

use cloudlysis_actors::aggregate::Aggregate;
use cloudlysis_actors::projection::view::{View, decode};
use cloudlysis_runtime::envelope::EventEnvelope;
use serde::{Deserialize, Serialize};

use crate::account::{Account, AccountEvent, MAX_AMOUNT};

/// The balances view.
pub struct Balances;

/// One account's balance.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balance {
    /// Owner's name.
    pub owner: String,
    /// Balance in minor units.
    pub balance: i64,
    /// Open for business.
    pub open: bool,
}

impl View for Balances {
    const NAME: &'static str = "balances";
    const SCHEMA_VERSION: u32 = 1;
    type Document = Balance;

    fn aggregate_types() -> &'static [&'static str] {
        &[Account::TYPE]
    }

    fn key(event: &EventEnvelope) -> Option<String> {
        Some(event.aggregate_id.clone())
    }

    fn apply(doc: &mut Balance, event: &EventEnvelope) -> Result<(), String> {
        let amount = |amount: u64| {
            if amount <= MAX_AMOUNT {
                Ok(amount as i64)
            } else {
                Err(format!(
                    "{} of {amount}: above the limit {MAX_AMOUNT}",
                    event.event_type
                ))
            }
        };
        let overflow = || format!("balance of {} out of range", event.aggregate_id);
        match decode::<Account>(event)? {
            AccountEvent::Opened { owner } => {
                doc.owner = owner;
                doc.open = true;
            }
            AccountEvent::Deposited { amount: a } => {
                doc.balance = doc.balance.checked_add(amount(a)?).ok_or_else(overflow)?
            }
            AccountEvent::Withdrew { amount: a } => {
                doc.balance = doc.balance.checked_sub(amount(a)?).ok_or_else(overflow)?
            }
            AccountEvent::Closed => doc.open = false,
        }
        Ok(())
    }
}
