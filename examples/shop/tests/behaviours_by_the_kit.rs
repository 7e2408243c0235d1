//! The shop's behaviours, tested with the kit: pure, no NATS.

use cloudlysis_actors::testkit;
use cloudlysis_shop::order::{Line, Order, OrderCommand, OrderEvent, Status};
use cloudlysis_shop::order_summary::{OrderSummary, Summary};

fn placed() -> OrderEvent {
    OrderEvent::Placed {
        customer: "ada".into(),
        lines: vec![Line {
            sku: "tea".into(),
            quantity: 2,
            price: 450,
        }],
        total: 900,
    }
}

#[test]
fn placing_an_order_totals_its_lines() {
    let state = testkit::aggregate::<Order>()
        .given([])
        .when_json(
            "Place",
            serde_json::json!({"customer": "ada", "lines": [{"sku": "tea", "quantity": 2, "price": 450}]}),
        )
        .then_events([placed()]);
    assert_eq!(state.status, Status::Placed);
    assert_eq!(state.total, 900);
}

#[test]
fn an_order_is_paid_with_its_total_only() {
    testkit::aggregate::<Order>()
        .given([placed()])
        .when(OrderCommand::Pay { amount: 100 })
        .then_rejected("the amount must be the total: 900");
    testkit::aggregate::<Order>()
        .given([placed()])
        .when(OrderCommand::Pay { amount: 900 })
        .then_events([OrderEvent::Paid { amount: 900 }]);
}

#[test]
fn only_a_paid_order_ships_and_a_shipped_one_cannot_be_cancelled() {
    testkit::aggregate::<Order>()
        .given([placed()])
        .when(OrderCommand::Ship {
            carrier: "c".into(),
        })
        .then_rejected("not paid");
    let shipped = [
        placed(),
        OrderEvent::Paid { amount: 900 },
        OrderEvent::Shipped {
            carrier: "c".into(),
        },
    ];
    testkit::aggregate::<Order>()
        .given(shipped.clone())
        .when(OrderCommand::Cancel {
            reason: "late".into(),
        })
        .then_rejected("already shipped");
}

#[test]
fn the_summary_follows_the_order() {
    let events = testkit::history::<Order>(
        "o-1",
        [
            placed(),
            OrderEvent::Paid { amount: 900 },
            OrderEvent::Shipped {
                carrier: "post".into(),
            },
        ],
    );
    testkit::typed_view::<OrderSummary>()
        .given(events)
        .then_document(
            "o-1",
            Summary {
                customer: "ada".into(),
                status: Status::Shipped,
                total: 900,
                carrier: Some("post".into()),
            },
        );
}

#[test]
fn an_event_from_a_newer_schema_is_refused_by_the_summary() {
    let mut event = testkit::envelope::<Order>("o-1", 1, &placed());
    event.schema_version = 2;
    testkit::typed_view::<OrderSummary>()
        .given([event])
        .then_refused("(Placed, schema_version 2) is newer than this code's schema_version 1");
}

#[test]
#[should_panic(
    expected = "≠  0 {\"type\":\"Paid\",\"payload\":{\"amount\":1}} | {\"type\":\"Paid\",\"payload\":{\"amount\":900}}"
)]
fn a_failing_expectation_shows_expected_and_actual_side_by_side() {
    testkit::aggregate::<Order>()
        .given([placed()])
        .when(OrderCommand::Pay { amount: 900 })
        .then_events([OrderEvent::Paid { amount: 1 }]);
}
