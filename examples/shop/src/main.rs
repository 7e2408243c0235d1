//! The `shop` binary: every Cloudlysis role over the shop's behaviours.

use cloudlysis_shop::{fulfilment, order::Order, order_summary::OrderSummary};

fn main() -> std::process::ExitCode {
    cloudlysis::App::new("shop")
        .aggregate::<Order>()
        .typed_view::<OrderSummary>()
        .workflow::<fulfilment::Fulfilment>()
        .effect(fulfilment::ShipEffect)
        .main()
}
