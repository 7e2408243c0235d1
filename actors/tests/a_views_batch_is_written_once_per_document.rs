//! Coalescing (ADR 0006 (3)): deliveries that reach a view's lane while it writes are written
//! as one batch — each document read once, its events folded in delivery order, written once —
//! with the redelivery guard and per-event failures exact. Before, every delivery cost its own
//! revision-checked write.

use std::time::Duration;

use cloudlysis_actors::handler::{Delivery, DeliveryMeta, EventHandler};
use cloudlysis_actors::projection::view::{Checkpoint, View, ViewHandler, ViewStore};
use cloudlysis_runtime::envelope::{Commit, EventEnvelope};
use cloudlysis_runtime::kv as buckets;
use cloudlysis_test_support::NatsServer;
use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize)]
struct Total {
    sum: i64,
    order: Vec<u64>,
}

struct Totals;

impl View for Totals {
    const NAME: &'static str = "totals";
    const SCHEMA_VERSION: u32 = 1;
    type Document = Total;
    fn aggregate_types() -> &'static [&'static str] {
        &["account"]
    }
    fn key(e: &EventEnvelope) -> Option<String> {
        Some(e.aggregate_id.clone())
    }
    fn apply(doc: &mut Total, e: &EventEnvelope) -> Result<(), String> {
        doc.sum += e.payload["amount"].as_i64().ok_or("no amount")?;
        doc.order.push(e.sequence);
        Ok(())
    }
}

fn delivery(
    account: &str,
    seq: u64,
    amount: serde_json::Value,
) -> (
    Delivery<Commit>,
    tokio::sync::oneshot::Receiver<Result<(), cloudlysis_actors::handler::HandlerError>>,
) {
    let commit = Commit {
        schema_version: 1,
        commit_id: format!("c{seq}"),
        events: vec![EventEnvelope {
            event_id: format!("e{seq}"),
            tenant_id: "acme".into(),
            aggregate_type: "account".into(),
            aggregate_id: account.into(),
            sequence: seq,
            event_type: "Deposited".into(),
            schema_version: 1,
            occurred_at: "t".into(),
            payload: serde_json::json!({ "amount": amount }),
            correlation_id: None,
            traceparent: None,
        }],
    };
    Delivery::new(
        commit,
        None,
        None,
        DeliveryMeta {
            stream: "AGGREGATE_EVENTS".into(),
            consumer: "test".into(),
            subject: format!("x.{account}"),
            stream_sequence: seq,
            delivered: 1,
        },
    )
}

/// Writes made to the views bucket so far (its stream's last sequence).
async fn writes(js: &async_nats::jetstream::Context) -> u64 {
    let mut s = js.get_stream(buckets::views_stream()).await.unwrap();
    s.info().await.unwrap().state.last_sequence
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lanes_backlog_is_one_write_per_document_and_stays_exact() {
    let server = NatsServer::start().await.unwrap();
    let js = server.jetstream().await;
    let kv = buckets::ensure_bucket(&js, &buckets::views())
        .await
        .unwrap();
    let store = ViewStore::<Totals>::new(kv.clone(), Checkpoint::default(), Duration::from_secs(5));
    let handler = ViewHandler(store);
    let mut state = handler.init().await.unwrap();

    // 100 deliveries over two documents, handed over as fast as a lane takes them.
    let before = writes(&js).await;
    let mut outcomes = Vec::new();
    for seq in 1..=100u64 {
        let account = if seq % 2 == 0 { "even" } else { "odd" };
        let (d, rx) = delivery(account, seq, seq.into());
        handler.accept(d, &mut state).await.unwrap();
        outcomes.push(rx);
    }
    for rx in outcomes {
        assert_eq!(rx.await.unwrap(), Ok(()));
    }
    let made = writes(&js).await - before;
    assert!(
        made <= 20,
        "{made} writes for 100 deliveries over 2 documents: not coalesced"
    );
    let doc = |key: &'static str| {
        let kv = kv.clone();
        async move {
            let bytes = kv.get(format!("totals.acme.{key}")).await.unwrap().unwrap();
            let record: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            record["doc"].clone()
        }
    };
    // Each event once, in delivery order per document.
    let even = doc("even").await;
    assert_eq!(even["sum"], (1..=50).map(|i| 2 * i).sum::<u64>());
    let order: Vec<u64> = serde_json::from_value(even["order"].clone()).unwrap();
    assert_eq!(order, (1..=50).map(|i| 2 * i).collect::<Vec<_>>());
    assert_eq!(
        doc("odd").await["sum"],
        (1..=50).map(|i| 2 * i - 1).sum::<u64>()
    );

    // Everything delivered again (a crash before the acks): acknowledged, nothing written.
    let before = writes(&js).await;
    let mut outcomes = Vec::new();
    for seq in 1..=100u64 {
        let account = if seq % 2 == 0 { "even" } else { "odd" };
        let (d, rx) = delivery(account, seq, seq.into());
        handler.accept(d, &mut state).await.unwrap();
        outcomes.push(rx);
    }
    for rx in outcomes {
        assert_eq!(rx.await.unwrap(), Ok(()));
    }
    assert_eq!(writes(&js).await - before, 0);

    // A failing event fails its own delivery only; the events around it are written, and its
    // partial changes are not.
    let (bad, bad_rx) = delivery("even", 101, serde_json::Value::Null);
    let (dup, dup_rx) = delivery("even", 102, 7.into());
    let (dup_again, dup_again_rx) = delivery("even", 102, 7.into());
    handler.accept(bad, &mut state).await.unwrap();
    handler.accept(dup, &mut state).await.unwrap();
    handler.accept(dup_again, &mut state).await.unwrap();
    let failed = bad_rx.await.unwrap().unwrap_err();
    assert!(failed.message().contains("no amount"), "{failed:?}");
    assert_eq!(dup_rx.await.unwrap(), Ok(()));
    assert_eq!(dup_again_rx.await.unwrap(), Ok(()));
    let even = doc("even").await;
    assert_eq!(
        even["sum"],
        (1..=50).map(|i| 2 * i).sum::<u64>() + 7,
        "{even}"
    );
}
