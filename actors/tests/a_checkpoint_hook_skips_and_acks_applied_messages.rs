//! Messages the checkpoint hook reports as applied are acked without reaching the handler.

mod common;

use std::sync::Arc;

use cloudlysis_actors::consumer::CheckpointFn;
use common::*;

#[tokio::test]
async fn applied_messages_are_skipped_and_acked() {
    let (_server, js) = server().await;
    let seen = Seen::default();
    let checkpoint: CheckpointFn = Arc::new(|meta| {
        let applied = meta.stream_sequence <= 2;
        Box::pin(async move { applied })
    });
    let (_sup, _h) = start(&js, "skips", policy("skips", 4, 5), &seen, Some(checkpoint)).await;
    for id in 1..=4 {
        publish(&js, id, &format!(r#"{{"id":{id}}}"#)).await;
    }
    until(|| seen.successes(3) == 1 && seen.successes(4) == 1).await;
    assert_eq!(seen.attempts(1), 0);
    assert_eq!(seen.attempts(2), 0);

    let mut c: async_nats::jetstream::consumer::PullConsumer = js
        .get_stream(STREAM)
        .await
        .unwrap()
        .get_consumer("cloudlysis-projection-view-skips")
        .await
        .unwrap();
    for _ in 0..500 {
        if c.info().await.unwrap().num_ack_pending == 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("skipped messages were not acked");
}
