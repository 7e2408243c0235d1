//! The `order` aggregate. Prices are integers in minor units (cents).
//!
//! | command | payload | rejected when |
//! |---|---|---|
//! | `Place` | `{"customer": string, "lines": [{"sku", "quantity", "price"}]}` | already placed; no lines; a quantity or price of 0 |
//! | `Pay` | `{"amount": integer}` | not placed; already paid; cancelled; amount ≠ total |
//! | `Ship` | `{"carrier": string}` | not paid; already shipped |
//! | `Cancel` | `{"reason": string}` | not placed; shipped; already cancelled |

use cloudlysis_actors::aggregate::{Aggregate, CommandContext, Rejection};
use serde::{Deserialize, Serialize};

/// The order aggregate.
pub struct Order;

/// Where an order is.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// No `Place` yet.
    #[default]
    New,
    /// Placed, waiting for payment.
    Placed,
    /// Paid, waiting for shipment.
    Paid,
    /// Handed to the carrier.
    Shipped,
    /// Cancelled before shipment.
    Cancelled,
}

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Line {
    /// Stock-keeping unit.
    pub sku: String,
    /// How many, > 0.
    pub quantity: u32,
    /// Unit price in minor units, > 0.
    pub price: u64,
}

/// Order state.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct OrderState {
    /// Where the order is.
    pub status: Status,
    /// Total in minor units.
    pub total: u64,
}

/// Order commands.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", content = "payload", deny_unknown_fields)]
pub enum OrderCommand {
    /// Places the order.
    Place {
        /// Who orders.
        customer: String,
        /// What.
        lines: Vec<Line>,
    },
    /// Pays the order's total.
    Pay {
        /// Minor units; must equal the total.
        amount: u64,
    },
    /// Records the hand-over to a carrier.
    Ship {
        /// The carrier.
        carrier: String,
    },
    /// Cancels the order.
    Cancel {
        /// Why.
        reason: String,
    },
}

/// Order events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload")]
pub enum OrderEvent {
    /// The order was placed.
    Placed {
        /// Who ordered.
        customer: String,
        /// What.
        lines: Vec<Line>,
        /// Total in minor units.
        total: u64,
    },
    /// The order was paid.
    Paid {
        /// Minor units.
        amount: u64,
    },
    /// The order went to a carrier.
    Shipped {
        /// The carrier.
        carrier: String,
    },
    /// The order was cancelled.
    Cancelled {
        /// Why.
        reason: String,
    },
}

impl Aggregate for Order {
    const TYPE: &'static str = "order";
    const SCHEMA_VERSION: u32 = 1;
    type State = OrderState;
    type Command = OrderCommand;
    type Event = OrderEvent;

    fn handle(
        s: &OrderState,
        command: OrderCommand,
        _: &CommandContext,
    ) -> Result<Vec<OrderEvent>, Rejection> {
        use Status::*;
        let refuse = |why: &str| Err(Rejection::new(why));
        match (command, s.status) {
            (OrderCommand::Place { .. }, st) if st != New => refuse("order already placed"),
            (OrderCommand::Place { customer, lines }, _) => {
                if lines.is_empty() {
                    return refuse("an order needs at least one line");
                }
                if lines.iter().any(|l| l.quantity == 0 || l.price == 0) {
                    return refuse("quantities and prices must be greater than 0");
                }
                let total = lines
                    .iter()
                    .try_fold(0u64, |sum, l| {
                        l.price
                            .checked_mul(u64::from(l.quantity))
                            .and_then(|v| sum.checked_add(v))
                    })
                    .ok_or_else(|| Rejection::new("the total is too large"))?;
                Ok(vec![OrderEvent::Placed {
                    customer,
                    lines,
                    total,
                }])
            }
            (OrderCommand::Pay { amount }, Placed) if amount == s.total => {
                Ok(vec![OrderEvent::Paid { amount }])
            }
            (OrderCommand::Pay { amount }, Placed) => Err(Rejection::new(format!(
                "the amount must be the total: {}, not {amount}",
                s.total
            ))),
            (OrderCommand::Pay { .. }, New) => refuse("order not placed"),
            (OrderCommand::Pay { .. }, Cancelled) => refuse("order cancelled"),
            (OrderCommand::Pay { .. }, _) => refuse("order already paid"),
            (OrderCommand::Ship { carrier }, Paid) => Ok(vec![OrderEvent::Shipped { carrier }]),
            (OrderCommand::Ship { .. }, Shipped) => refuse("order already shipped"),
            (OrderCommand::Ship { .. }, _) => refuse("order not paid"),
            (OrderCommand::Cancel { .. }, New) => refuse("order not placed"),
            (OrderCommand::Cancel { .. }, Shipped) => refuse("order already shipped"),
            (OrderCommand::Cancel { .. }, Cancelled) => refuse("order already cancelled"),
            (OrderCommand::Cancel { reason }, _) => Ok(vec![OrderEvent::Cancelled { reason }]),
        }
    }

    fn apply(s: &mut OrderState, event: &OrderEvent) {
        match event {
            OrderEvent::Placed { total, .. } => {
                s.status = Status::Placed;
                s.total = *total;
            }
            OrderEvent::Paid { .. } => s.status = Status::Paid,
            OrderEvent::Shipped { .. } => s.status = Status::Shipped,
            OrderEvent::Cancelled { .. } => s.status = Status::Cancelled,
        }
    }
}
