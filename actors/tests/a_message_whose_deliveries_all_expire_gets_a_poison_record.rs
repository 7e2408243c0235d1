//! A message whose every delivery expires (the nodes handling it died before settling it,
//! `max_deliver` times) is dropped by the server without a word to any consumer. The consumer
//! actor listens for the server's `MAX_DELIVERIES` advisory and writes the poison record, so no
//! message leaves a consumer without one. Before the fix such a message vanished unrecorded.

mod common;

use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use cloudlysis_runtime::poison::PoisonRecord;
use common::*;
use futures::StreamExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_message_is_recorded_from_the_servers_advisory() {
    let (_server, js) = server().await;
    let mut policy = policy("expiring", 4, 2);
    policy.settings.ack_wait = Duration::from_millis(300);
    let seen = Seen::default();
    let (_sup, h) = start(&js, "expiring", policy, &seen, None).await;
    // This node takes no messages (drained); it still watches for advisories.
    let _ = h.drain(Duration::from_secs(10)).await.unwrap();
    for _ in 0..500 {
        if !h.status(Duration::from_secs(5)).await.unwrap().fetching {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!h.status(Duration::from_secs(5)).await.unwrap().fetching);
    publish(&js, 7, r#"{"id":7}"#).await;

    // Two "nodes" take the message in turn and die before settling it.
    let consumer: PullConsumer = js
        .get_stream(STREAM)
        .await
        .unwrap()
        .get_consumer("cloudlysis-projection-view-expiring")
        .await
        .unwrap();
    for delivery in 1..=2 {
        let mut batch = consumer
            .fetch()
            .max_messages(1)
            .expires(Duration::from_secs(5))
            .messages()
            .await
            .unwrap();
        let msg = batch.next().await.unwrap().unwrap();
        assert_eq!(msg.info().unwrap().delivered, delivery);
        drop(msg); // never acked
    }

    // The server notices when the next pull would redeliver it (another node keeps fetching):
    // it delivers nothing and publishes the advisory instead.
    let poison = js.get_key_value("cloudlysis_poison").await.unwrap();
    let mut record = None;
    for _ in 0..20 {
        let mut batch = consumer
            .fetch()
            .max_messages(1)
            .expires(Duration::from_millis(500))
            .messages()
            .await
            .unwrap();
        assert!(batch.next().await.is_none(), "not delivered a third time");
        if let Ok(Some(bytes)) = poison.get("cloudlysis-projection-view-expiring.1").await {
            record = Some(serde_json::from_slice::<PoisonRecord>(&bytes).unwrap());
            break;
        }
    }
    let record = record.expect("a poison record for the expired message");
    assert_eq!(record.sequence, 1);
    assert_eq!(record.attempts, 2);
    assert_eq!(record.subject, "tenant.acme.aggregate.account.a-7");
    assert!(record.error.contains("without being settled"), "{record:?}");
    assert_eq!(seen.attempts(7), 0, "the drained node never handled it");
}
