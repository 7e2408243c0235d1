//! The shop: a Cloudlysis application in its own crate, built into its own binary (`shop`)
//! with [`cloudlysis::App`].
//!
//! - [`order`] — the `order` aggregate: `Place`, `Pay`, `Ship`, `Cancel`.
//! - [`order_summary`] — the `order_summary` view: status, customer and total per order.
//! - [`fulfilment`] — the `fulfilment` workflow, started by an order's `Paid` event, and its
//!   `ship` effect, which hands the order to the carrier and records `Ship`.

pub mod fulfilment;
pub mod order;
pub mod order_summary;

/// The shop application: one registration line per behaviour.
pub fn app() -> cloudlysis::App {
    cloudlysis::App::new("shop")
        .aggregate::<order::Order>()
        .typed_view::<order_summary::OrderSummary>()
        .workflow::<fulfilment::Fulfilment>()
        .effect(fulfilment::ShipEffect)
}
