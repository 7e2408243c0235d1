//! A message whose handler takes longer than the ack wait (or that waits behind others in its
//! lane) is kept alive with in-progress acks: the server does not redeliver it meanwhile, and
//! it is handled and acked once.

mod common;

use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_handler_keeps_its_message() {
    let (_server, js) = server().await;
    let mut policy = policy("slow", 4, 5);
    policy.settings.ack_wait = Duration::from_millis(300);
    let seen = Seen::gated();
    let (_sup, _handle) = start(&js, "slow", policy, &seen, None).await;
    publish(&js, 1, r#"{"id":1}"#).await;
    publish(&js, 2, r#"{"id":2}"#).await;

    let mut stream = js.get_stream(STREAM).await.unwrap();
    let mut consumer: PullConsumer = stream
        .get_consumer("cloudlysis-projection-view-slow")
        .await
        .unwrap();
    let _ = &mut stream;
    // Both messages fetched and held: the handler waits on its gate with the first, the second
    // waits in the mailbox.
    for _ in 0..500 {
        if consumer.info().await.unwrap().num_ack_pending == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(consumer.info().await.unwrap().num_ack_pending, 2);
    // For five ack waits nothing is redelivered: the consumer keeps telling the server.
    let watch = async {
        loop {
            let info = consumer.info().await.unwrap().clone();
            assert_eq!(info.num_redelivered, 0, "redelivered while held: {info:?}");
            assert_eq!(info.num_ack_pending, 2);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(1500), watch).await;
    seen.gate.as_ref().unwrap().add_permits(2);
    until(|| seen.successes(1) == 1 && seen.successes(2) == 1).await;
    until_acked(&mut consumer).await;
    assert_eq!(seen.attempts(1), 1);
    assert_eq!(seen.attempts(2), 1);
}

async fn until_acked(consumer: &mut PullConsumer) {
    for _ in 0..500 {
        let info = consumer.info().await.unwrap();
        if info.num_ack_pending == 0 && info.num_pending == 0 {
            assert_eq!(info.num_redelivered, 0);
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("messages not acked");
}
