//! The `order_summary` view: one document per order, keyed by order id, folded from the
//! order's decoded events (a [`TypedView`] of [`Order`]).
//!
//! Document: `{"customer": string, "status": "placed"|"paid"|"shipped"|"cancelled",
//! "total": integer, "carrier": string|null}`.

use cloudlysis_actors::projection::{Typed, TypedView};
use serde::{Deserialize, Serialize};

use crate::order::{Order, OrderEvent, Status};

/// The order summary view.
pub struct OrderSummary;

/// One order's summary.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Who ordered.
    pub customer: String,
    /// Where the order is.
    pub status: Status,
    /// Total in minor units.
    pub total: u64,
    /// The carrier, once shipped.
    pub carrier: Option<String>,
}

impl TypedView for OrderSummary {
    const NAME: &'static str = "order_summary";
    const SCHEMA_VERSION: u32 = 1;
    type Document = Summary;
    type Follows = Order;

    fn apply(doc: &mut Summary, event: Typed<'_, OrderEvent>) -> Result<(), String> {
        match event.event {
            OrderEvent::Placed {
                customer, total, ..
            } => {
                doc.customer = customer;
                doc.total = total;
                doc.status = Status::Placed;
            }
            OrderEvent::Paid { .. } => doc.status = Status::Paid,
            OrderEvent::Shipped { carrier } => {
                doc.status = Status::Shipped;
                doc.carrier = Some(carrier);
            }
            OrderEvent::Cancelled { .. } => doc.status = Status::Cancelled,
        }
        Ok(())
    }
}
