//! A message whose handler always fails gets exactly one poison record with the contract's
//! fields and is terminated; an undecodable payload is quarantined at once; later messages are
//! still processed.

mod common;

use std::time::Duration;

use cloudlysis_runtime::poison::{POISON_BUCKET, PoisonRecord};
use common::*;
use futures::StreamExt;

#[tokio::test]
async fn poison_is_recorded_once_and_termed_and_the_consumer_goes_on() {
    let (_server, js) = server().await;
    let seen = Seen::default();
    let (_sup, _h) = start(&js, "poison", policy("poison", 4, 3), &seen, None).await;

    publish(&js, 1, r#"{"id":1}"#).await;
    publish(&js, 2, r#"{"id":2,"always_fail":true}"#).await;
    publish(&js, 3, r#"not json at all"#).await;
    publish(&js, 4, r#"{"id":4}"#).await;

    until(|| seen.successes(1) == 1 && seen.successes(4) == 1).await;

    let kv = js.get_key_value(POISON_BUCKET).await.unwrap();
    let mut records = Vec::new();
    for _ in 0..1500 {
        let keys: Vec<String> = kv.keys().await.unwrap().map(|k| k.unwrap()).collect().await;
        if keys.len() >= 2 {
            for k in keys {
                let bytes = kv.get(&k).await.unwrap().unwrap();
                records.push((k, serde_json::from_slice::<PoisonRecord>(&bytes).unwrap()));
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    records.sort_by_key(|(_, r)| r.sequence);
    assert_eq!(
        records.len(),
        2,
        "one record per poison message: {records:?}"
    );

    let (key, failing) = &records[0];
    assert_eq!(key, "cloudlysis-projection-view-poison.2");
    assert_eq!(failing.stream, "AGGREGATE_EVENTS");
    assert_eq!(failing.consumer, "cloudlysis-projection-view-poison");
    assert_eq!(failing.sequence, 2);
    assert_eq!(failing.subject, "tenant.acme.aggregate.account.a-2");
    assert_eq!(failing.attempts, 2, "max_deliver - 1 failures");
    assert_eq!(failing.error, "event 2 failed attempt 2");
    assert_eq!(failing.headers["tenant-id"], ["acme"]);
    assert_eq!(failing.headers["Nats-Msg-Id"], ["evt-2"]);
    assert!(failing.time.ends_with('Z'));
    assert_eq!(seen.attempts(2), 2, "termed: never delivered again");

    let (_, undecodable) = &records[1];
    assert_eq!(undecodable.sequence, 3);
    assert_eq!(undecodable.attempts, 1);
    assert!(
        undecodable.error.starts_with("undecodable payload"),
        "{}",
        undecodable.error
    );

    let mut c: async_nats::jetstream::consumer::PullConsumer = js
        .get_stream(STREAM)
        .await
        .unwrap()
        .get_consumer("cloudlysis-projection-view-poison")
        .await
        .unwrap();
    until_async(|| {
        let mut c = c.clone();
        async move { c.info().await.unwrap().num_ack_pending == 0 }
    })
    .await;
    let info = c.info().await.unwrap();
    assert_eq!(info.num_pending, 0);
    assert_eq!(seen.attempts(2), 2);
}

async fn until_async<F, Fut>(mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..1500 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("condition not reached");
}
