//! Scale-out: two projection nodes sharing the view's durable consumer over 10 000 events apply
//! every event exactly once — the view equals a fold of the stream — and both did work.

mod common;

use std::time::Duration;

use cloudlysis_actors::projection::ProjectionNode;
use cloudlysis_examples::balances::Balances;
use cloudlysis_examples::load::Deposits;
use cloudlysis_runtime::consumer::ConsumerSettings;
use cloudlysis_runtime::context::TenantId;
use common::*;

const EVENTS: u64 = 10_000;
const ACCOUNTS: u64 = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_is_applied_once_across_two_nodes() {
    let p = Platform::start().await;
    let second = ProjectionNode::builder(p.js.clone(), ConsumerSettings::default())
        .register::<Balances>()
        .build()
        .await
        .unwrap();

    // Publish commits straight to the stream (the aggregate node is not under test here).
    let load = Deposits {
        tenant: TenantId::new("acme").unwrap(),
        prefix: "acc-".into(),
        events: EVENTS,
        accounts: ACCOUNTS,
        amount: |i| (i % 7 + 1) as i64,
        window: 256,
    };
    let published = load.publish(&p.js).await.unwrap();
    let (last, expected) = (published.last_sequence, published.balances);

    let mut caught_up = false;
    for _ in 0..3000 {
        if p.projection.checkpoint("balances") >= Some(last)
            && second.checkpoint("balances") >= Some(last)
        {
            caught_up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(caught_up, "views did not catch up with sequence {last}");

    let (a, b) = (
        p.projection.commits_applied("balances").unwrap(),
        second.commits_applied("balances").unwrap(),
    );
    assert_eq!(
        a + b,
        EVENTS,
        "every commit applied exactly once ({a} + {b})"
    );
    assert!(a > 0 && b > 0, "both nodes did work ({a}, {b})");

    for (account, sum) in &expected {
        let doc = cloudlysis_test_support::view_document(&p.js, "balances", "acme", account).await;
        assert_eq!(doc["balance"], *sum, "{account}");
    }
}
