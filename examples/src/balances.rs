//! The `balances` view: one document per account, keyed by account id.
//!
//! Document: `{"owner": string, "balance": integer, "open": bool}`. Deposits and withdrawals
//! add and subtract, so the fold does not depend on their order. Amounts are at most
//! [`MAX_AMOUNT`](crate::account::MAX_AMOUNT) (the account refuses more), so an `i64` balance
//! holds any fold, even one that briefly applies a withdrawal before its deposit; an amount
//! beyond it is refused as the event's failure, never wrapped.

use cloudlysis_actors::projection::view::View;
use cloudlysis_runtime::envelope::EventEnvelope;
use serde::{Deserialize, Serialize};

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
        &["account"]
    }

    fn key(event: &EventEnvelope) -> Option<String> {
        Some(event.aggregate_id.clone())
    }

    fn apply(doc: &mut Balance, event: &EventEnvelope) -> Result<(), String> {
        let amount = || {
            event.payload["amount"]
                .as_u64()
                .filter(|a| *a <= crate::account::MAX_AMOUNT)
                .map(|a| a as i64)
                .ok_or_else(|| {
                    format!(
                        "{} without an amount in 0..={}",
                        event.event_type,
                        crate::account::MAX_AMOUNT
                    )
                })
        };
        let overflow = || format!("balance of {} out of range", event.aggregate_id);
        match event.event_type.as_str() {
            "Opened" => {
                doc.owner = event.payload["owner"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                doc.open = true;
            }
            "Deposited" => doc.balance = doc.balance.checked_add(amount()?).ok_or_else(overflow)?,
            "Withdrew" => doc.balance = doc.balance.checked_sub(amount()?).ok_or_else(overflow)?,
            "Closed" => doc.open = false,
            _ => {}
        }
        Ok(())
    }
}
