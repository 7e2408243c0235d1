//! A view whose `apply` takes longer than the consumer's `ack_wait`, run by two projection nodes
//! on one durable (the apply blocks its thread, as CPU-bound ones do): each event is applied
//! once and the view equals the fold.
//!
//! The guard that makes it hold: in-progress acks for every queued or running message, and a
//! per-document floor (the checkpoint the guard was pruned to), so a late copy of an event
//! that already left the `applied` set is recognised. The deterministic case of the second is
//! `actors/tests/a_redelivered_commit_is_applied_to_a_view_once.rs`.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cloudlysis_actors::projection::ProjectionNode;
use cloudlysis_actors::projection::view::View;
use cloudlysis_examples::load::Deposits;
use cloudlysis_runtime::consumer::{ConsumerSettings, NakBackoff};
use cloudlysis_runtime::context::TenantId;
use cloudlysis_runtime::envelope::EventEnvelope;
use cloudlysis_test_support::{eventually, view_document};
use common::Platform;
use serde::{Deserialize, Serialize};

const EVENTS: u64 = 24;
const ACCOUNTS: u64 = 4;
const ACK_WAIT: Duration = Duration::from_millis(250);

static APPLIES: AtomicU64 = AtomicU64::new(0);

#[derive(Default, Serialize, Deserialize)]
struct Total {
    balance: i64,
}

/// Sums deposits, slowly: each apply holds its thread for longer than the ack wait.
struct SlowTotals;

impl View for SlowTotals {
    const NAME: &'static str = "slow_totals";
    const SCHEMA_VERSION: u32 = 1;
    type Document = Total;
    fn aggregate_types() -> &'static [&'static str] {
        &["account"]
    }
    fn key(e: &EventEnvelope) -> Option<String> {
        Some(e.aggregate_id.clone())
    }
    fn apply(doc: &mut Total, e: &EventEnvelope) -> Result<(), String> {
        // A CPU-bound apply: it blocks, as real ones do.
        std::thread::sleep(ACK_WAIT * 3 / 2);
        APPLIES.fetch_add(1, Ordering::SeqCst);
        doc.balance += e.payload["amount"].as_i64().ok_or("no amount")?;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_event_is_applied_once_and_the_view_equals_the_fold() {
    let p = Platform::start().await;
    let settings = ConsumerSettings {
        ack_wait: ACK_WAIT,
        // Redeliveries must not turn into poison here.
        max_deliver: 200,
        nak_backoff: NakBackoff {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(100),
            multiplier: 2,
        },
        ..ConsumerSettings::default()
    };
    let node = || async {
        ProjectionNode::builder(p.js.clone(), settings)
            .register::<SlowTotals>()
            .build()
            .await
            .unwrap()
    };
    let (a, b) = (node().await, node().await);

    let load = Deposits {
        tenant: TenantId::new("acme").unwrap(),
        prefix: "acc-".into(),
        events: EVENTS,
        accounts: ACCOUNTS,
        amount: |i| (i % 5 + 1) as i64,
        window: 64,
    };
    let published = load.publish(&p.js).await.unwrap();
    let last = published.last_sequence;
    assert!(
        eventually(Duration::from_secs(60), || async {
            a.checkpoint("slow_totals") >= Some(last) && b.checkpoint("slow_totals") >= Some(last)
        })
        .await,
        "the nodes did not catch up with sequence {last}"
    );

    let applied =
        a.commits_applied("slow_totals").unwrap() + b.commits_applied("slow_totals").unwrap();
    assert_eq!(applied, EVENTS, "every commit applied exactly once");
    for (account, sum) in &published.balances {
        let doc = view_document(&p.js, "slow_totals", "acme", account).await;
        assert_eq!(doc["balance"], *sum, "{account}: {doc}");
    }
    // `apply` is pure: it runs again when a revision-checked write loses to the other node.
    assert!(APPLIES.load(Ordering::SeqCst) >= EVENTS);
}
