//! Redelivery idempotency: a commit applied to a view's documents and then delivered again (the
//! handler died after writing the document, before the ack) changes nothing the second time.

use std::time::Duration;

use cloudlysis_actors::projection::view::{Checkpoint, View, ViewStore};
use cloudlysis_runtime::envelope::{Commit, EventEnvelope};
use cloudlysis_runtime::kv as buckets;
use cloudlysis_test_support::NatsServer;
use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize)]
struct Total {
    sum: i64,
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
        Ok(())
    }
}

fn commit(amounts: &[i64]) -> Commit {
    Commit {
        schema_version: 1,
        commit_id: "c".into(),
        events: amounts
            .iter()
            .enumerate()
            .map(|(i, a)| EventEnvelope {
                event_id: format!("e{i}"),
                tenant_id: "acme".into(),
                aggregate_type: "account".into(),
                aggregate_id: "acc".into(),
                sequence: i as u64 + 1,
                event_type: "Deposited".into(),
                schema_version: 1,
                occurred_at: "t".into(),
                payload: serde_json::json!({ "amount": a }),
                correlation_id: None,
                traceparent: None,
            })
            .collect(),
    }
}

#[tokio::test]
async fn a_redelivery_after_the_write_changes_nothing() {
    let server = NatsServer::start().await.unwrap();
    let js = server.jetstream().await;
    let kv = buckets::ensure_bucket(&js, &buckets::views())
        .await
        .unwrap();
    let store = ViewStore::<Totals>::new(kv.clone(), Checkpoint::default(), Duration::from_secs(5));

    let first = store.apply(&commit(&[5, 7]), 11).await.unwrap();
    assert_eq!(first.written, 1);
    // The same message again (redelivered after a crash before the ack).
    let again = store.apply(&commit(&[5, 7]), 11).await.unwrap();
    assert_eq!((again.written, again.already), (0, 1));
    // A later commit still applies.
    store.apply(&commit(&[1]), 12).await.unwrap();

    let bytes = kv.get("totals.acme.acc").await.unwrap().unwrap();
    let record: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        record["doc"]["sum"], 13,
        "each event exactly once: {record}"
    );
    assert_eq!(record["last_seq"], 12);
}

/// A copy delivered after another copy of the same message was applied, acked, and passed by
/// the checkpoint — while a later event pruned the guard — is still recognised. Before the fix
/// the pruned sequence was forgotten and the late copy applied a second time.
#[tokio::test]
async fn a_late_copy_after_the_checkpoint_passed_it_changes_nothing() {
    let server = NatsServer::start().await.unwrap();
    let js = server.jetstream().await;
    let kv = buckets::ensure_bucket(&js, &buckets::views())
        .await
        .unwrap();
    let checkpoint = Checkpoint::default();
    let store = ViewStore::<Totals>::new(kv.clone(), checkpoint.clone(), Duration::from_secs(5));

    // Copy one of sequence 5 applies and is acked; the checkpoint passes it.
    store.apply(&commit(&[5]), 5).await.unwrap();
    checkpoint.raise(10);
    // A later event prunes the guard to what lies above the checkpoint.
    store.apply(&commit(&[1]), 11).await.unwrap();
    // Copy two of sequence 5 (redelivered while copy one was being applied) arrives now.
    let late = store.apply(&commit(&[5]), 5).await.unwrap();
    assert_eq!((late.written, late.already), (0, 1));
    // So does one through a fresh store (another node, nothing cached).
    let other = ViewStore::<Totals>::new(kv.clone(), checkpoint.clone(), Duration::from_secs(5));
    let late = other.apply(&commit(&[5]), 5).await.unwrap();
    assert_eq!((late.written, late.already), (0, 1));

    let bytes = kv.get("totals.acme.acc").await.unwrap().unwrap();
    let record: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(record["doc"]["sum"], 6, "5 once, 1 once: {record}");
    assert_eq!(record["floor"], 10, "{record}");
}
