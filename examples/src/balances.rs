//! The `balances` view: one document per account, keyed by account id.
//!
//! Document: `{"owner": string, "balance": integer, "open": bool}`. Deposits and withdrawals
//! add and subtract, so the fold does not depend on their order.

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
                .as_i64()
                .ok_or_else(|| format!("{} without an integer amount", event.event_type))
        };
        match event.event_type.as_str() {
            "Opened" => {
                doc.owner = event.payload["owner"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                doc.open = true;
            }
            "Deposited" => doc.balance += amount()?,
            "Withdrew" => doc.balance -= amount()?,
            "Closed" => doc.open = false,
            _ => {}
        }
        Ok(())
    }
}
