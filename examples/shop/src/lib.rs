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
