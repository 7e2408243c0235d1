//! A message that fails on the server's last delivery while the poison bucket does not answer is
//! held — in-progress acks keep it — and its record is written once the bucket answers, instead
//! of being nak'ed after a few tries: the server delivers it no more, so that nak dropped it, and
//! the `MAX_DELIVERIES` advisory's single write failed as well — a failed message with no record
//! anywhere. Counted in `cloudlysis_consumer_poison_write_failures_total`.

mod common;

use std::time::Duration;

use common::*;

const KEY: &str = "cloudlysis-projection-view-pstore.1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_deliverys_record_waits_for_the_bucket() {
    let metrics = cloudlysis_runtime::metrics::install().unwrap();
    let (_server, js) = server().await;
    let seen = Seen::default();
    let (_sup, _handle) = start(&js, "pstore", policy("pstore", 4, 2), &seen, None).await;

    // The poison bucket goes away (kept to be put back).
    let config = js
        .get_stream("KV_cloudlysis_poison")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .config
        .clone();
    js.delete_stream("KV_cloudlysis_poison").await.unwrap();

    publish(&js, 1, r#"{"id":1,"always_fail":true}"#).await;
    until(|| seen.attempts(1) >= 2).await;
    // Either the server was told to drop it (no longer pending), or the record's write is being
    // tried again while the message is held.
    let mut consumer: async_nats::jetstream::consumer::PullConsumer = js
        .get_stream("AGGREGATE_EVENTS")
        .await
        .unwrap()
        .get_consumer("cloudlysis-projection-view-pstore")
        .await
        .unwrap();
    let write_failures = || {
        metrics
            .render()
            .lines()
            .filter(|l| l.starts_with("cloudlysis_consumer_poison_write_failures_total{"))
            .filter(|l| l.contains("pstore"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let pending = consumer.info().await.unwrap().num_ack_pending;
        if pending == 0 || write_failures() >= 4.0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "neither dropped nor held"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The bucket is back: the record is written.
    js.create_stream(config).await.unwrap();
    let poison = js.get_key_value("cloudlysis_poison").await.unwrap();
    let mut found = false;
    for _ in 0..500 {
        if let Ok(Some(_)) = poison.get(KEY).await {
            found = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(found, "the failed message has no poison record");
    assert_eq!(seen.successes(1), 0);
}
